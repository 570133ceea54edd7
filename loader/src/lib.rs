//! luabpf's loader: puts compiled objects into the kernel and talks to them.
//!
//! One concept per module:
//! - [`load`]: an ELF object into the kernel through aya (maps, programs, the verifier's
//!   verdict and log, static tables from `.luabpf.init`); returns a [`Loaded`] that keeps it
//!   all alive.
//! - [`verifier_error`]: a verifier refusal in Lua terms (reason, failing instruction, the
//!   Lua line it came from, rendered like a diagnostic).
//! - [`testrun`]: `BPF_PROG_TEST_RUN` — run a loaded program on a packet, get the verdict, the
//!   packet after the program, and the time per run.
//! - [`maps`]: map access by fd with byte slices (lookup, update, delete, next key), per-CPU
//!   values unpacked per possible CPU.
//! - [`kernel`]: whether `bpf()` works here, and the skip-or-fail rule for tests.
//! - [`init`]: the `.luabpf.init` section (static table contents).
//! - [`pcap`]: packet captures (classic pcap and pcapng in, classic pcap out).
//!
//! The raw `bpf(2)` calls live in a private `sys` module; errno values are rendered as
//! `EACCES (Permission denied)` by [`errno_text`] in every error message.
//!
//! ```no_run
//! use luabpf_loader::{load, test_run};
//! let bytes = std::fs::read("filter.o")?;
//! let loaded = load(&bytes)?;
//! let fd = loaded.program_fd("sni_filter").expect("program present");
//! let packet = [0u8; 64];
//! let run = test_run(fd, &packet, 1)?;
//! println!("verdict {} in {} ns", run.retval, run.duration_ns);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod attach;
pub mod init;
pub mod kernel;
pub mod load;
pub mod maps;
pub mod pcap;
pub mod pins;
mod sys;
pub mod testrun;
pub mod verifier_error;

pub use kernel::{kernel_available, require_kernel_or_skip};
pub use load::{load, load_with, LoadError, LoadOptions, Loaded, ProgramSummary, VerifierError};
pub use maps::{possible_cpus, MapError, MapInfo, RawMap, UpdateMode};
pub use sys::{errno_name, errno_text};
pub use testrun::{test_run, test_run_with, TestRunError, TestRunInput, TestRunResult};
