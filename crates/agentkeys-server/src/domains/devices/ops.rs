//! Revoking a master device: its sessions end in the op's transaction (so the next request of
//! any of them fails on every replica), the device is marked revoked, and the account key's wrap
//! to it is deleted.

use agentkeys_proto::ErrorCode;
use agentkeys_proto::critical::Critical;
use agentkeys_proto::types::ActorKind;
use sqlx::AnyConnection;

use super::queries;
use crate::domains::accounts::queries as accounts;
use crate::engine::op::{CriticalFor, Ctx, Op, OpError};
use crate::error::ApiError;
use crate::sessions;

/// Revokes `device_id`, a master device of the account other than the caller's.
#[derive(Debug, Clone)]
pub struct RevokeDevice {
    pub account_id: String,
    pub device_id: String,
}

impl Op for RevokeDevice {
    type Output = String;

    fn critical(&self) -> Option<CriticalFor<'_>> {
        Some(CriticalFor { op: Critical::DeviceRevoke, account_id: &self.account_id })
    }

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<String, OpError> {
        let Some(device) = queries::state(conn, &self.account_id, &self.device_id).await? else {
            return Err(ApiError::not_found(
                format!("this account has no device {}", self.device_id),
                "see the master devices with `agentkeys devices`",
            )
            .into());
        };
        if device.kind != ActorKind::Master {
            return Err(ApiError::new(
                ErrorCode::Denied,
                format!("device {} belongs to an agent, not to the account owner", self.device_id),
                "revoke the agent instead: `agentkeys revoke <agent>`",
            )
            .into());
        }
        if device.revoked_at_ms.is_some() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("master device {} ({}) was revoked already", device.label, self.device_id),
                "nothing to do; `agentkeys devices` shows which devices are live",
            )
            .into());
        }
        sessions::revoke_for_device(conn, &self.device_id, cx.now_ms).await?;
        accounts::revoke_device(conn, &self.account_id, &self.device_id, cx.now_ms).await?;
        accounts::delete_key_wrap(conn, &self.account_id, &accounts::device_recipient(&self.device_id)).await?;
        Ok(device.label)
    }
}
