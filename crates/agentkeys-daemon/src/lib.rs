//! `agentkeys-daemon` as a library: [`main`] parses the command line and dispatches. The daemon
//! sits beside an agent, holds its session (`daemon-<agent id>`), and serves its credentials
//! over MCP and `run` without ever prompting. Logs go to stderr (`AGENTKEYS_LOG` sets the
//! filter); stdout carries only results and, for `mcp`, only protocol.

pub mod cli;
pub mod context;
pub mod credentials;
pub mod enroll;
pub mod mcp;
pub mod output;
pub mod serve;
pub mod socket;
pub mod trail;

use agentkeys_core::child::{self, ChildSpec};
use agentkeys_core::daemon_client::{self, socket_path};
use agentkeys_core::error::{CommandError, exit};
use agentkeys_core::{harden, secret_mem};
use clap::Parser as _;

use crate::cli::{Cli, Command, RunArgs};
use crate::context::Context;
use crate::output::{print_json, print_text};
use crate::trail::Via;

/// Logs go to stderr at `info` (`AGENTKEYS_LOG` sets the filter), except for `mcp`: its stderr
/// is the MCP client's log pane, where only warnings belong.
fn init_logging(command: &Command) {
    let default = if matches!(command, Command::Mcp) { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTKEYS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
        // rmcp logs whole responses at debug, and a get_credential response holds the value:
        // whatever AGENTKEYS_LOG asks for, the SDK never logs below info.
        .add_directive("rmcp=info".parse().expect("a valid directive"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Hardens this process before it touches a secret (PRODUCT.md §7): no core dumps, not
/// dumpable, no new privileges; refuses a tracer unless `--allow-debugger`.
fn harden(allow_debugger: bool) -> Result<harden::Report, CommandError> {
    let report = harden::harden(harden::Options { no_new_privs: true }).map_err(|e| {
        CommandError::new(
            exit::ERROR,
            format!("cannot harden the process ({e}): refusing to handle credentials without it"),
            "check that the container or sandbox allows prctl(PR_SET_DUMPABLE) and setrlimit",
        )
    })?;
    if let Some(pid) = report.traced_by {
        let who = harden::process_name(pid).map(|name| format!("{pid} ({name})")).unwrap_or_else(|| pid.to_string());
        if !allow_debugger {
            return Err(CommandError::new(
                exit::ERROR,
                format!(
                    "agentkeys-daemon is being traced by process {who}: refusing to start, a tracer can read every credential it handles"
                ),
                "run it without gdb/strace, or pass --allow-debugger to start anyway",
            ));
        }
        tracing::warn!(
            "running under tracer {who} because of --allow-debugger: it can read every credential this daemon handles"
        );
    }
    Ok(report)
}

/// Runs the daemon and returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.command);
    let json = cli.global.json;
    let hardening = match harden(cli.global.allow_debugger) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("Error: {error}");
            return std::process::ExitCode::from(error.exit_code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: cannot start: {e}");
            return std::process::ExitCode::from(exit::ERROR);
        }
    };
    let result = runtime.block_on(async {
        let ctx = Context::new(cli.global, hardening)?;
        dispatch(&ctx, cli.command).await
    });
    // A `run` child or an MCP client may have left blocking reads behind; do not wait for them.
    runtime.shutdown_background();
    std::process::ExitCode::from(match result {
        Ok(code) => code,
        Err(error) => {
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({ "error": {
                        "code": error.code.map(|c| c.as_str()),
                        "message": error.message,
                        "hint": error.hint,
                        "exit_code": error.exit_code,
                    }})
                );
            } else {
                eprintln!("Error: {error}");
            }
            error.exit_code
        }
    })
}

/// Loudly, once, for the long-running commands: a machine where same-user processes may ptrace.
fn warn_weak_ptrace(ctx: &Context) {
    if let Some(warning) = ctx.hardening.ptrace_warning() {
        tracing::warn!("WARNING: {warning}");
    }
}

async fn dispatch(ctx: &Context, command: Command) -> Result<u8, CommandError> {
    match command {
        Command::Pair(args) => enroll::pair(ctx, args).await,
        Command::Recover(args) => enroll::recover(ctx, args).await,
        Command::Link(args) => enroll::link(ctx, args).await,
        Command::Serve(args) => {
            let (id, client, session) = ctx.client()?;
            warn_weak_ptrace(ctx);
            let trail = ctx.trail(&id, &session);
            let cache = ctx.cache(&trail);
            let slot = (ctx.verifier(&id), trail);
            serve::serve(&id, socket_path(&id, args.socket)?, client, session, slot, cache).await
        }
        Command::Mcp => {
            let (id, client, session) = ctx.client()?;
            warn_weak_ptrace(ctx);
            let trail = ctx.trail(&id, &session);
            let cache = ctx.cache(&trail);
            serve::stdio(socket_path(&id, None)?, client, session, (ctx.verifier(&id), trail), cache).await
        }
        Command::Run(args) => run(ctx, args).await,
        Command::Whoami => whoami(ctx).await,
        Command::Status => status(ctx).await,
    }
}

