//! The certificate chain of an agent device key: what proves the account owner approved it, so a
//! server cannot slip in a key of its own (PRODUCT.md §2). Two forms, by how the agent joined:
//!
//! - paired (`0x01 || account signature`): the master signed [`agent_device_payload`] at `approve`;
//! - linked (`0x02 || link sign key || link kx key || account signature || link signature`): at
//!   `agent create` the master signed [`link_key_payload`] for a one-use link key, and the daemon,
//!   holding the link code, signed [`agent_device_payload`] for its fresh device key with it.
//!
//! This module is the byte format only; the caller passes the Ed25519 verification in, so the
//! wire crate stays free of crypto dependencies.

use crate::ids::{agent_device_payload, link_key_payload};

/// Checks an Ed25519 signature: `(public key, message, signature) -> valid`.
pub type Verify<'a> = &'a dyn Fn(&[u8; 32], &[u8], &[u8; 64]) -> bool;

/// A decoded certificate chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCertificate {
    Paired {
        account_signature: [u8; 64],
    },
    Linked {
        link_sign_public: [u8; 32],
        link_kx_public: [u8; 32],
        account_signature: [u8; 64],
        link_signature: [u8; 64],
    },
}

const PAIRED: u8 = 0x01;
const LINKED: u8 = 0x02;

impl DeviceCertificate {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            DeviceCertificate::Paired { account_signature } => [&[PAIRED][..], account_signature].concat(),
            DeviceCertificate::Linked { link_sign_public, link_kx_public, account_signature, link_signature } => {
                [&[LINKED][..], link_sign_public, link_kx_public, account_signature, link_signature].concat()
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (&kind, rest) = bytes.split_first()?;
        match (kind, rest.len()) {
            (PAIRED, 64) => Some(DeviceCertificate::Paired { account_signature: rest.try_into().ok()? }),
            (LINKED, 192) => Some(DeviceCertificate::Linked {
                link_sign_public: rest[..32].try_into().ok()?,
                link_kx_public: rest[32..64].try_into().ok()?,
                account_signature: rest[64..128].try_into().ok()?,
                link_signature: rest[128..].try_into().ok()?,
            }),
            _ => None,
        }
    }

    /// True when the chain ties this device key of `agent_id` to the account key.
    pub fn verifies(
        &self,
        account_sign_public: &[u8; 32],
        account_id: &str,
        agent_id: &str,
        device_sign_public: &[u8; 32],
        device_kx_public: &[u8; 32],
        verify: Verify<'_>,
    ) -> bool {
        let device_payload = agent_device_payload(account_id, agent_id, device_sign_public, device_kx_public);
        match self {
            DeviceCertificate::Paired { account_signature } => {
                verify(account_sign_public, &device_payload, account_signature)
            }
            DeviceCertificate::Linked { link_sign_public, link_kx_public, account_signature, link_signature } => {
                let link_payload = link_key_payload(account_id, agent_id, link_sign_public, link_kx_public);
                verify(account_sign_public, &link_payload, account_signature)
                    && verify(link_sign_public, &device_payload, link_signature)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_round_trip_and_junk_is_refused() {
        let paired = DeviceCertificate::Paired { account_signature: [1; 64] };
        let linked = DeviceCertificate::Linked {
            link_sign_public: [2; 32],
            link_kx_public: [3; 32],
            account_signature: [4; 64],
            link_signature: [5; 64],
        };
        for cert in [paired, linked] {
            assert_eq!(DeviceCertificate::decode(&cert.encode()), Some(cert));
        }
        assert_eq!(DeviceCertificate::decode(&[PAIRED; 10]), None);
        assert_eq!(DeviceCertificate::decode(&[]), None);
        assert_eq!(DeviceCertificate::decode(&[9; 65]), None);
    }
}
