//! The object file: an [`Object`](crate::object::Object) written as an ELF64 little-endian relocatable file for EM_BPF,
//! and read back.
//!
//! The file is shaped so that every loader in use accepts it unchanged: aya 0.14, libbpf
//! (bpftool, iproute2's `ip link ... obj F sec xdp`) and luabpf's own loader. What each part is
//! for, and the constraints the loaders impose:
//!
//! - One section per program type name (`xdp`, `classifier`, `netfilter`: `ProgramCode::section`),
//!   SHF_ALLOC|SHF_EXECINSTR. Programs sharing a section are placed one after another, each
//!   with its own STT_FUNC GLOBAL default-visibility symbol whose `st_size` covers its code.
//! - BPF-to-BPF subprograms (code a program reaches with `call pc+N` or loads with an
//!   `ld_imm64` of src 4, e.g. a `bpf_loop` callback) are moved to `.text`, each with a local
//!   STT_FUNC symbol, and the calls are relocated against the `.text` section symbol (R_BPF_64_32
//!   with `imm` = target slot - 1; R_BPF_64_64 with `imm` = target byte offset for `ld_imm64`),
//!   exactly as clang does for static functions: libbpf only links subprograms found in `.text`.
//!   They are laid out in link order, the order in which libbpf and aya append them to their
//!   caller (pre-order, by first reference), and `read` rebuilds programs in that order, so
//!   slot numbers agree with any loader's verifier log. `read(write(o))` gives `o` back when
//!   `o`'s subprograms already are in link order (a compiler appending callees as it meets
//!   them produces that); otherwise it gives the same code renumbered.
//! - Subprograms listed in `ProgramCode::subfunctions` are *global* functions, which the kernel
//!   verifies once, on their own, for any arguments their BTF prototype allows ("Func#1 ('f')
//!   is global and assumed valid." at each call, then "Validating f() func#1..."). They go to
//!   `.text` like static ones, with the same relocations, but their symbol is STT_FUNC GLOBAL
//!   of default visibility (clang's non-static function): libbpf 1.1 and aya 0.14 both treat
//!   every function of `.text` as a subprogram whatever its binding, and libbpf turns the BTF
//!   of a *hidden* global function static (`mark_btf_static`). Their BTF FUNC has linkage
//!   global and prototype `int f(a0, ...)`: `Ctx` is a pointer to a STRUCT named after the
//!   context (`xdp_md`, `__sk_buff`, `bpf_nf_ctx`: the kernel matches that name only, and a
//!   forward declaration does not count), `Scalar` `unsigned long long`, `ScalarPtr` a pointer
//!   to it (maybe NULL, 8 bytes). Parameters must be named: the kernel refuses a FUNC whose
//!   prototype has an unnamed one. `read` recovers them from the FUNC of their func_info.
//! - `license`: the license string and its NUL ("GPL\0", 4 bytes), with a `_license` symbol.
//! - `.maps`: BTF-defined maps (legacy `maps` is refused by libbpf 1.0+). Each map is an
//!   STT_OBJECT GLOBAL default-visibility symbol (a hidden one is refused as "unsupported map
//!   linkage static") over zeroed bytes, described in `.BTF` by an anonymous STRUCT whose
//!   members `type`, `max_entries` (and `map_flags` when non-zero) are pointers to arrays whose
//!   element count is the value, and `key`/`value` pointers to the key and value types; a VAR
//!   (linkage 1, global allocated) per map and a DATASEC `.maps` with real offsets and sizes.
//!   `ld_imm64` map references carry R_BPF_64_64 against the map's symbol with addend 0.
//! - `.BTF`: the above, a FUNC per program (global, `int f(struct <ctx> *ctx)`) and per
//!   subprogram (static, or global for `ProgramCode::subfunctions`), and the source file
//!   names and line texts.
//! - `.BTF.ext`: func_info per function and line_info where the (file, line) of `locs`
//!   changes, so bpftool and verifier logs show Lua lines.
//! - `.luabpf.init` and `.luabpf.kfuncs`: luabpf's own sections, described below; other
//!   loaders ignore them (they are not SHF_ALLOC).
//!
//! ## `.luabpf.init`: initial contents of maps (static tables)
//!
//! libbpf cannot carry initial contents of hash maps, so luabpf's loader fills them after
//! creating the maps; any other loader can do the same from this section. SHT_PROGBITS, no
//! flags, all integers little-endian u32:
//!
//! ```text
//! "LBPFINIT"  version (1)  map count
//! per map:    name length, name bytes (UTF-8, no NUL), key_size, value_size, entry count,
//!             then per entry: key_size key bytes, value_size value bytes
//! ```
//!
//! Only maps with contents appear. Apply each entry with `BPF_MAP_UPDATE_ELEM` (flags
//! `BPF_ANY`) before attaching the program; for per-CPU maps replicate the value per CPU.
//!
//! ## `.luabpf.kfuncs`: kernel function calls to patch
//!
//! A kfunc call is `call` with src_reg 2 and imm = the function's BTF id in the running kernel,
//! which differs between kernel builds, so the object leaves imm 0 and lists the calls:
//!
//! ```text
//! "LBPFKFNC"  version (1)  program count
//! per program: name length, name bytes, call count,
//!              then per call: slot index, function name length, function name bytes
//! ```
//!
//! The slot index counts 8-byte slots from the program's first instruction, in the program as
//! linked (its own code, then its subprograms in link order), which is how `read` returns it
//! and how libbpf and aya number the instructions they load.
//! The loader finds the id by name in /sys/kernel/btf/vmlinux and stores it in `imm` (off 0).

