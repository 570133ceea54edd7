//! Loader tests against the running kernel (skipped loudly without bpf(); forced by
//! LUABPF_REQUIRE_KERNEL=1).

mod common;

use common::*;
use luabpf_loader::{load, require_kernel_or_skip, test_run, LoadError, MapError, TestRunError, UpdateMode};
use runtime_bpf::isa::*;
use runtime_bpf::object::MapKind;

const XDP_PASS: u32 = 2;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;

fn xdp_return(name: &str, verdict: i32) -> runtime_bpf::object::ProgramCode {
    program(name, "xdp", vec![Insn::mov64_imm(R0, verdict), Insn::exit()], vec![])
}

/// `v = map[key]; return v and *(u64*)v or 99` for a 4-byte key; map index 0.
fn lookup_program(name: &str, key: u32) -> runtime_bpf::object::ProgramCode {
    let [ld0, ld1] = Insn::ld_map_fd(R1);
    let insns = vec![
        Insn::store_imm(Size::W, R10, -4, key as i32),
        Insn::mov64_reg(R2, R10),
        Insn::alu64_imm(AluOp::Add, R2, -4),
        ld0,
        ld1,
        Insn::call_helper(BPF_FUNC_MAP_LOOKUP_ELEM),
        Insn::jmp_imm(JmpOp::Jeq, R0, 0, 2),
        Insn::load(Size::DW, R0, R0, 0),
        Insn::exit(),
        Insn::mov64_imm(R0, 99),
        Insn::exit(),
    ];
    program(name, "xdp", insns, vec![(3, 0)])
}

/// `counts[0] += 1` (atomically) on the current CPU's slot, then XDP_PASS; map index 0.
fn count_program(name: &str) -> runtime_bpf::object::ProgramCode {
    let [ld0, ld1] = Insn::ld_map_fd(R1);
    let insns = vec![
        Insn::store_imm(Size::W, R10, -4, 0),
        Insn::mov64_reg(R2, R10),
        Insn::alu64_imm(AluOp::Add, R2, -4),
        ld0,
        ld1,
        Insn::call_helper(BPF_FUNC_MAP_LOOKUP_ELEM),
        Insn::jmp_imm(JmpOp::Jeq, R0, 0, 2),
        Insn::mov64_imm(R1, 1),
        Insn::atomic_add(Size::DW, R0, 0, R1),
        Insn::mov64_imm(R0, XDP_PASS as i32),
        Insn::exit(),
    ];
    program(name, "xdp", insns, vec![(3, 0)])
}

#[test]
fn xdp_pass_program_loads_and_runs() {
    if !require_kernel_or_skip("xdp_pass_program_loads_and_runs") {
        return;
    }
    let bytes = write_object(&object(vec![xdp_return("pass", 2)], vec![]));
    let loaded = load(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.program_names(), vec!["pass"]);
    let summary = &loaded.programs()[0];
    assert_eq!(summary.kind, "xdp");
    assert!(summary.verified_insns.is_some_and(|n| n >= 2), "{summary:?}");
    let fd = loaded.program_fd("pass").expect("fd");
    let pkt = packet();
    let run = test_run(fd, &pkt, 1).expect("test run");
    assert_eq!(run.retval, XDP_PASS);
    assert_eq!(run.data_out, pkt, "an XDP_PASS program leaves the packet as it was");
    let run = test_run(fd, &pkt, 1000).expect("repeated test run");
    assert_eq!(run.retval, XDP_PASS);
    assert!(loaded.program_fd("nope").is_none());
}

