//! Emission: allocated IR -> BPF instructions with one source location per slot.
//!
//! Blocks are laid out in layout.rs's order (reverse post-order; a shared `return k` after
//! the block that falls into it, a loop's constant return last) and branches fall through
//! where they can: a `Branch` whose `then_` block comes next is emitted as the negated
//! condition to `else_`; an unconditional jump to the next block disappears. Code is first built with symbolic
//! block labels, then a small peephole threads jumps to jumps, drops code left unreachable,
//! turns `if cc goto L1; ja L2; L1:` into `if !cc goto L2`, and drops jumps to the next
//! instruction (`ja +0`); only then are offsets resolved (each must fit an i16). Moves of a
//! register to itself are never emitted.
//!
//! Register conventions come from `regalloc`: r0 is the scratch (and the call result and
//! return value; a call result lives on in r0 where `regalloc` found that nothing here needs
//! r0 while it is live), `Allocation::scratch2` (r5) exists only when an instruction needs two
//! operands brought in from spill slots. Spills and fills are always 8-byte accesses.
//!
//! Choices worth knowing when reading the output:
//! - `Sext` uses the cpu v4 `movsx` (`r1 = (s8)r2`), one instruction.
//! - `SDiv`/`SMod` use the cpu v4 signed forms (`off = 1`), with an immediate divisor in the
//!   K form. A constant zero divisor is folded (BPF semantics: `x / 0 = 0`, `x % 0 = x`);
//!   the verifier refuses a K-form division by zero.
//! - Immediate shift counts are taken modulo 64 (the verifier refuses larger ones).
//! - `Store` of an immediate goes through a register (`BPF_ST` into a ctx pointer is refused
//!   by the verifier and `Store` does not know its base's kind); `StoreSlot` uses `BPF_ST`.
//! - Call arguments and entry `Arg`s are parallel moves (r0 breaks cycles).
//! - A spilled value read in the block that spilled or filled it, before its register is
//!   written, is read from that register (`Emitter::held`): no load straight after a store.

use crate::ir::{BinOp, Block, Function, Inst, Operand, Terminator, Value};
use crate::regalloc::{Allocation, Loc};
use cranelift_entity::SecondaryMap;
use runtime_bpf::isa::{
    AluOp, Insn, JmpOp, Reg, Size, BPF_ALU64, BPF_ATOMIC, BPF_JMP, BPF_JMP32, BPF_K, BPF_ST, BPF_STX, BPF_X, R0, R10,
    STACK_SIZE,
};
use runtime_bpf::object::{ProgramCode, SourceLoc};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmitError {
    /// A jump does not fit the 16-bit offset of a BPF jump (the program is too long).
    TooLarge { offset: i64, loc: SourceLoc },
    /// IR the backend cannot encode (a bug in an earlier stage).
    Unsupported { what: String, loc: SourceLoc },
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmitError::TooLarge { offset, .. } => write!(
                f,
                "a jump spans {offset} instructions; BPF jumps reach at most 32767: the program is too long"
            ),
            EmitError::Unsupported { what, .. } => write!(f, "internal error in code generation: {what}"),
        }
    }
}

impl std::error::Error for EmitError {}

#[derive(Clone, Debug)]
enum Reloc {
    None,
    Map(usize),
    Kfunc(String),
}

#[derive(Clone, Debug)]
enum Item {
    Label(Block),
    Insn {
        insn: Insn,
        loc: SourceLoc,
        target: Option<Block>,
        reloc: Reloc,
    },
}

/// A move source in a parallel move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    Reg(Reg),
    Stack(i16),
    Imm(i64),
}

fn fits_i32(i: i64) -> bool {
    i32::try_from(i).is_ok()
}

fn is_cond_jump(op: JmpOp) -> bool {
    !matches!(op, JmpOp::Ja | JmpOp::Call | JmpOp::Exit | JmpOp::Jcond)
}

struct Emitter<'a> {
    f: &'a Function,
    alloc: &'a Allocation,
    items: Vec<Item>,
    loc: SourceLoc,
    /// Stack addresses only a call argument reads: computed in the argument register at the
    /// call (`r4 = r10; r4 += -8`), not at their definition and then copied there.
    at_call: SecondaryMap<Value, Option<i16>>,
    /// Spill slots whose value a register still holds, since the spill or fill that put it
    /// there in this block: a fill from one of them reads that register instead. The entry
    /// block spills an argument that lives on the stack (the context, when r6-r9 are taken)
    /// and then reads it at once; without this it would store and load it back, a store
    /// forwarding's latency on every packet's path.
    held: Vec<(i16, Reg)>,
}

type R<T> = Result<T, EmitError>;

impl<'a> Emitter<'a> {
    fn err<T>(&self, what: impl Into<String>) -> R<T> {
        Err(EmitError::Unsupported {
            what: what.into(),
            loc: self.loc,
        })
    }

    /// Forgets what `insn` overwrites among the `held` slots and registers.
    fn forget_written(&mut self, insn: &Insn) {
        if self.held.is_empty() {
            return;
        }
        let class = insn.class();
        let dst = Reg(insn.dst);
        if class == BPF_ST || class == BPF_STX {
            // A store into a spill slot (only spills and fills use them: an IR slot's pointer
            // stays inside its slot); an atomic operation may also write its source register.
            // (Taken as 8 bytes wide, whatever its size: forgetting more is only slower.)
            let (lo, hi) = (insn.off as i32, insn.off as i32 + 8);
            let atomic_src = (insn.code & 0xe0 == BPF_ATOMIC).then_some(Reg(insn.src));
            self.held.retain(|&(off, r)| {
                let overlaps = dst == R10 && (off as i32) < hi && lo < off as i32 + 8;
                !overlaps && Some(r) != atomic_src
            });
        } else if class == BPF_JMP && insn.code & 0xf0 == JmpOp::Call as u8 {
            self.held.retain(|&(_, r)| r.0 > 5);
        } else if class != BPF_JMP && class != BPF_JMP32 {
            self.held.retain(|&(_, r)| r != dst);
        }
    }

    fn push(&mut self, insn: Insn) {
        self.forget_written(&insn);
        self.items.push(Item::Insn {
            insn,
            loc: self.loc,
            target: None,
            reloc: Reloc::None,
        });
    }

