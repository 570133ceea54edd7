//! `luabpf attach`, `luabpf detach`, `luabpf list`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use luabpf_loader::attach::{self, AttachError, AttachRequest, Hook, XdpMode};
use luabpf_loader::netfilter::NfHook;
use luabpf_loader::pins::{self, Pins};
use luabpf_loader::{kernel_available, LoadError};

use super::args::Includes;
use super::input;
use super::output::{self, CliError};

pub const ATTACH_HELP: &str = "\
The link, the program and every map are pinned under /sys/fs/bpf/luabpf/PROGRAM/ (link, prog,
maps/MAP); what `list` and `map` need (hook, interface, times, a copy of the object for the map
formats) is kept in /run/luabpf/PROGRAM/. Attaching a program of the same name again on the same
interface and hook replaces it atomically (BPF_LINK_UPDATE), keeping the contents of its maps;
static tables are only written on the first attach.

bpffs must be mounted at /sys/fs/bpf: inside a network namespace use
`nsenter --net=/run/netns/NS luabpf attach ...` (`ip netns exec` remounts /sys and hides it).

Examples:
  luabpf attach eth0 examples/sni_filter.lua           # XDP, native with fallback to skb
  luabpf attach eth0 filter.lua --tc egress            # tcx
  luabpf attach eth0 filter.o --mode skb
  luabpf attach --netfilter ipv4:local_in:-100 filter.lua   # netfilter, this network namespace
  luabpf attach nf_filter.lua                          # netfilter, at the program's own hook

Netfilter links cannot be updated in place: a replacement attaches the new program at a free
neighbouring priority, detaches the old one, attaches the new one at the priority asked for and
drops the bridge, so some program is attached at every moment (for that instant a packet may
meet both). The kernel allows one BPF program per netfilter hook and priority.

