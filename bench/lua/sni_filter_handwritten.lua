-- sni_filter.lua: drop TLS connections to blocked host names, at the XDP hook.
--
-- A TLS connection starts with a ClientHello that names the server it wants (the SNI
-- extension) in clear text. This filter finds that name in each TCP packet that carries a
-- ClientHello and drops the packet when the name is in the `blocklist` map, counting hits.
-- The map is filled from user space:
--
--     luabpf map set sni_filter blocklist evil.example 0
--
-- Everything outside the functions handed to `xdp.program` runs once, at compile time.

local xdp    = require "bpf.xdp"
local map    = require "bpf.map"
local action = require "linux.xdp"
local bo     = require "linux.byteorder"

-- Host name -> number of packets dropped for it. `c64`: names up to 64 bytes, zero-padded.
local blocklist = map.hash("blocklist", { key = "c64", value = "I8", entries = 4096 })

local IPPROTO_TCP     <const> = 6
local TLS_HANDSHAKE   <const> = 22
local CLIENT_HELLO    <const> = 1
local EXT_SERVER_NAME <const> = 0
local MAX_EXTENSIONS  <const> = 32

-- 1 when a tag type as getuint16 reads it (bytes swapped) is 802.1Q (0x8100) or 802.1ad
-- (0x88A8), else 0, without a branch.
local function is_tag(raw)
  return (((raw ~ 0x0081) - 1) >> 63) | (((raw ~ 0xA888) - 1) >> 63)
end

-- Offset of the TLS record in an Ethernet (up to two VLAN tags) / IPv4 (version 4, IHL >= 5,
-- options, not a later fragment) / TCP (data offset >= 5) packet, or nil if it is not one.
local function tls_offset(p)
  local tags = is_tag(p:getuint16(12))
  tags = tags + is_tag(p:getuint16(12 + tags * 4))
  local ip = 14 + tags * 4
  if p:getuint16(ip - 2) ~= 0x0008 then return nil end      -- ETH_P_IP, bytes swapped
  local b = p:getbyte(ip)
  if b < 0x45 or b > 0x4f then return nil end
  if p:getuint16(ip + 6) & 0xff1f ~= 0 then return nil end  -- fragment offset, as read
  if p:getbyte(ip + 9) ~= IPPROTO_TCP then return nil end
  local tcp = ip + (b & 0x0f) * 4
  local data_offset = (p:getbyte(tcp + 12) >> 4) * 4
  if data_offset < 20 then return nil end
  return tcp + data_offset
end

local function filter(ctx)
  local p = ctx:packet()
  local tls = tls_offset(p)
  if not tls then return action.PASS end
  -- A handshake record holding a ClientHello.
  if p:getbyte(tls) ~= TLS_HANDSHAKE or p:getbyte(tls + 5) ~= CLIENT_HELLO then
    return action.PASS
  end
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
    local ext_len = bo.ntoh16(p:getuint16(off + 2))
    if bo.ntoh16(p:getuint16(off)) == EXT_SERVER_NAME then
      if p:getbyte(off + 6) ~= 0 then return action.PASS end    -- name type: host_name
      local name_len = bo.ntoh16(p:getuint16(off + 7))
      if name_len + 5 > ext_len then return action.PASS end
      local host = p:getstring(off + 9, name_len)
      local hits = blocklist[host]
      if hits then
        blocklist[host] = hits + 1
        return action.DROP
      end
      return action.PASS
    end
    off = off + 4 + ext_len
  end
  return action.PASS
end

return xdp.program(filter, { name = "sni_filter" })
