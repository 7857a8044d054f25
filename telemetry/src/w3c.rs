//! The strict W3C Trace Context parser and formatter.
//!
//! Every carrier goes through this module. It follows the
//! [W3C Trace Context](https://www.w3.org/TR/trace-context/) grammar to the
//! letter, which the OpenTelemetry SDK's propagator does not (it accepts, for
//! example, uppercase hex and trailing data on version `00`):
//!
//! - `traceparent` is exactly `version-trace_id-parent_id-flags`, 2-32-16-2
//!   lowercase hex digits separated by `-`. Version `ff`, an all-zero trace-id
//!   and an all-zero parent-id are invalid. Version `00` allows no trailing
//!   data; a higher (future) version is parsed by its first 55 characters,
//!   which must be followed by the end of the string or a `-`.
//! - `tracestate` is a list of at most [`MAX_TRACESTATE_MEMBERS`] `key=value`
//!   members with the spec's key and value grammars and no duplicate keys.
//! - Optional whitespace (OWS: spaces and horizontal tabs) around a header
//!   value, and around tracestate list members, is not part of the value and
//!   is removed before parsing (RFC 9110 §5.5, Trace Context §3.3.1.1). Any
//!   other whitespace is invalid.
//!
//! [`extract`] applies the header-level rules (absent, repeated, invalid
//! traceparent drops tracestate, invalid tracestate is dropped alone). Its
//! result never fails a call: callers treat [`Extracted::Absent`] and
//! [`Extracted::Invalid`] as "start a new trace".

use std::fmt;

/// Largest `traceparent` value looked at, in bytes, before any trimming or
/// parsing. A valid one is 55 bytes; the slack is for future versions.
pub const MAX_TRACEPARENT_LEN: usize = 512;

/// Largest `tracestate` value accepted, in bytes, including OWS and the `,`
/// joining repeated headers. The spec asks vendors to propagate at least 512
/// characters of the combined header and allows truncation beyond that; this
/// crate rejects (drops) a longer tracestate instead of truncating it.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// Most list-members a `tracestate` may hold (empty members not counted).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// Length of a version-00 traceparent, and of the prefix parsed from a
/// future version's.
const TRACEPARENT_LEN: usize = 55;
/// Byte offsets of the `-` separators in a traceparent.
const SEPARATORS: [usize; 3] = [2, 35, 52];
/// The sampled bit of the trace flags.
const FLAG_SAMPLED: u8 = 0x01;

/// Why a `traceparent` was rejected. Each rule of the spec has its own
/// variant; the carrier-level conditions ([`Repeated`](Self::Repeated),
/// [`NotText`](Self::NotText)) are here too so that [`Extracted::Invalid`]
/// can name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// The value is empty, or only whitespace.
    #[error("traceparent is empty")]
    Empty,
    /// The value is longer than [`MAX_TRACEPARENT_LEN`]; nothing was parsed.
    #[error("traceparent is {len} bytes, over the {MAX_TRACEPARENT_LEN}-byte limit")]
    TooLong {
        /// The length of the rejected value, in bytes.
        len: usize,
    },
    /// The header appeared more than once.
    #[error("traceparent header is repeated")]
    Repeated,
    /// The carrier's value is not text (non-UTF-8, or not visible ASCII in a
    /// header).
    #[error("traceparent value is not visible ASCII text")]
    NotText,
    /// The value is not 2-32-16-2 hex digits separated by `-` (too short,
    /// misplaced separators, or a character that is not a hex digit).
    #[error("traceparent is not 2-32-16-2 hex digits separated by '-'")]
    Malformed,
    /// A field holds an uppercase hex digit; the spec allows lowercase only.
    #[error("traceparent contains uppercase hex")]
    UppercaseHex,
    /// The version is `ff`, which the spec forbids.
    #[error("traceparent version ff is invalid")]
    ForbiddenVersion,
    /// The trace-id is all zeros.
    #[error("traceparent trace-id is all zeros")]
    ZeroTraceId,
    /// The parent-id is all zeros.
    #[error("traceparent parent-id is all zeros")]
    ZeroParentId,
    /// A version-00 value continues past its 55 characters.
    #[error("version 00 traceparent has trailing data")]
    TrailingData,
    /// A future-version value continues past its first 55 characters without
    /// a `-` at position 55.
    #[error("future-version traceparent continues past the flags without '-'")]
    FutureVersionSuffix,
}

