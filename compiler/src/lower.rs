//! Lowering: the typed program (`hir`) to the IR, with every safety check the verifier needs.
//!
//! This is where Lua semantics meet BPF: packet reads get their bounds checks, `//` and `%`
//! their zero and floor handling, shifts Lua's out-of-range rules, map lookups their nil
//! tests, loops their iteration bounds. Every runtime error jumps to one block that returns the
//! program's default verdict. Lua functions are inlined at each call (the checker refused
//! recursion), so the IR is one function per program.

use std::collections::HashMap;

use crate::compile::SafetyCheck;
use crate::diag::{Diagnostic, Diagnostics};
use crate::hir::{self, ArithOp, Builtin, CmpOp, Expr, ExprKind, LocalId, Stmt, StmtKind, Ty};
use crate::ir::{BinOp, Block, Function, Inst, Operand, Slot, Terminator, Value, ValueKind};
use crate::program::{Hook, MapId};
use crate::source::{SourceDb, Span};
use crate::types::{Checked, MapTable};
use runtime_bpf::helpers as h;
use runtime_bpf::isa::{JmpOp, Size};
use runtime_bpf::object::{Format, SourceLoc};

mod counted;
mod exact;
mod netfilter;

/// Largest packet offset an access may start at. The verifier only grants a range to a
/// packet pointer whose maximum offset plus the access size stays within MAX_PACKET_OFF
/// (0xffff), so the bound leaves room for the widest (8-byte) access.
pub(crate) const MAX_PACKET_OFF: i64 = 0xfff0;

/// The most iterations of enclosing loops under which `getstring` copies with a loop of its
/// own (`Lowerer::word_copy_is_cheap_to_verify`): TLS's 32 extensions; a 512-byte scan is above.
const WORDS_COPY_TRIPS: u64 = 32;

/// The longest constant `getstring` length copied by unrolled loads (an IPv6 address is 16).
const UNROLLED_STRING: i64 = 32;
/// Iterations a loop without a constant bound may run before the program takes its default
/// verdict: the verifier walks every iteration, so this bounds its work.
pub const LOOP_CAP: i64 = 1024;
/// Constant-bound loops beyond this many iterations are refused (the verifier would give up).
pub const MAX_CONST_TRIPS: i64 = 65536;

/// Inputs of lowering one program.
pub struct LowerInput<'a> {
    pub checked: &'a Checked,
    pub maps: &'a MapTable,
    pub hook: &'a Hook,
    pub default_verdict: i64,
    pub name: &'a str,
    pub db: &'a SourceDb,
    /// Test only: a safety mechanism to leave out (see `compile::SafetyCheck`).
    pub without: Option<SafetyCheck>,
}

/// Lowers one program: its entry function first, then the functions outlined as separately
/// verified BPF functions (`Inst::CallLocal` indexes this list).
pub fn lower(input: &LowerInput) -> Result<Vec<Function>, Diagnostics> {
    let mut f = Function::new(input.name);
    let entry = f.entry;
    let err_block = f.new_block();
    f.blocks[err_block].term = (
        Terminator::Return(Operand::Imm(input.default_verdict)),
        SourceLoc::default(),
    );
    let ctx = f.new_value(ValueKind::Pointer);
    let mut l = Lowerer {
        input,
        f,
        cur: entry,
        loc: SourceLoc::default(),
        err_block,
        ctx,
        frames: Vec::new(),
        loops: Vec::new(),
        diags: Vec::new(),
        line_cache: HashMap::new(),
        line_index: HashMap::new(),
        terminated: std::collections::HashSet::new(),
        loop_depth: 0,
        loop_trips: 1,
        pkt: None,
        dynptr: None,
        temp_slots: HashMap::new(),
        subfuncs: Vec::new(),
        outlined: HashMap::new(),
        in_subfunc: false,
    };
    l.push(Inst::Arg { dst: ctx, index: 0 });
    if !l.is_netfilter() {
        l.load_packet_bounds();
    }
    let entry_fn = &input.checked.funcs[input.checked.entry];
    let mut frame = Frame {
        locals: HashMap::new(),
        func: input.checked.entry,
        ret: RetMode::Verdict,
        assigned: assigned_counts(&entry_fn.body),
    };
    // The entry's one parameter is the ctx.
    if let Some(&p) = entry_fn.params.first() {
        frame.locals.insert(p, Storage::Ctx);
    }
    l.frames.push(frame);
    l.stmts(&entry_fn.body);
    if !l.is_terminated() {
        let v = input.default_verdict;
        l.terminate(Terminator::Return(Operand::Imm(v)));
    }
    if l.diags.is_empty() {
        let mut funcs = vec![l.f];
        funcs.extend(
            l.subfuncs
                .into_iter()
                .map(|s| s.expect("every outlined function is lowered")),
        );
        Ok(funcs)
    } else {
        Err(l.diags)
    }
}

/// What a pooled stack buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TempSlot {
    Key,
    Value,
    /// The buffer a netfilter packet slice copies into when the bytes are not linear.
    PacketRead,
}

/// How `return` leaves the function being lowered.
#[derive(Clone, Debug)]
enum RetMode {
    /// The program's entry: a verdict.
    Verdict,
    /// An inlined call: store the results and jump to the continuation.
    Inline(Block, Vec<Storage>, Vec<Ty>),
    /// A separately verified function: the result through the `out` pointer, status in r0
    /// (`SUB_OK`, `SUB_NIL`; `SUB_ERROR` from the error block).
    Sub { out: Option<Value>, ty: Option<Ty> },
}

const SUB_OK: i64 = 0;
pub(crate) const SUB_ERROR: i64 = 1;
const SUB_NIL: i64 = 2;

/// A lowered value.
#[derive(Clone, Debug)]
enum LV {
    Nil,
    /// An integer or boolean (0/1).
    Scalar(Operand),
    /// An optional scalar or string: `present` is 0 or 1.
    Opt {
        present: Operand,
        value: Box<LV>,
    },
    /// A pointer that is never null here (ctx, a record).
    Ptr(Value),
    /// A record pointer that may be null (nil).
    OptPtr(Value),
    Str(StrV),
    /// The packet proxy (its accesses go through the ctx).
    Packet,
}

#[derive(Clone, Debug)]
struct StrV {
    buf: StrBuf,
    /// The length; `None` when unknown (a zero-padded map string).
    len: Option<Operand>,
}

#[derive(Clone, Debug)]
enum StrBuf {
    Const(Vec<u8>),
    /// A zero-padded stack buffer of `cap` bytes (a multiple of 8).
    Slot {
        slot: Slot,
        cap: u32,
    },
    /// `cap` zero-padded bytes at `base + off` (a map value or record field).
    Ptr {
        base: Value,
        off: i16,
        cap: u32,
    },
}

impl StrBuf {
    fn cap(&self) -> u32 {
        match self {
            StrBuf::Const(b) => b.len() as u32,
            StrBuf::Slot { cap, .. } | StrBuf::Ptr { cap, .. } => *cap,
        }
    }
}

/// Where a local lives.
#[derive(Clone, Debug)]
enum Storage {
    Nil,
    Ctx,
    Packet,
    Scalar(Value),
    Opt {
        present: Value,
        value: Box<Storage>,
    },
    Ptr(Value),
    OptPtr(Value),
    /// A string local: its own buffer (copied into on assignment) or an alias of the buffer
    /// of its only value.
    Str {
        slot: Option<(Slot, u32)>,
        alias: Option<StrV>,
        len: Value,
    },
}

struct Frame {
    locals: HashMap<LocalId, Storage>,
    func: hir::HirFuncId,
    /// Where `return` goes.
    ret: RetMode,
    assigned: HashMap<LocalId, u32>,
}

struct LoopCtx {
    exit: Block,
}

struct Lowerer<'a> {
    input: &'a LowerInput<'a>,
    f: Function,
    cur: Block,
    loc: SourceLoc,
    err_block: Block,
    ctx: Value,
    frames: Vec<Frame>,
    loops: Vec<LoopCtx>,
    diags: Diagnostics,
    line_cache: HashMap<(u32, usize), SourceLoc>,
    /// Line starts of each file a location was asked in (`set_loc`).
    line_index: HashMap<u32, crate::source::LineIndex>,
    /// Fresh blocks opened after a terminator: unreachable, so code there is dead.
    terminated: std::collections::HashSet<Block>,
    /// Loops enclosing the code being lowered, across inlined calls.
    loop_depth: u32,
    /// The most times the code being lowered can run per call of its function: the product
    /// of the enclosing loops' most iterations (LOOP_CAP where no bound is known).
    loop_trips: u64,
    /// The current function's `data` and `data_end` registers.
    pkt: Option<(Value, Value)>,
    /// Netfilter: the current function's dynptr over the packet, once made.
    dynptr: Option<Slot>,
    /// Stack buffers for map keys and values, shared by every map access of the function:
    /// each is filled right before the helper call that reads it.
    temp_slots: HashMap<(TempSlot, u32), Slot>,
    /// Separately verified functions (index + 1 is their `CallLocal` number), lowered once.
    subfuncs: Vec<Option<Function>>,
    outlined: HashMap<hir::HirFuncId, u32>,
    in_subfunc: bool,
}

fn assigned_counts(body: &[Stmt]) -> HashMap<LocalId, u32> {
    fn walk(stmts: &[Stmt], out: &mut HashMap<LocalId, u32>) {
        for s in stmts {
            match &s.kind {
                StmtKind::SetLocal { local, .. } => *out.entry(*local).or_default() += 1,
                StmtKind::SetLocals { locals, .. } => {
                    for l in locals {
                        *out.entry(*l).or_default() += 1;
                    }
                }
                StmtKind::If { then_, else_, .. } => {
                    walk(then_, out);
                    walk(else_, out);
                }
                StmtKind::While { body, .. } | StmtKind::Repeat { body, .. } | StmtKind::Block(body) => walk(body, out),
                StmtKind::NumFor { body, var, .. } => {
                    *out.entry(*var).or_default() += 2;
                    walk(body, out)
                }
                _ => {}
            }
        }
    }
    let mut out = HashMap::new();
    walk(body, &mut out);
    out
}

impl<'a> Lowerer<'a> {
    // ---- building blocks ----------------------------------------------------------------

    fn set_loc(&mut self, span: Span) {
        let key = (span.file, span.start);
        if let Some(l) = self.line_cache.get(&key) {
            self.loc = *l;
            return;
        }
        let (line, col) = match self.input.db.files.get(span.file as usize) {
            Some(f) => self
                .line_index
                .entry(span.file)
                .or_insert_with(|| crate::source::LineIndex::new(&f.text))
                .line_col(&f.text, span.start),
            None => (0, 0),
        };
        let l = SourceLoc {
            file: span.file,
            line,
            col,
        };
        self.line_cache.insert(key, l);
        self.loc = l;
    }

    fn push(&mut self, inst: Inst) {
        let loc = self.loc;
        self.f.blocks[self.cur].insts.push((inst, loc));
    }

    fn terminate(&mut self, t: Terminator) {
        let loc = self.loc;
        self.f.blocks[self.cur].term = (t, loc);
        // Anything emitted after a terminator lands in a fresh, unreachable block.
        self.cur = self.f.new_block();
        self.f.blocks[self.cur].term = (Terminator::Return(Operand::Imm(self.input.default_verdict)), loc);
        self.terminated.insert(self.cur);
    }

    fn is_terminated(&self) -> bool {
        self.terminated.contains(&self.cur)
    }

    fn switch_to(&mut self, b: Block) {
        self.cur = b;
    }

    fn jump(&mut self, b: Block) {
        self.terminate(Terminator::Jump(b));
    }

    fn branch(&mut self, op: JmpOp, a: Value, b: Operand, then_: Block, else_: Block) {
        self.terminate(Terminator::Branch { op, a, b, then_, else_ });
    }

    fn scalar(&mut self) -> Value {
        self.f.new_value(ValueKind::Scalar)
    }

    fn pointer(&mut self) -> Value {
        self.f.new_value(ValueKind::Pointer)
    }

    fn konst(&mut self, imm: i64) -> Value {
        let v = self.scalar();
        self.push(Inst::Const { dst: v, imm });
        v
    }

    /// An operand in a register (constants materialised).
    fn reg(&mut self, o: Operand) -> Value {
        match o {
            Operand::Value(v) => v,
            Operand::Imm(i) => self.konst(i),
        }
    }

    fn bin(&mut self, op: BinOp, a: Operand, b: Operand) -> Value {
        let a = self.reg(a);
        let dst = self.scalar();
        self.push(Inst::Bin { op, dst, a, b });
        dst
    }

    /// `v = v op b`: a value the code updates where it is (a counter, a moving pointer).
    fn bin_in_place(&mut self, op: BinOp, v: Value, b: Operand) {
        self.push(Inst::Bin { op, dst: v, a: v, b });
    }

    fn mov(&mut self, dst: Value, src: Operand) {
        match src {
            Operand::Value(v) => self.push(Inst::Mov { dst, src: v }),
            Operand::Imm(imm) => self.push(Inst::Const { dst, imm }),
        }
    }

    /// Jumps to the error block when `a op b`.
    fn error_if(&mut self, op: JmpOp, a: Value, b: Operand) {
        let ok = self.f.new_block();
        let err = self.err_block;
        self.branch(op, a, b, err, ok);
        self.switch_to(ok);
    }

    fn error(&mut self, span: Span, msg: impl Into<String>, label: impl Into<String>, hint: impl Into<String>) {
        self.diags.push(Diagnostic::new(span, msg, label).hint(hint));
    }

    fn frame(&self) -> &Frame {
        self.frames.last().expect("a frame")
    }

    fn local_ty(&self, id: LocalId) -> Ty {
        let func = self.frame().func;
        self.input.checked.funcs[func].locals[id].ty.clone()
    }

    // ---- statements ---------------------------------------------------------------------

