//! Kernel helper functions: the ids a `call` instruction carries, their names and arities.
//!
//! Helper ids are a frozen kernel ABI (`enum bpf_func_id` in include/uapi/linux/bpf.h; the list
//! stopped growing at 211, new kernel services are kfuncs). The whole table is here, not only
//! the helpers luabpf emits, because the disassembler also shows objects built by clang.
//! The table was generated from the uapi header's `__BPF_FUNC_MAPPER` list and the signature
//! line of each helper's documentation; a test checks it against the running kernel's BTF.

/// One kernel helper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Helper {
    /// The `imm` of `call` (`BPF_FUNC_*`).
    pub id: i32,
    /// The kernel's name, as the verifier log and bpftool print it (`bpf_` prefix included).
    pub name: &'static str,
    /// Arguments in r1..=r5 that the helper reads.
    pub args: u8,
    /// Takes up to five arguments after the fixed ones (only `bpf_trace_printk`), which the
    /// verifier does not type-check.
    pub variadic: bool,
}

// The helpers luabpf's compiler emits. `i32` because that is the type of `Insn::imm`.
pub const MAP_LOOKUP_ELEM: i32 = 1;
pub const MAP_UPDATE_ELEM: i32 = 2;
pub const MAP_DELETE_ELEM: i32 = 3;
pub const KTIME_GET_NS: i32 = 5;
pub const TRACE_PRINTK: i32 = 6;
pub const GET_PRANDOM_U32: i32 = 7;
pub const GET_SMP_PROCESSOR_ID: i32 = 8;
pub const SKB_STORE_BYTES: i32 = 9;
pub const L3_CSUM_REPLACE: i32 = 10;
pub const L4_CSUM_REPLACE: i32 = 11;
pub const REDIRECT: i32 = 23;
pub const SKB_LOAD_BYTES: i32 = 26;
pub const CSUM_DIFF: i32 = 28;
pub const GET_HASH_RECALC: i32 = 34;
pub const SKB_PULL_DATA: i32 = 39;
pub const XDP_ADJUST_HEAD: i32 = 44;
pub const REDIRECT_MAP: i32 = 51;
pub const XDP_ADJUST_TAIL: i32 = 65;
pub const KTIME_GET_BOOT_NS: i32 = 125;
pub const RINGBUF_OUTPUT: i32 = 130;
pub const RINGBUF_RESERVE: i32 = 131;
pub const RINGBUF_SUBMIT: i32 = 132;
pub const RINGBUF_DISCARD: i32 = 133;
pub const FOR_EACH_MAP_ELEM: i32 = 164;
pub const LOOP: i32 = 181;
pub const STRNCMP: i32 = 182;
pub const XDP_GET_BUFF_LEN: i32 = 188;
pub const XDP_LOAD_BYTES: i32 = 189;
pub const XDP_STORE_BYTES: i32 = 190;
pub const MAP_LOOKUP_PERCPU_ELEM: i32 = 195;
pub const DYNPTR_FROM_MEM: i32 = 197;
pub const DYNPTR_READ: i32 = 201;
pub const DYNPTR_WRITE: i32 = 202;
pub const DYNPTR_DATA: i32 = 203;

/// `map_update_elem` flags (`BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`).
pub const BPF_ANY: i32 = 0;
pub const BPF_NOEXIST: i32 = 1;
pub const BPF_EXIST: i32 = 2;

const fn h(id: i32, name: &'static str, args: u8) -> Helper {
    Helper {
        id,
        name,
        args,
        variadic: id == TRACE_PRINTK,
    }
}

