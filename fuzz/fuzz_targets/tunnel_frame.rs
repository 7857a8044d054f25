//! Relay frames and the other tunnel messages the relay and exec-server
//! decode from the network (`Frame`, `RegisterUp`, `RegisterDown`,
//! `Incoming`), and the routing headers. What decodes re-encodes to
//! something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::pb::tunnel::{Frame, Incoming, RegisterDown, RegisterUp};

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(m) = M::decode(data) {
        let again = M::decode(m.encode_to_vec().as_slice()).expect("re-encoded message decodes");
        assert_eq!(m, again);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => round_trip::<Frame>(rest),
        1 => round_trip::<RegisterUp>(rest),
        2 => round_trip::<RegisterDown>(rest),
        3 => round_trip::<Incoming>(rest),
        _ => {
            if let Some(text) = rex_fuzz::text(rest) {
                if let Some(id) = proto::routing::parse_session_id(text) {
                    assert_eq!(
                        proto::routing::parse_session_id(&proto::routing::format_session_id(&id)),
                        Some(id)
                    );
                }
                let _ = proto::routing::is_server_id(text);
            }
        }
    }
});
