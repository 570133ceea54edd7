//! Lua 5.4 semantics, differentially: every program here is compiled by luabpf, loaded into
//! the kernel and run with BPF_PROG_TEST_RUN, and the very same program file is run by a real
//! Lua 5.4 (mlua, vendored) under a small plain-Lua shim of `bpf.*`/`linux.*` and of the
//! packet object. The verdict and every byte of the output packet must agree.
//!
//! The integer operators run over a table of edge operands, three ways: operands read from the
//! packet (so nothing folds), one operand a literal (immediate forms, strength reduction) and
//! both literals (constant folding).
//!
//! Skips loudly when bpf() is unavailable, unless LUABPF_REQUIRE_KERNEL=1.

use luabpf_compiler::compile::{compile_source, Options};
use luabpf_loader::{load, require_kernel_or_skip, test_run, Loaded};
use luabpf_tests::harness::Rng;
use luabpf_tests::programs::random_program;
use mlua::{Function, Lua, Table};

// ---------------------------------------------------------------------------------------
// The reference: a plain-Lua shim under which a program file runs unchanged.

const SHIM: &str = r#"
local modules = {}
modules["linux.xdp"] = { ABORTED = 0, DROP = 1, PASS = 2, TX = 3, REDIRECT = 4 }
modules["bpf.xdp"] = {
  program = function(fn, opts)
    opts = opts or {}
    return { fn = fn, opts = opts, default = opts.default or 2 }
  end,
}
local function mkmap(kind)
  return function(name, spec)
    if type(name) == "table" then spec = name end
    if kind == "array" or kind == "percpu_array" then
      local entries = spec.entries
      return setmetatable({}, { __index = function(_, k)
        if math.type(k) == "integer" and k >= 0 and k < entries then return 0 end
      end })
    end
    return {}
  end
end
modules["bpf.map"] = {
  hash = mkmap("hash"), lru_hash = mkmap("lru_hash"), percpu_hash = mkmap("percpu_hash"),
  array = mkmap("array"), percpu_array = mkmap("percpu_array"), lpm_trie = mkmap("lpm_trie"),
}
modules["linux.byteorder"] = {
  ntoh16 = function(x) return (string.unpack(">I2", string.pack("<I2", x & 0xffff))) end,
  ntoh32 = function(x) return (string.unpack(">I4", string.pack("<I4", x & 0xffffffff))) end,
  ntoh64 = function(x) return (string.unpack(">i8", string.pack("<i8", x))) end,
}
modules["linux.byteorder"].hton16 = modules["linux.byteorder"].ntoh16
modules["linux.byteorder"].hton32 = modules["linux.byteorder"].ntoh32
modules["linux.byteorder"].hton64 = modules["linux.byteorder"].ntoh64
modules["bpf"] = {
  ktime = function() return 0 end, random = function() return 4 end,
  cpu = function() return 0 end, print = function() end,
}
require = function(name)
  local m = modules[name]
  if m == nil then error("shim: no module " .. name) end
  return m
end

local Packet = {}
Packet.__index = Packet
Packet.__len = function(self) return #self.b end

local function range(self, o, n)
  if math.type(o) ~= "integer" then error("offset is not an integer") end
  if o < 0 or o > #self.b - n then error("packet access out of bounds") end
end
local function get(fmt, n)
  return function(self, o)
    range(self, o, n)
    return (string.unpack(fmt, string.char(table.unpack(self.b, o + 1, o + n))))
  end
end
local function set(n)
  return function(self, o, v)
    range(self, o, n)
    local s = string.pack("<i8", v)
    for i = 1, n do self.b[o + i] = s:byte(i) end
  end
end
Packet.getbyte = get("<I1", 1); Packet.getuint8 = Packet.getbyte; Packet.getint8 = get("<i1", 1)
Packet.getuint16 = get("<I2", 2); Packet.getint16 = get("<i2", 2)
Packet.getuint32 = get("<I4", 4); Packet.getint32 = get("<i4", 4)
Packet.getint64 = get("<i8", 8); Packet.getnumber = Packet.getint64
Packet.setbyte = set(1); Packet.setuint8 = set(1); Packet.setint8 = set(1)
Packet.setuint16 = set(2); Packet.setint16 = set(2)
Packet.setuint32 = set(4); Packet.setint32 = set(4)
Packet.setint64 = set(8); Packet.setnumber = set(8)
function Packet:getstring(o, n)
  if math.type(n) ~= "integer" or n < 0 or n > 255 then error("bad getstring length") end
  range(self, o, n)
  if n == 0 then return "" end
  return string.char(table.unpack(self.b, o + 1, o + n))
