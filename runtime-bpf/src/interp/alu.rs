//! Arithmetic and comparisons on scalars, exactly as the kernel defines them (its interpreter
//! in kernel/bpf/core.c and the x86-64 JIT agree): wrapping arithmetic, `x / 0 = 0` and
//! `x % 0 = x`, shift counts masked to the operand width, signed division of the minimum by
//! -1 giving the minimum (and remainder 0), 32-bit operations zero-extending their result.

use crate::isa::{AluOp, JmpOp};

/// The operation of an ALU opcode's high nibble.
pub fn alu_op(code: u8) -> Option<AluOp> {
    use AluOp::*;
    Some(match code & 0xf0 {
        0x00 => Add,
        0x10 => Sub,
        0x20 => Mul,
        0x30 => Div,
        0x40 => Or,
        0x50 => And,
        0x60 => Lsh,
        0x70 => Rsh,
        0x80 => Neg,
        0x90 => Mod,
        0xa0 => Xor,
        0xb0 => Mov,
        0xc0 => Arsh,
        0xd0 => End,
        _ => return None,
    })
}

/// The condition of a conditional jump's high nibble (not `ja`, `call`, `exit`, `may_goto`).
pub fn jmp_cond(code: u8) -> Option<JmpOp> {
    use JmpOp::*;
    Some(match code & 0xf0 {
        0x10 => Jeq,
        0x20 => Jgt,
        0x30 => Jge,
        0x40 => Jset,
        0x50 => Jne,
        0x60 => Jsgt,
        0x70 => Jsge,
        0xa0 => Jlt,
        0xb0 => Jle,
        0xc0 => Jslt,
        0xd0 => Jsle,
        _ => return None,
    })
}

/// A 64-bit ALU operation on scalars; `signed` is the cpu v4 `off = 1` form of div/mod.
/// `Mov`, `Neg` and `End` are not binary and are handled by the caller.
pub fn alu64(op: AluOp, signed: bool, a: u64, b: u64) -> u64 {
    use AluOp::*;
    match op {
        Add => a.wrapping_add(b),
        Sub => a.wrapping_sub(b),
        Mul => a.wrapping_mul(b),
        Div if b == 0 => 0,
        Mod if b == 0 => a,
        Div if signed => (a as i64).wrapping_div(b as i64) as u64,
        Mod if signed => (a as i64).wrapping_rem(b as i64) as u64,
        Div => a / b,
        Mod => a % b,
        Or => a | b,
        And => a & b,
        Xor => a ^ b,
        Lsh => a << (b & 63),
        Rsh => a >> (b & 63),
        Arsh => ((a as i64) >> (b & 63)) as u64,
        Mov => b,
        Neg => a.wrapping_neg(),
        End => a,
    }
}

/// A 32-bit ALU operation; the caller zero-extends the result into the register.
pub fn alu32(op: AluOp, signed: bool, a: u32, b: u32) -> u32 {
    use AluOp::*;
    match op {
        Add => a.wrapping_add(b),
        Sub => a.wrapping_sub(b),
        Mul => a.wrapping_mul(b),
        Div if b == 0 => 0,
        Mod if b == 0 => a,
        Div if signed => (a as i32).wrapping_div(b as i32) as u32,
        Mod if signed => (a as i32).wrapping_rem(b as i32) as u32,
        Div => a / b,
        Mod => a % b,
        Or => a | b,
        And => a & b,
        Xor => a ^ b,
        Lsh => a << (b & 31),
        Rsh => a >> (b & 31),
        Arsh => ((a as i32) >> (b & 31)) as u32,
        Mov => b,
        Neg => a.wrapping_neg(),
        End => a,
    }
}

/// `movsx`: sign-extend the low `bits` of `v` to 64 bits.
pub fn sign_extend(v: u64, bits: u32) -> u64 {
    match bits {
        8 => v as u8 as i8 as i64 as u64,
        16 => v as u16 as i16 as i64 as u64,
        32 => v as u32 as i32 as i64 as u64,
        _ => v,
    }
}

/// Byte-order conversion (`BPF_END`): `swap` reverses the low `bits` bytes (to-be on a
/// little-endian host, or the cpu v4 unconditional `bswap`); both zero-extend from `bits`.
/// `None` for a width other than 16, 32 or 64.
pub fn byte_order(v: u64, bits: i32, swap: bool) -> Option<u64> {
    Some(match (bits, swap) {
        (16, false) => v as u16 as u64,
        (32, false) => v as u32 as u64,
        (64, false) => v,
        (16, true) => (v as u16).swap_bytes() as u64,
        (32, true) => (v as u32).swap_bytes() as u64,
        (64, true) => v.swap_bytes(),
        _ => return None,
    })
}

/// A 64-bit jump condition.
pub fn cond64(op: JmpOp, a: u64, b: u64) -> bool {
    use JmpOp::*;
    let (sa, sb) = (a as i64, b as i64);
    match op {
        Jeq => a == b,
        Jne => a != b,
        Jgt => a > b,
        Jge => a >= b,
        Jlt => a < b,
        Jle => a <= b,
        Jset => a & b != 0,
        Jsgt => sa > sb,
        Jsge => sa >= sb,
        Jslt => sa < sb,
        Jsle => sa <= sb,
        Ja | Call | Exit | Jcond => false,
    }
}

/// A 32-bit jump condition (`BPF_JMP32`): the low halves, signed ones as `s32`.
pub fn cond32(op: JmpOp, a: u32, b: u32) -> bool {
    use JmpOp::*;
    let (sa, sb) = (a as i32, b as i32);
    match op {
        Jsgt => sa > sb,
        Jsge => sa >= sb,
        Jslt => sa < sb,
        Jsle => sa <= sb,
        _ => cond64(op, a as u64, b as u64),
    }
}
