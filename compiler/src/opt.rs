//! Optimisation passes over the IR: small functions over plain data, run to a fixpoint.
//!
//! - `compact_blocks` (around the rest): the passes work on the blocks the entry reaches.
//! - `clear_unreachable`: blocks no path reaches are emptied (their writes no longer count).
//! - `propagate_constants`: a value written once by a constant is used as an immediate.
//! - `fold`: arithmetic and branches on immediates are computed now.
//! - `cse::reuse_expressions`: an operation repeated along a single-predecessor chain.
//! - `propagate_copies`: a value written once by a copy of a value written once is that value.
//! - `fold_add_chains`: `(x + 5) + 4` is `x + 9` when the middle value is written once.
//! - `combine_shifts`: `(x >> k) | (y >> k)` is `(x | y) >> k` (one shift).
//! - `compare_before_swap`: `bswap(load) == k` compares the loaded bytes with `bswap(k)`.
//! - `remove_dead`: pure instructions whose results nobody reads are dropped.
//! - `remove_dead_writes`: pure writes that no path reads before the next write (liveness).
//! - `share_returns`: empty blocks returning the same constant become one block.
//! - `thread_jumps`: branches to empty blocks that only jump go straight to the target.
//! - `threading`: a join block's branch that a predecessor decides is copied into it.
//! - `lookups`: a repeated map lookup of the same key reuses the first one's pointer.
//! - `packet_compares`: `offset > #p` becomes `data + offset > data_end` (no precise length).
//! - `offset_checks`: `x + c > k` tests `x > k - c`, which bounds `x` itself.
//! - `packet_access` (once, then the rest again): accesses through one base pointer per
//!   offset, checks covered by an earlier wider one removed.
//! - `slot_stores::remove_dead_slot_stores`: stores into stack slots that nothing reads.

use cranelift_entity::SecondaryMap;

use crate::facts::Facts;
use crate::ir::{BinOp, Block, Function, Inst, Operand, Terminator, Value, ValueKind};
use runtime_bpf::isa::JmpOp;

/// `maps`: key and value sizes of the module's maps (what a map helper reads from a slot).
/// Returns what `f`'s calls of other functions pass (`call_bounds`), from the optimiser's
/// last interval analysis, when that analysis is of `f` as the simplifications left it.
pub fn optimize(f: &mut Function, maps: &crate::slot_stores::MapSizes) -> Option<crate::call_bounds::CallRanges> {
    // The passes below see the reachable blocks only (the others, most of a freshly lowered
    // function, come back empty at the end, as `clear_unreachable` leaves them).
    let mut numbering = crate::compact_blocks::Renumbering::new(f);
    // `known`: the interval analysis of `f` as it is, when `simplify` ended without a change
    // after its last one (the passes below then need not run it again).
    // The block order, predecessors and write counts, shared by the passes until one edits.
    let mut facts = Facts::default();
    let mut known = simplify(f, maps, &mut facts, &mut numbering);
    // Rebasing packet accesses once the offsets are simplified, then cleaning up after it.
    if crate::packet_access::rebase_packet_accesses(f, known.as_ref()) {
        facts.edited(f);
        known = simplify(f, maps, &mut facts, &mut numbering);
    }
    // Scan pointers made from a base fixed before the loop, then the offsets only the loop's
    // exit reads made there.
    if crate::loop_bases::hoist(f, known.as_ref()) | crate::loop_bases::sink(f) {
        facts.edited(f);
        known = simplify(f, maps, &mut facts, &mut numbering);
    }
    let calls = known.map(|entries| crate::call_bounds::ranges_at_calls(f, &entries));
    // Last: the passes above know packet pointers by their offset from `data`, and this one
    // moves access offsets below a pointer's.
    crate::check_bases::fold_check_extents(f);
    numbering.restore(f);
    crate::ranges::release_spares();
    calls
}

/// Returns the interval analysis of `f` as it leaves, when its last round changed nothing
/// after analysing (each pass below reports every change it makes).
fn simplify(
    f: &mut Function,
    maps: &crate::slot_stores::MapSizes,
    facts: &mut Facts,
    numbering: &mut crate::compact_blocks::Renumbering,
) -> Option<crate::ranges::Entries> {
    // The cheap local passes run to a fixpoint between runs of the ones that analyse the
    // whole function (intervals, liveness), which cost most of the compile time; three
    // rounds of those reach what more rounds do on the examples.
    for _ in 0..3 {
        // Leaving out the blocks no path reaches (lowering's, then those of the branches the
        // last round decided) is exactly what the local passes' first, `clear_unreachable`,
        // would do, but spares every pass after it walking them.
        if numbering.compact(f) {
            *facts = Facts::default();
        }
        local_passes(f, maps, facts);
        let (ends, undo) = crate::ranges::end_states_undoable(f);
        let mut decided = crate::ranges::remove_decided_branches_with(f, &ends);
        decided |= crate::packet_compares::compare_packet_pointers(f, &ends);
        decided |= crate::offset_checks::compare_roots(f, &ends);
        if decided {
            facts.edited(f);
        }
        let dead = remove_dead_writes(f, facts);
        if dead {
            facts.edited(f);
        }
        if !decided {
            if dead {
                local_passes(f, maps, facts);
                return None;
            }
            return Some(crate::ranges::entry_states(ends, undo));
        }
    }
    None
}

