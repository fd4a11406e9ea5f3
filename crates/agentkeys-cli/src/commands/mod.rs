//! One module per command group; [`dispatch`] routes a parsed command line to it. Each command
//! returns the process exit code on success (0, or the child's status for `run`).

mod agents;
mod config;
mod init;
mod requests;
mod run;
mod usage;
mod vault;
mod whoami;

use clap::CommandFactory as _;

use crate::cli::{AgentCommand, Cli, Command, ConfigCommand};
use crate::context::Context;
use crate::error::CliError;

pub async fn dispatch(ctx: &Context, command: Command) -> Result<u8, CliError> {
    let critical = match &command {
        Command::Approve(_) => Some("approve"),
        Command::Revoke(_) => Some("revoke"),
        Command::Teardown(_) => Some("teardown"),
        Command::Agent(AgentCommand::Create(_)) => Some("agent-create"),
        Command::Agent(AgentCommand::Upgrade(_)) => Some("agent-upgrade"),
        Command::Init(args) if args.force => Some("init-force"),
        _ => None,
    };
    if let Some(command) = critical {
        crate::presence::refuse_bare_yes(ctx, command)?;
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
        Command::Revoke(args) => agents::revoke(ctx, &args.agent, false).await,
        Command::Teardown(args) => agents::revoke(ctx, &args.agent, true).await,
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
