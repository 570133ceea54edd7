//! The eBPF instruction set: registers, opcodes, one 8-byte instruction slot, and constructors.
//!
//! `Insn` is exactly one 8-byte slot as the kernel sees it; `ld_imm64` is two slots.
//! Encoding follows the kernel's `struct bpf_insn` (little-endian host: dst in the low nibble).

/// A BPF register, r0..=r10. r10 is the read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reg(pub u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R5: Reg = Reg(5);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R9: Reg = Reg(9);
pub const R10: Reg = Reg(10);
pub const FP: Reg = R10;

/// Size of the per-frame stack the verifier grants.
pub const STACK_SIZE: i32 = 512;

// Instruction classes.
pub const BPF_LD: u8 = 0x00;
pub const BPF_LDX: u8 = 0x01;
pub const BPF_ST: u8 = 0x02;
pub const BPF_STX: u8 = 0x03;
pub const BPF_ALU: u8 = 0x04;
pub const BPF_JMP: u8 = 0x05;
pub const BPF_JMP32: u8 = 0x06;
pub const BPF_ALU64: u8 = 0x07;

// Source operand.
pub const BPF_K: u8 = 0x00;
pub const BPF_X: u8 = 0x08;

// Memory modes and sizes.
pub const BPF_IMM: u8 = 0x00;
pub const BPF_MEM: u8 = 0x60;
pub const BPF_ATOMIC: u8 = 0xc0;
pub const BPF_W: u8 = 0x00;
pub const BPF_H: u8 = 0x08;
pub const BPF_B: u8 = 0x10;
pub const BPF_DW: u8 = 0x18;

/// `src_reg` of an `ld_imm64` that loads a map by fd (relocated by the loader).
pub const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `src_reg` of a `call` to another BPF function (imm = relative offset in slots).
pub const BPF_PSEUDO_CALL: u8 = 1;
/// `src_reg` of a `call` to a kernel function (imm = BTF id).
pub const BPF_PSEUDO_KFUNC_CALL: u8 = 2;

/// Atomic operation: fetch-less add.
pub const BPF_ADD_ATOMIC: i32 = 0x00;

/// ALU operations (the high nibble of an ALU opcode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    Add = 0x00,
    Sub = 0x10,
    Mul = 0x20,
    Div = 0x30,
    Or = 0x40,
    And = 0x50,
    Lsh = 0x60,
    Rsh = 0x70,
    Neg = 0x80,
    Mod = 0x90,
    Xor = 0xa0,
    Mov = 0xb0,
    Arsh = 0xc0,
    /// Byte swap (`BPF_END`); with class ALU and source K/X it is to-le/to-be.
    End = 0xd0,
}

/// Jump operations (the high nibble of a JMP opcode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JmpOp {
    Ja = 0x00,
    Jeq = 0x10,
    Jgt = 0x20,
    Jge = 0x30,
    Jset = 0x40,
    Jne = 0x50,
    Jsgt = 0x60,
    Jsge = 0x70,
    Call = 0x80,
    Exit = 0x90,
    Jlt = 0xa0,
    Jle = 0xb0,
    Jslt = 0xc0,
    Jsle = 0xd0,
    /// `may_goto` (kernel 6.9+): class JMP, code 0xe0, src 0.
    Jcond = 0xe0,
}

impl JmpOp {
    /// The condition that holds exactly when `self` does not.
    pub fn negate(self) -> JmpOp {
        use JmpOp::*;
        match self {
            Jeq => Jne,
            Jne => Jeq,
            Jgt => Jle,
            Jle => Jgt,
            Jge => Jlt,
            Jlt => Jge,
            Jsgt => Jsle,
            Jsle => Jsgt,
            Jsge => Jslt,
            Jslt => Jsge,
            other => other,
        }
    }

