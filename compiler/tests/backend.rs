//! Back-end tests: liveness, register allocation and emission on hand-built IR.
//!
//! Every case is a complete XDP program (see `xdp_case`): the body computes some values, then
//! the harness stores them as little-endian u64s at the start of the packet and returns
//! XDP_PASS. Here they are checked structurally (`check_code`: a small abstract interpreter
//! that refuses what the verifier would refuse about register and spill-slot initialisation,
//! stack offsets and alignment, jump targets, relocations). The same cases are loaded into
//! the kernel and run by `tests/tests/backend_kernel.rs`, which includes this file.

#![allow(dead_code)]

use luabpf_compiler::emit::{emit, EmitError};
use luabpf_compiler::ir::{BinOp, Block, Function, Inst, Operand, Terminator, Value, ValueKind};
use luabpf_compiler::liveness::Liveness;
use luabpf_compiler::regalloc::{allocate, AllocError, Allocation, Loc};
use runtime_bpf::isa::{
    Insn, JmpOp, Reg, Size, BPF_ALU, BPF_ALU64, BPF_ATOMIC, BPF_DW, BPF_JMP, BPF_JMP32, BPF_LD, BPF_LDX, BPF_MEM,
    BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_FD, BPF_ST, BPF_STX, BPF_X,
};
use runtime_bpf::object::{Format, MapKind, MapSpec, ProgramCode, SourceLoc};

// ---- an IR builder ------------------------------------------------------------------------

pub struct Fb {
    pub f: Function,
    pub cur: Block,
    line: u32,
}

pub fn imm(i: i64) -> Operand {
    Operand::Imm(i)
}

impl Fb {
    pub fn new(name: &str) -> Fb {
        let f = Function::new(name);
        let cur = f.entry;
        Fb { f, cur, line: 0 }
    }
    fn loc(&mut self) -> SourceLoc {
        self.line += 1;
        SourceLoc {
            file: 0,
            line: self.line,
            col: 1,
        }
    }
    pub fn ins(&mut self, i: Inst) {
        let loc = self.loc();
        self.f.blocks[self.cur].insts.push((i, loc));
    }
    pub fn term(&mut self, t: Terminator) {
        let loc = self.loc();
        self.f.blocks[self.cur].term = (t, loc);
    }
    pub fn scalar(&mut self) -> Value {
        self.f.new_value(ValueKind::Scalar)
    }
    pub fn ptr(&mut self) -> Value {
        self.f.new_value(ValueKind::Pointer)
    }
    pub fn block(&mut self) -> Block {
        self.f.new_block()
    }
    pub fn switch_to(&mut self, b: Block) {
        self.cur = b;
    }
    pub fn konst(&mut self, imm: i64) -> Value {
        let dst = self.scalar();
        self.ins(Inst::Const { dst, imm });
        dst
    }
    pub fn bin(&mut self, op: BinOp, a: Value, b: impl Into<Operand>) -> Value {
        let dst = self.scalar();
        self.ins(Inst::Bin {
            op,
            dst,
            a,
            b: b.into(),
        });
        dst
    }
    pub fn bin_to(&mut self, dst: Value, op: BinOp, a: Value, b: impl Into<Operand>) {
        self.ins(Inst::Bin {
            op,
            dst,
            a,
            b: b.into(),
        });
    }
    pub fn call(&mut self, helper: i32, args: Vec<Operand>) -> Value {
        let dst = self.scalar();
        self.ins(Inst::Call {
            helper,
            args,
            dst: Some(dst),
        });
        dst
    }
    pub fn jump(&mut self, b: Block) {
        self.term(Terminator::Jump(b));
    }
    pub fn branch(&mut self, op: JmpOp, a: Value, b: impl Into<Operand>, then_: Block, else_: Block) {
        self.term(Terminator::Branch {
            op,
            a,
            b: b.into(),
            then_,
            else_,
        });
    }
}

// ---- cases --------------------------------------------------------------------------------

/// What a result slot of the output packet must hold.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    Eq(u64),
    /// An Internet checksum (`bpf_csum_diff` result) equal to this once folded to 16 bits.
    Csum(u16),
    AtLeast(u64),
}

pub struct Case {
    pub name: String,
    pub f: Function,
    /// The u64s at packet offsets 0, 8, ... after the run.
    pub expect: Vec<Expect>,
    /// The expected program return value.
    pub verdict: u32,
    /// Maps the program refers to (`MapAddr { map: i }` is `maps[i]`).
    pub maps: Vec<MapSpec>,
}

pub const XDP_PASS: u32 = 2;
pub const XDP_DROP: u32 = 1;
/// Packet length the kernel tests use (at least 8 bytes per result).
pub const PACKET_LEN: usize = 512;

/// A case whose body leaves its results in values; the harness stores them into the packet.
pub fn xdp_case(name: &str, body: impl FnOnce(&mut Fb, Value) -> Vec<(Value, Expect)>) -> Case {
    let mut b = Fb::new(name);
    let ctx = b.ptr();
    b.ins(Inst::Arg { dst: ctx, index: 0 });
    let results = body(&mut b, ctx);
    assert!(results.len() * 8 <= PACKET_LEN, "{name}: too many results");
    let data = b.ptr();
    b.ins(Inst::Load {
        dst: data,
        base: ctx,
        off: 0,
        size: Size::W,
    });
    let data_end = b.ptr();
    b.ins(Inst::Load {
        dst: data_end,
        base: ctx,
        off: 4,
        size: Size::W,
    });
    let end = b.ptr();
    b.ins(Inst::Bin {
        op: BinOp::Add,
        dst: end,
        a: data,
        b: imm(8 * results.len() as i64),
    });
    let store = b.block();
    let fail = b.block();
    b.branch(JmpOp::Jgt, end, end_operand(data_end), fail, store);
    b.switch_to(store);
    for (k, (v, _)) in results.iter().enumerate() {
        b.ins(Inst::Store {
            base: data,
            off: 8 * k as i16,
            src: Operand::Value(*v),
            size: Size::DW,
        });
    }
    b.term(Terminator::Return(imm(XDP_PASS as i64)));
    b.switch_to(fail);
    b.term(Terminator::Return(imm(XDP_DROP as i64)));
    Case {
        name: name.into(),
        f: b.f,
        expect: results.iter().map(|r| r.1).collect(),
        verdict: XDP_PASS,
        maps: vec![],
    }
}

fn end_operand(v: Value) -> Operand {
    Operand::Value(v)
}

/// A case whose body's value is the program's return value (the XDP verdict register).
pub fn verdict_case(name: &str, verdict: u32, body: impl FnOnce(&mut Fb, Value) -> Operand) -> Case {
    let mut b = Fb::new(name);
    let ctx = b.ptr();
    b.ins(Inst::Arg { dst: ctx, index: 0 });
    let r = body(&mut b, ctx);
    b.term(Terminator::Return(r));
    Case {
        name: name.into(),
        f: b.f,
        expect: vec![],
        verdict,
        maps: vec![],
    }
}

/// `for i = 1, 10 do s = s + i end`.
fn sum_loop(b: &mut Fb) -> Value {
    let i = b.konst(1);
    let s = b.konst(0);
    let head = b.block();
    let body = b.block();
    let exit = b.block();
    b.jump(head);
    b.switch_to(head);
    b.branch(JmpOp::Jgt, i, imm(10), exit, body);
    b.switch_to(body);
    b.bin_to(s, BinOp::Add, s, i);
    b.bin_to(i, BinOp::Add, i, imm(1));
    b.jump(head);
    b.switch_to(exit);
    s
}

pub fn case_sum_loop() -> Case {
    xdp_case("sum_loop", |b, _| {
        let s = sum_loop(b);
        vec![(s, Expect::Eq(55))]
    })
}

pub fn case_sum_loop_verdict() -> Case {
    verdict_case("sum_loop_verdict", 55, |b, _| Operand::Value(sum_loop(b)))
}

/// 24 constants and 24 products all live at once, then folded: many spills, the ctx pointer
/// among them (its interval is the longest).
pub fn case_spills() -> Case {
    const N: usize = 24;
    let cval = |k: usize| (k as i64) * 0x1111 + 7;
    let mut acc_e: u64 = cval(0) as u64;
    let mut w_e = Vec::new();
    for k in 0..N {
        w_e.push((cval(k) as u64).wrapping_mul(cval((k + 1) % N) as u64));
    }
    for (k, w) in w_e.iter().enumerate() {
        acc_e = (acc_e.wrapping_mul(31) ^ w).wrapping_add(cval(k) as u64);
    }
    let last_w = w_e[N - 1];
    xdp_case("spills", move |b, _| {
        let vs: Vec<Value> = (0..N).map(|k| b.konst(cval(k))).collect();
        let ws: Vec<Value> = (0..N).map(|k| b.bin(BinOp::Mul, vs[k], vs[(k + 1) % N])).collect();
        let acc = b.scalar();
        b.ins(Inst::Mov { dst: acc, src: vs[0] });
        for k in 0..N {
            b.bin_to(acc, BinOp::Mul, acc, imm(31));
            b.bin_to(acc, BinOp::Xor, acc, ws[k]);
            b.bin_to(acc, BinOp::Add, acc, vs[k]);
        }
        vec![
            (acc, Expect::Eq(acc_e)),
            (vs[3], Expect::Eq(cval(3) as u64)),
            (ws[N - 1], Expect::Eq(last_w)),
        ]
    })
}

