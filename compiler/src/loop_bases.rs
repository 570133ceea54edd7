//! A pointer computed in a loop as `base + (invariant + varying)` becomes
//! `(base + invariant) + varying`, with `base + invariant` computed once before the loop.
//!
//! A scan (`p:getint64(payload + i)`) adds the loop-invariant start and the position, then
//! adds that to `data`: two adds and two copies per position where clang, which reassociates,
//! has one of each. Done only where the interval analysis (`ranges`, which follows what the
//! verifier can see) proves both parts non-negative, so that neither part alone exceeds the
//! sum the verifier bounded. The offset, when it is then read only past a chain of blocks
//! entered from its block alone (the scan's "found it" branch), is computed there instead of
//! at every position.

use crate::ir::{BinOp, Block, Function, Inst, Operand, Terminator, Value, ValueKind};
use cranelift_entity::SecondaryMap;

/// Rewrites such pointers; true if any was.
pub fn rebase_loop_pointers(f: &mut Function) -> bool {
    let order = f.reverse_postorder();
    let preds = crate::threading::predecessors(f, &order);
    let loops = crate::prune_hints::loops(f, &order, &preds);
    if loops.is_empty() {
        return false;
    }
    let defs = f.def_counts();
    let entry = crate::ranges::analyze(f);
    let mut sunk_offsets = Vec::new();
    for (header, body) in &loops {
        let Some(pre) = crate::prune_hints::preheader(f, &preds, *header, body) else {
            continue;
        };
        let blocks: Vec<Block> = order.iter().copied().filter(|&b| body[b]).collect();
        let mut in_loop: SecondaryMap<Value, bool> = f.value_map();
        for &b in &blocks {
            for (inst, _) in &f.blocks[b].insts {
                if let Some(d) = inst.def() {
                    in_loop[d] = true;
                }
            }
        }
        for &b in &blocks {
            let Some(mut state) = entry[b].clone() else { continue };
            // Offsets `x = inv + var` seen so far in this block: (x, inv, var, index).
            let mut offsets: Vec<(Value, Value, Value, usize)> = Vec::new();
            // Copies `dst = src` made so far in this block: (dst, src, index).
            let mut copies: Vec<(Value, Value, usize)> = Vec::new();
            for k in 0..f.blocks[b].insts.len() {
                let inst = f.blocks[b].insts[k].0.clone();
                if let Some(d) = inst.def() {
                    // A redefined part ends the offsets and copies that read it.
                    offsets.retain(|&(x, inv, var, _)| d != x && d != inv && d != var);
                    copies.retain(|&(dst, src, _)| d != dst && d != src);
                    if let Inst::Mov { src, .. } = inst {
                        copies.push((d, src, k));
                    }
                }
                if let Inst::Bin {
                    op: BinOp::Add,
                    dst: x,
                    a,
                    b: Operand::Value(c),
                } = inst
                {
                    let parts = match (in_loop[a], in_loop[c]) {
                        (false, true) => Some((a, c)),
                        (true, false) => Some((c, a)),
                        _ => None,
                    };
                    let non_negative = |v: Value| state.get(&v).is_some_and(|r| r.lo >= 0);
                    if let Some((inv, var)) = parts {
                        if defs[x] == 1 && x != inv && x != var && non_negative(inv) && non_negative(var) {
                            offsets.push((x, inv, var, k));
                        }
                    }
                }
                if let (
                    Inst::Mov { dst: p, src: base },
                    Some((
                        Inst::Bin {
                            op: BinOp::Add,
                            dst,
                            a,
                            b: Operand::Value(x),
                        },
                        _,
                    )),
                ) = (&inst, f.blocks[b].insts.get(k + 1))
                {
                    let found = offsets.iter().find(|o| o.0 == *x).copied();
                    if let Some((x, inv, var, at)) = found {
                        if dst == p && a == p && !in_loop[*base] && f.values[*base] == ValueKind::Pointer {
                            let (p, base) = (*p, *base);
                            let loc = f.blocks[pre].term.1;
                            let q = crate::packet_access::push_pointer(f, pre, base, Operand::Value(inv), loc);
                            // A loop variable's copy (`local at = start + i` reads the
                            // fresh copy of `i`): the pointer reads the original, and the
                            // copy can go where the offset goes.
                            let copy = copies.iter().find(|c| c.0 == var).copied();
                            f.blocks[b].insts[k].0 = Inst::Mov { dst: p, src: q };
                            f.blocks[b].insts[k + 1].0 = Inst::Bin {
                                op: BinOp::Add,
                                dst: p,
                                a: p,
                                b: Operand::Value(copy.map_or(var, |c| c.1)),
                            };
                            sunk_offsets.push((b, at, x));
                            if let Some((_, _, copied_at)) = copy {
                                sunk_offsets.push((b, copied_at, var));
                            }
                        }
                    }
                }
                crate::ranges::step(&mut state, &inst);
            }
        }
    }
    let changed = !sunk_offsets.is_empty();
    // Later indexes first: removing one keeps the earlier ones valid.
    sunk_offsets.sort_by_key(|&(b, at, _)| (b, std::cmp::Reverse(at)));
    sunk_offsets.dedup();
    for (b, at, x) in sunk_offsets {
        sink(f, &preds, b, at, x);
    }
    changed
}

