//! PNG charts of a capacity search: one point per step against the offered load
//! (deliveries/s), passing steps filled, failing ones hollow, the knee marked.
//!
//! Built from the same pieces as the single-run charts ([`super::plot`]) and drawn with
//! the same registered font ([`super::plot::ensure_font`]).

use std::error::Error;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::charts::{DrawnChart, Rendered};
use super::format::rate;
use super::plot::{
    self, area, axis_labels, line_legend, max_of, titled, top, DrawResult, FONT, GROUP_COLORS,
};
use super::{Capacity, CapacityStep, ReportError, SkippedChart};

pub const CAP_LATENCY: &str = "capacity-latency.png";
pub const CAP_DELIVERED: &str = "capacity-delivered.png";
pub const CAP_LAG: &str = "capacity-lag.png";
pub const CAP_DB: &str = "capacity-db.png";
pub const CAP_RESOURCES: &str = "capacity-resources.png";

/// A labelled series of `(offered, value, step passed)` points.
type Series = (String, RGBColor, Vec<(f64, f64, bool)>);

const X_AXIS: &str = "offered load (deliveries/s)";

/// Draws every chart the search has data for into `dir`.
pub fn render_all(c: &Capacity, dir: &Path) -> Result<Rendered, ReportError> {
    let mut out = Rendered::default();
    let has = |f: &dyn Fn(&CapacityStep) -> bool| c.steps.iter().any(f);
    let no_steps = c.steps.is_empty().then_some("no step ran");
    let lag = (!has(&|s| s.summary.kafka.is_some())).then_some(
        "no Kafka lag was sampled (external target without [target.kafka], or the brokers were unreachable)",
    );
    let db = (!has(&|s| s.summary.db.is_some())).then_some(
        "no database throughput was sampled (external target without [target.db], or PostgreSQL was unreachable)",
    );
    let resources = (!has(&|s| {
        s.summary
            .resources
            .as_ref()
            .is_some_and(|r| !r.servers.is_empty())
    }))
    .then_some("no server resources were recorded (external target)");
    type Draw = fn(&Capacity, &Path) -> DrawResult;
    let charts: [(&str, &str, Option<&str>, Draw); 5] = [
        (
            CAP_LATENCY,
            "Latency against offered load",
            no_steps,
            latency,
        ),
        (
            CAP_DELIVERED,
            "Delivered against offered load",
            no_steps,
            delivered,
        ),
        (
            CAP_LAG,
            "Kafka consumer lag per step",
            no_steps.or(lag),
            kafka_lag,
        ),
        (
            CAP_DB,
            "Database rows written per step",
            no_steps.or(db),
            db_rows,
        ),
        (
            CAP_RESOURCES,
            "Server CPU and memory per step",
            no_steps.or(resources),
            server_resources,
        ),
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
        match super::plot::draw_to_file(&path, |path| draw(c, path)) {
            Ok(png) => out.drawn.push(DrawnChart {
                file: file.into(),
                title: title.into(),
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

/// Offered deliveries/s of each step, and the x axis's end.
fn x_of(s: &CapacityStep) -> f64 {
    s.offered.deliveries_per_s
}

fn x_end(c: &Capacity) -> f64 {
    top(max_of(c.steps.iter().map(x_of)), 0)
}

/// Steps ordered by offered load, for lines through them.
fn sorted(c: &Capacity) -> Vec<&CapacityStep> {
    let mut steps: Vec<&CapacityStep> = c.steps.iter().collect();
    steps.sort_by(|a, b| x_of(a).total_cmp(&x_of(b)).then(a.index.cmp(&b.index)));
    steps
}

/// One series: a line through the steps in load order, each step a marker (filled when
/// it passed, hollow when it failed).
fn series<'a, 'b: 'a, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, CT>,
    points: &[(f64, f64, bool)],
    color: RGBColor,
    label: &str,
) -> DrawResult {
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.0, p.1)),
            color.stroke_width(2),
        ))?
        .label(label)
        .legend(line_legend(color));
    chart.draw_series(points.iter().map(|&(x, y, passed)| {
        let style = if passed {
            color.filled()
        } else {
            color.stroke_width(2)
        };
        Circle::new((x, y), 5, style)
    }))?;
    Ok(())
}

/// The knee as a dashed vertical line with its name at the top.
fn knee_line<'a, 'b: 'a, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, CT>,
    c: &Capacity,
    y: (f64, f64),
) -> DrawResult {
    let Some(k) = &c.knee else { return Ok(()) };
    let x = k.offered.deliveries_per_s;
    let grey = BLACK.mix(0.55);
    chart
        .draw_series(DashedLineSeries::new(
            vec![(x, y.0), (x, y.1)],
            8,
            6,
            grey.stroke_width(2),
        ))?
        .label(format!("knee: {} deliveries/s", rate(x)))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], grey.stroke_width(2)));
    Ok(())
}

