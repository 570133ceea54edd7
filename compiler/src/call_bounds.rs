//! Bounds for a BPF function's integer arguments, taken from its call sites.
//!
//! Why: a function of its own (a loop called inside a loop, docs/language.md section 5) is
//! verified once, knowing nothing of its arguments. An offset argument is then unbounded
//! inside it, and every packet read through it needs a test that the offset is below 2^16
//! besides the packet test, plus a scalar compare for the loop's exit. The callers' interval
//! analysis knows the argument at every call. When every caller has been optimised, the
//! callee gets a first test `if arg >u hi then return` that no call takes (each call passes
//! a value in `[0, hi]`), and from it both the callee's analysis and the verifier know
//! `0 <= arg <= hi`: the offset tests inside become provable and are removed.

use std::collections::BTreeMap;

use crate::ir::{Block, BlockData, Function, Inst, Operand, Terminator, Value, ValueKind};
use crate::ranges::{Entries, Range};
use runtime_bpf::isa::JmpOp;
use runtime_bpf::object::SourceLoc;

/// A bound is added only below this: offsets into a packet are below 2^16, and a larger
/// bound would prove nothing the verifier can use.
const LARGEST_BOUND: i64 = 1 << 16;

/// Per callee (`Inst::CallLocal`'s `func`), per argument index (as in `Inst::Arg`): the
/// union of the ranges the calls of one function pass (`None`: some call passes a value of
/// unknown range).
pub type CallRanges = BTreeMap<u32, Vec<Option<Range>>>;

/// The ranges `f`'s calls pass, from `entries`, an interval analysis of `f` as it is. Taken
/// at any point of the optimisation they stay true of the final code: the passes after keep
/// what each call receives at run time, and the analysis over-approximates it.
pub fn ranges_at_calls(f: &Function, entries: &Entries) -> CallRanges {
    let mut out = CallRanges::new();
    for (b, data) in f.blocks.iter() {
        if callees(data).next().is_none() {
            continue;
        }
        let Some(mut state) = entries[b].clone() else {
            continue;
        };
        for (inst, _) in &data.insts {
            if let Inst::CallLocal { func, args, .. } = inst {
                let passed: Vec<Option<Range>> = args
                    .iter()
                    .map(|a| match a {
                        Operand::Imm(k) => Some(Range::exact(*k)),
                        Operand::Value(v) => state.get(v).copied(),
                    })
                    .collect();
                let joined = match out.remove(func) {
                    None => passed,
                    Some(seen) => union(&seen, &passed),
                };
                out.insert(*func, joined);
            }
            crate::ranges::step(&mut state, inst);
        }
    }
    out
}

/// `ranges_at_calls` with an analysis of its own, made only if `f` calls anything.
pub fn ranges_at_calls_analysed(f: &Function) -> CallRanges {
    match f.blocks.values().any(|b| callees(b).next().is_some()) {
        true => ranges_at_calls(f, &crate::ranges::analyze(f)),
        false => CallRanges::new(),
    }
}

/// What the calls in all of `callers` pass to `callee`; `None` when none calls it.
pub fn argument_ranges(callers: &[CallRanges], callee: u32) -> Option<Vec<Option<Range>>> {
    callers.iter().filter_map(|c| c.get(&callee)).fold(None, |acc, r| {
        Some(acc.map_or_else(|| r.clone(), |a: Vec<_>| union(&a, r)))
    })
}

fn union(a: &[Option<Range>], b: &[Option<Range>]) -> Vec<Option<Range>> {
    a.iter()
        .zip(b)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => Some(Range {
                lo: a.lo.min(b.lo),
                hi: a.hi.max(b.hi),
            }),
            _ => None,
        })
        .collect()
}

/// Whether `f` calls `funcs[callee]`.
pub fn calls(f: &Function, callee: u32) -> bool {
    f.blocks.values().any(|b| callees(b).any(|c| c == callee))
}

/// The functions the block's `CallLocal`s call, in order.
fn callees(b: &BlockData) -> impl Iterator<Item = u32> + '_ {
    b.insts.iter().filter_map(|(i, _)| match i {
        Inst::CallLocal { func, .. } => Some(*func),
        _ => None,
    })
}

