-- luabpf.shim: the host side of docs/language.md in plain Lua 5.4.
--
-- A program file runs unchanged on top of these modules (bpf.*, linux.*): its body declares
-- maps and programs as it does in the compiler, and `shim.run(program, bytes)` runs one
-- packet through the program the way the kernel runs the compiled code: the same verdict
-- (runtime errors take the default verdict), the same packet bytes afterwards, the same map
-- contents. `luabpf run --reference` runs these very files in an embedded Lua 5.4; users
-- run them with the `lua5.4` binary for unit tests:
--
--     package.path = "stdlib/shim/?.lua;stdlib/?.lua;" .. package.path
--     local shim = require "luabpf.shim"
--     local prog = dofile "examples/counter.lua"
--     local verdict, packet_out = shim.run(prog, packet_bytes)

local shim = {}

local Packet = require "luabpf.packet"
local maps = require "luabpf.maps"

-- Errors the compiled code turns into the default verdict (see language.md section 2) are
-- raised as RuntimeError values; any other Lua error in a run (`//` by zero, `error(...)`)
-- takes the default verdict too.
local RuntimeError = {}
RuntimeError.__tostring = function(e) return "runtime error: " .. e.message end
shim.RuntimeError = RuntimeError

function shim.fail(message)
  error(setmetatable({ message = message }, RuntimeError), 2)
end

-- Hooks: default verdicts and ctx fields. `rw` fields are 32-bit and writable.
local HOOKS = {
  xdp = {
    default = 2, writable = true,
    fields = { ingress_ifindex = "r", rx_queue_index = "r" },
  },
  tc = {
    default = 0, writable = true,
    fields = { len = "r", mark = "rw", priority = "rw", ifindex = "r", hash = "r", protocol = "r", vlan_tci = "r" },
  },
  netfilter = { default = 1, writable = false, fields = {} },
}
shim.HOOKS = HOOKS

-- Kernel services, replaceable by the host (the reference engine sets them).
shim.services = {
  ktime = (function()
    local t = 0
    return function() t = t + 1000; return t end
  end)(),
  random = function() return math.random(0, 0xffffffff) end,
  cpu = function() return 0 end,
  print = function() end,
}

-- Whether the current run asked for a value the kernel's run cannot share (time, random):
-- its results may then legitimately differ from the kernel's.
local nondeterministic = false
function shim.nondeterministic() nondeterministic = true end

-- The hidden iteration bound of loops without a constant bound (language.md section 5):
-- the 1,025th iteration takes the default verdict. The reference engine inserts the calls
-- `__luabpf_enter(id)` before such a loop and `__luabpf_tick(id)` where an iteration starts.
shim.LOOP_CAP = 1024
local loop_counts = {}
function shim.loop_enter(id) loop_counts[id] = 0 end
function shim.loop_tick(id)
  local n = (loop_counts[id] or 0) + 1
  if n > shim.LOOP_CAP then shim.fail("a loop exceeded its bound of " .. shim.LOOP_CAP .. " iterations") end
  loop_counts[id] = n
end

-- Programs ---------------------------------------------------------------------------------

local Program = {}
Program.__index = Program
Program.__call = function(prog, bytes, opts) return shim.run(prog, bytes, opts) end
shim.Program = Program

function shim.program(hook, fn, opts)
  if type(fn) ~= "function" then error(hook .. ".program expects a function", 3) end
  if opts ~= nil and type(opts) ~= "table" then error(hook .. ".program: the options must be a table", 3) end
  opts = opts or {}
  return setmetatable({
    hook = hook,
    fn = fn,
    name = opts.name,
    default = opts.default or HOOKS[hook].default,
    egress = opts.egress == true,
    opts = opts,
  }, Program)
end

local function make_ctx(hook, packet, given)
  local spec = HOOKS[hook]
  local values
  if hook == "xdp" then
    values = { ingress_ifindex = 1, rx_queue_index = 0 }
  elseif hook == "tc" then
    local n = #packet
    values = {
      len = n, mark = 0, priority = 0, ifindex = 1, hash = 0, vlan_tci = 0,
      -- skb->protocol is big-endian in the kernel: read as a host-order integer.
      protocol = n >= 14 and packet:getuint16(12) or 0,
    }
  else
    values = {}
  end
  for k, v in pairs(given or {}) do values[k] = v end
  local ctx = {}
  return setmetatable(ctx, {
    __index = function(_, k)
      if k == "packet" then return function() return packet end end
      if spec.fields[k] == nil then error("ctx has no field `" .. tostring(k) .. "` at the " .. hook .. " hook", 2) end
      return values[k]
    end,
    __newindex = function(_, k, v)
      if spec.fields[k] ~= "rw" then error("ctx." .. tostring(k) .. " is read-only at the " .. hook .. " hook", 2) end
      values[k] = v & 0xffffffff
    end,
    __values = values,
  })
end

-- Runs one packet. Returns a table: verdict (the Lua value the function returned, or the
-- default), packet (the bytes afterwards), error (the message, if the run raised),
-- nondeterministic (it called bpf.ktime or bpf.random), ctx (the ctx fields afterwards).
-- `opts.ctx` overrides ctx fields.
function shim.execute(prog, bytes, opts)
  if getmetatable(prog) ~= Program then error("shim.run expects a program (xdp.program(...))", 2) end
  opts = opts or {}
  nondeterministic = false
  loop_counts = {}
  local packet = Packet.new(bytes, HOOKS[prog.hook].writable)
  local ctx = make_ctx(prog.hook, packet, opts.ctx)
  local ok, v = pcall(prog.fn, ctx)
  local result = { packet = packet:bytes(), nondeterministic = nondeterministic, ctx = getmetatable(ctx).__values }
  if not ok then
    result.verdict = prog.default
    result.error = tostring(v)
  elseif v == nil then
    result.verdict = prog.default
  elseif math.type(v) == "integer" then
    result.verdict = v
  elseif v == true or v == false then
    result.verdict = v and 1 or 0
  else
    result.verdict = prog.default
    result.error = "the program returned " .. type(v) .. ", not a verdict"
  end
  return result
end

-- Runs one packet: the verdict, the packet bytes afterwards, and the error message if the
-- run raised (then the verdict is the program's default).
function shim.run(prog, bytes, opts)
  local r = shim.execute(prog, bytes, opts)
  return r.verdict, r.packet, r.error
end

-- Maps -------------------------------------------------------------------------------------

shim.maps = maps.registry

-- The map declared with this name (the first one, if several are), or nil.
function shim.map(name)
  for _, m in ipairs(maps.registry) do
    if maps.info(m) == name then return m end
  end
  return nil
end

shim.map_info = maps.info
shim.map_entries = maps.entries
shim.map_get = maps.get
shim.map_set = maps.set

return shim
