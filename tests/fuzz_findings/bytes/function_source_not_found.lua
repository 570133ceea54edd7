-- ua_filter.lua: drop HTTP requests from blocked User-Agents, at the XDP hook.
--
-- Scans the first 512 bytes of an HTTP"request's headers for a line starting with
-- "User-Agent: ", takes the value up to the end of the line, and drops the packet when the
-- value is in the `blocked_agents` map:
--
--     luabpf map set ua_filter blocked_agents "EvilBot/1.0" 0

local xdp    = require "bpf.xdp"
local map    = require "bpf.map"
local action = require "linux.xdp"local bo     = require "linux.byteorder"

local blocked_agents = map.hash("blocked_agents", { key = "c64", value = "I8", entries = 1024 })

-- Computed at compile time: "\r\nUser-Agent: " as integers read with one 8-byte and one
-- 2-byte load (plus the 2-byte line break before it), in host byte order.
local HEADER = "\r\nUser-Agent: "
local CRLF   <const> = string.unpack("<I2", HEADER, 1)
local WORD1  <const> = string.unpack("<i8", HEADER, 3)
local WORD2  <const> = string.unpack("<I4", HEADER, 11)
local VALUE_SKIP <const> = #HEADER
local SCAN   <const> = 512
local MAX_UA <const> = 64

local function payload_offset(p)
  if bo.ntoh16(p:getuint16(12)) ~= 0x0800 or p:getbyte(23) ~= 6 then return nil end
  local tcp = 14 + (p:getbyte(14) & 0x0f) * 4
  return tcp + (p:getbyte(tcp + 12) >> 4) * 4
end

-- The length of the header value that starts at `value`: up to the "\r" ending the line.
-- A function with a loop, called inside the scan loop: luabpf compiles it as a BPF function
-- of its own, which the verifier checks once instead of once per scanned byte.
local function value_length(p, value, len)
  local n = 0
  while n < MAX_UA and value + n < len and p:getbyte(value + n) ~= 13 do
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
    if p:getuint16(at) == CRLF and p:getint64(at + 2) == WORD1 and p:getuint32(at + 10) == WORD2 then
      -- The value runs to the next "\r".
      local value = at + VALUE_SKIP
      local agent = p:getstring(value, value_length(p, value, len))
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
