//! The key files and authorized-keys files (`proto::keys`): a public key
//! file, a private key file, an authorized-keys file (strict and lenient)
//! and one line's options, the first byte choosing which. No input
//! panics; what the strict reader accepts, the lenient one accepts whole.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use proto::keys::{AuthorizedKeys, KeyOptions, PublicKey, StaticKeypair};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Some(text) = rex_fuzz::text(rest) else {
        return;
    };
    let path = Path::new("fuzz");
    match kind % 4 {
        0 => {
            if let Ok(k) = PublicKey::from_file_text(text, path) {
                assert_eq!(k.to_string().parse::<PublicKey>().ok(), Some(k));
            }
        }
        1 => {
            let _ = StaticKeypair::from_key_file_text(text, path);
        }
        2 => {
            let (lenient, errors) = AuthorizedKeys::parse_lenient(text, path);
            if let Ok(strict) = AuthorizedKeys::parse(text, path) {
                assert!(errors.is_empty());
                assert_eq!(strict.len(), lenient.len());
            }
        }
        _ => {
            let _ = KeyOptions::parse(text);
        }
    }
});
