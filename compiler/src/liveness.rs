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

use crate::ir::{Block, Function, Value};
use cranelift_entity::{EntityRef, SecondaryMap};

/// Live-in and live-out sets of every reachable block.
///
/// Only values read in some block before being written there ("global" values) can be live
/// across a block boundary, so the sets range over those alone: temporaries local to one
/// block cost nothing, which keeps large functions cheap. The sets of all blocks are rows of
/// one flat array of words (a block's row at its number), not a bit set each: the optimiser
/// computes liveness several times per function, and two allocations per block per set (and
/// one per block per iteration) were most of its cost.
#[derive(Clone, Debug)]
pub struct Liveness {
    /// Dense index -> value, for the global values.
    globals: Vec<Value>,
    /// Value -> dense index (u32::MAX when the value never crosses a block boundary).
    index: SecondaryMap<Value, u32>,
    /// Words per row.
    words: usize,
    live_in: Vec<u64>,
    live_out: Vec<u64>,
    /// Reachable blocks in reverse post-order (the order the solver and the allocator use).
    rpo: Vec<Block>,
}

/// The bits of row `b` set, as indices.
fn row_bits(rows: &[u64], words: usize, b: Block) -> impl Iterator<Item = usize> + '_ {
    let at = b.index() * words;
    crate::bitset::bits(&rows[at..at + words])
}

fn row_has(rows: &[u64], words: usize, b: Block, i: usize) -> bool {
    rows.get(b.index() * words + i / 64)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

impl Liveness {
    pub fn compute(f: &Function) -> Liveness {
        Liveness::compute_in(f, f.reverse_postorder())
    }

    /// `compute` with the reachable blocks in reverse post-order already known.
    pub fn compute_in(f: &Function, rpo: Vec<Block>) -> Liveness {
        // Upward-exposed uses of each block, as (block's place in rpo, value), in order.
        let mut index: SecondaryMap<Value, u32> = SecondaryMap::with_default(u32::MAX);
        index.resize(f.values.len());
        let mut globals: Vec<Value> = Vec::new();
        let mut gen_vals: Vec<(u32, Value)> = Vec::new();
        let mut defined: SecondaryMap<Value, u32> = SecondaryMap::with_default(u32::MAX);
        defined.resize(f.values.len());
        for (bi, &b) in rpo.iter().enumerate() {
            let data = &f.blocks[b];
            let bi = bi as u32;
            let mut use_ = |v: Value, defined: &SecondaryMap<Value, u32>| {
                if defined[v] != bi {
                    if index[v] == u32::MAX {
                        index[v] = globals.len() as u32;
                        globals.push(v);
                    }
                    gen_vals.push((bi, v));
                }
            };
            for (inst, _) in &data.insts {
                inst.each_use(|u| use_(u, &defined));
                if let Some(d) = inst.def() {
                    defined[d] = bi;
                }
            }
            for u in data.term.0.uses() {
                use_(u, &defined);
            }
        }
        let n = globals.len();
        let words = n.div_ceil(64);
        let rows = f.blocks.len() * words;
        let mut gen = vec![0u64; rows];
        let mut kill = vec![0u64; rows];
        for &(bi, v) in &gen_vals {
            let i = index[v] as usize;
            gen[rpo[bi as usize].index() * words + i / 64] |= 1 << (i % 64);
        }
        for &b in &rpo {
            for (inst, _) in &f.blocks[b].insts {
                if let Some(d) = inst.def() {
                    if index[d] != u32::MAX {
                        let i = index[d] as usize;
                        kill[b.index() * words + i / 64] |= 1 << (i % 64);
                    }
                }
            }
        }

        let mut live_in = gen.clone();
        let mut live_out = vec![0u64; rows];
        // Post-order converges fastest for a backward problem.
        let mut changed = n > 0;
        while changed {
            changed = false;
            for &b in rpo.iter().rev() {
                let at = b.index() * words;
                for s in f.blocks[b].term.0.successors() {
                    let from = s.index() * words;
                    for k in 0..words {
                        live_out[at + k] |= live_in[from + k];
                    }
                }
                // in = gen ∪ (out − kill)
                for k in 0..words {
                    let inn = gen[at + k] | (live_out[at + k] & !kill[at + k]);
                    if inn != live_in[at + k] {
                        live_in[at + k] = inn;
                        changed = true;
                    }
                }
            }
        }
        Liveness {
            globals,
            index,
            words,
            live_in,
            live_out,
            rpo,
        }
    }

    /// Values live on entry to `b`.
    pub fn live_in(&self, b: Block) -> impl Iterator<Item = Value> + '_ {
        row_bits(&self.live_in, self.words, b).map(|i| self.globals[i])
    }
    /// Values live on exit from `b`.
    pub fn live_out(&self, b: Block) -> impl Iterator<Item = Value> + '_ {
        row_bits(&self.live_out, self.words, b).map(|i| self.globals[i])
    }
    pub fn is_live_in(&self, b: Block, v: Value) -> bool {
        let i = self.index[v];
        i != u32::MAX && row_has(&self.live_in, self.words, b, i as usize)
    }
    pub fn is_live_out(&self, b: Block, v: Value) -> bool {
        let i = self.index[v];
        i != u32::MAX && row_has(&self.live_out, self.words, b, i as usize)
    }
    /// The reachable blocks in reverse post-order.
    pub fn order(&self) -> &[Block] {
        &self.rpo
    }
}
