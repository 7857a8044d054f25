//! Times as reports write them (RFC 3339, UTC, microseconds), as the
//! tables show them (`2026-11-20 09:00:01`, UTC; `in 12s`, `3s ago`) and as
//! people give them (`--since`, `--until`, windows); durations as people
//! write them (`1h30m`).

use std::time::{Duration, SystemTime};

/// Nanoseconds since the Unix epoch as RFC 3339 (UTC, microseconds).
pub(crate) fn rfc3339(nanos: u64) -> String {
    let ts =
        jiff::Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{:.6}", ts)
}

/// A system time as [`rfc3339`].
pub(crate) fn system_rfc3339(t: SystemTime) -> String {
    let nanos = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    rfc3339(nanos)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC for Unix milliseconds (the number itself
/// beyond the years 9999 BC to AD 9999).
pub fn utc_seconds(unix_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(unix_ms).map_or_else(
        |_| unix_ms.to_string(),
        |ts| ts.strftime("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// An RFC 3339 time as [`utc_seconds`] writes it (as given when it is
/// not one).
pub(crate) fn short(rfc3339: &str) -> String {
    rfc3339.parse::<jiff::Timestamp>().map_or_else(
        |_| rfc3339.to_owned(),
        |ts| ts.strftime("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration as a person writes it, to the second (`10m`, `1h30m`,
/// `45s`; under a second `250ms`): how long, not how precisely measured.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// `in 12s` / `3s ago` from Unix milliseconds (0, none: `-`).
pub fn relative(unix_ms_then: u64, now: SystemTime) -> String {
    if unix_ms_then == 0 {
        return "-".into();
    }
    let now_ms = unix_ms(now);
    if unix_ms_then >= now_ms {
        format!("in {}", human(Duration::from_millis(unix_ms_then - now_ms)))
    } else {
        format!(
            "{} ago",
            human(Duration::from_millis(now_ms - unix_ms_then))
        )
    }
}

/// A time as `--since`, `--until` and windows take it: RFC 3339
/// (`2026-11-20T09:00:00Z`), a date (`2026-11-20`, midnight UTC), `now`,
/// or a duration ago (`90m`, `2h`, `7d`, `1w`).
pub fn parse_time(text: &str, now: SystemTime) -> Result<u64, String> {
    let text = text.trim();
    let now_ns = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    if text.eq_ignore_ascii_case("now") {
        return Ok(now_ns);
    }
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return u64::try_from(ts.as_nanosecond()).map_err(|_| format!("{text:?} is before 1970"));
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>() {
        let ts = date
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map_err(|e| format!("{text:?}: {e}"))?
            .timestamp();
        return u64::try_from(ts.as_nanosecond()).map_err(|_| format!("{text:?} is before 1970"));
    }
    let ago = duration_ago(text).ok_or_else(|| {
        format!(
            "{text:?} is not a time: give RFC 3339 (2026-11-20T09:00:00Z), a date (2026-11-20), \
             `now`, or a duration ago (90m, 2h, 7d)"
        )
    })?;
    Ok(now_ns.saturating_sub(ago))
}

/// A duration such as `90m`, `2h`, `7d`, `1w`, `1h30m`, in nanoseconds.
fn duration_ago(text: &str) -> Option<u64> {
    let span: jiff::Span = text.parse().ok()?;
    let seconds = span.get_weeks() as i128 * 7 * 86_400
        + span.get_days() as i128 * 86_400
        + span.get_hours() as i128 * 3600
        + span.get_minutes() as i128 * 60
        + span.get_seconds() as i128;
    if span.get_years() != 0 || span.get_months() != 0 || span.is_negative() {
        return None;
    }
    let nanos = seconds * 1_000_000_000
        + span.get_milliseconds() as i128 * 1_000_000
        + span.get_microseconds() as i128 * 1_000
        + span.get_nanoseconds() as i128;
    u64::try_from(nanos).ok()
}

/// A window `START..END` (either may be empty: open).
pub fn parse_window(text: &str, now: SystemTime) -> Result<(Option<u64>, Option<u64>), String> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?} is neither a file nor a window such as 14d..7d"))?;
    let side = |s: &str| -> Result<Option<u64>, String> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            parse_time(s, now).map(Some)
        }
    };
    let (start, end) = (side(start)?, side(end)?);
    if let (Some(a), Some(b)) = (start, end)
        && a >= b
    {
        return Err(format!("{text:?}: the window ends before it starts"));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn durations_as_people_write_them() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(3601)), "1h1s");
    }

    #[test]
    fn rfc3339_is_utc_with_microseconds() {
        assert_eq!(
            rfc3339(1_500_000_000_123_456_789),
            "2017-07-14T02:40:00.123456Z"
        );
    }

    #[test]
    fn utc_seconds_for_any_millisecond() {
        assert_eq!(utc_seconds(0), "1970-01-01 00:00:00");
        assert_eq!(utc_seconds(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc_seconds(1_795_269_845_123), "2026-11-21 14:04:05");
        assert_eq!(utc_seconds(-1_000), "1969-12-31 23:59:59");
        assert_eq!(utc_seconds(-1), "1969-12-31 23:59:59");
        assert_eq!(short("2026-11-21T14:04:05.123456Z"), "2026-11-21 14:04:05");
        assert_eq!(short("2026-11-21T14:04:05Z"), "2026-11-21 14:04:05");
        assert_eq!(short("?"), "?");
    }

    #[test]
    fn relative_times() {
        let now = at(1_000);
        assert_eq!(relative(0, now), "-");
        assert_eq!(relative(1_012_000, now), "in 12s");
        assert_eq!(relative(997_000, now), "3s ago");
        assert_eq!(relative(1_000_250, now), "in 250ms");
    }

    #[test]
    fn times_as_people_write_them() {
        let now = at(10 * 86_400);
        let s = 1_000_000_000u64;
        assert_eq!(parse_time("now", now), Ok(10 * 86_400 * s));
        assert_eq!(parse_time("2h", now), Ok((10 * 86_400 - 7200) * s));
        assert_eq!(parse_time("7d", now), Ok(3 * 86_400 * s));
        assert_eq!(parse_time("1w", now), Ok(3 * 86_400 * s));
        assert_eq!(parse_time("1h30m", now), Ok((10 * 86_400 - 5400) * s));
        assert_eq!(parse_time("1970-01-02", now), Ok(86_400 * s));
        assert_eq!(parse_time("1970-01-02T00:00:01Z", now), Ok(86_401 * s));
        let err = parse_time("yesterday", now).unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
        assert!(parse_time("1y", now).is_err());
    }

    #[test]
    fn windows() {
        let now = at(10 * 86_400);
        let s = 1_000_000_000u64;
        assert_eq!(
            parse_window("8d..7d", now),
            Ok((Some(2 * 86_400 * s), Some(3 * 86_400 * s)))
        );
        assert_eq!(parse_window("..7d", now), Ok((None, Some(3 * 86_400 * s))));
        assert!(
            parse_window("7d..8d", now)
                .unwrap_err()
                .contains("ends before")
        );
        assert!(parse_window("a-file.jsonl", now).is_err());
    }
}
