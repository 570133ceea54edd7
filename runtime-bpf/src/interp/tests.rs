//! The kernel's semantics on hand-written instruction sequences: arithmetic edge cases, memory
//! checks, maps, calls, and robustness against malformed code.

use super::*;
use crate::helpers as h;
use crate::isa::*;
use crate::object::{Format, MapKind, MapSpec, ProgramCode};

fn program(section: &str, insns: Vec<Insn>, map_relocs: Vec<(usize, usize)>) -> ProgramCode {
    ProgramCode {
        name: "p".into(),
        section: section.into(),
        locs: vec![Default::default(); insns.len()],
        insns,
        map_relocs,
        kfunc_relocs: vec![],
        subfunctions: vec![],
    }
}

fn object(section: &str, insns: Vec<Insn>, maps: Vec<MapSpec>, map_relocs: Vec<(usize, usize)>) -> Object {
    Object {
        programs: vec![program(section, insns, map_relocs)],
        maps,
        sources: vec![],
        license: "GPL".into(),
    }
}

fn run(insns: Vec<Insn>) -> Result<RunResult, InterpError> {
    Machine::new(&object("xdp", insns, vec![], vec![]))?.run("p", &[0u8; 64])
}

/// Runs `body` (which leaves its result in r0) and returns all 64 bits of r0, written to the
/// packet by an epilogue.
fn eval(body: &[Insn]) -> u64 {
    let mut insns = vec![Insn::mov64_reg(R6, R1)];
    insns.extend_from_slice(body);
    insns.extend([
        Insn::load(Size::W, R2, R6, 0),
        Insn::store_reg(Size::DW, R2, 14, R0),
        Insn::mov64_imm(R0, 2),
        Insn::exit(),
    ]);
    let r = run(insns).unwrap_or_else(|e| panic!("{e}"));
    u64::from_le_bytes(r.data_out[14..22].try_into().unwrap())
}

fn imm64(dst: Reg, v: i64) -> Vec<Insn> {
    Insn::ld_imm64(dst, v).to_vec()
}

fn binop(a: i64, op: Insn, b: i64) -> u64 {
    let mut body = imm64(R0, a);
    body.extend(imm64(R1, b));
    body.push(op);
    eval(&body)
}

#[test]
fn shifts_mask_the_count_like_the_kernel() {
    assert_eq!(binop(1, Insn::alu64_reg(AluOp::Lsh, R0, R1), 64), 1);
    assert_eq!(binop(1, Insn::alu64_reg(AluOp::Lsh, R0, R1), 65), 2);
    assert_eq!(binop(-8, Insn::alu64_reg(AluOp::Arsh, R0, R1), 66), (-2i64) as u64);
    assert_eq!(binop(0x8000_0000, Insn::alu32_reg(AluOp::Lsh, R0, R1), 32), 0x8000_0000);
    assert_eq!(
        binop(0x8000_0000, Insn::alu32_reg(AluOp::Arsh, R0, R1), 33),
        0xc000_0000
    );
    assert_eq!(binop(-1, Insn::alu32_reg(AluOp::Rsh, R0, R1), 36), 0x0fff_ffff);
}

#[test]
fn division_by_zero_and_signed_forms() {
    assert_eq!(binop(7, Insn::alu64_reg(AluOp::Div, R0, R1), 0), 0);
    assert_eq!(binop(7, Insn::alu64_reg(AluOp::Mod, R0, R1), 0), 7);
    assert_eq!(binop(-7, Insn::alu64_reg_signed(AluOp::Div, R0, R1), 2), (-3i64) as u64);
    assert_eq!(binop(-7, Insn::alu64_reg_signed(AluOp::Mod, R0, R1), 2), (-1i64) as u64);
    assert_eq!(binop(7, Insn::alu64_reg_signed(AluOp::Mod, R0, R1), -2), 1);
    assert_eq!(
        binop(i64::MIN, Insn::alu64_reg_signed(AluOp::Div, R0, R1), -1),
        i64::MIN as u64
    );
    assert_eq!(binop(i64::MIN, Insn::alu64_reg_signed(AluOp::Mod, R0, R1), -1), 0);
    assert_eq!(binop(-7, Insn::alu64_reg_signed(AluOp::Div, R0, R1), 0), 0);
    assert_eq!(binop(-7, Insn::alu64_reg_signed(AluOp::Mod, R0, R1), 0), (-7i64) as u64);
    // Unsigned forms see -7 as a huge number.
    assert_eq!(binop(-7, Insn::alu64_reg(AluOp::Div, R0, R1), 2), (-7i64) as u64 / 2);
    // The K form sign-extends its immediate: 64-bit unsigned division by 2^64 - 1.
    let mut body = imm64(R0, -1);
    body.push(Insn::alu64_imm(AluOp::Div, R0, -1));
    assert_eq!(eval(&body), 1);
    // Signed K form (off = 1).
    let mut body = imm64(R0, -9);
    body.push(Insn::new(BPF_ALU64 | BPF_K | AluOp::Div as u8, 0, 0, 1, 2));
    assert_eq!(eval(&body), (-4i64) as u64);
    // 32-bit: on the low halves, zero-extended.
    assert_eq!(binop(0x1_0000_0007, Insn::alu32_reg(AluOp::Div, R0, R1), 0), 0);
    assert_eq!(binop(0x1_0000_0007, Insn::alu32_reg(AluOp::Mod, R0, R1), 0), 7);
}

