-- sni_filter.lua: drop TLS connections to blocked host names, at the XDP hook.
--
-- A TLS connection starts with a ClientHello that names the server it wants (the SNI
-- extension) in clear text. The standard library finds that name in each IPv4/TCP packet
-- (VLAN tags and IP options included); the packet is dropped when the name is in the
-- `blocklist` map, which counts hits and is filled from user space:
--
--     luabpf map set sni_filter blocklist evil.example 0

local xdp    = require "bpf.xdp"
local map    = require "bpf.map"
local action = require "linux.xdp"
local eth, ipv4, tcp, tls = require "net.eth", require "net.ipv4", require "net.tcp", require "net.tls"

-- Host name -> number of packets dropped for it. `c64`: names up to 64 bytes, zero-padded.
local blocklist = map.hash("blocklist", { key = "c64", value = "I8", entries = 4096 })

local function filter(ctx)
  local p = ctx:packet()
  local name, len = tls.sni(p, tcp.payload(p, ipv4.tcp(p, eth.ipv4(p))))
  if not name then return action.PASS end
  local host = p:getstring(name, len)
  local hits = blocklist[host]
  if not hits then return action.PASS end
  blocklist[host] = hits + 1
  return action.DROP
end

return xdp.program(filter, { name = "sni_filter" })
