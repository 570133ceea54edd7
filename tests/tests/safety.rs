//! Every safety mechanism the compiler emits is real: for each, a program that compiles and
//! verifies as is, and that the kernel's verifier refuses (for the right reason) once the
//! compiler leaves that one mechanism out (`Options::without`, a test-only switch). Division
//! by zero is the exception the verifier allows (BPF defines x / 0 = 0): there the program
//! verifies without the check, and its answer differs from Lua's, computed by real Lua.
//!
//! The rendering of such a refusal in Lua terms (reason, instruction, Lua line) is pinned
//! with insta (snapshots/safety/).
//!
//! Needs bpf(): skips loudly without it, unless LUABPF_REQUIRE_KERNEL=1.

use luabpf_compiler::compile::{compile_source, Compiled, Options, SafetyCheck};
use luabpf_loader::{load, require_kernel_or_skip, test_run, LoadError, Loaded, VerifierError};

fn compile(src: &str, without: Option<SafetyCheck>) -> Compiled {
    // Without a safety check a loop may have no bound: the verifier refuses it, the model of
    // its walk would too, so the walk is skipped.
    let opts = Options {
        without,
        skip_walk: without.is_some(),
        ..Options::default()
    };
    compile_source(src, "prog.lua", &opts).unwrap_or_else(|f| panic!("does not compile ({without:?}):\n{f}"))
}

fn verified(src: &str) -> Loaded {
    let c = compile(src, None);
    load(&c.elf).unwrap_or_else(|e| panic!("the program with every check must verify:\n{e}"))
}

/// The verifier's refusal of `src` compiled without `check`.
fn refused_without(src: &str, check: SafetyCheck) -> VerifierError {
    let c = compile(src, Some(check));
    match load(&c.elf) {
        Ok(_) => panic!("the kernel accepted the program without {check:?}:\n{src}"),
        Err(LoadError::Verifier(v)) => {
            eprintln!("without {check:?}: {}", v.reason().unwrap_or("(no reason)"));
            *v
        }
        Err(e) => panic!("without {check:?}: refused, but not by the verifier: {e}"),
    }
}

/// An XDP program file around `body` (which has `p`, the packet), default verdict DROP (1).
fn xdp(top: &str, body: &str) -> String {
    format!(
        "local xdp = require \"bpf.xdp\"\nlocal map = require \"bpf.map\"\n{top}\nlocal function filter(ctx)\n  local p = ctx:packet()\n{body}\n  return 2\nend\n\nreturn xdp.program(filter, {{ name = \"t\", default = 1 }})\n"
    )
}

fn kernel(test: &str) -> bool {
    require_kernel_or_skip(test)
}

const PACKET_READ: &str = "  if p:getbyte(20) == 7 then return 3 end";

#[test]
fn packet_bounds_check_is_needed() {
    if !kernel("packet_bounds_check_is_needed") {
        return;
    }
    let src = xdp("", PACKET_READ);
    verified(&src);
    let v = refused_without(&src, SafetyCheck::PacketBounds);
    assert!(v.log.contains("invalid access to packet"), "{v}");
}

#[test]
fn nil_test_of_a_map_value_is_needed() {
    if !kernel("nil_test_of_a_map_value_is_needed") {
        return;
    }
    let src = xdp(
        "local m = map.hash(\"m\", { key = \"I4\", value = \"I8\", entries = 8 })",
        "  local v = m[p:getbyte(14)]\n  if v then p:setint64(14, v) end",
    );
    verified(&src);
    let v = refused_without(&src, SafetyCheck::NilTest);
    assert!(v.log.contains("invalid mem access 'map_value_or_null'"), "{v}");
}

#[test]
fn loop_bound_is_needed() {
    if !kernel("loop_bound_is_needed") {
        return;
    }
    // Ends when the byte at 14 + (n & 7) is zero: the verifier cannot know when.
    let src = xdp(
        "",
        "  local n = 0\n  while p:getbyte(14 + (n & 7)) ~= 0 do n = n + 1 end\n  p:setbyte(14, n & 255)",
    );
    verified(&src);
    let v = refused_without(&src, SafetyCheck::LoopBound);
    let reason = v.reason().unwrap_or("");
    assert!(
        ["infinite loop", "back-edge", "too large", "too complex"]
            .iter()
            .any(|r| reason.contains(r)),
        "{v}"
    );
}

#[test]
fn getstring_length_bound_keeps_the_stack_buffer_in_bounds() {
    if !kernel("getstring_length_bound_keeps_the_stack_buffer_in_bounds") {
        return;
    }
    // A run-time length up to 65535 into a 256-byte stack buffer.
    let src = xdp(
        "",
        "  local s = p:getstring(14, p:getuint16(12))\n  if s == \"abc\" then return 3 end",
    );
    verified(&src);
    let v = refused_without(&src, SafetyCheck::StackBounds);
    let reason = v.reason().unwrap_or("");
    assert!(
        reason.contains("invalid write to stack") || reason.contains("invalid indirect access to stack"),
        "{v}"
    );
}

