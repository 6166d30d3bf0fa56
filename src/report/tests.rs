//! Tests of the report model, its schema and the renderers.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;

const SCHEMA: &str = include_str!("../../schema/summary.schema.json");

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(SCHEMA).expect("schema/summary.schema.json is JSON");
    jsonschema::draft202012::new(&schema).expect("schema/summary.schema.json compiles")
}

pub(super) fn errors(instance: &Value) -> Vec<String> {
    validator()
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

/// A summary of an external target: every optional section absent.
fn external_summary() -> Summary {
    let mut s = Summary::sample();
    s.target = TargetSummary {
        kind: TargetKind::External,
        urls: vec!["ws://chat.example:8080/ws-stomp".into()],
        stack: None,
    };
    s.kafka = None;
    s.db = None;
    s.resources = None;
    s.latency.receipt = None;
    s.throughput.receipts = None;
    s.scenario.file = None;
    s.scenario.description = None;
    s.environment.rustc = None;
    s.files.histogram_log = None;
    for p in s.timeline.iter_mut().take(3) {
        p.p50_us = None;
        p.p99_us = None;
    }
    s
}

pub(super) fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stompede-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn schema_is_a_valid_draft_2020_12_schema() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    jsonschema::draft202012::meta::validate(&schema)
        .expect("schema is valid against the 2020-12 meta-schema");
}

#[test]
fn sample_summary_matches_schema() {
    for s in [Summary::sample(), external_summary()] {
        let value = serde_json::to_value(&s).unwrap();
        assert_eq!(errors(&value), Vec::<String>::new());
    }
}

#[test]
fn extra_or_mistyped_fields_fail_validation() {
    let good = serde_json::to_value(Summary::sample()).unwrap();
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "extra top-level field",
            Box::new(|v| v["surprise"] = json!(1)),
        ),
        (
            "extra nested field",
            Box::new(|v| v["latency"]["corrected"]["p95_us"] = json!(10)),
        ),
        (
            "extra field in a timeline point",
            Box::new(|v| v["timeline"][0]["rate"] = json!(1.0)),
        ),
        (
            "mistyped count",
            Box::new(|v| v["throughput"]["sent"] = json!("1000")),
        ),
        (
            "negative count",
            Box::new(|v| v["integrity"]["lost"] = json!(-1)),
        ),
        (
            "unknown phase",
            Box::new(|v| v["timeline"][0]["phase"] = json!("cooldown")),
        ),
        (
            "unknown target kind",
            Box::new(|v| v["target"]["kind"] = json!("cloud")),
        ),
        (
            "missing required field",
            Box::new(|v| drop(v.as_object_mut().unwrap().remove("integrity"))),
        ),
        (
            "non-UTC time",
            Box::new(|v| v["started_at"] = json!("2025-01-31T13:00:00+01:00")),
        ),
        (
            "wrong schema version",
            Box::new(|v| v["schema_version"] = json!(3)),
        ),
    ];
    for (what, mutate) in cases {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert!(!errors(&bad).is_empty(), "{what} passed validation");
    }
}

#[test]
fn summary_round_trips_through_json() {
    let s = Summary::sample();
    let text = s.to_json().unwrap();
    let back = Summary::from_json(&text).unwrap();
    // serde_json is built without `float_roundtrip`, so a float may come back one ulp
    // off; everything else must be identical.
    let diffs = differences(
        "",
        &serde_json::to_value(&s).unwrap(),
        &serde_json::to_value(&back).unwrap(),
    );
    assert!(diffs.is_empty(), "{diffs:?}");
}

