//! Master devices and recovery (PRODUCT.md §3): `devices`, `device join`, `device revoke`,
//! `recover` and `recovery-key rotate`.
//!
//! A joining machine makes its own device key and session token and pairs by code, as a daemon
//! does (kind `device`; the OTP covers the kind, so a daemon's code cannot be passed off as a
//! master device); the approving master certifies the key and wraps the account key to it. A
//! recovering machine proves it holds the recovery key by signing with the key derived from it,
//! waits out the account's recovery delay (any master device may deny it meanwhile), then opens
//! the account key from its recovery wrap and certifies itself with it.

use std::time::Duration;

use agentkeys_biometric::CriticalOp;
use agentkeys_core::OsRandom;
use agentkeys_core::account::{self, master_session};
use agentkeys_core::crypto::{KeyPair, RecoveryKey};
use agentkeys_core::pairing::{self, new_secret, secret_hash};
use agentkeys_core::session::{Session, SessionId, SessionStore as _};
use agentkeys_proto::agents::{PairingKind, RequestStatus};
use agentkeys_proto::devices::RecoveryStatusResponse;
use agentkeys_proto::ids;
use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

use crate::cli::{DeviceJoinArgs, RecoverArgs};
use crate::context::Context;
use crate::error::{CliError, exit};
use crate::output::{table, timestamp};

/// The slot a recovery waiting out its delay is kept in: its device key and token, sealed like
/// any session, until it completes.
const RECOVERY_SLOT: &str = "recovery";

pub async fn list(ctx: &Context) -> Result<u8, CliError> {
    let (client, _) = ctx.client()?;
    let listed = client.list_devices().await?;
    ctx.out.json(&listed)?;
    let rows: Vec<Vec<String>> = listed
        .devices
        .iter()
        .map(|d| {
            vec![
                format!("{}{}", d.device_id, if d.this_device { " (this one)" } else { "" }),
                agentkeys_proto::names::escape_hidden(&d.label).into_owned(),
                d.joined_by.as_str().to_owned(),
                timestamp(d.created_at_ms),
                d.last_seen_ms.map_or_else(|| "never".to_owned(), timestamp),
                d.revoked_at_ms.map_or_else(|| "live".to_owned(), |at| format!("revoked {}", timestamp(at))),
            ]
        })
        .collect();
    ctx.out.line(table(&["DEVICE", "LABEL", "JOINED BY", "CREATED", "LAST SEEN", "STATUS"], &rows))?;
    Ok(0)
}

fn check_label(label: &str) -> Result<(), CliError> {
    agentkeys_proto::names::validate_display_text(label, ids::DEVICE_LABEL_MAX).map_err(|why| {
        CliError::usage(
            format!("invalid --label: {why}"),
            format!("use 1 to {} visible characters, e.g. --label laptop", ids::DEVICE_LABEL_MAX),
        )
    })
}

/// Refuses to replace a session this slot already holds.
fn check_slot_free(ctx: &Context) -> Result<(), CliError> {
    if let Some(existing) = ctx.store.load(&ctx.session_id)? {
        return Err(CliError::new(
            exit::ERROR,
            format!(
                "this machine already has a '{}' session (account {}, device {})",
                ctx.session_id, existing.account_id, existing.device_id
            ),
            "it is a master device already; to join another account, use another slot: --session-id NAME",
        ));
    }
    Ok(())
}

