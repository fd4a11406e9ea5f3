//! `agentkeys run`: fetch and open the named credentials, then run the command with them in its
//! environment (see [`crate::child`] for signals, masking and exit status).

use agentkeys_core::vault;
use zeroize::Zeroizing;

use crate::cli::RunArgs;
use crate::context::Context;
use crate::error::CliError;
use agentkeys_core::child::{self, ChildSpec};

pub async fn run(ctx: &Context, args: RunArgs) -> Result<u8, CliError> {
    let bindings = child::parse_bindings(&args.env)?;
    let mut env: Vec<(String, Zeroizing<Vec<u8>>)> = Vec::with_capacity(bindings.len());
    if !bindings.is_empty() {
        let (client, session) = ctx.client()?;
        let agent = super::vault::agent_id(ctx, &client, args.agent.as_deref()).await?;
        let namespace = agent.as_deref().map_or(vault::Namespace::Vault, vault::Namespace::Agent);
        for (var, service) in bindings {
            env.push((var, vault::read(&client, &session, namespace, &service).await?));
        }
    }
    Ok(child::run(ChildSpec { argv: args.command, env, mask: !args.no_mask })?)
}
