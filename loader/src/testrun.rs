//! Running a loaded program on one packet in the kernel: `BPF_PROG_TEST_RUN`.
//!
//! The kernel builds a fake context around a copy of the packet, runs the program `repeat`
//! times, and hands back the verdict, the packet as the program left it, and the mean run time.
//! Nothing is attached, no interface is involved; map updates made by the program are real.
//!
//! Kernel rules worth knowing (6.18):
//! - XDP and tc (SCHED_CLS) test runs need a packet of at least 14 bytes (`ETH_HLEN`, an
//!   Ethernet header); a shorter one is refused with `EINVAL`, reported here as
//!   [`TestRunError::PacketTooShort`].
//! - Size limits (measured on 6.18 x86-64, 4 KiB pages): a tc packet must fit in one page less
//!   headroom and tailroom, 3712 bytes (`EINVAL` beyond); an XDP packet may spill into fragments,
//!   up to 73152 bytes (`ENOMEM` beyond). Both are reported with that hint.
//! - A context (`ctx_in`) is optional; for XDP it is a `struct xdp_md` whose `data`/`data_end`
//!   fields must be 0 and whose `ingress_ifindex` must name a real device if non-zero.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::sys::{self, bpf, errno_text, ptr_u64};

/// Minimum packet length for XDP and tc test runs: an Ethernet header.
pub const ETH_HLEN: usize = 14;

/// Largest packet a tc (SCHED_CLS) test run accepts here (one 4 KiB page less headroom and
/// tailroom); for hints only, the kernel decides.
pub const TC_MAX_PACKET: usize = 3712;
/// Largest packet an XDP test run accepts here (a page plus fragments); for hints only.
pub const XDP_MAX_PACKET: usize = 73152;

/// Extra room after the packet in the output buffer, for programs that grow it.
const OUT_SLACK: usize = 256;
/// Smallest output buffer: an XDP frame may grow into its page's tailroom.
const OUT_MIN: usize = 4096;

/// The prefix of `union bpf_attr` for `BPF_PROG_TEST_RUN` (the `test` struct).
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so that it is zero: the kernel refuses non-zero bytes past the last field.
    _pad: u32,
}

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: the program's XDP_TX and XDP_REDIRECT send the frames for
/// real (the kernel's XDP packet generator). No packet or context comes back in this mode
/// (the kernel refuses output buffers), and an XDP context must name the device
/// (`ingress_ifindex`, looked up in the caller's network namespace).
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// One test run's input.
#[derive(Clone, Debug, Default)]
pub struct TestRunInput<'a> {
    /// The packet, starting where the hook's packet starts (Ethernet header for XDP and tc).
    pub packet: &'a [u8],
    /// How many times the kernel runs the program (0 counts as 1). Maps see every run.
    pub repeat: u32,
    /// The program's context (`struct xdp_md`, `struct __sk_buff`), if any.
    pub ctx: Option<&'a [u8]>,
    /// `BPF_F_TEST_*` flags (0 for a plain run).
    pub flags: u32,
}

/// What one test run returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunResult {
    /// The program's return value (the verdict: XDP_PASS = 2, ...).
    pub retval: u32,
    /// The packet after the program (its writes and head/tail adjustments applied).
    pub data_out: Vec<u8>,
    /// The kernel's mean time per run, in nanoseconds.
    pub duration_ns: u32,
    /// The context after the run, when one was given.
    pub ctx_out: Option<Vec<u8>>,
}

/// Why a test run failed.
#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    /// The packet is shorter than the kernel accepts.
    #[error(
        "the kernel refused the test run ({}): the packet is {len} bytes, \
         XDP and tc test runs need at least {min} (an Ethernet header)",
        errno_text(.source)
    )]
    PacketTooShort {
        len: usize,
        min: usize,
        #[source]
        source: io::Error,
    },
    /// The program grew the packet beyond the output buffer.
    #[error("the program's output packet is {needed} bytes, more than the {given}-byte buffer")]
    OutputTooLarge { needed: usize, given: usize },
    /// Any other refusal by the kernel.
    #[error("BPF_PROG_TEST_RUN failed: {}{}", errno_text(.source), .hint)]
    Syscall {
        /// Empty, or `: <what probably caused it>`.
        hint: String,
        #[source]
        source: io::Error,
    },
    /// An input the syscall cannot express (a length over 4 GiB).
    #[error("test run input too large: {0}")]
    TooLarge(&'static str),
}

