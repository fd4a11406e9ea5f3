//! The master's agent commands: `agents`, `agent create|upgrade`, `link --alias`, `scope`,
//! `revoke`, `teardown`. Keys are wrapped here, on the master; the server stores what it is sent.

use agentkeys_biometric::CriticalOp;
use agentkeys_core::session::{SessionId, SessionStore as _};
use agentkeys_core::{OsRandom, agents, vault};
use agentkeys_proto::agents::{AgentSummary, AliasRequest, TierChangeRequest};

use crate::cli::{AgentCreateArgs, AgentUpgradeArgs, LinkArgs, ScopeArgs};
use crate::context::Context;
use crate::error::CliError;
use crate::output::{table, timestamp};

fn check_services(services: &[String]) -> Result<Vec<String>, CliError> {
    let mut out: Vec<String> = Vec::with_capacity(services.len());
    for service in services.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        vault::check_service(service)?;
        if !out.iter().any(|s| s == service) {
            out.push(service.to_owned());
        }
    }
    Ok(out)
}

fn scope_text(scope: &[String]) -> String {
    if scope.is_empty() { "(none)".to_owned() } else { scope.join(",") }
}

pub async fn list(ctx: &Context) -> Result<u8, CliError> {
    let (client, _) = ctx.client()?;
    let listed = client.list_agents().await?;
    ctx.out.json(&listed)?;
    if listed.agents.is_empty() {
        ctx.out.note(
            "No agents yet. Pair one with `agentkeys-daemon pair --label NAME`, or `agentkeys agent create NAME`.",
        );
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = listed
        .agents
        .iter()
        .map(|a| {
            vec![
                a.agent_id.clone(),
                a.label.clone(),
                if a.aliases.is_empty() { "-".into() } else { a.aliases.join(",") },
                a.tier.to_string(),
                scope_text(&a.scope),
                a.last_seen_ms.map(timestamp).unwrap_or_else(|| "never".into()),
                a.status.to_string(),
            ]
        })
        .collect();
    ctx.out.line(table(&["ID", "LABEL", "ALIASES", "TIER", "SCOPE", "LAST SEEN", "STATUS"], &rows))?;
    Ok(0)
}

pub async fn create(ctx: &Context, args: AgentCreateArgs) -> Result<u8, CliError> {
    vault::check_service(&args.label).map_err(|_| {
        CliError::usage(
            format!("invalid agent label {:?}", args.label),
            "use letters, digits, '.', '_' and '-', e.g. build-bot",
        )
    })?;
    let scope = check_services(&args.scope)?;
    let (client, session, verifier) = ctx.vault_client().await?;
    let op = CriticalOp::create_agent(&args.label, args.tier.as_str(), &scope);
    let client = crate::presence::require(ctx, client, &op).await?;
    let (created, code) =
        agents::create_agent(&client, &session, &verifier, &args.label, &scope, args.tier, &mut OsRandom).await?;
    let code_text = code.to_text();
    if ctx.out.json {
        ctx.out.json(&serde_json::json!({
            "agent_id": created.agent_id,
            "link_id": created.link_id,
            "expires_at_ms": created.expires_at_ms,
            "link_code": code_text.as_str(),
        }))?;
    } else {
        ctx.out.note(format!(
            "Created agent {} ({}). The link code below works once, until {}; treat it like a password.\n\
             On the agent's machine: agentkeys-daemon link <code>",
            args.label,
            created.agent_id,
            timestamp(created.expires_at_ms)
        ));
        ctx.out.line(code_text.as_str())?;
    }
    Ok(0)
}

pub async fn upgrade(ctx: &Context, args: AgentUpgradeArgs) -> Result<u8, CliError> {
    let (client, _) = ctx.client()?;
    let agent = ctx.resolve_agent(&client, &args.agent).await?;
    let op = CriticalOp::upgrade_agent(&agent.label, agent.tier.as_str(), args.tier.as_str());
    let client = crate::presence::require(ctx, client, &op).await?;
    client.change_tier(&agent.agent_id, &TierChangeRequest { tier: args.tier }).await?;
    ctx.out.json(&serde_json::json!({"agent_id": agent.agent_id, "tier": args.tier}))?;
    ctx.out.note(format!("Agent {} is now at tier {}", agent.label, args.tier));
    Ok(0)
}

pub async fn link(ctx: &Context, args: LinkArgs) -> Result<u8, CliError> {
    vault::check_service(&args.alias).map_err(|_| {
        CliError::usage(format!("invalid alias {:?}", args.alias), "use letters, digits, '.', '_' and '-'")
    })?;
    let (client, _) = ctx.client()?;
    let agent = ctx.resolve_agent(&client, &args.agent).await?;
    client.add_alias(&agent.agent_id, &AliasRequest { alias: args.alias.clone() }).await?;
    ctx.out.json(&serde_json::json!({"agent_id": agent.agent_id, "alias": args.alias}))?;
    ctx.out.note(format!("{} now also answers to {}", agent.label, args.alias));
    Ok(0)
}

fn print_scope(ctx: &Context, agent: &AgentSummary, scope: &[String]) -> Result<(), CliError> {
    ctx.out.json(&serde_json::json!({"agent_id": agent.agent_id, "label": agent.label, "scope": scope}))?;
    if !ctx.out.json {
        if scope.is_empty() {
            ctx.out.note(format!("{} has no services in scope", agent.label));
        }
        for service in scope {
            ctx.out.line(service)?;
        }
    }
    Ok(())
}

pub async fn scope(ctx: &Context, args: ScopeArgs) -> Result<u8, CliError> {
    let (client, session, verifier) = ctx.vault_client().await?;
    let agent = ctx.resolve_agent(&client, &args.agent).await?;
    if args.list {
        print_scope(ctx, &agent, &agent.scope)?;
        return Ok(0);
    }
    let (add, remove) = match &args.set {
        Some(set) => {
            let set = check_services(set)?;
            let add: Vec<String> = set.iter().filter(|s| !agent.scope.contains(s)).cloned().collect();
            let remove: Vec<String> = agent.scope.iter().filter(|s| !set.contains(s)).cloned().collect();
            (add, remove)
        }
        None => (check_services(&args.add)?, check_services(&args.remove)?),
    };
    let client = if add.is_empty() {
        client
    } else {
        crate::presence::require(ctx, client, &CriticalOp::widen_scope(&agent.label, &add)).await?
    };
    let mut scope: Vec<String> = agent.scope.iter().filter(|s| !remove.contains(s)).cloned().collect();
    scope.extend(add.iter().filter(|s| !scope.contains(s)).cloned().collect::<Vec<_>>());
    scope.sort();
    // `--set` names the whole scope: all of it is this master's grant, not only what it added.
    let granted = if args.set.is_some() { &scope } else { &add };
    agents::change_scope(&client, &session, &verifier, &agent, &add, &remove, granted, &mut OsRandom).await?;
    print_scope(ctx, &agent, &scope)?;
    Ok(0)
}

pub async fn revoke(ctx: &Context, name: &str, teardown: bool) -> Result<u8, CliError> {
    let (client, session) = ctx.client()?;
    let agent = ctx.resolve_agent(&client, name).await?;
    let op = if teardown { CriticalOp::teardown(&agent.label) } else { CriticalOp::revoke(&agent.label) };
    let client = crate::presence::require(ctx, client, &op).await?;
    // Said in the account's signed log, in the same transaction: a server that brings one of
    // them back, or drops the statement, gets no key from any master of this account.
    agents::end_agent(&client, &session, &ctx.verifier(), &agent, teardown).await?;
    let status = if teardown { "torn_down" } else { "revoked" };
    let cleared = clear_local_daemon_session(ctx, &agent.agent_id);
    ctx.out
        .json(&serde_json::json!({"agent_id": agent.agent_id, "status": status, "local_session_cleared": cleared}))?;
    ctx.out.note(if teardown {
        format!("Tore down {}: its sessions are over and its private credentials are deleted", agent.label)
    } else {
        format!("Revoked {}: its next request fails on every server replica", agent.label)
    });
    if cleared {
        ctx.out.note(format!(
            "Removed its session slot on this machine ({})",
            SessionId::daemon(&agent.agent_id).map(|id| id.to_string()).unwrap_or_default()
        ));
    }
    Ok(0)
}

/// A revoked agent's session is dead weight on this machine (when its daemon shares this home):
/// the slot and its keychain entry go. The server-side revoke already happened, so a failure here
/// is a warning, not an error.
fn clear_local_daemon_session(ctx: &Context, agent_id: &str) -> bool {
    let Ok(slot) = SessionId::daemon(agent_id) else { return false };
    match ctx.store.clear(&slot) {
        Ok(cleared) => cleared,
        Err(error) => {
            ctx.out.warn(format!("the agent is revoked, but its session slot here could not be removed: {error}"));
            false
        }
    }
}