/// What a local pass did: `changed` drives the fixpoint; `modified` also counts edits that
/// do not call for another round (only `remove_dead`'s dropped call destinations).
struct Outcome {
    changed: bool,
    modified: bool,
    /// The pass brought the facts' counts up to date itself.
    counts_kept: bool,
}

impl From<bool> for Outcome {
    fn from(changed: bool) -> Outcome {
        Outcome {
            changed,
            modified: changed,
            counts_kept: false,
        }
    }
}

fn local_passes(f: &mut Function, maps: &crate::slot_stores::MapSizes, facts: &mut Facts) {
    type Pass = fn(&mut Function, &crate::slot_stores::MapSizes, &mut Facts) -> Outcome;
    let passes: [Pass; 15] = [
        |f, _, facts| clear_unreachable(f, facts).into(),
        |f, _, facts| propagate_constants(f, facts).into(),
        |f, _, facts| crate::cse::reuse_expressions(f, facts).into(),
        |f, _, facts| propagate_copies(f, facts).into(),
        |f, _, facts| fold(f, facts).into(),
        |f, _, facts| compare_before_swap(f, facts).into(),
        |f, _, facts| fold_add_chains(f, facts).into(),
        |f, _, facts| combine_shifts(f, facts).into(),
        |f, _, facts| remove_dead_reporting(f, facts),
        |f, _, _| thread_jumps(f).into(),
        |f, _, facts| share_returns(f, facts).into(),
        |f, _, facts| crate::threading::thread_decided_branches(f, facts).into(),
        |f, _, facts| crate::threading::merge_chains(f, facts).into(),
        |f, _, facts| crate::lookups::reuse_lookups(f, facts).into(),
        |f, maps, facts| crate::slot_stores::remove_dead_slot_stores(f, maps, facts).into(),
    ];
    // A pass that found nothing to do finds nothing again until another pass edits the
    // function (each is a function of the IR alone), so it is skipped until then: the same
    // rounds and results as running every pass, with about half the pass runs.
    let mut settled = [false; 15];
    for _ in 0..8 {
        let mut changed = false;
        for (pass, done) in passes.iter().zip(0..) {
            if settled[done] {
                continue;
            }
            let out = pass(f, maps, facts);
            changed |= out.changed;
            if out.modified {
                settled = [false; 15];
                if out.counts_kept {
                    facts.edited_counts_kept(f);
                } else {
                    facts.edited(f);
                }
            }
            settled[done] = !out.modified;
        }
        if !changed {
            break;
        }
    }
}

/// Empties the blocks that no path from the entry reaches any more (branches decided,
/// chains merged): their writes would otherwise still count in `def_counts`, and a value
/// written once on every live path would look written several times to the passes that
/// need a single definition.
pub fn clear_unreachable(f: &mut Function, facts: &mut Facts) -> bool {
    let mut live: SecondaryMap<Block, bool> = f.block_map();
    for &b in &facts.cfg(f).order {
        live[b] = true;
    }
    let empty = Terminator::Return(Operand::Imm(0));
    let mut changed = false;
    for (b, d) in f.blocks.iter_mut() {
        if !live[b] && (!d.insts.is_empty() || d.term.0 != empty) {
            d.insts.clear();
            d.term.0 = empty.clone();
            changed = true;
        }
    }
    changed
}

/// Replaces uses of `d` in `d = s` (both written once, same kind) by `s`: `s`'s write comes
/// before the copy, which comes before every use of `d`, and `s` never changes.
pub fn propagate_copies(f: &mut Function, facts: &mut Facts) -> bool {
    let defs = facts.defs(f);
    let mut copy_of: SecondaryMap<Value, Option<Value>> = f.value_map();
    let mut copies = false;
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            if let Inst::Mov { dst, src } = inst {
                if defs[*dst] == 1 && defs[*src] == 1 && f.values[*dst] == f.values[*src] && dst != src {
                    copy_of[*dst] = Some(*src);
                    copies = true;
                }
            }
        }
    }
    // No such copy: every value resolves to itself (most runs), no need to visit the uses.
    if !copies {
        let local = crate::available_copies::propagate_in_blocks(f, facts.defs(f));
        return local | crate::available_copies::propagate(f, facts);
    }
    let resolve = |mut v: Value| {
        for _ in 0..16 {
            match copy_of[v] {
                Some(s) => v = s,
                None => break,
            }
        }
        v
    };
    let mut changed = false;
    let mut sub = |v: &mut Value| {
        let r = resolve(*v);
        if r != *v {
            *v = r;
            changed = true;
        }
    };
    for (_, b) in f.blocks.iter_mut() {
        for (inst, _) in b.insts.iter_mut() {
            for_each_use(inst, &mut sub);
        }
        for_each_term_use(&mut b.term.0, &mut sub);
    }
    // Replacing uses changes no write count and no edge: the facts still hold.
    let local = crate::available_copies::propagate_in_blocks(f, facts.defs(f));
    changed | local | crate::available_copies::propagate(f, facts)
}

