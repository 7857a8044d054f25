//! The proof a relay of the fleet gives with a forwarded session, as the
//! receiving relay checks it (`relay::fleet::Fleet::verify`), at the
//! targets' clock: nothing panics, and only a proof made with the fleet's
//! key (the seeds) checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::fleet::{Fleet, ProofError};

fuzz_target!(|data: &[u8]| {
    let Some(text) = rex_fuzz::text(data) else {
        return;
    };
    // A fresh fleet each time: no replay memory carried between inputs.
    let fleet = Fleet::from_secret(&rex_fuzz::FLEET_SECRET);
    match fleet.verify(text, rex_fuzz::FLEET_SERVER, rex_fuzz::now()) {
        Ok(_) => assert_eq!(
            fleet.verify(text, rex_fuzz::FLEET_SERVER, rex_fuzz::now()),
            Err(ProofError::Replayed)
        ),
        Err(_) => {}
    }
});
