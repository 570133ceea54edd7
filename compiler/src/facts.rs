//! What several optimisation passes read about a function: the reachable blocks in reverse
//! post-order, their predecessors, how often each value is written and read, and the values
//! written once by a constant. Kept between passes until one edits the function, rather than
//! recomputed by every pass: `opt`'s fixpoint runs ~15 passes per round, most of which change
//! nothing, and recomputing these on every run was a quarter of the optimiser's instructions.
//!
//! The block order and predecessors depend on the blocks' successors alone, so they survive
//! edits of instructions: after an edit, `edited` keeps them when every block's successors
//! (and the entry) are what they were computed from, which is checked, not assumed from which
//! pass ran. The counts and constants are dropped on any edit, except by a pass that keeps
//! them up to date itself (`counts_mut`, then `edited_counts_kept`).

use cranelift_entity::{EntityRef, SecondaryMap};

use crate::ir::{Block, Function, Inst, Value};

/// The control-flow facts of a function, valid while its blocks' successors are unchanged.
pub struct Cfg {
    /// Blocks reachable from the entry, in reverse post-order (`Function::reverse_postorder`).
    pub(crate) order: Vec<Block>,
    /// Each block's place in `order` (0 for an unreachable block).
    pub(crate) index: SecondaryMap<Block, usize>,
    /// Each block's predecessors among the reachable blocks, each once, in `order`.
    pub(crate) preds: PredLists,
    /// What the facts were computed from: the entry and every block's successors.
    entry: Block,
    shape: Vec<([Block; 2], usize)>,
}

impl Cfg {
    pub fn new(f: &Function) -> Cfg {
        let order = f.reverse_postorder();
        let mut index: SecondaryMap<Block, usize> = f.block_map();
        for (i, &b) in order.iter().enumerate() {
            index[b] = i;
        }
        let preds = PredLists::new(f, &order);
        Cfg {
            order,
            index,
            preds,
            entry: f.entry,
            shape: f.blocks.values().map(|d| d.term.0.successor_pair()).collect(),
        }
    }

    /// True when `f`'s blocks still have the successors these facts were computed from.
    fn describes(&self, f: &Function) -> bool {
        self.entry == f.entry
            && self.shape.len() == f.blocks.len()
            && f.blocks
                .values()
                .zip(&self.shape)
                .all(|(d, s)| d.term.0.successor_pair() == *s)
    }
}

/// Each block's predecessors among the blocks of an order, each once, in that order, all in
/// one list: the CFG facts are made again after every edit of an edge, and a small vector per
/// block (spilled to the heap past two) cost most of that.
pub struct PredLists {
    /// Where each block's predecessors start in `list`, by block number; then the end.
    starts: Vec<u32>,
    list: Vec<Block>,
}

impl PredLists {
    pub(crate) fn new(f: &Function, order: &[Block]) -> PredLists {
        // The edges into each block, counted, then placed: a branch with both sides to one
        // block is one predecessor.
        let edges = |b: Block| {
            let (succs, n) = f.blocks[b].term.0.successor_pair();
            let n = if n == 2 && succs[0] == succs[1] { 1 } else { n };
            (succs, n)
        };
        let mut starts = vec![0u32; f.blocks.len() + 1];
        for &b in order {
            let (succs, n) = edges(b);
            for s in &succs[..n] {
                starts[s.index() + 1] += 1;
            }
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut list = vec![f.entry; starts[f.blocks.len()] as usize];
        let mut next = starts.clone();
        for &b in order {
            let (succs, n) = edges(b);
            for s in &succs[..n] {
                let at = &mut next[s.index()];
                list[*at as usize] = b;
                *at += 1;
            }
        }
        PredLists { starts, list }
    }
}

impl std::ops::Index<Block> for PredLists {
    type Output = [Block];

    fn index(&self, b: Block) -> &[Block] {
        &self.list[self.starts[b.index()] as usize..self.starts[b.index() + 1] as usize]
    }
}

/// The facts of one function, each computed when first asked for since the last edit.
#[derive(Default)]
pub struct Facts {
    cfg: Option<Cfg>,
    defs: Option<SecondaryMap<Value, u32>>,
    consts: Option<SecondaryMap<Value, Option<i64>>>,
    reads: Option<SecondaryMap<Value, u32>>,
}

impl Facts {
    /// To be called after every edit of `f` (every pass that reports one).
    pub fn edited(&mut self, f: &Function) {
        self.defs = None;
        self.consts = None;
        self.reads = None;
        self.edited_counts_kept(f);
    }

    /// After an edit of instructions alone whose pass brought the counts and constants up
    /// to date itself (`counts_mut`): only the CFG facts are checked.
    pub fn edited_counts_kept(&mut self, f: &Function) {
        if self.cfg.as_ref().is_some_and(|c| !c.describes(f)) {
            self.cfg = None;
        }
    }

    /// The read counts, and the write counts and constants where already made, for a pass
    /// that knows what its edit changes in them (`opt::remove_dead`, the pass that edits most
    /// often: it would otherwise have them all made again for the passes after it).
    #[allow(clippy::type_complexity)]
    pub fn counts_mut(
        &mut self,
        f: &Function,
    ) -> (
        &mut SecondaryMap<Value, u32>,
        Option<&mut SecondaryMap<Value, u32>>,
        Option<&mut SecondaryMap<Value, Option<i64>>>,
    ) {
        let reads = self.reads.get_or_insert_with(|| f.read_counts());
        (reads, self.defs.as_mut(), self.consts.as_mut())
    }

