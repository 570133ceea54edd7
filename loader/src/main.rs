//! `luabpf`: compile Lua packet filters to eBPF objects, check them, and verify them against
//! the running kernel. See `luabpf --help`; the work is done in [`cli`].

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
