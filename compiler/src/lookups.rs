//! Reuse of a map lookup of the same key.
//!
//! `if m[k] then m[k] = m[k] + 1 end` looks the key up three times, each a hash of the key
//! and a walk of its bucket. When an earlier `map_lookup_elem` of the same map, with the key
//! in the same stack slot, happened on every path to a later one, and on no path in between
//! the slot was written or any other helper ran (a map update or delete, a copy into the
//! slot), the later lookup returns the same element: it becomes a copy of the earlier
//! pointer. Where the earlier pointer was already tested non-null on every path, the later
//! null test is decided too, and the insert-on-miss code behind it disappears.
//!
//! Another CPU may delete or replace the element in between: the reused pointer then refers
//! to the element this run first saw, exactly as a C program that keeps its lookup's pointer
//! does (the kernel keeps it valid until the program returns).

use cranelift_entity::SecondaryMap;

use crate::ir::{Block, Function, Inst, Operand, Slot, Terminator, Value};
use runtime_bpf::helpers as h;
use runtime_bpf::isa::JmpOp;

/// A lookup whose result is available: map, key slot and offset, result, and whether every
/// path has seen the result tested non-null.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Avail {
    map: u32,
    slot: Slot,
    off: u32,
    result: Value,
    non_null: bool,
}

type State = Vec<Avail>;

struct Defs {
    map_addr: SecondaryMap<Value, Option<u32>>,
    slot_addr: SecondaryMap<Value, Option<(Slot, u32)>>,
    /// Values written by a helper call (map value pointers: never the stack).
    call_result: SecondaryMap<Value, bool>,
    once: SecondaryMap<Value, bool>,
}

fn defs(f: &Function, counts: &SecondaryMap<Value, u32>) -> Defs {
    let mut d = Defs {
        map_addr: f.value_map(),
        slot_addr: f.value_map(),
        call_result: f.value_map(),
        once: f.value_map(),
    };
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            let Some(v) = inst.def() else { continue };
            if counts[v] != 1 {
                continue;
            }
            d.once[v] = true;
            match inst {
                Inst::MapAddr { map, .. } => d.map_addr[v] = Some(*map),
                Inst::SlotAddr { slot, off, .. } => d.slot_addr[v] = Some((*slot, *off)),
                Inst::Call { .. } => d.call_result[v] = true,
                _ => {}
            }
        }
    }
    d
}

/// `(map, slot, off, result)` of a lookup with a single-definition result.
fn as_lookup(d: &Defs, inst: &Inst) -> Option<(u32, Slot, u32, Value)> {
    let Inst::Call {
        helper: h::MAP_LOOKUP_ELEM,
        args,
        dst: Some(r),
    } = inst
    else {
        return None;
    };
    let (Some(Operand::Value(m)), Some(Operand::Value(k))) = (args.first(), args.get(1)) else {
        return None;
    };
    let map = d.map_addr[*m]?;
    let (slot, off) = d.slot_addr[*k]?;
    d.once[*r].then_some((map, slot, off, *r))
}

/// Applies an instruction to the state; for a repeated lookup, returns the copy that can
/// replace it. `alias` maps values to the lookup result they copy (within the block).
fn step(d: &Defs, s: &mut State, inst: &Inst, alias: &mut Vec<(Value, Value)>) -> Option<Inst> {
    if let Some((map, slot, off, r)) = as_lookup(d, inst) {
        if let Some(a) = s.iter().find(|a| (a.map, a.slot, a.off) == (map, slot, off)).copied() {
            alias.push((r, a.result));
            return Some(Inst::Mov { dst: r, src: a.result });
        }
        s.push(Avail {
            map,
            slot,
            off,
            result: r,
            non_null: false,
        });
        return None;
    }
    match inst {
        Inst::StoreSlot { slot, .. } => s.retain(|a| a.slot != *slot),
        Inst::Store { base, .. } | Inst::AtomicAdd { base, .. } if d.call_result[*base] => {}
        Inst::Store { .. } | Inst::AtomicAdd { .. } => s.clear(),
        Inst::Call { .. } | Inst::CallKfunc { .. } | Inst::CallLocal { .. } => s.clear(),
        Inst::Mov { dst, src } => {
            let target = alias.iter().find(|(v, _)| v == src).map(|(_, t)| *t).unwrap_or(*src);
            alias.retain(|(v, _)| v != dst);
            if s.iter().any(|a| a.result == target) {
                alias.push((*dst, target));
            }
        }
        _ => {
            if let Some(v) = inst.def() {
                alias.retain(|(x, _)| *x != v);
            }
        }
    }
    None
}

