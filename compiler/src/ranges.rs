//! Value ranges: an interval analysis over the IR, and the pass that removes the checks it
//! proves redundant.
//!
//! Why it matters for the verifier, not just for speed: when the verifier can predict a
//! branch from a scalar's bounds, it marks that scalar *precise*, and precise scalars stop
//! the pruning of equivalent states. A bounds check on a scan offset that can never fail
//! would make the offset (and the loop index behind it) precise, and the verifier would then
//! re-walk everything after the scan once per iteration. Removing the checks that cannot fail
//! keeps such offsets imprecise.
//!
//! Soundness towards the verifier: every transfer function here is at most as precise as the
//! verifier's own (loads give their width's range, byte swaps their width's, multiplication
//! and shifts only of small non-negative ranges, anything else is unknown), so a check this
//! analysis removes is one the verifier can also see through.

use cranelift_entity::{EntityRef, SecondaryMap};

use crate::ir::{BinOp, Block, Function, Inst, Operand, Terminator, Value};
use runtime_bpf::isa::{JmpOp, Size};

/// A closed interval of signed 64-bit values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub lo: i64,
    pub hi: i64,
}

impl Range {
    pub const FULL: Range = Range {
        lo: i64::MIN,
        hi: i64::MAX,
    };

    pub fn exact(v: i64) -> Range {
        Range { lo: v, hi: v }
    }

    fn new(lo: i64, hi: i64) -> Option<Range> {
        (lo <= hi).then_some(Range { lo, hi })
    }

    fn union(self, o: Range) -> Range {
        Range {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
        }
    }

    fn unsigned_bits(bits: u32) -> Range {
        Range {
            lo: 0,
            hi: if bits >= 63 { i64::MAX } else { (1i64 << bits) - 1 },
        }
    }

    fn non_negative(self) -> bool {
        self.lo >= 0
    }
}

/// Ranges of the values known at a program point, by value number; `Range::FULL` (and any
/// value past the end) is unknown.
///
/// Dense rather than a sorted or hashed set of the known values: the analysis copies and joins
/// whole states at every edge, which on a dense vector are a copy and one pass of `min`/`max`
/// without any matching of keys, and a step reads and writes its values by index.
#[derive(Debug, Default)]
pub struct State(Vec<Range>);

// Every analysis makes a state per reachable block (a few KB each), and the optimiser runs
// about ten analyses per function: the buffers of the states dropped go back to a spare list
// that the next states are made in, rather than to malloc, whose large-chunk paths were a
// good part of the analysis's time. (The states' contents are the same either way.)
thread_local! {
    static SPARE: std::cell::RefCell<Spare> = const {
        std::cell::RefCell::new(Spare {
            states: Vec::new(),
            logs: Vec::new(),
            bytes: 0,
        })
    };
}

/// Buffers of dropped states and analysis logs, empty, for the next ones.
struct Spare {
    states: Vec<Vec<Range>>,
    logs: Vec<Vec<u32>>,
    /// The capacity of all the buffers above, in bytes.
    bytes: usize,
}

/// How many bytes of spare buffers are kept at most (a few analyses' worth of the examples'
/// functions; the spares of a huge function are let go).
const SPARE_BYTES: usize = 4 << 20;

/// An empty buffer from the spare list `pick` chooses, if it has one.
fn take_spare<T>(pick: fn(&mut Spare) -> &mut Vec<Vec<T>>) -> Vec<T> {
    SPARE
        .try_with(|s| {
            let mut s = s.borrow_mut();
            let buf = pick(&mut s).pop()?;
            s.bytes -= buf.capacity() * std::mem::size_of::<T>();
            Some(buf)
        })
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Hands `buf`'s buffer, emptied, to the spare list `pick` chooses (unless it is full).
fn give_spare<T>(mut buf: Vec<T>, pick: fn(&mut Spare) -> &mut Vec<Vec<T>>) {
    if buf.capacity() == 0 {
        return;
    }
    buf.clear();
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        let bytes = buf.capacity() * std::mem::size_of::<T>();
        if s.bytes + bytes <= SPARE_BYTES {
            s.bytes += bytes;
            pick(&mut s).push(buf);
        }
    });
}

fn states(s: &mut Spare) -> &mut Vec<Vec<Range>> {
    &mut s.states
}

fn logs(s: &mut Spare) -> &mut Vec<Vec<u32>> {
    &mut s.logs
}

/// Lets the spare buffers go (back to malloc, for the stages after the optimiser: kept, they
/// made the later stages take fresh pages, ~100 more page faults per compile).
pub fn release_spares() {
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        s.states = Vec::new();
        s.logs = Vec::new();
        s.bytes = 0;
    });
}

impl Clone for State {
    fn clone(&self) -> State {
        let mut v = take_spare(states);
        v.extend_from_slice(&self.0);
        State(v)
    }

    fn clone_from(&mut self, source: &State) {
        self.0.clone_from(&source.0);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        give_spare(std::mem::take(&mut self.0), states);
    }
}

impl State {
    /// Nothing known about any of `values` values.
    fn unknown(values: usize) -> State {
        let mut v = take_spare(states);
        v.resize(values, Range::FULL);
        State(v)
    }

