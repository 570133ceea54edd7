-- ua_filter.lua: drop HTTP requests from blocked User-Agents, at the XDP hook.
--
-- Scans the first 512 bytes of an HTTP request's headers for a line starting with
-- "User-Agent: " (in any case), takes the value up to the end of the line, and drops the packet when the
-- value is in the `blocked_agents` map:
--
--     luabpf map set ua_filter blocked_agents "EvilBot/1.0" 0

local xdp    = require "bpf.xdp"
local map    = require "bpf.map"
local action = require "linux.xdp"

local blocked_agents = map.hash("blocked_agents", { key = "c64", value = "I8", entries = 1024 })

-- Computed at compile time: "\r\nuser-agent: " read with two 8-byte loads (at 0 and 6),
-- each or-ed with a mask that sets the case bit of the letters, so that the header name
-- matches in any case (as HTTP wants), in host byte order.
local HEADER = "\r\nuser-agent: "
local MASK   = HEADER:gsub(".", function(c) return c:match("%a") and "\32" or "\0" end)
local WORD1  <const> = string.unpack("<i8", HEADER, 1)
local WORD2  <const> = string.unpack("<i8", HEADER, 7)
local MASK1  <const> = string.unpack("<i8", MASK, 1)
local MASK2  <const> = string.unpack("<i8", MASK, 7)
local VALUE_SKIP <const> = #HEADER
local SCAN   <const> = 512
local MAX_UA <const> = 64

-- 1 when a tag type as getuint16 reads it (bytes swapped) is 802.1Q (0x8100) or 802.1ad
-- (0x88A8), else 0, without a branch.
local function is_tag(raw)
  return (((raw ~ 0x0081) - 1) >> 63) | (((raw ~ 0xA888) - 1) >> 63)
end

-- Offset of the TCP payload in an Ethernet (up to two VLAN tags) / IPv4 (version 4, IHL >= 5,
-- options, not a later fragment) / TCP (data offset >= 5) packet, or nil if it is not one.
local function payload_offset(p)
  local tags = is_tag(p:getuint16(12))
  tags = tags + is_tag(p:getuint16(12 + tags * 4))
  local ip = 14 + tags * 4
  if p:getuint16(ip - 2) ~= 0x0008 then return nil end      -- ETH_P_IP, bytes swapped
  local b = p:getbyte(ip)
  if b < 0x45 or b > 0x4f then return nil end
  if p:getuint16(ip + 6) & 0xff1f ~= 0 then return nil end  -- fragment offset, as read
  if p:getbyte(ip + 9) ~= 6 then return nil end
  local tcp = ip + (b & 0x0f) * 4
  local data_offset = (p:getbyte(tcp + 12) >> 4) * 4
  if data_offset < 20 then return nil end
  return tcp + data_offset
end

-- The length of the header value that starts at `value`: up to the "\r" ending the line.
-- A function with a loop, called inside the scan loop: luabpf compiles it as a BPF function
-- of its own, which the verifier checks once instead of once per scanned byte, and which
-- the compiler starts with the bound of `value` the call gives: each byte costs one packet
-- test (docs/language.md, section 5).
local function value_length(p, value)
  local n = 0
  while n < MAX_UA do
    local at = value + n
    if at + 1 > #p or p:getbyte(at) == 13 then break end
    n = n + 1
  end
  return n
end

local function filter(ctx)
  local p = ctx:packet()
  local start = payload_offset(p)
  if not start then return action.PASS end
  local len = #p
  for i = 0, SCAN - 1 do
    local at = start + i
    if at + VALUE_SKIP > len then break end
    if (p:getint64(at) | MASK1) == WORD1 and (p:getint64(at + 6) | MASK2) == WORD2 then
      -- The value runs to the next "\r".
      local value = at + VALUE_SKIP
      local agent = p:getstring(value, value_length(p, value))
      if blocked_agents[agent] then
        blocked_agents[agent] = (blocked_agents[agent] or 0) + 1
        return action.DROP
      end
      return action.PASS
    end
  end
  return action.PASS
end

return xdp.program(filter, { name = "ua_filter" })
