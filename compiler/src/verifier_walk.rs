//! A model of the kernel verifier's walk over the final instruction stream, counting the
//! instructions it would process, so that `luabpf check` refuses a program the verifier
//! would give up on ("BPF program is too large", "The sequence of 8193 jumps is too
//! complex") instead of handing it over.
//!
//! `cost.rs` estimates loop nests on the typed HIR; what it cannot see is path explosion:
//! branches whose outcomes leave different values in registers or stack slots that the
//! verifier then needs exactly (they feed packet offsets, stack indexes, decided branches), so
//! the states of the two arms cannot be merged and every later branch doubles the paths.
//! This walker does what the verifier does (kernel/bpf/verifier.c, 6.18):
//!
//! - depth first, fall-through first, the other arm of an undecided conditional jump pushed
//!   on a stack whose depth is the "sequence of jumps";
//! - registers and 8-byte stack slots per frame: scalars as ranges, pointers by kind with
//!   their offsets and packet ranges (`values`), branches decided as `is_branch_taken` does;
//! - checkpoints at the kernel's prune points, with its heuristics (a new one after two jumps
//!   and eight instructions, fewer inside loops, eviction of states that keep missing);
//! - pruning when a finished checkpoint subsumes the current state on the live registers,
//!   comparing scalars only where the checkpoint marked them precise;
//! - precision marked lazily by backtracking the path's history into its checkpoints, from
//!   the uses the kernel marks (decided branches, pointer arithmetic, helper sizes, netfilter
//!   verdicts, constant array-map keys).
//!
//! It is a model, not the verifier: where it knows less than the kernel it walks more paths
//! (a false refusal), where it knows more it walks fewer, which the margin below the budget
//! covers. docs/fuzzing.md has its calibration against the kernel's counts.

mod blame;
mod scalar;

pub use blame::diagnostic;

use std::collections::HashMap;
use std::rc::Rc;

use runtime_bpf::helpers as h;
use runtime_bpf::isa::{self, AluOp, Insn, JmpOp};
use runtime_bpf::object::{MapKind, ParamType, ProgramCode};

use scalar::Sc;

/// What the walker needs to know of a map.
#[derive(Clone, Copy, Debug)]
pub struct MapInfo {
    pub kind: MapKind,
    pub max_entries: u32,
}

/// Where the walk stops: the verifier's budgets, usually with a margin.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Processed instructions (the kernel's is 1,000,000).
    pub insns: u64,
    /// Pending branches (the kernel's is 8,192).
    pub pending: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Fits,
    /// More than `Limits::insns` instructions processed.
    TooLarge,
    /// More than `Limits::pending` branches pending at once.
    TooManyJumps,
}

/// The result of a walk.
#[derive(Clone, Debug)]
pub struct Walk {
    pub verdict: Verdict,
    /// Instructions processed (up to where the walk stopped).
    pub processed: u64,
    /// The deepest the stack of pending branches got.
    pub max_pending: usize,
    /// Times each instruction was processed.
    pub per_insn: Vec<u32>,
}

/// The program type, for its context's layout and return value rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
    Netfilter,
}

