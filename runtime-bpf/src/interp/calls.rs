//! The kernel helpers luabpf emits, emulated with the kernel's argument checks and return
//! values (negative errno on failure).

use super::exec::Run;
use super::maps::{EFAULT, EINVAL};
use super::value::{Ptr, Region, Value};
use super::InterpError;
use crate::helpers::{self as h, helper_name};
use crate::object::MapKind;
use crate::progtypes::ProgType;

/// `bpf_xdp_load_bytes`/`store_bytes` refuse offsets and lengths above this.
const XDP_MAX_OFF: u64 = 0xffff;
/// No buffer a program can pass is larger (the largest is an XDP packet's linear part).
const MAX_HELPER_LEN: u64 = 1 << 16;

impl Run<'_> {
    pub fn call_helper(&mut self, id: i32) -> Result<Value, InterpError> {
        let ret: i64 = match id {
            h::MAP_LOOKUP_ELEM => return self.map_lookup(),
            h::MAP_UPDATE_ELEM => {
                let (map, key) = self.map_and_key()?;
                let size = self.machine.maps[map].value_size;
                let value = self.read_bytes(self.ptr_arg(3)?, size)?;
                let flags = self.scalar(4)?;
                errno(self.machine.maps[map].update(&key, &value, flags))
            }
            h::MAP_DELETE_ELEM => {
                let (map, key) = self.map_and_key()?;
                errno(self.machine.maps[map].delete(&key))
            }
            h::KTIME_GET_NS | h::KTIME_GET_BOOT_NS => self.machine.ktime() as i64,
            h::GET_PRANDOM_U32 => self.machine.next_random() as i64,
            h::GET_SMP_PROCESSOR_ID => 0,
            h::TRACE_PRINTK => self.trace_printk()?,
            h::DYNPTR_READ => self.dynptr_read()?,
            h::XDP_LOAD_BYTES | h::XDP_STORE_BYTES if self.progtype == ProgType::Xdp => {
                self.xdp_bytes(id == h::XDP_STORE_BYTES)?
            }
            h::SKB_LOAD_BYTES | h::SKB_STORE_BYTES if self.progtype == ProgType::Tc => {
                self.skb_bytes(id == h::SKB_STORE_BYTES)?
            }
            _ => {
                return Err(InterpError::Unsupported(format!(
                    "helper {} (id {id}) for {} programs, at instruction {}",
                    helper_name(id).unwrap_or("unknown"),
                    self.progtype.ctx_struct(),
                    self.pc
                )))
            }
        };
        Ok(Value::Scalar(ret as u64))
    }

    fn ptr_arg(&self, r: u8) -> Result<Ptr, InterpError> {
        match self.reg(r)? {
            Value::Ptr(p) => Ok(p),
            _ => self.fault(format!("helper argument r{r} is a number where a pointer is needed")),
        }
    }

    fn map_arg(&self) -> Result<usize, InterpError> {
        match self.reg(1)? {
            Value::Ptr(Ptr {
                region: Region::Map(m),
                off: 0,
            }) => Ok(m as usize),
            _ => self.fault("helper argument r1 is not a map"),
        }
    }

    fn map_and_key(&self) -> Result<(usize, Vec<u8>), InterpError> {
        let map = self.map_arg()?;
        let size = self.machine.maps[map].key_size;
        let key = self.read_bytes(self.ptr_arg(2)?, size)?;
        Ok((map, key))
    }

    fn map_lookup(&mut self) -> Result<Value, InterpError> {
        let (map, key) = self.map_and_key()?;
        if self.machine.maps[map].kind() == MapKind::Ringbuf {
            return self.fault("looks up a ring buffer");
        }
        Ok(match self.machine.maps[map].lookup(&key) {
            Some(slot) => Value::Ptr(Ptr::new(Region::MapValue { map: map as u32, slot }, 0)),
            None => Value::Scalar(0),
        })
    }

    /// `bpf_xdp_load_bytes(ctx, off, buf, len)` / `bpf_xdp_store_bytes`: anywhere in the
    /// frame, fragments included.
    fn xdp_bytes(&mut self, store: bool) -> Result<i64, InterpError> {
        let (off, buf, len) = (
            self.scalar(2)? as u32 as u64,
            self.ptr_arg(3)?,
            self.scalar(4)? as u32 as u64,
        );
        if off > XDP_MAX_OFF || len > XDP_MAX_OFF {
            return Ok(-EFAULT);
        }
        if off + len > self.packet.len() as u64 {
            return Ok(-EINVAL);
        }
        let r = off as usize..(off + len) as usize;
        if store {
            let bytes = self.read_bytes(buf, len as usize)?;
            self.packet[r].copy_from_slice(&bytes);
        } else {
            let bytes = self.packet[r].to_vec();
            self.write_bytes(buf, &bytes)?;
        }
        Ok(0)
    }

    /// `bpf_skb_load_bytes(skb, off, buf, len)` (zeroes `buf` when out of range) and
    /// `bpf_skb_store_bytes(skb, off, buf, len, flags)`.
    fn skb_bytes(&mut self, store: bool) -> Result<i64, InterpError> {
        let (off, buf, len) = (
            self.scalar(2)? as u32 as u64,
            self.ptr_arg(3)?,
            self.scalar(4)? as u32 as u64,
        );
        let in_range = off <= i32::MAX as u64 && off + len <= self.packet.len() as u64;
        if store {
            const BPF_F_RECOMPUTE_CSUM: u64 = 1;
            const BPF_F_INVALIDATE_HASH: u64 = 2;
            if self.scalar(5)? & !(BPF_F_RECOMPUTE_CSUM | BPF_F_INVALIDATE_HASH) != 0 {
                return Ok(-EINVAL);
            }
            let bytes = self.read_bytes(buf, len as usize)?;
            if !in_range {
                return Ok(-EFAULT);
            }
            self.packet[off as usize..(off + len) as usize].copy_from_slice(&bytes);
            Ok(0)
        } else if in_range {
            let bytes = self.packet[off as usize..(off + len) as usize].to_vec();
            self.write_bytes(buf, &bytes)?;
            Ok(0)
        } else {
            // The verifier bounds `len` by the buffer's size: check before allocating.
            if len > MAX_HELPER_LEN {
                return self.fault(format!("a {len}-byte helper buffer"));
            }
            self.write_bytes(buf, &vec![0; len as usize])?;
            Ok(-EFAULT)
        }
    }

    /// `bpf_trace_printk(fmt, size, ...)`: the line is kept in the run's result.
    fn trace_printk(&mut self) -> Result<i64, InterpError> {
        let size = self.scalar(2)? as usize;
        let fmt = self.read_bytes(self.ptr_arg(1)?, size)?;
        let end = fmt.iter().position(|&b| b == 0).unwrap_or(fmt.len());
        let fmt = String::from_utf8_lossy(&fmt[..end]).into_owned();
        let mut args = Vec::new();
        for r in 3..=5 {
            if let Value::Scalar(v) = self.regs[r] {
                args.push(v);
            }
        }
        let line = format_printk(&fmt, &args);
        let n = line.len() as i64;
        self.trace.push(line.trim_end_matches('\n').to_string());
        Ok(n)
    }
}

fn errno(r: Result<(), i64>) -> i64 {
    match r {
        Ok(()) => 0,
        Err(e) => -e,
    }
}

/// The kernel's printf subset: `%d %i %u %x %X %c %%` with `l`/`ll` length modifiers.
pub fn format_printk(fmt: &str, args: &[u64]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut long = 0;
        while chars.peek() == Some(&'l') {
            chars.next();
            long += 1;
        }
        let Some(conv) = chars.next() else { break };
        if conv == '%' {
            out.push('%');
            continue;
        }
        let v = args.next().copied().unwrap_or(0);
        let v = if long == 0 { v as u32 as u64 } else { v };
        match conv {
            'd' | 'i' if long == 0 => out.push_str(&(v as u32 as i32).to_string()),
            'd' | 'i' => out.push_str(&(v as i64).to_string()),
            'u' => out.push_str(&v.to_string()),
            'x' => out.push_str(&format!("{v:x}")),
            'X' => out.push_str(&format!("{v:X}")),
            'c' => out.push(char::from(v as u8)),
            other => {
                out.push('%');
                out.push(other);
            }
        }
    }
    out
}