    pub fn get(&self, v: &Value) -> Option<&Range> {
        self.0.get(v.index()).filter(|r| **r != Range::FULL)
    }
}

fn get(s: &State, v: Value) -> Range {
    s.0.get(v.index()).copied().unwrap_or(Range::FULL)
}

fn set(s: &mut State, v: Value, r: Range) {
    let i = v.index();
    if i >= s.0.len() {
        if r == Range::FULL {
            return;
        }
        s.0.resize(i + 1, Range::FULL);
    }
    s.0[i] = r;
}

fn operand(s: &State, o: &Operand) -> Range {
    match o {
        Operand::Value(v) => get(s, *v),
        Operand::Imm(i) => Range::exact(*i),
    }
}

fn bin(op: BinOp, a: Range, b: Range) -> Range {
    let full = Range::FULL;
    match op {
        BinOp::Add => match (a.lo.checked_add(b.lo), a.hi.checked_add(b.hi)) {
            (Some(lo), Some(hi)) => Range { lo, hi },
            _ => full,
        },
        BinOp::Sub => match (a.lo.checked_sub(b.hi), a.hi.checked_sub(b.lo)) {
            (Some(lo), Some(hi)) => Range { lo, hi },
            _ => full,
        },
        BinOp::Mul if a.non_negative() && b.non_negative() => match a.hi.checked_mul(b.hi) {
            // The verifier gives up on products past 32 bits.
            Some(hi) if hi <= u32::MAX as i64 => Range { lo: a.lo * b.lo, hi },
            _ => full,
        },
        BinOp::And if b.lo == b.hi && b.lo >= 0 => {
            if a.non_negative() {
                Range {
                    lo: 0,
                    hi: a.hi.min(b.lo),
                }
            } else {
                Range { lo: 0, hi: b.lo }
            }
        }
        BinOp::Rsh if b.lo == b.hi && (0..64).contains(&b.lo) && a.non_negative() => Range {
            lo: a.lo >> b.lo,
            hi: a.hi >> b.lo,
        },
        // A logical shift of any value by k >= 1 is below 2^(64-k): `(x - 1) >> 63` is 0 or 1.
        BinOp::Rsh if b.lo == b.hi && (1..64).contains(&b.lo) => Range {
            lo: 0,
            hi: (u64::MAX >> b.lo) as i64,
        },
        // a | b is at least the larger operand and has no bit above the larger's highest.
        BinOp::Or if a.non_negative() && b.non_negative() => {
            let m = a.hi.max(b.hi) as u64;
            Range {
                lo: a.lo.max(b.lo),
                hi: if m == 0 {
                    0
                } else {
                    (u64::MAX >> m.leading_zeros()) as i64
                },
            }
        }
        BinOp::Lsh if b.lo == b.hi && (0..32).contains(&b.lo) && a.non_negative() => {
            match a.hi.checked_shl(b.lo as u32) {
                Some(hi) if hi >> b.lo == a.hi && hi <= u32::MAX as i64 => Range { lo: a.lo << b.lo, hi },
                _ => full,
            }
        }
        // An arithmetic shift is monotonic: `x // 8` of x in [-9, 20] is in [-2, 2].
        BinOp::Arsh if b.lo == b.hi && (0..64).contains(&b.lo) => Range {
            lo: a.lo >> b.lo,
            hi: a.hi >> b.lo,
        },
        BinOp::UDiv if b.lo == b.hi && b.lo > 0 && a.non_negative() => Range {
            lo: a.lo / b.lo,
            hi: a.hi / b.lo,
        },
        _ => full,
    }
}

/// Applies one instruction to the state.
pub fn step(s: &mut State, inst: &Inst) {
    if let Some(def) = inst.def() {
        step_writing(s, inst, def);
    }
}

/// `step` for an instruction that writes `def` (`inst.def()`, which the analysis's visit
/// already asked for).
fn step_writing(s: &mut State, inst: &Inst, def: Value) {
    let r = match inst {
        Inst::Const { imm, .. } => Range::exact(*imm),
        Inst::Mov { src, .. } => get(s, *src),
        Inst::Bin { op, a, b, .. } => bin(*op, get(s, *a), operand(s, b)),
        Inst::Load { size, .. } | Inst::LoadSlot { size, .. } | Inst::LoadSlotIndexed { size, .. } => match size {
            Size::DW => Range::FULL,
            sz => Range::unsigned_bits(sz.bytes() * 8),
        },
        // A 64-bit swap can set the sign bit: only narrower swaps are non-negative.
        Inst::Bswap { bits, .. } | Inst::Zext { bits, .. } if *bits < 64 => Range::unsigned_bits(*bits as u32),
        _ => Range::FULL,
    };
    set(s, def, r);
}

