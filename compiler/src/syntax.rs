//! The full_moon adapter: parsing with diagnostics, spans, and the nesting guard.
//!
//! full_moon's parser is recursive and overflows a 2 MiB stack at a few hundred nested
//! parentheses; later stages that walk the tree recursively have the same weakness. So every
//! file is first scanned (cheaply, without recursion) for its nesting depth and refused above
//! [`MAX_NESTING`], and the parse itself runs on a large stack.

use crate::diag::{Diagnostic, Diagnostics};
use crate::source::{FileId, SourceDb, Span};
use full_moon::ast::Ast;
use full_moon::node::Node;
use full_moon::tokenizer::TokenizerErrorType;
use std::borrow::Cow;

/// The deepest nesting a file may have: brackets, blocks and chained operators each count one
/// level. Every recursive walk of a syntax tree in the compiler relies on this bound.
pub const MAX_NESTING: usize = 200;

/// The large stack: only reserved address space, pages are touched as needed.
const BIG_STACK: usize = 256 << 20;

/// How many parse errors are reported: later ones are mostly consequences of the first.
const MAX_PARSE_ERRORS: usize = 5;

/// Parses one file of `db` as Lua 5.4. Runs on a large stack, so it is safe to call from any
/// thread; it never panics.
pub fn parse(db: &SourceDb, file: FileId) -> Result<Ast, Diagnostics> {
    with_big_stack(|| parse_here(db, file)).unwrap_or_else(|| Err(vec![internal_parser_error(db, file)]))
}

/// The byte span of a syntax node (full_moon positions are byte offsets).
pub fn span_of(file: FileId, node: &impl Node) -> Span {
    match node.range() {
        Some((start, end)) => Span::new(file, start.bytes(), end.bytes().max(start.bytes())),
        None => Span::new(file, 0, 0),
    }
}

/// Runs `f` on a large stack; `None` if it panicked or the stack could not be mapped.
///
/// The stack is a fresh mapping that the current thread switches to (stacker), not a thread:
/// a thread's start and join cost ~0.1 ms of each compile, and waiting in the join hands the
/// CPU to any other runnable task for its whole time slice (milliseconds, on a machine busy
/// building), before the new thread runs.
pub fn with_big_stack<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stacker::grow(BIG_STACK, f))).ok()
}

/// Parses on the current thread: for callers that already run on a large stack.
pub(crate) fn parse_here(db: &SourceDb, file: FileId) -> Result<Ast, Diagnostics> {
    let Some(source) = db.files.get(file as usize) else {
        return Err(vec![Diagnostic::new(
            Span::new(file, 0, 0),
            "internal error: unknown source file",
            "",
        )]);
    };
    let text = lua_text(&source.text);
    check_line_ends(file, &text).map_err(|d| vec![d])?;
    let unclosed = check_nesting(file, &text).map_err(|d| vec![d])?;
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        full_moon::parse_fallible(&text, full_moon::LuaVersion::lua54())
    }));
    let result = parsed.map_err(|_| vec![internal_parser_error(db, file)])?;
    if result.errors().is_empty() {
        return Ok(result.into_ast());
    }
    let mut diags: Diagnostics = Vec::new();
    for error in result.errors() {
        let diag = parse_error(file, &text, error, unclosed.last().copied());
        if !diags.iter().any(|d| d.span == diag.span) {
            diags.push(diag);
        }
        if diags.len() == MAX_PARSE_ERRORS {
            break;
        }
    }
    Err(diags)
}

/// The text handed to the parsers: like `luaL_loadfile`, a first line starting with `#` (a
/// shebang) is skipped. It is blanked rather than removed so byte offsets stay the same.
pub(crate) fn lua_text(text: &str) -> Cow<'_, str> {
    if !text.starts_with('#') {
        return Cow::Borrowed(text);
    }
    let end = text.find('\n').unwrap_or(text.len());
    let mut out = String::with_capacity(text.len());
    out.extend(std::iter::repeat_n(' ', end));
    out.push_str(&text[end..]);
    Cow::Owned(out)
}

fn internal_parser_error(db: &SourceDb, file: FileId) -> Diagnostic {
    let len = db.files.get(file as usize).map(|f| f.text.len()).unwrap_or(0);
    Diagnostic::new(
        Span::new(file, 0, 0),
        "internal error: the Lua parser failed on this file",
        "while parsing this file",
    )
    .hint(format!(
        "this is a bug in luabpf; the file has {len} bytes — please report it with the file attached"
    ))
}

