//! The relying party's side of WebAuthn, as the AgentKeys server needs it (PRODUCT.md §2, §5:
//! presence keys): checking a registration (`navigator.credentials.create`) and an assertion
//! (`navigator.credentials.get`) against the challenge the server issued, its RP ID and its
//! origin. Everything here parses bytes a browser (or an attacker) sent, so every parser is
//! strict, bounded and fuzzed (`fuzz/fuzz_targets/webauthn_*`).
//!
//! Why our own steps and not an RP library: `webauthn_rp` (the maintained pure-Rust candidate)
//! refuses attestation certificates (`x5c`), and an account that restricts enrollment to the
//! roots it lists needs exactly that check. The encodings come from maintained crates (CBOR from
//! `ciborium`, COSE keys from `coset`, ES256 from `p256`, Ed25519 from `ed25519-dalek`,
//! certificates from `x509-cert`); this crate holds only the WebAuthn Level 3 verification
//! steps (§7.1, §7.2), each named where it is checked, and nothing that does I/O.

mod attestation;
mod auth_data;
mod client_data;
mod error;
mod key;
mod verify;

pub use attestation::{Attestation, AttestationTrust, MAX_CERTIFICATES, TrustedRoots, certificate_subject};
pub use auth_data::{AuthenticatorData, Flags};
pub use client_data::CeremonyType;
pub use error::{MAX_CREDENTIAL_ID_LEN, WebauthnError, b64url, from_b64url};
pub use key::{Algorithm, CredentialKey};
pub use verify::{Assertion, Registration, RelyingParty, counter_advances, verify_assertion, verify_registration};

#[cfg(any(test, feature = "soft"))]
pub mod soft;
#[cfg(test)]
mod tests;
