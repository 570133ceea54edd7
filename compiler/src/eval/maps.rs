//! `bpf.map` constructors: argument checking, `string.pack`-style formats and records.
//!
//! A record's field order is its layout, but a Lua table forgets the order its constructor
//! was written in: the order is recovered from the syntax (the table constructor inside the
//! map constructor call, else the one constructor in the loaded files with exactly these
//! field names).

use super::index::RecordSite;
use super::state::{borrow, borrow_mut, fail, MapEntry, Shared, State};
use crate::diag::Diagnostic;
use crate::source::Span;
use mlua::{AnyUserData, Lua, MetaMethod, MultiValue, Table, UserData, UserDataMethods, Value};
use runtime_bpf::object::{Format, MapKind};

/// Records may nest (a record field that is itself a record) up to this depth.
const MAX_RECORD_DEPTH: usize = 8;
/// The largest `cN`.
const MAX_CHARS: u32 = 65535;

const FORMAT_HINT: &str =
    "formats are `i1 I1 i2 I2 i4 I4 i8 I8` (also `b B h H i I j J`), `cN` for an N-byte string, or a table of named fields for a record";

/// A map as the body sees it: an opaque value that can be passed around and captured.
pub(crate) struct MapObj(pub usize);

impl UserData for MapObj {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::Index, |_, _, _: Value| -> mlua::Result<()> {
            Err(mlua::Error::runtime(
                "a map cannot be read at compile time: it only exists in the kernel",
            ))
        });
        methods.add_meta_method(MetaMethod::NewIndex, |_, _, _: MultiValue| -> mlua::Result<()> {
            Err(mlua::Error::runtime(
                "a map cannot be written at compile time: it only exists in the kernel",
            ))
        });
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(format!("map#{}", this.0)));
    }
}

/// What the syntax says about the constructor call being run.
struct CallInfo {
    span: Span,
    target: Option<String>,
    options: Vec<(String, Span)>,
}

impl CallInfo {
    fn of(s: &State, lua: &Lua, callee: &str) -> CallInfo {
        let Some((file, line)) = s.caller(lua) else {
            return CallInfo {
                span: Span::new(0, 0, 0),
                target: None,
                options: Vec::new(),
            };
        };
        match s.index(file).and_then(|index| index.call_at(line, callee)) {
            Some(call) => CallInfo {
                span: call.span,
                target: call.target.clone(),
                options: call.options.clone(),
            },
            None => CallInfo {
                span: s.call_span(file, line, callee),
                target: None,
                options: Vec::new(),
            },
        }
    }

    /// The span of option `name`'s value in the constructor call, else the call.
    fn option(&self, s: &State, name: &str) -> Span {
        self.options
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, span)| span)
            .unwrap_or_else(|| s.option_span(self.span, name))
    }
}

pub(crate) fn constructor(lua: &Lua, st: &Shared, kind: MapKind, args: MultiValue) -> mlua::Result<AnyUserData> {
    let ctor = kind.name();
    let entry = {
        let s = borrow(st)?;
        let call = CallInfo::of(&s, lua, ctor);
        declare(&s, &call, kind, args).or_else(fail)?
    };
    let id = {
        let mut s = borrow_mut(st)?;
        s.maps.push(entry);
        s.maps.len() - 1
    };
    lua.create_userdata(MapObj(id))
}

