//! Checks of `x + c` against a constant become checks of `x`.
//!
//! Lowering bounds every packet offset before it touches a pointer: `p:getuint16(at + 2)`
//! tests `at + 2 > MAX_PACKET_OFF` on a fresh value. The verifier learns the bound of that
//! fresh register only, not of `at`, so the next access of `at` (or `at + 4`) needs a test of
//! its own, and `packet_access` cannot send the accesses of `at` through one checked base
//! pointer, since nothing bounds `at` itself. Testing `at > MAX_PACKET_OFF - 2` instead is
//! the same test when `at + 2` cannot wrap (`at` non-negative), and it bounds `at`: for the
//! interval analysis, which then removes the later tests of `at`, and for the verifier, which
//! then accepts `data + at` with the constant in the access's offset, as C is written.

use cranelift_entity::SecondaryMap;

use crate::ir::{BinOp, Block, Function, Inst, Operand, Terminator, Value};
use runtime_bpf::isa::JmpOp;

/// The last instruction of `insts` that writes `t`, if it is `t = x + c` (`x` not `t`, `c`
/// a constant) and `x` is not written after it.
fn sum_of(insts: &[(Inst, runtime_bpf::object::SourceLoc)], t: Value) -> Option<(Value, i64)> {
    let at = insts.iter().rposition(|(i, _)| i.def() == Some(t))?;
    let Inst::Bin {
        op: BinOp::Add,
        a: x,
        b: Operand::Imm(c),
        ..
    } = insts[at].0
    else {
        return None;
    };
    let rewritten = insts[at + 1..].iter().any(|(i, _)| i.def() == Some(x));
    (x != t && !rewritten).then_some((x, c))
}

/// Rewrites the unsigned comparisons `x + c op k` that end blocks into `x op k - c`.
/// `ends`: `ranges::end_states` of `f` (sound while branches are only removed since).
pub fn compare_roots(f: &mut Function, ends: &SecondaryMap<Block, Option<crate::ranges::State>>) -> bool {
    let mut changed = false;
    let blocks: Vec<Block> = f.blocks.keys().collect();
    for b in blocks {
        let Some(state) = &ends[b] else { continue };
        let Terminator::Branch {
            op: op @ (JmpOp::Jgt | JmpOp::Jge | JmpOp::Jlt | JmpOp::Jle),
            a: t,
            b: Operand::Imm(k),
            then_,
            else_,
        } = f.blocks[b].term.0
        else {
            continue;
        };
        let Some((x, c)) = sum_of(&f.blocks[b].insts, t) else {
            continue;
        };
        // `x` in [0, i64::MAX] and 0 <= c <= k: `x + c` does not wrap as an unsigned number,
        // and `x + c op k` is `x op k - c` with both sides non-negative.
        let x_non_negative = state.get(&x).is_some_and(|r| r.lo >= 0);
        if !(x_non_negative && c > 0 && c <= k) {
            continue;
        }
        f.blocks[b].term.0 = Terminator::Branch {
            op,
            a: x,
            b: Operand::Imm(k - c),
            then_,
            else_,
        };
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ValueKind;
    use runtime_bpf::isa::Size;

    /// `x = <u16 load>; t = x + c; if t > k then err else ok`.
    fn checked_sum(c: i64, k: i64, load: Size) -> (Function, Value) {
        let mut f = Function::new("t");
        let err = f.new_block();
        let ok = f.new_block();
        let p = f.new_value(ValueKind::Pointer);
        let x = f.new_value(ValueKind::Scalar);
        let t = f.new_value(ValueKind::Scalar);
        let e = f.entry;
        let loc = Default::default();
        f.blocks[e].insts.push((Inst::Arg { dst: p, index: 0 }, loc));
        f.blocks[e].insts.push((
            Inst::Load {
                dst: x,
                base: p,
                off: 0,
                size: load,
            },
            loc,
        ));
        f.blocks[e].insts.push((
            Inst::Bin {
                op: BinOp::Add,
                dst: t,
                a: x,
                b: Operand::Imm(c),
            },
            loc,
        ));
        f.blocks[e].term.0 = Terminator::Branch {
            op: JmpOp::Jgt,
            a: t,
            b: Operand::Imm(k),
            then_: err,
            else_: ok,
        };
        (f, x)
    }

    #[test]
    fn a_checked_sum_checks_its_non_negative_term() {
        let (mut f, x) = checked_sum(2, 0xfff0, Size::W);
        let ends = crate::ranges::end_states(&f);
        assert!(compare_roots(&mut f, &ends));
        let Terminator::Branch { a, b, .. } = f.blocks[f.entry].term.0 else {
            panic!("a branch")
        };
        assert_eq!((a, b), (x, Operand::Imm(0xfff0 - 2)));
    }

    #[test]
    fn a_term_that_may_be_negative_keeps_the_check_on_the_sum() {
        // A 64-bit load may be negative: `x + 2` may wrap to a small number that passes.
        let (mut f, _) = checked_sum(2, 0xfff0, Size::DW);
        let ends = crate::ranges::end_states(&f);
        assert!(!compare_roots(&mut f, &ends));
    }

    #[test]
    fn a_constant_above_the_bound_keeps_the_check() {
        let (mut f, _) = checked_sum(20, 10, Size::B);
        let ends = crate::ranges::end_states(&f);
        assert!(!compare_roots(&mut f, &ends));
    }
}
