//! How every renderer writes a number: durations with three significant
//! digits and a unit, signed changes, shares and counts of things.

/// A duration in nanoseconds with three significant digits and a unit
/// (`452µs`, `6.00ms`, `1.25s`).
pub fn duration(ns: f64) -> String {
    let (value, unit) = match ns.abs() {
        a if a < 1e3 => return format!("{ns:.0}ns"),
        a if a < 1e6 => (ns / 1e3, "µs"),
        a if a < 1e9 => (ns / 1e6, "ms"),
        _ => (ns / 1e9, "s"),
    };
    let digits = match value.abs() {
        a if a < 10.0 => 2,
        a if a < 100.0 => 1,
        _ => 0,
    };
    format!("{value:.digits$}{unit}")
}

/// [`duration`] of whole nanoseconds.
pub(crate) fn ns(ns: u64) -> String {
    duration(ns as f64)
}

/// A change: [`duration`] with a `+` when it grew.
pub(crate) fn signed(ns: i64) -> String {
    if ns > 0 {
        format!("+{}", duration(ns as f64))
    } else {
        duration(ns as f64)
    }
}

/// A share as a percentage, one decimal.
pub(crate) fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// `n` things: `1 command`, `2 commands`.
pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_three_digits() {
        assert_eq!(duration(0.0), "0ns");
        assert_eq!(duration(999.0), "999ns");
        assert_eq!(duration(4_520.0), "4.52µs");
        assert_eq!(duration(452_000.0), "452µs");
        assert_eq!(duration(6_000_000.0), "6.00ms");
        assert_eq!(duration(45_200_000.0), "45.2ms");
        assert_eq!(duration(1_250_000_000.0), "1.25s");
        assert_eq!(duration(-5_000_000.0), "-5.00ms");
    }
}
