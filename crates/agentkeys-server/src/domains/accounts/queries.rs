//! The statements of the `accounts`, `devices` and `account_key_wraps` tables.

use agentkeys_proto::devices::DeviceOrigin;
use agentkeys_proto::types::ActorKind;
use sqlx::{AnyConnection, Row as _};

/// A device row: a master device, or one device of an agent.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub device_id: String,
    pub kind: ActorKind,
    pub label: String,
    pub sign_public: Vec<u8>,
    pub kx_public: Vec<u8>,
    pub certificate: Vec<u8>,
    /// The agent the device belongs to; `None` for a master device.
    pub agent_id: Option<String>,
    /// How a master device joined; `None` for an agent's.
    pub origin: Option<DeviceOrigin>,
}

/// Inserts the account; `false` when its id exists already.
pub async fn insert_account(
    conn: &mut AnyConnection,
    account_id: &str,
    (sign_public, kx_public): (&[u8], &[u8]),
    recovery_sign_public: &[u8],
    now: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO accounts (id, sign_public, kx_public, recovery_sign_public, created_at_ms)          VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(account_id)
    .bind(sign_public)
    .bind(kx_public)
    .bind(recovery_sign_public)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Inserts a device of the account; `false` when its id is registered already.
pub async fn insert_device(
    conn: &mut AnyConnection,
    account_id: &str,
    device: &NewDevice,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO devices (id, account_id, kind, label, sign_public, kx_public, certificate, created_at_ms, agent_id, \
         origin) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
    )
    .bind(&device.device_id)
    .bind(account_id)
    .bind(device.kind.as_str())
    .bind(&device.label)
    .bind(&device.sign_public)
    .bind(&device.kx_public)
    .bind(&device.certificate)
    .bind(now)
    .bind(&device.agent_id)
    .bind(device.origin.map(DeviceOrigin::as_str))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Stores the account key wrapped to `recipient` (`device:<id>` or `recovery`).
pub async fn insert_key_wrap(
    conn: &mut AnyConnection,
    account_id: &str,
    recipient: &str,
    wrap: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO account_key_wraps (account_id, recipient, wrap) VALUES ($1, $2, $3)")
        .bind(account_id)
        .bind(recipient)
        .bind(wrap)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Whether `account_id` requires presence for critical operations (its server-side setting).
pub async fn requires_presence(conn: &mut AnyConnection, account_id: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT require_presence_for_critical AS required FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<i64, _>("required")? != 0,
        None => false,
    })
}

pub async fn set_requires_presence(
    conn: &mut AnyConnection,
    account_id: &str,
    required: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET require_presence_for_critical = $1 WHERE id = $2")
        .bind(i64::from(required))
        .bind(account_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// The account's Ed25519 public key, which certifies every device of the account.
/// From the read pool (routes) or inside a transaction (ops).
pub async fn sign_public<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    executor: E,
    account_id: &str,
) -> Result<Option<[u8; 32]>, sqlx::Error> {
    let Some(row) =
        sqlx::query("SELECT sign_public FROM accounts WHERE id = $1").bind(account_id).fetch_optional(executor).await?
    else {
        return Ok(None);
    };
    let bytes: Vec<u8> = row.try_get("sign_public")?;
    bytes.try_into().map(Some).map_err(|_| sqlx::Error::Decode("a stored account key is not 32 bytes".into()))
}

/// The account key as wrapped to the master device `device_id`.
pub async fn key_wrap(pool: &sqlx::AnyPool, account_id: &str, device_id: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query("SELECT wrap FROM account_key_wraps WHERE account_id = $1 AND recipient = $2")
        .bind(account_id)
        .bind(device_recipient(device_id))
        .fetch_optional(pool)
        .await?
        .map(|row| row.try_get("wrap"))
        .transpose()
}

/// The recipient name of a master device's wrap of the account key.
pub fn device_recipient(device_id: &str) -> String {
    format!("device:{device_id}")
}

/// The recipient name of the recovery key's wrap of the account key.
pub const RECOVERY_RECIPIENT: &str = "recovery";

/// Deletes the account key's wrap to `recipient`.
pub async fn delete_key_wrap(conn: &mut AnyConnection, account_id: &str, recipient: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM account_key_wraps WHERE account_id = $1 AND recipient = $2")
        .bind(account_id)
        .bind(recipient)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Marks one device of the account revoked; `false` when it is not the account's or was revoked
/// already.
pub async fn revoke_device(
    conn: &mut AnyConnection,
    account_id: &str,
    device_id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE devices SET revoked_at_ms = $1 WHERE id = $2 AND account_id = $3 AND revoked_at_ms IS NULL",
    )
    .bind(now)
    .bind(device_id)
    .bind(account_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// The account whose recovery key signs with `recovery_sign_public`.
pub async fn by_recovery_key(pool: &sqlx::AnyPool, recovery_sign_public: &[u8]) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT id FROM accounts WHERE recovery_sign_public = $1")
        .bind(recovery_sign_public.to_vec())
        .fetch_optional(pool)
        .await?
        .map(|row| row.try_get("id"))
        .transpose()
}

/// The account's recovery delay, in milliseconds. From the read pool or inside a transaction.
pub async fn recovery_delay_ms<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
    executor: E,
    account_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query("SELECT recovery_delay_ms FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_optional(executor)
        .await?
        .map(|row| row.try_get("recovery_delay_ms"))
        .transpose()
}

pub async fn set_recovery_delay_ms(
    conn: &mut AnyConnection,
    account_id: &str,
    delay_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET recovery_delay_ms = $1 WHERE id = $2")
        .bind(delay_ms)
        .bind(account_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// The account key as wrapped to the recovery key.
pub async fn recovery_wrap(pool: &sqlx::AnyPool, account_id: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query("SELECT wrap FROM account_key_wraps WHERE account_id = $1 AND recipient = $2")
        .bind(account_id)
        .bind(RECOVERY_RECIPIENT)
        .fetch_optional(pool)
        .await?
        .map(|row| row.try_get("wrap"))
        .transpose()
}

/// Replaces the recovery key: its wrap of the account key and its signing key.
pub async fn replace_recovery_key(
    conn: &mut AnyConnection,
    account_id: &str,
    wrap: &[u8],
    recovery_sign_public: &[u8],
) -> Result<(), sqlx::Error> {
    delete_key_wrap(conn, account_id, RECOVERY_RECIPIENT).await?;
    insert_key_wrap(conn, account_id, RECOVERY_RECIPIENT, wrap).await?;
    sqlx::query("UPDATE accounts SET recovery_sign_public = $1 WHERE id = $2")
        .bind(recovery_sign_public)
        .bind(account_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}
