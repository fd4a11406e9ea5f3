//! The audit-chain headers a client reads from every answer (`x-agentkeys-audit-head`,
//! `x-agentkeys-audit-at`) and the server reads from every request (`x-agentkeys-audit-seen` is
//! a plain integer): no panic, and an accepted head prints back to a header that parses the same.
#![no_main]

use agentkeys_proto::chain::{ChainPlace, parse_at};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(place) = ChainPlace::parse_header(text) {
        assert!(place.seq > 0);
        assert_eq!(ChainPlace::parse_header(&place.to_header()), Some(place));
    }
    let _ = parse_at(text);
});