    fn stmts(&mut self, stmts: &[Stmt]) {
        for s in stmts {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, s: &Stmt) {
        self.set_loc(s.span);
        match &s.kind {
            StmtKind::Local { locals, values } => {
                let vals = self.expr_list(values, locals.len());
                for (id, v) in locals.iter().zip(vals) {
                    let ty = self.local_ty(*id);
                    let once = self.frame().assigned.get(id).copied().unwrap_or(0) == 0;
                    let st = self.new_storage(&ty, once.then_some(&v.0));
                    self.frames.last_mut().expect("frame").locals.insert(*id, st.clone());
                    self.store(&st, &v.0, &v.1, &ty);
                }
            }
            StmtKind::SetLocal { local, value } => {
                let v = self.expr(value);
                let st = self.storage(*local);
                let ty = self.local_ty(*local);
                self.store(&st, &v, &value.ty, &ty);
            }
            StmtKind::SetLocals { locals, values } => {
                let vals = self.expr_list(values, locals.len());
                // Evaluate everything first, then assign (Lua's multiple assignment).
                let vals: Vec<(LV, Ty)> = vals.into_iter().map(|(v, t)| (self.snapshot(v, &t), t)).collect();
                for (id, (v, t)) in locals.iter().zip(vals) {
                    let st = self.storage(*id);
                    let ty = self.local_ty(*id);
                    self.store(&st, &v, &t, &ty);
                }
            }
            StmtKind::MapSet { map, key, value } => self.map_set(*map, key, value.as_ref()),
            StmtKind::MapAdd { map, key, delta } => self.map_add(*map, key, delta),
            StmtKind::FieldSet {
                base,
                map,
                field,
                value,
            } => {
                let b = self.expr(base);
                let LV::Ptr(p) = b else { return };
                let v = self.expr(value);
                self.store_field(p, *map, *field, v, s.span);
            }
            StmtKind::PacketStore { bytes, off, value } => {
                let o = self.expr_scalar(off);
                let v = self.expr_scalar(value);
                let p = self.packet_ptr(o, *bytes as i64);
                let size = Size::from_bytes(*bytes as u32).unwrap_or(Size::DW);
                self.push(Inst::Store {
                    base: p,
                    off: 0,
                    src: v,
                    size,
                });
            }
            StmtKind::PacketStoreString { off, value } => {
                let o = self.expr_scalar(off);
                let v = self.expr(value);
                self.packet_store_string(o, v);
            }
            StmtKind::CtxStore { field, value } => {
                let v = self.expr_scalar(value);
                let size = Size::from_bytes(field.bytes as u32).unwrap_or(Size::W);
                let ctx = self.ctx;
                self.push(Inst::Store {
                    base: ctx,
                    off: field.offset,
                    src: v,
                    size,
                });
            }
            StmtKind::If { cond, then_, else_ } => {
                let t = self.f.new_block();
                let e = self.f.new_block();
                let join = self.f.new_block();
                self.cond(cond, t, e);
                self.switch_to(t);
                self.stmts(then_);
                if !self.is_terminated() {
                    self.jump(join);
                }
                self.switch_to(e);
                self.stmts(else_);
                if !self.is_terminated() {
                    self.jump(join);
                }
                self.switch_to(join);
            }
            StmtKind::While { cond, body } => {
                let trips = counted::counted(cond, body)
                    .and_then(|c| self.entry_constant(c.var).map(|start| c.max_trips(start)))
                    .filter(|t| *t <= LOOP_CAP as i128);
                let bounded = trips.is_some();
                let (head, counter) = if bounded {
                    let head = self.f.new_block();
                    self.jump(head);
                    (head, None)
                } else {
                    let (head, counter) = self.loop_head();
                    (head, Some(counter))
                };
                let body_b = self.f.new_block();
                let exit = self.f.new_block();
                self.switch_to(head);
                self.cond(cond, body_b, exit);
                self.switch_to(body_b);
                // Counted when an iteration starts: a loop that ends after exactly
                // LOOP_CAP iterations is not an error.
                if let Some(counter) = counter {
                    self.loop_guard(counter);
                }
                self.loop_body(exit, None, body, trips.unwrap_or(LOOP_CAP as i128) as u64);
                if !self.is_terminated() {
                    self.jump(head);
                }
                self.switch_to(exit);
            }
            StmtKind::Repeat { body, cond } => {
                let (head, counter) = self.loop_head();
                let exit = self.f.new_block();
                self.switch_to(head);
                self.loop_guard(counter);
                self.loop_body(exit, None, body, LOOP_CAP as u64);
                if !self.is_terminated() {
                    self.set_loc(cond.span);
                    self.cond(cond, exit, head);
                }
                self.switch_to(exit);
            }
            StmtKind::NumFor {
                var,
                start,
                limit,
                step,
                body,
            } => self.numeric_for(*var, start, limit, *step, body, s.span),
            StmtKind::Break => {
                if let Some(l) = self.loops.last() {
                    let exit = l.exit;
                    self.jump(exit);
                }
            }
            StmtKind::Return(values) => self.ret(values),
            StmtKind::Eval(e) => {
                let _ = self.expr(e);
            }
            StmtKind::Error => {
                let err = self.err_block;
                self.jump(err);
            }
            StmtKind::Block(b) => self.stmts(b),
            StmtKind::Print { fmt, args } => {
                let mut bytes = fmt.clone();
                bytes.push(0);
                let sv = StrV {
                    buf: StrBuf::Const(bytes.clone()),
                    len: Some(Operand::Imm(bytes.len() as i64)),
                };
                let (slot, _) = self.str_to_slot(&sv, round8(bytes.len() as u32));
                let p = self.pointer();
                self.push(Inst::SlotAddr { dst: p, slot, off: 0 });
                let mut call_args = vec![Operand::Value(p), Operand::Imm(bytes.len() as i64)];
                for a in args {
                    let v = self.expr_scalar(a);
                    call_args.push(v);
                }
                self.push(Inst::Call {
                    helper: h::TRACE_PRINTK,
                    args: call_args,
                    dst: None,
                });
            }
        }
    }

    /// Lowers a loop body: `break` leaves to `exit`; a numeric loop's Lua variable is a fresh
    /// copy of the induction register, so assignments to it do not change the iteration.
    fn loop_body(&mut self, exit: Block, var: Option<(LocalId, Value)>, body: &[Stmt], trips: u64) {
        self.loops.push(LoopCtx { exit });
        self.loop_depth += 1;
        let outer_trips = self.loop_trips;
        self.loop_trips = outer_trips.saturating_mul(trips);
        if let Some((var, induction)) = var {
            let user = self.scalar();
            self.push(Inst::Mov {
                dst: user,
                src: induction,
            });
            self.frames
                .last_mut()
                .expect("frame")
                .locals
                .insert(var, Storage::Scalar(user));
        }
        self.stmts(body);
        self.loops.pop();
        self.loop_depth -= 1;
        self.loop_trips = outer_trips;
    }

    /// The constant a scalar local holds here, when the current block set it (`local n = 0`
    /// just before a loop).
    fn entry_constant(&self, var: LocalId) -> Option<i64> {
        let Some(Storage::Scalar(mut v)) = self.frames.last()?.locals.get(&var).cloned() else {
            return None;
        };
        for (inst, _) in self.f.blocks[self.cur].insts.iter().rev() {
            match inst {
                Inst::Const { dst, imm } if *dst == v => return Some(*imm),
                Inst::Mov { dst, src } if *dst == v => v = *src,
                other if other.def() == Some(v) => return None,
                _ => {}
            }
        }
        None
    }

    /// A loop's head block with its hidden iteration counter (for loops without a constant
    /// bound): the counter is a constant-stepped value the verifier tracks exactly.
    fn loop_head(&mut self) -> (Block, Value) {
        let counter = self.konst(0);
        let head = self.f.new_block();
        self.jump(head);
        (head, counter)
    }

    fn loop_guard(&mut self, counter: Value) {
        if self.input.without != Some(SafetyCheck::LoopBound) {
            self.error_if(JmpOp::Jsge, counter, Operand::Imm(LOOP_CAP));
        }
        self.bin_in_place(BinOp::Add, counter, Operand::Imm(1));
    }

    fn numeric_for(&mut self, var: LocalId, start: &Expr, limit: &Expr, step: i64, body: &[Stmt], span: Span) {
        let s = self.expr_scalar(start);
        let lim = self.expr_scalar(limit);
        let st = Storage::Scalar(self.scalar());
        self.frames.last_mut().expect("frame").locals.insert(var, st.clone());
        let Storage::Scalar(i) = st else { return };
        // Constant bounds: an exact trip count the verifier follows iteration by iteration.
        if let (Operand::Imm(a), Operand::Imm(b)) = (s, lim) {
            let trips = if step > 0 {
                if a > b {
                    0
                } else {
                    ((b as i128 - a as i128) / step as i128) + 1
                }
            } else if a < b {
                0
            } else {
                ((a as i128 - b as i128) / (-(step as i128))) + 1
            };
            if trips == 0 {
                return;
            }
            if trips > MAX_CONST_TRIPS as i128 {
                self.error(
                    span,
                    format!("this loop runs {trips} times; the verifier cannot follow that many iterations"),
                    "loop",
                    format!("keep constant loops under {MAX_CONST_TRIPS} iterations"),
                );
                return;
            }
            // Test the induction variable itself (when `b + step` cannot overflow): its range
            // is then visible to the range analysis and to the verifier.
            let direct =
                (b as i128 + step as i128) >= i64::MIN as i128 && (b as i128 + step as i128) <= i64::MAX as i128;
            let count = if direct { None } else { Some(self.konst(trips as i64)) };
            self.push(Inst::Const { dst: i, imm: a });
            let head = self.f.new_block();
            let exit = self.f.new_block();
            self.jump(head);
            self.switch_to(head);
            self.loop_body(exit, Some((var, i)), body, trips as u64);
            if !self.is_terminated() {
                self.bin_in_place(BinOp::Add, i, Operand::Imm(step));
                match count {
                    None => {
                        let op = if step > 0 { JmpOp::Jsle } else { JmpOp::Jsge };
                        self.branch(op, i, Operand::Imm(b), head, exit);
                    }
                    Some(count) => {
                        self.bin_in_place(BinOp::Sub, count, Operand::Imm(1));
                        self.branch(JmpOp::Jne, count, Operand::Imm(0), head, exit);
                    }
                }
            }
            self.switch_to(exit);
            return;
        }
        // Run-time bounds: Lua's precomputed iteration count, plus the hidden cap.
        let exit = self.f.new_block();
        let pre = self.f.new_block();
        let sreg = self.reg(s);
        let lreg = self.reg(lim);
        if step > 0 {
            self.branch(JmpOp::Jsgt, sreg, Operand::Value(lreg), exit, pre);
        } else {
            self.branch(JmpOp::Jslt, sreg, Operand::Value(lreg), exit, pre);
        }
        self.switch_to(pre);
        // count = |limit - start| / |step| (unsigned: the difference may exceed i64::MAX)
        let diff = if step > 0 {
            self.bin(BinOp::Sub, Operand::Value(lreg), Operand::Value(sreg))
        } else {
            self.bin(BinOp::Sub, Operand::Value(sreg), Operand::Value(lreg))
        };
        let count = if step.unsigned_abs() == 1 {
            diff
        } else {
            self.bin(
                BinOp::UDiv,
                Operand::Value(diff),
                Operand::Imm(step.unsigned_abs() as i64),
            )
        };
        self.push(Inst::Mov { dst: i, src: sreg });
        let counter = self.konst(0);
        let head = self.f.new_block();
        self.jump(head);
        self.switch_to(head);
        self.loop_guard(counter);
        self.loop_body(exit, Some((var, i)), body, LOOP_CAP as u64);
        if !self.is_terminated() {
            let next = self.f.new_block();
            self.branch(JmpOp::Jeq, count, Operand::Imm(0), exit, next);
            self.switch_to(next);
            self.bin_in_place(BinOp::Sub, count, Operand::Imm(1));
            self.bin_in_place(BinOp::Add, i, Operand::Imm(step));
            self.jump(head);
        }
        self.switch_to(exit);
    }

    fn ret(&mut self, values: &[Expr]) {
        let frame_ret = self.frame().ret.clone();
        match frame_ret {
            RetMode::Sub { out, ty } => {
                let status = match (values.first(), out, ty) {
                    (Some(e), Some(out), Some(ty)) => {
                        let v = self.expr(e);
                        self.sub_result(v, &e.ty, &ty, out)
                    }
                    _ => Operand::Imm(SUB_OK),
                };
                self.terminate(Terminator::Return(status));
            }
            RetMode::Verdict => {
                // The entry function: a verdict.
                let verdict = match values.first() {
                    None => Operand::Imm(self.input.default_verdict),
                    Some(e) => {
                        let v = self.expr(e);
                        match v {
                            LV::Scalar(o) => o,
                            LV::Opt { present, value } => {
                                let LV::Scalar(val) = *value else { return };
                                let out = self.scalar();
                                self.mov(out, Operand::Imm(self.input.default_verdict));
                                let some = self.f.new_block();
                                let join = self.f.new_block();
                                let p = self.reg(present);
                                self.branch(JmpOp::Jne, p, Operand::Imm(0), some, join);
                                self.switch_to(some);
                                self.mov(out, val);
                                self.jump(join);
                                self.switch_to(join);
                                Operand::Value(out)
                            }
                            _ => Operand::Imm(self.input.default_verdict),
                        }
                    }
                };
                let verdict = match verdict {
                    // The kernel reads r0 as a 32-bit verdict; keep it a clean value.
                    Operand::Value(v) => Operand::Value(v),
                    o => o,
                };
                let verdict = if self.is_netfilter() {
                    self.nf_verdict(verdict)
                } else {
                    verdict
                };
                self.terminate(Terminator::Return(verdict));
            }
            RetMode::Inline(block, storages, tys) => {
                let vals = self.expr_list(values, storages.len());
                let vals: Vec<(LV, Ty)> = vals.into_iter().map(|(v, t)| (self.snapshot(v, &t), t)).collect();
                for ((st, want), (v, t)) in storages.iter().zip(&tys).zip(vals) {
                    self.store(st, &v, &t, want);
                }
                self.jump(block);
            }
        }
    }

    // ---- storage ------------------------------------------------------------------------

    fn storage(&mut self, id: LocalId) -> Storage {
        if let Some(s) = self.frame().locals.get(&id) {
            return s.clone();
        }
        // A local first assigned on some path: it starts nil.
        let ty = self.local_ty(id);
        let st = self.new_storage(&ty, None);
        self.frames.last_mut().expect("frame").locals.insert(id, st.clone());
        st
    }

    /// Storage for a local of type `ty`. A string local assigned only at its declaration
    /// aliases its value's buffer instead of copying it.
    fn new_storage(&mut self, ty: &Ty, only_value: Option<&LV>) -> Storage {
        match ty {
            Ty::Nil => Storage::Nil,
            Ty::Ctx => Storage::Ctx,
            Ty::Packet => Storage::Packet,
            Ty::Int | Ty::Bool => Storage::Scalar(self.scalar()),
            Ty::Record(_) => Storage::Ptr(self.pointer()),
            Ty::Str => {
                let len = self.scalar();
                match only_value {
                    Some(LV::Str(sv)) => Storage::Str {
                        slot: None,
                        alias: Some(sv.clone()),
                        len,
                    },
                    _ => {
                        let slot = self.f.new_slot(256, 8);
                        self.zero_slot(slot, 256);
                        Storage::Str {
                            slot: Some((slot, 256)),
                            alias: None,
                            len,
                        }
                    }
                }
            }
            Ty::Opt(inner) => match &**inner {
                Ty::Record(_) => Storage::OptPtr(self.pointer()),
                t => {
                    let present = self.scalar();
                    self.push(Inst::Const { dst: present, imm: 0 });
                    let only = match only_value {
                        Some(LV::Opt { value, .. }) => Some(&**value),
                        Some(v) => Some(v),
                        None => None,
                    };
                    let value = Box::new(self.new_storage(t, only));
                    // Zero the value too: the verifier must never see it uninitialised.
                    if let Storage::Scalar(v) = &*value {
                        self.push(Inst::Const { dst: *v, imm: 0 });
                    }
                    Storage::Opt { present, value }
                }
            },
        }
    }

    /// Stores `v` (of type `from`) into storage of type `to`.
    fn store(&mut self, st: &Storage, v: &LV, from: &Ty, to: &Ty) {
        match (st, v) {
            (Storage::Nil | Storage::Ctx | Storage::Packet, _) => {}
            (Storage::Scalar(d), LV::Scalar(o)) => self.mov(*d, *o),
            (Storage::Ptr(d), LV::Ptr(p)) | (Storage::OptPtr(d), LV::Ptr(p)) | (Storage::OptPtr(d), LV::OptPtr(p)) => {
                self.push(Inst::Mov { dst: *d, src: *p })
            }
            (Storage::OptPtr(d), LV::Nil) => self.push(Inst::Const { dst: *d, imm: 0 }),
            (Storage::Opt { present, .. }, LV::Nil) => self.push(Inst::Const { dst: *present, imm: 0 }),
            (Storage::Opt { present, value }, LV::Opt { present: p, value: val }) => {
                self.mov(*present, *p);
                let inner = from.strip().clone();
                self.store(value, val, &inner, to.strip());
            }
            (Storage::Opt { present, value }, other) => {
                // `c and x` yields false for "no value": treat a false boolean as nil when
                // the target is an optional of another type.
                if *from == Ty::Bool && *to.strip() != Ty::Bool {
                    self.push(Inst::Const { dst: *present, imm: 0 });
                    return;
                }
                self.push(Inst::Const { dst: *present, imm: 1 });
                self.store(value, other, from.strip(), to.strip());
            }
            (Storage::Str { slot, alias, len }, LV::Str(sv)) => {
                if alias.is_some() {
                    // The local is its value: nothing to copy, and no length to count.
                    return;
                }
                if let Some(l) = sv.len {
                    self.mov(*len, l);
                } else {
                    let l = self.str_len(sv);
                    self.mov(*len, l);
                }
                if alias.is_some() {
                    return;
                }
                if let Some((slot, cap)) = slot {
                    self.copy_str_into(sv, *slot, *cap, false);
                }
            }
            _ => {}
        }
    }

    /// Reads a local as a value of type `want` (narrowing: an optional read as its inner type).
    fn load(&mut self, st: &Storage, want: &Ty) -> LV {
        match st {
            Storage::Nil => LV::Nil,
            Storage::Ctx => LV::Ptr(self.ctx),
            Storage::Packet => LV::Packet,
            Storage::Scalar(v) => LV::Scalar(Operand::Value(*v)),
            Storage::Ptr(p) => LV::Ptr(*p),
            Storage::OptPtr(p) => {
                if want.is_opt() {
                    LV::OptPtr(*p)
                } else if *want == Ty::Nil {
                    LV::Nil
                } else {
                    LV::Ptr(*p)
                }
            }
            Storage::Opt { present, value } => {
                if *want == Ty::Nil {
                    return LV::Nil;
                }
                let inner = self.load(value, want.strip());
                if want.is_opt() {
                    LV::Opt {
                        present: Operand::Value(*present),
                        value: Box::new(inner),
                    }
                } else {
                    inner
                }
            }
            Storage::Str { slot, alias, len } => {
                if let Some(a) = alias {
                    return LV::Str(a.clone());
                }
                let buf = match (alias, slot) {
                    (Some(a), _) => a.buf.clone(),
                    (None, Some((s, cap))) => StrBuf::Slot { slot: *s, cap: *cap },
                    (None, None) => StrBuf::Const(Vec::new()),
                };
                LV::Str(StrV {
                    buf,
                    len: Some(Operand::Value(*len)),
                })
            }
        }
    }

    /// A value that later assignments cannot change (for multiple assignment).
    fn snapshot(&mut self, v: LV, _ty: &Ty) -> LV {
        match v {
            LV::Scalar(Operand::Value(x)) => {
                let c = self.scalar();
                self.push(Inst::Mov { dst: c, src: x });
                LV::Scalar(Operand::Value(c))
            }
            LV::Opt { present, value } => {
                let p = match present {
                    Operand::Value(x) => {
                        let c = self.scalar();
                        self.push(Inst::Mov { dst: c, src: x });
                        Operand::Value(c)
                    }
                    o => o,
                };
                let inner = self.snapshot(*value, _ty);
                LV::Opt {
                    present: p,
                    value: Box::new(inner),
                }
            }
            other => other,
        }
    }

    // ---- expressions --------------------------------------------------------------------

    fn expr_list(&mut self, values: &[Expr], n: usize) -> Vec<(LV, Ty)> {
        let mut out = Vec::new();
        for (i, e) in values.iter().enumerate() {
            let last = i + 1 == values.len();
            if let (ExprKind::Call { func, args }, true) = (&e.kind, last) {
                let results = self.call(*func, args);
                let tys = self.input.checked.funcs[*func].results.clone();
                if results.is_empty() {
                    out.push((LV::Nil, Ty::Nil));
                }
                out.extend(results.into_iter().zip(tys));
            } else {
                let v = self.expr(e);
                out.push((v, e.ty.clone()));
            }
        }
        while out.len() < n {
            out.push((LV::Nil, Ty::Nil));
        }
        out
    }

    fn expr_scalar(&mut self, e: &Expr) -> Operand {
        match self.expr(e) {
            LV::Scalar(o) => o,
            _ => Operand::Imm(0),
        }
    }

    fn expr(&mut self, e: &Expr) -> LV {
        match &e.kind {
            ExprKind::Int(i) => LV::Scalar(Operand::Imm(*i)),
            ExprKind::Bool(b) => LV::Scalar(Operand::Imm(*b as i64)),
            ExprKind::Nil => LV::Nil,
            ExprKind::Str(s) => LV::Str(StrV {
                buf: StrBuf::Const(s.clone()),
                len: Some(Operand::Imm(s.len() as i64)),
            }),
            ExprKind::Local(id) => {
                let st = self.storage(*id);
                self.load(&st, &e.ty)
            }
            ExprKind::Unwrap(x) => match self.expr(x) {
                LV::Opt { value, .. } => *value,
                LV::OptPtr(p) => LV::Ptr(p),
                v => v,
            },
            ExprKind::Wrap(x) => {
                let v = self.expr(x);
                LV::Opt {
                    present: Operand::Imm(1),
                    value: Box::new(v),
                }
            }
            ExprKind::Arith(op, a, b) => {
                let x = self.expr_scalar(a);
                let y = self.expr_scalar(b);
                self.set_loc(e.span);
                LV::Scalar(self.arith(*op, x, y))
            }
            ExprKind::Neg(a) => {
                let x = self.expr_scalar(a);
                let r = self.reg(x);
                let d = self.scalar();
                self.push(Inst::Neg { dst: d, src: r });
                LV::Scalar(Operand::Value(d))
            }
            ExprKind::BNot(a) => {
                let x = self.expr_scalar(a);
                LV::Scalar(Operand::Value(self.bin(BinOp::Xor, x, Operand::Imm(-1))))
            }
            ExprKind::Not(_) | ExprKind::Compare(..) | ExprKind::IsNil(_) | ExprKind::OptEquals(..) => {
                self.bool_value(e)
            }
            ExprKind::And(a, b) | ExprKind::Or(a, b) => self.and_or(e, a, b),
            ExprKind::PacketLoad { bytes, signed, off } => {
                let o = self.expr_scalar(off);
                self.set_loc(e.span);
                LV::Scalar(Operand::Value(self.packet_load(o, *bytes, *signed)))
            }
            ExprKind::PacketLen if self.is_netfilter() => LV::Scalar(Operand::Value(self.nf_packet_len())),
            ExprKind::PacketLen => {
                let (data, end) = self.packet_bounds();
                let d = self.scalar();
                self.push(Inst::Mov { dst: d, src: end });
                self.bin_in_place(BinOp::Sub, d, Operand::Value(data));
                LV::Scalar(Operand::Value(d))
            }
            ExprKind::PacketString { off, len } => {
                let o = self.expr_scalar(off);
                let l = self.expr_scalar(len);
                self.set_loc(e.span);
                LV::Str(self.packet_string(o, l))
            }
            ExprKind::CtxField(field) => {
                let d = self.scalar();
                let size = Size::from_bytes(field.bytes as u32).unwrap_or(Size::W);
                let ctx = self.ctx;
                self.push(Inst::Load {
                    dst: d,
                    base: ctx,
                    off: field.offset,
                    size,
                });
                LV::Scalar(Operand::Value(d))
            }
            ExprKind::Packet => LV::Packet,
            ExprKind::Ctx => LV::Ptr(self.ctx),
            ExprKind::MapGet { map, key } => {
                self.set_loc(e.span);
                self.map_get(*map, key)
            }
            ExprKind::Field { base, map, field } => {
                let b = self.expr(base);
                let LV::Ptr(p) = b else { return LV::Nil };
                self.load_field(p, *map, *field)
            }
            ExprKind::StrLen(s) => {
                let v = self.expr(s);
                match v {
                    LV::Str(sv) => LV::Scalar(self.str_len(&sv)),
                    _ => LV::Scalar(Operand::Imm(0)),
                }
            }
            ExprKind::StrByte(s, i) => {
                let sv = match self.expr(s) {
                    LV::Str(sv) => sv,
                    _ => return LV::Nil,
                };
                let i = self.expr_scalar(i);
                self.str_byte(&sv, i)
            }
            ExprKind::Call { func, args } => {
                let mut r = self.call(*func, args);
                if r.is_empty() {
                    LV::Nil
                } else {
                    r.swap_remove(0)
                }
            }
            ExprKind::Builtin { op, args } => {
                let vals: Vec<Operand> = args.iter().map(|a| self.expr_scalar(a)).collect();
                self.set_loc(e.span);
                LV::Scalar(self.builtin(*op, &vals))
            }
            ExprKind::RecordCtor { map, fields } => {
                // Only meaningful as a map value: build it in a zeroed slot.
                let slot = self.record_slot(*map, fields);
                let p = self.pointer();
                self.push(Inst::SlotAddr { dst: p, slot, off: 0 });
                LV::Ptr(p)
            }
        }
    }

    // ---- booleans, conditions -----------------------------------------------------------

    /// Materialises a condition as 0/1.
    fn bool_value(&mut self, e: &Expr) -> LV {
        let d = self.scalar();
        let t = self.f.new_block();
        let f_ = self.f.new_block();
        let join = self.f.new_block();
        self.cond(e, t, f_);
        self.switch_to(t);
        self.push(Inst::Const { dst: d, imm: 1 });
        self.jump(join);
        self.switch_to(f_);
        self.push(Inst::Const { dst: d, imm: 0 });
        self.jump(join);
        self.switch_to(join);
        LV::Scalar(Operand::Value(d))
    }

    /// Branches on Lua truthiness of `e`.
    fn cond(&mut self, e: &Expr, t: Block, f_: Block) {
        match &e.kind {
            ExprKind::Bool(b) => {
                self.jump(if *b { t } else { f_ });
            }
            ExprKind::Nil => self.jump(f_),
            ExprKind::Not(x) => self.cond(x, f_, t),
            ExprKind::And(a, b) => {
                let mid = self.f.new_block();
                self.cond(a, mid, f_);
                self.switch_to(mid);
                self.cond(b, t, f_);
            }
            ExprKind::Or(a, b) => {
                let mid = self.f.new_block();
                self.cond(a, t, mid);
                self.switch_to(mid);
                self.cond(b, t, f_);
            }
            ExprKind::Compare(op, a, b) => {
                if a.ty == Ty::Str {
                    let (x, y) = (self.expr(a), self.expr(b));
                    let eq = self.str_eq(x, y);
                    let (tt, ff) = if *op == CmpOp::Eq { (t, f_) } else { (f_, t) };
                    self.branch(JmpOp::Jne, eq, Operand::Imm(0), tt, ff);
                    return;
                }
                let x = self.expr_scalar(a);
                let y = self.expr_scalar(b);
                self.set_loc(e.span);
                let jop = match op {
                    CmpOp::Eq => JmpOp::Jeq,
                    CmpOp::Ne => JmpOp::Jne,
                    CmpOp::Lt => JmpOp::Jslt,
                    CmpOp::Le => JmpOp::Jsle,
                    CmpOp::Gt => JmpOp::Jsgt,
                    CmpOp::Ge => JmpOp::Jsge,
                };
                match (x, y) {
                    (Operand::Value(a), b) => self.branch(jop, a, b, t, f_),
                    (Operand::Imm(a), Operand::Value(b)) => self.branch(jop.swap(), b, Operand::Imm(a), t, f_),
                    (Operand::Imm(a), Operand::Imm(b)) => {
                        let r = self.konst(a);
                        self.branch(jop, r, Operand::Imm(b), t, f_)
                    }
                }
            }
            ExprKind::OptEquals(o, other) => {
                let ov = self.expr(o);
                let xv = self.expr(other);
                let (present, value) = match ov {
                    LV::Opt { present, value } => (present, *value),
                    LV::Nil => {
                        self.jump(f_);
                        return;
                    }
                    v => (Operand::Imm(1), v),
                };
                let p = self.reg(present);
                let go = self.f.new_block();
                self.branch(JmpOp::Jeq, p, Operand::Imm(0), f_, go);
                self.switch_to(go);
                match (value, xv) {
                    (a @ LV::Str(_), b @ LV::Str(_)) => {
                        let eq = self.str_eq(a, b);
                        self.branch(JmpOp::Jne, eq, Operand::Imm(0), t, f_);
                    }
                    (LV::Scalar(a), LV::Scalar(b)) => {
                        let a = self.reg(a);
                        self.branch(JmpOp::Jeq, a, b, t, f_);
                    }
                    _ => self.jump(f_),
                }
            }
            ExprKind::IsNil(x) => {
                // Presence only: a present `false` is not nil.
                match self.expr(x) {
                    LV::Nil => self.jump(t),
                    LV::Opt { present, .. } => {
                        let p = self.reg(present);
                        self.branch(JmpOp::Jeq, p, Operand::Imm(0), t, f_);
                    }
                    LV::OptPtr(p) => self.branch(JmpOp::Jeq, p, Operand::Imm(0), t, f_),
                    _ => self.jump(f_),
                }
            }
            _ => {
                let v = self.expr(e);
                self.truthy(v, &e.ty, t, f_);
            }
        }
    }

    /// Branches on the Lua truthiness of a lowered value.
    fn truthy(&mut self, v: LV, ty: &Ty, t: Block, f_: Block) {
        match v {
            LV::Nil => self.jump(f_),
            LV::Scalar(o) => {
                if *ty.strip() == Ty::Bool {
                    let r = self.reg(o);
                    self.branch(JmpOp::Jne, r, Operand::Imm(0), t, f_);
                } else {
                    self.jump(t);
                }
            }
            LV::Opt { present, value } => {
                let p = self.reg(present);
                if *ty.strip() == Ty::Bool {
                    let mid = self.f.new_block();
                    self.branch(JmpOp::Jne, p, Operand::Imm(0), mid, f_);
                    self.switch_to(mid);
                    self.truthy(*value, &Ty::Bool, t, f_);
                } else {
                    self.branch(JmpOp::Jne, p, Operand::Imm(0), t, f_);
                }
            }
            LV::OptPtr(p) => self.branch(JmpOp::Jne, p, Operand::Imm(0), t, f_),
            LV::Ptr(_) | LV::Str(_) | LV::Packet => self.jump(t),
        }
    }

    /// `a and b` / `a or b` as a value of type `e.ty`.
    fn and_or(&mut self, e: &Expr, a: &Expr, b: &Expr) -> LV {
        let is_and = matches!(e.kind, ExprKind::And(..));
        let st = self.new_storage(&e.ty, None);
        let take_a = self.f.new_block();
        let take_b = self.f.new_block();
        let join = self.f.new_block();
        let av = self.expr(a);
        let av2 = av.clone();
        // `a and b`: a when a is falsy; `a or b`: a when a is truthy.
        if is_and {
            self.truthy(av, &a.ty, take_b, take_a);
        } else {
            self.truthy(av, &a.ty, take_a, take_b);
        }
        self.switch_to(take_a);
        let aty = if is_and { a.ty.clone() } else { a.ty.strip().clone() };
        let av2 = if !is_and { unwrap_lv(av2) } else { av2 };
        if is_and && e.ty.is_opt() && *e.ty.strip() != Ty::Bool {
            // `a and b` with a falsy: the result is a's nil or false, which an optional of
            // another type can only hold as nil (falsy either way).
            self.store(&st, &LV::Nil, &Ty::Nil, &e.ty);
        } else {
            self.store(&st, &av2, &aty, &e.ty);
        }
        self.jump(join);
        self.switch_to(take_b);
        let bv = self.expr(b);
        self.store(&st, &bv, &b.ty, &e.ty);
        self.jump(join);
        self.switch_to(join);
        self.load(&st, &e.ty)
    }

    // ---- arithmetic ---------------------------------------------------------------------

    fn arith(&mut self, op: ArithOp, a: Operand, b: Operand) -> Operand {
        if let (Operand::Imm(x), Operand::Imm(y)) = (a, b) {
            if let Some(v) = crate::semantics::arith(op, x, y) {
                return Operand::Imm(v);
            }
        }
        let simple = match op {
            ArithOp::Add => Some(BinOp::Add),
            ArithOp::Sub => Some(BinOp::Sub),
            ArithOp::Mul => Some(BinOp::Mul),
            ArithOp::BAnd => Some(BinOp::And),
            ArithOp::BOr => Some(BinOp::Or),
            ArithOp::BXor => Some(BinOp::Xor),
            _ => None,
        };
        if let Some(bop) = simple {
            return Operand::Value(self.bin(bop, a, b));
        }
        match (op, b) {
            // By a positive power of two, floor division is an arithmetic shift and the floor
            // modulo a mask, for negative dividends too (-9 // 8 == -2 == -9 >> 3, -9 % 8 ==
            // 7 == -9 & 7): one instruction instead of a signed divide, a modulo and the
            // sign fix-up.
            (ArithOp::IDiv, Operand::Imm(y)) if y > 0 && y & (y - 1) == 0 => {
                Operand::Value(self.bin(BinOp::Arsh, a, Operand::Imm(y.trailing_zeros() as i64)))
            }
            (ArithOp::Mod, Operand::Imm(y)) if y > 0 && y & (y - 1) == 0 => {
                Operand::Value(self.bin(BinOp::And, a, Operand::Imm(y - 1)))
            }
            (ArithOp::IDiv | ArithOp::Mod, _) => Operand::Value(self.floor_div_mod(op == ArithOp::IDiv, a, b)),
            (ArithOp::Shl, _) => self.shift(a, b, false),
            (ArithOp::Shr, _) => self.shift(a, b, true),
            _ => Operand::Imm(0),
        }
    }

    /// Lua's floor division/modulo: a zero divisor is a runtime error.
    fn floor_div_mod(&mut self, div: bool, a: Operand, b: Operand) -> Value {
        let out = self.scalar();
        let join = self.f.new_block();
        let bv = self.reg(b);
        if !matches!(b, Operand::Imm(x) if x != 0) && self.input.without != Some(SafetyCheck::ZeroDivisor) {
            self.error_if(JmpOp::Jeq, bv, Operand::Imm(0));
        }
        // b == -1: `a // -1` is -a (wrapping), `a % -1` is 0; avoids INT_MIN / -1.
        if !matches!(b, Operand::Imm(x) if x != -1) {
            let minus_one = self.f.new_block();
            let general = self.f.new_block();
            self.branch(JmpOp::Jeq, bv, Operand::Imm(-1), minus_one, general);
            self.switch_to(minus_one);
            if div {
                let av = self.reg(a);
                self.push(Inst::Neg { dst: out, src: av });
            } else {
                self.push(Inst::Const { dst: out, imm: 0 });
            }
            self.jump(join);
            self.switch_to(general);
        }
        let av = self.reg(a);
        // Truncating quotient and remainder, then the floor correction when the remainder is
        // non-zero and its sign differs from the divisor's.
        let q = self.scalar();
        self.push(Inst::Bin {
            op: BinOp::SDiv,
            dst: q,
            a: av,
            b: Operand::Value(bv),
        });
        let r = self.scalar();
        self.push(Inst::Bin {
            op: BinOp::SMod,
            dst: r,
            a: av,
            b: Operand::Value(bv),
        });
        self.push(Inst::Mov {
            dst: out,
            src: if div { q } else { r },
        });
        let check_sign = self.f.new_block();
        let adjust = self.f.new_block();
        self.branch(JmpOp::Jeq, r, Operand::Imm(0), join, check_sign);
        self.switch_to(check_sign);
        let x = self.scalar();
        self.push(Inst::Bin {
            op: BinOp::Xor,
            dst: x,
            a: r,
            b: Operand::Value(bv),
        });
        self.branch(JmpOp::Jslt, x, Operand::Imm(0), adjust, join);
        self.switch_to(adjust);
        if div {
            self.bin_in_place(BinOp::Sub, out, Operand::Imm(1));
        } else {
            self.bin_in_place(BinOp::Add, out, Operand::Value(bv));
        }
        self.jump(join);
        self.switch_to(join);
        out
    }

    /// Lua's shifts: a count of 64 or more gives 0, a negative count shifts the other way.
    fn shift(&mut self, a: Operand, b: Operand, right: bool) -> Operand {
        if let Operand::Imm(n) = b {
            let n = if right { n.wrapping_neg() } else { n };
            if n <= -64 || n >= 64 {
                return Operand::Imm(0);
            }
            if n == 0 {
                return a;
            }
            let op = if n > 0 { BinOp::Lsh } else { BinOp::Rsh };
            return Operand::Value(self.bin(op, a, Operand::Imm(n.abs())));
        }
        let out = self.scalar();
        let av = self.reg(a);
        let bv = self.reg(b);
        let n = self.scalar();
        if right {
            self.push(Inst::Neg { dst: n, src: bv });
        } else {
            self.push(Inst::Mov { dst: n, src: bv });
        }
        let join = self.f.new_block();
        let zero = self.f.new_block();
        let in_range = self.f.new_block();
        let left = self.f.new_block();
        let rightb = self.f.new_block();
        let c1 = self.f.new_block();
        self.branch(JmpOp::Jsge, n, Operand::Imm(64), zero, c1);
        self.switch_to(c1);
        self.branch(JmpOp::Jsle, n, Operand::Imm(-64), zero, in_range);
        self.switch_to(zero);
        self.push(Inst::Const { dst: out, imm: 0 });
        self.jump(join);
        self.switch_to(in_range);
        self.branch(JmpOp::Jsge, n, Operand::Imm(0), left, rightb);
        self.switch_to(left);
        self.push(Inst::Bin {
            op: BinOp::Lsh,
            dst: out,
            a: av,
            b: Operand::Value(n),
        });
        self.jump(join);
        self.switch_to(rightb);
        let m = self.scalar();
        self.push(Inst::Neg { dst: m, src: n });
        self.push(Inst::Bin {
            op: BinOp::Rsh,
            dst: out,
            a: av,
            b: Operand::Value(m),
        });
        self.jump(join);
        self.switch_to(join);
        Operand::Value(out)
    }

    fn builtin(&mut self, op: Builtin, args: &[Operand]) -> Operand {
        match op {
            Builtin::ByteSwap(bits) => {
                let x = self.reg(args.first().copied().unwrap_or(Operand::Imm(0)));
                let d = self.scalar();
                self.push(Inst::Bswap { dst: d, src: x, bits });
                Operand::Value(d)
            }
            Builtin::Ktime => self.call0(h::KTIME_GET_NS),
            Builtin::Random => self.call0(h::GET_PRANDOM_U32),
            Builtin::Cpu => self.call0(h::GET_SMP_PROCESSOR_ID),
        }
    }

    fn call0(&mut self, helper: i32) -> Operand {
        let d = self.scalar();
        self.push(Inst::Call {
            helper,
            args: vec![],
            dst: Some(d),
        });
        Operand::Value(d)
    }

    // ---- calls (inlined) ----------------------------------------------------------------

    fn call(&mut self, func: hir::HirFuncId, args: &[Expr]) -> Vec<LV> {
        if self.should_outline(func) {
            return self.call_outlined(func, args);
        }
        let callee = &self.input.checked.funcs[func];
        let vals: Vec<(LV, Ty)> = self.expr_list(args, 0);
        let ret_block = self.f.new_block();
        let tys = callee.results.clone();
        let storages: Vec<Storage> = tys.iter().map(|t| self.new_storage(t, None)).collect();
        let mut frame = Frame {
            locals: HashMap::new(),
            func,
            ret: RetMode::Inline(ret_block, storages.clone(), tys.clone()),
            assigned: assigned_counts(&callee.body),
        };
        let params = callee.params.clone();
        let ptys: Vec<Ty> = params.iter().map(|p| callee.locals[*p].ty.clone()).collect();
        let body = &callee.body;
        let saved_loops = std::mem::take(&mut self.loops);
        self.frames.push(Frame {
            locals: HashMap::new(),
            func,
            ret: RetMode::Verdict,
            assigned: HashMap::new(),
        });
        for (i, p) in params.iter().enumerate() {
            let (v, vt) = vals.get(i).cloned().unwrap_or((LV::Nil, Ty::Nil));
            let once = frame.assigned.get(p).copied().unwrap_or(0) == 0;
            let st = self.new_storage(&ptys[i], once.then_some(&v));
            self.store(&st, &v, &vt, &ptys[i]);
            frame.locals.insert(*p, st);
        }
        self.frames.pop();
        self.frames.push(frame);
        self.stmts(body);
        if !self.is_terminated() {
            // Falling off the end returns nothing: the results are nil.
            for (st, t) in storages.iter().zip(&tys) {
                self.store(st, &LV::Nil, &Ty::Nil, t);
            }
            self.jump(ret_block);
        }
        self.frames.pop();
        self.loops = saved_loops;
        self.switch_to(ret_block);
        storages.iter().zip(&tys).map(|(st, t)| self.load(st, t)).collect()
    }

    // ---- separately verified functions ---------------------------------------------------

    /// A function called inside a loop that loops itself becomes a BPF function of its own:
    /// the verifier then checks it once, for any arguments, instead of once per iteration
    /// of the caller's loop (which multiplies the two loops' costs).
    fn should_outline(&self, func: hir::HirFuncId) -> bool {
        if self.loop_depth == 0 {
            return false;
        }
        let callee = &self.input.checked.funcs[func];
        outline_signature(callee).is_some() && has_loop(&callee.body)
    }

    fn call_outlined(&mut self, func: hir::HirFuncId, args: &[Expr]) -> Vec<LV> {
        let callee = &self.input.checked.funcs[func];
        let Some((scalar_params, result)) = outline_signature(callee) else {
            return vec![];
        };
        let index = match self.outlined.get(&func) {
            Some(i) => *i,
            None => {
                self.subfuncs.push(None);
                let i = self.subfuncs.len() as u32;
                self.outlined.insert(func, i);
                let f = self.lower_subfunc(func, &scalar_params, result.clone());
                self.subfuncs[i as usize - 1] = Some(f);
                i
            }
        };
        let mut call_args = vec![Operand::Value(self.ctx)];
        let vals = self.expr_list(args, 0);
        for (i, (v, _)) in vals.into_iter().enumerate() {
            if scalar_params.contains(&i) {
                match v {
                    LV::Scalar(o) => call_args.push(o),
                    _ => call_args.push(Operand::Imm(0)),
                }
            }
        }
        // Parameters the caller did not pass are nil: the callee was checked with them nil.
        let out_slot = result.as_ref().map(|_| {
            let slot = self.f.new_slot(8, 8);
            self.push(Inst::StoreSlot {
                slot,
                off: 0,
                src: Operand::Imm(0),
                size: Size::DW,
            });
            let p = self.pointer();
            self.push(Inst::SlotAddr { dst: p, slot, off: 0 });
            call_args.push(Operand::Value(p));
            slot
        });
        let status = self.scalar();
        self.push(Inst::CallLocal {
            func: index,
            args: call_args,
            dst: Some(status),
        });
        self.error_if(JmpOp::Jeq, status, Operand::Imm(SUB_ERROR));
        let (Some(slot), Some(ty)) = (out_slot, result) else {
            return vec![];
        };
        let value = self.scalar();
        self.push(Inst::LoadSlot {
            dst: value,
            slot,
            off: 0,
            size: Size::DW,
        });
        if ty.is_opt() {
            let present = self.scalar();
            let nil = self.f.new_block();
            let some = self.f.new_block();
            let join = self.f.new_block();
            self.branch(JmpOp::Jeq, status, Operand::Imm(SUB_NIL), nil, some);
            self.switch_to(nil);
            self.push(Inst::Const { dst: present, imm: 0 });
            self.jump(join);
            self.switch_to(some);
            self.push(Inst::Const { dst: present, imm: 1 });
            self.jump(join);
            self.switch_to(join);
            vec![LV::Opt {
                present: Operand::Value(present),
                value: Box::new(LV::Scalar(Operand::Value(value))),
            }]
        } else {
            vec![LV::Scalar(Operand::Value(value))]
        }
    }

    /// Lowers `func` as a function of its own: r1 the ctx, then its integer parameters, then
    /// (when it returns a value) a pointer for the result.
    fn lower_subfunc(&mut self, func: hir::HirFuncId, scalar_params: &[usize], result: Option<Ty>) -> Function {
        let callee = &self.input.checked.funcs[func];
        let name = format!("{}__{}_{}", sanitize(self.input.name), sanitize(&callee.name), func);
        let mut f = Function::new(name);
        let err_block = f.new_block();
        f.blocks[err_block].term = (Terminator::Return(Operand::Imm(SUB_ERROR)), SourceLoc::default());
        let ctx = f.new_value(ValueKind::Pointer);
        // Swap in the new function's state; the caller's is restored below.
        let saved_f = std::mem::replace(&mut self.f, f);
        let saved_cur = std::mem::replace(&mut self.cur, self.f.entry);
        let saved_err = std::mem::replace(&mut self.err_block, err_block);
        let saved_ctx = std::mem::replace(&mut self.ctx, ctx);
        let saved_frames = std::mem::take(&mut self.frames);
        let saved_loops = std::mem::take(&mut self.loops);
        let saved_depth = std::mem::replace(&mut self.loop_depth, 0);
        let saved_trips = std::mem::replace(&mut self.loop_trips, 1);
        let saved_term = std::mem::take(&mut self.terminated);
        let saved_sub = std::mem::replace(&mut self.in_subfunc, true);
        let saved_pkt = self.pkt.take();
        let saved_dynptr = self.dynptr.take();
        let saved_temps = std::mem::take(&mut self.temp_slots);

        self.push(Inst::Arg { dst: ctx, index: 0 });
        let mut frame = Frame {
            locals: HashMap::new(),
            func,
            ret: RetMode::Verdict,
            assigned: assigned_counts(&callee.body),
        };
        let mut argno = 1u8;
        let mut scalar_vals = Vec::new();
        for &i in scalar_params {
            let v = self.scalar();
            self.push(Inst::Arg { dst: v, index: argno });
            argno += 1;
            scalar_vals.push((i, v));
        }
        let out = result.as_ref().map(|_| {
            let p = self.pointer();
            self.push(Inst::Arg { dst: p, index: argno });
            p
        });
        if !self.is_netfilter() {
            self.load_packet_bounds();
        }
        if let Some(out) = out {
            // The verifier treats a pointer argument of a global function as maybe-null.
            self.error_if(JmpOp::Jeq, out, Operand::Imm(0));
        }
        for (i, p) in callee.params.iter().enumerate() {
            let ty = callee.locals[*p].ty.clone();
            let st = match ty {
                Ty::Ctx => Storage::Ctx,
                Ty::Packet => Storage::Packet,
                Ty::Int | Ty::Bool => {
                    let v = self.scalar();
                    if let Some((_, arg)) = scalar_vals.iter().find(|(k, _)| *k == i) {
                        self.push(Inst::Mov { dst: v, src: *arg });
                    } else {
                        self.push(Inst::Const { dst: v, imm: 0 });
                    }
                    Storage::Scalar(v)
                }
                other => self.new_storage(&other, None),
            };
            frame.locals.insert(*p, st);
        }
        frame.ret = RetMode::Sub { out, ty: result };
        self.frames.push(frame);
        self.stmts(&callee.body);
        if !self.is_terminated() {
            let nil = if out.is_some() { SUB_NIL } else { SUB_OK };
            self.terminate(Terminator::Return(Operand::Imm(nil)));
        }

        let f = std::mem::replace(&mut self.f, saved_f);
        self.cur = saved_cur;
        self.err_block = saved_err;
        self.ctx = saved_ctx;
        self.frames = saved_frames;
        self.loops = saved_loops;
        self.loop_depth = saved_depth;
        self.loop_trips = saved_trips;
        self.terminated = saved_term;
        self.in_subfunc = saved_sub;
        self.pkt = saved_pkt;
        self.dynptr = saved_dynptr;
        self.temp_slots = saved_temps;
        f
    }

    /// Stores a subfunction's result through `out`; returns the status to return.
    fn sub_result(&mut self, v: LV, from: &Ty, to: &Ty, out: Value) -> Operand {
        match v {
            LV::Nil => Operand::Imm(SUB_NIL),
            LV::Scalar(o) => {
                let r = self.reg(o);
                self.push(Inst::Store {
                    base: out,
                    off: 0,
                    src: Operand::Value(r),
                    size: Size::DW,
                });
                Operand::Imm(SUB_OK)
            }
            LV::Opt { present, value } => {
                let status = self.scalar();
                let p = self.reg(present);
                let some = self.f.new_block();
                let none = self.f.new_block();
                let join = self.f.new_block();
                self.branch(JmpOp::Jne, p, Operand::Imm(0), some, none);
                self.switch_to(some);
                if let LV::Scalar(o) = *value {
                    let r = self.reg(o);
                    self.push(Inst::Store {
                        base: out,
                        off: 0,
                        src: Operand::Value(r),
                        size: Size::DW,
                    });
                }
                self.push(Inst::Const {
                    dst: status,
                    imm: SUB_OK,
                });
                self.jump(join);
                self.switch_to(none);
                self.push(Inst::Const {
                    dst: status,
                    imm: SUB_NIL,
                });
                self.jump(join);
                self.switch_to(join);
                let _ = (from, to);
                Operand::Value(status)
            }
            _ => Operand::Imm(SUB_ERROR),
        }
    }

    // ---- the packet ---------------------------------------------------------------------

    /// Netfilter programs read the packet through a dynptr (`lower/netfilter.rs`).
    fn is_netfilter(&self) -> bool {
        matches!(self.input.hook, Hook::Netfilter { .. })
    }

    /// `data` and `data_end`, loaded once at the function's entry (which dominates every
    /// access; unused loads are removed as dead code).
    fn packet_bounds(&mut self) -> (Value, Value) {
        self.pkt.expect("packet bounds are loaded at function entry")
    }

    /// Loads `data` and `data_end` from the ctx into the function's packet registers: at
    /// entry, and again after a helper that may move the packet.
    fn load_packet_bounds(&mut self) {
        let (doff, eoff) = match self.input.hook {
            Hook::Xdp => (0, 4),
            _ => (76, 80),
        };
        let (data, end) = match self.pkt {
            Some(p) => p,
            None => (self.pointer(), self.pointer()),
        };
        let ctx = self.ctx;
        self.push(Inst::Load {
            dst: data,
            base: ctx,
            off: doff,
            size: Size::W,
        });
        self.push(Inst::Load {
            dst: end,
            base: ctx,
            off: eoff,
            size: Size::W,
        });
        self.pkt = Some((data, end));
    }

    /// A packet pointer to `off` with `bytes` readable behind it; out of bounds is a runtime
    /// error. The offset is bounded before it touches the pointer, on the same register.
    fn packet_ptr(&mut self, off: Operand, bytes: i64) -> Value {
        let (data, end) = self.packet_bounds();
        let p = self.pointer();
        self.push(Inst::Mov { dst: p, src: data });
        match off {
            Operand::Imm(k) => {
                if !(0..=MAX_PACKET_OFF).contains(&k) {
                    let err = self.err_block;
                    self.jump(err);
                    return p;
                }
                if k != 0 {
                    self.bin_in_place(BinOp::Add, p, Operand::Imm(k));
                }
            }
            Operand::Value(o) => {
                self.error_if(JmpOp::Jgt, o, Operand::Imm(MAX_PACKET_OFF));
                self.bin_in_place(BinOp::Add, p, Operand::Value(o));
            }
        }
        let t = self.pointer();
        self.push(Inst::Mov { dst: t, src: p });
        self.bin_in_place(BinOp::Add, t, Operand::Imm(bytes));
        if self.input.without != Some(SafetyCheck::PacketBounds) {
            self.error_if(JmpOp::Jgt, t, Operand::Value(end));
        }
        p
    }

    fn packet_load(&mut self, off: Operand, bytes: u8, signed: bool) -> Value {
        let d = if self.is_netfilter() {
            self.nf_packet_load(off, bytes)
        } else {
            let p = self.packet_ptr(off, bytes as i64);
            let d = self.scalar();
            let size = Size::from_bytes(bytes as u32).unwrap_or(Size::DW);
            self.push(Inst::Load {
                dst: d,
                base: p,
                off: 0,
                size,
            });
            d
        };
        if signed && bytes < 8 {
            let s = self.scalar();
            self.push(Inst::Sext {
                dst: s,
                src: d,
                bits: bytes * 8,
            });
            return s;
        }
        d
    }

    /// `getstring(off, len)`: the bytes copied into a zeroed stack buffer.
    ///
    /// XDP and tc copy straight from the packet, 8 bytes a step (`packet_words_copy`): the
    /// word at each step is stored whole, and the last one's bytes past `len` are cleared.
    /// Only where a step's word would run past the packet's end does the kernel's
    /// `load_bytes` helper copy the string (it checks the bounds itself); it copies alone
    /// where the verifier would walk the loop once per iteration of a loop around it
    /// (`word_copy_is_cheap_to_verify`). A constant length up to `UNROLLED_STRING` is one
    /// bounds check and loads of its exact sizes.
    ///
    /// Why not the helper alone: on an AMD EPYC host, sni_filter.c with its byte loop
    /// swapped for the helper ran ~10% slower per packet (the kernel's copy has a fixed
    /// start-up cost), and with a copy of 8 bytes a step ~11% faster than the byte loop. (On
    /// an Intel host the helper had cost only ~2-3% of these packets' time.) Why not a byte
    /// loop, as the C baselines write it: their loop also finds the length, so each byte
    /// costs them only its store; here the length is already known.
    fn packet_string(&mut self, off: Operand, len: Operand) -> StrV {
        if let Operand::Imm(n) = len {
            if (1..=UNROLLED_STRING).contains(&n) && !self.is_netfilter() {
                return self.packet_string_unrolled(off, n as u32);
            }
        }
        let cap = match len {
            Operand::Imm(n) => round8(n.clamp(0, 255) as u32).max(8),
            Operand::Value(_) => 256,
        };
        let slot = self.f.new_slot(cap, 8);
        self.zero_slot(slot, cap);
        let done = self.f.new_block();
        let lv = self.reg(len);
        // len > 255 (or negative) is a runtime error; len == 0 copies nothing.
        if self.input.without != Some(SafetyCheck::StackBounds) {
            self.error_if(JmpOp::Jgt, lv, Operand::Imm(255.min(cap as i64)));
        }
        let copy = self.f.new_block();
        self.branch(JmpOp::Jlt, lv, Operand::Imm(1), done, copy);
        self.switch_to(copy);
        let ov = self.reg(off);
        if self.is_netfilter() {
            self.error_if(JmpOp::Jgt, ov, Operand::Imm(MAX_PACKET_OFF));
            let p = self.pointer();
            self.push(Inst::SlotAddr { dst: p, slot, off: 0 });
            self.nf_packet_copy(p, lv, ov);
            self.jump(done);
        } else {
            let helper = self.f.new_block();
            if self.word_copy_is_cheap_to_verify(ov, lv) {
                // The verifier tracks a packet pointer's bounds only while its largest offset
                // stays within 0xffff: the steps' pointer goes 256 + 8 bytes past `off`.
                let words = self.f.new_block();
                self.branch(JmpOp::Jgt, ov, Operand::Imm(0xffff - 256 - 8), helper, words);
                self.switch_to(words);
                self.packet_words_copy(slot, ov, lv, helper, done);
            } else {
                self.jump(helper);
            }
            self.switch_to(helper);
            self.error_if(JmpOp::Jgt, ov, Operand::Imm(MAX_PACKET_OFF));
            let p = self.pointer();
            self.push(Inst::SlotAddr { dst: p, slot, off: 0 });
            let r = self.scalar();
            let ctx = self.ctx;
            let helper = match self.input.hook {
                Hook::Xdp => h::XDP_LOAD_BYTES,
                _ => h::SKB_LOAD_BYTES,
            };
            self.push(Inst::Call {
                helper,
                args: vec![
                    Operand::Value(ctx),
                    Operand::Value(ov),
                    Operand::Value(p),
                    Operand::Value(lv),
                ],
                dst: Some(r),
            });
            self.error_if(JmpOp::Jne, r, Operand::Imm(0));
            self.jump(done);
        }
        self.switch_to(done);
        StrV {
            buf: StrBuf::Slot { slot, cap },
            len: Some(Operand::Value(lv)),
        }
    }

    /// Whether the verifier would walk a copy loop here a few times at most: not inside
    /// loops that may run it more than `WORDS_COPY_TRIPS` times (it may walk the copy again
    /// for each iteration), and with an offset and length that do not hold a different
    /// constant on each path that reaches it (`exact`).
    fn word_copy_is_cheap_to_verify(&self, off: Value, len: Value) -> bool {
        if self.loop_trips > WORDS_COPY_TRIPS {
            return false;
        }
        let varies = exact::varying_values(&self.f);
        !varies[off] && !varies[len]
    }

    /// Copies `len` (1..=255) packet bytes at `off` (at most 0xffff - 264) into `slot`, 8 a
    /// step, then clears the last step's bytes past the string; jumps to `done`, or to
    /// `helper` where a step's word would run past the packet's end (the steps before it
    /// stored whole words of the string). The verifier follows the loop step by step: the
    /// count `rem` starts at most 255 and drops by 8, and the stack pointer `q` moves by
    /// constants (a stack access at a variable offset must be aligned to its size).
    fn packet_words_copy(&mut self, slot: Slot, off: Value, len: Value, helper: Block, done: Block) {
        let (data, end) = self.packet_bounds();
        let t = self.pointer();
        self.push(Inst::Mov { dst: t, src: data });
        self.bin_in_place(BinOp::Add, t, Operand::Value(off));
        self.bin_in_place(BinOp::Add, t, Operand::Imm(8));
        let q = self.pointer();
        self.push(Inst::SlotAddr { dst: q, slot, off: 0 });
        let rem = self.scalar();
        self.push(Inst::Mov { dst: rem, src: len });
        let step = self.f.new_block();
        let body = self.f.new_block();
        let tail = self.f.new_block();
        self.jump(step);
        self.switch_to(step);
        self.branch(JmpOp::Jgt, t, Operand::Value(end), helper, body);
        self.switch_to(body);
        let w = self.scalar();
        self.push(Inst::Load {
            dst: w,
            base: t,
            off: -8,
            size: Size::DW,
        });
        self.push(Inst::Store {
            base: q,
            off: 0,
            src: Operand::Value(w),
            size: Size::DW,
        });
        for (v, d) in [(q, 8), (t, 8), (rem, -8)] {
            self.bin_in_place(BinOp::Add, v, Operand::Imm(d));
        }
        self.branch(JmpOp::Jsgt, rem, Operand::Imm(0), step, tail);
        self.switch_to(tail);
        // The last step's word, still in `w` and stored at q - 8, holds 8 + rem bytes of the
        // string (rem in -7..=0): shifted up and back down by -8 * rem bits, the bytes past
        // the string are zero.
        self.bin_in_place(BinOp::Mul, rem, Operand::Imm(-8));
        for op in [BinOp::Lsh, BinOp::Rsh] {
            self.bin_in_place(op, w, Operand::Value(rem));
        }
        self.push(Inst::Store {
            base: q,
            off: -8,
            src: Operand::Value(w),
            size: Size::DW,
        });
        self.jump(done);
    }

    /// `getstring(off, n)` for a constant `n` (1..=UNROLLED_STRING): one bounds check (out of
    /// the packet is a runtime error, as the helper's failure is), then loads of 8, 4, 2 and
    /// 1 bytes.
    fn packet_string_unrolled(&mut self, off: Operand, n: u32) -> StrV {
        let cap = round8(n).max(8);
        let slot = self.f.new_slot(cap, 8);
        let p = self.packet_ptr(off, n as i64);
        let mut words = Vec::new();
        let mut at = 0;
        while at < n {
            let size = [Size::DW, Size::W, Size::H, Size::B]
                .into_iter()
                .find(|s| s.bytes() <= n - at)
                .unwrap_or(Size::B);
            let w = self.scalar();
            self.push(Inst::Load {
                dst: w,
                base: p,
                off: at as i16,
                size,
            });
            words.push((at, w, size));
            at += size.bytes();
        }
        // Zeroed, then stored over: `slot_stores` drops the zero words the loads cover whole.
        self.zero_slot(slot, cap);
        for (off, w, size) in words {
            self.push(Inst::StoreSlot {
                slot,
                off,
                src: Operand::Value(w),
                size,
            });
        }
        StrV {
            buf: StrBuf::Slot { slot, cap },
            len: Some(Operand::Imm(n as i64)),
        }
    }

    fn packet_store_string(&mut self, off: Operand, v: LV) {
        let LV::Str(sv) = v else { return };
        let len = self.str_len(&sv);
        let (slot, _) = match &sv.buf {
            StrBuf::Slot { slot, cap } => (*slot, *cap),
            _ => {
                let cap = round8(sv.buf.cap()).max(8);
                self.str_to_slot(&sv, cap)
            }
        };
        let done = self.f.new_block();
        let copy = self.f.new_block();
        let lv = self.reg(len);
        self.branch(JmpOp::Jlt, lv, Operand::Imm(1), done, copy);
        self.switch_to(copy);
        let ov = self.reg(off);
        self.error_if(JmpOp::Jgt, ov, Operand::Imm(MAX_PACKET_OFF));
        self.error_if(JmpOp::Jgt, lv, Operand::Imm(255));
        let p = self.pointer();
        self.push(Inst::SlotAddr { dst: p, slot, off: 0 });
        let r = self.scalar();
        let ctx = self.ctx;
        let (helper, mut args) = match self.input.hook {
            Hook::Xdp => (
                h::XDP_STORE_BYTES,
                vec![
                    Operand::Value(ctx),
                    Operand::Value(ov),
                    Operand::Value(p),
                    Operand::Value(lv),
                ],
            ),
            _ => (
                h::SKB_STORE_BYTES,
                vec![
                    Operand::Value(ctx),
                    Operand::Value(ov),
                    Operand::Value(p),
                    Operand::Value(lv),
                ],
            ),
        };
        if helper == h::SKB_STORE_BYTES {
            args.push(Operand::Imm(0));
        }
        self.push(Inst::Call {
            helper,
            args,
            dst: Some(r),
        });
        if helper == h::SKB_STORE_BYTES {
            // The kernel invalidates packet pointers after this helper.
            self.load_packet_bounds();
        }
        self.error_if(JmpOp::Jne, r, Operand::Imm(0));
        self.jump(done);
        self.switch_to(done);
    }

    // ---- strings ------------------------------------------------------------------------

    /// The function's shared buffer of this kind and size (see `Lowerer::temp_slots`).
    fn temp_slot(&mut self, kind: TempSlot, size: u32) -> Slot {
        if let Some(&s) = self.temp_slots.get(&(kind, size)) {
            return s;
        }
        let s = self.f.new_slot(size, 8);
        self.temp_slots.insert((kind, size), s);
        s
    }

    fn zero_slot(&mut self, slot: Slot, size: u32) {
        self.zero_range(slot, 0, size);
    }

    /// Zeroes bytes `from..to` of `slot`: words where aligned and whole, bytes elsewhere.
    fn zero_range(&mut self, slot: Slot, from: u32, to: u32) {
        let mut off = from;
        while off < to {
            let size = if off % 8 == 0 && off + 8 <= to {
                Size::DW
            } else {
                Size::B
            };
            self.push(Inst::StoreSlot {
                slot,
                off,
                src: Operand::Imm(0),
                size,
            });
            off += size.bytes();
        }
    }

    /// The length of a string; for zero-padded map strings, counted up to the first of the
    /// trailing zero bytes.
    fn str_len(&mut self, sv: &StrV) -> Operand {
        if let Some(l) = sv.len {
            return l;
        }
        if let StrBuf::Const(b) = &sv.buf {
            return Operand::Imm(b.len() as i64);
        }
        // Unrolled: len = i + 1 for the last non-zero byte i of the zero-padded buffer.
        let len = self.konst(0);
        for i in 0..sv.buf.cap().min(255) {
            let b = self.scalar();
            match &sv.buf {
                StrBuf::Ptr { base, off, .. } => self.push(Inst::Load {
                    dst: b,
                    base: *base,
                    off: *off + i as i16,
                    size: Size::B,
                }),
                StrBuf::Slot { slot, .. } => self.push(Inst::LoadSlot {
                    dst: b,
                    slot: *slot,
                    off: i,
                    size: Size::B,
                }),
                StrBuf::Const(_) => {}
            }
            let set = self.f.new_block();
            let next = self.f.new_block();
            self.branch(JmpOp::Jne, b, Operand::Imm(0), set, next);
            self.switch_to(set);
            self.push(Inst::Const {
                dst: len,
                imm: i as i64 + 1,
            });
            self.jump(next);
            self.switch_to(next);
        }
        Operand::Value(len)
    }

    fn str_byte(&mut self, sv: &StrV, i: Operand) -> LV {
        let len = self.str_len(sv);
        let present = self.scalar();
        let value = self.scalar();
        self.push(Inst::Const { dst: present, imm: 0 });
        self.push(Inst::Const { dst: value, imm: 0 });
        let join = self.f.new_block();
        let iv = self.reg(i);
        let lenv = self.reg(len);
        // Negative indices count from the end (Lua): idx = i - 1, or len + i.
        let idx = self.scalar();
        let neg = self.f.new_block();
        let pos = self.f.new_block();
        let check = self.f.new_block();
        self.branch(JmpOp::Jslt, iv, Operand::Imm(0), neg, pos);
        self.switch_to(neg);
        self.push(Inst::Bin {
            op: BinOp::Add,
            dst: idx,
            a: lenv,
            b: Operand::Value(iv),
        });
        self.jump(check);
        self.switch_to(pos);
        self.push(Inst::Bin {
            op: BinOp::Sub,
            dst: idx,
            a: iv,
            b: Operand::Imm(1),
        });
        self.jump(check);
        self.switch_to(check);
        // 0 <= idx < len (unsigned compare catches negatives); also idx < cap for the verifier.
        let in1 = self.f.new_block();
        let in2 = self.f.new_block();
        self.branch(JmpOp::Jge, idx, Operand::Value(lenv), join, in1);
        self.switch_to(in1);
        let cap = sv.buf.cap().max(1) as i64;
        self.branch(JmpOp::Jge, idx, Operand::Imm(cap), join, in2);
        self.switch_to(in2);
        match &sv.buf {
            StrBuf::Const(b) => {
                // A constant string indexed at run time: spill it to the stack.
                let cap8 = round8(b.len() as u32).max(8);
                let (slot, _) = self.str_to_slot(sv, cap8);
                self.load_byte_slot(slot, idx, value);
            }
            StrBuf::Slot { slot, .. } => self.load_byte_slot(*slot, idx, value),
            StrBuf::Ptr { base, off, .. } => {
                let p = self.pointer();
                self.push(Inst::Mov { dst: p, src: *base });
                self.bin_in_place(BinOp::Add, p, Operand::Value(idx));
                self.push(Inst::Load {
                    dst: value,
                    base: p,
                    off: *off,
                    size: Size::B,
                });
            }
        }
        self.push(Inst::Const { dst: present, imm: 1 });
        self.jump(join);
        self.switch_to(join);
        LV::Opt {
            present: Operand::Value(present),
            value: Box::new(LV::Scalar(Operand::Value(value))),
        }
    }

    fn load_byte_slot(&mut self, slot: Slot, idx: Value, dst: Value) {
        let p = self.pointer();
        self.push(Inst::SlotAddr { dst: p, slot, off: 0 });
        self.bin_in_place(BinOp::Add, p, Operand::Value(idx));
        self.push(Inst::Load {
            dst,
            base: p,
            off: 0,
            size: Size::B,
        });
    }

    /// Copies a string into a fresh zeroed slot of `cap` bytes (a multiple of 8).
    fn str_to_slot(&mut self, sv: &StrV, cap: u32) -> (Slot, u32) {
        let slot = self.f.new_slot(cap, 8);
        self.zero_slot(slot, cap);
        self.copy_str_into(sv, slot, cap, true);
        (slot, cap)
    }

    /// Copies the bytes of `sv` into `slot`, 8 bytes at a time, and zeroes the rest of its
    /// `cap` bytes unless `zeroed` (the slot was just zeroed). A string local assigned a
    /// shorter string than it held must lose the old tail: a map key made from it reads
    /// all `cap` bytes.
    fn copy_str_into(&mut self, sv: &StrV, slot: Slot, cap: u32, zeroed: bool) {
        let written = match &sv.buf {
            StrBuf::Const(b) => {
                for (k, chunk) in b.chunks(8).enumerate() {
                    let off = k as u32 * 8;
                    if off + 8 > cap {
                        break;
                    }
                    let mut w = [0u8; 8];
                    w[..chunk.len()].copy_from_slice(chunk);
                    let v = i64::from_le_bytes(w);
                    self.push(Inst::StoreSlot {
                        slot,
                        off,
                        src: Operand::Imm(v),
                        size: Size::DW,
                    });
                }
                (round8(b.len() as u32)).min(cap / 8 * 8)
            }
            StrBuf::Slot { slot: src, cap: scap } => {
                let n = (*scap).min(cap);
                let mut off = 0;
                while off + 8 <= n {
                    let t = self.scalar();
                    self.push(Inst::LoadSlot {
                        dst: t,
                        slot: *src,
                        off,
                        size: Size::DW,
                    });
                    self.push(Inst::StoreSlot {
                        slot,
                        off,
                        src: Operand::Value(t),
                        size: Size::DW,
                    });
                    off += 8;
                }
                // Bytes of a longer source beyond `cap` would be lost: zero the rest instead.
                if zeroed {
                    cap
                } else {
                    off
                }
            }
            StrBuf::Ptr {
                base,
                off: boff,
                cap: scap,
            } => {
                let n = (*scap).min(cap);
                let mut off = 0;
                while off < n {
                    let size = if off + 8 <= n { Size::DW } else { Size::B };
                    let t = self.scalar();
                    self.push(Inst::Load {
                        dst: t,
                        base: *base,
                        off: *boff + off as i16,
                        size,
                    });
                    self.push(Inst::StoreSlot {
                        slot,
                        off,
                        src: Operand::Value(t),
                        size,
                    });
                    off += size.bytes();
                }
                n
            }
        };
        if !zeroed {
            self.zero_range(slot, written, cap);
        }
    }

    /// `a == b` for strings, as 0/1. Buffers are zero-padded, so equal lengths and equal
    /// padded words mean equal strings.
    fn str_eq(&mut self, a: LV, b: LV) -> Value {
        let (LV::Str(a), LV::Str(b)) = (a, b) else {
            return self.konst(0);
        };
        let out = self.konst(0);
        let done = self.f.new_block();
        // Only the words that can differ are compared: past a known length both buffers are
        // zero, so equal known lengths bound the compare by the shorter buffer, and a known
        // length longer than the other side's whole buffer (a map string, trailing zeros not
        // counted) cannot be equal.
        let n = match (a.len, b.len) {
            (Some(la), Some(lb)) => {
                let next = self.f.new_block();
                let la = self.reg(la);
                self.branch(JmpOp::Jne, la, lb, done, next);
                self.switch_to(next);
                round8(a.buf.cap().min(b.buf.cap()))
            }
            (Some(known), None) | (None, Some(known)) => {
                let other_cap = if a.len.is_some() { b.buf.cap() } else { a.buf.cap() };
                let next = self.f.new_block();
                let kv = self.reg(known);
                self.branch(JmpOp::Jgt, kv, Operand::Imm(other_cap as i64), done, next);
                self.switch_to(next);
                round8(other_cap)
            }
            (None, None) => round8(a.buf.cap().max(b.buf.cap())),
        };
        // Against a map string (trailing zeros not counted), a known length is the other
        // string's length too only if its last byte is not zero: "ab\0" is not "ab".
        let known_side = match (a.len, b.len) {
            (Some(k), None) => Some((k, true)),
            (None, Some(k)) => Some((k, false)),
            _ => None,
        };
        let mut known_words = Vec::new();
        let mut off = 0;
        while off < n {
            let x = self.str_word(&a, off);
            let y = self.str_word(&b, off);
            if let Some((_, a_known)) = known_side {
                known_words.push(if a_known { x } else { y });
            }
            let next = self.f.new_block();
            match (x, y) {
                (Operand::Imm(p), Operand::Imm(q)) => {
                    if p != q {
                        self.jump(done);
                    } else {
                        self.jump(next);
                    }
                }
                (Operand::Value(xv), y) => self.branch(JmpOp::Jne, xv, y, done, next),
                (x, Operand::Value(yv)) => self.branch(JmpOp::Jne, yv, x, done, next),
            }
            self.switch_to(next);
            off += 8;
        }
        if let Some((known, a_known)) = known_side {
            let buf = if a_known { &a.buf } else { &b.buf };
            let slot = match buf {
                StrBuf::Slot { slot, cap } => Some((*slot, (*cap).min(n))),
                _ => None,
            };
            self.last_byte_nonzero(known, &known_words, slot, done);
        }
        self.push(Inst::Const { dst: out, imm: 1 });
        self.jump(done);
        self.switch_to(done);
        out
    }

    /// Goes on when a string of length `len` (0 allowed) whose 8-byte words are `words` does
    /// not end in a zero byte, else jumps to `fail`. A constant length picks the byte out of
    /// its word by shifts; a run-time length in a stack buffer whose first `end` bytes hold
    /// the string (`slot`) loads the byte at `len - 1` (one unsigned test both skips the
    /// empty string and bounds the index for the verifier), else selects the word by
    /// comparing the length.
    fn last_byte_nonzero(&mut self, len: Operand, words: &[Operand], slot: Option<(Slot, u32)>, fail: Block) {
        let ok = self.f.new_block();
        if let (Operand::Value(l), Some((slot, end))) = (len, slot) {
            if end > 0 {
                let index = self.bin(BinOp::Sub, Operand::Value(l), Operand::Imm(1));
                let load = self.f.new_block();
                self.branch(JmpOp::Jgt, index, Operand::Imm(end as i64 - 1), ok, load);
                self.switch_to(load);
                let byte = self.scalar();
                self.push(Inst::LoadSlotIndexed {
                    dst: byte,
                    slot,
                    index,
                    end,
                    size: Size::B,
                });
                self.branch(JmpOp::Jeq, byte, Operand::Imm(0), fail, ok);
                self.switch_to(ok);
                return;
            }
        }
        match len {
            Operand::Imm(0) => {}
            Operand::Imm(k) => {
                let idx = (k - 1) as usize;
                let shift = (idx % 8) as i64 * 8;
                match words.get(idx / 8).copied().unwrap_or(Operand::Imm(0)) {
                    Operand::Imm(w) => {
                        if (w >> shift) & 0xff == 0 {
                            self.jump(fail);
                            self.switch_to(ok);
                            return;
                        }
                    }
                    Operand::Value(w) => {
                        let t = self.bin(BinOp::Rsh, Operand::Value(w), Operand::Imm(shift));
                        let t = self.bin(BinOp::And, Operand::Value(t), Operand::Imm(0xff));
                        self.branch(JmpOp::Jeq, t, Operand::Imm(0), fail, ok);
                        self.switch_to(ok);
                        return;
                    }
                }
            }
            Operand::Value(l) => {
                let mut next = self.f.new_block();
                self.branch(JmpOp::Jeq, l, Operand::Imm(0), ok, next);
                for (i, w) in words.iter().enumerate() {
                    self.switch_to(next);
                    let test = self.f.new_block();
                    next = self.f.new_block();
                    if i + 1 < words.len() {
                        self.branch(JmpOp::Jle, l, Operand::Imm(8 * (i as i64 + 1)), test, next);
                    } else {
                        self.jump(test);
                    }
                    self.switch_to(test);
                    // (len - 1 - 8i) * 8: the bit offset of the last byte within word i.
                    let shift = self.bin(BinOp::Sub, Operand::Value(l), Operand::Imm(1 + 8 * i as i64));
                    let shift = self.bin(BinOp::Lsh, Operand::Value(shift), Operand::Imm(3));
                    let w = self.reg(*w);
                    let t = self.bin(BinOp::Rsh, Operand::Value(w), Operand::Value(shift));
                    let t = self.bin(BinOp::And, Operand::Value(t), Operand::Imm(0xff));
                    self.branch(JmpOp::Jeq, t, Operand::Imm(0), fail, ok);
                }
                // Reached only without any word (an empty buffer), where the length is 0.
                self.switch_to(next);
            }
        }
        self.jump(ok);
        self.switch_to(ok);
    }

    /// The 8-byte word at `off` of a zero-padded string (zero past its buffer).
    fn str_word(&mut self, s: &StrV, off: u32) -> Operand {
        match &s.buf {
            StrBuf::Const(b) => {
                let mut w = [0u8; 8];
                for (i, x) in w.iter_mut().enumerate() {
                    *x = b.get(off as usize + i).copied().unwrap_or(0);
                }
                Operand::Imm(i64::from_le_bytes(w))
            }
            StrBuf::Slot { slot, cap } => {
                if off + 8 > *cap {
                    return Operand::Imm(0);
                }
                let t = self.scalar();
                self.push(Inst::LoadSlot {
                    dst: t,
                    slot: *slot,
                    off,
                    size: Size::DW,
                });
                Operand::Value(t)
            }
            StrBuf::Ptr { base, off: boff, cap } => {
                if off >= *cap {
                    return Operand::Imm(0);
                }
                let t = self.scalar();
                if off + 8 <= *cap {
                    self.push(Inst::Load {
                        dst: t,
                        base: *base,
                        off: *boff + off as i16,
                        size: Size::DW,
                    });
                } else {
                    // A tail shorter than a word: assemble it byte by byte.
                    self.push(Inst::Const { dst: t, imm: 0 });
                    for i in 0..(*cap - off) {
                        let b = self.scalar();
                        self.push(Inst::Load {
                            dst: b,
                            base: *base,
                            off: *boff + (off + i) as i16,
                            size: Size::B,
                        });
                        if i > 0 {
                            self.bin_in_place(BinOp::Lsh, b, Operand::Imm(8 * i as i64));
                        }
                        self.bin_in_place(BinOp::Or, t, Operand::Value(b));
                    }
                }
                Operand::Value(t)
            }
        }
    }

    // ---- maps ---------------------------------------------------------------------------

    fn map_format(&self, map: MapId) -> (&Format, &Format) {
        let m = &self.input.maps.maps[map];
        (&m.key, &m.value)
    }

    /// Builds the key of `map` in a stack slot. Returns `None` (after branching to `miss`)
    /// when the key cannot be represented (an integer out of range, a string too long): such
    /// a key is never in the map.
    fn map_key(&mut self, map: MapId, key: &Expr, miss: Block) -> Value {
        let kv = self.expr(key);
        let kf = self.map_format(map).0.clone();
        let size = kf.size();
        let p = self.pointer();
        match (&kf, kv) {
            (Format::Int { bytes, signed }, LV::Scalar(o)) => {
                let slot = self.temp_slot(TempSlot::Key, round8(size).max(8));
                if *bytes < 8 {
                    // The key must fit the format: otherwise it is never found.
                    let v = self.reg(o);
                    let (lo, hi) = int_range(*bytes, *signed);
                    let c1 = self.f.new_block();
                    let c2 = self.f.new_block();
                    self.branch(JmpOp::Jslt, v, Operand::Imm(lo), miss, c1);
                    self.switch_to(c1);
                    self.branch(JmpOp::Jsgt, v, Operand::Imm(hi), miss, c2);
                    self.switch_to(c2);
                    // At the key's width: a constant key stored so is one the verifier knows
                    // (an array lookup at a known index in range is never null); the value
                    // fits, checked above.
                    self.push(Inst::StoreSlot {
                        slot,
                        off: 0,
                        src: Operand::Value(v),
                        size: Size::from_bytes(*bytes as u32).unwrap_or(Size::DW),
                    });
                } else {
                    self.push(Inst::StoreSlot {
                        slot,
                        off: 0,
                        src: o,
                        size: Size::DW,
                    });
                }
                self.push(Inst::SlotAddr { dst: p, slot, off: 0 });
            }
            (Format::Chars(n), LV::Str(sv)) => {
                let n = *n;
                // Longer than the key: never found.
                if let Some(l) = sv.len {
                    if !matches!(l, Operand::Imm(x) if x <= n as i64) {
                        let lv = self.reg(l);
                        let ok = self.f.new_block();
                        self.branch(JmpOp::Jgt, lv, Operand::Imm(n as i64), miss, ok);
                        self.switch_to(ok);
                    }
                }
                match &sv.buf {
                    // A zero-padded slot at least as long as the key is the key itself.
                    StrBuf::Slot { slot, cap } if *cap >= n => {
                        self.push(Inst::SlotAddr {
                            dst: p,
                            slot: *slot,
                            off: 0,
                        });
                    }
                    _ => {
                        let size = round8(n).max(8);
                        let slot = self.temp_slot(TempSlot::Key, size);
                        self.zero_slot(slot, size);
                        self.copy_str_into(&sv, slot, size, true);
                        self.push(Inst::SlotAddr { dst: p, slot, off: 0 });
                    }
                }
            }
            _ => {
                let err = self.err_block;
                self.jump(err);
            }
        }
        p
    }

    fn map_get(&mut self, map: MapId, key: &Expr) -> LV {
        let vty = self.input.maps.maps[map].value.clone();
        let is_bool = self.input.maps.bool_values.contains(&map);
        let miss = self.f.new_block();
        let join = self.f.new_block();
        let present = self.scalar();
        let value = self.scalar();
        let ptr = self.pointer();
        // Results start as nil: the miss path and the key-out-of-range path share them.
        self.push(Inst::Const { dst: present, imm: 0 });
        self.push(Inst::Const { dst: value, imm: 0 });
        self.push(Inst::Const { dst: ptr, imm: 0 });
        let k = self.map_key(map, key, miss);
        let r = self.map_helper(h::MAP_LOOKUP_ELEM, map, &[Operand::Value(k)]);
        self.push(Inst::Mov { dst: ptr, src: r });
        match &vty {
            Format::Record(_) => {
                self.jump(join);
                self.switch_to(miss);
                self.jump(join);
                self.switch_to(join);
                LV::OptPtr(ptr)
            }
            Format::Chars(n) => {
                let n = *n;
                let hit = self.f.new_block();
                self.branch(JmpOp::Jne, ptr, Operand::Imm(0), hit, join);
                self.switch_to(hit);
                // Copy out: the map value may change under us, a Lua string does not.
                let slot = self.f.new_slot(round8(n).max(8), 8);
                self.zero_slot(slot, round8(n).max(8));
                let sv = StrV {
                    buf: StrBuf::Ptr {
                        base: ptr,
                        off: 0,
                        cap: n,
                    },
                    len: None,
                };
                self.copy_str_into(&sv, slot, round8(n).max(8), true);
                self.push(Inst::Const { dst: present, imm: 1 });
                self.jump(join);
                self.switch_to(miss);
                self.jump(join);
                self.switch_to(join);
                // The slot is zeroed on every path that reaches here through `hit`; on the
                // others `present` is 0 and the buffer is never read.
                // The length stays unknown until something needs it (`#s`): comparisons and
                // map keys work on the zero-padded words, and an eager count would give the
                // verifier one path per possible length.
                let slot_sv = StrV {
                    buf: StrBuf::Slot {
                        slot,
                        cap: round8(n).max(8),
                    },
                    len: None,
                };
                LV::Opt {
                    present: Operand::Value(present),
                    value: Box::new(LV::Str(slot_sv)),
                }
            }
            Format::Int { bytes, signed } => {
                let hit = self.f.new_block();
                if self.input.without == Some(SafetyCheck::NilTest) {
                    self.jump(hit);
                } else {
                    self.branch(JmpOp::Jne, ptr, Operand::Imm(0), hit, join);
                }
                self.switch_to(hit);
                let size = Size::from_bytes(*bytes as u32).unwrap_or(Size::DW);
                self.push(Inst::Load {
                    dst: value,
                    base: ptr,
                    off: 0,
                    size,
                });
                if *signed && *bytes < 8 {
                    self.push(Inst::Sext {
                        dst: value,
                        src: value,
                        bits: bytes * 8,
                    });
                }
                if is_bool {
                    let t = self.f.new_block();
                    let one = self.f.new_block();
                    self.branch(JmpOp::Jne, value, Operand::Imm(0), one, t);
                    self.switch_to(one);
                    self.push(Inst::Const { dst: value, imm: 1 });
                    self.jump(t);
                    self.switch_to(t);
                }
                self.push(Inst::Const { dst: present, imm: 1 });
                self.jump(join);
                self.switch_to(miss);
                self.jump(join);
                self.switch_to(join);
                LV::Opt {
                    present: Operand::Value(present),
                    value: Box::new(LV::Scalar(Operand::Value(value))),
                }
            }
        }
    }

    /// Writes a value of the map's value format into a fresh slot; returns its address.
    fn value_slot(&mut self, map: MapId, v: LV, span: Span) -> Value {
        let vf = self.map_format(map).1.clone();
        let size = round8(vf.size()).max(8);
        let p = self.pointer();
        match (&vf, v) {
            (_, LV::Ptr(rec)) if matches!(vf, Format::Record(_)) => {
                // A record built in a slot (RecordCtor) or another record: copy it.
                let slot = self.temp_slot(TempSlot::Value, size);
                let mut off = 0;
                let total = vf.size();
                while off < total {
                    let sz = if off + 8 <= total {
                        Size::DW
                    } else if off + 4 <= total {
                        Size::W
                    } else if off + 2 <= total {
                        Size::H
                    } else {
                        Size::B
                    };
                    let t = self.scalar();
                    self.push(Inst::Load {
                        dst: t,
                        base: rec,
                        off: off as i16,
                        size: sz,
                    });
                    self.push(Inst::StoreSlot {
                        slot,
                        off,
                        src: Operand::Value(t),
                        size: sz,
                    });
                    off += sz.bytes();
                }
                self.push(Inst::SlotAddr { dst: p, slot, off: 0 });
            }
            (Format::Int { bytes, .. }, LV::Scalar(o)) => {
                let slot = self.temp_slot(TempSlot::Value, size);
                let sz = Size::from_bytes(*bytes as u32).unwrap_or(Size::DW);
                self.push(Inst::StoreSlot {
                    slot,
                    off: 0,
                    src: Operand::Imm(0),
                    size: Size::DW,
                });
                self.push(Inst::StoreSlot {
                    slot,
                    off: 0,
                    src: o,
                    size: sz,
                });
                self.push(Inst::SlotAddr { dst: p, slot, off: 0 });
            }
            (Format::Chars(n), LV::Str(sv)) => {
                let n = *n;
                self.check_str_fits(&sv, n);
                let (slot, _) = match &sv.buf {
                    StrBuf::Slot { slot, cap } if *cap >= n => (*slot, *cap),
                    _ => self.str_to_slot(&sv, round8(n).max(8)),
                };
                self.push(Inst::SlotAddr { dst: p, slot, off: 0 });
            }
            _ => {
                self.error(
                    span,
                    "internal: this value does not match the map's value format",
                    "here",
                    "please report this",
                );
            }
        }
        p
    }

    /// Storing a string longer than a `cN` field is a runtime error.
    fn check_str_fits(&mut self, sv: &StrV, n: u32) {
        if let Some(l) = sv.len {
            match l {
                Operand::Imm(x) if x <= n as i64 => {}
                _ => {
                    let lv = self.reg(l);
                    self.error_if(JmpOp::Jgt, lv, Operand::Imm(n as i64));
                }
            }
        }
    }

    fn map_set(&mut self, map: MapId, key: &Expr, value: Option<&Expr>) {
        let after = self.f.new_block();
        match value {
            None => {
                let k = self.map_key(map, key, after);
                self.map_helper(h::MAP_DELETE_ELEM, map, &[Operand::Value(k)]);
                self.jump(after);
            }
            Some(v) => {
                // A key that does not fit the format cannot be stored: a runtime error.
                let err = self.err_block;
                // The value first: evaluating it may look up maps, which reuse the key buffer.
                let vv = self.expr(v);
                let k = self.map_key(map, key, err);
                // An integer value is written in place when the key exists: an update would
                // allocate a new hash element and free the old one (what `m[k] = hits + 1`
                // on a counter does on every packet).
                if let (Format::Int { bytes, .. }, LV::Scalar(o)) = (self.input.maps.maps[map].value.clone(), &vv) {
                    let p = self.map_helper(h::MAP_LOOKUP_ELEM, map, &[Operand::Value(k)]);
                    let hit = self.f.new_block();
                    let miss = self.f.new_block();
                    self.branch(JmpOp::Jne, p, Operand::Imm(0), hit, miss);
                    self.switch_to(hit);
                    let r = self.reg(*o);
                    let size = Size::from_bytes(bytes as u32).unwrap_or(Size::DW);
                    self.push(Inst::Store {
                        base: p,
                        off: 0,
                        src: Operand::Value(r),
                        size,
                    });
                    self.jump(after);
                    self.switch_to(miss);
                }
                let vp = self.value_slot(map, vv, v.span);
                let r = self.map_helper(
                    h::MAP_UPDATE_ELEM,
                    map,
                    &[Operand::Value(k), Operand::Value(vp), Operand::Imm(0)],
                );
                self.error_if(JmpOp::Jslt, r, Operand::Imm(0));
                self.jump(after);
            }
        }
        self.switch_to(after);
    }

    /// `m[k] = (m[k] or 0) + delta` with one lookup and an atomic add.
    fn map_add(&mut self, map: MapId, key: &Expr, delta: &Expr) {
        let err = self.err_block;
        let d = self.expr_scalar(delta);
        let d = self.reg(d);
        let k = self.map_key(map, key, err);
        let (bytes, percpu) = match &self.input.maps.maps[map].value {
            Format::Int { bytes, .. } => (*bytes, self.input.maps.maps[map].kind.is_percpu()),
            _ => (8, false),
        };
        let p = self.map_helper(h::MAP_LOOKUP_ELEM, map, &[Operand::Value(k)]);
        if self.input.maps.maps[map].kind.is_array() {
            // Every index below max_entries exists and no other can be inserted: a miss is
            // the runtime error that the insert-then-retry path below would end in.
            self.error_if(JmpOp::Jeq, p, Operand::Imm(0));
            self.add_in_place(p, d, bytes, percpu);
            return;
        }
        let hit = self.f.new_block();
        let missing = self.f.new_block();
        let done = self.f.new_block();
        self.branch(JmpOp::Jne, p, Operand::Imm(0), hit, missing);
        self.switch_to(hit);
        self.add_in_place(p, d, bytes, percpu);
        self.jump(done);
        self.switch_to(missing);
        // Insert `delta` unless another CPU inserted first; then add to theirs.
        let slot = self.temp_slot(TempSlot::Value, 8);
        self.push(Inst::StoreSlot {
            slot,
            off: 0,
            src: Operand::Value(d),
            size: Size::DW,
        });
        let vp = self.pointer();
        self.push(Inst::SlotAddr { dst: vp, slot, off: 0 });
        const BPF_NOEXIST: i64 = 1;
        let r = self.map_helper(
            h::MAP_UPDATE_ELEM,
            map,
            &[Operand::Value(k), Operand::Value(vp), Operand::Imm(BPF_NOEXIST)],
        );
        let retry = self.f.new_block();
        self.branch(JmpOp::Jsge, r, Operand::Imm(0), done, retry);
        self.switch_to(retry);
        let p2 = self.map_helper(h::MAP_LOOKUP_ELEM, map, &[Operand::Value(k)]);
        self.error_if(JmpOp::Jeq, p2, Operand::Imm(0));
        self.add_in_place(p2, d, bytes, percpu);
        self.jump(done);
        self.switch_to(done);
    }

    /// `map`'s address in r1, then `helper(map, args...)`: every map access goes through
    /// here. The result is a pointer for lookups, a status otherwise.
    fn map_helper(&mut self, helper: i32, map: MapId, args: &[Operand]) -> Value {
        let m = self.pointer();
        self.push(Inst::MapAddr {
            dst: m,
            map: map as u32,
        });
        let dst = if helper == h::MAP_LOOKUP_ELEM {
            self.pointer()
        } else {
            self.scalar()
        };
        let mut all = vec![Operand::Value(m)];
        all.extend_from_slice(args);
        self.push(Inst::Call {
            helper,
            args: all,
            dst: Some(dst),
        });
        dst
    }

    fn add_in_place(&mut self, p: Value, d: Value, bytes: u8, percpu: bool) {
        let size = Size::from_bytes(bytes as u32).unwrap_or(Size::DW);
        if !percpu && matches!(size, Size::DW | Size::W) {
            self.push(Inst::AtomicAdd {
                base: p,
                off: 0,
                src: d,
                size,
            });
        } else {
            let t = self.scalar();
            self.push(Inst::Load {
                dst: t,
                base: p,
                off: 0,
                size,
            });
            self.bin_in_place(BinOp::Add, t, Operand::Value(d));
            self.push(Inst::Store {
                base: p,
                off: 0,
                src: Operand::Value(t),
                size,
            });
        }
    }

    fn record_slot(&mut self, map: MapId, fields: &[(usize, Expr)]) -> Slot {
        let vf = self.map_format(map).1.clone();
        let Format::Record(layout) = &vf else {
            return self.f.new_slot(8, 8);
        };
        let size = round8(vf.size()).max(8);
        let slot = self.f.new_slot(size, 8);
        self.zero_slot(slot, size);
        for (idx, e) in fields {
            let v = self.expr(e);
            let Some(field) = layout.get(*idx) else { continue };
            match (&field.format, v) {
                (Format::Int { bytes, .. }, LV::Scalar(o)) => {
                    let sz = Size::from_bytes(*bytes as u32).unwrap_or(Size::DW);
                    self.push(Inst::StoreSlot {
                        slot,
                        off: field.offset,
                        src: o,
                        size: sz,
                    });
                }
                (Format::Chars(n), LV::Str(sv)) => {
                    let n = *n;
                    self.check_str_fits(&sv, n);
                    let (tmp, _) = self.str_to_slot(&sv, round8(n).max(8));
                    let mut off = 0;
                    while off < n {
                        let t = self.scalar();
                        self.push(Inst::LoadSlot {
                            dst: t,
                            slot: tmp,
                            off,
                            size: Size::B,
                        });
                        self.push(Inst::StoreSlot {
                            slot,
                            off: field.offset + off,
                            src: Operand::Value(t),
                            size: Size::B,
                        });
                        off += 1;
                    }
                }
                _ => {}
            }
        }
        slot
    }

    fn load_field(&mut self, p: Value, map: MapId, field: usize) -> LV {
        let Format::Record(layout) = self.map_format(map).1.clone() else {
            return LV::Nil;
        };
        let Some(f) = layout.get(field) else { return LV::Nil };
        match &f.format {
            Format::Int { bytes, signed } => {
                let d = self.scalar();
                let size = Size::from_bytes(*bytes as u32).unwrap_or(Size::DW);
                self.push(Inst::Load {
                    dst: d,
                    base: p,
                    off: f.offset as i16,
                    size,
                });
                if *signed && *bytes < 8 {
                    self.push(Inst::Sext {
                        dst: d,
                        src: d,
                        bits: bytes * 8,
                    });
                }
                LV::Scalar(Operand::Value(d))
            }
            Format::Chars(n) => {
                let n = *n;
                let cap = round8(n).max(8);
                let slot = self.f.new_slot(cap, 8);
                self.zero_slot(slot, cap);
                let sv = StrV {
                    buf: StrBuf::Ptr {
                        base: p,
                        off: f.offset as i16,
                        cap: n,
                    },
                    len: None,
                };
                self.copy_str_into(&sv, slot, cap, true);
                LV::Str(StrV {
                    buf: StrBuf::Slot { slot, cap },
                    len: None,
                })
            }
            Format::Record(_) => LV::Nil,
        }
    }

    fn store_field(&mut self, p: Value, map: MapId, field: usize, v: LV, span: Span) {
        let Format::Record(layout) = self.map_format(map).1.clone() else {
            return;
        };
        let Some(f) = layout.get(field) else { return };
        match (&f.format, v) {
            (Format::Int { bytes, .. }, LV::Scalar(o)) => {
                let size = Size::from_bytes(*bytes as u32).unwrap_or(Size::DW);
                let r = self.reg(o);
                self.push(Inst::Store {
                    base: p,
                    off: f.offset as i16,
                    src: Operand::Value(r),
                    size,
                });
            }
            (Format::Chars(n), LV::Str(sv)) => {
                let n = *n;
                self.check_str_fits(&sv, n);
                let (tmp, _) = self.str_to_slot(&sv, round8(n).max(8));
                for off in 0..n {
                    let t = self.scalar();
                    self.push(Inst::LoadSlot {
                        dst: t,
                        slot: tmp,
                        off,
                        size: Size::B,
                    });
                    self.push(Inst::Store {
                        base: p,
                        off: (f.offset + off) as i16,
                        src: Operand::Value(t),
                        size: Size::B,
                    });
                }
            }
            _ => self.error(span, "internal: field type mismatch", "here", "please report this"),
        }
    }
}

/// The integer parameters (by position) and the result type of a function that can be
/// outlined: ctx/packet and at most three integer or boolean parameters, at most one integer
/// or boolean result (possibly nil). `None` when it cannot.
pub(crate) fn outline_signature(f: &hir::Func) -> Option<(Vec<usize>, Option<Ty>)> {
    let mut scalars = Vec::new();
    for (i, p) in f.params.iter().enumerate() {
        match f.locals[*p].ty {
            Ty::Int | Ty::Bool => scalars.push(i),
            Ty::Ctx | Ty::Packet => {}
            _ => return None,
        }
    }
    if scalars.len() > 3 || f.results.len() > 1 {
        return None;
    }
    let result = match f.results.first() {
        None => None,
        Some(t) if matches!(t.strip(), Ty::Int | Ty::Bool) => Some(t.clone()),
        Some(Ty::Nil) => None,
        Some(_) => return None,
    };
    Some((scalars, result))
}

pub(crate) fn has_loop(stmts: &[Stmt]) -> bool {
    stmts.iter().any(|s| match &s.kind {
        StmtKind::While { .. } | StmtKind::Repeat { .. } | StmtKind::NumFor { .. } => true,
        StmtKind::If { then_, else_, .. } => has_loop(then_) || has_loop(else_),
        StmtKind::Block(b) => has_loop(b),
        _ => false,
    })
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn unwrap_lv(v: LV) -> LV {
    match v {
        LV::Opt { value, .. } => *value,
        LV::OptPtr(p) => LV::Ptr(p),
        v => v,
    }
}

fn round8(n: u32) -> u32 {
    n.div_ceil(8) * 8
}

fn int_range(bytes: u8, signed: bool) -> (i64, i64) {
    let bits = bytes as u32 * 8;
    if signed {
        (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
    } else {
        (0, (1i64 << bits) - 1)
    }
}

#[cfg(test)]
mod tests {
    use crate::compile::asm_of as asm;

    /// An integer key narrower than 8 bytes is stored at its width: the verifier sees a
    /// constant key (`*(u32 *)(r10 -8) = r1` of a known value) and an array lookup at an index
    /// in range is then never null (counter.lua: 37 -> 36 processed, as clang's).
    #[test]
    fn a_narrow_key_is_stored_at_its_width() {
        let out = asm(r#"
local xdp = require "bpf.xdp"
local map = require "bpf.map"
local a = map.array("a", { key = "I4", value = "I8", entries = 4 })
local b = map.hash("b", { key = "I2", value = "I8", entries = 4 })
return xdp.program(function(ctx)
  local n = #ctx:packet()
  return (a[n % 4] or 0) + (b[n % 16] or 0)
end, { name = "t" })
"#);
        assert!(out.contains("*(u32 *)(r10 -"), "{out}");
        assert!(out.contains("*(u16 *)(r10 -"), "{out}");
        assert!(!out.contains("*(u64 *)(r10 -"), "{out}");
    }

    /// `getstring` with a run-time length copies 8 bytes a step (the last word cleared past
    /// the string by a shift pair), except where the verifier would walk that copy once per
    /// iteration of a long loop: there it is the `load_bytes` helper alone.
    #[test]
    fn getstring_copies_words_unless_the_verifier_would_walk_the_copy_per_iteration() {
        let with = |body: &str| {
            asm(&format!(
                r#"
local xdp = require "bpf.xdp"
local map = require "bpf.map"
local m = map.hash("m", {{ key = "c64", value = "I8", entries = 4 }})
return xdp.program(function(ctx)
  local p = ctx:packet()
{body}
  return 2
end, {{ name = "t" }})
"#
            ))
        };
        let copies_words = |out: &str| out.contains("<<= r") && out.contains("bpf_xdp_load_bytes");
        let helper_alone = |out: &str| !out.contains("<<= r") && out.contains("bpf_xdp_load_bytes");
        // After a loop whose exits differ in unknown packet values (tls.sni's shape).
        let out = with(
            "  local at = 14\n  for _ = 1, 8 do\n    if p:getbyte(at) == 0 then break end\n    at = at + 1 + p:getbyte(at + 1)\n  end\n  if m[p:getstring(at, p:getbyte(0))] then return 1 end",
        );
        assert!(copies_words(&out), "{out}");
        // An offset from a 512-step scan's counter: each position is a state of its own.
        let out = with(
            "  local found = -1\n  for i = 0, 511 do\n    if p:getbyte(14 + i) == 58 then found = 15 + i break end\n  end\n  if found >= 0 and m[p:getstring(found, p:getbyte(0))] then return 1 end",
        );
        assert!(helper_alone(&out), "{out}");
        // Inside a loop of more than 32 iterations.
        let out = with("  for i = 1, 40 do\n    if m[p:getstring(20, p:getbyte(i))] then return 1 end\n  end");
        assert!(helper_alone(&out), "{out}");
        // A constant length: loads of its sizes, no helper.
        let out = with("  if m[p:getstring(20, 6)] then return 1 end");
        assert!(
            !out.contains("bpf_xdp_load_bytes") && out.contains("*(u16 *)(r"),
            "{out}"
        );
    }

    /// A run-time-length string against a map string: its last byte is loaded from the stack
    /// at `len - 1` (one load, no shifts selecting a word by the length).
    #[test]
    fn str_eq_loads_the_last_byte_at_a_run_time_offset() {
        let out = asm(r#"
local xdp = require "bpf.xdp"
local map = require "bpf.map"
local vals = map.array("vals", { key = "I4", value = "c32", entries = 1 })
return xdp.program(function(ctx)
  local p = ctx:packet()
  local v = vals[0]
  if v and p:getstring(14, p:getbyte(0)) == v then return 1 end
  return 2
end, { name = "t" })
"#);
        // One shift right: the copy's, clearing its last word past the string.
        let shifts = out.lines().filter(|l| l.contains(">>=")).count();
        assert_eq!(shifts, 1, "no word selected by shifts:\n{out}");
        let indexed = out
            .lines()
            .zip(out.lines().skip(1))
            .filter(|(a, b)| a.contains("+= r") && b.contains("*(u8 *)(r") && b.contains(" -"))
            .count();
        assert_eq!(indexed, 1, "one byte loaded at a run-time stack offset:\n{out}");
    }
}
