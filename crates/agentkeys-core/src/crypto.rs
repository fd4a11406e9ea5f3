//! The key hierarchy of PRODUCT.md §2 and the three constructions built on it, each specified
//! byte for byte in `docs/protocol.md` and pinned by `tests/vectors/*.json`:
//!
//! * **seal** — a credential value under a fresh 32-byte data key with XChaCha20-Poly1305, the
//!   AAD binding account, namespace, service and version, so the server cannot move a ciphertext
//!   to another name or version without the open failing;
//! * **wrap** — a key to an X25519 public key, age-style: ephemeral X25519, HKDF-SHA256 with both
//!   public keys as salt and a label as info, ChaCha20-Poly1305 with a zero nonce (each wrap key
//!   is used once);
//! * **sign** — Ed25519 (strict verification) for request signatures and device certificates.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::random::RandomSource;

/// What went wrong in a cryptographic operation. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("decryption failed: the data was changed, or the key is not the one it was sealed to")]
    DecryptFailed,
    #[error("signature does not verify")]
    BadSignature,
    #[error("the peer's public key is a low-order point")]
    WeakKey,
}

/// Format byte that starts every sealed value and wrap, so the format can evolve.
pub const FORMAT_V1: u8 = 1;
const XNONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// A signing key and a key-agreement key: the shape of both device keys and the account key.
pub struct KeyPair {
    sign: SigningKey,
    kx: StaticSecret,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let public = self.public();
        f.debug_struct("KeyPair")
            .field("sign_public", &hex::encode(public.sign))
            .field("kx_public", &hex::encode(public.kx))
            .finish_non_exhaustive()
    }
}

/// The public halves of a [`KeyPair`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKeys {
    pub sign: [u8; 32],
    pub kx: [u8; 32],
}

impl KeyPair {
    /// A new key pair from 64 random bytes.
    pub fn generate(rng: &mut impl RandomSource) -> Self {
        let mut blob = Zeroizing::new([0u8; 64]);
        rng.fill(blob.as_mut());
        Self::from_secret_blob(blob.as_ref()).expect("64 bytes is a valid blob")
    }

    /// Rebuilds a key pair from `ed25519 seed (32) || x25519 secret (32)`.
    pub fn from_secret_blob(blob: &[u8]) -> Result<Self, CryptoError> {
        if blob.len() != 64 {
            return Err(CryptoError::Malformed("key pair (expected 64 bytes)"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        let mut kx = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&blob[..32]);
        kx.copy_from_slice(&blob[32..]);
        Ok(Self { sign: SigningKey::from_bytes(&seed), kx: StaticSecret::from(*kx) })
    }

    /// `ed25519 seed || x25519 secret`, the form that is wrapped and stored.
    pub fn secret_blob(&self) -> Zeroizing<[u8; 64]> {
        let mut blob = Zeroizing::new([0u8; 64]);
        blob[..32].copy_from_slice(&self.sign.to_bytes());
        blob[32..].copy_from_slice(self.kx.as_bytes());
        blob
    }

    pub fn public(&self) -> PublicKeys {
        PublicKeys { sign: self.sign.verifying_key().to_bytes(), kx: PublicKey::from(&self.kx).to_bytes() }
    }

    /// Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.sign.sign(message).to_bytes()
    }

    /// Opens a wrap addressed to this key pair's X25519 key.
    pub fn unwrap(&self, wrapped: &[u8], label: WrapLabel) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        unwrap_with(&self.kx, wrapped, label)
    }
}

/// Strict Ed25519 verification (rejects non-canonical and small-order encodings).
pub fn verify(sign_public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<(), CryptoError> {
    let key = VerifyingKey::from_bytes(sign_public).map_err(|_| CryptoError::Malformed("public key"))?;
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(message, &signature).map_err(|_| CryptoError::BadSignature)
}

pub use agentkeys_proto::ids::{account_id, device_id};

/// What the account key signs to certify a device key (see [`agentkeys_proto::ids`]).
pub fn device_certificate_payload(account_id: &str, device: &PublicKeys, label: &str) -> Vec<u8> {
    agentkeys_proto::ids::device_certificate_payload(account_id, &device.sign, &device.kx, label)
}

/// A 32-byte symmetric key (credential data key, session file key). Zeroized on drop.
pub struct SymmetricKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SymmetricKey(..)")
    }
}

