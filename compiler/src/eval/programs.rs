//! Program constructors: `bpf.xdp.program`, `bpf.tc.program`, `bpf.netfilter.program`.

use super::builtins::{NETFILTER_VERDICTS, TC_VERDICTS, XDP_VERDICTS};
use super::state::{borrow, borrow_mut, fail, ProgramEntry, Shared, State};
use crate::diag::Diagnostic;
use crate::program::Hook;
use crate::source::Span;
use mlua::{Function, Lua, MetaMethod, MultiValue, UserData, UserDataMethods, Value};

const NETFILTER_HOOKS: &[&str] = &["prerouting", "local_in", "forward", "local_out", "postrouting"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HookKind {
    Xdp,
    Tc,
    Netfilter,
}

impl HookKind {
    fn module(self) -> &'static str {
        match self {
            HookKind::Xdp => "xdp",
            HookKind::Tc => "tc",
            HookKind::Netfilter => "netfilter",
        }
    }

    fn verdicts(self) -> (&'static str, &'static [(&'static str, i64)]) {
        match self {
            HookKind::Xdp => ("linux.xdp", XDP_VERDICTS),
            HookKind::Tc => ("linux.tc", TC_VERDICTS),
            HookKind::Netfilter => ("linux.netfilter", NETFILTER_VERDICTS),
        }
    }

    /// The verdict a program returns when it returns nothing or fails at run time.
    fn default_verdict(self) -> i64 {
        match self {
            HookKind::Xdp => 2,       // XDP_PASS
            HookKind::Tc => 0,        // TC_ACT_OK
            HookKind::Netfilter => 1, // NF_ACCEPT
        }
    }

    fn options(self) -> &'static [&'static str] {
        match self {
            HookKind::Xdp => &["name", "default"],
            HookKind::Tc => &["name", "default", "egress"],
            HookKind::Netfilter => &["name", "default", "family", "hook", "priority"],
        }
    }
}

/// A program as the body sees it: returned by the constructor, returned by the body.
pub(crate) struct ProgramObj(pub usize);

impl UserData for ProgramObj {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(format!("program#{}", this.0)));
    }
}

pub(crate) fn constructor(lua: &Lua, st: &Shared, hook: HookKind, args: MultiValue) -> mlua::Result<Value> {
    // Lunatik's curried form, `xdp.program{ default = action.DROP }(function(ctx) ... end)`:
    // the options first, then a function that takes the program's function.
    if let (1, Some(Value::Table(options))) = (args.len(), args.front()) {
        let (options, st) = (options.clone(), st.clone());
        let with_options = lua.create_function(move |lua, args: MultiValue| {
            let mut args = args.into_vec();
            if args.len() == 1 {
                args.push(Value::Table(options.clone()));
            }
            constructor(lua, &st, hook, MultiValue::from_vec(args))
        })?;
        return Ok(Value::Function(with_options));
    }
    let entry = {
        let s = borrow(st)?;
        let span = s.call_site(lua, "program");
        declare(&s, span, hook, args).or_else(fail)?
    };
    let id = {
        let mut s = borrow_mut(st)?;
        s.programs.push(entry);
        s.programs.len() - 1
    };
    lua.create_userdata(ProgramObj(id)).map(Value::UserData)
}

/// `xdp.runtime()`, `tc.runtime()`: Lunatik's call into its kernel Lua runtime. luabpf programs
/// run without Lunatik's kernel module, so there is no runtime to call: refused in the body.
pub(crate) fn runtime(lua: &Lua, st: &Shared, hook: HookKind) -> mlua::Result<()> {
    let module = hook.module();
    let span = borrow(st)?.call_site(lua, "runtime");
    fail(
        Diagnostic::new(
            span,
            format!("`{module}.runtime()` calls Lunatik's kernel Lua runtime, which luabpf programs do not have"),
            "not supported by luabpf",
        )
        .hint("luabpf compiles the whole decision to BPF: write it in the compiled function, with maps for the state that user space keeps; or load this program file with Lunatik"),
    )
}

