//! A network lab for `luabpf attach` tests: two network namespaces joined by a veth pair, the
//! `luabpf` command run inside them, threads that enter them, and guards that remove
//! everything (namespaces, pins, state, the lab's files) also when a test fails.
//!
//! Traffic stays between the lab's namespaces: the test's own namespace (the host's) gets no
//! interface, address or route. Pins live in the host's /sys/fs/bpf, which every namespace
//! shares, so program names are made unique per lab ([`Lab::unique`]).
//!
//! `luabpf` runs inside a namespace through `nsenter --net=...`: `ip netns exec` would remount
//! /sys and hide the BPF filesystem.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_luabpf");
/// Upper bound on waiting for packets, counters and peers; reached only when a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);
static N: AtomicUsize = AtomicUsize::new(0);

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// The stdout of a command that must have succeeded; otherwise panics with its output.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether luabpf left pins or state for `name`.
pub fn pins_of(name: &str) -> bool {
    Path::new("/sys/fs/bpf/luabpf").join(name).exists() || Path::new("/run/luabpf").join(name).exists()
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit` (an upper bound
/// on waiting for the kernel, never a measurement).
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "gave up after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on a new thread that has entered the network namespace `ns` (setns(2) affects only
/// that thread; sockets it creates stay in `ns` wherever they are used afterwards).
pub fn spawn_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = Path::new("/run/netns").join(ns);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd; it affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
        f()
    })
}

/// [`spawn_in`], waiting for the result.
pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in(ns, f).join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Two namespaces joined by a veth pair: `inner` in `ns` (where the programs under test are
/// attached: the "server" side) and `outer` in `peer` (the "client" side).
pub struct Lab {
    /// The namespace with `inner`.
    pub ns: String,
    /// The namespace with `outer`.
    pub peer: String,
    pub inner: String,
    pub outer: String,
    pub inner_ip: Ipv4Addr,
    pub outer_ip: Ipv4Addr,
    /// A scratch directory, removed with the lab.
    pub dir: PathBuf,
    /// Programs detached and unpinned on drop.
    pub programs: Vec<String>,
    id: String,
}

impl Lab {
    pub fn new() -> Lab {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{}", std::process::id() % 100_000, n);
        let net = ((std::process::id() as usize * 7 + n) % 250 + 1) as u8;
        let lab = Lab {
            ns: format!("luabpf-t{id}"),
            peer: format!("luabpf-t{id}p"),
            inner: format!("lbi{id}"),
            outer: format!("lbo{id}"),
            outer_ip: Ipv4Addr::new(10, 213, net, 1),
            inner_ip: Ipv4Addr::new(10, 213, net, 2),
            dir: std::env::temp_dir().join(format!("luabpf-attach-{id}")),
            programs: Vec::new(),
            id,
        };
        std::fs::create_dir_all(&lab.dir).unwrap();
        ok(&ip(&["netns", "add", &lab.ns]));
        ok(&ip(&["netns", "add", &lab.peer]));
        ok(&ip(&[
            "-n", &lab.peer, "link", "add", &lab.outer, "type", "veth", "peer", "name", &lab.inner, "netns", &lab.ns,
        ]));
        for (ns, dev, addr) in [
            (&lab.ns, &lab.inner, lab.inner_ip),
            (&lab.peer, &lab.outer, lab.outer_ip),
        ] {
            ok(&ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]));
            ok(&ip(&["-n", ns, "link", "set", dev, "up"]));
            ok(&ip(&["-n", ns, "link", "set", "lo", "up"]));
        }
        lab
    }

    /// `luabpf ARGS` inside the lab's namespace.
    pub fn luabpf(&self, args: &[&str]) -> Output {
        self.luabpf_cmd(args).output().expect("run luabpf")
    }

    /// The command [`Lab::luabpf`] runs, to spawn or adjust.
    pub fn luabpf_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ns))
            .arg(BIN)
            .args(args)
            .env("NO_COLOR", "1");
        cmd
    }

    /// `ip -n NS ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        ok(&ip(&all))
    }

    /// A copy of an example with its program renamed to `new_name`, detached on drop.
    pub fn example_copy(&mut self, example: &str, old_name: &str, new_name: &str) -> PathBuf {
        let src = std::fs::read_to_string(workspace().join("examples").join(format!("{example}.lua"))).unwrap();
        let needle = format!("name = \"{old_name}\"");
        assert!(src.contains(&needle), "{example}.lua names its program {old_name}");
        self.write_program(new_name, &src.replace(&needle, &format!("name = \"{new_name}\"")))
    }

    /// Writes `source` as `<name>.lua` in the lab's directory; the program `name` is detached
    /// on drop.
    pub fn write_program(&mut self, name: &str, source: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.lua"));
        std::fs::write(&path, source).unwrap();
        self.own(name);
        path
    }

    /// Registers a program name to detach and unpin on drop.
    pub fn own(&mut self, name: &str) {
        if !self.programs.iter().any(|p| p == name) {
            self.programs.push(name.to_string());
        }
    }

    /// `base_<lab id>`: a program name no other lab uses.
    pub fn unique(&self, base: &str) -> String {
        format!("{base}_{}", self.id)
    }

    /// Sends `n` UDP datagrams from the peer namespace to the inner end.
    pub fn send_udp(&self, n: usize) {
        let (from, to) = (self.outer_ip, self.inner_ip);
        run_in(&self.peer, move || {
            let sock = std::net::UdpSocket::bind((from, 0)).unwrap();
            for _ in 0..n {
                sock.send_to(b"hello", (to, 9)).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }

    /// `ip -d link show` of the inner end.
    pub fn inner_link(&self) -> String {
        self.ip(&["-d", "link", "show", &self.inner])
    }

    pub fn xdp_attached(&self) -> bool {
        let out = self.inner_link();
        out.contains(" xdp") || out.contains("prog/xdp")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &self.programs {
            let _ = self.luabpf(&["detach", p]);
            let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf/luabpf").join(p));
            let _ = std::fs::remove_dir_all(Path::new("/run/luabpf").join(p));
        }
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["netns", "del", &self.peer]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
