//! Optimisation passes over the IR: small functions over plain data, run to a fixpoint.
//!
//! - `propagate_constants`: a value written once by a constant is used as an immediate.
//! - `fold`: arithmetic and branches on immediates are computed now.
//! - `remove_dead`: pure instructions whose results nobody reads are dropped.
//! - `remove_dead_stores`: pure instructions whose result is overwritten (or never read) on
//!   every path after them are dropped: the zero-initialisations and copies that inlined
//!   functions with several or optional results leave behind.
//! - `thread_jumps`: branches to empty blocks that only jump go straight to the target.
//! - `thread_known_branches`: a block that sets a flag to a constant and then reaches a test
//!   of that flag (in itself, or in an empty block it jumps to) goes straight to the side the
//!   test would take: how `if not v` after an inlined `return nil` costs nothing.

use cranelift_entity::SecondaryMap;

use crate::ir::{BinOp, Block, Function, Inst, Operand, Terminator, Value};
use runtime_bpf::isa::JmpOp;
use runtime_bpf::object::SourceLoc;

pub fn optimize(f: &mut Function) {
    for _ in 0..8 {
        let mut changed = false;
        changed |= propagate_constants(f);
        changed |= fold(f);
        changed |= crate::ranges::remove_decided_branches(f);
        changed |= remove_dead(f);
        changed |= remove_dead_stores(f);
        changed |= thread_jumps(f);
        changed |= thread_known_branches(f);
        if !changed {
            break;
        }
    }
}

/// Values defined exactly once, by a constant.
fn constants(f: &Function) -> SecondaryMap<Value, Option<i64>> {
    let defs = f.def_counts();
    let mut out = SecondaryMap::new();
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            if let Inst::Const { dst, imm } = inst {
                if defs[*dst] == 1 {
                    out[*dst] = Some(*imm);
                }
            }
        }
    }
    out
}

fn subst(o: &mut Operand, consts: &SecondaryMap<Value, Option<i64>>) -> bool {
    if let Operand::Value(v) = o {
        if let Some(c) = consts[*v] {
            *o = Operand::Imm(c);
            return true;
        }
    }
    false
}

pub fn propagate_constants(f: &mut Function) -> bool {
    let consts = constants(f);
    let mut changed = false;
    for (_, b) in f.blocks.iter_mut() {
        for (inst, _) in b.insts.iter_mut() {
            match inst {
                Inst::Bin { b: o, .. } => changed |= subst(o, &consts),
                Inst::Store { src, .. } | Inst::StoreSlot { src, .. } => changed |= subst(src, &consts),
                Inst::Call { args, .. } | Inst::CallKfunc { args, .. } => {
                    for a in args.iter_mut() {
                        changed |= subst(a, &consts);
                    }
                }
                Inst::Mov { dst, src } => {
                    if let Some(c) = consts[*src] {
                        *inst = Inst::Const { dst: *dst, imm: c };
                        changed = true;
                    }
                }
                _ => {}
            }
        }
        match &mut b.term.0 {
            Terminator::Branch { b: o, .. } => changed |= subst(o, &consts),
            Terminator::Return(o) => changed |= subst(o, &consts),
            _ => {}
        }
    }
    changed
}

fn eval_bin(op: BinOp, a: i64, b: i64) -> Option<i64> {
    Some(match op {
        BinOp::Add => a.wrapping_add(b),
        BinOp::Sub => a.wrapping_sub(b),
        BinOp::Mul => a.wrapping_mul(b),
        BinOp::And => a & b,
        BinOp::Or => a | b,
        BinOp::Xor => a ^ b,
        BinOp::Lsh => ((a as u64) << (b & 63)) as i64,
        BinOp::Rsh => ((a as u64) >> (b & 63)) as i64,
        BinOp::Arsh => a >> (b & 63),
        // Division is left to the kernel's semantics (and lowering's checks).
        _ => return None,
    })
}