fn differences(at: &str, a: &Value, b: &Value) -> Vec<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() <= 1e-12 * x.abs().max(y.abs()) {
                vec![]
            } else {
                vec![format!("{at}: {x} != {y}")]
            }
        }
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => x
            .iter()
            .flat_map(|(k, v)| match y.get(k) {
                Some(w) => differences(&format!("{at}/{k}"), v, w),
                None => vec![format!("{at}/{k} missing")],
            })
            .collect(),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .flat_map(|(i, (v, w))| differences(&format!("{at}/{i}"), v, w))
            .collect(),
        _ if a == b => vec![],
        _ => vec![format!("{at}: {a} != {b}")],
    }
}

#[test]
fn load_reads_a_written_summary_and_names_the_file_on_errors() {
    let dir = scratch_dir("load");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("summary.json");
    std::fs::write(&path, Summary::sample().to_json().unwrap()).unwrap();
    assert_eq!(
        Summary::load(&path).unwrap().run_id,
        Summary::sample().run_id
    );

    let mut old = serde_json::to_value(Summary::sample()).unwrap();
    old["schema_version"] = json!(0);
    std::fs::write(&path, old.to_string()).unwrap();
    let err = Summary::load(&path).unwrap_err();
    assert!(matches!(err, ReportError::SchemaVersion { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("schema_version 0"),
        "{msg}"
    );

    std::fs::write(&path, "{\"schema_version\": 1, \"run_id\": 5}").unwrap();
    let msg = Summary::load(&path).unwrap_err().to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("not a valid"),
        "{msg}"
    );

    let missing = dir.join("nope.json");
    let msg = Summary::load(&missing).unwrap_err().to_string();
    assert!(msg.contains("nope.json"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_finite_figures_are_caught_before_writing() {
    let mut s = Summary::sample();
    s.throughput.sent_per_s = f64::NAN;
    assert!(matches!(s.to_json(), Err(ReportError::NotLoadable { .. })));
}

#[test]
fn latency_stats_from_histogram() {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    for v in 1..=10_000u64 {
        h.record(v).unwrap();
    }
    let l = LatencyStats::from_histogram(&h);
    assert_eq!(l.count, 10_000);
    assert!(
        l.p50_us <= l.p90_us
            && l.p90_us <= l.p99_us
            && l.p99_us <= l.p999_us
            && l.p999_us <= l.max_us
    );
    assert!((4_990..=5_010).contains(&l.p50_us), "{}", l.p50_us);
    let q: Vec<f64> = l.percentiles.iter().map(|p| p.quantile).collect();
    assert!(q.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(q.first(), Some(&0.0));
    assert_eq!(
        l.percentiles.last().map(|p| (p.quantile, p.value_us)),
        Some((1.0, l.max_us))
    );
    // 10,000 samples resolve 99.99% but not 99.999%.
    assert!(q.iter().any(|&q| (q - 0.9999).abs() < 1e-9));
    assert!(!q.iter().any(|&q| q > 0.9999 && q < 1.0));
    assert_eq!(
        LatencyStats::from_histogram(&hdrhistogram::Histogram::<u64>::new(3).unwrap()),
        LatencyStats::empty()
    );
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1000, 500), "{}", path.display());
    assert!(
        bytes.len() > 15_000,
        "{} is only {} bytes",
        path.display(),
        bytes.len()
    );
}

#[test]
fn write_report_writes_json_charts_and_html() {
    let dir = scratch_dir("full");
    let s = Summary::sample();
    let files = write_report(&s, &dir).unwrap();
    assert!(files.skipped.is_empty(), "{:?}", files.skipped);
    assert!(files.failed.is_empty(), "{:?}", files.failed);
    let names: Vec<String> = files
        .charts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ALL_CHARTS);
    for chart in &files.charts {
        assert_png(chart);
    }

    let written = Summary::load(&files.summary_json).unwrap();
    assert_eq!(written.files.charts, names);
    assert_eq!(
        errors(&serde_json::to_value(&written).unwrap()),
        Vec::<String>::new()
    );

    let html = std::fs::read_to_string(&files.html).unwrap();
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 5);
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "report.html refers to external assets"
    );
    assert!(
        html.contains("&lt;all busy&gt;") && !html.contains("<all busy>"),
        "description not escaped"
    );
    for section in [
        "PASS",
        "Latency",
        "Kafka consumer lag",
        "Database",
        "Sessions",
        "Environment",
        "chat.messages",
    ] {
        assert!(html.contains(section), "report.html lacks {section}");
    }
    if std::env::var_os("STOMPEDE_KEEP_REPORT").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn write_report_skips_charts_without_data() {
    let dir = scratch_dir("external");
    let mut s = external_summary();
    s.slo[0] = SloVerdict::new("p99_ms", Bound::AtMost, 1.0, 12.5, "ms");
    s.passed = false;
    let files = write_report(&s, &dir).unwrap();
    let skipped: Vec<&str> = files.skipped.iter().map(|c| c.file.as_str()).collect();
    assert_eq!(skipped, [charts::KAFKA_LAG, charts::DB_ROWS]);
    assert_eq!(files.charts.len(), 3);
    assert!(!dir.join(charts::KAFKA_LAG).exists());
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert!(html.contains("verdict fail") && html.contains("No chart <code>kafka-lag.png</code>"));
    if std::env::var_os("STOMPEDE_KEEP_REPORT").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A 16-second run of 1:1 rooms with sub-millisecond latency and one delivery per send.
fn short_summary() -> Summary {
    let mut s = external_summary();
    s.phases = Phases {
        ramp_s: 2.0,
        warmup_s: 3.0,
        measured_s: 10.0,
        grace_s: 1.0,
    };
    s.timeline = (1..=16u64)
        .map(|t| TimelinePoint {
            t_s: t as f64,
            interval_s: 1.0,
            phase: match t {
                1..=2 => Phase::Ramp,
                3..=5 => Phase::Warmup,
                6..=15 => Phase::Measure,
                _ => Phase::Grace,
            },
            sent: 100 + t * 3,
            delivered: 98 + t * 3,
            sessions: 200,
            errors: 0,
            p50_us: Some(300 + t * 5),
            p99_us: Some(800 + t * 10),
            harness_rss_bytes: None,
        })
        .collect();
    let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    h.record(420).unwrap();
    s.latency.corrected = LatencyStats::from_histogram(&h);
    s.latency.raw = LatencyStats::from_histogram(&h);
    s
}

#[test]
fn write_report_copes_with_short_and_empty_runs() {
    let dir = scratch_dir("short");
    let files = write_report(&short_summary(), &dir).unwrap();
    assert_eq!(files.charts.len(), 3);
    files.charts.iter().for_each(|c| assert_png(c));

    let mut empty = external_summary();
    empty.timeline.clear();
    empty.latency.corrected = LatencyStats::empty();
    empty.latency.raw = LatencyStats::empty();
    let files = write_report(&empty, &scratch_dir("empty")).unwrap();
    assert!(files.charts.is_empty());
    assert_eq!(files.skipped.len(), 5);
    assert!(std::fs::read_to_string(&files.html)
        .unwrap()
        .contains("no latency samples"));
    if std::env::var_os("STOMPEDE_KEEP_REPORT").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&files.dir);
    }
}

