//! `luabpf run --reference`: every packet the kernel ran also runs in the reference Lua
//! interpreter (luabpf_compiler::reference); each disagreement in verdict or packet bytes is
//! printed with the packet number and both answers, then the maps are compared.

use std::path::Path;

use luabpf_compiler::reference::MapDump;
use luabpf_compiler::reference::Reference;
use luabpf_loader::differential::{compare_dumps, compare_runs, pin_to_current_cpu, CpuPin, Disagreement, Engine, Run};

use super::output::CliError;

/// The reference next to the kernel for one `luabpf run`.
pub struct ReferenceCheck {
    reference: Reference,
    /// Per-CPU maps are compared on the CPU the kernel ran on: the command stays there.
    pin: CpuPin,
    json: bool,
    compared: usize,
    counted: usize,
    excused: usize,
    nondeterministic: bool,
}

impl ReferenceCheck {
    /// Loads the program file in the reference; `seeds` are the `--map` seeds, as bytes.
    pub fn start<'s>(
        file: &Path,
        program: &str,
        opts: &luabpf_compiler::compile::Options,
        seeds: impl Iterator<Item = (&'s str, &'s [u8], &'s [u8])>,
        json: bool,
    ) -> Result<ReferenceCheck, CliError> {
        if file.extension().is_some_and(|e| e == "o") {
            return Err(CliError::Usage(
                "--reference runs the Lua program file: give FILE.lua, not an object".into(),
            ));
        }
        let mut reference = Reference::new(file, Some(program), opts).map_err(|e| CliError::Refused(e.to_string()))?;
        let pin = pin_to_current_cpu().map_err(|e| CliError::Usage(format!("cannot pin to one CPU: {e}")))?;
        reference
            .set_cpu(pin.cpu as u32)
            .map_err(|e| CliError::Refused(e.to_string()))?;
        for (map, key, value) in seeds {
            Engine::seed(&mut reference, map, key, value).map_err(|e| CliError::Usage(format!("--map {map}: {e}")))?;
        }
        Ok(ReferenceCheck {
            reference,
            pin,
            json,
            compared: 0,
            counted: 0,
            excused: 0,
            nondeterministic: false,
        })
    }

    /// The CPU whose per-CPU values are compared (the one this command is pinned to).
    pub fn cpu(&self) -> usize {
        self.pin.cpu
    }

    /// The BPF interpreter runs as CPU 0: the reference does too.
    pub fn run_as_cpu0(&mut self) -> Result<(), CliError> {
        self.pin.cpu = 0;
        self.reference.set_cpu(0).map_err(|e| CliError::Refused(e.to_string()))
    }

    /// Runs packet `n` in the reference and compares it with the engine's verdict and packet:
    /// the lines to print, one per disagreement.
    pub fn packet(&mut self, n: usize, data: &[u8], verdict: u32, data_out: &[u8]) -> Result<Vec<String>, CliError> {
        let kernel = Run {
            verdict,
            data: data_out.to_vec(),
            error: None,
            nondeterministic: false,
        };
        let ours = Engine::run(&mut self.reference, data)
            .map_err(|e| CliError::Refused(format!("packet {n}: reference: {e}")))?;
        self.compared += 1;
        self.nondeterministic |= ours.nondeterministic;
        let found = compare_runs(n, ("kernel", &kernel), ("reference", &ours));
        Ok(found.iter().map(|d| self.line(d)).collect())
    }

    /// Compares the maps after the last packet; the lines to print, the last one a summary;
    /// an error when anything disagreed.
    pub fn finish(mut self, engine_maps: Result<Vec<MapDump>, String>) -> (Vec<String>, Result<(), CliError>) {
        let mut lines = Vec::new();
        match (engine_maps, self.reference.dump()) {
            (Ok(k), Ok(r)) => {
                for d in compare_dumps(("kernel", &k), ("reference", &r), self.nondeterministic) {
                    lines.push(self.line(&d));
                }
            }
            (Err(e), _) => {
                return (
                    lines,
                    Err(CliError::Refused(format!("cannot read the kernel's maps: {e}"))),
                )
            }
            (_, Err(e)) => return (lines, Err(CliError::Refused(format!("reference: {e}")))),
        }
        let (compared, counted, excused) = (self.compared, self.counted, self.excused);
        lines.push(if self.json {
            format!("{{\"reference\":{{\"packets\":{compared},\"disagreements\":{counted},\"excused\":{excused}}}}}")
        } else {
            let mut s = format!("reference: {compared} packets compared, {counted} disagreements");
            if excused > 0 {
                s.push_str(&format!(" ({excused} more not counted: the time or random numbers)"));
            }
            s
        });
        let result = if counted > 0 {
            Err(CliError::Refused(format!(
                "the kernel and the reference interpreter disagree ({counted} disagreements)"
            )))
        } else {
            Ok(())
        };
        (lines, result)
    }

    fn line(&mut self, d: &Disagreement) -> String {
        if d.excused {
            self.excused += 1;
        } else {
            self.counted += 1;
        }
        if self.json {
            let packet = d.packet.map_or("null".to_string(), |n| n.to_string());
            format!(
                "{{\"packet\":{packet},\"disagreement\":{},\"kernel\":{},\"reference\":{},\"counted\":{}}}",
                super::run::json_str(&d.what),
                super::run::json_str(&d.expected),
                super::run::json_str(&d.got),
                !d.excused
            )
        } else {
            format!("{d}")
        }
    }
}
