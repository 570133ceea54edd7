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
use crate::program::Hook;
use crate::types::Checked;

/// The kernel's limit on processed instructions.
pub const VERIFIER_BUDGET: u64 = 1_000_000;

struct Estimator<'a> {
    checked: &'a Checked,
    outline_ok: bool,
    /// Inlined cost of each function instance.
    memo: HashMap<usize, u64>,
    /// Functions compiled on their own: each verified once.
    separate: HashMap<usize, u64>,
    loop_depth: u32,
    /// The first loop found over budget: (span, estimate).
    blame: Option<(crate::source::Span, u64)>,
    multiplier: u64,
}

/// Refuses a program whose estimated verification exceeds the kernel's budget.
pub fn check(checked: &Checked, hook: &Hook) -> Result<u64, Vec<Diagnostic>> {
    let mut e = Estimator {
        checked,
        outline_ok: !matches!(hook, Hook::Netfilter { .. }),
        memo: HashMap::new(),
        separate: HashMap::new(),
        loop_depth: 0,
        blame: None,
        multiplier: 1,
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
    Ok(total)
}

fn group(n: u64) -> String {
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
        stmts.iter().map(|s| self.stmt(s)).fold(0u64, u64::saturating_add)
    }

    fn stmt(&mut self, s: &Stmt) -> u64 {
        match &s.kind {
            StmtKind::Local { values, .. } | StmtKind::SetLocals { values, .. } | StmtKind::Return(values) => 1 + self.exprs(values),
            StmtKind::SetLocal { value, .. } => 1 + self.expr(value),
            StmtKind::MapSet { key, value, .. } => 30 + self.expr(key) + value.as_ref().map(|v| self.expr(v)).unwrap_or(0),
            StmtKind::MapAdd { key, delta, .. } => 40 + self.expr(key) + self.expr(delta),
            StmtKind::FieldSet { base, value, .. } => 3 + self.expr(base) + self.expr(value),
            StmtKind::PacketStore { off, value, .. } => 8 + self.expr(off) + self.expr(value),
            StmtKind::PacketStoreString { off, value } => 20 + self.expr(off) + self.expr(value),
            StmtKind::CtxStore { value, .. } => 2 + self.expr(value),
            StmtKind::If { cond, then_, else_ } => {
                let c = self.expr(cond) + 1;
                c.saturating_add(self.stmts(then_)).saturating_add(self.stmts(else_))
            }
            StmtKind::While { cond, body } => self.looped(s, LOOP_CAP as u64, |e| e.expr(cond) + 4 + e.stmts(body)),
            StmtKind::Repeat { body, cond } => self.looped(s, LOOP_CAP as u64, |e| e.expr(cond) + 4 + e.stmts(body)),
            StmtKind::NumFor { start, limit, step, body, .. } => {
                let trips = match (&start.kind, &limit.kind) {
                    (ExprKind::Int(a), ExprKind::Int(b)) => {
                        let n = if *step > 0 { (*b as i128 - *a as i128) / *step as i128 + 1 } else { (*a as i128 - *b as i128) / -(*step as i128) + 1 };
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
        let saved = self.multiplier;
        self.multiplier = self.multiplier.saturating_mul(trips.max(1));
        self.loop_depth += 1;
        let per_iteration = body(self);
        self.loop_depth -= 1;
        self.multiplier = saved;
        let cost = per_iteration.saturating_mul(trips);
        let total = cost.saturating_mul(saved);
        if total > VERIFIER_BUDGET && self.blame.is_none() {
            self.blame = Some((s.span, total));
        }
        cost
    }

    fn exprs(&mut self, es: &[Expr]) -> u64 {
        es.iter().map(|e| self.expr(e)).fold(0u64, u64::saturating_add)
    }

    fn expr(&mut self, e: &Expr) -> u64 {
        match &e.kind {
            ExprKind::Int(_) | ExprKind::Bool(_) | ExprKind::Nil | ExprKind::Str(_) | ExprKind::Local(_) => 1,
            ExprKind::Packet | ExprKind::Ctx | ExprKind::CtxField(_) | ExprKind::PacketLen => 2,
            ExprKind::Unwrap(x) | ExprKind::Wrap(x) | ExprKind::Neg(x) | ExprKind::BNot(x) | ExprKind::Not(x) | ExprKind::IsNil(x) | ExprKind::StrLen(x) => 1 + self.expr(x),
            ExprKind::Arith(op, a, b) => {
                let own = match op {
                    crate::hir::ArithOp::IDiv | crate::hir::ArithOp::Mod => 12,
                    crate::hir::ArithOp::Shl | crate::hir::ArithOp::Shr => 8,
                    _ => 2,
                };
                own + self.expr(a) + self.expr(b)
            }
            ExprKind::Compare(_, a, b) => {
                let own = if a.ty == crate::hir::Ty::Str { 70 } else { 2 };
                own + self.expr(a) + self.expr(b)
            }
            ExprKind::And(a, b) | ExprKind::Or(a, b) => 3 + self.expr(a) + self.expr(b),
            ExprKind::PacketLoad { off, .. } => 8 + self.expr(off),
            ExprKind::PacketString { off, len } => 45 + self.expr(off) + self.expr(len),
            ExprKind::MapGet { key, .. } => 30 + self.expr(key),
            ExprKind::Field { base, .. } => 3 + self.expr(base),
            ExprKind::StrByte(s, i) => 15 + self.expr(s) + self.expr(i),
            ExprKind::Builtin { args, .. } => 4 + self.exprs(args),
            ExprKind::RecordCtor { fields, .. } => 10 + fields.iter().map(|(_, e)| self.expr(e)).sum::<u64>(),
            ExprKind::Call { func, args } => {
                let a = self.exprs(args);
                let callee: &Func = &self.checked.funcs[*func];
                if self.outline_ok && self.loop_depth > 0 && outline_signature(callee).is_some() && has_loop(&callee.body) {
                    // Verified on its own, once: its cost is not multiplied by our loops.
                    if !self.separate.contains_key(func) {
                        let saved = (self.multiplier, self.loop_depth);
                        self.multiplier = 1;
                        self.loop_depth = 0;
                        let c = self.stmts(&callee.body);
                        (self.multiplier, self.loop_depth) = saved;
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
