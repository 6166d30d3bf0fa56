//! The local stack against the real components: Apache Kafka brokers (JVMs from the
//! pinned Maven artifacts) and a private PostgreSQL 15 cluster.
//!
//! Each test brings a stack up in its own temporary state directory, checks what the
//! brokers and the database report about themselves (not what the stack believes),
//! brings it down, and checks that no recorded process is left and no recorded port is
//! still bound. The tests run one at a time: several JVM clusters at once on a small
//! machine only measure the machine.
use std::path::{Path, PathBuf};
use std::time::Instant;

use stompede::stack::{self, StackError, StackInfo, StackOptions};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn temp_state_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "stompede-{name}-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

fn options(state_dir: &Path, brokers: u8, partitions: u32) -> StackOptions {
    StackOptions {
        brokers,
        partitions,
        servers: 0,
        state_dir: state_dir.to_path_buf(),
        server_exe: PathBuf::from(env!("CARGO_BIN_EXE_stompede")),
        detach: false,
        ..StackOptions::default()
    }
}

/// Whether a process with this pid exists and has not exited (a zombie has exited).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')) | None)
        }
        Err(_) => false,
    }
}

fn recorded_pids(info: &StackInfo) -> Vec<u32> {
    let mut pids: Vec<u32> = info.brokers.iter().map(|b| b.pid).collect();
    pids.push(info.postgres.pid);
    pids.extend(info.servers.iter().map(|s| s.pid));
    pids
}

fn recorded_ports(info: &StackInfo) -> Vec<u16> {
    let mut ports: Vec<u16> = info
        .brokers
        .iter()
        .flat_map(|b| [b.port, b.controller_port])
        .collect();
    ports.push(info.postgres.port);
    ports
}

async fn assert_schema_present(url: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the stack's PostgreSQL");
    let conn = tokio::spawn(conn);
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("SELECT 1")
        .get(0);
    assert_eq!(one, 1);
    let table: Option<String> = client
        .query_one("SELECT to_regclass('chat_messages')::text", &[])
        .await
        .expect("look up chat_messages")
        .get(0);
    assert_eq!(table.as_deref(), Some(stompede::db::TABLE));
    drop(client);
    let _ = conn.await;
}

/// Local ports with a socket in LISTEN state (`/proc/net/tcp` and `tcp6`, state `0A`).
/// A port merely in use as the local end of some other connection (the other tests of
/// this binary run beside this one and draw ephemeral ports from the same range) is not
/// a leftover of the stack.
fn listening_ports() -> Vec<u16> {
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 3 && fields[3] == "0A" {
                if let Some(port) = fields[1]
                    .rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
    }
    ports
}

/// Every recorded port listens (which also shows [`listening_ports`] reads the tables).
fn assert_all_listening(info: &StackInfo) {
    let listening = listening_ports();
    for port in recorded_ports(info) {
        assert!(
            listening.contains(&port),
            "port {port} of the running stack is not in LISTEN state in /proc/net/tcp*"
        );
    }
}

