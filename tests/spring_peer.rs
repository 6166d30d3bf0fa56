//! The Spring Boot peer (`peers/spring-chat`, built with Maven from Maven Central) on the
//! real stack:
//! - two Spring instances, a subscriber on each, 200 messages sent through one: every
//!   subscriber gets all 200, once each and in order, and PostgreSQL holds 200 rows;
//! - the same instances in one shared fan-out group: the run loses deliveries, and the
//!   loss equals exactly what the partition assignment predicts, per recipient;
//! - a sweep over `server_impl=stompede,spring` runs the same scenario against both,
//!   each read back from the servers' own `/metrics`, side by side in one report.
//!
//! The two stacks run one after the other (a lock), not side by side on a 2-core machine.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TempDir;
use stompede::campaign::sweep::{self, parse_set, SweepOptions};
use stompede::client::StompClient;
use stompede::load::RunOptions;
use stompede::report::sweep::{Sweep, SWEEP_FILE, SWEEP_HTML};
use stompede::report::{ServerImpl, Summary};
use stompede::scenario::Scenario;
use stompede::stack::{self, Reshaped, StackOptions};

static ONE_STACK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// 20 users in 4 rooms of 5 (two senders each) at 5 msg/s per sender: 1 s warm-up,
/// 3 s measured, against `server_impl` with 2 instances on 1 broker and 3 partitions.
fn scenario(server_impl: &str, shared_group: bool) -> Scenario {
    let text = format!(
        r#"
name = "spring-test"
duration = "3s"
warmup = "1s"
grace = "2s"
[users]
count = 20
connect_rate = 200.0
heartbeat = "0s"
[[rooms]]
name = "r"
count = 4
members = 5
senders = 2
[load]
model = "open"
rate = 5.0
per = "sender"
arrival = "constant"
message_size = {{ fixed = 100 }}
[slo]
max_loss = 0.0
[target]
kind = "local"
brokers = 1
partitions = 3
servers = 2
persist = "producer"
server_impl = "{server_impl}"
shared_fanout_group = {shared_group}
"#
    );
    Scenario::from_str(&text, Path::new("spring-test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn run_options(state: &Path, out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        state_dir: state.to_path_buf(),
        server_exe: env!("CARGO_BIN_EXE_stompede").into(),
        progress: false,
        sample_interval: Duration::from_secs(1),
    }
}

/// The `message` of a MESSAGE frame's chat JSON.
fn text_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("a MESSAGE body that is not chat JSON ({e}): {body:?}"));
    v["message"].as_str().expect("a message field").to_string()
}

async fn subscribe(client: &mut StompClient, room: &str) {
    client
        .subscribe("sub-0", &format!("/topic/room/{room}"))
        .await
        .expect("SUBSCRIBE");
}