impl Hook {
    pub fn of_section(section: &str) -> Hook {
        if section.starts_with("netfilter") {
            Hook::Netfilter
        } else if section.starts_with("xdp") {
            Hook::Xdp
        } else {
            Hook::Tc
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ctx,
    Pkt,
    PktEnd,
    PktMeta,
    Stack(u8),
    MapPtr(u32),
    MapValue(u32),
    /// Memory of a known size (ringbuf records, dynptr slices, pointer parameters).
    Mem,
    /// Kernel objects behind BTF pointers (netfilter's skb and state).
    Btf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ptr {
    kind: Kind,
    off: i64,
    /// Packet pointers: bytes known to be inside the packet from the pointer's base.
    range: i64,
    /// Links copies of one pointer (null tests, packet range checks refine all of them).
    id: u32,
    /// The variable part of the offset, as an index into the walk's table of them
    /// (`Walker::vars`), and in the top bit whether the pointer may be null. A range inline
    /// (32 bytes) made a register or spilled slot 64 bytes instead of 40, and so every state
    /// the walk copies at its forks and checkpoints 60% larger; few pointers have one.
    var_null: u32,
}

/// `Ptr::var_null`: the pointer may be null.
const MAYBE_NULL: u32 = 1 << 31;

/// The index of the variable offset 0 in `Walker::vars`.
const NO_VAR: u32 = 0;

impl Ptr {
    fn maybe_null(&self) -> bool {
        self.var_null & MAYBE_NULL != 0
    }
    fn set_maybe_null(&mut self, null: bool) {
        self.var_null = self.var_null & !MAYBE_NULL | if null { MAYBE_NULL } else { 0 };
    }
    fn var(&self) -> usize {
        (self.var_null & !MAYBE_NULL) as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    Uninit,
    /// `id` links copies of one unknown value (moves, spills and fills): what a branch learns
    /// of one, it learns of all (the kernel's linked scalars).
    Scalar {
        sc: Sc,
        precise: bool,
        id: u32,
    },
    Ptr(Ptr),
}

impl Val {
    fn scalar(sc: Sc) -> Val {
        Val::Scalar {
            sc,
            precise: false,
            id: 0,
        }
    }
    fn ptr(kind: Kind, off: i64) -> Val {
        Val::Ptr(Ptr {
            kind,
            off,
            range: 0,
            id: 0,
            var_null: NO_VAR,
        })
    }
    fn sc(&self) -> Option<Sc> {
        match self {
            Val::Scalar { sc, .. } => Some(*sc),
            _ => None,
        }
    }
}

// (The size the walk's states are made of: see `Ptr::var_null`.)
const _: () = assert!(std::mem::size_of::<Val>() == 40 && std::mem::size_of::<Slot>() == 40);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Invalid,
    Misc,
    Zero,
    Spill(Val),
}

const SLOTS: usize = 64;
const MAX_FRAMES: usize = 8;

#[derive(Clone, Debug)]
struct Frame {
    regs: [Val; 11],
    /// 8-byte slots from the frame pointer down, grown as written; shared between the copies
    /// of a state (pushed branches, checkpoints) until one of them writes it.
    stack: Rc<Vec<Slot>>,
    /// The call instruction that made this frame (u32::MAX for the outermost).
    callsite: u32,
    /// The registers and stack slots holding scalars marked precise: always none in a
    /// path's state, only checkpoints get precision marks (`mark_in`, which keeps these).
    precise_regs: u16,
    precise_slots: u64,
    /// The slots holding a spilled pointer, and those holding a scalar linked to others (a
    /// nonzero id): the only ones `update_vals` can change, which it looks at instead of
    /// every slot (kept by `set_slot` and `update_vals`, the writers of a slot's value).
    ptr_slots: u64,
    linked_slots: u64,
}

impl Frame {
    fn new(callsite: u32, depth: usize) -> Frame {
        let mut regs = [Val::Uninit; 11];
        regs[10] = Val::ptr(Kind::Stack(depth as u8), 0);
        Frame {
            regs,
            stack: Rc::default(),
            callsite,
            precise_regs: 0,
            precise_slots: 0,
            ptr_slots: 0,
            linked_slots: 0,
        }
    }
    fn slot(&self, i: usize) -> Slot {
        self.stack.get(i).copied().unwrap_or(Slot::Invalid)
    }
    fn set_slot(&mut self, i: usize, s: Slot) {
        if i >= SLOTS {
            return;
        }
        if self.slot(i) == s {
            return;
        }
        let stack = Rc::make_mut(&mut self.stack);
        if stack.len() <= i {
            stack.resize(i + 1, Slot::Invalid);
        }
        stack[i] = s;
        (self.ptr_slots, self.linked_slots) = mark_slot(self.ptr_slots, self.linked_slots, i, &s);
    }
}

/// A frame's `ptr_slots` and `linked_slots` once slot `i` holds `s`.
#[inline]
fn mark_slot(ptrs: u64, linked: u64, i: usize, s: &Slot) -> (u64, u64) {
    let bit = 1u64 << i;
    let (p, l) = match s {
        Slot::Spill(Val::Ptr(_)) => (bit, 0),
        Slot::Spill(Val::Scalar { id, .. }) if *id != 0 => (0, bit),
        _ => (0, 0),
    };
    (ptrs & !bit | p, linked & !bit | l)
}

/// The register an operand field names: an instruction's field can name r11-r15, which the
/// walk folds onto r0-r4 (`r % 11`) rather than fail on. By table: the division takes a
/// dozen instructions, on every register read.
#[inline]
fn reg_slot(r: u8) -> usize {
    const SLOTS: [u8; 256] = {
        let mut t = [0; 256];
        let mut r = 0;
        while r < 256 {
            t[r] = (r % 11) as u8;
            r += 1;
        }
        t
    };
    SLOTS[r as usize] as usize
}

/// The slot of frame-pointer offset `off` (negative), if it is inside the stack.
fn slot_of(off: i64) -> Option<usize> {
    (-(SLOTS as i64) * 8..0)
        .contains(&off)
        .then(|| ((-off - 1) / 8) as usize)
}

type State = Vec<Frame>;

/// The history length that forces a checkpoint (the kernel bounds its jump history so).
const HIST: usize = 64;

/// A path's history since its last checkpoint: its latest step in the walk's arena of steps
/// (`Walker::steps`), each of which links to the one before it. Paths forked from one point
/// share the steps before it instead of each copying them: the copies held most of a walk's
/// memory and cost a good part of its time.
#[derive(Clone, Copy)]
struct Hist {
    latest: u32,
    len: u32,
}

impl Hist {
    const EMPTY: Hist = Hist {
        latest: NO_STEP,
        len: 0,
    };
}

const NO_STEP: u32 = u32::MAX;

/// A step of the arena: its instruction, the index of the step before it on its path, and
/// what backtracking through it can touch (its `back_mask`, with its frame in the bits from
/// `FRAME_SHIFT`), so that `back_steps` tests a step without decoding its instruction.
#[derive(Clone, Copy)]
struct Linked {
    pc: u32,
    prev: u32,
    mask: u32,
}

const FRAME_SHIFT: u32 = 24;
const FRAME_BITS: u32 = !0 << FRAME_SHIFT;

impl Linked {
    fn frame(&self) -> usize {
        (self.mask >> FRAME_SHIFT) as usize % MAX_FRAMES
    }
}

/// Appends the instruction at `pc`, run in frame `frame`, whose `back_mask` is `back`, to the
/// history `hist` of a path, in an arena given `room` entries at once (`make_room`: the
/// walk's limit of instructions, as each adds a step, and a fork one more). A step
/// that backtracking cannot change anything through counts in the history's length but is
/// not kept: `back_steps` would only skip it.
fn push_step(arena: &mut Vec<Linked>, room: usize, hist: &mut Hist, pc: usize, frame: usize, back: u32) {
    hist.len += 1;
    if back == 0 {
        return;
    }
    make_room(arena, room);
    arena.push(Linked {
        pc: pc as u32,
        prev: hist.latest,
        mask: back | (frame.min(MAX_FRAMES - 1) as u32) << FRAME_SHIFT,
    });
    hist.latest = (arena.len() - 1) as u32;
}

/// The length the walk's long lists (checkpoints, steps, pending branches) start with; past
/// it, a list is given at once the room its limits allow (`make_room`).
const LONG: usize = 256;

/// Makes room for a push onto `list`, which the walk's limits bound near `room` entries.
/// Doubling as it grows, the list would be copied whole each time (cookie_guard: 440 KB,
/// 0.3M of its walk's 14.8M instructions, and 25 page faults);
/// past `LONG` entries it gets `room` instead, which the kernel maps only where it is
/// written. A walk that stays shorter (most of them) keeps its small lists.
#[inline]
fn make_room<T>(list: &mut Vec<T>, room: usize) {
    if list.len() == list.capacity() {
        give_room(list, room);
    }
}

#[cold]
fn give_room<T>(list: &mut Vec<T>, room: usize) {
    let more = if list.len() >= LONG {
        room.saturating_sub(list.len())
    } else {
        0
    };
    list.reserve_exact(more.max(list.len()).max(1));
}

/// A checkpoint: the state a path had at a prune point.
struct Node {
    state: State,
    parent: Option<usize>,
    /// The instructions from the parent checkpoint to this one.
    hist: Hist,
    /// Paths still being explored below this checkpoint (the kernel's `branches`).
    branches: u32,
    hit: u32,
    miss: u32,
    /// Dropped from the list of states to compare with (it kept missing).
    evicted: bool,
}

impl Node {
    /// Once no path below it is left, a checkpoint's history is not needed (nothing will
    /// backtrack through it), nor its state if it is no longer compared with: both are
    /// dropped to bound the memory of a long walk.
    fn release(&mut self) {
        if self.branches == 0 {
            self.hist = Hist::EMPTY;
            if self.evicted {
                self.state = Vec::new();
            }
        }
    }
}

struct Path {
    pc: usize,
    state: State,
    parent: Option<usize>,
    hist: Hist,
}

/// Registers and stack slots to mark precise, per frame (the kernel's `backtrack_state`).
#[derive(Default)]
struct Backtrack {
    regs: [u16; MAX_FRAMES],
    slots: [u64; MAX_FRAMES],
}

impl Backtrack {
    fn is_empty(&self) -> bool {
        self.regs.iter().fold(0, |a, r| a | r) == 0 && self.slots.iter().fold(0, |a, s| a | s) == 0
    }

    /// The `back_mask` bits of the steps in frame `f` that can change this backtrack.
    #[inline]
    fn wanted(&self, f: usize) -> u32 {
        BACK_ALWAYS | self.regs[f] as u32 | ((self.slots[f] != 0) as u32) << BACK_STACK.trailing_zeros()
    }
}

enum Stop {
    Limit(Verdict),
}

/// Walks every program path of `code` as the verifier would (the entry, then each separately
/// verified function), until done or `limits` are crossed.
pub fn walk(code: &ProgramCode, maps: &[MapInfo], hook: Hook, limits: Limits) -> Walk {
    let mut w = Walker::new(code, maps, hook, limits);
    let mut verdict = Verdict::Fits;
    let mut starts = vec![(0usize, None)];
    starts.extend(code.subfunctions.iter().map(|s| (s.start, Some(s.params.as_slice()))));
    for (start, params) in starts {
        w.reset();
        w.in_subfunction = params.is_some();
        let mut frame = Frame::new(u32::MAX, 0);
        match params {
            None => frame.regs[1] = Val::ptr(Kind::Ctx, 0),
            Some(ps) => {
                for (i, p) in ps.iter().enumerate().take(5) {
                    frame.regs[i + 1] = match p {
                        ParamType::Ctx => Val::ptr(Kind::Ctx, 0),
                        ParamType::Scalar => Val::scalar(Sc::UNKNOWN),
                        ParamType::ScalarPtr => w.maybe_null(Kind::Mem),
                    };
                }
            }
        }
        let path = Path {
            pc: start,
            state: vec![frame],
            parent: None,
            hist: Hist::EMPTY,
        };
        if let Err(Stop::Limit(v)) = w.run(path) {
            verdict = v;
            break;
        }
    }
    Walk {
        verdict,
        processed: w.processed,
        max_pending: w.max_pending,
        per_insn: w.per_insn,
    }
}

fn ptr_of(kind: Kind) -> Ptr {
    match Val::ptr(kind, 0) {
        Val::Ptr(p) => p,
        _ => unreachable!(),
    }
}

struct Walker<'a> {
    insns: &'a [Insn],
    maps: &'a [MapInfo],
    hook: Hook,
    limits: Limits,
    map_at: HashMap<usize, u32>,
    kfunc_at: HashMap<usize, &'a str>,
    global: HashMap<usize, &'a [ParamType]>,
    prune: Vec<bool>,
    live: Vec<u16>,
    /// Per instruction, when backtracking through it can change anything (`back_mask`).
    back: Vec<u32>,
    nodes: Vec<Node>,
    /// Checkpoints to compare with, per instruction.
    explored: Vec<Vec<usize>>,
    pending: Vec<Path>,
    /// The memory of states no longer used (`copy_state`).
    spare: Vec<State>,
    /// Every step of the paths walked, linked (`Hist`).
    steps: Vec<Linked>,
    /// The variable offsets of pointers (`Ptr::var_null`), 0 first; never cleared: the
    /// walk makes few.
    vars: Vec<Sc>,
    processed: u64,
    jumps: u64,
    prev_processed: u64,
    prev_jumps: u64,
    next_id: u32,
    max_pending: usize,
    per_insn: Vec<u32>,
    /// Walking a separately verified function (whose result the kernel does not check).
    in_subfunction: bool,
}

enum Next {
    Go,
    End,
}

impl<'a> Walker<'a> {
    fn new(code: &'a ProgramCode, maps: &'a [MapInfo], hook: Hook, limits: Limits) -> Walker<'a> {
        let insns = &code.insns[..];
        Walker {
            insns,
            maps,
            hook,
            limits,
            map_at: code.map_relocs.iter().map(|&(s, m)| (s, m as u32)).collect(),
            kfunc_at: code.kfunc_relocs.iter().map(|(s, n)| (*s, n.as_str())).collect(),
            global: code
                .subfunctions
                .iter()
                .map(|s| (s.start, s.params.as_slice()))
                .collect(),
            prune: prune_points(insns),
            live: live_registers(insns),
            back: insns.iter().map(|i| back_mask(*i)).collect(),
            nodes: Vec::with_capacity(LONG),
            explored: vec![Vec::new(); insns.len()],
            pending: Vec::with_capacity(LONG),
            spare: Vec::new(),
            steps: Vec::with_capacity(LONG),
            vars: vec![Sc::konst(0)],
            processed: 0,
            jumps: 0,
            prev_processed: 0,
            prev_jumps: 0,
            next_id: 1,
            max_pending: 0,
            per_insn: vec![0; insns.len()],
            in_subfunction: false,
        }
    }

    /// Forgets the checkpoints between separately verified functions, as the kernel does.
    fn reset(&mut self) {
        self.nodes.clear();
        self.explored.iter_mut().for_each(Vec::clear);
        self.pending.clear();
        self.steps.clear();
    }

    fn new_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// A new pointer that may be null (a null test will tell).
    fn maybe_null(&mut self, kind: Kind) -> Val {
        Val::Ptr(Ptr {
            id: self.new_id(),
            var_null: NO_VAR | MAYBE_NULL,
            ..ptr_of(kind)
        })
    }

    fn run(&mut self, mut cur: Path) -> Result<(), Stop> {
        loop {
            if cur.pc >= self.insns.len() {
                return Ok(());
            }
            self.processed += 1;
            self.per_insn[cur.pc] += 1;
            if self.processed > self.limits.insns {
                return Err(Stop::Limit(Verdict::TooLarge));
            }
            let done = if self.prune[cur.pc] && self.visit(&mut cur) {
                true
            } else {
                matches!(self.step(&mut cur)?, Next::End)
            };
            if done {
                self.finish(cur.parent);
                match self.pending.pop() {
                    Some(p) => {
                        let ended = std::mem::replace(&mut cur, p);
                        self.recycle(ended.state);
                    }
                    None => return Ok(()),
                }
            }
        }
    }

    /// A path ended: its checkpoints lose one branch (the kernel's `update_branch_counts`).
    fn finish(&mut self, mut n: Option<usize>) {
        while let Some(i) = n {
            self.nodes[i].branches = self.nodes[i].branches.saturating_sub(1);
            self.nodes[i].release();
            if self.nodes[i].branches > 0 {
                break;
            }
            n = self.nodes[i].parent;
        }
    }

    /// The kernel's `is_state_visited`: true when a finished checkpoint here covers `cur`;
    /// otherwise maybe makes `cur`'s state a new checkpoint.
    fn visit(&mut self, cur: &mut Path) -> bool {
        let pc = cur.pc;
        // A long history forces a checkpoint (the kernel bounds its jump history so).
        let force = cur.hist.len as usize >= HIST;
        let mut add = force || self.jumps - self.prev_jumps >= 2 && self.processed - self.prev_processed >= 8;
        // Inside a loop: different iterations rarely prune each other.
        let in_loop_quiet = !force && self.jumps - self.prev_jumps < 20 && self.processed - self.prev_processed < 100;
        let (list, nodes) = (&mut self.explored[pc], &mut self.nodes);
        let (live, vars, live_top) = (&self.live[..], &self.vars[..], self.live[pc]);
        let now = cur.state.as_slice();
        let mut hit = None;
        let mut i = 0;
        while i < list.len() {
            let n = list[i];
            let node = &mut nodes[n];
            if node.branches > 0 {
                if in_loop_quiet {
                    add = false;
                }
            } else if covers(live, vars, live_top, &node.state, now) {
                node.hit += 1;
                hit = Some(n);
                break;
            }
            // (Only a miss can make a checkpoint evicted: its test is false until one.)
            if add {
                node.miss += 1;
                if node.miss > node.hit * 3 + 3 {
                    node.evicted = true;
                    node.release();
                    list.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
        if let Some(n) = hit {
            self.propagate_precision(n, cur);
            return true;
        }
        if add {
            let id = self.nodes.len();
            let state = self.copy_state(&cur.state);
            // (A checkpoint needs eight instructions processed since the last one, or a path
            // of 64 steps since its own.)
            make_room(&mut self.nodes, self.limits.insns as usize / 8);
            self.nodes.push(Node {
                state,
                parent: cur.parent,
                hist: std::mem::replace(&mut cur.hist, Hist::EMPTY),
                branches: 1,
                hit: 0,
                miss: 0,
                evicted: false,
            });
            cur.parent = Some(id);
            // The kernel's `mark_all_scalars_imprecise` has nothing to do here: a path's
            // state never holds precision marks, only checkpoints do (`mark_in`).
            self.prev_processed = self.processed;
            self.prev_jumps = self.jumps;
            self.explored[pc].push(id);
        }
        false
    }

    /// A copy of `state`, in the memory of a state no longer used if there is one (states
    /// are copied at every fork and checkpoint).
    fn copy_state(&mut self, state: &State) -> State {
        // A fresh copy is made by `clone`, at its exact size: `clone_from` into an empty
        // state would reserve room for four frames (Vec's smallest growth), which tripled
        // the walk's memory and its page faults (cookie_guard: +950). Into a spare state,
        // `extend_from_slice` took 0.3M fewer instructions than `clone_from` on cookie_guard
        // and on ua_filter (`with_capacity` and it for a fresh copy took 0.2M more than `clone`).
        match self.spare.pop() {
            Some(mut copy) => {
                copy.extend_from_slice(state);
                copy
            }
            None => state.clone(),
        }
    }

    /// Keeps the memory of a state no longer used for `copy_state`. Its frames are dropped
    /// now: the stacks they share with other states would otherwise be copied on their next
    /// write.
    fn recycle(&mut self, mut state: State) {
        state.clear();
        self.spare.push(state);
    }
}

/// The kernel's `states_equal` (not exact): `old` allows everything `cur` can do at a pc
/// where `live_top` are the live registers (`live_at`: those before each instruction).
/// Covering is a conjunction of pure tests: their order changes nothing but how soon a miss
/// is seen.
#[inline]
fn covers(live_at: &[u16], vars: &[Sc], live_top: u16, old: &[Frame], cur: &[Frame]) -> bool {
    if old.len() != cur.len() {
        return false;
    }
    let top = old.len() - 1;
    // Most misses are a precise scalar of the current frame whose range `cur` leaves (a few
    // in a hundred are anything else): those are compared first.
    let live_top = live_top as u64 & 0x3ff;
    if !precise_regs_cover(vars, &old[top], &cur[top], live_top) {
        return false;
    }
    // (Most states have one frame: no walk over the outer ones to set up.)
    if top == 0 {
        return frame_covers(vars, &old[0], &cur[0], live_top & !(old[0].precise_regs as u64));
    }
    old.iter().zip(cur).enumerate().all(|(i, (o, c))| {
        if i == top {
            return frame_covers(vars, o, c, live_top & !(o.precise_regs as u64));
        }
        // Outer frames resume after their call: r6-r9 (and r10) are what survives.
        let live = live_at.get(cur[i + 1].callsite as usize + 1).copied().unwrap_or(0) & 0x7c0;
        precise_regs_cover(vars, o, c, live as u64) && frame_covers(vars, o, c, live as u64 & !(o.precise_regs as u64))
    })
}

/// `old`'s precise registers among `live` allow `cur`'s.
#[inline]
fn precise_regs_cover(vars: &[Sc], old: &Frame, cur: &Frame, live: u64) -> bool {
    bits(live & old.precise_regs as u64).all(|r| match (&old.regs[r], &cur.regs[r]) {
        (Val::Scalar { sc: o, .. }, Val::Scalar { sc: c, .. }) => o.contains(c),
        (o, c) => val_covers(vars, o, c),
    })
}

/// The rest of `old`'s frame allows `cur`'s: its registers `regs`, its stack.
fn frame_covers(vars: &[Sc], o: &Frame, c: &Frame, regs: u64) -> bool {
    // (The commonest cases, an unused register and an imprecise scalar, are tested inline.)
    let reg_covers = |r: usize| match (&o.regs[r], &c.regs[r]) {
        (Val::Uninit, _) | (Val::Scalar { precise: false, .. }, Val::Scalar { .. }) => true,
        (o, c) => val_covers(vars, o, c),
    };
    if o.callsite != c.callsite || !bits(regs).all(reg_covers) {
        return false;
    }
    // A stack shared with the checkpoint is the same (and covering is reflexive).
    if Rc::ptr_eq(&o.stack, &c.stack) {
        return true;
    }
    // (Slots past the end of `cur`'s stack are invalid there.)
    let (os, cs) = (&o.stack[..], &c.stack[..]);
    let n = os.len().min(cs.len());
    let covers = |o: &Slot, c: &Slot| matches!(o, Slot::Invalid | Slot::Misc) || slot_covers(vars, o, c);
    os[..n].iter().zip(&cs[..n]).all(|(o, c)| covers(o, c)) && os[n..].iter().all(|o| covers(o, &Slot::Invalid))
}

impl<'a> Walker<'a> {
    /// After pruning against `old`: what `old` needed precise, `cur`'s history needs too.
    fn propagate_precision(&mut self, old: usize, cur: &Path) {
        let mut bt = Backtrack::default();
        for (f, frame) in self.nodes[old].state.iter().enumerate() {
            for r in bits(frame.precise_regs as u64) {
                if cur.state[f].regs[r].sc().is_some() {
                    bt.regs[f] |= 1 << r;
                }
            }
            bt.slots[f] = frame.precise_slots;
        }
        self.backtrack(bt, cur.hist, cur.parent);
    }

    /// The kernel's `mark_chain_precision`: registers `regs` of the current frame (and
    /// stack slots `slots`) must be exact in every checkpoint whose values they came from.
    fn mark_precise(&mut self, cur: &Path, regs: u16, slots: u64) {
        let f = cur.state.len() - 1;
        let mut bt = Backtrack::default();
        for r in bits(regs as u64 & 0x3ff) {
            if cur.state[f].regs[r].sc().is_some() {
                bt.regs[f] |= 1 << r;
            }
        }
        bt.slots[f] = slots;
        self.backtrack(bt, cur.hist, cur.parent);
    }

    fn backtrack(&mut self, mut bt: Backtrack, hist: Hist, parent: Option<usize>) {
        back_steps(&mut bt, self.insns, &self.steps, hist);
        let mut n = parent;
        while let Some(i) = n {
            if bt.is_empty() {
                return;
            }
            mark_in(&mut bt, &mut self.nodes[i].state);
            if bt.is_empty() {
                return;
            }
            let node = &self.nodes[i];
            back_steps_from(&mut bt, self.insns, &self.steps, node.hist);
            n = node.parent;
        }
    }

    /// Executes the instruction at `cur.pc`: its effect on the state, the next pc, pending
    /// branches.
    fn step(&mut self, cur: &mut Path) -> Result<Next, Stop> {
        let pc = cur.pc;
        let insn = self.insns[pc];
        let depth = cur.state.len() - 1;

        let class = insn.class();
        let mut next = Next::Go;
        let mut new_pc = pc + 1;
        match class {
            isa::BPF_ALU | isa::BPF_ALU64 => self.alu(cur, insn, class == isa::BPF_ALU64),
            isa::BPF_LD => {
                let v = if insn.src == isa::BPF_PSEUDO_MAP_FD {
                    Val::ptr(Kind::MapPtr(self.map_at.get(&pc).copied().unwrap_or(0)), 0)
                } else {
                    let hi = self.insns.get(pc + 1).map_or(0, |i| i.imm as u32 as u64);
                    Val::scalar(Sc::konst((hi << 32) | insn.imm as u32 as u64))
                };
                cur.state[depth].regs[reg_slot(insn.dst)] = v;
                new_pc = pc + 2;
            }
            isa::BPF_LDX => self.load(cur, insn),
            isa::BPF_ST | isa::BPF_STX => self.store(cur, insn),
            _ => {
                self.jumps += 1;
                let op = insn.code & 0xf0;
                if op == JmpOp::Ja as u8 {
                    new_pc = (pc as i64 + insn.off as i64 + 1) as usize;
                } else if op == JmpOp::Exit as u8 {
                    match self.exit(cur) {
                        Some(ret) => new_pc = ret,
                        None => next = Next::End,
                    }
                } else if op == JmpOp::Call as u8 {
                    if let Some(callee) = self.call(cur, insn, pc) {
                        new_pc = callee;
                    }
                } else if let Some(p) = self.branch(cur, insn, pc)? {
                    new_pc = p;
                } else {
                    next = Next::End;
                }
            }
        }
        push_step(
            &mut self.steps,
            self.limits.insns as usize,
            &mut cur.hist,
            pc,
            depth,
            self.back[pc],
        );
        cur.pc = new_pc;
        Ok(next)
    }

    fn reg(&self, cur: &Path, r: u8) -> Val {
        cur.state.last().expect("a frame").regs[reg_slot(r)]
    }

    fn set(&self, cur: &mut Path, r: u8, v: Val) {
        if r < 10 {
            cur.state.last_mut().expect("a frame").regs[r as usize] = v;
        }
    }

    fn alu(&mut self, cur: &mut Path, insn: Insn, is64: bool) {
        let op = alu_op(insn.code);
        let x = insn.code & isa::BPF_X != 0;
        let imm = Sc::konst(if is64 {
            insn.imm as i64 as u64
        } else {
            insn.imm as u32 as u64
        });
        // Most instructions are arithmetic on two scalars: read in place, without copying
        // the registers (the last arm of the `match` below).
        if !matches!(op, AluOp::Mov | AluOp::End | AluOp::Neg) {
            let regs = &cur.state.last().expect("a frame").regs;
            let b = if x { regs[reg_slot(insn.src)].sc() } else { Some(imm) };
            if let (Val::Scalar { sc: a, .. }, Some(b)) = (&regs[reg_slot(insn.dst)], b) {
                let v = Val::scalar(scalar::alu(op, *a, b, is64, insn.off == 1));
                self.set(cur, insn.dst, v);
                return;
            }
        }
        let dst = self.reg(cur, insn.dst);
        let src = if x { self.reg(cur, insn.src) } else { Val::scalar(imm) };
        let v = match op {
            AluOp::Mov => match src {
                Val::Scalar { sc, .. } if insn.off != 0 => Val::scalar(scalar::sign_extend(sc, insn.off)),
                Val::Scalar { sc, .. } if !is64 => Val::scalar(sc.low32()),
                Val::Scalar { .. } if x => self.linked(cur, insn.src),
                v @ Val::Scalar { .. } => v,
                p @ Val::Ptr(_) if is64 => p,
                _ => Val::scalar(Sc::UNKNOWN),
            },
            AluOp::End => match dst.sc() {
                Some(sc) => Val::scalar(scalar::end(
                    sc,
                    insn.imm,
                    insn.code & isa::BPF_X != 0 || class_is_alu64(insn),
                )),
                None => Val::scalar(Sc::UNKNOWN),
            },
            AluOp::Neg => Val::scalar(
                dst.sc()
                    .map_or(Sc::UNKNOWN, |a| scalar::alu(op, a, Sc::konst(0), is64, false)),
            ),
            _ => match (dst, src) {
                (Val::Scalar { sc: a, .. }, Val::Scalar { sc: b, .. }) => {
                    Val::scalar(scalar::alu(op, a, b, is64, insn.off == 1))
                }
                (Val::Ptr(p), Val::Scalar { sc, .. }) if is64 && matches!(op, AluOp::Add | AluOp::Sub) => {
                    if x {
                        self.mark_precise(cur, 1 << insn.src, 0);
                    }
                    let sc = if op == AluOp::Sub {
                        scalar::alu(AluOp::Sub, Sc::konst(0), sc, true, false)
                    } else {
                        sc
                    };
                    Val::Ptr(self.offset(p, sc))
                }
                (Val::Scalar { sc, .. }, Val::Ptr(p)) if is64 && op == AluOp::Add => {
                    self.mark_precise(cur, 1 << insn.dst, 0);
                    Val::Ptr(self.offset(p, sc))
                }
                _ => Val::scalar(Sc::UNKNOWN),
            },
        };
        self.set(cur, insn.dst, v);
    }

    /// Pointer `p` moved by `d` (the kernel's `adjust_ptr_min_max_vals`).
    fn offset(&mut self, mut p: Ptr, d: Sc) -> Ptr {
        match d.value() {
            Some(k) => p.off = p.off.wrapping_add(k as i64),
            None => {
                let var = scalar::alu(AluOp::Add, self.vars[p.var()], d, true, false);
                // (Fewer than 2^31 ranges fit in memory: the top bit stays the null flag's.)
                p.var_null = p.var_null & MAYBE_NULL | self.vars.len() as u32;
                self.vars.push(var);
                if p.kind == Kind::Pkt || p.kind == Kind::PktMeta {
                    p.id = self.new_id();
                    p.range = 0;
                }
            }
        }
        p
    }

    fn load(&mut self, cur: &mut Path, insn: Insn) {
        let size = size_bytes(insn.code);
        let signed = insn.code & 0xe0 == 0x80;
        let base = self.reg(cur, insn.src);
        let v = match base {
            Val::Ptr(p) => match p.kind {
                Kind::Stack(f) if self.vars[p.var()].value() == Some(0) => {
                    let off = p.off + insn.off as i64;
                    match (slot_of(off), size) {
                        (Some(s), 8) => match cur.state[f as usize].slot(s) {
                            Slot::Spill(v) => v,
                            Slot::Zero => Val::scalar(Sc::konst(0)),
                            _ => Val::scalar(Sc::UNKNOWN),
                        },
                        (Some(s), n) if cur.state[f as usize].slot(s) == Slot::Zero => {
                            let _ = n;
                            Val::scalar(Sc::konst(0))
                        }
                        _ => Val::scalar(Sc::loaded(size, signed)),
                    }
                }
                Kind::Ctx => self.ctx_field(p.off + insn.off as i64, size),
                _ => Val::scalar(Sc::loaded(size, signed)),
            },
            _ => Val::scalar(Sc::loaded(size, signed)),
        };
        self.set(cur, insn.dst, v);
    }

    fn ctx_field(&mut self, off: i64, size: u32) -> Val {
        let kind = match (self.hook, off) {
            (Hook::Xdp, 0) | (Hook::Tc, 76) => Kind::Pkt,
            (Hook::Xdp, 4) | (Hook::Tc, 80) => Kind::PktEnd,
            (Hook::Xdp, 8) | (Hook::Tc, 140) => Kind::PktMeta,
            (Hook::Netfilter, _) if size == 8 => Kind::Btf,
            _ => return Val::scalar(Sc::loaded(size, false)),
        };
        Val::ptr(kind, 0)
    }

    fn store(&mut self, cur: &mut Path, insn: Insn) {
        let size = size_bytes(insn.code);
        let Val::Ptr(p) = self.reg(cur, insn.dst) else {
            return;
        };
        let Kind::Stack(f) = p.kind else {
            return;
        };
        let atomic = insn.code & 0xe0 == isa::BPF_ATOMIC;
        let frame = &mut cur.state[f as usize];
        let off = p.off + insn.off as i64;
        let var = self.vars[p.var()];
        if var.value() != Some(0) || atomic {
            // A variable offset may write any byte it reaches.
            let lo = off + var.smin.max(-512);
            let hi = off + var.smax.min(512) + size as i64;
            for o in (lo..hi).step_by(8) {
                if let Some(s) = slot_of(o) {
                    frame.set_slot(s, Slot::Misc);
                }
            }
            return;
        }
        let Some(s) = slot_of(off) else { return };
        let v = if insn.class() == isa::BPF_STX && size == 8 {
            self.linked(cur, insn.src)
        } else if insn.class() == isa::BPF_STX {
            cur.state[cur.state.len() - 1].regs[reg_slot(insn.src)]
        } else {
            Val::scalar(Sc::konst(insn.imm as i64 as u64))
        };
        let frame = &mut cur.state[f as usize];
        // An 8-byte register store is a spill (precision follows it back to the register);
        // `*(u64 *)(r10 - k) = 0` makes a zero slot, as in the kernel.
        let zero = matches!(v, Val::Scalar { sc, .. } if sc.value() == Some(0));
        let stx = insn.class() == isa::BPF_STX;
        let slot = match (size, off % 8 == 0) {
            (8, true) if zero && !stx => Slot::Zero,
            (8, true) => Slot::Spill(v),
            _ if zero && frame.slot(s) == Slot::Zero => Slot::Zero,
            _ => Slot::Misc,
        };
        frame.set_slot(s, slot);
    }

    /// A call: a helper or kfunc changes r0-r5, a separately verified function returns a
    /// scalar, a static function gets a new frame (returns its first pc).
    // (Not inlined, nor `exit`: calls and exits are few of the instructions walked, and
    // inlined into `Walker::run` they made its loop slower, 0.15M instructions on cookie_guard.)
    #[inline(never)]
    fn call(&mut self, cur: &mut Path, insn: Insn, pc: usize) -> Option<usize> {
        let depth = cur.state.len() - 1;
        if insn.src == isa::BPF_PSEUDO_CALL {
            let target = (pc as i64 + insn.imm as i64 + 1) as usize;
            if let Some(params) = self.global.get(&target) {
                // Pointer arguments: the callee may write the memory they point at.
                for (i, p) in params.iter().enumerate() {
                    if *p == ParamType::ScalarPtr {
                        self.clobber_mem(cur, self.reg(cur, i as u8 + 1), Sc::konst(8));
                    }
                }
                self.clobber_caller_saved(cur);
                self.set(cur, 0, Val::scalar(Sc::UNKNOWN));
                return None;
            }
            if depth + 1 >= MAX_FRAMES {
                return None;
            }
            let mut frame = Frame::new(pc as u32, depth + 1);
            frame.regs[1..6].copy_from_slice(&cur.state[depth].regs[1..6]);
            cur.state.push(frame);
            return Some(target);
        }
        if insn.src == isa::BPF_PSEUDO_KFUNC_CALL {
            let name = self.kfunc_at.get(&pc).copied().unwrap_or("");
            let r0 = match name {
                "bpf_dynptr_slice" | "bpf_dynptr_slice_rdwr" => {
                    self.mark_precise(cur, 1 << 4, 0);
                    let buf = self.reg(cur, 3);
                    let len = self.reg(cur, 4).sc().unwrap_or(Sc::UNKNOWN);
                    self.clobber_mem(cur, buf, len);
                    self.maybe_null(Kind::Mem)
                }
                "bpf_dynptr_from_skb" => {
                    let d = self.reg(cur, 3);
                    self.clobber_mem(cur, d, Sc::konst(16));
                    Val::scalar(Sc::UNKNOWN)
                }
                _ => Val::scalar(Sc::UNKNOWN),
            };
            self.clobber_caller_saved(cur);
            self.set(cur, 0, r0);
            return None;
        }
        let id = insn.imm;
        let sizes: &[u8] = match id {
            h::SKB_STORE_BYTES | h::SKB_LOAD_BYTES | h::XDP_LOAD_BYTES | h::XDP_STORE_BYTES => &[4],
            h::CSUM_DIFF => &[2, 4],
            h::RINGBUF_OUTPUT => &[3],
            h::RINGBUF_RESERVE | h::STRNCMP | h::DYNPTR_FROM_MEM | h::DYNPTR_READ | h::TRACE_PRINTK => &[2],
            h::DYNPTR_WRITE => &[4],
            h::DYNPTR_DATA => &[3],
            _ => &[],
        };
        let mask = sizes.iter().fold(0u16, |m, r| m | 1 << r);
        if mask != 0 {
            self.mark_precise(cur, mask, 0);
        }
        match id {
            h::SKB_LOAD_BYTES | h::XDP_LOAD_BYTES => {
                let (buf, len) = (self.reg(cur, 3), self.reg(cur, 4));
                self.clobber_mem(cur, buf, len.sc().unwrap_or(Sc::UNKNOWN));
            }
            h::DYNPTR_READ => {
                let (buf, len) = (self.reg(cur, 1), self.reg(cur, 2));
                self.clobber_mem(cur, buf, len.sc().unwrap_or(Sc::UNKNOWN));
            }
            _ => {}
        }
        let r0 = match id {
            h::MAP_LOOKUP_ELEM | h::MAP_LOOKUP_PERCPU_ELEM => self.lookup(cur),
            h::RINGBUF_RESERVE => self.maybe_null(Kind::Mem),
            _ => Val::scalar(Sc::UNKNOWN),
        };
        if h::changes_packet_data(id) {
            update_vals(
                &mut cur.state,
                |f| f.ptr_slots,
                is_packet,
                |v| *v = Val::scalar(Sc::UNKNOWN),
            );
        }
        self.clobber_caller_saved(cur);
        self.set(cur, 0, r0);
        None
    }

    /// `bpf_map_lookup_elem`: a value pointer, not null when the map is an array and the key
    /// a constant inside it (the kernel then needs that key precise).
    fn lookup(&mut self, cur: &mut Path) -> Val {
        let map = match self.reg(cur, 1) {
            Val::Ptr(Ptr {
                kind: Kind::MapPtr(m), ..
            }) => m,
            _ => return Val::scalar(Sc::UNKNOWN),
        };
        let info = self.maps.get(map as usize).copied();
        let mut maybe_null = true;
        if let (Some(info), Val::Ptr(p)) = (info, self.reg(cur, 2)) {
            if let (true, Kind::Stack(f), Some(s)) = (info.kind.is_array(), p.kind, slot_of(p.off)) {
                let key = match cur.state[f as usize].slot(s) {
                    Slot::Zero => Some(0),
                    Slot::Spill(Val::Scalar { sc, .. }) => sc.value().map(|v| v & 0xffff_ffff),
                    _ => None,
                };
                if let Some(k) = key {
                    // The kernel relies on the key's value, so it needs the spilled key exact.
                    let top = f as usize == cur.state.len() - 1;
                    if p.off % 8 == 0 && top && matches!(cur.state[f as usize].slot(s), Slot::Spill(_)) {
                        self.mark_precise(cur, 0, 1 << s);
                    }
                    maybe_null = k >= info.max_entries as u64;
                }
            }
        }
        let id = self.new_id();
        let mut p = Ptr {
            id,
            ..ptr_of(Kind::MapValue(map))
        };
        p.set_maybe_null(maybe_null);
        Val::Ptr(p)
    }

    /// A copy of scalar register `r`, linked to it (an unknown value gets an id first).
    fn linked(&mut self, cur: &mut Path, r: u8) -> Val {
        let f = cur.state.len() - 1;
        if let Val::Scalar { sc, id: id @ 0, .. } = &mut cur.state[f].regs[reg_slot(r)] {
            if sc.value().is_none() {
                self.next_id += 1;
                *id = self.next_id;
            }
        }
        cur.state[f].regs[reg_slot(r)]
    }

    fn clobber_caller_saved(&self, cur: &mut Path) {
        for r in 1..6 {
            self.set(cur, r, Val::Uninit);
        }
    }

    /// Stack bytes written through `ptr` (up to `len`) lose what they held.
    fn clobber_mem(&self, cur: &mut Path, ptr: Val, len: Sc) {
        let Val::Ptr(
            p @ Ptr {
                kind: Kind::Stack(f),
                off,
                ..
            },
        ) = ptr
        else {
            return;
        };
        let var = self.vars[p.var()];
        let lo = off + var.smin.max(-512);
        let hi = off + var.smax.min(512) + len.umax.min(512) as i64;
        for o in (lo..hi).step_by(8) {
            if let Some(s) = slot_of(o) {
                cur.state[f as usize].set_slot(s, Slot::Misc);
            }
        }
    }

    /// `exit`: the return pc in the caller, or None at the end of a program.
    #[inline(never)]
    fn exit(&mut self, cur: &mut Path) -> Option<usize> {
        if cur.state.len() == 1 {
            if self.hook == Hook::Netfilter && !self.in_subfunction {
                // The kernel checks the verdict's range, so it needs r0 exact.
                self.mark_precise(cur, 1, 0);
            }
            return None;
        }
        let callee = cur.state.pop().expect("a frame");
        let r0 = callee.regs[0];
        self.clobber_caller_saved(cur);
        self.set(cur, 0, r0);
        // Pointers into the callee's frame are dangling now (the kernel refuses their use).
        let depth = cur.state.len();
        update_vals(
            &mut cur.state,
            |f| f.ptr_slots,
            |v| matches!(v, Val::Ptr(Ptr { kind: Kind::Stack(f), .. }) if *f as usize >= depth),
            |v| *v = Val::scalar(Sc::UNKNOWN),
        );
        Some(callee.callsite as usize + 1)
    }

    /// A conditional jump: the pc to continue at (None when neither way is possible); the
    /// other way, if possible too, is pushed.
    fn branch(&mut self, cur: &mut Path, insn: Insn, pc: usize) -> Result<Option<usize>, Stop> {
        let op = runtime_bpf::interp::alu::jmp_cond(insn.code);
        let is32 = insn.class() == isa::BPF_JMP32;
        let x = insn.code & isa::BPF_X != 0;
        let a = self.reg(cur, insn.dst);
        let b = if x {
            self.reg(cur, insn.src)
        } else {
            Val::scalar(Sc::konst(insn.imm as i64 as u64))
        };
        let target = (pc as i64 + insn.off as i64 + 1) as usize;
        let taken = match (a, b) {
            (Val::Scalar { sc: sa, .. }, Val::Scalar { sc: sb, .. }) => {
                let (va, vb) = if is32 { (sa.low32(), sb.low32()) } else { (sa, sb) };
                let t = op.and_then(|op| scalar::decide(op, &va, &vb));
                if t.is_some() {
                    let mask = (1u16 << insn.dst) | if x { 1 << insn.src } else { 0 };
                    self.mark_precise(cur, mask, 0);
                }
                t
            }
            (Val::Ptr(p), Val::Scalar { sc, .. }) | (Val::Scalar { sc, .. }, Val::Ptr(p))
                if sc.value() == Some(0) && !p.maybe_null() && matches!(op, Some(JmpOp::Jeq | JmpOp::Jne)) =>
            {
                Some(op == Some(JmpOp::Jne))
            }
            _ => None,
        };
        if let Some(t) = taken {
            return Ok(Some(if t { target } else { pc + 1 }));
        }
        let mut other = Path {
            pc: cur.pc,
            state: self.copy_state(&cur.state),
            parent: cur.parent,
            hist: cur.hist,
        };
        // A state stays possible when a narrowing writes no empty range into it: the test of
        // every register is then made once for both ways, not after each.
        let was_possible = possible(&cur.state);
        let (mut other_possible, mut this_possible) = (was_possible, was_possible);
        if let Some(op) = op {
            let kept = self.narrow(&mut other, insn, op, x, is32);
            other_possible = kept && was_possible || possible(&other.state);
            let kept = self.narrow(cur, insn, op.negate(), x, is32);
            this_possible = kept && was_possible || possible(&cur.state);
        }
        match (this_possible, other_possible) {
            (true, true) => {
                other.pc = target;
                let frame = cur.state.len() - 1;
                push_step(
                    &mut self.steps,
                    self.limits.insns as usize,
                    &mut other.hist,
                    pc,
                    frame,
                    self.back[pc],
                );
                if let Some(p) = other.parent {
                    self.nodes[p].branches += 1;
                }
                make_room(&mut self.pending, self.limits.pending + 1);
                self.pending.push(other);
                self.max_pending = self.max_pending.max(self.pending.len());
                if self.pending.len() > self.limits.pending {
                    return Err(Stop::Limit(Verdict::TooManyJumps));
                }
                Ok(Some(pc + 1))
            }
            (true, false) => {
                self.recycle(other.state);
                Ok(Some(pc + 1))
            }
            (false, true) => {
                let this = std::mem::replace(cur, other);
                self.recycle(this.state);
                Ok(Some(target))
            }
            (false, false) => {
                self.recycle(other.state);
                Ok(None)
            }
        }
    }

    /// What `dst op src` holding tells about the registers (ranges, null tests, packet
    /// bounds). False when it may have written an empty range (the way is then impossible).
    fn narrow(&mut self, path: &mut Path, insn: Insn, op: JmpOp, x: bool, is32: bool) -> bool {
        let f = path.state.len() - 1;
        // (Read in place: a register is 40 bytes, most of which a compare does not need.)
        let regs = &path.state[f].regs;
        let imm = Val::scalar(Sc::konst(insn.imm as i64 as u64));
        let b = if x { &regs[reg_slot(insn.src)] } else { &imm };
        match (&regs[reg_slot(insn.dst)], b) {
            (&Val::Scalar { sc: mut sa, id: ia, .. }, &Val::Scalar { sc: mut sb, id: ib, .. }) if !is32 => {
                // (A constant's narrowed range is not kept: it is not synced.)
                scalar::refine_unsynced(op, &mut sa, &mut sb);
                let sa = sa.sync();
                set_range(path, insn.dst, ia, sa);
                if !x {
                    return !sa.is_empty();
                }
                let sb = sb.sync();
                set_range(path, insn.src, ib, sb);
                return !sa.is_empty() && !sb.is_empty();
            }
            (&Val::Ptr(p), Val::Scalar { sc, .. }) if p.maybe_null() && sc.value() == Some(0) => match op {
                JmpOp::Jeq => set_null(&mut path.state, p.id, true),
                JmpOp::Jne => set_null(&mut path.state, p.id, false),
                _ => {}
            },
            (&Val::Ptr(p), Val::Ptr(e)) if p.kind == Kind::Pkt && e.kind == Kind::PktEnd => {
                packet_bound(&mut path.state, p, self.vars[p.var()], op)
            }
            (Val::Ptr(e), &Val::Ptr(p)) if p.kind == Kind::Pkt && e.kind == Kind::PktEnd => {
                packet_bound(&mut path.state, p, self.vars[p.var()], op.swap())
            }
            _ => {}
        }
        true
    }
}

/// Register `r` (and every copy linked to it by `id`) now holds values in `sc`.
fn set_range(path: &mut Path, r: u8, id: u32, sc: Sc) {
    let f = path.state.len() - 1;
    if let Val::Scalar { sc: s, .. } = &mut path.state[f].regs[reg_slot(r)] {
        *s = sc;
    }
    if id == 0 {
        return;
    }
    update_vals(
        &mut path.state,
        |f| f.linked_slots,
        |v| matches!(v, Val::Scalar { sc: s, id: i, .. } if *i == id && *s != sc),
        |v| {
            if let Val::Scalar { sc: s, .. } = v {
                *s = sc;
            }
        },
    );
}

/// `pkt op pkt_end` holds: packet pointers like `pkt` (whose variable offset is `var`) may
/// access up to its offset.
fn packet_bound(state: &mut State, p: Ptr, var: Sc, op: JmpOp) {
    let range = match op {
        JmpOp::Jle => p.off,
        JmpOp::Jlt => p.off + 1,
        _ => return,
    };
    if p.off < 0 || var.umax > 0xffff {
        return;
    }
    update_vals(
        state,
        |f| f.ptr_slots,
        |v| matches!(v, Val::Ptr(q) if q.kind == Kind::Pkt && q.id == p.id && q.range < range),
        |v| {
            if let Val::Ptr(q) = v {
                q.range = range;
            }
        },
    );
}

/// A null test of pointer `id` went one way.
fn set_null(state: &mut State, id: u32, null: bool) {
    update_vals(
        state,
        |f| f.ptr_slots,
        |v| matches!(v, Val::Ptr(q) if q.maybe_null() && q.id == id),
        |v| match v {
            Val::Ptr(q) if !null => q.set_maybe_null(false),
            _ => *v = Val::scalar(Sc::konst(0)),
        },
    );
}

/// Applies `change` to every register and spilled value that `wants`, among the slots
/// `slots` gives of each frame (those that can hold a wanted value: most slots cannot); the
/// test comes first so that a spilled value is neither copied out to be looked at nor,
/// unless it changes, a stack shared with other states copied.
fn update_vals(state: &mut State, slots: fn(&Frame) -> u64, wants: impl Fn(&Val) -> bool, change: impl Fn(&mut Val)) {
    for frame in state.iter_mut() {
        for v in frame.regs.iter_mut() {
            if wants(v) {
                change(v);
            }
        }
        let wanted = |s: &Slot| matches!(s, Slot::Spill(v) if wants(v));
        let candidates = slots(frame);
        let Some(first) = bits(candidates).find(|&i| wanted(&frame.stack[i])) else {
            continue;
        };
        let stack = Rc::make_mut(&mut frame.stack);
        let (mut ptrs, mut linked) = (frame.ptr_slots, frame.linked_slots);
        // The candidates from the first wanted one on.
        for i in bits(candidates >> first << first) {
            if let Slot::Spill(v) = &mut stack[i] {
                if wants(v) {
                    change(v);
                    (ptrs, linked) = mark_slot(ptrs, linked, i, &stack[i]);
                }
            }
        }
        (frame.ptr_slots, frame.linked_slots) = (ptrs, linked);
    }
}

/// A state whose ranges are all non-empty (a refinement that empties one is a dead branch).
fn possible(state: &State) -> bool {
    // (r10, the frame pointer, is never a scalar.)
    state.last().is_none_or(|f| {
        f.regs[..10]
            .iter()
            .all(|v| !matches!(v, Val::Scalar { sc, .. } if sc.is_empty()))
    })
}

fn is_packet(v: &Val) -> bool {
    matches!(v, Val::Ptr(p) if matches!(p.kind, Kind::Pkt | Kind::PktEnd | Kind::PktMeta))
}

/// The kernel's `regsafe` (not exact): anything `cur` holds is allowed where `old` was.
#[inline]
fn val_covers(vars: &[Sc], old: &Val, cur: &Val) -> bool {
    match (old, cur) {
        (Val::Uninit, _) => true,
        (Val::Scalar { sc: o, precise, .. }, Val::Scalar { sc: c, .. }) => !precise || o.contains(c),
        (Val::Ptr(o), Val::Ptr(c)) => {
            o.kind == c.kind
                && o.off == c.off
                && o.maybe_null() == c.maybe_null()
                && (o.var() == c.var() || vars[o.var()].contains(&vars[c.var()]))
                && match o.kind {
                    Kind::Pkt | Kind::PktMeta => o.range <= c.range,
                    _ => true,
                }
        }
        _ => false,
    }
}

/// The kernel's `stacksafe` for one slot (misc and uninitialised slots of `old` allow
/// anything: luabpf programs load with CAP_BPF and CAP_PERFMON).
fn slot_covers(vars: &[Sc], old: &Slot, cur: &Slot) -> bool {
    match (old, cur) {
        (Slot::Invalid | Slot::Misc, _) => true,
        (Slot::Zero, Slot::Zero) => true,
        (Slot::Spill(o @ Val::Scalar { .. }), Slot::Misc) => val_covers(vars, o, &Val::scalar(Sc::UNKNOWN)),
        (Slot::Spill(o @ Val::Scalar { .. }), Slot::Zero) => val_covers(vars, o, &Val::scalar(Sc::konst(0))),
        (Slot::Spill(o), Slot::Spill(c)) => val_covers(vars, o, c),
        _ => false,
    }
}

/// Marks the registers and slots of `bt` precise in a checkpoint's state; those already
/// precise there (and non-scalars) need not be followed further back.
fn mark_in(bt: &mut Backtrack, state: &mut State) {
    for f in 0..MAX_FRAMES {
        let Some(frame) = state.get_mut(f) else {
            bt.regs[f] = 0;
            bt.slots[f] = 0;
            continue;
        };
        for r in bits(bt.regs[f] as u64 & 0x7ff) {
            match &mut frame.regs[r] {
                Val::Scalar { precise: p @ false, .. } => {
                    *p = true;
                    frame.precise_regs |= 1 << r;
                }
                _ => bt.regs[f] &= !(1 << r),
            }
        }
        for s in bits(bt.slots[f]) {
            match frame.slot(s) {
                Slot::Spill(Val::Scalar { precise: false, .. }) => {
                    if let Slot::Spill(Val::Scalar { precise, .. }) = &mut Rc::make_mut(&mut frame.stack)[s] {
                        *precise = true;
                        frame.precise_slots |= 1 << s;
                    }
                }
                _ => bt.slots[f] &= !(1 << s),
            }
        }
    }
}

/// The indexes of the bits set in `m`, lowest first.
fn bits(mut m: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (m != 0).then(|| {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            i
        })
    })
}

/// `back_step` over a history, latest first; once nothing is left to follow, the rest of it
/// would change nothing.
fn back_steps(bt: &mut Backtrack, insns: &[Insn], arena: &[Linked], hist: Hist) {
    // (Only `back_step` changes `bt`: emptiness is tested after it, not on every step.)
    if !bt.is_empty() {
        back_steps_from(bt, insns, arena, hist);
    }
}

/// `back_steps` of a backtrack known not to be empty.
#[inline]
fn back_steps_from(bt: &mut Backtrack, insns: &[Insn], arena: &[Linked], hist: Hist) {
    // Most steps touch nothing being followed: their mask tells so without decoding them.
    // Most run in the outermost frame, whose wanted bits are kept at hand (a step of frame 0
    // has no frame bits in its mask).
    let mut wanted_0 = bt.wanted(0);
    let mut at = hist.latest;
    while let Some(l) = arena.get(at as usize) {
        at = l.prev;
        // (One test for the commonest step: of the outermost frame, touching nothing wanted.)
        if l.mask & (wanted_0 | FRAME_BITS) == 0 {
            continue;
        }
        let f = l.frame();
        let wanted = if f == 0 { wanted_0 } else { bt.wanted(f) };
        if l.mask & wanted != 0 {
            back_step(bt, insns[l.pc as usize], f);
            wanted_0 = bt.wanted(0);
            // (Marks left in the step's frame: not empty, without looking at the others.)
            if bt.wanted(f) == BACK_ALWAYS && bt.is_empty() {
                return;
            }
        }
    }
}

/// `back_mask`: the step may change the marks of other frames (calls, exits).
const BACK_ALWAYS: u32 = 1 << 16;
/// `back_mask`: the step stores to the stack (it matters when a slot of its frame is marked).
const BACK_STACK: u32 = 1 << 17;

/// When `back_step` over `insn` can change a backtrack: the registers of its frame whose
/// marks it reads (low 16 bits), or `BACK_ALWAYS`, or `BACK_STACK`. With none of those
/// marked, it returns at once (or clears a bit that is already clear).
fn back_mask(insn: Insn) -> u32 {
    let (d, s) = (insn.dst as u32 & 15, insn.src as u32 & 15);
    let x = insn.code & isa::BPF_X != 0;
    match insn.class() {
        isa::BPF_ALU | isa::BPF_ALU64 | isa::BPF_LD | isa::BPF_LDX => 1 << d,
        isa::BPF_ST | isa::BPF_STX => {
            if d == 10 && slot_of(insn.off as i64).is_some() {
                BACK_STACK
            } else {
                0
            }
        }
        _ => {
            let op = insn.code & 0xf0;
            if op == JmpOp::Call as u8 || op == JmpOp::Exit as u8 {
                BACK_ALWAYS
            } else if op != JmpOp::Ja as u8 && x {
                (1 << d) | (1 << s)
            } else {
                0
            }
        }
    }
}

/// The steps kept of a path's history, latest first: their pcs and frames.
#[cfg(test)]
fn history(arena: &[Linked], hist: Hist) -> impl Iterator<Item = (u32, usize)> + '_ {
    let mut at = hist.latest;
    std::iter::from_fn(move || {
        let l = arena.get(at as usize)?;
        at = l.prev;
        Some((l.pc, l.frame()))
    })
}

/// One instruction of the kernel's `backtrack_insn`, run backwards: which earlier registers
/// and slots the marked ones came from.
fn back_step(bt: &mut Backtrack, insn: Insn, frame: usize) {
    let f = frame.min(MAX_FRAMES - 1);
    let regs = &mut bt.regs[f];
    let (d, s) = (insn.dst as usize & 15, insn.src as usize & 15);
    let x = insn.code & isa::BPF_X != 0;
    match insn.class() {
        isa::BPF_ALU | isa::BPF_ALU64 => {
            if *regs & (1 << d) == 0 {
                return;
            }
            let op = alu_op(insn.code);
            if op == AluOp::Mov {
                *regs &= !(1 << d);
            }
            if x && !matches!(op, AluOp::Neg | AluOp::End) {
                *regs |= 1 << s;
            }
        }
        isa::BPF_LD => *regs &= !(1 << d),
        isa::BPF_LDX => {
            if *regs & (1 << d) == 0 {
                return;
            }
            *regs &= !(1 << d);
            if s == 10 {
                if let Some(slot) = slot_of(insn.off as i64) {
                    bt.slots[f] |= 1 << slot;
                }
            }
        }
        isa::BPF_ST | isa::BPF_STX => {
            if d != 10 {
                return;
            }
            let Some(slot) = slot_of(insn.off as i64) else { return };
            if bt.slots[f] & (1 << slot) == 0 {
                return;
            }
            bt.slots[f] &= !(1 << slot);
            if insn.class() == isa::BPF_STX {
                *regs |= 1 << s;
            }
        }
        _ => {
            let op = insn.code & 0xf0;
            if op == JmpOp::Call as u8 {
                if insn.src == isa::BPF_PSEUDO_CALL
                    && f + 1 < MAX_FRAMES
                    && (bt.regs[f + 1] != 0 || bt.slots[f + 1] != 0)
                {
                    // Back from the callee's first instruction to the call: its r1-r5 are ours.
                    let args = bt.regs[f + 1] & 0x3e;
                    bt.regs[f + 1] = 0;
                    bt.slots[f + 1] = 0;
                    bt.regs[f] = (bt.regs[f] & !1) | args;
                } else {
                    bt.regs[f] &= !0x3f;
                }
            } else if op == JmpOp::Exit as u8 {
                // Back into a callee from after its return: our r0 is its r0.
                if f > 0 && bt.regs[f - 1] & 1 != 0 {
                    bt.regs[f - 1] &= !1;
                    bt.regs[f] |= 1;
                }
            } else if op != JmpOp::Ja as u8 && x && *regs & ((1 << d) | (1 << s)) != 0 {
                *regs |= (1 << d) | (1 << s);
            }
        }
    }
}

fn alu_op(code: u8) -> AluOp {
    runtime_bpf::interp::alu::alu_op(code).unwrap_or(AluOp::End)
}

fn class_is_alu64(insn: Insn) -> bool {
    insn.class() == isa::BPF_ALU64
}

fn size_bytes(code: u8) -> u32 {
    match code & 0x18 {
        isa::BPF_B => 1,
        isa::BPF_H => 2,
        isa::BPF_W => 4,
        _ => 8,
    }
}

/// The kernel's prune points: conditional jumps and their targets, targets of `goto`, the
/// instruction after a call, local calls.
fn prune_points(insns: &[Insn]) -> Vec<bool> {
    let mut p = vec![false; insns.len() + 2];
    let mut i = 0;
    while i < insns.len() {
        let insn = insns[i];
        let class = insn.class();
        if class == isa::BPF_JMP || class == isa::BPF_JMP32 {
            let op = insn.code & 0xf0;
            let target = (i as i64 + insn.off as i64 + 1).clamp(0, insns.len() as i64) as usize;
            if op == JmpOp::Call as u8 {
                p[i + 1] = true;
                if insn.src == isa::BPF_PSEUDO_CALL {
                    p[i] = true;
                }
            } else if op == JmpOp::Ja as u8 {
                p[target] = true;
            } else if op != JmpOp::Exit as u8 {
                p[i] = true;
                p[target] = true;
            }
        }
        i += if insn.is_ld_imm64() { 2 } else { 1 };
    }
    p.truncate(insns.len());
    p
}

/// Registers each instruction reads, and writes (for the liveness below).
fn uses_defs(insn: Insn) -> (u16, u16) {
    let (d, s) = (1u16 << (insn.dst & 15), 1u16 << (insn.src & 15));
    let x = insn.code & isa::BPF_X != 0;
    match insn.class() {
        isa::BPF_ALU | isa::BPF_ALU64 => {
            let op = alu_op(insn.code);
            let src = if x && !matches!(op, AluOp::Neg | AluOp::End) {
                s
            } else {
                0
            };
            (src | if op == AluOp::Mov { 0 } else { d }, d)
        }
        isa::BPF_LD => (0, d),
        isa::BPF_LDX => (s, d),
        isa::BPF_ST => (d, 0),
        isa::BPF_STX => (d | s, if insn.code & 0xe0 == isa::BPF_ATOMIC { s | 1 } else { 0 }),
        _ => {
            let op = insn.code & 0xf0;
            if op == JmpOp::Call as u8 {
                let args = if insn.src == 0 {
                    h::HELPERS
                        .get((insn.imm as usize).wrapping_sub(1))
                        .map_or(5, |h| if h.variadic { 5 } else { h.args })
                } else {
                    5
                };
                (((1u16 << (args + 1)) - 1) & !1, 0x3f)
            } else if op == JmpOp::Exit as u8 {
                (1, 0)
            } else if op == JmpOp::Ja as u8 {
                (0, 0)
            } else {
                (d | if x { s } else { 0 }, 0)
            }
        }
    }
}

/// Registers live before each instruction, r0-r9 (the kernel's `compute_live_registers`):
/// a checkpoint compares only those.
fn live_registers(insns: &[Insn]) -> Vec<u16> {
    let n = insns.len();
    let mut live = vec![0u16; n];
    // The successors of each instruction (`NONE` for none) and its uses and definitions,
    // computed once: the fixpoint below visits every instruction several times.
    const NONE: usize = usize::MAX;
    let succ: Vec<[usize; 2]> = (0..n)
        .map(|i| {
            let insn = insns[i];
            let class = insn.class();
            let next = i + if insn.is_ld_imm64() { 2 } else { 1 };
            if class == isa::BPF_JMP || class == isa::BPF_JMP32 {
                let op = insn.code & 0xf0;
                let target = (i as i64 + insn.off as i64 + 1) as usize;
                if op == JmpOp::Exit as u8 {
                    return [NONE; 2];
                } else if op == JmpOp::Ja as u8 {
                    return [target, NONE];
                } else if op != JmpOp::Call as u8 {
                    return [next, target];
                }
            }
            [next, NONE]
        })
        .collect();
    let uses_defs: Vec<(u16, u16)> = insns.iter().map(|i| uses_defs(*i)).collect();
    let mut changed = true;
    while changed {
        changed = false;
        for i in (0..n).rev() {
            let out = succ[i].iter().filter(|&&j| j < n).fold(0u16, |m, &j| m | live[j]);
            let (u, d) = uses_defs[i];
            let v = (u | (out & !d)) & 0x3ff;
            if v != live[i] {
                live[i] = v;
                changed = true;
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_bpf::isa::{Reg, R0, R1, R2};

    fn code(insns: Vec<Insn>) -> ProgramCode {
        ProgramCode {
            name: "t".into(),
            section: "xdp".into(),
            locs: vec![Default::default(); insns.len()],
            insns,
            map_relocs: vec![],
            kfunc_relocs: vec![],
            subfunctions: vec![],
        }
    }

    const LIMITS: Limits = Limits {
        insns: 1_000_000,
        pending: 8192,
    };

    #[test]
    fn forked_paths_share_the_steps_before_the_fork() {
        let mut arena = Vec::new();
        let mut a = Hist::EMPTY;
        push_step(&mut arena, 0, &mut a, 0, 0, 1);
        push_step(&mut arena, 0, &mut a, 1, 0, 1);
        let mut b = a;
        push_step(&mut arena, 0, &mut a, 2, 0, 1);
        push_step(&mut arena, 0, &mut b, 7, 1, 1);
        // A step backtracking cannot change anything through counts but is not kept.
        push_step(&mut arena, 0, &mut b, 8, 1, 0);
        let steps = |h| history(&arena, h).collect::<Vec<_>>();
        assert_eq!(steps(a), [(2, 0), (1, 0), (0, 0)]);
        assert_eq!(steps(b), [(7, 1), (1, 0), (0, 0)]);
        assert_eq!((a.len, b.len, arena.len()), (3, 4, 4));
        assert!(steps(Hist::EMPTY).is_empty());
    }

    /// A frame's sets of pointer and linked-scalar slots stay those its stack holds through
    /// random spills and the updates that look only at them (null tests, packet bounds,
    /// linked ranges), and those updates change every slot they would have found by a scan.
    #[test]
    fn slot_sets_follow_the_stack() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let sets = |f: &Frame| {
            let mut all = (0, 0);
            for (i, s) in f.stack.iter().enumerate() {
                all = mark_slot(all.0, all.1, i, s);
            }
            all
        };
        for _ in 0..200 {
            let mut state = vec![Frame::new(u32::MAX, 0), Frame::new(3, 1)];
            for _ in 0..60 {
                let r = next();
                let f = (r % 2) as usize;
                let id = (r >> 8) as u32 % 4;
                let val = match (r >> 4) % 5 {
                    0 => Val::scalar(Sc::konst(r >> 32)),
                    1 => Val::Scalar {
                        sc: Sc::UNKNOWN,
                        precise: false,
                        id,
                    },
                    2 => Val::Ptr(Ptr {
                        id,
                        var_null: NO_VAR | MAYBE_NULL,
                        ..ptr_of(Kind::MapValue(0))
                    }),
                    _ => Val::Ptr(Ptr {
                        id,
                        off: (r >> 16) as i64 % 8,
                        ..ptr_of(Kind::Pkt)
                    }),
                };
                let slot = match (r >> 12) % 6 {
                    0 => Slot::Misc,
                    1 => Slot::Zero,
                    _ => Slot::Spill(val),
                };
                let shared = state.clone();
                state[f].set_slot((r >> 20) as usize % SLOTS, slot);
                let off = (r >> 44) as i64 % 8;
                let left: fn(&Val, u32, i64) -> bool = match (r >> 28) % 4 {
                    0 => {
                        set_null(&mut state, id, r >> 40 & 1 == 0);
                        |v, id, _| matches!(v, Val::Ptr(q) if q.maybe_null() && q.id == id)
                    }
                    1 => {
                        let p = Ptr {
                            id,
                            off,
                            ..ptr_of(Kind::Pkt)
                        };
                        packet_bound(&mut state, p, Sc::konst(0), JmpOp::Jle);
                        |v, id, off| matches!(v, Val::Ptr(q) if q.kind == Kind::Pkt && q.id == id && q.range < off)
                    }
                    2 => {
                        let mut path = Path {
                            pc: 0,
                            state: std::mem::take(&mut state),
                            parent: None,
                            hist: Hist::EMPTY,
                        };
                        set_range(&mut path, 0, id, Sc::konst(1));
                        state = path.state;
                        |v, id, _| {
                            id != 0 && matches!(v, Val::Scalar { sc, id: i, .. } if *i == id && *sc != Sc::konst(1))
                        }
                    }
                    _ => |_, _, _| false,
                };
                drop(shared);
                for frame in &state {
                    assert_eq!((frame.ptr_slots, frame.linked_slots), sets(frame));
                    assert!(!frame
                        .stack
                        .iter()
                        .any(|s| matches!(s, Slot::Spill(v) if left(v, id, off))));
                }
            }
        }
    }

    /// The walk runs on the compiler's own code, but must not panic on any instructions.
    /// A small deterministic generator of random words.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn instruction_soup_never_panics() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..300 {
            let n = 1 + next() % 40;
            let insns: Vec<Insn> = (0..n)
                .map(|_| {
                    let r = next();
                    Insn::new(
                        r as u8,
                        (r >> 8) as u8 % 12,
                        (r >> 16) as u8 % 12,
                        (r >> 24) as i16 % 8,
                        (r >> 40) as i32,
                    )
                })
                .collect();
            let mut c = code(insns);
            c.map_relocs.push((0, 3));
            let limits = Limits {
                insns: 10_000,
                pending: 100,
            };
            walk(&c, &[], Hook::Tc, limits);
        }
    }

    /// `back_steps` skips the steps whose `back_mask` says nothing followed is touched: on
    /// any instruction and marks, those are exactly steps that `back_step` leaves alone.
    #[test]
    fn a_step_back_mask_skips_only_steps_that_change_nothing() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        let mut skipped = 0;
        for _ in 0..200_000 {
            let r = next();
            let insn = Insn::new(
                r as u8,
                (r >> 8) as u8 % 16,
                (r >> 12) as u8 % 16,
                -((r >> 16) as i16 % 600),
                0,
            );
            let m = next();
            let sparse = |v: u64| if v & 1 == 0 { v & (v >> 7) & (v >> 13) } else { 0 };
            let mut bt = Backtrack::default();
            for f in 0..MAX_FRAMES {
                bt.regs[f] = sparse(m.rotate_left(f as u32 * 8)) as u16;
                bt.slots[f] = sparse(m.rotate_left(f as u32 * 5 + 3));
            }
            let frame = (next() % 9) as usize;
            let f = frame.min(MAX_FRAMES - 1);
            let mask = back_mask(insn);
            if mask & bt.wanted(f) != 0 {
                continue;
            }
            skipped += 1;
            let (regs, slots) = (bt.regs, bt.slots);
            back_step(&mut bt, insn, frame);
            assert_eq!((bt.regs, bt.slots), (regs, slots), "{insn:?} in frame {frame}");
        }
        assert!(skipped > 10_000, "{skipped}");
    }

