//! Grants: the writer's signature on each wrap of a data key (PRODUCT.md §2, docs/protocol.md
//! "Grants"). Encryption alone does not say who wrote a version — anyone can wrap a key to a
//! public key — so every wrap carries a statement, signed by the master device that made it, over
//! the version it opens (account, namespace, service, version, the ciphertext's digest, its flags)
//! and the one recipient it was made for. A reader checks the signer's certificate against the
//! account key it pinned, then the statement, before it opens anything.
//!
//! One statement per recipient rather than one over the whole set: grants are added by separate
//! transactions (a store, a scope change, a pairing's approval), and a per-recipient statement
//! never has to be rewritten when another recipient joins. Who may receive at all is the master's
//! decision from the account's signed state, not the reader's.
//!
//! This module is the byte format and the wire types only; signing and verifying are the
//! clients' (`agentkeys_core::integrity`).

use serde::{Deserialize, Serialize};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Bit 0 of a version's flags: a high-value credential, never pre-wrapped for agents.
pub const FLAG_HIGH_VALUE: u8 = 0x01;

/// What the writer signs for one recipient of one version:
///
/// ```text
/// "agentkeys-grant-v1" || 0x00
///   || u16be(len(account_id)) || account_id || u16be(len(namespace)) || namespace
///   || u16be(len(service)) || service || u64be(version)
///   || SHA-256(ciphertext) || u8(flags) || u16be(len(recipient)) || recipient
/// ```
///
/// `recipient` is the account id for the wrap to the account key, else the device id or the
/// link id the wrap was made for.
#[derive(Debug, Clone, Copy)]
pub struct GrantStatement<'a> {
    pub account_id: &'a str,
    pub namespace: &'a str,
    pub service: &'a str,
    pub version: u64,
    pub ciphertext_sha256: &'a [u8; 32],
    pub flags: u8,
    pub recipient: &'a str,
}

impl GrantStatement<'_> {
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"agentkeys-grant-v1\0");
        for part in [self.account_id, self.namespace, self.service] {
            push_str(&mut out, part);
        }
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(self.ciphertext_sha256);
        out.push(self.flags);
        push_str(&mut out, self.recipient);
        out
    }
}

fn push_str(out: &mut Vec<u8>, part: &str) {
    let len = u16::try_from(part.len()).expect("names are far shorter than 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(part.as_bytes());
}

/// A grant as it travels: whom it was made for, which master device signed it, and the signature
/// (base64url, 64 bytes) over [`GrantStatement::payload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The account id (the account key's wrap), or the device or link id the wrap was made for.
    pub recipient: String,
    /// The master device whose key signed it.
    pub signer: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes64))]
    pub signature: String,
}

/// A master device as a reader needs it to check a grant: its keys and the account key's
/// certificate over them (`ids::device_certificate_payload`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignerDevice {
    pub device_id: String,
    pub label: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub sign_public: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub kx_public: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes64))]
    pub certificate: String,
}

/// What a client found wrong with an answer (or took knowingly), reported so the account's audit
/// says so: `POST /v1/integrity-reports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum IntegrityFinding {
    /// A version whose grant does not verify: the account never wrote it.
    Forged,
    /// A version without a grant where every version must have one.
    Unsigned,
    /// An older version than this client already verified.
    RolledBack,
    /// An account key other than the one this client pinned.
    AccountKey,
    /// A recipient the master revoked, offered again as if it were not.
    RevokedRecipient,
    /// A recipient offered for a service the master never granted its agent.
    OutOfScope,
    /// The user took an older version on purpose (`--accept-rollback`, after a restore).
    RollbackAccepted,
    /// The account's audit chain is shorter than the place this client saw (`version` is the
    /// head now, `seen` the place it saw).
    AuditShorter,
    /// The account's audit chain has another hash at the place this client saw (`seen`), or the
    /// answer did not say (a rewritten history).
    AuditForked,
    /// The account's statement log ends before the statement this master read last (`version`
    /// is the log's head now, `seen` the number it read): a revocation or grant was dropped.
    StatementsShorter,
    /// The account's statement log has another statement at the number this master read last.
    StatementsForked,
    /// A statement in the log that the account key did not sign for its place (`version` is its
    /// number).
    StatementForged,
}

impl IntegrityFinding {
    /// A refusal (audited with the `INTEGRITY` code), as opposed to a rollback the user accepted.
    pub fn is_refusal(self) -> bool {
        self != IntegrityFinding::RollbackAccepted
    }
}

/// `POST /v1/integrity-reports`. A hostile server can drop it; an honest one keeps it in the
/// audit chain, which is what makes a tampered database visible to the account owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IntegrityReport {
    pub finding: IntegrityFinding,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^(?:vault|agent:ag_[A-Za-z0-9._-]{0,61})$"))]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::names::ServiceName>))]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::number::whole_opt")]
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_i64))]
    pub version: Option<u64>,
    /// The newer version the client had verified (rollbacks).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::number::whole_opt")]
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_i64))]
    pub seen: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_length_prefixed_so_none_can_slide_into_another() {
        let digest = [7u8; 32];
        let statement = |namespace, service| GrantStatement {
            account_id: "acct_1",
            namespace,
            service,
            version: 3,
            ciphertext_sha256: &digest,
            flags: 0,
            recipient: "dev_1",
        };
        assert_ne!(statement("vault", "ab").payload(), statement("vaulta", "b").payload());
        let payload = statement("vault", "openai").payload();
        assert!(payload.starts_with(b"agentkeys-grant-v1\0\0\x06acct_1\0\x05vault\0\x06openai"));
        assert!(payload.ends_with(b"\0\x05dev_1"));
    }
}