impl SymmetricKey {
    pub fn generate(rng: &mut impl RandomSource) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill(key.as_mut());
        Self(key)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::Malformed("key (expected 32 bytes)"))?;
        Ok(Self(Zeroizing::new(array)))
    }

    /// The raw key, for wrapping it or writing it to its 0600 file.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The Argon2id cost of a passphrase-derived key, stored beside what it seals so it can grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Cost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub lanes: u32,
}

impl Argon2Cost {
    /// RFC 9106's second recommended option (64 MiB, 3 passes) with one lane: about a quarter of
    /// a second on a small machine, once per command.
    pub const DEFAULT: Self = Self { memory_kib: 64 * 1024, iterations: 3, lanes: 1 };
    /// The most a stored cost may ask for, so a tampered file cannot make a load take minutes.
    pub const MAX: Self = Self { memory_kib: 1024 * 1024, iterations: 16, lanes: 8 };
}

/// A 32-byte key from a passphrase: Argon2id (RFC 9106, version 0x13) with a 16-byte salt.
pub fn passphrase_key(passphrase: &[u8], salt: &[u8; 16], cost: Argon2Cost) -> Result<SymmetricKey, CryptoError> {
    let max = Argon2Cost::MAX;
    if cost.memory_kib > max.memory_kib || cost.iterations > max.iterations || cost.lanes > max.lanes {
        return Err(CryptoError::Malformed("Argon2id cost (above the accepted maximum)"));
    }
    let params = argon2::Params::new(cost.memory_kib, cost.iterations, cost.lanes, Some(32))
        .map_err(|_| CryptoError::Malformed("Argon2id cost"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon.hash_password_into(passphrase, salt, key.as_mut()).map_err(|_| CryptoError::Malformed("Argon2id input"))?;
    Ok(SymmetricKey(key))
}

/// `FORMAT_V1 || nonce (24) || XChaCha20-Poly1305(key, nonce, plaintext, aad)`.
pub fn aead_seal(key: &SymmetricKey, aad: &[u8], plaintext: &[u8], rng: &mut impl RandomSource) -> Vec<u8> {
    let nonce: [u8; XNONCE_LEN] = rng.array();
    let cipher = XChaCha20Poly1305::new(&(*key.0).into());
    let body = cipher
        .encrypt(&nonce.into(), Payload { msg: plaintext, aad })
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory sizes");
    let mut out = Vec::with_capacity(1 + XNONCE_LEN + body.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    out
}

/// Opens what [`aead_seal`] produced with the same key and AAD.
pub fn aead_open(key: &SymmetricKey, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < 1 + XNONCE_LEN + TAG_LEN || sealed[0] != FORMAT_V1 {
        return Err(CryptoError::Malformed("sealed value"));
    }
    let nonce: [u8; XNONCE_LEN] = sealed[1..1 + XNONCE_LEN].try_into().expect("length checked");
    let cipher = XChaCha20Poly1305::new(&(*key.0).into());
    cipher
        .decrypt(&nonce.into(), Payload { msg: &sealed[1 + XNONCE_LEN..], aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::DecryptFailed)
}

/// Where a credential lives; all of it is bound into the AEAD.
#[derive(Debug, Clone, Copy)]
pub struct CredentialContext<'a> {
    pub account_id: &'a str,
    pub namespace: &'a str,
    pub service: &'a str,
    pub version: u64,
}

impl CredentialContext<'_> {
    /// `"agentkeys-credential-v1" || 0 || len16(account) || account || len16(ns) || ns ||
    /// len16(service) || service || u64be(version)`.
    pub fn aad(&self) -> Vec<u8> {
        let mut aad = b"agentkeys-credential-v1\0".to_vec();
        for field in [self.account_id, self.namespace, self.service] {
            let len = u16::try_from(field.len()).expect("names are short");
            aad.extend_from_slice(&len.to_be_bytes());
            aad.extend_from_slice(field.as_bytes());
        }
        aad.extend_from_slice(&self.version.to_be_bytes());
        aad
    }
}

/// Seals a credential value under its data key.
pub fn seal_credential(
    data_key: &SymmetricKey,
    context: &CredentialContext<'_>,
    value: &[u8],
    rng: &mut impl RandomSource,
) -> Vec<u8> {
    aead_seal(data_key, &context.aad(), value, rng)
}

/// Opens a sealed credential; fails if any byte or any part of the context differs.
pub fn open_credential(
    data_key: &SymmetricKey,
    context: &CredentialContext<'_>,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    aead_open(data_key, &context.aad(), sealed)
}

/// What a wrap carries; the label is HKDF info, so a wrap of one kind never opens as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapLabel {
    DataKey,
    AccountKey,
}

impl WrapLabel {
    fn info(self) -> &'static [u8] {
        match self {
            WrapLabel::DataKey => b"agentkeys-wrap-v1/data-key",
            WrapLabel::AccountKey => b"agentkeys-wrap-v1/account-key",
        }
    }
}