/// `device join`: this machine asks to become a master device of an account; a master device of
/// it approves with `agentkeys approve CODE`, typing the OTP shown here.
pub async fn join(ctx: &Context, args: DeviceJoinArgs) -> Result<u8, CliError> {
    let label = args.label.unwrap_or_else(super::init::default_label);
    // A joining device's label travels in a pairing request, whose labels follow the name rule.
    agentkeys_proto::names::validate_service_name(&label).map_err(|why| {
        CliError::usage(
            format!("invalid --label {label:?}: {why}"),
            "use letters, digits, '.', '_' and '-', e.g. desktop",
        )
    })?;
    check_slot_free(ctx)?;
    let server = ctx.server_url(None);
    let client = ctx.anonymous_client(&server)?;
    let ask = pairing::Ask {
        kind: PairingKind::Device,
        label: label.clone(),
        scope: Vec::new(),
        timeout: Duration::from_secs(args.timeout),
    };
    let joined = pairing::join(&client, &ask, |event| match event {
        pairing::Event::Busy => {
            eprintln!("The server is busy with pairing requests; retrying until it takes this one…")
        }
        pairing::Event::Opened { code } => {
            eprintln!("Pair code: {code}");
            eprintln!(
                "On a master device of the account, run `agentkeys approve {code}`; once it has looked the code up, \
                 the OTP to type there shows here. Waiting (up to {}s)…",
                args.timeout
            );
        }
        pairing::Event::Claimed { code, otp, account_id } => {
            eprintln!("OTP: {otp}");
            eprintln!(
                "Type {otp} at `agentkeys approve {code}` on the master device (account {account_id}). A master that \
                 shows no such prompt, or computes another number, is not yours: deny it there."
            );
        }
    })
    .await?;
    let Some(answer) = joined.status.master.clone() else {
        return Err(CliError::new(
            exit::ERROR,
            "the server approved this join without the master session it makes",
            "check that --server points at an agentkeys-server of the same version",
        ));
    };
    let session = master_session(client.base_url(), &answer, joined.device, joined.token, &joined.account_sign_public)?;
    ctx.store.save(&ctx.session_id, &session)?;
    ctx.out.json(&serde_json::json!({
        "account_id": session.account_id,
        "device_id": session.device_id,
        "device_label": session.device_label,
        "server": session.server_url,
        "session_store": ctx.store.describe(&ctx.session_id),
    }))?;
    ctx.out.note(format!(
        "Joined account {} as master device {} ({}). Session saved in {}.\nEverything the first device can do, this \
         one can; `agentkeys devices` lists them.",
        session.account_id,
        session.device_label,
        session.device_id,
        ctx.store.describe(&ctx.session_id)
    ));
    Ok(0)
}

/// `device revoke <device>`: ends every session of another master device (by id or label).
pub async fn revoke(ctx: &Context, name: &str) -> Result<u8, CliError> {
    let (client, session) = ctx.client()?;
    let devices = client.list_devices().await?.devices;
    let found: Vec<_> = devices.iter().filter(|d| d.device_id == name || d.label == name).collect();
    let device = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(CliError::new(
                exit::NOT_FOUND,
                format!("no master device {name:?} (by id or label)"),
                "see the master devices with `agentkeys devices`",
            ));
        }
        _ => {
            return Err(CliError::usage(
                format!("{} master devices are labelled {name:?}", found.len()),
                "name the one to revoke by its id (dev_…), as `agentkeys devices` lists it",
            ));
        }
    };
    if device.device_id == session.device_id {
        return Err(CliError::usage(
            format!("{} is this machine's own device: a device does not revoke itself", device.device_id),
            "revoke it from another master device (`agentkeys device revoke ID` there); on a lost machine's behalf, \
             that is the point",
        ));
    }
    if let Some(at) = device.revoked_at_ms {
        return Err(CliError::new(
            exit::NOT_FOUND,
            format!("master device {} ({}) was revoked already, at {}", device.label, device.device_id, timestamp(at)),
            "nothing to do; `agentkeys devices` shows which devices are live",
        ));
    }
    let client =
        crate::presence::require(ctx, client, &CriticalOp::revoke_device(&device.label, &device.device_id)).await?;
    client.revoke_device(&device.device_id).await?;
    ctx.out.json(&serde_json::json!({ "revoked": device.device_id }))?;
    ctx.out.note(format!(
        "Revoked master device {} ({}): its sessions ended on every replica. It still holds the account key it was \
         given; if the machine was stolen, rotate what matters (`agentkeys recovery-key rotate`, and the credentials \
         themselves at their providers).",
        device.label, device.device_id
    ));
    Ok(0)
}

