//! `stompede compare`: existing runs side by side, from their `summary.json` files, from
//! the knee of `capacity.json` files, or from report directories holding either.
//!
//! Each input is read whole and checked before anything is written: a summary of a
//! layout this build cannot read is refused with its version named (versions 1 and 2
//! are read, version 1's missing figures as absent, see [`Summary::from_json`]).

use std::path::{Path, PathBuf};

use crate::report::capacity::{CAPACITY_FILE, CAPACITY_KIND};
use crate::report::compare::{
    write_comparison, CapacityFigures, Comparison, ComparisonEntry, Source,
    COMPARISON_SCHEMA_VERSION,
};
use crate::report::sweep::{Sweep, SWEEP_FILE, SWEEP_KIND};
use crate::report::sweep_html::as_comparison;
use crate::report::{
    rfc3339, Capacity, CapacityStep, ReportError, Summary, ToolInfo, SUMMARY_FILE,
};

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{}: {source}", .path.display())]
    Input { path: PathBuf, source: ReportError },
    #[error(
        "{}: a directory without {SUMMARY_FILE} or {CAPACITY_FILE}; give a run's or a capacity search's report directory, or the file itself",
        .0.display()
    )]
    EmptyDir(PathBuf),
    #[error(
        "{}: a capacity search (or sweep) that ran nothing has nothing to compare",
        .0.display()
    )]
    NoSteps(PathBuf),
    #[error("only one run to compare; give two or more inputs, or a sweep with two or more cells that ran")]
    TooFew,
    #[error("cannot write the comparison to {}: {source}", .dir.display())]
    Report { dir: PathBuf, source: ReportError },
}

impl CompareError {
    /// True when an input is at fault (rather than writing the output).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, CompareError::Report { .. })
    }
}

/// A finished comparison and where it was written.
pub struct CompareOutcome {
    pub comparison: Comparison,
    pub dir: PathBuf,
}

