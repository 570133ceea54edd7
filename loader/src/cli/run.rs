//! `luabpf run FILE.lua|FILE.o --pcap IN`: every packet of a capture through the program in
//! the kernel (`BPF_PROG_TEST_RUN`) or the BPF interpreter (`--engine`, see [`super::engine`]),
//! in order, with one object loaded for the whole capture so that map changes made by earlier
//! packets are seen by later ones, as on the wire.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use luabpf_loader::testrun::ETH_HLEN;
use luabpf_loader::{netfilter, pcap};
use runtime_bpf::object::{Format, Object};
use runtime_bpf::progtypes::{verdict_name, ProgType};

use super::args::Includes;
use super::engine::{Engine, EngineChoice, Ran};
use super::input;
use super::output::{reason, write_output, CliError};
use super::reference::ReferenceCheck;

const ELF_MAGIC: &[u8] = b"\x7fELF";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A Lua program file (compiled first) or an ELF object (`.o`)
    #[arg(value_name = "FILE.lua|FILE.o")]
    pub file: PathBuf,

    /// The capture to run: classic pcap or pcapng, Ethernet link type
    #[arg(long, value_name = "IN")]
    pub pcap: PathBuf,

    /// One JSON object per packet (`{"packet":1,"verdict":2,"name":"PASS"}`, with "data_out"
    /// in hex when the program changed the packet), then `{"summary":{...}}`
    #[arg(long)]
    pub json: bool,

    /// Write every packet as the program left it to a classic pcap file (skipped packets
    /// unchanged)
    #[arg(long, value_name = "OUT.pcap")]
    pub out: Option<PathBuf>,

    /// The program to run, when the file holds more than one
    #[arg(long, value_name = "NAME")]
    pub program: Option<String>,

    /// Seed a map before the first packet; repeatable. KEY and VALUE follow the map's
    /// formats: integers in decimal or 0x hex, `cN` text (zero-padded)
    #[arg(long = "map", value_name = "MAP:KEY=VALUE")]
    pub maps: Vec<String>,

    #[command(flatten)]
    pub includes: Includes,

    /// Where to run: `kernel` (BPF_PROG_TEST_RUN, needs bpf()), `interp` (luabpf's BPF
    /// interpreter, no privileges needed), `auto` (the kernel when bpf() works here)
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto, value_name = "ENGINE")]
    pub engine: EngineChoice,

    /// Also run every packet in the reference Lua 5.4 interpreter and report each
    /// disagreement (verdict, output bytes, map contents); exit 1 if there is any
    #[arg(long)]
    pub reference: bool,

    /// If the verifier refuses the program, print its whole log instead of its last lines
    #[arg(long)]
    pub verbose: bool,
}

/// One `--map` seed, encoded.
struct Seed {
    map: String,
    key: Vec<u8>,
    value: Vec<u8>,
}

