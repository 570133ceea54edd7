//! luabpf's benchmark: each example compiled by luabpf against a hand-written C baseline
//! (bench/c/*.c, clang-19 -O2), measured side by side in one run:
//!
//! - `verify`: object size, verifier processed instructions, xlated instructions, JITed bytes,
//!   and a behaviour check (both programs give the same verdict and make the same map changes
//!   on every truncation of every packet and on every packet of the example's test corpus);
//! - `run`: ns per packet under BPF_PROG_TEST_RUN, interleaved, as paired ratios;
//! - `compile`: whole-process compile time and peak memory, luabpf against clang-19.
//!
//! `cargo run --release -p bench [-- PART...] [OPTIONS]`; see `--help`. A full run (`all`, the
//! default) writes BENCHMARKS.md and bench/results.json; nothing here asserts on a time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use luabpf_loader::{test_run, Loaded};

mod behaviour;
mod json;
mod objects;
#[allow(dead_code)]
#[path = "../../tests/packets.rs"]
mod packets;
mod process;
mod programs;
mod report;
mod stats;
mod wire;

use behaviour::Behaviour;
use objects::{ObjectStats, Side, Status};
use programs::Example;

const HELP: &str = "\
usage: cargo run --release -p bench -- [PART...] [OPTIONS]

PART: verify | run | compile | all (default: all), or `wire` alone (see `-- wire --help`). `verify` is code size, verifier cost and the
behaviour check; `run` is ns/packet under BPF_PROG_TEST_RUN; `compile` is compile time and memory.

OPTIONS:
  --repeat N         BPF_PROG_TEST_RUN repeat count per measurement (default 1000000)
  --rounds N         interleaved rounds of test runs (default 15)
  --compile-runs N   interleaved whole-process compiles per compiler and example (default 20)
  --memory-runs N    runs under /usr/bin/time -f %M for peak memory (default 5)
  --only NAME        only this example (repeatable)
  --cpu N            pin the harness (and so the test runs) to CPU N
  --no-reload        time one load of each program instead of a fresh load per round
  --no-build         do not build the compiler binaries (lbc, luabpf) before timing them
  --write / --no-write   write BENCHMARKS.md and bench/results.json (default: only for `all`)
  --md PATH, --json PATH   where to write them
";

pub struct Options {
    pub verify: bool,
    pub run: bool,
    pub compile: bool,
    pub repeat: u32,
    pub rounds: usize,
    pub compile_runs: usize,
    pub memory_runs: usize,
    pub only: Vec<String>,
    pub cpu: Option<usize>,
    pub build: bool,
    pub reload: bool,
    pub write: bool,
    pub md: PathBuf,
    pub json: PathBuf,
    /// The arguments as given, for the report.
    pub argv: Vec<String>,
}

fn parse_args(root: &Path) -> Result<Options, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Options {
        verify: false,
        run: false,
        compile: false,
        repeat: 1_000_000,
        rounds: 15,
        compile_runs: 20,
        memory_runs: 5,
        only: Vec::new(),
        cpu: None,
        build: true,
        reload: true,
        write: false,
        md: root.join("BENCHMARKS.md"),
        json: root.join("bench/results.json"),
        argv: argv.clone(),
    };
    let mut parts = 0;
    let mut write: Option<bool> = None;
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let num = |s: String, name: &str| -> Result<u64, String> {
            s.replace('_', "")
                .parse()
                .map_err(|_| format!("{name}: not a number: {s}"))
        };
        match a.as_str() {
            "-h" | "--help" | "help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "verify" => (o.verify, parts) = (true, parts + 1),
            "run" => (o.run, parts) = (true, parts + 1),
            "compile" => (o.compile, parts) = (true, parts + 1),
            "all" => {
                (o.verify, o.run, o.compile) = (true, true, true);
                parts += 3;
            }
            "--repeat" => {
                o.repeat = num(value("--repeat")?, "--repeat")?
                    .try_into()
                    .map_err(|_| "--repeat: too large")?
            }
            "--rounds" => o.rounds = num(value("--rounds")?, "--rounds")? as usize,
            "--compile-runs" => o.compile_runs = num(value("--compile-runs")?, "--compile-runs")? as usize,
            "--memory-runs" => o.memory_runs = num(value("--memory-runs")?, "--memory-runs")? as usize,
            "--only" => o.only.push(value("--only")?),
            "--cpu" => o.cpu = Some(num(value("--cpu")?, "--cpu")? as usize),
            "--no-build" => o.build = false,
            "--no-reload" => o.reload = false,
            "--write" => write = Some(true),
            "--no-write" => write = Some(false),
            "--md" => o.md = PathBuf::from(value("--md")?),
            "--json" => o.json = PathBuf::from(value("--json")?),
            other => return Err(format!("unknown argument `{other}`\n\n{HELP}")),
        }
    }
    if parts == 0 {
        (o.verify, o.run, o.compile) = (true, true, true);
    }
    o.write = write.unwrap_or(o.verify && o.run && o.compile);
    if o.rounds == 0 || o.compile_runs == 0 || o.repeat == 0 {
        return Err("--repeat, --rounds and --compile-runs must be at least 1".into());
    }
    Ok(o)
}

