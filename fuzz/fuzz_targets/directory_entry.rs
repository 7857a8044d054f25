//! An entry of the relay fleet's directory as a relay reads it from etcd
//! (`relay::directory::entry`): a value that decodes encodes back to
//! itself, and a key either names a server under the prefix or is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::directory::entry::{self, Entry};

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Entry::decode(data) {
        let again = Entry::decode(&e.encode()).expect("an encoded entry decodes");
        assert_eq!(again, e);
        assert!(entry::is_relay_url(&e.relay));
    }
    let servers = entry::servers_prefix("/rex");
    if let Ok(id) = entry::server_of(&servers, data) {
        assert_eq!(entry::key(&servers, id).as_bytes(), data);
    }
});
