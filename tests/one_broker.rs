//! Acceptance tests on a real one-broker Kafka and a real PostgreSQL: the end-to-end flow
//! under both persistence strategies, bad input, slow consumers, heart-beats, WebSocket
//! subprotocols, and interop with @stomp/stompjs.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{chat, client, next, room, subscribe, trial, two_servers_flow, TestEnv};
use stompede::client::{ClientError, ConnectOptions, StompClient};
use stompede::server::Persist;
use stompede::stomp::Command;

fn main() {
    common::run(1, 0, |env| {
        vec![
            trial(env, "flow_two_servers_persist_producer", |env| {
                two_servers_flow(env, Persist::Producer)
            }),
            trial(env, "flow_two_servers_persist_consumer", |env| {
                two_servers_flow(env, Persist::Consumer)
            }),
            trial(
                env,
                "bad_input_gets_error_and_close_others_carry_on",
                bad_input,
            ),
            trial(
                env,
                "slow_consumer_is_disconnected_room_keeps_flowing",
                slow_consumer,
            ),
            trial(
                env,
                "heart_beats_sent_and_silent_client_dropped",
                heart_beats,
            ),
            trial(
                env,
                "websocket_subprotocols_and_binary_messages",
                subprotocols,
            ),
            trial(env, "interop_stompjs_v7", stompjs_interop),
            trial(env, "metrics_and_healthz", metrics_endpoint),
            trial(
                env,
                "sigterm_drains_everything_kafka_took_into_the_db",
                graceful_shutdown,
            ),
            trial(
                env,
                "db_connections_lost_mid_run_are_reopened_without_loss",
                db_connection_loss,
            ),
        ]
    })
}

/// Sum of the high watermarks of `topic`: how many records Kafka holds.
async fn records_in(env: &TestEnv, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let kafka = env.kafka.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &kafka)
            .create()
            .expect("Kafka consumer");
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let mut total = 0;
        for partition in metadata.topics()[0].partitions() {
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition.id(), Duration::from_secs(10))
                .expect("watermarks");
            total += high - low;
        }
        total
    })
    .await
    .expect("watermark task")
}

/// Reads until the server closes the connection; returns the frames seen on the way.
async fn until_closed(client: &mut StompClient) -> Vec<stompede::stomp::Frame> {
    let mut frames = Vec::new();
    loop {
        match client.recv_timeout(Duration::from_secs(20)).await {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) | Err(ClientError::Ws(_)) => return frames,
            Err(e) => panic!("connection not closed after ERROR: {e}"),
        }
    }
}

