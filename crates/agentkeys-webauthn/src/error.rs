//! What every check of this crate can refuse with, and the encodings and limits its parsers
//! share: kept below the parsers so they and the ceremonies above them import one place.

/// Longest credential id an authenticator may return (WebAuthn §5.8.3 allows up to 1023 bytes).
pub const MAX_CREDENTIAL_ID_LEN: usize = 1023;

/// Why a registration or an assertion was refused. The messages are safe to show the human: they
/// name what failed, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebauthnError {
    #[error("the client data is malformed: {0}")]
    ClientData(String),
    #[error("the client data is for {found:?}, not {expected:?}")]
    WrongType { expected: &'static str, found: String },
    #[error("the client data answers another challenge")]
    WrongChallenge,
    #[error("the client data comes from origin {found:?}, not {expected:?}")]
    WrongOrigin { expected: String, found: String },
    #[error("the ceremony ran in a cross-origin frame")]
    CrossOrigin,
    #[error("the authenticator data is malformed: {0}")]
    AuthenticatorData(String),
    #[error("the authenticator signed for another RP ID than {0:?}")]
    WrongRpId(String),
    #[error("the authenticator reports no user presence (UP flag clear)")]
    UserNotPresent,
    #[error("the authenticator reports no user verification (UV flag clear): a PIN or biometric is required")]
    UserNotVerified,
    #[error("the credential public key is malformed or unsupported: {0}")]
    Key(String),
    #[error("the signature does not verify with the credential's public key")]
    BadSignature,
    #[error("the attestation is malformed: {0}")]
    Attestation(String),
    #[error("the attestation is not trusted: {0}")]
    Untrusted(String),
}

/// A challenge or credential id as WebAuthn's JSON carries it (base64url, no padding).
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The bytes of a base64url field; padding is tolerated, nothing else.
pub fn from_b64url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}
