//! `require` resolution: which module a name means and where its source comes from.
//!
//! The order is fixed by the language: built-in modules (`bpf.*`, `linux.*`), then the
//! standard library shipped in stdlib/ (embedded in the binary, so an installed luabpf works
//! from any directory), then Lua files relative to the program file's directory (`a.b` ->
//! `a/b.lua`), then each `-I` directory in the order given.

use std::path::{Path, PathBuf};

/// The modules implemented by the compiler itself (see `eval` for their contents).
pub const BUILTIN_MODULES: &[&str] = &[
    "bpf",
    "bpf.xdp",
    "bpf.tc",
    "bpf.netfilter",
    "bpf.map",
    "linux.xdp",
    "linux.tc",
    "linux.netfilter",
    "linux.byteorder",
];

/// One standard-library module, embedded at build time.
#[derive(Debug)]
pub struct StdlibModule {
    /// The name given to `require`: `net.eth`.
    pub name: &'static str,
    /// The name shown in diagnostics and line info: `stdlib/net/eth.lua`.
    pub path: &'static str,
    pub text: &'static str,
}

/// Every file under stdlib/. A test checks that this table and the directory agree, so a new
/// module only needs its line here (and, like any change to a stdlib file, its bytecode in
/// eval/stdlib_chunks.bin regenerated: that module's test says how).
pub const STDLIB: &[StdlibModule] = &[
    StdlibModule {
        name: "net.dns",
        path: "stdlib/net/dns.lua",
        text: include_str!("../../stdlib/net/dns.lua"),
    },
    StdlibModule {
        name: "net.eth",
        path: "stdlib/net/eth.lua",
        text: include_str!("../../stdlib/net/eth.lua"),
    },
    StdlibModule {
        name: "net.http",
        path: "stdlib/net/http.lua",
        text: include_str!("../../stdlib/net/http.lua"),
    },
    StdlibModule {
        name: "net.icmp",
        path: "stdlib/net/icmp.lua",
        text: include_str!("../../stdlib/net/icmp.lua"),
    },
    StdlibModule {
        name: "net.ipv4",
        path: "stdlib/net/ipv4.lua",
        text: include_str!("../../stdlib/net/ipv4.lua"),
    },
    StdlibModule {
        name: "net.ipv6",
        path: "stdlib/net/ipv6.lua",
        text: include_str!("../../stdlib/net/ipv6.lua"),
    },
    StdlibModule {
        name: "net.tcp",
        path: "stdlib/net/tcp.lua",
        text: include_str!("../../stdlib/net/tcp.lua"),
    },
    StdlibModule {
        name: "net.tls",
        path: "stdlib/net/tls.lua",
        text: include_str!("../../stdlib/net/tls.lua"),
    },
    StdlibModule {
        name: "net.udp",
        path: "stdlib/net/udp.lua",
        text: include_str!("../../stdlib/net/udp.lua"),
    },
];

/// Where a module's code comes from.
#[derive(Debug)]
pub enum Resolved {
    /// One of [`BUILTIN_MODULES`].
    Builtin(&'static str),
    Stdlib(&'static StdlibModule),
    /// A Lua file on disk (relative to the program, or in an include directory).
    File(PathBuf),
}

#[derive(Debug, PartialEq, Eq)]
pub enum ResolveError {
    /// The name cannot be a module name (empty part, a path separator, ...).
    BadName,
    /// Not found; `searched` lists every place looked at, in order, for the diagnostic.
    NotFound { searched: Vec<String> },
}

/// Resolves a module name. `program_dir` is the directory of the program file.
pub fn resolve(name: &str, program_dir: &Path, include_dirs: &[PathBuf]) -> Result<Resolved, ResolveError> {
    if !valid_module_name(name) {
        return Err(ResolveError::BadName);
    }
    if let Some(builtin) = BUILTIN_MODULES.iter().find(|&&b| b == name) {
        return Ok(Resolved::Builtin(builtin));
    }
    if let Some(module) = STDLIB.iter().find(|m| m.name == name) {
        return Ok(Resolved::Stdlib(module));
    }
    let relative = module_path(name);
    let mut searched = vec![
        format!("built-in modules: {}", BUILTIN_MODULES.join(", ")),
        format!("standard library: {}", stdlib_names()),
    ];
    let dirs = std::iter::once(program_dir).chain(include_dirs.iter().map(PathBuf::as_path));
    for dir in dirs {
        let candidate = dir.join(&relative);
        if candidate.is_file() {
            return Ok(Resolved::File(candidate));
        }
        searched.push(candidate.display().to_string());
    }
    Err(ResolveError::NotFound { searched })
}

/// `a.b` -> `a/b.lua`.
pub fn module_path(name: &str) -> PathBuf {
    let mut path: PathBuf = name.split('.').collect();
    path.set_extension("lua");
    path
}

/// Dot-separated parts of letters, digits, `_` and `-`: no path syntax can sneak in.
pub fn valid_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

fn stdlib_names() -> String {
    if STDLIB.is_empty() {
        return "(none)".into();
    }
    STDLIB.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// The directory that relative `require`s search for a program file at `path`.
pub fn program_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