/// Starts `f` with `if arg >u hi then return fail` for each argument whose range in `ranges`
/// is non-negative, below `LARGEST_BOUND` and wider than a boolean's (a flag gains nothing
/// from a bound and would cost the test). Returns whether it added any.
pub fn bound_arguments(f: &mut Function, ranges: &[Option<Range>], fail: i64) -> bool {
    let entry = f.entry;
    let args = f.blocks[entry]
        .insts
        .iter()
        .take_while(|(i, _)| matches!(i, Inst::Arg { .. }))
        .count();
    let bounded: Vec<(Value, i64)> = f.blocks[entry].insts[..args]
        .iter()
        .filter_map(|(inst, _)| match inst {
            // Scalars only: a pointer argument (ctx, a result's slot) is compared with nothing.
            Inst::Arg { dst, index } if f.values[*dst] == ValueKind::Scalar => {
                match ranges.get(*index as usize).copied().flatten() {
                    Some(r) if r.lo >= 0 && r.hi > 1 && r.hi < LARGEST_BOUND => Some((*dst, r.hi)),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    if bounded.is_empty() {
        return false;
    }
    // The entry keeps its arguments (they must come first in it); the rest moves to a block
    // of its own, reached once every test has passed.
    let rest = f.blocks[entry].insts.split_off(args);
    let cont = f.new_block();
    f.blocks[cont].insts = rest;
    let term = std::mem::replace(
        &mut f.blocks[entry].term,
        (Terminator::Jump(cont), SourceLoc::default()),
    );
    f.blocks[cont].term = term;
    let out = f.new_block();
    f.blocks[out].term = (Terminator::Return(Operand::Imm(fail)), SourceLoc::default());
    let mut at: Block = entry;
    for (k, (v, hi)) in bounded.iter().enumerate() {
        let next = if k + 1 == bounded.len() { cont } else { f.new_block() };
        f.blocks[at].term = (
            Terminator::Branch {
                op: JmpOp::Jgt,
                a: *v,
                b: Operand::Imm(*hi),
                then_: out,
                else_: next,
            },
            SourceLoc::default(),
        );
        at = next;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_bpf::isa::Size;

    /// `callee(ctx, n)`: reads the packet at `n` (no bound of its own).
    fn callee() -> Function {
        let mut f = Function::new("callee");
        let ctx = f.new_value(ValueKind::Pointer);
        let n = f.new_value(ValueKind::Scalar);
        let x = f.new_value(ValueKind::Scalar);
        let e = f.entry;
        f.blocks[e]
            .insts
            .push((Inst::Arg { dst: ctx, index: 0 }, SourceLoc::default()));
        f.blocks[e]
            .insts
            .push((Inst::Arg { dst: n, index: 1 }, SourceLoc::default()));
        f.blocks[e].insts.push((
            Inst::Load {
                dst: x,
                base: ctx,
                off: 0,
                size: Size::B,
            },
            SourceLoc::default(),
        ));
        f.blocks[e].term = (Terminator::Return(Operand::Value(x)), SourceLoc::default());
        f
    }

    /// `caller`: `m = load.B; callee(ctx, m + 14)` (so 14 <= m + 14 <= 269).
    fn caller() -> Function {
        let mut f = Function::new("caller");
        let ctx = f.new_value(ValueKind::Pointer);
        let m = f.new_value(ValueKind::Scalar);
        let r = f.new_value(ValueKind::Scalar);
        let e = f.entry;
        let insts = vec![
            Inst::Arg { dst: ctx, index: 0 },
            Inst::Load {
                dst: m,
                base: ctx,
                off: 0,
                size: Size::B,
            },
            Inst::Bin {
                op: crate::ir::BinOp::Add,
                dst: m,
                a: m,
                b: Operand::Imm(14),
            },
            Inst::CallLocal {
                func: 1,
                args: vec![Operand::Value(ctx), Operand::Value(m)],
                dst: Some(r),
            },
        ];
        f.blocks[e].insts = insts.into_iter().map(|i| (i, SourceLoc::default())).collect();
        f.blocks[e].term = (Terminator::Return(Operand::Value(r)), SourceLoc::default());
        f
    }

    #[test]
    fn an_argument_gets_the_bound_its_calls_give() {
        let caller = caller();
        let calls = ranges_at_calls(&caller, &crate::ranges::analyze(&caller));
        let ranges = argument_ranges(std::slice::from_ref(&calls), 1).expect("called");
        assert_eq!(ranges[1], Some(Range { lo: 14, hi: 269 }));
        assert_eq!(argument_ranges(&[calls], 2), None, "not called");

        let mut f = callee();
        assert!(bound_arguments(&mut f, &ranges, 1));
        let entry = &f.blocks[f.entry];
        assert_eq!(entry.insts.len(), 2, "the arguments stay first in the entry");
        let Terminator::Branch {
            op: JmpOp::Jgt,
            b: Operand::Imm(269),
            then_,
            else_,
            ..
        } = entry.term.0
        else {
            panic!("no bound test: {:?}", entry.term.0);
        };
        assert_eq!(f.blocks[then_].term.0, Terminator::Return(Operand::Imm(1)));
        assert_eq!(f.blocks[else_].insts.len(), 1, "the load moved after the test");
        // Inside, the analysis now knows the argument.
        let n = Value::from_u32(1);
        assert_eq!(
            crate::ranges::range_at_end(&f, else_, n),
            Some(Range { lo: 0, hi: 269 })
        );
    }

    #[test]
    fn unknown_negative_boolean_and_pointer_arguments_get_no_test() {
        let mut f = callee();
        let none = [None, None];
        assert!(!bound_arguments(&mut f, &none, 1));
        let negative = [None, Some(Range { lo: -1, hi: 10 })];
        assert!(!bound_arguments(&mut f, &negative, 1));
        let flag = [None, Some(Range { lo: 0, hi: 1 })];
        assert!(!bound_arguments(&mut f, &flag, 1));
        let huge = [None, Some(Range { lo: 0, hi: 1 << 20 })];
        assert!(!bound_arguments(&mut f, &huge, 1));
        let pointer = [Some(Range { lo: 0, hi: 100 }), None];
        assert!(!bound_arguments(&mut f, &pointer, 1), "ctx is a pointer");
        assert_eq!(f.blocks.len(), callee().blocks.len());
    }
}
