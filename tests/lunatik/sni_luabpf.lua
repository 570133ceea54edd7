-- The filter of sni.lua in luabpf's usual style: named function, options table, the
-- stdlib's parsers.

local xdp    = require "bpf.xdp"
local map    = require "bpf.map"
local action = require "linux.xdp"
local ipv4, tcp, tls = require "net.ipv4", require "net.tcp", require "net.tls"
local eth = require "net.eth"

local blocklist = map.hash("blocklist", { key = "c64", value = "I8", entries = 4096 })

local function filter(ctx)
  local p = ctx:packet()
  if eth.ethertype(p) ~= eth.IPV4 then return action.PASS end
  local name, len = tls.sni(p, tcp.payload(p, ipv4.tcp(p, eth.HEADER_LEN)))
  if not name then return action.PASS end
  local host = p:getstring(name, len)
  local hits = blocklist[host]
  if not hits then return action.PASS end
  blocklist[host] = hits + 1
  return action.DROP
end

return xdp.program(filter, { name = "sni_luabpf" })
