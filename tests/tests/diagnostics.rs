//! One test per refusal class: the rendered diagnostic is pinned with insta (snapshots in
//! snapshots/diagnostics/), the primary span's line:col is asserted, and every diagnostic must
//! carry a file:line:col, a label and a `help:` hint.
//!
//! The expected position is given as a needle: the first occurrence of a piece of source text
//! (plus an optional byte offset into it) where the primary span must start.

use luabpf_compiler::compile::{compile_source, Failure, Options};

/// Line and column (1-based) where `needle` first occurs in `src`, plus `skip` bytes.
fn position_of(src: &str, needle: &str, skip: usize) -> (u32, u32) {
    let at = src
        .find(needle)
        .unwrap_or_else(|| panic!("needle {needle:?} not in the source"))
        + skip;
    let before = &src[..at];
    let line = before.matches('\n').count() as u32 + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() as u32 + 1)
}

fn refuse(src: &str) -> Failure {
    match compile_source(src, "prog.lua", &Options::default()) {
        Ok(_) => panic!("compiled, but it must be refused:\n{src}"),
        Err(f) => f,
    }
}

/// Compiles `src` (which must be refused), pins the rendering under `name`, then checks the
/// primary span of the first diagnostic starts at `needle` (+`skip`), and that every
/// diagnostic has a position, a label and a hint.
fn check(name: &str, src: &str, needle: &str, skip: usize) {
    let failure = refuse(src);
    let rendered = failure.render();
    insta::with_settings!({
        snapshot_path => "../../snapshots/diagnostics",
        prepend_module_to_snapshot => false,
        description => src,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, rendered);
    });
    assert!(!failure.diags.is_empty(), "{name}: a failure without diagnostics");
    let mut problems = Vec::new();
    for (i, d) in failure.diags.iter().enumerate() {
        let file = failure.sources.files.get(d.span.file as usize);
        match file {
            None => problems.push(format!("diagnostic {i} ({}): its span names no file", d.message)),
            Some(f) => {
                if d.span.start > f.text.len() || d.span.end > f.text.len() || d.span.start > d.span.end {
                    problems.push(format!(
                        "diagnostic {i} ({}): span {}..{} outside {} ({} bytes)",
                        d.message,
                        d.span.start,
                        d.span.end,
                        f.name,
                        f.text.len()
                    ));
                }
                let (line, col) = failure.sources.line_col(d.span.file, d.span.start);
                let loc = format!("┌─ {}:{line}:{col}", f.name);
                if !rendered.contains(&loc) {
                    problems.push(format!("diagnostic {i} ({}): the rendering lacks `{loc}`", d.message));
                }
            }
        }
        if d.message.trim().is_empty() {
            problems.push(format!("diagnostic {i}: no message"));
        }
        if d.label.trim().is_empty() {
            problems.push(format!("diagnostic {i} ({}): no label", d.message));
        }
        if d.hints.iter().all(|h| h.trim().is_empty()) {
            problems.push(format!("diagnostic {i} ({}): no help hint", d.message));
        }
    }
    if !rendered.contains("help: ") {
        problems.push("the rendering has no `help:` line".to_string());
    }
    let first = &failure.diags[0];
    let got = failure.sources.line_col(first.span.file, first.span.start);
    let want = position_of(src, needle, skip);
    if failure
        .sources
        .files
        .get(first.span.file as usize)
        .map(|f| f.name.as_str())
        != Some("prog.lua")
    {
        problems.push(format!("the primary span is not in prog.lua"));
    }
    if got != want {
        problems.push(format!(
            "primary span at {}:{}, expected {}:{} (at {needle:?})",
            got.0, got.1, want.0, want.1
        ));
    }
    assert!(
        problems.is_empty(),
        "{name}:\n  {}\n\n{rendered}",
        problems.join("\n  ")
    );
}