fn wrap_cipher(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32], label: WrapLabel) -> ChaCha20Poly1305 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(label.info(), okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    ChaCha20Poly1305::new(&(*okm).into())
}

/// Wraps `secret` to an X25519 public key: `FORMAT_V1 || ephemeral public (32) || ChaCha20-Poly1305`.
pub fn wrap_to(
    recipient_kx_public: &[u8; 32],
    secret: &[u8],
    label: WrapLabel,
    rng: &mut impl RandomSource,
) -> Result<Vec<u8>, CryptoError> {
    let ephemeral = StaticSecret::from(*Zeroizing::new(rng.array::<32>()));
    let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&PublicKey::from(*recipient_kx_public));
    if !shared.was_contributory() {
        return Err(CryptoError::WeakKey);
    }
    let cipher = wrap_cipher(shared.as_bytes(), &ephemeral_public, recipient_kx_public, label);
    let body = cipher
        .encrypt(&[0u8; 12].into(), secret)
        .expect("ChaCha20-Poly1305 encryption cannot fail for in-memory sizes");
    let mut out = Vec::with_capacity(1 + 32 + body.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&ephemeral_public);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens a wrap with the recipient's X25519 secret.
pub fn unwrap_with(
    kx_secret: &StaticSecret,
    wrapped: &[u8],
    label: WrapLabel,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if wrapped.len() < 1 + 32 + TAG_LEN || wrapped[0] != FORMAT_V1 {
        return Err(CryptoError::Malformed("wrapped key"));
    }
    let ephemeral_public: [u8; 32] = wrapped[1..33].try_into().expect("length checked");
    let shared = kx_secret.diffie_hellman(&PublicKey::from(ephemeral_public));
    if !shared.was_contributory() {
        return Err(CryptoError::WeakKey);
    }
    let recipient = PublicKey::from(kx_secret).to_bytes();
    let cipher = wrap_cipher(shared.as_bytes(), &ephemeral_public, &recipient, label);
    cipher.decrypt(&[0u8; 12].into(), &wrapped[33..]).map(Zeroizing::new).map_err(|_| CryptoError::DecryptFailed)
}

/// The recovery key shown once at `init`: an X25519 secret to which the account key is wrapped.
///
/// Text form: `AKRK-` then base32 (RFC 4648, no padding) of `key (32) || SHA-256(key)[..3]`,
/// in dash-separated groups of five, so a mistyped character is caught before any network call.
pub struct RecoveryKey(StaticSecret);

impl std::fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryKey(..)")
    }
}

const RECOVERY_PREFIX: &str = "AKRK-";

impl RecoveryKey {
    pub fn generate(rng: &mut impl RandomSource) -> Self {
        Self(StaticSecret::from(*Zeroizing::new(rng.array::<32>())))
    }

    pub fn kx_public(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }

