-- flows.lua in luabpf's usual style.

local tc     = require "bpf.tc"
local map    = require "bpf.map"
local action = require "linux.tc"
local eth, ipv4, tcp = require "net.eth", require "net.ipv4", require "net.tcp"

local ports = map.hash("ports", { key = "I4", value = "I4", entries = 1024 })
local seen  = map.array("seen", { key = "I4", value = "I8", entries = 1 })

local function classify(skb)
  local p = skb:packet()
  if eth.ethertype(p) ~= eth.IPV4 then return action.ACT_OK end
  local proto = ipv4.protocol(p, eth.HEADER_LEN)
  if proto ~= ipv4.TCP and proto ~= ipv4.UDP then return action.ACT_OK end
  -- TCP and UDP both start with the source and destination ports.
  local l4 = eth.HEADER_LEN + (p:getbyte(eth.HEADER_LEN) & 0x0f) * 4
  local priority = ports[tcp.dst_port(p, l4)]
  if priority == nil then return action.ACT_OK end
  seen[0] = (seen[0] or 0) + 1
  if priority == 0 and proto == ipv4.UDP then return action.ACT_SHOT end
  skb.priority = priority
  return action.ACT_OK
end

return tc.program(classify, { name = "flows_luabpf" })
