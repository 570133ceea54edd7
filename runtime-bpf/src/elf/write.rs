//! `Object` -> ELF bytes. First a plan (which instruction goes where, which slots need
//! relocations), then BTF from the plan, then the ELF container from both.

use std::collections::HashSet;

use object::write::{Object as ElfWriter, Relocation, SectionId, Symbol, SymbolId, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};

use super::layout::{self, is_func_addr, is_local_call};
use super::luabpf_sections::{encode_init, encode_kfuncs};
use super::maps_btf::BtfBuilder;
use super::{is_identifier, sanitize_identifier, WriteError, INIT_SECTION, KFUNCS_SECTION, R_BPF_64_32, R_BPF_64_64};
use crate::btf::{
    BtfExt, ExtSection, FuncInfo, LineInfo, Type, TypeId, VarSecInfo, FUNC_GLOBAL, FUNC_STATIC, VAR_GLOBAL_ALLOCATED,
};
use crate::isa::{encode_all, Insn, BPF_PSEUDO_KFUNC_CALL};
use crate::object::{Format, MapSpec, Object, ParamType, ProgramCode, SourceLoc, SubFunction};
use crate::progtypes::ProgType;

/// Registers r1-r5: the most parameters a BPF function can take.
pub(super) const MAX_PARAMS: usize = 5;

/// Writes `obj` as an ELF relocatable file. Never fails and never panics: an object that
/// [`validate`] would refuse is written as far as it makes sense (bad relocations are left
/// out, initial entries padded), so the kernel or loader reports the problem. Use
/// [`try_write`] to get the problem as an error instead.
pub fn write(obj: &Object) -> Vec<u8> {
    build(obj).unwrap_or_default()
}

/// Validates `obj`, then writes it.
pub fn try_write(obj: &Object) -> Result<Vec<u8>, WriteError> {
    validate(obj)?;
    build(obj)
}

/// Checks what the ELF writer relies on and what loaders would otherwise refuse with a less
/// helpful message. Returns the first problem found.
pub fn validate(obj: &Object) -> Result<(), WriteError> {
    let mut seen = HashSet::from(["_license"]);
    for p in &obj.programs {
        check_name("program", &p.name, &mut seen)?;
        validate_program(p, obj.maps.len())?;
    }
    // Global functions are GLOBAL ELF symbols too: one namespace with programs and maps.
    for p in &obj.programs {
        for f in &p.subfunctions {
            check_name("function", &f.name, &mut seen)?;
        }
    }
    for m in &obj.maps {
        check_name("map", &m.name, &mut seen)?;
        validate_map(m)?;
    }
    Ok(())
}

fn check_name<'a>(what: &'static str, name: &'a str, seen: &mut HashSet<&'a str>) -> Result<(), WriteError> {
    if !is_identifier(name) {
        return Err(WriteError::InvalidName {
            what,
            name: name.to_string(),
        });
    }
    if !seen.insert(name) {
        return Err(WriteError::DuplicateName(name.to_string()));
    }
    Ok(())
}

/// Sections this module writes itself; a program there would corrupt them.
const RESERVED_SECTIONS: &[&str] = &[
    ".text",
    ".maps",
    "maps",
    "license",
    "version",
    ".BTF",
    ".BTF.ext",
    INIT_SECTION,
    KFUNCS_SECTION,
];

fn validate_program(p: &ProgramCode, maps: usize) -> Result<(), WriteError> {
    if p.section.is_empty() || RESERVED_SECTIONS.contains(&p.section.as_str()) {
        return Err(WriteError::BadSection {
            program: p.name.clone(),
            section: p.section.clone(),
        });
    }
    if p.insns.is_empty() {
        return Err(WriteError::EmptyProgram(p.name.clone()));
    }
    let second = layout::second_slots(&p.insns);
    for &(slot, map) in &p.map_relocs {
        let ok = p.insns.get(slot).is_some_and(|i| i.is_ld_imm64()) && !second[slot] && map < maps;
        if !ok {
            return Err(WriteError::BadMapReloc {
                program: p.name.clone(),
                slot,
                map,
            });
        }
    }
    for (slot, _) in &p.kfunc_relocs {
        let ok = p
            .insns
            .get(*slot)
            .is_some_and(|i| i.code == layout::CALL && i.src == BPF_PSEUDO_KFUNC_CALL);
        if !ok {
            return Err(WriteError::BadKfuncReloc {
                program: p.name.clone(),
                slot: *slot,
            });
        }
    }
    let references = layout::local_references(&p.insns);
    for &(slot, target) in &references {
        if !layout::valid_target(&p.insns, &second, target) {
            return Err(WriteError::BadCallTarget {
                program: p.name.clone(),
                slot,
                target,
            });
        }
    }
    validate_subfunctions(p, &references)
}

