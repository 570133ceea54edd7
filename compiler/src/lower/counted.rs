//! `while` loops that count: `while n < K and ... do ... n = n + c end`. Their trip count is
//! bounded by the condition itself, so when it is within the hidden bound (`LOOP_CAP`) from
//! where `n` starts, the hidden iteration counter can never fire and is left out: two
//! instructions less per iteration, and a loop the verifier walks with one precise variable.

use crate::hir::{ArithOp, CmpOp, Expr, ExprKind, LocalId, Stmt, StmtKind};

/// The counting variable of a `while` loop and how its trip count follows from its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Counted {
    pub var: LocalId,
    /// The loop runs while `var < limit` (`var <= limit - 1`).
    limit: i64,
    step: i64,
}

impl Counted {
    /// The most iterations the loop can start when `var` enters it at `start`.
    pub fn max_trips(&self, start: i64) -> i128 {
        let span = self.limit as i128 - start as i128;
        if span <= 0 {
            0
        } else {
            (span + self.step as i128 - 1) / self.step as i128
        }
    }
}

/// `var < K` or `var <= K` among the conjuncts of `cond`, where the body's top level adds a
/// positive constant to `var` (so every iteration that comes back has added it: the rest of
/// the body can only leave the loop before it) and nothing else in the body assigns `var`.
pub(super) fn counted(cond: &Expr, body: &[Stmt]) -> Option<Counted> {
    let mut bounds = Vec::new();
    conjuncts(cond, &mut bounds);
    bounds.into_iter().find_map(|(var, limit)| {
        let step = body.iter().find_map(|s| increment(s, var))?;
        let assigned = body.iter().filter(|s| assigns(s, var)).count();
        // The increment is the only assignment, and `limit + step` cannot wrap.
        (assigned == 1 && step > 0 && limit.checked_add(step).is_some()).then_some(Counted { var, limit, step })
    })
}

/// The `(var, exclusive limit)` tests an `and` chain makes.
fn conjuncts(e: &Expr, out: &mut Vec<(LocalId, i64)>) {
    match &e.kind {
        ExprKind::And(a, b) => {
            conjuncts(a, out);
            conjuncts(b, out);
        }
        ExprKind::Compare(op, a, b) => match (op, &a.kind, &b.kind) {
            (CmpOp::Lt, ExprKind::Local(v), ExprKind::Int(k)) | (CmpOp::Gt, ExprKind::Int(k), ExprKind::Local(v)) => {
                out.push((*v, *k))
            }
            (CmpOp::Le, ExprKind::Local(v), ExprKind::Int(k)) | (CmpOp::Ge, ExprKind::Int(k), ExprKind::Local(v)) => {
                if let Some(k) = k.checked_add(1) {
                    out.push((*v, k))
                }
            }
            _ => {}
        },
        _ => {}
    }
}

/// `var = var + c` (or `c + var`) as this statement: `c`.
fn increment(s: &Stmt, var: LocalId) -> Option<i64> {
    let StmtKind::SetLocal { local, value } = &s.kind else {
        return None;
    };
    if *local != var {
        return None;
    }
    match &value.kind {
        ExprKind::Arith(ArithOp::Add, a, b) => match (&a.kind, &b.kind) {
            (ExprKind::Local(v), ExprKind::Int(c)) | (ExprKind::Int(c), ExprKind::Local(v)) if *v == var => Some(*c),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `s` or a statement nested in it assigns `var`.
fn assigns(s: &Stmt, var: LocalId) -> bool {
    let here = match &s.kind {
        StmtKind::SetLocal { local, .. } => *local == var,
        StmtKind::SetLocals { locals, .. } | StmtKind::Local { locals, .. } => locals.contains(&var),
        StmtKind::NumFor { var: v, .. } => *v == var,
        _ => false,
    };
    here || s.bodies().iter().any(|b| b.iter().any(|s| assigns(s, var)))
}

#[cfg(test)]
mod tests {
    /// Whether the compiled loop keeps the hidden bound (a compare with LOOP_CAP).
    fn keeps_bound(setup: &str, body: &str) -> bool {
        let src = format!(
            r#"
local xdp = require "bpf.xdp"
return xdp.program(function(ctx)
  local p = ctx:packet()
  local len = #p
  {setup}
  while n < 16 and n ~= len do
    {body}
  end
  return n
end, {{ name = "t" }})
"#
        );
        let c = crate::compile::compile_source(&src, "t.lua", &Default::default())
            .unwrap_or_else(|e| panic!("{}", e.render()));
        crate::compile::annotated_asm(&c.object).contains("1024")
    }

    #[test]
    fn a_loop_counting_from_a_constant_to_its_limit_has_no_hidden_bound() {
        assert!(!keeps_bound("local n = 0", "n = n + 1"));
        assert!(!keeps_bound("local n = -1000", "n = 2 + n"));
    }

    /// The start is unknown, the limit is too far, the variable also changes elsewhere, or
    /// the increment is inside a branch: the hidden bound stays.
    #[test]
    fn other_loops_keep_the_hidden_bound() {
        assert!(keeps_bound("local n = len - 2000", "n = n + 1"));
        assert!(keeps_bound("local n = -1010", "n = n + 1"));
        assert!(keeps_bound("local n = 0", "n = n + 1\n    if len == 1 then n = 0 end"));
        assert!(keeps_bound("local n = 0", "if len > 1 then n = n + 1 end"));
        assert!(keeps_bound("local n = 0", "n = n + 0"));
    }
}
