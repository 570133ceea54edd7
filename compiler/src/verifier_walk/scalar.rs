//! Scalar values as the kernel's verifier bounds them: unsigned and signed 64-bit ranges
//! (a constant is a range of one value). Coarser than the kernel (no tnum, no separate 32-bit
//! bounds), enough to decide the branches it decides on luabpf's code: loop counters against
//! constant bounds, string indexes, `x or 0` defaults.

use runtime_bpf::isa::{AluOp, JmpOp};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sc {
    pub umin: u64,
    pub umax: u64,
    pub smin: i64,
    pub smax: i64,
}

impl Sc {
    pub const UNKNOWN: Sc = Sc {
        umin: 0,
        umax: u64::MAX,
        smin: i64::MIN,
        smax: i64::MAX,
    };

    pub fn konst(v: u64) -> Sc {
        Sc {
            umin: v,
            umax: v,
            smin: v as i64,
            smax: v as i64,
        }
    }

    pub fn urange(lo: u64, hi: u64) -> Sc {
        Sc {
            umin: lo,
            umax: hi,
            ..Sc::UNKNOWN
        }
        .sync()
    }

    fn srange(lo: i64, hi: i64) -> Sc {
        Sc {
            smin: lo,
            smax: hi,
            ..Sc::UNKNOWN
        }
        .sync()
    }

    pub fn value(&self) -> Option<u64> {
        (self.umin == self.umax).then_some(self.umin)
    }

    pub fn is_empty(&self) -> bool {
        self.umin > self.umax || self.smin > self.smax
    }

    /// `other` is inside `self` (the kernel's `range_within`).
    pub fn contains(&self, other: &Sc) -> bool {
        self.umin <= other.umin && other.umax <= self.umax && self.smin <= other.smin && other.smax <= self.smax
    }

    /// Each range narrowed by what the other says, as `reg_bounds_sync` does.
    pub fn sync(self) -> Sc {
        // Twice, as the kernel does; a first pass that changes nothing makes the second one
        // change nothing too.
        let once = self.sync_once();
        if once == self {
            once
        } else {
            once.sync_once()
        }
    }

    fn sync_once(mut self) -> Sc {
        if (self.umin as i64) <= (self.umax as i64) {
            self.smin = self.smin.max(self.umin as i64);
            self.smax = self.smax.min(self.umax as i64);
        }
        if self.smin >= 0 || self.smax < 0 {
            self.umin = self.umin.max(self.smin as u64);
            self.umax = self.umax.min(self.smax as u64);
        }
        self
    }

    /// The range of the low 32 bits, zero-extended (what a 32-bit compare sees): unsigned in
    /// umin/umax, signed (as `i32`, sign-extended) in smin/smax.
    pub fn low32(&self) -> Sc {
        let (lo, hi) = if self.umax <= u32::MAX as u64 {
            (self.umin, self.umax)
        } else if let Some(v) = self.value() {
            (v & 0xffff_ffff, v & 0xffff_ffff)
        } else {
            (0, u32::MAX as u64)
        };
        let (slo, shi) = if hi <= i32::MAX as u64 {
            (lo as i64, hi as i64)
        } else if lo == hi {
            (lo as u32 as i32 as i64, lo as u32 as i32 as i64)
        } else {
            (i32::MIN as i64, i32::MAX as i64)
        };
        Sc {
            umin: lo,
            umax: hi,
            smin: slo,
            smax: shi,
        }
    }

    /// A value loaded from memory, `bytes` wide, sign-extended when `signed`.
    pub fn loaded(bytes: u32, signed: bool) -> Sc {
        match (bytes, signed) {
            (8, _) => Sc::UNKNOWN,
            (n, false) => Sc::urange(0, (1u64 << (8 * n)) - 1),
            (n, true) => Sc::srange(-(1i64 << (8 * n - 1)), (1i64 << (8 * n - 1)) - 1),
        }
    }
}

