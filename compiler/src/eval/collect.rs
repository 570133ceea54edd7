//! After the body ran: from the programs' entry functions, follow upvalues (and tables) to
//! every reachable Lua function and constant, and turn them into plain data.
//!
//! A worklist, not recursion: a body can build arbitrarily deep or cyclic tables. Functions
//! and tables are deduplicated by identity.

use super::index::{function_sites, parsed_alone, shared_bodies, FnSite};
use super::maps::MapObj;
use super::programs::ProgramObj;
use super::state::LoadedFile;
use super::state::{line_span, State};
use crate::diag::{Diagnostic, Diagnostics};
use crate::program::{ConstTable, ConstValue, FuncId, FunctionDecl, MapDecl, ProgramDecl, TableId};
use crate::shared_body::LazyBody;
use crate::source::{FileId, Span};
use mlua::{Function, Table, Value};
use std::collections::{HashMap, HashSet, VecDeque};

pub(crate) struct Collected {
    pub programs: Vec<ProgramDecl>,
    pub maps: Vec<MapDecl>,
    pub functions: Vec<FunctionDecl>,
    pub tables: Vec<ConstTable>,
}

/// `returned`: the programs the body returned, as indices into `State::programs`.
pub(crate) fn collect(getupvalue: &Function, s: &State, returned: &[usize]) -> Result<Collected, Diagnostics> {
    let mut c = Collector {
        getupvalue,
        s,
        sites: HashMap::new(),
        tables: Vec::new(),
        table_ids: HashMap::new(),
        functions: Vec::new(),
        func_ids: HashMap::new(),
        map_names: vec![None; s.maps.len()],
        program_ids: returned.iter().enumerate().map(|(out, &built)| (built, out)).collect(),
        work: VecDeque::new(),
        diags: Vec::new(),
        current: None,
        reported: HashSet::new(),
    };
    let mut programs = Vec::new();
    for &built in returned {
        let Some(p) = s.programs.get(built) else { continue };
        let ConstValue::Function(entry) = c.function(p.func.clone(), None) else {
            continue;
        };
        programs.push(ProgramDecl {
            name: p.name.clone(),
            hook: p.hook.clone(),
            entry,
            default_verdict: Some(p.default_verdict),
            span: p.span,
        });
    }
    c.run();
    let maps = c.maps();
    check_program_names(&programs, &mut c.diags);
    let functions = c.function_decls();
    if !c.diags.is_empty() {
        return Err(c.diags);
    }
    Ok(Collected {
        programs,
        maps,
        functions,
        tables: c.tables,
    })
}

/// A function found but not finished: its syntax is fetched at the end, per file.
struct Pending {
    file: FileId,
    ordinal: Option<usize>,
    name: String,
    span: Span,
    upvalues: Vec<(String, ConstValue)>,
}

enum Work {
    Function(FuncId, Function, Option<String>),
    Table(TableId, Table),
}

struct Collector<'a> {
    getupvalue: &'a Function,
    s: &'a State,
    sites: HashMap<FileId, Vec<FnSite>>,
    tables: Vec<ConstTable>,
    table_ids: HashMap<usize, TableId>,
    functions: Vec<Pending>,
    func_ids: HashMap<usize, FuncId>,
    /// Map names taken from the first upvalue that holds the map.
    map_names: Vec<Option<String>>,
    /// Program construction index -> index among the returned programs.
    program_ids: HashMap<usize, usize>,
    work: VecDeque<Work>,
    diags: Diagnostics,
    /// The function whose upvalues are being converted: (file, start of its span).
    current: Option<(FileId, usize)>,
    /// (file, line) of the site problems already reported (each once).
    reported: HashSet<(FileId, usize)>,
}

