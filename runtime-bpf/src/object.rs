//! The object model: what a compiled program file is, independent of how it is stored.
//!
//! `Object` is produced by the compiler's emitter and written as an ELF relocatable file
//! (`elf::write`), read back by `elf::read` for the loader (static tables) and for disasm.

use crate::isa::Insn;

/// A map's key or value layout, from a `string.pack`-style format.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// An integer of 1, 2, 4 or 8 bytes, host byte order.
    Int { bytes: u8, signed: bool },
    /// `cN`: N bytes, a zero-padded string.
    Chars(u32),
    /// A C-like struct: fields in source order, each naturally aligned.
    Record(Vec<Field>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    pub name: String,
    pub format: Format,
    /// Byte offset inside the record.
    pub offset: u32,
}

impl Format {
    pub fn size(&self) -> u32 {
        match self {
            Format::Int { bytes, .. } => *bytes as u32,
            Format::Chars(n) => *n,
            Format::Record(fields) => {
                let end = fields.iter().map(|f| f.offset + f.format.size()).max().unwrap_or(0);
                let align = self.align();
                end.div_ceil(align) * align
            }
        }
    }

    pub fn align(&self) -> u32 {
        match self {
            Format::Int { bytes, .. } => *bytes as u32,
            Format::Chars(_) => 1,
            Format::Record(fields) => fields.iter().map(|f| f.format.align()).max().unwrap_or(1),
        }
    }

    /// Lays out named fields like a C struct, in the given order.
    pub fn record(fields: Vec<(String, Format)>) -> Format {
        let mut offset = 0u32;
        let mut out = Vec::new();
        for (name, format) in fields {
            let a = format.align();
            offset = offset.div_ceil(a) * a;
            let size = format.size();
            out.push(Field { name, format, offset });
            offset += size;
        }
        Format::Record(out)
    }
}

/// Kernel map types luabpf declares (values of `enum bpf_map_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapKind {
    Hash = 1,
    Array = 2,
    PercpuHash = 5,
    PercpuArray = 6,
    LruHash = 9,
    LpmTrie = 11,
    Ringbuf = 27,
}

impl MapKind {
    pub fn is_array(self) -> bool {
        matches!(self, MapKind::Array | MapKind::PercpuArray)
    }
    pub fn is_percpu(self) -> bool {
        matches!(self, MapKind::PercpuArray | MapKind::PercpuHash)
    }
    /// The name used in `map.<name>(...)` and in listings.
    pub fn name(self) -> &'static str {
        match self {
            MapKind::Hash => "hash",
            MapKind::Array => "array",
            MapKind::PercpuHash => "percpu_hash",
            MapKind::PercpuArray => "percpu_array",
            MapKind::LruHash => "lru_hash",
            MapKind::LpmTrie => "lpm_trie",
            MapKind::Ringbuf => "ringbuf",
        }
    }
}

/// One map of the program file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: String,
    pub kind: MapKind,
    pub key: Format,
    pub value: Format,
    pub max_entries: u32,
    /// `map_flags` (lpm_trie needs BPF_F_NO_PREALLOC = 1).
    pub flags: u32,
    /// Initial contents (static tables): raw key and value bytes, applied by luabpf's loader.
    pub init: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Where an instruction came from, for `.BTF.ext` line info and annotated assembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SourceLoc {
    /// Index into `Object::sources`.
    pub file: u32,
    /// 1-based line and column; 0 means unknown.
    pub line: u32,
    pub col: u32,
}

/// One program: the code of one entry function (with everything it calls inlined or appended).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramCode {
    /// ELF symbol and kernel program name.
    pub name: String,
    /// ELF section: `xdp`, `tc` (SCHED_CLS, aya's `classifier` is accepted on read), `netfilter`.
    pub section: String,
    pub insns: Vec<Insn>,
    /// Source location of each slot (same length as `insns`).
    pub locs: Vec<SourceLoc>,
    /// `(slot index of an ld_imm64, index into Object::maps)`.
    pub map_relocs: Vec<(usize, usize)>,
    /// `(slot index of a kfunc call, kernel function name)`: the loader writes the BTF id.
    pub kfunc_relocs: Vec<(usize, String)>,
    /// Functions inside `insns` other than the entry, reached by local calls, that the
    /// verifier must check on their own (BTF linkage global): each is verified once, for any
    /// argument values, instead of once per call site and path. Functions reached by a local
    /// call but not listed here are static (verified in the caller's context).
    pub subfunctions: Vec<SubFunction>,
}

/// A separately verified BPF function of a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubFunction {
    /// Its first slot in `ProgramCode::insns`.
    pub start: usize,
    /// Its ELF symbol and BTF name.
    pub name: String,
    /// Its parameters, r1 upwards (at most 5); it returns a 32-bit int in r0.
    pub params: Vec<ParamType>,
}

/// What a separately verified function's parameter is, as its BTF type says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// The program's context (`struct xdp_md *`, `struct __sk_buff *`, ...).
    Ctx,
    /// A 64-bit integer (`__u64`).
    Scalar,
    /// A pointer to one 64-bit integer (`__u64 *`); the verifier treats it as maybe-null.
    ScalarPtr,
}

/// A source file the line info refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as the user gave it (what bpftool and verifier logs will print).
    pub name: String,
    pub text: String,
}

/// A whole compiled program file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub programs: Vec<ProgramCode>,
    pub maps: Vec<MapSpec>,
    pub sources: Vec<SourceFile>,
    /// Always "GPL" for now: kfuncs and many helpers need it.
    pub license: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(bytes: u8) -> Format {
        Format::Int { bytes, signed: false }
    }

    #[test]
    fn records_are_laid_out_like_c_structs() {
        // struct { u8 a; u32 b; u16 c; } -> a@0, b@4, c@8, size 12 (padded to align 4).
        let r = Format::record(vec![("a".into(), int(1)), ("b".into(), int(4)), ("c".into(), int(2))]);
        let Format::Record(fields) = &r else { unreachable!() };
        assert_eq!(fields.iter().map(|f| f.offset).collect::<Vec<_>>(), [0, 4, 8]);
        assert_eq!((r.size(), r.align()), (12, 4));
    }

    #[test]
    fn strings_and_nested_records() {
        // struct { char name[5]; struct { u64 x; } inner; } -> inner@8, size 16.
        let inner = Format::record(vec![("x".into(), int(8))]);
        let r = Format::record(vec![("name".into(), Format::Chars(5)), ("inner".into(), inner)]);
        let Format::Record(fields) = &r else { unreachable!() };
        assert_eq!(fields[1].offset, 8);
        assert_eq!((r.size(), r.align()), (16, 8));
        assert_eq!((Format::Chars(5).size(), Format::Chars(5).align()), (5, 1));
        assert_eq!(Format::record(vec![]).size(), 0);
    }

    #[test]
    fn map_kinds_are_kernel_numbers() {
        assert_eq!(MapKind::Hash as u32, 1);
        assert_eq!(MapKind::LruHash as u32, 9);
        assert!(MapKind::PercpuArray.is_array() && MapKind::PercpuArray.is_percpu());
        assert_eq!(MapKind::LpmTrie.name(), "lpm_trie");
    }
}
