//! The object file without a kernel: what `elf::write` emits parses with the `object` crate,
//! with aya's parser and linker, and with `elf::read`, which gives back the same `Object`.

mod common;

use std::collections::HashSet;

use object::{Object as _, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SymbolKind};
use runtime_bpf::disasm::disassemble_program;
use runtime_bpf::elf::{self, ReadError, WriteError};
use runtime_bpf::isa::*;
use runtime_bpf::object::*;

/// `read(write(o))` gives `o` back, except for source texts (only referenced lines travel).
fn assert_round_trip(obj: &Object) -> Object {
    let bytes = elf::try_write(obj).expect("valid object");
    let back = elf::read(&bytes).expect("readable");
    assert_eq!(back.programs, obj.programs);
    assert_eq!(back.maps, obj.maps);
    assert_eq!(back.license, obj.license);
    assert_eq!(back.sources.iter().map(|s| &s.name).collect::<Vec<_>>(), ["filter.lua"]);
    back
}

#[test]
fn trivial_xdp_program() {
    let obj = common::trivial_xdp();
    let bytes = elf::write(&obj);
    let file = object::File::parse(&*bytes).unwrap();
    assert_eq!(file.architecture(), object::Architecture::Bpf);
    assert_eq!(file.kind(), object::ObjectKind::Relocatable);
    let xdp = file.section_by_name("xdp").unwrap();
    assert_eq!(xdp.data().unwrap(), encode_all(&obj.programs[0].insns));
    let sym = file.symbols().find(|s| s.name() == Ok("pass")).unwrap();
    assert_eq!((sym.kind(), sym.is_global(), sym.size()), (SymbolKind::Text, true, 16));
    assert_eq!(file.section_by_name("license").unwrap().data().unwrap(), b"GPL\0");
    assert!(file.section_by_name(".maps").is_none());
    assert!(file.section_by_name(".text").is_none());
    assert_round_trip(&obj);
}

#[test]
fn map_reference() {
    let obj = common::xdp_with_map();
    let bytes = elf::try_write(&obj).unwrap();
    let file = object::read::elf::ElfFile64::<object::Endianness>::parse(&*bytes).unwrap();

    let map = file.symbols().find(|s| s.name() == Ok("blocked")).unwrap();
    assert_eq!(
        (map.kind(), map.is_global(), map.size(), map.address()),
        (SymbolKind::Data, true, 32, 0)
    );
    // STV_DEFAULT: loaders refuse hidden map symbols as "unsupported map linkage static".
    let raw = map.elf_symbol();
    assert_eq!(raw.st_other & 3, object::elf::STV_DEFAULT);
    let maps_section = file.section_by_name(".maps").unwrap();
    assert_eq!(maps_section.size(), 32);
    assert_eq!(map.section_index(), Some(maps_section.index()));

    let xdp = file.section_by_name("xdp").unwrap();
    let relocs: Vec<_> = xdp.relocations().collect();
    assert_eq!(relocs.len(), 1);
    let (offset, r) = &relocs[0];
    assert_eq!(*offset, 0);
    assert_eq!(
        r.flags(),
        RelocationFlags::Elf {
            r_type: elf::R_BPF_64_64
        }
    );
    assert_eq!(r.target(), RelocationTarget::Symbol(map.index()));
    assert_eq!(r.addend(), 0);
    // The instruction itself is untouched: the loader writes the map fd.
    assert_eq!(&xdp.data().unwrap()[..16], &encode_all(&Insn::ld_map_fd(R1)));

    let back = assert_round_trip(&obj);
    assert_eq!(back.maps[0].init, obj.maps[0].init);
    let listing = disassemble_program(&back.programs[0], &back.maps);
    assert_eq!(listing, ["r1 = map[blocked] ll", "r0 = 2", "exit"]);
}

