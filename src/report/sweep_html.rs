//! `sweep.html` and its charts: the table (a row per cell, the median of its repeats
//! with their range, the best cell of each column highlighted), the latency-percentile
//! curves of every cell overlaid (each cell's run with the median p99), and bars per
//! cell (p99, and capacity with `--capacity`) whose whiskers span the repeats.

use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;

use super::campaign_html::{chart, head, kv_table, FOOT};
use super::charts::{DrawnChart, Rendered};
use super::compare::{Comparison, ComparisonEntry, Source, COMPARISON_SCHEMA_VERSION};
use super::html::escape;
use super::plot::{area, axis_labels, max_of, titled, top, DrawResult, FONT, GROUP_COLORS};
use super::sweep::{best_cells, columns, row, Column, Spread, Sweep, LEAD, TAIL};
use super::{ReportError, SkippedChart, Summary};

pub const SWEEP_LATENCY: &str = "sweep-latency.png";
pub const SWEEP_P99: &str = "sweep-p99.png";
pub const SWEEP_CAPACITY: &str = "sweep-capacity.png";

/// Each cell's run whose p99 is nearest the cell's median p99.
fn representative(sweep: &Sweep) -> Vec<(String, &Summary)> {
    sweep
        .cells
        .iter()
        .filter_map(|c| {
            let runs: Vec<&Summary> = c.runs.iter().filter_map(|r| r.summary.as_ref()).collect();
            let median = Spread::of(
                runs.iter()
                    .map(|s| s.latency.corrected.p99_us as f64)
                    .collect(),
            )?
            .median;
            let pick = runs.into_iter().min_by(|a, b| {
                let d = |s: &Summary| (s.latency.corrected.p99_us as f64 - median).abs();
                d(a).total_cmp(&d(b))
            })?;
            Some((c.label.clone(), pick))
        })
        .collect()
}

/// The sweep as a comparison of its cells (each cell's representative run), the form
/// `stompede compare` reads a `sweep.json` in.
pub fn as_comparison(sweep: &Sweep, file: &str) -> Comparison {
    let entries = representative(sweep)
        .into_iter()
        .map(|(label, s)| ComparisonEntry {
            file: file.to_string(),
            source: Source::Run,
            notes: vec![format!(
                "cell {label} of a sweep of {} (its run with the median p99)",
                sweep.scenario
            )],
            capacity: None,
            summary: s.clone(),
            label,
        })
        .collect();
    Comparison {
        schema_version: COMPARISON_SCHEMA_VERSION,
        kind: "comparison".into(),
        tool: sweep.tool.clone(),
        created_at: sweep.started_at.clone(),
        entries,
    }
}

/// Draws every chart the sweep has data for into `dir`.
pub fn render_charts(sweep: &Sweep, dir: &Path) -> Result<Rendered, ReportError> {
    let mut out = super::compare_html::percentile_chart(
        &as_comparison(sweep, super::sweep::SWEEP_FILE),
        dir,
        SWEEP_LATENCY,
    );
    let cols = columns(sweep.capacity);
    let mut bars: Vec<(&str, &str, &Column)> = Vec::new();
    if let Some(c) = cols.iter().find(|c| c.title == "p99 ms") {
        bars.push((SWEEP_P99, "p99 latency per cell (ms)", c));
    }
    if sweep.capacity {
        if let Some(c) = cols.iter().find(|c| c.title == "capacity deliv/s") {
            bars.push((
                SWEEP_CAPACITY,
                "Capacity per cell (deliveries/s at the knee)",
                c,
            ));
        }
    }
    for (file, title, col) in bars {
        // Bars are narrow: `1b/3p/2s`, with the strategy only when the cells differ in it.
        let one_persist = sweep
            .cells
            .iter()
            .all(|c| c.requested.persist == sweep.cells[0].requested.persist);
        let values: Vec<(String, Option<Spread>)> = sweep
            .cells
            .iter()
            .map(|c| {
                let r = &c.requested;
                let label = if one_persist {
                    format!("{}b/{}p/{}s", r.brokers, r.partitions, r.servers)
                } else {
                    c.label.clone()
                };
                (label, col.spread(c))
            })
            .collect();
        if values.iter().all(|v| v.1.is_none()) {
            out.skipped.push(SkippedChart {
                file: file.into(),
                reason: "no cell has this figure".into(),
            });
            continue;
        }
        let scale = if col.title.ends_with("ms") { 1e-3 } else { 1.0 };
        let path = dir.join(file);
        match super::plot::draw_to_file(&path, |path| bar_chart(&values, scale, title, path)) {
            Ok(png) => out.drawn.push(DrawnChart {
                file: file.into(),
                title: format!("{title}; whiskers span the repeats"),
                png,
            }),
            Err(reason) => out.failed.push(SkippedChart {
                file: file.into(),
                reason,
            }),
        }
    }
    Ok(out)
}