    fn push_wide(&mut self, pair: [Insn; 2], reloc: Reloc) {
        self.forget_written(&pair[0]);
        self.items.push(Item::Insn {
            insn: pair[0],
            loc: self.loc,
            target: None,
            reloc,
        });
        self.items.push(Item::Insn {
            insn: pair[1],
            loc: self.loc,
            target: None,
            reloc: Reloc::None,
        });
    }

    fn push_jump(&mut self, insn: Insn, target: Block) {
        self.items.push(Item::Insn {
            insn,
            loc: self.loc,
            target: Some(target),
            reloc: Reloc::None,
        });
    }

    fn loc_of(&self, v: Value) -> R<Loc> {
        match self.alloc.loc(v) {
            Some(l) => Ok(l),
            None => self.err(format!("{v} has no location")),
        }
    }

    fn scratch2(&self) -> R<Reg> {
        match self.alloc.scratch2() {
            Some(r) => Ok(r),
            None => self.err("a second scratch register is needed but none was reserved"),
        }
    }

    /// The other scratch: r0 unless `busy` is r0.
    fn other_scratch(&self, busy: Reg) -> R<Reg> {
        if busy == R0 {
            self.scratch2()
        } else {
            Ok(R0)
        }
    }

    fn mov(&mut self, dst: Reg, src: Reg) {
        if dst != src {
            self.push(Insn::mov64_reg(dst, src));
        }
    }

    fn mov_imm(&mut self, dst: Reg, imm: i64) {
        if fits_i32(imm) {
            self.push(Insn::mov64_imm(dst, imm as i32));
        } else {
            self.push_wide(Insn::ld_imm64(dst, imm), Reloc::None);
        }
    }

    fn fill(&mut self, dst: Reg, off: i16) {
        self.push(Insn::load(Size::DW, dst, R10, off));
        self.held.push((off, dst));
    }

    fn spill(&mut self, off: i16, src: Reg) {
        self.push(Insn::store_reg(Size::DW, R10, off, src));
        self.held.push((off, src));
    }

    /// A register holding `v`: its own, one still holding its spill slot (`held`), or
    /// `scratch` after a fill. Callers only read the register returned.
    fn read(&mut self, v: Value, scratch: Reg) -> R<Reg> {
        Ok(match self.loc_of(v)? {
            Loc::Reg(r) => r,
            Loc::Stack(off) => self.read_slot(off, scratch),
        })
    }

    /// A register holding spill slot `off`: one that still does (`held`), or `scratch`
    /// after a fill.
    fn read_slot(&mut self, off: i16, scratch: Reg) -> Reg {
        match self.held.iter().find(|&&(o, _)| o == off) {
            Some(&(_, r)) => r,
            None => {
                self.fill(scratch, off);
                scratch
            }
        }
    }

    /// Copies `v` into `dst`.
    fn read_into(&mut self, dst: Reg, v: Value) -> R<()> {
        match self.loc_of(v)? {
            Loc::Reg(r) => self.mov(dst, r),
            Loc::Stack(off) => self.fill(dst, off),
        }
        Ok(())
    }

    /// The register to compute `v` in: its own, or r0 when it lives on the stack.
    fn target(&self, v: Value) -> R<Reg> {
        Ok(match self.loc_of(v)? {
            Loc::Reg(r) => r,
            Loc::Stack(_) => R0,
        })
    }

    /// Stores the computed `reg` to `v`'s home if that is a spill slot.
    fn finish(&mut self, v: Value, reg: Reg) -> R<()> {
        match self.loc_of(v)? {
            Loc::Reg(r) => self.mov(r, reg),
            Loc::Stack(off) => self.spill(off, reg),
        }
        Ok(())
    }

    /// Offset from r10 of `slot + off` for an access of `bytes` bytes, checked.
    fn slot_offset(&self, slot: crate::ir::Slot, off: u32, bytes: u32) -> R<i16> {
        let size = self.f.slots[slot].size;
        if off as u64 + bytes as u64 > size as u64 {
            return self.err(format!(
                "access [{slot}+{off}] of {bytes} bytes is outside the {size}-byte slot"
            ));
        }
        let o = self.alloc.slot_offset(slot) as i64 + off as i64;
        if o < -(STACK_SIZE as i64) || o + bytes as i64 > 0 {
            return self.err(format!("stack offset {o} is outside the frame"));
        }
        Ok(o as i16)
    }

    // ---- parallel moves ---------------------------------------------------------------

    /// Performs all `(dst, src)` moves as if simultaneously. Destinations must be distinct;
    /// r0 must be neither a source nor a destination (it breaks cycles).
    fn parallel_move(&mut self, moves: &[(Loc, Src)]) {
        // 1. Into spill slots (reads registers before any is overwritten).
        for &(d, s) in moves {
            if let Loc::Stack(off) = d {
                match s {
                    Src::Reg(r) => self.spill(off, r),
                    Src::Stack(o) if o == off => {}
                    Src::Stack(o) => {
                        self.fill(R0, o);
                        self.spill(off, R0);
                    }
                    Src::Imm(i) if fits_i32(i) => self.push(Insn::store_imm(Size::DW, R10, off, i as i32)),
                    Src::Imm(i) => {
                        self.mov_imm(R0, i);
                        self.spill(off, R0);
                    }
                }
            }
        }
        // 2. Register to register, breaking cycles through r0.
        let mut pending: Vec<(Reg, Reg)> = moves
            .iter()
            .filter_map(|&(d, s)| match (d, s) {
                (Loc::Reg(d), Src::Reg(s)) if d != s => Some((d, s)),
                _ => None,
            })
            .collect();
        while !pending.is_empty() {
            if let Some(i) = pending.iter().position(|&(d, _)| !pending.iter().any(|&(_, s)| s == d)) {
                let (d, s) = pending.remove(i);
                self.mov(d, s);
            } else {
                let d = pending[0].0;
                self.mov(R0, d);
                for m in pending.iter_mut() {
                    if m.1 == d {
                        m.1 = R0;
                    }
                }
            }
        }
        // 3. Fills and constants into registers.
        for &(d, s) in moves {
            if let Loc::Reg(d) = d {
                match s {
                    Src::Reg(_) => {}
                    Src::Stack(o) => self.fill(d, o),
                    Src::Imm(i) => self.mov_imm(d, i),
                }
            }
        }
    }

