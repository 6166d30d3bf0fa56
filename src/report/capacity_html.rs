//! `capacity.html`: the answer, the knee's figures, why the step above it failed, every
//! step in a table, and the charts against offered load, in one self-contained file.

use std::fmt::Write;

use super::campaign_html::{chart, head, kv_table, table, Cell, FOOT};
use super::capacity::setting;
use super::capacity_charts::{CAP_DB, CAP_DELIVERED, CAP_LAG, CAP_LATENCY, CAP_RESOURCES};
use super::charts::Rendered;
use super::format::{bytes, count, ms, number, rate, seconds};
use super::html::escape;
use super::{Capacity, CapacityStep, Outcome};

/// Renders the page; `charts` are inlined.
pub fn render(c: &Capacity, charts: &Rendered) -> String {
    let mut h = head(&format!("capacity of {} – stompede", c.scenario));
    let _ = write!(
        h,
        "<h1>Capacity of <code>{}</code></h1>\n<p class=\"sub\">{} steps, {} from {} to {}; stompede {}</p>\n",
        escape(&c.scenario),
        c.steps.len(),
        seconds(c.elapsed_s.round()),
        escape(&c.started_at),
        escape(&c.finished_at),
        escape(&c.tool.version)
    );
    let class = match c.outcome {
        Outcome::Capacity | Outcome::AtLeastMax => "pass",
        Outcome::NoCapacity => "fail",
        Outcome::HarnessBound => "bound",
    };
    let _ = writeln!(
        h,
        "<section class=\"answer {class}\"><p>{}</p></section>",
        escape(&c.answer)
    );
    settings(&mut h, c);
    knee(&mut h, c);
    failure(&mut h, c);
    steps(&mut h, c);
    h.push_str("<section><h2>Charts</h2>\n<p class=\"sub\">One point per step at its offered load; hollow points are failed steps; the dashed line is the knee.</p>\n");
    for file in [CAP_LATENCY, CAP_DELIVERED, CAP_LAG, CAP_DB, CAP_RESOURCES] {
        h.push_str(&chart(file, &charts.drawn, &charts.skipped));
    }
    h.push_str("</section>\n");
    h.push_str(FOOT);
    h
}

fn settings(h: &mut String, c: &Capacity) {
    let s = &c.search;
    let target = c
        .steps
        .first()
        .map(|st| super::console::target_line(&st.summary))
        .unwrap_or_default();
    let rows = [
        ("varied", s.over.as_str().to_string()),
        ("from", number(s.from)),
        ("max", number(s.max)),
        (
            "growth, resolution",
            format!(
                "×{} per step until one fails, then bisect to {} %",
                number(s.growth),
                number(s.resolution * 100.0)
            ),
        ),
        (
            "each step",
            format!(
                "its own ramp-up and {} warm-up, then {} measured at constant load",
                seconds(s.warmup_s),
                seconds(s.step_s)
            ),
        ),
        ("confirmations", s.confirm.to_string()),
        ("scenario file", c.scenario_file.clone().unwrap_or_default()),
        ("target", target),
    ];
    let _ = write!(
        h,
        "<section><h2>Search</h2>\n{}</section>\n",
        kv_table(&rows)
    );
}

fn knee(h: &mut String, c: &Capacity) {
    let Some(k) = &c.knee else { return };
    let o = &k.offered;
    let mut rows = vec![
        (
            "offered",
            format!(
                "{} deliveries/s = {} msg/s × room members",
                rate(o.deliveries_per_s),
                number((o.messages_per_s * 1000.0).round() / 1000.0)
            ),
        ),
        (
            "users, rooms",
            format!(
                "{} users in {} rooms (largest {})",
                count(u64::from(o.users)),
                count(u64::from(o.rooms)),
                count(u64::from(o.largest_room))
            ),
        ),
        (
            "delivered (arrivals while measuring)",
            format!("{} deliveries/s", rate(k.delivered_per_s)),
        ),
        (
            "latency p50 / p99 / p99.9",
            format!("{} / {} / {} ms", ms(k.p50_us), ms(k.p99_us), ms(k.p999_us)),
        ),
        (
            "largest Kafka lag",
            k.max_kafka_lag.map_or("not sampled".into(), count),
        ),
        (
            "database rows/s (mean while sending)",
            k.db_rows_per_s.map_or("not sampled".into(), rate),
        ),
    ];
    if c.search.confirm > 0 {
        rows.push((
            "confirmations passed",
            format!("{} of {}", k.confirmed, c.search.confirm),
        ));
    }
    if let Some(st) = c.knee_step() {
        rows.push(("step report", st.dir.clone()));
    }
    let _ = write!(
        h,
        "<section><h2>The knee: step {} ({})</h2>\n{}</section>\n",
        k.step,
        escape(&setting(c.search.over, k.value, "")),
        kv_table(&rows)
    );
}

