-- counter.lua: count packets per IP protocol number, at the XDP hook.
--
-- `counts` is a per-CPU array: each CPU increments its own copy without contention, and
-- user space sums the copies (`luabpf map dump counter counts`). Index 0 counts packets
-- that are not IPv4 (IP protocol 0 is never used on the wire).

local xdp    = require "bpf.xdp"
local map    = require "bpf.map"
local action = require "linux.xdp"
local eth, ipv4 = require "net.eth", require "net.ipv4"

local counts = map.percpu_array("counts", { key = "I4", value = "I8", entries = 256 })

local function count(ctx)
  local p = ctx:packet()
  local proto = 0
  if eth.ethertype(p) == eth.IPV4 then
    proto = ipv4.protocol(p, eth.HEADER_LEN)
  end
  counts[proto] = (counts[proto] or 0) + 1
  return action.PASS
end

return xdp.program(count, { name = "counter" })
