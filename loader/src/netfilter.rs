//! Netfilter programs, which aya 0.14 does not know: loading, test runs and links, all through
//! `bpf(2)` directly.
//!
//! - Loading: `BPF_PROG_LOAD` with `prog_type` NETFILTER (32) and the mandatory
//!   `expected_attach_type` BPF_NETFILTER (45). The map `ld_imm64`s get the fds of the maps aya
//!   created for the rest of the object; each kfunc call gets the BTF id of its kernel function,
//!   looked up by name in /sys/kernel/btf/vmlinux (ids differ between kernel builds).
//! - Test runs: the kernel's `bpf_prog_test_run_nf` builds an skb from the data; with the default
//!   hook state (LOCAL_OUT) the data is the IP packet itself, and the context (`struct
//!   nf_hook_state`, only `hook` and `pf` may be set) says whether it is IPv4 or IPv6.
//! - Links: `BPF_LINK_CREATE` with `{pf, hooknum, priority, flags}`. Netfilter links cannot be
//!   updated: a replacement creates the new link before the old one is removed, and the two
//!   must differ in priority while both exist (the kernel refuses two links of one hook at one
//!   priority).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use runtime_bpf::elf::ProgramBtf;
use runtime_bpf::isa::{BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_FD};
use runtime_bpf::object::ProgramCode;
use runtime_bpf::progtypes::{ProgType, BPF_NETFILTER};

use crate::attach::{link_detach, open_pinned, pin_fd};
use crate::load::{LoadError, VerifierError};
use crate::sys::{self, bpf, bpf_fd, errno_text, ptr_u64};
use crate::testrun::{TestRunError, TestRunResult};

const BPF_LINK_CREATE: u32 = 28;
const BPF_LINK_GET_FD_BY_ID: u32 = 30;
const BPF_LINK_GET_NEXT_ID: u32 = 31;
/// `BPF_LINK_TYPE_NETFILTER`.
const LINK_TYPE_NETFILTER: u32 = 10;

/// `NFPROTO_IPV4`, `NFPROTO_IPV6`.
const NFPROTO_IPV4: u32 = 2;
const NFPROTO_IPV6: u32 = 10;
/// `enum nf_inet_hooks`, in order.
pub const HOOKS: [&str; 5] = ["prerouting", "local_in", "forward", "local_out", "postrouting"];
const NF_INET_LOCAL_OUT: u8 = 3;

/// Verifier log buffer for a refused program: the kernel keeps the tail when it overflows.
const LOG_SIZE: usize = 4 << 20;

/// An IP family netfilter programs attach to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// `NFPROTO_*`.
    pub fn pf(self) -> u32 {
        match self {
            Family::Ipv4 => NFPROTO_IPV4,
            Family::Ipv6 => NFPROTO_IPV6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// Where a netfilter program is attached: `ipv4:local_in:-100`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NfHook {
    pub family: Family,
    /// Index into [`HOOKS`] (`enum nf_inet_hooks`).
    pub hooknum: u32,
    pub priority: i32,
}

impl NfHook {
    /// Parses `FAMILY:HOOK:PRIORITY` (`ipv4:local_in:-100`); the error says what is wrong.
    pub fn parse(spec: &str) -> Result<NfHook, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let [family, hook, priority] = parts.as_slice() else {
            return Err(format!(
                "bad netfilter hook `{spec}`: expected FAMILY:HOOK:PRIORITY, e.g. ipv4:local_in:-100"
            ));
        };
        let family = match *family {
            "ipv4" => Family::Ipv4,
            "ipv6" => Family::Ipv6,
            other => return Err(format!("bad netfilter family `{other}` in `{spec}`: ipv4 or ipv6")),
        };
        let hooknum = HOOKS
            .iter()
            .position(|h| h == hook)
            .ok_or_else(|| format!("bad netfilter hook `{hook}` in `{spec}`: one of {}", HOOKS.join(", ")))?
            as u32;
        let priority = priority
            .parse::<i32>()
            .ok()
            .filter(|p| *p != i32::MIN && *p != i32::MAX)
            .ok_or_else(|| {
                format!(
                    "bad netfilter priority `{priority}` in `{spec}`: a 32-bit integer other than \
                     INT_MIN and INT_MAX (which the kernel reserves)"
                )
            })?;
        Ok(NfHook {
            family,
            hooknum,
            priority,
        })
    }

    /// The hook a program's ELF section names (`netfilter/ipv4:local_in:-100`), if it names one.
    pub fn from_section(section: &str) -> Option<Result<NfHook, String>> {
        let spec = section.strip_prefix(ProgType::Netfilter.section())?.strip_prefix('/')?;
        Some(NfHook::parse(spec))
    }

    pub fn hook_name(self) -> &'static str {
        HOOKS[self.hooknum as usize]
    }
}