fn mask_upto(v: u64) -> u64 {
    if v == 0 {
        0
    } else {
        u64::MAX >> v.leading_zeros()
    }
}

/// `a op b` on constants, as the CPU does it (BPF division by zero gives 0, modulo by zero
/// the dividend; `signed` is the cpu v4 `sdiv`/`smod`).
fn fold(op: AluOp, a: u64, b: u64, is64: bool, signed: bool) -> u64 {
    let (a, b) = if is64 {
        (a, b)
    } else {
        (a & 0xffff_ffff, b & 0xffff_ffff)
    };
    let sh = if is64 { b & 63 } else { b & 31 };
    let r = match op {
        AluOp::Add => a.wrapping_add(b),
        AluOp::Sub => a.wrapping_sub(b),
        AluOp::Mul => a.wrapping_mul(b),
        AluOp::Div | AluOp::Mod if signed => {
            let (x, y) = if is64 {
                (a as i64, b as i64)
            } else {
                (a as u32 as i32 as i64, b as u32 as i32 as i64)
            };
            match (op, y) {
                (AluOp::Div, 0) => 0,
                (AluOp::Mod, 0) => x as u64,
                (AluOp::Div, _) => x.wrapping_div(y) as u64,
                _ => x.wrapping_rem(y) as u64,
            }
        }
        AluOp::Div => a.checked_div(b).unwrap_or(0),
        AluOp::Mod => a.checked_rem(b).unwrap_or(a),
        AluOp::Or => a | b,
        AluOp::And => a & b,
        AluOp::Xor => a ^ b,
        AluOp::Lsh => a << sh,
        AluOp::Rsh => a >> sh,
        AluOp::Arsh if is64 => ((a as i64) >> sh) as u64,
        AluOp::Arsh => ((a as u32 as i32) >> sh) as u32 as u64,
        AluOp::Neg => a.wrapping_neg(),
        AluOp::Mov => b,
        AluOp::End => a,
    };
    if is64 {
        r
    } else {
        r & 0xffff_ffff
    }
}

/// `a op b` on ranges: what the verifier knows of the result.
pub fn alu(op: AluOp, a: Sc, b: Sc, is64: bool, signed: bool) -> Sc {
    if let (Some(x), Some(y)) = (a.value(), b.value()) {
        return Sc::konst(fold(op, x, y, is64, signed));
    }
    if !is64 {
        let (a, b) = (a.low32(), b.low32());
        return match op {
            AluOp::And => Sc::urange(0, a.umax.min(b.umax)),
            AluOp::Rsh if b.value().is_some() => Sc::urange(a.umin >> (b.umin & 31), a.umax >> (b.umin & 31)),
            AluOp::Add if a.umax + b.umax <= u32::MAX as u64 => Sc::urange(a.umin + b.umin, a.umax + b.umax),
            _ => Sc::urange(0, u32::MAX as u64),
        };
    }
    let r = match op {
        AluOp::Add => bounds(
            a.umin.checked_add(b.umin).zip(a.umax.checked_add(b.umax)),
            a.smin.checked_add(b.smin).zip(a.smax.checked_add(b.smax)),
        ),
        AluOp::Sub => bounds(
            (a.umin >= b.umax).then(|| (a.umin - b.umax, a.umax - b.umin)),
            a.smin.checked_sub(b.smax).zip(a.smax.checked_sub(b.smin)),
        ),
        AluOp::Mul => match a.umax.checked_mul(b.umax) {
            Some(hi) => Sc::urange(a.umin * b.umin, hi),
            None => Sc::UNKNOWN,
        },
        AluOp::And => Sc::urange(0, a.umax.min(b.umax)),
        AluOp::Or => Sc::urange(a.umin.max(b.umin), mask_upto(a.umax.max(b.umax))),
        AluOp::Xor => Sc::urange(0, mask_upto(a.umax.max(b.umax))),
        AluOp::Lsh => match b.value() {
            // The kernel's test (`__scalar64_min_max_lsh`): umax <= 2^(63-k), one bit stricter
            // than "no bit shifted out".
            Some(k) if k < 64 && a.umax <= 1u64 << (63 - k) => Sc::urange(a.umin << k, a.umax << k),
            _ => Sc::UNKNOWN,
        },
        AluOp::Rsh => match b.value() {
            Some(k) if k < 64 => Sc::urange(a.umin >> k, a.umax >> k),
            _ => Sc::urange(0, a.umax),
        },
        AluOp::Arsh => match b.value() {
            Some(k) if k < 64 => Sc::srange(a.smin >> k, a.smax >> k),
            _ => Sc::UNKNOWN,
        },
        _ => Sc::UNKNOWN,
    };
    r.sync()
}

