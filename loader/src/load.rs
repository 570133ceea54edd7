//! Loading an object into the kernel: maps, programs, static tables.
//!
//! [`load`] hands the ELF object to aya (which creates the maps from the BTF `.maps` section
//! and applies the map relocations), loads every program it finds (XDP in `xdp`, SCHED_CLS in
//! `classifier`), and then fills the static tables listed in `.luabpf.init`. A program the
//! verifier refuses yields [`LoadError::Verifier`] with the program name, the errno, the
//! verifier's full log and the failing instruction's Lua line (see `verifier_error`).
//!
//! Everything loaded stays alive as long as the returned [`Loaded`] (it owns aya's `Ebpf`):
//! drop it and the kernel frees the programs and maps that nothing else holds (no pin, no link).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::OnceLock;

use aya::maps::{Map, MapData};
use aya::programs::{Program, ProgramError};
use aya::{Btf, EbpfError, EbpfLoader};

use crate::init::{self, InitError};
use crate::maps::{MapError, RawMap, UpdateMode};
use crate::sys::{errno_text, Aligned};

pub use crate::verifier_error::VerifierError;

/// Why an object could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The ELF object could not be parsed or prepared (bad ELF, bad BTF, bad relocation).
    #[error("cannot load the object: {message}")]
    Object { message: String },
    /// The kernel refused the object's BTF (`BPF_BTF_LOAD`); `log` is the BTF verifier's log.
    #[error("the kernel refused the object's BTF: {}\n{log}", errno_text(.source))]
    Btf {
        log: String,
        #[source]
        source: io::Error,
    },
    /// The kernel refused to create a map.
    #[error("cannot create map `{map}`: {}", errno_text(.source))]
    MapCreate {
        map: String,
        #[source]
        source: io::Error,
    },
    /// A program in a section this loader does not load.
    #[error("program `{program}`: {what}")]
    Unsupported { program: String, what: String },
    /// The verifier refused a program.
    #[error("{0}")]
    Verifier(Box<VerifierError>),
    /// Loading a program failed for another reason.
    #[error("program `{program}`: {message}")]
    Program { program: String, message: String },
    /// `.luabpf.init` is malformed.
    #[error(transparent)]
    Init(#[from] InitError),
    /// A static table could not be written into its map.
    #[error("static table `{map}`: {message}")]
    StaticTable {
        map: String,
        message: String,
        #[source]
        source: Option<MapError>,
    },
}

impl LoadError {
    /// The verifier's refusal, if that is what this is.
    pub fn verifier(&self) -> Option<&VerifierError> {
        match self {
            LoadError::Verifier(v) => Some(v),
            _ => None,
        }
    }
}

/// What was loaded for one program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramSummary {
    pub name: String,
    /// `"xdp"`, `"sched_cls"` or `"netfilter"`.
    pub kind: &'static str,
    /// Instructions the verifier processed (`bpf_prog_info.verified_insns`), where reported.
    pub verified_insns: Option<u32>,
}

/// A loaded object: aya's `Ebpf` (which owns every program and map fd) plus a summary.
pub struct Loaded {
    ebpf: aya::Ebpf,
    programs: Vec<ProgramSummary>,
    /// Netfilter programs, which aya does not load (`crate::netfilter`).
    netfilter: Vec<(String, std::os::fd::OwnedFd)>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("programs", &self.programs)
            .field("maps", &self.map_names())
            .finish()
    }
}

impl Loaded {
    /// The loaded programs, sorted by name.
    pub fn programs(&self) -> &[ProgramSummary] {
        &self.programs
    }

    /// Program names, sorted.
    pub fn program_names(&self) -> Vec<&str> {
        self.programs.iter().map(|p| p.name.as_str()).collect()
    }

