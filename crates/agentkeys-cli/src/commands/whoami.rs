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
    Ok(0)
}
