//! Reading the command's input and compiling it: I/O problems are usage errors (exit 2),
//! problems in the program are diagnostics (exit 1).

use std::path::Path;

use luabpf_compiler::compile::{compile_path, Compiled, Options};
use luabpf_compiler::diag::render_with;

use super::args::Includes;
use super::output::{colour, reason, CliError};

/// Reads a whole input file, mapping failure to `error: cannot read FILE: <reason>`.
pub fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    if path.is_dir() {
        return Err(CliError::Usage(format!(
            "cannot read {}: it is a directory",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {}: {}", path.display(), reason(&e))))
}

/// The compiler's options from `-I`; a directory that does not exist is a usage error (a
/// typo there would otherwise surface as a confusing "module not found").
pub fn options(includes: &Includes) -> Result<Options, CliError> {
    for dir in &includes.include {
        if !dir.is_dir() {
            let why = match std::fs::metadata(dir) {
                Ok(_) => "not a directory".to_string(),
                Err(e) => reason(&e),
            };
            return Err(CliError::Usage(format!("-I {}: {why}", dir.display())));
        }
    }
    Ok(Options {
        include_dirs: includes.include.clone(),
        ..Options::default()
    })
}

/// Compiles the program file at `path`: its diagnostics, rendered for stderr, on failure.
pub fn compile(path: &Path, includes: &Includes) -> Result<Compiled, CliError> {
    let opts = options(includes)?;
    // Read it first: a missing or unreadable file is an I/O error (exit 2), not a diagnostic.
    read(path)?;
    compile_path(path, &opts).map_err(|f| CliError::Diagnostics(render_with(&f.sources, &f.diags, colour())))
}
