//! A seeded generator of random program files: mostly well-formed and well-typed, so that
//! they reach every stage of the compiler. Shared by the robustness tests (everything that
//! compiles must verify) and the differential semantics tests (kernel and Lua must agree).

use crate::harness::Rng;
use luabpf_loader::netfilter::Family;

struct Gen {
    rng: Rng,
    ints: Vec<String>,
    depth: usize,
    loops: usize,
    /// Whether to generate loops with run-time bounds (`for` to a run-time value, `while`,
    /// `repeat`); without, every loop has constant bounds.
    runtime_loops: bool,
    /// How many loops a program may have (nested or not).
    max_loops: usize,
    /// Whether to use the maps with narrow formats (`small`: i2 keys, I1 values, 8 entries;
    /// `names`: c4 keys; `recs`: an array of records) and string writes.
    formats: bool,
}

impl Gen {
    fn int_expr(&mut self) -> String {
        self.depth += 1;
        let leaf = self.depth > 4 || self.rng.chance(35);
        let e = if leaf {
            match self.rng.below(9) {
                0..=3 => self.rng.pick(&self.ints).clone(),
                4 => self
                    .rng
                    .pick(&[
                        "0",
                        "1",
                        "-1",
                        "7",
                        "64",
                        "-64",
                        "255",
                        "0x7fffffffffffffff",
                        "(-0x7fffffffffffffff - 1)",
                        "0x100000000",
                        "200",
                    ])
                    .to_string(),
                5 => format!(
                    "p:get{}({})",
                    self.rng
                        .pick(&["byte", "int8", "uint16", "int16", "uint32", "int32", "int64"]),
                    self.offset()
                ),
                6 => "#p".to_string(),
                7 => format!("(T[{}] or {})", self.rng.pick(&self.ints).clone(), self.rng.below(5)),
                8 if self.formats && self.rng.chance(50) => match self.rng.below(3) {
                    0 => format!("(small[{}] or 0)", self.rng.pick(&self.ints).clone()),
                    1 => format!("(names[{}] or 3)", self.string_expr()),
                    _ => format!("recs_hits({})", self.rng.pick(&self.ints).clone()),
                },
                _ => format!("(m[{}] or 0)", self.rng.pick(&self.ints).clone()),
            }
        } else {
            match self.rng.below(10) {
                0..=4 => {
                    let op = *self.rng.pick(&["+", "-", "*", "//", "%", "&", "|", "~", "<<", ">>"]);
                    format!("({} {op} {})", self.int_expr(), self.int_expr())
                }
                5 => format!("{}({})", self.rng.pick(&["-", "~"]), self.int_expr()),
                6 => format!("(({}) and {} or {})", self.cond(), self.int_expr(), self.int_expr()),
                7 => format!(
                    "bo.{}({})",
                    self.rng.pick(&["ntoh16", "ntoh32", "ntoh64", "hton16"]),
                    self.int_expr()
                ),
                8 => format!("helper({}, {})", self.int_expr(), self.int_expr()),
                _ => format!("(s:byte({}) or 0)", self.int_expr()),
            }
        };
        self.depth -= 1;
        e
    }

    /// A string of 0 to 6 bytes: some with zero bytes, some (read from the packet) too long for
    /// `c4`. Constants longer than a key are refused at compile time, so none is generated.
    fn string_expr(&mut self) -> String {
        match self.rng.below(3) {
            0 => format!("p:getstring({}, {})", self.offset(), self.rng.below(7)),
            1 => "s".to_string(),
            _ => format!("\"{}\"", self.rng.pick(&["ab", "", "abcd", "a\\0", "ab\\0\\0"])),
        }
    }

    fn offset(&mut self) -> String {
        if self.rng.chance(60) {
            format!("{}", 14 + self.rng.below(40))
        } else {
            format!("({} & 31) + 14", self.int_expr())
        }
    }

    fn cond(&mut self) -> String {
        self.depth += 1;
        let c = match self.rng.below(6) {
            0..=2 => format!(
                "{} {} {}",
                self.int_expr(),
                self.rng.pick(&["<", "<=", ">", ">=", "==", "~="]),
                self.int_expr()
            ),
            3 => format!("not ({})", self.cond()),
            4 => format!("({}) {} ({})", self.cond(), self.rng.pick(&["and", "or"]), self.cond()),
            _ => format!("s == \"{}\"", self.rng.pick(&["abc", "", "hello", "\\0"])),
        };
        self.depth -= 1;
        c
    }

