//! The gate for people: the console table printed at the end of a gate and the markdown
//! summary a CI job posts (appended to `$GITHUB_STEP_SUMMARY` on GitHub Actions). Both
//! show the same rows: each metric with baseline and current medians, ratio, interval,
//! p-value and tolerance, then integrity, then each SLO.

use super::gate::{show_p, show_percent, show_ratio, GateReport, MetricCheck, Verdict};

const HEADER: [&str; 8] = [
    "check",
    "verdict",
    "baseline",
    "current",
    "ratio",
    "interval",
    "p",
    "tolerance",
];

/// The rows both renderers show: metrics, integrity, SLOs.
fn rows(r: &GateReport) -> Vec<[String; 8]> {
    let mut rows = Vec::new();
    for m in &r.metrics {
        rows.push(metric_row(m));
    }
    let i = &r.integrity;
    rows.push([
        "integrity".into(),
        if i.passed { "passed" } else { "FAILED" }.into(),
        "exact".into(),
        format!("{} lost, {} duplicated", i.lost, i.duplicated),
        String::new(),
        String::new(),
        String::new(),
        "0".into(),
    ]);
    for s in &r.slos {
        rows.push([
            format!("SLO {}", s.name),
            if s.passed {
                "passed".into()
            } else {
                format!("FAILED in {} of {} runs", s.failed_runs, s.runs)
            },
            format!("{} {}", s.bound, super::format::number(s.limit)),
            format!("worst {} {}", super::format::number(s.worst), s.unit),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    rows
}

fn metric_row(m: &MetricCheck) -> [String; 8] {
    let verdict = match m.verdict {
        Verdict::Regressed => "REGRESSED".to_string(),
        Verdict::Missing => "MISSING".to_string(),
        v => v.as_str().to_string(),
    };
    match &m.comparison {
        Some(c) => [
            m.metric.label().into(),
            verdict,
            m.metric.show(c.baseline_median),
            m.metric.show(c.current_median),
            show_ratio(c.ratio),
            format!("{} – {}", show_ratio(c.low), show_ratio(c.high)),
            show_p(c.p_value),
            show_percent(m.tolerance),
        ],
        None => [
            m.metric.label().into(),
            verdict,
            format!("{} runs", m.baseline.len()),
            format!("{} runs", m.current.len()),
            String::new(),
            String::new(),
            String::new(),
            show_percent(m.tolerance),
        ],
    }
}

fn outcome(r: &GateReport) -> &'static str {
    if r.passed {
        "PASSED"
    } else {
        "FAILED"
    }
}

fn method(r: &GateReport) -> String {
    format!(
        "{} current run(s) against {} baseline run(s) recorded {} with stompede {}. \
         A metric regressed when a two-sided Mann-Whitney U test on the per-run values gives p < {} \
         and the {}% bootstrap interval of the ratio of medians lies wholly beyond the tolerance.",
        r.runs,
        r.baseline.runs,
        r.baseline.recorded_at,
        r.baseline.tool_version,
        super::format::number(r.alpha),
        super::format::number(r.confidence * 100.0)
    )
}

/// The table printed at the end of a gate.
pub fn gate_console(r: &GateReport) -> String {
    let rows = rows(r);
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                s += "  ";
            }
            s += cell;
            s += &" ".repeat(w - cell.chars().count());
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = format!("gate {}: {}\n", r.scenario, outcome(r));
    out += &line(&HEADER.map(String::from));
    for row in &rows {
        out += &line(row);
    }
    for f in &r.flags {
        out += &format!("flag: {f}\n");
    }
    for n in &r.notes {
        out += &format!("note: {n}\n");
    }
    for f in r.failures() {
        out += &format!("failed: {f}\n");
    }
    out
}

/// The markdown summary of a gate.
pub fn gate_markdown(r: &GateReport) -> String {
    let icon = if r.passed { "✅" } else { "❌" };
    let mut out = format!(
        "## {icon} stompede gate `{}`: {}\n\n{}\n\n",
        cell(&r.scenario),
        outcome(r),
        method(r)
    );
    let failures = r.failures();
    if !failures.is_empty() {
        out += "**Failed checks**\n\n";
        for f in &failures {
            out += &format!("- {}\n", cell(f));
        }
        out += "\n";
    }
    if !r.flags.is_empty() {
        out += "**The baseline was recorded on another setup**\n\n";
        for f in &r.flags {
            out += &format!("- ⚠️ {}\n", cell(f));
        }
        out += "\n";
    }
    out += &format!("| {} |\n", HEADER.join(" | "));
    out += &format!("|{}\n", "---|".repeat(HEADER.len()));
    for row in rows(r) {
        let mut cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        if cells[1].starts_with("REGRESSED")
            || cells[1].starts_with("FAILED")
            || cells[1] == "MISSING"
        {
            cells[1] = format!("**{}**", cells[1]);
        }
        out += &format!("| {} |\n", cells.join(" | "));
    }
    for n in &r.notes {
        out += &format!("\n_{}_\n", cell(n));
    }
    out
}

/// Text safe inside a markdown table cell or list item.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::gate::tests_support::report;

    #[test]
    fn markdown_names_failures_with_their_figures() {
        let md = gate_markdown(&report());
        assert!(
            md.starts_with("## ❌ stompede gate `smoke`: FAILED"),
            "{md}"
        );
        let failed: Vec<&str> = md.lines().filter(|l| l.starts_with("- latency")).collect();
        assert_eq!(failed.len(), 2, "{md}");
        assert!(
            failed[0].contains("latency p50 regressed: baseline 2 ms, current 42 ms, ratio 21.00×")
        );
        assert!(
            md.contains("| latency p99 | **REGRESSED** | 9 ms | 50 ms | 5.56× |"),
            "{md}"
        );
        assert!(
            md.contains("| integrity | **FAILED** | exact | 1 lost, 0 duplicated |"),
            "{md}"
        );
        assert!(md.contains("| delivered/s | improved |"), "{md}");
        assert!(
            md.contains("⚠️ the baseline was recorded on 4 CPUs"),
            "{md}"
        );
        // Every table row has the header's number of cells.
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 1 + 7 + 1 + 2);
        for row in rows {
            let cells = row.replace("\\|", "").matches('|').count();
            assert_eq!(cells, HEADER.len() + 1, "{row}");
        }
    }

    #[test]
    fn console_lines_up_and_lists_failures() {
        let text = gate_console(&report());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "gate smoke: FAILED");
        let verdict_col = lines[1].find("verdict").unwrap();
        for l in &lines[2..12] {
            assert_eq!(l.chars().nth(verdict_col - 2), Some(' '), "{l}");
        }
        assert!(text.contains("failed: integrity failed: 1 lost"), "{text}");
        assert!(
            text.contains("flag: the baseline was recorded on 4 CPUs"),
            "{text}"
        );
    }
}