/// Moves the definition of `x` (instruction `at` of `b`, a pure one) to the start of the one
/// block that reads it, when that block is reached from `b` only, through blocks with one
/// predecessor each, none of which (nor the rest of `b`) writes what the definition reads.
fn sink(f: &mut Function, preds: &SecondaryMap<Block, Vec<Block>>, b: Block, at: usize, x: Value) {
    let reads = |insts: &[(Inst, runtime_bpf::object::SourceLoc)], term: &Terminator| {
        insts.iter().any(|(i, _)| i.uses().contains(&x)) || term.uses().contains(&x)
    };
    let data = &f.blocks[b];
    if reads(&data.insts[at + 1..], &data.term.0) {
        return;
    }
    let users: Vec<Block> = f
        .blocks
        .iter()
        .filter(|(u, d)| *u != b && reads(&d.insts, &d.term.0))
        .map(|(u, _)| u)
        .collect();
    let [user] = users[..] else { return };
    let def = data.insts[at].clone();
    let operands = def.0.uses();
    let writes = |insts: &[(Inst, runtime_bpf::object::SourceLoc)]| {
        insts
            .iter()
            .any(|(i, _)| i.def().is_some_and(|d| operands.contains(&d)))
    };
    if writes(&data.insts[at + 1..]) {
        return;
    }
    let mut cur = user;
    loop {
        let [p] = preds[cur][..] else { return };
        if p == b {
            break;
        }
        if writes(&f.blocks[p].insts) {
            return;
        }
        cur = p;
    }
    f.blocks[b].insts.remove(at);
    f.blocks[user].insts.insert(0, def);
}

#[cfg(test)]
mod tests {
    use crate::compile::{asm_of, first_loop};

    /// `p:getint64(start + i)` in a scan: `data + start` is computed before the loop, and the
    /// loop adds only the position to it; `start + i` is computed where it is read, after the
    /// match.
    #[test]
    fn a_scan_adds_its_position_to_a_base_made_before_the_loop() {
        let out = asm_of(
            r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local len = #p
  local start = p:getbyte(0) & 63
  for i = 0, 63 do
    local at = start + i
    if at + 8 > len then break end
    if p:getuint32(at) == 7 then return at end
  end
  return 2
end, { name = "scan" })
"#,
        );
        let (lines, head, _) = first_loop(&out);
        // From the loop's head to its length test: what each position computes.
        let body: Vec<&str> = lines
            .iter()
            .filter(|(n, _)| *n >= head)
            .map(|(_, l)| *l)
            .take_while(|l| !l.contains(" > r"))
            .collect();
        let adds = body.iter().filter(|l| l.contains(" += r")).count();
        assert_eq!(adds, 1, "one register add per position:\n{out}");
    }
}
