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

/// A crate with a build script compiling `bpf/filter.lua` (or other files) and a `main.rs` that
/// includes the skeletons; `files` are (path, text) pairs relative to the crate. It depends on
/// the loader's library only (`default-features = false`), as docs/embedding.md advises.
struct TestCrate {
    dir: PathBuf,
}

impl TestCrate {
    fn new(name: &str, files: &[(&str, &str)]) -> TestCrate {
        TestCrate::with_filters(name, &["bpf/filter.lua"], files)
    }

    /// A crate whose build script compiles each of `filters`.
    fn with_filters(name: &str, filters: &[&str], files: &[(&str, &str)]) -> TestCrate {
        let dir = tests_dir().join("crates").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let ws = workspace();
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dependencies]\nluabpf-loader = {{ path = {:?}, default-features = false }}\n\n\
             [build-dependencies]\nluabpf-build = {{ path = {:?} }}\n\n\
             # Not a member of the luabpf workspace this directory sits in.\n[workspace]\n",
            ws.join("loader").display().to_string(),
            ws.join("luabpf-build").display().to_string()
        );
        let calls: String = filters.iter().map(|f| format!(".file({f:?})")).collect();
        let build_rs = format!("fn main() {{\n    luabpf_build::Builder::new(){calls}.compile_or_exit();\n}}\n");
        let mut all = vec![("Cargo.toml", manifest.as_str()), ("build.rs", build_rs.as_str())];
        all.extend_from_slice(files);
        for (path, text) in all {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        std::fs::copy(ws.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        TestCrate { dir }
    }

    /// `cargo ARGS` in the crate, with the shared target directory.
    fn cargo(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO"))
            .args(args)
            .current_dir(&self.dir)
            .env("CARGO_TARGET_DIR", tests_dir().join("target"))
            .env_remove("RUSTFLAGS")
            .output()
            .expect("cargo runs")
    }

    /// `cargo build --offline -v`: (success, stderr).
    fn build(&self) -> (bool, String) {
        let out = self.cargo(&["build", "--offline", "-v", "--color", "never"]);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// The packages the crate's own code links (`cargo tree -e normal`: no build dependencies).
    fn normal_dependencies(&self) -> String {
        let out = self.cargo(&[
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--color",
            "never",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
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
///
/// With `--netfilter EVIL GOOD` (files holding ClientHellos for evil.example, which it blocks,
/// and another name) it attaches examples/netfilter/sni_filter.lua's netfilter program where
/// the file declares it, tries the same place again and another priority, sends both hellos
/// over TCP on 127.0.0.1 (local_in sees loopback traffic) and prints what arrived: the
/// allowed hello at once, the blocked one only after the link is dropped.
const MAIN: &str = r#"#![deny(warnings)]

mod filter {
    include!(concat!(env!("OUT_DIR"), "/filter.rs"));
}

mod sni_filter {
    include!(concat!(env!("OUT_DIR"), "/sni_filter.rs"));
}

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use luabpf_loader::netfilter::link_info;
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

/// The kernel's view of a link: `ipv4:local_in:-100`.
fn kernel_hook(link: &luabpf_loader::skeleton::Link) -> String {
    match link_info(link.fd()) {
        Ok(Some(l)) => l.hook.to_string(),
        other => format!("not a netfilter link: {other:?}"),
    }
}

/// Reads `len` bytes from `conn`, waiting at most 30 s; how many came.
fn receive(conn: &mut TcpStream, len: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = 0;
    let mut buf = vec![0u8; len];
    conn.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    while got < len && Instant::now() < deadline {
        match conn.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => {}
        }
    }
    got
}

fn run_netfilter(evil: &str, good: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (evil, good) = (std::fs::read(evil)?, std::fs::read(good)?);
    let f = sni_filter::SniFilter::load()?;
    f.blocklist()?.insert("evil.example", 0)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let link = f.attach_netfilter()?;
    println!("attached {} at {} ({})", link.program(), link.mode(), kernel_hook(&link));
    if let Err(e) = f.attach_sni_nf() {
        println!("again: {e}");
    }
    let moved = f.attach_sni_nf_at_priority(5)?;
    println!("also at {} ({})", moved.mode(), kernel_hook(&moved));
    drop(moved);

    let mut blocked = TcpStream::connect(listener.local_addr()?)?;
    let (mut blocked_in, _) = listener.accept()?;
    blocked.write_all(&evil)?;
    let mut allowed = TcpStream::connect(listener.local_addr()?)?;
    let (mut allowed_in, _) = listener.accept()?;
    allowed.write_all(&good)?;
    println!("allowed hello: {} of {} bytes", receive(&mut allowed_in, good.len()), good.len());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut hits = 0;
    while hits == 0 && Instant::now() < deadline {
        hits = f.blocklist()?.get("evil.example")?.unwrap_or(0);
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("hits: {}", if hits > 0 { "some" } else { "none" });
    blocked_in.set_nonblocking(true)?;
    let early = blocked_in.read(&mut [0u8; 64]).unwrap_or(0);
    println!("blocked hello while attached: {early} bytes");
    blocked_in.set_nonblocking(false)?;
    drop(link);
    // Unattached: TCP retransmits the hello, and now it gets through.
    println!("blocked hello after the link is dropped: {} of {} bytes", receive(&mut blocked_in, evil.len()), evil.len());
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--netfilter") => run_netfilter(&args[2], &args[3]).unwrap(),
        Some(interface) => run(interface).unwrap(),
        None => {}
    }
    println!("{} object bytes", filter::Filter::object().len());
}
"#;

/// A fresh crate builds without warnings, does not rerun its build script for nothing, and
/// reruns it when a module its filter requires changes.
#[test]
fn a_fresh_crate_builds_and_rebuilds_when_a_required_module_changes() {
    let sni = std::fs::read_to_string(workspace().join("examples/netfilter/sni_filter.lua")).unwrap();
    let krate = TestCrate::with_filters(
        "embed_fresh",
        &["bpf/filter.lua", "bpf/sni_filter.lua"],
        &[
            ("bpf/filter.lua", FILTER),
            ("bpf/lib/verdicts.lua", VERDICTS),
            ("bpf/sni_filter.lua", &sni),
            ("src/main.rs", MAIN),
        ],
    );
    let (ok, stderr) = krate.build();
    assert!(ok, "the fresh crate does not build:\n{stderr}");
    assert!(ran_build_script(&stderr, "embed_fresh"), "{stderr}");
    // The skeletons need the loader's library only: not the `luabpf` command's parser, nor
    // the compiler (which the build script alone uses).
    let linked = krate.normal_dependencies();
    assert!(linked.contains("luabpf-loader v"), "{linked}");
    for unwanted in ["clap v", "luabpf-compiler v", "mlua v"] {
        assert!(!linked.contains(unwanted), "the crate links {unwanted}..:\n{linked}");
    }

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

    // Netfilter: the skeleton of examples/netfilter/sni_filter.lua attaches its netfilter
    // program where the file declares it (the kernel's link says so), refuses the same place
    // twice, moves with the priority override, and drops the blocked ClientHello sent over TCP
    // until the link is dropped: then TCP's retransmission of it gets through.
    drop(ns);
    let ns = NetNs::new("embednf");
    let hello = |name: &str| {
        let path = krate.dir.join(format!("{name}.hello"));
        std::fs::write(&path, luabpf_tests::packets::client_hello(name, 12, 5)).unwrap();
        path
    };
    let (evil, good) = (hello("evil.example"), hello("good.example"));
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg(&binary)
        .arg("--netfilter")
        .args([&evil, &good])
        .output()
        .expect("nsenter runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let evil_len = std::fs::metadata(&evil).unwrap().len();
    let good_len = std::fs::metadata(&good).unwrap().len();
    for want in [
        "attached sni_nf at ipv4:local_in:-100 (ipv4:local_in:-100)\n".to_string(),
        "again: cannot attach `sni_nf` at netfilter ipv4:local_in:-100 (another BPF program is attached at \
         ipv4 local_in with priority -100"
            .to_string(),
        "also at ipv4:local_in:5 (ipv4:local_in:5)\n".to_string(),
        format!("allowed hello: {good_len} of {good_len} bytes\n"),
        "hits: some\n".to_string(),
        "blocked hello while attached: 0 bytes\n".to_string(),
        format!("blocked hello after the link is dropped: {evil_len} of {evil_len} bytes\n"),
    ] {
        assert!(stdout.contains(&want), "lacks `{want}`:\n{stdout}");
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
