//! The command line, as clap derives it. Help texts are the user's manual: keep them exact.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  the program was refused: compiler diagnostics, or the kernel's verifier
  2  usage or I/O error (bad arguments, unreadable input, unwritable output, no bpf())
  3  internal error (a bug in luabpf)";

#[derive(Debug, Parser)]
#[command(
    name = "luabpf",
    version,
    about = "Compile Lua 5.4 packet filters to eBPF objects the kernel verifier accepts",
    long_about = "Compile Lua 5.4 packet filters to eBPF objects the kernel verifier accepts.\n\n\
        A program file is ordinary Lua: its top level runs at compile time and declares maps; \
        the functions handed to xdp.program, tc.program or netfilter.program run in the kernel. \
        The language is described in docs/language.md.",
    after_help = EXIT_CODES,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compile a program file to a BPF ELF object (or print its assembly or IR)
    #[command(
        long_about = "Compile a program file to a BPF ELF object.\n\n\
            The object holds every program of the file (section xdp, classifier or netfilter), \
            its maps as BTF-defined .maps, and line info naming the Lua source. It loads with \
            `luabpf verify`, aya, `bpftool prog load` and `ip link set ... xdp obj`.",
        after_help = "Examples:\n  \
            luabpf compile examples/sni_filter.lua              # writes ./sni_filter.o\n  \
            luabpf compile filter.lua -o /tmp/f.o -I lib\n  \
            luabpf compile filter.lua --emit asm | less         # assembly annotated with Lua lines\n\n\
            Exit status: 0 compiled, 1 diagnostics, 2 usage or I/O error."
    )]
    Compile(CompileArgs),
    /// Check a program file: print its diagnostics, write nothing
    #[command(
        long_about = "Check a program file: run the whole compiler (parse, compile-time \
            evaluation, type checking, code generation) and print its diagnostics, writing \
            nothing. On success prints one line: `ok: N programs (names), M maps (names)`.",
        after_help = "Exit status: 0 no diagnostics, 1 diagnostics, 2 usage or I/O error."
    )]
    Check(CheckArgs),
    /// Load a program file or object into the kernel's verifier, then unload it
    #[command(
        long_about = "Load a program file (compiled first) or an ELF object into the running \
            kernel, through the verifier, then unload it. Nothing is attached. Prints, per \
            program, the instructions the verifier processed (its cost: the kernel's budget is \
            1,000,000). On rejection prints the verifier's reason and the end of its log.\n\n\
            Needs bpf(): root, or CAP_BPF with CAP_NET_ADMIN.",
        after_help = "Exit status: 0 verified, 1 diagnostics, a malformed object or rejected by \
            the kernel, 2 usage or I/O error (including bpf() unavailable)."
    )]
    Verify(VerifyArgs),
}

/// `-I DIR`, shared by the subcommands that compile.
#[derive(Debug, Args)]
pub struct Includes {
    /// Search DIR for `require`d modules (after the program file's own directory); repeatable
    #[arg(short = 'I', value_name = "DIR")]
    pub include: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The Lua program file
    #[arg(value_name = "FILE.lua")]
    pub file: PathBuf,

    /// Output file; `-` is standard output [default: FILE's stem + ".o" in the current
    /// directory for --emit obj, standard output for asm and ir]
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub includes: Includes,

    /// What to produce
    #[arg(long, value_enum, default_value_t = Emit::Obj, value_name = "KIND")]
    pub emit: Emit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// A BPF ELF object (relocatable, with BTF and line info)
    Obj,
    /// BPF assembly, annotated with the Lua lines each instruction comes from
    Asm,
    /// The compiler's optimised intermediate representation
    Ir,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The Lua program file
    #[arg(value_name = "FILE.lua")]
    pub file: PathBuf,

    #[command(flatten)]
    pub includes: Includes,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A Lua program file (compiled first) or an ELF object (`.o`)
    #[arg(value_name = "FILE.lua|FILE.o")]
    pub file: PathBuf,

    #[command(flatten)]
    pub includes: Includes,

    /// On rejection, print the verifier's whole log instead of its last lines
    #[arg(long)]
    pub full_log: bool,
}