/// Values defined before helper calls and used after them must survive the clobber of r1-r5.
pub fn case_across_call() -> Case {
    xdp_case("across_call", |b, _| {
        let v = b.konst(1_234_567);
        let u = b.konst(0x1_0000_0001);
        let t1 = b.call(5, vec![]); // bpf_ktime_get_ns
        let w = b.bin(BinOp::Mul, v, imm(2));
        let t2 = b.call(5, vec![]);
        let d = b.bin(BinOp::Sub, t2, t1);
        let ok = b.konst(0);
        let yes = b.block();
        let join = b.block();
        b.branch(JmpOp::Jslt, d, imm(0), join, yes);
        b.switch_to(yes);
        b.ins(Inst::Const { dst: ok, imm: 1 });
        b.jump(join);
        b.switch_to(join);
        let sum = b.bin(BinOp::Add, v, w);
        let nz = b.konst(0);
        let set = b.block();
        let done = b.block();
        b.branch(JmpOp::Jne, t1, imm(0), set, done);
        b.switch_to(set);
        b.ins(Inst::Const { dst: nz, imm: 1 });
        b.jump(done);
        b.switch_to(done);
        vec![
            (sum, Expect::Eq(3 * 1_234_567)),
            (u, Expect::Eq(0x1_0000_0001)),
            (ok, Expect::Eq(1)),
            (nz, Expect::Eq(1)),
            (t1, Expect::AtLeast(1)),
        ]
    })
}

fn csum_fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// One's complement sum of `~from` and `to` (32-bit little-endian words) plus `seed`, folded.
fn csum_diff_expect(from: &[u8], to: &[u8], seed: u32) -> u16 {
    let mut s: u64 = seed as u64;
    for c in from.chunks(4) {
        s += !u32::from_le_bytes(c.try_into().unwrap()) as u64;
    }
    for c in to.chunks(4) {
        s += u32::from_le_bytes(c.try_into().unwrap()) as u64;
    }
    csum_fold(s)
}

/// `bpf_csum_diff(from, 8, to, 8, seed)`: five arguments, two stack pointers. The second call
/// takes its sizes and seed from values.
pub fn case_five_args() -> Case {
    let from: Vec<u8> = [0x11223344u32.to_le_bytes(), 0x55667788u32.to_le_bytes()].concat();
    let to = 0x0102030405060708u64.to_le_bytes().to_vec();
    let e1 = csum_diff_expect(&from, &to, 0x1234);
    let e2 = csum_diff_expect(&to, &from, 0xfffe);
    xdp_case("five_args", move |b, _| {
        let a = b.f.new_slot(8, 8);
        let t = b.f.new_slot(8, 4);
        b.ins(Inst::StoreSlot {
            slot: a,
            off: 0,
            src: imm(0x11223344),
            size: Size::W,
        });
        b.ins(Inst::StoreSlot {
            slot: a,
            off: 4,
            src: imm(0x55667788),
            size: Size::W,
        });
        b.ins(Inst::StoreSlot {
            slot: t,
            off: 0,
            src: imm(0x0102030405060708),
            size: Size::DW,
        });
        let pa = b.ptr();
        b.ins(Inst::SlotAddr {
            dst: pa,
            slot: a,
            off: 0,
        });
        let pt = b.ptr();
        b.ins(Inst::SlotAddr {
            dst: pt,
            slot: t,
            off: 0,
        });
        let r1 = b.call(28, vec![pa.into(), imm(8), pt.into(), imm(8), imm(0x1234)]);
        let n = b.konst(8);
        let seed = b.konst(0xfffe);
        // Arguments in swapped order and reused: pt and pa are live across the first call.
        let r2 = b.call(28, vec![pt.into(), n.into(), pa.into(), n.into(), seed.into()]);
        vec![(r1, Expect::Csum(e1)), (r2, Expect::Csum(e2))]
    })
}

pub const IMMS: [i64; 11] = [
    0,
    1,
    -1,
    i32::MAX as i64,
    i32::MIN as i64,
    i32::MAX as i64 + 1,
    u32::MAX as i64,
    i64::MIN,
    i64::MAX,
    0x0123_4567_89ab_cdef,
    -0x8000_0001,
];

pub fn case_imm_consts() -> Case {
    xdp_case("imm_consts", |b, _| {
        IMMS.iter().map(|&i| (b.konst(i), Expect::Eq(i as u64))).collect()
    })
}

/// Wide immediates as ALU operands, comparison operands and stored values.
pub fn case_imm_operands() -> Case {
    let x: i64 = 0x10;
    xdp_case("imm_operands", move |b, _| {
        let v = b.konst(x);
        let add = b.bin(BinOp::Add, v, imm(0x1234_5678_9abc));
        let and = b.bin(BinOp::And, add, imm(0xffff_ffff_0000));
        let sub = b.bin(BinOp::Sub, v, imm(i64::MIN));
        let xor = b.bin(BinOp::Xor, v, imm(-1));
        let mul = b.bin(BinOp::Mul, v, imm(u32::MAX as i64));
        // Branch against a wide immediate, taken and not taken.
        let flags = b.konst(0);
        let big = b.konst(0x1_0000_0000);
        let t1 = b.block();
        let j1 = b.block();
        b.branch(JmpOp::Jeq, big, imm(0x1_0000_0000), t1, j1);
        b.switch_to(t1);
        b.bin_to(flags, BinOp::Or, flags, imm(1));
        b.jump(j1);
        b.switch_to(j1);
        let t2 = b.block();
        let j2 = b.block();
        b.branch(JmpOp::Jgt, big, imm(0x1_0000_0001), t2, j2);
        b.switch_to(t2);
        b.bin_to(flags, BinOp::Or, flags, imm(2));
        b.jump(j2);
        b.switch_to(j2);
        let t3 = b.block();
        let j3 = b.block();
        b.branch(JmpOp::Jsgt, v, imm(-0x1_0000_0000), t3, j3);
        b.switch_to(t3);
        b.bin_to(flags, BinOp::Or, flags, imm(4));
        b.jump(j3);
        b.switch_to(j3);
        vec![
            (add, Expect::Eq((x + 0x1234_5678_9abc) as u64)),
            (and, Expect::Eq(((x + 0x1234_5678_9abc) & 0xffff_ffff_0000) as u64)),
            (sub, Expect::Eq((x as u64).wrapping_sub(i64::MIN as u64))),
            (xor, Expect::Eq(!(x as u64))),
            (mul, Expect::Eq((x as u64).wrapping_mul(u32::MAX as u64))),
            (flags, Expect::Eq(1 | 4)),
        ]
    })
}

/// Stores of immediates of every width into a stack slot, read back.
pub fn case_imm_stores() -> Case {
    xdp_case("imm_stores", |b, _| {
        let s = b.f.new_slot(24, 8);
        b.ins(Inst::StoreSlot {
            slot: s,
            off: 0,
            src: imm(0x0123_4567_89ab_cdef),
            size: Size::DW,
        });
        b.ins(Inst::StoreSlot {
            slot: s,
            off: 8,
            src: imm(-2),
            size: Size::DW,
        });
        b.ins(Inst::StoreSlot {
            slot: s,
            off: 16,
            src: imm(0xdead_beef),
            size: Size::W,
        });
        b.ins(Inst::StoreSlot {
            slot: s,
            off: 20,
            src: imm(0x12345),
            size: Size::H,
        });
        b.ins(Inst::StoreSlot {
            slot: s,
            off: 22,
            src: imm(0x1ff),
            size: Size::B,
        });
        b.ins(Inst::StoreSlot {
            slot: s,
            off: 23,
            src: imm(-1),
            size: Size::B,
        });
        let d0 = b.scalar();
        b.ins(Inst::LoadSlot {
            dst: d0,
            slot: s,
            off: 0,
            size: Size::DW,
        });
        let d1 = b.scalar();
        b.ins(Inst::LoadSlot {
            dst: d1,
            slot: s,
            off: 8,
            size: Size::DW,
        });
        let d2 = b.scalar();
        b.ins(Inst::LoadSlot {
            dst: d2,
            slot: s,
            off: 16,
            size: Size::W,
        });
        let d3 = b.scalar();
        b.ins(Inst::LoadSlot {
            dst: d3,
            slot: s,
            off: 20,
            size: Size::H,
        });
        let d4 = b.scalar();
        b.ins(Inst::LoadSlot {
            dst: d4,
            slot: s,
            off: 22,
            size: Size::B,
        });
        let d5 = b.scalar();
        b.ins(Inst::LoadSlot {
            dst: d5,
            slot: s,
            off: 16,
            size: Size::DW,
        });
        vec![
            (d0, Expect::Eq(0x0123_4567_89ab_cdef)),
            (d1, Expect::Eq(-2i64 as u64)),
            (d2, Expect::Eq(0xdead_beef)),
            (d3, Expect::Eq(0x2345)),
            (d4, Expect::Eq(0xff)),
            (d5, Expect::Eq(0xffff_2345_dead_beef)),
        ]
    })
}

/// Every comparison, taken and not taken, with register, i32 and 64-bit operands; diamonds
/// of both shapes (the `then` arm laid out next, so the condition is negated, and the `else`
/// arm next).
pub fn case_branches() -> Case {
    use JmpOp::*;
    let ops = [Jeq, Jne, Jgt, Jge, Jlt, Jle, Jsgt, Jsge, Jslt, Jsle, Jset];
    let pairs: [(i64, i64); 5] = [(5, 7), (7, 5), (-1, 1), (5, 5), (0x1_0000_0005, 0x1_0000_0006)];
    fn eval(op: JmpOp, a: i64, b: i64) -> bool {
        let (ua, ub) = (a as u64, b as u64);
        match op {
            Jeq => a == b,
            Jne => a != b,
            Jgt => ua > ub,
            Jge => ua >= ub,
            Jlt => ua < ub,
            Jle => ua <= ub,
            Jsgt => a > b,
            Jsge => a >= b,
            Jslt => a < b,
            Jsle => a <= b,
            Jset => ua & ub != 0,
            _ => unreachable!(),
        }
    }
    // (op, pair, b as reg?, shape) -> bit
    let mut combos = Vec::new();
    for (oi, &op) in ops.iter().enumerate() {
        for (pi, &(a, bb)) in pairs.iter().enumerate() {
            for reg in [false, true] {
                combos.push((op, a, bb, reg, (oi + pi) % 2 == 0));
            }
        }
    }
    let mut expect = vec![0u64; combos.len().div_ceil(64)];
    for (k, &(op, a, bb, _, shape_then)) in combos.iter().enumerate() {
        // shape A sets the bit when the condition holds, shape B when it does not.
        if eval(op, a, bb) == shape_then {
            expect[k / 64] |= 1 << (k % 64);
        }
    }
    xdp_case("branches", move |b, _| {
        let masks: Vec<Value> = expect.iter().map(|_| b.konst(0)).collect();
        let avals: Vec<Value> = pairs.iter().map(|p| b.konst(p.0)).collect();
        let bvals: Vec<Value> = pairs.iter().map(|p| b.konst(p.1)).collect();
        for (k, &(op, a, bb, reg, shape_then)) in combos.iter().enumerate() {
            let pi = pairs.iter().position(|p| *p == (a, bb)).unwrap();
            let rhs = if reg { Operand::Value(bvals[pi]) } else { imm(bb) };
            let arm = b.block();
            let join = b.block();
            if shape_then {
                b.branch(op, avals[pi], rhs, arm, join);
            } else {
                b.branch(op, avals[pi], rhs, join, arm);
            }
            b.switch_to(arm);
            let m = masks[k / 64];
            b.bin_to(m, BinOp::Or, m, imm(1i64 << (k % 64)));
            b.jump(join);
            b.switch_to(join);
        }
        masks.iter().zip(&expect).map(|(&m, &e)| (m, Expect::Eq(e))).collect()
    })
}

