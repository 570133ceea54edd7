//! The whole pipeline, from a program file to an ELF object: what `luabpf compile`, the
//! loader and build scripts call.

use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Diagnostics};
use crate::eval::{self, EvalOptions};
use crate::ir;
use crate::program::{Evaluated, Hook};
use crate::source::SourceDb;
use crate::types::{self, MapTable};
use runtime_bpf::isa;
use runtime_bpf::object::{MapSpec, Object, ParamType, ProgramCode, SourceFile, SubFunction};

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra directories searched by `require`.
    pub include_dirs: Vec<PathBuf>,
    /// Test only, never set by the `luabpf` command: emit the code without one safety
    /// mechanism, so that tests/tests/safety.rs can show the verifier (or the differential
    /// test) catches its absence. The output of such a compile is unsafe by construction.
    #[doc(hidden)]
    pub without: Option<SafetyCheck>,
    /// Test only: skip the model of the verifier's walk (`verifier_walk`), so that tests can
    /// load what it would refuse and measure how often it refuses what the kernel accepts.
    #[doc(hidden)]
    pub skip_walk: bool,
}

/// Where the model of the verifier's walk refuses a program: below the kernel's budgets, with
/// a margin for where the model knows more than the kernel (docs/fuzzing.md, calibration).
pub const WALK_LIMITS: crate::verifier_walk::Limits = crate::verifier_walk::Limits {
    insns: 500_000,
    pending: 4_096,
};

/// A safety mechanism of the emitted code that [`Options::without`] can leave out (tests only).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SafetyCheck {
    /// `p + size <= data_end` before a packet access.
    PacketBounds,
    /// The zero test before `//` and `%` (BPF division by zero yields 0, Lua's is an error).
    ZeroDivisor,
    /// The hidden iteration cap of loops without a constant bound.
    LoopBound,
    /// The nil (null pointer) test of a map lookup before its value is read.
    NilTest,
    /// The length bound of `getstring` into its stack buffer.
    StackBounds,
}

/// A compiled program file.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub object: Object,
    /// The ELF bytes of `object`.
    pub elf: Vec<u8>,
    pub sources: SourceDb,
    /// The optimised IR of each program, for `--emit ir` and tests.
    pub ir: Vec<ir::Function>,
    /// Every file the program read (the program file and the modules it required), for
    /// build systems (`cargo:rerun-if-changed`).
    pub dependencies: Vec<PathBuf>,
}

/// Why a program file did not compile: diagnostics over its sources.
#[derive(Clone, Debug)]
pub struct Failure {
    pub sources: SourceDb,
    pub diags: Diagnostics,
}

