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
//!
//! `propagate_in_blocks` does the same inside one block for any `d`, for adds of a constant.

use crate::bitset::{has_bit, insert_bit, remove_bit};
use crate::facts::Facts;
use crate::ir::{BinOp, Block, Function, Inst, Operand, Value};
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
    // Copies that a write of each value kills, listed by value (`kills[kill_at[v]..kill_at[v
    // + 1]]`): one list, not a vector per value.
    let mut kill_at = vec![0u32; f.values.len() + 1];
    for &(d, s) in &copies {
        kill_at[d.as_u32() as usize + 1] += 1;
        kill_at[s.as_u32() as usize + 1] += 1;
    }
    for i in 1..kill_at.len() {
        kill_at[i] += kill_at[i - 1];
    }
    let mut kills = vec![0u32; 2 * copies.len()];
    let mut next = kill_at.clone();
    for (k, &(d, s)) in copies.iter().enumerate() {
        for v in [d, s] {
            let at = &mut next[v.as_u32() as usize];
            kills[*at as usize] = k as u32;
            *at += 1;
        }
    }
    let words = copies.len().div_ceil(64);
    let step = |inst: &Inst, avail: &mut [u64]| {
        if let Some(v) = inst.def() {
            let v = v.as_u32() as usize;
            for &k in &kills[kill_at[v] as usize..kill_at[v + 1] as usize] {
                remove_bit(avail, k as usize);
            }
        }
        if let Inst::Mov { dst, .. } = inst {
            if let Some(k) = copy_of_dst[*dst] {
                insert_bit(avail, k);
            }
        }
    };
    let order = &cfg.order;
    let entry = order.first().copied();
    let preds = &cfg.preds;
    // Out-states, `words` words per block, in one buffer; `reached`: set once a block is first
    // visited (until then its out-state is the meet's identity, all copies). One buffer
    // rather than a set per block, cloned at every visit: those allocations were most of this
    // pass's time.
    let mut out = vec![0u64; words * f.blocks.len()];
    let mut reached: SecondaryMap<Block, bool> = f.block_map();
    // The state at `b`'s entry, into `state`.
    let entry_state = |b: Block, out: &[u64], reached: &SecondaryMap<Block, bool>, state: &mut [u64]| {
        let mut first = true;
        if Some(b) != entry {
            for &p in &preds[b] {
                if reached[p] {
                    let at = p.as_u32() as usize * words;
                    let o = &out[at..at + words];
                    if first {
                        state.copy_from_slice(o);
                        first = false;
                    } else {
                        state.iter_mut().zip(o).for_each(|(a, b)| *a &= *b);
                    }
                }
            }
        }
        if first {
            state.fill(0);
        }
    };
    let mut avail = vec![0u64; words];
    let mut changed_states = true;
    while changed_states {
        changed_states = false;
        for &b in order {
            entry_state(b, &out, &reached, &mut avail);
            for (inst, _) in &f.blocks[b].insts {
                step(inst, &mut avail);
            }
            let at = b.as_u32() as usize * words;
            if !reached[b] || out[at..at + words] != avail[..] {
                reached[b] = true;
                out[at..at + words].copy_from_slice(&avail);
                changed_states = true;
            }
        }
    }
    let mut changed = false;
    for &b in order {
        entry_state(b, &out, &reached, &mut avail);
        let block = &mut f.blocks[b];
        let mut sub = |v: &mut Value, avail: &[u64]| {
            if let Some(k) = copy_of_dst[*v] {
                if has_bit(avail, k) {
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

/// Within a block, an add of a constant to `d` after the copy `d = s` adds to `s` instead,
/// until either is written again, however often `d` is written elsewhere: a local
/// reassigned in a row (`at = off + 43; at = at + 1 + p:getbyte(at)`, tls.lua's record
/// walk) then adds to `off + 43` directly, and `opt::fold_add_chains` makes the two adds one.
/// Only such adds, written once: other readers of `d` are shaped by the lowering for the
/// passes after this one (a pointer copied, then moved in place), and keep their copy.
pub fn propagate_in_blocks(f: &mut Function, defs: &SecondaryMap<Value, u32>) -> bool {
    let mut changed = false;
    let values = &f.values;
    let mut active: Vec<(Value, Value)> = Vec::new();
    for (_, b) in f.blocks.iter_mut() {
        active.clear();
        for (inst, _) in b.insts.iter_mut() {
            if let Inst::Bin {
                op: BinOp::Add,
                dst,
                a,
                b: Operand::Imm(_),
            } = inst
            {
                if defs[*dst] == 1 {
                    if let Some(&(_, s)) = active.iter().find(|(d, _)| d == a) {
                        *a = s;
                        changed = true;
                    }
                }
            }
            if let Some(w) = inst.def() {
                active.retain(|&(d, s)| d != w && s != w);
            }
            if let Inst::Mov { dst, src } = *inst {
                if dst != src && values[dst] == values[src] {
                    active.push((dst, src));
                }
            }
        }
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

    /// tls.lua's `at = off + 43; at = at + 1 + p:getbyte(at)`: `at` is written more than
    /// once, but in its block the add after the copy adds to `off + 43`, and the two adds
    /// fold into one. A read of `at` that is not such an add (the packet load) keeps it.
    #[test]
    fn an_add_after_a_copy_in_its_block_adds_to_the_source() {
        let asm = crate::compile::asm_of(
            r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local at = p:getbyte(0) + 43
  at = at + 1 + p:getbyte(1)
  return at & 3
end, { name = "t" })
"#,
        );
        assert!(asm.contains("+= 44"), "{asm}");
        assert!(!asm.contains("+= 43"), "{asm}");
    }
}
