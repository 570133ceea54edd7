//! Attaching a loaded object to a network interface (XDP, tcx) or to a netfilter hook of the
//! network namespace, pinned so it outlives the process.
//!
//! Attachments are `bpf_link`s created with `BPF_LINK_CREATE` (no netlink
//! fallback: a link that cannot be pinned would not survive the command, and netlink would
//! silently replace another program's attachment). The link, the program and every map are
//! pinned under [`crate::pins`]; the metadata goes to `/run/luabpf/<program>/`.
//!
//! Re-attaching a program of the same name on the same hook and interface is a replacement:
//! the new object is loaded with the already pinned maps (contents kept, static tables not
//! rewritten), and the pinned link is switched to the new program with `BPF_LINK_UPDATE`
//! (atomic: no packet sees neither program). Netfilter links cannot be updated: a new link
//! takes the old one's place through a bridging link (`netfilter::replace_link`), so that here
//! too some program is attached at every moment.
//!
//! Every failure undoes the steps before it: pins created by this call are removed, a link
//! created by this call is never pinned (closing its fd detaches it), and a link already
//! switched to the new program is switched back.
//!
//! Attaching and detaching hold [`pins::lock`], so that concurrent commands (two attaches of
//! one name, a detach during a replace) take turns.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use runtime_bpf::object::Object;
use runtime_bpf::progtypes::ProgType;

use crate::load::{load_with, LoadError, LoadOptions};
use crate::netfilter::{self, NfHook};
use crate::pins::{self, Meta, Pins};
use crate::sys::{self, bpf, bpf_fd, errno_text, ptr_u64};

const BPF_OBJ_PIN: u32 = 6;
const BPF_LINK_CREATE: u32 = 28;
const BPF_LINK_UPDATE: u32 = 29;
const BPF_LINK_DETACH: u32 = 34;

// `enum bpf_attach_type`.
const BPF_XDP: u32 = 37;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// XDP attachment mode as asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Native, falling back to generic (skb) where the driver has no XDP support.
    Auto,
    Native,
    Skb,
}

/// Where to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp(XdpMode),
    Tc {
        egress: bool,
    },
    /// A netfilter hook of the caller's network namespace; `None`: the one the program's own
    /// options name (its ELF section, `netfilter/ipv4:local_in:-100`).
    Netfilter(Option<NfHook>),
}

impl Hook {
    /// `xdp`, `tc-ingress`, `tc-egress`, `netfilter`.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Xdp(_) => "xdp",
            Hook::Tc { egress: false } => "tc-ingress",
            Hook::Tc { egress: true } => "tc-egress",
            Hook::Netfilter(_) => "netfilter",
        }
    }
}

/// What to attach, where.
#[derive(Clone, Debug)]
pub struct AttachRequest<'a> {
    /// The network interface (ignored for netfilter, whose hooks are per network namespace).
    pub interface: &'a str,
    pub hook: Hook,
    /// The ELF object.
    pub object: &'a [u8],
    /// The program of the object to attach; needed only if it holds several for the hook.
    pub program: Option<&'a str>,
    /// The file the user named (shown by `list`).
    pub source: &'a str,
}

/// What [`attach`] did.
#[derive(Clone, Debug)]
pub struct Attached {
    pub meta: Meta,
    /// True if an attachment of the same name was replaced.
    pub replaced: bool,
    /// Maps whose pinned contents were reused.
    pub reused_maps: Vec<String>,
}

/// Why attaching (or detaching) failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Bad request: wrong program name, wrong hook for the program, bad object.
    #[error("{0}")]
    Usage(String),
    /// The interface does not exist in this network namespace.
    #[error("no network interface named `{0}` (in this network namespace)")]
    NoInterface(String),
    /// No attachment of that name.
    #[error("no program named `{0}` is attached by luabpf")]
    NotAttached(String),
    /// The name is taken by a different attachment, or leftovers are in the way.
    #[error("{0}")]
    Conflict(String),
    /// Loading failed (verifier refusals included).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A system call or file operation failed.
    #[error("{0}")]
    System(String),
}

