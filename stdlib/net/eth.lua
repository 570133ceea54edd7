-- net.eth: Ethernet II headers (and 802.1Q VLAN tags).
-- Written in the luabpf subset; also runs under plain Lua 5.4 with a `data` shim.

local byteorder = require "linux.byteorder"
local ntoh16 = byteorder.ntoh16

local M = {}

M.HEADER_LEN = 14
M.IPV4 = 0x0800
M.IPV6 = 0x86DD
M.VLAN = 0x8100

-- The EtherType of the frame (bytes 12-13), in host order.
function M.ethertype(packet)
  return ntoh16(packet:getuint16(12))
end

-- The offset of the network header: after the Ethernet header and one VLAN tag if present.
function M.payload_offset(packet)
  if M.ethertype(packet) == M.VLAN then
    return M.HEADER_LEN + 4
  end
  return M.HEADER_LEN
end

return M
