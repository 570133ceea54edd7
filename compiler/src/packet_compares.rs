//! Comparisons with the packet length become comparisons of packet pointers.
//!
//! `if at + 14 > #p then break end` compares two scalars, `at + 14` and `data_end - data`.
//! The verifier learns a bound on the length from each such test, and because `at` is also
//! added to `data` (which makes it precise), the length becomes precise too: every scan
//! iteration then leaves a length with a slightly different lower bound, states stop
//! matching, and the verifier walks each iteration several times. Compared as pointers,
//! `data + at + 14 > data_end`, the test says nothing about a scalar, as in C.
//!
//! A test against a constant, `if #p < 54 then return end` (the usual "is the packet long
//! enough" guard), becomes `data + 54 > data_end`: the lowering's own bounds-check form, so
//! `packet_access` takes it as the check of every access within 54 bytes after it, as in C.
//! As a length compare it bounded no pointer, and each access checked again.
//!
//! Only where the interval analysis proves the offset within [0, MAX_PACKET_OFF] (so the
//! pointer arithmetic is one the verifier accepts); the signed and unsigned orders agree
//! there because the length is never negative.

use crate::ir::{Block, Function, Inst, Operand, Terminator, Value, ValueKind};
use crate::lower::MAX_PACKET_OFF;
use cranelift_entity::SecondaryMap;
use runtime_bpf::isa::JmpOp;

/// `data` and `data_end` behind each value that holds `data_end - data` (or a copy of it).
fn packet_lengths(f: &Function) -> SecondaryMap<Value, Option<(Value, Value)>> {
    let counts = f.def_counts();
    let pointer_once = |v: Value| f.values[v] == ValueKind::Pointer && counts[v] == 1;
    let mut len: SecondaryMap<Value, Option<(Value, Value)>> = f.value_map();
    for (_, b) in f.blocks.iter() {
        for w in b.insts.windows(2) {
            if let (
                Inst::Mov { dst, src: end },
                Inst::Bin {
                    op: crate::ir::BinOp::Sub,
                    dst: d2,
                    a,
                    b: Operand::Value(data),
                },
            ) = (&w[0].0, &w[1].0)
            {
                if dst == d2 && a == dst && counts[*dst] == 2 && pointer_once(*end) && pointer_once(*data) {
                    len[*dst] = Some((*data, *end));
                }
            }
        }
    }
    // Single-definition copies (`local len = #p`).
    for (_, b) in f.blocks.iter() {
        for (inst, _) in &b.insts {
            if let Inst::Mov { dst, src } = inst {
                if counts[*dst] == 1 && len[*dst].is_none() {
                    len[*dst] = len[*src];
                }
            }
        }
    }
    len
}

fn unsigned(op: JmpOp) -> Option<JmpOp> {
    Some(match op {
        JmpOp::Jgt | JmpOp::Jsgt => JmpOp::Jgt,
        JmpOp::Jge | JmpOp::Jsge => JmpOp::Jge,
        JmpOp::Jlt | JmpOp::Jslt => JmpOp::Jlt,
        JmpOp::Jle | JmpOp::Jsle => JmpOp::Jle,
        _ => return None,
    })
}

/// `ends`: `ranges::end_states` of `f` (sound while branches are only removed since).
pub fn compare_packet_pointers(f: &mut Function, ends: &SecondaryMap<Block, Option<crate::ranges::State>>) -> bool {
    let len = packet_lengths(f);
    // The interval analysis is the expensive part: only when some branch tests a length.
    let candidate = f.blocks.values().any(|d| match d.term.0 {
        Terminator::Branch {
            op,
            a,
            b: Operand::Value(o),
            ..
        } => unsigned(op).is_some() && (len[a].is_some() != len[o].is_some()),
        Terminator::Branch {
            op,
            a,
            b: Operand::Imm(k),
            ..
        } => unsigned(op).is_some() && len[a].is_some() && (0..=MAX_PACKET_OFF).contains(&k),
        _ => false,
    });
    if !candidate {
        return false;
    }
    // A length test against a constant inside a loop stays a length test: its scalar bound
    // is what lets the verifier decide the loop's other tests (`while n ~= len do if len > 1
    // then n = n + 1 end end` walks every hidden-bound iteration without it).
    let in_loop = crate::opt::laid_out_in_loops(f, &f.reverse_postorder());
    let mut changed = false;
    let blocks: Vec<_> = f.blocks.keys().collect();
    for b in blocks {
        let Some(state) = &ends[b] else { continue };
        let Terminator::Branch {
            op,
            a,
            b: other,
            then_,
            else_,
        } = f.blocks[b].term.0
        else {
            continue;
        };
        let Some(uop) = unsigned(op) else { continue };
        // `offset op len`, `len op offset`, or `len op k` (`if #p < 54 then return end`,
        // which then bounds the accesses after it as `data + 54 > data_end` does).
        let (offset, (data, end), len_on_right) = match (len[a], other) {
            (Some(p), Operand::Imm(k)) if (0..=MAX_PACKET_OFF).contains(&k) && !in_loop[b] => {
                (Operand::Imm(k), p, false)
            }
            (None, Operand::Value(o)) => match len[o] {
                Some(p) => (Operand::Value(a), p, true),
                None => continue,
            },
            (Some(p), Operand::Value(o)) if len[o].is_none() => (Operand::Value(o), p, false),
            _ => continue,
        };
        let within = match offset {
            Operand::Imm(_) => true,
            Operand::Value(v) => state.get(&v).is_some_and(|r| r.lo >= 0 && r.hi <= MAX_PACKET_OFF),
        };
        if !within {
            continue;
        }
        let t = f.values.push(ValueKind::Pointer);
        let loc = f.blocks[b].term.1;
        f.blocks[b].insts.push((Inst::Mov { dst: t, src: data }, loc));
        f.blocks[b].insts.push((
            Inst::Bin {
                op: crate::ir::BinOp::Add,
                dst: t,
                a: t,
                b: offset,
            },
            loc,
        ));
        // Always `data + offset op data_end` (`len < k` is `data + k > data_end`): the form
        // of the lowering's own bounds checks, which packet_access then takes as covering
        // the accesses after it.
        f.blocks[b].term.0 = Terminator::Branch {
            op: if len_on_right { uop } else { uop.swap() },
            a: t,
            b: Operand::Value(end),
            then_,
            else_,
        };
        changed = true;
    }
    changed
}
