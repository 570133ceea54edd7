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
//! or value size) or to a `load_bytes` helper as its destination (a write). Any other use of
//! the address (moved, computed with, passed elsewhere) counts as reading the whole slot.

use cranelift_entity::SecondaryMap;

use crate::ir::{Function, Inst, Operand, Slot, Value};
use runtime_bpf::helpers as h;

/// Key and value sizes of the module's maps, indexed like `Inst::MapAddr::map`.
pub type MapSizes = [(u32, u32)];

/// How many leading bytes of each slot some instruction may read.
fn read_extents(f: &Function, maps: &MapSizes) -> SecondaryMap<Slot, u32> {
    let defs = f.def_counts();
    // Single-definition addresses of slots and maps.
    let mut slot_addr: SecondaryMap<Value, Option<(Slot, u32)>> = f.value_map();
    let mut map_addr: SecondaryMap<Value, Option<u32>> = f.value_map();
    let mut need: SecondaryMap<Slot, u32> = SecondaryMap::new();
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            match inst {
                Inst::SlotAddr { dst, slot, off } if defs[*dst] == 1 => slot_addr[*dst] = Some((*slot, *off)),
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
                Inst::Store { base, src, off, .. } if slot_addr[*base].is_some() && *off >= 0 => {
                    if let Some(v) = value_of(src) {
                        whole(&mut need, v);
                    }
                }
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
                _ => {
                    for u in inst.uses() {
                        whole(&mut need, u);
                    }
                }
            }
        }
        for u in b.term.0.uses() {
            whole(&mut need, u);
        }
    }
    need
}

/// Removes stores into slots past every byte that is read, and stores that a later store in
/// the same block overwrites with nothing in between that could read the slot.
pub fn remove_dead_slot_stores(f: &mut Function, maps: &MapSizes) -> bool {
    let need = read_extents(f, maps);
    let mut changed = false;
    for (_, b) in f.blocks.iter_mut() {
        let before = b.insts.len();
        b.insts.retain(|(inst, _)| match inst {
            Inst::StoreSlot { slot, off, .. } => *off < need[*slot],
            _ => true,
        });
        let mut dead = vec![false; b.insts.len()];
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
        push(&mut f, Inst::SlotAddr { dst: p, slot, off: 0 });
        push(&mut f, Inst::MapAddr { dst: m, map: 0 });
        push(
            &mut f,
            Inst::Call {
                helper: h::MAP_LOOKUP_ELEM,
                args: vec![m.into(), p.into()],
                dst: Some(r),
            },
        );
        let e = f.entry;
        f.blocks[e].term.0 = Terminator::Return(r.into());
        assert!(remove_dead_slot_stores(&mut f, &[(64, 8)]));
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
        remove_dead_slot_stores(&mut f, &[]);
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
        assert!(remove_dead_slot_stores(&mut f, &[]));
        // a: both words; b: the overwritten zero at 0 and the unread words past 16 go.
        assert_eq!(stores(&f), vec![0, 8, 8, 0]);
    }
}
