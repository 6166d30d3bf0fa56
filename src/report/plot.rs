//! Building blocks of the charts: the embedded font, axes, phase shading, fault marks,
//! legends and gap-aware series, so each chart in [`super::charts`] only says what it plots.
//!
//! Text is drawn with DejaVu Sans compiled into the binary (`assets/fonts/`), never with
//! a font of the machine: plotters is built with `ab_glyph` and without `ttf`, so it
//! resolves a font family only among the fonts registered with it, and [`FONT`] is a
//! family name no installed font carries.

use std::error::Error;
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Phase, Summary};

/// The family every chart text is drawn in: the embedded font's private name.
pub(super) const FONT: &str = "stompede-embedded-dejavu-sans";
/// DejaVu Sans 2.37 (see `assets/fonts/README.md`).
static FONT_TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// A chart canvas of the usual size writing the PNG file `path` (campaign charts).
pub(super) fn area(path: &std::path::Path) -> Area<'_> {
    BitMapBackend::new(path, super::charts::SIZE).into_drawing_area()
}

/// Draws a chart that writes its own file at `path` (with [`area`]) and returns the
/// PNG's bytes; any failure (the font, the drawing, a panic, the file) is the `Err`
/// reason, and leaves no half-drawn file behind.
pub(super) fn draw_to_file(
    path: &std::path::Path,
    draw: impl FnOnce(&std::path::Path) -> DrawResult,
) -> Result<Vec<u8>, String> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ensure_font()?;
        // plotters writes the file last and words its errors for developers: find out
        // first, in plain words, whether the file can be written at all.
        std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        draw(path).map_err(|e| e.to_string())?;
        std::fs::read(path).map_err(|e| format!("cannot read it back: {e}"))
    }));
    let result = attempt.unwrap_or_else(|panic| Err(panic_message(panic.as_ref())));
    if result.is_err() {
        // The bitmap backend saves whatever it holds when it is dropped.
        let _ = std::fs::remove_file(path);
    }
    result
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("the drawing code panicked: {what}")
}

/// Registers the embedded font as [`FONT`] with plotters, once per process.
pub(super) fn ensure_font() -> Result<(), &'static str> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, FONT_TTF).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the embedded chart font is not a usable TrueType font")
    }
}
pub(super) const TIME_AXIS: &str =
    "time since start (s); shaded phases are excluded from the statistics";
