--- DNS messages: the header and the first question.
--
-- Functions take the offset `off` of the DNS message (the UDP payload,
-- `udp.payload(p, u)`) and accept a nil `off` (then return nil). Names are handled in wire
-- format (length-prefixed labels); `dns.wire_name("example.com")` (compile time) makes the
-- wire form of a name, e.g. for a table of blocked names.
-- @module net.dns

local ntoh16 = require("linux.byteorder").ntoh16

local M = {}

--- Length of the header.
M.HEADER_LEN = 12
--- Query types.
M.A = 1
M.NS = 2
M.CNAME = 5
M.SOA = 6
M.PTR = 12
M.MX = 15
M.TXT = 16
M.AAAA = 28
M.SRV = 33
M.HTTPS = 65
M.ANY = 255

--- The message ID, host order.
function M.id(p, off)
  return ntoh16(p:getuint16(off))
end

--- The flags word (QR, opcode, AA, TC, RD, RA, rcode), host order.
function M.flags(p, off)
  return ntoh16(p:getuint16(off + 2))
end

--- Whether the message is a query (QR bit clear).
function M.is_query(p, off)
  return p:getbyte(off + 2) & 0x80 == 0
end

--- The opcode (0 for a standard query).
function M.opcode(p, off)
  return (p:getbyte(off + 2) >> 3) & 0x0f
end

--- The response code.
function M.rcode(p, off)
  return p:getbyte(off + 3) & 0x0f
end

--- The number of questions.
function M.questions(p, off)
  return ntoh16(p:getuint16(off + 4))
end

--- The number of answers.
function M.answers(p, off)
  return ntoh16(p:getuint16(off + 6))
end

--- The first question: the offset and length of its name in wire format (the root label's
-- zero byte included, so `p:getstring(at, len)` equals `dns.wire_name(...)`) and its type.
-- nil, 0, 0 when the message has no question, or the name is compressed (a pointer), has a
-- label longer than 63 bytes, or is longer than 255 bytes.
-- @tparam integer|nil off offset of the DNS message
-- @treturn integer|nil offset of the name
-- @treturn integer length of the name, wire format
-- @treturn integer query type, host order
function M.question(p, off)
  if not off then return nil, 0, 0 end
  if ntoh16(p:getuint16(off + 4)) == 0 then return nil, 0, 0 end
  local start = off + 12
  local at = start
  for _ = 1, 128 do
    local l = p:getbyte(at)
    if l == 0 then
      return start, at + 1 - start, ntoh16(p:getuint16(at + 1))
    end
    if l > 63 then return nil, 0, 0 end
    at = at + 1 + l
    if at - start >= 255 then return nil, 0, 0 end
  end
  return nil, 0, 0
end

--- The wire format of a dotted name, for the body (compile time):
-- `dns.wire_name("www.example")` is "\3www\7example\0".
-- @tparam string name
-- @treturn string
function M.wire_name(name)
  local out = {}
  for label in name:gmatch("[^.]+") do
    if #label > 63 then error("dns.wire_name: a label longer than 63 bytes", 2) end
    out[#out + 1] = string.char(#label) .. label
  end
  out[#out + 1] = "\0"
  return table.concat(out)
end

return M