    fn block(&mut self, n: usize, indent: usize) -> String {
        (0..n).map(|_| self.stmt(indent)).collect()
    }

    fn stmt(&mut self, indent: usize) -> String {
        let pad = "  ".repeat(indent);
        let nested = indent < 4;
        let kinds = if self.formats { 18 } else { 14 };
        // One draw in `kinds + 1` is a length guard: its `then` is a fork the packet passes
        // either way, where reads and returns inside must keep their own checks.
        let kind = self.rng.below(kinds + 1);
        if kind == kinds && nested {
            let saved = self.ints.len();
            let (off, k) = (self.offset(), 1 + self.rng.below(8));
            let t = self.block(2, indent + 1);
            self.ints.truncate(saved);
            return format!("{pad}if {off} + {k} > #p then\n{t}{pad}end\n");
        }
        let s = match kind {
            0 | 1 => {
                let name = format!("v{}", self.ints.len());
                let e = self.int_expr();
                self.ints.push(name.clone());
                format!("local {name} = {e}\n")
            }
            2 | 3 => {
                let target = self.rng.pick(&self.ints[1..]).clone();
                format!("{target} = {}\n", self.int_expr())
            }
            4 => format!(
                "p:set{}({}, {})\n",
                self.rng.pick(&["byte", "int16", "uint32", "int64"]),
                self.offset(),
                self.int_expr()
            ),
            5 if nested => {
                let saved = self.ints.len();
                let (c, t) = (self.cond(), self.block(2, indent + 1));
                self.ints.truncate(saved);
                let e = self.block(1, indent + 1);
                self.ints.truncate(saved);
                format!("if {c} then\n{t}{pad}else\n{e}{pad}end\n")
            }
            6 if nested && self.loops < self.max_loops => {
                self.loops += 1;
                let saved = self.ints.len();
                let var = format!("i{}", saved);
                let (lo, hi) = if !self.runtime_loops || self.rng.chance(50) {
                    (format!("{}", self.rng.below(3)), format!("{}", self.rng.below(6)))
                } else {
                    ("0".to_string(), format!("({} & 7)", self.int_expr()))
                };
                let step = *self.rng.pick(&["", ", 1", ", 2", ", -1"]);
                self.ints.push(var.clone());
                let b = self.block(2, indent + 1);
                self.ints.truncate(saved);
                format!("for {var} = {lo}, {hi}{step} do\n{b}{pad}end\n")
            }
            7 if nested && self.loops < self.max_loops && self.runtime_loops => {
                self.loops += 1;
                let saved = self.ints.len();
                let c = self.cond();
                let b = self.block(2, indent + 1);
                self.ints.truncate(saved);
                format!("local w{saved} = 0\n{pad}while {c} do\n{pad}  w{saved} = w{saved} + 1\n{pad}  if w{saved} > 5 then break end\n{b}{pad}end\n")
            }
            8 => format!("m[{}] = {}\n", self.int_expr(), self.int_expr()),
            9 => {
                let k = self.int_expr();
                format!(
                    "do\n{pad}  local mv = m[{k}]\n{pad}  if mv then m[{k}] = mv + 1 else m[{k}] = nil end\n{pad}end\n"
                )
            }
            10 if self.rng.chance(30) => format!("if {} then return {} end\n", self.cond(), self.rng.below(5)),
            11 => format!("counts[0] = (counts[0] or 0) + {}\n", self.int_expr()),
            12 if nested && self.runtime_loops => {
                let saved = self.ints.len();
                let b = self.block(2, indent + 1);
                self.ints.truncate(saved);
                format!("repeat\n{b}{pad}until {}\n", self.cond())
            }
            14 => format!("small[{}] = {}\n", self.int_expr(), self.int_expr()),
            15 => {
                let k = self.string_expr();
                if self.rng.chance(30) {
                    format!("names[{k}] = nil\n")
                } else {
                    format!("names[{k}] = {}\n", self.int_expr())
                }
            }
            16 => {
                let k = self.int_expr();
                if self.rng.chance(40) {
                    format!("recs[{k}] = {{ hits = {} }}\n", self.int_expr())
                } else {
                    let (h, l) = (self.int_expr(), self.int_expr());
                    format!(
                        "do\n{pad}  local r = recs[{k} & 7]\n{pad}  if r then r.hits = r.hits + {h}; r.last = {l} end\n{pad}end\n"
                    )
                }
            }
            17 => format!("p:setstring({}, {})\n", self.offset(), self.string_expr()),
            _ => format!("p:setint64(30, {})\n", self.int_expr()),
        };
        format!("{pad}{s}")
    }
}

