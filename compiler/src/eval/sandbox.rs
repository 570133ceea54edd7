//! The Lua state the body runs in: a real Lua 5.4 with a restricted global table, our
//! `require`, an instruction budget and a memory limit.

use super::builtins;
use super::index::FileIndex;
use super::state::{borrow, borrow_mut, fail, BodyError, LoadedFile, Shared};
use super::{stdlib_chunks, syntax_facts};
use crate::diag::Diagnostic;
use crate::modules::{self, ResolveError, Resolved};
use crate::source::{FileId, SourceFile, Span};
use crate::syntax;
use mlua::{Function, HookTriggers, Lua, LuaOptions, StdLib, Value, VmState};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Lua VM instructions the body may run: generous (about a second), but finite.
pub(crate) const INSTRUCTION_BUDGET: u64 = 100_000_000;
/// The hook runs every this many instructions (cheap: a thousand calls over the budget).
const HOOK_INTERVAL: u32 = 100_000;
pub(crate) const MEMORY_LIMIT: usize = 256 << 20;

/// Where the body was when the hook last ran: (chunk source, line). Memory errors carry no
/// position, so this is the best place to point at.
pub(crate) type LastPosition = Rc<RefCell<(Option<String>, Option<usize>)>>;

pub(crate) struct Sandbox {
    pub lua: Lua,
    /// `debug.getupvalue`, kept from the debug library before it is hidden from user code.
    pub getupvalue: Function,
    pub last_position: LastPosition,
}

/// Helpers written in Lua so that they keep Lua's exact semantics: `print` to stderr,
/// `bpf.print` in the body, and `pcall`/`xpcall` that cannot swallow the budget error.
const PRELUDE: &str = r#"
local tostring, select, concat, format, write, rawpcall, rawxpcall, exhausted, error = ...
local function print(...)
  local n = select('#', ...)
  local parts = { ... }
  for i = 1, n do parts[i] = tostring(parts[i]) end
  write(concat(parts, "\t", 1, n))
end
local function bpf_print(fmt, ...)
  write(format(fmt, ...))
end
local function check(ok, ...)
  if not ok and exhausted() then error((...), 0) end
  return ok, ...
end
local function pcall(f, ...) return check(rawpcall(f, ...)) end
local function xpcall(f, handler, ...) return check(rawxpcall(f, handler, ...)) end
return print, bpf_print, pcall, xpcall
"#;

impl Sandbox {
    pub fn new(st: &Shared) -> mlua::Result<Sandbox> {
        let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::DEBUG;
        // SAFETY: the debug library is loaded only to keep `debug.getupvalue` for luabpf
        // itself; it is removed from the globals before any user code runs.
        let lua = unsafe { Lua::unsafe_new_with(libs, LuaOptions::default()) };
        let globals = lua.globals();
        let debug: mlua::Table = globals.raw_get("debug")?;
        let getupvalue: Function = debug.raw_get("getupvalue")?;
        for name in [
            "debug",
            "load",
            "loadstring",
            "dofile",
            "loadfile",
            "collectgarbage",
            "require",
        ] {
            globals.raw_set(name, Value::Nil)?;
        }
        // Reproducible builds: the body's `math.random` gives the same numbers every compile.
        let math: mlua::Table = globals.raw_get("math")?;
        math.raw_get::<Function>("randomseed")?.call::<()>(0)?;

        let exhausted = Rc::new(Cell::new(false));
        install_prelude(&lua, st, &exhausted)?;
        let require = lua.create_function({
            let st = st.clone();
            move |lua, name: Value| require(lua, &st, name)
        })?;
        globals.raw_set("require", require.clone())?;
        {
            let mut s = borrow_mut(st)?;
            s.register_builtin(&require, "require");
            s.register_builtin(&globals.raw_get::<Function>("error")?, "error");
        }

        lua.set_memory_limit(MEMORY_LIMIT)?;
        let last_position: LastPosition = Rc::new(RefCell::new((None, None)));
        install_budget(&lua, exhausted, last_position.clone())?;
        Ok(Sandbox {
            lua,
            getupvalue,
            last_position,
        })
    }
}

