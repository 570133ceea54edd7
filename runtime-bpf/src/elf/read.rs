//! ELF bytes -> `Object`, for luabpf's own objects (the loader needs maps, initial contents and
//! kfunc calls back) and for clang's (so they can be listed next to luabpf's).
//!
//! Programs are rebuilt the way libbpf and aya link them: the entry function, then every
//! function it reaches through calls or function addresses, in their link order, with call
//! immediates made relative again; slot numbers then match any loader's verifier log. Every
//! linked function other than the entry whose func_info names a BTF FUNC of linkage global
//! comes back as a `SubFunction`, its parameters read from the FUNC_PROTO (clang's typedefs
//! and qualifiers included). Everything is bounds-checked; malformed input is an error.

use std::collections::{BTreeMap, HashMap};

use object::read::elf::ElfFile64;
use object::{
    Architecture, Endianness, FileKind, Object as _, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget,
    SectionFlags, SymbolKind,
};

use super::layout::{is_func_addr, is_local_call, link_order, second_slots, CALL};
use super::luabpf_sections::{decode_init, decode_kfuncs};
use super::maps_btf::{format_of, parse_map_def, MapDef};
use super::write::MAX_PARAMS;
use super::{ReadError, INIT_SECTION, KFUNCS_SECTION};
use crate::btf::{Btf, BtfExt, LineInfo, Type, TypeId, FUNC_GLOBAL};
use crate::isa::{Insn, BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_FD};
use crate::object::{Format, MapKind, MapSpec, Object, ParamType, ProgramCode, SourceFile, SourceLoc, SubFunction};
use crate::progtypes::ProgType;

/// A map whose kernel type luabpf does not declare (found in clang objects).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignMap {
    pub name: String,
    /// `enum bpf_map_type`.
    pub kernel_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// Everything read from an object, including what an `Object` cannot express.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadObject {
    pub object: Object,
    pub foreign_maps: Vec<ForeignMap>,
    /// `(program index, slot, index into foreign_maps)` of `ld_imm64`s loading such maps.
    pub foreign_relocs: Vec<(usize, usize, usize)>,
    /// Features of the file that `object` does not carry (foreign maps, global data): fine for
    /// a listing, fatal for loading. Empty for every object luabpf writes.
    pub unsupported: Vec<String>,
}

/// Reads an object for loading: fails if it uses anything an `Object` cannot carry.
pub fn read(bytes: &[u8]) -> Result<Object, ReadError> {
    let r = read_detailed(bytes)?;
    match r.unsupported.into_iter().next() {
        Some(why) => Err(ReadError::Unsupported(why)),
        None => Ok(r.object),
    }
}

/// Reads an object for listing: what luabpf cannot load is reported, not refused.
pub fn read_detailed(bytes: &[u8]) -> Result<ReadObject, ReadError> {
    let elf = Elf::parse(bytes)?;
    let btf = match elf.section_named(".BTF") {
        Some(s) => Some(Btf::parse(s.data).map_err(ReadError::Btf)?),
        None => None,
    };
    let ext = match elf.section_named(".BTF.ext") {
        Some(s) => BtfExt::parse(s.data).map_err(ReadError::BtfExt)?,
        None => BtfExt::default(),
    };
    let mut out = ReadObject {
        object: Object {
            programs: Vec::new(),
            maps: Vec::new(),
            sources: Vec::new(),
            license: elf.license(),
        },
        foreign_maps: Vec::new(),
        foreign_relocs: Vec::new(),
        unsupported: Vec::new(),
    };
    let map_refs = read_maps(&elf, btf.as_ref(), &mut out);
    apply_init(&elf, &mut out.object.maps)?;
    let kfuncs = match elf.section_named(KFUNCS_SECTION) {
        Some(s) => decode_kfuncs(s.data).map_err(|why| bad_section(KFUNCS_SECTION, why))?,
        None => Vec::new(),
    };
    let mut lines = LineTable::new(btf.as_ref(), &ext);
    let func_types = FuncTypes::new(btf.as_ref(), &ext);
    for (name, entry) in elf.entry_points() {
        let index = out.object.programs.len();
        let linked = link_program(&elf, &name, entry)?;
        let mut program = to_program(&elf, &name, &linked, &map_refs, &mut lines, &mut out, index);
        program.subfunctions = global_functions(&elf, &linked, &func_types, &program, &mut out);
        if let Some((_, calls)) = kfuncs.iter().find(|(p, _)| *p == name) {
            check_kfunc_calls(&program, calls)?;
            program.kfunc_relocs = calls.clone();
        }
        out.object.programs.push(program);
    }
    if let Some((p, _)) = kfuncs
        .iter()
        .find(|(p, _)| !out.object.programs.iter().any(|q| q.name == *p))
    {
        return Err(bad_section(
            KFUNCS_SECTION,
            format!("calls listed for unknown program {p:?}"),
        ));
    }
    out.object.sources = lines.into_sources();
    Ok(out)
}

