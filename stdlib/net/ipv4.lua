--- IPv4 headers: fields, options, fragments.
--
-- Every function takes the offset `off` where the IPv4 header starts: `eth.ipv4(p)` at XDP
-- and tc, 0 at netfilter. Functions that find a header also accept a nil `off` and then
-- return nil, so that calls chain: `tcp.payload(p, ipv4.tcp(p, eth.ipv4(p)))`.
-- @module net.ipv4

local bo = require "linux.byteorder"
local ntoh16, ntoh32 = bo.ntoh16, bo.ntoh32

local M = {}

--- Length of a header without options.
M.MIN_HEADER_LEN = 20
--- Protocol numbers.
M.ICMP = 1
M.TCP = 6
M.UDP = 17
--- Option types.
M.OPT_END = 0
M.OPT_NOP = 1
M.OPT_RECORD_ROUTE = 7
M.OPT_TIMESTAMP = 68
M.OPT_ROUTER_ALERT = 148

--- The header length in bytes (IHL * 4, options included), or nil when the version is not
-- 4 or the IHL is below 5.
-- @param p the packet
-- @tparam integer|nil off offset of the IPv4 header
-- @treturn integer|nil
function M.header_length(p, off)
  if not off then return nil end
  local b = p:getbyte(off)
  -- Version 4 and an IHL of at least 5: 0x45 to 0x4f.
  if b < 0x45 or b > 0x4f then return nil end
  return (b & 0x0f) * 4
end

--- The protocol of the payload (byte 9).
function M.protocol(p, off)
  return p:getbyte(off + 9)
end

--- The total length field (header and payload), host order.
function M.total_length(p, off)
  return ntoh16(p:getuint16(off + 2))
end

--- The identification field, host order.
function M.id(p, off)
  return ntoh16(p:getuint16(off + 4))
end

--- The time to live.
function M.ttl(p, off)
  return p:getbyte(off + 8)
end

--- The source address, as `getuint32` reads it (the network bytes in memory order: the form
-- the kernel stores, a ready map key for `I4`); `ntoh32` gives 0x0a000001 for 10.0.0.1.
function M.src(p, off)
  return p:getuint32(off + 12)
end

--- The destination address, as `getuint32` reads it (see `src`).
function M.dst(p, off)
  return p:getuint32(off + 16)
end

--- The source address as a number: 0x0a000001 for 10.0.0.1.
function M.src_number(p, off)
  return ntoh32(p:getuint32(off + 12))
end

--- The destination address as a number.
function M.dst_number(p, off)
  return ntoh32(p:getuint32(off + 16))
end

--- The fragment offset in bytes, and whether more fragments follow (the MF flag).
-- @treturn integer offset of this fragment's data in the original datagram
-- @treturn boolean more fragments follow
function M.fragment(p, off)
  local f = ntoh16(p:getuint16(off + 6))
  return (f & 0x1fff) * 8, f & 0x2000 ~= 0
end

--- Whether the packet is a fragment (the first, a middle or the last one).
function M.is_fragment(p, off)
  return ntoh16(p:getuint16(off + 6)) & 0x3fff ~= 0
end

--- Where the payload starts (after the options) and its protocol. Returns nil, 0 for a
-- header that is not IPv4 (version, IHL below 5) and for a fragment other than the first,
-- whose payload does not start with the transport header.
-- @param p the packet
-- @tparam integer|nil off offset of the IPv4 header
-- @treturn integer|nil offset of the payload
-- @treturn integer protocol (0 with nil)
function M.payload(p, off)
  if not off then return nil, 0 end
  local b = p:getbyte(off)
  if b < 0x45 or b > 0x4f then return nil, 0 end
  -- A fragment offset (13 bits) other than 0, tested on the bytes as read: no byte swap.
  if p:getuint16(off + 6) & 0xff1f ~= 0 then return nil, 0 end
  return off + (b & 0x0f) * 4, p:getbyte(off + 9)
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

--- The offset of the ICMP header, or nil (see `payload`).
function M.icmp(p, off)
  return carrying(p, off, 1)
end

--- The first option of type `kind` (not END or NOP): its offset (at its type byte) and its
-- length (type and length bytes included). Returns nil, 0 when the header has no such
-- option, is not IPv4, or its options are malformed (a length below 2 or past the header).
-- @param p the packet
-- @tparam integer|nil off offset of the IPv4 header
-- @tparam integer kind option type, e.g. `ipv4.OPT_ROUTER_ALERT`
-- @treturn integer|nil offset of the option
-- @treturn integer its length
function M.option(p, off, kind)
  if not off then return nil, 0 end
  local hl = M.header_length(p, off)
  if not hl then return nil, 0 end
  local at = off + 20
  local stop = off + hl
  for _ = 1, 40 do
    if at >= stop then break end
    local k = p:getbyte(at)
    if k == 0 then break end
    if k == 1 then
      at = at + 1
    else
      if at + 2 > stop then return nil, 0 end
      local l = p:getbyte(at + 1)
      if l < 2 or at + l > stop then return nil, 0 end
      if k == kind then return at, l end
      at = at + l
    end
  end
  return nil, 0
end

return M
