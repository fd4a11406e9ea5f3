//! Reading the audit log for an account.

use sqlx::AnyPool;

use crate::engine::audit::AuditRow;

/// An account's newest `limit` audit rows at or after `since_ms`, returned oldest first.
pub async fn audit_for_account(
    pool: &AnyPool,
    account_id: &str,
    since_ms: i64,
    service: Option<&str>,
    agent: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT * FROM (SELECT seq, ts_ms, account_id, actor, session_id, action, namespace, service, outcome, code, \
                presence, policy_rule, prev_hash, hash, account_seq, account_hash FROM audit_log \
                WHERE account_id = $1 AND ts_ms >= $2 AND ($3 = '' OR service = $4) \
                AND ($5 = '' OR actor IN (SELECT id FROM devices WHERE agent_id = $6)) \
                ORDER BY seq DESC LIMIT $7) recent ORDER BY seq ASC",
    )
    .bind(account_id)
    .bind(since_ms)
    .bind(service.unwrap_or(""))
    .bind(service.unwrap_or(""))
    .bind(agent.unwrap_or(""))
    .bind(agent.unwrap_or(""))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(AuditRow::from_row).collect()
}
