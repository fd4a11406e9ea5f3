//! The command line of `agentkeys`, defined once: parsing, `--help` and shell completions all
//! come from these types (PRODUCT.md §4 is the contract).

use std::ffi::OsString;
use std::path::PathBuf;

use agentkeys_proto::agents::Tier;
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
    /// Trust only this CA (PEM) for an https:// server, instead of the system's roots.
    #[arg(long, env = "AGENTKEYS_CA_CERT", global = true, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Print machine-readable JSON instead of tables and messages.
    #[arg(long, global = true)]
    pub json: bool,
    /// Session slot to use.
    #[arg(long, env = "AGENTKEYS_SESSION_ID", global = true, default_value = "master", value_name = "ID")]
    pub session_id: String,
    /// Print only what was asked for (values, tables); no confirmations or notes.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Answer yes to y/N questions (not presence: critical operations also need --no-biometric).
    #[arg(long, global = true)]
    pub yes: bool,
    /// Skip the presence check of critical operations, with a warning (audited as skipped).
    #[arg(long, global = true)]
    pub no_biometric: bool,
    /// Do not open a browser for a presence key's ceremony: print its link to open on any
    /// machine that has the key (the default without a display, as over SSH).
    #[arg(long, env = "AGENTKEYS_NO_BROWSER", global = true)]
    pub no_browser: bool,
    /// Take the server's answers even where they are older than what this session verified
    /// before (a lower credential version): only after the server was restored from a backup.
    #[arg(long, global = true)]
    pub accept_rollback: bool,
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
    List(ListArgs),
    /// Remove a credential (its history stays in the audit log).
    Rm(ServiceArg),
    /// Run a command with credentials injected as environment variables.
    Run(RunArgs),
    /// Show who fetched what, when, and with what result.
    Usage(UsageArgs),
    /// List agents: id, label, aliases, tier, scope, last seen, status.
    Agents,
    /// Create or upgrade an agent.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Give an agent another name: `link build-bot --alias ci`.
    Link(LinkArgs),
    /// Show or change the services an agent may read.
    Scope(ScopeArgs),
    /// List pending requests (pairings you looked up, agents' access and tier requests).
    Requests,
    /// Approve a request by its code, after comparing what it shows.
    Approve(ApproveArgs),
    /// Follow the approval queue: print each new request (and show a desktop notification) as it
    /// arrives; `--approve` asks about each one. Ctrl-C stops.
    Listen(ListenArgs),
    /// Deny a request by its code.
    Deny(CodeArg),
    /// End every session of an agent at once (its next request fails).
    Revoke(AgentArg),
    /// Revoke an agent and delete its private credentials and every key wrapped to it.
    Teardown(AgentArg),
    /// List the account's master devices: id, label, how each joined, last seen, status.
    Devices,
    /// Join this machine to an account as a master device, or revoke one.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Recover the account on this machine with its recovery key (after the recovery delay).
    Recover(RecoverArgs),
    /// Replace the recovery key (critical): the new one is printed once.
    #[command(subcommand, name = "recovery-key")]
    RecoveryKey(RecoveryKeyCommand),
    /// Enroll, list or remove presence keys (security keys, Touch ID, Windows Hello): once one is
    /// enrolled, the server requires it for every critical operation.
    #[command(subcommand)]
    Presence(PresenceCommand),
    /// Show, set, test or explain the account's policy: rules that narrow what scope and tier
    /// give (README "Policy").
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show or change a setting (weakening presence is itself critical).
    #[command(subcommand)]
    Config(ConfigCommand),
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
    /// Seal the session with a passphrase (Argon2id) instead of the keychain or a key file;
    /// every command then asks for it on the terminal.
    #[arg(long)]
    pub passphrase: bool,
    /// Enroll a roaming authenticator (a YubiKey or another FIDO2 key) as the account's presence
    /// key right after creating it.
    #[arg(long)]
    pub roaming_authenticator: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Ask to become a master device of an account: prints a pair code and, once a master device
    /// looked it up, the OTP to type there (`agentkeys approve CODE`).
    Join(DeviceJoinArgs),
    /// End every session of another master device (critical), e.g. a stolen laptop.
    Revoke(DeviceRevokeArgs),
}

