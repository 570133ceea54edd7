//! Loop exits that `emit` starts with `ja +0`, a jump to the next instruction.
//!
//! Why: the verifier walks a bounded loop position by position, and compares the state it
//! has with the ones it saved only at prune points: conditional jumps and jump targets. A
//! block that leaves the loop (a scan's "found it" path) and is entered by falling through
//! from the loop's test is neither, so for every position the verifier walks it up to its
//! next prune point before it can see that it has been there before (the loop counter is
//! dead once the loop is left, so the states are equal). `ja +0` makes the block's first
//! instruction a jump target: the state is compared on arrival and pruned. The verifier
//! removes `ja +0` once it has checked the program (`opt_remove_nops`), so the JIT never
//! sees it. ua_filter's 512-byte scan: 40,094 instructions processed without, far fewer
//! with (tests/verifier_counts.txt).
//!
//! Laying the exit out after the loop instead would make it a jump target too, but changes
//! the order in which the verifier explores: it then sees the exits of the last positions
//! first, whose offsets have the narrowest ranges and so cover none of the earlier ones
//! (sni_filter's extension loop cost 1.6 times as much).

use crate::ir::{Block, Function, Terminator};
use cranelift_entity::SecondaryMap;

/// The blocks of `order` (a layout: each block is emitted after the one before it) that get
/// a `ja +0`: those that leave a loop, whose only predecessor is the block laid out just
/// before them, ending in a conditional branch inside that loop: a `break` or `return` in the
/// loop's body. Not the loop's own exit, from its header's test or its last test (the branch
/// that jumps back), which a counted loop leaves once, at its bound.
pub fn blocks(f: &Function, order: &[Block]) -> SecondaryMap<Block, bool> {
    let mut hints = SecondaryMap::new();
    let preds = crate::facts::PredLists::new(f, order);
    let loops = loops(f, order, &preds);
    for (i, pair) in order.windows(2).enumerate() {
        let (prev, b) = (pair[0], pair[1]);
        let Terminator::Branch { then_, else_, .. } = &f.blocks[prev].term.0 else {
            continue;
        };
        let jumps_back = [then_, else_].iter().any(|s| order[..=i].contains(s));
        let falls_through = then_ != else_ && (*then_ == b || *else_ == b);
        if falls_through
            && !jumps_back
            && preds[b].len() == 1
            && loops
                .iter()
                .any(|(header, body)| body[prev] && !body[b] && prev != *header)
        {
            hints[b] = true;
        }
    }
    hints
}

/// The one block outside the loop `(header, body)` that enters it, if it only jumps to the
/// header: where code run once before the loop goes.
pub(crate) fn preheader(
    f: &Function,
    preds: &crate::facts::PredLists,
    header: Block,
    body: &SecondaryMap<Block, bool>,
) -> Option<Block> {
    let outside: Vec<Block> = preds[header].iter().copied().filter(|&p| !body[p]).collect();
    match outside[..] {
        [pre] if f.blocks[pre].term.0 == Terminator::Jump(header) => Some(pre),
        _ => None,
    }
}

