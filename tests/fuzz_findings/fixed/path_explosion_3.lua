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
  local v2 = ((T[b] or 0) | a)
  local v3 = -((s:byte(v2) or 0))
  if ((m[v3] or 0) >= ((p:getbyte(18) <= v2) and (v2 << (m[v3] or 0)) or (m[b] or 0))) or (s == "hello") then return 0 end
  for i4 = 2, 0, -1 do
    p:setbyte(50, (-(bo.ntoh64((p:getint16(43) + 255))) << 64))
    if (~(-((m[a] or 0))) >> (b << (m[b] or 0))) ~= v2 then
      for i5 = 0, 4 do
        p:setint64(30, bo.ntoh32(((not (((i4 < #p) or (v2 ~= v3)) and (((v2 < (T[i5] or 4)) and (not ((((T[b] or 2) == b) or (v3 ~= i5)) and (v2 > a)))) and (v3 <= b)))) and (s:byte(bo.ntoh64(p:getuint32(53))) or 0) or ~(i4))))
        p:setint64(30, ((((not (not ((not ((T[i4] or 1) < (m[i5] or 0))) and (64 >= v2)))) and 0x100000000 or ~(i5)) // (m[i4] or 0)) // ((s == "\0") and ((p:getint64((#p & 31) + 14) * p:getint64((p:getint32(20) & 31) + 14)) // helper(#p, i4)) or ((s:byte(#p) or 0) // (T[i4] or 2)))))
      end
      for i5 = 2, 0, -1 do
        local v6 = ((bo.hton16(v3) == -((64 - v2))) and (((i5 | p:getint8(45)) >= (s:byte(i4) or 0)) and (((v2 >= 0x7fffffffffffffff) and (T[a] or 2) or p:getint8(25)) | (a // i4)) or ((v2 >= a) and b or (T[i4] or 0))) or b)
        p:setint64(30, a)
      end
    else
      m[(((p:getuint16(51) * a) % bo.ntoh16((p:getint32((p:getint64((b & 31) + 14) & 31) + 14) % (T[b] or 0)))) // v3)] = (m[v2] or 0)
    end
  end
  local v4 = ((m[a] or 0) << v3)
  m[v4] = (((((T[a] or 0) * 1) * a) < (m[a] or 0)) and ((s:byte(#p) or 0) % bo.hton16(bo.ntoh32(v4))) or (m[v4] or 0))
  if p:getint64(29) == (a - (T[v3] or 1)) then
    if #p < bo.ntoh64(v4) then
      local v5 = (s:byte((m[v3] or 0)) or 0)
      counts[0] = (counts[0] or 0) + #p
    else
      v3 = ((T[v4] or 2) & ((m[v2] or 0) >> (T[v3] or 2)))
    end
    v4 = v3
  else
    local v5 = (s:byte(1) or 0)
  end
  do
    local mv = m[(m[v3] or 0)]
    if mv then m[(m[v3] or 0)] = mv + 1 else m[(m[v3] or 0)] = nil end
  end
  return 2
end
return xdp.program(filter, { name = "t", default = 1 })

