//! The append-only, hash-chained audit log. Each row's hash covers the previous row's hash and
//! every field of the row, so changing a row breaks its own hash, removing one breaks the next
//! row's link, and cutting the tail no longer matches the head that every append updates.
//! Rows are written only by [`crate::engine::writer`]; [`verify_chain`] is the check.

use agentkeys_proto::ErrorCode;
use agentkeys_proto::presence::PresenceMethod;
use agentkeys_proto::types::{AuditEntry, Outcome};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};

use crate::db::parse_stored;

/// What a handler knows about a request before the writer decides its final outcome: who made
/// it, what it was (the route's action) and what it was about.
#[derive(Debug, Clone, Default)]
pub struct AuditDraft {
    pub account_id: Option<String>,
    pub actor: Option<String>,
    pub session_id: Option<String>,
    pub action: &'static str,
    pub subject: Subject,
}

/// What an audit row is about: a credential (namespace and service), an agent (its namespace),
/// or nothing in particular.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub namespace: Option<String>,
    pub service: Option<String>,
}

impl Subject {
    pub fn credential(namespace: &agentkeys_proto::namespace::Namespace, service: &str) -> Self {
        Self { namespace: Some(namespace.as_stored()), service: Some(service.to_owned()) }
    }

    pub fn agent(agent_id: &str) -> Self {
        Self { namespace: Some(agentkeys_proto::agents::agent_namespace(agent_id)), service: None }
    }
}

/// How an error code is classified in the log.
pub fn outcome_for(code: Option<ErrorCode>) -> Outcome {
    match code {
        None => Outcome::Allowed,
        Some(ErrorCode::RateLimited) => Outcome::RateLimited,
        Some(
            ErrorCode::Denied
            | ErrorCode::Unauthenticated
            | ErrorCode::SignatureInvalid
            | ErrorCode::StaleTimestamp
            | ErrorCode::ReplayedNonce
            | ErrorCode::SessionInvalid
            | ErrorCode::Revoked
            | ErrorCode::ApprovalRequired
            | ErrorCode::Declined,
        ) => Outcome::Denied,
        Some(_) => Outcome::Failed,
    }
}

/// One stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub ts_ms: i64,
    pub account_id: Option<String>,
    pub actor: Option<String>,
    pub session_id: Option<String>,
    pub action: String,
    pub namespace: Option<String>,
    pub service: Option<String>,
    pub outcome: Outcome,
    pub code: Option<ErrorCode>,
    pub presence: Option<PresenceMethod>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

fn put_field(hasher: &mut Sha256, field: Option<&str>) {
    match field {
        None => hasher.update([0xff]),
        Some(text) => {
            hasher.update([0x00]);
            hasher.update((text.len() as u32).to_be_bytes());
            hasher.update(text.as_bytes());
        }
    }
}

impl AuditRow {
    /// `SHA-256("agentkeys-audit-v1" || prev_hash || seq || ts || fields…)`, each optional field
    /// as `0xff` (absent) or `0x00 || u32be(len) || bytes`; then, only when presence is recorded,
    /// `0x01 || field(presence)`, so rows from before that column keep their hashes.
    pub fn compute_hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"agentkeys-audit-v1");
        hasher.update(&self.prev_hash);
        hasher.update(self.seq.to_be_bytes());
        hasher.update(self.ts_ms.to_be_bytes());
        for field in [
            self.account_id.as_deref(),
            self.actor.as_deref(),
            self.session_id.as_deref(),
            Some(self.action.as_str()),
            self.namespace.as_deref(),
            self.service.as_deref(),
            Some(self.outcome.as_str()),
            self.code.map(ErrorCode::as_str),
        ] {
            put_field(&mut hasher, field);
        }
        if let Some(presence) = self.presence {
            hasher.update([0x01]);
            put_field(&mut hasher, Some(presence.as_str()));
        }
        hasher.finalize().into()
    }

    pub fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            seq: row.try_get("seq")?,
            ts_ms: row.try_get("ts_ms")?,
            account_id: row.try_get("account_id")?,
            actor: row.try_get("actor")?,
            session_id: row.try_get("session_id")?,
            action: row.try_get("action")?,
            namespace: row.try_get("namespace")?,
            service: row.try_get("service")?,
            outcome: parse_stored("audit_log.outcome", &row.try_get::<String, _>("outcome")?, Outcome::parse)?,
            code: row
                .try_get::<Option<String>, _>("code")?
                .map(|code| parse_stored("audit_log.code", &code, ErrorCode::parse))
                .transpose()?,
            presence: row
                .try_get::<Option<String>, _>("presence")?
                .map(|method| parse_stored("audit_log.presence", &method, PresenceMethod::parse))
                .transpose()?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }

    /// The account owner's view of the row.
    pub fn to_entry(&self) -> AuditEntry {
        AuditEntry {
            seq: self.seq,
            ts_ms: self.ts_ms,
            actor: self.actor.clone(),
            action: self.action.clone(),
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            outcome: self.outcome,
            code: self.code,
            presence: self.presence.map(|p| p.as_str().to_owned()),
        }
    }
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub rows: i64,
    pub head_hash: Vec<u8>,
}

