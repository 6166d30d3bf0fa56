//! Durations as scenario files write them: `"500ms"`, `"30s"`, `"2m"`, `"1h"`.
//!
//! A duration is a non-negative decimal number followed by one unit (`ms`, `s`, `m`, `h`),
//! or several such parts run together (`"1m30s"`). Resolution is one millisecond. The same
//! text form is used when a scenario is serialized into a report, so a report's scenario
//! reads like the file it came from and loads back unchanged.

use std::time::Duration;

const ALLOWED: &str =
    "a number and a unit: ms, s, m or h (e.g. \"500ms\", \"30s\", \"2m\", \"1h\", \"1m30s\")";

/// Longest duration the text form accepts, in milliseconds (about 31 years); scenario
/// keys have their own, lower limits.
const MAX_MS: u128 = 1_000_000_000_000;

/// Parses `"500ms"`, `"30s"`, `"1.5s"`, `"2m"`, `"1h"`, `"1m30s"`; `"0"` alone is zero.
/// The error says what was wrong and what is allowed. Decimals are exact: `"1.001s"`
/// is 1001 ms, and anything finer than a millisecond is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(format!("empty duration; expected {ALLOWED}"));
    }
    let too_long = || format!("\"{s}\" is too long; expected {ALLOWED}");
    let mut total_ms: u128 = 0;
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
        let number = &rest[..num_len];
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        let scale: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(format!("\"{s}\" has no unit; expected {ALLOWED}")),
            other => {
                return Err(format!(
                    "unknown unit \"{other}\" in \"{s}\"; expected {ALLOWED}"
                ))
            }
        };
        let ms = match exact_ms(number, scale) {
            Ok(ms) => ms,
            Err(Part::NotANumber) => {
                return Err(format!(
                    "\"{number}\" in \"{s}\" is not a number; expected {ALLOWED}"
                ))
            }
            Err(Part::TooFine) => {
                return Err(format!(
                    "\"{s}\" is finer than the 1 ms resolution of scenario durations"
                ))
            }
            Err(Part::TooLong) => return Err(too_long()),
        };
        total_ms = total_ms.saturating_add(ms);
        if total_ms > MAX_MS {
            return Err(too_long());
        }
        rest = &rest[unit_len..];
    }
    u64::try_from(total_ms)
        .map(Duration::from_millis)
        .map_err(|_| too_long())
}

/// Why one number-and-unit part of a duration is unusable.
enum Part {
    NotANumber,
    TooFine,
    TooLong,
}

/// `digits[.digits]` (either side may be empty, not both) times `scale` milliseconds,
/// in whole milliseconds, computed exactly in integers.
fn exact_ms(number: &str, scale: u128) -> Result<u128, Part> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(Part::NotANumber);
    }
    let digits = |t: &str| {
        t.bytes().try_fold(0u128, |n, b| {
            n.checked_mul(10)?
                .checked_add(u128::from(b - b'0'))
                .filter(|&n| n <= MAX_MS)
        })
    };
    let whole_ms = digits(whole)
        .and_then(|w| w.checked_mul(scale))
        .filter(|&ms| ms <= MAX_MS)
        .ok_or(Part::TooLong)?;
    // Trailing zeros say nothing; past 9 other digits no unit here gives whole ms.
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 9 {
        return Err(Part::TooFine);
    }
    let numerator = digits(fraction).ok_or(Part::TooFine)? * scale;
    let denominator = 10u128.pow(fraction.len() as u32);
    if numerator % denominator != 0 {
        return Err(Part::TooFine);
    }
    Ok(whole_ms + numerator / denominator)
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

    #[test]
    fn decimals_are_exact() {
        // 1.001 * 1000.0 is 1000.9999999999999 in floating point, which used to be
        // refused as finer than a millisecond.
        assert_eq!(parse_duration("1.001s"), Ok(Duration::from_millis(1001)));
        assert_eq!(parse_duration("0.0021m"), Ok(Duration::from_millis(126)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2.s"), Ok(Duration::from_secs(2)));
        assert_eq!(
            parse_duration("1.5000000000000000000000h"),
            Ok(Duration::from_secs(5400))
        );
        for ms in 0..5_000u64 {
            let text = format!("{}.{:03}s", ms / 1000, ms % 1000);
            assert_eq!(
                parse_duration(&text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            ".s",
            "1..2s",
            "0.0001s",
            "0.0000000001h",
            "1.00000000000000000001s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn huge_numbers_are_too_long_not_a_panic() {
        for big in [
            "1000000000001ms",
            "99999999999999999999999999999999999999999999h",
            "277778h",
            "1000000000000ms1ms",
        ] {
            let err = parse_duration(big).unwrap_err();
            assert!(err.contains("too long"), "{big}: {err}");
        }
        assert_eq!(
            parse_duration("1000000000000ms"),
            Ok(Duration::from_millis(1_000_000_000_000))
        );
    }
}
