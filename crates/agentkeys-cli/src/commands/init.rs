//! `agentkeys init`: create the account and this master device, save the session, show the
//! recovery key once. Idempotent without `--force`.

use std::sync::Arc;

use agentkeys_core::OsRandom;
use agentkeys_core::account::create_account;
use agentkeys_core::session::{Session, SessionError, SessionStore as _};
use agentkeys_proto::ceremony::{KeyKind, PresenceKey};
use agentkeys_proto::{ErrorCode, ids};

use agentkeys_biometric::CriticalOp;

use crate::cli::InitArgs;
use crate::context::Context;
use crate::error::{CliError, exit};

pub(super) fn default_label() -> String {
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy().into_owned();
    if host.is_empty() { "master".to_owned() } else { host.chars().take(ids::DEVICE_LABEL_MAX).collect() }
}

pub async fn init(ctx: &Context, args: InitArgs) -> Result<u8, CliError> {
    // A passphrase-sealed slot being replaced is not opened: its passphrase may be the very
    // thing that was forgotten.
    let sealed_away = args.force && ctx.store.is_passphrase_sealed(&ctx.session_id);
    let existing = match if sealed_away { Ok(None) } else { ctx.store.load(&ctx.session_id) } {
        Ok(session) => session,
        Err(SessionError::PassphraseCancelled) => return Err(SessionError::PassphraseCancelled.into()),
        Err(error) if args.force => {
            ctx.out.warn(format!("replacing an unreadable session: {error}"));
            None
        }
        Err(error) => return Err(error.into()),
    };
    let existing = match existing {
        Some(session) if !args.force => return already_initialized(ctx, Arc::new(session)).await,
        other => other,
    };
    // Replacing a session abandons its account here: critical, like approve and revoke.
    if args.force {
        let account = existing.as_ref().map(|s| s.account_id.as_str());
        crate::presence::require_local(ctx, &CriticalOp::replace_account(ctx.session_id.as_str(), account))?;
    }
    let label = args.label.unwrap_or_else(default_label);
    if let Err(why) = agentkeys_proto::names::validate_display_text(&label, ids::DEVICE_LABEL_MAX) {
        return Err(CliError::usage(
            format!("invalid --label: {why}"),
            format!("use 1 to {} visible characters, e.g. --label laptop", ids::DEVICE_LABEL_MAX),
        ));
    }
    // Asked before the account exists, so a cancelled prompt leaves nothing behind.
    let passphrase = args.passphrase.then(|| crate::prompt::new_passphrase(&ctx.session_id)).transpose()?;
    let server = ctx.server_url(existing.as_ref());
    let created = create_account(&ctx.anonymous_client(&server)?, &label, &mut OsRandom).await?;
    match &passphrase {
        Some(passphrase) => ctx.store.save_with_passphrase(&ctx.session_id, &created.session, passphrase)?,
        // A fresh key whatever sealed the old session, so nothing of it is needed (or asked for).
        None => ctx.store.replace(&ctx.session_id, &created.session)?,
    }
    // A new account: nothing of the old slot's memory applies, and every version it will hold is
    // signed from the first.
    ctx.verifier().start_fresh();
    let session = &created.session;
    let recovery = created.recovery_key.to_text();
    ctx.out.line(format!(
        "Initialized account {} on {}\nThis device: {} ({})\nSession saved in {}\n\n\
         Recovery key — shown once. Keep it offline (password manager or paper); with it the account can be\n\
         recovered if this device is lost, and without it it cannot:\n\n    {}\n",
        session.account_id,
        session.server_url,
        session.device_id,
        session.device_label,
        ctx.store.describe(&ctx.session_id),
        recovery.as_str()
    ))?;
    let presence_key = if args.roaming_authenticator {
        Some(super::presence_keys::enroll_key(ctx, KeyKind::Roaming, None).await?)
    } else {
        offer_security_key(ctx).await?
    };
    ctx.out.json(&serde_json::json!({
        "account_id": session.account_id,
        "device_id": session.device_id,
        "device_label": session.device_label,
        "server": session.server_url,
        "session_store": ctx.store.describe(&ctx.session_id),
        "recovery_key": recovery.as_str(),
        "presence_key": presence_key,
    }))?;
    Ok(0)
}

/// A plain `init` with a FIDO security key plugged in offers to enroll it (asked on a terminal,
/// said otherwise).
async fn offer_security_key(ctx: &Context) -> Result<Option<PresenceKey>, CliError> {
    let devices = agentkeys_biometric::fido_hid::fido_devices(std::path::Path::new("/sys"));
    let Some(device) = devices.first() else { return Ok(None) };
    let name = device.name.clone().unwrap_or_else(|| device.hidraw.clone());
    let offer = format!("A FIDO security key is plugged in ({name}). Enroll it as this account's presence key?");
    if ctx.out.json || ctx.global.yes || !crate::output::stdin_is_terminal() {
        ctx.out.note(format!("{offer} Run `agentkeys presence enroll --roaming`."));
        return Ok(None);
    }
    if crate::prompt::confirm(false, "enrolling the security key", &offer).is_err() {
        ctx.out.note("Not enrolled; `agentkeys presence enroll --roaming` does it later.");
        return Ok(None);
    }
    super::presence_keys::enroll_key(ctx, KeyKind::Roaming, None).await.map(Some)
}

/// With a session and no `--force`: confirm it still works, and say so.
async fn already_initialized(ctx: &Context, session: Arc<Session>) -> Result<u8, CliError> {
    let client = ctx.client_for(session.clone())?;
    let who = client.whoami().await.map_err(|error| match error.code() {
        Some(ErrorCode::Unauthenticated | ErrorCode::SessionInvalid) => CliError::new(
            exit::SESSION,
            format!("the saved session for {} is not valid on {}", session.account_id, client.base_url()),
            "check --server; if this server's database was reset, `agentkeys init --force` starts a new, empty \
                 account (the old one stays reachable only with its recovery key)",
        ),
        _ => error.into(),
    })?;
    ctx.out.line(format!("Already initialized as {}", who.account_id))?;
    ctx.out.json(
        &serde_json::json!({ "already_initialized": true, "account_id": who.account_id, "device_id": who.device_id }),
    )?;
    Ok(0)
}