/// Why a `tracestate` was rejected. An invalid tracestate is dropped; the
/// traceparent it came with is still used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TraceStateError {
    /// The value is longer than [`MAX_TRACESTATE_LEN`]; nothing was parsed.
    #[error("tracestate is {len} bytes, over the {MAX_TRACESTATE_LEN}-byte limit")]
    TooLong {
        /// The length of the rejected value, in bytes.
        len: usize,
    },
    /// More than [`MAX_TRACESTATE_MEMBERS`] non-empty list-members.
    #[error("tracestate has more than {MAX_TRACESTATE_MEMBERS} list-members")]
    TooManyMembers,
    /// A non-empty list-member has no `=`.
    #[error("tracestate list-member has no '='")]
    MissingEquals,
    /// A key does not match the spec's simple-key or multi-tenant-key grammar.
    #[error("tracestate key is invalid")]
    InvalidKey,
    /// A value is empty, longer than 256 characters, holds a character outside
    /// printable ASCII (or `,` or `=`), or ends in a space.
    #[error("tracestate value is invalid")]
    InvalidValue,
    /// The same key appears twice.
    #[error("tracestate key is repeated")]
    DuplicateKey,
}

/// Removes optional whitespace (spaces and horizontal tabs) at both ends.
/// Decodes hex already checked to be lowercase (`0-9a-f`) into `out`
/// (`hex.len() == 2 * out.len()`); no allocation, no error path.
fn decode_lower_hex(hex: &[u8], out: &mut [u8]) {
    let nibble = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// A parsed `traceparent`.
///
/// Values produced by [`TraceParent::parse`] always have non-zero ids. The
/// fields are public so that other representations (the OpenTelemetry span
/// context) can be converted; [`TraceParent::is_valid`] checks the ids of a
/// value built by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace-id, 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// The parent-id (span id of the caller's span), 8 bytes, not all zero.
    pub parent_id: [u8; 8],
    /// The trace flags. For version 00 the byte is kept as received; for a
    /// future version only the sampled bit is kept.
    pub flags: u8,
}

impl TraceParent {
    /// Parses one `traceparent` header value strictly (see the module docs).
    ///
    /// Inputs longer than [`MAX_TRACEPARENT_LEN`] bytes are rejected before
    /// anything else is done. Leading and trailing spaces and tabs (OWS) are
    /// then removed; whitespace anywhere else is invalid.
    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        if value.len() > MAX_TRACEPARENT_LEN {
            return Err(TraceParentError::TooLong { len: value.len() });
        }
        let value = trim_ows(value);
        if value.is_empty() {
            return Err(TraceParentError::Empty);
        }
        let bytes = value.as_bytes();
        if bytes.len() < TRACEPARENT_LEN {
            return Err(TraceParentError::Malformed);
        }
        let head = &bytes[..TRACEPARENT_LEN];
        if SEPARATORS.iter().any(|&i| head[i] != b'-') {
            return Err(TraceParentError::Malformed);
        }

        // Every byte of the first 55 that is not a separator must be a hex
        // digit; a non-hex byte outranks an uppercase one.
        let mut uppercase = false;
        for field in [&head[0..2], &head[3..35], &head[36..52], &head[53..55]] {
            for &b in field {
                match b {
                    b'0'..=b'9' | b'a'..=b'f' => {}
                    b'A'..=b'F' => uppercase = true,
                    _ => return Err(TraceParentError::Malformed),
                }
            }
        }
        if uppercase {
            return Err(TraceParentError::UppercaseHex);
        }