/// An XDP program file whose entry function has `body` after `local p = ctx:packet()`, with
/// `before` at the top level.
fn xdp(before: &str, body: &str) -> String {
    let ends_in_return = body
        .lines()
        .last()
        .is_some_and(|l| l.trim_start().starts_with("return"));
    let body = if ends_in_return {
        body.to_string()
    } else {
        format!("{body}\n  return 2")
    };
    format!(
        "local xdp = require \"bpf.xdp\"\nlocal map = require \"bpf.map\"\n{before}\nlocal function filter(ctx)\n  local p = ctx:packet()\n{body}\nend\n\nreturn xdp.program(filter, {{ name = \"t\" }})\n"
    )
}

// ---------------------------------------------------------------------------------------
// Functions

#[test]
fn closure_over_a_local() {
    let src = xdp(
        "",
        "  local n = p:getbyte(14)\n  local function add_n(x) return x + n end\n  return add_n(1)",
    );
    check("closure_over_a_local", &src, "x + n end", 4);
}

#[test]
fn closure_over_a_mutable_body_local() {
    // A compiled function capturing a body local that the body changes after declaring it is
    // fine (the value at the end of the body is used); one that a compiled function assigns
    // is not a constant.
    let src = xdp("local count = 0", "  count = count + 1\n  return count");
    check("closure_over_a_mutable_body_local", &src, "count = count", 0);
}

#[test]
fn anonymous_function() {
    let src = xdp(
        "",
        "  local twice = function(x) return 2 * x end\n  return twice(p:getbyte(14))",
    );
    check("anonymous_function", &src, "function(x)", 0);
}

#[test]
fn varargs() {
    let src = xdp(
        "local function first(...) return (...) end",
        "  return first(p:getbyte(14), 2)",
    );
    check("varargs", &src, "...", 0);
}

#[test]
fn recursion_direct() {
    let src = xdp(
        "local function fact(n)\n  if n <= 1 then return 1 end\n  return n * fact(n - 1)\nend",
        "  return fact(p:getbyte(14))",
    );
    check("recursion_direct", &src, "fact(n - 1)", 0);
}

#[test]
fn recursion_mutual() {
    let src = xdp(
        "local M = {}\nfunction M.even(n)\n  if n == 0 then return 1 end\n  return M.odd(n - 1)\nend\nfunction M.odd(n)\n  if n == 0 then return 0 end\n  return M.even(n - 1)\nend",
        "  return M.even(p:getbyte(14))",
    );
    check("recursion_mutual", &src, "M.even(n - 1)", 0);
}

#[test]
fn pcall() {
    let src = xdp(
        "local function risky(x) return 10 // x end",
        "  local ok, v = pcall(risky, p:getbyte(14))\n  return 2",
    );
    check("pcall", &src, "pcall(risky", 0);
}

#[test]
fn setmetatable() {
    let src = xdp(
        "local mt = { __index = function() return 0 end }",
        "  setmetatable(p, mt)",
    );
    check("setmetatable", &src, "setmetatable(p", 0);
}

#[test]
fn goto() {
    let src = xdp(
        "",
        "  if p:getbyte(14) == 0 then goto out end\n  p:setbyte(15, 1)\n  ::out::",
    );
    check("goto", &src, "goto out", 0);
}

#[test]
fn global_function() {
    let src = "local xdp = require \"bpf.xdp\"\nfunction helper(x) return x + 1 end\nlocal function filter(ctx)\n  return helper(1)\nend\nreturn xdp.program(filter, { name = \"t\" })\n";
    check("global_function", src, "helper(1)", 0);
}

// ---------------------------------------------------------------------------------------
// Values

#[test]
fn float_division() {
    let src = xdp("", "  local half = p:getbyte(14) / 2\n  p:setbyte(15, half)");
    check("float_division", &src, "p:getbyte(14) / 2", 0);
}

#[test]
fn exponent() {
    let src = xdp("", "  local sq = p:getbyte(14) ^ 2\n  p:setbyte(15, sq)");
    check("exponent", &src, "p:getbyte(14) ^ 2", 0);
}