mod layout;
mod luabpf_sections;
mod maps_btf;
mod read;
mod write;

use std::fmt;

use crate::btf::BtfError;

pub use read::{read, read_detailed, ForeignMap, ReadObject};
pub use write::{program_btf, try_write, validate, write, ProgramBtf};

/// Section holding initial map contents (see the module documentation).
pub const INIT_SECTION: &str = ".luabpf.init";
pub const INIT_MAGIC: &[u8; 8] = b"LBPFINIT";
/// Section listing kfunc calls for the loader to patch (see the module documentation).
pub const KFUNCS_SECTION: &str = ".luabpf.kfuncs";
pub const KFUNCS_MAGIC: &[u8; 8] = b"LBPFKFNC";
/// Version of both luabpf sections' layout.
pub const LUABPF_SECTION_VERSION: u32 = 1;

/// `R_BPF_64_64`: the 64-bit immediate of an `ld_imm64` (maps, subprogram addresses).
pub const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_32`: the 32-bit immediate of a `call` (subprograms).
pub const R_BPF_64_32: u32 = 10;
/// `e_machine` of BPF objects.
pub const EM_BPF: u16 = 247;

/// Why an `Object` cannot be written as a loadable file (found by [`validate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// Kernel BTF accepts only C identifiers as function, variable and member names, and the
    /// kernel's object names are limited to `[A-Za-z0-9_.]`.
    InvalidName {
        what: &'static str,
        name: String,
    },
    /// Two ELF symbols (programs, maps) with the same name: loaders find them by name.
    DuplicateName(String),
    EmptyProgram(String),
    /// A program section that is empty or one this module writes itself (`.text`, `.maps`...).
    BadSection {
        program: String,
        section: String,
    },
    /// A `map_relocs` entry that is not on the first slot of an `ld_imm64`, or names no map.
    BadMapReloc {
        program: String,
        slot: usize,
        map: usize,
    },
    /// A `kfunc_relocs` entry that is not on a `call` with src_reg 2.
    BadKfuncReloc {
        program: String,
        slot: usize,
    },
    /// A BPF-to-BPF call or function address whose target is outside the program, its entry,
    /// or the second half of an `ld_imm64`.
    BadCallTarget {
        program: String,
        slot: usize,
        target: i64,
    },
    /// A `ProgramCode::subfunctions` entry that cannot be a separately verified function: its
    /// start is not the target of a local call, it is listed twice, it has more than 5
    /// parameters, or it takes a context in a section of unknown program type.
    BadSubFunction {
        program: String,
        function: String,
        why: String,
    },
    /// An integer format of a size other than 1, 2, 4 or 8 bytes.
    BadFormat {
        map: String,
        bytes: u8,
    },
    /// An initial entry whose key or value length differs from the map's key or value size.
    BadInitEntry {
        map: String,
        entry: usize,
    },
    /// The ELF library refused the file (a bug in this module).
    Elf(String),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::InvalidName { what, name } => {
                write!(
                    f,
                    "{what} name {name:?} must be a C identifier ([A-Za-z_][A-Za-z0-9_]*)"
                )
            }
            WriteError::DuplicateName(name) => write!(f, "two programs or maps are named {name:?}"),
            WriteError::EmptyProgram(name) => write!(f, "program {name:?} has no instructions"),
            WriteError::BadSection { program, section } => {
                write!(f, "program {program:?} cannot go in section {section:?}")
            }
            WriteError::BadMapReloc { program, slot, map } => write!(
                f,
                "program {program:?}: map reference #{map} at slot {slot} is not on an ld_imm64 \
                 or names no map"
            ),
            WriteError::BadKfuncReloc { program, slot } => {
                write!(
                    f,
                    "program {program:?}: kfunc reference at slot {slot} is not a kfunc call"
                )
            }
            WriteError::BadCallTarget { program, slot, target } => write!(
                f,
                "program {program:?}: call or function address at slot {slot} targets slot \
                 {target}, which does not start a subprogram"
            ),
            WriteError::BadSubFunction { program, function, why } => {
                write!(f, "program {program:?}: global function {function:?}: {why}")
            }
            WriteError::BadFormat { map, bytes } => {
                write!(f, "map {map:?}: integer of {bytes} bytes (want 1, 2, 4 or 8)")
            }
            WriteError::BadInitEntry { map, entry } => write!(
                f,
                "map {map:?}: initial entry #{entry} has a key or value of the wrong size"
            ),
            WriteError::Elf(e) => write!(f, "writing the ELF file failed: {e}"),
        }
    }
}

