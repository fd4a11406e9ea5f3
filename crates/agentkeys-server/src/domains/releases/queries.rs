//! The statements of the `releases` table.

use agentkeys_proto::namespace::Namespace;
use sqlx::{AnyConnection, Row as _};

use crate::domains::credentials::queries::{StoredGrant, Wrap};

/// An approved release, as the approval stores it.
#[derive(Debug, Clone)]
pub struct NewRelease {
    pub request_id: String,
    pub agent_id: String,
    /// The wrap to the asking device, for the version current at approval; its grant required.
    pub wrap: Wrap,
    /// `None`: any number of reads until `expires_at_ms`.
    pub uses: Option<i64>,
    pub expires_at_ms: i64,
}

pub async fn insert(conn: &mut AnyConnection, account_id: &str, new: &NewRelease, now: i64) -> Result<(), sqlx::Error> {
    let Some(grant) = &new.wrap.grant else {
        return Err(sqlx::Error::Protocol("a release without a grant".into()));
    };
    sqlx::query(
        "INSERT INTO releases (request_id, account_id, agent_id, device_id, namespace, service, version, wrap, \
         grant_recipient, grant_signer, grant_signature, uses_left, expires_at_ms, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&new.request_id)
    .bind(account_id)
    .bind(&new.agent_id)
    .bind(&new.wrap.recipient)
    .bind(new.wrap.namespace.as_stored())
    .bind(&new.wrap.service)
    .bind(new.wrap.version)
    .bind(&new.wrap.wrap)
    .bind(&grant.recipient)
    .bind(&grant.signer)
    .bind(&grant.signature)
    .bind(new.uses)
    .bind(new.expires_at_ms)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Takes one use of a live release of `version` for `device_id`: its wrap and grant. The read
/// that takes the last use deletes the release in its own transaction, so no second read can.
pub async fn take(
    conn: &mut AnyConnection,
    device_id: &str,
    namespace: &Namespace,
    service: &str,
    version: i64,
    now: i64,
) -> Result<Option<(Vec<u8>, StoredGrant)>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT request_id, wrap, grant_recipient, grant_signer, grant_signature, uses_left FROM releases \
         WHERE device_id = $1 AND namespace = $2 AND service = $3 AND version = $4 AND expires_at_ms >= $5 \
         ORDER BY created_at_ms LIMIT 1",
    )
    .bind(device_id)
    .bind(namespace.as_stored())
    .bind(service)
    .bind(version)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let request_id: String = row.try_get("request_id")?;
    let uses_left: Option<i64> = row.try_get("uses_left")?;
    // The last use deletes the wrap in this read's transaction. Each statement re-checks what it
    // counts on, so two reads racing for one use cannot both take it (the loser finds no row
    // once the winner commits, and asks for approval again).
    let taken = match uses_left {
        Some(left) if left <= 1 => sqlx::query("DELETE FROM releases WHERE request_id = $1")
            .bind(&request_id)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        Some(_) => sqlx::query("UPDATE releases SET uses_left = uses_left - 1 WHERE request_id = $1 AND uses_left > 1")
            .bind(&request_id)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
        None => 1,
    };
    if taken == 0 {
        return Ok(None);
    }
    let grant = StoredGrant {
        recipient: row.try_get("grant_recipient")?,
        signer: row.try_get("grant_signer")?,
        signature: row.try_get("grant_signature")?,
    };
    Ok(Some((row.try_get("wrap")?, grant)))
}

/// Deletes every release of an agent (revoked, torn down).
pub async fn delete_of_agent(conn: &mut AnyConnection, agent_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM releases WHERE agent_id = $1").bind(agent_id).execute(&mut *conn).await.map(|_| ())
}

/// Deletes every release of a device (revoked, replaced).
pub async fn delete_of_device(conn: &mut AnyConnection, device_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM releases WHERE device_id = $1").bind(device_id).execute(&mut *conn).await.map(|_| ())
}

/// Deletes an agent's releases of a vault service (taken out of its scope).
pub async fn delete_of_agent_service(
    conn: &mut AnyConnection,
    agent_id: &str,
    service: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM releases WHERE agent_id = $1 AND namespace = $2 AND service = $3")
        .bind(agent_id)
        .bind(Namespace::Vault.as_stored())
        .bind(service)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Deletes the releases of older versions of a credential (a new version replaced them).
pub async fn delete_older(
    conn: &mut AnyConnection,
    account_id: &str,
    namespace: &Namespace,
    service: &str,
    version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM releases WHERE account_id = $1 AND namespace = $2 AND service = $3 AND version < $4")
        .bind(account_id)
        .bind(namespace.as_stored())
        .bind(service)
        .bind(version)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

pub async fn delete_expired(conn: &mut AnyConnection, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM releases WHERE expires_at_ms < $1").bind(now).execute(&mut *conn).await.map(|_| ())
}