/// One packet's timings: per round, both sides (kernel ns per run) and their ratio.
#[derive(Default)]
pub struct PacketTiming {
    pub name: &'static str,
    pub what: &'static str,
    pub len: usize,
    pub expect: u32,
    /// The verdict of one run, per side (None: not loaded or the run failed).
    pub verdict: [Option<u32>; 2],
    /// Kernel-reported mean ns per run, per round, per side.
    pub ns: [Vec<f64>; 2],
    /// Wall-clock ns per run around the syscall (includes the syscall's fixed cost / repeat).
    pub wall_ns: [Vec<f64>; 2],
    /// luabpf / clang, per round (kernel ns).
    pub ratios: Vec<f64>,
    /// luabpf / clang, per round (wall clock): a finer-grained cross-check for fast programs.
    pub wall_ratios: Vec<f64>,
    pub errors: Vec<String>,
}

/// Whole-process and in-process compile timings of one example.
#[derive(Default)]
pub struct CompileTiming {
    pub in_process_ms: Vec<f64>,
    /// Per measured command (label, command line, runs or the error that stopped them).
    pub commands: Vec<CommandTiming>,
}

pub struct CommandTiming {
    pub label: &'static str,
    pub cmd: process::Cmd,
    pub runs: Vec<process::Run>,
    /// Peak RSS of separate runs under GNU time, KiB.
    pub rss_kib: Vec<u64>,
    pub rss_error: Option<String>,
    pub error: Option<String>,
}

pub struct ExampleResult {
    pub name: &'static str,
    pub lua_path: PathBuf,
    pub c_path: PathBuf,
    pub stats: [ObjectStats; 2],
    /// The same filter in Lua with hand-written offsets (bench/lua/NAME_handwritten.lua), if
    /// there is one: what the stdlib-based example should cost no more than (issue 8).
    pub handwritten: Option<ObjectStats>,
    pub behaviour: Option<Behaviour>,
    pub packets: Vec<PacketTiming>,
    pub compile: Option<CompileTiming>,
}

pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub date: String,
    pub git: String,
    pub clang_version: String,
    pub rustc: String,
}