/// One bar per cell at its median, a whisker from its lowest to its highest repeat.
fn bar_chart(
    values: &[(String, Option<Spread>)],
    scale: f64,
    title: &str,
    path: &Path,
) -> DrawResult {
    let n = values.len() as i32;
    let y_top = top(
        max_of(values.iter().filter_map(|v| v.1.map(|s| s.max * scale))),
        0,
    );
    let root = area(path);
    root.fill(&WHITE)?;
    let body = titled(&root, title)?;
    let mut chart = ChartBuilder::on(&body)
        .margin(15)
        .margin_right(40)
        .x_label_area_size(60)
        .y_label_area_size(85)
        // An integer range holds both ends: 0..n-1 makes n segments (one at least twice
        // as wide when there is a single cell).
        .build_cartesian_2d((0..(n - 1).max(1)).into_segmented(), 0f64..y_top)?;
    let y_fmt = axis_labels(y_top, false);
    let labels: Vec<String> = values.iter().map(|v| v.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(values.len())
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&y_fmt)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, if values.len() > 6 { 12 } else { 14 }))
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    for (i, (_, spread)) in values.iter().enumerate() {
        let Some(s) = spread else { continue };
        let i = i as i32;
        let color = GROUP_COLORS[i as usize % GROUP_COLORS.len()];
        chart.draw_series(std::iter::once(Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), s.median * scale),
            ],
            color.mix(0.75).filled(),
        )))?;
        if s.max > s.min {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![
                    (SegmentValue::CenterOf(i), s.min * scale),
                    (SegmentValue::CenterOf(i), s.max * scale),
                ],
                BLACK.stroke_width(2),
            )))?;
        }
    }
    root.present()?;
    Ok(())
}

