//! The front end: parsing, `require`, and the compile-time evaluation of program files.

use luabpf_compiler::diag::{render, Diagnostics};
use luabpf_compiler::eval::{evaluate, evaluate_source, EvalOptions};
use luabpf_compiler::modules::{self, Resolved, STDLIB};
use luabpf_compiler::program::{ConstTable, ConstValue, Evaluated, FunctionDecl, Hook};
use luabpf_compiler::source::{SourceDb, SourceFile};
use luabpf_compiler::syntax::{self, MAX_NESTING};
use runtime_bpf::object::{Field, Format, MapKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

// ---------------------------------------------------------------------------------------
// Helpers

fn eval(text: &str) -> Evaluated {
    match evaluate_source(text, "prog.lua", &EvalOptions::default()) {
        Ok(ev) => ev,
        Err((db, diags)) => panic!("evaluation failed:\n{}", render(&db, &diags)),
    }
}

/// Evaluates text that must fail; returns the rendered diagnostics and the diagnostics.
fn eval_err(text: &str) -> (String, Diagnostics, SourceDb) {
    match evaluate_source(text, "prog.lua", &EvalOptions::default()) {
        Ok(_) => panic!("evaluation unexpectedly succeeded"),
        Err((db, diags)) => (render(&db, &diags), diags, db),
    }
}

fn err_text(text: &str) -> String {
    eval_err(text).0
}

/// The 1-based line of the first diagnostic's span.
fn err_line(text: &str) -> u32 {
    let (_, diags, db) = eval_err(text);
    db.line_col(diags[0].span.file, diags[0].span.start).0
}

fn func<'a>(ev: &'a Evaluated, name: &str) -> &'a FunctionDecl {
    ev.functions.iter().find(|f| f.name == name).unwrap_or_else(|| {
        panic!(
            "no function {name}; have {:?}",
            ev.functions.iter().map(|f| &f.name).collect::<Vec<_>>()
        )
    })
}

fn upvalue<'a>(f: &'a FunctionDecl, name: &str) -> &'a ConstValue {
    f.upvalues
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| {
            panic!(
                "{} has no upvalue {name}; has {:?}",
                f.name,
                f.upvalues.iter().map(|u| &u.0).collect::<Vec<_>>()
            )
        })
}

fn table<'a>(ev: &'a Evaluated, v: &ConstValue) -> &'a ConstTable {
    match v {
        ConstValue::Table(id) => &ev.tables[*id],
        other => panic!("not a table: {other:?}"),
    }
}

fn field<'a>(t: &'a ConstTable, key: &str) -> &'a ConstValue {
    t.entries
        .iter()
        .find(|(k, _)| *k == ConstValue::Str(key.as_bytes().to_vec()))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {key}"))
}

fn int(bytes: u8, signed: bool) -> Format {
    Format::Int { bytes, signed }
}

fn record_fields(f: &Format) -> Vec<(&str, u32)> {
    match f {
        Format::Record(fields) => fields
            .iter()
            .map(|Field { name, offset, .. }| (name.as_str(), *offset))
            .collect(),
        other => panic!("not a record: {other:?}"),
    }
}

/// A fresh directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "luabpf-frontend-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

const HEADER: &str =
    "local xdp = require \"bpf.xdp\"\nlocal map = require \"bpf.map\"\nlocal action = require \"linux.xdp\"\n";

// ---------------------------------------------------------------------------------------
// A whole program file

const EXAMPLE: &str = r#"local xdp       = require "bpf.xdp"
local map       = require "bpf.map"
local action    = require "linux.xdp"
local eth       = require "net.eth"           -- stdlib, itself written in the subset
local bpf       = require "bpf"
local byteorder = require "linux.byteorder"

local MAX_NAME <const> = 64
local blocked = map.hash("blocked", { key = "c64", value = "I8", entries = 4096 })
local counts  = map.percpu_array{ value = "I8", entries = 256 }
local clients = map.lru_hash{ key = { saddr = "I4", dport = "I2" }, value = { hits = "I8", last = "I8" }, entries = 1024 }
local ports   = { 80, 443, 8080 }
local ntoh16  = byteorder.ntoh16
local SWAPPED = byteorder.ntoh16(0x0102)
local names   = {}
for i = 1, 3 do names[i] = "host" .. i end

local function is_web(port)
  for i = 1, #ports do
    if ports[i] == port then return true end
  end
  return false
end

local function filter(ctx)
  local packet = ctx:packet()
  if eth.ethertype(packet) ~= eth.IPV4 then return action.PASS end
  counts[0] = (counts[0] or 0) + 1
  local host = packet:getstring(54, MAX_NAME)
  local hits = blocked[host]
  if hits and is_web(ntoh16(packet:getuint16(36))) then
    blocked[host] = hits + 1
    clients[{ saddr = packet:getuint32(26), dport = SWAPPED }] = { hits = 1, last = bpf.ktime() }
    return action.DROP
  end
  return action.PASS
end

return xdp.program(filter, { name = "sni_filter" })
"#;

