//! The compiler never panics and never crashes: whatever the input, `compile_source` returns
//! a compiled object or a failure with at least one diagnostic. Deep nesting is a diagnostic,
//! not a stack overflow. And every program that compiles passes the kernel's verifier.
//!
//! Inputs: deep nesting of every kind, garbage bytes, every 7th-byte prefix of every example,
//! random token soup and random (mostly well-formed) programs from seeded generators.
//! `LUABPF_ROBUSTNESS_N` scales the random inputs (default 3000 of each).
//!
//! The verifier part skips loudly when bpf() is unavailable, unless LUABPF_REQUIRE_KERNEL=1.

use luabpf_compiler::compile::{compile_source, Compiled, Options};
use luabpf_loader::{load, require_kernel_or_skip};
use luabpf_tests::harness::Rng;
use luabpf_tests::programs::random_program;
use std::panic::{catch_unwind, AssertUnwindSafe};

// ---------------------------------------------------------------------------------------
// The harness

/// What happened to the inputs of one test.
#[derive(Default)]
struct Report {
    inputs: usize,
    compiled: usize,
    refused: usize,
    /// Inputs that made the compiler panic, or fail without a diagnostic.
    broken: Vec<String>,
    /// Compiled programs the verifier refused.
    unverifiable: Vec<String>,
    verified: usize,
    /// Compiled objects kept for loading.
    objects: Vec<(String, Compiled)>,
}

fn shorten(s: &str) -> String {
    if s.len() <= 600 {
        return s.to_string();
    }
    let mut end = 600;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &s[..end], s.len())
}

impl Report {
    /// Compiles one input; records a panic or a diagnostic-less failure; keeps successes.
    fn compile(&mut self, label: &str, src: &str) {
        self.inputs += 1;
        let start = std::time::Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            compile_source(src, "prog.lua", &Options::default())
        }));
        let took = start.elapsed();
        if took > std::time::Duration::from_secs(1) {
            eprintln!("slow: [{label}] took {took:?} to compile ({} bytes)", src.len());
        }
        match result {
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                self.broken.push(format!(
                    "[{label}] the compiler panicked: {what}\ninput: {:?}",
                    shorten(src)
                ));
            }
            Ok(Err(failure)) => {
                self.refused += 1;
                if std::env::var("LUABPF_ROBUSTNESS_SHOW_REFUSALS").is_ok() {
                    if let Some(d) = failure.diags.first() {
                        eprintln!("refused: [{label}] {}", d.message);
                    }
                }
                if failure.diags.is_empty() {
                    self.broken.push(format!(
                        "[{label}] refused without a diagnostic\ninput: {:?}",
                        shorten(src)
                    ));
                } else {
                    // The rendering must not panic either.
                    if let Err(_) = catch_unwind(AssertUnwindSafe(|| failure.render())) {
                        self.broken.push(format!(
                            "[{label}] rendering the diagnostics panicked\ninput: {:?}",
                            shorten(src)
                        ));
                    }
                }
            }
            Ok(Ok(compiled)) => {
                self.compiled += 1;
                if compiled.elf.is_empty() {
                    self.broken.push(format!(
                        "[{label}] compiled to an empty object\ninput: {:?}",
                        shorten(src)
                    ));
                }
                self.objects.push((label.to_string(), compiled));
            }
        }
    }

    /// Loads every compiled object into the kernel (when there is one).
    fn verify(&mut self, test: &str) {
        if self.objects.is_empty() || !require_kernel_or_skip(test) {
            return;
        }
        for (label, compiled) in std::mem::take(&mut self.objects) {
            match load_cached(&compiled.elf) {
                Ok(()) => self.verified += 1,
                Err(e) => {
                    let src = &compiled.sources.files[0].text;
                    // `LUABPF_ROBUSTNESS_DUMP=dir` writes each counterexample to a file there.
                    if let Ok(dir) = std::env::var("LUABPF_ROBUSTNESS_DUMP") {
                        let name: String = label
                            .chars()
                            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                            .collect();
                        let _ = std::fs::create_dir_all(&dir);
                        let _ = std::fs::write(format!("{dir}/{name}.lua"), src);
                    }
                    self.unverifiable.push(format!(
                        "[{label}] compiled, but the kernel refused it: {}\n{}",
                        first_lines(&e, 12),
                        shorten(src)
                    ));
                }
            }
        }
    }

    fn finish(mut self, test: &str) {
        self.verify(test);
        eprintln!(
            "{test}: {} inputs: {} compiled ({} verified), {} refused with diagnostics; {} broken, {} unverifiable",
            self.inputs,
            self.compiled,
            self.verified,
            self.refused,
            self.broken.len(),
            self.unverifiable.len()
        );
        if !self.unverifiable.is_empty() {
            let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
            for u in &self.unverifiable {
                let reason = u
                    .split("the kernel refused it: ")
                    .nth(1)
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let reason = reason.split(": ").skip(1).collect::<Vec<_>>().join(": ");
                *reasons.entry(reason).or_default() += 1;
            }
            for (reason, n) in reasons {
                eprintln!("  {n} x refused by the verifier: {reason}");
            }
        }
        let mut all = self.broken;
        all.extend(self.unverifiable);
        if !all.is_empty() {
            let n = all.len();
            all.truncate(20);
            panic!(
                "{test}: {n} counterexamples (first {}):\n\n{}",
                all.len(),
                all.join("\n\n")
            );
        }
    }
}

