//! Sample objects shared by the integration tests: each is a program the verifier accepts.
#![allow(dead_code)]

use runtime_bpf::helpers;
use runtime_bpf::isa::*;
use runtime_bpf::object::*;

/// One location per slot, one line per instruction (the second slot of an `ld_imm64` shares
/// its first slot's line, as line_info cannot point at it).
pub fn locs(insns: &[Insn], first_line: u32) -> Vec<SourceLoc> {
    let mut out = Vec::new();
    let mut line = first_line;
    let mut i = 0;
    while i < insns.len() {
        let loc = SourceLoc { file: 0, line, col: 3 };
        out.push(loc);
        if insns[i].is_ld_imm64() && i + 1 < insns.len() {
            out.push(loc);
            i += 1;
        }
        line += 1;
        i += 1;
    }
    out
}

pub fn source(lines: u32) -> SourceFile {
    let text = (1..=lines)
        .map(|n| format!("  line_{n}()"))
        .collect::<Vec<_>>()
        .join("\n");
    SourceFile {
        name: "filter.lua".into(),
        text,
    }
}

pub fn program(name: &str, section: &str, insns: Vec<Insn>, map_relocs: Vec<(usize, usize)>) -> ProgramCode {
    ProgramCode {
        name: name.into(),
        section: section.into(),
        locs: locs(&insns, 1),
        insns,
        map_relocs,
        kfunc_relocs: vec![],
        subfunctions: Vec::new(),
    }
}

pub fn object(programs: Vec<ProgramCode>, maps: Vec<MapSpec>) -> Object {
    Object {
        programs,
        maps,
        sources: vec![source(64)],
        license: "GPL".into(),
    }
}

/// `r0 = 2; exit`: XDP_PASS.
pub fn trivial_xdp() -> Object {
    object(
        vec![program(
            "pass",
            "xdp",
            vec![Insn::mov64_imm(R0, 2), Insn::exit()],
            vec![],
        )],
        vec![],
    )
}

/// The hash map of the SNI filter: 64-byte names to hit counters.
pub fn blocked_map() -> MapSpec {
    let mut key = b"evil.example".to_vec();
    key.resize(64, 0);
    MapSpec {
        name: "blocked".into(),
        kind: MapKind::Hash,
        key: Format::Chars(64),
        value: Format::Int {
            bytes: 8,
            signed: false,
        },
        max_entries: 4096,
        flags: 0,
        init: vec![(key, 1u64.to_le_bytes().to_vec())],
    }
}

/// `r1 = map[blocked] ll; r0 = 2; exit`.
pub fn xdp_with_map() -> Object {
    let mut insns = Insn::ld_map_fd(R1).to_vec();
    insns.push(Insn::mov64_imm(R0, 2));
    insns.push(Insn::exit());
    object(
        vec![program("sni_filter", "xdp", insns, vec![(0, 0)])],
        vec![blocked_map()],
    )
}

pub fn counts_map() -> MapSpec {
    MapSpec {
        name: "counts".into(),
        kind: MapKind::PercpuArray,
        key: Format::Int {
            bytes: 4,
            signed: false,
        },
        value: Format::record(vec![
            (
                "hits".into(),
                Format::Int {
                    bytes: 8,
                    signed: false,
                },
            ),
            (
                "last".into(),
                Format::Int {
                    bytes: 4,
                    signed: false,
                },
            ),
        ]),
        max_entries: 256,
        flags: 0,
        init: vec![],
    }
}

/// An entry function that runs `bpf_loop` with a callback and calls a subprogram that looks
/// up a map: exercises `.text`, call relocations and per-function BTF. The functions are in
/// link order (callback first: it is referenced first), as libbpf and aya link them.
pub fn xdp_with_subprograms() -> Object {
    subprograms(8, 10)
}

/// The same code with the subprogram before the callback: not in link order.
pub fn xdp_with_subprograms_unordered() -> Object {
    subprograms(16, 8)
}

fn subprograms(callback: usize, sub: usize) -> Object {
    let mut main = vec![Insn::mov64_imm(R1, 4)]; // 0: nr_loops
    let mut cb = Insn::ld_imm64(R2, 0); // 1-2: r2 = callback
    cb[0].src = 4;
    cb[0].imm = callback as i32 - 2;
    main.extend(cb);
    main.push(Insn::mov64_imm(R3, 0)); // 3: callback ctx
    main.push(Insn::mov64_imm(R4, 0)); // 4: flags
    main.push(Insn::call_helper(helpers::LOOP)); // 5
    main.push(Insn::call_local(sub as i32 - 7)); // 6
    main.push(Insn::exit()); // 7
    let callback_code = [Insn::mov64_imm(R0, 0), Insn::exit()]; // returns 0 = continue
    let mut sub_code = vec![Insn::store_imm(Size::W, R10, -4, 0)];
    sub_code.extend(Insn::ld_map_fd(R1)); // +1, +2
    sub_code.push(Insn::mov64_reg(R2, R10));
    sub_code.push(Insn::alu64_imm(AluOp::Add, R2, -4));
    sub_code.push(Insn::call_helper(helpers::MAP_LOOKUP_ELEM));
    sub_code.push(Insn::mov64_imm(R0, 2));
    sub_code.push(Insn::exit());
    let mut insns = main;
    if callback < sub {
        insns.extend(callback_code);
        insns.extend(sub_code);
    } else {
        insns.extend(sub_code);
        insns.extend(callback_code);
    }
    object(
        vec![program("looper", "xdp", insns, vec![(sub + 1, 0)])],
        vec![counts_map()],
    )
}

