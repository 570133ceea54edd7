//! The generated skeleton for a file with one of each thing: its types follow the declared
//! formats, its records have the compiler's layout, and it is formatted as rustfmt would.
//! (That it compiles without warnings is checked by tests/cargo.rs, in a real crate.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use luabpf_build::{Builder, Error, Output, ProgramType};
use luabpf_compiler::program::Hook;

fn out_dir(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("skeleton-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn build(tag: &str, builder: Builder) -> (PathBuf, Result<Vec<Output>, Error>) {
    let dir = out_dir(tag);
    let result = builder.out_dir(&dir).cargo_messages(false).compile();
    (dir, result)
}

/// The error of a build that must fail (its `Output` is too big to print).
fn error_text(result: Result<Vec<Output>, Error>) -> String {
    match result {
        Ok(_) => panic!("the build succeeded"),
        Err(e) => e.to_string(),
    }
}

fn rich(tag: &str) -> (Output, String, PathBuf) {
    let (dir, result) = build(tag, Builder::new().file("tests/fixtures/rich.lua"));
    let output = result.expect("rich.lua compiles").remove(0);
    let code = std::fs::read_to_string(&output.skeleton).unwrap();
    (output, code, dir)
}

#[test]
fn outputs_and_dependencies() {
    let (output, code, dir) = rich("outputs_and_dependencies");
    assert_eq!(output.name, "rich");
    assert_eq!(output.object, dir.join("rich.o"));
    assert_eq!(output.skeleton, dir.join("rich.rs"));
    assert_eq!(std::fs::read(&output.object).unwrap(), output.compiled.elf);
    let deps: Vec<String> = output.dependencies.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(deps, ["tests/fixtures/rich.lua", "tests/fixtures/lib/ports.lua"]);
    assert!(code.contains(&format!(
        "include_bytes!({:?})",
        std::path::absolute(&output.object).unwrap()
    )));
}

#[test]
fn map_types_follow_the_declared_formats() {
    let (_, code, _) = rich("map_types_follow_the_declared_formats");
    for want in [
        "pub fn flows(&self) -> Result<luabpf::TypedMap<u32, FlowsValue>, luabpf::TypedMapError>",
        "pub fn per_cpu(&self) -> Result<luabpf::TypedMap<u32, i64>, luabpf::TypedMapError>",
        "pub fn names(&self) -> Result<luabpf::TypedMap<[u8; 16], i32>, luabpf::TypedMapError>",
        // The static table: integer keys and values are i8 formats.
        "pub fn weights(&self) -> Result<luabpf::TypedMap<i64, i64>, luabpf::TypedMapError>",
        "    pub hits: u64,\n",
        "    pub r#type: u8,\n",
        "    pub last_seen: u16,\n",
        "    pub name: [u8; 40],\n",
    ] {
        assert!(code.contains(want), "skeleton lacks `{want}`:\n{code}");
    }
}

#[test]
fn records_have_the_compilers_layout() {
    let (output, code, _) = rich("records_have_the_compilers_layout");
    let flows = output.compiled.object.maps.iter().find(|m| m.name == "flows").unwrap();
    let runtime_bpf::object::Format::Record(fields) = &flows.value else {
        panic!("flows' value is a record")
    };
    assert!(code.contains(&format!("size_of::<FlowsValue>() == {});", flows.value.size())));
    for f in fields {
        let name = luabpf_build::names::ident(&f.name);
        let want = format!("offset_of!(FlowsValue, {name}) == {});", f.offset);
        assert!(code.contains(&want), "skeleton lacks `{want}`");
        let end = f.offset + f.format.size();
        assert!(code.contains(&format!(
            "MapData::encode(&self.{name}, &mut out[{}..{end}]);",
            f.offset
        )));
    }
}

#[test]
fn attach_helpers_follow_the_declared_hooks() {
    let (output, code, _) = rich("attach_helpers_follow_the_declared_hooks");
    assert_eq!(
        output
            .programs
            .iter()
            .map(|p| (p.name.as_str(), p.hook.clone()))
            .collect::<Vec<_>>(),
        [("count", Hook::Xdp), ("mark", Hook::Tc { egress: true })]
    );
    assert!(code.contains("luabpf::attach_xdp(&self.loaded, \"count\", interface, mode)"));
    assert!(code.contains("luabpf::attach_tc(&self.loaded, \"mark\", interface, true)"));
    assert!(code.contains(
        "    pub fn attach_xdp(\n        &self,\n        interface: &str,\n        mode: luabpf::XdpMode,\n"
    ));
    assert!(code.contains("        self.attach_count(interface, mode)\n"));
    assert!(code.contains("pub fn attach_tc(&self, interface: &str)"));
    assert!(code.contains("        self.attach_mark(interface)\n"));
}

#[test]
fn program_type_switches_tc_direction_and_refuses_another_hook() {
    let (_, result) = build(
        "ingress",
        Builder::new()
            .file("tests/fixtures/rich.lua")
            .output_name("rich_in")
            .program_type(ProgramType::TcIngress),
    );
    let err = error_text(result);
    // rich.lua also holds an XDP program, which cannot become a tc one.
    assert_eq!(
        err,
        "luabpf: tests/fixtures/rich.lua: program `count` is declared for xdp but `program_type` asks for \
         tc ingress: a program's context depends on its hook, so change the Lua file's declaration instead"
    );
}

#[test]
fn usage_errors() {
    let (_, result) = build("none", Builder::new());
    assert_eq!(
        error_text(result),
        "luabpf: no Lua file given: call `.file(\"filter.lua\")`"
    );
    let (_, result) = build("two", Builder::new().file("a.lua").file("b.lua").output_name("x"));
    assert_eq!(
        error_text(result),
        "luabpf: `output_name` names one output, but 2 files are given"
    );
}

#[test]
fn a_lua_error_is_counted_and_rendered() {
    let (_, result) = build("missing", Builder::new().file("tests/fixtures/no_such_file.lua"));
    let Err(Error::Compile { file, errors, rendered }) = result else {
        panic!("expected a compile error")
    };
    assert_eq!(
        (file.as_path(), errors),
        (Path::new("tests/fixtures/no_such_file.lua"), 1)
    );
    assert!(
        rendered.contains("cannot read tests/fixtures/no_such_file.lua"),
        "{rendered}"
    );
}

/// The skeleton as a build script writes it: the object found through `OUT_DIR` rather than
/// by this test's absolute path.
fn as_in_out_dir(output: &Output, code: &str) -> String {
    let path = format!("{:?}", std::path::absolute(&output.object).unwrap());
    code.replace(&path, &format!("concat!(env!(\"OUT_DIR\"), \"/{}.o\")", output.name))
}

/// A netfilter program's helper attaches it where the Lua file says (family and priority
/// defaulted), with a variant for another priority and the shorthand for a file's only one.
#[test]
fn netfilter_helpers_use_the_declared_hook() {
    let (_, result) = build("netfilter", Builder::new().file("tests/fixtures/netfilter.lua"));
    let output = result.expect("netfilter.lua compiles").remove(0);
    let code = std::fs::read_to_string(&output.skeleton).unwrap();
    for want in [
        "    /// Attaches program `guard` (tests/fixtures/netfilter.lua:9) at netfilter ipv4 local_in, priority\n    \
         /// 0 (as declared), in the caller's network namespace.\n",
        "    pub fn attach_guard(&self) -> Result<luabpf::Link, luabpf::AttachError> {\n        \
         self.attach_guard_at_priority(0)\n    }\n",
        "    pub fn attach_guard_at_priority(\n        &self,\n        priority: i32,\n    ) -> \
         Result<luabpf::Link, luabpf::AttachError> {\n        \
         luabpf::attach_netfilter(&self.loaded, \"guard\", \"ipv4\", \"local_in\", priority)\n    }\n",
        "    pub fn attach_netfilter(&self) -> Result<luabpf::Link, luabpf::AttachError> {\n        \
         self.attach_guard()\n    }\n",
    ] {
        assert!(code.contains(want), "skeleton lacks `{want}`:\n{code}");
    }
    assert!(code.contains("pub struct Netfilter {"), "{code}");
    assert_formatted(&as_in_out_dir(&output, &code));
}

/// rustfmt (default settings) leaves the skeleton as it is.
#[test]
fn the_skeleton_is_formatted() {
    let (output, code, _) = rich("the_skeleton_is_formatted");
    assert_formatted(&as_in_out_dir(&output, &code));
}

fn assert_formatted(code: &str) {
    // Run from a directory without a rustfmt.toml above it (not this repository's, whose
    // max_width is 120), so that the defaults apply.
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout"])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rustfmt is installed with the Rust toolchain");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(code.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let formatted = String::from_utf8(out.stdout).unwrap();
    if formatted != code {
        let first = code
            .lines()
            .zip(formatted.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(code.lines().count().min(formatted.lines().count()));
        panic!(
            "rustfmt changes the skeleton from line {}:\n--- generated\n{}\n--- rustfmt\n{}",
            first + 1,
            code.lines().skip(first).take(8).collect::<Vec<_>>().join("\n"),
            formatted.lines().skip(first).take(8).collect::<Vec<_>>().join("\n")
        );
    }
}

/// The whole skeleton, reviewed: a change to the generated code shows in the snapshot's diff.
#[test]
fn skeleton_snapshot() {
    let (output, code, _) = rich("skeleton_snapshot");
    let code = as_in_out_dir(&output, &code);
    insta::with_settings!({ snapshot_path => "../../snapshots/skeletons", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("rich", code);
    });
}
