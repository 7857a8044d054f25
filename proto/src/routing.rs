//! Routing metadata on the relay links (gRPC request headers, in clear).

/// Request header naming the exec-server a client wants (its server id).
pub const SERVER_ID_HEADER: &str = "rex-server-id";
/// The path of `Tunnel/Open` (a client's, or a relay's at a fleet peer),
/// served and called without tonic's codec ([`crate::pb`]'s generated code
/// names the same).
pub const OPEN_PATH: &str = "/rex.tunnel.v1.Tunnel/Open";
/// The path of `Registry/Accept` (an exec-server's half of a session).
pub const ACCEPT_PATH: &str = "/rex.tunnel.v1.Registry/Accept";
/// Request header naming the session an exec-server accepts (hex).
pub const SESSION_ID_HEADER: &str = "rex-session-id";
/// Request metadata naming a spare `Accept` stream by its registration's
/// spare token (hex), instead of a session id.
pub const SPARE_TOKEN_HEADER: &str = "rex-spare-token";
/// Request header by which an exec-server names an `Accept` stream for
/// the relay's credit (a decimal number, unique within its registration;
/// see `Registered.credit_window`). Without it, a stream gets none.
pub const CREDIT_STREAM_HEADER: &str = "rex-credit-stream";
/// The least credit window a relay tells (one frame of the largest
/// payload must always fit in it); an exec-server takes a smaller one as
/// no credit.
pub const MIN_CREDIT_WINDOW: u32 = crate::limits::MAX_FRAME_PAYLOAD as u32;
/// What a stream under credit is granted at the start, whatever its
/// window (room for a frame of the largest payload): the rest of its
/// window comes in grants, drawn from the relay's pool once the stream
/// moves.
pub const CREDIT_FLOOR: u32 = 64 * 1024;
/// Request header by which an exec-server asks for the credit window of an
/// `Accept` stream (decimal bytes): one round trip of its link to the
/// relay at [`CREDIT_RATE`] ([`credit_window_for`]). The relay gives it
/// within the registration's window and [`MAX_CREDIT_WINDOW`].
pub const CREDIT_WINDOW_HEADER: &str = "rex-credit-window";
/// The rate a session's credit is sized for: one round trip of the link
/// at it.
pub const CREDIT_RATE: u64 = 400 * 1024 * 1024;
/// The widest credit window a relay gives: a round trip of 40 ms at
/// [`CREDIT_RATE`]. (What a relay lends beyond each session's floor comes
/// from its pool, so the pool, not this, bounds what stalled sessions
/// hold.) The relay's HTTP/2 window for a stream under credit is widened
/// to match ([`stream_window_for_credit`]).
pub const MAX_CREDIT_WINDOW: u32 = 16 * 1024 * 1024;

/// The HTTP/2 stream window a stream under `credit` bytes of payload
/// credit needs so that the credit, not HTTP/2, is what limits it: the
/// credit, an eighth more for what frames carry besides their payload,
/// and one whole message (at most HTTP/2's largest window).
pub fn stream_window_for_credit(credit: u64) -> u32 {
    let message = (crate::limits::MAX_GRPC_MESSAGE + 5) as u64;
    let window = credit.saturating_add(credit / 8).saturating_add(message);
    u32::try_from(window).map_or(MAX_STREAM_WINDOW, |w| w.min(MAX_STREAM_WINDOW))
}

/// The most a relay widens an authenticated client's connection to (for
/// each stream, before [`stream_window_for_credit`]'s margin): what a
/// call's stdin may have in flight across a long path (8 MiB: 160 MiB/s
/// across a 50 ms round trip). An honest client sends within its call's
/// stdin window, which the exec-server enforces; this bounds what any
/// authenticated client's stream can leave unread at the relay.
pub const MAX_CLIENT_WINDOW: u32 = 8 * 1024 * 1024;

/// The HTTP/2 stream window of a link whose streams carry an
/// authenticated client's frames: [`MAX_CLIENT_WINDOW`] and
/// [`stream_window_for_credit`]'s margin (a relay's or a listening
/// exec-server's connection from a client whose session has authenticated,
/// and an exec-server's link to its relay).
pub fn authenticated_client_stream_window() -> u32 {
    stream_window_for_credit(u64::from(MAX_CLIENT_WINDOW))
}

/// HTTP/2's largest window.
const MAX_STREAM_WINDOW: u32 = (1 << 31) - 1;

/// The credit window for a link whose round trip is `rtt`, at least
/// `least`: one round trip at [`CREDIT_RATE`], at most
/// [`MAX_CREDIT_WINDOW`] (unless `least` is wider).
pub fn credit_window_for(least: u32, rtt: std::time::Duration) -> u32 {
    let path = u64::try_from(rtt.as_micros())
        .unwrap_or(u64::MAX)
        .saturating_mul(CREDIT_RATE)
        / 1_000_000;
    u32::try_from(path)
        .unwrap_or(u32::MAX)
        .clamp(least, MAX_CREDIT_WINDOW.max(least))
}

