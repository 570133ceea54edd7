-- linux.byteorder: network <-> host order on a little-endian host. The 16- and 32-bit forms
-- use the low bits of their argument and return a non-negative result.
local pack, unpack = string.pack, string.unpack

local function swap16(x) return (unpack(">I2", pack("<I2", x & 0xffff))) end
local function swap32(x) return (unpack(">I4", pack("<I4", x & 0xffffffff))) end
local function swap64(x) return (unpack(">i8", pack("<i8", x))) end

return {
  ntoh16 = swap16, hton16 = swap16,
  ntoh32 = swap32, hton32 = swap32,
  ntoh64 = swap64, hton64 = swap64,
}
