//! Differential runs: the same packets through several engines (the kernel, the reference
//! Lua interpreter, the user-space BPF interpreter), every disagreement reported.
//!
//! An [`Engine`] runs packets in order with maps that persist between them, takes `--map`
//! seeds and dumps its maps as the kernel's bytes. [`Differential`] drives a list of engines
//! and compares every engine with the first: verdict and packet bytes after each packet, map
//! contents whenever asked. Adding an engine is one more element in that list.

use std::fmt;
use std::os::fd::BorrowedFd;

use luabpf_compiler::reference::{MapDump, Reference};

use crate::load::Loaded;
use crate::maps::RawMap;
use crate::testrun::test_run;

/// What one packet did in one engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub verdict: u32,
    pub data: Vec<u8>,
    /// Why the run took the default verdict, when the engine knows.
    pub error: Option<String>,
    /// The run used values another engine cannot reproduce (the time, random numbers).
    pub nondeterministic: bool,
}

/// A packet filter implementation that can be compared with the others.
pub trait Engine {
    /// A short name for reports: "kernel", "reference".
    fn name(&self) -> &str;
    /// Runs the next packet (maps keep what earlier packets did).
    fn run(&mut self, packet: &[u8]) -> Result<Run, String>;
    /// `map[key] = value` in the kernel's bytes, before the first packet.
    fn seed(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), String>;
    /// The contents of the maps it knows, as the kernel's bytes.
    fn dump(&self) -> Result<Vec<MapDump>, String>;
}

/// The program loaded in the running kernel, run with `BPF_PROG_TEST_RUN`. Per-CPU maps are
/// read on `cpu`, the CPU the caller pinned itself to (see [`pin_to_current_cpu`]).
pub struct KernelEngine<'l> {
    pub loaded: &'l Loaded,
    pub program: String,
    pub cpu: usize,
}

impl<'l> KernelEngine<'l> {
    fn fd(&self) -> Result<BorrowedFd<'_>, String> {
        self.loaded
            .program_fd(&self.program)
            .ok_or_else(|| format!("program `{}` is not loaded", self.program))
    }

    fn map(&self, name: &str) -> Result<RawMap, String> {
        self.loaded.map(name).map_err(|e| e.to_string())
    }
}

impl Engine for KernelEngine<'_> {
    fn name(&self) -> &str {
        "kernel"
    }

    fn run(&mut self, packet: &[u8]) -> Result<Run, String> {
        let r = test_run(self.fd()?, packet, 1).map_err(|e| e.to_string())?;
        Ok(Run {
            verdict: r.retval,
            data: r.data_out,
            error: None,
            nondeterministic: false,
        })
    }

    fn seed(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.map(map)?
            .update(key, value, crate::maps::UpdateMode::Any)
            .map_err(|e| e.to_string())
    }

    fn dump(&self) -> Result<Vec<MapDump>, String> {
        let mut out = Vec::new();
        for name in self.loaded.map_names() {
            let map = self.map(name)?;
            let Some(kind) = map.info().kind() else { continue };
            let mut entries = Vec::new();
            for key in map.keys() {
                let key = key.map_err(|e| e.to_string())?;
                let value = if map.is_percpu() {
                    map.lookup_percpu(&key)
                        .map_err(|e| e.to_string())?
                        .and_then(|mut per_cpu| (self.cpu < per_cpu.len()).then(|| per_cpu.swap_remove(self.cpu)))
                } else {
                    map.lookup(&key).map_err(|e| e.to_string())?
                };
                if let Some(value) = value {
                    entries.push((key, value));
                }
            }
            entries.sort();
            out.push(MapDump {
                name: name.to_string(),
                kind,
                entries,
            });
        }
        Ok(out)
    }
}

/// The reference: the program file in Lua 5.4 over the stdlib/shim/ modules.
impl Engine for Reference {
    fn name(&self) -> &str {
        "reference"
    }

    fn run(&mut self, packet: &[u8]) -> Result<Run, String> {
        let r = Reference::run(self, packet).map_err(|e| e.to_string())?;
        Ok(Run {
            verdict: r.verdict,
            data: r.data,
            error: r.error,
            nondeterministic: r.nondeterministic,
        })
    }

    fn seed(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
        Reference::seed(self, map, key, value).map_err(|e| e.to_string())
    }

    fn dump(&self) -> Result<Vec<MapDump>, String> {
        Reference::dump(self).map_err(|e| e.to_string())
    }
}

/// The object in runtime-bpf's user-space BPF interpreter, which runs as CPU 0.
pub struct InterpEngine {
    pub machine: runtime_bpf::interp::Machine,
    pub program: String,
}

