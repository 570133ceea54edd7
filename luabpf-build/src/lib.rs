//! Compiles luabpf Lua filters from a Cargo build script, and writes a typed Rust skeleton for
//! each.
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     luabpf_build::Builder::new().file("bpf/sni_filter.lua").compile_or_exit();
//! }
//! ```
//!
//! For each file, [`Builder::compile`] writes `$OUT_DIR/<name>.o` (the ELF object) and
//! `$OUT_DIR/<name>.rs` (the skeleton, see [`skeleton`]), and prints
//! `cargo:rerun-if-changed=` for the file and every module it requires, so that Cargo reruns
//! the build script when any of them changes. A file that does not compile has its
//! diagnostics printed to stderr (Cargo shows them under the failed build script, with file,
//! line and column) and makes `compile` return [`Error::Compile`].
//!
//! The skeleton's code calls the `luabpf-loader` library (which wraps aya): the crate that
//! includes it needs `luabpf-loader` as a normal dependency. This crate itself has no aya
//! dependency and is meant for `[build-dependencies]`.

use std::path::{Path, PathBuf};

use luabpf_compiler::compile::{compile_evaluated, Compiled, Failure};
use luabpf_compiler::eval::{self, EvalOptions};
use luabpf_compiler::program::Hook;

pub mod names;
pub mod skeleton;

/// The hook the skeleton's attach helpers use, when it is not the one the Lua file declares.
///
/// A program's context (its `ctx` fields, its verdicts) is fixed by its hook, so the compiler
/// cannot turn an XDP program into a tc one: asking for another kind of hook than the file
/// declares fails the build. Between tc ingress and egress (same context) the choice is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramType {
    Xdp,
    TcIngress,
    TcEgress,
    Netfilter,
}

impl ProgramType {
    fn name(self) -> &'static str {
        match self {
            ProgramType::Xdp => "xdp",
            ProgramType::TcIngress => "tc ingress",
            ProgramType::TcEgress => "tc egress",
            ProgramType::Netfilter => "netfilter",
        }
    }
}

/// What one program of a compiled file is attached to, as the skeleton will attach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramInfo {
    /// The program's name (`name = ...` in the Lua file): ELF symbol and kernel name.
    pub name: String,
    pub hook: Hook,
}

/// One compiled file.
#[derive(Clone, Debug)]
pub struct Output {
    /// The Lua file, as given to [`Builder::file`].
    pub source: PathBuf,
    /// The output name: the file's stem unless [`Builder::output_name`] says otherwise.
    pub name: String,
    /// `$OUT_DIR/<name>.o`.
    pub object: PathBuf,
    /// `$OUT_DIR/<name>.rs`.
    pub skeleton: PathBuf,
    /// Every file the build depends on: the Lua file and the modules it required.
    pub dependencies: Vec<PathBuf>,
    pub programs: Vec<ProgramInfo>,
    /// The compiler's result (object model, sources).
    pub compiled: Compiled,
}

/// Why [`Builder::compile`] failed.
#[derive(Debug)]
pub enum Error {
    /// The Lua file did not compile; the rendered diagnostics were printed to stderr.
    Compile {
        file: PathBuf,
        errors: usize,
        /// The diagnostics as printed (codespan-reporting, no colour).
        rendered: String,
    },
    /// Reading or writing a file failed.
    Io { path: PathBuf, source: std::io::Error },
    /// A misuse of the builder (no files, no `OUT_DIR`, a refused program type...).
    Usage(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Compile { file, errors, .. } => write!(
                f,
                "luabpf: {} error{} in {} (diagnostics above)",
                errors,
                if *errors == 1 { "" } else { "s" },
                file.display()
            ),
            Error::Io { path, source } => write!(f, "luabpf: {}: {source}", path.display()),
            Error::Usage(what) => write!(f, "luabpf: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Compiles Lua program files; see the crate documentation.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    files: Vec<PathBuf>,
    include_dirs: Vec<PathBuf>,
    program_type: Option<ProgramType>,
    output_name: Option<String>,
    out_dir: Option<PathBuf>,
    cargo_messages: Option<bool>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    /// A Lua program file to compile (relative paths are relative to the package root, where
    /// Cargo runs build scripts).
    pub fn file(mut self, path: impl AsRef<Path>) -> Builder {
        self.files.push(path.as_ref().to_path_buf());
        self
    }

    /// A directory searched by `require` after the program file's own (`luabpf -I`).
    pub fn include_dir(mut self, dir: impl AsRef<Path>) -> Builder {
        self.include_dirs.push(dir.as_ref().to_path_buf());
        self
    }

    /// The hook the skeleton attaches every program of the files to; see [`ProgramType`].
    pub fn program_type(mut self, program_type: ProgramType) -> Builder {
        self.program_type = Some(program_type);
        self
    }

    /// The name of the outputs (`<name>.o`, `<name>.rs`, the skeleton struct) instead of the
    /// file's stem. Only with a single file.
    pub fn output_name(mut self, name: impl Into<String>) -> Builder {
        self.output_name = Some(name.into());
        self
    }

    /// Where to write the outputs instead of `$OUT_DIR` (for use outside build scripts).
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Builder {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` lines; the default is to print them when
    /// running as a build script (`OUT_DIR` set and no [`Builder::out_dir`]).
    pub fn cargo_messages(mut self, on: bool) -> Builder {
        self.cargo_messages = Some(on);
        self
    }

    /// Compiles every file; stops at the first that fails.
    pub fn compile(&self) -> Result<Vec<Output>, Error> {
        if self.files.is_empty() {
            return Err(Error::Usage("no Lua file given: call `.file(\"filter.lua\")`".into()));
        }
        if self.output_name.is_some() && self.files.len() > 1 {
            return Err(Error::Usage(format!(
                "`output_name` names one output, but {} files are given",
                self.files.len()
            )));
        }
        let out_dir = match (&self.out_dir, std::env::var_os("OUT_DIR")) {
            (Some(dir), _) => dir.clone(),
            (None, Some(dir)) => PathBuf::from(dir),
            (None, None) => {
                return Err(Error::Usage(
                    "OUT_DIR is not set: call `compile` from a build script, or give `.out_dir(..)`".into(),
                ))
            }
        };
        let cargo = self
            .cargo_messages
            .unwrap_or(self.out_dir.is_none() && std::env::var_os("OUT_DIR").is_some());
        if cargo {
            for dir in &self.include_dirs {
                // A new module dropped into an include directory can change what `require` finds.
                println!("cargo:rerun-if-changed={}", dir.display());
            }
        }
        self.files
            .iter()
            .map(|f| self.compile_one(f, &out_dir, cargo))
            .collect()
    }

