//! A map lookup into a local moves down to the block that uses the local.
//!
//! `local expected = cookies[saddr]` before a scan whose match branch alone reads `expected`
//! makes the verifier walk the scan twice: once with the key found, once without (the found
//! flag is a known constant on each path). Looked up in the match branch, as C code does it
//! after the scan, the scan is walked once. The move is exact when nothing between the two
//! places can change what the lookup finds: the key is a local nobody assigns there, and
//! nothing there writes the map (no store, add or delete, no record field, no called function
//! that does). A lookup cannot fail (an unrepresentable key is a miss), so doing it later, or
//! not at all when the block is not reached, is the same program. Into a loop body it moves
//! only where that body leaves the loop: a local is one snapshot of the map, and lookups
//! repeated per pass could see another CPU's update in between.

use crate::hir::{Expr, ExprKind, Func, LocalId, Stmt, StmtKind};
use crate::program::MapId;

fn expr_any(e: &Expr, p: &mut impl FnMut(&Expr) -> bool) -> bool {
    p(e) || e.children().into_iter().any(|x| expr_any(x, p))
}

/// Whether `p` holds for a statement of `stmts` (nested ones included) or one of their
/// expressions.
fn any(stmts: &[Stmt], s_pred: &mut impl FnMut(&Stmt) -> bool, e_pred: &mut impl FnMut(&Expr) -> bool) -> bool {
    stmts.iter().any(|s| {
        s_pred(s)
            || s.own_exprs().into_iter().any(|e| expr_any(e, e_pred))
            || s.bodies().into_iter().any(|b| any(b, s_pred, e_pred))
    })
}

fn uses(stmts: &[Stmt], x: LocalId) -> bool {
    any(stmts, &mut |_| false, &mut |e| e.kind == ExprKind::Local(x))
}

fn stmt_uses(s: &Stmt, x: LocalId) -> bool {
    uses(std::slice::from_ref(s), x)
}

fn assigns(stmts: &[Stmt], x: LocalId) -> bool {
    any(
        stmts,
        &mut |s| match &s.kind {
            StmtKind::SetLocal { local, .. } => *local == x,
            StmtKind::SetLocals { locals, .. } | StmtKind::Local { locals, .. } => locals.contains(&x),
            StmtKind::NumFor { var, .. } => *var == x,
            _ => false,
        },
        &mut |_| false,
    )
}

/// Whether running `stmts` may write `map`, through the functions it calls too.
fn writes_map(stmts: &[Stmt], map: MapId, funcs: &[Func], seen: &mut Vec<usize>) -> bool {
    let mut callees = Vec::new();
    let direct = any(
        stmts,
        &mut |s| match &s.kind {
            StmtKind::MapSet { map: m, .. } | StmtKind::MapAdd { map: m, .. } | StmtKind::FieldSet { map: m, .. } => {
                *m == map
            }
            _ => false,
        },
        &mut |e| match &e.kind {
            ExprKind::RecordCtor { map: m, .. } => *m == map,
            ExprKind::Call { func, .. } => {
                callees.push(*func);
                false
            }
            _ => false,
        },
    );
    direct
        || callees.into_iter().any(|f| {
            if seen.contains(&f) {
                return false;
            }
            seen.push(f);
            // A function whose body is out for rewriting (or unknown) counts as writing.
            funcs
                .get(f)
                .is_none_or(|func| func.body.is_empty() || writes_map(&func.body, map, funcs, seen))
        })
}

/// Where in `stmts` (a path of statement and body indices, then a position) the uses of `x`
/// can all be reached from: into the single statement that uses `x`, through the single body
/// of it that does, as long as the statement's own expressions do not.
fn target(stmts: &[Stmt], x: LocalId) -> Option<(Vec<(usize, usize)>, usize)> {
    let users: Vec<usize> = (0..stmts.len()).filter(|&i| stmt_uses(&stmts[i], x)).collect();
    let &first = users.first()?;
    if users.len() > 1
        || stmts[first]
            .own_exprs()
            .into_iter()
            .any(|e| expr_any(e, &mut |e| e.kind == ExprKind::Local(x)))
    {
        return Some((Vec::new(), first));
    }
    let bs = stmts[first].bodies();
    let inner: Vec<usize> = (0..bs.len()).filter(|&k| uses(bs[k], x)).collect();
    match inner.as_slice() {
        [k] => {
            let (mut path, at) = target(bs[*k], x)?;
            path.insert(0, (first, *k));
            Some((path, at))
        }
        _ => Some((Vec::new(), first)),
    }
}

/// Whether a statement inserted in the body at `path` runs at most once for each time the
/// original place ran: a local is one snapshot of the map, and a lookup repeated per loop pass
/// could see another CPU's update between two passes. So a move into a loop body is made only
/// when that body ends by leaving the loop (`break` out of the one loop crossed, `return`, or
/// an error).
fn runs_at_most_once(stmts: &[Stmt], path: &[(usize, usize)]) -> bool {
    let mut loops = 0;
    let mut body = stmts;
    for &(i, k) in path {
        if matches!(
            body[i].kind,
            StmtKind::While { .. } | StmtKind::Repeat { .. } | StmtKind::NumFor { .. }
        ) {
            loops += 1;
        }
        body = body[i].bodies()[k];
    }
    match body.last().map(|s| &s.kind) {
        _ if loops == 0 => true,
        Some(StmtKind::Return(_) | StmtKind::Error) => true,
        Some(StmtKind::Break) => loops == 1,
        _ => false,
    }
}

