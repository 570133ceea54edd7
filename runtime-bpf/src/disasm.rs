//! Instructions as text, in the notation of the kernel verifier log and `bpftool prog dump`
//! (`r1 = *(u32 *)(r6 +0)`, `if r2 > r3 goto +5`, `call bpf_map_lookup_elem#1`), so that a
//! listing from `luabpf` reads like the verifier's complaint about it.
//!
//! Departures from the kernel's printer, for reading without the opcode column: jump targets
//! are `+N` (the kernel writes `pc+N`), immediates of jumps are decimal, and `ld_imm64` ends in
//! ` ll` as in llvm-objdump. Any byte pattern prints something; nothing panics.

use std::collections::HashMap;

use crate::helpers::helper_name;
use crate::isa::*;
use crate::object::{MapSpec, ProgramCode};

/// Names to show instead of raw immediates, by slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names<'a> {
    /// `ld_imm64` slot -> map name (`r1 = map[blocked] ll`).
    pub maps: HashMap<usize, &'a str>,
    /// kfunc `call` slot -> kernel function name.
    pub kfuncs: HashMap<usize, &'a str>,
}

/// One line of a listing: the slot of the instruction and its text (an `ld_imm64` is one line
/// for two slots, so slots are not line numbers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub slot: usize,
    pub text: String,
}

/// One line per instruction.
pub fn disassemble(insns: &[Insn]) -> Vec<String> {
    texts(listing(insns, &Names::default()))
}

/// One line per instruction, map loads shown by map name.
pub fn disassemble_with_maps(insns: &[Insn], map_relocs: &[(usize, usize)], maps: &[MapSpec]) -> Vec<String> {
    let mut names = Names::default();
    for &(slot, map) in map_relocs {
        if let Some(m) = maps.get(map) {
            names.maps.insert(slot, m.name.as_str());
        }
    }
    texts(listing(insns, &names))
}

/// A program with its map and kfunc names.
pub fn disassemble_program(program: &ProgramCode, maps: &[MapSpec]) -> Vec<String> {
    texts(listing(&program.insns, &program_names(program, maps)))
}

/// The names a program's relocations give to its slots.
pub fn program_names<'a>(program: &'a ProgramCode, maps: &'a [MapSpec]) -> Names<'a> {
    let mut names = Names::default();
    for &(slot, map) in &program.map_relocs {
        if let Some(m) = maps.get(map) {
            names.maps.insert(slot, m.name.as_str());
        }
    }
    for (slot, name) in &program.kfunc_relocs {
        names.kfuncs.insert(*slot, name.as_str());
    }
    names
}

/// The listing with the slot of each line.
pub fn listing(insns: &[Insn], names: &Names<'_>) -> Vec<Line> {
    let mut out = Vec::with_capacity(insns.len());
    let mut slot = 0;
    while let Some(insn) = insns.get(slot) {
        let next = insn.is_ld_imm64().then(|| insns.get(slot + 1)).flatten();
        out.push(Line {
            slot,
            text: text(insn, next, slot, names),
        });
        slot += if insn.is_ld_imm64() { 2 } else { 1 };
    }
    out
}

fn texts(lines: Vec<Line>) -> Vec<String> {
    lines.into_iter().map(|l| l.text).collect()
}

/// The text of one instruction (`next` is the second slot of an `ld_imm64`).
fn text(insn: &Insn, next: Option<&Insn>, slot: usize, names: &Names<'_>) -> String {
    let t = match insn.class() {
        BPF_ALU | BPF_ALU64 => alu(insn),
        BPF_JMP | BPF_JMP32 => jmp(insn, slot, names),
        BPF_LDX => ldx(insn),
        BPF_ST => st(insn),
        BPF_STX => stx(insn),
        _ => ld(insn, next, slot, names),
    };
    t.unwrap_or_else(|| {
        format!(
            "invalid insn code={:#04x} dst={} src={} off={} imm={}",
            insn.code, insn.dst, insn.src, insn.off, insn.imm
        )
    })
}

fn reg(n: u8, w32: bool) -> String {
    format!("{}{n}", if w32 { 'w' } else { 'r' })
}

fn size_name(code: u8) -> &'static str {
    match code & 0x18 {
        BPF_B => "u8",
        BPF_H => "u16",
        BPF_W => "u32",
        _ => "u64",
    }
}

/// `(r6 +0)`: the kernel's `%+d` form of a memory operand.
fn mem(base: u8, off: i16) -> String {
    format!("(r{base} {off:+})")
}

