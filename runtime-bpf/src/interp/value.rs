//! What a register or a spilled stack slot holds: a plain 64-bit scalar, or a pointer tagged
//! with the memory region it points into, so that every access is checked against that
//! region's bounds (an access the verifier should have refused is an error, never undefined
//! behaviour).

/// A memory region a pointer may point into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Region {
    /// The stack frame of the call with this id (ids are never reused within a run, so a
    /// pointer into a returned call's frame is detected).
    Stack(u32),
    /// The program's context (`struct xdp_md`, `struct __sk_buff`).
    Ctx,
    /// The packet bytes; `data` is offset 0, `data_end` the length of the linear part.
    Packet,
    /// A map itself (what `ld_imm64` of a map loads): only helpers take it.
    Map(u32),
    /// The value storage `slot` of map `map` (what `map_lookup_elem` returns).
    MapValue { map: u32, slot: u32 },
    /// The `len` packet bytes from `start` that `bpf_dynptr_slice` returned (read-only memory
    /// of exactly that size, for the verifier).
    Slice { start: u32, len: u32 },
    /// A netfilter program's `struct nf_hook_state` (`bpf_nf_ctx.state`): `hook` and `pf`.
    NfState,
    /// A netfilter program's `struct sk_buff` (`bpf_nf_ctx.skb`): opaque, only kfuncs take it.
    Skb,
}

/// A tagged pointer: a region and a signed byte offset inside it (may be out of bounds until
/// it is dereferenced, as in the kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ptr {
    pub region: Region,
    pub off: i64,
}

impl Ptr {
    pub fn new(region: Region, off: i64) -> Ptr {
        Ptr { region, off }
    }

    pub fn offset_by(self, delta: i64) -> Ptr {
        Ptr {
            region: self.region,
            off: self.off.wrapping_add(delta),
        }
    }

    /// A stand-in address, for the rare comparison of a pointer with a scalar or with a
    /// pointer into another region: distinct, non-zero, kernel-like bases per region.
    pub fn address(self) -> u64 {
        let base: u64 = match self.region {
            Region::Stack(id) => 0xffff_c900_0000_0000 + ((id as u64) << 16),
            Region::Ctx => 0xffff_8880_0100_0000,
            Region::Packet => 0xffff_8880_0200_0000,
            Region::Map(m) => 0xffff_8880_1000_0000 + ((m as u64) << 20),
            Region::MapValue { map, slot } => 0xffff_8881_0000_0000 + ((map as u64) << 28) + ((slot as u64) << 8),
            Region::Slice { start, .. } => 0xffff_8880_0200_0000 + start as u64,
            Region::NfState => 0xffff_c900_8000_0000,
            Region::Skb => 0xffff_8880_0300_0000,
        };
        base.wrapping_add(self.off as u64)
    }
}

/// A register's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// Never written, or clobbered by a call (r1-r5 after a helper or local call): reading it
    /// is what the verifier refuses as `!read_ok`.
    Uninit,
    Scalar(u64),
    Ptr(Ptr),
}
