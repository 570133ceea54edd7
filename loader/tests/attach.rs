//! `luabpf attach|detach|list|map` against the kernel, with real packets.
//!
//! Needs root: skips loudly without bpf(), unless LUABPF_REQUIRE_KERNEL=1. Every test builds
//! its own [`Lab`] (two namespaces and a veth pair, common/lab.rs), never touches other
//! interfaces, and uses program names unique to the lab. The lab's guard removes namespaces,
//! pins and links also when a test fails. The traffic tests are in wire.rs.

mod common;

use std::path::Path;

use common::lab::*;
use luabpf_loader::require_kernel_or_skip;

/// The per-CPU sum `luabpf map dump` shows for `key` (`KEY: SUM (cpu0=.. ...)`).
fn dumped_sum(dump: &str, key: u32) -> u64 {
    let prefix = format!("{key}: ");
    let line = dump
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no key {key} in dump:\n{dump}"));
    line[prefix.len()..].split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn counter_counts_packets_survives_replace_and_detaches() {
    if !require_kernel_or_skip("counter_counts_packets_survives_replace_and_detaches") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("ctr");
    let file = lab.example_copy("counter", "counter", &name);
    let file = file.to_str().unwrap();

    let out = ok(&lab.luabpf(&["attach", &lab.inner.clone(), file]));
    assert!(out.contains(&format!("attached `{name}` at xdp")), "{out}");
    assert!(lab.xdp_attached(), "no XDP program on {}", lab.inner);
    for f in ["link", "prog", "maps/counts"] {
        assert!(Path::new("/sys/fs/bpf/luabpf").join(&name).join(f).exists(), "pin {f}");
    }
    let list = ok(&lab.luabpf(&["list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with(&name) && l.contains(&lab.inner) && l.contains("counts")),
        "{list}"
    );
    let json = ok(&lab.luabpf(&["list", "--json"]));
    assert!(
        json.contains(&format!("\"program\":\"{name}\"")) && json.contains("\"hook\":\"xdp\""),
        "{json}"
    );

    lab.send_udp(5);
    let dump = ok(&lab.luabpf(&["map", "dump", &name, "counts"]));
    let udp = dumped_sum(&dump, 17);
    assert!(udp >= 5, "UDP count {udp} after 5 datagrams:\n{dump}");

    // Re-attach: replaced, counts kept, still attached.
    let out = ok(&lab.luabpf(&["attach", &lab.inner.clone(), file]));
    assert!(out.contains("replaced") && out.contains("maps kept: counts"), "{out}");
    let dump = ok(&lab.luabpf(&["map", "dump", &name, "counts"]));
    assert!(dumped_sum(&dump, 17) >= udp, "{dump}");
    assert!(lab.xdp_attached());
    lab.send_udp(3);
    let dump = ok(&lab.luabpf(&["map", "dump", &name, "counts"]));
    assert!(
        dumped_sum(&dump, 17) >= udp + 3,
        "new program counts into the kept map:\n{dump}"
    );

    // Per-CPU set writes every CPU; get shows the sum.
    ok(&lab.luabpf(&["map", "set", &name, "counts", "0x20", "7"]));
    let got = ok(&lab.luabpf(&["map", "get", &name, "counts", "32", "--json"]));
    assert!(got.contains("\"key\":32") && got.contains("\"values\":[7"), "{got}");
    // Bad keys: non-integer and out of range for I4: usage errors naming the format.
    let bad = lab.luabpf(&["map", "get", &name, "counts", "abc"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("format I4"));
    let bad = lab.luabpf(&["map", "set", &name, "counts", "1", "notanumber"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("format I8"));
    // An unknown map / program: "not found", exit 1.
    assert_eq!(lab.luabpf(&["map", "dump", &name, "nosuch"]).status.code(), Some(1));
    assert_eq!(
        lab.luabpf(&["map", "dump", "nosuch_prog", "counts"]).status.code(),
        Some(1)
    );

    // The same name on another hook: refused, the attachment untouched.
    let other = lab.luabpf(&["attach", &lab.inner.clone(), file, "--mode", "skb"]);
    assert_eq!(
        other.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert!(lab.xdp_attached());

    ok(&lab.luabpf(&["detach", &name]));
    assert!(!lab.xdp_attached(), "XDP still attached after detach");
    assert!(!pins_of(&name), "pins left after detach");
    assert_eq!(lab.luabpf(&["detach", &name]).status.code(), Some(1));
}

#[test]
fn sni_blocklist_round_trips_and_refuses_bad_keys() {
    if !require_kernel_or_skip("sni_blocklist_round_trips_and_refuses_bad_keys") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("sni");
    let file = lab.example_copy("sni_filter", "sni_filter", &name);
    ok(&lab.luabpf(&["attach", &lab.inner.clone(), file.to_str().unwrap()]));

    ok(&lab.luabpf(&["map", "set", &name, "blocklist", "evil.example", "0"]));
    let got = ok(&lab.luabpf(&["map", "get", &name, "blocklist", "evil.example"]));
    assert_eq!(got.trim(), "evil.example: 0");
    ok(&lab.luabpf(&["map", "set", &name, "blocklist", "evil.example", "0x10"]));
    let got = ok(&lab.luabpf(&["map", "get", &name, "blocklist", "evil.example", "--json"]));
    assert_eq!(got.trim(), "{\"key\":\"evil.example\",\"value\":16}");

    // 65 bytes for a c64 key: refused, nothing written.
    let long = "a".repeat(65);
    let bad = lab.luabpf(&["map", "set", &name, "blocklist", &long, "1"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("format c64"));
    let dump = ok(&lab.luabpf(&["map", "dump", &name, "blocklist", "--json"]));
    assert_eq!(dump.trim(), "[{\"key\":\"evil.example\",\"value\":16}]");

    let list = ok(&lab.luabpf(&["map", "list", &name]));
    assert!(list.contains("blocklist\thash\tkey c64\tvalue I8"), "{list}");

    ok(&lab.luabpf(&["map", "del", &name, "blocklist", "evil.example"]));
    assert_eq!(
        lab.luabpf(&["map", "get", &name, "blocklist", "evil.example"])
            .status
            .code(),
        Some(1)
    );
    ok(&lab.luabpf(&["detach", &name]));
    assert!(!pins_of(&name));
}

#[test]
fn failures_leave_nothing_behind() {
    if !require_kernel_or_skip("failures_leave_nothing_behind") {
        return;
    }
    let mut lab = Lab::new();
    let name = lab.unique("bad");
    let file = lab.example_copy("counter", "counter", &name);
    let file = file.to_str().unwrap();

    // A missing interface.
    let out = lab.luabpf(&["attach", "nosuchif0", file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no network interface named `nosuchif0`"));
    assert!(!pins_of(&name));
    // The same at tc.
    let tc_name = lab.unique("badtc");
    let tc = lab.example_copy("tc_mark", "tc_mark", &tc_name);
    let out = lab.luabpf(&["attach", "nosuchif0", tc.to_str().unwrap(), "--tc", "ingress"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no network interface named `nosuchif0`"));
    assert!(!pins_of(&tc_name));

    // An XDP-only file at tc; netfilter with an interface: usage errors, nothing pinned.
    assert_eq!(
        lab.luabpf(&["attach", &lab.inner.clone(), file, "--tc", "egress"])
            .status
            .code(),
        Some(2)
    );
    let nf = lab.luabpf(&["attach", &lab.inner.clone(), file, "--netfilter", "ipv4:local_in:-100"]);
    assert_eq!(nf.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nf.stderr).contains("--netfilter takes no interface"));
    assert!(!pins_of(&name));
    assert!(!lab.xdp_attached());

    // Already attached on another interface: refused, the first attachment intact.
    // A second interface, inside the namespace (a veth pair with both ends there).
    ok(&ip(&[
        "-n",
        &lab.ns.clone(),
        "link",
        "add",
        "lbdummy0",
        "type",
        "veth",
        "peer",
        "name",
        "lbdummy1",
    ]));
    ok(&ip(&["-n", &lab.ns.clone(), "link", "set", "lbdummy0", "up"]));
    ok(&lab.luabpf(&["attach", &lab.inner.clone(), file]));
    let out = lab.luabpf(&["attach", "lbdummy0", file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already attached"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lab.xdp_attached());
    let dummy = ok(&ip(&["-n", &lab.ns.clone(), "link", "show", "lbdummy0"]));
    assert!(!dummy.contains(" xdp"), "{dummy}");
    ok(&lab.luabpf(&["detach", &name]));
    assert!(!pins_of(&name));
}