fn eval_cond(op: JmpOp, a: i64, b: i64) -> Option<bool> {
    let (ua, ub) = (a as u64, b as u64);
    Some(match op {
        JmpOp::Jeq => a == b,
        JmpOp::Jne => a != b,
        JmpOp::Jgt => ua > ub,
        JmpOp::Jge => ua >= ub,
        JmpOp::Jlt => ua < ub,
        JmpOp::Jle => ua <= ub,
        JmpOp::Jsgt => a > b,
        JmpOp::Jsge => a >= b,
        JmpOp::Jslt => a < b,
        JmpOp::Jsle => a <= b,
        JmpOp::Jset => a & b != 0,
        _ => return None,
    })
}

pub fn fold(f: &mut Function) -> bool {
    let consts = constants(f);
    let mut changed = false;
    for (_, b) in f.blocks.iter_mut() {
        for (inst, _) in b.insts.iter_mut() {
            if let Inst::Bin {
                op,
                dst,
                a,
                b: Operand::Imm(y),
            } = inst
            {
                if let Some(x) = consts[*a] {
                    if let Some(v) = eval_bin(*op, x, *y) {
                        *inst = Inst::Const { dst: *dst, imm: v };
                        changed = true;
                        continue;
                    }
                }
                // x + 0, x - 0, x | 0 ... are moves.
                if *y == 0
                    && matches!(
                        op,
                        BinOp::Add | BinOp::Sub | BinOp::Or | BinOp::Xor | BinOp::Lsh | BinOp::Rsh | BinOp::Arsh
                    )
                {
                    *inst = Inst::Mov { dst: *dst, src: *a };
                    changed = true;
                }
            }
        }
        if let Terminator::Branch {
            op,
            a,
            b: Operand::Imm(y),
            then_,
            else_,
        } = &b.term.0
        {
            if let Some(x) = consts[*a] {
                if let Some(taken) = eval_cond(*op, x, *y) {
                    b.term.0 = Terminator::Jump(if taken { *then_ } else { *else_ });
                    changed = true;
                }
            }
        }
    }
    changed
}

pub fn remove_dead(f: &mut Function) -> bool {
    let mut used: SecondaryMap<Value, bool> = SecondaryMap::new();
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            for u in inst.uses() {
                used[u] = true;
            }
        }
        for u in b.term.0.uses() {
            used[u] = true;
        }
    }
    let mut changed = false;
    for (_, b) in f.blocks.iter_mut() {
        let before = b.insts.len();
        b.insts.retain(|(inst, _)| match inst.def() {
            Some(d) if !used[d] && inst.is_pure() && !matches!(inst, Inst::Arg { .. }) => false,
            _ => true,
        });
        // A call whose result is unused still runs, but needs no destination.
        for (inst, _) in b.insts.iter_mut() {
            if let Inst::Call { dst: Some(d), .. } = inst {
                if !used[*d] {
                    if let Inst::Call { dst, .. } = inst {
                        *dst = None;
                    }
                }
            }
        }
        changed |= b.insts.len() != before;
    }
    changed
}

/// Drops pure definitions that no later read can see, by liveness: the IR is not SSA, so a
/// value may be written on one line and overwritten before any read (`v = 0` then `v = w`).
pub fn remove_dead_stores(f: &mut Function) -> bool {
    let liveness = crate::liveness::Liveness::compute(f);
    let mut changed = false;
    for &b in liveness.order() {
        let mut live: std::collections::HashSet<Value> = liveness.live_out(b).collect();
        let data = &mut f.blocks[b];
        live.extend(data.term.0.uses());
        let mut keep = vec![true; data.insts.len()];
        for (i, (inst, _)) in data.insts.iter().enumerate().rev() {
            if let Some(d) = inst.def() {
                if !live.contains(&d) && inst.is_pure() && !matches!(inst, Inst::Arg { .. }) {
                    keep[i] = false;
                    continue;
                }
                live.remove(&d);
            }
            live.extend(inst.uses());
        }
        if keep.contains(&false) {
            let mut flags = keep.into_iter();
            data.insts.retain(|_| flags.next().unwrap_or(true));
            changed = true;
        }
    }
    changed
}

