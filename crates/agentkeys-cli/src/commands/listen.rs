//! `agentkeys listen`: follows the approval queue as it changes. Each wait is one long-poll
//! (`GET /v1/requests?changed_from=DIGEST&wait_s=25`) that the server answers when the queue
//! differs from the list already seen, so an idle listener costs one request every 25 s and a
//! new request shows within a moment. Each new request is printed (stdout, one line; one JSON
//! object per line with `--json`) and shown as a desktop notification; `--approve` asks about
//! it on the terminal and runs the same critical approval as `approve`. Ctrl-C stops, exit 0.

use std::collections::HashSet;
use std::time::Duration;

use agentkeys_core::ClientError;
use agentkeys_notify::{Notification, Notifier};
use agentkeys_proto::agents::{MAX_DECISION_WAIT_S, PendingRequest, RequestKind};

use super::requests::{self, what};
use crate::cli::{ApproveArgs, ListenArgs};
use crate::context::Context;
use crate::error::CliError;
use crate::output::stdin_is_terminal;

/// The longest pause after the server could not be reached, before asking again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub async fn listen(ctx: &Context, args: ListenArgs) -> Result<u8, CliError> {
    if args.approve && !ctx.global.yes && !stdin_is_terminal() {
        return Err(CliError::usage(
            "listen --approve asks about each request on the terminal, but stdin is not a terminal",
            "run it in a terminal, or run `agentkeys listen` and approve with `agentkeys approve CODE`",
        ));
    }
    let notifier = notifier(ctx, args.no_notify);
    let (client, _) = ctx.client()?;
    let mut stop = std::pin::pin!(tokio::signal::ctrl_c());
    ctx.out.note(format!(
        "Listening for requests{} (Ctrl-C stops)…",
        if args.approve { "; each one is asked about here" } else { "" }
    ));
    let mut seen: HashSet<String> = HashSet::new();
    let mut digest: Option<String> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let asked = async {
            match &digest {
                Some(digest) => client.list_requests_changed(digest, MAX_DECISION_WAIT_S).await,
                None => client.list_requests().await,
            }
        };
        let listed = tokio::select! {
            _ = &mut stop => return stopped(ctx),
            listed = asked => listed,
        };
        let listed = match listed {
            Ok(listed) => listed,
            // The server restarting or the network dropping: say so, wait, and follow on.
            Err(error @ (ClientError::Unreachable { .. } | ClientError::Protocol { .. })) => {
                ctx.out.warn(format!("{error}; asking again in {}s", backoff.as_secs()));
                tokio::select! {
                    _ = &mut stop => return stopped(ctx),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        backoff = Duration::from_secs(1);
        digest = Some(listed.digest);
        // Forget what left the queue, so only what is pending is remembered.
        seen.retain(|code| listed.requests.iter().any(|r| &r.code == code));
        for request in listed.requests {
            if !seen.insert(request.code.clone()) {
                continue;
            }
            announce(ctx, notifier.as_ref(), &request)?;
            if args.approve {
                let decide = decide(ctx, &request);
                let decided = tokio::select! {
                    _ = &mut stop => return stopped(ctx),
                    decided = decide => decided,
                };
                // A refusal (declined, decided elsewhere, out of time) ends this request, not
                // the listening.
                if let Err(error) = decided {
                    ctx.out.warn(format!("{}: {}", request.code, error.message));
                }
            }
        }
    }
}

fn stopped(ctx: &Context) -> Result<u8, CliError> {
    ctx.out.note("Stopped listening.");
    Ok(0)
}

fn notifier(ctx: &Context, off: bool) -> Box<dyn Notifier> {
    if off {
        return Box::new(agentkeys_notify::Silent);
    }
    match agentkeys_notify::desktop() {
        Ok(notifier) => notifier,
        Err(error) => {
            ctx.out.note(format!("{error}: requests are printed here only (--no-notify silences this)"));
            Box::new(agentkeys_notify::Silent)
        }
    }
}

/// Shows a new request on the desktop, then prints it: once its line is out, the notification
/// server has it too (what a script, or a test, may wait for).
fn announce(ctx: &Context, notifier: &dyn Notifier, request: &PendingRequest) -> Result<(), CliError> {
    let phrase = what(request);
    let reason = request.reason.as_deref().map(|why| agentkeys_proto::names::escape_hidden(why).into_owned());
    let mut body = phrase.clone();
    if let Some(why) = &reason {
        body.push_str(&format!("\nReason: {why}"));
    }
    body.push_str(&format!("\nagentkeys approve {}", request.code));
    let shown = notifier.show(&Notification { summary: summary(request), body });
    if let Err(error) = shown {
        ctx.out.warn(format!("{error} ({})", notifier.name()));
    }
    if ctx.out.json {
        let mut line = serde_json::to_string(request).expect("requests serialize");
        line.push('\n');
        ctx.out.bytes(line.as_bytes())?;
    } else {
        let because = reason.as_deref().map(|why| format!(" — reason: {why}")).unwrap_or_default();
        ctx.out.line(format!("{} {}: {phrase}{because}", request.code, request.kind.as_str()))?;
    }
    Ok(())
}

/// The notification's title: what kind of request, and its code.
fn summary(request: &PendingRequest) -> String {
    let kind = match request.kind {
        RequestKind::Release => "Release",
        RequestKind::Access => "Access",
        RequestKind::Tier => "Tier",
        RequestKind::Pairing => "Pairing",
        RequestKind::Device => "Device",
        RequestKind::Recovery => "Agent recovery",
        RequestKind::AccountRecovery => "ACCOUNT RECOVERY",
    };
    format!("AgentKeys: {kind} request {}", request.code)
}

/// Asks about one request and acts on the answer: y approves (critical, as `approve`), d
/// denies, anything else leaves it pending for later. `--yes` answers y.
async fn decide(ctx: &Context, request: &PendingRequest) -> Result<(), CliError> {
    let code = request.code.clone();
    let answer = if ctx.global.yes {
        "y".to_owned()
    } else {
        let question = format!("Approve {code}? [y]es, [d]eny, anything else skips: ");
        tokio::task::spawn_blocking(move || {
            use std::io::BufRead as _;
            eprint!("{question}");
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            line
        })
        .await
        .unwrap_or_default()
    };
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => {
            let args = ApproveArgs { code, scope: None, otp: None, keep_old: false, uses: None, for_: None };
            requests::approve(ctx, args).await.map(drop)
        }
        "d" | "deny" => requests::deny(ctx, &code).await.map(drop),
        _ => {
            ctx.out.note(format!("Left {code} pending: `agentkeys approve {code}` or `agentkeys deny {code}` later."));
            Ok(())
        }
    }
}
