//! Where a program's instructions go: its entry code stays in its own section, subprograms go
//! to `.text`. Pure functions over instruction slots, shared by the writer and the reader.

use crate::isa::{Insn, JmpOp, BPF_JMP, BPF_PSEUDO_CALL};

/// Opcode of `call` (helpers, kfuncs and BPF functions alike; src_reg tells them apart).
pub(crate) const CALL: u8 = BPF_JMP | JmpOp::Call as u8;

/// `src_reg` of an `ld_imm64` that loads the address of a BPF function (callbacks).
pub(crate) const BPF_PSEUDO_FUNC: u8 = 4;

/// A `call` to another BPF function (not a helper, not a kfunc).
pub(crate) fn is_local_call(insn: &Insn) -> bool {
    insn.code == CALL && insn.src == BPF_PSEUDO_CALL
}

/// An `ld_imm64` loading a BPF function's address.
pub(crate) fn is_func_addr(insn: &Insn) -> bool {
    insn.is_ld_imm64() && insn.src == BPF_PSEUDO_FUNC
}

/// Marks the second slot of every `ld_imm64`, which is not an instruction of its own.
pub(crate) fn second_slots(insns: &[Insn]) -> Vec<bool> {
    let mut marks = vec![false; insns.len()];
    let mut i = 0;
    while i < insns.len() {
        if insns[i].is_ld_imm64() {
            if let Some(m) = marks.get_mut(i + 1) {
                *m = true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    marks
}

/// The slot a local call or function address at `slot` refers to (kernel semantics:
/// `slot + imm + 1`), or `None` for other instructions.
pub(crate) fn local_target(insns: &[Insn], slot: usize) -> Option<i64> {
    let insn = insns.get(slot)?;
    (is_local_call(insn) || is_func_addr(insn)).then(|| slot as i64 + insn.imm as i64 + 1)
}

/// Every slot that a local call or function address targets, whether valid or not, with the
/// slot that refers to it.
pub(crate) fn local_references(insns: &[Insn]) -> Vec<(usize, i64)> {
    let second = second_slots(insns);
    (0..insns.len())
        .filter(|&s| !second[s])
        .filter_map(|s| local_target(insns, s).map(|t| (s, t)))
        .collect()
}

/// Whether a target can start a subprogram: inside the program, not its entry, an instruction.
pub(crate) fn valid_target(insns: &[Insn], second: &[bool], target: i64) -> bool {
    target > 0 && (target as usize) < insns.len() && !second[target as usize]
}

/// How one program is split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Split {
    /// Slots `0..main_len` are the entry function (the program's own section).
    pub main_len: usize,
    /// Start slots of the subprograms, ascending; each runs to the next start (or the end).
    pub sub_starts: Vec<usize>,
}

impl Split {
    /// `(start, end)` slot ranges of the subprograms.
    pub fn subs(&self, len: usize) -> Vec<(usize, usize)> {
        let ends = self.sub_starts.iter().skip(1).copied().chain(std::iter::once(len));
        self.sub_starts.iter().copied().zip(ends).collect()
    }
}

/// Splits at every valid local target; invalid ones are left for the kernel (and `validate`).
pub(crate) fn split(insns: &[Insn]) -> Split {
    let second = second_slots(insns);
    let mut starts: Vec<usize> = local_references(insns)
        .into_iter()
        .filter(|&(_, t)| valid_target(insns, &second, t))
        .map(|(_, t)| t as usize)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    Split {
        main_len: starts.first().copied().unwrap_or(insns.len()),
        sub_starts: starts,
    }
}

/// Orders a program's functions as libbpf and aya link them, so that slot numbers agree with
/// the verifier log of any loader: the entry first, then each function appended when first
/// referenced, its own callees linked before the scan of its caller resumes (pre-order DFS).
/// `callees[f]` lists the functions `f` references, in the order of its instructions.
/// An explicit stack, because a crafted file can chain thousands of functions.
pub(crate) fn link_order(entry: usize, callees: &[Vec<usize>]) -> Vec<usize> {
    let mut order = vec![entry];
    let mut seen = vec![false; callees.len().max(entry + 1)];
    seen[entry] = true;
    let mut stack = vec![(entry, 0usize)];
    while let Some(&mut (f, ref mut pos)) = stack.last_mut() {
        let Some(&c) = callees.get(f).and_then(|l| l.get(*pos)) else {
            stack.pop();
            continue;
        };
        *pos += 1;
        if let Some(s) = seen.get_mut(c).filter(|s| !**s) {
            *s = true;
            order.push(c);
            stack.push((c, 0));
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::*;

    #[test]
    fn no_calls_no_split() {
        let mut p = vec![Insn::mov64_imm(R0, 2)];
        p.extend(Insn::ld_imm64(R1, 5));
        p.push(Insn::exit());
        assert_eq!(
            split(&p),
            Split {
                main_len: 4,
                sub_starts: vec![]
            }
        );
        assert_eq!(second_slots(&p), [false, false, true, false]);
    }

    #[test]
    fn calls_split_at_their_targets() {
        // 0: call +2 (-> 3)   1: r0 = 0   2: exit   3: call +1 (-> 5)   4: exit   5: exit
        let p = [
            Insn::call_local(2),
            Insn::mov64_imm(R0, 0),
            Insn::exit(),
            Insn::call_local(1),
            Insn::exit(),
            Insn::exit(),
        ];
        let s = split(&p);
        assert_eq!(
            s,
            Split {
                main_len: 3,
                sub_starts: vec![3, 5]
            }
        );
        assert_eq!(s.subs(p.len()), [(3, 5), (5, 6)]);
    }

    #[test]
    fn link_order_is_preorder_by_first_reference() {
        // 0 calls 3 then 1; 3 calls 2; 1 calls 3 again; 4 is never called.
        let callees = vec![vec![3, 1], vec![3], vec![], vec![2], vec![]];
        assert_eq!(link_order(0, &callees), [0, 3, 2, 1]);
        assert_eq!(link_order(0, &[vec![0, 7]]), [0], "self calls and bad ids are ignored");
    }

    #[test]
    fn invalid_targets_are_ignored() {
        let p = [Insn::call_local(-1), Insn::call_local(100), Insn::exit()];
        assert_eq!(split(&p).main_len, 3);
    }
}
