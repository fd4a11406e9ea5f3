//! One module per command group; [`dispatch`] routes a parsed command line to it. Each command
//! returns the process exit code on success (0, or the child's status for `run`).

mod agents;
mod config;
mod devices;
mod init;
mod listen;
mod policy;
mod presence_keys;
mod requests;
mod run;
mod usage;
mod vault;
mod whoami;

use agentkeys_proto::critical::Critical;
use clap::CommandFactory as _;

use crate::cli::{
    AgentCommand, Cli, Command, ConfigCommand, DeviceCommand, PolicyCommand, PresenceCommand, RecoveryKeyCommand,
};
use crate::context::Context;
use crate::error::CliError;

/// The critical operation (PRODUCT.md §5) a command line is, when the command line alone says
/// so: the ones a bare `--yes` is refused for before any work. What only the current state can
/// tell (`scope --set` adding a service, `config set biometric preferred` below `required`) is
/// refused at the presence gate instead.
pub fn critical(command: &Command) -> Option<Critical> {
    match command {
        Command::Approve(_) => Some(Critical::Approve),
        Command::Listen(args) if args.approve => Some(Critical::Approve),
        Command::Store(args) if args.high_value.is_some() => Some(Critical::HighValueChange),
        Command::Revoke(_) => Some(Critical::Revoke),
        Command::Teardown(_) => Some(Critical::Teardown),
        Command::Agent(AgentCommand::Create(_)) => Some(Critical::AgentCreate),
        Command::Agent(AgentCommand::Upgrade(_)) => Some(Critical::AgentUpgrade),
        Command::Init(args) if args.force => Some(Critical::InitForce),
        Command::Scope(args) if !args.add.is_empty() => Some(Critical::ScopeWiden),
        Command::Config(ConfigCommand::Set(args))
            if args.value == "off" || args.key == config::PRESENCE_ATTESTATION =>
        {
            Some(Critical::ConfigWeaken)
        }
        Command::Presence(PresenceCommand::Enroll(_)) => Some(Critical::PresenceEnroll),
        Command::Presence(PresenceCommand::Remove(_)) => Some(Critical::PresenceRemove),
        Command::Device(DeviceCommand::Revoke(_)) => Some(Critical::DeviceRevoke),
        Command::Recover(_) => Some(Critical::Recover),
        Command::RecoveryKey(RecoveryKeyCommand::Rotate) => Some(Critical::RecoveryKeyRotate),
        _ => None,
    }
}

pub async fn dispatch(ctx: &Context, command: Command) -> Result<u8, CliError> {
    if let Some(op) = critical(&command) {
        crate::presence::refuse_bare_yes(ctx, op)?;
    }
    match command {
        Command::Init(args) => init::init(ctx, args).await,
        Command::Whoami => whoami::whoami(ctx).await,
        Command::Store(args) => vault::store(ctx, args).await,
        Command::Read(args) => vault::read(ctx, &args.service, args.agent.as_deref()).await,
        Command::List(args) => vault::list(ctx, args.agent.as_deref()).await,
        Command::Rm(args) => vault::remove(ctx, &args.service, args.agent.as_deref()).await,
        Command::Run(args) => run::run(ctx, args).await,
        Command::Usage(args) => usage::usage(ctx, args).await,
        Command::Agents => agents::list(ctx).await,
        Command::Agent(AgentCommand::Create(args)) => agents::create(ctx, args).await,
        Command::Agent(AgentCommand::Upgrade(args)) => agents::upgrade(ctx, args).await,
        Command::Link(args) => agents::link(ctx, args).await,
        Command::Scope(args) => agents::scope(ctx, args).await,
        Command::Requests => requests::list(ctx).await,
        Command::Approve(args) => requests::approve(ctx, args).await,
        Command::Deny(args) => requests::deny(ctx, &args.code).await,
        Command::Listen(args) => listen::listen(ctx, args).await,
        Command::Revoke(args) => agents::revoke(ctx, &args.agent, false).await,
        Command::Teardown(args) => agents::revoke(ctx, &args.agent, true).await,
        Command::Presence(PresenceCommand::Enroll(args)) => presence_keys::enroll(ctx, args).await,
        Command::Presence(PresenceCommand::List) => presence_keys::list(ctx).await,
        Command::Presence(PresenceCommand::Remove(args)) => presence_keys::remove(ctx, &args.key).await,
        Command::Devices => devices::list(ctx).await,
        Command::Device(DeviceCommand::Join(args)) => devices::join(ctx, args).await,
        Command::Device(DeviceCommand::Revoke(args)) => devices::revoke(ctx, &args.device).await,
        Command::Recover(args) => devices::recover(ctx, args).await,
        Command::RecoveryKey(RecoveryKeyCommand::Rotate) => devices::rotate_recovery_key(ctx).await,
        Command::Policy(PolicyCommand::Show(args)) => policy::show(ctx, args.version).await,
        Command::Policy(PolicyCommand::Set(args)) => policy::set(ctx, &args.file).await,
        Command::Policy(PolicyCommand::Test(args)) => policy::test(ctx, &args.cases, args.policy.as_deref()).await,
        Command::Policy(PolicyCommand::Explain(args)) => policy::explain(ctx, args.seq).await,
        Command::Config(ConfigCommand::Get(args)) => config::get(ctx, args).await,
        Command::Config(ConfigCommand::Set(args)) => config::set(ctx, args).await,
        Command::Completions(args) => {
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "agentkeys", &mut script);
            ctx.out.bytes(&script)?;
            Ok(0)
        }
    }
}