/// The length of a registration's spare token.
pub const SPARE_TOKEN_LEN: usize = 16;
/// Length of a session id in bytes.
pub const SESSION_ID_LEN: usize = 16;

/// Whether `s` has the form of a server id (32 lowercase hex digits).
pub fn is_server_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses a session id from its hex form.
pub fn parse_session_id(s: &str) -> Option<[u8; SESSION_ID_LEN]> {
    if s.len() != SESSION_ID_LEN * 2 {
        return None;
    }
    let mut out = [0u8; SESSION_ID_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = s.get(i * 2..i * 2 + 2)?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// A refusing status that names its reason in its details, so that the
/// client tells refusals apart by code rather than by message.
pub fn refuse(
    code: tonic::Code,
    message: impl Into<String>,
    reason: crate::pb::tunnel::CloseReason,
) -> tonic::Status {
    use prost::Message;
    let details = crate::pb::tunnel::Refusal {
        reason: reason as i32,
    }
    .encode_to_vec();
    tonic::Status::with_details(code, message, details.into())
}

/// The reason a refusing status names in its details, if any.
pub fn refusal(status: &tonic::Status) -> Option<crate::pb::tunnel::CloseReason> {
    use prost::Message;
    let refusal = crate::pb::tunnel::Refusal::decode(status.details()).ok()?;
    crate::pb::tunnel::CloseReason::try_from(refusal.reason)
        .ok()
        .filter(|r| *r != crate::pb::tunnel::CloseReason::Unspecified)
}

/// Formats a session id as lowercase hex.
pub fn format_session_id(id: &[u8; SESSION_ID_LEN]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_credit_window_is_one_round_trip_of_the_link_within_its_bounds() {
        use std::time::Duration;
        // Next to the relay: the least.
        assert_eq!(
            super::credit_window_for(65_536, Duration::from_micros(100)),
            65_536
        );
        // 1 ms away: 1 ms at 400 MiB/s.
        assert_eq!(
            super::credit_window_for(65_536, Duration::from_millis(1)),
            419_430
        );
        // 20 ms away: 20 ms at 400 MiB/s, past the links' 1 MiB.
        assert_eq!(
            super::credit_window_for(65_536, Duration::from_millis(20)),
            8_388_608
        );
        // Far away: the most.
        assert_eq!(
            super::credit_window_for(65_536, Duration::from_millis(80)),
            super::MAX_CREDIT_WINDOW
        );
        // A least wider than that is kept.
        assert_eq!(super::credit_window_for(4 << 20, Duration::ZERO), 4 << 20);
    }

    #[test]
    fn a_stream_under_credit_gets_a_window_the_credit_fills_first() {
        let message = (crate::limits::MAX_GRPC_MESSAGE + 5) as u32;
        // The links' own window stays for the least credit.
        let least = super::stream_window_for_credit(u64::from(MIN_CREDIT_WINDOW));
        assert!(least > MIN_CREDIT_WINDOW + message);
        // The widest credit, with room for the frames around its payload.
        let widest = super::stream_window_for_credit(u64::from(MAX_CREDIT_WINDOW));
        assert_eq!(widest, MAX_CREDIT_WINDOW + MAX_CREDIT_WINDOW / 8 + message);
        // Never past HTTP/2's largest.
        assert_eq!(super::stream_window_for_credit(u64::MAX), (1 << 31) - 1);
    }

    use super::*;

    #[test]
    fn a_refusal_travels_in_the_status_details() {
        use crate::pb::tunnel::CloseReason;
        let s = refuse(
            tonic::Code::NotFound,
            "no such server",
            CloseReason::UnknownServer,
        );
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(refusal(&s), Some(CloseReason::UnknownServer));
        assert_eq!(refusal(&tonic::Status::not_found("plain")), None);
        let garbage = tonic::Status::with_details(tonic::Code::Internal, "x", vec![0xff; 3].into());
        assert_eq!(refusal(&garbage), None);
    }

    #[test]
    fn server_id_shape() {
        assert!(is_server_id(&"a1".repeat(16)));
        assert!(!is_server_id(&"A1".repeat(16)));
        assert!(!is_server_id("abc"));
    }

    #[test]
    fn session_id_round_trip() {
        let id = [7u8; SESSION_ID_LEN];
        assert_eq!(parse_session_id(&format_session_id(&id)), Some(id));
        assert_eq!(parse_session_id("zz"), None);
        assert_eq!(parse_session_id(&"g".repeat(32)), None);
    }
}
