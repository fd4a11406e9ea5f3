//! Credential public keys (COSE_Key, RFC 9052 §7, as WebAuthn §5.8.5 uses them) of the two
//! algorithms we ask for: ES256 (P-256 with SHA-256, the one every authenticator supports) and
//! EdDSA (Ed25519). The server stores the COSE bytes as the authenticator sent them and parses
//! them again to verify; a stored key that no longer parses is an error, never skipped.

use coset::iana::{self, EnumI64 as _};
use coset::{AsCborValue as _, CoseKey, KeyType, Label};
use p256::ecdsa::signature::Verifier as _;

use crate::error::WebauthnError;

/// A signature algorithm, by its COSE identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA with P-256 and SHA-256 (COSE -7).
    Es256,
    /// Ed25519 (COSE -8).
    EdDsa,
}

impl Algorithm {
    /// The COSE identifier, as `pubKeyCredParams` and the attestation statement carry it.
    pub fn cose(self) -> i64 {
        match self {
            Algorithm::Es256 => iana::Algorithm::ES256.to_i64(),
            Algorithm::EdDsa => iana::Algorithm::EdDSA.to_i64(),
        }
    }

    pub fn from_cose(id: i64) -> Option<Self> {
        [Algorithm::Es256, Algorithm::EdDsa].into_iter().find(|a| a.cose() == id)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }
}

#[derive(Debug, Clone)]
enum Verifying {
    Es256(p256::ecdsa::VerifyingKey),
    EdDsa(ed25519_dalek::VerifyingKey),
}

/// A credential's public key: its COSE encoding (what is stored) and the key it decodes to.
#[derive(Debug, Clone)]
pub struct CredentialKey {
    cose: Vec<u8>,
    key: Verifying,
}

fn bad(what: impl Into<String>) -> WebauthnError {
    WebauthnError::Key(what.into())
}

impl CredentialKey {
    /// Parses a stored COSE key: all of `bytes`, nothing after it.
    pub fn from_cose(bytes: &[u8]) -> Result<Self, WebauthnError> {
        let (key, rest) = Self::parse_prefix(bytes)?;
        if !rest.is_empty() {
            return Err(bad("bytes follow the COSE key"));
        }
        Ok(key)
    }

    /// Parses the COSE key at the start of `bytes` (inside authenticator data, where extensions
    /// may follow); returns it and what follows.
    pub(crate) fn parse_prefix(bytes: &[u8]) -> Result<(Self, &[u8]), WebauthnError> {
        let mut rest = bytes;
        let value: ciborium::Value = ciborium::de::from_reader(&mut rest).map_err(|_| bad("it is not CBOR"))?;
        let cose = bytes[..bytes.len() - rest.len()].to_vec();
        let parsed = CoseKey::from_cbor_value(value).map_err(|e| bad(format!("it is not a COSE key ({e})")))?;
        Ok((Self { key: decode(&parsed)?, cose }, rest))
    }

    /// The COSE encoding, to store.
    pub fn cose(&self) -> &[u8] {
        &self.cose
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.key {
            Verifying::Es256(_) => Algorithm::Es256,
            Verifying::EdDsa(_) => Algorithm::EdDsa,
        }
    }

    /// Verifies `signature` over `message`: ES256 signatures are DER-encoded (WebAuthn §6.5.6),
    /// Ed25519 ones are 64 raw bytes.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), WebauthnError> {
        let verified = match &self.key {
            Verifying::Es256(key) => p256::ecdsa::DerSignature::try_from(signature)
                .ok()
                .and_then(|sig| p256::ecdsa::Signature::try_from(sig).ok())
                .is_some_and(|sig| key.verify(message, &sig).is_ok()),
            Verifying::EdDsa(key) => <[u8; 64]>::try_from(signature)
                .ok()
                .is_some_and(|sig| key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok()),
        };
        if verified { Ok(()) } else { Err(WebauthnError::BadSignature) }
    }
}

fn param(key: &CoseKey, label: i64) -> Option<&ciborium::Value> {
    key.params.iter().find(|(l, _)| *l == Label::Int(label)).map(|(_, v)| v)
}

fn decode(key: &CoseKey) -> Result<Verifying, WebauthnError> {
    let alg = match &key.alg {
        Some(coset::Algorithm::Assigned(alg)) => Algorithm::from_cose(alg.to_i64()),
        _ => None,
    }
    .ok_or_else(|| bad("its algorithm is neither ES256 nor EdDSA"))?;
    let curve = param(key, iana::Ec2KeyParameter::Crv.to_i64())
        .and_then(|v| v.as_integer())
        .and_then(|v| i64::try_from(v).ok());
    match (alg, &key.kty) {
        (Algorithm::Es256, KeyType::Assigned(iana::KeyType::EC2))
            if curve == Some(iana::EllipticCurve::P_256.to_i64()) =>
        {
            let sec1 = key.to_sec1_octet_string().map_err(|e| bad(format!("its point is unusable ({e})")))?;
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                .map(Verifying::Es256)
                .map_err(|_| bad("its point is not on P-256"))
        }
        (Algorithm::EdDsa, KeyType::Assigned(iana::KeyType::OKP))
            if curve == Some(iana::EllipticCurve::Ed25519.to_i64()) =>
        {
            let x = param(key, iana::OkpKeyParameter::X.to_i64())
                .and_then(|v| v.as_bytes())
                .and_then(|x| <[u8; 32]>::try_from(x.as_slice()).ok())
                .ok_or_else(|| bad("its Ed25519 key is not 32 bytes"))?;
            ed25519_dalek::VerifyingKey::from_bytes(&x)
                .map(Verifying::EdDsa)
                .map_err(|_| bad("its Ed25519 key is not a curve point"))
        }
        _ => Err(bad("its key type or curve does not match its algorithm")),
    }
}
