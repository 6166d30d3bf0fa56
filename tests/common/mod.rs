//! Shared test support: one real Kafka + PostgreSQL stack per test binary, reference
//! servers started in-process on port 0, and small helpers over the STOMP client.
//!
//! Each integration test binary uses a custom harness (`libtest-mimic`): `main` brings
//! the stack up once, runs the trials (in parallel, each on its own topic and rooms),
//! then takes the stack down, so nothing outlives the binary. Set `STOMPEDE_TEST_KAFKA`
//! and `STOMPEDE_TEST_DB` to run against a stack that is already up instead.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use stompede::client::{ConnectOptions, StompClient};
use stompede::server::{Config, Persist};
use stompede::stack::{self, StackOptions};
use stompede::stomp::{Command, Frame};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Kafka and PostgreSQL for one test binary.
pub struct TestEnv {
    pub kafka: String,
    pub db: String,
    pub brokers: u8,
    /// The stack's state directory (for runs that look for a running stack).
    pub state_dir: std::path::PathBuf,
    /// The stack's own record, when this binary started it.
    pub info: Option<stack::StackInfo>,
    pub rt: tokio::runtime::Runtime,
    stack: std::sync::Mutex<Option<stack::Stack>>,
    _state: Option<TempDir>,
}

/// A scratch directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create a scratch directory under the temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestEnv {
    /// Brings up a stack with `brokers` brokers and no servers (tests start their own).
    pub fn start(brokers: u8, servers: u32) -> Arc<TestEnv> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        if let (Ok(kafka), Ok(db)) = (
            std::env::var("STOMPEDE_TEST_KAFKA"),
            std::env::var("STOMPEDE_TEST_DB"),
        ) {
            let state_dir = std::env::temp_dir().join("stompede-test-none");
            return Arc::new(TestEnv {
                kafka,
                db,
                brokers,
                state_dir,
                info: None,
                rt,
                stack: std::sync::Mutex::new(None),
                _state: None,
            });
        }
        let state = TempDir::new("stompede-test-stack");
        let options = StackOptions {
            brokers,
            partitions: 3,
            servers,
            state_dir: state.0.clone(),
            server_exe: env!("CARGO_BIN_EXE_stompede").into(),
            detach: false,
            ..StackOptions::default()
        };
        let started = Instant::now();
        let stack = match rt.block_on(stack::up(&options)) {
            Ok(stack) => stack,
            Err(e) => panic!("the test stack did not come up: {e}"),
        };
        eprintln!(
            "test stack ({brokers} broker(s)) up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let info = stack.info().clone();
        Arc::new(TestEnv {
            kafka: info.kafka_bootstrap.clone(),
            db: info.postgres.url.clone(),
            brokers,
            state_dir: state.0.clone(),
            info: Some(info),
            rt,
            stack: std::sync::Mutex::new(Some(stack)),
            _state: Some(state),
        })
    }

    /// Stops the stack (if this binary started it).
    pub fn stop(&self) {
        let stack = self.stack.lock().ok().and_then(|mut s| s.take());
        if let Some(stack) = stack {
            if let Err(e) = self.rt.block_on(stack.down()) {
                eprintln!("stack down: {e}");
            }
        }
    }

    /// Restarts the stack's servers with another persistence strategy (the chat topic and
    /// the history table start empty). Only for a stack this binary started.
    pub async fn reshape_persist(&self, persist: Persist) {
        let mut stack = self
            .stack
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("reshape needs the stack this binary started");
        let info = stack.info().clone();
        let want = StackOptions {
            brokers: info.brokers.len() as u8,
            partitions: info.partitions,
            servers: info.servers.len() as u32,
            persist,
            server_impl: info.server_impl,
            shared_fanout_group: info.shared_fanout_group,
            topic: info.topic.clone(),
            state_dir: info.state_dir.clone(),
            server_exe: env!("CARGO_BIN_EXE_stompede").into(),
            detach: false,
        };
        let reshaped = stack.reshape(&want).await;
        *self.stack.lock().unwrap_or_else(|e| e.into_inner()) = Some(stack);
        if let Err(e) = reshaped {
            panic!(
                "reshaping the test stack to persist {} failed: {e}",
                persist.as_str()
            );
        }
    }

    /// Creates a fresh topic for one test and returns its name.
    pub async fn topic(&self, label: &str, partitions: u32) -> String {
        let name = format!("test.{label}.{}", rand::random::<u32>());
        let rf = u16::from(self.brokers);
        // No topic-level overrides: on three brokers, min.insync.replicas=2 must come from
        // the brokers' own defaults, which the flow test then reads back.
        stack::create_topic(&self.kafka, &name, partitions, rf, &[])
            .await
            .unwrap_or_else(|e| panic!("create topic {name}: {e}"));
        stack::wait_kafka_ready(
            &self.kafka,
            self.brokers as usize,
            Some(&name),
            Duration::from_secs(60),
        )
        .await
        .unwrap_or_else(|e| panic!("topic {name} not ready: {e}"));
        name
    }

    pub fn config(&self, topic: &str, persist: Persist, label: &str) -> Config {
        let instance = format!("{label}-{}", rand::random::<u32>());
        let mut config = Config::new(&self.kafka, &self.db, &instance);
        config.topic = topic.to_string();
        config.persist = persist;
        config.persist_group = format!("stompede-persist-{topic}");
        config
    }

    /// Starts a server in-process on 127.0.0.1:0 and waits until it is ready.
    pub async fn server(&self, config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let instance = config.instance_id.clone();
        let task = tokio::spawn(stompede::server::run(
            listener,
            config,
            shutdown.clone(),
            move |bound| {
                let _ = tx.send(bound);
            },
        ));
        let bound = match rx.await {
            Ok(bound) => bound,
            Err(_) => match task.await {
                Ok(Err(e)) => panic!("server {instance} did not start: {e}"),
                other => panic!("server {instance} did not start: {other:?}"),
            },
        };
        TestServer {
            url: format!("ws://{}/ws-stomp", bound.ws),
            bound,
            shutdown,
            task,
        }
    }
}

