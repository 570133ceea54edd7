//! luabpf-build as users meet it: fresh crates outside the workspace, depending on it by path,
//! built by `cargo build`.
//!
//! The crates are written under target/embed-tests/ with the workspace's Cargo.lock (so that
//! `--offline` finds every dependency) and share one target directory there, so the
//! dependencies are compiled once, not once per test. Each crate is its own workspace root.

use std::path::{Path, PathBuf};
use std::process::Command;

use luabpf_tests::harness::{kernel_or_skip, NetNs};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn tests_dir() -> PathBuf {
    workspace().join("target").join("embed-tests")
}

/// A crate with a build script compiling `bpf/filter.lua` and a `main.rs` that includes its
/// skeleton; `files` are (path, text) pairs relative to the crate.
struct TestCrate {
    dir: PathBuf,
}

impl TestCrate {
    fn new(name: &str, files: &[(&str, &str)]) -> TestCrate {
        let dir = tests_dir().join("crates").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let ws = workspace();
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dependencies]\nluabpf-loader = {{ path = {:?} }}\n\n\
             [build-dependencies]\nluabpf-build = {{ path = {:?} }}\n\n\
             # Not a member of the luabpf workspace this directory sits in.\n[workspace]\n",
            ws.join("loader").display().to_string(),
            ws.join("luabpf-build").display().to_string()
        );
        let build_rs = "fn main() {\n    luabpf_build::Builder::new().file(\"bpf/filter.lua\").compile_or_exit();\n}\n";
        let mut all = vec![("Cargo.toml", manifest.as_str()), ("build.rs", build_rs)];
        all.extend_from_slice(files);
        for (path, text) in all {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        std::fs::copy(ws.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        TestCrate { dir }
    }

    /// `cargo build --offline -v`: (success, stderr).
    fn build(&self) -> (bool, String) {
        let out = Command::new(env!("CARGO"))
            .args(["build", "--offline", "-v", "--color", "never"])
            .current_dir(&self.dir)
            .env("CARGO_TARGET_DIR", tests_dir().join("target"))
            .env_remove("RUSTFLAGS")
            .output()
            .expect("cargo runs");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether this build ran the crate's build script (cargo -v prints the command it runs).
fn ran_build_script(stderr: &str, name: &str) -> bool {
    stderr
        .lines()
        .any(|l| l.contains("Running `") && l.contains(&format!("/build/{name}-")) && l.contains("build-script-build"))
}

const FILTER: &str = r#"-- Blocks UDP packets to listed ports; counts per source address (XDP) and sent
-- packets (tc egress).
local xdp    = require "bpf.xdp"
local tc     = require "bpf.tc"
local map    = require "bpf.map"
local action = require "linux.xdp"
local tcact  = require "linux.tc"
local bo     = require "linux.byteorder"
local verdicts = require "lib.verdicts"

local ports   = map.hash("ports", { key = "I2", value = "I8", entries = 64 })
local names   = map.hash("names", { key = "c16", value = "i4", entries = 16 })
local sources = map.lru_hash("sources", { key = "I4", value = { packets = "I8", last_port = "I2", tag = "c5" }, entries = 256 })
local notes   = map.hash("notes", { key = "I4", value = { text = "c40" }, entries = 4 })
local sent    = map.percpu_array("sent", { key = "I4", value = "I8", entries = 1 })
local limits  = { [53] = 512, [443] = 1500 }   -- a static table: filled when loaded

local function filter(ctx)
  local p = ctx:packet()
  if p:getbyte(23) ~= 17 then return action.PASS end
  local src = p:getuint32(26)
  local s = sources[src]
  if s then s.packets = s.packets + 1 else sources[src] = { packets = 1 } end
  if names[p:getstring(42, 8)] or notes[src] then return action.DROP end
  local port = bo.ntoh16(p:getuint16(36))
  if ports[port] or verdicts.always_dropped(port) then return action.DROP end
  if #p > (limits[port] or 9000) then return action.DROP end
  return action.PASS
end

local function count_sent(ctx)
  sent[0] = (sent[0] or 0) + 1
  return tcact.ACT_OK
end

return { xdp.program(filter, { name = "filter" }), tc.program(count_sent, { name = "count_sent", egress = true }) }
"#;

const VERDICTS: &str = r#"-- Required by filter.lua: a change here must rebuild the crate.
local M = {}
function M.always_dropped(port)
  return port == 7 or port == 9
end
return M
"#;

/// Uses the generated accessors, so that `deny(warnings)` sees the generated code in use and
/// unused alike. Given an interface, it attaches there (XDP and tc egress), sends one UDP
/// datagram to 127.0.0.1 and prints the `sources` records (those it wrote and the one the
/// program wrote) and the per-CPU count of sent packets, summed.
const MAIN: &str = r#"#![deny(warnings)]

mod filter {
    include!(concat!(env!("OUT_DIR"), "/filter.rs"));
}

use luabpf_loader::skeleton::XdpMode;

fn run(interface: &str) -> Result<(), Box<dyn std::error::Error>> {
    let f = filter::Filter::load()?;
    f.ports()?.insert(53, 0)?;
    f.names()?.insert("blocked.example", 1)?;
    f.names()?.insert([0u8; 16], 2)?;
    println!("removed: {}", f.names()?.remove("blocked.example")?);
    println!("removed again: {}", f.names()?.remove("blocked.example")?);
    if let Err(e) = f.names()?.insert("a.name.longer.than.16", 3) {
        println!("refused: {e}");
    }
    println!("limit for 443: {:?}", f.limits()?.get(443)?);
    let sources = f.sources()?;
    let record = filter::SourcesValue { packets: 41, last_port: 53, tag: *b"abcde" };
    sources.insert(7, record)?;
    // `Default` is derived for `SourcesValue`, written out for `NotesValue` ([u8; 40]).
    f.notes()?.insert(8, filter::NotesValue::default())?;
    sources.insert(9, filter::SourcesValue::default())?;
    let _xdp = f.attach_xdp(interface, XdpMode::Skb)?;
    let _tc = f.attach_tc(interface)?;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.send_to(b"hello, world", "127.0.0.1:9")?;
    let mut keys: Vec<u32> = sources.keys().collect::<Result<_, _>>()?;
    keys.sort();
    for key in keys {
        println!("{key:#x}: {:?}", sources.get(key)?.unwrap_or_default());
    }
    let sent = f.sent()?.get_per_cpu(0)?.unwrap_or_default();
    println!("sent: {}", sent.iter().sum::<u64>());
    Ok(())
}

fn main() {
    if let Some(interface) = std::env::args().nth(1) {
        run(&interface).unwrap();
    }
    println!("{} object bytes", filter::Filter::object().len());
}
"#;

/// A fresh crate builds without warnings, does not rerun its build script for nothing, and
/// reruns it when a module its filter requires changes.
#[test]
fn a_fresh_crate_builds_and_rebuilds_when_a_required_module_changes() {
    let krate = TestCrate::new(
        "embed_fresh",
        &[
            ("bpf/filter.lua", FILTER),
            ("bpf/lib/verdicts.lua", VERDICTS),
            ("src/main.rs", MAIN),
        ],
    );
    let (ok, stderr) = krate.build();
    assert!(ok, "the fresh crate does not build:\n{stderr}");
    assert!(ran_build_script(&stderr, "embed_fresh"), "{stderr}");

    let (ok, stderr) = krate.build();
    assert!(ok, "{stderr}");
    assert!(
        !ran_build_script(&stderr, "embed_fresh"),
        "nothing changed, yet the build script ran again:\n{stderr}"
    );

    // Touched: a modification time after the last build script run.
    let module = krate.dir.join("bpf/lib/verdicts.lua");
    let file = std::fs::File::options().append(true).open(&module).unwrap();
    file.set_modified(std::time::SystemTime::now()).unwrap();
    drop(file);
    let (ok, stderr) = krate.build();
    assert!(ok, "{stderr}");
    assert!(
        ran_build_script(&stderr, "embed_fresh"),
        "touching bpf/lib/verdicts.lua did not rerun the build script:\n{stderr}"
    );
    assert!(
        stderr.contains("bpf/lib/verdicts.lua` has changed"),
        "cargo does not name the module as the reason:\n{stderr}"
    );

    // In the kernel: the records read back through the generated struct are the ones written
    // from Rust and the one the program wrote (`{ packets = 1 }`, other fields zero), so the
    // struct has the layout the compiled program uses; the tc program attached at egress
    // counted the one datagram the namespace sent (XDP dropped it at port 9, so no ICMP
    // error followed it).
    if !kernel_or_skip() {
        return;
    }
    let ns = NetNs::new("embedfresh");
    let binary = tests_dir().join("target/debug/embed_fresh");
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg(&binary)
        .arg("lo")
        .output()
        .expect("nsenter runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let from_lo = u32::from_ne_bytes([127, 0, 0, 1]);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("0x")).collect::<Vec<_>>(),
        [
            "0x7: SourcesValue { packets: 41, last_port: 53, tag: [97, 98, 99, 100, 101] }".to_string(),
            "0x9: SourcesValue { packets: 0, last_port: 0, tag: [0, 0, 0, 0, 0] }".to_string(),
            format!("{from_lo:#x}: SourcesValue {{ packets: 1, last_port: 0, tag: [0, 0, 0, 0, 0] }}"),
        ]
    );
    assert!(stdout.contains("\nsent: 1\n"), "{stdout}");
    for want in [
        "limit for 443: Some(1500)\n",
        "removed: true\n",
        "removed again: false\n",
        "refused: map `names`: key: 21 bytes do not fit in `c16` (at most 16 bytes)\n",
    ] {
        assert!(stdout.contains(want), "{stdout}");
    }
}

/// A Lua error fails `cargo build`, and cargo's output shows the file, line, column and message
/// (no panic).
#[test]
fn a_lua_error_fails_the_build_with_its_location() {
    let krate = TestCrate::new(
        "embed_lua_error",
        &[
            (
                "bpf/filter.lua",
                "local xdp = require \"bpf.xdp\"\n\nlocal function f(ctx)\n  return undefined_verdict\nend\n\n\
                 return xdp.program(f, { name = \"bad\" })\n",
            ),
            ("src/main.rs", "fn main() {}\n"),
        ],
    );
    let (ok, stderr) = krate.build();
    assert!(!ok, "a filter with an error built:\n{stderr}");
    for want in [
        "error: unknown global `undefined_verdict`",
        "┌─ bpf/filter.lua:4:10",
        "4 │   return undefined_verdict",
        "luabpf: 1 error in bpf/filter.lua (diagnostics above)",
    ] {
        assert!(stderr.contains(want), "cargo's output lacks `{want}`:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Keys of the wrong width do not compile: the accessors' types come from the declared formats.
#[test]
fn a_key_of_the_wrong_width_does_not_compile() {
    let main = r#"mod filter {
    include!(concat!(env!("OUT_DIR"), "/filter.rs"));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let f = filter::Filter::load()?;
    f.ports()?.insert(53u32, 0)?; // `I2`: u16
    f.names()?.insert([0u8; 8], 1)?; // `c16`: [u8; 16]
    Ok(())
}
"#;
    let krate = TestCrate::new(
        "embed_wrong_width",
        &[
            ("bpf/filter.lua", FILTER),
            ("bpf/lib/verdicts.lua", VERDICTS),
            ("src/main.rs", main),
        ],
    );
    let (ok, stderr) = krate.build();
    assert!(!ok, "keys of the wrong width compiled:\n{stderr}");
    for want in [
        "error[E0277]: `u32` cannot be used where the map holds `u16`",
        "error[E0277]: `[u8; 8]` cannot be used where the map holds `[u8; 16]`",
    ] {
        assert!(stderr.contains(want), "rustc's output lacks `{want}`:\n{stderr}");
    }
}
