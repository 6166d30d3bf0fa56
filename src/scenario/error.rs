//! The one error type of scenario loading.
//!
//! Every error that reaches a person names the file, the key path inside it
//! (`load.rate`, `rooms[1].members`), the offending value and what is allowed, plus the
//! line and column when the TOML parser or a recorded span can point at it. The parts are
//! kept as fields so callers (the CLI, tests) can inspect them; `Display` renders them on
//! one line in the `file:line:column: key = value: message` shape editors understand.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A 1-based line and column (in characters) inside a scenario file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// Converts a byte offset into `text` to a line and column. Offsets past the end or
    /// inside a multi-byte character are clamped to the nearest valid position.
    pub fn from_offset(text: &str, offset: usize) -> Pos {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Pos { line, column }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a scenario could not be loaded or an override could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read at all.
    #[error("cannot read scenario file {}: {source} (pass the path of a scenario .toml file, e.g. scenarios/smoke.toml)", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, or a key or value does not fit the format.
    #[error("{}", render(.file, .at, .key, .value, .message))]
    Invalid {
        /// The scenario file.
        file: PathBuf,
        /// Where in the file, when known.
        at: Option<Pos>,
        /// Key path such as `load.rate` or `rooms[1].members`; `None` for TOML syntax errors.
        key: Option<String>,
        /// The offending value as written (TOML syntax), when there is one.
        value: Option<String>,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl ScenarioError {
    /// The key path the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ScenarioError::Invalid { key, .. } => key.as_deref(),
            ScenarioError::Read { .. } => None,
        }
    }

    /// Line and column of the error, if known.
    pub fn pos(&self) -> Option<Pos> {
        match self {
            ScenarioError::Invalid { at, .. } => *at,
            ScenarioError::Read { .. } => None,
        }
    }

    /// The scenario file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            ScenarioError::Invalid { file, .. } | ScenarioError::Read { path: file, .. } => file,
        }
    }
}

fn render(
    file: &Path,
    at: &Option<Pos>,
    key: &Option<String>,
    value: &Option<String>,
    message: &str,
) -> String {
    let mut out = file.display().to_string();
    if let Some(at) = at {
        out.push_str(&format!(":{at}"));
    }
    out.push_str(": ");
    if let Some(key) = key {
        out.push_str(key);
        if let Some(value) = value {
            out.push_str(" = ");
            out.push_str(value);
        }
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

/// Turns the TOML library's error into ours: line and column from its span, the key
/// path found by [`super::locate`], and a message in plain words.
pub(crate) fn from_toml(
    file: &Path,
    text: &str,
    err: &toml::de::Error,
    key: Option<String>,
) -> ScenarioError {
    let span: Option<Range<usize>> = err.span();
    let at = span.map(|s| Pos::from_offset(text, s.start));
    let message = tidy_serde_message(err.message().trim());
    let message = match &key {
        None => format!("not valid TOML: {message}"),
        Some(k) if k.contains('.') && message.starts_with("unknown key") => {
            let last = k.rsplit('.').next().unwrap_or(k);
            if TOP_LEVEL.contains(&last) {
                format!(
                    "{message} ({last} is a top-level key: move it above the first [table] header)"
                )
            } else {
                message
            }
        }
        Some(_) => message,
    };
    ScenarioError::Invalid {
        file: file.to_path_buf(),
        at,
        key,
        value: None,
        message,
    }
}

/// Keys that belong before any `[table]` header; written below one, TOML puts them
/// inside that table.
const TOP_LEVEL: &[&str] = &["name", "description", "duration", "warmup", "grace", "seed"];

/// Rewrites serde's Rust type names into the words a scenario author uses.
fn tidy_serde_message(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        (
            "expected u32",
            "expected a whole number >= 0 (at most 4294967295)",
        ),
        ("expected u64", "expected a whole number >= 0"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected a string in double quotes"),
        (
            "expected a sequence",
            "expected an array like [\"a\", \"b\"]",
        ),
    ];
    let mut out = message.to_string();
    if let Some(rest) = out.strip_prefix("unknown field") {
        out = format!("unknown key{rest}")
            .replacen(", expected one of ", "; allowed keys here: ", 1)
            .replacen(", expected ", "; allowed key here: ", 1)
            .replacen(", there are no fields", "; this table takes no keys", 1);
    }
    if let Some(rest) = out.strip_prefix("unknown variant") {
        out = format!("unknown value{rest}").replacen(", expected ", "; allowed: ", 1);
    }
    for (from, to) in WORDS {
        if out.ends_with(from) {
            out.truncate(out.len() - from.len());
            out.push_str(to);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_pos_from_offset_counts_lines_and_chars() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(Pos::from_offset(text, 0), Pos { line: 1, column: 1 });
        assert_eq!(Pos::from_offset(text, 6), Pos { line: 2, column: 1 });
        // 'é' is two bytes: the '=' after "bé " is the 4th character of line 2.
        let eq = text.rfind('=').unwrap();
        assert_eq!(Pos::from_offset(text, eq), Pos { line: 2, column: 4 });
        assert_eq!(Pos::from_offset(text, 999), Pos { line: 3, column: 1 });
    }
}
