//! The optimiser works on the blocks the entry reaches, numbered anew; the blocks it left out
//! are put back, under their numbers, when it is done.
//!
//! Lowering leaves most blocks of a function unreachable (the code after a `return`, the
//! branches of inlined library functions that a constant argument rules out): `sni_filter`
//! has about 245 blocks of which 81 are reachable. The first optimisation pass only empties
//! them (`opt::clear_unreachable`), but every later pass and analysis still walked them and
//! sized its per-block maps for them, which cost a good part of the optimiser's instructions.
//!
//! Nothing changes in the result: the blocks left out are exactly those `clear_unreachable`
//! empties first, emptied the same way; the kept blocks keep their order (a pass that picks
//! the lowest-numbered block picks the same one), and blocks the passes add come after all of
//! them in both numberings, in the order they were made.

use cranelift_entity::{EntityRef, PrimaryMap, SecondaryMap};

use crate::ir::{Block, BlockData, Function, Operand, Terminator};

/// How to put the blocks of a compacted function back under their numbers.
pub struct Renumbering {
    /// The full number of each kept block, by its compact number (ascending).
    full: Vec<Block>,
    /// How many blocks the full function had when last compacted: blocks added since are
    /// numbered from here, in the order they were made.
    len: usize,
    /// The blocks left out, emptied, with their full numbers.
    dropped: Vec<(Block, BlockData)>,
}

impl Renumbering {
    /// `f` as it is: every block under its own number.
    pub fn new(f: &Function) -> Renumbering {
        Renumbering {
            full: f.blocks.keys().collect(),
            len: f.blocks.len(),
            dropped: Vec::new(),
        }
    }

    /// The full number of block `b` of the compact function.
    fn full_of(&self, b: Block) -> Block {
        match self.full.get(b.index()) {
            Some(&n) => n,
            None => Block::new(self.len + b.index() - self.full.len()),
        }
    }

    /// Leaves out the blocks the entry does not reach, emptied as `clear_unreachable` empties
    /// them, and renumbers the others in order, when they are a quarter of the blocks or more
    /// (fewer cost the passes less than moving the others does). Returns whether it did.
    pub fn compact(&mut self, f: &mut Function) -> bool {
        let order = f.reverse_postorder();
        if (f.blocks.len() - order.len()) * 4 < f.blocks.len() {
            return false;
        }
        let mut live: SecondaryMap<Block, bool> = f.block_map();
        for &b in &order {
            live[b] = true;
        }
        // The full function's block count now (the blocks added since the last compaction are
        // numbered on from it).
        let total = self.len + f.blocks.len() - self.full.len();
        // (Only the kept blocks' entries are read.)
        let mut compact_of: SecondaryMap<Block, Block> = SecondaryMap::with_default(f.entry);
        let mut full = Vec::with_capacity(order.len());
        for (b, d) in std::mem::take(&mut f.blocks) {
            let n = self.full_of(b);
            if live[b] {
                compact_of[b] = f.blocks.push(d);
                full.push(n);
            } else {
                let emptied = BlockData {
                    insts: Vec::new(),
                    term: (Terminator::Return(Operand::Imm(0)), d.term.1),
                };
                self.dropped.push((n, emptied));
            }
        }
        for d in f.blocks.values_mut() {
            renumber(&mut d.term.0, |s| compact_of[s]);
        }
        f.entry = compact_of[f.entry];
        self.len = total;
        self.full = full;
        true
    }

    /// Puts the blocks left out back, and every block under its full number.
    pub fn restore(mut self, f: &mut Function) {
        let total = self.len + f.blocks.len() - self.full.len();
        self.dropped.sort_unstable_by_key(|(b, _)| *b);
        // Both sequences ascend by full number and together cover every number once: merged,
        // each block lands at its number.
        let mut blocks = std::mem::take(&mut f.blocks).into_iter().peekable();
        let mut dropped = std::mem::take(&mut self.dropped).into_iter().peekable();
        let mut merged = PrimaryMap::with_capacity(total);
        loop {
            let next_kept = blocks.peek().map(|&(b, _)| self.full_of(b));
            let next_dropped = dropped.peek().map(|(b, _)| *b);
            let d = match (next_kept, next_dropped) {
                (Some(k), Some(x)) if x < k => dropped.next().map(|(_, d)| d),
                (Some(_), _) => blocks.next().map(|(_, d)| d),
                (None, Some(_)) => dropped.next().map(|(_, d)| d),
                (None, None) => break,
            };
            if let Some(mut d) = d {
                renumber(&mut d.term.0, |s| self.full_of(s));
                merged.push(d);
            }
        }
        f.entry = self.full_of(f.entry);
        f.blocks = merged;
    }
}