/// The lookup result a branch tests against 0, and the successor where it is non-null.
fn null_test(t: &Terminator, alias: &[(Value, Value)]) -> Option<(Value, Block, Block)> {
    let Terminator::Branch {
        op,
        a,
        b: Operand::Imm(0),
        then_,
        else_,
    } = t
    else {
        return None;
    };
    let r = alias.iter().find(|(v, _)| v == a).map(|(_, t)| *t).unwrap_or(*a);
    match op {
        JmpOp::Jne => Some((r, *then_, *else_)),
        JmpOp::Jeq => Some((r, *else_, *then_)),
        _ => None,
    }
}

/// Whether the data flow below can change anything: a lookup is reused only when another
/// lookup has the same key and what it would find can reach it (`reusable_lookup`), and a null test is decided only when another null test of
/// the same result (or a copy of it) came first on every path. Most runs (the pass runs in
/// every round of the local passes) find neither and skip the data flow, which costs most of
/// this pass.
fn may_reuse(f: &Function, d: &Defs) -> bool {
    let mut keys: Vec<(u32, Slot, u32)> = Vec::new();
    let mut result: SecondaryMap<Value, bool> = f.value_map();
    for b in f.blocks.values() {
        for (inst, _) in &b.insts {
            if let Some((map, slot, off, r)) = as_lookup(d, inst) {
                keys.push((map, slot, off));
                result[r] = true;
            }
        }
    }
    if keys.is_empty() {
        return false;
    }
    keys.sort_unstable();
    if keys.windows(2).any(|w| w[0] == w[1]) && reusable_lookup(f, d) {
        return true;
    }
    // The lookup results each null test can be about: its value, or what that is a copy of
    // through copies made earlier in its block (`step`'s aliases last a block).
    let mut results: Vec<Value> = Vec::new();
    let mut about = Vec::new();
    for b in f.blocks.values() {
        let Terminator::Branch {
            op: JmpOp::Jeq | JmpOp::Jne,
            a,
            b: Operand::Imm(0),
            ..
        } = b.term.0
        else {
            continue;
        };
        about.clear();
        about.push(a);
        for (inst, _) in b.insts.iter().rev() {
            if let Inst::Mov { dst, src } = inst {
                if about.contains(dst) && !about.contains(src) {
                    about.push(*src);
                }
            }
        }
        results.extend(about.iter().filter(|v| result[**v]));
    }
    results.sort_unstable();
    results.windows(2).any(|w| w[0] == w[1])
}

/// Whether a lookup may be reused. Within a block: a lookup repeating one the block made
/// with nothing in between that `step` clears it with (a store into the key's slot, a call,
/// a store through a pointer other than a map value's). Across blocks: a lookup with no such
/// clearing before it in its block (it may find what the block's entry has) and, for it to
/// find anything there, another lookup of its key with no such clearing after it in its
/// block (what reaches a block's entry was made by one of those).
fn reusable_lookup(f: &Function, d: &Defs) -> bool {
    // The keys of the lookups that may find what their block's entry has, and whether each
    // lasts to its block's end; the keys of the lookups that last to their block's end.
    let mut open: Vec<((u32, Slot, u32), bool)> = Vec::new();
    let mut lasting: Vec<(u32, Slot, u32)> = Vec::new();
    // What the block made since its start, as `step` keeps it (with the place in `open`),
    // the slots stored into, and whether everything from the entry was cleared.
    let mut made: Vec<((u32, Slot, u32), Option<usize>)> = Vec::new();
    let mut stored: Vec<Slot> = Vec::new();
    for b in f.blocks.values() {
        made.clear();
        stored.clear();
        let mut cleared = false;
        for (inst, _) in &b.insts {
            if let Some((map, slot, off, _)) = as_lookup(d, inst) {
                let key = (map, slot, off);
                if made.iter().any(|(k, _)| *k == key) {
                    return true;
                }
                let at = (!cleared && !stored.contains(&slot)).then(|| {
                    open.push((key, false));
                    open.len() - 1
                });
                made.push((key, at));
                continue;
            }
            match inst {
                Inst::StoreSlot { slot, .. } => {
                    stored.push(*slot);
                    made.retain(|(k, _)| k.1 != *slot);
                }
                Inst::Store { base, .. } | Inst::AtomicAdd { base, .. } if d.call_result[*base] => {}
                Inst::Store { .. }
                | Inst::AtomicAdd { .. }
                | Inst::Call { .. }
                | Inst::CallKfunc { .. }
                | Inst::CallLocal { .. } => {
                    cleared = true;
                    made.clear();
                }
                _ => {}
            }
        }
        for &(key, at) in &made {
            lasting.push(key);
            if let Some(i) = at {
                open[i].1 = true;
            }
        }
    }
    lasting.sort_unstable();
    open.iter().any(|&(key, lasts)| {
        let n = lasting.partition_point(|k| *k <= key) - lasting.partition_point(|k| *k < key);
        n > usize::from(lasts)
    })
}