/// Reads the recovery key from a hidden prompt, or a line on stdin; never argv. A typo is
/// caught here by the key's checksum, before anything is sent.
fn read_recovery_key() -> Result<RecoveryKey, CliError> {
    use std::io::BufRead as _;
    let text: Zeroizing<String> = if crate::output::stdin_is_terminal() {
        let typed = agentkeys_biometric::tty::Tty::open()
            .and_then(|mut tty| tty.read_secret("Recovery key (AKRK-…, input hidden): "))
            .map_err(|e| {
                CliError::new(exit::ERROR, format!("cannot read the recovery key: {e}"), "type it, or pipe it on stdin")
            })?;
        Zeroizing::new(typed.expose_secret().to_owned())
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            CliError::new(exit::ERROR, format!("cannot read the recovery key from stdin: {e}"), "pipe it on stdin")
        })?;
        line
    };
    RecoveryKey::parse(&text).map_err(|e| {
        CliError::usage(
            format!("that is not a valid recovery key: {e}"),
            "type the key exactly as `agentkeys init` printed it (AKRK-…); case and dashes do not matter",
        )
    })
}

fn recovery_slot() -> SessionId {
    SessionId::parse(RECOVERY_SLOT).expect("a valid slot name")
}

/// `recover`: opens a recovery (or, with `--complete`, completes the one this machine opened).
pub async fn recover(ctx: &Context, args: RecoverArgs) -> Result<u8, CliError> {
    check_slot_free(ctx)?;
    let pending = ctx.store.load(&recovery_slot())?;
    match (pending, args.complete) {
        (Some(pending), _) => {
            let recovery = read_recovery_key()?;
            wait_and_complete(ctx, &args, pending, &recovery).await
        }
        (None, true) => Err(CliError::new(
            exit::NOT_FOUND,
            "this machine has no recovery to complete",
            "open one with `agentkeys recover` (on the machine that is to become the master device)",
        )),
        (None, false) => open(ctx, &args).await,
    }
}

async fn open(ctx: &Context, args: &RecoverArgs) -> Result<u8, CliError> {
    let label = args.label.clone().unwrap_or_else(super::init::default_label);
    check_label(&label)?;
    let recovery = read_recovery_key()?;
    crate::presence::require_local(ctx, &CriticalOp::open_recovery())?;
    let server = ctx.server_url(None);
    let client = ctx.anonymous_client(&server)?;
    let device = KeyPair::generate(&mut OsRandom);
    let token = new_secret("akt_");
    let token_hash = secret_hash(&token);
    let opened = client.open_recovery(&account::open_recovery_request(&recovery, &device, &label, &token_hash)).await?;
    let pending = Session {
        server_url: client.base_url().to_owned(),
        account_id: opened.account_id.clone(),
        device_id: ids::device_id(&device.public().sign),
        device_label: label,
        // The recovery's id: until it completes, this slot is a request, not a session.
        session_id: opened.recovery_id.clone(),
        token,
        device,
        account: None,
        agent_id: None,
        account_sign_public: None,
        link_id: None,
    };
    ctx.store.save(&recovery_slot(), &pending)?;
    ctx.out.json(&opened)?;
    ctx.out.note(format!(
        "Recovery {} of account {} opened. Every master device of the account now sees it and can deny it; it can \
         complete from {} (the account's recovery delay).\nThen run `agentkeys recover --complete` here{}.",
        opened.code,
        opened.account_id,
        timestamp(opened.not_before_ms),
        if opened.presence_keys > 0 {
            format!(
                " (add --replace-presence-keys if the account's {} presence key(s) were lost too)",
                opened.presence_keys
            )
        } else {
            String::new()
        }
    ));
    if args.wait {
        return wait_and_complete(ctx, args, pending, &recovery).await;
    }
    Ok(0)
}

/// Waits (with `--wait`) until the delay has passed, then completes.
async fn wait_and_complete(
    ctx: &Context,
    args: &RecoverArgs,
    pending: Session,
    recovery: &RecoveryKey,
) -> Result<u8, CliError> {
    let client = ctx.anonymous_client(&pending.server_url)?;
    let status = loop {
        let status = client.recovery_status(&pending.session_id, pending.token.expose_secret()).await?;
        let waiting = status.status == RequestStatus::Pending && status.recovery_wrap.is_none();
        if !(waiting && args.wait) {
            break status;
        }
        let left_ms = (status.not_before_ms - agentkeys_core::client::unix_now_s() * 1000).clamp(1000, 60_000);
        tokio::time::sleep(Duration::from_millis(left_ms as u64)).await;
    };
    complete(ctx, args, pending, recovery, status).await
}