#[test]
fn alu32_zero_extends() {
    assert_eq!(binop(0xffff_ffff, Insn::alu32_reg(AluOp::Add, R0, R1), 1), 0);
    assert_eq!(binop(-1, Insn::alu32_reg(AluOp::Mov, R0, R1), 0), 0); // mov32 r0 = r1 (0)
    assert_eq!(binop(0, Insn::alu32_reg(AluOp::Mov, R0, R1), -1), 0xffff_ffff);
    assert_eq!(eval(&[Insn::alu32_imm(AluOp::Mov, R0, -1)]), 0xffff_ffff);
    assert_eq!(eval(&[Insn::mov64_imm(R0, -1)]), u64::MAX);
    let mut neg = imm64(R0, 1);
    neg.push(Insn::new(BPF_ALU | BPF_K | AluOp::Neg as u8, 0, 0, 0, 0));
    assert_eq!(eval(&neg), 0xffff_ffff);
}

#[test]
fn sign_extension_and_byte_swaps() {
    let movsx = |bits: i16| Insn::new(BPF_ALU64 | BPF_X | AluOp::Mov as u8, 0, 1, bits, 0);
    assert_eq!(binop(0, movsx(8), 0x80), (-128i64) as u64);
    assert_eq!(binop(0, movsx(16), 0x1_7fff), 0x7fff);
    assert_eq!(binop(0, movsx(32), 0xffff_fffe), (-2i64) as u64);
    let mut be = imm64(R0, 0x1122_3344_5566_7788);
    be.push(Insn::to_be(R0, 16));
    assert_eq!(eval(&be), 0x8877);
    let mut le = imm64(R0, 0x1122_3344_5566_7788);
    le.push(Insn::to_le(R0, 32));
    assert_eq!(eval(&le), 0x5566_7788);
    let mut bswap = imm64(R0, 0x1122_3344_5566_7788);
    bswap.push(Insn::new(BPF_ALU64 | BPF_K | AluOp::End as u8, 0, 0, 0, 64));
    assert_eq!(eval(&bswap), 0x8877_6655_4433_2211);
}

#[test]
fn jumps_compare_signed_and_32_bit_forms() {
    // r0 = 1 if (r1 s< 0) else 0, with r1 = -1.
    let body = |j: Insn, a: i64| {
        let mut b = imm64(R1, a);
        b.extend([Insn::mov64_imm(R0, 0), j, Insn::ja(1), Insn::mov64_imm(R0, 1)]);
        eval(&b)
    };
    assert_eq!(body(Insn::jmp_imm(JmpOp::Jslt, R1, 0, 1), -1), 1);
    assert_eq!(body(Insn::jmp_imm(JmpOp::Jlt, R1, 0, 1), -1), 0);
    // JMP32 looks at the low half only: 0x1_0000_0000 == 0 there.
    let j32 = Insn::new(BPF_JMP32 | BPF_K | JmpOp::Jeq as u8, 1, 0, 1, 0);
    assert_eq!(body(j32, 0x1_0000_0000), 1);
    assert_eq!(body(Insn::jmp_imm(JmpOp::Jeq, R1, 0, 1), 0x1_0000_0000), 0);
    // The immediate is sign-extended for 64-bit comparisons.
    assert_eq!(body(Insn::jmp_imm(JmpOp::Jeq, R1, -1, 1), -1), 1);
    assert_eq!(body(Insn::jmp_imm(JmpOp::Jset, R1, 4, 1), 6), 1);
}

