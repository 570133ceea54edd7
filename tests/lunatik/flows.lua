-- A tc classifier in the style of Lunatik's proposal: `skb` for the context, `skb:packet()`,
-- a map read and written with `skb` fields as keys, the curried `tc.program{ ... }(...)`.
-- Packets to a port listed in `ports` get the port's priority (and are counted); UDP to a
-- listed port with priority 0 is dropped. flows_luabpf.lua is the same in luabpf's style.

local tc     = require("bpf.tc")
local map    = require("bpf.map")
local action = require("linux.tc")

local ports = map.hash{key = "I4", value = "I4", entries = 1024}
local seen  = map.array{key = "I4", value = "I8", entries = 1}

local function u16(packet, at)
    return packet:getbyte(at) << 8 | packet:getbyte(at + 1)
end

return tc.program{egress = false}(function(skb)
    local packet = skb:packet()
    if u16(packet, 12) ~= 0x0800 then
        return action.ACT_OK
    end
    local proto = packet:getbyte(23)
    if proto ~= 6 and proto ~= 17 then
        return action.ACT_OK
    end
    local l4 = 14 + (packet:getbyte(14) & 0x0f) * 4
    local priority = ports[u16(packet, l4 + 2)]
    if priority == nil then
        return action.ACT_OK
    end
    seen[0] = (seen[0] or 0) + 1
    if priority == 0 and proto == 17 then
        return action.ACT_SHOT
    end
    skb.priority = priority
    return action.ACT_OK
end)