    fn operand_src(&self, o: &Operand) -> R<Src> {
        Ok(match *o {
            Operand::Imm(i) => Src::Imm(i),
            Operand::Value(v) => match self.loc_of(v)? {
                Loc::Reg(r) => Src::Reg(r),
                Loc::Stack(off) => Src::Stack(off),
            },
        })
    }

    // ---- instructions -----------------------------------------------------------------

    /// `d op= src` where `src` is a register or an i32 immediate.
    fn alu(&mut self, op: BinOp, d: Reg, src: Result<Reg, i32>) {
        let (aop, signed) = match op {
            BinOp::Add => (AluOp::Add, false),
            BinOp::Sub => (AluOp::Sub, false),
            BinOp::Mul => (AluOp::Mul, false),
            BinOp::UDiv => (AluOp::Div, false),
            BinOp::UMod => (AluOp::Mod, false),
            BinOp::SDiv => (AluOp::Div, true),
            BinOp::SMod => (AluOp::Mod, true),
            BinOp::Or => (AluOp::Or, false),
            BinOp::And => (AluOp::And, false),
            BinOp::Xor => (AluOp::Xor, false),
            BinOp::Lsh => (AluOp::Lsh, false),
            BinOp::Rsh => (AluOp::Rsh, false),
            BinOp::Arsh => (AluOp::Arsh, false),
        };
        match src {
            Ok(r) if signed => self.push(Insn::alu64_reg_signed(aop, d, r)),
            Ok(r) => self.push(Insn::alu64_reg(aop, d, r)),
            Err(0) if matches!(aop, AluOp::Div) => self.push(Insn::mov64_imm(d, 0)),
            Err(0) if matches!(aop, AluOp::Mod) => {}
            Err(i) if signed => self.push(Insn::new(BPF_ALU64 | BPF_K | aop as u8, d.0, 0, 1, i)),
            Err(i) if matches!(aop, AluOp::Lsh | AluOp::Rsh | AluOp::Arsh) => {
                self.push(Insn::alu64_imm(aop, d, i & 63))
            }
            // By a power of two, the unsigned forms are a shift or a mask: the JIT's multiply
            // takes three cycles and its divide tens, a shift one. The verifier also tracks a
            // shift's bounds exactly, where older kernels forget a product above 2^32 and any
            // quotient.
            Err(i) if i > 0 && i & (i - 1) == 0 && matches!(aop, AluOp::Mul | AluOp::Div | AluOp::Mod) => {
                let k = i.trailing_zeros() as i32;
                match aop {
                    AluOp::Mod => self.push(Insn::alu64_imm(AluOp::And, d, i - 1)),
                    _ if k == 0 => {}
                    AluOp::Mul => self.push(Insn::alu64_imm(AluOp::Lsh, d, k)),
                    _ => self.push(Insn::alu64_imm(AluOp::Rsh, d, k)),
                }
            }
            Err(i) => self.push(Insn::alu64_imm(aop, d, i)),
        }
    }

    fn bin(&mut self, op: BinOp, dst: Value, a: Value, b: &Operand) -> R<()> {
        let d = self.target(dst)?;
        let commutative = matches!(op, BinOp::Add | BinOp::Mul | BinOp::Or | BinOp::And | BinOp::Xor);
        match *b {
            Operand::Imm(i) if fits_i32(i) => {
                self.read_into(d, a)?;
                self.alu(op, d, Err(i as i32));
            }
            Operand::Imm(i) => {
                self.read_into(d, a)?;
                let s = self.other_scratch(d)?;
                self.mov_imm(s, i);
                self.alu(op, d, Ok(s));
            }
            Operand::Value(vb) => match self.loc_of(vb)? {
                Loc::Reg(rb) if rb == d && self.loc_of(a)? != Loc::Reg(d) => {
                    // dst shares b's register: `d = a` would destroy b.
                    if commutative {
                        let ra = self.read(a, R0)?;
                        self.alu(op, d, Ok(ra));
                    } else {
                        self.read_into(R0, a)?;
                        self.alu(op, R0, Ok(rb));
                        self.mov(d, R0);
                    }
                }
                Loc::Reg(rb) => {
                    self.read_into(d, a)?;
                    self.alu(op, d, Ok(rb));
                }
                Loc::Stack(off) => {
                    self.read_into(d, a)?;
                    let s = self.other_scratch(d)?;
                    self.fill(s, off);
                    self.alu(op, d, Ok(s));
                }
            },
        }
        self.finish(dst, d)
    }

    /// `d = src; <op on d>` for the unary operations.
    fn unary(&mut self, dst: Value, src: Value, op: impl FnOnce(Reg) -> Vec<Insn>) -> R<()> {
        let d = self.target(dst)?;
        self.read_into(d, src)?;
        for i in op(d) {
            self.push(i);
        }
        self.finish(dst, d)
    }

    fn call(&mut self, args: &[Operand], dst: Option<Value>, call: Insn, reloc: Reloc) -> R<()> {
        if args.len() > 5 {
            return self.err(format!("a call with {} arguments (at most 5)", args.len()));
        }
        let mut moves = Vec::new();
        let mut addresses = Vec::new();
        for (i, a) in args.iter().enumerate() {
            let r = Reg(i as u8 + 1);
            match a {
                Operand::Value(v) if self.at_call[*v].is_some() => addresses.push((r, self.at_call[*v].unwrap_or(0))),
                _ => moves.push((Loc::Reg(r), self.operand_src(a)?)),
            }
        }
        self.parallel_move(&moves);
        // After the moves: nothing reads these argument registers any more.
        for (r, o) in addresses {
            self.push(Insn::mov64_reg(r, R10));
            if o != 0 {
                self.push(Insn::alu64_imm(AluOp::Add, r, o as i32));
            }
        }
        self.forget_written(&call);
        self.items.push(Item::Insn {
            insn: call,
            loc: self.loc,
            target: None,
            reloc,
        });
        if let Some(d) = dst {
            self.finish(d, R0)?;
        }
        Ok(())
    }

