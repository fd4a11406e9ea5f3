//! A daemon redeems a link code: its device joins the agent, and the data keys the code carried
//! arrive re-wrapped to the device's own key.

use agentkeys_proto::ErrorCode;
use agentkeys_proto::agents::{AgentStatus, Tier};
use sqlx::AnyConnection;

use super::queries;
use crate::domains::agents::ops::{NewAgentDevice, bind_device};
use crate::domains::agents::queries as agents;
use crate::domains::credentials::queries::{self as credentials, Wrap};
use crate::engine::op::{BoxFuture, Ctx, Maintenance, Op, OpError};
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct RedeemLink {
    pub link_id: String,
    pub device: NewAgentDevice,
    /// The link's wraps, re-wrapped to the new device: exactly what the link carries.
    pub wraps: Vec<Wrap>,
}

/// The agent a device joined, as the daemon must save its session.
#[derive(Debug, Clone)]
pub struct Bound {
    pub account_id: String,
    pub agent_id: String,
    pub label: String,
    pub tier: Tier,
    pub scope: Vec<String>,
}

impl Op for RedeemLink {
    type Output = Bound;

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<Bound, OpError> {
        let gone = || {
            ApiError::new(
                ErrorCode::Declined,
                "this link code was already used, has expired, or was cancelled",
                "ask the account owner for a new one: `agentkeys agent create LABEL`",
            )
        };
        let Some(link) = queries::state(conn, &self.link_id).await? else { return Err(gone().into()) };
        if link.redeemed
            || link.expires_at_ms < cx.now_ms
            || !matches!(link.status, AgentStatus::Pending | AgentStatus::Active)
        {
            return Err(gone().into());
        }
        let carried = queries::wrapped_versions(conn, &self.link_id).await?;
        let rewrapped: std::collections::BTreeSet<_> =
            self.wraps.iter().map(|w| (w.namespace.clone(), w.service.clone(), w.version)).collect();
        if !rewrapped.is_subset(&carried) {
            return Err(
                ApiError::bad_request("a re-wrapped key is for a credential the link code did not carry").into()
            );
        }
        if rewrapped != carried || rewrapped.len() != self.wraps.len() {
            // A credential stored after the daemon looked the code up: it looks up again.
            return Err(ApiError::version_conflict(
                format!(
                    "the link code carries {} keys and {} came back re-wrapped: it received a newer one while \
                     being redeemed",
                    carried.len(),
                    self.wraps.len()
                ),
                "redeem again: the daemon looks the code up and re-wraps every key it carries",
                None,
            )
            .into());
        }
        bind_device(conn, &link.account_id, &link.agent_id, &link.label, &self.device, cx.now_ms).await?;
        for wrap in &self.wraps {
            let wrap = Wrap { recipient: self.device.device_id.clone(), ..wrap.clone() };
            credentials::upsert_wrap(conn, &link.account_id, &wrap).await?;
        }
        queries::mark_redeemed(conn, &self.link_id, cx.now_ms).await?;
        agents::set_status(conn, &link.account_id, &link.agent_id, AgentStatus::Active).await?;
        let scope = agents::scope_of(conn, &link.agent_id).await?;
        Ok(Bound { account_id: link.account_id, agent_id: link.agent_id, label: link.label, tier: link.tier, scope })
    }
}

/// How long a link code is kept after it expired (or was used): the agent's devices carry what
/// they need of it in their certificates.
pub const KEEP_AFTER_EXPIRY_MS: i64 = 60 * 60 * 1000;

/// Deletes link codes an hour past their expiry, with whatever they still carried.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prune;

impl Maintenance for Prune {
    fn prune<'a>(&'a self, conn: &'a mut AnyConnection, now: i64) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(queries::delete_expired(conn, now - KEEP_AFTER_EXPIRY_MS))
    }
}
