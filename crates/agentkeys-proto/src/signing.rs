//! The canonical bytes a request signature covers. A session's device key signs
//! `method, path and query, timestamp, nonce, SHA-256(body)`; the server rebuilds the same bytes
//! and verifies. Both sides call [`signing_payload`], so the format is defined exactly once.

use sha2::{Digest, Sha256};

/// Unix seconds at which the client signed.
pub const HEADER_TIMESTAMP: &str = "x-agentkeys-timestamp";
/// A fresh random value per request (base64url, 16 bytes); the server refuses it a second time.
pub const HEADER_NONCE: &str = "x-agentkeys-nonce";
/// Base64url Ed25519 signature over [`signing_payload`].
pub const HEADER_SIGNATURE: &str = "x-agentkeys-signature";

/// Domain separation: a signature made for this protocol is never valid for anything else.
pub const SIGNATURE_DOMAIN: &str = "agentkeys-request-v1";

/// A timestamp further than this from the server's clock is refused as stale.
pub const MAX_CLOCK_SKEW_S: i64 = 60;

/// Nonces are 16 random bytes; as base64url that is 22 characters.
pub const NONCE_LEN_CHARS: usize = 22;

/// SHA-256 of the exact request body bytes (empty body included).
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// The bytes that are signed: `agentkeys-request-v1 \n METHOD \n path?query \n session id \n
/// timestamp \n nonce \n hex(sha256(body))`. The session id binds the request to the one session
/// it was made for, so a device with two sessions cannot have a request replayed across them.
pub fn signing_payload(
    method: &str,
    path_and_query: &str,
    session_id: &str,
    timestamp: i64,
    nonce: &str,
    body_digest: &[u8; 32],
) -> Vec<u8> {
    let mut out = String::with_capacity(192 + path_and_query.len());
    out.push_str(SIGNATURE_DOMAIN);
    for part in [&method.to_ascii_uppercase(), path_and_query, session_id, &timestamp.to_string(), nonce] {
        out.push('\n');
        out.push_str(part);
    }
    out.push('\n');
    for byte in body_digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out.into_bytes()
}

/// A nonce is well-formed when it is exactly 22 base64url characters.
pub fn nonce_is_well_formed(nonce: &str) -> bool {
    nonce.len() == NONCE_LEN_CHARS && nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_stable() {
        let payload = signing_payload(
            "get",
            "/v1/credentials/openai",
            "ses_1",
            1_700_000_000,
            "AAAAAAAAAAAAAAAAAAAAAA",
            &body_digest(b""),
        );
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            "agentkeys-request-v1\nGET\n/v1/credentials/openai\nses_1\n1700000000\nAAAAAAAAAAAAAAAAAAAAAA\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn nonce_shape() {
        assert!(nonce_is_well_formed("AAAAAAAAAAAAAAAAAAAAA_"));
        assert!(!nonce_is_well_formed("AAAA"));
        assert!(!nonce_is_well_formed("AAAAAAAAAAAAAAAAAAAAA\n"));
    }
}