/// Every helper of `enum bpf_func_id`, indexed by id - 1 (id 0 is `unspec`, not callable).
pub static HELPERS: &[Helper] = &[
    h(1, "bpf_map_lookup_elem", 2),
    h(2, "bpf_map_update_elem", 4),
    h(3, "bpf_map_delete_elem", 2),
    h(4, "bpf_probe_read", 3),
    h(5, "bpf_ktime_get_ns", 0),
    h(6, "bpf_trace_printk", 2),
    h(7, "bpf_get_prandom_u32", 0),
    h(8, "bpf_get_smp_processor_id", 0),
    h(9, "bpf_skb_store_bytes", 5),
    h(10, "bpf_l3_csum_replace", 5),
    h(11, "bpf_l4_csum_replace", 5),
    h(12, "bpf_tail_call", 3),
    h(13, "bpf_clone_redirect", 3),
    h(14, "bpf_get_current_pid_tgid", 0),
    h(15, "bpf_get_current_uid_gid", 0),
    h(16, "bpf_get_current_comm", 2),
    h(17, "bpf_get_cgroup_classid", 1),
    h(18, "bpf_skb_vlan_push", 3),
    h(19, "bpf_skb_vlan_pop", 1),
    h(20, "bpf_skb_get_tunnel_key", 4),
    h(21, "bpf_skb_set_tunnel_key", 4),
    h(22, "bpf_perf_event_read", 2),
    h(23, "bpf_redirect", 2),
    h(24, "bpf_get_route_realm", 1),
    h(25, "bpf_perf_event_output", 5),
    h(26, "bpf_skb_load_bytes", 4),
    h(27, "bpf_get_stackid", 3),
    h(28, "bpf_csum_diff", 5),
    h(29, "bpf_skb_get_tunnel_opt", 3),
    h(30, "bpf_skb_set_tunnel_opt", 3),
    h(31, "bpf_skb_change_proto", 3),
    h(32, "bpf_skb_change_type", 2),
    h(33, "bpf_skb_under_cgroup", 3),
    h(34, "bpf_get_hash_recalc", 1),
    h(35, "bpf_get_current_task", 0),
    h(36, "bpf_probe_write_user", 3),
    h(37, "bpf_current_task_under_cgroup", 2),
    h(38, "bpf_skb_change_tail", 3),
    h(39, "bpf_skb_pull_data", 2),
    h(40, "bpf_csum_update", 2),
    h(41, "bpf_set_hash_invalid", 1),
    h(42, "bpf_get_numa_node_id", 0),
    h(43, "bpf_skb_change_head", 3),
    h(44, "bpf_xdp_adjust_head", 2),
    h(45, "bpf_probe_read_str", 3),
    h(46, "bpf_get_socket_cookie", 1),
    h(47, "bpf_get_socket_uid", 1),
    h(48, "bpf_set_hash", 2),
    h(49, "bpf_setsockopt", 5),
    h(50, "bpf_skb_adjust_room", 4),
    h(51, "bpf_redirect_map", 3),
    h(52, "bpf_sk_redirect_map", 4),
    h(53, "bpf_sock_map_update", 4),
    h(54, "bpf_xdp_adjust_meta", 2),
    h(55, "bpf_perf_event_read_value", 4),
    h(56, "bpf_perf_prog_read_value", 3),
    h(57, "bpf_getsockopt", 5),
    h(58, "bpf_override_return", 2),
    h(59, "bpf_sock_ops_cb_flags_set", 2),
    h(60, "bpf_msg_redirect_map", 4),
    h(61, "bpf_msg_apply_bytes", 2),
    h(62, "bpf_msg_cork_bytes", 2),
    h(63, "bpf_msg_pull_data", 4),
    h(64, "bpf_bind", 3),
    h(65, "bpf_xdp_adjust_tail", 2),
    h(66, "bpf_skb_get_xfrm_state", 5),
    h(67, "bpf_get_stack", 4),
    h(68, "bpf_skb_load_bytes_relative", 5),
    h(69, "bpf_fib_lookup", 4),
    h(70, "bpf_sock_hash_update", 4),
    h(71, "bpf_msg_redirect_hash", 4),
    h(72, "bpf_sk_redirect_hash", 4),
    h(73, "bpf_lwt_push_encap", 4),
    h(74, "bpf_lwt_seg6_store_bytes", 4),
    h(75, "bpf_lwt_seg6_adjust_srh", 3),
    h(76, "bpf_lwt_seg6_action", 4),
    h(77, "bpf_rc_repeat", 1),
    h(78, "bpf_rc_keydown", 4),
    h(79, "bpf_skb_cgroup_id", 1),
    h(80, "bpf_get_current_cgroup_id", 0),
    h(81, "bpf_get_local_storage", 2),
    h(82, "bpf_sk_select_reuseport", 4),
    h(83, "bpf_skb_ancestor_cgroup_id", 2),
    h(84, "bpf_sk_lookup_tcp", 5),
    h(85, "bpf_sk_lookup_udp", 5),
    h(86, "bpf_sk_release", 1),
    h(87, "bpf_map_push_elem", 3),
    h(88, "bpf_map_pop_elem", 2),
    h(89, "bpf_map_peek_elem", 2),
    h(90, "bpf_msg_push_data", 4),
    h(91, "bpf_msg_pop_data", 4),
    h(92, "bpf_rc_pointer_rel", 3),
    h(93, "bpf_spin_lock", 1),
    h(94, "bpf_spin_unlock", 1),
    h(95, "bpf_sk_fullsock", 1),
    h(96, "bpf_tcp_sock", 1),
    h(97, "bpf_skb_ecn_set_ce", 1),
    h(98, "bpf_get_listener_sock", 1),
    h(99, "bpf_skc_lookup_tcp", 5),
    h(100, "bpf_tcp_check_syncookie", 5),
    h(101, "bpf_sysctl_get_name", 4),
    h(102, "bpf_sysctl_get_current_value", 3),
    h(103, "bpf_sysctl_get_new_value", 3),
    h(104, "bpf_sysctl_set_new_value", 3),
    h(105, "bpf_strtol", 4),
    h(106, "bpf_strtoul", 4),
    h(107, "bpf_sk_storage_get", 4),
    h(108, "bpf_sk_storage_delete", 2),
    h(109, "bpf_send_signal", 1),
    h(110, "bpf_tcp_gen_syncookie", 5),
    h(111, "bpf_skb_output", 5),
    h(112, "bpf_probe_read_user", 3),
    h(113, "bpf_probe_read_kernel", 3),
    h(114, "bpf_probe_read_user_str", 3),
    h(115, "bpf_probe_read_kernel_str", 3),
    h(116, "bpf_tcp_send_ack", 2),
    h(117, "bpf_send_signal_thread", 1),
    h(118, "bpf_jiffies64", 0),
    h(119, "bpf_read_branch_records", 4),
    h(120, "bpf_get_ns_current_pid_tgid", 4),
    h(121, "bpf_xdp_output", 5),
    h(122, "bpf_get_netns_cookie", 1),
    h(123, "bpf_get_current_ancestor_cgroup_id", 1),
    h(124, "bpf_sk_assign", 3),
    h(125, "bpf_ktime_get_boot_ns", 0),
    h(126, "bpf_seq_printf", 5),
    h(127, "bpf_seq_write", 3),
    h(128, "bpf_sk_cgroup_id", 1),
    h(129, "bpf_sk_ancestor_cgroup_id", 2),
    h(130, "bpf_ringbuf_output", 4),
    h(131, "bpf_ringbuf_reserve", 3),
    h(132, "bpf_ringbuf_submit", 2),
    h(133, "bpf_ringbuf_discard", 2),
    h(134, "bpf_ringbuf_query", 2),
    h(135, "bpf_csum_level", 2),
    h(136, "bpf_skc_to_tcp6_sock", 1),
    h(137, "bpf_skc_to_tcp_sock", 1),
    h(138, "bpf_skc_to_tcp_timewait_sock", 1),
    h(139, "bpf_skc_to_tcp_request_sock", 1),
    h(140, "bpf_skc_to_udp6_sock", 1),
    h(141, "bpf_get_task_stack", 4),
    h(142, "bpf_load_hdr_opt", 4),
    h(143, "bpf_store_hdr_opt", 4),
    h(144, "bpf_reserve_hdr_opt", 3),
    h(145, "bpf_inode_storage_get", 4),
    h(146, "bpf_inode_storage_delete", 2),
    h(147, "bpf_d_path", 3),
    h(148, "bpf_copy_from_user", 3),
    h(149, "bpf_snprintf_btf", 5),
    h(150, "bpf_seq_printf_btf", 4),
    h(151, "bpf_skb_cgroup_classid", 1),
    h(152, "bpf_redirect_neigh", 4),
    h(153, "bpf_per_cpu_ptr", 2),
    h(154, "bpf_this_cpu_ptr", 1),
    h(155, "bpf_redirect_peer", 2),
    h(156, "bpf_task_storage_get", 4),
    h(157, "bpf_task_storage_delete", 2),
    h(158, "bpf_get_current_task_btf", 0),
    h(159, "bpf_bprm_opts_set", 2),
    h(160, "bpf_ktime_get_coarse_ns", 0),
    h(161, "bpf_ima_inode_hash", 3),
    h(162, "bpf_sock_from_file", 1),
    h(163, "bpf_check_mtu", 5),
    h(164, "bpf_for_each_map_elem", 4),
    h(165, "bpf_snprintf", 5),
    h(166, "bpf_sys_bpf", 3),
    h(167, "bpf_btf_find_by_name_kind", 4),
    h(168, "bpf_sys_close", 1),
    h(169, "bpf_timer_init", 3),
    h(170, "bpf_timer_set_callback", 2),
    h(171, "bpf_timer_start", 3),
    h(172, "bpf_timer_cancel", 1),
    h(173, "bpf_get_func_ip", 1),
    h(174, "bpf_get_attach_cookie", 1),
    h(175, "bpf_task_pt_regs", 1),
    h(176, "bpf_get_branch_snapshot", 3),
    h(177, "bpf_trace_vprintk", 4),
    h(178, "bpf_skc_to_unix_sock", 1),
    h(179, "bpf_kallsyms_lookup_name", 4),
    h(180, "bpf_find_vma", 5),
    h(181, "bpf_loop", 4),
    h(182, "bpf_strncmp", 3),
    h(183, "bpf_get_func_arg", 3),
    h(184, "bpf_get_func_ret", 2),
    h(185, "bpf_get_func_arg_cnt", 1),
    h(186, "bpf_get_retval", 0),
    h(187, "bpf_set_retval", 1),
    h(188, "bpf_xdp_get_buff_len", 1),
    h(189, "bpf_xdp_load_bytes", 4),
    h(190, "bpf_xdp_store_bytes", 4),
    h(191, "bpf_copy_from_user_task", 5),
    h(192, "bpf_skb_set_tstamp", 3),
    h(193, "bpf_ima_file_hash", 3),
    h(194, "bpf_kptr_xchg", 2),
    h(195, "bpf_map_lookup_percpu_elem", 3),
    h(196, "bpf_skc_to_mptcp_sock", 1),
    h(197, "bpf_dynptr_from_mem", 4),
    h(198, "bpf_ringbuf_reserve_dynptr", 4),
    h(199, "bpf_ringbuf_submit_dynptr", 2),
    h(200, "bpf_ringbuf_discard_dynptr", 2),
    h(201, "bpf_dynptr_read", 5),
    h(202, "bpf_dynptr_write", 5),
    h(203, "bpf_dynptr_data", 3),
    h(204, "bpf_tcp_raw_gen_syncookie_ipv4", 3),
    h(205, "bpf_tcp_raw_gen_syncookie_ipv6", 3),
    h(206, "bpf_tcp_raw_check_syncookie_ipv4", 2),
    h(207, "bpf_tcp_raw_check_syncookie_ipv6", 2),
    h(208, "bpf_ktime_get_tai_ns", 0),
    h(209, "bpf_user_ringbuf_drain", 4),
    h(210, "bpf_cgrp_storage_get", 4),
    h(211, "bpf_cgrp_storage_delete", 2),
];

