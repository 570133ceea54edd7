-- ua_filter.lua: drop HTTP requests from blocked User-Agents, at the XDP hook.
--
-- Finds the User-Agent header in the first 512 bytes of an HTTP request (any IPv4/TCP
-- packet, VLAN tags and IP options included), takes its value up to the end of the line,
-- and drops the packet when the value is in the `blocked_agents` map:
--
--     luabpf map set ua_filter blocked_agents "EvilBot/1.0" 0

local xdp    = require "bpf.xdp"
local map    = require "bpf.map"
local action = require "linux.xdp"
local eth, ipv4, tcp, http = require "net.eth", require "net.ipv4", require "net.tcp", require "net.http"

local blocked_agents = map.hash("blocked_agents", { key = "c64", value = "I8", entries = 1024 })

-- Made at compile time: a scanner for "\r\nUser-Agent: " whose values are cut at 64 bytes,
-- the length of the map's keys.
local user_agent = http.header("User-Agent", 64)

local function filter(ctx)
  local p = ctx:packet()
  local value, len = user_agent(p, tcp.payload(p, ipv4.tcp(p, eth.ipv4(p))))
  if not value then return action.PASS end
  local agent = p:getstring(value, len)
  if blocked_agents[agent] then
    blocked_agents[agent] = (blocked_agents[agent] or 0) + 1
    return action.DROP
  end
  return action.PASS
end

return xdp.program(filter, { name = "ua_filter" })
