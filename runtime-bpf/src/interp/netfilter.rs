//! Netfilter programs: the `struct bpf_nf_ctx` a test run builds, and the packet reads through
//! a dynptr over the skb that the compiler emits (compiler/src/lower/netfilter.rs): the kfuncs
//! `bpf_dynptr_from_skb`, `bpf_dynptr_slice`, `bpf_dynptr_size` and the helper
//! `bpf_dynptr_read`, with the kernel's checks and return values (kernel/bpf/helpers.c,
//! net/core/filter.c, Linux 6.18).
//!
//! What `bpf_prog_test_run_nf` hands the program: `state` points to a `struct nf_hook_state`
//! with `hook` LOCAL_OUT and `pf` the family asked for; `skb` to an skb whose data is the
//! packet as given (the IP header at offset 0, all of it linear, `skb->len` its length). So a
//! slice is always a pointer into the packet (the caller's buffer would only be used for bytes
//! in fragments), read-only and as large as asked (a `Region::Slice`, so a read past it is a
//! fault, as the verifier refuses it), and an out-of-range slice is NULL.
//!
//! A dynptr is a 16-byte stack object (`struct bpf_dynptr_kern { data; size; offset }`, the
//! type and read-only flag in the top bits of `size`). The interpreter keeps what it describes
//! next to the frame, writes the kernel's layout into the stack bytes, and treats a read of
//! those bytes as a fault (the verifier refuses it) and a write over them as destroying it (as
//! the verifier does for dynptrs that hold no reference).

use super::exec::Run;
use super::maps::{E2BIG, EINVAL};
use super::value::{Ptr, Region, Value};
use super::InterpError;

/// `sizeof(struct bpf_dynptr)`.
pub const DYNPTR_SIZE: usize = 16;
/// `NF_INET_LOCAL_OUT`: the hook of a test run (luabpf's and the kernel's default).
pub const NF_INET_LOCAL_OUT: u8 = 3;
/// `BPF_DYNPTR_TYPE_SKB`, stored from bit 28 of `size`.
const DYNPTR_TYPE_SKB: u32 = 3;
const DYNPTR_TYPE_SHIFT: u32 = 28;
const DYNPTR_RDONLY_BIT: u32 = 1 << 31;

/// What a dynptr on the stack describes: a window of the skb, or nothing (null).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dynptr {
    /// `data` is NULL: a failed `bpf_dynptr_from_skb` leaves this.
    pub null: bool,
    pub offset: u32,
    pub size: u32,
    /// Netfilter programs may not write packets: the verifier makes their skb dynptrs
    /// read-only (it calls `bpf_dynptr_from_skb_rdonly` instead).
    pub rdonly: bool,
}

impl Dynptr {
    const NULL: Dynptr = Dynptr {
        null: true,
        offset: 0,
        size: 0,
        rdonly: false,
    };

    /// `bpf_dynptr_check_off_len`: `len` bytes at `off` lie inside the window.
    fn check_off_len(self, off: u32, len: u32) -> Result<(), i64> {
        if len > self.size || off > self.size - len {
            return Err(E2BIG);
        }
        Ok(())
    }

    /// The kernel's 16 bytes (`data` as a stand-in address).
    fn bytes(self) -> [u8; DYNPTR_SIZE] {
        let mut b = [0u8; DYNPTR_SIZE];
        if !self.null {
            let size =
                self.size | (DYNPTR_TYPE_SKB << DYNPTR_TYPE_SHIFT) | if self.rdonly { DYNPTR_RDONLY_BIT } else { 0 };
            b[..8].copy_from_slice(&Ptr::new(Region::Skb, 0).address().to_le_bytes());
            b[8..12].copy_from_slice(&size.to_le_bytes());
            b[12..].copy_from_slice(&self.offset.to_le_bytes());
        }
        b
    }
}