pub fn run(args: &RunArgs) -> Result<(), CliError> {
    let (elf, object) = program_input(&args.file, &args.includes)?;
    let (name, progtype) = select_program(&object, args.program.as_deref(), &args.file)?;

    // A netfilter program sees the packets of its family only (when its section says which).
    let nf_family = object
        .programs
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| netfilter::NfHook::from_section(&p.section))
        .and_then(Result::ok)
        .map(|h| h.family);

    let capture_bytes = input::read(&args.pcap)?;
    let capture = pcap::read(&capture_bytes).map_err(|e| CliError::Usage(format!("{}: {e}", args.pcap.display())))?;

    let seeds = args
        .maps
        .iter()
        .map(|s| parse_seed(s, &object))
        .collect::<Result<Vec<_>, _>>()?;

    let mut engine = Engine::open(args.engine, &elf, &object, &name, args.verbose)?;
    for seed in &seeds {
        engine
            .seed(&seed.map, &seed.key, &seed.value)
            .map_err(|e| CliError::Usage(format!("--map {}: {e}", seed.map)))?;
    }

    let mut reference = match args.reference {
        true => Some(ReferenceCheck::start(
            &args.file,
            &name,
            &input::options(&args.includes)?,
            seeds
                .iter()
                .map(|s| (s.map.as_str(), s.key.as_slice(), s.value.as_slice())),
            args.json,
        )?),
        false => None,
    };
    if let (Some(check), Engine::Interp { .. }) = (reference.as_mut(), &engine) {
        check.run_as_cpu0()?;
    }

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut counts: BTreeMap<i32, usize> = BTreeMap::new();
    let mut skipped = 0usize;
    let mut errors = 0usize;
    let mut rewritten = 0usize;
    let mut written: Vec<Vec<u8>> = Vec::new();
    for (i, packet) in capture.packets.iter().enumerate() {
        let n = i + 1;
        let data = &packet.data;
        if data.len() < ETH_HLEN {
            skipped += 1;
            let why = format!(
                "{} bytes, shorter than the {ETH_HLEN}-byte Ethernet header a test run needs",
                data.len()
            );
            let line = if args.json {
                format!("{{\"packet\":{n},\"skipped\":{}}}", json_str(&why))
            } else {
                format!("{n} skipped: {why}")
            };
            emit(&mut out, &line)?;
            written.push(data.clone());
            continue;
        }
        let result = if progtype == ProgType::Netfilter {
            match netfilter_packet(data, nf_family) {
                Ok((ip, family)) => engine.run(ip, Some(family)).map(|r| Ran {
                    data_out: data.clone(),
                    ..r
                }),
                Err(why) => {
                    skipped += 1;
                    let line = if args.json {
                        format!("{{\"packet\":{n},\"skipped\":{}}}", json_str(&why))
                    } else {
                        format!("{n} skipped: {why}")
                    };
                    emit(&mut out, &line)?;
                    written.push(data.clone());
                    continue;
                }
            }
        } else {
            engine.run(data, None)
        };
        match result {
            Ok(r) => {
                let verdict = r.retval as i32;
                *counts.entry(verdict).or_default() += 1;
                let vname = verdict_name(progtype, verdict).unwrap_or("UNKNOWN");
                let changed = r.data_out != *data;
                if changed {
                    rewritten += 1;
                }
                let line = if args.json {
                    let mut l = format!("{{\"packet\":{n},\"verdict\":{verdict},\"name\":\"{vname}\"");
                    if changed {
                        l.push_str(&format!(",\"data_out\":\"{}\"", hex(&r.data_out)));
                    }
                    l.push('}');
                    l
                } else if changed {
                    format!("{n} {vname} ({verdict}), packet rewritten ({} bytes)", r.data_out.len())
                } else {
                    format!("{n} {vname} ({verdict})")
                };
                emit(&mut out, &line)?;
                if let Some(check) = reference.as_mut() {
                    for line in check.packet(n, data, r.retval, &r.data_out)? {
                        emit(&mut out, &line)?;
                    }
                }
                written.push(r.data_out);
            }
            Err(e) => {
                // Too short is caught above; anything else is the engine refusing this packet.
                let (skip, why) = (e.skip, e.why);
                let line = match (args.json, skip) {
                    (true, true) => format!("{{\"packet\":{n},\"skipped\":{}}}", json_str(&why)),
                    (true, false) => format!("{{\"packet\":{n},\"error\":{}}}", json_str(&why)),
                    (false, true) => format!("{n} skipped: {why}"),
                    (false, false) => format!("{n} error: {why}"),
                };
                if skip {
                    skipped += 1;
                } else {
                    errors += 1;
                }
                emit(&mut out, &line)?;
                written.push(data.clone());
            }
        }
    }

    let total = capture.packets.len();
    let named: Vec<(String, usize)> = counts
        .iter()
        .map(|(v, c)| {
            let name = verdict_name(progtype, *v)
                .map(str::to_string)
                .unwrap_or_else(|| format!("UNKNOWN({v})"));
            (name, *c)
        })
        .collect();
    let line = if args.json {
        let mut s = format!("{{\"summary\":{{\"packets\":{total}");
        for (name, c) in &named {
            s.push_str(&format!(",{}:{c}", json_str(name)));
        }
        s.push_str(&format!(
            ",\"skipped\":{skipped},\"errors\":{errors},\"rewritten\":{rewritten},\"engine\":\"{}\"}}}}",
            engine.name()
        ));
        s
    } else {
        let mut parts: Vec<String> = named.iter().map(|(n, c)| format!("{c} {n}")).collect();
        if skipped > 0 {
            parts.push(format!("{skipped} skipped"));
        }
        if errors > 0 {
            parts.push(format!("{errors} errors"));
        }
        if rewritten > 0 {
            parts.push(format!("{rewritten} rewritten"));
        }
        let word = if total == 1 { "packet" } else { "packets" };
        let on = engine.name();
        if parts.is_empty() {
            format!("summary: {total} {word} (engine: {on})")
        } else {
            format!("summary: {total} {word}: {} (engine: {on})", parts.join(", "))
        }
    };
    emit(&mut out, &line)?;
    let mut agreed = Ok(());
    if let Some(check) = reference {
        let maps = engine.dump(check.cpu());
        let (lines, result) = check.finish(maps);
        for line in lines {
            emit(&mut out, &line)?;
        }
        agreed = result;
    }
    flush(&mut out)?;

    if let Some(path) = &args.out {
        let ts = capture.packets.iter().map(|p| p.timestamp_ns);
        let bytes = pcap::write(written.iter().map(Vec::as_slice).zip(ts));
        write_output(path, &bytes)?;
    }
    if errors > 0 {
        return Err(CliError::Refused(format!(
            "the {} refused to run {errors} of {total} packets",
            engine.name()
        )));
    }
    agreed
}

