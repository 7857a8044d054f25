//! The message-1 timestamp: seconds since the Unix epoch (`u64`
//! big-endian) then nanoseconds (`u32` big-endian).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of the message-1 timestamp payload.
pub(crate) const TIMESTAMP_LEN: usize = 12;
/// Encodes `t` as the 12-byte message-1 timestamp (times before the epoch
/// encode as zero).
pub(crate) fn encode_timestamp(t: SystemTime) -> [u8; TIMESTAMP_LEN] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let mut out = [0u8; TIMESTAMP_LEN];
    let (secs, nanos) = out.split_at_mut(8);
    secs.copy_from_slice(&d.as_secs().to_be_bytes());
    nanos.copy_from_slice(&d.subsec_nanos().to_be_bytes());
    out
}

/// Decodes a message-1 timestamp into a duration since the Unix epoch.
/// `None` unless `bytes` is exactly 12 bytes with nanoseconds below 10^9.
pub(crate) fn decode_timestamp(bytes: &[u8]) -> Option<Duration> {
    let raw: &[u8; TIMESTAMP_LEN] = bytes.try_into().ok()?;
    let (secs, nanos) = raw.split_at(8);
    let secs = u64::from_be_bytes(secs.try_into().ok()?);
    let nanos = u32::from_be_bytes(nanos.try_into().ok()?);
    if nanos >= 1_000_000_000 {
        return None;
    }
    Some(Duration::new(secs, nanos))
}