impl Run<'_> {
    /// A load through `bpf_nf_ctx.state`: `hook` (byte 0) and `pf` (byte 1) of the test run's
    /// `struct nf_hook_state`.
    pub fn nf_state_load(&self, off: i64, size: usize) -> Result<Value, InterpError> {
        let fields = [NF_INET_LOCAL_OUT, self.nf_pf];
        match off.checked_add(size as i64) {
            Some(end) if off >= 0 && end <= fields.len() as i64 => {
                let v = fields[off as usize..end as usize]
                    .iter()
                    .rev()
                    .fold(0u64, |acc, &b| (acc << 8) | b as u64);
                Ok(Value::Scalar(v))
            }
            _ => Err(InterpError::Unsupported(format!(
                "instruction {}: a {size}-byte load at offset {off} of struct nf_hook_state (only \
                 `hook` and `pf` are emulated)",
                self.pc
            ))),
        }
    }

    /// Calls the kernel function `name` (a kfunc the compiler emits), arguments in r1-r5.
    pub fn call_kfunc(&mut self, name: &str) -> Result<Value, InterpError> {
        // These kfuncs return `int`/`u32`: the 32-bit result, zero-extended as the JIT's
        // 32-bit moves leave it (the verifier knows nothing of the upper half).
        let int = |v: i64| Ok(Value::Scalar(v as u32 as u64));
        match name {
            "bpf_dynptr_from_skb" => {
                self.skb_arg(1)?;
                let flags = self.scalar(2)?;
                let at = self.dynptr_slot(3)?;
                if flags != 0 {
                    self.set_dynptr(at, Dynptr::NULL)?;
                    return int(-EINVAL);
                }
                let dynptr = Dynptr {
                    null: false,
                    offset: 0,
                    size: self.packet.len() as u32,
                    rdonly: !self.progtype.packet_writable(),
                };
                self.set_dynptr(at, dynptr)?;
                int(0)
            }
            "bpf_dynptr_slice" => {
                let d = self.dynptr_arg(1)?;
                let off = self.scalar(2)? as u32;
                match self.reg(3)? {
                    Value::Ptr(_) | Value::Scalar(0) => {}
                    _ => return self.fault("bpf_dynptr_slice's buffer is neither a pointer nor NULL"),
                }
                let len = self.scalar(4)? as u32;
                if d.null || d.check_off_len(off, len).is_err() {
                    return Ok(Value::Scalar(0));
                }
                // The skb is linear: `skb_header_pointer` points into its data.
                let start = d.offset + off;
                Ok(Value::Ptr(Ptr::new(Region::Slice { start, len }, 0)))
            }
            "bpf_dynptr_size" => {
                let d = self.dynptr_arg(1)?;
                int(if d.null { -EINVAL } else { d.size as i64 })
            }
            other => Err(InterpError::Unsupported(format!(
                "kernel function (kfunc) `{other}`, at instruction {}",
                self.pc
            ))),
        }
    }

    /// The helper `bpf_dynptr_read(dst, len, dynptr, off, flags)`.
    pub fn dynptr_read(&mut self) -> Result<i64, InterpError> {
        let dst = match self.reg(1)? {
            Value::Ptr(p) => p,
            _ => return self.fault("bpf_dynptr_read's destination is not a pointer"),
        };
        let len = self.scalar(2)? as u32;
        let d = self.dynptr_arg(3)?;
        let off = self.scalar(4)? as u32;
        let flags = self.scalar(5)?;
        let status = if d.null || flags != 0 {
            Err(EINVAL)
        } else {
            d.check_off_len(off, len)
        };
        match status {
            Ok(()) => {
                let start = (d.offset + off) as usize;
                let bytes = self.packet[start..start + len as usize].to_vec();
                self.write_bytes(dst, &bytes)?;
                Ok(0)
            }
            Err(e) => {
                // The kernel leaves `dst` alone, but the verifier counts it as written.
                self.mark_written(dst, len as usize)?;
                Ok(-e)
            }
        }
    }

    fn skb_arg(&self, r: u8) -> Result<(), InterpError> {
        match self.reg(r)? {
            Value::Ptr(Ptr {
                region: Region::Skb,
                off: 0,
            }) => Ok(()),
            _ => self.fault(format!("r{r} is not the context's skb pointer")),
        }
    }

    /// The stack slot a dynptr argument points to: a whole, 8-byte aligned 16 bytes of a live
    /// frame (the verifier wants a constant, aligned stack offset).
    fn dynptr_slot(&self, r: u8) -> Result<(u32, usize), InterpError> {
        match self.reg(r)? {
            Value::Ptr(Ptr {
                region: Region::Stack(id),
                off,
            }) if off >= 0 && off % 8 == 0 && off as usize + DYNPTR_SIZE <= crate::isa::STACK_SIZE as usize => {
                Ok((id, off as usize))
            }
            _ => self.fault(format!("r{r} does not point to a dynptr slot on the stack")),
        }
    }

    /// The initialized dynptr argument `r` points to.
    fn dynptr_arg(&self, r: u8) -> Result<Dynptr, InterpError> {
        let at = self.dynptr_slot(r)?;
        match self.dynptrs.get(&at) {
            Some(d) => Ok(*d),
            None => self.fault(format!("r{r} points to no initialized dynptr")),
        }
    }

    fn set_dynptr(&mut self, (id, off): (u32, usize), d: Dynptr) -> Result<(), InterpError> {
        // Writing the bytes destroys whatever dynptr overlapped them first.
        self.write_bytes(Ptr::new(Region::Stack(id), off as i64), &d.bytes())?;
        self.dynptrs.insert((id, off), d);
        Ok(())
    }

    /// Whether bytes `range` of frame `id` hold part of a dynptr.
    pub fn touches_dynptr(&self, id: u32, range: &std::ops::Range<usize>) -> bool {
        self.dynptrs
            .keys()
            .any(|&(f, at)| f == id && at < range.end && range.start < at + DYNPTR_SIZE)
    }

    /// Forgets the dynptrs a write to bytes `range` of frame `id` overwrites.
    pub fn destroy_dynptrs(&mut self, id: u32, range: &std::ops::Range<usize>) {
        self.dynptrs
            .retain(|&(f, at), _| !(f == id && at < range.end && range.start < at + DYNPTR_SIZE));
    }
}
