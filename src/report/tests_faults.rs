//! Tests of the faults part of the report: schema, console block, HTML section,
//! markdown table and chart marks.

use serde_json::{json, Value};

use super::plot::{fault_marks, plot_margin_top, FaultMark};
use super::tests::{errors, scratch_dir};
use super::*;

fn faults(s: &Summary) -> &FaultsSummary {
    s.faults.as_ref().expect("the sample has faults")
}

fn receipted(s: &Summary) -> String {
    format_count(faults(s).durability.receipted)
}

#[test]
fn summaries_with_and_without_faults_match_schema() {
    let with = serde_json::to_value(Summary::sample_with_faults()).unwrap();
    assert!(with["faults"]["injected"].as_array().unwrap().len() == 4);
    assert_eq!(errors(&with), Vec::<String>::new());

    let without = serde_json::to_value(Summary::sample()).unwrap();
    assert!(without["faults"].is_null());
    assert_eq!(errors(&without), Vec::<String>::new());

    // Written before faults existed: no `faults` key at all.
    let mut older = without.clone();
    older.as_object_mut().unwrap().remove("faults");
    assert_eq!(errors(&older), Vec::<String>::new());
    assert_eq!(Summary::from_json(&older.to_string()).unwrap().faults, None);

    let back = Summary::from_json(&Summary::sample_with_faults().to_json().unwrap()).unwrap();
    let kinds: Vec<&str> = faults(&back)
        .injected
        .iter()
        .map(|f| f.kind.as_str())
        .collect();
    assert_eq!(kinds, ["kill-broker", "kill-server", "pause-db", "exec"]);
}

#[test]
fn malformed_faults_fail_validation() {
    let good = serde_json::to_value(Summary::sample_with_faults()).unwrap();
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("faults as text", Box::new(|v| v["faults"] = json!("none"))),
        (
            "extra field in faults",
            Box::new(|v| v["faults"]["surprise"] = json!(1)),
        ),
        (
            "extra field in a fault",
            Box::new(|v| v["faults"]["injected"][0]["severity"] = json!("high")),
        ),
        (
            "extra field in an outage",
            Box::new(|v| v["faults"]["injected"][0]["outage"]["gap"] = json!(1)),
        ),
        (
            "extra field in reconnect times",
            Box::new(|v| v["faults"]["injected"][1]["reconnect_ms"]["p90_ms"] = json!(1.0)),
        ),
        (
            "extra field in durability",
            Box::new(|v| v["faults"]["durability"]["acked"] = json!(1)),
        ),
        (
            "unknown fault kind",
            Box::new(|v| v["faults"]["injected"][0]["kind"] = json!("unplug")),
        ),
        (
            "negative receipted loss",
            Box::new(|v| v["faults"]["durability"]["receipted_lost"] = json!(-1)),
        ),
        (
            "index 0",
            Box::new(|v| v["faults"]["injected"][0]["index"] = json!(0)),
        ),
        (
            "missing at_s",
            Box::new(|v| {
                drop(
                    v["faults"]["injected"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("at_s"),
                )
            }),
        ),
        (
            "mistyped ok",
            Box::new(|v| v["faults"]["injected"][3]["ok"] = json!("no")),
        ),
    ];
    for (what, mutate) in cases {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert!(!errors(&bad).is_empty(), "{what} passed validation");
    }
}

#[test]
fn console_shows_one_line_per_fault_and_two_more() {
    let s = Summary::sample_with_faults();
    let t = console_table(&s);
    let expected = [
        "fault 1 kill-broker broker 2 (leader of town-hall-0's partition 1) at 20.2 s: all users (2,000): \
         outage 11.8 s, first delivery +11.7 s, p99 back +14 s; 0 send failures, 37 receipt timeouts, longest receipt wait 11.65 s; \
         9 lost in its window"
            .to_string(),
        "fault 2 kill-server s2 at 45.1 s: users of s2 (1,000): outage 1.42 s, first delivery +1.43 s, \
         p99 back +3 s; reconnected 1,000/1,000 (p50 1.21 s, p99 1.89 s, max 2.34 s); \
         12 send failures, 0 receipt timeouts, longest receipt wait 95 ms; users of s1 among themselves: p99 8.9 ms before, 10 ms during"
            .to_string(),
        "fault 3 pause-db PostgreSQL at 55.2 s until 63.2 s: all users (2,000): no outage, p99 back +1 s; \
         0 send failures, 0 receipt timeouts, longest receipt wait 8.15 s"
            .to_string(),
        "fault 4 exec ./faults/throttle.sh --iface lo 2>&1 > /tmp/throttle.log at 70.0 s: FAILED: \
         exit status 2: RTNETLINK answers: Operation not permitted / We have an error talking to the kernel"
            .to_string(),
        format!(
            "durability: {} receipted, 0 lost, 0 missing in the database",
            receipted(&s)
        ),
        "while disconnected: 25,874 deliveries missed, 604 sends skipped (not loss); \
         lost 9 inside fault windows, 3 outside"
            .to_string(),
    ];
    let lines: Vec<&str> = t.lines().collect();
    for line in &expected {
        assert!(lines.contains(&line.as_str()), "no line {line:?} in:\n{t}");
    }
    let block: Vec<&&str> = lines
        .iter()
        .filter(|l| {
            l.starts_with("fault ")
                || l.starts_with("durability:")
                || l.starts_with("while disconnected:")
        })
        .collect();
    assert_eq!(block.len(), 4 + 2, "{t}");
    assert_eq!(console::fault_lines(faults(&s)), expected);

    let plain = console_table(&Summary::sample());
    assert!(
        !plain.contains("fault ")
            && !plain.contains("durability:")
            && !plain.contains("disconnected:"),
        "{plain}"
    );
}

