//! Scans: a packet pointer `data + (off + i)` made in a loop, where `off` is fixed before the
//! loop, becomes `(data + off) + i`, with `data + off` made once before the loop (`hoist`).
//! The offset `off + i` itself is then often read only after the loop is left (the match of
//! a scan: `return at + L`); `sink` moves such a computation into the block that reads it.
//! Per position of net.http's header scan: two instructions less, and one register less
//! across the loop (`data` is no longer needed in it).
//!
//! Both need the shape of the CFG: dominators (Cooper, Harvey and Kennedy's iteration over the
//! reverse post-order) and natural loops (a back edge `u -> h` where `h` dominates `u`).

use cranelift_entity::SecondaryMap;
use rustc_hash::FxHashMap as HashMap;

use crate::ir::{BinOp, Block, Function, Inst, Operand, Terminator, Value, ValueKind};

struct Cfg {
    order: Vec<Block>,
    preds: SecondaryMap<Block, Vec<Block>>,
    idom: SecondaryMap<Block, Option<Block>>,
}

impl Cfg {
    fn new(f: &Function) -> Cfg {
        let order = f.reverse_postorder();
        let mut preds: SecondaryMap<Block, Vec<Block>> = f.block_map();
        let mut rpo: SecondaryMap<Block, usize> = f.block_map();
        for (i, &b) in order.iter().enumerate() {
            rpo[b] = i;
            for s in f.blocks[b].term.0.successors() {
                preds[s].push(b);
            }
        }
        let mut idom: SecondaryMap<Block, Option<Block>> = f.block_map();
        idom[f.entry] = Some(f.entry);
        let mut changed = true;
        while changed {
            changed = false;
            for &b in order.iter().skip(1) {
                let mut new: Option<Block> = None;
                for &p in &preds[b] {
                    if idom[p].is_none() {
                        continue;
                    }
                    new = Some(match new {
                        None => p,
                        Some(mut a) => {
                            let mut c = p;
                            while a != c {
                                while rpo[a] > rpo[c] {
                                    a = idom[a].expect("processed");
                                }
                                while rpo[c] > rpo[a] {
                                    c = idom[c].expect("processed");
                                }
                            }
                            a
                        }
                    });
                }
                if new.is_some() && idom[b] != new {
                    idom[b] = new;
                    changed = true;
                }
            }
        }
        Cfg { order, preds, idom }
    }

    fn reachable(&self, b: Block) -> bool {
        self.idom[b].is_some()
    }

    /// Whether `a` dominates `b` (both reachable).
    fn dominates(&self, a: Block, mut b: Block) -> bool {
        loop {
            if a == b {
                return true;
            }
            match self.idom[b] {
                Some(d) if d != b => b = d,
                _ => return false,
            }
        }
    }
}

/// Blocks reached from `from`'s successors without passing through `stop` (nor `from`).
fn forward(f: &Function, from: Block, stop: Block) -> SecondaryMap<Block, bool> {
    let mut seen: SecondaryMap<Block, bool> = f.block_map();
    let mut work: Vec<Block> = f.blocks[from].term.0.successors().to_vec();
    while let Some(b) = work.pop() {
        if b == stop || b == from || seen[b] {
            continue;
        }
        seen[b] = true;
        work.extend(f.blocks[b].term.0.successors());
    }
    seen
}

/// Whether `b` reaches itself.
fn on_cycle(f: &Function, b: Block) -> bool {
    let mut seen: SecondaryMap<Block, bool> = f.block_map();
    let mut work: Vec<Block> = f.blocks[b].term.0.successors().to_vec();
    while let Some(x) = work.pop() {
        if x == b {
            return true;
        }
        if !seen[x] {
            seen[x] = true;
            work.extend(f.blocks[x].term.0.successors());
        }
    }
    false
}