/// The body of each loop: for each block that an edge jumps back to (in `order`), the blocks
/// that reach such an edge without passing through it (its natural loop).
pub(crate) fn loops(
    f: &Function,
    order: &[Block],
    preds: &crate::facts::PredLists,
) -> Vec<(Block, SecondaryMap<Block, bool>)> {
    let mut pos: SecondaryMap<Block, usize> = SecondaryMap::with_default(usize::MAX);
    for (i, &b) in order.iter().enumerate() {
        pos[b] = i;
    }
    let mut headers: Vec<(Block, Vec<Block>)> = Vec::new();
    for &b in order {
        for s in f.blocks[b].term.0.successors() {
            if pos[s] <= pos[b] {
                match headers.iter_mut().find(|(h, _)| *h == s) {
                    Some((_, latches)) => latches.push(b),
                    None => headers.push((s, vec![b])),
                }
            }
        }
    }
    headers
        .into_iter()
        .map(|(header, latches)| {
            let mut body: SecondaryMap<Block, bool> = SecondaryMap::new();
            body[header] = true;
            let mut work = latches;
            while let Some(b) = work.pop() {
                if !body[b] {
                    body[b] = true;
                    work.extend(preds[b].iter().copied());
                }
            }
            (header, body)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ir::{BinOp, Inst, Operand, Value, ValueKind};
    use runtime_bpf::isa::JmpOp;
    use runtime_bpf::object::SourceLoc;

    /// `if a == k then then_ else else_`.
    pub(crate) fn branch(a: Value, k: i64, then_: Block, else_: Block) -> Terminator {
        Terminator::Branch {
            op: JmpOp::Jeq,
            a,
            b: Operand::Imm(k),
            then_,
            else_,
        }
    }

    /// `for i = 0, 9 do <test> end return 0` with the body's `test` built by `body`; returns
    /// the function and its blocks [head, body, next, done].
    pub(crate) fn counted_loop(
        body_term: impl FnOnce(&mut Function, Value, [Block; 4]) -> Terminator,
    ) -> (Function, [Block; 4]) {
        let mut f = Function::new("t");
        let (x, i) = (f.new_value(ValueKind::Scalar), f.new_value(ValueKind::Scalar));
        let blocks @ [head, body, next, done] = [(); 4].map(|_| f.new_block());
        let at = SourceLoc::default();
        let e = f.entry;
        f.blocks[e].insts.push((Inst::Arg { dst: x, index: 0 }, at));
        f.blocks[e].insts.push((Inst::Const { dst: i, imm: 0 }, at));
        f.blocks[e].term.0 = Terminator::Jump(head);
        f.blocks[head].term.0 = Terminator::Branch {
            op: JmpOp::Jslt,
            a: i,
            b: Operand::Imm(10),
            then_: body,
            else_: done,
        };
        let add = Inst::Bin {
            op: BinOp::Add,
            dst: i,
            a: i,
            b: Operand::Imm(1),
        };
        f.blocks[next].insts.push((add, at));
        f.blocks[next].term.0 = Terminator::Jump(head);
        f.blocks[done].term.0 = Terminator::Return(Operand::Imm(0));
        f.blocks[body].term.0 = body_term(&mut f, x, blocks);
        (f, blocks)
    }

    /// `for i = 0, 9 do if x == 7 then return 1 end end return 0`: the `return 1` block, laid
    /// out after the body's test and entered only from it, gets the hint; the block after the
    /// loop (the header's test leaves the loop there once, at the bound) does not.
    #[test]
    fn a_return_inside_a_loop_gets_a_hint_the_loop_exit_does_not() {
        let mut found = None;
        let (f, [_, body, _, _]) = counted_loop(|f, x, [_, _, next, _]| {
            let b = f.new_block();
            f.blocks[b].term.0 = Terminator::Return(Operand::Imm(1));
            found = Some(b);
            branch(x, 7, b, next)
        });
        let found = found.unwrap();
        let order = f.reverse_postorder();
        let at_found = order.iter().position(|&b| b == found).unwrap();
        assert_eq!(order[at_found - 1], body, "{order:?}");
        let hints = blocks(&f, &order);
        assert_eq!(
            order.iter().filter(|&&b| hints[b]).copied().collect::<Vec<_>>(),
            vec![found]
        );
    }

    /// Without a loop no block gets a hint.
    #[test]
    fn without_a_loop_no_block_gets_a_hint() {
        let mut f = Function::new("t");
        let x = f.new_value(ValueKind::Scalar);
        let (one, two) = (f.new_block(), f.new_block());
        let at = SourceLoc::default();
        let e = f.entry;
        f.blocks[e].insts.push((Inst::Arg { dst: x, index: 0 }, at));
        f.blocks[e].term.0 = branch(x, 1, one, two);
        f.blocks[one].term.0 = Terminator::Return(Operand::Imm(1));
        f.blocks[two].term.0 = Terminator::Return(Operand::Imm(2));
        let order = f.reverse_postorder();
        let hints = blocks(&f, &order);
        assert!(order.iter().all(|&b| !hints[b]));
    }
}
