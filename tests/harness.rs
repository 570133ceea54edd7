//! The test harness: compile a program file, load it through the real verifier, run packets
//! through it with `BPF_PROG_TEST_RUN`, read and write its maps by name; plus guards for the
//! system resources the tool tests create (bpffs pins, network namespaces, temporary
//! directories), which remove them on drop, so also when a test fails.
//!
//! ```no_run
//! use luabpf_tests::harness::{Harness, XDP_DROP};
//! let Some(h) = Harness::example("sni_filter") else { return }; // skipped: no bpf()
//! h.set("blocklist", &luabpf_tests::harness::cstr("evil.example", 64), &0u64.to_le_bytes());
//! assert_eq!(h.run(&luabpf_tests::packets::tls_frame("evil.example")), XDP_DROP);
//! ```
//!
//! Kernel tests skip loudly when `bpf()` is unavailable (see
//! `luabpf_loader::require_kernel_or_skip`), and fail instead with `LUABPF_REQUIRE_KERNEL=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use luabpf_compiler::compile::{compile_path, Compiled, Options};
pub use luabpf_loader::{
    load, require_kernel_or_skip, test_run, LoadError, Loaded, MapError, RawMap, TestRunError, TestRunResult,
    UpdateMode,
};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// The workspace's top directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `examples/<name>.lua`, absolute.
pub fn example_path(name: &str) -> PathBuf {
    workspace_root().join("examples").join(format!("{name}.lua"))
}

