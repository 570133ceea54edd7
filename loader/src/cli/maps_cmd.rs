//! `luabpf map list|get|set|del|dump`: the maps of an attached program, typed by their formats.
//!
//! Maps are opened from their pins (/sys/fs/bpf/luabpf/PROGRAM/maps/MAP); the key and value
//! formats come from the copy of the object `attach` keeps in /run/luabpf/PROGRAM/object.o
//! (the map declarations read back from its BTF).

use clap::{Args, Subcommand};
use luabpf_loader::pins::Pins;
use luabpf_loader::{possible_cpus, RawMap, UpdateMode};
use runtime_bpf::object::{Format, MapSpec};

use super::attach::json_str;
use super::output::{self, CliError};

pub const MAP_HELP: &str = "\
Keys and values are typed by the map's declared formats (`luabpf map list PROGRAM`):
  integers (I1..I8, i1..i8)   decimal or 0x hex: 443, 0x1bb, -16, -0x10
  cN                          text of at most N bytes: evil.example
  records {a: I4, b: c8}      field=value,...; fields left out are 0: a=7,b=x
A key or value that does not fit its format is refused (exit 2) with a message naming the
format, and nothing is written. Per-CPU maps: `set` writes every CPU, `get` and `dump` show
each CPU's value and their sum.

Examples:
  luabpf map set sni_filter blocklist evil.example 0
  luabpf map get cookie_guard cookies 0x0100000a --json
  luabpf map dump sni_filter blocklist --json

Exit status: 0 done, 1 no such program, map or key, 2 usage error (a bad key or value) or
bpf() unavailable.";

#[derive(Debug, Subcommand)]
pub enum MapCommand {
    /// List the maps of an attached program, with their formats
    List(MapListArgs),
    /// Print the value of one key (per-CPU maps: every CPU's value and their sum)
    Get(MapKeyArgs),
    /// Write one value (per-CPU maps: the same value on every CPU)
    Set(MapSetArgs),
    /// Delete one key
    Del(MapKeyArgs),
    /// Print every key and value
    Dump(MapDumpArgs),
}