/// What a branch implies for its first operand on the `taken` edge.
fn refine(op: JmpOp, a: Range, b: Range, taken: bool) -> Option<Range> {
    let op = if taken { op } else { op.negate() };
    let unsigned_ok = a.non_negative() && b.non_negative();
    let r = match op {
        JmpOp::Jeq => Range::new(a.lo.max(b.lo), a.hi.min(b.hi))?,
        JmpOp::Jne if b.lo == b.hi && a.lo == b.lo => Range::new(a.lo + 1, a.hi)?,
        JmpOp::Jne if b.lo == b.hi && a.hi == b.lo => Range::new(a.lo, a.hi - 1)?,
        JmpOp::Jne => a,
        JmpOp::Jsgt => Range::new(a.lo.max(b.lo.saturating_add(1)), a.hi)?,
        JmpOp::Jsge => Range::new(a.lo.max(b.lo), a.hi)?,
        JmpOp::Jslt => Range::new(a.lo, a.hi.min(b.hi.saturating_sub(1)))?,
        JmpOp::Jsle => Range::new(a.lo, a.hi.min(b.hi))?,
        // Unsigned comparisons with a non-negative bound: `a <=u k` means 0 <= a <= k.
        JmpOp::Jle if b.non_negative() => Range::new(a.lo.max(0), a.hi.min(b.hi))?,
        JmpOp::Jlt if b.non_negative() => Range::new(a.lo.max(0), a.hi.min(b.hi.saturating_sub(1)))?,
        JmpOp::Jgt if unsigned_ok => Range::new(a.lo.max(b.lo.saturating_add(1)), a.hi)?,
        JmpOp::Jge if unsigned_ok => Range::new(a.lo.max(b.lo), a.hi)?,
        _ => a,
    };
    Some(r)
}

/// Does the branch go one way only, given the ranges? `Some(true)`: always taken.
fn decide(op: JmpOp, a: Range, b: Range) -> Option<bool> {
    let unsigned = a.non_negative() && b.non_negative();
    match op {
        JmpOp::Jeq if a.lo == a.hi && b.lo == b.hi => Some(a.lo == b.lo),
        JmpOp::Jeq | JmpOp::Jne if a.hi < b.lo || b.hi < a.lo => Some(op == JmpOp::Jne),
        JmpOp::Jne if a.lo == a.hi && b.lo == b.hi => Some(a.lo != b.lo),
        JmpOp::Jsgt | JmpOp::Jgt if op == JmpOp::Jsgt || unsigned => {
            if a.lo > b.hi {
                Some(true)
            } else if a.hi <= b.lo {
                Some(false)
            } else {
                None
            }
        }
        JmpOp::Jsge | JmpOp::Jge if op == JmpOp::Jsge || unsigned => {
            if a.lo >= b.hi {
                Some(true)
            } else if a.hi < b.lo {
                Some(false)
            } else {
                None
            }
        }
        JmpOp::Jslt | JmpOp::Jlt if op == JmpOp::Jslt || unsigned => {
            decide(if op == JmpOp::Jslt { JmpOp::Jsge } else { JmpOp::Jge }, a, b).map(|x| !x)
        }
        JmpOp::Jsle | JmpOp::Jle if op == JmpOp::Jsle || unsigned => {
            decide(if op == JmpOp::Jsle { JmpOp::Jsgt } else { JmpOp::Jgt }, a, b).map(|x| !x)
        }
        _ => None,
    }
}

/// `old` joined with `new` in place: the values known in both, with the union of their
/// ranges, `widen`ed if `widening`. Returns whether `old` changed. In place rather than into a
/// new state: the analysis merges at every edge, and allocating there cost most of its time.
fn merge_into(old: &mut State, new: &State, widening: bool, thresholds: &Thresholds, log: &mut Vec<u32>) -> bool {
    let mut changed = false;
    if old.0.len() > new.0.len() {
        // Unknown in `new`, so unknown in the join.
        for (i, r) in old.0.iter().enumerate().skip(new.0.len()) {
            if *r != Range::FULL {
                changed = true;
                log.push(i as u32);
            }
        }
        old.0.truncate(new.0.len());
    }
    // Most values do not grow (unknown on both sides, most often). Runs of 16 are tested
    // for growth with no branch per value, and only a run where one grows is joined value by
    // value. (Comparing runs for equality cost more: most runs hold a known value that
    // differs without growing.)
    const RUN: usize = 16;
    let n = old.0.len().min(new.0.len());
    let (olds, news) = (&mut old.0[..n], &new.0[..n]);
    let whole = n - n % RUN;
    let mut base = 0;
    while base < n {
        let end = if base < whole { base + RUN } else { n };
        let (co, cn) = (&mut olds[base..end], &news[base..end]);
        if base >= whole || grows(co, cn) {
            for (k, (ro, rn)) in co.iter_mut().zip(cn).enumerate() {
                if rn.lo >= ro.lo && rn.hi <= ro.hi {
                    continue;
                }
                // (An unknown side gives FULL, unknown.)
                let mut r = ro.union(*rn);
                if widening && r != Range::FULL {
                    r = widen(*ro, r, thresholds.of(base + k));
                }
                if r != *ro {
                    changed = true;
                    log.push((base + k) as u32);
                }
                *ro = r;
            }
        }
        base = end;
    }
    changed
}

/// Whether some range of `new` reaches past the one of `old` at its place, tested with no
/// branch per value.
#[inline(always)]
fn grows(old: &[Range], new: &[Range]) -> bool {
    old.iter()
        .zip(new)
        .fold(false, |g, (o, n)| g | (n.lo < o.lo) | (n.hi > o.hi))
}

