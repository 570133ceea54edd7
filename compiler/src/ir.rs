//! The IR: BPF-shaped operations over unlimited virtual registers, in basic blocks.
//!
//! It is deliberately close to BPF (64-bit ALU, sized loads and stores, helper calls, compare
//! and branch) so that lowering decides every safety check the verifier will see, and the
//! register allocator only maps virtual registers to r0-r9 and stack slots. A virtual register
//! may be assigned more than once (Lua locals are), so the IR is not SSA; passes that need a
//! single definition check `def_counts`.
//!
//! Every instruction and terminator carries the source location it came from, so that the
//! emitted BPF has line info and the verifier's complaints can be shown on Lua lines.

use cranelift_entity::{entity_impl, EntityRef, PrimaryMap};
use runtime_bpf::isa::{JmpOp, Size};
use runtime_bpf::object::SourceLoc;
use smallvec::{smallvec, SmallVec};

/// A virtual register: 64 bits, a scalar or a pointer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(u32);
entity_impl!(Value, "v");

/// A basic block.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Block(u32);
entity_impl!(Block, "b");

/// A fixed stack buffer (string bytes, map keys, records), addressed from the frame pointer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u32);
entity_impl!(Slot, "ss");

/// What a virtual register holds, as far as the verifier is concerned. The allocator may
/// spill either kind to an 8-byte aligned stack slot (the verifier tracks spilled pointers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    Scalar,
    /// A pointer (ctx, packet, packet end, map value, stack, map): never mixed into arithmetic
    /// other than `Add`/`Sub` with a bounded scalar.
    Pointer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    Value(Value),
    /// Any 64-bit constant; the emitter materialises values outside i32 with `ld_imm64`.
    Imm(i64),
}

impl From<Value> for Operand {
    fn from(v: Value) -> Operand {
        Operand::Value(v)
    }
}

