//! A file's syntax facts (its `FileIndex` and function sites) as bytes, so that a stdlib
//! module's can be computed ahead of time (`stdlib_chunks`) instead of parsing the module.
//!
//! Plain little-endian records: numbers as u32, strings as length and bytes, options as a tag
//! byte. Spans are stored without their file, which is only known when the file is loaded.

use super::index::{CallSite, FileIndex, FnSite, RecordSite};
use crate::source::{FileId, Span};

/// The index and function sites of one file, as `decode` reads them back (made by the test
/// that prepares the stdlib, `stdlib_chunks`).
#[cfg(test)]
pub(crate) fn encode(index: &FileIndex, sites: &[FnSite]) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.num(index.calls.len());
    for c in &index.calls {
        w.span(c.span);
        w.num(c.start_line);
        w.num(c.end_line);
        w.str(&c.callee);
        w.opt_str(c.target.as_deref());
        w.named_spans(&c.options);
    }
    w.num(index.records.len());
    for r in &index.records {
        w.span(r.span);
        w.named_spans(&r.fields);
        w.num(r.sorted.len());
        for s in &r.sorted {
            w.str(s);
        }
    }
    w.named_spans(&index.local_tables);
    w.num(index.consts.len());
    for &(start, end) in &index.consts {
        w.num(start);
        w.num(end);
    }
    match index.return_span {
        Some(span) => {
            w.0.push(1);
            w.span(span);
        }
        None => w.0.push(0),
    }
    w.num(sites.len());
    for s in sites {
        w.num(s.keyword_line);
        w.num(s.paren_line);
        w.num(s.end_line);
        w.span(s.span);
        w.opt_str(s.name.as_deref());
        w.num(s.ordinal);
    }
    w.0
}

/// What `encode` wrote, with every span in `file`; None if the bytes are not such a record.
pub(crate) fn decode(bytes: &[u8], file: FileId) -> Option<(FileIndex, Vec<FnSite>)> {
    let mut r = Reader { bytes, file };
    let mut index = FileIndex::default();
    for _ in 0..r.num()? {
        index.calls.push(CallSite {
            span: r.span()?,
            start_line: r.num()?,
            end_line: r.num()?,
            callee: r.str()?,
            target: r.opt_str()?,
            options: r.named_spans()?,
        });
    }
    for _ in 0..r.num()? {
        let span = r.span()?;
        let fields = r.named_spans()?;
        let mut sorted = Vec::new();
        for _ in 0..r.num()? {
            sorted.push(r.str()?);
        }
        index.records.push(RecordSite { span, fields, sorted });
    }
    index.local_tables = r.named_spans()?;
    for _ in 0..r.num()? {
        index.consts.push((r.num()?, r.num()?));
    }
    index.return_span = match r.byte()? {
        0 => None,
        _ => Some(r.span()?),
    };
    let mut sites = Vec::new();
    for _ in 0..r.num()? {
        sites.push(FnSite {
            keyword_line: r.num()?,
            paren_line: r.num()?,
            end_line: r.num()?,
            span: r.span()?,
            name: r.opt_str()?,
            ordinal: r.num()?,
        });
    }
    r.bytes.is_empty().then_some((index, sites))
}

#[cfg(test)]
struct Writer(Vec<u8>);

#[cfg(test)]
impl Writer {
    fn num(&mut self, n: usize) {
        self.0.extend((n as u32).to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.num(s.len());
        self.0.extend(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.0.push(1);
                self.str(s);
            }
            None => self.0.push(0),
        }
    }
    fn span(&mut self, span: Span) {
        self.num(span.start);
        self.num(span.end);
    }
    fn named_spans(&mut self, items: &[(String, Span)]) {
        self.num(items.len());
        for (name, span) in items {
            self.str(name);
            self.span(*span);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    file: FileId,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = (self.bytes.get(..n)?, self.bytes.get(n..)?);
        self.bytes = rest;
        Some(head)
    }
    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn num(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn str(&mut self) -> Option<String> {
        let n = self.num()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn opt_str(&mut self) -> Option<Option<String>> {
        match self.byte()? {
            0 => Some(None),
            _ => Some(Some(self.str()?)),
        }
    }
    fn span(&mut self) -> Option<Span> {
        Some(Span::new(self.file, self.num()?, self.num()?))
    }
    fn named_spans(&mut self) -> Option<Vec<(String, Span)>> {
        let mut out = Vec::new();
        for _ in 0..self.num()? {
            out.push((self.str()?, self.span()?));
        }
        Some(out)
    }
}
