//! The compile-time body: run the program file's top level in a real Lua 5.4 (through mlua),
//! then describe what it built — maps, programs, and the functions handed to the kernel
//! with the values they capture — as plain data ([`Evaluated`]).
//!
//! Stages: `sandbox` makes the Lua state (restricted globals, `require`, budget);
//! `builtins`, `maps` and `programs` are what the built-in modules do when the body calls
//! them; `errors` turns Lua errors into diagnostics; `index` holds what the syntax tells
//! (record field order, call spans, function sites); `collect` walks from the programs to
//! every reachable function, table and map once the body has returned.
//!
//! One Lua state per compile, on a large stack (parsing and tree walks recurse).

mod builtins;
mod collect;
mod errors;
mod index;
mod maps;
mod programs;
mod sandbox;
mod state;
mod stdlib_chunks;
mod syntax_facts;

use crate::diag::{Diagnostic, Diagnostics};
use crate::modules;
use crate::program::Evaluated;
use crate::source::{FileId, SourceDb, SourceFile, Span};
use crate::syntax;
use mlua::{MultiValue, Value};
use programs::ProgramObj;
use sandbox::Sandbox;
use state::{Shared, State};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    /// `-I` directories, searched by `require` after the program file's own directory.
    pub include_dirs: Vec<PathBuf>,
}

/// Evaluates the program file at `path`. On failure, returns the sources read so far (to
/// render the diagnostics with `diag::render`).
pub fn evaluate(path: &Path, opts: &EvalOptions) -> Result<Evaluated, (SourceDb, Diagnostics)> {
    let name = path.display().to_string();
    let mut db = SourceDb::default();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            let file = db.add(SourceFile {
                name: name.clone(),
                path: Some(path.to_path_buf()),
                text: String::new(),
            });
            let diag = Diagnostic::new(Span::new(file, 0, 0), format!("cannot read {name}: {e}"), "")
                .hint("check the path and the file's permissions");
            return Err((db, vec![diag]));
        }
    };
    let (text, bad_byte) = decode(bytes);
    let main = db.add(SourceFile {
        name,
        path: Some(path.to_path_buf()),
        text,
    });
    if let Some(offset) = bad_byte {
        let diag = Diagnostic::new(
            Span::new(main, offset, offset),
            "the file is not valid UTF-8",
            "invalid byte here",
        )
        .hint("save the file as UTF-8; write arbitrary bytes in strings with escapes like \"\\xff\"");
        return Err((db, vec![diag]));
    }
    evaluate_db(db, main, modules::program_dir(path), program_name(path), opts)
}

/// Evaluates program `text` given directly. `name` is shown in diagnostics and is taken as
/// the file's path: relative `require`s search its directory, and the default program name
/// is its stem.
pub fn evaluate_source(text: &str, name: &str, opts: &EvalOptions) -> Result<Evaluated, (SourceDb, Diagnostics)> {
    let mut db = SourceDb::default();
    let main = db.add(SourceFile {
        name: name.to_string(),
        path: None,
        text: text.to_string(),
    });
    let path = Path::new(name);
    evaluate_db(db, main, modules::program_dir(path), program_name(path), opts)
}

/// A C-like identifier: what map, program and record field names must be.
pub(crate) fn valid_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A value's type with its article, for messages: "an integer", "a map".
pub(crate) fn a_type(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::Number(_) => "a float",
        Value::String(_) => "a string",
        Value::Table(_) => "a table",
        Value::Function(_) => "a function",
        Value::UserData(ud) if ud.is::<maps::MapObj>() => "a map",
        Value::UserData(ud) if ud.is::<ProgramObj>() => "a program",
        Value::Thread(_) => "a coroutine",
        _ => "a userdata",
    }
}

/// The default program name: the file's stem, made an identifier.
fn program_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if name.is_empty() {
        name.push_str("prog");
    } else if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// UTF-8 text, or the lossy text and the offset of the first invalid byte.
fn decode(bytes: Vec<u8>) -> (String, Option<usize>) {
    match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            (String::from_utf8_lossy(e.as_bytes()).into_owned(), Some(offset))
        }
    }
}

fn evaluate_db(
    db: SourceDb,
    main: FileId,
    program_dir: PathBuf,
    default_name: String,
    opts: &EvalOptions,
) -> Result<Evaluated, (SourceDb, Diagnostics)> {
    let include_dirs = opts.include_dirs.clone();
    // Kept to render a diagnostic if the evaluation panics (it should not).
    let fallback = db.clone();
    syntax::with_big_stack(move || run(db, main, program_dir, include_dirs, default_name)).unwrap_or_else(|| {
        let diag = Diagnostic::new(
            Span::new(main, 0, 0),
            "internal error: the evaluation of this file crashed",
            "while evaluating this file",
        )
        .hint("this is a bug in luabpf: please report it with the file");
        Err((fallback, vec![diag]))
    })
}

