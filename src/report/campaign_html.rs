//! Pieces shared by the HTML pages of multi-run jobs (capacity, compare): one look, the
//! same escaping as `report.html` ([`super::html::escape`]), charts inlined as base64.

use std::fmt::Write;

use base64::Engine;

use super::charts::DrawnChart;
use super::html::escape;
use super::SkippedChart;

pub(super) const CSS: &str = r#"
body { font: 15px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; color: #222; margin: 0; background: #f4f5f7; }
main { max-width: 1100px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 1.6em; margin: 0.6em 0 0.2em; }
h2 { font-size: 1.25em; margin: 0 0 0.6em; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 16px 20px; margin: 16px 0; overflow-x: auto; }
.sub { color: #555; margin: 0; }
.answer { border-width: 2px; font-size: 1.15em; }
.answer.pass { border-color: #2c9f45; background: #eef8f0; }
.answer.fail { border-color: #c62828; background: #fdecec; }
.answer.bound { border-color: #b26a00; background: #fff5e5; }
td.pass { color: #1e7b34; font-weight: bold; }
td.fail { color: #b71c1c; font-weight: bold; }
tr.knee td { background: #eef8f0; }
tr.first td { background: #fdecec; }
table { border-collapse: collapse; margin: 0.4em 0 0.8em; font-size: 0.9em; }
th, td { padding: 4px 7px; border-bottom: 1px solid #e3e6ea; text-align: left; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { background: none; font-weight: normal; color: #555; }
figure { margin: 12px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e6ea; }
figcaption { color: #555; font-size: 0.9em; }
.note { color: #555; font-style: italic; }
"#;

/// The page up to and including `<main>`.
pub(super) fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        escape(title)
    )
}

pub(super) const FOOT: &str = "</main>\n</body>\n</html>\n";

/// A table cell: text (escaped), its class (`num`, `pass`, `fail` or empty).
pub(super) type Cell = (String, &'static str);

/// A table whose rows may carry a class (`knee`, `first`).
pub(super) fn table(head: &[&str], rows: &[(Vec<Cell>, &str)]) -> String {
    let mut t = String::from("<table>\n<tr>");
    for (i, c) in head.iter().enumerate() {
        let class = if i > 0 { " class=\"num\"" } else { "" };
        let _ = write!(t, "<th{class}>{}</th>", escape(c));
    }
    t.push_str("</tr>\n");
    for (cells, class) in rows {
        if class.is_empty() {
            t.push_str("<tr>");
        } else {
            let _ = write!(t, "<tr class=\"{class}\">");
        }
        for (text, class) in cells {
            if class.is_empty() {
                let _ = write!(t, "<td>{}</td>", escape(text));
            } else {
                let _ = write!(t, "<td class=\"{class}\">{}</td>", escape(text));
            }
        }
        t.push_str("</tr>\n");
    }
    t.push_str("</table>\n");
    t
}

/// A two-column label/value table.
pub(super) fn kv_table(rows: &[(&str, String)]) -> String {
    let mut t = String::from("<table class=\"kv\">\n");
    for (k, v) in rows {
        let _ = writeln!(t, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    t.push_str("</table>\n");
    t
}

/// A chart inlined, or why it is missing.
pub(super) fn chart(file: &str, charts: &[DrawnChart], skipped: &[SkippedChart]) -> String {
    if let Some(c) = charts.iter().find(|c| c.file == file) {
        let data = base64::engine::general_purpose::STANDARD.encode(&c.png);
        return format!(
            "<figure><img src=\"data:image/png;base64,{data}\" alt=\"{}\" width=\"1000\" height=\"500\">\
             <figcaption>{} (<code>{}</code>)</figcaption></figure>\n",
            escape(&c.title),
            escape(&c.title),
            escape(&c.file)
        );
    }
    match skipped.iter().find(|s| s.file == file) {
        Some(s) => format!(
            "<p class=\"note\">No chart <code>{}</code>: {}.</p>\n",
            escape(&s.file),
            escape(&s.reason)
        ),
        None => String::new(),
    }
}
