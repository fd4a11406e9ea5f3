//! `store`, `read`, `list`, `rm`: the master's own vault. Values are sealed and opened here, on
//! this machine; the server only ever sees ciphertext.

use std::io::Read as _;

use agentkeys_biometric::CriticalOp;
use agentkeys_core::vault::Namespace;
use agentkeys_core::{ApiClient, OsRandom, vault};
use zeroize::Zeroizing;

use crate::cli::StoreArgs;
use crate::context::Context;
use crate::error::{CliError, exit};
use crate::output::{stdin_is_terminal, stdout_is_terminal, table, timestamp};

/// Gets the value to store from argv (warned), a file, the hidden prompt, or stdin.
fn value_to_store(ctx: &Context, args: &StoreArgs) -> Result<Zeroizing<Vec<u8>>, CliError> {
    if let Some(value) = &args.value {
        ctx.out.warn("a value given on the command line is saved in your shell history and visible to other users in `ps`; prefer the prompt or stdin");
        return Ok(Zeroizing::new(value.as_bytes().to_vec()));
    }
    if let Some(path) = &args.file {
        let bytes = std::fs::read(path).map_err(|e| {
            CliError::new(
                exit::ERROR,
                format!("cannot read {}: {e}", path.display()),
                "check the path and its permissions",
            )
        })?;
        return Ok(Zeroizing::new(bytes));
    }
    if stdin_is_terminal() {
        // Echo goes off before the prompt is shown, so nothing typed early is echoed; Ctrl-C
        // restores the terminal.
        let prompt = format!("Value for {} (input hidden): ", args.service);
        let typed =
            agentkeys_biometric::tty::Tty::open().and_then(|mut tty| tty.read_secret(&prompt)).map_err(|e| {
                CliError::new(
                    exit::ERROR,
                    format!("cannot read the value from the terminal: {e}"),
                    "type it again, or pipe it on stdin (or --file PATH) for long values",
                )
            })?;
        return Ok(Zeroizing::new(secrecy::ExposeSecret::expose_secret(&typed).as_bytes().to_vec()));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::new(exit::ERROR, format!("cannot read stdin: {e}"), "pipe the value on stdin"))?;
    // `echo "$KEY" | agentkeys store x` should store the key, not the key and a newline. Only a
    // single line of text loses its one trailing newline; multi-line and binary values are exact.
    if !args.exact && std::str::from_utf8(&bytes).is_ok() {
        let trailing = if bytes.ends_with(b"\r\n") {
            2
        } else if bytes.ends_with(b"\n") {
            1
        } else {
            0
        };
        let body_len = bytes.len() - trailing;
        if trailing > 0 && !bytes[..body_len].contains(&b'\n') {
            bytes.truncate(body_len);
        }
    }
    Ok(bytes)
}

/// The namespace `--agent` selects: the agent's id once resolved, or the vault.
pub async fn agent_id(ctx: &Context, client: &ApiClient, agent: Option<&str>) -> Result<Option<String>, CliError> {
    match agent {
        Some(name) => Ok(Some(ctx.resolve_agent(client, name).await?.agent_id)),
        None => Ok(None),
    }
}

fn namespace(agent_id: Option<&str>) -> Namespace<'_> {
    agent_id.map_or(Namespace::Vault, Namespace::Agent)
}

pub async fn store(ctx: &Context, args: StoreArgs) -> Result<u8, CliError> {
    vault::check_service(&args.service)?;
    let (client, session, verifier) = ctx.vault_client().await?;
    let agent = agent_id(ctx, &client, args.agent.as_deref()).await?;
    let value = value_to_store(ctx, &args)?;
    let namespace = namespace(agent.as_deref());
    // Marking or clearing is critical whether or not it changes anything: the command line says so.
    let client = match args.high_value {
        Some(high_value) => {
            let op = CriticalOp::change_high_value(&args.service, high_value);
            crate::presence::require(ctx, client, &op).await?
        }
        None => client,
    };
    let stored = vault::store_marked(
        &client,
        &session,
        &verifier,
        namespace,
        &args.service,
        &value,
        args.high_value,
        &mut OsRandom,
    )
    .await?;
    ctx.out.json(&stored)?;
    ctx.out.note(match args.high_value {
        Some(true) => format!(
            "Stored {} (version {}), high-value: each agent read waits for `agentkeys approve CODE`",
            stored.service, stored.version
        ),
        _ => format!("Stored {} (version {})", stored.service, stored.version),
    });
    Ok(0)
}

pub async fn read(ctx: &Context, service: &str, agent: Option<&str>) -> Result<u8, CliError> {
    vault::check_service(service)?;
    let (client, session, verifier) = ctx.vault_client().await?;
    let agent = agent_id(ctx, &client, agent).await?;
    let opened = vault::read_for(&client, &session, &verifier, namespace(agent.as_deref()), service, None).await?;
    if opened.high_value && session.agent_id.is_none() {
        crate::presence::require_local(ctx, &CriticalOp::read_high_value(service))?;
    }
    let value = opened.value;
    if ctx.out.json {
        let text = std::str::from_utf8(&value).ok();
        let encoded = Zeroizing::new(agentkeys_proto::b64::encode(value.as_slice()));
        let body = Zeroizing::new(
            serde_json::to_string_pretty(&serde_json::json!({
                "service": service,
                "value": text,
                "value_base64url": encoded.as_str(),
            }))
            .expect("JSON serializes"),
        );
        ctx.out.bytes(body.as_bytes())?;
        ctx.out.bytes(b"\n")?;
    } else {
        ctx.out.bytes(&value)?;
        // Byte-exact for pipes and files; a newline only so a terminal prompt does not run on.
        if stdout_is_terminal() && !value.ends_with(b"\n") {
            ctx.out.bytes(b"\n")?;
        }
    }
    Ok(0)
}

pub async fn list(ctx: &Context, agent: Option<&str>) -> Result<u8, CliError> {
    let (client, session, _) = ctx.vault_client().await?;
    let agent = agent_id(ctx, &client, agent).await?;
    let mut listed = client.list_credentials().await?;
    // The master sees every namespace; it lists the vault, or one agent's with --agent.
    if session.agent_id.is_none() {
        let wanted = namespace(agent.as_deref()).name();
        listed.credentials.retain(|c| c.namespace == wanted);
    }
    ctx.out.json(&listed)?;
    if listed.credentials.is_empty() {
        ctx.out.note("No credentials stored yet. Add one with `agentkeys store <service>`.");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = listed
        .credentials
        .iter()
        .map(|c| vec![c.service.clone(), c.version.to_string(), timestamp(c.updated_at_ms)])
        .collect();
    ctx.out.line(table(&["SERVICE", "VERSION", "UPDATED"], &rows))?;
    Ok(0)
}

pub async fn remove(ctx: &Context, service: &str, agent: Option<&str>) -> Result<u8, CliError> {
    vault::check_service(service)?;
    let (client, _) = ctx.client()?;
    let agent = agent_id(ctx, &client, agent).await?;
    let removed = client.delete_credential(service, agent.as_deref()).await?;
    ctx.out.json(&removed)?;
    ctx.out.note(format!("Removed {service}"));
    Ok(0)
}
