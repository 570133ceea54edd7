//! `luabpf`: compile Lua packet filters to eBPF objects, check them, and verify them against
//! the running kernel. See `luabpf --help`; the work is done in [`cli`].

mod alloc;
mod cli;

/// Size classes in huge-page mappings: a compile takes a fifth less time than with the C
/// library's allocator, mostly from fewer page faults (see [`alloc`]).
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

fn main() -> std::process::ExitCode {
    cli::main()
}