    pub fn cfg(&mut self, f: &Function) -> &Cfg {
        self.cfg.get_or_insert_with(|| Cfg::new(f))
    }

    /// How many times each value is written (`Function::def_counts`).
    pub fn defs(&mut self, f: &Function) -> &SecondaryMap<Value, u32> {
        self.defs.get_or_insert_with(|| f.def_counts())
    }

    /// Both, for a pass that reads both.
    pub fn cfg_and_defs(&mut self, f: &Function) -> (&Cfg, &SecondaryMap<Value, u32>) {
        let cfg = self.cfg.get_or_insert_with(|| Cfg::new(f));
        let defs = self.defs.get_or_insert_with(|| f.def_counts());
        (cfg, defs)
    }

    /// How many times each value is read, by instructions and terminators.
    pub fn reads(&mut self, f: &Function) -> &SecondaryMap<Value, u32> {
        self.reads.get_or_insert_with(|| f.read_counts())
    }

    /// The write and read counts, for a pass that reads both.
    pub fn defs_and_reads(&mut self, f: &Function) -> (&SecondaryMap<Value, u32>, &SecondaryMap<Value, u32>) {
        let defs = self.defs.get_or_insert_with(|| f.def_counts());
        let reads = self.reads.get_or_insert_with(|| f.read_counts());
        (defs, reads)
    }

    /// Values written exactly once, by a constant.
    pub fn constants(&mut self, f: &Function) -> &SecondaryMap<Value, Option<i64>> {
        let defs = self.defs.get_or_insert_with(|| f.def_counts());
        self.consts.get_or_insert_with(|| {
            let mut out = f.value_map();
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Operand, Terminator, ValueKind};
    use runtime_bpf::isa::JmpOp;
    use runtime_bpf::object::SourceLoc;

    /// The CFG facts outlive an edit of instructions (and of a branch's operands) but not one
    /// that moves an edge; the write counts and constants are recomputed after any edit. What
    /// is handed out always equals a fresh computation.
    #[test]
    fn facts_follow_the_edits_they_depend_on() {
        let mut f = Function::new("t");
        let x = f.new_value(ValueKind::Scalar);
        let (a, b) = (f.new_block(), f.new_block());
        let e = f.entry;
        let at = SourceLoc::default();
        f.blocks[e].insts.push((Inst::Const { dst: x, imm: 1 }, at));
        f.blocks[e].term.0 = Terminator::Branch {
            op: JmpOp::Jeq,
            a: x,
            b: Operand::Imm(1),
            then_: a,
            else_: b,
        };
        f.blocks[a].term.0 = Terminator::Jump(b);
        f.blocks[b].term.0 = Terminator::Return(Operand::Value(x));
        let mut facts = Facts::default();
        assert_eq!(facts.constants(&f)[x], Some(1));
        let order = facts.cfg(&f).order.clone();
        assert_eq!(order, f.reverse_postorder());

        // A second write of x, and the branch compares with another constant: same edges.
        f.blocks[a].insts.push((Inst::Const { dst: x, imm: 2 }, at));
        if let Terminator::Branch { b: o, .. } = &mut f.blocks[e].term.0 {
            *o = Operand::Imm(2);
        }
        facts.edited(&f);
        assert!(facts.cfg.is_some(), "the block order survives");
        assert_eq!(facts.defs(&f)[x], 2);
        assert_eq!(facts.constants(&f)[x], None);

        // The branch decided: the edge to `a` is gone, and so are the CFG facts.
        f.blocks[e].term.0 = Terminator::Jump(b);
        facts.edited(&f);
        assert!(facts.cfg.is_none());
        let cfg = facts.cfg(&f);
        assert_eq!(cfg.order, f.reverse_postorder());
        assert_eq!(&cfg.preds[b], &[e]);
        assert!(cfg.preds[a].is_empty());
    }

    /// The predecessor lists on the examples' functions are each block's predecessors among
    /// the reachable blocks, in order, each once (a branch with both sides to one block
    /// counted once, unreachable blocks left out).
    #[test]
    fn predecessor_lists_are_the_predecessors() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for name in ["cookie_guard", "ua_filter", "sni_filter"] {
            let c = crate::compile::compile_path(&examples.join(format!("{name}.lua")), &Default::default())
                .unwrap_or_else(|e| panic!("{}", e.render()));
            for f in &c.ir {
                let cfg = Cfg::new(f);
                for b in f.blocks.keys() {
                    let want: Vec<Block> = (cfg.order.iter().copied())
                        .filter(|&p| f.blocks[p].term.0.successors().contains(&b))
                        .collect();
                    assert_eq!(&cfg.preds[b], want.as_slice(), "{name}: {b}");
                }
            }
        }
        let mut f = Function::new("t");
        let x = f.new_value(ValueKind::Scalar);
        let j = f.new_block();
        let e = f.entry;
        f.blocks[e].term.0 = Terminator::Branch {
            op: JmpOp::Jeq,
            a: x,
            b: Operand::Imm(0),
            then_: j,
            else_: j,
        };
        assert_eq!(&Cfg::new(&f).preds[j], &[e]);
    }
}