/// Calls `sub` on every value an instruction reads (not on the one it writes).
pub(crate) fn for_each_use(inst: &mut Inst, sub: &mut impl FnMut(&mut Value)) {
    let operand = |o: &mut Operand, sub: &mut dyn FnMut(&mut Value)| {
        if let Operand::Value(v) = o {
            sub(v);
        }
    };
    match inst {
        Inst::Mov { src, .. } | Inst::Neg { src, .. } => sub(src),
        Inst::Bswap { src, .. } | Inst::Zext { src, .. } | Inst::Sext { src, .. } => sub(src),
        Inst::Bin { a, b, .. } => {
            sub(a);
            operand(b, sub);
        }
        Inst::Load { base, .. } => sub(base),
        Inst::LoadSlotIndexed { index, .. } => sub(index),
        Inst::Store { base, src, .. } => {
            sub(base);
            operand(src, sub);
        }
        Inst::StoreSlot { src, .. } => operand(src, sub),
        Inst::AtomicAdd { base, src, .. } => {
            sub(base);
            sub(src);
        }
        Inst::Call { args, .. } | Inst::CallKfunc { args, .. } | Inst::CallLocal { args, .. } => {
            for a in args.iter_mut() {
                operand(a, sub);
            }
        }
        _ => {}
    }
}

pub(crate) fn for_each_term_use(t: &mut Terminator, sub: &mut impl FnMut(&mut Value)) {
    match t {
        Terminator::Branch { a, b: o, .. } => {
            sub(a);
            if let Operand::Value(v) = o {
                sub(v);
            }
        }
        Terminator::Return(Operand::Value(v)) => sub(v),
        _ => {}
    }
}

/// `d = t + k2` where `t = x + k1` (both written once, `x` written once): `d = x + (k1 + k2)`.
pub fn fold_add_chains(f: &mut Function, facts: &mut Facts) -> bool {
    let defs = facts.defs(f);
    let mut add_of: SecondaryMap<Value, Option<(Value, i64)>> = f.value_map();
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            if let Inst::Bin {
                op: BinOp::Add,
                dst,
                a,
                b: Operand::Imm(k),
            } = inst
            {
                if defs[*dst] == 1 && defs[*a] == 1 && dst != a {
                    add_of[*dst] = Some((*a, *k));
                }
            }
        }
    }
    let mut changed = false;
    for (_, b) in f.blocks.iter_mut() {
        for (inst, _) in b.insts.iter_mut() {
            if let Inst::Bin {
                op: BinOp::Add,
                dst,
                a,
                b: Operand::Imm(k),
            } = inst
            {
                if defs[*dst] != 1 {
                    continue;
                }
                if let Some((x, k1)) = add_of[*a] {
                    // Stay within i32 immediates: the emitter would otherwise need ld_imm64.
                    if let Some(sum) = k.checked_add(k1).filter(|s| i32::try_from(*s).is_ok()) {
                        *a = x;
                        *k = sum;
                        changed = true;
                    }
                }
            }
        }
    }
    changed
}