fn failure(h: &mut String, c: &Capacity) {
    let (Some(f), Some(st)) = (&c.first_failure, c.failure_step()) else {
        return;
    };
    let title = if st.verdict.harness_bound {
        "Harness-bound"
    } else {
        "First failure"
    };
    let _ = write!(
        h,
        "<section><h2>{title}: step {} ({})</h2>\n<p>Failed first: <b>{}</b> — {}. Every check of the step:</p>\n",
        f.step,
        escape(&setting(c.search.over, f.value, "")),
        escape(&f.criterion),
        escape(&f.detail)
    );
    let rows: Vec<(Vec<Cell>, &str)> = st
        .verdict
        .checks
        .iter()
        .map(|k| {
            let verdict = match (k.judged, k.passed) {
                (false, _) => ("not judged".to_string(), ""),
                (true, true) => ("pass".to_string(), "pass"),
                (true, false) => ("FAIL".to_string(), "fail"),
            };
            let row = vec![
                (k.name.clone(), ""),
                verdict,
                (k.onset_s.map_or("-".into(), |t| format!("{t:.1} s")), "num"),
                (k.detail.clone(), ""),
            ];
            let class = if f.criterion == k.name { "first" } else { "" };
            (row, class)
        })
        .collect();
    h.push_str(&table(&["check", "verdict", "showed at", "figure"], &rows));
    h.push_str("<p class=\"note\">\"Showed at\" is the time into the measured phase when the per-second timeline first crossed the limit; the check that showed first is named as the cause.</p>\n</section>\n");
}

fn steps(h: &mut String, c: &Capacity) {
    let head = [
        "step",
        "phase",
        c.search.over.as_str(),
        "offered msg/s",
        "offered deliv/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "lag gained",
        "DB rows/s",
        "server CPU s",
        "server peak RSS",
        "verdict",
    ];
    let knee_step = c.knee.as_ref().map(|k| k.step);
    let fail_step = c.first_failure.as_ref().map(|f| f.step);
    let rows: Vec<(Vec<Cell>, &str)> = c
        .steps
        .iter()
        .map(|st| {
            let class = if Some(st.index) == knee_step {
                "knee"
            } else if Some(st.index) == fail_step {
                "first"
            } else {
                ""
            };
            (step_cells(c, st), class)
        })
        .collect();
    let _ = write!(
        h,
        "<section><h2>Steps</h2>\n{}<p class=\"note\">Step reports, relative to this file:</p>\n<ul>\n",
        table(&head, &rows)
    );
    for st in &c.steps {
        let link = format!("{}/report.html", st.dir);
        let _ = writeln!(
            h,
            "<li>step {}: <a href=\"{}\">{}</a></li>",
            st.index,
            escape(&link),
            escape(&link)
        );
    }
    h.push_str("</ul>\n</section>\n");
}

fn step_cells(c: &Capacity, st: &CapacityStep) -> Vec<Cell> {
    let s = &st.summary;
    let lat = &s.latency.corrected;
    let figure = |name: &str| st.verdict.checks.iter().find(|k| k.name == name);
    let delivered = figure("delivered").map_or(s.throughput.delivered_per_s, |k| k.measured);
    let lag = figure("kafka_lag_growth")
        .filter(|k| k.judged)
        .map_or("-".into(), |k| number(k.measured.round()));
    let servers = s.resources.as_ref().map(|r| &r.servers);
    let cpu: Option<f64> = servers.and_then(|v| v.iter().map(|r| r.cpu_s).sum());
    let rss = servers.and_then(|v| v.iter().map(|r| r.peak_rss_bytes).max());
    let value = match c.search.over {
        super::Over::Rate => number(st.value),
        super::Over::Users => count(st.value.round() as u64),
    };
    let verdict = if st.verdict.harness_bound {
        "HARNESS-BOUND".to_string()
    } else {
        st.verdict
            .first_failed
            .as_ref()
            .map_or("PASS".to_string(), |name| format!("FAIL: {name}"))
    };
    let class = if st.verdict.passed { "pass" } else { "fail" };
    vec![
        (st.index.to_string(), ""),
        (st.phase.as_str().to_string(), ""),
        (value, "num"),
        (
            number((st.offered.messages_per_s * 1000.0).round() / 1000.0),
            "num",
        ),
        (rate(st.offered.deliveries_per_s), "num"),
        (rate(delivered), "num"),
        (ms(lat.p50_us), "num"),
        (ms(lat.p99_us), "num"),
        (ms(lat.p999_us), "num"),
        (lag, "num"),
        (
            s.db.as_ref()
                .map_or("-".into(), |d| rate(d.mean_rows_per_s)),
            "num",
        ),
        (cpu.map_or("-".into(), |v| format!("{v:.1}")), "num"),
        (rss.map_or("-".into(), bytes), "num"),
        (verdict, class),
    ]
}
