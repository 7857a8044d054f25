//! Reading the emulator's quantities as people write them: durations
//! (`25ms`, `1.5s`), rates (`100mbit`, `12MiB/s`) and sizes (`64KiB`).

use std::time::Duration;

/// A quantity that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {text:?}: {reason}")]
pub struct ParseError {
    what: &'static str,
    text: String,
    reason: String,
}

impl ParseError {
    fn new(what: &'static str, text: &str, reason: impl Into<String>) -> Self {
        Self {
            what,
            text: text.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A non-negative duration such as `25ms`, `1.5s`, `250us` or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, ParseError> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let span: jiff::SignedDuration = t
        .parse()
        .map_err(|e: jiff::Error| ParseError::new("duration", text, e.to_string()))?;
    Duration::try_from(span).map_err(|_| ParseError::new("duration", text, "must not be negative"))
}

/// Splits `12.5MiB/s` into `(12.5, "MiB/s")`.
fn number_and_unit<'a>(what: &'static str, text: &'a str) -> Result<(f64, &'a str), ParseError> {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(end);
    let value: f64 = number
        .parse()
        .map_err(|_| ParseError::new(what, text, "expected a number followed by a unit"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(ParseError::new(
            what,
            text,
            "must be a finite, non-negative number",
        ));
    }
    Ok((value, unit.trim()))
}

fn byte_multiplier(unit: &str) -> Option<f64> {
    Some(match unit {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

/// A bandwidth in bytes per second: bits (`bit`, `kbit`, `mbit`, `gbit`,
/// powers of 1000, as `tc` writes them) or bytes per second (`B/s`,
/// `KB/s`, `MB/s`, `KiB/s`, `MiB/s`, `GiB/s`). Zero is refused: a link
/// that carries nothing is a stall or a cut, not a rate.
pub fn parse_rate(text: &str) -> Result<u64, ParseError> {
    let (value, unit) = number_and_unit("rate", text)?;
    let bits = match unit.to_ascii_lowercase().as_str() {
        "bit" | "bps" => Some(1.0),
        "kbit" | "kbps" => Some(1e3),
        "mbit" | "mbps" => Some(1e6),
        "gbit" | "gbps" => Some(1e9),
        _ => None,
    };
    let bytes_per_sec = match bits {
        Some(m) => value * m / 8.0,
        None => {
            let per_sec = unit.strip_suffix("/s").ok_or_else(|| {
                ParseError::new(
                    "rate",
                    text,
                    "unit must be bit, kbit, mbit, gbit or B/s, KiB/s, MiB/s, ...",
                )
            })?;
            let m = byte_multiplier(per_sec)
                .ok_or_else(|| ParseError::new("rate", text, "unknown unit"))?;
            value * m
        }
    };
    if bytes_per_sec < 1.0 {
        return Err(ParseError::new(
            "rate",
            text,
            "must be at least 1 byte per second",
        ));
    }
    Ok(bytes_per_sec.round() as u64)
}

/// A size in bytes: `65536`, `64KiB`, `1MB`, ...
pub fn parse_size(text: &str) -> Result<usize, ParseError> {
    let (value, unit) = number_and_unit("size", text)?;
    let m = byte_multiplier(unit).ok_or_else(|| {
        ParseError::new("size", text, "unit must be B, KB, MB, GB, KiB, MiB or GiB")
    })?;
    let bytes = (value * m).round();
    if bytes > usize::MAX as f64 {
        return Err(ParseError::new("size", text, "too large"));
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("25ms").unwrap(), Duration::from_millis(25));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("-5ms").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100mbit").unwrap(), 12_500_000);
        assert_eq!(parse_rate("1gbit").unwrap(), 125_000_000);
        assert_eq!(parse_rate("8kbit").unwrap(), 1000);
        assert_eq!(parse_rate("12MiB/s").unwrap(), 12 * 1024 * 1024);
        assert_eq!(parse_rate("1.5MB/s").unwrap(), 1_500_000);
        assert!(parse_rate("0mbit").is_err());
        assert!(parse_rate("12MiB").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert!(parse_size("64 parsecs").is_err());
        let e = parse_size("x").unwrap_err().to_string();
        assert!(e.contains("size \"x\""), "{e}");
    }
}
