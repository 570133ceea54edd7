//! Packet captures: reading classic pcap and pcapng files, writing classic pcap.
//!
//! [`read`] takes a whole file and returns its packets in file order:
//! - classic pcap, either byte order, microsecond (`a1b2c3d4`) or nanosecond (`a1b23c4d`)
//!   timestamps;
//! - pcapng, either byte order (per section): Section Header, Interface Description, Enhanced
//!   Packet, Simple Packet and the obsolete Packet blocks; every other block is skipped.
//!
//! Only Ethernet captures (link type 1, `DLT_EN10MB`) are accepted: another link type is an
//! error naming it. A truncated or foreign file is an error giving the byte offset (and the
//! packet number, counting from 1, where one was being read); the reader never panics.
//!
//! [`write`] produces a classic pcap file (little-endian, microsecond timestamps, Ethernet).

use std::fmt;

/// Ethernet (`LINKTYPE_ETHERNET`, `DLT_EN10MB`).
pub const LINKTYPE_ETHERNET: u32 = 1;

/// The snapshot length [`write`] declares, and the largest packet the reader accepts.
pub const MAX_PACKET: u32 = 262_144;

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;

/// The file format a capture was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic pcap; `nanos` when its timestamps are in nanoseconds.
    Pcap {
        nanos: bool,
        big_endian: bool,
    },
    Pcapng,
}

/// One captured packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The captured bytes (starting with the Ethernet header).
    pub data: Vec<u8>,
    /// The packet's length on the wire (at least `data.len()` in a well-formed file).
    pub orig_len: u32,
    /// Capture time in nanoseconds since the epoch (0 where the file has none).
    pub timestamp_ns: u64,
}

/// A whole capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    pub format: CaptureFormat,
    pub packets: Vec<Packet>,
}

/// Why a capture could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapError {
    /// The byte offset in the file where the problem is.
    pub offset: usize,
    /// The packet being read (1-based), if any.
    pub packet: Option<usize>,
    pub kind: PcapErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PcapErrorKind {
    /// The file does not start like a pcap or pcapng file.
    Foreign(String),
    /// The file ends in the middle of something.
    Truncated(String),
    /// A link type other than Ethernet.
    LinkType(u32),
    /// Something inside is inconsistent.
    Malformed(String),
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PcapErrorKind::Foreign(what) => write!(f, "not a pcap or pcapng file: {what}")?,
            PcapErrorKind::Truncated(what) => write!(f, "truncated capture: {what}")?,
            PcapErrorKind::LinkType(t) => write!(
                f,
                "link type {t} ({}) is not supported: only Ethernet captures (link type 1) can be run",
                linktype_name(*t)
            )?,
            PcapErrorKind::Malformed(what) => write!(f, "malformed capture: {what}")?,
        }
        write!(f, " (at byte offset {}", self.offset)?;
        if let Some(n) = self.packet {
            write!(f, ", packet {n}")?;
        }
        write!(f, ")")
    }
}

impl std::error::Error for PcapError {}

/// The usual name of a link type, for messages.
pub fn linktype_name(t: u32) -> &'static str {
    match t {
        0 => "NULL, BSD loopback",
        1 => "ETHERNET",
        6 => "IEEE802_5",
        9 => "PPP",
        12 | 101 => "RAW, bare IP",
        105 => "IEEE802_11",
        108 => "LOOP, OpenBSD loopback",
        113 => "LINUX_SLL, Linux cooked capture",
        127 => "IEEE802_11_RADIOTAP",
        147..=162 => "USER",
        220 => "USB_LINUX_MMAPPED",
        228 => "IPV4",
        229 => "IPV6",
        249 => "NETLINK",
        276 => "LINUX_SLL2, Linux cooked capture v2",
        _ => "unknown",
    }
}

/// Little- or big-endian reads over the file with offset-carrying truncation errors.
#[derive(Clone, Copy)]
struct Reader<'a> {
    bytes: &'a [u8],
    big: bool,
}

