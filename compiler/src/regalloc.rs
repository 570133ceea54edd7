//! Register allocation: every virtual register gets one home for its whole life, a BPF
//! register or an 8-byte stack spill slot; every IR stack `Slot` gets its frame offset.
//!
//! # Method
//!
//! 1. Liveness by backward dataflow (`liveness`), iterative.
//! 2. Positions: the reachable blocks are numbered in reverse post-order (the emitter's
//!    layout). Instruction `k` of the walk reads its operands at position `2k` and writes its
//!    result at `2k + 1`; a terminator reads at its even position. A value's interval is the
//!    set of ranges of positions where it is live (built backwards per block from the
//!    live-out sets), with lifetime holes: values are not SSA, but one interval per value
//!    (one home for its whole life) is still exact about *where* it is live, and a value
//!    live into a loop header is live through every block of the loop.
//! 3. Linear scan over intervals sorted by start (Poletto & Sarkar, with Wimmer's lifetime
//!    holes but without interval splitting): a register is free for an interval when no
//!    interval holding it intersects it. When none is free, the register whose conflicting
//!    intervals end furthest away is taken from them if they end after the current one
//!    (they go to the stack), else the current interval goes to the stack.
//!
//! # Registers
//!
//! - r10 is the frame pointer; r0 is the emitter's scratch (it is also the call result and
//!   the return value, so linear scan never allocates it). Afterwards a call result stays
//!   in r0, where the call left it, when no call comes while it is live and the emitter
//!   writes r0 nowhere there (`keep_call_results_in_r0`): the map lookup's
//!   `if r0 == 0 goto; r1 = *(u64 *)(r0 +0)`, with no copy out of r0.
//! - r1-r9 are allocatable, except that when some instruction ends up with two operands in
//!   spill slots (or one spilled and one 64-bit immediate), the allocation is redone with
//!   r5 reserved as the second scratch (`Allocation::scratch2`). Functions that never spill
//!   keep nine registers.
//! - Calls clobber r0-r5 and the verifier treats r1-r5 as unreadable afterwards, so an
//!   interval that is live *across* a call position (one of its ranges has
//!   `start <= call < end`) may only use r6-r9 or the stack. An interval that *ends* at the call (an argument read for the last
//!   time) may use r1-r5: the emitter moves arguments into r1..r5 with a parallel move
//!   (using r0 to break cycles) before the `call`, so they are read before the clobber. Such
//!   arguments are hinted to their argument register, which usually makes the move vanish.
//! - Leading `Arg` instructions of the entry block read r1..r5 as they are on entry; the
//!   emitter performs them as one parallel move, and the allocator keeps their results
//!   mutually distinct.
//!
//! # Frame
//!
//! IR slots are placed first below r10 (largest alignment first, each at its alignment),
//! then the spill slots (8 bytes, 8-aligned). Spills and fills are always 8-byte (DW)
//! accesses, the only kind for which the verifier keeps a spilled pointer or scalar bounds.
//! Spill slots are shared between values whose lifetimes do not intersect. The frame must fit
//! the verifier's 512 bytes.

use crate::ir::{Function, Inst, Operand, Slot, Terminator, Value};
use crate::liveness::Liveness;
use cranelift_entity::{EntityRef, SecondaryMap};
use runtime_bpf::isa::{Reg, R0, R1, R5, R6, R9, STACK_SIZE};
use std::fmt;

/// Where a value lives for its whole life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Loc {
    Reg(Reg),
    /// An 8-byte spill slot at this (negative, 8-aligned) offset from r10.
    Stack(i16),
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Reg(r) => write!(f, "r{}", r.0),
            Loc::Stack(off) => write!(f, "[r10{off:+}]"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// IR slots plus spill slots need more than the verifier's 512 bytes of stack.
    StackTooLarge { needed: u32 },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::StackTooLarge { needed } => write!(
                f,
                "the program needs {needed} bytes of stack (buffers and spilled values); the kernel allows {STACK_SIZE}"
            ),
        }
    }
}

impl std::error::Error for AllocError {}

/// The result of register allocation for one function.
#[derive(Clone, Debug)]
pub struct Allocation {
    locs: SecondaryMap<Value, Option<Loc>>,
    slots: SecondaryMap<Slot, i16>,
    frame_size: u32,
    spill_slots: u32,
    scratch2: Option<Reg>,
}

