//! The hooks luabpf compiles for: kernel program type numbers, ELF section names, verdicts and
//! the context structures a program reads.
//!
//! One table per hook so that the compiler (verdict constants, `ctx` fields), the ELF writer
//! (sections, BTF of the context argument), the loader (`BPF_PROG_LOAD` attributes) and the
//! disassembler (verdict names) agree. The numbers are kernel ABI (include/uapi/linux/bpf.h,
//! netfilter.h, pkt_cls.h); a test compares the layouts with the running kernel's BTF.

use crate::isa::Size;

/// `enum bpf_prog_type` values.
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_XDP: u32 = 6;
pub const BPF_PROG_TYPE_NETFILTER: u32 = 32;

/// `enum bpf_attach_type` values.
pub const BPF_XDP: u32 = 37;
pub const BPF_NETFILTER: u32 = 45;
pub const BPF_TCX_INGRESS: u32 = 46;
pub const BPF_TCX_EGRESS: u32 = 47;

/// A hook luabpf can compile a program for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgType {
    Xdp,
    Tc,
    Netfilter,
}

/// A named verdict the program may return (`linux.xdp.PASS`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub name: &'static str,
    pub value: i32,
}

/// One field of a context structure the program may access directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtxField {
    /// The name in the kernel struct, also the Lua name (`ctx.ingress_ifindex`).
    pub name: &'static str,
    /// Byte offset of the load/store from the context pointer (r1 on entry).
    pub offset: i16,
    /// Access width: the verifier rewrites context accesses and refuses other widths.
    pub size: Size,
    /// Whether the hook may store to it (the verifier refuses other stores).
    pub writable: bool,
}

const fn v(name: &'static str, value: i32) -> Verdict {
    Verdict { name, value }
}

const fn ro(name: &'static str, offset: i16, size: Size) -> CtxField {
    CtxField {
        name,
        offset,
        size,
        writable: false,
    }
}

const fn rw(name: &'static str, offset: i16, size: Size) -> CtxField {
    CtxField {
        name,
        offset,
        size,
        writable: true,
    }
}

/// `enum xdp_action`.
pub const XDP_VERDICTS: &[Verdict] = &[
    v("ABORTED", 0),
    v("DROP", 1),
    v("PASS", 2),
    v("TX", 3),
    v("REDIRECT", 4),
];

/// `TC_ACT_*` from pkt_cls.h (tcx uses the same values; TC_ACT_OK is what tcx calls NEXT).
pub const TC_VERDICTS: &[Verdict] = &[
    v("ACT_UNSPEC", -1),
    v("ACT_OK", 0),
    v("ACT_RECLASSIFY", 1),
    v("ACT_SHOT", 2),
    v("ACT_PIPE", 3),
    v("ACT_STOLEN", 4),
    v("ACT_QUEUED", 5),
    v("ACT_REPEAT", 6),
    v("ACT_REDIRECT", 7),
];

/// `NF_DROP`, `NF_ACCEPT`: the only verdicts a BPF netfilter program may return.
pub const NETFILTER_VERDICTS: &[Verdict] = &[v("DROP", 0), v("ACCEPT", 1)];

/// `struct xdp_md`: every field is a u32 the verifier rewrites into a real kernel access.
/// `data`/`data_end`/`data_meta` load as packet pointers despite being declared u32.
pub const XDP_MD: &[CtxField] = &[
    ro("data", 0, Size::W),
    ro("data_end", 4, Size::W),
    ro("data_meta", 8, Size::W),
    ro("ingress_ifindex", 12, Size::W),
    ro("rx_queue_index", 16, Size::W),
    ro("egress_ifindex", 20, Size::W),
];

/// The `struct __sk_buff` fields luabpf exposes to tc programs (the struct has many more).
/// `protocol` holds the EtherType in network byte order, as the kernel stores it.
pub const SK_BUFF: &[CtxField] = &[
    ro("len", 0, Size::W),
    rw("mark", 8, Size::W),
    ro("protocol", 16, Size::W),
    ro("vlan_tci", 24, Size::W),
    rw("priority", 32, Size::W),
    ro("ifindex", 40, Size::W),
    ro("hash", 68, Size::W),
    ro("data", 76, Size::W),
    ro("data_end", 80, Size::W),
];

