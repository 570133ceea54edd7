//! Packet checks made on the access pointer itself: `p = base + o; t = p + k; if t > data_end`
//! becomes `p = (base + k) + o; if p > data_end`, with the accesses through `p` at their
//! offset minus `k` (`*(u8 *)(p - 1)`).
//!
//! The check's extent `k` moves into the base, which is computed once where `base` is made
//! (before the loop, for a scan or a counting loop), instead of into a copy of every access
//! pointer: two instructions less per access. The verifier sees the same pointer: `p` has the
//! fixed offset `k` that `t` had, so the failed branch grants it the range `k`, and an access
//! at `off - k` from it is at `off` within that range (the kernel adds a pointer's fixed offset
//! to the instruction's). Only a base that nothing else reads is rewritten (all its uses are
//! such checks with the same `k`), so no register stays alive for both.

use crate::ir::{BinOp, Block, Function, Inst, Operand, Terminator, Value, ValueKind};
use runtime_bpf::isa::JmpOp;

/// One `p = base + o; t = p + k; if t > end` at the end of `block` (its last four instructions).
struct Check {
    block: Block,
    base: Value,
    p: Value,
    k: i64,
}

/// The check ending `b`, if `b` ends with the four instructions lowering makes for it.
fn check_at(f: &Function, b: Block) -> Option<Check> {
    let data = &f.blocks[b];
    let n = data.insts.len();
    if n < 4 {
        return None;
    }
    let Terminator::Branch {
        op: JmpOp::Jgt,
        a: t,
        b: Operand::Value(end),
        ..
    } = data.term.0
    else {
        return None;
    };
    match (
        &data.insts[n - 4].0,
        &data.insts[n - 3].0,
        &data.insts[n - 2].0,
        &data.insts[n - 1].0,
    ) {
        (
            Inst::Mov { dst: p, src: base },
            Inst::Bin {
                op: BinOp::Add,
                dst: p2,
                a: p3,
                ..
            },
            Inst::Mov { dst: t2, src: p4 },
            Inst::Bin {
                op: BinOp::Add,
                dst: t3,
                a: t4,
                b: Operand::Imm(k),
            },
        ) if p == p2
            && p == p3
            && p == p4
            && *t2 == t
            && *t3 == t
            && *t4 == t
            && *base != *p
            && *base != end
            && (1..=64).contains(k)
            && f.values[*base] == ValueKind::Pointer
            && f.values[end] == ValueKind::Pointer =>
        {
            Some(Check {
                block: b,
                base: *base,
                p: *p,
                k: *k,
            })
        }
        _ => None,
    }
}

pub fn fold_check_extents(f: &mut Function) -> bool {
    let defs = f.def_counts();
    let uses = f.read_counts();
    let checks: Vec<Check> = f.blocks.keys().filter_map(|b| check_at(f, b)).collect();
    // Per base: its checks, all with one extent, and no other reader.
    let mut by_base: Vec<(Value, i64, Vec<usize>)> = Vec::new();
    for (i, c) in checks.iter().enumerate() {
        match by_base.iter_mut().find(|(b, _, _)| *b == c.base) {
            Some((_, k, list)) if *k == c.k => list.push(i),
            Some((_, k, _)) => *k = -1,
            None => by_base.push((c.base, c.k, vec![i])),
        }
    }
    let mut changed = false;
    for (base, k, list) in by_base {
        // `base` made in one block (`data + off` before a loop: a copy and an add); the
        // extent is added after its last write there.
        let Some((db, di, own_reads)) = def_site(f, base) else {
            continue;
        };
        if k < 0 || uses[base] as usize != list.len() + own_reads {
            continue;
        }
        // A check in that block before the last write would read the unfinished base.
        if list
            .iter()
            .any(|&i| checks[i].block == db && f.blocks[db].insts.len() - 4 < di)
        {
            continue;
        }
        // Each `p`: written by its Mov and Add only, read by its own Add, the copy into `t`
        // and accesses whose offset can move by `k`; each `t` read by its Add and the branch.
        let ok = list.iter().all(|&i| {
            let c = &checks[i];
            let t_ok = match f.blocks[c.block].insts[f.blocks[c.block].insts.len() - 1].0 {
                Inst::Bin { dst: t, .. } => defs[t] == 2 && uses[t] == 2,
                _ => false,
            };
            t_ok && defs[c.p] == 2 && accesses_only(f, c.p, k, uses[c.p])
        });
        if !ok {
            continue;
        }
        let loc = f.blocks[db].insts[di].1;
        let nb = f.new_value(ValueKind::Pointer);
        f.blocks[db]
            .insts
            .insert(di + 1, (Inst::Mov { dst: nb, src: base }, loc));
        f.blocks[db].insts.insert(
            di + 2,
            (
                Inst::Bin {
                    op: BinOp::Add,
                    dst: nb,
                    a: nb,
                    b: Operand::Imm(k),
                },
                loc,
            ),
        );
        for &i in &list {
            let c = &checks[i];
            let insts = &mut f.blocks[c.block].insts;
            let n = insts.len();
            insts.truncate(n - 2);
            if let Inst::Mov { src, .. } = &mut insts[n - 4].0 {
                *src = nb;
            }
            if let Terminator::Branch { a, .. } = &mut f.blocks[c.block].term.0 {
                *a = c.p;
            }
        }
        let ps: Vec<Value> = list.iter().map(|&i| checks[i].p).collect();
        for (_, b) in f.blocks.iter_mut() {
            for (inst, _) in &mut b.insts {
                match inst {
                    Inst::Load { base, off, .. }
                    | Inst::Store { base, off, .. }
                    | Inst::AtomicAdd { base, off, .. }
                        if ps.contains(base) =>
                    {
                        *off -= k as i16;
                    }
                    _ => {}
                }
            }
        }
        changed = true;
    }
    changed
}