/// Names aya 0.14 turns static whatever their BTF says (it wants bounds to flow into memory
/// builtins): a global function named so would be verified differently by aya and libbpf.
const FORCED_STATIC: &[&str] = &["memset", "memcpy", "memmove", "memcmp"];

/// Each listed function must start where a local call leads (otherwise no loader would link
/// it; a callback address is not enough), once, with at most 5 parameters, a name aya does not
/// turn static, and a `Ctx` parameter needs a program type whose context struct is known.
fn validate_subfunctions(p: &ProgramCode, references: &[(usize, i64)]) -> Result<(), WriteError> {
    let bad = |f: &SubFunction, why: String| WriteError::BadSubFunction {
        program: p.name.clone(),
        function: f.name.clone(),
        why,
    };
    for (i, f) in p.subfunctions.iter().enumerate() {
        if FORCED_STATIC.contains(&f.name.as_str()) {
            return Err(bad(f, "aya makes functions of this name static".into()));
        }
        let called = references
            .iter()
            .any(|&(s, t)| t == f.start as i64 && is_local_call(&p.insns[s]));
        if !called {
            let why = format!("slot {} is not the target of a local call", f.start);
            return Err(bad(f, why));
        }
        if p.subfunctions[..i].iter().any(|g| g.start == f.start) {
            return Err(bad(f, format!("slot {} is listed twice", f.start)));
        }
        if f.params.len() > MAX_PARAMS {
            let why = format!("{} parameters (at most {MAX_PARAMS})", f.params.len());
            return Err(bad(f, why));
        }
        let ctx = f.params.contains(&ParamType::Ctx);
        if ctx && ProgType::from_section(&p.section).is_none() {
            let why = format!("section {:?} has no known context type", p.section);
            return Err(bad(f, why));
        }
    }
    Ok(())
}

fn validate_map(m: &MapSpec) -> Result<(), WriteError> {
    check_format(&m.name, &m.key)?;
    check_format(&m.name, &m.value)?;
    let (k, v) = (m.key.size() as usize, m.value.size() as usize);
    match m
        .init
        .iter()
        .position(|(key, value)| key.len() != k || value.len() != v)
    {
        Some(entry) => Err(WriteError::BadInitEntry {
            map: m.name.clone(),
            entry,
        }),
        None => Ok(()),
    }
}

fn check_format(map: &str, f: &Format) -> Result<(), WriteError> {
    match f {
        Format::Int { bytes, .. } if !matches!(bytes, 1 | 2 | 4 | 8) => Err(WriteError::BadFormat {
            map: map.to_string(),
            bytes: *bytes,
        }),
        Format::Record(fields) => fields.iter().try_for_each(|f| check_format(map, &f.format)),
        _ => Ok(()),
    }
}

// ---- the plan ---------------------------------------------------------------------------------

/// An ELF code section: a program section (by name) or `.text`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Group(usize),
    Text,
}

/// One function as placed: a program's entry code or one of its subprograms.
struct PlacedFunc {
    program: usize,
    name: String,
    place: Place,
    /// First slot inside its ELF section.
    slot: usize,
    /// Its slots in the program, `start..end`.
    start: usize,
    end: usize,
    is_main: bool,
    /// For a separately verified (global) function, its parameters; `None` for the entry and
    /// for static subprograms.
    global: Option<Vec<ParamType>>,
}

enum RelocTarget {
    Map(usize),
    TextSection,
}

