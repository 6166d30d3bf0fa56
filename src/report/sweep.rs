//! The sweep model: one scenario over a matrix of stack shapes, written to `sweep.json`.
//!
//! `crate::campaign::sweep` runs the cells and fills a [`Sweep`]; [`write_sweep`] writes
//! the JSON, the charts and `sweep.html` ([`super::sweep_html`]); [`console_table`] is
//! the table printed. Each cell's figures are the median of its repeats, with the
//! spread (lowest to highest) beside it; every run keeps its own summary and the shape
//! read back from the brokers and the servers while it ran.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::compare::CapacityFigures;
use super::format::{count, rate};
use super::{Persist, ReportError, ServerImpl, Summary, ToolInfo};

/// Version of the `sweep.json` layout.
pub const SWEEP_SCHEMA_VERSION: u32 = 1;
pub const SWEEP_KIND: &str = "sweep";
pub const SWEEP_FILE: &str = "sweep.json";
pub const SWEEP_HTML: &str = "sweep.html";

/// A scenario over a matrix of stack shapes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Sweep {
    pub schema_version: u32,
    /// Always `"sweep"`.
    pub kind: String,
    pub tool: ToolInfo,
    pub scenario: String,
    pub scenario_file: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// `None` while the sweep runs (the file is rewritten after every run).
    pub finished_at: Option<String>,
    pub elapsed_s: f64,
    /// The `--set` axes, in the order given.
    pub axes: Vec<Axis>,
    /// Runs per cell.
    pub repeat: u32,
    /// Each run is a capacity search rather than one run.
    pub capacity: bool,
    /// Seed of the shuffled order (repeats only).
    pub seed: u64,
    /// The runs in the order they ran.
    pub order: Vec<Execution>,
    pub cells: Vec<SweepCell>,
    /// Why the sweep stopped before its last run, if it did.
    pub stopped: Option<String>,
}

/// One `--set name=v1,v2,...`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Axis {
    pub name: String,
    pub values: Vec<String>,
}

/// One run of one cell.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution {
    pub cell: usize,
    /// 1-based.
    pub repeat: u32,
}

/// A local stack's shape.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub brokers: u32,
    pub partitions: u32,
    pub servers: u32,
    pub persist: Persist,
    /// Absent in sweeps of older builds: stompede.
    #[serde(default)]
    pub server_impl: ServerImpl,
}

impl Shape {
    /// `1b/3p/2s producer`, then ` spring` for the Spring peer.
    pub fn label(&self) -> String {
        let mut text = format!(
            "{}b/{}p/{}s {}",
            self.brokers,
            self.partitions,
            self.servers,
            self.persist.as_str()
        );
        if self.server_impl != ServerImpl::Stompede {
            text += &format!(" {}", self.server_impl.as_str());
        }
        text
    }
}

/// What the brokers and servers reported just before a run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ObservedShape {
    /// Node ids in the cluster metadata.
    pub broker_ids: Vec<i32>,
    /// Partitions of the chat topic in the metadata.
    pub partitions: u32,
    pub replication_factor: u16,
    pub min_insync_replicas: u16,
    /// Each server's own account (`stompede_server_info` on its `/metrics`).
    pub servers: Vec<ObservedServer>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ObservedServer {
    pub instance: String,
    pub url: String,
    pub persist: String,
    pub topic: String,
    /// The `impl` label: `stompede` or `spring` (empty from servers of older builds).
    #[serde(default)]
    pub server_impl: String,
}

impl ObservedShape {
    /// The shape these readings amount to; `None` when the servers disagree on the
    /// persistence strategy or report one this build does not know.
    pub fn shape(&self) -> Option<Shape> {
        let first = self.servers.first()?;
        if self
            .servers
            .iter()
            .any(|s| s.persist != first.persist || s.server_impl != first.server_impl)
        {
            return None;
        }
        let server_impl = match first.server_impl.as_str() {
            "stompede" | "" => ServerImpl::Stompede,
            "spring" => ServerImpl::Spring,
            _ => return None,
        };
        let persist = match first.persist.as_str() {
            "producer" => Persist::Producer,
            "consumer" => Persist::Consumer,
            _ => return None,
        };
        Some(Shape {
            brokers: self.broker_ids.len() as u32,
            partitions: self.partitions,
            servers: self.servers.len() as u32,
            persist,
            server_impl,
        })
    }
}

