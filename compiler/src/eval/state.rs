//! What the compile-time run accumulates: sources, their syntax, declared maps and programs,
//! loaded modules and the registry of built-in functions.
//!
//! It is shared (`Rc<RefCell<_>>`) between the Rust callbacks that the Lua state calls. No
//! borrow is ever held while Lua code runs, and callbacks borrow with `try_borrow*`, so a
//! re-entrant call (a finalizer, say) gets a Lua error rather than a panic.

use super::index::FileIndex;
use crate::diag::{Diagnostic, Diagnostics};
use crate::program::Hook;
use crate::source::{FileId, SourceDb, Span};
use full_moon::ast::Ast;
use runtime_bpf::object::{Format, MapKind};
use std::cell::{Ref, RefCell, RefMut};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;

pub(crate) type Shared = Rc<RefCell<State>>;

/// A parsed file that has been (or is being) run.
pub(crate) struct LoadedFile {
    /// Shared with the bodies of its compiled functions (`shared_body`). None for a stdlib
    /// module whose index and function sites were computed ahead of time (`stdlib_chunks`):
    /// only the functions a program compiles are parsed, each alone.
    pub ast: Option<std::sync::Arc<Ast>>,
    pub index: FileIndex,
    /// The function sites, when known without the tree.
    pub sites: Option<Vec<super::index::FnSite>>,
}

/// A map declared by the body, before its final name is known.
pub(crate) struct MapEntry {
    pub explicit_name: Option<String>,
    /// The name of the variable the constructor's result was assigned to, from the syntax.
    pub target_name: Option<String>,
    pub kind: MapKind,
    pub key: Format,
    pub value: Format,
    pub max_entries: u32,
    pub flags: u32,
    pub span: Span,
}

pub(crate) struct ProgramEntry {
    pub name: String,
    pub hook: Hook,
    pub func: mlua::Function,
    pub default_verdict: i64,
    pub span: Span,
}

pub(crate) struct State {
    pub db: SourceDb,
    /// By `FileId`; `None` for a file that failed to load.
    pub files: Vec<Option<LoadedFile>>,
    /// Lua chunk name (`@` + file name) -> file.
    pub chunks: HashMap<String, FileId>,
    pub program_dir: PathBuf,
    pub include_dirs: Vec<PathBuf>,
    /// The program name when `opts.name` is absent: the program file's stem.
    pub default_name: String,
    pub maps: Vec<MapEntry>,
    pub programs: Vec<ProgramEntry>,
    /// Built-in functions by identity (`Function::to_pointer`) -> full name.
    pub builtins: HashMap<usize, String>,
    /// Keeps every registered built-in alive, so its address is never reused by another object.
    pub keep_alive: Vec<mlua::Function>,
    /// `require` results by module name.
    pub loaded: HashMap<String, mlua::Value>,
    /// Modules being loaded, to report `require` cycles.
    pub loading: Vec<String>,
    /// The body's `bpf.print` (a prelude function, registered as a built-in).
    pub bpf_print: Option<mlua::Function>,
}

impl State {
    pub fn new(db: SourceDb, program_dir: PathBuf, include_dirs: Vec<PathBuf>, default_name: String) -> State {
        State {
            db,
            files: Vec::new(),
            chunks: HashMap::new(),
            program_dir,
            include_dirs,
            default_name,
            maps: Vec::new(),
            programs: Vec::new(),
            builtins: HashMap::new(),
            keep_alive: Vec::new(),
            loaded: HashMap::new(),
            loading: Vec::new(),
            bpf_print: None,
        }
    }

    pub fn register_builtin(&mut self, f: &mlua::Function, name: impl Into<String>) {
        self.builtins.insert(f.to_pointer() as usize, name.into());
        self.keep_alive.push(f.clone());
    }

    pub fn builtin_name(&self, f: &mlua::Function) -> Option<&str> {
        self.builtins.get(&(f.to_pointer() as usize)).map(String::as_str)
    }

    pub fn index(&self, file: FileId) -> Option<&FileIndex> {
        self.files.get(file as usize)?.as_ref().map(|f| &f.index)
    }

