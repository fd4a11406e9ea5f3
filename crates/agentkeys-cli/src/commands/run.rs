//! `agentkeys run`: fetch and open the named credentials, then run the command with them in its
//! environment (see [`crate::child`] for signals, masking and exit status).

use std::collections::HashSet;

use agentkeys_core::vault;
use zeroize::Zeroizing;

use crate::child::{self, ChildSpec};
use crate::cli::RunArgs;
use crate::context::Context;
use crate::error::CliError;

/// Parses `VAR=service`, checking both halves.
fn parse_binding(spec: &str) -> Result<(String, String), CliError> {
    let bad = |why: &str| {
        CliError::usage(
            format!("invalid --env {spec:?}: {why}"),
            "write --env VAR=service, e.g. --env OPENAI_API_KEY=openai",
        )
    };
    let (var, service) = spec.split_once('=').ok_or_else(|| bad("expected VAR=service"))?;
    let var_ok = var.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !var_ok {
        return Err(bad("the variable name must match [A-Za-z_][A-Za-z0-9_]*"));
    }
    vault::check_service(service)?;
    Ok((var.to_owned(), service.to_owned()))
}

pub async fn run(ctx: &Context, args: RunArgs) -> Result<u8, CliError> {
    let mut bindings = Vec::new();
    let mut seen = HashSet::new();
    for spec in &args.env {
        let (var, service) = parse_binding(spec)?;
        if !seen.insert(var.clone()) {
            return Err(CliError::usage(format!("--env {var} is given twice"), "bind each variable once"));
        }
        bindings.push((var, service));
    }
    let mut env: Vec<(String, Zeroizing<Vec<u8>>)> = Vec::with_capacity(bindings.len());
    if !bindings.is_empty() {
        let (client, session) = ctx.client()?;
        for (var, service) in bindings {
            env.push((var, vault::read(&client, &session, &service).await?));
        }
    }
    child::run(ChildSpec { argv: args.command, env, mask: !args.no_mask })
}
