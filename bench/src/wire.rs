//! `bench wire`: the SNI filter on a wire, not under BPF_PROG_TEST_RUN.
//!
//! Two network namespaces joined by a veth pair; a sender floods `pfw0` with one ClientHello
//! for the blocked host name; on `pfw1` the blocking is done by, in turn: luabpf's
//! sni_filter at native XDP, the clang-19 baseline at native XDP, and what one would
//! otherwise deploy, an iptables `string` match rule in the raw table. Each variant runs for
//! the same window on the same traffic, interleaved over rounds.
//!
//! Measured per window: packets dropped per second (the XDP programs' own hit counter in
//! `blocklist`, the iptables rule's packet counter), packets offered (pfw0's tx counter, or
//! the frames the generator sent), and the softirq CPU time of the whole machine
//! (/proc/stat), where veth's receive path, XDP and netfilter run: divided by the drops it is
//! the receive cost per dropped packet.
//!
//! Two senders, each its own table:
//! - trafgen: frames written to an AF_PACKET socket, as a host sends them. Each one costs
//!   the sender an skb and veth's transmit path, on the same two CPUs as the receiver, and
//!   bounds the offered rate.
//! - frames (`BPF_PROG_TEST_RUN` in live-frames mode, the kernel's own XDP packet
//!   generator, as xdp-trafficgen uses it): a one-line XDP program in the sending namespace
//!   returns XDP_TX for each copy of the frame, and veth hands the frames to pfw1's XDP
//!   receive queue without an skb, as a NIC's ring does. The XDP variants drop them there;
//!   the iptables variant needs an skb built for each (pfw1 gets an XDP program that passes
//!   everything, which is also what makes veth accept such frames). Generator and receiver
//!   run on one CPU, one after the other, so the drop rate is bounded by the receive cost.
//!
//! Needs root and `ip` (iproute2), `trafgen` (netsniff-ng), `iptables`, `bpftool` and
//! clang-19. Everything it creates (two namespaces, whose deletion removes the veth pair,
//! XDP attachment and rules) is removed on exit, also on failure.

use std::fmt::Write as _;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::json::Json;
use crate::{objects, packets, programs};

const TX_NS: &str = "pfw_tx";
const RX_NS: &str = "pfw_rx";
const TX_DEV: &str = "pfw0";
const RX_DEV: &str = "pfw1";
const TX_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x01];
const RX_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x02];
const TOOLS: [&str; 5] = ["ip", "trafgen", "iptables", "bpftool", "clang-19"];

const HELP: &str = "\
usage: cargo run --release -p bench -- wire [OPTIONS]

The SNI filter on a veth pair flooded by trafgen and by XDP live frames (BPF_PROG_TEST_RUN):
luabpf (native XDP), clang-19 (native XDP) and an iptables string-match rule, interleaved.
Writes bench/wire.md and bench/wire.json (BENCHMARKS.md includes bench/wire.md when the main
benchmark is written).

OPTIONS:
  --seconds N        measured window per variant and round (default 5; 1 s warm-up before it)
  --rounds N         interleaved rounds (default 3)
  --sender S         trafgen, frames (XDP live frames from BPF_PROG_TEST_RUN) or both (default)
  --no-write         print only
";

/// Where the flood comes from (module docs).
#[derive(Clone, Copy, PartialEq)]
enum Sender {
    Trafgen,
    Frames,
}

/// The sending side: trafgen's configuration, or the frame generator's XDP program.
struct Senders<'a> {
    trafgen_conf: PathBuf,
    /// `return XDP_TX`, loaded.
    generator: BorrowedFd<'a>,
    /// `return XDP_PASS`: on pfw1 for the iptables variant under frames.
    pass_object: PathBuf,
    frame: Vec<u8>,
}

/// Frames per test run call. Each call sets up and tears down its own page pool (~20 ms,
/// partly asleep), so calls are long: about a second of frames.
const FRAMES_PER_CALL: u32 = 1 << 20;