/// Loads and stores through a pointer to a stack slot, and slot loads/stores.
pub fn case_stack_slots() -> Case {
    xdp_case("stack_slots", |b, _| {
        let small = b.f.new_slot(3, 1);
        let s = b.f.new_slot(16, 8);
        let p = b.ptr();
        b.ins(Inst::SlotAddr {
            dst: p,
            slot: s,
            off: 0,
        });
        let v = b.konst(0xcafe_f00d);
        b.ins(Inst::Store {
            base: p,
            off: 0,
            src: imm(0x1122_3344_5566_7788),
            size: Size::DW,
        });
        b.ins(Inst::Store {
            base: p,
            off: 8,
            src: Operand::Value(v),
            size: Size::W,
        });
        b.ins(Inst::Store {
            base: p,
            off: 12,
            src: imm(0x1ab),
            size: Size::B,
        });
        b.ins(Inst::Store {
            base: p,
            off: 13,
            src: imm(0),
            size: Size::B,
        });
        b.ins(Inst::Store {
            base: p,
            off: 14,
            src: imm(-1),
            size: Size::H,
        });
        b.ins(Inst::StoreSlot {
            slot: small,
            off: 0,
            src: imm(7),
            size: Size::B,
        });
        b.ins(Inst::StoreSlot {
            slot: small,
            off: 1,
            src: Operand::Value(v),
            size: Size::B,
        });
        b.ins(Inst::StoreSlot {
            slot: small,
            off: 2,
            src: imm(9),
            size: Size::B,
        });
        let l0 = b.ptr();
        b.ins(Inst::Load {
            dst: l0,
            base: p,
            off: 0,
            size: Size::DW,
        });
        let l1 = b.scalar();
        b.ins(Inst::Load {
            dst: l1,
            base: p,
            off: 8,
            size: Size::DW,
        });
        let l2 = b.scalar();
        b.ins(Inst::Load {
            dst: l2,
            base: p,
            off: 4,
            size: Size::W,
        });
        let l3 = b.scalar();
        b.ins(Inst::LoadSlot {
            dst: l3,
            slot: small,
            off: 1,
            size: Size::B,
        });
        let q = b.ptr();
        b.ins(Inst::SlotAddr {
            dst: q,
            slot: s,
            off: 12,
        });
        let l4 = b.scalar();
        b.ins(Inst::Load {
            dst: l4,
            base: q,
            off: 0,
            size: Size::B,
        });
        vec![
            (l0, Expect::Eq(0x1122_3344_5566_7788)),
            (l1, Expect::Eq(0xffff_00ab_cafe_f00d)),
            (l2, Expect::Eq(0x1122_3344)),
            (l3, Expect::Eq(0x0d)),
            (l4, Expect::Eq(0xab)),
        ]
    })
}

/// Every ALU operation, with register and immediate operands.
pub fn case_alu() -> Case {
    let a: i64 = -7;
    let bv: i64 = 3;
    let big: i64 = 0x0102_0304_0506_0788;
    xdp_case("alu", move |b, _| {
        let va = b.konst(a);
        let vb = b.konst(bv);
        let vbig = b.konst(big);
        let zero = b.konst(0);
        let mut out: Vec<(Value, Expect)> = Vec::new();
        let mut r = |b: &mut Fb, op: BinOp, x: Value, y: Operand, e: i64| {
            let d = b.bin(op, x, y);
            out.push((d, Expect::Eq(e as u64)));
        };
        use BinOp::*;
        r(b, SDiv, va, vb.into(), -2);
        r(b, SMod, va, vb.into(), -1);
        r(b, SDiv, va, imm(-3), 2);
        r(b, SMod, va, imm(-3), -1);
        r(b, SDiv, va, imm(0), 0);
        r(b, SMod, va, imm(0), a);
        r(b, SDiv, va, zero.into(), 0);
        r(b, UDiv, va, vb.into(), ((a as u64) / 3) as i64);
        r(b, UMod, va, imm(10), ((a as u64) % 10) as i64);
        r(b, UDiv, va, imm(0), 0);
        r(b, UMod, vbig, zero.into(), big);
        r(b, Lsh, vb, imm(62), 3i64 << 62);
        r(b, Lsh, vb, imm(66), 3i64 << 2); // counts are modulo 64
        r(b, Rsh, va, vb.into(), ((a as u64) >> 3) as i64);
        r(b, Arsh, va, imm(1), a >> 1);
        r(b, Arsh, vbig, vb.into(), big >> 3);
        r(b, Sub, vb, va.into(), bv - a);
        r(b, Mul, va, imm(-3), 21);
        r(b, Or, va, imm(0x100), a | 0x100);
        r(b, And, vbig, va.into(), big & a);
        r(b, Xor, vbig, imm(-1), !big);
        // Unary operations.
        let mut un = |b: &mut Fb, mk: &dyn Fn(Value, Value) -> Inst, src: Value, e: i64| {
            let d = b.scalar();
            b.ins(mk(d, src));
            out.push((d, Expect::Eq(e as u64)));
        };
        un(b, &|d, s| Inst::Neg { dst: d, src: s }, va, 7);
        un(
            b,
            &|d, s| Inst::Bswap {
                dst: d,
                src: s,
                bits: 16,
            },
            vbig,
            0x8807,
        );
        un(
            b,
            &|d, s| Inst::Bswap {
                dst: d,
                src: s,
                bits: 32,
            },
            vbig,
            0x8807_0605,
        );
        un(
            b,
            &|d, s| Inst::Bswap {
                dst: d,
                src: s,
                bits: 64,
            },
            vbig,
            big.swap_bytes(),
        );
        un(
            b,
            &|d, s| Inst::Zext {
                dst: d,
                src: s,
                bits: 8,
            },
            va,
            0xf9,
        );
        un(
            b,
            &|d, s| Inst::Zext {
                dst: d,
                src: s,
                bits: 16,
            },
            va,
            0xfff9,
        );
        un(
            b,
            &|d, s| Inst::Zext {
                dst: d,
                src: s,
                bits: 32,
            },
            va,
            0xffff_fff9,
        );
        un(
            b,
            &|d, s| Inst::Sext {
                dst: d,
                src: s,
                bits: 8,
            },
            vbig,
            0x88u8 as i8 as i64,
        );
        un(
            b,
            &|d, s| Inst::Sext {
                dst: d,
                src: s,
                bits: 16,
            },
            vbig,
            0x0788,
        );
        un(
            b,
            &|d, s| Inst::Sext {
                dst: d,
                src: s,
                bits: 32,
            },
            vbig,
            0x0506_0788,
        );
        let m = b.konst(0x8000_0000);
        un(
            b,
            &|d, s| Inst::Sext {
                dst: d,
                src: s,
                bits: 32,
            },
            m,
            0x8000_0000u32 as i32 as i64,
        );
        // dst aliasing b: `x = b - x` style (b's register is free when dst is allocated).
        let t = b.konst(100);
        let u = b.bin(Sub, va, t); // t dies here
        out.push((u, Expect::Eq((a - 100) as u64)));
        let t2 = b.konst(5);
        let u2 = b.bin(Lsh, va, t2);
        out.push((u2, Expect::Eq((a << 5) as u64)));
        out
    })
}

/// An array map: lookup, null check, atomic adds through the value pointer, load.
pub fn case_map_atomic() -> Case {
    let mut c = xdp_case("map_atomic", |b, _| {
        let key = b.f.new_slot(4, 4);
        b.ins(Inst::StoreSlot {
            slot: key,
            off: 0,
            src: imm(0),
            size: Size::W,
        });
        let m = b.ptr();
        b.ins(Inst::MapAddr { dst: m, map: 0 });
        let pk = b.ptr();
        b.ins(Inst::SlotAddr {
            dst: pk,
            slot: key,
            off: 0,
        });
        let val = b.f.new_value(ValueKind::Pointer);
        b.ins(Inst::Call {
            helper: 1,
            args: vec![m.into(), pk.into()],
            dst: Some(val),
        });
        let res = b.konst(0xdead);
        let found = b.block();
        let join = b.block();
        b.branch(JmpOp::Jne, val, imm(0), found, join);
        b.switch_to(found);
        let five = b.konst(5);
        b.ins(Inst::AtomicAdd {
            base: val,
            off: 0,
            src: five,
            size: Size::DW,
        });
        let big = b.konst(0x1_0000_0000);
        b.ins(Inst::AtomicAdd {
            base: val,
            off: 0,
            src: big,
            size: Size::DW,
        });
        b.ins(Inst::AtomicAdd {
            base: val,
            off: 8,
            src: five,
            size: Size::W,
        });
        let l = b.scalar();
        b.ins(Inst::Load {
            dst: res,
            base: val,
            off: 0,
            size: Size::DW,
        });
        b.ins(Inst::Load {
            dst: l,
            base: val,
            off: 8,
            size: Size::W,
        });
        b.bin_to(res, BinOp::Add, res, l);
        b.jump(join);
        b.switch_to(join);
        vec![(res, Expect::Eq(0x1_0000_0005 + 5))]
    });
    c.maps.push(MapSpec {
        name: "counts".into(),
        kind: MapKind::Array,
        key: Format::Int {
            bytes: 4,
            signed: false,
        },
        value: Format::record(vec![
            (
                "a".into(),
                Format::Int {
                    bytes: 8,
                    signed: false,
                },
            ),
            (
                "b".into(),
                Format::Int {
                    bytes: 4,
                    signed: false,
                },
            ),
        ]),
        max_entries: 1,
        flags: 0,
        init: vec![],
    });
    c
}