/// Renders the page; `charts` are inlined.
pub fn render(s: &Sweep, charts: &Rendered) -> String {
    let mut h = head(&format!("sweep {} – stompede", s.scenario));
    let axes: Vec<String> = s
        .axes
        .iter()
        .map(|a| format!("{}={}", a.name, a.values.join(",")))
        .collect();
    let _ = write!(
        h,
        "<h1>Sweep of {}: {}</h1>\n<p class=\"sub\">{} cells × {} repeat{}{}, started {} by stompede {}; \
         figures are the median of the repeats, (lowest–highest) when they differ; the best cell of each column is highlighted</p>\n",
        escape(&s.scenario),
        escape(&axes.join(" × ")),
        s.cells.len(),
        s.repeat,
        if s.repeat == 1 { "" } else { "s" },
        if s.capacity { ", each a capacity search" } else { "" },
        escape(&s.started_at),
        escape(&s.tool.version)
    );
    if let Some(why) = &s.stopped {
        let _ = writeln!(
            h,
            "<section class=\"answer fail\">The sweep stopped early: {}</section>",
            escape(why)
        );
    }
    let cols = columns(s.capacity);
    let best = best_cells(s, &cols);
    let mut t = String::from("<table>\n<tr>");
    for title in LEAD {
        let _ = write!(t, "<th>{}</th>", escape(title));
    }
    for c in &cols {
        let _ = write!(t, "<th class=\"num\">{}</th>", escape(c.title));
    }
    for title in TAIL {
        let _ = write!(t, "<th>{}</th>", escape(title));
    }
    t.push_str("</tr>\n");
    for (i, cell) in s.cells.iter().enumerate() {
        let cells = row(cell, &cols);
        t.push_str("<tr>");
        for (j, text) in cells.iter().enumerate() {
            let numeric = j >= LEAD.len() && j < LEAD.len() + cols.len();
            let is_best = numeric && best[j - LEAD.len()] == Some(i);
            let class = match (numeric, is_best) {
                (true, true) => " class=\"num best\"",
                (true, false) => " class=\"num\"",
                _ => "",
            };
            let _ = write!(t, "<td{class}>{}</td>", escape(text));
        }
        t.push_str("</tr>\n");
    }
    t.push_str("</table>\n");
    let _ = write!(
        h,
        "<style>td.best {{ background: #e3f4e6; font-weight: bold; }}</style>\n<section><h2>Cells</h2>\n{t}</section>\n"
    );
    h.push_str("<section><h2>Latency by percentile</h2>\n");
    h.push_str(&chart(SWEEP_LATENCY, &charts.drawn, &charts.skipped));
    h.push_str("</section>\n<section><h2>p99 per cell</h2>\n");
    h.push_str(&chart(SWEEP_P99, &charts.drawn, &charts.skipped));
    h.push_str("</section>\n");
    if s.capacity {
        h.push_str("<section><h2>Capacity per cell</h2>\n");
        h.push_str(&chart(SWEEP_CAPACITY, &charts.drawn, &charts.skipped));
        h.push_str("</section>\n");
    }
    for f in &charts.failed {
        let _ = writeln!(
            h,
            "<p class=\"note\">Chart <code>{}</code> could not be drawn: {}.</p>",
            escape(&f.file),
            escape(&f.reason)
        );
    }
    let order: Vec<String> = s
        .order
        .iter()
        .filter_map(|e| {
            s.cells
                .get(e.cell)
                .map(|c| format!("{} #{}", c.label, e.repeat))
        })
        .collect();
    let _ = write!(
        h,
        "<section><h2>How it ran</h2>\n{}</section>\n",
        kv_table(&[
            ("scenario file", s.scenario_file.clone()),
            ("order", order.join(" → ")),
            (
                "order seed",
                if s.repeat > 1 {
                    s.seed.to_string()
                } else {
                    "- (one repeat: cells in matrix order, brokers changing least often)".into()
                }
            ),
            ("elapsed", format!("{:.0} s", s.elapsed_s)),
        ])
    );
    for cell in &s.cells {
        let mut rows: Vec<(&str, String)> = Vec::new();
        for r in &cell.runs {
            let o = &r.observed;
            let servers: Vec<String> = o
                .servers
                .iter()
                .map(|sv| {
                    format!(
                        "{} ({}, topic {}) {}",
                        sv.instance, sv.persist, sv.topic, sv.url
                    )
                })
                .collect();
            rows.push((
                "run",
                format!(
                    "#{}: {}; brokers {:?}, {} partitions, RF {}, min ISR {}; {}; report {}{}",
                    r.repeat,
                    r.reshape,
                    o.broker_ids,
                    o.partitions,
                    o.replication_factor,
                    o.min_insync_replicas,
                    servers.join(", "),
                    r.dir,
                    r.error
                        .as_ref()
                        .map(|e| format!("; could not run: {e}"))
                        .unwrap_or_default()
                ),
            ));
        }
        let _ = write!(
            h,
            "<section><h2>{}</h2>\n{}</section>\n",
            escape(&cell.label),
            kv_table(&rows)
        );
    }
    h.push_str(FOOT);
    h
}
