--- IPv6 headers and their extension headers.
--
-- Every function takes the offset `off` where the IPv6 header starts: `eth.ipv6(p)` at XDP
-- and tc, 0 at netfilter. Functions that find a header also accept a nil `off` and then
-- return nil, so that calls chain: `udp.payload(p, ipv6.udp(p, eth.ipv6(p)))`.
-- @module net.ipv6

local ntoh16 = require("linux.byteorder").ntoh16

local M = {}

--- Length of the fixed header.
M.HEADER_LEN = 40
--- Next-header values: extension headers.
M.HOP_BY_HOP = 0
M.ROUTING = 43
M.FRAGMENT = 44
M.ESP = 50
M.AUTH = 51
M.NO_NEXT = 59
M.DEST_OPTS = 60
--- Next-header values: upper layers.
M.TCP = 6
M.UDP = 17
M.ICMPV6 = 58
--- Extension headers `payload` walks before it gives up.
M.MAX_EXTENSIONS = 8

--- Whether the header's version is 6.
function M.is_ipv6(p, off)
  return p:getbyte(off) >> 4 == 6
end

--- The Next Header field of the fixed header.
function M.next_header(p, off)
  return p:getbyte(off + 6)
end

--- The payload length field, host order.
function M.payload_length(p, off)
  return ntoh16(p:getuint16(off + 4))
end

--- The hop limit.
function M.hop_limit(p, off)
  return p:getbyte(off + 7)
end

--- The source address: a 16-byte string (a ready map key for `c16`).
function M.src(p, off)
  return p:getstring(off + 8, 16)
end

--- The destination address: a 16-byte string.
function M.dst(p, off)
  return p:getstring(off + 24, 16)
end

--- Where the upper-layer header starts and which protocol it is, after the extension
-- headers (hop-by-hop, routing, fragment, destination options, authentication: at most
-- `MAX_EXTENSIONS`). ESP and "no next header" end the walk and are returned as the
-- protocol. Returns nil, 0 when the version is not 6, for a fragment other than the first
-- (it has no upper-layer header), and when there are more extension headers than
-- `MAX_EXTENSIONS`.
-- @param p the packet
-- @tparam integer|nil off offset of the IPv6 header
-- @treturn integer|nil offset of the upper-layer header
-- @treturn integer its protocol (0 with nil)
function M.payload(p, off)
  if not off then return nil, 0 end
  if p:getbyte(off) >> 4 ~= 6 then return nil, 0 end
  local nh = p:getbyte(off + 6)
  local at = off + 40
  for _ = 0, 8 do
    if nh == 0 or nh == 43 or nh == 60 then
      nh, at = p:getbyte(at), at + (p:getbyte(at + 1) + 1) * 8
    elseif nh == 44 then
      if ntoh16(p:getuint16(at + 2)) & 0xfff8 ~= 0 then return nil, 0 end
      nh, at = p:getbyte(at), at + 8
    elseif nh == 51 then
      nh, at = p:getbyte(at), at + (p:getbyte(at + 1) + 2) * 4
    else
      return at, nh
    end
  end
  return nil, 0
end

-- The offset of the payload when `payload` finds one of protocol `proto`, else nil.
local function carrying(p, off, proto)
  local at, found = M.payload(p, off)
  if found ~= proto then return nil end
  return at
end

--- The offset of the TCP header, or nil (see `payload`).
function M.tcp(p, off)
  return carrying(p, off, 6)
end

--- The offset of the UDP header, or nil (see `payload`).
function M.udp(p, off)
  return carrying(p, off, 17)
end

--- The offset of the ICMPv6 header, or nil (see `payload`).
function M.icmp(p, off)
  return carrying(p, off, 58)
end

--- The first extension header of type `kind` before the upper layer: its offset, or nil.
-- @tparam integer kind e.g. `ipv6.ROUTING`
function M.extension(p, off, kind)
  if not off then return nil end
  if p:getbyte(off) >> 4 ~= 6 then return nil end
  local nh = p:getbyte(off + 6)
  local at = off + 40
  for _ = 1, 8 do
    if nh == kind then return at end
    if nh == 0 or nh == 43 or nh == 60 then
      nh, at = p:getbyte(at), at + (p:getbyte(at + 1) + 1) * 8
    elseif nh == 44 then
      nh, at = p:getbyte(at), at + 8
    elseif nh == 51 then
      nh, at = p:getbyte(at), at + (p:getbyte(at + 1) + 2) * 4
    else
      return nil
    end
  end
  return nil
end

return M