pub struct Results {
    /// The workspace root and the temporary directory, shown as `.` and `$TMP` in the report.
    pub root: PathBuf,
    pub tmp: PathBuf,
    pub options: Options,
    pub machine: Machine,
    pub examples: Vec<ExampleResult>,
    pub binaries: Vec<(String, String)>,
    pub elapsed_s: f64,
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "wire") {
        std::process::exit(wire::main(&root, &args[1..]));
    }
    let opts = match parse_args(&root) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    if let Some(cpu) = opts.cpu {
        pin_to_cpu(cpu);
    }
    let started = Instant::now();
    let loadavg_start = read_trim("/proc/loadavg");
    let tmp = TempDir::new();

    let mut examples = programs::examples(&root);
    if !opts.only.is_empty() {
        examples.retain(|e| opts.only.iter().any(|o| o == e.name));
        if examples.is_empty() {
            eprintln!("bench: --only matched no example");
            std::process::exit(2);
        }
    }

    let mut results: Vec<ExampleResult> = Vec::new();
    let mut loaded: Vec<[Option<Loaded>; 2]> = Vec::new();
    let mut elfs: Vec<[Option<Vec<u8>>; 2]> = Vec::new();
    if opts.verify || opts.run {
        for ex in &examples {
            eprintln!("bench: building and loading {}", ex.name);
            let (stats, l, e) = build_and_load(ex, &tmp.0);
            elfs.push(e);
            results.push(ExampleResult {
                name: ex.name,
                lua_path: ex.lua.clone(),
                c_path: ex.c.clone(),
                stats,
                handwritten: handwritten_stats(&root, ex.name),
                behaviour: None,
                packets: Vec::new(),
                compile: None,
            });
            loaded.push(l);
        }
    } else {
        for ex in &examples {
            results.push(ExampleResult {
                name: ex.name,
                lua_path: ex.lua.clone(),
                c_path: ex.c.clone(),
                stats: Default::default(),
                handwritten: None,
                behaviour: None,
                packets: Vec::new(),
                compile: None,
            });
            loaded.push([None, None]);
            elfs.push([None, None]);
        }
    }
    for (i, r) in results.iter().enumerate() {
        for side in [Side::Luabpf, Side::Clang] {
            let s = &r.stats[side as usize];
            if let Some(d) = s.status.detail() {
                eprintln!(
                    "bench: {} ({}): {}: {}",
                    r.name,
                    side.label(),
                    s.status.short(),
                    first_lines(d, 3)
                );
            }
        }
        let _ = i;
    }

    if opts.verify {
        for (i, ex) in examples.iter().enumerate() {
            if let [Some(a), Some(b)] = &loaded[i] {
                eprintln!("bench: behaviour check {}", ex.name);
                results[i].behaviour = Some(behaviour::check(&root, ex, a, b));
                for l in [a, b] {
                    let _ = (ex.reset)(l).and_then(|()| (ex.setup)(l));
                }
            }
        }
    }

    if opts.run {
        time_runs(&opts, &examples, &loaded, &elfs, &mut results);
    }
    drop(loaded);

    let mut binaries = Vec::new();
    if opts.compile {
        binaries = time_compiles(&opts, &root, &examples, &tmp.0, &mut results);
    }

    let machine = Machine {
        kernel: command_output("uname", &["-r"]),
        cpu_model: cpu_model(),
        // The machine's, not the harness's: `--cpu` pins it to one, and available_parallelism
        // counts only the CPUs it may run on.
        cpus: usize::try_from(unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).unwrap_or(0),
        loadavg_start,
        loadavg_end: read_trim("/proc/loadavg"),
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        git: git_description(&root),
        clang_version: command_output(objects::CLANG, &["--version"])
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        rustc: command_output("rustc", &["--version"]),
    };
    let results = Results {
        root: root.clone(),
        tmp: tmp.0.clone(),
        options: opts,
        machine,
        examples: results,
        binaries,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let md = report::markdown(&results);
    print!("{md}");
    if results.options.write {
        for (path, text) in [
            (&results.options.md, md),
            (&results.options.json, report::json(&results).render()),
        ] {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("bench: cannot write {}: {e}", path.display());
                std::process::exit(2);
            }
            eprintln!("bench: wrote {}", path.display());
        }
    }
}

/// Compiles both versions and loads them; a side that fails is recorded, not fatal.
fn build_and_load(ex: &Example, tmp: &Path) -> ([ObjectStats; 2], [Option<Loaded>; 2], [Option<Vec<u8>>; 2]) {
    let mut stats: [ObjectStats; 2] = Default::default();
    let mut loaded: [Option<Loaded>; 2] = [None, None];
    let mut elfs: [Option<Vec<u8>>; 2] = [None, None];
    let objs = [
        objects::compile_lua(&ex.lua),
        objects::compile_c(&ex.c, &tmp.join(format!("{}.o", ex.name))),
    ];
    for (side, obj) in [Side::Luabpf, Side::Clang].into_iter().zip(objs) {
        let s = &mut stats[side as usize];
        match obj {
            Ok(elf) => {
                loaded[side as usize] = objects::load_object(&elf, ex.name, s);
                if let Some(l) = &loaded[side as usize] {
                    if let Err(e) = (ex.setup)(l) {
                        s.status = Status::LoadFailed(format!("map setup: {e}"));
                        loaded[side as usize] = None;
                    }
                }
                if loaded[side as usize].is_some() {
                    elfs[side as usize] = Some(elf);
                }
            }
            Err(e) => {
                s.status = Status::CompileError(e);
            }
        }
    }
    (stats, loaded, elfs)
}

