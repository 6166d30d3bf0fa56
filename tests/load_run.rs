//! Acceptance tests of `stompede run`: a smoke-sized run on a real local stack, exact
//! integrity figures through a relay that drops and duplicates MESSAGE frames, latency
//! through a relay that delays every frame, a run against RabbitMQ Web-STOMP, and runs
//! spread over shards (local worker processes, and coordinator and workers started
//! apart).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::{trial, TempDir, TestEnv};
use stompede::fault::relay::{Relay, RelayConfig};
use stompede::load::{run, RunOptions};
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
            trial(
                env,
                "fewer_sessions_than_users_fail_min_connected",
                too_few_sessions,
            ),
            trial(env, "every_sample_is_kept_however_many", every_sample_kept),
            trial(env, "one_shard_and_three_shards_agree", shards_agree),
            trial(
                env,
                "relay_drops_and_duplicates_are_exact_across_three_shards",
                shards_relay_integrity,
            ),
            trial(
                env,
                "coordinator_names_a_worker_killed_mid_run",
                shard_killed,
            ),
            trial(
                env,
                "coordinator_names_a_worker_that_goes_silent",
                shard_stalled,
            ),
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

    // What each side cost, per million deliveries: the harness, every server and every
    // broker, each its CPU seconds over the run's deliveries.
    let r = s.resources.as_ref().expect("resources measured");
    let deliveries = r.deliveries.expect("the deliveries the CPU figures cover");
    assert!(
        deliveries >= s.integrity.delivered && deliveries > 0,
        "{deliveries} < {}",
        s.integrity.delivered
    );
    let per_m = |cpu: Option<f64>, per: Option<f64>, who: &str| {
        let (cpu, per) = (
            cpu.unwrap_or_else(|| panic!("{who}: no CPU seconds")),
            per.unwrap_or_else(|| panic!("{who}: no CPU per million deliveries")),
        );
        assert!(cpu > 0.0 && per > 0.0, "{who}: {cpu} s, {per} per million");
        assert!(
            (per - cpu * 1e6 / deliveries as f64).abs() <= per * 1e-9,
            "{who}: {per} per million is not {cpu} s over {deliveries} deliveries"
        );
    };
    per_m(r.harness_cpu_s, r.harness_cpu_s_per_million, "harness");
    assert_eq!(r.servers.len(), info.servers.len());
    assert_eq!(r.brokers.len(), info.brokers.len());
    for p in r.servers.iter().chain(&r.brokers) {
        per_m(p.cpu_s, p.cpu_s_per_million, &p.instance_id);
    }
    assert_eq!(r.brokers[0].instance_id, "broker 1");
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
    let text = external_text(url, rate, seconds, extra);
    Scenario::from_str(&text, Path::new("relay.toml"))
        .unwrap_or_else(|e| panic!("test scenario: {e}"))
}

/// The text of [`external`]'s scenario.
fn external_text(url: &str, rate: f64, seconds: u32, extra: &str) -> String {
    format!(
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
    )
}

