//! The statements of the `policies` table, and the counts of an agent's recent uses that rates
//! are matched against (from the audit log, which every read already appends to).

use sqlx::{AnyConnection, Row as _};

use crate::engine::audit::AuditRow;

/// One stored version.
#[derive(Debug, Clone)]
pub struct StoredPolicy {
    pub version: i64,
    pub text: String,
    pub created_at_ms: i64,
    pub created_by: String,
}

/// The version in force (0: none set yet).
pub async fn current_version(conn: &mut AnyConnection, account_id: &str) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT MAX(version) AS version FROM policies WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get::<Option<i64>, _>("version")?.unwrap_or(0))
}

pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    version: i64,
) -> Result<Option<StoredPolicy>, sqlx::Error> {
    sqlx::query("SELECT version, text, created_at_ms, created_by FROM policies WHERE account_id = $1 AND version = $2")
        .bind(account_id)
        .bind(version)
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| {
            Ok(StoredPolicy {
                version: row.try_get("version")?,
                text: row.try_get("text")?,
                created_at_ms: row.try_get("created_at_ms")?,
                created_by: row.try_get("created_by")?,
            })
        })
        .transpose()
}

pub async fn insert(conn: &mut AnyConnection, account_id: &str, policy: &StoredPolicy) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO policies (account_id, version, text, created_at_ms, created_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(account_id)
    .bind(policy.version)
    .bind(&policy.text)
    .bind(policy.created_at_ms)
    .bind(&policy.created_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The version that was in force at `ts_ms` (0: none).
pub async fn version_at(conn: &mut AnyConnection, account_id: &str, ts_ms: i64) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT MAX(version) AS version FROM policies WHERE account_id = $1 AND created_at_ms <= $2")
        .bind(account_id)
        .bind(ts_ms)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get::<Option<i64>, _>("version")?.unwrap_or(0))
}

/// One audit row of the account.
pub async fn audit_row(conn: &mut AnyConnection, account_id: &str, seq: i64) -> Result<Option<AuditRow>, sqlx::Error> {
    sqlx::query(
        "SELECT seq, ts_ms, account_id, actor, session_id, action, namespace, service, outcome, code, presence, \
         policy_rule, prev_hash, hash, account_seq, account_hash FROM audit_log WHERE seq = $1 AND account_id = $2",
    )
    .bind(seq)
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| AuditRow::from_row(&row))
    .transpose()
}

/// The agent's allowed reads of `service` (by any of its devices) since `since_ms`.
pub async fn reads_since(
    conn: &mut AnyConnection,
    agent_id: &str,
    service: &str,
    since_ms: i64,
) -> Result<u64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS uses FROM audit_log WHERE actor IN (SELECT id FROM devices WHERE agent_id = $1) \
         AND ts_ms >= $2 AND action = 'credential.read' AND service = $3 AND outcome = 'allowed'",
    )
    .bind(agent_id)
    .bind(since_ms)
    .bind(service)
    .fetch_one(&mut *conn)
    .await?;
    Ok(u64::try_from(row.try_get::<i64, _>("uses")?).unwrap_or(0))
}