/// Compiles and loads bench/lua/NAME_handwritten.lua for its costs only (it is not timed).
fn handwritten_stats(root: &Path, name: &str) -> Option<ObjectStats> {
    let path = root.join("bench/lua").join(format!("{name}_handwritten.lua"));
    if !path.exists() {
        return None;
    }
    let mut s = ObjectStats::default();
    match objects::compile_lua(&path) {
        Ok(elf) => drop(objects::load_object(&elf, name, &mut s)),
        Err(e) => s.status = Status::CompileError(e),
    }
    Some(s)
}

/// The interleaved BPF_PROG_TEST_RUN measurements: every round visits every packet of every
/// example and runs luabpf's program and clang's back to back (alternating which goes first).
fn time_runs(
    opts: &Options,
    examples: &[Example],
    loaded: &[[Option<Loaded>; 2]],
    elfs: &[[Option<Vec<u8>>; 2]],
    results: &mut [ExampleResult],
) {
    for (i, ex) in examples.iter().enumerate() {
        results[i].packets = ex
            .packets
            .iter()
            .map(|p| PacketTiming {
                name: p.name,
                what: p.what,
                len: p.bytes.len(),
                expect: p.expect,
                ..Default::default()
            })
            .collect();
        // One plain run each: the verdicts the table shows.
        for (j, p) in ex.packets.iter().enumerate() {
            for side in [Side::Luabpf, Side::Clang] {
                if let Some(l) = &loaded[i][side as usize] {
                    let fd = l.program_fd(ex.name).expect("loaded program");
                    match test_run(fd, &p.bytes, 1) {
                        Ok(r) => results[i].packets[j].verdict[side as usize] = Some(r.retval),
                        Err(e) => results[i].packets[j].errors.push(format!("{}: {e}", side.label())),
                    }
                }
            }
        }
    }
    for round in 0..opts.rounds {
        eprintln!("bench: test-run round {}/{}", round + 1, opts.rounds);
        let order = if round % 2 == 0 {
            [Side::Luabpf, Side::Clang]
        } else {
            [Side::Clang, Side::Luabpf]
        };
        for (i, ex) in examples.iter().enumerate() {
            // A fresh load of both programs each round (unless --no-reload): where the JITed
            // image and the maps land changes a program's speed by up to ~1.5x from one load
            // to the next, so a single load would bias the whole run one way. Loaded in the
            // round's order too: the second load's maps and image land where the first's did
            // not.
            let mut fresh: [Option<Loaded>; 2] = [None, None];
            if opts.reload {
                for side in order {
                    let k = side as usize;
                    fresh[k] = elfs[i][k].as_ref().and_then(|elf| {
                        let l = luabpf_loader::load(elf).ok()?;
                        (ex.setup)(&l).ok()?;
                        Some(l)
                    });
                }
            }
            for k in 0..2 {
                if opts.reload && elfs[i][k].is_some() && fresh[k].is_none() {
                    for pt in &mut results[i].packets {
                        if pt.errors.len() < 3 {
                            pt.errors.push(format!("round {}: a fresh load failed", round + 1));
                        }
                    }
                }
            }
            for (j, p) in ex.packets.iter().enumerate() {
                let mut got = [None, None];
                let mut wall_got = [None, None];
                for side in order {
                    let chosen = if opts.reload {
                        &fresh[side as usize]
                    } else {
                        &loaded[i][side as usize]
                    };
                    let Some(l) = chosen else {
                        continue;
                    };
                    let fd = l.program_fd(ex.name).expect("loaded program");
                    let t = Instant::now();
                    let r = test_run(fd, &p.bytes, opts.repeat);
                    let wall = t.elapsed().as_secs_f64() * 1e9 / f64::from(opts.repeat);
                    let pt = &mut results[i].packets[j];
                    match r {
                        Ok(r) => {
                            pt.ns[side as usize].push(f64::from(r.duration_ns));
                            pt.wall_ns[side as usize].push(wall);
                            got[side as usize] = Some(f64::from(r.duration_ns));
                            wall_got[side as usize] = Some(wall);
                        }
                        Err(e) => {
                            if pt.errors.len() < 3 {
                                pt.errors.push(format!("{}: {e}", side.label()));
                            }
                        }
                    }
                }
                if let [Some(a), Some(b)] = got {
                    if b > 0.0 {
                        results[i].packets[j].ratios.push(a / b);
                    }
                }
                if let [Some(a), Some(b)] = wall_got {
                    if b > 0.0 {
                        results[i].packets[j].wall_ratios.push(a / b);
                    }
                }
            }
        }
    }
}

