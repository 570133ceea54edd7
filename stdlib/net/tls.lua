--- TLS records and the ClientHello: extensions, server name (SNI), ALPN.
--
-- Functions take the offset `off` of a TLS record: the TCP payload (`tcp.payload(p, t)`),
-- and accept a nil `off` (then return nil). They read the fields they need and nothing
-- after them: a ClientHello cut short after the server name still yields the name.
-- Only a ClientHello that starts at the start of its record is parsed (the usual case; a
-- hello split over TCP segments is not reassembled).
-- @module net.tls

local ntoh16 = require("linux.byteorder").ntoh16

local M = {}

--- Record content types.
M.CHANGE_CIPHER_SPEC = 20
M.ALERT = 21
M.HANDSHAKE = 22
M.APPLICATION_DATA = 23
--- Handshake types.
M.CLIENT_HELLO = 1
M.SERVER_HELLO = 2
--- Extension types.
M.EXT_SERVER_NAME = 0
M.EXT_ALPN = 16
--- Length of a record header.
M.RECORD_HEADER_LEN = 5
--- Extensions `extension` walks before it gives up.
M.MAX_EXTENSIONS = 32

--- The record header: content type, protocol version (0x0301 ... 0x0304) and length, or
-- nil, 0, 0 when the content type is not 20-23 or the major version is not 3.
-- @tparam integer|nil off offset of the record
-- @treturn integer|nil content type
-- @treturn integer version, host order
-- @treturn integer length of the record's body, host order
function M.record(p, off)
  if not off then return nil, 0, 0 end
  local t = p:getbyte(off)
  if t < 20 or t > 23 or p:getbyte(off + 1) ~= 3 then return nil, 0, 0 end
  return t, ntoh16(p:getuint16(off + 1)), ntoh16(p:getuint16(off + 3))
end

--- The extensions of a ClientHello: the offset of the first one and where the block ends
-- (from its length field). nil, 0 when the record is not a handshake record holding a
-- ClientHello.
-- @tparam integer|nil off offset of the record
-- @treturn integer|nil offset of the first extension
-- @treturn integer end of the extensions (exclusive)
function M.extensions(p, off)
  if not off then return nil, 0 end
  if p:getbyte(off) ~= 22 or p:getbyte(off + 5) ~= 1 then return nil, 0 end
  -- record header (5), handshake header (4), version (2), random (32); then the session
  -- id, cipher suites and compression methods, each after its length.
  local at = off + 43
  at = at + 1 + p:getbyte(at)
  at = at + 2 + ntoh16(p:getuint16(at))
  at = at + 1 + p:getbyte(at)
  return at + 2, at + 2 + ntoh16(p:getuint16(at))
end

--- The first extension of type `ext_type` among the first `MAX_EXTENSIONS` of a
-- ClientHello: the offset and length of its data. nil, 0 when there is none.
-- @tparam integer|nil off offset of the record
-- @tparam integer ext_type e.g. `tls.EXT_ALPN`
-- @treturn integer|nil offset of the extension's data
-- @treturn integer its length
function M.extension(p, off, ext_type)
  local first, stop = M.extensions(p, off)
  if not first then return nil, 0 end
  local at = first
  for _ = 1, 32 do
    if at + 4 > stop then break end
    local len = ntoh16(p:getuint16(at + 2))
    if ntoh16(p:getuint16(at)) == ext_type then return at + 4, len end
    at = at + 4 + len
  end
  return nil, 0
end

--- The server name (SNI) of a ClientHello: the offset and length of the host name, or nil,
-- 0 when there is no server_name extension of type host_name. `p:getstring(at, len)` is
-- the name (a length above 255 makes that a runtime error).
-- @tparam integer|nil off offset of the record
-- @treturn integer|nil offset of the name
-- @treturn integer its length
function M.sni(p, off)
  local at, len = M.extension(p, off, 0)
  if not at then return nil, 0 end
  -- server_name_list length (2), name type (1, host_name = 0), name length (2), name
  if p:getbyte(at + 2) ~= 0 then return nil, 0 end
  local n = ntoh16(p:getuint16(at + 3))
  if n + 5 > len then return nil, 0 end
  return at + 5, n
end

--- The first protocol a ClientHello offers by ALPN ("h2", "http/1.1"): its offset and
-- length, or nil, 0 when there is no ALPN extension or its first name is empty.
-- @tparam integer|nil off offset of the record
-- @treturn integer|nil offset of the protocol name
-- @treturn integer its length
function M.alpn(p, off)
  local at, len = M.extension(p, off, 16)
  if not at then return nil, 0 end
  -- protocol_name_list length (2), then names, each after a one-byte length
  local n = p:getbyte(at + 2)
  if n == 0 or n + 3 > len then return nil, 0 end
  return at + 3, n
end

return M