#[test]
fn float_literal() {
    let src = xdp("", "  local x = p:getbyte(14) * 1.5\n  p:setbyte(15, x)");
    check("float_literal", &src, "1.5", 0);
}

#[test]
fn float_literal_exponent_form() {
    let src = xdp("", "  p:setbyte(15, 1e3)");
    check("float_literal_exponent_form", &src, "1e3", 0);
}

#[test]
fn decimal_literal_too_large() {
    let src = xdp("", "  p:setint64(15, 18446744073709551616)");
    check("decimal_literal_too_large", &src, "18446744073709551616", 0);
}

#[test]
fn runtime_concat() {
    let src = xdp("", "  local s = p:getstring(14, 3) .. \".example\"\n  return #s");
    check("runtime_concat", &src, "p:getstring(14, 3) ..", 0);
}

#[test]
fn unknown_global() {
    let src = xdp("", "  return frobnicate(p:getbyte(14))");
    check("unknown_global", &src, "frobnicate", 0);
}

#[test]
fn global_assignment() {
    let src = xdp("", "  last_byte = p:getbyte(14)");
    check("global_assignment", &src, "last_byte", 0);
}

#[test]
fn load_and_coroutines() {
    let src = xdp("", "  local co = coroutine.create(filter)\n  return 2");
    check("load_and_coroutines", &src, "coroutine", 0);
}

#[test]
fn nil_arithmetic() {
    let src = xdp(
        "local hits = map.hash(\"hits\", { key = \"I4\", value = \"I8\", entries = 64 })",
        "  local k = p:getuint32(26)\n  hits[k] = hits[k] + 1",
    );
    check("nil_arithmetic", &src, "hits[k] + 1", 0);
}

#[test]
fn nil_ordering() {
    let src = xdp(
        "local limits = map.hash(\"limits\", { key = \"I4\", value = \"I8\", entries = 64 })",
        "  local v = limits[p:getuint32(26)]\n  if v > 100 then return 1 end",
    );
    check("nil_ordering", &src, "v > 100", 0);
}

#[test]
fn nil_indexing() {
    let src = xdp(
        "local flows = map.hash(\"flows\", { key = \"I4\", value = { hits = \"I8\", last = \"I8\" }, entries = 64 })",
        "  local f = flows[p:getuint32(26)]\n  f.hits = f.hits + 1",
    );
    check("nil_indexing", &src, "f.hits =", 0);
}

#[test]
fn nil_field_read() {
    let src = xdp(
        "local flows = map.hash(\"flows\", { key = \"I4\", value = { hits = \"I8\", last = \"I8\" }, entries = 64 })",
        "  local f = flows[p:getuint32(26)]\n  return f.hits",
    );
    check("nil_field_read", &src, "f.hits", 0);
}

#[test]
fn nil_method() {
    let src = xdp(
        "local names = map.hash(\"names\", { key = \"I4\", value = \"c16\", entries = 64 })",
        "  local s = names[p:getuint32(26)]\n  return s:byte(1)",
    );
    check("nil_method", &src, "s:byte", 0);
}

#[test]
fn nil_map_key() {
    let src = xdp(
        "local next_hop = map.hash(\"next_hop\", { key = \"I4\", value = \"I4\", entries = 64 })\nlocal seen = map.hash(\"seen\", { key = \"I4\", value = \"I8\", entries = 64 })",
        "  local hop = next_hop[p:getuint32(26)]\n  seen[hop] = 1",
    );
    check("nil_map_key", &src, "hop] = 1", 0);
}

#[test]
fn nil_from_a_function() {
    let src = xdp(
        "local function find(p) if p:getbyte(14) == 6 then return 34 end end",
        "  return p:getbyte(find(p))",
    );
    check("nil_from_a_function", &src, "find(p))", 0);
}

#[test]
fn table_constructor_in_compiled_code() {
    let src = xdp("", "  local t = { 1, 2, 3 }\n  return t[p:getbyte(14)]");
    check("table_constructor_in_compiled_code", &src, "{ 1, 2, 3 }", 0);
}

