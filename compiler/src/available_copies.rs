//! Copy propagation for copies of a value written more than once: a numeric `for` loop's
//! counter.
//!
//! Lua's `for i = a, b` gives the body a copy of the loop's counter (`i = counter` at the top
//! of each iteration), and the counter is written twice (before the loop and at its latch), so
//! `opt::propagate_copies`, which needs both sides written once, keeps the copy: one `mov`
//! per iteration of every scan loop (ua_filter's and cookie_guard's: 1 of their 8-10
//! instructions per scanned byte). Here a use of `d` is replaced by `s` wherever the copy
//! `d = s` is available: on every path to the use it ran, and neither `d` nor `s` was written
//! since (a forward must-analysis over blocks). `d` must be written only by that copy.

use crate::bitset::BitSet;
use crate::facts::Facts;
use crate::ir::{Block, Function, Inst, Value};
use cranelift_entity::SecondaryMap;

/// Replaces uses of available copies' destinations by their sources; true if any changed.
pub fn propagate(f: &mut Function, facts: &mut Facts) -> bool {
    let (cfg, defs) = facts.cfg_and_defs(f);
    // The candidate copies: `d = s`, `d` written once, same kind, `s` written more than once
    // (written once, `propagate_copies` already does it everywhere).
    let mut copies: Vec<(Value, Value)> = Vec::new();
    let mut copy_of_dst: SecondaryMap<Value, Option<usize>> = f.value_map();
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            if let Inst::Mov { dst, src } = inst {
                if dst != src && defs[*dst] == 1 && defs[*src] > 1 && f.values[*dst] == f.values[*src] {
                    copy_of_dst[*dst] = Some(copies.len());
                    copies.push((*dst, *src));
                }
            }
        }
    }
    if copies.is_empty() {
        return false;
    }
    // Copies that a write of each value kills.
    let mut killed_by: SecondaryMap<Value, Vec<usize>> = f.value_map();
    for (k, &(d, s)) in copies.iter().enumerate() {
        killed_by[d].push(k);
        killed_by[s].push(k);
    }
    let step = |inst: &Inst, avail: &mut BitSet| {
        if let Some(v) = inst.def() {
            for &k in &killed_by[v] {
                avail.remove(k);
            }
        }
        if let Inst::Mov { dst, .. } = inst {
            if let Some(k) = copy_of_dst[*dst] {
                avail.insert(k);
            }
        }
    };
    let order = &cfg.order;
    let entry = order.first().copied();
    let preds = &cfg.preds;
    // Out-states; None until a block is first visited (the meet's identity: all copies).
    let mut out: SecondaryMap<Block, Option<BitSet>> = SecondaryMap::new();
    let entry_state = |b: Block, out: &SecondaryMap<Block, Option<BitSet>>| {
        let mut state: Option<BitSet> = None;
        if Some(b) != entry {
            for &p in &preds[b] {
                if let Some(o) = &out[p] {
                    match &mut state {
                        None => state = Some(o.clone()),
                        Some(s) => s.intersect_with(o),
                    }
                }
            }
        }
        state.unwrap_or_else(|| BitSet::new(copies.len()))
    };
    let mut changed_states = true;
    while changed_states {
        changed_states = false;
        for &b in order {
            let mut avail = entry_state(b, &out);
            for (inst, _) in &f.blocks[b].insts {
                step(inst, &mut avail);
            }
            if out[b].as_ref() != Some(&avail) {
                out[b] = Some(avail);
                changed_states = true;
            }
        }
    }
    let mut changed = false;
    for &b in order {
        let mut avail = entry_state(b, &out);
        let block = &mut f.blocks[b];
        let mut sub = |v: &mut Value, avail: &BitSet| {
            if let Some(k) = copy_of_dst[*v] {
                if avail.contains(k) {
                    *v = copies[k].1;
                    changed = true;
                }
            }
        };
        for (inst, _) in block.insts.iter_mut() {
            crate::opt::for_each_use(inst, &mut |v| sub(v, &avail));
            step(inst, &mut avail);
        }
        crate::opt::for_each_term_use(&mut block.term.0, &mut |v| sub(v, &avail));
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BinOp, Operand, Terminator, ValueKind};
    use crate::prune_hints::tests::{branch, counted_loop};
    use runtime_bpf::object::SourceLoc;

    /// `for i = 0, 9 do local j = i; if x + j == 7 then return j end end return j`: inside the
    /// body and on the way out of it, `j` is `i`; after the loop (reached from the header,
    /// also on its first test, before any copy) it is not.
    #[test]
    fn a_loop_counter_copy_is_replaced_where_it_holds() {
        let mut parts = None;
        let (mut f, [_, body, _, done]) = counted_loop(|f, x, [head, body, next, _]| {
            // `counted_loop`'s header tests the counter.
            let Terminator::Branch { a: i, .. } = f.blocks[head].term.0 else {
                panic!("the header tests the counter")
            };
            let (j, y) = (f.new_value(ValueKind::Scalar), f.new_value(ValueKind::Scalar));
            let at = SourceLoc::default();
            f.blocks[body].insts.push((Inst::Mov { dst: j, src: i }, at));
            let add = Inst::Bin {
                op: BinOp::Add,
                dst: y,
                a: x,
                b: Operand::Value(j),
            };
            f.blocks[body].insts.push((add, at));
            let found = f.new_block();
            f.blocks[found].term.0 = Terminator::Return(Operand::Value(j));
            parts = Some((i, j, found));
            branch(y, 7, found, next)
        });
        let (i, j, found) = parts.expect("the body was built");
        f.blocks[done].term.0 = Terminator::Return(Operand::Value(j));
        assert!(propagate(&mut f, &mut Facts::default()));
        assert!(f.blocks[body].insts[1].0.uses().contains(&i));
        assert!(!f.blocks[body].insts[1].0.uses().contains(&j));
        assert_eq!(f.blocks[found].term.0, Terminator::Return(Operand::Value(i)));
        assert_eq!(f.blocks[done].term.0, Terminator::Return(Operand::Value(j)));
    }
}
