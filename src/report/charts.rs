//! PNG charts of a [`Summary`], drawn with plotters.
//!
//! [`render_all`] draws every chart the summary has data for into the report
//! directory and returns the PNG bytes too, so the HTML report can inline them. A chart
//! without data is not drawn; it is listed as skipped with the reason instead.
//!
//! plotters is built without its `ttf` feature, so text needs a font registered at
//! runtime: DejaVu Sans from the Debian package `fonts-dejavu-core`, or the file named
//! by `STOMPEDE_CHART_FONT`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plotters::prelude::*;
use plotters::style::register_font;

use super::format::{count, ms, rate};
use super::plot::{
    self, area, axis_labels, draw_gappy, legend, line_legend, max_of, nines, nines_label, segments,
    shade_phases, time_chart, time_end, titled, top, DrawResult, NinesAxis, FONT, GROUP_COLORS,
    TIME_AXIS,
};
use super::{LatencyStats, ReportError, SkippedChart, Summary};

/// Environment variable naming a .ttf file to use instead of DejaVu Sans.
pub const FONT_ENV: &str = "STOMPEDE_CHART_FONT";
/// Where Debian's `fonts-dejavu-core` puts DejaVu Sans.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Chart size in pixels.
pub const SIZE: (u32, u32) = (1000, 500);

pub const LATENCY_PERCENTILES: &str = "latency-percentiles.png";
pub const LATENCY_OVER_TIME: &str = "latency-over-time.png";
pub const THROUGHPUT_OVER_TIME: &str = "throughput-over-time.png";
pub const KAFKA_LAG: &str = "kafka-lag.png";
pub const DB_ROWS: &str = "db-rows.png";

/// One chart drawn to a file.
#[derive(Debug, Clone)]
pub struct DrawnChart {
    /// File name inside the report directory.
    pub file: String,
    pub title: String,
    pub png: Vec<u8>,
}

/// Result of [`render_all`].
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub drawn: Vec<DrawnChart>,
    pub skipped: Vec<SkippedChart>,
}

/// Draws every chart the summary has data for into `dir`.
pub fn render_all(summary: &Summary, dir: &Path) -> Result<Rendered, ReportError> {
    ensure_font()?;
    let mut out = Rendered::default();
    let has_latency = !summary.latency.corrected.percentiles.is_empty()
        || !summary.latency.raw.percentiles.is_empty();
    let has_timeline = !summary.timeline.is_empty();
    let has_lag = summary
        .kafka
        .as_ref()
        .is_some_and(|k| k.groups.iter().any(|g| !g.samples.is_empty()));
    let has_rows = summary
        .db
        .as_ref()
        .is_some_and(|d| !d.rows_per_s.is_empty());

    type Draw = fn(&Summary, &Path) -> DrawResult;
    let charts: [(&str, &str, Option<&str>, Draw); 5] = [
        (LATENCY_PERCENTILES, "End-to-end latency by percentile", (!has_latency).then_some("no latency samples were recorded"), latency_percentiles),
        (LATENCY_OVER_TIME, "End-to-end latency over time", (!has_timeline).then_some("the run recorded no timeline"), latency_over_time),
        (THROUGHPUT_OVER_TIME, "Throughput over time", (!has_timeline).then_some("the run recorded no timeline"), throughput_over_time),
        (KAFKA_LAG, "Kafka consumer lag", (!has_lag).then_some("no Kafka lag was sampled (external target, or the brokers were unreachable)"), kafka_lag),
        (DB_ROWS, "Database rows written per second", (!has_rows).then_some("no database throughput was sampled (external target, or PostgreSQL was unreachable)"), db_rows),
    ];
    for (file, title, missing, draw) in charts {
        if let Some(reason) = missing {
            out.skipped.push(SkippedChart {
                file: file.into(),
                reason: reason.into(),
            });
            continue;
        }
        let path = dir.join(file);
        let chart_err = |message: String| ReportError::Chart {
            chart: path.display().to_string(),
            message,
        };
        draw(summary, &path).map_err(|e| chart_err(e.to_string()))?;
        let png =
            std::fs::read(&path).map_err(|e| chart_err(format!("cannot read it back: {e}")))?;
        out.drawn.push(DrawnChart {
            file: file.into(),
            title: title.into(),
            png,
        });
    }
    Ok(out)
}

