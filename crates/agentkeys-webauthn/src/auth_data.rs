//! Authenticator data (WebAuthn §6.1): the RP ID hash, the flags, the sign counter, and on a
//! registration the attested credential (AAGUID, credential id, COSE public key). Parsed exactly:
//! a field that runs past the end, or bytes left after the last one, is an error.

use crate::error::{MAX_CREDENTIAL_ID_LEN, WebauthnError};
use crate::key::CredentialKey;

/// The flags byte, as the checks use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub user_present: bool,
    pub user_verified: bool,
    /// Backup eligible: the credential may be synced (a passkey).
    pub backup_eligible: bool,
    pub backed_up: bool,
}

/// A credential as the authenticator reports it at registration.
#[derive(Debug, Clone)]
pub struct AttestedCredential {
    pub aaguid: [u8; 16],
    pub id: Vec<u8>,
    pub key: CredentialKey,
}

/// Parsed authenticator data.
#[derive(Debug, Clone)]
pub struct AuthenticatorData {
    pub rp_id_hash: [u8; 32],
    pub flags: Flags,
    pub sign_count: u32,
    pub attested: Option<AttestedCredential>,
}

const UP: u8 = 0x01;
const UV: u8 = 0x04;
const BE: u8 = 0x08;
const BS: u8 = 0x10;
const AT: u8 = 0x40;
const ED: u8 = 0x80;

fn malformed(what: &str) -> WebauthnError {
    WebauthnError::AuthenticatorData(what.to_owned())
}

impl AuthenticatorData {
    pub fn parse(bytes: &[u8]) -> Result<Self, WebauthnError> {
        let (rp_id_hash, rest) =
            bytes.split_first_chunk::<32>().ok_or_else(|| malformed("it is shorter than 37 bytes"))?;
        let (&[flags], rest) = rest.split_first_chunk::<1>().ok_or_else(|| malformed("it is shorter than 37 bytes"))?;
        let (count, mut rest) =
            rest.split_first_chunk::<4>().ok_or_else(|| malformed("it is shorter than 37 bytes"))?;
        if flags & BS != 0 && flags & BE == 0 {
            return Err(malformed("it says backed up but not backup eligible"));
        }
        let attested = if flags & AT != 0 {
            let (aaguid, after) = rest.split_first_chunk::<16>().ok_or_else(|| malformed("its AAGUID is cut short"))?;
            let (len, after) =
                after.split_first_chunk::<2>().ok_or_else(|| malformed("its credential id length is cut short"))?;
            let len = usize::from(u16::from_be_bytes(*len));
            if len == 0 || len > MAX_CREDENTIAL_ID_LEN {
                return Err(malformed("its credential id is empty or over 1023 bytes"));
            }
            let (id, after) = after.split_at_checked(len).ok_or_else(|| malformed("its credential id is cut short"))?;
            let (key, after) = CredentialKey::parse_prefix(after)?;
            rest = after;
            Some(AttestedCredential { aaguid: *aaguid, id: id.to_vec(), key })
        } else {
            None
        };
        if flags & ED != 0 {
            // Extensions are a CBOR map; none is used, but it must be one, and nothing may follow.
            let mut reader = rest;
            let value: ciborium::Value =
                ciborium::de::from_reader(&mut reader).map_err(|_| malformed("its extensions are not CBOR"))?;
            if !value.is_map() {
                return Err(malformed("its extensions are not a CBOR map"));
            }
            rest = reader;
        }
        if !rest.is_empty() {
            return Err(malformed("bytes follow its last field"));
        }
        Ok(Self {
            rp_id_hash: *rp_id_hash,
            flags: Flags {
                user_present: flags & UP != 0,
                user_verified: flags & UV != 0,
                backup_eligible: flags & BE != 0,
                backed_up: flags & BS != 0,
            },
            sign_count: u32::from_be_bytes(*count),
            attested,
        })
    }
}