/// Checks the arguments and builds the declaration (still without its final name).
fn declare(s: &State, call: &CallInfo, kind: MapKind, args: MultiValue) -> Result<MapEntry, Diagnostic> {
    let ctor = kind.name();
    if kind == MapKind::Ringbuf {
        return Err(Diagnostic::new(
            call.span,
            "`map.ringbuf` is not supported yet",
            "ring buffer declared here",
        )
        .hint("for now, report events to user space through a hash or array map that user space reads"));
    }
    let usage = || {
        Diagnostic::new(call.span, format!("bad arguments to `map.{ctor}`"), "in this call").hint(format!(
            "write `map.{ctor}(\"name\", {{ key = \"I4\", value = \"I8\", entries = 1024 }})`, or leave the name out: `map.{ctor}{{ ... }}`"
        ))
    };
    let args = args.into_vec();
    let (name_arg, opts) = match args.as_slice() {
        [Value::Table(opts)] => (None, opts),
        [name, Value::Table(opts)] => (Some(name), opts),
        _ => return Err(usage()),
    };
    let options = read_options(opts).map_err(|_| usage())?;
    for (key, _) in &options {
        if !["key", "value", "entries", "name"].contains(&key.as_str()) {
            return Err(Diagnostic::new(
                call.option(s, key),
                format!("unknown option `{key}` for `map.{ctor}`"),
                "unknown option",
            )
            .hint("the options are `key`, `value`, `entries` and `name`"));
        }
    }
    let get = |key: &str| options.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let explicit_name = map_name(s, call, name_arg, get("name"))?;
    let key = match get("key") {
        Some(v) => format_of(s, v, call.option(s, "key"), Some(call.option(s, "key")), 0)?,
        None if kind.is_array() => Format::Int {
            bytes: 4,
            signed: false,
        },
        None => {
            return Err(
                Diagnostic::new(call.span, format!("`map.{ctor}` needs a `key` format"), "in this map")
                    .hint(format!("add `key = \"I4\"` (or another format); {FORMAT_HINT}")),
            )
        }
    };
    let value = match get("value") {
        Some(v) => format_of(s, v, call.option(s, "value"), Some(call.option(s, "value")), 0)?,
        None => {
            return Err(
                Diagnostic::new(call.span, format!("`map.{ctor}` needs a `value` format"), "in this map")
                    .hint(format!("add `value = \"I8\"` (or another format); {FORMAT_HINT}")),
            )
        }
    };
    if kind.is_array() && !matches!(key, Format::Int { bytes: 4, .. }) {
        return Err(Diagnostic::new(
            call.option(s, "key"),
            "the key of an array map must be a 4-byte integer",
            "not `I4`",
        )
        .hint(
            "an array is indexed by position: write `key = \"I4\"` or leave `key` out; use `map.hash` for other keys",
        ));
    }
    let max_entries = entries(s, call, get("entries"), ctor)?;
    Ok(MapEntry {
        explicit_name,
        target_name: call.target.clone(),
        kind,
        key,
        value,
        max_entries,
        flags: if kind == MapKind::LpmTrie { 1 } else { 0 }, // BPF_F_NO_PREALLOC, required
        span: call.span,
    })
}

/// The table's fields by name (raw: no metamethods run); Err on a non-string key.
fn read_options(table: &Table) -> Result<Vec<(String, Value)>, ()> {
    let mut out = Vec::new();
    let mut bad = false;
    table
        .for_each(|k: Value, v: Value| {
            match k {
                Value::String(k) => out.push((k.to_string_lossy(), v)),
                _ => bad = true,
            }
            Ok(())
        })
        .map_err(|_| ())?;
    if bad {
        return Err(());
    }
    Ok(out)
}

fn map_name(
    s: &State,
    call: &CallInfo,
    arg: Option<&Value>,
    option: Option<&Value>,
) -> Result<Option<String>, Diagnostic> {
    let check = |v: &Value, span: Span| match v {
        Value::String(name) => {
            let name = name.to_string_lossy();
            if crate::eval::valid_identifier(&name) {
                Ok(name)
            } else {
                Err(Diagnostic::new(span, format!("`{name}` cannot name a map"), "bad name")
                    .hint("a map name is a C-like identifier: letters, digits and `_`, not starting with a digit"))
            }
        }
        other => Err(Diagnostic::new(
            span,
            format!("a map name must be a string, got {}", crate::eval::a_type(other)),
            "bad name",
        )
        .hint("write the name as a string: `map.hash(\"flows\", { ... })`")),
    };
    let from_arg = arg.map(|v| check(v, call.span)).transpose()?;
    let from_option = option.map(|v| check(v, call.option(s, "name"))).transpose()?;
    match (from_arg, from_option) {
        (Some(a), Some(b)) if a != b => {
            Err(
                Diagnostic::new(call.span, format!("the map is named both `{a}` and `{b}`"), "two names")
                    .hint("give the name once, as the first argument or as `name =`"),
            )
        }
        (a, b) => Ok(a.or(b)),
    }
}

fn entries(s: &State, call: &CallInfo, value: Option<&Value>, ctor: &str) -> Result<u32, Diagnostic> {
    let span = call.option(s, "entries");
    let n = match value {
        None => {
            return Err(
                Diagnostic::new(call.span, format!("`map.{ctor}` needs `entries`"), "in this map")
                    .hint("add `entries = 1024` (the maximum number of entries)"),
            )
        }
        Some(Value::Integer(n)) => Some(*n),
        Some(Value::Number(f)) if f.fract() == 0.0 && f.abs() < 1e18 => Some(*f as i64),
        Some(_) => None,
    };
    match n {
        Some(n) if (1..=u32::MAX as i64).contains(&n) => Ok(n as u32),
        _ => Err(
            Diagnostic::new(span, "`entries` must be a positive integer", "not a positive integer")
                .hint(format!("the maximum number of entries, from 1 to {}", u32::MAX)),
        ),
    }
}