pub struct TestServer {
    pub url: String,
    pub bound: stompede::server::Bound,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<
        Result<Arc<stompede::server::metrics::Metrics>, stompede::server::ServerError>,
    >,
}

impl TestServer {
    /// Shuts the server down cleanly and returns its final metrics.
    pub async fn stop(self) -> Arc<stompede::server::metrics::Metrics> {
        self.shutdown.cancel();
        match self.task.await {
            Ok(Ok(metrics)) => metrics,
            other => panic!("server did not stop cleanly: {other:?}"),
        }
    }
}

/// Connects a client with default options (no heart-beats).
pub async fn client(url: &str) -> StompClient {
    StompClient::connect(url, &ConnectOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// Subscribes to `room` and waits for the server to confirm with a RECEIPT, so later
/// sends are guaranteed to find the subscription in place.
pub async fn subscribe(client: &mut StompClient, id: &str, room: &str) {
    let frame = Frame::new(Command::Subscribe)
        .header("id", id)
        .header("destination", format!("/topic/room/{room}"))
        .header("receipt", format!("sub-{id}"));
    client.send_frame(&frame).await.expect("send SUBSCRIBE");
    let reply = next(client).await;
    assert_eq!(
        reply.command,
        Command::Receipt,
        "SUBSCRIBE answered with {reply:?}"
    );
}

/// The next frame within 30 s; panics on close or timeout.
pub async fn next(client: &mut StompClient) -> Frame {
    match client.recv_timeout(Duration::from_secs(30)).await {
        Ok(Some(frame)) => frame,
        Ok(None) => panic!("the server closed the connection"),
        Err(e) => panic!("no frame: {e}"),
    }
}

/// The chat JSON body for `room`.
pub fn chat(room: &str, sender: &str, text: &str) -> String {
    serde_json::json!({"roomId": room, "sender": sender, "message": text, "type": "TALK"})
        .to_string()
}

/// Rows in the history table for `room`.
pub async fn db_rows(db: &str, room: &str) -> Vec<String> {
    let client = stompede::db::connect(db)
        .await
        .expect("connect to PostgreSQL");
    client
        .query("SELECT message FROM chat_messages WHERE room_id = $1 ORDER BY kafka_partition, kafka_offset", &[&room])
        .await
        .expect("query chat_messages")
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect()
}

/// Polls `rows` until it returns at least `n` rows or 60 s pass; returns the last result.
pub async fn wait_rows(db: &str, room: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = db_rows(db, room).await;
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A unique room id.
pub fn room(label: &str) -> String {
    format!("{label}-{}", rand::random::<u32>())
}

/// Wraps an async test body as a trial on the shared runtime.
pub fn trial<F, Fut>(env: &Arc<TestEnv>, name: &str, body: F) -> Trial
where
    F: FnOnce(Arc<TestEnv>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let env = env.clone();
    Trial::test(name, move || {
        let handle = env.rt.handle().clone();
        let outcome = handle.block_on(async move { tokio::spawn(body(env)).await });
        outcome.map_err(|e| {
            let message = match e.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "test panicked".into()),
                Err(e) => e.to_string(),
            };
            Failed::from(message)
        })
    })
}

/// Runs `trials` against an environment with `brokers` brokers, then tears it down.
pub fn run(brokers: u8, servers: u32, trials: impl FnOnce(&Arc<TestEnv>) -> Vec<Trial>) -> ! {
    run_with(brokers, servers, None, trials)
}

/// [`run`] with a default number of test threads (1 for timing-sensitive binaries).
pub fn run_with(
    brokers: u8,
    servers: u32,
    threads: Option<usize>,
    trials: impl FnOnce(&Arc<TestEnv>) -> Vec<Trial>,
) -> ! {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = threads;
    }
    if args.list {
        // Listing needs no stack.
        let env = Arc::new(TestEnv {
            kafka: String::new(),
            db: String::new(),
            brokers,
            state_dir: std::env::temp_dir(),
            info: None,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            stack: std::sync::Mutex::new(None),
            _state: None,
        });
        libtest_mimic::run(&args, trials(&env)).exit()
    }
    let env = TestEnv::start(brokers, servers);
    let conclusion = libtest_mimic::run(&args, trials(&env));
    env.stop();
    conclusion.exit()
}

