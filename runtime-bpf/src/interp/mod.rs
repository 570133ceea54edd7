//! A user-space BPF interpreter: runs a program of an [`Object`] on a packet the way
//! `BPF_PROG_TEST_RUN` does, with the maps and the kernel helpers luabpf emits emulated, so
//! that programs can be tried where `bpf()` is unavailable (no root, not Linux), and so that
//! tests have a third opinion next to the kernel and the reference Lua engine.
//!
//! - [`value`]: registers hold scalars or pointers tagged with their region (stack frame,
//!   context, packet, map value): every access is bounds-checked, and an access the verifier
//!   should have refused is an [`InterpError::Fault`], never undefined behaviour.
//! - [`alu`]: the kernel's arithmetic (division by zero, shift masking, 32-bit forms).
//! - [`maps`]: hash, array, per-CPU, LRU and LPM maps with the kernel's update rules.
//! - `exec`: the instruction loop, local calls (a 512-byte stack frame per call), the budget.
//! - `memory`, `ctx`, `calls`: loads and stores, the context structures, the helpers.
//! - `netfilter`: the netfilter context, dynptrs over the skb and the kfuncs that read them.
//!
//! The context is what a test run builds: XDP `ingress_ifindex` 1 (loopback) and queue 0; tc
//! `len`, `protocol` (from the Ethernet header, as `eth_type_trans` sets it), `ifindex` 1,
//! `mark`/`priority` 0 and writable; netfilter (`netfilter`) a `struct bpf_nf_ctx` whose `state`
//! says LOCAL_OUT and the family, and whose `skb` holds the IP packet, read through the dynptr
//! kfuncs. Packet-size limits are the kernel's (14 bytes at least, netfilter 20; tc and
//! netfilter at most 3712, and tc IPv4/IPv6 frames at least their network header; XDP's linear
//! part 3520 bytes, the rest reachable through `bpf_xdp_load_bytes`/`store_bytes` only).
//! Per-CPU maps hold the values of CPU 0, which is what `bpf_get_smp_processor_id` returns;
//! `bpf_ktime_get_ns` is a counter, `bpf_get_prandom_u32` a seeded generator.

pub mod alu;
mod calls;
mod ctx;
mod exec;
pub mod maps;
mod memory;
mod netfilter;
pub mod value;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::object::Object;
use crate::progtypes::ProgType;

pub use maps::MapState;

/// Instructions one run may execute before it is stopped (the verifier bounds every loop, so
/// only a bug gets near it; the kernel itself stops no program).
pub const DEFAULT_BUDGET: u64 = 10_000_000;
/// Deepest chain of local calls the kernel allows (`MAX_CALL_FRAMES`).
pub const MAX_CALL_FRAMES: usize = 8;
/// Smallest packet an XDP or tc test run takes (an Ethernet header).
pub const MIN_PACKET: usize = 14;
/// Smallest packet a netfilter test run takes (an IPv4 header).
pub const NF_MIN_PACKET: usize = 20;
/// `NFPROTO_IPV4`, `NFPROTO_IPV6`: the families a netfilter test run accepts.
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
/// Largest packet a tc test run takes (one page less headroom and `skb_shared_info`).
pub const TC_MAX_PACKET: usize = 3712;
/// Largest linear part of an XDP test-run packet; the rest goes to fragments.
pub const XDP_MAX_LINEAR: usize = 3520;
/// Largest packet an XDP test run takes (linear part and 17 fragments).
pub const XDP_MAX_PACKET: usize = 73152;
/// What `ingress_ifindex` and `ifindex` read in a test run: the loopback device.
pub const LOOPBACK_IFINDEX: u32 = 1;

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterpError {
    /// No program of that name in the object.
    NoSuchProgram(String),
    /// Something the interpreter does not emulate (kfuncs other than the dynptr ones, some
    /// helpers, context fields luabpf does not expose).
    Unsupported(String),
    /// The object is not runnable: an unknown opcode, a jump or call outside the program, a
    /// map reference without a map (what the verifier refuses at load time).
    Malformed { pc: usize, why: String },
    /// An access or operation the verifier should have refused (out-of-bounds memory, an
    /// uninitialized register or stack byte, arithmetic on pointers it forbids).
    Fault { pc: usize, why: String },
    /// The run executed more instructions than its budget.
    Budget { limit: u64 },
    /// A packet the kernel's test run refuses too (too short, too long).
    Packet(String),
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterpError::NoSuchProgram(name) => write!(f, "no program `{name}` in the object"),
            InterpError::Unsupported(what) => write!(f, "not supported by the BPF interpreter: {what}"),
            InterpError::Malformed { pc, why } => write!(f, "malformed program at instruction {pc}: {why}"),
            InterpError::Fault { pc, why } => write!(
                f,
                "instruction {pc}: {why} (the kernel's verifier should refuse this: a bug in the \
                 compiler or the interpreter)"
            ),
            InterpError::Budget { limit } => {
                write!(f, "the program ran more than {limit} instructions (stopped)")
            }
            InterpError::Packet(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for InterpError {}

/// What one run returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunResult {
    /// The program's return value as the test run reports it (the low 32 bits of r0).
    pub retval: u32,
    /// The packet as the program left it.
    pub data_out: Vec<u8>,
    /// Instructions executed.
    pub insns: u64,
    /// Lines the program printed with `bpf_trace_printk`.
    pub trace: Vec<String>,
}

/// An object with its maps: runs keep the maps' contents, as a loaded object does.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Shared with each run, which reads the code while it changes the maps.
    object: Arc<Object>,
    /// Per program: slot of an `ld_imm64` -> index of the map it loads.
    map_relocs: Arc<Vec<HashMap<usize, usize>>>,
    /// Per program: slot of a kfunc call -> the kernel function's name.
    kfunc_relocs: Arc<Vec<HashMap<usize, String>>>,
    maps: Vec<MapState>,
    /// Instructions a run may execute.
    pub budget: u64,
    rng: u64,
    clock_ns: u64,
}

