//! What evaluating a program file's body yields: plain data that the type checker consumes.
//!
//! The body runs at compile time (in a real Lua 5.4, see `eval`). What remains afterwards is
//! the declared maps, the programs and, for each function handed to the kernel, its syntax
//! tree plus the compile-time values of every upvalue it captures.

use crate::source::{SourceDb, Span};
use runtime_bpf::object::{Format, MapKind};

pub type MapId = usize;
pub type FuncId = usize;
pub type TableId = usize;

/// A value the body computed, as seen by a compiled function that captures it.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstValue {
    Nil,
    Bool(bool),
    Int(i64),
    /// Refused where a compiled function uses it (floats do not exist in BPF).
    Float(f64),
    Str(Vec<u8>),
    Table(TableId),
    Map(MapId),
    Function(FuncId),
    /// A built-in operation, by its full name: "linux.byteorder.ntoh16", "bpf.ktime",
    /// "bpf.random", "bpf.cpu", "bpf.print", "error", ...
    Builtin(String),
    /// A program object (`xdp.program(...)` result): not usable in compiled code.
    Program(usize),
    /// Anything else (userdata, thread, a foreign function): its Lua type name.
    Other(String),
}

/// A body-level table (module tables, constant tables, static tables).
#[derive(Clone, Debug, PartialEq)]
pub struct ConstTable {
    /// Lua's iteration order is not defined (it depends on addresses); kept in a reproducible
    /// order: the sequence part `1..n` first, then the other keys sorted (booleans, integers,
    /// floats, strings; table or function keys last, in `next` order).
    pub entries: Vec<(ConstValue, ConstValue)>,
    /// Where it was constructed, when known.
    pub span: Option<Span>,
    /// The name of the first local/upvalue that holds it, used as the map name when the table
    /// becomes a static map.
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MapDecl {
    pub name: String,
    pub kind: MapKind,
    pub key: Format,
    pub value: Format,
    pub max_entries: u32,
    pub flags: u32,
    /// The constructor call.
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc {
        egress: bool,
    },
    Netfilter {
        family: String,
        hook: String,
        priority: i32,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProgramDecl {
    pub name: String,
    pub hook: Hook,
    pub entry: FuncId,
    /// `opts.default`, else the hook's default verdict.
    pub default_verdict: Option<i64>,
    /// The constructor call.
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct FunctionDecl {
    pub file: crate::source::FileId,
    /// A name for messages: `filter`, `tls.sni`, or `<anonymous>`.
    pub name: String,
    /// The function's syntax: parameters and block, read in place in its file's tree (every
    /// instance the type checker makes of it, and every function a factory made from the same
    /// definition, reads the same tree).
    pub body: crate::shared_body::LazyBody,
    /// From the `function` keyword to `end`.
    pub span: Span,
    /// Every upvalue the function captures, by name, with its value at the end of the body.
    /// `_ENV` is not listed: a free name that is not an upvalue is a global.
    pub upvalues: Vec<(String, ConstValue)>,
}

#[derive(Clone, Debug)]
pub struct Evaluated {
    pub sources: SourceDb,
    pub programs: Vec<ProgramDecl>,
    pub maps: Vec<MapDecl>,
    pub functions: Vec<FunctionDecl>,
    pub tables: Vec<ConstTable>,
}