    /// The kernel fd of a loaded program.
    pub fn program_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        if let Some((_, fd)) = self.netfilter.iter().find(|(n, _)| n == name) {
            return Some(fd.as_fd());
        }
        self.ebpf.program(name)?.fd().ok().map(|fd| fd.as_fd())
    }

    /// Map names, sorted.
    pub fn map_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.ebpf.maps().map(|(n, _)| n).collect();
        names.sort_unstable();
        names
    }

    /// The kernel fd of a map.
    pub fn map_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.ebpf.map(name).map(|m| map_data(m).fd().as_fd())
    }

    /// Byte-level access to a map (see [`RawMap`]).
    pub fn map(&self, name: &str) -> Result<RawMap, MapError> {
        let fd = self.map_fd(name).ok_or_else(|| MapError::NotFound {
            map: name.to_string(),
            available: self.map_names().join(", "),
        })?;
        Ok(RawMap::from_fd(fd)?.with_name(name))
    }

    /// aya's handle, for attaching and pinning.
    pub fn ebpf(&self) -> &aya::Ebpf {
        &self.ebpf
    }

    pub fn ebpf_mut(&mut self) -> &mut aya::Ebpf {
        &mut self.ebpf
    }

    pub fn into_ebpf(self) -> aya::Ebpf {
        self.ebpf
    }
}

/// The kernel's BTF, parsed once per process (aya would parse it on every load).
pub(crate) fn vmlinux_btf() -> Option<&'static Btf> {
    static BTF: OnceLock<Option<Btf>> = OnceLock::new();
    BTF.get_or_init(|| Btf::from_sys_fs().ok()).as_ref()
}

/// Options of [`load_with`]; the default is what [`load`] does.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Maps to pin in a BPF filesystem, by name: a map already pinned at its path is reused
    /// (its contents kept), any other is created and pinned there (aya's `map_pin_path`).
    pub map_pins: Vec<(String, std::path::PathBuf)>,
    /// Maps whose static tables (`.luabpf.init`) are not written: reused maps keep theirs.
    pub skip_tables: Vec<String>,
}

/// Loads an ELF object: creates its maps, loads every program, fills its static tables.
pub fn load(obj_bytes: &[u8]) -> Result<Loaded, LoadError> {
    load_with(obj_bytes, &LoadOptions::default())
}

/// [`load`] with pinned (or reused) maps and static tables left out for some maps.
pub fn load_with(obj_bytes: &[u8], options: &LoadOptions) -> Result<Loaded, LoadError> {
    let aligned = Aligned::new(obj_bytes);
    let file = object::File::parse(aligned.bytes()).map_err(|e| LoadError::Object {
        message: format!("not an ELF object: {e}"),
    })?;
    check_symbols(&file)?;
    // Static tables first: a malformed section is reported before anything reaches the kernel.
    let tables = init::tables_in(&file)?;
    let split = split_netfilter(&file, aligned.bytes())?;
    drop(file);
    let aligned = match &split {
        Some(s) => Aligned::new(&s.rest),
        None => aligned,
    };

    // aya indexes some ELF contents without checking them (a map symbol past its section's
    // end panics): a malformed object must be an error, not a crash of the CLI.
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut loader = EbpfLoader::new();
        loader.btf(vmlinux_btf());
        for (name, path) in &options.map_pins {
            loader.map_pin_path(name.as_str(), path.as_path());
        }
        loader.load(aligned.bytes())
    }));
    let mut ebpf = match parsed {
        Ok(result) => result.map_err(ebpf_error)?,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            return Err(LoadError::Object {
                message: format!("malformed object (aya's parser panicked: {what})"),
            });
        }
    };

    let mut names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    names.sort_unstable();
    let mut programs = Vec::with_capacity(names.len());
    for name in names {
        let Some(program) = ebpf.program_mut(&name) else {
            continue;
        };
        // aya 0.14 unwraps the verifier log as UTF-8; a corrupted object's line info can make
        // it panic there: that must be a load error, not a crash.
        fn guarded<T>(
            f: impl FnOnce() -> Result<T, aya::programs::ProgramError>,
        ) -> Result<T, Result<aya::programs::ProgramError, String>> {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                Ok(r) => r.map_err(Ok),
                Err(panic) => Err(Err(panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into()))),
            }
        }
        let (kind, result) = match program {
            Program::Xdp(p) => ("xdp", guarded(|| p.load())),
            Program::SchedClassifier(p) => ("sched_cls", guarded(|| p.load())),
            other => {
                return Err(LoadError::Unsupported {
                    what: format!(
                        "{:?} programs are not loaded by luabpf (only XDP and tc)",
                        other.prog_type()
                    ),
                    program: name,
                })
            }
        };
        match result {
            Ok(()) => {}
            Err(Ok(e)) => return Err(program_error(&name, e, aligned.bytes())),
            Err(Err(what)) => {
                return Err(LoadError::Program {
                    program: name,
                    message: format!(
                        "the kernel refused the program and its log could not be read (aya panicked: {what})"
                    ),
                })
            }
        }
        let verified_insns = program.info().ok().and_then(|i| i.verified_instruction_count());
        programs.push(ProgramSummary {
            name,
            kind,
            verified_insns,
        });
    }

    let mut netfilter = Vec::new();
    if let Some(split) = &split {
        for &index in &split.programs {
            let code = &split.object.programs[index];
            let map_fd = |i: usize| {
                let name = &split.object.maps.get(i)?.name;
                ebpf.map(name).map(|m| map_data(m).fd().as_fd().as_raw_fd())
            };
            let btf = runtime_bpf::elf::program_btf(&split.object, index).expect("program index in range");
            let (fd, verified_insns) = crate::netfilter::load_program(code, &btf, &map_fd).map_err(|e| match e {
                LoadError::Verifier(mut v) => {
                    v.failed_at = crate::verifier_error::failed_at(&v.log, &v.program, Some(&split.object));
                    LoadError::Verifier(v)
                }
                e => e,
            })?;
            programs.push(ProgramSummary {
                name: code.name.clone(),
                kind: "netfilter",
                verified_insns,
            });
            netfilter.push((code.name.clone(), fd));
        }
        programs.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let loaded = Loaded {
        ebpf,
        programs,
        netfilter,
    };
    for table in &tables {
        if options.skip_tables.contains(&table.map) {
            continue;
        }
        fill_table(&loaded, table)?;
    }
    Ok(loaded)
}

