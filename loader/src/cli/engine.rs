//! Where `luabpf run` runs a program: in the kernel (`BPF_PROG_TEST_RUN`) or in runtime-bpf's
//! user-space interpreter, chosen with `--engine` (`auto`: the kernel when `bpf()` works here,
//! else the interpreter, with a note on stderr). Both present the same interface: seed a map,
//! run a packet, and keep map contents between packets.

use clap::ValueEnum;
use luabpf_compiler::reference::MapDump;
use luabpf_loader::differential::{interp_maps, seed_interp, Engine as _, KernelEngine};
use luabpf_loader::{kernel_available, load, netfilter, test_run, LoadError, Loaded, TestRunError, UpdateMode};
use runtime_bpf::interp::{InterpError, Machine};
use runtime_bpf::object::Object;

use super::output::CliError;

/// The `--engine` choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    /// The kernel when bpf() works here, else the interpreter
    #[default]
    Auto,
    /// The running kernel, through its verifier and BPF_PROG_TEST_RUN (needs bpf())
    Kernel,
    /// luabpf's user-space BPF interpreter (no privileges needed)
    Interp,
}

/// A program ready to run packets.
pub enum Engine {
    Kernel { loaded: Loaded, program: String },
    Interp { machine: Box<Machine>, program: String },
}

/// One packet's outcome.
pub struct Ran {
    pub retval: u32,
    pub data_out: Vec<u8>,
}

/// Why one packet did not run: `skip` when the engine refuses the packet itself (too short).
pub struct NotRun {
    pub skip: bool,
    pub why: String,
}

impl Engine {
    /// Loads `program` of the object into the chosen engine.
    /// `verbose`: a verifier refusal prints the whole log, not its last lines.
    pub fn open(
        choice: EngineChoice,
        elf: &[u8],
        object: &Object,
        program: &str,
        verbose: bool,
    ) -> Result<Engine, CliError> {
        let kernel = match choice {
            EngineChoice::Interp => false,
            EngineChoice::Kernel => match kernel_available() {
                Ok(()) => true,
                Err(why) => {
                    return Err(CliError::Usage(format!(
                        "cannot use bpf() here: {why}\n\
                         --engine kernel loads the program into the running kernel: run it as \
                         root, or with CAP_BPF and CAP_NET_ADMIN, or use --engine interp"
                    )))
                }
            },
            EngineChoice::Auto => match kernel_available() {
                Ok(()) => true,
                Err(why) => {
                    eprintln!(
                        "note: bpf() is unavailable here ({why}): running the program in luabpf's \
                         BPF interpreter (--engine interp)"
                    );
                    false
                }
            },
        };
        if !kernel {
            let machine = Machine::new(object).map_err(|e| CliError::Refused(format!("cannot run the object: {e}")))?;
            return Ok(Engine::Interp {
                machine: Box::new(machine),
                program: program.to_string(),
            });
        }
        let loaded = match load(elf) {
            Ok(l) => l,
            Err(LoadError::Verifier(v)) => return Err(CliError::Refused(v.render(verbose).trim_end().to_string())),
            Err(e) => return Err(CliError::Refused(e.to_string())),
        };
        if loaded.program_fd(program).is_none() {
            return Err(CliError::Refused(format!(
                "program `{program}` was not loaded (loaded: {})",
                loaded.program_names().join(", ")
            )));
        }
        Ok(Engine::Kernel {
            loaded,
            program: program.to_string(),
        })
    }

    /// The engine's name in the output: `kernel` or `interpreter`.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Kernel { .. } => "kernel",
            Engine::Interp { .. } => "interpreter",
        }
    }

    /// `map[key] = value` before the first packet (every CPU of a per-CPU map).
    pub fn seed(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
        match self {
            Engine::Kernel { loaded, .. } => loaded
                .map(map)
                .and_then(|m| m.update(key, value, UpdateMode::Any))
                .map_err(|e| e.to_string()),
            Engine::Interp { machine, .. } => seed_interp(machine, map, key, value),
        }
    }

    /// Runs one packet; map changes persist for the next.
    /// `family` is set for a netfilter program, which is handed the IP packet of that family.
    pub fn run(&mut self, packet: &[u8], family: Option<netfilter::Family>) -> Result<Ran, NotRun> {
        match self {
            Engine::Kernel { loaded, program } => {
                let fd = loaded.program_fd(program).expect("checked when opened");
                let result = match family {
                    Some(family) => netfilter::test_run(fd, packet, family, 1),
                    None => test_run(fd, packet, 1),
                };
                match result {
                    Ok(r) => Ok(Ran {
                        retval: r.retval,
                        data_out: r.data_out,
                    }),
                    Err(e) => Err(NotRun {
                        skip: matches!(e, TestRunError::PacketTooShort { .. }),
                        why: e.to_string(),
                    }),
                }
            }
            Engine::Interp { machine, program } => {
                let result = match family {
                    Some(family) => machine.run_netfilter(program, packet, family.pf() as u8),
                    None => machine.run(program, packet),
                };
                match result {
                    Ok(r) => {
                        for line in &r.trace {
                            eprintln!("trace: {line}");
                        }
                        Ok(Ran {
                            retval: r.retval,
                            data_out: r.data_out,
                        })
                    }
                    Err(e) => Err(NotRun {
                        skip: matches!(e, InterpError::Packet(_)) && packet.len() < runtime_bpf::interp::MIN_PACKET,
                        why: e.to_string(),
                    }),
                }
            }
        }
    }

    /// Every map's contents as the kernel's bytes, for comparison with the reference; per-CPU
    /// maps show `cpu`'s values (the interpreter runs as CPU 0).
    pub fn dump(&self, cpu: usize) -> Result<Vec<MapDump>, String> {
        match self {
            Engine::Kernel { loaded, program } => KernelEngine {
                loaded,
                program: program.clone(),
                cpu,
            }
            .dump(),
            Engine::Interp { machine, .. } => Ok(interp_maps(machine)),
        }
    }
}