/// Registers the chart font with plotters once per process.
pub fn ensure_font() -> Result<(), ReportError> {
    static REGISTERED: Mutex<bool> = Mutex::new(false);
    let mut done = REGISTERED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *done {
        return Ok(());
    }
    let path = std::env::var_os(FONT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FONT));
    let bytes = read_font(&path)?;
    // plotters keeps a &'static reference; the font lives for the rest of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FONT, FontStyle::Normal, bytes).map_err(|_| ReportError::InvalidFont { path })?;
    *done = true;
    Ok(())
}

fn read_font(path: &Path) -> Result<Vec<u8>, ReportError> {
    std::fs::read(path).map_err(|source| ReportError::Font {
        path: path.to_path_buf(),
        source,
    })
}

fn latency_percentiles(summary: &Summary, path: &Path) -> DrawResult {
    let lat = &summary.latency;
    // Corrected first and wider, raw on top: where they agree both stay visible.
    let mut series = vec![
        (
            "corrected (from intended send time)",
            plot::RED,
            5,
            &lat.corrected,
        ),
        ("raw (from actual send time)", plot::BLUE, 2, &lat.raw),
    ];
    if let Some(receipt) = &lat.receipt {
        series.push(("send to RECEIPT", plot::GREEN, 2, receipt));
    }
    // q = 1 (the maximum) has no place on a nines axis; the last finite point is near it.
    let points = |s: &LatencyStats| -> Vec<(f64, f64)> {
        s.percentiles
            .iter()
            .filter(|p| p.quantile < 1.0)
            .map(|p| (nines(p.quantile), p.value_us as f64 / 1000.0))
            .collect()
    };
    let x_max = max_of(series.iter().flat_map(|s| points(s.3)).map(|p| p.0)).max(2.0) + 0.1;
    let y_top = top(
        max_of(series.iter().flat_map(|s| points(s.3)).map(|p| p.1)),
        series.len(),
    );

    let root = area(path);
    root.fill(&WHITE)?;
    let body = titled(&root, "End-to-end latency by percentile (measured phase)")?;
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
    for (label, color, width, stats) in &series {
        let color = *color;
        let pts = points(stats);
        if pts.len() < 3 {
            // Too few samples for a curve: show the points themselves.
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(*width)))?
            .label(format!(
                "{label}: {} samples, max {} ms",
                count(stats.count),
                ms(stats.max_us)
            ))
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

fn latency_over_time(summary: &Summary, path: &Path) -> DrawResult {
    let tl = &summary.timeline;
    let ms = |v: Option<u64>| v.map(|us| us as f64 / 1000.0);
    let y_top = top(
        max_of(tl.iter().filter_map(|p| ms(p.p99_us.max(p.p50_us)))),
        2,
    );
    let root = area(path);
    root.fill(&WHITE)?;
    let body = titled(&root, "End-to-end latency per second (corrected)")?;
    let mut chart = time_chart(&body, time_end(summary), y_top, "latency (ms)", false)?;
    shade_phases(&root, &mut chart, summary, y_top)?;
    draw_gappy(
        &mut chart,
        segments(tl.iter().map(|p| (p.t_s, ms(p.p99_us)))),
        plot::RED,
        "p99",
    )?;
    draw_gappy(
        &mut chart,
        segments(tl.iter().map(|p| (p.t_s, ms(p.p50_us)))),
        plot::BLUE,
        "p50",
    )?;
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

fn throughput_over_time(summary: &Summary, path: &Path) -> DrawResult {
    let tl = &summary.timeline;
    let per_s = |n: u64, dt: f64| if dt > 0.0 { n as f64 / dt } else { n as f64 };
    let sent: Vec<(f64, f64)> = tl
        .iter()
        .map(|p| (p.t_s, per_s(p.sent, p.interval_s)))
        .collect();
    let delivered: Vec<(f64, f64)> = tl
        .iter()
        .map(|p| (p.t_s, per_s(p.delivered, p.interval_s)))
        .collect();
    let sent_top = top(max_of(sent.iter().map(|p| p.1)), 2);
    let delivered_top = top(max_of(delivered.iter().map(|p| p.1)), 2);
    // Fan-out makes deliveries outnumber sends by the room size: give them their own
    // axis when one would flatten the other.
    let dual = delivered_top > 3.0 * sent_top || sent_top > 3.0 * delivered_top;
    let both = sent_top.max(delivered_top);
    let (left_top, right_top) = if dual {
        (sent_top, delivered_top)
    } else {
        (both, both)
    };
    let x_end = time_end(summary);

    let root = area(path);
    root.fill(&WHITE)?;
    let body = titled(
        &root,
        "Messages per second: sent by virtual users, delivered to recipients",
    )?;
    let mut chart = ChartBuilder::on(&body)
        .margin(15)
        .margin_top(20)
        .margin_right(if dual { 15 } else { 30 })
        .x_label_area_size(55)
        .y_label_area_size(85)
        .right_y_label_area_size(if dual { 85 } else { 0 })
        .build_cartesian_2d(0f64..x_end, 0f64..left_top)?
        .set_secondary_coord(0f64..x_end, 0f64..right_top);
    let (x_fmt, left_fmt, right_fmt) = (
        axis_labels(x_end, false),
        axis_labels(left_top, true),
        axis_labels(right_top, true),
    );
    chart
        .configure_mesh()
        .x_desc(TIME_AXIS)
        .y_desc(if dual {
            "sent (messages/s)"
        } else {
            "messages/s"
        })
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&left_fmt)
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    if dual {
        chart
            .configure_secondary_axes()
            .y_desc("delivered (messages/s)")
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 14))
            .y_label_formatter(&right_fmt)
            .draw()?;
    }
    shade_phases(&root, &mut chart, summary, left_top)?;
    let (sent_label, delivered_label) = if dual {
        ("sent/s (left axis)", "delivered/s (right axis)")
    } else {
        ("sent/s", "delivered/s")
    };
    chart
        .draw_series(LineSeries::new(sent, plot::BLUE.stroke_width(2)))?
        .label(sent_label)
        .legend(line_legend(plot::BLUE));
    chart
        .draw_secondary_series(LineSeries::new(delivered, plot::ORANGE.stroke_width(2)))?
        .label(delivered_label)
        .legend(line_legend(plot::ORANGE));
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

