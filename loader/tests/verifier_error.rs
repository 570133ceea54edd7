//! `luabpf verify` of an object the verifier refuses shows the refusal in Lua terms: the
//! reason, the failing instruction, and the Lua file, line and source text; from the source
//! file while it still holds that line, from the object's own line info when the file is gone
//! or changed. `--verbose` prints the whole log. The object is made unsafe with the
//! compiler's test-only switch (`Options::without`).
//!
//! Needs bpf(): skips loudly without it, unless LUABPF_REQUIRE_KERNEL=1.

use std::path::{Path, PathBuf};
use std::process::Command;

use luabpf_compiler::compile::{compile_path, Options, SafetyCheck};
use luabpf_loader::require_kernel_or_skip;

const PROGRAM: &str = "local xdp = require \"bpf.xdp\"\n\nlocal function filter(ctx)\n  local p = ctx:packet()\n  local n = #p\n  if p:getbyte(20) == 7 then return 3 end\n  for i = 1, 8 do\n    if n % 7 == i then n = n + 3 end\n  end\n  return n & 3\nend\n\nreturn xdp.program(filter, { name = \"nobounds\" })\n";

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("luabpf-verifier-error-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `luabpf ARGS` in `dir`: (exit code, stderr).
fn luabpf(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_luabpf"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn verify_shows_the_lua_line_of_a_refusal() {
    if !require_kernel_or_skip("verify_shows_the_lua_line_of_a_refusal") {
        return;
    }
    let dir = TempDir::new();
    let source = dir.0.join("nobounds.lua");
    std::fs::write(&source, PROGRAM).expect("write");
    let opts = Options {
        without: Some(SafetyCheck::PacketBounds),
        ..Options::default()
    };
    let compiled = compile_path(&source, &opts).unwrap_or_else(|f| panic!("compiles:\n{f}"));
    std::fs::write(dir.0.join("nobounds.o"), &compiled.elf).expect("write");
    let name = source.display().to_string();

    let (code, err) = luabpf(&dir.0, &["verify", "nobounds.o"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("error: the kernel refused program `nobounds`: EACCES (Permission denied): "),
        "{err}"
    );
    assert!(err.contains("offset is outside of the packet"), "the reason: {err}");
    assert!(err.contains(&format!("┌─ {name}:6:6")), "file, line and column: {err}");
    assert!(
        err.contains("6 │   if p:getbyte(20) == 7 then return 3 end"),
        "the source line: {err}"
    );
    // The failing instruction, as `luabpf disasm` shows it: the one-byte load.
    let insn = err.lines().find(|l| l.contains("^^^")).unwrap_or("");
    assert!(
        insn.contains("instruction ") && insn.contains(" = *(u8 *)(r"),
        "the instruction: {err}"
    );
    assert!(
        err.contains("help: the packet was read or written without a bounds check"),
        "{err}"
    );
    assert!(err.contains("verifier log (last 12 of "), "{err}");

    let (code, verbose) = luabpf(&dir.0, &["verify", "nobounds.o", "--verbose"]);
    assert_eq!(code, 1, "{verbose}");
    assert!(
        verbose.contains("6 │   if p:getbyte(20)") && verbose.contains("processed "),
        "{verbose}"
    );

    // The file changed since: the object's own copy of the line is shown.
    std::fs::write(
        &source,
        PROGRAM.replace("if p:getbyte(20) == 7", "if p:getbyte(21) == 8"),
    )
    .expect("write");
    let (_, err) = luabpf(&dir.0, &["verify", "nobounds.o"]);
    assert!(err.contains("6 │   if p:getbyte(20) == 7 then return 3 end"), "{err}");

    // The file is gone: the same.
    std::fs::remove_file(&source).expect("remove");
    let (code, err) = luabpf(&dir.0, &["verify", "nobounds.o"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("┌─ {name}:6:6")), "{err}");
    assert!(err.contains("6 │   if p:getbyte(20) == 7 then return 3 end"), "{err}");
}
