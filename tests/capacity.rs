//! Acceptance tests of the multi-run jobs on a real local stack: a capacity search finds
//! a fan-out cap that a relay imposes, a search whose harness is starved says
//! "harness-bound" instead of naming a capacity, `compare` renders two real runs and
//! refuses a summary of another schema version, and `run` refuses a running stack of
//! another shape.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{trial, TempDir, TestEnv};
use stompede::campaign::capacity::{self, CapacityOptions};
use stompede::fault::relay::{Relay, RelayConfig};
use stompede::load::{run, RunOptions};
use stompede::report::capacity::{step_row, CAPACITY_FILE, CAPACITY_HTML};
use stompede::report::{Capacity, Outcome, Over};
use stompede::scenario::Scenario;

fn main() {
    // One at a time: the capacity search wants the machine's attention for its steps.
    common::run_with(1, 2, Some(1), |env| {
        vec![
            trial(env, "capacity_finds_a_capped_fan_out", capped_fan_out),
            trial(
                env,
                "a_starved_harness_is_reported_as_harness_bound",
                starved_harness,
            ),
            trial(
                env,
                "compare_renders_runs_and_refuses_other_versions",
                compare_runs,
            ),
            trial(
                env,
                "run_refuses_a_running_stack_of_another_shape",
                shape_refused,
            ),
            trial(
                env,
                "a_local_search_keeps_one_stack_for_every_step",
                one_stack,
            ),
        ]
    })
}

fn run_options(out: &Path, state_dir: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        state_dir: state_dir.to_path_buf(),
        server_exe: env!("CARGO_BIN_EXE_stompede").into(),
        progress: false,
        sample_interval: Duration::from_secs(1),
    }
}

