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
  b = 200
  for i2 = 1, 5, 2 do
    b = (m[a] or 0)
    if a < bo.hton16(i2) then
      counts[0] = (counts[0] or 0) + helper(a, ~(((p:getint64((p:getint64((p:getint64(21) & 31) + 14) & 31) + 14) <= 1) and (b ~ #p) or (s:byte(i2) or 0))))
      p:setint64(30, (~((T[b] or 0)) & a))
    else
      b = (b + a)
    end
  end
  local v2 = (((T[a] or 0) % (((s == "") and a or p:getint8((-64 & 31) + 14)) + 1)) & ~((a - (s:byte(p:getint64((p:getint64(24) & 31) + 14)) or 0))))
  local v3 = v2
  local v4 = (T[v2] or 0)
  p:setint64(27, ((T[b] or 1) ~ a))
  for i5 = 2, 0, -1 do
    v3 = ((m[v3] or 0) | helper((helper(#p, v4) | (p:getint16(18) & a)), bo.hton16((s:byte(p:getint16(((T[v2] or 0) & 31) + 14)) or 0))))
    if not (s == "hello") then
      v2 = ((((b & p:getint8((p:getint32((-64 & 31) + 14) & 31) + 14)) // bo.ntoh32(#p)) % bo.ntoh64(helper((T[v4] or 1), v2))) % helper((T[v4] or 2), ((s:byte(v3) or 0) | ((m[a] or 0) >> v2))))
      if ((s == "\0") and ((m[v2] or 0) | (#p * (-0x7fffffffffffffff - 1))) or (m[i5] or 0)) == bo.ntoh64((s:byte(v2) or 0)) then
        p:setint16(53, helper(helper(((p:getint64(50) < (T[v4] or 0)) and (T[a] or 2) or (m[b] or 0)), ((s == "") and i5 or (v3 * i5))), ((7 >> v2) << b)))
        counts[0] = (counts[0] or 0) + (m[a] or 0)
      else
        p:setint64(30, (((((T[v2] or 1) - b) & (a % (T[v2] or 0))) ~= 0) and helper(#p, helper((s:byte(#p) or 0), helper((T[a] or 3), #p))) or ((b <= -(i5)) and ((s:byte(b) or 0) - ((m[a] or 0) + (m[v4] or 0))) or ((a > v4) and v2 or #p))))
      end
    else
      p:setint16(31, 0x7fffffffffffffff)
    end
  end
  for i5 = 2, 5, 1 do
    m[(i5 | ((s:byte((v4 // (T[b] or 2))) or 0) << (m[b] or 0)))] = (-(a) ~ bo.hton16((((200 == (T[a] or 3)) and v2 or (m[v2] or 0)) % bo.hton16(v4))))
    local v6 = 200
  end
  p:setint64((v2 & 31) + 14, bo.ntoh32(((not (not ((m[b] or 0) < p:getuint32(19)))) and ((s:byte(p:getbyte(24)) or 0) & (m[b] or 0)) or (m[v3] or 0))))
  return 2
end
return xdp.program(filter, { name = "t", default = 1 })

