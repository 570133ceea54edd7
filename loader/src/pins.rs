//! Where `luabpf attach` keeps what must outlive the command.
//!
//! Kernel objects are pinned in the BPF filesystem, one directory per program:
//!
//! ```text
//! /sys/fs/bpf/luabpf/<program>/link          the bpf_link (XDP or tcx): the attachment itself
//! /sys/fs/bpf/luabpf/<program>/prog          the program
//! /sys/fs/bpf/luabpf/<program>/maps/<map>    every map of the object
//! ```
//!
//! bpffs holds only BPF objects, so what luabpf needs to know about an attachment lives in a
//! plain directory on the `/run` tmpfs (which, like bpffs, does not survive a reboot):
//!
//! ```text
//! /run/luabpf/<program>/meta       `key=value` lines: hook, mode, interface, ifindex,
//!                                  attached_at, replaced_at (unix seconds), source, maps
//! /run/luabpf/<program>/object.o   a copy of the ELF object last attached
//! ```
//!
//! The object copy is where `luabpf map` finds the formats of keys and values: the map
//! declarations (`MapSpec` with their key and value `Format`s) are read back from the
//! object's BTF with `runtime_bpf::elf::read_detailed`, exactly as the compiler wrote them.
//!
//! The BPF filesystem must be mounted at `/sys/fs/bpf` in the mount namespace the command runs
//! in. `ip netns exec` remounts `/sys` (hiding bpffs): use `nsenter --net=/run/netns/NS`, which
//! changes only the network namespace.

use std::io;
use std::path::{Path, PathBuf};

/// The BPF filesystem mount point.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Where luabpf pins, under [`BPFFS`].
pub const PIN_ROOT: &str = "/sys/fs/bpf/luabpf";
/// Where luabpf keeps its metadata.
pub const STATE_ROOT: &str = "/run/luabpf";

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The paths of one program's pins and state.
#[derive(Clone, Debug)]
pub struct Pins {
    pub name: String,
}

impl Pins {
    pub fn new(name: &str) -> Pins {
        Pins { name: name.to_string() }
    }
    /// `/sys/fs/bpf/luabpf/<program>`.
    pub fn dir(&self) -> PathBuf {
        Path::new(PIN_ROOT).join(&self.name)
    }
    pub fn link(&self) -> PathBuf {
        self.dir().join("link")
    }
    pub fn prog(&self) -> PathBuf {
        self.dir().join("prog")
    }
    pub fn maps_dir(&self) -> PathBuf {
        self.dir().join("maps")
    }
    pub fn map(&self, map: &str) -> PathBuf {
        self.maps_dir().join(map)
    }
    /// `/run/luabpf/<program>`.
    pub fn state_dir(&self) -> PathBuf {
        Path::new(STATE_ROOT).join(&self.name)
    }
    pub fn meta_file(&self) -> PathBuf {
        self.state_dir().join("meta")
    }
    pub fn object_file(&self) -> PathBuf {
        self.state_dir().join("object.o")
    }

    /// Whether anything of this program exists (pins or state).
    pub fn exists(&self) -> bool {
        self.dir().exists() || self.state_dir().exists()
    }

    /// The names of the pinned maps, sorted.
    pub fn pinned_maps(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.maps_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Removes every pin and the state of this program. Returns what could not be removed.
    pub fn remove_all(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut rm = |p: &Path, dir: bool| {
            let r = if dir {
                std::fs::remove_dir(p)
            } else {
                std::fs::remove_file(p)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => failures.push(format!("{}: {e}", p.display())),
            }
        };
        for m in self.pinned_maps() {
            rm(&self.map(&m), false);
        }
        rm(&self.maps_dir(), true);
        rm(&self.prog(), false);
        rm(&self.dir().join("prog_new"), false);
        rm(&self.dir().join("link_new"), false);
        rm(&self.link(), false);
        rm(&self.dir(), true);
        rm(&self.meta_file(), false);
        rm(&self.state_dir().join("meta.new"), false);
        rm(&self.object_file(), false);
        rm(&self.state_dir().join("object.o.new"), false);
        rm(&self.state_dir(), true);
        failures
    }
}

/// The lock file, in [`STATE_ROOT`]; its dot keeps it apart from program names.
const LOCK_FILE: &str = ".lock";

/// An exclusive lock over luabpf's pins and state, held while attaching or detaching (until
/// dropped): concurrent commands take turns instead of seeing, and undoing, each other's
/// half-made attachments.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

/// Waits for the [`StateLock`].
pub fn lock() -> io::Result<StateLock> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(STATE_ROOT)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(STATE_ROOT).join(LOCK_FILE))?;
    loop {
        // SAFETY: flock on an open file; released when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(StateLock { _file: file });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Names usable in bpffs (which refuses names with a dot): letters, digits, `_` and `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `path` is a mounted BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `st` is a plain C struct, written by statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is writable.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// What `list` shows about one attachment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub program: String,
    /// `xdp`, `tc-ingress`, `tc-egress` or `netfilter`.
    pub hook: String,
    /// XDP: `native` or `skb`; tc: `tcx`; netfilter: `FAMILY:HOOK:PRIORITY`.
    pub mode: String,
    /// Empty for netfilter (its hooks belong to the network namespace).
    pub interface: String,
    pub ifindex: u32,
    /// Unix seconds of the first attach.
    pub attached_at: u64,
    /// Unix seconds of the last replacement, if any.
    pub replaced_at: Option<u64>,
    /// The file given to `attach`.
    pub source: String,
    pub maps: Vec<String>,
}

