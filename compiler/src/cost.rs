//! An estimate of the verifier's work, so that `luabpf check` refuses what the kernel would.
//!
//! The verifier walks every path and every loop iteration it cannot prune, up to 1,000,000
//! processed instructions. Loops are what blow that budget: their iterations multiply. The
//! estimate counts roughly the instructions each construct lowers to, multiplies loop bodies
//! by their trip counts (the hidden bound for loops without a constant one), counts both sides
//! of every branch, and counts a function that is compiled on its own (see `lower`) once.
//! A loop nest whose estimate exceeds the budget is refused with a diagnostic on the loop.

use std::collections::HashMap;

use crate::diag::Diagnostic;
use crate::hir::{Expr, ExprKind, Func, Stmt, StmtKind};
use crate::lower::{has_loop, outline_signature, LOOP_CAP};
use crate::types::Checked;

/// The kernel's limit on processed instructions.
pub const VERIFIER_BUDGET: u64 = 1_000_000;
/// The kernel's limit on branches pending exploration along one path
/// (BPF_COMPLEXITY_LIMIT_JMP_SEQ), kept with a margin: every unpredictable branch in a loop
/// that the verifier unrolls stays pending until the loop's end.
pub const JUMP_BUDGET: u64 = 7_000;
/// Costs are clamped here so that sums over huge nests cannot overflow.
const CLAMP: u64 = 1 << 40;

struct Estimator<'a> {
    checked: &'a Checked,
    /// Inlined cost of each function instance.
    memo: HashMap<usize, u64>,
    /// Functions compiled on their own: each verified once.
    separate: HashMap<usize, u64>,
    loop_depth: u32,
    /// The first loop found over budget: (span, estimate).
    blame: Option<(crate::source::Span, u64)>,
    /// The first loop whose unrolled branches exceed JUMP_BUDGET: (span, estimate).
    jump_blame: Option<(crate::source::Span, u64)>,
    multiplier: u64,
    /// Branches pending in the verifier along the longest path, roughly.
    jumps: u64,
}

/// Refuses a program whose estimated verification exceeds the kernel's budget.
pub fn check(checked: &Checked) -> Result<u64, Vec<Diagnostic>> {
    let mut e = Estimator {
        checked,
        memo: HashMap::new(),
        separate: HashMap::new(),
        loop_depth: 0,
        blame: None,
        jump_blame: None,
        multiplier: 1,
        jumps: 0,
    };
    let entry = &checked.funcs[checked.entry];
    let main = e.stmts(&entry.body);
    let total = main.saturating_add(e.separate.values().copied().max().unwrap_or(0));
    if let Some((span, est)) = e.blame {
        return Err(vec![Diagnostic::new(
            span,
            format!("this loop may take the kernel's verifier about {} steps; its limit is {}", group(est), group(VERIFIER_BUDGET)),
            "the verifier follows every iteration of this loop",
        )
        .hint(format!(
            "give it a smaller constant bound (loops without one may run {LOOP_CAP} times), or move the inner loop into a function: a function with a loop, called inside a loop, is verified once"
        ))]);
    }
    if let Some((span, est)) = e.jump_blame {
        return Err(vec![Diagnostic::new(
            span,
            format!("this loop leaves the kernel's verifier about {} branches to follow; its limit is 8,192", group(est)),
            "every iteration's unpredictable branches stay pending",
        )
        .hint("bound the loop by a constant counter (for example `while n < 64 and ...`), or test fewer things per iteration")]);
    }
    Ok(total)
}

/// For `while n < K and ... do ... n = n + c ... end`: about K / c iterations, the bound the
/// verifier itself sees in the precise counter.
fn counted_trips(cond: &Expr, body: &[Stmt], until: bool) -> Option<u64> {
    fn bounds(e: &Expr, until: bool, out: &mut Vec<(usize, i64)>) {
        match &e.kind {
            // `while c1 and c2` and `until c1 or c2`: either bound ends the loop.
            ExprKind::And(a, b) if !until => {
                bounds(a, until, out);
                bounds(b, until, out);
            }
            ExprKind::Or(a, b) if until => {
                bounds(a, until, out);
                bounds(b, until, out);
            }
            ExprKind::Compare(op, a, b) => match (op, &a.kind, &b.kind) {
                _ if until != matches!(op, crate::hir::CmpOp::Ge | crate::hir::CmpOp::Gt)
                    && matches!(a.kind, ExprKind::Local(_)) => {}
                (crate::hir::CmpOp::Lt, ExprKind::Local(l), ExprKind::Int(k)) => out.push((*l, *k)),
                (crate::hir::CmpOp::Le, ExprKind::Local(l), ExprKind::Int(k)) => out.push((*l, k.saturating_add(1))),
                (crate::hir::CmpOp::Gt, ExprKind::Int(k), ExprKind::Local(l)) => out.push((*l, *k)),
                (crate::hir::CmpOp::Ge, ExprKind::Int(k), ExprKind::Local(l)) => out.push((*l, k.saturating_add(1))),
                // `until n >= K` / `until n > K`
                (crate::hir::CmpOp::Ge, ExprKind::Local(l), ExprKind::Int(k)) => out.push((*l, *k)),
                (crate::hir::CmpOp::Gt, ExprKind::Local(l), ExprKind::Int(k)) => out.push((*l, k.saturating_add(1))),
                _ => {}
            },
            _ => {}
        }
    }
    let mut bs = Vec::new();
    bounds(cond, until, &mut bs);
    bs.iter()
        .filter_map(|&(local, k)| {
            let step = body.iter().find_map(|s| match &s.kind {
                StmtKind::SetLocal { local: l, value } if *l == local => match &value.kind {
                    ExprKind::Arith(crate::hir::ArithOp::Add, a, b) => match (&a.kind, &b.kind) {
                        (ExprKind::Local(x), ExprKind::Int(c)) if *x == local && *c > 0 => Some(*c),
                        _ => None,
                    },
                    _ => None,
                },
                _ => None,
            })?;
            // Without knowing where the counter starts, assume 0 or above.
            Some((k.max(0) as u64).div_ceil(step as u64).min(LOOP_CAP as u64))
        })
        .min()
}

