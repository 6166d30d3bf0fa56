//! Run reports: one serde model, many renderers.
//!
//! The load engine fills a [`Summary`] ([`model`]) at the end of a run. Everything else
//! here only reads it:
//!
//! - [`write_report`] writes a report directory: `summary.json` (the model itself,
//!   versioned and schema-checked, loadable back with [`Summary::load`]), PNG charts
//!   ([`charts`]) and a self-contained `report.html` ([`html`]) with the charts inline.
//!   A chart that cannot be drawn becomes a note in the report, never an error: the
//!   figures are what the run is judged by;
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
pub mod faults_html;
pub mod format;
pub mod gate;
pub mod gate_baseline;
pub mod gate_files;
pub mod gate_text;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod model;
mod model_faults;
mod plot;
mod sample;
pub mod sweep;
pub mod sweep_html;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_faults;

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
    /// A campaign file (`sweep.json`, …) of a layout this build does not read.
    #[error("{0}")]
    Layout(String),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
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
    /// Charts that had data but could not be drawn, with the error (also in the
    /// summary's notes, so the console, the HTML and the markdown show it).
    pub failed: Vec<SkippedChart>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SkippedChart {
    pub file: String,
    pub reason: String,
}

/// Writes the report directory `dir` (created if needed): the charts, `summary.json`
/// and `report.html`.
///
/// Only a failure to create `dir` or to write `summary.json` or `report.html` is an
/// error. A chart that cannot be drawn is left out and named in the notes of the
/// written summary, with the reason; `files.charts` lists the charts actually drawn.
pub fn write_report(summary: &Summary, dir: &Path) -> Result<ReportFiles, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let rendered = charts::render_all(summary, dir);
    let mut final_summary = summary.clone();
    final_summary.files.charts = rendered.drawn.iter().map(|c| c.file.clone()).collect();
    final_summary.notes.extend(rendered.failed.iter().map(|f| {
        format!(
            "chart {} could not be drawn: {}; every figure is still in this report",
            f.file, f.reason
        )
    }));
    let summary_json = dir.join(SUMMARY_FILE);
    write_file(&summary_json, final_summary.to_json()?.as_bytes())?;

    let html_path = dir.join(HTML_FILE);
    let not_drawn: Vec<SkippedChart> = rendered
        .skipped
        .iter()
        .cloned()
        .chain(rendered.failed.iter().map(|f| SkippedChart {
            file: f.file.clone(),
            reason: format!("it could not be drawn: {}", f.reason),
        }))
        .collect();
    let page = html::render(&final_summary, &rendered.drawn, &not_drawn);
    write_file(&html_path, page.as_bytes())?;

    Ok(ReportFiles {
        dir: dir.to_path_buf(),
        summary_json,
        html: html_path,
        charts: rendered.drawn.iter().map(|c| dir.join(&c.file)).collect(),
        skipped: rendered.skipped,
        failed: rendered.failed,
    })
}

/// Creates a report directory, naming it if that fails.
pub(crate) fn create_dir(dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}
