//! The statements of the `requests` and `lookup_guards` tables.

use agentkeys_proto::agents::{PendingRequest, RequestKind, RequestStatus, Tier};
use agentkeys_proto::b64;
use agentkeys_proto::namespace::Namespace;
use sqlx::{AnyConnection, AnyPool, Row as _};

use crate::db::parse_stored;

/// A request row.
#[derive(Debug, Clone)]
pub struct RequestRow {
    pub id: String,
    pub code: String,
    pub kind: RequestKind,
    pub account_id: Option<String>,
    pub agent_id: Option<String>,
    pub label: String,
    pub scope: Vec<String>,
    pub tier: Option<Tier>,
    pub reason: Option<String>,
    pub device_sign_public: Option<Vec<u8>>,
    pub device_kx_public: Option<Vec<u8>>,
    pub token_hash: Option<Vec<u8>>,
    pub poll_hash: Option<Vec<u8>>,
    pub commitment: Option<Vec<u8>>,
    pub reveal: Option<Vec<u8>>,
    /// As stored: never [`RequestStatus::Expired`] (see [`RequestRow::status_at`]).
    pub status: RequestStatus,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub device_id: Option<String>,
    pub session_id: Option<String>,
    /// An account recovery: held until then.
    pub not_before_ms: Option<i64>,
    /// A release: the namespace of the credential asked for.
    pub namespace: Option<Namespace>,
}

const COLUMNS: &str = "id, code, kind, account_id, agent_id, label, scope, tier, reason, device_sign_public, \
                       device_kx_public, token_hash, poll_hash, commitment, reveal, status, created_at_ms, \
                       expires_at_ms, device_id, session_id, not_before_ms, namespace";

/// The kinds a pair code opens (`POST /v1/pairings`), as SQL.
const PAIRING_KINDS: &str = "('pairing', 'device', 'recovery')";

impl RequestRow {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        let scope: String = row.try_get("scope")?;
        Ok(Self {
            id: row.try_get("id")?,
            code: row.try_get("code")?,
            kind: parse_stored("requests.kind", &row.try_get::<String, _>("kind")?, RequestKind::parse)?,
            account_id: row.try_get("account_id")?,
            agent_id: row.try_get("agent_id")?,
            label: row.try_get("label")?,
            scope: scope.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            tier: row
                .try_get::<Option<String>, _>("tier")?
                .map(|tier| parse_stored("requests.tier", &tier, Tier::parse))
                .transpose()?,
            reason: row.try_get("reason")?,
            device_sign_public: row.try_get("device_sign_public")?,
            device_kx_public: row.try_get("device_kx_public")?,
            token_hash: row.try_get("token_hash")?,
            poll_hash: row.try_get("poll_hash")?,
            commitment: row.try_get("commitment")?,
            reveal: row.try_get("reveal")?,
            status: parse_stored("requests.status", &row.try_get::<String, _>("status")?, RequestStatus::parse)?,
            created_at_ms: row.try_get("created_at_ms")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
            device_id: row.try_get("device_id")?,
            session_id: row.try_get("session_id")?,
            not_before_ms: row.try_get("not_before_ms")?,
            namespace: row
                .try_get::<Option<String>, _>("namespace")?
                .map(|ns| parse_stored("requests.namespace", &ns, Namespace::parse))
                .transpose()?,
        })
    }

    /// A pending request turns expired once its time is up.
    pub fn status_at(&self, now: i64) -> RequestStatus {
        if self.status == RequestStatus::Pending && self.expires_at_ms < now {
            RequestStatus::Expired
        } else {
            self.status
        }
    }

    pub fn to_pending(&self) -> PendingRequest {
        PendingRequest {
            code: self.code.clone(),
            kind: self.kind,
            label: self.label.clone(),
            agent_id: self.agent_id.clone(),
            scope: self.scope.clone(),
            tier: self.tier,
            reason: self.reason.clone(),
            device_sign_public: self.device_sign_public.as_ref().map(b64::encode),
            device_kx_public: self.device_kx_public.as_ref().map(b64::encode),
            commitment: self.commitment.as_ref().map(b64::encode),
            reveal: self.reveal.as_ref().map(b64::encode),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            not_before_ms: self.not_before_ms,
            device_id: if self.kind == RequestKind::Release { self.device_id.clone() } else { None },
            namespace: self.namespace.as_ref().map(Namespace::as_stored),
        }
    }
}

/// A new request of any kind.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: String,
    pub code: String,
    pub kind: RequestKind,
    pub account_id: Option<String>,
    pub agent_id: Option<String>,
    pub label: String,
    pub scope: Vec<String>,
    pub tier: Option<Tier>,
    pub reason: Option<String>,
    pub device_sign_public: Option<Vec<u8>>,
    pub device_kx_public: Option<Vec<u8>>,
    pub token_hash: Option<Vec<u8>>,
    pub poll_hash: Option<Vec<u8>>,
    pub commitment: Option<Vec<u8>>,
    pub expires_at_ms: i64,
    pub not_before_ms: Option<i64>,
    /// A release: the asking device, and the namespace of the credential.
    pub device_id: Option<String>,
    pub namespace: Option<Namespace>,
}

