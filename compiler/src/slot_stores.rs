//! Dead stores into stack slots.
//!
//! A string buffer is zeroed in full when it is made (a `getstring` with a run-time length
//! takes 256 bytes), but often only its first bytes are ever read: a map key reads the key's
//! size, a comparison with a 32-byte map string reads 32 bytes. Stores past the last byte any
//! use of the slot can read are removed, as are stores that a later store in the same block
//! overwrites before anything reads the slot. Each removed store is an instruction on every
//! run and, in a loop, an instruction the verifier walks once per iteration.
//!
//! A use is understood only when it is a `LoadSlot`, a `Load` through the slot's address, or
//! the slot's address passed to a map helper as the key or value (which reads the map's key
//! or value size) or to a `load_bytes` helper as its destination (a write), or an address that
//! only moves through the slot to store (`write_cursors`: `getstring`'s copy). Any other use of
//! the address (moved, computed with, passed elsewhere) counts as reading the whole slot.

use cranelift_entity::SecondaryMap;

use crate::ir::{BinOp, Block, Function, Inst, Operand, Slot, Value};
use runtime_bpf::helpers as h;
use runtime_bpf::isa::Size;

/// Key and value sizes of the module's maps, indexed like `Inst::MapAddr::map`.
pub type MapSizes = [(u32, u32)];

/// How many leading bytes of each slot some instruction may read.
fn read_extents(f: &Function, maps: &MapSizes, defs: &SecondaryMap<Value, u32>) -> SecondaryMap<Slot, u32> {
    // Single-definition addresses of slots and maps.
    let mut slot_addr: SecondaryMap<Value, Option<(Slot, u32)>> = f.value_map();
    let mut map_addr: SecondaryMap<Value, Option<u32>> = f.value_map();
    let mut need: SecondaryMap<Slot, u32> = SecondaryMap::new();
    need.resize(f.slots.len());
    let cursors = write_cursors(f, defs);
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            match inst {
                Inst::SlotAddr { dst, slot, off } if defs[*dst] == 1 => slot_addr[*dst] = Some((*slot, *off)),
                Inst::SlotAddr { dst, .. } if cursors[*dst] => {}
                // An address held in a value that is also written elsewhere (`p = &s; p = p + i`)
                // is not followed: whatever reads through it may read the whole slot.
                Inst::SlotAddr { slot, .. } => need[*slot] = f.slots[*slot].size,
                Inst::MapAddr { dst, map } if defs[*dst] == 1 => map_addr[*dst] = Some(*map),
                _ => {}
            }
        }
    }
    let read = |need: &mut SecondaryMap<Slot, u32>, slot: Slot, end: u32| {
        need[slot] = need[slot].max(end);
    };
    let whole = |need: &mut SecondaryMap<Slot, u32>, v: Value| {
        if let Some((slot, _)) = slot_addr[v] {
            need[slot] = f.slots[slot].size;
        }
    };
    let value_of = |o: &Operand| match o {
        Operand::Value(v) => Some(*v),
        Operand::Imm(_) => None,
    };
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            match inst {
                Inst::LoadSlot { slot, off, size, .. } => read(&mut need, *slot, off + size.bytes()),
                Inst::LoadSlotIndexed { slot, end, .. } => read(&mut need, *slot, *end),
                Inst::Load { base, off, size, .. } if slot_addr[*base].is_some() && *off >= 0 => {
                    let (slot, at) = slot_addr[*base].unwrap_or_else(|| unreachable!());
                    read(&mut need, slot, at + *off as u32 + size.bytes());
                }
                // A store through the address writes; its value operand is what escapes.
                Inst::Store { base, src, off, .. } if slot_addr[*base].is_some() && *off >= 0 || cursors[*base] => {
                    if let Some(v) = value_of(src) {
                        whole(&mut need, v);
                    }
                }
                Inst::Bin { dst, a, .. } if cursors[*dst] && *dst == *a => {}
                Inst::Call { helper, args, .. } => {
                    let map = args.first().and_then(value_of).and_then(|m| map_addr[m]);
                    for (i, a) in args.iter().enumerate() {
                        let Some(v) = value_of(a) else { continue };
                        let Some((slot, at)) = slot_addr[v] else { continue };
                        let sizes = map.and_then(|m| maps.get(m as usize));
                        match (*helper, i, sizes) {
                            (h::MAP_LOOKUP_ELEM | h::MAP_DELETE_ELEM | h::MAP_LOOKUP_PERCPU_ELEM, 1, Some((k, _)))
                            | (h::MAP_UPDATE_ELEM, 1, Some((k, _))) => read(&mut need, slot, at + k),
                            (h::MAP_UPDATE_ELEM, 2, Some((_, val))) => read(&mut need, slot, at + val),
                            (h::XDP_LOAD_BYTES | h::SKB_LOAD_BYTES, 2, _) => {}
                            _ => need[slot] = f.slots[slot].size,
                        }
                    }
                }
                _ => inst.each_use(|u| whole(&mut need, u)),
            }
        }
        for u in b.term.0.uses() {
            whole(&mut need, u);
        }
    }
    need
}