fn emit(out: &mut impl Write, line: &str) -> Result<(), CliError> {
    writeln!(out, "{line}").map_err(stdout_err)
}

fn flush(out: &mut impl Write) -> Result<(), CliError> {
    out.flush().map_err(stdout_err)
}

fn stdout_err(e: io::Error) -> CliError {
    match e.kind() {
        io::ErrorKind::BrokenPipe => CliError::BrokenPipe,
        _ => CliError::Usage(format!("cannot write to standard output: {}", reason(&e))),
    }
}

/// The ELF bytes and the object they hold: compiled from Lua, or read from a `.o`.
fn program_input(path: &Path, includes: &Includes) -> Result<(Vec<u8>, Object), CliError> {
    let is_object = if path.extension().is_some_and(|e| e == "o") {
        true
    } else if path.extension().is_some_and(|e| e == "lua") {
        false
    } else {
        input::read(path)?.starts_with(ELF_MAGIC)
    };
    if !is_object {
        let compiled = input::compile(path, includes)?;
        return Ok((compiled.elf, compiled.object));
    }
    let bytes = input::read(path)?;
    if !bytes.starts_with(ELF_MAGIC) {
        return Err(CliError::Usage(format!("{} is not an ELF object", path.display())));
    }
    let object = runtime_bpf::elf::read_detailed(&bytes)
        .map(|r| r.object)
        .map_err(|e| CliError::Refused(format!("cannot read {}: {e}", path.display())))?;
    Ok((bytes, object))
}

/// The program to run and its hook: `--program`, or the only one in the object.
/// The IP packet in an Ethernet frame, as a netfilter program sees it (from the IP header on),
/// and its family; why not, for frames the program's hook never sees (not IP, or not of
/// `family` when the program names one).
fn netfilter_packet(frame: &[u8], family: Option<netfilter::Family>) -> Result<(&[u8], netfilter::Family), String> {
    const ETH_P_IP: u16 = 0x0800;
    const ETH_P_IPV6: u16 = 0x86dd;
    /// `bpf_prog_test_run_nf` refuses less than an IPv4 header.
    const MIN_IP: usize = 20;
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let packet_family = match ethertype {
        ETH_P_IP => netfilter::Family::Ipv4,
        ETH_P_IPV6 => netfilter::Family::Ipv6,
        other => {
            return Err(format!(
                "ethertype 0x{other:04x} is neither IPv4 nor IPv6: netfilter programs do not see it"
            ))
        }
    };
    if let Some(want) = family.filter(|f| *f != packet_family) {
        return Err(format!(
            "an {} packet: an {} netfilter program does not see it",
            packet_family.name(),
            want.name()
        ));
    }
    let ip = &frame[ETH_HLEN..];
    if ip.len() < MIN_IP {
        return Err(format!(
            "{} bytes of IP packet, shorter than the {MIN_IP} bytes a netfilter test run needs",
            ip.len()
        ));
    }
    Ok((ip, packet_family))
}