/// The constant `v` holds at the end of `b`, if its last definition in `b` is a constant.
fn constant_at_end(f: &Function, b: Block, v: Value) -> Option<i64> {
    f.blocks[b]
        .insts
        .iter()
        .rev()
        .find(|(inst, _)| inst.def() == Some(v))
        .and_then(|(inst, _)| match inst {
            Inst::Const { imm, .. } => Some(*imm),
            _ => None,
        })
}

/// Copies that a block may hold and still be threaded through (they are duplicated).
const MAX_THREADED_COPIES: usize = 6;

/// Where `from` goes when it ends by reaching the branch `term` after the `copies` (moves and
/// constants), if the branch tests a value that is a known constant by then.
fn decided_branch(f: &Function, from: Block, copies: &[(Inst, SourceLoc)], term: &Terminator) -> Option<Block> {
    let Terminator::Branch {
        op,
        a,
        b: Operand::Imm(y),
        then_,
        else_,
    } = term
    else {
        return None;
    };
    // Follow the tested value back through the copies to a constant.
    let mut v = *a;
    for (inst, _) in copies.iter().rev() {
        match inst {
            Inst::Mov { dst, src } if *dst == v => v = *src,
            Inst::Const { dst, imm } if *dst == v => {
                return eval_cond(*op, *imm, *y).map(|taken| if taken { *then_ } else { *else_ })
            }
            _ => {}
        }
    }
    let x = constant_at_end(f, from, v)?;
    eval_cond(*op, x, *y).map(|taken| if taken { *then_ } else { *else_ })
}

/// The copies and the branch reached from a jump to `t` through blocks that only copy (at
/// most [`MAX_THREADED_COPIES`] in all), or None.
fn copies_then_branch(f: &Function, from: Block, mut t: Block) -> Option<(Vec<(Inst, SourceLoc)>, Terminator)> {
    let mut copies = Vec::new();
    for _ in 0..4 {
        if t == from {
            return None;
        }
        let next = &f.blocks[t];
        if !next
            .insts
            .iter()
            .all(|(inst, _)| matches!(inst, Inst::Mov { .. } | Inst::Const { .. }))
            || copies.len() + next.insts.len() > MAX_THREADED_COPIES
        {
            return None;
        }
        copies.extend(next.insts.iter().cloned());
        match &next.term.0 {
            Terminator::Jump(j) => t = *j,
            term @ Terminator::Branch { .. } => return Some((copies, term.clone())),
            _ => return None,
        }
    }
    None
}

pub fn thread_known_branches(f: &mut Function) -> bool {
    let blocks: Vec<Block> = f.blocks.keys().collect();
    let mut changed = false;
    for b in blocks {
        let (target, copies) = match &f.blocks[b].term.0 {
            Terminator::Jump(t) => match copies_then_branch(f, b, *t) {
                Some((copies, term)) => (decided_branch(f, b, &copies, &term), copies),
                None => continue,
            },
            term @ Terminator::Branch { .. } => (decided_branch(f, b, &[], &term.clone()), Vec::new()),
            _ => continue,
        };
        if let Some(t) = target {
            f.blocks[b].insts.extend(copies);
            f.blocks[b].term.0 = Terminator::Jump(t);
            changed = true;
        }
    }
    changed
}

/// Where control really goes from `b` if `b` is an empty block that only jumps.
fn forward(f: &Function, mut b: Block) -> Block {
    for _ in 0..64 {
        let d = &f.blocks[b];
        match (&d.insts.is_empty(), &d.term.0) {
            (true, Terminator::Jump(t)) if *t != b => b = *t,
            _ => break,
        }
    }
    b
}