/// `struct bpf_nf_ctx`: two kernel pointers; the packet is reached through `skb` and a dynptr.
pub const NF_CTX: &[CtxField] = &[ro("state", 0, Size::DW), ro("skb", 8, Size::DW)];

/// The `struct nf_hook_state` fields behind `bpf_nf_ctx.state` (a BTF-typed pointer, so the
/// verifier checks these loads against the kernel's own layout).
pub const NF_HOOK_STATE: &[CtxField] = &[ro("hook", 0, Size::B), ro("pf", 1, Size::B)];

impl ProgType {
    pub const ALL: [ProgType; 3] = [ProgType::Xdp, ProgType::Tc, ProgType::Netfilter];

    /// `prog_type` for `BPF_PROG_LOAD`.
    pub fn kernel_type(self) -> u32 {
        match self {
            ProgType::Xdp => BPF_PROG_TYPE_XDP,
            ProgType::Tc => BPF_PROG_TYPE_SCHED_CLS,
            ProgType::Netfilter => BPF_PROG_TYPE_NETFILTER,
        }
    }

    /// `expected_attach_type` for `BPF_PROG_LOAD`. Netfilter refuses to load without it; XDP
    /// takes `BPF_XDP` as libbpf sends it; SCHED_CLS ignores it, so none is sent.
    pub fn expected_attach_type(self) -> Option<u32> {
        match self {
            ProgType::Xdp => Some(BPF_XDP),
            ProgType::Tc => None,
            ProgType::Netfilter => Some(BPF_NETFILTER),
        }
    }

    /// `attach_type` for `BPF_LINK_CREATE` (tc: tcx, which needs kernel 6.6).
    pub fn link_attach_type(self, egress: bool) -> u32 {
        match self {
            ProgType::Xdp => BPF_XDP,
            ProgType::Tc if egress => BPF_TCX_EGRESS,
            ProgType::Tc => BPF_TCX_INGRESS,
            ProgType::Netfilter => BPF_NETFILTER,
        }
    }

    /// The ELF section luabpf writes programs of this type into.
    /// `classifier` for tc because aya 0.14 knows tc programs by that name only (it refuses
    /// `tc`, failing the whole file); libbpf (bpftool, iproute2) accepts both. aya has no
    /// netfilter programs at all: keep those out of objects handed to it.
    pub fn section(self) -> &'static str {
        match self {
            ProgType::Xdp => "xdp",
            ProgType::Tc => "classifier",
            ProgType::Netfilter => "netfilter",
        }
    }

    /// The program type of an ELF section name, including the spellings other toolchains use
    /// (`classifier` for aya, `xdp/<anything>`, `tcx/ingress`), so foreign objects are listed.
    pub fn from_section(name: &str) -> Option<ProgType> {
        let kind = name.split('/').next().unwrap_or(name);
        match kind {
            "xdp" | "xdp.frags" => Some(ProgType::Xdp),
            "tc" | "classifier" | "tcx" => Some(ProgType::Tc),
            "netfilter" => Some(ProgType::Netfilter),
            _ => None,
        }
    }

    /// The Lua module holding the verdict constants.
    pub fn verdict_module(self) -> &'static str {
        match self {
            ProgType::Xdp => "linux.xdp",
            ProgType::Tc => "linux.tc",
            ProgType::Netfilter => "linux.netfilter",
        }
    }

    pub fn verdicts(self) -> &'static [Verdict] {
        match self {
            ProgType::Xdp => XDP_VERDICTS,
            ProgType::Tc => TC_VERDICTS,
            ProgType::Netfilter => NETFILTER_VERDICTS,
        }
    }

    /// What a path without `return`, or a runtime error, returns: let the packet through.
    pub fn default_verdict(self) -> i32 {
        match self {
            ProgType::Xdp => 2,       // XDP_PASS
            ProgType::Tc => 0,        // TC_ACT_OK
            ProgType::Netfilter => 1, // NF_ACCEPT
        }
    }

    /// The kernel struct the program's only argument points to (for BTF and documentation).
    pub fn ctx_struct(self) -> &'static str {
        match self {
            ProgType::Xdp => "xdp_md",
            ProgType::Tc => "__sk_buff",
            ProgType::Netfilter => "bpf_nf_ctx",
        }
    }

    /// The context fields the program may access at fixed offsets from its argument.
    pub fn ctx_fields(self) -> &'static [CtxField] {
        match self {
            ProgType::Xdp => XDP_MD,
            ProgType::Tc => SK_BUFF,
            ProgType::Netfilter => NF_CTX,
        }
    }

    pub fn ctx_field(self, name: &str) -> Option<&'static CtxField> {
        self.ctx_fields().iter().find(|f| f.name == name)
    }

    /// Whether the program may write packet bytes (netfilter packets are read-only).
    pub fn packet_writable(self) -> bool {
        !matches!(self, ProgType::Netfilter)
    }

    /// Offsets of the packet-pointer fields (`data`, `data_end`), when the packet is reached
    /// directly through the context (not for netfilter, which goes through a dynptr).
    pub fn packet_pointers(self) -> Option<(i16, i16)> {
        let data = self.ctx_field("data")?.offset;
        let end = self.ctx_field("data_end")?.offset;
        Some((data, end))
    }
}