#[derive(Debug, Args)]
pub struct DeviceJoinArgs {
    /// Name of this device (default: the host name).
    #[arg(long)]
    pub label: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct DeviceRevokeArgs {
    /// The device: its id (dev_…) or label, as `agentkeys devices` lists it.
    pub device: String,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Complete the recovery this machine opened, once the recovery delay has passed.
    #[arg(long)]
    pub complete: bool,
    /// Keep waiting until the delay has passed, then complete.
    #[arg(long)]
    pub wait: bool,
    /// Name of this device (default: the host name).
    #[arg(long)]
    pub label: Option<String>,
    /// On completion, remove the account's presence keys (they were lost with the old
    /// machines); then enroll a new one with `agentkeys presence enroll`.
    #[arg(long)]
    pub replace_presence_keys: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the policy in force, or an earlier version.
    #[command(disable_version_flag = true)]
    Show(PolicyShowArgs),
    /// Validate FILE, show what it changes, and set it (critical when it removes or loosens a
    /// deny, require_approval or require_presence rule).
    Set(PolicySetArgs),
    /// Run the [[case]]s of CASES against the policy in force (or --policy FILE); print each
    /// mismatch and exit 1 if there is one.
    Test(PolicyTestArgs),
    /// Show which rule decided an audit row (its seq, from `usage --json`).
    Explain(PolicyExplainArgs),
}

#[derive(Debug, Args)]
pub struct PolicyShowArgs {
    /// An earlier version (from 1).
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,
}

#[derive(Debug, Args)]
pub struct PolicySetArgs {
    /// The policy, a TOML file of [[rule]]s.
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct PolicyTestArgs {
    /// The cases, a TOML file of [[case]]s (agent, service, action, at, uses, expect, rule).
    #[arg(value_name = "CASES")]
    pub cases: std::path::PathBuf,
    /// Test this policy file instead of the one in force (no server needed).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct PolicyExplainArgs {
    /// The audit row's sequence number.
    #[arg(value_name = "SEQ")]
    pub seq: i64,
}

#[derive(Debug, Subcommand)]
pub enum RecoveryKeyCommand {
    /// Make a new recovery key and print it once; the old one stops working.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum PresenceCommand {
    /// Enroll a presence key on the server's page (critical: the first needs this machine's
    /// presence check, later ones an enrolled key).
    Enroll(PresenceEnrollArgs),
    /// List the enrolled presence keys: name, kind, model, created, last used, sign count.
    List,
    /// Remove a presence key by name or id (critical; removing the last one turns the server's
    /// requirement off).
    Remove(PresenceRemoveArgs),
}

#[derive(Debug, Args)]
pub struct PresenceEnrollArgs {
    /// A roaming authenticator: a YubiKey or another FIDO2 security key (the default on Linux).
    #[arg(long, conflicts_with = "platform")]
    pub roaming: bool,
    /// A platform authenticator: Touch ID, Windows Hello (the default on macOS and Windows).
    #[arg(long)]
    pub platform: bool,
    /// A name for it, unique in the account (default: its kind and a number, e.g. roaming-1).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct PresenceRemoveArgs {
    /// The key's name or id (pk_…).
    pub key: String,
}

#[derive(Debug, Args)]
pub struct ServiceArg {
    /// Service name, e.g. openai or github.com.
    pub service: String,
    /// Use this agent's private namespace instead of the vault (id, label or alias).
    #[arg(long, value_name = "AGENT")]
    pub agent: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this agent's private credentials (id, label or alias).
    #[arg(long, value_name = "AGENT")]
    pub agent: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent and print a single-use link code for `agentkeys-daemon link`.
    Create(AgentCreateArgs),
    /// Change an agent's tier: safe (names only), standard (read its scope), admin.
    Upgrade(AgentUpgradeArgs),
}

#[derive(Debug, Args)]
pub struct AgentCreateArgs {
    /// A name for the agent, e.g. build-bot (letters, digits, . _ -).
    pub label: String,
    /// Services it may read, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "SERVICES")]
    pub scope: Vec<String>,
    /// Its tier.
    #[arg(long, default_value = "standard", value_parser = parse_tier)]
    pub tier: Tier,
}

#[derive(Debug, Args)]
pub struct AgentUpgradeArgs {
    /// The agent: id, label or alias.
    pub agent: String,
    /// The new tier.
    #[arg(long, value_parser = parse_tier)]
    pub tier: Tier,
}

fn parse_tier(text: &str) -> Result<Tier, String> {
    Tier::parse(text).ok_or_else(|| format!("{text:?} is not a tier: use safe, standard or admin"))
}

#[derive(Debug, Args)]
pub struct AgentArg {
    /// The agent: id, label or alias.
    pub agent: String,
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    /// The agent: id, label or alias.
    pub agent: String,
    /// The new name.
    #[arg(long)]
    pub alias: String,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(false).args(["add", "remove", "set", "list"])))]
