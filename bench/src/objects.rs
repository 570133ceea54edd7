//! Building both objects of an example and loading them: object size, the verifier's cost,
//! the kernel's translated and JITed sizes, and the verifier's refusals.

use std::path::Path;
use std::process::Command;

use luabpf_loader::{load, LoadError, Loaded};
use object::{Object as _, ObjectSection as _};

/// The clang command line of the baselines (the output path is appended).
pub const CLANG: &str = "clang-19";
pub const CLANG_ARGS: [&str; 5] = ["-O2", "-g", "-target", "bpf", "-c"];

/// Which compiler produced an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Luabpf,
    Clang,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Luabpf => "luabpf",
            Side::Clang => "clang-19",
        }
    }
}

/// What the kernel said about one object.
#[derive(Clone, Debug, Default)]
pub struct ObjectStats {
    /// Instructions in the object's executable sections (an `ld_imm64` counts as 2).
    pub object_insns: Option<u64>,
    /// `Ok` when loaded; otherwise why not (compile error, verifier refusal, ...).
    pub status: Status,
    /// `bpf_prog_info.verified_insns`, or the log's "processed N insns" for a refusal.
    pub verified_insns: Option<u64>,
    pub xlated_bytes: Option<u64>,
    pub jited_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub enum Status {
    #[default]
    NotBuilt,
    Loaded,
    /// The compiler refused the source.
    CompileError(String),
    /// The verifier refused the program: errno text and its reason.
    Rejected(String),
    /// Any other load failure.
    LoadFailed(String),
}

impl Status {
    pub fn short(&self) -> String {
        match self {
            Status::NotBuilt => "not built".into(),
            Status::Loaded => "loaded".into(),
            Status::CompileError(_) => "compile error".into(),
            Status::Rejected(_) => "rejected by the verifier".into(),
            Status::LoadFailed(_) => "load failed".into(),
        }
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            Status::CompileError(s) | Status::Rejected(s) | Status::LoadFailed(s) => Some(s),
            _ => None,
        }
    }
}

/// Compiles the Lua version in process.
pub fn compile_lua(path: &Path) -> Result<Vec<u8>, String> {
    luabpf_compiler::compile::compile_path(path, &Default::default())
        .map(|c| c.elf)
        .map_err(|e| e.render())
}

/// Compiles the C version with clang-19 into `out`.
pub fn compile_c(src: &Path, out: &Path) -> Result<Vec<u8>, String> {
    let output = Command::new(CLANG)
        .args(CLANG_ARGS)
        .arg(src)
        .arg("-o")
        .arg(out)
        .output()
        .map_err(|e| format!("cannot run {CLANG}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{CLANG} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::read(out).map_err(|e| format!("{}: {e}", out.display()))
}

/// Instructions in the executable sections of an ELF object.
pub fn object_insns(elf: &[u8]) -> Option<u64> {
    let file = object::File::parse(elf).ok()?;
    let mut n = 0;
    for s in file.sections() {
        if let object::SectionFlags::Elf { sh_flags } = s.flags() {
            if sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0 {
                n += s.size() / 8;
            }
        }
    }
    Some(n)
}

/// Loads `elf`, fills in `stats` and returns the loaded object when the verifier took it.
pub fn load_object(elf: &[u8], program: &str, stats: &mut ObjectStats) -> Option<Loaded> {
    stats.object_insns = object_insns(elf);
    match load(elf) {
        Ok(loaded) => {
            let info = loaded.ebpf().program(program).and_then(|p| p.info().ok());
            match info {
                Some(info) => {
                    stats.verified_insns = info.verified_instruction_count().map(u64::from);
                    stats.xlated_bytes = info.size_translated().map(u64::from);
                    stats.jited_bytes = Some(u64::from(info.size_jitted()));
                    stats.status = Status::Loaded;
                    Some(loaded)
                }
                None => {
                    stats.status = Status::LoadFailed(format!(
                        "program `{program}` not found after loading (programs: {:?})",
                        loaded.program_names()
                    ));
                    None
                }
            }
        }
        Err(LoadError::Verifier(v)) => {
            stats.verified_insns = processed_insns(&v.log);
            stats.status = Status::Rejected(format!(
                "{}: {}",
                v.errno_text,
                v.reason().unwrap_or("(no reason in the log)")
            ));
            None
        }
        Err(e) => {
            stats.status = Status::LoadFailed(e.to_string());
            None
        }
    }
}

/// The "processed N insns" figure of a verifier log.
pub fn processed_insns(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        let rest = l.trim().strip_prefix("processed ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn processed_from_log() {
        let log = "0: (b7) r0 = 2\nprocessed 1000001 insns (limit 1000000) max_states_per_insn 20\n";
        assert_eq!(super::processed_insns(log), Some(1000001));
        assert_eq!(super::processed_insns("nothing"), None);
    }
}