        // The fields were checked to be lowercase hex of the right lengths.
        let mut version = [0u8; 1];
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        let mut flags = [0u8; 1];
        decode_lower_hex(&head[0..2], &mut version);
        decode_lower_hex(&head[3..35], &mut trace_id);
        decode_lower_hex(&head[36..52], &mut parent_id);
        decode_lower_hex(&head[53..55], &mut flags);

        let flags = match version[0] {
            0xff => return Err(TraceParentError::ForbiddenVersion),
            0x00 => {
                if bytes.len() != TRACEPARENT_LEN {
                    return Err(TraceParentError::TrailingData);
                }
                flags[0]
            }
            _ => {
                if bytes.len() > TRACEPARENT_LEN && bytes[TRACEPARENT_LEN] != b'-' {
                    return Err(TraceParentError::FutureVersionSuffix);
                }
                flags[0] & FLAG_SAMPLED
            }
        };
        if trace_id == [0; 16] {
            return Err(TraceParentError::ZeroTraceId);
        }
        if parent_id == [0; 8] {
            return Err(TraceParentError::ZeroParentId);
        }
        Ok(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// Whether both ids are non-zero (always true for a parsed value).
    pub fn is_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.parent_id != [0; 8]
    }
}

impl fmt::Display for TraceParent {
    /// Formats as version 00: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Encoded into a stack buffer: this runs for every traced message.
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[0] = b'0';
        out[1] = b'0';
        hex::encode_to_slice(self.trace_id, &mut out[3..35])
            .and_then(|()| hex::encode_to_slice(self.parent_id, &mut out[36..52]))
            .and_then(|()| hex::encode_to_slice([self.flags], &mut out[53..55]))
            .map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl std::str::FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A validated `tracestate` list, in header order.
///
/// May be empty: the spec requires accepting an empty header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

impl TraceState {
    /// Parses one `tracestate` value (or several already joined with `,`).
    ///
    /// Inputs longer than [`MAX_TRACESTATE_LEN`] bytes are rejected before
    /// parsing. Members are separated by `,`; OWS (spaces and tabs) around a
    /// member is removed, and empty members are ignored and not counted
    /// toward [`MAX_TRACESTATE_MEMBERS`].
    pub fn parse(value: &str) -> Result<Self, TraceStateError> {
        if value.len() > MAX_TRACESTATE_LEN {
            return Err(TraceStateError::TooLong { len: value.len() });
        }
        let mut members: Vec<(String, String)> = Vec::new();
        for member in value.split(',').map(trim_ows) {
            if member.is_empty() {
                continue;
            }
            if members.len() == MAX_TRACESTATE_MEMBERS {
                return Err(TraceStateError::TooManyMembers);
            }
            let (key, val) = member
                .split_once('=')
                .ok_or(TraceStateError::MissingEquals)?;
            if !valid_key(key) {
                return Err(TraceStateError::InvalidKey);
            }
            if !valid_value(val) {
                return Err(TraceStateError::InvalidValue);
            }
            if members.iter().any(|(k, _)| k == key) {
                return Err(TraceStateError::DuplicateKey);
            }
            members.push((key.to_owned(), val.to_owned()));
        }
        Ok(Self { members })
    }