impl fmt::Display for NfHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.family.name(), self.hook_name(), self.priority)
    }
}

/// The BTF id of kernel function `name` in the running kernel.
pub fn kfunc_btf_id(name: &str) -> Result<u32, String> {
    let btf = crate::load::vmlinux_btf().ok_or("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    btf.id_by_type_name_kind(name, aya_obj::btf::BtfKind::Func)
        .map_err(|_| format!("the kernel has no function `{name}` in its BTF (kfuncs need Linux 6.4 or later)"))
}

/// `BPF_PROG_LOAD`'s attributes up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
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
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
}
const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 112);

/// `BPF_BTF_LOAD`'s attributes.
#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    /// `btf_log_true_size`, written by the kernel.
    _out: u32,
}
const _: () = assert!(std::mem::size_of::<BtfLoadAttr>() == 32);
const BPF_BTF_LOAD: u32 = 18;

/// Loads a program's BTF; on refusal, the BTF verifier's log.
fn load_btf(btf: &[u8]) -> Result<OwnedFd, LoadError> {
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = BtfLoadAttr {
            btf: ptr_u64(btf.as_ptr()),
            btf_size: btf.len() as u32,
            ..BtfLoadAttr::default()
        };
        if let Some(log) = log {
            attr.btf_log_level = 1;
            attr.btf_log_size = log.len() as u32;
            attr.btf_log_buf = ptr_u64(log.as_mut_ptr());
        }
        // SAFETY: `btf` and the log buffer outlive the call and have the sizes declared.
        unsafe { bpf_fd(BPF_BTF_LOAD, &mut attr) }
    };
    attempt(None).map_err(|source| {
        let mut log = vec![0u8; 1 << 16];
        let _ = attempt(Some(&mut log));
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        LoadError::Btf {
            log: String::from_utf8_lossy(&log[..end]).into_owned(),
            source,
        }
    })
}

/// `bpf_func_info` and `bpf_line_info` records as `BPF_PROG_LOAD` reads them.
fn ext_records(btf: &ProgramBtf) -> (Vec<u32>, Vec<u32>) {
    let func = btf.func_info.iter().flat_map(|f| [f.insn_off, f.type_id]).collect();
    let line = btf
        .line_info
        .iter()
        .flat_map(|l| [l.insn_off, l.file_name_off, l.line_off, l.line_col])
        .collect();
    (func, line)
}

