//! Durations as scenario files write them: `"500ms"`, `"30s"`, `"2m"`, `"1h"`.
//!
//! A duration is a non-negative decimal number followed by one unit (`ms`, `s`, `m`, `h`),
//! or several such parts run together (`"1m30s"`). Resolution is one millisecond. The same
//! text form is used when a scenario is serialized into a report, so a report's scenario
//! reads like the file it came from and loads back unchanged.

use std::time::Duration;

const ALLOWED: &str =
    "a number and a unit: ms, s, m or h (e.g. \"500ms\", \"30s\", \"2m\", \"1h\", \"1m30s\")";

/// Parses `"500ms"`, `"30s"`, `"1.5s"`, `"2m"`, `"1h"`, `"1m30s"`; `"0"` alone is zero.
/// The error says what was wrong and what is allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(format!("empty duration; expected {ALLOWED}"));
    }
    let mut total_ms: f64 = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "\"{s}\" does not start with a number; expected {ALLOWED}"
            ));
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| {
            format!(
                "\"{}\" in \"{s}\" is not a number; expected {ALLOWED}",
                &rest[..num_len]
            )
        })?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        let scale = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "" => return Err(format!("\"{s}\" has no unit; expected {ALLOWED}")),
            other => {
                return Err(format!(
                    "unknown unit \"{other}\" in \"{s}\"; expected {ALLOWED}"
                ))
            }
        };
        total_ms += number * scale;
        rest = &rest[unit_len..];
    }
    if !total_ms.is_finite() || total_ms > 1e12 {
        return Err(format!("\"{s}\" is too long; expected {ALLOWED}"));
    }
    if total_ms.fract() != 0.0 {
        return Err(format!(
            "\"{s}\" is finer than the 1 ms resolution of scenario durations"
        ));
    }
    Ok(Duration::from_millis(total_ms as u64))
}

/// Formats a duration the way [`parse_duration`] reads it, with the largest exact units:
/// `90s` becomes `"1m30s"`, `1500ms` becomes `"1s500ms"`, zero becomes `"0s"`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// `#[serde(with = "...")]` adapter writing durations as `"30s"`-style strings.
pub(crate) mod text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_bad_text_and_says_what_is_allowed() {
        for bad in ["", "30", "s", "30 sec", "-1s", "1.2.3s", "0.5ms", "3d"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                err.contains("ms, s, m or h") || err.contains("resolution"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [
            0u64, 1, 500, 1000, 1500, 60_000, 90_000, 3_600_000, 3_661_001,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms} ms");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}