/// One room of `members`, 4 speakers sharing `rate` msg/s, against `url`.
fn room_scenario(url: &str, members: u32, rate: f64, extra: &str) -> Scenario {
    let text = format!(
        r#"
name = "capped"
duration = "4s"
warmup = "1s"
grace = "3s"
[users]
count = {members}
connect_rate = 400.0
heartbeat = "0s"
[[rooms]]
name = "hall"
count = 1
members = {members}
senders = 4
[load]
model = "open"
rate = {rate}
per = "room"
arrival = "constant"
message_size = {{ fixed = 100 }}
receipts = true
[slo]
p99_ms = 500.0
[target]
kind = "external"
urls = ["{url}"]
receipts = true
{extra}
"#
    );
    Scenario::from_str(&text, Path::new("capped.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The reference server behind a relay that lets 400 MESSAGE frames a second through:
/// with one room of 20, the knee must be within 10 % of 400 deliveries/s, and the step
/// above it must name what failed. (Small on purpose: the harness, a debug build here,
/// must stay far from harness-bound even at twice the cap on a busy machine.)
async fn capped_fan_out(env: Arc<TestEnv>) {
    const CAP: f64 = 400.0;
    let info = env.info.as_ref().expect("this binary's stack");
    let relay = Relay::start(RelayConfig {
        upstream: info.servers[0].ws_url.clone(),
        message_rate: Some(CAP),
        ..RelayConfig::default()
    })
    .await
    .expect("relay");
    // The stack's own Kafka and PostgreSQL are sampled as an external target's.
    let extra = format!(
        "[target.kafka]\nbootstrap = \"{}\"\ntopic = \"{}\"\ngroup_prefix = \"stompede-fanout-s\"\n[target.db]\nurl = \"{}\"\n",
        info.kafka_bootstrap, info.topic, info.postgres.url
    );
    let scenario = room_scenario(&relay.url, 20, 4.5, &extra);
    let out = TempDir::new("stompede-capacity");
    let opts = CapacityOptions {
        over: Over::Rate,
        // 4.5 msg/s × 20 = 90/s; grows to 360 (90 % of the cap), then 720.
        from: Some(4.5),
        max: None,
        resolution: 0.05,
        step: Duration::from_secs(4),
        warmup: Some(Duration::from_secs(1)),
        confirm: 0,
        out: out.0.clone(),
        run: run_options(&out.0, &env.state_dir),
    };
    let started = Instant::now();
    let mut on_step = |s: &stompede::report::CapacityStep| eprint!("{}", step_row(Over::Rate, s));
    let outcome = capacity::search(scenario, &opts, &mut on_step)
        .await
        .expect("the search runs");
    let seen = relay.counters.messages_seen.load(Relaxed);
    let relay_url = relay.url.clone();
    relay.stop().await;
    let c = &outcome.report;
    eprintln!(
        "{} ({} steps in {:.0} s)",
        c.answer,
        c.steps.len(),
        started.elapsed().as_secs_f64()
    );
    for s in &c.steps {
        let h = s.summary.harness.as_ref();
        eprintln!(
            "step {} {}: send lag p99 {:?} us, loop lag p99 {:?} us, notes {:?}",
            s.index,
            s.value,
            h.and_then(|h| h.send_lag_p99_us),
            h.and_then(|h| h.loop_lag_p99_us),
            s.summary.notes
        );
    }
    assert!(seen > 0, "nothing went through the relay");
    assert_eq!(c.outcome, Outcome::Capacity, "{}", c.answer);
    let knee = c.knee.as_ref().expect("a knee");
    let at = knee.offered.deliveries_per_s;
    assert!(
        (at - CAP).abs() <= 0.1 * CAP,
        "knee at {at} deliveries/s, cap {CAP}: {}",
        c.answer
    );
    let fail = c
        .first_failure
        .as_ref()
        .expect("a failing step above the knee");
    let step = c.failure_step().expect("its step");
    assert!(fail.offered.deliveries_per_s > at);
    assert_eq!(
        step.verdict.first_failed.as_deref(),
        Some(fail.criterion.as_str())
    );
    assert!(
        fail.failed.contains(&fail.criterion) && fail.criterion != "harness",
        "{fail:?}"
    );
    assert!(
        !fail.detail.is_empty() && c.answer.contains(&fail.detail),
        "the answer names the failure: {}",
        c.answer
    );
    // Every step ran against the one target, each with its own report.
    for s in &c.steps {
        assert_eq!(s.summary.target.urls, vec![relay_url.clone()]);
        assert!(
            outcome.dir.join(&s.dir).join("summary.json").is_file(),
            "{}",
            s.dir
        );
    }
    // The report: the model loads back, the page and the charts are there.
    let loaded = Capacity::load(&outcome.dir.join(CAPACITY_FILE)).expect("capacity.json loads");
    assert_eq!(
        (
            loaded.outcome,
            &loaded.answer,
            loaded.steps.len(),
            loaded.knee.map(|k| k.step)
        ),
        (c.outcome, &c.answer, c.steps.len(), Some(knee.step))
    );
    let html = std::fs::read_to_string(outcome.dir.join(CAPACITY_HTML)).expect("capacity.html");
    assert!(html.contains("The knee") && html.contains(&fail.criterion));
    for chart in [
        "capacity-latency.png",
        "capacity-delivered.png",
        "capacity-lag.png",
        "capacity-db.png",
    ] {
        assert!(file_len(&outcome.dir.join(chart)) > 1000, "{chart} missing");
        assert!(html.contains(chart), "{chart} not in the page");
    }
}

/// A capacity search whose harness shares its only runtime thread with a task that
/// blocks it for 100 ms at a time: the harness cannot keep its schedule, so the first
/// step is harness-bound and the search claims no capacity.
async fn starved_harness(env: Arc<TestEnv>) {
    let info = env.info.as_ref().expect("this binary's stack");
    let scenario = room_scenario(&info.servers[0].ws_url, 10, 5.0, "");
    let out = TempDir::new("stompede-starved");
    let opts = CapacityOptions {
        over: Over::Rate,
        from: None,
        max: None,
        resolution: 0.05,
        step: Duration::from_secs(3),
        warmup: Some(Duration::from_secs(1)),
        confirm: 0,
        out: out.0.clone(),
        run: run_options(&out.0, &env.state_dir),
    };
    let report = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a one-thread runtime");
        rt.block_on(async move {
            let stop = tokio_util::sync::CancellationToken::new();
            let hog = tokio::spawn({
                let stop = stop.clone();
                async move {
                    while !stop.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(100));
                        tokio::task::yield_now().await;
                    }
                }
            });
            let mut on_step = |_: &stompede::report::CapacityStep| {};
            let outcome = capacity::search(scenario, &opts, &mut on_step).await;
            stop.cancel();
            let _ = hog.await;
            outcome.expect("the search runs").report
        })
    })
    .await
    .expect("the starved search");
    eprintln!("{}", report.answer);
    assert_eq!(report.outcome, Outcome::HarnessBound, "{}", report.answer);
    assert_eq!(
        report.steps.len(),
        1,
        "the search stops at the harness-bound step"
    );
    let step = &report.steps[0];
    assert!(step.verdict.harness_bound);
    let h = step.summary.harness.as_ref().expect("harness figures");
    assert!(h.bound && h.loop_lag_p99_us.unwrap_or(0) > 50_000, "{h:?}");
    assert!(report.knee.is_none());
    assert!(
        report.answer.starts_with("harness-bound at ") && !report.answer.contains("sustains"),
        "{}",
        report.answer
    );
}

