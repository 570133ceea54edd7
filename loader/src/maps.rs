//! Raw map access by file descriptor: keys and values as byte slices.
//!
//! [`RawMap`] asks the kernel for the map's type and key/value sizes once, checks every slice
//! against them (the kernel would otherwise read or write past a short buffer), and speaks
//! `BPF_MAP_{LOOKUP,UPDATE,DELETE}_ELEM` and `BPF_MAP_GET_NEXT_KEY` directly.
//!
//! Per-CPU maps (`percpu_array`, `percpu_hash`, `lru_percpu_hash`) hold one value per
//! *possible* CPU; the kernel exchanges them as one buffer with each CPU's value padded to a
//! multiple of 8 bytes. [`RawMap::lookup_percpu`] and [`RawMap::update_percpu`] unpack and pack
//! that buffer; [`RawMap::update`] on a per-CPU map writes the same value on every CPU.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use runtime_bpf::object::MapKind;

use crate::sys::{self, bpf, errno_text, ptr_u64};

// `enum bpf_map_type` values with one value per CPU.
const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;
const BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE: u32 = 21;

/// Where the kernel lists the CPUs it may ever bring up.
const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// An error from a map operation; always names the map.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The object has no map of that name.
    #[error("no map named `{map}` (maps: {available})")]
    NotFound { map: String, available: String },
    /// The `bpf()` call failed.
    #[error("map `{map}`: {op} failed: {}", errno_text(.source))]
    Syscall {
        map: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A key slice of the wrong size.
    #[error("map `{map}`: key is {got} bytes, the map's keys are {expected} bytes")]
    KeySize { map: String, got: usize, expected: u32 },
    /// A value slice of the wrong size.
    #[error("map `{map}`: value is {got} bytes, the map's values are {expected} bytes")]
    ValueSize { map: String, got: usize, expected: u32 },
    /// A per-CPU call on a map that is not per-CPU, or the other way round.
    #[error("map `{map}` {}", if *.percpu {
        "is per-CPU: use lookup_percpu/update_percpu (update writes every CPU)"
    } else {
        "is not per-CPU: use lookup/update"
    })]
    PerCpuMismatch { map: String, percpu: bool },
    /// `update_percpu` with a number of values different from the number of possible CPUs.
    #[error("map `{map}`: {got} per-CPU values given, this machine has {expected} possible CPUs")]
    CpuCount { map: String, got: usize, expected: usize },
    /// The possible-CPU count could not be read.
    #[error("cannot count possible CPUs: {0}")]
    PossibleCpus(String),
    /// A pinned map could not be opened.
    #[error("cannot open pinned map {}: {}", .path.display(), errno_text(.source))]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl MapError {
    /// The errno of a failed system call, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            MapError::Syscall { source, .. } | MapError::Open { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// What the kernel says about a map (`struct bpf_map_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapInfo {
    /// `enum bpf_map_type`.
    pub map_type: u32,
    /// The kernel's map id.
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    /// The kernel's name for the map (at most 15 bytes).
    pub name: String,
}

impl MapInfo {
    /// True for maps that hold one value per possible CPU.
    pub fn is_percpu(&self) -> bool {
        matches!(
            self.map_type,
            BPF_MAP_TYPE_PERCPU_HASH
                | BPF_MAP_TYPE_PERCPU_ARRAY
                | BPF_MAP_TYPE_LRU_PERCPU_HASH
                | BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE
        )
    }

    /// The luabpf map kind, for the types luabpf declares.
    pub fn kind(&self) -> Option<MapKind> {
        Some(match self.map_type {
            1 => MapKind::Hash,
            2 => MapKind::Array,
            5 => MapKind::PercpuHash,
            6 => MapKind::PercpuArray,
            9 => MapKind::LruHash,
            11 => MapKind::LpmTrie,
            27 => MapKind::Ringbuf,
            _ => return None,
        })
    }
}