pub(super) const RED: RGBColor = RGBColor(214, 39, 40);
pub(super) const BLUE: RGBColor = RGBColor(31, 119, 180);
pub(super) const ORANGE: RGBColor = RGBColor(255, 127, 14);
pub(super) const GREEN: RGBColor = RGBColor(44, 160, 44);
pub(super) const GROUP_COLORS: [RGBColor; 8] = [
    BLUE,
    ORANGE,
    GREEN,
    RED,
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub(super) type DrawResult = Result<(), Box<dyn Error>>;
/// The whole canvas of one chart.
pub(super) type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;
pub(super) type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

pub(super) fn legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
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

pub(super) fn line_legend(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
}

pub(super) fn max_of(values: impl Iterator<Item = f64>) -> f64 {
    values.filter(|v| v.is_finite()).fold(0.0, f64::max)
}

/// Upper end of a value axis: headroom above the data for a legend of `entries` lines
/// in the upper corner, so the legend never hides a line; never an empty range.
pub(super) fn top(max: f64, entries: usize) -> f64 {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    max * (1.05 + 0.09 * entries as f64)
}

/// Axis labels for `0..top`: as many decimals as a tenth of the range needs, and with
/// `si`, thousands as `k` and millions as `M` so counts stay short.
pub(super) fn axis_labels(top: f64, si: bool) -> impl Fn(&f64) -> String {
    let (div, suffix) = match top {
        t if si && t >= 1e7 => (1e6, "M"),
        t if si && t >= 1e4 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let step = top / 10.0 / div;
    let decimals = if step >= 1.0 || step <= 0.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    move |v| {
        if *v == 0.0 {
            "0".to_string()
        } else {
            format!("{:.decimals$}{suffix}", v / div)
        }
    }
}

/// The right end of the run's time axis.
pub(super) fn time_end(summary: &Summary) -> f64 {
    let p = &summary.phases;
    let planned = p.ramp_s + p.warmup_s + p.measured_s + p.grace_s;
    let sampled = max_of(summary.timeline.iter().map(|t| t.t_s));
    let end = planned.max(sampled);
    if end > 0.0 {
        end
    } else {
        1.0
    }
}

/// Shades the phases excluded from the statistics and names every phase above the
/// plot, where the names cannot collide with data or the legend.
pub(super) fn shade_phases<'a, 'b: 'a>(
    root: &Area<'b>,
    chart: &mut Chart<'a, 'b>,
    summary: &Summary,
    y_top: f64,
) -> DrawResult {
    let p = &summary.phases;
    let mut at = 0.0;
    let mut spans = Vec::new();
    for (phase, len, color) in [
        (Phase::Ramp, p.ramp_s, Some(RGBColor(255, 224, 140))),
        (Phase::Warmup, p.warmup_s, Some(RGBColor(200, 200, 200))),
        (Phase::Measure, p.measured_s, None),
        (Phase::Grace, p.grace_s, Some(RGBColor(180, 205, 235))),
    ] {
        if len > 0.0 {
            spans.push((phase, at, at + len, color));
        }
        at += len;
    }
    let font = (FONT, 13)
        .into_font()
        .color(&BLACK.mix(0.75))
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    for (phase, from, to, color) in spans {
        if let Some(color) = color {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(from, 0.0), (to, y_top)],
                color.mix(0.35).filled(),
            )))?;
        }
        let (left, top_px) = chart.backend_coord(&(from, y_top));
        let (right, _) = chart.backend_coord(&(to, y_top));
        let width = (right - left).max(0) as u32;
        let long = phase.label();
        let short = &long[..long.find('-').unwrap_or(long.len())];
        for label in [long, short] {
            let (w, _) = root.estimate_text_size(label, &font)?;
            if w + 4 <= width {
                root.draw(&Text::new(
                    label,
                    ((left + right) / 2, top_px - 3),
                    font.clone(),
                ))?;
                break;
            }
        }
    }
    Ok(())
}

/// Where one fault shows on a time axis ([`fault_marks`], drawn by [`mark_faults`]).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FaultMark {
    /// The fault's 1-based index in the scenario.
    pub index: u32,
    /// `F1 kill-broker`; `F4 exec failed` when the injection failed.
    pub label: String,
    /// When it was injected (or tried to be): a solid line.
    pub at_s: f64,
    /// The injection failed: the line is grey and nothing else is drawn.
    pub failed: bool,
    /// `[at_s, end_s]` of a fault that was lifted: a light band.
    pub band: Option<(f64, f64)>,
    /// When deliveries came back after its outage: a dashed line labelled `F1 recovered`.
    pub recovered_s: Option<f64>,
}

impl FaultMark {
    fn recovery_label(&self) -> String {
        format!("F{} recovered", self.index)
    }
}

/// The marks of every fault that was injected (or whose injection was tried), in
/// scenario order; a fault the run never reached has none.
pub(super) fn fault_marks(summary: &Summary) -> Vec<FaultMark> {
    let Some(faults) = &summary.faults else {
        return Vec::new();
    };
    faults
        .injected
        .iter()
        .filter_map(|f| {
            let at_s = f.at_s.filter(|t| t.is_finite())?;
            let failed = !f.ok;
            let label = if failed {
                format!("F{} {} failed", f.index, f.kind)
            } else {
                format!("F{} {}", f.index, f.kind)
            };
            Some(FaultMark {
                index: f.index,
                label,
                at_s,
                failed,
                band: f
                    .end_s
                    .filter(|end| !failed && end.is_finite() && *end > at_s)
                    .map(|end| (at_s, end)),
                recovered_s: f
                    .outage
                    .as_ref()
                    .filter(|o| !failed && o.recovered && o.end_s.is_finite())
                    .map(|o| o.end_s),
            })
        })
        .collect()
}

/// Colours of the fault marks, used by nothing else on a chart.
pub(super) const FAULT: RGBColor = RGBColor(170, 0, 120);
pub(super) const RECOVERY: RGBColor = RGBColor(0, 140, 110);
const FAILED_FAULT: RGBColor = RGBColor(110, 110, 110);
/// Rows of fault labels above the phase names, and their height in pixels.
const FAULT_LABEL_ROWS: usize = 2;
const FAULT_LABEL_ROW_PX: i32 = 16;