#[derive(Debug, Args)]
pub struct MapListArgs {
    /// The program name (as `luabpf list` shows it)
    #[arg(value_name = "PROGRAM")]
    pub program: String,
    /// JSON output
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MapDumpArgs {
    /// The program name (as `luabpf list` shows it)
    #[arg(value_name = "PROGRAM")]
    pub program: String,
    /// One of its maps (as `luabpf map list PROGRAM` shows them)
    #[arg(value_name = "MAP")]
    pub map: String,
    /// JSON output: an array of {"key":..,"value":..} (per-CPU maps: "values" and "sum")
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MapKeyArgs {
    /// The program name (as `luabpf list` shows it)
    #[arg(value_name = "PROGRAM")]
    pub program: String,
    /// One of its maps (as `luabpf map list PROGRAM` shows them)
    #[arg(value_name = "MAP")]
    pub map: String,
    /// Integers in decimal or 0x hex, `cN` keys as text, records as `field=value,...`
    #[arg(value_name = "KEY", allow_hyphen_values = true)]
    pub key: String,
    /// JSON output
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MapSetArgs {
    /// The program name (as `luabpf list` shows it)
    #[arg(value_name = "PROGRAM")]
    pub program: String,
    /// One of its maps (as `luabpf map list PROGRAM` shows them)
    #[arg(value_name = "MAP")]
    pub map: String,
    /// Integers in decimal or 0x hex, `cN` keys as text, records as `field=value,...`
    #[arg(value_name = "KEY", allow_hyphen_values = true)]
    pub key: String,
    /// In the map's value format, like KEY
    #[arg(value_name = "VALUE", allow_hyphen_values = true)]
    pub value: String,
    /// JSON output (`{"ok":true}`)
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: &MapCommand) -> Result<(), CliError> {
    match cmd {
        MapCommand::List(a) => list(a),
        MapCommand::Get(a) => get(a),
        MapCommand::Set(a) => set(a),
        MapCommand::Del(a) => del(a),
        MapCommand::Dump(a) => dump(a),
    }
}

/// The map declarations of an attached program.
fn specs(program: &str) -> Result<Vec<MapSpec>, CliError> {
    let p = Pins::new(program);
    if !luabpf_loader::pins::valid_name(program) || !p.exists() {
        return Err(CliError::Refused(format!(
            "no program named `{program}` is attached by luabpf (see `luabpf list`)"
        )));
    }
    let bytes = std::fs::read(p.object_file()).map_err(|e| {
        CliError::Refused(format!(
            "no map formats for `{program}`: cannot read {}: {}",
            p.object_file().display(),
            output::reason(&e)
        ))
    })?;
    let read = runtime_bpf::elf::read_detailed(&bytes)
        .map_err(|e| CliError::Refused(format!("{}: {e}", p.object_file().display())))?;
    Ok(read.object.maps)
}

fn open(program: &str, map: &str) -> Result<(RawMap, MapSpec), CliError> {
    // Without bpf() the pins cannot be opened: say so rather than show an EACCES.
    super::attach::need_kernel("map")?;
    let specs = specs(program)?;
    let Some(spec) = specs.iter().find(|m| m.name == map).cloned() else {
        let names: Vec<&str> = specs.iter().map(|m| m.name.as_str()).collect();
        return Err(CliError::Refused(format!(
            "program `{program}` has no map named `{map}` (maps: {})",
            names.join(", ")
        )));
    };
    let path = Pins::new(program).map(map);
    let raw = RawMap::open_pinned(&path).map_err(|e| CliError::Refused(e.to_string()))?;
    if raw.key_size() != spec.key.size() || raw.value_size() != spec.value.size() {
        return Err(CliError::Refused(format!(
            "map `{map}`: the pinned map's sizes ({}-byte keys, {}-byte values) differ from its \
             declaration ({}, {})",
            raw.key_size(),
            raw.value_size(),
            format_name(&spec.key),
            format_name(&spec.value)
        )));
    }
    Ok((raw, spec))
}

/// `I4`, `i8`, `c64`, `{a: I4, b: c8}`.
pub fn format_name(f: &Format) -> String {
    match f {
        Format::Int { bytes, signed } => format!("{}{bytes}", if *signed { 'i' } else { 'I' }),
        Format::Chars(n) => format!("c{n}"),
        Format::Record(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|fl| format!("{}: {}", fl.name, format_name(&fl.format)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn parse_int(text: &str, bytes: u8, signed: bool) -> Result<Vec<u8>, String> {
    let t = text.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let mag: u128 = if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        u128::from_str_radix(h, 16).map_err(|_| format!("`{text}` is not an integer"))?
    } else {
        digits
            .parse::<u128>()
            .map_err(|_| format!("`{text}` is not an integer"))?
    };
    let bits = bytes as u32 * 8;
    let value: i128 = if neg { -(mag as i128) } else { mag as i128 };
    let (min, max): (i128, i128) = if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    if mag > i128::MAX as u128 || value < min || value > max {
        return Err(format!("`{text}` is out of range ({min} to {max})"));
    }
    Ok((value as u64).to_ne_bytes()[..bytes as usize].to_vec())
}

/// Encodes `text` in format `f`; the error names the format.
pub fn encode(f: &Format, text: &str) -> Result<Vec<u8>, String> {
    let fail = |why: String| format!("{why} (format {})", format_name(f));
    match f {
        Format::Int { bytes, signed } => parse_int(text, *bytes, *signed).map_err(fail),
        Format::Chars(n) => {
            let b = text.as_bytes();
            if b.len() > *n as usize {
                return Err(fail(format!("`{text}` is {} bytes, longer than {n}", b.len())));
            }
            let mut out = b.to_vec();
            out.resize(*n as usize, 0);
            Ok(out)
        }
        Format::Record(fields) => {
            let mut out = vec![0u8; f.size() as usize];
            let mut seen: Vec<&str> = Vec::new();
            for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let Some((k, v)) = part.split_once('=') else {
                    return Err(fail(format!("`{part}` is not `field=value`")));
                };
                let k = k.trim();
                let Some(field) = fields.iter().find(|fl| fl.name == k) else {
                    return Err(fail(format!("no field `{k}`")));
                };
                if seen.contains(&k) {
                    return Err(fail(format!("field `{k}` given twice")));
                }
                seen.push(k);
                if matches!(field.format, Format::Record(_)) {
                    return Err(fail(format!(
                        "field `{k}` is a record: nested records cannot be written yet"
                    )));
                }
                let bytes = encode(&field.format, v).map_err(|e| format!("field `{k}`: {e}"))?;
                let off = field.offset as usize;
                out[off..off + bytes.len()].copy_from_slice(&bytes);
            }
            Ok(out)
        }
    }
}

/// A decoded value: for text output and JSON.
fn int_of(f: &Format, b: &[u8]) -> Option<i128> {
    let Format::Int { bytes, signed } = f else {
        return None;
    };
    let mut buf = [0u8; 8];
    buf[..*bytes as usize].copy_from_slice(&b[..*bytes as usize]);
    let u = u64::from_ne_bytes(buf);
    Some(if *signed {
        let shift = 64 - *bytes as u32 * 8;
        (((u << shift) as i64) >> shift) as i128
    } else {
        u as i128
    })
}

fn chars_text(b: &[u8]) -> String {
    let end = b.iter().rposition(|c| *c != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn decode(f: &Format, b: &[u8], json: bool) -> String {
    match f {
        Format::Int { .. } => int_of(f, b).unwrap_or(0).to_string(),
        Format::Chars(_) => {
            let t = chars_text(b);
            if json {
                json_str(&t)
            } else {
                t.escape_debug().to_string()
            }
        }
        Format::Record(fields) => {
            let parts: Vec<String> = fields
                .iter()
                .map(|fl| {
                    let off = fl.offset as usize;
                    let v = decode(&fl.format, &b[off..off + fl.format.size() as usize], json);
                    if json {
                        format!("{}:{v}", json_str(&fl.name))
                    } else if matches!(fl.format, Format::Record(_)) {
                        format!("{}={{{v}}}", fl.name)
                    } else {
                        format!("{}={v}", fl.name)
                    }
                })
                .collect();
            if json {
                format!("{{{}}}", parts.join(","))
            } else {
                parts.join(",")
            }
        }
    }
}

fn map_err(e: luabpf_loader::MapError) -> CliError {
    CliError::Refused(e.to_string())
}

/// One entry as text or JSON.
fn entry(spec: &MapSpec, raw: &RawMap, key: &[u8], json: bool) -> Result<Option<String>, CliError> {
    let k = decode(&spec.key, key, json);
    if raw.is_percpu() {
        let Some(vals) = raw.lookup_percpu(key).map_err(map_err)? else {
            return Ok(None);
        };
        let shown: Vec<String> = vals.iter().map(|v| decode(&spec.value, v, json)).collect();
        let sum: Option<i128> = vals.iter().map(|v| int_of(&spec.value, v)).sum();
        Ok(Some(if json {
            format!(
                "{{\"key\":{k},\"values\":[{}],\"sum\":{}}}",
                shown.join(","),
                sum.map_or("null".to_string(), |s| s.to_string())
            )
        } else {
            let cpus: Vec<String> = shown.iter().enumerate().map(|(i, v)| format!("cpu{i}={v}")).collect();
            match sum {
                Some(s) => format!("{k}: {s} ({})", cpus.join(" ")),
                None => format!("{k}: {}", cpus.join(" ")),
            }
        }))
    } else {
        let Some(v) = raw.lookup(key).map_err(map_err)? else {
            return Ok(None);
        };
        let v = decode(&spec.value, &v, json);
        Ok(Some(if json {
            format!("{{\"key\":{k},\"value\":{v}}}")
        } else {
            format!("{k}: {v}")
        }))
    }
}

fn list(a: &MapListArgs) -> Result<(), CliError> {
    let specs = specs(&a.program)?;
    let mut text = String::new();
    if a.json {
        let rows: Vec<String> = specs
            .iter()
            .map(|m| {
                format!(
                    "{{\"name\":{},\"kind\":{},\"key\":{},\"value\":{},\"entries\":{}}}",
                    json_str(&m.name),
                    json_str(m.kind.name()),
                    json_str(&format_name(&m.key)),
                    json_str(&format_name(&m.value)),
                    m.max_entries
                )
            })
            .collect();
        text = format!("[{}]\n", rows.join(","));
    } else {
        for m in &specs {
            text.push_str(&format!(
                "{}\t{}\tkey {}\tvalue {}\t{} entries\n",
                m.name,
                m.kind.name(),
                format_name(&m.key),
                format_name(&m.value),
                m.max_entries
            ));
        }
    }
    output::stdout(text.as_bytes())
}

fn usage(e: String) -> CliError {
    CliError::Usage(e)
}

fn get(a: &MapKeyArgs) -> Result<(), CliError> {
    let (raw, spec) = open(&a.program, &a.map)?;
    let key = encode(&spec.key, &a.key).map_err(|e| usage(format!("key: {e}")))?;
    match entry(&spec, &raw, &key, a.json)? {
        Some(line) => output::stdout(format!("{line}\n").as_bytes()),
        None => Err(CliError::Refused(format!("map `{}`: no key `{}`", a.map, a.key))),
    }
}

fn set(a: &MapSetArgs) -> Result<(), CliError> {
    let (raw, spec) = open(&a.program, &a.map)?;
    let key = encode(&spec.key, &a.key).map_err(|e| usage(format!("key: {e}")))?;
    let value = encode(&spec.value, &a.value).map_err(|e| usage(format!("value: {e}")))?;
    let written = if raw.is_percpu() {
        let n = possible_cpus().map_err(map_err)?;
        let vals = vec![value; n];
        raw.update_percpu(&key, &vals, UpdateMode::Any)
    } else {
        raw.update(&key, &value, UpdateMode::Any)
    };
    match written {
        Ok(()) => {}
        // E2BIG: an index past an array's end, or a new key in a full hash map.
        Err(e) if e.errno() == Some(libc::E2BIG) => {
            return Err(CliError::Refused(if spec.kind.is_array() {
                format!(
                    "map `{}`: key `{}` is past the end of the {} (keys 0 to {})",
                    a.map,
                    a.key,
                    spec.kind.name(),
                    spec.max_entries.saturating_sub(1)
                )
            } else {
                format!(
                    "map `{}` is full ({} entries): delete a key first, or declare more `entries`",
                    a.map, spec.max_entries
                )
            }))
        }
        Err(e) => return Err(map_err(e)),
    }
    if a.json {
        output::stdout(b"{\"ok\":true}\n")
    } else {
        Ok(())
    }
}

fn del(a: &MapKeyArgs) -> Result<(), CliError> {
    let (raw, spec) = open(&a.program, &a.map)?;
    let key = encode(&spec.key, &a.key).map_err(|e| usage(format!("key: {e}")))?;
    if spec.kind.is_array() {
        return Err(usage(format!(
            "map `{}` is an {}: its entries cannot be deleted (set them to 0)",
            a.map,
            spec.kind.name()
        )));
    }
    if raw.delete(&key).map_err(map_err)? {
        if a.json {
            output::stdout(b"{\"ok\":true}\n")?;
        }
        Ok(())
    } else {
        Err(CliError::Refused(format!("map `{}`: no key `{}`", a.map, a.key)))
    }
}

fn dump(a: &MapDumpArgs) -> Result<(), CliError> {
    let (raw, spec) = open(&a.program, &a.map)?;
    let mut lines = Vec::new();
    let mut key: Option<Vec<u8>> = None;
    loop {
        let next = raw.next_key(key.as_deref()).map_err(map_err)?;
        let Some(k) = next else { break };
        if let Some(line) = entry(&spec, &raw, &k, a.json)? {
            lines.push(line);
        }
        key = Some(k);
        if lines.len() > 10_000_000 {
            break;
        }
    }
    let text = if a.json {
        format!("[{}]\n", lines.join(","))
    } else {
        lines.iter().map(|l| format!("{l}\n")).collect()
    };
    output::stdout(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_formats() {
        let i4 = Format::Int {
            bytes: 4,
            signed: false,
        };
        assert_eq!(encode(&i4, "0x10").unwrap(), 16u32.to_ne_bytes());
        assert!(encode(&i4, "abc").unwrap_err().contains("format I4"));
        assert!(encode(&i4, "4294967296").is_err());
        assert!(encode(&i4, "-1").is_err());
        let i2 = Format::Int { bytes: 2, signed: true };
        assert_eq!(encode(&i2, "-2").unwrap(), (-2i16).to_ne_bytes());
        let c4 = Format::Chars(4);
        assert_eq!(encode(&c4, "ab").unwrap(), b"ab\0\0");
        assert!(encode(&c4, "abcde").unwrap_err().contains("format c4"));
        let r = Format::record(vec![("a".into(), i4.clone()), ("b".into(), Format::Chars(3))]);
        let b = encode(&r, "b=xy,a=7").unwrap();
        assert_eq!(decode(&r, &b, false), "a=7,b=xy");
        assert_eq!(decode(&r, &b, true), "{\"a\":7,\"b\":\"xy\"}");
        assert!(encode(&r, "c=1").is_err());
    }
}