const ALL_CHARTS: [&str; 5] = [
    charts::LATENCY_PERCENTILES,
    charts::LATENCY_OVER_TIME,
    charts::THROUGHPUT_OVER_TIME,
    charts::KAFKA_LAG,
    charts::DB_ROWS,
];

#[test]
fn a_chart_that_cannot_be_drawn_is_a_note_not_an_error() {
    let dir = scratch_dir("chart-fails");
    // A directory where the chart file should go: the chart cannot be written.
    std::fs::create_dir_all(dir.join(charts::KAFKA_LAG)).unwrap();
    let files = write_report(&Summary::sample(), &dir).unwrap();

    let failed: Vec<&str> = files.failed.iter().map(|c| c.file.as_str()).collect();
    assert_eq!(failed, [charts::KAFKA_LAG]);
    assert!(files.skipped.is_empty(), "{:?}", files.skipped);
    let drawn: Vec<PathBuf> = ALL_CHARTS
        .iter()
        .filter(|&&c| c != charts::KAFKA_LAG)
        .map(|c| dir.join(c))
        .collect();
    assert_eq!(files.charts, drawn);
    files.charts.iter().for_each(|c| assert_png(c));

    let written = Summary::load(&files.summary_json).unwrap();
    assert!(!written.files.charts.iter().any(|c| c == charts::KAFKA_LAG));
    let note = written
        .notes
        .iter()
        .find(|n| n.starts_with("chart kafka-lag.png could not be drawn: cannot write "))
        .unwrap_or_else(|| panic!("no note on the failed chart: {:?}", written.notes));
    assert!(note.contains(&files.failed[0].reason), "{note}");
    assert!(note.contains("Is a directory"), "{note}");
    assert_eq!(
        errors(&serde_json::to_value(&written).unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(written.passed, Summary::sample().passed);

    let console = console_table(&written);
    assert!(console.contains(&format!("note: {note}")), "{console}");
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert!(
        html.contains("No chart <code>kafka-lag.png</code>: it could not be drawn: cannot write "),
        "report.html does not say the chart is missing"
    );
    assert!(html.contains(&format!("<li>{}</li>", html::escape(note))));
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn summary_and_html_that_cannot_be_written_are_errors() {
    for file in [SUMMARY_FILE, HTML_FILE] {
        let dir = scratch_dir(&format!("unwritable-{file}"));
        std::fs::create_dir_all(dir.join(file)).unwrap();
        match write_report(&Summary::sample(), &dir) {
            Err(ReportError::Write { path, .. }) => assert_eq!(path, dir.join(file)),
            other => panic!("{file} could not be written, yet: {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The tests the font-less child process runs.
const FONTLESS_TESTS: [&str; 2] = [
    "report::tests::write_report_writes_json_charts_and_html",
    "report::charts::tests::every_chart_draws_its_labels",
];

/// Runs [`FONTLESS_TESTS`] in a child process of this test binary whose environment
/// leaves no way to find an installed font: fontconfig reads an empty configuration,
/// and every home, data, config and cache directory is empty.
#[test]
fn charts_are_drawn_where_no_system_font_can_be_found() {
    let root = scratch_dir("no-fonts");
    let (empty, out) = (root.join("empty"), root.join("out"));
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let conf = root.join("fonts.conf");
    std::fs::write(
        &conf,
        "<?xml version=\"1.0\"?>\n<fontconfig></fontconfig>\n",
    )
    .unwrap();

    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "--test-threads=1"])
        .args(FONTLESS_TESTS)
        .env_clear()
        .env("FONTCONFIG_FILE", &conf)
        .env("FONTCONFIG_PATH", &empty)
        .env("TMPDIR", &out)
        .env("STOMPEDE_KEEP_REPORT", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for var in [
        "HOME",
        "XDG_DATA_HOME",
        "XDG_DATA_DIRS",
        "XDG_CONFIG_HOME",
        "XDG_CONFIG_DIRS",
        "XDG_CACHE_HOME",
    ] {
        cmd.env(var, &empty);
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 2 passed"),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    let report = out.join(format!("stompede-report-full-{pid}"));
    let written = Summary::load(&report.join(SUMMARY_FILE)).unwrap();
    assert_eq!(written.files.charts, ALL_CHARTS);
    assert!(
        written.notes.iter().all(|n| !n.starts_with("chart ")),
        "{:?}",
        written.notes
    );
    for chart in ALL_CHARTS {
        assert_png(&report.join(chart));
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn console_table_shows_the_key_figures() {
    let s = Summary::sample();
    let t = console_table(&s);
    for needle in [
        "corrected",
        "raw",
        "receipt",
        "p99.9",
        "lost 12",
        "dup 3",
        "out of order 0",
        "max lag",
        "rows/s",
        "SLO  PASS  p99_ms",
        "verdict: PASS",
    ] {
        assert!(t.contains(needle), "console table lacks {needle:?}:\n{t}");
    }
    let ext = console_table(&external_summary());
    assert!(
        ext.contains("kafka      not measured") && ext.contains("database   not measured"),
        "{ext}"
    );
}

#[test]
fn markdown_has_verdict_and_tables() {
    let md = markdown(&Summary::sample());
    assert!(md.starts_with("## ✅ PASS"), "{md}");
    assert!(md.contains("| `p99_ms` |") && md.contains("| corrected |") && md.contains("|--:|"));
    let mut failing = Summary::sample();
    failing.passed = false;
    failing.notes.push("a | b <c>".into());
    let md = markdown(&failing);
    assert!(
        md.starts_with("## ❌ FAIL") && md.contains("a \\| b &lt;c&gt;"),
        "{md}"
    );
}

#[test]
fn version_1_summaries_still_load() {
    // What version 1 wrote: none of the fields version 2 added.
    let mut v = serde_json::to_value(Summary::sample()).unwrap();
    v["schema_version"] = json!(1);
    let o = v.as_object_mut().unwrap();
    o.remove("harness");
    o.remove("warnings");
    v["sessions"].as_object_mut().unwrap().remove("subscribed");
    v["kafka"].as_object_mut().unwrap().remove("sampling");
    v["db"].as_object_mut().unwrap().remove("sampling");
    for p in v["timeline"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("harness_rss_bytes");
    }
    let r = v["resources"].as_object_mut().unwrap();
    r.remove("harness_cpu_s");
    r.remove("basis");
    let s = Summary::from_json(&v.to_string()).expect("a version 1 summary loads");
    assert_eq!(s.schema_version, 1);
    assert!(s.harness.is_none() && s.warnings.is_empty());
    assert_eq!(s.sessions.subscribed, None);
    assert!(s.resources.unwrap().basis.is_none());
}

#[test]
fn shards_are_shown_and_validated() {
    let mut s = Summary::sample();
    s.shards = Some(vec![
        ShardReport {
            shard: 0,
            host: "node-a".into(),
            pid: Some(4242),
            users: 1000,
            connected: 1000,
            sent: 500,
            delivered: 5000,
            timed: 4000,
            cpu_s: Some(1.25),
            peak_rss_bytes: 50 << 20,
            source: Some("127.0.0.2".into()),
            lost: None,
        },
        ShardReport {
            shard: 1,
            host: "node-<b>".into(),
            pid: None,
            users: 1000,
            connected: 0,
            sent: 0,
            delivered: 0,
            timed: 0,
            cpu_s: None,
            peak_rss_bytes: 0,
            source: None,
            lost: Some("its connection closed (at 12.0 s)".into()),
        },
    ]);
    let value = serde_json::to_value(&s).expect("serialises");
    assert_eq!(errors(&value), Vec::<String>::new());
    let mut bad = value.clone();
    bad["shards"][0]["lost"] = json!(3);
    assert!(!errors(&bad).is_empty(), "a mistyped shard field fails");
    let console = console_table(&s);
    assert!(
        console.contains("shard 0   node-a from 127.0.0.2  users 1,000"),
        "{console}"
    );
    assert!(
        console.contains("LOST: its connection closed (at 12.0 s)"),
        "{console}"
    );
    let html = html::render(&s, &[], &[]);
    assert!(html.contains("<h2>Shards</h2>"));
    assert!(html.contains("node-&lt;b&gt;"), "host names are escaped");
    assert!(!html.contains("node-<b>"));
    // A run in one process has no shards section at all.
    let plain = serde_json::to_value(Summary::sample()).expect("serialises");
    assert!(plain.get("shards").is_none());
    assert!(!console_table(&Summary::sample()).contains("shards "));
}
