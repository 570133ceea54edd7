//! The Rust skeleton of a compiled file: `$OUT_DIR/<name>.rs`.
//!
//! For `sni_filter.lua` it holds:
//! - `struct SniFilter`, which embeds the object (8-byte aligned) and has `load()`, which loads
//!   every program and map and fills the static tables (`luabpf_loader::load`);
//! - one accessor per map, `fn blocklist(&self) -> Result<TypedMap<K, V>, _>`, with `K` and `V`
//!   the Rust types of the declared formats: `I1`..`I8` → `u8`..`u64`, `i1`..`i8` →
//!   `i8`..`i64`, `cN` → `[u8; N]` (a `&str` is accepted too), a record → a generated
//!   `#[repr(C)]` struct with the compiler's layout (checked by `const` assertions);
//! - one attach helper per program, `fn attach_<program>(..) -> Result<Link, _>`, and
//!   `attach_xdp` / `attach_tc` / `attach_netfilter` when the file has exactly one program of
//!   that kind. A netfilter program's helper takes no argument (the family, hook and priority
//!   are the declared ones); `attach_<program>_at_priority(p)` overrides the priority.
//!
//! The code is written formatted (rustfmt's defaults) and every item has a doc comment naming
//! the Lua source, because users read it to learn the API.

use std::collections::HashSet;
use std::fmt::Write as _;

use luabpf_compiler::program::{Evaluated, Hook};
use luabpf_compiler::source::Span;
use runtime_bpf::object::{Field, Format, MapKind, MapSpec, Object};

use crate::names::{ident, snake_case as snake, type_name};
use crate::{hook_name, ProgramInfo};

/// What the skeleton is generated from.
pub struct Input<'a> {
    /// The output name (`sni_filter`): names the struct.
    pub name: &'a str,
    /// The Lua file as the user gave it.
    pub source: &'a str,
    /// The expression `include_bytes!` takes: `concat!(env!("OUT_DIR"), "/x.o")` or a path
    /// literal.
    pub object_path: &'a str,
    pub programs: &'a [ProgramInfo],
    pub evaluated: &'a Evaluated,
    pub object: &'a Object,
}

/// The alias the skeleton gives `luabpf_loader::skeleton`, which re-exports all it needs.
const SK: &str = "luabpf";

