-- cookie_guard.lua: only clients that present the cookie the web server issued them may
-- talk to the web port; others are dropped and remembered, at the XDP hook.
--
-- The web server writes each client's cookie into `cookies` (key: the client's IPv4
-- address as the kernel stores it, value: the cookie text):
--
--     luabpf map set cookie_guard cookies 0x0100000a "s3cr3t"
--
-- A request to port 80 whose "Cookie: bot=" value is not that client's cookie is dropped,
-- and its source lands in `blocked`, which is consulted first on every packet.

local xdp    = require "bpf.xdp"
local map    = require "bpf.map"
local action = require "linux.xdp"
local bo     = require "linux.byteorder"
local bpf    = require "bpf"

local cookies = map.lru_hash("cookies", { key = "I4", value = "c32", entries = 65536 })
-- Blocked source -> when it was blocked (bpf.ktime(), nanoseconds since boot).
local blocked = map.lru_hash("blocked", { key = "I4", value = "I8", entries = 65536 })

local WEB_PORT <const> = 80
local PREFIX = "\r\nCookie: bot="
local P1 <const> = string.unpack("<i8", PREFIX, 1)
local P2 <const> = string.unpack("<I4", PREFIX, 9)
local P3 <const> = string.unpack("<I2", PREFIX, 13)
local SCAN <const> = 512
local MAX_COOKIE <const> = 32

-- 1 when a tag type as getuint16 reads it (bytes swapped) is 802.1Q (0x8100) or 802.1ad
-- (0x88A8), else 0, without a branch.
local function is_tag(raw)
  return (((raw ~ 0x0081) - 1) >> 63) | (((raw ~ 0xA888) - 1) >> 63)
end

-- The length of the cookie value at `value`: up to ";" or the end of the line. Called in
-- the scan loop, it is compiled as a BPF function that the verifier checks once, which the
-- compiler starts with the bound of `value` the call gives: each byte costs one packet test
-- (docs/language.md, section 5).
local function cookie_length(p, value)
  local n = 0
  while n <= MAX_COOKIE do
    local at = value + n
    if at + 1 > #p then break end
    local c = p:getbyte(at)
    if c == 13 or c == 59 then break end
    n = n + 1
  end
  return n
end

local function guard(ctx)
  local p = ctx:packet()
  local tags = is_tag(p:getuint16(12))
  tags = tags + is_tag(p:getuint16(12 + tags * 4))
  local ip = 14 + tags * 4
  if p:getuint16(ip - 2) ~= 0x0008 then return action.PASS end   -- ETH_P_IP, bytes swapped
  local saddr = p:getuint32(ip + 12)          -- host order of the network bytes: a map key
  if blocked[saddr] then return action.DROP end
  local b = p:getbyte(ip)
  if b < 0x45 or b > 0x4f then return action.PASS end           -- version 4, IHL >= 5
  if p:getuint16(ip + 6) & 0xff1f ~= 0 then return action.PASS end  -- a later fragment
  if p:getbyte(ip + 9) ~= 6 then return action.PASS end
  local tcp = ip + (b & 0x0f) * 4
  if bo.ntoh16(p:getuint16(tcp + 2)) ~= WEB_PORT then return action.PASS end
  local data_offset = (p:getbyte(tcp + 12) >> 4) * 4
  if data_offset < 20 then return action.PASS end
  local payload = tcp + data_offset
  local len = #p
  if payload >= len then return action.PASS end   -- handshake and pure ACKs pass
  local expected = cookies[saddr]
  for i = 0, SCAN - 1 do
    local at = payload + i
    if at + #PREFIX > len then break end
    if p:getint64(at) == P1 and p:getuint32(at + 8) == P2 and p:getuint16(at + 12) == P3 then
      local value = at + #PREFIX
      if expected and p:getstring(value, cookie_length(p, value)) == expected then
        return action.PASS
      end
      break
    end
  end
  blocked[saddr] = bpf.ktime()
  return action.DROP
end

return xdp.program(guard, { name = "cookie_guard" })
