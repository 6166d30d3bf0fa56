//! Where a gate's renderings go: the JUnit XML and markdown files asked for, and the
//! markdown appended to `$GITHUB_STEP_SUMMARY` when GitHub Actions sets it.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::ReportError;

/// The environment variable GitHub Actions points at the job's summary file.
pub const STEP_SUMMARY_ENV: &str = "GITHUB_STEP_SUMMARY";

/// Writes `junit` and `markdown` where asked and appends `markdown` to the step summary
/// when `step_summary` names one; returns the files written.
pub fn write_gate_files(
    junit: Option<(&Path, &str)>,
    markdown: Option<(&Path, &str)>,
    step_summary: Option<(&Path, &str)>,
) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    for (path, text) in junit.into_iter().chain(markdown) {
        let fail = |source| ReportError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        std::fs::write(path, text).map_err(fail)?;
        written.push(path.to_path_buf());
    }
    if let Some((path, text)) = step_summary {
        let fail = |source| ReportError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(fail)?;
        file.write_all(text.as_bytes()).map_err(fail)?;
        file.write_all(b"\n").map_err(fail)?;
        written.push(path.to_path_buf());
    }
    Ok(written)
}

/// `$GITHUB_STEP_SUMMARY`, when set and not empty.
pub fn step_summary_path() -> Option<PathBuf> {
    std::env::var_os(STEP_SUMMARY_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_files_and_appends_to_the_step_summary() {
        let dir = std::env::temp_dir().join(format!("stompede-gate-files-{}", std::process::id()));
        let junit = dir.join("out/gate.xml");
        let md = dir.join("gate.md");
        let summary = dir.join("step-summary.md");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&summary, "earlier step\n").unwrap();
        let written = write_gate_files(
            Some((&junit, "<x/>")),
            Some((&md, "# md")),
            Some((&summary, "# md")),
        )
        .unwrap();
        assert_eq!(written, vec![junit.clone(), md.clone(), summary.clone()]);
        assert_eq!(std::fs::read_to_string(&junit).unwrap(), "<x/>");
        assert_eq!(
            std::fs::read_to_string(&summary).unwrap(),
            "earlier step\n# md\n"
        );
        let e = write_gate_files(Some((&summary.join("x"), "")), None, None).unwrap_err();
        assert!(e.to_string().contains("step-summary.md/x"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