/// The agent-side `run`: same semantics as the master's (exit status, signals, masking). With a
/// `serve` daemon on the session's socket, the command runs there with this process's stdio and
/// this process never opens the session or a value; else it runs here.
async fn run(ctx: &Context, args: RunArgs) -> Result<u8, CommandError> {
    let bindings = child::parse_bindings(&args.env)?;
    let id = ctx.session_id()?;
    if let Some(stream) = daemon_client::connect(&socket_path(&id, None)?) {
        let mask = !args.no_mask;
        return tokio::task::spawn_blocking(move || {
            daemon_client::run(stream, &args.command, &bindings, (mask, args.reason.as_deref()))
        })
        .await
        .map_err(|e| CommandError::new(exit::ERROR, format!("the run task failed: {e}"), "retry"))?;
    }
    let mut env = agentkeys_core::exec::SecretEnv::new();
    let mut services = Vec::new();
    let mut trail = None;
    if !bindings.is_empty() {
        let (id, client, session) = ctx.client()?;
        let this_trail = trail.insert(ctx.trail(&id, &session));
        let verifier = ctx.verifier(&id);
        (env, services) = credentials::open_for_run(
            &client,
            &session,
            &verifier,
            (this_trail, None),
            bindings,
            args.reason.as_deref(),
        )
        .await?;
    }
    let spec = ChildSpec { argv: args.command, env, mask: !args.no_mask };
    let result = tokio::task::spawn_blocking(move || child::run(spec))
        .await
        .map_err(|e| CommandError::new(exit::ERROR, format!("the run task failed: {e}"), "retry"))?;
    // The values were in secret memory, now wiped, and in the child's environment.
    if let Some(trail) = &trail {
        for service in &services {
            let outcome = if result.is_ok() { "ok" } else { "not started" };
            trail.record_all(service, Via::Run, &[(trail::Event::Deliver, outcome), (trail::Event::Drop, "ok")]);
        }
    }
    Ok(result?)
}

async fn whoami(ctx: &Context) -> Result<u8, CommandError> {
    let (id, client, _) = ctx.client()?;
    let who = client.whoami().await?;
    let agent = who.agent.clone();
    let value = serde_json::json!({
        "session": id.as_str(),
        "account_id": who.account_id,
        "agent_id": agent.as_ref().map(|a| a.agent_id.clone()),
        "label": agent.as_ref().map(|a| a.label.clone()),
        "tier": agent.as_ref().map(|a| a.tier),
        "scope": agent.as_ref().map(|a| a.scope.clone()).unwrap_or_default(),
        "device_id": who.device_id,
        "server": client.base_url(),
    });
    if ctx.global.json {
        return print_json(&value).map(|()| 0);
    }
    let line = |k: &str, v: String| format!("{k:<9} {v}\n");
    let mut text = String::new();
    if let Some(agent) = &agent {
        text.push_str(&line("Agent:", format!("{} ({})", agent.label, agent.agent_id)));
        text.push_str(&line("Tier:", agent.tier.to_string()));
        text.push_str(&line("Scope:", if agent.scope.is_empty() { "(none)".into() } else { agent.scope.join(",") }));
    }
    text.push_str(&line("Account:", who.account_id));
    text.push_str(&line("Device:", who.device_id));
    text.push_str(&line("Session:", id.to_string()));
    text.push_str(&line("Server:", client.base_url().to_owned()));
    print_text(&text);
    Ok(0)
}

/// Session, server reachability, socket and cache; exits 0 even when the server is down (that is
/// what it reports), 3 without a session.
async fn status(ctx: &Context) -> Result<u8, CommandError> {
    use agentkeys_core::session::SessionStore as _;
    let (id, client, session) = ctx.client()?;
    let socket = socket_path(&id, None)?;
    let trail = ctx.trail(&id, &session);
    let events = trail.counts();
    let listening = tokio::net::UnixStream::connect(&socket).await.is_ok();
    let server = match client.whoami().await {
        Ok(_) => "reachable, session valid".to_owned(),
        Err(error) => match error.code() {
            Some(code) => format!("reachable, session refused ({code})"),
            None => format!("unreachable ({error})"),
        },
    };
    let value = serde_json::json!({
        "session": id.as_str(),
        "agent_id": session.agent_id,
        "stored": ctx.store.describe(&id),
        "server_url": client.base_url(),
        "server": server,
        "socket": socket.display().to_string(),
        "serving": listening,
        "cache": {
            "ttl_s": ctx.global.cache_ttl,
            "scope": "values used by run; get_credential is never cached",
        },
        "secret_memory": secret_mem::protection(),
        "hardening": {
            "dumpable": false,
            "core_dumps": false,
            "no_new_privs": ctx.hardening.no_new_privs,
            "traced_by": ctx.hardening.traced_by,
            "ptrace_warning": ctx.hardening.ptrace_warning(),
            "allocator": "mimalloc (secure), wiped on free",
        },
        "trail": { "path": trail.path().display().to_string(), "events": events },
    });
    if ctx.global.json {
        return print_json(&value).map(|()| 0);
    }
    let ptrace = ctx.hardening.ptrace_warning().unwrap_or_else(|| "other processes cannot attach".to_owned());
    let cache = match ctx.global.cache_ttl {
        0 => "none: run values are fetched per use and dropped after it".to_owned(),
        ttl => format!("run values kept {ttl}s after their last use (get_credential: never cached)"),
    };
    let trail_text = if events.is_empty() {
        "no events yet".to_owned()
    } else {
        events.iter().map(|(event, n)| format!("{event} {n}")).collect::<Vec<_>>().join(", ")
    };
    print_text(&format!(
        "Session:  {id} (agent {})\nStored:   {}\nServer:   {} — {server}\nSocket:   {} ({})\nCache:    {cache}\nMemory:   {}; not dumpable, no core dumps, no new privileges, mimalloc (secure, wiped on free); {ptrace}\nTrail:    {trail_text} ({})\n",
        session.agent_id.as_deref().unwrap_or("-"),
        ctx.store.describe(&id),
        client.base_url(),
        socket.display(),
        if listening { "a daemon is serving" } else { "no daemon serving" },
        secret_mem::protection().describe(),
        trail.path().display(),
    ));
    Ok(0)
}
