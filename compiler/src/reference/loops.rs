//! The hidden iteration bound of loops without a constant bound, in the reference.
//!
//! The compiled code counts the iterations of every `while` and `repeat` loop and of every
//! numeric `for` whose bounds are not compile-time constants, and takes the default verdict
//! at the 1,025th (language.md section 5). Plain Lua has no such bound, so the reference
//! inserts calls into exactly those loops, found in the checked functions the compiler
//! lowers: `__luabpf_enter(id);` before the loop (the counter starts again each time the loop
//! is reached) and `__luabpf_tick(id);` where an iteration starts. Insertions stay on their
//! line, so error positions keep their line numbers.

use crate::hir::{ExprKind, Func, Stmt, StmtKind};
use crate::source::SourceDb;
use std::collections::{BTreeMap, BTreeSet};

/// Text to insert into each file (by the name the source database gives it), at byte
/// offsets; each loop once, however many instances of its function were checked.
#[derive(Clone, Debug, Default)]
pub struct LoopGuards {
    pub by_file: BTreeMap<String, BTreeMap<usize, String>>,
}

impl LoopGuards {
    /// The guards of every bounded-at-run-time loop in `funcs`.
    pub fn collect(db: &SourceDb, funcs: &[Func]) -> LoopGuards {
        let mut loops = BTreeSet::new();
        for f in funcs {
            walk(&f.body, &mut loops);
        }
        let mut guards = LoopGuards::default();
        for (id, (file, start, body_from, kind)) in loops.into_iter().enumerate() {
            let Some(src) = db.files.get(file as usize) else {
                continue;
            };
            let text = src.text.as_str();
            let Some(keyword) = find_word(text, start, kind.keyword()) else {
                continue;
            };
            let body = match kind {
                LoopKind::Repeat => Some(keyword + "repeat".len()),
                _ => find_word(text, body_from, "do").map(|at| at + "do".len()),
            };
            let Some(body) = body else { continue };
            let edits = guards.by_file.entry(src.name.clone()).or_default();
            edits
                .entry(keyword)
                .or_default()
                .push_str(&format!("__luabpf_enter({id}); "));
            edits
                .entry(body)
                .or_default()
                .push_str(&format!(" __luabpf_tick({id});"));
        }
        guards
    }

    /// `text` (of the file named `name`) with its guards inserted.
    pub fn apply(&self, name: &str, text: &str) -> String {
        let Some(edits) = self.by_file.get(name) else {
            return text.to_string();
        };
        let mut out = String::with_capacity(text.len() + edits.len() * 24);
        let mut at = 0;
        for (&offset, insert) in edits {
            if offset > text.len() || !text.is_char_boundary(offset) {
                continue;
            }
            out.push_str(&text[at..offset]);
            out.push_str(insert);
            at = offset;
        }
        out.push_str(&text[at..]);
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LoopKind {
    While,
    Repeat,
    For,
}

impl LoopKind {
    fn keyword(self) -> &'static str {
        match self {
            LoopKind::While => "while",
            LoopKind::Repeat => "repeat",
            LoopKind::For => "for",
        }
    }
}

/// (file, statement start, where the header ends, kind) of each guarded loop.
type LoopSite = (u32, usize, usize, LoopKind);

fn walk(stmts: &[Stmt], out: &mut BTreeSet<LoopSite>) {
    for s in stmts {
        let file = s.span.file;
        match &s.kind {
            StmtKind::While { cond, body } => {
                out.insert((file, s.span.start, cond.span.end, LoopKind::While));
                walk(body, out);
            }
            StmtKind::Repeat { body, .. } => {
                out.insert((file, s.span.start, s.span.start, LoopKind::Repeat));
                walk(body, out);
            }
            StmtKind::NumFor { start, limit, body, .. } => {
                let constant = matches!(start.kind, ExprKind::Int(_)) && matches!(limit.kind, ExprKind::Int(_));
                if !constant {
                    out.insert((file, s.span.start, limit.span.end, LoopKind::For));
                }
                walk(body, out);
            }
            StmtKind::If { then_, else_, .. } => {
                walk(then_, out);
                walk(else_, out);
            }
            StmtKind::Block(b) => walk(b, out),
            _ => {}
        }
    }
}

/// The offset of the first `word` at or after `from` that stands alone (not part of a
/// longer name) outside comments and strings.
fn find_word(text: &str, from: usize, word: &str) -> Option<usize> {
    let b = text.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = from;
    while i < b.len() {
        let c = b[i];
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            i = skip_comment(b, i + 2);
        } else if c == b'"' || c == b'\'' {
            i = skip_quoted(b, i);
        } else if ident(c) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            if &text[start..i] == word {
                return Some(start);
            }
        } else {
            i += 1;
        }
    }
    None
}

fn skip_comment(b: &[u8], i: usize) -> usize {
    if let Some(end) = long_bracket(b, i) {
        return end;
    }
    b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p + 1)
}

/// `[==[ ... ]==]` starting at `i`: the offset after it.
fn long_bracket(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let level = b[i + 1..].iter().take_while(|&&c| c == b'=').count();
    if b.get(i + 1 + level) != Some(&b'[') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b']')
        .chain(std::iter::repeat_n(b'=', level))
        .chain(std::iter::once(b']'))
        .collect();
    let from = i + 2 + level;
    Some(
        b[from..]
            .windows(close.len())
            .position(|w| w == close.as_slice())
            .map_or(b.len(), |p| from + p + close.len()),
    )
}

fn skip_quoted(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() && b[j] != q {
        j += if b[j] == b'\\' { 2 } else { 1 };
    }
    j + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_words_outside_comments_and_strings() {
        let text = "x = \"do\" -- do\n--[[ do ]] y(dodo) do";
        assert_eq!(find_word(text, 0, "do"), Some(text.len() - 2));
        assert_eq!(find_word("while n < 3 do", 0, "while"), Some(0));
        assert_eq!(find_word("x", 0, "do"), None);
    }
}