/// One point of the matrix.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SweepCell {
    /// The shape's label.
    pub label: String,
    pub requested: Shape,
    /// In the order they ran.
    pub runs: Vec<CellRun>,
}

/// One run (or capacity search) of a cell.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CellRun {
    /// 1-based.
    pub repeat: u32,
    /// What the stack restarted to reach this shape.
    pub reshape: String,
    pub observed: ObservedShape,
    /// The run's (or the search's) report directory.
    pub dir: String,
    /// The run's summary; for a capacity search, its knee step's (or, without a knee,
    /// its highest passing step's).
    pub summary: Option<Summary>,
    pub capacity: Option<CapacityFigures>,
    /// Why this run produced no figures.
    pub error: Option<String>,
}

impl CellRun {
    pub fn passed(&self) -> bool {
        match (&self.capacity, &self.summary) {
            (Some(c), _) => c.knee_deliveries_per_s.is_some(),
            (None, Some(s)) => super::format::run_verdict(s) == "PASS",
            _ => false,
        }
    }
}

/// Median, lowest and highest of a cell's repeats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut values: Vec<f64>) -> Option<Spread> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: values[0],
            max: values[n - 1],
        })
    }

    /// `12.3` or `12.3 (11.9–13.0)` when the repeats differ.
    fn show(&self, f: &dyn Fn(f64) -> String) -> String {
        if self.min == self.max {
            f(self.median)
        } else {
            format!("{} ({}–{})", f(self.median), f(self.min), f(self.max))
        }
    }
}

/// Which way is better for a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// A numeric column of the sweep table.
pub struct Column {
    pub title: &'static str,
    pub better: Better,
    value: fn(&CellRun) -> Option<f64>,
    format: fn(f64) -> String,
}

fn ms_f(us: f64) -> String {
    super::format::ms(us.round() as u64)
}

fn run_summary(r: &CellRun) -> Option<&Summary> {
    r.summary.as_ref()
}

/// The numeric columns: capacity (with `--capacity`), then the run figures.
pub fn columns(capacity: bool) -> Vec<Column> {
    let mut cols = Vec::new();
    if capacity {
        cols.push(Column {
            title: "capacity deliv/s",
            better: Better::Higher,
            value: |r| r.capacity.as_ref().and_then(|c| c.knee_deliveries_per_s),
            format: rate,
        });
    }
    cols.extend([
        Column {
            title: "delivered/s",
            better: Better::Higher,
            value: |r| run_summary(r).map(|s| s.throughput.delivered_per_s),
            format: rate,
        },
        Column {
            title: "p50 ms",
            better: Better::Lower,
            value: |r| run_summary(r).map(|s| s.latency.corrected.p50_us as f64),
            format: ms_f,
        },
        Column {
            title: "p99 ms",
            better: Better::Lower,
            value: |r| run_summary(r).map(|s| s.latency.corrected.p99_us as f64),
            format: ms_f,
        },
        Column {
            title: "p99.9 ms",
            better: Better::Lower,
            value: |r| run_summary(r).map(|s| s.latency.corrected.p999_us as f64),
            format: ms_f,
        },
        Column {
            title: "max lag",
            better: Better::Lower,
            value: |r| {
                run_summary(r)
                    .and_then(|s| s.kafka.as_ref())
                    .map(|k| k.max_lag as f64)
            },
            format: |v| count(v.round() as u64),
        },
        Column {
            title: "DB rows/s",
            better: Better::Higher,
            value: |r| {
                run_summary(r)
                    .and_then(|s| s.db.as_ref())
                    .map(|d| d.mean_rows_per_s)
            },
            format: rate,
        },
        Column {
            title: "server CPU s/M deliv",
            better: Better::Lower,
            value: |r| {
                run_summary(r)
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|res| res.servers.iter().map(|v| v.cpu_s_per_million).sum())
            },
            format: |v| format!("{v:.1}"),
        },
        Column {
            title: "broker CPU s/M deliv",
            better: Better::Lower,
            value: |r| {
                run_summary(r)
                    .and_then(|s| s.resources.as_ref())
                    .filter(|res| !res.brokers.is_empty())
                    .and_then(|res| res.brokers.iter().map(|v| v.cpu_s_per_million).sum())
            },
            format: |v| format!("{v:.1}"),
        },
        Column {
            title: "harness CPU s/M deliv",
            better: Better::Lower,
            value: |r| {
                run_summary(r)
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|res| res.harness_cpu_s_per_million)
            },
            format: |v| format!("{v:.1}"),
        },
    ]);
    cols
}