/// Widening: bounds that moved since the last visit jump to the next constant the value is
/// compared against (a loop bound, usually; `Thresholds`), then to infinity, so loops converge
/// quickly and loop variables keep the bound their exit test gives them.
fn widen(old: Range, joined: Range, thresholds: &[i64]) -> Range {
    let up = |x: i64| thresholds.iter().copied().find(|&t| t >= x).unwrap_or(i64::MAX);
    let down = |x: i64| thresholds.iter().rev().copied().find(|&t| t <= x).unwrap_or(i64::MIN);
    Range {
        lo: if joined.lo < old.lo { down(joined.lo) } else { old.lo },
        hi: if joined.hi > old.hi { up(joined.hi) } else { old.hi },
    }
}

/// The state at the entry of every reachable block.
///
/// Entry states only grow (joins and widening), so a merge along an edge need only look at
/// the values that may differ from the last merge along the same edge: those whose range at
/// the source block's entry changed since (`log`), those the block writes, and those its
/// branch refines. Every other value is as it was then, and was already covered by the
/// target's state. The result is the same as merging whole states, at a fraction of the cost
/// (a whole-state merge on every edge was most of the optimiser's time).
pub fn analyze(f: &Function) -> SecondaryMap<Block, Option<State>> {
    analyze_counting(f).0
}

/// `analyze`, and how many block visits it took.
fn analyze_counting(f: &Function) -> (SecondaryMap<Block, Option<State>>, usize) {
    let order = f.reverse_postorder();
    let mut rpo_index: SecondaryMap<Block, usize> = f.block_map();
    for (i, b) in order.iter().enumerate() {
        rpo_index[*b] = i;
    }
    let thresholds = Thresholds::new(f);
    let mut entry: SecondaryMap<Block, Option<State>> = f.block_map();
    let mut visits: SecondaryMap<Block, u32> = f.block_map();
    // Per block: the values whose entry range changed, in order; per edge (source block,
    // successor slot): how much of the source's log its last merge had seen.
    let mut log: SecondaryMap<Block, Vec<u32>> = f.block_map();
    let values = f.values.len();
    let mut seen: SecondaryMap<Block, [Option<u32>; 2]> = f.block_map();
    entry[f.entry] = Some(State::unknown(f.values.len()));
    let mut work = Worklist::new(order.len());
    work.insert(0);
    let writes = Writes::new(f, &order);
    // Scratch state for a block that loops to itself, reused; the ranges of the values the
    // block writes before its steps (to undo them).
    let mut scratch = State::default();
    let mut undo: Vec<(Value, Range)> = Vec::new();
    let mut grown: Vec<u32> = Vec::new();
    let mut budget = 200_000usize;
    let mut visited = 0;
    while let Some(i) = work.pop_first() {
        visited += 1;
        budget = budget.saturating_sub(1);
        if budget == 0 {
            // Give up soundly: forget everything we learned.
            for b in &order {
                entry[*b] = Some(State::default());
            }
            break;
        }
        let b = order[i];
        if entry[b].is_none() {
            continue;
        }
        // The block's steps run on its entry state itself, taken out and restored after the
        // merges by undoing them (a block writes a few values; a copy of the whole state on
        // every visit cost more than the steps). A block that is its own successor merges
        // into that entry state, so it runs on a copy.
        let (succs, n) = f.blocks[b].term.0.successor_pair();
        let self_loop = succs[..n].contains(&b);
        let mut s = if self_loop {
            let mut copy = std::mem::take(&mut scratch);
            copy.0.clone_from(&entry[b].as_ref().expect("checked above").0);
            copy
        } else {
            entry[b].take().expect("checked above")
        };
        let len = s.0.len();
        undo.clear();
        for (inst, _) in &f.blocks[b].insts {
            if let Some(d) = inst.def() {
                undo.push((d, get(&s, d)));
                step_writing(&mut s, inst, d);
            }
        }
        let written = writes.of(i);
        let logged = log[b].len() as u32;
        let mut merge = |slot: usize, succ: Block, out: &State, refined: &[u32]| {
            let last = seen[b][slot].replace(logged);
            if log[succ].capacity() == 0 {
                // Room for every value once up front: grown from empty, the logs' copies as
                // they doubled showed in profiles.
                log[succ] = take_spare(logs);
                log[succ].reserve_exact(values);
            }
            let changed = match &mut entry[succ] {
                None => {
                    entry[succ] = Some(out.clone());
                    true
                }
                Some(old) => {
                    if rpo_index[succ] <= i {
                        visits[succ] += 1;
                    }
                    let widening = visits[succ] > 2;
                    match last {
                        Some(from) if old.0.len() == out.0.len() => {
                            // (Logged after the merge: `succ` may be `b` itself.)
                            grown.clear();
                            let since = &log[b][from as usize..logged as usize];
                            for at in [since, written, refined] {
                                merge_values(old, out, at, widening, &thresholds, &mut grown);
                            }
                            log[succ].extend_from_slice(&grown);
                            !grown.is_empty()
                        }
                        _ => merge_into(old, out, widening, &thresholds, &mut log[succ]),
                    }
                }
            };
            if changed {
                work.insert(rpo_index[succ]);
            }
        };
        match &f.blocks[b].term.0 {
            Terminator::Branch { then_, else_, .. } if then_ == else_ => merge(0, *then_, &s, &[]),
            Terminator::Branch {
                op,
                a,
                b: o,
                then_,
                else_,
            } => {
                for (slot, succ, taken) in [(0, *then_, true), (1, *else_, false)] {
                    let Some((refined, n)) = refinements(*op, *a, o, &s, taken) else {
                        continue;
                    };
                    // The edge's state is `s` refined: refined in place and restored after the
                    // merge, rather than copied per edge. (Fixed arrays: at most two values.)
                    let refined = &refined[..n];
                    let mut saved = [(Value::from_u32(0), Range::FULL); 2];
                    let mut values = [0u32; 2];
                    for (k, &(v, r)) in refined.iter().enumerate() {
                        saved[k] = (v, get(&s, v));
                        values[k] = v.index() as u32;
                        set(&mut s, v, r);
                    }
                    merge(slot, succ, &s, &values[..refined.len()]);
                    for &(v, r) in saved[..refined.len()].iter().rev() {
                        set(&mut s, v, r);
                    }
                }
            }
            other => {
                for (slot, succ) in other.successors().into_iter().enumerate() {
                    merge(slot, succ, &s, &[]);
                }
            }
        }
        if self_loop {
            scratch = s;
        } else {
            for &(d, r) in undo.iter().rev() {
                set(&mut s, d, r);
            }
            s.0.truncate(len);
            entry[b] = Some(s);
        }
    }
    for l in log.values_mut() {
        give_spare(std::mem::take(l), logs);
    }
    (entry, visited)
}

