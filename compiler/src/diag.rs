//! Diagnostics: what every stage returns when it refuses a program, and their rendering.
//!
//! A diagnostic always points at source (file, byte span), says what is wrong in the message,
//! labels the span, and suggests the fix in a hint. Rendering uses codespan-reporting so that
//! the output looks like rustc's.

use crate::source::{SourceDb, Span};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    /// The primary span and its label.
    pub span: Span,
    pub label: String,
    /// Further spans (e.g. "declared here").
    pub secondary: Vec<(Span, String)>,
    /// "help: ..." lines: how to fix it.
    pub hints: Vec<String>,
}

impl Diagnostic {
    pub fn new(span: Span, message: impl Into<String>, label: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            span,
            label: label.into(),
            secondary: Vec::new(),
            hints: Vec::new(),
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hints.push(hint.into());
        self
    }

    pub fn with_secondary(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.secondary.push((span, label.into()));
        self
    }
}

/// A stage's failure: one or more diagnostics.
pub type Diagnostics = Vec<Diagnostic>;

/// Renders diagnostics as text (no colour), the way `luabpf check` prints them.
pub fn render(db: &SourceDb, diags: &[Diagnostic]) -> String {
    render_with(db, diags, false)
}

/// Renders diagnostics, with ANSI colour when `colour` is set.
pub fn render_with(db: &SourceDb, diags: &[Diagnostic], colour: bool) -> String {
    use codespan_reporting::diagnostic::{Diagnostic as CsDiag, Label};
    use codespan_reporting::files::SimpleFiles;
    use codespan_reporting::term::{self, termcolor::Buffer};

    let mut files = SimpleFiles::new();
    let ids: Vec<usize> = db
        .files
        .iter()
        .map(|f| files.add(f.name.clone(), f.text.clone()))
        .collect();
    let mut buf = if colour { Buffer::ansi() } else { Buffer::no_color() };
    let config = term::Config::default();
    for d in diags {
        let file_id = |s: &Span| ids.get(s.file as usize).copied().unwrap_or(0);
        let clamp = |s: &Span| {
            let len = db.files.get(s.file as usize).map(|f| f.text.len()).unwrap_or(0);
            let start = s.start.min(len);
            start..s.end.clamp(start, len)
        };
        let mut labels = vec![Label::primary(file_id(&d.span), clamp(&d.span)).with_message(d.label.clone())];
        for (s, l) in &d.secondary {
            labels.push(Label::secondary(file_id(s), clamp(s)).with_message(l.clone()));
        }
        let cs = CsDiag::error()
            .with_message(d.message.clone())
            .with_labels(labels)
            .with_notes(d.hints.iter().map(|h| format!("help: {h}")).collect());
        if db.files.is_empty() {
            buf_write_plain(&mut buf, d);
            continue;
        }
        if term::emit(&mut buf, &config, &files, &cs).is_err() {
            buf_write_plain(&mut buf, d);
        }
    }
    String::from_utf8_lossy(buf.as_slice()).into_owned()
}

fn buf_write_plain(buf: &mut codespan_reporting::term::termcolor::Buffer, d: &Diagnostic) {
    use std::io::Write;
    let _ = writeln!(buf, "error: {}", d.message);
}