/// `(x >> k) | (y >> k)` is `(x | y) >> k` (and `&`, `^`; `<<`, `>>`, arithmetic `>>`): one
/// shift instead of two, when nothing else reads the shifted values (`net.eth`'s tag test,
/// `((a - 1) >> 63) | ((b - 1) >> 63)`). Everything involved is written once, so `x` and `y`
/// hold at the `|` what they held at the shifts.
pub fn combine_shifts(f: &mut Function, facts: &mut Facts) -> bool {
    let defs = facts.defs(f);
    let mut shift_of: SecondaryMap<Value, Option<(BinOp, Value, i64)>> = f.value_map();
    let mut shifts = 0;
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            if let Inst::Bin {
                op: op @ (BinOp::Lsh | BinOp::Rsh | BinOp::Arsh),
                dst,
                a,
                b: Operand::Imm(k),
            } = inst
            {
                if defs[*dst] == 1 && defs[*a] == 1 && dst != a && f.values[*a] == ValueKind::Scalar {
                    shift_of[*dst] = Some((*op, *a, *k));
                    shifts += 1;
                }
            }
        }
    }
    // Two shifts at least, or nothing to combine: most runs stop here, before counting reads.
    if shifts < 2 {
        return false;
    }
    let (defs, reads) = facts.defs_and_reads(f);
    let mut changed = false;
    for (_, b) in f.blocks.iter_mut() {
        let mut i = 0;
        while i < b.insts.len() {
            let (inst, loc) = &b.insts[i];
            if let Inst::Bin {
                op: op @ (BinOp::Or | BinOp::And | BinOp::Xor),
                dst,
                a,
                b: Operand::Value(c),
            } = inst
            {
                if let (Some((s1, x, k1)), Some((s2, y, k2))) = (shift_of[*a], shift_of[*c]) {
                    if s1 == s2 && k1 == k2 && a != c && reads[*a] == 1 && reads[*c] == 1 && defs[*dst] == 1 {
                        let (op, dst, loc) = (*op, *dst, *loc);
                        let t = f.values.push(ValueKind::Scalar);
                        b.insts[i] = (
                            Inst::Bin {
                                op,
                                dst: t,
                                a: x,
                                b: Operand::Value(y),
                            },
                            loc,
                        );
                        b.insts.insert(
                            i + 1,
                            (
                                Inst::Bin {
                                    op: s1,
                                    dst,
                                    a: t,
                                    b: Operand::Imm(k1),
                                },
                                loc,
                            ),
                        );
                        changed = true;
                        i += 1;
                    }
                }
            }
            i += 1;
        }
    }
    changed
}

/// `if bswap16(x) == k` where `x` is a zero-extended 16-bit load: `if x == bswap16(k)`, the
/// way C compares with `bpf_htons(k)`; the swap goes when nothing else reads it.
pub fn compare_before_swap(f: &mut Function, facts: &mut Facts) -> bool {
    let defs = facts.defs(f);
    let mut swap_of: SecondaryMap<Value, Option<(Value, u8)>> = f.value_map();
    let mut loaded_bits: SecondaryMap<Value, u32> = f.value_map();
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            match inst {
                Inst::Load { dst, size, .. } if defs[*dst] == 1 => loaded_bits[*dst] = size.bytes() * 8,
                Inst::Bswap { dst, src, bits } if defs[*dst] == 1 && defs[*src] == 1 => {
                    swap_of[*dst] = Some((*src, *bits))
                }
                _ => {}
            }
        }
    }
    let mut changed = false;
    for (_, b) in f.blocks.iter_mut() {
        if let Terminator::Branch {
            op: op @ (JmpOp::Jeq | JmpOp::Jne),
            a,
            b: Operand::Imm(k),
            then_,
            else_,
        } = b.term.0
        {
            let Some((src, bits)) = swap_of[a] else { continue };
            if loaded_bits[src] != u32::from(bits) {
                continue;
            }
            let fits = bits == 64 || (0..(1i64 << bits)).contains(&k);
            b.term.0 = if !fits {
                // A swapped `bits`-wide value never equals a wider constant.
                Terminator::Jump(if op == JmpOp::Jne { then_ } else { else_ })
            } else {
                let swapped = match bits {
                    16 => i64::from((k as u16).swap_bytes()),
                    32 => i64::from((k as u32).swap_bytes()),
                    _ => (k as u64).swap_bytes() as i64,
                };
                Terminator::Branch {
                    op,
                    a: src,
                    b: Operand::Imm(swapped),
                    then_,
                    else_,
                }
            };
            changed = true;
        }
    }
    changed
}

fn subst(o: &mut Operand, consts: &SecondaryMap<Value, Option<i64>>) -> bool {
    if let Operand::Value(v) = o {
        if let Some(c) = consts[*v] {
            *o = Operand::Imm(c);
            return true;
        }
    }
    false
}

pub fn propagate_constants(f: &mut Function, facts: &mut Facts) -> bool {
    let consts = facts.constants(f);
    let mut changed = false;
    for (_, b) in f.blocks.iter_mut() {
        for (inst, _) in b.insts.iter_mut() {
            match inst {
                Inst::Bin { b: o, .. } => changed |= subst(o, consts),
                Inst::Store { src, .. } | Inst::StoreSlot { src, .. } => changed |= subst(src, consts),
                Inst::Call { args, .. } | Inst::CallKfunc { args, .. } => {
                    for a in args.iter_mut() {
                        changed |= subst(a, consts);
                    }
                }
                Inst::Mov { dst, src } => {
                    if let Some(c) = consts[*src] {
                        *inst = Inst::Const { dst: *dst, imm: c };
                        changed = true;
                    }
                }
                _ => {}
            }
        }
        match &mut b.term.0 {
            Terminator::Branch { b: o, .. } => changed |= subst(o, consts),
            Terminator::Return(o) => changed |= subst(o, consts),
            _ => {}
        }
    }
    changed
}