    /// [`Builder::compile`] for build scripts: on failure prints the error and exits with
    /// status 1 (the diagnostics are already on stderr), so Cargo shows them without a panic
    /// message or backtrace.
    pub fn compile_or_exit(&self) -> Vec<Output> {
        match self.compile() {
            Ok(outputs) => outputs,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }

    fn compile_one(&self, file: &Path, out_dir: &Path, cargo: bool) -> Result<Output, Error> {
        let name = match &self.output_name {
            Some(name) => name.clone(),
            None => file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .ok_or_else(|| Error::Usage(format!("{} has no file name", file.display())))?,
        };
        if names::type_name(&name).is_none() {
            return Err(Error::Usage(format!(
                "output name `{name}` has no letter to name a Rust type after: give `.output_name(..)`"
            )));
        }
        let options = EvalOptions {
            include_dirs: self.include_dirs.clone(),
        };
        let evaluated = eval::evaluate(file, &options);
        let (evaluated, compiled) = match evaluated {
            Ok(ev) => {
                let compiled = compile_evaluated(ev.clone());
                (ev, compiled)
            }
            Err((sources, diags)) => return Err(compile_failed(file, cargo, Failure { sources, diags })),
        };
        let compiled = compiled.map_err(|failure| compile_failed(file, cargo, failure))?;
        if cargo {
            for dep in &compiled.dependencies {
                println!("cargo:rerun-if-changed={}", dep.display());
            }
        }
        let programs = evaluated
            .programs
            .iter()
            .map(|p| {
                Ok(ProgramInfo {
                    name: p.name.clone(),
                    hook: self.hook_for(file, &p.name, &p.hook)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;

        let object = out_dir.join(format!("{name}.o"));
        let skeleton_path = out_dir.join(format!("{name}.rs"));
        write(&object, &compiled.elf)?;
        // In a build script the skeleton finds the object through `OUT_DIR` (the same at the
        // crate's compile time); elsewhere through the absolute path.
        let object_path = if self.out_dir.is_none() {
            format!("concat!(env!(\"OUT_DIR\"), \"/{name}.o\")")
        } else {
            format!("{:?}", std::path::absolute(&object).unwrap_or_else(|_| object.clone()))
        };
        let code = skeleton::generate(&skeleton::Input {
            name: &name,
            source: &file.display().to_string(),
            object_path: &object_path,
            programs: &programs,
            evaluated: &evaluated,
            object: &compiled.object,
        });
        write(&skeleton_path, code.as_bytes())?;
        Ok(Output {
            source: file.to_path_buf(),
            name,
            object,
            skeleton: skeleton_path,
            dependencies: compiled.dependencies.clone(),
            programs,
            compiled,
        })
    }

    /// The hook a program is attached to: the declared one, or the override when compatible.
    fn hook_for(&self, file: &Path, program: &str, declared: &Hook) -> Result<Hook, Error> {
        let Some(wanted) = self.program_type else {
            return Ok(declared.clone());
        };
        match (wanted, declared) {
            (ProgramType::Xdp, Hook::Xdp) | (ProgramType::Netfilter, Hook::Netfilter { .. }) => Ok(declared.clone()),
            (ProgramType::TcIngress, Hook::Tc { .. }) => Ok(Hook::Tc { egress: false }),
            (ProgramType::TcEgress, Hook::Tc { .. }) => Ok(Hook::Tc { egress: true }),
            _ => Err(Error::Usage(format!(
                "{}: program `{program}` is declared for {} but `program_type` asks for {}: a program's \
                 context depends on its hook, so change the Lua file's declaration instead",
                file.display(),
                hook_name(declared),
                wanted.name()
            ))),
        }
    }
}

/// `xdp`, `tc ingress`, `tc egress`, `netfilter`.
pub fn hook_name(hook: &Hook) -> &'static str {
    match hook {
        Hook::Xdp => "xdp",
        Hook::Tc { egress: false } => "tc ingress",
        Hook::Tc { egress: true } => "tc egress",
        Hook::Netfilter { .. } => "netfilter",
    }
}

/// Prints the diagnostics (and the files they read, so that a fix reruns the script).
fn compile_failed(file: &Path, cargo: bool, failure: Failure) -> Error {
    let rendered = failure.render();
    if cargo {
        for f in &failure.sources.files {
            if let Some(path) = &f.path {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    eprint!("{rendered}");
    Error::Compile {
        file: file.to_path_buf(),
        errors: failure.diags.len(),
        rendered,
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    luabpf_compiler::output::write_file(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
