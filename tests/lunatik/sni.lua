-- An SNI filter in the style of Lunatik's program-file proposal
-- (luainkernel/lunatik doc/design/luaebpf/api.md): `require(...)` with parentheses, a map
-- declared with a spec table and no name, `<const>` locals, the `data` accessors on
-- `ctx:packet()` with big-endian reads built from `getbyte`, an anonymous function handed to
-- the curried `xdp.program{ ... }(...)`. sni_luabpf.lua is the same filter in luabpf's
-- usual style; the tests check that both behave the same.

local xdp    = require("bpf.xdp")
local map    = require("bpf.map")
local action = require("linux.xdp")

local blocklist = map.hash{key = "c64", value = "I8", entries = 4096}

local HANDSHAKE <const> = 22
local CLIENT_HELLO <const> = 1
local MAX_EXTENSIONS <const> = 32

local function u16(packet, at)
    return packet:getbyte(at) << 8 | packet:getbyte(at + 1)
end

return xdp.program{default = action.PASS}(function(ctx)
    local packet = ctx:packet()
    if u16(packet, 12) ~= 0x0800 or packet:getbyte(23) ~= 6 then
        return action.PASS
    end
    local ihl = (packet:getbyte(14) & 0x0f) * 4
    local tcp = 14 + ihl
    local tls = tcp + (packet:getbyte(tcp + 12) >> 4) * 4
    if packet:getbyte(tls) ~= HANDSHAKE or packet:getbyte(tls + 5) ~= CLIENT_HELLO then
        return action.PASS
    end
    local at = tls + 43
    at = at + 1 + packet:getbyte(at)
    at = at + 2 + u16(packet, at)
    at = at + 1 + packet:getbyte(at)
    local stop = at + 2 + u16(packet, at)
    at = at + 2
    for _ = 1, MAX_EXTENSIONS do
        if at + 4 > stop then break end
        if u16(packet, at) == 0 then
            local host = packet:getstring(at + 9, u16(packet, at + 7))
            local hits = blocklist[host]
            if hits then
                blocklist[host] = hits + 1
                return action.DROP
            end
            return action.PASS
        end
        at = at + 4 + u16(packet, at + 2)
    end
    return action.PASS
end)
