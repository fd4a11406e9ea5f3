//! The `agentkeys-daemon` binary.

/// A hardened allocator for the process that holds credentials (PRODUCT.md §7): mimalloc in
/// secure mode — guard pages between its pages, encoded free lists, randomized allocation — so a
/// heap overflow or use-after-free is harder to turn into a read of another allocation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    agentkeys_daemon::main()
}