#[test]
fn local_changing_type() {
    let src = xdp(
        "",
        "  local x = p:getbyte(14)\n  if x > 3 then x = \"big\" end\n  return 2",
    );
    check("local_changing_type", &src, "x = \"big\"", 0);
}

#[test]
fn and_or_mixing_types() {
    let src = xdp("", "  local a = p:getint64(14)\n  p:setint64(30, ((a < 5) or a) + 1)");
    check("and_or_mixing_types", &src, "(a < 5) or a)", 0);
}

/// `c1 or c2 and x or y` is `(c1 or (c2 and x)) or y`: `true` when c1 holds, so in Lua the
/// `+ 1` raises. The checker must refuse it like the simpler form above.
#[test]
fn and_or_mixing_types_in_a_chain() {
    let src = xdp(
        "",
        "  local a = p:getint64(14)\n  p:setint64(30, ((a < 5) or (a == 9) and a or 7) + 1)",
    );
    check("and_or_mixing_types_in_a_chain", &src, "(a < 5) or (a == 9)", 0);
}

#[test]
fn packet_compared() {
    let src = xdp("", "  local q = ctx:packet()\n  if p == q then return 1 end");
    check("packet_compared", &src, "p == q", 0);
}

// ---------------------------------------------------------------------------------------
// Control flow

#[test]
fn generic_for() {
    let src = xdp(
        "local ports = { 80, 443 }",
        "  for _, port in ipairs(ports) do\n    if p:getuint16(36) == port then return 1 end\n  end",
    );
    check("generic_for", &src, "for _, port", 0);
}

#[test]
fn assignment_to_a_constant() {
    let src = xdp("local K <const> = 1\nlocal function reset() K = 2 end", "");
    check("assignment_to_a_constant", &src, "local function reset", 0);
}

/// A local that only shares a constant's name may be assigned: the body is compiled with the
/// `<const>`s as written only when a name is both (scopes aside), and Lua then decides.
#[test]
fn assignment_to_a_local_named_like_a_constant() {
    let src = xdp(
        "local K <const> = 1\ndo local K = 3; K = K + 1 end",
        "  p:setbyte(14, K)",
    );
    if let Err(f) = compile_source(&src, "prog.lua", &Options::default()) {
        panic!("refused:\n{}", f.render());
    }
}

#[test]
fn break_outside_a_loop() {
    let src = xdp("", "  if p:getbyte(14) == 0 then break end");
    check("break_outside_a_loop", &src, "break", 0);
}

#[test]
fn nested_runtime_loops() {
    let src = xdp("", "  local s = 0\n  for i = 0, p:getbyte(14) do\n    for j = 0, p:getbyte(15) do s = s + i * j end\n  end\n  p:setint64(16, s)");
    check("nested_runtime_loops", &src, "for j = 0", 0);
}

#[test]
fn constant_loop_too_long() {
    let src = xdp(
        "",
        "  local s = 0\n  for i = 1, 100000 do s = s + i end\n  p:setint64(14, s)",
    );
    check("constant_loop_too_long", &src, "for i = 1, 100000", 0);
}

#[test]
fn for_with_a_runtime_step() {
    let src = xdp(
        "",
        "  local s = 0\n  for i = 1, 10, p:getbyte(14) do s = s + i end\n  p:setint64(14, s)",
    );
    check("for_with_a_runtime_step", &src, "p:getbyte(14) do", 0);
}

// ---------------------------------------------------------------------------------------
// Maps, packets, strings

#[test]
fn map_bad_format() {
    let src = xdp(
        "local m = map.hash(\"m\", { key = \"x9\", value = \"I8\", entries = 16 })",
        "  return m[1] or 2",
    );
    check("map_bad_format", &src, "\"x9\"", 0);
}

#[test]
fn map_missing_entries() {
    let src = xdp(
        "local m = map.hash(\"m\", { key = \"I4\", value = \"I8\" })",
        "  return m[1] or 2",
    );
    check("map_missing_entries", &src, "map.hash(", 0);
}