impl Meta {
    /// Where the program is attached, for messages: `xdp on eth0`, `netfilter ipv4:local_in:-100`.
    pub fn place(&self) -> String {
        if self.interface.is_empty() {
            format!("{} {}", self.hook, self.mode)
        } else {
            format!("{} on {}", self.hook, self.interface)
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut kv = |k: &str, v: &str| {
            s.push_str(k);
            s.push('=');
            // Values are single lines: newlines in a path are replaced.
            s.push_str(&v.replace('\n', "?"));
            s.push('\n');
        };
        kv("program", &self.program);
        kv("hook", &self.hook);
        kv("mode", &self.mode);
        kv("interface", &self.interface);
        kv("ifindex", &self.ifindex.to_string());
        kv("attached_at", &self.attached_at.to_string());
        if let Some(r) = self.replaced_at {
            kv("replaced_at", &r.to_string());
        }
        kv("source", &self.source);
        kv("maps", &self.maps.join(","));
        s
    }

    pub fn parse(text: &str) -> Meta {
        let mut m = Meta::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "program" => m.program = v.to_string(),
                "hook" => m.hook = v.to_string(),
                "mode" => m.mode = v.to_string(),
                "interface" => m.interface = v.to_string(),
                "ifindex" => m.ifindex = v.parse().unwrap_or(0),
                "attached_at" => m.attached_at = v.parse().unwrap_or(0),
                "replaced_at" => m.replaced_at = v.parse().ok(),
                "source" => m.source = v.to_string(),
                "maps" => m.maps = v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
                _ => {}
            }
        }
        m
    }
}

/// The metadata of an attached program, `None` if there is none.
pub fn read_meta(name: &str) -> io::Result<Option<Meta>> {
    match std::fs::read_to_string(Pins::new(name).meta_file()) {
        Ok(text) => Ok(Some(Meta::parse(&text))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the metadata and the object copy (each to a temporary file renamed into place).
pub fn write_state(meta: &Meta, object: &[u8]) -> io::Result<()> {
    let pins = Pins::new(&meta.program);
    std::fs::create_dir_all(pins.state_dir())?;
    let obj_tmp = pins.state_dir().join("object.o.new");
    std::fs::write(&obj_tmp, object)?;
    std::fs::rename(&obj_tmp, pins.object_file())?;
    let meta_tmp = pins.state_dir().join("meta.new");
    std::fs::write(&meta_tmp, meta.to_text())?;
    std::fs::rename(&meta_tmp, pins.meta_file())?;
    Ok(())
}

/// Every program luabpf has pins or state for, sorted.
pub fn programs() -> Vec<String> {
    let mut names = Vec::new();
    for root in [PIN_ROOT, STATE_ROOT] {
        if let Ok(rd) = std::fs::read_dir(root) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() && !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    names.sort();
    names
}

/// `2026-11-29T06:35:53Z` for unix seconds.
pub fn format_time(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip() {
        let m = Meta {
            program: "counter".into(),
            hook: "xdp".into(),
            mode: "native".into(),
            interface: "veth0".into(),
            ifindex: 7,
            attached_at: 1_700_000_000,
            replaced_at: Some(1_700_000_100),
            source: "/tmp/x.lua".into(),
            maps: vec!["a".into(), "b".into()],
        };
        assert_eq!(Meta::parse(&m.to_text()), m);
    }

    #[test]
    fn times_and_names() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert!(valid_name("sni_filter"));
        assert!(!valid_name("../x") && !valid_name("") && !valid_name(".."));
    }
}
