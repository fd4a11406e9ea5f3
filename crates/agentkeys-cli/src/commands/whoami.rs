//! `agentkeys whoami`: the account, device and session in use, and where the session is stored.
//! Never prints the token.

use agentkeys_core::session::SessionStore as _;

use crate::context::Context;
use crate::error::CliError;
use crate::output::timestamp;

pub async fn whoami(ctx: &Context) -> Result<u8, CliError> {
    let (client, _) = ctx.client()?;
    let who = client.whoami().await?;
    let stored = ctx.store.describe(&ctx.session_id);
    ctx.out.json(&serde_json::json!({
        "account_id": who.account_id,
        "device_id": who.device_id,
        "device_label": who.device_label,
        "actor_kind": who.actor_kind,
        "session_id": who.session_id,
        "session_created_at_ms": who.session_created_at_ms,
        "server": client.base_url(),
        "session_store": stored,
        "recovery_pending": who.recovery_pending,
    }))?;
    ctx.out.line(format!(
        "Account:  {}\nDevice:   {} ({}, {})\nSession:  {} (since {})\nServer:   {}\nStored:   {}",
        who.account_id,
        who.device_id,
        who.device_label,
        who.actor_kind,
        who.session_id,
        timestamp(who.session_created_at_ms),
        client.base_url(),
        stored,
    ))?;
    if let Some(recovery) = &who.recovery_pending {
        // Loud, on stderr, whatever -q says: it may be a thief holding the recovery key.
        eprintln!(
            "\nWARNING: RECOVERY PENDING. A recovery of this account with its recovery key was opened at {} by a new \
             machine ({}); it can complete from {} and then has the account key.\nIf it is not yours, deny it now: \
             agentkeys deny {}\nThen rotate the recovery key: agentkeys recovery-key rotate",
            timestamp(recovery.created_at_ms),
            agentkeys_proto::names::escape_hidden(&recovery.label),
            timestamp(recovery.not_before_ms.unwrap_or(recovery.created_at_ms)),
            recovery.code,
        );
    }
    Ok(0)
}