impl Allocation {
    /// The home of `v`; `None` for values that appear in no reachable instruction.
    pub fn loc(&self, v: Value) -> Option<Loc> {
        self.locs.get(v).copied().flatten()
    }
    /// The r10-relative offset of the start of an IR slot (negative).
    pub fn slot_offset(&self, s: Slot) -> i16 {
        self.slots[s]
    }
    /// Bytes of stack used below r10 (IR slots, padding and spill slots); at most 512.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }
    /// Number of 8-byte spill slots.
    pub fn spill_slots(&self) -> u32 {
        self.spill_slots
    }
    /// The emitter's first scratch register (always r0).
    pub fn scratch(&self) -> Reg {
        R0
    }
    /// The second scratch register, reserved only when some instruction needs it (see the
    /// module documentation): r5 or none.
    pub fn scratch2(&self) -> Option<Reg> {
        self.scratch2
    }
    /// A listing `v3 -> r6` of every allocated value, then the slot offsets.
    pub fn display(&self, f: &Function) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for (v, _) in f.values.iter() {
            if let Some(l) = self.loc(v) {
                let _ = writeln!(s, "{v} -> {l}");
            }
        }
        for (slot, _) in f.slots.iter() {
            let _ = writeln!(s, "{slot} -> [r10{:+}]", self.slots[slot]);
        }
        let _ = writeln!(s, "frame {} bytes, {} spill slots", self.frame_size, self.spill_slots);
        s
    }
}

/// One value's lifetime: the positions where it is live, as sorted, disjoint ranges
/// (inclusive). Holes matter: a loop counter whose latch block is laid out at the end of the
/// function is not live in the code between, so a register (or a call) there does not
/// conflict with it.
#[derive(Clone, Debug)]
struct Interval {
    value: Value,
    ranges: Vec<(u32, u32)>,
    /// Live across a call: only r6-r9 or the stack.
    crosses_call: bool,
}

impl Interval {
    fn start(&self) -> u32 {
        self.ranges[0].0
    }
    fn end(&self) -> u32 {
        self.ranges[self.ranges.len() - 1].1
    }
    fn intersects(&self, other: &Interval) -> bool {
        if self.end() < other.start() || other.end() < self.start() {
            return false;
        }
        let (mut i, mut j) = (0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a, b) = (self.ranges[i], other.ranges[j]);
            if a.1 < b.0 {
                i += 1;
            } else if b.1 < a.0 {
                j += 1;
            } else {
                return true;
            }
        }
        false
    }
}

#[derive(Clone, Copy, Debug)]
enum Hint {
    Reg(Reg),
    SameAs(Value),
    /// The value is the operand of an operation written to this one (`d = bswap16 v`,
    /// `d = v + 1`), which will try v's register: a register that this one's life leaves
    /// free for `d`'s too lets the operation happen in place. A load into r5 whose swapped
    /// value must survive a call (so lives in r6-r9) is otherwise `r6 = r5; r6 = be16 r6`.
    Into(Value),
}

/// Positions, intervals and hints of a function (independent of the register set).
struct Ranges {
    /// Sorted by start.
    intervals: Vec<Interval>,
    hints: SecondaryMap<Value, Vec<Hint>>,
    /// Positions of the calls, ascending.
    calls: Vec<u32>,
    /// What is at each even position `2k`: an instruction of a block, or (`None`) its
    /// terminator.
    sites: Vec<(crate::ir::Block, Option<usize>)>,
}

