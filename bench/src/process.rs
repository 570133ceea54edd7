//! Timing a whole compiler process (wall time from spawn to exit) and measuring its peak memory.
//!
//! Peak memory comes from GNU time (`/usr/bin/time -f %M`), not from this process's `wait4`:
//! a child started with posix_spawn (CLONE_VM) inherits the *parent's* RSS high-water mark at
//! exec, so `ru_maxrss` of our own children reports the harness's size (tens of MiB once the
//! kernel's BTF is parsed), not the compiler's. GNU time forks from its own small image.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

/// A command line to time.
#[derive(Clone, Debug)]
pub struct Cmd {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Cmd {
    /// The command as a shell would show it.
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

/// One run of a command.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub wall_ms: f64,
}

/// GNU time, for peak memory.
pub const GNU_TIME: &str = "/usr/bin/time";

/// Peak resident set size of one run of `cmd`, KiB, as GNU time reports it (`%M`).
pub fn peak_rss_kib(cmd: &Cmd, scratch: &std::path::Path) -> Result<u64, String> {
    let mut args = vec![
        "-f".to_string(),
        "%M".into(),
        "-o".into(),
        scratch.display().to_string(),
    ];
    args.push(cmd.program.display().to_string());
    args.extend(cmd.args.iter().cloned());
    run(&Cmd {
        program: PathBuf::from(GNU_TIME),
        args,
    })?;
    let text = std::fs::read_to_string(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    text.lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("{GNU_TIME} wrote no %M figure: {text:?}"))
}

/// Runs `cmd` to completion (output discarded); an error if it cannot start or fails.
pub fn run(cmd: &Cmd) -> Result<Run, String> {
    let start = Instant::now();
    let child = Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", cmd.program.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // (wait4 rather than Child::wait: no extra bookkeeping between exit and the clock.)
    // The stderr pipe is small: a failing compiler writes a few lines at most, which fit in the
    // pipe buffer, so waiting before reading cannot deadlock.
    let r = loop {
        // SAFETY: `pid` is our child; `status` and `usage` are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break r;
    };
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    if r != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        let mut err = String::new();
        if let Some(mut e) = child.stderr {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        return Err(format!(
            "`{}` failed (status {status:#x}): {}",
            cmd.display(),
            err.trim()
        ));
    }
    Ok(Run { wall_ms })
}
