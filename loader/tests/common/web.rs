//! A tiny HTTP server for the cookie guard's end-to-end test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::lab::{ok, run_in, Lab, BIN, PATIENCE};
use super::sockets::contains;

/// A tiny HTTP server in the lab's namespace: port 8080 issues a cookie to each client and
/// writes it into the guard's `cookies` map with `luabpf map set`; port 80 (guarded) answers
/// `welcome`. It logs `(client, port, request line)` of each request it receives.
pub struct WebServer {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(Ipv4Addr, u16, String)>>>,
    thread: Option<JoinHandle<()>>,
}

/// The guard's map key for a client: its address as the program loads it from the packet (the
/// network bytes read in host order), in hex.
pub fn cookie_key(addr: Ipv4Addr) -> String {
    format!("{:#010x}", u32::from_ne_bytes(addr.octets()))
}

impl WebServer {
    pub fn start(lab: &Lab, program: &str) -> WebServer {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2, addr, program) = (stop.clone(), log.clone(), lab.inner_ip, program.to_string());
        let listeners = run_in(&lab.ns, move || {
            [80u16, 8080].map(|port| {
                let l = TcpListener::bind((addr, port)).expect("bind");
                l.set_nonblocking(true).unwrap();
                (port, l)
            })
        });
        let thread = std::thread::spawn(move || {
            let mut issued = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                for (port, l) in &listeners {
                    let Ok((conn, std::net::SocketAddr::V4(peer))) = l.accept() else {
                        continue;
                    };
                    let n = issued;
                    issued += 1;
                    let (log, program, port) = (log2.clone(), program.clone(), *port);
                    std::thread::spawn(move || WebServer::serve(conn, *peer.ip(), port, n, &program, &log));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        WebServer {
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn serve(
        mut conn: TcpStream,
        client: Ipv4Addr,
        port: u16,
        n: u64,
        program: &str,
        log: &Mutex<Vec<(Ipv4Addr, u16, String)>>,
    ) {
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(PATIENCE)).unwrap();
        let Some(request) = read_head(&mut conn) else { return };
        let line = request.lines().next().unwrap_or("").to_string();
        log.lock().unwrap().push((client, port, line));
        let response = if port == 8080 {
            let cookie = format!("c{n:04}{:08x}", u32::from(client).wrapping_mul(2_654_435_761));
            let set = std::process::Command::new(BIN)
                .args(["map", "set", program, "cookies", &cookie_key(client), &cookie])
                .output()
                .expect("run luabpf map set");
            ok(&set);
            format!("HTTP/1.1 200 OK\r\nSet-Cookie: bot={cookie}\r\nContent-Length: 0\r\n\r\n")
        } else {
            "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nwelcome\n".to_string()
        };
        let _ = conn.write_all(response.as_bytes());
    }

    pub fn requests_from(&self, client: Ipv4Addr, port: u16) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|(c, p, _)| *c == client && *p == port).count()
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An HTTP head (up to the blank line), or `None` if the peer stopped or timed out first.
pub fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    while !contains(&data, b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&data).into_owned())
}

/// A whole response with its `Content-Length` body.
pub fn read_response(conn: &mut TcpStream) -> Option<String> {
    let head = read_head(conn)?;
    let (h, body) = head.split_once("\r\n\r\n").unwrap();
    let len: usize = h
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = body.as_bytes().to_vec();
    while body.len() < len {
        let mut buf = [0u8; 256];
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    Some(format!("{h}\r\n\r\n{}", String::from_utf8_lossy(&body)))
}
