//! The command line of `agentkeys-daemon`, defined once (PRODUCT.md §4 is the contract). Nothing
//! here ever prompts: an agent's side runs unattended.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// agentkeys-daemon: holds an agent's session and serves its credentials, silently.
#[derive(Debug, Parser)]
#[command(name = "agentkeys-daemon", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Server URL (default: the one saved at pairing, else http://127.0.0.1:8090).
    #[arg(long, env = "AGENTKEYS_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Trust only this CA (PEM) for an https:// server, instead of the system's roots.
    #[arg(long, env = "AGENTKEYS_CA_CERT", global = true, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Session slot (`daemon-<agent id>`); picked automatically when there is exactly one.
    #[arg(long, env = "AGENTKEYS_SESSION_ID", global = true, value_name = "ID")]
    pub session_id: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Start even under a debugger or tracer (gdb, strace), which can read every credential the
    /// daemon handles; it says so on stderr.
    #[arg(long, global = true)]
    pub allow_debugger: bool,
    /// Keep a credential used by `run` in protected memory for this many idle seconds, so the next
    /// run needs no round trip (0: fetch every time, drop after use). `get_credential` never caches.
    #[arg(long, env = "AGENTKEYS_CACHE_TTL", global = true, default_value_t = 60, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub cache_ttl: u64,
    /// Take the server's answers even where they are older than what this session verified
    /// before (a lower credential version): only after the server was restored from a backup.
    #[arg(long, global = true)]
    pub accept_rollback: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask the master to pair this machine as an agent; prints a pair code and waits.
    Pair(PairArgs),
    /// Stand in for an existing agent on a replacement machine (same id, scope, tier and private
    /// credentials): prints a pair code and OTP for `agentkeys approve`, like `pair`.
    Recover(RecoverArgs),
    /// Bind this machine to an agent with a link code from `agentkeys agent create`.
    Link(LinkArgs),
    /// Serve MCP on a Unix socket (mode 0600, same-user peers only) until stopped.
    Serve(ServeArgs),
    /// Serve MCP on stdin/stdout for an MCP client; uses a running `serve` daemon when there is one.
    Mcp,
    /// Run a command with credentials injected as environment variables; through the session's
    /// `serve` daemon when one is running (this process then never holds a value).
    Run(RunArgs),
    /// Show the agent this session acts for (never the token).
    Whoami,
    /// Show the session, server reachability, socket and cache.
    Status,
}

#[derive(Debug, Args)]
pub struct PairArgs {
    /// The agent's name, e.g. build-bot (letters, digits, . _ -).
    #[arg(long)]
    pub label: String,
    /// Services to ask for, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "SERVICES")]
    pub scope: Vec<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The agent to stand in for: its label, alias or id (ag_…).
    pub agent: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// The link code (AKL1-…). Prefer AGENTKEYS_LINK_CODE or stdin ("-"): argv is visible in `ps`.
    #[arg(env = "AGENTKEYS_LINK_CODE", hide_env_values = true)]
    pub code: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Socket path (default: $XDG_RUNTIME_DIR/agentkeys/<session id>.sock, else under ~/.agentkeys/run/).
    #[arg(long, env = "AGENTKEYS_DAEMON_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Inject a credential: VAR=service (repeatable).
    #[arg(long = "env", short = 'e', value_name = "VAR=SERVICE")]
    pub env: Vec<String>,
    /// Do not mask credential values in the command's output.
    #[arg(long)]
    pub no_mask: bool,
    /// Why the command needs the credentials, shown to the account owner when one is high-value
    /// and each use is approved.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The command and its arguments (after `--`); run directly, no shell.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}