#[test]
fn memory_checks_are_errors_not_undefined_behaviour() {
    let fault = |insns: Vec<Insn>| match run(insns) {
        Err(InterpError::Fault { why, .. }) => why,
        other => panic!("expected a fault, got {other:?}"),
    };
    // Reading past data_end.
    let why = fault(vec![
        Insn::load(Size::W, R2, R1, 0),
        Insn::load(Size::DW, R0, R2, 60),
        Insn::exit(),
    ]);
    assert!(why.contains("the packet"), "{why}");
    // Reading stack never written.
    let why = fault(vec![Insn::load(Size::DW, R0, R10, -8), Insn::exit()]);
    assert!(why.contains("uninitialized stack at fp-8"), "{why}");
    // Below the frame.
    let why = fault(vec![
        Insn::store_imm(Size::DW, R10, -520, 0),
        Insn::mov64_imm(R0, 0),
        Insn::exit(),
    ]);
    assert!(why.contains("outside the 512-byte frame"), "{why}");
    // A register never set; r1-r5 after a helper call.
    let why = fault(vec![Insn::mov64_reg(R0, R7), Insn::exit()]);
    assert!(why.contains("r7"), "{why}");
    let why = fault(vec![
        Insn::call_helper(h::KTIME_GET_NS),
        Insn::mov64_reg(R0, R1),
        Insn::exit(),
    ]);
    assert!(why.contains("r1"), "{why}");
    // Writing r10, pointer arithmetic the verifier refuses, returning a pointer.
    assert!(fault(vec![Insn::mov64_imm(R10, 0), Insn::exit()]).contains("r10"));
    assert!(fault(vec![Insn::alu64_imm(AluOp::Mul, R1, 2), Insn::exit()]).contains("pointer"));
    assert!(fault(vec![Insn::mov64_reg(R0, R1), Insn::exit()]).contains("returns a pointer"));
    // Immediate stores and atomics into the context or the packet.
    assert!(fault(vec![Insn::store_imm(Size::W, R1, 0, 1), Insn::exit()]).contains("context"));
    let why = fault(vec![
        Insn::load(Size::W, R2, R1, 0),
        Insn::mov64_imm(R3, 1),
        Insn::atomic_add(Size::W, R2, 14, R3),
        Insn::exit(),
    ]);
    assert!(why.contains("atomic"), "{why}");
    // The verifier refuses egress_ifindex outside devmap programs.
    assert!(fault(vec![Insn::load(Size::W, R0, R1, 20), Insn::exit()]).contains("egress_ifindex"));
}

#[test]
fn pointers_spill_and_fill_whole() {
    // Spill the ctx pointer, fill it back, load data through it.
    let r = run(vec![
        Insn::store_reg(Size::DW, R10, -16, R1),
        Insn::load(Size::DW, R3, R10, -16),
        Insn::load(Size::W, R2, R3, 0),
        Insn::load(Size::B, R0, R2, 5),
        Insn::exit(),
    ])
    .unwrap();
    assert_eq!(r.retval, 0);
    match run(vec![
        Insn::store_reg(Size::DW, R10, -16, R1),
        Insn::load(Size::W, R0, R10, -16),
        Insn::exit(),
    ]) {
        Err(InterpError::Fault { why, .. }) => assert!(why.contains("spilled pointer"), "{why}"),
        other => panic!("{other:?}"),
    }
}

fn hash_map(name: &str, kind: MapKind, entries: u32) -> MapSpec {
    MapSpec {
        name: name.into(),
        kind,
        key: Format::Int {
            bytes: 4,
            signed: false,
        },
        value: Format::Int {
            bytes: 8,
            signed: false,
        },
        max_entries: entries,
        flags: 0,
        init: vec![],
    }
}

/// `r0 = update(map, key = r6, value = r7, flags)`: stack fp-8 key, fp-16 value.
fn update(key: i32, value: i32, flags: i32) -> Vec<Insn> {
    let mut v = vec![
        Insn::store_imm(Size::W, R10, -8, key),
        Insn::store_imm(Size::DW, R10, -16, value),
    ];
    v.extend(Insn::ld_map_fd(R1));
    v.extend([
        Insn::mov64_reg(R2, R10),
        Insn::alu64_imm(AluOp::Add, R2, -8),
        Insn::mov64_reg(R3, R10),
        Insn::alu64_imm(AluOp::Add, R3, -16),
        Insn::mov64_imm(R4, flags),
        Insn::call_helper(h::MAP_UPDATE_ELEM),
    ]);
    v
}

/// One update as a whole program returning the helper's result.
fn update_program(key: i32, value: i32, flags: i32) -> (Vec<Insn>, Vec<(usize, usize)>) {
    let mut insns = update(key, value, flags);
    insns.push(Insn::exit());
    (insns, vec![(2, 0)])
}

#[test]
fn hash_maps_follow_the_kernels_update_rules() {
    let spec = hash_map("m", MapKind::Hash, 2);
    let objects = |key, value, flags| {
        let (insns, relocs) = update_program(key, value, flags);
        object("xdp", insns, vec![spec.clone()], relocs)
    };
    let mut m = Machine::new(&objects(1, 10, h::BPF_ANY)).unwrap();
    // Each update is its own program; the maps carry over from one machine to the next.
    let ret = |m: &mut Machine, o: Object| {
        let mut next = Machine::new(&o).unwrap();
        next.maps = std::mem::take(&mut m.maps);
        *m = next;
        m.run("p", &[0; 14]).unwrap().retval as i32
    };
    assert_eq!(ret(&mut m, objects(1, 10, h::BPF_ANY)), 0);
    assert_eq!(ret(&mut m, objects(1, 11, h::BPF_NOEXIST)), -(maps::EEXIST as i32));
    assert_eq!(ret(&mut m, objects(2, 20, h::BPF_EXIST)), -(maps::ENOENT as i32));
    assert_eq!(ret(&mut m, objects(2, 20, h::BPF_NOEXIST)), 0);
    assert_eq!(ret(&mut m, objects(3, 30, h::BPF_ANY)), -(maps::E2BIG as i32));
    assert_eq!(ret(&mut m, objects(1, 12, h::BPF_EXIST)), 0);
    assert_eq!(ret(&mut m, objects(1, 12, 7)), -(maps::EINVAL as i32));
    let entries = m.map("m").unwrap().entries();
    let as_u64 = |v: &Vec<u8>| u64::from_le_bytes(v[..8].try_into().unwrap());
    assert_eq!(entries.iter().map(|(_, v)| as_u64(v)).collect::<Vec<_>>(), [12, 20]);
}