pub fn random_program(seed: u64, runtime_loops: bool) -> String {
    generate(seed, runtime_loops, false)
}

/// Like [`random_program`], also with maps of narrow formats (integer keys and values that
/// wrap or do not fit, `cN` keys, records, a map that fills up) and string writes into the
/// packet: what the differential campaign against the reference runs.
pub fn random_program_with_formats(seed: u64, runtime_loops: bool) -> String {
    generate(seed, runtime_loops, true)
}

/// The maps and helpers [`random_program_with_formats`] adds to the file.
const FORMAT_DECLS: &str = "local small = map.hash(\"small\", { key = \"i2\", value = \"I1\", entries = 8 })
local names = map.hash(\"names\", { key = \"c4\", value = \"i4\", entries = 16 })
local recs = map.array(\"recs\", { value = { hits = \"I8\", last = \"i2\" }, entries = 4 })
local function recs_hits(k)
  local r = recs[k]
  if r then return r.hits + r.last end
  return -5
end
";

fn generate(seed: u64, runtime_loops: bool, formats: bool) -> String {
    let mut g = Gen {
        rng: Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        ints: vec!["a".into(), "b".into()],
        depth: 0,
        loops: 0,
        runtime_loops,
        // Fewer loops with the formats: every loop multiplies the verifier's work, and the
        // campaign must load a thousand programs in a couple of minutes.
        max_loops: if formats { 2 } else { 3 },
        formats,
    };
    let n = 2 + g.rng.below(8);
    let body = g.block(n, 1);
    let decls = if formats { FORMAT_DECLS } else { "" };
    format!(
        "local xdp = require \"bpf.xdp\"\nlocal map = require \"bpf.map\"\nlocal bo = require \"linux.byteorder\"\nlocal m = map.hash(\"m\", {{ key = \"i8\", value = \"i8\", entries = 64 }})\nlocal counts = map.percpu_array(\"counts\", {{ key = \"I4\", value = \"I8\", entries = 4 }})\nlocal T = {{ [1] = 10, [2] = 20, [7] = -7 }}\n{decls}local function helper(x, y)\n  if x > y then return x - y end\n  return y // 3\nend\nlocal function filter(ctx)\n  local p = ctx:packet()\n  local a = p:getint64(14)\n  local b = p:getint64(22)\n  local s = p:getstring(40, 3)\n{body}  return 2\nend\nreturn xdp.program(filter, {{ name = \"t\", default = 1 }})\n"
    )
}

/// Every getter at XDP (`probe_xdp`, the packet from offset 14) and at netfilter (`probe_nf`,
/// from 0), with run-time offsets and lengths and reads out of range on purpose: each result
/// goes to the array `out` (0: `#packet` less the base, 1..13: the reads), and the program
/// drops the packet when it got to the end without a runtime error.
pub const NETFILTER_PROBE: &str = r#"
local xdp = require "bpf.xdp"
local netfilter = require "bpf.netfilter"
local map = require "bpf.map"
local xa = require "linux.xdp"
local na = require "linux.netfilter"

local out = map.array("out", { key = "I4", value = "i8", entries = 16 })

-- Reads the packet from `base` on; true if it got to the end without a runtime error.
local function probe(p, base)
  out[0] = #p - base
  out[1] = p:getbyte(base)
  out[2] = p:getint8(base + 1) + p:getuint8(base + 1) * 1000
  out[3] = p:getuint16(base + 2)
  out[4] = p:getint16(base + 4)
  out[5] = p:getuint32(base + 6)
  out[6] = p:getint32(base + 10)
  out[7] = p:getint64(base + 14)
  out[8] = p:getnumber(base + 6)
  -- A run-time offset and length.
  local k = p:getbyte(base) & 0x1f
  out[9] = p:getuint16(base + k)
  local s = p:getstring(base + 2, p:getbyte(base + 1) & 0x0f)
  out[10] = #s
  out[11] = (s:byte(1) or -1) * 256 + (s:byte(-1) or -1)
  -- Out of range on purpose when the first byte is 0xee: before the packet's start.
  if p:getbyte(base) == 0xee then out[12] = p:getbyte(base + p:getbyte(base + 1) - 300) end
  -- And past its end, far away, when it is 0xef.
  if p:getbyte(base) == 0xef then out[12] = p:getuint32(base + 0xfff0 + p:getbyte(base + 1)) end
  out[13] = p:getuint32(base + #p - base - 4)
  return true
end

return {
  xdp.program(function(ctx) if probe(ctx:packet(), 14) then return xa.DROP end end, { name = "probe_xdp" }),
  netfilter.program(function(ctx) if probe(ctx:packet(), 0) then return na.DROP end end, { name = "probe_nf" }),
}
"#;

/// The `i`th packet for [`NETFILTER_PROBE`]: 24 to 83 random bytes from the IP header on,
/// IPv4 for even `i`, IPv6 for odd; every tenth starts with 0xee (a read before the packet's
/// start), the next with 0xef (a read far past its end).
pub fn probe_packet(rng: &mut Rng, i: usize) -> (Vec<u8>, Family) {
    let len = 24 + rng.below(60);
    let mut ip = rng.bytes(len);
    match i % 10 {
        0 => ip[0] = 0xee,
        1 => ip[0] = 0xef,
        _ => {}
    }
    let family = if i % 2 == 0 { Family::Ipv4 } else { Family::Ipv6 };
    (ip, family)
}

/// A random XDP program of the robustness corpus turned into a netfilter program: each packet
/// write `p:setX(off, v)` becomes `counts[1] = v` (netfilter refuses writes), the rest stays
/// (its `return 2` and other out-of-range verdicts become the default verdict).
pub fn as_netfilter(xdp_program: &str) -> String {
    let mut out = String::new();
    for line in xdp_program.lines() {
        let trimmed = line.trim_start();
        let pad = &line[..line.len() - trimmed.len()];
        let line = match trimmed.strip_prefix("p:set").and_then(|r| r.split_once('(')) {
            Some((_, args)) => {
                // The value: after the first comma outside parentheses, up to the closing one.
                let mut depth = 0;
                let comma = args
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        c == ',' && depth == 0
                    })
                    .map(|(i, _)| i)
                    .expect("two arguments");
                let value = args[comma + 1..].trim().strip_suffix(')').expect("one call per line");
                format!("{pad}counts[1] = {value}")
            }
            None => line
                .replace(
                    "local xdp = require \"bpf.xdp\"",
                    "local netfilter = require \"bpf.netfilter\"",
                )
                .replace("xdp.program(", "netfilter.program("),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// An XDP example with its hook swapped to netfilter (the modules, and ACCEPT for PASS): the
/// same reads, through netfilter's dynptr kfuncs. `None` for examples of other hooks.
pub fn xdp_example_as_netfilter(src: &str) -> Option<String> {
    if !src.contains("require \"bpf.xdp\"") {
        return None;
    }
    Some(
        src.replace("require \"bpf.xdp\"", "require \"bpf.netfilter\"")
            .replace("require \"linux.xdp\"", "require \"linux.netfilter\"")
            .replace("action.PASS", "action.ACCEPT"),
    )
}

/// A program whose paths the verifier cannot merge: fourteen string indexes chosen by
/// `and`/`or` and used at the end, each a constant it must keep exact (the
/// `paths_that_cannot_merge` diagnostics snapshot; tests/tests/verifier_walk.rs).
pub fn exploding_paths() -> String {
    let mut src = String::from("local xdp = require \"bpf.xdp\"\nlocal function filter(ctx)\n  local p = ctx:packet()\n  local s = p:getstring(14, 8)\n");
    for i in 0..14 {
        src.push_str(&format!("  local k{i} = (p:getbyte({}) > 7) and 1 or 2\n", 20 + i));
    }
    src.push_str("  local sum = 0\n");
    for i in 0..14 {
        src.push_str(&format!("  sum = sum + (s:byte(k{i}) or 0)\n"));
    }
    src.push_str("  if sum > 100 then return 1 end\n  return 2\nend\nreturn xdp.program(filter, { name = \"t\" })\n");
    src
}
