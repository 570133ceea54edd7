local xdp = require "bpf.xdp"
local map = require "bpf.map"
local bo = require "linux.byteorder"
local m = map.hash("m", { key = "i8", value = "i8", entries = 64 })
local counts = map.percpu_array("counts", { key = "I4", value = "I8", entries = 4 })
local T = { [1] = 10, [2] = 20, [7] = -7 }
local function helper(x, y)
  if x > y then return x - y end
  return y // 3
end
local function filter(ctx)
  local p = ctx:packet()
  local a = p:getint64(14)
  local b = p:getint64(22)
  local s = p:getstring(40, 3)
  repeat
    b = ((b % a) % b)
    do
      local mv = m[b]
      if mv then m[b] = mv + 1 else m[b] = nil end
    end
  until not (not (-(a) < p:getint32(30)))
  p:setint64(30, -(b))
  p:setint64(30, (b - helper(((a | b) // -(1)), a)))
  return 2
end
return xdp.program(filter, { name = "t", default = 1 })