impl Engine for InterpEngine {
    fn name(&self) -> &str {
        "interpreter"
    }

    fn run(&mut self, packet: &[u8]) -> Result<Run, String> {
        let r = self.machine.run(&self.program, packet).map_err(|e| e.to_string())?;
        Ok(Run {
            verdict: r.retval,
            data: r.data_out,
            error: None,
            nondeterministic: false,
        })
    }

    fn seed(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
        seed_interp(&mut self.machine, map, key, value)
    }

    fn dump(&self) -> Result<Vec<MapDump>, String> {
        Ok(interp_maps(&self.machine))
    }
}

/// `map[key] = value` in the interpreter's maps, as a `--map` seed.
pub fn seed_interp(
    machine: &mut runtime_bpf::interp::Machine,
    map: &str,
    key: &[u8],
    value: &[u8],
) -> Result<(), String> {
    machine
        .map_mut(map)
        .ok_or_else(|| format!("no map `{map}`"))?
        .update(key, value, runtime_bpf::helpers::BPF_ANY as u64)
        .map_err(|errno| format!("the update was refused (errno {errno})"))
}

/// The interpreter's maps as the kernel's bytes (per-CPU maps: CPU 0's values).
pub fn interp_maps(machine: &runtime_bpf::interp::Machine) -> Vec<MapDump> {
    machine
        .maps()
        .iter()
        .map(|m| MapDump {
            name: m.spec.name.clone(),
            kind: m.spec.kind,
            entries: m.entries(),
        })
        .collect()
}

/// One difference between the first engine (`expected`) and another (`got`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement {
    /// 1-based packet number; `None` for map contents compared after the packets.
    pub packet: Option<usize>,
    /// "verdict", "packet bytes", "map NAME".
    pub what: String,
    pub expected_engine: String,
    pub expected: String,
    pub engine: String,
    pub got: String,
    /// The other engine's run used the time or random numbers: a difference is expected
    /// and not counted.
    pub excused: bool,
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.packet {
            Some(n) => write!(f, "packet {n}: ")?,
            None => write!(f, "after the last packet: ")?,
        }
        write!(
            f,
            "{} differs: {} {}, {} {}",
            self.what, self.expected_engine, self.expected, self.engine, self.got
        )?;
        if self.excused {
            write!(
                f,
                " (not counted: the {} run read the time or a random number)",
                self.engine
            )?;
        }
        Ok(())
    }
}

/// Several engines over the same packets.
pub struct Differential<'e> {
    pub engines: Vec<Box<dyn Engine + 'e>>,
    /// Whether an engine's run so far was nondeterministic: map values may then differ.
    nondeterministic: bool,
}

