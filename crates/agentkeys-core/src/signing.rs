//! Signs an outgoing request with the session's device key, in the canonical form defined by
//! [`agentkeys_proto::signing`]. A stolen bearer token is useless without this key.

use agentkeys_proto::{b64, signing};

use crate::crypto::KeyPair;
use crate::random::RandomSource;

/// The three signature headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSignature {
    pub timestamp: i64,
    pub nonce: String,
    pub signature: String,
}

/// Signs `method path_and_query body` for `session_id` at `timestamp` (Unix seconds) with a
/// fresh nonce.
pub fn sign_request(
    device: &KeyPair,
    session_id: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timestamp: i64,
    rng: &mut impl RandomSource,
) -> RequestSignature {
    let nonce = b64::encode(rng.array::<16>());
    let payload =
        signing::signing_payload(method, path_and_query, session_id, timestamp, &nonce, &signing::body_digest(body));
    RequestSignature { timestamp, nonce, signature: b64::encode(device.sign(&payload)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::verify;
    use crate::random::SeededRandom;

    #[test]
    fn signature_verifies_over_the_canonical_payload() {
        let mut rng = SeededRandom::new(b"signing");
        let device = KeyPair::generate(&mut rng);
        let sig = sign_request(&device, "ses_1", "PUT", "/v1/credentials/openai", b"{}", 1_700_000_000, &mut rng);
        assert!(signing::nonce_is_well_formed(&sig.nonce));
        let payload = signing::signing_payload(
            "PUT",
            "/v1/credentials/openai",
            "ses_1",
            sig.timestamp,
            &sig.nonce,
            &signing::body_digest(b"{}"),
        );
        let raw: [u8; 64] = b64::decode_array(&sig.signature).unwrap();
        assert!(verify(&device.public().sign, &payload, &raw).is_ok());
        let other_body = signing::signing_payload(
            "PUT",
            "/v1/credentials/openai",
            "ses_1",
            sig.timestamp,
            &sig.nonce,
            &signing::body_digest(b"{ }"),
        );
        assert!(verify(&device.public().sign, &other_body, &raw).is_err());
        let other_session = signing::signing_payload(
            "PUT",
            "/v1/credentials/openai",
            "ses_2",
            sig.timestamp,
            &sig.nonce,
            &signing::body_digest(b"{}"),
        );
        assert!(verify(&device.public().sign, &other_session, &raw).is_err(), "the session id is bound");
    }
}
