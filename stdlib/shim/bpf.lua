-- bpf: kernel services. Time and random numbers come from the host (shim.services); a run
-- that uses them is marked nondeterministic, as the kernel's values cannot be replayed.
local shim = require "luabpf.shim"
return {
  ktime = function()
    shim.nondeterministic()
    return shim.services.ktime()
  end,
  random = function()
    shim.nondeterministic()
    return shim.services.random() & 0xffffffff
  end,
  cpu = function() return shim.services.cpu() end,
  print = function(fmt, ...) return shim.services.print(fmt, ...) end,
}