#[test]
fn console_lines_stay_short_and_say_what_went_wrong() {
    let mut s = Summary::sample_with_faults();
    let f = s.faults.as_mut().unwrap();
    f.injected[3].error = Some(format!("{}\n", "permission denied ".repeat(200)));
    f.injected[1].at_s = None;
    f.injected[0].outage.as_mut().unwrap().recovered = false;
    f.injected[0].p99_recovered_s = None;
    f.durability.receipted_lost = 2;
    f.durability.receipted_missing_in_db = None;
    f.lost_in_fault_windows = None;
    f.lost_outside_fault_windows = None;
    let lines = console::fault_lines(f);
    assert_eq!(lines.len(), 6);
    assert!(
        lines.iter().all(|l| l.len() < 320 && !l.contains('\n')),
        "{lines:#?}"
    );
    assert!(
        lines[0]
            .contains("outage 11.8 s, NO delivery before sending ended, p99 not back by the end"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].ends_with(
            "fault 2 kill-server s2: not injected (planned 45 s after sending started; the run ended first)"
        ),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].contains(": FAILED: permission denied") && lines[3].ends_with("..."),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].contains("2 lost, database not audited -- FAIL"),
        "{}",
        lines[4]
    );
    assert!(
        lines[5].ends_with("loss inside and outside fault windows not known"),
        "{}",
        lines[5]
    );
}

#[test]
fn html_has_the_faults_section_with_escaped_text() {
    let s = Summary::sample_with_faults();
    let h = html::render(&s, &[], &[]);
    assert!(h.contains("<h2>Faults and recovery</h2>"), "no section");
    // Target and kind text is escaped.
    assert!(
        h.contains("./faults/throttle.sh --iface lo 2&gt;&amp;1 &gt; /tmp/throttle.log")
            && !h.contains("2>&1 > /tmp"),
        "exec target not escaped"
    );
    assert!(h.contains("broker 2 (leader of town-hall-0&#39;s partition 1)"));
    // One row per fault.
    for i in 1..=4 {
        assert!(
            h.contains(&format!("<tr><td class=\"num\">{i}</td><td><code>")),
            "no row for fault {i}"
        );
    }
    assert!(h.contains(
        "<td class=\"fail\" colspan=\"9\">injection FAILED: exit status 2: RTNETLINK answers: \
         Operation not permitted<br>We have an error talking to the kernel</td>"
    ));
    assert!(h.contains("11.8 s<br><small>20.10–31.90 s</small>"));
    assert!(h.contains("<td class=\"num\">+11.7 s</td>"));
    assert!(h.contains("<td class=\"num\">9.1 ms →<br>+14 s</td>"));
    assert!(h.contains("<td class=\"num\">0 / 37 /<br>11.65 s</td>"));
    assert!(h.contains("1,000 → 1,000<br><small>p50 1.21 s<br>p99 1.89 s<br>max 2.34 s</small>"));
    assert!(h.contains(
        "<td class=\"num\">8.9 ms → 10 ms<br><small>users of s1 among themselves</small></td>"
    ));
    // The two figures that must be 0, in green.
    assert!(h.contains(
        "<tr><th>receipted, never delivered (must be 0)</th><td class=\"num pass\">0</td></tr>"
    ));
    assert!(h.contains(
        "<tr><th>receipted, missing in the database (must be 0)</th><td class=\"num pass\">0</td></tr>"
    ));
    assert!(h.contains(&format!(
        "<tr><th>receipted messages</th><td class=\"num\">{}</td></tr>",
        receipted(&s)
    )));
    assert!(h.contains(
        "<th>deliveries missed while disconnected (not loss)</th><td class=\"num\">25,874</td>"
    ));

    let mut bad = Summary::sample_with_faults();
    let f = bad.faults.as_mut().unwrap();
    f.durability.receipted_lost = 3;
    f.durability.receipted_missing_in_db = Some(1);
    f.injected[1].reconnected = 990;
    f.injected[3].error = Some("<script>alert(1)</script>".into());
    let h = html::render(&bad, &[], &[]);
    assert!(h.contains("(must be 0)</th><td class=\"num fail\">3</td>"));
    assert!(h.contains("(must be 0)</th><td class=\"num fail\">1</td>"));
    assert!(h.contains("<td class=\"num fail\">1,000 → 990<br>"));
    assert!(h.contains("FAILED: &lt;script&gt;alert(1)&lt;/script&gt;") && !h.contains("<script>"));

    let plain = html::render(&Summary::sample(), &[], &[]);
    assert!(!plain.contains("Faults and recovery") && !plain.contains("class=\"faults\""));
}

