//! `luabpf verify FILE.lua|FILE.o`: through the kernel's verifier, then unloaded.

use std::collections::HashMap;
use std::path::Path;

use luabpf_loader::{kernel_available, load, LoadError};

use super::args::VerifyArgs;
use super::input;
use super::output::{self, CliError};

const ELF_MAGIC: &[u8] = b"\x7fELF";

pub fn run(args: &VerifyArgs) -> Result<(), CliError> {
    // Instructions per program in the object, when we can tell.
    let (elf, sizes): (Vec<u8>, HashMap<String, usize>) = if is_object(&args.file)? {
        let bytes = input::read(&args.file)?;
        if !bytes.starts_with(ELF_MAGIC) {
            return Err(CliError::Usage(format!("{} is not an ELF object", args.file.display())));
        }
        let sizes = runtime_bpf::elf::read_detailed(&bytes)
            .map(|r| sizes_of(&r.object))
            .unwrap_or_default();
        (bytes, sizes)
    } else {
        let compiled = input::compile(&args.file, &args.includes)?;
        let sizes = sizes_of(&compiled.object);
        (compiled.elf, sizes)
    };

    if let Err(why) = kernel_available() {
        return Err(CliError::Usage(format!(
            "cannot use bpf() here: {why}\n\
             verify loads the object into the running kernel: run it as root, or with \
             CAP_BPF and CAP_NET_ADMIN"
        )));
    }

    let loaded = match load(&elf) {
        Ok(loaded) => loaded,
        Err(LoadError::Verifier(v)) => {
            let mut msg = v.render(args.verbose).trim_end().to_string();
            if v.errno == Some(libc::E2BIG) || v.log.contains("too large") {
                msg.push_str(
                    "\nhelp: the verifier gave up before exploring every path (its budget is \
                     1,000,000 processed instructions): this is a luabpf bug for a program \
                     that `luabpf check` accepts; please report it",
                );
            }
            return Err(CliError::Refused(msg));
        }
        Err(e) => return Err(CliError::Refused(e.to_string())),
    };

    if loaded.programs().is_empty() {
        return Err(CliError::Refused(format!("{} holds no program", args.file.display())));
    }
    let mut text = String::new();
    for p in loaded.programs() {
        text.push_str(&p.name);
        text.push_str(": verified");
        if let Some(n) = p.verified_insns {
            text.push_str(&format!(", {n} instructions processed"));
        }
        if let Some(n) = sizes.get(&p.name) {
            text.push_str(&format!(" ({n} in the program)"));
        }
        text.push('\n');
    }
    output::stdout(text.as_bytes())
}

/// `.o` files and anything that starts like an ELF file are objects; the rest is Lua.
pub(super) fn is_object(path: &Path) -> Result<bool, CliError> {
    if path.extension().is_some_and(|e| e == "o") {
        return Ok(true);
    }
    if path.extension().is_some_and(|e| e == "lua") {
        return Ok(false);
    }
    let bytes = input::read(path)?;
    Ok(bytes.starts_with(ELF_MAGIC))
}

fn sizes_of(obj: &runtime_bpf::object::Object) -> HashMap<String, usize> {
    obj.programs.iter().map(|p| (p.name.clone(), p.insns.len())).collect()
}
