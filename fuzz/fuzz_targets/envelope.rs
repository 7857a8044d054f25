//! Session envelopes (`proto::envelope`), as the session decodes them
//! after decryption: bounded, and what decodes re-encodes.
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
    }
});
