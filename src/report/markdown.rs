//! A GitHub-flavoured markdown summary of a run, for CI job summaries and PR comments.

use std::fmt::Write;

use super::console::target_line;
use super::console::{disconnected_line, durability_line, others_p99};
use super::format::{
    count, count_opt, millis, ms, one_line, percent, rate, seconds, secs, slo_line, verdict,
};
use super::{FaultReport, FaultsSummary, LatencyStats, Summary};

/// Text safe inside a markdown table cell: no column breaks, line breaks or raw HTML.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\n', '\r'], " ")
}

/// Renders the summary as markdown.
pub fn markdown(s: &Summary) -> String {
    let mut out = String::new();
    let mark = if s.passed { "✅" } else { "❌" };
    let _ = writeln!(
        out,
        "## {mark} {}: stompede `{}`\n",
        verdict(s.passed),
        cell(&s.scenario.name)
    );
    let _ = writeln!(
        out,
        "Run `{}`, {} measured, target {}.\n",
        cell(&s.run_id),
        seconds(s.phases.measured_s),
        cell(&target_line(s))
    );

    if !s.slo.is_empty() {
        let _ = writeln!(out, "| SLO | measured vs limit | result |\n|---|---|---|");
        for v in &s.slo {
            let m = if v.passed { "✅" } else { "❌" };
            let _ = writeln!(
                out,
                "| `{}` | {} | {m} {} |",
                cell(&v.name),
                cell(&slo_line(v)),
                verdict(v.passed)
            );
        }
        out.push('\n');
    }

    let _ = writeln!(out, "### Latency (ms)\n");
    let _ = writeln!(
        out,
        "| | p50 | p90 | p99 | p99.9 | max | samples |\n|---|--:|--:|--:|--:|--:|--:|"
    );
    let mut row = |name: &str, l: &LatencyStats| {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
            count(l.count)
        );
    };
    row("corrected", &s.latency.corrected);
    row("raw", &s.latency.raw);
    if let Some(r) = &s.latency.receipt {
        row("receipt", r);
    }

    let t = &s.throughput;
    let i = &s.integrity;
    let _ = writeln!(out, "\n### Messages\n");
    let _ = writeln!(
        out,
        "| sent | sent/s | delivered | delivered/s | receipts | lost | loss | duplicated | out of order |\n\
         |--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        count(t.sent),
        rate(t.sent_per_s),
        count(t.delivered),
        rate(t.delivered_per_s),
        count_opt(t.receipts),
        count(i.lost),
        percent(i.loss_ratio),
        count(i.duplicated),
        count(i.out_of_order)
    );

    let ss = &s.sessions;
    let _ = writeln!(out, "\n### Sessions, Kafka, database\n");
    let _ = writeln!(
        out,
        "- sessions: {}/{} connected, peak {}, {} connect errors, {} STOMP ERROR frames, {} disconnects",
        count(ss.connected),
        count(ss.planned),
        count(ss.peak),
        count(ss.connect_errors),
        count(ss.errors),
        count(ss.disconnects)
    );
    match &s.kafka {
        Some(k) => {
            let groups: Vec<String> = k
                .groups
                .iter()
                .map(|g| {
                    format!(
                        "`{}` {} (final {})",
                        cell(&g.group),
                        count(g.max_lag),
                        count(g.final_lag)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "- Kafka max lag: {} messages; per group: {}",
                count(k.max_lag),
                groups.join(", ")
            );
        }
        None => out.push_str("- Kafka lag: not measured\n"),
    }
    match &s.db {
        Some(d) => {
            let _ = write!(
                out,
                "- database: {} rows/s mean, {} peak",
                rate(d.mean_rows_per_s),
                rate(d.peak_rows_per_s)
            );
            if let Some(a) = &d.audit {
                let _ = write!(
                    out,
                    "; audit: {} rows for {} sent, {} missing, {} duplicates",
                    count(a.rows_for_run),
                    count(a.sent),
                    count(a.missing),
                    count(a.duplicates)
                );
            }
            out.push('\n');
        }
        None => out.push_str("- database: not measured\n"),
    }
    if let Some(f) = &s.faults {
        faults(&mut out, f);
    }
    if let Some(h) = &s.harness {
        let _ = writeln!(
            out,
            "\n- harness: {}",
            cell(&super::format::harness_line(h))
        );
    }
    if !s.warnings.is_empty() {
        let _ = writeln!(out, "\n### Warnings\n");
        for w in &s.warnings {
            let _ = writeln!(out, "- {} x {}", w.count, cell(&w.cause_line()));
        }
    }
    if !s.notes.is_empty() {
        let _ = writeln!(out, "\n### Notes\n");
        for n in &s.notes {
            let _ = writeln!(out, "- {}", cell(n));
        }
    }
    let _ = writeln!(
        out,
        "\n<sub>stompede {} on {} ({} CPUs), started {}</sub>",
        cell(&s.tool.version),
        cell(&s.environment.hostname),
        s.environment.cpus,
        cell(&s.started_at)
    );
    out
}

/// The faults table, the durability line and the line on disconnected users.
fn faults(out: &mut String, f: &FaultsSummary) {
    let _ = writeln!(out, "\n### Faults\n");
    if !f.injected.is_empty() {
        let _ = writeln!(
            out,
            "| # | fault | target | at | outage | first delivery | p99 back | reconnected | send failures | receipt timeouts | lost in window | the others' p99 |\n\
             |--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"
        );
        for r in &f.injected {
            let _ = writeln!(out, "| {} |", fault_row(r).join(" | "));
        }
        out.push('\n');
    }
    let d = &f.durability;
    let kept = d.receipted_lost == 0 && d.receipted_missing_in_db.unwrap_or(0) == 0;
    let mark = if kept { "✅" } else { "❌" };
    let _ = writeln!(out, "- {mark} {}", cell(&durability_line(f)));
    let _ = writeln!(out, "- {}", cell(&disconnected_line(f)));
}

/// The cells of one fault's row.
fn fault_row(f: &FaultReport) -> Vec<String> {
    let mut row = vec![
        f.index.to_string(),
        format!("`{}`", cell(&f.kind)),
        cell(&one_line(&f.target, 80)),
    ];
    let dash = || "-".to_string();
    let Some(at) = f.at_s else {
        row.push(format!("not injected (planned +{})", secs(f.planned_s)));
        row.extend(std::iter::repeat_with(dash).take(8));
        return row;
    };
    row.push(format!("{at:.1} s"));
    if !f.ok {
        let why = f.error.as_deref().unwrap_or("no reason given");
        row.push(format!("❌ FAILED: {}", cell(&one_line(why, 160))));
        row.extend(std::iter::repeat_with(dash).take(7));
        return row;
    }
    match &f.outage {
        Some(o) => {
            row.push(secs(o.length_s));
            row.push(if o.recovered {
                format!("+{}", secs(o.first_delivery_after_s))
            } else {
                "❌ none".to_string()
            });
        }
        None => row.extend(["none".to_string(), dash()]),
    }
    row.push(match (f.p99_before_ms, f.p99_recovered_s) {
        (Some(_), Some(r)) => format!("+{}", secs(r)),
        (Some(_), None) => "not back".to_string(),
        (None, _) => dash(),
    });
    row.push(if f.disconnected == 0 {
        dash()
    } else {
        let mut c = format!("{}/{}", count(f.reconnected), count(f.disconnected));
        if let Some(t) = &f.reconnect_ms {
            let _ = write!(c, " (p50 {}, max {})", millis(t.p50_ms), millis(t.max_ms));
        }
        c
    });
    row.push(count(f.send_failures));
    row.push(count(f.receipt_timeouts));
    row.push(f.lost_in_window.map_or_else(dash, count));
    row.push(
        f.others
            .as_ref()
            .map_or_else(dash, |o| cell(&format!("{}: {}", o.who, others_p99(o)))),
    );
    row
}
