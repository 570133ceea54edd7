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
        LineIndex::new(&f.text).line_col(&f.text, offset)
    }
}

/// Where the lines of one text start: for callers that ask for many positions in the same
/// file (lowering asks for every statement and expression), where counting the newlines
/// before each offset again made line numbers a visible part of the compile time.
#[derive(Clone, Debug)]
pub struct LineIndex {
    /// Byte offset of each line's first byte; the first is 0.
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let newlines = text
            .bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .map(|(i, _)| i + 1);
        LineIndex {
            starts: std::iter::once(0).chain(newlines).collect(),
        }
    }

    /// [`SourceDb::line_col`] of `offset` in `text`, the text this index was made from.
    pub fn line_col(&self, text: &str, offset: usize) -> (u32, u32) {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&s| s <= offset);
        let line_start = self.starts[line - 1];
        let col = String::from_utf8_lossy(&text.as_bytes()[line_start..offset])
            .chars()
            .count() as u32
            + 1;
        (line as u32, col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_gives_lines_and_character_columns() {
        let text = "a\nbé c\n\nx";
        let index = LineIndex::new(text);
        let at = |offset| index.line_col(text, offset);
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(1), (1, 2)); // the newline ends line 1
        assert_eq!(at(2), (2, 1));
        assert_eq!(at(5), (2, 3)); // after `bé`: é is two bytes, one column
        assert_eq!(at(8), (3, 1));
        assert_eq!(at(9), (4, 1));
        assert_eq!(at(100), (4, 2)); // past the end: the end
    }
}