struct PlacedReloc {
    place: Place,
    slot: usize,
    target: RelocTarget,
    r_type: u32,
}

/// Every instruction and relocation in its final section.
struct Plan {
    /// Program sections in order of first use: name and code.
    groups: Vec<(String, Vec<Insn>)>,
    text: Vec<Insn>,
    funcs: Vec<PlacedFunc>,
    relocs: Vec<PlacedReloc>,
    /// kfunc calls per program, in linked slots (what `.luabpf.kfuncs` stores).
    kfuncs: Vec<(String, Vec<(usize, String)>)>,
}

impl Plan {
    fn new(obj: &Object) -> Plan {
        let mut plan = Plan {
            groups: Vec::new(),
            text: Vec::new(),
            funcs: Vec::new(),
            relocs: Vec::new(),
            kfuncs: Vec::new(),
        };
        for (index, p) in obj.programs.iter().enumerate() {
            plan.place_program(index, p, obj.maps.len());
        }
        plan
    }

    fn group(&mut self, section: &str) -> usize {
        match self.groups.iter().position(|(name, _)| name == section) {
            Some(g) => g,
            None => {
                self.groups.push((section.to_string(), Vec::new()));
                self.groups.len() - 1
            }
        }
    }

    /// Places one program: entry code at the end of its section, subprograms at the end of
    /// `.text` in link order (see `layout::link_order`), so that slot numbers in the file, in
    /// `read`'s result and in any loader's verifier log are the same.
    fn place_program(&mut self, index: usize, p: &ProgramCode, maps: usize) {
        let split = layout::split(&p.insns);
        let main_len = split.main_len;
        let mut ranges = vec![(0, main_len)];
        ranges.extend(split.subs(p.insns.len()));
        let order = function_order(&p.insns, &ranges);
        let mut linked_start = vec![0; ranges.len()];
        let mut at = 0;
        for &f in &order {
            linked_start[f] = at;
            at += ranges[f].1 - ranges[f].0;
        }
        let func_of = |s: usize| ranges.partition_point(|r| r.0 <= s).saturating_sub(1);
        let linked = |s: usize| linked_start[func_of(s)] + s - ranges[func_of(s)].0;

        let g = self.group(&p.section);
        let sec_base = self.groups[g].1.len();
        let text_base = self.text.len();
        let place_of = |s: usize| match linked(s) {
            l if l < main_len => (Place::Group(g), sec_base + l),
            l => (Place::Text, text_base + l - main_len),
        };
        let mut insns: Vec<Insn> = order
            .iter()
            .flat_map(|&f| p.insns[ranges[f].0..ranges[f].1].iter().copied())
            .collect();
        self.relocate_local_refs(p, &mut insns, &linked, main_len, text_base, &place_of);
        let second = layout::second_slots(&p.insns);
        for &(slot, map) in &p.map_relocs {
            let ok = p.insns.get(slot).is_some_and(|i| i.is_ld_imm64()) && !second[slot] && map < maps;
            if ok {
                let (place, slot) = place_of(slot);
                self.relocs.push(PlacedReloc {
                    place,
                    slot,
                    target: RelocTarget::Map(map),
                    r_type: R_BPF_64_64,
                });
            }
        }
        if !p.kfunc_relocs.is_empty() {
            let calls = p
                .kfunc_relocs
                .iter()
                .filter(|(s, _)| *s < p.insns.len())
                .map(|(s, n)| (linked(*s), n.clone()));
            self.kfuncs.push((p.name.clone(), calls.collect()));
        }
        for (k, &f) in order.iter().enumerate() {
            let (start, end) = ranges[f];
            let (place, slot) = place_of(start);
            // Ranges start at call targets only, so a listed function that nothing calls (which
            // `validate` refuses) matches none and its code stays where it is.
            let sub = p.subfunctions.iter().find(|s| k > 0 && s.start == start);
            let name = match sub {
                _ if k == 0 => p.name.clone(),
                Some(s) => s.name.clone(),
                None => format!("{}__sub{k}", sanitize_identifier(&p.name)),
            };
            self.funcs.push(PlacedFunc {
                program: index,
                name,
                place,
                slot,
                start,
                end,
                is_main: k == 0,
                global: sub.map(|s| s.params.clone()),
            });
        }
        self.groups[g].1.extend_from_slice(&insns[..main_len]);
        self.text.extend_from_slice(&insns[main_len..]);
    }