pub fn reuse_lookups(f: &mut Function, facts: &mut crate::facts::Facts) -> bool {
    let d = defs(f, facts.defs(f));
    if !may_reuse(f, &d) {
        return false;
    }
    let crate::facts::Cfg { order, preds, .. } = facts.cfg(f);
    let mut out: SecondaryMap<Block, Option<(State, Option<(Value, Block)>)>> = f.block_map();
    // The state at `b`'s entry, into `acc`: the meet of its visited predecessors' out-states
    // (each with the lookup its branch tested non-null on the edge to `b` marked so). Met in
    // place, into one buffer, rather than a copy of every predecessor's state and a new state
    // per meet: those allocations were most of this pass's time.
    let entry_in = |out: &SecondaryMap<Block, Option<(State, Option<(Value, Block)>)>>,
                    f: &Function,
                    b: Block,
                    acc: &mut State| {
        acc.clear();
        if b == f.entry {
            return;
        }
        let mut first = true;
        for &p in &preds[b] {
            let Some((s, nn)) = &out[p] else { continue };
            let tested = nn.filter(|(_, succ)| *succ == b).map(|(r, _)| r);
            let non_null = |a: &Avail| a.non_null || tested == Some(a.result);
            if first {
                acc.extend(s.iter().map(|a| Avail {
                    non_null: non_null(a),
                    ..*a
                }));
                first = false;
            } else {
                acc.retain_mut(|x| {
                    let Some(y) = s
                        .iter()
                        .find(|y| (y.map, y.slot, y.off, y.result) == (x.map, x.slot, x.off, x.result))
                    else {
                        return false;
                    };
                    x.non_null = x.non_null && non_null(y);
                    true
                });
            }
        }
    };
    let mut s = State::new();
    let mut alias = Vec::new();
    // Solve (optimistically: unvisited predecessors are skipped, then iterate).
    for _ in 0..16 {
        let mut stable = true;
        for &b in order {
            entry_in(&out, f, b, &mut s);
            alias.clear();
            for (inst, _) in &f.blocks[b].insts {
                step(&d, &mut s, inst, &mut alias);
            }
            let nn = null_test(&f.blocks[b].term.0, &alias)
                .filter(|(r, _, _)| s.iter().any(|a| a.result == *r))
                .map(|(r, yes, _)| (r, yes));
            match &mut out[b] {
                Some((old, old_nn)) if *old == s && *old_nn == nn => {}
                Some((old, old_nn)) => {
                    old.clone_from(&s);
                    *old_nn = nn;
                    stable = false;
                }
                None => {
                    out[b] = Some((s.clone(), nn));
                    stable = false;
                }
            }
        }
        if stable {
            break;
        }
    }
    let mut changed = false;
    for &b in order {
        entry_in(&out, f, b, &mut s);
        alias.clear();
        let mut insts = std::mem::take(&mut f.blocks[b].insts);
        for (inst, _) in insts.iter_mut() {
            if let Some(copy) = step(&d, &mut s, inst, &mut alias) {
                *inst = copy;
                changed = true;
            }
        }
        f.blocks[b].insts = insts;
        if let Some((r, yes, _)) = null_test(&f.blocks[b].term.0, &alias) {
            if s.iter().any(|a| a.result == r && a.non_null) {
                f.blocks[b].term.0 = Terminator::Jump(yes);
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ValueKind;
    use runtime_bpf::object::SourceLoc;

    /// `local v = m[k]; if v then m[k] = v + 1 end`: the second lookup is the first's
    /// pointer, and its null test (with the insert behind it) is gone.
    #[test]
    fn a_second_lookup_of_the_same_key_reuses_the_first() {
        let mut f = Function::new("t");
        let at = SourceLoc::default();
        let slot = f.new_slot(8, 8);
        let [key, map, r1, key2, map2, r2] = [0; 6].map(|_| f.new_value(ValueKind::Pointer));
        let (hit, again, store, insert, miss) = (
            f.new_block(),
            f.new_block(),
            f.new_block(),
            f.new_block(),
            f.new_block(),
        );
        let e = f.entry;
        let lookup = |k, m, r| Inst::Call {
            helper: h::MAP_LOOKUP_ELEM,
            args: vec![Operand::Value(m), Operand::Value(k)],
            dst: Some(r),
        };
        f.blocks[e].insts = vec![
            (Inst::SlotAddr { dst: key, slot, off: 0 }, at),
            (Inst::MapAddr { dst: map, map: 0 }, at),
            (lookup(key, map, r1), at),
        ];
        let test = |r, yes, no| Terminator::Branch {
            op: JmpOp::Jne,
            a: r,
            b: Operand::Imm(0),
            then_: yes,
            else_: no,
        };
        f.blocks[e].term.0 = test(r1, hit, miss);
        f.blocks[hit].term.0 = Terminator::Jump(again);
        f.blocks[again].insts = vec![
            (
                Inst::SlotAddr {
                    dst: key2,
                    slot,
                    off: 0,
                },
                at,
            ),
            (Inst::MapAddr { dst: map2, map: 0 }, at),
        ];
        // The same key through other address values: what lowering produces.
        let [key3, map3] = [0; 2].map(|_| f.new_value(ValueKind::Pointer));
        f.blocks[again].insts.push((
            Inst::SlotAddr {
                dst: key3,
                slot,
                off: 0,
            },
            at,
        ));
        f.blocks[again].insts.push((Inst::MapAddr { dst: map3, map: 0 }, at));
        f.blocks[again].insts.push((lookup(key3, map3, r2), at));
        f.blocks[again].term.0 = test(r2, store, insert);
        for b in [store, insert, miss] {
            f.blocks[b].term.0 = Terminator::Return(Operand::Imm(b.as_u32() as i64));
        }
        assert!(reuse_lookups(&mut f, &mut Default::default()));
        let listing = crate::ir::display(&f);
        assert_eq!(listing.matches("call #1").count(), 1, "{listing}");
        assert!(listing.contains(&format!("{r2} = {r1}")), "{listing}");
        assert!(!listing.contains(&format!("return {}", insert.as_u32())), "{listing}");
    }

    /// A function whose entry looks `m[k]` up into `r1` (the key slot's and map's address
    /// values made first); `r2` is left for a second lookup.
    struct OneKey {
        f: Function,
        slot: Slot,
        map: Value,
        key: Value,
        r2: Value,
    }

    impl OneKey {
        fn new() -> OneKey {
            let mut f = Function::new("t");
            let slot = f.new_slot(8, 8);
            let [key, map, r1, r2] = [0; 4].map(|_| f.new_value(ValueKind::Pointer));
            let at = SourceLoc::default();
            let e = f.entry;
            let mut k = OneKey { f, slot, map, key, r2 };
            k.f.blocks[e].insts = vec![
                (Inst::SlotAddr { dst: key, slot, off: 0 }, at),
                (Inst::MapAddr { dst: map, map: 0 }, at),
                (k.lookup(r1), at),
            ];
            k
        }

        fn lookup(&self, r: Value) -> Inst {
            self.call(h::MAP_LOOKUP_ELEM, Some(r))
        }

        /// A map helper given the map and the key (and, for an update, the key as the value).
        fn call(&self, helper: i32, dst: Option<Value>) -> Inst {
            let mut args = vec![Operand::Value(self.map), Operand::Value(self.key)];
            if helper == h::MAP_UPDATE_ELEM {
                args.extend([Operand::Value(self.key), Operand::Imm(0)]);
            }
            Inst::Call { helper, args, dst }
        }
    }

    /// A helper call between the lookups (here a delete from the map) keeps both.
    #[test]
    fn a_call_in_between_keeps_the_second_lookup() {
        let mut k = OneKey::new();
        let at = SourceLoc::default();
        let e = k.f.entry;
        let (delete, second) = (k.call(h::MAP_DELETE_ELEM, None), k.lookup(k.r2));
        k.f.blocks[e].insts.extend([(delete, at), (second, at)]);
        k.f.blocks[e].term.0 = Terminator::Return(Operand::Value(k.r2));
        assert!(!reuse_lookups(&mut k.f, &mut Default::default()));
    }

    /// `m[k]` in one block; `k` written again, `m[k]` and an update of `m` in the next: the
    /// store clears what was available before the second lookup, and the update what the
    /// second made, so the cheap check rules out the data flow (which would find nothing);
    /// without the store, it cannot, and the second lookup is reused.
    #[test]
    fn a_lookup_after_a_store_into_its_key_cannot_be_reused() {
        let mut k = OneKey::new();
        let at = SourceLoc::default();
        let next = k.f.new_block();
        let e = k.f.entry;
        k.f.blocks[e].term.0 = Terminator::Jump(next);
        let store = Inst::StoreSlot {
            slot: k.slot,
            off: 0,
            src: Operand::Imm(5),
            size: runtime_bpf::isa::Size::DW,
        };
        let (second, update) = (k.lookup(k.r2), k.call(h::MAP_UPDATE_ELEM, None));
        k.f.blocks[next].insts = vec![(store, at), (second, at), (update, at)];
        k.f.blocks[next].term.0 = Terminator::Return(Operand::Value(k.r2));
        let may = |f: &Function| may_reuse(f, &defs(f, &f.def_counts()));
        assert!(!may(&k.f));
        assert!(!reuse_lookups(&mut k.f, &mut Default::default()));
        k.f.blocks[next].insts.remove(0);
        assert!(may(&k.f));
        assert!(reuse_lookups(&mut k.f, &mut Default::default()));
    }
}