fn compute_ranges(f: &Function) -> Ranges {
    const NONE: u32 = u32::MAX;
    let live = Liveness::compute(f);
    let nvals = f.values.len();
    let order = live.order();

    // Forward: block positions, call positions, hints.
    let mut bstart = Vec::with_capacity(order.len());
    let mut calls: Vec<u32> = Vec::new();
    let mut hints: SecondaryMap<Value, Vec<Hint>> = SecondaryMap::new();
    let mut leading_args: Vec<Value> = Vec::new();
    let mut last_arg_def = 0;
    let mut pos = 0u32;
    let mut sites = Vec::new();
    for (bi, &b) in order.iter().enumerate() {
        bstart.push(pos);
        let mut leading = bi == 0;
        for (k, (inst, _)) in f.blocks[b].insts.iter().enumerate() {
            sites.push((b, Some(k)));
            match inst {
                Inst::Arg { dst, index } if leading => {
                    leading_args.push(*dst);
                    last_arg_def = pos + 1;
                    hints[*dst].push(Hint::Reg(Reg(index + 1)));
                }
                Inst::Call { args, .. } | Inst::CallKfunc { args, .. } | Inst::CallLocal { args, .. } => {
                    calls.push(pos);
                    for (i, a) in args.iter().enumerate() {
                        if let Operand::Value(v) = a {
                            hints[*v].push(Hint::Reg(Reg(i as u8 + 1)));
                        }
                    }
                }
                Inst::Mov { dst, src } => {
                    // Both ways: whichever is allocated second tries the other's register,
                    // and the move disappears.
                    hints[*dst].push(Hint::SameAs(*src));
                    hints[*src].push(Hint::SameAs(*dst));
                }
                Inst::Neg { dst, src }
                | Inst::Bswap { dst, src, .. }
                | Inst::Zext { dst, src, .. }
                | Inst::Sext { dst, src, .. } => {
                    hints[*dst].push(Hint::SameAs(*src));
                    hints[*src].push(Hint::Into(*dst));
                }
                Inst::Bin { dst, a, .. } => {
                    hints[*dst].push(Hint::SameAs(*a));
                    hints[*a].push(Hint::Into(*dst));
                }
                _ => {}
            }
            if !matches!(inst, Inst::Arg { .. }) {
                leading = false;
            }
            pos += 2;
        }
        sites.push((b, None));
        pos += 2;
    }

    // Backward over each block: live ranges.
    let mut ranges: Vec<Vec<(u32, u32)>> = vec![Vec::new(); nvals];
    let mut open = vec![NONE; nvals]; // end of the range being built in this block
    let mut opened: Vec<Value> = Vec::new();
    for (bi, &b) in order.iter().enumerate() {
        let data = &f.blocks[b];
        let start = bstart[bi];
        let tpos = start + 2 * data.insts.len() as u32;
        let bend = tpos + 1;
        for v in live.live_out(b) {
            open[v.index()] = bend;
            opened.push(v);
        }
        let mut use_at = |v: Value, p: u32, open: &mut Vec<u32>| {
            if open[v.index()] == NONE {
                open[v.index()] = p;
                opened.push(v);
            }
        };
        for u in data.term.0.uses() {
            use_at(u, tpos, &mut open);
        }
        for (k, (inst, _)) in data.insts.iter().enumerate().rev() {
            let p = start + 2 * k as u32;
            if let Some(d) = inst.def() {
                let e = std::mem::replace(&mut open[d.index()], NONE);
                ranges[d.index()].push((p + 1, if e == NONE { p + 1 } else { e }));
            }
            for u in inst.uses() {
                use_at(u, p, &mut open);
            }
        }
        for v in opened.drain(..) {
            let e = std::mem::replace(&mut open[v.index()], NONE);
            if e != NONE {
                ranges[v.index()].push((start, e));
            }
        }
    }
    // The leading Args are one parallel move at entry: their results must all be distinct
    // and none may reuse a register another Arg still has to read.
    for &v in &leading_args {
        ranges[v.index()].push((0, last_arg_def));
    }

    let mut intervals = Vec::new();
    for (i, mut rs) in ranges.into_iter().enumerate() {
        if rs.is_empty() {
            continue;
        }
        rs.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(rs.len());
        for (s, e) in rs {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        // Crosses a call when some call position c has s <= c < e in one of its ranges (a
        // range that ends at the call is an argument read for the last time).
        let crosses_call = merged.iter().any(|&(s, e)| {
            let k = calls.partition_point(|&c| c < s);
            k < calls.len() && calls[k] < e
        });
        intervals.push(Interval {
            value: Value::new(i),
            ranges: merged,
            crosses_call,
        });
    }
    intervals.sort_by_key(|iv| (iv.start(), iv.value.index()));
    Ranges {
        intervals,
        hints,
        calls,
        sites,
    }
}

/// Linear scan with lifetime holes and a given set of allocatable registers. Returns the
/// register of each value that got one and the list of spilled intervals.
fn linear_scan(ranges: &Ranges, nvals: usize, allocatable: &[Reg]) -> (Vec<Option<Reg>>, Vec<usize>) {
    let ivs = &ranges.intervals;
    let mut reg_of: Vec<Option<Reg>> = vec![None; nvals];
    let mut spilled: Vec<usize> = Vec::new(); // indices into ivs
                                              // Per register, the intervals holding it that have not ended yet.
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); 11];
    let callee_saved = |r: Reg| r.0 >= R6.0 && r.0 <= R9.0;
    let mut interval_of: Vec<Option<usize>> = vec![None; nvals];
    for (idx, iv) in ivs.iter().enumerate() {
        interval_of[iv.value.index()] = Some(idx);
    }

    for (idx, iv) in ivs.iter().enumerate() {
        for r in allocatable {
            holders[r.0 as usize].retain(|&j| ivs[j].end() >= iv.start());
        }
        let ok = |r: Reg| allocatable.contains(&r) && (!iv.crosses_call || callee_saved(r));
        let free =
            |r: Reg, holders: &Vec<Vec<usize>>| ok(r) && holders[r.0 as usize].iter().all(|&j| !ivs[j].intersects(iv));

        // 1. A usable hint; then a register the operations this value flows into can take
        //    over.
        let hints = ranges.hints.get(iv.value).map(|v| v.as_slice()).unwrap_or(&[]);
        let mut choice = None;
        for h in hints {
            let r = match *h {
                Hint::Reg(r) => Some(r),
                Hint::SameAs(v) => reg_of[v.index()],
                Hint::Into(_) => None,
            };
            if let Some(r) = r {
                if free(r, &holders) {
                    choice = Some(r);
                    break;
                }
            }
        }
        for h in hints {
            let Hint::Into(d) = *h else { continue };
            if choice.is_some() {
                break;
            }
            let Some(d) = interval_of[d.index()].map(|j| &ivs[j]) else {
                continue;
            };
            if d.start() < iv.start() || d.intersects(iv) {
                continue;
            }
            choice = allocatable
                .iter()
                .copied()
                .filter(|&r| {
                    free(r, &holders)
                        && (!d.crosses_call || callee_saved(r))
                        && holders[r.0 as usize].iter().all(|&j| !ivs[j].intersects(d))
                })
                .min_by_key(|&r| (callee_saved(r), r.0));
        }
        // 2. Any free register: caller-saved first for intervals that do not cross calls,
        //    so r6-r9 stay available for those that do.
        if choice.is_none() {
            choice = allocatable
                .iter()
                .copied()
                .filter(|&r| free(r, &holders))
                .min_by_key(|&r| (callee_saved(r), r.0));
        }
        if let Some(r) = choice {
            reg_of[iv.value.index()] = Some(r);
            holders[r.0 as usize].push(idx);
            continue;
        }
        // 3. No register is free for the whole interval. Take the register whose
        //    conflicting intervals all end furthest away (the classic "spill the furthest
        //    end"), if they end after this one; otherwise this interval goes to the stack.
        let best = allocatable
            .iter()
            .copied()
            .filter(|&r| ok(r))
            .map(|r| {
                let nearest = holders[r.0 as usize]
                    .iter()
                    .filter(|&&j| ivs[j].intersects(iv))
                    .map(|&j| ivs[j].end())
                    .min()
                    .unwrap_or(u32::MAX);
                (nearest, r)
            })
            .max_by_key(|&(nearest, r)| (nearest, std::cmp::Reverse(r.0)));
        match best {
            Some((nearest, r)) if nearest > iv.end() => {
                let list = &mut holders[r.0 as usize];
                list.retain(|&j| {
                    if ivs[j].intersects(iv) {
                        reg_of[ivs[j].value.index()] = None;
                        spilled.push(j);
                        false
                    } else {
                        true
                    }
                });
                list.push(idx);
                reg_of[iv.value.index()] = Some(r);
            }
            _ => spilled.push(idx),
        }
    }
    (reg_of, spilled)
}