fn kafka_lag(summary: &Summary, path: &Path) -> DrawResult {
    let Some(kafka) = &summary.kafka else {
        return Ok(());
    };
    let max = max_of(
        kafka
            .groups
            .iter()
            .flat_map(|g| &g.samples)
            .map(|s| s.total_lag as f64),
    );
    let y_top = top(max, kafka.groups.len());
    let root = area(path);
    root.fill(&WHITE)?;
    let body = titled(
        &root,
        "Kafka consumer lag per server's group (sum over partitions)",
    )?;
    let mut chart = time_chart(&body, time_end(summary), y_top, "lag (messages)", true)?;
    shade_phases(&root, &mut chart, summary, y_top)?;
    for (i, group) in kafka.groups.iter().enumerate() {
        let color = GROUP_COLORS[i % GROUP_COLORS.len()];
        let pts = group
            .samples
            .iter()
            .map(|s| (s.t_s, Some(s.total_lag as f64)));
        draw_gappy(&mut chart, segments(pts), color, &group.group)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

fn db_rows(summary: &Summary, path: &Path) -> DrawResult {
    let Some(db) = &summary.db else { return Ok(()) };
    let y_top = top(
        max_of(db.rows_per_s.iter().map(|s| s.rows_per_s)).max(db.mean_rows_per_s),
        2,
    );
    let x_end = time_end(summary);
    let root = area(path);
    root.fill(&WHITE)?;
    let body = titled(&root, "PostgreSQL rows written per second")?;
    let mut chart = time_chart(&body, x_end, y_top, "rows written (rows/s)", true)?;
    shade_phases(&root, &mut chart, summary, y_top)?;
    let pts = db.rows_per_s.iter().map(|s| (s.t_s, Some(s.rows_per_s)));
    draw_gappy(&mut chart, segments(pts), plot::GREEN, "rows/s")?;
    let mean = db.mean_rows_per_s;
    let grey = BLACK.mix(0.6);
    chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, mean), (x_end, mean)],
            8,
            6,
            grey.stroke_width(2),
        ))?
        .label(format!("mean {} rows/s", rate(mean)))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], grey.stroke_width(2)));
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_font_names_the_package_to_install() {
        let msg = read_font(Path::new("/nonexistent/DejaVuSans.ttf"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("/nonexistent/DejaVuSans.ttf") && msg.contains("fonts-dejavu-core"),
            "{msg}"
        );
        assert!(msg.contains(FONT_ENV), "{msg}");
    }
}
