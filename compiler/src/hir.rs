//! The typed program: what the type checker produces and lowering consumes.
//!
//! Names are resolved (locals are `LocalId`s, compile-time values are folded to constants or
//! to map ids), every expression has its type, and nil narrowing has been applied: a use of an
//! optional local that a test proved non-nil is wrapped in `Unwrap`. Calls to Lua functions
//! refer to a checked instance (`FuncId` here is an index into `Checked::funcs`, one instance
//! per distinct argument types), so lowering can inline them without re-checking.

use crate::program::MapId;
use crate::source::Span;

pub type LocalId = usize;
pub type HirFuncId = usize;

/// A run-time type. Compile-time-only things (maps, functions, modules, tables of constants)
/// never reach the HIR as values: the checker folds them away.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// Only ever nil.
    Nil,
    Bool,
    Int,
    Str,
    Ctx,
    Packet,
    /// A pointer to a map's record value (updated in place).
    Record(MapId),
    /// The type or nil.
    Opt(Box<Ty>),
}

impl Ty {
    pub fn opt(t: Ty) -> Ty {
        match t {
            Ty::Opt(_) | Ty::Nil => t,
            t => Ty::Opt(Box::new(t)),
        }
    }

    /// The type without its nil.
    pub fn strip(&self) -> &Ty {
        match self {
            Ty::Opt(t) => t,
            t => t,
        }
    }

    pub fn is_opt(&self) -> bool {
        matches!(self, Ty::Opt(_))
    }

