//! Session envelopes (`proto::envelope`), as the session decodes them
//! after decryption: bounded, and what decodes re-encodes; a final event's
//! stage timings (bytes in the envelope, decoded by the client once the
//! event is handed on) likewise.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let copied = proto::envelope::decode(data);
    let shared = proto::envelope::decode_bytes(bytes::Bytes::copy_from_slice(data));
    assert_eq!(copied.is_ok(), shared.is_ok());
    if let (Ok(env), Ok(shared)) = (copied, shared) {
        assert_eq!(env, shared);
        let encoded = proto::envelope::encode(&env).expect("a decoded envelope encodes");
        assert_eq!(proto::envelope::decode(&encoded).expect("and decodes"), env);
        if let Some(proto::pb::session::envelope::Body::Event(event)) = &env.body
            && let Some(timings) = &event.timings
        {
            let encoded = proto::session::EncodedTimings::from_bytes(timings.clone());
            if let Ok(decoded) = encoded.decode() {
                let again = proto::session::EncodedTimings::encode(&decoded);
                assert_eq!(again.decode().expect("re-encoded timings decode"), decoded);
            }
        }
    }
});
