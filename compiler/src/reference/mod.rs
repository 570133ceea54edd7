//! The reference engine: a program file run by a real Lua 5.4 (mlua, vendored) over the
//! plain-Lua modules in stdlib/shim/, which implement docs/language.md on the host. It is
//! the oracle `luabpf run --reference` and the differential tests compare the kernel with:
//! the same verdict, the same packet bytes afterwards, the same map contents.
//!
//! The shim files are embedded, so the engine does not depend on the working directory.
//! What the compiler decides from the code rather than from Lua (the names of the maps, the
//! layout of records, which loops carry the hidden iteration bound) comes from the compiler
//! itself: the file is evaluated and the chosen program checked, as `compile` does.

mod codec;
mod loops;

pub use loops::LoopGuards;

use crate::compile::{Failure, Options};
use crate::eval::{self, EvalOptions};
use crate::hir::Func;
use crate::modules::{self, Resolved};
use crate::program::{Evaluated, Hook, MapDecl};
use crate::types::{self, MapTable};
use mlua::{Function, Lua, LuaOptions, MultiValue, StdLib, Table, Value};
use runtime_bpf::object::MapKind;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// One embedded shim module: the name `require` takes, the file it comes from, its text.
pub struct ShimModule {
    pub name: &'static str,
    pub path: &'static str,
    pub text: &'static str,
}

macro_rules! shim {
    ($name:literal, $file:literal) => {
        ShimModule {
            name: $name,
            path: concat!("stdlib/shim/", $file),
            text: include_str!(concat!("../../../stdlib/shim/", $file)),
        }
    };
}

/// Every file under stdlib/shim/ (a test checks that the directory and this list agree).
pub const SHIM: &[ShimModule] = &[
    shim!("luabpf.shim", "luabpf/shim.lua"),
    shim!("luabpf.packet", "luabpf/packet.lua"),
    shim!("luabpf.maps", "luabpf/maps.lua"),
    shim!("bpf", "bpf.lua"),
    shim!("bpf.xdp", "bpf/xdp.lua"),
    shim!("bpf.tc", "bpf/tc.lua"),
    shim!("bpf.netfilter", "bpf/netfilter.lua"),
    shim!("bpf.map", "bpf/map.lua"),
    shim!("linux.xdp", "linux/xdp.lua"),
    shim!("linux.tc", "linux/tc.lua"),
    shim!("linux.netfilter", "linux/netfilter.lua"),
    shim!("linux.byteorder", "linux/byteorder.lua"),
];

/// Memory the reference's Lua may use.
const MEMORY_LIMIT: usize = 256 << 20;

/// What one packet did in the reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// As the kernel reports it: the returned integer truncated to 32 bits.
    pub verdict: u32,
    /// The packet afterwards.
    pub data: Vec<u8>,
    /// Why the run raised (it then took the default verdict).
    pub error: Option<String>,
    /// The run read the time or a random number: the kernel's run saw other values.
    pub nondeterministic: bool,
}

/// A map's contents as the kernel would hold them: (key bytes, value bytes), sorted by key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDump {
    pub name: String,
    pub kind: MapKind,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug)]
pub enum ReferenceError {
    /// The file does not compile: the reference runs only what the compiler accepts.
    Compile(Failure),
    /// The program to run is not in the file, or not chosen.
    Program(String),
    /// Lua failed outside a packet run (the body, the shim).
    Lua(String),
}

impl std::fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReferenceError::Compile(failure) => write!(f, "{}", failure.render()),
            ReferenceError::Program(why) => write!(f, "{why}"),
            ReferenceError::Lua(why) => write!(f, "reference Lua: {why}"),
        }
    }
}

impl std::error::Error for ReferenceError {}

fn lua_err(e: mlua::Error) -> ReferenceError {
    ReferenceError::Lua(e.to_string())
}

/// A program file loaded in the reference, with its maps persisting across packets.
pub struct Reference {
    lua: Lua,
    shim: Table,
    program: Table,
    execute: Function,
    maps: Vec<(MapDecl, Table)>,
    /// The program's name and hook.
    pub name: String,
    pub hook: Hook,
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference").field("name", &self.name).finish()
    }
}

