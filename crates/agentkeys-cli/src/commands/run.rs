//! `agentkeys run`: fetch and open the named credentials, then run the command with them in its
//! environment (see [`agentkeys_core::child`] for signals, masking and exit status). The values go
//! straight into protected memory ([`agentkeys_core::secret_mem`]); only the child assembles its
//! environment. With an agent session (`--session-id daemon-…`) whose `serve` daemon is running,
//! the command runs through that daemon and this process never holds a value.

use std::sync::Arc;

use agentkeys_biometric::CriticalOp;
use agentkeys_core::child::{self, ChildSpec};
use agentkeys_core::exec::SecretEnv;
use agentkeys_core::secret_mem::SecretMemory;
use agentkeys_core::session::DAEMON_SESSION_PREFIX;
use agentkeys_core::{daemon_client, vault};

use crate::cli::RunArgs;
use crate::context::Context;
use crate::error::CliError;

pub async fn run(ctx: &Context, args: RunArgs) -> Result<u8, CliError> {
    let bindings = child::parse_bindings(&args.env)?;
    if ctx.session_id.as_str().starts_with(DAEMON_SESSION_PREFIX) && args.agent.is_none() {
        let socket = daemon_client::socket_path(&ctx.session_id, None)?;
        if let Some(stream) = daemon_client::connect(&socket) {
            let mask = !args.no_mask;
            return tokio::task::spawn_blocking(move || {
                daemon_client::run(stream, &args.command, &bindings, (mask, None))
            })
            .await
            .map_err(|e| CliError::new(1, format!("the run task failed: {e}"), "retry"))?;
        }
    }
    let mut env = SecretEnv::new();
    if !bindings.is_empty() {
        let (client, session, verifier) = ctx.vault_client().await?;
        let agent = super::vault::agent_id(ctx, &client, args.agent.as_deref()).await?;
        let namespace = agent.as_deref().map_or(vault::Namespace::Vault, vault::Namespace::Agent);
        let mut high_value = Vec::new();
        for (var, service) in bindings {
            let opened = vault::read_for(&client, &session, &verifier, namespace, &service, None).await?;
            if opened.high_value && session.agent_id.is_none() && !high_value.contains(&service) {
                high_value.push(service);
            }
            let value = SecretMemory::copy_of(&opened.value).map_err(vault::VaultError::SecretMemory)?;
            env.push(var, Arc::new(value));
        }
        // One question for every high-value credential of the command, before it starts.
        if !high_value.is_empty() {
            crate::presence::require_local(ctx, &CriticalOp::read_high_value(&high_value.join(", ")))?;
        }
    }
    let spec = ChildSpec { argv: args.command, env, mask: !args.no_mask };
    Ok(tokio::task::spawn_blocking(move || child::run(spec))
        .await
        .map_err(|e| CliError::new(1, format!("the run task failed: {e}"), "retry"))??)
}
