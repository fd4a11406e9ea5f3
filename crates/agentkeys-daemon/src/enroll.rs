//! Joining an agent: `pair` (a pair code the master approves, comparing an OTP), `recover` (the
//! same, standing in for an existing agent on a replacement machine) and `link` (a link code the
//! master minted). Either way the device key is born here and never leaves, the
//! session token is generated here and only its hash is sent, and the session is saved as
//! `daemon-<agent id>`.

use std::io::BufRead as _;
use std::time::Duration;

use agentkeys_core::crypto::{self, KeyPair, WrapLabel};
use agentkeys_core::error::{CommandError, exit};
use agentkeys_core::pairing::{self, new_secret};
use agentkeys_core::session::{Session, SessionId, SessionStore as _};
use agentkeys_core::{ClientError, OsRandom, agents::LinkCode, vault};
use agentkeys_proto::agents::{AgentSessionResponse, DeviceWrap, PairingKind, RedeemLinkRequest, redeem_payload};
use agentkeys_proto::{b64, ids};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::cli::{LinkArgs, PairArgs, RecoverArgs};
use crate::context::Context;

fn check_label(label: &str) -> Result<(), CommandError> {
    vault::check_service(label).map_err(|_| {
        CommandError::usage(
            format!("invalid agent label {label:?}"),
            "use letters, digits, '.', '_' and '-', e.g. build-bot",
        )
    })
}

/// How the new session trusts its account: the account signing key it pinned end to end, and
/// the link code it joined by (if it did).
struct Pinned {
    account_sign_public: [u8; 32],
    link_id: Option<String>,
}

/// Saves the new agent session and says where.
fn save(
    ctx: &Context,
    server_url: &str,
    device: KeyPair,
    token: SecretString,
    joined: &AgentSessionResponse,
    pinned: Pinned,
) -> Result<SessionId, CommandError> {
    if joined.device_id != ids::device_id(&device.public().sign) {
        return Err(CommandError::new(
            exit::ERROR,
            format!("the server answered for device {}, which is not this machine's key", joined.device_id),
            "check that --server points at a genuine agentkeys-server",
        ));
    }
    if joined.account_id != ids::account_id(&pinned.account_sign_public) {
        return Err(CommandError::new(
            exit::ERROR,
            format!(
                "INTEGRITY: the server answered for account {}, not the account whose key this pairing pinned",
                joined.account_id
            ),
            "check that --server points at a genuine agentkeys-server; nothing was saved",
        ));
    }
    let id = SessionId::daemon(&joined.agent_id)?;
    let session = Session {
        server_url: server_url.to_owned(),
        account_id: joined.account_id.clone(),
        device_id: joined.device_id.clone(),
        device_label: joined.label.clone(),
        session_id: joined.session_id.clone(),
        token,
        device,
        account: None,
        agent_id: Some(joined.agent_id.clone()),
        account_sign_public: Some(pinned.account_sign_public),
        link_id: pinned.link_id,
    };
    // A new session in this slot (the agent paired again): what an earlier one saw does not apply.
    let _ = std::fs::remove_file(ctx.store.dir(&id).join(agentkeys_core::session::SEEN_FILE));
    ctx.store.save(&id, &session)?;
    Ok(id)
}

fn report(ctx: &Context, id: &SessionId, joined: &AgentSessionResponse) -> Result<(), CommandError> {
    if ctx.global.json {
        crate::output::print_json(&serde_json::json!({
            "session_id": id.as_str(),
            "agent_id": joined.agent_id,
            "label": joined.label,
            "account_id": joined.account_id,
            "device_id": joined.device_id,
            "tier": joined.tier,
            "scope": joined.scope,
        }))
    } else {
        eprintln!(
            "Joined as agent {} ({}), tier {}, scope {}. Session saved as {id}.\nNext: agentkeys-daemon serve, or \
             configure your MCP client to run `agentkeys-daemon mcp`.",
            joined.label,
            joined.agent_id,
            joined.tier,
            if joined.scope.is_empty() { "(none)".to_owned() } else { joined.scope.join(",") },
        );
        Ok(())
    }
}