fn alu_op(op: u8) -> Option<&'static str> {
    Some(match op {
        0x00 => "+=",
        0x10 => "-=",
        0x20 => "*=",
        0x30 => "/=",
        0x40 => "|=",
        0x50 => "&=",
        0x60 => "<<=",
        0x70 => ">>=",
        0x90 => "%=",
        0xa0 => "^=",
        0xb0 => "=",
        0xc0 => "s>>=",
        _ => return None,
    })
}

fn alu(insn: &Insn) -> Option<String> {
    let w = insn.class() == BPF_ALU;
    let op = insn.code & 0xf0;
    let dst = reg(insn.dst, w);
    let by_reg = insn.code & BPF_X != 0;
    if op == AluOp::End as u8 {
        return Some(if w {
            let order = if by_reg { "be" } else { "le" };
            format!("r{} = {order}{} r{}", insn.dst, insn.imm, insn.dst)
        } else {
            format!("r{} = bswap{} r{}", insn.dst, insn.imm, insn.dst)
        });
    }
    if op == AluOp::Neg as u8 {
        return Some(format!("{dst} = -{dst}"));
    }
    let signed = insn.off == 1 && (op == AluOp::Div as u8 || op == AluOp::Mod as u8);
    let sym = match (signed, op) {
        (true, 0x30) => "s/=",
        (true, _) => "s%=",
        _ => alu_op(op)?,
    };
    if !by_reg {
        return Some(format!("{dst} {sym} {}", insn.imm));
    }
    let src = reg(insn.src, w);
    if op == AluOp::Mov as u8 && !w && insn.off == 1 {
        // addr_space_cast (arena pointers, kernel 6.9+).
        let (to, from) = ((insn.imm as u32) >> 16, insn.imm as u32 & 0xffff);
        return Some(format!("{dst} = addr_space_cast({src}, {to}, {from})"));
    }
    let cast = match (op == AluOp::Mov as u8, insn.off) {
        (true, 8) => "(s8)",
        (true, 16) => "(s16)",
        (true, 32) => "(s32)",
        _ => "",
    };
    Some(format!("{dst} {sym} {cast}{src}"))
}

fn jmp_op(op: u8) -> Option<&'static str> {
    Some(match op {
        0x10 => "==",
        0x20 => ">",
        0x30 => ">=",
        0x40 => "&",
        0x50 => "!=",
        0x60 => "s>",
        0x70 => "s>=",
        0xa0 => "<",
        0xb0 => "<=",
        0xc0 => "s<",
        0xd0 => "s<=",
        _ => return None,
    })
}

fn jmp(insn: &Insn, slot: usize, names: &Names<'_>) -> Option<String> {
    let w = insn.class() == BPF_JMP32;
    let op = insn.code & 0xf0;
    match (w, op) {
        (false, 0x00) => Some(format!("goto {:+}", insn.off)),
        (true, 0x00) => Some(format!("gotol {:+}", insn.imm)),
        (false, 0x80) => Some(call(insn, slot, names)),
        (false, 0x90) => Some("exit".to_string()),
        (false, 0xe0) if insn.src == 0 => Some(format!("may_goto {:+}", insn.off)),
        _ => {
            let cmp = jmp_op(op)?;
            let rhs = if insn.code & BPF_X != 0 {
                reg(insn.src, w)
            } else {
                insn.imm.to_string()
            };
            Some(format!("if {} {cmp} {rhs} goto {:+}", reg(insn.dst, w), insn.off))
        }
    }
}

fn call(insn: &Insn, slot: usize, names: &Names<'_>) -> String {
    match insn.src {
        BPF_PSEUDO_CALL => format!("call pc{:+}", insn.imm),
        BPF_PSEUDO_KFUNC_CALL => match names.kfuncs.get(&slot) {
            Some(name) => format!("call {name}"),
            None => format!("call kfunc#{}", insn.imm),
        },
        _ => format!("call {}#{}", helper_name(insn.imm).unwrap_or("unknown"), insn.imm),
    }
}

fn ldx(insn: &Insn) -> Option<String> {
    let sign = match insn.code & 0xe0 {
        BPF_MEM => "u",
        0x80 => "s", // BPF_MEMSX: sign-extending load (cpu v4)
        _ => return None,
    };
    let size = &size_name(insn.code)[1..];
    Some(format!("r{} = *({sign}{size} *){}", insn.dst, mem(insn.src, insn.off)))
}

fn st(insn: &Insn) -> Option<String> {
    (insn.code & 0xe0 == BPF_MEM).then(|| {
        format!(
            "*({} *){} = {}",
            size_name(insn.code),
            mem(insn.dst, insn.off),
            insn.imm
        )
    })
}

