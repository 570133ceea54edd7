//! Memory at exit. A command that exits right after its compile need not free the compile's
//! last structures piece by piece: the evaluated declarations (the syntax trees of the
//! program's functions) are a good part of what a small compile frees at its end (about 0.3M
//! of counter.lua's 9.5M instructions), and the kernel takes the whole heap back at once.
//! Only what is dropped at the end: memory freed mid-compile is reused by the later stages,
//! and leaking it costs more in page faults than freeing it does (the evaluation's Lua state
//! and module trees, tried: +150 to +350 faults per compile). The `luabpf` command says so at
//! its start (`exits_after_compile`); a library caller (build scripts, tests, long-lived
//! programs) frees everything as usual.

use std::sync::atomic::{AtomicBool, Ordering};

static EXITS_AFTER_COMPILE: AtomicBool = AtomicBool::new(false);

/// For a process that ends after its compile: from now on, what `release` is given is left
/// to the operating system.
pub fn exits_after_compile() {
    EXITS_AFTER_COMPILE.store(true, Ordering::Relaxed);
}

/// Drops `value`, or leaves it allocated in a process that exits after its compile.
pub(crate) fn release<T>(value: T) {
    if EXITS_AFTER_COMPILE.load(Ordering::Relaxed) {
        std::mem::forget(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn a_library_caller_frees_what_it_releases() {
        // (Tests never set the flag: they compile thousands of programs in one process.)
        let shared = Rc::new(());
        release(shared.clone());
        assert_eq!(Rc::strong_count(&shared), 1);
    }
}
