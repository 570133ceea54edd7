//! `luabpf check FILE.lua [-I DIR]...`: the whole compiler, nothing written.

use super::args::CheckArgs;
use super::input;
use super::output::{self, count, CliError};

pub fn run(args: &CheckArgs) -> Result<(), CliError> {
    let compiled = input::compile(&args.file, &args.includes)?;
    let obj = &compiled.object;
    let names = |it: Vec<&str>| {
        if it.is_empty() {
            String::new()
        } else {
            format!(" ({})", it.join(", "))
        }
    };
    let line = format!(
        "ok: {}{}, {}{}\n",
        count(obj.programs.len(), "program"),
        names(obj.programs.iter().map(|p| p.name.as_str()).collect()),
        count(obj.maps.len(), "map"),
        names(obj.maps.iter().map(|m| m.name.as_str()).collect()),
    );
    output::stdout(line.as_bytes())
}