/// Binary ALU operations, all 64-bit (BPF_ALU64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// Unsigned division/modulo (BPF `/=`, `%=`): a zero divisor gives 0 / the dividend.
    UDiv,
    UMod,
    /// Signed division/modulo (BPF cpu v4 `s/=`, `s%=`, truncating like C).
    SDiv,
    SMod,
    Or,
    And,
    Xor,
    /// Shifts take the count modulo 64 (BPF semantics); lowering implements Lua's.
    Lsh,
    Rsh,
    Arsh,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inst {
    /// `dst = imm`
    Const { dst: Value, imm: i64 },
    /// `dst = src`
    Mov { dst: Value, src: Value },
    /// `dst = a op b`
    Bin {
        op: BinOp,
        dst: Value,
        a: Value,
        b: Operand,
    },
    /// `dst = -src`
    Neg { dst: Value, src: Value },
    /// `dst = bswap(src)` over the low `bits` (16, 32 or 64), zero-extending: network <-> host
    /// order on a little-endian host.
    Bswap { dst: Value, src: Value, bits: u8 },
    /// `dst = zero-extended low `bits` of src` (8, 16 or 32).
    Zext { dst: Value, src: Value, bits: u8 },
    /// `dst = sign-extended low `bits` of src` (8, 16 or 32).
    Sext { dst: Value, src: Value, bits: u8 },
    /// `dst = *(size *)(base + off)`, zero-extended.
    Load {
        dst: Value,
        base: Value,
        off: i16,
        size: Size,
    },
    /// `*(size *)(base + off) = src`
    Store {
        base: Value,
        off: i16,
        src: Operand,
        size: Size,
    },
    /// `dst = *(size *)(slot + off)`
    LoadSlot {
        dst: Value,
        slot: Slot,
        off: u32,
        size: Size,
    },
    /// `dst = *(size *)(slot + index)` at a run-time index: the verifier must see from `index`'s
    /// range that `index + size <= end`; the bytes `[0, end)` count as read.
    LoadSlotIndexed {
        dst: Value,
        slot: Slot,
        index: Value,
        end: u32,
        size: Size,
    },
    /// `*(size *)(slot + off) = src`
    StoreSlot {
        slot: Slot,
        off: u32,
        src: Operand,
        size: Size,
    },
    /// `dst = &slot + off` (a stack pointer: r10 - k)
    SlotAddr { dst: Value, slot: Slot, off: u32 },
    /// `dst = &map` (ld_imm64 with a map relocation); `map` indexes the module's maps.
    MapAddr { dst: Value, map: u32 },
    /// `lock *(size *)(base + off) += src`
    AtomicAdd {
        base: Value,
        off: i16,
        src: Value,
        size: Size,
    },
    /// Call a kernel helper. Arguments go to r1..r5 in order; the result (r0) to `dst`.
    /// r1-r5 are clobbered.
    Call {
        helper: i32,
        args: Vec<Operand>,
        dst: Option<Value>,
    },
    /// Call a kernel function (kfunc) by name; the loader resolves its BTF id.
    CallKfunc {
        name: String,
        args: Vec<Operand>,
        dst: Option<Value>,
    },
    /// Call another function of the program (`Program::funcs[func]`), a BPF-to-BPF call
    /// that the verifier checks separately. Same convention as helpers: r1..r5, r0.
    CallLocal {
        func: u32,
        args: Vec<Operand>,
        dst: Option<Value>,
    },
    /// `dst = the entry function's argument `index`` (only in the entry block, first).
    Arg { dst: Value, index: u8 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Terminator {
    Jump(Block),
    /// `if a op b goto then_ else goto else_`
    Branch {
        op: JmpOp,
        a: Value,
        b: Operand,
        then_: Block,
        else_: Block,
    },
    /// `may_goto`: `exhausted` when the kernel's loop budget ran out, else `cont`.
    MayGoto {
        exhausted: Block,
        cont: Block,
    },
    /// Return from the program with `r0 = value`.
    Return(Operand),
}

/// A terminator's successors. Inline, like [`Uses`]: passes ask for them in every round.
pub type Successors = SmallVec<[Block; 2]>;

/// The values an instruction or terminator reads. Inline rather than a `Vec` (a call has at
/// most five arguments): the passes ask for them millions of times per compile, and
/// allocating each time was a good part of the optimiser's time.
pub type Uses = SmallVec<[Value; 5]>;

impl Terminator {
    /// The successors as a fixed pair and how many of it count, for the loops that ask for
    /// them most (the block order, the CFG facts' check): no small vector to build.
    pub fn successor_pair(&self) -> ([Block; 2], usize) {
        match self {
            Terminator::Jump(b) => ([*b, *b], 1),
            Terminator::Branch { then_, else_, .. } => ([*then_, *else_], 2),
            Terminator::MayGoto { exhausted, cont } => ([*exhausted, *cont], 2),
            Terminator::Return(_) => ([Block(0), Block(0)], 0),
        }
    }

    pub fn successors(&self) -> Successors {
        match self {
            Terminator::Jump(b) => smallvec![*b],
            Terminator::Branch { then_, else_, .. } => smallvec![*then_, *else_],
            Terminator::MayGoto { exhausted, cont } => smallvec![*exhausted, *cont],
            Terminator::Return(_) => SmallVec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockData {
    pub insts: Vec<(Inst, SourceLoc)>,
    pub term: (Terminator, SourceLoc),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotData {
    pub size: u32,
    /// 1, 2, 4 or 8.
    pub align: u32,
}

/// One program's code: its entry function with every callee inlined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub entry: Block,
    pub blocks: PrimaryMap<Block, BlockData>,
    pub values: PrimaryMap<Value, ValueKind>,
    pub slots: PrimaryMap<Slot, SlotData>,
}

impl Inst {
    /// The virtual registers this instruction reads.
    pub fn uses(&self) -> Uses {
        let mut uses = Uses::new();
        self.each_use(|v| uses.push(v));
        uses
    }

    /// Calls `f` on each value this instruction reads, in the order of `uses`, without
    /// collecting them: the passes that only count or mark reads run over every instruction
    /// in every round, and building the list each time showed in profiles.
    pub fn each_use(&self, mut f: impl FnMut(Value)) {
        let mut op = |o: &Operand| {
            if let Operand::Value(v) = o {
                f(*v)
            }
        };
        match self {
            Inst::Const { .. } | Inst::SlotAddr { .. } | Inst::MapAddr { .. } | Inst::Arg { .. } => {}
            Inst::LoadSlot { .. } => {}
            Inst::Mov { src, .. } | Inst::Neg { src, .. } => op(&Operand::Value(*src)),
            Inst::Bswap { src, .. } | Inst::Zext { src, .. } | Inst::Sext { src, .. } => op(&Operand::Value(*src)),
            Inst::Bin { a, b, .. } => {
                op(&Operand::Value(*a));
                op(b);
            }
            Inst::Load { base, .. } => op(&Operand::Value(*base)),
            Inst::LoadSlotIndexed { index, .. } => op(&Operand::Value(*index)),
            Inst::Store { base, src, .. } => {
                op(&Operand::Value(*base));
                op(src);
            }
            Inst::StoreSlot { src, .. } => op(src),
            Inst::AtomicAdd { base, src, .. } => {
                op(&Operand::Value(*base));
                op(&Operand::Value(*src));
            }
            Inst::Call { args, .. } | Inst::CallKfunc { args, .. } | Inst::CallLocal { args, .. } => {
                args.iter().for_each(op)
            }
        }
    }

    /// The virtual register this instruction writes, if any.
    pub fn def(&self) -> Option<Value> {
        match self {
            Inst::Const { dst, .. }
            | Inst::Mov { dst, .. }
            | Inst::Bin { dst, .. }
            | Inst::Neg { dst, .. }
            | Inst::Bswap { dst, .. }
            | Inst::Zext { dst, .. }
            | Inst::Sext { dst, .. }
            | Inst::Load { dst, .. }
            | Inst::LoadSlot { dst, .. }
            | Inst::LoadSlotIndexed { dst, .. }
            | Inst::SlotAddr { dst, .. }
            | Inst::MapAddr { dst, .. }
            | Inst::Arg { dst, .. } => Some(*dst),
            Inst::Call { dst, .. } | Inst::CallKfunc { dst, .. } | Inst::CallLocal { dst, .. } => *dst,
            Inst::Store { .. } | Inst::StoreSlot { .. } | Inst::AtomicAdd { .. } => None,
        }
    }

    /// True for calls: r1-r5 (and r0) do not survive them.
    pub fn is_call(&self) -> bool {
        matches!(
            self,
            Inst::Call { .. } | Inst::CallKfunc { .. } | Inst::CallLocal { .. }
        )
    }

    /// True when removing the instruction (its result unused) changes nothing observable.
    pub fn is_pure(&self) -> bool {
        !matches!(
            self,
            Inst::Store { .. }
                | Inst::StoreSlot { .. }
                | Inst::AtomicAdd { .. }
                | Inst::Call { .. }
                | Inst::CallKfunc { .. }
                | Inst::CallLocal { .. }
        )
    }
}

impl Terminator {
    pub fn uses(&self) -> Uses {
        match self {
            Terminator::Branch { a, b, .. } => {
                let mut v = smallvec![*a];
                if let Operand::Value(b) = b {
                    v.push(*b);
                }
                v
            }
            Terminator::Return(Operand::Value(v)) => smallvec![*v],
            _ => SmallVec::new(),
        }
    }
}

impl Function {
    pub fn new(name: impl Into<String>) -> Function {
        let mut blocks = PrimaryMap::new();
        let entry = blocks.push(BlockData {
            insts: Vec::new(),
            term: (Terminator::Return(Operand::Imm(0)), SourceLoc::default()),
        });
        Function {
            name: name.into(),
            entry,
            blocks,
            values: PrimaryMap::new(),
            slots: PrimaryMap::new(),
        }
    }

    pub fn new_value(&mut self, kind: ValueKind) -> Value {
        self.values.push(kind)
    }

    pub fn new_block(&mut self) -> Block {
        self.blocks.push(BlockData {
            insts: Vec::new(),
            term: (Terminator::Return(Operand::Imm(0)), SourceLoc::default()),
        })
    }

    pub fn new_slot(&mut self, size: u32, align: u32) -> Slot {
        self.slots.push(SlotData { size, align })
    }

    /// Blocks reachable from the entry, in reverse post-order (a good layout order: a block
    /// comes after all its forward-edge predecessors).
    /// A map over this function's values, sized once: passes build several per run, and
    /// growing them one index at a time showed in profiles.
    pub fn value_map<T: Clone + Default>(&self) -> cranelift_entity::SecondaryMap<Value, T> {
        let mut m = cranelift_entity::SecondaryMap::new();
        m.resize(self.values.len());
        m
    }

    /// [`Function::value_map`] for blocks.
    pub fn block_map<T: Clone + Default>(&self) -> cranelift_entity::SecondaryMap<Block, T> {
        let mut m = cranelift_entity::SecondaryMap::new();
        m.resize(self.blocks.len());
        m
    }

    /// `k` when `b` is an empty block that only returns the constant `k` (a runtime error's
    /// exit, `return action.PASS`): the blocks `opt::share_returns` merges and `layout` moves.
    pub fn returned_constant(&self, b: Block) -> Option<i64> {
        match &self.blocks[b] {
            BlockData {
                insts,
                term: (Terminator::Return(Operand::Imm(k)), _),
            } if insts.is_empty() => Some(*k),
            _ => None,
        }
    }

    pub fn reverse_postorder(&self) -> Vec<Block> {
        let mut seen = vec![false; self.blocks.len()];
        let mut post = Vec::with_capacity(self.blocks.len());
        // Iterative DFS: deep CFGs from long programs must not overflow the native stack.
        // Each entry holds its block's successors and how many are still to visit, so a
        // block's terminator is read once, not once per successor.
        let mut stack: Vec<(Block, [Block; 2], usize)> = Vec::with_capacity(self.blocks.len());
        let (succs, n) = self.blocks[self.entry].term.0.successor_pair();
        stack.push((self.entry, succs, n));
        seen[self.entry.index()] = true;
        while let Some((b, succs, left)) = stack.last_mut() {
            if *left == 0 {
                post.push(*b);
                stack.pop();
                continue;
            }
            // Visit the fall-through (else/cont) side last so it is laid out right after.
            *left -= 1;
            let s = succs[*left];
            if !seen[s.index()] {
                seen[s.index()] = true;
                let (succs, n) = self.blocks[s].term.0.successor_pair();
                stack.push((s, succs, n));
            }
        }
        post.reverse();
        post
    }

    /// How many times each value is written.
    pub fn def_counts(&self) -> cranelift_entity::SecondaryMap<Value, u32> {
        let mut counts = self.value_map();
        for (_, b) in self.blocks.iter() {
            for (inst, _) in &b.insts {
                if let Some(d) = inst.def() {
                    counts[d] += 1;
                }
            }
        }
        counts
    }

    /// How many times each value is read, by instructions and terminators.
    pub fn read_counts(&self) -> cranelift_entity::SecondaryMap<Value, u32> {
        let mut reads: cranelift_entity::SecondaryMap<Value, u32> = self.value_map();
        for (_, b) in self.blocks.iter() {
            for (inst, _) in &b.insts {
                inst.each_use(|u| reads[u] += 1);
            }
            for u in b.term.0.uses() {
                reads[u] += 1;
            }
        }
        reads
    }
}

/// A readable listing, for snapshots and `--emit ir`.
pub fn display(f: &Function) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "function {}:", f.name);
    for (slot, d) in f.slots.iter() {
        let _ = writeln!(s, "  {slot}: {} bytes, align {}", d.size, d.align);
    }
    for b in f.reverse_postorder() {
        let _ = writeln!(s, "{b}:");
        for (inst, _) in &f.blocks[b].insts {
            let _ = writeln!(s, "  {}", display_inst(inst));
        }
        let _ = writeln!(s, "  {}", display_term(&f.blocks[b].term.0));
    }
    s
}

fn display_operand(o: &Operand) -> String {
    match o {
        Operand::Value(v) => v.to_string(),
        Operand::Imm(i) => i.to_string(),
    }
}

fn display_args(args: &[Operand]) -> String {
    args.iter().map(display_operand).collect::<Vec<_>>().join(", ")
}

pub fn display_inst(inst: &Inst) -> String {
    let o = display_operand;
    match inst {
        Inst::Const { dst, imm } => format!("{dst} = {imm}"),
        Inst::Mov { dst, src } => format!("{dst} = {src}"),
        Inst::Bin { op, dst, a, b } => format!("{dst} = {op:?} {a}, {}", o(b)),
        Inst::Neg { dst, src } => format!("{dst} = -{src}"),
        Inst::Bswap { dst, src, bits } => format!("{dst} = bswap{bits} {src}"),
        Inst::Zext { dst, src, bits } => format!("{dst} = zext{bits} {src}"),
        Inst::Sext { dst, src, bits } => format!("{dst} = sext{bits} {src}"),
        Inst::Load { dst, base, off, size } => format!("{dst} = load.{size:?} [{base}{off:+}]"),
        Inst::Store { base, off, src, size } => format!("store.{size:?} [{base}{off:+}], {}", o(src)),
        Inst::LoadSlot { dst, slot, off, size } => format!("{dst} = load.{size:?} [{slot}+{off}]"),
        Inst::LoadSlotIndexed {
            dst,
            slot,
            index,
            end,
            size,
        } => format!("{dst} = load.{size:?} [{slot}+{index}] (< {end})"),
        Inst::StoreSlot { slot, off, src, size } => format!("store.{size:?} [{slot}+{off}], {}", o(src)),
        Inst::SlotAddr { dst, slot, off } => format!("{dst} = &{slot}+{off}"),
        Inst::MapAddr { dst, map } => format!("{dst} = &map{map}"),
        Inst::AtomicAdd { base, off, src, size } => format!("atomic_add.{size:?} [{base}{off:+}], {src}"),
        Inst::Call { helper, args, dst } => match dst {
            Some(d) => format!("{d} = call #{helper}({})", display_args(args)),
            None => format!("call #{helper}({})", display_args(args)),
        },
        Inst::CallKfunc { name, args, dst } => match dst {
            Some(d) => format!("{d} = call {name}({})", display_args(args)),
            None => format!("call {name}({})", display_args(args)),
        },
        Inst::CallLocal { func, args, dst } => match dst {
            Some(d) => format!("{d} = call fn{func}({})", display_args(args)),
            None => format!("call fn{func}({})", display_args(args)),
        },
        Inst::Arg { dst, index } => format!("{dst} = arg{index}"),
    }
}

pub fn display_term(t: &Terminator) -> String {
    match t {
        Terminator::Jump(b) => format!("jump {b}"),
        Terminator::Branch { op, a, b, then_, else_ } => {
            format!("if {op:?} {a}, {} then {then_} else {else_}", display_operand(b))
        }
        Terminator::MayGoto { exhausted, cont } => format!("may_goto {exhausted} else {cont}"),
        Terminator::Return(v) => format!("return {}", display_operand(v)),
    }
}
