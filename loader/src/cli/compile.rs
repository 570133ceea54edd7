//! `luabpf compile FILE.lua [-o OUT] [-I DIR]... [--emit obj|asm|ir]`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use luabpf_compiler::compile::annotated_asm;
use luabpf_compiler::ir;

use super::args::{CompileArgs, Emit};
use super::input;
use super::output::{self, CliError};

pub fn run(args: &CompileArgs) -> Result<(), CliError> {
    let compiled = input::compile(&args.file, &args.includes)?;
    match args.emit {
        Emit::Obj => {
            let out = match &args.output {
                Some(o) => o.clone(),
                None => default_object_path(&args.file),
            };
            if out == Path::new("-") && std::io::stdout().is_terminal() {
                return Err(CliError::Usage(
                    "refusing to write a binary object to a terminal: \
                     redirect standard output or give -o FILE"
                        .into(),
                ));
            }
            if same_file(&out, &args.file) {
                return Err(CliError::Usage(format!(
                    "the output {} would overwrite the program file: give -o OUT",
                    out.display()
                )));
            }
            output::write_output(&out, &compiled.elf)
        }
        Emit::Asm => text_output(args, &annotated_asm(&compiled.object)),
        Emit::Ir => {
            let text: String = compiled.ir.iter().map(ir::display).collect();
            text_output(args, &text)
        }
    }
}

/// Text goes to stdout unless `-o` names a file.
fn text_output(args: &CompileArgs, text: &str) -> Result<(), CliError> {
    match &args.output {
        Some(path) => output::write_output(path, text.as_bytes()),
        None => output::stdout(text.as_bytes()),
    }
}

/// `dir/filter.lua` -> `./filter.o`.
fn default_object_path(file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_os_string())
        .unwrap_or_else(|| "out".into());
    let mut name = stem;
    name.push(".o");
    PathBuf::from(name)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