/// The skeleton's source text.
pub fn generate(input: &Input<'_>) -> String {
    let ty = type_name(input.name).unwrap_or_else(|| "Filter".into());
    let mut out = String::new();
    header(&mut out, input);

    let mut types = String::new();
    let mut accessors = String::new();
    let mut taken: HashSet<String> = ["load", "load_with", "object", "loaded", "into_loaded"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let attach = attach_methods(input, &mut taken);
    for map in &input.object.maps {
        map_items(input, map, &mut taken, &mut types, &mut accessors);
    }

    let _ = writeln!(out, "/// The object compiled from `{}`, 8-byte aligned.", input.source);
    let _ = writeln!(out, "static OBJECT: &{SK}::AlignedObject<[u8]> =");
    let _ = writeln!(out, "    &{SK}::AlignedObject(*include_bytes!({}));", input.object_path);
    out.push('\n');
    let _ = writeln!(
        out,
        "/// The programs and maps of `{}`, loaded into the kernel.",
        input.source
    );
    out.push_str("///\n");
    for p in input.programs {
        let _ = writeln!(out, "/// - program `{}` ({})", p.name, hook_name(&p.hook));
    }
    for m in &input.object.maps {
        let _ = writeln!(out, "/// - map `{}` ({})", m.name, m.kind.name());
    }
    out.push_str("///\n/// Dropping it unloads whatever no link or map handle still holds.\n");
    out.push_str("#[allow(dead_code)]\n#[derive(Debug)]\n");
    let _ = writeln!(out, "pub struct {ty} {{\n    loaded: {SK}::Loaded,\n}}\n");
    out.push_str("#[allow(dead_code)]\n");
    let _ = writeln!(out, "impl {ty} {{");
    let _ = writeln!(
        out,
        "    /// The ELF object, as `luabpf compile {}` writes it.",
        input.source
    );
    out.push_str("    pub fn object() -> &'static [u8] {\n        &OBJECT.0\n    }\n\n");
    out.push_str("    /// Loads every program and map into the kernel and fills the static tables.\n");
    let _ = writeln!(out, "    pub fn load() -> Result<{ty}, {SK}::LoadError> {{");
    let _ = writeln!(out, "        let loaded = {SK}::load(Self::object())?;");
    let _ = writeln!(out, "        Ok({ty} {{ loaded }})\n    }}\n");
    out.push_str("    /// [`Self::load`] with options: maps pinned (or reused) in a BPF filesystem, static\n");
    out.push_str("    /// tables left out for reused maps.\n");
    let _ = writeln!(
        out,
        "    pub fn load_with(options: &{SK}::LoadOptions) -> Result<{ty}, {SK}::LoadError> {{"
    );
    let _ = writeln!(out, "        let loaded = {SK}::load_with(Self::object(), options)?;");
    let _ = writeln!(out, "        Ok({ty} {{ loaded }})\n    }}\n");
    out.push_str("    /// The loaded object (program and map fds, aya's handle).\n");
    let _ = writeln!(
        out,
        "    pub fn loaded(&self) -> &{SK}::Loaded {{\n        &self.loaded\n    }}\n"
    );
    out.push_str("    /// The loaded object, to keep without the skeleton.\n");
    let _ = writeln!(
        out,
        "    pub fn into_loaded(self) -> {SK}::Loaded {{\n        self.loaded\n    }}"
    );
    out.push_str(&accessors);
    out.push_str(&attach);
    out.push_str("}\n");
    if !types.is_empty() {
        out.push('\n');
        out.push_str(types.trim_end());
        out.push('\n');
    }
    out
}

fn header(out: &mut String, input: &Input<'_>) {
    let _ = writeln!(
        out,
        "// @generated by luabpf-build from `{}`: do not edit.",
        input.source
    );
    out.push_str("//\n// Include it in a module of its own; it needs the `luabpf-loader` crate (its library\n");
    out.push_str("// alone: `default-features = false` leaves out the `luabpf` command):\n//\n");
    let _ = writeln!(out, "//     mod {} {{", ident(input.name));
    let _ = writeln!(
        out,
        "//         include!(concat!(env!(\"OUT_DIR\"), \"/{}.rs\"));",
        input.name
    );
    out.push_str("//     }\n\n");
    out.push_str("use ::luabpf_loader::skeleton as luabpf;\n\n");
}

/// `attach_<program>` per program, and the per-hook shorthands.
fn attach_methods(input: &Input<'_>, taken: &mut HashSet<String>) -> String {
    let mut out = String::new();
    for p in input.programs {
        let method = format!("attach_{}", snake(&p.name));
        if !taken.insert(method.clone()) {
            continue;
        }
        let line = decl_line(
            input,
            input
                .evaluated
                .programs
                .iter()
                .find(|d| d.name == p.name)
                .map(|d| d.span),
        );
        out.push('\n');
        match &p.hook {
            Hook::Xdp => {
                let _ = writeln!(
                    out,
                    "    /// Attaches program `{}` ({}{line}) at XDP on `interface`.",
                    p.name, input.source
                );
                out.push_str("    /// It stays attached until the returned link is dropped.\n");
                signature(
                    &mut out,
                    &method,
                    &["&self", "interface: &str", &format!("mode: {SK}::XdpMode")],
                    &attach_result(),
                );
                let _ = writeln!(
                    out,
                    "        {SK}::attach_xdp(&self.loaded, {:?}, interface, mode)\n    }}",
                    p.name
                );
            }
            Hook::Tc { egress } => {
                let _ = writeln!(
                    out,
                    "    /// Attaches program `{}` ({}{line}) at tc {} on `interface`.",
                    p.name,
                    input.source,
                    if *egress { "egress" } else { "ingress" }
                );
                out.push_str("    /// It stays attached until the returned link is dropped.\n");
                signature(&mut out, &method, &["&self", "interface: &str"], &attach_result());
                let _ = writeln!(
                    out,
                    "        {SK}::attach_tc(&self.loaded, {:?}, interface, {egress})\n    }}",
                    p.name
                );
            }
            Hook::Netfilter { family, hook, priority } => {
                let at_priority = format!("{method}_at_priority");
                taken.insert(at_priority.clone());
                let _ = writeln!(
                    out,
                    "    /// Attaches program `{}` ({}{line}) at netfilter {family} {hook}, priority\n    \
                     /// {priority} (as declared), in the caller's network namespace.",
                    p.name, input.source
                );
                out.push_str("    /// It stays attached until the returned link is dropped.\n");
                signature(&mut out, &method, &["&self"], &attach_result());
                let _ = writeln!(out, "        self.{at_priority}({priority})\n    }}\n");
                let _ = writeln!(
                    out,
                    "    /// [`Self::{method}`] with another priority: lower runs first, and the kernel\n    \
                     /// allows one BPF program per hook and priority."
                );
                signature(&mut out, &at_priority, &["&self", "priority: i32"], &attach_result());
                let _ = writeln!(
                    out,
                    "        {SK}::attach_netfilter(&self.loaded, {:?}, {family:?}, {hook:?}, priority)\n    }}",
                    p.name
                );
            }
        }
    }
    // The per-hook shorthands, for a file with exactly one program of the kind.
    let mode = format!("mode: {SK}::XdpMode");
    let shorthands = [
        Shorthand {
            method: "attach_xdp",
            kind: "XDP",
            is_kind: |h| *h == Hook::Xdp,
            params: vec!["&self", "interface: &str", &mode],
            args: "interface, mode",
        },
        Shorthand {
            method: "attach_tc",
            kind: "tc",
            is_kind: |h| matches!(h, Hook::Tc { .. }),
            params: vec!["&self", "interface: &str"],
            args: "interface",
        },
        Shorthand {
            method: "attach_netfilter",
            kind: "netfilter",
            is_kind: |h| matches!(h, Hook::Netfilter { .. }),
            params: vec!["&self"],
            args: "",
        },
    ];
    for s in shorthands {
        let of_kind: Vec<&ProgramInfo> = input.programs.iter().filter(|p| (s.is_kind)(&p.hook)).collect();
        let [p] = of_kind[..] else { continue };
        if !taken.insert(s.method.into()) {
            continue;
        }
        let target = snake(&p.name);
        let _ = writeln!(
            out,
            "\n    /// [`Self::attach_{target}`]: `{}` is the file's only {} program.",
            p.name, s.kind
        );
        signature(&mut out, s.method, &s.params, &attach_result());
        let _ = writeln!(out, "        self.attach_{target}({})\n    }}", s.args);
    }
    out
}

/// `attach_xdp` and the like: the helper of a file's only program of a kind, by another name.
struct Shorthand<'a> {
    method: &'static str,
    /// The kind, as the doc comment names it.
    kind: &'static str,
    is_kind: fn(&Hook) -> bool,
    params: Vec<&'a str>,
    /// What the shorthand passes on.
    args: &'static str,
}