impl std::error::Error for WriteError {}

/// Why bytes could not be read as an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Not a well-formed ELF file (message from the ELF parser).
    Elf(String),
    /// An ELF file, but not a 64-bit little-endian BPF one.
    NotBpf(String),
    Btf(BtfError),
    BtfExt(BtfError),
    /// A program whose code is not whole 8-byte slots inside its section, or similar.
    BadProgram {
        program: String,
        why: String,
    },
    /// A call or function address that leads nowhere.
    BadCall {
        program: String,
        slot: usize,
        why: String,
    },
    /// A malformed `.luabpf.init` or `.luabpf.kfuncs` section.
    BadLuabpfSection {
        section: &'static str,
        why: String,
    },
    /// Something the object uses that an `Object` cannot express (kernel map types luabpf does
    /// not declare, global data sections); `read_detailed` still lists such objects.
    Unsupported(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Elf(e) => write!(f, "not a valid ELF object: {e}"),
            ReadError::NotBpf(why) => write!(f, "not a BPF object: {why}"),
            ReadError::Btf(e) => write!(f, "bad .BTF section: {e}"),
            ReadError::BtfExt(e) => write!(f, "bad .BTF.ext section: {e}"),
            ReadError::BadProgram { program, why } => write!(f, "program {program:?}: {why}"),
            ReadError::BadCall { program, slot, why } => {
                write!(f, "program {program:?}: call at slot {slot}: {why}")
            }
            ReadError::BadLuabpfSection { section, why } => {
                write!(f, "bad {section} section: {why}")
            }
            ReadError::Unsupported(why) => write!(f, "unsupported by luabpf: {why}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// A C identifier: what kernel BTF accepts as a FUNC, VAR or member name.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Turns any string into an identifier, for names this module invents (record types).
fn sanitize_identifier(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_identifier("sni_filter"));
        assert!(is_identifier("_x1"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("1x"));
        assert!(!is_identifier("sni-filter"));
        assert_eq!(sanitize_identifier("sni-filter"), "sni_filter");
        assert_eq!(sanitize_identifier("9"), "_9");
        assert_eq!(sanitize_identifier(""), "_");
    }
}
