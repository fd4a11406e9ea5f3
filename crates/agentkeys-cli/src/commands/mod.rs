//! One module per command group; [`dispatch`] routes a parsed command line to it. Each command
//! returns the process exit code on success (0, or the child's status for `run`).

mod init;
mod run;
mod usage;
mod vault;
mod whoami;

use clap::CommandFactory as _;

use crate::cli::{Cli, Command};
use crate::context::Context;
use crate::error::CliError;

pub async fn dispatch(ctx: &Context, command: Command) -> Result<u8, CliError> {
    match command {
        Command::Init(args) => init::init(ctx, args).await,
        Command::Whoami => whoami::whoami(ctx).await,
        Command::Store(args) => vault::store(ctx, args).await,
        Command::Read(args) => vault::read(ctx, &args.service).await,
        Command::List => vault::list(ctx).await,
        Command::Rm(args) => vault::remove(ctx, &args.service).await,
        Command::Run(args) => run::run(ctx, args).await,
        Command::Usage(args) => usage::usage(ctx, args).await,
        Command::Completions(args) => {
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "agentkeys", &mut script);
            ctx.out.bytes(&script)?;
            Ok(0)
        }
    }
}
