//! The self-contained `report.html`.
//!
//! One file that can be mailed or attached to a CI run: inline CSS, charts inlined as
//! base64 `data:` URIs, no scripts and no external assets. Every piece of text taken
//! from the summary goes through [`escape`].

use std::fmt::Write;

use base64::Engine;

use super::charts::{
    DrawnChart, DB_ROWS, KAFKA_LAG, LATENCY_OVER_TIME, LATENCY_PERCENTILES, THROUGHPUT_OVER_TIME,
};
use super::console::target_line;
use super::format::{bytes, count, count_opt, ms, number, percent, rate, seconds, verdict};
use super::{LatencyStats, SkippedChart, Summary};

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
body { font: 15px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; color: #222; margin: 0; background: #f4f5f7; }
main { max-width: 1060px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 1.6em; margin: 0.6em 0 0.2em; }
h2 { font-size: 1.25em; margin: 0 0 0.6em; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 16px 20px; margin: 16px 0; }
.sub { color: #555; margin: 0; }
.verdict { border-width: 2px; }
.verdict.pass { border-color: #2c9f45; background: #eef8f0; }
.verdict.fail { border-color: #c62828; background: #fdecec; }
.verdict h2 { font-size: 1.8em; letter-spacing: 0.05em; }
.pass .badge, td.pass { color: #1e7b34; font-weight: bold; }
.fail .badge, td.fail { color: #b71c1c; font-weight: bold; }
table { border-collapse: collapse; margin: 0.4em 0 0.8em; }
th, td { padding: 4px 12px; border-bottom: 1px solid #e3e6ea; text-align: left; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { background: none; font-weight: normal; color: #555; }
figure { margin: 12px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e6ea; }
figcaption { color: #555; font-size: 0.9em; }
.note { color: #555; font-style: italic; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 13px; }
.grid { display: flex; flex-wrap: wrap; gap: 0 32px; }
.wide { overflow-x: auto; }
table.faults { font-size: 0.85em; }
table.faults th, table.faults td { padding: 4px 6px; }
table.faults td.num, table.faults code { white-space: nowrap; }
table.faults small { color: #555; }
"#;

/// Renders the HTML report. `charts` are inlined; `skipped` are explained where the
/// chart would have been.
pub fn render(s: &Summary, charts: &[DrawnChart], skipped: &[SkippedChart]) -> String {
    let mut h = String::with_capacity(
        64 * 1024 + charts.iter().map(|c| c.png.len() * 4 / 3).sum::<usize>(),
    );
    let chart = |file: &str| chart_html(file, charts, skipped);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} – stompede {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        escape(&s.scenario.name),
        verdict(s.passed)
    );
    let _ = write!(
        h,
        "<h1>stompede report: {}</h1>\n<p class=\"sub\">run <code>{}</code> · {} to {} · target {}</p>\n",
        escape(&s.scenario.name),
        escape(&s.run_id),
        escape(&s.started_at),
        escape(&s.finished_at),
        escape(&target_line(s))
    );

    // Verdict banner.
    let class = if s.passed { "pass" } else { "fail" };
    let _ = write!(
        h,
        "<section class=\"verdict {class}\">\n<h2><span class=\"badge\">{}</span></h2>\n",
        super::format::run_verdict(s)
    );
    if s.slo.is_empty() {
        h.push_str("<p class=\"note\">The scenario defines no SLOs.</p>\n");
    } else {
        let rows = s.slo.iter().map(|v| {
            let unit = escape(&v.unit);
            let c = if v.passed { "pass" } else { "fail" };
            format!(
                "<tr><td><code>{}</code></td><td class=\"num\">{} {unit}</td><td>{}</td><td class=\"num\">{} {unit}</td><td class=\"{c}\">{}</td></tr>",
                escape(&v.name),
                escape(&number(v.measured)),
                escape(v.bound.symbol()),
                escape(&number(v.limit)),
                verdict(v.passed)
            )
        });
        let _ = write!(
            h,
            "<table><tr><th>SLO</th><th class=\"num\">measured</th><th></th><th class=\"num\">limit</th><th>result</th></tr>\n{}</table>\n",
            rows.collect::<Vec<_>>().join("\n")
        );
    }
    h.push_str("</section>\n");
    scenario_and_target(&mut h, s);

    // Latency.
    h.push_str("<section>\n<h2>Latency</h2>\n<p class=\"sub\">End-to-end per recipient over the measured phase, in milliseconds. \
        <em>Corrected</em> counts from the intended send time (open model), <em>raw</em> from the actual send.</p>\n");
    let mut lat_rows = vec![
        lat_row("corrected", &s.latency.corrected),
        lat_row("raw", &s.latency.raw),
    ];
    if let Some(r) = &s.latency.receipt {
        lat_rows.push(lat_row("send to RECEIPT", r));
    }
    h.push_str(&table(
        &[
            "", "min", "mean", "p50", "p90", "p99", "p99.9", "max", "samples",
        ],
        &lat_rows,
    ));
    h.push_str(&chart(LATENCY_PERCENTILES));
    h.push_str(&chart(LATENCY_OVER_TIME));
    h.push_str("</section>\n");

    // Throughput and integrity.
    let t = &s.throughput;
    let i = &s.integrity;
    h.push_str("<section>\n<h2>Throughput and delivery integrity</h2>\n<div class=\"grid\">\n");
    h.push_str(&kv_table(&[
        (
            "sent",
            format!("{} ({}/s)", count(t.sent), rate(t.sent_per_s)),
        ),
        (
            "delivered",
            format!("{} ({}/s)", count(t.delivered), rate(t.delivered_per_s)),
        ),
        ("receipts", count_opt(t.receipts)),
    ]));
    h.push_str(&kv_table(&[
        ("expected deliveries", count(i.expected)),
        (
            "lost",
            format!("{} ({})", count(i.lost), percent(i.loss_ratio)),
        ),
        ("duplicated", count(i.duplicated)),
        ("out of order", count(i.out_of_order)),
    ]));
    h.push_str("</div>\n");
    h.push_str(&chart(THROUGHPUT_OVER_TIME));
    h.push_str("</section>\n");
    h.push_str(&super::faults_html::section(s));

    // Sessions.
    let ss = &s.sessions;
    h.push_str("<section>\n<h2>Sessions</h2>\n");
    h.push_str(&kv_table(&[
        (
            "connected / planned",
            format!("{} / {}", count(ss.connected), count(ss.planned)),
        ),
        ("peak concurrent", count(ss.peak)),
        ("connect errors", count(ss.connect_errors)),
        ("STOMP ERROR frames", count(ss.errors)),
        ("disconnects by the server", count(ss.disconnects)),
    ]));
    h.push_str("</section>\n");
    shards(&mut h, s);

    // Kafka.
    h.push_str("<section>\n<h2>Kafka consumer lag</h2>\n");
    match &s.kafka {
        Some(k) => {
            let _ = writeln!(
                h,
                "<p>Largest lag of any group: <strong>{}</strong> messages.</p>",
                count(k.max_lag)
            );
            let rows: Vec<Vec<String>> = k
                .groups
                .iter()
                .map(|g| {
                    vec![
                        g.group.clone(),
                        count(g.max_lag),
                        count(g.final_lag),
                        count(g.samples.len() as u64),
                    ]
                })
                .collect();
            h.push_str(&table(
                &["consumer group", "max lag", "final lag", "samples"],
                &rows,
            ));
        }
        None => h.push_str("<p class=\"note\">Not measured for this target.</p>\n"),
    }
    h.push_str(&chart(KAFKA_LAG));
    h.push_str("</section>\n");

    // Database.
    h.push_str("<section>\n<h2>Database</h2>\n");
    match &s.db {
        Some(d) => {
            let mut rows = vec![
                ("mean rows/s", rate(d.mean_rows_per_s)),
                ("peak rows/s", rate(d.peak_rows_per_s)),
            ];
            if let Some(a) = &d.audit {
                rows.extend([
                    ("rows for this run", count(a.rows_for_run)),
                    ("messages sent (whole run)", count(a.sent)),
                    ("messages receipted", count_opt(a.receipted)),
                    ("missing rows", count(a.missing)),
                    ("duplicate rows", count(a.duplicates)),
                ]);
            }
            h.push_str(&kv_table(&rows));
        }
        None => h.push_str("<p class=\"note\">Not measured for this target.</p>\n"),
    }
    h.push_str(&chart(DB_ROWS));
    h.push_str("</section>\n");

    environment(&mut h, s);

    if !s.warnings.is_empty() {
        h.push_str("<section>\n<h2>Warnings</h2>\n");
        let rows: Vec<Vec<String>> = s
            .warnings
            .iter()
            .map(|w| {
                vec![
                    w.cause.clone(),
                    w.count.to_string(),
                    format!("{:.1} s {}", w.first_t_s, w.first),
                ]
            })
            .collect();
        h.push_str(&table(&["warning", "count", "first"], &rows));
        h.push_str(
            "<p class=\"note\">Every occurrence is in <code>run.log</code>.</p>\n</section>\n",
        );
    }
    if !s.notes.is_empty() {
        h.push_str("<section>\n<h2>Notes</h2>\n<ul>\n");
        for n in &s.notes {
            let _ = writeln!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>\n</section>\n");
    }
    let _ = write!(
        h,
        "<p class=\"sub\">Written by {} {} · schema version {} · data in <code>summary.json</code></p>\n</main>\n</body>\n</html>\n",
        escape(&s.tool.name),
        escape(&s.tool.version),
        s.schema_version
    );
    h
}

/// A sharded run's shards: who ran which users, what each measured and cost.
fn shards(h: &mut String, s: &Summary) {
    let Some(shards) = &s.shards else {
        return;
    };
    h.push_str("<section>\n<h2>Shards</h2>\n<p class=\"sub\">The run's users were spread over these worker processes; \
their histograms were merged exactly and integrity was settled over all of their records. A lost shard fails the run.</p>\n");
    let rows: Vec<Vec<String>> = shards
        .iter()
        .map(|x| {
            vec![
                x.shard.to_string(),
                x.host.clone(),
                x.source.clone().unwrap_or_else(|| "-".into()),
                count(x.users),
                count(x.connected),
                count(x.sent),
                count(x.delivered),
                count(x.timed),
                x.cpu_s.map_or("-".into(), |c| format!("{c:.2} s")),
                bytes(x.peak_rss_bytes),
                x.lost
                    .as_deref()
                    .map_or("finished".into(), |why| format!("LOST: {why}")),
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "shard",
            "host",
            "source",
            "users",
            "connected",
            "sent",
            "delivered",
            "timed",
            "CPU",
            "peak RSS",
            "state",
        ],
        &rows,
    ));
    h.push_str("</section>\n");
}

fn scenario_and_target(h: &mut String, s: &Summary) {
    let sc = &s.scenario;
    let p = &s.phases;
    h.push_str("<section>\n<h2>Scenario and target</h2>\n<div class=\"grid\">\n");
    h.push_str(&kv_table(&[
        ("scenario", sc.name.clone()),
        ("file", sc.file.clone().unwrap_or_else(|| "-".into())),
        (
            "description",
            sc.description.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "phases",
            format!(
                "ramp-up {}, warm-up {}, measured {}, grace {}",
                seconds(p.ramp_s),
                seconds(p.warmup_s),
                seconds(p.measured_s),
                seconds(p.grace_s)
            ),
        ),
    ]));
    let mut target = vec![
        ("target", s.target.kind.as_str().to_string()),
        ("URLs", s.target.urls.join("\n")),
    ];
    if let Some(st) = &s.target.stack {
        target.extend([
            ("brokers", st.brokers.to_string()),
            ("partitions", st.partitions.to_string()),
            ("replication factor", st.replication_factor.to_string()),
            ("server instances", st.servers.to_string()),
            (
                "server implementation",
                if st.shared_fanout_group {
                    format!("{} (one shared fan-out group)", st.server_impl.as_str())
                } else {
                    st.server_impl.as_str().to_string()
                },
            ),
            ("persistence", st.persist.as_str().to_string()),
            ("Kafka version", st.kafka_version.clone()),
            ("topic", st.topic.clone()),
        ]);
    }
    h.push_str(&kv_table(&target));
    h.push_str("</div>\n");
    let definition = serde_json::to_string_pretty(&sc.definition).unwrap_or_else(|e| e.to_string());
    let _ = write!(
        h,
        "<details><summary>Scenario definition</summary>\n<pre>{}</pre>\n</details>\n</section>\n",
        escape(&definition)
    );
}

fn environment(h: &mut String, s: &Summary) {
    let e = &s.environment;
    h.push_str("<section>\n<h2>Environment</h2>\n<div class=\"grid\">\n");
    h.push_str(&kv_table(&[
        ("host", e.hostname.clone()),
        ("OS", e.os.clone()),
        ("CPUs", e.cpus.to_string()),
        ("memory", bytes(e.memory_bytes)),
        ("stompede", e.stompede_version.clone()),
        ("rustc", e.rustc.clone().unwrap_or_else(|| "-".into())),
    ]));
    if let Some(r) = &s.resources {
        let cpu = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.1}"));
        let mut rows = vec![vec![
            "harness".to_string(),
            bytes(r.harness_peak_rss_bytes),
            cpu(r.harness_cpu_s),
            cpu(r.harness_cpu_s_per_million),
        ]];
        rows.extend(r.servers.iter().chain(&r.brokers).map(|sv| {
            vec![
                sv.instance_id.clone(),
                bytes(sv.peak_rss_bytes),
                cpu(sv.cpu_s),
                cpu(sv.cpu_s_per_million),
            ]
        }));
        h.push_str("<div>\n");
        h.push_str(&table(
            &[
                "process",
                "peak RSS",
                "CPU s",
                "CPU s per million deliveries",
            ],
            &rows,
        ));
        if let Some(n) = r.deliveries {
            let _ = writeln!(
                h,
                "<p class=\"note\">per million of the run's {} deliveries (ramp-up and grace included, as the CPU figures are)</p>",
                super::format::count(n)
            );
        }
        let basis = r
            .basis
            .as_deref()
            .unwrap_or("peak RSS over each process's lifetime (an older summary)");
        let _ = writeln!(h, "<p class=\"note\">{}</p>", escape(basis));
        if let Some(hl) = &s.harness {
            let _ = writeln!(
                h,
                "<p class=\"note\">harness: {}</p>",
                escape(&super::format::harness_line(hl))
            );
        }
        h.push_str("</div>\n");
    }
    h.push_str("</div>\n");
    let mut files = vec![("summary", "summary.json".to_string())];
    if let Some(log) = &s.files.histogram_log {
        files.push(("histogram log", log.clone()));
    }
    if !s.files.charts.is_empty() {
        files.push(("charts", s.files.charts.join(", ")));
    }
    h.push_str(&kv_table(&files));
    h.push_str("</section>\n");
}

fn lat_row(name: &str, l: &LatencyStats) -> Vec<String> {
    vec![
        name.to_string(),
        ms(l.min_us),
        format!("{:.2}", l.mean_us / 1000.0),
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        count(l.count),
    ]
}

/// A table with a header row; every column after the first is numeric.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = String::from("<table>\n<tr>");
    for (i, c) in head.iter().enumerate() {
        let class = if i > 0 { " class=\"num\"" } else { "" };
        let _ = write!(t, "<th{class}>{}</th>", escape(c));
    }
    t.push_str("</tr>\n");
    for row in rows {
        t.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            let class = if i > 0 { " class=\"num\"" } else { "" };
            let _ = write!(t, "<td{class}>{}</td>", escape(c));
        }
        t.push_str("</tr>\n");
    }
    t.push_str("</table>\n");
    t
}

/// A two-column label/value table; newlines in values become line breaks.
fn kv_table(rows: &[(&str, String)]) -> String {
    let mut t = String::from("<table class=\"kv\">\n");
    for (k, v) in rows {
        let _ = writeln!(
            t,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(v).replace('\n', "<br>")
        );
    }
    t.push_str("</table>\n");
    t
}

fn chart_html(file: &str, charts: &[DrawnChart], skipped: &[SkippedChart]) -> String {
    if let Some(c) = charts.iter().find(|c| c.file == file) {
        let data = base64::engine::general_purpose::STANDARD.encode(&c.png);
        return format!(
            "<figure><img src=\"data:image/png;base64,{data}\" alt=\"{}\" width=\"1000\" height=\"500\">\
             <figcaption>{} (<code>{}</code>)</figcaption></figure>\n",
            escape(&c.title),
            escape(&c.title),
            escape(&c.file)
        );
    }
    match skipped.iter().find(|s| s.file == file) {
        Some(s) => format!(
            "<p class=\"note\">No chart <code>{}</code>: {}.</p>\n",
            escape(&s.file),
            escape(&s.reason)
        ),
        None => String::new(),
    }
}