/// Turns one full_moon error into a diagnostic with a span, a label and a hint.
/// `unclosed`: the innermost bracket or block still open at the end of the file, if any.
fn parse_error(file: FileId, text: &str, error: &full_moon::Error, unclosed: Option<(usize, usize)>) -> Diagnostic {
    let (start, end) = error.range();
    let span = clamp_span(file, text, start.bytes(), end.bytes());
    match error {
        full_moon::Error::TokenizerError(e) => tokenizer_error(first_line(text, span), e.error()),
        full_moon::Error::AstError(e) => {
            let what = e.error_message();
            let token = e.token().to_string();
            let at_eof = matches!(e.token().token_type(), full_moon::tokenizer::TokenType::Eof);
            let label = if at_eof {
                "the file ends after this".to_string()
            } else if what.starts_with("expected") {
                "here".to_string()
            } else {
                format!("unexpected `{}`", token.trim())
            };
            let mut diag = Diagnostic::new(span, format!("syntax error: {what}"), label).hint(syntax_hint(what));
            if let (true, Some((start, end))) = (at_eof, unclosed) {
                let opener = &text[start..end];
                diag = diag.with_secondary(
                    clamp_span(file, text, start, end),
                    format!("this `{opener}` is never closed"),
                );
            }
            diag
        }
    }
}

fn tokenizer_error(span: Span, kind: &TokenizerErrorType) -> Diagnostic {
    match kind {
        TokenizerErrorType::UnclosedString => Diagnostic::new(span, "unterminated string", "this string is never closed")
            .hint("close the string with the same quote on the same line, or use a long string `[[ ... ]]` for text spanning lines"),
        TokenizerErrorType::UnclosedComment => Diagnostic::new(span, "unterminated comment", "this comment is never closed")
            .hint("close a `--[[` comment with `]]` (with as many `=` between the brackets as it opened with)"),
        TokenizerErrorType::InvalidNumber => Diagnostic::new(span, "malformed number", "not a valid Lua number")
            .hint("write integers as `123` or `0x7b`; a number cannot run into a name"),
        TokenizerErrorType::UnexpectedToken(c) => {
            let hint = if c.is_ascii() {
                "remove this character; it is not part of Lua's syntax".to_string()
            } else {
                "outside strings and comments, Lua source is ASCII: check for a pasted or mistyped character".to_string()
            };
            Diagnostic::new(span, format!("unexpected character `{}`", c.escape_default()), "this character").hint(hint)
        }
        TokenizerErrorType::InvalidSymbol(s) => {
            Diagnostic::new(span, format!("invalid symbol `{s}`"), "not a Lua symbol").hint("remove or fix this symbol")
        }
    }
}

fn syntax_hint(message: &str) -> String {
    if message.contains("`end`") {
        "every `function`, `if`, `for`, `while` and `do` needs a matching `end`".into()
    } else if message.contains("`)`") {
        "check that every `(` has a matching `)`".into()
    } else if message.contains("`}`") {
        "check that every `{` has a matching `}` and that fields are separated by `,` or `;`".into()
    } else if message.contains("binary operator") {
        "an operator needs an operand on each side".into()
    } else if message.contains("`then`") {
        "write `if condition then ... end`".into()
    } else if message.contains("`do`") {
        "loops are written `while cond do ... end` and `for i = a, b do ... end`".into()
    } else if message.contains("statement") {
        "a statement starts with a keyword, a name being assigned or a function call".into()
    } else {
        "check the Lua 5.4 syntax here".into()
    }
}

/// The part of `span` on its first line (an unclosed string runs to the end of the line).
fn first_line(text: &str, span: Span) -> Span {
    let end = text[span.start..span.end]
        .find('\n')
        .map_or(span.end, |p| span.start + p);
    Span::new(
        span.file,
        span.start,
        end.max(span.start + 1).min(span.end.max(span.start)),
    )
}

/// A span inside `text`, on character boundaries, never past the end.
fn clamp_span(file: FileId, text: &str, start: usize, end: usize) -> Span {
    let floor = |mut i: usize| {
        i = i.min(text.len());
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = floor(start);
    Span::new(file, start, floor(end).max(start))
}

/// The nesting pre-scan: a small lexer that tracks brackets, blocks and operator chains
/// without recursion, and refuses the file where the estimated tree depth passes
/// [`MAX_NESTING`]. Operators count because `a + b + c ...` nests one level per operator.
///
/// Returns the byte ranges of the brackets and blocks left open at the end, innermost last.
/// Refuses a carriage return that is not part of a `\r\n` (or `\n\r`) line end. Lua counts
/// it as a line break and full_moon does not, so the lines Lua gives a function (which is how
/// `eval` finds its syntax) would not be the lines of its syntax.
fn check_line_ends(file: FileId, text: &str) -> Result<(), Diagnostic> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'\n', Some(b'\r')) | (b'\r', Some(b'\n')) => i += 2,
            (b'\r', _) => {
                return Err(Diagnostic::new(
                    Span::new(file, i, i + 1),
                    "a carriage return that does not end a line",
                    "this `\\r` (not followed by a line feed)",
                )
                .hint("end lines with `\\n` or `\\r\\n`; write a carriage return in a string as `\\r`"));
            }
            _ => i += 1,
        }
    }
    Ok(())
}

