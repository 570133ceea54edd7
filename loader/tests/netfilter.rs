//! `luabpf attach --netfilter` with real traffic, and `luabpf run --pcap` of netfilter programs.
//!
//! Needs root: skips loudly without bpf(), unless LUABPF_REQUIRE_KERNEL=1. Each test makes two
//! network namespaces (client and server) joined by a veth pair, so nothing touches the host's
//! interfaces; netfilter hooks are per namespace, so the filter sees only the test's traffic.
//! Program names are unique per test (pins live in the host's /sys/fs/bpf, which all namespaces
//! share). Guards detach the programs and delete the namespaces also when a test fails.
//!
//! The command runs inside the server's namespace through `nsenter --net=...` (`ip netns exec`
//! would remount /sys and hide the BPF filesystem); sockets are made on threads that have
//! entered a namespace with setns(2) and keep that namespace afterwards.

#[allow(dead_code, unused_imports)]
#[path = "../../tests/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../../tests/packets.rs"]
mod packets;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::{NetNs, TempDir};
use luabpf_loader::netfilter::{self, NfLink};
use luabpf_loader::require_kernel_or_skip;

const BIN: &str = env!("CARGO_BIN_EXE_luabpf");
const EVIL: &str = "evil.example";
const CLIENT_IP: &str = "10.77.0.1";
const SERVER_IP: &str = "10.77.0.2";
const PORT: u16 = 443;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A client and a server namespace joined by a veth pair, a scratch directory, and the
/// programs attached in the server's namespace (detached on drop).
struct Lab {
    server: NetNs,
    client: NetNs,
    dir: TempDir,
    programs: Vec<String>,
}

impl Lab {
    fn new() -> Lab {
        let server = NetNs::new("nfs");
        let client = NetNs::new("nfc");
        client.ip(&[
            "link",
            "add",
            "nfc0",
            "type",
            "veth",
            "peer",
            "name",
            "nfs0",
            "netns",
            &server.name,
        ]);
        client.ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "nfc0"]);
        client.ip(&["link", "set", "nfc0", "up"]);
        server.ip(&["addr", "add", &format!("{SERVER_IP}/24"), "dev", "nfs0"]);
        server.ip(&["link", "set", "nfs0", "up"]);
        Lab {
            server,
            client,
            dir: TempDir::new("nf"),
            programs: Vec::new(),
        }
    }

    /// `luabpf ARGS` inside the server's namespace.
    fn luabpf(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.server.path().display()))
            .arg(BIN)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("run luabpf")
    }

    /// A program name unique to this test process and lab (at most 15 bytes: the kernel keeps
    /// 15 of a program's name).
    fn unique(&self, base: &str) -> String {
        let n = self.server.name.rsplit('-').nth(1).unwrap_or("0");
        format!("{base}{}{n}", std::process::id() % 10_000)
    }

    /// A copy of examples/netfilter/sni_filter.lua with its programs renamed `<nf>` and `<xdp>`.
    fn sni_copy(&mut self, nf: &str, xdp: &str) -> PathBuf {
        let src = std::fs::read_to_string(workspace().join("examples/netfilter/sni_filter.lua")).unwrap();
        for old in ["name = \"sni_nf\"", "name = \"sni_xdp\""] {
            assert!(src.contains(old), "the example names its program: {old}");
        }
        let src = src
            .replace("name = \"sni_nf\"", &format!("name = \"{nf}\""))
            .replace("name = \"sni_xdp\"", &format!("name = \"{xdp}\""));
        let path = self.dir.join(&format!("{nf}.lua"));
        std::fs::write(&path, src).unwrap();
        self.programs.push(nf.to_string());
        self.programs.push(xdp.to_string());
        path
    }

    /// `blocklist[name]` of `program`, or `None`.
    fn hits(&self, program: &str, name: &str) -> Option<u64> {
        let dump = ok(&self.luabpf(&["map", "dump", program, "blocklist"]));
        dump.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim().parse().unwrap())
    }

    /// Waits (at most 20 s, polling) until `blocklist[name]` of `program` exceeds `than`.
    fn wait_for_hits(&self, program: &str, name: &str, than: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = self.hits(program, name).unwrap_or(0);
            if n > than || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &self.programs {
            let _ = self.luabpf(&["detach", p]);
            let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf/luabpf").join(p));
            let _ = std::fs::remove_dir_all(Path::new("/run/luabpf").join(p));
        }
    }
}

fn pins_of(name: &str) -> bool {
    Path::new("/sys/fs/bpf/luabpf").join(name).exists() || Path::new("/run/luabpf").join(name).exists()
}

