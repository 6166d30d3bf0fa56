//! The compact table printed to the terminal when a run ends.
//!
//! Plain ASCII, fixed-width columns, no colour codes, so it reads the same in a
//! terminal, a CI log and a pasted issue.

use std::fmt::Write;

use super::format::{
    count, count_opt, harness_line, ms, percent, rate, run_verdict, seconds, slo_line, verdict,
};
use super::{LatencyStats, Summary};

/// Renders the end-of-run table.
pub fn console_table(s: &Summary) -> String {
    let mut out = String::new();
    let p = &s.phases;
    let _ = writeln!(
        out,
        "stompede {}  scenario {}  run {}",
        s.tool.version, s.scenario.name, s.run_id
    );
    let _ = writeln!(out, "target     {}", target_line(s));
    let _ = writeln!(
        out,
        "measured   {} (after {} ramp-up, {} warm-up; {} grace)",
        seconds(p.measured_s),
        seconds(p.ramp_s),
        seconds(p.warmup_s),
        seconds(p.grace_s)
    );
    out.push('\n');

    let _ = writeln!(
        out,
        "{:<14}{:>10}{:>10}{:>10}{:>10}{:>14}",
        "latency (ms)", "p50", "p99", "p99.9", "max", "samples"
    );
    let mut row = |name: &str, l: &LatencyStats| {
        let _ = writeln!(
            out,
            "  {:<12}{:>10}{:>10}{:>10}{:>10}{:>14}",
            name,
            ms(l.p50_us),
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
    out.push('\n');

    let t = &s.throughput;
    let i = &s.integrity;
    let _ = writeln!(
        out,
        "messages   sent {} ({}/s)  delivered {} ({}/s)  receipts {}",
        count(t.sent),
        rate(t.sent_per_s),
        count(t.delivered),
        rate(t.delivered_per_s),
        count_opt(t.receipts)
    );
    let _ = writeln!(
        out,
        "integrity  lost {} ({})  dup {}  out of order {}",
        count(i.lost),
        percent(i.loss_ratio),
        count(i.duplicated),
        count(i.out_of_order)
    );
    let ss = &s.sessions;
    let _ = writeln!(
        out,
        "sessions   {}/{} connected  peak {}  connect errors {}  ERROR frames {}  disconnects {}",
        count(ss.connected),
        count(ss.planned),
        count(ss.peak),
        count(ss.connect_errors),
        count(ss.errors),
        count(ss.disconnects)
    );
    let lag = s
        .kafka
        .as_ref()
        .map(|k| format!("max lag {} messages", count(k.max_lag)));
    let _ = writeln!(
        out,
        "kafka      {}",
        lag.as_deref().unwrap_or("not measured")
    );
    let db = s.db.as_ref().map(|d| {
        let mut line = format!(
            "{} rows/s mean, {} peak",
            rate(d.mean_rows_per_s),
            rate(d.peak_rows_per_s)
        );
        if let Some(a) = &d.audit {
            let _ = write!(
                line,
                "; audit: {} missing, {} duplicates",
                count(a.missing),
                count(a.duplicates)
            );
        }
        line
    });
    let _ = writeln!(
        out,
        "database   {}",
        db.as_deref().unwrap_or("not measured")
    );

    if !s.slo.is_empty() {
        out.push('\n');
        let width = s.slo.iter().map(|v| v.name.len()).max().unwrap_or(0);
        for v in &s.slo {
            let _ = writeln!(
                out,
                "SLO  {}  {:<width$}  {}",
                verdict(v.passed),
                v.name,
                slo_line(v)
            );
        }
    }
    if let Some(h) = &s.harness {
        let _ = writeln!(out, "harness    {}", harness_line(h));
    }
    if let Some(line) = s.resources.as_ref().and_then(cost_line) {
        let _ = writeln!(out, "cost       {line}");
    }
    for note in &s.notes {
        let _ = writeln!(out, "note: {note}");
    }
    for w in &s.warnings {
        let _ = writeln!(out, "warning x{}: {}", count(w.count), w.cause_line());
    }
    let _ = writeln!(out, "\nverdict: {}", run_verdict(s));
    out
}

/// One line describing the target, e.g. `local: 3 brokers, 6 partitions, ...`.
pub(crate) fn target_line(s: &Summary) -> String {
    match &s.target.stack {
        Some(st) => format!(
            "{}: {} broker{}, {} partitions (rf {}), {} {} server{}{}, persist={}, Kafka {}",
            s.target.kind.as_str(),
            st.brokers,
            if st.brokers == 1 { "" } else { "s" },
            st.partitions,
            st.replication_factor,
            st.servers,
            st.server_impl.as_str(),
            if st.servers == 1 { "" } else { "s" },
            if st.shared_fanout_group {
                " (one shared fan-out group)"
            } else {
                ""
            },
            st.persist.as_str(),
            st.kafka_version
        ),
        None => format!("{}: {}", s.target.kind.as_str(), s.target.urls.join(", ")),
    }
}

/// `CPU s per million deliveries: harness 17.5, s1 8.1, s2 8.0, broker 1 5.2`, or `None`
/// when no figure was measured.
pub fn cost_line(r: &super::Resources) -> Option<String> {
    let per_m = r.harness_cpu_s_per_million?;
    let mut parts = vec![format!("harness {per_m:.1}")];
    for p in r.servers.iter().chain(&r.brokers) {
        if let Some(v) = p.cpu_s_per_million {
            parts.push(format!("{} {v:.1}", p.instance_id));
        }
    }
    Some(format!(
        "CPU s per million deliveries: {}",
        parts.join(", ")
    ))
}
