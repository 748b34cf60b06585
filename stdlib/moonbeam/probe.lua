--- The calls tools make to any node, answered as BEAM answers them where
-- the meaning carries over: other nodes' rpc:call / erpc:call of these
-- functions of the Erlang module `erlang` reach them (moonbeam.rpc looks
-- them up here before it looks for a Lua module).  The set and its
-- answers are in docs/distribution.md ("Probes").
--
--   erlang:node/0, node/1         this node; the node of a pid or ref
--   erlang:nodes/0, nodes/1       visible | hidden | connected | this |
--                                 known, or a list of them
--   erlang:is_alive/0             whether distribution is started
--   erlang:whereis/1              pid, or undefined
--   erlang:registered/0           the registered names
--   erlang:processes/0            every process of the node
--   erlang:system_info/1          otp_release, version, system_version,
--                                 machine, process_count, process_limit,
--                                 schedulers, schedulers_online,
--                                 logical_processors, wordsize
--
-- Anything else is undef, as for a function that does not exist; a bad
-- argument is the error badarg.
local mb = require "moonbeam"

local atom, typeof = mb.atom, mb.typeof

local M = {}

-- An Erlang error a probe raises: rpc passes its reason on as it is.
local ERROR = {}

--- Is v an error a probe raised? Then its reason.
function M.reason(v)
  if type(v) == "table" and getmetatable(v) == ERROR then return v.reason end
  return nil
end

local function badarg() error(setmetatable({reason = atom.badarg}, ERROR), 0) end

-- An Erlang string (a list of character codes) from a Lua string.
local function charlist(s)
  local l = mb.list()
  for i = 1, #s do l[i] = s:byte(i) end
  l.n = #s
  return l
end

local function list_of(t)
  local l = mb.list()
  for i = 1, #t do l[i] = t[i] end
  l.n = #t
  return l
end

local function alive() return mb.node() ~= atom["nonode@nohost"] end

local kinds = {
  visible = function() return mb.nodes("visible") end,
  hidden = function() return mb.nodes("hidden") end,
  connected = function() return mb.nodes("connected") end,
  this = function() return alive() and {mb.node()} or {} end,
  known = function()
    local t = mb.nodes("connected")
    if alive() then table.insert(t, 1, mb.node()) end
    return t
  end,
}

local function nodes_of(arg)
  local list = typeof(arg) == "atom" and {arg} or arg
  local lt = typeof(list)
  if lt ~= "list" and lt ~= "table" then badarg() end
  local out, seen = {}, {}
  for i = 1, list.n or #list do
    local k = typeof(list[i]) == "atom" and kinds[tostring(list[i])]
    if not k then badarg() end
    for _, n in ipairs(k()) do
      if not seen[n] then seen[n] = true out[#out + 1] = n end
    end
  end
  return list_of(out)
end

local info = {
  otp_release = function() return charlist("moonbeam " .. mb.version) end,
  version = function() return charlist(mb.version) end,
  system_version = function()
    return charlist(("moonbeam %s (%s) [schedulers:%d]\n")
      :format(mb.version, _VERSION, mb.schedulers()))
  end,
  machine = function() return charlist("moonbeam") end,
  process_count = function() return mb.process_count() end,
  process_limit = function() return mb.process_limit() end,
  schedulers = function() return mb.schedulers() end,
  schedulers_online = function() return mb.schedulers() end,
  logical_processors = function() return mb.schedulers() end,
  wordsize = function() return string.packsize("j") end,
}

-- name/arity -> the function
local erlang = {
  ["node/0"] = function() return mb.node() end,
  ["node/1"] = function(x)
    local ok, n = pcall(mb.node, x)
    if not ok then badarg() end
    return n
  end,
  ["nodes/0"] = function() return list_of(mb.nodes()) end,
  ["nodes/1"] = nodes_of,
  ["is_alive/0"] = alive,
  ["whereis/1"] = function(name)
    if typeof(name) ~= "atom" then badarg() end
    return mb.whereis(name) or atom.undefined
  end,
  ["registered/0"] = function()
    local out = {}
    for i, n in ipairs(mb.registered()) do out[i] = atom(tostring(n)) end
    return list_of(out)
  end,
  ["processes/0"] = function() return list_of(mb.processes()) end,
  ["system_info/1"] = function(what)
    local f = typeof(what) == "atom" and info[tostring(what)]
    if not f then badarg() end
    return f()
  end,
}

--- The probe for module m, function f called with n arguments, or nil.
function M.lookup(m, f, n)
  if tostring(m) ~= "erlang" then return nil end
  return erlang[tostring(f) .. "/" .. n]
end

return M
