//! `agentkeys config get|set`: `biometric` in `$AGENTKEYS_HOME/config.toml` (this machine) and
//! `require-presence` on the server (the account). Weakening either is itself a critical
//! operation, shown and gated like the others.

use agentkeys_biometric::{CriticalOp, Policy};
use agentkeys_proto::types::AccountSettings;

use crate::cli::{ConfigGetArgs, ConfigSetArgs};
use crate::config::{Config, ConfigFile};
use crate::context::Context;
use crate::error::CliError;

const REQUIRE_PRESENCE: &str = "require-presence";

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

pub async fn get(ctx: &Context, args: ConfigGetArgs) -> Result<u8, CliError> {
    if args.key == REQUIRE_PRESENCE {
        let (client, _) = ctx.client()?;
        let settings = client.account_settings().await?;
        ctx.out.json(&settings)?;
        ctx.out.line(on_off(settings.require_presence_for_critical))?;
        return Ok(0);
    }
    let (policy, source) = crate::presence::policy(ctx)?;
    ctx.out.json(&serde_json::json!({"biometric": policy.as_str(), "source": source}))?;
    ctx.out.line(format!("{} (from {source})", policy.as_str()))?;
    Ok(0)
}

pub async fn set(ctx: &Context, args: ConfigSetArgs) -> Result<u8, CliError> {
    if args.key == REQUIRE_PRESENCE {
        return set_require_presence(ctx, &args.value).await;
    }
    let new = Policy::parse(&args.value).ok_or_else(|| {
        CliError::usage(format!("{:?} is not a presence policy", args.value), "use required, preferred or off")
    })?;
    let current = Config::load()?.biometric.unwrap_or(Policy::Preferred);
    if new < current {
        crate::presence::require(
            ctx,
            &CriticalOp::weaken_setting("biometric policy", "biometric", current.as_str(), new.as_str()),
        )?;
    }
    let mut file = ConfigFile::read()?;
    file.biometric = Some(new.as_str().to_owned());
    file.write()?;
    ctx.out.json(&serde_json::json!({"biometric": new.as_str()}))?;
    ctx.out.note(format!("biometric = {} (was {})", new.as_str(), current.as_str()));
    Ok(0)
}

/// The account's requirement, on the server: turning it off is gated here and refused by the
/// server too when the requirement holds and presence was skipped.
async fn set_require_presence(ctx: &Context, value: &str) -> Result<u8, CliError> {
    let on = match value {
        "on" => true,
        "off" => false,
        other => return Err(CliError::usage(format!("{other:?} is not on or off"), "use on or off")),
    };
    let (client, _) = ctx.client()?;
    let current = client.account_settings().await?.require_presence_for_critical;
    let client = if current && !on {
        let presence = crate::presence::require(
            ctx,
            &CriticalOp::weaken_setting("the account's presence requirement", REQUIRE_PRESENCE, "on", "off"),
        )?;
        client.with_presence(presence.as_str())
    } else {
        client
    };
    client.put_account_settings(&AccountSettings { require_presence_for_critical: on }).await?;
    ctx.out.json(&AccountSettings { require_presence_for_critical: on })?;
    ctx.out.note(format!(
        "require-presence = {} (was {}){}",
        on_off(on),
        on_off(current),
        if on { ": the server now refuses critical operations made with --no-biometric" } else { "" }
    ));
    Ok(0)
}
