//! Authenticator data and COSE keys as a browser (or an attacker posing as one) sends them to the
//! ceremony page: any bytes, no panic; what parses keeps the flags it read.
#![no_main]

use agentkeys_webauthn::{AuthenticatorData, CredentialKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = AuthenticatorData::parse(data) {
        assert!(data.len() >= 37, "authenticator data is at least rpIdHash, flags and counter");
        let _ = parsed;
    }
    let _ = CredentialKey::from_cose(data);
});