/// Loads an object, once per distinct object in this process (truncations of a file often
/// compile to the same object, and a refused program can take the verifier seconds).
fn load_cached(elf: &[u8]) -> Result<(), String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashMap<Vec<u8>, Result<(), String>>>> = Mutex::new(None);
    if let Some(r) = SEEN.lock().unwrap().get_or_insert_with(HashMap::new).get(elf) {
        return r.clone();
    }
    let r = load(elf).map(drop).map_err(|e| e.to_string());
    SEEN.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(elf.to_vec(), r.clone());
    r
}

fn first_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    if lines.len() <= n {
        return s.to_string();
    }
    format!(
        "{}\n  ... ({} more lines)\n{}",
        lines[..n / 2].join("\n"),
        lines.len() - n,
        lines[lines.len() - n / 2..].join("\n")
    )
}

fn scale() -> usize {
    std::env::var("LUABPF_ROBUSTNESS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

const HEAD: &str = "local xdp = require \"bpf.xdp\"\nlocal function filter(ctx)\n  local p = ctx:packet()\n  local a = p:getbyte(14)\n";
const TAIL: &str = "\n  return 2\nend\nreturn xdp.program(filter, { name = \"t\" })\n";

fn in_filter(body: &str) -> String {
    format!("{HEAD}{body}{TAIL}")
}

// ---------------------------------------------------------------------------------------
// Deep nesting

/// Each shape at several depths, in the compiled function and in the body.
#[test]
fn deep_nesting() {
    let mut r = Report::default();
    for depth in [50usize, 199, 200, 201, 1000, 10_000] {
        let shapes: Vec<(String, String)> = vec![
            (
                "parentheses".into(),
                format!("  local x = {}a{}", "(".repeat(depth), ")".repeat(depth)),
            ),
            (
                "parenthesised sums".into(),
                format!("  local x = {}a{}", "(a + ".repeat(depth), ")".repeat(depth)),
            ),
            (
                "nested ifs".into(),
                format!(
                    "{}  p:setbyte(15, a)\n{}",
                    "  if a > 0 then\n".repeat(depth),
                    "  end\n".repeat(depth)
                ),
            ),
            (
                "nested do blocks".into(),
                format!("{}  a = a + 1\n{}", "do ".repeat(depth), " end".repeat(depth)),
            ),
            (
                "nested whiles".into(),
                format!(
                    "{}  a = a + 1\n{}",
                    "while a < 3 do ".repeat(depth),
                    " break end".repeat(depth)
                ),
            ),
            (
                "nested fors".into(),
                format!(
                    "{}  a = a + 1\n{}",
                    "for i = 1, 2 do ".repeat(depth),
                    " end".repeat(depth)
                ),
            ),
            (
                "nested repeats".into(),
                format!(
                    "{}  a = a + 1\n{}",
                    "repeat ".repeat(depth),
                    " until true".repeat(depth)
                ),
            ),
            ("long sum".into(), format!("  local x = a{}", " + a".repeat(depth))),
            (
                "long mixed chain".into(),
                format!(
                    "  local x = a{}",
                    [" + a", " * a", " - 1", " // 3", " & a", " << 1", " | a"]
                        .iter()
                        .cycle()
                        .take(depth)
                        .copied()
                        .collect::<String>()
                ),
            ),
            (
                "long and chain".into(),
                format!("  if a > 0{} then return 1 end", " and a > 0".repeat(depth)),
            ),
            (
                "long or chain".into(),
                format!("  local x = a{}", " or a".repeat(depth)),
            ),
            (
                "long comparison chain".into(),
                format!("  local x = (a == a){}", " == true".repeat(depth)),
            ),
            (
                "unary minus chain".into(),
                format!("  local x = {}a", "- ".repeat(depth)),
            ),
            (
                "not chain".into(),
                format!("  local x = {}(a > 0)", "not ".repeat(depth)),
            ),
            ("bnot chain".into(), format!("  local x = {}a", "~ ".repeat(depth))),
            (
                "nested calls".into(),
                format!(
                    "  local function id(x) return x end\n  local x = {}a{}",
                    "id(".repeat(depth),
                    ")".repeat(depth)
                ),
            ),
            (
                "nested indexes".into(),
                format!(
                    "  local x = p:getbyte({}14{})",
                    "p:getbyte(".repeat(depth),
                    ")".repeat(depth)
                ),
            ),
            (
                "nested functions".into(),
                format!(
                    "{}  return 1\n{}",
                    "local function g() ".repeat(depth),
                    " end".repeat(depth)
                ),
            ),
            (
                "nested table constructors".into(),
                format!("  local t = {}1{}", "{ ".repeat(depth), " }".repeat(depth)),
            ),
            (
                "unclosed parentheses".into(),
                format!("  local x = {}a", "(".repeat(depth)),
            ),
            ("unclosed ifs".into(), "  if a then\n".repeat(depth)),
            ("closers only".into(), " end)".repeat(depth)),
        ];
        for (shape, body) in &shapes {
            r.compile(&format!("{shape} x{depth} in the filter"), &in_filter(body));
        }
        // Body level: the compile-time Lua runs these.
        let body_shapes: Vec<(String, String)> = vec![
            (
                "body parentheses".into(),
                format!("local x = {}1{}\n", "(".repeat(depth), ")".repeat(depth)),
            ),
            (
                "body concat chain".into(),
                format!("local s = \"a\"{}\n", " .. \"a\"".repeat(depth)),
            ),
            ("body sum".into(), format!("local s = 1{}\n", " + 1".repeat(depth))),
            (
                "body nested tables".into(),
                format!("local t = {}1{}\n", "{".repeat(depth), "}".repeat(depth)),
            ),
            (
                "body nested functions".into(),
                format!(
                    "local f = {}1{}\n",
                    "(function() return ".repeat(depth),
                    " end)()".repeat(depth)
                ),
            ),
        ];
        for (shape, body) in &body_shapes {
            r.compile(&format!("{shape} x{depth}"), &format!("{body}{}", in_filter("")));
        }
    }
    // A deep structure of small nesting but great length: 20,000 statements.
    r.compile("5,000 statements", &in_filter(&"  a = a + 1\n".repeat(5_000)));
    r.compile(
        "2,000 ifs in sequence",
        &in_filter(&"  if a == 3 then a = a + 1 end\n".repeat(2_000)),
    );
    r.compile(
        "2,000 locals",
        &in_filter(
            &(0..2_000)
                .map(|i| format!("  local v{i} = a + {i}\n"))
                .collect::<String>(),
        ),
    );
    r.compile(
        "a 100,000-byte line",
        &in_filter(&format!("  local x = a{}", " + 1".repeat(25_000))),
    );
    r.finish("deep_nesting");
}

// ---------------------------------------------------------------------------------------
// Degenerate files

#[test]
fn degenerate_files() {
    let mut r = Report::default();
    let cases: &[(&str, &str)] = &[
        ("empty", ""),
        ("whitespace", "   \n\t\n  "),
        ("a comment", "-- nothing here\n"),
        ("a long comment", "--[==[ nothing\n here ]==]"),
        ("returns nothing", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return 2 end\n"),
        ("returns nothing explicitly", "return\n"),
        ("returns nil", "return nil\n"),
        ("returns a number", "return 42\n"),
        ("returns a float", "return 4.2\n"),
        ("returns a string", "return \"xdp\"\n"),
        ("returns a function", "return function(ctx) return 2 end\n"),
        ("returns an empty table", "return {}\n"),
        ("returns a table of numbers", "return { 1, 2, 3 }\n"),
        ("returns two values", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return 2 end\nreturn xdp.program(f), 1\n"),
        ("returns a program twice", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return 2 end\nlocal prog = xdp.program(f, { name = \"t\" })\nreturn { prog, prog }\n"),
        ("two programs, one name", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return 2 end\nlocal function g(ctx) return 1 end\nreturn { xdp.program(f, { name = \"t\" }), xdp.program(g, { name = \"t\" }) }\n"),
        ("program of a non-function", "local xdp = require \"bpf.xdp\"\nreturn xdp.program(42)\n"),
        ("program of nothing", "local xdp = require \"bpf.xdp\"\nreturn xdp.program()\n"),
        ("program with bad options", "local xdp = require \"bpf.xdp\"\nreturn xdp.program(function(ctx) return 2 end, 7)\n"),
        ("program with an unknown option", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return 2 end\nreturn xdp.program(f, { nmae = \"t\" })\n"),
        ("program with a weird name", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return 2 end\nreturn xdp.program(f, { name = \"a b/c\\0d\" })\n"),
        ("program with an empty name", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return 2 end\nreturn xdp.program(f, { name = \"\" })\n"),
        ("program with a long name", &format!("local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return 2 end\nreturn xdp.program(f, {{ name = \"{}\" }})\n", "n".repeat(300))),
        ("default verdict not an integer", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return 2 end\nreturn xdp.program(f, { name = \"t\", default = \"drop\" })\n"),
        ("entry returns a string", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return \"pass\" end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("entry returns a boolean", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return true end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("entry returns two values", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return 2, 3 end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("entry returns nothing", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("entry takes no ctx", "local xdp = require \"bpf.xdp\"\nlocal function f() return 2 end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("entry takes two parameters", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx, y) return y end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("entry returns the packet", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return ctx:packet() end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("entry returns ctx", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return ctx end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("entry returns a huge verdict", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return 0x7fffffffffffffff end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("entry returns a negative verdict", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return -1 end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("a NUL byte", "local x = 1\0\n"),
        ("NUL bytes in a string", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) if ctx:packet():getstring(0, 2) == \"\0\0\" then return 1 end return 2 end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("a shebang", "#!/usr/bin/env luabpf\nreturn 1\n"),
        ("a BOM", "\u{feff}return 1\n"),
        ("CRLF lines", "local xdp = require \"bpf.xdp\"\r\nlocal function f(ctx)\r\n  return 2 / 1\r\nend\r\nreturn xdp.program(f, { name = \"t\" })\r\n"),
        ("CR only lines", "local xdp = require \"bpf.xdp\"\rlocal function f(ctx)\r  return 2 ^ 1\rend\rreturn xdp.program(f, { name = \"t\" })\r"),
        ("non-ASCII identifiers", "local é = 1\nreturn é\n"),
        ("non-ASCII before an error", "-- ünïcödé ☃ 😀\nlocal x = 😀\n"),
        ("multibyte inside an error span", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return \"☃☃☃\" .. ctx:packet():getstring(0, 2) end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("a backtick", "local x = `a`\n"),
        ("an unterminated long string", "local x = [==[ abc ]=]\n"),
        ("an unterminated comment", "--[[ abc\n"),
        ("a lone bracket", "[\n"),
        ("only end", "end\n"),
        ("require of itself", "return require \"prog\"\n"),
        ("require of nothing", "return require \"\"\n"),
        ("require of a path", "return require \"../../etc/passwd\"\n"),
        ("require of a number", "return require(42)\n"),
        ("io", "return io.open(\"/etc/passwd\")\n"),
        ("os.exit", "os.exit(1)\n"),
        ("load", "return load(\"return 1\")()\n"),
        ("string.rep bomb", "local s = string.rep(\"x\", 1 << 40)\nreturn s\n"),
        ("memory bomb", "local t = {}\nfor i = 1, 1e9 do t[i] = string.rep(\"x\", 1000) end\n"),
        ("error with a table", "error({})\n"),
        ("error with nil", "error()\n"),
        ("error at level 2", "error(\"x\", 2)\n"),
        ("a deep body recursion", "local function r(n) return r(n + 1) + 1 end\nreturn r(1)\n"),
        ("a body coroutine", "local co = coroutine.wrap(function() coroutine.yield(1) end)\nco()\nreturn co\n"),
        ("setmetatable on a module", "local xdp = require \"bpf.xdp\"\nsetmetatable(xdp, { __index = function() return 1 end })\nreturn xdp.anything\n"),
        ("a module modified", "local xdp = require \"bpf.xdp\"\nxdp.program = nil\nreturn xdp.program\n"),
        ("a map passed as a program", "local map = require \"bpf.map\"\nreturn map.hash(\"m\", { key = \"I4\", value = \"I4\", entries = 1 })\n"),
        ("a map with zero entries", "local xdp = require \"bpf.xdp\"\nlocal map = require \"bpf.map\"\nlocal m = map.hash(\"m\", { key = \"I4\", value = \"I4\", entries = 0 })\nlocal function f(ctx) return m[1] or 2 end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("a map with huge entries", "local xdp = require \"bpf.xdp\"\nlocal map = require \"bpf.map\"\nlocal m = map.hash(\"m\", { key = \"I4\", value = \"I4\", entries = 1 << 40 })\nlocal function f(ctx) return m[1] or 2 end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("a map with a huge key", "local xdp = require \"bpf.xdp\"\nlocal map = require \"bpf.map\"\nlocal m = map.hash(\"m\", { key = \"c100000\", value = \"I4\", entries = 4 })\nlocal function f(ctx) return m[\"a\"] or 2 end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("a map with c0 keys", "local xdp = require \"bpf.xdp\"\nlocal map = require \"bpf.map\"\nlocal m = map.hash(\"m\", { key = \"c0\", value = \"I4\", entries = 4 })\nlocal function f(ctx) return m[\"\"] or 2 end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("a record with no fields", "local xdp = require \"bpf.xdp\"\nlocal map = require \"bpf.map\"\nlocal m = map.hash(\"m\", { key = \"I4\", value = {}, entries = 4 })\nlocal function f(ctx) if m[1] then return 1 end return 2 end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("two maps, one name", "local xdp = require \"bpf.xdp\"\nlocal map = require \"bpf.map\"\nlocal m = map.hash(\"m\", { key = \"I4\", value = \"I4\", entries = 4 })\nlocal n = map.hash(\"m\", { key = \"I8\", value = \"I8\", entries = 4 })\nlocal function f(ctx) return (m[1] or 0) + (n[1] or 2) end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("an empty static table", "local xdp = require \"bpf.xdp\"\nlocal T = {}\nlocal function f(ctx) return T[ctx:packet():getbyte(0)] or 2 end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("a static table of mixed values", "local xdp = require \"bpf.xdp\"\nlocal T = { 1, \"two\", true }\nlocal function f(ctx) return T[ctx:packet():getbyte(0)] or 2 end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("a static table with a huge string key", &format!("local xdp = require \"bpf.xdp\"\nlocal T = {{ [\"{}\"] = 1 }}\nlocal function f(ctx) return T[ctx:packet():getstring(0, 4)] or 2 end\nreturn xdp.program(f, {{ name = \"t\" }})\n", "k".repeat(5000))),
        ("a big static table", &format!("local xdp = require \"bpf.xdp\"\nlocal T = {{}}\nfor i = 1, 100000 do T[i] = i end\nlocal function f(ctx) return T[ctx:packet():getuint32(0)] or 2 end\nreturn xdp.program(f, {{ name = \"t\" }})\n")),
        ("a self-referencing table", "local xdp = require \"bpf.xdp\"\nlocal T = {}\nT.self = T\nT[1] = 5\nlocal function f(ctx) return T[ctx:packet():getbyte(0)] or T.self[1] end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("a function capturing itself through a table", "local xdp = require \"bpf.xdp\"\nlocal M = {}\nfunction M.f(ctx) return M.g(ctx) end\nfunction M.g(ctx) return 2 end\nreturn xdp.program(M.f, { name = \"t\" })\n"),
        ("a C function as entry", "local xdp = require \"bpf.xdp\"\nreturn xdp.program(print, { name = \"t\" })\n"),
        ("string.byte as entry", "local xdp = require \"bpf.xdp\"\nreturn xdp.program(string.byte, { name = \"t\" })\n"),
        ("a map method as entry", "local xdp = require \"bpf.xdp\"\nlocal bpf = require \"bpf\"\nreturn xdp.program(bpf.ktime, { name = \"t\" })\n"),
        ("captured C function", "local xdp = require \"bpf.xdp\"\nlocal fmt = string.format\nlocal function f(ctx) return #fmt(\"%d\", 1) end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("captured float", "local xdp = require \"bpf.xdp\"\nlocal HALF = 0.5\nlocal function f(ctx) return HALF end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("captured math.huge", "local xdp = require \"bpf.xdp\"\nlocal function f(ctx) return math.huge end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("captured integer-valued float", "local xdp = require \"bpf.xdp\"\nlocal TWO = 4 / 2\nlocal function f(ctx) return TWO end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("captured NaN", "local xdp = require \"bpf.xdp\"\nlocal N = 0/0\nlocal function f(ctx) if N == N then return 1 end return 2 end\nreturn xdp.program(f, { name = \"t\" })\n"),
        ("captured userdata", "local xdp = require \"bpf.xdp\"\nlocal P = xdp.program(function(ctx) return 2 end)\nlocal function f(ctx) if P then return 1 end return 2 end\nreturn xdp.program(f, { name = \"t\" })\n"),
    ];
    for (label, src) in cases {
        r.compile(label, src);
    }
    r.finish("degenerate_files");
}

// ---------------------------------------------------------------------------------------
// Garbage and truncations

#[test]
fn garbage_bytes() {
    let mut r = Report::default();
    let mut rng = Rng::new(0x9a7b_a9e5);
    for i in 0..scale() / 3 {
        let n = rng.below(400);
        let bytes: Vec<u8> = match i % 3 {
            0 => (0..n).map(|_| rng.next() as u8).collect(),
            1 => {
                let alphabet = b" \n\t(){}[]=.,;:\"'-+*/%^#&~|<>=abcdefghijklmnopqrstuvwxyz0123456789_";
                (0..n).map(|_| alphabet[rng.below(alphabet.len())]).collect()
            }
            _ => (0..n).map(|_| (rng.next() as u8) & 0x7f).collect(),
        };
        r.compile(&format!("garbage #{i}"), &String::from_utf8_lossy(&bytes));
    }
    // Garbage after a valid program, and inside one.
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/counter.lua")).unwrap();
    for i in 0..200 {
        let cut = rng.below(example.len());
        if !example.is_char_boundary(cut) {
            continue;
        }
        let junk: String = (0..rng.below(8) + 1)
            .map(|_| {
                *rng.pick(&[
                    '(', ')', 'x', '"', '\'', '[', '=', '-', '#', '\0', '\u{7f}', '😀', '~', 'e', '.',
                ])
            })
            .collect();
        r.compile(
            &format!("counter.lua with junk #{i}"),
            &format!("{}{junk}{}", &example[..cut], &example[cut..]),
        );
    }
    r.finish("garbage_bytes");
}

fn examples() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lua"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_compiles_and_verifies() {
    let mut r = Report::default();
    let ex = examples();
    assert!(
        ex.iter().any(|(n, _)| n == "sni_filter.lua"),
        "examples/sni_filter.lua is missing"
    );
    for (name, text) in &ex {
        r.compile(name, text);
    }
    assert_eq!(r.compiled, ex.len(), "every example compiles");
    r.finish("every_example_compiles_and_verifies");
}

/// Every prefix of every example, cut at every 7th byte.
#[test]
fn truncated_examples() {
    let mut r = Report::default();
    for (name, text) in examples() {
        let mut cut = 0;
        while cut <= text.len() {
            let mut end = cut;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            r.compile(&format!("{name} cut at byte {end}"), &text[..end]);
            cut += 7;
        }
    }
    r.finish("truncated_examples");
}

/// Every example with one line removed.
#[test]
fn examples_missing_a_line() {
    let mut r = Report::default();
    for (name, text) in examples() {
        let lines: Vec<&str> = text.lines().collect();
        for i in 0..lines.len() {
            if lines[i].trim().is_empty() || lines[i].trim_start().starts_with("--") {
                continue;
            }
            let without: String = lines
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            r.compile(&format!("{name} without line {}", i + 1), &without);
        }
    }
    r.finish("examples_missing_a_line");
}

// ---------------------------------------------------------------------------------------
// Random token soup

const TOKENS: &[&str] = &[
    "local",
    "function",
    "end",
    "if",
    "then",
    "else",
    "elseif",
    "for",
    "in",
    "do",
    "while",
    "repeat",
    "until",
    "return",
    "break",
    "goto",
    "::l::",
    "and",
    "or",
    "not",
    "nil",
    "true",
    "false",
    "=",
    "==",
    "~=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "//",
    "%",
    "^",
    "&",
    "|",
    "~",
    "<<",
    ">>",
    "..",
    "...",
    "#",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ";",
    ":",
    ",",
    ".",
    "a",
    "b",
    "p",
    "ctx",
    "x",
    "0",
    "1",
    "-1",
    "0x7fffffffffffffff",
    "1.5",
    "\"s\"",
    "'q'",
    "[[long]]",
    "p:getbyte(14)",
    "p:getstring(0, 3)",
    "ctx:packet()",
    "xdp",
    "m",
    "m[1]",
    "require",
    "\"bpf.xdp\"",
    "xdp.program",
    "pcall",
    "error",
    "\n",
    "--c\n",
    "<const>",
    "<close>",
    "@",
    "$",
    "\\",
];

#[test]
fn random_token_soup() {
    let mut r = Report::default();
    let mut rng = Rng::new(0x7031_5eed);
    for i in 0..scale() {
        let n = 1 + rng.below(60);
        let soup: Vec<&str> = (0..n).map(|_| *rng.pick(TOKENS)).collect();
        let soup = soup.join(" ");
        // Half alone, half inside an otherwise valid program file.
        let src = if i % 2 == 0 {
            soup
        } else {
            format!("local xdp = require \"bpf.xdp\"\nlocal map = require \"bpf.map\"\nlocal m = map.hash(\"m\", {{ key = \"I4\", value = \"I8\", entries = 8 }})\nlocal function filter(ctx)\n  local p = ctx:packet()\n  local a = p:getbyte(14)\n  {soup}\n  return 2\nend\nreturn xdp.program(filter, {{ name = \"t\" }})\n")
        };
        r.compile(&format!("soup #{i}"), &src);
    }
    r.finish("random_token_soup");
}

// ---------------------------------------------------------------------------------------
// Random programs: mostly well-formed, mostly well-typed, so that they reach every stage

/// Random programs whose loops all have constant bounds; those that compile must pass the
/// verifier.
#[test]
fn random_programs() {
    let mut r = Report::default();
    let n = scale() / 10;
    for seed in 0..n as u64 {
        r.compile(&format!("random program #{seed}"), &random_program(seed, false));
    }
    r.finish("random_programs");
}

/// Random programs with `while`, `repeat` and `for` loops to run-time bounds (at most three
/// per program, nested at most three deep); those that compile must pass the verifier.
#[test]
fn random_programs_with_runtime_loops() {
    let mut r = Report::default();
    let n = scale() / 60;
    for seed in 0..n as u64 {
        r.compile(
            &format!("random program with loops #{seed}"),
            &random_program(1_000_000 + seed, true),
        );
    }
    r.finish("random_programs_with_runtime_loops");
}
