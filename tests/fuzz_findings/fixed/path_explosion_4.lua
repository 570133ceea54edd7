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
  if bo.ntoh32((m[a] or 0)) <= p:getint64((((s:byte((m[a] or 0)) or 0) // (T[b] or 4)) & 31) + 14) then return 1 end
  local v2 = (((helper(a, a) << bo.ntoh32((T[b] or 1))) == ((255 << (T[a] or 4)) >> b)) and 0x100000000 or ~((a & b)))
  if s == "abc" then
    local v3 = ((s:byte(#p) or 0) + bo.ntoh64(~(b)))
    m[((v3 ~= ((a >> p:getint32(31)) % a)) and (-0x7fffffffffffffff - 1) or (m[b] or 0))] = -(((s == "\0") and v2 or ((s:byte(v3) or 0) & (0 + p:getuint16(14)))))
  else
    if ~((T[a] or 4)) ~= #p then
      m[(helper((1 | p:getint32(47)), b) % ((b % #p) + (helper(v2, a) - ((T[b] or 0) - b))))] = (((v2 ~ a) * ((#p >= (m[v2] or 0)) and ~((T[b] or 2)) or bo.hton16(7))) | ((s:byte(p:getint16(23)) or 0) % (m[a] or 0)))
      p:setint64(30, -1)
    else
      local v3 = ((m[b] or 0) - ((0 ~ helper(b, (T[a] or 3))) >> v2))
    end
  end
  m[(helper(((p:getint64((#p & 31) + 14) % b) ~ (s:byte(b) or 0)), v2) << (((v2 == a) and (#p >> b) or 200) // helper(((T[a] or 3) % p:getint32(((m[b] or 0) & 31) + 14)), (m[a] or 0))))] = ~(#p)
  p:setint64(30, p:getint64(50))
  p:setint16(18, ((s:byte((T[a] or 0)) or 0) // v2))
  do
    local mv = m[helper(helper((a << ((m[v2] or 0) << #p)), bo.ntoh16(helper((m[v2] or 0), a))), -((T[v2] or 0)))]
    if mv then m[helper(helper((a << ((m[v2] or 0) << #p)), bo.ntoh16(helper((m[v2] or 0), a))), -((T[v2] or 0)))] = mv + 1 else m[helper(helper((a << ((m[v2] or 0) << #p)), bo.ntoh16(helper((m[v2] or 0), a))), -((T[v2] or 0)))] = nil end
  end
  if (((a > b) and v2 or v2) <= (((T[v2] or 4) ~= v2) and (p:getuint32(40) << b) or (T[v2] or 0))) and (not ((s:byte(v2) or 0) <= (v2 % p:getbyte(((m[v2] or 0) & 31) + 14)))) then
    local v3 = a
    for i4 = 1, 4, 1 do
      m[(T[a] or 1)] = p:getbyte(20)
      if 64 ~= (((v3 * 255) >= i4) and (v3 | ((m[v3] or 0) // p:getuint32((v2 & 31) + 14))) or b) then
        counts[0] = (counts[0] or 0) + bo.ntoh16((s:byte(bo.hton16((b // a))) or 0))
        if ((a - #p) == (T[v2] or 0)) or (helper(~(0x7fffffffffffffff), ((m[i4] or 0) - v2)) <= bo.hton16((m[a] or 0))) then return 3 end
      else
        p:setint64(30, ((7 << #p) & ((((T[i4] or 0) << v2) & (p:getint16(26) ~ #p)) - (s:byte((a & #p)) or 0))))
      end
    end
  else
    p:setuint32(34, #p)
  end
  b = bo.hton16((m[v2] or 0))
  return 2
end
return xdp.program(filter, { name = "t", default = 1 })