fn stompede(args: &[&std::ffi::OsStr]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_stompede"))
        .args(args)
        .output()
        .expect("run stompede")
}

fn console(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Two short real runs compared through the CLI; then one of them as a version-1
/// summary (read, with a note) and as an unknown version (refused, naming it).
async fn compare_runs(env: Arc<TestEnv>) {
    let info = env.info.as_ref().expect("this binary's stack");
    let dir = TempDir::new("stompede-compare");
    let mut summaries = Vec::new();
    for rate in [4.0, 8.0] {
        let mut s = room_scenario(&info.servers[0].ws_url, 10, rate, "");
        s.duration = Duration::from_secs(2);
        let outcome = run(
            s,
            &run_options(&dir.0.join(format!("r{rate}")), &env.state_dir),
        )
        .await
        .expect("a short run");
        summaries.push(outcome.dir.join("summary.json"));
    }
    let out = dir.0.join("out");
    let cmd = |inputs: &[&PathBuf], out: &Path| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["compare".as_ref()];
        args.extend(inputs.iter().map(|p| p.as_os_str()));
        args.extend(["--out".as_ref(), out.as_os_str()]);
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
                stompede(&refs)
            })
            .await
            .expect("join")
        }
    };
    // A summary file and a report directory.
    let report_dir = summaries[1].parent().unwrap().to_path_buf();
    let done = cmd(&[&summaries[0], &report_dir], &out).await;
    let text = console(&done);
    assert_eq!(done.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("A ") && l.contains("capped")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("B ") && l.contains("capped")),
        "{text}"
    );
    let written = std::fs::read_dir(&out)
        .expect("compare output")
        .next()
        .unwrap()
        .unwrap()
        .path();
    let html = std::fs::read_to_string(written.join("compare.html")).expect("compare.html");
    assert!(
        html.contains("data:image/png;base64,"),
        "the chart is inlined"
    );
    assert!(file_len(&written.join("compare-latency.png")) > 1000);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(written.join("comparison.json")).unwrap()).unwrap();
    assert_eq!(json["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["entries"][1]["summary"]["scenario"]["name"], "capped");

    // Version 1: what version 2 added is dropped, and the file is read with a note.
    let mut v1: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summaries[0]).unwrap()).unwrap();
    v1["schema_version"] = 1.into();
    for key in ["harness", "warnings"] {
        v1.as_object_mut().unwrap().remove(key);
    }
    v1["sessions"].as_object_mut().unwrap().remove("subscribed");
    let v1_path = dir.0.join("v1.json");
    std::fs::write(&v1_path, v1.to_string()).unwrap();
    let done = cmd(&[&v1_path, &summaries[1]], &dir.0.join("out-v1")).await;
    let text = console(&done);
    assert_eq!(done.status.code(), Some(0), "{text}");
    assert!(
        text.contains("read from summary schema version 1"),
        "{text}"
    );

    // Version 3 is refused, naming the version and the file; nothing is written.
    v1["schema_version"] = 3.into();
    let v3_path = dir.0.join("v3.json");
    std::fs::write(&v3_path, v1.to_string()).unwrap();
    let done = cmd(&[&summaries[0], &v3_path], &dir.0.join("out-v3")).await;
    let text = console(&done);
    assert_eq!(done.status.code(), Some(2), "{text}");
    assert!(
        text.contains("schema_version 3") && text.contains("v3.json"),
        "{text}"
    );
    assert!(
        !dir.0.join("out-v3").exists(),
        "nothing is written for a refused input"
    );
}

