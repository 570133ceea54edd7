//! The type checker: from a compiled function's syntax to the typed program (`hir`).
//!
//! It resolves names (locals, compile-time values captured from the body, the few globals),
//! folds compile-time values away (module tables, constants, maps, functions), infers one type
//! per local, narrows optionals along the paths where a test proved them non-nil, and refuses
//! everything outside the verifier-friendly subset with a diagnostic that says how to fix it.
//!
//! Lua functions are checked once per distinct argument types (an *instance*), which is what
//! lets lowering inline them. Recursion is refused, so instantiation always terminates.

use std::collections::{HashMap, HashSet};

use full_moon::ast::{
    self, punctuated::Punctuated, BinOp, Call, Expression, Field as AField, FunctionArgs, Index, LastStmt, Parameter,
    Prefix, Stmt as AStmt, Suffix, UnOp, Var,
};
use full_moon::node::Node;
use full_moon::tokenizer::{Symbol, TokenReference, TokenType};

use crate::diag::{Diagnostic, Diagnostics};
use crate::hir::*;
use crate::program::{ConstValue, Evaluated, FuncId, Hook, MapDecl, MapId, ProgramDecl, TableId};
use crate::source::{FileId, Span};
use runtime_bpf::object::{Format, MapKind};
use runtime_bpf::progtypes;

/// Every map of the object: the declared ones, then static tables turned into maps.
#[derive(Clone, Debug)]
pub struct MapTable {
    pub maps: Vec<MapDecl>,
    /// Initial contents, per map (empty for declared maps).
    pub init: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Static tables whose values are booleans (stored as one byte, 0 or 1).
    pub bool_values: HashSet<MapId>,
    static_of: HashMap<TableId, MapId>,
}

impl MapTable {
    pub fn new(ev: &Evaluated) -> MapTable {
        MapTable {
            maps: ev.maps.clone(),
            init: vec![Vec::new(); ev.maps.len()],
            bool_values: HashSet::new(),
            static_of: HashMap::new(),
        }
    }
}

/// One program, checked.
#[derive(Clone, Debug)]
pub struct Checked {
    pub funcs: Vec<Func>,
    pub entry: HirFuncId,
}