/// Values that walk a slot only to write it (`getstring`'s copy, `Lowerer::packet_words_copy`):
/// set once by a `SlotAddr`, otherwise only moved by `v = v + x`, and used only as the base
/// of stores and in those moves.
fn write_cursors(f: &Function, defs: &SecondaryMap<Value, u32>) -> SecondaryMap<Value, bool> {
    let mut cursor: SecondaryMap<Value, bool> = f.value_map();
    let mut addrs: SecondaryMap<Value, u32> = f.value_map();
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            if let Inst::SlotAddr { dst, .. } = inst {
                addrs[*dst] += 1;
                cursor[*dst] = defs[*dst] > 1;
            }
        }
    }
    let mut moves: SecondaryMap<Value, u32> = f.value_map();
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            match inst {
                Inst::Bin {
                    op: BinOp::Add,
                    dst,
                    a,
                    b: step,
                } if dst == a && cursor[*dst] && !matches!(step, Operand::Value(s) if cursor[*s]) => moves[*dst] += 1,
                Inst::Store { base, src, .. } if cursor[*base] => {
                    if let Operand::Value(v) = src {
                        cursor[*v] = false;
                    }
                }
                _ => inst.each_use(|u| cursor[u] = false),
            }
        }
        for u in b.term.0.uses() {
            cursor[u] = false;
        }
    }
    for (v, c) in cursor.iter_mut() {
        *c = *c && addrs[v] == 1 && defs[v] == 1 + moves[v];
    }
    cursor
}