async fn bad_input(env: Arc<TestEnv>) {
    let topic = env.topic("bad", 3).await;
    let server = env
        .server(env.config(&topic, Persist::Producer, "bad"))
        .await;
    let good_room = room("good");
    let bad_room = room("bad");
    let max = stompede::stomp::DEFAULT_MAX_FRAME_SIZE;
    let send_head = format!("SEND\ndestination:/app/chat/{bad_room}\n\n");

    let cases: Vec<(&str, Vec<Bytes>)> = vec![
        (
            "no NUL before the size limit",
            // The body streams in over several WebSocket messages and never ends.
            std::iter::once(Bytes::from(send_head.clone()))
                .chain((0..5).map(|_| Bytes::from(vec![b'x'; max / 4])))
                .collect(),
        ),
        (
            "oversize frame",
            vec![Bytes::from(format!(
                "SEND\ndestination:/app/chat/{bad_room}\ncontent-length:{}\n\n{}\0",
                max * 2,
                "y".repeat(max * 2)
            ))],
        ),
        (
            "unknown escape",
            vec![Bytes::from(format!(
                "SEND\ndestination:/app/chat/{bad_room}\nx-note:a\\tb\n\n{}\0",
                chat(&bad_room, "eve", "escape")
            ))],
        ),
        (
            "invalid JSON",
            vec![Bytes::from(format!(
                "{send_head}{{\"roomId\": \"{bad_room}\", \0"
            ))],
        ),
        (
            "missing field",
            vec![Bytes::from(format!(
                "{send_head}{{\"roomId\":\"{bad_room}\",\"sender\":\"eve\",\"type\":\"TALK\"}}\0"
            ))],
        ),
        (
            "room mismatch",
            vec![Bytes::from(format!(
                "{send_head}{}\0",
                chat("another-room", "eve", "mismatch")
            ))],
        ),
        (
            "unknown destination",
            vec![Bytes::from(format!(
                "SEND\ndestination:/app/other/{bad_room}\n\n{}\0",
                chat(&bad_room, "eve", "where")
            ))],
        ),
        (
            "SUBSCRIBE without id",
            vec![Bytes::from(format!(
                "SUBSCRIBE\ndestination:/topic/room/{bad_room}\n\n\0"
            ))],
        ),
        ("unknown command", vec![Bytes::from_static(b"SHOUT\n\n\0")]),
    ];

    // The bystander: subscribed to its own room, sending and receiving between every case.
    let mut bystander = client(&server.url).await;
    subscribe(&mut bystander, "g", &good_room).await;
    let mut good_sent = 0;
    for (name, chunks) in &cases {
        let mut bad = client(&server.url).await;
        for chunk in chunks {
            if bad.send_raw(chunk.clone()).await.is_err() {
                break; // the server may already have closed on an early chunk
            }
        }
        let frames = until_closed(&mut bad).await;
        let error = frames.iter().find(|f| f.command == Command::Error);
        let error =
            error.unwrap_or_else(|| panic!("{name}: no ERROR before close, got {frames:?}"));
        let message = error.get("message").unwrap_or_default();
        assert!(
            !message.is_empty(),
            "{name}: ERROR without a message header"
        );
        assert!(
            frames
                .iter()
                .all(|f| f.command != Command::Receipt && f.command != Command::Message),
            "{name}: unexpected frames {frames:?}"
        );

        let text = format!("still here after {name}");
        bystander
            .send(
                &format!("/app/chat/{good_room}"),
                chat(&good_room, "bob", &text),
                None,
            )
            .await
            .expect("bystander SEND");
        good_sent += 1;
        let frame = next(&mut bystander).await;
        assert_eq!(
            frame.command,
            Command::Message,
            "bystander got {frame:?} after {name}"
        );
        let body: serde_json::Value = serde_json::from_slice(&frame.body).expect("JSON");
        assert_eq!(body["message"], text.as_str());
    }
    // Nothing from the bad frames reached Kafka or the database.
    assert_eq!(
        records_in(&env, &topic).await,
        good_sent,
        "Kafka holds records beyond the bystander's"
    );
    assert_eq!(
        common::db_rows(&env.db, &bad_room).await.len(),
        0,
        "bad frames reached PostgreSQL"
    );
    assert_eq!(
        common::wait_rows(&env.db, &good_room, good_sent as usize)
            .await
            .len(),
        good_sent as usize
    );
    let metrics = server.stop().await;
    assert!(metrics.errors_sent.load(Relaxed) >= cases.len() as u64);
}

