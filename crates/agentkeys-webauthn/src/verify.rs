//! The two ceremonies a relying party checks (WebAuthn §7.1 registration, §7.2 assertion), built
//! from the parsers of the client data, the authenticator data and the attestation statement.

use sha2::{Digest as _, Sha256};

use crate::attestation::{Attestation, AttestationObject, TrustedRoots};
use crate::auth_data::{AuthenticatorData, Flags};
use crate::client_data::{self, CeremonyType};
use crate::error::WebauthnError;
use crate::key::CredentialKey;

/// Who is asking: the RP ID (the host of the server's public URL) and the one origin its pages
/// are served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    pub id: String,
    pub origin: String,
}

impl RelyingParty {
    /// The RP of a server reached at `public_url` (`scheme://host[:port]`): the RP ID is its host.
    pub fn for_origin(public_url: &str) -> Option<Self> {
        let (scheme, rest) = public_url.split_once("://")?;
        if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
            return None;
        }
        let host = match rest.strip_prefix('[') {
            // An IPv6 literal cannot be an RP ID; browsers refuse it.
            Some(_) => return None,
            None => rest.rsplit_once(':').map_or(rest, |(host, _port)| host),
        };
        // An IP address cannot be an RP ID either (WebAuthn §5.1.3: a valid domain string).
        if host.is_empty() || host.parse::<std::net::Ipv4Addr>().is_ok() {
            return None;
        }
        Some(Self { id: host.to_ascii_lowercase(), origin: public_url.to_owned() })
    }

    fn id_hash(&self) -> [u8; 32] {
        Sha256::digest(self.id.as_bytes()).into()
    }
}

/// A registration that passed every check: what the server keeps about the credential.
#[derive(Debug, Clone)]
pub struct Registration {
    pub credential_id: Vec<u8>,
    pub key: CredentialKey,
    pub sign_count: u32,
    pub aaguid: [u8; 16],
    pub flags: Flags,
    pub attestation: Attestation,
}

/// An assertion that passed every check.
#[derive(Debug, Clone, Copy)]
pub struct Assertion {
    pub sign_count: u32,
    pub flags: Flags,
}

/// Checks a registration (WebAuthn §7.1): the client data (type `webauthn.create`, this
/// challenge, this origin), the authenticator data (this RP ID, UP and UV set, an attested
/// credential of a supported algorithm), and the attestation statement (its signature, and its
/// certificate chain against `roots` when the account lists any). `now_s` is the time
/// certificates are checked at.
pub fn verify_registration(
    rp: &RelyingParty,
    challenge: &[u8],
    client_data_json: &[u8],
    attestation_object: &[u8],
    roots: &TrustedRoots,
    now_s: i64,
) -> Result<Registration, WebauthnError> {
    client_data::check(client_data_json, CeremonyType::Create, challenge, &rp.origin)?;
    let object = AttestationObject::parse(attestation_object)?;
    let auth_data = AuthenticatorData::parse(&object.auth_data)?;
    check_common(rp, &auth_data)?;
    let credential = auth_data
        .attested
        .as_ref()
        .ok_or_else(|| WebauthnError::AuthenticatorData("a registration carries no attested credential".into()))?;
    let client_data_hash: [u8; 32] = Sha256::digest(client_data_json).into();
    let attestation = object.verify(&credential.key, &credential.aaguid, &client_data_hash, roots, now_s)?;
    Ok(Registration {
        credential_id: credential.id.clone(),
        key: credential.key.clone(),
        sign_count: auth_data.sign_count,
        aaguid: credential.aaguid,
        flags: auth_data.flags,
        attestation,
    })
}

/// Checks an assertion (WebAuthn §7.2) made by the credential whose public key is `key`: the
/// client data (type `webauthn.get`, this challenge, this origin), the authenticator data (this
/// RP ID, UP and UV set), and the signature over `authenticator_data || SHA-256(client_data)`.
/// The sign counter is the caller's to compare ([`counter_advances`]), with what it stored.
pub fn verify_assertion(
    rp: &RelyingParty,
    challenge: &[u8],
    key: &CredentialKey,
    client_data_json: &[u8],
    authenticator_data: &[u8],
    signature: &[u8],
) -> Result<Assertion, WebauthnError> {
    client_data::check(client_data_json, CeremonyType::Get, challenge, &rp.origin)?;
    let auth_data = AuthenticatorData::parse(authenticator_data)?;
    check_common(rp, &auth_data)?;
    let mut signed = Vec::with_capacity(authenticator_data.len() + 32);
    signed.extend_from_slice(authenticator_data);
    signed.extend_from_slice(&Sha256::digest(client_data_json));
    key.verify(&signed, signature)?;
    Ok(Assertion { sign_count: auth_data.sign_count, flags: auth_data.flags })
}

/// Whether a sign counter of `received` may follow `stored` (WebAuthn §6.1.1): it must grow,
/// unless the authenticator keeps no counter (both zero). A counter that does not grow means two
/// authenticators hold the same credential: a cloned key.
pub fn counter_advances(stored: u32, received: u32) -> bool {
    (stored == 0 && received == 0) || received > stored
}

fn check_common(rp: &RelyingParty, auth_data: &AuthenticatorData) -> Result<(), WebauthnError> {
    if auth_data.rp_id_hash != rp.id_hash() {
        return Err(WebauthnError::WrongRpId(rp.id.clone()));
    }
    if !auth_data.flags.user_present {
        return Err(WebauthnError::UserNotPresent);
    }
    if !auth_data.flags.user_verified {
        return Err(WebauthnError::UserNotVerified);
    }
    Ok(())
}