/// The texts a subscriber receives until `until` arrives (30 s at most per frame).
async fn read_until(client: &mut StompClient, until: &str) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        let frame = common::next(client).await;
        assert_eq!(
            frame.command,
            stompede::stomp::Command::Message,
            "expected MESSAGE, got {frame:?}"
        );
        let text = text_of(&frame.body);
        if text == until {
            return texts;
        }
        texts.push(text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_spring_instances_deliver_every_message_and_a_shared_group_loses_what_it_predicts() {
    let _one = ONE_STACK_AT_A_TIME.lock().await;
    let dir = TempDir::new("stompede-spring");
    let state = dir.0.join("state");
    let mut stack = stack::up(&StackOptions {
        brokers: 1,
        partitions: 3,
        servers: 2,
        server_impl: ServerImpl::Spring,
        state_dir: state.clone(),
        server_exe: env!("CARGO_BIN_EXE_stompede").into(),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("stack up with two Spring instances: {e}"));
    let info = stack.info().clone();
    assert_eq!(info.server_impl, ServerImpl::Spring);
    assert_eq!(info.servers.len(), 2);
    for s in &info.servers {
        let page = stack::metrics_page::fetch(&s.metrics_url, Duration::from_secs(5))
            .await
            .expect("the Spring instance's /metrics");
        let labels = stack::metrics_page::samples(&page, "stompede_server_info");
        assert_eq!(
            labels
                .first()
                .and_then(|l| stack::metrics_page::label(l, "impl")),
            Some("spring"),
            "{page}"
        );
    }

    // A subscriber on each instance; every message is sent through the first.
    let room = common::room("spring");
    let dest = format!("/app/chat/{room}");
    let (s1, s2) = (&info.servers[0].ws_url, &info.servers[1].ws_url);
    let mut subs = [common::client(s1).await, common::client(s2).await];
    for sub in subs.iter_mut() {
        subscribe(sub, &room).await;
    }
    let mut sender = common::client(s1).await;
    // The simple broker confirms no SUBSCRIBE: probe until both subscribers see one.
    let mut seen = [false, false];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut k = 0;
    while seen != [true, true] {
        assert!(
            Instant::now() < deadline,
            "no probe reached both subscribers within 60 s"
        );
        sender
            .send(
                &dest,
                common::chat(&room, "probe", &format!("probe-{k}")),
                None,
            )
            .await
            .expect("SEND probe");
        k += 1;
        for (i, sub) in subs.iter_mut().enumerate() {
            if let Ok(Some(f)) = sub.recv_timeout(Duration::from_millis(300)).await {
                seen[i] |= text_of(&f.body).starts_with("probe-");
            }
        }
    }
    for i in 0..200 {
        sender
            .send(
                &dest,
                common::chat(&room, "u1", &format!("msg-{i:03}")),
                None,
            )
            .await
            .expect("SEND");
    }
    sender
        .send(&dest, common::chat(&room, "u1", "end"), None)
        .await
        .expect("SEND end");
    let want: Vec<String> = (0..200).map(|i| format!("msg-{i:03}")).collect();
    for (i, sub) in subs.iter_mut().enumerate() {
        let got: Vec<String> = read_until(sub, "end")
            .await
            .into_iter()
            .filter(|t| !t.starts_with("probe-"))
            .collect();
        assert_eq!(
            got,
            want,
            "the subscriber on s{} must get the 200 messages once each, in order",
            i + 1
        );
    }
    let db = stompede::db::connect(&info.postgres.url)
        .await
        .expect("connect to PostgreSQL");
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let row = db
            .query_one(
                "SELECT count(*), count(DISTINCT message) FROM chat_message WHERE room_id = $1 AND message LIKE 'msg-%'",
                &[&room],
            )
            .await
            .expect("count the Spring peer's rows");
        let rows: (i64, i64) = (row.get(0), row.get(1));
        if rows.0 >= 200 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows, (200, 200), "rows (all, distinct) in chat_message");

    // The same two instances in one shared group.
    let reshaped = stack
        .reshape(&StackOptions {
            brokers: 1,
            partitions: 3,
            servers: 2,
            server_impl: ServerImpl::Spring,
            shared_fanout_group: true,
            server_exe: env!("CARGO_BIN_EXE_stompede").into(),
            ..StackOptions::default()
        })
        .await
        .unwrap_or_else(|e| panic!("reshape to a shared fan-out group: {e}"));
    assert_eq!(
        reshaped,
        Reshaped::Servers {
            topic_recreated: true
        },
        "a server-only change starts from an empty topic too"
    );
    let out = dir.0.join("reports");
    let outcome = stompede::load::run(scenario("spring", true), &run_options(&state, &out))
        .await
        .unwrap_or_else(|e| panic!("the shared-group run: {e}"));
    let s: Summary = outcome.summary;
    let st = s.target.stack.as_ref().expect("a local stack");
    assert_eq!(
        (st.server_impl, st.shared_fanout_group),
        (ServerImpl::Spring, true)
    );
    let f = s
        .integrity
        .shared_group
        .as_ref()
        .expect("the shared group's figures in summary.json");
    let mut held: Vec<u32> = f.assignment.values().flatten().copied().collect();
    held.sort_unstable();
    assert_eq!(
        held,
        vec![0, 1, 2],
        "each partition held by one instance: {f:?}"
    );
    assert!(
        s.integrity.lost > 0,
        "a shared group must lose deliveries: {f:?}"
    );
    assert_eq!(
        (f.unreachable, f.unreachable_lost, f.other_lost),
        (s.integrity.lost, s.integrity.lost, 0),
        "the loss must be exactly the deliveries the assignment predicts: {f:?}"
    );
    assert!(f.recipients > 0);
    assert_eq!(
        f.unreachable_by_instance.values().sum::<u64>(),
        f.unreachable,
        "{f:?}"
    );
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("is shared by the 2 server instances")),
        "{:?}",
        s.notes
    );
    let audit =
        s.db.as_ref()
            .and_then(|d| d.audit.as_ref())
            .expect("a DB audit");
    assert_eq!(
        (audit.missing, audit.duplicates),
        (0, 0),
        "every sent message is in chat_message"
    );
    // summary.json, with the new figures, still follows its schema.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/summary.schema.json"
        ))
        .expect("the schema"),
    )
    .expect("schema JSON");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(outcome.dir.join("summary.json")).expect("summary.json"),
    )
    .expect("summary JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "summary.json against its schema: {errors:?}"
    );
    stack.down().await.expect("stack down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_puts_stompede_and_spring_side_by_side() {
    let _one = ONE_STACK_AT_A_TIME.lock().await;
    let dir = TempDir::new("stompede-spring-sweep");
    let out = dir.0.join("reports");
    let opts = SweepOptions {
        axes: vec![parse_set("server_impl=stompede,spring").expect("valid --set")],
        repeat: 1,
        seed: None,
        capacity: None,
        out: out.clone(),
        run: run_options(&dir.0.join("state"), &out),
    };
    let outcome = sweep::sweep(scenario("stompede", false), &opts, &mut |_, _| {})
        .await
        .unwrap_or_else(|e| panic!("sweep: {e}"));
    assert!(outcome.down_error.is_none(), "{:?}", outcome.down_error);
    let sweep: Sweep = serde_json::from_str(
        &std::fs::read_to_string(outcome.dir.join(SWEEP_FILE)).expect("sweep.json"),
    )
    .expect("sweep.json parses");
    assert_eq!(sweep.cells.len(), 2, "{:?}", sweep.stopped);
    for (cell, want) in sweep
        .cells
        .iter()
        .zip([ServerImpl::Stompede, ServerImpl::Spring])
    {
        assert_eq!(cell.requested.server_impl, want);
        let run = cell.runs.first().expect("one run per cell");
        assert!(run.error.is_none(), "{}: {:?}", cell.label, run.error);
        let shape = run.observed.shape().expect("servers that agree");
        assert_eq!(shape.server_impl, want, "read back from /metrics");
        let s = run.summary.as_ref().expect("a summary");
        assert_eq!(s.target.stack.as_ref().map(|st| st.server_impl), Some(want));
        assert!(s.integrity.expected > 0, "{}", cell.label);
        assert_eq!(s.integrity.lost, 0, "{}", cell.label);
        let audit =
            s.db.as_ref()
                .and_then(|d| d.audit.as_ref())
                .expect("a DB audit");
        assert_eq!(audit.missing, 0, "{}", cell.label);
    }
    assert!(
        sweep.cells[1].label.ends_with("spring"),
        "{}",
        sweep.cells[1].label
    );
    let html = std::fs::read_to_string(outcome.dir.join(SWEEP_HTML)).expect("sweep.html");
    assert!(
        html.contains("1b/3p/2s producer spring"),
        "the Spring cell in sweep.html"
    );
}