/// Where the reference's `require` finds modules, and the loop guards to insert.
struct Sources {
    ev_files: Vec<(String, String)>,
    program_dir: PathBuf,
    include_dirs: Vec<PathBuf>,
    guards: LoopGuards,
}

impl Sources {
    /// The chunk name and text of module `name`.
    fn module(&self, name: &str) -> Result<(String, String), String> {
        if let Some(m) = SHIM.iter().find(|m| m.name == name) {
            return Ok((m.path.to_string(), m.text.to_string()));
        }
        match modules::resolve(name, &self.program_dir, &self.include_dirs) {
            Ok(Resolved::Stdlib(m)) => Ok((m.path.to_string(), self.guarded(m.path, m.text))),
            Ok(Resolved::File(path)) => {
                let file = path.display().to_string();
                let text = match self.ev_files.iter().find(|(n, _)| *n == file) {
                    Some((_, text)) => text.clone(),
                    None => std::fs::read_to_string(&path).map_err(|e| format!("cannot read {file}: {e}"))?,
                };
                let guarded = self.guarded(&file, &text);
                Ok((file, guarded))
            }
            Ok(Resolved::Builtin(b)) => Err(format!("no shim for the built-in module `{b}`")),
            Err(_) => Err(format!("module `{name}` not found")),
        }
    }

    fn guarded(&self, name: &str, text: &str) -> String {
        self.guards.apply(name, &crate::syntax::lua_text(text))
    }
}

impl Reference {
    /// Loads the program file at `path` and chooses `program` (or its only program).
    pub fn new(path: &Path, program: Option<&str>, opts: &Options) -> Result<Reference, ReferenceError> {
        let ev = eval::evaluate(path, &eval_options(opts)).map_err(compile_failure)?;
        let main_text = ev.sources.files.first().map(|f| f.text.clone()).unwrap_or_default();
        let dir = modules::program_dir(path);
        Reference::prepare(ev, program, dir, opts, &path.display().to_string(), &main_text)
    }

    /// Loads program `text` given directly; `name` stands for its path (relative `require`s
    /// resolve from its directory), as in `compile::compile_source`.
    pub fn from_source(
        text: &str,
        name: &str,
        program: Option<&str>,
        opts: &Options,
    ) -> Result<Reference, ReferenceError> {
        let ev = eval::evaluate_source(text, name, &eval_options(opts)).map_err(compile_failure)?;
        let dir = modules::program_dir(Path::new(name));
        Reference::prepare(ev, program, dir, opts, name, text)
    }

    fn prepare(
        ev: Evaluated,
        program: Option<&str>,
        program_dir: PathBuf,
        opts: &Options,
        main_name: &str,
        main_text: &str,
    ) -> Result<Reference, ReferenceError> {
        let index = choose(&ev, program)?;
        let funcs = checked(&ev, index)?;
        let sources = Sources {
            ev_files: ev
                .sources
                .files
                .iter()
                .map(|f| (f.name.clone(), f.text.clone()))
                .collect(),
            program_dir,
            include_dirs: opts.include_dirs.clone(),
            guards: LoopGuards::collect(&ev.sources, &funcs),
        };
        Reference::start(ev, index, Rc::new(sources), main_name, main_text)
    }

