//! `agentkeys policy show|set|test|explain`. The policy is checked here with the same crate the
//! server evaluates it with, so `set` lists every problem before anything is sent and `test`
//! decides exactly as the server would; the server checks it again and decides what is critical.

use std::path::Path;

use agentkeys_biometric::CriticalOp;
use agentkeys_policy::Policy;
use agentkeys_policy::cases::{self, KnownAgent};
use agentkeys_policy::change::compare;
use agentkeys_proto::policy::SetPolicyRequest;

use crate::context::Context;
use crate::error::{CliError, exit};
use crate::output::timestamp;

pub async fn show(ctx: &Context, version: Option<u64>) -> Result<u8, CliError> {
    let (client, _) = ctx.client()?;
    let policy = client.get_policy(version).await?;
    ctx.out.json(&policy)?;
    match (policy.version, policy.created_at_ms) {
        (0, _) | (_, None) => ctx.out.note("no policy is set (version 0): scope and tier decide everything"),
        (version, Some(at)) => ctx.out.note(format!(
            "policy version {version}, set {} by device {}",
            timestamp(at),
            policy.created_by.as_deref().unwrap_or("?")
        )),
    }
    if !policy.text.is_empty() {
        ctx.out.line(policy.text.trim_end())?;
    }
    Ok(0)
}

fn read_text(path: &Path, what: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| {
        CliError::new(
            exit::ERROR,
            format!("cannot read the {what} {}: {e}", path.display()),
            "check the path; the file is TOML text",
        )
    })
}

fn parse_policy(text: &str, path: &Path) -> Result<Policy, CliError> {
    Policy::parse(text).map_err(|problems| {
        CliError::new(
            exit::ERROR,
            format!("{} is not a valid policy:\n  - {}", path.display(), problems.0.join("\n  - ")),
            "fix each problem listed; README \"Policy\" describes every field",
        )
    })
}

pub async fn set(ctx: &Context, file: &Path) -> Result<u8, CliError> {
    let text = read_text(file, "policy")?;
    let new = parse_policy(&text, file)?;
    let (client, _) = ctx.client()?;
    let current = client.get_policy(None).await?;
    let old = Policy::parse(&current.text).map_err(|problems| {
        CliError::new(
            exit::ERROR,
            format!("the server's policy version {} does not parse here: {problems}", current.version),
            "update agentkeys: the server may know rules this version does not",
        )
    })?;
    let changes = compare(&old, &new);
    for name in &changes.added {
        ctx.out.note(format!("+ rule {name}"));
    }
    for name in &changes.removed {
        ctx.out.note(format!("- rule {name}"));
    }
    for name in &changes.changed {
        ctx.out.note(format!("~ rule {name}"));
    }
    if changes.is_empty() {
        ctx.out.note("no rule changes");
    }
    let client = if changes.weakens.is_empty() {
        client
    } else {
        ctx.out.warn(format!("this weakens the policy: it {}", changes.weakens.join(", ")));
        crate::presence::require(ctx, client, &CriticalOp::weaken_policy(current.version, &changes.weakens)).await?
    };
    let set = client.set_policy(&SetPolicyRequest { text, base_version: current.version }).await?;
    ctx.out.json(&set)?;
    ctx.out.note(format!("policy version {} set ({} rules)", set.version, new.rules().len()));
    Ok(0)
}

pub async fn test(ctx: &Context, cases_file: &Path, policy_file: Option<&Path>) -> Result<u8, CliError> {
    let cases_text = read_text(cases_file, "cases file")?;
    let now = jiff::Timestamp::now();
    let cases = cases::parse(&cases_text, now).map_err(|problems| {
        CliError::new(
            exit::ERROR,
            format!("{} is not a valid cases file:\n  - {}", cases_file.display(), problems.0.join("\n  - ")),
            "each [[case]] has action and expect, and optionally agent, service, at (RFC 3339), uses and rule",
        )
    })?;
    // The agents are known by their names on the account when there is one to ask.
    let (policy, agents) = match policy_file {
        Some(path) => {
            let agents = match ctx.client() {
                Ok((client, _)) => client.list_agents().await.map(|list| list.agents).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            (parse_policy(&read_text(path, "policy")?, path)?, agents)
        }
        None => {
            let (client, _) = ctx.client()?;
            let current = client.get_policy(None).await?;
            let policy = Policy::parse(&current.text).map_err(|problems| {
                CliError::new(
                    exit::ERROR,
                    format!("the server's policy does not parse: {problems}"),
                    "update agentkeys",
                )
            })?;
            (policy, client.list_agents().await?.agents)
        }
    };
    let resolve = |name: &str| {
        agents
            .iter()
            .find(|a| a.agent_id == name || a.label == name || a.aliases.iter().any(|alias| alias == name))
            .map(|a| KnownAgent { id: a.agent_id.clone(), label: a.label.clone(), aliases: a.aliases.clone() })
            .unwrap_or_else(|| KnownAgent { id: name.to_owned(), label: name.to_owned(), aliases: Vec::new() })
    };
    let mismatches = cases::run(&policy, &cases, resolve);
    ctx.out.json(&serde_json::json!({
        "cases": cases.len(),
        "mismatches": mismatches.iter().map(|m| serde_json::json!({
            "case": m.case, "expected": m.expected, "got": m.got,
        })).collect::<Vec<_>>(),
    }))?;
    for mismatch in &mismatches {
        ctx.out.line(format!("FAIL {}: expected {}, got {}", mismatch.case, mismatch.expected, mismatch.got))?;
    }
    ctx.out.line(format!(
        "{} cases, {} passed, {} failed",
        cases.len(),
        cases.len() - mismatches.len(),
        mismatches.len()
    ))?;
    Ok(if mismatches.is_empty() { 0 } else { exit::ERROR })
}

pub async fn explain(ctx: &Context, seq: i64) -> Result<u8, CliError> {
    let (client, _) = ctx.client()?;
    let explained = client.explain(seq).await?;
    ctx.out.json(&explained)?;
    let what = match &explained.service {
        Some(service) => format!("{} of '{service}'", explained.action),
        None => explained.action.clone(),
    };
    let head =
        format!("row {} ({what}, {}, {})", explained.seq, explained.outcome.as_str(), timestamp(explained.ts_ms));
    match (&explained.rule, &explained.rule_text) {
        (Some(rule), text) => {
            ctx.out
                .line(format!("{head} was decided by rule {rule} of policy version {}", explained.policy_version))?;
            if let Some(text) = text {
                ctx.out.line(text.trim_end())?;
            }
        }
        (None, _) => ctx.out.line(format!(
            "{head}: no rule decided it; scope and tier did (policy version {} was in force)",
            explained.policy_version
        ))?,
    }
    Ok(0)
}