fn attach_result() -> String {
    format!("Result<{SK}::Link, {SK}::AttachError>")
}

/// `    pub fn name(params) -> ret {`, on one line if it fits rustfmt's 100 columns, else one
/// parameter a line as rustfmt writes it.
fn signature(out: &mut String, name: &str, params: &[&str], ret: &str) {
    let line = format!("    pub fn {name}({}) -> {ret} {{", params.join(", "));
    if line.len() <= 100 {
        out.push_str(&line);
        out.push('\n');
        return;
    }
    let _ = writeln!(out, "    pub fn {name}(");
    for p in params {
        let _ = writeln!(out, "        {p},");
    }
    let _ = writeln!(out, "    ) -> {ret} {{");
}

/// The accessor of one map, and the Rust types of its key and value.
fn map_items(input: &Input<'_>, map: &MapSpec, taken: &mut HashSet<String>, types: &mut String, out: &mut String) {
    let base = type_name(&map.name).unwrap_or_else(|| "Map".into());
    let mut method = ident(&map.name);
    if !taken.insert(method.trim_start_matches("r#").to_string()) {
        method = format!("{}_map", snake(&map.name));
        taken.insert(method.clone());
    }
    let origin = map_origin(input, map);
    out.push('\n');
    if map.kind == MapKind::Ringbuf {
        let _ = writeln!(out, "    /// Map `{}` (ringbuf), {origin}.", map.name);
        signature(
            out,
            &method,
            &["&self"],
            &format!("Result<{SK}::RawMap, {SK}::MapError>"),
        );
        let _ = writeln!(out, "        self.loaded.map({:?})\n    }}", map.name);
        return;
    }
    let key = rust_type(&map.key, &format!("{base}Key"), &map.name, "key", types);
    let value = rust_type(&map.value, &format!("{base}Value"), &map.name, "value", types);
    let _ = writeln!(
        out,
        "    /// Map `{}` ({}, {} entries), {origin}.",
        map.name,
        map.kind.name(),
        map.max_entries
    );
    let _ = writeln!(
        out,
        "    /// Keys: `{}`, {}.",
        format_text(&map.key),
        describe(&map.key, &key)
    );
    let _ = writeln!(
        out,
        "    /// Values: `{}`, {}.",
        format_text(&map.value),
        describe(&map.value, &value)
    );
    if map.kind.is_percpu() {
        out.push_str("    /// Per-CPU: read it with `get_per_cpu`; `insert` writes every CPU.\n");
    }
    signature(
        out,
        &method,
        &["&self"],
        &format!("Result<{SK}::TypedMap<{key}, {value}>, {SK}::TypedMapError>"),
    );
    let _ = writeln!(
        out,
        "        {SK}::TypedMap::new(self.loaded.map({:?})?)\n    }}",
        map.name
    );
}

