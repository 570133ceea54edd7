-- netfilter/sni_filter.lua: the SNI filter of ../sni_filter.lua, written once and compiled for
-- two hooks: XDP (the packet starts at the Ethernet header) and netfilter (it starts at the IP
-- header). The filter takes the offset of the IPv4 header; each hook's entry function finds it
-- and turns the answer into its own verdict.
--
--     luabpf attach eth0 sni_filter.lua --program sni_xdp               # XDP
--     luabpf attach --netfilter ipv4:local_in:-100 sni_filter.lua       # netfilter (sni_nf)
--     luabpf map set sni_nf blocklist evil.example 0
--
-- At netfilter the filter sees what the host's IP stack accepted (reassembled, after the
-- firewall's earlier hooks) in every network namespace it is attached to, and it cannot
-- rewrite packets (writes are refused at compile time).

local xdp       = require "bpf.xdp"
local netfilter = require "bpf.netfilter"
local map       = require "bpf.map"
local xdp_act   = require "linux.xdp"
local nf_act    = require "linux.netfilter"
local bo        = require "linux.byteorder"

-- Host name -> number of packets dropped for it. `c64`: names up to 64 bytes, zero-padded.
local blocklist = map.hash("blocklist", { key = "c64", value = "I8", entries = 4096 })

local ETH_P_IP        <const> = 0x0800
local ETH_HLEN        <const> = 14
local IPPROTO_TCP     <const> = 6
local TLS_HANDSHAKE   <const> = 22
local CLIENT_HELLO    <const> = 1
local EXT_SERVER_NAME <const> = 0
local MAX_EXTENSIONS  <const> = 32

-- True when the IPv4/TCP packet whose IP header is at `ip` carries a TLS ClientHello for a
-- blocked name (which is then counted).
local function blocked(p, ip)
  if p:getbyte(ip) >> 4 ~= 4 or p:getbyte(ip + 9) ~= IPPROTO_TCP then return false end
  local tcp = ip + (p:getbyte(ip) & 0x0f) * 4          -- IPv4 header length, with options
  local tls = tcp + (p:getbyte(tcp + 12) >> 4) * 4     -- TCP header length, with options
  -- A handshake record holding a ClientHello.
  if p:getbyte(tls) ~= TLS_HANDSHAKE or p:getbyte(tls + 5) ~= CLIENT_HELLO then return false end
  -- Skip the fixed fields: record header (5), handshake header (4), version (2), random (32),
  -- then the variable ones: session id, cipher suites, compression methods.
  local off = tls + 5 + 4 + 2 + 32
  off = off + 1 + p:getbyte(off)
  off = off + 2 + bo.ntoh16(p:getuint16(off))
  off = off + 1 + p:getbyte(off)
  local extensions_end = off + 2 + bo.ntoh16(p:getuint16(off))
  off = off + 2
  -- Walk the extensions to server_name: type (2), length (2), then
  -- list length (2), name type (1), name length (2), name.
  for _ = 1, MAX_EXTENSIONS do
    if off + 4 > extensions_end then break end
    local ext_type = bo.ntoh16(p:getuint16(off))
    local ext_len = bo.ntoh16(p:getuint16(off + 2))
    if ext_type == EXT_SERVER_NAME then
      local host = p:getstring(off + 9, bo.ntoh16(p:getuint16(off + 7)))
      local hits = blocklist[host]
      if hits then
        blocklist[host] = hits + 1
        return true
      end
      return false
    end
    off = off + 4 + ext_len
  end
  return false
end

local function at_xdp(ctx)
  local p = ctx:packet()
  if bo.ntoh16(p:getuint16(12)) ~= ETH_P_IP then return xdp_act.PASS end
  if blocked(p, ETH_HLEN) then return xdp_act.DROP end
  return xdp_act.PASS
end

local function at_netfilter(ctx)
  if blocked(ctx:packet(), 0) then return nf_act.DROP end
  return nf_act.ACCEPT
end

return {
  xdp.program(at_xdp, { name = "sni_xdp" }),
  netfilter.program(at_netfilter, { name = "sni_nf", family = "ipv4", hook = "local_in", priority = -100 }),
}