fn install_prelude(lua: &Lua, st: &Shared, exhausted: &Rc<Cell<bool>>) -> mlua::Result<()> {
    let globals = lua.globals();
    let string: mlua::Table = globals.raw_get("string")?;
    let table: mlua::Table = globals.raw_get("table")?;
    let write = lua.create_function(|_, text: mlua::LuaString| {
        eprintln!("{}", String::from_utf8_lossy(&text.as_bytes()));
        Ok(())
    })?;
    let exhausted_fn = lua.create_function({
        let exhausted = exhausted.clone();
        move |_, ()| Ok(exhausted.get())
    })?;
    let (print, bpf_print, pcall, xpcall): (Function, Function, Function, Function) =
        lua.load(PRELUDE).set_name("=luabpf").call((
            globals.raw_get::<Value>("tostring")?,
            globals.raw_get::<Value>("select")?,
            table.raw_get::<Value>("concat")?,
            string.raw_get::<Value>("format")?,
            write,
            globals.raw_get::<Value>("pcall")?,
            globals.raw_get::<Value>("xpcall")?,
            exhausted_fn,
            globals.raw_get::<Value>("error")?,
        ))?;
    globals.raw_set("print", print.clone())?;
    globals.raw_set("pcall", pcall.clone())?;
    globals.raw_set("xpcall", xpcall.clone())?;
    let mut s = borrow_mut(st)?;
    s.register_builtin(&print, "print");
    s.register_builtin(&pcall, "pcall");
    s.register_builtin(&xpcall, "xpcall");
    s.register_builtin(&bpf_print, "bpf.print");
    s.bpf_print = Some(bpf_print);
    Ok(())
}

/// Counts instructions; past the budget every later hook call fails too, so a `pcall` loop
/// cannot outlive it (the `pcall` wrapper re-raises as well).
fn install_budget(lua: &Lua, exhausted: Rc<Cell<bool>>, last: LastPosition) -> mlua::Result<()> {
    let calls = Cell::new(0u64);
    let limit = INSTRUCTION_BUDGET / HOOK_INTERVAL as u64;
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(HOOK_INTERVAL),
        move |_, debug| {
            let source = debug.source().source.map(|s| s.into_owned());
            let line = debug.current_line();
            if let Ok(mut last) = last.try_borrow_mut() {
                *last = (source.clone(), line);
            }
            calls.set(calls.get() + 1);
            if calls.get() > limit {
                exhausted.set(true);
                return Err(mlua::Error::external(BodyError::Budget { source, line }));
            }
            Ok(VmState::Continue)
        },
    )
}

/// Adds a file, parses it, indexes it and compiles it to a Lua function (not yet run).
pub(crate) fn load_file(lua: &Lua, st: &Shared, file: SourceFile) -> mlua::Result<Function> {
    let id = borrow_mut(st)?.db.add(file);
    load_chunk(lua, st, id)
}

/// Parses, indexes and compiles a file already in the source database. A stdlib module with
/// prepared facts and bytecode (`stdlib_chunks`) is neither parsed nor compiled.
pub(crate) fn load_chunk(lua: &Lua, st: &Shared, file: FileId) -> mlua::Result<Function> {
    let (chunk, text, stripped, code) = {
        let mut s = borrow_mut(st)?;
        let Some(source) = s.db.files.get(file as usize) else {
            return Err(mlua::Error::external(format!("internal error: no source file {file}")));
        };
        let name = source.name.clone();
        let prepared = match source.path {
            None => stdlib_chunks::prepared(&name, &source.text)
                .and_then(|p| Some((p.code, syntax_facts::decode(p.facts, file)?))),
            Some(_) => None,
        };
        let (loaded, code) = match prepared {
            Some((code, (index, sites))) => (
                LoadedFile {
                    ast: None,
                    index,
                    sites: Some(sites),
                },
                Some(code),
            ),
            None => {
                let ast = syntax::parse_here(&s.db, file).map_err(|d| mlua::Error::external(BodyError::Diags(d)))?;
                let index = FileIndex::build(file, &ast);
                let loaded = LoadedFile {
                    ast: Some(std::sync::Arc::new(ast)),
                    index,
                    sites: None,
                };
                (loaded, None)
            }
        };
        let text = syntax::lua_text(&source.text).into_owned();
        let stripped = (!loaded.index.consts.is_empty())
            .then(|| (loaded.index.strip_consts(&text), loaded.index.assigns_const_name));
        let chunk = format!("@{name}");
        s.chunks.insert(chunk.clone(), file);
        if s.files.len() <= file as usize {
            s.files.resize_with(file as usize + 1, || None);
        }
        s.files[file as usize] = Some(loaded);
        (chunk, text, stripped, code)
    };
    if let Some(code) = code {
        // Refused only if made by another Lua (version or platform): then compile the text.
        let loaded = lua
            .load(code)
            .set_name(chunk.as_str())
            .set_mode(mlua::chunk::ChunkMode::Binary)
            .into_function();
        if let Ok(function) = loaded {
            return Ok(function);
        }
    }
    // With `<const>` attributes, the text without them is run. Where the file assigns to a
    // name that a constant has, the real text is compiled first, for Lua's own check of
    // assignments to constants (the only error the attributes add).
    let compile = |text: &str| {
        lua.load(text)
            .set_name(chunk.as_str())
            .set_mode(mlua::chunk::ChunkMode::Text)
            .into_function()
    };
    match stripped {
        Some((stripped, assigns_const_name)) => {
            if assigns_const_name {
                compile(&text)?;
            }
            compile(&stripped)
        }
        None => compile(&text),
    }
}