pub fn thread_jumps(f: &mut Function) -> bool {
    let blocks: Vec<Block> = f.blocks.keys().collect();
    let mut changed = false;
    for b in blocks {
        let term = f.blocks[b].term.0.clone();
        let new = match term {
            Terminator::Jump(t) => Terminator::Jump(forward(f, t)),
            Terminator::Branch {
                op,
                a,
                b: o,
                then_,
                else_,
            } => {
                let (t, e) = (forward(f, then_), forward(f, else_));
                if t == e {
                    Terminator::Jump(t)
                } else {
                    Terminator::Branch {
                        op,
                        a,
                        b: o,
                        then_: t,
                        else_: e,
                    }
                }
            }
            Terminator::MayGoto { exhausted, cont } => Terminator::MayGoto {
                exhausted: forward(f, exhausted),
                cont: forward(f, cont),
            },
            t => t,
        };
        if new != f.blocks[b].term.0 {
            f.blocks[b].term.0 = new;
            changed = true;
        }
    }
    let entry = f.entry;
    let fwd = forward(f, entry);
    if fwd != entry && f.blocks[entry].insts.is_empty() {
        f.entry = fwd;
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ValueKind;

    fn push(f: &mut Function, b: Block, inst: Inst) {
        f.blocks[b].insts.push((inst, Default::default()));
    }

    /// `entry: v = 0; v = arg; jump next`, `next: if v == 0 then a else b`, `a/b: return v`.
    fn overwritten_flag() -> (Function, Value, Block) {
        let mut f = Function::new("t");
        let e = f.entry;
        let v = f.new_value(ValueKind::Scalar);
        let next = f.new_block();
        let (a, b) = (f.new_block(), f.new_block());
        push(&mut f, e, Inst::Const { dst: v, imm: 0 });
        push(&mut f, e, Inst::Arg { dst: v, index: 0 });
        f.blocks[e].term.0 = Terminator::Jump(next);
        f.blocks[next].term.0 = Terminator::Branch {
            op: JmpOp::Jeq,
            a: v,
            b: Operand::Imm(0),
            then_: a,
            else_: b,
        };
        f.blocks[a].term.0 = Terminator::Return(Operand::Value(v));
        f.blocks[b].term.0 = Terminator::Return(Operand::Imm(1));
        (f, v, e)
    }

    #[test]
    fn a_definition_overwritten_before_any_read_is_removed() {
        let (mut f, _, e) = overwritten_flag();
        assert!(remove_dead_stores(&mut f));
        assert!(matches!(f.blocks[e].insts.as_slice(), [(Inst::Arg { .. }, _)]));
        assert!(!remove_dead_stores(&mut f), "nothing else is dead");
    }

    #[test]
    fn a_flag_set_to_a_constant_goes_straight_to_the_side_its_test_takes() {
        let mut f = Function::new("t");
        let e = f.entry;
        let (flag, copy) = (f.new_value(ValueKind::Scalar), f.new_value(ValueKind::Scalar));
        let (set, test, yes, no) = (f.new_block(), f.new_block(), f.new_block(), f.new_block());
        push(&mut f, e, Inst::Arg { dst: flag, index: 0 });
        f.blocks[e].term.0 = Terminator::Branch {
            op: JmpOp::Jeq,
            a: flag,
            b: Operand::Imm(7),
            then_: set,
            else_: test,
        };
        push(&mut f, set, Inst::Const { dst: flag, imm: 0 });
        f.blocks[set].term.0 = Terminator::Jump(test);
        // The test block copies the flag first, as inlined multiple results do.
        push(&mut f, test, Inst::Mov { dst: copy, src: flag });
        f.blocks[test].term.0 = Terminator::Branch {
            op: JmpOp::Jne,
            a: copy,
            b: Operand::Imm(0),
            then_: yes,
            else_: no,
        };
        f.blocks[yes].term.0 = Terminator::Return(Operand::Imm(1));
        f.blocks[no].term.0 = Terminator::Return(Operand::Imm(2));
        assert!(thread_known_branches(&mut f));
        assert_eq!(
            f.blocks[set].term.0,
            Terminator::Jump(no),
            "flag 0: the test is not taken"
        );
        assert_eq!(f.blocks[set].insts.len(), 2, "the copy travels with the jump");
        // The entry's unknown flag still goes through the test.
        assert_eq!(f.blocks[e].term.0.successors(), vec![set, test]);
    }
}
