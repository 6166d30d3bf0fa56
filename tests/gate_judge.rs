//! The gate's judgement on fixed inputs (no stack): verdicts from per-run figures,
//! tolerances as typed, the scenario hash, the setup checks, and the command line's
//! refusals (usage, bad baseline, `--strict`) with their exit codes.

use std::path::Path;
use std::process::Command;

use stompede::campaign::gate::{self, decide, judge, precheck, shape_flags};
use stompede::campaign::{scenario_hash, this_machine};
use stompede::report::gate::{Better, Comparison, Metric, Tolerances, Verdict};
use stompede::report::gate_baseline::Baseline;
use stompede::report::{Bound, SloVerdict, Summary};
use stompede::scenario::{Overrides, Scenario};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn smoke() -> Scenario {
    Scenario::from_file(&repo("scenarios/smoke.toml")).expect("smoke.toml loads")
}

/// A summary whose gated figures are scaled: latencies by `latency`, rates by `rate`.
fn run(i: usize, latency: f64, rate: f64) -> Summary {
    let mut s = Summary::sample();
    s.run_id = format!("run{i}");
    // The sample run lost a few messages; these runs lose none.
    s.integrity.lost = 0;
    s.integrity.duplicated = 0;
    // On the smoke scenario's stack, judged with the verdicts every run carries.
    let stack = s.target.stack.as_mut().expect("a local run");
    (
        stack.brokers,
        stack.partitions,
        stack.replication_factor,
        stack.servers,
    ) = (1, 3, 1, 2);
    stack.persist = stompede::server::Persist::Producer;
    for (name, bound, limit, measured) in [
        ("min_connected", Bound::AtLeast, 1.0, 1.0),
        ("max_unsent", Bound::AtMost, 0.0, 0.0),
        ("harness_lag_ms", Bound::AtMost, 50.0, 2.5),
    ] {
        if !s.slo.iter().any(|v| v.name == name) {
            s.slo
                .push(SloVerdict::new(name, bound, limit, measured, "-"));
        }
    }
    s.passed = s.slo.iter().all(|v| v.passed);
    // A little spread between runs, the same on both sides.
    let wobble = 1.0 + (i as f64 - 2.0) * 0.01;
    let c = &mut s.latency.corrected;
    for us in [&mut c.p50_us, &mut c.p99_us, &mut c.p999_us] {
        *us = (*us as f64 * latency * wobble) as u64;
    }
    if let Some(r) = s.latency.receipt.as_mut() {
        r.p99_us = (r.p99_us as f64 * latency * wobble) as u64;
    }
    s.throughput.delivered_per_s *= rate * wobble;
    if let Some(db) = s.db.as_mut() {
        db.mean_rows_per_s *= rate * wobble;
    }
    s
}

fn side(latency: f64, rate: f64) -> Vec<Summary> {
    (0..5).map(|i| run(i, latency, rate)).collect()
}

fn baseline() -> Baseline {
    gate::baseline_from(&smoke(), &side(1.0, 1.0))
}

fn verdict(r: &stompede::report::gate::GateReport, m: Metric) -> Verdict {
    r.metrics.iter().find(|c| c.metric == m).unwrap().verdict
}

#[test]
fn the_same_figures_are_within_noise_and_pass() {
    let r = judge(
        &baseline(),
        None,
        &side(1.0, 1.0),
        &Tolerances::default(),
        Vec::new(),
    );
    for m in &r.metrics {
        assert_eq!(m.verdict, Verdict::WithinNoise, "{m:?}");
        let c = m.comparison.as_ref().unwrap();
        assert_eq!(c.ratio, 1.0);
        assert_eq!(c.p_value, 1.0);
    }
    assert!(r.integrity.passed && r.passed, "{:?}", r.failures());
    // The always-on verdicts of every summary are SLO checks of the gate.
    for name in ["min_connected", "max_unsent", "harness_lag_ms"] {
        assert!(r.slos.iter().any(|s| s.name == name), "{name} missing");
    }
}

