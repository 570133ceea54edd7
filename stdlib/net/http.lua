--- HTTP/1.x requests: method, path, header values.
--
-- Functions take the offset `off` where the request starts (the TCP payload,
-- `tcp.payload(p, t)`) and accept a nil `off` (then return nil). Results are offsets and
-- lengths: `p:getstring(at, len)` makes the string.
-- @module net.http

local M = {}

--- Bytes of a request `header` finders scan for the header line.
M.SCAN = 512

--- The request method: its offset (`off`) and length, when the request starts with 1 to 7
-- capital letters and a space (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH),
-- or nil, 0.
-- @tparam integer|nil off offset of the request
-- @treturn integer|nil offset of the method
-- @treturn integer its length
function M.method(p, off)
  if not off then return nil, 0 end
  for i = 0, 7 do
    local b = p:getbyte(off + i)
    if b == 32 then
      if i == 0 then return nil, 0 end
      return off, i
    end
    if b < 65 or b > 90 then return nil, 0 end
  end
  return nil, 0
end

--- The request target ("/index.html"): its offset and length, up to the next space, or nil,
-- 0 when the request has no method (see `method`) or the target is empty or longer than 255
-- bytes.
-- @tparam integer|nil off offset of the request
-- @treturn integer|nil offset of the path
-- @treturn integer its length
function M.path(p, off)
  local at, n = M.method(p, off)
  if not at then return nil, 0 end
  local start = at + n + 1
  for i = 0, 255 do
    if p:getbyte(start + i) == 32 then
      if i == 0 then return nil, 0 end
      return start, i
    end
  end
  return nil, 0
end

-- The bytes of `s` from `i` (1-based) as a little-endian integer of `size` bytes, as
-- `getint64`/`getuint32` read them.
local function word(s, i, size)
  if size == 8 then return (string.unpack("<i8", s, i)) end
  return (string.unpack("<I4", s, i))
end

--- Makes a finder for the header `name` (called in the body, at compile time):
-- `local user_agent = http.header("User-Agent")`, then in a compiled function
-- `local at, len = user_agent(p, off)`.
--
-- The finder scans the first `SCAN` bytes of the request for a line "`name`: " (the name in
-- any case, one space after the colon) and returns the offset of the value and its length:
-- up to the "\r" that ends the line or the end of the packet, at most `max` bytes. nil, 0
-- when there is no such line. Each position costs one 8-byte compare ("\r\n" and the start
-- of the name); the rest of the name is compared only where that matched.
-- @tparam string name the header name, 2 to 28 bytes
-- @tparam[opt=255] integer max the longest value length returned
-- @treturn function `finder(p, off)` returning offset and length, or nil, 0
function M.header(name, max)
  max = max or 255
  -- Errors name the caller's line (level 2): that is where the mistake is.
  if type(name) ~= "string" or #name < 2 or #name > 28 then
    error("http.header: the header name must be a string of 2 to 28 bytes", 2)
  end
  if math.type(max) ~= "integer" or max < 0 or max > 255 then
    error("http.header: `max` must be an integer from 0 to 255", 2)
  end
  -- The line's start, lower case; the mask sets the case bit of letters.
  local rest = "\r\n" .. name:lower() .. ": "
  local mask = rest:gsub(".", function(c) return c:match("%a") and "\32" or "\0" end)
  local R = #rest
  local size = R >= 8 and 8 or 4
  -- Up to four words cover `rest` (the last one ends at its end).
  local offsets = {}
  for o = 0, R - size, size do offsets[#offsets + 1] = o end
  if offsets[#offsets] ~= R - size then offsets[#offsets + 1] = R - size end
  local words = #offsets
  for k = #offsets + 1, 4 do offsets[k] = offsets[1] end
  local L <const> = R
  local MAX <const> = max
  local SCAN <const> = M.SCAN
  local O1 <const>, O2 <const>, O3 <const>, O4 <const> = offsets[1], offsets[2], offsets[3], offsets[4]
  local W1 <const>, W2 <const> = word(rest, O1 + 1, size), word(rest, O2 + 1, size)
  local W3 <const>, W4 <const> = word(rest, O3 + 1, size), word(rest, O4 + 1, size)
  local M1 <const>, M2 <const> = word(mask, O1 + 1, size), word(mask, O2 + 1, size)
  local M3 <const>, M4 <const> = word(mask, O3 + 1, size), word(mask, O4 + 1, size)

  -- The value's length: up to "\r" or the end of the packet, at most MAX. A function with a
  -- loop called in the scan loop: a BPF function the verifier checks once. The compiler
  -- bounds `value` at its start with what the calls pass, so each byte costs one packet
  -- test, `at + 1 > #p`, which is also the bound of the read.
  local function value_length(p, value)
    local n = 0
    while n < MAX do
      local at = value + n
      if at + 1 > #p or p:getbyte(at) == 13 then break end
      n = n + 1
    end
    return n
  end

  -- Whether the words at `at` match, for each number of words (the body picks the one the
  -- name needs, so that the compiled test has no branch it does not need).
  local function wide1(p, at)
    return (p:getint64(at + O1) | M1) == W1
  end
  local function wide2(p, at)
    return (p:getint64(at + O1) | M1) == W1 and (p:getint64(at + O2) | M2) == W2
  end
  -- Past two words, the later ones are compared in one test (their differences or-ed):
  -- the verifier follows at most three branches per position, whatever the name's length.
  local function wide3(p, at)
    return (p:getint64(at + O1) | M1) == W1
      and (((p:getint64(at + O2) | M2) ~ W2) | ((p:getint64(at + O3) | M3) ~ W3)) == 0
  end
  local function wide4(p, at)
    return (p:getint64(at + O1) | M1) == W1
      and (((p:getint64(at + O2) | M2) ~ W2) | ((p:getint64(at + O3) | M3) ~ W3)
        | ((p:getint64(at + O4) | M4) ~ W4)) == 0
  end
  local function narrow2(p, at)
    return (p:getuint32(at + O1) | M1) == W1 and (p:getuint32(at + O2) | M2) == W2
  end
  local matches = size == 4 and narrow2 or ({ wide1, wide2, wide3, wide4 })[words]

  local function find(p, off)
    if not off then return nil, 0 end
    local len = #p
    for i = 0, SCAN - 1 do
      local at = off + i
      if at + L > len then break end
      if matches(p, at) then
        local value = at + L
        return value, value_length(p, value)
      end
    end
    return nil, 0
  end
  return find
end

return M