/// The binary's stack is 1 broker, 3 partitions, 2 servers, producer: asking `run` for 6
/// partitions against it is refused with the way to reshape, and nothing runs.
async fn shape_refused(env: Arc<TestEnv>) {
    let dir = TempDir::new("stompede-shape");
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let reports = dir.0.join("reports");
    let args: Vec<std::ffi::OsString> = vec![
        "run".into(),
        smoke.into(),
        "--partitions".into(),
        "6".into(),
        "--state-dir".into(),
        env.state_dir.clone().into(),
        "--out".into(),
        reports.clone().into(),
    ];
    let done = tokio::task::spawn_blocking(move || {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        stompede(&refs)
    })
    .await
    .expect("join");
    let text = console(&done);
    assert_eq!(done.status.code(), Some(2), "{text}");
    assert!(
        text.contains("1 broker, 3 partitions, 2 servers, persist producer")
            && text.contains("1 broker, 6 partitions, 2 servers, persist producer")
            && text.contains("stompede stack up")
            && text.contains("--partitions 6")
            && text.contains("--partitions 3"),
        "{text}"
    );
    assert!(!reports.exists(), "a refused run writes no report");
}

/// A local-target search with no stack running brings one up (1 broker, 1 partition, 1
/// server: its own shape, in its own state directory), runs every step against it, and
/// takes it down at the end.
async fn one_stack(_env: Arc<TestEnv>) {
    let dir = TempDir::new("stompede-one-stack");
    let text = r#"
name = "local"
duration = "2s"
warmup = "1s"
grace = "2s"
[users]
count = 6
connect_rate = 100.0
heartbeat = "0s"
[[rooms]]
name = "r"
count = 1
members = 6
senders = 2
[load]
model = "open"
rate = 2.0
per = "room"
arrival = "constant"
message_size = { fixed = 100 }
receipts = true
[slo]
p99_ms = 2000.0
[target]
kind = "local"
brokers = 1
partitions = 1
servers = 1
persist = "producer"
"#;
    let scenario = Scenario::from_str(text, Path::new("local.toml")).expect("scenario");
    let state = dir.0.join("state");
    let opts = CapacityOptions {
        over: Over::Rate,
        from: Some(2.0),
        max: Some(4.0),
        resolution: 0.05,
        step: Duration::from_secs(2),
        warmup: None,
        confirm: 0,
        out: dir.0.join("reports"),
        run: run_options(&dir.0.join("reports"), &state),
    };
    let mut on_step = |_: &stompede::report::CapacityStep| {};
    let outcome = capacity::search(scenario, &opts, &mut on_step)
        .await
        .expect("the search runs");
    let c = &outcome.report;
    assert_eq!(c.outcome, Outcome::AtLeastMax, "{}", c.answer);
    assert_eq!(c.steps.len(), 2, "{}", c.answer);
    assert!(c.answer.starts_with("sustains at least "), "{}", c.answer);
    let first = &c.steps[0].summary.target;
    let stack = first.stack.as_ref().expect("a local stack");
    assert_eq!((stack.brokers, stack.partitions, stack.servers), (1, 1, 1));
    assert_eq!(
        c.steps[1].summary.target.urls, first.urls,
        "the second step ran against the same servers"
    );
    assert_eq!(
        stompede::stack::status(&state)
            .expect("state dir readable")
            .map(|i| i.kafka_bootstrap),
        None,
        "the stack the search started is down"
    );
}
