//! The order `emit` lays blocks out in: reverse post-order, then two moves of the blocks that
//! only return a constant (runtime errors, `return action.PASS`), each made only when it
//! costs no instruction; last, loops' latches before their headers
//! (`latches_before_headers`, which `emit` applies after choosing the prune hints).
//!
//! - Outside loops, a shared `return k` goes right after the last block that ends in its own
//!   `return k`, which then falls into it (one `r0 = k; exit` less); a map lookup's null test
//!   jumps there and the found path falls through, as clang lays it out.
//! - Inside a loop, such a block goes to the end. Reverse post-order puts it right after the
//!   first branch that reaches it: when that branch is a byte loop's bounds check (whose
//!   failure is a runtime error), every iteration jumps over the `r0 = k; exit` it does not
//!   take, two taken jumps per iteration instead of one. ua_filter's `value_length` (up to 64
//!   bytes, the User-Agent), when its loop still had such a check, ran 3-5% of the whole
//!   packet's time faster with its error exit laid out after the function (BPF_PROG_TEST_RUN,
//!   interleaved, noisy). At the end the block
//!   is reached by a jump taken once, when the program leaves. The branch that fell into it
//!   jumps to it instead and falls through to its other side, laid out next in reverse
//!   post-order.

use crate::ir::{Block, Function, Terminator};
use cranelift_entity::SecondaryMap;

/// `f`'s blocks in emission order (the entry first).
pub fn order(f: &Function) -> Vec<Block> {
    loop_returns_last(f, shared_returns_after_twins(f, f.reverse_postorder()))
}

/// `order` with each loop's latch (the block whose conditional branch goes back to its
/// header, laid out earlier, and otherwise on, later) moved to just before the header, when
/// it is entered by jumps only: it then falls into the header, and only the way out of the
/// loop jumps. One taken jump less per iteration, for one `ja` over the latch where the loop
/// is entered. cookie_guard's 512-byte scan jumps to its latch from each failed compare; with
/// the latch after the loop body, each position took two taken jumps, and the program ran
/// 1.06-1.56x clang's time on an AMD EPYC host (clang lays the latch out before the header);
/// with the latch before it, 0.90-0.92 (BPF_PROG_TEST_RUN, 21 rounds; perf put the
/// difference in the scan loop, not in helpers).
///
/// Applied after `prune_hints` chose its blocks on the loops' reverse post-order shape: the
/// moves keep each marked block right after the branch that falls into it.
pub fn latches_before_headers(f: &Function, order: Vec<Block>) -> Vec<Block> {
    // Back edges and fall-throughs as laid out before any move (a moved latch is not a
    // header for the blocks that jump to it).
    let mut at: SecondaryMap<Block, usize> = f.block_map();
    for (i, &b) in order.iter().enumerate() {
        at[b] = i;
    }
    let mut moved = order.clone();
    for (i, &l) in order.iter().enumerate().skip(1) {
        let header = match f.blocks[l].term.0 {
            Terminator::Branch { then_, else_, .. } => match (at[then_], at[else_]) {
                (t, e) if t < i && e > i => Some(then_),
                (t, e) if e < i && t > i => Some(else_),
                _ => None,
            },
            _ => None,
        };
        let entered_by_jumps = !f.blocks[order[i - 1]].term.0.successors().contains(&l);
        if let Some(h) = header.filter(|&h| entered_by_jumps && at[h] > 0) {
            moved.retain(|&b| b != l);
            let to = moved.iter().position(|&b| b == h).unwrap_or(moved.len());
            moved.insert(to, l);
        }
    }
    moved
}

