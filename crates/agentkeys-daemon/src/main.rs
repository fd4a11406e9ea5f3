//! The `agentkeys-daemon` binary.

fn main() -> std::process::ExitCode {
    agentkeys_daemon::main()
}
