//! The context structures as a test run fills them: `struct xdp_md`, the `struct __sk_buff`
//! fields luabpf exposes, and `struct bpf_nf_ctx`'s two kernel pointers (runtime-bpf's
//! `progtypes` tables give the layouts; what they point to is in `netfilter`).

use super::exec::Run;
use super::value::{Ptr, Region, Value};
use super::{InterpError, LOOPBACK_IFINDEX};
use crate::progtypes::{CtxField, ProgType};

impl Run<'_> {
    fn ctx_field(&self, off: i64, size: usize) -> Result<&'static CtxField, InterpError> {
        let found = self.progtype.ctx_fields().iter().find(|f| {
            let start = f.offset as i64;
            off >= start && off + size as i64 <= start + f.size.bytes() as i64
        });
        match found {
            Some(f) => Ok(f),
            None => match other_field(self.progtype, off) {
                // A real field luabpf does not expose: the verifier accepts it, the
                // interpreter has no value for it.
                Some(name) => Err(InterpError::Unsupported(format!(
                    "instruction {}: accesses {}.{name} (offset {off}), a field luabpf does not expose",
                    self.pc,
                    self.progtype.ctx_struct()
                ))),
                None => self.fault(format!(
                    "{size}-byte context access at offset {off}, which is no field of {}",
                    self.progtype.ctx_struct()
                )),
            },
        }
    }

    /// A context load: packet pointers for `data`/`data_end`/`data_meta` (whole fields only),
    /// the little-endian bytes of other fields (narrow loads allowed, as the verifier does).
    pub fn ctx_load(&self, off: i64, size: usize) -> Result<Value, InterpError> {
        let f = self.ctx_field(off, size)?;
        let whole = off == f.offset as i64 && size == f.size.bytes() as usize;
        let pointer = |at: usize| -> Result<Value, InterpError> {
            if whole {
                Ok(Value::Ptr(Ptr::new(Region::Packet, at as i64)))
            } else {
                self.fault(format!("partial load of the context's `{}` pointer", f.name))
            }
        };
        let kernel_pointer = |region: Region| -> Result<Value, InterpError> {
            if whole {
                Ok(Value::Ptr(Ptr::new(region, 0)))
            } else {
                self.fault(format!("partial load of the context's `{}` pointer", f.name))
            }
        };
        let value: u64 = match (self.progtype, f.name) {
            (_, "data" | "data_meta") => return pointer(0),
            (_, "data_end") => return pointer(self.linear_len),
            (ProgType::Netfilter, "state") => return kernel_pointer(Region::NfState),
            (ProgType::Netfilter, "skb") => return kernel_pointer(Region::Skb),
            (ProgType::Xdp, "ingress_ifindex") => LOOPBACK_IFINDEX as u64,
            (ProgType::Xdp, "rx_queue_index") => 0,
            (ProgType::Tc, "len") => self.packet.len() as u64,
            (ProgType::Tc, "mark") => self.skb.mark as u64,
            (ProgType::Tc, "priority") => self.skb.priority as u64,
            (ProgType::Tc, "protocol") => eth_protocol(&self.packet) as u64,
            (ProgType::Tc, "ifindex") => LOOPBACK_IFINDEX as u64,
            (ProgType::Tc, "vlan_tci" | "hash") => 0,
            _ => {
                return self.fault(format!(
                    "reads the context's `{}`, which the verifier refuses for this program type \
                     or the interpreter does not emulate",
                    f.name
                ))
            }
        };
        let shift = (off - f.offset as i64) * 8;
        let bits = size * 8;
        let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
        Ok(Value::Scalar((value >> shift) & mask))
    }

    pub fn ctx_store(&mut self, off: i64, size: usize, x: u64) -> Result<(), InterpError> {
        let f = self.ctx_field(off, size)?;
        if !f.writable || off != f.offset as i64 || size != f.size.bytes() as usize {
            return self.fault(format!("writes the context's `{}`", f.name));
        }
        match f.name {
            "mark" => self.skb.mark = x as u32,
            "priority" => self.skb.priority = x as u32,
            other => return self.fault(format!("writes the context's `{other}`")),
        }
        Ok(())
    }
}

/// `skb->protocol` as `eth_type_trans` sets it, in network byte order (what a u32 load of
/// `__sk_buff.protocol` reads on a little-endian host): the EtherType when it is one (at
/// least 0x600), else 802.3 (raw IPX, payload starting 0xffff) or 802.2.
fn eth_protocol(packet: &[u8]) -> u16 {
    let ethertype = u16::from_be_bytes([packet[12], packet[13]]);
    let host = if ethertype >= 0x600 {
        ethertype
    } else if packet.get(14..16) == Some(&[0xff, 0xff]) {
        0x0001 // ETH_P_802_3
    } else {
        0x0004 // ETH_P_802_2
    };
    host.to_be()
}

/// The kernel's other fields at the start of `struct __sk_buff` (uapi/linux/bpf.h), for
/// naming an access luabpf's tables do not cover.
fn other_field(progtype: ProgType, off: i64) -> Option<&'static str> {
    const SK_BUFF_OTHERS: &[(i64, i64, &str)] = &[
        (4, 8, "pkt_type"),
        (12, 16, "queue_mapping"),
        (20, 24, "vlan_present"),
        (28, 32, "vlan_proto"),
        (36, 40, "ingress_ifindex"),
        (44, 48, "tc_index"),
        (48, 68, "cb"),
        (72, 76, "tc_classid"),
        (84, 88, "napi_id"),
    ];
    match progtype {
        ProgType::Tc => SK_BUFF_OTHERS
            .iter()
            .find(|(start, end, _)| (*start..*end).contains(&off))
            .map(|(_, _, name)| *name),
        _ => None,
    }
}