pub async fn pair(ctx: &Context, args: PairArgs) -> Result<u8, CommandError> {
    check_label(&args.label)?;
    let mut scope: Vec<String> = Vec::new();
    for service in args.scope.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        vault::check_service(service)?;
        scope.push(service.to_owned());
    }
    // The server keeps the scope sorted and unique; the OTP is computed over that same form.
    scope.sort();
    scope.dedup();
    let ask = pairing::Ask {
        kind: PairingKind::Pairing,
        label: args.label.clone(),
        scope,
        timeout: Duration::from_secs(args.timeout),
    };
    join_agent(ctx, &ask).await
}

/// `recover <agent>`: a replacement machine asks to take over an existing agent (same id, scope,
/// tier and private credentials) with a new device key; the master approves it like a pairing.
pub async fn recover(ctx: &Context, args: RecoverArgs) -> Result<u8, CommandError> {
    vault::check_service(&args.agent).map_err(|_| {
        CommandError::usage(
            format!("invalid agent {:?}", args.agent),
            "name the agent by its label, alias or id (ag_…), as `agentkeys agents` lists it",
        )
    })?;
    let ask = pairing::Ask {
        kind: PairingKind::Recovery,
        label: args.agent.clone(),
        scope: Vec::new(),
        timeout: Duration::from_secs(args.timeout),
    };
    join_agent(ctx, &ask).await
}

/// Opens the pairing-kind request, prints its code and OTP, and saves the session it ends in.
async fn join_agent(ctx: &Context, ask: &pairing::Ask) -> Result<u8, CommandError> {
    let server_url = ctx.server_url(None);
    let client = ctx.anonymous_client(&server_url)?;
    let joined = pairing::join(&client, ask, |event| match event {
        pairing::Event::Busy => {
            eprintln!("The server is busy with pairing requests; retrying until it takes this one…")
        }
        pairing::Event::Opened { code } => {
            eprintln!("Pair code: {code}");
            eprintln!(
                "On the master, run `agentkeys approve {code}`; once it has looked the code up, the OTP to type there \
                 shows here. Waiting (up to {}s)…",
                ask.timeout.as_secs().min(600)
            );
        }
        pairing::Event::Claimed { code, otp, account_id } => {
            eprintln!("OTP: {otp}");
            eprintln!(
                "Type {otp} at `agentkeys approve {code}` on the master (account {account_id}). A master that shows no \
                 such prompt, or computes another number, is not the one you meant: deny it there."
            );
        }
    })
    .await?;
    let Some(session) = joined.status.session.clone() else {
        return Err(CommandError::new(
            exit::ERROR,
            "the server approved this request without the agent session it makes",
            "check that --server points at an agentkeys-server of the same version",
        ));
    };
    // An agent's id derives from its account and label: a server cannot hand this machine
    // another agent's session under the name it asked for without that showing.
    if ids::agent_id(&session.account_id, &session.label) != session.agent_id {
        return Err(CommandError::new(
            exit::ERROR,
            "INTEGRITY: the server answered for an agent whose id does not derive from its label",
            "the server is not trustworthy: tell the account owner; nothing was saved",
        ));
    }
    let pinned = Pinned { account_sign_public: joined.account_sign_public, link_id: None };
    let id = save(ctx, client.base_url(), joined.device, joined.token, &session, pinned)?;
    report(ctx, &id, &session)?;
    if ask.kind == PairingKind::Recovery {
        eprintln!("This machine now stands in for agent {} ({}).", session.label, session.agent_id);
    }
    Ok(0)
}

fn read_code(args: &LinkArgs) -> Result<Zeroizing<String>, CommandError> {
    if args.code != "-" {
        return Ok(Zeroizing::new(args.code.clone()));
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line).map_err(|e| {
        CommandError::new(exit::ERROR, format!("cannot read the link code from stdin: {e}"), "pipe it in")
    })?;
    Ok(line)
}

