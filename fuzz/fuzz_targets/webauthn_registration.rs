//! A registration posted to `/presence/<id>/answer` during enrollment: client data and the CBOR
//! attestation object split from any bytes (first byte: the split point), checked against a
//! fixed relying party and challenge, with and without listed roots. No panic.
#![no_main]

use agentkeys_webauthn::{RelyingParty, TrustedRoots, verify_registration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let (client_data, attestation_object) = rest.split_at(usize::from(split).min(rest.len()));
    let rp = RelyingParty::for_origin("http://localhost:8090").expect("a loopback origin");
    let _ = verify_registration(&rp, &[7; 32], client_data, attestation_object, &TrustedRoots::none(), 1_800_000_000);
});
