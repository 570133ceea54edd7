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
  do
    local mv = m[((helper(a, (m[b] or 0)) // helper(b, (m[a] or 0))) - (s:byte(-(((T[b] or 2) % b))) or 0))]
    if mv then m[((helper(a, (m[b] or 0)) // helper(b, (m[a] or 0))) - (s:byte(-(((T[b] or 2) % b))) or 0))] = mv + 1 else m[((helper(a, (m[b] or 0)) // helper(b, (m[a] or 0))) - (s:byte(-(((T[b] or 2) % b))) or 0))] = nil end
  end
  m[((s:byte(helper((T[b] or 1), (m[b] or 0))) or 0) ~ p:getbyte(17))] = ((b // bo.ntoh16((p:getint64(34) | (T[b] or 4)))) >> #p)
  counts[0] = (counts[0] or 0) + (((b == (m[b] or 0)) and a or (((s == "\0") and a or (m[a] or 0)) + (b * (m[b] or 0)))) % bo.ntoh16(((((not (-1 ~= a)) and ((not (b < b)) or (#p <= #p))) and 0x7fffffffffffffff or #p) << a)))
  p:setuint32(21, p:getint8(32))
  p:setint16((b & 31) + 14, (((a < (b // a)) and ((0 << a) | ((m[b] or 0) >> b)) or ((((s == "hello") and (s == "hello")) or (b >= p:getbyte(((T[a] or 3) & 31) + 14))) and (T[a] or 3) or helper(a, b))) + a))
  p:setint64(30, a)
  if helper(((not (p:getbyte(40) == b)) and (p:getuint32((b & 31) + 14) | (T[b] or 1)) or helper(a, (T[b] or 1))), a) < (((a * (m[b] or 0)) & ((T[b] or 1) & b)) >> (((not (p:getint32(34) ~= (m[b] or 0))) and (T[a] or 3) or p:getint8((b & 31) + 14)) * ~(0))) then
    p:setint64(30, ((p:getuint32(24) >= p:getbyte(39)) and helper(b, (m[b] or 0)) or (p:getint8((b & 31) + 14) | -((-64 - a)))))
    if not (helper(b, (b >> 64)) == (((m[b] or 0) & a) * bo.hton16(a))) then
      for i2 = 2, 1, 2 do
        i2 = (((((s == "\0") and ((T[b] or 2) == b)) and ((not (b > (m[a] or 0))) or (#p < -1))) and a or (s:byte((m[a] or 0)) or 0)) * #p)
        b = b
      end
      if not (((s:byte(0x7fffffffffffffff) or 0) ~= helper(a, #p)) and (not (not (not (p:getint64(((m[a] or 0) & 31) + 14) >= (T[a] or 4)))))) then
        local v2 = p:getint64(15)
        p:setint64(30, (0x7fffffffffffffff * (s:byte(((b + (T[v2] or 3)) << bo.ntoh32(v2))) or 0)))
      else
        p:setint64(30, ((not (s == "abc")) and (helper((7 % (T[b] or 4)), (T[a] or 2)) ~ (bo.ntoh32(b) & b)) or (~(~(a)) << helper(b, ((m[a] or 0) ~ a)))))
      end
    else
      repeat
        p:setint64(30, bo.ntoh16((p:getint8(((b * a) & 31) + 14) ~ p:getint64(23))))
        p:setint64(30, a)
      until not (b ~= (T[b] or 3))
    end
  else
    p:setint64(30, (s:byte((~(b) ~ ((p:getint64(18) ~ #p) // 200))) or 0))
  end
  return 2
end
return xdp.program(filter, { name = "t", default = 1 })

