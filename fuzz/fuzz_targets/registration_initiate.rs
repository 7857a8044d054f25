//! The registration proof at the exec-server (`ProofInitiator::finish`):
//! message 2, as the relay (or anyone posing as it) answers. The
//! initiator's ephemeral key is fresh for each input, so none may panic
//! and none may complete the proof.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use proto::keys::StaticKeypair;
use proto::registration::ProofInitiator;

static KEY: LazyLock<StaticKeypair> = LazyLock::new(rex_fuzz::server_key);

fuzz_target!(|data: &[u8]| {
    let Ok((initiator, _msg1)) = ProofInitiator::start(&KEY) else {
        return;
    };
    assert!(initiator.finish(data).is_err());
});
