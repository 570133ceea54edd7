//! Whether this process can use `bpf()` at all, and how tests react when it cannot.
//!
//! [`kernel_available`] creates a one-entry array map and loads a two-instruction XDP program
//! (`r0 = XDP_PASS; exit`), then closes both. It fails in a container without `CAP_BPF`/
//! `CAP_SYS_ADMIN`, under seccomp filters that deny `bpf()`, or on kernels built without BPF.
//! The answer is computed once per process.
//!
//! Tests that need the kernel start with
//! `if !require_kernel_or_skip("name") { return; }`: a machine without `bpf()` skips them
//! loudly, and `LUABPF_REQUIRE_KERNEL=1` (set in CI) turns the skip into a failure.

use std::sync::OnceLock;

use runtime_bpf::isa::{encode_all, Insn, R0};

use crate::sys::{self, errno_text, ptr_u64};

/// The environment variable that makes a missing `bpf()` fail tests instead of skipping them.
pub const REQUIRE_KERNEL_ENV: &str = "LUABPF_REQUIRE_KERNEL";

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_PROG_TYPE_XDP: u32 = 6;

#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

// No implicit padding: the kernel refuses attributes with non-zero bytes it does not know.
const _: () = assert!(std::mem::size_of::<MapCreateAttr>() == 20);
const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 72);

fn probe() -> Result<(), String> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
    };
    // SAFETY: the attr holds no pointers.
    let map = unsafe { sys::bpf_fd(sys::BPF_MAP_CREATE, &mut attr) }
        .map_err(|e| format!("BPF_MAP_CREATE of a 1-entry array map: {}", errno_text(&e)))?;
    drop(map);

    let code = encode_all(&[Insn::mov64_imm(R0, 2), Insn::exit()]);
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"luabpf_prob");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: (code.len() / 8) as u32,
        insns: ptr_u64(code.as_ptr()),
        license: ptr_u64(license.as_ptr()),
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: `insns` and `license` point to live buffers of the declared sizes.
    let prog = unsafe { sys::bpf_fd(sys::BPF_PROG_LOAD, &mut attr) }
        .map_err(|e| format!("BPF_PROG_LOAD of a 2-instruction XDP program: {}", errno_text(&e)))?;
    drop(prog);
    Ok(())
}

/// `Ok(())` if this process can create maps and load XDP programs; otherwise why not.
pub fn kernel_available() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER.get_or_init(probe).clone()
}

/// For tests: `true` if the kernel is usable. Otherwise prints a loud SKIPPED line and
/// returns `false` — unless `LUABPF_REQUIRE_KERNEL=1`, in which case it panics with the reason.
pub fn require_kernel_or_skip(test_name: &str) -> bool {
    let required = std::env::var(REQUIRE_KERNEL_ENV).is_ok_and(|v| v == "1");
    skip_or_panic(test_name, kernel_available(), required)
}

fn skip_or_panic(test_name: &str, available: Result<(), String>, required: bool) -> bool {
    match available {
        Ok(()) => true,
        Err(reason) => {
            if required {
                panic!(
                    "{test_name}: bpf() unavailable: {reason} \
                     ({REQUIRE_KERNEL_ENV}=1 forbids skipping)"
                );
            }
            let bar = "!".repeat(72);
            eprintln!("\n{bar}");
            eprintln!("SKIPPED: {test_name}: bpf() unavailable: {reason}");
            eprintln!("         (set {REQUIRE_KERNEL_ENV}=1 to make this a failure)");
            eprintln!("{bar}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_rules() {
        assert!(skip_or_panic("t", Ok(()), true));
        assert!(!skip_or_panic("t", Err("EPERM".into()), false));
        let r = std::panic::catch_unwind(|| skip_or_panic("t", Err("EPERM (x)".into()), true));
        let msg = r.unwrap_err().downcast::<String>().map(|s| *s).unwrap_or_default();
        assert!(msg.contains("t: bpf() unavailable: EPERM (x)"), "{msg}");
    }
}
