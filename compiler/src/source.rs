//! Source files and spans. Every later stage refers to source through `Span`.

use std::path::PathBuf;

/// Index into `SourceDb::files`.
pub type FileId = u32;

/// A byte range in one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span { file, start, end }
    }
    /// The smallest span covering both (same file assumed).
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics and line info: the path as the user gave it, or
    /// `stdlib/net/tls.lua` for shipped modules.
    pub name: String,
    /// Where it was read from, if from disk (for `rerun-if-changed`).
    pub path: Option<PathBuf>,
    pub text: String,
}

#[derive(Clone, Debug, Default)]
pub struct SourceDb {
    pub files: Vec<SourceFile>,
}

impl SourceDb {
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        (self.files.len() - 1) as FileId
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, file: FileId, offset: usize) -> (u32, u32) {
        let Some(f) = self.files.get(file as usize) else {
            return (0, 0);
        };
        let offset = offset.min(f.text.len());
        let before = &f.text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map(|p| p + 1).unwrap_or(0);
        let col = String::from_utf8_lossy(&before[line_start..]).chars().count() as u32 + 1;
        (line, col)
    }
}
