//! Lua errors from the body, turned into diagnostics at the line they came from.
//!
//! luabpf's own callbacks raise complete diagnostics (`BodyError`). Anything else is a Lua
//! error message: its position is the `file:line:` prefix of the message, or the innermost
//! frame of a known file in the traceback.

use super::sandbox::{LastPosition, INSTRUCTION_BUDGET, MEMORY_LIMIT};
use super::state::{line_span, BodyError, State};
use crate::diag::{Diagnostic, Diagnostics};
use crate::source::{FileId, Span};

const SANDBOX_HINT: &str =
    "the file's top level runs at compile time in Lua 5.4 with `string`, `table`, `math`, `utf8` and the basic functions; `io`, `os`, `load` and `debug` are not available";

pub(crate) fn diagnostics(err: &mlua::Error, s: &State, main: FileId, last: &LastPosition) -> Diagnostics {
    if let Some(body) = err.downcast_ref::<BodyError>() {
        return match body {
            BodyError::Diags(d) => d.clone(),
            BodyError::Budget { source, line } => vec![did_not_finish(s, main, source.as_deref(), *line)],
        };
    }
    match err {
        mlua::Error::MemoryError(_) => {
            let (source, line) = last.try_borrow().map(|p| p.clone()).unwrap_or((None, None));
            let span = position_span(s, main, source.as_deref(), line);
            vec![Diagnostic::new(
                span,
                format!(
                    "the compile-time body ran out of memory (limit {} MiB)",
                    MEMORY_LIMIT >> 20
                ),
                "running around here",
            )
            .hint("look for a loop that keeps growing a table or a string")]
        }
        mlua::Error::SyntaxError { message, .. } => {
            let (mut span, text) = locate(s, message).unwrap_or((Span::new(main, 0, 0), message.clone()));
            // `break` and `goto` are resolved at the end of a block, so Lua reports them at the
            // block's end and names the real line in the message ("... at line 6").
            if let Some(line) = at_line(&text) {
                span = line_span(&s.db, span.file, line);
                let word = if text.contains("break outside") {
                    "break"
                } else {
                    "goto"
                };
                if let Some(f) = s.db.files.get(span.file as usize) {
                    if let Some(k) = f.text.get(span.start..span.end).and_then(|l| l.find(word)) {
                        span = Span::new(span.file, span.start + k, span.start + k + word.len());
                    }
                }
            }
            let hint = if text.contains("break outside") {
                "`break` must be inside a `while`, `repeat` or `for` loop"
            } else {
                "Lua 5.4 reports this error when it compiles the file"
            };
            vec![Diagnostic::new(span, text, "Lua refuses this").hint(hint)]
        }
        _ => vec![runtime_error(err, s, main)],
    }
}

fn did_not_finish(s: &State, main: FileId, source: Option<&str>, line: Option<usize>) -> Diagnostic {
    let span = position_span(s, main, source, line);
    Diagnostic::new(
        span,
        "the compile-time body did not finish",
        format!("still running here after {INSTRUCTION_BUDGET} Lua instructions"),
    )
    .hint("the file's top level runs once, at compile time: look for a loop that never ends")
    .hint("functions handed to a program constructor run in the kernel, not here")
}

fn position_span(s: &State, main: FileId, source: Option<&str>, line: Option<usize>) -> Span {
    match (source.and_then(|src| s.chunks.get(src)), line) {
        (Some(&file), Some(line)) => line_span(&s.db, file, line),
        _ => Span::new(main, 0, 0),
    }
}

fn runtime_error(err: &mlua::Error, s: &State, main: FileId) -> Diagnostic {
    // The innermost cause holds the message; the whole error's text holds the traceback.
    let mut cause = err;
    while let mlua::Error::CallbackError { cause: inner, .. } | mlua::Error::WithContext { cause: inner, .. } = cause {
        cause = inner;
    }
    let message = match cause {
        mlua::Error::RuntimeError(m) => m.clone(),
        other => other.to_string(),
    };
    let first_line = message.lines().next().unwrap_or("").to_string();
    let (span, text) = match locate(s, &first_line) {
        Some(found) => found,
        None => (
            locate(s, &err.to_string()).map_or(Span::new(main, 0, 0), |(span, _)| span),
            first_line,
        ),
    };
    let text = if text.is_empty() {
        "error in the compile-time body".to_string()
    } else {
        text
    };
    let hint = hint_for(&text);
    Diagnostic::new(span, format!("error in the compile-time body: {text}"), "raised here").hint(hint)
}

/// The N of "... at line N" in a Lua compile error.
fn at_line(text: &str) -> Option<usize> {
    let rest = &text[text.find("at line ")? + "at line ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn hint_for(message: &str) -> String {
    for name in ["io", "os", "load", "loadfile", "dofile", "debug", "collectgarbage"] {
        if message.contains(&format!("'{name}'")) {
            return format!("`{name}` is not available: {SANDBOX_HINT}");
        }
    }
    if message.contains("a map cannot be") {
        return "index a map inside a function handed to a program constructor; for contents known at compile time, use a table of constants (a static table)".into();
    }
    if message.contains("attempt to") {
        return SANDBOX_HINT.into();
    }
    "this error was raised while running the file's top level at compile time".into()
}

/// Finds the first `name:line:` of a loaded file in `text`: its span, and the text after the
/// position prefix when the text starts with it.
fn locate(s: &State, text: &str) -> Option<(Span, String)> {
    let mut best: Option<(usize, FileId, usize, usize)> = None; // (offset in text, file, line, end of prefix)
    for (chunk, &file) in &s.chunks {
        let Some(name) = chunk.strip_prefix('@') else { continue };
        for short in short_names(name) {
            let mut from = 0;
            while let Some(pos) = text[from..].find(&short).map(|p| p + from) {
                from = pos + short.len();
                let rest = &text[from..];
                let Some(rest) = rest.strip_prefix(':') else { continue };
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 || !rest[digits..].starts_with(':') {
                    continue;
                }
                let Ok(line) = rest[..digits].parse::<usize>() else {
                    continue;
                };
                if best.is_none_or(|b| pos < b.0) {
                    best = Some((pos, file, line, from + 1 + digits + 1));
                }
                break;
            }
        }
    }
    let (pos, file, line, end) = best?;
    let message = if pos == 0 {
        text[end..].trim_start().to_string()
    } else {
        text.to_string()
    };
    Some((line_span(&s.db, file, line), message))
}

/// How Lua may print a file name in messages: whole, or cut to its last 56 bytes behind
/// "..." when it is longer than LUA_IDSIZE allows (`luaO_chunkid`).
fn short_names(name: &str) -> Vec<String> {
    const KEEP: usize = 56;
    if name.len() < 60 {
        return vec![name.to_string()];
    }
    let mut cut = name.len() - KEEP;
    while !name.is_char_boundary(cut) {
        cut += 1;
    }
    vec![format!("...{}", &name[cut..]), name.to_string()]
}