#[test]
fn netfilter_packet_write() {
    let src = "local netfilter = require \"bpf.netfilter\"\nlocal function filter(ctx)\n  local p = ctx:packet()\n  p:setbyte(8, 1)\n  return 1\nend\nreturn netfilter.program(filter, { name = \"t\", family = \"ipv4\", hook = \"local_in\" })\n";
    check("netfilter_packet_write", src, "p:setbyte(8, 1)", 0);
}

#[test]
fn unknown_packet_method() {
    let src = xdp("", "  return p:getuint128(14)");
    check("unknown_packet_method", &src, "p:getuint128", 0);
}

#[test]
fn string_sub() {
    let src = xdp(
        "",
        "  local s = p:getstring(14, 8)\n  if s:sub(1, 3) == \"www\" then return 1 end",
    );
    check("string_sub", &src, "s:sub", 0);
}

#[test]
fn string_lower() {
    let src = xdp(
        "",
        "  local s = p:getstring(14, 8)\n  if s:lower() == \"www\" then return 1 end",
    );
    check("string_lower", &src, "s:lower", 0);
}

#[test]
fn too_many_strings_for_the_stack() {
    let src = xdp("", "  local a = p:getstring(14, p:getbyte(10))\n  local b = p:getstring(15, p:getbyte(11))\n  local c = p:getstring(16, p:getbyte(12))\n  if a == b or b == c or a == c then return 1 end");
    check("too_many_strings_for_the_stack", &src, "p:getstring(14", 0);
}

// ---------------------------------------------------------------------------------------
// The body and the syntax

#[test]
fn syntax_error_unexpected_symbol() {
    let src = xdp("", "  local x = = 1");
    check("syntax_error_unexpected_symbol", &src, "= = 1", 0);
}

#[test]
fn syntax_error_missing_end() {
    let src = "local xdp = require \"bpf.xdp\"\nlocal function filter(ctx)\n  if ctx then\n    return 1\n\nreturn xdp.program(filter, { name = \"t\" })\n";
    check("syntax_error_missing_end", src, "return xdp", 0);
}

#[test]
fn syntax_error_unterminated_string() {
    let src = xdp("local name = \"evil.example", "  return 2");
    check("syntax_error_unterminated_string", &src, "\"evil", 0);
}

#[test]
fn body_runtime_error() {
    let src = xdp("local config = nil\nlocal port = config.port", "  return 2");
    check("body_runtime_error", &src, "local port", 0);
}

#[test]
fn body_error_call() {
    let src = xdp(
        "local ENTRIES = 0\nif ENTRIES == 0 then error(\"ENTRIES must be positive\") end",
        "  return 2",
    );
    check("body_error_call", &src, "if ENTRIES == 0", 0);
}

#[test]
fn body_never_finishes() {
    let src = xdp("local n = 0\nwhile true do n = n + 1 end", "  return 2");
    check("body_never_finishes", &src, "while true", 0);
}

#[test]
fn body_returns_no_program() {
    let src = "local xdp = require \"bpf.xdp\"\nlocal function filter(ctx) return 2 end\nreturn 42\n";
    check("body_returns_no_program", src, "return 42", 0);
}

#[test]
fn unknown_module() {
    let src = "local xdp = require \"bpf.xdp\"\nlocal tls = require \"net.tlsx\"\nlocal function filter(ctx) return 2 end\nreturn xdp.program(filter)\n";
    check("unknown_module", src, "\"net.tlsx\"", 0);
}

// The verifier-cost estimate: the heavier shape of a semantics case that tests/tests/semantics.rs
// runs bounded is refused, with the loop to blame (nested runtime loops: `nested_runtime_loops`).

