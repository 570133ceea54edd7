//! Loads and stores through tagged pointers, checked against their region: the stack frame
//! of a live call (bytes written before they are read, pointers spilled whole), the packet's
//! linear part, a map value, the context's fields.

use super::exec::{Frame, Run};
use super::value::{Ptr, Region, Value};
use super::InterpError;
use crate::isa::STACK_SIZE;

const FRAME: i64 = STACK_SIZE as i64;

impl Run<'_> {
    fn frame_index(&self, id: u32) -> Result<usize, InterpError> {
        match self.frames.iter().position(|f| f.id == id) {
            Some(i) => Ok(i),
            None => self.fault("accesses the stack of a call that has returned"),
        }
    }

    /// The byte range `off..off+len` of a region of `size` bytes, or a fault naming it.
    fn range(&self, what: &str, off: i64, len: usize, size: usize) -> Result<std::ops::Range<usize>, InterpError> {
        let end = off.checked_add(len as i64);
        match end {
            Some(end) if off >= 0 && end <= size as i64 => Ok(off as usize..end as usize),
            _ => self.fault(format!(
                "{len}-byte access at offset {off} of {what}, which has {size} bytes"
            )),
        }
    }

    /// The frame's bytes `p` covers (r10 points just past the frame's 512 bytes).
    fn stack_range(&self, p: Ptr, len: usize) -> Result<std::ops::Range<usize>, InterpError> {
        match p.off.checked_add(len as i64) {
            Some(end) if p.off >= 0 && end <= FRAME => Ok(p.off as usize..end as usize),
            _ => self.fault(format!(
                "{len}-byte stack access at fp{:+}, outside the 512-byte frame",
                p.off.wrapping_sub(FRAME)
            )),
        }
    }

    /// A load of `size` bytes (1, 2, 4, 8), zero-extended; a spilled pointer comes back whole.
    pub fn load(&self, p: Ptr, size: usize) -> Result<Value, InterpError> {
        match p.region {
            Region::Ctx => self.ctx_load(p.off, size),
            Region::NfState => self.nf_state_load(p.off, size),
            Region::Skb => Err(InterpError::Unsupported(format!(
                "instruction {}: reads a field of the netfilter program's sk_buff",
                self.pc
            ))),
            Region::Stack(id) => {
                let frame = &self.frames[self.frame_index(id)?];
                let r = self.stack_range(p, size)?;
                if self.touches_dynptr(id, &r) {
                    return self.fault("reads the bytes of a dynptr");
                }
                if let Some(ptr) = spilled(frame, r.clone()) {
                    return Ok(Value::Ptr(ptr));
                }
                if r.clone().any(|i| frame.spills[i / 8].is_some()) {
                    return self.fault("reads part of a spilled pointer");
                }
                if let Some(i) = r.clone().find(|&i| !frame.init[i]) {
                    return self.fault(format!("reads uninitialized stack at fp{}", i as i64 - FRAME));
                }
                Ok(Value::Scalar(le(&frame.bytes[r])))
            }
            _ => Ok(Value::Scalar(le(self.bytes(p, size)?))),
        }
    }

    /// A store of the low `size` bytes of a scalar, or of a whole pointer to the stack.
    pub fn store_value(&mut self, p: Ptr, size: usize, v: Value) -> Result<(), InterpError> {
        match (p.region, v) {
            (Region::Ctx, Value::Scalar(x)) => self.ctx_store(p.off, size, x),
            (Region::Stack(id), Value::Ptr(ptr)) => {
                let r = self.stack_range(p, size)?;
                if size != 8 || !r.start.is_multiple_of(8) {
                    return self.fault("spills a pointer to a partial or unaligned stack slot");
                }
                let i = self.frame_index(id)?;
                self.destroy_dynptrs(id, &r);
                let frame = &mut self.frames[i];
                frame.bytes[r.clone()].copy_from_slice(&ptr.address().to_le_bytes());
                frame.init[r.clone()].fill(true);
                frame.spills[r.start / 8] = Some(ptr);
                Ok(())
            }
            (_, Value::Scalar(x)) => self.write_bytes(p, &x.to_le_bytes()[..size]),
            (_, Value::Ptr(_)) => self.fault("stores a pointer outside the stack"),
            (_, Value::Uninit) => self.fault("stores an unset register"),
        }
    }

    /// `len` bytes at `p`, copied, for a helper's input (a map key, a value).
    pub fn read_bytes(&self, p: Ptr, len: usize) -> Result<Vec<u8>, InterpError> {
        self.bytes(p, len).map(<[u8]>::to_vec)
    }

    /// `len` bytes at `p`, checked: written stack bytes holding no pointer, the packet's
    /// linear part, a live map value.
    fn bytes(&self, p: Ptr, len: usize) -> Result<&[u8], InterpError> {
        match p.region {
            Region::Stack(id) => {
                let frame = &self.frames[self.frame_index(id)?];
                let r = self.stack_range(p, len)?;
                if r.clone().any(|i| frame.spills[i / 8].is_some()) {
                    return self.fault("passes a spilled pointer as data");
                }
                if self.touches_dynptr(id, &r) {
                    return self.fault("passes the bytes of a dynptr as data");
                }
                if let Some(i) = r.clone().find(|&i| !frame.init[i]) {
                    return self.fault(format!("reads uninitialized stack at fp{}", i as i64 - FRAME));
                }
                Ok(&frame.bytes[r])
            }
            Region::Packet => {
                let r = self.range("the packet (data..data_end)", p.off, len, self.linear_len)?;
                Ok(&self.packet[r])
            }
            Region::MapValue { map, slot } => {
                let bytes = self.value_slot(map, slot)?;
                let r = self.range("a map value", p.off, len, bytes.len())?;
                Ok(&bytes[r])
            }
            Region::Slice { start, len: size } => {
                let r = self.range("a dynptr slice", p.off, len, size as usize)?;
                Ok(&self.packet[start as usize + r.start..start as usize + r.end])
            }
            Region::Ctx => self.fault("passes the context as data"),
            Region::Map(_) => self.fault("reads the bytes of a map pointer"),
            Region::NfState | Region::Skb => self.fault("passes a kernel structure as data"),
        }
    }

    /// Writes `bytes` at `p` (a store, or a helper's output buffer).
    pub fn write_bytes(&mut self, p: Ptr, bytes: &[u8]) -> Result<(), InterpError> {
        match p.region {
            Region::Stack(id) => {
                let i = self.frame_index(id)?;
                let r = self.stack_range(p, bytes.len())?;
                self.destroy_dynptrs(id, &r);
                let frame = &mut self.frames[i];
                for slot in r.start / 8..r.end.div_ceil(8) {
                    frame.spills[slot] = None;
                }
                frame.bytes[r.clone()].copy_from_slice(bytes);
                frame.init[r].fill(true);
                Ok(())
            }
            Region::Packet => {
                if !self.progtype.packet_writable() {
                    return self.fault("writes a read-only packet");
                }
                let r = self.range("the packet (data..data_end)", p.off, bytes.len(), self.linear_len)?;
                self.packet[r].copy_from_slice(bytes);
                Ok(())
            }
            Region::MapValue { map, slot } => {
                let size = self.value_slot(map, slot)?.len();
                let r = self.range("a map value", p.off, bytes.len(), size)?;
                let value = self.machine.maps[map as usize]
                    .slot_mut(slot)
                    .expect("checked by value_slot");
                value[r].copy_from_slice(bytes);
                Ok(())
            }
            Region::Ctx => self.fault("writes the context as data"),
            Region::Map(_) => self.fault("writes the bytes of a map"),
            Region::NfState | Region::Skb => self.fault("writes a read-only kernel structure"),
            Region::Slice { .. } => self.fault("writes through a read-only dynptr slice"),
        }
    }

    /// What the verifier assumes of a helper's output buffer after the call, whether or not the
    /// helper wrote it: its `len` bytes at `p` are initialized (the stack keeps its bytes).
    pub fn mark_written(&mut self, p: Ptr, len: usize) -> Result<(), InterpError> {
        match p.region {
            Region::Stack(id) => {
                let i = self.frame_index(id)?;
                let r = self.stack_range(p, len)?;
                self.destroy_dynptrs(id, &r);
                let frame = &mut self.frames[i];
                for slot in r.start / 8..r.end.div_ceil(8) {
                    frame.spills[slot] = None;
                }
                frame.init[r].fill(true);
                Ok(())
            }
            _ => {
                let old = self.read_bytes(p, len)?;
                self.write_bytes(p, &old)
            }
        }
    }

    fn value_slot(&self, map: u32, slot: u32) -> Result<&[u8], InterpError> {
        match self.machine.maps.get(map as usize).and_then(|m| m.slot(slot)) {
            Some(b) => Ok(b),
            None => self.fault("a map value pointer to no value"),
        }
    }
}

/// The pointer spilled exactly at `r`, if `r` is one whole aligned slot holding one.
fn spilled(frame: &Frame, r: std::ops::Range<usize>) -> Option<Ptr> {
    if r.len() == 8 && r.start.is_multiple_of(8) {
        return frame.spills[r.start / 8];
    }
    None
}

fn le(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(b)
}