/// The examples shipped in examples/, by stem, sorted.
pub fn example_names() -> Vec<String> {
    let dir = workspace_root().join("examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lua"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

/// Compiles a program file; panics with the rendered diagnostics if it does not compile.
pub fn compile_file(path: &Path) -> Compiled {
    compile_path(path, &Options::default())
        .unwrap_or_else(|f| panic!("{} does not compile:\n{}", path.display(), f.render()))
}

/// Compiles `examples/<name>.lua`.
pub fn compile_example(name: &str) -> Compiled {
    compile_file(&example_path(name))
}

/// The annotated assembly of an example, with file names relative to the workspace (so that
/// it does not depend on where the workspace is checked out).
pub fn example_asm(name: &str) -> String {
    let compiled = compile_example(name);
    let asm = luabpf_compiler::compile::annotated_asm(&compiled.object);
    let root = format!("{}/", workspace_root().display());
    asm.replace(&root, "")
}

/// The running test's name: libtest names each test's thread after the test.
pub fn test_name() -> String {
    std::thread::current().name().unwrap_or("luabpf test").to_string()
}

/// `true` if `bpf()` works here; otherwise prints a loud SKIPPED line naming the current test
/// and returns `false` (panics instead under `LUABPF_REQUIRE_KERNEL=1`).
pub fn kernel_or_skip() -> bool {
    require_kernel_or_skip(&test_name())
}

/// A compiled program file loaded into the kernel, with the program under test.
pub struct Harness {
    pub compiled: Compiled,
    pub loaded: Loaded,
    /// The program [`Harness::run`] runs (the file's only program, or the one chosen).
    pub program: String,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("program", &self.program)
            .field("loaded", &self.loaded)
            .finish()
    }
}

impl Harness {
    /// Compiles and loads `examples/<name>.lua`. `None` (after a loud skip line) when
    /// `bpf()` is unavailable; panics with the verifier's reason and log when the kernel
    /// refuses the object.
    pub fn example(name: &str) -> Option<Harness> {
        Harness::file(&example_path(name))
    }

    /// Compiles and loads a program file (see [`Harness::example`]).
    pub fn file(path: &Path) -> Option<Harness> {
        if !kernel_or_skip() {
            return None;
        }
        Some(Harness::from_compiled(compile_file(path), &path.display().to_string()))
    }

    /// Loads an already compiled file; `what` names it in panic messages. The caller has
    /// checked that the kernel is available.
    pub fn from_compiled(compiled: Compiled, what: &str) -> Harness {
        // A verifier refusal shows its reason and the end of its log.
        let loaded = load(&compiled.elf).unwrap_or_else(|e| panic!("{what}: {e}"));
        let program = match compiled.object.programs.as_slice() {
            [only] => only.name.clone(),
            [] => panic!("{what}: no program in the object"),
            [first, ..] => first.name.clone(),
        };
        assert!(
            loaded.program_fd(&program).is_some(),
            "{what}: program `{program}` not loaded (loaded: {:?})",
            loaded.program_names()
        );
        Harness {
            compiled,
            loaded,
            program,
        }
    }

    /// Chooses which program [`Harness::run`] runs.
    pub fn with_program(mut self, name: &str) -> Harness {
        assert!(
            self.loaded.program_fd(name).is_some(),
            "no program `{name}` (loaded: {:?})",
            self.loaded.program_names()
        );
        self.program = name.to_string();
        self
    }

    /// Instructions the verifier processed for the program under test, if the kernel says.
    pub fn verified_insns(&self) -> Option<u32> {
        self.loaded
            .programs()
            .iter()
            .find(|p| p.name == self.program)
            .and_then(|p| p.verified_insns)
    }

    /// Instructions in the compiled program under test.
    pub fn object_insns(&self) -> usize {
        self.compiled
            .object
            .programs
            .iter()
            .find(|p| p.name == self.program)
            .map_or(0, |p| p.insns.len())
    }

    /// One test run; the kernel's refusal as an error.
    pub fn try_run(&self, packet: &[u8]) -> Result<TestRunResult, TestRunError> {
        self.try_run_repeat(packet, 1)
    }

    /// `repeat` test runs of the same packet in one syscall (maps see every run).
    pub fn try_run_repeat(&self, packet: &[u8], repeat: u32) -> Result<TestRunResult, TestRunError> {
        let fd = self.loaded.program_fd(&self.program).expect("program checked at load");
        test_run(fd, packet, repeat)
    }

    /// The verdict for `packet`; panics (with the packet in hex) if the test run fails.
    pub fn run(&self, packet: &[u8]) -> u32 {
        self.run_repeat(packet, 1)
    }

    /// The verdict after `repeat` runs of `packet`.
    pub fn run_repeat(&self, packet: &[u8], repeat: u32) -> u32 {
        match self.try_run_repeat(packet, repeat) {
            Ok(r) => r.retval,
            Err(e) => panic!(
                "{}: test run of a {}-byte packet failed: {e}\npacket: {}",
                self.program,
                packet.len(),
                hex(packet)
            ),
        }
    }

    /// Byte access to a map by name; panics if there is no such map.
    pub fn map(&self, name: &str) -> RawMap {
        self.loaded
            .map(name)
            .unwrap_or_else(|e| panic!("{}: {e}", self.program))
    }

    /// `map[key] = value` (on every CPU for a per-CPU map).
    pub fn set(&self, map: &str, key: &[u8], value: &[u8]) {
        self.map(map)
            .update(key, value, UpdateMode::Any)
            .unwrap_or_else(|e| panic!("{}: {e}", self.program))
    }

    /// `map[key]`, or `None`.
    pub fn get(&self, map: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.map(map)
            .lookup(key)
            .unwrap_or_else(|e| panic!("{}: {e}", self.program))
    }

    /// Deletes `map[key]`; whether it was there.
    pub fn delete(&self, map: &str, key: &[u8]) -> bool {
        self.map(map)
            .delete(key)
            .unwrap_or_else(|e| panic!("{}: {e}", self.program))
    }

    /// `map[key]` read as a little-endian u64 (the value's first 8 bytes).
    pub fn get_u64(&self, map: &str, key: &[u8]) -> Option<u64> {
        self.get(map, key).map(|v| le_u64(&v))
    }

    /// The sum over every possible CPU of a per-CPU map's `u64` value under `key` (0 when
    /// absent).
    pub fn percpu_sum_u64(&self, map: &str, key: &[u8]) -> u64 {
        self.map(map)
            .lookup_percpu(key)
            .unwrap_or_else(|e| panic!("{}: {e}", self.program))
            .map_or(0, |per_cpu| per_cpu.iter().map(|v| le_u64(v)).sum())
    }

    /// Every key of a map.
    pub fn keys(&self, map: &str) -> Vec<Vec<u8>> {
        self.map(map)
            .keys()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{}: {e}", self.program))
    }
}

/// A `cN` map field: `s`'s bytes zero-padded to `n` (panics if longer).
pub fn cstr(s: &str, n: usize) -> Vec<u8> {
    assert!(s.len() <= n, "{s:?} is longer than c{n}");
    let mut v = s.as_bytes().to_vec();
    v.resize(n, 0);
    v
}

/// The first 8 bytes of `v` as a little-endian u64.
pub fn le_u64(v: &[u8]) -> u64 {
    u64::from_le_bytes(v[..8].try_into().expect("an 8-byte value"))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A small seeded PRNG (xorshift64*), so that fuzz-like tests are reproducible. The one
/// generator of every test (examples, robustness, semantics, random programs).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// System resources for tool tests: unique names, and guards that always clean up.

/// The prefix of every name these guards create; followed by the pid and a counter, so that
/// parallel tests and parallel runs never collide and stale leftovers can be recognised.
pub const PREFIX: &str = "luabpf-test";

/// `luabpf-test-<pid>-<n>-<tag>`: unique in this machine while this process lives.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}-{}-{n}-{tag}", std::process::id())
}

/// The pid in a name made by [`unique_name`].
fn pid_of(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?
        .strip_prefix('-')?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn process_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs a command; panics with its stderr if it cannot start or fails.
pub fn run_cmd(program: &str, args: &[&str]) -> Output {
    let out = try_cmd(program, args);
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command; panics only if it cannot start.
pub fn try_cmd(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}`: {e}"))
}

/// Whether `program` can be run (it is on PATH).
pub fn have_tool(program: &str) -> bool {
    Command::new(program).arg("help").output().is_ok()
}

/// A pin in the BPF filesystem (a file or a directory of pins), removed on drop.
#[derive(Debug)]
pub struct BpfPin {
    pub path: PathBuf,
}

/// Where the BPF filesystem is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

impl BpfPin {
    /// A fresh unique path under /sys/fs/bpf (nothing is created yet). Leftovers of earlier
    /// test processes that died are removed first.
    pub fn new(tag: &str) -> BpfPin {
        sweep_stale_pins();
        BpfPin {
            path: Path::new(BPFFS).join(unique_name(tag)),
        }
    }

    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("pin paths are UTF-8")
    }
}

impl Drop for BpfPin {
    fn drop(&mut self) {
        remove_pin(&self.path);
    }
}

fn remove_pin(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else if path.exists() {
        let _ = std::fs::remove_file(path);
    }
}

fn sweep_stale_pins() {
    let Ok(dir) = std::fs::read_dir(BPFFS) else {
        return;
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = pid_of(&name) {
            if !process_alive(pid) {
                remove_pin(&entry.path());
            }
        }
    }
}

/// A network namespace (`ip netns add`), deleted on drop with everything in it (attached
/// programs included). Tests attach only to interfaces inside it, never to the host's.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates a fresh namespace with `lo` up. Leftover namespaces of earlier test processes
    /// that died are deleted first.
    pub fn new(tag: &str) -> NetNs {
        sweep_stale_netns();
        let name = unique_name(tag);
        run_cmd("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "dev", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> ARGS...`; panics on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_cmd("ip", &all)
    }

    /// `ip -n <ns> ARGS...`, whatever its status.
    pub fn try_ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        try_cmd("ip", &all)
    }

    /// /run/netns/<name>, for `setns`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `f` on a new thread that has entered this namespace (the calling thread's
    /// namespace is left alone).
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(self.path()).unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()));
        std::thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd; it affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let out = try_cmd("ip", &["netns", "del", &self.name]);
        if !out.status.success() && !std::thread::panicking() {
            panic!(
                "cannot delete network namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn sweep_stale_netns() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = pid_of(&name) {
            if !process_alive(pid) {
                let _ = try_cmd("ip", &["netns", "del", &name]);
            }
        }
    }
}

/// A temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