/// A key or value format. `at` is where to point on error; `search` is the syntax span the
/// record's table constructor should be in, when known.
fn format_of(s: &State, v: &Value, at: Span, search: Option<Span>, depth: usize) -> Result<Format, Diagnostic> {
    match v {
        Value::String(text) => {
            let text = text.to_string_lossy();
            scalar_format(&text).ok_or_else(|| {
                let mut d =
                    Diagnostic::new(at, format!("unknown format `{text}`"), "not a map format").hint(FORMAT_HINT);
                if text.trim().len() > 2 && !text.trim().starts_with('c') {
                    d = d.hint("one format describes one field: for several fields, use a table of named fields");
                }
                d
            })
        }
        Value::Table(table) => record_format(s, table, at, search, depth),
        other => Err(Diagnostic::new(
            at,
            format!(
                "a map format must be a string or a table, got {}",
                crate::eval::a_type(other)
            ),
            "not a map format",
        )
        .hint(FORMAT_HINT)),
    }
}

/// `i1 I1 i2 I2 i4 I4 i8 I8`, `b B h H i I j J`, `cN`.
pub(crate) fn scalar_format(text: &str) -> Option<Format> {
    let int = |bytes, signed| Some(Format::Int { bytes, signed });
    match text.trim() {
        "i1" | "b" => int(1, true),
        "I1" | "B" => int(1, false),
        "i2" | "h" => int(2, true),
        "I2" | "H" => int(2, false),
        "i4" | "i" => int(4, true),
        "I4" | "I" => int(4, false),
        "i8" | "j" => int(8, true),
        "I8" | "J" => int(8, false),
        t => {
            let digits = t.strip_prefix('c')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u32 = digits.parse().ok()?;
            (1..=MAX_CHARS).contains(&n).then_some(Format::Chars(n))
        }
    }
}

fn record_format(s: &State, table: &Table, at: Span, search: Option<Span>, depth: usize) -> Result<Format, Diagnostic> {
    if depth >= MAX_RECORD_DEPTH {
        return Err(
            Diagnostic::new(at, "record formats nest too deep", "here").hint(format!(
                "records may contain records up to {MAX_RECORD_DEPTH} levels (is the table recursive?)"
            )),
        );
    }
    let fields = read_options(table).map_err(|_| {
        Diagnostic::new(at, "a record format's fields must be named", "not a record")
            .hint("write `{ saddr = \"I4\", dport = \"I2\" }`: each field a name and a format")
    })?;
    if fields.is_empty() {
        return Err(
            Diagnostic::new(at, "a record format needs at least one field", "empty record")
                .hint("write `{ hits = \"I8\" }`, or a plain format like `\"I8\"`"),
        );
    }
    if let Some((bad, _)) = fields.iter().find(|(name, _)| !crate::eval::valid_identifier(name)) {
        return Err(
            Diagnostic::new(at, format!("`{bad}` cannot name a record field"), "bad field name")
                .hint("field names are C-like identifiers (they name the fields in BTF)"),
        );
    }
    let mut sorted: Vec<String> = fields.iter().map(|(n, _)| n.clone()).collect();
    sorted.sort();
    let site = record_site(s, &sorted, at, search)?;
    let mut out = Vec::with_capacity(site.fields.len());
    for (name, value_span) in &site.fields {
        let Some((_, value)) = fields.iter().find(|(n, _)| n == name) else {
            continue;
        };
        out.push((
            name.clone(),
            format_of(s, value, *value_span, Some(*value_span), depth + 1)?,
        ));
    }
    Ok(Format::record(out))
}

/// The table constructor that wrote this record: inside `search` if possible, else the one
/// (or several agreeing) constructors with these names anywhere in the loaded files.
fn record_site<'s>(
    s: &'s State,
    sorted: &[String],
    at: Span,
    search: Option<Span>,
) -> Result<&'s RecordSite, Diagnostic> {
    let candidates: Vec<&RecordSite> = s
        .files
        .iter()
        .flatten()
        .flat_map(|f| f.index.records.iter())
        .filter(|r| r.sorted == sorted)
        .collect();
    let inside = |r: &&&RecordSite| {
        search.is_some_and(|w| r.span.file == w.file && w.start <= r.span.start && r.span.end <= w.end)
    };
    if let Some(site) = candidates.iter().filter(inside).min_by_key(|r| r.span.start) {
        return Ok(site);
    }
    let Some(first) = candidates.first() else {
        return Err(Diagnostic::new(at, "cannot tell the order of this record's fields", "record built here")
            .hint(format!(
                "a record's layout follows the order its fields are written in: write it as a table constructor, e.g. `{{ {} }}`",
                sorted.iter().map(|n| format!("{n} = ...")).collect::<Vec<_>>().join(", ")
            )));
    };
    let same_order = |r: &&RecordSite| r.fields.iter().map(|f| &f.0).eq(first.fields.iter().map(|f| &f.0));
    if candidates.iter().all(same_order) {
        return Ok(first);
    }
    let mut d = Diagnostic::new(at, "cannot tell the order of this record's fields", "record used here")
        .hint("several table constructors have these field names in different orders: write the record inside the map constructor call");
    for r in candidates.iter().take(4) {
        d = d.with_secondary(r.span, "one order");
    }
    Err(d)
}
