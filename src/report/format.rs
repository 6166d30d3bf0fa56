//! Number formatting shared by the renderers, so the console, markdown and HTML show
//! the same figure the same way.

/// Microseconds as milliseconds with two decimals: `12345` -> `"12.35"`.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// An integer with thousands separators: `1234567` -> `"1,234,567"`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An optional count, `"-"` when absent.
pub fn count_opt(n: Option<u64>) -> String {
    n.map(count).unwrap_or_else(|| "-".into())
}

/// A rate: thousands separators, one decimal below 100.
pub fn rate(r: f64) -> String {
    if !r.is_finite() {
        return r.to_string();
    }
    if r.abs() < 100.0 {
        format!("{r:.1}")
    } else {
        let sign = if r < 0.0 { "-" } else { "" };
        format!("{sign}{}", count(r.abs().round() as u64))
    }
}

/// A ratio in [0, 1] as a percentage with enough digits to see small losses.
pub fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p.abs() >= 1.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.4}%")
    }
}

/// A plain number without noise: integers without decimals, others with up to three.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let sign = if v < 0.0 { "-" } else { "" };
        return format!("{sign}{}", count(v.abs() as u64));
    }
    // Three decimals, or three significant digits for small values (a loss ratio).
    let a = v.abs();
    let decimals = if a >= 1.0 {
        3
    } else {
        (-a.log10()).ceil() as usize + 2
    };
    let s = format!("{v:.decimals$}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Bytes in binary units: `1536` -> `"1.5 KiB"`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Seconds, without decimals when whole: `60.0` -> `"60 s"`.
pub fn seconds(s: f64) -> String {
    format!("{} s", number(s))
}

/// A time or duration in seconds, rounded to hundredths: `11.8` -> `"11.8 s"`, `3.0` -> `"3 s"`.
pub fn secs(s: f64) -> String {
    if !s.is_finite() {
        return format!("{s} s");
    }
    format!("{} s", number((s * 100.0).round() / 100.0))
}

/// A duration given in milliseconds: a tenth of a millisecond below 10 ms, whole
/// milliseconds below a second, else seconds: `9.14` -> `"9.1 ms"`, `310.4` -> `"310 ms"`,
/// `1210.0` -> `"1.21 s"`.
pub fn millis(ms: f64) -> String {
    if ms.is_finite() && ms.abs() < 9.95 {
        format!("{} ms", number((ms * 10.0).round() / 10.0))
    } else if ms.is_finite() && ms.abs() < 999.5 {
        format!("{} ms", number(ms.round()))
    } else {
        secs(ms / 1000.0)
    }
}

/// Text on one line of at most `max` characters: line breaks become ` / `, runs of
/// spaces one space, and a longer text ends in `...`.
pub fn one_line(text: &str, max: usize) -> String {
    let joined = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    if joined.chars().count() <= max {
        joined
    } else {
        let kept: String = joined.chars().take(max.saturating_sub(3)).collect();
        format!("{}...", kept.trim_end())
    }
}

/// `n` and the noun, plural unless `n` is 1: `12 send failures`.
pub fn counted(n: u64, singular: &str, plural: &str) -> String {
    format!("{} {}", count(n), if n == 1 { singular } else { plural })
}

/// Renders the SLO's measured value and limit with its unit, e.g. `"12.3 ms <= 50 ms"`.
pub fn slo_line(v: &super::SloVerdict) -> String {
    let unit = if v.unit.is_empty() {
        String::new()
    } else {
        format!(" {}", v.unit)
    };
    format!(
        "{}{unit} {} {}{unit}",
        number(v.measured),
        v.bound.symbol(),
        number(v.limit)
    )
}

/// PASS or FAIL.
/// The run's verdict word; a failed harness-bound run says so.
pub fn run_verdict(s: &super::Summary) -> &'static str {
    match (&s.harness, s.passed) {
        (Some(h), _) if h.bound => "FAIL (harness-bound)",
        (_, passed) => verdict(passed),
    }
}

/// One line on the harness's own load, e.g. for the console.
pub fn harness_line(h: &super::HarnessLoad) -> String {
    let ms = |v: Option<u64>| {
        v.map_or("-".to_string(), |us| {
            format!("{:.1} ms", us as f64 / 1000.0)
        })
    };
    let mut line = format!(
        "event-loop lag p99 {} (max {}), send lag p99 {} (max {})",
        ms(h.loop_lag_p99_us),
        ms(h.loop_lag_max_us),
        ms(h.send_lag_p99_us),
        ms(h.send_lag_max_us)
    );
    if h.bound {
        line.push_str(&format!(
            "; HARNESS-BOUND: the harness woke late beyond {} ms, so these figures are the harness's limit, not the target's",
            h.limit_ms
        ));
    }
    line
}

pub fn verdict(passed: bool) -> &'static str {
    if passed {
        "PASS"
    } else {
        "FAIL"
    }
}

/// A console table: each column as wide as its widest cell, the first `lead` columns and
/// the last one (text) left-aligned, the figures between them right-aligned.
pub fn text_grid(head: &[String], rows: &[Vec<String>], lead: usize) -> String {
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if i < lead || i == cells.len() - 1 {
                l += &format!("{cell}{pad}  ");
            } else {
                l += &format!("{pad}{cell}  ");
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(head);
    for r in rows {
        out += &line(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(ms(12345), "12.35");
        assert_eq!(rate(12.34), "12.3");
        assert_eq!(rate(12345.6), "12,346");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.00001), "0.0010%");
        assert_eq!(number(50.0), "50");
        assert_eq!(number(10000.0), "10,000");
        assert_eq!(number(-3.0), "-3");
        assert_eq!(number(0.0016), "0.0016");
        assert_eq!(number(0.00001), "0.00001");
        assert_eq!(number(0.12345), "0.123");
        assert_eq!(number(12.5), "12.5");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(secs(11.8), "11.8 s");
        assert_eq!(secs(3.0), "3 s");
        assert_eq!(secs(1.4249), "1.42 s");
        assert_eq!(millis(310.4), "310 ms");
        assert_eq!(millis(9.14), "9.1 ms");
        assert_eq!(millis(9.96), "10 ms");
        assert_eq!(millis(1_210.0), "1.21 s");
        assert_eq!(millis(999.7), "1 s");
        assert_eq!(one_line("a\n\n  b   c\n", 80), "a / b c");
        assert_eq!(one_line("abcdefghij", 8), "abcde...");
        assert_eq!(counted(1, "failure", "failures"), "1 failure");
        assert_eq!(counted(1200, "failure", "failures"), "1,200 failures");
    }
}
