//! The `luabpf` binary run the way a user runs it: in a directory, with its exit code, stdout
//! and stderr kept; a panic or an internal error (exit 3) fails the test whatever it expected.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The exit code of an internal error: never what a test expects.
const EXIT_INTERNAL: i32 = 3;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A temporary directory, removed on drop; world-readable so that commands run as `nobody`
/// can use what is copied into it.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `tag` names the test file, so that a directory left by a killed run says whose it is.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "luabpf-test-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(path)
    }

    /// Writes `name` (parent directories too) and returns its path.
    pub fn file(&self, name: &str, contents: &[u8]) -> String {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, contents).unwrap();
        p.to_str().unwrap().to_string()
    }

    /// Copies `from` in, readable (and executable when `exec`) by everyone.
    pub fn copy(&self, from: &Path, exec: bool) -> String {
        let to = self.0.join(from.file_name().unwrap());
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
        to.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a command did.
pub struct Run {
    pub code: i32,
    /// Stdout as text (lossy); `raw_stdout` keeps the bytes (`compile -o -`).
    pub stdout: String,
    pub raw_stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn out(&self) -> String {
        self.stdout.clone()
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with stdin closed and without the caller's RUST_BACKTRACE / NO_COLOR.
pub fn output(cmd: &mut Command) -> Run {
    let out = cmd
        .env_remove("RUST_BACKTRACE")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("run luabpf");
    let run = Run {
        code: out.status.code().expect("luabpf exited (no signal)"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        raw_stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked at") && run.code != EXIT_INTERNAL,
        "luabpf crashed: {run:?}"
    );
    run
}

/// Runs `luabpf ARGS` in `dir`.
pub fn luabpf_in(dir: &Path, args: &[&str]) -> Run {
    output(Command::new(env!("CARGO_BIN_EXE_luabpf")).args(args).current_dir(dir))
}

/// Runs `luabpf ARGS` from the workspace root.
pub fn luabpf(args: &[&str]) -> Run {
    luabpf_in(&workspace(), args)
}
