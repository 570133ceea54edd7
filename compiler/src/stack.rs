//! The 512-byte BPF stack: refusing, before the kernel would, a program whose stack does not
//! fit, with the Lua statements whose buffers fill it.
//!
//! Two limits: each function's frame (IR slots plus spills, measured by `regalloc`) and the
//! sum of the frames along any chain of calls, which the verifier checks across separately
//! verified (global) functions too ("combined stack size of 2 calls is 544. Too large"). It
//! counts each frame rounded up to 32 bytes, and so does this estimate; since a frame here is
//! at least the depth the verifier will see, what passes here passes there.

use cranelift_entity::EntityRef;

use crate::diag::Diagnostic;
use crate::ir::{Function, Inst};
use crate::source::{SourceDb, Span};
use runtime_bpf::object::SourceLoc;

/// The verifier's limit (MAX_BPF_STACK), per frame and along a call chain.
pub const STACK_LIMIT: u32 = 512;
/// The granule the verifier rounds each frame of a chain up to.
const FRAME_GRANULE: u32 = 32;

const HINT: &str = "use fewer strings at once: each `getstring` with a run-time length takes a 256-byte buffer; \
                    a constant length takes only that many bytes";

/// The stack buffers of `f` that are larger than one spilled value, largest first, with the
/// location of the first instruction that uses each (the statement that made it).
pub fn buffers(f: &Function) -> Vec<(u32, SourceLoc)> {
    let mut first_use: Vec<Option<SourceLoc>> = vec![None; f.slots.len()];
    for (_, block) in f.blocks.iter() {
        for (inst, loc) in &block.insts {
            let slot = match inst {
                Inst::SlotAddr { slot, .. }
                | Inst::StoreSlot { slot, .. }
                | Inst::LoadSlot { slot, .. }
                | Inst::LoadSlotIndexed { slot, .. } => *slot,
                _ => continue,
            };
            let seen = &mut first_use[slot.index()];
            if seen.is_none() && loc.line != 0 {
                *seen = Some(*loc);
            }
        }
    }
    let mut out: Vec<(u32, SourceLoc)> = f
        .slots
        .iter()
        .filter(|(_, d)| d.size > 8)
        .filter_map(|(s, d)| first_use[s.index()].map(|loc| (d.size, loc)))
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.line.cmp(&b.1.line)));
    out
}

/// The source from `loc`'s column to the end of its line.
pub fn span_of(db: &SourceDb, loc: SourceLoc) -> Option<Span> {
    let file = db.files.get(loc.file as usize)?;
    let start_of_line: usize = file
        .text
        .split_inclusive('\n')
        .take(loc.line.checked_sub(1)? as usize)
        .map(str::len)
        .sum();
    let line = file.text[start_of_line..].lines().next()?;
    let col = line
        .char_indices()
        .nth(loc.col.saturating_sub(1) as usize)
        .map_or(0, |(i, _)| i);
    let end = start_of_line + line.trim_end().len();
    Some(Span::new(loc.file, (start_of_line + col).min(end), end))
}

/// The refusal of a program whose function `f` needs `needed` bytes of frame: on the largest
/// buffer's statement, with the other large buffers as secondary labels.
pub fn frame_too_large(db: &SourceDb, program: &str, program_span: Span, f: &Function, needed: u32) -> Diagnostic {
    let message = format!(
        "program `{program}` does not fit the BPF stack: it needs {needed} bytes, the kernel allows {STACK_LIMIT}"
    );
    let mut spans = buffers(f)
        .into_iter()
        .filter_map(|(size, loc)| Some((size, span_of(db, loc)?)));
    let Some((size, first)) = spans.next() else {
        return Diagnostic::new(program_span, message, "this program").hint(HINT);
    };
    let mut d = Diagnostic::new(first, message, format!("a {size}-byte buffer for this"));
    for (size, span) in spans.take(5) {
        d = d.with_secondary(span, format!("and {size} bytes for this"));
    }
    d.with_secondary(program_span, "in this program").hint(HINT)
}

/// Checks the frames along every call chain from the entry (`funcs[0]`; `Inst::CallLocal`
/// indexes `funcs`), `frames[i]` being the frame size of `funcs[i]`.
pub fn check_chains(
    db: &SourceDb,
    program: &str,
    program_span: Span,
    funcs: &[Function],
    frames: &[u32],
) -> Result<(), Diagnostic> {
    let callees: Vec<Vec<usize>> = funcs
        .iter()
        .map(|f| {
            let mut out: Vec<usize> = f
                .blocks
                .iter()
                .flat_map(|(_, b)| &b.insts)
                .filter_map(|(inst, _)| match inst {
                    Inst::CallLocal { func, .. } => Some(*func as usize),
                    _ => None,
                })
                .filter(|&c| c < funcs.len())
                .collect();
            out.sort_unstable();
            out.dedup();
            out
        })
        .collect();
    // The deepest chain from each function (calls form no cycle: recursion is refused).
    let mut deepest: Vec<Option<(u32, Vec<usize>)>> = vec![None; funcs.len()];
    fn depth(
        i: usize,
        callees: &[Vec<usize>],
        frames: &[u32],
        memo: &mut Vec<Option<(u32, Vec<usize>)>>,
        visiting: &mut Vec<bool>,
    ) -> (u32, Vec<usize>) {
        if let Some(d) = &memo[i] {
            return d.clone();
        }
        if visiting[i] {
            return (0, vec![]);
        }
        visiting[i] = true;
        let own = frames.get(i).copied().unwrap_or(0).max(1).div_ceil(FRAME_GRANULE) * FRAME_GRANULE;
        let mut best = (0u32, Vec::new());
        for &c in &callees[i] {
            let d = depth(c, callees, frames, memo, visiting);
            if d.0 > best.0 {
                best = d;
            }
        }
        visiting[i] = false;
        let mut chain = vec![i];
        chain.extend(best.1);
        let out = (own.saturating_add(best.0), chain);
        memo[i] = Some(out.clone());
        out
    }
    let mut visiting = vec![false; funcs.len()];
    let (total, chain) = depth(0, &callees, frames, &mut deepest, &mut visiting);
    if total <= STACK_LIMIT || chain.len() < 2 {
        return Ok(());
    }
    let message = format!(
        "program `{program}` and the functions it calls need {total} bytes of stack together; the kernel allows {STACK_LIMIT} along a chain of calls"
    );
    let biggest = |i: usize| {
        buffers(&funcs[i])
            .into_iter()
            .find_map(|(size, loc)| Some((size, span_of(db, loc)?)))
    };
    // Blame the called function (the last one of the chain with a buffer); the callers'
    // buffers are the rest of the bill.
    let blamed = chain.iter().rev().copied().find(|&i| i != 0 && biggest(i).is_some());
    let mut d = match blamed.and_then(|i| Some((i, biggest(i)?))) {
        Some((i, (size, span))) => Diagnostic::new(
            span,
            message,
            format!(
                "a function verified on its own, with {} bytes of stack ({size} for this buffer)",
                frames[i]
            ),
        ),
        None => Diagnostic::new(program_span, message, "this program"),
    };
    for &i in &chain {
        if Some(i) == blamed {
            continue;
        }
        if let Some((size, span)) = biggest(i) {
            d = d.with_secondary(
                span,
                format!("its caller keeps {} bytes of stack ({size} for this buffer)", frames[i]),
            );
        }
    }
    Err(d.hint(format!(
        "a function with a loop, called inside a loop, is verified on its own but its stack adds to its caller's; {HINT}"
    )))
}
