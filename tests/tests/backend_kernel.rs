//! The back end's hand-built IR cases (compiler/tests/backend.rs) loaded into the real kernel
//! and run with BPF_PROG_TEST_RUN: the verifier must accept each one and the values the
//! program stores into the packet must be the expected ones.
//!
//! Skips loudly when bpf() is unavailable, unless LUABPF_REQUIRE_KERNEL=1.

#[path = "../../compiler/tests/backend.rs"]
mod backend;

use backend::*;
use luabpf_loader::{load, require_kernel_or_skip, test_run};
use runtime_bpf::object::{Object, ProgramCode, SourceFile};

fn object_for(case: &Case, code: ProgramCode) -> Object {
    let lines = code.locs.iter().map(|l| l.line).max().unwrap_or(1);
    let text: String = (1..=lines).map(|l| format!("-- {} line {l}\n", case.name)).collect();
    Object {
        programs: vec![code],
        maps: case.maps.clone(),
        sources: vec![SourceFile {
            name: format!("{}.lua", case.name),
            text,
        }],
        license: "GPL".into(),
    }
}

/// Writes the kernel's BTF id of each called kfunc into its `call` (what the loader does
/// with `kfunc_relocs`; done here too so that this test does not depend on it: the back
/// end's job ends at the relocation).
fn resolve_kfuncs(code: &mut ProgramCode) {
    if code.kfunc_relocs.is_empty() {
        return;
    }
    use runtime_bpf::btf::{Btf, KIND_FUNC};
    let bytes = std::fs::read("/sys/kernel/btf/vmlinux").expect("/sys/kernel/btf/vmlinux");
    let btf = Btf::parse(&bytes).expect("vmlinux BTF");
    for (slot, name) in &code.kfunc_relocs {
        let id = btf
            .find(KIND_FUNC, name)
            .unwrap_or_else(|| panic!("kfunc {name} not in vmlinux BTF"));
        code.insns[*slot].imm = id as i32;
    }
}

/// Compiles, loads and runs one case; returns the output packet.
fn run(case: &Case) -> Vec<u8> {
    let (alloc, code) = compile(&case.f);
    let asm = disasm(&code);
    check_code(&code, &alloc).unwrap_or_else(|e| panic!("{}: {e}\n{asm}", case.name));
    let mut code = code;
    resolve_kfuncs(&mut code);
    let obj = object_for(case, code);
    let elf = runtime_bpf::elf::try_write(&obj).unwrap_or_else(|e| panic!("{}: ELF: {e}", case.name));
    let loaded = load(&elf).unwrap_or_else(|e| panic!("{}: {e}\n\nour code:\n{asm}", case.name));
    let fd = loaded.program_fd(&case.name).expect("program loaded");
    let packet: Vec<u8> = (0..PACKET_LEN).map(|i| i as u8).collect();
    let out = test_run(fd, &packet, 1).unwrap_or_else(|e| panic!("{}: test run: {e}", case.name));
    assert_eq!(out.retval, case.verdict, "{}: verdict\n{asm}", case.name);
    for (k, e) in case.expect.iter().enumerate() {
        let got = u64::from_le_bytes(out.data_out[8 * k..8 * k + 8].try_into().unwrap());
        let ok = match *e {
            Expect::Eq(v) => got == v,
            Expect::AtLeast(v) => got >= v,
            Expect::Csum(c) => {
                // Compare one's complement values: fold to 16 bits, 0xffff == 0.
                let mut s = got;
                while s >> 16 != 0 {
                    s = (s & 0xffff) + (s >> 16);
                }
                s % 0xffff == c as u64 % 0xffff
            }
        };
        assert!(ok, "{}: result {k}: got {got:#x}, expected {e:?}\n{asm}", case.name);
    }
    if case.name == "map_atomic" {
        let map = loaded.map("counts").expect("map");
        let v = map.lookup(&0u32.to_le_bytes()).unwrap().expect("entry 0");
        assert_eq!(u64::from_le_bytes(v[0..8].try_into().unwrap()), 0x1_0000_0005);
        assert_eq!(u32::from_le_bytes(v[8..12].try_into().unwrap()), 5);
    }
    out.data_out
}

macro_rules! kernel_cases {
    ($($test:ident => $case:ident),* $(,)?) => {$(
        #[test]
        fn $test() {
            if !require_kernel_or_skip(stringify!($test)) {
                return;
            }
            run(&$case());
        }
    )*};
}

kernel_cases! {
    kernel_sum_loop => case_sum_loop,
    kernel_sum_loop_verdict => case_sum_loop_verdict,
    kernel_spills => case_spills,
    kernel_across_call => case_across_call,
    kernel_five_args => case_five_args,
    kernel_imm_consts => case_imm_consts,
    kernel_imm_operands => case_imm_operands,
    kernel_imm_stores => case_imm_stores,
    kernel_branches => case_branches,
    kernel_stack_slots => case_stack_slots,
    kernel_alu => case_alu,
    kernel_map_atomic => case_map_atomic,
    kernel_may_goto => case_may_goto,
    kernel_kfunc => case_kfunc,
}

/// Random programs (see `random_case`): the kernel's results must match the IR interpreter's.
/// `LUABPF_RANDOM_PROGRAMS=n` runs more (default 100).
#[test]
fn kernel_random_programs() {
    if !require_kernel_or_skip("kernel_random_programs") {
        return;
    }
    let n: u64 = std::env::var("LUABPF_RANDOM_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    for seed in 0..n {
        run(&random_case(seed));
    }
}

/// Every case in `all_cases` has a kernel test above.
#[test]
fn every_case_runs_in_the_kernel() {
    let listed = include_str!("backend_kernel.rs");
    for case in all_cases() {
        assert!(
            listed.contains(&format!("=> case_{},", case.name)),
            "{} has no kernel test",
            case.name
        );
    }
}
