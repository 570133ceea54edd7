//! The command line, as clap derives it. Help texts are the user's manual: keep them exact.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgMatches, Args, FromArgMatches, Parser, Subcommand, ValueEnum};

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

impl Cli {
    /// The command line `args` (the program's name first).
    ///
    /// `compile` and `check`, which build scripts, editors and tests run over and over, are
    /// first parsed with only their own arguments built: building all nine subcommands was
    /// ~0.2M of a compile's ~25M instructions. Whatever that parse refuses (help, version, a
    /// bad argument) goes to the whole parser, so every message and help text is the full
    /// command's, and what it accepts it reads as the whole parser does (the same `Args`).
    pub fn parse_from_args(args: Vec<OsString>) -> Result<Cli, clap::Error> {
        match Self::parse_compile_or_check(&args) {
            Some(cli) => Ok(cli),
            None => Cli::try_parse_from(args),
        }
    }

    fn parse_compile_or_check(args: &[OsString]) -> Option<Cli> {
        fn matches<A: Args>(name: &'static str, args: &[OsString]) -> Option<ArgMatches> {
            A::augment_args(clap::Command::new(name))
                .try_get_matches_from(args)
                .ok()
        }
        let args = args.get(1..)?;
        let command = match args.first()?.to_str()? {
            "compile" => {
                Command::Compile(CompileArgs::from_arg_matches(&matches::<CompileArgs>("compile", args)?).ok()?)
            }
            "check" => Command::Check(CheckArgs::from_arg_matches(&matches::<CheckArgs>("check", args)?).ok()?),
            _ => return None,
        };
        Some(Cli { command })
    }
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
    /// Print a program file's or object's BPF assembly, annotated with its Lua lines
    #[command(
        long_about = "Print the BPF assembly of a program file (compiled first) or of an ELF \
            object, interleaved with the Lua source lines each instruction came from (from the \
            object's line info), with map and helper names resolved.",
        after_help = "Exit status: 0 printed, 1 diagnostics or an unreadable object, 2 usage or I/O error."
    )]
    Disasm(DisasmArgs),
    /// Run a program on every packet of a pcap or pcapng capture, in the kernel or the BPF
    /// interpreter
    #[command(
        long_about = "Run a program file (compiled first) or an ELF object on every packet of \
            a capture (classic pcap or pcapng, Ethernet), in order, with BPF_PROG_TEST_RUN or in \
            luabpf's BPF interpreter (--engine). The object is loaded once: map changes made by \
            earlier packets are seen by later ones, as on the wire. Prints one line per packet \
            (`1 PASS (2)`), then a summary line naming the engine that ran.\n\n\
            Packets shorter than an Ethernet header (14 bytes) are reported as skipped.\n\n\
            The kernel engine needs bpf(): root, or CAP_BPF with CAP_NET_ADMIN. Without it, \
            --engine auto (the default) uses the interpreter and says so on stderr. The \
            interpreter emulates maps and helpers but not the verifier: an access the verifier \
            would refuse is reported as an error for that packet (`luabpf verify` checks the \
            program where bpf() works).",
        after_help = "Examples:\n  \
            luabpf run examples/sni_filter.lua --pcap capture.pcap --map blocklist:evil.example=0\n  \
            luabpf run filter.o --pcap in.pcapng --json\n  \
            luabpf run rewrite.lua --pcap in.pcap --out out.pcap\n  \
            luabpf run filter.lua --pcap in.pcap --engine interp   # no root needed\n\n\
            Exit status: 0 ran, 1 diagnostics or refused by the kernel or the interpreter, 2 \
            usage, I/O or capture error (including bpf() unavailable for --engine kernel)."
    )]
    Run(super::run::RunArgs),
    /// Attach a program to a network interface (XDP or tc), pinned so it stays attached
    #[command(after_help = super::attach::ATTACH_HELP)]
    Attach(super::attach::AttachArgs),
    /// Detach a program attached by `luabpf attach` and remove its pins
    Detach(super::attach::DetachArgs),
    /// List the programs attached by `luabpf attach`
    List(super::attach::ListArgs),
    /// Read and write the maps of an attached program
    #[command(subcommand, after_help = super::maps_cmd::MAP_HELP)]
    Map(super::maps_cmd::MapCommand),
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
pub struct DisasmArgs {
    /// A Lua program file (compiled first) or an ELF object (`.o`)
    #[arg(value_name = "FILE.lua|FILE.o")]
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
    #[arg(long, visible_alias = "full-log")]
    pub verbose: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(args: &[&str]) -> String {
        format!("{:?}", Cli::try_parse_from(args).map(|c| c.command))
    }

    fn fast(args: &[&str]) -> Option<String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        Cli::parse_compile_or_check(&args).map(|c| format!("{:?}", Ok::<_, ()>(c.command)))
    }

    #[test]
    fn compile_and_check_read_as_the_whole_parser_reads_them() {
        for args in [
            &["luabpf", "compile", "f.lua"][..],
            &["luabpf", "compile", "f.lua", "-o", "out.o"],
            &["luabpf", "compile", "-oout.o", "f.lua", "--emit", "asm"],
            &[
                "luabpf",
                "compile",
                "--emit=ir",
                "--output",
                "-",
                "f.lua",
                "-I",
                "a",
                "-Ib",
            ],
            &["luabpf", "compile", "--", "-f.lua"],
            &["luabpf", "check", "f.lua", "-I", "lib"],
            &["luabpf", "check", "--", "--help"],
        ] {
            assert_eq!(fast(args).as_deref(), Some(full(args).as_str()), "{args:?}");
        }
    }

    #[test]
    fn help_version_and_bad_arguments_go_to_the_whole_parser() {
        for args in [
            &["luabpf"][..],
            &["luabpf", "compile"],
            &["luabpf", "compile", "--help"],
            &["luabpf", "compile", "-h"],
            &["luabpf", "compile", "--version"],
            &["luabpf", "compile", "f.lua", "--emit", "elf"],
            &["luabpf", "compile", "f.lua", "g.lua"],
            &["luabpf", "check", "f.lua", "--verbose"],
            &["luabpf", "verify", "f.lua"],
            &["luabpf", "--help"],
        ] {
            assert_eq!(fast(args), None, "{args:?}");
        }
    }
}
