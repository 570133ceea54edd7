--- UDP headers.
--
-- Functions take the offset `off` of the UDP header (`ipv4.udp(p, ip)`, `ipv6.udp(p, ip)`).
-- @module net.udp

local ntoh16 = require("linux.byteorder").ntoh16

local M = {}

--- Length of the header.
M.HEADER_LEN = 8

--- The source port, host order.
function M.src_port(p, off)
  return ntoh16(p:getuint16(off))
end

--- The destination port, host order.
function M.dst_port(p, off)
  return ntoh16(p:getuint16(off + 2))
end

--- The length field (header and payload), host order.
function M.length(p, off)
  return ntoh16(p:getuint16(off + 4))
end

--- Where the payload starts, or nil when the length field is below 8 (or `off` is nil).
-- @tparam integer|nil off offset of the UDP header
function M.payload(p, off)
  if not off then return nil end
  if ntoh16(p:getuint16(off + 4)) < 8 then return nil end
  return off + 8
end

return M
