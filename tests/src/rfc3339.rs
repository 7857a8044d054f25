//! RFC 3339 timestamps with nanoseconds, as the Jaeger query API takes
//! them (`2024-05-01T12:00:00.123456789Z`): formatting for the query
//! client, parsing for the trace sink (both by `jiff`).

use std::time::SystemTime;

use jiff::Timestamp;

/// Why a timestamp is not RFC 3339.
#[derive(Debug, thiserror::Error)]
#[error("cannot parse {input:?} as RFC 3339: {source}")]
pub struct Rfc3339Error {
    input: String,
    source: jiff::Error,
}

/// `time` in UTC, e.g. `2024-05-01T12:00:00.000000001Z` (the fraction as
/// long as it needs to be). Times outside what RFC 3339 can write are
/// clamped to its range.
pub fn format(time: SystemTime) -> String {
    Timestamp::try_from(time)
        .unwrap_or(if time < SystemTime::UNIX_EPOCH {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        })
        .to_string()
}

/// Nanoseconds since the Unix epoch (negative before it) for an RFC 3339
/// timestamp with `Z` or a `±HH:MM` offset.
pub fn parse(input: &str) -> Result<i128, Rfc3339Error> {
    input
        .parse::<Timestamp>()
        .map(|t| t.as_nanosecond())
        .map_err(|source| Rfc3339Error {
            input: input.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_and_parses_back() {
        for nanos in [0u64, 1, 951_782_400_123_456_789, 1_714_564_800_000_000_001] {
            let t = UNIX_EPOCH + Duration::from_nanos(nanos);
            assert_eq!(
                parse(&format(t)).unwrap(),
                i128::from(nanos),
                "{}",
                format(t)
            );
        }
        let t = UNIX_EPOCH + Duration::from_nanos(951_782_400_123_456_789);
        assert_eq!(format(t), "2000-02-29T00:00:00.123456789Z");
    }

    #[test]
    fn parses_offsets_and_short_fractions() {
        let utc = parse("2000-04-05T13:55:16.5Z").unwrap();
        assert_eq!(parse("2000-04-05T21:55:16.5+08:00").unwrap(), utc);
        assert_eq!(parse("2000-04-05T12:55:16.500-01:00").unwrap(), utc);
        assert_eq!(parse("1969-12-31T23:59:59Z").unwrap(), -1_000_000_000);
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for bad in [
            "",
            "NaN",
            "yesterday",
            "2000-04-05",
            "2000-04-05T13:55:16",
            "2000-04-05T13:55:16.1234567890Z",
            "2000-02-30T00:00:00Z",
            "2001-02-29T00:00:00Z",
            "2000-04-05T13:55:16+08:60",
            "2000-04-05T13:55:16Zjunk",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
