//! Common subexpressions along chains of blocks with a single predecessor.
//!
//! `p:getbyte(value + n) ~= 13 and p:getbyte(value + n) ~= 59` computes `value + n` twice
//! (lowering evaluates each expression where it stands). When an earlier instruction on
//! every path computed the same operation on the same operands, neither since rewritten, the
//! later one becomes a copy of its result, which `propagate_copies` then removes. Beyond the
//! instruction saved, the later bounds checks now test the value the earlier ones already
//! bounded, so the interval analysis removes them.
//!
//! A load is reused the same way (`p:getbyte(value + n)` twice, once the two addresses are
//! one): from the same base and offset, with the same size, with no store or call between
//! that could change the memory (another CPU's write to a map value in between is an
//! interleaving where both reads came first).

use rustc_hash::FxHashMap as HashMap;

use cranelift_entity::SecondaryMap;

use crate::ir::{BinOp, Block, Function, Inst, Operand, Value};
use runtime_bpf::isa::Size;

type Key = (BinOp, Value, Operand);

/// What is available: operations, and loads by (base, offset, size).
#[derive(Clone, Default)]
struct Avail {
    ops: HashMap<Key, Value>,
    loads: HashMap<(Value, i16, Size), Value>,
    /// A bit (value number mod 64) for every value an entry ever named: `forget` runs for
    /// every instruction's write, and a value with no bit here has nothing to forget, so the
    /// walks over both maps (most of this pass's time) are skipped.
    named: u64,
}

fn bit(v: Value) -> u64 {
    1 << (v.as_u32() % 64)
}

fn forget(avail: &mut Avail, v: Value) {
    if avail.named & bit(v) == 0 {
        return;
    }
    avail
        .ops
        .retain(|(_, a, b), d| *a != v && *b != Operand::Value(v) && *d != v);
    avail.loads.retain(|(base, _, _), d| *base != v && *d != v);
}

/// Whether some operation or load is made twice in `f` (on any paths): only then can one
/// reuse another. Most runs (the pass runs in every round of the local passes) find every
/// one made once and skip the walk, whose maps cost most of this pass.
fn repeats(f: &Function) -> bool {
    let mut ops: rustc_hash::FxHashSet<Key> = Default::default();
    let mut loads: rustc_hash::FxHashSet<(Value, i16, Size)> = Default::default();
    f.blocks.values().flat_map(|b| &b.insts).any(|(inst, _)| match *inst {
        Inst::Bin {
            op,
            a,
            b: o @ Operand::Value(_),
            ..
        } => !ops.insert((op, a, o)),
        Inst::Load { base, off, size, .. } => !loads.insert((base, off, size)),
        _ => false,
    })
}

