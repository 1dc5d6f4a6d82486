//! Any bytes a client can send as a text frame decode to a request or to a clean error,
//! and a decoded request survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parley::frame::decode(text) {
        Ok(request) => {
            let again = serde_json::to_string(&request).expect("requests serialise");
            assert_eq!(parley::frame::decode(&again).expect("round trip"), request);
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
});
