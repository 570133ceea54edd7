//! Which values the verifier keeps exact and different from one path to the next: a loop's
//! counter, and what is computed from it. `getstring`'s copy loop (`Lowerer::packet_words_copy`)
//! is walked by the verifier once for each different state that reaches it; when its offset or
//! length is computed from such a value (ua_filter's value, found at scan position `i` of a
//! 512-step loop), every position reaches the copy in a state of its own, and the walk of the
//! copy is multiplied by the positions (666,083 instructions processed against 20,573 with the
//! `load_bytes` helper, which walks the offset as any number).

use cranelift_entity::SecondaryMap;

use crate::ir::{Function, Inst, Slot, Value};

/// The values that may depend on a value holding a different constant on different paths:
/// one computed from constants only (no load, call or argument) and set in more than one
/// place, as a loop counter is.
pub(super) fn varying_values(f: &Function) -> SecondaryMap<Value, bool> {
    let defs = f.def_counts();
    // Constant-only values: the largest set closed under their definitions (so that a counter's
    // `n = t; t = n + 1` cycle stays in it). An immediate operand is no use, so arithmetic on
    // constants and immediates keeps a value in.
    let mut constant: SecondaryMap<Value, bool> = f.value_map();
    for (v, c) in constant.iter_mut() {
        *c = defs[v] > 0;
    }
    let mut slot_constant: SecondaryMap<Slot, bool> = SecondaryMap::with_default(true);
    propagate(f, |inst| {
        let stays = match inst {
            Inst::Const { .. } => true,
            _ if is_arithmetic(inst) => all_uses(inst, &constant),
            Inst::LoadSlot { slot, .. } => slot_constant[*slot],
            Inst::StoreSlot { slot, .. } => {
                let changed = slot_constant[*slot] && !all_uses(inst, &constant);
                slot_constant[*slot] &= !changed;
                return changed;
            }
            _ => false,
        };
        match inst.def() {
            Some(d) if !stays && constant[d] => {
                constant[d] = false;
                true
            }
            _ => false,
        }
    });
    // Values computed from a constant-only value set in more than one place.
    let mut varies: SecondaryMap<Value, bool> = f.value_map();
    for (v, c) in constant.iter() {
        varies[v] = *c && defs[v] > 1;
    }
    let mut slot_varies: SecondaryMap<Slot, bool> = SecondaryMap::new();
    propagate(f, |inst| {
        let from = match inst {
            _ if is_arithmetic(inst) => any_use(inst, &varies),
            Inst::LoadSlot { slot, .. } | Inst::LoadSlotIndexed { slot, .. } => slot_varies[*slot],
            Inst::StoreSlot { slot, .. } => {
                let changed = !slot_varies[*slot] && any_use(inst, &varies);
                slot_varies[*slot] |= changed;
                return changed;
            }
            _ => false,
        };
        match inst.def() {
            Some(d) if from && !varies[d] => {
                varies[d] = true;
                true
            }
            _ => false,
        }
    });
    varies
}

/// Runs `step` over every instruction until a whole pass changes nothing.
fn propagate(f: &Function, mut step: impl FnMut(&Inst) -> bool) {
    let mut changed = true;
    while changed {
        changed = false;
        for (_, b) in f.blocks.iter() {
            for (inst, _) in &b.insts {
                changed |= step(inst);
            }
        }
    }
}

/// A copy, unary or binary operation: its value follows from its operands alone.
fn is_arithmetic(inst: &Inst) -> bool {
    matches!(
        inst,
        Inst::Mov { .. }
            | Inst::Neg { .. }
            | Inst::Bswap { .. }
            | Inst::Zext { .. }
            | Inst::Sext { .. }
            | Inst::Bin { .. }
    )
}

fn all_uses(inst: &Inst, set: &SecondaryMap<Value, bool>) -> bool {
    let mut all = true;
    inst.each_use(|u| all &= set[u]);
    all
}

fn any_use(inst: &Inst, set: &SecondaryMap<Value, bool>) -> bool {
    let mut any = false;
    inst.each_use(|u| any |= set[u]);
    any
}