fn select_program(object: &Object, wanted: Option<&str>, file: &Path) -> Result<(String, ProgType), CliError> {
    let names: Vec<&str> = object.programs.iter().map(|p| p.name.as_str()).collect();
    let program = match wanted {
        Some(w) => object.programs.iter().find(|p| p.name == w).ok_or_else(|| {
            CliError::Usage(format!(
                "--program {w}: no such program in {} (it has: {})",
                file.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })?,
        None => match object.programs.as_slice() {
            [p] => p,
            [] => return Err(CliError::Refused(format!("{} holds no program", file.display()))),
            _ => {
                return Err(CliError::Usage(format!(
                    "{} holds {} programs ({}): choose one with --program NAME",
                    file.display(),
                    names.len(),
                    names.join(", ")
                )))
            }
        },
    };
    let progtype = ProgType::from_section(&program.section).ok_or_else(|| {
        CliError::Usage(format!(
            "program `{}` is in section `{}`, not an XDP or tc program",
            program.name, program.section
        ))
    })?;
    Ok((program.name.clone(), progtype))
}

/// Parses `MAP:KEY=VALUE` against the map's formats in the object.
fn parse_seed(text: &str, object: &Object) -> Result<Seed, CliError> {
    let usage = |why: String| CliError::Usage(format!("--map {text}: {why}"));
    let (map, rest) = text
        .split_once(':')
        .ok_or_else(|| usage("expected MAP:KEY=VALUE".into()))?;
    let (key, value) = rest
        .split_once('=')
        .ok_or_else(|| usage("expected MAP:KEY=VALUE".into()))?;
    let spec = object.maps.iter().find(|m| m.name == map).ok_or_else(|| {
        let names: Vec<&str> = object.maps.iter().map(|m| m.name.as_str()).collect();
        usage(format!(
            "no map `{map}` in the program (it has: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    })?;
    let key = encode(key, &spec.key).map_err(|e| usage(format!("key: {e}")))?;
    let value = encode(value, &spec.value).map_err(|e| usage(format!("value: {e}")))?;
    Ok(Seed {
        map: map.to_string(),
        key,
        value,
    })
}

/// Encodes a command-line value in a map format: integers little-endian (the host's order),
/// `cN` text zero-padded.
pub fn encode(text: &str, format: &Format) -> Result<Vec<u8>, String> {
    match format {
        Format::Int { bytes, signed } => {
            let bytes = *bytes as u32;
            let v = parse_int(text)?;
            let bits = bytes * 8;
            let (min, max): (i128, i128) = if *signed {
                (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
            } else {
                (0, (1i128 << bits) - 1)
            };
            if v < min || v > max {
                return Err(format!(
                    "{text} does not fit a {}{bytes} ({min}..={max})",
                    if *signed { "i" } else { "I" }
                ));
            }
            Ok(v.to_le_bytes()[..bytes as usize].to_vec())
        }
        Format::Chars(n) => {
            let b = text.as_bytes();
            if b.len() > *n as usize {
                return Err(format!(
                    "`{text}` is {} bytes, the map's c{n} holds at most {n}",
                    b.len()
                ));
            }
            let mut v = b.to_vec();
            v.resize(*n as usize, 0);
            Ok(v)
        }
        Format::Record(_) => {
            Err("record formats cannot be given on the command line yet (only integers and cN text)".into())
        }
    }
}

fn parse_int(text: &str) -> Result<i128, String> {
    let t = text.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let digits = digits.replace('_', "");
    let parsed = if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        i128::from_str_radix(h, 16)
    } else {
        digits.parse::<i128>()
    };
    let v = parsed.map_err(|_| format!("`{text}` is not an integer (decimal or 0x hex)"))?;
    Ok(if neg { -v } else { v })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A JSON string literal.
pub(super) fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_seeds() {
        let u8le = Format::Int {
            bytes: 8,
            signed: false,
        };
        assert_eq!(encode("0", &u8le).unwrap(), vec![0; 8]);
        assert_eq!(
            encode(
                "0x0102",
                &Format::Int {
                    bytes: 2,
                    signed: false
                }
            )
            .unwrap(),
            vec![2, 1]
        );
        assert_eq!(
            encode("-1", &Format::Int { bytes: 4, signed: true }).unwrap(),
            vec![0xff; 4]
        );
        assert!(encode(
            "-1",
            &Format::Int {
                bytes: 4,
                signed: false
            }
        )
        .is_err());
        assert!(encode(
            "256",
            &Format::Int {
                bytes: 1,
                signed: false
            }
        )
        .is_err());
        assert!(encode("x", &u8le).is_err());
        assert_eq!(encode("ab", &Format::Chars(4)).unwrap(), b"ab\0\0");
        assert!(encode("abcde", &Format::Chars(4)).is_err());
        assert!(encode("1", &Format::Record(vec![])).is_err());
        assert_eq!(json_str("a\"b\n"), "\"a\\\"b\\n\"");
    }
}