/// Lua's answer for `a // b` (or its error) as the program's verdict, by real Lua.
fn lua_verdict(a: i64, b: i64) -> u32 {
    let lua = mlua::Lua::new();
    let code = format!(
        "local ok, q = pcall(function(a, b) return a // b end, {a}, {b})\n\
         if not ok then return 1 end\n\
         if q == 0 then return 3 end\n\
         return 2"
    );
    lua.load(&code).eval::<u32>().expect("the reference runs")
}

#[test]
fn zero_divisor_check_is_needed() {
    if !kernel("zero_divisor_check_is_needed") {
        return;
    }
    // The verifier accepts a division by zero (BPF defines it as 0); Lua raises an error, so
    // the program must take its default verdict (1). Without the check it answers 3.
    let src = xdp(
        "",
        "  local q = p:getbyte(42) // p:getbyte(43)\n  if q == 0 then return 3 end",
    );
    let packet = vec![0u8; 64];
    let run = |loaded: &Loaded, a: u8, b: u8| {
        let mut pkt = packet.clone();
        pkt[42] = a;
        pkt[43] = b;
        test_run(loaded.program_fd("t").expect("program"), &pkt, 1)
            .expect("test run")
            .retval
    };
    let with = verified(&src);
    for (a, b) in [(7u8, 0u8), (7, 2), (1, 9)] {
        assert_eq!(run(&with, a, b), lua_verdict(a as i64, b as i64), "{a} // {b}");
    }
    let c = compile(&src, Some(SafetyCheck::ZeroDivisor));
    let without = load(&c.elf).unwrap_or_else(|e| panic!("the verifier accepts division by zero:\n{e}"));
    // Division by non-zero is still right; by zero, the differential test catches it.
    assert_eq!(run(&without, 7, 2), lua_verdict(7, 2));
    assert_eq!(lua_verdict(7, 0), 1);
    assert_ne!(
        run(&without, 7, 0),
        lua_verdict(7, 0),
        "the zero check made no difference"
    );
}

/// The rendering of a verifier refusal: the reason, the failing instruction and the Lua line
/// it came from, as codespan shows diagnostics.
#[test]
fn verifier_refusal_is_rendered_in_lua_terms() {
    if !kernel("verifier_refusal_is_rendered_in_lua_terms") {
        return;
    }
    let src = xdp("", PACKET_READ);
    let v = refused_without(&src, SafetyCheck::PacketBounds);
    let at = v.failed_at.as_ref().expect("the log names the failing instruction");
    let line = at.source.as_ref().expect("line info names the Lua line");
    assert_eq!((line.file.as_str(), line.line), ("prog.lua", 6));
    assert_eq!(line.text.as_deref().map(str::trim), Some(PACKET_READ.trim()));
    // Pinned without the log (its register dumps and timings vary by kernel).
    let rendered = v.render(false);
    let head = rendered.split("verifier log").next().unwrap_or("");
    insta::with_settings!({
        snapshot_path => "../../snapshots/safety",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!("packet_bounds_refusal", head);
    });
    assert!(rendered.contains("verifier log"), "{rendered}");
    assert!(v.render(true).contains("processed "), "--verbose shows the whole log");
}

/// The stack estimate along call chains (`luabpf check` refuses 544 bytes, see the
/// `stack_of_a_call_chain` diagnostic) is not stricter than needed: the same chain with a
/// 64-byte string in the called function is accepted, and verifies.
#[test]
fn a_call_chain_within_the_stack_limit_verifies() {
    if !kernel("a_call_chain_within_the_stack_limit_verifies") {
        return;
    }
    let src = "local xdp = require \"bpf.xdp\"\nlocal function count(ctx, n)\n  local p = ctx:packet()\n  local s = p:getstring(20, 64)\n  local c = 0\n  for i = 1, #s do\n    c = c + (s:byte(i) or 0)\n  end\n  return c + n\nend\nlocal function filter(ctx)\n  local p = ctx:packet()\n  local t = p:getstring(14, p:getbyte(13))\n  local total = 0\n  for k = 0, p:getbyte(12) do\n    total = total + count(ctx, k & 7)\n  end\n  if t == \"abc\" then return 1 end\n  return 2 + (total & 1)\nend\nreturn xdp.program(filter, { name = \"t\", default = 1 })\n";
    let c = compile(src, None);
    assert!(
        !c.object.programs[0].subfunctions.is_empty(),
        "`count` must be verified on its own for this test to mean anything"
    );
    verified(src);
}