#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

const _: () = assert!(std::mem::size_of::<ObjAttr>() == 16);
const _: () = assert!(std::mem::size_of::<LinkCreateAttr>() == 16);
const _: () = assert!(std::mem::size_of::<LinkUpdateAttr>() == 16);

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `BPF_OBJ_PIN`.
pub fn pin_fd(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: ptr_u64(c.as_ptr()),
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    // SAFETY: `pathname` is NUL-terminated and outlives the call.
    unsafe { bpf(BPF_OBJ_PIN, &mut attr) }.map(|_| ())
}

/// `BPF_OBJ_GET`.
pub fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: ptr_u64(c.as_ptr()),
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `pathname` is NUL-terminated and outlives the call.
    unsafe { bpf_fd(sys::BPF_OBJ_GET, &mut attr) }
}

pub(crate) fn link_create(prog: BorrowedFd<'_>, ifindex: u32, attach_type: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
    };
    // SAFETY: plain integers.
    unsafe { bpf_fd(BPF_LINK_CREATE, &mut attr) }
}

fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    // SAFETY: plain integers.
    unsafe { bpf(BPF_LINK_UPDATE, &mut attr) }.map(|_| ())
}

pub(crate) fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkDetachAttr {
        link_fd: link.as_raw_fd() as u32,
    };
    // SAFETY: plain integers.
    unsafe { bpf(BPF_LINK_DETACH, &mut attr) }.map(|_| ())
}

/// An XDP link of `prog` (named `program`) on `interface` (index `ifindex`), and the mode it got:
/// `native` or `skb`. `XdpMode::Auto` tries native mode and falls back to generic (skb) mode
/// where the driver has no XDP support, but not when another program holds the interface
/// (that would fail in skb mode too, with a less clear error). Shared by `attach` and the
/// skeletons' unpinned links.
pub(crate) fn xdp_link(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    mode: XdpMode,
    program: &str,
    interface: &str,
) -> Result<(OwnedFd, &'static str), AttachError> {
    let native = || link_create(prog, ifindex, BPF_XDP, XDP_FLAGS_DRV_MODE);
    let skb = || link_create(prog, ifindex, BPF_XDP, XDP_FLAGS_SKB_MODE);
    let failed = |m: &str, e: io::Error| {
        let hint = if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST)) {
            " (another XDP program is attached to this interface)"
        } else {
            ""
        };
        sys_err(
            &format!("cannot attach `{program}` at XDP ({m} mode) on {interface}{hint}"),
            e,
        )
    };
    match mode {
        XdpMode::Native => Ok((native().map_err(|e| failed("native", e))?, "native")),
        XdpMode::Skb => Ok((skb().map_err(|e| failed("skb", e))?, "skb")),
        XdpMode::Auto => match native() {
            Ok(l) => Ok((l, "native")),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST)) => Err(failed("native", e)),
            Err(_) => Ok((skb().map_err(|e| failed("skb", e))?, "skb")),
        },
    }
}

/// A tcx link of `prog` (named `program`) at `interface`'s ingress or egress (Linux 6.6 or later).
pub(crate) fn tcx_link(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    egress: bool,
    program: &str,
    interface: &str,
) -> Result<OwnedFd, AttachError> {
    let at = if egress { BPF_TCX_EGRESS } else { BPF_TCX_INGRESS };
    link_create(prog, ifindex, at, 0).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EINVAL) {
            " (tcx links need Linux 6.6 or later)"
        } else {
            ""
        };
        sys_err(
            &format!(
                "cannot attach `{program}` at tc {} on {interface}{hint}",
                if egress { "egress" } else { "ingress" }
            ),
            e,
        )
    })
}