#[test]
fn example_program_evaluates() {
    let start = Instant::now();
    let ev = eval(EXAMPLE);
    let elapsed = start.elapsed();
    eprintln!("example evaluated in {elapsed:?}");

    // Maps, in declaration order; the unnamed ones take their variable's name.
    let names: Vec<&str> = ev.maps.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["blocked", "counts", "clients"]);
    let blocked = &ev.maps[0];
    assert_eq!(
        (
            blocked.kind,
            &blocked.key,
            &blocked.value,
            blocked.max_entries,
            blocked.flags
        ),
        (MapKind::Hash, &Format::Chars(64), &int(8, false), 4096, 0)
    );
    let counts = &ev.maps[1];
    assert_eq!(
        (counts.kind, &counts.key, counts.max_entries),
        (MapKind::PercpuArray, &int(4, false), 256)
    );
    let clients = &ev.maps[2];
    assert_eq!(clients.kind, MapKind::LruHash);
    assert_eq!(record_fields(&clients.key), [("saddr", 0), ("dport", 4)]);
    assert_eq!((clients.key.size(), clients.value.size()), (8, 16));
    assert_eq!(record_fields(&clients.value), [("hits", 0), ("last", 8)]);
    assert_eq!(
        &ev.sources.files[0].text[blocked.span.start..blocked.span.end],
        r#"map.hash("blocked", { key = "c64", value = "I8", entries = 4096 })"#
    );

    // The program.
    assert_eq!(ev.programs.len(), 1);
    let p = &ev.programs[0];
    assert_eq!(
        (p.name.as_str(), &p.hook, p.default_verdict),
        ("sni_filter", &Hook::Xdp, Some(2))
    );
    assert_eq!(ev.functions[p.entry].name, "filter");
    assert_eq!(
        &ev.sources.files[0].text[p.span.start..p.span.end],
        r#"xdp.program(filter, { name = "sni_filter" })"#
    );

    // The entry function and what it captures.
    let filter = func(&ev, "filter");
    assert!(
        ev.sources.files[filter.file as usize].text[filter.span.start..filter.span.end]
            .starts_with("function filter(ctx)")
    );
    assert_eq!(filter.body.get().expect("its syntax").parameters().len(), 1);
    assert_eq!(
        upvalue(filter, "MAX_NAME"),
        &ConstValue::Int(64),
        "a <const> local is still an upvalue"
    );
    assert_eq!(upvalue(filter, "blocked"), &ConstValue::Map(0));
    assert_eq!(upvalue(filter, "counts"), &ConstValue::Map(1));
    assert_eq!(upvalue(filter, "clients"), &ConstValue::Map(2));
    assert_eq!(
        upvalue(filter, "ntoh16"),
        &ConstValue::Builtin("linux.byteorder.ntoh16".into())
    );
    assert_eq!(
        upvalue(filter, "SWAPPED"),
        &ConstValue::Int(0x0201),
        "byteorder computes in the body"
    );
    assert!(!filter.upvalues.iter().any(|(n, _)| n == "_ENV"));
    let action = table(&ev, upvalue(filter, "action"));
    assert_eq!(field(action, "PASS"), &ConstValue::Int(2));
    assert_eq!(field(action, "DROP"), &ConstValue::Int(1));
    let bpf = table(&ev, upvalue(filter, "bpf"));
    assert_eq!(field(bpf, "ktime"), &ConstValue::Builtin("bpf.ktime".into()));

    // A local function reached through an upvalue, and the table it captures.
    let ConstValue::Function(is_web) = upvalue(filter, "is_web") else {
        panic!("is_web is not a function")
    };
    assert_eq!(ev.functions[*is_web].name, "is_web");
    let ports = table(&ev, upvalue(&ev.functions[*is_web], "ports"));
    assert_eq!(
        ports.entries,
        [
            (ConstValue::Int(1), ConstValue::Int(80)),
            (ConstValue::Int(2), ConstValue::Int(443)),
            (ConstValue::Int(3), ConstValue::Int(8080))
        ]
    );
    assert_eq!(ports.name.as_deref(), Some("ports"));
    let span = ports.span.expect("span of the ports table");
    assert_eq!(&ev.sources.files[0].text[span.start..span.end], "{ 80, 443, 8080 }");

    // A module from the embedded stdlib, its functions and their upvalues.
    let eth = table(&ev, upvalue(filter, "eth"));
    assert_eq!(eth.name.as_deref(), Some("eth"));
    assert_eq!(field(eth, "IPV4"), &ConstValue::Int(0x0800));
    let ConstValue::Function(ethertype) = field(eth, "ethertype") else {
        panic!("eth.ethertype is not a function")
    };
    let ethertype = &ev.functions[*ethertype];
    assert_eq!(ethertype.name, "eth.ethertype");
    assert_eq!(ev.sources.files[ethertype.file as usize].name, "stdlib/net/eth.lua");
    assert_eq!(
        upvalue(ethertype, "ntoh16"),
        &ConstValue::Builtin("linux.byteorder.ntoh16".into())
    );
    // A local helper that two module functions capture is one function.
    let (ipv4, ipv6) = (func(&ev, "eth.ipv4"), func(&ev, "eth.ipv6"));
    assert!(matches!(upvalue(ipv4, "walk"), ConstValue::Function(_)));
    assert_eq!(
        upvalue(ipv4, "walk"),
        upvalue(ipv6, "walk"),
        "the shared helper is deduplicated"
    );
    let ConstValue::Function(walk) = upvalue(ipv4, "walk") else {
        unreachable!()
    };
    assert_eq!(ev.functions[*walk].name, "walk");
}