/// Blocks that reach `to` without passing through `stop` (`to` itself excluded).
fn backward(cfg: &Cfg, f: &Function, to: Block, stop: Block) -> SecondaryMap<Block, bool> {
    let mut seen: SecondaryMap<Block, bool> = f.block_map();
    let mut work: Vec<Block> = cfg.preds[to].clone();
    while let Some(b) = work.pop() {
        if b == stop || b == to || seen[b] {
            continue;
        }
        seen[b] = true;
        work.extend(cfg.preds[b].iter().copied());
    }
    seen
}

/// Where each value is written: (block, index) for every write.
fn def_sites(f: &Function) -> SecondaryMap<Value, Vec<(Block, usize)>> {
    let mut sites: SecondaryMap<Value, Vec<(Block, usize)>> = f.value_map();
    for (b, d) in f.blocks.iter() {
        for (i, (inst, _)) in d.insts.iter().enumerate() {
            if let Some(v) = inst.def() {
                sites[v].push((b, i));
            }
        }
    }
    sites
}

/// The natural loop of header `h`: `h` and the blocks that reach one of its back edges
/// without passing through `h`.
fn loop_of(cfg: &Cfg, f: &Function, h: Block) -> Option<SecondaryMap<Block, bool>> {
    let latches: Vec<Block> = cfg.preds[h]
        .iter()
        .copied()
        .filter(|&p| cfg.reachable(p) && cfg.dominates(h, p))
        .collect();
    if latches.is_empty() {
        return None;
    }
    let mut body: SecondaryMap<Block, bool> = f.block_map();
    body[h] = true;
    let mut work = latches;
    while let Some(b) = work.pop() {
        if body[b] {
            continue;
        }
        body[b] = true;
        work.extend(cfg.preds[b].iter().copied());
    }
    Some(body)
}

