//! Jump threading through blocks whose branch a predecessor already decides, and merging of
//! straight-line block chains.
//!
//! Lowering joins paths that carry different constants into one block that tests them: an
//! optional's presence flag (`hit = 1` on one path, `hit = 0` on the other, then `if hit`), a
//! comparison's 0/1 result, an inlined function's `nil` return. Each predecessor that knows
//! the flag gets its own copy of the (small) join block ending in a jump to the side the
//! branch would take, so the flag test disappears from that path, and code after it is
//! dominated by the path that produced it (which lets `lookups` reuse a map lookup).

use rustc_hash::FxHashMap as HashMap;

use crate::ir::{Block, BlockData, Function, Inst, Operand, Terminator, Value};
use crate::opt::{eval_bin, eval_cond};
use runtime_bpf::isa::JmpOp;

/// The largest join block copied into a predecessor.
const MAX_COPY: usize = 8;

/// Values known to hold a constant at the end of a block (and on one of its out-edges).
type Known = HashMap<Value, i64>;

fn step(k: &mut Known, inst: &Inst) {
    let Some(d) = inst.def() else { return };
    let v = match inst {
        Inst::Const { imm, .. } => Some(*imm),
        Inst::Mov { src, .. } => k.get(src).copied(),
        Inst::Bin { op, a, b, .. } => {
            let b = match b {
                Operand::Imm(i) => Some(*i),
                Operand::Value(v) => k.get(v).copied(),
            };
            match (k.get(a), b) {
                (Some(&x), Some(y)) => eval_bin(*op, x, y),
                _ => None,
            }
        }
        _ => None,
    };
    match v {
        Some(c) => k.insert(d, c),
        None => k.remove(&d),
    };
}

/// Constants at the end of `p` on its edge to `to`: the block's own constants, plus what an
/// equality branch implies on the edge where it holds; into `k`, cleared first.
fn known_on_edge(f: &Function, p: Block, to: Block, k: &mut Known) {
    k.clear();
    for (inst, _) in &f.blocks[p].insts {
        step(k, inst);
    }
    if let Terminator::Branch {
        op,
        a,
        b: Operand::Imm(c),
        then_,
        else_,
    } = f.blocks[p].term.0
    {
        if then_ != else_ && ((op == JmpOp::Jeq && then_ == to) || (op == JmpOp::Jne && else_ == to)) {
            k.insert(a, c);
        }
    }
}

/// Where `b`'s branch goes when entered with `k`, if that is decided.
fn decided_target(f: &Function, b: Block, k: &mut Known) -> Option<Block> {
    for (inst, _) in &f.blocks[b].insts {
        step(k, inst);
    }
    let Terminator::Branch {
        op,
        a,
        b: o,
        then_,
        else_,
    } = f.blocks[b].term.0
    else {
        return None;
    };
    let x = *k.get(&a)?;
    let y = match o {
        Operand::Imm(i) => i,
        Operand::Value(v) => *k.get(&v)?,
    };
    Some(if eval_cond(op, x, y)? { then_ } else { else_ })
}

pub(crate) fn redirect(t: &mut Terminator, from: Block, to: Block) {
    match t {
        Terminator::Jump(x) if *x == from => *x = to,
        Terminator::Branch { then_, else_, .. } => {
            if *then_ == from {
                *then_ = to;
            }
            if *else_ == from {
                *else_ = to;
            }
        }
        Terminator::MayGoto { exhausted, cont } => {
            if *exhausted == from {
                *exhausted = to;
            }
            if *cont == from {
                *cont = to;
            }
        }
        _ => {}
    }
}