    /// Rewrites local calls and function addresses the way clang emits calls to static
    /// functions: relative to the start of `.text`, with a relocation against its section
    /// symbol (libbpf's `sub_insn_idx = sym_off / 8 + imm + 1`; for `ld_imm64`, imm in bytes).
    fn relocate_local_refs(
        &mut self,
        p: &ProgramCode,
        insns: &mut [Insn],
        linked: &dyn Fn(usize) -> usize,
        main_len: usize,
        text_base: usize,
        place_of: &dyn Fn(usize) -> (Place, usize),
    ) {
        let second = layout::second_slots(&p.insns);
        for (slot, target) in layout::local_references(&p.insns) {
            if !layout::valid_target(&p.insns, &second, target) {
                continue;
            }
            let text_slot = (text_base + linked(target as usize) - main_len) as i64;
            let insn = &mut insns[linked(slot)];
            let r_type = if is_local_call(insn) {
                insn.imm = (text_slot - 1) as i32;
                R_BPF_64_32
            } else if is_func_addr(insn) {
                insn.imm = (text_slot * 8) as i32;
                R_BPF_64_64
            } else {
                continue;
            };
            let (place, slot) = place_of(slot);
            self.relocs.push(PlacedReloc {
                place,
                slot,
                target: RelocTarget::TextSection,
                r_type,
            });
        }
    }
}

/// The link order of a program's functions (`ranges`, entry first), with subprograms that
/// nothing reaches kept after the others rather than dropped.
fn function_order(insns: &[Insn], ranges: &[(usize, usize)]) -> Vec<usize> {
    let second = layout::second_slots(insns);
    let func_of = |s: usize| ranges.partition_point(|r| r.0 <= s).saturating_sub(1);
    let mut callees = vec![Vec::new(); ranges.len()];
    for (slot, target) in layout::local_references(insns) {
        if layout::valid_target(insns, &second, target) {
            callees[func_of(slot)].push(func_of(target as usize));
        }
    }
    let mut order = layout::link_order(0, &callees);
    let unreached: Vec<usize> = (1..ranges.len()).filter(|f| !order.contains(f)).collect();
    order.extend(unreached);
    order
}

// ---- BTF --------------------------------------------------------------------------------------

/// The BTF FUNC of every placed function, and the map layout in `.maps`.
struct BtfPlan {
    builder: BtfBuilder,
    func_types: Vec<TypeId>,
    /// `(offset, size)` of each map's definition in `.maps`.
    map_slots: Vec<(u32, u32)>,
    maps_size: u32,
}

fn build_btf(obj: &Object, plan: &Plan) -> BtfPlan {
    let mut b = BtfBuilder::new();
    let mut protos = Protos::default();
    let mut func_types = Vec::with_capacity(plan.funcs.len());
    for f in &plan.funcs {
        let name = sanitize_identifier(&f.name);
        let progtype = obj
            .programs
            .get(f.program)
            .and_then(|p| ProgType::from_section(&p.section));
        let ty = if f.is_main {
            let proto = protos.main(&mut b, progtype);
            b.btf.func(&name, proto, FUNC_GLOBAL)
        } else if let Some(params) = &f.global {
            let proto = protos.global(&mut b, progtype, params);
            b.btf.func(&name, proto, FUNC_GLOBAL)
        } else {
            let proto = protos.static_proto(&mut b);
            b.btf.func(&name, proto, FUNC_STATIC)
        };
        func_types.push(ty);
    }
    let (map_slots, maps_size) = build_map_btf(&mut b, &obj.maps);
    BtfPlan {
        builder: b,
        func_types,
        map_slots,
        maps_size,
    }
}

/// What a global function's prototype depends on: the context type and the parameters.
type GlobalKey = (Option<ProgType>, Vec<ParamType>);