async fn slow_consumer(env: Arc<TestEnv>) {
    let topic = env.topic("slow", 1).await;
    let mut config = env.config(&topic, Persist::Producer, "slow");
    config.limits.session_queue = 16;
    let server = env.server(config).await;
    let metrics = server.bound.metrics.clone();
    let room = room("slow");
    let mut slow = client(&server.url).await;
    subscribe(&mut slow, "s", &room).await;
    let mut fast = client(&server.url).await;
    subscribe(&mut fast, "f", &room).await;

    // The fast subscriber reads everything until the end marker.
    let reader = tokio::spawn(async move {
        let mut texts = Vec::new();
        loop {
            let frame = next(&mut fast).await;
            assert_eq!(
                frame.command,
                Command::Message,
                "fast subscriber got {frame:?}"
            );
            let body: serde_json::Value = serde_json::from_slice(&frame.body).expect("JSON");
            let text = body["message"].as_str().expect("text").to_string();
            if text == "end" {
                return texts;
            }
            texts.push(text);
        }
    });
    // Large messages fill the slow client's socket buffers quickly; the bound is then hit.
    let mut sender = client(&server.url).await;
    let filler = "z".repeat(30_000);
    let mut sent = 0;
    for i in 0..2_000 {
        let text = format!("{i}:{filler}");
        sender
            .send(
                &format!("/app/chat/{room}"),
                chat(&room, "carol", &text),
                Some("r"),
            )
            .await
            .expect("SEND");
        assert_eq!(next(&mut sender).await.command, Command::Receipt);
        sent += 1;
        if metrics.slow_consumer_disconnects.load(Relaxed) > 0 && i % 50 == 49 {
            break;
        }
    }
    assert!(
        metrics.slow_consumer_disconnects.load(Relaxed) >= 1,
        "the slow subscriber was never disconnected after {sent} messages"
    );
    sender
        .send(
            &format!("/app/chat/{room}"),
            chat(&room, "carol", "end"),
            None,
        )
        .await
        .expect("SEND end");
    let texts = reader.await.expect("fast reader");
    assert_eq!(texts.len(), sent, "the fast subscriber missed messages");
    for (i, text) in texts.iter().enumerate() {
        assert!(
            text.starts_with(&format!("{i}:")),
            "message {i} out of order"
        );
    }
    // The slow client, once it reads, finds its connection closed.
    let frames = until_closed(&mut slow).await;
    assert!(
        frames.len() < sent,
        "the slow subscriber was not cut off ({} frames)",
        frames.len()
    );
    assert_eq!(metrics.slow_consumer_disconnects.load(Relaxed), 1);
    server.stop().await;
}

async fn heart_beats(env: Arc<TestEnv>) {
    let topic = env.topic("hb", 1).await;
    let mut config = env.config(&topic, Persist::Producer, "hb");
    config.limits.heartbeat = (Duration::from_millis(500), Duration::from_millis(500));
    let server = env.server(config).await;
    let metrics = server.bound.metrics.clone();

    // The server beats every max(500, 500) ms to a client that wants them.
    let options = ConnectOptions {
        heartbeat: (0, 500),
        ..ConnectOptions::default()
    };
    let mut listener = StompClient::connect(&server.url, &options)
        .await
        .expect("connect");
    assert_eq!(listener.connected.get("heart-beat"), Some("500,500"));
    match listener.recv_timeout(Duration::from_millis(2_600)).await {
        Err(ClientError::Timeout(_)) => {}
        other => panic!("expected silence apart from heart-beats, got {other:?}"),
    }
    assert!(
        listener.heartbeats >= 3,
        "only {} heart-beats in 2.6 s at 500 ms",
        listener.heartbeats
    );

    // A client that promised beats every 500 ms and then goes silent is dropped.
    let options = ConnectOptions {
        heartbeat: (500, 0),
        ..ConnectOptions::default()
    };
    let mut silent = StompClient::connect(&server.url, &options)
        .await
        .expect("connect");
    let frames = until_closed(&mut silent).await;
    assert!(
        frames
            .iter()
            .any(|f| f.command == Command::Error && f.get("message") == Some("heart-beat timeout")),
        "silent client not dropped with a heart-beat ERROR: {frames:?}"
    );
    assert_eq!(metrics.heartbeat_timeouts.load(Relaxed), 1);

    // A client that does beat stays connected past several periods.
    let options = ConnectOptions {
        heartbeat: (500, 0),
        ..ConnectOptions::default()
    };
    let mut beating = StompClient::connect(&server.url, &options)
        .await
        .expect("connect");
    for _ in 0..8 {
        beating.heartbeat().await.expect("heart-beat");
        match beating.recv_timeout(Duration::from_millis(400)).await {
            Err(ClientError::Timeout(_)) => {}
            other => panic!("beating client got {other:?}"),
        }
    }
    assert_eq!(
        metrics.heartbeat_timeouts.load(Relaxed),
        1,
        "a beating client was dropped"
    );
    server.stop().await;
}