/// Where a map comes from, for doc comments: `declared at f.lua:17` or `static table at ...`.
fn map_origin(input: &Input<'_>, map: &MapSpec) -> String {
    if let Some(decl) = input.evaluated.maps.iter().find(|m| m.name == map.name) {
        return format!("declared at {}{}", input.source, decl_line(input, Some(decl.span)));
    }
    let table = input
        .evaluated
        .tables
        .iter()
        .find(|t| t.name.as_deref() == Some(map.name.as_str()));
    format!(
        "the static table at {}{}, filled by `load()`",
        input.source,
        decl_line(input, table.and_then(|t| t.span))
    )
}

/// `:17` for a span in the program file itself, `` otherwise.
fn decl_line(input: &Input<'_>, span: Option<Span>) -> String {
    match span {
        Some(s) if s.file == 0 => format!(":{}", input.evaluated.sources.line_col(s.file, s.start).0),
        Some(s) => match input.evaluated.sources.files.get(s.file as usize) {
            Some(f) => format!(
                " via {}:{}",
                f.name,
                input.evaluated.sources.line_col(s.file, s.start).0
            ),
            None => String::new(),
        },
        None => String::new(),
    }
}

/// The Rust type of a format; records are generated into `types` under `name`.
fn rust_type(format: &Format, name: &str, map: &str, role: &str, types: &mut String) -> String {
    match format {
        Format::Int { bytes, signed } => format!("{}{}", if *signed { "i" } else { "u" }, *bytes as u32 * 8),
        Format::Chars(n) => format!("[u8; {n}]"),
        Format::Record(fields) => {
            record_type(fields, format, name, map, role, types);
            name.to_string()
        }
    }
}