/// The FUNC_PROTOs of an object, each built once.
#[derive(Default)]
struct Protos {
    /// `struct <ctx> *` by program type (`void *` for an unknown one).
    ctx_ptrs: Vec<(Option<ProgType>, TypeId)>,
    mains: Vec<(Option<ProgType>, TypeId)>,
    globals: Vec<(GlobalKey, TypeId)>,
    static_proto: Option<TypeId>,
    /// `unsigned long long` and a pointer to it.
    u64_and_ptr: Option<(TypeId, TypeId)>,
}

impl Protos {
    /// `int f(struct <ctx> *ctx)`: what the kernel expects of a program's entry.
    fn main(&mut self, b: &mut BtfBuilder, progtype: Option<ProgType>) -> TypeId {
        if let Some(&(_, id)) = self.mains.iter().find(|(t, _)| *t == progtype) {
            return id;
        }
        let ctx = self.ctx_ptr(b, progtype);
        let id = b.btf.func_proto(b.int_type(), &[("ctx", ctx)]);
        self.mains.push((progtype, id));
        id
    }

    /// `int f(void)`: static subprograms are verified in their caller's context, for which
    /// the kernel does not look at the prototype.
    fn static_proto(&mut self, b: &mut BtfBuilder) -> TypeId {
        *self
            .static_proto
            .get_or_insert_with(|| b.btf.func_proto(b.int_type(), &[]))
    }

    /// `int f(a0, ...)` of a global function: the verifier checks it alone, assuming only what
    /// this prototype says of r1-r5 (context, scalar, or maybe-null pointer to 8 bytes).
    /// Parameters are named `a0`, `a1`...: the kernel refuses a FUNC with unnamed parameters.
    fn global(&mut self, b: &mut BtfBuilder, progtype: Option<ProgType>, params: &[ParamType]) -> TypeId {
        let key = (progtype, params.to_vec());
        if let Some(&(_, id)) = self.globals.iter().find(|(k, _)| *k == key) {
            return id;
        }
        let types: Vec<TypeId> = params
            .iter()
            .map(|p| match p {
                ParamType::Ctx => self.ctx_ptr(b, progtype),
                ParamType::Scalar => self.u64_and_ptr(b).0,
                ParamType::ScalarPtr => self.u64_and_ptr(b).1,
            })
            .collect();
        let names: Vec<String> = (0..params.len()).map(|i| format!("a{i}")).collect();
        let named: Vec<(&str, TypeId)> = names.iter().map(|n| n.as_str()).zip(types).collect();
        let id = b.btf.func_proto(b.int_type(), &named);
        self.globals.push((key, id));
        id
    }

    fn u64_and_ptr(&mut self, b: &mut BtfBuilder) -> (TypeId, TypeId) {
        *self.u64_and_ptr.get_or_insert_with(|| {
            let u64_ = b.btf.int("unsigned long long", 8, 0);
            (u64_, b.btf.ptr(u64_))
        })
    }

    fn ctx_ptr(&mut self, b: &mut BtfBuilder, progtype: Option<ProgType>) -> TypeId {
        if let Some(&(_, id)) = self.ctx_ptrs.iter().find(|(t, _)| *t == progtype) {
            return id;
        }
        let ctx = progtype.map_or(0, |p| ctx_struct(b, p));
        let id = b.btf.ptr(ctx);
        self.ctx_ptrs.push((progtype, id));
        id
    }
}