end
function Packet:setstring(o, s)
  range(self, o, #s)
  for i = 1, #s do self.b[o + i] = s:byte(i) end
end

-- Runs program `prog` on the packet bytes `s`: returns the verdict, the packet after the run
-- and the error message if the run raised.
function run_packet(prog, s)
  local b = { s:byte(1, -1) }
  local packet = setmetatable({ b = b }, Packet)
  local ctx = { ingress_ifindex = 1, rx_queue_index = 0 }
  function ctx:packet() return packet end
  local ok, v = pcall(prog.fn, ctx)
  local out = string.char(table.unpack(b))
  if not ok then return prog.default, out, tostring(v) end
  if v == nil then return prog.default, out, nil end
  if math.type(v) ~= "integer" then return -999, out, "returned a " .. type(v) end
  return v, out, nil
end

-- Evaluates a Lua expression text; returns ok, value.
function eval_expr(text)
  local f = assert(load("return " .. text))
  return pcall(f)
end
"#;

struct Reference {
    lua: Lua,
    prog: Table,
    run: Function,
}

impl Reference {
    fn new(src: &str) -> Result<Reference, String> {
        let lua = Lua::new();
        lua.load(SHIM)
            .set_name("shim")
            .exec()
            .map_err(|e| format!("shim: {e}"))?;
        let prog: Table = lua
            .load(src)
            .set_name("prog.lua")
            .eval()
            .map_err(|e| format!("reference body: {e}"))?;
        let run: Function = lua.globals().get("run_packet").unwrap();
        Ok(Reference { lua, prog, run })
    }

    /// Verdict, output packet, error (if the run raised).
    fn run(&self, packet: &[u8]) -> (u32, Vec<u8>, Option<String>) {
        let s = self.lua.create_string(packet).unwrap();
        let (v, out, err): (i64, mlua::LuaString, Option<String>) =
            self.run.call((self.prog.clone(), s)).expect("reference run");
        (v as u32, out.as_bytes().to_vec(), err)
    }
}

/// Lua's value of an expression of literals, or None if evaluating it raises.
fn lua_eval(lua: &Lua, text: &str) -> Option<i64> {
    let f: Function = lua.globals().get("eval_expr").unwrap();
    let (ok, v): (bool, mlua::Value) = f.call(text).unwrap();
    if !ok {
        return None;
    }
    match v {
        mlua::Value::Integer(i) => Some(i),
        mlua::Value::Boolean(b) => Some(b as i64),
        other => panic!("{text}: not an integer: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The harness

#[derive(Default)]
struct Tally {
    programs: usize,
    runs: usize,
    failures: Vec<String>,
    /// Time spent compiling, loading (verifier), in the Lua reference and in test runs.
    times: [std::time::Duration; 4],
}

impl Tally {
    fn fail(&mut self, f: String) {
        self.failures.push(f);
    }

    fn finish(self, what: &str) {
        eprintln!(
            "{what}: {} programs, {} packets compared with Lua, {} failures (compile {:?}, load {:?}, lua {:?}, runs {:?})",
            self.programs,
            self.runs,
            self.failures.len(),
            self.times[0],
            self.times[1],
            self.times[2],
            self.times[3]
        );
        if !self.failures.is_empty() {
            let shown: Vec<&String> = self.failures.iter().take(40).collect();
            panic!(
                "{what}: {} failures (first {}):\n\n{}",
                self.failures.len(),
                shown.len(),
                shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n\n")
            );
        }
    }
}

fn word(b: &[u8], off: usize) -> Option<i64> {
    b.get(off..off + 8).map(|w| i64::from_le_bytes(w.try_into().unwrap()))
}

/// Compiles and loads `src`; None (and a recorded failure) if either refuses.
fn build(tally: &mut Tally, label: &str, src: &str) -> Option<Loaded> {
    let start = std::time::Instant::now();
    let compiled = compile_source(src, "prog.lua", &Options::default());
    tally.times[0] += start.elapsed();
    let compiled = match compiled {
        Ok(c) => c,
        Err(f) => {
            tally.fail(format!("[{label}] did not compile:\n{src}\n{}", f.render()));
            return None;
        }
    };
    let start = std::time::Instant::now();
    let loaded = load(&compiled.elf);
    tally.times[1] += start.elapsed();
    match loaded {
        Ok(l) => Some(l),
        Err(e) => {
            tally.fail(format!("[{label}] the verifier refused it:\n{src}\n{e}"));
            None
        }
    }
}

/// Runs `src` in the kernel and in Lua on every packet; records every difference.
/// `describe` says what a packet means (for failure messages).
fn differential(tally: &mut Tally, label: &str, src: &str, packets: &[Vec<u8>], describe: &dyn Fn(&[u8]) -> String) {
    let Some(loaded) = build(tally, label, src) else { return };
    let start = std::time::Instant::now();
    let reference = Reference::new(src);
    tally.times[2] += start.elapsed();
    let reference = match reference {
        Ok(r) => r,
        Err(e) => {
            tally.fail(format!("[{label}] the Lua reference refused it: {e}\n{src}"));
            return;
        }
    };
    tally.programs += 1;
    let fd = loaded.program_fd("t").expect("program t");
    let mut shown = 0;
    for packet in packets {
        let start = std::time::Instant::now();
        let got = test_run(fd, packet, 1).unwrap_or_else(|e| panic!("[{label}] test run: {e}"));
        tally.times[3] += start.elapsed();
        let start = std::time::Instant::now();
        let (verdict, out, err) = reference.run(packet);
        tally.times[2] += start.elapsed();
        tally.runs += 1;
        let kout = &got.data_out[..got.data_out.len().min(packet.len().max(out.len()))];
        if got.retval != verdict || kout != &out[..] {
            shown += 1;
            if shown > 4 {
                tally.fail(format!("[{label}] (another mismatch: {})", describe(packet)));
                continue;
            }
            let mut diffs = Vec::new();
            for off in (0..out.len()).step_by(8) {
                let k = kout.get(off..(off + 8).min(kout.len())).unwrap_or(&[]);
                let r = &out[off..(off + 8).min(out.len())];
                if k != r {
                    diffs.push(format!(
                        "  bytes {off}..: kernel {k:02x?} lua {r:02x?}{}",
                        match (word(kout, off), word(&out, off)) {
                            (Some(x), Some(y)) => format!(" (i64 kernel {x}, lua {y})"),
                            _ => String::new(),
                        }
                    ));
                }
            }
            tally.fail(format!(
                "[{label}] {}\n  verdict: kernel {} lua {}{}\n{}\n--- program ---\n{src}",
                describe(packet),
                got.retval,
                verdict,
                err.map(|e| format!(" (lua raised: {e})")).unwrap_or_default(),
                diffs.join("\n")
            ));
        }
    }
}

/// A tiny deterministic generator (xorshift64*).

fn kernel(name: &str) -> bool {
    require_kernel_or_skip(name)
}

// ---------------------------------------------------------------------------------------
// Integer operators over edge operands

const MININT: i64 = i64::MIN;

const EDGES: &[i64] = &[
    0,
    1,
    -1,
    2,
    -2,
    7,
    -7,
    63,
    64,
    65,
    -63,
    -64,
    200,
    -200,
    255,
    256,
    i64::MAX,
    MININT,
    0x1_0000_0000,
    -0x1_0000_0000,
    12345678901234,
];

/// `A` and `B` stand for the operands. Every expression is an integer.
const EXPRS: &[&str] = &[
    // the operators
    "A + B",
    "A - B",
    "A * B",
    "A // B",
    "A % B",
    "A & B",
    "A | B",
    "A ~ B",
    "A << B",
    "A >> B",
    "-A",
    "~A",
    "- -A",
    "~~B",
    // comparisons, as values and as conditions
    "(A < B) and 1 or 0",
    "(A <= B) and 1 or 0",
    "(A > B) and 1 or 0",
    "(A >= B) and 1 or 0",
    "(A == B) and 1 or 0",
    "(A ~= B) and 1 or 0",
    "not (A < B) and 1 or 0",
    "not (A == B) and 5 or 6",
    // and / or value semantics
    "A and B",
    "A or B",
    "(A < B) and A or B",
    "(A > B) and A or B",
    "(A > 0 and B > 0) and 1 or 0",
    "(A > 0 or B > 0) and 1 or 0",
    "not not (A ~= B) and 7 or 9",
    "(A ~= 0 and A) or B",
    "(A < 0 or B < 0) and A * B or A + B",
    // short circuit: the division must not happen when B is 0
    "B ~= 0 and A // B or -1",
    "B == 0 and -1 or A % B",
    // combinations
    "A // B * B + A % B",
    "(A + B) * (A - B)",
    "(A << B) >> B",
    "-(A // B)",
    "(-A) // B",
    "A % -B",
    "(A ~ B) & 0xff",
    "~A & B | A ~ ~B",
];

/// Expressions with one literal operand: the immediate forms and strength reductions.
const EXPRS_ONE_CONST: &[&str] = &[
    "A // 2",
    "A // -2",
    "A // 1",
    "A // -1",
    "A // 256",
    "A // 7",
    "A // 0x100000000",
    "A % 2",
    "A % -2",
    "A % 1",
    "A % -1",
    "A % 256",
    "A % -256",
    "A % 7",
    "A % 0x100000000",
    "A * 2",
    "A * -1",
    "A * 0",
    "A * 0x100000000",
    "A * 3",
    "A << 0",
    "A << 1",
    "A << 63",
    "A << 64",
    "A << 200",
    "A << -1",
    "A << -63",
    "A << -64",
    "A >> 0",
    "A >> 1",
    "A >> 63",
    "A >> 64",
    "A >> 200",
    "A >> -1",
    "A >> -64",
    "1 << A",
    "-1 >> A",
    "-1 << A",
    "0x7fffffffffffffff >> A",
    "256 >> A",
    "A & 0xff",
    "A & -1",
    "A | 0x8000000000000000",
    "A ~ -1",
    "A & 0xffffffff",
    "A & 0x100000000",
    "A + 1",
    "A - 1",
    "A + 0x7fffffffffffffff",
    "A - 0x7fffffffffffffff",
    "1 - A",
    "0 - A",
    "(A < 0) and 1 or 0",
    "(A <= -1) and 1 or 0",
    "(A > 0x7ffffffe) and 1 or 0",
    "(A == -1) and 1 or 0",
    "(A >= 0x100000000) and 1 or 0",
    "(-1 < A) and 1 or 0",
    "(A < 0xffffffff) and 1 or 0",
    "(A > -0x80000000) and 1 or 0",
    "(A == 0xffffffff) and 1 or 0",
    "7 // A",
    "-7 // A",
    "7 % A",
    "-7 % A",
    "0x7fffffffffffffff % A",
];

fn lit(v: i64) -> String {
    if v == MININT {
        "(-0x7fffffffffffffff - 1)".to_string()
    } else if v < 0 {
        format!("({v})")
    } else {
        format!("{v}")
    }
}

fn subst(expr: &str, a: &str, b: &str) -> String {
    expr.replace('A', a).replace('B', b)
}

const PRELUDE: &str = "local xdp = require \"bpf.xdp\"\nlocal bo = require \"linux.byteorder\"\n";

/// A program whose body (inside `f`, after `local p = ctx:packet()`) is `body`.
fn program(body: &str) -> String {
    format!("{PRELUDE}local function f(ctx)\n  local p = ctx:packet()\n{body}\n  return 2\nend\nreturn xdp.program(f, {{ name = \"t\", default = 1 }})\n")
}

fn operands_packet(a: i64, b: i64, outputs: usize) -> Vec<u8> {
    let mut p = vec![0u8; 30 + 8 * outputs.max(1)];
    for (i, x) in p.iter_mut().enumerate().take(14) {
        *x = 0xe0 + i as u8;
    }
    p[14..22].copy_from_slice(&a.to_le_bytes());
    p[22..30].copy_from_slice(&b.to_le_bytes());
    p
}

fn hex(p: &[u8]) -> String {
    p.iter().map(|b| format!("{b:02x}")).collect()
}

fn describe_ab(p: &[u8]) -> String {
    format!("a = {}, b = {}", word(p, 14).unwrap(), word(p, 22).unwrap())
}

/// Both operands from the packet: one program per expression, one packet per operand pair.
#[test]
fn integer_ops_runtime_operands() {
    if !kernel("integer_ops_runtime_operands") {
        return;
    }
    let mut t = Tally::default();
    let packets: Vec<Vec<u8>> = EDGES
        .iter()
        .flat_map(|&a| EDGES.iter().map(move |&b| operands_packet(a, b, 1)))
        .collect();
    for e in EXPRS {
        let body = format!(
            "  local a = p:getint64(14)\n  local b = p:getint64(22)\n  p:setint64(30, {})",
            subst(e, "a", "b")
        );
        differential(&mut t, e, &program(&body), &packets, &describe_ab);
    }
    // The comparisons again as statement conditions.
    for op in ["<", "<=", ">", ">=", "==", "~="] {
        let body = format!(
            "  local a = p:getint64(14)\n  local b = p:getint64(22)\n  local r = 0\n  if a {op} b then r = 1 elseif a == 0 then r = 2 else r = 3 end\n  p:setint64(30, r)\n  if not (a {op} b) then return 3 end"
        );
        differential(&mut t, &format!("if a {op} b"), &program(&body), &packets, &describe_ab);
    }
    // A boolean local.
    let body = "  local a = p:getint64(14)\n  local b = p:getint64(22)\n  local c = a < b\n  local d = not c\n  local e = c or (a == b)\n  if d and e then p:setint64(30, 1) elseif c then p:setint64(30, 2) end\n  if e then return 3 end";
    differential(&mut t, "boolean locals", &program(body), &packets, &describe_ab);
    eprintln!("operand pairs checked (run-time operands): {}", t.runs);
    t.finish("integer_ops_runtime_operands");
}

/// Whether Lua raises for `expr` with `a` and `b` in any of the given operand combinations.
fn raises_for_any(lua: &Lua, expr: &str, pairs: impl Iterator<Item = (String, String)>) -> bool {
    let mut pairs = pairs;
    pairs.any(|(a, b)| lua_eval(lua, &subst(expr, &a, &b)).is_none())
}

/// A program reading `a` from the packet and writing one result per statement text.
fn batch_program(texts: &[String]) -> String {
    let body: String = texts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("  p:setint64({}, {t})\n", 30 + 8 * i))
        .collect();
    program(&format!("  local a = p:getint64(14)\n{body}"))
}

/// One operand a literal, the other from the packet. Results are batched: one program holds
/// an expression with every edge literal (one result each) and runs on every edge operand.
/// Statements that may raise (a literal zero divisor) get programs of their own.
#[test]
fn integer_ops_one_literal() {
    if !kernel("integer_ops_one_literal") {
        return;
    }
    let mut t = Tally::default();
    let lua = Lua::new();
    lua.load(SHIM).exec().unwrap();
    let mut pairs = 0usize;
    let edge_lits: Vec<String> = EDGES.iter().map(|&v| lit(v)).collect();

    // Expressions with a built-in literal: those that never raise share a program.
    let (safe, raising): (Vec<&str>, Vec<&str>) = EXPRS_ONE_CONST
        .iter()
        .partition(|e| !raises_for_any(&lua, e, edge_lits.iter().map(|a| (a.clone(), "0".to_string()))));
    let packets: Vec<Vec<u8>> = EDGES.iter().map(|&a| operands_packet(a, 0, safe.len())).collect();
    let texts: Vec<String> = safe.iter().map(|e| subst(e, "a", "b")).collect();
    differential(
        &mut t,
        "literal forms (batched)",
        &batch_program(&texts),
        &packets,
        &describe_ab,
    );
    pairs += texts.len() * packets.len();
    for e in raising {
        let packets: Vec<Vec<u8>> = EDGES.iter().map(|&a| operands_packet(a, 0, 1)).collect();
        differential(&mut t, e, &batch_program(&[subst(e, "a", "b")]), &packets, &describe_ab);
        pairs += packets.len();
    }

    // Every two-operand expression with each edge literal on one side.
    for e in EXPRS.iter().filter(|e| e.contains('B')) {
        // `a OP literal`: literals that make some operand raise are checked alone.
        let mut batch = Vec::new();
        for (k, kl) in edge_lits.iter().enumerate() {
            let text = subst(e, "a", kl);
            if raises_for_any(&lua, e, edge_lits.iter().map(|a| (a.clone(), kl.clone()))) {
                let packets: Vec<Vec<u8>> = EDGES.iter().map(|&a| operands_packet(a, EDGES[k], 1)).collect();
                differential(
                    &mut t,
                    &format!("{e} [B = {}]", EDGES[k]),
                    &batch_program(&[text]),
                    &packets,
                    &describe_ab,
                );
                pairs += packets.len();
            } else {
                batch.push(text);
            }
        }
        let packets: Vec<Vec<u8>> = EDGES.iter().map(|&a| operands_packet(a, 0, batch.len())).collect();
        differential(
            &mut t,
            &format!("{e} [B = each literal]"),
            &batch_program(&batch),
            &packets,
            &describe_ab,
        );
        pairs += batch.len() * packets.len();
        // `literal OP a`: whether it raises depends on `a` alone, for all statements alike.
        let texts: Vec<String> = edge_lits.iter().map(|kl| subst(e, kl, "a")).collect();
        let packets: Vec<Vec<u8>> = EDGES.iter().map(|&a| operands_packet(a, 0, texts.len())).collect();
        differential(
            &mut t,
            &format!("{e} [A = each literal]"),
            &batch_program(&texts),
            &packets,
            &describe_ab,
        );
        pairs += texts.len() * packets.len();
    }
    eprintln!("operand pairs checked (one literal operand): {pairs}");
    t.finish("integer_ops_one_literal");
}

/// Both operands literals (constant folding), and both body constants (upvalues): the same
/// answers as Lua. Many results per program: two programs per expression.
#[test]
fn integer_ops_constant_folded() {
    if !kernel("integer_ops_constant_folded") {
        return;
    }
    let mut t = Tally::default();
    let lua = Lua::new();
    lua.load(SHIM).exec().unwrap();
    let mut pairs = 0usize;
    let mut raising = Vec::new();
    let consts: String = EDGES
        .iter()
        .enumerate()
        .map(|(j, &v)| format!("local K{j} <const> = {}\n", lit(v)))
        .collect();
    for e in EXPRS {
        let e_uses_b = e.contains('B');
        let bs: Vec<usize> = if e_uses_b { (0..EDGES.len()).collect() } else { vec![0] };
        // (literal text, body-constant text) of every pair that does not raise.
        let mut ok = Vec::new();
        for (i, &a) in EDGES.iter().enumerate() {
            for &j in &bs {
                let b = EDGES[j];
                let text = subst(e, &lit(a), &lit(b));
                if lua_eval(&lua, &text).is_some() {
                    ok.push((text, subst(e, &format!("K{i}"), &format!("K{j}"))));
                } else {
                    raising.push((*e, a, b, text));
                }
            }
        }
        // At most 200 results per program: a test-run packet holds about 3.5 KiB.
        for (c, chunk) in ok.chunks(200).enumerate() {
            let lits: String = chunk
                .iter()
                .enumerate()
                .map(|(i, (l, _))| format!("  p:setint64({}, {l})\n", 30 + 8 * i))
                .collect();
            let packet = vec![vec![0u8; 30 + 8 * chunk.len()]];
            differential(
                &mut t,
                &format!("{e} [literals, part {c}]"),
                &program(&lits),
                &packet,
                &|_| String::new(),
            );
            let ks: String = chunk
                .iter()
                .enumerate()
                .map(|(i, (_, k))| format!("  p:setint64({}, {k})\n", 30 + 8 * i))
                .collect();
            differential(
                &mut t,
                &format!("{e} [body constants, part {c}]"),
                &format!("{consts}{}", program(&ks)),
                &packet,
                &|_| String::new(),
            );
            pairs += 2 * chunk.len();
        }
    }
    // Division by a literal zero: a runtime error (the default verdict), not a refusal. The
    // write before it stays.
    let few = [0, 1, -1, i64::MAX, MININT];
    for (e, a, b, text) in raising.iter().filter(|(_, a, _, _)| few.contains(a)) {
        let body = format!("  p:setint64(22, 77)\n  p:setint64(30, {text})");
        differential(
            &mut t,
            &format!("{e} [A = {a}, B = {b}, literals]"),
            &program(&body),
            &[vec![0u8; 38]],
            &|_| String::new(),
        );
        pairs += 1;
    }
    eprintln!("operand pairs checked (constant folded): {pairs}");
    t.finish("integer_ops_constant_folded");
}

// ---------------------------------------------------------------------------------------
// Byte order, on run-time values and fused with loads

#[test]
fn byteorder() {
    if !kernel("byteorder") {
        return;
    }
    let mut t = Tally::default();
    let mut rng = Rng::new(0x5eed_0001);
    let mut packets: Vec<Vec<u8>> = EDGES
        .iter()
        .map(|&a| operands_packet(a, a.wrapping_mul(31), 8))
        .collect();
    for _ in 0..100 {
        let mut p = rng.bytes(30 + 64);
        p[..14].fill(0xee);
        packets.push(p);
    }
    let cases: &[(&str, &str)] = &[
        ("ntoh16 of a value", "p:setint64(30, bo.ntoh16(a))\n  p:setint64(38, bo.hton16(b))"),
        ("ntoh32 of a value", "p:setint64(30, bo.ntoh32(a))\n  p:setint64(38, bo.hton32(b))"),
        ("ntoh64 of a value", "p:setint64(30, bo.ntoh64(a))\n  p:setint64(38, bo.hton64(b))"),
        (
            "fused loads",
            "p:setint64(30, bo.ntoh16(p:getuint16(14)))\n  p:setint64(38, bo.ntoh32(p:getuint32(15)))\n  p:setint64(46, bo.ntoh64(p:getint64(17)))\n  p:setint64(54, bo.ntoh16(p:getint16(19)))\n  p:setint64(62, bo.ntoh32(p:getint32(21)))\n  p:setint64(70, bo.ntoh16(p:getbyte(22)))",
        ),
        (
            "round trips",
            "p:setint64(30, bo.ntoh16(bo.hton16(a)))\n  p:setint64(38, bo.ntoh32(bo.ntoh32(a)))\n  p:setint64(46, bo.hton64(bo.ntoh64(a)))\n  p:setint64(54, bo.ntoh16(a) + bo.ntoh32(b))",
        ),
        (
            "ntoh64 results in signed contexts",
            "p:setint64(30, (bo.ntoh64(a) < 0) and 1 or 2)\n  p:setint64(38, 255 << bo.ntoh64(a))\n  p:setint64(46, bo.ntoh64(a) // 7)\n  p:setint64(54, bo.ntoh64(b) % 7)\n  p:setint64(62, -1 >> bo.hton64(b))\n  if bo.hton64(b) >= 0 then p:setint64(70, 9) end",
        ),
        (
            "ntoh16 and ntoh32 results in signed contexts",
            "p:setint64(30, (bo.ntoh32(a) < 0) and 1 or 2)\n  p:setint64(38, 255 << bo.ntoh16(a))\n  p:setint64(46, bo.ntoh32(a) // -7)\n  p:setint64(54, bo.ntoh16(b) % -7)\n  p:setint64(62, -bo.ntoh32(b))",
        ),
        (
            "signed loads",
            "p:setint64(30, p:getint8(14))\n  p:setint64(38, p:getint16(15))\n  p:setint64(46, p:getint32(16))\n  p:setint64(54, p:getuint32(17))\n  p:setint64(62, p:getuint16(18) + p:getuint8(19))\n  p:setint64(70, p:getnumber(20))",
        ),
        (
            "narrow stores",
            "p:setuint16(30, a)\n  p:setint16(32, b)\n  p:setuint32(34, a)\n  p:setint32(38, b)\n  p:setbyte(42, a)\n  p:setint8(43, b)\n  p:setuint8(44, a >> 8)\n  p:setnumber(46, bo.ntoh16(a))",
        ),
    ];
    for (label, stmts) in cases {
        let body = format!("  local a = p:getint64(14)\n  local b = p:getint64(22)\n  {stmts}");
        differential(&mut t, label, &program(&body), &packets, &describe_ab);
    }
    // Body-time constants go through the same functions.
    let body = "  p:setint64(30, bo.ntoh16(0x1234))\n  p:setint64(38, bo.ntoh32(-2))\n  p:setint64(46, bo.ntoh64(0x0102030405060708))\n  p:setint64(54, bo.ntoh16(-1))";
    differential(&mut t, "folded byte order", &program(body), &[vec![0u8; 64]], &|_| {
        String::new()
    });
    t.finish("byteorder");
}

// ---------------------------------------------------------------------------------------
// Loops

fn small_operand_packets(range: std::ops::RangeInclusive<i64>) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for a in range.clone() {
        for b in range.clone() {
            v.push(operands_packet(a, b, 4));
        }
    }
    v
}

#[test]
fn loops() {
    if !kernel("loops") {
        return;
    }
    let mut t = Tally::default();
    let small = small_operand_packets(-6..=9);
    let rd = "  local a = p:getint64(14)\n  local b = p:getint64(22)\n";
    let cases: &[(&str, &str)] = &[
        ("for runtime bounds", "local s, n = 0, 0\n  for i = a, b do s = s + i; n = n + 1 end\n  p:setint64(30, s)\n  p:setint64(38, n)"),
        ("for negative step", "local s, n = 0, 0\n  for i = a, b, -1 do s = s * 3 + i; n = n + 1 end\n  p:setint64(30, s)\n  p:setint64(38, n)"),
        ("for step -3", "local s, n = 0, 0\n  for i = a, b, -3 do s = s * 3 + i; n = n + 1 end\n  p:setint64(30, s)\n  p:setint64(38, n)"),
        ("for step 4", "local s = 0\n  for i = b, a, 4 do s = s * 5 + i end\n  p:setint64(30, s)"),
        ("for constant negative step", "local s = 0\n  for i = 10, 1, -3 do s = s * 10 + i end\n  for i = 1, 0 do s = s + 1000 end\n  for i = 0, -5, -1 do s = s + i end\n  p:setint64(30, s + a)"),
        ("for with break", "local s = 0\n  for i = 1, 20 do\n    if i > b then break end\n    s = s + i * a\n  end\n  p:setint64(30, s)"),
        ("for loop variable is a copy", "local s = 0\n  for i = 1, 5 do\n    local j = i\n    i = i * 10\n    s = s + i + j\n  end\n  p:setint64(30, s + a)"),
        ("nested for, constant bounds, inner break", "local s = 0\n  for i = 0, 7 do\n    for j = 0, 9 do\n      if j > i or j > b then break end\n      s = s + i * 16 + j\n    end\n  end\n  p:setint64(30, s)"),
        ("nested for, inner loop in a function", "local function row(i, b)\n    local s = 0\n    for j = 0, b do\n      if j > i then break end\n      s = s + i * 16 + j\n    end\n    return s\n  end\n  local s = 0\n  for i = 0, a do s = s + row(i, b) end\n  p:setint64(30, s)"),
        ("while", "local i, s = a, 0\n  while i < b do\n    s = s + i\n    i = i + 2\n  end\n  p:setint64(30, s)\n  p:setint64(38, i)"),
        ("while with break", "local i, s = 0, 1\n  while true do\n    i = i + 1\n    if i > a then break end\n    s = s * 2 + b\n  end\n  p:setint64(30, s)"),
        ("repeat until a body local", "local i, s = 0, 0\n  repeat\n    local k = i * 2 + a\n    s = s + k\n    i = i + 1\n  until k >= b or i >= 20\n  p:setint64(30, s)\n  p:setint64(38, i)"),
        ("repeat with break", "local i = 0\n  repeat\n    i = i + 1\n    if i == b then break end\n  until i > a\n  p:setint64(30, i)"),
        ("two repeat loops in sequence", "local n = 0\n  repeat n = n + 1 until n >= a\n  local k = 0\n  repeat k = k + 1 until k >= b\n  p:setint64(30, n * 100 + k)"),
        ("while with four ifs", "local n, s = 0, 0\n  while n < 64 and n < a do\n    n = n + 1\n    if p:getbyte(14 + (n & 7)) == 1 then s = s + 1 end\n    if p:getbyte(15 + (n & 7)) == 1 then s = s + 2 end\n    if p:getbyte(16 + (n & 7)) == 1 then s = s + 3 end\n    if p:getbyte(17 + (n & 7)) == 1 then s = s + 4 end\n  end\n  p:setint64(30, s)"),
        ("constant loop with a branch, then a repeat", "local s = p:getstring(40, 3)\n  for i = 2, 5 do\n    if a == i then p:setint64(30, 1) end\n  end\n  local k = 0\n  repeat\n    b = b + 1\n    k = k + 1\n    p:setint64(38, s:byte(b) or 0)\n  until b >= a or k >= 8"),
        ("loop writing the packet", "for i = 0, 3 do\n    if i <= a then p:setbyte(30 + i, b + i) end\n  end"),
    ];
    for (label, body) in cases {
        differential(&mut t, label, &program(&format!("{rd}  {body}")), &small, &describe_ab);
    }
    // Bounds at the edges of the integer range: Lua 5.4 loops exactly (no overflow).
    let edge_loops: &[(&str, &str)] = &[
        ("for up to maxint", "local n = 0\n  for i = 0x7fffffffffffffff - 2, 0x7fffffffffffffff do n = n + 1 end\n  p:setint64(30, n)"),
        ("for down to minint", "local n = 0\n  for i = -0x7fffffffffffffff + 1, -0x7fffffffffffffff - 1, -1 do n = n + 1 end\n  p:setint64(30, n)"),
        ("for runtime to maxint", "local n = 0\n  for i = a, 0x7fffffffffffffff do n = n + 1; if n > 10 then break end end\n  p:setint64(30, n)"),
        ("for runtime upper bound near maxint", "local n = 0\n  for i = 0x7fffffffffffffff - 3, a do n = n + 1 end\n  p:setint64(30, n)"),
        ("for runtime lower bound near minint", "local n = 0\n  for i = -0x7fffffffffffffff + 3, a, -1 do n = n + 1 end\n  p:setint64(30, n)"),
        ("for step overflow", "local n, s = 0, 0\n  for i = a, b, 0x4000000000000000 do n = n + 1; s = s ~ i end\n  p:setint64(30, n)\n  p:setint64(38, s)"),
    ];
    let mut edge_packets = Vec::new();
    for a in [
        i64::MAX,
        i64::MAX - 1,
        i64::MAX - 5,
        MININT,
        MININT + 1,
        MININT + 5,
        0,
        -1,
    ] {
        for b in [i64::MAX, MININT, 0, 1] {
            edge_packets.push(operands_packet(a, b, 4));
        }
    }
    for (label, body) in edge_loops {
        differential(
            &mut t,
            label,
            &program(&format!("{rd}  {body}")),
            &edge_packets,
            &describe_ab,
        );
    }
    t.finish("loops");
}

/// Run-time-bounded loops stop at 1,024 iterations with the default verdict (documented in
/// docs/language.md section 5): Lua would go on, so the expected values are written by hand.
#[test]
fn loop_iteration_bound() {
    if !kernel("loop_iteration_bound") {
        return;
    }
    let mut t = Tally::default();
    let cases = [
        (
            "for",
            "local n = 0\n  for i = 1, a do n = n + 1 end\n  p:setint64(30, n)",
        ),
        (
            "while",
            "local n = 0\n  while n < a do n = n + 1 end\n  p:setint64(30, n)",
        ),
        (
            "repeat",
            "local n = 0\n  repeat n = n + 1 until n >= a\n  p:setint64(30, n)",
        ),
    ];
    for (label, body) in cases {
        let src = program(&format!("  local a = p:getint64(14)\n  {body}"));
        let Some(loaded) = build(&mut t, label, &src) else {
            continue;
        };
        let fd = loaded.program_fd("t").unwrap();
        for (a, verdict, out) in [
            (1i64, 2u32, Some(1i64)),
            (1000, 2, Some(1000)),
            (1024, 2, Some(1024)),
            (1025, 1, None),
            (1 << 40, 1, None),
        ] {
            let got = test_run(fd, &operands_packet(a, 0, 1), 1).unwrap();
            t.runs += 1;
            let res = word(&got.data_out, 30).unwrap();
            let ok = got.retval == verdict && out.is_none_or(|o| o == res) && (out.is_some() || res == 0);
            if !ok {
                t.fail(format!(
                    "[{label} bound] a = {a}: verdict {} result {res}, expected verdict {verdict} result {out:?}",
                    got.retval
                ));
            }
        }
    }
    t.finish("loop_iteration_bound");
}

// ---------------------------------------------------------------------------------------
// Functions: multiple returns

#[test]
fn functions_and_multiple_returns() {
    if !kernel("functions_and_multiple_returns") {
        return;
    }
    let mut t = Tally::default();
    let mut packets = small_operand_packets(-4..=5);
    for &a in EDGES {
        packets.push(operands_packet(a, 3, 4));
        packets.push(operands_packet(a, -1, 4));
    }
    let helpers = r#"
local function divmod(x, y) return x // y, x % y end
local function three(x) return x, x + 1, x + 2 end
local function maybe_two(x) if x > 0 then return x, 1 end return 0 end
local function sign(x) if x < 0 then return -1 elseif x > 0 then return 1 end return 0 end
local function swap(x, y) return y, x end
local function add(x, y) return x + y end
local function nothing_or(x) if x > 2 then return x * 100 end end
local M = {}
function M.mul(x, y) return x * y end
"#;
    let cases: &[(&str, &str)] = &[
        ("divmod", "local q, r = divmod(a, b)\n  p:setint64(30, q)\n  p:setint64(38, r)"),
        ("three into two", "local x, y = three(a)\n  p:setint64(30, x)\n  p:setint64(38, y)"),
        ("parenthesised call keeps one", "local x = (three(a))\n  p:setint64(30, x)"),
        ("results as arguments", "p:setint64(30, add(swap(a, b)))\n  p:setint64(38, add(divmod(a, 3)))"),
        ("missing second result is nil", "local x, y = maybe_two(a)\n  p:setint64(30, x)\n  p:setint64(38, y or -5)\n  if y == nil then p:setint64(46, 1) end"),
        ("nil result", "local v = nothing_or(a)\n  if v then p:setint64(30, v) else p:setint64(30, -1) end\n  p:setint64(38, nothing_or(b) or 7)"),
        ("call in expressions", "p:setint64(30, sign(a) * 10 + sign(b))\n  p:setint64(38, M.mul(a, b) + M.mul(sign(a), 2))"),
        ("swap assignment", "local x, y = a, b\n  x, y = y, x\n  p:setint64(30, x)\n  p:setint64(38, y)"),
        ("multiple assignment evaluates first", "local x, y = a, b\n  x, y = x + y, x - y\n  p:setint64(30, x)\n  p:setint64(38, y)"),
        ("extra locals are nil", "local x, y, z = 1, a\n  if z == nil then p:setint64(30, y) end"),
    ];
    for (label, body) in cases {
        let src = format!(
            "{helpers}{}",
            program(&format!(
                "  local a = p:getint64(14)\n  local b = p:getint64(22)\n  {body}"
            ))
        );
        differential(&mut t, label, &src, &packets, &describe_ab);
    }
    t.finish("functions_and_multiple_returns");
}

// ---------------------------------------------------------------------------------------
// Nil: map lookups, narrowing

#[test]
fn nil_narrowing() {
    if !kernel("nil_narrowing") {
        return;
    }
    let mut t = Tally::default();
    let mut packets = small_operand_packets(-3..=4);
    for &a in EDGES {
        packets.push(operands_packet(a, a, 4));
    }
    let tables = r#"
local T = { [1] = 10, [-1] = 20, [0x7fffffffffffffff] = 30, [3] = 0, [-0x7fffffffffffffff - 1] = -40 }
local F = { [2] = true, [4] = false }
local PORTS = { 80, 443, -1, 7 }
local map = require "bpf.map"
local m = map.hash("m", { key = "i8", value = "i8", entries = 64 })
"#;
    let cases: &[(&str, &str)] = &[
        ("if v then", "local v = T[a]\n  if v then p:setint64(30, v + 1) else p:setint64(30, -1) end"),
        ("v or 0", "p:setint64(30, (T[a] or 0) + (T[b] or 100))"),
        ("v ~= nil", "local v = T[a]\n  if v ~= nil then p:setint64(30, v * 2) end"),
        ("v == nil early return", "local v = T[b]\n  if v == nil then return 3 end\n  p:setint64(30, v - a)"),
        ("not v early return", "local v = T[a]\n  if not v then return 1 end\n  p:setint64(30, v)"),
        ("v and v + 1 or 0", "local v = T[a]\n  p:setint64(30, v and v + 1 or 0)"),
        ("boolean table values, truth only", "local f = F[a]\n  if f then p:setint64(30, 1) elseif not f then p:setint64(30, 2) end\n  p:setint64(38, (F[b] and 5) or 6)"),
        ("boolean table values", "local f = F[a]\n  if f then p:setint64(30, 1) elseif f == false then p:setint64(30, 2) else p:setint64(30, 3) end"),
        ("nil compared", "local v, w = T[a], T[b]\n  p:setint64(30, (v == w) and 1 or 0)\n  p:setint64(38, (v ~= nil and w == nil) and 1 or 0)"),
        ("static table compared in a loop (design example)", "local hit = 0\n  for i = 1, #PORTS do\n    if PORTS[i] == a then hit = i end\n  end\n  p:setint64(30, hit)"),
        ("local assigned on some paths", "local x\n  if a > 0 then x = a * 3 end\n  if b > 2 then x = b end\n  p:setint64(30, x or -9)"),
        ("map read-modify-write", "m[a] = (m[a] or 0) + b\n  local v = m[a]\n  if v then p:setint64(30, v) end\n  if b == 0 then m[a] = nil end\n  p:setint64(38, m[a] or -1)"),
        ("map narrowing in a loop", "local s = 0\n  for i = -2, 2 do\n    local v = m[i]\n    if v then s = s + v end\n  end\n  p:setint64(30, s)"),
    ];
    for (label, body) in cases {
        let src = format!(
            "{tables}{}",
            program(&format!(
                "  local a = p:getint64(14)\n  local b = p:getint64(22)\n  {body}"
            ))
        );
        differential(&mut t, label, &src, &packets, &describe_ab);
    }
    t.finish("nil_narrowing");
}

// ---------------------------------------------------------------------------------------
// Strings

#[test]
fn strings() {
    if !kernel("strings") {
        return;
    }
    let mut t = Tally::default();
    // Layout: a at 14 (the length), b at 22 (an index), text from 40 on, results at 30.
    let texts: &[&[u8]] = &[
        b"",
        b"a",
        b"ab",
        b"abc",
        b"hello",
        b"ab\0",
        b"\0ab",
        b"evil.example",
        b"HELLO",
        b"\xff\xfe\x80",
    ];
    let mut packets = Vec::new();
    for text in texts {
        for n in [-1i64, 0, 1, 2, 3, 5, 12, 256] {
            for i in [-20i64, -4, -3, -1, 0, 1, 2, 3, 4, 13] {
                let mut p = operands_packet(n, i, 1);
                p.resize(40, 0);
                p.extend_from_slice(text);
                p.resize(40 + 16, b'z');
                packets.push(p);
            }
        }
    }
    // Include a packet too short for a long getstring.
    let mut short = operands_packet(12, 1, 1);
    short.resize(45, b'q');
    packets.push(short);
    let describe = |p: &[u8]| {
        format!(
            "n = {}, i = {}, text = {:?}",
            word(p, 14).unwrap(),
            word(p, 22).unwrap(),
            String::from_utf8_lossy(&p[40..])
        )
    };
    let tables = "local names = { [\"hello\"] = 1, [\"evil.example\"] = 2, [\"ab\"] = 3 }\n";
    let cases: &[(&str, &str)] = &[
        ("== literal", "local s = p:getstring(40, n)\n  local r = 0\n  if s == \"hello\" then r = 1 elseif s == \"ab\" then r = 2 elseif s == \"\" then r = 3 elseif s ~= \"abc\" then r = 4 end\n  p:setint64(30, r)"),
        ("#s", "local s = p:getstring(40, n)\n  p:setint64(30, #s * 1000 + s:len())"),
        ("s:byte(i)", "local s = p:getstring(40, n)\n  p:setint64(30, s:byte(i) or -1)"),
        ("s:byte constant indices", "local s = p:getstring(40, n)\n  p:setint64(30, (s:byte(1) or 999) * 1000 + (s:byte(-1) or 998))\n  p:setint64(38, s:byte(-2) or s:byte(0) or 7)"),
        ("s:byte(i) narrowed", "local s = p:getstring(40, n)\n  local c = s:byte(i)\n  if c then p:setint64(30, c + 1000) else return 3 end"),
        ("two runtime strings", "local s = p:getstring(40, n)\n  local u = p:getstring(40 + i, 3)\n  p:setint64(30, ((s == u) and 1 or 0) + ((s ~= u) and 4 or 0))"),
        ("constant string table", "local s = p:getstring(40, n)\n  p:setint64(30, names[s] or -1)"),
        ("setstring", "local s = p:getstring(40, n)\n  p:setstring(30, s)\n  p:setstring(46, \"xy\")"),
        ("string from a helper", "local s = p:getstring(40, n)\n  local function first(x) if #x > 0 then return x:byte(1) end return nil end\n  p:setint64(30, first(s) or 77)"),
    ];
    // A `cN` key drops trailing zero bytes (documented): "ab\0" finds "ab", unlike in Lua. Those
    // packets are left out of the table case and checked by hand below.
    let ends_in_zero = |p: &[u8]| {
        let n = word(p, 14).unwrap();
        (1..=255).contains(&n) && p.get(40 + n as usize - 1) == Some(&0)
    };
    let no_trailing_zero: Vec<Vec<u8>> = packets.iter().filter(|p| !ends_in_zero(p)).cloned().collect();
    for (label, body) in cases {
        let src = format!(
            "{tables}{}",
            program(&format!(
                "  local n = p:getint64(14)\n  local i = p:getint64(22)\n  {body}"
            ))
        );
        let set = if label.contains("table") {
            &no_trailing_zero
        } else {
            &packets
        };
        differential(&mut t, label, &src, set, &describe);
    }
    // The documented difference: "ab\0" is the key "ab".
    let src = format!(
        "{tables}{}",
        program("  p:setint64(30, names[p:getstring(40, 3)] or -1)")
    );
    if let Some(loaded) = build(&mut t, "cN trailing zeros", &src) {
        let mut p = operands_packet(0, 0, 1);
        p.resize(40, 0);
        p.extend_from_slice(b"ab\0");
        let got = test_run(loaded.program_fd("t").unwrap(), &p, 1).unwrap();
        t.runs += 1;
        if got.retval != 2 || word(&got.data_out, 30) != Some(3) {
            t.fail(format!(
                "[cN trailing zeros] names[\"ab\\0\"]: verdict {} value {:?}, expected 2 and 3",
                got.retval,
                word(&got.data_out, 30)
            ));
        }
    }
    t.finish("strings");
}

/// A map's `cN` string has no trailing zeros (they are padding), so a packet string equals it
/// only if it has the same bytes *and* does not end in a zero byte: "ab\0" is not "ab", as in
/// Lua. (A `cN` map *key* is the other way round, see `strings`.) Every length around the
/// word boundaries, against map strings of 0, 2, 7, 8, 9 and 16 bytes.
#[test]
fn strings_against_map_strings() {
    if !kernel("strings_against_map_strings") {
        return;
    }
    let mut t = Tally::default();
    let src = "local map = require \"bpf.map\"\n\
               local vals = map.array(\"vals\", { key = \"I4\", value = \"c16\", entries = 1 })\n"
        .to_string()
        + &program(
            "  local n = p:getint64(14)\n  local s = p:getstring(40, n)\n  local v = vals[0]\n  \
             local r = 0\n  if v and s == v then r = 1 end\n  if v and v ~= s then r = r + 2 end\n  \
             if v and p:getstring(40, 9) == v then r = r + 4 end\n  p:setint64(30, r)",
        );
    let Some(loaded) = build(&mut t, "map string", &src) else {
        t.finish("strings against map strings");
        return;
    };
    let vals = loaded.map("vals").expect("vals");
    let stored: &[&[u8]] = &[b"", b"ab", b"abcdefg", b"abcdefgh", b"abcdefghi", b"abcdefghijklmnop"];
    for value in stored {
        let mut padded = value.to_vec();
        padded.resize(16, 0);
        vals.update(&0u32.to_le_bytes(), &padded, luabpf_loader::UpdateMode::Any)
            .expect("set vals[0]");
        for text in [
            *value,
            b"ab\0",
            b"abcdefg\0",
            b"abcdefgh\0",
            b"abcdefghi\0\0",
            b"ab\0c",
            b"abcdefghijklmnop",
        ] {
            for extra in [0usize, 1, 2] {
                let mut p = operands_packet((text.len() + extra) as i64, 0, 1);
                p.resize(40, 0);
                p.extend_from_slice(text);
                p.resize(40 + 24, 0);
                let s = &p[40..40 + text.len() + extra];
                let nine = &p[40..49];
                let equal = |x: &[u8]| x == *value;
                let want = i64::from(equal(s)) + 2 * i64::from(!equal(s)) + 4 * i64::from(equal(nine));
                let got = test_run(loaded.program_fd("t").unwrap(), &p, 1).unwrap();
                t.runs += 1;
                if got.retval != 2 || word(&got.data_out, 30) != Some(want) {
                    t.fail(format!(
                        "vals[0] = {:?}, s = {:?}: verdict {} value {:?}, expected 2 and {want}",
                        String::from_utf8_lossy(value),
                        String::from_utf8_lossy(s),
                        got.retval,
                        word(&got.data_out, 30)
                    ));
                }
            }
        }
    }
    t.finish("strings against map strings");
}

/// `getstring` with a run-time length copies 8 bytes a step and clears the last step's bytes
/// past the string; where a step would run past the packet's end, the kernel's helper copies
/// it (`Lowerer::packet_string`). Inside a long loop it is the helper alone. At XDP and tc,
/// every length from 0 to 72, at three alignments, with the string ending 0 to 9 bytes before
/// the packet's end (and 1 or 3 bytes past it: a runtime error): the string must be exactly
/// the bytes, zero-padded, so a map key finds it.
/// A string local that held a 12-byte packet string and is assigned a shorter one (a
/// constant, a 4-byte map string) keeps none of the old bytes: as a 16-byte map key it is
/// the new string padded with zeros, the key a user writes with `luabpf map set`. (The
/// compiler once overwrote only the first word, leaving packet bytes 8-11 in the key.)
#[test]
fn a_string_local_assigned_a_shorter_string_loses_its_old_tail() {
    if !kernel("a_string_local_assigned_a_shorter_string_loses_its_old_tail") {
        return;
    }
    let mut t = Tally::default();
    let src = "local map = require \"bpf.map\"\n\
               local keys = map.hash(\"keys\", { key = \"c16\", value = \"I8\", entries = 8 })\n\
               local names = map.array(\"names\", { key = \"I4\", value = \"c4\", entries = 1 })\n"
        .to_string()
        + &program(
            "  local s = p:getstring(40, 12)\n  local which = p:getbyte(14)\n  \
             if which == 1 then s = \"ab\" end\n  \
             if which == 2 then local v = names[0]; if v then s = v end end\n  \
             keys[s] = which",
        );
    let Some(loaded) = build(&mut t, "shorter string", &src) else {
        t.finish("a string local assigned a shorter string");
        return;
    };
    let names = loaded.map("names").expect("names");
    names
        .update(&0u32.to_le_bytes(), b"wxyz", luabpf_loader::UpdateMode::Any)
        .expect("set names[0]");
    let text = b"ABCDEFGHIJKL";
    for which in [0u8, 1, 2] {
        let mut p = operands_packet(i64::from(which), 0, 1);
        p.resize(40, 0);
        p.extend_from_slice(text);
        p.resize(64, 0);
        let got = test_run(loaded.program_fd("t").unwrap(), &p, 1).unwrap();
        t.runs += 1;
        if got.retval != 2 {
            t.fail(format!("which = {which}: verdict {}", got.retval));
        }
    }
    let keys = loaded.map("keys").expect("keys");
    for (string, which) in [(&text[..], 0u64), (b"ab", 1), (b"wxyz", 2)] {
        let mut key = string.to_vec();
        key.resize(16, 0);
        let found = keys.lookup(&key).expect("look up keys");
        if found.as_deref() != Some(&which.to_le_bytes()[..]) {
            let all: Vec<String> = keys.keys().map(|k| format!("{:02x?}", k.expect("a key"))).collect();
            t.fail(format!(
                "keys[{:?}] is {found:?}, expected {which}; the map holds {all:?}",
                String::from_utf8_lossy(string)
            ));
        }
    }
    t.finish("a string local assigned a shorter string");
}

#[test]
fn packet_strings_at_every_length_and_distance_from_the_end() {
    if !kernel("packet_strings_at_every_length_and_distance_from_the_end") {
        return;
    }
    let mut t = Tally::default();
    let text: Vec<u8> = (0..72u8).map(|i| b'A' + i % 58).collect();
    let decl = "local map = require \"bpf.map\"\n\
                local keys = map.hash(\"keys\", { key = \"c72\", value = \"I8\", entries = 128 })\n";
    let read = "  local n = p:getint64(14)\n  local o = p:getint64(22)\n";
    let report = "p:setint64(30, (keys[s] or -1) * 1000 + #s)";
    let straight = format!("{read}  local s = p:getstring(o, n)\n  {report}");
    // tc reads the packet through `__sk_buff`'s data and data_end, and its helper is
    // `skb_load_bytes`.
    let tc = program(&straight)
        .replace("local xdp = require \"bpf.xdp\"", "local tc = require \"bpf.tc\"")
        .replace("xdp.program", "tc.program");
    assert!(tc.contains("tc.program") && !tc.contains("xdp"), "{tc}");
    let cases = [
        ("straight", program(&straight)),
        (
            "in a long loop",
            program(&format!(
                "{read}  for k = 1, 40 do\n    if k == 40 then\n      local s = p:getstring(o, n)\n      {report}\n    end\n  end"
            )),
        ),
        ("tc", tc),
    ];
    for (label, prog) in cases {
        let src = format!("{decl}{prog}");
        let Some(loaded) = build(&mut t, label, &src) else {
            continue;
        };
        t.programs += 1;
        let keys = loaded.map("keys").expect("keys");
        for n in 1..=72usize {
            let mut key = text[..n].to_vec();
            key.resize(72, 0);
            keys.update(&key, &(n as u64).to_le_bytes(), luabpf_loader::UpdateMode::Any)
                .expect("set keys");
        }
        let fd = loaded.program_fd("t").expect("program t");
        for n in 0..=72usize {
            for o in [40usize, 41, 45] {
                for past_end in [-9i64, -8, -7, -5, -1, 0, 1, 3] {
                    let mut p = operands_packet(n as i64, o as i64, 1);
                    p.resize(o, b'#');
                    p.extend_from_slice(&text[..n]);
                    let len = (o + n) as i64 - past_end;
                    p.resize(len.max(38) as usize, b'#');
                    let fits = past_end <= 0 || n == 0;
                    let want = if n == 0 { -1000 } else { n as i64 * 1001 };
                    let got = test_run(fd, &p, 1).unwrap_or_else(|e| panic!("[{label}] test run: {e}"));
                    t.runs += 1;
                    let ok = if fits {
                        got.retval == 2 && word(&got.data_out, 30) == Some(want)
                    } else {
                        got.retval == 1
                    };
                    if !ok {
                        t.fail(format!(
                            "[{label}] n = {n}, at {o}, packet of {} bytes: verdict {} value {:?}, expected {}",
                            p.len(),
                            got.retval,
                            word(&got.data_out, 30),
                            if fits {
                                format!("2 and {want}")
                            } else {
                                "1 (an error)".into()
                            }
                        ));
                    }
                }
            }
        }
    }
    t.finish("packet strings");
}

// ---------------------------------------------------------------------------------------
// The packet: bounds, run-time offsets, errors

#[test]
fn packet_access() {
    if !kernel("packet_access") {
        return;
    }
    let mut t = Tally::default();
    let mut packets = Vec::new();
    for len in [38usize, 46, 60] {
        for a in [
            -1i64,
            0,
            1,
            13,
            30,
            31,
            37,
            38,
            39,
            45,
            46,
            52,
            53,
            59,
            60,
            61,
            255,
            65535,
            i64::MAX,
            MININT,
            -0x1_0000_0000,
        ] {
            let mut p = operands_packet(a, a ^ 0x5a5a, 1);
            p.resize(len, 0x11);
            packets.push(p);
        }
    }
    let rd = "  local a = p:getint64(14)\n  local b = p:getint64(22)\n";
    let cases: &[(&str, &str)] = &[
        ("#p", "p:setint64(30, #p * 3 + a % 7)"),
        ("getbyte at a run-time offset", "p:setint64(30, p:getbyte(a))"),
        ("getint64 at a run-time offset", "p:setint64(30, p:getint64(a))"),
        ("getuint16 at a run-time offset", "p:setint64(30, p:getuint16(a) + p:getint32(a))"),
        ("last byte", "p:setint64(30, p:getbyte(#p - 1))\n  p:setbyte(#p - 1, 0x99)"),
        ("set at a run-time offset", "p:setint64(30, 5)\n  p:setint64(a, b)"),
        ("setbyte at a run-time offset", "p:setbyte(a, b)\n  p:setint16(a - 1, b)"),
        ("getstring at a run-time offset", "local s = p:getstring(a, 4)\n  p:setint64(30, s:byte(4) or -1)"),
        ("getstring to the end", "local s = p:getstring(30, #p - 30)\n  p:setint64(30, #s)"),
        ("offset from arithmetic", "local o = (a & 0xff) + 14\n  if o + 8 <= #p then p:setint64(30, p:getint64(o)) else p:setint64(30, -1) end"),
        ("error() takes the default verdict", "p:setint64(30, 1)\n  if a > 30 then error(\"too big\") end\n  p:setint64(30, 2)"),
        ("writes before a failed access stay", "p:setint64(30, 42)\n  p:setint64(a, 0)\n  do return 3 end"),
        ("division by a run-time zero in a helper", "local function d(x, y) return x // y end\n  p:setint64(30, 1)\n  p:setint64(30, d(b, a & 3))"),
        ("return nothing", "if a > 40 then return end\n  p:setint64(30, 9)"),
        // The length test becomes the packet check of the reads after it (packet_compares).
        ("a minimum length covers the reads after it", "if #p < 46 then return 3 end\n  p:setint64(30, p:getint64(38))"),
        ("a minimum length, at most", "if #p <= 45 then return 3 end\n  p:setint64(30, p:getuint32(42) + p:getbyte(45))"),
        ("a minimum length, reversed", "if 46 > #p then return 3 end\n  p:setint64(30, p:getint64(38))"),
        ("a minimum length too short for a read", "if #p < 40 then return 3 end\n  p:setint64(30, p:getint64(38))"),
        // A read's check moved into an earlier one (packet_access): only where the verdict
        // of a too-short packet cannot change, and no write can be lost.
        ("a later read checked by an earlier one", "if p:getbyte(40) ~= 0x11 then return 1 end\n  p:setint64(30, p:getint64(50))"),
        ("a way out with another verdict between two reads", "if p:getbyte(40) == 0x11 then return 3 end\n  p:setint64(30, p:getint64(50))"),
        ("a write between two reads", "local x = p:getbyte(36)\n  p:setbyte(37, 7)\n  p:setint64(30, x + p:getint64(50))"),
        ("a short guard with the default verdict", "if #p < 40 then return 1 end\n  p:setint64(30, p:getint64(50))"),
        ("a packet compare with two ways on", "local x = p:getbyte(40) & 3\n  if x + 44 > #p then return p:getuint32(44) end\n  p:setint64(30, 5)"),
        ("a short guard with another verdict", "if #p < 40 then return 3 end\n  p:setint64(30, p:getint64(50))"),
        ("return from a nested block", "for i = 1, 3 do\n    if i == a then return 3 end\n    while true do\n      if a < 0 then return 0 end\n      break\n    end\n  end"),
    ];
    for (label, body) in cases {
        differential(&mut t, label, &program(&format!("{rd}  {body}")), &packets, &|p| {
            format!("{} (packet {} bytes)", describe_ab(p), p.len())
        });
    }
    t.finish("packet_access");
}

// ---------------------------------------------------------------------------------------
// Random programs, differentially

/// Random well-typed programs (constant loop bounds, or run-time bounds below 8) run in the
/// kernel and in Lua on random packets. `LUABPF_RANDOM_PROGRAMS=n` runs n (default 150).
#[test]
fn random_programs_differential() {
    if !kernel("random_programs_differential") {
        return;
    }
    let n: u64 = std::env::var("LUABPF_RANDOM_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    // `LUABPF_RANDOM_FIRST=k` starts at program k (to rerun one).
    let first: u64 = std::env::var("LUABPF_RANDOM_FIRST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut t = Tally::default();
    for seed in first..first + n {
        let mut rng = Rng::new(0xd1ff_5eed ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let src = random_program(seed, false);
        if compile_source(&src, "prog.lua", &Options::default()).is_err() {
            continue; // refusals are tests/robustness.rs's business
        }
        let packets: Vec<Vec<u8>> = (0..10)
            .map(|k| {
                let len = 64 + rng.below(40) as usize;
                let mut p = rng.bytes(len);
                if k % 2 == 0 {
                    let a = EDGES[rng.below(EDGES.len())];
                    let b = EDGES[rng.below(EDGES.len())];
                    p[14..22].copy_from_slice(&a.to_le_bytes());
                    p[22..30].copy_from_slice(&b.to_le_bytes());
                }
                p
            })
            .collect();
        differential(&mut t, &format!("random program #{seed}"), &src, &packets, &|p| {
            format!("{} (packet {} bytes: {})", describe_ab(p), p.len(), hex(p))
        });
    }
    t.finish("random_programs_differential");
}