/// What one of scripts/install's helper scripts prints, run from the repository with
/// `target_dir` as the target directory (its notes go to our stderr), or why it failed:
/// scripts/dist-rustflags (the RUSTFLAGS: the C library linked statically, and the
/// profile-guided optimisation when it can be had) and scripts/dist-target (musl where it can
/// be had, else the host).
fn dist_script(root: &Path, script: &str, target_dir: &Path) -> Result<String, String> {
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts").join(script))
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run scripts/{script}: {e}"))?;
    if !out.status.success() {
        return Err(format!("scripts/{script} failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds the compiler binaries (a no-op when fresh) and times whole compiler processes,
/// interleaved, plus luabpf's in-process compile. Returns the binaries used and their state.
fn time_compiles(
    opts: &Options,
    root: &Path,
    examples: &[Example],
    tmp: &Path,
    results: &mut [ExampleResult],
) -> Vec<(String, String)> {
    // The timed binaries are built as scripts/install builds the installed command: the
    // `dist` profile (Cargo.toml) for scripts/dist-target's target (musl where it can be had),
    // with the C library linked statically and the profile-guided optimisation; in the target
    // directory the harness itself was built into.
    let target_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_else(|| root.join("target"));
    let triple = match dist_script(root, "dist-target", &target_dir) {
        Ok(t) => t,
        Err(why) => {
            eprintln!("bench: {why}");
            return vec![("luabpf".into(), format!("not available: {why}"))];
        }
    };
    let target = target_dir.join(&triple).join("dist");
    let lbc = target.join("examples/lbc");
    let cli = target.join("luabpf");
    let mut binaries = Vec::new();
    let mut cli_ok = true;
    let mut lbc_ok = true;
    if opts.build {
        let rustflags = dist_script(root, "dist-rustflags", &target_dir);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let dist = |what: &'static str, kind: &'static str| {
            vec!["build", "--profile", "dist", "--target", &triple, "-p", what, kind]
        };
        for (what, mut args, ok) in [
            ("lbc", dist("luabpf-compiler", "--example"), &mut lbc_ok),
            ("luabpf", dist("luabpf-loader", "--bin"), &mut cli_ok),
        ] {
            args.push(what);
            let rustflags = match &rustflags {
                Ok(flags) => flags,
                Err(why) => {
                    *ok = false;
                    binaries.push((what.to_string(), format!("not available: {why}")));
                    continue;
                }
            };
            eprintln!("bench: RUSTFLAGS='{rustflags}' cargo {}", args.join(" "));
            let out = std::process::Command::new(&cargo)
                .args(&args)
                .env("RUSTFLAGS", rustflags)
                .current_dir(root)
                .output();
            match out {
                Ok(o) if o.status.success() => binaries.push((
                    what.to_string(),
                    format!("built by `RUSTFLAGS='{rustflags}' cargo {}`", args.join(" ")),
                )),
                Ok(o) => {
                    *ok = false;
                    let err = String::from_utf8_lossy(&o.stderr);
                    let first = err.lines().find(|l| l.starts_with("error")).unwrap_or("build failed");
                    binaries.push((
                        what.to_string(),
                        format!("not available: `cargo {}` failed: {first}", args.join(" ")),
                    ));
                }
                Err(e) => {
                    *ok = false;
                    binaries.push((what.to_string(), format!("not available: cannot run cargo: {e}")));
                }
            }
        }
    } else {
        binaries.push(("lbc".into(), "used as found (--no-build)".into()));
        binaries.push(("luabpf".into(), "used as found (--no-build)".into()));
    }
    lbc_ok &= lbc.is_file();
    cli_ok &= cli.is_file();

    for (i, ex) in examples.iter().enumerate() {
        eprintln!("bench: compile times {}", ex.name);
        let mut ct = CompileTiming::default();
        // In process: the library call the CLI makes, parse to ELF bytes.
        for _ in 0..opts.compile_runs {
            let t = Instant::now();
            let ok = objects::compile_lua(&ex.lua).is_ok();
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if ok {
                ct.in_process_ms.push(ms);
            }
        }
        let out = |tag: &str| tmp.join(format!("{}-{tag}.o", ex.name)).display().to_string();
        let lua = ex.lua.display().to_string();
        if cli_ok {
            ct.commands.push(CommandTiming {
                label: "luabpf compile",
                cmd: process::Cmd {
                    program: cli.clone(),
                    args: vec!["compile".into(), lua.clone(), "-o".into(), out("cli")],
                },
                runs: Vec::new(),
                rss_kib: Vec::new(),
                rss_error: None,
                error: None,
            });
        }
        if lbc_ok {
            ct.commands.push(CommandTiming {
                label: "lbc (example driver)",
                cmd: process::Cmd {
                    program: lbc.clone(),
                    args: vec![lua.clone(), "obj".into(), out("lbc")],
                },
                runs: Vec::new(),
                rss_kib: Vec::new(),
                rss_error: None,
                error: None,
            });
        }
        let mut clang_args: Vec<String> = objects::CLANG_ARGS.iter().map(|s| s.to_string()).collect();
        clang_args.extend([ex.c.display().to_string(), "-o".into(), out("clang")]);
        ct.commands.push(CommandTiming {
            label: "clang-19",
            cmd: process::Cmd {
                program: PathBuf::from(objects::CLANG),
                args: clang_args,
            },
            runs: Vec::new(),
            rss_kib: Vec::new(),
            rss_error: None,
            error: None,
        });
        // One untimed warm-up each (page cache, dynamic loader), then interleaved runs with a
        // rotating order.
        for c in &mut ct.commands {
            if let Err(e) = process::run(&c.cmd) {
                c.error = Some(e);
            }
        }
        let n = ct.commands.len();
        for r in 0..opts.compile_runs {
            for k in 0..n {
                let c = &mut ct.commands[(k + r) % n];
                if c.error.is_some() {
                    continue;
                }
                match process::run(&c.cmd) {
                    Ok(run) => c.runs.push(run),
                    Err(e) => c.error = Some(e),
                }
            }
        }
        // Peak memory: separate runs under GNU time, interleaved too.
        let scratch = tmp.join("rss.txt");
        for r in 0..opts.memory_runs {
            for k in 0..n {
                let c = &mut ct.commands[(k + r) % n];
                if c.error.is_some() || c.rss_error.is_some() {
                    continue;
                }
                match process::peak_rss_kib(&c.cmd, &scratch) {
                    Ok(kib) => c.rss_kib.push(kib),
                    Err(e) => c.rss_error = Some(e),
                }
            }
        }
        results[i].compile = Some(ct);
    }
    binaries
}

fn first_lines(s: &str, n: usize) -> String {
    s.lines().take(n).collect::<Vec<_>>().join(" | ")
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    read_trim("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn git_description(root: &Path) -> String {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(root)
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{rev} + uncommitted changes")
    } else {
        rev
    }
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; the calls only read/write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("bench: cannot pin to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
}

/// A private temporary directory for objects, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("luabpf-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
