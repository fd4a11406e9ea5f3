//! `agentkeys config get|set`: settings in `$AGENTKEYS_HOME/config.toml`. Moving the presence
//! policy to something weaker is itself a critical operation, shown and gated like the others.

use agentkeys_biometric::{CriticalOp, Policy};

use crate::cli::{ConfigGetArgs, ConfigSetArgs};
use crate::config::{Config, ConfigFile};
use crate::context::Context;
use crate::error::CliError;

pub fn get(ctx: &Context, args: ConfigGetArgs) -> Result<u8, CliError> {
    debug_assert_eq!(args.key, "biometric");
    let (policy, source) = crate::presence::policy(ctx)?;
    ctx.out.json(&serde_json::json!({"biometric": policy.as_str(), "source": source}))?;
    ctx.out.line(format!("{} (from {source})", policy.as_str()))?;
    Ok(0)
}

pub fn set(ctx: &Context, args: ConfigSetArgs) -> Result<u8, CliError> {
    debug_assert_eq!(args.key, "biometric");
    let new = Policy::parse(&args.value).ok_or_else(|| {
        CliError::usage(format!("{:?} is not a presence policy", args.value), "use required, preferred or off")
    })?;
    let current = Config::load(ctx)?.biometric.unwrap_or(Policy::Preferred);
    if new < current {
        crate::presence::require(ctx, &CriticalOp::weaken_setting("biometric policy", current.as_str(), new.as_str()))?;
    }
    let mut file = ConfigFile::read()?;
    file.biometric = Some(new.as_str().to_owned());
    file.write()?;
    ctx.out.json(&serde_json::json!({"biometric": new.as_str()}))?;
    ctx.out.note(format!("biometric = {} (was {})", new.as_str(), current.as_str()));
    Ok(0)
}