/// `order` with each shared `return k` block (`opt::share_returns`) moved to just after the
/// last other block that ends in `return k`, whose return then falls into it (`term`): one
/// `r0 = k; exit` less. A map lookup's null
/// test then jumps to the shared return and the found path falls through, as clang lays it
/// out. Only when no path gets longer: every jump to the shared block stays a forward jump,
/// and the block that used to fall into it still falls through (into what followed it).
/// Not inside a loop's layout, for the reason `share_returns` gives.
fn shared_returns_after_twins(f: &Function, mut order: Vec<Block>) -> Vec<Block> {
    let in_loop = crate::opt::laid_out_in_loops(f, &order);
    let preds = crate::facts::PredLists::new(f, &order);
    let shared: Vec<Block> = order
        .iter()
        .copied()
        .filter(|&b| f.returned_constant(b).is_some() && !in_loop[b])
        .collect();
    let mut at: SecondaryMap<Block, usize> = SecondaryMap::new();
    for s in shared {
        for (i, &b) in order.iter().enumerate() {
            at[b] = i;
        }
        let ret = f.blocks[s].term.0.clone();
        let i = at[s];
        let Some(j) = (i + 1..order.len())
            .rev()
            .find(|&j| f.blocks[order[j]].term.0 == ret && !f.blocks[order[j]].insts.is_empty())
        else {
            continue;
        };
        let b = order[j];
        if in_loop[b] || preds[s].iter().any(|&p| at[p] > j) {
            continue;
        }
        // The block laid out before `s` must still fall through after the move.
        if i > 0 {
            let next = order.get(i + 1).copied();
            let keeps = match &f.blocks[order[i - 1]].term.0 {
                Terminator::Branch { then_, else_, .. } if *then_ == s => Some(*else_) == next,
                Terminator::Branch { then_, else_, .. } if *else_ == s => Some(*then_) == next,
                t => !t.successors().contains(&s),
            };
            if !keeps {
                continue;
            }
        }
        order.remove(i);
        order.insert(j, s);
    }
    order
}