    fn inst(&mut self, inst: &Inst) -> R<()> {
        match inst {
            Inst::Const { dst, imm } => match self.loc_of(*dst)? {
                Loc::Reg(r) => self.mov_imm(r, *imm),
                Loc::Stack(off) => self.parallel_move(&[(Loc::Stack(off), Src::Imm(*imm))]),
            },
            Inst::Mov { dst, src } => {
                let s = self.operand_src(&Operand::Value(*src))?;
                let d = self.loc_of(*dst)?;
                self.parallel_move(&[(d, s)]);
            }
            Inst::Bin { op, dst, a, b } => self.bin(*op, *dst, *a, b)?,
            Inst::Neg { dst, src } => self.unary(*dst, *src, |d| vec![Insn::neg64(d)])?,
            Inst::Bswap { dst, src, bits } => {
                if !matches!(bits, 16 | 32 | 64) {
                    return self.err(format!("bswap{bits}"));
                }
                let bits = *bits as i32;
                self.unary(*dst, *src, |d| vec![Insn::to_be(d, bits)])?
            }
            Inst::Zext { dst, src, bits } => match bits {
                8 | 16 => {
                    let mask = if *bits == 8 { 0xff } else { 0xffff };
                    self.unary(*dst, *src, |d| vec![Insn::alu64_imm(AluOp::And, d, mask)])?
                }
                32 => {
                    let d = self.target(*dst)?;
                    let s = self.read(*src, R0)?;
                    self.push(Insn::alu32_reg(AluOp::Mov, d, s));
                    self.finish(*dst, d)?;
                }
                _ => return self.err(format!("zext{bits}")),
            },
            Inst::Sext { dst, src, bits } => {
                if !matches!(bits, 8 | 16 | 32) {
                    return self.err(format!("sext{bits}"));
                }
                let d = self.target(*dst)?;
                let s = self.read(*src, R0)?;
                self.push(Insn::new(
                    BPF_ALU64 | BPF_X | AluOp::Mov as u8,
                    d.0,
                    s.0,
                    *bits as i16,
                    0,
                ));
                self.finish(*dst, d)?;
            }
            Inst::Load { dst, base, off, size } => {
                let b = self.read(*base, R0)?;
                let d = self.target(*dst)?;
                self.push(Insn::load(*size, d, b, *off));
                self.finish(*dst, d)?;
            }
            Inst::Store { base, off, src, size } => {
                let b = self.read(*base, R0)?;
                let s = match *src {
                    Operand::Value(v) => {
                        let sc = self.other_scratch(b);
                        match self.loc_of(v)? {
                            Loc::Reg(r) => r,
                            Loc::Stack(o) => {
                                let sc = sc?;
                                self.fill(sc, o);
                                sc
                            }
                        }
                    }
                    Operand::Imm(i) => {
                        let sc = self.other_scratch(b)?;
                        self.mov_imm(sc, truncate(i, *size));
                        sc
                    }
                };
                self.push(Insn::store_reg(*size, b, *off, s));
            }
            Inst::LoadSlot { dst, slot, off, size } => {
                let o = self.slot_offset(*slot, *off, size.bytes())?;
                let d = self.target(*dst)?;
                self.push(Insn::load(*size, d, R10, o));
                self.finish(*dst, d)?;
            }
            Inst::LoadSlotIndexed {
                dst,
                slot,
                index,
                end,
                size,
            } => {
                // `end` bounds the index (the verifier sees it from the index's range).
                let o = self.slot_offset(*slot, 0, *end)?;
                let i = self.read(*index, R0)?;
                let t = match self.target(*dst)? {
                    t if t != i => t,
                    _ => self.other_scratch(i)?,
                };
                self.push(Insn::mov64_reg(t, R10));
                self.push(Insn::alu64_reg(AluOp::Add, t, i));
                self.push(Insn::load(*size, t, t, o));
                self.finish(*dst, t)?;
            }
            Inst::StoreSlot { slot, off, src, size } => {
                let o = self.slot_offset(*slot, *off, size.bytes())?;
                match *src {
                    Operand::Value(v) => {
                        let s = self.read(v, R0)?;
                        self.push(Insn::store_reg(*size, R10, o, s));
                    }
                    Operand::Imm(i) => {
                        let i = truncate(i, *size);
                        if fits_i32(i) {
                            self.push(Insn::store_imm(*size, R10, o, i as i32));
                        } else {
                            self.mov_imm(R0, i);
                            self.push(Insn::store_reg(*size, R10, o, R0));
                        }
                    }
                }
            }
            Inst::SlotAddr { dst, .. } if self.at_call[*dst].is_some() => {}
            Inst::SlotAddr { dst, slot, off } => {
                let o = self.slot_offset(*slot, *off, 0)?;
                let d = self.target(*dst)?;
                self.push(Insn::mov64_reg(d, R10));
                if o != 0 {
                    self.push(Insn::alu64_imm(AluOp::Add, d, o as i32));
                }
                self.finish(*dst, d)?;
            }
            Inst::MapAddr { dst, map } => {
                let d = self.target(*dst)?;
                self.push_wide(Insn::ld_map_fd(d), Reloc::Map(*map as usize));
                self.finish(*dst, d)?;
            }
            Inst::AtomicAdd { base, off, src, size } => {
                if !matches!(size, Size::W | Size::DW) {
                    return self.err("atomic add of 1 or 2 bytes");
                }
                let b = self.read(*base, R0)?;
                let s = match self.loc_of(*src)? {
                    Loc::Reg(r) => r,
                    Loc::Stack(o) => {
                        let sc = self.other_scratch(b)?;
                        self.fill(sc, o);
                        sc
                    }
                };
                self.push(Insn::atomic_add(*size, b, *off, s));
            }
            Inst::Call { helper, args, dst } => self.call(args, *dst, Insn::call_helper(*helper), Reloc::None)?,
            Inst::CallKfunc { name, args, dst } => {
                self.call(args, *dst, Insn::call_kfunc(0), Reloc::Kfunc(name.clone()))?
            }
            // The callee's index stays in imm until the program's functions are linked
            // (`compile::link`), which knows where each function starts.
            Inst::CallLocal { func, args, dst } => {
                self.call(args, *dst, Insn::call_local(*func as i32), Reloc::None)?
            }
            Inst::Arg { .. } => return self.err("an Arg that is not at the start of the entry block"),
        }
        Ok(())
    }

