//! Which values the verifier keeps exact and different from one path to the next: a loop's
//! counter, and what is computed from it. `getstring`'s copy loop (`Lowerer::packet_words_copy`)
//! is walked by the verifier once for each different state that reaches it; when its offset or
//! length is computed from such a value (ua_filter's value, found at scan position `i` of a
//! 512-step loop), every position reaches the copy in a state of its own, and the walk of the
//! copy is multiplied by the positions (666,083 instructions processed against 20,573 with the
//! `load_bytes` helper, which walks the offset as any number).

use cranelift_entity::SecondaryMap;

use crate::ir::{Function, Inst, Operand, Slot, Value};

/// The values that may depend on a value holding a different constant on different paths:
/// one computed from constants only (no load, call or argument) and set in more than one
/// place, as a loop counter is.
pub(super) fn varying_values(f: &Function) -> SecondaryMap<Value, bool> {
    let defs = f.def_counts();
    // Constant-only values: the largest set closed under their definitions (so that a counter's
    // `n = t; t = n + 1` cycle stays in it).
    let mut constant: SecondaryMap<Value, bool> = f.value_map();
    for (v, c) in constant.iter_mut() {
        *c = defs[v] > 0;
    }
    let mut slot_constant: SecondaryMap<Slot, bool> = SecondaryMap::with_default(true);
    loop {
        let mut changed = false;
        for (_, b) in f.blocks.iter() {
            for (inst, _) in &b.insts {
                let keeps = match inst {
                    Inst::Const { .. } => true,
                    Inst::Mov { src, .. }
                    | Inst::Neg { src, .. }
                    | Inst::Bswap { src, .. }
                    | Inst::Zext { src, .. }
                    | Inst::Sext { src, .. } => constant[*src],
                    Inst::Bin { a, b, .. } => constant[*a] && operand(&constant, b, true),
                    Inst::LoadSlot { slot, .. } => slot_constant[*slot],
                    Inst::StoreSlot { slot, src, .. } => {
                        if !operand(&constant, src, true) && slot_constant[*slot] {
                            slot_constant[*slot] = false;
                            changed = true;
                        }
                        continue;
                    }
                    _ => false,
                };
                if let Some(d) = inst.def() {
                    if !keeps && constant[d] {
                        constant[d] = false;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Values computed from a constant-only value set in more than one place.
    let mut varies: SecondaryMap<Value, bool> = f.value_map();
    for (v, c) in constant.iter() {
        varies[v] = *c && defs[v] > 1;
    }
    let mut slot_varies: SecondaryMap<Slot, bool> = SecondaryMap::new();
    loop {
        let mut changed = false;
        for (_, b) in f.blocks.iter() {
            for (inst, _) in &b.insts {
                let from = match inst {
                    Inst::Mov { src, .. }
                    | Inst::Neg { src, .. }
                    | Inst::Bswap { src, .. }
                    | Inst::Zext { src, .. }
                    | Inst::Sext { src, .. } => varies[*src],
                    Inst::Bin { a, b, .. } => varies[*a] || operand(&varies, b, false),
                    Inst::LoadSlot { slot, .. } | Inst::LoadSlotIndexed { slot, .. } => slot_varies[*slot],
                    Inst::StoreSlot { slot, src, .. } => {
                        if operand(&varies, src, false) && !slot_varies[*slot] {
                            slot_varies[*slot] = true;
                            changed = true;
                        }
                        continue;
                    }
                    _ => false,
                };
                if let Some(d) = inst.def() {
                    if from && !varies[d] {
                        varies[d] = true;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    varies
}

/// `set`'s mark of a value operand; `imm` for an immediate.
fn operand(set: &SecondaryMap<Value, bool>, o: &Operand, imm: bool) -> bool {
    match o {
        Operand::Value(v) => set[*v],
        Operand::Imm(_) => imm,
    }
}
