//! `luabpf`: compile Lua packet filters to eBPF objects, check them, and verify them against
//! the running kernel. See `luabpf --help`; the work is done in [`cli`].

mod cli;

fn main() -> std::process::ExitCode {
    one_malloc_arena();
    cli::main()
}

/// Every thread allocates from the main heap. The compiler parses and evaluates on a thread of
/// its own (for its large stack), and glibc would give that thread an arena of its own, grown
/// a page at a time by `mprotect`: hundreds of system calls per compile, a visible part of a
/// compile's few milliseconds. The command runs one thread at a time, so one arena costs no
/// contention.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
