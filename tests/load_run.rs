//! Acceptance tests of `stompede run`: a smoke-sized run on a real local stack, exact
//! integrity figures through a relay that drops and duplicates MESSAGE frames, latency
//! through a relay that delays every frame, and a run against RabbitMQ Web-STOMP.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::{trial, TempDir, TestEnv};
use stompede::load::{run, RunOptions};
use stompede::relay::{Relay, RelayConfig};
use stompede::report::Summary;
use stompede::scenario::{Overrides, Scenario};

fn main() {
    // One at a time: the latency test compares two runs and wants a quiet machine.
    common::run_with(1, 2, Some(1), |env| {
        vec![
            trial(env, "smoke_run_on_the_local_stack", smoke_run),
            trial(
                env,
                "relay_drops_and_duplicates_are_reported_exactly",
                relay_integrity,
            ),
            trial(
                env,
                "relay_delay_raises_p50_by_the_round_trip",
                relay_latency,
            ),
            trial(env, "rabbitmq_web_stomp_zero_loss", rabbitmq),
            trial(env, "heart_beats_keep_users_through_a_long_ramp", long_ramp),
        ]
    })
}

fn options(out: &Path, state_dir: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        state_dir: state_dir.to_path_buf(),
        server_exe: env!("CARGO_BIN_EXE_stompede").into(),
        progress: false,
        sample_interval: Duration::from_secs(1),
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn validate(summary_path: &Path) {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../schema/summary.schema.json"))
            .expect("schema is JSON");
    let instance: serde_json::Value =
        serde_json::from_slice(&std::fs::read(summary_path).expect("read summary.json"))
            .expect("summary is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "summary.json does not match the schema:\n{}",
        errors.join("\n")
    );
}

async fn smoke_run(env: Arc<TestEnv>) {
    let out = TempDir::new("stompede-smoke-report");
    let mut scenario =
        Scenario::from_file(&repo("scenarios/smoke.toml")).expect("smoke.toml loads");
    scenario
        .apply_overrides(&Overrides {
            duration: Some(Duration::from_secs(8)),
            ..Overrides::default()
        })
        .expect("override duration");
    let plan = scenario.plan();
    let outcome = run(scenario, &options(&out.0, &env.state_dir))
        .await
        .expect("the smoke run completes");
    let s = &outcome.summary;
    assert_eq!(s.integrity.lost, 0, "lost messages: {:?}", s.integrity);
    assert_eq!(s.integrity.duplicated, 0);
    assert_eq!(s.integrity.out_of_order, 0);
    // The open model sends at the planned rate (constant arrivals: within 10 %).
    let planned = plan.expected_open_messages(Duration::from_secs(8)) / 8.0;
    let rate = s.throughput.sent_per_s;
    assert!(
        (rate - planned).abs() <= planned * 0.1,
        "sent {rate:.1}/s, planned {planned:.1}/s"
    );

    // Expected deliveries, independently: every row this run wrote, times its room's members.
    let db = stompede::db::connect(&env.db).await.expect("PostgreSQL");
    let marker = format!("~{}:", s.run_id);
    let rows = db
        .query(
            "SELECT room_id, count(*) FROM chat_messages WHERE left(message, length($1)) = $1 GROUP BY room_id",
            &[&marker],
        )
        .await
        .expect("count rows per room");
    let members: std::collections::HashMap<&str, u64> = plan
        .rooms
        .iter()
        .map(|r| (r.id.as_str(), r.members.len() as u64))
        .collect();
    let sent_in_db: u64 = rows.iter().map(|r| r.get::<_, i64>(1) as u64).sum();
    let expected: u64 = rows
        .iter()
        .map(|r| r.get::<_, i64>(1) as u64 * members[r.get::<_, &str>(0)])
        .sum();
    assert_eq!(
        sent_in_db, s.throughput.sent,
        "DB rows for the run differ from messages sent"
    );
    assert_eq!(
        s.integrity.expected, expected,
        "expected deliveries differ from DB rows × members"
    );
    assert_eq!(s.integrity.delivered, expected);
    let audit =
        s.db.as_ref()
            .and_then(|d| d.audit.as_ref())
            .expect("a DB audit");
    assert_eq!(audit.rows_for_run, s.throughput.sent);
    assert_eq!(audit.missing, 0);
    assert_eq!(audit.duplicates, 0);
    assert_eq!(
        s.throughput.receipts,
        Some(s.throughput.sent),
        "every SEND receipted"
    );

    // Lag samples for every server's fan-out group.
    let kafka = s.kafka.as_ref().expect("Kafka lag sampled");
    let info = env.info.as_ref().expect("this binary's stack");
    for server in &info.servers {
        let group = format!("stompede-fanout-{}", server.instance_id);
        let g = kafka
            .groups
            .iter()
            .find(|g| g.group == group)
            .unwrap_or_else(|| panic!("no lag samples for {group}"));
        assert!(
            g.samples.len() >= 5,
            "{group}: only {} lag samples",
            g.samples.len()
        );
    }
    assert!(!s.timeline.is_empty() && s.latency.corrected.count > 0);
    assert!(s.passed, "smoke SLOs failed: {:?}", s.slo);
    let summary_path = outcome.dir.join("summary.json");
    validate(&summary_path);
    assert_eq!(
        &Summary::load(&summary_path).expect("summary loads back"),
        s
    );
    for file in [
        "report.html",
        "latency-percentiles.png",
        "throughput-over-time.png",
        "kafka-lag.png",
        "db-rows.png",
    ] {
        let len = std::fs::metadata(outcome.dir.join(file))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 1000, "{file} missing or empty");
    }
}