/// Room above a time chart's plot: the phase names, and the rows of fault labels when
/// the run has faults to mark.
pub(super) fn plot_margin_top(summary: &Summary) -> u32 {
    if fault_marks(summary).is_empty() {
        20
    } else {
        20 + FAULT_LABEL_ROWS as u32 * FAULT_LABEL_ROW_PX as u32
    }
}

/// Marks every fault on a time chart (see [`fault_marks`]): a light band while it lasted,
/// a solid line where it was injected and a dashed line where deliveries came back. Their
/// labels go above the phase names, in the room [`plot_margin_top`] keeps, where they
/// cannot hide data or the legend; a label without room is shortened to `F1`, or left
/// out (its line still shows). Call it after [`shade_phases`], before the series.
pub(super) fn mark_faults<'a, 'b: 'a>(
    root: &Area<'b>,
    chart: &mut Chart<'a, 'b>,
    summary: &Summary,
    y_top: f64,
) -> DrawResult {
    let marks = fault_marks(summary);
    if marks.is_empty() {
        return Ok(());
    }
    let x_end = chart.x_range().end;
    let on_axis = |x: f64| (0.0..=x_end).contains(&x);
    let mut labels = Vec::new();
    for m in &marks {
        if let Some((from, to)) = m.band {
            let (from, to) = (from.max(0.0), to.min(x_end));
            if from < to {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(from, 0.0), (to, y_top)],
                    FAULT.mix(0.08).filled(),
                )))?;
            }
        }
        if on_axis(m.at_s) {
            let color = if m.failed { FAILED_FAULT } else { FAULT };
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(m.at_s, 0.0), (m.at_s, y_top)],
                color.stroke_width(2),
            )))?;
            labels.push((m.at_s, m.label.clone(), format!("F{}", m.index), color));
        }
        if let Some(back) = m.recovered_s.filter(|&x| on_axis(x)) {
            chart.draw_series(DashedLineSeries::new(
                vec![(back, 0.0), (back, y_top)],
                7,
                5,
                RECOVERY.stroke_width(2),
            ))?;
            labels.push((back, m.recovery_label(), format!("F{}", m.index), RECOVERY));
        }
    }

    labels.sort_by(|a, b| a.0.total_cmp(&b.0));
    let font = (FONT, 13).into_font();
    let measure = TextStyle::from(font.clone());
    let (_, top_px) = chart.backend_coord(&(0.0, y_top));
    let (width, _) = root.dim_in_pixel();
    let mut row_end = [i32::MIN; FAULT_LABEL_ROWS];
    for (x, long, short, color) in labels {
        let (x_px, _) = chart.backend_coord(&(x, y_top));
        for text in [&long, &short] {
            let (w, _) = root.estimate_text_size(text, &measure)?;
            let w = w as i32;
            // Right of the line, or left of it near the right edge.
            let left = if x_px + 3 + w <= width as i32 - 4 {
                x_px + 3
            } else {
                x_px - 3 - w
            };
            if let Some(row) = (0..FAULT_LABEL_ROWS).find(|&r| row_end[r] + 8 <= left) {
                row_end[row] = left + w;
                let bottom = top_px - 3 - FAULT_LABEL_ROW_PX * (row as i32 + 1);
                let style = font
                    .clone()
                    .color(&color)
                    .pos(Pos::new(HPos::Left, VPos::Bottom));
                root.draw(&Text::new(text.as_str(), (left, bottom), style))?;
                break;
            }
        }
    }
    Ok(())
}

/// Draws the title at the top of `root` and returns the area below it.
pub(super) fn titled<'b>(root: &Area<'b>, title: &str) -> Result<Area<'b>, Box<dyn Error>> {
    Ok(root.margin(8, 0, 0, 0).titled(title, (FONT, 22))?)
}

