-- bpf.tc: `tc.program(fn, opts)` (opts.egress); the packet starts at the Ethernet header.
return { program = function(fn, opts) return require("luabpf.shim").program("tc", fn, opts) end }
