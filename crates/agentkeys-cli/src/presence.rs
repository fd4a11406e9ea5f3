//! Presence gating of the master's critical operations (PRODUCT.md §5). With a presence key
//! enrolled on the account, the server's ceremony ([`crate::ceremony`]) is the presence and the
//! local methods are not asked. Without one: the policy from `--no-biometric`,
//! `AGENTKEYS_BIOMETRIC` or `biometric` in config.toml (in that order), the `--yes` rule, and the
//! gate of `agentkeys-biometric` with the terminal fallback (the session passphrase when the
//! master has one, else a typed confirmation).

use std::time::Duration;

use agentkeys_biometric::terminal::Terminal;
use agentkeys_biometric::{CriticalOp, Policy, PresenceError, PresenceGate, PresenceMethod};
use agentkeys_core::client::{BoxFuture, Presence, PresenceOnDemand};
use agentkeys_core::session::SessionId;
use agentkeys_core::{ApiClient, ClientError};
use agentkeys_proto::ErrorDetail;
use agentkeys_proto::critical::Critical;

use crate::config::Config;
use crate::context::Context;
use crate::error::{CliError, exit};

/// How long a presence check waits for the human (`AGENTKEYS_PRESENCE_TIMEOUT`, seconds).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const TIMEOUT_ENV: &str = "AGENTKEYS_PRESENCE_TIMEOUT";

/// The policy in force and where it came from (for messages).
pub fn policy(ctx: &Context) -> Result<(Policy, &'static str), CliError> {
    if ctx.global.no_biometric {
        return Ok((Policy::Off, "--no-biometric"));
    }
    if let Some(text) = std::env::var(Policy::ENV).ok().filter(|t| !t.trim().is_empty()) {
        let policy = Policy::parse(&text).ok_or_else(|| {
            CliError::usage(
                format!("{}={text:?} is not a presence policy", Policy::ENV),
                "use required, preferred or off",
            )
        })?;
        return Ok((policy, "AGENTKEYS_BIOMETRIC"));
    }
    Ok(match Config::load()?.biometric {
        Some(policy) => (policy, "config.toml"),
        None => (Policy::Preferred, "the default"),
    })
}

fn timeout() -> Result<Duration, CliError> {
    match std::env::var(TIMEOUT_ENV) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(text) => {
            text.trim().parse::<u64>().ok().filter(|s| (1..=600).contains(s)).map(Duration::from_secs).ok_or_else(
                || CliError::usage(format!("{TIMEOUT_ENV}={text:?} is not a number of seconds"), "use 1 to 600"),
            )
        }
    }
}

/// Refuses `--yes` without `--no-biometric` up front, before a critical command does any work
/// (a look-up, a 30 s wait for a pairing's reveal) it would refuse at the gate anyway.
pub fn refuse_bare_yes(ctx: &Context, op: Critical) -> Result<(), CliError> {
    if ctx.global.yes && policy(ctx)?.0 != Policy::Off {
        return Err(bare_yes(op));
    }
    Ok(())
}

fn bare_yes(command: Critical) -> CliError {
    CliError::usage(
        format!("`{command}` is a critical operation: --yes answers y/N questions, it does not show presence"),
        "drop --yes to confirm in person, or add --no-biometric to skip the check (audited as skipped)",
    )
}

/// Asks for the human's presence before `op` and returns the client that carries it to the
/// server: a ceremony per request when the account has presence keys, else the local method's
/// name for the audit. `Err` means nothing may happen.
pub async fn require(ctx: &Context, client: ApiClient, op: &CriticalOp) -> Result<ApiClient, CliError> {
    let presence = shown(ctx, &client, op).await?;
    Ok(client.with_presence(presence))
}

/// How presence for `op` is shown: see [`require`].
async fn shown(ctx: &Context, client: &ApiClient, op: &CriticalOp) -> Result<Presence, CliError> {
    let has_keys = !client.list_presence_keys().await?.keys.is_empty();
    shown_with(ctx, op, has_keys)
}

/// [`shown`], once it is known whether the account has presence keys.
fn shown_with(ctx: &Context, op: &CriticalOp, has_keys: bool) -> Result<Presence, CliError> {
    if ctx.global.yes && policy(ctx)?.0 != Policy::Off {
        return Err(bare_yes(op.kind));
    }
    if !has_keys {
        let method = require_local(ctx, op)?;
        return Ok(Presence::Local(method.as_str()));
    }
    if ctx.global.no_biometric {
        ctx.out.warn(
            "--no-biometric skips only this machine's checks: the account has presence keys, and the server requires \
             one of them",
        );
    }
    Ok(Presence::Ceremony(std::sync::Arc::new(crate::ceremony::BrowserCeremony::new(ctx, op))))
}

