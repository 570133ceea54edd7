-- Runs the stdlib probe programs (tests/tests/stdlib.rs) under plain Lua 5.4 with the shim.
--
--     lua5.4 run_probes.lua STDLIB_DIR PROBE_PROGRAM CASES
--
-- CASES has one line per case: the probe's name, its number of result slots, the packet in
-- hex. Prints one line per case: "V" and the slots' values (the probe finished), "E" (a
-- runtime error: the default verdict) or "S" (the probe does not apply).

local stdlib, program, cases = arg[1], arg[2], arg[3]
package.path = stdlib .. "/shim/?.lua;" .. stdlib .. "/?.lua;" .. package.path

local shim = require "luabpf.shim"
local maps = require "luabpf.maps"

local FINISHED, ERROR, SKIPPED = 3, 2, 4

local by_name = {}
for _, prog in ipairs(dofile(program)) do by_name[prog.name] = prog end
local out
for _, m in ipairs(maps.registry) do
  if maps.info(m) == "out" then out = m end
end
assert(out, "the probe program declares no map `out`")

for line in io.lines(cases) do
  local name, slots, hex = line:match("^(%S+) (%d+) (%x*)$")
  local bytes = hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  local verdict = shim.run(assert(by_name[name], name), bytes)
  if verdict == FINISHED then
    local values = {}
    for k = 0, tonumber(slots) - 1 do values[#values + 1] = string.format("%d", maps.get(out, k)) end
    print("V " .. table.concat(values, " "))
  elseif verdict == ERROR then
    print("E")
  elseif verdict == SKIPPED then
    print("S")
  else
    print("? " .. tostring(verdict))
  end
end