/// Checks the entry function of `prog` and everything it calls.
pub fn check_program(ev: &Evaluated, prog: &ProgramDecl, maps: &mut MapTable) -> Result<Checked, Diagnostics> {
    let mut c = Checker {
        ev,
        maps,
        hook: prog.hook.clone(),
        funcs: Vec::new(),
        instances: HashMap::new(),
        in_progress: Vec::new(),
        inner: Vec::new(),
        diags: Vec::new(),
    };
    let entry = c.instantiate(FnKey::Decl(prog.entry), vec![Ty::Ctx], prog.span, true);
    if !c.diags.is_empty() {
        return Err(c.diags);
    }
    match entry {
        Some(entry) => Ok(Checked { funcs: c.funcs, entry }),
        None => Err(vec![Diagnostic::new(
            prog.span,
            "the program's function could not be checked",
            "here",
        )]),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FnKey {
    Decl(FuncId),
    Inner(usize),
}

/// A function defined inside a compiled function (`local function f() ... end`).
#[derive(Clone, Debug)]
struct InnerFn {
    file: FileId,
    name: String,
    body: std::sync::Arc<ast::FunctionBody>,
    /// The enclosing function's offset (`SharedBody::offset`): the body is part of its tree.
    offset: usize,
    span: Span,
    /// The compile-time bindings visible where it was defined.
    env: Vec<(String, Known)>,
    /// Names of the enclosing function's locals: capturing one is refused.
    outer_locals: HashSet<String>,
}

/// The syntax of a function being instantiated: in place in its file's tree, or an inner
/// function's own copy (taken from the enclosing function's body when it was defined).
enum BodyRef {
    Shared(crate::shared_body::SharedBody),
    /// With its offset (`SharedBody::offset`), the enclosing function's.
    Own(std::sync::Arc<ast::FunctionBody>, usize),
}

impl BodyRef {
    fn offset(&self) -> usize {
        match self {
            BodyRef::Shared(body) => body.offset,
            BodyRef::Own(_, offset) => *offset,
        }
    }
}

impl std::ops::Deref for BodyRef {
    type Target = ast::FunctionBody;

    fn deref(&self) -> &ast::FunctionBody {
        match self {
            BodyRef::Shared(body) => body,
            BodyRef::Own(body, _) => body,
        }
    }
}

/// A compile-time value in scope.
#[derive(Clone, Debug, PartialEq)]
enum Known {
    Value(ConstValue),
    Inner(usize),
}

#[derive(Clone, Debug)]
enum Binding {
    Local(LocalId),
    Known(Known),
    /// A local whose declaration was refused: uses fail without a further diagnostic.
    Poisoned,
}

/// The result of checking an expression: a run-time value, or something only the compiler
/// knows (a module table, a map, a function).
#[derive(Clone, Debug)]
enum Val {
    Rt(Expr),
    Known(Known, Span),
}

struct FnState {
    file: FileId,
    /// Added to syntax positions to make file offsets (`SharedBody::offset`).
    offset: usize,
    locals: Vec<Local>,
    scopes: Vec<Vec<(String, Binding)>>,
    /// Optional locals proved non-nil at this point.
    narrowed: HashSet<LocalId>,
    results: Option<Vec<Ty>>,
    loop_depth: u32,
    /// Names that resolve to a local of the enclosing function (inner functions only).
    outer_locals: HashSet<String>,
}

struct Checker<'a> {
    ev: &'a Evaluated,
    maps: &'a mut MapTable,
    hook: Hook,
    funcs: Vec<Func>,
    instances: HashMap<(FnKey, Vec<Ty>), HirFuncId>,
    in_progress: Vec<FnKey>,
    inner: Vec<InnerFn>,
    diags: Diagnostics,
}

type R<T> = Result<T, ()>;

fn ident(tok: &TokenReference) -> String {
    match tok.token_type() {
        TokenType::Identifier { identifier } => identifier.as_str().to_string(),
        _ => tok.token().to_string(),
    }
}

impl<'a> Checker<'a> {
    // ---- diagnostics --------------------------------------------------------------------

    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn refuse<T>(
        &mut self,
        span: Span,
        msg: impl Into<String>,
        label: impl Into<String>,
        hint: impl Into<String>,
    ) -> R<T> {
        self.err(Diagnostic::new(span, msg, label).hint(hint));
        Err(())
    }

    fn span(&self, st: &FnState, node: &impl Node) -> Span {
        match node.range() {
            Some((a, b)) => Span::new(st.file, a.bytes() + st.offset, b.bytes() + st.offset),
            None => Span::new(st.file, 0, 0),
        }
    }

    // ---- instances ----------------------------------------------------------------------

    fn instantiate(&mut self, key: FnKey, args: Vec<Ty>, call_span: Span, is_entry: bool) -> Option<HirFuncId> {
        if let Some(&id) = self.instances.get(&(key.clone(), args.clone())) {
            return Some(id);
        }
        if self.in_progress.contains(&key) {
            self.err(
                Diagnostic::new(
                    call_span,
                    "recursive call",
                    "this call reaches a function that is still running",
                )
                .hint("BPF programs cannot recurse: rewrite it as a loop"),
            );
            return None;
        }
        let (file, name, body, span, env, outer_locals) = match &key {
            FnKey::Decl(id) => {
                let d = &self.ev.functions[*id];
                let Some(parsed) = d.body.get() else {
                    let message = format!("internal error: the syntax of `{}` could not be read", d.name);
                    self.err(
                        Diagnostic::new(call_span, message, "called here")
                            .hint("this is a bug in luabpf: please report it with the program"),
                    );
                    return None;
                };
                let env = d
                    .upvalues
                    .iter()
                    .map(|(n, v)| (n.clone(), Known::Value(v.clone())))
                    .collect();
                (
                    d.file,
                    d.name.clone(),
                    BodyRef::Shared(parsed.clone()),
                    d.span,
                    env,
                    HashSet::new(),
                )
            }
            FnKey::Inner(i) => {
                let f = &self.inner[*i];
                (
                    f.file,
                    f.name.clone(),
                    BodyRef::Own(f.body.clone(), f.offset),
                    f.span,
                    f.env.clone(),
                    f.outer_locals.clone(),
                )
            }
        };
        self.in_progress.push(key.clone());
        let offset = body.offset();
        let mut st = FnState {
            file,
            offset,
            locals: Vec::new(),
            scopes: vec![
                env.into_iter().map(|(n, k)| (n, Binding::Known(k))).collect(),
                Vec::new(),
            ],
            narrowed: HashSet::new(),
            results: None,
            loop_depth: 0,
            outer_locals,
        };
        let mut params = Vec::new();
        let mut ok = true;
        for (i, p) in body.parameters().iter().enumerate() {
            match p {
                Parameter::Name(tok) => {
                    let ty = args.get(i).cloned().unwrap_or(Ty::Nil);
                    let sp = self.span(&st, tok);
                    let id = self.declare(&mut st, &ident(tok), ty, sp);
                    params.push(id);
                }
                Parameter::Ellipsis(tok) => {
                    let sp = self.span(&st, tok);
                    self.err(
                        Diagnostic::new(sp, "varargs are not supported in compiled functions", "`...` here")
                            .hint("name each parameter"),
                    );
                    ok = false;
                }
                _ => ok = false,
            }
        }
        let stmts = if ok {
            self.block(&mut st, body.block())
        } else {
            Vec::new()
        };
        // Falling off the end returns no values: every result may then be nil.
        if st.results.is_some() && !terminates(&stmts) {
            let _ = self.merge_results(&mut st, Vec::new(), span);
        }
        self.in_progress.pop();
        let results = st.results.clone().unwrap_or_default();
        if is_entry {
            self.check_verdict(&st, &results, span);
        }
        let f = Func {
            name,
            params,
            locals: st.locals,
            body: stmts,
            results,
            span,
        };
        self.funcs.push(f);
        let id = self.funcs.len() - 1;
        self.instances.insert((key, args), id);
        Some(id)
    }

    fn check_verdict(&mut self, _st: &FnState, results: &[Ty], span: Span) {
        if let Some(t) = results.first() {
            if !matches!(t.strip(), Ty::Int) && *t != Ty::Nil {
                self.err(
                    Diagnostic::new(
                        span,
                        format!("a program must return a verdict (an integer), not {}", t.describe()),
                        "this function",
                    )
                    .hint("return one of the hook's verdicts, e.g. `action.PASS`"),
                );
            }
        }
    }

    fn declare(&mut self, st: &mut FnState, name: &str, ty: Ty, span: Span) -> LocalId {
        st.locals.push(Local {
            name: name.to_string(),
            ty,
            span,
        });
        let id = st.locals.len() - 1;
        if let Some(scope) = st.scopes.last_mut() {
            scope.push((name.to_string(), Binding::Local(id)));
        }
        id
    }

    fn lookup(&self, st: &FnState, name: &str) -> Option<Binding> {
        for scope in st.scopes.iter().rev() {
            for (n, b) in scope.iter().rev() {
                if n == name {
                    return Some(b.clone());
                }
            }
        }
        None
    }

    // ---- statements ---------------------------------------------------------------------

    fn block(&mut self, st: &mut FnState, block: &ast::Block) -> Vec<Stmt> {
        st.scopes.push(Vec::new());
        let mut out = Vec::new();
        for s in block.stmts() {
            if let Ok(Some(s)) = self.stmt(st, s) {
                out.push(s);
            }
        }
        if let Some(last) = block.last_stmt() {
            if let Ok(s) = self.last_stmt(st, last) {
                out.push(s);
            }
        }
        st.scopes.pop();
        out
    }

    fn last_stmt(&mut self, st: &mut FnState, last: &LastStmt) -> R<Stmt> {
        let span = self.span(st, last);
        match last {
            LastStmt::Break(_) => {
                if st.loop_depth == 0 {
                    return self.refuse(span, "`break` outside a loop", "here", "remove it");
                }
                Ok(Stmt {
                    kind: StmtKind::Break,
                    span,
                })
            }
            LastStmt::Return(ret) => {
                let values = self.expr_list(st, ret.returns())?;
                let tys: Vec<Ty> = values.iter().map(|e| e.ty.clone()).collect();
                self.merge_results(st, tys, span)?;
                Ok(Stmt {
                    kind: StmtKind::Return(values),
                    span,
                })
            }
            _ => self.refuse(span, "unsupported statement", "here", "remove it"),
        }
    }

    fn merge_results(&mut self, st: &mut FnState, tys: Vec<Ty>, span: Span) -> R<()> {
        let merged = match st.results.take() {
            None => tys,
            Some(prev) => {
                let n = prev.len().max(tys.len());
                let mut out = Vec::new();
                for i in 0..n {
                    let a = prev.get(i).cloned().unwrap_or(Ty::Nil);
                    let b = tys.get(i).cloned().unwrap_or(Ty::Nil);
                    match unify(&a, &b) {
                        Some(t) => out.push(t),
                        None => {
                            st.results = Some(prev.clone());
                            return self.refuse(
                                span,
                                format!(
                                    "this function returns {} here but {} elsewhere",
                                    b.describe(),
                                    a.describe()
                                ),
                                "conflicting return value",
                                "return values of one type from every `return` (nil is allowed)",
                            );
                        }
                    }
                }
                out
            }
        };
        st.results = Some(merged);
        Ok(())
    }

    fn stmt(&mut self, st: &mut FnState, s: &AStmt) -> R<Option<Stmt>> {
        let span = self.span(st, s);
        let kind = match s {
            AStmt::LocalAssignment(la) => return self.local_assignment(st, la, span).map(Some),
            AStmt::Assignment(a) => return self.assignment(st, a, span).map(Some),
            AStmt::FunctionCall(call) => return self.call_stmt(st, call, span),
            AStmt::If(i) => return self.if_stmt(st, i, span).map(Some),
            AStmt::While(w) => {
                self.kill_assigned(st, w.block());
                let body_and_cond = self.fixpoint(st, |c, st| {
                    let cond = c.cond(st, w.condition());
                    let (cond, facts) = match cond {
                        Ok(x) => x,
                        Err(()) => return None,
                    };
                    let saved = st.narrowed.clone();
                    st.narrowed.extend(facts.when_true);
                    st.loop_depth += 1;
                    let body = c.block(st, w.block());
                    st.loop_depth -= 1;
                    st.narrowed = saved;
                    Some((cond, body))
                });
                let (cond, body) = body_and_cond.ok_or(())?;
                StmtKind::While { cond, body }
            }
            AStmt::Repeat(r) => {
                self.kill_assigned(st, r.block());
                let res = self.fixpoint(st, |c, st| {
                    // The `until` condition sees the body's locals: check it inside the body scope.
                    st.scopes.push(Vec::new());
                    st.loop_depth += 1;
                    let mut body = Vec::new();
                    for s in r.block().stmts() {
                        if let Ok(Some(s)) = c.stmt(st, s) {
                            body.push(s);
                        }
                    }
                    if let Some(l) = r.block().last_stmt() {
                        if let Ok(s) = c.last_stmt(st, l) {
                            body.push(s);
                        }
                    }
                    st.loop_depth -= 1;
                    let cond = c.cond(st, r.until()).map(|(e, _)| e);
                    st.scopes.pop();
                    cond.ok().map(|cond| (body, cond))
                });
                let (body, cond) = res.ok_or(())?;
                StmtKind::Repeat { body, cond }
            }
            AStmt::NumericFor(f) => return self.numeric_for(st, f, span).map(Some),
            AStmt::Do(d) => StmtKind::Block(self.block(st, d.block())),
            AStmt::LocalFunction(lf) => {
                let name = ident(lf.name());
                let fspan = self.span(st, lf.body());
                let key = self.define_inner(st, &name, lf.body(), fspan);
                // Declared before its body is checked, as in Lua (but recursion is refused).
                if let Some(scope) = st.scopes.last_mut() {
                    scope.push((name, Binding::Known(Known::Inner(key))));
                }
                return Ok(None);
            }
            AStmt::FunctionDeclaration(fd) => {
                let sp = self.span(st, fd.name());
                return self.refuse(
                    sp,
                    "a global function cannot be defined in a compiled function",
                    "defined here",
                    "use `local function` here, or define the function at the top level of the file",
                );
            }
            AStmt::GenericFor(g) => {
                let sp = self.span(st, g.for_token());
                return self.refuse(
                    sp,
                    "generic `for ... in` loops are not supported in compiled functions",
                    "generic for",
                    "iterate with a numeric `for i = 1, n do`; a body-level table can be walked at compile time",
                );
            }
            #[allow(unreachable_patterns)]
            _ => {
                let text = s.to_string();
                if text.trim_start().starts_with("goto") || text.trim_start().starts_with("::") {
                    return self.refuse(
                        span,
                        "`goto` and labels are not supported",
                        "here",
                        "use `break`, `if` or a loop condition",
                    );
                }
                return self.refuse(
                    span,
                    "unsupported statement",
                    "here",
                    "see docs/language.md for the supported subset",
                );
            }
        };
        Ok(Some(Stmt { kind, span }))
    }

    /// Checks a loop body until the types of the enclosing locals stop widening, so that a
    /// use at the top of the body sees a type that an assignment at its bottom produced.
    fn fixpoint<T>(&mut self, st: &mut FnState, mut f: impl FnMut(&mut Self, &mut FnState) -> Option<T>) -> Option<T> {
        for _ in 0..4 {
            let before: Vec<Ty> = st.locals.iter().map(|l| l.ty.clone()).collect();
            let ndiags = self.diags.len();
            let out = f(self, st);
            let changed = st.locals.iter().zip(&before).any(|(l, b)| l.ty != *b);
            if !changed {
                return out;
            }
            self.diags.truncate(ndiags);
            for (i, b) in before.iter().enumerate() {
                // Keep the widened type; forget narrowing of what changed.
                if st.locals[i].ty != *b {
                    st.narrowed.remove(&i);
                }
            }
            st.locals.truncate(st.locals.len().max(before.len()));
        }
        f(self, st)
    }

    /// Forgets narrowing of locals that a loop body assigns: the test before the loop does
    /// not hold on the second iteration.
    fn kill_assigned(&mut self, st: &mut FnState, block: &ast::Block) {
        let mut names = HashSet::new();
        collect_assigned(block, &mut names);
        for name in names {
            if let Some(Binding::Local(id)) = self.lookup(st, &name) {
                st.narrowed.remove(&id);
            }
        }
    }

    fn define_inner(&mut self, st: &mut FnState, name: &str, body: &ast::FunctionBody, span: Span) -> usize {
        let mut env = Vec::new();
        let mut outer = st.outer_locals.clone();
        for scope in &st.scopes {
            for (n, b) in scope {
                match b {
                    Binding::Known(k) => env.push((n.clone(), k.clone())),
                    Binding::Local(_) | Binding::Poisoned => {
                        outer.insert(n.clone());
                        env.retain(|(m, _)| m != n);
                    }
                }
            }
        }
        self.inner.push(InnerFn {
            file: st.file,
            name: name.to_string(),
            body: std::sync::Arc::new(body.clone()),
            offset: st.offset,
            span,
            env,
            outer_locals: outer,
        });
        self.inner.len() - 1
    }

    fn local_assignment(&mut self, st: &mut FnState, la: &ast::LocalAssignment, span: Span) -> R<Stmt> {
        let r = self.local_assignment_inner(st, la, span);
        if r.is_err() {
            // The declaration was refused: its names still exist, so that later uses do not
            // each report an "unknown global" on top of the real error.
            for t in la.names().iter() {
                if let Some(scope) = st.scopes.last_mut() {
                    scope.push((ident(t), Binding::Poisoned));
                }
            }
        }
        r
    }

    fn local_assignment_inner(&mut self, st: &mut FnState, la: &ast::LocalAssignment, span: Span) -> R<Stmt> {
        for attr in la.attributes().flatten() {
            let a = attr.name().token().to_string();
            if a != "const" {
                let sp = self.span(st, attr);
                return self.refuse(
                    sp,
                    format!("the attribute <{a}> is not supported"),
                    "here",
                    "only <const> is supported",
                );
            }
        }
        let names: Vec<(String, Span)> = la.names().iter().map(|t| (ident(t), self.span(st, t))).collect();
        // A local bound to a compile-time value (a function, map, module) stays compile-time.
        if names.len() == 1 && la.expressions().len() == 1 {
            let e = la.expressions().iter().next().expect("one expression");
            let v = self.expr_val(st, e)?;
            return match v {
                Val::Known(k, _) if !is_scalar_known(&k) => {
                    if let Some(scope) = st.scopes.last_mut() {
                        scope.push((names[0].0.clone(), Binding::Known(k)));
                    }
                    Ok(Stmt {
                        kind: StmtKind::Block(Vec::new()),
                        span,
                    })
                }
                v => {
                    let e = self.to_rt(st, v)?;
                    let id = self.declare(st, &names[0].0, e.ty.clone(), names[0].1);
                    self.after_assign(st, id, &e.ty);
                    Ok(Stmt {
                        kind: StmtKind::Local {
                            locals: vec![id],
                            values: vec![e],
                        },
                        span,
                    })
                }
            };
        }
        let values = self.expr_list(st, la.expressions())?;
        let tys = self.value_types(&values, names.len());
        let mut ids = Vec::new();
        for ((name, sp), ty) in names.iter().zip(tys) {
            let id = self.declare(st, name, ty.clone(), *sp);
            self.after_assign(st, id, &ty);
            ids.push(id);
        }
        Ok(Stmt {
            kind: StmtKind::Local { locals: ids, values },
            span,
        })
    }

    /// The types the targets of a multiple assignment receive (a trailing call spreads).
    fn value_types(&self, values: &[Expr], n: usize) -> Vec<Ty> {
        let mut tys = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let last = i + 1 == values.len();
            match (&v.kind, last) {
                (ExprKind::Call { func, .. }, true) => {
                    let res = &self.funcs[*func].results;
                    if res.is_empty() {
                        tys.push(Ty::Nil);
                    }
                    tys.extend(res.iter().cloned());
                }
                _ => tys.push(v.ty.clone()),
            }
        }
        if n != usize::MAX {
            tys.resize(n.max(tys.len()), Ty::Nil);
            tys.truncate(n);
        }
        tys
    }

    fn after_assign(&mut self, st: &mut FnState, id: LocalId, ty: &Ty) {
        if ty.is_opt() || *ty == Ty::Nil {
            st.narrowed.remove(&id);
        } else {
            st.narrowed.insert(id);
        }
    }

    fn assignment(&mut self, st: &mut FnState, a: &ast::Assignment, span: Span) -> R<Stmt> {
        let vars: Vec<&Var> = a.variables().iter().collect();
        let exprs: Vec<&Expression> = a.expressions().iter().collect();
        if vars.len() == 1 && exprs.len() == 1 {
            return self.single_assignment(st, vars[0], exprs[0], span);
        }
        // Multiple assignment: only to locals.
        let mut ids = Vec::new();
        for v in &vars {
            match v {
                Var::Name(tok) => ids.push(self.local_target(st, tok)?),
                _ => {
                    let sp = self.span(st, *v);
                    return self.refuse(
                        sp,
                        "multiple assignment is supported for locals only",
                        "not a local",
                        "assign map entries and fields one per statement",
                    );
                }
            }
        }
        let values = self.expr_list(st, a.expressions())?;
        let tys = self.value_types(&values, ids.len());
        for (id, ty) in ids.iter().zip(tys) {
            self.assign_type(st, *id, &ty, span)?;
        }
        Ok(Stmt {
            kind: StmtKind::SetLocals { locals: ids, values },
            span,
        })
    }

    fn local_target(&mut self, st: &mut FnState, tok: &TokenReference) -> R<LocalId> {
        let name = ident(tok);
        let sp = self.span(st, tok);
        match self.lookup(st, &name) {
            Some(Binding::Local(id)) => Ok(id),
            Some(Binding::Poisoned) => Err(()),
            Some(Binding::Known(_)) => self.refuse(
                sp,
                format!("cannot assign to `{name}`: it is captured from the file's top level"),
                "assigned here",
                "values captured from the top level are constants in the kernel; keep state in a map",
            ),
            None if st.outer_locals.contains(&name) => self.refuse(
                sp,
                format!("a nested function cannot assign to `{name}`, a local of the enclosing function"),
                "assigned here",
                "return the new value instead",
            ),
            None => self.refuse(
                sp,
                format!("unknown global `{name}`"),
                "assigned here",
                "declare it with `local`; compiled functions cannot create globals",
            ),
        }
    }

    /// Types a value assigned to a local: widens `nil` to an optional, refuses a type change.
    fn assign_type(&mut self, st: &mut FnState, id: LocalId, ty: &Ty, span: Span) -> R<()> {
        let cur = st.locals[id].ty.clone();
        match unify(&cur, ty) {
            Some(t) => {
                st.locals[id].ty = t;
                self.after_assign(st, id, ty);
                Ok(())
            }
            None => {
                let name = st.locals[id].name.clone();
                let decl = st.locals[id].span;
                self.err(
                    Diagnostic::new(
                        span,
                        format!(
                            "`{name}` holds {}; it cannot also hold {}",
                            cur.describe(),
                            ty.describe()
                        ),
                        "assigned here",
                    )
                    .with_secondary(decl, "declared here")
                    .hint("a local keeps one type for its whole life: use another local"),
                );
                Err(())
            }
        }
    }

    fn single_assignment(&mut self, st: &mut FnState, var: &Var, e: &Expression, span: Span) -> R<Stmt> {
        match var {
            Var::Name(tok) => {
                let id = self.local_target(st, tok)?;
                let value = self.expr(st, e)?;
                self.assign_type(st, id, &value.ty.clone(), span)?;
                Ok(Stmt {
                    kind: StmtKind::SetLocal { local: id, value },
                    span,
                })
            }
            Var::Expression(ve) => {
                let sp = self.span(st, var);
                let suffixes: Vec<&Suffix> = ve.suffixes().collect();
                let (last, init) = suffixes.split_last().ok_or(())?;
                let base = self.prefix_and_suffixes(st, ve.prefix(), init)?;
                let Suffix::Index(index) = last else {
                    return self.refuse(
                        sp,
                        "cannot assign to a call",
                        "here",
                        "assign to a local, a map entry or a record field",
                    );
                };
                match base {
                    Val::Known(Known::Value(ConstValue::Map(map)), _) => {
                        let key = self.index_key(st, index)?;
                        self.map_assign(st, map, key, e, span)
                    }
                    Val::Known(Known::Value(ConstValue::Table(t)), _) => {
                        let map = self.static_map(st, t, sp)?;
                        let key = self.index_key(st, index)?;
                        self.map_assign(st, map, key, e, span)
                    }
                    Val::Rt(base) => match (&base.ty, index) {
                        (Ty::Record(map), Index::Dot { name, .. }) => {
                            let map = *map;
                            let field = self.record_field(st, map, name)?;
                            let value = self.expr(st, e)?;
                            let fty = self.field_ty(map, field);
                            let value = self.coerce(st, value, &fty)?;
                            Ok(Stmt {
                                kind: StmtKind::FieldSet {
                                    base,
                                    map,
                                    field,
                                    value,
                                },
                                span,
                            })
                        }
                        (Ty::Ctx, Index::Dot { name, .. }) => {
                            let fname = ident(name);
                            let nsp = self.span(st, name);
                            let field = self.ctx_field(&fname, true, nsp)?;
                            let value = self.expr(st, e)?;
                            let value = self.coerce(st, value, &Ty::Int)?;
                            Ok(Stmt {
                                kind: StmtKind::CtxStore { field, value },
                                span,
                            })
                        }
                        (t, _) => {
                            let t = t.describe();
                            self.refuse(
                                sp,
                                format!("cannot assign into a value of type {t}"),
                                "here",
                                "assign to a local, a map entry or a record field",
                            )
                        }
                    },
                    Val::Known(_, ksp) => self.refuse(
                        ksp,
                        "cannot assign into a compile-time value",
                        "this is fixed when the file is compiled",
                        "keep state that changes at run time in a map (`bpf.map`)",
                    ),
                }
            }
            _ => self.refuse(
                span,
                "unsupported assignment",
                "here",
                "assign to a local, a map entry or a record field",
            ),
        }
    }

    fn map_assign(&mut self, st: &mut FnState, map: MapId, key: Expr, e: &Expression, span: Span) -> R<Stmt> {
        let key = self.map_key(st, map, key)?;
        // `m[k] = nil` deletes.
        if let Expression::Symbol(t) = e {
            if matches!(t.token_type(), TokenType::Symbol { symbol: Symbol::Nil }) {
                if self.maps.maps[map].kind.is_array() {
                    let sp = self.span(st, e);
                    return self.refuse(
                        sp,
                        "entries of an array map cannot be deleted",
                        "here",
                        "store 0 instead",
                    );
                }
                return Ok(Stmt {
                    kind: StmtKind::MapSet { map, key, value: None },
                    span,
                });
            }
        }
        // `m[k] = (m[k] or 0) + n`: one lookup and an atomic add.
        if let Some(delta) = self.match_map_add(st, map, &key, e)? {
            return Ok(Stmt {
                kind: StmtKind::MapAdd { map, key, delta },
                span,
            });
        }
        let vty = self.map_value_ty(map);
        let value = match (e, &self.maps.maps[map].value) {
            (Expression::TableConstructor(tc), Format::Record(_)) => self.record_ctor(st, map, tc)?,
            _ => {
                let v = self.expr(st, e)?;
                self.coerce(st, v, &vty)?
            }
        };
        Ok(Stmt {
            kind: StmtKind::MapSet {
                map,
                key,
                value: Some(value),
            },
            span,
        })
    }

    fn match_map_add(&mut self, st: &mut FnState, map: MapId, key: &Expr, e: &Expression) -> R<Option<Expr>> {
        let Expression::BinaryOperator {
            lhs,
            binop: BinOp::Plus(_),
            rhs,
        } = e
        else {
            return Ok(None);
        };
        let mut inner = &**lhs;
        while let Expression::Parentheses { expression, .. } = inner {
            inner = expression;
        }
        let Expression::BinaryOperator {
            lhs: get,
            binop: BinOp::Or(_),
            rhs: zero,
        } = inner
        else {
            return Ok(None);
        };
        if !matches!(&**zero, Expression::Number(t) if t.token().to_string() == "0") {
            return Ok(None);
        }
        if !matches!(self.map_value_ty(map), Ty::Int) || !is_pure(key) {
            return Ok(None);
        }
        let ndiags = self.diags.len();
        let got = self.expr(st, get);
        self.diags.truncate(ndiags);
        match got {
            Ok(Expr {
                kind: ExprKind::MapGet { map: m2, key: k2 },
                ..
            }) if m2 == map && same_value(&k2, key) => {
                let delta = self.expr(st, rhs)?;
                let delta = self.coerce(st, delta, &Ty::Int)?;
                Ok(Some(delta))
            }
            _ => Ok(None),
        }
    }

    fn record_ctor(&mut self, st: &mut FnState, map: MapId, tc: &ast::TableConstructor) -> R<Expr> {
        let span = self.span(st, tc);
        let mut fields = Vec::new();
        for f in tc.fields().iter() {
            match f {
                AField::NameKey { key, value, .. } => {
                    let idx = self.record_field(st, map, key)?;
                    let v = self.expr(st, value)?;
                    let fty = self.field_ty(map, idx);
                    let v = self.coerce(st, v, &fty)?;
                    fields.push((idx, v));
                }
                other => {
                    let sp = self.span(st, other);
                    return self.refuse(
                        sp,
                        "a record is written with named fields",
                        "not `name = value`",
                        "write `{ hits = 1, last = now }`",
                    );
                }
            }
        }
        Ok(Expr {
            kind: ExprKind::RecordCtor { map, fields },
            ty: Ty::Record(map),
            span,
        })
    }

    fn call_stmt(&mut self, st: &mut FnState, call: &ast::FunctionCall, span: Span) -> R<Option<Stmt>> {
        let suffixes: Vec<&Suffix> = call.suffixes().collect();
        let v = self.prefix_and_suffixes_stmt(st, call.prefix(), &suffixes, span)?;
        Ok(v)
    }

    fn if_stmt(&mut self, st: &mut FnState, i: &ast::If, span: Span) -> R<Stmt> {
        let mut arms: Vec<(&Expression, &ast::Block)> = vec![(i.condition(), i.block())];
        if let Some(elifs) = i.else_if() {
            for e in elifs {
                arms.push((e.condition(), e.block()));
            }
        }
        let else_block = i.else_block();
        self.if_chain(st, &arms, else_block, span)
    }

    fn if_chain(
        &mut self,
        st: &mut FnState,
        arms: &[(&Expression, &ast::Block)],
        else_block: Option<&ast::Block>,
        span: Span,
    ) -> R<Stmt> {
        let (cond_e, block) = arms[0];
        let (cond, facts) = self.cond(st, cond_e)?;
        let saved = st.narrowed.clone();
        st.narrowed.extend(facts.when_true.iter().copied());
        let then_ = self.block(st, block);
        let then_narrowed = st.narrowed.clone();
        let then_ends = terminates(&then_);
        st.narrowed = saved.clone();
        st.narrowed.extend(facts.when_false.iter().copied());
        let else_ = if arms.len() > 1 {
            let sp = self.span(st, arms[1].0);
            vec![self.if_chain(st, &arms[1..], else_block, sp)?]
        } else if let Some(b) = else_block {
            self.block(st, b)
        } else {
            Vec::new()
        };
        let else_ends = terminates(&else_);
        let else_narrowed = st.narrowed.clone();
        st.narrowed = match (then_ends, else_ends) {
            (true, true) => saved,
            (true, false) => else_narrowed,
            (false, true) => then_narrowed,
            (false, false) => then_narrowed.intersection(&else_narrowed).copied().collect(),
        };
        Ok(Stmt {
            kind: StmtKind::If { cond, then_, else_ },
            span,
        })
    }

    fn numeric_for(&mut self, st: &mut FnState, f: &ast::NumericFor, span: Span) -> R<Stmt> {
        let start = self.expr(st, f.start())?;
        let start = self.coerce(st, start, &Ty::Int)?;
        let limit = self.expr(st, f.end())?;
        let limit = self.coerce(st, limit, &Ty::Int)?;
        let step = match f.step() {
            None => 1,
            Some(e) => {
                let sp = self.span(st, e);
                match self.expr(st, e)? {
                    Expr {
                        kind: ExprKind::Int(0), ..
                    } => {
                        return self.refuse(
                            sp,
                            "a `for` step of 0 never ends",
                            "step",
                            "use a non-zero constant step",
                        );
                    }
                    Expr {
                        kind: ExprKind::Int(n), ..
                    } => n,
                    _ => {
                        return self.refuse(
                            sp,
                            "the step of a numeric `for` must be a constant",
                            "not a constant",
                            "use a constant step such as 1 or -1, or a `while` loop",
                        );
                    }
                }
            }
        };
        self.kill_assigned(st, f.block());
        st.scopes.push(Vec::new());
        let vsp = self.span(st, f.index_variable());
        let var = self.declare(st, &ident(f.index_variable()), Ty::Int, vsp);
        let body = self.fixpoint(st, |c, st| {
            st.loop_depth += 1;
            let saved = st.narrowed.clone();
            let b = c.block(st, f.block());
            st.narrowed = saved;
            st.loop_depth -= 1;
            Some(b)
        });
        st.scopes.pop();
        Ok(Stmt {
            kind: StmtKind::NumFor {
                var,
                start,
                limit,
                step,
                body: body.unwrap_or_default(),
            },
            span,
        })
    }

    // ---- conditions and narrowing -------------------------------------------------------

    fn cond(&mut self, st: &mut FnState, e: &Expression) -> R<(Expr, Facts)> {
        match e {
            Expression::Parentheses { expression, .. } => self.cond(st, expression),
            Expression::UnaryOperator {
                unop: UnOp::Not(_),
                expression,
            } => {
                let (inner, facts) = self.cond(st, expression)?;
                let span = self.span(st, e);
                Ok((
                    Expr {
                        kind: ExprKind::Not(Box::new(inner)),
                        ty: Ty::Bool,
                        span,
                    },
                    facts.negate(),
                ))
            }
            Expression::BinaryOperator {
                lhs,
                binop: BinOp::And(_),
                rhs,
            } => {
                let (a, fa) = self.cond(st, lhs)?;
                let saved = st.narrowed.clone();
                st.narrowed.extend(fa.when_true.iter().copied());
                let rb = self.cond(st, rhs);
                st.narrowed = saved;
                let (b, fb) = rb?;
                let span = self.span(st, e);
                let when_true = fa.when_true.union(&fb.when_true).copied().collect();
                let when_false = fa.when_false.intersection(&fb.when_false).copied().collect();
                let ty = and_or_cond_ty(&a.ty, &b.ty);
                Ok((
                    Expr {
                        kind: ExprKind::And(Box::new(a), Box::new(b)),
                        ty,
                        span,
                    },
                    Facts { when_true, when_false },
                ))
            }
            Expression::BinaryOperator {
                lhs,
                binop: BinOp::Or(_),
                rhs,
            } => {
                let (a, fa) = self.cond(st, lhs)?;
                let saved = st.narrowed.clone();
                st.narrowed.extend(fa.when_false.iter().copied());
                let rb = self.cond(st, rhs);
                st.narrowed = saved;
                let (b, fb) = rb?;
                let span = self.span(st, e);
                let when_true = fa.when_true.intersection(&fb.when_true).copied().collect();
                let when_false = fa.when_false.union(&fb.when_false).copied().collect();
                let ty = and_or_cond_ty(&a.ty, &b.ty);
                Ok((
                    Expr {
                        kind: ExprKind::Or(Box::new(a), Box::new(b)),
                        ty,
                        span,
                    },
                    Facts { when_true, when_false },
                ))
            }
            _ => {
                let x = self.expr(st, e)?;
                let facts = facts_of(&x);
                Ok((x, facts))
            }
        }
    }

    // ---- expressions --------------------------------------------------------------------

    fn expr_list(&mut self, st: &mut FnState, list: &Punctuated<Expression>) -> R<Vec<Expr>> {
        let mut out = Vec::new();
        let mut failed = false;
        for e in list.iter() {
            match self.expr(st, e) {
                Ok(x) => out.push(x),
                Err(()) => failed = true,
            }
        }
        if failed {
            Err(())
        } else {
            Ok(out)
        }
    }

    /// A run-time value.
    fn expr(&mut self, st: &mut FnState, e: &Expression) -> R<Expr> {
        let v = self.expr_val(st, e)?;
        self.to_rt(st, v)
    }

    fn to_rt(&mut self, _st: &FnState, v: Val) -> R<Expr> {
        match v {
            Val::Rt(e) => Ok(e),
            Val::Known(Known::Value(c), span) => match c {
                ConstValue::Int(i) => Ok(Expr {
                    kind: ExprKind::Int(i),
                    ty: Ty::Int,
                    span,
                }),
                ConstValue::Bool(b) => Ok(Expr {
                    kind: ExprKind::Bool(b),
                    ty: Ty::Bool,
                    span,
                }),
                ConstValue::Nil => Ok(Expr {
                    kind: ExprKind::Nil,
                    ty: Ty::Nil,
                    span,
                }),
                ConstValue::Str(s) => {
                    if s.len() > 255 {
                        return self.refuse(
                            span,
                            format!("a string of {} bytes is too long for the kernel", s.len()),
                            "this string",
                            "strings are at most 255 bytes at run time",
                        );
                    }
                    Ok(Expr {
                        kind: ExprKind::Str(s),
                        ty: Ty::Str,
                        span,
                    })
                }
                ConstValue::Float(f) => self.refuse(
                    span,
                    format!("the float {f} cannot be used in a compiled function"),
                    "a float",
                    "BPF has no floating point: use integers (`//` for division)",
                ),
                other => {
                    let what = describe_const(&other);
                    self.refuse(
                        span,
                        format!("{what} cannot be used as a run-time value"),
                        "used as a value here",
                        "index it, call it, or pass its fields instead",
                    )
                }
            },
            Val::Known(Known::Inner(_), span) => self.refuse(
                span,
                "a function cannot be used as a run-time value",
                "here",
                "call it instead",
            ),
        }
    }

    fn expr_val(&mut self, st: &mut FnState, e: &Expression) -> R<Val> {
        let span = self.span(st, e);
        match e {
            Expression::Parentheses { expression, .. } => {
                // `(f())` truncates to one value; a call is single-valued here anyway.
                self.expr_val(st, expression)
            }
            Expression::Number(tok) => {
                let text = tok.token().to_string();
                match parse_number(&text) {
                    Some(Num::Int(i)) => Ok(Val::Rt(Expr { kind: ExprKind::Int(i), ty: Ty::Int, span })),
                    Some(Num::Float) => self.refuse(
                        span,
                        format!("`{text}` is a float"),
                        "float literal",
                        "BPF has no floating point: use an integer",
                    ),
                    None => self.refuse(span, format!("malformed number `{text}`"), "here", "write a decimal or 0x hexadecimal integer"),
                }
            }
            Expression::String(tok) => match tok.token_type() {
                TokenType::StringLiteral { literal, multi_line_depth, .. } => {
                    let bytes = if *multi_line_depth > 0 || tok.token().to_string().starts_with('[') {
                        let s = literal.as_str();
                        s.strip_prefix('\n').unwrap_or(s).as_bytes().to_vec()
                    } else {
                        match unescape(literal.as_str()) {
                            Ok(b) => b,
                            Err(msg) => return self.refuse(span, msg, "in this string", "see the Lua 5.4 manual, section 3.1"),
                        }
                    };
                    self.to_rt(st, Val::Known(Known::Value(ConstValue::Str(bytes)), span)).map(Val::Rt)
                }
                _ => self.refuse(span, "malformed string", "here", "check the quotes"),
            },
            Expression::Symbol(tok) => match tok.token_type() {
                TokenType::Symbol { symbol: Symbol::True } => Ok(Val::Rt(Expr { kind: ExprKind::Bool(true), ty: Ty::Bool, span })),
                TokenType::Symbol { symbol: Symbol::False } => Ok(Val::Rt(Expr { kind: ExprKind::Bool(false), ty: Ty::Bool, span })),
                TokenType::Symbol { symbol: Symbol::Nil } => Ok(Val::Rt(Expr { kind: ExprKind::Nil, ty: Ty::Nil, span })),
                TokenType::Symbol { symbol: Symbol::Ellipsis } => {
                    self.refuse(span, "varargs are not supported in compiled functions", "`...`", "name each parameter")
                }
                _ => self.refuse(span, "unsupported expression", "here", "see docs/language.md"),
            },
            Expression::Function(_) => self.refuse(
                span,
                "an anonymous function cannot be created in a compiled function",
                "closure",
                "define it with `local function` at the top level of the file and call it",
            ),
            Expression::TableConstructor(_) => self.refuse(
                span,
                "tables cannot be created in the kernel",
                "table constructor",
                "build constant tables at the top level of the file; write a record into a map with `m[k] = { field = value }`",
            ),
            Expression::UnaryOperator { unop, expression } => self.unary(st, unop, expression, span),
            Expression::BinaryOperator { lhs, binop, rhs } => self.binary(st, lhs, binop, rhs, span),
            Expression::FunctionCall(call) => {
                let suffixes: Vec<&Suffix> = call.suffixes().collect();
                self.prefix_and_suffixes(st, call.prefix(), &suffixes)
            }
            Expression::Var(Var::Name(tok)) => self.name(st, tok),
            Expression::Var(Var::Expression(ve)) => {
                let suffixes: Vec<&Suffix> = ve.suffixes().collect();
                self.prefix_and_suffixes(st, ve.prefix(), &suffixes)
            }
            _ => self.refuse(span, "unsupported expression", "here", "see docs/language.md for the supported subset"),
        }
    }

    fn name(&mut self, st: &mut FnState, tok: &TokenReference) -> R<Val> {
        let name = ident(tok);
        let span = self.span(st, tok);
        match self.lookup(st, &name) {
            Some(Binding::Local(id)) => {
                let ty = st.locals[id].ty.clone();
                let ty = match &ty {
                    Ty::Opt(inner) if st.narrowed.contains(&id) => (**inner).clone(),
                    _ => ty,
                };
                Ok(Val::Rt(Expr {
                    kind: ExprKind::Local(id),
                    ty,
                    span,
                }))
            }
            Some(Binding::Known(k)) => Ok(Val::Known(k, span)),
            Some(Binding::Poisoned) => Err(()),
            None if st.outer_locals.contains(&name) => self.refuse(
                span,
                format!("a nested function cannot capture `{name}`, a local of the enclosing function"),
                "captured here",
                "pass it as a parameter, or define the function at the top level of the file",
            ),
            None => match name.as_str() {
                "error" => Ok(Val::Known(Known::Value(ConstValue::Builtin("error".into())), span)),
                "pcall" | "xpcall" => self.refuse(
                    span,
                    format!("`{name}` is not supported"),
                    "here",
                    "a runtime error takes the program's default verdict; test for the failing case instead",
                ),
                "setmetatable" | "getmetatable" | "rawget" | "rawset" => self.refuse(
                    span,
                    "metatables are not supported in compiled functions",
                    "here",
                    "use plain values and maps",
                ),
                "load" | "loadstring" | "dofile" | "require" => self.refuse(
                    span,
                    format!("`{name}` cannot be called in a compiled function"),
                    "here",
                    "require modules at the top level of the file",
                ),
                "coroutine" => self.refuse(
                    span,
                    "coroutines are not supported",
                    "here",
                    "write the logic as a loop",
                ),
                _ => self.refuse(
                    span,
                    format!("unknown global `{name}`"),
                    "not a local, an upvalue or a supported global",
                    "declare it with `local` (at the top level for constants, maps and modules)",
                ),
            },
        }
    }

    fn unary(&mut self, st: &mut FnState, op: &UnOp, e: &Expression, span: Span) -> R<Val> {
        match op {
            UnOp::Not(_) => {
                let (x, _) = self.cond(st, e)?;
                Ok(Val::Rt(fold(Expr {
                    kind: ExprKind::Not(Box::new(x)),
                    ty: Ty::Bool,
                    span,
                })))
            }
            UnOp::Minus(_) => {
                let x = self.int_operand(st, e, "operand")?;
                Ok(Val::Rt(fold(Expr {
                    kind: ExprKind::Neg(Box::new(x)),
                    ty: Ty::Int,
                    span,
                })))
            }
            UnOp::Tilde(_) => {
                let x = self.int_operand(st, e, "operand")?;
                Ok(Val::Rt(fold(Expr {
                    kind: ExprKind::BNot(Box::new(x)),
                    ty: Ty::Int,
                    span,
                })))
            }
            UnOp::Hash(_) => {
                let v = self.expr_val(st, e)?;
                match v {
                    Val::Known(Known::Value(ConstValue::Table(t)), _) => {
                        // The border of a sequence, computed at compile time.
                        let n = seq_len(&self.ev.tables[t].entries);
                        Ok(Val::Rt(Expr {
                            kind: ExprKind::Int(n),
                            ty: Ty::Int,
                            span,
                        }))
                    }
                    v => {
                        let x = self.to_rt(st, v)?;
                        match (&x.ty, &x.kind) {
                            (Ty::Packet, _) => Ok(Val::Rt(Expr {
                                kind: ExprKind::PacketLen,
                                ty: Ty::Int,
                                span,
                            })),
                            (Ty::Str, ExprKind::Str(s)) => Ok(Val::Rt(Expr {
                                kind: ExprKind::Int(s.len() as i64),
                                ty: Ty::Int,
                                span,
                            })),
                            (Ty::Str, _) => Ok(Val::Rt(Expr {
                                kind: ExprKind::StrLen(Box::new(x)),
                                ty: Ty::Int,
                                span,
                            })),
                            (t, _) => {
                                let t = t.describe();
                                self.refuse(
                                    span,
                                    format!("cannot take the length of {t}"),
                                    "here",
                                    "`#` applies to strings, the packet and constant tables",
                                )
                            }
                        }
                    }
                }
            }
            _ => self.refuse(span, "unsupported operator", "here", "see docs/language.md"),
        }
    }

    fn int_operand(&mut self, st: &mut FnState, e: &Expression, what: &str) -> R<Expr> {
        let x = self.expr(st, e)?;
        self.require_int(x, what)
    }

    /// Requires an integer; `what` names its role ("operand", "offset", "length", ...).
    fn require_int(&mut self, x: Expr, what: &str) -> R<Expr> {
        match &x.ty {
            Ty::Int => Ok(x),
            Ty::Opt(t) if **t == Ty::Int => self.refuse(
                x.span,
                format!("this {what} may be nil"),
                "integer or nil",
                "test it first (`if v then ... end`) or give a default (`v or 0`)",
            ),
            t => {
                let t = t.describe();
                self.refuse(
                    x.span,
                    format!("expected an integer {what}, found {t}"),
                    format!("this is {t}"),
                    format!("the {what} must be an integer"),
                )
            }
        }
    }

    fn binary(&mut self, st: &mut FnState, lhs: &Expression, op: &BinOp, rhs: &Expression, span: Span) -> R<Val> {
        let arith = match op {
            BinOp::Plus(_) => Some(ArithOp::Add),
            BinOp::Minus(_) => Some(ArithOp::Sub),
            BinOp::Star(_) => Some(ArithOp::Mul),
            BinOp::DoubleSlash(_) => Some(ArithOp::IDiv),
            BinOp::Percent(_) => Some(ArithOp::Mod),
            BinOp::Ampersand(_) => Some(ArithOp::BAnd),
            BinOp::Pipe(_) => Some(ArithOp::BOr),
            BinOp::Tilde(_) => Some(ArithOp::BXor),
            BinOp::DoubleLessThan(_) => Some(ArithOp::Shl),
            BinOp::DoubleGreaterThan(_) => Some(ArithOp::Shr),
            _ => None,
        };
        if let Some(aop) = arith {
            let a = self.int_operand(st, lhs, "operand");
            let b = self.int_operand(st, rhs, "operand");
            let (a, b) = (a?, b?);
            return Ok(Val::Rt(fold(Expr {
                kind: ExprKind::Arith(aop, Box::new(a), Box::new(b)),
                ty: Ty::Int,
                span,
            })));
        }
        let cmp = match op {
            BinOp::TwoEqual(_) => Some(CmpOp::Eq),
            BinOp::TildeEqual(_) => Some(CmpOp::Ne),
            BinOp::LessThan(_) => Some(CmpOp::Lt),
            BinOp::LessThanEqual(_) => Some(CmpOp::Le),
            BinOp::GreaterThan(_) => Some(CmpOp::Gt),
            BinOp::GreaterThanEqual(_) => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(cop) = cmp {
            let a = self.expr(st, lhs);
            let b = self.expr(st, rhs);
            let (a, b) = (a?, b?);
            return self.compare(cop, a, b, span).map(Val::Rt);
        }
        match op {
            BinOp::And(_) | BinOp::Or(_) => {
                let is_and = matches!(op, BinOp::And(_));
                let (mut a, fa) = self.cond(st, lhs)?;
                // The left side was checked as a condition; as a value, a nested and/or
                // must still have one type.
                if matches!(a.kind, ExprKind::And(..) | ExprKind::Or(..)) {
                    match and_or_chain_ty(&a) {
                        Some(t) => a.ty = t,
                        None => {
                            return self.refuse(
                                a.span,
                                "this `and`/`or` mixes values of different types",
                                "the result would have two types",
                                "give every operand one type, e.g. `v or 0` for an integer that may be nil",
                            );
                        }
                    }
                }
                let saved = st.narrowed.clone();
                st.narrowed.extend(if is_and { fa.when_true } else { fa.when_false });
                let b = self.expr(st, rhs);
                st.narrowed = saved;
                let b = b?;
                let ty = match and_or_value_ty(is_and, &a.ty, &b.ty) {
                    Some(t) => t,
                    None => {
                        let (at, bt) = (a.ty.describe(), b.ty.describe());
                        return self.refuse(
                            span,
                            format!("`{}` mixes {at} and {bt}", if is_and { "and" } else { "or" }),
                            "the result would have two types",
                            "give both sides one type, e.g. `v or 0` for an integer that may be nil",
                        );
                    }
                };
                let kind = if is_and {
                    ExprKind::And(Box::new(a), Box::new(b))
                } else {
                    ExprKind::Or(Box::new(a), Box::new(b))
                };
                Ok(Val::Rt(fold(Expr { kind, ty, span })))
            }
            BinOp::Slash(_) => self.refuse(
                span,
                "`/` is float division",
                "float division",
                "use `//` for integer (floor) division",
            ),
            BinOp::Caret(_) => self.refuse(
                span,
                "`^` is float exponentiation",
                "float power",
                "use a constant, `<<` for powers of two, or a loop",
            ),
            BinOp::TwoDots(_) => {
                // Concatenation of constants folds; anything at run time is refused.
                let a = self.expr(st, lhs)?;
                let b = self.expr(st, rhs)?;
                match (&a.kind, &b.kind) {
                    (ExprKind::Str(x), ExprKind::Str(y)) => {
                        let mut s = x.clone();
                        s.extend_from_slice(y);
                        self.to_rt(st, Val::Known(Known::Value(ConstValue::Str(s)), span))
                            .map(Val::Rt)
                    }
                    _ => self.refuse(
                        span,
                        "`..` cannot build strings at run time",
                        "run-time concatenation",
                        "concatenate at the top level of the file, or compare the parts separately",
                    ),
                }
            }
            _ => self.refuse(span, "unsupported operator", "here", "see docs/language.md"),
        }
    }

    fn compare(&mut self, op: CmpOp, a: Expr, b: Expr, span: Span) -> R<Expr> {
        let eq = matches!(op, CmpOp::Eq | CmpOp::Ne);
        let wrap_ne = |e: Expr| {
            if op == CmpOp::Ne {
                fold(Expr {
                    kind: ExprKind::Not(Box::new(e)),
                    ty: Ty::Bool,
                    span,
                })
            } else {
                e
            }
        };
        let konst = |b: bool| Expr {
            kind: ExprKind::Bool(b),
            ty: Ty::Bool,
            span,
        };
        if eq {
            // Comparisons with nil.
            match (&a.ty, &b.ty) {
                (Ty::Nil, Ty::Nil) => return Ok(wrap_ne(konst(true))),
                (Ty::Opt(_), Ty::Nil) => {
                    return Ok(wrap_ne(Expr {
                        kind: ExprKind::IsNil(Box::new(a)),
                        ty: Ty::Bool,
                        span,
                    }))
                }
                (Ty::Nil, Ty::Opt(_)) => {
                    return Ok(wrap_ne(Expr {
                        kind: ExprKind::IsNil(Box::new(b)),
                        ty: Ty::Bool,
                        span,
                    }))
                }
                (_, Ty::Nil) | (Ty::Nil, _) => return Ok(wrap_ne(konst(false))),
                _ => {}
            }
        }
        let (at, bt) = (a.ty.clone(), b.ty.clone());
        // `v == x` with `v` maybe nil: false when nil, else the comparison of the values
        // (Lua compares any two values with `==`). `v` is read twice, so it must be pure.
        if eq && at.is_opt() != bt.is_opt() {
            let (o, other) = if at.is_opt() {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            if is_pure(&o) && *o.ty.strip() == other.ty {
                let inner_ty = o.ty.strip().clone();
                let present = Expr {
                    kind: ExprKind::Not(Box::new(Expr {
                        kind: ExprKind::IsNil(Box::new(o.clone())),
                        ty: Ty::Bool,
                        span,
                    })),
                    ty: Ty::Bool,
                    span,
                };
                let value = Expr {
                    kind: ExprKind::Unwrap(Box::new(o)),
                    ty: inner_ty,
                    span,
                };
                let cmp = self.compare(CmpOp::Eq, value, other, span)?;
                let both = Expr {
                    kind: ExprKind::And(Box::new(present), Box::new(cmp)),
                    ty: Ty::Bool,
                    span,
                };
                return Ok(wrap_ne(both));
            }
            if *o.ty.strip() != other.ty {
                return Ok(wrap_ne(konst(false)));
            }
            if matches!(other.ty, Ty::Int | Ty::Bool | Ty::Str) {
                return Ok(wrap_ne(Expr {
                    kind: ExprKind::OptEquals(Box::new(o), Box::new(other)),
                    ty: Ty::Bool,
                    span,
                }));
            }
        }
        // Two maybe-nil values: equal when both are nil, or both present with equal values.
        if eq && at.is_opt() && bt.is_opt() && at.strip() == bt.strip() && is_pure(&a) && is_pure(&b) {
            let boolean = |kind: ExprKind| Expr {
                kind,
                ty: Ty::Bool,
                span,
            };
            let is_nil = |e: &Expr| boolean(ExprKind::IsNil(Box::new(e.clone())));
            let not = |e: Expr| boolean(ExprKind::Not(Box::new(e)));
            let inner = at.strip().clone();
            let unwrap = |e: &Expr| Expr {
                kind: ExprKind::Unwrap(Box::new(e.clone())),
                ty: inner.clone(),
                span,
            };
            let values_equal = self.compare(CmpOp::Eq, unwrap(&a), unwrap(&b), span)?;
            let both_nil = boolean(ExprKind::And(Box::new(is_nil(&a)), Box::new(is_nil(&b))));
            let both_present = boolean(ExprKind::And(Box::new(not(is_nil(&a))), Box::new(not(is_nil(&b)))));
            let same = boolean(ExprKind::And(Box::new(both_present), Box::new(values_equal)));
            return Ok(wrap_ne(boolean(ExprKind::Or(Box::new(both_nil), Box::new(same)))));
        }
        if at.is_opt() || bt.is_opt() {
            let which = if at.is_opt() { &a } else { &b };
            return self.refuse(
                which.span,
                "this value may be nil; test it before comparing",
                "may be nil",
                "test it first (`if v then ... end`) or give a default (`v or 0`)",
            );
        }
        match (&at, &bt) {
            (Ty::Int, Ty::Int) => Ok(fold(Expr {
                kind: ExprKind::Compare(op, Box::new(a), Box::new(b)),
                ty: Ty::Bool,
                span,
            })),
            (Ty::Bool, Ty::Bool) | (Ty::Str, Ty::Str) if eq => Ok(fold(Expr {
                kind: ExprKind::Compare(op, Box::new(a), Box::new(b)),
                ty: Ty::Bool,
                span,
            })),
            (x, y) if eq && x != y => Ok(wrap_ne(konst(false))),
            (Ty::Str, Ty::Str) => self.refuse(
                span,
                "strings can only be compared with `==` and `~=`",
                "ordering of strings",
                "compare bytes with `s:byte(i)`",
            ),
            _ => self.refuse(
                span,
                format!("cannot compare {} with {}", at.describe(), bt.describe()),
                "here",
                "ordering comparisons work on integers",
            ),
        }
    }

    /// Converts a value to the expected type of a slot (map value, field, parameter).
    fn coerce(&mut self, _st: &FnState, v: Expr, want: &Ty) -> R<Expr> {
        if v.ty == *want {
            return Ok(v);
        }
        match (&v.ty, want) {
            (Ty::Opt(t), w) if **t == *w => self.refuse(
                v.span,
                "this value may be nil here",
                "may be nil",
                "test it first (`if v then ... end`) or give a default (`v or 0`)",
            ),
            (have, want) => {
                let (h, w) = (have.describe(), want.describe());
                self.refuse(
                    v.span,
                    format!("expected {w}, found {h}"),
                    format!("this is {h}"),
                    format!("pass {w} here"),
                )
            }
        }
    }

    // ---- indexing and calls -------------------------------------------------------------

    fn prefix_and_suffixes(&mut self, st: &mut FnState, prefix: &Prefix, suffixes: &[&Suffix]) -> R<Val> {
        let mut v = match prefix {
            Prefix::Name(tok) => self.name(st, tok)?,
            Prefix::Expression(e) => self.expr_val(st, e)?,
            _ => return Err(()),
        };
        let start = self.span(st, prefix);
        for s in suffixes {
            let sp = start.to(self.span(st, *s));
            v = self.suffix(st, v, s, sp)?;
        }
        Ok(v)
    }

    /// A call used as a statement: statement-only operations (map writes through methods,
    /// packet writes, `error`, `bpf.print`) are allowed here.
    fn prefix_and_suffixes_stmt(
        &mut self,
        st: &mut FnState,
        prefix: &Prefix,
        suffixes: &[&Suffix],
        span: Span,
    ) -> R<Option<Stmt>> {
        let (last, init) = suffixes.split_last().ok_or(())?;
        let base = {
            let mut v = match prefix {
                Prefix::Name(tok) => self.name(st, tok)?,
                Prefix::Expression(e) => self.expr_val(st, e)?,
                _ => return Err(()),
            };
            let start = self.span(st, prefix);
            for s in init {
                let sp = start.to(self.span(st, *s));
                v = self.suffix(st, v, s, sp)?;
            }
            v
        };
        match (&base, last) {
            (Val::Known(Known::Value(ConstValue::Builtin(b)), _), Suffix::Call(Call::AnonymousCall(args)))
                if b == "error" =>
            {
                // Arguments are evaluated for their checks only: the message never reaches the kernel.
                let _ = self.args(st, args);
                return Ok(Some(Stmt {
                    kind: StmtKind::Error,
                    span,
                }));
            }
            (Val::Known(Known::Value(ConstValue::Builtin(b)), _), Suffix::Call(Call::AnonymousCall(args)))
                if b == "bpf.print" =>
            {
                return self.print(st, args, span).map(Some);
            }
            (Val::Rt(Expr { ty: Ty::Packet, .. }), Suffix::Call(Call::MethodCall(m))) => {
                let name = ident(m.name());
                if name.starts_with("set") {
                    return self.packet_store(st, &name, m.args(), span).map(Some);
                }
            }
            _ => {}
        }
        let v = self.suffix(st, base, last, span)?;
        match v {
            Val::Rt(e) => Ok(Some(Stmt {
                kind: StmtKind::Eval(e),
                span,
            })),
            Val::Known(..) => self.refuse(span, "this statement does nothing", "here", "remove it"),
        }
    }

    fn print(&mut self, st: &mut FnState, args: &FunctionArgs, span: Span) -> R<Stmt> {
        let args = self.args(st, args)?;
        let mut it = args.into_iter();
        let fmt = match it.next() {
            Some(Expr {
                kind: ExprKind::Str(s), ..
            }) => s,
            _ => {
                return self.refuse(
                    span,
                    "`bpf.print` needs a constant format string first",
                    "here",
                    "write `bpf.print(\"x=%d\", x)`",
                )
            }
        };
        let rest: Vec<Expr> = it.collect();
        if rest.len() > 3 {
            return self.refuse(
                span,
                "`bpf.print` takes at most 3 values after the format",
                "too many arguments",
                "print in several calls",
            );
        }
        let mut out = Vec::new();
        for a in rest {
            out.push(self.require_int(a, "argument")?);
        }
        Ok(Stmt {
            kind: StmtKind::Print { fmt, args: out },
            span,
        })
    }

    fn packet_store(&mut self, st: &mut FnState, name: &str, args: &FunctionArgs, span: Span) -> R<Stmt> {
        if matches!(self.hook, Hook::Netfilter { .. }) {
            return self.refuse(
                span,
                "netfilter programs cannot write to the packet",
                "a packet write",
                "attach the program at XDP or tc to rewrite packets",
            );
        }
        let args = self.args(st, args)?;
        if args.len() != 2 {
            return self.refuse(
                span,
                format!("`{name}` takes an offset and a value"),
                "here",
                format!("write `packet:{name}(offset, value)`"),
            );
        }
        let mut it = args.into_iter();
        let off = it.next().ok_or(())?;
        let value = it.next().ok_or(())?;
        let off = self.require_int(off, "offset")?;
        if name == "setstring" {
            if value.ty != Ty::Str {
                return self.refuse(
                    value.span,
                    "`setstring` writes a string",
                    "not a string",
                    "pass a string",
                );
            }
            return Ok(Stmt {
                kind: StmtKind::PacketStoreString { off, value },
                span,
            });
        }
        let bytes = match name {
            "setbyte" | "setuint8" | "setint8" => 1,
            "setuint16" | "setint16" => 2,
            "setuint32" | "setint32" => 4,
            "setint64" | "setnumber" | "setuint64" => 8,
            _ => {
                return self.refuse(
                    span,
                    format!("the packet has no method `{name}`"),
                    "unknown method",
                    "see docs/language.md, section 3",
                )
            }
        };
        let value = self.require_int(value, "value")?;
        Ok(Stmt {
            kind: StmtKind::PacketStore { bytes, off, value },
            span,
        })
    }

    fn args(&mut self, st: &mut FnState, args: &FunctionArgs) -> R<Vec<Expr>> {
        match args {
            FunctionArgs::Parentheses { arguments, .. } => self.expr_list(st, arguments),
            FunctionArgs::String(tok) => {
                let e = Expression::String(tok.clone());
                Ok(vec![self.expr(st, &e)?])
            }
            FunctionArgs::TableConstructor(tc) => {
                let sp = self.span(st, &**tc);
                self.refuse(
                    sp,
                    "tables cannot be created in the kernel",
                    "table argument",
                    "pass the values as separate arguments",
                )
            }
            _ => Err(()),
        }
    }

    fn index_key(&mut self, st: &mut FnState, index: &Index) -> R<Expr> {
        match index {
            Index::Brackets { expression, .. } => self.expr(st, expression),
            Index::Dot { name, .. } => {
                let sp = self.span(st, name);
                Ok(Expr {
                    kind: ExprKind::Str(ident(name).into_bytes()),
                    ty: Ty::Str,
                    span: sp,
                })
            }
            _ => Err(()),
        }
    }

    fn suffix(&mut self, st: &mut FnState, base: Val, s: &Suffix, span: Span) -> R<Val> {
        match s {
            Suffix::Index(index) => self.index(st, base, index, span),
            Suffix::Call(Call::AnonymousCall(args)) => self.call(st, base, args, span),
            Suffix::Call(Call::MethodCall(m)) => {
                let name = ident(m.name());
                let recv = self.to_rt(st, base)?;
                self.method(st, recv, &name, m.args(), span)
            }
            _ => self.refuse(span, "unsupported syntax", "here", "see docs/language.md"),
        }
    }

    fn index(&mut self, st: &mut FnState, base: Val, index: &Index, span: Span) -> R<Val> {
        match base {
            Val::Known(Known::Value(ConstValue::Table(t)), _) => {
                let key = self.index_key(st, index)?;
                if let Some(k) = const_of(&key) {
                    let entry = self.ev.tables[t]
                        .entries
                        .iter()
                        .find(|(ek, _)| *ek == k)
                        .map(|(_, v)| v.clone());
                    return Ok(Val::Known(Known::Value(entry.unwrap_or(ConstValue::Nil)), span));
                }
                // A run-time key: the table becomes a map (a static table).
                let map = self.static_map(st, t, span)?;
                let key = self.map_key(st, map, key)?;
                let vty = self.map_value_ty(map);
                Ok(Val::Rt(Expr {
                    kind: ExprKind::MapGet {
                        map,
                        key: Box::new(key),
                    },
                    ty: Ty::opt(vty),
                    span,
                }))
            }
            Val::Known(Known::Value(ConstValue::Map(map)), _) => {
                let key = self.index_key(st, index)?;
                let key = self.map_key(st, map, key)?;
                let vty = self.map_value_ty(map);
                Ok(Val::Rt(Expr {
                    kind: ExprKind::MapGet {
                        map,
                        key: Box::new(key),
                    },
                    ty: Ty::opt(vty),
                    span,
                }))
            }
            Val::Known(k, ksp) => {
                let what = match &k {
                    Known::Value(c) => describe_const(c),
                    Known::Inner(_) => "a function".into(),
                };
                self.refuse(
                    ksp,
                    format!("cannot index {what}"),
                    "indexed here",
                    "index tables, maps, records and ctx",
                )
            }
            Val::Rt(e) => match (&e.ty, index) {
                (Ty::Record(map), Index::Dot { name, .. }) => {
                    let map = *map;
                    let field = self.record_field(st, map, name)?;
                    let ty = self.field_ty(map, field);
                    Ok(Val::Rt(Expr {
                        kind: ExprKind::Field {
                            base: Box::new(e),
                            map,
                            field,
                        },
                        ty,
                        span,
                    }))
                }
                (Ty::Ctx, Index::Dot { name, .. }) => {
                    let fname = ident(name);
                    let nsp = self.span(st, name);
                    let field = self.ctx_field(&fname, false, nsp)?;
                    Ok(Val::Rt(Expr {
                        kind: ExprKind::CtxField(field),
                        ty: Ty::Int,
                        span,
                    }))
                }
                (Ty::Opt(_), _) => self.refuse(
                    e.span,
                    "this value may be nil; test it before indexing",
                    "may be nil",
                    "test it first: `if v then ... end`",
                ),
                (t, _) => {
                    let t = t.describe();
                    self.refuse(
                        span,
                        format!("cannot index {t}"),
                        "here",
                        "index tables, maps, records and ctx",
                    )
                }
            },
        }
    }

    fn call(&mut self, st: &mut FnState, callee: Val, args: &FunctionArgs, span: Span) -> R<Val> {
        match callee {
            Val::Known(Known::Value(ConstValue::Function(fid)), _) => {
                let args = self.args(st, args)?;
                self.call_lua(FnKey::Decl(fid), args, span)
            }
            Val::Known(Known::Inner(i), _) => {
                let args = self.args(st, args)?;
                self.call_lua(FnKey::Inner(i), args, span)
            }
            Val::Known(Known::Value(ConstValue::Builtin(name)), _) => {
                let args = self.args(st, args)?;
                self.builtin(&name, args, span).map(Val::Rt)
            }
            Val::Known(k, ksp) => {
                let what = match &k {
                    Known::Value(c) => describe_const(c),
                    Known::Inner(_) => "a function".into(),
                };
                self.refuse(
                    ksp,
                    format!("cannot call {what} in a compiled function"),
                    "called here",
                    "call Lua functions of the file, its modules, or the `bpf`/`linux` builtins",
                )
            }
            Val::Rt(e) => {
                let t = e.ty.describe();
                self.refuse(span, format!("cannot call {t}"), "here", "only functions can be called")
            }
        }
    }

    fn call_lua(&mut self, key: FnKey, args: Vec<Expr>, span: Span) -> R<Val> {
        // A call as the last argument passes all its results (Lua's multiple values).
        let tys = self.value_types(&args, usize::MAX);
        let tys: Vec<Ty> = match args.last().map(|a| &a.kind) {
            Some(ExprKind::Call { .. }) => tys,
            _ => args.iter().map(|a| a.ty.clone()).collect(),
        };
        let id = self.instantiate(key, tys, span, false).ok_or(())?;
        let ty = self.funcs[id].results.first().cloned().unwrap_or(Ty::Nil);
        Ok(Val::Rt(Expr {
            kind: ExprKind::Call { func: id, args },
            ty,
            span,
        }))
    }

    fn builtin(&mut self, name: &str, args: Vec<Expr>, span: Span) -> R<Expr> {
        let swap = |bits: u8| Builtin::ByteSwap(bits);
        let (op, nargs) = match name {
            "linux.byteorder.ntoh16" | "linux.byteorder.hton16" => (swap(16), 1),
            "linux.byteorder.ntoh32" | "linux.byteorder.hton32" => (swap(32), 1),
            "linux.byteorder.ntoh64" | "linux.byteorder.hton64" => (swap(64), 1),
            "bpf.ktime" => (Builtin::Ktime, 0),
            "bpf.random" => (Builtin::Random, 0),
            "bpf.cpu" => (Builtin::Cpu, 0),
            "error" => {
                return self.refuse(
                    span,
                    "`error(...)` is a statement here",
                    "used as a value",
                    "write `error(\"...\")` on its own line",
                );
            }
            "bpf.print" => {
                return self.refuse(
                    span,
                    "`bpf.print` is a statement",
                    "used as a value",
                    "call it on its own line",
                )
            }
            _ => {
                return self.refuse(
                    span,
                    format!("`{name}` cannot be called in a compiled function"),
                    "here",
                    "see docs/language.md, section 7",
                );
            }
        };
        if args.len() != nargs {
            return self.refuse(
                span,
                format!("`{name}` takes {nargs} argument(s), got {}", args.len()),
                "here",
                "check the call",
            );
        }
        let mut out = Vec::new();
        for a in args {
            out.push(self.require_int(a, "argument")?);
        }
        Ok(fold(Expr {
            kind: ExprKind::Builtin { op, args: out },
            ty: Ty::Int,
            span,
        }))
    }

    fn method(&mut self, st: &mut FnState, recv: Expr, name: &str, args: &FunctionArgs, span: Span) -> R<Val> {
        match recv.ty.clone() {
            Ty::Ctx => {
                if name == "packet" {
                    let _ = self.args(st, args)?;
                    return Ok(Val::Rt(Expr {
                        kind: ExprKind::Packet,
                        ty: Ty::Packet,
                        span,
                    }));
                }
                self.refuse(
                    span,
                    format!("ctx has no method `{name}`"),
                    "unknown method",
                    "use `ctx:packet()` and ctx fields such as `ctx.ingress_ifindex`",
                )
            }
            Ty::Packet => {
                let args = self.args(st, args)?;
                self.packet_method(name, args, span).map(Val::Rt)
            }
            Ty::Str => {
                let args = self.args(st, args)?;
                self.string_method(recv, name, args, span).map(Val::Rt)
            }
            Ty::Opt(_) => self.refuse(
                recv.span,
                "this value may be nil; test it before calling a method",
                "may be nil",
                "test it first: `if v then ... end`",
            ),
            t => {
                let t = t.describe();
                self.refuse(
                    span,
                    format!("{t} has no method `{name}`"),
                    "here",
                    "methods exist on ctx, the packet and strings",
                )
            }
        }
    }

    fn packet_method(&mut self, name: &str, args: Vec<Expr>, span: Span) -> R<Expr> {
        let load = |bytes: u8, signed: bool| (bytes, signed);
        let (bytes, signed) = match name {
            "getbyte" | "getuint8" => load(1, false),
            "getint8" => load(1, true),
            "getuint16" => load(2, false),
            "getint16" => load(2, true),
            "getuint32" => load(4, false),
            "getint32" => load(4, true),
            "getint64" | "getnumber" | "getuint64" => load(8, false),
            "getstring" => {
                if args.len() != 2 {
                    return self.refuse(
                        span,
                        "`getstring` takes an offset and a length",
                        "here",
                        "write `packet:getstring(offset, length)`",
                    );
                }
                let mut it = args.into_iter();
                let off = self.require_int(it.next().ok_or(())?, "offset")?;
                let len = self.require_int(it.next().ok_or(())?, "length")?;
                if let ExprKind::Int(n) = len.kind {
                    if !(0..=255).contains(&n) {
                        return self.refuse(
                            len.span,
                            format!("`getstring` of {n} bytes"),
                            "length",
                            "strings are at most 255 bytes at run time",
                        );
                    }
                }
                return Ok(Expr {
                    kind: ExprKind::PacketString {
                        off: Box::new(off),
                        len: Box::new(len),
                    },
                    ty: Ty::Str,
                    span,
                });
            }
            n if n.starts_with("set") => {
                return self.refuse(
                    span,
                    format!("`{n}` is a statement"),
                    "used as a value",
                    "call it on its own line",
                );
            }
            _ => {
                return self.refuse(
                    span,
                    format!("the packet has no method `{name}`"),
                    "unknown method",
                    "see docs/language.md, section 3",
                )
            }
        };
        if args.len() != 1 {
            return self.refuse(
                span,
                format!("`{name}` takes one offset"),
                "here",
                format!("write `packet:{name}(offset)`"),
            );
        }
        let off = self.require_int(args.into_iter().next().ok_or(())?, "offset")?;
        Ok(Expr {
            kind: ExprKind::PacketLoad {
                bytes,
                signed,
                off: Box::new(off),
            },
            ty: Ty::Int,
            span,
        })
    }

    fn string_method(&mut self, s: Expr, name: &str, args: Vec<Expr>, span: Span) -> R<Expr> {
        match name {
            "byte" => {
                let i = match args.len() {
                    0 => Expr { kind: ExprKind::Int(1), ty: Ty::Int, span },
                    1 => self.require_int(args.into_iter().next().ok_or(())?, "index")?,
                    _ => return self.refuse(span, "`s:byte(i)` returns one byte here", "here", "call `s:byte(i)` once per byte"),
                };
                if let (ExprKind::Str(bytes), ExprKind::Int(i)) = (&s.kind, &i.kind) {
                    let idx = if *i < 0 { bytes.len() as i64 + *i } else { *i - 1 };
                    return match bytes.get(idx.max(0) as usize) {
                        Some(b) if idx >= 0 => Ok(Expr { kind: ExprKind::Int(*b as i64), ty: Ty::Int, span }),
                        _ => Ok(Expr { kind: ExprKind::Nil, ty: Ty::Nil, span }),
                    };
                }
                Ok(Expr { kind: ExprKind::StrByte(Box::new(s), Box::new(i)), ty: Ty::opt(Ty::Int), span })
            }
            "len" => Ok(Expr { kind: ExprKind::StrLen(Box::new(s)), ty: Ty::Int, span }),
            "sub" | "lower" | "upper" | "find" => self.refuse(
                span,
                format!("`s:{name}` is not supported in compiled functions yet"),
                "here",
                "compare with `==`, read bytes with `s:byte(i)`, or read the part you need from the packet with `getstring`",
            ),
            _ => self.refuse(span, format!("strings have no method `{name}` in compiled functions"), "here", "see docs/language.md, section 4"),
        }
    }

    // ---- maps, records, ctx -------------------------------------------------------------

    fn map_value_ty(&self, map: MapId) -> Ty {
        if self.maps.bool_values.contains(&map) {
            return Ty::Bool;
        }
        match &self.maps.maps[map].value {
            Format::Int { .. } => Ty::Int,
            Format::Chars(_) => Ty::Str,
            Format::Record(_) => Ty::Record(map),
        }
    }

    fn field_ty(&self, map: MapId, field: usize) -> Ty {
        match &self.maps.maps[map].value {
            Format::Record(fields) => match fields.get(field).map(|f| &f.format) {
                Some(Format::Chars(_)) => Ty::Str,
                _ => Ty::Int,
            },
            _ => Ty::Int,
        }
    }

    fn record_field(&mut self, st: &FnState, map: MapId, name: &TokenReference) -> R<usize> {
        let fname = ident(name);
        let sp = self.span(st, name);
        let Format::Record(fields) = &self.maps.maps[map].value else {
            return Err(());
        };
        if let Some(i) = fields.iter().position(|f| f.name == fname) {
            if matches!(fields[i].format, Format::Record(_)) {
                return self.refuse(sp, "nested records are not supported", "here", "flatten the record");
            }
            return Ok(i);
        }
        let known: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
        let mname = self.maps.maps[map].name.clone();
        self.refuse(
            sp,
            format!("the values of map `{mname}` have no field `{fname}`"),
            "unknown field",
            format!("the fields are: {}", known.join(", ")),
        )
    }

    /// Checks a key against the map's key format.
    fn map_key(&mut self, _st: &FnState, map: MapId, key: Expr) -> R<Expr> {
        let m = &self.maps.maps[map];
        let want = match &m.key {
            Format::Int { .. } => Ty::Int,
            Format::Chars(_) => Ty::Str,
            Format::Record(_) => {
                let name = m.name.clone();
                return self.refuse(
                    key.span,
                    format!("map `{name}` has record keys, which compiled code cannot build yet"),
                    "key",
                    "use an integer or `cN` key",
                );
            }
        };
        if let (ExprKind::Str(s), Format::Chars(n)) = (&key.kind, &m.key) {
            if s.len() > *n as usize {
                let (len, n) = (s.len(), *n);
                return self.refuse(
                    key.span,
                    format!("this key is {len} bytes; the map's keys are c{n}"),
                    "too long",
                    "a longer key is never found: shorten it",
                );
            }
        }
        if key.ty.is_opt() {
            return self.refuse(
                key.span,
                "a map key may not be nil",
                "may be nil",
                "test it first: `if k then ... end`",
            );
        }
        if key.ty != want {
            let (have, w) = (key.ty.describe(), want.describe());
            let name = self.maps.maps[map].name.clone();
            return self.refuse(
                key.span,
                format!("map `{name}` has {w} keys, not {have}"),
                format!("this is {have}"),
                format!("index it with {w}"),
            );
        }
        Ok(key)
    }

    /// The map behind a static table (created on first run-time use).
    fn static_map(&mut self, _st: &FnState, t: TableId, span: Span) -> R<MapId> {
        if let Some(&m) = self.maps.static_of.get(&t) {
            return Ok(m);
        }
        let table = &self.ev.tables[t];
        let name = table.name.clone().unwrap_or_else(|| format!("table{t}"));
        let decl_span = table.span.unwrap_or(span);
        match static_table_layout(&table.entries) {
            Ok((key, value, init)) => {
                if self.maps.maps.iter().any(|m| m.name == name) {
                    return self.refuse(
                        span,
                        format!("a map named `{name}` already exists"),
                        "this table",
                        "rename the table or the map",
                    );
                }
                let n = init.len().max(1) as u32;
                self.maps.maps.push(MapDecl {
                    name,
                    kind: MapKind::Hash,
                    key,
                    value,
                    max_entries: n.next_power_of_two().max(64),
                    flags: 0,
                    span: decl_span,
                });
                self.maps.init.push(init);
                let id = self.maps.maps.len() - 1;
                self.maps.static_of.insert(t, id);
                if self.maps.maps[id].value
                    == (Format::Int {
                        bytes: 1,
                        signed: false,
                    })
                {
                    self.maps.bool_values.insert(id);
                }
                Ok(id)
            }
            Err(msg) => self.refuse(
                span,
                format!("the table `{name}` cannot be indexed at run time: {msg}"),
                "indexed with a run-time key",
                "a static table holds integer or string keys and integer, boolean or string values of one type",
            ),
        }
    }

    fn ctx_field(&mut self, name: &str, write: bool, span: Span) -> R<CtxField> {
        // The user-visible fields of the hook's context, with their layout from runtime-bpf's
        // one table of context layouts (the packet pointers are reached through ctx:packet()).
        const PACKET_POINTERS: &[&str] = &["data", "data_end", "data_meta", "egress_ifindex"];
        let layout: &[progtypes::CtxField] = match self.hook {
            Hook::Xdp => progtypes::XDP_MD,
            Hook::Tc { .. } => progtypes::SK_BUFF,
            Hook::Netfilter { .. } => &[],
        };
        let fields: Vec<(&str, i16, u8, bool)> = layout
            .iter()
            .filter(|f| !PACKET_POINTERS.contains(&f.name))
            .map(|f| (f.name, f.offset, f.size.bytes() as u8, f.writable))
            .collect();
        match fields.iter().find(|f| f.0 == name) {
            Some(&(_, offset, bytes, writable)) => {
                if write && !writable {
                    return self.refuse(
                        span,
                        format!("ctx.{name} is read-only"),
                        "assigned here",
                        "only `mark` and `priority` of tc programs can be written",
                    );
                }
                Ok(CtxField { offset, bytes })
            }
            None => {
                let names: Vec<&str> = fields.iter().map(|f| f.0).collect();
                let hint = if names.is_empty() {
                    "this hook's ctx has no fields yet; use `ctx:packet()`".to_string()
                } else {
                    format!("this hook's ctx has: {}", names.join(", "))
                };
                self.refuse(span, format!("ctx has no field `{name}` here"), "unknown field", hint)
            }
        }
    }
}

// ---- helpers over plain data ------------------------------------------------------------

/// What a condition proves about optional locals, when true and when false.
#[derive(Clone, Debug, Default)]
struct Facts {
    when_true: HashSet<LocalId>,
    when_false: HashSet<LocalId>,
}

impl Facts {
    fn negate(self) -> Facts {
        Facts {
            when_true: self.when_false,
            when_false: self.when_true,
        }
    }
}

fn facts_of(e: &Expr) -> Facts {
    let mut f = Facts::default();
    match &e.kind {
        ExprKind::Local(id) if e.ty.is_opt() => {
            f.when_true.insert(*id);
        }
        ExprKind::IsNil(inner) => {
            if let ExprKind::Local(id) = inner.kind {
                f.when_false.insert(id);
            }
        }
        ExprKind::Not(inner) => return facts_of(inner).negate(),
        _ => {}
    }
    f
}

/// The type of a variable that receives values of types `a` then `b`.
fn unify(a: &Ty, b: &Ty) -> Option<Ty> {
    if a == b {
        return Some(a.clone());
    }
    match (a, b) {
        (Ty::Nil, t) | (t, Ty::Nil) => Some(Ty::opt(t.clone())),
        (Ty::Opt(x), y) | (y, Ty::Opt(x)) if **x == *y => Some(Ty::opt(y.clone())),
        _ => None,
    }
}

/// The type of `a and b` / `a or b` used as a value.
fn and_or_value_ty(is_and: bool, a: &Ty, b: &Ty) -> Option<Ty> {
    if is_and {
        match (a, b) {
            (Ty::Bool, Ty::Bool) => Some(Ty::Bool),
            // `c and x`: x, or false/nil — usable as an optional (the `c and x or y` idiom).
            (Ty::Bool, t) | (Ty::Opt(_), t) | (Ty::Nil, t) if !matches!(t, Ty::Bool) => Some(Ty::opt(t.clone())),
            (Ty::Opt(_), Ty::Bool) => Some(Ty::Bool),
            (x, t) if !x.is_opt() && *x != Ty::Bool => Some(t.clone()),
            _ => None,
        }
    } else {
        match (a, b) {
            (Ty::Bool, Ty::Bool) => Some(Ty::Bool),
            (Ty::Opt(x), y) if **x == *y => Some(y.clone()),
            (Ty::Opt(x), Ty::Opt(y)) if x == y => Some(Ty::Opt(x.clone())),
            (Ty::Nil, t) => Some(t.clone()),
            (x, _) if !x.is_opt() && *x != Ty::Bool && *x != Ty::Nil => Some(x.clone()),
            _ => None,
        }
    }
}

/// The value type of an and/or chain checked as a condition, if it has one.
fn and_or_chain_ty(e: &Expr) -> Option<Ty> {
    match &e.kind {
        ExprKind::And(a, b) => and_or_value_ty(true, &and_or_chain_ty(a)?, &and_or_chain_ty(b)?),
        ExprKind::Or(a, b) => and_or_value_ty(false, &and_or_chain_ty(a)?, &and_or_chain_ty(b)?),
        _ => Some(e.ty.clone()),
    }
}

/// In a condition only truthiness matters, so any mix is fine.
fn and_or_cond_ty(a: &Ty, b: &Ty) -> Ty {
    and_or_value_ty(true, a, b).unwrap_or(Ty::Bool)
}

fn is_scalar_known(k: &Known) -> bool {
    matches!(
        k,
        Known::Value(
            ConstValue::Int(_) | ConstValue::Bool(_) | ConstValue::Str(_) | ConstValue::Nil | ConstValue::Float(_)
        )
    )
}

fn describe_const(c: &ConstValue) -> String {
    match c {
        ConstValue::Table(_) => "a table".into(),
        ConstValue::Map(_) => "a map".into(),
        ConstValue::Function(_) => "a function".into(),
        ConstValue::Builtin(n) => format!("the builtin `{n}`"),
        ConstValue::Program(_) => "a program".into(),
        ConstValue::Other(t) => format!("a value of type {t}"),
        ConstValue::Float(_) => "a float".into(),
        ConstValue::Int(_) => "an integer".into(),
        ConstValue::Bool(_) => "a boolean".into(),
        ConstValue::Str(_) => "a string".into(),
        ConstValue::Nil => "nil".into(),
    }
}

fn const_of(e: &Expr) -> Option<ConstValue> {
    match &e.kind {
        ExprKind::Int(i) => Some(ConstValue::Int(*i)),
        ExprKind::Str(s) => Some(ConstValue::Str(s.clone())),
        ExprKind::Bool(b) => Some(ConstValue::Bool(*b)),
        _ => None,
    }
}

fn is_pure(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Int(_) | ExprKind::Bool(_) | ExprKind::Str(_) | ExprKind::Local(_) | ExprKind::Nil => true,
        ExprKind::Unwrap(x) | ExprKind::Neg(x) | ExprKind::BNot(x) => is_pure(x),
        ExprKind::Arith(op, a, b) => !matches!(op, ArithOp::IDiv | ArithOp::Mod) && is_pure(a) && is_pure(b),
        ExprKind::PacketLoad { .. } | ExprKind::CtxField(_) => true,
        _ => false,
    }
}

/// Whether two pure expressions compute the same value (spans aside).
fn same_value(a: &Expr, b: &Expr) -> bool {
    match (&a.kind, &b.kind) {
        (ExprKind::Int(x), ExprKind::Int(y)) => x == y,
        (ExprKind::Bool(x), ExprKind::Bool(y)) => x == y,
        (ExprKind::Str(x), ExprKind::Str(y)) => x == y,
        (ExprKind::Nil, ExprKind::Nil) => true,
        (ExprKind::Local(x), ExprKind::Local(y)) => x == y,
        (ExprKind::Unwrap(x), ExprKind::Unwrap(y))
        | (ExprKind::Neg(x), ExprKind::Neg(y))
        | (ExprKind::BNot(x), ExprKind::BNot(y)) => same_value(x, y),
        (ExprKind::Arith(o1, a1, b1), ExprKind::Arith(o2, a2, b2)) => {
            o1 == o2 && same_value(a1, a2) && same_value(b1, b2)
        }
        (
            ExprKind::PacketLoad {
                bytes: n1,
                signed: s1,
                off: o1,
            },
            ExprKind::PacketLoad {
                bytes: n2,
                signed: s2,
                off: o2,
            },
        ) => n1 == n2 && s1 == s2 && same_value(o1, o2),
        (ExprKind::CtxField(x), ExprKind::CtxField(y)) => x == y,
        _ => false,
    }
}

fn seq_len(entries: &[(ConstValue, ConstValue)]) -> i64 {
    let mut n = 0;
    while entries
        .iter()
        .any(|(k, v)| *k == ConstValue::Int(n + 1) && *v != ConstValue::Nil)
    {
        n += 1;
    }
    n
}

/// Key and value formats and the initial contents of a static table.
#[allow(clippy::type_complexity)]
fn static_table_layout(
    entries: &[(ConstValue, ConstValue)],
) -> Result<(Format, Format, Vec<(Vec<u8>, Vec<u8>)>), String> {
    let round = |n: usize| ((n.div_ceil(8) * 8).max(64)) as u32;
    let keys_int = entries.iter().all(|(k, _)| matches!(k, ConstValue::Int(_)));
    let keys_str = entries.iter().all(|(k, _)| matches!(k, ConstValue::Str(_)));
    let key = if keys_int {
        Format::Int { bytes: 8, signed: true }
    } else if keys_str {
        let n = entries
            .iter()
            .map(|(k, _)| if let ConstValue::Str(s) = k { s.len() } else { 0 })
            .max()
            .unwrap_or(0);
        Format::Chars(round(n))
    } else {
        return Err("its keys mix types".into());
    };
    let vals_bool = entries.iter().all(|(_, v)| matches!(v, ConstValue::Bool(_)));
    let vals_int = entries.iter().all(|(_, v)| matches!(v, ConstValue::Int(_)));
    let vals_str = entries.iter().all(|(_, v)| matches!(v, ConstValue::Str(_)));
    let value = if vals_bool && !entries.is_empty() {
        Format::Int {
            bytes: 1,
            signed: false,
        }
    } else if vals_int {
        Format::Int { bytes: 8, signed: true }
    } else if vals_str {
        let n = entries
            .iter()
            .map(|(_, v)| if let ConstValue::Str(s) = v { s.len() } else { 0 })
            .max()
            .unwrap_or(0);
        Format::Chars(round(n))
    } else {
        return Err("its values are not all integers, all booleans or all strings".into());
    };
    let enc = |c: &ConstValue, f: &Format| -> Vec<u8> {
        let size = f.size() as usize;
        let mut out = vec![0u8; size];
        match c {
            ConstValue::Int(i) => out.copy_from_slice(&i.to_le_bytes()[..size]),
            ConstValue::Bool(b) => out[0] = *b as u8,
            ConstValue::Str(s) => out[..s.len().min(size)].copy_from_slice(&s[..s.len().min(size)]),
            _ => {}
        }
        out
    };
    let init = entries.iter().map(|(k, v)| (enc(k, &key), enc(v, &value))).collect();
    Ok((key, value, init))
}

/// Does this statement list always leave the enclosing block (return, break, error)?
pub fn terminates(stmts: &[Stmt]) -> bool {
    match stmts.last().map(|s| &s.kind) {
        Some(StmtKind::Return(_) | StmtKind::Break | StmtKind::Error) => true,
        Some(StmtKind::If { then_, else_, .. }) => terminates(then_) && terminates(else_),
        Some(StmtKind::Block(b)) => terminates(b),
        _ => false,
    }
}

fn collect_assigned(block: &ast::Block, out: &mut HashSet<String>) {
    for s in block.stmts() {
        match s {
            AStmt::Assignment(a) => {
                for v in a.variables().iter() {
                    if let Var::Name(t) = v {
                        out.insert(ident(t));
                    }
                }
            }
            AStmt::If(i) => {
                collect_assigned(i.block(), out);
                if let Some(elifs) = i.else_if() {
                    for e in elifs {
                        collect_assigned(e.block(), out);
                    }
                }
                if let Some(b) = i.else_block() {
                    collect_assigned(b, out);
                }
            }
            AStmt::While(w) => collect_assigned(w.block(), out),
            AStmt::Repeat(r) => collect_assigned(r.block(), out),
            AStmt::NumericFor(f) => collect_assigned(f.block(), out),
            AStmt::Do(d) => collect_assigned(d.block(), out),
            _ => {}
        }
    }
}

enum Num {
    Int(i64),
    Float,
}

/// Lua 5.4 numerals: decimal integers that overflow are floats; hexadecimal ones wrap.
fn parse_number(text: &str) -> Option<Num> {
    let t = text.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        if hex.contains(['.', 'p', 'P']) {
            return Some(Num::Float);
        }
        if hex.is_empty() {
            return None;
        }
        let mut v: u64 = 0;
        for c in hex.chars() {
            v = v.wrapping_mul(16).wrapping_add(c.to_digit(16)? as u64);
        }
        return Some(Num::Int(v as i64));
    }
    if t.contains(['.', 'e', 'E']) {
        return Some(Num::Float);
    }
    if !t.chars().all(|c| c.is_ascii_digit()) || t.is_empty() {
        return None;
    }
    match t.parse::<i64>() {
        Ok(i) => Some(Num::Int(i)),
        Err(_) => Some(Num::Float),
    }
}

