//! `compare.html` and its chart: the latency-percentile curves of every entry overlaid
//! on one "nines" axis, the comparison table, and where each entry came from.

use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;

use super::campaign_html::{chart, head, kv_table, table, Cell, FOOT};
use super::charts::{DrawnChart, Rendered};
use super::compare::{row, Comparison, COLUMNS};
use super::format::{count, ms};
use super::html::escape;
use super::plot::{
    area, axis_labels, line_legend, max_of, nines, nines_label, titled, top, DrawResult, NinesAxis,
    FONT, GROUP_COLORS,
};
use super::{ReportError, SkippedChart};

pub const COMPARE_LATENCY: &str = "compare-latency.png";

/// Draws the overlaid percentile curves into `dir`.
pub fn render_charts(c: &Comparison, dir: &Path) -> Result<Rendered, ReportError> {
    Ok(percentile_chart(c, dir, COMPARE_LATENCY))
}

/// The overlaid percentile curves of every entry, drawn to `dir/file`; a chart that
/// cannot be drawn (or has no data) is recorded as such.
pub(super) fn percentile_chart(c: &Comparison, dir: &Path, file: &str) -> Rendered {
    let mut out = Rendered::default();
    let has = c
        .entries
        .iter()
        .any(|e| !e.summary.latency.corrected.percentiles.is_empty());
    if !has {
        out.skipped.push(SkippedChart {
            file: file.into(),
            reason: "no entry recorded latency samples".into(),
        });
        return out;
    }
    let path = dir.join(file);
    match super::plot::draw_to_file(&path, |path| percentiles(c, path)) {
        Ok(png) => out.drawn.push(DrawnChart {
            file: file.into(),
            title: "End-to-end latency by percentile, every entry".into(),
            png,
        }),
        Err(reason) => out.failed.push(SkippedChart {
            file: file.into(),
            reason,
        }),
    }
    out
}

fn percentiles(c: &Comparison, path: &Path) -> DrawResult {
    let curves: Vec<(String, Vec<(f64, f64)>)> = c
        .entries
        .iter()
        .map(|e| {
            let s = &e.summary;
            let pts = s
                .latency
                .corrected
                .percentiles
                .iter()
                .filter(|p| p.quantile < 1.0)
                .map(|p| (nines(p.quantile), p.value_us as f64 / 1000.0))
                .collect();
            let shape = super::compare::shape(s);
            // A sweep's entries are labelled by their shape already.
            let label = if e.label == shape {
                format!("{shape}, p99 {} ms", ms(s.latency.corrected.p99_us))
            } else {
                format!(
                    "{}: {} ({shape}), p99 {} ms",
                    e.label,
                    s.scenario.name,
                    ms(s.latency.corrected.p99_us)
                )
            };
            (label, pts)
        })
        .collect();
    let x_max = max_of(curves.iter().flat_map(|c| c.1.iter().map(|p| p.0))).max(2.0) + 0.1;
    let y_top = top(
        max_of(curves.iter().flat_map(|c| c.1.iter().map(|p| p.1))),
        curves.len(),
    );
    let root = area(path);
    root.fill(&WHITE)?;
    let body = titled(
        &root,
        "End-to-end latency by percentile (corrected, measured phase)",
    )?;
    let mut chart = ChartBuilder::on(&body)
        .margin(15)
        .margin_right(40)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .build_cartesian_2d(NinesAxis::new(x_max), 0f64..y_top)?;
    let y_fmt = axis_labels(y_top, false);
    chart
        .configure_mesh()
        .x_desc("percentile (log scale of 1 / (1 - percentile))")
        .y_desc("latency (ms)")
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .x_label_formatter(&nines_label)
        .y_label_formatter(&y_fmt)
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    for (i, (label, pts)) in curves.into_iter().enumerate() {
        let color = GROUP_COLORS[i % GROUP_COLORS.len()];
        if pts.len() < 3 {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(3)))?
            .label(label)
            .legend(line_legend(color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .margin(10)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Renders the page; `charts` are inlined.
pub fn render(c: &Comparison, charts: &Rendered) -> String {
    let mut h = head("comparison – stompede");
    let _ = write!(
        h,
        "<h1>Comparison of {} runs</h1>\n<p class=\"sub\">written {} by stompede {}; relative columns are against A</p>\n",
        c.entries.len(),
        escape(&c.created_at),
        escape(&c.tool.version)
    );
    if let Some(reference) = c.entries.first() {
        let rows: Vec<(Vec<Cell>, &str)> = c
            .entries
            .iter()
            .map(|e| {
                let cells = row(e, reference)
                    .into_iter()
                    .enumerate()
                    .map(|(i, text)| {
                        (
                            text,
                            if (3..COLUMNS.len() - 1).contains(&i) {
                                "num"
                            } else {
                                ""
                            },
                        )
                    })
                    .collect();
                (cells, "")
            })
            .collect();
        let _ = write!(
            h,
            "<section><h2>Side by side</h2>\n{}</section>\n",
            table(&COLUMNS, &rows)
        );
    }
    h.push_str("<section><h2>Latency by percentile</h2>\n");
    h.push_str(&chart(COMPARE_LATENCY, &charts.drawn, &charts.skipped));
    h.push_str("</section>\n");
    for e in &c.entries {
        let s = &e.summary;
        let mut rows = vec![
            ("file", e.file.clone()),
            ("scenario", s.scenario.name.clone()),
            ("target", super::console::target_line(s)),
            ("started", s.started_at.clone()),
            (
                "users",
                format!(
                    "{} planned, {} connected",
                    count(s.sessions.planned),
                    count(s.sessions.connected)
                ),
            ),
            (
                "measured",
                format!("{} s", super::format::number(s.phases.measured_s)),
            ),
        ];
        if let Some(cap) = &e.capacity {
            rows.push(("capacity search", cap.answer.clone()));
        }
        for n in &e.notes {
            rows.push(("note", n.clone()));
        }
        let _ = write!(
            h,
            "<section><h2>{}</h2>\n{}</section>\n",
            escape(&e.label),
            kv_table(&rows)
        );
    }
    h.push_str(FOOT);
    h
}
