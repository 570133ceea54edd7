//! `bench wire`: the SNI filter on a wire, not under BPF_PROG_TEST_RUN.
//!
//! Two network namespaces joined by a veth pair; trafgen (Debian netsniff-ng) floods
//! `pfw0` with one ClientHello for the blocked host name; on `pfw1` the blocking is done
//! by, in turn: luabpf's sni_filter at native XDP, the clang-19 baseline at native XDP, and
//! what one would otherwise deploy, an iptables `string` match rule in the raw table. Each
//! variant runs for the same window on the same traffic, interleaved over rounds.
//!
//! Measured per window: packets dropped per second (the XDP programs' own hit counter in
//! `blocklist`, the iptables rule's packet counter), packets offered (pfw0's tx counter),
//! and the softirq CPU time of the whole machine (/proc/stat), where veth's receive path,
//! XDP and netfilter run: divided by the drops it is the receive cost per dropped packet.
//!
//! Needs root and `ip` (iproute2), `trafgen` (netsniff-ng), `iptables`, `bpftool` and
//! clang-19. Everything it creates (two namespaces, whose deletion removes the veth pair,
//! XDP attachment and rules) is removed on exit, also on failure.

use std::fmt::Write as _;
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

The SNI filter on a veth pair flooded by trafgen: luabpf (native XDP), clang-19 (native XDP)
and an iptables string-match rule, interleaved. Writes bench/wire.md and bench/wire.json
(BENCHMARKS.md includes bench/wire.md when the main benchmark is written).

OPTIONS:
  --seconds N   measured window per variant and round (default 5; 1 s warm-up before it)
  --rounds N    interleaved rounds (default 3)
  --no-write    print only
";

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
fn measure(v: Variant, objects: &[PathBuf; 2], conf: &Path, secs: u64) -> Result<Sample, String> {
    let key = programs::padded(programs::BLOCKED_SNI, 64);
    let hits: Box<dyn Fn() -> Result<u64, String>> = match v {
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
            let mut a = vec!["-t", "raw", "-A", "PREROUTING"];
            a.extend_from_slice(&IPTABLES_RULE);
            in_ns(RX_NS, "iptables", &a)?;
            Box::new(iptables_hits)
        }
    };
    let result = (|| {
        let _flood = Flood::start(conf)?;
        std::thread::sleep(Duration::from_secs(1));
        let (h0, s0, t0, c0) = (hits()?, tx_packets(), Instant::now(), cpu_times());
        std::thread::sleep(Duration::from_secs(secs));
        let (h1, s1, t1, c1) = (hits()?, tx_packets(), Instant::now(), cpu_times());
        Ok(Sample {
            dropped: h1 - h0,
            sent: s1.saturating_sub(s0),
            softirq_s: c1.0 - c0.0,
            busy_s: c1.1 - c0.1,
            secs: (t1 - t0).as_secs_f64(),
        })
    })();
    match v {
        Variant::Luabpf | Variant::Clang => {
            let _ = run("ip", &["-n", RX_NS, "link", "set", "dev", RX_DEV, "xdpdrv", "off"]);
        }
        Variant::Iptables => {
            let _ = in_ns(RX_NS, "iptables", &["-t", "raw", "-F", "PREROUTING"]);
        }
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

/// The flooded frame as a trafgen packet: the benchmark's blocked-SNI ClientHello with the
/// veth pair's MAC addresses.
fn trafgen_conf(dir: &Path) -> Result<PathBuf, String> {
    let mut frame = packets::tls_frame(programs::BLOCKED_SNI);
    frame[..6].copy_from_slice(&RX_MAC);
    frame[6..12].copy_from_slice(&TX_MAC);
    let body: Vec<String> = frame.iter().map(|b| format!("0x{b:02x}")).collect();
    let path = dir.join("clienthello.cfg");
    std::fs::write(&path, format!("{{ {} }}\n", body.join(", "))).map_err(|e| e.to_string())?;
    Ok(path)
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
        let conf = trafgen_conf(&dir)?;
        let _ns = Netns::create()?;
        let variants = [Variant::Luabpf, Variant::Clang, Variant::Iptables];
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); variants.len()];
        let started = chrono_now();
        for round in 0..rounds {
            // Rotate the order so that no variant always runs first (or after the same one).
            for k in 0..variants.len() {
                let i = (k + round) % variants.len();
                eprintln!("bench wire: round {}/{rounds}: {}", round + 1, variants[i].label());
                samples[i].push(measure(variants[i], &objects, &conf, secs)?);
            }
        }
        Ok(report(&variants, &samples, secs, rounds, &started))
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

fn report(variants: &[Variant], samples: &[Vec<Sample>], secs: u64, rounds: usize, when: &str) -> (String, String) {
    let mut w = String::new();
    let frame_len = packets::tls_frame(programs::BLOCKED_SNI).len();
    let _ = writeln!(w, "## On the wire: SNI filter on a veth pair (`bench wire`)\n");
    let _ = writeln!(
        w,
        "Two network namespaces joined by a veth pair; trafgen (netsniff-ng) floods `{TX_DEV}` with the \
         blocked-SNI ClientHello ({frame_len} B frame, the `blocked SNI` packet above); on `{RX_DEV}` it is dropped by \
         each variant in turn, {rounds} interleaved rounds of {secs} s (after 1 s of warm-up each). Dropped: the \
         XDP programs' own hit counter in `blocklist`, the iptables rule's packet counter. Offered: `{TX_DEV}`'s tx \
         packets. CPU: softirq time of the whole machine over the window (veth's receive path, where XDP and \
         netfilter run, is a softirq on the sending CPU), per dropped packet; busy: all non-idle CPU time of the \
         2-CPU VM, trafgen included. Medians over the rounds. Run {when}.\n"
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
    let _ = writeln!(
        w,
        "On this VM the sender and the receiver share 2 virtual CPUs with other work, so the offered rate is \
         bounded by trafgen and veth, not by the filter: when all variants drop what is offered, the softirq \
         ns per drop is the figure that separates them. Reproduce: `cargo run --release -p bench -- wire` \
         (root; `apt-get install -y iproute2 netsniff-ng iptables bpftool clang-19`).\n"
    );
    (w, json.render())
}
