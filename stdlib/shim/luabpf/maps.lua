-- luabpf.maps: maps as tables that keep their declared formats, as the kernel's maps do.
--
-- `m[k]` is the value or nil; `m[k] = v` stores, `m[k] = nil` deletes. Keys are kept as the
-- bytes the kernel would hash (so "ab" and "ab\0" are one `c4` key); values are kept as
-- reading them back gives them: integers wrapped to their format, `cN` strings without
-- trailing zero bytes, records as tables of such fields (a lookup returns the record in
-- place: `v.hits = v.hits + 1` updates the map). A key that does not fit its format is never
-- found, and storing it is a runtime error; so is storing a string longer than its `cN`
-- field, and inserting into a full hash map. Arrays hold every index from 0 to entries - 1
-- (zero at first) and cannot be deleted from. Per-CPU maps behave as one CPU's copy. An LRU
-- hash evicts its least recently used key when full (the kernel's LRU is approximate: with
-- a full LRU map, which key goes may differ).

local M = {}

-- Raises a runtime error (the program takes its default verdict).
M.fail = function(message) return require("luabpf.shim").fail(message) end

-- Every map declared so far, in declaration order (the order of the object's maps).
M.registry = {}

local info = setmetatable({}, { __mode = "k" })

local INT = {
  i1 = { 1, true }, I1 = { 1, false }, b = { 1, true }, B = { 1, false },
  i2 = { 2, true }, I2 = { 2, false }, h = { 2, true }, H = { 2, false },
  i4 = { 4, true }, I4 = { 4, false }, i = { 4, true }, I = { 4, false },
  i8 = { 8, true }, I8 = { 8, false }, j = { 8, true }, J = { 8, false },
}

-- A format: { kind = "int", bytes, signed } | { kind = "chars", n } | { kind = "record",
-- fields = { name = format }, names = sorted names }.
local function parse_format(f)
  if type(f) == "string" then
    local t = f:match("^%s*(.-)%s*$")
    local int = INT[t]
    if int then return { kind = "int", bytes = int[1], signed = int[2] } end
    local n = t:match("^c(%d+)$")
    if n and tonumber(n) >= 1 and tonumber(n) <= 65535 then return { kind = "chars", n = tonumber(n) } end
  elseif type(f) == "table" then
    local fields, names = {}, {}
    for name, sub in pairs(f) do
      if type(name) ~= "string" then error("a record format's fields must be named", 4) end
      fields[name] = parse_format(sub)
      names[#names + 1] = name
    end
    if #names == 0 then error("a record format needs at least one field", 4) end
    table.sort(names)
    return { kind = "record", fields = fields, names = names }
  end
  error("unknown map format `" .. tostring(f) .. "`", 4)
end
M.parse_format = parse_format

local function int_range(bytes, signed)
  if bytes == 8 then return math.mininteger, math.maxinteger end
  local bits = 8 * bytes
  if signed then return -(1 << (bits - 1)), (1 << (bits - 1)) - 1 end
  return 0, (1 << bits) - 1
end

-- The key's bytes, or nil when the key cannot be represented (never found).
local function encode_key(format, k)
  if format.kind == "int" then
    local i = math.tointeger(k)
    if i == nil then return nil end
    local lo, hi = int_range(format.bytes, format.signed)
    if i < lo or i > hi then return nil end
    return string.pack("<i8", i):sub(1, format.bytes)
  elseif format.kind == "chars" then
    if type(k) ~= "string" or #k > format.n then return nil end
    return k .. string.rep("\0", format.n - #k)
  end
  error("record keys are not supported", 3)
end
M.encode_key = encode_key

local function zero(format)
  if format.kind == "int" then return 0 end
  if format.kind == "chars" then return "" end
  local r = {}
  for _, name in ipairs(format.names) do r[name] = zero(format.fields[name]) end
  return r
end

-- A value as the map keeps it (what reading it back gives).
local function normalize(format, v)
  if format.kind == "int" then
    if v == true or v == false then v = v and 1 or 0 end
    local i = math.tointeger(v)
    if i == nil then error("a map value of format " .. (format.signed and "i" or "I") .. format.bytes .. " must be an integer, got " .. tostring(v), 4) end
    if format.bytes == 8 then return i end
    local bits = 8 * format.bytes
    i = i & ((1 << bits) - 1)
    if format.signed and i >= 1 << (bits - 1) then i = i - (1 << bits) end
    return i
  elseif format.kind == "chars" then
    if type(v) ~= "string" then error("a c" .. format.n .. " map value must be a string", 4) end
    if #v > format.n then M.fail(string.format("a %d-byte string does not fit c%d", #v, format.n)) end
    return (v:gsub("\0+$", ""))
  end
  if type(v) ~= "table" then error("a record map value must be a table of fields", 4) end
  local r = {}
  for _, name in ipairs(format.names) do
    local fv = v[name]
    r[name] = fv == nil and zero(format.fields[name]) or normalize(format.fields[name], fv)
  end
  return r
end

-- A record in place: reads and writes go to the map's copy.
local function record_proxy(format, rec)
  return setmetatable({}, {
    __index = function(_, name)
      if format.fields[name] == nil then error("the record has no field `" .. tostring(name) .. "`", 2) end
      local v = rec[name]
      if type(v) == "table" then return record_proxy(format.fields[name], v) end
      return v
    end,
    __newindex = function(_, name, v)
      local f = format.fields[name]
      if f == nil then error("the record has no field `" .. tostring(name) .. "`", 2) end
      rec[name] = normalize(f, v)
    end,
    __luabpf_record = rec,
  })
end

-- A record proxy's fields (for `m[k] = other_record`).
local function plain(v)
  local mt = getmetatable(v)
  if type(mt) == "table" and mt.__luabpf_record then return mt.__luabpf_record end
  return v
end

local function touch(d, kb)
  d.clock = d.clock + 1
  d.used[kb] = d.clock
end

local function array_index(d, kb)
  local i = string.unpack("<I4", kb)
  if i < d.entries then return i end
  return nil
end

local function lookup(m, k)
  local d = info[m]
  local kb = encode_key(d.key, k)
  if kb == nil then return nil end
  local v = d.store[kb]
  if d.array then
    if array_index(d, kb) == nil then return nil end
    if v == nil then
      v = zero(d.value)
      d.store[kb] = v
    end
  end
  if v == nil then return nil end
  touch(d, kb)
  if type(v) == "table" then return record_proxy(d.value, v) end
  return v
end

local function evict(d)
  local victim, oldest
  for kb in pairs(d.store) do
    local t = d.used[kb] or 0
    if oldest == nil or t < oldest or (t == oldest and kb < victim) then victim, oldest = kb, t end
  end
  d.store[victim] = nil
  d.used[victim] = nil
  d.count = d.count - 1
end

local function store(m, k, v)
  local d = info[m]
  if v == nil then
    local kb = encode_key(d.key, k)
    -- Deleting from an array fails in the kernel, and the compiled code ignores it.
    if kb == nil or d.array then return end
    if d.store[kb] ~= nil then
      d.store[kb] = nil
      d.used[kb] = nil
      d.count = d.count - 1
    end
    return
  end
  -- The value first, as the compiled code does.
  local value = normalize(d.value, plain(v))
  local kb = encode_key(d.key, k)
  if kb == nil then M.fail("the key " .. tostring(k) .. " does not fit the map's key format") end
  local old = d.store[kb]
  if d.array then
    if array_index(d, kb) == nil then M.fail("index " .. tostring(k) .. " is outside the array") end
  elseif old == nil then
    if d.count >= d.entries then
      if d.lru then evict(d) else M.fail("the map is full (" .. d.entries .. " entries)") end
    end
    d.count = d.count + 1
  end
  if type(old) == "table" and type(value) == "table" then
    -- Update in place: a record looked up earlier sees the new fields.
    for name, fv in pairs(value) do old[name] = fv end
  else
    d.store[kb] = value
  end
  touch(d, kb)
end

local Map = {
  __index = lookup,
  __newindex = store,
  __len = function() error("`#` is not defined on a map", 2) end,
  __pairs = function() error("maps cannot be iterated in a program", 2) end,
  __tostring = function(m) return "map " .. info[m].name end,
}

local ARRAYS = { array = true, percpu_array = true }

-- `map.<kind>(name, spec)` or `map.<kind>(spec)`.
function M.new(kind, name, spec)
  if type(name) == "table" and spec == nil then name, spec = name.name, name end
  if type(spec) ~= "table" then error("map." .. kind .. " expects an options table", 3) end
  local key = spec.key
  if key == nil and ARRAYS[kind] then key = "I4" end
  if key == nil then error("map." .. kind .. " needs a `key` format", 3) end
  if spec.value == nil then error("map." .. kind .. " needs a `value` format", 3) end
  local entries = math.tointeger(spec.entries)
  if entries == nil or entries < 1 then error("map." .. kind .. " needs `entries`, a positive integer", 3) end
  local m = setmetatable({}, Map)
  local d = {
    name = name or ("map" .. (#M.registry + 1)),
    kind = kind,
    key = parse_format(key),
    value = parse_format(spec.value),
    entries = entries,
    array = ARRAYS[kind] == true,
    lru = kind == "lru_hash",
    store = {},
    used = {},
    count = 0,
    clock = 0,
  }
  if d.array and not (d.key.kind == "int" and d.key.bytes == 4) then
    error("the key of an array map must be a 4-byte integer", 3)
  end
  info[m] = d
  M.registry[#M.registry + 1] = m
  return m
end

-- name, kind, entries of a map.
function M.info(m)
  local d = info[m]
  return d.name, d.kind, d.entries
end

-- Renames a map (the reference engine gives maps the names the compiler gave them).
function M.rename(m, name) info[m].name = name end

-- Every entry as { key bytes, value } (records as plain tables), sorted by key bytes. An
-- array lists every index.
function M.entries(m)
  local d = info[m]
  local out = {}
  if d.array then
    for i = 0, d.entries - 1 do
      local kb = string.pack("<I4", i)
      local v = d.store[kb]
      if v == nil then v = zero(d.value) end
      out[#out + 1] = { kb, v }
    end
    return out
  end
  for kb, v in pairs(d.store) do out[#out + 1] = { kb, v } end
  table.sort(out, function(a, b) return a[1] < b[1] end)
  return out
end

-- `m[k]` and `m[k] = v` from the host (a test, the reference engine's seeds).
function M.get(m, k) return lookup(m, k) end
function M.set(m, k, v) return store(m, k, v) end

return M