/// Loads one netfilter program with its BTF (function prototypes, so that global functions are
/// verified on their own, and line info, so that the verifier's log names the Lua lines).
/// `map_fd` gives the fd of the object's map `i` (`ProgramCode::map_relocs` indexes
/// `Object::maps`). Returns the program fd and the number of instructions the verifier processed.
pub(crate) fn load_program(
    code: &ProgramCode,
    btf: &ProgramBtf,
    map_fd: &dyn Fn(usize) -> Option<RawFd>,
) -> Result<(OwnedFd, Option<u32>), LoadError> {
    let program_err = |message: String| LoadError::Program {
        program: code.name.clone(),
        message,
    };
    let mut insns = code.insns.clone();
    for &(slot, map) in &code.map_relocs {
        let fd = map_fd(map).ok_or_else(|| program_err(format!("map #{map} of the object was not created")))?;
        let insn = insns
            .get_mut(slot)
            .ok_or_else(|| program_err(format!("map relocation at slot {slot} is outside the program")))?;
        insn.src = BPF_PSEUDO_MAP_FD;
        insn.imm = fd;
    }
    for (slot, name) in &code.kfunc_relocs {
        let id = kfunc_btf_id(name).map_err(program_err)?;
        let insn = insns
            .get_mut(*slot)
            .ok_or_else(|| program_err(format!("kfunc call at slot {slot} is outside the program")))?;
        insn.src = BPF_PSEUDO_KFUNC_CALL;
        insn.imm = id as i32;
    }
    let bytes: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
    let btf_fd = load_btf(&btf.btf)?;
    let (func_info, line_info) = ext_records(btf);
    let license = c"GPL";
    let mut name = [0u8; 16];
    // The kernel keeps 15 bytes of the name (and accepts only [A-Za-z0-9_.]).
    for (d, s) in name.iter_mut().zip(code.name.bytes().take(15)) {
        *d = s;
    }
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = ProgLoadAttr {
            prog_type: ProgType::Netfilter.kernel_type(),
            insn_cnt: insns.len() as u32,
            insns: ptr_u64(bytes.as_ptr()),
            license: ptr_u64(license.as_ptr()),
            prog_name: name,
            expected_attach_type: BPF_NETFILTER,
            prog_btf_fd: btf_fd.as_raw_fd() as u32,
            func_info_rec_size: 8,
            func_info: ptr_u64(func_info.as_ptr()),
            func_info_cnt: btf.func_info.len() as u32,
            line_info_rec_size: 16,
            line_info: ptr_u64(line_info.as_ptr()),
            line_info_cnt: btf.line_info.len() as u32,
            ..ProgLoadAttr::default()
        };
        if let Some(log) = log {
            // Level 1 and statistics, as aya asks for on a refusal.
            attr.log_level = 1 | 4;
            attr.log_size = log.len() as u32;
            attr.log_buf = ptr_u64(log.as_mut_ptr());
        }
        // SAFETY: `insns`, `license`, the func and line records and the log buffer outlive the
        // call and have the sizes declared next to them.
        unsafe { bpf_fd(sys::BPF_PROG_LOAD, &mut attr) }
    };
    match attempt(None) {
        Ok(fd) => {
            let verified = verified_insns(fd.as_fd()).ok();
            Ok((fd, verified))
        }
        Err(first) => {
            // Again with a log, for the reason (the retry's own errno may be ENOSPC when the log
            // overflowed: the first one is the kernel's answer).
            let mut log = vec![0u8; LOG_SIZE];
            let _ = attempt(Some(&mut log));
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            // The caller, which has the object, locates the failing instruction's Lua line.
            let log = String::from_utf8_lossy(&log[..end]).into_owned();
            Err(LoadError::Verifier(Box::new(VerifierError::new(
                &code.name, &first, log,
            ))))
        }
    }
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `bpf_prog_info.verified_insns` (offset 216 of the kernel's struct).
fn verified_insns(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut info = [0u64; 32];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: 220,
        info: ptr_u64(info.as_mut_ptr()),
    };
    // SAFETY: `info` is writable for 256 bytes, more than `info_len`.
    unsafe { bpf(sys::BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok((info[27] & 0xffff_ffff) as u32)
}

/// `BPF_PROG_TEST_RUN` of a netfilter program on one IP packet (starting at the IP header).
/// The kernel runs it as at LOCAL_OUT of `family`; it needs at least 20 bytes (an IPv4 header).
pub fn test_run(
    prog_fd: BorrowedFd<'_>,
    ip_packet: &[u8],
    family: Family,
    repeat: u32,
) -> Result<TestRunResult, TestRunError> {
    // `struct nf_hook_state` starts with `u8 hook; u8 pf;` and the rest must be zero.
    let mut state = [0u8; 48];
    state[0] = NF_INET_LOCAL_OUT;
    state[1] = family.pf() as u8;
    let r = crate::testrun::test_run_with(
        prog_fd,
        &crate::testrun::TestRunInput {
            packet: ip_packet,
            repeat,
            ctx: Some(&state),
            flags: 0,
        },
    )?;
    // The kernel hands back neither the packet nor the context: netfilter programs cannot change
    // the packet, so it is what went in.
    Ok(TestRunResult {
        data_out: ip_packet.to_vec(),
        ctx_out: None,
        ..r
    })
}

/// `BPF_LINK_CREATE`'s attributes for a netfilter link.
#[repr(C)]
struct NfLinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    pf: u32,
    hooknum: u32,
    priority: i32,
    nf_flags: u32,
}
const _: () = assert!(std::mem::size_of::<NfLinkCreateAttr>() == 32);

/// Attaches `prog` at `hook` in the caller's network namespace; the link lives as long as the
/// returned fd or a pin of it.
pub fn link_create(prog: BorrowedFd<'_>, hook: NfHook) -> io::Result<OwnedFd> {
    let mut attr = NfLinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: 0,
        attach_type: BPF_NETFILTER,
        flags: 0,
        pf: hook.family.pf(),
        hooknum: hook.hooknum,
        priority: hook.priority,
        nf_flags: 0,
    };
    // SAFETY: plain integers.
    unsafe { bpf_fd(BPF_LINK_CREATE, &mut attr) }
}

