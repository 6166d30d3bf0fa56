//! PNG charts of a [`Summary`], drawn with plotters.
//!
//! [`render_all`] draws every chart the summary has data for into the report
//! directory and returns the PNG bytes too, so the HTML report can inline them. A chart
//! without data is not drawn; it is listed as skipped with the reason instead. A chart
//! that cannot be drawn (an unwritable file, an error or a panic in plotters) is listed
//! as failed with the reason: the report still has every figure, so a chart is never
//! what makes a run fail. Text is drawn with the font `plot.rs` embeds. Every chart over
//! the run's time shades its phases and marks its faults (`plot::mark_faults`).

use std::path::Path;

use plotters::prelude::*;

use super::format::{count, ms, rate};
use super::plot::{
    self, axis_labels, draw_gappy, legend, line_legend, mark_faults, max_of, nines, nines_label,
    plot_margin_top, segments, shade_phases, time_chart, time_end, titled, top, Area, DrawResult,
    NinesAxis, FONT, GROUP_COLORS, TIME_AXIS,
};
use super::{LatencyStats, SkippedChart, Summary};

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
    /// Charts without data, with the reason.
    pub skipped: Vec<SkippedChart>,
    /// Charts that had data but could not be drawn, with the error.
    pub failed: Vec<SkippedChart>,
}