fn legend<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, CT>,
    position: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .margin(10)
        .draw()?;
    Ok(())
}

fn body<'b>(
    root: &DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
) -> Result<DrawingArea<BitMapBackend<'b>, Shift>, Box<dyn Error>> {
    root.fill(&WHITE)?;
    titled(root, title)
}

fn latency(c: &Capacity, path: &Path) -> DrawResult {
    let steps = sorted(c);
    let ms = |us: u64| (us as f64 / 1000.0).max(0.01);
    let pick = |f: fn(&CapacityStep) -> u64| -> Vec<(f64, f64, bool)> {
        steps
            .iter()
            .map(|s| (x_of(s), ms(f(s)), s.verdict.passed))
            .collect()
    };
    let p50 = pick(|s| s.summary.latency.corrected.p50_us);
    let p99 = pick(|s| s.summary.latency.corrected.p99_us);
    let p999 = pick(|s| s.summary.latency.corrected.p999_us);
    let all = || p50.iter().chain(&p99).chain(&p999).map(|p| p.1);
    let y_max = max_of(all()) * 4.0;
    let y_min = all().fold(f64::INFINITY, f64::min).min(y_max / 10.0) / 2.0;
    let x_top = x_end(c);
    let root = area(path);
    let body = body(
        &root,
        "End-to-end latency (corrected) against offered load, one point per step",
    )?;
    let mut chart = ChartBuilder::on(&body)
        .margin(15)
        .margin_right(30)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .build_cartesian_2d(0f64..x_top, (y_min..y_max).log_scale())?;
    let x_fmt = axis_labels(x_top, true);
    chart
        .configure_mesh()
        .x_desc(X_AXIS)
        .y_desc("latency (ms, log scale); hollow = step failed")
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| super::format::number((v * 100.0).round() / 100.0))
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    series(&mut chart, &p999, plot::ORANGE, "p99.9")?;
    series(&mut chart, &p99, plot::RED, "p99")?;
    series(&mut chart, &p50, plot::BLUE, "p50")?;
    knee_line(&mut chart, c, (y_min, y_max))?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

/// A linear chart against offered load: `(label, color, points)` series.
fn linear(
    c: &Capacity,
    path: &Path,
    title: &str,
    y_desc: &str,
    lines: Vec<Series>,
    diagonal: bool,
) -> DrawResult {
    let x_top = x_end(c);
    let y_max = max_of(lines.iter().flat_map(|l| l.2.iter().map(|p| p.1)));
    let y_top = top(
        if diagonal { y_max.max(x_top) } else { y_max },
        lines.len() + 1,
    );
    let root = area(path);
    let body = body(&root, title)?;
    let mut chart = ChartBuilder::on(&body)
        .margin(15)
        .margin_right(30)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .build_cartesian_2d(0f64..x_top, 0f64..y_top)?;
    let (x_fmt, y_fmt) = (axis_labels(x_top, true), axis_labels(y_top, true));
    chart
        .configure_mesh()
        .x_desc(X_AXIS)
        .y_desc(y_desc)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    if diagonal {
        let grey = BLACK.mix(0.35);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (x_top, x_top)],
                4,
                4,
                grey.stroke_width(1),
            ))?
            .label("delivered = offered")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], grey.stroke_width(1))
            });
    }
    for (label, color, points) in &lines {
        series(&mut chart, points, *color, label)?;
    }
    knee_line(&mut chart, c, (0.0, y_top))?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

fn delivered(c: &Capacity, path: &Path) -> DrawResult {
    let points = sorted(c)
        .iter()
        .map(|s| {
            let d = s
                .verdict
                .checks
                .iter()
                .find(|k| k.name == "delivered")
                .map_or(s.summary.throughput.delivered_per_s, |k| k.measured);
            (x_of(s), d, s.verdict.passed)
        })
        .collect();
    linear(
        c,
        path,
        "Deliveries that arrived per second of the measured phase, against offered",
        "delivered (deliveries/s)",
        vec![("delivered/s".into(), plot::ORANGE, points)],
        true,
    )
}

fn kafka_lag(c: &Capacity, path: &Path) -> DrawResult {
    let steps = sorted(c);
    let max_lag = steps
        .iter()
        .filter_map(|s| {
            Some((
                x_of(s),
                s.summary.kafka.as_ref()?.max_lag as f64,
                s.verdict.passed,
            ))
        })
        .collect();
    let growth = steps
        .iter()
        .filter_map(|s| {
            let k = s
                .verdict
                .checks
                .iter()
                .find(|k| k.name == "kafka_lag_growth")?;
            k.judged
                .then_some((x_of(s), k.measured.max(0.0), s.verdict.passed))
        })
        .collect();
    linear(
        c,
        path,
        "Kafka consumer lag per step (messages)",
        "lag (messages)",
        vec![
            ("largest lag of any group".into(), plot::BLUE, max_lag),
            (
                "lag gained over the measured phase (slope)".into(),
                plot::RED,
                growth,
            ),
        ],
        false,
    )
}