/// The helper with this id, if the kernel defines one.
pub fn helper(id: i32) -> Option<&'static Helper> {
    let index = usize::try_from(id).ok()?.checked_sub(1)?;
    HELPERS.get(index)
}

/// Whether the verifier forgets every packet pointer's checked range after a call of helper
/// `id`: the helpers that may move, grow or rewrite the packet's buffer (the kernel's
/// `bpf_helper_changes_pkt_data`, net/core/filter.c, 6.18). Across any other helper, a
/// checked pointer kept in r6-r9 or on the stack stays checked.
pub fn changes_packet_data(id: i32) -> bool {
    helper_name(id).is_some_and(|name| CHANGES_PACKET_DATA.contains(&name))
}

/// The helpers of [`changes_packet_data`], by name.
const CHANGES_PACKET_DATA: [&str; 22] = [
    "bpf_clone_redirect",
    "bpf_l3_csum_replace",
    "bpf_l4_csum_replace",
    "bpf_lwt_push_encap",
    "bpf_lwt_seg6_action",
    "bpf_lwt_seg6_adjust_srh",
    "bpf_lwt_seg6_store_bytes",
    "bpf_msg_pop_data",
    "bpf_msg_pull_data",
    "bpf_msg_push_data",
    "bpf_skb_adjust_room",
    "bpf_skb_change_head",
    "bpf_skb_change_proto",
    "bpf_skb_change_tail",
    "bpf_skb_pull_data",
    "bpf_skb_store_bytes",
    "bpf_skb_vlan_pop",
    "bpf_skb_vlan_push",
    "bpf_store_hdr_opt",
    "bpf_xdp_adjust_head",
    "bpf_xdp_adjust_meta",
    "bpf_xdp_adjust_tail",
];