#[test]
fn slower_latency_regresses_and_fails() {
    let r = judge(
        &baseline(),
        None,
        &side(1.5, 1.0),
        &Tolerances::default(),
        Vec::new(),
    );
    for m in [Metric::P50, Metric::P99, Metric::P999, Metric::ReceiptP99] {
        assert_eq!(verdict(&r, m), Verdict::Regressed, "{m:?}");
        let c = r.metrics.iter().find(|c| c.metric == m).unwrap();
        let c = c.comparison.as_ref().unwrap();
        assert!((c.p_value - 2.0 / 252.0).abs() < 1e-12);
        assert!(c.low > 1.4 && c.high < 1.6, "{c:?}");
    }
    assert_eq!(verdict(&r, Metric::Throughput), Verdict::WithinNoise);
    assert!(!r.passed);
    assert_eq!(r.failures().len(), 4, "{:?}", r.failures());
}

#[test]
fn a_change_inside_the_tolerance_is_noise_even_when_significant() {
    // 5 % slower, every run: significant (p = 0.008) but inside p50's 10 %.
    let r = judge(
        &baseline(),
        None,
        &side(1.05, 1.0),
        &Tolerances::default(),
        Vec::new(),
    );
    let c = r.metrics.iter().find(|c| c.metric == Metric::P50).unwrap();
    assert!(c.comparison.as_ref().unwrap().p_value < 0.05);
    assert_eq!(c.verdict, Verdict::WithinNoise);
    assert!(r.passed);
}

#[test]
fn faster_and_busier_is_improved_and_passes() {
    let r = judge(
        &baseline(),
        None,
        &side(0.5, 1.5),
        &Tolerances::default(),
        Vec::new(),
    );
    assert_eq!(verdict(&r, Metric::P50), Verdict::Improved);
    assert_eq!(verdict(&r, Metric::Throughput), Verdict::Improved);
    assert!(r.passed, "{:?}", r.failures());
    // Throughput falling by a third regresses.
    let r = judge(
        &baseline(),
        None,
        &side(1.0, 0.66),
        &Tolerances::default(),
        Vec::new(),
    );
    assert_eq!(verdict(&r, Metric::Throughput), Verdict::Regressed);
    assert_eq!(verdict(&r, Metric::DbRows), Verdict::Regressed);
}

#[test]
fn decide_needs_both_significance_and_size() {
    let c = |low, high, p| Comparison {
        baseline_median: 1.0,
        current_median: (low + high) / 2.0,
        ratio: (low + high) / 2.0,
        low,
        high,
        p_value: p,
    };
    let tol = 0.10;
    assert_eq!(
        decide(Better::Lower, tol, &c(1.2, 1.4, 0.008), 0.05),
        Verdict::Regressed
    );
    // Not significant: noise however large.
    assert_eq!(
        decide(Better::Lower, tol, &c(1.2, 1.4, 0.056), 0.05),
        Verdict::WithinNoise
    );
    // Interval touching the tolerance: noise.
    assert_eq!(
        decide(Better::Lower, tol, &c(1.05, 1.4, 0.008), 0.05),
        Verdict::WithinNoise
    );
    assert_eq!(
        decide(Better::Lower, tol, &c(0.5, 0.8, 0.008), 0.05),
        Verdict::Improved
    );
    assert_eq!(
        decide(Better::Higher, tol, &c(0.5, 0.8, 0.008), 0.05),
        Verdict::Regressed
    );
    assert_eq!(
        decide(Better::Higher, tol, &c(1.2, 1.4, 0.008), 0.05),
        Verdict::Improved
    );
}

#[test]
fn any_loss_or_duplicate_fails_integrity() {
    let mut current = side(1.0, 1.0);
    current[3].integrity.lost = 1;
    let r = judge(
        &baseline(),
        None,
        &current,
        &Tolerances::default(),
        Vec::new(),
    );
    assert!(!r.integrity.passed && !r.passed);
    assert_eq!((r.integrity.lost, r.integrity.failed_runs), (1, 1));
    let mut current = side(1.0, 1.0);
    current[0].integrity.duplicated = 2;
    let r = judge(
        &baseline(),
        None,
        &current,
        &Tolerances::default(),
        Vec::new(),
    );
    assert!(!r.passed);
    assert!(
        r.failures()[0].contains("0 lost and 2 duplicated"),
        "{:?}",
        r.failures()
    );
}