pub(crate) fn eval_bin(op: BinOp, a: i64, b: i64) -> Option<i64> {
    Some(match op {
        BinOp::Add => a.wrapping_add(b),
        BinOp::Sub => a.wrapping_sub(b),
        BinOp::Mul => a.wrapping_mul(b),
        BinOp::And => a & b,
        BinOp::Or => a | b,
        BinOp::Xor => a ^ b,
        BinOp::Lsh => ((a as u64) << (b & 63)) as i64,
        BinOp::Rsh => ((a as u64) >> (b & 63)) as i64,
        BinOp::Arsh => a >> (b & 63),
        // Division is left to the kernel's semantics (and lowering's checks).
        _ => return None,
    })
}

pub(crate) fn eval_cond(op: JmpOp, a: i64, b: i64) -> Option<bool> {
    let (ua, ub) = (a as u64, b as u64);
    Some(match op {
        JmpOp::Jeq => a == b,
        JmpOp::Jne => a != b,
        JmpOp::Jgt => ua > ub,
        JmpOp::Jge => ua >= ub,
        JmpOp::Jlt => ua < ub,
        JmpOp::Jle => ua <= ub,
        JmpOp::Jsgt => a > b,
        JmpOp::Jsge => a >= b,
        JmpOp::Jslt => a < b,
        JmpOp::Jsle => a <= b,
        JmpOp::Jset => a & b != 0,
        _ => return None,
    })
}

pub fn fold(f: &mut Function, facts: &mut Facts) -> bool {
    let consts = facts.constants(f);
    let mut changed = false;
    for (_, b) in f.blocks.iter_mut() {
        for (inst, _) in b.insts.iter_mut() {
            // `12 + x` is `x + 12`: the emitter adds an immediate to x's register in place
            // instead of materialising the constant first.
            if let Inst::Bin {
                op: BinOp::Add | BinOp::Mul | BinOp::And | BinOp::Or | BinOp::Xor,
                a,
                b: rhs @ Operand::Value(_),
                ..
            } = inst
            {
                if let (Some(x), Operand::Value(v)) = (consts[*a], *rhs) {
                    if consts[v].is_none() {
                        *a = v;
                        *rhs = Operand::Imm(x);
                        changed = true;
                    }
                }
            }
            if let Inst::Bin {
                op,
                dst,
                a,
                b: Operand::Imm(y),
            } = inst
            {
                if let Some(x) = consts[*a] {
                    if let Some(v) = eval_bin(*op, x, *y) {
                        *inst = Inst::Const { dst: *dst, imm: v };
                        changed = true;
                        continue;
                    }
                }
                // `x - k` is `x + (-k)`: add chains then fold (`(x + 14) - 2` is `x + 12`).
                if *op == BinOp::Sub && *y != 0 && *y != i64::MIN {
                    *op = BinOp::Add;
                    *y = -*y;
                    changed = true;
                }
                // x + 0, x - 0, x | 0 ... are moves.
                if *y == 0
                    && matches!(
                        op,
                        BinOp::Add | BinOp::Sub | BinOp::Or | BinOp::Xor | BinOp::Lsh | BinOp::Rsh | BinOp::Arsh
                    )
                {
                    *inst = Inst::Mov { dst: *dst, src: *a };
                    changed = true;
                }
            }
        }
        if let Terminator::Branch {
            op,
            a,
            b: Operand::Imm(y),
            then_,
            else_,
        } = &b.term.0
        {
            if let Some(x) = consts[*a] {
                if let Some(taken) = eval_cond(*op, x, *y) {
                    b.term.0 = Terminator::Jump(if taken { *then_ } else { *else_ });
                    changed = true;
                }
            }
        }
    }
    changed
}

pub fn remove_dead(f: &mut Function) -> bool {
    remove_dead_reporting(f, &mut Facts::default()).changed
}

