//! Each account's audit chain as its clients see it (docs/protocol.md, "Account audit chains").
//! Every signed request says which place of the chain its client saw last
//! ([`HEADER_AUDIT_SEEN`]); the answer names the chain's head after the request's own row
//! ([`HEADER_AUDIT_HEAD`]) and the hash the chain has now at the place the client saw
//! ([`HEADER_AUDIT_AT`]). A client that remembers a place the server no longer has, or has with
//! another hash, was shown a shorter or rewritten history.

use sha2::{Digest, Sha256};

use crate::b64;

/// Request: the account chain's sequence number this client saw last (absent: none yet).
pub const HEADER_AUDIT_SEEN: &str = "x-agentkeys-audit-seen";
/// Answer: `SEQ:HASH` (decimal, base64url), the account chain's head after this request's row.
pub const HEADER_AUDIT_HEAD: &str = "x-agentkeys-audit-head";
/// Answer: the base64url hash of the account chain at the sequence number the request said it
/// saw, or `none` when the chain has no such place.
pub const HEADER_AUDIT_AT: &str = "x-agentkeys-audit-at";
/// What [`HEADER_AUDIT_AT`] says when the chain has no row at the place the client saw.
pub const AUDIT_AT_NONE: &str = "none";

/// Domain separation of the account chain's hash.
pub const ACCOUNT_CHAIN_DOMAIN: &[u8] = b"agentkeys-account-audit-v1";

/// `SHA-256("agentkeys-account-audit-v1" || prev || u64be(seq) || row_hash)`: the account chain
/// at `seq`, over the previous place's hash (32 zero bytes before the first) and the hash of the
/// row in the server's chain, which covers every field of the row.
pub fn account_chain_hash(prev: &[u8; 32], seq: u64, row_hash: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(ACCOUNT_CHAIN_DOMAIN);
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update(row_hash);
    hasher.finalize().into()
}

/// One place of an account's chain: its sequence number (from 1) and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainPlace {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl ChainPlace {
    /// `SEQ:HASH`, as [`HEADER_AUDIT_HEAD`] carries it.
    pub fn to_header(&self) -> String {
        format!("{}:{}", self.seq, b64::encode(self.hash))
    }

    /// Parses `SEQ:HASH`; `None` for anything else (a sequence number of 0 included).
    pub fn parse_header(value: &str) -> Option<Self> {
        let (seq, hash) = value.split_once(':')?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let seq: u64 = seq.parse().ok().filter(|seq| *seq > 0)?;
        Some(Self { seq, hash: b64::decode_array(hash)? })
    }
}

/// Parses [`HEADER_AUDIT_AT`]: `Some(None)` for [`AUDIT_AT_NONE`], `None` when malformed.
pub fn parse_at(value: &str) -> Option<Option<[u8; 32]>> {
    if value == AUDIT_AT_NONE { Some(None) } else { b64::decode_array(value).map(Some) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_round_trips_and_malformed_ones_are_refused() {
        let place = ChainPlace { seq: 42, hash: [7; 32] };
        assert_eq!(ChainPlace::parse_header(&place.to_header()), Some(place));
        for bad in ["", "42", ":", "0:AAAA", "-1:x", "+4:x", "42:short", "18446744073709551616:x"] {
            assert_eq!(ChainPlace::parse_header(bad), None, "{bad:?}");
        }
        assert_eq!(parse_at(AUDIT_AT_NONE), Some(None));
        assert_eq!(parse_at(&b64::encode([1; 32])), Some(Some([1; 32])));
        assert_eq!(parse_at("junk"), None);
    }
}