/// Asks for presence when the server says a `require_presence` rule of the account's policy
/// matched a request this command sent without it (every master client has one). Such a rule's
/// presence cannot be skipped, so with presence checks off here the server's refusal stands,
/// with the fix.
#[derive(Debug)]
pub struct RulePresence(pub Context);

impl PresenceOnDemand for RulePresence {
    fn presence_for<'a>(
        &'a self,
        client: &'a ApiClient,
        request: &'a str,
        demand: &'a ErrorDetail,
    ) -> BoxFuture<'a, Result<Presence, ClientError>> {
        Box::pin(async move {
            let ctx = &self.0;
            let (policy, source) = policy(ctx).map_err(declined)?;
            let has_keys = !client.list_presence_keys().await?.keys.is_empty();
            if policy == Policy::Off && !has_keys {
                let mut detail = Box::new(demand.clone());
                detail.hint = format!(
                    "presence checks are off here ({source}), and the rule's presence cannot be skipped: run it again \
                     without --no-biometric or AGENTKEYS_BIOMETRIC=off, and confirm in person"
                );
                return Err(ClientError::Api { status: 403, detail });
            }
            let rule = demand.rule.as_deref().and_then(agentkeys_proto::policy::parse_rule_ref);
            let name = rule.and_then(|(_, name)| name).unwrap_or("?");
            let op = CriticalOp::policy_rule(name, request, &demand.message);
            shown_with(ctx, &op, has_keys).map_err(declined)
        })
    }
}

fn declined(error: CliError) -> ClientError {
    ClientError::Presence { message: error.message, hint: error.hint.unwrap_or_default() }
}

/// Asks for presence on this machine alone, for what the server does not see (`init --force`,
/// this machine's biometric policy) and for accounts without presence keys. Returns how
/// presence was shown, which the caller sends to the server for its audit.
pub fn require_local(ctx: &Context, op: &CriticalOp) -> Result<PresenceMethod, CliError> {
    let (policy, source) = policy(ctx)?;
    if policy == Policy::Off {
        let consequence = if op.kind.reaches_the_server() {
            " The audit records it as skipped, and an account that requires presence refuses it."
        } else {
            ""
        };
        ctx.out.warn(format!("presence check skipped ({source}) for: {}.{consequence}", op.text));
        // Skipping presence skips no question: y/N still asks, and --yes answers it.
        crate::prompt::confirm(ctx.global.yes, &format!("`{}`", op.kind), &format!("{}?", op.text))?;
        return Ok(PresenceMethod::Skipped);
    }
    if ctx.global.yes {
        return Err(bare_yes(op.kind));
    }
    let master = SessionId::master();
    let terminal = if ctx.session_id == master && ctx.store.is_passphrase_sealed(&master) {
        let store = ctx.store.clone();
        Terminal::passphrase(Box::new(move |passphrase| {
            store.check_passphrase(&SessionId::master(), passphrase).map_err(|e| e.to_string())
        }))
    } else {
        Terminal::typed()
    };
    let gate = PresenceGate::system(policy, timeout()?).with_terminal(terminal);
    match gate.require_presence(op) {
        Ok(presence) => {
            ctx.out.note(format!("Presence shown ({}).", presence.method.as_str()));
            Ok(presence.method)
        }
        Err(error) => Err(refused(op, &error, policy)),
    }
}

fn refused(op: &CriticalOp, error: &PresenceError, policy: Policy) -> CliError {
    let fix = match error {
        PresenceError::Unavailable(_) if policy == Policy::Required => {
            "enrol a finger (fprintd-enroll) or install the polkit action, or set AGENTKEYS_BIOMETRIC=preferred to \
             allow the terminal"
        }
        PresenceError::Unavailable(_) => {
            "run it in a terminal, or add --no-biometric --yes to skip the check (audited as skipped)"
        }
        PresenceError::Failed(_) => "check the fingerprint reader and fprintd, or retry",
        _ => "run it again and confirm",
    };
    CliError::new(exit::DECLINED, format!("{error}: `{}` did not happen, nothing was changed", op.kind), fix)
}