/// Assigns spill slots to spilled intervals, greedily by start: the first slot none of whose
/// occupants' lifetimes intersect. Returns (slot index per interval, number of slots).
fn assign_spill_slots(ranges: &Ranges, spilled: &mut [usize]) -> (Vec<(usize, u32)>, u32) {
    let ivs = &ranges.intervals;
    spilled.sort_by_key(|&j| (ivs[j].start(), j));
    let mut slots: Vec<Vec<usize>> = Vec::new(); // occupants not yet ended, per slot
    let mut out = Vec::new();
    for &j in spilled.iter() {
        let iv = &ivs[j];
        for occ in slots.iter_mut() {
            occ.retain(|&k| ivs[k].end() >= iv.start());
        }
        let slot = match slots.iter().position(|occ| occ.iter().all(|&k| !ivs[k].intersects(iv))) {
            Some(s) => s,
            None => {
                slots.push(Vec::new());
                slots.len() - 1
            }
        };
        slots[slot].push(j);
        out.push((j, slot as u32));
    }
    let n = slots.len() as u32;
    (out, n)
}

/// True when the emitter needs a second scratch register for `inst` (or a terminator) with
/// these locations: two operands must be brought into registers while r0 is busy.
fn needs_two_scratches(f: &Function, loc: &dyn Fn(Value) -> Option<Loc>) -> bool {
    let stack = |v: Value| matches!(loc(v), Some(Loc::Stack(_)));
    let wide = |i: i64| i32::try_from(i).is_err();
    let op_needs_reg = |o: &Operand| match *o {
        Operand::Value(v) => stack(v),
        Operand::Imm(i) => wide(i),
    };
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            let two = match inst {
                Inst::Bin { dst, b, .. } => stack(*dst) && op_needs_reg(b),
                // Store materialises every immediate into a register (BPF_ST may not target ctx).
                Inst::Store { base, src, .. } => stack(*base) && !matches!(src, Operand::Value(v) if !stack(*v)),
                Inst::AtomicAdd { base, src, .. } => stack(*base) && stack(*src),
                // The address is computed in a register other than the index's.
                Inst::LoadSlotIndexed { dst, index, .. } => stack(*dst) && stack(*index),
                _ => false,
            };
            if two {
                return true;
            }
        }
        if let Terminator::Branch { a, b, .. } = &b.term.0 {
            if stack(*a) && op_needs_reg(b) {
                return true;
            }
        }
    }
    false
}