/// The verdict's name for a value, e.g. `PASS` for XDP 2 (for listings and test reports).
pub fn verdict_name(progtype: ProgType, value: i32) -> Option<&'static str> {
    progtype.verdicts().iter().find(|v| v.value == value).map(|v| v.name)
}

/// The value of a named verdict, e.g. 2 for XDP `PASS`.
pub fn verdict_value(progtype: ProgType, name: &str) -> Option<i32> {
    progtype.verdicts().iter().find(|v| v.name == name).map(|v| v.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_numbers() {
        assert_eq!(ProgType::Xdp.kernel_type(), 6);
        assert_eq!(ProgType::Tc.kernel_type(), 3);
        assert_eq!(ProgType::Netfilter.kernel_type(), 32);
        assert_eq!(ProgType::Netfilter.expected_attach_type(), Some(45));
        assert_eq!(ProgType::Tc.link_attach_type(true), 47);
    }

    #[test]
    fn sections_round_trip() {
        for p in ProgType::ALL {
            assert_eq!(ProgType::from_section(p.section()), Some(p));
        }
        assert_eq!(ProgType::from_section("classifier"), Some(ProgType::Tc));
        assert_eq!(ProgType::from_section("xdp/foo"), Some(ProgType::Xdp));
        assert_eq!(ProgType::from_section("tcx/ingress"), Some(ProgType::Tc));
        assert_eq!(ProgType::from_section(".text"), None);
        assert_eq!(ProgType::from_section(""), None);
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict_name(ProgType::Xdp, 2), Some("PASS"));
        assert_eq!(verdict_name(ProgType::Xdp, 5), None);
        assert_eq!(verdict_name(ProgType::Tc, -1), Some("ACT_UNSPEC"));
        assert_eq!(verdict_name(ProgType::Tc, 7), Some("ACT_REDIRECT"));
        assert_eq!(verdict_name(ProgType::Netfilter, 0), Some("DROP"));
        assert_eq!(verdict_value(ProgType::Tc, "ACT_SHOT"), Some(2));
        for p in ProgType::ALL {
            let name = verdict_name(p, p.default_verdict());
            assert_eq!(name, Some(["PASS", "ACT_OK", "ACCEPT"][p as usize]));
        }
    }

    #[test]
    fn context_layouts() {
        assert_eq!(ProgType::Xdp.packet_pointers(), Some((0, 4)));
        assert_eq!(ProgType::Tc.packet_pointers(), Some((76, 80)));
        assert_eq!(ProgType::Netfilter.packet_pointers(), None);
        let writable: Vec<_> = SK_BUFF.iter().filter(|f| f.writable).map(|f| f.name).collect();
        assert_eq!(writable, ["mark", "priority"]);
        assert!(XDP_MD.iter().all(|f| !f.writable && f.size == Size::W));
        assert_eq!(ProgType::Xdp.ctx_field("rx_queue_index").map(|f| f.offset), Some(16));
    }
}
