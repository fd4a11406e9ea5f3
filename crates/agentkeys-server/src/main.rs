//! The `agentkeys-server` binary: parse, set up logging, run.

use std::io::IsTerminal as _;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let args = agentkeys_server::ServerArgs::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTKEYS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(color).with_writer(std::io::stderr).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(agentkeys_server::run(args)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