async fn subprotocols(env: Arc<TestEnv>) {
    let topic = env.topic("ws", 1).await;
    let server = env
        .server(env.config(&topic, Persist::Producer, "ws"))
        .await;
    let offered = |protocols: &[&str]| ConnectOptions {
        subprotocols: protocols.iter().map(|p| p.to_string()).collect(),
        ..ConnectOptions::default()
    };
    let c = StompClient::connect(
        &server.url,
        &offered(&["v10.stomp", "v11.stomp", "v12.stomp"]),
    )
    .await
    .expect("connect");
    assert_eq!(c.subprotocol.as_deref(), Some("v12.stomp"));
    assert_eq!(c.version, stompede::stomp::Version::V1_2);
    let c = StompClient::connect(&server.url, &offered(&["v10.stomp", "v11.stomp"]))
        .await
        .expect("connect");
    assert_eq!(c.subprotocol.as_deref(), Some("v11.stomp"));
    let c = StompClient::connect(&server.url, &offered(&[]))
        .await
        .expect("connect with no subprotocol");
    assert_eq!(c.subprotocol, None);
    let old = ConnectOptions {
        accept_version: "1.0".into(),
        ..ConnectOptions::default()
    };
    let c = StompClient::connect(&server.url, &old)
        .await
        .expect("connect 1.0");
    assert_eq!(c.version, stompede::stomp::Version::V1_0);
    // Binary WebSocket messages work both ways.
    let room = room("bin");
    let binary = ConnectOptions {
        binary: true,
        ..ConnectOptions::default()
    };
    let mut c = StompClient::connect(&server.url, &binary)
        .await
        .expect("connect binary");
    subscribe(&mut c, "b", &room).await;
    c.send(
        &format!("/app/chat/{room}"),
        chat(&room, "dave", "binary hello"),
        None,
    )
    .await
    .expect("SEND");
    let frame = next(&mut c).await;
    assert_eq!(frame.command, Command::Message);
    // A wrong path is refused at the handshake.
    let wrong = server.url.replace("/ws-stomp", "/nope");
    assert!(StompClient::connect(&wrong, &ConnectOptions::default())
        .await
        .is_err());
    server.stop().await;
}

async fn stompjs_interop(env: Arc<TestEnv>) {
    let topic = env.topic("stompjs", 1).await;
    let mut config = env.config(&topic, Persist::Producer, "js");
    config.limits.heartbeat = (Duration::from_millis(1_000), Duration::from_millis(1_000));
    let server = env.server(config).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("interop");
    let url = server.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        if !dir
            .join("node_modules")
            .join("@stomp")
            .join("stompjs")
            .exists()
        {
            let status = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm is needed for the interop test (apt-get install nodejs npm)");
            assert!(status.success(), "npm ci in interop/ failed");
        }
        std::process::Command::new("npm")
            .arg("test")
            .env("STOMPEDE_WS_URL", &url)
            .current_dir(&dir)
            .output()
            .expect("run npm test")
    })
    .await
    .expect("interop task");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "@stomp/stompjs interop failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("# pass 1") || stdout.contains("pass 1"),
        "no passing node test:\n{stdout}"
    );
    server.stop().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics port");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .expect("write request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