Exit status: 0 attached, 1 refused (diagnostics, verifier, unknown interface, name already
attached elsewhere), 2 usage or I/O error (including bpf() unavailable).";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Native (driver) XDP, falling back to generic (skb) XDP
    Auto,
    /// Native (driver) XDP only
    Native,
    /// Generic XDP, in the kernel's network stack
    Skb,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TcDir {
    Ingress,
    Egress,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The network interface; alone, the program file of a netfilter program (netfilter hooks
    /// belong to the network namespace, not to an interface)
    #[arg(value_name = "IFACE")]
    pub interface: String,

    /// A Lua program file (compiled first) or an ELF object (`.o`)
    #[arg(value_name = "FILE.lua|FILE.o")]
    pub file: Option<PathBuf>,

    /// XDP attach mode
    #[arg(long, value_enum, default_value_t = ModeArg::Auto, value_name = "MODE", conflicts_with_all = ["tc", "netfilter"])]
    pub mode: ModeArg,

    /// Attach at tc (tcx) instead of XDP, on ingress or egress
    #[arg(long, value_enum, value_name = "DIR")]
    pub tc: Option<TcDir>,

    /// Attach at a netfilter hook of this network namespace, FAMILY:HOOK:PRIORITY (e.g.
    /// ipv4:local_in:-100); without it a netfilter program goes where its own options say
    #[arg(long, value_name = "SPEC", conflicts_with = "tc")]
    pub netfilter: Option<String>,

    /// The program to attach, when the file holds several for the hook
    #[arg(long, value_name = "NAME")]
    pub program: Option<String>,

    #[command(flatten)]
    pub includes: Includes,

    /// If the verifier refuses the program, print its whole log instead of its last lines
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// The program name (as `luabpf list` shows it)
    #[arg(value_name = "PROGRAM")]
    pub program: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// JSON output: an array of objects
    #[arg(long)]
    pub json: bool,
}

/// Refuses early, with what to do, where bpf() is unavailable (no root, no CAP_BPF).
pub(super) fn need_kernel(what: &str) -> Result<(), CliError> {
    kernel_available().map_err(|why| {
        CliError::Usage(format!(
            "cannot use bpf() here: {why}\n{what} needs root, or CAP_BPF with CAP_NET_ADMIN"
        ))
    })
}

fn attach_error(e: AttachError, verbose: bool) -> CliError {
    match e {
        AttachError::Usage(m) => CliError::Usage(m),
        AttachError::Load(LoadError::Verifier(v)) => CliError::Refused(v.render(verbose).trim_end().to_string()),
        AttachError::Load(other) => CliError::Refused(other.to_string()),
        AttachError::NoInterface(_)
        | AttachError::NotAttached(_)
        | AttachError::Conflict(_)
        | AttachError::System(_) => CliError::Refused(e.to_string()),
    }
}

pub fn run_attach(args: &AttachArgs) -> Result<(), CliError> {
    // `attach IFACE FILE`, or `attach FILE` for netfilter.
    let (interface, file) = match &args.file {
        Some(f) => (Some(args.interface.as_str()), f.clone()),
        None => (None, PathBuf::from(&args.interface)),
    };
    let netfilter = match &args.netfilter {
        Some(spec) => Some(NfHook::parse(spec).map_err(|e| CliError::Usage(format!("--netfilter: {e}")))?),
        None => None,
    };
    if let (Some(iface), true) = (interface, netfilter.is_some()) {
        return Err(CliError::Usage(format!(
            "--netfilter takes no interface (`{iface}`): netfilter hooks belong to the network namespace; \
             write `luabpf attach --netfilter SPEC FILE`"
        )));
    }
    if interface.is_none() && args.mode != ModeArg::Auto {
        return Err(CliError::Usage(
            "--mode is an XDP attach mode and needs an interface: `luabpf attach IFACE FILE --mode MODE`".into(),
        ));
    }
    if interface.is_none() && args.tc.is_some() {
        return Err(CliError::Usage(
            "--tc needs an interface: `luabpf attach IFACE FILE --tc ingress|egress`".into(),
        ));
    }
    let is_object = file.extension().is_some_and(|e| e == "o")
        || (file.extension().is_none_or(|e| e != "lua") && input::read(&file)?.starts_with(b"\x7fELF"));
    let elf = if is_object {
        input::read(&file)?
    } else {
        input::compile(&file, &args.includes)?.elf
    };
    need_kernel("attach")?;
    let hook = match (interface, args.tc) {
        (None, _) => Hook::Netfilter(netfilter),
        (Some(_), Some(dir)) => Hook::Tc {
            egress: dir == TcDir::Egress,
        },
        (Some(_), None) => Hook::Xdp(match args.mode {
            ModeArg::Auto => XdpMode::Auto,
            ModeArg::Native => XdpMode::Native,
            ModeArg::Skb => XdpMode::Skb,
        }),
    };
    let source = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
    let source = source.display().to_string();
    let done = attach::attach(&AttachRequest {
        interface: interface.unwrap_or(""),
        hook,
        object: &elf,
        program: args.program.as_deref(),
        source: &source,
    })
    .map_err(|e| match (e, interface) {
        // A program for another hook, given without an interface.
        (AttachError::Usage(m), None) if m.contains("no netfilter program") => CliError::Usage(format!(
            "{m}; XDP and tc programs need an interface: `luabpf attach IFACE FILE`"
        )),
        (e, _) => attach_error(e, args.verbose),
    })?;
    let m = &done.meta;
    let verb = if done.replaced { "replaced" } else { "attached" };
    let mut text = if m.interface.is_empty() {
        format!("{verb} `{}` at {}", m.program, m.place())
    } else {
        format!("{verb} `{}` at {} ({}) on {}", m.program, m.hook, m.mode, m.interface)
    };
    if !done.reused_maps.is_empty() {
        text.push_str(&format!(", maps kept: {}", done.reused_maps.join(", ")));
    }
    text.push_str(&format!("\npinned under {}\n", Pins::new(&m.program).dir().display()));
    output::stdout(text.as_bytes())
}

pub fn run_detach(args: &DetachArgs) -> Result<(), CliError> {
    need_kernel("detach")?;
    let meta = attach::detach(&args.program).map_err(|e| attach_error(e, false))?;
    let text = match meta {
        Some(m) => format!("detached `{}` from {}\n", m.program, m.place()),
        None => format!("removed the pins of `{}`\n", args.program),
    };
    output::stdout(text.as_bytes())
}

pub fn run_list(args: &ListArgs) -> Result<(), CliError> {
    let mut rows = Vec::new();
    for name in pins::programs() {
        let meta = pins::read_meta(&name).ok().flatten();
        let p = Pins::new(&name);
        let linked = p.link().exists();
        rows.push((name, meta, linked, p.pinned_maps()));
    }
    let mut text = String::new();
    if args.json {
        text.push('[');
        for (i, (name, meta, linked, maps)) in rows.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let m = meta.clone().unwrap_or_default();
            let maps: Vec<String> = maps.iter().map(|s| json_str(s)).collect();
            text.push_str(&format!(
                "\n  {{\"program\":{},\"hook\":{},\"mode\":{},\"interface\":{},\"ifindex\":{},\
                 \"attached_at\":{},\"replaced_at\":{},\"source\":{},\"maps\":[{}],\"linked\":{}}}",
                json_str(name),
                json_str(&m.hook),
                json_str(&m.mode),
                json_str(&m.interface),
                m.ifindex,
                json_str(&pins::format_time(m.attached_at)),
                m.replaced_at
                    .map(|t| json_str(&pins::format_time(t)))
                    .unwrap_or_else(|| "null".into()),
                json_str(&m.source),
                maps.join(","),
                linked
            ));
        }
        text.push_str(if rows.is_empty() { "]\n" } else { "\n]\n" });
    } else if rows.is_empty() {
        text.push_str("no programs attached by luabpf\n");
    } else {
        text.push_str("PROGRAM\tHOOK\tINTERFACE\tMAPS\tATTACHED\n");
        for (name, meta, linked, maps) in &rows {
            let (hook, iface, when) = match meta {
                Some(m) => (
                    format!("{} ({})", m.hook, m.mode),
                    if m.interface.is_empty() {
                        "-".to_string()
                    } else {
                        m.interface.clone()
                    },
                    pins::format_time(m.attached_at),
                ),
                None => ("?".into(), "?".into(), "?".into()),
            };
            let state = if *linked { "" } else { " [no link: run `luabpf detach`]" };
            text.push_str(&format!(
                "{name}\t{hook}\t{iface}\t{}\t{when}{state}\n",
                if maps.is_empty() {
                    "-".to_string()
                } else {
                    maps.join(",")
                }
            ));
        }
    }
    output::stdout(text.as_bytes())
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