    fn term(&mut self, term: &Terminator, next: Option<Block>) -> R<()> {
        match term {
            Terminator::Jump(b) => self.push_jump(Insn::ja(0), *b),
            Terminator::Branch { op, a, b, then_, else_ } => {
                if !is_cond_jump(*op) {
                    return self.err(format!("branch on {op:?}"));
                }
                if then_ == else_ {
                    self.push_jump(Insn::ja(0), *then_);
                    return Ok(());
                }
                let ra = self.read(*a, R0)?;
                let (op, target, other) = if Some(*then_) == next && op.negate() != *op {
                    (op.negate(), *else_, *then_)
                } else {
                    (*op, *then_, *else_)
                };
                let insn = match *b {
                    Operand::Imm(i) if fits_i32(i) => Insn::jmp_imm(op, ra, i as i32, 0),
                    Operand::Imm(i) => {
                        let s = self.other_scratch(ra)?;
                        self.mov_imm(s, i);
                        Insn::jmp_reg(op, ra, s, 0)
                    }
                    Operand::Value(v) => {
                        let s = match self.loc_of(v)? {
                            Loc::Reg(r) => r,
                            Loc::Stack(o) => {
                                let s = self.other_scratch(ra)?;
                                self.fill(s, o);
                                s
                            }
                        };
                        Insn::jmp_reg(op, ra, s, 0)
                    }
                };
                self.push_jump(insn, target);
                self.push_jump(Insn::ja(0), other);
            }
            Terminator::MayGoto { exhausted, cont } => {
                if exhausted != cont {
                    self.push_jump(Insn::may_goto(0), *exhausted);
                }
                self.push_jump(Insn::ja(0), *cont);
            }
            // The next block returns the same constant: fall into it (`layout`).
            Terminator::Return(Operand::Imm(k)) if next.is_some_and(|n| self.f.returned_constant(n) == Some(*k)) => {}
            Terminator::Return(v) => {
                let s = self.operand_src(v)?;
                match s {
                    Src::Reg(r) => self.mov(R0, r),
                    Src::Stack(o) => self.fill(R0, o),
                    Src::Imm(i) => self.mov_imm(R0, i),
                }
                self.push(Insn::exit());
            }
        }
        Ok(())
    }
}

/// The low `size` bytes of `i`, zero-extended (what a store of that width writes).
fn truncate(i: i64, size: Size) -> i64 {
    match size {
        Size::B => i as u8 as i64,
        Size::H => i as u16 as i64,
        Size::W => i as u32 as i32 as i64, // sign pattern kept: st/stx write the low 4 bytes
        Size::DW => i,
    }
}

