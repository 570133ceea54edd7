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
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_luabpf");
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

/// A TCP connection from `src` (an address of the calling thread's namespace) to `dst`;
/// `timeout` bounds the handshake.
pub fn tcp_connect_from(src: Ipv4Addr, dst: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // A blocking connect(2) gives up after SO_SNDTIMEO.
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv)?;
    let sin = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sin(SocketAddrV4::new(src, 0));
    // SAFETY: `local` is a valid sockaddr_in of `len` bytes.
    if unsafe { libc::bind(fd.as_raw_fd(), &local as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let remote = sin(dst);
    // SAFETY: as above.
    if unsafe { libc::connect(fd.as_raw_fd(), &remote as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpStream::from(fd))
}

pub fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is readable for size_of::<T>() bytes.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An AF_PACKET socket bound to one interface of the calling thread's namespace: sends whole
/// Ethernet frames, receives every frame the interface receives (taps run after XDP and tc
/// ingress, so they see exactly what those programs let through).
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

const ETH_P_ALL: u16 = 0x0003;
const PACKET_OUTGOING: u8 = 4;

impl PacketSocket {
    pub fn new(interface: &str) -> PacketSocket {
        let name = std::ffi::CString::new(interface).unwrap();
        // SAFETY: `name` is NUL-terminated.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        assert!(ifindex > 0, "no interface {interface} here");
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                ETH_P_ALL.to_be() as i32,
            )
        };
        assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: `fd` is a fresh socket nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a valid sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind AF_PACKET to {interface}: {}", io::Error::last_os_error());
        PacketSocket { fd, ifindex }
    }

    /// Sends one frame out of the interface (through its tc egress hook and qdisc).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `sll` are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Bounds how long [`PacketSocket::recv`] blocks.
    pub fn set_timeout(&self, t: Duration) {
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        };
        setsockopt(&self.fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv).unwrap();
    }

    /// The next frame the interface received (frames it sent are skipped); `None` on timeout.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        loop {
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` and `sll` are writable for the lengths given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut sll as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return None,
                    io::ErrorKind::Interrupted => continue,
                    _ => panic!("recvfrom AF_PACKET: {e}"),
                }
            }
            if sll.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            return Some(buf[..n as usize].to_vec());
        }
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