/// The loader writes a BTF id into each listed slot: it must be a kfunc call, or a corrupt
/// section would have it patch some other instruction.
fn check_kfunc_calls(p: &ProgramCode, calls: &[(usize, String)]) -> Result<(), ReadError> {
    for (slot, name) in calls {
        let ok = p
            .insns
            .get(*slot)
            .is_some_and(|i| i.code == CALL && i.src == BPF_PSEUDO_KFUNC_CALL);
        if !ok {
            let why = format!("program {:?}: slot {slot} ({name}) is not a kfunc call", p.name);
            return Err(bad_section(KFUNCS_SECTION, why));
        }
    }
    Ok(())
}

fn bad_section(section: &'static str, why: String) -> ReadError {
    ReadError::BadLuabpfSection { section, why }
}

// ---- the ELF file, flattened into plain data ------------------------------------------------

struct Section<'a> {
    name: String,
    data: &'a [u8],
    executable: bool,
    /// Byte offset -> (symbol index, r_type).
    relocs: HashMap<u64, (usize, u32)>,
}

struct Sym {
    name: String,
    section: Option<usize>,
    value: u64,
    size: u64,
    kind: SymbolKind,
    undefined: bool,
}

struct Elf<'a> {
    sections: BTreeMap<usize, Section<'a>>,
    symbols: BTreeMap<usize, Sym>,
    /// Function ranges of every executable section, sorted (computed once: lookups are hot).
    funcs: HashMap<usize, Vec<Func>>,
    /// Decoded instructions of executable sections made of whole slots.
    code: HashMap<usize, Vec<Insn>>,
}

/// A function: slots `start..end` of an executable section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Func {
    section: usize,
    start: usize,
    end: usize,
}

const SHF_EXECINSTR: u64 = 0x4;

