//! The refusal of a program the walk says the verifier would give up on: on the source line
//! the walk went through most often, which is where the paths that cannot merge pile up.

use runtime_bpf::object::ProgramCode;

use super::{Limits, Verdict, Walk};
use crate::cost::group;
use crate::diag::Diagnostic;
use crate::source::{SourceDb, Span};

const HINT: &str = "use a value chosen by `and`/`or` or by an early return where it is chosen, not later as a \
string index, a packet offset or in a comparison the verifier can decide: it cannot merge paths that differ in such a \
value, so each choice doubles the paths after it";

pub fn diagnostic(
    db: &SourceDb,
    program: &str,
    program_span: Span,
    code: &ProgramCode,
    walk: &Walk,
    limits: Limits,
) -> Diagnostic {
    let message = match walk.verdict {
        Verdict::TooManyJumps => format!(
            "program `{program}` has too many paths for the kernel's verifier: more than {} branches would wait to be followed at once (its limit is 8,192)",
            group(limits.pending as u64)
        ),
        _ => format!(
            "program `{program}` has too many paths for the kernel's verifier: it would walk more than {} instructions (its limit is {})",
            group(limits.insns),
            group(crate::cost::VERIFIER_BUDGET)
        ),
    };
    let Some((span, times)) = hottest_line(db, code, walk) else {
        return Diagnostic::new(program_span, message, "this program").hint(HINT);
    };
    Diagnostic::new(
        span,
        message,
        format!(
            "the verifier walks this line {} times: the paths that reach it hold different values it must keep exact, so it cannot merge them",
            group(times)
        ),
    )
    .with_secondary(program_span, "in this program")
    .hint(HINT)
}

/// The source line whose instructions the walk processed most, with how many times its
/// first instruction was processed.
fn hottest_line(db: &SourceDb, code: &ProgramCode, walk: &Walk) -> Option<(Span, u64)> {
    let mut per_line: std::collections::HashMap<(u32, u32), (u64, usize)> = Default::default();
    for (slot, &n) in walk.per_insn.iter().enumerate() {
        let loc = code.locs.get(slot)?;
        if loc.line == 0 || n == 0 {
            continue;
        }
        let e = per_line.entry((loc.file, loc.line)).or_insert((0, slot));
        e.0 += n as u64;
    }
    let (&(file, line), &(_, slot)) = per_line
        .iter()
        .max_by_key(|(k, (total, _))| (*total, std::cmp::Reverse(**k)))?;
    let loc = runtime_bpf::object::SourceLoc { file, line, col: 1 };
    let span = crate::stack::span_of(db, loc)?;
    // Trim the line's indentation from the span.
    let text = &db.files.get(file as usize)?.text[span.start..span.end];
    let indent = text.len() - text.trim_start().len();
    Some((
        Span::new(file, span.start + indent, span.end),
        walk.per_insn[slot] as u64,
    ))
}