/// A small external scenario against `url`, 4 rooms of 5, everyone subscribed.
fn external(url: &str, rate: f64, seconds: u32, extra: &str) -> Scenario {
    let text = format!(
        r#"
name = "relay"
duration = "{seconds}s"
warmup = "1s"
grace = "3s"
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
rate = {rate}
per = "sender"
arrival = "constant"
message_size = {{ fixed = 100 }}
receipts = true
[target]
kind = "external"
urls = ["{url}"]
receipts = true
{extra}
"#
    );
    Scenario::from_str(&text, Path::new("relay.toml"))
        .unwrap_or_else(|e| panic!("test scenario: {e}"))
}

async fn relay_integrity(env: Arc<TestEnv>) {
    let info = env.info.as_ref().expect("this binary's stack");
    let upstream = info.servers[0].ws_url.clone();
    let relay = Relay::start(RelayConfig {
        upstream,
        drop_every: Some(13),
        duplicate_every: Some(7),
        delay: Duration::ZERO,
    })
    .await
    .expect("relay");
    let out = TempDir::new("stompede-relay-report");
    let scenario = external(&relay.url, 4.0, 4, "");
    let outcome = run(scenario, &options(&out.0, &env.state_dir))
        .await
        .expect("run through the relay");
    let dropped = relay.counters.dropped.load(Relaxed);
    let duplicated = relay.counters.duplicated.load(Relaxed);
    relay.stop().await;
    let s = &outcome.summary;
    assert!(
        dropped > 10 && duplicated > 10,
        "relay injected too little: {dropped} dropped, {duplicated} duplicated"
    );
    assert_eq!(s.integrity.lost, dropped, "lost ≠ dropped by the relay");
    assert_eq!(
        s.integrity.duplicated, duplicated,
        "duplicated ≠ duplicated by the relay"
    );
    assert_eq!(
        s.integrity.delivered + s.integrity.lost,
        s.integrity.expected
    );
}

