//! The `agentkeys` binary.

fn main() -> std::process::ExitCode {
    agentkeys_cli::main()
}