    /// Whether the list has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The members as `(key, value)` pairs, in header order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Display for TraceState {
    /// Formats as `k=v,k2=v2` (no whitespace); empty for an empty list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for TraceState {
    type Err = TraceStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A character allowed after the first in any part of a key.
fn key_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
}

/// `first` followed by `1..=max_len - 1` [`key_char`]s, `max_len` in total.
fn key_part(part: &[u8], max_len: usize, first: impl Fn(u8) -> bool) -> bool {
    match part.split_first() {
        Some((&head, rest)) => {
            part.len() <= max_len && first(head) && rest.iter().all(|&b| key_char(b))
        }
        None => false,
    }
}

/// The spec's key grammar:
///
/// ```text
/// key              = simple-key / multi-tenant-key
/// simple-key       = lcalpha 0*255( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
/// multi-tenant-key = tenant-id "@" system-id
/// tenant-id        = ( lcalpha / DIGIT ) 0*240( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
/// system-id        = lcalpha 0*13( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
/// ```
fn valid_key(key: &str) -> bool {
    let key = key.as_bytes();
    match key.iter().position(|&b| b == b'@') {
        None => key_part(key, 256, |b| b.is_ascii_lowercase()),
        Some(at) => {
            key_part(&key[..at], 241, |b| {
                b.is_ascii_lowercase() || b.is_ascii_digit()
            }) && key_part(&key[at + 1..], 14, |b| b.is_ascii_lowercase())
        }
    }
}

/// The spec's value grammar: 1 to 256 characters from 0x20–0x7E except `,`
/// and `=`, the last not a space.
fn valid_value(value: &str) -> bool {
    let value = value.as_bytes();
    (1..=256).contains(&value.len())
        && value
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && value.last() != Some(&b' ')
}

/// A trace context received from a carrier: the parent and, if it was present
/// and valid, the caller's tracestate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The caller's traceparent.
    pub parent: TraceParent,
    /// The caller's tracestate. [`extract`] sets this only for a valid,
    /// non-empty list.
    pub state: Option<TraceState>,
}

impl TraceContext {
    /// A context with no tracestate.
    pub fn new(parent: TraceParent) -> Self {
        Self {
            parent,
            state: None,
        }
    }

    /// The tracestate, if there is a non-empty one.
    pub fn state(&self) -> Option<&TraceState> {
        self.state.as_ref().filter(|s| !s.is_empty())
    }
}

/// The outcome of reading a trace context from a carrier.
///
/// Extraction never fails a call: [`Absent`](Self::Absent) and
/// [`Invalid`](Self::Invalid) both mean "start a new trace".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extracted {
    /// A valid traceparent (and any valid tracestate): continue this trace.
    Valid(TraceContext),
    /// No traceparent was present.
    Absent,
    /// A traceparent was present but invalid (tracestate was not looked at).
    Invalid(TraceParentError),
}

impl Extracted {
    /// The context, if valid.
    pub fn context(&self) -> Option<&TraceContext> {
        match self {
            Self::Valid(cx) => Some(cx),
            Self::Absent | Self::Invalid(_) => None,
        }
    }

    /// The context, if valid, by value.
    pub fn into_context(self) -> Option<TraceContext> {
        match self {
            Self::Valid(cx) => Some(cx),
            Self::Absent | Self::Invalid(_) => None,
        }
    }
}

/// Applies the header-level rules to every value of `traceparent` and
/// `tracestate` a carrier held, in order.
///
/// - No traceparent value: [`Extracted::Absent`].
/// - More than one: [`Extracted::Invalid`] with [`TraceParentError::Repeated`].
/// - One invalid value: [`Extracted::Invalid`]; tracestate is not parsed.
/// - One valid value: [`Extracted::Valid`]. The tracestate values are joined
///   with `,` (as the spec prescribes for repeated headers) and parsed; an
///   invalid or empty tracestate becomes `None` without affecting the parent.
pub fn extract(traceparent_values: &[&str], tracestate_values: &[&str]) -> Extracted {
    match traceparent_values {
        [] => Extracted::Absent,
        [value] => match TraceParent::parse(value) {
            Ok(parent) => Extracted::Valid(TraceContext {
                parent,
                state: combine_tracestate(tracestate_values),
            }),
            Err(e) => Extracted::Invalid(e),
        },
        _ => Extracted::Invalid(TraceParentError::Repeated),
    }
}

