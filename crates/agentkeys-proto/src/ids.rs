//! Identifiers derived from public keys, and the device-certificate payload. Both sides derive
//! them, so the client can check that the server did not substitute a key of its own.

use sha2::{Digest, Sha256};

/// Lower-case hex, as the signed payloads spell keys.
pub fn hex(bytes: &[u8]) -> String {
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

/// Longest device label, in characters.
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

/// Longest agent label, in bytes. Labels follow the service-name rule, so they are safe in ids,
/// paths and tables: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`.
pub const AGENT_LABEL_MAX: usize = 64;

/// `ag_` + 20 hex digits of `SHA-256("agentkeys-agent-id-v1" || 0 || account id || "//" || label)`.
///
/// Derived, not assigned, so an agent keeps its id across re-pairing and recovery, and the
/// hierarchical form (`account//label`) leaves room for sub-agents (`account//parent/child`).
pub fn agent_id(account_id: &str, label: &str) -> String {
    format!("ag_{}", short_hash("agentkeys-agent-id-v1", format!("{account_id}//{label}").as_bytes()))
}

/// What certifies an agent's device key, directly by the account key or by a link key:
/// `agentkeys-agent-device-v1 \n account id \n agent id \n hex(sign key) \n hex(kx key)`.
pub fn agent_device_payload(
    account_id: &str,
    agent_id: &str,
    device_sign_public: &[u8; 32],
    device_kx_public: &[u8; 32],
) -> Vec<u8> {
    format!(
        "agentkeys-agent-device-v1\n{account_id}\n{agent_id}\n{}\n{}",
        hex(device_sign_public),
        hex(device_kx_public)
    )
    .into_bytes()
}

/// What the account key signs to let a link key certify one device of an agent:
/// `agentkeys-link-key-v1 \n account id \n agent id \n hex(link sign key) \n hex(link kx key)`.
pub fn link_key_payload(
    account_id: &str,
    agent_id: &str,
    link_sign_public: &[u8; 32],
    link_kx_public: &[u8; 32],
) -> Vec<u8> {
    format!("agentkeys-link-key-v1\n{account_id}\n{agent_id}\n{}\n{}", hex(link_sign_public), hex(link_kx_public))
        .into_bytes()
}

/// `lnk_` + 20 hex digits of `SHA-256("agentkeys-link-id-v1" || 0 || link sign key)`: the link
/// code carries only its secret, and both sides derive the id from the key the secret makes.
pub fn link_id(link_sign_public: &[u8; 32]) -> String {
    format!("lnk_{}", short_hash("agentkeys-link-id-v1", link_sign_public))
}

/// What the link key signs at `agent create` to bind the code to the account that minted it:
/// `agentkeys-link-account-v1 \n link id \n hex(account sign key)`. Only the master and the holder
/// of the code know the link key's private half, so the server cannot make this for an account key
/// of its own; the daemon checks it before it pins the key.
pub fn link_account_payload(link_id: &str, account_sign_public: &[u8; 32]) -> Vec<u8> {
    format!("agentkeys-link-account-v1\n{link_id}\n{}", hex(account_sign_public)).into_bytes()
}

/// `pk_` + 20 hex digits of `SHA-256("agentkeys-presence-key-id-v1" || 0 || credential id)`: a
/// presence key's id, derived from the WebAuthn credential id, so one credential has one id.
pub fn presence_key_id(credential_id: &[u8]) -> String {
    format!("pk_{}", short_hash("agentkeys-presence-key-id-v1", credential_id))
}

/// Whether `text` has the form of [`presence_key_id`].
pub fn is_presence_key_id(text: &str) -> bool {
    text.strip_prefix("pk_")
        .is_some_and(|hex| hex.len() == 20 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A presence ceremony's id: `cer_` + 16 random bytes, base64url (22 characters). It is the
/// capability of the ceremony page, so it is random, never derived.
pub fn ceremony_id(random: [u8; 16]) -> String {
    format!("cer_{}", crate::b64::encode(random))
}

/// Whether `text` has the form of [`ceremony_id`].
pub fn is_ceremony_id(text: &str) -> bool {
    text.strip_prefix("cer_").is_some_and(|rest| {
        rest.len() == 22 && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The Crockford base32 alphabet of pair and request codes: no I, L, O or U to misread.
pub const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A request code from 40 random bits: `XXXX-XXXX`.
pub fn format_request_code(random: [u8; 5]) -> String {
    let bits = random.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let chars: String = (0..8).rev().map(|i| CODE_ALPHABET[((bits >> (5 * i)) & 31) as usize] as char).collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// Normalizes a typed request code (case, spaces, dashes, and the letters people confuse with
/// digits) to `XXXX-XXXX`; `None` when it cannot be one.
pub fn normalize_request_code(text: &str) -> Option<String> {
    let mut chars = String::with_capacity(8);
    for c in text.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c if c.is_ascii() && CODE_ALPHABET.contains(&(c as u8)) => c,
            _ => return None,
        };
        chars.push(c);
    }
    (chars.len() == 8).then(|| format!("{}-{}", &chars[..4], &chars[4..]))
}

/// What [`normalize_request_code`] takes, as a regular expression: eight characters of the
/// alphabet or the letters read as its digits (I, L, O), any case, with dashes and spaces anywhere.
pub const REQUEST_CODE_PATTERN: &str = "^[- ]*(?:[0-9A-TV-Za-tv-z][- ]*){8}$";

/// The OpenAPI schema of a request code in a path (see [`REQUEST_CODE_PATTERN`]).
#[cfg(feature = "openapi")]
#[derive(Debug)]
pub struct RequestCode;

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for RequestCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(REQUEST_CODE_PATTERN))
            .description(Some("A request code (case, dashes and spaces do not matter)"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for RequestCode {}

/// What the daemon commits to when it opens a pairing: `SHA-256("agentkeys-pair-commit-v1" || 0 ||
/// nonce)`. The nonce itself is revealed only after a master has looked the code up, which fixes
/// the keys that master certifies; see [`pairing_otp`].
pub fn pairing_commitment(nonce: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"agentkeys-pair-commit-v1");
    hasher.update([0]);
    hasher.update(nonce);
    hasher.finalize().into()
}

/// The six-digit number the daemon shows and the human types at the master, derived from the
/// daemon's secret nonce, the pair code, everything the master will certify and the signing key of
/// the account that claimed the code.
///
/// `SHA-256("agentkeys-pair-otp-v2" || 0 || nonce || code || 0 || label || 0 || scope joined by ","
/// || 0 || sign key || kx key || account sign key)`, first 8 bytes big-endian, modulo 10^6,
/// zero-padded.
///
/// Six digits resist a key swap only because the server cannot search for a matching key: the
/// nonce is committed at open and revealed after each side's view is fixed (the master's by its
/// look-up, the daemon's by the claim it saw, which names the account key it pins), so a server
/// choosing keys does not know the number they must match (commit-then-reveal, as in ZRTP's short
/// authentication string). The account key in it is what lets the daemon trust the account's
/// signatures later: a server that showed the daemon an account key of its own makes the numbers
/// differ.
///
/// `kind` is the request's kind (`pairing`, `device`, `recovery`): a server cannot present a
/// daemon's pairing to the master as a new master device (which would be given the account key),
/// or the other way round, without the numbers differing.
pub fn pairing_otp(
    nonce: &[u8; 32],
    kind: &str,
    code: &str,
    label: &str,
    scope: &[String],
    device: (&[u8; 32], &[u8; 32]),
    account_sign_public: &[u8; 32],
) -> String {
    let (sign_public, kx_public) = device;
    let mut hasher = Sha256::new();
    hasher.update(b"agentkeys-pair-otp-v3");
    hasher.update([0]);
    hasher.update(nonce);
    for part in [kind.as_bytes(), code.as_bytes(), label.as_bytes(), scope.join(",").as_bytes()] {
        hasher.update(part);
        hasher.update([0]);
    }
    hasher.update(sign_public);
    hasher.update(kx_public);
    hasher.update(account_sign_public);
    let digest = hasher.finalize();
    let number = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 1_000_000;
    format!("{number:06}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_codes_round_trip_and_forgive_typos() {
        let code = super::format_request_code([0xff, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(code.len(), 9);
        assert_eq!(super::normalize_request_code(&code.to_lowercase()).as_deref(), Some(code.as_str()));
        assert_eq!(super::normalize_request_code("oilo-0000").as_deref(), Some("0110-0000"));
        assert_eq!(super::normalize_request_code("ABCD-EFG"), None);
        assert_eq!(super::normalize_request_code("ABCD-EFGU"), None);
    }

    #[test]
    fn otp_changes_with_the_device_key() {
        let scope = vec!["openai".to_owned()];
        let a = super::pairing_otp(&[9; 32], "pairing", "7K3D-QX2M", "bot", &scope, (&[1; 32], &[2; 32]), &[5; 32]);
        let b = super::pairing_otp(&[9; 32], "pairing", "7K3D-QX2M", "bot", &scope, (&[3; 32], &[2; 32]), &[5; 32]);
        let c = super::pairing_otp(&[8; 32], "pairing", "7K3D-QX2M", "bot", &scope, (&[1; 32], &[2; 32]), &[5; 32]);
        let d = super::pairing_otp(&[9; 32], "pairing", "7K3D-QX2M", "bot", &scope, (&[1; 32], &[2; 32]), &[6; 32]);
        let e = super::pairing_otp(&[9; 32], "device", "7K3D-QX2M", "bot", &scope, (&[1; 32], &[2; 32]), &[5; 32]);
        assert_eq!(a.len(), 6);
        assert!(
            a != b && a != c && a != d && a != e,
            "the device key, the nonce, the account key and the kind all count"
        );
    }

    #[test]
    fn ids_have_their_prefix_and_length() {
        let id = super::account_id(&[7; 32]);
        assert!(id.starts_with("acct_") && id.len() == 25, "{id}");
        assert_ne!(super::device_id(&[7; 32])[4..], id[5..], "domains separate the two ids");
    }
}