/// Inserts a pending request; `false` when its code or id is taken.
pub async fn insert(conn: &mut AnyConnection, new: &NewRequest, now: i64) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO requests (id, code, kind, account_id, agent_id, label, scope, tier, reason, device_sign_public, \
         device_kx_public, token_hash, poll_hash, commitment, status, created_at_ms, expires_at_ms, not_before_ms, \
         device_id, namespace) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&new.id)
    .bind(&new.code)
    .bind(new.kind.as_str())
    .bind(&new.account_id)
    .bind(&new.agent_id)
    .bind(&new.label)
    .bind(new.scope.join(","))
    .bind(new.tier.map(Tier::as_str))
    .bind(&new.reason)
    .bind(&new.device_sign_public)
    .bind(&new.device_kx_public)
    .bind(&new.token_hash)
    .bind(&new.poll_hash)
    .bind(&new.commitment)
    .bind(RequestStatus::Pending.as_str())
    .bind(now)
    .bind(new.expires_at_ms)
    .bind(new.not_before_ms)
    .bind(&new.device_id)
    .bind(new.namespace.as_ref().map(Namespace::as_stored))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// A request by code, whatever its state: for a handler to prepare an approval, or the policy
/// to see what it concerns. The op finds it again, guarded, before anything changes.
pub async fn find_by_code<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    executor: E,
    code: &str,
) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM requests WHERE code = $1")))
        .bind(code)
        .fetch_optional(executor)
        .await?
        .map(|row| RequestRow::from_row(&row))
        .transpose()
}

/// The pending, unexpired request with `code` that `account_id` holds — or, with
/// `or_unclaimed`, a pairing no account has claimed yet.
pub async fn find_pending(
    conn: &mut AnyConnection,
    code: &str,
    account_id: &str,
    or_unclaimed: bool,
    now: i64,
) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM requests WHERE code = $1 AND status = 'pending' AND expires_at_ms >= $2 \
         AND (account_id = $3 OR (account_id IS NULL AND kind IN {PAIRING_KINDS} AND $4 = 1))"
    )))
    .bind(code)
    .bind(now)
    .bind(account_id)
    .bind(i64::from(or_unclaimed))
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| RequestRow::from_row(&row))
    .transpose()
}

/// The request with `code` that `account_id` holds, whatever its state: to tell a master that
/// one it can see was decided already (by another master device) rather than count a miss.
pub async fn find_own(
    conn: &mut AnyConnection,
    code: &str,
    account_id: &str,
) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM requests WHERE code = $1 AND account_id = $2 ORDER BY created_at_ms DESC LIMIT 1"
    )))
    .bind(code)
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| RequestRow::from_row(&row))
    .transpose()
}

/// A pairing request (any kind a pair code opens) by id, for the machine that opened it.
pub async fn pairing(pool: &AnyPool, pairing_id: &str) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM requests WHERE id = $1 AND kind IN {PAIRING_KINDS}"
    )))
    .bind(pairing_id)
    .fetch_optional(pool)
    .await?
    .map(|row| RequestRow::from_row(&row))
    .transpose()
}

/// A request by id, inside a transaction.
pub async fn find_by_id(conn: &mut AnyConnection, id: &str) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM requests WHERE id = $1")))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| RequestRow::from_row(&row))
        .transpose()
}

/// An account recovery by id, for the machine that opened it.
pub async fn account_recovery(pool: &AnyPool, id: &str) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM requests WHERE id = $1 AND kind = 'account_recovery'"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .map(|row| RequestRow::from_row(&row))
    .transpose()
}

/// The account's pending, unexpired recovery, if one is open. From the read pool or inside a
/// transaction.
pub async fn pending_account_recovery<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    executor: E,
    account_id: &str,
    now: i64,
) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM requests WHERE account_id = $1 AND kind = 'account_recovery' AND status = 'pending' \
         AND expires_at_ms >= $2 ORDER BY created_at_ms LIMIT 1"
    )))
    .bind(account_id)
    .bind(now)
    .fetch_optional(executor)
    .await?
    .map(|row| RequestRow::from_row(&row))
    .transpose()
}

/// Denies the account's pending recoveries (the recovery key they were opened with is gone).
pub async fn deny_pending_account_recoveries(
    conn: &mut AnyConnection,
    account_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE requests SET status = 'denied', decided_at_ms = $1 WHERE account_id = $2 \
         AND kind = 'account_recovery' AND status = 'pending'",
    )
    .bind(now)
    .bind(account_id)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// The first account to look a pairing up claims it.
pub async fn claim(conn: &mut AnyConnection, id: &str, account_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE requests SET account_id = $1 WHERE id = $2 AND account_id IS NULL")
        .bind(account_id)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Stores the pairing daemon's OTP nonce: once, only after a master claimed the code.
pub async fn reveal(conn: &mut AnyConnection, pairing_id: &str, nonce: &[u8]) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE requests SET reveal = $1 WHERE id = $2 AND kind IN {PAIRING_KINDS} AND status = 'pending' \
         AND account_id IS NOT NULL AND reveal IS NULL"
    )))
    .bind(nonce)
    .bind(pairing_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(done == 1)
}

