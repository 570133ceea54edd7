local xdp = require "bpf.xdp"
local function count(ctx, n)
  local p = ctx:packet()
  local s = p:getstring(20, p:getbyte(n))
  local c = 0
  for i = 1, #s do
    c = c + (s:byte(i) or 0)
  end
  return c
end
local function filter(ctx)
  local p = ctx:packet()
  local t = p:getstring(14, p:getbyte(13))
  local total = 0
  for k = 0, p:getbyte(12) do
    total = total + count(ctx, k & 7)
  end
  if t == "abc" then return 1 end
  return 2 + (total & 1)
end
return xdp.program(filter, { name = "t", default = 1 })