/// Gives each predecessor that decides a small join block's branch its own copy of the block,
/// ending in a jump. Loop headers are left alone (the loop's shape is what the verifier
/// bounds).
pub fn thread_decided_branches(f: &mut Function, facts: &mut crate::facts::Facts) -> bool {
    let crate::facts::Cfg {
        order, index, preds, ..
    } = facts.cfg(f);
    let mut changed = false;
    // One map of known constants for every edge (a map per edge showed in profiles).
    let mut k = Known::default();
    for &b in order {
        let d = &f.blocks[b];
        if b == f.entry
            || d.insts.len() > MAX_COPY
            || !matches!(d.term.0, Terminator::Branch { .. })
            || !d
                .insts
                .iter()
                .all(|(i, _)| i.is_pure() && !matches!(i, Inst::Arg { .. }))
            || preds[b].iter().any(|&p| index[p] >= index[b])
        {
            continue;
        }
        let Terminator::Branch { a, b: o, .. } = d.term.0 else {
            continue;
        };
        for &p in &preds[b] {
            // Only `p`'s and `b`'s writes and `p`'s branch make a value known on the edge
            // (`known_on_edge` starts from nothing): a branch on values none of them write
            // is not decided there, and the edge need not be stepped through.
            let written = |v: Value| {
                let writes = |x: Block| f.blocks[x].insts.iter().any(|(i, _)| i.def() == Some(v));
                writes(b) || writes(p) || matches!(f.blocks[p].term.0, Terminator::Branch { a: t, .. } if t == v)
            };
            if !written(a) || matches!(o, Operand::Value(v) if !written(v)) {
                continue;
            }
            known_on_edge(f, p, b, &mut k);
            let Some(target) = decided_target(f, b, &mut k) else {
                continue;
            };
            let copy = f.blocks.push(BlockData {
                insts: f.blocks[b].insts.clone(),
                term: (Terminator::Jump(target), f.blocks[b].term.1),
            });
            redirect(&mut f.blocks[p].term.0, b, copy);
            changed = true;
        }
    }
    changed
}

/// Appends a block to its only predecessor when that predecessor just jumps to it.
pub fn merge_chains(f: &mut Function, facts: &mut crate::facts::Facts) -> bool {
    let crate::facts::Cfg { order, preds, .. } = facts.cfg(f);
    let mut changed = false;
    for &p in order {
        loop {
            let Terminator::Jump(s) = f.blocks[p].term.0 else { break };
            if s == p || s == f.entry || preds[s].len() != 1 {
                break;
            }
            let moved = std::mem::take(&mut f.blocks[s].insts);
            let term = f.blocks[s].term.clone();
            f.blocks[p].insts.extend(moved);
            f.blocks[p].term = term;
            // `s` is now unreachable; leave it as an empty return for the layout to drop.
            f.blocks[s].term.0 = Terminator::Return(Operand::Imm(0));
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ValueKind;
    use runtime_bpf::object::SourceLoc;

    /// `flag = 1` on one path, `flag = 0` on the other, then `if flag ~= 0`: each path goes
    /// straight to its side and the test is gone from both.
    #[test]
    fn a_flag_set_on_each_path_is_not_tested_again() {
        let mut f = Function::new("t");
        let flag = f.new_value(ValueKind::Scalar);
        let x = f.new_value(ValueKind::Scalar);
        let (one, zero, join, yes, no) = (
            f.new_block(),
            f.new_block(),
            f.new_block(),
            f.new_block(),
            f.new_block(),
        );
        let at = SourceLoc::default();
        let e = f.entry;
        f.blocks[e].insts.push((Inst::Arg { dst: x, index: 0 }, at));
        f.blocks[e].term.0 = Terminator::Branch {
            op: JmpOp::Jgt,
            a: x,
            b: Operand::Imm(5),
            then_: one,
            else_: zero,
        };
        f.blocks[one].insts.push((Inst::Const { dst: flag, imm: 1 }, at));
        f.blocks[one].term.0 = Terminator::Jump(join);
        f.blocks[zero].insts.push((Inst::Const { dst: flag, imm: 0 }, at));
        f.blocks[zero].term.0 = Terminator::Jump(join);
        f.blocks[join].term.0 = Terminator::Branch {
            op: JmpOp::Jne,
            a: flag,
            b: Operand::Imm(0),
            then_: yes,
            else_: no,
        };
        f.blocks[yes].term.0 = Terminator::Return(Operand::Imm(1));
        f.blocks[no].term.0 = Terminator::Return(Operand::Imm(2));
        assert!(thread_decided_branches(&mut f, &mut Default::default()));
        crate::opt::thread_jumps(&mut f);
        let listing = crate::ir::display(&f);
        assert!(!listing.contains(&format!("if Jne {flag}")), "{listing}");
        assert!(
            listing.contains("return 1") && listing.contains("return 2"),
            "{listing}"
        );
    }
}
