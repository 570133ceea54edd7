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
        let loc = SourceLoc {
            file: 0,
            line,
            col: 3,
        };
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

pub fn program(
    name: &str,
    section: &str,
    insns: Vec<Insn>,
    map_relocs: Vec<(usize, usize)>,
) -> ProgramCode {
    ProgramCode {
        name: name.into(),
        section: section.into(),
        locs: locs(&insns, 1),
        insns,
        map_relocs,
        kfunc_relocs: vec![],
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

/// Several programs: two share the `xdp` section, one is tc.
pub fn several_programs() -> Object {
    let pass = vec![Insn::mov64_imm(R0, 2), Insn::exit()];
    let mut with_map = Insn::ld_map_fd(R1).to_vec();
    with_map.extend([Insn::mov64_imm(R0, 1), Insn::exit()]);
    object(
        vec![
            program("first", "xdp", pass.clone(), vec![]),
            program(
                "shaper",
                "tc",
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