impl Column {
    pub fn spread(&self, cell: &SweepCell) -> Option<Spread> {
        Spread::of(cell.runs.iter().filter_map(|r| (self.value)(r)).collect())
    }

    pub fn show(&self, s: &Spread) -> String {
        s.show(&self.format)
    }
}

/// The index of the best cell per column (by median), when at least two cells have
/// the figure and they are not all equal. A cell with a run that could not be carried
/// out (or whose capacity search was harness-bound) is never the best.
pub fn best_cells(sweep: &Sweep, cols: &[Column]) -> Vec<Option<usize>> {
    cols.iter()
        .map(|col| {
            let medians: Vec<(usize, f64)> = sweep
                .cells
                .iter()
                .enumerate()
                .filter(|(_, c)| c.runs.iter().all(|r| r.error.is_none()))
                .filter_map(|(i, c)| col.spread(c).map(|s| (i, s.median)))
                .collect();
            if medians.len() < 2 || medians.iter().all(|m| m.1 == medians[0].1) {
                return None;
            }
            let pick = match col.better {
                Better::Lower => medians.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
                Better::Higher => medians.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
            };
            pick.map(|p| p.0)
        })
        .collect()
}

/// The leading text columns of a row: cell, read back, runs, lost, verdict.
pub const LEAD: [&str; 3] = ["cell", "read back", "runs"];
pub const TAIL: [&str; 2] = ["lost", "verdict"];

/// What the runs' readings amount to, `1b/3p/2s producer, RF 1` (readings that differ
/// between repeats joined by ` / `), so the table shows the brokers' and servers' word
/// beside the cell asked for.
pub fn read_back(cell: &SweepCell) -> String {
    let mut seen: Vec<String> = cell
        .runs
        .iter()
        .map(|r| {
            let o = &r.observed;
            match o.shape() {
                Some(s) => format!("{}, RF {}", s.label(), o.replication_factor),
                None => format!(
                    "{}b/{}p/{}s (no single persist strategy), RF {}",
                    o.broker_ids.len(),
                    o.partitions,
                    o.servers.len(),
                    o.replication_factor
                ),
            }
        })
        .collect();
    seen.dedup();
    if seen.is_empty() {
        "-".into()
    } else {
        seen.join(" / ")
    }
}

/// The whole row of a cell: lead, numeric columns, tail.
pub fn row(cell: &SweepCell, cols: &[Column]) -> Vec<String> {
    let passed = cell.runs.iter().filter(|r| r.passed()).count();
    let lost: u64 = cell
        .runs
        .iter()
        .filter_map(|r| r.summary.as_ref())
        .map(|s| s.integrity.lost)
        .sum();
    let errors = cell.runs.iter().filter(|r| r.error.is_some()).count();
    let mut out = vec![
        cell.label.clone(),
        read_back(cell),
        cell.runs.len().to_string(),
    ];
    for c in cols {
        out.push(c.spread(cell).map_or("-".into(), |s| c.show(&s)));
    }
    out.push(count(lost));
    out.push(if cell.runs.is_empty() {
        "not run".into()
    } else if errors > 0 {
        format!("{errors} of {} could not run", cell.runs.len())
    } else {
        format!("{passed} of {} pass", cell.runs.len())
    });
    out
}