    pub fn unwrap(&self, wrapped: &[u8], label: WrapLabel) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        unwrap_with(&self.0, wrapped, label)
    }

    /// The recovery key's signing key: the Ed25519 key whose seed is
    /// HKDF-SHA256(ikm = the key, no salt, info `agentkeys-recovery-sign-v1`), 32 bytes. The
    /// server keeps its public half, so a recovery can prove it holds the key without the
    /// server ever being able to open the account key wrapped to it.
    fn signing_key(&self) -> SigningKey {
        let mut seed = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, self.0.as_bytes())
            .expand(b"agentkeys-recovery-sign-v1", seed.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SigningKey::from_bytes(&seed)
    }

    pub fn sign_public(&self) -> [u8; 32] {
        self.signing_key().verifying_key().to_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing_key().sign(message).to_bytes()
    }

    /// The printable form. Zeroized when dropped.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(35));
        raw.extend_from_slice(self.0.as_bytes());
        raw.extend_from_slice(&Sha256::digest(self.0.as_bytes())[..3]);
        let encoded = Zeroizing::new(data_encoding::BASE32_NOPAD.encode(&raw));
        let mut text = Zeroizing::new(String::from(RECOVERY_PREFIX));
        for (i, chunk) in encoded.as_bytes().chunks(5).enumerate() {
            if i > 0 {
                text.push('-');
            }
            text.push_str(std::str::from_utf8(chunk).expect("base32 is ASCII"));
        }
        text
    }

    /// Parses the printable form; case, spaces and dashes are forgiven, typos are not.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let upper = Zeroizing::new(text.trim().to_ascii_uppercase());
        let body =
            upper.strip_prefix(RECOVERY_PREFIX).ok_or(CryptoError::Malformed("recovery key (expected AKRK-…)"))?;
        let compact: Zeroizing<String> =
            Zeroizing::new(body.chars().filter(|c| *c != '-' && !c.is_whitespace()).collect());
        let raw = Zeroizing::new(
            data_encoding::BASE32_NOPAD
                .decode(compact.as_bytes())
                .map_err(|_| CryptoError::Malformed("recovery key (not base32)"))?,
        );
        if raw.len() != 35 || Sha256::digest(&raw[..32])[..3] != raw[32..] {
            return Err(CryptoError::Malformed("recovery key (checksum mismatch: check for a typo)"));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&raw[..32]);
        Ok(Self(StaticSecret::from(*key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn seal_binds_every_context_field() {
        let mut rng = SeededRandom::new(b"seal");
        let key = SymmetricKey::generate(&mut rng);
        let ctx = CredentialContext { account_id: "acct_1", namespace: "vault", service: "openai", version: 3 };
        let sealed = seal_credential(&key, &ctx, b"sk-secret", &mut rng);
        assert_eq!(open_credential(&key, &ctx, &sealed).unwrap().as_slice(), b"sk-secret");
        for other in [
            CredentialContext { account_id: "acct_2", ..ctx },
            CredentialContext { namespace: "agent:x", ..ctx },
            CredentialContext { service: "github", ..ctx },
            CredentialContext { version: 4, ..ctx },
        ] {
            assert_eq!(open_credential(&key, &other, &sealed), Err(CryptoError::DecryptFailed));
        }
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(open_credential(&key, &ctx, &flipped), Err(CryptoError::DecryptFailed));
    }

    #[test]
    fn wrap_round_trips_and_labels_separate() {
        let mut rng = SeededRandom::new(b"wrap");
        let recipient = KeyPair::generate(&mut rng);
        let wrapped =
            wrap_to(&recipient.public().kx, b"0123456789abcdef0123456789abcdef", WrapLabel::DataKey, &mut rng).unwrap();
        assert_eq!(
            recipient.unwrap(&wrapped, WrapLabel::DataKey).unwrap().as_slice(),
            b"0123456789abcdef0123456789abcdef"
        );
        assert_eq!(recipient.unwrap(&wrapped, WrapLabel::AccountKey), Err(CryptoError::DecryptFailed));
        let stranger = KeyPair::generate(&mut rng);
        assert_eq!(stranger.unwrap(&wrapped, WrapLabel::DataKey), Err(CryptoError::DecryptFailed));
        assert_eq!(wrap_to(&[0u8; 32], b"k", WrapLabel::DataKey, &mut rng), Err(CryptoError::WeakKey));
    }

    #[test]
    fn recovery_key_text_round_trips_and_catches_typos() {
        let mut rng = SeededRandom::new(b"recovery");
        let key = RecoveryKey::generate(&mut rng);
        let text = key.to_text();
        let parsed = RecoveryKey::parse(&text.to_lowercase()).unwrap();
        assert_eq!(parsed.kx_public(), key.kx_public());
        let mut typo = text.to_string();
        let swapped = if typo.as_bytes()[10] == b'A' { "B" } else { "A" };
        typo.replace_range(10..11, swapped);
        assert!(RecoveryKey::parse(&typo).is_err());
    }

    #[test]
    fn signatures_verify_strictly() {
        let mut rng = SeededRandom::new(b"sign");
        let keys = KeyPair::generate(&mut rng);
        let sig = keys.sign(b"message");
        assert!(verify(&keys.public().sign, b"message", &sig).is_ok());
        assert_eq!(verify(&keys.public().sign, b"massage", &sig), Err(CryptoError::BadSignature));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let mut rng = SeededRandom::new(b"debug");
        let keys = KeyPair::generate(&mut rng);
        let blob = keys.secret_blob();
        let debug = format!("{keys:?}");
        assert!(!debug.contains(&hex::encode(&blob[..32])));
        assert!(!debug.contains(&hex::encode(&blob[32..])));
        assert_eq!(format!("{:?}", SymmetricKey::generate(&mut rng)), "SymmetricKey(..)");
    }
}
