//! The command line of `agentkeys`, defined once: parsing, `--help` and shell completions all
//! come from these types (PRODUCT.md §4 is the contract).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// agentkeys: hand credentials to AI agents without handing over control.
#[derive(Debug, Parser)]
#[command(name = "agentkeys", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes. Precedence: flag, then environment.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Server URL (default: the one saved at init, else http://127.0.0.1:8090).
    #[arg(long, env = "AGENTKEYS_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Print machine-readable JSON instead of tables and messages.
    #[arg(long, global = true)]
    pub json: bool,
    /// Session slot to use.
    #[arg(long, env = "AGENTKEYS_SESSION_ID", global = true, default_value = "master", value_name = "ID")]
    pub session_id: String,
    /// Print only what was asked for (values, tables); no confirmations or notes.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Answer yes to y/N questions.
    #[arg(long, global = true)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account and this master device; print the recovery key once.
    Init(InitArgs),
    /// Show the account, device and session in use (never the token).
    Whoami,
    /// Seal and store a credential (value from a hidden prompt, stdin or --file).
    Store(StoreArgs),
    /// Print a credential's value.
    Read(ServiceArg),
    /// List stored credentials (names and versions, never values).
    List,
    /// Remove a credential (its history stays in the audit log).
    Rm(ServiceArg),
    /// Run a command with credentials injected as environment variables.
    Run(RunArgs),
    /// Show who fetched what, when, and with what result.
    Usage(UsageArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Name of this device (default: the host name).
    #[arg(long)]
    pub label: Option<String>,
    /// Replace an existing session with a new account (asks first).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ServiceArg {
    /// Service name, e.g. openai or github.com.
    pub service: String,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Service name, e.g. openai or github.com.
    pub service: String,
    /// The value. Avoid: it lands in shell history and is visible to other users in `ps`.
    pub value: Option<String>,
    /// Read the value from this file, byte for byte.
    #[arg(long, conflicts_with = "value", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Keep a single trailing newline on a one-line value read from stdin (stripped by default).
    #[arg(long)]
    pub exact: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Inject a credential: VAR=service (repeatable).
    #[arg(long = "env", short = 'e', value_name = "VAR=SERVICE")]
    pub env: Vec<String>,
    /// Do not mask credential values in the command's output.
    #[arg(long)]
    pub no_mask: bool,
    /// The command and its arguments (after `--`); run directly, no shell.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// How far back to look, e.g. 30m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Only rows about this service.
    #[arg(long)]
    pub service: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}