fn stx(insn: &Insn) -> Option<String> {
    let target = format!("({} *){}", size_name(insn.code), mem(insn.dst, insn.off));
    let src = format!("r{}", insn.src);
    match insn.code & 0xe0 {
        BPF_MEM => Some(format!("*{target} = {src}")),
        BPF_ATOMIC => atomic(insn, &target, &src),
        _ => None,
    }
}

fn atomic(insn: &Insn, target: &str, src: &str) -> Option<String> {
    let bits = if insn.code & 0x18 == BPF_DW { "64" } else { "" };
    let name = |op: i32| match op {
        0x00 => Some(("add", "+=")),
        0x40 => Some(("or", "|=")),
        0x50 => Some(("and", "&=")),
        0xa0 => Some(("xor", "^=")),
        _ => None,
    };
    Some(match insn.imm {
        0xe1 => format!("{src} = atomic{bits}_xchg({target}, {src})"),
        0xf1 => format!("r0 = atomic{bits}_cmpxchg({target}, r0, {src})"),
        // load_acquire loads into dst from src (the reverse of the other atomics).
        0x100 => format!(
            "r{} = load_acquire(({} *){})",
            insn.dst,
            size_name(insn.code),
            mem(insn.src, insn.off)
        ),
        0x110 => format!("store_release({target}, {src})"),
        imm if imm & 1 == 1 => {
            let (op, _) = name(imm & !1)?;
            format!("{src} = atomic{bits}_fetch_{op}({target}, {src})")
        }
        imm => format!("lock *{target} {} {src}", name(imm)?.1),
    })
}

fn ld(insn: &Insn, next: Option<&Insn>, slot: usize, names: &Names<'_>) -> Option<String> {
    if !insn.is_ld_imm64() {
        return legacy_packet_load(insn);
    }
    let dst = format!("r{}", insn.dst);
    let Some(next) = next else {
        return Some(format!("{dst} = {:#x} ll (second slot missing)", insn.imm as u32));
    };
    let value = ((next.imm as u32 as u64) << 32) | insn.imm as u32 as u64;
    let rhs = match insn.src {
        // A relocated load of a map is a map whatever src_reg says (clang leaves it 0).
        0 | BPF_PSEUDO_MAP_FD if names.maps.contains_key(&slot) => {
            format!("map[{}]", names.maps[&slot])
        }
        0 => format!("{value:#x}"),
        BPF_PSEUDO_MAP_FD => format!("map[fd:{}]", insn.imm),
        2 => match names.maps.get(&slot) {
            Some(name) => format!("map[{name}]+{}", next.imm),
            None => format!("map_value[fd:{}]+{}", insn.imm, next.imm),
        },
        3 => format!("btf_id#{}", insn.imm),
        4 => format!("func pc{:+}", insn.imm),
        5 => format!("map[idx:{}]", insn.imm),
        6 => format!("map_value[idx:{}]+{}", insn.imm, next.imm),
        _ => return None,
    };
    Some(format!("{dst} = {rhs} ll"))
}

