//! The object file against the real kernel and its tools: the verifier loads what `elf::write`
//! emits through bpftool (libbpf), iproute2 and aya; bpftool reads its BTF; the constant tables
//! match the running kernel's BTF; clang objects are read and listed.
//!
//! Tests that need root or a tool skip with a loud message, unless LUABPF_REQUIRE_KERNEL=1,
//! which turns a skip into a failure (for CI on a machine that has everything). Pins,
//! namespaces and temporary files are removed by guards, also when an assertion fails.

mod common;

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use runtime_bpf::btf::{Btf, Type, KIND_ENUM, KIND_FUNC, KIND_STRUCT};
use runtime_bpf::disasm::disassemble_program;
use runtime_bpf::elf;
use runtime_bpf::helpers::HELPERS;
use runtime_bpf::isa::Insn;
use runtime_bpf::object::Object;
use runtime_bpf::progtypes::{self, ProgType};

// ---- environment ----------------------------------------------------------------------------

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"));
    uid.and_then(|u| u.split_whitespace().nth(1)) == Some("0")
}

fn have(tool: &str) -> bool {
    let arg = match tool {
        "bpftool" => "version",
        "ip" | "ping" => "-V",
        _ => "--version",
    };
    Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success())
}

/// Whether the test can run; a skip is loud, and fatal under LUABPF_REQUIRE_KERNEL=1.
fn can_run(test: &str, root: bool, tools: &[&str]) -> bool {
    let mut missing: Vec<String> = tools.iter().filter(|t| !have(t)).map(|t| t.to_string()).collect();
    if root && !is_root() {
        missing.push("root".into());
    }
    if root && !Path::new("/sys/fs/bpf").is_dir() {
        missing.push("bpffs at /sys/fs/bpf".into());
    }
    if missing.is_empty() {
        return true;
    }
    skip(test, &missing.join(", "));
    false
}

