//! Liveness of virtual registers over the blocks of a `Function`.
//!
//! Classic backward dataflow (`in = use ∪ (out − def)`, `out = ∪ in(succ)`), solved
//! iteratively over the reachable blocks in post-order until nothing changes. No recursion:
//! CFGs from long programs can be deep. Unreachable blocks are ignored (they are never
//! emitted) and report empty sets.
//!
//! Because the IR is not SSA, a value read before it is written in a block is live into that
//! block even if another path defined it earlier; a value live into the entry block is one
//! that some path may read before any write (lowering should not produce that; the register
//! allocator tolerates it).

use crate::bitset::BitSet;
use crate::ir::{Block, Function, Value};
use cranelift_entity::SecondaryMap;

/// Live-in and live-out sets of every reachable block.
///
/// Only values read in some block before being written there ("global" values) can be live
/// across a block boundary, so the sets range over those alone: temporaries local to one
/// block cost nothing, which keeps large functions cheap.
#[derive(Clone, Debug)]
pub struct Liveness {
    /// Dense index -> value, for the global values.
    globals: Vec<Value>,
    /// Value -> dense index (u32::MAX when the value never crosses a block boundary).
    index: SecondaryMap<Value, u32>,
    live_in: SecondaryMap<Block, BitSet>,
    live_out: SecondaryMap<Block, BitSet>,
    /// Reachable blocks in reverse post-order (the order the solver and the allocator use).
    rpo: Vec<Block>,
}

impl Liveness {
    pub fn compute(f: &Function) -> Liveness {
        let rpo = f.reverse_postorder();
        // Upward-exposed uses and definitions of each block, as value lists.
        let mut index: SecondaryMap<Value, u32> = SecondaryMap::with_default(u32::MAX);
        let mut globals: Vec<Value> = Vec::new();
        let mut gen_vals: Vec<Vec<Value>> = Vec::with_capacity(rpo.len());
        let mut defined: SecondaryMap<Value, u32> = SecondaryMap::with_default(u32::MAX);
        for (bi, &b) in rpo.iter().enumerate() {
            let data = &f.blocks[b];
            let mut g = Vec::new();
            let bi = bi as u32;
            let mut use_ = |v: Value, defined: &SecondaryMap<Value, u32>, g: &mut Vec<Value>| {
                if defined[v] != bi {
                    if index[v] == u32::MAX {
                        index[v] = globals.len() as u32;
                        globals.push(v);
                    }
                    g.push(v);
                }
            };
            for (inst, _) in &data.insts {
                for u in inst.uses() {
                    use_(u, &defined, &mut g);
                }
                if let Some(d) = inst.def() {
                    defined[d] = bi;
                }
            }
            for u in data.term.0.uses() {
                use_(u, &defined, &mut g);
            }
            gen_vals.push(g);
        }
        let n = globals.len();
        let mut gen: SecondaryMap<Block, BitSet> = SecondaryMap::new();
        let mut kill: SecondaryMap<Block, BitSet> = SecondaryMap::new();
        for (bi, &b) in rpo.iter().enumerate() {
            let mut g = BitSet::new(n);
            for v in &gen_vals[bi] {
                g.insert(index[*v] as usize);
            }
            let mut k = BitSet::new(n);
            for (inst, _) in &f.blocks[b].insts {
                if let Some(d) = inst.def() {
                    if index[d] != u32::MAX {
                        k.insert(index[d] as usize);
                    }
                }
            }
            gen[b] = g;
            kill[b] = k;
        }

        let mut live_in: SecondaryMap<Block, BitSet> = SecondaryMap::new();
        let mut live_out: SecondaryMap<Block, BitSet> = SecondaryMap::new();
        for &b in &rpo {
            live_in[b] = gen[b].clone();
            live_out[b] = BitSet::new(n);
        }
        // Post-order converges fastest for a backward problem.
        let mut changed = n > 0;
        while changed {
            changed = false;
            for &b in rpo.iter().rev() {
                let mut out = std::mem::take(&mut live_out[b]);
                for s in f.blocks[b].term.0.successors() {
                    out.union_with(&live_in[s]);
                }
                // in = gen ∪ (out − kill)
                let mut inn = out.clone();
                inn.subtract(&kill[b]);
                inn.union_with(&gen[b]);
                if inn != live_in[b] {
                    live_in[b] = inn;
                    changed = true;
                }
                live_out[b] = out;
            }
        }
        Liveness {
            globals,
            index,
            live_in,
            live_out,
            rpo,
        }
    }

    /// Values live on entry to `b`.
    pub fn live_in(&self, b: Block) -> impl Iterator<Item = Value> + '_ {
        self.live_in[b].iter().map(|i| self.globals[i])
    }
    /// Values live on exit from `b`.
    pub fn live_out(&self, b: Block) -> impl Iterator<Item = Value> + '_ {
        self.live_out[b].iter().map(|i| self.globals[i])
    }
    pub fn is_live_in(&self, b: Block, v: Value) -> bool {
        let i = self.index[v];
        i != u32::MAX && self.live_in[b].contains(i as usize)
    }
    pub fn is_live_out(&self, b: Block, v: Value) -> bool {
        let i = self.index[v];
        i != u32::MAX && self.live_out[b].contains(i as usize)
    }
    /// The reachable blocks in reverse post-order.
    pub fn order(&self) -> &[Block] {
        &self.rpo
    }
}