#[test]
fn a_runtime_loop_with_many_branches_exceeds_the_pending_branch_limit() {
    let src = xdp(
        "",
        "  local a = p:getbyte(14)\n  local n, s = 0, 0\n  while n < a do\n    n = n + 1\n    if p:getbyte(14 + (n & 7)) == 1 then s = s + 1 end\n    if p:getbyte(15 + (n & 7)) == 1 then s = s + 2 end\n    if p:getbyte(16 + (n & 7)) == 1 then s = s + 3 end\n    if p:getbyte(17 + (n & 7)) == 1 then s = s + 4 end\n  end\n  p:setbyte(15, s & 255)",
    );
    check("many_pending_branches", &src, "while n < a do", 0);
}

/// Found by the generated-programs campaign (docs/fuzzing.md): every `%` by a run-time divisor
/// tests the divisor and the remainder, four branches per iteration that the kernel refused
/// as "The sequence of 8193 jumps is too complex" after `check` had accepted the loop.
#[test]
fn a_loop_of_runtime_divisions_exceeds_the_pending_branch_limit() {
    let src = xdp(
        "local m = map.hash(\"m\", { key = \"i8\", value = \"i8\", entries = 64 })",
        "  local a = p:getint64(14)\n  local b = p:getint64(22)\n  repeat\n    b = ((b % a) % b)\n    local mv = m[b]\n    if mv then m[b] = mv + 1 else m[b] = nil end\n  until not (-(a) < p:getint32(30))\n  p:setint64(30, b)",
    );
    check("runtime_divisions_in_a_loop", &src, "repeat", 0);
}

// A lone carriage return: Lua counts it as a line break and the parser does not, so the
// compiled functions' lines would not match their syntax (found by the byte-level fuzzer,
// tests/fuzz_findings/bytes/function_source_not_found.lua, as an internal error).

#[test]
fn carriage_return_inside_a_line() {
    let src = "local xdp = require \"bpf.xdp\"\r-- a comment\nlocal function f(ctx)\n  return 2\nend\nreturn xdp.program(f, { name = \"t\" })\n";
    check("carriage_return_inside_a_line", src, "\r-- a comment", 0);
}

/// Lines ended by `\r\n` (and `\n\r`, which Lua reads as one line end too) are fine.
#[test]
fn crlf_line_ends_compile() {
    let src = "local xdp = require \"bpf.xdp\"\r\nlocal function f(ctx)\r\n  return 2\n\rend\r\nreturn xdp.program(f, { name = \"t\" })\r\n";
    compile_source(src, "prog.lua", &Options::default()).unwrap_or_else(|f| panic!("{f}"));
}

// Path explosion: fourteen string indexes chosen by `and`/`or`, all live until they are used.
// On every path each index is a constant the verifier must keep exact (it bounds a stack
// read), so no two paths merge: 2^14 paths, refused before the kernel gives up
// (tests/tests/verifier_walk.rs loads it without the check).

#[test]
fn paths_that_cannot_merge() {
    check(
        "paths_that_cannot_merge",
        &luabpf_tests::programs::exploding_paths(),
        "sum = sum + (s:byte(k6)",
        0,
    );
}

// The stack: a function's frame, and the frames along a chain of calls into functions that
// are verified on their own (the kernel refused this one as "combined stack size of 2 calls
// is 544. Too large" after `check` had accepted it).

#[test]
fn stack_of_a_call_chain() {
    let src = "local xdp = require \"bpf.xdp\"\nlocal function count(ctx, n)\n  local p = ctx:packet()\n  local s = p:getstring(20, p:getbyte(n))\n  local c = 0\n  for i = 1, #s do\n    c = c + (s:byte(i) or 0)\n  end\n  return c\nend\nlocal function filter(ctx)\n  local p = ctx:packet()\n  local t = p:getstring(14, p:getbyte(13))\n  local total = 0\n  for k = 0, p:getbyte(12) do\n    total = total + count(ctx, k & 7)\n  end\n  if t == \"abc\" then return 1 end\n  return 2 + (total & 1)\nend\nreturn xdp.program(filter, { name = \"t\", default = 1 })\n";
    check("stack_of_a_call_chain", src, "p:getstring(20", 0);
}
