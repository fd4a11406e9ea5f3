//! The approval queue at the master: `requests`, `approve <code>`, `deny <code>`. Approving a
//! pairing shows what the daemon asked for and its device fingerprint, then asks the human to
//! type the OTP the daemon shows (or pass it with `--otp`): the master derives the same number
//! from the keys the server relayed, and only a match certifies the device key. The master does
//! not print its own number, so the check cannot be passed by copying from the wrong screen.

use agentkeys_core::{OsRandom, agents, vault};
use agentkeys_proto::agents::{PendingRequest, RequestKind};
use agentkeys_proto::ids;

use crate::cli::ApproveArgs;
use crate::context::Context;
use crate::error::CliError;
use crate::output::{table, timestamp};
use crate::prompt::confirm;

fn bad_code(code: &str) -> CliError {
    CliError::usage(format!("{code:?} is not a request code"), "codes look like 7K3D-QX2M; see `agentkeys requests`")
}

fn what(request: &PendingRequest) -> String {
    match request.kind {
        RequestKind::Pairing => format!("pair a daemon as {} with scope {}", request.label, request.scope.join(",")),
        RequestKind::Access => format!("give {} access to {}", request.label, request.scope.join(",")),
        RequestKind::Tier => {
            format!("raise {} to tier {}", request.label, request.tier.map(|t| t.to_string()).unwrap_or_default())
        }
    }
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
                r.reason.clone().unwrap_or_else(|| "-".into()),
                timestamp(r.expires_at_ms),
            ]
        })
        .collect();
    ctx.out.line(table(&["CODE", "KIND", "ASKS TO", "REASON", "EXPIRES"], &rows))?;
    Ok(0)
}

pub async fn approve(ctx: &Context, args: ApproveArgs) -> Result<u8, CliError> {
    let code = ids::normalize_request_code(&args.code).ok_or_else(|| bad_code(&args.code))?;
    let (client, session) = ctx.client()?;
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
        shown.push(format!("  reason:   {reason}"));
    }
    let otp = match request.kind {
        RequestKind::Pairing => Some(agents::pairing_otp(&request).ok_or_else(|| {
            CliError::new(1, "the pairing request carries no device key", "ask the daemon to pair again")
        })?),
        _ => None,
    };
    if otp.is_some() {
        shown.push(format!("  device:   {}", agents::device_fingerprint(&request).unwrap_or_default()));
    }
    if scope != request.scope {
        shown.push(format!("  granting: {} (instead of what was asked)", scope.join(",")));
    }
    if !ctx.out.json {
        eprintln!("{}", shown.join("\n"));
    }
    match &otp {
        // A pairing is approved by typing the daemon's OTP (or passing it with --otp), never by a
        // bare yes: the comparison is what catches a key swapped on the way. `--yes` does not
        // answer it.
        Some(otp) => {
            let typed = match &args.otp {
                Some(given) => given.trim().to_owned(),
                None => read_otp()?,
            };
            if typed != *otp {
                return Err(CliError::new(
                    6,
                    format!("the OTP {typed} does not match this request's: refusing to approve"),
                    "the daemon's key did not reach this machine intact (a wrong code, or a server swapping keys); \
                     deny it with `agentkeys deny` and pair again",
                ));
            }
        }
        None => confirm(ctx, "`approve`", "Approve?")?,
    }
    let decided = agents::approve(&client, &session, &request, &scope, &mut OsRandom).await?;
    ctx.out.json(&decided)?;
    ctx.out.note(match (&decided.agent_id, request.kind) {
        (Some(agent_id), RequestKind::Pairing) => format!("Approved: {} is paired as agent {agent_id}", request.label),
        _ => format!("Approved {code}"),
    });
    Ok(0)
}

/// Reads the OTP the human types (from the terminal, or a line on stdin).
fn read_otp() -> Result<String, CliError> {
    use std::io::BufRead as _;
    eprint!("Type the 6-digit OTP the daemon shows to approve (anything else refuses): ");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::new(6, format!("cannot read the OTP: {e}"), "type it, or pass --otp NNNNNN"))?;
    if line.trim().is_empty() {
        return Err(CliError::new(6, "no OTP was typed: nothing was approved", "type the OTP, or pass --otp NNNNNN"));
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