/// Maps every successor of `t` through `to`.
fn renumber(t: &mut Terminator, to: impl Fn(Block) -> Block) {
    match t {
        Terminator::Jump(b) => *b = to(*b),
        Terminator::Branch { then_, else_, .. } => {
            *then_ = to(*then_);
            *else_ = to(*else_);
        }
        Terminator::MayGoto { exhausted, cont } => {
            *exhausted = to(*exhausted);
            *cont = to(*cont);
        }
        Terminator::Return(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Inst, ValueKind};

    /// b0 -> b2 -> b4, and b1 -> b3 -> b4 that nothing reaches (b1 with an instruction).
    fn two_unreachable() -> (Function, [Block; 4]) {
        let mut f = Function::new("t");
        let [b1, b2, b3, b4] = [(); 4].map(|_| f.new_block());
        let v = f.new_value(ValueKind::Scalar);
        let loc = Default::default();
        f.blocks[f.entry].term.0 = Terminator::Jump(b2);
        f.blocks[b1].insts.push((Inst::Const { dst: v, imm: 1 }, loc));
        f.blocks[b1].term.0 = Terminator::Jump(b3);
        f.blocks[b2].term.0 = Terminator::Jump(b4);
        f.blocks[b3].term.0 = Terminator::Jump(b4);
        f.blocks[b4].term.0 = Terminator::Return(Operand::Imm(7));
        (f, [b1, b2, b3, b4])
    }

    /// Compacted, b0, b2 and b4 are 0, 1, 2, and a block added then is 3, b5 in full.
    /// Restored, the unreachable blocks are back empty, and the edges name the full numbers.
    #[test]
    fn unreachable_blocks_leave_and_come_back_empty() {
        let (mut f, [b1, b2, b3, b4]) = two_unreachable();
        let mut numbering = Renumbering::new(&f);
        assert!(numbering.compact(&mut f));
        assert_eq!(f.blocks.len(), 3);
        assert_eq!(f.blocks[Block::new(1)].term.0, Terminator::Jump(Block::new(2)));
        let added = f.new_block();
        f.blocks[Block::new(1)].term.0 = Terminator::Jump(added);
        f.blocks[added].term.0 = Terminator::Jump(Block::new(2));
        numbering.restore(&mut f);
        assert_eq!(f.blocks.len(), 6);
        let b5 = Block::new(5);
        assert_eq!(f.blocks[b2].term.0, Terminator::Jump(b5));
        assert_eq!(f.blocks[b5].term.0, Terminator::Jump(b4));
        assert_eq!(f.blocks[b4].term.0, Terminator::Return(Operand::Imm(7)));
        for b in [b1, b3] {
            assert!(f.blocks[b].insts.is_empty());
            assert_eq!(f.blocks[b].term.0, Terminator::Return(Operand::Imm(0)));
        }
        assert_eq!(f.entry, Block::new(0));
    }

    /// Compacted again once b4 (compact 2) is cut off, the numbering composes: the block
    /// added before (compact 3, b5) stays b5, and one added after is b6.
    #[test]
    fn compacted_twice() {
        let (mut f, [_, b2, _, b4]) = two_unreachable();
        let mut numbering = Renumbering::new(&f);
        assert!(numbering.compact(&mut f));
        let added = f.new_block();
        f.blocks[Block::new(1)].term.0 = Terminator::Jump(added);
        f.blocks[added].term.0 = Terminator::Return(Operand::Imm(3));
        assert!(numbering.compact(&mut f));
        assert_eq!(f.blocks.len(), 3);
        let later = f.new_block();
        f.blocks[Block::new(2)].term.0 = Terminator::Jump(later);
        f.blocks[later].term.0 = Terminator::Return(Operand::Imm(4));
        numbering.restore(&mut f);
        assert_eq!(f.blocks.len(), 7);
        assert_eq!(f.blocks[Block::new(5)].term.0, Terminator::Jump(Block::new(6)));
        assert_eq!(f.blocks[Block::new(6)].term.0, Terminator::Return(Operand::Imm(4)));
        assert_eq!(f.blocks[b2].term.0, Terminator::Jump(Block::new(5)));
        assert_eq!(f.blocks[b4].term.0, Terminator::Return(Operand::Imm(0)));
        assert_eq!(f.entry, Block::new(0));
    }
}