impl<'a> Elf<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Elf<'a>, ReadError> {
        match FileKind::parse(bytes) {
            Ok(FileKind::Elf64) => {}
            Ok(kind) => return Err(ReadError::NotBpf(format!("a {kind:?} file, not ELF64"))),
            Err(e) => return Err(ReadError::Elf(e.to_string())),
        }
        let file = ElfFile64::<Endianness>::parse(bytes).map_err(|e| ReadError::Elf(e.to_string()))?;
        if !file.is_little_endian() {
            return Err(ReadError::NotBpf("big-endian ELF".into()));
        }
        if file.architecture() != Architecture::Bpf {
            return Err(ReadError::NotBpf(format!("machine is {:?}", file.architecture())));
        }
        let mut sections = BTreeMap::new();
        for s in file.sections() {
            let name = s.name().map_err(|e| ReadError::Elf(e.to_string()))?.to_string();
            let data = s.data().map_err(|e| ReadError::Elf(format!("section {name}: {e}")))?;
            let executable = matches!(s.flags(), SectionFlags::Elf { sh_flags } if sh_flags & SHF_EXECINSTR != 0);
            let relocs = s
                .relocations()
                .filter_map(|(offset, r)| match (r.target(), r.flags()) {
                    (RelocationTarget::Symbol(sym), RelocationFlags::Elf { r_type }) => Some((offset, (sym.0, r_type))),
                    _ => None,
                })
                .collect();
            sections.insert(
                s.index().0,
                Section {
                    name,
                    data,
                    executable,
                    relocs,
                },
            );
        }
        let symbols = file
            .symbols()
            .map(|s| {
                let sym = Sym {
                    name: s.name().unwrap_or_default().to_string(),
                    section: s.section_index().map(|i| i.0),
                    value: s.address(),
                    size: s.size(),
                    kind: s.kind(),
                    undefined: s.is_undefined(),
                };
                (s.index().0, sym)
            })
            .collect();
        let mut elf = Elf {
            sections,
            symbols,
            funcs: HashMap::new(),
            code: HashMap::new(),
        };
        let executable: Vec<usize> = elf
            .sections
            .iter()
            .filter(|(_, s)| s.executable)
            .map(|(&i, _)| i)
            .collect();
        for index in executable {
            let funcs = elf.compute_functions(index);
            elf.funcs.insert(index, funcs);
            if let Some(s) = elf.sections.get(&index).filter(|s| s.data.len() % 8 == 0) {
                elf.code.insert(index, crate::isa::decode_all(s.data));
            }
        }
        Ok(elf)
    }

    fn section_named(&self, name: &str) -> Option<&Section<'a>> {
        self.sections.values().find(|s| s.name == name)
    }

    fn section_index(&self, name: &str) -> Option<usize> {
        self.sections.iter().find(|(_, s)| s.name == name).map(|(&i, _)| i)
    }

    /// The license string up to its NUL (empty when the section is missing).
    fn license(&self) -> String {
        let data = self.section_named("license").map(|s| s.data).unwrap_or_default();
        let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        String::from_utf8_lossy(&data[..end]).into_owned()
    }

    /// Program sections: executable, not `.text` (whose functions are subprograms).
    fn is_program_section(&self, index: usize) -> bool {
        self.sections
            .get(&index)
            .is_some_and(|s| s.executable && !s.name.starts_with(".text"))
    }

    /// Function symbols of a section as slot ranges, sorted; a symbol without a size runs to
    /// the next one. A section without symbols is one function.
    fn compute_functions(&self, section: usize) -> Vec<Func> {
        let slots = self.sections.get(&section).map_or(0, |s| s.data.len() / 8);
        let mut starts: Vec<(usize, u64)> = self
            .symbols
            .values()
            .filter(|s| s.kind == SymbolKind::Text && s.section == Some(section) && !s.undefined)
            .map(|s| ((s.value / 8) as usize, s.size / 8))
            .filter(|&(start, _)| start < slots)
            .collect();
        starts.sort_unstable();
        starts.dedup_by_key(|s| s.0);
        if starts.is_empty() {
            return if slots > 0 {
                vec![Func {
                    section,
                    start: 0,
                    end: slots,
                }]
            } else {
                Vec::new()
            };
        }
        let nexts: Vec<usize> = starts.iter().skip(1).map(|s| s.0).chain([slots]).collect();
        starts
            .iter()
            .zip(nexts)
            .map(|(&(start, size), next)| {
                let end = if size > 0 {
                    (start as u64).saturating_add(size).min(slots as u64) as usize
                } else {
                    next
                };
                Func {
                    section,
                    start,
                    end: end.max(start),
                }
            })
            .collect()
    }

    fn functions(&self, section: usize) -> &[Func] {
        self.funcs.get(&section).map_or(&[], |f| f.as_slice())
    }

    /// The function holding a slot (ranges are sorted and do not overlap).
    fn function_at(&self, section: usize, slot: usize) -> Option<Func> {
        let funcs = self.functions(section);
        let i = funcs.partition_point(|f| f.start <= slot).checked_sub(1)?;
        funcs.get(i).copied().filter(|f| slot < f.end)
    }

    /// `(name, function)` of every program, in symbol-table order (the order luabpf wrote).
    fn entry_points(&self) -> Vec<(String, Func)> {
        let mut out = Vec::new();
        let mut covered = Vec::new();
        for sym in self.symbols.values() {
            let Some(section) = sym.section.filter(|&s| self.is_program_section(s)) else {
                continue;
            };
            if sym.kind != SymbolKind::Text || sym.undefined || sym.name.is_empty() {
                continue;
            }
            let start = (sym.value / 8) as usize;
            if let Some(&f) = self.functions(section).iter().find(|f| f.start == start) {
                out.push((sym.name.clone(), f));
                covered.push(section);
            }
        }
        // Stripped objects: a program section without symbols is one program named after it.
        for (&index, s) in &self.sections {
            if self.is_program_section(index) && !covered.contains(&index) && !s.data.is_empty() {
                out.push((
                    s.name.clone(),
                    Func {
                        section: index,
                        start: 0,
                        end: s.data.len() / 8,
                    },
                ));
            }
        }
        out
    }

    /// The instructions of a section; its size must be whole slots.
    fn slots(&self, section: usize, program: &str) -> Result<&[Insn], ReadError> {
        if let Some(code) = self.code.get(&section) {
            return Ok(code);
        }
        let name = self.sections.get(&section).map_or("?", |s| s.name.as_str());
        Err(bad_program(
            program,
            &format!("section {name} is not code made of whole 8-byte slots"),
        ))
    }

    fn reloc(&self, section: usize, slot: usize) -> Option<(usize, u32, &Sym)> {
        let &(sym, r_type) = self.sections.get(&section)?.relocs.get(&(slot as u64 * 8))?;
        Some((sym, r_type, self.symbols.get(&sym)?))
    }
}