fn body_at<'a>(stmts: &'a mut Vec<Stmt>, path: &[(usize, usize)]) -> &'a mut Vec<Stmt> {
    match path.split_first() {
        None => stmts,
        Some((&(i, k), rest)) => {
            let b = stmts[i].bodies_mut().swap_remove(k);
            body_at(b, rest)
        }
    }
}

/// For the lookup `local x = m[k]` at `stmts[i]`, when it may move: the body to move it to
/// (statement and body indices from `stmts`) and the position in that body.
fn movable_lookup(stmts: &[Stmt], i: usize, funcs: &[Func]) -> Option<(Vec<(usize, usize)>, usize)> {
    let StmtKind::Local { locals, values } = &stmts[i].kind else {
        return None;
    };
    let ([x], [value]) = (locals.as_slice(), values.as_slice()) else {
        return None;
    };
    let ExprKind::MapGet { map, key } = &value.kind else {
        return None;
    };
    let key_stable = match &key.kind {
        ExprKind::Int(_) => true,
        ExprKind::Local(k) => !assigns(&stmts[i + 1..], *k),
        _ => false,
    };
    let rest = &stmts[i + 1..];
    if !key_stable || assigns(rest, *x) || writes_map(rest, *map, funcs, &mut Vec::new()) {
        return None;
    }
    let (path, at) = target(rest, *x)?;
    // Moving within the same body gains nothing.
    if path.is_empty() || !runs_at_most_once(rest, &path) {
        return None;
    }
    let mut path = path;
    path[0].0 += i + 1;
    Some((path, at))
}

fn sink_in(stmts: &mut Vec<Stmt>, funcs: &[Func]) -> bool {
    let mut changed = false;
    let mut i = 0;
    while i < stmts.len() {
        if let Some((mut path, at)) = movable_lookup(stmts, i, funcs) {
            let decl = stmts.remove(i);
            path[0].0 -= 1;
            body_at(stmts, &path).insert(at, decl);
            changed = true;
            continue;
        }
        i += 1;
    }
    for s in stmts.iter_mut() {
        for b in s.bodies_mut() {
            changed |= sink_in(b, funcs);
        }
    }
    changed
}

/// Moves the map lookups of every function down to the blocks that use them.
pub fn sink_lookups(funcs: &mut [Func]) -> bool {
    let mut changed = false;
    for i in 0..funcs.len() {
        let mut body = std::mem::take(&mut funcs[i].body);
        changed |= sink_in(&mut body, funcs);
        funcs[i].body = body;
    }
    changed
}

#[cfg(test)]
mod tests {
    use crate::compile::{annotated_asm, compile_source};

    fn asm(src: &str) -> String {
        let c = compile_source(src, "t.lua", &Default::default()).unwrap_or_else(|e| panic!("{}", e.render()));
        annotated_asm(&c.object)
    }

    /// Index in the listing of the first lookup call and of the scan's loop test.
    fn lookup_after_scan_start(out: &str) -> bool {
        let lookup = out.find("bpf_map_lookup_elem").expect("a lookup");
        let scan = out.find("for i = 0, 63 do").expect("the scan");
        lookup > scan
    }

    fn assert_lookup_stays(src: &str) {
        let out = asm(src);
        assert!(
            !lookup_after_scan_start(&out),
            "the lookup stays before the scan:\n{out}"
        );
    }

    const PROGRAM: &str = r#"
local xdp = require "bpf.xdp"
local map = require "bpf.map"
local m = map.hash("m", { key = "I8", value = "I8", entries = 4 })
return xdp.program(function(ctx)
  local p = ctx:packet()
  local k = p:getbyte(0)
  local want = m[k]
  for i = 0, 63 do
    if p:getbyte(i) == 7 then
      if want and want == i then return 1 end
      break
    end
    WRITE
  end
  return 2
end, { name = "t" })
"#;

    /// The lookup moves into the scan's match branch, the only place that reads it.
    #[test]
    fn a_lookup_read_only_in_a_branch_of_a_scan_moves_into_it() {
        let out = asm(&PROGRAM.replace("WRITE", ""));
        assert!(lookup_after_scan_start(&out), "the lookup is made in the scan:\n{out}");
    }

    /// A branch that does not leave the scan could run on every pass: the lookup stays.
    #[test]
    fn a_lookup_stays_out_of_a_branch_that_stays_in_the_loop() {
        assert_lookup_stays(&PROGRAM.replace("WRITE", "").replace("      break\n", ""));
    }

    /// A write of the map in the scan could change what the lookup finds: it stays.
    #[test]
    fn a_lookup_stays_before_a_write_of_its_map() {
        assert_lookup_stays(&PROGRAM.replace("WRITE", "m[i] = 1"));
    }

    /// So does one whose key the scan changes.
    #[test]
    fn a_lookup_stays_before_a_change_of_its_key() {
        assert_lookup_stays(&PROGRAM.replace("WRITE", "k = k + 1"));
    }
}