/// Joins repeated tracestate values and parses them; `None` if there are none,
/// the result is invalid, or it is empty.
fn combine_tracestate(values: &[&str]) -> Option<TraceState> {
    // Bound the joined length before allocating it.
    let joined_len = values
        .iter()
        .map(|v| v.len())
        .sum::<usize>()
        .saturating_add(values.len().saturating_sub(1));
    if values.is_empty() || joined_len > MAX_TRACESTATE_LEN {
        return None;
    }
    TraceState::parse(&values.join(","))
        .ok()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT_ID: &str = "00f067aa0ba902b7";
    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn tp(s: &str) -> Result<TraceParent, TraceParentError> {
        TraceParent::parse(s)
    }

    // ---- traceparent: valid ----

    #[test]
    fn spec_examples_parse() {
        let p = tp(VALID).unwrap();
        assert_eq!(hex::encode(p.trace_id), TRACE_ID);
        assert_eq!(hex::encode(p.parent_id), PARENT_ID);
        assert_eq!(p.flags, 0x01);
        assert!(p.sampled());
        assert!(p.is_valid());
        assert_eq!(p.to_string(), VALID);

        let q = tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!q.sampled());
        assert_eq!(q.flags, 0);
    }

    #[test]
    fn version_00_keeps_unknown_flag_bits() {
        let p = tp(&format!("00-{TRACE_ID}-{PARENT_ID}-03")).unwrap();
        assert_eq!(p.flags, 0x03);
        assert!(p.sampled());
        assert_eq!(p.to_string(), format!("00-{TRACE_ID}-{PARENT_ID}-03"));
    }

    #[test]
    fn ows_is_trimmed() {
        assert_eq!(tp(&format!("  \t{VALID}\t ")).unwrap(), tp(VALID).unwrap());
    }

    #[test]
    fn from_str_matches_parse() {
        assert_eq!(VALID.parse::<TraceParent>(), tp(VALID));
    }

    // ---- traceparent: invalid, one per rule ----

    #[test]
    fn empty_is_invalid() {
        assert_eq!(tp(""), Err(TraceParentError::Empty));
        assert_eq!(tp(" \t "), Err(TraceParentError::Empty));
    }

    #[test]
    fn oversized_is_rejected_first() {
        let big = "x".repeat(MAX_TRACEPARENT_LEN + 1);
        assert_eq!(
            tp(&big),
            Err(TraceParentError::TooLong {
                len: MAX_TRACEPARENT_LEN + 1
            })
        );
        // Even when the first 55 bytes are a valid future version.
        let padded = format!("cc-{TRACE_ID}-{PARENT_ID}-01-{}", "a".repeat(600));
        assert!(matches!(tp(&padded), Err(TraceParentError::TooLong { .. })));
        // Whitespace counts toward the bound (checked before trimming).
        let spaced = format!("{VALID}{}", " ".repeat(MAX_TRACEPARENT_LEN));
        assert!(matches!(tp(&spaced), Err(TraceParentError::TooLong { .. })));
    }

    #[test]
    fn malformed_layouts() {
        for bad in [
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // Short trace-id.
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            // Long trace-id, short parent-id (same total length).
            "00-4bf92f3577b34da6a3ce929d0e0e47366-0f067aa0ba902b7-01",
            // Wrong separator.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            // Non-hex characters.
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            // Inner whitespace.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7- 1",
            // Non-ASCII.
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
            // Signs are not hex.
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(tp(bad), Err(TraceParentError::Malformed), "{bad}");
        }
    }

    #[test]
    fn uppercase_hex_is_invalid() {
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
        ] {
            assert_eq!(tp(bad), Err(TraceParentError::UppercaseHex), "{bad}");
        }
    }

    #[test]
    fn version_ff_is_invalid() {
        assert_eq!(
            tp(&format!("ff-{TRACE_ID}-{PARENT_ID}-01")),
            Err(TraceParentError::ForbiddenVersion)
        );
        assert_eq!(
            tp(&format!("ff-{TRACE_ID}-{PARENT_ID}-01-more")),
            Err(TraceParentError::ForbiddenVersion)
        );
    }

    #[test]
    fn zero_ids_are_invalid() {
        assert_eq!(
            tp(&format!("00-{}-{PARENT_ID}-01", "0".repeat(32))),
            Err(TraceParentError::ZeroTraceId)
        );
        assert_eq!(
            tp(&format!("00-{TRACE_ID}-{}-01", "0".repeat(16))),
            Err(TraceParentError::ZeroParentId)
        );
        // Future versions too.
        assert_eq!(
            tp(&format!("cc-{}-{PARENT_ID}-01", "0".repeat(32))),
            Err(TraceParentError::ZeroTraceId)
        );
    }

    #[test]
    fn version_00_rejects_trailing_data() {
        for tail in ["-", "-extra", "extra", " x", ",", "0"] {
            assert_eq!(
                tp(&format!("{VALID}{tail}")),
                Err(TraceParentError::TrailingData),
                "{tail:?}"
            );
        }
        // Two values joined as one header line.
        assert_eq!(
            tp(&format!("{VALID},{VALID}")),
            Err(TraceParentError::TrailingData)
        );
    }

    // ---- traceparent: future versions ----

    #[test]
    fn future_version_exact_length_is_valid() {
        let p = tp(&format!("cc-{TRACE_ID}-{PARENT_ID}-01")).unwrap();
        assert!(p.sampled());
        assert_eq!(p.to_string(), VALID);
    }

    #[test]
    fn future_version_with_dash_suffix_is_valid() {
        let p = tp(&format!("cc-{TRACE_ID}-{PARENT_ID}-01-extra")).unwrap();
        assert_eq!(p.to_string(), VALID);
        // Anything may follow the dash.
        assert!(tp(&format!("01-{TRACE_ID}-{PARENT_ID}-00-WHAT EVER")).is_ok());
        assert!(tp(&format!("fe-{TRACE_ID}-{PARENT_ID}-00-")).is_ok());
    }

    #[test]
    fn future_version_without_dash_suffix_is_invalid() {
        assert_eq!(
            tp(&format!("cc-{TRACE_ID}-{PARENT_ID}-01extra")),
            Err(TraceParentError::FutureVersionSuffix)
        );
    }

    #[test]
    fn future_version_too_short_is_invalid() {
        assert_eq!(
            tp(&format!("cc-{TRACE_ID}-{PARENT_ID}-1")),
            Err(TraceParentError::Malformed)
        );
    }

    #[test]
    fn future_version_keeps_only_sampled_bit() {
        let p = tp(&format!("cc-{TRACE_ID}-{PARENT_ID}-ff")).unwrap();
        assert_eq!(p.flags, 0x01);
        let q = tp(&format!("cc-{TRACE_ID}-{PARENT_ID}-fe")).unwrap();
        assert_eq!(q.flags, 0x00);
    }

    #[test]
    fn hand_built_zero_ids_are_not_valid() {
        let p = TraceParent {
            trace_id: [0; 16],
            parent_id: [1; 8],
            flags: 0,
        };
        assert!(!p.is_valid());
    }

    // ---- tracestate ----

    fn ts(s: &str) -> Result<TraceState, TraceStateError> {
        TraceState::parse(s)
    }

    #[test]
    fn tracestate_spec_examples() {
        let s = ts("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.get("rojo"), Some("00f067aa0ba902b7"));
        assert_eq!(s.get("congo"), Some("t61rcWkgMzE"));
        assert_eq!(s.get("missing"), None);
        assert_eq!(s.to_string(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]
        );
    }

    #[test]
    fn tracestate_empty_and_ows() {
        assert!(ts("").unwrap().is_empty());
        assert!(ts(" , ,\t,").unwrap().is_empty());
        let s = ts(" a=1 ,\t, b=2\t,,").unwrap();
        assert_eq!(s.to_string(), "a=1,b=2");
        assert_eq!("a=1".parse::<TraceState>(), ts("a=1"));
    }

    #[test]
    fn tracestate_32_members_ok_33_invalid() {
        let members = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(ts(&members(32)).unwrap().len(), 32);
        assert_eq!(ts(&members(33)), Err(TraceStateError::TooManyMembers));
        // Empty members do not count.
        assert_eq!(ts(&format!("{},,,, ,", members(32))).unwrap().len(), 32);
    }

    #[test]
    fn tracestate_too_long() {
        let long = format!("a={}", "b".repeat(MAX_TRACESTATE_LEN));
        assert!(matches!(ts(&long), Err(TraceStateError::TooLong { .. })));
    }

    #[test]
    fn tracestate_duplicate_keys() {
        assert_eq!(ts("a=1,b=2,a=3"), Err(TraceStateError::DuplicateKey));
        assert_eq!(ts("t@s=1,t@s=2"), Err(TraceStateError::DuplicateKey));
    }

    #[test]
    fn tracestate_missing_equals() {
        assert_eq!(ts("a=1,novalue"), Err(TraceStateError::MissingEquals));
    }

    #[test]
    fn tracestate_bad_keys() {
        for bad in [
            "=v", "A=v", "1a=v", "_a=v", "a b=v", "a =v", "a.b=v", "aB=v", "é=v",
            // Multi-tenant violations.
            "@s=v", "t@=v", "t@1s=v", "t@s@x=v", "T@s=v", "_t@s=v",
        ] {
            assert_eq!(ts(bad), Err(TraceStateError::InvalidKey), "{bad}");
        }
        // Length limits.
        let simple_max = format!("a{}", "b".repeat(255));
        assert!(ts(&format!("{simple_max}=v")).is_ok());
        assert_eq!(
            ts(&format!("{simple_max}b=v")),
            Err(TraceStateError::InvalidKey)
        );
        let tenant_max = format!("1{}", "t".repeat(240));
        assert!(ts(&format!("{tenant_max}@s=v")).is_ok());
        assert_eq!(
            ts(&format!("{tenant_max}t@s=v")),
            Err(TraceStateError::InvalidKey)
        );
        let system_max = format!("s{}", "y".repeat(13));
        assert!(ts(&format!("t@{system_max}=v")).is_ok());
        assert_eq!(
            ts(&format!("t@{system_max}y=v")),
            Err(TraceStateError::InvalidKey)
        );
    }

    #[test]
    fn tracestate_good_keys() {
        let s = ts("a0_-*/=1,0tenant@sys_-*/9=2,t@s=3,z=4").unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s.get("0tenant@sys_-*/9"), Some("2"));
    }

    #[test]
    fn tracestate_bad_values() {
        for bad in ["a=", "a=x=y", "a=tab\there", "a=\u{7f}", "a=é"] {
            assert_eq!(ts(bad), Err(TraceStateError::InvalidValue), "{bad:?}");
        }
        // Spaces and tabs after the value are OWS around the member, so they
        // are trimmed rather than making the value end in a space.
        assert_eq!(ts("a=x \t"), ts("a=x"));
        assert!(ts("a=  ").is_err());
        assert_eq!(ts("a=x ,b=1").unwrap().get("a"), Some("x"));
        assert_eq!(
            TraceState::parse(&format!("a={}", "v".repeat(257))),
            Err(TraceStateError::InvalidValue)
        );
        assert!(ts(&format!("a={}", "v".repeat(256))).is_ok());
        // Leading spaces inside the value are allowed by the grammar, but
        // trimmed as OWS here only when they precede the key.
        assert_eq!(ts("a= x").unwrap().get("a"), Some(" x"));
        assert_eq!(ts("a=!~ \"#").unwrap().get("a"), Some("!~ \"#"));
    }

    #[test]
    fn value_ending_in_space_is_invalid() {
        assert!(!valid_value("x "));
        assert!(valid_value(" x"));
        assert!(!valid_value(""));
    }

    // ---- extract ----

    #[test]
    fn extract_absent() {
        assert_eq!(extract(&[], &[]), Extracted::Absent);
        assert_eq!(extract(&[], &["a=1"]), Extracted::Absent);
        assert_eq!(extract(&[], &[]).context(), None);
    }

    #[test]
    fn extract_repeated_traceparent() {
        assert_eq!(
            extract(&[VALID, VALID], &["a=1"]),
            Extracted::Invalid(TraceParentError::Repeated)
        );
    }

    #[test]
    fn extract_invalid_traceparent_drops_tracestate() {
        let e = extract(&["00-bad"], &["a=1"]);
        assert_eq!(e, Extracted::Invalid(TraceParentError::Malformed));
        assert_eq!(e.into_context(), None);
    }

    #[test]
    fn extract_valid_with_state() {
        let e = extract(&[VALID], &["rojo=00f067aa0ba902b7"]);
        let cx = e.context().unwrap();
        assert_eq!(cx.parent, tp(VALID).unwrap());
        assert_eq!(
            cx.state().map(ToString::to_string).as_deref(),
            Some("rojo=00f067aa0ba902b7")
        );
    }

    #[test]
    fn extract_combines_tracestate_headers() {
        let e = extract(&[VALID], &["rojo=1,congo=2", "  ", "blue=3"]);
        let state = e.into_context().unwrap().state.unwrap();
        assert_eq!(state.to_string(), "rojo=1,congo=2,blue=3");
        // A duplicate across headers invalidates the combined list.
        let e = extract(&[VALID], &["a=1", "a=2"]);
        assert_eq!(e.into_context().unwrap().state, None);
    }

    #[test]
    fn extract_invalid_or_empty_tracestate_is_dropped() {
        for states in [&["A=1"][..], &[""], &[], &[",,"]] {
            let e = extract(&[VALID], states);
            let cx = e.into_context().unwrap();
            assert_eq!(cx.parent, tp(VALID).unwrap());
            assert_eq!(cx.state, None, "{states:?}");
        }
        let big = "a=1,".repeat(200);
        let cx = extract(&[VALID], &[&big, "b=2"]).into_context().unwrap();
        assert_eq!(cx.state, None);
    }

    #[test]
    fn context_state_filters_empty() {
        let cx = TraceContext {
            parent: tp(VALID).unwrap(),
            state: Some(TraceState::default()),
        };
        assert_eq!(cx.state(), None);
        assert_eq!(TraceContext::new(cx.parent).state, None);
    }

    // ---- properties ----

    proptest! {
        #[test]
        fn display_parse_round_trip(
            trace_id in any::<[u8; 16]>().prop_filter("non-zero", |t| *t != [0; 16]),
            parent_id in any::<[u8; 8]>().prop_filter("non-zero", |p| *p != [0; 8]),
            flags in any::<u8>(),
        ) {
            let p = TraceParent { trace_id, parent_id, flags };
            let s = p.to_string();
            prop_assert_eq!(s.len(), 55);
            prop_assert_eq!(TraceParent::parse(&s), Ok(p));
        }

        #[test]
        fn traceparent_parse_never_panics(s in any::<String>()) {
            let _ = TraceParent::parse(&s);
        }

        #[test]
        fn traceparent_parse_never_panics_near_valid(
            s in "[0-9a-fA-F -]{0,70}",
        ) {
            if let Ok(p) = TraceParent::parse(&s) {
                prop_assert!(p.is_valid());
            }
        }

        #[test]
        fn tracestate_parse_never_panics(s in any::<String>()) {
            let _ = TraceState::parse(&s);
        }

        #[test]
        fn tracestate_display_parse_round_trip(
            members in proptest::collection::btree_map(
                "[a-z][a-z0-9_*/-]{0,10}(@[a-z][a-z0-9]{0,5})?",
                "[!-+\\--<>-~][ -+\\--<>-~]{0,10}[!-+\\--<>-~]",
                0..8,
            ),
        ) {
            let text = members
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let parsed = TraceState::parse(&text);
            prop_assert!(parsed.is_ok(), "{:?} -> {:?}", text, parsed);
            if let Ok(state) = parsed {
                prop_assert_eq!(state.to_string(), text.clone());
                prop_assert_eq!(TraceState::parse(&state.to_string()), Ok(state));
            }
        }
    }
}