/// Decodes the escapes of a short Lua string literal (without its quotes).
fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        i += 1;
        let c = *b.get(i).ok_or("a string ends with `\\`")?;
        i += 1;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            b'\'' => out.push(b'\''),
            b'\n' => out.push(b'\n'),
            b'x' => {
                let h = s.get(i..i + 2).ok_or("`\\x` needs two hexadecimal digits")?;
                out.push(u8::from_str_radix(h, 16).map_err(|_| "`\\x` needs two hexadecimal digits")?);
                i += 2;
            }
            b'z' => {
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
            }
            b'u' => {
                let rest = s.get(i..).unwrap_or("");
                let close = rest.find('}').ok_or("`\\u{...}` is not closed")?;
                let hex = rest.get(1..close).ok_or("malformed `\\u{...}`")?;
                let cp = u32::from_str_radix(hex, 16).map_err(|_| "malformed `\\u{...}`")?;
                let ch = char::from_u32(cp).ok_or("`\\u{...}` is not a character")?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i += close + 1;
            }
            d if d.is_ascii_digit() => {
                let mut v: u32 = (d - b'0') as u32;
                let mut n = 1;
                while n < 3 && i < b.len() && b[i].is_ascii_digit() {
                    v = v * 10 + (b[i] - b'0') as u32;
                    i += 1;
                    n += 1;
                }
                if v > 255 {
                    return Err(format!("the escape `\\{v}` is larger than 255"));
                }
                out.push(v as u8);
            }
            other => return Err(format!("invalid escape `\\{}`", other as char)),
        }
    }
    Ok(out)
}