    /// For messages: the type as a Lua programmer would name it.
    pub fn describe(&self) -> String {
        match self {
            Ty::Nil => "nil".into(),
            Ty::Bool => "boolean".into(),
            Ty::Int => "integer".into(),
            Ty::Str => "string".into(),
            Ty::Ctx => "ctx".into(),
            Ty::Packet => "packet".into(),
            Ty::Record(_) => "record".into(),
            Ty::Opt(t) => format!("{} or nil", t.describe()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    /// Floor division `//`.
    IDiv,
    /// Floor modulo `%`.
    Mod,
    BAnd,
    BOr,
    BXor,
    Shl,
    Shr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Built-in operations reachable from compiled code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `ntohN`/`htonN` (the same operation on a little-endian host), N = 16, 32 or 64.
    ByteSwap(u8),
    Ktime,
    Random,
    Cpu,
}

/// A field of the program's context (`ctx.mark`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtxField {
    pub offset: i16,
    pub bytes: u8,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub ty: Ty,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Bool(bool),
    Nil,
    Str(Vec<u8>),
    Local(LocalId),
    /// The value of an optional that a test proved non-nil.
    Unwrap(Box<Expr>),
    /// A non-optional value used where an optional is expected (`x = 5` for `x: integer?`).
    Wrap(Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    BNot(Box<Expr>),
    /// Lua truthiness negated: a boolean.
    Not(Box<Expr>),
    /// Both operands have the same (non-optional) type; `Eq`/`Ne` also for strings/booleans.
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    /// `e == nil` for an optional `e` (negate with `Not`).
    IsNil(Box<Expr>),
    /// `opt == value`: false when `opt` is nil, else its value compared with `value` (of the
    /// optional's inner type); `opt` is evaluated once.
    OptEquals(Box<Expr>, Box<Expr>),
    /// Lua's value-returning `and` / `or`.
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    /// `packet:getuintN(off)` and friends: `bytes` wide, sign-extended when `signed`.
    PacketLoad {
        bytes: u8,
        signed: bool,
        off: Box<Expr>,
    },
    /// `#packet`
    PacketLen,
    /// `packet:getstring(off, len)`
    PacketString {
        off: Box<Expr>,
        len: Box<Expr>,
    },
    /// `ctx.<field>`
    CtxField(CtxField),
    /// The packet proxy itself (only as an argument passed around).
    Packet,
    /// The ctx pointer (the entry function's parameter).
    Ctx,
    /// `m[k]`: the value or nil.
    MapGet {
        map: MapId,
        key: Box<Expr>,
    },
    /// `record.field` (index into the map's value record fields).
    Field {
        base: Box<Expr>,
        map: MapId,
        field: usize,
    },
    /// `#s`
    StrLen(Box<Expr>),
    /// `s:byte(i)` (1-based; out of range is nil in Lua: here a runtime error unless proven)
    StrByte(Box<Expr>, Box<Expr>),
    /// A call of a checked Lua function; in a single-value context, its first result.
    Call {
        func: HirFuncId,
        args: Vec<Expr>,
    },
    Builtin {
        op: Builtin,
        args: Vec<Expr>,
    },
    /// `{ field = value, ... }` written into a record map (fields it omits are zero).
    RecordCtor {
        map: MapId,
        fields: Vec<(usize, Expr)>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `local a, b = e1, e2` (a trailing call may yield several values; missing are nil).
    Local {
        locals: Vec<LocalId>,
        values: Vec<Expr>,
    },
    /// `a = e` for a local.
    SetLocal {
        local: LocalId,
        value: Expr,
    },
    /// Multiple assignment to locals, evaluated before any is assigned.
    SetLocals {
        locals: Vec<LocalId>,
        values: Vec<Expr>,
    },
    /// `m[k] = v`; `None` deletes (`m[k] = nil`).
    MapSet {
        map: MapId,
        key: Expr,
        value: Option<Expr>,
    },
    /// `m[k] = (m[k] or 0) + delta`: an atomic add where the map allows.
    MapAdd {
        map: MapId,
        key: Expr,
        delta: Expr,
    },
    /// `record.field = v`
    FieldSet {
        base: Expr,
        map: MapId,
        field: usize,
        value: Expr,
    },
    /// `packet:setuintN(off, v)` / `setstring`
    PacketStore {
        bytes: u8,
        off: Expr,
        value: Expr,
    },
    PacketStoreString {
        off: Expr,
        value: Expr,
    },
    /// `ctx.<field> = v`
    CtxStore {
        field: CtxField,
        value: Expr,
    },
    If {
        cond: Expr,
        then_: Vec<Stmt>,
        else_: Vec<Stmt>,
    },
    While {
        cond: Expr,
        body: Vec<Stmt>,
    },
    Repeat {
        body: Vec<Stmt>,
        cond: Expr,
    },
    /// `for var = start, limit, step do body end` with a constant non-zero step.
    NumFor {
        var: LocalId,
        start: Expr,
        limit: Expr,
        step: i64,
        body: Vec<Stmt>,
    },
    Break,
    Return(Vec<Expr>),
    /// An expression evaluated for its effects (a call statement).
    Eval(Expr),
    /// `error(...)`: a runtime error, the program takes its default verdict.
    Error,
    /// `do ... end`
    Block(Vec<Stmt>),
    /// `bpf.print(fmt, ...)`
    Print {
        fmt: Vec<u8>,
        args: Vec<Expr>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Local {
    pub name: String,
    pub ty: Ty,
    pub span: Span,
}

/// One checked instance of a Lua function.
#[derive(Clone, Debug, PartialEq)]
pub struct Func {
    pub name: String,
    pub params: Vec<LocalId>,
    pub locals: Vec<Local>,
    pub body: Vec<Stmt>,
    /// The types of its results (shorter returns are padded with nil).
    pub results: Vec<Ty>,
    pub span: Span,
}

impl Stmt {
    /// The expressions a statement evaluates itself (not those of the bodies it holds).
    pub fn own_exprs(&self) -> Vec<&Expr> {
        match &self.kind {
            StmtKind::Local { values, .. } | StmtKind::SetLocals { values, .. } | StmtKind::Return(values) => {
                values.iter().collect()
            }
            StmtKind::SetLocal { value, .. } | StmtKind::CtxStore { value, .. } | StmtKind::Eval(value) => vec![value],
            StmtKind::MapSet { key, value, .. } => std::iter::once(key).chain(value.iter()).collect(),
            StmtKind::MapAdd { key, delta, .. } => vec![key, delta],
            StmtKind::FieldSet { base, value, .. } => vec![base, value],
            StmtKind::PacketStore { off, value, .. } | StmtKind::PacketStoreString { off, value } => vec![off, value],
            StmtKind::If { cond, .. } | StmtKind::While { cond, .. } | StmtKind::Repeat { cond, .. } => vec![cond],
            StmtKind::NumFor { start, limit, .. } => vec![start, limit],
            StmtKind::Print { args, .. } => args.iter().collect(),
            StmtKind::Break | StmtKind::Error | StmtKind::Block(_) => vec![],
        }
    }

    /// The statement lists it holds (an `if`'s two branches, a loop's or block's body).
    pub fn bodies(&self) -> Vec<&Vec<Stmt>> {
        match &self.kind {
            StmtKind::If { then_, else_, .. } => vec![then_, else_],
            StmtKind::While { body, .. }
            | StmtKind::Repeat { body, .. }
            | StmtKind::NumFor { body, .. }
            | StmtKind::Block(body) => vec![body],
            _ => vec![],
        }
    }

    pub fn bodies_mut(&mut self) -> Vec<&mut Vec<Stmt>> {
        match &mut self.kind {
            StmtKind::If { then_, else_, .. } => vec![then_, else_],
            StmtKind::While { body, .. }
            | StmtKind::Repeat { body, .. }
            | StmtKind::NumFor { body, .. }
            | StmtKind::Block(body) => vec![body],
            _ => vec![],
        }
    }
}

impl Expr {
    /// Its direct subexpressions.
    pub fn children(&self) -> Vec<&Expr> {
        match &self.kind {
            ExprKind::Int(_)
            | ExprKind::Bool(_)
            | ExprKind::Nil
            | ExprKind::Str(_)
            | ExprKind::Local(_)
            | ExprKind::PacketLen
            | ExprKind::CtxField(_)
            | ExprKind::Packet
            | ExprKind::Ctx => vec![],
            ExprKind::Unwrap(x)
            | ExprKind::Wrap(x)
            | ExprKind::Neg(x)
            | ExprKind::BNot(x)
            | ExprKind::Not(x)
            | ExprKind::IsNil(x)
            | ExprKind::StrLen(x) => vec![x],
            ExprKind::Arith(_, a, b)
            | ExprKind::Compare(_, a, b)
            | ExprKind::OptEquals(a, b)
            | ExprKind::And(a, b)
            | ExprKind::Or(a, b)
            | ExprKind::StrByte(a, b) => vec![a, b],
            ExprKind::PacketLoad { off, .. } => vec![off],
            ExprKind::PacketString { off, len } => vec![off, len],
            ExprKind::MapGet { key, .. } => vec![key],
            ExprKind::Field { base, .. } => vec![base],
            ExprKind::Call { args, .. } | ExprKind::Builtin { args, .. } => args.iter().collect(),
            ExprKind::RecordCtor { fields, .. } => fields.iter().map(|(_, e)| e).collect(),
        }
    }
}