/// Merges the values `at` of `new` into `old`, as `merge_into` does for every value, and
/// appends those that changed to `grown`. Both states hold every value.
fn merge_values(
    old: &mut State,
    new: &State,
    at: &[u32],
    widening: bool,
    thresholds: &Thresholds,
    grown: &mut Vec<u32>,
) {
    for &v in at {
        let i = v as usize;
        let ro = old.0[i];
        let mut r = ro.union(new.0[i]);
        if r == ro {
            continue;
        }
        if widening && r != Range::FULL {
            r = widen(ro, r, thresholds.of(i));
        }
        old.0[i] = r;
        grown.push(v);
    }
}

/// Block indices (in reverse postorder) still to visit; the first comes out first, as the
/// analysis wants (a set of bits: cheaper than an ordered set at these sizes).
struct Worklist(Vec<u64>);

impl Worklist {
    fn new(n: usize) -> Worklist {
        Worklist(vec![0; n.div_ceil(64)])
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn pop_first(&mut self) -> Option<usize> {
        let w = self.0.iter().position(|&w| w != 0)?;
        let bit = self.0[w].trailing_zeros() as usize;
        self.0[w] &= self.0[w] - 1;
        Some(w * 64 + bit)
    }
}

/// Per value: the constants branches compare it against (and their neighbours, and 0, -1, 1),
/// sorted; a value no branch compares with a constant widens to the function's (`all`).
///
/// Why per value: a counter climbs one threshold per trip around its loop, and with every
/// constant of the function as a threshold, cookie_guard's `for i = 0, 511` went around 27
/// times (each constant below 512 and its neighbours) before reaching its own bound, which
/// was most of the analysis's time. Its own compares are the bounds that can stop it.
struct Thresholds {
    all: Vec<i64>,
    pool: Vec<i64>,
    /// (start, end) in `pool` by value; empty: `all`.
    spans: Vec<(u32, u32)>,
}

impl Thresholds {
    fn new(f: &Function) -> Thresholds {
        let all = thresholds(f);
        let mut pairs: Vec<(u32, i64)> = Vec::new();
        for (_, b) in f.blocks.iter() {
            if let Terminator::Branch {
                a, b: Operand::Imm(k), ..
            } = b.term.0
            {
                let v = a.index() as u32;
                pairs.extend([
                    (v, k.saturating_sub(1)),
                    (v, k),
                    (v, k.saturating_add(1)),
                    (v, 0),
                    (v, -1),
                    (v, 1),
                ]);
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let mut pool = Vec::with_capacity(pairs.len());
        let mut spans = vec![(0u32, 0u32); f.values.len()];
        let mut i = 0;
        while i < pairs.len() {
            let v = pairs[i].0;
            let start = pool.len() as u32;
            while i < pairs.len() && pairs[i].0 == v {
                pool.push(pairs[i].1);
                i += 1;
            }
            spans[v as usize] = (start, pool.len() as u32);
        }
        Thresholds { all, pool, spans }
    }

    fn of(&self, v: usize) -> &[i64] {
        match self.spans.get(v) {
            Some(&(s, e)) if e > s => &self.pool[s as usize..e as usize],
            _ => &self.all,
        }
    }
}

/// The constants branches compare against (and their neighbours), sorted.
fn thresholds(f: &Function) -> Vec<i64> {
    let mut t = vec![0, -1, 1];
    for (_, b) in f.blocks.iter() {
        if let Terminator::Branch { b: Operand::Imm(k), .. } = b.term.0 {
            t.extend([k.saturating_sub(1), k, k.saturating_add(1)]);
        }
    }
    t.sort_unstable();
    t.dedup();
    t
}

/// What the branch `if a op b` learns on its `taken` edge from state `s`: the ranges to set,
/// in order, and how many; `None` if that edge is never taken.
fn refinements(op: JmpOp, a: Value, b: &Operand, s: &State, taken: bool) -> Option<([(Value, Range); 2], usize)> {
    let ra = get(s, a);
    let rb = operand(s, b);
    let mut out = [(a, refine(op, ra, rb, taken)?); 2];
    if let Operand::Value(bv) = b {
        // Refine the other side too, by swapping the comparison.
        out[1] = (*bv, refine(op.swap(), rb, ra, taken)?);
        return Some((out, 2));
    }
    Some((out, 1))
}

/// The values each reachable block writes, each once, by the block's place in the reverse
/// post-order: one list for the whole analysis rather than one per visit. (Once: merging a
/// value a second time along the same edge changes nothing, the first merge covered it.)
struct Writes {
    values: Vec<u32>,
    /// Where each block's values start in `values`; the last entry is the end.
    starts: Vec<u32>,
}

impl Writes {
    fn new(f: &Function, order: &[Block]) -> Writes {
        let mut values = Vec::new();
        let mut starts = Vec::with_capacity(order.len() + 1);
        // The last block (place + 1) that listed each value.
        let mut listed = vec![0u32; f.values.len()];
        for (i, &b) in order.iter().enumerate() {
            starts.push(values.len() as u32);
            for (inst, _) in &f.blocks[b].insts {
                if let Some(d) = inst.def() {
                    let at = &mut listed[d.index()];
                    if *at != i as u32 + 1 {
                        *at = i as u32 + 1;
                        values.push(d.index() as u32);
                    }
                }
            }
        }
        starts.push(values.len() as u32);
        Writes { values, starts }
    }

    /// The values written by the block at place `i` of the order.
    fn of(&self, i: usize) -> &[u32] {
        &self.values[self.starts[i] as usize..self.starts[i + 1] as usize]
    }
}

/// Replaces branches whose outcome the ranges decide with jumps. Returns whether anything
/// changed.
pub fn remove_decided_branches(f: &mut Function) -> bool {
    let ends = end_states(f);
    remove_decided_branches_with(f, &ends)
}

/// `remove_decided_branches` with the states at the ends of the blocks already computed
/// (`end_states`), so that other passes can share one analysis.
pub fn remove_decided_branches_with(f: &mut Function, ends: &SecondaryMap<Block, Option<State>>) -> bool {
    let mut changed = false;
    let blocks: Vec<Block> = f.blocks.keys().collect();
    for b in blocks {
        let Some(s) = &ends[b] else { continue };
        if let Terminator::Branch {
            op,
            a,
            b: o,
            then_,
            else_,
        } = f.blocks[b].term.0.clone()
        {
            if let Some(taken) = decide(op, get(s, a), operand(s, &o)) {
                f.blocks[b].term.0 = Terminator::Jump(if taken { then_ } else { else_ });
                changed = true;
            }
        }
    }
    changed
}

/// `analyze`'s result: the state at the entry of every reachable block.
pub type Entries = SecondaryMap<Block, Option<State>>;

/// `known` if given (an analysis of `f` as it is), else a new analysis kept in `slot`.
pub fn known_or_analyze<'a>(f: &Function, known: Option<&'a Entries>, slot: &'a mut Option<Entries>) -> &'a Entries {
    match known {
        Some(r) => r,
        None => slot.insert(analyze(f)),
    }
}

/// The known ranges at the end of every reachable block (`None`: unreachable).
pub fn end_states(f: &Function) -> SecondaryMap<Block, Option<State>> {
    end_states_undoable(f).0
}

/// What `end_states` changed in `analyze`'s states to make them: (block, value, range at the
/// entry) in step order, and each block's state length.
pub struct Undo {
    ranges: Vec<(Block, Value, Range)>,
    lens: Vec<(Block, usize)>,
}

/// `end_states`, with what turns them back into the states at the entries (`entry_states`):
/// a caller that may want both keeps one set of states instead of a copy.
pub fn end_states_undoable(f: &Function) -> (SecondaryMap<Block, Option<State>>, Undo) {
    let mut states = analyze(f);
    let mut undo = Undo {
        ranges: Vec::new(),
        lens: Vec::new(),
    };
    for (b, d) in f.blocks.iter() {
        if let Some(s) = states[b].as_mut() {
            undo.lens.push((b, s.0.len()));
            for (inst, _) in &d.insts {
                if let Some(v) = inst.def() {
                    undo.ranges.push((b, v, get(s, v)));
                }
                step(s, inst);
            }
        }
    }
    (states, undo)
}

/// The states at the block entries (`analyze`) back from `end_states_undoable`'s.
pub fn entry_states(mut ends: SecondaryMap<Block, Option<State>>, undo: Undo) -> SecondaryMap<Block, Option<State>> {
    for &(b, v, r) in undo.ranges.iter().rev() {
        if let Some(s) = ends[b].as_mut() {
            set(s, v, r);
        }
    }
    for (b, len) in undo.lens {
        if let Some(s) = ends[b].as_mut() {
            s.0.truncate(len);
        }
    }
    ends
}

/// For tests and `--emit ir`: the range of `v` at the end of block `b`, if known.
pub fn range_at_end(f: &Function, b: Block, v: Value) -> Option<Range> {
    let states = analyze(f);
    let mut s = states[b].clone()?;
    for (inst, _) in &f.blocks[b].insts {
        step(&mut s, inst);
    }
    s.get(&v).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Operand, ValueKind};

    /// `v = v + 1`.
    fn add_one(v: Value) -> Inst {
        Inst::Bin {
            op: BinOp::Add,
            dst: v,
            a: v,
            b: Operand::Imm(1),
        }
    }

    /// Block `b` of a counting loop: `i = i + 1; if i op k then back else exit`.
    fn count(f: &mut Function, b: Block, i: Value, (op, k): (JmpOp, i64), back: Block, exit: Block) {
        f.blocks[b].insts.push((add_one(i), Default::default()));
        f.blocks[b].term.0 = Terminator::Branch {
            op,
            a: i,
            b: Operand::Imm(k),
            then_: back,
            else_: exit,
        };
    }

    /// `v = <load of size>; w = op(v); if w > 0xfff0 goto err else ok`: the entry block and
    /// `ok`.
    fn check_after(size: Size, op: impl FnOnce(Value, Value) -> Inst) -> (Function, Block, Block) {
        let mut f = Function::new("t");
        let err = f.new_block();
        let ok = f.new_block();
        let p = f.new_value(ValueKind::Pointer);
        let v = f.new_value(ValueKind::Scalar);
        let w = f.new_value(ValueKind::Scalar);
        let e = f.entry;
        let loc = Default::default();
        f.blocks[e].insts.push((Inst::Arg { dst: p, index: 0 }, loc));
        f.blocks[e].insts.push((
            Inst::Load {
                dst: v,
                base: p,
                off: 0,
                size,
            },
            loc,
        ));
        f.blocks[e].insts.push((op(w, v), loc));
        f.blocks[e].term.0 = Terminator::Branch {
            op: JmpOp::Jgt,
            a: w,
            b: Operand::Imm(0xfff0),
            then_: err,
            else_: ok,
        };
        (f, e, ok)
    }

    #[test]
    fn a_check_that_cannot_fail_is_removed() {
        let (mut f, e, ok) = check_after(Size::B, |w, v| Inst::Bin {
            op: BinOp::Add,
            dst: w,
            a: v,
            b: Operand::Imm(14),
        });
        assert!(remove_decided_branches(&mut f));
        assert_eq!(f.blocks[e].term.0, Terminator::Jump(ok));
    }

    #[test]
    fn a_check_that_can_fail_stays() {
        let (mut f, _, _) = check_after(Size::W, |w, v| Inst::Mov { dst: w, src: v });
        assert!(!remove_decided_branches(&mut f));
    }

    #[test]
    fn a_64_bit_byte_swap_may_be_negative() {
        // ntoh64 of a byte can set the sign bit: `w > 0xfff0` is not decided either way, and
        // neither is `w < 0` (the bug was treating it as non-negative).
        let (mut f, _, _) = check_after(Size::B, |w, v| Inst::Bswap {
            dst: w,
            src: v,
            bits: 64,
        });
        assert!(!remove_decided_branches(&mut f));
        assert!(range_at_end(&f, f.entry, Value::from_u32(2)).is_none_or(|r| r.lo < 0));
    }

    #[test]
    fn a_logical_shift_by_63_is_a_bit_and_an_or_of_bits_too() {
        let bit = bin(BinOp::Rsh, Range::FULL, Range::exact(63));
        assert_eq!(bit, Range { lo: 0, hi: 1 });
        assert_eq!(bin(BinOp::Or, bit, bit), Range { lo: 0, hi: 1 });
        assert_eq!(
            bin(BinOp::Or, Range { lo: 2, hi: 5 }, Range { lo: 0, hi: 8 }),
            Range { lo: 2, hi: 15 }
        );
        // A shift by 0 of a possibly negative value says nothing.
        assert_eq!(bin(BinOp::Rsh, Range::FULL, Range::exact(0)), Range::FULL);
    }

    /// States are made in the buffers of dropped ones: nothing of what a dropped state knew
    /// shows in a state made after it (a new one knows nothing; a copy, what it copies).
    #[test]
    fn a_state_made_in_a_spare_buffer_holds_nothing_old() {
        let mut known = State::unknown(8);
        for i in 0..8 {
            set(&mut known, Value::from_u32(i), Range::exact(i as i64));
        }
        drop(known);
        let fresh = State::unknown(4);
        assert!(fresh.0.iter().all(|r| *r == Range::FULL) && fresh.0.len() == 4);
        let mut short = State::unknown(2);
        set(&mut short, Value::from_u32(1), Range::exact(7));
        drop(fresh);
        let copy = short.clone();
        assert_eq!(copy.0, vec![Range::FULL, Range::exact(7)]);
    }

    /// A block that is its own successor runs its steps on a copy of its entry state (the
    /// others run on the entry state itself and undo them): both give the loop's ranges, and
    /// the entry states are left as they were before the steps.
    #[test]
    fn a_block_that_loops_to_itself() {
        let mut f = Function::new("t");
        let [body, exit] = [(); 2].map(|_| f.new_block());
        let i = f.new_value(ValueKind::Scalar);
        let loc = Default::default();
        let e = f.entry;
        f.blocks[e].insts.push((Inst::Const { dst: i, imm: 0 }, loc));
        f.blocks[e].term.0 = Terminator::Jump(body);
        count(&mut f, body, i, (JmpOp::Jslt, 5), body, exit);
        let states = analyze(&f);
        assert_eq!(
            states[body].as_ref().and_then(|s| s.get(&i)),
            Some(&Range { lo: 0, hi: 4 })
        );
        assert_eq!(
            states[exit].as_ref().and_then(|s| s.get(&i)),
            Some(&Range { lo: 5, hi: 5 })
        );
        assert_eq!(range_at_end(&f, e, i), Some(Range::exact(0)));
    }

    /// A loop counter widens through the constants it is compared against, not those of every
    /// branch of the function: the 40 tests before the loop do not cost trips around it.
    #[test]
    fn a_counter_widens_to_its_own_bound() {
        let mut f = Function::new("t");
        let x = f.new_value(ValueKind::Scalar);
        let i = f.new_value(ValueKind::Scalar);
        let loc = Default::default();
        let mut at = f.entry;
        f.blocks[at].insts.push((Inst::Arg { dst: x, index: 0 }, loc));
        let exit = f.new_block();
        f.blocks[exit].term.0 = Terminator::Return(Operand::Value(i));
        for k in 0..40 {
            let next = f.new_block();
            f.blocks[at].term.0 = Terminator::Branch {
                op: JmpOp::Jeq,
                a: x,
                b: Operand::Imm(10 * k + 5),
                then_: exit,
                else_: next,
            };
            at = next;
        }
        let [header, latch] = [(); 2].map(|_| f.new_block());
        f.blocks[at].insts.push((Inst::Const { dst: i, imm: 0 }, loc));
        f.blocks[at].term.0 = Terminator::Jump(header);
        f.blocks[header].term.0 = Terminator::Jump(latch);
        count(&mut f, latch, i, (JmpOp::Jsle, 511), header, exit);
        let (states, visits) = analyze_counting(&f);
        assert_eq!(
            states[header].as_ref().and_then(|s| s.get(&i)),
            Some(&Range { lo: 0, hi: 511 })
        );
        // 41 blocks before the loop and the exit once each, the loop's two a few times (every
        // constant of the function as a threshold: about 120 times each).
        assert!(visits < 60, "{visits} visits");
    }

    /// Nested loops: the outer counter is not written in the inner loop, so its growth
    /// reaches the inner loop's back edge only through the entry logs (`analyze`'s merges
    /// along an edge look at the values that changed since the edge's last merge).
    #[test]
    fn an_outer_counter_grows_through_an_inner_loop() {
        let mut f = Function::new("t");
        let [outer, inner_init, inner, body, outer_next, exit] = [(); 6].map(|_| f.new_block());
        let (i, j) = (f.new_value(ValueKind::Scalar), f.new_value(ValueKind::Scalar));
        let loc = Default::default();
        let below = |v: Value, k: i64, then_: Block, else_: Block| Terminator::Branch {
            op: JmpOp::Jslt,
            a: v,
            b: Operand::Imm(k),
            then_,
            else_,
        };
        let e = f.entry;
        f.blocks[e].insts.push((Inst::Const { dst: j, imm: 0 }, loc));
        f.blocks[e].term.0 = Terminator::Jump(outer);
        f.blocks[outer].term.0 = below(j, 3, inner_init, exit);
        f.blocks[inner_init].insts.push((Inst::Const { dst: i, imm: 0 }, loc));
        f.blocks[inner_init].term.0 = Terminator::Jump(inner);
        f.blocks[inner].term.0 = below(i, 5, body, outer_next);
        f.blocks[body].insts.push((add_one(i), loc));
        f.blocks[body].term.0 = Terminator::Jump(inner);
        f.blocks[outer_next].insts.push((add_one(j), loc));
        f.blocks[outer_next].term.0 = Terminator::Jump(outer);
        assert_eq!(range_at_end(&f, body, j), Some(Range { lo: 0, hi: 2 }));
        assert_eq!(range_at_end(&f, body, i), Some(Range { lo: 1, hi: 5 }));
        assert_eq!(range_at_end(&f, outer_next, j), Some(Range { lo: 1, hi: 3 }));
        // `simplify` hands its analysis on as the entry states it undoes from the end states.
        let (ends, undo) = end_states_undoable(&f);
        assert_ne!(
            ends[body].as_ref().map(|s| s.0.clone()),
            analyze(&f)[body].as_ref().map(|s| s.0.clone())
        );
        let entries = entry_states(ends, undo);
        let fresh = analyze(&f);
        for b in [e, outer, inner_init, inner, body, outer_next, exit] {
            assert_eq!(
                entries[b].as_ref().map(|s| &s.0),
                fresh[b].as_ref().map(|s| &s.0),
                "{b:?}"
            );
        }
    }
}
