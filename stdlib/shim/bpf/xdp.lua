-- bpf.xdp: `xdp.program(fn, opts)`; the packet starts at the Ethernet header.
return { program = function(fn, opts) return require("luabpf.shim").program("xdp", fn, opts) end }