/// The prefix of `struct bpf_map_info` we read (the kernel copies min(info_len, its size)).
#[repr(C)]
#[derive(Default)]
struct BpfMapInfo {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: [u8; 16],
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Asks the kernel for a map's info.
pub fn map_info(fd: BorrowedFd<'_>) -> io::Result<MapInfo> {
    let mut info = BpfMapInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<BpfMapInfo>() as u32,
        info: ptr_u64(&mut info as *mut BpfMapInfo),
    };
    // SAFETY: `info` is writable for `info_len` bytes and outlives the call.
    unsafe { bpf(sys::BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    let name_len = info.name.iter().position(|b| *b == 0).unwrap_or(info.name.len());
    Ok(MapInfo {
        map_type: info.map_type,
        id: info.id,
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        map_flags: info.map_flags,
        name: String::from_utf8_lossy(&info.name[..name_len]).into_owned(),
    })
}

/// How an update treats an existing (or missing) key: `BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpdateMode {
    /// Create or replace.
    #[default]
    Any = 0,
    /// Create only; `EEXIST` if the key is there.
    NoExist = 1,
    /// Replace only; `ENOENT` if the key is missing.
    Exist = 2,
}

#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    /// `value`, or `next_key` for `BPF_MAP_GET_NEXT_KEY`.
    value: u64,
    flags: u64,
}

#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// The number of possible CPUs (libbpf's `libbpf_num_possible_cpus`): the size of per-CPU
/// value arrays. Read once from `/sys/devices/system/cpu/possible`.
pub fn possible_cpus() -> Result<usize, MapError> {
    static CACHE: OnceLock<Result<usize, String>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let text = std::fs::read_to_string(POSSIBLE_CPUS).map_err(|e| format!("{POSSIBLE_CPUS}: {e}"))?;
            parse_cpu_list(&text).map_err(|e| format!("{POSSIBLE_CPUS}: {e}"))
        })
        .clone()
        .map_err(MapError::PossibleCpus)
}

/// Counts the CPUs in a kernel CPU list such as `0-3,6,8-9` (a trailing newline allowed).
pub fn parse_cpu_list(text: &str) -> Result<usize, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty CPU list".into());
    }
    let mut count = 0usize;
    for part in text.split(',') {
        let part = part.trim();
        let num = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| format!("bad CPU number `{s}` in `{text}`"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a {
                    return Err(format!("bad CPU range `{part}` in `{text}`"));
                }
                count += b - a + 1;
            }
            None => {
                num(part)?;
                count += 1;
            }
        }
    }
    Ok(count)
}

/// A map reached through its own file descriptor, with the kernel's key and value sizes.
pub struct RawMap {
    fd: OwnedFd,
    info: MapInfo,
    /// The name used in messages: the object's map name where known, else the kernel's.
    name: String,
}

impl fmt::Debug for RawMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawMap")
            .field("name", &self.name)
            .field("fd", &self.fd.as_raw_fd())
            .field("info", &self.info)
            .finish()
    }
}

impl RawMap {
    /// Wraps a map fd (duplicated: the caller keeps its own).
    pub fn from_fd(fd: BorrowedFd<'_>) -> Result<RawMap, MapError> {
        let owned = fd.try_clone_to_owned().map_err(|source| MapError::Syscall {
            map: format!("fd {}", fd.as_raw_fd()),
            op: "dup",
            source,
        })?;
        RawMap::from_owned_fd(owned)
    }

    /// Wraps a map fd, taking ownership.
    pub fn from_owned_fd(fd: OwnedFd) -> Result<RawMap, MapError> {
        let info = map_info(fd.as_fd()).map_err(|source| MapError::Syscall {
            map: format!("fd {}", fd.as_raw_fd()),
            op: "BPF_OBJ_GET_INFO_BY_FD",
            source,
        })?;
        let name = info.name.clone();
        Ok(RawMap { fd, info, name })
    }