/// `order` with a block returning a constant moved to the end when it lies inside a loop's
/// span (between a header and a block that jumps back to it) and the branch falling into it
/// can fall through to its other side instead, which comes next: moved anywhere else, it
/// would gain a jump or change nothing worth it.
fn loop_returns_last(f: &Function, order: Vec<Block>) -> Vec<Block> {
    // A block that only returns is never a loop's latch, so "laid out in a loop" is "between
    // a header and its latch".
    let in_loop = crate::opt::laid_out_in_loops(f, &order);
    let cold = |b: Block| b != f.entry && f.returned_constant(b).is_some();
    let mut moved: SecondaryMap<Block, bool> = f.block_map();
    for i in 1..order.len() {
        let (prev, b) = (order[i - 1], order[i]);
        if !cold(b) || moved[prev] || !in_loop[b] {
            continue;
        }
        let next = order.get(i + 1).copied();
        let free = match f.blocks[prev].term.0 {
            Terminator::Branch { then_, else_, .. } if then_ == b || else_ == b => {
                let other = if then_ == b { else_ } else { then_ };
                next == Some(other) && !cold(other)
            }
            Terminator::MayGoto { exhausted, cont } if exhausted == b || cont == b => false,
            Terminator::Jump(t) if t == b => false,
            _ => true,
        };
        moved[b] = free;
    }
    let (mut hot, rest): (Vec<Block>, Vec<Block>) = order.into_iter().partition(|&b| !moved[b]);
    hot.extend(rest);
    hot
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Inst, Operand, ValueKind};
    use crate::prune_hints::tests::{branch, counted_loop};
    use runtime_bpf::isa::JmpOp;
    use runtime_bpf::object::SourceLoc;

    /// A byte loop's failed bounds check (`if x == 7 then error`): reverse post-order puts
    /// the error's `return` between the test and the rest of the body, which then jumps over
    /// it on every iteration; the layout moves it to the end.
    #[test]
    fn an_error_return_inside_a_loop_moves_to_the_end() {
        let mut err = None;
        let (f, [_, body, next, _]) = counted_loop(|f, x, [_, _, next, _]| {
            let e = f.new_block();
            f.blocks[e].term.0 = Terminator::Return(Operand::Imm(1));
            err = Some(e);
            branch(x, 7, e, next)
        });
        let err = err.unwrap();
        let rpo = f.reverse_postorder();
        let at = |o: &[Block], b| o.iter().position(|&c| c == b).unwrap();
        assert_eq!(at(&rpo, err), at(&rpo, body) + 1, "{rpo:?}");
        let order = order(&f);
        assert_eq!(order.last(), Some(&err), "{order:?}");
        // The test now falls through to the rest of the body.
        assert_eq!(at(&order, next), at(&order, body) + 1, "{order:?}");
        assert_eq!(order.len(), rpo.len());
    }

    /// A scan: `for i = 0, 9 do if x == 7 then <found> end end` where the failed test jumps
    /// to the latch (`i += 1; if i <= 9 goto head`) past the found path: the latch moves
    /// before the header and falls into it. A latch the block before it falls into stays.
    #[test]
    fn a_latch_entered_by_jumps_moves_before_its_header() {
        let mut found = None;
        let (mut f, [head, _, latch, done]) = counted_loop(|f, x, [_, _, next, _]| {
            // Found returns what it computed: not a constant `return` that moves to the end.
            let b = f.new_block();
            f.blocks[b].term.0 = Terminator::Return(Operand::Value(x));
            found = Some(b);
            branch(x, 7, b, next)
        });
        let found = found.unwrap();
        let i = match f.blocks[latch].insts[0].0 {
            Inst::Bin { dst, .. } => dst,
            _ => unreachable!(),
        };
        f.blocks[latch].term.0 = Terminator::Branch {
            op: JmpOp::Jsle,
            a: i,
            b: Operand::Imm(9),
            then_: head,
            else_: done,
        };
        let laid = order(&f);
        let pos = |o: &[Block], b| o.iter().position(|&c| c == b).unwrap();
        assert!(pos(&laid, latch) > pos(&laid, head) + 1, "{laid:?}");
        let moved = latches_before_headers(&f, laid.clone());
        assert_eq!(pos(&moved, latch) + 1, pos(&moved, head), "{moved:?}");
        assert_eq!(moved.len(), laid.len());
        // The found path falls into the latch: moving it would cost that path a jump.
        f.blocks[found].term.0 = Terminator::Jump(latch);
        let laid = order(&f);
        assert_eq!(pos(&laid, latch), pos(&laid, found) + 1, "{laid:?}");
        assert_eq!(latches_before_headers(&f, laid.clone()), laid);
    }

    /// `if x == 7 then return 1 end; if x == 3 then break end` in a loop body: the branch
    /// into `return 1`'s block has `break` on its other side, laid out elsewhere, so moving
    /// the block would cost it a jump: it stays. Outside any loop, nothing moves.
    #[test]
    fn a_return_that_would_cost_a_jump_or_sits_outside_loops_stays() {
        let mut found = None;
        let (f, [_, _, next, done]) = counted_loop(|f, x, [_, _, next, done]| {
            let (test2, ret) = (f.new_block(), f.new_block());
            f.blocks[ret].term.0 = Terminator::Return(Operand::Imm(1));
            f.blocks[test2].term.0 = branch(x, 3, done, ret);
            found = Some(ret);
            branch(x, 7, test2, next)
        });
        let rpo = f.reverse_postorder();
        let ret = found.unwrap();
        let i = rpo.iter().position(|&b| b == ret).unwrap();
        // Inside the loop, and not followed by `break`'s block.
        assert!(i < rpo.iter().position(|&b| b == next).unwrap(), "{rpo:?}");
        assert_ne!(rpo.get(i + 1), Some(&done), "{rpo:?}");
        assert_eq!(order(&f), rpo);

        let mut f = Function::new("t");
        let x = f.new_value(ValueKind::Scalar);
        let (one, two) = (f.new_block(), f.new_block());
        let e = f.entry;
        f.blocks[e]
            .insts
            .push((Inst::Arg { dst: x, index: 0 }, SourceLoc::default()));
        f.blocks[e].term.0 = branch(x, 1, one, two);
        f.blocks[one].term.0 = Terminator::Return(Operand::Imm(1));
        f.blocks[two].term.0 = Terminator::Return(Operand::Imm(2));
        assert_eq!(order(&f), f.reverse_postorder());
    }

    /// The shared return stays where it is when the block before it falls into it with a
    /// jump (moving it would cost that block a `ja`).
    #[test]
    fn a_shared_return_stays_where_a_move_costs_a_jump() {
        let mut f = Function::new("t");
        let at = SourceLoc::default();
        let (x, y) = (f.new_value(ValueKind::Scalar), f.new_value(ValueKind::Scalar));
        let [p, b, s] = [(); 3].map(|_| f.new_block());
        let e = f.entry;
        let if_zero = |then_, else_| Terminator::Branch {
            op: JmpOp::Jeq,
            a: x,
            b: Operand::Imm(0),
            then_,
            else_,
        };
        f.blocks[e].insts.push((Inst::Arg { dst: x, index: 0 }, at));
        f.blocks[e].term.0 = if_zero(p, b);
        for blk in [p, b] {
            f.blocks[blk].insts.push((Inst::Const { dst: y, imm: 1 }, at));
        }
        f.blocks[p].term.0 = Terminator::Jump(s);
        f.blocks[b].term.0 = Terminator::Return(Operand::Imm(2));
        f.blocks[s].term.0 = Terminator::Return(Operand::Imm(2));
        assert_eq!(f.reverse_postorder(), vec![e, p, s, b]);
        assert_eq!(order(&f), vec![e, p, s, b]);
        // Entered by the branch instead (which then falls into b): it moves after b.
        f.blocks[e].term.0 = if_zero(s, b);
        assert_eq!(f.reverse_postorder(), vec![e, s, b]);
        assert_eq!(order(&f), vec![e, b, s]);
    }
}