/// An object's netfilter programs, and the object without them (what aya loads).
struct NetfilterSplit {
    /// The whole object, as read back.
    object: runtime_bpf::object::Object,
    /// Its netfilter programs, by index.
    programs: Vec<usize>,
    /// The object without them.
    rest: Vec<u8>,
}

/// aya 0.14 refuses an object with a netfilter section; those programs are taken out (and
/// loaded by `crate::netfilter` with the maps aya creates). `None` when there are none.
fn split_netfilter(file: &object::File<'_>, bytes: &[u8]) -> Result<Option<NetfilterSplit>, LoadError> {
    use object::{Object as _, ObjectSection as _};
    use runtime_bpf::progtypes::ProgType;
    let is_nf = |name: &str| ProgType::from_section(name) == Some(ProgType::Netfilter);
    if !file.sections().any(|s| s.name().is_ok_and(is_nf)) {
        return Ok(None);
    }
    let object = runtime_bpf::elf::read(bytes).map_err(|e| LoadError::Object {
        message: format!("cannot read the netfilter programs: {e}"),
    })?;
    let programs = (0..object.programs.len())
        .filter(|&i| is_nf(&object.programs[i].section))
        .collect();
    let others = runtime_bpf::object::Object {
        programs: object.programs.iter().filter(|p| !is_nf(&p.section)).cloned().collect(),
        ..object.clone()
    };
    let rest = runtime_bpf::elf::try_write(&others).map_err(|e| LoadError::Object {
        message: format!("cannot rewrite the object without its netfilter programs: {e}"),
    })?;
    Ok(Some(NetfilterSplit { object, programs, rest }))
}