    fn start(
        ev: Evaluated,
        index: usize,
        sources: Rc<Sources>,
        main_name: &str,
        main_text: &str,
    ) -> Result<Reference, ReferenceError> {
        let lua = sandbox().map_err(lua_err)?;
        let cache = lua.create_table().map_err(lua_err)?;
        let require = lua
            .create_function({
                let sources = sources.clone();
                move |lua, name: String| {
                    let cached: Value = cache.raw_get(name.as_str())?;
                    if !cached.is_nil() {
                        return Ok(cached);
                    }
                    let (chunk, text) = sources.module(&name).map_err(mlua::Error::runtime)?;
                    let f = lua.load(text).set_name(format!("@{chunk}")).into_function()?;
                    let value = match f.call::<Value>(name.as_str())? {
                        Value::Nil => Value::Boolean(true),
                        v => v,
                    };
                    cache.raw_set(name, value.clone())?;
                    Ok(value)
                }
            })
            .map_err(lua_err)?;
        let globals = lua.globals();
        globals.raw_set("require", require.clone()).map_err(lua_err)?;
        let shim: Table = require.call("luabpf.shim").map_err(lua_err)?;
        for (global, field) in [("__luabpf_enter", "loop_enter"), ("__luabpf_tick", "loop_tick")] {
            let f: Function = shim.get(field).map_err(lua_err)?;
            globals.raw_set(global, f).map_err(lua_err)?;
        }

        let text = sources.guarded(main_name, main_text);
        let body = lua
            .load(text)
            .set_name(format!("@{main_name}"))
            .into_function()
            .map_err(lua_err)?;
        let returned: MultiValue = body.call(()).map_err(lua_err)?;
        let first = returned.into_iter().next().unwrap_or(Value::Nil);
        let pick: Function = lua
            .load("local Program, v, i = ...\nif getmetatable(v) == Program then return v end\nreturn v[i]")
            .into_function()
            .map_err(lua_err)?;
        let program_class: Table = shim.get("Program").map_err(lua_err)?;
        let program: Table = pick
            .call((program_class, first, index + 1))
            .map_err(|e| ReferenceError::Lua(format!("the body did not return the program: {e}")))?;
        let execute: Function = shim.get("execute").map_err(lua_err)?;

        let registry: Table = shim.get("maps").map_err(lua_err)?;
        let objects: Vec<Table> = registry
            .sequence_values()
            .collect::<mlua::Result<_>>()
            .map_err(lua_err)?;
        if objects.len() != ev.maps.len() {
            return Err(ReferenceError::Lua(format!(
                "the body declared {} maps under the shim but {} in the compiler",
                objects.len(),
                ev.maps.len()
            )));
        }
        let rename: Function = require
            .call::<Table>("luabpf.maps")
            .and_then(|m| m.get("rename"))
            .map_err(lua_err)?;
        for (decl, object) in ev.maps.iter().zip(&objects) {
            rename
                .call::<()>((object.clone(), decl.name.as_str()))
                .map_err(lua_err)?;
        }
        let prog = &ev.programs[index];
        Ok(Reference {
            name: prog.name.clone(),
            hook: prog.hook.clone(),
            maps: ev.maps.iter().cloned().zip(objects).collect(),
            lua,
            shim,
            program,
            execute,
        })
    }

    /// The CPU `bpf.cpu()` reports (the one the kernel runs the program on).
    pub fn set_cpu(&self, cpu: u32) -> Result<(), ReferenceError> {
        let services: Table = self.shim.get("services").map_err(lua_err)?;
        let f = self.lua.create_function(move |_, ()| Ok(cpu)).map_err(lua_err)?;
        services.set("cpu", f).map_err(lua_err)
    }

    /// Runs one packet. Errors only when the shim itself fails (not for runtime errors of the
    /// program, which take the default verdict as in the kernel).
    pub fn run(&self, packet: &[u8]) -> Result<Outcome, ReferenceError> {
        let bytes = self.lua.create_string(packet).map_err(lua_err)?;
        let r: Table = self.execute.call((self.program.clone(), bytes)).map_err(lua_err)?;
        let verdict: i64 = r.get("verdict").map_err(lua_err)?;
        let data: mlua::LuaString = r.get("packet").map_err(lua_err)?;
        Ok(Outcome {
            verdict: verdict as u32,
            data: data.as_bytes().to_vec(),
            error: r
                .get::<Option<mlua::LuaString>>("error")
                .map_err(lua_err)?
                .map(|e| String::from_utf8_lossy(&e.as_bytes()).into_owned()),
            nondeterministic: r.get("nondeterministic").map_err(lua_err)?,
        })
    }

    /// `map[key] = value`, both given as the kernel's bytes (a `--map` seed).
    pub fn seed(&self, map: &str, key: &[u8], value: &[u8]) -> Result<(), ReferenceError> {
        let (decl, object) = self
            .maps
            .iter()
            .find(|(d, _)| d.name == map)
            .ok_or_else(|| ReferenceError::Program(format!("no map `{map}`")))?;
        let k = codec::decode(&self.lua, &decl.key, key).map_err(lua_err)?;
        let v = codec::decode(&self.lua, &decl.value, value).map_err(lua_err)?;
        let set: Function = self.shim.get("map_set").map_err(lua_err)?;
        set.call::<()>((object.clone(), k, v)).map_err(lua_err)
    }

