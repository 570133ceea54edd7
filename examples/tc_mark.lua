-- tc_mark.lua: mark IPv4 TCP and UDP packets by destination port, at the tc hook.
--
-- The mark (skb->mark) is what policy routing (`ip rule add fwmark 42 table 100`), nftables
-- (`meta mark 42`) and the qdiscs downstream select on. `marks` maps a destination port to
-- the mark its packets get; other packets pass unmarked:
--
--     luabpf attach eth0 tc_mark.lua --tc egress
--     luabpf map set tc_mark marks 443 42
--
-- Every marked packet is also counted per port in `marked`.

local tc     = require "bpf.tc"
local map    = require "bpf.map"
local action = require "linux.tc"
local bo     = require "linux.byteorder"

-- Destination port (host order) -> mark.
local marks  = map.hash("marks", { key = "I2", value = "I4", entries = 1024 })
local marked = map.percpu_hash("marked", { key = "I2", value = "I8", entries = 1024 })

local function mark(ctx)
  local p = ctx:packet()
  if bo.ntoh16(p:getuint16(12)) ~= 0x0800 then return action.ACT_OK end
  local proto = p:getbyte(23)
  if proto ~= 6 and proto ~= 17 then return action.ACT_OK end
  local l4 = 14 + (p:getbyte(14) & 0x0f) * 4
  local port = bo.ntoh16(p:getuint16(l4 + 2))
  local m = marks[port]
  if m then
    ctx.mark = m
    marked[port] = (marked[port] or 0) + 1
  end
  return action.ACT_OK
end

return tc.program(mark, { name = "tc_mark" })