/// `BPF_LD | BPF_ABS/IND`: the legacy socket-filter packet loads into r0.
fn legacy_packet_load(insn: &Insn) -> Option<String> {
    let size = size_name(insn.code);
    match insn.code & 0xe0 {
        0x20 => Some(format!("r0 = *({size} *)skb[{}]", insn.imm)),
        0x40 => Some(format!("r0 = *({size} *)skb[r{} + {}]", insn.src, insn.imm)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{Format, MapKind};

    fn one(insn: Insn) -> String {
        disassemble(&[insn]).remove(0)
    }

    #[test]
    fn alu() {
        assert_eq!(one(Insn::alu64_reg(AluOp::Add, R0, R1)), "r0 += r1");
        assert_eq!(one(Insn::alu32_reg(AluOp::Mov, R1, R2)), "w1 = w2");
        assert_eq!(one(Insn::mov64_imm(R0, 2)), "r0 = 2");
        assert_eq!(one(Insn::alu64_imm(AluOp::Add, R1, -1)), "r1 += -1");
        assert_eq!(one(Insn::alu32_imm(AluOp::Lsh, R3, 4)), "w3 <<= 4");
        assert_eq!(one(Insn::alu64_imm(AluOp::Arsh, R3, 63)), "r3 s>>= 63");
        assert_eq!(one(Insn::alu64_reg_signed(AluOp::Div, R1, R2)), "r1 s/= r2");
        assert_eq!(one(Insn::alu64_reg_signed(AluOp::Mod, R1, R2)), "r1 s%= r2");
        assert_eq!(one(Insn::neg64(R4)), "r4 = -r4");
        assert_eq!(one(Insn::to_be(R1, 16)), "r1 = be16 r1");
        assert_eq!(one(Insn::to_le(R1, 32)), "r1 = le32 r1");
        assert_eq!(
            one(Insn::new(BPF_ALU64 | AluOp::End as u8, 1, 0, 0, 64)),
            "r1 = bswap64 r1"
        );
        assert_eq!(
            one(Insn::new(BPF_ALU64 | BPF_X | AluOp::Mov as u8, 1, 2, 8, 0)),
            "r1 = (s8)r2"
        );
    }

    #[test]
    fn memory() {
        assert_eq!(one(Insn::load(Size::W, R1, R6, 0)), "r1 = *(u32 *)(r6 +0)");
        assert_eq!(one(Insn::load(Size::B, R2, R10, -8)), "r2 = *(u8 *)(r10 -8)");
        assert_eq!(one(Insn::store_reg(Size::DW, R10, -16, R1)), "*(u64 *)(r10 -16) = r1");
        assert_eq!(one(Insn::store_imm(Size::H, R10, -2, 7)), "*(u16 *)(r10 -2) = 7");
        assert_eq!(one(Insn::atomic_add(Size::DW, R0, 0, R1)), "lock *(u64 *)(r0 +0) += r1");
        assert_eq!(one(Insn::atomic_add(Size::W, R0, 4, R1)), "lock *(u32 *)(r0 +4) += r1");
        let fetch = Insn::new(BPF_STX | BPF_ATOMIC | BPF_DW, 0, 1, 0, 0x01);
        assert_eq!(one(fetch), "r1 = atomic64_fetch_add((u64 *)(r0 +0), r1)");
        let sx = Insn::new(BPF_LDX | 0x80 | BPF_H, 1, 2, 4, 0);
        assert_eq!(one(sx), "r1 = *(s16 *)(r2 +4)");
    }

    #[test]
    fn jumps_and_calls() {
        assert_eq!(one(Insn::jmp_reg(JmpOp::Jgt, R2, R3, 5)), "if r2 > r3 goto +5");
        assert_eq!(one(Insn::jmp_imm(JmpOp::Jsle, R1, -1, -3)), "if r1 s<= -1 goto -3");
        let w = Insn::new(BPF_JMP32 | BPF_X | JmpOp::Jne as u8, 1, 2, 1, 0);
        assert_eq!(one(w), "if w1 != w2 goto +1");
        assert_eq!(one(Insn::ja(2)), "goto +2");
        assert_eq!(one(Insn::may_goto(3)), "may_goto +3");
        assert_eq!(one(Insn::call_helper(1)), "call bpf_map_lookup_elem#1");
        assert_eq!(one(Insn::call_helper(9999)), "call unknown#9999");
        assert_eq!(one(Insn::call_local(7)), "call pc+7");
        assert_eq!(one(Insn::call_kfunc(0)), "call kfunc#0");
        assert_eq!(one(Insn::exit()), "exit");
    }

    #[test]
    fn ld_imm64_is_one_line() {
        let mut p = Insn::ld_imm64(R0, 0x1122334455667788).to_vec();
        p.extend(Insn::ld_map_fd(R1));
        p.push(Insn::exit());
        assert_eq!(
            disassemble(&p),
            ["r0 = 0x1122334455667788 ll", "r1 = map[fd:0] ll", "exit"]
        );
        let maps = [MapSpec {
            name: "blocklist".into(),
            kind: MapKind::Hash,
            key: Format::Chars(64),
            value: Format::Int {
                bytes: 8,
                signed: false,
            },
            max_entries: 1,
            flags: 0,
            init: vec![],
        }];
        let lines = disassemble_with_maps(&p, &[(2, 0)], &maps);
        assert_eq!(lines[1], "r1 = map[blocklist] ll");
        let slots: Vec<usize> = listing(&p, &Names::default()).iter().map(|l| l.slot).collect();
        assert_eq!(slots, [0, 2, 4]);
        assert_eq!(disassemble(&p[..1]), ["r0 = 0x55667788 ll (second slot missing)"]);
    }

    #[test]
    fn every_byte_pattern_prints() {
        for code in 0..=255u8 {
            for src in [0u8, 1, 2, 4, 7] {
                for imm in [0, 1, 0xe1, 0xf1, 0x100, 0x110, -1, 0x41] {
                    let insn = Insn::new(code, 3, src, 1, imm);
                    for line in disassemble(&[insn, insn]) {
                        assert!(!line.is_empty());
                    }
                }
            }
        }
        assert!(one(Insn::new(0xff, 0, 0, 0, 0)).starts_with("invalid insn"));
    }
}
