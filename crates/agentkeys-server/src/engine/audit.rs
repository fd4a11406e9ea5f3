//! The append-only, hash-chained audit log. Each row's hash covers the previous row's hash and
//! every field of the row, so changing a row breaks its own hash, removing one breaks the next
//! row's link, and cutting the tail no longer matches the head that every append updates.
//! Each row of an account is also a place in that account's own chain
//! ([`agentkeys_proto::chain`]), whose head its clients remember. Rows are written only by
//! [`crate::engine::writer`]; [`verify_chain`] is the check of both.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use agentkeys_proto::ErrorCode;
use agentkeys_proto::chain::{ChainPlace, account_chain_hash};
use agentkeys_proto::presence::PresenceRecord;
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
    pub presence: Option<PresenceRecord>,
    /// The policy rule that decided the request (`v3:name`), when one did.
    pub policy_rule: Option<String>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    /// The row's place in its account's chain; `None` without an account, and on rows from
    /// before account chains.
    pub account_seq: Option<i64>,
    pub account_hash: Option<Vec<u8>>,
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
    /// `0x01 || field(presence)`, so rows from before that column keep their hashes; likewise
    /// `0x02 || field(policy_rule)` when a rule decided the request.
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
        if let Some(presence) = &self.presence {
            hasher.update([0x01]);
            put_field(&mut hasher, Some(&presence.to_text()));
        }
        if let Some(rule) = &self.policy_rule {
            hasher.update([0x02]);
            put_field(&mut hasher, Some(rule));
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
                .map(|text| parse_stored("audit_log.presence", &text, PresenceRecord::parse))
                .transpose()?,
            policy_rule: row.try_get("policy_rule")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
            account_seq: row.try_get("account_seq")?,
            account_hash: row.try_get("account_hash")?,
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
            presence: self.presence.as_ref().map(PresenceRecord::to_text),
            rule: self.policy_rule.clone(),
        }
    }
}

/// The hash of an account chain's place after `prev` (32 zero bytes before the first place).
pub fn next_account_hash(prev: &[u8], seq: i64, row_hash: &[u8]) -> Vec<u8> {
    let as_array = |bytes: &[u8]| <[u8; 32]>::try_from(bytes).unwrap_or([0; 32]);
    account_chain_hash(&as_array(prev), seq as u64, &as_array(row_hash)).to_vec()
}

/// What a signed request learns of its account's chain: the place its client said it saw (from
/// the request), and, once its batch commits, the head after its own row and the chain's hash
/// at the place it saw. Shared between the request's middleware and the writer.
#[derive(Debug, Default)]
pub struct HeadSlot {
    pub seen: Option<i64>,
    answer: OnceLock<HeadAnswer>,
}

/// The writer's answer for one request's [`HeadSlot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadAnswer {
    pub head: ChainPlace,
    /// The chain's hash now at [`HeadSlot::seen`]; `None` when it has no such place.
    pub at_seen: Option<[u8; 32]>,
}

impl HeadSlot {
    pub fn new(seen: Option<i64>) -> Arc<Self> {
        Arc::new(Self { seen, answer: OnceLock::new() })
    }

    /// Set by the writer after the request's batch committed.
    pub fn answer(&self, answer: HeadAnswer) {
        let _ = self.answer.set(answer);
    }

    pub fn answered(&self) -> Option<&HeadAnswer> {
        self.answer.get()
    }
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub rows: i64,
    pub head_hash: Vec<u8>,
    /// How many account chains were checked, each up to its head.
    pub accounts: usize,
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
    let mut accounts: HashMap<String, (i64, Vec<u8>)> = HashMap::new();
    while expected_seq <= head_seq {
        let rows = sqlx::query(
            "SELECT seq, ts_ms, account_id, actor, session_id, action, namespace, service, outcome, code, presence, \
             policy_rule, prev_hash, hash, account_seq, account_hash FROM audit_log WHERE seq >= $1 AND seq <= $2 ORDER BY seq ASC LIMIT $3",
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
            if let Some(account) = &row.account_id {
                check_account_place(&mut accounts, account, &row).map_err(broken)?;
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
    check_account_heads(pool, &accounts, head_seq).await?;
    Ok(ChainReport { rows: head_seq, head_hash, accounts: accounts.len() })
}

/// Checks a row's place in its account's chain against the place before it: the next number,
/// linked to the previous hash, over this row's hash. Rows from before account chains have no
/// place; after an account's first placed row, every row of it must have one.
fn check_account_place(
    accounts: &mut HashMap<String, (i64, Vec<u8>)>,
    account: &str,
    row: &AuditRow,
) -> Result<(), String> {
    let (Some(seq), Some(hash)) = (row.account_seq, &row.account_hash) else {
        return match accounts.contains_key(account) {
            true => Err(format!("it has no place in the chain of account {account}, whose earlier rows do")),
            false => Ok(()),
        };
    };
    let (last_seq, last_hash) = accounts.get(account).cloned().unwrap_or((0, vec![0; 32]));
    if seq != last_seq + 1 {
        return Err(format!("it is place {seq} of account {account}'s chain, after place {last_seq}"));
    }
    if *hash != next_account_hash(&last_hash, seq, &row.hash) {
        return Err(format!("its hash in account {account}'s chain does not match (the chain was changed)"));
    }
    accounts.insert(account.to_owned(), (seq, hash.clone()));
    Ok(())
}

/// Every account head matches the last place of its chain among the rows up to `head_seq` (the
/// server chain's head read at the start: rows after it belong to the next check).
async fn check_account_heads(
    pool: &AnyPool,
    accounts: &HashMap<String, (i64, Vec<u8>)>,
    head_seq: i64,
) -> Result<(), ChainError> {
    let heads = sqlx::query(
        "SELECT h.account_id, h.seq, h.hash, (SELECT MAX(seq) FROM audit_log a WHERE a.account_id = h.account_id \
         AND a.account_seq = h.seq) AS at FROM account_audit_heads h",
    )
    .fetch_all(pool)
    .await?;
    let mut with_head = std::collections::HashSet::new();
    for head in heads {
        let account: String = head.try_get("account_id")?;
        with_head.insert(account.clone());
        let seq: i64 = head.try_get("seq")?;
        let hash: Vec<u8> = head.try_get("hash")?;
        let at: Option<i64> = head.try_get("at")?;
        if at.is_some_and(|at| at > head_seq) {
            continue;
        }
        match accounts.get(&account) {
            Some((last_seq, last_hash)) if *last_seq == seq && *last_hash == hash => {}
            Some((last_seq, _)) => {
                return Err(ChainError::Broken {
                    seq: head_seq,
                    reason: format!(
                        "account {account}'s head says place {seq} but its chain ends at place {last_seq} with another \
                         hash (rows were cut off or the head was changed)"
                    ),
                });
            }
            None => {
                return Err(ChainError::Broken {
                    seq: head_seq,
                    reason: format!("account {account} has a head at place {seq} but no rows in its chain"),
                });
            }
        }
    }
    if let Some(account) = accounts.keys().find(|account| !with_head.contains(*account)) {
        return Err(ChainError::Broken {
            seq: head_seq,
            reason: format!("account {account} has rows in its chain but no head (the head was removed)"),
        });
    }
    Ok(())
}