#[test]
fn markdown_has_a_faults_table() {
    let s = Summary::sample_with_faults();
    let md = markdown(&s);
    assert!(md.contains("### Faults\n"), "{md}");
    assert!(md.contains(
        "| 2 | `kill-server` | s2 | 45.1 s | 1.42 s | +1.43 s | +3 s | 1,000/1,000 (p50 1.21 s, max 2.34 s) | 12 | 0 | 0 | users of s1 among themselves: p99 8.9 ms before, 10 ms during |"
    ), "{md}");
    assert!(md.contains(
        "| 4 | `exec` | ./faults/throttle.sh --iface lo 2&gt;&1 &gt; /tmp/throttle.log | 70.0 s | ❌ FAILED: "
    ), "{md}");
    assert!(md.contains(&format!(
        "- ✅ durability: {} receipted, 0 lost, 0 missing in the database",
        receipted(&s)
    )));
    // Every row has as many cells as the header.
    let rows: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with("| # | fault"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(rows.len(), 2 + 4);
    assert!(
        rows.iter().all(|r| r.matches('|').count() == 13),
        "{rows:#?}"
    );
    assert!(!markdown(&Summary::sample()).contains("### Faults"));
}

#[test]
fn fault_marks_of_the_sample() {
    let s = Summary::sample_with_faults();
    let mark = |index, label: &str, at_s, band, recovered_s| FaultMark {
        index,
        label: label.to_string(),
        at_s,
        failed: false,
        band,
        recovered_s,
    };
    assert_eq!(
        fault_marks(&s),
        vec![
            mark(1, "F1 kill-broker", 20.2, None, Some(31.9)),
            mark(2, "F2 kill-server", 45.1, None, Some(46.53)),
            mark(3, "F3 pause-db", 55.2, Some((55.2, 63.2)), None),
            FaultMark {
                failed: true,
                ..mark(4, "F4 exec failed", 70.0, None, None)
            },
        ]
    );
    assert!(plot_margin_top(&s) > plot_margin_top(&Summary::sample()));

    // A fault never injected draws nothing; an outage without recovery has no mark.
    let mut s = s;
    let f = s.faults.as_mut().unwrap();
    f.injected[1].at_s = None;
    f.injected[0].outage.as_mut().unwrap().recovered = false;
    let marks = fault_marks(&s);
    assert_eq!(marks.iter().map(|m| m.index).collect::<Vec<_>>(), [1, 3, 4]);
    assert_eq!(marks[0].recovered_s, None);

    assert!(fault_marks(&Summary::sample()).is_empty());
    s.faults
        .as_mut()
        .unwrap()
        .injected
        .iter_mut()
        .for_each(|f| f.at_s = None);
    assert!(fault_marks(&s).is_empty());
    assert_eq!(plot_margin_top(&s), plot_margin_top(&Summary::sample()));
}

#[test]
fn write_report_with_faults() {
    let dir = scratch_dir("faults");
    let files = write_report(&Summary::sample_with_faults(), &dir).unwrap();
    assert!(
        files.skipped.is_empty() && files.failed.is_empty(),
        "{files:?}"
    );
    assert_eq!(files.charts.len(), 5);
    let written = Summary::load(&files.summary_json).unwrap();
    let (w, sample) = (faults(&written), Summary::sample_with_faults());
    assert_eq!(w.injected.len(), 4);
    assert_eq!(w.durability, faults(&sample).durability);
    assert_eq!(
        errors(&serde_json::to_value(&written).unwrap()),
        Vec::<String>::new()
    );
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert!(html.contains("<h2>Faults and recovery</h2>"));
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 5);
    if std::env::var_os("STOMPEDE_KEEP_REPORT").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