/// Reads one input as an entry labelled `label`.
pub fn load_entry(path: &Path, label: &str) -> Result<ComparisonEntry, CompareError> {
    let file = if path.is_dir() {
        [CAPACITY_FILE, SUMMARY_FILE]
            .iter()
            .map(|f| path.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| CompareError::EmptyDir(path.to_path_buf()))?
    } else {
        path.to_path_buf()
    };
    let input = |source: ReportError| CompareError::Input {
        path: file.clone(),
        source,
    };
    let text = std::fs::read_to_string(&file).map_err(|source| {
        input(ReportError::Read {
            path: file.clone(),
            source,
        })
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|source| input(ReportError::Parse { path: None, source }))?;
    let version = value.get("schema_version").and_then(|v| v.as_u64());
    let name = file.display().to_string();
    if value.get("kind").and_then(|k| k.as_str()) == Some(CAPACITY_KIND) {
        let capacity = Capacity::from_json(&text).map_err(input)?;
        return from_capacity(capacity, label, name, &file);
    }
    let summary = Summary::from_json(&text).map_err(input)?;
    let mut notes = Vec::new();
    if version != Some(u64::from(crate::report::SCHEMA_VERSION)) {
        notes.push(format!(
            "read from summary schema version {}: figures that version did not record are absent",
            version.map_or("none".into(), |v| v.to_string())
        ));
    }
    Ok(ComparisonEntry {
        label: label.into(),
        file: name,
        source: Source::Run,
        notes,
        capacity: None,
        summary,
    })
}

/// The step that stands for a capacity search: its knee, else its highest passing
/// step, else its first step; with the reason.
pub fn representative_step(c: &Capacity) -> Option<(&CapacityStep, &'static str)> {
    let highest_passing = c
        .steps
        .iter()
        .filter(|s| s.verdict.passed)
        .max_by(|a, b| a.value.total_cmp(&b.value));
    match (c.knee_step(), highest_passing, c.steps.first()) {
        (Some(k), _, _) => Some((k, "the knee")),
        (None, Some(p), _) => Some((p, "the highest passing step (no knee was claimed)")),
        (None, None, Some(f)) => Some((f, "the first step (no step passed)")),
        (None, None, None) => None,
    }
}

/// A capacity search's entry: its knee step, else its highest passing step, else its
/// first step, saying which.
fn from_capacity(
    c: Capacity,
    label: &str,
    name: String,
    file: &Path,
) -> Result<ComparisonEntry, CompareError> {
    let (step, why) =
        representative_step(&c).ok_or_else(|| CompareError::NoSteps(file.to_path_buf()))?;
    let note = format!(
        "{why}: step {} of a capacity search over {} ({})",
        step.index,
        c.search.over.as_str(),
        step.dir
    );
    Ok(ComparisonEntry {
        label: label.into(),
        file: name,
        source: Source::Capacity,
        notes: vec![note],
        capacity: Some(CapacityFigures {
            outcome: c.outcome,
            answer: c.answer.clone(),
            knee_deliveries_per_s: c.knee.as_ref().map(|k| k.offered.deliveries_per_s),
        }),
        summary: step.summary.clone(),
    })
}

/// `A`, `B`, … `Z`, `AA`, `AB`, …
pub fn label(i: usize) -> String {
    let letter = |n: usize| char::from(b'A' + (n % 26) as u8);
    if i < 26 {
        letter(i).to_string()
    } else {
        format!("{}{}", letter(i / 26 - 1), letter(i))
    }
}

/// A `sweep.json` (or a sweep's directory) as one entry per cell, each its run with the
/// median p99; `None` when the input is not a sweep.
fn load_sweep(path: &Path) -> Result<Option<Vec<ComparisonEntry>>, CompareError> {
    let file = if path.is_dir() {
        path.join(SWEEP_FILE)
    } else {
        path.to_path_buf()
    };
    if !file.is_file() {
        return Ok(None);
    }
    let input = |source: ReportError| CompareError::Input {
        path: file.clone(),
        source,
    };
    let text = std::fs::read_to_string(&file).map_err(|source| {
        input(ReportError::Read {
            path: file.clone(),
            source,
        })
    })?;
    let is_sweep = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("kind")
                .and_then(|k| k.as_str())
                .map(|k| k == SWEEP_KIND)
        })
        .unwrap_or(false);
    if !is_sweep {
        return Ok(None);
    }
    let sweep = Sweep::from_json(&text).map_err(input)?;
    let entries = as_comparison(&sweep, &file.display().to_string()).entries;
    if entries.is_empty() {
        return Err(CompareError::NoSteps(file));
    }
    Ok(Some(entries))
}

/// Reads every input, then writes `<out>/compare-<UTC timestamp>/`.
pub fn compare(inputs: &[PathBuf], out: &Path) -> Result<CompareOutcome, CompareError> {
    let mut entries: Vec<ComparisonEntry> = Vec::new();
    for p in inputs {
        if let Some(cells) = load_sweep(p)? {
            for mut e in cells {
                e.label = format!("{} {}", label(entries.len()), e.label);
                entries.push(e);
            }
        } else {
            entries.push(load_entry(p, &label(entries.len()))?);
        }
    }
    if entries.len() < 2 {
        return Err(CompareError::TooFew);
    }
    let now = chrono::Utc::now();
    let comparison = Comparison {
        schema_version: COMPARISON_SCHEMA_VERSION,
        kind: "comparison".into(),
        tool: ToolInfo::current(),
        created_at: rfc3339(now),
        entries,
    };
    let dir = out.join(format!("compare-{}", now.format("%Y%m%dT%H%M%SZ")));
    write_comparison(&comparison, &dir).map_err(|source| CompareError::Report {
        dir: dir.clone(),
        source,
    })?;
    Ok(CompareOutcome { comparison, dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_run_past_z() {
        assert_eq!(
            [0, 1, 25, 26, 27, 51, 52].map(label),
            ["A", "B", "Z", "AA", "AB", "AZ", "BA"].map(String::from)
        );
    }
}