/// Several programs: two share the `xdp` section, one is tc (`classifier`, as luabpf writes it).
pub fn several_programs() -> Object {
    let pass = vec![Insn::mov64_imm(R0, 2), Insn::exit()];
    let mut with_map = Insn::ld_map_fd(R1).to_vec();
    with_map.extend([Insn::mov64_imm(R0, 1), Insn::exit()]);
    object(
        vec![
            program("first", "xdp", pass.clone(), vec![]),
            program(
                "shaper",
                "classifier",
                vec![Insn::mov64_imm(R0, 0), Insn::exit()],
                vec![],
            ),
            program("second", "xdp", with_map, vec![(0, 1)]),
        ],
        vec![counts_map(), blocked_map()],
    )
}

/// A netfilter program with a kfunc call (imm 0 until a loader patches it).
pub fn netfilter_with_kfunc() -> Object {
    let insns = vec![Insn::call_kfunc(0), Insn::mov64_imm(R0, 1), Insn::exit()];
    let mut p = program("nf", "netfilter", insns, vec![]);
    p.kfunc_relocs = vec![(0, "bpf_dynptr_from_skb".into())];
    object(vec![p], vec![])
}

/// An XDP program whose entry calls a separately verified function
/// `int f(struct xdp_md *ctx, u64 x, u64 *out)`: f reads the first packet byte, adds `x` and
/// stores the sum in `*out`; the entry passes its context, `x` and the address of a zeroed u64
/// on its stack, then returns that u64 as the verdict (packet byte 0x01, x = 1: XDP_PASS).
///
/// Without `null_check`, f stores through `out` without testing it first: fine when f is
/// verified with its caller (which passes a stack address), refused when it is verified on its
/// own, where `out` may be NULL. `global` lists f in `subfunctions`; otherwise it is static.
pub fn xdp_with_global_function(x: i32, null_check: bool, global: bool) -> Object {
    let entry = vec![
        Insn::store_imm(Size::DW, R10, -8, 0), // 0: *(u64 *)(fp-8) = 0
        Insn::mov64_imm(R2, x),                // 1: r2 = x (r1 still holds ctx)
        Insn::mov64_reg(R3, R10),              // 2
        Insn::alu64_imm(AluOp::Add, R3, -8),   // 3: r3 = fp-8
        Insn::call_local(0),                   // 4: call f (patched below)
        Insn::load(Size::DW, R0, R10, -8),     // 5: r0 = *(u64 *)(fp-8)
        Insn::exit(),                          // 6
    ];
    // f's body, with the jumps to `out` (r0 = 0; exit) patched once its slot is known.
    let mut f = Vec::new();
    let mut to_out = Vec::new();
    if null_check {
        to_out.push(f.len());
        f.push(Insn::jmp_imm(JmpOp::Jeq, R3, 0, 0)); // if out == NULL goto out
    }
    f.push(Insn::load(Size::W, R4, R1, 0)); // r4 = ctx->data
    f.push(Insn::load(Size::W, R5, R1, 4)); // r5 = ctx->data_end
    f.push(Insn::mov64_reg(R0, R4));
    f.push(Insn::alu64_imm(AluOp::Add, R0, 1));
    to_out.push(f.len());
    f.push(Insn::jmp_reg(JmpOp::Jgt, R0, R5, 0)); // if data + 1 > data_end goto out
    f.push(Insn::load(Size::B, R4, R4, 0)); // r4 = data[0]
    f.push(Insn::alu64_reg(AluOp::Add, R4, R2)); // r4 += x
    f.push(Insn::store_reg(Size::DW, R3, 0, R4)); // *out = r4
    let out = f.len();
    f.push(Insn::mov64_imm(R0, 0));
    f.push(Insn::exit());
    for j in to_out {
        f[j].off = (out - j - 1) as i16;
    }
    let start = entry.len();
    let mut insns = entry;
    insns[4].imm = (start - 4 - 1) as i32;
    insns.extend(f);
    let mut p = program("entry", "xdp", insns, vec![]);
    if global {
        p.subfunctions = vec![SubFunction {
            start,
            name: "f".into(),
            params: vec![ParamType::Ctx, ParamType::Scalar, ParamType::ScalarPtr],
        }];
    }
    object(vec![p], vec![])
}

/// A tc program (section `classifier`) whose entry calls a global `tc_f(ctx, out)` that
/// stores `skb->len` in `*out`; the entry returns TC_ACT_OK. Exercises the `__sk_buff`
/// context type of global functions.
pub fn tc_with_global_function() -> Object {
    let insns = vec![
        Insn::store_imm(Size::DW, R10, -8, 0), // 0: *(u64 *)(fp-8) = 0
        Insn::mov64_reg(R2, R10),              // 1
        Insn::alu64_imm(AluOp::Add, R2, -8),   // 2: r2 = fp-8 (r1 still holds ctx)
        Insn::call_local(3),                   // 3: call tc_f (slot 7)
        Insn::load(Size::DW, R1, R10, -8),     // 4: r1 = skb->len, as tc_f stored it
        Insn::mov64_imm(R0, 0),                // 5: TC_ACT_OK
        Insn::exit(),                          // 6
        Insn::jmp_imm(JmpOp::Jeq, R2, 0, 2),   // 7: tc_f: if out == NULL goto 10
        Insn::load(Size::W, R3, R1, 0),        // 8: r3 = skb->len
        Insn::store_reg(Size::DW, R2, 0, R3),  // 9: *out = r3
        Insn::mov64_imm(R0, 0),                // 10
        Insn::exit(),                          // 11
    ];
    let mut p = program("shaper", "classifier", insns, vec![]);
    p.subfunctions = vec![SubFunction {
        start: 7,
        name: "tc_f".into(),
        params: vec![ParamType::Ctx, ParamType::ScalarPtr],
    }];
    object(vec![p], vec![])
}
