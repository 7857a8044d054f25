//! The strict W3C Trace Context parser and formatter.
//!
//! Every carrier goes through this module. It follows the
//! [W3C Trace Context](https://www.w3.org/TR/trace-context/) grammar to the
//! letter, which the OpenTelemetry SDK's propagator does not (it accepts, for
//! example, uppercase hex and trailing data on version `00`). It implements
//! Trace Context Level 1 and the random trace-id flag of Level 2:
//!
//! - `traceparent` is exactly `version-trace_id-parent_id-flags`, 2-32-16-2
//!   lowercase hex digits separated by `-`. Version `ff`, an all-zero trace-id
//!   and an all-zero parent-id are invalid. Version `00` allows no trailing
//!   data; a higher (future) version is parsed by its first 55 characters,
//!   which must be followed by the end of the string or a `-`, and only the
//!   flags this version defines (sampled, random) are kept from it.
//! - `tracestate` is a list of `key=value` members, parsed one by one with
//!   the spec's current key grammar (1 to 256 characters: a lowercase letter
//!   or digit, then lowercase letters, digits, `_`, `-`, `*`, `/` and `@`, so
//!   `tenant@system` and `foo@` are keys and `@foo` is not) and value
//!   grammar. A list the grammar does not describe (a member without `=`,
//!   with an invalid key or value, or more than `MAX_TRACESTATE_MEMBERS`
//!   members) cannot be parsed and is dropped whole, as the spec allows and
//!   the W3C validation suite expects. A repeated key keeps its first
//!   (left-most, most recent) member and the later ones are discarded. A list
//!   longer than `MAX_TRACESTATE_LEN` characters is truncated by whole
//!   members in the order the spec prefers: members longer than
//!   `TRACESTATE_LARGE_MEMBER` characters first, then from the right.
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
const MAX_TRACEPARENT_LEN: usize = 512;

/// Most characters of a `tracestate` kept and propagated (its canonical
/// form: members joined by `,`, no whitespace). The spec asks vendors to
/// propagate at least 512; a longer list is truncated by whole members (see
/// [`TraceState::parse`]).
const MAX_TRACESTATE_LEN: usize = 512;

/// Largest `tracestate` input looked at, in bytes, including OWS, empty
/// members and the `,` joining repeated headers; a longer one is dropped
/// without being parsed. (The longest valid list, 32 members of 513
/// characters, is about 16 KiB.)
const MAX_TRACESTATE_INPUT_LEN: usize = 32 * 1024;

/// Most list-members a `tracestate` may hold (empty members not counted).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// Longest `tracestate` key, in characters.
const MAX_TRACESTATE_KEY_LEN: usize = 256;

/// Longest `tracestate` value, in characters.
const MAX_TRACESTATE_VALUE_LEN: usize = 256;

/// Members (`key=value`) longer than this many characters are the first
/// removed when a `tracestate` is truncated to `MAX_TRACESTATE_LEN`.
const TRACESTATE_LARGE_MEMBER: usize = 128;

/// The sampled trace flag (Level 1).
pub(crate) const FLAG_SAMPLED: u8 = 0x01;
/// The random trace-id trace flag (Level 2): at least the right-most 7 bytes
/// of the trace-id are random.
pub(crate) const FLAG_RANDOM: u8 = 0x02;
/// Every trace flag this implementation knows; the others are reserved and
/// sent as zero.
pub(crate) const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_RANDOM;

/// Length of a version-00 traceparent, and of the prefix parsed from a
/// future version's.
const TRACEPARENT_LEN: usize = 55;
/// Byte offsets of the `-` separators in a traceparent.
const SEPARATORS: [usize; 3] = [2, 35, 52];

/// Why a `traceparent` was rejected. Each rule of the spec has its own
/// variant; the carrier-level conditions ([`Repeated`](Self::Repeated),
/// [`NotText`](Self::NotText)) are here too so that [`Extracted::Invalid`]
/// can name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceParentError {
    /// The value is empty, or only whitespace.
    #[error("traceparent is empty")]
    Empty,
    /// The value is longer than `MAX_TRACEPARENT_LEN`; nothing was parsed.
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