impl Collector<'_> {
    fn run(&mut self) {
        while let Some(work) = self.work.pop_front() {
            match work {
                Work::Function(id, f, hint) => self.process_function(id, &f, hint),
                Work::Table(id, t) => self.process_table(id, &t),
            }
        }
    }

    /// Converts one value. `hint` names where it was found: an upvalue name, or
    /// `table.field` for a field of a named table.
    fn value(&mut self, v: Value, hint: Option<&str>) -> ConstValue {
        match v {
            Value::Nil => ConstValue::Nil,
            Value::Boolean(b) => ConstValue::Bool(b),
            Value::Integer(i) => ConstValue::Int(i),
            Value::Number(f) => ConstValue::Float(f),
            Value::String(s) => ConstValue::Str(s.as_bytes().to_vec()),
            Value::Table(t) => self.table(t, hint),
            Value::Function(f) => self.function(f, hint),
            Value::UserData(ud) => {
                if let Ok(map) = ud.borrow::<MapObj>() {
                    let id = map.0;
                    if let (Some(slot), Some(name)) = (self.map_names.get_mut(id), hint) {
                        if slot.is_none() && crate::eval::valid_identifier(name) {
                            *slot = Some(name.to_string());
                        }
                    }
                    return ConstValue::Map(id);
                }
                if let Ok(program) = ud.borrow::<ProgramObj>() {
                    return match self.program_ids.get(&program.0) {
                        Some(&id) => ConstValue::Program(id),
                        None => ConstValue::Other("program".into()),
                    };
                }
                ConstValue::Other("userdata".into())
            }
            other => ConstValue::Other(other.type_name().into()),
        }
    }

    fn function(&mut self, f: Function, hint: Option<&str>) -> ConstValue {
        if let Some(name) = self.s.builtin_name(&f) {
            return ConstValue::Builtin(name.to_string());
        }
        let key = f.to_pointer() as usize;
        if let Some(&id) = self.func_ids.get(&key) {
            return ConstValue::Function(id);
        }
        if f.info().what != "Lua" {
            return ConstValue::Other("function".into());
        }
        let id = self.functions.len();
        self.functions.push(Pending {
            file: 0,
            ordinal: None,
            name: String::new(),
            span: Span::default(),
            upvalues: Vec::new(),
        });
        self.func_ids.insert(key, id);
        self.work.push_back(Work::Function(id, f, hint.map(str::to_string)));
        ConstValue::Function(id)
    }

    fn table(&mut self, t: Table, hint: Option<&str>) -> ConstValue {
        let key = t.to_pointer() as usize;
        if let Some(&id) = self.table_ids.get(&key) {
            return ConstValue::Table(id);
        }
        let id = self.tables.len();
        let span = hint.and_then(|h| self.local_table_span(h));
        self.tables.push(ConstTable {
            entries: Vec::new(),
            span,
            name: hint.map(str::to_string),
        });
        self.table_ids.insert(key, id);
        self.work.push_back(Work::Table(id, t));
        ConstValue::Table(id)
    }

    /// `local NAME = { ... }` in the file of the function being converted: the last one
    /// before that function, else the first.
    fn local_table_span(&self, name: &str) -> Option<Span> {
        let (file, before) = self.current?;
        let locals = &self.s.index(file)?.local_tables;
        let before_it = locals.iter().rev().find(|(n, span)| n == name && span.start < before);
        before_it
            .or_else(|| locals.iter().find(|(n, _)| n == name))
            .map(|(_, span)| *span)
    }

    fn process_function(&mut self, id: FuncId, f: &Function, hint: Option<String>) {
        let info = f.info();
        let source = info.source.unwrap_or_default();
        let (line, last_line) = (info.line_defined.unwrap_or(0), info.last_line_defined.unwrap_or(0));
        let Some(&file) = self.s.chunks.get(&source) else {
            self.diags.push(
                Diagnostic::new(
                    Span::default(),
                    format!("internal error: a compiled function comes from unknown code `{source}`"),
                    "",
                )
                .hint("this is a bug in luabpf"),
            );
            return;
        };
        let Some(site) = self.site(file, line, last_line) else {
            return;
        };
        let name = function_name(hint.as_deref(), site.name.as_deref());
        self.current = Some((file, site.span.start));
        let mut upvalues = Vec::new();
        for i in 1..=info.num_upvalues as i64 {
            let Ok((Some(up), value)) = self.getupvalue.call::<(Option<String>, Value)>((f.clone(), i)) else {
                continue;
            };
            if up == "_ENV" {
                continue;
            }
            let converted = self.value(value, Some(&up));
            upvalues.push((up, converted));
        }
        if let Some(p) = self.functions.get_mut(id) {
            *p = Pending {
                file,
                ordinal: Some(site.ordinal),
                name,
                span: site.span,
                upvalues,
            };
        }
    }

    /// The bodies of the sites `ordinals` of a loaded file: from its tree, or, for a stdlib
    /// module loaded without one, each parsed alone when the type checker first reads it.
    fn bodies_in(&self, file: FileId, loaded: &LoadedFile, ordinals: &HashSet<usize>) -> Vec<(usize, LazyBody)> {
        let name = self
            .s
            .db
            .files
            .get(file as usize)
            .map(|f| f.name.as_str())
            .unwrap_or("");
        let stdlib_text = crate::modules::STDLIB.iter().find(|m| m.path == name).map(|m| m.text);
        let text = match (&loaded.ast, stdlib_text) {
            (Some(ast), _) => {
                let bodies = shared_bodies(file, ast, ordinals);
                return bodies.into_iter().map(|(o, b)| (o, LazyBody::ready(b))).collect();
            }
            (None, Some(text)) => text,
            (None, None) => return Vec::new(),
        };
        let sites = self.sites.get(&file).map(Vec::as_slice).unwrap_or(&[]);
        sites
            .iter()
            .filter(|site| ordinals.contains(&site.ordinal))
            .map(|site| {
                let ordinal = site.ordinal;
                let site = site.clone();
                let body = LazyBody::deferred(move || {
                    parsed_alone(file, text, &site).or_else(|| {
                        // Not expected (the stdlib's functions all parse alone): the whole file.
                        let parsed = full_moon::parse_fallible(text, full_moon::LuaVersion::lua54());
                        let tree = std::sync::Arc::new(parsed.into_ast());
                        shared_bodies(file, &tree, &HashSet::from([site.ordinal]))
                            .into_values()
                            .next()
                    })
                });
                (ordinal, body)
            })
            .collect()
    }

    /// The one syntax site of a function defined at `line`..`last_line` of `file`.
    fn site(&mut self, file: FileId, line: usize, last_line: usize) -> Option<FnSite> {
        let s = self.s;
        let sites = self
            .sites
            .entry(file)
            .or_insert_with(|| match s.files.get(file as usize) {
                Some(Some(loaded)) => match (&loaded.sites, &loaded.ast) {
                    (Some(sites), _) => sites.clone(),
                    (None, Some(ast)) => function_sites(file, ast),
                    (None, None) => Vec::new(),
                },
                _ => Vec::new(),
            });
        let found: Vec<&FnSite> = sites.iter().filter(|site| site.matches(line, last_line)).collect();
        if let [one] = found.as_slice() {
            return Some((*one).clone());
        }
        if !self.reported.insert((file, line)) {
            return None;
        }
        match found.as_slice() {
            [] => {
                let d = Diagnostic::new(
                    line_span(&s.db, file, line),
                    "internal error: cannot find the source of this function",
                    "defined here",
                )
                .hint("this is a bug in luabpf; putting the function on its own lines may work around it");
                self.diags.push(d);
                None
            }
            [_, ..] => {
                let several = &found;
                let mut d = Diagnostic::new(several[0].span, format!("several functions start on line {line}"), "this function")
                    .hint("put each function on its own line: luabpf finds a compiled function's source by the lines it spans");
                for other in &several[1..] {
                    d = d.with_secondary(other.span, "this one starts on the same line too");
                }
                self.diags.push(d);
                None
            }
        }
    }

    fn process_table(&mut self, id: TableId, t: &Table) {
        let name = self.tables.get(id).and_then(|t| t.name.clone());
        let field_hint = |key: &Value| match (&name, key) {
            (Some(table), Value::String(k)) => {
                let k = k.to_string_lossy();
                crate::eval::valid_identifier(&k).then(|| format!("{table}.{k}"))
            }
            _ => None,
        };
        // The sequence part first, in order.
        let mut entries = Vec::new();
        let mut n = 0i64;
        while let Ok(v) = t.raw_get::<Value>(n + 1) {
            if v.is_nil() {
                break;
            }
            n += 1;
            entries.push((ConstValue::Int(n), self.value(v, None)));
        }
        // Then the rest, sorted: `next` order depends on addresses and is not reproducible.
        let mut rest: Vec<(Value, Value)> = Vec::new();
        let _ = t.for_each(|k: Value, v: Value| {
            if !matches!(k, Value::Integer(i) if (1..=n).contains(&i)) {
                rest.push((k, v));
            }
            Ok(())
        });
        rest.sort_by(|a, b| key_order(&a.0, &b.0));
        for (k, v) in rest {
            let hint = field_hint(&k);
            let key = self.value(k, None);
            let value = self.value(v, hint.as_deref());
            entries.push((key, value));
        }
        if let Some(table) = self.tables.get_mut(id) {
            table.entries = entries;
        }
    }

    /// Final map declarations: explicit name, else the first upvalue holding the map, else
    /// the variable the constructor was assigned to, else `map<N>`.
    fn maps(&mut self) -> Vec<MapDecl> {
        let mut out: Vec<MapDecl> = Vec::new();
        for (id, m) in self.s.maps.iter().enumerate() {
            let derived = self.map_names.get(id).cloned().flatten();
            let name = m
                .explicit_name
                .clone()
                .or(derived)
                .or_else(|| m.target_name.clone())
                .unwrap_or_else(|| format!("map{id}"));
            if let Some(first) = out.iter().find(|other| other.name == name) {
                self.diags.push(
                    Diagnostic::new(m.span, format!("two maps are named `{name}`"), "this map")
                        .with_secondary(first.span, "the other map")
                        .hint("give each map its own name: `map.hash(\"name\", { ... })`"),
                );
            }
            out.push(MapDecl {
                name,
                kind: m.kind,
                key: m.key.clone(),
                value: m.value.clone(),
                max_entries: m.max_entries,
                flags: m.flags,
                span: m.span,
            });
        }
        out
    }

    /// Clones each function's syntax (one walk per file) and builds the declarations.
    fn function_decls(&mut self) -> Vec<FunctionDecl> {
        let mut wanted: HashMap<FileId, HashSet<usize>> = HashMap::new();
        for p in &self.functions {
            if let Some(ordinal) = p.ordinal {
                wanted.entry(p.file).or_default().insert(ordinal);
            }
        }
        let mut bodies = HashMap::new();
        for (file, ordinals) in &wanted {
            if let Some(Some(loaded)) = self.s.files.get(*file as usize) {
                for (ordinal, body) in self.bodies_in(*file, loaded, ordinals) {
                    bodies.insert((*file, ordinal), body);
                }
            }
        }
        let mut out = Vec::new();
        for p in std::mem::take(&mut self.functions) {
            let body = p.ordinal.and_then(|o| bodies.get(&(p.file, o)).cloned());
            match body {
                Some(body) => out.push(FunctionDecl {
                    file: p.file,
                    name: p.name,
                    body,
                    span: p.span,
                    upvalues: p.upvalues,
                }),
                // Already reported (no unique site), or a bug: ids would no longer match.
                None if self.diags.is_empty() => self.diags.push(
                    Diagnostic::new(
                        p.span,
                        "internal error: lost the syntax of a compiled function",
                        "this function",
                    )
                    .hint("this is a bug in luabpf"),
                ),
                None => {}
            }
        }
        out
    }
}

