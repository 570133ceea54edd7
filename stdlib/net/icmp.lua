--- ICMP (IPv4) and ICMPv6 headers.
--
-- Functions take the offset `off` of the ICMP header (`ipv4.icmp(p, ip)`, `ipv6.icmp(p, ip)`).
-- @module net.icmp

local ntoh16 = require("linux.byteorder").ntoh16

local M = {}

--- ICMP types.
M.ECHO_REPLY = 0
M.DEST_UNREACHABLE = 3
M.ECHO_REQUEST = 8
M.TIME_EXCEEDED = 11
--- ICMPv6 types.
M.V6_DEST_UNREACHABLE = 1
M.V6_PACKET_TOO_BIG = 2
M.V6_TIME_EXCEEDED = 3
M.V6_ECHO_REQUEST = 128
M.V6_ECHO_REPLY = 129
M.V6_NEIGHBOR_SOLICIT = 135
M.V6_NEIGHBOR_ADVERT = 136

--- The type.
function M.type(p, off)
  return p:getbyte(off)
end

--- The code.
function M.code(p, off)
  return p:getbyte(off + 1)
end

--- The identifier and sequence number (host order) of an echo request or reply (ICMP
-- types 0 and 8, ICMPv6 128 and 129), or nil, 0 for any other message.
-- @tparam integer|nil off offset of the ICMP header
-- @treturn integer|nil identifier
-- @treturn integer sequence number
function M.echo(p, off)
  if not off then return nil, 0 end
  local t = p:getbyte(off)
  if t ~= 0 and t ~= 8 and t ~= 128 and t ~= 129 then return nil, 0 end
  return ntoh16(p:getuint16(off + 4)), ntoh16(p:getuint16(off + 6))
end

return M