/// True when the emitter writes `inst` (`None`: the terminator `term`) without touching r0,
/// given these locations: every operand in a register, no 64-bit immediate, no form that
/// borrows r0 as its scratch (emit.rs). A `return` writes r0 last, when nothing else is live.
/// Conservative: a form not listed here counts as touching r0.
fn leaves_r0(inst: Option<&Inst>, term: &Terminator, loc: &dyn Fn(Value) -> Option<Loc>) -> bool {
    let reg = |v: Value| matches!(loc(v), Some(Loc::Reg(_)));
    let narrow = |i: i64| i32::try_from(i).is_ok();
    let operand = |o: &Operand| match *o {
        Operand::Value(v) => reg(v),
        Operand::Imm(i) => narrow(i),
    };
    let Some(inst) = inst else {
        return match term {
            Terminator::Branch { a, b, .. } => reg(*a) && operand(b),
            Terminator::Jump(_) | Terminator::MayGoto { .. } | Terminator::Return(_) => true,
        };
    };
    match inst {
        Inst::Const { dst, .. }
        | Inst::LoadSlot { dst, .. }
        | Inst::SlotAddr { dst, .. }
        | Inst::MapAddr { dst, .. } => reg(*dst),
        Inst::Mov { dst, src }
        | Inst::Neg { dst, src }
        | Inst::Bswap { dst, src, .. }
        | Inst::Zext { dst, src, .. }
        | Inst::Sext { dst, src, .. }
        | Inst::Load { dst, base: src, .. } => reg(*dst) && reg(*src),
        Inst::Bin { op, dst, a, b } => {
            use crate::ir::BinOp::*;
            let commutative = matches!(op, Add | Mul | Or | And | Xor);
            // `dst = a - b` with b already in dst's register is computed in r0.
            let through_r0 = matches!(*b, Operand::Value(vb) if loc(vb) == loc(*dst) && loc(*a) != loc(*dst));
            reg(*dst) && reg(*a) && operand(b) && (commutative || !through_r0)
        }
        Inst::Store { base, src, .. } => reg(*base) && matches!(*src, Operand::Value(v) if reg(v)),
        Inst::StoreSlot { src, size, .. } => match *src {
            Operand::Value(v) => reg(v),
            // Narrower stores keep the low bytes, which always fit.
            Operand::Imm(i) => *size != runtime_bpf::isa::Size::DW || narrow(i),
        },
        Inst::LoadSlotIndexed { dst, index, .. } => reg(*dst) && reg(*index) && loc(*dst) != loc(*index),
        Inst::AtomicAdd { base, src, .. } => reg(*base) && reg(*src),
        Inst::Call { .. } | Inst::CallKfunc { .. } | Inst::CallLocal { .. } | Inst::Arg { .. } => false,
    }
}