#[test]
fn an_slo_failed_in_one_run_fails_the_gate() {
    let mut current = side(1.0, 1.0);
    current[2].slo.push(SloVerdict::new(
        "harness_lag_ms_extra",
        Bound::AtMost,
        50.0,
        80.0,
        "ms",
    ));
    let v = current[4]
        .slo
        .iter_mut()
        .find(|v| v.name == "min_connected")
        .unwrap();
    v.measured = 0.5;
    v.passed = false;
    let r = judge(
        &baseline(),
        None,
        &current,
        &Tolerances::default(),
        Vec::new(),
    );
    let mc = r.slos.iter().find(|s| s.name == "min_connected").unwrap();
    assert!(!mc.passed);
    assert_eq!((mc.failed_runs, mc.runs, mc.worst), (1, 5, 0.5));
    assert!(!r.passed);
}

#[test]
fn a_sampler_missing_from_a_current_run_fails_that_metric() {
    let mut current = side(1.0, 1.0);
    current[1].kafka = None;
    let r = judge(
        &baseline(),
        None,
        &current,
        &Tolerances::default(),
        Vec::new(),
    );
    assert_eq!(verdict(&r, Metric::MaxLag), Verdict::Missing);
    assert!(!r.passed);
    // Not in the baseline at all: nothing to compare, nothing failed.
    let mut base_runs = side(1.0, 1.0);
    for s in &mut base_runs {
        s.latency.receipt = None;
    }
    let b = gate::baseline_from(&smoke(), &base_runs);
    let r = judge(
        &b,
        None,
        &side(1.0, 1.0),
        &Tolerances::default(),
        Vec::new(),
    );
    assert_eq!(verdict(&r, Metric::ReceiptP99), Verdict::NotMeasured);
    assert!(r.passed);
}

#[test]
fn tolerances_parse_over_the_defaults() {
    let t = Tolerances::parse("p50=20%, throughput=2.5%").unwrap();
    assert_eq!(t.get(Metric::P50), 0.20);
    assert_eq!(t.get(Metric::Throughput), 0.025);
    assert_eq!(t.get(Metric::P99), Metric::P99.default_tolerance());
    for (text, says) in [
        ("p42=10%", "unknown metric `p42`; metrics: p50, p99, p999"),
        (
            "p50=10",
            "write the tolerance as a percentage, e.g. p50=10%",
        ),
        ("p50", "expected METRIC=PERCENT"),
        ("p50=ten%", "`ten` is not a number"),
        ("p50=0%", "more than 0%"),
        ("throughput=100%", "must be below 100%"),
    ] {
        let e = Tolerances::parse(text).unwrap_err();
        assert!(e.contains(says), "{text}: {e}");
    }
}

#[test]
fn the_hash_follows_the_load_not_the_labels() {
    let a = smoke();
    let mut b = a.clone();
    b.name = "renamed".into();
    b.description = "other words".into();
    b.slo.p99_ms = Some(1.0);
    b.source = "elsewhere.toml".into();
    assert_eq!(scenario_hash(&a), scenario_hash(&b));
    let mut c = a.clone();
    c.apply_overrides(&Overrides {
        duration: Some(std::time::Duration::from_secs(3)),
        ..Overrides::default()
    })
    .unwrap();
    assert_ne!(scenario_hash(&a), scenario_hash(&c));
    let mut d = a.clone();
    d.users.count += 1;
    assert_ne!(scenario_hash(&a), scenario_hash(&d));
}

#[test]
fn another_scenario_machine_or_stack_is_flagged() {
    let b = baseline();
    let mut machine = b.machine.clone();
    assert!(precheck(&smoke(), &b, &machine).is_empty());
    machine.cpus += 2;
    machine.memory_bytes *= 2;
    let mut other = smoke();
    other.users.count -= 10;
    let flags = precheck(&other, &b, &machine);
    assert_eq!(flags.len(), 3, "{flags:?}");
    assert!(flags[0].starts_with("scenario:"), "{flags:?}");
    assert!(flags[1].contains(&format!("recorded on {} CPUs", b.machine.cpus)));
    assert!(flags[2].contains("memory"));
    // The runs went to a stack of another shape.
    let mut current = side(1.0, 1.0);
    current[0].target.stack.as_mut().unwrap().partitions = 12;
    let flags = shape_flags(&b, &current);
    assert_eq!(flags.len(), 1);
    assert!(flags[0].contains("12 partitions"), "{flags:?}");
}