#[test]
fn btf_describes_maps_and_functions() {
    use runtime_bpf::btf::{Btf, BtfExt, Type};
    let bytes = elf::write(&common::xdp_with_map());
    let file = object::File::parse(&*bytes).unwrap();
    let btf = Btf::parse(file.section_by_name(".BTF").unwrap().data().unwrap()).unwrap();
    let datasec = btf.find(runtime_bpf::btf::KIND_DATASEC, ".maps").unwrap();
    let Some(Type::Datasec { size: 32, vars, .. }) = btf.get(datasec) else {
        panic!()
    };
    let Some(Type::Var { ty, linkage: 1, .. }) = btf.get(vars[0].ty) else {
        panic!()
    };
    let Some(Type::Struct { members, size: 32, .. }) = btf.get(*ty) else {
        panic!()
    };
    let names: Vec<_> = members.iter().map(|m| btf.string(m.name).unwrap()).collect();
    assert_eq!(names, ["type", "max_entries", "key", "value"]);
    let func = btf.find(runtime_bpf::btf::KIND_FUNC, "sni_filter").unwrap();
    assert!(matches!(btf.get(func), Some(Type::Func { linkage: 1, .. })));

    let ext = BtfExt::parse(file.section_by_name(".BTF.ext").unwrap().data().unwrap()).unwrap();
    assert_eq!(ext.func_info[0].records[0].type_id, func);
    let lines = &ext.line_info[0].records;
    // ld_imm64 (line 1), r0 = 2 (line 2), exit (line 3): offsets in bytes.
    assert_eq!(
        lines.iter().map(|l| (l.insn_off, l.line())).collect::<Vec<_>>(),
        [(0, 1), (16, 2), (24, 3)]
    );
    assert_eq!(btf.string(lines[1].line_off), Some("  line_2()"));
    assert_eq!(btf.string(lines[1].file_name_off), Some("filter.lua"));
}

#[test]
fn subprograms_go_to_text_and_come_back() {
    let obj = common::xdp_with_subprograms();
    let bytes = elf::try_write(&obj).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let xdp = file.section_by_name("xdp").unwrap();
    let text = file.section_by_name(".text").unwrap();
    assert_eq!(xdp.size(), 8 * 8, "entry code only");
    assert_eq!(text.size(), 10 * 8, "subprogram and callback");
    let text_syms: Vec<_> = file
        .symbols()
        .filter(|s| s.section_index() == Some(text.index()) && s.kind() == SymbolKind::Text)
        .map(|s| (s.name().unwrap().to_string(), s.address(), s.size(), s.is_global()))
        .collect();
    assert_eq!(
        text_syms,
        [
            ("looper__sub1".to_string(), 0, 16, false),
            ("looper__sub2".to_string(), 16, 64, false)
        ]
    );
    let types: Vec<_> = xdp.relocations().map(|(o, r)| (o, r.flags())).collect();
    assert_eq!(
        types,
        [
            (
                8,
                RelocationFlags::Elf {
                    r_type: elf::R_BPF_64_64
                }
            ), // callback address
            (
                48,
                RelocationFlags::Elf {
                    r_type: elf::R_BPF_64_32
                }
            ), // call
        ]
    );
    assert_eq!(text.relocations().count(), 1, "the map load in the subprogram");
    assert_round_trip(&obj);
}

/// Subprograms out of link order come back in link order: the same code, renumbered as
/// libbpf and aya number it.
#[test]
fn subprograms_come_back_in_link_order() {
    let ordered = common::xdp_with_subprograms();
    let back = elf::read(&elf::try_write(&common::xdp_with_subprograms_unordered()).unwrap()).unwrap();
    assert_eq!(back.programs[0].insns, ordered.programs[0].insns);
    assert_eq!(back.programs[0].map_relocs, ordered.programs[0].map_relocs);
}

/// aya links `.text` functions into the program the way `read` does: same instructions.
#[test]
fn aya_parses_and_links_the_same_program() {
    let obj = common::xdp_with_subprograms();
    let bytes = elf::write(&common::xdp_with_subprograms_unordered());
    let mut aya = aya_obj::Object::parse(&bytes).expect("aya parses");
    assert!(aya.maps.contains_key("counts"));
    let file = object::File::parse(&*bytes).unwrap();
    let text: HashSet<usize> = file.section_by_name(".text").map(|s| s.index().0).into_iter().collect();
    aya.relocate_calls(&text).expect("aya links calls");
    let (_, program) = aya.programs.iter().find(|(name, _)| *name == "looper").unwrap();
    let function = &aya.functions[&program.function_key()];
    let linked: Vec<Insn> = function
        .instructions
        .iter()
        .map(|i| Insn::new(i.code, i.dst_reg(), i.src_reg(), i.off, i.imm))
        .collect();
    assert_eq!(linked, obj.programs[0].insns);

    let aya = aya_obj::Object::parse(&elf::write(&common::xdp_with_map())).unwrap();
    assert!(aya.programs.contains_key("sni_filter"));
    assert!(aya.maps.contains_key("blocked"));
    let aya = aya_obj::Object::parse(&elf::write(&common::several_programs())).unwrap();
    let mut names: Vec<&str> = aya.programs.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["first", "second", "shaper"]);
}