pub fn reuse_expressions(f: &mut Function, facts: &mut crate::facts::Facts) -> bool {
    if !repeats(f) {
        return false;
    }
    let (cfg, defs) = facts.cfg_and_defs(f);
    let order = &cfg.order;
    // Counted per edge (a branch with both sides to one block counts twice), unlike `cfg.preds`.
    let mut preds: SecondaryMap<Block, u32> = f.block_map();
    for &b in order {
        for s in f.blocks[b].term.0.successors() {
            preds[s] += 1;
        }
    }
    let mut edge: HashMap<Block, Avail> = HashMap::default();
    // Maps a block is done with, emptied, for the next blocks that start from nothing: their
    // tables' allocations (one or two per block, and again for every copy along an edge) were
    // a good part of this pass. Only the maps' capacities differ, never what they hold.
    let mut spare: Vec<Avail> = Vec::new();
    let fresh = |spare: &mut Vec<Avail>| {
        spare
            .pop()
            .map(|mut a| {
                a.ops.clear();
                a.loads.clear();
                a.named = 0;
                a
            })
            .unwrap_or_default()
    };
    let mut changed = false;
    for &b in order {
        let mut avail = if preds[b] == 1 && b != f.entry {
            edge.remove(&b).unwrap_or_else(|| fresh(&mut spare))
        } else {
            fresh(&mut spare)
        };
        for (inst, _) in f.blocks[b].insts.iter_mut() {
            // Only value-with-value operations: `x + k` is as cheap to redo as to keep live
            // (and `packet_access` already treats `x + k` as `x` plus an offset).
            if let Inst::Bin {
                op,
                dst,
                a,
                b: o @ Operand::Value(bv),
            } = *inst
            {
                if defs[dst] == 1 && dst != a && bv != dst {
                    if let Some(&prev) = avail.ops.get(&(op, a, o)) {
                        *inst = Inst::Mov { dst, src: prev };
                        changed = true;
                        continue;
                    }
                    forget(&mut avail, dst);
                    avail.named |= bit(dst) | bit(a) | bit(bv);
                    avail.ops.insert((op, a, o), dst);
                    continue;
                }
            }
            if let Inst::Load { dst, base, off, size } = *inst {
                if defs[dst] == 1 && dst != base {
                    if let Some(&prev) = avail.loads.get(&(base, off, size)) {
                        *inst = Inst::Mov { dst, src: prev };
                        changed = true;
                        continue;
                    }
                    forget(&mut avail, dst);
                    avail.named |= bit(dst) | bit(base);
                    avail.loads.insert((base, off, size), dst);
                    continue;
                }
            }
            // A helper may move the packet: pointers computed before it are not reused after,
            // nor values loaded (a helper or a store may change the memory).
            if inst.is_call() {
                avail.ops.clear();
            }
            if inst.is_call()
                || matches!(
                    inst,
                    Inst::Store { .. } | Inst::StoreSlot { .. } | Inst::AtomicAdd { .. }
                )
            {
                avail.loads.clear();
            }
            if let Some(d) = inst.def() {
                forget(&mut avail, d);
            }
        }
        // Only a block with this one predecessor starts from what is available here (each
        // such successor once: a branch with both sides to one block counts it twice). The
        // last one takes `avail` itself.
        let mut takers = f.blocks[b].term.0.successors();
        takers.retain(|s| preds[*s] == 1 && *s != f.entry);
        if let Some((&last, others)) = takers.split_last() {
            for &s in others {
                let mut copy = fresh(&mut spare);
                copy.ops.clone_from(&avail.ops);
                copy.loads.clone_from(&avail.loads);
                copy.named = avail.named;
                edge.insert(s, copy);
            }
            edge.insert(last, avail);
        } else {
            spare.push(avail);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Terminator, ValueKind};
    use runtime_bpf::object::SourceLoc;

    fn add(dst: Value, a: Value, b: Value) -> Inst {
        Inst::Bin {
            op: BinOp::Add,
            dst,
            a,
            b: Operand::Value(b),
        }
    }

    /// `x + n` twice is computed once; after `n` is written again it is computed again.
    #[test]
    fn a_repeated_sum_is_reused_until_an_operand_changes() {
        let mut f = Function::new("t");
        let at = SourceLoc::default();
        let [x, n, s1, s2, s3] = [0; 5].map(|_| f.new_value(ValueKind::Scalar));
        let next = f.new_block();
        let e = f.entry;
        f.blocks[e].insts = vec![
            (Inst::Arg { dst: x, index: 0 }, at),
            (Inst::Arg { dst: n, index: 1 }, at),
            (add(s1, x, n), at),
        ];
        f.blocks[e].term.0 = Terminator::Jump(next);
        f.blocks[next].insts = vec![
            (add(s2, x, n), at),
            (Inst::Const { dst: n, imm: 3 }, at),
            (add(s3, x, n), at),
        ];
        f.blocks[next].term.0 = Terminator::Return(Operand::Value(s3));
        assert!(reuse_expressions(&mut f, &mut Default::default()));
        let listing = crate::ir::display(&f);
        assert!(listing.contains(&format!("{s2} = {s1}")), "{listing}");
        assert!(listing.contains(&format!("{s3} = Add {x}, {n}")), "{listing}");
    }

    /// A byte loaded twice from one address is loaded once; after a store it is loaded again.
    #[test]
    fn a_repeated_load_is_reused_until_a_store() {
        let mut f = Function::new("t");
        let at = SourceLoc::default();
        let p = f.new_value(ValueKind::Pointer);
        let [l1, l2, l3] = [0; 3].map(|_| f.new_value(ValueKind::Scalar));
        let load = |dst| Inst::Load {
            dst,
            base: p,
            off: 3,
            size: Size::B,
        };
        let next = f.new_block();
        let e = f.entry;
        f.blocks[e].insts = vec![(Inst::Arg { dst: p, index: 0 }, at), (load(l1), at)];
        f.blocks[e].term.0 = Terminator::Jump(next);
        let store = Inst::Store {
            base: p,
            off: 3,
            src: Operand::Imm(1),
            size: Size::B,
        };
        f.blocks[next].insts = vec![(load(l2), at), (store, at), (load(l3), at)];
        f.blocks[next].term.0 = Terminator::Return(Operand::Value(l3));
        assert!(reuse_expressions(&mut f, &mut Default::default()));
        let listing = crate::ir::display(&f);
        assert!(listing.contains(&format!("{l2} = {l1}")), "{listing}");
        assert!(listing.contains(&format!("{l3} = load.B")), "{listing}");
    }
}
