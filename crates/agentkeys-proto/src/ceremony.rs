//! Presence ceremonies on the wire (PRODUCT.md §2 and §5, K11): a master asks the server for a
//! ceremony bound to the exact request it is about to send, the human completes it on the
//! server's page with a presence key (WebAuthn), and the request then carries
//! `presence=webauthn:<ceremony id>`. Enrollment of a presence key is a ceremony too. The
//! challenge is derived here, so the binding can be checked by anyone holding the ceremony's
//! record (docs/protocol.md, "Presence ceremonies").

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// How long an assertion ceremony may be completed and used after it starts.
pub const CEREMONY_TTL_MS: i64 = 120_000;
/// How long an enrollment may take (the human may first have to find the key).
pub const ENROLL_TTL_MS: i64 = 300_000;
/// Longest operation text a ceremony shows, in characters.
pub const OPERATION_MAX: usize = 512;
/// Most presence keys one account may enroll.
pub const MAX_PRESENCE_KEYS: usize = 16;
/// Longest request path a ceremony binds, in bytes.
pub const PATH_MAX: usize = 1024;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value of a stored or typed name; `None` for anything else.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }
    };
}

wire_enum! {
    /// What a ceremony is for.
    CeremonyPurpose {
        /// `navigator.credentials.get` for one critical request.
        Assert => "assert",
        /// `navigator.credentials.create`: enrolling a presence key.
        Enroll => "enroll",
    }
}

wire_enum! {
    /// Where a ceremony is.
    CeremonyState {
        /// Waiting for the human on the ceremony page.
        Pending => "pending",
        /// The server verified the assertion (or the registration); an assertion waits for its request.
        Completed => "completed",
        /// Its request consumed it (assertions only).
        Used => "used",
        /// The CLI gave up on it (Ctrl-C).
        Cancelled => "cancelled",
        /// The page sent an answer that failed verification; `reason` says why.
        Refused => "refused",
        /// Not completed, or not used, in time.
        Expired => "expired",
    }
}

wire_enum! {
    /// What kind of authenticator a presence key is.
    KeyKind {
        /// A roaming authenticator: a YubiKey or another FIDO2 key (`cross-platform`).
        Roaming => "roaming",
        /// A platform authenticator: Touch ID, Windows Hello, a phone's passkey (`platform`).
        Platform => "platform",
    }
}

impl KeyKind {
    /// The WebAuthn `authenticatorAttachment` that asks for this kind.
    pub fn attachment(self) -> &'static str {
        match self {
            KeyKind::Roaming => "cross-platform",
            KeyKind::Platform => "platform",
        }
    }
}

/// `POST /v1/presence/ceremonies`: a ceremony for one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartCeremonyRequest {
    /// The request's HTTP method, as it will be signed.
    #[cfg_attr(feature = "openapi", schema(pattern = "^(POST|PUT|DELETE|PATCH)$"))]
    pub method: String,
    /// The request's path and query, without `presence=`, as it will be signed.
    #[cfg_attr(feature = "openapi", schema(pattern = "^/v1/[!-~]*$", max_length = 1024))]
    pub path: String,
    /// SHA-256 of the request body, base64url (the digest its signature covers).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub body_digest: String,
    /// The operation as the client renders it, shown on the ceremony page beside the server's
    /// own account of the request.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 512))]
    pub operation: String,
}

/// `POST /v1/presence/keys`: enroll a presence key (critical).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// A name unique in the account (`yubikey-5c`, `macbook-touchid`): the service-name rule.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::names::KeyName))]
    pub name: String,
    pub kind: KeyKind,
}

/// A ceremony the server opened: the page to open, and the code the page shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CeremonyStarted {
    pub id: String,
    pub purpose: CeremonyPurpose,
    /// Shown on the page and by the CLI, so the human can tell the two belong together.
    pub code: String,
    /// `<public-url>/presence/<id>`.
    pub url: String,
    pub expires_at_ms: i64,
}