fn stompede(args: &[&str], dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stompede"))
        .args(args)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--out")
        .arg(dir.join("reports"))
        .env_remove("GITHUB_STEP_SUMMARY")
        .output()
        .expect("run stompede");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Refusals that need no run: each exits 2 naming what to fix, and nothing runs
/// (no stack state, no reports).
#[test]
fn usage_and_bad_baselines_exit_2_before_any_run() {
    let dir = std::env::temp_dir().join(format!("stompede-gate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let smoke_path = repo("scenarios/smoke.toml");
    let smoke_arg = smoke_path.to_str().unwrap();
    let b = baseline();
    let good = dir.join("good.json");
    b.save(&good).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&b.to_json()).unwrap();
    v["schema_version"] = 9.into();
    let future = dir.join("future.json");
    std::fs::write(&future, v.to_string()).unwrap();
    let mut other = b.clone();
    other.scenario.hash = "fnv1a64:0000000000000000".into();
    other.machine = this_machine();
    let other_path = dir.join("other.json");
    other.save(&other_path).unwrap();
    let junit = dir.join("gate.xml");
    let absent = dir.join("absent.json");

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["gate", smoke_arg], "--baseline"),
        (
            vec![
                "gate",
                smoke_arg,
                "--baseline",
                "x",
                "--record-baseline",
                "y",
            ],
            "cannot be used with",
        ),
        (
            vec![
                "gate",
                smoke_arg,
                "--baseline",
                good.to_str().unwrap(),
                "--runs",
                "3",
            ],
            "at least 5 runs per side",
        ),
        (
            vec![
                "gate",
                smoke_arg,
                "--baseline",
                good.to_str().unwrap(),
                "--tolerance",
                "p50=10",
            ],
            "--tolerance p50=10: p50=10: write the tolerance as a percentage",
        ),
        (
            vec!["gate", smoke_arg, "--baseline", absent.to_str().unwrap()],
            "cannot read the baseline",
        ),
        (
            vec!["gate", smoke_arg, "--baseline", future.to_str().unwrap()],
            "has baseline schema_version 9, but this build of stompede reads versions 1",
        ),
        (
            vec![
                "gate",
                smoke_arg,
                "--baseline",
                other_path.to_str().unwrap(),
                "--strict",
                "--junit",
                junit.to_str().unwrap(),
            ],
            "--strict: the baseline was recorded on another setup",
        ),
        (
            vec!["gate", "no-such.toml", "--baseline", "x"],
            "no-such.toml",
        ),
    ];
    for (args, says) in cases {
        let (code, text) = stompede(&args, &dir);
        assert_eq!(code, Some(2), "{args:?}:\n{text}");
        assert!(text.contains(says), "{args:?}: {says:?} not in\n{text}");
    }
    // The strict refusal is also in the JUnit, as an error CI shows.
    let xml = std::fs::read_to_string(&junit).expect("JUnit written on refusal");
    let doc = roxmltree::Document::parse(&xml).expect("JUnit parses");
    let err = doc.descendants().find(|n| n.has_tag_name("error")).unwrap();
    assert!(err.attribute("message").unwrap().contains("scenario:"));
    assert!(!dir.join("reports").exists() && !dir.join("state").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_teaches_the_gate() {
    let out = Command::new(env!("CARGO_BIN_EXE_stompede"))
        .args(["gate", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for part in [
        "Mann-Whitney",
        "bootstrap",
        "--record-baseline",
        "--tolerance",
        "p50=10%, p99=15%",
        "GITHUB_STEP_SUMMARY",
        "Exit codes",
    ] {
        assert!(text.contains(part), "{part:?} not in --help:\n{text}");
    }
}