impl TestRunError {
    /// The errno the kernel returned, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            TestRunError::PacketTooShort { source, .. } | TestRunError::Syscall { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Runs `prog_fd` on `packet`, `repeat` times; returns the verdict, the output packet and the
/// mean duration. See the module docs for the kernel's limits on `packet`.
pub fn test_run(prog_fd: BorrowedFd<'_>, packet: &[u8], repeat: u32) -> Result<TestRunResult, TestRunError> {
    test_run_with(
        prog_fd,
        &TestRunInput {
            packet,
            repeat,
            ..TestRunInput::default()
        },
    )
}

/// [`test_run`] with a context and flags.
pub fn test_run_with(prog_fd: BorrowedFd<'_>, input: &TestRunInput<'_>) -> Result<TestRunResult, TestRunError> {
    let packet = input.packet;
    let len32 = |n: usize, what| u32::try_from(n).map_err(|_| TestRunError::TooLarge(what));
    let mut data_out = vec![0u8; (packet.len() + OUT_SLACK).max(OUT_MIN)];
    let mut ctx_out = input.ctx.map(|c| vec![0u8; c.len()]);
    let mut attr = TestAttr {
        prog_fd: prog_fd.as_raw_fd() as u32,
        data_size_in: len32(packet.len(), "packet")?,
        data_size_out: len32(data_out.len(), "packet")?,
        data_in: ptr_u64(packet.as_ptr()),
        data_out: ptr_u64(data_out.as_mut_ptr()),
        repeat: input.repeat,
        flags: input.flags,
        ..TestAttr::default()
    };
    if let (Some(ctx), Some(out)) = (input.ctx, ctx_out.as_mut()) {
        attr.ctx_size_in = len32(ctx.len(), "context")?;
        attr.ctx_in = ptr_u64(ctx.as_ptr());
        attr.ctx_size_out = len32(out.len(), "context")?;
        attr.ctx_out = ptr_u64(out.as_mut_ptr());
    }
    let live = input.flags & BPF_F_TEST_XDP_LIVE_FRAMES != 0;
    if live {
        (attr.data_out, attr.data_size_out, attr.ctx_out, attr.ctx_size_out) = (0, 0, 0, 0);
        data_out.clear();
        ctx_out = None;
    }
    // SAFETY: every pointer in `attr` points to a live buffer of the size declared next to it;
    // the output buffers are writable and outlive the call.
    let res = unsafe { bpf(sys::BPF_PROG_TEST_RUN, &mut attr) };
    if let Err(source) = res {
        let errno = source.raw_os_error();
        if errno == Some(libc::ENOSPC) {
            return Err(TestRunError::OutputTooLarge {
                needed: attr.data_size_out as usize,
                given: data_out.len(),
            });
        }
        if errno == Some(libc::EINVAL) && packet.len() < ETH_HLEN {
            return Err(TestRunError::PacketTooShort {
                len: packet.len(),
                min: ETH_HLEN,
                source,
            });
        }
        let hint = match errno {
            Some(libc::EINVAL) if packet.len() > TC_MAX_PACKET => format!(
                ": the packet is {} bytes; a tc test run takes at most {TC_MAX_PACKET}",
                packet.len()
            ),
            Some(libc::ENOMEM) if packet.len() > XDP_MAX_PACKET => format!(
                ": the packet is {} bytes; an XDP test run takes at most {XDP_MAX_PACKET}",
                packet.len()
            ),
            Some(libc::EINVAL) if input.ctx.is_some() => {
                ": the context was refused (for XDP: data 0, data_end the packet's length, \
                 ingress_ifindex a device of the caller's network namespace)"
                    .to_string()
            }
            Some(libc::ENOTSUP) | Some(524) => ": this program type has no test-run support in this kernel".to_string(),
            Some(libc::EBADF) => ": not a program file descriptor".to_string(),
            _ => String::new(),
        };
        return Err(TestRunError::Syscall { hint, source });
    }
    let out_len = (attr.data_size_out as usize).min(data_out.len());
    data_out.truncate(out_len);
    if let Some(out) = ctx_out.as_mut() {
        let n = (attr.ctx_size_out as usize).min(out.len());
        out.truncate(n);
    }
    Ok(TestRunResult {
        retval: attr.retval,
        data_out,
        duration_ns: attr.duration,
        ctx_out,
    })
}

// No implicit padding: the kernel refuses attributes with non-zero bytes it does not know.
const _: () = assert!(std::mem::size_of::<TestAttr>() == 80);