fn skip(test: &str, needs: &str) {
    let msg = format!("SKIPPED {test}: needs {needs}");
    if std::env::var("LUABPF_REQUIRE_KERNEL").as_deref() == Ok("1") {
        panic!("{msg} (LUABPF_REQUIRE_KERNEL=1 makes this a failure)");
    }
    // Straight to stderr: the test harness captures eprintln! of passing tests, and a skip
    // must be seen.
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!!!!!!!!!! {msg} !!!!!!!!!!!!!!!!\n");
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("luabpf-rt-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("write temp file");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A bpffs pin (file or directory), removed on drop.
struct Pin(PathBuf);

impl Pin {
    fn new(name: &str) -> Pin {
        let path = PathBuf::from(format!("/sys/fs/bpf/lbpf_test_{}_{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(&path);
        Pin(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A network namespace, deleted on drop (with everything attached inside it).
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let ns = format!("{name}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run("ip", &["netns", "add", &ns]);
        Netns(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn bpftool_load(test: &str, obj: &Object) -> String {
    let dir = TempDir::new(test);
    let path = dir.write("x.o", &elf::try_write(obj).expect("valid object"));
    let pin = Pin::new(test);
    run("bpftool", &["prog", "load", &path, pin.path()]);
    let show = stdout(&run("bpftool", &["prog", "show", "pinned", pin.path()]));
    let dump = stdout(&run(
        "bpftool",
        &["prog", "dump", "xlated", "pinned", pin.path(), "linum"],
    ));
    format!("{show}\n{dump}")
}

// ---- loading with the kernel tools ----------------------------------------------------------

#[test]
fn bpftool_loads_a_trivial_xdp_program() {
    if !can_run("bpftool_loads_a_trivial_xdp_program", true, &["bpftool"]) {
        return;
    }
    let out = bpftool_load("trivial", &common::trivial_xdp());
    assert!(out.contains("xdp  name pass"), "{out}");
}

#[test]
fn bpftool_loads_a_map_reference_and_shows_lua_lines() {
    if !can_run("bpftool_loads_a_map_reference_and_shows_lua_lines", true, &["bpftool"]) {
        return;
    }
    let out = bpftool_load("map", &common::xdp_with_map());
    assert!(out.contains("name sni_filter") && out.contains("map_ids"), "{out}");
    assert!(out.contains("int sni_filter(struct xdp_md * ctx)"), "func_info: {out}");
    assert!(
        out.contains("; line_2() [file:filter.lua line_num:2 line_col:3]"),
        "line_info: {out}"
    );
    assert!(out.contains("r1 = map[id:"), "{out}");
}

#[test]
fn bpftool_dumps_the_map_btf() {
    if !can_run("bpftool_dumps_the_map_btf", false, &["bpftool"]) {
        return;
    }
    let dir = TempDir::new("btf");
    let path = dir.write("x.o", &elf::write(&common::xdp_with_map()));
    let dump = stdout(&run("bpftool", &["btf", "dump", "file", &path]));
    for want in [
        "STRUCT '(anon)' size=32 vlen=4",
        "'type' type_id=",
        "'max_entries' type_id=",
        "'key' type_id=",
        "'value' type_id=",
        "ARRAY '(anon)' type_id=3 index_type_id=2 nr_elems=64",
        "ARRAY '(anon)' type_id=1 index_type_id=2 nr_elems=4096",
        "VAR 'blocked' type_id=",
        "linkage=global",
        "DATASEC '.maps' size=32 vlen=1",
        "offset=0 size=32 (VAR 'blocked')",
        "FUNC 'sni_filter' type_id=",
    ] {
        assert!(dump.contains(want), "missing {want:?} in\n{dump}");
    }
}

#[test]
fn bpftool_loads_subprograms_and_callbacks() {
    if !can_run("bpftool_loads_subprograms_and_callbacks", true, &["bpftool"]) {
        return;
    }
    for (name, obj) in [
        ("ordered", common::xdp_with_subprograms()),
        ("unordered", common::xdp_with_subprograms_unordered()),
    ] {
        let out = bpftool_load(name, &obj);
        // The verifier inlines bpf_loop; the callback and the subprogram are functions of
        // their own, with their BTF names and Lua lines, in link order either way.
        for want in [
            "int looper(struct xdp_md * ctx)",
            "int looper__sub1():",
            "int looper__sub2():",
        ] {
            assert!(out.contains(want), "{name}: missing {want:?} in\n{out}");
        }
        let callback = out.find("int looper__sub1():").unwrap_or(0);
        assert!(
            out[callback..].contains("r0 = 0"),
            "{name}: the callback comes first\n{out}"
        );
    }
}

/// Two programs in one section, one in another: bpftool loads every program of the file.
#[test]
fn bpftool_loads_all_programs() {
    if !can_run("bpftool_loads_all_programs", true, &["bpftool"]) {
        return;
    }
    let dir = TempDir::new("all");
    let path = dir.write("x.o", &elf::try_write(&common::several_programs()).unwrap());
    let pin = Pin::new("all");
    run("bpftool", &["prog", "loadall", &path, pin.path()]);
    let pinned: HashSet<String> = std::fs::read_dir(&pin.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        pinned,
        HashSet::from(["first".into(), "shaper".into(), "second".into()])
    );
    let shaper = stdout(&run(
        "bpftool",
        &["prog", "show", "pinned", &format!("{}/shaper", pin.path())],
    ));
    assert!(shaper.contains("sched_cls"), "{shaper}");
}

#[test]
fn iproute2_attaches_in_a_namespace() {
    if !can_run("iproute2_attaches_in_a_namespace", true, &["ip"]) {
        return;
    }
    let dir = TempDir::new("netns");
    let path = dir.write("x.o", &elf::write(&common::xdp_with_map()));
    let ns = Netns::new("lbpf-rt");
    run("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
    run(
        "ip",
        &[
            "-n",
            &ns.0,
            "link",
            "set",
            "dev",
            "lo",
            "xdpgeneric",
            "obj",
            &path,
            "sec",
            "xdp",
        ],
    );
    let link = stdout(&run("ip", &["-n", &ns.0, "link", "show", "lo"]));
    assert!(
        link.contains("prog/xdp id") && link.contains("name sni_filter"),
        "{link}"
    );
    run("ip", &["-n", &ns.0, "link", "set", "dev", "lo", "xdpgeneric", "off"]);
}

#[test]
fn aya_loads_the_programs() {
    if !can_run("aya_loads_the_programs", true, &[]) {
        return;
    }
    for (obj, name) in [
        (common::xdp_with_map(), "sni_filter"),
        (common::xdp_with_subprograms_unordered(), "looper"),
    ] {
        let mut ebpf = aya::Ebpf::load(&elf::write(&obj)).expect("aya loads the object");
        let program: &mut aya::programs::Xdp = ebpf
            .program_mut(name)
            .expect("program")
            .try_into()
            .expect("an XDP program");
        program.load().expect("the verifier accepts it through aya");
        assert!(ebpf.map(&obj.maps[0].name).is_some());
    }
}

// ---- clang objects ----------------------------------------------------------------------------

const CLANG_SOURCE: &str = r#"
/* Self-contained: no kernel headers needed (asm/types.h is per-architecture). */
#define SEC(n) __attribute__((section(n), used))
#define BPF_MAP_TYPE_HASH 1
#define XDP_PASS 2
struct xdp_md {
    unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex;
};
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

struct {
    int (*type)[BPF_MAP_TYPE_HASH];
    int (*max_entries)[1024];
    unsigned int *key;
    unsigned long long *value;
} counts SEC(".maps");

static __attribute__((noinline)) int bump(unsigned int key)
{
    unsigned long long *v = bpf_map_lookup_elem(&counts, &key);
    if (v)
        __sync_fetch_and_add(v, 1);
    return XDP_PASS;
}

SEC("xdp") int count_packets(struct xdp_md *ctx)
{
    unsigned int key = ctx->ingress_ifindex;
    return bump(key);
}

char _license[] SEC("license") = "GPL";
"#;

#[test]
fn clang_objects_are_read_and_listed() {
    if !can_run("clang_objects_are_read_and_listed", false, &["clang-19"]) {
        return;
    }
    let dir = TempDir::new("clang");
    let src = dir.write("count.c", CLANG_SOURCE.as_bytes());
    let obj_path = dir.0.join("count.o");
    let obj_path = obj_path.to_str().unwrap();
    run("clang-19", &["-O2", "-g", "-target", "bpf", "-c", &src, "-o", obj_path]);
    let bytes = std::fs::read(obj_path).unwrap();

    let obj = elf::read(&bytes).expect("read accepts a clang object");
    assert_eq!(obj.license, "GPL");
    assert_eq!(obj.maps.len(), 1);
    assert_eq!((obj.maps[0].name.as_str(), obj.maps[0].max_entries), ("counts", 1024));
    assert_eq!((obj.maps[0].key.size(), obj.maps[0].value.size()), (4, 8));
    let p = &obj.programs[0];
    assert_eq!((p.name.as_str(), p.section.as_str()), ("count_packets", "xdp"));
    assert_eq!(
        obj.sources[0].name.rsplit('/').next(),
        Some("count.c"),
        "line_info was read"
    );

    let listing = disassemble_program(p, &obj.maps);
    let text = listing.join("\n");
    for want in [
        "= *(u32 *)(r1 +12)",
        "call pc+",
        "map[counts] ll",
        "call bpf_map_lookup_elem#1",
        "lock *(u64 *)(r0 +0) += r",
        "exit",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("invalid insn"), "{text}");

    // aya links the clang object's `.text` function the same way.
    let mut aya = aya_obj::Object::parse(&bytes).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    use object::{Object as _, ObjectSection};
    let text_sections: HashSet<usize> = file.section_by_name(".text").map(|s| s.index().0).into_iter().collect();
    aya.relocate_calls(&text_sections).unwrap();
    let program = &aya.programs["count_packets"];
    let mut linked: Vec<Insn> = aya.functions[&program.function_key()]
        .instructions
        .iter()
        .map(|i| Insn::new(i.code, i.dst_reg(), i.src_reg(), i.off, i.imm))
        .collect();
    // aya marks map loads when it relocates maps (a later step); `read` already has.
    for &(slot, _) in &p.map_relocs {
        linked[slot].src = runtime_bpf::isa::BPF_PSEUDO_MAP_FD;
    }
    assert_eq!(linked, p.insns);

    if have("llvm-objdump-19") {
        let dump = stdout(&run("llvm-objdump-19", &["-d", obj_path]));
        let objdump_lines = dump
            .lines()
            .filter(|l| {
                l.trim_start()
                    .split(':')
                    .next()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .count();
        assert_eq!(
            listing.len(),
            objdump_lines,
            "one line per instruction, as llvm-objdump:\n{dump}"
        );
    }
}

// ---- the constant tables against the running kernel's BTF ----------------------------------

fn vmlinux() -> Option<Btf> {
    let Ok(bytes) = std::fs::read("/sys/kernel/btf/vmlinux") else {
        skip("the kernel BTF checks", "/sys/kernel/btf/vmlinux");
        return None;
    };
    Some(Btf::parse(&bytes).expect("our BTF reader reads the kernel's BTF"))
}

fn enum_values(btf: &Btf, name: &str) -> Vec<(String, i64)> {
    let id = btf
        .find(KIND_ENUM, name)
        .unwrap_or_else(|| panic!("enum {name} in vmlinux"));
    let Some(Type::Enum { values, .. }) = btf.get(id) else {
        unreachable!()
    };
    values
        .iter()
        .map(|(n, v)| (btf.string(*n).unwrap().to_string(), *v as i32 as i64))
        .collect()
}

fn enum_value(btf: &Btf, enum_name: &str, value_name: &str) -> i64 {
    let values = enum_values(btf, enum_name);
    values
        .iter()
        .find(|(n, _)| n == value_name)
        .unwrap_or_else(|| panic!("{value_name}"))
        .1
}

fn member_offsets(btf: &Btf, name: &str) -> Vec<(String, u32)> {
    let id = btf
        .find(KIND_STRUCT, name)
        .unwrap_or_else(|| panic!("struct {name} in vmlinux"));
    let Some(Type::Struct { members, .. }) = btf.get(id) else {
        unreachable!()
    };
    members
        .iter()
        .map(|m| (btf.string(m.name).unwrap().to_string(), m.offset / 8))
        .collect()
}

#[test]
fn helper_ids_match_the_kernel() {
    let Some(btf) = vmlinux() else { return };
    let kernel = enum_values(&btf, "bpf_func_id");
    for h in HELPERS {
        let want = format!("BPF_FUNC_{}", &h.name["bpf_".len()..]);
        assert!(
            kernel.contains(&(want.clone(), h.id as i64)),
            "{want} = {} not in the kernel",
            h.id
        );
    }
}

#[test]
fn program_and_attach_types_match_the_kernel() {
    let Some(btf) = vmlinux() else { return };
    assert_eq!(
        enum_value(&btf, "bpf_prog_type", "BPF_PROG_TYPE_XDP"),
        ProgType::Xdp.kernel_type() as i64
    );
    assert_eq!(
        enum_value(&btf, "bpf_prog_type", "BPF_PROG_TYPE_SCHED_CLS"),
        ProgType::Tc.kernel_type() as i64
    );
    assert_eq!(
        enum_value(&btf, "bpf_prog_type", "BPF_PROG_TYPE_NETFILTER"),
        ProgType::Netfilter.kernel_type() as i64
    );
    assert_eq!(
        enum_value(&btf, "bpf_attach_type", "BPF_XDP"),
        progtypes::BPF_XDP as i64
    );
    assert_eq!(
        enum_value(&btf, "bpf_attach_type", "BPF_NETFILTER"),
        progtypes::BPF_NETFILTER as i64
    );
    assert_eq!(
        enum_value(&btf, "bpf_attach_type", "BPF_TCX_INGRESS"),
        progtypes::BPF_TCX_INGRESS as i64
    );
    assert_eq!(
        enum_value(&btf, "bpf_attach_type", "BPF_TCX_EGRESS"),
        progtypes::BPF_TCX_EGRESS as i64
    );
    for v in progtypes::XDP_VERDICTS {
        assert_eq!(
            enum_value(&btf, "xdp_action", &format!("XDP_{}", v.name)),
            v.value as i64
        );
    }
    for (kind, name) in [
        (1, "BPF_MAP_TYPE_HASH"),
        (6, "BPF_MAP_TYPE_PERCPU_ARRAY"),
        (9, "BPF_MAP_TYPE_LRU_HASH"),
        (11, "BPF_MAP_TYPE_LPM_TRIE"),
        (27, "BPF_MAP_TYPE_RINGBUF"),
    ] {
        assert_eq!(enum_value(&btf, "bpf_map_type", name), kind);
    }
    assert!(
        btf.find(KIND_FUNC, "bpf_dynptr_from_skb").is_some(),
        "the netfilter kfunc exists"
    );
}

#[test]
fn context_layouts_match_the_kernel() {
    let Some(btf) = vmlinux() else { return };
    for (structure, fields) in [
        ("xdp_md", progtypes::XDP_MD),
        ("__sk_buff", progtypes::SK_BUFF),
        ("bpf_nf_ctx", progtypes::NF_CTX),
        ("nf_hook_state", progtypes::NF_HOOK_STATE),
    ] {
        let kernel = member_offsets(&btf, structure);
        for f in fields {
            let found = kernel.iter().find(|(n, _)| n == f.name).map(|(_, o)| *o);
            assert_eq!(found, Some(f.offset as u32), "{structure}.{}", f.name);
        }
    }
}

// ---- separately verified (global) functions --------------------------------------------------

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the kernel prints about a global function `f` at func#1: its call is not followed
/// ("assumed valid"), and it is checked once on its own, for any arguments.
const GLOBAL_VERIFICATION: &[&str] = &[
    "Func#1 ('f') is global and assumed valid.",
    "Validating f() func#1...",
    "Func#1 ('f') is safe for any args that match its prototype",
];

/// `f`'s prototype as the kernel kept it (bpftool prints func_info before each function).
const F_PROTOTYPE: &str = "int f(struct xdp_md * a0, unsigned long long a1, unsigned long long * a2):";

#[test]
fn bpftool_verifies_a_global_function_on_its_own() {
    let test = "bpftool_verifies_a_global_function_on_its_own";
    if !can_run(test, true, &["bpftool"]) {
        return;
    }
    let dir = TempDir::new("global");
    let obj = common::xdp_with_global_function(7, true, true);
    let path = dir.write("x.o", &elf::try_write(&obj).unwrap());
    let pin = Pin::new("global");
    // -d: libbpf's debug output, with the verifier log of the successful load.
    let load = run("bpftool", &["-d", "prog", "load", &path, pin.path(), "type", "xdp"]);
    let log = stderr(&load);
    for want in GLOBAL_VERIFICATION {
        assert!(log.contains(want), "missing {want:?} in\n{log}");
    }
    let dump = stdout(&run("bpftool", &["prog", "dump", "xlated", "pinned", pin.path()]));
    assert!(dump.contains("int entry(struct xdp_md * ctx):"), "{dump}");
    assert!(dump.contains(F_PROTOTYPE), "{dump}");
    let show = stdout(&run("bpftool", &["prog", "show", "pinned", pin.path()]));
    let btf_id = show
        .split_whitespace()
        .skip_while(|w| *w != "btf_id")
        .nth(1)
        .expect("btf_id in bpftool prog show");
    let btf = stdout(&run("bpftool", &["btf", "dump", "id", btf_id]));
    assert!(btf.contains("FUNC 'f' type_id="), "{btf}");
    assert!(
        btf.lines()
            .any(|l| l.contains("FUNC 'f'") && l.contains("linkage=global")),
        "{btf}"
    );

    // It runs: f adds 7 to the first packet byte and stores the sum where the entry said.
    for (first, want) in [(1u8, 8), (0xfb, 0x102)] {
        let mut packet = vec![0u8; 64];
        packet[0] = first;
        let data = dir.write("packet", &packet);
        let out = stdout(&run(
            "bpftool",
            &["prog", "run", "pinned", pin.path(), "data_in", &data, "repeat", "1"],
        ));
        assert!(
            out.contains(&format!("Return value: {want},")),
            "byte {first:#x}: {out}"
        );
    }
}

/// The proof that `f` is checked without its caller: storing through `out` without a NULL
/// test is fine when f is static (the caller passes a stack address) and refused when it is
/// global (out may be NULL for all the verifier knows).
#[test]
fn bpftool_global_functions_assume_only_their_prototype() {
    let test = "bpftool_global_functions_assume_only_their_prototype";
    if !can_run(test, true, &["bpftool"]) {
        return;
    }
    let dir = TempDir::new("global-null");
    for global in [false, true] {
        let obj = common::xdp_with_global_function(7, false, global);
        let path = dir.write("x.o", &elf::try_write(&obj).unwrap());
        let pin = Pin::new("global_null");
        let out = Command::new("bpftool")
            .args(["-d", "prog", "load", &path, pin.path(), "type", "xdp"])
            .output()
            .expect("bpftool runs");
        let log = stderr(&out);
        assert_eq!(out.status.success(), !global, "global={global}\n{log}");
        if global {
            assert!(log.contains("Validating f() func#1..."), "{log}");
            assert!(log.contains("R3 invalid mem access 'mem_or_null'"), "{log}");
        } else {
            assert!(!log.contains("is global"), "{log}");
        }
    }
}

#[test]
fn aya_loads_a_global_function() {
    if !can_run("aya_loads_a_global_function", true, &["bpftool"]) {
        return;
    }
    use aya::programs::{ProgramError, Xdp};
    use aya::{EbpfLoader, VerifierLogLevel};
    let level = VerifierLogLevel::VERBOSE | VerifierLogLevel::STATS;

    let bytes = elf::try_write(&common::xdp_with_global_function(7, true, true)).unwrap();
    let mut ebpf = EbpfLoader::new()
        .verifier_log_level(level)
        .load(&bytes)
        .expect("aya loads the object");
    assert!(ebpf.program("f").is_none(), "f is a function, not a program");
    let program: &mut Xdp = ebpf
        .program_mut("entry")
        .expect("program")
        .try_into()
        .expect("an XDP program");
    program.load().expect("the verifier accepts it through aya");
    // aya keeps no log of a successful load: ask the kernel what it made of f.
    let info = program.info().unwrap();
    let id = info.id().to_string();
    let dump = stdout(&run("bpftool", &["prog", "dump", "xlated", "id", &id]));
    assert!(dump.contains(F_PROTOTYPE), "{dump}");
    let btf_id = info.btf_id().expect("the program has BTF").to_string();
    let btf = stdout(&run("bpftool", &["btf", "dump", "id", &btf_id]));
    assert!(
        btf.lines()
            .any(|l| l.contains("FUNC 'f'") && l.contains("linkage=global")),
        "aya kept f global:\n{btf}"
    );

    // The failing variant gives aya's verifier log: f validated alone, out maybe NULL.
    let bytes = elf::try_write(&common::xdp_with_global_function(7, false, true)).unwrap();
    let mut ebpf = EbpfLoader::new().verifier_log_level(level).load(&bytes).unwrap();
    let program: &mut Xdp = ebpf.program_mut("entry").unwrap().try_into().unwrap();
    match program.load() {
        Err(ProgramError::LoadError { verifier_log, .. }) => {
            let log = verifier_log.to_string();
            for want in [
                "Func#1 ('f') is global and assumed valid.",
                "Validating f() func#1...",
                "R3 invalid mem access 'mem_or_null'",
            ] {
                assert!(log.contains(want), "missing {want:?} in\n{log}");
            }
        }
        other => panic!("a global f without a NULL test must be refused: {other:?}"),
    }
}

/// iproute2 (libbpf) picks the program by its section and links `f` from `.text`; the
/// verdict is real: on lo the first frame byte (destination MAC) is 0, so with x = 2 the
/// program passes traffic and with x = 1 it drops it.
#[test]
fn iproute2_attaches_a_program_with_a_global_function() {
    let test = "iproute2_attaches_a_program_with_a_global_function";
    if !can_run(test, true, &["ip", "ping"]) {
        return;
    }
    let dir = TempDir::new("global-ip");
    let ns = Netns::new("lbpf-gf");
    run("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
    for (x, passes) in [(2, true), (1, false)] {
        let obj = common::xdp_with_global_function(x, true, true);
        let path = dir.write("x.o", &elf::try_write(&obj).unwrap());
        run(
            "ip",
            &[
                "-n",
                &ns.0,
                "link",
                "set",
                "dev",
                "lo",
                "xdpgeneric",
                "obj",
                &path,
                "sec",
                "xdp",
            ],
        );
        let link = stdout(&run("ip", &["-n", &ns.0, "link", "show", "lo"]));
        assert!(link.contains("name entry"), "{link}");
        let ping = Command::new("ip")
            .args(["netns", "exec", &ns.0, "ping", "-c", "1", "-W", "1", "127.0.0.1"])
            .output()
            .expect("ping runs");
        assert_eq!(ping.status.success(), passes, "x = {x}: {}", stdout(&ping));
        run("ip", &["-n", &ns.0, "link", "set", "dev", "lo", "xdpgeneric", "off"]);
    }
}

const CLANG_GLOBAL_SOURCE: &str = r#"
#define SEC(n) __attribute__((section(n), used))
struct xdp_md {
    unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex;
};
typedef unsigned long long __u64;

/* Not static: clang makes it a GLOBAL function of .text with a global BTF FUNC. */
__attribute__((noinline)) int g(struct xdp_md *ctx, __u64 x, __u64 *out)
{
    unsigned char *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
    if (!out || d + 1 > e)
        return 0;
    *out = d[0] + x;
    return 0;
}

SEC("xdp") int entry(struct xdp_md *ctx)
{
    __u64 v = 0;
    g(ctx, 7, &v);
    return v;
}

char _license[] SEC("license") = "GPL";
"#;

/// clang's global functions (a GLOBAL symbol in `.text`, the call relocated against it, types
/// through typedefs) are read as `SubFunction`s, and written back they are still global.
#[test]
fn clang_global_functions_are_read_and_stay_global() {
    let test = "clang_global_functions_are_read_and_stay_global";
    if !can_run(test, true, &["clang-19", "bpftool"]) {
        return;
    }
    let dir = TempDir::new("clang-global");
    let src = dir.write("g.c", CLANG_GLOBAL_SOURCE.as_bytes());
    let obj_path = dir.0.join("g.o");
    let obj_path = obj_path.to_str().unwrap();
    run("clang-19", &["-O2", "-g", "-target", "bpf", "-c", &src, "-o", obj_path]);
    let read = elf::read_detailed(&std::fs::read(obj_path).unwrap()).unwrap();
    assert!(read.unsupported.is_empty(), "{:?}", read.unsupported);
    let subs = &read.object.programs[0].subfunctions;
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].name, "g");
    use runtime_bpf::object::ParamType::*;
    assert_eq!(subs[0].params, [Ctx, Scalar, ScalarPtr]);

    let path = dir.write("again.o", &elf::try_write(&read.object).unwrap());
    let pin = Pin::new("clang_global");
    let load = run("bpftool", &["-d", "prog", "load", &path, pin.path(), "type", "xdp"]);
    let log = stderr(&load);
    assert!(log.contains("Validating g() func#1..."), "{log}");
}

/// A tc program's global function gets `struct __sk_buff *` and reads the context through it.
#[test]
fn bpftool_verifies_a_tc_global_function() {
    let test = "bpftool_verifies_a_tc_global_function";
    if !can_run(test, true, &["bpftool"]) {
        return;
    }
    let dir = TempDir::new("global-tc");
    let path = dir.write("x.o", &elf::try_write(&common::tc_with_global_function()).unwrap());
    let pin = Pin::new("global_tc");
    let load = run("bpftool", &["-d", "prog", "load", &path, pin.path()]);
    let log = stderr(&load);
    assert!(log.contains("Validating tc_f() func#1..."), "{log}");
    assert!(log.contains("R1=ctx()"), "{log}");
    let dump = stdout(&run("bpftool", &["prog", "dump", "xlated", "pinned", pin.path()]));
    assert!(
        dump.contains("int tc_f(struct __sk_buff * a0, unsigned long long * a1):"),
        "{dump}"
    );
}

/// The context STRUCTs written for global functions have the kernel's names and sizes, and
/// their members the kernel's offsets.
#[test]
fn context_structs_of_global_functions_match_the_kernel() {
    use runtime_bpf::isa::{Insn, R0};
    use runtime_bpf::object::{ParamType, SubFunction};
    let Some(kernel) = vmlinux() else { return };
    for progtype in ProgType::ALL {
        let insns = vec![Insn::call_local(1), Insn::exit(), Insn::mov64_imm(R0, 0), Insn::exit()];
        let mut p = common::program("p", progtype.section(), insns, vec![]);
        p.subfunctions = vec![SubFunction {
            start: 2,
            name: "f".into(),
            params: vec![ParamType::Ctx],
        }];
        let bytes = elf::try_write(&common::object(vec![p], vec![])).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        use object::{Object as _, ObjectSection as _};
        let btf = Btf::parse(file.section_by_name(".BTF").unwrap().data().unwrap()).unwrap();
        let name = progtype.ctx_struct();
        let ours = btf.find(KIND_STRUCT, name).expect("ctx struct");
        let theirs = kernel.find(KIND_STRUCT, name).expect("kernel ctx struct");
        assert_eq!(btf.size_of(ours), kernel.size_of(theirs), "{name}");
        let Some(Type::Struct { members, .. }) = btf.get(ours) else {
            unreachable!()
        };
        let kernel_members = member_offsets(&kernel, name);
        for m in members {
            let n = btf.string(m.name).unwrap();
            assert!(
                kernel_members.contains(&(n.to_string(), m.offset / 8)),
                "{name}.{n} at {}",
                m.offset / 8
            );
        }
    }
}