/// The index and function sites of stdlib module `path`, from a parse (as the only file of
/// its database: file id 0), as `load_chunk` finds them without prepared facts.
#[cfg(test)]
pub(crate) fn syntax_of(path: &str, text: &str) -> (FileIndex, Vec<super::index::FnSite>) {
    let mut db = crate::source::SourceDb::default();
    let file = db.add(SourceFile {
        name: path.to_string(),
        path: None,
        text: text.to_string(),
    });
    let ast = syntax::parse_here(&db, file).unwrap_or_else(|_| panic!("{path} does not parse"));
    (FileIndex::build(file, &ast), super::index::function_sites(file, &ast))
}

/// `require(name)`: built-in modules, stdlib, files next to the program, `-I` directories.
fn require(lua: &Lua, st: &Shared, name: Value) -> mlua::Result<Value> {
    let name = match &name {
        Value::String(s) => s.to_str()?.to_string(),
        other => {
            let s = borrow(st)?;
            return fail(
                Diagnostic::new(
                    s.call_site(lua, "require"),
                    format!("`require` expects a module name, got {}", crate::eval::a_type(other)),
                    "called here",
                )
                .hint("write `require \"net.tls\"` with the module's dotted name"),
            );
        }
    };
    if let Some(module) = borrow(st)?.loaded.get(&name) {
        return Ok(module.clone());
    }
    let (resolved, span) = {
        let s = borrow(st)?;
        let resolved = modules::resolve(&name, &s.program_dir, &s.include_dirs);
        (resolved, module_name_span(&s, lua, &name))
    };
    let value = match resolved {
        Ok(Resolved::Builtin(builtin)) => Value::Table(builtins::module(lua, st, builtin)?),
        Ok(Resolved::Stdlib(module)) => {
            let file = SourceFile { name: module.path.to_string(), path: None, text: module.text.to_string() };
            run_module(lua, st, &name, file, span)?
        }
        Ok(Resolved::File(path)) => {
            let text = match std::fs::read(&path) {
                Ok(bytes) => String::from_utf8(bytes).map_err(|_| ()),
                Err(_) => Err(()),
            };
            let Ok(text) = text else {
                return fail(
                    Diagnostic::new(span, format!("cannot read module `{name}` from {}", path.display()), "required here")
                        .hint("the file must be readable and valid UTF-8"),
                );
            };
            let file = SourceFile { name: path.display().to_string(), path: Some(path), text };
            run_module(lua, st, &name, file, span)?
        }
        Err(ResolveError::BadName) => {
            return fail(
                Diagnostic::new(span, format!("`{name}` is not a module name"), "required here")
                    .hint("a module name is dot-separated words: `net.tls` (stdlib), `lib.util` (lib/util.lua next to the program file)"),
            )
        }
        Err(ResolveError::NotFound { searched }) => {
            let mut diag = Diagnostic::new(span, format!("module `{name}` not found"), "required here");
            for place in searched {
                diag = diag.hint(format!("searched {place}"));
            }
            return fail(diag.hint("add the directory that holds it with `-I <dir>`"));
        }
    };
    borrow_mut(st)?.loaded.insert(name, value.clone());
    Ok(value)
}

/// Loads and runs a module file once, as Lua's `require` does (the chunk gets the name).
fn run_module(lua: &Lua, st: &Shared, name: &str, file: SourceFile, span: Span) -> mlua::Result<Value> {
    {
        let s = borrow(st)?;
        if s.loading.iter().any(|m| m == name) {
            let cycle = s
                .loading
                .iter()
                .map(String::as_str)
                .chain([name])
                .collect::<Vec<_>>()
                .join(" -> ");
            return fail(
                Diagnostic::new(span, format!("circular `require`: {cycle}"), "required here")
                    .hint("move what both modules need into a third module that neither requires back"),
            );
        }
    }
    let chunk = load_file(lua, st, file)?;
    borrow_mut(st)?.loading.push(name.to_string());
    let result = chunk.call::<Value>(name);
    borrow_mut(st)?.loading.retain(|m| m != name);
    Ok(match result? {
        Value::Nil => Value::Boolean(true),
        value => value,
    })
}

/// The module name's string literal at the `require` call, else the call's line.
fn module_name_span(s: &super::state::State, lua: &Lua, name: &str) -> Span {
    let Some((file, line)) = s.caller(lua) else {
        return Span::new(0, 0, 0);
    };
    let line_span = super::state::line_span(&s.db, file, line);
    let text = s.db.files.get(file as usize).map(|f| f.text.as_str()).unwrap_or("");
    let Some(line_text) = text.get(line_span.start..line_span.end) else {
        return line_span;
    };
    for quote in ['"', '\''] {
        let literal = format!("{quote}{name}{quote}");
        if let Some(pos) = line_text.find(&literal) {
            return Span::new(file, line_span.start + pos, line_span.start + pos + literal.len());
        }
    }
    s.call_span(file, line, "require")
}
