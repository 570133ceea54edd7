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
local bpf    = require "bpf"
local eth, ipv4, tcp = require "net.eth", require "net.ipv4", require "net.tcp"

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

-- The length of the cookie value at `value`: up to ";" or the end of the line. Called in
-- the scan loop, it is compiled as a BPF function that the verifier checks once, knowing
-- nothing of `value`. (The scan is written here rather than with `http.header`: the cookie
-- check belongs inside the loop, where the verifier sees it once, not after it, where it
-- would see it once per position.) The compiler bounds `value` at the function's start with
-- what the call passes: each byte costs one packet test, which is also the bound of the read.
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
  local ip = eth.ipv4(p)
  if not ip then return action.PASS end
  local saddr = ipv4.src(p, ip)               -- host order of the network bytes: a map key
  if blocked[saddr] then return action.DROP end
  local t = ipv4.tcp(p, ip)
  if not t or tcp.dst_port(p, t) ~= WEB_PORT then return action.PASS end
  local payload = tcp.payload(p, t)
  local len = #p
  if not payload or payload >= len then return action.PASS end   -- handshake and pure ACKs pass
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