impl Machine {
    /// Creates the object's maps with their initial contents (static tables).
    pub fn new(object: &Object) -> Result<Machine, InterpError> {
        let maps = object
            .maps
            .iter()
            .map(MapState::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| InterpError::Malformed { pc: 0, why })?;
        Ok(Machine {
            object: Arc::new(object.clone()),
            map_relocs: Arc::new(
                object
                    .programs
                    .iter()
                    .map(|p| p.map_relocs.iter().copied().collect())
                    .collect(),
            ),
            kfunc_relocs: Arc::new(
                object
                    .programs
                    .iter()
                    .map(|p| p.kfunc_relocs.iter().cloned().collect())
                    .collect(),
            ),
            maps,
            budget: DEFAULT_BUDGET,
            rng: 0x2545_f491_4f6c_dd1d,
            clock_ns: 1_000_000_000,
        })
    }

    /// Seeds `bpf_get_prandom_u32`.
    pub fn seed_random(&mut self, seed: u64) {
        self.rng = seed | 1;
    }

    pub fn object(&self) -> &Object {
        &self.object
    }

    /// The state of the map called `name`.
    pub fn map(&self, name: &str) -> Option<&MapState> {
        self.maps.iter().find(|m| m.spec.name == name)
    }

    pub fn map_mut(&mut self, name: &str) -> Option<&mut MapState> {
        self.maps.iter_mut().find(|m| m.spec.name == name)
    }

    pub fn maps(&self) -> &[MapState] {
        &self.maps
    }

    /// Runs program `name` on `packet`, as a test run without a context does (netfilter: an
    /// IPv4 packet, the kernel's default hook state).
    pub fn run(&mut self, name: &str, packet: &[u8]) -> Result<RunResult, InterpError> {
        self.run_with(name, packet, NFPROTO_IPV4)
    }

    /// Runs netfilter program `name` on `ip_packet` (from the IP header on) with the hook state
    /// luabpf's netfilter test run passes: LOCAL_OUT of family `pf` (`NFPROTO_IPV4` or
    /// `NFPROTO_IPV6`). Other programs ignore `pf`.
    pub fn run_netfilter(&mut self, name: &str, ip_packet: &[u8], pf: u8) -> Result<RunResult, InterpError> {
        if pf != NFPROTO_IPV4 && pf != NFPROTO_IPV6 {
            // `verify_and_copy_hook_state` refuses other families (EINVAL).
            return Err(InterpError::Packet(format!(
                "netfilter family {pf}: a test run takes NFPROTO_IPV4 (2) or NFPROTO_IPV6 (10)"
            )));
        }
        self.run_with(name, ip_packet, pf)
    }

    fn run_with(&mut self, name: &str, packet: &[u8], pf: u8) -> Result<RunResult, InterpError> {
        let index = self
            .object
            .programs
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| InterpError::NoSuchProgram(name.to_string()))?;
        let section = &self.object.programs[index].section;
        let progtype = ProgType::from_section(section).ok_or_else(|| {
            InterpError::Unsupported(format!(
                "program `{name}` in section `{section}` (not XDP, tc or netfilter)"
            ))
        })?;
        check_packet(progtype, packet.len())?;
        if progtype == ProgType::Tc {
            check_network_header(packet)?;
        }
        exec::run(self, index, progtype, packet, pf)
    }

    fn next_random(&mut self) -> u32 {
        // xorshift64*: deterministic per seed.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    fn ktime(&mut self) -> u64 {
        self.clock_ns += 1_000;
        self.clock_ns
    }
}

/// The packet sizes the kernel's test run accepts for this hook (netfilter: at least an IPv4
/// header, and the same page as tc, which `bpf_prog_test_run_nf` allocates alike).
fn check_packet(progtype: ProgType, len: usize) -> Result<(), InterpError> {
    let (min, max, what, hook) = match progtype {
        ProgType::Xdp => (MIN_PACKET, XDP_MAX_PACKET, "an Ethernet header", "an XDP"),
        ProgType::Tc => (MIN_PACKET, TC_MAX_PACKET, "an Ethernet header", "a tc"),
        ProgType::Netfilter => (NF_MIN_PACKET, TC_MAX_PACKET, "an IPv4 header", "a netfilter"),
    };
    if len < min {
        return Err(InterpError::Packet(format!(
            "the packet is {len} bytes; {hook} test run needs at least {min} ({what})"
        )));
    }
    if len > max {
        return Err(InterpError::Packet(format!(
            "the packet is {len} bytes; {hook} test run takes at most {max}"
        )));
    }
    Ok(())
}

/// A tc test run also refuses (EINVAL, measured on 6.18) an IPv4 or IPv6 frame too short for
/// the network header its EtherType announces.
fn check_network_header(packet: &[u8]) -> Result<(), InterpError> {
    let (name, header) = match packet.get(12..14) {
        Some([0x08, 0x00]) => ("IPv4", 20),
        Some([0x86, 0xdd]) => ("IPv6", 40),
        _ => return Ok(()),
    };
    if packet.len() < MIN_PACKET + header {
        return Err(InterpError::Packet(format!(
            "the packet is {} bytes; a tc test run of an {name} frame needs at least {} (Ethernet \
             and {name} headers)",
            packet.len(),
            MIN_PACKET + header
        )));
    }
    Ok(())
}