#[test]
fn packet_writes_show_in_data_out() {
    if !require_kernel_or_skip("packet_writes_show_in_data_out") {
        return;
    }
    // r2 = data; r3 = data_end; if r2 + 1 > r3 goto out; *(u8*)r2 = 0xaa; out: return PASS
    let insns = vec![
        Insn::load(Size::W, R2, R1, 0),
        Insn::load(Size::W, R3, R1, 4),
        Insn::mov64_reg(R4, R2),
        Insn::alu64_imm(AluOp::Add, R4, 1),
        Insn::jmp_reg(JmpOp::Jgt, R4, R3, 1),
        Insn::store_imm(Size::B, R2, 0, 0xaa),
        Insn::mov64_imm(R0, 2),
        Insn::exit(),
    ];
    let bytes = write_object(&object(vec![program("mark", "xdp", insns, vec![])], vec![]));
    let loaded = load(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let pkt = packet();
    let run = test_run(loaded.program_fd("mark").expect("fd"), &pkt, 1).expect("run");
    assert_eq!(run.retval, XDP_PASS);
    assert_eq!(run.data_out.len(), pkt.len());
    assert_eq!(run.data_out[0], 0xaa);
    assert_eq!(run.data_out[1..], pkt[1..]);
}

#[test]
fn tc_classifier_loads_and_runs() {
    if !require_kernel_or_skip("tc_classifier_loads_and_runs") {
        return;
    }
    let tc = program(
        "tc_shot",
        "classifier",
        vec![Insn::mov64_imm(R0, 2), Insn::exit()],
        vec![],
    );
    let bytes = write_object(&object(vec![xdp_return("x", 1), tc], vec![]));
    let loaded = load(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.program_names(), vec!["tc_shot", "x"]);
    assert_eq!(loaded.programs()[0].kind, "sched_cls");
    let run = test_run(loaded.program_fd("tc_shot").expect("fd"), &packet(), 1).expect("run");
    assert_eq!(run.retval, 2);
    let run = test_run(loaded.program_fd("x").expect("fd"), &packet(), 1).expect("run");
    assert_eq!(run.retval, 1);
}

#[test]
fn program_sees_values_set_through_maps() {
    if !require_kernel_or_skip("program_sees_values_set_through_maps") {
        return;
    }
    let m = map("vals", MapKind::Hash, u32_le(), i64_le(), 16);
    let bytes = write_object(&object(vec![lookup_program("get7", 7)], vec![m]));
    let loaded = load(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.map_names(), vec!["vals"]);
    let fd = loaded.program_fd("get7").expect("fd");
    assert_eq!(test_run(fd, &packet(), 1).expect("run").retval, 99, "missing key");

    let vals = loaded.map("vals").expect("map");
    assert_eq!(vals.key_size(), 4);
    assert_eq!(vals.value_size(), 8);
    vals.update(&7u32.to_le_bytes(), &1234i64.to_le_bytes(), UpdateMode::Any)
        .expect("update");
    assert_eq!(test_run(fd, &packet(), 1).expect("run").retval, 1234);
    assert_eq!(
        vals.lookup(&7u32.to_le_bytes()).expect("lookup"),
        Some(1234i64.to_le_bytes().to_vec())
    );

    // NoExist on a present key, Exist on a missing key.
    let e = vals
        .update(&7u32.to_le_bytes(), &1i64.to_le_bytes(), UpdateMode::NoExist)
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
    assert!(
        e.to_string().contains("map `vals`") && e.to_string().contains("EEXIST"),
        "{e}"
    );
    let e = vals
        .update(&8u32.to_le_bytes(), &1i64.to_le_bytes(), UpdateMode::Exist)
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");

    // Iteration, delete.
    vals.update(&9u32.to_le_bytes(), &5i64.to_le_bytes(), UpdateMode::Any)
        .expect("update");
    let mut keys: Vec<Vec<u8>> = vals.keys().collect::<Result<_, _>>().expect("keys");
    keys.sort();
    assert_eq!(keys, vec![7u32.to_le_bytes().to_vec(), 9u32.to_le_bytes().to_vec()]);
    assert!(vals.delete(&7u32.to_le_bytes()).expect("delete"));
    assert!(!vals.delete(&7u32.to_le_bytes()).expect("delete again"));
    assert_eq!(test_run(fd, &packet(), 1).expect("run").retval, 99);
}

#[test]
fn missing_keys_and_bad_sizes() {
    if !require_kernel_or_skip("missing_keys_and_bad_sizes") {
        return;
    }
    let m = map("vals", MapKind::Hash, u32_le(), i64_le(), 16);
    let a = map("arr", MapKind::Array, u32_le(), i64_le(), 4);
    let bytes = write_object(&object(vec![lookup_program("get", 1)], vec![m, a]));
    let loaded = load(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let vals = loaded.map("vals").expect("map");
    assert_eq!(vals.lookup(&42u32.to_le_bytes()).expect("lookup"), None);
    assert_eq!(vals.next_key(None).expect("first key"), None);
    assert!(matches!(
        vals.lookup(&[1, 2, 3]),
        Err(MapError::KeySize {
            got: 3,
            expected: 4,
            ..
        })
    ));
    assert!(matches!(
        vals.update(&[0; 4], &[0; 4], UpdateMode::Any),
        Err(MapError::ValueSize {
            got: 4,
            expected: 8,
            ..
        })
    ));
    assert!(matches!(
        vals.lookup_percpu(&[0; 4]),
        Err(MapError::PerCpuMismatch { percpu: false, .. })
    ));
    // Arrays: every index exists (zeroed), out of range is missing, deletion is refused.
    let arr = loaded.map("arr").expect("map");
    assert_eq!(arr.lookup(&3u32.to_le_bytes()).expect("lookup"), Some(vec![0; 8]));
    assert_eq!(arr.lookup(&4u32.to_le_bytes()).expect("lookup"), None);
    let e = arr.delete(&0u32.to_le_bytes()).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    let e = loaded.map("nope").unwrap_err();
    assert!(
        e.to_string().contains("no map named `nope`") && e.to_string().contains("arr, vals"),
        "{e}"
    );
}

#[test]
fn static_table_is_in_the_kernel_after_load() {
    if !require_kernel_or_skip("static_table_is_in_the_kernel_after_load") {
        return;
    }
    let mut m = map("blocked", MapKind::Hash, u32_le(), i64_le(), 16);
    m.init = vec![
        (0x01020304u32.to_le_bytes().to_vec(), 17i64.to_le_bytes().to_vec()),
        (5u32.to_le_bytes().to_vec(), (-1i64).to_le_bytes().to_vec()),
    ];
    let bytes = write_object(&object(vec![lookup_program("get", 0x01020304)], vec![m]));
    let tables = luabpf_loader::init::read_init_tables(&bytes).expect("init section");
    assert_eq!(tables.len(), 1);
    let loaded = load(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let blocked = loaded.map("blocked").expect("map");
    assert_eq!(
        blocked.lookup(&0x01020304u32.to_le_bytes()).expect("lookup"),
        Some(17i64.to_le_bytes().to_vec())
    );
    assert_eq!(
        blocked.lookup(&5u32.to_le_bytes()).expect("lookup"),
        Some((-1i64).to_le_bytes().to_vec())
    );
    assert_eq!(blocked.keys().count(), 2);
    let run = test_run(loaded.program_fd("get").expect("fd"), &packet(), 1).expect("run");
    assert_eq!(run.retval, 17);
}

#[test]
fn static_table_errors_name_the_map() {
    if !require_kernel_or_skip("static_table_errors_name_the_map") {
        return;
    }
    // Full hash map: 3 entries into 2 slots.
    let mut m = map("small", MapKind::Hash, u32_le(), i64_le(), 2);
    m.init = (0..3u32)
        .map(|k| (k.to_le_bytes().to_vec(), 0i64.to_le_bytes().to_vec()))
        .collect();
    let bytes = write_object(&object(vec![lookup_program("get", 0)], vec![m]));
    let e = load(&bytes).unwrap_err();
    let shown = e.to_string();
    assert!(
        matches!(e, LoadError::StaticTable { ref map, .. } if map == "small"),
        "{shown}"
    );
    assert!(shown.contains("E2BIG") && shown.contains("entry #2"), "{shown}");

    // Sizes in .luabpf.init that disagree with the map: swap key_size 4 and value_size 8 in
    // place (entries keep their 12 bytes, so the section stays well-formed).
    let mut obj = object(
        vec![lookup_program("get", 0)],
        vec![map("t", MapKind::Hash, u32_le(), i64_le(), 4)],
    );
    obj.maps[0].init = vec![(vec![0; 4], vec![0; 8])];
    let good = write_object(&obj);
    let range = section_range(&good, ".luabpf.init");
    // magic 8, version 4, count 4, name len 4, name "t" 1, then key_size, value_size.
    let sizes = range.start + 21;
    assert_eq!(good[sizes..sizes + 8], [4, 0, 0, 0, 8, 0, 0, 0]);
    let mut bytes = good.clone();
    bytes[sizes..sizes + 8].copy_from_slice(&[8, 0, 0, 0, 4, 0, 0, 0]);
    let e = load(&bytes).unwrap_err();
    let shown = e.to_string();
    assert!(
        matches!(e, LoadError::StaticTable { ref map, .. } if map == "t"),
        "{shown}"
    );
    assert!(
        shown.contains("8-byte keys and 4-byte values") && shown.contains("4-byte keys and 8-byte values"),
        "{shown}"
    );

    // A table for a map the object does not have (rename "t" to "g" in the section).
    let mut bytes = good.clone();
    bytes[range.start + 20] = b'g';
    let e = load(&bytes).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains("static table `g`") && shown.contains("no map named `g`"),
        "{shown}"
    );

    // A section of an unknown version is refused before anything reaches the kernel.
    let mut bytes = good;
    bytes[range.start + 8] = 9; // version 9
    let e = load(&bytes).unwrap_err();
    assert!(
        matches!(e, LoadError::Init(_)) && e.to_string().contains("version 9"),
        "{e}"
    );
}

#[test]
fn percpu_array_set_and_get() {
    if !require_kernel_or_skip("percpu_array_set_and_get") {
        return;
    }
    let ncpus = luabpf_loader::possible_cpus().expect("possible cpus");
    assert!(ncpus >= 1);
    let mut m = map("counts", MapKind::PercpuArray, u32_le(), i64_le(), 4);
    m.init = vec![(1u32.to_le_bytes().to_vec(), 5i64.to_le_bytes().to_vec())];
    let bytes = write_object(&object(vec![count_program("count")], vec![m]));
    let loaded = load(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let counts = loaded.map("counts").expect("map");
    assert!(counts.is_percpu());

    // The static table wrote every CPU.
    let v = counts
        .lookup_percpu(&1u32.to_le_bytes())
        .expect("lookup")
        .expect("present");
    assert_eq!(v, vec![5i64.to_le_bytes().to_vec(); ncpus]);

    // The program's increments land in one CPU's slot; the sum is the run count.
    let run = test_run(loaded.program_fd("count").expect("fd"), &packet(), 5).expect("run");
    assert_eq!(run.retval, XDP_PASS);
    let v = counts
        .lookup_percpu(&0u32.to_le_bytes())
        .expect("lookup")
        .expect("present");
    assert_eq!(v.len(), ncpus);
    let sum: i64 = v
        .iter()
        .map(|b| i64::from_le_bytes(b.as_slice().try_into().expect("8 bytes")))
        .sum();
    assert_eq!(sum, 5);

    // Distinct values per CPU round-trip.
    let values: Vec<Vec<u8>> = (0..ncpus).map(|c| (100 + c as i64).to_le_bytes().to_vec()).collect();
    counts
        .update_percpu(&2u32.to_le_bytes(), &values, UpdateMode::Any)
        .expect("update");
    assert_eq!(counts.lookup_percpu(&2u32.to_le_bytes()).expect("lookup"), Some(values));
    // update() writes the same value on every CPU.
    counts
        .update(&3u32.to_le_bytes(), &7i64.to_le_bytes(), UpdateMode::Any)
        .expect("update");
    assert_eq!(
        counts.lookup_percpu(&3u32.to_le_bytes()).expect("lookup"),
        Some(vec![7i64.to_le_bytes().to_vec(); ncpus])
    );
    assert!(matches!(
        counts.lookup(&[0; 4]),
        Err(MapError::PerCpuMismatch { percpu: true, .. })
    ));
    assert!(matches!(
        counts.update_percpu(&[0; 4], &vec![vec![0; 8]; 1000], UpdateMode::Any),
        Err(MapError::CpuCount { got: 1000, .. })
    ));
}

#[test]
fn verifier_refusal_carries_the_log() {
    if !require_kernel_or_skip("verifier_refusal_carries_the_log") {
        return;
    }
    // Reads r2 before anything wrote it.
    let bad = program("uninit", "xdp", vec![Insn::mov64_reg(R0, R2), Insn::exit()], vec![]);
    let bytes = write_object(&object(vec![bad], vec![]));
    let e = load(&bytes).unwrap_err();
    let v = e.verifier().unwrap_or_else(|| panic!("not a verifier error: {e}"));
    assert_eq!(v.program, "uninit");
    assert_eq!(v.errno, Some(libc::EACCES));
    assert!(v.errno_text.starts_with("EACCES"), "{}", v.errno_text);
    assert!(v.log.contains("R2 !read_ok"), "{}", v.log);
    assert_eq!(v.reason(), Some("R2 !read_ok"));
    assert!(e.to_string().contains("program `uninit`"), "{e}");

    // Reads the packet without checking data_end.
    let insns = vec![
        Insn::load(Size::W, R2, R1, 0),
        Insn::load(Size::B, R0, R2, 0),
        Insn::exit(),
    ];
    let bytes = write_object(&object(
        vec![xdp_return("fine", 2), program("oob", "xdp", insns, vec![])],
        vec![],
    ));
    let e = load(&bytes).unwrap_err();
    let v = e.verifier().unwrap_or_else(|| panic!("not a verifier error: {e}"));
    assert_eq!(v.program, "oob");
    assert!(v.log.contains("invalid access to packet"), "{}", v.log);
}

#[test]
fn short_packet_is_a_clear_error() {
    if !require_kernel_or_skip("short_packet_is_a_clear_error") {
        return;
    }
    let bytes = write_object(&object(vec![xdp_return("pass", 2)], vec![]));
    let loaded = load(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let fd = loaded.program_fd("pass").expect("fd");
    let e = test_run(fd, &[0u8; 10], 1).unwrap_err();
    assert!(
        matches!(e, TestRunError::PacketTooShort { len: 10, min: 14, .. }),
        "{e}"
    );
    assert_eq!(e.errno(), Some(libc::EINVAL));
    let shown = e.to_string();
    assert!(
        shown.contains("EINVAL") && shown.contains("10 bytes") && shown.contains("at least 14"),
        "{shown}"
    );
    // Exactly an Ethernet header is enough.
    assert_eq!(test_run(fd, &[0u8; 14], 1).expect("14 bytes").retval, XDP_PASS);
}

#[test]
fn garbage_is_an_object_error() {
    if !require_kernel_or_skip("garbage_is_an_object_error") {
        return;
    }
    let e = load(b"not an elf file at all").unwrap_err();
    assert!(matches!(e, LoadError::Object { .. }), "{e}");
    assert!(e.to_string().contains("not an ELF object"), "{e}");
    let mut obj = object(vec![xdp_return("p", 2)], vec![]);
    obj.programs[0].section = "tc".into();
    let e = load(&write_object(&obj)).unwrap_err();
    assert!(
        e.to_string().contains("`tc`") && e.to_string().contains("classifier"),
        "{e}"
    );
}

#[test]
fn oversized_packets_get_a_size_hint() {
    if !require_kernel_or_skip("oversized_packets_get_a_size_hint") {
        return;
    }
    let tc = program(
        "tc_ok",
        "classifier",
        vec![Insn::mov64_imm(R0, 0), Insn::exit()],
        vec![],
    );
    let bytes = write_object(&object(vec![tc], vec![]));
    let loaded = load(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let fd = loaded.program_fd("tc_ok").expect("fd");
    let max = luabpf_loader::testrun::TC_MAX_PACKET;
    assert_eq!(
        test_run(fd, &vec![0u8; max], 1)
            .expect("largest tc packet")
            .data_out
            .len(),
        max
    );
    let e = test_run(fd, &vec![0u8; max + 1], 1).unwrap_err();
    assert!(e.to_string().contains(&format!("at most {max}")), "{e}");
}

#[test]
fn malformed_object_is_an_error_not_a_panic() {
    if !require_kernel_or_skip("malformed_object_is_an_error_not_a_panic") {
        return;
    }
    use object::write::{Object as ElfObject, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope};
    let mut elf = ElfObject::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let maps = elf.add_section(Vec::new(), b"maps".to_vec(), SectionKind::Data);
    elf.append_section_data(maps, &[0u8; 28], 4);
    elf.add_symbol(Symbol {
        name: b"m".to_vec(),
        value: 0,
        size: 4096, // past the section's end
        kind: SymbolKind::Data,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Section(maps),
        flags: SymbolFlags::None,
    });
    let bytes = elf.write().expect("ELF");
    let e = load(&bytes).unwrap_err();
    assert!(matches!(e, LoadError::Object { .. }), "{e}");
    assert!(
        e.to_string().contains("symbol `m`") && e.to_string().contains("reaches past"),
        "{e}"
    );
}

#[test]
fn verifier_log_shows_lua_lines() {
    if !require_kernel_or_skip("verifier_log_shows_lua_lines") {
        return;
    }
    use runtime_bpf::object::{SourceFile, SourceLoc};
    let mut bad = program(
        "uninit",
        "xdp",
        vec![Insn::mov64_imm(R0, 1), Insn::mov64_reg(R0, R2), Insn::exit()],
        vec![],
    );
    bad.locs = vec![
        SourceLoc {
            file: 0,
            line: 1,
            col: 1,
        },
        SourceLoc {
            file: 0,
            line: 2,
            col: 3,
        },
        SourceLoc {
            file: 0,
            line: 2,
            col: 3,
        },
    ];
    let mut obj = object(vec![bad], vec![]);
    obj.sources = vec![SourceFile {
        name: "t.lua".into(),
        text: "local v = 1\n  return oops\n".into(),
    }];
    let e = load(&write_object(&obj)).unwrap_err();
    let v = e.verifier().unwrap_or_else(|| panic!("not a verifier error: {e}"));
    assert!(v.log.contains("R2 !read_ok"), "{}", v.log);
    assert!(
        v.log.contains("return oops"),
        "line info missing from the log:\n{}",
        v.log
    );
}

#[test]
fn bpf_to_bpf_calls_load_and_run() {
    if !require_kernel_or_skip("bpf_to_bpf_calls_load_and_run") {
        return;
    }
    // main: r0 = sub(); return r0 + 1     sub: return 41
    let insns = vec![
        Insn::call_local(2),
        Insn::alu64_imm(AluOp::Add, R0, 1),
        Insn::exit(),
        Insn::mov64_imm(R0, 41),
        Insn::exit(),
    ];
    let bytes = write_object(&object(vec![program("caller", "xdp", insns, vec![])], vec![]));
    let loaded = load(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let run = test_run(loaded.program_fd("caller").expect("fd"), &packet(), 1).expect("run");
    assert_eq!(run.retval, 42);
}