/// The values that may point into the function's stack: slot addresses, arguments (a
/// caller's buffer), and what is computed from them, copied or returned by a BPF function
/// or kfunc given one; and any pointer loaded from memory once such a value is stored
/// somewhere. A
/// load through anything else (a map value, the packet) cannot read a slot: cookie_guard's
/// copy of a map string into a zeroed buffer overwrites the zeroing without a read between.
fn stack_pointers(f: &Function) -> SecondaryMap<Value, bool> {
    let mut stack: SecondaryMap<Value, bool> = f.value_map();
    let mut stored = false;
    loop {
        let mut changed = false;
        for (_, b) in f.blocks.iter() {
            for (inst, _) in &b.insts {
                let derived = match inst {
                    Inst::SlotAddr { .. } | Inst::Arg { .. } => true,
                    Inst::Mov { src, .. } => stack[*src],
                    Inst::Bin { a, b, .. } => stack[*a] || matches!(b, Operand::Value(v) if stack[*v]),
                    // A BPF function, or a kfunc (`bpf_dynptr_slice` returns the buffer it is
                    // given when the packet is not linear); helpers return map values and
                    // kernel objects only.
                    Inst::CallLocal { args, .. } | Inst::CallKfunc { args, .. } => {
                        args.iter().any(|a| matches!(a, Operand::Value(v) if stack[*v]))
                    }
                    Inst::Load { .. } | Inst::LoadSlot { .. } | Inst::LoadSlotIndexed { .. } => stored,
                    _ => false,
                };
                let escapes = match inst {
                    Inst::Store {
                        src: Operand::Value(v), ..
                    }
                    | Inst::StoreSlot {
                        src: Operand::Value(v), ..
                    }
                    | Inst::AtomicAdd { src: v, .. } => stack[*v],
                    _ => false,
                };
                if escapes && !stored {
                    stored = true;
                    changed = true;
                }
                if let Some(d) = inst.def() {
                    if derived && !stack[d] {
                        stack[d] = true;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            return stack;
        }
    }
}

/// Removes stores into slots past every byte that is read, and stores that a later store in
/// the same block overwrites with nothing in between that could read the slot.
pub fn remove_dead_slot_stores(f: &mut Function, maps: &MapSizes, known: &mut crate::facts::Facts) -> bool {
    let mut changed = remove_repeated_slot_stores(f, known);
    // (Stores write no value: the write counts are still those of `f` after the removals.)
    let need = read_extents(f, maps, known.defs(f));
    let stack = stack_pointers(f);
    // One buffer for every block's marks (a vector per block showed in profiles).
    let mut dead = Vec::new();
    for (_, b) in f.blocks.iter_mut() {
        let before = b.insts.len();
        b.insts.retain(|(inst, _)| match inst {
            Inst::StoreSlot { slot, off, .. } => *off < need[*slot],
            _ => true,
        });
        dead.clear();
        dead.resize(b.insts.len(), false);
        for (i, (inst, _)) in b.insts.iter().enumerate() {
            let Inst::StoreSlot { slot, off, size, .. } = inst else {
                continue;
            };
            let (start, end) = (*off, off + size.bytes());
            for (later, _) in &b.insts[i + 1..] {
                match later {
                    Inst::StoreSlot {
                        slot: s2,
                        off: o2,
                        size: z2,
                        ..
                    } if s2 == slot && *o2 <= start && o2 + z2.bytes() >= end => {
                        dead[i] = true;
                        break;
                    }
                    Inst::StoreSlot { .. }
                    | Inst::Const { .. }
                    | Inst::Mov { .. }
                    | Inst::Bin { .. }
                    | Inst::Neg { .. }
                    | Inst::Bswap { .. }
                    | Inst::Zext { .. }
                    | Inst::Sext { .. }
                    | Inst::MapAddr { .. }
                    | Inst::SlotAddr { .. } => {}
                    Inst::LoadSlot { slot: s2, .. } if s2 != slot => {}
                    Inst::Load { base, .. } if !stack[*base] => {}
                    _ => break,
                }
            }
        }
        let mut i = 0;
        b.insts.retain(|_| {
            i += 1;
            !dead[i - 1]
        });
        changed |= b.insts.len() != before;
    }
    changed
}

/// A store into a slot of what it already holds on every path: the same value (not written
/// since) or constant, at the same offset and size. A map key written before each of several
/// lookups of the same key (`blocked[saddr]`, later `blocked[saddr] = t`) is written once;
/// the key's value then need not stay live (in a spill slot) until the last lookup. Calls
/// (helpers and BPF functions alike) change only the slots whose address they are given,
/// and map helpers only read theirs; a store through a pointer may change any.
fn remove_repeated_slot_stores(f: &mut Function, known: &mut crate::facts::Facts) -> bool {
    // Only a store made twice can be a repeat (the first time a path reaches a store, nothing
    // has made it yet), so the data flow follows those stores' facts alone, as bits: most runs
    // (the pass runs in every round of the local passes) find none and stop here, and the
    // others follow a few facts, where a list of every store's fact per block, cloned at each
    // join, cost most of the local passes' instructions.
    let facts = repeated_stores(f);
    if facts.is_empty() {
        return false;
    }
    let (cfg, defs) = known.cfg_and_defs(f);
    let mut slot_addr: SecondaryMap<Value, Option<Slot>> = f.value_map();
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            if let Inst::SlotAddr { dst, slot, .. } = inst {
                if defs[*dst] == 1 {
                    slot_addr[*dst] = Some(*slot);
                }
            }
        }
    }
    // Values that may point into the stack: slot addresses and what is computed from them.
    let mut stack_ptr: SecondaryMap<Value, bool> = f.value_map();
    let mut grew = true;
    while grew {
        grew = false;
        for (_, b) in f.blocks.iter() {
            for (inst, _) in &b.insts {
                let from_stack = match inst {
                    Inst::SlotAddr { .. } => true,
                    // (Its reads visited in place: no list of them built per instruction.)
                    Inst::Mov { .. } | Inst::Bin { .. } => {
                        let mut any = false;
                        inst.each_use(|u| any |= stack_ptr[u]);
                        any
                    }
                    _ => false,
                };
                if let Some(d) = inst.def().filter(|d| from_stack && !stack_ptr[*d]) {
                    stack_ptr[d] = true;
                    grew = true;
                }
            }
        }
    }
    // A stack address stored in memory could come back from any load: no fact survives a call.
    let escapes = f.blocks.iter().any(|(_, b)| {
        b.insts.iter().any(|(inst, _)| match inst {
            Inst::Store {
                src: Operand::Value(v), ..
            }
            | Inst::StoreSlot {
                src: Operand::Value(v), ..
            } => stack_ptr[*v],
            _ => false,
        })
    });
    // The facts (bits, by place in `facts`) that hold on `slot`, or that hold `d`.
    let of_slot = |slot: Slot| bits(&facts, |(s, ..)| *s == slot);
    let holding = |d: Value| bits(&facts, |(.., src)| *src == Operand::Value(d));
    let step = |held: u64, inst: &Inst| -> u64 {
        // Only a store makes a fact: with none held, nothing else has any to clear (most
        // instructions, whose tests against every fact showed in profiles).
        if held == 0 && !matches!(inst, Inst::StoreSlot { .. }) {
            return 0;
        }
        match inst {
            Inst::StoreSlot { slot, off, src, size } => {
                let (start, end) = (*off, off + size.bytes());
                let overlapped = bits(&facts, |(s, o, z, _)| s == slot && o + z.bytes() > start && *o < end);
                let made = bits(&facts, |fact| *fact == (*slot, *off, *size, *src));
                (held & !overlapped) | made
            }
            Inst::Call { args, .. } | Inst::CallLocal { args, .. } | Inst::CallKfunc { args, .. } => {
                let reads_only = matches!(
                    inst,
                    Inst::Call {
                        helper: h::MAP_LOOKUP_ELEM
                            | h::MAP_UPDATE_ELEM
                            | h::MAP_DELETE_ELEM
                            | h::MAP_LOOKUP_PERCPU_ELEM,
                        ..
                    }
                );
                let mut held = held;
                for a in args {
                    let Operand::Value(v) = a else { continue };
                    match slot_addr[*v] {
                        _ if escapes => held = 0,
                        Some(slot) if !reads_only => held &= !of_slot(slot),
                        Some(_) => {}
                        None if stack_ptr[*v] && !reads_only => held = 0,
                        None => {}
                    }
                }
                match inst.def() {
                    Some(d) => held & !holding(d),
                    None => held,
                }
            }
            Inst::Store { .. } | Inst::AtomicAdd { .. } => 0,
            _ => match inst.def() {
                Some(d) => held & !holding(d),
                None => held,
            },
        }
    };
    let crate::facts::Cfg { order, preds, .. } = cfg;
    // Facts at each block's entry; None: not reached yet (everything holds).
    let mut entry: SecondaryMap<Block, Option<u64>> = f.block_map();
    let mut exit: SecondaryMap<Block, Option<u64>> = f.block_map();
    let mut changed_any = true;
    let mut rounds = 0;
    while changed_any && rounds < 20 {
        changed_any = false;
        rounds += 1;
        for &b in order {
            let held: Option<u64> = if b == f.entry {
                Some(0)
            } else {
                preds[b].iter().filter_map(|p| exit[*p]).reduce(|a, x| a & x)
            };
            if held == entry[b] && exit[b].is_some() {
                continue;
            }
            entry[b] = held;
            let out = held.map(|h| f.blocks[b].insts.iter().fold(h, |h, (inst, _)| step(h, inst)));
            if out != exit[b] {
                exit[b] = out;
                changed_any = true;
            }
        }
    }
    if changed_any {
        return false;
    }
    let mut changed = false;
    // One buffer for every block's marks.
    let mut keep = Vec::new();
    for &b in order {
        let Some(mut held) = entry[b] else { continue };
        keep.clear();
        for (inst, _) in &f.blocks[b].insts {
            let same = match inst {
                Inst::StoreSlot { slot, off, src, size } => {
                    held & bits(&facts, |fact| *fact == (*slot, *off, *size, *src)) != 0
                }
                _ => false,
            };
            keep.push(!same);
            held = step(held, inst);
        }
        if keep.contains(&false) {
            let mut k = 0;
            f.blocks[b].insts.retain(|_| {
                k += 1;
                keep[k - 1]
            });
            changed = true;
        }
    }
    changed
}

/// What a store into a slot leaves there: (slot, offset, size, stored operand).
type Fact = (Slot, u32, Size, Operand);

/// The facts that more than one store makes, at most 64 (each a bit of a `u64`; past those,
/// a repeat is kept, which is only a missed removal).
fn repeated_stores(f: &Function) -> Vec<Fact> {
    let key = |(slot, off, size, src): &Fact| {
        let src = match src {
            Operand::Value(v) => (0, v.as_u32() as i64),
            Operand::Imm(k) => (1, *k),
        };
        (slot.as_u32(), *off, size.bytes(), src)
    };
    let mut made: Vec<Fact> = f
        .blocks
        .values()
        .flat_map(|b| &b.insts)
        .filter_map(|(inst, _)| match inst {
            Inst::StoreSlot { slot, off, src, size } => Some((*slot, *off, *size, *src)),
            _ => None,
        })
        .collect();
    made.sort_unstable_by_key(key);
    let mut repeated: Vec<Fact> = made.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
    repeated.dedup();
    repeated.truncate(64);
    repeated
}

/// The bits of the facts that `test` accepts.
fn bits(facts: &[Fact], test: impl Fn(&Fact) -> bool) -> u64 {
    facts
        .iter()
        .enumerate()
        .filter(|(_, fact)| test(fact))
        .fold(0, |b, (i, _)| b | 1 << i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Terminator, ValueKind};
    use runtime_bpf::isa::Size;
    use runtime_bpf::object::SourceLoc;

    fn push(f: &mut Function, inst: Inst) {
        let e = f.entry;
        f.blocks[e].insts.push((inst, SourceLoc::default()));
    }

    fn zero(f: &mut Function, slot: Slot, n: u32) {
        for off in (0..n).step_by(8) {
            push(
                f,
                Inst::StoreSlot {
                    slot,
                    off,
                    src: Operand::Imm(0),
                    size: Size::DW,
                },
            );
        }
    }

    fn stores(f: &Function) -> Vec<u32> {
        f.blocks[f.entry]
            .insts
            .iter()
            .filter_map(|(i, _)| match i {
                Inst::StoreSlot { off, .. } => Some(*off),
                _ => None,
            })
            .collect()
    }

    /// `r = lookup(map 0, &slot)` (`p` the address, `m` the map), then `return r`.
    fn look_up_and_return(f: &mut Function, slot: Slot, (p, m, r): (Value, Value, Value)) {
        push(f, Inst::SlotAddr { dst: p, slot, off: 0 });
        push(f, Inst::MapAddr { dst: m, map: 0 });
        push(
            f,
            Inst::Call {
                helper: h::MAP_LOOKUP_ELEM,
                args: vec![m.into(), p.into()],
                dst: Some(r),
            },
        );
        let e = f.entry;
        f.blocks[e].term.0 = Terminator::Return(r.into());
    }

    /// A buffer filled through a pointer that moves along it and only stores (`getstring`'s
    /// copy) is still only read as the map key; a moving pointer that is also loaded through
    /// may read any byte, so the zeroing stays whole.
    #[test]
    fn a_pointer_that_only_stores_reads_nothing() {
        for also_loads in [false, true] {
            let mut f = Function::new("t");
            let slot = f.new_slot(256, 8);
            zero(&mut f, slot, 256);
            let (q, w, p, m, r) = (
                f.new_value(ValueKind::Pointer),
                f.new_value(ValueKind::Scalar),
                f.new_value(ValueKind::Pointer),
                f.new_value(ValueKind::Pointer),
                f.new_value(ValueKind::Pointer),
            );
            push(&mut f, Inst::SlotAddr { dst: q, slot, off: 0 });
            push(&mut f, Inst::Const { dst: w, imm: 0x41 });
            push(
                &mut f,
                Inst::Store {
                    base: q,
                    off: 0,
                    src: w.into(),
                    size: Size::DW,
                },
            );
            push(
                &mut f,
                Inst::Bin {
                    op: BinOp::Add,
                    dst: q,
                    a: q,
                    b: Operand::Imm(8),
                },
            );
            if also_loads {
                push(
                    &mut f,
                    Inst::Load {
                        dst: w,
                        base: q,
                        off: -8,
                        size: Size::DW,
                    },
                );
            }
            look_up_and_return(&mut f, slot, (p, m, r));
            remove_dead_slot_stores(&mut f, &[(64, 8)], &mut Default::default());
            let kept = if also_loads { 256 } else { 64 };
            assert_eq!(
                stores(&f),
                (0..kept).step_by(8).collect::<Vec<u32>>(),
                "loads: {also_loads}"
            );
        }
    }

    /// A map string copied into a zeroed buffer (cookie_guard's `expected`): the loads from
    /// the map value cannot read the buffer, so the copy's stores make the zeroing dead. A
    /// load through a stack address may read it, as may one through what a kfunc given a
    /// stack address returns (`bpf_dynptr_slice`'s buffer), and the zeroing stays.
    #[test]
    fn loads_from_a_map_value_do_not_read_the_stack() {
        for source in ["map value", "stack", "kfunc"] {
            let mut f = Function::new("t");
            let (slot, other) = (f.new_slot(16, 8), f.new_slot(16, 8));
            let v = |f: &mut Function, kind| f.new_value(kind);
            let (k, m, src) = (
                v(&mut f, ValueKind::Pointer),
                v(&mut f, ValueKind::Pointer),
                v(&mut f, ValueKind::Pointer),
            );
            let from_stack = source == "stack";
            push(
                &mut f,
                Inst::SlotAddr {
                    dst: if from_stack { src } else { k },
                    slot: other,
                    off: 0,
                },
            );
            let call = match source {
                "map value" => Some(Inst::Call {
                    helper: h::MAP_LOOKUP_ELEM,
                    args: vec![m.into(), k.into()],
                    dst: Some(src),
                }),
                "kfunc" => Some(Inst::CallKfunc {
                    name: "bpf_dynptr_slice".into(),
                    args: vec![k.into()],
                    dst: Some(src),
                }),
                _ => None,
            };
            push(&mut f, Inst::MapAddr { dst: m, map: 0 });
            if let Some(call) = call {
                push(&mut f, call);
            }
            zero(&mut f, slot, 16);
            for off in [0, 8] {
                let w = v(&mut f, ValueKind::Scalar);
                push(
                    &mut f,
                    Inst::Load {
                        dst: w,
                        base: src,
                        off: off as i16,
                        size: Size::DW,
                    },
                );
                push(
                    &mut f,
                    Inst::StoreSlot {
                        slot,
                        off,
                        src: w.into(),
                        size: Size::DW,
                    },
                );
            }
            let (p, m2, r) = (
                v(&mut f, ValueKind::Pointer),
                v(&mut f, ValueKind::Pointer),
                v(&mut f, ValueKind::Pointer),
            );
            look_up_and_return(&mut f, slot, (p, m2, r));
            remove_dead_slot_stores(&mut f, &[(16, 8)], &mut Default::default());
            let want: &[u32] = if source == "map value" { &[0, 8] } else { &[0, 8, 0, 8] };
            assert_eq!(stores(&f), want, "loads through a {source}");
        }
    }

    /// A 256-byte string buffer used only as the key of a map with 64-byte keys: only the
    /// key's 64 bytes need zeroing.
    #[test]
    fn zeroing_stops_at_the_map_key_size() {
        let mut f = Function::new("t");
        let slot = f.new_slot(256, 8);
        zero(&mut f, slot, 256);
        let (p, m, r) = (
            f.new_value(ValueKind::Pointer),
            f.new_value(ValueKind::Pointer),
            f.new_value(ValueKind::Pointer),
        );
        look_up_and_return(&mut f, slot, (p, m, r));
        assert!(remove_dead_slot_stores(&mut f, &[(64, 8)], &mut Default::default()));
        assert_eq!(stores(&f), vec![0, 8, 16, 24, 32, 40, 48, 56]);
    }

    /// `p = &slot; p = p + i; load [p]` (how `s:byte(i)` reads a string): the address is
    /// written twice, so it is not followed, and every store into the slot stays. (The pass
    /// once ignored such addresses and dropped the copy of an inlined function's string.)
    #[test]
    fn an_address_written_twice_keeps_every_store() {
        let mut f = Function::new("t");
        let slot = f.new_slot(16, 8);
        zero(&mut f, slot, 16);
        let (p, x) = (f.new_value(ValueKind::Pointer), f.new_value(ValueKind::Scalar));
        push(&mut f, Inst::SlotAddr { dst: p, slot, off: 0 });
        push(
            &mut f,
            Inst::Bin {
                op: crate::ir::BinOp::Add,
                dst: p,
                a: p,
                b: Operand::Imm(3),
            },
        );
        push(
            &mut f,
            Inst::Load {
                dst: x,
                base: p,
                off: 0,
                size: Size::B,
            },
        );
        let e = f.entry;
        f.blocks[e].term.0 = Terminator::Return(x.into());
        remove_dead_slot_stores(&mut f, &[], &mut Default::default());
        assert_eq!(stores(&f), vec![0, 8]);
    }

    /// An address that escapes (here: returned) keeps every store; word reads keep the words
    /// they read; a store overwritten before any read goes.
    #[test]
    fn escaping_addresses_and_reads_keep_their_stores() {
        let mut f = Function::new("t");
        let (a, b) = (f.new_slot(16, 8), f.new_slot(32, 8));
        zero(&mut f, a, 16);
        zero(&mut f, b, 32);
        push(
            &mut f,
            Inst::StoreSlot {
                slot: b,
                off: 0,
                src: Operand::Imm(7),
                size: Size::DW,
            },
        );
        let (p, w) = (f.new_value(ValueKind::Pointer), f.new_value(ValueKind::Scalar));
        push(
            &mut f,
            Inst::LoadSlot {
                dst: w,
                slot: b,
                off: 8,
                size: Size::DW,
            },
        );
        push(
            &mut f,
            Inst::SlotAddr {
                dst: p,
                slot: a,
                off: 0,
            },
        );
        let e = f.entry;
        f.blocks[e].term.0 = Terminator::Return(p.into());
        assert!(remove_dead_slot_stores(&mut f, &[], &mut Default::default()));
        // a: both words; b: the overwritten zero at 0 and the unread words past 16 go.
        assert_eq!(stores(&f), vec![0, 8, 8, 0]);
    }

    /// A map key stored again before a second lookup is stored once; after a helper writes
    /// the slot (`load_bytes` into it) the store is made again.
    #[test]
    fn a_key_stored_again_unchanged_is_stored_once() {
        let mut f = Function::new("t");
        let key = f.new_slot(8, 8);
        let [ctx, k, p, m] = [0; 4].map(|_| f.new_value(ValueKind::Pointer));
        let [r1, r2, r3] = [0; 3].map(|_| f.new_value(ValueKind::Scalar));
        let store = Inst::StoreSlot {
            slot: key,
            off: 0,
            src: Operand::Value(k),
            size: Size::DW,
        };
        let lookup = |dst| Inst::Call {
            helper: h::MAP_LOOKUP_ELEM,
            args: vec![Operand::Value(m), Operand::Value(p)],
            dst: Some(dst),
        };
        push(&mut f, Inst::Arg { dst: ctx, index: 0 });
        push(&mut f, Inst::Arg { dst: k, index: 1 });
        push(
            &mut f,
            Inst::SlotAddr {
                dst: p,
                slot: key,
                off: 0,
            },
        );
        push(&mut f, Inst::MapAddr { dst: m, map: 0 });
        for inst in [store.clone(), lookup(r1), store.clone(), lookup(r2)] {
            push(&mut f, inst);
        }
        push(
            &mut f,
            Inst::Call {
                helper: h::XDP_LOAD_BYTES,
                args: vec![Operand::Value(ctx), Operand::Imm(0), Operand::Value(p), Operand::Imm(8)],
                dst: Some(r3),
            },
        );
        push(&mut f, store.clone());
        push(&mut f, lookup(r3));
        assert!(remove_dead_slot_stores(&mut f, &[(8, 8)], &mut Default::default()));
        let stores = f.blocks[f.entry].insts.iter().filter(|(i, _)| *i == store).count();
        assert_eq!(stores, 2, "{}", crate::ir::display(&f));
    }
}