async fn relay_latency(env: Arc<TestEnv>) {
    let info = env.info.as_ref().expect("this binary's stack");
    let upstream = info.servers[0].ws_url.clone();
    let out = TempDir::new("stompede-delay-report");
    // The baseline goes through the same relay without delay, so the relay's own cost
    // (two more loopback hops, frame parsing) is in both figures and cancels out.
    let through = |delay: Duration| {
        let upstream = upstream.clone();
        let out = out.0.clone();
        let state_dir = env.state_dir.clone();
        async move {
            let relay = Relay::start(RelayConfig {
                upstream,
                drop_every: None,
                duplicate_every: None,
                delay,
            })
            .await
            .expect("relay");
            let outcome = run(external(&relay.url, 2.0, 4, ""), &options(&out, &state_dir))
                .await
                .expect("run through the relay");
            relay.stop().await;
            outcome
        }
    };
    let delay = Duration::from_millis(25);
    let direct = through(Duration::ZERO).await;
    let delayed = through(delay).await;
    let p50 = |s: &Summary| s.latency.corrected.p50_us as f64 / 1000.0;
    let rise = p50(&delayed.summary) - p50(&direct.summary);
    let round_trip = 2.0 * delay.as_secs_f64() * 1000.0;
    assert!(
        (rise - round_trip).abs() <= 2.0,
        "p50 rose by {rise:.2} ms (relay without delay {:.2} ms, with {delay:?} each way {:.2} ms); expected {round_trip:.0} ms ± 2 ms",
        p50(&direct.summary),
        p50(&delayed.summary)
    );
    assert_eq!(delayed.summary.integrity.lost, 0);
}

async fn rabbitmq(env: Arc<TestEnv>) {
    let script = repo("scripts/rabbitmq.sh");
    let state = TempDir::new("stompede-rabbitmq");
    let rabbit = |cmd: &'static str| {
        let script = script.clone();
        let state = state.0.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new("bash")
                    .arg(&script)
                    .arg(cmd)
                    .env("STOMPEDE_STATE", &state)
                    .output()
            })
            .await
            .expect("rabbitmq script task")
            .expect("run scripts/rabbitmq.sh")
        }
    };
    let up = rabbit("up").await;
    if !up.status.success() {
        let _ = rabbit("down").await;
        panic!(
            "RabbitMQ did not start:\n{}{}",
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr)
        );
    }
    let out = TempDir::new("stompede-rabbit-report");
    let scenario = external(
        "ws://127.0.0.1:15674/ws",
        4.0,
        4,
        "send = \"/topic/room.{room}\"\nsubscribe = \"/topic/room.{room}\"\n[target.connect]\nlogin = \"guest\"\npasscode = \"guest\"\nhost = \"/\"",
    );
    let outcome = run(scenario, &options(&out.0, &env.state_dir)).await;
    let _ = rabbit("down").await;
    let s = outcome.expect("run against RabbitMQ").summary;
    assert!(
        s.throughput.sent > 50,
        "too few messages: {}",
        s.throughput.sent
    );
    assert_eq!(
        s.integrity.lost, 0,
        "RabbitMQ run lost messages: {:?}",
        s.integrity
    );
    assert_eq!(s.integrity.duplicated, 0);
    assert_eq!(s.integrity.delivered, s.integrity.expected);
}

/// Users that connect early wait for the rest of the ramp; with a short server heart-beat
/// they must keep beating through that wait, or the server drops them.
async fn long_ramp(env: Arc<TestEnv>) {
    let topic = env.topic("ramp", 3).await;
    let mut config = env.config(&topic, stompede::server::Persist::Producer, "ramp");
    config.limits.heartbeat = (Duration::from_millis(300), Duration::from_millis(300));
    let server = env.server(config).await;
    let out = TempDir::new("stompede-ramp-report");
    let mut scenario = external(&server.url, 2.0, 2, "");
    // 20 users at 5/s: a 4 s ramp, more than ten heart-beat periods.
    scenario.users.connect_rate = 5.0;
    scenario.users.heartbeat = Duration::from_millis(300);
    let outcome = run(scenario, &options(&out.0, &env.state_dir))
        .await
        .expect("run with a long ramp");
    let s = &outcome.summary;
    let metrics = server.stop().await;
    assert_eq!(
        metrics.heartbeat_timeouts.load(Relaxed),
        0,
        "the server dropped silent users"
    );
    assert_eq!(s.sessions.disconnects, 0);
    assert!(
        s.phases.ramp_s >= 3.5,
        "ramp took only {} s",
        s.phases.ramp_s
    );
    assert_eq!(s.integrity.lost, 0);
    assert!(s.integrity.expected > 0);
}