    #[test]
    fn an_operand_names_its_register_modulo_eleven() {
        for r in 0..=255u8 {
            assert_eq!(reg_slot(r), r as usize % 11);
        }
    }

    #[test]
    fn a_long_list_gets_its_room_at_once() {
        let push = |list: &mut Vec<u32>, n: usize| {
            for i in 0..n {
                make_room(list, 100_000);
                list.push(i as u32);
            }
        };
        // Short: it grows as a Vec does.
        let mut short = Vec::new();
        push(&mut short, 100);
        assert!(short.capacity() < LONG, "{}", short.capacity());
        // Past `LONG`: one growth, to its room.
        let mut long = Vec::with_capacity(LONG);
        push(&mut long, LONG + 1);
        assert_eq!(long.capacity(), 100_000);
        // Past its room: it doubles again.
        push(&mut long, 100_000);
        assert!(long.capacity() >= 200_000, "{}", long.capacity());
    }

    #[test]
    fn a_constant_loop_is_walked_once_per_iteration() {
        // r0 = 0; r1 = 0; loop: r1 += 1; if r1 < 10 goto loop; exit
        let c = code(vec![
            Insn::mov64_imm(R0, 0),
            Insn::mov64_imm(R1, 0),
            Insn::alu64_imm(AluOp::Add, R1, 1),
            Insn::jmp_imm(JmpOp::Jlt, R1, 10, -2),
            Insn::exit(),
        ]);
        let w = walk(&c, &[], Hook::Xdp, LIMITS);
        assert_eq!(w.verdict, Verdict::Fits);
        assert_eq!(w.processed, 2 + 2 * 10 + 1);
    }