    /// The condition with its operands swapped (`a < b` is `b > a`).
    pub fn swap(self) -> JmpOp {
        use JmpOp::*;
        match self {
            Jgt => Jlt,
            Jlt => Jgt,
            Jge => Jle,
            Jle => Jge,
            Jsgt => Jslt,
            Jslt => Jsgt,
            Jsge => Jsle,
            Jsle => Jsge,
            other => other,
        }
    }
}

/// Width of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    pub fn bits(self) -> u8 {
        match self {
            Size::B => BPF_B,
            Size::H => BPF_H,
            Size::W => BPF_W,
            Size::DW => BPF_DW,
        }
    }
    pub fn bytes(self) -> u32 {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }
    pub fn from_bytes(n: u32) -> Option<Size> {
        Some(match n {
            1 => Size::B,
            2 => Size::H,
            4 => Size::W,
            8 => Size::DW,
            _ => return None,
        })
    }
}

/// One 8-byte instruction slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.dst & 0x0f) | ((self.src & 0x0f) << 4);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; 8]) -> Insn {
        Insn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    #[inline]
    pub fn class(&self) -> u8 {
        self.code & 0x07
    }

    /// True for the first slot of a two-slot `ld_imm64`.
    #[inline]
    pub fn is_ld_imm64(&self) -> bool {
        self.code == BPF_LD | BPF_IMM | BPF_DW
    }

    // ---- constructors -------------------------------------------------------------------

    pub fn alu64_reg(op: AluOp, dst: Reg, src: Reg) -> Insn {
        Insn::new(BPF_ALU64 | BPF_X | op as u8, dst.0, src.0, 0, 0)
    }
    pub fn alu64_imm(op: AluOp, dst: Reg, imm: i32) -> Insn {
        Insn::new(BPF_ALU64 | BPF_K | op as u8, dst.0, 0, 0, imm)
    }
    pub fn alu32_reg(op: AluOp, dst: Reg, src: Reg) -> Insn {
        Insn::new(BPF_ALU | BPF_X | op as u8, dst.0, src.0, 0, 0)
    }
    pub fn alu32_imm(op: AluOp, dst: Reg, imm: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_K | op as u8, dst.0, 0, 0, imm)
    }
    /// Signed division/modulo (cpu v4, kernel 6.6+): `off` = 1.
    pub fn alu64_reg_signed(op: AluOp, dst: Reg, src: Reg) -> Insn {
        Insn::new(BPF_ALU64 | BPF_X | op as u8, dst.0, src.0, 1, 0)
    }
    pub fn mov64_reg(dst: Reg, src: Reg) -> Insn {
        Insn::alu64_reg(AluOp::Mov, dst, src)
    }
    pub fn mov64_imm(dst: Reg, imm: i32) -> Insn {
        Insn::alu64_imm(AluOp::Mov, dst, imm)
    }
    pub fn neg64(dst: Reg) -> Insn {
        Insn::new(BPF_ALU64 | BPF_K | AluOp::Neg as u8, dst.0, 0, 0, 0)
    }
    /// Convert to big-endian (`be16`/`be32`/`be64`): on a little-endian host a byte swap
    /// that also zero-extends from `bits`.
    pub fn to_be(dst: Reg, bits: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_X | AluOp::End as u8, dst.0, 0, 0, bits)
    }
    /// Convert to little-endian: on a little-endian host only zero-extends from `bits`.
    pub fn to_le(dst: Reg, bits: i32) -> Insn {
        Insn::new(BPF_ALU | BPF_K | AluOp::End as u8, dst.0, 0, 0, bits)
    }
    /// Two slots: `dst = imm64`.
    pub fn ld_imm64(dst: Reg, imm: i64) -> [Insn; 2] {
        [
            Insn::new(BPF_LD | BPF_IMM | BPF_DW, dst.0, 0, 0, imm as i32),
            Insn::new(0, 0, 0, 0, (imm >> 32) as i32),
        ]
    }
    /// Two slots: `dst = map` (the loader relocates the first slot against the map symbol).
    pub fn ld_map_fd(dst: Reg) -> [Insn; 2] {
        [
            Insn::new(BPF_LD | BPF_IMM | BPF_DW, dst.0, BPF_PSEUDO_MAP_FD, 0, 0),
            Insn::new(0, 0, 0, 0, 0),
        ]
    }
    /// `dst = *(size *)(src + off)`
    pub fn load(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(BPF_LDX | BPF_MEM | size.bits(), dst.0, src.0, off, 0)
    }
    /// `*(size *)(dst + off) = src`
    pub fn store_reg(size: Size, dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::new(BPF_STX | BPF_MEM | size.bits(), dst.0, src.0, off, 0)
    }
    /// `*(size *)(dst + off) = imm`
    pub fn store_imm(size: Size, dst: Reg, off: i16, imm: i32) -> Insn {
        Insn::new(BPF_ST | BPF_MEM | size.bits(), dst.0, 0, off, imm)
    }
    /// `lock *(size *)(dst + off) += src` (W or DW).
    pub fn atomic_add(size: Size, dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::new(BPF_STX | BPF_ATOMIC | size.bits(), dst.0, src.0, off, BPF_ADD_ATOMIC)
    }
    /// `if dst op src goto +off`
    pub fn jmp_reg(op: JmpOp, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_X | op as u8, dst.0, src.0, off, 0)
    }
    /// `if dst op imm goto +off`
    pub fn jmp_imm(op: JmpOp, dst: Reg, imm: i32, off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_K | op as u8, dst.0, 0, off, imm)
    }
    pub fn ja(off: i16) -> Insn {
        Insn::new(BPF_JMP | JmpOp::Ja as u8, 0, 0, off, 0)
    }
    /// `may_goto +off`: taken when the kernel's loop budget runs out.
    pub fn may_goto(off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_K | JmpOp::Jcond as u8, 0, 0, off, 0)
    }
    pub fn call_helper(id: i32) -> Insn {
        Insn::new(BPF_JMP | JmpOp::Call as u8, 0, 0, 0, id)
    }
    pub fn call_kfunc(btf_id: i32) -> Insn {
        Insn::new(BPF_JMP | JmpOp::Call as u8, 0, BPF_PSEUDO_KFUNC_CALL, 0, btf_id)
    }
    /// A BPF-to-BPF call; `imm` is the callee's offset in slots relative to the next slot.
    pub fn call_local(imm: i32) -> Insn {
        Insn::new(BPF_JMP | JmpOp::Call as u8, 0, BPF_PSEUDO_CALL, 0, imm)
    }
    pub fn exit() -> Insn {
        Insn::new(BPF_JMP | JmpOp::Exit as u8, 0, 0, 0, 0)
    }
}

/// Encodes a sequence of slots into bytes.
pub fn encode_all(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.encode()).collect()
}

/// Decodes bytes (a multiple of 8) into slots.
pub fn decode_all(bytes: &[u8]) -> Vec<Insn> {
    bytes
        .chunks_exact(8)
        .map(|c| Insn::decode(c.try_into().expect("chunk of 8")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kernel() {
        // r1 = r2 (mov64): code 0xbf, regs 0x21
        assert_eq!(Insn::mov64_reg(R1, R2).encode(), [0xbf, 0x21, 0, 0, 0, 0, 0, 0]);
        // exit
        assert_eq!(Insn::exit().encode(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        // r0 = *(u32 *)(r1 + 4)
        assert_eq!(Insn::load(Size::W, R0, R1, 4).encode(), [0x61, 0x10, 4, 0, 0, 0, 0, 0]);
        // if r1 > r2 goto +3
        assert_eq!(
            Insn::jmp_reg(JmpOp::Jgt, R1, R2, 3).encode(),
            [0x2d, 0x21, 3, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn decode_inverts_encode() {
        let i = Insn::jmp_imm(JmpOp::Jsle, R7, -5, -12);
        assert_eq!(Insn::decode(&i.encode()), i);
    }
}
