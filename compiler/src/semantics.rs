//! Lua 5.4 integer semantics on the host: the single definition that constant folding uses
//! and that the differential tests compare against a real Lua and against the kernel.

use crate::hir::ArithOp;

/// `a op b` as Lua 5.4 computes it on integers; `None` where Lua raises an error (a zero
/// divisor for `//` and `%`).
pub fn arith(op: ArithOp, a: i64, b: i64) -> Option<i64> {
    Some(match op {
        ArithOp::Add => a.wrapping_add(b),
        ArithOp::Sub => a.wrapping_sub(b),
        ArithOp::Mul => a.wrapping_mul(b),
        ArithOp::IDiv => floor_div(a, b)?,
        ArithOp::Mod => floor_mod(a, b)?,
        ArithOp::BAnd => a & b,
        ArithOp::BOr => a | b,
        ArithOp::BXor => a ^ b,
        ArithOp::Shl => shift_left(a, b),
        ArithOp::Shr => shift_left(a, b.wrapping_neg()),
    })
}

/// Lua's `//`: rounds towards minus infinity; `mininteger // -1` wraps to `mininteger`.
pub fn floor_div(a: i64, b: i64) -> Option<i64> {
    if b == 0 {
        return None;
    }
    if b == -1 {
        return Some(a.wrapping_neg());
    }
    let q = a / b;
    Some(if (a % b != 0) && ((a < 0) != (b < 0)) { q - 1 } else { q })
}

/// Lua's `%`: the result has the sign of the divisor.
pub fn floor_mod(a: i64, b: i64) -> Option<i64> {
    if b == 0 {
        return None;
    }
    if b == -1 {
        return Some(0);
    }
    let r = a % b;
    Some(if r != 0 && ((r < 0) != (b < 0)) { r + b } else { r })
}

/// Lua's logical shift: counts of 64 or more give 0; a negative count shifts right.
pub fn shift_left(a: i64, n: i64) -> i64 {
    if n <= -64 || n >= 64 {
        0
    } else if n >= 0 {
        ((a as u64) << n) as i64
    } else {
        ((a as u64) >> (-n)) as i64
    }
}

/// `ntohN`/`htonN` on a little-endian host: swap the low `bits` bits, zero-extended.
pub fn byteswap(bits: u8, x: i64) -> i64 {
    match bits {
        16 => (x as u16).swap_bytes() as i64,
        32 => (x as u32).swap_bytes() as i64,
        _ => (x as u64).swap_bytes() as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_division_and_modulo_follow_lua() {
        assert_eq!(floor_div(7, 2), Some(3));
        assert_eq!(floor_div(-7, 2), Some(-4));
        assert_eq!(floor_div(7, -2), Some(-4));
        assert_eq!(floor_mod(-7, 2), Some(1));
        assert_eq!(floor_mod(7, -2), Some(-1));
        assert_eq!(floor_div(i64::MIN, -1), Some(i64::MIN));
        assert_eq!(floor_mod(i64::MIN, -1), Some(0));
        assert_eq!(floor_div(1, 0), None);
    }

    #[test]
    fn shifts_follow_lua() {
        assert_eq!(shift_left(1, 63), i64::MIN);
        assert_eq!(shift_left(1, 64), 0);
        assert_eq!(shift_left(-1, -1), i64::MAX);
        assert_eq!(arith(ArithOp::Shr, -1, 1), Some(i64::MAX));
        assert_eq!(arith(ArithOp::Shr, 8, -1), Some(16));
    }
}