fn remove_dead_reporting(f: &mut Function, facts: &mut Facts) -> Outcome {
    // Dropping an instruction drops its reads too, which may leave the one that wrote what
    // it read unread: such chains (a variable copied through several joins, each copy read
    // only by the next) all go in this run, counting reads down as instructions go. Peeled
    // one layer per run, a chain kept the rounds going with every other pass run again only
    // for this one to peel the next copy (cookie_guard's first local passes ran all 8 rounds,
    // 5 of them for that). The counts and constants are kept up to date on the way.
    let (reads, mut defs, mut consts) = facts.counts_mut(f);
    let (mut changed, mut modified) = (false, false);
    let mut keep: Vec<bool> = Vec::new();
    let mut peeled = true;
    while peeled {
        peeled = false;
        for (_, b) in f.blocks.iter_mut() {
            // Backwards: a read later in the block goes before the write it reads.
            keep.clear();
            keep.resize(b.insts.len(), true);
            let mut dropped = false;
            for (i, (inst, _)) in b.insts.iter().enumerate().rev() {
                match inst.def() {
                    Some(d) if reads[d] == 0 && inst.is_pure() && !matches!(inst, Inst::Arg { .. }) => {
                        keep[i] = false;
                        dropped = true;
                        inst.each_use(|u| reads[u] -= 1);
                        if let Some(defs) = defs.as_deref_mut() {
                            defs[d] -= 1;
                        }
                        // (Any constant write of an unread value is pure, so it goes too.)
                        if let Some(consts) = consts.as_deref_mut() {
                            consts[d] = None;
                        }
                    }
                    _ => {}
                }
            }
            if dropped {
                let mut i = 0;
                b.insts.retain(|_| {
                    i += 1;
                    keep[i - 1]
                });
                peeled = true;
                changed = true;
            }
        }
    }
    for (_, b) in f.blocks.iter_mut() {
        // A call whose result is unused still runs, but needs no destination.
        for (inst, _) in b.insts.iter_mut() {
            if let Inst::Call { dst: Some(d), .. } = inst {
                if reads[*d] == 0 {
                    if let Some(defs) = defs.as_deref_mut() {
                        defs[*d] -= 1;
                    }
                    if let Some(consts) = consts.as_deref_mut() {
                        consts[*d] = None;
                    }
                    if let Inst::Call { dst, .. } = inst {
                        *dst = None;
                        modified = true;
                    }
                }
            }
        }
    }
    Outcome {
        changed,
        modified: changed || modified,
        counts_kept: true,
    }
}

/// Drops pure instructions whose result is overwritten (or never read) on every path before
/// a read: the IR is not SSA, so `remove_dead` alone keeps the stale writes of a variable
/// that is read elsewhere.
pub fn remove_dead_writes(f: &mut Function, facts: &mut Facts) -> bool {
    let live = crate::liveness::Liveness::compute_in(f, facts.cfg(f).order.clone());
    let mut changed = false;
    // The values live along the block, as bits by value number: one set reused for every
    // block (a hash set built per block showed in profiles), and so is `keep`.
    let mut now = crate::bitset::BitSet::new(f.values.len());
    let mut keep = Vec::new();
    for &b in live.order() {
        now.clear();
        live.live_out(b).for_each(|v| now.insert(v.as_u32() as usize));
        let d = &mut f.blocks[b];
        d.term
            .0
            .uses()
            .into_iter()
            .for_each(|v| now.insert(v.as_u32() as usize));
        keep.clear();
        keep.resize(d.insts.len(), true);
        for (i, (inst, _)) in d.insts.iter().enumerate().rev() {
            if let Some(v) = inst.def() {
                if !now.contains(v.as_u32() as usize) && inst.is_pure() && !matches!(inst, Inst::Arg { .. }) {
                    keep[i] = false;
                    continue;
                }
                now.remove(v.as_u32() as usize);
            }
            inst.each_use(|v| now.insert(v.as_u32() as usize));
        }
        if keep.iter().any(|k| !k) {
            let mut i = 0;
            d.insts.retain(|_| {
                i += 1;
                keep[i - 1]
            });
            changed = true;
        }
    }
    changed
}

/// The blocks of `order` laid out between a loop header and a jump back to it.
pub(crate) fn laid_out_in_loops(f: &Function, order: &[Block]) -> SecondaryMap<Block, bool> {
    let mut index: SecondaryMap<Block, usize> = f.block_map();
    for (i, &b) in order.iter().enumerate() {
        index[b] = i;
    }
    let mut in_loop: SecondaryMap<Block, bool> = f.block_map();
    for &b in order {
        for s in f.blocks[b].term.0.successors() {
            if index[s] <= index[b] {
                for &x in &order[index[s]..=index[b]] {
                    in_loop[x] = true;
                }
            }
        }
    }
    in_loop
}

/// Branches to empty `return k` blocks all go to one such block per `k`: each copy costs two
/// instructions (`r0 = k; exit`). Not from inside loops: there the shorter paths moved the
/// verifier's state checkpoints so that it walked the scan loops' latches more often.
pub fn share_returns(f: &mut Function, facts: &mut Facts) -> bool {
    let order = &facts.cfg(f).order;
    let mut first: rustc_hash::FxHashMap<i64, Block> = Default::default();
    let mut canon: SecondaryMap<Block, Option<Block>> = f.block_map();
    // The shared block is the lowest-numbered copy, not the first in the order: redirecting
    // branches reorders the blocks, and a choice by order flipped between two copies on every
    // run, so the local passes never settled (and ran their 8 rounds each time).
    for &b in order {
        if let Some(k) = f.returned_constant(b) {
            let c = first.entry(k).or_insert(b);
            *c = (*c).min(b);
        }
    }
    let mut shared = false;
    for &b in order {
        if let Some(k) = f.returned_constant(b) {
            if first[&k] != b {
                canon[b] = Some(first[&k]);
                shared = true;
            }
        }
    }
    // No second copy of any `return k`: nothing to redirect (most runs), and the loop spans
    // need not be found.
    if !shared {
        return false;
    }
    let in_loop = laid_out_in_loops(f, order);
    let mut changed = false;
    for &b in order.iter().filter(|&&b| !in_loop[b]) {
        let mut t = f.blocks[b].term.0.clone();
        for s in t.successors() {
            if let Some(c) = canon[s] {
                crate::threading::redirect(&mut t, s, c);
            }
        }
        if t != f.blocks[b].term.0 {
            f.blocks[b].term.0 = t;
            changed = true;
        }
    }
    changed
}