/// Whether every read of `p` but the two of its check (its own Add, the copy into `t`) is the
/// base of an access whose offset stays an i16 when `k` is taken from it.
fn accesses_only(f: &Function, p: Value, k: i64, total: u32) -> bool {
    let mut accesses = 0;
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            let n = inst.uses().iter().filter(|u| **u == p).count() as u32;
            if n == 0 {
                continue;
            }
            match inst {
                Inst::Load { base, off, .. } if *base == p && (*off as i64 - k) >= i16::MIN as i64 => accesses += 1,
                Inst::Store { base, off, src, .. }
                    if *base == p && *src != Operand::Value(p) && (*off as i64 - k) >= i16::MIN as i64 =>
                {
                    accesses += 1
                }
                Inst::AtomicAdd { base, off, src, .. }
                    if *base == p && *src != p && (*off as i64 - k) >= i16::MIN as i64 =>
                {
                    accesses += 1
                }
                _ => {}
            }
        }
        if b.term.0.uses().contains(&p) {
            return false;
        }
    }
    accesses + 2 == total
}

/// The block that writes `v` (when only one does), the index of its last write there, and how
/// many of those writes read `v` (`v = v + o`).
fn def_site(f: &Function, v: Value) -> Option<(Block, usize, usize)> {
    let mut site = None;
    for (b, d) in f.blocks.iter() {
        for (i, (inst, _)) in d.insts.iter().enumerate() {
            if inst.def() != Some(v) {
                continue;
            }
            match site {
                Some((sb, _, _)) if sb != b => return None,
                _ => {}
            }
            let own = site.map_or(0, |s: (Block, usize, usize)| s.2) + inst.uses().iter().filter(|u| **u == v).count();
            site = Some((b, i, own));
        }
    }
    site
}

#[cfg(test)]
mod tests {
    use crate::compile::{asm_of, first_loop};

    /// The instruction lines of the first loop in `asm`.
    fn loop_lines(asm: &str) -> Vec<&str> {
        let (lines, head, back) = first_loop(asm);
        lines
            .iter()
            .filter(|(n, _)| (head..=back).contains(n))
            .map(|(_, l)| *l)
            .collect()
    }

    /// A counting loop reading one byte per iteration, in a BPF function of its own (called
    /// in a loop): the pointer is checked as it is, made from `data + 1` computed before the
    /// loop, and the byte read at `-1` from it; no copy of the pointer to add the size to.
    #[test]
    fn a_loop_checks_its_access_pointer_against_a_base_moved_by_the_extent() {
        let out = asm_of(
            r#"
local xdp = require "bpf.xdp"
local function length(p, value, len)
  local n = 0
  while n < 32 and value + n < len and p:getbyte(value + n) ~= 13 do
    n = n + 1
  end
  return n
end
return xdp.program(function(ctx)
  local p = ctx:packet()
  local len = #p
  for i = 0, 15 do
    if i >= len then break end
    if p:getbyte(i) == 58 then return length(p, i + 1, len) end
  end
  return 0
end, { name = "t" })
"#,
        );
        let body = loop_lines(&out[out.find("t.lua:4").expect("the function")..]);
        assert!(
            body.iter().any(|l| l.contains("*(u8 *)(") && l.contains(" -1)")),
            "{out}"
        );
        // 12 per iteration and the error exit's two (16 with the pointer copied and moved).
        assert!(body.len() <= 14, "{} instructions in the loop:\n{out}", body.len());
    }

    /// A scan from a run-time offset: its base `data + off` is made before the loop by a copy
    /// and an add (two writes, one block); the extent 8 joins them there, and each position
    /// is checked on its access pointer and read at `-8` from it.
    #[test]
    fn a_scan_base_made_before_the_loop_takes_the_extent() {
        let out = asm_of(
            r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local len = #p
  local off = p:getbyte(0)
  for i = 0, 63 do
    if off + i + 8 > len then break end
    if p:getint64(off + i) == 0x65696b6f6f430a0d then return 1 end
  end
  return 2
end, { name = "t" })
"#,
        );
        let body = loop_lines(&out);
        assert!(
            body.iter().any(|l| l.contains("*(u64 *)(") && l.contains(" -8)")),
            "{out}"
        );
        assert!(!body.iter().any(|l| l.contains("+= 8")), "{out}");
    }
}
