//! `agentkeys config get|set`: `biometric` in `$AGENTKEYS_HOME/config.toml` (this machine),
//! `require-presence` and `presence-attestation` on the server (the account). Weakening any is
//! itself a critical operation, shown and gated like the others; any change of the attestation
//! roots is, since a new list may admit what the old one refused.

use agentkeys_biometric::{CriticalOp, Policy};
use agentkeys_proto::types::AccountSettingsChange;

use crate::cli::{ConfigGetArgs, ConfigSetArgs};
use crate::config::{Config, ConfigFile};
use crate::context::Context;
use crate::error::CliError;

const REQUIRE_PRESENCE: &str = "require-presence";
pub const PRESENCE_ATTESTATION: &str = "presence-attestation";
pub const RECOVERY_DELAY: &str = "recovery-delay";

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

pub async fn get(ctx: &Context, args: ConfigGetArgs) -> Result<u8, CliError> {
    if args.key == RECOVERY_DELAY {
        let (client, _) = ctx.client()?;
        let settings = client.account_settings().await?;
        let delay_s = settings.recovery_delay_s;
        ctx.out.json(&serde_json::json!({ RECOVERY_DELAY: delay_s }))?;
        ctx.out.line(humantime::format_duration(std::time::Duration::from_secs(delay_s.max(0) as u64)).to_string())?;
        return Ok(0);
    }
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
    if args.key == PRESENCE_ATTESTATION {
        return set_presence_attestation(ctx, &args.value).await;
    }
    if args.key == RECOVERY_DELAY {
        return set_recovery_delay(ctx, &args.value).await;
    }
    let new = Policy::parse(&args.value).ok_or_else(|| {
        CliError::usage(format!("{:?} is not a presence policy", args.value), "use required, preferred or off")
    })?;
    let current = Config::load()?.biometric.unwrap_or(Policy::Preferred);
    if new < current {
        crate::presence::require_local(
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
        let op = CriticalOp::weaken_setting("the account's presence requirement", REQUIRE_PRESENCE, "on", "off");
        crate::presence::require(ctx, client, &op).await?
    } else {
        client
    };
    let settings = AccountSettingsChange { require_presence_for_critical: on };
    client.put_account_settings(&settings).await?;
    ctx.out.json(&settings)?;
    ctx.out.note(format!(
        "require-presence = {} (was {}){}",
        on_off(on),
        on_off(current),
        if on { ": the server now refuses critical operations made with --no-biometric" } else { "" }
    ));
    Ok(0)
}

/// How long a recovery with the recovery key waits before it can complete (at least an hour):
/// shortening it is critical, since the delay is what gives the owner time to deny a thief.
async fn set_recovery_delay(ctx: &Context, value: &str) -> Result<u8, CliError> {
    use agentkeys_proto::devices::{MAX_RECOVERY_DELAY_MS, MIN_RECOVERY_DELAY_MS};
    let delay = humantime::parse_duration(value).map_err(|e| {
        CliError::usage(format!("invalid recovery delay {value:?}: {e}"), "use a duration like 72h, 3d or 1w")
    })?;
    let delay_s = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
    if !(MIN_RECOVERY_DELAY_MS / 1000..=MAX_RECOVERY_DELAY_MS / 1000).contains(&delay_s) {
        return Err(CliError::usage(
            format!("a recovery delay of {value} is out of range"),
            "use at least 1h (the delay is what lets you deny a stolen recovery key) and at most 90d",
        ));
    }
    let (client, _) = ctx.client()?;
    let current = client.account_settings().await?.recovery_delay_s;
    let shown = |s: i64| humantime::format_duration(std::time::Duration::from_secs(s.max(0) as u64)).to_string();
    let client = if delay_s < current {
        let op = CriticalOp::weaken_setting("the recovery delay", RECOVERY_DELAY, &shown(current), &shown(delay_s));
        crate::presence::require(ctx, client, &op).await?
    } else {
        client
    };
    let request = agentkeys_proto::devices::RecoveryDelayRequest { delay_s: delay_s.unsigned_abs() };
    client.set_recovery_delay(&request).await?;
    ctx.out.json(&serde_json::json!({ RECOVERY_DELAY: delay_s }))?;
    ctx.out.note(format!(
        "recovery-delay = {} (was {}); a recovery already pending keeps the delay it was opened with",
        shown(delay_s),
        shown(current)
    ));
    Ok(0)
}

/// Yubico's FIDO U2F root (RSA-2048, "Yubico U2F Root CA Serial 457200631", SHA-256
/// 0fa1386f…2b092d42), to which YubiKey 5 attestation chains: `presence-attestation yubico`.
const YUBICO_ROOT: &[u8] = include_bytes!("../../assets/yubico-u2f-root-ca.pem");

/// The attestation roots enrollment is restricted to: the certificates of a PEM file, Yubico's
/// root, or `none` to lift the restriction. Keys already enrolled stay.
async fn set_presence_attestation(ctx: &Context, value: &str) -> Result<u8, CliError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let certificates: Vec<Vec<u8>> = if value == "none" {
        Vec::new()
    } else {
        let bad = |why: String| {
            CliError::usage(
                format!("cannot use {value:?} as attestation roots: {why}"),
                "pass a PEM file with one or more CA certificates (-----BEGIN CERTIFICATE-----), yubico, or none",
            )
        };
        let pem = match value {
            "yubico" => YUBICO_ROOT.to_vec(),
            path => std::fs::read(path).map_err(|e| bad(e.to_string()))?,
        };
        let certificates: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certificates.is_empty() {
            return Err(bad("it holds no certificate".to_owned()));
        }
        certificates
    };
    let (client, _) = ctx.client()?;
    let what = if certificates.is_empty() { "none (any authenticator)".to_owned() } else { value.to_owned() };
    let op = CriticalOp::weaken_setting(
        "the presence keys' attestation roots",
        PRESENCE_ATTESTATION,
        "the current list",
        &what,
    );
    let client = crate::presence::require(ctx, client, &op).await?;
    let request = agentkeys_proto::ceremony::AttestationRootsRequest {
        certificates: certificates.iter().map(agentkeys_proto::b64::encode).collect(),
    };
    client.set_attestation_roots(&request).await?;
    ctx.out.json(&serde_json::json!({ PRESENCE_ATTESTATION: request.certificates.len() }))?;
    ctx.out.note(if certificates.is_empty() {
        "presence-attestation = none: any authenticator may be enrolled".to_owned()
    } else {
        format!(
            "presence-attestation = {} root(s) from {value}: only authenticators whose attestation chains to one of them \
             may be enrolled (keys enrolled before stay)",
            certificates.len()
        )
    });
    Ok(0)
}
