//! The compact table printed to the terminal when a run ends.
//!
//! Plain ASCII, fixed-width columns, no colour codes, so it reads the same in a
//! terminal, a CI log and a pasted issue.

use std::fmt::Write;

use super::format::{
    count, count_opt, counted, harness_line, millis, ms, one_line, percent, rate, run_verdict,
    seconds, secs, slo_line, verdict,
};
use super::{FaultReport, FaultsSummary, LatencyStats, Others, Summary};

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
    for line in shard_lines(s) {
        let _ = writeln!(out, "{line}");
    }
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
    if let Some(f) = &s.faults {
        out.push('\n');
        for line in fault_lines(f) {
            let _ = writeln!(out, "{line}");
        }
    }

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

/// A sharded run's shards, one line each (none for a run in one process).
pub fn shard_lines(s: &Summary) -> Vec<String> {
    let Some(shards) = &s.shards else {
        return Vec::new();
    };
    let mut out = vec![format!("shards     {}", shards.len())];
    for x in shards {
        let mut line = format!(
            "  shard {:<3} {}{}  users {}  connected {}  sent {}  delivered {}  cpu {}  peak rss {}",
            x.shard,
            if x.host.is_empty() { "?" } else { &x.host },
            x.source.as_ref().map_or(String::new(), |a| format!(" from {a}")),
            count(x.users),
            count(x.connected),
            count(x.sent),
            count(x.delivered),
            x.cpu_s.map_or("-".into(), |c| format!("{c:.2} s")),
            super::format::bytes(x.peak_rss_bytes)
        );
        if let Some(why) = &x.lost {
            let _ = write!(line, "  LOST: {why}");
        }
        out.push(line);
    }
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

/// The faults block of the console table: one line per fault ([`fault_line`]), then the
/// durability line and the line on disconnected users and where the loss fell.
pub fn fault_lines(f: &FaultsSummary) -> Vec<String> {
    let mut lines: Vec<String> = f.injected.iter().map(fault_line).collect();
    lines.push(durability_line(f));
    lines.push(disconnected_line(f));
    lines
}

/// One fault on one line, e.g. `fault 2 kill-server s2 at 45.1 s: users of s2 (1,000):
/// outage 1.42 s, first delivery +1.43 s, p99 back +3 s; reconnected 1,000/1,000 (p50
/// 1.21 s, p99 1.89 s, max 2.34 s); 12 send failures, 0 receipt timeouts`. A failed
/// injection says `FAILED:` and why; target and error are cut to one short line.
pub fn fault_line(f: &FaultReport) -> String {
    let mut l = format!("fault {} {} {}", f.index, f.kind, one_line(&f.target, 80));
    let Some(at) = f.at_s else {
        let _ = write!(
            l,
            ": not injected (planned {} after sending started; the run ended first)",
            secs(f.planned_s)
        );
        return l;
    };
    let _ = write!(l, " at {at:.1} s");
    if let Some(end) = f.end_s {
        let _ = write!(l, " until {end:.1} s");
    }
    if !f.ok {
        let why = f.error.as_deref().unwrap_or("no reason given");
        let _ = write!(l, ": FAILED: {}", one_line(why, 160));
        return l;
    }
    let _ = write!(l, ": {} ({})", f.affected, count(f.affected_users));
    match &f.outage {
        Some(o) if o.recovered => {
            let _ = write!(
                l,
                ": outage {}, first delivery +{}",
                secs(o.length_s),
                secs(o.first_delivery_after_s)
            );
        }
        Some(o) => {
            let _ = write!(
                l,
                ": outage {}, NO delivery before sending ended",
                secs(o.length_s)
            );
        }
        None => l.push_str(": no outage"),
    }
    match (f.p99_before_ms, f.p99_recovered_s) {
        (Some(_), Some(r)) => {
            let _ = write!(l, ", p99 back +{}", secs(r));
        }
        (Some(_), None) => l.push_str(", p99 not back by the end"),
        (None, _) => {}
    }
    if f.disconnected > 0 {
        let _ = write!(
            l,
            "; reconnected {}/{}",
            count(f.reconnected),
            count(f.disconnected)
        );
        if let Some(r) = &f.reconnect_ms {
            let _ = write!(
                l,
                " (p50 {}, p99 {}, max {})",
                millis(r.p50_ms),
                millis(r.p99_ms),
                millis(r.max_ms)
            );
        }
    }
    let _ = write!(
        l,
        "; {}, {}",
        counted(f.send_failures, "send failure", "send failures"),
        counted(f.receipt_timeouts, "receipt timeout", "receipt timeouts")
    );
    if let Some(ms) = f.receipt_max_ms {
        let _ = write!(l, ", longest receipt wait {}", millis(ms));
    }
    if let Some(n) = f.lost_in_window.filter(|&n| n > 0) {
        let _ = write!(l, "; {} lost in its window", count(n));
    }
    if let Some(o) = &f.others {
        let _ = write!(l, "; {}: {}", o.who, others_p99(o));
    }
    l
}

/// `p99 9.4 ms before, 13.1 ms during` (a dash for a figure not measured).
pub fn others_p99(o: &Others) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), millis);
    format!(
        "p99 {} before, {} during",
        ms(o.p99_before_ms),
        ms(o.p99_during_ms)
    )
}

/// `durability: 12,345 receipted, 0 lost, 0 missing in the database`, with a FAIL when a
/// receipted message is lost or missing.
pub fn durability_line(f: &FaultsSummary) -> String {
    let d = &f.durability;
    let mut l = format!(
        "durability: {} receipted, {} lost, ",
        count(d.receipted),
        count(d.receipted_lost)
    );
    match d.receipted_missing_in_db {
        Some(n) => {
            let _ = write!(l, "{} missing in the database", count(n));
        }
        None => l.push_str("database not audited"),
    }
    if d.receipted_lost > 0 || d.receipted_missing_in_db.is_some_and(|n| n > 0) {
        l.push_str(" -- FAIL: every receipted message must arrive and be stored");
    }
    l
}

/// What disconnected users missed (not loss), and the loss inside and outside the
/// faults' windows.
pub fn disconnected_line(f: &FaultsSummary) -> String {
    let mut l = format!(
        "while disconnected: {} deliveries missed, {} sends skipped (not loss); ",
        count(f.missed_while_disconnected),
        count(f.unsent_while_disconnected)
    );
    match (f.lost_in_fault_windows, f.lost_outside_fault_windows) {
        (Some(inside), Some(outside)) => {
            let _ = write!(
                l,
                "lost {} inside fault windows, {} outside",
                count(inside),
                count(outside)
            );
        }
        _ => l.push_str("loss inside and outside fault windows not known"),
    }
    l
}