#[test]
fn a_looked_up_value_outlives_an_update_of_its_key() {
    // p = lookup(m, 1); update(m, 1, 99); return *p  -> the old value (the kernel swaps in a
    // spare element and leaves the old one alone).
    let mut spec = hash_map("m", MapKind::Hash, 4);
    spec.init = vec![(1u32.to_le_bytes().to_vec(), 5u64.to_le_bytes().to_vec())];
    let mut insns = vec![Insn::store_imm(Size::W, R10, -8, 1)];
    insns.extend(Insn::ld_map_fd(R1));
    insns.extend([
        Insn::mov64_reg(R2, R10),
        Insn::alu64_imm(AluOp::Add, R2, -8),
        Insn::call_helper(h::MAP_LOOKUP_ELEM),
        Insn::jmp_imm(JmpOp::Jne, R0, 0, 1),
        Insn::exit(),
        Insn::mov64_reg(R6, R0),
    ]);
    let second = insns.len() + 2;
    insns.extend(update(1, 99, h::BPF_ANY));
    insns.extend([Insn::load(Size::DW, R0, R6, 0), Insn::exit()]);
    let mut m = Machine::new(&object("xdp", insns, vec![spec], vec![(1, 0), (second, 0)])).unwrap();
    assert_eq!(m.run("p", &[0; 14]).unwrap().retval, 5);
    assert_eq!(m.map("m").unwrap().entries()[0].1, 99u64.to_le_bytes());
}

#[test]
fn arrays_are_fixed_and_in_place() {
    let spec = hash_map("a", MapKind::Array, 4);
    let (insns, relocs) = update_program(4, 1, h::BPF_ANY);
    let mut m = Machine::new(&object("xdp", insns, vec![spec.clone()], relocs)).unwrap();
    assert_eq!(m.run("p", &[0; 14]).unwrap().retval as i32, -(maps::E2BIG as i32));
    let (insns, relocs) = update_program(3, 1, h::BPF_NOEXIST);
    let mut m = Machine::new(&object("xdp", insns, vec![spec.clone()], relocs)).unwrap();
    assert_eq!(m.run("p", &[0; 14]).unwrap().retval as i32, -(maps::EEXIST as i32));
    assert_eq!(m.map("a").unwrap().entries().len(), 4);
    assert!(m.map_mut("a").unwrap().delete(&0u32.to_le_bytes()).is_err());
}

#[test]
fn lpm_tries_match_the_longest_prefix() {
    let mut spec = hash_map("t", MapKind::LpmTrie, 8);
    spec.key = Format::Chars(8);
    let key = |plen: u32, ip: [u8; 4]| [plen.to_le_bytes(), ip].concat();
    let mut m = MapState::new(&spec).unwrap();
    m.update(&key(8, [10, 9, 9, 9]), &1u64.to_le_bytes(), 0).unwrap();
    m.update(&key(24, [10, 1, 2, 0]), &2u64.to_le_bytes(), 0).unwrap();
    let found = |m: &mut MapState, k: Vec<u8>| m.lookup(&k).map(|s| m.slot(s).unwrap()[0]);
    assert_eq!(found(&mut m, key(32, [10, 1, 2, 3])), Some(2));
    assert_eq!(found(&mut m, key(32, [10, 1, 3, 3])), Some(1));
    assert_eq!(found(&mut m, key(32, [11, 1, 2, 3])), None);
    assert_eq!(m.update(&key(33, [0; 4]), &0u64.to_le_bytes(), 0), Err(maps::EINVAL));
    assert_eq!(m.delete(&key(8, [10, 0, 0, 0])), Ok(()));
    assert_eq!(found(&mut m, key(32, [10, 1, 3, 3])), None);
}

#[test]
fn lru_hash_evicts_instead_of_refusing() {
    let mut m = MapState::new(&hash_map("l", MapKind::LruHash, 2)).unwrap();
    for k in 0u32..3 {
        m.update(&k.to_le_bytes(), &[k as u8; 8], 0).unwrap();
    }
    let keys: Vec<_> = m.entries().into_iter().map(|(k, _)| k[0]).collect();
    assert_eq!(keys, [1, 2]);
}