pub struct ScopeArgs {
    /// The agent: id, label or alias.
    pub agent: String,
    /// Services to grant, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "SERVICES")]
    pub add: Vec<String>,
    /// Services to take away, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "SERVICES")]
    pub remove: Vec<String>,
    /// Exactly these services, comma-separated (an empty value removes all).
    #[arg(long, value_delimiter = ',', value_name = "SERVICES", num_args = 0..=1)]
    pub set: Option<Vec<String>>,
    /// Show the scope.
    #[arg(long)]
    pub list: bool,
}

#[derive(Debug, Args)]
pub struct CodeArg {
    /// The request code, e.g. 7K3D-QX2M.
    pub code: String,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Ask on the terminal about each request as it arrives: y approves it (the same critical
    /// approval as `approve`), d denies it, anything else leaves it pending.
    #[arg(long)]
    pub approve: bool,
    /// Print requests only: no desktop notifications.
    #[arg(long)]
    pub no_notify: bool,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The request code, e.g. 7K3D-QX2M.
    pub code: String,
    /// Grant these services instead of the ones asked for, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "SERVICES")]
    pub scope: Option<Vec<String>>,
    /// The OTP the daemon shows; the approval is refused if it differs from this request's.
    #[arg(long, value_name = "NNNNNN")]
    pub otp: Option<String>,
    /// Agent recovery: keep the agent's old devices (by default they are revoked).
    #[arg(long)]
    pub keep_old: bool,
    /// A release of a high-value credential: how many reads it serves (default 1, or any number
    /// within --for when only --for is given; at most 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub uses: Option<u32>,
    /// A release: how long it lasts, e.g. 10m or 2h (default 15m, at most 24h).
    #[arg(long = "for", value_name = "DURATION")]
    pub for_: Option<String>,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Service name, e.g. openai or github.com.
    pub service: String,
    /// Store it privately for this agent (id, label or alias): an override of the vault's.
    #[arg(long, value_name = "AGENT")]
    pub agent: Option<String>,
    /// The value. Avoid: it lands in shell history and is visible to other users in `ps`.
    pub value: Option<String>,
    /// Read the value from this file, byte for byte.
    #[arg(long, conflicts_with = "value", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Keep a single trailing newline on a one-line value read from stdin (stripped by default).
    #[arg(long)]
    pub exact: bool,
    /// Mark it high-value: no agent reads it until you approve that one use (`approve CODE`).
    /// `--high-value=false` clears it. Either is critical; without it the current mark is kept.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub high_value: Option<bool>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Inject a credential: VAR=service (repeatable).
    #[arg(long = "env", short = 'e', value_name = "VAR=SERVICE")]
    pub env: Vec<String>,
    /// Read from this agent's private namespace (id, label or alias).
    #[arg(long, value_name = "AGENT")]
    pub agent: Option<String>,
    /// Do not mask credential values in the command's output.
    #[arg(long)]
    pub no_mask: bool,
    /// The command and its arguments (after `--`); run directly, no shell.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this agent's activity (id, label or alias).
    pub agent: Option<String>,
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

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a setting: biometric (this machine), require-presence or recovery-delay (the account,
    /// on the server).
    Get(ConfigGetArgs),
    /// Change a setting: `biometric required|preferred|off`, `require-presence on|off`,
    /// `presence-attestation <PEM file>|yubico|none` (the roots a presence key's attestation
    /// must chain to; critical), `recovery-delay DURATION` (at least 1h, default 72h; shortening
    /// it is critical).
    Set(ConfigSetArgs),
}

#[derive(Debug, Args)]
pub struct ConfigGetArgs {
    /// The setting's name.
    #[arg(value_parser = ["biometric", "require-presence", "recovery-delay"])]
    pub key: String,
}

#[derive(Debug, Args)]
pub struct ConfigSetArgs {
    /// The setting's name.
    #[arg(value_parser = ["biometric", "require-presence", "presence-attestation", "recovery-delay"])]
    pub key: String,
    /// Its new value.
    pub value: String,
}