/// How far from its priority a replacement's bridging link may go looking for a free one.
const BRIDGE_SEARCH: i32 = 8;

/// Replaces the netfilter link pinned at `link_path` (attached at `hook`) by one of `prog` at the
/// same hook and priority, with no moment when neither program is attached.
///
/// The kernel refuses two BPF links at one hook and priority (`EBUSY`) and cannot update a
/// netfilter link, so the new program first gets a bridging link at a free neighbouring
/// priority, pinned in place of the old link; then the old link is detached, the new one created
/// at `hook` and pinned over the bridge, which goes away with its last reference. For the
/// instant both run, a packet may meet both programs (a drop by either is a drop). Until the
/// bridge is pinned nothing has changed; after that, a failure leaves the bridge attached and
/// pinned, and the error says so.
pub fn replace_link(link_path: &Path, prog: BorrowedFd<'_>, hook: NfHook) -> Result<(), String> {
    let sys = |what: &str, e: io::Error| format!("{what}: {}", errno_text(&e));
    let old = open_pinned(link_path).map_err(|e| sys(&format!("cannot open {}", link_path.display()), e))?;
    let (bridge, bridge_hook) = bridge_link(prog, hook)?;
    pin_over(bridge.as_fd(), link_path)?;
    let stranded = |why: String| {
        format!("{why}; the new program is attached at {bridge_hook} instead: detach it and attach it again")
    };
    link_detach(old.as_fd()).map_err(|e| stranded(sys("cannot detach the old netfilter link", e)))?;
    drop(old);
    let new = link_create(prog, hook).map_err(|e| stranded(sys(&format!("cannot attach at {hook}"), e)))?;
    pin_over(new.as_fd(), link_path).map_err(stranded)?;
    // Unpinned now: closing it detaches the bridge.
    drop(bridge);
    Ok(())
}

/// Pins `link` at `path`, replacing what is pinned there in one rename (bpffs refuses dots in
/// names, hence `link_new`).
fn pin_over(link: BorrowedFd<'_>, path: &Path) -> Result<(), String> {
    let tmp = path.with_file_name(format!(
        "{}_new",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    ));
    let _ = std::fs::remove_file(&tmp);
    pin_fd(link, &tmp).map_err(|e| format!("cannot pin the new link at {}: {}", tmp.display(), errno_text(&e)))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot rename {} to {}: {e}", tmp.display(), path.display())
    })
}

/// A link of `prog` at the first free priority next to `hook`'s (-1, +1, -2, +2, ...).
fn bridge_link(prog: BorrowedFd<'_>, hook: NfHook) -> Result<(OwnedFd, NfHook), String> {
    let mut last = None;
    for d in 1..=BRIDGE_SEARCH {
        for priority in [hook.priority.checked_sub(d), hook.priority.checked_add(d)] {
            let Some(priority) = priority.filter(|p| *p != i32::MIN && *p != i32::MAX) else {
                continue;
            };
            let at = NfHook { priority, ..hook };
            match link_create(prog, at) {
                Ok(l) => return Ok((l, at)),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
                Err(e) => {
                    return Err(format!(
                        "cannot attach the new program next to {hook}: {}",
                        errno_text(&e)
                    ))
                }
            }
        }
    }
    Err(format!(
        "cannot replace the program at {hook}: every priority within {BRIDGE_SEARCH} of it is taken \
         by another BPF program ({}), and the kernel cannot switch a netfilter link in place",
        last.map(|e| errno_text(&e)).unwrap_or_default()
    ))
}

