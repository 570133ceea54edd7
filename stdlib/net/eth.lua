--- Ethernet II frames, with 802.1Q (VLAN) and 802.1ad (QinQ) tags.
--
-- For XDP and tc programs, whose packet starts at the Ethernet header. Like every `net.*`
-- module, a function returns nil when the frame is not what it parses; reading past the end
-- of the packet is a runtime error (the program's default verdict), as in your own code.
-- @module net.eth

local ntoh16 = require("linux.byteorder").ntoh16

local M = {}

-- 1 for a VLAN tag's type (0x8100, 0x88A8) as `getuint16` reads it (bytes swapped: 0x0081,
-- 0xA888), else 0, computed without a branch.
local function is_tag(raw)
  return (((raw ~ 0x0081) - 1) >> 63) | (((raw ~ 0xA888) - 1) >> 63)
end

-- The offset of the network header after at most two tags, and its EtherType as read (bytes
-- swapped). Without branches: the verifier follows one path whatever the number of tags,
-- instead of one per number. An untagged frame reads bytes 12-13 three times.
local function walk(p)
  local tags = is_tag(p:getuint16(12))
  tags = tags + is_tag(p:getuint16(12 + tags * 4))
  local off = 14 + tags * 4
  return off, p:getuint16(off - 2)
end

--- Length of the Ethernet header without tags.
M.HEADER_LEN = 14
--- Length of one VLAN tag.
M.TAG_LEN = 4
--- EtherTypes.
M.IPV4 = 0x0800
M.IPV6 = 0x86DD
M.ARP = 0x0806
M.VLAN = 0x8100
M.QINQ = 0x88A8

--- The frame's own EtherType (bytes 12-13, host order), before any tag.
-- @param p the packet
-- @treturn integer
function M.ethertype(p)
  return ntoh16(p:getuint16(12))
end

--- Where the network header starts, after at most two VLAN tags (802.1Q `0x8100` or
-- 802.1ad `0x88A8`), and the EtherType that announces it.
-- A frame with three or more tags gives the offset after two and the third tag's type.
-- @param p the packet
-- @treturn integer offset of the network header (14, 18 or 22)
-- @treturn integer its EtherType, host order
function M.payload(p)
  local off, raw = walk(p)
  return off, ntoh16(raw)
end

--- The offset of the IPv4 header, or nil if the frame (after its VLAN tags) is not IPv4.
-- @param p the packet
-- @treturn integer|nil
function M.ipv4(p)
  local off, raw = walk(p)
  if raw ~= 0x0008 then return nil end
  return off
end

--- The offset of the IPv6 header, or nil if the frame (after its VLAN tags) is not IPv6.
-- @param p the packet
-- @treturn integer|nil
function M.ipv6(p)
  local off, raw = walk(p)
  if raw ~= 0xDD86 then return nil end
  return off
end

--- The VLAN ID (12 bits) of the outer tag, or nil for an untagged frame.
-- @param p the packet
-- @treturn integer|nil
function M.vlan_id(p)
  local t = ntoh16(p:getuint16(12))
  if t ~= 0x8100 and t ~= 0x88A8 then return nil end
  return ntoh16(p:getuint16(14)) & 0x0fff
end

--- The VLAN ID of the inner tag of a double-tagged (QinQ) frame, or nil.
-- @param p the packet
-- @treturn integer|nil
function M.inner_vlan_id(p)
  local t = ntoh16(p:getuint16(12))
  if t ~= 0x8100 and t ~= 0x88A8 then return nil end
  t = ntoh16(p:getuint16(16))
  if t ~= 0x8100 and t ~= 0x88A8 then return nil end
  return ntoh16(p:getuint16(18)) & 0x0fff
end

--- The destination MAC address: a 6-byte string.
-- @param p the packet
-- @treturn string
function M.dst(p)
  return p:getstring(0, 6)
end

--- The source MAC address: a 6-byte string.
-- @param p the packet
-- @treturn string
function M.src(p)
  return p:getstring(6, 6)
end

return M
