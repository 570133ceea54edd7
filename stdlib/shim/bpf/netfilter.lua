-- bpf.netfilter: `netfilter.program(fn, opts)`; the packet starts at the IP header.
return { program = function(fn, opts) return require("luabpf.shim").program("netfilter", fn, opts) end }
