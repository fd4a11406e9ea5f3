//! What a hostile server can answer to the reads a client verifies: a sealed credential with its
//! grant and signer, and a page of the statement log, down to the statements in it. No panic.
#![no_main]

use agentkeys_proto::b64;
use agentkeys_proto::statement::{Statement, StatementLog};
use agentkeys_proto::types::SealedCredentialResponse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sealed) = serde_json::from_slice::<SealedCredentialResponse>(data) {
        if let Some(grant) = &sealed.grant {
            let _ = b64::decode_array::<64>(&grant.signature);
        }
        let _ = b64::decode(&sealed.ciphertext);
    }
    if let Ok(log) = serde_json::from_slice::<StatementLog>(data) {
        for entry in &log.statements {
            if let Some(payload) = b64::decode(&entry.payload) {
                let _ = Statement::parse(&payload);
            }
        }
    }
});