fn run(
    db: SourceDb,
    main: FileId,
    program_dir: PathBuf,
    include_dirs: Vec<PathBuf>,
    default_name: String,
) -> Result<Evaluated, (SourceDb, Diagnostics)> {
    let st: Shared = Rc::new(RefCell::new(State::new(db, program_dir, include_dirs, default_name)));
    let outcome = run_body(&st, main);
    // The Lua state is gone (it lived in `run_body`); nothing borrows the state any more.
    let sources = st
        .try_borrow_mut()
        .map(|mut s| std::mem::take(&mut s.db))
        .unwrap_or_default();
    match outcome {
        Ok(c) => Ok(Evaluated {
            sources,
            programs: c.programs,
            maps: c.maps,
            functions: c.functions,
            tables: c.tables,
        }),
        Err(diags) => Err((sources, diags)),
    }
}

fn run_body(st: &Shared, main: FileId) -> Result<collect::Collected, Diagnostics> {
    let sandbox = Sandbox::new(st).map_err(|e| vec![internal(main, &format!("cannot set up Lua: {e}"))])?;
    let to_diags = |e: mlua::Error| match st.try_borrow() {
        Ok(s) => errors::diagnostics(&e, &s, main, &sandbox.last_position),
        Err(_) => vec![internal(main, &e.to_string())],
    };
    let chunk = sandbox::load_chunk(&sandbox.lua, st, main).map_err(to_diags)?;
    let values = chunk.call::<MultiValue>(()).map_err(to_diags)?;
    // No finalizer may run Lua code (and call back into luabpf) while results are read.
    sandbox.lua.gc_stop();
    let s = st
        .try_borrow()
        .map_err(|_| vec![internal(main, "state busy after the body")])?;
    let returned = returned_programs(&s, main, values)?;
    collect::collect(&sandbox.getupvalue, &s, &returned)
}

fn internal(main: FileId, what: &str) -> Diagnostic {
    Diagnostic::new(Span::new(main, 0, 0), format!("internal error: {what}"), "").hint("this is a bug in luabpf")
}

/// The programs the body returned (indices into `State::programs`), in order.
fn returned_programs(s: &State, main: FileId, values: MultiValue) -> Result<Vec<usize>, Diagnostics> {
    let end = s.db.files.get(main as usize).map_or(0, |f| f.text.len());
    let span = s
        .index(main)
        .and_then(|i| i.return_span)
        .unwrap_or(Span::new(main, end, end));
    let refuse = |message: String, label: &str| {
        vec![Diagnostic::new(span, message, label).hint(
            "end the file with `return xdp.program(fn, opts)`, or `return { prog1, prog2 }` for several programs",
        )]
    };
    let values = values.into_vec();
    if values.len() > 1 {
        return Err(refuse(
            format!("the program file returns {} values", values.len()),
            "several values returned",
        ));
    }
    let program = |v: &Value| match v {
        Value::UserData(ud) => ud.borrow::<ProgramObj>().ok().map(|p| p.0),
        _ => None,
    };
    match values.first() {
        None | Some(Value::Nil) => Err(refuse("the program file returns no program".into(), "nothing returned")),
        Some(v @ Value::UserData(_)) => program(v).map(|p| vec![p]).ok_or_else(|| {
            refuse(
                format!("the program file returns {}, not a program", a_type(v)),
                "returned here",
            )
        }),
        Some(Value::Table(t)) => {
            let mut out = Vec::new();
            for i in 1..=t.raw_len() {
                let element: Value = t.raw_get(i).unwrap_or(Value::Nil);
                match program(&element) {
                    Some(p) => out.push(p),
                    None => {
                        return Err(refuse(
                            format!(
                                "element {i} of the returned table is {}, not a program",
                                a_type(&element)
                            ),
                            "returned here",
                        ))
                    }
                }
            }
            if out.is_empty() {
                return Err(refuse(
                    "the program file returns an empty table".into(),
                    "no program in it",
                ));
            }
            Ok(out)
        }
        Some(other) => Err(refuse(
            format!("the program file returns {}, not a program", a_type(other)),
            "returned here",
        )),
    }
}