    /// Every declared map's contents, in declaration order.
    pub fn dump(&self) -> Result<Vec<MapDump>, ReferenceError> {
        let entries: Function = self.shim.get("map_entries").map_err(lua_err)?;
        let mut out = Vec::new();
        for (decl, object) in &self.maps {
            let list: Table = entries.call(object.clone()).map_err(lua_err)?;
            let mut pairs = Vec::new();
            for pair in list.sequence_values::<Table>() {
                let pair = pair.map_err(lua_err)?;
                let key: mlua::LuaString = pair.get(1).map_err(lua_err)?;
                let value: Value = pair.get(2).map_err(lua_err)?;
                let bytes = codec::encode(&decl.value, &value).map_err(ReferenceError::Lua)?;
                pairs.push((key.as_bytes().to_vec(), bytes));
            }
            out.push(MapDump {
                name: decl.name.clone(),
                kind: decl.kind,
                entries: pairs,
            });
        }
        Ok(out)
    }
}

fn eval_options(opts: &Options) -> EvalOptions {
    EvalOptions {
        include_dirs: opts.include_dirs.clone(),
    }
}

fn compile_failure((sources, diags): (crate::source::SourceDb, crate::diag::Diagnostics)) -> ReferenceError {
    ReferenceError::Compile(Failure { sources, diags })
}

/// The program's index among the file's programs.
fn choose(ev: &Evaluated, wanted: Option<&str>) -> Result<usize, ReferenceError> {
    let names: Vec<&str> = ev.programs.iter().map(|p| p.name.as_str()).collect();
    match wanted {
        Some(w) => names
            .iter()
            .position(|n| *n == w)
            .ok_or_else(|| ReferenceError::Program(format!("no program `{w}` (the file has: {})", names.join(", ")))),
        None if names.len() == 1 => Ok(0),
        None => Err(ReferenceError::Program(format!(
            "the file holds {} programs ({}): choose one",
            names.len(),
            names.join(", ")
        ))),
    }
}

/// The checked functions of program `index`, as the compiler lowers them.
fn checked(ev: &Evaluated, index: usize) -> Result<Vec<Func>, ReferenceError> {
    let mut maps = MapTable::new(ev);
    types::check_program(ev, &ev.programs[index], &mut maps)
        .map(|c| c.funcs)
        .map_err(|diags| {
            ReferenceError::Compile(Failure {
                sources: ev.sources.clone(),
                diags,
            })
        })
}

/// Lua 5.4 with the libraries a program body may use: no io, os, load or debug.
fn sandbox() -> mlua::Result<Lua> {
    let lua = Lua::new_with(
        StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8,
        LuaOptions::default(),
    )?;
    let globals = lua.globals();
    for name in ["load", "loadstring", "dofile", "loadfile", "collectgarbage"] {
        globals.raw_set(name, Value::Nil)?;
    }
    let math: Table = globals.raw_get("math")?;
    math.raw_get::<Function>("randomseed")?.call::<()>(0)?;
    lua.set_memory_limit(MEMORY_LIMIT)?;
    Ok(lua)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded list and stdlib/shim/ agree: a new shim file needs its line in SHIM.
    #[test]
    fn every_shim_file_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../stdlib/shim");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "lua") {
                    on_disk.push(format!("stdlib/shim/{}", p.strip_prefix(&root).unwrap().display()));
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = SHIM.iter().map(|m| m.path.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
        for m in SHIM {
            assert_eq!(
                modules::module_path(m.name),
                Path::new(m.path).strip_prefix("stdlib/shim").unwrap()
            );
        }
    }

    /// Every built-in module of the compiler has its shim.
    #[test]
    fn every_builtin_has_a_shim() {
        for b in modules::BUILTIN_MODULES {
            assert!(SHIM.iter().any(|m| m.name == *b), "no shim for {b}");
        }
    }
}