#[test]
fn several_programs_and_sections() {
    let obj = common::several_programs();
    let bytes = elf::try_write(&obj).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    assert_eq!(file.section_by_name("xdp").unwrap().size(), (2 + 4) * 8);
    let second = file.symbols().find(|s| s.name() == Ok("second")).unwrap();
    assert_eq!((second.address(), second.size()), (16, 32));
    let back = assert_round_trip(&obj);
    assert_eq!(
        back.programs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["first", "shaper", "second"]
    );
}

#[test]
fn kfunc_calls_survive() {
    let obj = common::netfilter_with_kfunc();
    let back = assert_round_trip(&obj);
    assert_eq!(back.programs[0].kfunc_relocs, [(0, "bpf_dynptr_from_skb".to_string())]);
    let listing = disassemble_program(&back.programs[0], &back.maps);
    assert_eq!(listing[0], "call bpf_dynptr_from_skb");
}

#[test]
fn records_and_flags_round_trip() {
    let mut obj = common::xdp_with_map();
    obj.maps[0].key = Format::record(vec![
        (
            "saddr".into(),
            Format::Int {
                bytes: 4,
                signed: false,
            },
        ),
        (
            "dport".into(),
            Format::Int {
                bytes: 2,
                signed: false,
            },
        ),
    ]);
    obj.maps[0].kind = MapKind::LpmTrie;
    obj.maps[0].flags = 1;
    obj.maps[0].init = vec![(vec![1, 2, 3, 4, 5, 6, 0, 0], vec![0; 8])];
    assert_round_trip(&obj);
}

#[test]
fn programs_without_locations() {
    let mut obj = common::trivial_xdp();
    obj.programs[0].locs = vec![SourceLoc::default(); 2];
    obj.sources.clear();
    let back = elf::read(&elf::try_write(&obj).unwrap()).unwrap();
    assert_eq!(back.programs, obj.programs);
    assert!(back.sources.is_empty());
}

