//! The behaviour check: the C baseline must be the same filter as the example. Every input
//! runs once through both programs; they must give the same verdict and change their maps the
//! same way. The inputs are the timed packets and the extra ones cut at every length, and every
//! packet of the example's test corpus (tests/corpus/NAME.pcap: VLAN tags, IP options,
//! truncations, random mutations), run whole.

use std::collections::BTreeMap;
use std::path::Path;

use luabpf_loader::{test_run, Loaded, UpdateMode};

use crate::programs::{verdict_name, Example};

/// How many inputs of one kind ran, and on how many the two programs agreed.
#[derive(Default, Clone, Copy)]
pub struct Tally {
    pub compared: usize,
    pub same_verdict: usize,
    /// Same verdict and the same map changes.
    pub same_maps: usize,
}

/// Agreement of the two programs.
#[derive(Default)]
pub struct Behaviour {
    /// The timed and extra packets, each cut at every length from 14 bytes.
    pub cut: Tally,
    /// The packets of tests/corpus/NAME.pcap.
    pub corpus: Tally,
    /// The first few disagreements (or why the corpus could not be read).
    pub disagreements: Vec<String>,
}

/// The disagreements a report lists (the counts say how many there were).
const SHOWN: usize = 8;

/// (map, key) -> value; per-CPU values summed (as little-endian u64 words), values of maps
/// whose values are not compared left empty.
type Snapshot = BTreeMap<(&'static str, Vec<u8>), Vec<u8>>;

fn snapshot(ex: &Example, l: &Loaded) -> Result<Snapshot, String> {
    let mut out = Snapshot::new();
    for &(name, compare_values) in ex.maps {
        let map = l.map(name).map_err(|e| e.to_string())?;
        let keys: Vec<Vec<u8>> = map.keys().collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        for key in keys {
            let value = if map.is_percpu() {
                let per_cpu = map.lookup_percpu(&key).map_err(|e| e.to_string())?.unwrap_or_default();
                sum_words(&per_cpu)
            } else {
                map.lookup(&key).map_err(|e| e.to_string())?.unwrap_or_default()
            };
            out.insert((name, key), if compare_values { value } else { Vec::new() });
        }
    }
    Ok(out)
}

/// The per-CPU copies of a value added up word by word: a program's effect does not depend on
/// the CPU its test run happened to run on.
fn sum_words(per_cpu: &[Vec<u8>]) -> Vec<u8> {
    let Some(first) = per_cpu.first() else {
        return Vec::new();
    };
    let mut sum = vec![0u8; first.len()];
    for (i, chunk) in sum.chunks_exact_mut(8).enumerate() {
        let total = per_cpu
            .iter()
            .map(|v| u64::from_le_bytes(v[i * 8..i * 8 + 8].try_into().unwrap()))
            .fold(0u64, u64::wrapping_add);
        chunk.copy_from_slice(&total.to_le_bytes());
    }
    sum
}

/// What changed from `before` to `after`: (map, key) -> (old, new), `None` for absent.
type Changes = BTreeMap<(&'static str, Vec<u8>), (Option<Vec<u8>>, Option<Vec<u8>>)>;

fn changes(before: &Snapshot, after: &Snapshot) -> Changes {
    let mut out = Changes::new();
    for (k, old) in before {
        if after.get(k) != Some(old) {
            out.insert(k.clone(), (Some(old.clone()), after.get(k).cloned()));
        }
    }
    for (k, new) in after {
        if !before.contains_key(k) {
            out.insert(k.clone(), (None, Some(new.clone())));
        }
    }
    out
}

/// Puts back what a run changed, so that every input starts from the same maps.
fn restore(l: &Loaded, changed: &Changes) -> Result<(), String> {
    for ((name, key), (old, _)) in changed {
        let map = l.map(name).map_err(|e| e.to_string())?;
        let done = match old {
            None => map.delete(key).map(drop),
            // A value not compared (a time stamp) is put back as zeros: only presence counts.
            Some(v) if v.is_empty() => map.update(key, &vec![0u8; map.value_size() as usize], UpdateMode::Any),
            Some(v) if map.is_percpu() => {
                let mut values = vec![vec![0u8; v.len()]; luabpf_loader::possible_cpus().map_err(|e| e.to_string())?];
                values[0] = v.clone();
                map.update_percpu(key, &values, UpdateMode::Any)
            }
            Some(v) => map.update(key, v, UpdateMode::Any),
        };
        done.map_err(|e| format!("restoring map `{name}`: {e}"))?;
    }
    Ok(())
}

fn show_changes(c: &Changes) -> String {
    if c.is_empty() {
        return "no map change".into();
    }
    let hex = |v: &Option<Vec<u8>>| match v {
        None => "absent".to_string(),
        Some(v) if v.is_empty() => "present".to_string(),
        Some(v) => v.iter().map(|b| format!("{b:02x}")).collect(),
    };
    c.iter()
        .map(|((m, k), (old, new))| format!("{m}[{}] {} -> {}", hex(&Some(k.clone())), hex(old), hex(new)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One program's run of one packet: its verdict and what it changed in its maps (undone
/// before the next packet).
struct Outcome {
    verdict: Result<u32, String>,
    changes: Changes,
}

fn run_one(ex: &Example, l: &Loaded, start: &Snapshot, pkt: &[u8]) -> Result<Outcome, String> {
    (ex.reset)(l)?;
    let fd = l.program_fd(ex.name).ok_or("program not loaded")?;
    let verdict = test_run(fd, pkt, 1).map(|r| r.retval).map_err(|e| e.to_string());
    let after = snapshot(ex, l)?;
    let changes = changes(start, &after);
    restore(l, &changes)?;
    Ok(Outcome { verdict, changes })
}

fn show_verdict(v: &Result<u32, String>) -> String {
    match v {
        Ok(v) => verdict_name(*v),
        Err(e) => format!("error ({e})"),
    }
}

/// Runs `pkt` through both programs and counts the result in `tally`.
fn compare(
    ex: &Example,
    l: [&Loaded; 2],
    start: &[Snapshot; 2],
    pkt: &[u8],
    what: &str,
    tally: &mut Tally,
    out: &mut Vec<String>,
) {
    tally.compared += 1;
    let runs = [run_one(ex, l[0], &start[0], pkt), run_one(ex, l[1], &start[1], pkt)];
    let (a, b) = match runs {
        [Ok(a), Ok(b)] => (a, b),
        [a, b] => {
            let e = a.err().or(b.err()).unwrap_or_default();
            if out.len() < SHOWN {
                out.push(format!("{what}: the harness failed: {e}"));
            }
            return;
        }
    };
    let same_verdict = matches!((&a.verdict, &b.verdict), (Ok(x), Ok(y)) if x == y);
    let same_maps = same_verdict && a.changes == b.changes;
    tally.same_verdict += usize::from(same_verdict);
    tally.same_maps += usize::from(same_maps);
    if !same_maps && out.len() < SHOWN {
        out.push(format!(
            "{what}: luabpf {} ({}), clang {} ({})",
            show_verdict(&a.verdict),
            show_changes(&a.changes),
            show_verdict(&b.verdict),
            show_changes(&b.changes)
        ));
    }
}

/// Both programs through every input; `a` is luabpf's, `b` clang's.
pub fn check(root: &Path, ex: &Example, a: &Loaded, b: &Loaded) -> Behaviour {
    let mut out = Behaviour::default();
    let progs = [a, b];
    for l in progs {
        for (map, key, value) in &ex.check_seeds {
            if let Err(e) = l.map(map).and_then(|m| m.update(key, value, UpdateMode::Any)) {
                out.disagreements.push(format!("seeding map `{map}`: {e}"));
                return out;
            }
        }
    }
    let start = match (reset_snapshot(ex, a), reset_snapshot(ex, b)) {
        (Ok(x), Ok(y)) => [x, y],
        (Err(e), _) | (_, Err(e)) => {
            out.disagreements.push(format!("reading the maps: {e}"));
            return out;
        }
    };

    let mut inputs: Vec<Vec<u8>> = ex.packets.iter().map(|p| p.bytes.clone()).collect();
    inputs.extend(ex.extra.iter().cloned());
    for (k, full) in inputs.iter().enumerate() {
        for len in (luabpf_loader::testrun::ETH_HLEN..=full.len()).rev() {
            let what = format!("input #{k} cut to {len} of {} bytes", full.len());
            compare(
                ex,
                progs,
                &start,
                &full[..len],
                &what,
                &mut out.cut,
                &mut out.disagreements,
            );
        }
    }

    let path = root.join("tests/corpus").join(format!("{}.pcap", ex.name));
    let corpus = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| luabpf_loader::pcap::read(&bytes).map_err(|e| e.to_string()));
    match corpus {
        Ok(capture) => {
            for (n, p) in capture.packets.iter().enumerate() {
                let what = format!("corpus packet {} ({} bytes)", n + 1, p.data.len());
                compare(
                    ex,
                    progs,
                    &start,
                    &p.data,
                    &what,
                    &mut out.corpus,
                    &mut out.disagreements,
                );
            }
        }
        Err(e) => out.disagreements.push(format!("{}: {e}", path.display())),
    }

    for l in progs {
        for (map, key, _) in &ex.check_seeds {
            let _ = l.map(map).and_then(|m| m.delete(key));
        }
    }
    out
}

fn reset_snapshot(ex: &Example, l: &Loaded) -> Result<Snapshot, String> {
    (ex.reset)(l)?;
    snapshot(ex, l)
}
