//! The instruction loop: one [`Run`] per program invocation, with its registers, its call
//! frames (each with its own 512-byte stack), the packet and the context.

use std::collections::HashMap;
use std::sync::Arc;

use super::alu::{alu32, alu64, alu_op, byte_order, cond32, cond64, jmp_cond, sign_extend};
use super::netfilter::Dynptr;
use super::value::{Ptr, Region, Value};
use super::{InterpError, Machine, RunResult, MAX_CALL_FRAMES, XDP_MAX_LINEAR};
use crate::isa::{
    AluOp, Insn, BPF_ALU, BPF_ALU64, BPF_ATOMIC, BPF_JMP, BPF_JMP32, BPF_LD, BPF_LDX, BPF_MEM, BPF_PSEUDO_CALL,
    BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_FD, BPF_ST, BPF_STX, BPF_X, STACK_SIZE,
};
use crate::progtypes::ProgType;

/// `BPF_MEMSX`: sign-extending loads (cpu v4).
const BPF_MEMSX: u8 = 0x80;
const FRAME: usize = STACK_SIZE as usize;

/// One call's stack frame.
pub(super) struct Frame {
    pub id: u32,
    pub bytes: Box<[u8; FRAME]>,
    /// Which bytes were written (reading others is reading uninitialized stack).
    pub init: Box<[bool; FRAME]>,
    /// Pointers spilled to 8-byte aligned slots.
    pub spills: Box<[Option<Ptr>; FRAME / 8]>,
    /// The caller's r6-r9 and where to return (unused for the entry frame).
    saved: [Value; 4],
    return_pc: usize,
}

impl Frame {
    fn new(id: u32, saved: [Value; 4], return_pc: usize) -> Frame {
        Frame {
            id,
            bytes: Box::new([0; FRAME]),
            init: Box::new([false; FRAME]),
            spills: Box::new([None; FRAME / 8]),
            saved,
            return_pc,
        }
    }
}

/// Context fields a tc program may write (the rest is computed from the packet).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SkbFields {
    pub mark: u32,
    pub priority: u32,
}

pub(super) struct Run<'m> {
    pub machine: &'m mut Machine,
    pub insns: &'m [Insn],
    /// Slot of an `ld_imm64` -> index of the map it loads.
    map_relocs: &'m HashMap<usize, usize>,
    /// Slot of a kfunc call -> the kernel function's name.
    kfunc_relocs: &'m HashMap<usize, String>,
    pub progtype: ProgType,
    pub regs: [Value; 11],
    pub frames: Vec<Frame>,
    next_frame_id: u32,
    pub packet: Vec<u8>,
    /// End of the part reachable through `data`..`data_end`.
    pub linear_len: usize,
    pub skb: SkbFields,
    /// Netfilter: `nf_hook_state.pf` (the family of the packet).
    pub nf_pf: u8,
    /// The dynptrs on the stack, by frame id and offset in the frame (16 bytes each).
    pub dynptrs: HashMap<(u32, usize), Dynptr>,
    pub pc: usize,
    pub trace: Vec<String>,
}

pub(super) fn run(
    machine: &mut Machine,
    index: usize,
    progtype: ProgType,
    packet: &[u8],
    nf_pf: u8,
) -> Result<RunResult, InterpError> {
    // The code is read while the maps change: hold the object through its own reference.
    let object = Arc::clone(&machine.object);
    let relocs = Arc::clone(&machine.map_relocs);
    let kfuncs = Arc::clone(&machine.kfunc_relocs);
    let budget = machine.budget;
    let mut run = Run {
        machine,
        insns: &object.programs[index].insns,
        map_relocs: &relocs[index],
        kfunc_relocs: &kfuncs[index],
        progtype,
        regs: [Value::Uninit; 11],
        frames: vec![Frame::new(0, [Value::Uninit; 4], 0)],
        next_frame_id: 1,
        packet: packet.to_vec(),
        linear_len: match progtype {
            ProgType::Xdp => packet.len().min(XDP_MAX_LINEAR),
            _ => packet.len(),
        },
        skb: SkbFields::default(),
        nf_pf,
        dynptrs: HashMap::new(),
        pc: 0,
        trace: Vec::new(),
    };
    run.regs[1] = Value::Ptr(Ptr::new(Region::Ctx, 0));
    run.regs[10] = Value::Ptr(Ptr::new(Region::Stack(0), STACK_SIZE as i64));
    let mut steps: u64 = 0;
    loop {
        steps += 1;
        if steps > budget {
            return Err(InterpError::Budget { limit: budget });
        }
        if let Some(r0) = run.step()? {
            return Ok(RunResult {
                retval: r0 as u32,
                data_out: run.packet,
                insns: steps,
                trace: run.trace,
            });
        }
    }
}