fn assert_nothing_left(info: &StackInfo, state_dir: &Path) {
    for pid in recorded_pids(info) {
        assert!(!running(pid), "pid {pid} is still running after down");
    }
    let listening = listening_ports();
    for port in recorded_ports(info) {
        assert!(
            !listening.contains(&port),
            "port {port} still has a listener after down"
        );
    }
    assert!(
        !state_dir.join("state.json").exists(),
        "state.json left behind"
    );
    assert!(!state_dir.join("data").exists(), "data/ left behind");
    assert!(
        state_dir.join("logs").join("kafka-1.log").exists(),
        "logs must be kept"
    );
    assert!(
        state_dir.join("logs").join("postgres.log").exists(),
        "logs must be kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_rf3_min_isr2_then_down_leaves_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = temp_state_dir("stack3");
    let t = Instant::now();
    let stack = stack::up(&options(&dir, 3, 6))
        .await
        .unwrap_or_else(|e| panic!("stack up failed:\n{e}"));
    eprintln!("3-broker stack up in {:.1} s", t.elapsed().as_secs_f64());
    let info = stack.info().clone();
    assert_all_listening(&info);
    assert_eq!(info.brokers.len(), 3);
    assert_eq!(info.kafka_bootstrap.split(',').count(), 3);
    assert_eq!((info.replication_factor, info.min_insync_replicas), (3, 2));

    // What the brokers say, not what we asked for.
    let topic = stack::topic_config(&info.kafka_bootstrap, &info.topic)
        .await
        .expect("describe the chat topic");
    assert_eq!(topic.partitions, 6);
    assert_eq!(topic.replication_factor, 3);
    assert_eq!(topic.min_insync_replicas, 2);
    assert_eq!(
        topic.configs.get("min.insync.replicas").map(String::as_str),
        Some("2")
    );
    stack::wait_kafka_ready(
        &info.kafka_bootstrap,
        3,
        Some(&info.topic),
        std::time::Duration::from_secs(10),
    )
    .await
    .expect("every partition has a leader");

    assert_schema_present(&info.postgres.url).await;

    // The record on disk matches, and every process is reported alive.
    let status = stack::status(&dir)
        .expect("status")
        .expect("a stack is recorded");
    assert_eq!(recorded_pids(&status), recorded_pids(&info));
    assert!(status.brokers.iter().all(|b| b.alive == Some(true)));
    assert_eq!(status.postgres.alive, Some(true));

    // Stop by what is recorded in the state dir, as `stompede stack down` does.
    let t = Instant::now();
    stack::down(&dir).await.expect("stack down");
    eprintln!("3-broker stack down in {:.1} s", t.elapsed().as_secs_f64());
    assert_nothing_left(&info, &dir);
    assert!(stack::status(&dir).expect("status after down").is_none());
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broker_refuses_a_second_up_and_stops_through_its_handle() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = temp_state_dir("stack1");
    let opts = options(&dir, 1, 3);
    let t = Instant::now();
    let stack = stack::up(&opts)
        .await
        .unwrap_or_else(|e| panic!("stack up failed:\n{e}"));
    eprintln!("1-broker stack up in {:.1} s", t.elapsed().as_secs_f64());
    let info = stack.info().clone();
    assert_all_listening(&info);
    assert_eq!(info.brokers.len(), 1);
    assert_eq!(info.kafka_version, "4.1.1");

    let topic = stack::topic_config(&info.kafka_bootstrap, &info.topic)
        .await
        .expect("describe the chat topic");
    assert_eq!(
        (
            topic.partitions,
            topic.replication_factor,
            topic.min_insync_replicas
        ),
        (3, 1, 1)
    );
    assert_schema_present(&info.postgres.url).await;

    // A second stack in the same state dir is refused while this one runs.
    match stack::up(&opts).await {
        Err(StackError::AlreadyRunning { running, .. }) => {
            assert!(running.contains("kafka broker 1"))
        }
        Err(other) => panic!("expected AlreadyRunning, got: {other}"),
        Ok(_) => panic!("a second stack started in the same state dir"),
    }

    // Creating a topic that exists is an error the caller can read.
    let again = stack::create_topic(&info.kafka_bootstrap, &info.topic, 3, 1, &[]).await;
    assert!(again.is_err_and(|e| e.to_string().contains(&info.topic)));

    stack.down().await.expect("stack down");
    assert_nothing_left(&info, &dir);
    // Idempotent: nothing recorded any more is fine.
    stack::down(&dir).await.expect("second down");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_options_fail_before_starting_anything() {
    let dir = temp_state_dir("stack-bad");
    let err = match stack::up(&options(&dir, 2, 3)).await {
        Err(e) => e,
        Ok(_) => panic!("2 brokers must be refused"),
    };
    assert!(err.to_string().contains("brokers must be 1 or 3"), "{err}");
    assert!(!dir.exists());
}