pub async fn link(ctx: &Context, args: LinkArgs) -> Result<u8, CommandError> {
    let code = LinkCode::parse(&read_code(&args)?).map_err(|e| {
        CommandError::usage(
            format!("invalid link code: {e}"),
            "copy the whole AKL1-… code printed by `agentkeys agent create`",
        )
    })?;
    let link = code.key_pair();
    let link_keys = link.public();
    let link_id = ids::link_id(&link_keys.sign);
    let server_url = ctx.server_url(None);
    let client = ctx.anonymous_client(&server_url)?;
    let device = KeyPair::generate(&mut OsRandom);
    let keys = device.public();
    let device_id = ids::device_id(&keys.sign);
    let token = new_secret("akt_");
    let token_hash: [u8; 32] = Sha256::digest(token.expose_secret().as_bytes()).into();
    // A credential stored while this redeems reaches the code too, and the server then asks for
    // it as well (VERSION_CONFLICT): look the code up again and re-wrap all it carries.
    let mut attempts = 0;
    let mut pinned = None;
    let joined = loop {
        let info = client.link_info(&link_id).await?;
        let account_sign = check_link_info(&info, &link_id, &link_keys)?;
        if pinned.is_some_and(|key| key != account_sign) {
            return Err(CommandError::new(
                exit::ERROR,
                "INTEGRITY: the server named another account for this link code on a second look",
                "the server is not trustworthy: tell the account owner",
            ));
        }
        pinned = Some(account_sign);
        let mut wraps = Vec::with_capacity(info.wraps.len());
        for wrap in &info.wraps {
            let sealed = b64::decode(&wrap.wrap).unwrap_or_default();
            let data_key = link.unwrap(&sealed, WrapLabel::DataKey).map_err(|e| {
                CommandError::new(
                    exit::ERROR,
                    format!("cannot open the key of '{}': {e}", wrap.service),
                    "ask for a new link code",
                )
            })?;
            let rewrapped = crypto::wrap_to(&keys.kx, &data_key, WrapLabel::DataKey, &mut OsRandom)
                .map_err(|e| CommandError::new(exit::ERROR, format!("cannot wrap a key: {e}"), "retry"))?;
            wraps.push(DeviceWrap { device_id: device_id.clone(), wrap: b64::encode(rewrapped), ..wrap.clone() });
        }
        let device_certificate =
            link.sign(&ids::agent_device_payload(&info.account_id, &info.agent_id, &keys.sign, &keys.kx));
        let proof = link.sign(&redeem_payload(&link_id, &token_hash, &device_certificate));
        let redeemed = client
            .redeem_link(
                &link_id,
                &RedeemLinkRequest {
                    device_sign_public: b64::encode(keys.sign),
                    device_kx_public: b64::encode(keys.kx),
                    token_hash: b64::encode(token_hash),
                    device_certificate: b64::encode(device_certificate),
                    wraps,
                    proof: b64::encode(proof),
                },
            )
            .await;
        match redeemed {
            Err(ClientError::Api { detail, .. })
                if detail.code == agentkeys_proto::ErrorCode::VersionConflict && attempts < 4 =>
            {
                attempts += 1;
            }
            other => break other?,
        }
    };
    let account_sign_public = pinned.expect("the loop looked the code up");
    let pinned = Pinned { account_sign_public, link_id: Some(link_id) };
    let id = save(ctx, client.base_url(), device, token, &joined, pinned)?;
    report(ctx, &id, &joined)?;
    Ok(0)
}

/// The server relays who a link code makes us; checks it against the code's own key before
/// trusting it, and returns the account signing key to pin. The link key (which only the master
/// and this code's holder have) signed that account key, so the server cannot stand in its own.
fn check_link_info(
    info: &agentkeys_proto::agents::LinkInfoResponse,
    link_id: &str,
    link_keys: &crypto::PublicKeys,
) -> Result<[u8; 32], CommandError> {
    let account_sign = b64::decode_array::<32>(&info.account_sign_public);
    let certificate = b64::decode_array::<64>(&info.link_certificate);
    let binding = info.account_binding.as_deref().and_then(b64::decode_array::<64>);
    let consistent = match (account_sign, certificate, binding) {
        (Some(account_sign), Some(certificate), Some(binding)) => {
            crypto::verify(&link_keys.sign, &ids::link_account_payload(link_id, &account_sign), &binding).is_ok()
                && ids::account_id(&account_sign) == info.account_id
                && ids::agent_id(&info.account_id, &info.label) == info.agent_id
                && crypto::verify(
                    &account_sign,
                    &ids::link_key_payload(&info.account_id, &info.agent_id, &link_keys.sign, &link_keys.kx),
                    &certificate,
                )
                .is_ok()
        }
        _ => false,
    };
    match account_sign {
        Some(account_sign) if consistent => Ok(account_sign),
        _ => Err(CommandError::new(
            exit::ERROR,
            "INTEGRITY: the server's answer for this link code is not signed by the account that minted it",
            "check --server; if it is right, the server is not trustworthy: tell the account owner",
        )),
    }
}