/// Refuses symbols that reach past their section: aya slices section data by them unchecked.
fn check_symbols(file: &object::File<'_>) -> Result<(), LoadError> {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SectionKind};
    for sym in file.symbols() {
        let Some(index) = sym.section_index() else {
            continue;
        };
        let Ok(section) = file.section_by_index(index) else {
            continue;
        };
        if section.kind() == SectionKind::UninitializedData {
            continue;
        }
        let end = sym.address().checked_add(sym.size());
        if end.is_none_or(|end| end > section.size()) {
            return Err(LoadError::Object {
                message: format!(
                    "symbol `{}` (offset {}, size {}) reaches past the end of section `{}` ({} bytes)",
                    sym.name().unwrap_or("?"),
                    sym.address(),
                    sym.size(),
                    section.name().unwrap_or("?"),
                    section.size()
                ),
            });
        }
    }
    Ok(())
}

fn fill_table(loaded: &Loaded, table: &init::InitTable) -> Result<(), LoadError> {
    let err = |message: String, source: Option<MapError>| LoadError::StaticTable {
        map: table.map.clone(),
        message,
        source,
    };
    let map = loaded.map(&table.map).map_err(|e| err(e.to_string(), Some(e)))?;
    let info = map.info();
    if info.key_size != table.key_size || info.value_size != table.value_size {
        return Err(err(
            format!(
                "{}-byte keys and {}-byte values in {}, the map has {}-byte keys and {}-byte values",
                table.key_size,
                table.value_size,
                init::SECTION,
                info.key_size,
                info.value_size
            ),
            None,
        ));
    }
    for (i, (key, value)) in table.entries.iter().enumerate() {
        map.update(key, value, UpdateMode::Any).map_err(|e| {
            let hint = if e.errno() == Some(libc::E2BIG) {
                " (the map is full: raise its `entries`)"
            } else {
                ""
            };
            err(format!("entry #{i} (key {}): {e}{hint}", hex(key)), Some(e))
        })?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Renders an error and its sources, skipping a source whose text the outer one already shows.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

fn ebpf_error(e: EbpfError) -> LoadError {
    use aya::maps::MapError as AyaMapError;
    use aya::BtfError;
    match e {
        EbpfError::MapError(AyaMapError::CreateError { name, io_error }) => LoadError::MapCreate {
            map: name,
            source: io_error,
        },
        EbpfError::BtfError(BtfError::LoadError { io_error, verifier_log }) => LoadError::Btf {
            log: verifier_log.to_string(),
            source: io_error,
        },
        EbpfError::ParseError(aya_obj::ParseError::InvalidProgramSection { section }) => {
            let hint = match section.as_str() {
                "tc" => ": aya 0.14 loads SCHED_CLS programs from a section named `classifier`",
                "netfilter" => ": netfilter programs need luabpf's own loading path",
                _ => "",
            };
            LoadError::Object {
                message: format!("unknown program section `{section}`{hint}"),
            }
        }
        other => LoadError::Object { message: chain(&other) },
    }
}

/// `elf`: the object's bytes, whose line info names the Lua line of a verifier refusal.
fn program_error(program: &str, e: ProgramError, elf: &[u8]) -> LoadError {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => LoadError::Verifier(Box::new(
            VerifierError::new(program, &io_error, verifier_log.to_string()).locate(elf),
        )),
        other => LoadError::Program {
            program: program.to_string(),
            message: chain(&other),
        },
    }
}

/// The `MapData` inside any `Map` variant (aya has no accessor for it).
#[allow(deprecated)]
fn map_data(map: &Map) -> &MapData {
    match map {
        Map::Array(m)
        | Map::ArrayOfMaps(m)
        | Map::BloomFilter(m)
        | Map::CgroupArray(m)
        | Map::CgroupStorage(m)
        | Map::CgrpStorage(m)
        | Map::CpuMap(m)
        | Map::DevMap(m)
        | Map::DevMapHash(m)
        | Map::HashMap(m)
        | Map::HashOfMaps(m)
        | Map::InodeStorage(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuCgroupStorage(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::ProgramArray(m)
        | Map::Queue(m)
        | Map::ReusePortSockArray(m)
        | Map::RingBuf(m)
        | Map::SockHash(m)
        | Map::SockMap(m)
        | Map::SkStorage(m)
        | Map::Stack(m)
        | Map::StackTraceMap(m)
        | Map::Unsupported(m)
        | Map::XskMap(m) => m,
    }
}