type Draw = fn(&Summary, &Area<'_>) -> DrawResult;

/// One chart of the report.
struct Spec {
    file: &'static str,
    title: &'static str,
    /// Why the summary has no data for it, if it has none.
    missing: Option<&'static str>,
    draw: Draw,
}

/// Every chart of the report, in report order.
fn specs(summary: &Summary) -> [Spec; 5] {
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
    let no_timeline = (!has_timeline).then_some("the run recorded no timeline");
    [
        Spec {
            file: LATENCY_PERCENTILES,
            title: "End-to-end latency by percentile",
            missing: (!has_latency).then_some("no latency samples were recorded"),
            draw: latency_percentiles,
        },
        Spec {
            file: LATENCY_OVER_TIME,
            title: "End-to-end latency over time",
            missing: no_timeline,
            draw: latency_over_time,
        },
        Spec {
            file: THROUGHPUT_OVER_TIME,
            title: "Throughput over time",
            missing: no_timeline,
            draw: throughput_over_time,
        },
        Spec {
            file: KAFKA_LAG,
            title: "Kafka consumer lag",
            missing: (!has_lag).then_some(
                "no Kafka lag was sampled (external target, or the brokers were unreachable)",
            ),
            draw: kafka_lag,
        },
        Spec {
            file: DB_ROWS,
            title: "Database rows written per second",
            missing: (!has_rows).then_some(
                "no database throughput was sampled (external target, or PostgreSQL was unreachable)",
            ),
            draw: db_rows,
        },
    ]
}

/// Draws every chart the summary has data for into `dir`.
pub fn render_all(summary: &Summary, dir: &Path) -> Rendered {
    let mut out = Rendered::default();
    for spec in specs(summary) {
        if let Some(reason) = spec.missing {
            out.skipped.push(SkippedChart {
                file: spec.file.into(),
                reason: reason.into(),
            });
            continue;
        }
        match draw_file(summary, &dir.join(spec.file), spec.draw) {
            Ok(png) => out.drawn.push(DrawnChart {
                file: spec.file.into(),
                title: spec.title.into(),
                png,
            }),
            Err(reason) => out.failed.push(SkippedChart {
                file: spec.file.into(),
                reason,
            }),
        }
    }
    out
}

/// Draws one chart into the PNG file `path` and returns its bytes. Whatever stops it
/// (an error or a panic while drawing, a file that cannot be written) is the `Err`
/// reason, and leaves no half-drawn file behind.
fn draw_file(summary: &Summary, path: &Path, draw: Draw) -> Result<Vec<u8>, String> {
    plot::draw_to_file(path, |path| draw_on(summary, &plot::area(path), draw))
}

/// Draws one chart on `root`, from a white canvas to the finished picture.
fn draw_on(summary: &Summary, root: &Area<'_>, draw: Draw) -> DrawResult {
    plot::ensure_font()?;
    root.fill(&WHITE)?;
    draw(summary, root)?;
    root.present()?;
    Ok(())
}

fn latency_percentiles(summary: &Summary, root: &Area<'_>) -> DrawResult {
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

    let body = titled(root, "End-to-end latency by percentile (measured phase)")?;
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
    Ok(())
}

fn latency_over_time(summary: &Summary, root: &Area<'_>) -> DrawResult {
    let tl = &summary.timeline;
    let ms = |v: Option<u64>| v.map(|us| us as f64 / 1000.0);
    let y_top = top(
        max_of(tl.iter().filter_map(|p| ms(p.p99_us.max(p.p50_us)))),
        2,
    );
    let body = titled(root, "End-to-end latency per second (corrected)")?;
    let mut chart = time_chart(&body, summary, y_top, "latency (ms)", false)?;
    shade_phases(root, &mut chart, summary, y_top)?;
    mark_faults(root, &mut chart, summary, y_top)?;
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
    Ok(())
}

fn throughput_over_time(summary: &Summary, root: &Area<'_>) -> DrawResult {
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

    let body = titled(
        root,
        "Messages per second: sent by virtual users, delivered to recipients",
    )?;
    let mut chart = ChartBuilder::on(&body)
        .margin(15)
        .margin_top(plot_margin_top(summary))
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
    shade_phases(root, &mut chart, summary, left_top)?;
    mark_faults(root, &mut chart, summary, left_top)?;
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
    Ok(())
}

fn kafka_lag(summary: &Summary, root: &Area<'_>) -> DrawResult {
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
    let body = titled(
        root,
        "Kafka consumer lag per server's group (sum over partitions)",
    )?;
    let mut chart = time_chart(&body, summary, y_top, "lag (messages)", true)?;
    shade_phases(root, &mut chart, summary, y_top)?;
    mark_faults(root, &mut chart, summary, y_top)?;
    for (i, group) in kafka.groups.iter().enumerate() {
        let color = GROUP_COLORS[i % GROUP_COLORS.len()];
        let pts = group
            .samples
            .iter()
            .map(|s| (s.t_s, Some(s.total_lag as f64)));
        draw_gappy(&mut chart, segments(pts), color, &group.group)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

fn db_rows(summary: &Summary, root: &Area<'_>) -> DrawResult {
    let Some(db) = &summary.db else { return Ok(()) };
    let y_top = top(
        max_of(db.rows_per_s.iter().map(|s| s.rows_per_s)).max(db.mean_rows_per_s),
        2,
    );
    let x_end = time_end(summary);
    let body = titled(root, "PostgreSQL rows written per second")?;
    let mut chart = time_chart(&body, summary, y_top, "rows written (rows/s)", true)?;
    shade_phases(root, &mut chart, summary, y_top)?;
    mark_faults(root, &mut chart, summary, y_top)?;
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws one chart of `summary` into memory: RGB bytes, row by row.
    fn draw_in_memory(summary: &Summary, draw: Draw) -> Vec<u8> {
        let mut pixels = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
            draw_on(summary, &root, draw).unwrap();
        }
        pixels
    }

    /// Pixels of rows `rows` that are clearly darker than the white background.
    fn dark_pixels(pixels: &[u8], rows: std::ops::Range<u32>) -> usize {
        let row_bytes = (SIZE.0 * 3) as usize;
        pixels[rows.start as usize * row_bytes..rows.end as usize * row_bytes]
            .chunks(3)
            .filter(|p| p.iter().map(|&c| c as u32).sum::<u32>() < 3 * 128)
            .count()
    }

    #[test]
    fn text_is_drawn_only_with_the_embedded_font() {
        plot::ensure_font().unwrap();
        // A family that was not registered does not resolve: there is no fallback to
        // the fonts installed on the machine (which would need plotters' `ttf`).
        for family in ["sans-serif", "DejaVu Sans", "serif", "monospace"] {
            assert!(
                (family, 14).into_font().box_size("latency").is_err(),
                "{family} resolved to a font that was not registered"
            );
        }
        assert!(!["sans-serif", "serif", "monospace"].contains(&FONT));
        let (w, h) = (FONT, 14).into_font().box_size("latency").unwrap();
        assert!(w > 30 && h > 8, "{w}x{h}");
    }

    #[test]
    fn every_chart_draws_its_labels() {
        let summary = Summary::sample();
        for spec in specs(&summary) {
            assert_eq!(spec.missing, None, "{}", spec.file);
            let pixels = draw_in_memory(&summary, spec.draw);
            // The top band holds nothing but the title.
            let title = dark_pixels(&pixels, 0..40);
            assert!(
                title > 500,
                "{}: {title} dark pixels in the title",
                spec.file
            );
            // The bottom band holds nothing but the time or percentile axis caption.
            let caption = dark_pixels(&pixels, SIZE.1 - 42..SIZE.1);
            assert!(
                caption > 300,
                "{}: {caption} dark pixels in the x axis caption",
                spec.file
            );
        }
    }

    /// Pixels of exactly `color`.
    fn pixels_of(pixels: &[u8], color: RGBColor) -> usize {
        pixels
            .chunks(3)
            .filter(|p| p == &[color.0, color.1, color.2])
            .count()
    }

    #[test]
    fn every_timeline_chart_marks_the_faults() {
        let faulted = Summary::sample_with_faults();
        let plain = Summary::sample();
        for spec in specs(&faulted) {
            let pixels = draw_in_memory(&faulted, spec.draw);
            let (fault, recovery) = (
                pixels_of(&pixels, plot::FAULT),
                pixels_of(&pixels, plot::RECOVERY),
            );
            if spec.file == LATENCY_PERCENTILES {
                assert_eq!((fault, recovery), (0, 0), "{}", spec.file);
                continue;
            }
            // Three solid lines and two dashed ones, each as high as the plot.
            assert!(
                fault > 1_000,
                "{}: {fault} pixels of fault lines",
                spec.file
            );
            assert!(
                recovery > 300,
                "{}: {recovery} pixels of recovery lines",
                spec.file
            );
            let pixels = draw_in_memory(&plain, spec.draw);
            assert_eq!(
                (
                    pixels_of(&pixels, plot::FAULT),
                    pixels_of(&pixels, plot::RECOVERY)
                ),
                (0, 0),
                "{} without faults",
                spec.file
            );
        }
    }

    fn half_drawn_then_failed(_: &Summary, root: &Area<'_>) -> DrawResult {
        root.fill(&BLUE)?;
        Err("the plot range is empty".into())
    }

    fn half_drawn_then_panicked(_: &Summary, root: &Area<'_>) -> DrawResult {
        root.fill(&BLUE)?;
        panic!("index out of bounds")
    }

    #[test]
    fn a_chart_that_fails_leaves_no_file_and_says_why() {
        let dir = std::env::temp_dir().join(format!("stompede-chart-fail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let summary = Summary::sample();

        let path = dir.join("failed.png");
        let err = draw_file(&summary, &path, half_drawn_then_failed).unwrap_err();
        assert!(err.contains("the plot range is empty"), "{err}");
        assert!(!path.exists(), "a half-drawn chart was left behind");

        let path = dir.join("panicked.png");
        let err = draw_file(&summary, &path, half_drawn_then_panicked).unwrap_err();
        assert_eq!(err, "the drawing code panicked: index out of bounds");
        assert!(!path.exists(), "a half-drawn chart was left behind");

        let path = dir.join("drawn.png");
        let png = draw_file(&summary, &path, latency_percentiles).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), png);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