/// A call result lives in r0, where the call leaves it, when no call comes while it is live
/// and the emitter needs r0 for nothing there: `call; if r0 == 0 goto ...; r1 = *(u64 *)(r0
/// +0)` instead of a copy to its register first. Call results cannot conflict with each
/// other in r0: of two live at once, one is live across the other's call.
fn keep_call_results_in_r0(f: &Function, ranges: &Ranges, locs: &mut SecondaryMap<Value, Option<Loc>>) {
    let defs = f.def_counts();
    let mut results = Vec::new();
    for iv in &ranges.intervals {
        let v = iv.value;
        let (b, Some(k)) = ranges.sites[(iv.start() / 2) as usize] else {
            continue;
        };
        let def = &f.blocks[b].insts[k].0;
        if defs[v] != 1 || !def.is_call() || def.def() != Some(v) || iv.start() % 2 != 1 {
            continue;
        }
        // No call from the definition to the last read (one that reads it as an argument too).
        let calls = &ranges.calls;
        if iv.ranges.iter().any(|&(s, e)| {
            let k = calls.partition_point(|&c| c < s);
            k < calls.len() && calls[k] <= e
        }) {
            continue;
        }
        results.push(iv);
    }
    for iv in results {
        let loc = |v: Value| {
            if v == iv.value {
                Some(Loc::Reg(R0))
            } else {
                locs.get(v).copied().flatten()
            }
        };
        let clean = iv.ranges.iter().all(|&(s, e)| {
            // The definition's own site (the call) is where r0 is written.
            let first = if s == iv.start() { s / 2 + 1 } else { s / 2 };
            (first..=e / 2).all(|i| {
                let (b, k) = ranges.sites[i as usize];
                let d = &f.blocks[b];
                leaves_r0(k.map(|k| &d.insts[k].0), &d.term.0, &loc)
            })
        });
        if clean {
            locs[iv.value] = Some(Loc::Reg(R0));
        }
    }
}

/// Lays out the IR slots below r10; returns their offsets and the bytes used.
fn layout_slots(f: &Function) -> (SecondaryMap<Slot, i64>, u64) {
    let mut order: Vec<Slot> = f.slots.keys().collect();
    // Largest alignment first: no padding between slots of decreasing alignment.
    order.sort_by_key(|&s| std::cmp::Reverse(f.slots[s].align.clamp(1, 8)));
    let mut offsets: SecondaryMap<Slot, i64> = SecondaryMap::new();
    let mut used: u64 = 0;
    for s in order {
        let d = &f.slots[s];
        let align = d.align.clamp(1, 8) as u64;
        used = (used + d.size as u64).div_ceil(align) * align;
        offsets[s] = -(used as i64);
    }
    (offsets, used)
}