impl Failure {
    /// The diagnostics as `luabpf check` prints them.
    pub fn render(&self) -> String {
        crate::diag::render(&self.sources, &self.diags)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Failure {}

pub fn compile_path(path: &Path, opts: &Options) -> Result<Compiled, Failure> {
    let ev = eval::evaluate(
        path,
        &EvalOptions {
            include_dirs: opts.include_dirs.clone(),
        },
    )
    .map_err(|(sources, diags)| Failure { sources, diags })?;
    compile_evaluated_with(ev, opts)
}

/// Compiles program text; `name` is the file name shown in diagnostics and line info, and
/// relative `require`s resolve from its directory.
pub fn compile_source(text: &str, name: &str, opts: &Options) -> Result<Compiled, Failure> {
    let ev = eval::evaluate_source(
        text,
        name,
        &EvalOptions {
            include_dirs: opts.include_dirs.clone(),
        },
    )
    .map_err(|(sources, diags)| Failure { sources, diags })?;
    compile_evaluated_with(ev, opts)
}

/// ELF section of a hook's programs. Netfilter programs carry their hook in the name,
/// `netfilter/FAMILY:HOOK:PRIORITY` (the spec `luabpf attach --netfilter` takes), so that an
/// object alone says where the program wants to be attached.
pub fn section_of(hook: &Hook) -> String {
    use runtime_bpf::progtypes::ProgType;
    match hook {
        Hook::Xdp => ProgType::Xdp.section().to_string(),
        Hook::Tc { .. } => ProgType::Tc.section().to_string(),
        Hook::Netfilter { family, hook, priority } => {
            format!("{}/{family}:{hook}:{priority}", ProgType::Netfilter.section())
        }
    }
}

pub fn compile_evaluated(ev: Evaluated) -> Result<Compiled, Failure> {
    compile_evaluated_with(ev, &Options::default())
}

fn compile_evaluated_with(mut ev: Evaluated, opts: &Options) -> Result<Compiled, Failure> {
    let mut maps = MapTable::new(&ev);
    let lowered: Vec<_> = ev
        .programs
        .iter()
        .map(|prog| lower_program(&ev, prog, &mut maps, opts))
        .collect();
    // Lowering is the last reader of the functions' syntax trees (`shared_body`): freed here,
    // their memory serves the optimizer and the verifier's model. Kept to the end, they made
    // the heap's peak higher: +250 page faults for ua_filter, +370 for cookie_guard.
    drop(std::mem::take(&mut ev.functions));
    let mut programs = Vec::new();
    let mut irs = Vec::new();
    let mut diags = Vec::new();
    for (prog, funcs) in ev.programs.iter().zip(lowered) {
        match funcs.and_then(|funcs| finish_program(&ev, prog, &maps, funcs, opts)) {
            Ok((code, fs)) => {
                programs.push(code);
                irs.extend(fs);
            }
            Err(d) => diags.extend(d),
        }
    }
    if !diags.is_empty() {
        return Err(Failure {
            sources: ev.sources,
            diags,
        });
    }
    let object = Object {
        programs,
        maps: maps
            .maps
            .iter()
            .zip(&maps.init)
            .map(|(m, init)| MapSpec {
                name: m.name.clone(),
                kind: m.kind,
                key: m.key.clone(),
                value: m.value.clone(),
                max_entries: m.max_entries,
                flags: m.flags,
                init: init.clone(),
            })
            .collect(),
        sources: ev
            .sources
            .files
            .iter()
            .map(|f| SourceFile {
                name: f.name.clone(),
                text: f.text.clone(),
            })
            .collect(),
        license: "GPL".into(),
    };
    let elf = runtime_bpf::elf::write(&object);
    let dependencies = ev.sources.files.iter().filter_map(|f| f.path.clone()).collect();
    drop(maps);
    Ok(Compiled {
        object,
        elf,
        sources: ev.sources,
        ir: irs,
        dependencies,
    })
}

/// `f` after `hoist_constants` (which keeps a loop's 64-bit constants in registers through
/// the loop), and its allocation, when that allocation spills no more than `plain` (the
/// allocation of `f` as it is); else `f` unchanged and `plain`.
fn loop_passes_if_free(
    f: &mut ir::Function,
    plain: Result<crate::regalloc::Allocation, crate::regalloc::AllocError>,
) -> Result<crate::regalloc::Allocation, crate::regalloc::AllocError> {
    let Ok(plain) = plain else { return plain };
    let mut changed = f.clone();
    if !crate::hoist_constants::hoist_wide_constants(&mut changed) {
        return Ok(plain);
    }
    match crate::regalloc::allocate(&changed) {
        Ok(a) if a.spill_slots() <= plain.spill_slots() => {
            *f = changed;
            Ok(a)
        }
        _ => Ok(plain),
    }
}

/// A program's functions, type-checked and lowered to the IR.
fn lower_program(
    ev: &Evaluated,
    prog: &crate::program::ProgramDecl,
    maps: &mut MapTable,
    opts: &Options,
) -> Result<Vec<ir::Function>, Diagnostics> {
    let without = opts.without;
    let mut checked = types::check_program(ev, prog, maps)?;
    crate::sink_lookups::sink_lookups(&mut checked.funcs);
    crate::cost::check(&checked)?;
    let default_verdict = prog.default_verdict.unwrap_or(match prog.hook {
        Hook::Xdp => 2,
        Hook::Tc { .. } => 0,
        Hook::Netfilter { .. } => 1,
    });
    let input = crate::lower::LowerInput {
        checked: &checked,
        maps,
        hook: &prog.hook,
        default_verdict,
        name: &prog.name,
        db: &ev.sources,
        without,
    };
    crate::lower::lower(&input)
}

/// A program's lowered functions, optimised, allocated, emitted, linked and walked.
fn finish_program(
    ev: &Evaluated,
    prog: &crate::program::ProgramDecl,
    maps: &MapTable,
    mut funcs: Vec<ir::Function>,
    opts: &Options,
) -> Result<(ProgramCode, Vec<ir::Function>), Diagnostics> {
    let section = section_of(&prog.hook);
    let map_sizes: Vec<(u32, u32)> = maps.maps.iter().map(|m| (m.key.size(), m.value.size())).collect();
    let mut parts = Vec::new();
    let mut frames = Vec::new();
    // What each optimised function's calls pass to the others (`call_bounds`).
    let mut calls: Vec<crate::call_bounds::CallRanges> = Vec::new();
    for i in 0..funcs.len() {
        // A function of its own starts knowing what its callers pass, when they all come
        // before it (they are then optimised, and their analysis is final).
        if i > 0 && !funcs[i + 1..].iter().any(|g| crate::call_bounds::calls(g, i as u32)) {
            if let Some(ranges) = crate::call_bounds::argument_ranges(&calls, i as u32) {
                crate::call_bounds::bound_arguments(&mut funcs[i], &ranges, crate::lower::SUB_ERROR);
            }
        }
        let f = &mut funcs[i];
        let made = crate::opt::optimize(f, &map_sizes);
        calls.push(made.unwrap_or_else(|| crate::call_bounds::ranges_at_calls_analysed(f)));
        let alloc = loop_passes_if_free(f, crate::regalloc::allocate(f)).map_err(|e| match e {
            crate::regalloc::AllocError::StackTooLarge { needed } => {
                vec![crate::stack::frame_too_large(
                    &ev.sources,
                    &prog.name,
                    prog.span,
                    f,
                    needed,
                )]
            }
        })?;
        frames.push(alloc.frame_size());
        let code = crate::emit::emit(f, &alloc, &section).map_err(|e| {
            vec![Diagnostic::new(
                prog.span,
                format!("program `{}` could not be emitted: {e}", prog.name),
                "this program",
            )
            .hint("split the program into smaller functions")]
        })?;
        parts.push((code, params_of(f)));
    }
    crate::stack::check_chains(&ev.sources, &prog.name, prog.span, &funcs, &frames).map_err(|d| vec![d])?;
    let code = link(parts);
    if !opts.skip_walk {
        let kinds = maps.maps.iter().map(|m| (m.kind, m.max_entries));
        let walk = walk_program(&code, kinds, WALK_LIMITS);
        if walk.verdict != crate::verifier_walk::Verdict::Fits {
            return Err(vec![crate::verifier_walk::diagnostic(
                &ev.sources,
                &prog.name,
                prog.span,
                &code,
                &walk,
                WALK_LIMITS,
            )]);
        }
    }
    Ok((code, funcs))
}

/// The model's walk of each program of `obj`, up to `limits` (for measurements: the kernel's
/// count against the model's).
pub fn walk_object(obj: &Object, limits: crate::verifier_walk::Limits) -> Vec<crate::verifier_walk::Walk> {
    let kinds = || obj.maps.iter().map(|m| (m.kind, m.max_entries));
    obj.programs.iter().map(|p| walk_program(p, kinds(), limits)).collect()
}

/// The model's walk of one program, over maps of these kinds and sizes.
fn walk_program(
    code: &ProgramCode,
    maps: impl Iterator<Item = (runtime_bpf::object::MapKind, u32)>,
    limits: crate::verifier_walk::Limits,
) -> crate::verifier_walk::Walk {
    let infos: Vec<_> = maps
        .map(|(kind, max_entries)| crate::verifier_walk::MapInfo { kind, max_entries })
        .collect();
    let hook = crate::verifier_walk::Hook::of_section(&code.section);
    crate::verifier_walk::walk(code, &infos, hook, limits)
}

/// The BTF parameter types of an outlined function, from its leading `Arg`s.
fn params_of(f: &ir::Function) -> Vec<ParamType> {
    let mut out = Vec::new();
    for (inst, _) in &f.blocks[f.entry].insts {
        match inst {
            ir::Inst::Arg { dst, index } => {
                let t = match (index, f.values[*dst]) {
                    (0, _) => ParamType::Ctx,
                    (_, ir::ValueKind::Pointer) => ParamType::ScalarPtr,
                    _ => ParamType::Scalar,
                };
                out.push(t);
            }
            _ => break,
        }
    }
    out
}

/// Joins a program's functions (entry first) into one instruction stream: relocations move
/// with their function, and each local call's callee index becomes its pc-relative offset.
fn link(parts: Vec<(ProgramCode, Vec<ParamType>)>) -> ProgramCode {
    // Only functions still called after optimisation: the kernel refuses unreachable code.
    let reachable = reachable_functions(&parts);
    let mut starts = vec![usize::MAX; parts.len()];
    let mut n = 0;
    for (i, (p, _)) in parts.iter().enumerate() {
        if reachable[i] {
            starts[i] = n;
            n += p.insns.len();
        }
    }
    let parts: Vec<(ProgramCode, Vec<ParamType>, usize)> = parts
        .into_iter()
        .enumerate()
        .filter(|(i, _)| reachable[*i])
        .map(|(i, (p, t))| (p, t, starts[i]))
        .collect();
    let mut iter = parts.into_iter();
    let Some((mut out, _, _)) = iter.next() else {
        return ProgramCode {
            name: String::new(),
            section: String::new(),
            insns: vec![],
            locs: vec![],
            map_relocs: vec![],
            kfunc_relocs: vec![],
            subfunctions: vec![],
        };
    };
    for (p, params, base) in iter {
        out.subfunctions.push(SubFunction {
            start: base,
            name: p.name.clone(),
            params,
        });
        out.insns.extend(p.insns);
        out.locs.extend(p.locs);
        out.map_relocs
            .extend(p.map_relocs.into_iter().map(|(s, m)| (s + base, m)));
        out.kfunc_relocs
            .extend(p.kfunc_relocs.into_iter().map(|(s, k)| (s + base, k)));
    }
    // Patch local calls: emit left the callee's index (1-based into `starts`) in imm.
    let mut slot = 0;
    while slot < out.insns.len() {
        let insn = out.insns[slot];
        if insn.code == (isa::BPF_JMP | isa::JmpOp::Call as u8) && insn.src == isa::BPF_PSEUDO_CALL {
            if let Some(&target) = starts.get(insn.imm as usize).filter(|&&t| t != usize::MAX) {
                out.insns[slot].imm = target as i32 - (slot as i32 + 1);
            }
        }
        slot += if insn.is_ld_imm64() { 2 } else { 1 };
    }
    out
}

/// Which functions the entry (index 0) reaches through local calls.
fn reachable_functions(parts: &[(ProgramCode, Vec<ParamType>)]) -> Vec<bool> {
    let mut seen = vec![false; parts.len()];
    let mut work = vec![0usize];
    while let Some(f) = work.pop() {
        if f >= parts.len() || seen[f] {
            continue;
        }
        seen[f] = true;
        for insn in &parts[f].0.insns {
            if insn.code == (isa::BPF_JMP | isa::JmpOp::Call as u8) && insn.src == isa::BPF_PSEUDO_CALL {
                work.push(insn.imm as usize);
            }
        }
    }
    seen
}

/// For tests: the annotated assembly of a program file's text, which must compile.
#[cfg(test)]
pub(crate) fn asm_of(src: &str) -> String {
    let c = compile_source(src, "t.lua", &Default::default()).unwrap_or_else(|e| panic!("{}", e.render()));
    annotated_asm(&c.object)
}

/// For tests: the numbered instruction lines of [`annotated_asm`]'s text, with the numbers of
/// the first loop's head and of its jump back (the first backward jump).
#[cfg(test)]
pub(crate) fn first_loop(asm: &str) -> (Vec<(i64, &str)>, i64, i64) {
    let num = |l: &str| l.trim().split(':').next().and_then(|n| n.trim().parse::<i64>().ok());
    let lines: Vec<(i64, &str)> = asm.lines().filter_map(|l| Some((num(l)?, l))).collect();
    let &(back, jump) = lines.iter().find(|(_, l)| l.contains("goto -")).expect("a loop");
    let target: i64 = jump
        .rsplit("goto ")
        .next()
        .and_then(|t| t.trim().parse().ok())
        .expect("a jump offset");
    (lines, back + 1 + target, back)
}

/// BPF assembly of every program, annotated with the Lua lines it came from.
pub fn annotated_asm(obj: &Object) -> String {
    let mut out = String::new();
    for p in &obj.programs {
        out.push_str(&format!(
            "{}:  ; section {}, {} instructions\n",
            p.name,
            p.section,
            p.insns.len()
        ));
        let names = runtime_bpf::disasm::program_names(p, &obj.maps);
        let mut last = (u32::MAX, u32::MAX);
        for line in runtime_bpf::disasm::listing(&p.insns, &names) {
            let loc = p.locs.get(line.slot).copied().unwrap_or_default();
            if (loc.file, loc.line) != last && loc.line != 0 {
                last = (loc.file, loc.line);
                if let Some(src) = obj.sources.get(loc.file as usize) {
                    let line_text = src.text.lines().nth(loc.line as usize - 1).unwrap_or("").trim();
                    out.push_str(&format!("; {}:{}: {}\n", src.name, loc.line, line_text));
                }
            }
            out.push_str(&format!("{:5}: {}\n", line.slot, line.text));
        }
        out.push('\n');
    }
    out
}
