//! Identifiers derived from public keys, and the device-certificate payload. Both sides derive
//! them, so the client can check that the server did not substitute a key of its own.

use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn short_hash(domain: &str, bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(domain.as_bytes());
    hasher.update([0]);
    hasher.update(bytes);
    hex(&hasher.finalize()[..10])
}

/// `acct_` + 20 hex digits of `SHA-256("agentkeys-account-id-v1" || 0 || account sign key)`.
pub fn account_id(account_sign_public: &[u8; 32]) -> String {
    format!("acct_{}", short_hash("agentkeys-account-id-v1", account_sign_public))
}

/// `dev_` + 20 hex digits of `SHA-256("agentkeys-device-id-v1" || 0 || device sign key)`.
pub fn device_id(device_sign_public: &[u8; 32]) -> String {
    format!("dev_{}", short_hash("agentkeys-device-id-v1", device_sign_public))
}

/// Longest device label, in bytes.
pub const DEVICE_LABEL_MAX: usize = 64;

/// What the account key signs to certify a device key:
/// `agentkeys-device-cert-v1 \n account id \n hex(sign key) \n hex(kx key) \n label`.
pub fn device_certificate_payload(
    account_id: &str,
    device_sign_public: &[u8; 32],
    device_kx_public: &[u8; 32],
    label: &str,
) -> Vec<u8> {
    format!("agentkeys-device-cert-v1\n{account_id}\n{}\n{}\n{label}", hex(device_sign_public), hex(device_kx_public))
        .into_bytes()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_have_their_prefix_and_length() {
        let id = super::account_id(&[7; 32]);
        assert!(id.starts_with("acct_") && id.len() == 25, "{id}");
        assert_ne!(super::device_id(&[7; 32])[4..], id[5..], "domains separate the two ids");
    }
}