    #[test]
    fn unknown_values_joined_after_a_branch_are_pruned() {
        // Sixteen diamonds on an unknown r2, each setting r0 to 0 or 1 then dropping it.
        let mut insns = vec![Insn::load(runtime_bpf::isa::Size::W, R2, R1, 16)];
        for _ in 0..16 {
            insns.push(Insn::jmp_imm(JmpOp::Jeq, R2, 7, 2));
            insns.push(Insn::mov64_imm(R0, 1));
            insns.push(Insn::ja(1));
            insns.push(Insn::mov64_imm(R0, 2));
        }
        insns.push(Insn::mov64_imm(R0, 2));
        insns.push(Insn::exit());
        let w = walk(&code(insns), &[], Hook::Xdp, LIMITS);
        assert!(w.processed < 200, "{}", w.processed);
    }

    #[test]
    fn pointers_moved_alike_on_two_paths_are_pruned() {
        // Sixteen diamonds moving a packet pointer by the same unknown amount on both arms:
        // the arms' variable offsets are two entries of the walk's table (`vars`), of equal
        // ranges, which cover each other.
        use runtime_bpf::isa::Size;
        let mut insns = vec![
            Insn::load(Size::W, R2, R1, 0),
            Insn::load(Size::W, Reg(3), R1, 16),
            Insn::alu64_imm(AluOp::And, Reg(3), 15),
        ];
        for _ in 0..16 {
            insns.push(Insn::load(Size::W, Reg(4), R1, 16));
            insns.push(Insn::jmp_imm(JmpOp::Jeq, Reg(4), 7, 2));
            insns.push(Insn::alu64_reg(AluOp::Add, R2, Reg(3)));
            insns.push(Insn::ja(1));
            insns.push(Insn::alu64_reg(AluOp::Add, R2, Reg(3)));
        }
        insns.push(Insn::load(Size::B, R0, R2, 0));
        insns.push(Insn::exit());
        let w = walk(&code(insns), &[], Hook::Xdp, LIMITS);
        assert!(w.processed < 400, "{}", w.processed);
    }

    #[test]
    fn constants_that_decide_later_branches_multiply_the_paths() {
        // Each diamond leaves r3 = 0 or 1 in a different bit, and at the end each value of r3
        // is compared with a constant: the verifier needs r3 exact, so no path merges.
        let mut insns = vec![
            Insn::load(runtime_bpf::isa::Size::W, R2, R1, 16),
            Insn::mov64_imm(Reg(3), 0),
        ];
        for k in 0..12 {
            insns.push(Insn::jmp_imm(JmpOp::Jset, R2, 1 << k, 1));
            insns.push(Insn::alu64_imm(AluOp::Or, Reg(3), 1 << k));
        }
        insns.push(Insn::jmp_imm(JmpOp::Jeq, Reg(3), 5, 0));
        insns.push(Insn::mov64_imm(R0, 2));
        insns.push(Insn::exit());
        let w = walk(&code(insns), &[], Hook::Xdp, LIMITS);
        assert!(w.processed > 4096, "{}", w.processed);
    }
}
