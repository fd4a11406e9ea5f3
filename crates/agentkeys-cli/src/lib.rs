//! `agentkeys`, the master CLI, as a library: [`main`] parses the command line, builds the
//! context and dispatches to [`commands`]. The binary's `main.rs` only calls it.

pub mod ceremony;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod error;
pub mod output;
pub mod presence;
pub mod prompt;

use clap::Parser as _;

/// Runs the CLI and returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let out = output::Output { json: cli.global.json, quiet: cli.global.quiet };
    // No core dumps and not dumpable before any secret is read (PRODUCT.md §7). No
    // PR_SET_NO_NEW_PRIVS here: the human's `agentkeys run -- sudo …` must keep working.
    if let Err(e) = agentkeys_core::harden::harden(agentkeys_core::harden::Options::default()) {
        return std::process::ExitCode::from(out.error(&error::CliError::new(
            error::exit::ERROR,
            format!("cannot harden the process ({e}): refusing to handle credentials without it"),
            "check that the container or sandbox allows prctl(PR_SET_DUMPABLE) and setrlimit",
        )));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            return std::process::ExitCode::from(out.error(&error::CliError::new(
                error::exit::ERROR,
                format!("cannot start: {e}"),
                "retry",
            )));
        }
    };
    let result = runtime.block_on(async {
        let ctx = context::Context::new(cli.global)?;
        let asks = std::sync::Arc::new(presence::RulePresence(ctx.fork()));
        let ctx = ctx.with_presence_on_demand(asks);
        commands::dispatch(&ctx, cli.command).await
    });
    // A question left unanswered (`listen --approve` stopped by Ctrl-C) or a keychain call past
    // its timeout still holds a blocking thread: the command is over, so do not wait for it.
    runtime.shutdown_background();
    std::process::ExitCode::from(match result {
        Ok(code) => code,
        Err(error) => out.error(&error),
    })
}