pub(crate) fn check_nesting(file: FileId, text: &str) -> Result<Vec<(usize, usize)>, Diagnostic> {
    let bytes = text.as_bytes();
    let mut openers: Vec<(usize, usize)> = Vec::new();
    // Operators counted at each open level; `depth` = open levels + all counted operators.
    let mut levels: Vec<usize> = vec![0];
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let token = next_token(bytes, &mut i);
        match token {
            Tok::Open => {
                openers.push((start, i));
                levels.push(0);
                depth += 1;
            }
            Tok::Close => {
                openers.pop();
                if levels.len() > 1 {
                    depth -= 1 + levels.pop().unwrap_or(0);
                }
            }
            Tok::Operator => {
                if let Some(top) = levels.last_mut() {
                    *top += 1;
                }
                depth += 1;
            }
            Tok::Reset => {
                if let Some(top) = levels.last_mut() {
                    depth -= *top;
                    *top = 0;
                }
            }
            Tok::Other => {}
            // full_moon's lexer panics on a backtick outside Luau mode: refuse it here.
            Tok::Backtick => {
                return Err(Diagnostic::new(
                    clamp_span(file, text, start, start + 1),
                    "unexpected character `` ` ``",
                    "this character",
                )
                .hint("Lua has no backtick strings: quote strings with \" or '"));
            }
        }
        if depth > MAX_NESTING {
            let end = i.max(start + 1).min(bytes.len());
            return Err(Diagnostic::new(
                clamp_span(file, text, start, end),
                format!("nesting too deep (limit {MAX_NESTING})"),
                format!("more than {MAX_NESTING} nested brackets, blocks or chained operators here"),
            )
            .hint("split the expression or block: compute parts into local variables or helper functions"));
        }
    }
    Ok(openers)
}

enum Tok {
    /// `(`, `[`, `{`, `function`, `if`, `do`, `repeat`.
    Open,
    /// `)`, `]`, `}`, `end`, `until`.
    Close,
    /// A binary or unary operator.
    Operator,
    /// Where an expression ends: `,`, `;`, `=`, and statement keywords.
    Reset,
    Backtick,
    Other,
}

/// Reads one token starting at `*i` (skipping whitespace, comments and strings), advances.
fn next_token(b: &[u8], i: &mut usize) -> Tok {
    let c = b[*i];
    let peek = |k: usize| b.get(*i + k).copied().unwrap_or(0);
    match c {
        b'-' if peek(1) == b'-' => {
            *i += 2;
            if let Some(level) = long_bracket_level(b, *i) {
                skip_long_bracket(b, i, level);
            } else {
                while *i < b.len() && b[*i] != b'\n' {
                    *i += 1;
                }
            }
            Tok::Other
        }
        b'[' => match long_bracket_level(b, *i) {
            Some(level) => {
                skip_long_bracket(b, i, level);
                Tok::Other
            }
            None => {
                *i += 1;
                Tok::Open
            }
        },
        b'"' | b'\'' => {
            // Where full_moon's lexer ends a short string: at the quote, or unclosed at `\n` or
            // `\r`, except the first line break after an escape (`\z` and Lua 5.2's `\` newline).
            // What it lexes after the string must be what this scan sees.
            *i += 1;
            let (mut escape, mut line_break_allowed) = (false, false);
            while let Some(&ch) = b.get(*i) {
                *i += 1;
                if escape {
                    escape = false;
                    line_break_allowed = true;
                    continue;
                }
                match ch {
                    b'\\' => escape = true,
                    b'\n' | b'\r' if line_break_allowed => line_break_allowed = false,
                    b'\n' | b'\r' => break,
                    _ if ch == c => break,
                    _ => {}
                }
            }
            Tok::Other
        }
        b'(' | b'{' => {
            *i += 1;
            Tok::Open
        }
        b'`' => {
            *i += 1;
            Tok::Backtick
        }
        b')' | b']' | b'}' => {
            *i += 1;
            Tok::Close
        }
        b'.' if peek(1) == b'.' && peek(2) == b'.' => {
            *i += 3;
            Tok::Other
        }
        b'.' if peek(1) == b'.' => {
            *i += 2;
            Tok::Operator
        }
        b'.' if peek(1).is_ascii_digit() => {
            skip_number(b, i);
            Tok::Other
        }
        b'0'..=b'9' => {
            skip_number(b, i);
            Tok::Other
        }
        b'=' if peek(1) == b'=' => {
            *i += 2;
            Tok::Operator
        }
        b'~' | b'<' | b'>' if peek(1) == b'=' => {
            *i += 2;
            Tok::Operator
        }
        b'<' | b'>' | b'/' if peek(1) == c => {
            *i += 2;
            Tok::Operator
        }
        b':' if peek(1) == b':' => {
            *i += 2;
            Tok::Reset
        }
        b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'#' | b'&' | b'~' | b'|' | b'<' | b'>' => {
            *i += 1;
            Tok::Operator
        }
        b'=' | b',' | b';' => {
            *i += 1;
            Tok::Reset
        }
        c if c.is_ascii_alphabetic() || c == b'_' => {
            let start = *i;
            while *i < b.len() && (b[*i].is_ascii_alphanumeric() || b[*i] == b'_') {
                *i += 1;
            }
            keyword(&b[start..*i])
        }
        _ => {
            *i += 1;
            Tok::Other
        }
    }
}