/// The context STRUCT of a program type. The verifier recognises a context argument of a
/// global function by the struct's name alone (kernel/bpf/btf.c `btf_is_prog_ctx_type`: a
/// pointer to a STRUCT or UNION, after modifiers, named like the program type's context; a
/// forward declaration does not count, size and members are not compared). So the members are
/// the ones luabpf knows, at their kernel offsets, and the size is the kernel's, which bpftool
/// then prints faithfully: `xdp_md` whole, `__sk_buff` in part, `bpf_nf_ctx` with its two
/// pointers to forward-declared kernel structs.
fn ctx_struct(b: &mut BtfBuilder, progtype: ProgType) -> TypeId {
    let (size, fields) = match progtype {
        ProgType::Xdp => (24, crate::progtypes::XDP_MD),
        ProgType::Tc => (192, crate::progtypes::SK_BUFF),
        ProgType::Netfilter => {
            let state = b.btf.fwd_struct("nf_hook_state");
            let state = b.btf.add(Type::Const { target: state });
            let state = b.btf.ptr(state);
            let skb = b.btf.fwd_struct("sk_buff");
            let skb = b.btf.ptr(skb);
            let members = [("state", state, 0), ("skb", skb, 64)];
            return b.btf.structure(progtype.ctx_struct(), 16, &members);
        }
    };
    let u32_ = b.u32_type();
    let members: Vec<(&str, TypeId, u32)> = fields.iter().map(|f| (f.name, u32_, f.offset as u32 * 8)).collect();
    b.btf.structure(progtype.ctx_struct(), size, &members)
}

fn build_map_btf(b: &mut BtfBuilder, maps: &[MapSpec]) -> (Vec<(u32, u32)>, u32) {
    let mut slots = Vec::with_capacity(maps.len());
    let mut vars = Vec::with_capacity(maps.len());
    let mut offset = 0u32;
    for m in maps {
        let (def, size) = b.map_def(m);
        let var = b.btf.var(&m.name, def, VAR_GLOBAL_ALLOCATED);
        vars.push(VarSecInfo { ty: var, offset, size });
        slots.push((offset, size));
        offset += size;
    }
    if !maps.is_empty() {
        b.btf.datasec(".maps", offset, vars);
    }
    (slots, offset)
}

/// Source lines by file, for line_info's line text.
struct Sources<'a> {
    files: Vec<(&'a str, Vec<&'a str>)>,
}

impl<'a> Sources<'a> {
    fn new(obj: &'a Object) -> Sources<'a> {
        Sources {
            files: obj
                .sources
                .iter()
                .map(|s| (s.name.as_str(), s.text.lines().collect()))
                .collect(),
        }
    }

    fn name(&self, file: u32) -> &'a str {
        self.files.get(file as usize).map_or("", |f| f.0)
    }

    fn line(&self, file: u32, line: u32) -> &'a str {
        let lines = self
            .files
            .get(file as usize)
            .map(|f| f.1.as_slice())
            .unwrap_or_default();
        (line as usize)
            .checked_sub(1)
            .and_then(|i| lines.get(i))
            .copied()
            .unwrap_or("")
    }
}

fn section_name(plan: &Plan, place: Place) -> &str {
    match place {
        Place::Group(g) => &plan.groups[g].0,
        Place::Text => ".text",
    }
}

/// Adds records to the ExtSection of `name`, creating it on first use.
fn push_ext<T>(secs: &mut Vec<ExtSection<T>>, name_off: u32, records: impl IntoIterator<Item = T>) {
    match secs.iter_mut().find(|s| s.sec_name_off == name_off) {
        Some(s) => s.records.extend(records),
        None => secs.push(ExtSection {
            sec_name_off: name_off,
            records: records.into_iter().collect(),
        }),
    }
}

fn build_ext(obj: &Object, plan: &Plan, btf: &mut BtfPlan) -> BtfExt {
    let mut ext = BtfExt::default();
    let sources = Sources::new(obj);
    // line_info even without locations (line 0 at each function start): libbpf warns about a
    // .BTF.ext lacking line info for a program and drops it for the whole object.
    for (f, &ty) in plan.funcs.iter().zip(&btf.func_types) {
        let name_off = btf.builder.btf.add_string(section_name(plan, f.place));
        let func = FuncInfo {
            insn_off: (f.slot * 8) as u32,
            type_id: ty,
        };
        push_ext(&mut ext.func_info, name_off, [func]);
        if let Some(p) = obj.programs.get(f.program) {
            let lines = line_records(p, f, &sources, &mut btf.builder);
            push_ext(&mut ext.line_info, name_off, lines);
        }
    }
    ext
}

