//! rust-embed in the kernel: run against a veth pair in a namespace of its own, it drops a TLS
//! ClientHello for the name it was told to block and lets one for another name through.
//!
//! Both ends of the veth pair live in the test's namespace: rust-embed attaches at XDP on
//! `emA`; the test sends raw frames on `emB` and watches `emA` with a packet socket, which
//! sees what XDP passed and not what it dropped. The blocked name's hit counter, printed by
//! rust-embed when it exits, confirms the drop.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};

use luabpf_tests::harness::{kernel_or_skip, NetNs};
use luabpf_tests::packets::tls_frame;

/// The running rust-embed, killed on drop if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const ETH_P_ALL: u16 = 0x0003;

/// A packet socket bound to `interface` (in the calling thread's namespace).
fn packet_socket(interface: &str) -> OwnedFd {
    // SAFETY: plain socket calls; the fd is owned by the returned value.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (ETH_P_ALL.to_be()) as i32);
        assert!(fd >= 0, "socket(AF_PACKET): {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let name = std::ffi::CString::new(interface).unwrap();
        let index = libc::if_nametoindex(name.as_ptr());
        assert!(index != 0, "no interface {interface}");
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = index as i32;
        let rc = libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(rc, 0, "bind to {interface}: {}", std::io::Error::last_os_error());
        // Only so that a lost frame fails the test instead of hanging it: nothing is asserted
        // about time.
        let timeout = libc::timeval { tv_sec: 20, tv_usec: 0 };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        fd
    }
}

fn send(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: `frame` is valid for its length.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr() as *const libc::c_void, frame.len(), 0) };
    assert_eq!(n, frame.len() as isize, "send: {}", std::io::Error::last_os_error());
}

/// Receives frames until one equal to `wanted`; returns the ClientHello frames seen before it.
fn receive_until(fd: &OwnedFd, wanted: &[u8], others: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        assert!(
            n >= 0,
            "the passed frame never arrived on emA: {}",
            std::io::Error::last_os_error()
        );
        let frame = &buf[..n as usize];
        if frame == wanted {
            return seen;
        }
        if others.contains(&frame) {
            seen.push(frame.to_vec());
        }
    }
}

#[test]
fn drops_the_blocked_client_hello_and_passes_another() {
    if !kernel_or_skip() {
        return;
    }
    let ns = NetNs::new("embed");
    ns.ip(&["link", "add", "emA", "type", "veth", "peer", "name", "emB"]);
    ns.ip(&["link", "set", "emA", "up"]);
    ns.ip(&["link", "set", "emB", "up"]);

    let netns = format!("--net={}", ns.path().display());
    let child = Command::new("nsenter")
        .args([
            netns.as_str(),
            env!("CARGO_BIN_EXE_rust-embed"),
            "emA",
            "--block",
            "evil.example",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsenter runs");
    let mut running = Running(child);
    let mut stdout = BufReader::new(running.0.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    if !first.starts_with("attached") {
        let mut err = String::new();
        let _ = running.0.stderr.take().unwrap().read_to_string(&mut err);
        panic!("rust-embed did not attach: {first}{err}");
    }
    assert!(first.starts_with("attached sni_filter to emA (XDP, "), "{first}");

    let blocked = tls_frame("evil.example");
    let allowed = tls_frame("good.example");
    let seen = ns.run_inside({
        let (blocked, allowed) = (blocked.clone(), allowed.clone());
        move || {
            let rx = packet_socket("emA");
            let tx = packet_socket("emB");
            send(&tx, &blocked);
            send(&tx, &allowed);
            receive_until(&rx, &allowed, &[&blocked])
        }
    });
    // The two frames travel the same queue in order: had the blocked one passed, it would
    // have arrived before the allowed one.
    assert!(seen.is_empty(), "the ClientHello for evil.example passed XDP");

    // SAFETY: signalling our own child.
    unsafe { libc::kill(running.0.id() as i32, libc::SIGTERM) };
    let status = running.0.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "rust-embed exited with {status}:\n{rest}");
    assert!(rest.contains(&format!("signal {}: detached", libc::SIGTERM)), "{rest}");
    assert!(rest.contains("dropped 1 packet(s) for evil.example"), "{rest}");
}
