//! Run reports: one serde model, many renderers.
//!
//! The load engine fills a [`Summary`] ([`model`]) at the end of a run. Everything else
//! here only reads it:
//!
//! - [`write_report`] writes a report directory: `summary.json` (the model itself,
//!   versioned and schema-checked, loadable back with [`Summary::load`]), PNG charts
//!   ([`charts`]) and a self-contained `report.html` ([`html`]) with the charts inline;
//! - [`console_table`] ([`console`]) is the table printed at the end of a run;
//! - [`markdown`] ([`mod@markdown`]) is the summary a CI job posts.
//!
//! `schema/summary.schema.json` describes `summary.json`; a unit test validates a
//! sample summary against it, so the model and the schema cannot drift apart silently.

mod campaign_html;
pub mod capacity;
pub mod capacity_charts;
pub mod capacity_html;
pub mod charts;
pub mod compare;
pub mod compare_html;
pub mod console;
mod format;
pub mod html;
pub mod markdown;
pub mod model;
mod plot;
mod sample;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use capacity::{
    Capacity, CapacityStep, Check, FirstFailure, Knee, Offered, Outcome, Over, SearchSettings,
    StepPhase, StepVerdict, CAPACITY_SCHEMA_VERSION,
};
pub use console::console_table;
pub use format::{count as format_count, number as format_number, rate as format_rate};
pub use markdown::markdown;
pub use model::*;

/// File name of the model in a report directory.
pub const SUMMARY_FILE: &str = "summary.json";
/// File name of the HTML report in a report directory.
pub const HTML_FILE: &str = "report.html";

/// Why a report could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read run summary {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}is not a valid stompede summary.json: {source}", in_file(.path))]
    Parse {
        path: Option<PathBuf>,
        source: serde_json::Error,
    },
    #[error(
        "{}has schema_version {found}, but this build of stompede reads versions {} (it writes {SCHEMA_VERSION}); \
         record the baseline again with this version",
        in_file(.path),
        model::READABLE_SCHEMA_VERSIONS.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" and ")
    )]
    SchemaVersion {
        path: Option<PathBuf>,
        found: String,
    },
    #[error(
        "the run summary would not load back as a baseline ({source}); \
         a figure is probably NaN or infinite"
    )]
    NotLoadable { source: serde_json::Error },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot read the chart font {}: {source}; install the Debian package \
         fonts-dejavu-core (apt-get install fonts-dejavu-core) or set {} to a .ttf file",
        .path.display(), charts::FONT_ENV
    )]
    Font {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the chart font {} is not a usable TrueType/OpenType font; set {} to another .ttf file", .path.display(), charts::FONT_ENV)]
    InvalidFont { path: PathBuf },
    #[error("cannot draw chart {chart}: {message}")]
    Chart { chart: String, message: String },
}

fn in_file(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("{} ", p.display()),
        None => String::new(),
    }
}

impl ReportError {
    /// Names the file a parse or version error came from.
    pub(crate) fn at(self, file: &Path) -> ReportError {
        match self {
            ReportError::Parse { source, .. } => ReportError::Parse {
                path: Some(file.to_path_buf()),
                source,
            },
            ReportError::SchemaVersion { found, .. } => ReportError::SchemaVersion {
                path: Some(file.to_path_buf()),
                found,
            },
            other => other,
        }
    }
}

/// What [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFiles {
    pub dir: PathBuf,
    pub summary_json: PathBuf,
    pub html: PathBuf,
    /// PNG charts written, in report order.
    pub charts: Vec<PathBuf>,
    /// Charts not drawn for lack of data, with the reason (also shown in the HTML).
    pub skipped: Vec<SkippedChart>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SkippedChart {
    pub file: String,
    pub reason: String,
}

/// Writes the report directory `dir` (created if needed): `summary.json`, the charts
/// and `report.html`.
///
/// `summary.json` is written first, so the run's figures are on disk even if a chart
/// then fails (e.g. the chart font is missing); it is written again at the end with
/// `files.charts` listing the charts actually drawn.
pub fn write_report(summary: &Summary, dir: &Path) -> Result<ReportFiles, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let summary_json = dir.join(SUMMARY_FILE);
    write_file(&summary_json, summary.to_json()?.as_bytes())?;

    let rendered = charts::render_all(summary, dir)?;
    let mut final_summary = summary.clone();
    final_summary.files.charts = rendered.drawn.iter().map(|c| c.file.clone()).collect();
    write_file(&summary_json, final_summary.to_json()?.as_bytes())?;

    let html_path = dir.join(HTML_FILE);
    let page = html::render(&final_summary, &rendered.drawn, &rendered.skipped);
    write_file(&html_path, page.as_bytes())?;

    Ok(ReportFiles {
        dir: dir.to_path_buf(),
        summary_json,
        html: html_path,
        charts: rendered.drawn.iter().map(|c| dir.join(&c.file)).collect(),
        skipped: rendered.skipped,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}