/// line_info of one function: an entry at its first instruction (the kernel requires one per
/// function) and wherever the (file, line) changes; unknown locations continue the previous.
fn line_records(p: &ProgramCode, f: &PlacedFunc, sources: &Sources<'_>, b: &mut BtfBuilder) -> Vec<LineInfo> {
    let second = layout::second_slots(&p.insns);
    let loc = |s: usize| p.locs.get(s).copied().unwrap_or_default();
    let slots = || (f.start..f.end).filter(|&s| !second[s]);
    let first_known = slots().map(loc).find(|l| l.line > 0).unwrap_or_default();
    let mut out = Vec::new();
    let mut last: Option<(u32, u32)> = None;
    for s in slots() {
        let here = match loc(s) {
            l if l.line > 0 => l,
            _ if s == f.start => first_known,
            _ => continue,
        };
        if last == Some((here.file, here.line)) {
            continue;
        }
        last = Some((here.file, here.line));
        out.push(line_info(f.slot + s - f.start, here, sources, b));
    }
    out
}

fn line_info(section_slot: usize, loc: SourceLoc, sources: &Sources<'_>, b: &mut BtfBuilder) -> LineInfo {
    LineInfo {
        insn_off: (section_slot * 8) as u32,
        file_name_off: b.btf.add_string(sources.name(loc.file)),
        line_off: b.btf.add_string(sources.line(loc.file, loc.line)),
        line_col: LineInfo::pack(loc.line, loc.col),
    }
}

// ---- one program for BPF_PROG_LOAD ------------------------------------------------------------

/// What `BPF_PROG_LOAD` takes besides the code, for a loader that loads a program itself (aya
/// cannot load netfilter programs): the BTF to load with `BPF_BTF_LOAD`, and `func_info` and
/// `line_info` whose `insn_off` is an instruction index in `ProgramCode::insns` (not a byte
/// offset in an ELF section, as in `.BTF.ext`), sorted as the kernel requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramBtf {
    pub btf: Vec<u8>,
    pub func_info: Vec<FuncInfo>,
    pub line_info: Vec<LineInfo>,
}

/// The BTF of program `index` of `obj` (its functions' prototypes, as in the object file: the
/// entry, global functions that the kernel then verifies on their own, static ones), with
/// the line info that names the Lua lines. `None` if there is no such program.
pub fn program_btf(obj: &Object, index: usize) -> Option<ProgramBtf> {
    let p = obj.programs.get(index)?;
    let single = Object {
        programs: vec![p.clone()],
        maps: obj.maps.clone(),
        sources: obj.sources.clone(),
        license: obj.license.clone(),
    };
    let mut plan = Plan::new(&single);
    // Offsets in the program as handed to the kernel, whatever ELF section a function would go to.
    for f in &mut plan.funcs {
        f.slot = f.start;
    }
    let mut btf = build_btf(&single, &plan);
    let sources = Sources::new(&single);
    let mut func_info = Vec::new();
    let mut line_info = Vec::new();
    for (f, &type_id) in plan.funcs.iter().zip(&btf.func_types) {
        func_info.push(FuncInfo {
            insn_off: f.start as u32,
            type_id,
        });
        for mut l in line_records(p, f, &sources, &mut btf.builder) {
            l.insn_off /= 8;
            line_info.push(l);
        }
    }
    func_info.sort_by_key(|f| f.insn_off);
    line_info.sort_by_key(|l| l.insn_off);
    Some(ProgramBtf {
        btf: btf.builder.btf.to_bytes(),
        func_info,
        line_info,
    })
}

// ---- the ELF container ------------------------------------------------------------------------