/// The interface index of `name` in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is NUL-terminated.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Undo log: what this call created, removed in reverse on failure.
struct Undo {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    armed: bool,
}

impl Undo {
    fn new() -> Undo {
        Undo {
            files: Vec::new(),
            dirs: Vec::new(),
            armed: true,
        }
    }
    fn mkdir(&mut self, dir: &Path) -> Result<(), AttachError> {
        if dir.is_dir() {
            return Ok(());
        }
        std::fs::create_dir(dir).map_err(|e| AttachError::System(format!("cannot create {}: {e}", dir.display())))?;
        self.dirs.push(dir.to_owned());
        Ok(())
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for f in self.files.iter().rev() {
            let _ = std::fs::remove_file(f);
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn sys_err(what: &str, e: io::Error) -> AttachError {
    AttachError::System(format!("{what}: {}", errno_text(&e)))
}

/// Picks the program of `object` to attach at `hook`.
fn choose_program(object: &Object, hook: Hook, wanted: Option<&str>) -> Result<String, AttachError> {
    let fits = |section: &str| match hook {
        Hook::Xdp(_) => section == "xdp" || section.starts_with("xdp"),
        Hook::Tc { .. } => section == "tc" || section == "classifier" || section.starts_with("tc"),
        Hook::Netfilter(_) => ProgType::from_section(section) == Some(ProgType::Netfilter),
    };
    let all: Vec<(&str, &str)> = object
        .programs
        .iter()
        .map(|p| (p.name.as_str(), p.section.as_str()))
        .collect();
    let hook_kind = match hook {
        Hook::Xdp(_) => "an XDP",
        Hook::Tc { .. } => "a tc",
        Hook::Netfilter(_) => "a netfilter",
    };
    if let Some(w) = wanted {
        let Some((_, section)) = all.iter().find(|(n, _)| *n == w) else {
            let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
            return Err(AttachError::Usage(format!(
                "the object has no program named `{w}` (programs: {})",
                names.join(", ")
            )));
        };
        if !fits(section) {
            return Err(AttachError::Usage(format!(
                "program `{w}` (section `{section}`) is not {hook_kind} program"
            )));
        }
        return Ok(w.to_string());
    }
    let candidates: Vec<&str> = all.iter().filter(|(_, s)| fits(s)).map(|(n, _)| *n).collect();
    match candidates.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(AttachError::Usage(format!(
            "the object holds no {} program{}",
            match hook {
                Hook::Xdp(_) => "XDP",
                Hook::Tc { .. } => "tc",
                Hook::Netfilter(_) => "netfilter",
            },
            if all.is_empty() {
                String::new()
            } else {
                format!(
                    " (it holds: {})",
                    all.iter()
                        .map(|(n, s)| format!("{n} in section {s}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ))),
        many => Err(AttachError::Usage(format!(
            "the object holds several programs for this hook ({}): choose one with --program",
            many.join(", ")
        ))),
    }
}

/// Attaches (or replaces) a program; see the module documentation.
pub fn attach(req: &AttachRequest<'_>) -> Result<Attached, AttachError> {
    let read = runtime_bpf::elf::read_detailed(req.object)
        .map_err(|e| AttachError::Usage(format!("cannot read the object: {e}")))?;
    let object = read.object;
    let name = choose_program(&object, req.hook, req.program)?;
    if !pins::valid_name(&name) {
        return Err(AttachError::Usage(format!(
            "program name `{name}` cannot be used as a pin name"
        )));
    }
    let (hook, interface, ifindex) = match req.hook {
        Hook::Netfilter(spec) => {
            let section = &object
                .programs
                .iter()
                .find(|p| p.name == name)
                .expect("chosen above")
                .section;
            (Hook::Netfilter(Some(netfilter_hook(spec, section)?)), "", 0)
        }
        other => {
            let i = ifindex(req.interface).ok_or_else(|| AttachError::NoInterface(req.interface.to_string()))?;
            (other, req.interface, i)
        }
    };
    if !pins::is_bpffs(Path::new(pins::BPFFS)) {
        return Err(AttachError::System(format!(
            "no BPF filesystem at {}: mount one (`mount -t bpf bpf {}`); note that \
             `ip netns exec` remounts /sys and hides it: use `nsenter --net=/run/netns/NS` instead",
            pins::BPFFS,
            pins::BPFFS
        )));
    }

    let _lock = pins::lock().map_err(|e| sys_err(&format!("cannot lock {}", pins::STATE_ROOT), e))?;
    let p = Pins::new(&name);
    let existing = pins::read_meta(&name)
        .map_err(|e| AttachError::System(format!("cannot read {}: {e}", p.meta_file().display())))?;
    let replace = p.link().exists();
    if replace {
        let Some(old) = &existing else {
            return Err(AttachError::Conflict(format!(
                "{} exists but luabpf has no record of it in {}: remove it with `luabpf detach {name}`",
                p.link().display(),
                p.state_dir().display()
            )));
        };
        if old.hook == hook.name() && old.interface == interface && old.ifindex != ifindex {
            return Err(AttachError::Conflict(format!(
                "{} was re-created since `{name}` was attached to it (interface index {} then, {ifindex} \
                 now): the old attachment is gone with it; remove it with `luabpf detach {name}`",
                interface, old.ifindex
            )));
        }
        if old.hook != hook.name() || old.interface != interface || old.ifindex != ifindex {
            return Err(AttachError::Conflict(format!(
                "program `{name}` is already attached at {}: detach it first (`luabpf detach {name}`)",
                old.place()
            )));
        }
        if let Hook::Netfilter(Some(spec)) = hook {
            if old.mode != spec.to_string() {
                return Err(AttachError::Conflict(format!(
                    "program `{name}` is already attached at {}: a replacement keeps the hook and \
                     priority; detach it first to move it (`luabpf detach {name}`)",
                    old.place()
                )));
            }
        }
        if let Hook::Xdp(mode) = hook {
            let want = match mode {
                XdpMode::Auto => None,
                XdpMode::Native => Some("native"),
                XdpMode::Skb => Some("skb"),
            };
            if want.is_some_and(|w| w != old.mode) {
                return Err(AttachError::Conflict(format!(
                    "program `{name}` is attached in {} mode on {}: a replacement keeps the mode; \
                     detach it first to change it",
                    old.mode, old.interface
                )));
            }
        }
    } else if p.exists() {
        return Err(AttachError::Conflict(format!(
            "leftovers of a previous attachment of `{name}` are in the way ({} or {}): \
             remove them with `luabpf detach {name}`",
            p.dir().display(),
            p.state_dir().display()
        )));
    }

    let mut undo = Undo::new();
    undo.mkdir(Path::new(pins::PIN_ROOT))?;
    undo.mkdir(&p.dir())?;
    undo.mkdir(&p.maps_dir())?;

    let mut opts = LoadOptions::default();
    let mut reused = Vec::new();
    for m in &object.maps {
        if !pins::valid_name(&m.name) {
            return Err(AttachError::Usage(format!(
                "map name `{}` cannot be used as a pin name",
                m.name
            )));
        }
        let path = p.map(&m.name);
        if path.exists() {
            reused.push(m.name.clone());
            opts.skip_tables.push(m.name.clone());
        } else {
            undo.files.push(path.clone());
        }
        opts.map_pins.push((m.name.clone(), path));
    }
    let loaded = load_with(req.object, &opts)?;

    // Reused maps must be what the new object declares.
    for m in &object.maps {
        if !reused.contains(&m.name) {
            continue;
        }
        let raw = loaded.map(&m.name).map_err(|e| AttachError::System(e.to_string()))?;
        let info = raw.info();
        if info.map_type != m.kind as u32
            || info.key_size != m.key.size()
            || info.value_size != m.value.size()
            || info.max_entries != m.max_entries
        {
            return Err(AttachError::Conflict(format!(
                "map `{}` of the attached program (type {}, {}-byte keys, {}-byte values, {} entries) \
                 does not match the new object's ({}, {}-byte keys, {}-byte values, {} entries): \
                 its contents cannot be kept; detach first (`luabpf detach {name}`)",
                m.name,
                info.map_type,
                info.key_size,
                info.value_size,
                info.max_entries,
                m.kind.name(),
                m.key.size(),
                m.value.size(),
                m.max_entries
            )));
        }
    }

    let prog_fd = loaded
        .program_fd(&name)
        .ok_or_else(|| AttachError::System(format!("program `{name}` was not loaded")))?;
    let now = pins::now();
    let maps: Vec<String> = {
        let mut v: Vec<String> = object.maps.iter().map(|m| m.name.clone()).collect();
        v.sort();
        v
    };

    if replace {
        let old = existing.expect("checked above");
        let link = open_pinned(&p.link()).map_err(|e| sys_err(&format!("cannot open {}", p.link().display()), e))?;
        let old_prog = open_pinned(&p.prog()).ok();
        let new_pin = p.dir().join("prog_new");
        let _ = std::fs::remove_file(&new_pin);
        pin_fd(prog_fd, &new_pin)
            .map_err(|e| sys_err(&format!("cannot pin the program at {}", new_pin.display()), e))?;
        undo.files.push(new_pin.clone());
        switch_link(&p, link.as_fd(), prog_fd, hook)?;
        let finish = || -> Result<Meta, AttachError> {
            std::fs::rename(&new_pin, p.prog())
                .map_err(|e| AttachError::System(format!("cannot rename {}: {e}", new_pin.display())))?;
            let meta = Meta {
                replaced_at: Some(now),
                source: req.source.to_string(),
                maps: maps.clone(),
                ..old.clone()
            };
            pins::write_state(&meta, req.object)
                .map_err(|e| AttachError::System(format!("cannot write {}: {e}", p.state_dir().display())))?;
            Ok(meta)
        };
        match finish() {
            Ok(meta) => {
                undo.armed = false;
                Ok(Attached {
                    meta,
                    replaced: true,
                    reused_maps: reused,
                })
            }
            Err(e) => {
                // Back to the old program: the attachment stays as it was.
                if let Some(old_prog) = &old_prog {
                    let _ = switch_link(&p, link.as_fd(), old_prog.as_fd(), hook);
                    if !p.prog().exists() {
                        let _ = pin_fd(old_prog.as_fd(), &p.prog());
                    }
                }
                Err(e)
            }
        }
    } else {
        let (link, mode) = match hook {
            Hook::Netfilter(spec) => {
                let spec = spec.expect("resolved above");
                let l = netfilter::link_create(prog_fd, spec).map_err(|e| netfilter_link_error(&name, spec, e))?;
                (l, spec.to_string())
            }
            Hook::Xdp(mode) => {
                let (l, m) = xdp_link(prog_fd, ifindex, mode, &name, req.interface)?;
                (l, m.to_string())
            }
            Hook::Tc { egress } => (
                tcx_link(prog_fd, ifindex, egress, &name, req.interface)?,
                "tcx".to_string(),
            ),
        };
        // Until the link is pinned, dropping `link` detaches it.
        undo.files.push(p.prog());
        pin_fd(prog_fd, &p.prog())
            .map_err(|e| sys_err(&format!("cannot pin the program at {}", p.prog().display()), e))?;
        let meta = Meta {
            program: name.clone(),
            hook: hook.name().to_string(),
            mode,
            interface: interface.to_string(),
            ifindex,
            attached_at: now,
            replaced_at: None,
            source: req.source.to_string(),
            maps,
        };
        undo.dirs.insert(0, p.state_dir());
        undo.files.push(p.meta_file());
        undo.files.push(p.object_file());
        pins::write_state(&meta, req.object)
            .map_err(|e| AttachError::System(format!("cannot write {}: {e}", p.state_dir().display())))?;
        undo.files.push(p.link());
        pin_fd(link.as_fd(), &p.link())
            .map_err(|e| sys_err(&format!("cannot pin the link at {}", p.link().display()), e))?;
        undo.armed = false;
        drop(link);
        Ok(Attached {
            meta,
            replaced: false,
            reused_maps: reused,
        })
    }
}

/// The netfilter hook to attach at: the one asked for, else the one the program's section names.
fn netfilter_hook(asked: Option<NfHook>, section: &str) -> Result<NfHook, AttachError> {
    if let Some(h) = asked {
        return Ok(h);
    }
    match NfHook::from_section(section) {
        Some(Ok(h)) => Ok(h),
        Some(Err(e)) => Err(AttachError::Usage(format!("the program's section `{section}`: {e}"))),
        None => Err(AttachError::Usage(format!(
            "the program (section `{section}`) does not say which netfilter hook it wants: \
             give one with --netfilter FAMILY:HOOK:PRIORITY, e.g. ipv4:local_in:-100"
        ))),
    }
}

pub(crate) fn netfilter_link_error(name: &str, spec: NfHook, e: io::Error) -> AttachError {
    let hint = match e.raw_os_error() {
        Some(libc::EBUSY) => format!(
            " (another BPF program is attached at {} {} with priority {}: the kernel allows one per \
             hook and priority; choose another priority)",
            spec.family.name(),
            spec.hook_name(),
            spec.priority
        ),
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => " (netfilter links need Linux 6.4 or later)".to_string(),
        _ => String::new(),
    };
    sys_err(&format!("cannot attach `{name}` at netfilter {spec}{hint}"), e)
}

/// Points the pinned attachment of `p` (open as `link`) at `prog`: `BPF_LINK_UPDATE` for XDP
/// and tcx; netfilter links cannot be updated, so a new link replaces the pinned one without a
/// moment when neither program runs (`netfilter::replace_link`).
fn switch_link(p: &Pins, link: BorrowedFd<'_>, prog: BorrowedFd<'_>, hook: Hook) -> Result<(), AttachError> {
    match hook {
        Hook::Netfilter(spec) => {
            netfilter::replace_link(&p.link(), prog, spec.expect("resolved")).map_err(AttachError::System)
        }
        _ => link_update(link, prog).map_err(|e| {
            sys_err(
                "cannot switch the attached link to the new program (BPF_LINK_UPDATE)",
                e,
            )
        }),
    }
}

/// Detaches a program attached by luabpf and removes its pins and state.
pub fn detach(name: &str) -> Result<Option<Meta>, AttachError> {
    if !pins::valid_name(name) {
        return Err(AttachError::NotAttached(name.to_string()));
    }
    let _lock = pins::lock().map_err(|e| sys_err(&format!("cannot lock {}", pins::STATE_ROOT), e))?;
    let p = Pins::new(name);
    if !p.exists() {
        return Err(AttachError::NotAttached(name.to_string()));
    }
    let meta = pins::read_meta(name).ok().flatten();
    if p.link().exists() {
        match open_pinned(&p.link()) {
            Ok(link) => {
                // Detach now rather than when the kernel frees the unpinned link. A link
                // whose interface went away is already detached.
                if let Err(e) = link_detach(link.as_fd()) {
                    if !matches!(
                        e.raw_os_error(),
                        Some(libc::ENOLINK) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
                    ) {
                        return Err(sys_err(&format!("cannot detach {}", p.link().display()), e));
                    }
                }
            }
            Err(e) => return Err(sys_err(&format!("cannot open {}", p.link().display()), e)),
        }
    }
    let failures = p.remove_all();
    if !failures.is_empty() {
        return Err(AttachError::System(format!(
            "detached, but could not remove: {}",
            failures.join("; ")
        )));
    }
    Ok(meta)
}