fn bad_program(program: &str, why: &str) -> ReadError {
    ReadError::BadProgram {
        program: program.to_string(),
        why: why.to_string(),
    }
}

// ---- maps -----------------------------------------------------------------------------------

/// What an `ld_imm64` relocation against a symbol loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MapRef {
    Own(usize),
    Foreign(usize),
}

/// Map references by symbol index, and by (section, offset) for section-relative relocations.
#[derive(Default)]
struct MapRefs {
    by_symbol: HashMap<usize, MapRef>,
    by_offset: HashMap<(usize, u64), MapRef>,
}

impl MapRefs {
    fn resolve(&self, sym_index: usize, sym: &Sym, imm: i32) -> Option<MapRef> {
        if let Some(r) = self.by_symbol.get(&sym_index) {
            return Some(*r);
        }
        let offset = sym.value.checked_add_signed(imm as i64)?;
        self.by_offset.get(&(sym.section?, offset)).copied()
    }
}

fn map_kind(kernel_type: u32) -> Option<MapKind> {
    Some(match kernel_type {
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

/// One map definition, from BTF (`.maps`) or from a legacy `struct bpf_map_def` (`maps`).
struct FoundMap {
    name: String,
    kernel_type: u32,
    key: Format,
    value: Format,
    max_entries: u32,
    flags: u32,
}

fn read_maps(elf: &Elf<'_>, btf: Option<&Btf>, out: &mut ReadObject) -> MapRefs {
    let mut refs = MapRefs::default();
    for (section_name, legacy) in [(".maps", false), ("maps", true)] {
        let Some(section) = elf.section_index(section_name) else {
            continue;
        };
        let mut syms: Vec<(&usize, &Sym)> = elf
            .symbols
            .iter()
            .filter(|(_, s)| s.section == Some(section) && !s.name.is_empty() && s.kind != SymbolKind::Section)
            .collect();
        syms.sort_by_key(|(_, s)| s.value);
        for (&index, sym) in syms {
            let found = if legacy {
                legacy_map(elf, section, sym)
            } else {
                btf_map(btf, sym)
            };
            let Some(found) = found else {
                out.unsupported
                    .push(format!("map {:?} has no definition luabpf can read", sym.name));
                continue;
            };
            let r = add_map(found, out);
            refs.by_symbol.insert(index, r);
            refs.by_offset.insert((section, sym.value), r);
        }
    }
    refs
}

fn add_map(m: FoundMap, out: &mut ReadObject) -> MapRef {
    match map_kind(m.kernel_type) {
        Some(kind) => {
            let spec = MapSpec {
                name: m.name,
                kind,
                key: m.key,
                value: m.value,
                max_entries: m.max_entries,
                flags: m.flags,
                init: Vec::new(),
            };
            out.object.maps.push(spec);
            MapRef::Own(out.object.maps.len() - 1)
        }
        None => {
            out.unsupported.push(format!(
                "map {:?} has kernel map type {}, which luabpf does not declare",
                m.name, m.kernel_type
            ));
            out.foreign_maps.push(ForeignMap {
                name: m.name,
                kernel_type: m.kernel_type,
                key_size: m.key.size(),
                value_size: m.value.size(),
                max_entries: m.max_entries,
                flags: m.flags,
            });
            MapRef::Foreign(out.foreign_maps.len() - 1)
        }
    }
}

/// A `.maps` map: the DATASEC entry at the symbol's offset (or the VAR of the symbol's name).
fn btf_map(btf: Option<&Btf>, sym: &Sym) -> Option<FoundMap> {
    let btf = btf?;
    let var = btf.types().iter().find_map(|t| match t {
        Type::Datasec { name, vars, .. } if btf.string(*name) == Some(".maps") => {
            vars.iter().find(|v| v.offset as u64 == sym.value).map(|v| v.ty)
        }
        _ => None,
    });
    let var = var.or_else(|| btf.find(crate::btf::KIND_VAR, &sym.name))?;
    let Some(Type::Var { ty, name, .. }) = btf.get(var) else {
        return None;
    };
    let def: MapDef = parse_map_def(btf, *ty)?;
    let format = |id: Option<u32>, size: Option<u32>| {
        id.and_then(|id| format_of(btf, id))
            .unwrap_or(Format::Chars(size.unwrap_or(0)))
    };
    Some(FoundMap {
        name: btf
            .string(*name)
            .filter(|n| !n.is_empty())
            .unwrap_or(&sym.name)
            .to_string(),
        kernel_type: def.kind?,
        key: format(def.key, def.key_size),
        value: format(def.value, def.value_size),
        max_entries: def.max_entries.unwrap_or(0),
        flags: def.flags.unwrap_or(0),
    })
}

/// A legacy map: `struct bpf_map_def { type, key_size, value_size, max_entries, map_flags }`.
fn legacy_map(elf: &Elf<'_>, section: usize, sym: &Sym) -> Option<FoundMap> {
    let data = elf.sections.get(&section)?.data;
    let start = usize::try_from(sym.value).ok()?;
    let field = |i: usize| {
        let at = start.checked_add(i * 4)?;
        let b = data.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    Some(FoundMap {
        name: sym.name.clone(),
        kernel_type: field(0)?,
        key: Format::Chars(field(1)?),
        value: Format::Chars(field(2)?),
        max_entries: field(3)?,
        flags: field(4).unwrap_or(0),
    })
}

fn apply_init(elf: &Elf<'_>, maps: &mut [MapSpec]) -> Result<(), ReadError> {
    let Some(section) = elf.section_named(INIT_SECTION) else {
        return Ok(());
    };
    let records = decode_init(section.data).map_err(|why| bad_section(INIT_SECTION, why))?;
    for r in records {
        let map = maps
            .iter_mut()
            .find(|m| m.name == r.name)
            .ok_or_else(|| bad_section(INIT_SECTION, format!("contents for unknown map {:?}", r.name)))?;
        if (r.key_size, r.value_size) != (map.key.size(), map.value.size()) {
            return Err(bad_section(
                INIT_SECTION,
                format!(
                    "map {:?}: entry sizes {}/{} differ from its BTF",
                    r.name, r.key_size, r.value_size
                ),
            ));
        }
        map.init = r.entries;
    }
    Ok(())
}

// ---- programs -------------------------------------------------------------------------------

/// A program's functions in their final order, with where each starts in the linked code.
struct Linked {
    funcs: Vec<Func>,
    len: usize,
    /// `(function, base)` sorted by function, for `position`.
    index: Vec<(Func, usize)>,
}

/// Where a local call or function address at `slot` of `section` leads: the relocation's
/// symbol plus the immediate (libbpf's rules), or pc-relative within the section without one.
fn local_target(elf: &Elf<'_>, section: usize, slot: usize, insn: &Insn) -> Result<(usize, usize), String> {
    let (target_section, target) = match elf.reloc(section, slot) {
        Some((_, _, sym)) => {
            let s = sym
                .section
                .ok_or_else(|| format!("relocation against undefined {:?}", sym.name))?;
            // i128: a crafted symbol value must not overflow the arithmetic.
            let (value, imm) = (sym.value as i128, insn.imm as i128);
            let target = if is_local_call(insn) {
                value / 8 + imm + 1
            } else {
                (value + imm).div_euclid(8)
            };
            (s, target)
        }
        None => (section, slot as i128 + insn.imm as i128 + 1),
    };
    let target = usize::try_from(target).map_err(|_| format!("target slot {target} is negative"))?;
    Ok((target_section, target))
}

/// A call relocated against an undefined symbol is a kfunc call as clang emits it.
fn kfunc_name<'e>(elf: &'e Elf<'_>, section: usize, slot: usize, insn: &Insn) -> Option<&'e str> {
    let (_, _, sym) = elf.reloc(section, slot)?;
    (insn.code == CALL && sym.undefined && !sym.name.is_empty()).then_some(sym.name.as_str())
}

/// Collects the entry and every function it reaches, in the order libbpf and aya link them.
fn link_program(elf: &Elf<'_>, name: &str, entry: Func) -> Result<Linked, ReadError> {
    let mut found = vec![entry];
    let mut ids = HashMap::from([(entry, 0usize)]);
    let mut callees: Vec<Vec<usize>> = Vec::new();
    while let Some(&f) = found.get(callees.len()) {
        let code = elf.slots(f.section, name)?;
        let body = code
            .get(f.start..f.end)
            .ok_or_else(|| bad_program(name, "function outside its section"))?;
        let second = second_slots(body);
        let mut mine = Vec::new();
        for (k, insn) in body.iter().enumerate() {
            let slot = f.start + k;
            let local = is_local_call(insn) || is_func_addr(insn);
            if second[k] || !local || kfunc_name(elf, f.section, slot, insn).is_some() {
                continue;
            }
            let bad_call = |why: String| ReadError::BadCall {
                program: name.to_string(),
                slot,
                why,
            };
            let (ts, t) = local_target(elf, f.section, slot, insn).map_err(bad_call)?;
            let callee = elf
                .function_at(ts, t)
                .ok_or_else(|| bad_call(format!("target slot {t} is in no function")))?;
            let id = *ids.entry(callee).or_insert_with(|| {
                found.push(callee);
                found.len() - 1
            });
            mine.push(id);
        }
        callees.push(mine);
    }
    let funcs: Vec<Func> = link_order(0, &callees).into_iter().map(|i| found[i]).collect();
    let mut bases = Vec::with_capacity(funcs.len());
    let mut len = 0;
    for f in &funcs {
        bases.push(len);
        len += f.end - f.start;
    }
    let mut index: Vec<(Func, usize)> = funcs.iter().copied().zip(bases).collect();
    index.sort();
    Ok(Linked { funcs, len, index })
}

impl Linked {
    /// The linked slot of (section, slot), if one of the program's functions holds it.
    fn position(&self, section: usize, slot: usize) -> Option<usize> {
        let i = self
            .index
            .partition_point(|(f, _)| (f.section, f.start) <= (section, slot));
        let &(f, base) = self.index.get(i.checked_sub(1)?)?;
        (f.section == section && slot < f.end).then(|| base + slot - f.start)
    }
}

/// Builds the `ProgramCode` of a linked program: instructions with calls made relative,
/// map and kfunc references, source locations.
fn to_program(
    elf: &Elf<'_>,
    name: &str,
    linked: &Linked,
    map_refs: &MapRefs,
    lines: &mut LineTable<'_>,
    out: &mut ReadObject,
    index: usize,
) -> ProgramCode {
    let entry = linked.funcs[0];
    let section = elf
        .sections
        .get(&entry.section)
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let mut p = ProgramCode {
        name: name.to_string(),
        section,
        insns: Vec::with_capacity(linked.len),
        locs: Vec::with_capacity(linked.len),
        map_relocs: Vec::new(),
        kfunc_relocs: Vec::new(),
        subfunctions: Vec::new(),
    };
    for f in &linked.funcs {
        let code = elf.slots(f.section, name).unwrap_or_default();
        let body = code.get(f.start..f.end).unwrap_or_default();
        let second = second_slots(body);
        let section_name = elf
            .sections
            .get(&f.section)
            .map(|s| s.name.as_str())
            .unwrap_or_default();
        for (k, &insn) in body.iter().enumerate() {
            let (slot, at) = (f.start + k, p.insns.len());
            let insn = if second[k] {
                insn
            } else {
                relink(elf, linked, f.section, slot, at, insn, &mut p, map_refs, out, index)
            };
            p.insns.push(insn);
            p.locs.push(lines.loc(section_name, slot));
        }
    }
    p
}

/// One instruction of the linked program: local calls re-pointed, references recorded.
#[allow(clippy::too_many_arguments)]
fn relink(
    elf: &Elf<'_>,
    linked: &Linked,
    section: usize,
    slot: usize,
    at: usize,
    mut insn: Insn,
    p: &mut ProgramCode,
    map_refs: &MapRefs,
    out: &mut ReadObject,
    index: usize,
) -> Insn {
    if let Some(name) = kfunc_name(elf, section, slot, &insn) {
        insn.src = BPF_PSEUDO_KFUNC_CALL;
        insn.imm = 0;
        p.kfunc_relocs.push((at, name.to_string()));
        return insn;
    }
    if is_local_call(&insn) || is_func_addr(&insn) {
        // link_program resolved every target already; a failure here cannot happen.
        if let Some(t) = local_target(elf, section, slot, &insn)
            .ok()
            .and_then(|(s, t)| linked.position(s, t))
        {
            insn.imm = (t as i64 - at as i64 - 1) as i32;
        }
        return insn;
    }
    if !insn.is_ld_imm64() {
        return insn;
    }
    let Some((sym_index, _, sym)) = elf.reloc(section, slot) else {
        return insn;
    };
    match map_refs.resolve(sym_index, sym, insn.imm) {
        Some(MapRef::Own(m)) => {
            // clang leaves src_reg 0 for libbpf to set; an `Object` says what it loads.
            insn.src = BPF_PSEUDO_MAP_FD;
            insn.imm = 0;
            p.map_relocs.push((at, m));
        }
        Some(MapRef::Foreign(m)) => out.foreign_relocs.push((index, at, m)),
        None => {
            let target = sym
                .section
                .and_then(|s| elf.sections.get(&s))
                .map_or("?", |s| s.name.as_str());
            out.unsupported.push(format!(
                "program {:?} loads the address of {:?} in section {target} (global data)",
                p.name, sym.name
            ));
        }
    }
    insn
}

// ---- global functions -----------------------------------------------------------------------

/// func_info by ELF section: the BTF FUNC of the function starting at each slot.
struct FuncTypes<'b> {
    btf: Option<&'b Btf>,
    by_section: HashMap<String, HashMap<usize, TypeId>>,
}

impl<'b> FuncTypes<'b> {
    fn new(btf: Option<&'b Btf>, ext: &BtfExt) -> FuncTypes<'b> {
        let mut by_section: HashMap<String, HashMap<usize, TypeId>> = HashMap::new();
        if let Some(btf) = btf {
            for sec in &ext.func_info {
                let name = btf.string(sec.sec_name_off).unwrap_or_default().to_string();
                let records = by_section.entry(name).or_default();
                records.extend(sec.records.iter().map(|r| ((r.insn_off / 8) as usize, r.type_id)));
            }
        }
        FuncTypes { btf, by_section }
    }

    fn at(&self, section: &str, slot: usize) -> Option<TypeId> {
        self.by_section.get(section)?.get(&slot).copied()
    }
}

/// The program's functions other than its entry whose BTF FUNC has linkage global: the ones the
/// kernel verifies on their own. One whose prototype a `SubFunction` cannot express (clang
/// objects: other pointer or return types) is left out and reported as unsupported, since
/// writing it back as static would change how it is verified.
fn global_functions(
    elf: &Elf<'_>,
    linked: &Linked,
    func_types: &FuncTypes<'_>,
    p: &ProgramCode,
    out: &mut ReadObject,
) -> Vec<SubFunction> {
    let Some(btf) = func_types.btf else {
        return Vec::new();
    };
    let progtype = ProgType::from_section(&p.section);
    let mut subs = Vec::new();
    let mut start = 0;
    for (k, f) in linked.funcs.iter().enumerate() {
        let here = start;
        start += f.end - f.start;
        if k == 0 {
            continue; // the entry: global too, but a program
        }
        let Some(section) = elf.sections.get(&f.section) else {
            continue;
        };
        let Some(Type::Func {
            name,
            proto,
            linkage: FUNC_GLOBAL,
        }) = func_types.at(&section.name, f.start).and_then(|id| btf.get(id))
        else {
            continue;
        };
        let name = btf.string(*name).unwrap_or_default().to_string();
        match global_params(btf, *proto, progtype) {
            Ok(params) => subs.push(SubFunction {
                start: here,
                name,
                params,
            }),
            Err(why) => out
                .unsupported
                .push(format!("program {:?}: global function {name:?} {why}", p.name)),
        }
    }
    subs
}

/// The parameters of a global function's FUNC_PROTO, if it returns an integer and each
/// parameter is an integer, a pointer to an 8-byte integer, or a pointer to the program's
/// context struct.
fn global_params(btf: &Btf, proto: TypeId, progtype: Option<ProgType>) -> Result<Vec<ParamType>, String> {
    let Some(Type::FuncProto { ret, params }) = btf.get(btf.resolve(proto)) else {
        return Err("has no function prototype".into());
    };
    let is_int = |id: TypeId| {
        matches!(
            btf.get(btf.resolve(id)),
            Some(Type::Int { .. } | Type::Enum { .. } | Type::Enum64 { .. })
        )
    };
    if !is_int(*ret) {
        return Err("does not return an integer".into());
    }
    if params.len() > MAX_PARAMS {
        return Err(format!("takes {} parameters", params.len()));
    }
    let ctx = progtype.map(|t| t.ctx_struct());
    params
        .iter()
        .enumerate()
        .map(|(i, param)| {
            if is_int(param.ty) {
                return Ok(ParamType::Scalar);
            }
            let target = match btf.get(btf.resolve(param.ty)) {
                Some(Type::Ptr { target }) => btf.resolve(*target),
                _ => return Err(format!("parameter #{i} is neither an integer nor a pointer")),
            };
            match btf.get(target) {
                Some(Type::Int { size: 8, .. }) => Ok(ParamType::ScalarPtr),
                Some(Type::Struct { name, .. } | Type::Union { name, .. })
                    if ctx.is_some() && btf.string(*name) == ctx =>
                {
                    Ok(ParamType::Ctx)
                }
                _ => Err(format!(
                    "parameter #{i} points to something other than a u64 or the context"
                )),
            }
        })
        .collect()
}

// ---- source locations -----------------------------------------------------------------------

/// line_info by ELF section, turned into `SourceLoc`s; files are numbered as first seen.
struct LineTable<'b> {
    btf: Option<&'b Btf>,
    /// Section name -> records sorted by slot.
    by_section: HashMap<String, Vec<(usize, LineInfo)>>,
    files: Vec<String>,
    /// Per file, the text of each line seen.
    texts: Vec<BTreeMap<u32, String>>,
}

impl<'b> LineTable<'b> {
    fn new(btf: Option<&'b Btf>, ext: &BtfExt) -> LineTable<'b> {
        let mut by_section: HashMap<String, Vec<(usize, LineInfo)>> = HashMap::new();
        if let Some(btf) = btf {
            for sec in &ext.line_info {
                let name = btf.string(sec.sec_name_off).unwrap_or_default().to_string();
                let records = by_section.entry(name).or_default();
                records.extend(sec.records.iter().map(|r| ((r.insn_off / 8) as usize, *r)));
            }
        }
        for records in by_section.values_mut() {
            records.sort_by_key(|r| r.0);
        }
        LineTable {
            btf,
            by_section,
            files: Vec::new(),
            texts: Vec::new(),
        }
    }

    /// The location of a slot: the last line_info at or before it.
    fn loc(&mut self, section: &str, slot: usize) -> SourceLoc {
        let Some(btf) = self.btf else {
            return SourceLoc::default();
        };
        let Some(records) = self.by_section.get(section) else {
            return SourceLoc::default();
        };
        let Some(&(_, r)) = records
            .partition_point(|(s, _)| *s <= slot)
            .checked_sub(1)
            .and_then(|i| records.get(i))
        else {
            return SourceLoc::default();
        };
        if r.line() == 0 {
            return SourceLoc::default(); // "unknown", written at function starts
        }
        let name = btf.string(r.file_name_off).unwrap_or_default();
        let file = match self.files.iter().position(|f| f == name) {
            Some(i) => i,
            None => {
                self.files.push(name.to_string());
                self.texts.push(BTreeMap::new());
                self.files.len() - 1
            }
        };
        if let Some(text) = btf.string(r.line_off).filter(|t| !t.is_empty()) {
            self.texts[file].entry(r.line()).or_insert_with(|| text.to_string());
        }
        SourceLoc {
            file: file as u32,
            line: r.line(),
            col: r.col(),
        }
    }

    /// Source files rebuilt from the line texts BTF carries (lines never referenced are empty).
    /// Line numbers come from the file, so the padding they imply has a budget: past it, texts
    /// are left empty rather than letting a crafted object allocate gigabytes.
    fn into_sources(self) -> Vec<SourceFile> {
        let mut budget: u32 = 4_000_000;
        self.files
            .into_iter()
            .zip(self.texts)
            .map(|(name, lines)| {
                let mut last = lines.keys().next_back().copied().unwrap_or(0);
                if last > budget {
                    last = 0;
                }
                budget -= last;
                let text = (1..=last)
                    .map(|n| lines.get(&n).map_or("", |s| s.as_str()))
                    .collect::<Vec<_>>()
                    .join("\n");
                SourceFile { name, text }
            })
            .collect()
    }
}