/// `may_goto`: a loop bounded by its condition (100 iterations) and one bounded only by the
/// kernel's budget.
pub fn case_may_goto() -> Case {
    xdp_case("may_goto", |b, _| {
        let mk = |b: &mut Fb, limit: Option<i64>| {
            let i = b.konst(0);
            let head = b.block();
            let check = b.block();
            let body = b.block();
            let exit = b.block();
            b.jump(head);
            b.switch_to(head);
            match limit {
                Some(n) => b.branch(JmpOp::Jsge, i, imm(n), exit, check),
                None => b.jump(check),
            }
            b.switch_to(check);
            b.term(Terminator::MayGoto {
                exhausted: exit,
                cont: body,
            });
            b.switch_to(body);
            b.bin_to(i, BinOp::Add, i, imm(1));
            b.jump(head);
            b.switch_to(exit);
            i
        };
        let bounded = mk(b, Some(100));
        let budget = mk(b, None);
        vec![(bounded, Expect::Eq(100)), (budget, Expect::AtLeast(1 << 16))]
    })
}

/// `bpf_dynptr_from_xdp` (a kfunc) then `bpf_dynptr_read` (helper 201, five arguments):
/// reads packet bytes 0..8 (the kernel tests fill the packet with 0, 1, 2, ...).
pub fn case_kfunc() -> Case {
    xdp_case("kfunc", |b, ctx| {
        let dynptr = b.f.new_slot(16, 8);
        let buf = b.f.new_slot(8, 8);
        let pd = b.ptr();
        b.ins(Inst::SlotAddr {
            dst: pd,
            slot: dynptr,
            off: 0,
        });
        let rc = b.scalar();
        b.ins(Inst::CallKfunc {
            name: "bpf_dynptr_from_xdp".into(),
            args: vec![ctx.into(), imm(0), pd.into()],
            dst: Some(rc),
        });
        let pb = b.ptr();
        b.ins(Inst::SlotAddr {
            dst: pb,
            slot: buf,
            off: 0,
        });
        let pd2 = b.ptr();
        b.ins(Inst::SlotAddr {
            dst: pd2,
            slot: dynptr,
            off: 0,
        });
        let rc2 = b.call(201, vec![pb.into(), imm(8), pd2.into(), imm(0), imm(0)]);
        let v = b.scalar();
        b.ins(Inst::LoadSlot {
            dst: v,
            slot: buf,
            off: 0,
            size: Size::DW,
        });
        vec![
            (rc, Expect::Eq(0)),
            (rc2, Expect::Eq(0)),
            (v, Expect::Eq(0x0706_0504_0302_0100)),
        ]
    })
}

/// Every case above.
pub fn all_cases() -> Vec<Case> {
    vec![
        case_sum_loop(),
        case_sum_loop_verdict(),
        case_spills(),
        case_across_call(),
        case_five_args(),
        case_imm_consts(),
        case_imm_operands(),
        case_imm_stores(),
        case_branches(),
        case_stack_slots(),
        case_alu(),
        case_map_atomic(),
        case_may_goto(),
        case_kfunc(),
    ]
}

pub fn compile(f: &Function) -> (Allocation, ProgramCode) {
    let alloc = allocate(f).unwrap_or_else(|e| panic!("{}: allocation failed: {e}", f.name));
    let code = emit(f, &alloc, "xdp").unwrap_or_else(|e| panic!("{}: emission failed: {e}", f.name));
    (alloc, code)
}

// ---- a reference interpreter of the IR ---------------------------------------------------

/// An IR value in the reference interpreter: an integer or a pointer into one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IV {
    Int(u64),
    Ctx,
    /// `data + off`.
    Pkt(i64),
    PktEnd,
    Stack(luabpf_compiler::ir::Slot, i64),
}

/// Runs `f` on `packet` with BPF semantics (division by zero, shift counts modulo 64, ...).
/// `bpf_ktime_get_ns` returns 1000, 1001, ...; `bpf_csum_diff` is supported with empty
/// buffers only (it returns the seed folded to 16 bits). Returns the return value and the packet afterwards.
pub fn interpret(f: &Function, packet: &[u8]) -> Result<(u64, Vec<u8>), String> {
    use std::collections::HashMap;
    let mut pkt = packet.to_vec();
    let mut slots: HashMap<luabpf_compiler::ir::Slot, Vec<u8>> =
        f.slots.iter().map(|(s, d)| (s, vec![0; d.size as usize])).collect();
    let mut regs: HashMap<Value, Option<IV>> = HashMap::new();
    let mut clock = 1000u64;
    let mut block = f.entry;
    let get = |regs: &HashMap<Value, Option<IV>>, v: Value| {
        regs.get(&v)
            .copied()
            .flatten()
            .ok_or(format!("{v} read before written"))
    };
    let int = |x: IV| match x {
        IV::Int(i) => Ok(i),
        other => Err(format!("{other:?} used as an integer")),
    };
    let opnd = |regs: &HashMap<Value, Option<IV>>, o: &Operand| match *o {
        Operand::Imm(i) => Ok(IV::Int(i as u64)),
        Operand::Value(v) => get(regs, v),
    };
    for _step in 0..10_000_000u64 {
        let data = &f.blocks[block];
        for (inst, _) in &data.insts {
            match inst {
                Inst::Arg { dst, .. } => {
                    regs.insert(*dst, Some(IV::Ctx));
                }
                Inst::Const { dst, imm } => {
                    regs.insert(*dst, Some(IV::Int(*imm as u64)));
                }
                Inst::Mov { dst, src } => {
                    regs.insert(*dst, Some(get(&regs, *src)?));
                }
                Inst::Bin { op, dst, a, b } => {
                    let (x, y) = (get(&regs, *a)?, opnd(&regs, b)?);
                    let r = match (x, op) {
                        (IV::Pkt(o), BinOp::Add) => IV::Pkt(o + int(y)? as i64),
                        (IV::Stack(s, o), BinOp::Add) => IV::Stack(s, o + int(y)? as i64),
                        _ => IV::Int(alu(*op, int(x)?, int(y)?)),
                    };
                    regs.insert(*dst, Some(r));
                }
                Inst::Neg { dst, src } => {
                    regs.insert(*dst, Some(IV::Int(int(get(&regs, *src)?)?.wrapping_neg())));
                }
                Inst::Bswap { dst, src, bits } => {
                    let x = int(get(&regs, *src)?)?;
                    let r = match bits {
                        16 => (x as u16).swap_bytes() as u64,
                        32 => (x as u32).swap_bytes() as u64,
                        _ => x.swap_bytes(),
                    };
                    regs.insert(*dst, Some(IV::Int(r)));
                }
                Inst::Zext { dst, src, bits } => {
                    let x = int(get(&regs, *src)?)?;
                    regs.insert(*dst, Some(IV::Int(x & (u64::MAX >> (64 - bits)))));
                }
                Inst::Sext { dst, src, bits } => {
                    let x = int(get(&regs, *src)?)?;
                    let sh = 64 - *bits as u32;
                    regs.insert(*dst, Some(IV::Int((((x << sh) as i64) >> sh) as u64)));
                }
                Inst::Load { dst, base, off, size } => {
                    let r = match get(&regs, *base)? {
                        IV::Ctx if *off == 0 && *size == Size::W => IV::Pkt(0),
                        IV::Ctx if *off == 4 && *size == Size::W => IV::PktEnd,
                        IV::Pkt(o) => IV::Int(read_le(&pkt, o + *off as i64, *size)?),
                        IV::Stack(s, o) => IV::Int(read_le(slots.get(&s).ok_or("slot")?, o + *off as i64, *size)?),
                        other => return Err(format!("load from {other:?}{off:+}")),
                    };
                    regs.insert(*dst, Some(r));
                }
                Inst::Store { base, off, src, size } => {
                    let v = int(opnd(&regs, src)?)?;
                    match get(&regs, *base)? {
                        IV::Pkt(o) => write_le(&mut pkt, o + *off as i64, *size, v)?,
                        IV::Stack(s, o) => write_le(slots.get_mut(&s).ok_or("slot")?, o + *off as i64, *size, v)?,
                        other => return Err(format!("store to {other:?}")),
                    }
                }
                Inst::LoadSlot { dst, slot, off, size } => {
                    regs.insert(
                        *dst,
                        Some(IV::Int(read_le(slots.get(slot).ok_or("slot")?, *off as i64, *size)?)),
                    );
                }
                Inst::StoreSlot { slot, off, src, size } => {
                    let v = int(opnd(&regs, src)?)?;
                    write_le(slots.get_mut(slot).ok_or("slot")?, *off as i64, *size, v)?;
                }
                Inst::SlotAddr { dst, slot, off } => {
                    regs.insert(*dst, Some(IV::Stack(*slot, *off as i64)));
                }
                Inst::Call { helper: 5, dst, .. } => {
                    if let Some(d) = dst {
                        regs.insert(*d, Some(IV::Int(clock)));
                    }
                    clock += 1;
                }
                Inst::Call { helper: 28, args, dst } => {
                    let sizes = (opnd(&regs, &args[1])?, opnd(&regs, &args[3])?);
                    if sizes != (IV::Int(0), IV::Int(0)) {
                        return Err("csum_diff of non-empty buffers".into());
                    }
                    let seed = int(opnd(&regs, &args[4])?)?;
                    if let Some(d) = dst {
                        // 6.18 folds the 32-bit sum to 16 bits (csum_from32to16).
                        let s = seed & 0xffff_ffff;
                        let s = (s & 0xffff) + (s >> 16);
                        regs.insert(*d, Some(IV::Int((s & 0xffff) + (s >> 16))));
                    }
                }
                other => return Err(format!("not interpreted: {}", luabpf_compiler::ir::display_inst(other))),
            }
        }
        match &data.term.0 {
            Terminator::Jump(b) => block = *b,
            Terminator::Branch { op, a, b, then_, else_ } => {
                let (x, y) = (get(&regs, *a)?, opnd(&regs, b)?);
                let taken = match (x, y) {
                    (IV::Int(x), IV::Int(y)) => cond(*op, x, y),
                    (IV::Pkt(o), IV::PktEnd) => cond(*op, o as u64, pkt.len() as u64),
                    (IV::Pkt(o), IV::Pkt(p)) => cond(*op, o as u64, p as u64),
                    other => return Err(format!("comparison {other:?}")),
                };
                block = if taken { *then_ } else { *else_ };
            }
            Terminator::MayGoto { .. } => return Err("may_goto is not interpreted".into()),
            Terminator::Return(v) => return Ok((int(opnd(&regs, v)?)?, pkt)),
        }
    }
    Err("too many steps".into())
}