/// Where control really goes from `b` if `b` is an empty block that only jumps.
fn forward(f: &Function, mut b: Block) -> Block {
    for _ in 0..64 {
        let d = &f.blocks[b];
        match (&d.insts.is_empty(), &d.term.0) {
            (true, Terminator::Jump(t)) if *t != b => b = *t,
            _ => break,
        }
    }
    b
}

pub fn thread_jumps(f: &mut Function) -> bool {
    // Without an empty block that only jumps elsewhere, `forward` goes nowhere, and the only
    // change left is a branch whose two sides are one block (most runs find neither).
    let threads = f.blocks.iter().any(|(b, d)| match &d.term.0 {
        Terminator::Jump(t) => d.insts.is_empty() && *t != b,
        Terminator::Branch { then_, else_, .. } => then_ == else_,
        _ => false,
    });
    if !threads {
        return false;
    }
    let blocks: Vec<Block> = f.blocks.keys().collect();
    let mut changed = false;
    for b in blocks {
        let term = f.blocks[b].term.0.clone();
        let new = match term {
            Terminator::Jump(t) => Terminator::Jump(forward(f, t)),
            Terminator::Branch {
                op,
                a,
                b: o,
                then_,
                else_,
            } => {
                let (t, e) = (forward(f, then_), forward(f, else_));
                if t == e {
                    Terminator::Jump(t)
                } else {
                    Terminator::Branch {
                        op,
                        a,
                        b: o,
                        then_: t,
                        else_: e,
                    }
                }
            }
            Terminator::MayGoto { exhausted, cont } => Terminator::MayGoto {
                exhausted: forward(f, exhausted),
                cont: forward(f, cont),
            },
            t => t,
        };
        if new != f.blocks[b].term.0 {
            f.blocks[b].term.0 = new;
            changed = true;
        }
    }
    let entry = f.entry;
    let fwd = forward(f, entry);
    if fwd != entry && f.blocks[entry].insts.is_empty() {
        f.entry = fwd;
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ValueKind;
    use runtime_bpf::isa::Size;
    use runtime_bpf::object::SourceLoc;

    /// The optimised functions of the examples are a fixpoint of `share_returns`: it once chose
    /// the shared block by its place in the order, which its own redirections changed, so it
    /// flipped cookie_guard's branches between two copies on every run and the local passes
    /// never settled.
    #[test]
    fn shared_returns_settle() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for name in ["cookie_guard", "ua_filter", "sni_filter", "counter", "tc_mark"] {
            let path = examples.join(format!("{name}.lua"));
            let c =
                crate::compile::compile_path(&path, &Default::default()).unwrap_or_else(|e| panic!("{}", e.render()));
            for f in &c.ir {
                assert!(
                    !share_returns(&mut f.clone(), &mut Facts::default()),
                    "{name}: {} not settled",
                    f.name
                );
            }
        }
    }

    /// `remove_dead` brings the counts and constants it was given up to date itself: they are
    /// what counting the edited function gives; a chain of copies goes in one run.
    #[test]
    fn dead_removal_keeps_the_counts() {
        let mut f = Function::new("t");
        let at = SourceLoc::default();
        let [x, y, z, k, r, c] = [0; 6].map(|_| f.new_value(ValueKind::Scalar));
        let e = f.entry;
        f.blocks[e].insts = vec![
            (Inst::Arg { dst: x, index: 0 }, at),
            (Inst::Const { dst: k, imm: 3 }, at),
            (Inst::Mov { dst: y, src: x }, at),
            (Inst::Mov { dst: z, src: y }, at),
            (Inst::Const { dst: c, imm: 1 }, at),
            (
                Inst::Call {
                    helper: 5,
                    args: vec![Operand::Value(k)],
                    dst: Some(c),
                },
                at,
            ),
            (
                Inst::Bin {
                    op: BinOp::Add,
                    dst: r,
                    a: x,
                    b: Operand::Value(k),
                },
                at,
            ),
        ];
        f.blocks[e].term.0 = Terminator::Return(Operand::Value(r));
        let mut facts = Facts::default();
        facts.constants(&f);
        let out = remove_dead_reporting(&mut f, &mut facts);
        assert!(out.changed && out.counts_kept);
        assert_eq!(f.blocks[e].insts.len(), 4, "z, then y, and c's constant go");
        let fresh = &mut Facts::default();
        assert_eq!(
            facts.defs(&f).values().collect::<Vec<_>>(),
            fresh.defs(&f).values().collect::<Vec<_>>()
        );
        assert_eq!(
            facts.reads(&f).values().collect::<Vec<_>>(),
            fresh.reads(&f).values().collect::<Vec<_>>()
        );
        assert_eq!(
            facts.constants(&f).values().collect::<Vec<_>>(),
            fresh.constants(&f).values().collect::<Vec<_>>()
        );
    }

    /// `bswap16(load16) == k`: compared unswapped with the swapped constant; a constant wider
    /// than 16 bits decides the test.
    #[test]
    fn swapped_compares_compare_the_loaded_bytes() {
        for (k, expect) in [(0x0800, "if Jeq v1, 8 then"), (0x1_0000, "jump b2")] {
            let mut f = Function::new("t");
            let at = SourceLoc::default();
            let [ctx, x, s] = [ValueKind::Pointer, ValueKind::Scalar, ValueKind::Scalar].map(|k| f.new_value(k));
            let (yes, no) = (f.new_block(), f.new_block());
            let e = f.entry;
            f.blocks[e].insts = vec![
                (Inst::Arg { dst: ctx, index: 0 }, at),
                (
                    Inst::Load {
                        dst: x,
                        base: ctx,
                        off: 0,
                        size: Size::H,
                    },
                    at,
                ),
                (
                    Inst::Bswap {
                        dst: s,
                        src: x,
                        bits: 16,
                    },
                    at,
                ),
            ];
            f.blocks[e].term.0 = Terminator::Branch {
                op: JmpOp::Jeq,
                a: s,
                b: Operand::Imm(k),
                then_: yes,
                else_: no,
            };
            f.blocks[yes].term.0 = Terminator::Return(Operand::Imm(1));
            f.blocks[no].term.0 = Terminator::Return(Operand::Imm(2));
            assert!(compare_before_swap(&mut f, &mut Facts::default()));
            let listing = crate::ir::display(&f);
            assert!(listing.contains(expect), "{expect} in:\n{listing}");
        }
    }

    /// A block no branch reaches any more loses its writes, so that `v` counts as written once.
    #[test]
    fn unreachable_blocks_are_emptied() {
        let mut f = Function::new("t");
        let v = f.new_value(ValueKind::Scalar);
        let dead = f.new_block();
        let e = f.entry;
        let l = SourceLoc::default();
        f.blocks[e].insts = vec![(Inst::Const { dst: v, imm: 1 }, l)];
        f.blocks[e].term.0 = Terminator::Return(Operand::Value(v));
        f.blocks[dead].insts = vec![(Inst::Const { dst: v, imm: 2 }, l)];
        f.blocks[dead].term.0 = Terminator::Jump(e);
        assert_eq!(f.def_counts()[v], 2);
        assert!(clear_unreachable(&mut f, &mut Facts::default()));
        assert_eq!(f.def_counts()[v], 1);
        assert!(
            !clear_unreachable(&mut f, &mut Facts::default()),
            "nothing more to clear"
        );
    }

    fn asm(src: &str) -> String {
        let c = crate::compile::compile_source(src, "t.lua", &Default::default())
            .unwrap_or_else(|e| panic!("{}", e.render()));
        crate::compile::annotated_asm(&c.object)
    }

    fn code_lines(asm: &str) -> Vec<&str> {
        asm.lines()
            .filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()))
            .collect()
    }

    /// net.eth's tag test: two shifted comparisons or-ed shift once, after the `|`.
    #[test]
    fn shifts_of_both_operands_become_one_shift() {
        let out = asm(r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local raw = ctx:packet():getuint16(12)
  return (((raw ~ 0x0081) - 1) >> 63) | (((raw ~ 0xA888) - 1) >> 63)
end, { name = "tag" })
"#);
        let shifts = code_lines(&out).iter().filter(|l| l.contains(">>= 63")).count();
        assert_eq!(shifts, 1, "one shift:\n{out}");
    }

    /// `12 + x * 4` adds the constant to x's register, and `(14 + x) - 2` is `x + 12`: no
    /// register is loaded with a constant first.
    #[test]
    fn constants_go_on_the_right_and_subtractions_chain() {
        let out = asm(r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local x = p:getbyte(0)
  return (12 + x * 4) | ((14 + x) - 2) * 3
end, { name = "k" })
"#);
        let lines = code_lines(&out);
        let loads_constant = |l: &&str| {
            l.split(": ")
                .nth(1)
                .is_some_and(|i| i.ends_with(" = 12") || i.ends_with(" = 14"))
        };
        assert!(!lines.iter().any(loads_constant), "no constant loaded:\n{out}");
        assert!(lines.iter().any(|l| l.contains("+= 12")), "x + 12 in one add:\n{out}");
        assert!(
            !lines.iter().any(|l| l.contains("-= 2")),
            "the - 2 folded into the + 14:\n{out}"
        );
    }
}