/// Index of the first real instruction at or after `i` (skipping labels and removed items).
fn next_real(items: &[Item], keep: &[bool], mut i: usize) -> Option<usize> {
    while i < items.len() {
        if keep[i] && matches!(items[i], Item::Insn { .. }) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn is_ja(insn: &Insn) -> bool {
    insn.code == BPF_JMP | JmpOp::Ja as u8
}

/// Jump threading, removal of unreachable code, branch inversion over a lone `ja`, removal
/// of jumps to the next instruction.
fn peephole(items: &mut [Item], label_at: &SecondaryMap<Block, usize>) -> Vec<bool> {
    let mut keep = vec![true; items.len()];
    // Thread: a jump to a label whose first instruction is `ja L2` goes to L2 directly.
    for i in 0..items.len() {
        let Item::Insn {
            target: Some(mut t), ..
        } = items[i]
        else {
            continue;
        };
        for _ in 0..8 {
            match next_real(items, &keep, label_at[t]) {
                Some(j) if j != i => match &items[j] {
                    Item::Insn {
                        insn: ji,
                        target: Some(t2),
                        ..
                    } if is_ja(ji) && *t2 != t => t = *t2,
                    _ => break,
                },
                _ => break,
            }
        }
        if let Item::Insn { target, .. } = &mut items[i] {
            *target = Some(t);
        }
    }
    // Threading can leave code no jump reaches any more (an empty block's `ja`): the
    // verifier refuses unreachable instructions, so drop everything not reachable from the
    // first instruction.
    let mut reached = vec![false; items.len()];
    let mut work = vec![0usize];
    while let Some(i) = work.pop() {
        if i >= items.len() || reached[i] {
            continue;
        }
        reached[i] = true;
        match &items[i] {
            Item::Label(_) => work.push(i + 1),
            Item::Insn { insn, target, .. } => {
                if insn.is_ld_imm64() {
                    reached[i + 1] = true;
                    work.push(i + 2);
                    continue;
                }
                if let Some(t) = target {
                    work.push(label_at[*t]);
                }
                // A `ja` without a target is a prune hint, `ja +0`: it falls through.
                let ends = (is_ja(insn) && target.is_some()) || insn.code == BPF_JMP | JmpOp::Exit as u8;
                if !ends {
                    work.push(i + 1);
                }
            }
        }
    }
    for (i, it) in items.iter().enumerate() {
        if matches!(it, Item::Insn { .. }) && !reached[i] {
            keep[i] = false;
        }
    }
    // `if cc goto L1; ja L2; L1:` becomes `if !cc goto L2; L1:` (a branch whose fall-through
    // block was only a jump), when nothing else jumps between the two.
    let mut referenced: SecondaryMap<Block, u32> = SecondaryMap::new();
    for (i, it) in items.iter().enumerate() {
        if let Item::Insn { target: Some(t), .. } = it {
            if keep[i] {
                referenced[*t] += 1;
            }
        }
    }
    for i in 0..items.len() {
        let Item::Insn {
            insn, target: Some(t1), ..
        } = &items[i]
        else {
            continue;
        };
        let (insn, t1) = (*insn, *t1);
        let Some(op) = jmp_op(insn.code) else { continue };
        if !keep[i] || insn.class() != BPF_JMP || !is_cond_jump(op) || op.negate() == op {
            continue;
        }
        let Some(j) = next_real(items, &keep, i + 1) else {
            continue;
        };
        let Item::Insn {
            insn: ji,
            target: Some(t2),
            ..
        } = &items[j]
        else {
            continue;
        };
        let t2 = *t2;
        if !is_ja(ji)
            || items[i + 1..j]
                .iter()
                .any(|it| matches!(it, Item::Label(b) if referenced[*b] > 0))
        {
            continue;
        }
        let mut k = j + 1;
        let mut lands = false;
        while k < items.len() {
            match &items[k] {
                Item::Label(b) if *b == t1 => {
                    lands = true;
                    break;
                }
                Item::Label(_) => {}
                Item::Insn { .. } if !keep[k] => {}
                Item::Insn { .. } => break,
            }
            k += 1;
        }
        if lands {
            keep[j] = false;
            referenced[t1] -= 1;
            if let Item::Insn { insn, target, .. } = &mut items[i] {
                insn.code = (insn.code & 0x0f) | op.negate() as u8;
                *target = Some(t2);
            }
        }
    }
    // Remove jumps (unconditional or conditional, never may_goto) whose target is the next
    // instruction; backwards, so a removal can expose an earlier one.
    for i in (0..items.len()).rev() {
        let Item::Insn {
            insn, target: Some(t), ..
        } = &items[i]
        else {
            continue;
        };
        if !(is_ja(insn) || (insn.class() == BPF_JMP && is_cond_jump_code(insn.code))) {
            continue;
        }
        // Only labels (or removed items) between i and label t?
        let mut j = i + 1;
        let mut removable = false;
        while j < items.len() {
            match &items[j] {
                Item::Label(b) if b == t => {
                    removable = true;
                    break;
                }
                Item::Label(_) => {}
                Item::Insn { .. } if !keep[j] => {}
                Item::Insn { .. } => break,
            }
            j += 1;
        }
        if removable {
            keep[i] = false;
        }
    }
    drop_moves_back(items, &mut keep);
    keep
}

/// `ra = rb; rb = ra`: the second copy changes nothing (the allocator leaves such pairs where
/// a value moves into a loop variable's register and back), unless a jump lands between them.
fn drop_moves_back(items: &[Item], keep: &mut [bool]) {
    let mov = BPF_ALU64 | BPF_X | AluOp::Mov as u8;
    let is_mov = |insn: &Insn| insn.code == mov && insn.off == 0 && insn.imm == 0;
    let mut referenced: SecondaryMap<Block, bool> = SecondaryMap::new();
    for (i, it) in items.iter().enumerate() {
        if let Item::Insn { target: Some(t), .. } = it {
            if keep[i] {
                referenced[*t] = true;
            }
        }
    }
    for i in 0..items.len() {
        let Item::Insn { insn: a, .. } = &items[i] else {
            continue;
        };
        if !keep[i] || !is_mov(a) {
            continue;
        }
        let Some(j) = next_real(items, keep, i + 1) else {
            continue;
        };
        let Item::Insn { insn: b, .. } = &items[j] else {
            continue;
        };
        let landed = items[i + 1..j]
            .iter()
            .any(|it| matches!(it, Item::Label(l) if referenced[*l]));
        if is_mov(b) && b.dst == a.src && b.src == a.dst && !landed {
            keep[j] = false;
        }
    }
}

/// The jump operation of a JMP/JMP32 opcode.
fn jmp_op(code: u8) -> Option<JmpOp> {
    use JmpOp::*;
    Some(match code & 0xf0 {
        0x00 => Ja,
        0x10 => Jeq,
        0x20 => Jgt,
        0x30 => Jge,
        0x40 => Jset,
        0x50 => Jne,
        0x60 => Jsgt,
        0x70 => Jsge,
        0x80 => Call,
        0x90 => Exit,
        0xa0 => Jlt,
        0xb0 => Jle,
        0xc0 => Jslt,
        0xd0 => Jsle,
        0xe0 => Jcond,
        _ => return None,
    })
}

fn is_cond_jump_code(code: u8) -> bool {
    let op = code & 0xf0;
    !matches!(op, 0x00 | 0x80 | 0x90 | 0xe0)
}

/// Emits `f` with allocation `alloc` as the program code of ELF section `section`.
pub fn emit(f: &Function, alloc: &Allocation, section: &str) -> Result<ProgramCode, EmitError> {
    let order = crate::layout::order(f);
    // The hints follow the loops' shape in reverse post-order (each latch after its body); the
    // latches then move before their headers, and the blocks the hints mark keep their places.
    let hints = crate::prune_hints::blocks(f, &order);
    let order = crate::layout::latches_before_headers(f, order);
    let mut e = Emitter {
        f,
        alloc,
        items: Vec::new(),
        loc: SourceLoc::default(),
        at_call: SecondaryMap::new(),
        held: Vec::new(),
    };
    let reads = f.read_counts();
    let defs = f.def_counts();
    let mut call_reads: SecondaryMap<Value, u32> = SecondaryMap::new();
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            if let Inst::Call { args, .. } | Inst::CallKfunc { args, .. } | Inst::CallLocal { args, .. } = inst {
                for a in args {
                    if let Operand::Value(v) = a {
                        call_reads[*v] += 1;
                    }
                }
            }
        }
    }
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            if let Inst::SlotAddr { dst, slot, off } = inst {
                if defs[*dst] == 1 && reads[*dst] == 1 && call_reads[*dst] == 1 {
                    e.at_call[*dst] = Some(e.slot_offset(*slot, *off, 0)?);
                }
            }
        }
    }

    for (bi, &b) in order.iter().enumerate() {
        let data = &f.blocks[b];
        e.items.push(Item::Label(b));
        // A jump may land here from where the registers hold other things.
        e.held.clear();
        if hints[b] {
            // `ja +0` (no target: the peephole keeps it): a verifier prune point, see prune_hints.
            e.loc = data.insts.first().map_or(data.term.1, |(_, loc)| *loc);
            e.push(Insn::ja(0));
        }
        let mut insts = data.insts.as_slice();
        if bi == 0 {
            // The entry block's leading Args read r1..r5 as the kernel left them.
            let n = insts.iter().take_while(|(i, _)| matches!(i, Inst::Arg { .. })).count();
            if n > 0 {
                e.loc = insts[0].1;
                // r1..r5 hold the arguments only on entry: a jump back here would read them
                // again after they are gone.
                if order.iter().any(|&p| f.blocks[p].term.0.successors().contains(&b)) {
                    return e.err("a jump to the entry block, which reads the program's arguments");
                }
                let mut moves = Vec::new();
                for (inst, _) in &insts[..n] {
                    if let Inst::Arg { dst, index } = inst {
                        if *index > 4 {
                            return e.err(format!("argument {index} (at most 5 arguments)"));
                        }
                        moves.push((e.loc_of(*dst)?, Src::Reg(Reg(index + 1))));
                    }
                }
                e.parallel_move(&moves);
                insts = &insts[n..];
            }
        }
        for (inst, loc) in insts {
            e.loc = *loc;
            e.inst(inst)?;
        }
        e.loc = data.term.1;
        e.term(&data.term.0, order.get(bi + 1).copied())?;
    }

    let mut label_at: SecondaryMap<Block, usize> = SecondaryMap::new();
    for (i, it) in e.items.iter().enumerate() {
        if let Item::Label(b) = it {
            label_at[*b] = i;
        }
    }
    let keep = peephole(&mut e.items, &label_at);

    // Slot numbers.
    let mut slot_of = vec![0usize; e.items.len() + 1];
    let mut n = 0;
    for (i, it) in e.items.iter().enumerate() {
        slot_of[i] = n;
        if keep[i] && matches!(it, Item::Insn { .. }) {
            n += 1;
        }
    }
    slot_of[e.items.len()] = n;

    let mut code = ProgramCode {
        name: f.name.clone(),
        section: section.to_string(),
        insns: Vec::with_capacity(n),
        locs: Vec::with_capacity(n),
        map_relocs: Vec::new(),
        kfunc_relocs: Vec::new(),
        subfunctions: Vec::new(),
    };
    for (i, it) in e.items.iter().enumerate() {
        let Item::Insn {
            insn,
            loc,
            target,
            reloc,
        } = it
        else {
            continue;
        };
        if !keep[i] {
            continue;
        }
        let mut insn = *insn;
        let slot = code.insns.len();
        if let Some(t) = target {
            let off = slot_of[label_at[*t]] as i64 - (slot as i64 + 1);
            insn.off = i16::try_from(off).map_err(|_| EmitError::TooLarge { offset: off, loc: *loc })?;
        }
        match reloc {
            Reloc::None => {}
            Reloc::Map(m) => code.map_relocs.push((slot, *m)),
            Reloc::Kfunc(name) => code.kfunc_relocs.push((slot, name.clone())),
        }
        code.insns.push(insn);
        code.locs.push(*loc);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regalloc::allocate;
    use std::collections::HashMap;

    /// counter.lua's shape: the found path ends in its own `return 2`, and the shared
    /// `return 2` (failed bounds checks, the null test) is laid out after it: one `exit` in
    /// all, the null test jumps forward to it and the found path falls through.
    #[test]
    fn a_shared_return_follows_the_block_that_falls_into_it() {
        let asm = crate::compile::asm_of(
            r#"
local xdp = require "bpf.xdp"
local map = require "bpf.map"
local m = map.percpu_array("m", { key = "I4", value = "I8", entries = 256 })
return xdp.program(function(ctx)
  local p = ctx:packet()
  local k = 0
  if p:getbyte(0) == 1 then k = p:getbyte(1) end
  m[k] = (m[k] or 0) + 1
  return 2
end, { name = "t" })
"#,
        );
        assert_eq!(asm.matches("exit").count(), 1, "{asm}");
        let lines: Vec<&str> = asm.lines().collect();
        let test = lines.iter().position(|l| l.contains("if r0 == 0 goto +")).expect(&asm);
        assert!(lines[test + 1].contains("= *(u64 *)(r0 +0)"), "{asm}");
    }

    /// Multiplying, floor-dividing and taking the modulo by a power of two cost one shift or
    /// mask each (the JIT's multiply takes three cycles, its divide tens): `* 4` is emitted as
    /// `<<= 2`, and `// 8`, `% 16` are lowered to `s>>= 3` and `&= 15`. Other constants keep
    /// the general forms.
    #[test]
    fn powers_of_two_multiply_divide_and_take_the_modulo_by_shifts_and_masks() {
        let asm = |expr: &str| {
            crate::compile::asm_of(&format!(
                r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local x, y = p:getint8(0), p:getbyte(1)
  return ({expr}) & 3
end, {{ name = "t" }})
"#
            ))
        };
        let shifts = asm("x // 8 + y % 16 + y * 4");
        for want in ["s>>= 3", "&= 15", "<<= 2"] {
            assert!(shifts.contains(want), "{want}:\n{shifts}");
        }
        for general in ["*=", "/=", "%="] {
            assert!(!shifts.contains(general), "{general}:\n{shifts}");
        }
        let general = asm("x // 6 + y % 10 + y * 12");
        for want in ["s/= ", "s%= ", "*= 12"] {
            assert!(general.contains(want), "{want}:\n{general}");
        }
    }

    /// A stack address passed to a call while another argument holds its register: made in
    /// the argument register at the call (`r4 = r10; r4 += -8`), never copied there.
    #[test]
    fn a_stack_address_argument_is_made_in_its_register() {
        let src = r#"
local xdp = require "bpf.xdp"
local function count(p, from, len)
  local n = 0
  while n < 8 and from + n < len do n = n + 1 end
  return n
end
return xdp.program(function(ctx)
  local p = ctx:packet()
  local len = #p
  for i = 0, 31 do
    if count(p, len - i, len) == 3 then return 1 end
  end
  return 2
end, { name = "t" })
"#;
        let c = crate::compile::compile_source(src, "t.lua", &Default::default())
            .unwrap_or_else(|e| panic!("{}", e.render()));
        let out = crate::compile::annotated_asm(&c.object);
        let lines: Vec<&str> = out.lines().collect();
        let calls = lines.iter().filter(|l| l.contains("call pc")).count();
        let direct = lines
            .windows(3)
            .filter(|w| w[0].ends_with("= r10") && w[1].contains("+= -") && w[2].contains("call pc"))
            .count();
        assert!(
            calls >= 1 && direct == calls,
            "every out-pointer made just before its call:\n{out}"
        );
    }

    /// `r4 = r5; r5 = r4` loses its second copy; with a jump landing between the two it stays.
    #[test]
    fn a_copy_straight_back_is_dropped_unless_a_jump_lands_between() {
        let insn = |insn: Insn, target: Option<Block>| Item::Insn {
            insn,
            loc: SourceLoc::default(),
            target,
            reloc: Reloc::None,
        };
        let (r4, r5) = (Reg(4), Reg(5));
        let l = Block::from_u32(1);
        for (jumped, expect) in [
            (false, vec![true, true, false, true]),
            (true, vec![true, true, true, true, true]),
        ] {
            let mut items = vec![
                insn(Insn::mov64_reg(r4, r5), None),
                Item::Label(l),
                insn(Insn::mov64_reg(r5, r4), None),
                insn(Insn::exit(), None),
            ];
            if jumped {
                items.insert(0, insn(Insn::new(BPF_JMP | JmpOp::Jeq as u8, 1, 0, 0, 0), Some(l)));
            }
            let mut keep = vec![true; items.len()];
            drop_moves_back(&items, &mut keep);
            assert_eq!(keep, expect, "jump landing between: {jumped}");
        }
    }

    /// What a location holds, symbolically: its own initial content or a constant.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    enum Sym {
        Reg(u8),
        Stack(i16),
        Imm(i64),
    }

    fn simulate(insns: &[Insn]) -> (HashMap<u8, Sym>, HashMap<i16, Sym>) {
        let mut regs: HashMap<u8, Sym> = (1..=9).map(|r| (r, Sym::Reg(r))).collect();
        let mut stack: HashMap<i16, Sym> = (1..=8).map(|k| (-8 * k, Sym::Stack(-8 * k))).collect();
        let mut k = 0;
        while k < insns.len() {
            let i = insns[k];
            let writes_reg = i.class() != runtime_bpf::isa::BPF_STX && i.class() != runtime_bpf::isa::BPF_ST;
            assert!(!(writes_reg && i.dst == 10), "{i:?}");
            if i.is_ld_imm64() {
                let v = (insns[k + 1].imm as i64) << 32 | i.imm as u32 as i64;
                regs.insert(i.dst, Sym::Imm(v));
                k += 2;
                continue;
            }
            let dw = BPF_DW_SIZE;
            match i.code {
                c if c == Insn::mov64_reg(R0, R0).code => {
                    regs.insert(i.dst, regs[&i.src]);
                }
                c if c == Insn::mov64_imm(R0, 0).code => {
                    regs.insert(i.dst, Sym::Imm(i.imm as i64));
                }
                c if c == Insn::load(dw, R0, R0, 0).code && i.src == 10 => {
                    regs.insert(i.dst, stack[&i.off]);
                }
                c if c == Insn::store_reg(dw, R0, 0, R0).code && i.dst == 10 => {
                    stack.insert(i.off, regs[&i.src]);
                }
                c if c == Insn::store_imm(dw, R0, 0, 0).code && i.dst == 10 => {
                    stack.insert(i.off, Sym::Imm(i.imm as i64));
                }
                _ => panic!("unexpected {i:?}"),
            }
            k += 1;
        }
        (regs, stack)
    }
    const BPF_DW_SIZE: Size = Size::DW;

    fn emitter<'a>(f: &'a Function, alloc: &'a Allocation) -> Emitter<'a> {
        Emitter {
            f,
            alloc,
            items: Vec::new(),
            loc: SourceLoc::default(),
            at_call: SecondaryMap::new(),
            held: Vec::new(),
        }
    }

    #[test]
    fn a_spill_slot_is_read_from_the_register_still_holding_it() {
        let f = Function::new("t");
        let alloc = allocate(&f).unwrap();
        let mut e = emitter(&f, &alloc);
        let count = |e: &Emitter| e.items.len();
        let (r1, r6) = (Reg(1), Reg(6));
        e.spill(-8, r1);
        e.spill(-16, r6);
        let n = count(&e);
        assert_eq!((e.read_slot(-8, R0), e.read_slot(-16, R0)), (r1, r6));
        assert_eq!(count(&e), n, "no fill while the registers hold the slots");
        // A call clobbers r1-r5: the slot spilled from r1 is filled again, r6's is not.
        e.push(Insn::call_helper(1));
        assert_eq!(e.read_slot(-8, R0), R0);
        assert_eq!(e.read_slot(-16, R0), r6);
        assert_eq!(count(&e), n + 2);
        // The fill itself is remembered, until its register is written.
        assert_eq!(e.read_slot(-8, R0), R0);
        e.push(Insn::mov64_imm(R0, 7));
        assert_eq!(e.read_slot(-8, R0), R0);
        assert_eq!(count(&e), n + 4);
        // A store over the slot forgets it.
        e.push(Insn::store_imm(Size::W, R10, -12, 0));
        assert_eq!(e.read_slot(-16, R0), R0);
        assert_eq!(count(&e), n + 6);
    }

    #[test]
    fn parallel_moves_with_cycles_fills_and_constants() {
        let f = Function::new("t");
        let alloc = allocate(&f).unwrap();
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut cycles = 0;
        for _ in 0..2000 {
            // Destinations: distinct registers r1..r9 and stack offsets -8..-32; sources:
            // registers, stack offsets -40..-64 (never a destination), immediates.
            let mut dsts: Vec<Loc> = (1..=9).map(|r| Loc::Reg(Reg(r))).collect();
            dsts.extend((1..=4).map(|k| Loc::Stack(-8 * k)));
            let n = 1 + rnd(dsts.len() as u64) as usize;
            let mut moves = Vec::new();
            for _ in 0..n {
                let d = dsts.remove(rnd(dsts.len() as u64) as usize);
                let s = match rnd(4) {
                    0 => Src::Stack(-8 * (5 + rnd(4) as i16)),
                    1 => Src::Imm(if rnd(2) == 0 {
                        rnd(100) as i64 - 50
                    } else {
                        (rnd(1 << 40) as i64) << 20
                    }),
                    _ => Src::Reg(Reg(1 + rnd(9) as u8)),
                };
                moves.push((d, s));
            }
            let mut e = emitter(&f, &alloc);
            e.parallel_move(&moves);
            let insns: Vec<Insn> = e
                .items
                .iter()
                .filter_map(|it| match it {
                    Item::Insn { insn, .. } => Some(*insn),
                    Item::Label(_) => None,
                })
                .collect();
            cycles += insns
                .iter()
                .filter(|i| **i == Insn::mov64_reg(R0, Reg(i.src)) && i.src != 0)
                .count();
            let (regs, stack) = simulate(&insns);
            for &(d, s) in &moves {
                let want = match s {
                    Src::Reg(r) => Sym::Reg(r.0),
                    Src::Stack(o) => Sym::Stack(o),
                    Src::Imm(i) => Sym::Imm(i),
                };
                let got = match d {
                    Loc::Reg(r) => regs[&r.0],
                    Loc::Stack(o) => stack[&o],
                };
                assert_eq!(got, want, "{moves:?}\n{insns:#?}");
            }
            // Registers that are not destinations keep their value.
            for r in 1..=9u8 {
                if !moves.iter().any(|m| m.0 == Loc::Reg(Reg(r))) {
                    assert_eq!(regs[&r], Sym::Reg(r), "{moves:?}");
                }
            }
        }
        assert!(cycles > 100, "only {cycles} cycles broken");
    }
}
