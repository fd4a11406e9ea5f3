//! `agentkeys presence enroll|list|remove` (PRODUCT.md §2 "Presence key", §4): WebAuthn keys
//! the server verifies. Enrolling is critical (this machine's check for the first key, an
//! enrolled key's assertion for later ones) and completes on the server's page with
//! `navigator.credentials.create`; removing is critical too, and removing the last key turns
//! the server's requirement off.

use agentkeys_biometric::CriticalOp;
use agentkeys_core::ApiClient;
use agentkeys_proto::ceremony::{EnrollRequest, KeyKind, PresenceKey};

use crate::ceremony::BrowserCeremony;
use crate::cli::PresenceEnrollArgs;
use crate::context::Context;
use crate::error::{CliError, exit};
use crate::output::{table, timestamp};

/// The kind a bare `presence enroll` asks for: where a platform authenticator is the usual one
/// (Touch ID, Windows Hello), that; a security key elsewhere.
fn default_kind() -> KeyKind {
    if cfg!(any(target_os = "macos", windows)) { KeyKind::Platform } else { KeyKind::Roaming }
}

/// `roaming-1`, `roaming-2`, …: the first not taken.
fn default_name(kind: KeyKind, keys: &[PresenceKey]) -> String {
    (1..)
        .map(|n| format!("{}-{n}", kind.as_str()))
        .find(|name| keys.iter().all(|k| &k.name != name))
        .unwrap_or_default()
}

pub async fn enroll(ctx: &Context, args: PresenceEnrollArgs) -> Result<u8, CliError> {
    let kind = match (args.roaming, args.platform) {
        (true, _) => KeyKind::Roaming,
        (_, true) => KeyKind::Platform,
        _ => default_kind(),
    };
    let key = enroll_key(ctx, kind, args.name).await?;
    ctx.out.json(&key)?;
    Ok(0)
}

/// Enrolls one key and says so; shared with `init --roaming-authenticator`.
pub async fn enroll_key(ctx: &Context, kind: KeyKind, name: Option<String>) -> Result<PresenceKey, CliError> {
    let (client, _) = ctx.client()?;
    let keys = client.list_presence_keys().await?.keys;
    let name = name.unwrap_or_else(|| default_name(kind, &keys));
    if keys.iter().any(|k| k.name == name) {
        return Err(CliError::new(
            exit::USAGE,
            format!("there is already a presence key named '{name}'"),
            "pick another --name, or `agentkeys presence remove` the old one first",
        ));
    }
    let op = CriticalOp::enroll_presence_key(&name, kind.as_str());
    let client = crate::presence::require(ctx, client, &op).await?;
    let started = client.enroll_presence_key(&EnrollRequest { name: name.clone(), kind }).await?;
    let enrollment = BrowserCeremony::for_operation(
        ctx,
        format!("Enroll {} '{name}' as this account's presence key", describe_kind(kind)),
    );
    let status = enrollment.run(&client, &started).await?;
    let key = status.key.ok_or_else(|| {
        CliError::new(
            exit::ERROR,
            "the server completed the enrollment but names no key",
            "run `agentkeys presence list`",
        )
    })?;
    ctx.out.note(format!(
        "Enrolled presence key '{}' ({}{}). From now on the server requires it for every critical operation.",
        key.name,
        key.kind.as_str(),
        key.model.as_deref().map(|m| format!(", {m}")).unwrap_or_default()
    ));
    if keys.is_empty() {
        ctx.out.note(
            "Enroll a second key as a spare (`agentkeys presence enroll --name spare`): with every key lost, only the \
             recovery key gets the account back.",
        );
    }
    Ok(key)
}

fn describe_kind(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Roaming => "a security key",
        KeyKind::Platform => "this device's platform authenticator",
    }
}

pub async fn list(ctx: &Context) -> Result<u8, CliError> {
    let (client, _) = ctx.client()?;
    let keys = client.list_presence_keys().await?;
    ctx.out.json(&keys)?;
    if ctx.out.json {
        return Ok(0);
    }
    if keys.keys.is_empty() {
        ctx.out.note(
            "No presence keys: critical operations use this machine's checks. Enroll one with `agentkeys presence \
             enroll`.",
        );
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = keys
        .keys
        .iter()
        .map(|k| {
            vec![
                k.name.clone(),
                k.kind.as_str().to_owned(),
                k.model.clone().unwrap_or_else(|| "unknown model".to_owned()),
                k.aaguid.clone(),
                k.attestation_trust.clone(),
                timestamp(k.created_at_ms),
                k.last_used_at_ms.map_or_else(|| "never".to_owned(), timestamp),
                k.sign_count.to_string(),
                k.id.clone(),
            ]
        })
        .collect();
    ctx.out.line(table(
        &["NAME", "KIND", "MODEL", "AAGUID", "ATTESTATION", "CREATED", "LAST USED", "SIGN COUNT", "ID"],
        &rows,
    ))?;
    Ok(0)
}

pub async fn remove(ctx: &Context, name: &str) -> Result<u8, CliError> {
    let (client, _) = ctx.client()?;
    let keys = client.list_presence_keys().await?.keys;
    let Some(key) = keys.iter().find(|k| k.name == name || k.id == name) else {
        return Err(not_found(name, &keys));
    };
    let last = keys.len() == 1;
    let client: ApiClient =
        crate::presence::require(ctx, client, &CriticalOp::remove_presence_key(&key.name, last)).await?;
    client.remove_presence_key(&key.id).await?;
    ctx.out.json(&serde_json::json!({"removed": key.id, "name": key.name, "keys_left": keys.len() - 1}))?;
    ctx.out.note(if last {
        format!(
            "Removed presence key '{}', the last one: the server no longer requires a presence key, and critical \
             operations use this machine's checks again.",
            key.name
        )
    } else {
        format!("Removed presence key '{}'.", key.name)
    });
    Ok(0)
}

fn not_found(name: &str, keys: &[PresenceKey]) -> CliError {
    let known: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    CliError::new(
        exit::NOT_FOUND,
        format!("no presence key named '{name}' (by name or id)"),
        if known.is_empty() {
            "the account has no presence keys".to_owned()
        } else {
            format!("enrolled: {}; see `agentkeys presence list`", known.join(", "))
        },
    )
}