/// Why a `tracestate` was rejected as a whole. An invalid tracestate is
/// dropped; the traceparent it came with is still used. (Repeated keys and
/// an over-long list are not errors: see [`TraceState::parse`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceStateError {
    /// The input is longer than `MAX_TRACESTATE_INPUT_LEN`; nothing was
    /// parsed.
    #[error("tracestate is {len} bytes, over the {MAX_TRACESTATE_INPUT_LEN}-byte limit")]
    TooLong {
        /// The length of the rejected value, in bytes.
        len: usize,
    },
    /// More than `MAX_TRACESTATE_MEMBERS` non-empty list-members.
    #[error("tracestate has more than {MAX_TRACESTATE_MEMBERS} list-members")]
    TooManyMembers,
    /// A non-empty list-member has no `=`.
    #[error("tracestate list-member has no '='")]
    MissingEquals,
    /// A key does not match the spec's key grammar: empty, longer than 256
    /// characters, not starting with a lowercase letter or digit (e.g. `@foo`),
    /// or holding a character other than lowercase letters, digits, `_`, `-`,
    /// `*`, `/` and `@`.
    #[error("tracestate key is invalid")]
    InvalidKey,
    /// A value is empty, longer than 256 characters, holds a character outside
    /// printable ASCII (or `,` or `=`), or ends in a space.
    #[error("tracestate value is invalid")]
    InvalidValue,
}

/// Decodes hex already checked to be lowercase (`0-9a-f`) into `out`
/// (`hex.len() == 2 * out.len()`); no allocation, no error path.
fn decode_lower_hex(hex: &[u8], out: &mut [u8]) {
    let nibble = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
}

/// Removes optional whitespace (spaces and horizontal tabs) at both ends.
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// A parsed `traceparent`.
///
/// Values produced by [`TraceParent::parse`] always have non-zero ids. The
/// ids are public so that other representations (the OpenTelemetry span
/// context) can be made from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace-id, 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// The parent-id (span id of the caller's span), 8 bytes, not all zero.
    pub parent_id: [u8; 8],
    /// The trace flags. For version 00 the byte is kept as received; for a
    /// future version only the [`KNOWN_FLAGS`] are kept. (The outgoing
    /// conversions in [`crate::otel`] send only the known flags.)
    pub(crate) flags: u8,
}

impl TraceParent {
    /// Parses one `traceparent` header value strictly (see the module docs).
    ///
    /// Inputs longer than `MAX_TRACEPARENT_LEN` bytes are rejected before
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
                flags[0] & KNOWN_FLAGS
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

    /// Whether the random trace-id flag (Level 2) is set.
    pub(crate) fn random(&self) -> bool {
        self.flags & FLAG_RANDOM != 0
    }