fn read_le(mem: &[u8], off: i64, size: Size) -> Result<u64, String> {
    let n = size.bytes() as usize;
    let o = usize::try_from(off).map_err(|_| format!("negative offset {off}"))?;
    let bytes = mem
        .get(o..o + n)
        .ok_or(format!("read of {n} at {off} outside {} bytes", mem.len()))?;
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(bytes);
    Ok(u64::from_le_bytes(b))
}

fn write_le(mem: &mut [u8], off: i64, size: Size, v: u64) -> Result<(), String> {
    let n = size.bytes() as usize;
    let len = mem.len();
    let o = usize::try_from(off).map_err(|_| format!("negative offset {off}"))?;
    let dst = mem
        .get_mut(o..o + n)
        .ok_or(format!("write of {n} at {off} outside {len} bytes"))?;
    dst.copy_from_slice(&v.to_le_bytes()[..n]);
    Ok(())
}

/// BPF ALU64 semantics.
pub fn alu(op: BinOp, a: u64, b: u64) -> u64 {
    use BinOp::*;
    let (sa, sb) = (a as i64, b as i64);
    match op {
        Add => a.wrapping_add(b),
        Sub => a.wrapping_sub(b),
        Mul => a.wrapping_mul(b),
        UDiv => a.checked_div(b).unwrap_or(0),
        UMod => a.checked_rem(b).unwrap_or(a),
        SDiv => {
            if sb == 0 {
                0
            } else {
                sa.wrapping_div(sb) as u64
            }
        }
        SMod => {
            if sb == 0 {
                a
            } else {
                sa.wrapping_rem(sb) as u64
            }
        }
        Or => a | b,
        And => a & b,
        Xor => a ^ b,
        Lsh => a << (b & 63),
        Rsh => a >> (b & 63),
        Arsh => (sa >> (b & 63)) as u64,
    }
}

pub fn cond(op: JmpOp, a: u64, b: u64) -> bool {
    use JmpOp::*;
    let (sa, sb) = (a as i64, b as i64);
    match op {
        Jeq => a == b,
        Jne => a != b,
        Jgt => a > b,
        Jge => a >= b,
        Jlt => a < b,
        Jle => a <= b,
        Jsgt => sa > sb,
        Jsge => sa >= sb,
        Jslt => sa < sb,
        Jsle => sa <= sb,
        Jset => a & b != 0,
        _ => panic!("not a condition: {op:?}"),
    }
}

// ---- random programs ----------------------------------------------------------------------

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    /// An immediate of a random width: small, i32 edge, 32-bit unsigned, 64-bit.
    pub fn imm(&mut self) -> i64 {
        match self.below(6) {
            0 => self.below(8) as i64 - 2,
            1 => self.pick(&[i32::MIN as i64, i32::MAX as i64, -1, 63, 64, 0]),
            2 => self.next_u64() as i32 as i64,
            3 => self.next_u64() as u32 as i64,
            4 => self.pick(&[i64::MIN, i64::MAX, 1 << 32, -(1 << 32), u32::MAX as i64 + 1]),
            _ => self.next_u64() as i64,
        }
    }
}

struct Gen<'a> {
    b: &'a mut Fb,
    rng: Rng,
    slot: luabpf_compiler::ir::Slot,
    ptr: Value,
    budget: u32,
}

const SLOT_BYTES: u32 = 32;

impl Gen<'_> {
    fn operand(&mut self, avail: &[Value]) -> Operand {
        if self.rng.below(3) == 0 {
            imm(self.rng.imm())
        } else {
            Operand::Value(self.rng.pick(avail))
        }
    }

    /// A statement list in the current block; `avail` are the values readable here (values
    /// defined inside are dropped at the end of the scope).
    fn stmts(&mut self, avail: &mut Vec<Value>, depth: u32) {
        let outer = avail.len();
        let n = 2 + self.rng.below(8);
        for _ in 0..n {
            if self.budget == 0 {
                break;
            }
            self.budget -= 1;
            self.stmt(avail, depth);
        }
        // Export a value computed in this scope into an outer one (non-SSA assignment), so
        // that nested code reaches the results.
        if depth > 0 && avail.len() > outer && outer > 0 {
            let src = avail[avail.len() - 1];
            let dst = avail[self.rng.below(outer as u64) as usize];
            self.b.ins(Inst::Mov { dst, src });
        }
    }

    fn stmt(&mut self, avail: &mut Vec<Value>, depth: u32) {
        use BinOp::*;
        let ops = [Add, Sub, Mul, UDiv, UMod, SDiv, SMod, Or, And, Xor, Lsh, Rsh, Arsh];
        let conds = [
            JmpOp::Jeq,
            JmpOp::Jne,
            JmpOp::Jgt,
            JmpOp::Jge,
            JmpOp::Jlt,
            JmpOp::Jle,
            JmpOp::Jsgt,
            JmpOp::Jsge,
            JmpOp::Jslt,
            JmpOp::Jsle,
            JmpOp::Jset,
        ];
        let sizes = [Size::B, Size::H, Size::W, Size::DW];
        match self.rng.below(20) {
            0..=1 => {
                let imm = self.rng.imm();
                let v = self.b.konst(imm);
                avail.push(v);
            }
            2..=6 => {
                let op = self.rng.pick(&ops);
                let a = self.rng.pick(avail);
                let o = self.operand(avail);
                if self.rng.below(2) == 0 {
                    let d = self.b.bin(op, a, o);
                    avail.push(d);
                } else {
                    let d = self.rng.pick(avail);
                    self.b.bin_to(d, op, a, o);
                }
            }
            7..=8 => {
                let src = self.rng.pick(avail);
                let d = self.b.scalar();
                let inst = match self.rng.below(5) {
                    0 => Inst::Neg { dst: d, src },
                    1 => Inst::Bswap {
                        dst: d,
                        src,
                        bits: self.rng.pick(&[16, 32, 64]),
                    },
                    2 => Inst::Zext {
                        dst: d,
                        src,
                        bits: self.rng.pick(&[8, 16, 32]),
                    },
                    3 => Inst::Sext {
                        dst: d,
                        src,
                        bits: self.rng.pick(&[8, 16, 32]),
                    },
                    _ => Inst::Mov { dst: d, src },
                };
                self.b.ins(inst);
                avail.push(d);
            }
            9 => {
                // Assign to an existing value (non-SSA), possibly inside an arm or a loop.
                let d = self.rng.pick(avail);
                let src = self.rng.pick(avail);
                if d != src {
                    self.b.ins(Inst::Mov { dst: d, src });
                }
            }
            10..=11 => {
                let size = self.rng.pick(&sizes);
                let off = self.rng.below((SLOT_BYTES / size.bytes()) as u64) as u32 * size.bytes();
                let src = self.operand(avail);
                if self.rng.below(2) == 0 {
                    self.b.ins(Inst::StoreSlot {
                        slot: self.slot,
                        off,
                        src,
                        size,
                    });
                } else {
                    self.b.ins(Inst::Store {
                        base: self.ptr,
                        off: off as i16,
                        src,
                        size,
                    });
                }
            }
            12..=13 => {
                let size = self.rng.pick(&sizes);
                let off = self.rng.below((SLOT_BYTES / size.bytes()) as u64) as u32 * size.bytes();
                let d = self.b.scalar();
                if self.rng.below(2) == 0 {
                    self.b.ins(Inst::LoadSlot {
                        dst: d,
                        slot: self.slot,
                        off,
                        size,
                    });
                } else {
                    self.b.ins(Inst::Load {
                        dst: d,
                        base: self.ptr,
                        off: off as i16,
                        size,
                    });
                }
                avail.push(d);
            }
            14 => {
                // A clobber: ktime, result unused.
                self.b.ins(Inst::Call {
                    helper: 5,
                    args: vec![],
                    dst: None,
                });
            }
            15 => {
                // csum_diff(NULL, 0, NULL, 0, seed) = seed folded: a call with five arguments.
                let seed = self.operand(avail);
                let z = if self.rng.below(2) == 0 {
                    imm(0)
                } else {
                    Operand::Value(self.b.konst(0))
                };
                let d = self.b.call(28, vec![imm(0), z, imm(0), imm(0), seed]);
                avail.push(d);
            }
            16..=17 if depth < 3 => {
                let op = self.rng.pick(&conds);
                let a = self.rng.pick(avail);
                let o = self.operand(avail);
                let t = self.b.block();
                let e = self.b.block();
                let j = self.b.block();
                self.b.branch(op, a, o, t, e);
                self.b.switch_to(t);
                self.stmts(&mut avail.clone(), depth + 1);
                self.b.jump(j);
                self.b.switch_to(e);
                if self.rng.below(2) == 0 {
                    self.stmts(&mut avail.clone(), depth + 1);
                }
                self.b.jump(j);
                self.b.switch_to(j);
            }
            18..=19 if depth < 2 => {
                let n = 1 + self.rng.below(4) as i64;
                let c = self.b.konst(0);
                let head = self.b.block();
                let body = self.b.block();
                let exit = self.b.block();
                self.b.jump(head);
                self.b.switch_to(head);
                self.b.branch(JmpOp::Jsge, c, imm(n), exit, body);
                self.b.switch_to(body);
                let mut inner = avail.clone();
                self.stmts(&mut inner, depth + 1);
                self.b.bin_to(c, Add, c, imm(1));
                self.b.jump(head);
                self.b.switch_to(exit);
                avail.push(c);
            }
            _ => {
                let v = self.b.konst(self.rng.below(100) as i64);
                avail.push(v);
            }
        }
    }
}