fn keyword(word: &[u8]) -> Tok {
    match word {
        b"function" | b"if" | b"do" | b"repeat" => Tok::Open,
        b"end" | b"until" => Tok::Close,
        b"and" | b"or" | b"not" => Tok::Operator,
        b"local" | b"return" | b"then" | b"else" | b"elseif" | b"break" | b"goto" | b"in" | b"while" | b"for" => {
            Tok::Reset
        }
        _ => Tok::Other,
    }
}

/// Skips a number the way full_moon's lexer reads it, so that the next token is the same for
/// both: a malformed number (a second `.`, an exponent without digits, `0x` without digits)
/// is eaten up to the next whitespace, comment openers and quotes included.
fn skip_number(b: &[u8], i: &mut usize) {
    if b[*i] == b'0' && matches!(b.get(*i + 1), Some(b'x' | b'X')) {
        return skip_hex_number(b, i);
    }
    let start = *i;
    let mut hit_decimal = false;
    while let Some(&c) = b.get(*i) {
        match c {
            b'0'..=b'9' => *i += 1,
            // full_moon does not count a leading `.` (`.5.` is one number to it).
            b'.' if *i == start => *i += 1,
            b'.' if hit_decimal => return eat_invalid_number(b, i),
            b'.' => {
                hit_decimal = true;
                *i += 1;
            }
            b'e' | b'E' => return skip_exponent(b, i),
            // Any other character ends the number (`0ie` is `0` and `ie`).
            _ => return,
        }
    }
}

fn skip_hex_number(b: &[u8], i: &mut usize) {
    *i += 2;
    let (mut digits_or_dot, mut hit_decimal) = (0, false);
    while let Some(&c) = b.get(*i) {
        match c {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                *i += 1;
                digits_or_dot += 1;
            }
            b'.' if hit_decimal => return eat_invalid_number(b, i),
            b'.' => {
                hit_decimal = true;
                *i += 1;
                digits_or_dot += 1;
            }
            b'p' | b'P' if digits_or_dot == 0 => return eat_invalid_number(b, i),
            b'p' | b'P' => return skip_exponent(b, i),
            _ => break,
        }
    }
    if digits_or_dot == 0 {
        eat_invalid_number(b, i);
    }
}

/// At `e`/`p`: an optional sign, then digits; without digits the number is malformed.
fn skip_exponent(b: &[u8], i: &mut usize) {
    *i += 1;
    if matches!(b.get(*i), Some(b'+' | b'-')) {
        *i += 1;
    }
    if !b.get(*i).is_some_and(u8::is_ascii_digit) {
        return eat_invalid_number(b, i);
    }
    while b.get(*i).is_some_and(u8::is_ascii_digit) {
        *i += 1;
    }
}

/// full_moon's `eat_invalid_number`: everything up to the next whitespace.
fn eat_invalid_number(b: &[u8], i: &mut usize) {
    while b.get(*i).is_some_and(|c| !c.is_ascii_whitespace()) {
        *i += 1;
    }
}

/// `[[`, `[=[`, ...: the number of `=` if a long bracket opens at `at`.
fn long_bracket_level(b: &[u8], at: usize) -> Option<usize> {
    if b.get(at) != Some(&b'[') {
        return None;
    }
    let mut j = at + 1;
    while b.get(j) == Some(&b'=') {
        j += 1;
    }
    (b.get(j) == Some(&b'[')).then_some(j - at - 1)
}

/// Skips a long string or comment opened at `*i` up to its closing bracket (or the end).
fn skip_long_bracket(b: &[u8], i: &mut usize, level: usize) {
    *i += level + 2;
    while *i < b.len() {
        if b[*i] == b']' {
            let mut j = *i + 1;
            while b.get(j) == Some(&b'=') {
                j += 1;
            }
            if j - *i - 1 == level && b.get(j) == Some(&b']') {
                *i = j + 1;
                return;
            }
        }
        *i += 1;
    }
}