fn build(obj: &Object) -> Result<Vec<u8>, WriteError> {
    let plan = Plan::new(obj);
    let mut btf = build_btf(obj, &plan);
    let ext = build_ext(obj, &plan, &mut btf);

    let mut elf = ElfWriter::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let group_ids: Vec<SectionId> = plan
        .groups
        .iter()
        .map(|(name, code)| code_section(&mut elf, name, code))
        .collect();
    let text_id = (!plan.text.is_empty()).then(|| code_section(&mut elf, ".text", &plan.text));
    let section_of = |place: Place| match place {
        Place::Group(g) => Some(group_ids[g]),
        Place::Text => text_id,
    };
    for f in &plan.funcs {
        if let Some(section) = section_of(f.place) {
            add_function_symbol(&mut elf, f, section);
        }
    }
    let map_symbols = add_maps(&mut elf, &obj.maps, &btf);
    add_license(&mut elf, &obj.license);
    add_data(&mut elf, ".BTF", btf.builder.btf.to_bytes(), 4);
    add_data(&mut elf, ".BTF.ext", ext.to_bytes(), 4);
    if let Some(init) = encode_init(&obj.maps) {
        add_data(&mut elf, INIT_SECTION, init, 4);
    }
    if let Some(kfuncs) = encode_kfuncs(&plan.kfuncs) {
        add_data(&mut elf, KFUNCS_SECTION, kfuncs, 4);
    }
    for r in &plan.relocs {
        let symbol = match r.target {
            RelocTarget::Map(m) => map_symbols.get(m).copied(),
            RelocTarget::TextSection => text_id.map(|t| elf.section_symbol(t)),
        };
        if let (Some(section), Some(symbol)) = (section_of(r.place), symbol) {
            // Addend 0: BPF uses REL, so a non-zero addend would be written into the
            // instruction's immediate.
            let reloc = Relocation {
                offset: (r.slot * 8) as u64,
                symbol,
                addend: 0,
                flags: RelocationFlags::Elf { r_type: r.r_type },
            };
            elf.add_relocation(section, reloc)
                .map_err(|e| WriteError::Elf(e.to_string()))?;
        }
    }
    elf.write().map_err(|e| WriteError::Elf(e.to_string()))
}

fn code_section(elf: &mut ElfWriter<'_>, name: &str, code: &[Insn]) -> SectionId {
    let id = elf.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Text);
    elf.set_section_data(id, encode_all(code), 8);
    id
}

fn add_function_symbol(elf: &mut ElfWriter<'_>, f: &PlacedFunc, section: SectionId) {
    elf.add_symbol(Symbol {
        name: f.name.as_bytes().to_vec(),
        value: (f.slot * 8) as u64,
        size: ((f.end - f.start) * 8) as u64,
        kind: SymbolKind::Text,
        // Dynamic = GLOBAL with default visibility (Linkage would make it STV_HIDDEN, and
        // libbpf turns the BTF of a hidden global function static: `mark_btf_static`).
        // Static subprograms are local, like clang's static functions; global functions are
        // GLOBAL in `.text`, like clang's non-static ones.
        scope: if f.is_main || f.global.is_some() {
            SymbolScope::Dynamic
        } else {
            SymbolScope::Compilation
        },
        weak: false,
        section: SymbolSection::Section(section),
        flags: SymbolFlags::None,
    });
}

fn data_symbol(elf: &mut ElfWriter<'_>, name: &str, section: SectionId, value: u64, size: u64) -> SymbolId {
    elf.add_symbol(Symbol {
        name: name.as_bytes().to_vec(),
        value,
        size,
        kind: SymbolKind::Data,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Section(section),
        flags: SymbolFlags::None,
    })
}

fn add_maps(elf: &mut ElfWriter<'_>, maps: &[MapSpec], btf: &BtfPlan) -> Vec<SymbolId> {
    if maps.is_empty() {
        return Vec::new();
    }
    let id = elf.add_section(Vec::new(), b".maps".to_vec(), SectionKind::Data);
    elf.set_section_data(id, vec![0u8; btf.maps_size as usize], 8);
    maps.iter()
        .zip(&btf.map_slots)
        .map(|(m, &(offset, size))| data_symbol(elf, &m.name, id, offset as u64, size as u64))
        .collect()
}

fn add_license(elf: &mut ElfWriter<'_>, license: &str) {
    let mut bytes: Vec<u8> = license.bytes().filter(|&b| b != 0).collect();
    bytes.push(0);
    let size = bytes.len() as u64;
    let id = elf.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
    elf.set_section_data(id, bytes, 1);
    data_symbol(elf, "_license", id, 0, size);
}

fn add_data(elf: &mut ElfWriter<'_>, name: &str, data: Vec<u8>, align: u64) {
    let id = elf.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Other);
    elf.set_section_data(id, data, align);
}
