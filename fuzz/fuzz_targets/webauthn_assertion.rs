//! An assertion posted to `/presence/<id>/answer`: client data, authenticator data and signature
//! split from any bytes (first two bytes: the split points), checked against a fixed relying
//! party, challenge and key. No panic, and nothing verifies: the key's secret is not here.
#![no_main]

use agentkeys_webauthn::{CredentialKey, RelyingParty, verify_assertion};
use libfuzzer_sys::fuzz_target;

/// A COSE ES256 public key (the P-256 generator point: valid, with no known use here).
const COSE_KEY: [u8; 77] = [
    0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8,
    0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45,
    0xd8, 0x98, 0xc2, 0x96, 0x22, 0x58, 0x20, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a,
    0x7c, 0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51,
    0xf5,
];

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b], rest)) = data.split_first_chunk::<2>() else { return };
    let first = usize::from(a).min(rest.len());
    let (client_data, rest) = rest.split_at(first);
    let second = usize::from(b).min(rest.len());
    let (authenticator_data, signature) = rest.split_at(second);
    let rp = RelyingParty::for_origin("http://localhost:8090").expect("a loopback origin");
    let key = CredentialKey::from_cose(&COSE_KEY).expect("the fixed key parses");
    let verified = verify_assertion(&rp, &[7; 32], &key, client_data, authenticator_data, signature);
    assert!(verified.is_err(), "an assertion verified without the key's secret");
});
