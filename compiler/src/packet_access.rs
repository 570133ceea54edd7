//! Packet accesses through one base pointer per offset, and bounds checks that an earlier,
//! wider check on the same base already passed.
//!
//! Lowering checks every access on its own pointer: `p:getuint16(at)`, `p:getint64(at + 2)`
//! and `p:getuint32(at + 10)` each compute `data + offset`, add the size, compare with
//! `data_end`. The verifier grants a checked range to a pointer *register* (its id), so the
//! three pointers need three checks. Here an access at `data + root + c` (`root` a scalar
//! value, `c` a constant) is rewritten to go through one pointer `q = data + root` per root,
//! with the constant in the instruction's offset (`*(u64 *)(q + 2)`); a check `q + K >
//! data_end` that passed covers every later access of the same base within `K` bytes, and
//! the later checks go. That is how a C programmer writes it, and what the verifier tracks.
//!
//! A check that is not covered can instead move into the last check of its base, widened
//! to both extents, when no one can tell the difference: nothing observable (a store, a
//! call) happened since that check, and every way out since, like both checks' failures,
//! returns the same constant. Then a packet too short for the second read returns that
//! constant either way. A filter's "not IPv4: pass" between the Ethernet and IPv4 reads is
//! such a way out when pass is also the default verdict, so the headers' reads share one
//! check of the furthest byte, as a C programmer writes it.
//!
//! Facts flow forward along the blocks in reverse post-order; a join keeps what holds on
//! every way in (`proto == 6 or proto == 17`), a loop's header starts from nothing. So a
//! check removed here is preceded, on every path, by a check that covers it. A redefined
//! root or a call forgets them, but for the helpers that do not change packet data (a map
//! lookup, the clock; `helpers::changes_packet_data`): across those the verifier keeps a
//! checked pointer's range too, in r6-r9 or spilled. Only offsets that the interval analysis proves non-negative and small
//! enough for the verifier to grant a range (root + extent <= 0xffff) are rebased.

use rustc_hash::FxHashMap as HashMap;

use cranelift_entity::{PrimaryMap, SecondaryMap};

use crate::ir::{BinOp, Block, Function, Inst, Operand, Terminator, Value, ValueKind};
use runtime_bpf::isa::JmpOp;
use runtime_bpf::object::SourceLoc;

/// `root + c` (`root` None: the constant `c`).
type Sym = (Option<Value>, i64);

#[derive(Clone, Default)]
struct Facts {
    /// Scalars as `root + c`.
    scalar: HashMap<Value, Sym>,
    /// Packet pointers as `data + root + c`.
    pointer: HashMap<Value, Sym>,
    /// `data + root + K <= data_end` is known, for the largest such K.
    checked: HashMap<Option<Value>, i64>,
    /// The pointer `data + root` that checks and accesses of `root` go through.
    base: HashMap<Value, Value>,
    /// The last check of each root that a later, wider check of it may be moved into.
    open: HashMap<Option<Value>, OpenCheck>,
}

/// A check `q + c > data_end` (or `>=`) whose failure returns the constant `verdict`, on a
/// path from which, since, nothing observable happened and every way out returned `verdict`
/// too. A later check of the same root that also fails to `verdict` can be made here
/// instead, with its extent: a packet too short for it returns `verdict` either way.
#[derive(Clone, Copy)]
struct OpenCheck {
    /// The block the check ends; its last instruction makes the compared `q + c`.
    block: Block,
    /// `data + root`.
    base: Value,
    verdict: i64,
    /// The root's largest value at the check (0 for constants): how far the verifier lets
    /// the check reach.
    root_max: i64,
}

impl Facts {
    fn forget(&mut self, v: Value) {
        self.scalar.remove(&v);
        self.pointer.remove(&v);
        self.scalar.retain(|_, s| s.0 != Some(v));
        self.pointer.retain(|_, s| s.0 != Some(v));
        self.checked.remove(&Some(v));
        self.open.remove(&Some(v));
        self.open.retain(|_, o| o.base != v);
        self.base.remove(&v);
        self.base.retain(|_, q| *q != v);
    }