pub(crate) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Estimator<'_> {
    fn stmts(&mut self, stmts: &[Stmt]) -> u64 {
        stmts
            .iter()
            .map(|s| self.stmt(s))
            .fold(0u64, u64::saturating_add)
            .min(CLAMP)
    }

    fn stmt(&mut self, s: &Stmt) -> u64 {
        match &s.kind {
            StmtKind::Local { values, .. } | StmtKind::SetLocals { values, .. } | StmtKind::Return(values) => {
                1 + self.exprs(values)
            }
            StmtKind::SetLocal { value, .. } => 1 + self.expr(value),
            StmtKind::MapSet { key, value, .. } => {
                30 + self.expr(key) + value.as_ref().map(|v| self.expr(v)).unwrap_or(0)
            }
            StmtKind::MapAdd { key, delta, .. } => 40 + self.expr(key) + self.expr(delta),
            StmtKind::FieldSet { base, value, .. } => 3 + self.expr(base) + self.expr(value),
            StmtKind::PacketStore { off, value, .. } => 8 + self.expr(off) + self.expr(value),
            StmtKind::PacketStoreString { off, value } => 20 + self.expr(off) + self.expr(value),
            StmtKind::CtxStore { value, .. } => 2 + self.expr(value),
            StmtKind::If { cond, then_, else_ } => {
                self.branch();
                let c = self.expr(cond) + 1;
                // Branches of an arm that leaves (return, break, error) are explored apart
                // from the path that goes on, so they do not stay pending along it.
                let before = self.jumps;
                let t = self.stmts(then_);
                if crate::types::terminates(then_) {
                    self.jumps = before;
                }
                let before = self.jumps;
                let e = self.stmts(else_);
                if crate::types::terminates(else_) {
                    self.jumps = before;
                }
                c.saturating_add(t).saturating_add(e)
            }
            StmtKind::While { cond, body } => {
                let trips = counted_trips(cond, body, false).unwrap_or(LOOP_CAP as u64);
                self.looped(s, trips, |e| e.expr(cond) + 4 + e.stmts(body))
            }
            StmtKind::Repeat { body, cond } => {
                let trips = counted_trips(cond, body, true).unwrap_or(LOOP_CAP as u64);
                self.looped(s, trips, |e| e.expr(cond) + 4 + e.stmts(body))
            }
            StmtKind::NumFor {
                start,
                limit,
                step,
                body,
                ..
            } => {
                let trips = match (&start.kind, &limit.kind) {
                    (ExprKind::Int(a), ExprKind::Int(b)) => {
                        let n = if *step > 0 {
                            (*b as i128 - *a as i128) / *step as i128 + 1
                        } else {
                            (*a as i128 - *b as i128) / -(*step as i128) + 1
                        };
                        n.clamp(0, u32::MAX as i128) as u64
                    }
                    _ => LOOP_CAP as u64,
                };
                let setup = self.expr(start) + self.expr(limit);
                setup + self.looped(s, trips, |e| 5 + e.stmts(body))
            }
            StmtKind::Eval(e) => self.expr(e),
            StmtKind::Block(b) => self.stmts(b),
            StmtKind::Print { args, .. } => 10 + self.exprs(args),
            StmtKind::Break | StmtKind::Error => 1,
        }
    }

    /// A loop: its body costs `trips` times, inside any enclosing loops.
    fn looped(&mut self, s: &Stmt, trips: u64, body: impl FnOnce(&mut Self) -> u64) -> u64 {
        // A body that always leaves (ends in `break` or `return`) runs once.
        let trips = match &s.kind {
            StmtKind::While { body, .. } | StmtKind::Repeat { body, .. } | StmtKind::NumFor { body, .. }
                if crate::types::terminates(body) =>
            {
                1
            }
            _ => trips,
        };
        let saved = self.multiplier;
        self.multiplier = self.multiplier.saturating_mul(trips.max(1));
        self.loop_depth += 1;
        // The loop's own exit test (and hidden bound) are branches too.
        self.branch();
        let per_iteration = body(self);
        self.loop_depth -= 1;
        self.multiplier = saved;
        let cost = per_iteration.saturating_mul(trips).min(CLAMP);
        let total = cost.saturating_mul(saved);
        if total > VERIFIER_BUDGET && self.blame.is_none() {
            self.blame = Some((s.span, total));
        }
        if self.jumps > JUMP_BUDGET && self.jump_blame.is_none() && self.blame.is_none() {
            self.jump_blame = Some((s.span, self.jumps));
        }
        cost
    }

    /// A branch the verifier may not predict, once per enclosing iteration.
    fn branch(&mut self) {
        self.jumps = self.jumps.saturating_add(self.multiplier);
    }

    fn exprs(&mut self, es: &[Expr]) -> u64 {
        es.iter()
            .map(|e| self.expr(e))
            .fold(0u64, u64::saturating_add)
            .min(CLAMP)
    }

    fn expr(&mut self, e: &Expr) -> u64 {
        match &e.kind {
            ExprKind::Int(_) | ExprKind::Bool(_) | ExprKind::Nil | ExprKind::Str(_) | ExprKind::Local(_) => 1,
            ExprKind::Packet | ExprKind::Ctx | ExprKind::CtxField(_) | ExprKind::PacketLen => 2,
            ExprKind::Unwrap(x)
            | ExprKind::Wrap(x)
            | ExprKind::Neg(x)
            | ExprKind::BNot(x)
            | ExprKind::Not(x)
            | ExprKind::IsNil(x)
            | ExprKind::StrLen(x) => 1 + self.expr(x),
            ExprKind::Arith(op, a, b) => {
                // Lua's `//` and `%` test the remainder and its sign (and a run-time divisor
                // for 0 and -1); a shift by a run-time count tests its range and sign. Each
                // such test is a branch the verifier may not predict.
                let constant = match b.kind {
                    ExprKind::Int(k) => Some(k),
                    _ => None,
                };
                let (own, branches) = match op {
                    crate::hir::ArithOp::IDiv | crate::hir::ArithOp::Mod => (
                        12,
                        if constant.is_some_and(|k| k != 0 && k != -1) {
                            2
                        } else {
                            4
                        },
                    ),
                    crate::hir::ArithOp::Shl | crate::hir::ArithOp::Shr => (8, if constant.is_some() { 0 } else { 3 }),
                    _ => (2, 0),
                };
                for _ in 0..branches {
                    self.branch();
                }
                own + self.expr(a) + self.expr(b)
            }
            ExprKind::Compare(_, a, b) => {
                // Strings compare word by word: up to 32 branches for 255-byte buffers.
                let words = if a.ty == crate::hir::Ty::Str { 32 } else { 1 };
                for _ in 0..words {
                    self.branch();
                }
                let own = if a.ty == crate::hir::Ty::Str { 70 } else { 2 };
                own + self.expr(a) + self.expr(b)
            }
            ExprKind::OptEquals(a, b) => {
                self.branch();
                self.branch();
                4 + self.expr(a) + self.expr(b)
            }
            ExprKind::And(a, b) | ExprKind::Or(a, b) => {
                self.branch();
                3 + self.expr(a) + self.expr(b)
            }
            ExprKind::PacketLoad { off, .. } => {
                self.branch();
                8 + self.expr(off)
            }
            ExprKind::PacketString { off, len } => 45 + self.expr(off) + self.expr(len),
            ExprKind::MapGet { key, .. } => {
                self.branch();
                30 + self.expr(key)
            }
            ExprKind::Field { base, .. } => 3 + self.expr(base),
            ExprKind::StrByte(s, i) => {
                // Index sign, bounds and presence: several paths per use.
                for _ in 0..3 {
                    self.branch();
                }
                40 + self.expr(s) + self.expr(i)
            }
            ExprKind::Builtin { args, .. } => 4 + self.exprs(args),
            ExprKind::RecordCtor { fields, .. } => 10 + fields.iter().map(|(_, e)| self.expr(e)).sum::<u64>(),
            ExprKind::Call { func, args } => {
                let a = self.exprs(args);
                let callee: &Func = &self.checked.funcs[*func];
                if self.loop_depth > 0 && outline_signature(callee).is_some() && has_loop(&callee.body) {
                    // Verified on its own, once: its cost is not multiplied by our loops.
                    if !self.separate.contains_key(func) {
                        let saved = (self.multiplier, self.loop_depth, self.jumps);
                        self.multiplier = 1;
                        self.loop_depth = 0;
                        self.jumps = 0;
                        let c = self.stmts(&callee.body);
                        (self.multiplier, self.loop_depth, self.jumps) = saved;
                        self.separate.insert(*func, c);
                    }
                    return 15 + a;
                }
                if let Some(c) = self.memo.get(func) {
                    if self.loop_depth == 0 {
                        return a + c;
                    }
                }
                let c = self.stmts(&callee.body);
                if self.loop_depth == 0 {
                    self.memo.insert(*func, c);
                }
                a + c
            }
        }
    }
}