async fn relay_integrity(env: Arc<TestEnv>) {
    let info = env.info.as_ref().expect("this binary's stack");
    let upstream = info.servers[0].ws_url.clone();
    let relay = Relay::start(RelayConfig {
        upstream,
        drop_every: Some(13),
        duplicate_every: Some(7),
        delay: Duration::ZERO,
        message_rate: None,
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
                message_rate: None,
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

/// A server that accepts fewer sessions than the scenario has users: the run was not
/// applied as asked, so it fails (exit 1) on `min_connected`, and each distinct connect
/// error is shown once with its count, not once per user. The run happens where no
/// system font can be found: its charts are still all drawn (the font is built in).
async fn too_few_sessions(env: Arc<TestEnv>) {
    let topic = env.topic("cap", 3).await;
    let mut config = env.config(&topic, stompede::server::Persist::Producer, "cap");
    config.limits.max_connections = 12;
    let server = env.server(config).await;
    let dir = TempDir::new("stompede-cap");
    // 20 users at 200/s against a cap of 12: 8 are turned away.
    let text = external_text(&server.url, 2.0, 2, "");
    let file = dir.0.join("cap.toml");
    std::fs::write(&file, text).expect("write scenario");
    let empty = dir.0.join("empty");
    std::fs::create_dir_all(&empty).expect("empty dir");
    let fonts_conf = empty.join("fonts.conf");
    std::fs::write(
        &fonts_conf,
        "<?xml version=\"1.0\"?>\n<fontconfig></fontconfig>\n",
    )
    .expect("write an empty fontconfig");
    let out = tokio::task::spawn_blocking({
        let dir = dir.0.clone();
        move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stompede"));
            cmd.env("FONTCONFIG_FILE", &fonts_conf)
                .env("FONTCONFIG_PATH", &empty);
            for var in ["HOME", "XDG_DATA_HOME", "XDG_DATA_DIRS", "XDG_CONFIG_HOME"] {
                cmd.env(var, &empty);
            }
            cmd.args(["run", "--out"])
                .arg(dir.join("reports"))
                .arg("--state-dir")
                .arg(dir.join("state"))
                .arg(&file)
                .output()
                .expect("run stompede")
        }
    })
    .await
    .expect("join");
    let metrics = server.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console = format!("{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(1), "{console}");
    let refused = metrics.sessions_rejected.load(Relaxed);
    assert!(refused >= 8, "the server refused {refused}: {console}");
    let report = std::fs::read_dir(dir.0.join("reports"))
        .expect("a report directory")
        .next()
        .expect("one report")
        .expect("entry")
        .path();
    let summary = Summary::load(&report.join("summary.json")).expect("summary loads");
    let v = summary
        .slo
        .iter()
        .find(|v| v.name == "min_connected")
        .expect("a min_connected verdict");
    assert!(!v.passed, "{v:?}");
    assert_eq!(v.limit, 1.0);
    assert!(v.measured <= 12.0 / 20.0, "{v:?}");
    assert_eq!(
        summary.sessions.subscribed,
        Some(summary.sessions.connected)
    );
    assert_eq!(
        summary.sessions.connect_errors,
        20 - summary.sessions.connected
    );
    // Each distinct cause: one count line in the end-of-run table, at most one more
    // line (its first occurrence, as it happened), whatever the count.
    assert!(!summary.warnings.is_empty(), "{console}");
    let counted: u64 = summary.warnings.iter().map(|w| w.count).sum();
    assert_eq!(
        counted, summary.sessions.connect_errors,
        "{:?}",
        summary.warnings
    );
    for w in &summary.warnings {
        let count_lines = console
            .lines()
            .filter(|l| l.starts_with(&format!("warning x{}: {}", w.count, w.cause)))
            .count();
        assert_eq!(count_lines, 1, "{w:?} in\n{console}");
        let mentions = console.lines().filter(|l| l.contains(&w.cause)).count();
        assert!(
            mentions <= 2,
            "{} lines mention {:?}:\n{console}",
            mentions,
            w.cause
        );
    }
    assert!(console.contains("SLO failed: min_connected"), "{console}");
    // Every chart with data was drawn, without a system font.
    assert!(
        !summary
            .notes
            .iter()
            .any(|n| n.contains("could not be drawn")),
        "{:?}",
        summary.notes
    );
    for chart in [
        "latency-percentiles.png",
        "latency-over-time.png",
        "throughput-over-time.png",
    ] {
        assert!(
            summary.files.charts.iter().any(|c| c == chart),
            "{chart} not drawn: {:?}",
            summary.files.charts
        );
    }
    for chart in &summary.files.charts {
        let png = std::fs::read(report.join(chart)).expect("chart file");
        assert!(
            png.len() > 1000 && png.starts_with(b"\x89PNG"),
            "{chart} is not a PNG"
        );
    }
    let log = std::fs::read_to_string(report.join("run.log")).expect("run.log");
    assert_eq!(
        log.lines().filter(|l| l.contains("warning: user")).count() as u64,
        counted,
        "every occurrence is in run.log"
    );
}

/// With a short sampling interval a run takes several times more lag and database
/// samples than a bounded channel drained at the end could hold (1,024 and 4,096), and
/// keeps every one.
async fn every_sample_kept(env: Arc<TestEnv>) {
    let out = TempDir::new("stompede-samples-report");
    let mut scenario =
        Scenario::from_file(&repo("scenarios/smoke.toml")).expect("smoke.toml loads");
    scenario
        .apply_overrides(&Overrides {
            duration: Some(Duration::from_secs(35)),
            ..Overrides::default()
        })
        .expect("override duration");
    let mut opts = options(&out.0, &env.state_dir);
    opts.sample_interval = Duration::from_millis(1);
    let outcome = run(scenario, &opts).await.expect("the run completes");
    let s = &outcome.summary;
    let kafka = s.kafka.as_ref().expect("lag sampled");
    let lag = kafka.sampling.as_ref().expect("lag sampling figures");
    let db = s.db.as_ref().expect("database sampled");
    let dbs = db.sampling.as_ref().expect("db sampling figures");
    eprintln!("lag sampling {lag:?}; db sampling {dbs:?}");
    assert_eq!(lag.thinned, 0);
    assert_eq!(dbs.thinned, 0);
    for g in &kafka.groups {
        assert_eq!(
            g.samples.len() as u64,
            lag.taken,
            "group {}: every lag sample kept",
            g.group
        );
    }
    assert_eq!(
        db.rows_per_s.len() as u64,
        dbs.taken,
        "every DB sample kept"
    );
    assert!(lag.taken > 3 * 1024, "only {} lag samples", lag.taken);
    assert!(dbs.taken > 3 * 4096, "only {} DB samples", dbs.taken);
    // The maximum lag is judged over the whole run: the last sample is near its end.
    let last = kafka.groups[0].samples.last().expect("samples").t_s;
    let end = s.phases.ramp_s + s.phases.warmup_s + s.phases.measured_s;
    assert!(
        last >= end,
        "last lag sample at {last:.1} s, sending ended at {end:.1} s"
    );
}

/// Checks a sharded run's summary: every shard finished, and the merged histogram holds
/// exactly what the shards timed.
fn check_shards(s: &Summary, n: usize) {
    let shards = s
        .shards
        .as_ref()
        .expect("a sharded run has a shards section");
    assert_eq!(shards.len(), n);
    assert!(shards.iter().all(|x| x.lost.is_none()), "{shards:?}");
    let timed: u64 = shards.iter().map(|x| x.timed).sum();
    assert!(timed > 0);
    assert_eq!(
        s.latency.corrected.count, timed,
        "the merged histogram's count is the sum of the shards'"
    );
    assert_eq!(
        shards.iter().map(|x| x.users).sum::<u64>(),
        s.sessions.planned
    );
    assert_eq!(
        shards.iter().map(|x| x.delivered).sum::<u64>(),
        s.throughput.delivered
    );
    assert_eq!(
        shards.iter().map(|x| x.sent).sum::<u64>(),
        s.throughput.sent
    );
    if n > 1 {
        // Local shards on a loopback target each connect from their own address.
        let sources: std::collections::BTreeSet<_> = shards
            .iter()
            .map(|x| x.source.clone().expect("a source"))
            .collect();
        assert_eq!(sources.len(), n);
    }
}

/// The same deterministic scenario (constant arrivals, every user subscribed before the
/// first send) in 1 shard and in 3: the same expected, delivered and lost counts.
async fn shards_agree(env: Arc<TestEnv>) {
    let info = env.info.as_ref().expect("this binary's stack");
    let url = info.servers[0].ws_url.clone();
    let mut counts = Vec::new();
    for n in [1u32, 3] {
        let out = TempDir::new("stompede-shards");
        let outcome = stompede::shard::run_local(
            external(&url, 4.0, 3, ""),
            &options(&out.0, &env.state_dir),
            n,
        )
        .await
        .unwrap_or_else(|e| panic!("{n} shards: {e}"));
        let s = &outcome.summary;
        validate(&outcome.dir.join("summary.json"));
        check_shards(s, n as usize);
        assert!(s.passed, "{n} shards: {:?}", s.slo);
        assert!(s.integrity.expected > 0);
        counts.push((
            s.throughput.sent,
            s.integrity.expected,
            s.integrity.delivered,
            s.integrity.lost,
        ));
    }
    // 20 users, 4 rooms of 5 with 2 senders each sending 4/s for 1 s warm-up + 3 s.
    assert_eq!(counts[0], counts[1], "(sent, expected, delivered, lost)");
    assert_eq!(counts[0].0, 8 * 4 * 4);
    assert_eq!(counts[0].1, counts[0].0 * 5);
}

/// Three shards through a relay that drops every 13th and duplicates every 7th MESSAGE
/// frame: the merged report gives exactly what the relay did.
async fn shards_relay_integrity(env: Arc<TestEnv>) {
    let info = env.info.as_ref().expect("this binary's stack");
    let relay = Relay::start(RelayConfig {
        upstream: info.servers[0].ws_url.clone(),
        drop_every: Some(13),
        duplicate_every: Some(7),
        delay: Duration::ZERO,
        message_rate: None,
    })
    .await
    .expect("relay");
    let out = TempDir::new("stompede-shards-relay");
    let outcome = stompede::shard::run_local(
        external(&relay.url, 4.0, 4, ""),
        &options(&out.0, &env.state_dir),
        3,
    )
    .await
    .expect("a run of 3 shards through the relay");
    let dropped = relay.counters.dropped.load(Relaxed);
    let duplicated = relay.counters.duplicated.load(Relaxed);
    relay.stop().await;
    let s = &outcome.summary;
    check_shards(s, 3);
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

/// `stompede coordinate` and two `stompede worker` processes over loopback; worker 1 is
/// killed once the measured phase has begun: the run fails (exit 1), the console and the
/// report name shard 1, its users count as not connected, and shard 0's figures stand.
async fn shard_killed(env: Arc<TestEnv>) {
    shard_gone(env, false).await
}

/// As [`shard_killed`], but worker 1 is stopped (SIGSTOP), not killed: its connection
/// stays open and says nothing, as when a host hangs. With `--silence 3s` the
/// coordinator takes it for lost within the run and fails the run naming it.
async fn shard_stalled(env: Arc<TestEnv>) {
    shard_gone(env, true).await
}

async fn shard_gone(env: Arc<TestEnv>, stall: bool) {
    use std::io::{BufRead, BufReader};
    let info = env.info.as_ref().expect("this binary's stack");
    let dir = TempDir::new("stompede-shard-killed");
    let file = dir.0.join("killed.toml");
    std::fs::write(&file, external_text(&info.servers[0].ws_url, 4.0, 8, "")).expect("write");
    let exe = env!("CARGO_BIN_EXE_stompede");
    let reports = dir.0.join("reports");
    let handle = tokio::task::spawn_blocking(move || {
        let mut coordinator = std::process::Command::new(exe)
            .args([
                "coordinate",
                "--shards",
                "2",
                "--listen",
                "127.0.0.1:0",
                "--silence",
                "3s",
                "--out",
            ])
            .arg(&reports)
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the coordinator");
        let mut lines = BufReader::new(coordinator.stderr.take().expect("stderr")).lines();
        let mut console = String::new();
        let mut next = |console: &mut String| -> String {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the coordinator ended early:\n{console}"))
                .expect("read stderr");
            console.push_str(&line);
            console.push('\n');
            line
        };
        // "waiting up to 300s for 2 workers on 127.0.0.1:PORT (...)"
        let addr = loop {
            let line = next(&mut console);
            if let Some(rest) = line.split(" workers on ").nth(1) {
                break rest.split_whitespace().next().expect("address").to_string();
            }
        };
        let workers: Vec<std::process::Child> = (0..2)
            .map(|k| {
                std::process::Command::new(exe)
                    .args(["worker", "--coordinator", &addr, "--shard", &k.to_string()])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("start a worker")
            })
            .collect();
        // The status line is printed when the run enters its measured phase.
        while !next(&mut console).contains("measure]") {}
        let mut workers = workers.into_iter();
        let (mut survivor, mut victim) = (workers.next().unwrap(), workers.next().unwrap());
        if stall {
            let stopped = std::process::Command::new("kill")
                .args(["-STOP", &victim.id().to_string()])
                .status()
                .expect("run kill -STOP");
            assert!(stopped.success(), "kill -STOP worker 1");
        } else {
            victim.kill().expect("kill worker 1");
            let _ = victim.wait();
        }
        for line in lines.map_while(Result::ok) {
            console.push_str(&line);
            console.push('\n');
        }
        let status = coordinator.wait().expect("coordinator exit");
        if stall {
            // SIGKILL ends a stopped process too.
            victim.kill().expect("kill worker 1");
            let _ = victim.wait();
        }
        let _ = survivor.wait();
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut coordinator.stdout.take().expect("stdout"), &mut stdout)
            .expect("read stdout");
        (status.code(), format!("{stdout}{console}"))
    });
    let (code, console) = handle.await.expect("join");
    assert_eq!(code, Some(1), "the run must fail:\n{console}");
    assert!(
        console.contains("shard 1"),
        "the console names the shard:\n{console}"
    );
    let report = std::fs::read_dir(dir.0.join("reports"))
        .expect("a report directory")
        .next()
        .expect("one report")
        .expect("entry")
        .path();
    validate(&report.join("summary.json"));
    let s = Summary::load(&report.join("summary.json")).expect("summary loads");
    let shards = s.shards.as_ref().expect("shards section");
    assert!(shards[0].lost.is_none(), "{shards:?}");
    let lost = shards[1].lost.as_deref().expect("shard 1 is named as lost");
    assert!(!lost.is_empty());
    if stall {
        assert!(lost.contains("sent nothing for 3s"), "{lost}");
    }
    assert_eq!(shards[1].connected, 0);
    assert_eq!(s.sessions.connected, shards[0].connected);
    assert_eq!(shards[0].connected, 10);
    let verdict = s
        .slo
        .iter()
        .find(|v| v.name == "shards_finished")
        .expect("the shards verdict");
    assert!(
        !verdict.passed && verdict.measured == 1.0 && verdict.limit == 2.0,
        "{verdict:?}"
    );
    assert!(!s.passed);
    assert!(
        s.notes
            .iter()
            .any(|n| n.starts_with("shard 1 ") && n.contains("lost")),
        "{:?}",
        s.notes
    );
}
