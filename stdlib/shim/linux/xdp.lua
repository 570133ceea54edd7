-- linux.xdp: XDP verdicts (include/uapi/linux/bpf.h, enum xdp_action).
return { ABORTED = 0, DROP = 1, PASS = 2, TX = 3, REDIRECT = 4 }
