//! A reference server's start against a Kafka cluster that is still starting, and against
//! an address where no broker runs.
//!
//! The shared stack provides PostgreSQL. Each "still starting" trial starts a fresh Kafka
//! broker of its own and starts a server the moment the broker's port accepts a
//! connection. The chat topic is created only once the server has been told at least
//! once that Kafka is not ready (its `stompede_kafka_start_retries_total` counter), so
//! a server that gave up at the first "not yet" fails every trial. After that it meets
//! a topic whose partitions are still getting leaders and a group coordinator that is
//! being created and loaded, and must come up all the same and carry a message.
//! Trials run one at a time: several JVMs starting at once only measure the machine.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{chat, client, next, room, subscribe, trial, TempDir, TestEnv};
use stompede::server::Persist;
use stompede::stack;
use stompede::stomp::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server's own start deadline in the "still starting" trials.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let rounds = [Persist::Producer, Persist::Consumer, Persist::Producer];
    common::run_with(1, 0, Some(1), |env| {
        let mut trials: Vec<_> = rounds
            .into_iter()
            .enumerate()
            .map(|(i, persist)| {
                let name = format!(
                    "server_comes_up_while_kafka_is_still_starting_{}_persist_{}",
                    i + 1,
                    persist.as_str()
                );
                trial(env, &name, move |env| comes_up_while_starting(env, persist))
            })
            .collect();
        trials.push(trial(
            env,
            "server_without_a_broker_exits_naming_the_address_within_its_deadline",
            exits_without_a_broker,
        ));
        trials
    })
}

/// A port on 127.0.0.1 that nothing listens on (free a moment ago).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// `stompede_kafka_start_retries_total` from the server's `/metrics`, if it answers.
async fn start_retries(metrics: SocketAddr) -> Option<u64> {
    let mut stream = TcpStream::connect(metrics).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    // `stompede_kafka_start_retries_total{instance="…"} N`
    text.lines()
        .find(|l| l.starts_with("stompede_kafka_start_retries_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
}

async fn comes_up_while_starting(env: Arc<TestEnv>, persist: Persist) {
    let dir = TempDir::new("stompede-server-start");
    let brokers = stack::start_brokers(&dir.0, 1, 3)
        .await
        .unwrap_or_else(|e| panic!("start a broker: {e}"));
    let broker = brokers.info()[0].clone();
    let bootstrap = brokers.bootstrap();

    // The moment the port accepts a connection.
    let t0 = Instant::now();
    let port_deadline = t0 + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", broker.port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < port_deadline,
            "broker port {} did not open within 60 s; log {}",
            broker.port,
            broker.log.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let port_open = t0.elapsed();

    let topic = format!("test.start.{}", rand::random::<u32>());
    let mut config = env.config(&topic, persist, "start");
    config.kafka_bootstrap = bootstrap.clone();
    config.kafka_start_timeout = START_TIMEOUT;
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    config.metrics_listen = Some(metrics_addr);
    let server_env = env.clone();
    let server = tokio::spawn(async move { server_env.server(config).await });

    // The topic appears only after the server has met a "not ready yet".
    let wait_deadline = Instant::now() + START_TIMEOUT;
    loop {
        if start_retries(metrics_addr).await.is_some_and(|n| n >= 1) {
            break;
        }
        assert!(
            !server.is_finished(),
            "the server ended before it retried anything"
        );
        assert!(
            Instant::now() < wait_deadline,
            "the server never reported a Kafka retry at {metrics_addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack::wait_kafka_ready(&bootstrap, 1, None, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("broker at {bootstrap} not ready: {e}"));
    stack::create_topic(&bootstrap, &topic, 3, 1, &[])
        .await
        .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));

    let server = match tokio::time::timeout(START_TIMEOUT + Duration::from_secs(30), server).await {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => panic!("the server did not come up: {e}"),
        Err(_) => panic!("the server neither came up nor failed within its deadline"),
    };
    let retries = server
        .bound
        .metrics
        .kafka_start_retries
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "persist {}: port open after {:.1} s, server ready {:.1} s after that, {retries} Kafka retries",
        persist.as_str(),
        port_open.as_secs_f64(),
        (t0.elapsed() - port_open).as_secs_f64()
    );
    assert!(retries >= 1);

    // Ready means positioned: a message sent now comes back through Kafka.
    let room = room("start");
    let mut c = client(&server.url).await;
    subscribe(&mut c, "s1", &room).await;
    c.send(
        &format!("/app/chat/{room}"),
        chat(&room, "alice", "hello"),
        Some("r1"),
    )
    .await
    .expect("SEND");
    let mut got_message = false;
    let mut got_receipt = false;
    while !(got_message && got_receipt) {
        let frame = next(&mut c).await;
        match frame.command {
            Command::Message => got_message = true,
            Command::Receipt => got_receipt = true,
            other => panic!("unexpected {other:?}: {frame:?}"),
        }
    }
    drop(c);
    server.stop().await;
    drop(brokers);
}

async fn exits_without_a_broker(env: Arc<TestEnv>) {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let deadline = Duration::from_secs(3);
    let t = Instant::now();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_stompede"))
        .args(["server", "--listen", "127.0.0.1:0"])
        .args(["--kafka", &address])
        .args(["--db", &env.db])
        .args([
            "--instance-id",
            &format!("nobroker-{}", rand::random::<u32>()),
        ])
        .args(["--kafka-start-timeout", "3s"])
        .env("RUST_LOG", "info,rdkafka=off")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(out) => out.expect("run the stompede binary"),
        Err(_) => panic!("the server kept running 60 s with no broker at {address}"),
    };
    let took = t.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the server exited 0 with no broker:\n{stderr}"
    );
    assert!(
        took >= deadline,
        "gave up after {took:?}, before its {deadline:?} deadline:\n{stderr}"
    );
    assert!(
        took < deadline + Duration::from_secs(8),
        "took {took:?} to give up on a {deadline:?} deadline"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ")
            && last.contains(&address)
            && last.contains("not ready within 3s"),
        "the final error does not name {address} and the deadline: {last:?}\n{stderr}"
    );
}
