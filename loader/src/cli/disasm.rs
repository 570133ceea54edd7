//! `luabpf disasm FILE.lua|FILE.o`: BPF assembly interleaved with the Lua lines it came from.

use super::args::DisasmArgs;
use super::output::{self, CliError};
use super::{input, verify};

pub fn run(args: &DisasmArgs) -> Result<(), CliError> {
    let object = if verify::is_object(&args.file)? {
        let bytes = input::read(&args.file)?;
        // The Lua lines come from the object's own line info (.BTF.ext), so this works for
        // any object luabpf wrote, and shows plain assembly for others (clang's, say).
        runtime_bpf::elf::read(&bytes)
            .map_err(|e| CliError::Refused(format!("{}: not a readable BPF object: {e}", args.file.display())))?
    } else {
        input::compile(&args.file, &args.includes)?.object
    };
    output::stdout(luabpf_compiler::compile::annotated_asm(&object).as_bytes())
}