#[test]
fn validate_names_the_problem() {
    let mut obj = common::xdp_with_map();
    obj.programs[0].name = "sni-filter".into();
    assert!(matches!(elf::validate(&obj), Err(WriteError::InvalidName { .. })));

    let mut obj = common::xdp_with_map();
    obj.programs[0].map_relocs = vec![(1, 0)]; // second slot of the ld_imm64
    assert!(matches!(elf::validate(&obj), Err(WriteError::BadMapReloc { .. })));

    let mut obj = common::xdp_with_map();
    obj.maps[0].init[0].0.pop();
    assert!(matches!(elf::validate(&obj), Err(WriteError::BadInitEntry { .. })));
    assert!(!elf::write(&obj).is_empty(), "write still writes");

    let mut obj = common::trivial_xdp();
    obj.programs[0].insns.insert(0, Insn::call_local(5));
    assert!(matches!(elf::validate(&obj), Err(WriteError::BadCallTarget { .. })));

    let mut obj = common::trivial_xdp();
    obj.programs[0].section = ".text".into();
    assert!(matches!(elf::validate(&obj), Err(WriteError::BadSection { .. })));

    let mut obj = common::several_programs();
    obj.maps[1].name = "first".into();
    assert!(matches!(elf::validate(&obj), Err(WriteError::DuplicateName(_))));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(matches!(elf::read(b""), Err(ReadError::Elf(_))));
    assert!(matches!(elf::read(b"\x7fELF"), Err(ReadError::Elf(_))));
    assert!(elf::read(&[0xff; 4096]).is_err());
    for obj in [
        common::xdp_with_map(),
        common::xdp_with_subprograms(),
        common::several_programs(),
        common::xdp_with_global_function(7, true, true),
    ] {
        let bytes = elf::write(&obj);
        for len in 0..bytes.len() {
            assert!(elf::read(&bytes[..len]).is_err(), "a {len}-byte prefix was accepted");
        }
        // Corrupt bytes and words everywhere: any result is fine as long as nothing panics.
        // LUABPF_FUZZ_ITERS=200000 (with --release) for a longer run.
        let iterations = std::env::var("LUABPF_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000);
        let mut state = 0x2545f4914f6cdd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..iterations {
            let mut bad = bytes.clone();
            for _ in 0..1 + next() % 3 {
                let r = next();
                let at = (r % bad.len() as u64) as usize & !3;
                let word: u32 = match r >> 60 {
                    0..=5 => bad[at] as u32 ^ ((r >> 32) as u32 | 1),
                    6..=9 => (r >> 32) as u32,
                    10..=12 => u32::MAX,
                    _ => (r >> 32) as u32 % 64,
                };
                let end = (at + 4).min(bad.len());
                bad[at..end].copy_from_slice(&word.to_le_bytes()[..end - at]);
            }
            let _ = elf::read_detailed(&bad);
        }
    }
}

#[test]
fn a_non_bpf_elf_is_refused() {
    let mut w = object::write::Object::new(
        object::BinaryFormat::Elf,
        object::Architecture::X86_64,
        object::Endianness::Little,
    );
    w.add_section(vec![], b".text".to_vec(), object::SectionKind::Text);
    let bytes = w.write().unwrap();
    assert!(matches!(elf::read(&bytes), Err(ReadError::NotBpf(_))));
}

/// A separately verified function: a GLOBAL STT_FUNC symbol of default visibility in `.text`,
/// a BTF FUNC of linkage global whose prototype describes its parameters, func_info for it;
/// `read` gives the `SubFunction` back, and aya sees it as a function, not a program.
#[test]
fn global_functions_go_to_text_with_their_prototype() {
    use runtime_bpf::btf::{Btf, BtfExt, Type, FUNC_GLOBAL, KIND_FUNC};
    let obj = common::xdp_with_global_function(7, true, true);
    let bytes = elf::try_write(&obj).unwrap();
    let file = object::read::elf::ElfFile64::<object::Endianness>::parse(&*bytes).unwrap();
    let text = file.section_by_name(".text").unwrap();
    assert_eq!(text.size(), 11 * 8);
    let f = file.symbols().find(|s| s.name() == Ok("f")).unwrap();
    assert_eq!(
        (f.kind(), f.is_global(), f.address(), f.size()),
        (SymbolKind::Text, true, 0, 11 * 8)
    );
    assert_eq!(f.section_index(), Some(text.index()));
    assert_eq!(f.elf_symbol().st_other & 3, object::elf::STV_DEFAULT);
    // The call is relocated against `.text`, as for static functions.
    let xdp = file.section_by_name("xdp").unwrap();
    let relocs: Vec<_> = xdp.relocations().collect();
    assert_eq!(relocs.len(), 1);
    assert_eq!(relocs[0].0, 4 * 8);

    let btf = Btf::parse(file.section_by_name(".BTF").unwrap().data().unwrap()).unwrap();
    let func = btf.find(KIND_FUNC, "f").unwrap();
    let Some(&Type::Func {
        proto,
        linkage: FUNC_GLOBAL,
        ..
    }) = btf.get(func)
    else {
        panic!("f is not a global FUNC")
    };
    let Some(Type::FuncProto { ret, params }) = btf.get(proto) else {
        panic!()
    };
    assert_eq!(btf.name_of(*ret), Some("int"));
    let names: Vec<_> = params.iter().map(|p| btf.string(p.name).unwrap()).collect();
    assert_eq!(names, ["a0", "a1", "a2"]);
    let pointee = |id| match btf.get(id) {
        Some(Type::Ptr { target }) => *target,
        other => panic!("{other:?} is not a pointer"),
    };
    assert!(matches!(
        btf.get(pointee(params[0].ty)),
        Some(Type::Struct { size: 24, .. })
    ));
    assert_eq!(btf.name_of(pointee(params[0].ty)), Some("xdp_md"));
    assert!(matches!(
        btf.get(params[1].ty),
        Some(Type::Int {
            size: 8,
            encoding: 0,
            ..
        })
    ));
    assert_eq!(btf.name_of(params[1].ty), Some("unsigned long long"));
    assert_eq!(pointee(params[2].ty), params[1].ty);

    let ext = BtfExt::parse(file.section_by_name(".BTF.ext").unwrap().data().unwrap()).unwrap();
    let text_funcs: Vec<_> = ext
        .func_info
        .iter()
        .filter(|s| btf.string(s.sec_name_off) == Some(".text"))
        .flat_map(|s| s.records.iter().map(|r| (r.insn_off, r.type_id)))
        .collect();
    assert_eq!(text_funcs, [(0, func)]);

    let back = assert_round_trip(&obj);
    assert_eq!(back.programs[0].subfunctions, obj.programs[0].subfunctions);

    // aya: one program, `f` a function of `.text` linked into it.
    let mut aya = aya_obj::Object::parse(&bytes).expect("aya parses");
    assert_eq!(aya.programs.keys().collect::<Vec<_>>(), ["entry"]);
    let text_index: HashSet<usize> = [text.index().0].into();
    aya.relocate_calls(&text_index).expect("aya links the call");
    let program = &aya.programs["entry"];
    let linked = &aya.functions[&program.function_key()];
    assert_eq!(linked.instructions.len(), obj.programs[0].insns.len());
    assert_eq!(linked.func_info.func_info.len(), 2, "func_info for entry and f");
}

/// Static subprograms and global functions in one program, each called once: only the
/// listed one is global, and each keeps its kind through `read`.
#[test]
fn static_and_global_functions_mix() {
    let mut obj = common::xdp_with_global_function(1, true, true);
    // Append a static helper `g` (r0 = 0; exit) that f calls before returning.
    let p = &mut obj.programs[0];
    let g = p.insns.len() + 1;
    let exit = p.insns.len() - 1;
    p.insns.insert(exit, Insn::call_local(0));
    p.insns[exit].imm = (g - exit - 1) as i32;
    p.insns.extend([Insn::mov64_imm(R0, 0), Insn::exit()]);
    p.locs = common::locs(&p.insns, 1);
    let bytes = elf::try_write(&obj).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let text_syms: Vec<_> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.section().index().is_some())
        .filter(|s| s.name().is_ok_and(|n| n != "entry"))
        .map(|s| (s.name().unwrap().to_string(), s.is_global()))
        .collect();
    assert_eq!(text_syms, [("entry__sub2".to_string(), false), ("f".to_string(), true)]);
    let back = assert_round_trip(&obj);
    assert_eq!(back.programs[0].subfunctions.len(), 1);
}