/// A time chart of `summary`'s run on the area below the title: time on x, values from 0
/// to `y_top` on y, with room above the plot for the phase names and fault labels.
pub(super) fn time_chart<'a, 'b>(
    body: &'a Area<'b>,
    summary: &Summary,
    y_top: f64,
    y_desc: &str,
    si: bool,
) -> Result<Chart<'a, 'b>, Box<dyn Error>> {
    let x_end = time_end(summary);
    let mut chart = ChartBuilder::on(body)
        .margin(15)
        .margin_top(plot_margin_top(summary))
        .margin_right(30)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .build_cartesian_2d(0f64..x_end, 0f64..y_top)?;
    let (x_fmt, y_fmt) = (axis_labels(x_end, false), axis_labels(y_top, si));
    chart
        .configure_mesh()
        .x_desc(TIME_AXIS)
        .y_desc(y_desc)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    Ok(chart)
}

/// Splits a series with gaps into drawable runs of points.
pub(super) fn segments(points: impl Iterator<Item = (f64, Option<f64>)>) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (x, y) in points {
        match y {
            Some(y) => out.last_mut().map(|s| s.push((x, y))).unwrap_or(()),
            None if out.last().is_some_and(|s| !s.is_empty()) => out.push(Vec::new()),
            None => {}
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Draws a series that may have gaps, with one legend entry.
pub(super) fn draw_gappy(
    chart: &mut Chart<'_, '_>,
    runs: Vec<Vec<(f64, f64)>>,
    color: RGBColor,
    label: &str,
) -> DrawResult {
    for (i, run) in runs.into_iter().enumerate() {
        let anno = if run.len() == 1 {
            chart.draw_series(run.into_iter().map(|p| Circle::new(p, 3, color.filled())))?
        } else {
            chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?
        };
        if i == 0 {
            anno.label(label).legend(line_legend(color));
        }
    }
    Ok(())
}

/// The "nines" axis: x = log10(1 / (1 - q)), so 90% is 1, 99% is 2, 99.9% is 3.
pub(super) fn nines(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// The nines axis as a plotters coordinate: linear in `nines(q)`, with ticks at 50%,
/// 90%, 99%, … and light grid lines at the 2 and 5 steps between them.
pub(super) struct NinesAxis {
    inner: RangedCoordf64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl NinesAxis {
    pub(super) fn new(x_max: f64) -> NinesAxis {
        let decades = x_max.ceil() as i64;
        let mut bold = vec![0.0, 2f64.log10()];
        bold.extend((1..=decades).map(|n| n as f64));
        let light = (0..decades)
            .flat_map(|n| [n as f64 + 2f64.log10(), n as f64 + 5f64.log10()])
            .filter(|&x| x <= x_max)
            .collect();
        NinesAxis {
            inner: (0f64..x_max).into(),
            bold,
            light,
        }
    }
}

impl Ranged for NinesAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// Labels a point of the nines axis as a percentile: 50%, 90%, 99%, 99.9%, …
pub(super) fn nines_label(x: &f64) -> String {
    let pct = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.round() as i64 - 2).max(0) as usize;
    format!("{pct:.decimals$}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis_labels() {
        assert_eq!(nines_label(&0.0), "0%");
        assert_eq!(nines_label(&2f64.log10()), "50%");
        assert_eq!(nines_label(&1.0), "90%");
        assert_eq!(nines_label(&2.0), "99%");
        assert_eq!(nines_label(&3.0), "99.9%");
        assert_eq!(nines_label(&5.0), "99.999%");
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn axis_labels_fit_the_range() {
        let f = axis_labels(88.0, false);
        assert_eq!((f(&0.0), f(&20.0)), ("0".to_string(), "20".to_string()));
        assert_eq!(axis_labels(0.5, false)(&0.25), "0.25");
        assert_eq!(axis_labels(45_000.0, true)(&5_000.0), "5k");
        assert_eq!(axis_labels(12_000_000.0, true)(&4_000_000.0), "4M");
        assert_eq!(axis_labels(3_000_000.0, true)(&2_500_000.0), "2500k");
    }

    #[test]
    fn gaps_split_series() {
        let runs = segments(
            [
                (0.0, Some(1.0)),
                (1.0, None),
                (2.0, Some(2.0)),
                (3.0, Some(3.0)),
                (4.0, None),
            ]
            .into_iter(),
        );
        assert_eq!(runs, vec![vec![(0.0, 1.0)], vec![(2.0, 2.0), (3.0, 3.0)]]);
    }
}
