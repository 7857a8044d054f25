//! Durations on command lines, as people write them.

use std::time::Duration;

/// Parses `10m`, `30s`, `1h 30m` (and ISO 8601 durations); `0` is zero.
/// The error says what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let d: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration such as 30s, 10m or 1h ({e})"))?;
    Duration::try_from(d).map_err(|_| format!("{text:?}: a duration cannot be negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_people_write_them() {
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert!(parse("soon").unwrap_err().contains("30s"));
        assert!(parse("-5s").is_err());
    }
}
