//! The approval queue at the master: `requests`, `approve <code>`, `deny <code>`. Approving a
//! pairing shows what the daemon asked for and its device fingerprint, then asks the human to
//! type the OTP the daemon shows (or pass it with `--otp`): the master derives the same number
//! from the keys the server relayed, and only a match certifies the device key. The master does
//! not print its own number, so the check cannot be passed by copying from the wrong screen.

use agentkeys_biometric::CriticalOp;
use agentkeys_core::{OsRandom, agents, vault};
use agentkeys_proto::agents::{PendingRequest, RequestKind};
use agentkeys_proto::ids;

use crate::cli::ApproveArgs;
use crate::context::Context;
use crate::error::{CliError, exit};
use crate::output::{table, timestamp};

fn bad_code(code: &str) -> CliError {
    CliError::usage(format!("{code:?} is not a request code"), "codes look like 7K3D-QX2M; see `agentkeys requests`")
}

/// What a request asks, in a phrase (`give build-bot access to openai`).
pub(super) fn what(request: &PendingRequest) -> String {
    let label = agentkeys_proto::names::escape_hidden(&request.label);
    match request.kind {
        RequestKind::Pairing => format!("pair a daemon as {label} with scope {}", request.scope.join(",")),
        RequestKind::Access => format!("give {label} access to {}", request.scope.join(",")),
        RequestKind::Tier => {
            format!("raise {label} to tier {}", request.tier.map(|t| t.to_string()).unwrap_or_default())
        }
        RequestKind::Device => format!("join as master device {label} (it gets the account key)"),
        RequestKind::Recovery => format!("stand in for agent {label} on a replacement machine"),
        RequestKind::AccountRecovery => format!(
            "RECOVER THIS ACCOUNT with its recovery key on a new machine ({label}), from {}",
            timestamp(request.not_before_ms.unwrap_or(request.created_at_ms))
        ),
        RequestKind::Release => format!(
            "read high-value {}{} as {label} (device {})",
            request.scope.join(","),
            match request.namespace.as_deref() {
                Some(ns) if ns != agentkeys_proto::types::VAULT_NAMESPACE => " (its private one)",
                _ => "",
            },
            short(request.device_id.as_deref().unwrap_or("?"))
        ),
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// What `--uses` and `--for` say a release serves, as sent and as shown.
fn release_terms(args: &ApproveArgs) -> Result<(Option<u32>, Option<u32>, String), CliError> {
    use agentkeys_proto::agents::{RELEASE_DEFAULT_FOR_MS, RELEASE_MAX_FOR_MS};
    let for_s = match &args.for_ {
        None => None,
        Some(text) => {
            let bad = |why: String| {
                CliError::usage(format!("--for {text:?}: {why}"), "give a duration from 1s to 24h, e.g. 10m or 2h")
            };
            let duration = humantime::parse_duration(text).map_err(|e| bad(e.to_string()))?;
            let seconds = duration.as_secs();
            if seconds == 0 || seconds.saturating_mul(1000) > RELEASE_MAX_FOR_MS as u64 {
                return Err(bad("a release lasts from 1 second to 24 hours".into()));
            }
            Some(seconds as u32)
        }
    };
    let lasting = |s: u64| humantime::format_duration(std::time::Duration::from_secs(s)).to_string();
    let within = lasting(for_s.map_or(RELEASE_DEFAULT_FOR_MS as u64 / 1000, u64::from));
    let shown = match (args.uses, for_s) {
        (Some(1), _) | (None, None) => format!("one read within {within}"),
        (Some(n), _) => format!("{n} reads within {within}"),
        (None, Some(_)) => format!("any number of reads within {within}"),
    };
    Ok((args.uses, for_s, shown))
}

pub async fn list(ctx: &Context) -> Result<u8, CliError> {
    let (client, _) = ctx.client()?;
    let listed = client.list_requests().await?;
    ctx.out.json(&listed)?;
    if listed.requests.is_empty() {
        ctx.out.note(
            "No pending requests. A daemon's pair code appears here once you look it up with `agentkeys approve CODE`.",
        );
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = listed
        .requests
        .iter()
        .map(|r| {
            vec![
                r.code.clone(),
                r.kind.as_str().into(),
                what(r),
                r.reason
                    .as_deref()
                    .map_or_else(|| "-".into(), |why| agentkeys_proto::names::escape_hidden(why).into_owned()),
                timestamp(r.expires_at_ms),
            ]
        })
        .collect();
    ctx.out.line(table(&["CODE", "KIND", "ASKS TO", "REASON", "EXPIRES"], &rows))?;
    Ok(0)
}

pub async fn approve(ctx: &Context, args: ApproveArgs) -> Result<u8, CliError> {
    let code = ids::normalize_request_code(&args.code).ok_or_else(|| bad_code(&args.code))?;
    let (client, session, verifier) = ctx.vault_client().await?;
    let request = client.lookup_request(&code).await?;
    let scope = match &args.scope {
        Some(scope) => {
            let mut checked = Vec::new();
            for service in scope.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
                vault::check_service(service)?;
                checked.push(service.to_owned());
            }
            checked
        }
        None => request.scope.clone(),
    };
    let mut shown = vec![format!("Request {code}: {}", what(&request))];
    if let Some(reason) = &request.reason {
        shown.push(format!("  reason:   {}", agentkeys_proto::names::escape_hidden(reason)));
    }
    if request.kind != RequestKind::Release && (args.uses.is_some() || args.for_.is_some()) {
        return Err(CliError::usage(
            format!(
                "--uses and --for are for releases of high-value credentials; {code} is a {}",
                request.kind.as_str()
            ),
            format!("approve it without them: `agentkeys approve {code}`"),
        ));
    }
    let release = match request.kind {
        RequestKind::Release => Some(release_terms(&args)?),
        _ => None,
    };
    if let Some((_, _, terms)) = &release {
        shown.push(format!("  device:   {}", request.device_id.as_deref().unwrap_or("?")));
        shown.push(format!("  grants:   {terms}"));
    }
    if request.kind == RequestKind::AccountRecovery {
        return Err(CliError::new(
            exit::DENIED,
            format!("request {code} is a recovery of this account with its recovery key: it is not approved"),
            format!(
                "it completes by itself once its delay has passed, unless a master device denies it: if it is not \
                 yours, run `agentkeys deny {code}` now. To add a machine you hold, run `agentkeys device join` there."
            ),
        ));
    }
    // The agent a recovery stands in for, as this master knows it.
    let stands_in_for = match request.kind {
        RequestKind::Recovery => Some(recovered_agent(&client, &request).await?),
        _ => None,
    };
    let (request, otp) = match request.kind {
        RequestKind::Pairing | RequestKind::Device | RequestKind::Recovery => {
            let (request, otp) = wait_for_reveal(&client, &session, &code, request).await?;
            (request, Some(otp))
        }
        _ => (request, None),
    };
    if let Some(agent) = &stands_in_for {
        let devices = agent.devices.iter().filter(|d| !d.revoked).count();
        shown.push(format!("  device:   {}", agents::device_fingerprint(&request).unwrap_or_default()));
        shown.push(format!(
            "  agent:    {} ({}), tier {}, scope {}; {devices} device(s) now, {}",
            agent.label,
            agent.agent_id,
            agent.tier,
            if agent.scope.is_empty() { "(none)".to_owned() } else { agent.scope.join(",") },
            if args.keep_old { "kept (--keep-old)" } else { "revoked once this is approved (--keep-old keeps them)" },
        ));
    }
    if request.kind == RequestKind::Device {
        shown.push(format!("  device:   {}", agents::device_fingerprint(&request).unwrap_or_default()));
    }
    let mut joins = None;
    if request.kind == RequestKind::Pairing && otp.is_some() {
        shown.push(format!("  device:   {}", agents::device_fingerprint(&request).unwrap_or_default()));
        // Pairing under an existing label adds this machine to that agent: say what it inherits.
        let existing = client.list_agents().await?.agents.into_iter().find(|a| a.label == request.label);
        if let Some(agent) = existing.filter(|a| a.status != agentkeys_proto::agents::AgentStatus::TornDown) {
            let devices = agent.devices.iter().filter(|d| !d.revoked).count();
            shown.push(format!(
                "  note:     agent {} ({}) exists with {devices} device(s), tier {} and scope {}; this machine joins it \
                 and also gets its private credentials",
                agent.label,
                agent.agent_id,
                agent.tier,
                if agent.scope.is_empty() { "(none)".to_owned() } else { agent.scope.join(",") },
            ));
            joins = Some(format!(
                "it joins existing agent {} ({devices} device(s), tier {}) and gets its private credentials",
                agent.label, agent.tier
            ));
        }
    }
    if scope != request.scope {
        shown.push(format!("  granting: {} (instead of what was asked)", scope.join(",")));
    }
    if !ctx.out.json {
        eprintln!("{}", shown.join("\n"));
    }
    // A pairing is approved by typing the daemon's OTP (or passing it with --otp), never by a bare
    // yes: the comparison is what catches a key swapped on the way. `--yes` does not answer it.
    if let Some(otp) = &otp {
        let typed = match &args.otp {
            Some(given) => given.trim().to_owned(),
            None => read_otp()?,
        };
        if typed != *otp {
            return Err(CliError::new(
                exit::DECLINED,
                format!("the OTP {typed} does not match this request's: refusing to approve"),
                "the daemon's key did not reach this machine intact (a wrong code, or a server swapping keys); \
                 deny it with `agentkeys deny` and pair again",
            ));
        }
    }
    // Presence is the confirmation of every kind of request (after the OTP for a pairing).
    let op = match request.kind {
        RequestKind::Pairing => {
            let op = CriticalOp::approve_pairing(
                &request.label,
                &agents::device_fingerprint(&request).unwrap_or_default(),
                &scope,
            );
            match &joins {
                Some(note) => op.with_note(note),
                None => op,
            }
        }
        RequestKind::Device => {
            CriticalOp::approve_device(&request.label, &agents::device_fingerprint(&request).unwrap_or_default())
        }
        RequestKind::Recovery => CriticalOp::approve_recovery(
            stands_in_for.as_ref().map_or(request.label.as_str(), |a| a.label.as_str()),
            &agents::device_fingerprint(&request).unwrap_or_default(),
            args.keep_old,
        ),
        RequestKind::Tier => {
            let to = request.tier.map(|t| t.as_str()).unwrap_or("?");
            let from = client
                .list_agents()
                .await?
                .agents
                .into_iter()
                .find(|a| Some(&a.agent_id) == request.agent_id.as_ref())
                .map(|a| a.tier.to_string())
                .unwrap_or_else(|| "?".to_owned());
            CriticalOp::approve_tier(&request.label, &from, to)
        }
        RequestKind::Release => CriticalOp::approve_release(
            &request.label,
            &request.scope.join(","),
            request.device_id.as_deref().unwrap_or("?"),
            release.as_ref().map_or("", |(_, _, terms)| terms.as_str()),
            request.reason.as_deref(),
        ),
        _ => CriticalOp::approve_access(&request.label, &scope),
    };
    let client = crate::presence::require(ctx, client, &op).await?;
    let (uses, for_s) = release.as_ref().map_or((None, None), |(uses, for_s, _)| (*uses, *for_s));
    let options = agents::ApproveOptions { keep_old: args.keep_old, uses, for_s };
    let decided =
        agents::approve(&client, &session, &verifier, &request, &scope, stands_in_for.as_ref(), options, &mut OsRandom)
            .await?;
    ctx.out.json(&decided)?;
    ctx.out.note(match (&decided.agent_id, request.kind) {
        (Some(agent_id), RequestKind::Pairing) => format!("Approved: {} is paired as agent {agent_id}", request.label),
        (Some(agent_id), RequestKind::Recovery) => format!(
            "Approved: the replacement machine stands in for agent {agent_id}{}",
            if args.keep_old { "; its other devices were kept" } else { "; its old devices were revoked" }
        ),
        (_, RequestKind::Device) => format!("Approved: {} is a master device of this account", request.label),
        (_, RequestKind::Release) => format!(
            "Approved: {} may read {} — {}",
            request.label,
            request.scope.join(","),
            release.as_ref().map_or("", |(_, _, terms)| terms.as_str())
        ),
        _ => format!("Approved {code}"),
    });
    Ok(0)
}

/// The agent a recovery request names (label, alias or id), refused with the fix when it is
/// gone: a torn-down agent has nothing left to recover, a revoked one is brought back only by
/// pairing anew.
async fn recovered_agent(
    client: &agentkeys_core::ApiClient,
    request: &PendingRequest,
) -> Result<agentkeys_proto::agents::AgentSummary, CliError> {
    use agentkeys_proto::agents::AgentStatus;
    let listed = client.list_agents().await?.agents;
    let Some(agent) = agents::resolve(&listed, &request.label) else {
        return Err(CliError::new(
            exit::NOT_FOUND,
            format!("recovery {} names agent {:?}, which this account does not have", request.code, request.label),
            "check the name given to `agentkeys-daemon recover` (`agentkeys agents` lists them), or pair the machine \
             anew with `agentkeys-daemon pair`; deny this one with `agentkeys deny CODE`",
        ));
    };
    match agent.status {
        AgentStatus::TornDown => Err(CliError::new(
            exit::DENIED,
            format!(
                "agent {} was torn down: its private credentials are gone, nothing is left to recover",
                agent.label
            ),
            format!(
                "pair the machine anew (`agentkeys-daemon pair --label {}`); deny this one with `agentkeys deny CODE`",
                agent.label
            ),
        )),
        AgentStatus::Revoked => Err(CliError::new(
            exit::DENIED,
            format!("agent {} was revoked, so it is not recovered", agent.label),
            format!(
                "pair the machine anew (`agentkeys-daemon pair --label {}`): that brings the agent back, a decision of \
                 its own; deny this one with `agentkeys deny CODE`",
                agent.label
            ),
        )),
        AgentStatus::Active | AgentStatus::Pending => Ok(agent.clone()),
    }
}

/// How long `approve` waits for the pairing daemon to reveal its OTP nonce after the look-up.
const REVEAL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The daemon reveals its OTP nonce once it sees the code claimed (it polls every second); look
/// the request up until it has, then compute the OTP from what this master saw.
async fn wait_for_reveal(
    client: &agentkeys_core::ApiClient,
    session: &agentkeys_core::session::Session,
    code: &str,
    mut request: PendingRequest,
) -> Result<(PendingRequest, String), CliError> {
    let deadline = std::time::Instant::now() + REVEAL_WAIT;
    loop {
        let computed = agents::pairing_otp(session, &request).map_err(|_| {
            CliError::new(
                exit::DECLINED,
                format!("pairing {code} does not hold together: the nonce it shows does not open the daemon's commitment"),
                "something between the daemon and this machine altered it; deny it with `agentkeys deny` and pair again",
            )
        })?;
        if let Some(otp) = computed {
            return Ok((request, otp));
        }
        if std::time::Instant::now() >= deadline {
            return Err(CliError::new(
                exit::DECLINED,
                format!("the daemon of pairing {code} did not answer within {}s", REVEAL_WAIT.as_secs()),
                "check that `agentkeys-daemon pair` is still waiting on the agent's machine, then approve again",
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        request = client.lookup_request(code).await?;
    }
}

/// Reads the OTP the human types (from the terminal, or a line on stdin).
fn read_otp() -> Result<String, CliError> {
    use std::io::BufRead as _;
    eprint!("Type the 6-digit OTP the daemon shows to approve (anything else refuses): ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| {
        CliError::new(exit::DECLINED, format!("cannot read the OTP: {e}"), "type it, or pass --otp NNNNNN")
    })?;
    if line.trim().is_empty() {
        return Err(CliError::new(
            exit::DECLINED,
            "no OTP was typed: nothing was approved",
            "type the OTP, or pass --otp NNNNNN",
        ));
    }
    Ok(line.trim().to_owned())
}

pub async fn deny(ctx: &Context, code: &str) -> Result<u8, CliError> {
    let normalized = ids::normalize_request_code(code).ok_or_else(|| bad_code(code))?;
    let (client, _) = ctx.client()?;
    let decided = client.deny_request(&normalized).await?;
    ctx.out.json(&decided)?;
    ctx.out.note(format!("Denied {normalized}"));
    Ok(0)
}
