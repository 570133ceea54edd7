-- bpf.map: map constructors (see luabpf.maps for what a map does).
local maps = require "luabpf.maps"
local M = {}
for _, kind in ipairs { "hash", "lru_hash", "percpu_hash", "array", "percpu_array", "lpm_trie" } do
  M[kind] = function(name, spec) return maps.new(kind, name, spec) end
end
return M