    /// Whether both ids are non-zero (always true for a parsed value).
    #[cfg(test)]
    fn is_valid(&self) -> bool {
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

/// A validated `tracestate` list, in header order, with unique keys and at
/// most `MAX_TRACESTATE_LEN` characters in its canonical form.
///
/// May be empty: the spec requires accepting an empty header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

impl TraceState {
    /// Parses one `tracestate` value (or several already joined with `,`).
    ///
    /// Inputs longer than `MAX_TRACESTATE_INPUT_LEN` bytes are rejected
    /// before parsing. Members are separated by `,` and parsed one by one;
    /// OWS (spaces and tabs) around a member is removed, and empty members
    /// are ignored and not counted toward `MAX_TRACESTATE_MEMBERS`.
    ///
    /// - A member the grammar does not describe (no `=`, an invalid key or
    ///   value) makes the whole list invalid, as do more than
    ///   `MAX_TRACESTATE_MEMBERS` members: the list cannot be parsed, and
    ///   the spec lets a vendor discard it entirely (the W3C validation
    ///   suite expects that).
    /// - A key already seen keeps its first (left-most) member; the later
    ///   member is discarded (the spec lets vendors drop duplicates).
    /// - A list longer than `MAX_TRACESTATE_LEN` characters is truncated
    ///   by whole members: the right-most member longer than
    ///   `TRACESTATE_LARGE_MEMBER` characters first, while there is one,
    ///   then the right-most member, until it fits.
    pub fn parse(value: &str) -> Result<Self, TraceStateError> {
        if value.len() > MAX_TRACESTATE_INPUT_LEN {
            return Err(TraceStateError::TooLong { len: value.len() });
        }
        let mut members: Vec<(String, String)> = Vec::new();
        let mut seen = 0usize;
        for member in value.split(',').map(trim_ows) {
            if member.is_empty() {
                continue;
            }
            seen += 1;
            if seen > MAX_TRACESTATE_MEMBERS {
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
            if members.iter().all(|(k, _)| k != key) {
                members.push((key.to_owned(), val.to_owned()));
            }
        }
        let mut state = Self { members };
        state.truncate(MAX_TRACESTATE_LEN);
        Ok(state)
    }

    /// Removes whole members until the canonical form is at most `max_len`
    /// characters: the right-most member longer than
    /// `TRACESTATE_LARGE_MEMBER` characters while there is one, then the
    /// right-most member (Trace Context, "tracestate Limits").
    pub fn truncate(&mut self, max_len: usize) {
        while self.formatted_len() > max_len {
            let large = self
                .members
                .iter()
                .rposition(|m| member_len(m) > TRACESTATE_LARGE_MEMBER);
            match large.or_else(|| self.members.len().checked_sub(1)) {
                Some(i) => {
                    self.members.remove(i);
                }
                None => break,
            }
        }
    }

    /// The length of the canonical form ([`Display`](fmt::Display)), in
    /// characters.
    pub fn formatted_len(&self) -> usize {
        self.members.iter().map(member_len).sum::<usize>() + self.members.len().saturating_sub(1)
    }

    /// Whether the list has no members.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The number of members.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.members.len()
    }

    /// The value for `key`, if present.
    #[cfg(test)]
    fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The members as `(key, value)` pairs, in header order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The length of `key=value`.
fn member_len((key, value): &(String, String)) -> usize {
    key.len() + 1 + value.len()
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

/// The spec's key grammar:
///
/// ```text
/// key     = ( lcalpha / DIGIT ) 0*255( keychar )
/// keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"
/// ```
///
/// (The older multi-tenant form `tenant-id "@" system-id` is a special case.)
fn valid_key(key: &str) -> bool {
    let key = key.as_bytes();
    let keychar = |b: u8| {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
    };
    match key.split_first() {
        Some((&first, rest)) => {
            key.len() <= MAX_TRACESTATE_KEY_LEN
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.iter().all(|&b| keychar(b))
        }
        None => false,
    }
}

/// The spec's value grammar: 1 to 256 characters from 0x20–0x7E except `,`
/// and `=`, the last not a space.
fn valid_value(value: &str) -> bool {
    let value = value.as_bytes();
    (1..=MAX_TRACESTATE_VALUE_LEN).contains(&value.len())
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
    #[cfg(test)]
    pub(crate) fn new(parent: TraceParent) -> Self {
        Self {
            parent,
            state: None,
        }
    }

    /// The tracestate, if there is a non-empty one.
    pub(crate) fn state(&self) -> Option<&TraceState> {
        self.state.as_ref().filter(|s| !s.is_empty())
    }
}

/// The outcome of reading a trace context from a carrier.
///
/// Extraction never fails a call: [`Absent`](Self::Absent) and
/// [`Invalid`](Self::Invalid) both mean "start a new trace". Exhaustive on
/// purpose: a carrier's reader handles each of the three outcomes there are.
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
    #[cfg(test)]
    pub(crate) fn context(&self) -> Option<&TraceContext> {
        match self {
            Self::Valid(cx) => Some(cx),
            Self::Absent | Self::Invalid(_) => None,
        }
    }

    /// The context, if valid, by value.
    #[cfg(test)]
    pub(crate) fn into_context(self) -> Option<TraceContext> {
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
///   with `,` (as the spec prescribes for repeated headers) and parsed by
///   [`TraceState::parse`]; an invalid or empty tracestate becomes `None`
///   without affecting the parent.
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
    if values.is_empty() || joined_len > MAX_TRACESTATE_INPUT_LEN {
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
    fn future_version_keeps_only_known_flags() {
        let p = tp(&format!("cc-{TRACE_ID}-{PARENT_ID}-ff")).unwrap();
        assert_eq!(p.flags, KNOWN_FLAGS);
        assert!(p.sampled() && p.random());
        let q = tp(&format!("cc-{TRACE_ID}-{PARENT_ID}-fc")).unwrap();
        assert_eq!(q.flags, 0x00);
        let r = tp(&format!("cc-{TRACE_ID}-{PARENT_ID}-06-x")).unwrap();
        assert_eq!(r.flags, FLAG_RANDOM);
        assert!(!r.sampled() && r.random());
    }

    #[test]
    fn random_flag_is_read() {
        assert!(
            tp(&format!("00-{TRACE_ID}-{PARENT_ID}-02"))
                .unwrap()
                .random()
        );
        assert!(
            tp(&format!("00-{TRACE_ID}-{PARENT_ID}-03"))
                .unwrap()
                .random()
        );
        assert!(
            !tp(&format!("00-{TRACE_ID}-{PARENT_ID}-01"))
                .unwrap()
                .random()
        );
        assert!(
            !tp(&format!("00-{TRACE_ID}-{PARENT_ID}-04"))
                .unwrap()
                .random()
        );
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

    /// `ts(s)` in canonical form.
    fn canon(s: &str) -> String {
        ts(s).unwrap().to_string()
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
        assert_eq!(canon(" a=1 ,\t, b=2\t,,"), "a=1,b=2");
        assert_eq!(canon("foo=1 \t , \t bar=2, \t baz=3"), "foo=1,bar=2,baz=3");
        assert_eq!(canon("\t foo=1 \t"), "foo=1");
        assert_eq!("a=1".parse::<TraceState>(), ts("a=1"));
    }

    // Rule: members are parsed one by one; one the grammar does not describe
    // makes the whole list invalid, wherever it stands.

    #[test]
    fn tracestate_invalid_member_invalidates_the_list() {
        for (bad, why) in [
            ("foo=1,bar", TraceStateError::MissingEquals),
            ("bar,foo=1", TraceStateError::MissingEquals),
            ("foo=1,@foo=1,bar=2", TraceStateError::InvalidKey),
            ("@foo=1,bar=2", TraceStateError::InvalidKey),
            ("foo=1,FOO=1", TraceStateError::InvalidKey),
            ("foo=,bar=3", TraceStateError::InvalidValue),
            ("foo=1,bar=baz=2", TraceStateError::InvalidValue),
        ] {
            assert_eq!(ts(bad), Err(why), "{bad}");
        }
    }

    // Rule: a repeated key keeps its first member; later ones are discarded.

    #[test]
    fn tracestate_duplicate_keys_keep_the_first() {
        assert_eq!(canon("foo=1,foo=1"), "foo=1");
        assert_eq!(canon("foo=1,foo=2"), "foo=1");
        assert_eq!(canon("a=1,b=2,a=3,c=4,b=5"), "a=1,b=2,c=4");
        assert_eq!(canon("t@s=1,t@s=2"), "t@s=1");
        // A repeated key is not a grammar error: an invalid member after it
        // still invalidates the list.
        assert_eq!(ts("a=1,a=2,B=3"), Err(TraceStateError::InvalidKey));
    }

    // Rule: at most 32 members; more cannot be parsed.

    #[test]
    fn tracestate_32_members_ok_33_invalid() {
        let members = |n: usize| {
            (1..=n)
                .map(|i| format!("bar{i:02}={i:02}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let s = ts(&members(32)).unwrap();
        assert_eq!(s.len(), 32);
        assert_eq!(s.get("bar01"), Some("01"));
        assert_eq!(ts(&members(33)), Err(TraceStateError::TooManyMembers));
        // Empty members do not count.
        assert_eq!(ts(&format!("{},,,, ,", members(32))).unwrap().len(), 32);
        // Repeated keys do: 33 members are 33 members.
        assert_eq!(
            ts(&format!("{},bar01=x", members(32))),
            Err(TraceStateError::TooManyMembers)
        );
    }

    // Rule: the list is truncated to 512 characters by whole members,
    // members over 128 characters first, then from the right.

    #[test]
    fn tracestate_512_characters_kept_whole() {
        // Seven members of 63 characters and one of `last` characters.
        let list = |last: usize| {
            let mut parts: Vec<String> =
                (0..7).map(|i| format!("k{i}={}", "v".repeat(60))).collect();
            parts.push(format!("k7={}", "v".repeat(last - 3)));
            parts.join(",")
        };
        let at_limit = list(64);
        assert_eq!(at_limit.len(), MAX_TRACESTATE_LEN);
        assert_eq!(canon(&at_limit), at_limit);
        // One character over: the right-most member goes.
        let over = list(65);
        assert_eq!(over.len(), MAX_TRACESTATE_LEN + 1);
        let s = ts(&over).unwrap();
        assert_eq!(s.len(), 7);
        assert!(s.get("k7").is_none());
        // The same when the last member is a short one.
        let plus = format!("{},x=1", list(61));
        assert_eq!(plus.len(), 513);
        assert_eq!(canon(&plus), list(61));
    }

    #[test]
    fn tracestate_truncation_removes_large_members_first() {
        let big = |k: &str| format!("{k}={}", "v".repeat(150)); // 155 characters
        // big1, s0..s9, big2, s10..s19, big3: 3 * 155 + 40 + 50 + 22 = 577.
        let mut parts = vec![big("big1")];
        parts.extend((0..10).map(|i| format!("s{i}=1")));
        parts.push(big("big2"));
        parts.extend((10..20).map(|i| format!("s{i}=1")));
        parts.push(big("big3"));
        assert_eq!(parts.join(",").len(), 577);
        let s = ts(&parts.join(",")).unwrap();
        // Removing big3 (the right-most large member) leaves 421: enough.
        assert!(s.get("big3").is_none());
        assert!(s.get("big1").is_some() && s.get("big2").is_some());
        assert_eq!(s.len(), 22);
        assert_eq!(s.formatted_len(), 421);
        assert_eq!(s.to_string().len(), s.formatted_len());
        // Large members go before any small one, whatever their place.
        let mut parts: Vec<String> = (0..4).map(|i| big(&format!("big{i}"))).collect();
        parts.push("s=1".into());
        let s = ts(&parts.join(",")).unwrap();
        assert_eq!(
            s.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["big0", "big1", "big2", "s"]
        );
    }

    #[test]
    fn tracestate_truncation_then_removes_from_the_right() {
        // Only members of at most 128 characters: the right-most go first.
        let member = |i: usize| format!("m{i:02}={}", "v".repeat(120)); // 124 characters
        let list = (0..6).map(member).collect::<Vec<_>>().join(",");
        let s = ts(&list).unwrap();
        assert_eq!(
            s.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["m00", "m01", "m02", "m03"]
        );
        assert_eq!(s.formatted_len(), 4 * 124 + 3);
        // A large member is removed even when it is the left-most.
        let with_large = format!("big={},{}", "v".repeat(150), list);
        let s = ts(&with_large).unwrap();
        assert!(s.get("big").is_none());
        assert_eq!(s.len(), 4);
        // One member longer than the limit on its own leaves nothing.
        let huge = format!("{}={}", "k".repeat(256), "v".repeat(256));
        assert!(ts(&huge).unwrap().is_empty());
    }

    #[test]
    fn truncate_is_public_and_idempotent() {
        let mut s = ts("a=1,b=2,c=3").unwrap();
        s.truncate(7);
        assert_eq!(s.to_string(), "a=1,b=2");
        s.truncate(7);
        assert_eq!(s.to_string(), "a=1,b=2");
        s.truncate(0);
        assert!(s.is_empty());
        s.truncate(0);
        assert!(s.is_empty());
    }

    #[test]
    fn tracestate_input_bound() {
        let long = format!("a=1{}", " ".repeat(MAX_TRACESTATE_INPUT_LEN));
        assert_eq!(
            ts(&long),
            Err(TraceStateError::TooLong {
                len: MAX_TRACESTATE_INPUT_LEN + 3
            })
        );
        // Within the bound, OWS and empty members are not limited otherwise.
        let padded = format!("a=1{},b=2", ",  \t".repeat(1000));
        assert_eq!(canon(&padded), "a=1,b=2");
    }

    // Rule: the spec's current key grammar.

    #[test]
    fn tracestate_keys_up_to_256_characters() {
        let max = "z".repeat(256);
        assert_eq!(ts(&format!("{max}=1")).unwrap().get(&max), Some("1"));
        assert_eq!(
            ts(&format!("{}=1", "z".repeat(257))),
            Err(TraceStateError::InvalidKey)
        );
        // With at signs, the limit is the key's total length.
        for key in [
            format!("{}@{}", "t".repeat(241), "v".repeat(14)),
            format!("{}@v", "t".repeat(242)),
            format!("t@{}", "v".repeat(15)),
            format!("t@{}", "v".repeat(254)),
        ] {
            let s = ts(&format!("foo=1,{key}=1")).unwrap();
            assert_eq!(s.get(&key), Some("1"), "{key}");
            assert_eq!(s.get("foo"), Some("1"));
        }
        assert_eq!(
            ts(&format!("t@{}=1", "v".repeat(255))),
            Err(TraceStateError::InvalidKey)
        );
    }

    #[test]
    fn tracestate_keys_with_at_signs() {
        for key in [
            "tenant@system",
            "foo@",
            "foo@@bar",
            "foo@bar@baz",
            "1special",
            "0tenant@sys_-*/9",
            "a0_-*/=1",
        ] {
            let key = key.trim_end_matches("=1");
            let s = ts(&format!("{key}=1,bar=2")).unwrap();
            assert_eq!(s.get(key), Some("1"), "{key}");
            assert_eq!(s.get("bar"), Some("2"), "{key}");
        }
        // A key must not start with an at sign.
        assert_eq!(ts("@foo=1,bar=2"), Err(TraceStateError::InvalidKey));
        assert_eq!(ts("@=1"), Err(TraceStateError::InvalidKey));
    }

    #[test]
    fn tracestate_bad_keys() {
        for bad in [
            "=v", "A=v", "_a=v", "-a=v", "*a=v", "/a=v", "@a=v", "a b=v", "a =v", "foo =1",
            "a.b=v", "aB=v", "FOO=1", "é=v", "T@s=v", "t@S=v", "a\tb=v",
        ] {
            assert_eq!(ts(bad), Err(TraceStateError::InvalidKey), "{bad}");
        }
    }

    #[test]
    fn tracestate_all_allowed_characters() {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
        let key_at = format!("{key}@a-z0-9_-*/");
        // Every value character: 0x20-0x7E but ',' and '=', not ending in a
        // space (this one starts with one).
        let value: String = (0x20u8..=0x7e)
            .filter(|b| *b != b',' && *b != b'=')
            .map(char::from)
            .collect();
        for k in [key.to_owned(), key_at] {
            let s = ts(&format!("{k}={value}")).unwrap();
            assert_eq!(s.get(&k), Some(value.as_str()));
            assert_eq!(s.to_string(), format!("{k}={value}"));
        }
    }

    #[test]
    fn tracestate_bad_values() {
        for bad in ["a=", "a=x=y", "a=tab\there", "a=\u{7f}", "a=é", "a=\n"] {
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
        // Leading spaces are part of the value.
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
        // A key repeated across headers keeps its first member.
        for (states, want) in [
            (&["foo=1", "foo=1"][..], "foo=1"),
            (&["foo=1", "foo=2"], "foo=1"),
            (&["foo=1,bar=2", "bar=3,foo=4,baz=5"], "foo=1,bar=2,baz=5"),
        ] {
            let e = extract(&[VALID], states);
            let state = e.into_context().unwrap().state.unwrap();
            assert_eq!(state.to_string(), want, "{states:?}");
        }
        // Empty headers are empty members.
        for states in [&["", "foo=1"][..], &["foo=1", ""], &["foo=1", " \t "]] {
            let e = extract(&[VALID], states);
            let state = e.into_context().unwrap().state.unwrap();
            assert_eq!(state.to_string(), "foo=1", "{states:?}");
        }
    }

    #[test]
    fn extract_invalid_member_in_one_header_drops_all() {
        let long_key = format!("{}=1", "z".repeat(257));
        for states in [
            &["foo=1", long_key.as_str()][..],
            &["foo=1", "@foo=1"],
            &["foo=1", "bar=2,x"],
        ] {
            let cx = extract(&[VALID], states).into_context().unwrap();
            assert_eq!(cx.state, None, "{states:?}");
        }
        // 33 members over four headers.
        let members = |r: std::ops::RangeInclusive<usize>| {
            r.map(|i| format!("bar{i:02}={i:02}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (a, b, c) = (members(1..=10), members(11..=20), members(21..=30));
        let (d32, d33) = (members(31..=32), members(31..=33));
        let cx = extract(&[VALID], &[&a, &b, &c, &d32])
            .into_context()
            .unwrap();
        assert_eq!(cx.state.unwrap().len(), 32);
        let cx = extract(&[VALID], &[&a, &b, &c, &d33])
            .into_context()
            .unwrap();
        assert_eq!(cx.state, None);
    }

    #[test]
    fn extract_invalid_or_empty_tracestate_is_dropped() {
        for states in [&["A=1"][..], &[""], &[], &[",,"]] {
            let e = extract(&[VALID], states);
            let cx = e.into_context().unwrap();
            assert_eq!(cx.parent, tp(VALID).unwrap());
            assert_eq!(cx.state, None, "{states:?}");
        }
        // Over the input bound in total, though each header is within it.
        let big = format!("a=1{}", " ".repeat(MAX_TRACESTATE_INPUT_LEN / 2));
        let cx = extract(&[VALID], &[&big, &big]).into_context().unwrap();
        assert_eq!(cx.state, None);
        assert_eq!(
            extract(&[VALID], &[&big]).into_context().unwrap().state,
            ts("a=1").ok()
        );
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