pub async fn decide(
    conn: &mut AnyConnection,
    id: &str,
    account_id: &str,
    status: RequestStatus,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE requests SET status = $1, decided_at_ms = $2, account_id = $3 WHERE id = $4")
        .bind(status.as_str())
        .bind(now)
        .bind(account_id)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Records an approved pairing with the device and session it created.
pub async fn approve_pairing(
    conn: &mut AnyConnection,
    id: &str,
    account_id: &str,
    agent_id: &str,
    device_id: &str,
    session_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE requests SET status = $1, decided_at_ms = $2, account_id = $3, agent_id = $4, device_id = $5, \
         session_id = $6 WHERE id = $7",
    )
    .bind(RequestStatus::Approved.as_str())
    .bind(now)
    .bind(account_id)
    .bind(agent_id)
    .bind(device_id)
    .bind(session_id)
    .bind(id)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Records an approved device join with the master device and session it created.
pub async fn approve_master(
    conn: &mut AnyConnection,
    id: &str,
    account_id: &str,
    device_id: &str,
    session_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE requests SET status = $1, decided_at_ms = $2, account_id = $3, device_id = $4, session_id = $5 \
         WHERE id = $6",
    )
    .bind(RequestStatus::Approved.as_str())
    .bind(now)
    .bind(account_id)
    .bind(device_id)
    .bind(session_id)
    .bind(id)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// The account's pending requests (its agents' asks, and pairings it has looked up).
pub async fn pending_for(pool: &AnyPool, account_id: &str, now: i64) -> Result<Vec<RequestRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM requests WHERE account_id = $1 AND status = 'pending' AND expires_at_ms >= $2 \
         ORDER BY created_at_ms"
    )))
    .bind(account_id)
    .bind(now)
    .fetch_all(pool)
    .await?
    .iter()
    .map(RequestRow::from_row)
    .collect()
}

/// The code of the agent's newest pending access request for `service`.
pub async fn pending_access_code(
    conn: &mut AnyConnection,
    agent_id: &str,
    service: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query(
        "SELECT code FROM requests WHERE agent_id = $1 AND kind = 'access' AND status = 'pending' \
         AND scope = $2 AND expires_at_ms > $3 ORDER BY created_at_ms DESC LIMIT 1",
    )
    .bind(agent_id)
    .bind(service)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| row.try_get("code"))
    .transpose()
}

/// The code of the pending release request of `device_id` for one credential.
pub async fn pending_release_code(
    conn: &mut AnyConnection,
    device_id: &str,
    namespace: &Namespace,
    service: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query(
        "SELECT code FROM requests WHERE device_id = $1 AND kind = 'release' AND status = 'pending' \
         AND namespace = $2 AND scope = $3 AND expires_at_ms >= $4 ORDER BY created_at_ms DESC LIMIT 1",
    )
    .bind(device_id)
    .bind(namespace.as_stored())
    .bind(service)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| row.try_get("code"))
    .transpose()
}

/// An agent that ends takes its open asks with it.
pub async fn deny_pending_of_agent(conn: &mut AnyConnection, agent_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE requests SET status = 'denied', decided_at_ms = $1 WHERE agent_id = $2 AND status = 'pending'")
        .bind(now)
        .bind(agent_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Failed code look-ups of one account.
#[derive(Debug, Clone, Copy, Default)]
pub struct LookupGuard {
    pub failures: i64,
    pub last_failure_ms: i64,
    pub locked_until_ms: i64,
}

pub async fn lookup_guard(conn: &mut AnyConnection, account_id: &str) -> Result<LookupGuard, sqlx::Error> {
    let row = sqlx::query("SELECT failures, last_failure_ms, locked_until_ms FROM lookup_guards WHERE account_id = $1")
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(LookupGuard {
            failures: row.try_get("failures")?,
            last_failure_ms: row.try_get("last_failure_ms")?,
            locked_until_ms: row.try_get("locked_until_ms")?,
        }),
        None => Ok(LookupGuard::default()),
    }
}

pub async fn set_lookup_guard(
    conn: &mut AnyConnection,
    account_id: &str,
    guard: LookupGuard,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO lookup_guards (account_id, failures, last_failure_ms, locked_until_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (account_id) DO UPDATE SET failures = excluded.failures, last_failure_ms = excluded.last_failure_ms, \
         locked_until_ms = excluded.locked_until_ms",
    )
    .bind(account_id)
    .bind(guard.failures)
    .bind(guard.last_failure_ms)
    .bind(guard.locked_until_ms)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Deletes every request that expired before `before`.
pub async fn delete_expired(conn: &mut AnyConnection, before: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM requests WHERE expires_at_ms < $1").bind(before).execute(&mut *conn).await.map(|_| ())
}