/// A random program: straight-line code, diamonds, small counted loops, stack slot accesses
/// (direct and through a pointer), helper calls; up to 24 results. Its expected results
/// come from `interpret`.
pub fn random_case(seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let budget = 20 + rng.below(60) as u32;
    let mut case = xdp_case(&format!("rand{seed}"), |b, _| {
        let slot = b.f.new_slot(SLOT_BYTES, 8);
        for k in 0..SLOT_BYTES / 8 {
            b.ins(Inst::StoreSlot {
                slot,
                off: 8 * k,
                src: imm(0),
                size: Size::DW,
            });
        }
        let ptr = b.ptr();
        b.ins(Inst::SlotAddr { dst: ptr, slot, off: 0 });
        let mut avail: Vec<Value> = (0..3).map(|k| b.konst(k * 7 + 1)).collect();
        let mut g = Gen {
            b,
            rng,
            slot,
            ptr,
            budget,
        };
        while g.budget > 0 {
            let k = g.rng.imm();
            avail.push(g.b.konst(k));
            g.stmts(&mut avail, 0);
        }
        let n = avail.len().min(24);
        let start = avail.len() - n;
        avail[start..].iter().map(|&v| (v, Expect::Eq(0))).collect()
    });
    let packet: Vec<u8> = (0..PACKET_LEN).map(|i| i as u8).collect();
    let (ret, out) = interpret(&case.f, &packet).unwrap_or_else(|e| panic!("rand{seed}: {e}"));
    assert_eq!(ret, XDP_PASS as u64);
    for (k, e) in case.expect.iter_mut().enumerate() {
        *e = Expect::Eq(u64::from_le_bytes(out[8 * k..8 * k + 8].try_into().unwrap()));
    }
    case
}

// ---- a minimal disassembler (for failure messages) ------------------------------------

pub fn disasm(code: &ProgramCode) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut k = 0;
    while k < code.insns.len() {
        let i = code.insns[k];
        let (cls, op) = (i.class(), i.code & 0xf0);
        let sz = |c: u8| match c & 0x18 {
            0x00 => "u32",
            0x08 => "u16",
            0x10 => "u8",
            _ => "u64",
        };
        let src = |i: &Insn| {
            if i.code & BPF_X != 0 {
                format!("r{}", i.src)
            } else {
                format!("{}", i.imm)
            }
        };
        let alu = [
            "+=", "-=", "*=", "/=", "|=", "&=", "<<=", ">>=", "neg", "%=", "^=", "=", "s>>=", "end",
        ];
        let jmp = [
            "ja", "==", ">", ">=", "&", "!=", "s>", "s>=", "call", "exit", "<", "<=", "s<", "s<=", "may_goto",
        ];
        let text = match cls {
            BPF_ALU | BPF_ALU64 => {
                let r = if cls == BPF_ALU64 { "r" } else { "w" };
                match op {
                    0x80 => format!("{r}{} = -{r}{}", i.dst, i.dst),
                    0xd0 => format!(
                        "r{} = {}{} r{}",
                        i.dst,
                        if i.code & BPF_X != 0 { "be" } else { "le" },
                        i.imm,
                        i.dst
                    ),
                    0xb0 if i.off != 0 => format!("r{} = (s{})r{}", i.dst, i.off, i.src),
                    _ => {
                        let s = if i.off == 1 && matches!(op, 0x30 | 0x90) {
                            "s"
                        } else {
                            ""
                        };
                        format!("{r}{} {s}{} {}", i.dst, alu[(op >> 4) as usize], src(&i))
                    }
                }
            }
            BPF_LD => {
                let hi = code.insns[k + 1].imm as u32 as u64;
                let v = (hi << 32) | i.imm as u32 as u64;
                k += 1;
                if i.src == 1 {
                    format!("r{} = map ll", i.dst)
                } else {
                    format!("r{} = {:#x} ll", i.dst, v)
                }
            }
            BPF_LDX => format!("r{} = *({} *)(r{} {:+})", i.dst, sz(i.code), i.src, i.off),
            BPF_ST => format!("*({} *)(r{} {:+}) = {}", sz(i.code), i.dst, i.off, i.imm),
            BPF_STX if i.code & 0xe0 == BPF_ATOMIC => {
                format!("lock *({} *)(r{} {:+}) += r{}", sz(i.code), i.dst, i.off, i.src)
            }
            BPF_STX => format!("*({} *)(r{} {:+}) = r{}", sz(i.code), i.dst, i.off, i.src),
            _ => match op {
                0x00 => format!("goto {:+}", i.off),
                0x80 if i.src == 2 => "call kfunc".to_string(),
                0x80 => format!("call {}", i.imm),
                0x90 => "exit".to_string(),
                0xe0 => format!("may_goto {:+}", i.off),
                _ => format!("if r{} {} {} goto {:+}", i.dst, jmp[(op >> 4) as usize], src(&i), i.off),
            },
        };
        let line = code.locs[k.min(code.locs.len() - 1)].line;
        let _ = writeln!(
            out,
            "{:4}: {text:<40} ; line {line}",
            if cls == BPF_LD { k - 1 } else { k }
        );
        k += 1;
    }
    out
}

// ---- the structural checker ---------------------------------------------------------------

#[derive(Clone, PartialEq, Eq)]
struct State {
    regs: u16,
    /// One bit per stack byte, bit i = r10 - 512 + i.
    stack: [u64; 8],
}

impl State {
    fn meet(&mut self, o: &State) -> bool {
        let old = self.clone();
        self.regs &= o.regs;
        for (a, b) in self.stack.iter_mut().zip(&o.stack) {
            *a &= *b;
        }
        *self != old
    }
    fn stack_bit(off: i32) -> usize {
        (512 + off) as usize
    }
    fn set_stack(&mut self, off: i32, n: i32) {
        for o in off..off + n {
            let i = Self::stack_bit(o);
            self.stack[i / 64] |= 1 << (i % 64);
        }
    }
    fn stack_init(&self, off: i32, n: i32) -> bool {
        (off..off + n).all(|o| {
            let i = Self::stack_bit(o);
            self.stack[i / 64] & (1 << (i % 64)) != 0
        })
    }
}

fn size_bytes(code: u8) -> i32 {
    match code & 0x18 {
        0x00 => 4,
        0x08 => 2,
        0x10 => 1,
        _ => 8,
    }
}