#[test]
fn examples_directory_evaluates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "lua") {
            let start = Instant::now();
            if let Err((db, diags)) = evaluate(&path, &EvalOptions::default()) {
                panic!("{} failed:\n{}", path.display(), render(&db, &diags));
            }
            eprintln!("{}: {:?}", path.display(), start.elapsed());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Maps

#[test]
fn record_field_order_is_source_order() {
    let ev = eval(&format!(
        r#"{HEADER}
local rec = {{ b = "I4", a = "I2" }}
local m1 = map.hash{{ key = {{ z = "I1", a = "I8", m = "I2" }}, value = rec, entries = 8 }}
local m2 = map.hash("m2", {{
  key   = {{ y = "I4", x = "I4" }},
  value = {{ x = "I4", y = "I4", inner = {{ q = "c3", p = "I2" }} }},
  entries = 8,
}})
local function f() return m1, m2 end
return xdp.program(f)
"#
    ));
    assert_eq!(record_fields(&ev.maps[0].key), [("z", 0), ("a", 8), ("m", 16)]);
    assert_eq!(ev.maps[0].key.size(), 24);
    assert_eq!(record_fields(&ev.maps[0].value), [("b", 0), ("a", 4)]);
    // Same names, different orders, in one call: each resolved from its own constructor.
    assert_eq!(record_fields(&ev.maps[1].key), [("y", 0), ("x", 4)]);
    assert_eq!(record_fields(&ev.maps[1].value), [("x", 0), ("y", 4), ("inner", 8)]);
    let Format::Record(fields) = &ev.maps[1].value else {
        unreachable!()
    };
    assert_eq!(record_fields(&fields[2].format), [("q", 0), ("p", 4)]);
}

#[test]
fn record_built_without_a_constructor_is_refused() {
    let text = format!("{HEADER}local rec = {{}}\nrec.a = \"I4\"\nrec.b = \"I8\"\nlocal m = map.hash{{ key = \"I4\", value = rec, entries = 8 }}\nreturn xdp.program(function() end)\n");
    let out = err_text(&text);
    assert!(out.contains("cannot tell the order of this record's fields"), "{out}");
    assert_eq!(err_line(&text), 7);
}

#[test]
fn formats_aliases_and_strings() {
    let ev = eval(&format!(
        r#"{HEADER}
local a = map.hash{{ key = "b", value = "B", entries = 1 }}
local b = map.hash{{ key = "h", value = "H", entries = 1 }}
local c = map.hash{{ key = "i", value = "I", entries = 1 }}
local d = map.hash{{ key = "j", value = "J", entries = 1 }}
local e = map.hash{{ key = "c7", value = "i2", entries = 1.0 }}
local t = map.lpm_trie{{ key = {{ prefixlen = "I4", addr = "I4" }}, value = "I1", entries = 16 }}
return xdp.program(function() return a, b, c, d, e, t end)
"#
    ));
    let formats: Vec<(&Format, &Format)> = ev.maps.iter().map(|m| (&m.key, &m.value)).collect();
    assert_eq!(formats[0], (&int(1, true), &int(1, false)));
    assert_eq!(formats[1], (&int(2, true), &int(2, false)));
    assert_eq!(formats[2], (&int(4, true), &int(4, false)));
    assert_eq!(formats[3], (&int(8, true), &int(8, false)));
    assert_eq!(formats[4], (&Format::Chars(7), &int(2, true)));
    assert_eq!((ev.maps[5].kind, ev.maps[5].flags), (MapKind::LpmTrie, 1));
}

#[test]
fn map_names() {
    let ev = eval(&format!(
        r#"{HEADER}
local first = map.hash{{ key = "I4", value = "I4", entries = 1 }}
local alias = first
local unused = map.array{{ value = "I4", entries = 1 }}
local M = {{}}
M.field = map.array{{ value = "I4", entries = 1 }}
local list = {{ map.array{{ value = "I4", entries = 1 }} }}
local function f() return alias end
return xdp.program(f)
"#
    ));
    let names: Vec<&str> = ev.maps.iter().map(|m| m.name.as_str()).collect();
    // The upvalue that holds it wins over the variable it was assigned to.
    assert_eq!(names, ["alias", "unused", "field", "map3"]);
}

#[test]
fn map_errors() {
    let cases: &[(&str, &str)] = &[
        (
            r#"map.hash{ key = "I3", value = "I8", entries = 1 }"#,
            "unknown format `I3`",
        ),
        (
            r#"map.hash{ key = "I4I4", value = "I8", entries = 1 }"#,
            "unknown format `I4I4`",
        ),
        (
            r#"map.hash{ key = 4, value = "I8", entries = 1 }"#,
            "must be a string or a table",
        ),
        (r#"map.hash{ value = "I8", entries = 1 }"#, "needs a `key` format"),
        (r#"map.hash{ key = "I4", entries = 1 }"#, "needs a `value` format"),
        (r#"map.hash{ key = "I4", value = "I8" }"#, "needs `entries`"),
        (
            r#"map.hash{ key = "I4", value = "I8", entries = 0 }"#,
            "`entries` must be a positive integer",
        ),
        (
            r#"map.hash{ key = "I4", value = "I8", entries = -5 }"#,
            "`entries` must be a positive integer",
        ),
        (
            r#"map.hash{ key = "I4", value = "I8", entries = 1.5 }"#,
            "`entries` must be a positive integer",
        ),
        (
            r#"map.hash{ key = "I4", value = "I8", entries = 1, size = 3 }"#,
            "unknown option `size`",
        ),
        (
            r#"map.array{ key = "I8", value = "I8", entries = 1 }"#,
            "the key of an array map must be a 4-byte integer",
        ),
        (
            r#"map.percpu_array{ key = "c4", value = "I8", entries = 1 }"#,
            "the key of an array map must be a 4-byte integer",
        ),
        (
            r#"map.hash("bad name", { key = "I4", value = "I8", entries = 1 })"#,
            "`bad name` cannot name a map",
        ),
        (
            r#"map.hash(3, { key = "I4", value = "I8", entries = 1 })"#,
            "a map name must be a string",
        ),
        (
            r#"map.hash("a", { name = "b", key = "I4", value = "I8", entries = 1 })"#,
            "named both",
        ),
        (
            r#"map.hash{ key = {}, value = "I8", entries = 1 }"#,
            "at least one field",
        ),
        (
            r#"map.hash{ key = { "I4" }, value = "I8", entries = 1 }"#,
            "fields must be named",
        ),
        (r#"map.ringbuf{ entries = 4096 }"#, "`map.ringbuf` is not supported yet"),
        (r#"map.hash()"#, "bad arguments to `map.hash`"),
    ];
    for (ctor, expected) in cases {
        let text = format!("{HEADER}\nlocal m = {ctor}\nreturn xdp.program(function() return m end)\n");
        let out = err_text(&text);
        assert!(out.contains(expected), "for {ctor}: expected `{expected}` in\n{out}");
        assert_eq!(err_line(&text), 5, "line for {ctor}:\n{out}");
    }
}

#[test]
fn duplicate_map_names() {
    let text = format!("{HEADER}local a = map.hash(\"x\", {{ key = \"I4\", value = \"I4\", entries = 1 }})\nlocal b = map.hash(\"x\", {{ key = \"I4\", value = \"I4\", entries = 1 }})\nreturn xdp.program(function() return a, b end)\n");
    let out = err_text(&text);
    assert!(out.contains("two maps are named `x`"), "{out}");
    assert_eq!(err_line(&text), 5);
}

#[test]
fn maps_cannot_be_used_in_the_body() {
    let text = format!("{HEADER}local m = map.hash{{ key = \"I4\", value = \"I4\", entries = 1 }}\nm[1] = 2\nreturn xdp.program(function() return m end)\n");
    let out = err_text(&text);
    assert!(out.contains("a map cannot be written at compile time"), "{out}");
    assert_eq!(err_line(&text), 5);
}

// ---------------------------------------------------------------------------------------
// Programs

#[test]
fn program_kinds_and_options() {
    let ev = eval(
        r#"local xdp = require "bpf.xdp"
local tc = require "bpf.tc"
local nf = require "bpf.netfilter"
local act = require "linux.tc"
local function a() end
local function b() end
local function c() end
local function d() end
return {
  xdp.program(a),
  tc.program(b, { name = "egress_b", egress = true, default = act.ACT_SHOT }),
  nf.program(c, { name = "nf_c" }),
  nf.program(d, { name = "nf_d", family = "ipv6", hook = "forward", priority = -10, default = 0 }),
}
"#,
    );
    let p = &ev.programs;
    assert_eq!(p.len(), 4);
    assert_eq!(
        (p[0].name.as_str(), &p[0].hook, p[0].default_verdict),
        ("prog", &Hook::Xdp, Some(2))
    );
    assert_eq!(
        (p[1].name.as_str(), &p[1].hook, p[1].default_verdict),
        ("egress_b", &Hook::Tc { egress: true }, Some(2))
    );
    assert_eq!(
        (&p[2].hook, p[2].default_verdict),
        (
            &Hook::Netfilter {
                family: "ipv4".into(),
                hook: "local_in".into(),
                priority: 0
            },
            Some(1)
        )
    );
    assert_eq!(
        (&p[3].hook, p[3].default_verdict),
        (
            &Hook::Netfilter {
                family: "ipv6".into(),
                hook: "forward".into(),
                priority: -10
            },
            Some(0)
        )
    );
    let entries: Vec<&str> = p.iter().map(|p| ev.functions[p.entry].name.as_str()).collect();
    assert_eq!(entries, ["a", "b", "c", "d"]);
}

#[test]
fn default_program_name_is_the_file_stem() {
    let ev = evaluate_source(
        "local xdp = require 'bpf.xdp'\nreturn xdp.program(function() end)\n",
        "dir/my-filter.v2.lua",
        &EvalOptions::default(),
    )
    .unwrap_or_else(|(db, d)| panic!("{}", render(&db, &d)));
    assert_eq!(ev.programs[0].name, "my_filter_v2");
    assert_eq!(ev.functions[0].name, "<anonymous>");
}

#[test]
fn program_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "xdp.program(f, { default = 99 })",
            "`default` must be one of the hook's verdicts",
        ),
        ("xdp.program(f, { defualt = 1 })", "unknown option `defualt`"),
        (
            "xdp.program(f, { name = 'has space' })",
            "a program name must be an identifier string",
        ),
        ("xdp.program(f, { egress = true })", "unknown option `egress`"),
        ("xdp.program(42)", "expects a function, got an integer"),
        ("xdp.program(print)", "needs a function written in Lua"),
        ("xdp.program(f, 3)", "the options must be a table"),
        (
            "require('bpf.tc').program(f, { egress = 1 })",
            "`egress` must be a boolean",
        ),
        (
            "require('bpf.netfilter').program(f, { hook = 'input' })",
            "bad `hook` for a netfilter program",
        ),
        (
            "require('bpf.netfilter').program(f, { family = 'ipx' })",
            "bad `family`",
        ),
        (
            "require('bpf.netfilter').program(f, { priority = 2147483647 })",
            "`priority` must be a 32-bit integer",
        ),
    ];
    for (call, expected) in cases {
        let text = format!("{HEADER}local function f() end\nlocal p = {call}\nreturn p\n");
        let out = err_text(&text);
        assert!(out.contains(expected), "for {call}: expected `{expected}` in\n{out}");
        assert_eq!(err_line(&text), 5, "line for {call}:\n{out}");
    }
}

#[test]
fn body_must_return_programs() {
    let cases: &[(&str, &str)] = &[
        ("", "returns no program"),
        ("return 42", "returns an integer, not a program"),
        ("return {}", "returns an empty table"),
        (
            "return { xdp.program(function() end), 3 }",
            "element 2 of the returned table is an integer",
        ),
        (
            "return xdp.program(function() end), xdp.program(function() end)",
            "returns 2 values",
        ),
        (
            "local m = map.hash{ key = 'I4', value = 'I4', entries = 1 }\nreturn m",
            "returns a map, not a program",
        ),
    ];
    for (tail, expected) in cases {
        let out = err_text(&format!("{HEADER}{tail}\n"));
        assert!(out.contains(expected), "for {tail:?}: expected `{expected}` in\n{out}");
    }
    insta::assert_snapshot!("no_program", err_text(&format!("{HEADER}local x = 1\nreturn x\n")));
}

#[test]
fn duplicate_program_names() {
    let out = err_text(&format!(
        "{HEADER}local function f() end\nreturn {{ xdp.program(f), xdp.program(f) }}\n"
    ));
    assert!(out.contains("two programs are named `prog`"), "{out}");
}

// ---------------------------------------------------------------------------------------
// Functions and captured values

#[test]
fn upvalue_values() {
    let ev = eval(&format!(
        r#"{HEADER}
local i, fl, s, yes, none = 7, 1.5, "a\0b", true, nil
local cfg = {{ ports = {{ 80, 443 }}, name = "x", [10] = 1, [false] = 2 }}
cfg.self = cfg
local helper = function(x) return x + i end
local co = coroutine
local function f()
  return i, fl, s, yes, none, cfg, helper, error, print, string, co
end
return xdp.program(f)
"#
    ));
    let f = func(&ev, "f");
    assert_eq!(upvalue(f, "i"), &ConstValue::Int(7));
    assert_eq!(upvalue(f, "fl"), &ConstValue::Float(1.5));
    assert_eq!(upvalue(f, "s"), &ConstValue::Str(b"a\0b".to_vec()));
    assert_eq!(upvalue(f, "yes"), &ConstValue::Bool(true));
    assert_eq!(upvalue(f, "none"), &ConstValue::Nil);
    assert_eq!(upvalue(f, "co"), &ConstValue::Nil, "no coroutine library");
    // `error`, `print` and `string` are globals there, not upvalues.
    assert!(!f.upvalues.iter().any(|(n, _)| n == "error" || n == "string"));
    let cfg = table(&ev, upvalue(f, "cfg"));
    assert_eq!(cfg.name.as_deref(), Some("cfg"));
    // Sorted and reproducible: booleans, integers, then strings.
    let keys: Vec<&ConstValue> = cfg.entries.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            &ConstValue::Bool(false),
            &ConstValue::Int(10),
            &ConstValue::Str(b"name".to_vec()),
            &ConstValue::Str(b"ports".to_vec()),
            &ConstValue::Str(b"self".to_vec())
        ]
    );
    assert_eq!(field(cfg, "self"), upvalue(f, "cfg"), "a cycle is one table");
    let ports = table(&ev, field(cfg, "ports"));
    assert_eq!(ports.name.as_deref(), Some("cfg.ports"));
    let ConstValue::Function(helper) = upvalue(f, "helper") else {
        panic!()
    };
    assert_eq!(ev.functions[*helper].name, "helper");
    assert_eq!(upvalue(&ev.functions[*helper], "i"), &ConstValue::Int(7));
}

#[test]
fn captured_builtins_and_globals() {
    let ev = eval(&format!(
        r#"{HEADER}
local bo = require "linux.byteorder"
local bpf = require "bpf"
local err, pc, req = error, pcall, require
local n16, h64, kt, pr = bo.ntoh16, bo.hton64, bpf.ktime, bpf.print
local hash = map.hash
local function f() return n16, h64, kt, pr, err, pc, req, hash, xdp.program end
return xdp.program(f)
"#
    ));
    let f = func(&ev, "f");
    let builtin = |name: &str| match upvalue(f, name) {
        ConstValue::Builtin(b) => b.as_str(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(builtin("n16"), "linux.byteorder.ntoh16");
    assert_eq!(builtin("h64"), "linux.byteorder.hton64");
    assert_eq!(builtin("kt"), "bpf.ktime");
    assert_eq!(builtin("pr"), "bpf.print");
    assert_eq!(builtin("err"), "error");
    assert_eq!(builtin("pc"), "pcall");
    assert_eq!(builtin("req"), "require");
    assert_eq!(builtin("hash"), "bpf.map.hash");
    let xdp = table(&ev, upvalue(f, "xdp"));
    assert_eq!(field(xdp, "program"), &ConstValue::Builtin("bpf.xdp.program".into()));
}

#[test]
fn byteorder_in_the_body() {
    let ev = eval(&format!(
        r#"{HEADER}
local bo = require "linux.byteorder"
local a, b, c, d = bo.ntoh16(0x10102), bo.ntoh32(0x01020304), bo.hton64(0x0102030405060708), bo.ntoh16(-1)
local function f() return a, b, c, d end
return xdp.program(f)
"#
    ));
    let f = func(&ev, "f");
    assert_eq!(upvalue(f, "a"), &ConstValue::Int(0x0201));
    assert_eq!(upvalue(f, "b"), &ConstValue::Int(0x04030201));
    assert_eq!(upvalue(f, "c"), &ConstValue::Int(0x0807060504030201));
    assert_eq!(upvalue(f, "d"), &ConstValue::Int(0xffff));
}

#[test]
fn function_sites() {
    let ev = eval(&format!(
        r#"{HEADER}
local M = {{}}
function M.a(x) return x end
function M.b
  (x)
  return M.a(x)
end
local g = function
(y) return y end
local function f() return M.b(1), g(2) end
return xdp.program(f)
"#
    ));
    for name in ["f", "M.b", "M.a", "g"] {
        let decl = func(&ev, name);
        let text = &ev.sources.files[0].text[decl.span.start..decl.span.end];
        assert!(text.starts_with("function") && text.ends_with("end"), "{name}: {text}");
    }
}

#[test]
fn two_functions_on_one_line() {
    let text = format!("{HEADER}local a, b = function() return 1 end, function() return 2 end\nreturn xdp.program(function() return a() + b() end)\n");
    let out = err_text(&text);
    assert!(out.contains("several functions start on line 4"), "{out}");
    insta::assert_snapshot!("two_functions_on_one_line", out);
}

// ---------------------------------------------------------------------------------------
// Errors from the body

#[test]
fn runtime_errors_point_at_their_line() {
    let cases: &[(&str, &str, u32)] = &[
        ("local t = os.time()", "attempt to index a nil value (global 'os')", 4),
        ("local x = nil\nx()", "attempt to call a nil value (local 'x')", 5),
        ("error('custom failure')", "custom failure", 4),
        ("local function g()\n  error('deep')\nend\ng()", "deep", 5),
        (
            "local t = {}\nlocal y = t.a.b",
            "attempt to index a nil value (field 'a')",
            5,
        ),
        ("io.write('x')", "global 'io'", 4),
        ("load('return 1')()", "global 'load'", 4),
        ("require('linux.byteorder').ntoh16('abc')", "bad argument", 4),
        (
            "local bpf = require 'bpf'\nlocal t = bpf.ktime()",
            "`bpf.ktime()` reads the kernel's clock",
            5,
        ),
        ("error({})", "error in the compile-time body", 4),
        (
            "local x <const> = 1\nx = 2",
            "attempt to assign to const variable 'x'",
            5,
        ),
    ];
    for (body, expected, line) in cases {
        let text = format!("{HEADER}{body}\nreturn xdp.program(function() end)\n");
        let out = err_text(&text);
        assert!(out.contains(expected), "for {body:?}: expected `{expected}` in\n{out}");
        assert_eq!(err_line(&text), *line, "line for {body:?}:\n{out}");
    }
    insta::assert_snapshot!(
        "runtime_error",
        err_text(&format!(
            "{HEADER}local limits = {{ max = 10 }}\nlocal n = limits.min + 1\nreturn xdp.program(function() end)\n"
        ))
    );
}

#[test]
fn syntax_errors() {
    let text = format!("{HEADER}local s = \"unterminated\nreturn xdp.program(function() end)\n");
    let out = err_text(&text);
    assert!(out.contains("unterminated string"), "{out}");
    assert_eq!(err_line(&text), 4);
    insta::assert_snapshot!("unterminated_string", out);

    let text = format!("{HEADER}local function f()\n  if x then\n    return 1\nend\nreturn xdp.program(f)\n");
    let out = err_text(&text);
    assert!(out.contains("syntax error"), "{out}");
    insta::assert_snapshot!("missing_end", out);

    let out = err_text("local x = = 2\n");
    assert!(out.contains("syntax error"), "{out}");
}

#[test]
fn body_that_never_finishes() {
    for body in [
        "while true do end",
        "local i = 0\nwhile true do i = i + 1 end",
        "local function spin() while true do end end\nwhile true do pcall(spin) end",
        "repeat until false",
        "local function f() return f() end\nf()",
    ] {
        let start = Instant::now();
        let text = format!("{HEADER}{body}\nreturn xdp.program(function() end)\n");
        let out = err_text(&text);
        assert!(
            out.contains("the compile-time body did not finish"),
            "for {body:?}:\n{out}"
        );
        assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
    }
    insta::assert_snapshot!(
        "did_not_finish",
        err_text(&format!(
            "{HEADER}local n = 0\nwhile n >= 0 do\n  n = n + 1\nend\nreturn xdp.program(function() end)\n"
        ))
    );
}

#[test]
fn body_that_uses_too_much_memory() {
    let text = format!("{HEADER}local s = 'x'\nwhile true do s = s .. s end\nreturn xdp.program(function() end)\n");
    let out = err_text(&text);
    assert!(
        out.contains("ran out of memory") || out.contains("not enough memory") || out.contains("did not finish"),
        "{out}"
    );
    let text =
        format!("{HEADER}local t = {{}}\nfor i = 1, 1e9 do t[i] = {{ i }} end\nreturn xdp.program(function() end)\n");
    let out = err_text(&text);
    assert!(
        out.contains("ran out of memory") || out.contains("did not finish"),
        "{out}"
    );
}

#[test]
fn print_goes_to_stderr_and_pcall_works() {
    let ev = eval(&format!(
        "{HEADER}print('hello from the body', 1, nil, true)\nlocal ok, err = pcall(error, 'caught')\nlocal ok2 = pcall(function() return 1 end)\nlocal function f() return ok, err, ok2 end\nreturn xdp.program(f)\n"
    ));
    let f = func(&ev, "f");
    assert_eq!(upvalue(f, "ok"), &ConstValue::Bool(false));
    assert_eq!(upvalue(f, "err"), &ConstValue::Str(b"caught".to_vec()));
    assert_eq!(upvalue(f, "ok2"), &ConstValue::Bool(true));
}

#[test]
fn math_random_is_reproducible() {
    let text =
        format!("{HEADER}local r = math.random(1, 1000000)\nlocal function f() return r end\nreturn xdp.program(f)\n");
    let a = upvalue(func(&eval(&text), "f"), "r").clone();
    let b = upvalue(func(&eval(&text), "f"), "r").clone();
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------------------
// require

#[test]
fn unknown_module() {
    let text = format!("{HEADER}local x = require \"net.nope\"\nreturn xdp.program(function() end)\n");
    let out = err_text(&text);
    assert!(out.contains("module `net.nope` not found"), "{out}");
    assert!(out.contains("net/nope.lua"), "{out}");
    assert_eq!(err_line(&text), 4);
    insta::assert_snapshot!("unknown_module", out);

    let out = err_text(&format!("{HEADER}local x = require \"../etc/passwd\"\n"));
    assert!(out.contains("is not a module name"), "{out}");
}

#[test]
fn relative_and_include_requires() {
    let root = temp_dir("require");
    let prog_dir = root.join("prog");
    let inc = root.join("inc");
    write(
        &prog_dir.join("lib/util.lua"),
        "local M = {}\nM.K = 5\nfunction M.twice(x) return 2 * x end\nreturn M\n",
    );
    write(
        &inc.join("extra.lua"),
        "local util = require 'lib.util'\nreturn { k = util.K + 1, f = function(x) return util.twice(x) end }\n",
    );
    write(&inc.join("lib/shadowed.lua"), "return 'from -I'\n");
    write(&prog_dir.join("lib/shadowed.lua"), "return 'relative'\n");
    write(
        &inc.join("broken.lua"),
        "local M = {}\n\nlocal y = M.nothing.x\nreturn M\n",
    );
    let prog = prog_dir.join("main.lua");
    write(
        &prog,
        &format!("{HEADER}local util = require 'lib.util'\nlocal extra = require 'extra'\nlocal which = require 'lib.shadowed'\nlocal again = require 'lib.util'\nassert(again == util)\nlocal function f(x) return util.twice(x) + extra.k + extra.f(x), which end\nreturn xdp.program(f)\n"),
    );
    let opts = EvalOptions {
        include_dirs: vec![inc.clone()],
    };
    let ev = evaluate(&prog, &opts).unwrap_or_else(|(db, d)| panic!("{}", render(&db, &d)));
    let f = func(&ev, "f");
    assert_eq!(
        upvalue(f, "which"),
        &ConstValue::Str(b"relative".to_vec()),
        "the program's directory comes before -I"
    );
    let twice = func(&ev, "util.twice");
    assert!(ev.sources.files[twice.file as usize].name.ends_with("lib/util.lua"));
    assert_eq!(
        ev.sources.files[twice.file as usize].path.as_deref(),
        Some(prog_dir.join("lib/util.lua").as_path())
    );
    let extra = table(&ev, upvalue(f, "extra"));
    assert_eq!(field(extra, "k"), &ConstValue::Int(6));
    assert_eq!(func(&ev, "extra.f").upvalues.len(), 1);

    // Without -I the module is not found, and the places searched are listed.
    let (db, diags) = evaluate(&prog, &EvalOptions::default()).expect_err("must fail");
    let out = render(&db, &diags);
    assert!(
        out.contains("module `extra` not found") && out.contains("extra.lua"),
        "{out}"
    );

    // An error inside a module points into the module.
    write(
        &prog,
        &format!("{HEADER}local b = require 'broken'\nreturn xdp.program(function() end)\n"),
    );
    let (db, diags) = evaluate(&prog, &opts).expect_err("must fail");
    let out = render(&db, &diags);
    assert!(out.contains("broken.lua:3"), "{out}");
    assert!(db.files[diags[0].span.file as usize].name.ends_with("broken.lua"));

    // A syntax error in a module.
    write(&inc.join("broken.lua"), "local M = {\n");
    let (db, diags) = evaluate(&prog, &opts).expect_err("must fail");
    assert!(
        db.files[diags[0].span.file as usize].name.ends_with("broken.lua"),
        "{}",
        render(&db, &diags)
    );

    // A cycle.
    write(&prog_dir.join("a.lua"), "return require 'b'\n");
    write(&prog_dir.join("b.lua"), "return require 'a'\n");
    write(
        &prog,
        &format!("{HEADER}local a = require 'a'\nreturn xdp.program(function() end)\n"),
    );
    let (db, diags) = evaluate(&prog, &opts).expect_err("must fail");
    let out = render(&db, &diags);
    assert!(out.contains("circular `require`: a -> b -> a"), "{out}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn missing_and_non_utf8_files() {
    let (db, diags) = evaluate(Path::new("/nonexistent/prog.lua"), &EvalOptions::default()).expect_err("must fail");
    assert!(render(&db, &diags).contains("cannot read /nonexistent/prog.lua"));
    let dir = temp_dir("utf8");
    let path = dir.join("bad.lua");
    std::fs::write(&path, b"local x = 1\nlocal s = '\xff\xfe'\n").expect("write");
    let (db, diags) = evaluate(&path, &EvalOptions::default()).expect_err("must fail");
    let out = render(&db, &diags);
    assert!(out.contains("not valid UTF-8"), "{out}");
    assert_eq!(db.line_col(0, diags[0].span.start).0, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shebang_line_is_skipped() {
    let ev =
        eval("#!/usr/bin/env luabpf\nlocal xdp = require 'bpf.xdp'\nlocal function f() end\nreturn xdp.program(f)\n");
    assert_eq!(ev.functions[0].name, "f");
}

#[test]
fn stdlib_table_matches_the_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut on_disk = Vec::new();
    let mut dirs = vec![root.join("stdlib")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("stdlib dir").flatten() {
            let path = entry.path();
            // stdlib/shim/ is the reference's host side (compiler/src/reference), not modules.
            if path.is_dir() && path != root.join("stdlib").join("shim") {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "lua") {
                on_disk.push(
                    path.strip_prefix(&root)
                        .expect("prefix")
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    on_disk.sort();
    let mut embedded: Vec<String> = STDLIB.iter().map(|m| m.path.to_string()).collect();
    embedded.sort();
    assert_eq!(on_disk, embedded, "add new stdlib files to modules::STDLIB");
    for m in STDLIB {
        assert_eq!(std::fs::read_to_string(root.join(m.path)).expect("read"), m.text);
        assert_eq!(
            modules::module_path(m.name).to_string_lossy().replace('\\', "/"),
            m.path.trim_start_matches("stdlib/")
        );
        // Every stdlib module parses and runs on its own.
        let mut db = SourceDb::default();
        let id = db.add(SourceFile {
            name: m.path.into(),
            path: None,
            text: m.text.into(),
        });
        assert!(syntax::parse(&db, id).is_ok(), "{} does not parse", m.path);
    }
}

#[test]
fn resolution_order() {
    let dir = temp_dir("resolve");
    write(&dir.join("bpf/map.lua"), "return 1\n");
    write(&dir.join("net/eth.lua"), "return 1\n");
    assert!(matches!(
        modules::resolve("bpf.map", &dir, &[]),
        Ok(Resolved::Builtin("bpf.map"))
    ));
    assert!(matches!(modules::resolve("net.eth", &dir, &[]), Ok(Resolved::Stdlib(m)) if m.name == "net.eth"));
    assert!(matches!(
        modules::resolve("a..b", &dir, &[]),
        Err(modules::ResolveError::BadName)
    ));
    assert!(matches!(
        modules::resolve("a/b", &dir, &[]),
        Err(modules::ResolveError::BadName)
    ));
    assert!(matches!(
        modules::resolve("", &dir, &[]),
        Err(modules::ResolveError::BadName)
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Parsing: depth, garbage, spans

fn parse_text(text: &str) -> Result<(), String> {
    let mut db = SourceDb::default();
    let id = db.add(SourceFile {
        name: "t.lua".into(),
        path: None,
        text: text.into(),
    });
    syntax::parse(&db, id).map(|_| ()).map_err(|d| render(&db, &d))
}

#[test]
fn deep_nesting_is_a_diagnostic() {
    for text in [
        format!("local x = {}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        "(((".repeat(1_000_000),
        format!("local x = {}", "{".repeat(100_000)),
        format!("{}{}", "do ".repeat(50_000), "end ".repeat(50_000)),
        format!("local x = 1{}", " + 1".repeat(100_000)),
        format!("local x = 'a'{}", " .. 'a'".repeat(100_000)),
        format!("local x = {}1", "- ".repeat(100_000)),
        format!("local x = {}1", "not ".repeat(100_000)),
        "function f() ".repeat(10_000),
    ] {
        let out = parse_text(&text).expect_err("must be refused");
        assert!(
            out.contains(&format!("nesting too deep (limit {MAX_NESTING})")),
            "{}",
            &out[..out.len().min(500)]
        );
    }
    // Within the limit: accepted, and full_moon does not overflow its (large) stack.
    let depth = MAX_NESTING - 10;
    parse_text(&format!("local x = {}1{}", "(".repeat(depth), ")".repeat(depth))).expect("nesting within the limit");
    parse_text(&format!("local x = 1{}", " + 1".repeat(depth - 5))).expect("chain within the limit");
    // Long flat code is fine: separate statements and arguments reset the count.
    parse_text(&"local x = 1 + 2\n".repeat(20_000)).expect("many statements");
    parse_text(&format!("f({})", vec!["a + b"; 5_000].join(", "))).expect("many arguments");
    // Strings and comments do not count.
    parse_text(&format!(
        "local s = '{}' -- {}\nlocal t = [[{}]]",
        "(".repeat(1000),
        "{".repeat(1000),
        "((".repeat(1000)
    ))
    .expect("brackets in strings");

    let out = err_text(&format!("local x = {}1{}\n", "(".repeat(100_000), ")".repeat(100_000)));
    assert!(out.contains("nesting too deep"));
    insta::assert_snapshot!(
        "nesting_too_deep",
        err_text(&format!(
            "local xdp = require 'bpf.xdp'\nlocal x =\n{}\n",
            "{\n".repeat(300)
        ))
    );
}

#[test]
fn garbage_never_panics() {
    let mut inputs: Vec<String> = vec![
        String::new(),
        "\"".into(),
        "'abc".into(),
        "[[never closed".into(),
        "--[==[ never closed".into(),
        "]]".into(),
        "local".into(),
        "local function".into(),
        "function(".into(),
        "x = {".into(),
        "return return".into(),
        "0x".into(),
        "1e".into(),
        "3..4".into(),
        "a.b.c:d".into(),
        "goto".into(),
        "::".into(),
        "local x <const".into(),
        "local x <bogus> = 1".into(),
        "\u{0}\u{1}\u{2}".into(),
        "é = 1".into(),
        "if then else end".into(),
        "for = 1".into(),
        "x = 1 +".into(),
        "#".into(),
        "#!".into(),
        "\\".into(),
        "local t = { [1] }".into(),
        "return ...".into(),
        ")))))".into(),
        "end end end".into(),
        "local s = `template`".into(),
        "-- `in a comment`\nlocal s = '`in a string`'".into(),
    ];
    // Deterministic pseudo-random inputs: bytes, and soups of Lua tokens.
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let tokens = [
        "local", "function", "end", "(", ")", "{", "}", "[", "]", "=", "==", "..", "...", "x", "1", "'s'", "\"", "if",
        "then", "do", "return", ",", ";", ":", ".", "+", "--", "[[", "]]", "\n", "<const>", "#", "~", "goto", "::l::",
    ];
    for _ in 0..300 {
        let len = (next() % 200) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (next() % 128) as u8).collect();
        inputs.push(String::from_utf8_lossy(&bytes).into_owned());
        let soup: Vec<&str> = (0..len)
            .map(|_| tokens[(next() % tokens.len() as u64) as usize])
            .collect();
        inputs.push(soup.join(" "));
    }
    for input in &inputs {
        let _ = parse_text(input);
    }
    assert!(parse_text("local s = `x`")
        .expect_err("backtick")
        .contains("unexpected character"));
    parse_text("-- `comment`\nlocal s = '`' .. \"`\" .. [[`]]").expect("backticks in strings and comments");
    // The whole evaluation too (a sample: each one starts a Lua state).
    for input in inputs.iter().step_by(7) {
        let result = evaluate_source(input, "garbage.lua", &EvalOptions::default());
        if let Err((db, diags)) = result {
            assert!(!diags.is_empty());
            let _ = render(&db, &diags);
        }
    }
}

#[test]
fn span_of_uses_byte_offsets() {
    let text = "local s = 'é'\nlocal y = 2\n";
    let mut db = SourceDb::default();
    let id = db.add(SourceFile {
        name: "t.lua".into(),
        path: None,
        text: text.into(),
    });
    let ast = syntax::parse(&db, id).expect("parses");
    let stmt = ast.nodes().stmts().nth(1).expect("second statement");
    let span = syntax::span_of(id, stmt);
    assert_eq!(&text[span.start..span.end], "local y = 2");
}

#[test]
fn evaluation_is_fast() {
    // Warm up (the first Lua state of a process pays for page faults), then measure.
    let _ = eval(EXAMPLE);
    let start = Instant::now();
    for _ in 0..10 {
        let _ = eval(EXAMPLE);
    }
    let each = start.elapsed() / 10;
    eprintln!("evaluate: {each:?} per compile");
    assert!(each.as_millis() < 200, "evaluation takes {each:?}");
}