/// Where the chain is broken.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("audit chain broken at seq {seq}: {reason}")]
    Broken { seq: i64, reason: String },
    #[error("cannot read the audit log: {0}")]
    Db(#[from] sqlx::Error),
}

/// Checks the chain up to the head: every row from seq 1 to the head's seq present, linked and
/// matching its hash, the last one matching the head, and no row numbered below 1. The head is
/// read first and rows move with it in one transaction, so this is exact on a live server: rows
/// committed while it runs lie beyond the head it read and are left for the next check.
pub async fn verify_chain(pool: &AnyPool) -> Result<ChainReport, ChainError> {
    const PAGE: i64 = 5000;
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(pool).await?;
    let head_seq: i64 = head.try_get("seq")?;
    let head_hash: Vec<u8> = head.try_get("hash")?;
    let stray = sqlx::query("SELECT MIN(seq) AS first FROM audit_log").fetch_one(pool).await?;
    if let Some(first) = stray.try_get::<Option<i64>, _>("first")?
        && first < 1
    {
        return Err(ChainError::Broken {
            seq: first,
            reason: "a row is numbered below 1 (inserted outside the chain)".into(),
        });
    }
    let mut expected_seq = 1i64;
    let mut prev = vec![0u8; 32];
    while expected_seq <= head_seq {
        let rows = sqlx::query(
            "SELECT seq, ts_ms, account_id, actor, session_id, action, namespace, service, outcome, code, presence, prev_hash, hash \
             FROM audit_log WHERE seq >= $1 AND seq <= $2 ORDER BY seq ASC LIMIT $3",
        )
        .bind(expected_seq)
        .bind(head_seq)
        .bind(PAGE)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Err(ChainError::Broken {
                seq: expected_seq,
                reason: format!(
                    "the head says {head_seq} rows but the log ends at {} (rows were cut off)",
                    expected_seq - 1
                ),
            });
        }
        for row in &rows {
            let row = AuditRow::from_row(row)?;
            let broken = |reason: String| ChainError::Broken { seq: row.seq, reason };
            if row.seq != expected_seq {
                return Err(ChainError::Broken {
                    seq: expected_seq,
                    reason: format!("row missing (next row is seq {})", row.seq),
                });
            }
            if row.prev_hash != prev {
                return Err(broken(
                    "its link to the previous row does not match (a row was removed or changed)".into(),
                ));
            }
            if row.hash != row.compute_hash() {
                return Err(broken("its contents do not match its hash (the row was changed)".into()));
            }
            prev = row.hash;
            expected_seq += 1;
        }
    }
    if head_hash != prev {
        return Err(ChainError::Broken {
            seq: head_seq,
            reason: "the last row does not match the head (the head or the last row was changed)".into(),
        });
    }
    Ok(ChainReport { rows: head_seq, head_hash })
}