    /// The innermost Lua frame that runs code of a known file: (file, line).
    pub fn caller(&self, lua: &mlua::Lua) -> Option<(FileId, usize)> {
        (1..64).find_map(|level| {
            let (source, line) =
                lua.inspect_stack(level, |d| (d.source().source.map(|s| s.into_owned()), d.current_line()))?;
            Some((*self.chunks.get(source.as_deref()?)?, line?))
        })
    }

    /// The span of the constructor call `name(...)` on `line`, else of the whole line.
    pub fn call_span(&self, file: FileId, line: usize, callee: &str) -> Span {
        self.index(file)
            .and_then(|index| index.call_at(line, callee))
            .map(|call| call.span)
            .unwrap_or_else(|| line_span(&self.db, file, line))
    }

    /// Where a callback was called from, as a span: the call to `callee` when found.
    pub fn call_site(&self, lua: &mlua::Lua, callee: &str) -> Span {
        match self.caller(lua) {
            Some((file, line)) => self.call_span(file, line, callee),
            None => Span::new(0, 0, 0),
        }
    }

    /// The first occurrence of `name = ` inside `span` (an option in a constructor's table),
    /// else `span` itself: diagnostics about an option point at the option.
    pub fn option_span(&self, span: Span, name: &str) -> Span {
        let Some(file) = self.db.files.get(span.file as usize) else {
            return span;
        };
        let Some(text) = file.text.get(span.start..span.end.min(file.text.len())) else {
            return span;
        };
        let bytes = text.as_bytes();
        let mut from = 0;
        while let Some(pos) = text[from..].find(name).map(|p| p + from) {
            let end = pos + name.len();
            let before_ok = pos == 0 || !is_ident_byte(bytes[pos - 1]);
            let rest = text[end..].trim_start();
            let after_ok = rest.starts_with('=') && !rest.starts_with("==");
            if before_ok && after_ok && bytes.get(end).is_none_or(|&b| !is_ident_byte(b)) {
                return Span::new(span.file, span.start + pos, span.start + end);
            }
            from = end;
        }
        span
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The span of line `line` (1-based) of `file`, without surrounding whitespace.
pub(crate) fn line_span(db: &SourceDb, file: FileId, line: usize) -> Span {
    let Some(source) = db.files.get(file as usize) else {
        return Span::new(file, 0, 0);
    };
    let text = &source.text;
    let mut start = 0;
    for _ in 1..line.max(1) {
        match text[start..].find('\n') {
            Some(p) => start += p + 1,
            None => return Span::new(file, text.len(), text.len()),
        }
    }
    let end = text[start..].find('\n').map_or(text.len(), |p| start + p);
    let line_text = &text[start..end];
    let trimmed_start = start + (line_text.len() - line_text.trim_start().len());
    let trimmed_end = (start + line_text.trim_end().len()).max(trimmed_start);
    Span::new(file, trimmed_start, trimmed_end)
}

/// Errors raised by luabpf's own callbacks and hook, carried through Lua as external errors.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Complete diagnostics (a refused constructor argument, a module's syntax errors, ...).
    Diags(Diagnostics),
    /// The instruction budget ran out while running `source` at `line`.
    Budget {
        source: Option<String>,
        line: Option<usize>,
    },
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Diags(d) => write!(f, "{}", d.first().map_or("error", |d| d.message.as_str())),
            BodyError::Budget { .. } => write!(f, "the compile-time body did not finish"),
        }
    }
}

impl std::error::Error for BodyError {}

/// A Lua error carrying one diagnostic.
pub(crate) fn fail<T>(diag: Diagnostic) -> mlua::Result<T> {
    Err(mlua::Error::external(BodyError::Diags(vec![diag])))
}

pub(crate) fn borrow(st: &Shared) -> mlua::Result<Ref<'_, State>> {
    st.try_borrow().map_err(|_| busy())
}

pub(crate) fn borrow_mut(st: &Shared) -> mlua::Result<RefMut<'_, State>> {
    st.try_borrow_mut().map_err(|_| busy())
}

fn busy() -> mlua::Error {
    mlua::Error::runtime(
        "luabpf's compile-time functions cannot be called from a finalizer (__gc) or while luabpf is busy",
    )
}