impl<'a> Reader<'a> {
    fn slice(&self, off: usize, len: usize, what: &str, packet: Option<usize>) -> Result<&'a [u8], PcapError> {
        match off.checked_add(len) {
            Some(end) if end <= self.bytes.len() => Ok(&self.bytes[off..end]),
            _ => Err(PcapError {
                offset: off,
                packet,
                kind: PcapErrorKind::Truncated(format!(
                    "{what} needs {len} bytes, the file has {} left",
                    self.bytes.len().saturating_sub(off)
                )),
            }),
        }
    }

    fn u32(&self, off: usize, what: &str, packet: Option<usize>) -> Result<u32, PcapError> {
        let b: [u8; 4] = self.slice(off, 4, what, packet)?.try_into().expect("4 bytes");
        Ok(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn u16(&self, off: usize, what: &str, packet: Option<usize>) -> Result<u16, PcapError> {
        let b: [u8; 2] = self.slice(off, 2, what, packet)?.try_into().expect("2 bytes");
        Ok(if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }
}

fn malformed(offset: usize, packet: Option<usize>, what: String) -> PcapError {
    PcapError {
        offset,
        packet,
        kind: PcapErrorKind::Malformed(what),
    }
}

/// Reads a classic pcap or pcapng file.
pub fn read(bytes: &[u8]) -> Result<Capture, PcapError> {
    if bytes.len() < 4 {
        let kind = if bytes.is_empty() {
            PcapErrorKind::Foreign("the file is empty".into())
        } else {
            PcapErrorKind::Truncated(format!(
                "the file is {} bytes, shorter than any capture header",
                bytes.len()
            ))
        };
        return Err(PcapError {
            offset: 0,
            packet: None,
            kind,
        });
    }
    let le = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    let be = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"));
    match (le, be) {
        (PCAP_MAGIC_US, _) => read_pcap(bytes, false, false),
        (PCAP_MAGIC_NS, _) => read_pcap(bytes, false, true),
        (_, PCAP_MAGIC_US) => read_pcap(bytes, true, false),
        (_, PCAP_MAGIC_NS) => read_pcap(bytes, true, true),
        (PCAPNG_SHB, _) => read_pcapng(bytes),
        _ => Err(PcapError {
            offset: 0,
            packet: None,
            kind: PcapErrorKind::Foreign(format!(
                "it starts with {}, neither a pcap magic number (a1b2c3d4, a1b23c4d) nor a \
                 pcapng section header (0a0d0d0a)",
                hex(&bytes[..4])
            )),
        }),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

fn read_pcap(bytes: &[u8], big: bool, nanos: bool) -> Result<Capture, PcapError> {
    let r = Reader { bytes, big };
    r.slice(0, 24, "the pcap file header", None)?;
    let major = r.u16(4, "the version", None)?;
    if major != 2 {
        return Err(malformed(4, None, format!("pcap version {major}, expected 2")));
    }
    // The low 16 bits are the link type; the upper ones may carry FCS information.
    let linktype = r.u32(20, "the link type", None)? & 0xffff;
    if linktype != LINKTYPE_ETHERNET {
        return Err(PcapError {
            offset: 20,
            packet: None,
            kind: PcapErrorKind::LinkType(linktype),
        });
    }
    let mut packets = Vec::new();
    let mut off = 24;
    while off < bytes.len() {
        let n = Some(packets.len() + 1);
        r.slice(off, 16, "the packet record header", n)?;
        let sec = r.u32(off, "", n)? as u64;
        let frac = r.u32(off + 4, "", n)? as u64;
        let incl = r.u32(off + 8, "", n)?;
        let orig = r.u32(off + 12, "", n)?;
        if incl > MAX_PACKET {
            return Err(malformed(
                off + 8,
                n,
                format!("a captured length of {incl} bytes (at most {MAX_PACKET} are accepted)"),
            ));
        }
        let data = r.slice(off + 16, incl as usize, "the packet data", n)?;
        let timestamp_ns = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        packets.push(Packet {
            data: data.to_vec(),
            orig_len: orig,
            timestamp_ns,
        });
        off += 16 + incl as usize;
    }
    Ok(Capture {
        format: CaptureFormat::Pcap { nanos, big_endian: big },
        packets,
    })
}

/// An interface of a pcapng section.
struct Interface {
    linktype: u32,
    snaplen: u32,
    /// Timestamp units per second.
    units_per_sec: u128,
}

fn read_pcapng(bytes: &[u8]) -> Result<Capture, PcapError> {
    let mut r = Reader { bytes, big: false };
    let mut packets = Vec::new();
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut seen_shb = false;
    let mut off = 0;
    while off < bytes.len() {
        let next = Some(packets.len() + 1);
        r.slice(off, 8, "the block header", None)?;
        let raw_type = u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4 bytes"));
        if raw_type == PCAPNG_SHB {
            // The byte order of a section is in its header's byte-order magic.
            r.slice(off + 8, 4, "the section header's byte-order magic", None)?;
            let bom = &bytes[off + 8..off + 12];
            r.big = match (
                u32::from_le_bytes(bom.try_into().expect("4 bytes")),
                u32::from_be_bytes(bom.try_into().expect("4 bytes")),
            ) {
                (PCAPNG_BOM, _) => false,
                (_, PCAPNG_BOM) => true,
                _ => {
                    return Err(malformed(
                        off + 8,
                        None,
                        format!("section header byte-order magic {}, expected 1a2b3c4d", hex(bom)),
                    ))
                }
            };
            interfaces.clear();
            seen_shb = true;
        } else if !seen_shb {
            return Err(PcapError {
                offset: 0,
                packet: None,
                kind: PcapErrorKind::Foreign("a pcapng file must start with a section header".into()),
            });
        }
        let block_type = r.u32(off, "the block type", None)?;
        let len = r.u32(off + 4, "the block length", None)? as usize;
        if len < 12 || !len.is_multiple_of(4) {
            return Err(malformed(
                off + 4,
                None,
                format!("block length {len} (a multiple of 4, at least 12)"),
            ));
        }
        let is_packet = matches!(block_type, PCAPNG_EPB | PCAPNG_SPB | PCAPNG_PB);
        let pn = if is_packet { next } else { None };
        r.slice(off, len, &format!("the block of type {block_type:#x}"), pn)?;
        let trailer = r.u32(off + len - 4, "the block's trailing length", pn)? as usize;
        if trailer != len {
            return Err(malformed(
                off + len - 4,
                pn,
                format!("the block's trailing length {trailer} differs from its leading length {len}"),
            ));
        }
        let body = off + 8;
        let body_end = off + len - 4;
        let need = |n: usize, what: &str| -> Result<(), PcapError> {
            if body + n > body_end {
                Err(malformed(
                    off,
                    pn,
                    format!("a {what} block of {len} bytes is too short for its fields"),
                ))
            } else {
                Ok(())
            }
        };
        match block_type {
            PCAPNG_SHB => {
                need(16, "section header")?;
                let major = r.u16(body + 4, "", None)?;
                if major != 1 {
                    return Err(malformed(body + 4, None, format!("pcapng version {major}, expected 1")));
                }
            }
            PCAPNG_IDB => {
                need(8, "interface description")?;
                let linktype = r.u16(body, "", None)? as u32;
                let snaplen = r.u32(body + 4, "", None)?;
                let units_per_sec = tsresol(&r, body + 8, body_end);
                interfaces.push(Interface {
                    linktype,
                    snaplen,
                    units_per_sec,
                });
            }
            PCAPNG_EPB | PCAPNG_PB => {
                need(20, "packet")?;
                let iface = if block_type == PCAPNG_EPB {
                    r.u32(body, "", pn)? as usize
                } else {
                    r.u16(body, "", pn)? as usize
                };
                let hi = r.u32(body + 4, "", pn)? as u128;
                let lo = r.u32(body + 8, "", pn)? as u128;
                let cap = r.u32(body + 12, "", pn)? as usize;
                let orig = r.u32(body + 16, "", pn)?;
                let i = interface(&interfaces, iface, body, pn)?;
                if body + 20 + cap > body_end {
                    return Err(malformed(
                        body + 12,
                        pn,
                        format!("a captured length of {cap} bytes overruns its {len}-byte block"),
                    ));
                }
                let ts = (hi << 32) | lo;
                let timestamp_ns = (ts * 1_000_000_000 / i.units_per_sec.max(1)) as u64;
                packets.push(Packet {
                    data: bytes[body + 20..body + 20 + cap].to_vec(),
                    orig_len: orig,
                    timestamp_ns,
                });
            }
            PCAPNG_SPB => {
                need(4, "simple packet")?;
                let orig = r.u32(body, "", pn)?;
                let i = interface(&interfaces, 0, body, pn)?;
                let mut cap = orig as usize;
                if i.snaplen != 0 {
                    cap = cap.min(i.snaplen as usize);
                }
                cap = cap.min(body_end - body - 4);
                packets.push(Packet {
                    data: bytes[body + 4..body + 4 + cap].to_vec(),
                    orig_len: orig,
                    timestamp_ns: 0,
                });
            }
            _ => {} // name resolution, statistics, custom blocks...: not needed
        }
        if let Some(p) = packets.last() {
            if p.data.len() > MAX_PACKET as usize {
                return Err(malformed(
                    off,
                    pn,
                    format!(
                        "a captured length of {} bytes (at most {MAX_PACKET} are accepted)",
                        p.data.len()
                    ),
                ));
            }
        }
        off += len;
    }
    Ok(Capture {
        format: CaptureFormat::Pcapng,
        packets,
    })
}

fn interface(
    interfaces: &[Interface],
    index: usize,
    offset: usize,
    packet: Option<usize>,
) -> Result<&Interface, PcapError> {
    let i = interfaces.get(index).ok_or_else(|| {
        malformed(
            offset,
            packet,
            format!(
                "the packet names interface {index}, the section describes {}",
                interfaces.len()
            ),
        )
    })?;
    if i.linktype != LINKTYPE_ETHERNET {
        return Err(PcapError {
            offset,
            packet,
            kind: PcapErrorKind::LinkType(i.linktype),
        });
    }
    Ok(i)
}

/// The `if_tsresol` option of an interface description (options from `off` to `end`), as
/// units per second; microseconds by default. Malformed options are ignored.
fn tsresol(r: &Reader<'_>, mut off: usize, end: usize) -> u128 {
    let mut units = 1_000_000u128;
    while off + 4 <= end {
        let (Ok(code), Ok(len)) = (r.u16(off, "", None), r.u16(off + 2, "", None)) else {
            break;
        };
        let len = len as usize;
        if code == 0 || off + 4 + len > end {
            break;
        }
        if code == 9 && len >= 1 {
            let v = r.bytes[off + 4];
            let exp = (v & 0x7f) as u32;
            units = if v & 0x80 == 0 {
                10u128.checked_pow(exp.min(30)).unwrap_or(1)
            } else {
                1u128.checked_shl(exp.min(100)).unwrap_or(1)
            };
        }
        off += 4 + len.div_ceil(4) * 4;
    }
    units
}

/// Writes a classic pcap file (little-endian, microsecond timestamps, Ethernet) holding
/// `packets`, each with its timestamp; the original length is the captured length.
pub fn write<'p>(packets: impl IntoIterator<Item = (&'p [u8], u64)>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&PCAP_MAGIC_US.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&MAX_PACKET.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for (data, ts_ns) in packets {
        let len = data.len() as u32;
        out.extend_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(((ts_ns % 1_000_000_000) / 1000) as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// Writes a pcapng file (one section, one Ethernet interface with nanosecond timestamps, an
/// Enhanced Packet Block per packet) in the given byte order: for tests and tools.
pub fn write_pcapng<'p>(packets: impl IntoIterator<Item = (&'p [u8], u64)>, big_endian: bool) -> Vec<u8> {
    let u32b = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let u16b = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut out = Vec::new();
    let block = |out: &mut Vec<u8>, ty: u32, body: &[u8]| {
        let len = 12 + body.len().div_ceil(4) * 4;
        out.extend_from_slice(&u32b(ty));
        out.extend_from_slice(&u32b(len as u32));
        out.extend_from_slice(body);
        out.resize(out.len() + (len - 12 - body.len()), 0);
        out.extend_from_slice(&u32b(len as u32));
    };
    let mut shb = Vec::new();
    shb.extend_from_slice(&u32b(PCAPNG_BOM));
    shb.extend_from_slice(&u16b(1));
    shb.extend_from_slice(&u16b(0));
    shb.extend_from_slice(&[0xff; 8]); // section length: unknown
    block(&mut out, PCAPNG_SHB, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&u16b(LINKTYPE_ETHERNET as u16));
    idb.extend_from_slice(&u16b(0));
    idb.extend_from_slice(&u32b(MAX_PACKET));
    idb.extend_from_slice(&u16b(9)); // if_tsresol
    idb.extend_from_slice(&u16b(1));
    idb.extend_from_slice(&[9, 0, 0, 0]); // 10^-9, padded
    idb.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
    block(&mut out, PCAPNG_IDB, &idb);
    // An unknown (custom) block, which readers must skip.
    block(&mut out, 0x0000_0bad, &[1, 2, 3, 4, 5, 6, 7, 8]);
    for (data, ts) in packets {
        let mut epb = Vec::new();
        epb.extend_from_slice(&u32b(0));
        epb.extend_from_slice(&u32b((ts >> 32) as u32));
        epb.extend_from_slice(&u32b(ts as u32));
        epb.extend_from_slice(&u32b(data.len() as u32));
        epb.extend_from_slice(&u32b(data.len() as u32));
        epb.extend_from_slice(data);
        block(&mut out, PCAPNG_EPB, &epb);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Vec<u8>> {
        vec![
            (0..60u8).collect(),
            vec![0xaa; 14],
            vec![1, 2, 3],
            (0..=255u8).cycle().take(1500).collect(),
        ]
    }

    fn with_ts(f: &[Vec<u8>]) -> Vec<(&[u8], u64)> {
        f.iter()
            .enumerate()
            .map(|(i, d)| (d.as_slice(), 1_700_000_000_000_000_000 + i as u64 * 1000))
            .collect()
    }

    fn datas(c: &Capture) -> Vec<Vec<u8>> {
        c.packets.iter().map(|p| p.data.clone()).collect()
    }

    /// A classic pcap file by hand, in either byte order and timestamp unit.
    fn classic(big: bool, nanos: bool, linktype: u32, packets: &[Vec<u8>]) -> Vec<u8> {
        let u32b = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let u16b = |v: u16| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut out = Vec::new();
        out.extend_from_slice(&u32b(if nanos { PCAP_MAGIC_NS } else { PCAP_MAGIC_US }));
        out.extend_from_slice(&u16b(2));
        out.extend_from_slice(&u16b(4));
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&u32b(65535));
        out.extend_from_slice(&u32b(linktype));
        for (i, p) in packets.iter().enumerate() {
            out.extend_from_slice(&u32b(1000 + i as u32));
            out.extend_from_slice(&u32b(7));
            out.extend_from_slice(&u32b(p.len() as u32));
            out.extend_from_slice(&u32b(p.len() as u32 + 4));
            out.extend_from_slice(p);
        }
        out
    }

    #[test]
    fn classic_both_orders_and_units() {
        let f = frames();
        for big in [false, true] {
            for nanos in [false, true] {
                let c = read(&classic(big, nanos, 1, &f)).unwrap();
                assert_eq!(c.format, CaptureFormat::Pcap { nanos, big_endian: big });
                assert_eq!(datas(&c), f);
                assert_eq!(c.packets[1].orig_len, 18);
                let want = 1001 * 1_000_000_000 + if nanos { 7 } else { 7000 };
                assert_eq!(c.packets[1].timestamp_ns, want);
            }
        }
    }

    #[test]
    fn writer_round_trips() {
        let f = frames();
        let bytes = write(with_ts(&f));
        let c = read(&bytes).unwrap();
        assert_eq!(datas(&c), f);
        assert_eq!(c.packets[2].timestamp_ns, 1_700_000_000_000_002_000);
        assert!(read(&write(std::iter::empty())).unwrap().packets.is_empty());
    }

    #[test]
    fn pcapng_both_orders() {
        let f = frames();
        for big in [false, true] {
            let c = read(&write_pcapng(with_ts(&f), big)).unwrap();
            assert_eq!(c.format, CaptureFormat::Pcapng);
            assert_eq!(datas(&c), f);
            assert_eq!(c.packets[3].timestamp_ns, 1_700_000_000_000_003_000);
        }
    }

    #[test]
    fn pcapng_simple_packets_and_sections() {
        // A hand-built SPB after the writer's IDB, then a second (big-endian) section.
        let mut bytes = write_pcapng([(&[9u8; 20][..], 5)], false);
        let mut spb = Vec::new();
        spb.extend_from_slice(&PCAPNG_SPB.to_le_bytes());
        spb.extend_from_slice(&36u32.to_le_bytes());
        spb.extend_from_slice(&18u32.to_le_bytes()); // original length
        spb.extend_from_slice(&[7u8; 18]);
        spb.extend_from_slice(&[0, 0]); // padding
        spb.extend_from_slice(&36u32.to_le_bytes());
        bytes.extend_from_slice(&spb);
        bytes.extend_from_slice(&write_pcapng([(&[3u8; 16][..], 0)], true));
        let c = read(&bytes).unwrap();
        assert_eq!(datas(&c), vec![vec![9u8; 20], vec![7u8; 18], vec![3u8; 16]]);
        assert_eq!(c.packets[0].timestamp_ns, 5);
    }

    #[test]
    fn other_link_types_are_named() {
        let e = read(&classic(false, false, 113, &frames())).unwrap_err();
        assert_eq!(e.kind, PcapErrorKind::LinkType(113));
        let text = e.to_string();
        assert!(text.contains("link type 113 (LINUX_SLL"), "{text}");
        // pcapng: the IDB's link type, reported at the first packet on it.
        let mut ng = write_pcapng(with_ts(&frames()), false);
        // SHB is 28 bytes; the IDB's link type is right after its 8-byte header.
        ng[28 + 8] = 101;
        let e = read(&ng).unwrap_err();
        assert_eq!(e.kind, PcapErrorKind::LinkType(101));
        assert_eq!(e.packet, Some(1));
    }

    #[test]
    fn foreign_files() {
        for bytes in [
            &b""[..],
            b"GET / HTTP/1.1\r\n",
            b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0",
        ] {
            let e = read(bytes).unwrap_err();
            assert!(matches!(e.kind, PcapErrorKind::Foreign(_)), "{e}");
            assert!(e.to_string().contains("not a pcap or pcapng file"), "{e}");
        }
    }

    #[test]
    fn every_truncation_is_an_error_with_an_offset() {
        let f = frames();
        let files = [
            classic(false, false, 1, &f),
            classic(true, true, 1, &f),
            write_pcapng(with_ts(&f), false),
            write_pcapng(with_ts(&f), true),
        ];
        for file in &files {
            for cut in 1..file.len() {
                let Err(e) = read(&file[..cut]) else {
                    // A cut exactly at a record boundary is a shorter, valid file.
                    let c = read(&file[..cut]).unwrap();
                    assert!(c.packets.len() < f.len());
                    continue;
                };
                let text = e.to_string();
                assert!(text.contains("byte offset"), "{text}");
                assert!(e.offset <= cut, "offset {} past the cut {cut}: {text}", e.offset);
            }
        }
        // The packet number is reported for a cut inside a packet.
        let file = &files[0];
        let e = read(&file[..file.len() - 10]).unwrap_err();
        assert_eq!(e.packet, Some(4), "{e}");
        assert!(e.to_string().contains("packet 4"), "{e}");
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift: deterministic.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let f = frames();
        let seeds = [
            classic(false, false, 1, &f),
            classic(true, false, 1, &f),
            write_pcapng(with_ts(&f), false),
            write_pcapng(with_ts(&f), true),
        ];
        for i in 0..4000 {
            let mut bytes = seeds[i % seeds.len()].clone();
            let n = 1 + rnd() % 8;
            for _ in 0..n {
                let at = (rnd() as usize) % bytes.len();
                bytes[at] = rnd() as u8;
            }
            if rnd() % 3 == 0 {
                let cut = (rnd() as usize) % bytes.len();
                bytes.truncate(cut);
            }
            let _ = read(&bytes).map_err(|e| e.to_string());
        }
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            let _ = read(&bytes).map_err(|e| e.to_string());
            // The same after each magic number.
            for magic in [PCAP_MAGIC_US, PCAP_MAGIC_NS, PCAPNG_SHB] {
                let mut b = magic.to_le_bytes().to_vec();
                b.extend_from_slice(&bytes);
                let _ = read(&b).map_err(|e| e.to_string());
                if magic == PCAPNG_SHB && b.len() >= 12 {
                    b[8..12].copy_from_slice(&PCAPNG_BOM.to_le_bytes());
                    let _ = read(&b).map_err(|e| e.to_string());
                }
            }
        }
    }
}