/// The bounds of a sum or difference: unknown where it may overflow.
fn bounds(u: Option<(u64, u64)>, s: Option<(i64, i64)>) -> Sc {
    let (umin, umax) = u.unwrap_or((0, u64::MAX));
    let (smin, smax) = s.unwrap_or((i64::MIN, i64::MAX));
    Sc { umin, umax, smin, smax }
}

/// A byte swap or truncation (`be16`, `le32`, ...) of `a`.
pub fn end(a: Sc, bits: i32, swap: bool) -> Sc {
    match a.value() {
        Some(v) => Sc::konst(match (bits, swap) {
            (16, true) => (v as u16).swap_bytes() as u64,
            (32, true) => (v as u32).swap_bytes() as u64,
            (64, true) => v.swap_bytes(),
            (16, false) => v as u16 as u64,
            (32, false) => v as u32 as u64,
            _ => v,
        }),
        None if bits == 16 || bits == 32 => Sc::urange(0, (1u64 << bits) - 1),
        None => Sc::UNKNOWN,
    }
}

/// A sign-extending move of the low `bits` bits.
pub fn sign_extend(a: Sc, bits: i16) -> Sc {
    match (a.value(), bits) {
        (Some(v), 8) => Sc::konst(v as i8 as i64 as u64),
        (Some(v), 16) => Sc::konst(v as i16 as i64 as u64),
        (Some(v), 32) => Sc::konst(v as i32 as i64 as u64),
        (_, b) if (8..=32).contains(&b) => Sc::loaded(b as u32 / 8, true),
        _ => a,
    }
}