/// The kernel's name of a helper (`bpf_map_lookup_elem` for 1), as the disassembler shows it.
pub fn helper_name(id: i32) -> Option<&'static str> {
    helper(id).map(|h| h.name)
}

/// The number of fixed arguments a helper takes (r1 upwards).
pub fn helper_args(id: i32) -> Option<u8> {
    helper(id).map(|h| h.args)
}

/// Looks a helper up by name, with or without the `bpf_` prefix.
pub fn helper_by_name(name: &str) -> Option<&'static Helper> {
    let full = if name.starts_with("bpf_") {
        name.to_string()
    } else {
        format!("bpf_{name}")
    };
    HELPERS.iter().find(|h| h.name == full)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A misspelt name would make a helper that moves the packet count as one that does not:
    /// the packet checks before it would then be trusted after it.
    #[test]
    fn the_helpers_that_change_packet_data_are_named_as_in_the_table() {
        for name in CHANGES_PACKET_DATA {
            let h = helper_by_name(name).unwrap_or_else(|| panic!("{name} is not a helper"));
            assert!(changes_packet_data(h.id), "{name}");
        }
        for id in [SKB_STORE_BYTES, XDP_ADJUST_HEAD, XDP_ADJUST_TAIL, SKB_PULL_DATA] {
            assert!(changes_packet_data(id), "{id}");
        }
        for id in [
            MAP_LOOKUP_ELEM,
            KTIME_GET_NS,
            XDP_LOAD_BYTES,
            XDP_STORE_BYTES,
            SKB_LOAD_BYTES,
        ] {
            assert!(!changes_packet_data(id), "{id}");
        }
    }

    #[test]
    fn table_is_indexed_by_id() {
        for (i, h) in HELPERS.iter().enumerate() {
            assert_eq!(h.id as usize, i + 1, "{}", h.name);
            assert!(h.args <= 5, "{}", h.name);
        }
        assert_eq!(HELPERS.len(), 211);
    }

    #[test]
    fn constants_name_the_right_helpers() {
        let expect = [
            (MAP_LOOKUP_ELEM, "bpf_map_lookup_elem", 2),
            (MAP_UPDATE_ELEM, "bpf_map_update_elem", 4),
            (MAP_DELETE_ELEM, "bpf_map_delete_elem", 2),
            (KTIME_GET_NS, "bpf_ktime_get_ns", 0),
            (TRACE_PRINTK, "bpf_trace_printk", 2),
            (GET_PRANDOM_U32, "bpf_get_prandom_u32", 0),
            (GET_SMP_PROCESSOR_ID, "bpf_get_smp_processor_id", 0),
            (SKB_STORE_BYTES, "bpf_skb_store_bytes", 5),
            (L3_CSUM_REPLACE, "bpf_l3_csum_replace", 5),
            (L4_CSUM_REPLACE, "bpf_l4_csum_replace", 5),
            (REDIRECT, "bpf_redirect", 2),
            (SKB_LOAD_BYTES, "bpf_skb_load_bytes", 4),
            (CSUM_DIFF, "bpf_csum_diff", 5),
            (GET_HASH_RECALC, "bpf_get_hash_recalc", 1),
            (SKB_PULL_DATA, "bpf_skb_pull_data", 2),
            (XDP_ADJUST_HEAD, "bpf_xdp_adjust_head", 2),
            (REDIRECT_MAP, "bpf_redirect_map", 3),
            (XDP_ADJUST_TAIL, "bpf_xdp_adjust_tail", 2),
            (KTIME_GET_BOOT_NS, "bpf_ktime_get_boot_ns", 0),
            (RINGBUF_OUTPUT, "bpf_ringbuf_output", 4),
            (RINGBUF_RESERVE, "bpf_ringbuf_reserve", 3),
            (RINGBUF_SUBMIT, "bpf_ringbuf_submit", 2),
            (RINGBUF_DISCARD, "bpf_ringbuf_discard", 2),
            (FOR_EACH_MAP_ELEM, "bpf_for_each_map_elem", 4),
            (LOOP, "bpf_loop", 4),
            (STRNCMP, "bpf_strncmp", 3),
            (XDP_GET_BUFF_LEN, "bpf_xdp_get_buff_len", 1),
            (XDP_LOAD_BYTES, "bpf_xdp_load_bytes", 4),
            (XDP_STORE_BYTES, "bpf_xdp_store_bytes", 4),
            (MAP_LOOKUP_PERCPU_ELEM, "bpf_map_lookup_percpu_elem", 3),
            (DYNPTR_FROM_MEM, "bpf_dynptr_from_mem", 4),
            (DYNPTR_READ, "bpf_dynptr_read", 5),
            (DYNPTR_WRITE, "bpf_dynptr_write", 5),
            (DYNPTR_DATA, "bpf_dynptr_data", 3),
        ];
        for (id, name, args) in expect {
            assert_eq!(helper_name(id), Some(name));
            assert_eq!(helper_args(id), Some(args), "{name}");
        }
    }

    #[test]
    fn lookups_outside_the_table_are_none() {
        assert_eq!(helper_name(0), None);
        assert_eq!(helper_name(-1), None);
        assert_eq!(helper_name(212), None);
        assert_eq!(helper_name(i32::MIN), None);
        assert_eq!(helper_by_name("loop").map(|h| h.id), Some(LOOP));
        assert_eq!(helper_by_name("bpf_loop").map(|h| h.id), Some(LOOP));
        assert!(helper_by_name("no_such_helper").is_none());
        assert!(helper(TRACE_PRINTK).is_some_and(|h| h.variadic));
    }
}
