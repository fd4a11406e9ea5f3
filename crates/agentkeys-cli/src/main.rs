//! The `agentkeys` binary.

/// Every heap block is wiped when it is freed, so a credential `read` or `run` handled leaves no
/// copy behind in freed memory (PRODUCT.md §7).
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> = zeroizing_alloc::ZeroAlloc(std::alloc::System);

fn main() -> std::process::ExitCode {
    agentkeys_cli::main()
}