/// Checks what the verifier would check about register and spill-slot initialisation (a read
/// of r1-r5 after a call is a read of an uninitialised register), plus: stack accesses
/// inside the frame and naturally aligned (the verifier demands it on the stack), r10 never
/// written, jump targets inside the program and not into the second slot of an `ld_imm64`,
/// relocations on the right instructions, every instruction reachable, one source line per
/// slot, no `ja +0` except right after a conditional jump (a prune hint: compiler/src/
/// prune_hints.rs) and no move of a register to itself.
pub fn check_code(code: &ProgramCode, alloc: &Allocation) -> Result<(), String> {
    let n = code.insns.len();
    if code.locs.len() != n {
        return Err(format!("{} locs for {} slots", code.locs.len(), n));
    }
    if let Some(i) = code.locs.iter().position(|l| l.line == 0) {
        return Err(format!("slot {i} has no source line"));
    }
    let frame = alloc.frame_size() as i32;
    let spill_lo = -frame;
    let spill_hi = -frame + 8 * alloc.spill_slots() as i32;
    // Which slots are the second half of an ld_imm64.
    let mut second = vec![false; n];
    let mut i = 0;
    while i < n {
        if code.insns[i].is_ld_imm64() {
            if i + 1 >= n {
                return Err(format!("slot {i}: ld_imm64 at the end"));
            }
            second[i + 1] = true;
            i += 2;
        } else {
            i += 1;
        }
    }
    for &(slot, _) in &code.map_relocs {
        let insn = code.insns.get(slot).ok_or("map reloc out of range")?;
        if !insn.is_ld_imm64() || insn.src != BPF_PSEUDO_MAP_FD {
            return Err(format!("slot {slot}: map relocation on {insn:?}"));
        }
    }
    for (slot, _) in &code.kfunc_relocs {
        let insn = code.insns.get(*slot).ok_or("kfunc reloc out of range")?;
        if insn.code != BPF_JMP | JmpOp::Call as u8 || insn.src != BPF_PSEUDO_KFUNC_CALL {
            return Err(format!("slot {slot}: kfunc relocation on {insn:?}"));
        }
    }

    let mut states: Vec<Option<State>> = vec![None; n];
    states[0] = Some(State {
        regs: (1 << 1) | (1 << 10),
        stack: [0; 8],
    });
    let mut work = vec![0usize];
    while let Some(pc) = work.pop() {
        let mut st = states[pc].clone().unwrap();
        let insn = code.insns[pc];
        let err = |m: String| Err(format!("slot {pc} ({insn:?}): {m}"));
        let read = |st: &State, r: u8| -> Result<(), String> {
            if r > 10 {
                return Err(format!("slot {pc}: register r{r}"));
            }
            if st.regs & (1 << r) == 0 {
                return Err(format!("slot {pc} ({insn:?}): reads r{r} uninitialised"));
            }
            Ok(())
        };
        let write = |st: &mut State, r: u8| -> Result<(), String> {
            if r >= 10 {
                return Err(format!("slot {pc}: writes r{r}"));
            }
            st.regs |= 1 << r;
            Ok(())
        };
        let stack_access = |off: i16, size: i32| -> Result<(), String> {
            let off = off as i32;
            if off >= 0 || off < -frame || off + size > 0 {
                return Err(format!(
                    "slot {pc}: stack access [r10{off:+}] of {size} outside the {frame}-byte frame"
                ));
            }
            if off % size != 0 {
                return Err(format!("slot {pc}: misaligned stack access [r10{off:+}] of {size}"));
            }
            Ok(())
        };
        let mut succs = vec![pc + 1];
        let class = insn.class();
        match class {
            BPF_ALU | BPF_ALU64 => {
                let op = insn.code & 0xf0;
                if op == 0xb0 {
                    if insn.code & BPF_X != 0 {
                        read(&st, insn.src)?;
                        if class == BPF_ALU64 && insn.src == insn.dst && insn.off == 0 {
                            return err("move of a register to itself".into());
                        }
                    }
                } else {
                    read(&st, insn.dst)?;
                    if insn.code & BPF_X != 0 && op != 0xd0 && op != 0x80 {
                        read(&st, insn.src)?;
                    }
                }
                write(&mut st, insn.dst)?;
            }
            BPF_LD => {
                if !insn.is_ld_imm64() {
                    return err("legacy packet load".into());
                }
                write(&mut st, insn.dst)?;
                succs = vec![pc + 2];
            }
            BPF_LDX => {
                read(&st, insn.src)?;
                let sz = size_bytes(insn.code);
                if insn.src == 10 {
                    stack_access(insn.off, sz)?;
                    let o = insn.off as i32;
                    if o >= spill_lo && o < spill_hi {
                        if sz != 8 {
                            return err("fill of less than 8 bytes".into());
                        }
                        if !st.stack_init(o, sz) {
                            return err(format!("fill from uninitialised spill slot [r10{o:+}]"));
                        }
                    }
                }
                write(&mut st, insn.dst)?;
            }
            BPF_ST | BPF_STX => {
                read(&st, insn.dst)?;
                if class == BPF_STX {
                    read(&st, insn.src)?;
                }
                let sz = size_bytes(insn.code);
                if insn.dst == 10 {
                    if insn.code & 0xe0 == BPF_ATOMIC {
                        return err("atomic on the frame".into());
                    }
                    stack_access(insn.off, sz)?;
                    let o = insn.off as i32;
                    if o >= spill_lo && o < spill_hi && sz != 8 {
                        return err("spill of less than 8 bytes".into());
                    }
                    st.set_stack(o, sz);
                }
                let _ = BPF_MEM;
            }
            BPF_JMP | BPF_JMP32 => {
                let op = insn.code & 0xf0;
                match op {
                    0x00 => {
                        let prev = pc.checked_sub(1).map(|p| code.insns[p]);
                        let after_cond = prev.is_some_and(|p| {
                            (p.class() == BPF_JMP || p.class() == BPF_JMP32)
                                && !matches!(p.code & 0xf0, 0x00 | 0x80 | 0x90)
                        });
                        if insn.off == 0 && !after_cond {
                            return err("ja +0 not after a conditional jump".into());
                        }
                        succs = vec![];
                    }
                    0x80 => {
                        if insn.src == 0 {
                            let nargs = runtime_bpf::helpers::helper_args(insn.imm)
                                .ok_or_else(|| format!("slot {pc}: unknown helper {}", insn.imm))?;
                            for r in 1..=nargs {
                                read(&st, r)?;
                            }
                        }
                        st.regs &= !0b111110;
                        write(&mut st, 0)?;
                    }
                    0x90 => {
                        read(&st, 0)?;
                        succs = vec![];
                    }
                    0xe0 => {}
                    _ => {
                        read(&st, insn.dst)?;
                        if insn.code & BPF_X != 0 {
                            read(&st, insn.src)?;
                        }
                    }
                }
                if op != 0x80 && op != 0x90 {
                    let t = pc as i64 + 1 + insn.off as i64;
                    if t < 0 || t as usize >= n || second[t as usize] {
                        return err(format!("jump to slot {t}"));
                    }
                    succs.push(t as usize);
                }
            }
            _ => return err("unknown class".into()),
        }
        for s in succs {
            if s >= n {
                return Err(format!("slot {pc}: falls off the end"));
            }
            match &mut states[s] {
                Some(old) => {
                    if old.meet(&st) {
                        work.push(s);
                    }
                }
                None => {
                    states[s] = Some(st.clone());
                    work.push(s);
                }
            }
        }
    }
    // The verifier refuses instructions no path reaches.
    if let Some(i) = (0..n).find(|&i| states[i].is_none() && !second[i]) {
        return Err(format!("slot {i} is unreachable"));
    }
    Ok(())
}

/// Checks the allocation itself: spill slots 8-aligned inside the frame, the frame within 512.
pub fn check_alloc(f: &Function, alloc: &Allocation) -> Result<(), String> {
    if alloc.frame_size() > 512 {
        return Err(format!("frame of {} bytes", alloc.frame_size()));
    }
    // r0 only for a call result, where the call leaves it (written by nothing else).
    let mut call_result = std::collections::HashSet::new();
    let defs = f.def_counts();
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            if let (true, Some(d)) = (inst.is_call(), inst.def()) {
                if defs[d] == 1 {
                    call_result.insert(d);
                }
            }
        }
    }
    for (v, _) in f.values.iter() {
        match alloc.loc(v) {
            Some(Loc::Stack(off)) if off % 8 != 0 || off >= 0 || -(off as i32) > alloc.frame_size() as i32 => {
                return Err(format!("{v} spilled to [r10{off:+}]"));
            }
            Some(Loc::Reg(r)) if (r.0 == 0 && !call_result.contains(&v)) || r.0 >= 10 => {
                return Err(format!("{v} in r{}", r.0))
            }
            _ => {}
        }
    }
    for (s, d) in f.slots.iter() {
        let off = alloc.slot_offset(s) as i32;
        if off >= 0 && d.size > 0 || off + d.size as i32 > 0 || off < -(alloc.frame_size() as i32) {
            return Err(format!("{s} at [r10{off:+}]"));
        }
        if off % d.align.max(1) as i32 != 0 {
            return Err(format!("{s} at [r10{off:+}] is not {}-aligned", d.align));
        }
    }
    Ok(())
}

/// Every value read by an instruction is written on some path before (the IR is well formed),
/// so that a failure of `check_code` is the back end's fault.
pub fn check_ir_defined(f: &Function) -> Result<(), String> {
    let live = Liveness::compute(f);
    let entry_in: Vec<Value> = live.live_in(f.entry).collect();
    if entry_in.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: read before any write: {entry_in:?}", f.name))
    }
}

// ---- tests --------------------------------------------------------------------------------

#[test]
fn every_case_is_structurally_sound() {
    for case in all_cases() {
        check_ir_defined(&case.f).unwrap();
        let (alloc, code) = compile(&case.f);
        check_alloc(&case.f, &alloc).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        check_code(&code, &alloc).unwrap_or_else(|e| {
            panic!(
                "{}: {e}\n{}\n{}\n{}",
                case.name,
                luabpf_compiler::ir::display(&case.f),
                alloc.display(&case.f),
                disasm(&code)
            )
        });
    }
}

#[test]
fn liveness_of_a_loop() {
    let case = case_sum_loop();
    let f = &case.f;
    let live = Liveness::compute(f);
    // Blocks: entry, head, body, exit (as built by sum_loop), then the harness's.
    let blocks: Vec<Block> = f.blocks.keys().collect();
    let (head, body) = (blocks[1], blocks[2]);
    let in_head: Vec<Value> = live.live_in(head).collect();
    let out_body: Vec<Value> = live.live_out(body).collect();
    // ctx (v0), i (v1), s (v2) are live around the loop.
    let v = |i: usize| in_head[i];
    assert_eq!(in_head.len(), 3, "{in_head:?}");
    assert_eq!(in_head, out_body);
    assert!(live.is_live_in(head, v(1)));
    assert!(!live.live_in(f.entry).any(|_| true));
}

#[test]
fn loop_values_share_no_register() {
    let case = case_sum_loop();
    let (alloc, _) = compile(&case.f);
    let locs: Vec<Loc> = case.f.values.keys().take(3).map(|v| alloc.loc(v).unwrap()).collect();
    assert!(
        locs[0] != locs[1] && locs[1] != locs[2] && locs[0] != locs[2],
        "{locs:?}"
    );
    assert_eq!(alloc.spill_slots(), 0);
    assert_eq!(alloc.scratch2(), None);
}

#[test]
fn values_live_across_calls_are_callee_saved_or_spilled() {
    let case = case_across_call();
    let (alloc, code) = compile(&case.f);
    // v0 = ctx, v1 = 1234567, v2 = wide constant: all live across both calls.
    for v in case.f.values.keys().take(3) {
        match alloc.loc(v).unwrap() {
            Loc::Reg(r) => assert!((6..=9).contains(&r.0), "{v} in r{}", r.0),
            Loc::Stack(_) => {}
        }
    }
    check_code(&code, &alloc).unwrap();
}

#[test]
fn pressure_spills_with_8_byte_slots_and_reuses_them() {
    let case = case_spills();
    let (alloc, code) = compile(&case.f);
    assert!(alloc.spill_slots() > 0);
    // 48 values cannot all be in 9 registers, but spill slots are shared once dead:
    // never more slots than values simultaneously live.
    assert!(alloc.spill_slots() <= 48, "{}", alloc.spill_slots());
    assert_eq!(alloc.frame_size() % 8, 0);
    // Every access to the spill area is an 8-byte one (checked by check_code too).
    let spill_lo = -(alloc.frame_size() as i32);
    for insn in &code.insns {
        let mem = matches!(insn.class(), BPF_LDX | BPF_STX | BPF_ST);
        let on_fp = (insn.class() == BPF_LDX && insn.src == 10) || (insn.class() != BPF_LDX && insn.dst == 10);
        if mem && on_fp && insn.off as i32 >= spill_lo {
            assert_eq!(insn.code & 0x18, BPF_DW, "{insn:?}");
        }
    }
    check_code(&code, &alloc).unwrap();
}