/// The sweep as a console table.
pub fn console_table(sweep: &Sweep) -> String {
    let cols = columns(sweep.capacity);
    let mut head: Vec<String> = LEAD.iter().map(|s| s.to_string()).collect();
    head.extend(cols.iter().map(|c| c.title.to_string()));
    head.extend(TAIL.iter().map(|s| s.to_string()));
    let rows: Vec<Vec<String>> = sweep.cells.iter().map(|c| row(c, &cols)).collect();
    super::format::text_grid(&head, &rows, LEAD.len())
}

impl Sweep {
    pub fn to_json(&self) -> Result<String, ReportError> {
        serde_json::to_string_pretty(self)
            .map_err(|source| ReportError::Parse { path: None, source })
    }

    /// Reads a `sweep.json`; another layout version is refused with both versions named.
    pub fn from_json(text: &str) -> Result<Sweep, ReportError> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|source| ReportError::Parse { path: None, source })?;
        let version = v.get("schema_version").and_then(|x| x.as_u64());
        if version != Some(u64::from(SWEEP_SCHEMA_VERSION)) {
            return Err(ReportError::Layout(format!(
                "sweep.json of schema version {}; this build reads version {SWEEP_SCHEMA_VERSION}",
                version.map_or("none".into(), |v| v.to_string())
            )));
        }
        serde_json::from_value(v).map_err(|source| ReportError::Parse { path: None, source })
    }
}

/// What [`write_sweep`] wrote.
#[derive(Debug, Clone)]
pub struct SweepFiles {
    pub json: PathBuf,
    pub html: PathBuf,
}

/// Writes `sweep.json` alone (after every run, so an interrupted sweep keeps its runs).
pub fn write_sweep_json(s: &Sweep, dir: &Path) -> Result<PathBuf, ReportError> {
    super::create_dir(dir)?;
    let json = dir.join(SWEEP_FILE);
    super::write_file(&json, s.to_json()?.as_bytes())?;
    Ok(json)
}

/// Writes `sweep.json`, the charts and `sweep.html` into `dir`.
pub fn write_sweep(s: &Sweep, dir: &Path) -> Result<SweepFiles, ReportError> {
    let json = write_sweep_json(s, dir)?;
    let charts = super::sweep_html::render_charts(s, dir)?;
    let html = dir.join(SWEEP_HTML);
    super::write_file(&html, super::sweep_html::render(s, &charts).as_bytes())?;
    Ok(SweepFiles { json, html })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_and_range() {
        let s = Spread::of(vec![3.0, 1.0, 2.0, f64::NAN]).expect("values");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(vec![4.0, 1.0]).expect("values");
        assert_eq!(s.median, 2.5);
        assert!(Spread::of(vec![]).is_none());
        assert_eq!(s.show(&|v| format!("{v}")), "2.5 (1–4)");
    }

    #[test]
    fn the_observed_shape_needs_servers_that_agree() {
        let server = |persist: &str| ObservedServer {
            instance: "s1".into(),
            url: "ws://x".into(),
            persist: persist.into(),
            topic: "t".into(),
            server_impl: String::new(),
        };
        let mut o = ObservedShape {
            broker_ids: vec![1, 2, 3],
            partitions: 6,
            replication_factor: 3,
            min_insync_replicas: 2,
            servers: vec![server("producer"), server("producer")],
        };
        assert_eq!(
            o.shape().map(|s| s.label()),
            Some("3b/6p/2s producer".to_string())
        );
        o.servers[1] = server("consumer");
        assert_eq!(o.shape(), None);
    }
}
