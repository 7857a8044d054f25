//! The query parameters of Jaeger's api_v3, read as Jaeger (Go) reads
//! them: the query string as `url.ParseQuery` splits it, Go durations
//! (`1.5s`, `300ms`), Go booleans, hex trace ids of one to 32 digits.

/// A parameter that is present but unparsable: the parameter's name as
/// given, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed parameter {name}: {reason}")]
pub(crate) struct Malformed {
    /// The parameter's name as the request spelled it.
    pub name: String,
    /// What is wrong with its value.
    pub reason: String,
}

impl Malformed {
    pub(crate) fn new(name: &str, reason: impl ToString) -> Self {
        Self {
            name: name.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// A decoded query string, in order. Pairs with a bad escape or a `;` are
/// dropped, as Go drops them.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Decodes `query` (the part after `?`, if any).
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty() && !pair.contains(';'))
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                Some((unescape(key)?, unescape(value)?))
            })
            .collect();
        Self(pairs)
    }

    /// The first non-empty value of the first name in `names` that has one
    /// (canonical name first, then deprecated aliases, as Jaeger resolves
    /// them), with the name it was found under.
    pub(crate) fn get<'a>(&'a self, names: &[&'a str]) -> Option<(&'a str, &'a str)> {
        names.iter().find_map(|name| {
            // Go's `Values.Get`: the first value; an empty one counts as absent.
            let (_, value) = self.0.iter().find(|(k, _)| k == name)?;
            (!value.is_empty()).then_some((*name, value.as_str()))
        })
    }
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; `None` for a
/// bad escape or bytes that are not UTF-8.
fn unescape(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hi = char::from(bytes.next()?).to_digit(16)?;
                let lo = char::from(bytes.next()?).to_digit(16)?;
                u8::try_from(hi * 16 + lo).ok()?
            }
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("strconv.ParseBool: parsing {s:?}: invalid syntax")),
    }
}

/// Go's `time.ParseDuration`, in nanoseconds: an optional sign, then
/// decimal numbers each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`,
/// `h`), e.g. `1h2m0.5s`; a bare `0` is zero.
pub(crate) fn parse_duration(s: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            unit => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    // Go's durations are int64 nanoseconds.
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let nanos = total.round() as i128;
    Ok(if negative { -nanos } else { nanos })
}

/// A trace id as Jaeger's `TraceIDFromString` reads it: one to 32 hex
/// digits, either case, left-padded with zeros to 16 bytes.
pub(crate) fn parse_trace_id(s: &str) -> Result<[u8; 16], String> {
    if s.len() > 32 {
        return Err(format!(
            "TraceID cannot be longer than 32 hex characters: {s}"
        ));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("strconv.ParseUint: parsing {s:?}: invalid syntax"));
    }
    let padded = format!("{s:0>32}");
    let mut id = [0u8; 16];
    hex::decode_to_slice(padded, &mut id).map_err(|e| e.to_string())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_as_go_decodes_them() {
        let p = Params::parse(Some(
            "a=1&a=2&b=&c=x%3Ay+z&bad=%zz&semi=1;2&query.startTimeMin=t&query.start_time_min=u",
        ));
        assert_eq!(p.get(&["a"]), Some(("a", "1")));
        assert_eq!(p.get(&["b"]), None, "an empty value is absent");
        assert_eq!(p.get(&["b", "c"]), Some(("c", "x:y z")));
        assert_eq!(p.get(&["bad"]), None);
        assert_eq!(p.get(&["semi"]), None);
        assert_eq!(
            p.get(&["query.startTimeMin", "query.start_time_min"]),
            Some(("query.startTimeMin", "t")),
            "the canonical name wins"
        );
        assert_eq!(Params::parse(None).get(&["a"]), None);
    }

    #[test]
    fn durations_parse_as_go_parses_them() {
        let ok = [
            ("0", 0),
            ("1s", 1_000_000_000),
            ("1.5s", 1_500_000_000),
            ("300ms", 300_000_000),
            ("2us", 2_000),
            ("2µs", 2_000),
            ("7ns", 7),
            ("1h2m", 3_720_000_000_000),
            ("-1m", -60_000_000_000),
            ("+.5s", 500_000_000),
        ];
        for (s, nanos) in ok {
            assert_eq!(parse_duration(s), Ok(nanos), "{s}");
        }
        for bad in ["", "NaN", "1", "s", "1x", "1..2s", ".s", "-", "1s2"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn trace_ids_parse_as_jaeger_parses_them() {
        let mut one = [0u8; 16];
        one[15] = 1;
        assert_eq!(parse_trace_id("1"), Ok(one));
        assert_eq!(parse_trace_id(&"AB".repeat(16)), Ok([0xab; 16]));
        assert_eq!(parse_trace_id("00000000000000000000000000000001"), Ok(one));
        for bad in ["", "xyz", "0x1", "-1", &"a".repeat(33), "12 3"] {
            assert!(parse_trace_id(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(parse_bool("True"), Ok(true));
        assert!(parse_bool("yes").is_err());
    }
}
