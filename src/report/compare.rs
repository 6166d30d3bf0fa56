//! The comparison model: several runs side by side, each from a `summary.json` or from
//! the knee of a `capacity.json`, written to `comparison.json`.
//!
//! `crate::campaign::compare` loads the inputs (refusing a layout this build cannot
//! read, with its version named) and fills a [`Comparison`]; [`write_comparison`] writes
//! the JSON, the overlaid latency-percentile chart and `compare.html`
//! ([`super::compare_html`]); [`console_table`] is the table printed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::format::{count, ms, rate};
use super::{Outcome, ReportError, ServerImpl, Summary, ToolInfo};

/// Version of the `comparison.json` layout.
pub const COMPARISON_SCHEMA_VERSION: u32 = 1;
pub const COMPARISON_FILE: &str = "comparison.json";
pub const COMPARE_HTML: &str = "compare.html";

/// Several runs side by side.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Comparison {
    pub schema_version: u32,
    /// Always `"comparison"`.
    pub kind: String,
    pub tool: ToolInfo,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// In the order given; the first is the reference for the relative columns.
    pub entries: Vec<ComparisonEntry>,
}

/// What an entry was read from.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A single run's `summary.json`.
    Run,
    /// One step of a `capacity.json`.
    Capacity,
}

/// One side of the comparison.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ComparisonEntry {
    /// `A`, `B`, … in the order given.
    pub label: String,
    /// The file it was read from, as given.
    pub file: String,
    pub source: Source,
    /// How the run was chosen or read, e.g. "the knee (step 6) of a capacity search",
    /// or "read from schema version 1".
    pub notes: Vec<String>,
    /// For a capacity search: its outcome, answer and knee.
    pub capacity: Option<CapacityFigures>,
    pub summary: Summary,
}

/// The capacity search an entry came from.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CapacityFigures {
    pub outcome: Outcome,
    pub answer: String,
    /// Offered deliveries/s at the knee.
    pub knee_deliveries_per_s: Option<f64>,
}

/// The topology in a few words: `1b/3p/2s producer`, or the URLs' count for external.
pub fn shape(s: &Summary) -> String {
    match &s.target.stack {
        Some(st) => {
            let mut text = format!(
                "{}b/{}p/{}s {}",
                st.brokers,
                st.partitions,
                st.servers,
                st.persist.as_str()
            );
            if st.server_impl != ServerImpl::Stompede {
                text += &format!(" {}", st.server_impl.as_str());
            }
            if st.shared_fanout_group {
                text += " shared-group";
            }
            text
        }
        None => format!("external ({} url)", s.target.urls.len()),
    }
}

/// Server CPU seconds over the run, summed over instances.
pub fn server_cpu_s(s: &Summary) -> Option<f64> {
    s.resources
        .as_ref()
        .and_then(|r| r.servers.iter().map(|v| v.cpu_s).sum())
}

/// Relative change against the reference: `+12.3%`.
pub fn relative(value: f64, reference: f64) -> String {
    if reference == 0.0 || !value.is_finite() || !reference.is_finite() {
        return "-".into();
    }
    format!("{:+.1}%", 100.0 * (value - reference) / reference)
}

/// The columns of the comparison table, shared by the console and the HTML page.
pub const COLUMNS: [&str; 15] = [
    "",
    "scenario",
    "target",
    "capacity deliv/s",
    "sent/s",
    "delivered/s",
    "p50 ms",
    "p99 ms",
    "p99 vs A",
    "p99.9 ms",
    "max ms",
    "lost",
    "max lag",
    "DB rows/s",
    "verdict",
];

/// One row of the comparison table.
pub fn row(e: &ComparisonEntry, reference: &ComparisonEntry) -> Vec<String> {
    let s = &e.summary;
    let lat = &s.latency.corrected;
    let p99 = |x: &Summary| x.latency.corrected.p99_us as f64;
    vec![
        e.label.clone(),
        s.scenario.name.clone(),
        shape(s),
        e.capacity
            .as_ref()
            .and_then(|c| c.knee_deliveries_per_s)
            .map_or("-".into(), rate),
        rate(s.throughput.sent_per_s),
        rate(s.throughput.delivered_per_s),
        ms(lat.p50_us),
        ms(lat.p99_us),
        if std::ptr::eq(e, reference) {
            "-".into()
        } else {
            relative(p99(s), p99(&reference.summary))
        },
        ms(lat.p999_us),
        ms(lat.max_us),
        count(s.integrity.lost),
        s.kafka.as_ref().map_or("-".into(), |k| count(k.max_lag)),
        s.db.as_ref()
            .map_or("-".into(), |d| rate(d.mean_rows_per_s)),
        super::format::run_verdict(s).to_string(),
    ]
}

/// The comparison as a console table, then one line per entry naming its file.
pub fn console_table(c: &Comparison) -> String {
    let Some(reference) = c.entries.first() else {
        return String::new();
    };
    let rows: Vec<Vec<String>> = c.entries.iter().map(|e| row(e, reference)).collect();
    let mut out = super::format::text_grid(&COLUMNS.map(String::from), &rows, 3);
    for e in &c.entries {
        out += &format!("{}: {}", e.label, e.file);
        for n in &e.notes {
            out += &format!("; {n}");
        }
        out.push('\n');
    }
    out
}

impl Comparison {
    pub fn to_json(&self) -> Result<String, ReportError> {
        serde_json::to_string_pretty(self)
            .map_err(|source| ReportError::Parse { path: None, source })
    }
}

/// What [`write_comparison`] wrote.
#[derive(Debug, Clone)]
pub struct ComparisonFiles {
    pub json: PathBuf,
    pub html: PathBuf,
    pub charts: Vec<PathBuf>,
}

/// Writes `comparison.json`, the chart and `compare.html` into `dir`.
pub fn write_comparison(c: &Comparison, dir: &Path) -> Result<ComparisonFiles, ReportError> {
    let write = super::write_file;
    super::create_dir(dir)?;
    let json = dir.join(COMPARISON_FILE);
    write(&json, c.to_json()?.as_bytes())?;
    let charts = super::compare_html::render_charts(c, dir)?;
    let html = dir.join(COMPARE_HTML);
    write(&html, super::compare_html::render(c, &charts).as_bytes())?;
    Ok(ComparisonFiles {
        json,
        html,
        charts: charts.drawn.iter().map(|c| dir.join(&c.file)).collect(),
    })
}
