//! The built-in modules as the body sees them: plain Lua tables whose constants are real
//! values and whose functions either compute (byteorder), declare (maps, programs) or refuse
//! with a clear message (kernel services). Every function is registered by identity, so a
//! compiled function that captures one sees `ConstValue::Builtin("linux.byteorder.ntoh16")`.

use super::maps;
use super::programs::{self, HookKind};
use super::state::{borrow, borrow_mut, fail, Shared};
use crate::diag::Diagnostic;
use mlua::{Function, Lua, MultiValue, Table};
use runtime_bpf::object::MapKind;

pub(crate) const XDP_VERDICTS: &[(&str, i64)] = &[("ABORTED", 0), ("DROP", 1), ("PASS", 2), ("TX", 3), ("REDIRECT", 4)];
pub(crate) const TC_VERDICTS: &[(&str, i64)] = &[
    ("ACT_UNSPEC", -1),
    ("ACT_OK", 0),
    ("ACT_RECLASSIFY", 1),
    ("ACT_SHOT", 2),
    ("ACT_PIPE", 3),
    ("ACT_STOLEN", 4),
    ("ACT_QUEUED", 5),
    ("ACT_REPEAT", 6),
    ("ACT_REDIRECT", 7),
];
pub(crate) const NETFILTER_VERDICTS: &[(&str, i64)] = &[("DROP", 0), ("ACCEPT", 1)];

const MAP_CONSTRUCTORS: &[(&str, MapKind)] = &[
    ("hash", MapKind::Hash),
    ("lru_hash", MapKind::LruHash),
    ("percpu_hash", MapKind::PercpuHash),
    ("array", MapKind::Array),
    ("percpu_array", MapKind::PercpuArray),
    ("lpm_trie", MapKind::LpmTrie),
    ("ringbuf", MapKind::Ringbuf),
];

/// Builds the table of a built-in module (called once per module and compile; `require`
/// caches it).
pub(crate) fn module(lua: &Lua, st: &Shared, name: &str) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    match name {
        "linux.xdp" => constants(&table, XDP_VERDICTS)?,
        "linux.tc" => constants(&table, TC_VERDICTS)?,
        "linux.netfilter" => constants(&table, NETFILTER_VERDICTS)?,
        "linux.byteorder" => byteorder(lua, st, &table)?,
        "bpf" => kernel_services(lua, st, &table)?,
        "bpf.map" => {
            for &(ctor, kind) in MAP_CONSTRUCTORS {
                let f = lua.create_function({
                    let st = st.clone();
                    move |lua, args: MultiValue| maps::constructor(lua, &st, kind, args)
                })?;
                add(st, &table, name, ctor, f)?;
            }
        }
        "bpf.xdp" | "bpf.tc" | "bpf.netfilter" => {
            let hook = match name {
                "bpf.xdp" => HookKind::Xdp,
                "bpf.tc" => HookKind::Tc,
                _ => HookKind::Netfilter,
            };
            let f = lua.create_function({
                let st = st.clone();
                move |lua, args: MultiValue| programs::constructor(lua, &st, hook, args)
            })?;
            add(st, &table, name, "program", f)?;
            if hook != HookKind::Netfilter {
                let runtime = lua.create_function({
                    let st = st.clone();
                    move |lua, _: MultiValue| programs::runtime(lua, &st, hook)
                })?;
                add(st, &table, name, "runtime", runtime)?;
            }
        }
        _ => {
            return Err(mlua::Error::runtime(format!(
                "internal error: no built-in module `{name}`"
            )))
        }
    }
    Ok(table)
}

fn constants(table: &Table, values: &[(&str, i64)]) -> mlua::Result<()> {
    values.iter().try_for_each(|&(name, value)| table.raw_set(name, value))
}

/// Sets `table[field] = f` and registers `f` as `module.field`.
fn add(st: &Shared, table: &Table, module: &str, field: &str, f: Function) -> mlua::Result<()> {
    borrow_mut(st)?.register_builtin(&f, format!("{module}.{field}"));
    table.raw_set(field, f)
}

/// The host is little-endian (x86-64, arm64): network order conversions are byte swaps; the
/// 16- and 32-bit forms use the low bits of their argument and return a non-negative value.
fn byteorder(lua: &Lua, st: &Shared, table: &Table) -> mlua::Result<()> {
    type Swap = fn(i64) -> i64;
    let swaps: [(&str, Swap); 6] = [
        ("ntoh16", |x| (x as u16).swap_bytes() as i64),
        ("ntoh32", |x| (x as u32).swap_bytes() as i64),
        ("ntoh64", |x| x.swap_bytes()),
        ("hton16", |x| (x as u16).swap_bytes() as i64),
        ("hton32", |x| (x as u32).swap_bytes() as i64),
        ("hton64", |x| x.swap_bytes()),
    ];
    for (name, swap) in swaps {
        let f = lua.create_function(move |_, x: i64| Ok(swap(x)))?;
        add(st, table, "linux.byteorder", name, f)?;
    }
    Ok(())
}

/// `bpf.ktime`, `bpf.random` and `bpf.cpu` only mean something in the kernel: calling them in
/// the body is an error that says so. `bpf.print` prints to stderr, formatted like Lua.
fn kernel_services(lua: &Lua, st: &Shared, table: &Table) -> mlua::Result<()> {
    for (name, what) in [
        ("ktime", "reads the kernel's clock"),
        ("random", "asks the kernel for a random number"),
        ("cpu", "tells which CPU runs the program"),
    ] {
        let f = lua.create_function({
            let st = st.clone();
            move |lua, _: MultiValue| -> mlua::Result<()> {
                let span = borrow(&st)?.call_site(lua, name);
                fail(
                    Diagnostic::new(span, format!("`bpf.{name}()` {what}: it cannot run at compile time"), "called in the body")
                        .hint("call it inside a function handed to a program constructor; the file's top level runs once, in the compiler"),
                )
            }
        })?;
        add(st, table, "bpf", name, f)?;
    }
    let print = borrow(st)?.bpf_print.clone();
    if let Some(f) = print {
        table.raw_set("print", f)?;
    }
    Ok(())
}