fn db_rows(c: &Capacity, path: &Path) -> DrawResult {
    let steps = sorted(c);
    let mean = steps
        .iter()
        .filter_map(|s| {
            Some((
                x_of(s),
                s.summary.db.as_ref()?.mean_rows_per_s,
                s.verdict.passed,
            ))
        })
        .collect();
    let messages = steps
        .iter()
        .map(|s| (x_of(s), s.offered.messages_per_s, s.verdict.passed))
        .collect();
    linear(
        c,
        path,
        "PostgreSQL rows written per second while sending, per step",
        "rows/s",
        vec![
            ("mean rows/s written".into(), plot::GREEN, mean),
            ("messages/s offered".into(), plot::BLUE, messages),
        ],
        false,
    )
}

/// Average cores (CPU seconds over the run's length) of each server and the harness,
/// and peak RSS on a second axis.
fn server_resources(c: &Capacity, path: &Path) -> DrawResult {
    let steps = sorted(c);
    let run_s = |s: &CapacityStep| {
        let p = &s.summary.phases;
        (p.ramp_s + p.warmup_s + p.measured_s + p.grace_s).max(1e-3)
    };
    let mut ids: Vec<String> = Vec::new();
    for s in &steps {
        for r in s.summary.resources.iter().flat_map(|r| &r.servers) {
            if !ids.contains(&r.instance_id) {
                ids.push(r.instance_id.clone());
            }
        }
    }
    let per_server =
        |id: &str, f: &dyn Fn(&CapacityStep, &super::ServerResources) -> Option<f64>| {
            steps
                .iter()
                .filter_map(|s| {
                    let r = s
                        .summary
                        .resources
                        .as_ref()?
                        .servers
                        .iter()
                        .find(|r| r.instance_id == id)?;
                    Some((x_of(s), f(s, r)?, s.verdict.passed))
                })
                .collect::<Vec<_>>()
        };
    let cpu: Vec<Series> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                format!("{id} CPU (cores)"),
                GROUP_COLORS[i % GROUP_COLORS.len()],
                per_server(id, &|s, r| Some(r.cpu_s? / run_s(s))),
            )
        })
        .collect();
    let rss: Vec<Series> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                format!("{id} peak RSS (MiB, right)"),
                GROUP_COLORS[(i + 4) % GROUP_COLORS.len()],
                per_server(id, &|_, r| Some(r.peak_rss_bytes as f64 / 1048576.0)),
            )
        })
        .collect();
    let x_top = x_end(c);
    let cpu_top = top(
        max_of(cpu.iter().flat_map(|l| l.2.iter().map(|p| p.1))),
        ids.len() * 2,
    );
    let rss_top = top(
        max_of(rss.iter().flat_map(|l| l.2.iter().map(|p| p.1))),
        ids.len() * 2,
    );
    let root = area(path);
    let body = body(
        &root,
        "Server CPU (average cores over the step's run, circles) and peak memory (triangles)",
    )?;
    let mut chart = ChartBuilder::on(&body)
        .margin(15)
        .margin_right(15)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .right_y_label_area_size(85)
        .build_cartesian_2d(0f64..x_top, 0f64..cpu_top)?
        .set_secondary_coord(0f64..x_top, 0f64..rss_top);
    let (x_fmt, cpu_fmt, rss_fmt) = (
        axis_labels(x_top, true),
        axis_labels(cpu_top, false),
        axis_labels(rss_top, false),
    );
    chart
        .configure_mesh()
        .x_desc(X_AXIS)
        .y_desc("CPU (cores)")
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&cpu_fmt)
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("peak RSS (MiB)")
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .y_label_formatter(&rss_fmt)
        .draw()?;
    for (label, color, points) in &cpu {
        series(&mut chart, points, *color, label)?;
    }
    for (label, color, points) in &rss {
        chart
            .draw_secondary_series(DashedLineSeries::new(
                points.iter().map(|p| (p.0, p.1)),
                6,
                4,
                color.stroke_width(2),
            ))?
            .label(label.as_str())
            .legend(line_legend(*color));
        chart.draw_secondary_series(points.iter().map(|&(x, y, passed)| {
            let style = if passed {
                color.filled()
            } else {
                color.stroke_width(2)
            };
            TriangleMarker::new((x, y), 7, style)
        }))?;
    }
    knee_line(&mut chart, c, (0.0, cpu_top))?;
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}