/// The netfilter link pinned for `program`, as the kernel describes it.
fn pinned_link(program: &str) -> NfLink {
    let path = Path::new("/sys/fs/bpf/luabpf").join(program).join("link");
    let fd = luabpf_loader::attach::open_pinned(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    netfilter::link_info(std::os::fd::AsFd::as_fd(&fd))
        .expect("link info")
        .expect("a netfilter link")
}

fn live_link_ids() -> Vec<u32> {
    netfilter::links().expect("walk links").iter().map(|l| l.id).collect()
}

/// Bytes received per client port, reported by the server's connection threads.
struct Server {
    rx: mpsc::Receiver<(u16, usize)>,
    received: std::collections::HashMap<u16, usize>,
}

impl Server {
    /// Listens on SERVER_IP:PORT inside `ns`; every connection is read on its own thread.
    fn start(ns: &NetNs) -> Server {
        let listener = ns.run_inside(|| TcpListener::bind((SERVER_IP, PORT)).expect("bind in the server namespace"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let port = conn.peer_addr().map(|a| a.port()).unwrap_or(0);
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || tx.send((port, n)).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Server {
            rx,
            received: Default::default(),
        }
    }

    fn drain(&mut self) {
        while let Ok((port, n)) = self.rx.try_recv() {
            *self.received.entry(port).or_default() += n;
        }
    }

    /// Waits (at most 20 s) until `want` bytes arrived from `port`; the bytes that did.
    fn wait_for(&mut self, port: u16, want: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.received.get(&port).copied().unwrap_or(0) < want && Instant::now() < deadline {
            if let Ok((p, n)) = self.rx.recv_timeout(Duration::from_millis(100)) {
                *self.received.entry(p).or_default() += n;
            }
        }
        self.received.get(&port).copied().unwrap_or(0)
    }

    fn bytes_from(&mut self, port: u16) -> usize {
        self.drain();
        self.received.get(&port).copied().unwrap_or(0)
    }
}

/// A TCP connection from the client namespace that has sent a ClientHello for `sni`; the
/// socket stays open (its segments keep being retransmitted while they are dropped).
fn send_hello(client: &NetNs, sni: &str) -> (TcpStream, u16) {
    let hello = packets::client_hello(sni, 12, 5);
    let mut s = client.run_inside(|| {
        let addr: SocketAddr = format!("{SERVER_IP}:{PORT}").parse().unwrap();
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect from the client namespace")
    });
    s.write_all(&hello).expect("send the ClientHello");
    let port = s.local_addr().unwrap().port();
    (s, port)
}

#[test]
fn sni_filter_at_netfilter_drops_blocked_hellos_on_the_wire_and_survives_replace() {
    if !require_kernel_or_skip("sni_filter_at_netfilter_drops_blocked_hellos_on_the_wire_and_survives_replace") {
        return;
    }
    let mut lab = Lab::new();
    let (nf, xdp) = (lab.unique("snf"), lab.unique("sxd"));
    let file = lab.sni_copy(&nf, &xdp);
    let file = file.to_str().unwrap();

    // The program's own options say where: ipv4 local_in, priority -100.
    let out = ok(&lab.luabpf(&["attach", file, "--program", &nf]));
    assert!(
        out.contains(&format!("attached `{nf}` at netfilter ipv4:local_in:-100")),
        "{out}"
    );
    for f in ["link", "prog", "maps/blocklist"] {
        assert!(Path::new("/sys/fs/bpf/luabpf").join(&nf).join(f).exists(), "pin {f}");
    }
    let list = ok(&lab.luabpf(&["list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with(&nf) && l.contains("netfilter (ipv4:local_in:-100)") && l.contains("blocklist")),
        "{list}"
    );
    let json = ok(&lab.luabpf(&["list", "--json"]));
    assert!(
        json.contains("\"hook\":\"netfilter\"") && json.contains("\"mode\":\"ipv4:local_in:-100\""),
        "{json}"
    );
    let first = pinned_link(&nf);
    assert_eq!(
        first.hook.to_string(),
        "ipv4:local_in:-100",
        "the kernel's view of the link"
    );
    ok(&lab.luabpf(&["map", "set", &nf, "blocklist", EVIL, "0"]));

    let mut server = Server::start(&lab.server);
    let hello_len = packets::client_hello(EVIL, 12, 5).len();

    // A blocked name: the connection is made (the handshake carries no ClientHello), but the
    // segment with the hello is dropped, and so is every retransmission of it.
    let (blocked, blocked_port) = send_hello(&lab.client, EVIL);
    let hits = lab.wait_for_hits(&nf, EVIL, 0);
    assert!(hits >= 1, "the filter never counted the blocked hello");
    // Another name passes, on the same path, after the drop.
    let (good, good_port) = send_hello(&lab.client, "good.example");
    assert_eq!(
        server.wait_for(good_port, hello_len),
        hello_len,
        "the allowed hello arrives"
    );
    assert_eq!(
        server.bytes_from(blocked_port),
        0,
        "bytes of the blocked hello reached the server"
    );

    // Replace: a new link, the maps kept, one link left, the filter still in force.
    let out = ok(&lab.luabpf(&["attach", "--netfilter", "ipv4:local_in:-100", file, "--program", &nf]));
    assert!(
        out.contains(&format!("replaced `{nf}`")) && out.contains("maps kept: blocklist"),
        "{out}"
    );
    let second = pinned_link(&nf);
    assert_eq!(second.hook, first.hook, "same hook and priority after the replacement");
    assert_ne!(second.prog_id, first.prog_id, "the new program is attached");
    let live = live_link_ids();
    assert!(!live.contains(&first.id), "the old link is gone");
    let ours: Vec<NfLink> = netfilter::links()
        .unwrap()
        .into_iter()
        .filter(|l| l.prog_id == second.prog_id)
        .collect();
    assert_eq!(
        ours,
        [second],
        "exactly one link runs the new program (the bridge is gone)"
    );
    let kept = lab.hits(&nf, EVIL).expect("blocklist entry kept");
    assert!(kept >= hits, "counts kept across the replacement ({kept} < {hits})");

    let (blocked2, blocked2_port) = send_hello(&lab.client, EVIL);
    assert!(
        lab.wait_for_hits(&nf, EVIL, kept) > kept,
        "the new program counts into the kept map"
    );
    let (good2, good2_port) = send_hello(&lab.client, "fine.example");
    assert_eq!(server.wait_for(good2_port, hello_len), hello_len);
    assert_eq!(server.bytes_from(blocked2_port), 0);
    assert_eq!(server.bytes_from(blocked_port), 0);

    // Detach: no link, no pins; the blocked connection's data then gets through.
    let out = ok(&lab.luabpf(&["detach", &nf]));
    assert!(
        out.contains("detached") && out.contains("netfilter ipv4:local_in:-100"),
        "{out}"
    );
    assert!(!pins_of(&nf), "pins left after detach");
    let live = live_link_ids();
    assert!(!live.contains(&second.id), "link left after detach");
    assert_eq!(
        server.wait_for(blocked_port, hello_len),
        hello_len,
        "with the filter gone, the retransmitted hello is delivered"
    );
    drop((blocked, good, blocked2, good2));
}

#[test]
fn netfilter_attach_errors_are_clear_and_leave_nothing_behind() {
    if !require_kernel_or_skip("netfilter_attach_errors_are_clear_and_leave_nothing_behind") {
        return;
    }
    let mut lab = Lab::new();
    let (nf, xdp) = (lab.unique("enf"), lab.unique("exd"));
    let file = lab.sni_copy(&nf, &xdp);
    let file = file.to_str().unwrap();
    let (nf2, xdp2) = (lab.unique("fnf"), lab.unique("fxd"));
    let file2 = lab.sni_copy(&nf2, &xdp2);
    let file2 = file2.to_str().unwrap();
    let refused = |out: &Output, code: i32, needle: &str| {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "exit status; stderr: {err}");
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    };

    // Bad hook specs: usage errors naming what is wrong.
    for (spec, needle) in [
        ("ipv4:input:1", "bad netfilter hook `input`"),
        ("ipx:local_in:1", "bad netfilter family `ipx`"),
        ("ipv4:local_in:-2147483648", "bad netfilter priority"),
        ("ipv4:local_in", "expected FAMILY:HOOK:PRIORITY"),
    ] {
        refused(
            &lab.luabpf(&["attach", "--netfilter", spec, file, "--program", &nf]),
            2,
            needle,
        );
    }
    // An XDP program at netfilter, and a netfilter spec with an interface.
    refused(
        &lab.luabpf(&["attach", "--netfilter", "ipv4:local_in:5", file, "--program", &xdp]),
        2,
        &format!("program `{xdp}` (section `xdp`) is not a netfilter program"),
    );
    let xdp_only = workspace().join("examples/sni_filter.lua");
    refused(
        &lab.luabpf(&["attach", "--netfilter", "ipv4:local_in:5", xdp_only.to_str().unwrap()]),
        2,
        "the object holds no netfilter program",
    );
    refused(
        &lab.luabpf(&["attach", "nfs0", file, "--netfilter", "ipv4:local_in:5"]),
        2,
        "--netfilter takes no interface",
    );
    refused(
        &lab.luabpf(&["attach", file, "--program", &nf, "--mode", "skb"]),
        2,
        "--mode is an XDP attach mode",
    );
    refused(
        &lab.luabpf(&["attach", file, "--netfilter", "ipv4:local_in:5", "--mode", "skb"]),
        2,
        "cannot be used with",
    );
    assert!(!pins_of(&nf) && !pins_of(&xdp), "a refused attach left pins");

    // Two programs at one hook and priority: the kernel says EBUSY; the second leaves nothing.
    ok(&lab.luabpf(&["attach", "--netfilter", "ipv4:local_in:7", file, "--program", &nf]));
    refused(
        &lab.luabpf(&["attach", "--netfilter", "ipv4:local_in:7", file2, "--program", &nf2]),
        1,
        "EBUSY",
    );
    assert!(!pins_of(&nf2), "the refused attach left pins");
    // The same name at another priority: refused, the attachment untouched.
    refused(
        &lab.luabpf(&["attach", "--netfilter", "ipv4:local_in:8", file, "--program", &nf]),
        1,
        "a replacement keeps the hook and priority",
    );
    assert_eq!(pinned_link(&nf).hook.to_string(), "ipv4:local_in:7");
    // Another priority for the second program is fine; a replacement of the first next to it
    // (its bridge must skip priority 8) still ends at 7.
    ok(&lab.luabpf(&["attach", "--netfilter", "ipv4:local_in:6", file2, "--program", &nf2]));
    ok(&lab.luabpf(&["attach", "--netfilter", "ipv4:local_in:7", file, "--program", &nf]));
    assert_eq!(pinned_link(&nf).hook.to_string(), "ipv4:local_in:7");
    assert_eq!(pinned_link(&nf2).hook.to_string(), "ipv4:local_in:6");
    let ids = [pinned_link(&nf).id, pinned_link(&nf2).id];
    for p in [&nf, &nf2] {
        ok(&lab.luabpf(&["detach", p]));
        assert!(!pins_of(p));
    }
    let live = live_link_ids();
    assert!(ids.iter().all(|id| !live.contains(id)), "links left after detach");

    // A compiled object carries the hook of the program's options in its section name.
    let obj = lab.dir.join("sni.o");
    ok(&lab.luabpf(&["compile", file2, "-o", obj.to_str().unwrap()]));
    let out = ok(&lab.luabpf(&["attach", obj.to_str().unwrap(), "--program", &nf2]));
    assert!(out.contains("at netfilter ipv4:local_in:-100"), "{out}");
    assert_eq!(pinned_link(&nf2).hook.to_string(), "ipv4:local_in:-100");
    ok(&lab.luabpf(&["detach", &nf2]));
    assert!(!pins_of(&nf2));
}

#[test]
fn verify_and_run_pcap_hand_netfilter_programs_the_ip_packet() {
    if !require_kernel_or_skip("verify_and_run_pcap_hand_netfilter_programs_the_ip_packet") {
        return;
    }
    let example = workspace().join("examples/netfilter/sni_filter.lua");
    let pcap = workspace().join("tests/pcaps/sni.pcap");
    let run = |program: &str| {
        let out = Command::new(BIN)
            .args(["run", example.to_str().unwrap(), "--program", program, "--pcap"])
            .arg(&pcap)
            .args(["--map", &format!("blocklist:{EVIL}=0")])
            .env("NO_COLOR", "1")
            .output()
            .expect("run luabpf");
        ok(&out)
    };
    let verify = ok(&Command::new(BIN)
        .args(["verify", example.to_str().unwrap()])
        .output()
        .unwrap());
    assert!(
        verify.contains("sni_nf: verified") && verify.contains("sni_xdp: verified"),
        "{verify}"
    );
    let nf = run("sni_nf");
    let xdp = run("sni_xdp");
    // Packet by packet, the same decision: DROP (0) / ACCEPT (1) against DROP (1) / PASS (2).
    let nf_lines: Vec<&str> = nf.lines().filter(|l| !l.starts_with("summary")).collect();
    let xdp_lines: Vec<&str> = xdp.lines().filter(|l| !l.starts_with("summary")).collect();
    assert_eq!(nf_lines.len(), xdp_lines.len());
    for (n, x) in nf_lines.iter().zip(&xdp_lines) {
        // An IPv6 frame, which the ipv4 program never sees, and which the XDP one passes.
        let n = n.replace(
            "skipped: an ipv6 packet: an ipv4 netfilter program does not see it",
            "PASS (2)",
        );
        let n2 = n
            .replace("ACCEPT (1)", "PASS")
            .replace("DROP (0)", "DROP")
            .replace("PASS (2)", "PASS");
        let x2 = x.replace("PASS (2)", "PASS").replace("DROP (1)", "DROP");
        assert_eq!(n2, x2, "netfilter: {n}; XDP: {x}");
    }
    assert!(nf.contains("DROP (0)") && nf.contains("ACCEPT (1)"), "{nf}");
    // An IPv6 frame never reaches an ipv4 program: skipped, with the reason.
    let plain = ok(&Command::new(BIN)
        .args(["run", example.to_str().unwrap(), "--program", "sni_nf", "--pcap"])
        .arg(workspace().join("tests/pcaps/plain.pcap"))
        .output()
        .unwrap());
    assert!(
        plain.contains("skipped: an ipv6 packet: an ipv4 netfilter program does not see it"),
        "{plain}"
    );
}

/// Drops IPv4 UDP datagrams to port 9999 and counts them.
const UDP_DROP: &str = r#"
local netfilter = require "bpf.netfilter"
local map = require "bpf.map"
local verdict = require "linux.netfilter"
local bo = require "linux.byteorder"

local dropped = map.array("dropped", { key = "I4", value = "I8", entries = 1 })

return netfilter.program(function(ctx)
  local p = ctx:packet()
  if p:getbyte(9) ~= 17 then return verdict.ACCEPT end
  local udp = (p:getbyte(0) & 0x0f) * 4
  if bo.ntoh16(p:getuint16(udp + 2)) ~= 9999 then return verdict.ACCEPT end
  dropped[0] = (dropped[0] or 0) + 1
  return verdict.DROP
end, { name = "NAME", hook = "local_in", priority = -50 })
"#;

#[test]
fn replacing_twenty_times_under_traffic_lets_nothing_through() {
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    if !require_kernel_or_skip("replacing_twenty_times_under_traffic_lets_nothing_through") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("udp");
    lab.programs.push(name.clone());
    let lua = lab.dir.join("udp_drop.lua");
    std::fs::write(&lua, UDP_DROP.replace("\"NAME\"", &format!("\"{name}\""))).unwrap();
    let obj = lab.dir.join("udp_drop.o");
    ok(&lab.luabpf(&["compile", lua.to_str().unwrap(), "-o", obj.to_str().unwrap()]));
    let obj = obj.to_str().unwrap();
    ok(&lab.luabpf(&["attach", obj]));
    let dropped = |lab: &Lab| -> u64 {
        let dump = ok(&lab.luabpf(&["map", "dump", &name, "dropped"]));
        dump.lines()
            .find_map(|l| l.strip_prefix("0: "))
            .map_or(0, |v| v.trim().parse().unwrap())
    };

    let receiver = lab
        .server
        .run_inside(|| UdpSocket::bind((SERVER_IP, 9999)).expect("bind"));
    receiver.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let sender = lab.client.run_inside(|| UdpSocket::bind((CLIENT_IP, 0)).expect("bind"));
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if receiver.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let sending = Arc::new(AtomicBool::new(true));
    let tx = {
        let sending = sending.clone();
        std::thread::spawn(move || {
            let mut sent = 0usize;
            while sending.load(Ordering::Relaxed) {
                if sender.send_to(b"x", (SERVER_IP, 9999)).is_ok() {
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            sent
        })
    };

    // Traffic flows and is dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    while dropped(&lab) < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = dropped(&lab);
    assert!(before >= 50, "the stream is not reaching the filter ({before} dropped)");
    for i in 0..20 {
        let out = ok(&lab.luabpf(&["attach", obj]));
        assert!(
            out.contains("replaced") && out.contains("maps kept: dropped"),
            "replacement {i}: {out}"
        );
    }
    let after = dropped(&lab);
    assert!(after > before, "the replaced program keeps dropping into the kept map");
    assert_eq!(
        received.load(Ordering::Relaxed),
        0,
        "datagrams got through during the replacements"
    );
    let link = pinned_link(&name);
    let ours = netfilter::links()
        .unwrap()
        .into_iter()
        .filter(|l| l.prog_id == link.prog_id)
        .count();
    assert_eq!(ours, 1, "one link left after 20 replacements");

    // Without the filter the same stream arrives (the receiver works).
    ok(&lab.luabpf(&["detach", &name]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    sending.store(false, Ordering::Relaxed);
    let sent = tx.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    rx.join().unwrap();
    assert!(
        received.load(Ordering::Relaxed) > 0,
        "nothing arrived after detach ({sent} sent)"
    );
    assert!(!pins_of(&name));
}