/// A netfilter link as the kernel describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NfLink {
    pub id: u32,
    pub prog_id: u32,
    pub hook: NfHook,
}

/// The prefix of `struct bpf_link_info` for netfilter links.
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    pf: u32,
    hooknum: u32,
    priority: i32,
    flags: u32,
}

/// What the kernel says about a link fd, if it is a netfilter link.
pub fn link_info(link: BorrowedFd<'_>) -> io::Result<Option<NfLink>> {
    let mut info = LinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: std::mem::size_of::<LinkInfo>() as u32,
        info: ptr_u64(&mut info as *mut LinkInfo),
    };
    // SAFETY: `info` is writable for `info_len` bytes.
    unsafe { bpf(sys::BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    if info.link_type != LINK_TYPE_NETFILTER {
        return Ok(None);
    }
    let family = match info.pf {
        NFPROTO_IPV4 => Family::Ipv4,
        NFPROTO_IPV6 => Family::Ipv6,
        _ => return Ok(None),
    };
    Ok(Some(NfLink {
        id: info.id,
        prog_id: info.prog_id,
        hook: NfHook {
            family,
            hooknum: info.hooknum.min(HOOKS.len() as u32 - 1),
            priority: info.priority,
        },
    }))
}

#[repr(C)]
struct GetIdAttr {
    start_id: u32,
    next_id: u32,
    open_flags: u32,
    _pad: u32,
}

/// Every netfilter link in the system (all network namespaces), by walking link ids.
pub fn links() -> io::Result<Vec<NfLink>> {
    let mut out = Vec::new();
    let mut id = 0u32;
    loop {
        let mut attr = GetIdAttr {
            start_id: id,
            next_id: 0,
            open_flags: 0,
            _pad: 0,
        };
        // SAFETY: plain integers; the kernel writes `next_id`.
        match unsafe { bpf(BPF_LINK_GET_NEXT_ID, &mut attr) } {
            Ok(_) => id = attr.next_id,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        let mut get = GetIdAttr {
            start_id: id,
            next_id: 0,
            open_flags: 0,
            _pad: 0,
        };
        // SAFETY: plain integers.
        let fd = match unsafe { bpf_fd(BPF_LINK_GET_FD_BY_ID, &mut get) } {
            Ok(fd) => fd,
            // Gone in between, or being freed (the kernel clears a dying link's id: EAGAIN).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EAGAIN)) => continue,
            Err(e) => return Err(e),
        };
        if let Some(l) = link_info(fd.as_fd())? {
            out.push(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_specs() {
        let h = NfHook::parse("ipv4:local_in:-100").unwrap();
        assert_eq!((h.family, h.hooknum, h.priority), (Family::Ipv4, 1, -100));
        assert_eq!(h.to_string(), "ipv4:local_in:-100");
        assert_eq!(NfHook::parse("ipv6:postrouting:7").unwrap().hooknum, 4);
        assert_eq!(
            NfHook::from_section("netfilter/ipv6:forward:3"),
            Some(Ok(NfHook {
                family: Family::Ipv6,
                hooknum: 2,
                priority: 3
            }))
        );
        assert_eq!(NfHook::from_section("netfilter"), None);
        for bad in [
            "ipv4:local_in",
            "arp:local_in:1",
            "ipv4:input:1",
            "ipv4:local_in:x",
            "ipv4:local_in:2147483647",
        ] {
            assert!(NfHook::parse(bad).is_err(), "{bad}");
        }
        assert!(NfHook::parse("ipv4:input:1").unwrap_err().contains("local_in"));
    }
}