fn declare(s: &State, span: Span, kind: HookKind, args: MultiValue) -> Result<ProgramEntry, Diagnostic> {
    let module = kind.module();
    let args = args.into_vec();
    let usage = |what: String| {
        Diagnostic::new(span, what, "in this call").hint(format!(
            "write `{module}.program(fn, {{ name = \"...\" }})` with a function defined in Lua"
        ))
    };
    let func = match args.first() {
        Some(Value::Function(f)) if is_lua_function(s, f) => f.clone(),
        Some(Value::Function(_)) => {
            return Err(usage(format!(
                "`{module}.program` needs a function written in Lua, not a built-in"
            )))
        }
        Some(other) => {
            return Err(usage(format!(
                "`{module}.program` expects a function, got {}",
                crate::eval::a_type(other)
            )))
        }
        None => return Err(usage(format!("`{module}.program` expects a function"))),
    };
    let options = match args.get(1) {
        None | Some(Value::Nil) => Vec::new(),
        Some(Value::Table(t)) => {
            read_options(t).ok_or_else(|| usage("the options must be a table with named fields".into()))?
        }
        Some(other) => {
            return Err(usage(format!(
                "the options must be a table, got {}",
                crate::eval::a_type(other)
            )))
        }
    };
    if args.len() > 2 {
        return Err(usage(format!(
            "`{module}.program` takes a function and an options table"
        )));
    }
    let opt_span = |name: &str| s.option_span(span, name);
    for (key, _) in &options {
        if !kind.options().contains(&key.as_str()) {
            return Err(Diagnostic::new(
                opt_span(key),
                format!("unknown option `{key}` for `{module}.program`"),
                "unknown option",
            )
            .hint(format!(
                "the options are {}",
                kind.options()
                    .iter()
                    .map(|o| format!("`{o}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let get = |key: &str| options.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let name = match get("name") {
        None => s.default_name.clone(),
        Some(Value::String(n)) if crate::eval::valid_identifier(&n.to_string_lossy()) => n.to_string_lossy(),
        Some(_) => {
            return Err(Diagnostic::new(
                opt_span("name"),
                "a program name must be an identifier string",
                "bad name",
            )
            .hint("letters, digits and `_`, not starting with a digit: it names the ELF symbol and the pin"))
        }
    };
    let default_verdict = match get("default") {
        None => kind.default_verdict(),
        Some(v) => verdict(v, kind).ok_or_else(|| {
            let (module, verdicts) = kind.verdicts();
            let names = verdicts
                .iter()
                .map(|(n, v)| format!("{n} = {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            Diagnostic::new(
                opt_span("default"),
                "`default` must be one of the hook's verdicts",
                "not a verdict",
            )
            .hint(format!("use a constant of `{module}`: {names}"))
        })?,
    };
    let hook = match kind {
        HookKind::Xdp => Hook::Xdp,
        HookKind::Tc => Hook::Tc {
            egress: tc_egress(get("egress"), opt_span("egress"))?,
        },
        HookKind::Netfilter => netfilter_hook(get("family"), get("hook"), get("priority"), &opt_span)?,
    };
    Ok(ProgramEntry {
        name,
        hook,
        func,
        default_verdict,
        span,
    })
}

/// A function defined in a loaded Lua file (not a C function, not a luabpf helper).
fn is_lua_function(s: &State, f: &Function) -> bool {
    s.builtin_name(f).is_none() && f.info().what == "Lua"
}

fn read_options(table: &mlua::Table) -> Option<Vec<(String, Value)>> {
    let mut out = Vec::new();
    let mut ok = true;
    table
        .for_each(|k: Value, v: Value| {
            match k {
                Value::String(k) => out.push((k.to_string_lossy(), v)),
                _ => ok = false,
            }
            Ok(())
        })
        .ok()?;
    ok.then_some(out)
}

fn verdict(v: &Value, kind: HookKind) -> Option<i64> {
    let n = match v {
        Value::Integer(n) => *n,
        Value::Number(f) if f.fract() == 0.0 && f.abs() < 1e9 => *f as i64,
        _ => return None,
    };
    kind.verdicts().1.iter().any(|&(_, v)| v == n).then_some(n)
}

fn tc_egress(v: Option<&Value>, span: Span) -> Result<bool, Diagnostic> {
    match v {
        None | Some(Value::Nil) => Ok(false),
        Some(Value::Boolean(b)) => Ok(*b),
        Some(other) => Err(Diagnostic::new(
            span,
            format!("`egress` must be a boolean, got {}", crate::eval::a_type(other)),
            "not a boolean",
        )
        .hint("`egress = true` attaches on egress; leave it out for ingress")),
    }
}

fn netfilter_hook(
    family: Option<&Value>,
    hook: Option<&Value>,
    priority: Option<&Value>,
    span: &dyn Fn(&str) -> Span,
) -> Result<Hook, Diagnostic> {
    let choice = |v: Option<&Value>, key: &str, allowed: &[&str], default: &str| -> Result<String, Diagnostic> {
        match v {
            None => Ok(default.to_string()),
            Some(Value::String(s)) if allowed.contains(&s.to_string_lossy().as_str()) => Ok(s.to_string_lossy()),
            Some(_) => Err(Diagnostic::new(
                span(key),
                format!("bad `{key}` for a netfilter program"),
                "not allowed here",
            )
            .hint(format!(
                "one of {}",
                allowed
                    .iter()
                    .map(|a| format!("\"{a}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    };
    let family = choice(family, "family", &["ipv4", "ipv6"], "ipv4")?;
    let hook = choice(hook, "hook", NETFILTER_HOOKS, "local_in")?;
    let priority = match priority {
        None => 0,
        Some(Value::Integer(p)) if *p > i32::MIN as i64 && *p < i32::MAX as i64 => *p as i32,
        Some(_) => return Err(Diagnostic::new(
            span("priority"),
            "`priority` must be a 32-bit integer",
            "bad priority",
        )
        .hint(
            "netfilter priorities are 32-bit integers, excluding the extreme values (INT_MIN and INT_MAX are reserved)",
        )),
    };
    Ok(Hook::Netfilter { family, hook, priority })
}
