//! The `agentkeys-daemon` binary.

/// The allocator of the process that holds credentials (PRODUCT.md §7): mimalloc in secure mode —
/// guard pages, encoded free lists, randomized allocation — so a heap overflow or use-after-free
/// is harder to turn into a read of another allocation; wrapped so every block is wiped when it
/// is freed, so no plaintext outlives the buffer that held it (a response being serialized, a
/// string the MCP SDK built).
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<mimalloc::MiMalloc> = zeroizing_alloc::ZeroAlloc(mimalloc::MiMalloc);

fn main() -> std::process::ExitCode {
    agentkeys_daemon::main()
}