/// Folds operations on constants, with Lua 5.4 integer semantics.
pub fn fold(e: Expr) -> Expr {
    let span = e.span;
    let int = |i: i64| Expr {
        kind: ExprKind::Int(i),
        ty: Ty::Int,
        span,
    };
    let boolean = |b: bool| Expr {
        kind: ExprKind::Bool(b),
        ty: Ty::Bool,
        span,
    };
    match &e.kind {
        ExprKind::Arith(op, a, b) => {
            if let (ExprKind::Int(x), ExprKind::Int(y)) = (&a.kind, &b.kind) {
                if let Some(v) = crate::semantics::arith(*op, *x, *y) {
                    return int(v);
                }
            }
            e
        }
        ExprKind::Neg(a) => match a.kind {
            ExprKind::Int(x) => int(x.wrapping_neg()),
            _ => e,
        },
        ExprKind::BNot(a) => match a.kind {
            ExprKind::Int(x) => int(!x),
            _ => e,
        },
        ExprKind::Not(a) => match &a.kind {
            ExprKind::Bool(b) => boolean(!b),
            ExprKind::Nil => boolean(true),
            ExprKind::Int(_) | ExprKind::Str(_) => boolean(false),
            _ => e,
        },
        ExprKind::Compare(op, a, b) => {
            let r = match (&a.kind, &b.kind) {
                (ExprKind::Int(x), ExprKind::Int(y)) => Some(match op {
                    CmpOp::Eq => x == y,
                    CmpOp::Ne => x != y,
                    CmpOp::Lt => x < y,
                    CmpOp::Le => x <= y,
                    CmpOp::Gt => x > y,
                    CmpOp::Ge => x >= y,
                }),
                (ExprKind::Str(x), ExprKind::Str(y)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                    Some((x == y) == (*op == CmpOp::Eq))
                }
                (ExprKind::Bool(x), ExprKind::Bool(y)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                    Some((x == y) == (*op == CmpOp::Eq))
                }
                _ => None,
            };
            r.map(boolean).unwrap_or(e)
        }
        ExprKind::Builtin {
            op: Builtin::ByteSwap(bits),
            args,
        } => match args.first().map(|a| &a.kind) {
            Some(ExprKind::Int(x)) => int(crate::semantics::byteswap(*bits, *x)),
            _ => e,
        },
        _ => e,
    }
}
