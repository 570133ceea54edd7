//! `luabpf`: compile Lua packet filters to eBPF objects, check them, and verify them against
//! the running kernel. See `luabpf --help`; the work is done in [`cli`].

mod alloc;
mod cli;

/// A compile's ~25,000 allocations cost a tenth of its instructions with the C library's
/// allocator (see [`alloc`]).
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

fn main() -> std::process::ExitCode {
    cli::main()
}
