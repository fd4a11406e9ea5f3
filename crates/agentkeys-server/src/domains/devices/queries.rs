//! The statements about master devices: the list with last use, and one device's state.

use agentkeys_proto::devices::{DeviceOrigin, MasterDevice};
use agentkeys_proto::types::ActorKind;
use sqlx::{AnyConnection, AnyPool, Row as _};

use crate::db::parse_stored;

/// The account's master devices, oldest first, each with its last audited request.
pub async fn list(pool: &AnyPool, account_id: &str, this_device: &str) -> Result<Vec<MasterDevice>, sqlx::Error> {
    sqlx::query(
        "SELECT d.id, d.label, d.created_at_ms, d.revoked_at_ms, d.origin, \
                (SELECT MAX(a.ts_ms) FROM audit_log a WHERE a.account_id = d.account_id AND a.actor = d.id) AS last_seen \
         FROM devices d WHERE d.account_id = $1 AND d.kind = 'master' ORDER BY d.created_at_ms, d.id",
    )
    .bind(account_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        let id: String = row.try_get("id")?;
        let origin: Option<String> = row.try_get("origin")?;
        Ok(MasterDevice {
            this_device: id == this_device,
            device_id: id,
            label: row.try_get("label")?,
            created_at_ms: row.try_get("created_at_ms")?,
            last_seen_ms: row.try_get("last_seen")?,
            revoked_at_ms: row.try_get("revoked_at_ms")?,
            joined_by: parse_stored("devices.origin", origin.as_deref().unwrap_or(""), DeviceOrigin::parse)?,
        })
    })
    .collect()
}

/// A device of the account: its kind and when it was revoked.
#[derive(Debug, Clone)]
pub struct DeviceState {
    pub kind: ActorKind,
    pub label: String,
    pub revoked_at_ms: Option<i64>,
}

pub async fn state(
    conn: &mut AnyConnection,
    account_id: &str,
    device_id: &str,
) -> Result<Option<DeviceState>, sqlx::Error> {
    sqlx::query("SELECT kind, label, revoked_at_ms FROM devices WHERE id = $1 AND account_id = $2")
        .bind(device_id)
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| {
            Ok(DeviceState {
                kind: parse_stored("devices.kind", &row.try_get::<String, _>("kind")?, ActorKind::parse)?,
                label: row.try_get("label")?,
                revoked_at_ms: row.try_get("revoked_at_ms")?,
            })
        })
        .transpose()
}
