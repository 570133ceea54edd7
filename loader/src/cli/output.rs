//! How the command talks: errors and diagnostics to stderr, results to stdout, and the exit
//! code each kind of failure maps to.

use std::io::{self, IsTerminal, Write};
use std::path::Path;

use super::{EXIT_OK, EXIT_REFUSED, EXIT_USAGE};

/// Why a subcommand failed. Each variant knows its exit code and how it is printed.
#[derive(Debug)]
pub enum CliError {
    /// Compiler diagnostics, already rendered (exit 1).
    Diagnostics(String),
    /// The kernel refused the object (exit 1); printed as `error: <message>`.
    Refused(String),
    /// A usage or I/O error (exit 2); printed as `error: <message>`.
    Usage(String),
    /// Standard output was closed by the reader (`luabpf ... | head`): stop quietly (exit 0).
    BrokenPipe,
}

impl CliError {
    /// Prints the error and returns its exit code.
    pub fn report(self) -> u8 {
        match self {
            CliError::Diagnostics(text) => {
                let mut err = io::stderr().lock();
                let _ = err.write_all(text.as_bytes());
                if !text.ends_with('\n') {
                    let _ = err.write_all(b"\n");
                }
                EXIT_REFUSED
            }
            CliError::Refused(msg) => {
                error(&msg);
                EXIT_REFUSED
            }
            CliError::Usage(msg) => {
                error(&msg);
                EXIT_USAGE
            }
            CliError::BrokenPipe => EXIT_OK,
        }
    }
}

/// Prints `error: <msg>` to stderr (`error:` in bold red when stderr is a terminal).
pub fn error(msg: &str) {
    let prefix = if colour() {
        "\x1b[1;31merror\x1b[0m\x1b[1m:\x1b[0m"
    } else {
        "error:"
    };
    let _ = writeln!(io::stderr().lock(), "{prefix} {msg}");
}

/// Whether stderr gets ANSI colour: only on a terminal, and never with `NO_COLOR` set
/// (https://no-color.org).
pub fn colour() -> bool {
    io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Writes `bytes` to stdout. A reader that went away is not an error of ours.
pub fn stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => CliError::BrokenPipe,
            _ => CliError::Usage(format!("cannot write to standard output: {}", reason(&e))),
        })
}

/// Writes `bytes` to `path`, or to stdout for `-`.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    if path == Path::new("-") {
        return stdout(bytes);
    }
    luabpf_compiler::output::write_file(path, bytes)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {}", path.display(), reason(&e))))
}

/// An I/O error's text without Rust's ` (os error N)` suffix: `No such file or directory`.
pub fn reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

/// `1 program`, `2 maps`.
pub fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}