#[test]
fn local_calls_get_their_own_frame_and_keep_callee_saved_registers() {
    // main: r6 = 7; fp-8 = 100; r1 = fp-8; call f; r0 += r6; exit
    // f:    fp-8 = 1 (its own frame); r0 = *(u64*)r1 (the caller's) + 1; exit
    let insns = vec![
        Insn::mov64_imm(R6, 7),
        Insn::store_imm(Size::DW, R10, -8, 100),
        Insn::mov64_reg(R1, R10),
        Insn::alu64_imm(AluOp::Add, R1, -8),
        Insn::call_local(3),
        Insn::alu64_reg(AluOp::Add, R0, R6),
        Insn::exit(),
        // unreachable filler, then f at 8
        Insn::exit(),
        Insn::store_imm(Size::DW, R10, -8, 1),
        Insn::load(Size::DW, R0, R1, 0),
        Insn::alu64_imm(AluOp::Add, R0, 1),
        Insn::exit(),
    ];
    assert_eq!(run(insns).unwrap().retval, 108);
    // Unbounded recursion stops at the kernel's frame limit.
    match run(vec![Insn::call_local(-1), Insn::exit()]) {
        Err(InterpError::Fault { why, .. }) => assert!(why.contains("8 frames"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_budget_stops_an_endless_loop() {
    let mut m = Machine::new(&object("xdp", vec![Insn::ja(-1)], vec![], vec![])).unwrap();
    m.budget = 1000;
    assert_eq!(m.run("p", &[0; 14]), Err(InterpError::Budget { limit: 1000 }));
}

#[test]
fn tc_context_fields() {
    // r0 = skb->protocol + skb->len; skb->mark = 5; r0 += skb->mark
    let insns = vec![
        Insn::load(Size::W, R0, R1, 16),
        Insn::load(Size::W, R2, R1, 0),
        Insn::alu64_reg(AluOp::Add, R0, R2),
        Insn::mov64_imm(R3, 5),
        Insn::store_reg(Size::W, R1, 8, R3),
        Insn::load(Size::W, R2, R1, 8),
        Insn::alu64_reg(AluOp::Add, R0, R2),
        Insn::exit(),
    ];
    let mut packet = vec![0u8; 60];
    packet[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut m = Machine::new(&object("classifier", insns, vec![], vec![])).unwrap();
    assert_eq!(m.run("p", &packet).unwrap().retval, 0x0008 + 60 + 5);
    assert!(matches!(m.run("p", &[0; 13]), Err(InterpError::Packet(_))));
    assert!(matches!(m.run("p", &[0; 4000]), Err(InterpError::Packet(_))));
    // A real field luabpf does not expose is named, not called a verifier bug.
    let tc_index = vec![Insn::load(Size::W, R0, R1, 44), Insn::exit()];
    let mut other = Machine::new(&object("classifier", tc_index, vec![], vec![])).unwrap();
    match other.run("p", &packet) {
        Err(InterpError::Unsupported(why)) => assert!(why.contains("__sk_buff.tc_index"), "{why}"),
        other => panic!("{other:?}"),
    }
    // An IPv4 frame shorter than its IP header is refused, as the kernel's test run does.
    assert!(matches!(m.run("p", &packet[..33]), Err(InterpError::Packet(_))));
    assert!(m.run("p", &packet[..34]).is_ok());
}

#[test]
fn xdp_load_bytes_reaches_past_the_linear_part() {
    // r0 = xdp_load_bytes(ctx, 3600, fp-8, 8) == 0 ? fp-8 byte : 99
    let insns = vec![
        Insn::mov64_imm(R2, 3600),
        Insn::mov64_reg(R3, R10),
        Insn::alu64_imm(AluOp::Add, R3, -8),
        Insn::mov64_imm(R4, 8),
        Insn::call_helper(h::XDP_LOAD_BYTES),
        Insn::jmp_imm(JmpOp::Jeq, R0, 0, 2),
        Insn::mov64_imm(R0, 99),
        Insn::exit(),
        Insn::load(Size::B, R0, R10, -8),
        Insn::exit(),
    ];
    let mut packet = vec![0u8; 4000];
    packet[3600] = 42;
    let mut m = Machine::new(&object("xdp", insns, vec![], vec![])).unwrap();
    assert_eq!(m.run("p", &packet).unwrap().retval, 42);
    assert_eq!(m.run("p", &packet[..3604]).unwrap().retval, 99);
}

#[test]
fn printk_formats_like_the_kernel() {
    assert_eq!(
        calls::format_printk("x=%d y=%llu %x%%", &[u32::MAX as u64, 7, 255]),
        "x=-1 y=7 ff%"
    );
}

#[test]
fn malformed_code_is_an_error_never_a_panic() {
    assert!(matches!(run(vec![Insn::ja(5)]), Err(InterpError::Malformed { .. })));
    assert!(matches!(
        run(vec![Insn::mov64_imm(R0, 0)]),
        Err(InterpError::Malformed { .. })
    ));
    assert!(matches!(
        run(vec![Insn::new(0xff, 0, 0, 0, 0)]),
        Err(InterpError::Malformed { .. })
    ));
    assert!(matches!(
        run(Insn::ld_map_fd(R1).to_vec()),
        Err(InterpError::Malformed { .. })
    ));
    // A kfunc call the object names no function for.
    assert!(matches!(
        run(vec![Insn::call_kfunc(1)]),
        Err(InterpError::Malformed { .. })
    ));
    assert!(matches!(run(vec![Insn::new(0x05, 11, 0, 0, 0)]), Ok(_) | Err(_)));
    // Sizes that would make the interpreter allocate without bound are refused up front.
    let mut huge = hash_map("h", MapKind::Hash, 1);
    huge.value = Format::Chars(u32::MAX);
    assert!(Machine::new(&object("xdp", vec![Insn::exit()], vec![huge], vec![])).is_err());
    let mut huge = hash_map("a", MapKind::Array, u32::MAX);
    huge.value = Format::Chars(1 << 16);
    assert!(Machine::new(&object("xdp", vec![Insn::exit()], vec![huge], vec![])).is_err());
    let skb_load = vec![
        Insn::mov64_imm(R2, 0x7fff_ffff),
        Insn::mov64_reg(R3, R10),
        Insn::alu64_imm(AluOp::Add, R3, -8),
        Insn::mov64_imm(R4, -1),
        Insn::call_helper(h::SKB_LOAD_BYTES),
        Insn::exit(),
    ];
    let mut m = Machine::new(&object("classifier", skb_load, vec![], vec![])).unwrap();
    assert!(matches!(m.run("p", &[0; 64]), Err(InterpError::Fault { .. })));
    // Random instruction soup after registers are set: every outcome is a result. Half the
    // slots are raw random bytes, half valid opcodes with random registers, offsets and immediates (helper calls
    // among them), so that the checks past decoding are reached too.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut codes: Vec<u8> = Vec::new();
    for class in [BPF_ALU, BPF_ALU64, BPF_JMP, BPF_JMP32] {
        for op in (0..=0xe0).step_by(0x10) {
            codes.extend([class | op as u8, class | BPF_X | op as u8]);
        }
    }
    for size in [BPF_B, BPF_H, BPF_W, BPF_DW] {
        codes.extend([BPF_LDX | BPF_MEM | size, BPF_LDX | 0x80 | size, BPF_ST | BPF_MEM | size]);
        codes.extend([BPF_STX | BPF_MEM | size, BPF_STX | BPF_ATOMIC | size]);
    }
    codes.push(BPF_LD | BPF_IMM | BPF_DW);
    let mut outcomes = [0usize; 2];
    for _ in 0..20_000 {
        let mut insns: Vec<Insn> = [0u8, 2, 3, 4, 5, 6, 7, 8, 9]
            .iter()
            .map(|&r| Insn::mov64_imm(Reg(r), (next() % 64) as i32))
            .collect();
        insns.extend((0..12).map(|_| {
            let r = next();
            if r % 2 == 0 {
                return Insn::decode(&next().to_le_bytes());
            }
            let code = codes[(r >> 8) as usize % codes.len()];
            let imm = match (r >> 20) % 4 {
                0 => (r >> 32) as i32,
                1 => ((r >> 32) % 16) as i32,
                2 => [1, 2, 3, 5, 6, 7, 8, 9, 26, 28, 44, 65, 189, 190][(r >> 32) as usize % 14],
                _ => -(((r >> 32) % 600) as i32),
            };
            let off = match (r >> 24) % 3 {
                0 => ((r >> 40) % 8) as i16,
                1 => -(((r >> 40) % 520) as i16),
                _ => (r >> 40) as i16,
            };
            Insn::new(code, ((r >> 48) % 11) as u8, ((r >> 52) % 11) as u8, off, imm)
        }));
        insns.push(Insn::exit());
        let section = if next() % 2 == 0 { "xdp" } else { "classifier" };
        let maps = vec![hash_map("m", MapKind::Hash, 4), hash_map("a", MapKind::Array, 4)];
        let relocs = (0..insns.len())
            .filter(|i| insns[*i].is_ld_imm64())
            .map(|i| (i, i % 2))
            .collect();
        let mut m = Machine::new(&object(section, insns, maps, relocs)).unwrap();
        m.budget = 10_000;
        outcomes[m.run("p", &[0xab; 64]).is_ok() as usize] += 1;
    }
    assert!(outcomes[1] > 0, "no random program ran to its end: {outcomes:?}");
}

/// A netfilter program built with kfunc calls by name.
#[derive(Default)]
struct NfProgram {
    insns: Vec<Insn>,
    kfuncs: Vec<(usize, String)>,
}

impl NfProgram {
    fn push(&mut self, insns: impl IntoIterator<Item = Insn>) -> &mut Self {
        self.insns.extend(insns);
        self
    }

    fn kfunc(&mut self, name: &str) -> &mut Self {
        self.kfuncs.push((self.insns.len(), name.into()));
        self.push([Insn::call_kfunc(0)])
    }

    /// r1 = ctx->skb, r2 = `flags`, r3 = fp-16: `bpf_dynptr_from_skb` (ctx saved in r6).
    fn dynptr(&mut self, flags: i32) -> &mut Self {
        self.push([
            Insn::mov64_reg(R6, R1),
            Insn::load(Size::DW, R1, R6, 8),
            Insn::mov64_imm(R2, flags),
            Insn::mov64_reg(R3, R10),
            Insn::alu64_imm(AluOp::Add, R3, -16),
        ])
        .kfunc("bpf_dynptr_from_skb")
    }

    /// r0 = `bpf_dynptr_slice(fp-16, off, fp-24, len)`.
    fn slice(&mut self, off: i32, len: i32) -> &mut Self {
        self.push([
            Insn::mov64_reg(R1, R10),
            Insn::alu64_imm(AluOp::Add, R1, -16),
            Insn::mov64_imm(R2, off),
            Insn::mov64_reg(R3, R10),
            Insn::alu64_imm(AluOp::Add, R3, -24),
            Insn::mov64_imm(R4, len),
        ])
        .kfunc("bpf_dynptr_slice")
    }

    /// r0 = `bpf_dynptr_size(fp-16)`.
    fn size(&mut self) -> &mut Self {
        self.push([Insn::mov64_reg(R1, R10), Insn::alu64_imm(AluOp::Add, R1, -16)])
            .kfunc("bpf_dynptr_size")
    }

    /// r0 = `bpf_dynptr_read(fp-100, len, fp-16, off, flags)`.
    fn read(&mut self, len: i32, off: i32, flags: i32) -> &mut Self {
        self.push([
            Insn::mov64_reg(R1, R10),
            Insn::alu64_imm(AluOp::Add, R1, -100),
            Insn::mov64_imm(R2, len),
            Insn::mov64_reg(R3, R10),
            Insn::alu64_imm(AluOp::Add, R3, -16),
            Insn::mov64_imm(R4, off),
            Insn::mov64_imm(R5, flags),
            Insn::call_helper(h::DYNPTR_READ),
        ])
    }

    fn machine(&mut self) -> Machine {
        self.push([Insn::exit()]);
        let mut p = program("netfilter/ipv4:local_in:0", self.insns.clone(), vec![]);
        p.kfunc_relocs = self.kfuncs.clone();
        Machine::new(&Object {
            programs: vec![p],
            maps: vec![],
            sources: vec![],
            license: "GPL".into(),
        })
        .unwrap()
    }

    fn run(&mut self, packet: &[u8]) -> Result<RunResult, InterpError> {
        self.machine().run_netfilter("p", packet, NFPROTO_IPV6)
    }
}

fn ip_packet(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8 ^ 0x5a).collect()
}

#[test]
fn netfilter_hook_state_is_local_out_of_the_family() {
    // r0 = state->hook | state->pf << 8 | (2-byte load at 0) << 16
    let body = [
        Insn::load(Size::DW, R2, R1, 0),
        Insn::load(Size::B, R0, R2, 0),
        Insn::load(Size::B, R3, R2, 1),
        Insn::alu64_imm(AluOp::Lsh, R3, 8),
        Insn::alu64_reg(AluOp::Or, R0, R3),
        Insn::load(Size::H, R3, R2, 0),
        Insn::alu64_imm(AluOp::Lsh, R3, 16),
        Insn::alu64_reg(AluOp::Or, R0, R3),
    ];
    let mut m = NfProgram::default().push(body).machine();
    let packet = ip_packet(40);
    assert_eq!(m.run_netfilter("p", &packet, NFPROTO_IPV6).unwrap().retval, 0x0a03_0a03);
    // A run without a hook state is IPv4, as the kernel's default.
    assert_eq!(m.run("p", &packet).unwrap().retval, 0x0203_0203);
    // Fields the interpreter does not emulate (the device pointers) are named.
    let mut other = NfProgram::default()
        .push([Insn::load(Size::DW, R2, R1, 0), Insn::load(Size::DW, R0, R2, 8)])
        .machine();
    assert!(matches!(other.run("p", &packet), Err(InterpError::Unsupported(_))));
}

#[test]
fn netfilter_test_runs_refuse_what_the_kernel_refuses() {
    let mut m = NfProgram::default().push([Insn::mov64_imm(R0, 1)]).machine();
    for (len, ok) in [(0, false), (19, false), (20, true), (3712, true), (3713, false)] {
        let r = m.run_netfilter("p", &ip_packet(len), NFPROTO_IPV4);
        assert_eq!(r.is_ok(), ok, "{len} bytes: {r:?}");
        if !ok {
            assert!(matches!(r, Err(InterpError::Packet(_))), "{r:?}");
        }
    }
    assert!(matches!(
        m.run_netfilter("p", &ip_packet(40), 7),
        Err(InterpError::Packet(_))
    ));
}

#[test]
fn dynptr_slices_point_into_the_packet_or_are_null() {
    let packet = ip_packet(40);
    let last4 = u32::from_le_bytes(packet[36..40].try_into().unwrap());
    // The last four bytes, through the slice.
    let r = NfProgram::default()
        .dynptr(0)
        .slice(36, 4)
        .push([Insn::jmp_imm(JmpOp::Jeq, R0, 0, 1), Insn::load(Size::W, R0, R0, 0)])
        .run(&packet)
        .unwrap();
    assert_eq!(r.retval, last4);
    assert_eq!(r.data_out, packet, "netfilter packets come back as they went in");
    // One byte past the end, and an offset that wraps: NULL.
    for (off, len) in [(37, 4), (-1, 4), (40, 1), (0, 41)] {
        let r = NfProgram::default()
            .dynptr(0)
            .slice(off, len)
            .push([Insn::jmp_imm(JmpOp::Jeq, R0, 0, 1), Insn::mov64_imm(R0, 1)])
            .run(&packet)
            .unwrap();
        assert_eq!(r.retval, 0, "slice({off}, {len})");
    }
    // A zero-length slice at the end is in range.
    let r = NfProgram::default()
        .dynptr(0)
        .slice(40, 0)
        .push([Insn::jmp_imm(JmpOp::Jeq, R0, 0, 1), Insn::mov64_imm(R0, 1)])
        .run(&packet)
        .unwrap();
    assert_eq!(r.retval, 1);
    // `bpf_dynptr_size` is the packet's length.
    let r = NfProgram::default().dynptr(0).size().run(&packet).unwrap();
    assert_eq!(r.retval, 40);
    // A slice is memory of its size: a read past it is what the verifier refuses.
    let past = NfProgram::default()
        .dynptr(0)
        .slice(0, 4)
        .push([Insn::jmp_imm(JmpOp::Jeq, R0, 0, 1), Insn::load(Size::B, R0, R0, 4)])
        .run(&packet);
    assert!(matches!(past, Err(InterpError::Fault { .. })), "{past:?}");
    // Slices are read-only.
    let write = NfProgram::default()
        .dynptr(0)
        .slice(0, 4)
        .push([Insn::jmp_imm(JmpOp::Jeq, R0, 0, 1), Insn::store_imm(Size::B, R0, 0, 1)])
        .run(&packet);
    assert!(matches!(write, Err(InterpError::Fault { .. })), "{write:?}");
}

#[test]
fn dynptr_read_copies_or_returns_the_kernels_errno() {
    let packet = ip_packet(40);
    // Four bytes at 36 into fp-100, then loaded.
    let r = NfProgram::default()
        .dynptr(0)
        .read(4, 36, 0)
        .push([Insn::jmp_imm(JmpOp::Jne, R0, 0, 1), Insn::load(Size::W, R0, R10, -100)])
        .run(&packet)
        .unwrap();
    assert_eq!(r.retval, u32::from_le_bytes(packet[36..40].try_into().unwrap()));
    // Out of range: -E2BIG, as a 64-bit long; flags: -EINVAL. The buffer counts as written.
    for (len, off, flags, errno) in [(4, 37, 0, -7i64), (41, 0, 0, -7), (4, -1, 0, -7), (4, 0, 1, -22)] {
        let r = NfProgram::default()
            .dynptr(0)
            .read(len, off, flags)
            .push([
                Insn::mov64_reg(R6, R0),
                Insn::load(Size::W, R7, R10, -100),
                Insn::ld_imm64(R1, errno)[0],
                Insn::ld_imm64(R1, errno)[1],
                Insn::mov64_imm(R0, 1),
                Insn::jmp_reg(JmpOp::Jeq, R6, R1, 1),
                Insn::mov64_imm(R0, 0),
            ])
            .run(&packet)
            .unwrap_or_else(|e| panic!("read({len}, {off}, {flags}): {e}"));
        assert_eq!(r.retval, 1, "read({len}, {off}, {flags}) returns {errno}");
    }
}

#[test]
fn a_failed_dynptr_is_null_and_its_bytes_are_not_data() {
    let packet = ip_packet(40);
    // Flags make bpf_dynptr_from_skb fail: -EINVAL as a 32-bit int, and a null dynptr whose
    // slices are NULL and whose size is -EINVAL.
    let r = NfProgram::default().dynptr(1).run(&packet).unwrap();
    assert_eq!(r.retval as i32, -22);
    let r = NfProgram::default().dynptr(1).slice(0, 1).run(&packet).unwrap();
    assert_eq!(r.retval, 0);
    let r = NfProgram::default().dynptr(1).size().run(&packet).unwrap();
    assert_eq!(r.retval as i32, -22);
    // The verifier refuses reading a dynptr's bytes, and a write destroys it.
    let read = NfProgram::default()
        .dynptr(0)
        .push([Insn::load(Size::DW, R0, R10, -8)])
        .run(&packet);
    assert!(matches!(read, Err(InterpError::Fault { .. })), "{read:?}");
    let overwritten = NfProgram::default()
        .dynptr(0)
        .push([Insn::store_imm(Size::DW, R10, -8, 0)])
        .slice(0, 1)
        .run(&packet);
    assert!(matches!(overwritten, Err(InterpError::Fault { .. })), "{overwritten:?}");
    // A kfunc the interpreter does not know is named.
    let unknown = NfProgram::default().kfunc("bpf_dynptr_adjust").run(&packet);
    match unknown {
        Err(InterpError::Unsupported(why)) => assert!(why.contains("bpf_dynptr_adjust"), "{why}"),
        other => panic!("{other:?}"),
    }
}
