//! The `luabpf` command: argument parsing ([`args`]), one module per subcommand, and the
//! exit-code and output conventions shared by all of them ([`output`]).
//!
//! Exit codes: 0 success; 1 the program was refused (diagnostics, or the kernel's verifier);
//! 2 usage or I/O errors (clap's usage errors are 2 already); 3 an internal error (a bug in
//! luabpf: a panic is caught and reported, never shown as a crash).

mod args;
mod attach;
mod check;
mod compile;
mod disasm;
mod engine;
mod input;
mod maps_cmd;
mod output;
mod reference;
mod run;
mod verify;

use std::process::ExitCode;
use std::sync::Mutex;

use args::{Cli, Command};
use output::CliError;

/// Exit status: the program compiled, checked or verified.
pub const EXIT_OK: u8 = 0;
/// Exit status: diagnostics, or a refusal by the kernel.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status: a usage or I/O error.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: a bug in luabpf.
pub const EXIT_INTERNAL: u8 = 3;

/// The last panic's message and location, recorded by the panic hook.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

pub fn main() -> ExitCode {
    let cli = match Cli::parse_from_args(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" with exit code 0.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    install_panic_hook();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&cli)));
    match outcome {
        Ok(Ok(())) => ExitCode::from(EXIT_OK),
        Ok(Err(e)) => ExitCode::from(e.report()),
        Err(_) => {
            let what = LAST_PANIC
                .lock()
                .ok()
                .and_then(|mut g| g.take())
                .unwrap_or_else(|| "unknown panic".to_string());
            output::error(&format!(
                "internal error: {what}\n\
                 this is a bug in luabpf: please report it with the input file \
                 (set RUST_BACKTRACE=1 for a backtrace)"
            ));
            ExitCode::from(EXIT_INTERNAL)
        }
    }
}

fn run(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Compile(a) => compile::run(a),
        Command::Check(a) => check::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Disasm(a) => disasm::run(a),
        Command::Run(a) => run::run(a),
        Command::Attach(a) => attach::run_attach(a),
        Command::Detach(a) => attach::run_detach(a),
        Command::List(a) => attach::run_list(a),
        Command::Map(a) => maps_cmd::run(a),
    }
}

/// Panics never reach the user as a crash: the message is recorded for `main` to report as an
/// internal error. Panics caught inside the libraries (the compiler's evaluation,
/// aya's parser) are reported by them as diagnostics or errors. With `RUST_BACKTRACE` set the
/// default hook stays, for developers.
fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        // Some panics carry whole buffers (aya's FromUtf8Error of a verifier log): keep the
        // report readable.
        const MAX: usize = 300;
        let msg = match msg.char_indices().nth(MAX) {
            Some((cut, _)) => format!("{}...", &msg[..cut]),
            None => msg.to_string(),
        };
        let text = match info.location() {
            Some(l) => format!("{msg} (at {}:{})", l.file(), l.line()),
            None => msg,
        };
        if let Ok(mut g) = LAST_PANIC.lock() {
            *g = Some(text);
        }
    }));
}
