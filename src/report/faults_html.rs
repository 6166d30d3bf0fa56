//! The "Faults and recovery" section of `report.html`: one table row per fault of the
//! scenario, and the run-wide durability figures. Every text taken from the summary
//! goes through [`escape`].

use std::fmt::Write;

use super::format::{count, millis, secs};
use super::html::escape;
use super::{FaultReport, FaultsSummary, Summary};

/// The section, or nothing when the run had no faults.
pub fn section(s: &Summary) -> String {
    let Some(f) = &s.faults else {
        return String::new();
    };
    let mut h = String::from("<section id=\"faults\">\n<h2>Faults and recovery</h2>\n");
    h.push_str(
        "<p class=\"sub\">Times on the run's timeline. An outage is the longest stretch without a \
         delivery to the affected users around the fault; the charts mark each fault with a solid \
         line where it was injected (F1, F2, …), a shaded band while it lasted and a dashed line \
         where deliveries came back.</p>\n",
    );
    if f.injected.is_empty() {
        h.push_str("<p class=\"note\">The scenario injected no fault.</p>\n");
    } else {
        h.push_str(&fault_table(&f.injected));
    }
    h.push_str(&durability(f));
    h.push_str("</section>\n");
    h
}

const HEAD: [&str; 13] = [
    "#",
    "fault",
    "target",
    "injected at",
    "lifted at",
    "affected",
    "outage",
    "first delivery after",
    "p99 before → recovered after",
    "send failures / receipt timeouts / longest receipt wait",
    "disconnected → reconnected",
    "lost in window",
    "the others' p99 before → during",
];

fn fault_table(faults: &[FaultReport]) -> String {
    let mut t = String::from("<div class=\"wide\">\n<table class=\"faults\">\n<tr>");
    for (i, c) in HEAD.iter().enumerate() {
        let class = if i == 0 || i >= 3 {
            " class=\"num\""
        } else {
            ""
        };
        let _ = write!(t, "<th{class}>{}</th>", escape(c));
    }
    t.push_str("</tr>\n");
    for f in faults {
        t.push_str(&row(f));
    }
    t.push_str("</table>\n</div>\n");
    t
}

/// A table cell of HTML already escaped, right-aligned, with an optional class.
fn num(html: &str, class: Option<&str>) -> String {
    match class {
        Some(c) => format!("<td class=\"num {c}\">{html}</td>"),
        None => format!("<td class=\"num\">{html}</td>"),
    }
}

fn when(t: Option<f64>) -> String {
    t.map_or("-".to_string(), |t| format!("{t:.1} s"))
}

fn row(f: &FaultReport) -> String {
    let mut r = format!(
        "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td>",
        f.index,
        escape(&f.kind),
        escape(&f.target)
    );
    let Some(at) = f.at_s else {
        let _ = writeln!(
            r,
            "<td class=\"note\" colspan=\"10\">not injected: the run ended before {} after sending started</td></tr>",
            escape(&secs(f.planned_s))
        );
        return r;
    };
    r.push_str(&num(&when(Some(at)), None));
    if !f.ok {
        let why = f.error.as_deref().unwrap_or("no reason given");
        let _ = writeln!(
            r,
            "<td class=\"fail\" colspan=\"9\">injection FAILED: {}</td></tr>",
            escape(why.trim()).replace('\n', "<br>")
        );
        return r;
    }
    r.push_str(&num(&when(f.end_s), None));
    let _ = write!(
        r,
        "<td>{} ({})</td>",
        escape(&f.affected),
        count(f.affected_users)
    );
    match &f.outage {
        Some(o) => {
            r.push_str(&num(
                &format!(
                    "{}<br><small>{:.2}–{:.2} s</small>",
                    secs(o.length_s),
                    o.start_s,
                    o.end_s
                ),
                None,
            ));
            if o.recovered {
                r.push_str(&num(&format!("+{}", secs(o.first_delivery_after_s)), None));
            } else {
                r.push_str(&num("none before<br>sending ended", Some("fail")));
            }
        }
        None => {
            r.push_str(&num("none", Some("pass")));
            r.push_str(&num("-", None));
        }
    }
    let p99 = match (f.p99_before_ms, f.p99_recovered_s) {
        (Some(b), Some(back)) => (format!("{} →<br>+{}", millis(b), secs(back)), None),
        (Some(b), None) => (format!("{} →<br>not back", millis(b)), Some("fail")),
        (None, _) => ("-".to_string(), None),
    };
    r.push_str(&num(&p99.0, p99.1));
    r.push_str(&num(
        &format!(
            "{} / {} /<br>{}",
            count(f.send_failures),
            count(f.receipt_timeouts),
            f.receipt_max_ms.map_or("-".to_string(), millis)
        ),
        None,
    ));
    let mut reconnect = if f.disconnected == 0 {
        "0".to_string()
    } else {
        format!("{} → {}", count(f.disconnected), count(f.reconnected))
    };
    if let Some(t) = &f.reconnect_ms {
        let _ = write!(
            reconnect,
            "<br><small>p50 {}<br>p99 {}<br>max {}</small>",
            millis(t.p50_ms),
            millis(t.p99_ms),
            millis(t.max_ms)
        );
    }
    let class = (f.reconnected < f.disconnected).then_some("fail");
    r.push_str(&num(&reconnect, class));
    r.push_str(&num(&f.lost_in_window.map_or("-".to_string(), count), None));
    r.push_str(&num(
        &f.others.as_ref().map_or("-".to_string(), |o| {
            let ms = |v: Option<f64>| v.map_or("-".to_string(), millis);
            format!(
                "{} → {}<br><small>{}</small>",
                ms(o.p99_before_ms),
                ms(o.p99_during_ms),
                escape(&o.who)
            )
        }),
        None,
    ));
    r.push_str("</tr>\n");
    r
}

/// Two label/value tables: what a RECEIPT promised (the two figures that must be 0 in
/// green or red) and what disconnected users missed.
fn durability(f: &FaultsSummary) -> String {
    let d = &f.durability;
    let zero = |n: u64| {
        let class = if n == 0 { "pass" } else { "fail" };
        format!("<td class=\"num {class}\">{}</td>", count(n))
    };
    let mut h = String::from("<div class=\"grid\">\n<table class=\"kv\">\n");
    let _ = writeln!(
        h,
        "<tr><th>receipted messages</th><td class=\"num\">{}</td></tr>",
        count(d.receipted)
    );
    let _ = writeln!(
        h,
        "<tr><th>receipted, never delivered (must be 0)</th>{}</tr>",
        zero(d.receipted_lost)
    );
    let missing = match d.receipted_missing_in_db {
        Some(n) => zero(n),
        None => "<td class=\"num note\">not audited</td>".to_string(),
    };
    let _ = writeln!(
        h,
        "<tr><th>receipted, missing in the database (must be 0)</th>{missing}</tr>"
    );
    h.push_str("</table>\n<table class=\"kv\">\n");
    let known = |n: Option<u64>| n.map_or("not known".to_string(), count);
    for (label, value) in [
        (
            "deliveries missed while disconnected (not loss)",
            count(f.missed_while_disconnected),
        ),
        (
            "sends skipped while disconnected",
            count(f.unsent_while_disconnected),
        ),
        ("lost inside fault windows", known(f.lost_in_fault_windows)),
        (
            "lost outside fault windows",
            known(f.lost_outside_fault_windows),
        ),
    ] {
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td class=\"num\">{}</td></tr>",
            escape(label),
            escape(&value)
        );
    }
    h.push_str("</table>\n</div>\n");
    h
}