/// Runs the XDP_TX program in live-frames mode from the sending namespace: 1 s of warm-up,
/// then whole calls for `secs`, with `hits` read just before the first and after the last.
/// On a thread of its own: the device named by the context's ingress_ifindex is looked up
/// in the caller's namespace, and the thread moves into the sender's.
fn frame_flood(
    generator: BorrowedFd<'_>,
    frame: &[u8],
    hits: &(dyn Fn() -> Result<u64, String> + Sync),
    secs: u64,
) -> Result<Sample, String> {
    std::thread::scope(|scope| {
        let flood = scope.spawn(|| -> Result<Sample, String> {
            let ns = std::fs::File::open(format!("/run/netns/{TX_NS}")).map_err(|e| format!("{TX_NS}: {e}"))?;
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {TX_NS}: {}", std::io::Error::last_os_error()));
            }
            let name = std::ffi::CString::new(TX_DEV).expect("no NUL");
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if ifindex == 0 {
                return Err(format!("{TX_DEV}: {}", std::io::Error::last_os_error()));
            }
            // struct xdp_md: data, data_end (the frame's length), data_meta, ingress_ifindex,
            // rx_queue_index, egress_ifindex.
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            let send = || {
                let input = luabpf_loader::TestRunInput {
                    packet: frame,
                    repeat: FRAMES_PER_CALL,
                    ctx: Some(&ctx),
                    flags: luabpf_loader::BPF_F_TEST_XDP_LIVE_FRAMES,
                };
                luabpf_loader::test_run_with(generator, &input).map_err(|e| format!("live frames: {e}"))
            };
            let warm = Instant::now();
            while warm.elapsed() < Duration::from_secs(1) {
                send()?;
            }
            let (h0, t0, c0) = (hits()?, Instant::now(), cpu_times());
            let mut sent = 0u64;
            while t0.elapsed() < Duration::from_secs(secs) {
                send()?;
                sent += u64::from(FRAMES_PER_CALL);
            }
            let (h1, t1, c1) = (hits()?, Instant::now(), cpu_times());
            Ok(Sample {
                dropped: h1 - h0,
                sent,
                softirq_s: c1.0 - c0.0,
                busy_s: c1.1 - c0.1,
                secs: (t1 - t0).as_secs_f64(),
            })
        });
        flood
            .join()
            .unwrap_or_else(|_| Err("the frame generator panicked".into()))
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Luabpf,
    Clang,
    Iptables,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Luabpf => "luabpf sni_filter (native XDP)",
            Variant::Clang => "clang-19 sni_filter.c (native XDP)",
            Variant::Iptables => "iptables -m string --algo bm (raw PREROUTING)",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Variant::Luabpf => "luabpf",
            Variant::Clang => "clang",
            Variant::Iptables => "iptables",
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Sample {
    dropped: u64,
    sent: u64,
    softirq_s: f64,
    busy_s: f64,
    secs: f64,
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn in_ns(ns: &str, cmd: &str, args: &[&str]) -> Result<String, String> {
    let mut a = vec!["netns", "exec", ns, cmd];
    a.extend_from_slice(args);
    run("ip", &a)
}

/// The two namespaces; deleting them removes the veth pair and everything attached.
struct Netns;

impl Netns {
    fn create() -> Result<Netns, String> {
        for ns in [TX_NS, RX_NS] {
            let _ = run("ip", &["netns", "del", ns]);
            run("ip", &["netns", "add", ns])?;
        }
        let guard = Netns;
        let mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        run(
            "ip",
            &[
                "link", "add", TX_DEV, "netns", TX_NS, "type", "veth", "peer", "name", RX_DEV, "netns", RX_NS,
            ],
        )?;
        for (ns, dev, m, addr) in [
            (TX_NS, TX_DEV, TX_MAC, "10.0.0.1/24"),
            (RX_NS, RX_DEV, RX_MAC, "10.0.0.2/24"),
        ] {
            run("ip", &["-n", ns, "link", "set", "dev", dev, "address", &mac(m)])?;
            run("ip", &["-n", ns, "addr", "add", addr, "dev", dev])?;
            run("ip", &["-n", ns, "link", "set", "dev", dev, "up"])?;
            run("ip", &["-n", ns, "link", "set", "dev", "lo", "up"])?;
        }
        Ok(guard)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [TX_NS, RX_NS] {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}

/// trafgen, stopped (SIGINT, then waited for) when dropped.
struct Flood(Child);

impl Flood {
    fn start(conf: &Path) -> Result<Flood, String> {
        let child = Command::new("ip")
            .args(["netns", "exec", TX_NS, "trafgen", "--dev", TX_DEV, "--conf"])
            .arg(conf)
            // One sender process; leave the host's IRQ affinity and socket memory alone.
            .args(["--cpus", "1", "--notouch-irq", "--no-sock-mem", "--no-cpu-stats"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start trafgen: {e}"))?;
        Ok(Flood(child))
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        // `ip netns exec` execs trafgen in place: this pid is trafgen, which forks its
        // sender; SIGINT makes it stop the sender and exit.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (softirq, busy) CPU seconds of the whole machine so far.
fn cpu_times() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().find(|l| l.starts_with("cpu ")).unwrap_or("");
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    if v.len() < 7 || hz <= 0.0 {
        return (0.0, 0.0);
    }
    let total: f64 = v.iter().take(8).sum();
    (v[6] / hz, (total - v[3] - v[4]) / hz)
}

fn tx_packets() -> u64 {
    in_ns(
        TX_NS,
        "cat",
        &[&format!("/sys/class/net/{TX_DEV}/statistics/tx_packets")],
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

fn hex_args(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `blocklist` map of the XDP program attached to pfw1.
fn blocklist_map_id() -> Result<String, String> {
    let link = run("ip", &["-n", RX_NS, "-d", "link", "show", "dev", RX_DEV])?;
    let prog = link
        .split("prog/xdp id ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .ok_or("no XDP program on pfw1")?
        .to_string();
    let info = run("bpftool", &["prog", "show", "id", &prog])?;
    let ids = info
        .split("map_ids ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .ok_or("the program has no maps")?;
    for id in ids.split(',') {
        if run("bpftool", &["map", "show", "id", id])?.contains("name blocklist") {
            return Ok(id.to_string());
        }
    }
    Err("no map named blocklist".into())
}

fn key_args(key: &[u8]) -> Vec<String> {
    let mut a = vec!["key".to_string(), "hex".to_string()];
    a.extend(hex_args(key));
    a
}

fn xdp_hits(map: &str, key: &[u8]) -> Result<u64, String> {
    let mut args: Vec<String> = ["-j", "map", "lookup", "id", map]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(key_args(key));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("bpftool", &a)?;
    // `{"key":["0x62",...],"value":["0x2a","0x00",...],...}`: the value's bytes, little-endian.
    let text = out
        .split("\"value\":[")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .ok_or_else(|| format!("bpftool lookup: {out}"))?;
    let bytes: Vec<u8> = text
        .split(',')
        .filter_map(|b| u8::from_str_radix(b.trim().trim_matches('"').trim_start_matches("0x"), 16).ok())
        .collect();
    let mut w = [0u8; 8];
    let n = bytes.len().min(8);
    w[..n].copy_from_slice(&bytes[..n]);
    Ok(u64::from_le_bytes(w))
}

fn iptables_hits() -> Result<u64, String> {
    let out = in_ns(RX_NS, "iptables", &["-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"])?;
    out.lines()
        .find(|l| l.contains("STRING match"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no string rule in: {out}"))
}

const IPTABLES_RULE: [&str; 14] = [
    "-p",
    "tcp",
    "--dport",
    "443",
    "-m",
    "string",
    "--string",
    programs::BLOCKED_SNI,
    "--algo",
    "bm",
    "-j",
    "DROP",
    "-w",
    "5",
];

/// Sets the variant up on pfw1, floods for warm-up plus `secs`, tears it down.
fn measure(v: Variant, objects: &[PathBuf; 2], sender: Sender, senders: &Senders, secs: u64) -> Result<Sample, String> {
    let key = programs::padded(programs::BLOCKED_SNI, 64);
    let hits: Box<dyn Fn() -> Result<u64, String> + Sync> = match v {
        Variant::Luabpf | Variant::Clang => {
            let obj = &objects[(v == Variant::Clang) as usize];
            let obj = obj.to_str().ok_or("object path is not UTF-8")?;
            run(
                "ip",
                &[
                    "-n", RX_NS, "link", "set", "dev", RX_DEV, "xdpdrv", "obj", obj, "sec", "xdp",
                ],
            )?;
            let map = blocklist_map_id()?;
            let mut args: Vec<String> = ["map", "update", "id", &map].iter().map(|s| s.to_string()).collect();
            args.extend(key_args(&key));
            args.extend(["value", "hex"].iter().map(|s| s.to_string()));
            args.extend(hex_args(&0u64.to_le_bytes()));
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            run("bpftool", &a)?;
            let key = key.clone();
            Box::new(move || xdp_hits(&map, &key))
        }
        Variant::Iptables => {
            if sender == Sender::Frames {
                let pass = senders.pass_object.to_str().ok_or("object path is not UTF-8")?;
                run(
                    "ip",
                    &[
                        "-n", RX_NS, "link", "set", "dev", RX_DEV, "xdpdrv", "obj", pass, "sec", "xdp",
                    ],
                )?;
            }
            let mut a = vec!["-t", "raw", "-A", "PREROUTING"];
            a.extend_from_slice(&IPTABLES_RULE);
            in_ns(RX_NS, "iptables", &a)?;
            Box::new(iptables_hits)
        }
    };
    let result = (|| {
        let window = |sent: &dyn Fn() -> u64| -> Result<Sample, String> {
            std::thread::sleep(Duration::from_secs(1));
            let (h0, s0, t0, c0) = (hits()?, sent(), Instant::now(), cpu_times());
            std::thread::sleep(Duration::from_secs(secs));
            let (h1, s1, t1, c1) = (hits()?, sent(), Instant::now(), cpu_times());
            Ok(Sample {
                dropped: h1 - h0,
                sent: s1.saturating_sub(s0),
                softirq_s: c1.0 - c0.0,
                busy_s: c1.1 - c0.1,
                secs: (t1 - t0).as_secs_f64(),
            })
        };
        match sender {
            Sender::Trafgen => {
                let _flood = Flood::start(&senders.trafgen_conf)?;
                window(&tx_packets)
            }
            Sender::Frames => frame_flood(senders.generator, &senders.frame, &*hits, secs),
        }
    })();
    let _ = run("ip", &["-n", RX_NS, "link", "set", "dev", RX_DEV, "xdpdrv", "off"]);
    if v == Variant::Iptables {
        let _ = in_ns(RX_NS, "iptables", &["-t", "raw", "-F", "PREROUTING"]);
    }
    result
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[v.len() / 2]
}

/// The flooded frame: the benchmark's blocked-SNI ClientHello with the veth pair's MAC
/// addresses.
fn flood_frame() -> Vec<u8> {
    let mut frame = packets::tls_frame(programs::BLOCKED_SNI);
    frame[..6].copy_from_slice(&RX_MAC);
    frame[6..12].copy_from_slice(&TX_MAC);
    frame
}

/// The flooded frame as a trafgen packet.
fn trafgen_conf(dir: &Path) -> Result<PathBuf, String> {
    let body: Vec<String> = flood_frame().iter().map(|b| format!("0x{b:02x}")).collect();
    let path = dir.join("clienthello.cfg");
    std::fs::write(&path, format!("{{ {} }}\n", body.join(", "))).map_err(|e| e.to_string())?;
    Ok(path)
}

/// A one-line XDP program returning `verdict`, compiled by luabpf.
fn verdict_object(name: &str, verdict: u32) -> Result<Vec<u8>, String> {
    let src = format!(
        "local xdp = require \"bpf.xdp\"\nreturn xdp.program(function(ctx) return {verdict} end, {{ name = \"{name}\" }})\n"
    );
    luabpf_compiler::compile::compile_source(&src, &format!("{name}.lua"), &Default::default())
        .map(|c| c.elf)
        .map_err(|e| format!("luabpf: {}", e.render()))
}

fn build_objects(root: &Path, dir: &Path) -> Result<[PathBuf; 2], String> {
    let lua = root.join("examples/sni_filter.lua");
    let compiled = luabpf_compiler::compile::compile_path(&lua, &Default::default())
        .map_err(|e| format!("luabpf: {}", e.render()))?;
    let lua_obj = dir.join("sni_lua.o");
    std::fs::write(&lua_obj, &compiled.elf).map_err(|e| e.to_string())?;
    let c_obj = dir.join("sni_c.o");
    let mut args: Vec<String> = objects::CLANG_ARGS.iter().map(|s| s.to_string()).collect();
    args.push(root.join("bench/c/sni_filter.c").display().to_string());
    args.extend(["-o".to_string(), c_obj.display().to_string()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run("clang-19", &a)?;
    Ok([lua_obj, c_obj])
}

pub fn main(root: &Path, args: &[String]) -> i32 {
    let (mut secs, mut rounds, mut write) = (5u64, 3usize, true);
    let mut sender_kinds = vec![Sender::Trafgen, Sender::Frames];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> Option<u64> {
            it.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).or_else(|| {
                eprintln!("bench wire: {what} needs a positive number");
                None
            })
        };
        match a.as_str() {
            "--seconds" => match num("--seconds") {
                Some(n) => secs = n,
                None => return 2,
            },
            "--rounds" => match num("--rounds") {
                Some(n) => rounds = n as usize,
                None => return 2,
            },
            "--sender" => {
                sender_kinds = match it.next().map(String::as_str) {
                    Some("trafgen") => vec![Sender::Trafgen],
                    Some("frames") => vec![Sender::Frames],
                    Some("both") => vec![Sender::Trafgen, Sender::Frames],
                    _ => {
                        eprintln!("bench wire: --sender needs trafgen, frames or both");
                        return 2;
                    }
                }
            }
            "--no-write" => write = false,
            "-h" | "--help" => {
                print!("{HELP}");
                return 0;
            }
            other => {
                eprintln!("bench wire: unknown argument `{other}`\n\n{HELP}");
                return 2;
            }
        }
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "bench wire: missing {}; on Debian: apt-get install -y iproute2 netsniff-ng iptables bpftool clang-19",
            missing.join(", ")
        );
        return 2;
    }
    let dir = std::env::temp_dir().join(format!("luabpf-wire-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let outcome = (|| -> Result<(String, String), String> {
        let objects = build_objects(root, &dir)?;
        let pass_object = dir.join("pass.o");
        std::fs::write(&pass_object, verdict_object("pass", 2)?).map_err(|e| e.to_string())?;
        let generator = luabpf_loader::load(&verdict_object("tx", 3)?).map_err(|e| format!("generator: {e}"))?;
        let senders = Senders {
            trafgen_conf: trafgen_conf(&dir)?,
            generator: generator.program_fd("tx").ok_or("generator: no program")?,
            pass_object,
            frame: flood_frame(),
        };
        let _ns = Netns::create()?;
        let variants = [Variant::Luabpf, Variant::Clang, Variant::Iptables];
        let mut md = "## On the wire: SNI filter on a veth pair (`bench wire`)\n\n".to_string();
        let mut json = Json::obj();
        for &sender in &sender_kinds {
            let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); variants.len()];
            let started = chrono_now();
            for round in 0..rounds {
                // Rotate the order so that no variant always runs first (or after the same one).
                for k in 0..variants.len() {
                    let i = (k + round) % variants.len();
                    eprintln!(
                        "bench wire: {}: round {}/{rounds}: {}",
                        sender_key(sender),
                        round + 1,
                        variants[i].label()
                    );
                    samples[i].push(measure(variants[i], &objects, sender, &senders, secs)?);
                }
            }
            let (m, j) = report(sender, &variants, &samples, secs, rounds, &started);
            md.push_str(&m);
            json = json.with(sender_key(sender), j);
        }
        md.push_str(
            "Reproduce: `cargo run --release -p bench -- wire` (root; `apt-get install -y iproute2 netsniff-ng \
             iptables bpftool clang-19`).\n",
        );
        Ok((md, json.render()))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok((md, json)) => {
            print!("{md}");
            if write {
                for (p, text) in [("bench/wire.md", md), ("bench/wire.json", json)] {
                    if let Err(e) = std::fs::write(root.join(p), text) {
                        eprintln!("bench wire: cannot write {p}: {e}");
                        return 2;
                    }
                    eprintln!("bench wire: wrote {p}");
                }
            }
            0
        }
        Err(e) => {
            eprintln!("bench wire: {e}");
            1
        }
    }
}

fn chrono_now() -> String {
    run("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn sender_key(s: Sender) -> &'static str {
    match s {
        Sender::Trafgen => "trafgen",
        Sender::Frames => "frames",
    }
}

/// The section of wire.md for one sender, and its JSON.
fn report(
    sender: Sender,
    variants: &[Variant],
    samples: &[Vec<Sample>],
    secs: u64,
    rounds: usize,
    when: &str,
) -> (String, Json) {
    let mut w = String::new();
    let frame_len = flood_frame().len();
    let (title, how, offered, note) = match sender {
        Sender::Trafgen => (
            "trafgen (AF_PACKET)",
            format!("trafgen (netsniff-ng) floods `{TX_DEV}`"),
            format!("`{TX_DEV}`'s tx packets"),
            "The sender and the receiver share the VM's 2 CPUs, and each frame costs the sender an skb and \
             veth's transmit path: the offered rate is bounded by trafgen and veth, not by the filter. When all \
             variants drop what is offered, the softirq ns per drop is the figure that separates them.",
        ),
        Sender::Frames => (
            "XDP live frames (as a NIC's ring delivers them)",
            format!(
                "`BPF_PROG_TEST_RUN` in live-frames mode sends copies of the frame out of `{TX_DEV}` (an XDP program \
                 returning XDP_TX, {FRAMES_PER_CALL} frames a call), and veth hands them to `{RX_DEV}`'s XDP receive \
                 queue without an skb,"
            ),
            "the frames the generator sent".to_string(),
            "Generator and receiver run one after the other on one CPU, and sending a frame costs little, so the \
             drop rate is bounded by the receive path: the XDP variants drop the frame where it arrives, the \
             iptables variant gets an skb built for each frame (`pfw1` carries an XDP program returning XDP_PASS, \
             as a NIC driver would build the skb) and the IP stack's raw PREROUTING hook.",
        ),
    };
    let _ = writeln!(w, "### Sender: {title}\n");
    let _ = writeln!(
        w,
        "{how} with the blocked-SNI ClientHello ({frame_len} B frame, the `blocked SNI` packet above); on `{RX_DEV}` \
         it is dropped by each variant in turn, {rounds} interleaved rounds of {secs} s (after 1 s of warm-up each). \
         Dropped: the XDP programs' own hit counter in `blocklist`, the iptables rule's packet counter. Offered: \
         {offered}. CPU: softirq time of the whole machine over the window (where veth's receive path, XDP and \
         netfilter run), per dropped packet; busy: all non-idle CPU time of the 2-CPU VM, the sender included. \
         Medians over the rounds. Run {when}.\n"
    );
    let _ = writeln!(
        w,
        "| variant | dropped Mpps | offered Mpps | dropped / offered | softirq ns per drop | busy CPUs |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
    let mut json = Json::obj()
        .with("seconds", secs)
        .with("rounds", rounds)
        .with("run", when);
    let mut rates = Vec::new();
    for (v, s) in variants.iter().zip(samples) {
        let mpps = median(s.iter().map(|x| x.dropped as f64 / x.secs / 1e6).collect());
        let offered = median(s.iter().map(|x| x.sent as f64 / x.secs / 1e6).collect());
        let share = median(s.iter().map(|x| x.dropped as f64 / (x.sent.max(1)) as f64).collect());
        let ns = median(
            s.iter()
                .map(|x| x.softirq_s * 1e9 / (x.dropped.max(1)) as f64)
                .collect(),
        );
        let busy = median(s.iter().map(|x| x.busy_s / x.secs).collect());
        rates.push(mpps);
        let _ = writeln!(
            w,
            "| {} | {mpps:.3} | {offered:.3} | {:.0}% | {ns:.0} | {busy:.2} |",
            v.label(),
            share * 100.0
        );
        json = json.with(
            v.key(),
            Json::obj()
                .with("dropped_mpps", mpps)
                .with("offered_mpps", offered)
                .with("softirq_ns_per_drop", ns)
                .with("busy_cpus", busy)
                .with(
                    "rounds",
                    s.iter()
                        .map(|x| {
                            Json::obj()
                                .with("dropped", x.dropped)
                                .with("sent", x.sent)
                                .with("softirq_s", x.softirq_s)
                                .with("busy_s", x.busy_s)
                                .with("secs", x.secs)
                        })
                        .collect::<Vec<Json>>(),
                ),
        );
    }
    if rates.len() == 3 && rates[1] > 0.0 && rates[2] > 0.0 {
        let _ = writeln!(
            w,
            "\nluabpf / clang drop rate: **{:.2}**; luabpf / iptables string match: **{:.1}x**.\n",
            rates[0] / rates[1],
            rates[0] / rates[2]
        );
    }
    let _ = writeln!(w, "{note}\n");
    (w, json)
}