/// A `#[repr(C)]` struct for a record, its `MapData` impl and layout assertions.
fn record_type(fields: &[Field], format: &Format, name: &str, map: &str, role: &str, types: &mut String) {
    let mut field_types = Vec::new();
    let mut nested = String::new();
    for f in fields {
        let sub = format!("{name}{}", type_name(&f.name).unwrap_or_else(|| "Field".into()));
        field_types.push(rust_type(&f.format, &sub, map, role, &mut nested));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "/// The {role} of map `{map}`, laid out like the C struct the program uses:\n/// `{}`.",
        format_text(format)
    );
    // The standard library has `Default` for arrays of at most 32 elements only: a longer
    // `cN` field needs a written impl (and a derivable one must be derived, or clippy objects).
    let derive_default = fields.iter().all(|f| !matches!(f.format, Format::Chars(n) if n > 32));
    let _ = writeln!(
        out,
        "#[allow(dead_code)]\n#[repr(C)]\n#[derive(Clone, Copy, Debug, {}PartialEq, Eq)]",
        if derive_default { "Default, " } else { "" }
    );
    let _ = writeln!(out, "pub struct {name} {{");
    for (f, ty) in fields.iter().zip(&field_types) {
        let _ = writeln!(out, "    /// `{}`: `{}`.", f.name, format_text(&f.format));
        let _ = writeln!(out, "    pub {}: {ty},", ident(&f.name));
    }
    out.push_str("}\n\n");
    if !derive_default {
        let _ = writeln!(out, "impl Default for {name} {{");
        out.push_str("    fn default() -> Self {\n");
        let _ = writeln!(out, "        {name} {{");
        for (f, ty) in fields.iter().zip(&field_types) {
            let zero = match &f.format {
                Format::Int { .. } => "0".to_string(),
                Format::Chars(n) => format!("[0; {n}]"),
                Format::Record(_) => format!("{ty}::default()"),
            };
            let _ = writeln!(out, "            {}: {zero},", ident(&f.name));
        }
        out.push_str("        }\n    }\n}\n\n");
    }
    let _ = writeln!(out, "impl {SK}::MapData for {name} {{");
    let _ = writeln!(out, "    const SIZE: usize = {};\n", format.size());
    out.push_str("    fn encode(&self, out: &mut [u8]) {\n");
    out.push_str("        out.fill(0);\n");
    for f in fields {
        let _ = writeln!(
            out,
            "        {SK}::MapData::encode(&self.{}, &mut out[{}]);",
            ident(&f.name),
            byte_range(f)
        );
    }
    out.push_str("    }\n\n    fn decode(bytes: &[u8]) -> Self {\n");
    let _ = writeln!(out, "        {name} {{");
    for f in fields {
        let _ = writeln!(
            out,
            "            {}: {SK}::MapData::decode(&bytes[{}]),",
            ident(&f.name),
            byte_range(f)
        );
    }
    out.push_str("        }\n    }\n}\n\n");
    out.push_str("// The compiler's layout: the same size and field offsets as this struct.\n");
    let _ = writeln!(
        out,
        "const _: () = assert!(::core::mem::size_of::<{name}>() == {});",
        format.size()
    );
    for f in fields {
        let _ = writeln!(
            out,
            "const _: () = assert!(::core::mem::offset_of!({name}, {}) == {});",
            ident(&f.name),
            f.offset
        );
    }
    out.push('\n');
    types.push_str(&nested);
    types.push_str(&out);
}

/// `8..10`: where a field's bytes are in its record.
fn byte_range(f: &Field) -> String {
    format!("{}..{}", f.offset, f.offset + f.format.size())
}

/// A format as the Lua file writes it: `I8`, `c64`, `{ hits = I8, last = I8 }`.
fn format_text(format: &Format) -> String {
    match format {
        Format::Int { bytes, signed } => format!("{}{bytes}", if *signed { "i" } else { "I" }),
        Format::Chars(n) => format!("c{n}"),
        Format::Record(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| format!("{} = {}", f.name, format_text(&f.format)))
                .collect();
            format!("{{ {} }}", inner.join(", "))
        }
    }
}

/// What a format's Rust type accepts, for doc comments.
fn describe(format: &Format, rust: &str) -> String {
    match format {
        Format::Chars(n) => format!("`{rust}`, or a `&str` of at most {n} bytes"),
        _ => format!("`{rust}`"),
    }
}