    /// What holds on every path into a join: the facts both sides agree on; a root stays
    /// checked, to the shorter extent, only where it has the same base on both. No check
    /// stays open past a join.
    fn meet(&mut self, other: &Facts) {
        self.scalar.retain(|v, s| other.scalar.get(v) == Some(s));
        self.pointer.retain(|v, p| other.pointer.get(v) == Some(p));
        self.base.retain(|r, q| other.base.get(r) == Some(q));
        let base = &self.base;
        self.checked.retain(|r, k| match other.checked.get(r) {
            Some(&o) if r.is_none_or(|r| base.contains_key(&r)) => {
                *k = (*k).min(o);
                true
            }
            _ => false,
        });
        self.open.clear();
    }

    fn scalar_of(&self, v: Value) -> Sym {
        self.scalar.get(&v).copied().unwrap_or((Some(v), 0))
    }
}

fn add(s: Sym, k: i64) -> Option<Sym> {
    Some((s.0, s.1.checked_add(k)?))
}

/// Updates the facts for one instruction (before its operands are forgotten if it redefines
/// one of them).
fn step(facts: &mut Facts, inst: &Inst, data: Value, kinds: &PrimaryMap<Value, ValueKind>) {
    let scalar_ok = |v: &Value| kinds[*v] == ValueKind::Scalar;
    if matches!(inst, Inst::Store { .. } | Inst::AtomicAdd { .. }) || inst.is_call() {
        facts.open.clear();
    }
    if inst.is_call() && !keeps_packet(inst) {
        *facts = Facts::default();
    }
    let Some(d) = inst.def() else {
        return;
    };
    let scalar = match inst {
        Inst::Const { imm, .. } => Some((None, *imm)),
        Inst::Mov { src, .. } if scalar_ok(src) => Some(facts.scalar_of(*src)),
        Inst::Bin {
            op: BinOp::Add,
            a,
            b: Operand::Imm(k),
            ..
        } if scalar_ok(a) => add(facts.scalar_of(*a), *k),
        _ => None,
    };
    let pointer = match inst {
        Inst::Mov { src, .. } if *src == data => Some((None, 0)),
        Inst::Mov { src, .. } => facts.pointer.get(src).copied(),
        Inst::Bin {
            op: BinOp::Add, a, b, ..
        } => match (facts.pointer.get(a).copied(), b) {
            (Some(p), Operand::Imm(k)) => add(p, *k),
            (Some((None, c)), Operand::Value(o)) if scalar_ok(o) => add(facts.scalar_of(*o), c),
            (Some((r, c)), Operand::Value(o)) if scalar_ok(o) => match facts.scalar_of(*o) {
                (None, k) => add((r, c), k),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    // A negative offset from a root (`a - 1`) is a root of its own: an access before `data +
    // root` cannot go through that base (instruction offsets from a variable packet pointer
    // must not be negative), so a check of it must not count as covered by the root's.
    let pointer = pointer.filter(|p| p.1 >= 0);
    let scalar = scalar.filter(|s| s.0.is_none() || s.1 >= 0);
    // The new facts are computed from the old values; then `d`'s old meaning goes.
    facts.forget(d);
    if inst.is_call() {
        return;
    }
    if let Some(p) = pointer {
        facts.pointer.insert(d, p);
    } else if let Some(s) = scalar {
        // A value defined from itself (`x = x + 1`) is its own new root.
        if s.0 != Some(d) {
            facts.scalar.insert(d, s);
        }
    }
}

/// Whether the verifier keeps packet pointers' checked ranges across the call: a helper
/// that does not change packet data. (Kfuncs and BPF functions forget everything.)
fn keeps_packet(inst: &Inst) -> bool {
    matches!(inst, Inst::Call { helper, .. } if !runtime_bpf::helpers::changes_packet_data(*helper))
}

/// `data` and `data_end` as lowering loads them from the ctx (XDP: offsets 0 and 4; skb
/// hooks: 76 and 80), when each is written once (no helper reloads them).
fn packet_bounds(f: &Function) -> Option<(Value, Value)> {
    let counts = f.def_counts();
    for (_, b) in f.blocks.iter() {
        for w in b.insts.windows(2) {
            if let (
                Inst::Load {
                    dst: data,
                    base,
                    off: o1,
                    ..
                },
                Inst::Load {
                    dst: end,
                    base: base2,
                    off: o2,
                    ..
                },
            ) = (&w[0].0, &w[1].0)
            {
                let offsets = matches!((*o1, *o2), (0, 4) | (76, 80));
                let pointers = f.values[*data] == ValueKind::Pointer && f.values[*end] == ValueKind::Pointer;
                if base == base2 && offsets && pointers && counts[*data] == 1 && counts[*end] == 1 {
                    return Some((*data, *end));
                }
            }
        }
    }
    None
}

/// The verifier grants a checked range to `data + root + c` only while `umax(root) + c`
/// stays within its MAX_PACKET_OFF (0xffff).
const VERIFIER_MAX_PACKET_OFF: i64 = 0xffff;

/// Whether `q = data + root` and the check `q + c > data_end` are ones the verifier accepts
/// and learns from, with `ranges` the known ranges where the check is made.
fn root_ok(ranges: &crate::ranges::State, root: Option<Value>, c: i64) -> bool {
    match root {
        None => (0..=VERIFIER_MAX_PACKET_OFF).contains(&c),
        Some(r) => ranges
            .get(&r)
            .is_some_and(|x| x.lo >= 0 && c >= 0 && x.hi.checked_add(c).is_some_and(|h| h <= VERIFIER_MAX_PACKET_OFF)),
    }
}

/// Appends `p = from + by` (a fresh pointer) to block `b`.
pub(crate) fn push_pointer(f: &mut Function, b: Block, from: Value, by: Operand, loc: SourceLoc) -> Value {
    let p = f.values.push(ValueKind::Pointer);
    f.blocks[b].insts.push((Inst::Mov { dst: p, src: from }, loc));
    f.blocks[b].insts.push((
        Inst::Bin {
            op: BinOp::Add,
            dst: p,
            a: p,
            b: by,
        },
        loc,
    ));
    p
}

/// `known`: `ranges::analyze` of `f`, if already made.
pub fn rebase_packet_accesses(f: &mut Function, known: Option<&crate::ranges::Entries>) -> bool {
    let Some((data, end)) = packet_bounds(f) else {
        return false;
    };

    let order = f.reverse_postorder();
    let mut preds: SecondaryMap<Block, u32> = f.block_map();
    for &b in &order {
        for s in f.blocks[b].term.0.successors() {
            preds[s] += 1;
        }
    }
    let mut computed = None;
    let range_in = crate::ranges::known_or_analyze(f, known, &mut computed);
    // The facts on the edges into each block, met as they arrive; a block whose edges have
    // not all arrived when it is reached (a loop's header) starts from none.
    let mut edge: HashMap<Block, (u32, Facts)> = HashMap::default();
    let arrive = |edge: &mut HashMap<Block, (u32, Facts)>, s: Block, facts: Facts| match edge.get_mut(&s) {
        Some((arrived, met)) => {
            *arrived += 1;
            met.meet(&facts);
        }
        None => {
            edge.insert(s, (1, facts));
        }
    };
    let mut changed = false;
    for &b in &order {
        let mut facts = match edge.remove(&b) {
            Some((arrived, facts)) if arrived == preds[b] && b != f.entry => facts,
            _ => Facts::default(),
        };
        let mut ranges = range_in[b].clone().unwrap_or_default();
        let mut insts = std::mem::take(&mut f.blocks[b].insts);
        let mut new_insts = Vec::with_capacity(insts.len());
        for (mut inst, loc) in insts.drain(..) {
            // Accesses through a pointer of a checked base use the base and an offset.
            match &mut inst {
                Inst::Load { base, off, size, .. } | Inst::Store { base, off, size, .. } => {
                    if let Some(&(root, c)) = facts.pointer.get(base) {
                        let at = c + i64::from(*off);
                        let covered = facts
                            .checked
                            .get(&root)
                            .is_some_and(|&k| at + i64::from(size.bytes()) <= k);
                        let via = match root {
                            None => Some(data),
                            Some(r) => facts.base.get(&r).copied(),
                        };
                        if let (true, Some(q), Ok(o)) = (covered && at >= 0, via, i16::try_from(at)) {
                            if *base != q || *off != o {
                                *base = q;
                                *off = o;
                                changed = true;
                            }
                        }
                    }
                }
                _ => {}
            }
            step(&mut facts, &inst, data, &f.values);
            crate::ranges::step(&mut ranges, &inst);
            new_insts.push((inst, loc));
        }
        f.blocks[b].insts = new_insts;
        // The check at the end of the block.
        let term = f.blocks[b].term.0.clone();
        if let Terminator::Branch {
            op: op @ (JmpOp::Jgt | JmpOp::Jge),
            a: t,
            b: Operand::Value(e),
            then_,
            else_,
        } = term
        {
            if e == end {
                if let Some(&(root, c)) = facts.pointer.get(&t) {
                    let extent = if op == JmpOp::Jge { c + 1 } else { c };
                    if facts.checked.get(&root).is_some_and(|&k| extent <= k) {
                        f.blocks[b].term.0 = Terminator::Jump(else_);
                        changed = true;
                    } else if facts
                        .open
                        .get(&root)
                        .copied()
                        .filter(|o| constant_return(f, then_) == Some(o.verdict))
                        .filter(|o| root.map_or(Some(data), |r| facts.base.get(&r).copied()) == Some(o.base))
                        .filter(|o| {
                            o.root_max
                                .checked_add(extent)
                                .is_some_and(|h| h <= VERIFIER_MAX_PACKET_OFF)
                        })
                        .is_some_and(|o| widen(f, o, extent))
                    {
                        // The earlier check now tests this extent; this one goes.
                        facts.checked.insert(root, extent);
                        f.blocks[b].term.0 = Terminator::Jump(else_);
                        changed = true;
                    } else if root_ok(&ranges, root, c) {
                        let loc = f.blocks[b].term.1;
                        let q = match root {
                            None => data,
                            Some(r) => match facts.base.get(&r) {
                                Some(&q) => q,
                                None => {
                                    let q = push_pointer(f, b, data, Operand::Value(r), loc);
                                    facts.base.insert(r, q);
                                    q
                                }
                            },
                        };
                        // Rebuild the compared pointer from the base unless it already is.
                        let nt = push_pointer(f, b, q, Operand::Imm(c), loc);
                        f.blocks[b].term.0 = Terminator::Branch {
                            op,
                            a: nt,
                            b: Operand::Value(end),
                            then_,
                            else_,
                        };
                        changed = true;
                        let mut safe = facts.clone();
                        safe.checked.insert(root, extent);
                        safe.open.retain(|_, o| constant_return(f, then_) == Some(o.verdict));
                        if let Some(verdict) = constant_return(f, then_) {
                            let root_max = root.map_or(Some(0), |r| ranges.get(&r).map(|x| x.hi));
                            if let Some(root_max) = root_max {
                                let open = OpenCheck {
                                    block: b,
                                    base: q,
                                    verdict,
                                    root_max,
                                };
                                safe.open.insert(root, open);
                            }
                        }
                        // The failing side (usually a return) keeps an open check only if
                        // the passing side returns its verdict: like any other branch.
                        let mut failing = facts.clone();
                        failing.open.retain(|_, o| constant_return(f, else_) == Some(o.verdict));
                        arrive(&mut edge, else_, safe);
                        arrive(&mut edge, then_, failing);
                        continue;
                    }
                }
            }
        }
        let term = &f.blocks[b].term.0;
        for s in term.successors() {
            let mut facts = facts.clone();
            // A check stays open into `s` only if every other way out returns its verdict.
            match *term {
                Terminator::Jump(_) => {}
                Terminator::Branch { then_, else_, .. } if then_ != else_ => {
                    let other = constant_return(f, if s == then_ { else_ } else { then_ });
                    facts.open.retain(|_, o| other == Some(o.verdict));
                }
                _ => facts.open.clear(),
            }
            arrive(&mut edge, s, facts);
        }
    }
    changed
}

/// `k` when block `b` is only `return k`.
fn constant_return(f: &Function, b: Block) -> Option<i64> {
    let blk = &f.blocks[b];
    match blk.term.0 {
        Terminator::Return(Operand::Imm(k)) if blk.insts.is_empty() => Some(k),
        _ => None,
    }
}

/// Makes `open`'s check test `extent` bytes from its base; false if it cannot.
fn widen(f: &mut Function, open: OpenCheck, extent: i64) -> bool {
    let blk = &mut f.blocks[open.block];
    let Terminator::Branch { op, a: compared, .. } = blk.term.0 else {
        return false;
    };
    let c = if op == JmpOp::Jge { extent - 1 } else { extent };
    match blk.insts.last_mut() {
        Some((
            Inst::Bin {
                op: BinOp::Add,
                dst,
                b: b @ Operand::Imm(_),
                ..
            },
            _,
        )) if *dst == compared => {
            *b = Operand::Imm(c);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::compile::{annotated_asm, compile_source};

    /// Compares of a register with a register: here, only packet pointers with data_end.
    fn packet_checks(asm: &str) -> usize {
        asm.lines()
            .filter(|l| l.contains("goto") && (l.contains(" > r") || l.contains(" <= r")))
            .count()
    }

    fn asm(src: &str) -> String {
        let c = compile_source(src, "t.lua", &Default::default()).unwrap_or_else(|e| panic!("{}", e.render()));
        annotated_asm(&c.object)
    }

    /// A scan: the loop's own length test is the one packet check; the three loads after it
    /// go through its base pointer with constant offsets.
    #[test]
    fn loads_after_a_length_test_share_its_check() {
        let out = asm(r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local len = #p
  for i = 0, 63 do
    if i + 14 > len then break end
    if p:getuint16(i) == 1 and p:getint64(i + 2) == 2 and p:getuint32(i + 10) == 3 then return 1 end
  end
  return 2
end, { name = "scan" })
"#);
        let checks = packet_checks(&out);
        assert_eq!(
            checks, 1,
            "one packet check for the loop's test and three loads:\n{out}"
        );
        for load in ["*(u16 *)(r", "*(u64 *)(r", "*(u32 *)(r"] {
            assert!(out.contains(load), "{load} in:\n{out}");
        }
        // Through `data + i` or, with the check's extent in the base (check_bases), `data + 14 + i`.
        assert!(
            out.contains(" +2)") && out.contains(" +10)") || out.contains(" -12)") && out.contains(" -4)"),
            "constant offsets in the loads:\n{out}"
        );
    }

    /// `if #p < 34 then return end` is one packet check (`data + 34 > data_end`,
    /// packet_compares) that covers the accesses after it: none of them checks again. A
    /// shorter minimum (20) that returns the default verdict tests the furthest read's extent
    /// instead (a packet too short for it returns the default either way); one that returns
    /// another verdict keeps its own, and the reads after it share one check.
    #[test]
    fn a_minimum_length_test_covers_the_accesses_after_it() {
        for (test, verdict, checks) in [
            ("#p < 34", 2, 1),
            ("#p <= 33", 2, 1),
            ("34 > #p", 2, 1),
            ("#p < 20", 2, 1),
            ("#p < 20", 1, 2),
        ] {
            let out = asm(&format!(
                r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  if {test} then return {verdict} end
  if p:getuint16(12) ~= 8 then return 2 end
  return p:getbyte(23) + p:getuint32(26) + p:getuint32(30)
end, {{ name = "t" }})
"#
            ));
            let compares = out
                .lines()
                .filter(|l| l.contains("goto") && [" > r", " >= r", " < r", " <= r"].iter().any(|c| l.contains(c)))
                .count();
            assert_eq!(compares, checks, "{test} then return {verdict}:\n{out}");
        }
    }

    /// A read's check moves into the check of an earlier read of the same base, widened to
    /// both, only where no one can tell: nothing observable happens between them and every
    /// way out between returns the verdict of a failed check (the default, 2). A write, a
    /// call or a way out with another verdict keeps the two checks.
    #[test]
    fn a_later_check_moves_into_an_earlier_one_only_where_nothing_can_tell() {
        for (between, checks) in [
            ("", 1),
            ("if x == 1 then return 2 end", 1),
            ("if x == 1 then return 1 end", 2),
            ("p:setbyte(0, x)", 2),
            ("x = x + bpf.ktime()", 2),
        ] {
            let out = asm(&format!(
                r#"
local xdp = require "bpf.xdp"
local bpf = require "bpf"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local x = p:getbyte(23)
  {between}
  return x + p:getuint32(30)
end, {{ name = "t" }})
"#
            ));
            assert_eq!(packet_checks(&out), checks, "{between:?}:\n{out}");
            // The one check left tests the second read's extent.
            if checks == 1 {
                assert!(out.contains(" += 34"), "{between:?}:\n{out}");
            }
        }
    }

    /// A packet compare whose failing side is not a return (`if x + 30 > #p then ... end`)
    /// is a fork like any other: a read inside its `then` must not move its check into the
    /// check before the fork, or the packets that take the other side (long enough for `x +
    /// 30`, not for the read) would return the read's verdict instead of their own.
    #[test]
    fn a_check_does_not_move_past_a_packet_compare_with_two_ways_on() {
        let out = asm(r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local x = p:getbyte(23) & 3
  if x + 30 > #p then
    return p:getuint32(30)
  end
  return 3
end, { name = "t" })
"#);
        assert!(
            out.contains(" += 24") && out.contains(" += 34"),
            "the first read's check keeps its extent, the read at 30 checks its own:\n{out}"
        );
    }

    /// A map lookup leaves the packet where it was, and the verifier keeps the checked range
    /// of a packet pointer in r6-r9 across it: a check before the lookup covers the reads
    /// after it. (cookie_guard: the IPv4 header's reads after the `blocked` lookup.)
    #[test]
    fn a_check_before_a_map_lookup_covers_the_reads_after_it() {
        let out = asm(r#"
local xdp = require "bpf.xdp"
local map = require "bpf.map"
local seen = map.hash("seen", { key = "I4", value = "I8", entries = 16 })
return xdp.program(function(ctx)
  local p = ctx:packet()
  local x = p:getuint32(26)
  if seen[x] then return 1 end
  return p:getbyte(23) + p:getuint16(12)
end, { name = "t" })
"#);
        assert_eq!(packet_checks(&out), 1, "{out}");
        assert!(out.contains("call bpf_map_lookup_elem"), "{out}");
    }

    /// Past a join, what was checked on every way in stays checked: `proto == 6 or proto ==
    /// 17` joins two paths that both passed the check up to byte 24, so the read at 14 after
    /// it needs none. A read checked on one way in only is checked again.
    #[test]
    fn a_check_on_every_way_into_a_join_covers_the_reads_after_it() {
        for (body, checks) in [
            ("if x == 6 or x == 17 then return p:getbyte(14) end", 1),
            (
                "local y = 0\n  if x == 6 then y = p:getbyte(40) end\n  do return y + p:getbyte(40) end",
                3,
            ),
        ] {
            let out = asm(&format!(
                r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local x = p:getbyte(23)
  {body}
  return 2
end, {{ name = "t" }})
"#
            ));
            assert_eq!(packet_checks(&out), checks, "{body}:\n{out}");
        }
    }

    /// `a - 1` is not `a` plus an offset the verifier would take (a negative one): the
    /// access there keeps its own check although `a + 1`'s check spans its last byte.
    #[test]
    fn an_access_before_a_checked_root_keeps_its_check() {
        let out = asm(r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local a = p:getint64(14)
  p:setbyte(a, 7)
  p:setint16(a - 1, 7)
  return 2
end, { name = "before" })
"#);
        assert_eq!(
            packet_checks(&out),
            3,
            "the read, setbyte and setint16 each checked:\n{out}"
        );
    }

    /// Constant offsets: an access inside the extent an earlier check proved needs no check
    /// of its own (bytes 12-13 after the check up to byte 23), one past it does (the return
    /// of 1 between keeps it from moving into the first).
    #[test]
    fn a_wider_earlier_check_covers_later_constant_accesses() {
        let out = asm(r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local x = p:getbyte(23) + p:getuint16(12)
  if x == 7 then return 1 end
  return x + p:getuint32(26)
end, { name = "consts" })
"#);
        let checks = packet_checks(&out);
        assert_eq!(checks, 2, "bytes 12-13 are covered by the check for byte 23:\n{out}");
    }
}