impl<'e> Differential<'e> {
    pub fn new(engines: Vec<Box<dyn Engine + 'e>>) -> Differential<'e> {
        Differential {
            engines,
            nondeterministic: false,
        }
    }

    /// Seeds every engine.
    pub fn seed(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
        for e in &mut self.engines {
            e.seed(map, key, value).map_err(|why| format!("{}: {why}", e.name()))?;
        }
        Ok(())
    }

    /// Runs packet number `n` (1-based) in every engine: the runs, in engine order, and the
    /// disagreements with the first engine.
    pub fn packet(&mut self, n: usize, packet: &[u8]) -> Result<(Vec<Run>, Vec<Disagreement>), String> {
        let mut runs = Vec::with_capacity(self.engines.len());
        for e in &mut self.engines {
            runs.push(
                e.run(packet)
                    .map_err(|why| format!("packet {n}: {}: {why}", e.name()))?,
            );
        }
        let mut out = Vec::new();
        for (e, run) in self.engines.iter().zip(&runs).skip(1) {
            let d = compare_runs(n, (self.engines[0].name(), &runs[0]), (e.name(), run));
            self.nondeterministic |= run.nondeterministic || runs[0].nondeterministic;
            out.extend(d);
        }
        Ok((runs, out))
    }

    /// Compares the maps every engine knows (by name) with the first engine's.
    pub fn maps(&self) -> Result<Vec<Disagreement>, String> {
        let dumps: Vec<Vec<MapDump>> = self
            .engines
            .iter()
            .map(|e| e.dump().map_err(|why| format!("{}: {why}", e.name())))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for (e, dump) in self.engines.iter().zip(&dumps).skip(1) {
            out.extend(compare_dumps(
                (self.engines[0].name(), &dumps[0]),
                (e.name(), dump),
                self.nondeterministic,
            ));
        }
        Ok(out)
    }
}

/// The differences between two engines' runs of packet `n`: verdict, then packet bytes.
pub fn compare_runs(n: usize, expected: (&str, &Run), got: (&str, &Run)) -> Vec<Disagreement> {
    let ((expected_engine, first), (engine, run)) = (expected, got);
    let excused = run.nondeterministic || first.nondeterministic;
    let mut out = Vec::new();
    let mut differ = |what: &str, expected: String, got: String| {
        out.push(Disagreement {
            packet: Some(n),
            what: what.to_string(),
            expected_engine: expected_engine.to_string(),
            expected,
            engine: engine.to_string(),
            got,
            excused,
        })
    };
    if run.verdict != first.verdict {
        let why = |r: &Run| r.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
        differ(
            "verdict",
            format!("{}{}", first.verdict, why(first)),
            format!("{}{}", run.verdict, why(run)),
        );
    }
    if run.data != first.data {
        let (a, b) = first_difference(&first.data, &run.data);
        differ("packet bytes", a, b);
    }
    out
}

/// The maps both dumps hold (by name) whose contents differ. With `nondeterministic` runs
/// behind, differing values under the same keys are excused (the time, random numbers).
pub fn compare_dumps(
    expected: (&str, &[MapDump]),
    got: (&str, &[MapDump]),
    nondeterministic: bool,
) -> Vec<Disagreement> {
    let mut out = Vec::new();
    for map in got.1 {
        let Some(reference) = expected.1.iter().find(|m| m.name == map.name) else {
            continue;
        };
        if let Some((a, b, keys_agree)) = map_difference(&reference.entries, &map.entries) {
            out.push(Disagreement {
                packet: None,
                what: format!("map {}", map.name),
                expected_engine: expected.0.to_string(),
                expected: a,
                engine: got.0.to_string(),
                got: b,
                excused: keys_agree && nondeterministic,
            });
        }
    }
    out
}

/// The first differing byte, described for both sides.
fn first_difference(a: &[u8], b: &[u8]) -> (String, String) {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let show = |d: &[u8]| {
        let end = (at + 8).min(d.len());
        format!("{} bytes, at offset {at}: {}", d.len(), hex(&d[at.min(d.len())..end]))
    };
    (show(a), show(b))
}

/// The first entry that differs, described for both sides, and whether the key sets agree.
fn map_difference(a: &[(Vec<u8>, Vec<u8>)], b: &[(Vec<u8>, Vec<u8>)]) -> Option<(String, String, bool)> {
    if a == b {
        return None;
    }
    let keys_agree = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0);
    let lookup = |m: &[(Vec<u8>, Vec<u8>)], k: &[u8]| {
        m.iter()
            .find(|(key, _)| key == k)
            .map_or("absent".to_string(), |(_, v)| hex(v))
    };
    let key = a
        .iter()
        .chain(b)
        .map(|(k, _)| k)
        .find(|k| lookup(a, k) != lookup(b, k))
        .cloned()
        .unwrap_or_default();
    let describe = |m: &[(Vec<u8>, Vec<u8>)]| format!("{} entries, key {} = {}", m.len(), hex(&key), lookup(m, &key));
    Some((describe(a), describe(b), keys_agree))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Pins the calling thread to the CPU it runs on, so that a program's per-CPU maps are the
/// ones of one CPU across runs; the old affinity comes back when the guard drops.
pub fn pin_to_current_cpu() -> std::io::Result<CpuPin> {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned here.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut one);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(CpuPin { cpu: cpu as usize, old })
    }
}

pub struct CpuPin {
    pub cpu: usize,
    old: libc::cpu_set_t,
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        // SAFETY: restores the mask read in `pin_to_current_cpu`.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_differences() {
        assert_eq!(
            first_difference(&[1, 2, 3], &[1, 9, 3]),
            (
                "3 bytes, at offset 1: 0203".to_string(),
                "3 bytes, at offset 1: 0903".to_string()
            )
        );
        let a = vec![(vec![1], vec![5])];
        let b = vec![(vec![1], vec![6])];
        let (x, y, keys) = map_difference(&a, &b).unwrap();
        assert_eq!(
            (x.as_str(), y.as_str(), keys),
            ("1 entries, key 01 = 05", "1 entries, key 01 = 06", true)
        );
        assert!(map_difference(&a, &a).is_none());
        let (_, y, keys) = map_difference(&a, &[]).unwrap();
        assert_eq!((y.as_str(), keys), ("0 entries, key 01 = absent", false));
    }
}
