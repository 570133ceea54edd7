//! Realistic test packets, built byte by byte: Ethernet, IPv4 (with options), TCP, UDP,
//! TLS ClientHellos with SNI, HTTP requests.

/// Ethernet + IPv4 + TCP with `payload`. `ip_options` must be a multiple of 4 bytes.
pub fn tcp_packet(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, ip_options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&1u32.to_be_bytes()); // seq
    tcp.extend_from_slice(&0u32.to_be_bytes()); // ack
    tcp.push(5 << 4); // data offset 5 words
    tcp.push(0x18); // PSH, ACK
    tcp.extend_from_slice(&64240u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    tcp.extend_from_slice(payload);
    ipv4_packet(src, dst, 6, ip_options, &tcp)
}

pub fn udp_packet(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    ipv4_packet(src, dst, 17, &[], &udp)
}

pub fn ipv4_packet(src: [u8; 4], dst: [u8; 4], proto: u8, options: &[u8], l4: &[u8]) -> Vec<u8> {
    assert!(options.len() % 4 == 0 && options.len() <= 40);
    let ihl = 5 + options.len() / 4;
    let mut ip = Vec::new();
    ip.push(0x40 | ihl as u8);
    ip.push(0);
    ip.extend_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0x00]); // id, DF
    ip.push(64);
    ip.push(proto);
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(options);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(l4);
    ethernet(0x0800, &ip)
}

pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    p.extend_from_slice(&ethertype.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 frame (for "not IPv4" cases).
pub fn ipv6_frame() -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    ip.extend_from_slice(&[0; 32]);
    ip.extend_from_slice(&[0, 53, 0, 53, 0, 8, 0, 0]);
    ethernet(0x86dd, &ip)
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            (c[0] as u16) << 8
        };
        sum += w as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TLS 1.3 ClientHello record carrying `sni` as the `sni_position`-th of `n_ext` extensions.
pub fn client_hello(sni: &str, n_ext: usize, sni_position: usize) -> Vec<u8> {
    let mut exts = Vec::new();
    for i in 0..n_ext {
        if i == sni_position {
            let name = sni.as_bytes();
            let mut body = Vec::new();
            body.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes()); // list length
            body.push(0); // host_name
            body.extend_from_slice(&(name.len() as u16).to_be_bytes());
            body.extend_from_slice(name);
            exts.extend_from_slice(&0u16.to_be_bytes());
            exts.extend_from_slice(&(body.len() as u16).to_be_bytes());
            exts.extend_from_slice(&body);
        } else {
            // Assorted other extensions: supported_groups, ALPN-like filler, ...
            let ty = [10u16, 11, 13, 16, 23, 35, 43, 45, 51, 5, 18, 27][i % 12];
            let len = 2 + (i * 7) % 20;
            exts.extend_from_slice(&ty.to_be_bytes());
            exts.extend_from_slice(&(len as u16).to_be_bytes());
            exts.extend((0..len).map(|k| (k * 31 + i) as u8));
        }
    }
    let mut hello = Vec::new();
    hello.extend_from_slice(&[0x03, 0x03]); // legacy version
    hello.extend((0..32).map(|i| i as u8)); // random
    hello.push(32); // session id
    hello.extend((0..32).map(|i| (0xa0 + i) as u8));
    let suites: [u16; 8] = [0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9];
    hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        hello.extend_from_slice(&s.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression: null
    hello.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    hello.extend_from_slice(&exts);
    let mut hs = vec![1u8]; // ClientHello
    let l = hello.len() as u32;
    hs.extend_from_slice(&l.to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut rec = vec![22u8, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// A frame from 10.0.0.1:40000 to 10.0.0.2:443 carrying a ClientHello for `sni`.
pub fn tls_frame(sni: &str) -> Vec<u8> {
    tcp_packet([10, 0, 0, 1], [10, 0, 0, 2], 40000, 443, &[], &client_hello(sni, 12, 5))
}

/// An HTTP GET with 8 header lines; `ua` is the 7th.
pub fn http_request(ua: &str, cookie: Option<&str>) -> Vec<u8> {
    let mut s = String::from("GET /index.html HTTP/1.1\r\n");
    s.push_str("Host: www.example\r\n");
    s.push_str("Accept: text/html,application/xhtml+xml\r\n");
    s.push_str("Accept-Language: en-US,en;q=0.5\r\n");
    s.push_str("Accept-Encoding: gzip, deflate\r\n");
    s.push_str("Connection: keep-alive\r\n");
    if let Some(c) = cookie {
        s.push_str(&format!("Cookie: bot={c}\r\n"));
    } else {
        s.push_str("Upgrade-Insecure-Requests: 1\r\n");
    }
    s.push_str(&format!("User-Agent: {ua}\r\n"));
    s.push_str("Cache-Control: max-age=0\r\n\r\n");
    s.into_bytes()
}

pub fn http_frame(src: [u8; 4], ua: &str, cookie: Option<&str>) -> Vec<u8> {
    tcp_packet(src, [10, 0, 0, 2], 40000, 80, &[], &http_request(ua, cookie))
}