#[test]
fn second_scratch_only_when_needed() {
    for case in all_cases() {
        let (alloc, _) = compile(&case.f);
        if alloc.spill_slots() == 0 {
            assert_eq!(alloc.scratch2(), None, "{}", case.name);
        }
        if let Some(r) = alloc.scratch2() {
            assert_eq!(r, Reg(5));
            for v in case.f.values.keys() {
                assert_ne!(
                    alloc.loc(v),
                    Some(Loc::Reg(Reg(5))),
                    "{}: {v} in the scratch",
                    case.name
                );
            }
        }
    }
}

/// Forces instructions whose destination and operand are both spilled.
#[test]
fn double_spills_use_the_second_scratch() {
    let case = xdp_case("double_spill", |b, _| {
        let vs: Vec<Value> = (0..20).map(|k| b.konst(k * 3 + 1)).collect();
        let ws: Vec<Value> = (0..20).map(|k| b.bin(BinOp::Sub, vs[k], vs[19 - k])).collect();
        let acc = b.konst(0);
        for k in 0..20 {
            b.bin_to(acc, BinOp::Add, acc, ws[k]);
            b.bin_to(acc, BinOp::Add, acc, vs[k]);
        }
        vec![(acc, Expect::Eq((0..20).map(|k| k * 3 + 1).sum::<i64>() as u64))]
    });
    let (alloc, code) = compile(&case.f);
    assert_eq!(alloc.scratch2(), Some(Reg(5)));
    check_code(&code, &alloc).unwrap();
}

#[test]
fn branch_layout_uses_fall_through_both_ways() {
    let case = case_branches();
    let (_, code) = compile(&case.f);
    // Diamonds of both shapes: conditional jumps forward, no `ja` that could fall through.
    let conds = code
        .insns
        .iter()
        .filter(|i| i.class() == BPF_JMP && !matches!(i.code & 0xf0, 0x00 | 0x80 | 0x90))
        .count();
    assert_eq!(conds, 110 + 1, "one conditional jump per diamond plus the harness's");
    // Both the negated form and the plain form occur: count Jeq and Jne.
    let op = |o: JmpOp| {
        code.insns
            .iter()
            .filter(|i| i.class() == BPF_JMP && i.code & 0xf0 == o as u8)
            .count()
    };
    assert!(op(JmpOp::Jeq) > 0 && op(JmpOp::Jne) > 0);
    assert!(op(JmpOp::Jset) == 10, "jset is never negated");
}

#[test]
fn sum_loop_code_is_tidy() {
    let case = case_sum_loop_verdict();
    let (_, code) = compile(&case.f);
    // r1 = ctx is dead: nothing moved. i, s: 2 movs; loop: cond, 2 adds, ja; r0 = s; exit.
    assert!(code.insns.len() <= 8, "{:#?}", code.insns);
    assert_eq!(
        code.insns.iter().filter(|i| i.code == BPF_JMP).count(),
        1,
        "one ja (the back edge)"
    );
}

#[test]
fn stack_too_large() {
    let mut b = Fb::new("big");
    let s = b.f.new_slot(520, 8);
    let v = b.scalar();
    b.ins(Inst::LoadSlot {
        dst: v,
        slot: s,
        off: 0,
        size: Size::DW,
    });
    b.term(Terminator::Return(Operand::Value(v)));
    assert_eq!(allocate(&b.f).unwrap_err(), AllocError::StackTooLarge { needed: 520 });

    // A frame that fits until the spill slots are added.
    let case = {
        let mut c = case_spills();
        c.f.new_slot(500, 8);
        c
    };
    match allocate(&case.f) {
        Err(AllocError::StackTooLarge { needed }) => assert!(needed > 512),
        other => panic!("{other:?}"),
    }
}

#[test]
fn slots_are_packed_and_aligned() {
    let mut b = Fb::new("slots");
    let a = b.f.new_slot(3, 1);
    let c = b.f.new_slot(8, 8);
    let d = b.f.new_slot(6, 2);
    b.term(Terminator::Return(imm(0)));
    let alloc = allocate(&b.f).unwrap();
    check_alloc(&b.f, &alloc).unwrap();
    assert_eq!(alloc.slot_offset(c), -8);
    assert_eq!(alloc.slot_offset(d), -14);
    assert_eq!(alloc.slot_offset(a), -17);
    // The frame is rounded up to 8 bytes (where the spill slots would start).
    assert_eq!(alloc.frame_size(), 24);
}

#[test]
fn far_jumps_are_refused() {
    let mut b = Fb::new("far");
    let x = b.konst(1);
    let t = b.block();
    let e = b.block();
    b.branch(JmpOp::Jeq, x, imm(0), t, e);
    b.switch_to(t);
    for k in 0..40_000 {
        b.ins(Inst::Const { dst: x, imm: k });
    }
    b.term(Terminator::Return(Operand::Value(x)));
    b.switch_to(e);
    b.term(Terminator::Return(imm(1)));
    let alloc = allocate(&b.f).unwrap();
    match emit(&b.f, &alloc, "xdp") {
        Err(EmitError::TooLarge { offset, .. }) => assert!(offset > 32767),
        other => panic!("{:?}", other.map(|c| c.insns.len())),
    }
}

/// 20,000 blocks in a chain and a value live through all of them: no recursion anywhere, and
/// liveness stays cheap.
#[test]
fn long_chains_of_blocks() {
    let mut b = Fb::new("chain");
    let acc = b.konst(0);
    let keep = b.konst(42);
    for k in 0..20_000 {
        let next = b.block();
        let other = b.block();
        b.branch(JmpOp::Jeq, acc, imm(-1), other, next);
        b.switch_to(other);
        b.term(Terminator::Return(imm(k)));
        b.switch_to(next);
        b.bin_to(acc, BinOp::Add, acc, imm(1));
    }
    let r = b.bin(BinOp::Add, acc, keep);
    b.term(Terminator::Return(Operand::Value(r)));
    let t = std::time::Instant::now();
    let (alloc, code) = compile(&b.f);
    check_code(&code, &alloc).unwrap();
    assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
}

/// A value read on some path before any write (non-SSA locals) is tolerated by the
/// allocator; a `Mov` between two such values is not a read of garbage in the emitted code
/// unless the IR reads it.
#[test]
fn unreachable_blocks_and_dead_values() {
    let mut b = Fb::new("dead");
    let x = b.konst(5);
    let _unused = b.konst(9); // defined, never read
    let dead_block = b.block();
    b.term(Terminator::Return(Operand::Value(x)));
    b.switch_to(dead_block);
    let y = b.bin(BinOp::Add, x, imm(1));
    b.term(Terminator::Return(Operand::Value(y)));
    let (alloc, code) = compile(&b.f);
    assert_eq!(alloc.loc(y), None);
    check_code(&code, &alloc).unwrap();
}

#[test]
fn asm_locations_follow_instructions() {
    let case = case_imm_consts();
    let (_, code) = compile(&case.f);
    for (k, insn) in code.insns.iter().enumerate() {
        if insn.is_ld_imm64() {
            assert_eq!(code.locs[k], code.locs[k + 1]);
        }
    }
    // Every constant (lines 2..=12: line 1 is the Arg) produced code carrying its line.
    for line in 2..=12 {
        assert!(code.locs.iter().any(|l| l.line == line), "line {line}: {:?}", code.locs);
    }
    let _ = Insn::exit();
}

/// `DUMP=name cargo test ... dump -- --nocapture` prints a case's IR, allocation and code.
#[test]
fn dump() {
    let Ok(name) = std::env::var("DUMP") else { return };
    let mut cases = all_cases();
    if let Some(seed) = name.strip_prefix("rand") {
        cases.push(random_case(seed.parse().unwrap()));
    }
    for case in cases.into_iter().filter(|c| c.name == name) {
        let (alloc, code) = compile(&case.f);
        println!(
            "{}\n{}\n{}",
            luabpf_compiler::ir::display(&case.f),
            alloc.display(&case.f),
            disasm(&code)
        );
    }
}

/// The interpreter agrees with the hand-computed expectations of every case it can run (so
/// that it can be trusted as the oracle of the random programs).
#[test]
fn interpreter_agrees_with_hand_built_cases() {
    let packet: Vec<u8> = (0..PACKET_LEN).map(|i| i as u8).collect();
    let mut ran = 0;
    for case in all_cases() {
        let Ok((ret, out)) = interpret(&case.f, &packet) else {
            continue;
        };
        ran += 1;
        assert_eq!(ret, case.verdict as u64, "{}", case.name);
        for (k, e) in case.expect.iter().enumerate() {
            let got = u64::from_le_bytes(out[8 * k..8 * k + 8].try_into().unwrap());
            match *e {
                Expect::Eq(v) => assert_eq!(got, v, "{} result {k}", case.name),
                Expect::AtLeast(v) => assert!(got >= v, "{} result {k}", case.name),
                Expect::Csum(_) => {}
            }
        }
    }
    assert!(ran >= 9, "{ran}");
}

#[test]
fn random_programs_are_structurally_sound() {
    for seed in 0..1000 {
        let case = random_case(seed);
        check_ir_defined(&case.f).unwrap();
        let (alloc, code) = compile(&case.f);
        check_alloc(&case.f, &alloc).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        check_code(&code, &alloc).unwrap_or_else(|e| {
            panic!(
                "{}: {e}\n{}\n{}\n{}",
                case.name,
                luabpf_compiler::ir::display(&case.f),
                alloc.display(&case.f),
                disasm(&code)
            )
        });
    }
}

/// Thousands of values live at once: refused with StackTooLarge, quickly.
#[test]
fn huge_pressure_is_refused_quickly() {
    let mut b = Fb::new("huge");
    let vs: Vec<Value> = (0..3000).map(|k| b.konst(k)).collect();
    let acc = b.konst(0);
    for &v in &vs {
        b.bin_to(acc, BinOp::Add, acc, v);
    }
    b.term(Terminator::Return(Operand::Value(acc)));
    let t = std::time::Instant::now();
    match allocate(&b.f) {
        Err(AllocError::StackTooLarge { needed }) => assert!(needed > 3000 * 8 - 100, "{needed}"),
        other => panic!("{:?}", other.map(|a| a.frame_size())),
    }
    assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
}
