-- luabpf.packet: the packet object of language.md section 3 over a byte string. Integer
-- accessors read and write host byte order (little-endian); an access outside the packet is
-- a runtime error, as is an offset above 0xfff0 (the compiler bounds offsets there).

local Packet = {}
Packet.__index = Packet
Packet.__len = function(p) return p.n end

local MAX_OFFSET = 0xfff0

local function fail(message)
  return require("luabpf.shim").fail(message)
end

function Packet.new(bytes, writable)
  local b = {}
  local n = #bytes
  for i = 1, n, 4096 do
    local chunk = { bytes:byte(i, math.min(i + 4095, n)) }
    for j = 1, #chunk do b[i + j - 1] = chunk[j] end
  end
  return setmetatable({ b = b, n = n, writable = writable }, Packet)
end

function Packet:bytes()
  local parts = {}
  for i = 1, self.n, 4096 do
    parts[#parts + 1] = string.char(table.unpack(self.b, i, math.min(i + 4095, self.n)))
  end
  return table.concat(parts)
end

local function integer(v, what)
  local i = math.tointeger(v)
  if i == nil then error(what .. " must be an integer, got " .. tostring(v), 3) end
  return i
end

local function check(self, o, n)
  if o < 0 or o > MAX_OFFSET or o + n > self.n then
    fail(string.format("packet access out of bounds: %d bytes at offset %d of a %d-byte packet", n, o, self.n))
  end
end

local function writable(self)
  if not self.writable then error("this packet cannot be written (netfilter programs only read)", 3) end
end

local function getter(n, signed)
  local bits = 8 * n
  return function(self, o)
    o = integer(o, "the offset")
    check(self, o, n)
    local b, v = self.b, 0
    for i = n, 1, -1 do v = (v << 8) | b[o + i] end
    if signed and n < 8 and v >= 1 << (bits - 1) then v = v - (1 << bits) end
    return v
  end
end

local function setter(n)
  return function(self, o, v)
    writable(self)
    o = integer(o, "the offset")
    v = integer(v, "the value")
    check(self, o, n)
    local b = self.b
    for i = 1, n do
      b[o + i] = v & 0xff
      v = v >> 8
    end
  end
end

Packet.getbyte = getter(1, false)
Packet.getuint8 = Packet.getbyte
Packet.getint8 = getter(1, true)
Packet.getuint16 = getter(2, false)
Packet.getint16 = getter(2, true)
Packet.getuint32 = getter(4, false)
Packet.getint32 = getter(4, true)
Packet.getint64 = getter(8, true)
Packet.getnumber = Packet.getint64
Packet.setbyte = setter(1)
Packet.setuint8 = Packet.setbyte
Packet.setint8 = Packet.setbyte
Packet.setuint16 = setter(2)
Packet.setint16 = Packet.setuint16
Packet.setuint32 = setter(4)
Packet.setint32 = Packet.setuint32
Packet.setint64 = setter(8)
Packet.setnumber = Packet.setint64

-- `n` bytes at `o` as a string; n from 0 to 255 (a length of 0 reads nothing, wherever).
function Packet:getstring(o, n)
  o = integer(o, "the offset")
  n = integer(n, "the length")
  if n < 0 or n > 255 then fail("getstring length " .. n .. " is not between 0 and 255") end
  if n == 0 then return "" end
  check(self, o, n)
  return string.char(table.unpack(self.b, o + 1, o + n))
end

function Packet:setstring(o, s)
  writable(self)
  o = integer(o, "the offset")
  if type(s) ~= "string" then error("setstring expects a string", 2) end
  local n = #s
  if n == 0 then return end
  if n > 255 then fail("setstring of " .. n .. " bytes: strings hold at most 255") end
  check(self, o, n)
  local b = self.b
  for i = 1, n do b[o + i] = s:byte(i) end
end

return Packet