async fn complete(
    ctx: &Context,
    args: &RecoverArgs,
    pending: Session,
    recovery: &RecoveryKey,
    status: RecoveryStatusResponse,
) -> Result<u8, CliError> {
    let client = ctx.anonymous_client(&pending.server_url)?;
    let answer = match status.status {
        // Completed before (this machine was interrupted after sending it): finish saving.
        RequestStatus::Approved => status.master.clone(),
        RequestStatus::Pending if status.recovery_wrap.is_some() => {
            crate::presence::require_local(ctx, &CriticalOp::complete_recovery(&status.account_id))?;
            let request = account::complete_recovery_request(
                recovery,
                &status,
                &pending.device,
                &pending.device_label,
                args.replace_presence_keys,
                &mut OsRandom,
            )?;
            client.complete_recovery(&pending.session_id, pending.token.expose_secret(), &request).await?;
            client.recovery_status(&pending.session_id, pending.token.expose_secret()).await?.master
        }
        // Still in its delay, denied or expired: the server says which, and what to do.
        _ => {
            let refused = agentkeys_proto::devices::CompleteRecoveryRequest {
                device_certificate: String::new(),
                account_key_wrap: String::new(),
                replace_presence_keys: false,
            };
            client.complete_recovery(&pending.session_id, pending.token.expose_secret(), &refused).await?;
            None
        }
    };
    let Some(answer) = answer else {
        return Err(CliError::new(
            exit::ERROR,
            "the server completed the recovery without the master session it makes",
            "check that --server points at an agentkeys-server of the same version",
        ));
    };
    let account_sign_public =
        status.account_sign_public.as_deref().and_then(agentkeys_proto::b64::decode_array::<32>).ok_or_else(|| {
            CliError::new(exit::ERROR, "the server named no account key for this recovery", "run it again")
        })?;
    let token = SecretString::from(pending.token.expose_secret().to_owned());
    let session = master_session(&pending.server_url, &answer, pending.device, token, &account_sign_public)?;
    ctx.store.save(&ctx.session_id, &session)?;
    // The pending slot is spent: its key and token are the new session's now.
    let _ = std::fs::remove_dir_all(ctx.store.dir(&recovery_slot()));
    ctx.out.json(&serde_json::json!({
        "account_id": session.account_id,
        "device_id": session.device_id,
        "device_label": session.device_label,
        "presence_keys_removed": args.replace_presence_keys && status.presence_keys > 0,
    }))?;
    ctx.out.note(format!(
        "Recovered account {}: this machine is master device {} ({}). Session saved in {}.{}\nNext: rotate the \
         recovery key (`agentkeys recovery-key rotate`) and revoke lost devices (`agentkeys devices`, `agentkeys \
         device revoke`).",
        session.account_id,
        session.device_label,
        session.device_id,
        ctx.store.describe(&ctx.session_id),
        if args.replace_presence_keys && status.presence_keys > 0 {
            format!(
                "\nThe account's {} presence key(s) were removed: enroll a new one with `agentkeys presence enroll`.",
                status.presence_keys
            )
        } else if status.presence_keys > 0 {
            format!(
                "\nThe account has {} presence key(s); critical operations need one. Lost them too? Recover again \
                 with --replace-presence-keys.",
                status.presence_keys
            )
        } else {
            String::new()
        }
    ));
    Ok(0)
}

/// `recovery-key rotate`: a new recovery key, printed once; the old one stops working (and a
/// recovery opened with it is denied).
pub async fn rotate_recovery_key(ctx: &Context) -> Result<u8, CliError> {
    let (client, session) = ctx.client()?;
    let account = agentkeys_core::vault::account_key(&session)?;
    let (recovery, request) = account::rotate_recovery_key(account, &mut OsRandom)
        .map_err(|e| CliError::new(exit::ERROR, format!("cannot make a recovery key: {e}"), "retry"))?;
    let client = crate::presence::require(ctx, client, &CriticalOp::rotate_recovery_key()).await?;
    client.rotate_recovery_key(&request).await?;
    let text = recovery.to_text();
    ctx.out.json(&serde_json::json!({ "account_id": session.account_id, "recovery_key": text.as_str() }))?;
    ctx.out.line(format!(
        "New recovery key for account {} — shown once. Keep it offline; the old one no longer works:\n\n    {}\n",
        session.account_id,
        text.as_str()
    ))?;
    Ok(0)
}