/// `data + (off + i)` in a loop, `off` written once before it: `(data + off) + i`, the sum
/// made at the end of the loop's preheader (its only entry, ending in a jump to the header).
/// The verifier must accept `data + off` alone, so `off` and `i` are both known to be in
/// 0..=0xffff with a sum there (as the checked offset was).
/// `known`: `ranges::analyze` of `f`, if already made.
pub fn hoist(f: &mut Function, known: Option<&crate::ranges::Entries>) -> bool {
    // Every rewrite below is of a pointer copy followed by an add to it of a sum of two
    // values made earlier in the block: without one, the interval analysis (most of this
    // pass's cost when it is not `known`) is not needed.
    let candidate = f.blocks.values().any(|d| {
        (1..d.insts.len()).any(|k| match (&d.insts[k - 1].0, &d.insts[k].0) {
            (
                Inst::Mov { dst: q, .. },
                Inst::Bin {
                    op: BinOp::Add,
                    dst: q2,
                    a: q3,
                    b: Operand::Value(x),
                },
            ) if q == q2 && q == q3 && f.values[*q] == ValueKind::Pointer => d.insts[..k - 1]
                .iter()
                .any(|(i, _)| matches!(i, Inst::Bin { op: BinOp::Add, dst, b: Operand::Value(_), .. } if dst == x)),
            _ => false,
        })
    });
    if !candidate {
        return false;
    }
    let cfg = Cfg::new(f);
    let defs = def_sites(f);
    let mut computed = None;
    let ranges = crate::ranges::known_or_analyze(f, known, &mut computed);
    let single = |v: Value| defs[v].len() == 1;
    let mut changed = false;
    let mut made: HashMap<(Block, Value, Value), Value> = HashMap::default();
    for &h in &cfg.order.clone() {
        let Some(body) = loop_of(&cfg, f, h) else { continue };
        let outside: Vec<Block> = cfg.preds[h].iter().copied().filter(|&p| !body[p]).collect();
        let [pre] = outside[..] else { continue };
        if f.blocks[pre].term.0 != Terminator::Jump(h) {
            continue;
        }
        let invariant = |v: Value| single(v) && !body[defs[v][0].0] && cfg.dominates(defs[v][0].0, pre);
        let Some(pre_state) = ranges[pre].clone() else { continue };
        let mut at_pre = pre_state;
        for (inst, _) in &f.blocks[pre].insts {
            crate::ranges::step(&mut at_pre, inst);
        }
        for &b in &cfg.order {
            if !body[b] {
                continue;
            }
            let Some(mut state) = ranges[b].clone() else { continue };
            for k in 0..f.blocks[b].insts.len() {
                let insts = &f.blocks[b].insts;
                let rewrite = match (&insts[k].0, insts.get(k + 1).map(|i| &i.0)) {
                    (
                        Inst::Mov { dst: q, src: data },
                        Some(Inst::Bin {
                            op: BinOp::Add,
                            dst: q2,
                            a: q3,
                            b: Operand::Value(x),
                        }),
                    ) if q == q2 && q == q3 && f.values[*q] == ValueKind::Pointer && invariant(*data) && single(*x) => {
                        // `x = off + i` earlier in this block, `i` not written since.
                        let (xb, xi) = defs[*x][0];
                        let here = xb == b && xi < k;
                        match here.then(|| &insts[xi].0) {
                            Some(Inst::Bin {
                                op: BinOp::Add,
                                a,
                                b: Operand::Value(c),
                                ..
                            }) => {
                                let (off, i) = if invariant(*a) { (*a, *c) } else { (*c, *a) };
                                let i_kept = !insts[xi + 1..k].iter().any(|(n, _)| n.def() == Some(i));
                                let fits = |v: Value, s: &crate::ranges::State| {
                                    s.get(&v)
                                        .map_or(None, |r| (r.lo >= 0 && r.hi <= 0xffff).then_some(r.hi))
                                };
                                let ok = invariant(off)
                                    && !invariant(i)
                                    && i_kept
                                    && f.values[i] == ValueKind::Scalar
                                    && match (fits(off, &at_pre), fits(i, &state)) {
                                        (Some(a), Some(c)) => a + c <= 0xffff,
                                        _ => false,
                                    };
                                ok.then_some((*data, off, i, *q))
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                crate::ranges::step(&mut state, &f.blocks[b].insts[k].0);
                let Some((data, off, i, q)) = rewrite else { continue };
                let base = match made.get(&(pre, data, off)) {
                    Some(&base) => base,
                    None => {
                        let loc = f.blocks[pre].term.1;
                        let base = crate::packet_access::push_pointer(f, pre, data, Operand::Value(off), loc);
                        made.insert((pre, data, off), base);
                        base
                    }
                };
                f.blocks[b].insts[k].0 = Inst::Mov { dst: q, src: base };
                f.blocks[b].insts[k + 1].0 = Inst::Bin {
                    op: BinOp::Add,
                    dst: q,
                    a: q,
                    b: Operand::Value(i),
                };
                changed = true;
            }
        }
    }
    changed
}

/// A pure computation written once whose readers are all in one later block that it
/// dominates and that is on no cycle (it runs at most once: a loop's exit, say) is made
/// there instead, when its operands hold the same values there: no write of an operand lies
/// on a path from the computation to that block.
pub fn sink(f: &mut Function) -> bool {
    let cfg = Cfg::new(f);
    let defs = def_sites(f);
    let mut readers: SecondaryMap<Value, Vec<Block>> = f.value_map();
    for (b, d) in f.blocks.iter() {
        for (inst, _) in &d.insts {
            for u in inst.uses() {
                readers[u].push(b);
            }
        }
        for u in d.term.0.uses() {
            readers[u].push(b);
        }
    }
    let mut moves: Vec<(Value, Block, usize, Block)> = Vec::new();
    for &a in &cfg.order {
        for (k, (inst, _)) in f.blocks[a].insts.iter().enumerate() {
            let Some(v) = inst.def() else { continue };
            if !matches!(inst, Inst::Bin { .. } | Inst::Mov { .. }) || !inst.is_pure() || defs[v].len() != 1 {
                continue;
            }
            let Some(&to) = readers[v].first() else { continue };
            if to == a || readers[v].iter().any(|&r| r != to) || !cfg.reachable(to) || !cfg.dominates(a, to) {
                continue;
            }
            // Into a block on no cycle. Out of a loop it saves work every iteration; elsewhere
            // only a computation of one value (`x + 14`) goes, which never leaves more values
            // live (x's life stretches as far as the result's shrinks), where two operands
            // kept alive to the block could cost a register (and a spill).
            if on_cycle(f, to) || (!on_cycle(f, a) && inst.uses().len() > 1) {
                continue;
            }
            let between = forward(f, a, a);
            let reaches = backward(&cfg, f, to, a);
            let kept = inst.uses().iter().all(|&o| {
                defs[o]
                    .iter()
                    .all(|&(db, di)| !(db == a && di > k) && !(between[db] && reaches[db]) && db != to)
            });
            if kept {
                moves.push((v, a, k, to));
            }
        }
    }
    // One move per computation; indices of later ones in the same block shift: do them from
    // the last.
    moves.sort_by(|x, y| x.1.cmp(&y.1).then(y.2.cmp(&x.2)));
    let mut changed = false;
    let mut taken: SecondaryMap<Value, bool> = f.value_map();
    for (v, a, k, to) in moves {
        if taken[v] || f.blocks[a].insts.get(k).and_then(|i| i.0.def()) != Some(v) {
            continue;
        }
        taken[v] = true;
        let inst = f.blocks[a].insts.remove(k);
        f.blocks[to].insts.insert(0, inst);
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use crate::ir::{BinOp, Inst, Operand, ValueKind};

    /// A scan from a run-time offset, returning the match's offset.
    const SCAN: &str = r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local len = #p
  local off = p:getbyte(0)
  for i = 0, 63 do
    local at = off + i
    if at + 8 > len then break end
    if p:getint64(at) == 0x0102030405060708 then return at + 3 end
  end
  return 2
end, { name = "scan" })
"#;

    /// The loop's pointer is `base + i`, `base = data + off` made once before the loop, and
    /// `off + i` is computed only in the block that returns it, which is on no cycle.
    #[test]
    fn a_scan_pointer_adds_the_index_to_a_base_made_before_the_loop() {
        let c = crate::compile::compile_source(SCAN, "t.lua", &Default::default())
            .unwrap_or_else(|e| panic!("{}", e.render()));
        let f = &c.ir[0];
        let text = crate::ir::display(f);
        let cfg = super::Cfg::new(f);
        let header = cfg
            .order
            .iter()
            .copied()
            .find(|&h| super::loop_of(&cfg, f, h).is_some())
            .expect("a loop");
        let body = super::loop_of(&cfg, f, header).expect("a loop");
        // In the loop: pointer additions take a scalar written in the loop (i), never `off`.
        let scalar_adds_in_loop: Vec<&Inst> = f
            .blocks
            .iter()
            .filter(|(b, _)| body[*b])
            .flat_map(|(_, d)| d.insts.iter().map(|(i, _)| i))
            .filter(|i| matches!(i, Inst::Bin { op: BinOp::Add, a, b: Operand::Value(_), .. } if f.values[*a] == ValueKind::Scalar))
            .collect();
        assert!(
            scalar_adds_in_loop.is_empty(),
            "off + i is not computed in the loop:\n{text}"
        );
        let outside_pointer_add = f.blocks.iter().filter(|(b, _)| !body[*b]).any(|(_, d)| {
            d.insts.iter().any(|(i, _)| {
                matches!(i, Inst::Bin { op: BinOp::Add, dst, b: Operand::Value(o), .. }
                    if f.values[*dst] == ValueKind::Pointer && f.values[*o] == ValueKind::Scalar)
            })
        });
        assert!(outside_pointer_add, "data + off before the loop:\n{text}");
    }
}