/// `tls.sni` (found through a module table) over the syntax name (`M.sni`); a local
/// function's own name over the upvalue that holds it.
fn function_name(hint: Option<&str>, syntax: Option<&str>) -> String {
    match (hint, syntax) {
        (Some(h), _) if h.contains('.') => h.to_string(),
        (_, Some(s)) => s.to_string(),
        (Some(h), None) => h.to_string(),
        (None, None) => "<anonymous>".to_string(),
    }
}

/// An order on keys that does not depend on addresses: booleans, integers, floats, strings;
/// other keys (tables, functions) keep their iteration order (the sort is stable).
fn key_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering::Equal;
    let rank = |v: &Value| match v {
        Value::Boolean(_) => 0,
        Value::Integer(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        _ => 4,
    };
    match (a, b) {
        (Value::Boolean(x), Value::Boolean(y)) => x.cmp(y),
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => x.total_cmp(y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(&y.as_bytes()),
        _ => rank(a).cmp(&rank(b)).then(Equal),
    }
}

fn check_program_names(programs: &[ProgramDecl], diags: &mut Diagnostics) {
    for (i, p) in programs.iter().enumerate() {
        if let Some(first) = programs[..i].iter().find(|q| q.name == p.name) {
            diags.push(
                Diagnostic::new(p.span, format!("two programs are named `{}`", p.name), "this program")
                    .with_secondary(first.span, "the other program")
                    .hint("give each program its own `name` option"),
            );
        }
    }
}