    /// Opens a map pinned in a BPF filesystem (`BPF_OBJ_GET`).
    pub fn open_pinned(path: &Path) -> Result<RawMap, MapError> {
        use std::os::unix::ffi::OsStrExt;
        let open_err = |source| MapError::Open {
            path: path.to_owned(),
            source,
        };
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| open_err(io::Error::from_raw_os_error(libc::EINVAL)))?;
        let mut attr = ObjGetAttr {
            pathname: ptr_u64(c_path.as_ptr()),
            bpf_fd: 0,
            file_flags: 0,
        };
        // SAFETY: `pathname` is a NUL-terminated string that outlives the call.
        let fd = unsafe { sys::bpf_fd(sys::BPF_OBJ_GET, &mut attr) }.map_err(open_err)?;
        let mut map = RawMap::from_owned_fd(fd)?;
        if let Some(stem) = path.file_name() {
            map.name = stem.to_string_lossy().into_owned();
        }
        Ok(map)
    }

    /// Sets the name used in error messages (the kernel keeps only 15 bytes of it).
    pub fn with_name(mut self, name: impl Into<String>) -> RawMap {
        self.name = name.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &MapInfo {
        &self.info
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn key_size(&self) -> u32 {
        self.info.key_size
    }

    pub fn value_size(&self) -> u32 {
        self.info.value_size
    }

    pub fn is_percpu(&self) -> bool {
        self.info.is_percpu()
    }

    /// Bytes one CPU's value takes in a per-CPU buffer.
    fn percpu_stride(&self) -> usize {
        (self.info.value_size as usize).div_ceil(8) * 8
    }

    fn syscall_err(&self, op: &'static str) -> impl FnOnce(io::Error) -> MapError + '_ {
        move |source| MapError::Syscall {
            map: self.name.clone(),
            op,
            source,
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), MapError> {
        if key.len() != self.info.key_size as usize {
            return Err(MapError::KeySize {
                map: self.name.clone(),
                got: key.len(),
                expected: self.info.key_size,
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), MapError> {
        if value.len() != self.info.value_size as usize {
            return Err(MapError::ValueSize {
                map: self.name.clone(),
                got: value.len(),
                expected: self.info.value_size,
            });
        }
        Ok(())
    }

    fn check_percpu(&self, want: bool) -> Result<(), MapError> {
        if self.is_percpu() != want {
            return Err(MapError::PerCpuMismatch {
                map: self.name.clone(),
                percpu: self.is_percpu(),
            });
        }
        Ok(())
    }

    /// `BPF_MAP_LOOKUP_ELEM` into `buf` (sized by the caller): `Ok(false)` when the key is absent.
    fn lookup_raw(&self, key: &[u8], buf: &mut [u8]) -> Result<bool, MapError> {
        self.check_key(key)?;
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: ptr_u64(key.as_ptr()),
            value: ptr_u64(buf.as_mut_ptr()),
            flags: 0,
        };
        // SAFETY: `key` has key_size bytes (checked); `buf` is sized by the callers to the
        // kernel's value size (times the per-CPU stride for per-CPU maps).
        match unsafe { bpf(sys::BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(self.syscall_err("BPF_MAP_LOOKUP_ELEM")(e)),
        }
    }

    /// The value under `key`, or `None`. Refused on per-CPU maps (see [`Self::lookup_percpu`]).
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        self.check_percpu(false)?;
        let mut buf = vec![0u8; self.info.value_size as usize];
        Ok(self.lookup_raw(key, &mut buf)?.then_some(buf))
    }

    /// Each possible CPU's value under `key` (index = CPU number), or `None`.
    pub fn lookup_percpu(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>, MapError> {
        self.check_percpu(true)?;
        let ncpus = possible_cpus()?;
        let stride = self.percpu_stride();
        let mut buf = vec![0u8; stride * ncpus];
        if !self.lookup_raw(key, &mut buf)? {
            return Ok(None);
        }
        let size = self.info.value_size as usize;
        Ok(Some(buf.chunks_exact(stride).map(|c| c[..size].to_vec()).collect()))
    }

    fn update_raw(&self, key: &[u8], buf: &[u8], mode: UpdateMode) -> Result<(), MapError> {
        self.check_key(key)?;
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: ptr_u64(key.as_ptr()),
            value: ptr_u64(buf.as_ptr()),
            flags: mode as u64,
        };
        // SAFETY: `key` has key_size bytes (checked); `buf` is sized by the callers.
        unsafe { bpf(sys::BPF_MAP_UPDATE_ELEM, &mut attr) }
            .map(|_| ())
            .map_err(self.syscall_err("BPF_MAP_UPDATE_ELEM"))
    }

    /// Sets `key` to `value`. On a per-CPU map, every possible CPU gets `value`.
    pub fn update(&self, key: &[u8], value: &[u8], mode: UpdateMode) -> Result<(), MapError> {
        self.check_value(value)?;
        if !self.is_percpu() {
            return self.update_raw(key, value, mode);
        }
        let ncpus = possible_cpus()?;
        let stride = self.percpu_stride();
        let mut buf = vec![0u8; stride * ncpus];
        for chunk in buf.chunks_exact_mut(stride) {
            chunk[..value.len()].copy_from_slice(value);
        }
        self.update_raw(key, &buf, mode)
    }

    /// Sets each possible CPU's value under `key` (`values[cpu]`; exactly one per possible CPU).
    pub fn update_percpu(&self, key: &[u8], values: &[Vec<u8>], mode: UpdateMode) -> Result<(), MapError> {
        self.check_percpu(true)?;
        let ncpus = possible_cpus()?;
        if values.len() != ncpus {
            return Err(MapError::CpuCount {
                map: self.name.clone(),
                got: values.len(),
                expected: ncpus,
            });
        }
        let stride = self.percpu_stride();
        let mut buf = vec![0u8; stride * ncpus];
        for (chunk, value) in buf.chunks_exact_mut(stride).zip(values) {
            self.check_value(value)?;
            chunk[..value.len()].copy_from_slice(value);
        }
        self.update_raw(key, &buf, mode)
    }

    /// Deletes `key`: `Ok(false)` if it was not there. Array maps refuse deletion (`EINVAL`).
    pub fn delete(&self, key: &[u8]) -> Result<bool, MapError> {
        self.check_key(key)?;
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: ptr_u64(key.as_ptr()),
            value: 0,
            flags: 0,
        };
        // SAFETY: `key` has key_size bytes (checked).
        match unsafe { bpf(sys::BPF_MAP_DELETE_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(self.syscall_err("BPF_MAP_DELETE_ELEM")(e)),
        }
    }

    /// The key after `key` (the first key for `None`), or `None` at the end.
    /// A `key` that is not in the map restarts from the first key, as the kernel does for hashes.
    pub fn next_key(&self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>, MapError> {
        if let Some(k) = key {
            self.check_key(k)?;
        }
        let mut next = vec![0u8; self.info.key_size as usize];
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: key.map_or(0, |k| ptr_u64(k.as_ptr())),
            value: ptr_u64(next.as_mut_ptr()),
            flags: 0,
        };
        // SAFETY: `key` (if any) has key_size bytes; `next` is writable for key_size bytes.
        match unsafe { bpf(sys::BPF_MAP_GET_NEXT_KEY, &mut attr) } {
            Ok(_) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(self.syscall_err("BPF_MAP_GET_NEXT_KEY")(e)),
        }
    }

    /// Iterates over the keys. Concurrent deletions by a running program may make a hash
    /// map's walk restart or skip keys (a kernel property, not ours).
    pub fn keys(&self) -> Keys<'_> {
        Keys {
            map: self,
            last: None,
            done: false,
        }
    }
}

/// Iterator over a map's keys, from [`RawMap::keys`].
pub struct Keys<'m> {
    map: &'m RawMap,
    last: Option<Vec<u8>>,
    done: bool,
}

impl Iterator for Keys<'_> {
    type Item = Result<Vec<u8>, MapError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.map.next_key(self.last.as_deref()) {
            Ok(Some(k)) => {
                self.last = Some(k.clone());
                Some(Ok(k))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

// No implicit padding: the kernel refuses attributes with non-zero bytes it does not know.
const _: () = assert!(std::mem::size_of::<ElemAttr>() == 32);
const _: () = assert!(std::mem::size_of::<InfoAttr>() == 16);
const _: () = assert!(std::mem::size_of::<ObjGetAttr>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0\n"), Ok(1));
        assert_eq!(parse_cpu_list("0-1\n"), Ok(2));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Ok(7));
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
    }
}