async fn metrics_endpoint(env: Arc<TestEnv>) {
    let topic = env.topic("metrics", 2).await;
    let mut config = env.config(&topic, Persist::Producer, "m");
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    let group = config.fanout_group();
    let server = env.server(config).await;
    let addr = server.bound.metrics_addr.expect("metrics address");
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    let room = room("metrics");
    let mut c = client(&server.url).await;
    subscribe(&mut c, "m", &room).await;
    c.send(
        &format!("/app/chat/{room}"),
        chat(&room, "erin", "counted"),
        Some("r"),
    )
    .await
    .expect("SEND");
    let mut kinds = Vec::new();
    for _ in 0..2 {
        kinds.push(next(&mut c).await.command);
    }
    assert!(
        kinds.contains(&Command::Receipt) && kinds.contains(&Command::Message),
        "{kinds:?}"
    );
    // Lag comes from librdkafka's statistics, once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200);
        if body.contains(&format!("group=\"{group}\"")) || std::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for needle in [
        "stompede_sessions_open{",
        "stompede_published_total{",
        "stompede_frames_in_total{",
        "stompede_produce_latency_seconds_bucket{le=",
        "stompede_db_batch_rows_count",
        "stompede_db_batch_latency_seconds_sum",
        "stompede_fanout_drops_total{",
        &format!(
            "stompede_consumer_lag{{instance=\"{}\",group=\"{group}\",partition=\"0\"}}",
            server.bound.metrics.instance_id
        ),
    ] {
        assert!(body.contains(needle), "/metrics lacks {needle}:\n{body}");
    }
    let published = body
        .lines()
        .find(|l| l.starts_with("stompede_published_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert_eq!(published, Some(1));
    server.stop().await;
}

async fn graceful_shutdown(env: Arc<TestEnv>) {
    let topic = env.topic("sigterm", 3).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stompede"))
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--kafka",
            &env.kafka,
            "--db",
            &env.db,
        ])
        .args([
            "--topic",
            &topic,
            "--instance-id",
            &format!("term-{}", rand::random::<u32>()),
        ])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start stompede server");
    // Ready once the log says so.
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("ready: ws://") {
                return true;
            }
        }
        false
    });
    assert_eq!(ready.await, Ok(true), "the server never became ready");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let url = format!("ws://127.0.0.1:{port}/ws-stomp");
    let room = room("term");
    let mut sender = client(&url).await;
    for i in 0..300 {
        sender
            .send(
                &format!("/app/chat/{room}"),
                chat(&room, "frank", &format!("t{i}")),
                Some(&format!("r{i}")),
            )
            .await
            .expect("SEND");
    }
    // Terminate while sends are in flight.
    let pid = child.id().expect("pid") as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut receipted = 0;
    let mut error = None;
    loop {
        match sender.recv_timeout(Duration::from_secs(30)).await {
            Ok(Some(f)) if f.command == Command::Receipt => receipted += 1,
            Ok(Some(f)) if f.command == Command::Error => {
                error = f.get("message").map(str::to_string)
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("exit within 60 s")
        .expect("wait");
    assert!(status.success(), "server exited with {status}");
    // Everything Kafka took is in the database; every receipt had its row.
    let in_kafka = records_in(&env, &topic).await;
    let rows = common::db_rows(&env.db, &room).await.len() as i64;
    assert_eq!(
        rows, in_kafka,
        "Kafka holds {in_kafka} records but PostgreSQL {rows} rows"
    );
    assert!(
        rows >= receipted,
        "{receipted} receipts but only {rows} rows"
    );
    if receipted < 300 {
        assert_eq!(
            error.as_deref(),
            Some("server shutting down"),
            "connection closed without the shutdown ERROR"
        );
    }
}

async fn db_connection_loss(env: Arc<TestEnv>) {
    const N: usize = 300;
    let topic = env.topic("dbloss", 3).await;
    let mut config = env.config(&topic, Persist::Producer, "dbloss");
    // Tag this server's database sessions so only they are cut.
    let app = format!("stompede-dbloss-{}", rand::random::<u32>());
    config.db_url = format!("{}?application_name={app}", env.db);
    let server = env.server(config).await;
    let metrics = server.bound.metrics.clone();
    let room = room("dbloss");
    let mut sender = client(&server.url).await;
    let admin = stompede::db::connect(&env.db).await.expect("PostgreSQL");
    let mut receipts = 0;
    let mut cut = 0;
    for i in 0..N {
        sender
            .send(
                &format!("/app/chat/{room}"),
                chat(&room, "gina", &format!("d{i}")),
                Some(&format!("r{i}")),
            )
            .await
            .expect("SEND");
        if i % 100 == 50 {
            // PostgreSQL drops every writer connection of the server, mid-stream.
            let killed = admin
                .query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", &[&app])
                .await
                .expect("terminate the server's sessions");
            cut += killed.len();
        }
    }
    while receipts < N {
        let frame = next(&mut sender).await;
        assert_eq!(
            frame.command,
            Command::Receipt,
            "after a lost DB connection the sender got {frame:?}"
        );
        receipts += 1;
    }
    assert!(cut >= 2, "no database session was cut");
    let rows = common::db_rows(&env.db, &room).await;
    assert_eq!(rows.len(), N, "rows after reconnecting");
    let distinct: std::collections::BTreeSet<&String> = rows.iter().collect();
    assert_eq!(distinct.len(), N);
    assert!(
        metrics.db_reconnects.load(Relaxed) >= 1,
        "no writer reconnected: the cut did not hit a writer"
    );
    server.stop().await;
}