/// Allocates registers and stack for `f`.
pub fn allocate(f: &Function) -> Result<Allocation, AllocError> {
    let ranges = compute_ranges(f);
    let nvals = f.values.len();
    let all: Vec<Reg> = (R1.0..=R9.0).map(Reg).collect();
    let without_r5: Vec<Reg> = all.iter().copied().filter(|&r| r != R5).collect();

    let (slot_offsets, slots_bytes) = layout_slots(f);
    let spill_base = slots_bytes.div_ceil(8) * 8;

    let build = |allocatable: &[Reg]| {
        let (reg_of, mut spilled) = linear_scan(&ranges, nvals, allocatable);
        let (slots, nslots) = assign_spill_slots(&ranges, &mut spilled);
        let mut locs: SecondaryMap<Value, Option<Loc>> = SecondaryMap::with_capacity(nvals);
        for iv in &ranges.intervals {
            if let Some(r) = reg_of[iv.value.index()] {
                locs[iv.value] = Some(Loc::Reg(r));
            }
        }
        for (j, s) in slots {
            let off = spill_base + 8 * (s as u64 + 1);
            // Offsets beyond i16 are reported as StackTooLarge below; clamp to keep types.
            let off = -(off.min(i16::MAX as u64) as i64);
            locs[ranges.intervals[j].value] = Some(Loc::Stack(off as i16));
        }
        (locs, nslots)
    };

    let (mut locs, mut nslots) = build(&all);
    let mut scratch2 = None;
    if nslots > 0 && needs_two_scratches(f, &|v| locs.get(v).copied().flatten()) {
        let (l, n) = build(&without_r5);
        locs = l;
        nslots = n;
        scratch2 = Some(R5);
    }
    keep_call_results_in_r0(f, &ranges, &mut locs);

    let frame = spill_base + 8 * nslots as u64;
    if frame > STACK_SIZE as u64 {
        return Err(AllocError::StackTooLarge {
            needed: frame.min(u32::MAX as u64) as u32,
        });
    }
    let mut slots: SecondaryMap<Slot, i16> = SecondaryMap::new();
    for (s, _) in f.slots.iter() {
        slots[s] = slot_offsets[s] as i16;
    }
    Ok(Allocation {
        locs,
        slots,
        frame_size: frame as u32,
        spill_slots: nslots,
        scratch2,
    })
}

#[cfg(test)]
mod tests {
    /// A map lookup's pointer stays in r0 through its null test and the reads after it; it is
    /// copied out of r0 only where r0 is needed for something else (here the constant stored
    /// through it).
    #[test]
    fn a_call_result_stays_in_r0_while_r0_is_free() {
        let asm = |body: &str| {
            crate::compile::asm_of(&format!(
                "local xdp = require \"bpf.xdp\"\nlocal map = require \"bpf.map\"\nlocal m = map.hash(\"m\", {{ key = \"I4\", value = \"I8\", entries = 4 }})\nreturn xdp.program(function(ctx)\n{body}\nend, {{ name = \"t\" }})\n"
            ))
        };
        let tested = asm("  if m[1] then return 1 end\n  return 2");
        assert!(tested.contains("if r0 == 0"), "{tested}");
        assert!(!tested.contains("= r0\n"), "no copy of r0:\n{tested}");
        let read = asm("  local v = m[1]\n  if v then return v end\n  return 2");
        assert!(
            read.contains("if r0 == 0") && read.contains("= *(u64 *)(r0 +0)"),
            "{read}"
        );
        assert!(!read.contains("= r0\n"), "no copy of r0:\n{read}");
        let stored = asm("  local v = m[1]\n  if v then m[1] = 7 end\n  return 2");
        assert!(stored.contains("r1 = r0\n") && stored.contains("r0 = 7\n"), "{stored}");
    }

    /// A load whose byte-swapped value must survive a map lookup (so lives in r6-r9) is
    /// loaded into that register and swapped in place, not loaded into r1-r5, copied and
    /// swapped (`Hint::Into`).
    #[test]
    fn a_value_flowing_into_a_call_surviving_one_takes_its_register() {
        let asm = crate::compile::asm_of(
            r#"
local xdp = require "bpf.xdp"
local map = require "bpf.map"
local bo = require "linux.byteorder"
local m = map.hash("m", { key = "I4", value = "I8", entries = 4 })
return xdp.program(function(ctx)
  local p = ctx:packet()
  local n = bo.ntoh16(p:getuint16(0))
  if m[1] then return n & 3 end
  return 2
end, { name = "t" })
"#,
        );
        let lines: Vec<&str> = asm.lines().map(str::trim).collect();
        let swap = lines.iter().position(|l| l.contains("= be16 r")).expect(&asm);
        let reg = lines[swap].split_whitespace().nth(1).expect(&asm);
        assert!(["r6", "r7", "r8", "r9"].contains(&reg), "{asm}");
        assert!(lines[swap - 1].contains(&format!("{reg} = *(u16 *)")), "{asm}");
    }
}