/// The end-to-end acceptance flow: two servers, a subscriber on each, 200 messages with
/// receipts through the first; both subscribers get all of them in order exactly once,
/// every receipt arrives, and PostgreSQL ends up with exactly one row per message.
pub async fn two_servers_flow(env: Arc<TestEnv>, persist: Persist) {
    const N: usize = 200;
    let topic = env.topic(&format!("flow-{}", persist.as_str()), 3).await;
    if env.brokers == 3 {
        // Read back from the brokers' own metadata and configs.
        for name in [topic.as_str(), "chat.messages"] {
            let d = stack::topic_config(&env.kafka, name)
                .await
                .unwrap_or_else(|e| panic!("describe {name}: {e}"));
            assert_eq!(d.replication_factor, 3, "{name}: replication factor");
            assert_eq!(d.min_insync_replicas, 2, "{name}: min.insync.replicas");
        }
    }
    let a = env.server(env.config(&topic, persist, "a")).await;
    let b = env.server(env.config(&topic, persist, "b")).await;
    let room = room("flow");
    let mut sub_a = client(&a.url).await;
    let mut sub_b = client(&b.url).await;
    subscribe(&mut sub_a, "s1", &room).await;
    subscribe(&mut sub_b, "s1", &room).await;

    let mut sender = client(&a.url).await;
    for i in 0..N {
        let body = chat(&room, "alice", &format!("m{i}"));
        sender
            .send(&format!("/app/chat/{room}"), body, Some(&format!("r{i}")))
            .await
            .expect("SEND");
    }
    // A marker after the 200: when it arrives, nothing more of the 200 can follow.
    sender
        .send(
            &format!("/app/chat/{room}"),
            chat(&room, "alice", "end"),
            None,
        )
        .await
        .expect("SEND end");

    let mut receipts = std::collections::BTreeSet::new();
    while receipts.len() < N {
        let frame = next(&mut sender).await;
        assert_eq!(frame.command, Command::Receipt, "sender got {frame:?}");
        let id = frame.get("receipt-id").expect("receipt-id").to_string();
        assert!(receipts.insert(id.clone()), "receipt {id} arrived twice");
    }
    assert_eq!(receipts, (0..N).map(|i| format!("r{i}")).collect());

    for (name, subscriber) in [("server A", &mut sub_a), ("server B", &mut sub_b)] {
        let mut texts = Vec::new();
        loop {
            let frame = next(subscriber).await;
            assert_eq!(
                frame.command,
                Command::Message,
                "{name} subscriber got {frame:?}"
            );
            assert_eq!(frame.get("subscription"), Some("s1"));
            assert_eq!(
                frame.get("destination"),
                Some(format!("/topic/room/{room}").as_str())
            );
            assert!(
                frame.get("message-id").is_some(),
                "MESSAGE without message-id"
            );
            let body: serde_json::Value =
                serde_json::from_slice(&frame.body).expect("MESSAGE body is JSON");
            assert_eq!(body["roomId"], room.as_str());
            let text = body["message"].as_str().expect("message text").to_string();
            if text == "end" {
                break;
            }
            texts.push(text);
        }
        let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
        assert_eq!(
            texts.len(),
            N,
            "{name}: {} messages instead of {N}",
            texts.len()
        );
        assert_eq!(
            texts, expected,
            "{name}: messages out of order or duplicated"
        );
    }

    // Producer persistence writes before the receipt; consumer persistence may lag.
    let rows = match persist {
        Persist::Producer => db_rows(&env.db, &room).await,
        Persist::Consumer => wait_rows(&env.db, &room, N + 1).await,
    };
    let chat_rows: Vec<&String> = rows.iter().filter(|t| t.as_str() != "end").collect();
    assert_eq!(
        chat_rows.len(),
        N,
        "PostgreSQL holds {} rows for the 200 messages",
        chat_rows.len()
    );
    let distinct: std::collections::BTreeSet<&String> = chat_rows.iter().copied().collect();
    assert_eq!(distinct.len(), N, "duplicate rows in PostgreSQL");
    if persist == Persist::Producer {
        // Every receipted message was already in the table when its receipt came.
        assert!(rows.len() >= N);
    }
    // Rows are keyed by the Kafka cluster too, so a rebuilt cluster cannot collide.
    let db = stompede::db::connect(&env.db).await.expect("PostgreSQL");
    let clusters: Vec<String> = db
        .query(
            "SELECT DISTINCT kafka_cluster FROM chat_messages WHERE room_id = $1",
            &[&room],
        )
        .await
        .expect("query kafka_cluster")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        clusters.len(),
        1,
        "rows of one room from several clusters: {clusters:?}"
    );
    assert_eq!(
        clusters[0].len(),
        22,
        "the Kafka cluster id is missing from the rows: {clusters:?}"
    );
    a.stop().await;
    b.stop().await;
}