/// `GET /v1/presence/ceremonies/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CeremonyStatus {
    pub id: String,
    pub purpose: CeremonyPurpose,
    pub state: CeremonyState,
    pub expires_at_ms: i64,
    /// The key that answered (an assertion) or was enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PresenceKey>,
    /// Why the answer was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An enrolled presence key, as `presence list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PresenceKey {
    /// `pk_` + 20 hex digits, derived from the credential id.
    pub id: String,
    pub name: String,
    pub kind: KeyKind,
    /// The authenticator's AAGUID (`01020304-…`), all zeros when it attests none.
    pub aaguid: String,
    /// The authenticator model, when the AAGUID is a known one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `ES256` or `EdDSA`.
    pub algorithm: String,
    /// The attestation statement format (`packed`, `none`, …).
    pub attestation_format: String,
    /// How far the attestation vouches for the make: `certified` (by a root the account lists),
    /// `uncertified`, `self`, `none` or `unchecked`.
    pub attestation_trust: String,
    /// The attestation certificate's subject, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_subject: Option<String>,
    pub sign_count: u64,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at_ms: Option<i64>,
}

/// `GET /v1/presence/keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PresenceKeyList {
    pub keys: Vec<PresenceKey>,
}

/// Longest a status poll waits for the ceremony to change (`wait_s`).
pub const MAX_WAIT_S: u32 = 25;

/// `GET /v1/presence/ceremonies/{id}?wait_s=N`: answer once the ceremony is no longer pending,
/// or after `wait_s` seconds (at most [`MAX_WAIT_S`]; 0 answers at once).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct CeremonyWait {
    #[cfg_attr(feature = "openapi", param(minimum = 0, maximum = 25))]
    pub wait_s: Option<u32>,
}

/// `PUT /v1/presence/attestation-roots`: the roots enrollment is restricted to (DER
/// certificates, base64url); empty lifts the restriction.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AttestationRootsRequest {
    #[cfg_attr(feature = "openapi", schema(max_items = 16))]
    pub certificates: Vec<String>,
}

/// Most attestation roots an account may list.
pub const MAX_ATTESTATION_ROOTS: usize = 16;

/// The WebAuthn challenge of a ceremony: `SHA-256("agentkeys-presence-v1" || 0 || lp(ceremony id)
/// || lp(account id) || lp(purpose) || lp(method) || lp(path) || body digest (32) || nonce (32))`,
/// `lp(x)` being a u32 big-endian length and the bytes. The nonce is the server's fresh
/// randomness; the rest binds the authenticator's signature to the one request it allows.
pub fn ceremony_challenge(
    ceremony_id: &str,
    account_id: &str,
    purpose: CeremonyPurpose,
    method: &str,
    path: &str,
    body_digest: &[u8; 32],
    nonce: &[u8; 32],
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"agentkeys-presence-v1\0");
    for field in [ceremony_id, account_id, purpose.as_str(), method, path] {
        hasher.update(u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update(body_digest);
    hasher.update(nonce);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in CeremonyState::ALL {
            assert_eq!(CeremonyState::parse(state.as_str()), Some(*state));
        }
        assert_eq!(CeremonyState::parse("done"), None);
        assert_eq!(KeyKind::parse("roaming").map(KeyKind::attachment), Some("cross-platform"));
    }

    #[test]
    fn the_challenge_binds_every_field() {
        let base =
            || ceremony_challenge("cer_a", "acct_b", CeremonyPurpose::Assert, "POST", "/v1/x", &[1; 32], &[2; 32]);
        let variants = [
            ceremony_challenge("cer_b", "acct_b", CeremonyPurpose::Assert, "POST", "/v1/x", &[1; 32], &[2; 32]),
            ceremony_challenge("cer_a", "acct_c", CeremonyPurpose::Assert, "POST", "/v1/x", &[1; 32], &[2; 32]),
            ceremony_challenge("cer_a", "acct_b", CeremonyPurpose::Enroll, "POST", "/v1/x", &[1; 32], &[2; 32]),
            ceremony_challenge("cer_a", "acct_b", CeremonyPurpose::Assert, "PUT", "/v1/x", &[1; 32], &[2; 32]),
            ceremony_challenge("cer_a", "acct_b", CeremonyPurpose::Assert, "POST", "/v1/y", &[1; 32], &[2; 32]),
            ceremony_challenge("cer_a", "acct_b", CeremonyPurpose::Assert, "POST", "/v1/x", &[3; 32], &[2; 32]),
            ceremony_challenge("cer_a", "acct_b", CeremonyPurpose::Assert, "POST", "/v1/x", &[1; 32], &[3; 32]),
            // A field boundary moved: the length prefixes keep these apart.
            ceremony_challenge("cer_aa", "cct_b", CeremonyPurpose::Assert, "POST", "/v1/x", &[1; 32], &[2; 32]),
        ];
        for variant in variants {
            assert_ne!(variant, base());
        }
    }
}