/// Whether `a op b` always holds (Some(true)), never (Some(false)), or may go both ways.
pub fn decide(op: JmpOp, a: &Sc, b: &Sc) -> Option<bool> {
    use JmpOp::*;
    match op {
        Jeq => {
            if a.value().is_some() && a.value() == b.value() {
                Some(true)
            } else if a.umax < b.umin || b.umax < a.umin || a.smax < b.smin || b.smax < a.smin {
                Some(false)
            } else {
                None
            }
        }
        Jne => decide(Jeq, a, b).map(|t| !t),
        Jgt => cmp(a.umin > b.umax, a.umax <= b.umin),
        Jge => cmp(a.umin >= b.umax, a.umax < b.umin),
        Jlt => decide(Jgt, b, a),
        Jle => decide(Jge, b, a),
        Jsgt => cmp(a.smin > b.smax, a.smax <= b.smin),
        Jsge => cmp(a.smin >= b.smax, a.smax < b.smin),
        Jslt => decide(Jsgt, b, a),
        Jsle => decide(Jsge, b, a),
        Jset => match (a.value(), b.value()) {
            (Some(x), Some(y)) => Some(x & y != 0),
            (_, Some(y)) if a.umax < (y & y.wrapping_neg()) => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn cmp(always: bool, never: bool) -> Option<bool> {
    if always {
        Some(true)
    } else if never {
        Some(false)
    } else {
        None
    }
}

/// Narrows `a` and `b` by the knowledge that `a op b` holds (the kernel's
/// `regs_refine_cond_op`).
pub fn refine(op: JmpOp, a: &mut Sc, b: &mut Sc) {
    refine_unsynced(op, a, b);
    *a = a.sync();
    *b = b.sync();
}

/// `refine` but for the last `sync` of each range, left to the caller: a compare with a
/// constant needs only its register's.
pub fn refine_unsynced(op: JmpOp, a: &mut Sc, b: &mut Sc) {
    use JmpOp::*;
    match op {
        Jeq => {
            let m = Sc {
                umin: a.umin.max(b.umin),
                umax: a.umax.min(b.umax),
                smin: a.smin.max(b.smin),
                smax: a.smax.min(b.smax),
            };
            *a = m;
            *b = m;
        }
        Jne => {
            let (oa, ob) = (*a, *b);
            for (x, y) in [(&mut *a, ob), (&mut *b, oa)] {
                if let Some(v) = y.value() {
                    if x.umin == v && x.umin < x.umax {
                        x.umin += 1;
                    }
                    if x.umax == v && x.umin < x.umax {
                        x.umax -= 1;
                    }
                    if x.smin == v as i64 && x.smin < x.smax {
                        x.smin += 1;
                    }
                    if x.smax == v as i64 && x.smin < x.smax {
                        x.smax -= 1;
                    }
                }
            }
        }
        Jgt => {
            a.umin = a.umin.max(b.umin.saturating_add(1));
            b.umax = b.umax.min(a.umax.saturating_sub(1));
        }
        Jge => {
            a.umin = a.umin.max(b.umin);
            b.umax = b.umax.min(a.umax);
        }
        Jsgt => {
            a.smin = a.smin.max(b.smin.saturating_add(1));
            b.smax = b.smax.min(a.smax.saturating_sub(1));
        }
        Jsge => {
            a.smin = a.smin.max(b.smin);
            b.smax = b.smax.min(a.smax);
        }
        Jlt | Jle | Jslt | Jsle => refine(op.swap(), b, a),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_counters_decide_their_bound() {
        let i = alu(AluOp::Add, Sc::konst(3), Sc::konst(2), true, false);
        assert_eq!(decide(JmpOp::Jsle, &i, &Sc::konst(5)), Some(true));
        assert_eq!(decide(JmpOp::Jsle, &Sc::konst(7), &Sc::konst(5)), Some(false));
    }

    #[test]
    fn masks_bound_unknown_values() {
        let k = alu(AluOp::And, Sc::UNKNOWN, Sc::konst(31), true, false);
        assert_eq!((k.umin, k.umax), (0, 31));
        assert_eq!(decide(JmpOp::Jgt, &k, &Sc::konst(31)), Some(false));
        assert_eq!(decide(JmpOp::Jgt, &k, &Sc::konst(30)), None);
    }

    #[test]
    fn a_taken_compare_narrows_both_sides() {
        let (mut a, mut b) = (Sc::UNKNOWN, Sc::konst(3));
        refine(JmpOp::Jlt, &mut a, &mut b);
        assert_eq!((a.umin, a.umax), (0, 2));
        assert_eq!(decide(JmpOp::Jlt, &a, &Sc::konst(3)), Some(true));
    }

    /// `sync` stops after a pass that changes nothing: the same result as two passes always.
    #[test]
    fn sync_is_two_passes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly small values and the edges, where the two orders meet.
            match x % 4 {
                0 => x,
                1 => x % 64,
                2 => (x % 64).wrapping_neg(),
                _ => [0, u64::MAX, i64::MAX as u64, i64::MIN as u64][(x >> 8) as usize % 4],
            }
        };
        for _ in 0..100_000 {
            let s = Sc {
                umin: next(),
                umax: next(),
                smin: next() as i64,
                smax: next() as i64,
            };
            assert_eq!(s.sync(), s.sync_once().sync_once(), "{s:?}");
        }
    }
}