#[test]
fn validate_checks_global_functions() {
    let bad = |edit: &dyn Fn(&mut ProgramCode)| {
        let mut obj = common::xdp_with_global_function(7, true, true);
        edit(&mut obj.programs[0]);
        elf::validate(&obj)
    };
    assert!(bad(&|_| {}).is_ok());
    assert!(matches!(
        bad(&|p| p.subfunctions[0].start = 8),
        Err(WriteError::BadSubFunction { .. })
    ));
    assert!(matches!(
        bad(&|p| p.subfunctions[0].params = vec![ParamType::Scalar; 6]),
        Err(WriteError::BadSubFunction { .. })
    ));
    assert!(matches!(
        bad(&|p| p.subfunctions.push(p.subfunctions[0].clone())),
        Err(WriteError::BadSubFunction { .. })
    ));
    assert!(matches!(
        bad(&|p| p.subfunctions[0].name = "memcpy".into()),
        Err(WriteError::BadSubFunction { .. })
    ));
    assert!(matches!(
        bad(&|p| p.subfunctions[0].name = "f-1".into()),
        Err(WriteError::InvalidName { .. })
    ));
    assert!(matches!(
        bad(&|p| p.subfunctions[0].name = "entry".into()),
        Err(WriteError::DuplicateName(_))
    ));
    // A listed function that is not a call target is written as if it were not listed.
    let mut obj = common::xdp_with_global_function(7, true, true);
    obj.programs[0].subfunctions[0].start = 8;
    let back = elf::read(&elf::write(&obj)).unwrap();
    assert!(back.programs[0].subfunctions.is_empty());
    assert_eq!(back.programs[0].insns, obj.programs[0].insns);
}
