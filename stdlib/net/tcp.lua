--- TCP headers.
--
-- Functions take the offset `off` of the TCP header (`ipv4.tcp(p, ip)`, `ipv6.tcp(p, ip)`).
-- Ports and numbers are in host order.
-- @module net.tcp

local bo = require "linux.byteorder"
local ntoh16, ntoh32 = bo.ntoh16, bo.ntoh32

local M = {}

--- Length of a header without options.
M.MIN_HEADER_LEN = 20
--- Flag bits of `flags`.
M.FIN = 0x01
M.SYN = 0x02
M.RST = 0x04
M.PSH = 0x08
M.ACK = 0x10
M.URG = 0x20
M.ECE = 0x40
M.CWR = 0x80

--- The source port.
function M.src_port(p, off)
  return ntoh16(p:getuint16(off))
end

--- The destination port.
function M.dst_port(p, off)
  return ntoh16(p:getuint16(off + 2))
end

--- The sequence number.
function M.seq(p, off)
  return ntoh32(p:getuint32(off + 4))
end

--- The acknowledgment number.
function M.ack(p, off)
  return ntoh32(p:getuint32(off + 8))
end

--- The flags byte (FIN 0x01 ... CWR 0x80): `tcp.flags(p, t) & tcp.SYN ~= 0`.
function M.flags(p, off)
  return p:getbyte(off + 13)
end

--- The window size.
function M.window(p, off)
  return ntoh16(p:getuint16(off + 14))
end

--- The header length in bytes (data offset * 4), or nil when it is below 20.
-- @tparam integer|nil off offset of the TCP header
function M.header_length(p, off)
  if not off then return nil end
  local l = (p:getbyte(off + 12) >> 4) * 4
  if l < 20 then return nil end
  return l
end

--- Where the payload starts (after the options), or nil when the data offset is below 5
-- (or `off` is nil). The payload may be empty: compare with `#p`.
-- @tparam integer|nil off offset of the TCP header
-- @treturn integer|nil
function M.payload(p, off)
  if not off then return nil end
  local l = (p:getbyte(off + 12) >> 4) * 4
  if l < 20 then return nil end
  return off + l
end

return M