impl Run<'_> {
    pub fn fault<T>(&self, why: impl Into<String>) -> Result<T, InterpError> {
        Err(InterpError::Fault {
            pc: self.pc,
            why: why.into(),
        })
    }

    fn malformed<T>(&self, why: impl Into<String>) -> Result<T, InterpError> {
        Err(InterpError::Malformed {
            pc: self.pc,
            why: why.into(),
        })
    }

    /// Reads a register the program may read.
    pub fn reg(&self, r: u8) -> Result<Value, InterpError> {
        match self.regs.get(r as usize) {
            None => self.malformed(format!("register r{r} does not exist")),
            Some(Value::Uninit) => self.fault(format!("reads r{r}, which holds no value here")),
            Some(v) => Ok(*v),
        }
    }

    pub fn scalar(&self, r: u8) -> Result<u64, InterpError> {
        match self.reg(r)? {
            Value::Scalar(v) => Ok(v),
            _ => self.fault(format!("r{r} holds a pointer where a number is needed")),
        }
    }

    fn set(&mut self, r: u8, v: Value) -> Result<(), InterpError> {
        match r {
            0..=9 => {
                self.regs[r as usize] = v;
                Ok(())
            }
            10 => self.fault("writes r10, the read-only frame pointer"),
            _ => self.malformed(format!("register r{r} does not exist")),
        }
    }

    /// Executes one instruction; `Some(r0)` when the program returned.
    fn step(&mut self) -> Result<Option<u64>, InterpError> {
        let Some(&insn) = self.insns.get(self.pc) else {
            return self.malformed("execution ran past the end of the program");
        };
        match insn.class() {
            BPF_ALU64 | BPF_ALU => self.alu(insn)?,
            BPF_JMP | BPF_JMP32 => return self.jump(insn),
            BPF_LD => self.ld_imm64(insn)?,
            BPF_LDX => self.ldx(insn)?,
            BPF_ST | BPF_STX => self.store(insn)?,
            _ => unreachable!("class is three bits"),
        }
        Ok(None)
    }

    fn next(&mut self) {
        self.pc += 1;
    }

    fn alu(&mut self, insn: Insn) -> Result<(), InterpError> {
        let is64 = insn.class() == BPF_ALU64;
        let Some(op) = alu_op(insn.code) else {
            return self.malformed(format!("unknown ALU opcode {:#04x}", insn.code));
        };
        let from_reg = insn.code & BPF_X != 0;
        let value = match op {
            AluOp::End => {
                // ALU: to-le (K) or to-be (X); ALU64 K: the unconditional bswap of cpu v4.
                let swap = if is64 { !from_reg } else { from_reg };
                if is64 && from_reg {
                    return self.malformed("ALU64 END with the X bit");
                }
                let v = self.scalar(insn.dst)?;
                match byte_order(v, insn.imm, swap) {
                    Some(v) => Value::Scalar(v),
                    None => return self.malformed(format!("byte swap of {} bits", insn.imm)),
                }
            }
            AluOp::Neg => {
                let v = self.scalar(insn.dst)?;
                Value::Scalar(if is64 {
                    v.wrapping_neg()
                } else {
                    (v as u32).wrapping_neg() as u64
                })
            }
            AluOp::Mov => {
                let src = if from_reg {
                    self.reg(insn.src)?
                } else {
                    Value::Scalar(insn.imm as i64 as u64)
                };
                match (is64, insn.off, src) {
                    (true, 0, v) => v,
                    (_, _, Value::Ptr(_)) => return self.fault("a partial or sign-extending copy of a pointer"),
                    (true, 8 | 16 | 32, Value::Scalar(v)) if from_reg => Value::Scalar(sign_extend(v, insn.off as u32)),
                    (false, 0, Value::Scalar(v)) => Value::Scalar(v as u32 as u64),
                    (false, 8 | 16, Value::Scalar(v)) if from_reg => {
                        Value::Scalar(sign_extend(v, insn.off as u32) as u32 as u64)
                    }
                    _ => return self.malformed(format!("mov with offset {}", insn.off)),
                }
            }
            _ => {
                let signed = match (op, insn.off) {
                    (_, 0) => false,
                    (AluOp::Div | AluOp::Mod, 1) => true,
                    _ => return self.malformed(format!("ALU opcode {:#04x} with offset {}", insn.code, insn.off)),
                };
                let a = self.reg(insn.dst)?;
                let b = if from_reg {
                    self.reg(insn.src)?
                } else {
                    Value::Scalar(insn.imm as i64 as u64)
                };
                match (a, b) {
                    (Value::Scalar(a), Value::Scalar(b)) if is64 => Value::Scalar(alu64(op, signed, a, b)),
                    (Value::Scalar(a), Value::Scalar(b)) => Value::Scalar(alu32(op, signed, a as u32, b as u32) as u64),
                    (a, b) if is64 => self.pointer_arith(op, a, b)?,
                    _ => return self.fault("32-bit arithmetic on a pointer"),
                }
            }
        };
        self.set(insn.dst, value)?;
        self.next();
        Ok(())
    }

    /// The pointer arithmetic the verifier allows: pointer ± scalar, pointer - pointer.
    fn pointer_arith(&self, op: AluOp, a: Value, b: Value) -> Result<Value, InterpError> {
        let ok = match (op, a, b) {
            (AluOp::Add, Value::Ptr(p), Value::Scalar(s)) | (AluOp::Add, Value::Scalar(s), Value::Ptr(p)) => {
                Some(Value::Ptr(p.offset_by(s as i64)))
            }
            (AluOp::Sub, Value::Ptr(p), Value::Scalar(s)) => Some(Value::Ptr(p.offset_by((s as i64).wrapping_neg()))),
            (AluOp::Sub, Value::Ptr(p), Value::Ptr(q)) if p.region == q.region => {
                Some(Value::Scalar(p.off.wrapping_sub(q.off) as u64))
            }
            _ => None,
        };
        match ok {
            Some(v) => Ok(v),
            None => self.fault(format!("{op:?} on a pointer")),
        }
    }

    fn jump(&mut self, insn: Insn) -> Result<Option<u64>, InterpError> {
        let is32 = insn.class() == BPF_JMP32;
        match insn.code & 0xf0 {
            0x00 => {
                let off = if is32 { insn.imm as i64 } else { insn.off as i64 };
                self.goto(off)?;
            }
            0x80 if !is32 => self.call(insn)?,
            0x90 if !is32 => return self.exit(),
            // may_goto: the kernel takes it only when its loop budget (timed on 6.18) runs
            // out; the interpreter's instruction budget stops such a run instead.
            0xe0 if !is32 && insn.src == 0 => self.next(),
            _ => {
                let Some(op) = jmp_cond(insn.code) else {
                    return self.malformed(format!("unknown jump opcode {:#04x}", insn.code));
                };
                let a = self.reg(insn.dst)?;
                let b = if insn.code & BPF_X != 0 {
                    self.reg(insn.src)?
                } else {
                    Value::Scalar(insn.imm as i64 as u64)
                };
                let taken = match (a, b) {
                    (Value::Scalar(a), Value::Scalar(b)) if is32 => cond32(op, a as u32, b as u32),
                    (Value::Scalar(a), Value::Scalar(b)) => cond64(op, a, b),
                    _ if is32 => return self.fault("32-bit comparison of a pointer"),
                    (a, b) => cond64(op, address(a), address(b)),
                };
                if taken {
                    self.goto(insn.off as i64)?;
                } else {
                    self.next();
                }
            }
        }
        Ok(None)
    }

    fn goto(&mut self, off: i64) -> Result<(), InterpError> {
        let target = self.pc as i64 + 1 + off;
        if target < 0 || target as usize >= self.insns.len() {
            return self.malformed(format!("jump to {target}, outside the program"));
        }
        self.pc = target as usize;
        Ok(())
    }

    fn call(&mut self, insn: Insn) -> Result<(), InterpError> {
        match insn.src {
            0 | BPF_PSEUDO_KFUNC_CALL => {
                let r0 = if insn.src == 0 {
                    self.call_helper(insn.imm)?
                } else {
                    let Some(name) = self.kfunc_relocs.get(&self.pc) else {
                        return self.malformed("kfunc call without the name of its kernel function");
                    };
                    self.call_kfunc(&name.clone())?
                };
                self.regs[0] = r0;
                for r in 1..=5 {
                    self.regs[r] = Value::Uninit;
                }
                self.next();
                Ok(())
            }
            BPF_PSEUDO_CALL => {
                let target = self.pc as i64 + 1 + insn.imm as i64;
                if target < 0 || target as usize >= self.insns.len() {
                    return self.malformed(format!("call to {target}, outside the program"));
                }
                if self.frames.len() >= MAX_CALL_FRAMES {
                    return self.fault(format!("calls nest deeper than {MAX_CALL_FRAMES} frames"));
                }
                let saved = [self.regs[6], self.regs[7], self.regs[8], self.regs[9]];
                let id = self.next_frame_id;
                self.next_frame_id += 1;
                self.frames.push(Frame::new(id, saved, self.pc + 1));
                for r in 6..=9 {
                    self.regs[r] = Value::Uninit;
                }
                self.regs[10] = Value::Ptr(Ptr::new(Region::Stack(id), STACK_SIZE as i64));
                self.pc = target as usize;
                Ok(())
            }
            src => self.malformed(format!("call with src_reg {src}")),
        }
    }

    fn exit(&mut self) -> Result<Option<u64>, InterpError> {
        let r0 = match self.reg(0)? {
            Value::Scalar(v) => v,
            _ => return self.fault("returns a pointer"),
        };
        if self.frames.len() == 1 {
            return Ok(Some(r0));
        }
        let frame = self.frames.pop().expect("more than one frame");
        [self.regs[6], self.regs[7], self.regs[8], self.regs[9]] = frame.saved;
        for r in 1..=5 {
            self.regs[r] = Value::Uninit;
        }
        let caller = self.frames.last().expect("a caller").id;
        self.regs[10] = Value::Ptr(Ptr::new(Region::Stack(caller), STACK_SIZE as i64));
        self.pc = frame.return_pc;
        Ok(None)
    }

    fn ld_imm64(&mut self, insn: Insn) -> Result<(), InterpError> {
        if !insn.is_ld_imm64() {
            return Err(InterpError::Unsupported(format!(
                "legacy packet load opcode {:#04x} (LD_ABS/LD_IND) or unknown LD form",
                insn.code
            )));
        }
        let Some(&second) = self.insns.get(self.pc + 1) else {
            return self.malformed("ld_imm64 without its second slot");
        };
        if second.code != 0 || second.dst != 0 || second.src != 0 || second.off != 0 {
            return self.malformed("ld_imm64 whose second slot is not empty");
        }
        let value = match insn.src {
            0 => Value::Scalar((insn.imm as u32 as u64) | ((second.imm as u32 as u64) << 32)),
            BPF_PSEUDO_MAP_FD => match self.map_relocs.get(&self.pc) {
                Some(&m) if m < self.machine.maps.len() => Value::Ptr(Ptr::new(Region::Map(m as u32), 0)),
                _ => return self.malformed("map reference without a map"),
            },
            src => {
                return Err(InterpError::Unsupported(format!(
                    "ld_imm64 with src_reg {src} (map values, function addresses), at instruction {}",
                    self.pc
                )))
            }
        };
        self.set(insn.dst, value)?;
        self.pc += 2;
        Ok(())
    }

    fn ldx(&mut self, insn: Insn) -> Result<(), InterpError> {
        let size = access_size(insn.code);
        let mode = insn.code & 0xe0;
        if mode != BPF_MEM && mode != BPF_MEMSX {
            return self.malformed(format!("unknown load opcode {:#04x}", insn.code));
        }
        let Value::Ptr(base) = self.reg(insn.src)? else {
            return self.fault(format!("loads through r{}, which holds a number", insn.src));
        };
        let v = self.load(base.offset_by(insn.off as i64), size)?;
        let v = match (mode, v) {
            (BPF_MEMSX, Value::Scalar(x)) if size < 8 => Value::Scalar(sign_extend(x, size as u32 * 8)),
            (BPF_MEMSX, _) => return self.malformed("sign-extending load of 8 bytes or of a pointer"),
            (_, v) => v,
        };
        self.set(insn.dst, v)?;
        self.next();
        Ok(())
    }

    fn store(&mut self, insn: Insn) -> Result<(), InterpError> {
        let size = access_size(insn.code);
        let mode = insn.code & 0xe0;
        let Value::Ptr(base) = self.reg(insn.dst)? else {
            return self.fault(format!("stores through r{}, which holds a number", insn.dst));
        };
        let at = base.offset_by(insn.off as i64);
        match (insn.class(), mode) {
            (BPF_ST, BPF_MEM) if at.region == Region::Ctx => {
                return self.fault("BPF_ST (an immediate store) into the context")
            }
            (BPF_ST, BPF_MEM) => self.store_value(at, size, Value::Scalar(insn.imm as i64 as u64))?,
            (BPF_STX, BPF_MEM) => {
                let v = self.reg(insn.src)?;
                self.store_value(at, size, v)?
            }
            (BPF_STX, BPF_ATOMIC) => self.atomic(insn, at, size)?,
            _ => return self.malformed(format!("unknown store opcode {:#04x}", insn.code)),
        }
        self.next();
        Ok(())
    }

    fn atomic(&mut self, insn: Insn, at: Ptr, size: usize) -> Result<(), InterpError> {
        const FETCH: i32 = 0x01;
        const XCHG: i32 = 0xe0 | FETCH;
        const CMPXCHG: i32 = 0xf0 | FETCH;
        if size != 4 && size != 8 {
            return self.malformed("atomic operation of 1 or 2 bytes");
        }
        if !matches!(at.region, Region::Stack(_) | Region::MapValue { .. }) {
            return self.fault("an atomic operation outside the stack and map values");
        }
        let trunc = |v: u64| if size == 4 { v as u32 as u64 } else { v };
        let old = match self.load(at, size)? {
            Value::Scalar(v) => v,
            _ => return self.fault("atomic operation on a spilled pointer"),
        };
        let src = self.scalar(insn.src)?;
        let new = match insn.imm {
            XCHG => src,
            CMPXCHG => {
                let expected = self.scalar(0)?;
                let new = if trunc(expected) == old { src } else { old };
                self.regs[0] = Value::Scalar(old);
                new
            }
            imm => {
                let op = match imm & !FETCH {
                    0x00 => AluOp::Add,
                    0x40 => AluOp::Or,
                    0x50 => AluOp::And,
                    0xa0 => AluOp::Xor,
                    _ => return self.malformed(format!("unknown atomic operation {imm:#x}")),
                };
                alu64(op, false, old, src)
            }
        };
        self.store_value(at, size, Value::Scalar(trunc(new)))?;
        if insn.imm & FETCH != 0 && insn.imm != CMPXCHG {
            self.set(insn.src, Value::Scalar(old))?;
        }
        Ok(())
    }
}

/// Bytes of a load or store's size field.
fn access_size(code: u8) -> usize {
    match code & 0x18 {
        0x00 => 4,
        0x08 => 2,
        0x10 => 1,
        _ => 8,
    }
}

/// A value as a number for comparisons: pointers by their stand-in address.
fn address(v: Value) -> u64 {
    match v {
        Value::Scalar(x) => x,
        Value::Ptr(p) => p.address(),
        Value::Uninit => 0,
    }
}
