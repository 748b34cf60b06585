--- Registry: a process that maps keys to processes, with the semantics of
-- Elixir's Registry.
--
--   local reg = registry.start_link({keys = "unique", name = "sessions"})
--   registry.register("sessions", "alice", {since = 1})  -- the caller
--   registry.lookup("sessions", "alice")  -- {{Pid, {since = 1}}}
--
-- A process registers itself (never another one) under a key, with a value.
-- In a "unique" registry a key has at most one process; in a "duplicate"
-- registry it may have many (a process may even register one key twice),
-- which makes it a dispatch list, as for pub/sub. The registry monitors
-- every process that has entries and removes them when it ends.
--
-- A registry is a GenServer; every operation, lookups included, is a call
-- to it. (Elixir's Registry keeps its entries in ETS tables that callers
-- read directly; moonbeam has no shared tables, so a lookup costs a round
-- trip.) Client functions and the calls they make:
--
--   start_link    ->  init(kind)
--   register      ->  {register, Key, Value}      reply true | Pid
--   unregister    ->  {unregister, Key}           reply true
--   lookup,
--   dispatch      ->  {lookup, Key}               reply {{Pid, Value}...}
--   keys          ->  {keys, Pid}                 reply {Key...}
--   count         ->  count                       reply n
--   a registered process ends -> handle_info({'DOWN', ...})
--
-- Keys are values that compare by identity in a Lua table: strings,
-- numbers, booleans, atoms, pids, refs. Tables (tuples included) are copied
-- on their way to the registry and would never be found again, so they are
-- refused.
local mb = require "moonbeam"
local gen = require "moonbeam.gen"
local gen_server = require "moonbeam.gen_server"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof

local M = {}

local REGISTER, UNREGISTER, LOOKUP, KEYS, COUNT =
  atom.register, atom.unregister, atom.lookup, atom.keys, atom.count
local DOWN = atom.DOWN

-- ---------------------------------------------------------------------------
-- Server side
--
-- The state:
--   unique     entries[key] = {pid = Pid, value = Value}
--   duplicate  entries[key] = {[Pid] = {Value, ..., n = count}}
--   procs[pid] = {ref = Monitor, keys = {[key] = entries of pid under key}}
--   count      the number of entries
--
-- The callbacks are copied into the registry process: they use only `mb`
-- (required again there), atoms, Lua functions and globals.

local Server = {}

function Server.init(kind)
  return "ok", {unique = kind == "unique", entries = {}, procs = {}, count = 0}
end

-- The record of `pid`, monitored from its first entry on.
local function proc_of(s, pid)
  local p = s.procs[pid]
  if p == nil then
    p = {ref = mb.monitor(pid), keys = {}}
    s.procs[pid] = p
  end
  return p
end

-- Forget `pid`'s entries under `key` (the record of pid is kept).
local function remove(s, pid, key)
  local p = s.procs[pid]
  local n = p.keys[key]
  if n == nil then return end
  p.keys[key] = nil
  s.count = s.count - n
  if s.unique then
    s.entries[key] = nil
  else
    local by_pid = s.entries[key]
    by_pid[pid] = nil
    if next(by_pid) == nil then s.entries[key] = nil end
  end
end

local function register(s, pid, key, value)
  if s.unique then
    local e = s.entries[key]
    if e then return e.pid end
    s.entries[key] = {pid = pid, value = value}
  else
    local by_pid = s.entries[key]
    if by_pid == nil then
      by_pid = {}
      s.entries[key] = by_pid
    end
    local values = by_pid[pid]
    if values == nil then
      values = {n = 0}
      by_pid[pid] = values
    end
    values.n = values.n + 1
    values[values.n] = value
  end
  local p = proc_of(s, pid)
  p.keys[key] = (p.keys[key] or 0) + 1
  s.count = s.count + 1
  return true
end

local function lookup(s, key)
  local list, n = {}, 0
  local e = s.entries[key]
  if e == nil then return list end
  if s.unique then
    list[1] = mb.tuple(e.pid, e.value)
    return list
  end
  for pid, values in pairs(e) do
    for i = 1, values.n do
      n = n + 1
      list[n] = mb.tuple(pid, values[i])
    end
  end
  return list
end

function Server.handle_call(req, from, s)
  local kind = req[1]
  if kind == LOOKUP then
    return "reply", lookup(s, req[2]), s
  elseif kind == REGISTER then
    return "reply", register(s, from[1], req[2], req[3]), s
  elseif kind == UNREGISTER then
    local pid = from[1]
    local p = s.procs[pid]
    if p then
      remove(s, pid, req[2])
      if next(p.keys) == nil then
        mb.demonitor(p.ref, {flush = true})
        s.procs[pid] = nil
      end
    end
    return "reply", true, s
  elseif kind == KEYS then
    local list, n = {}, 0
    local p = s.procs[req[2]]
    if p then
      for key, count in pairs(p.keys) do
        for _ = 1, count do n = n + 1 list[n] = key end
      end
    end
    return "reply", list, s
  elseif kind == COUNT then
    return "reply", s.count, s
  end
  return "reply", nil, s
end

function Server.handle_info(msg, s)
  if mb.typeof(msg) == "tuple" and msg[1] == DOWN then
    local pid = msg[4]
    local p = s.procs[pid]
    if p and p.ref == msg[2] then
      for key in pairs(p.keys) do remove(s, pid, key) end
      s.procs[pid] = nil
    end
  end
  return "noreply", s
end

-- ---------------------------------------------------------------------------
-- Client side

local type, error, tostring = type, error, tostring

local KEY_TYPES = {string = true, number = true, boolean = true, atom = true,
  pid = true, ref = true}

local function check_key(key, fname)
  local t = typeof(key)
  if not KEY_TYPES[t] or key ~= key then
    gen.argerror(2, fname, "key must be a string, number, boolean, atom, pid or ref, got "
      .. (t == "number" and "NaN" or t), 3)
  end
end

--- Start a registry linked to the caller.
-- @param opts keys ("unique" or "duplicate", required), name (register the
--   registry under it)
-- @return the pid, or nil and the reason ({already_started, Pid})
function M.start_link(opts)
  if type(opts) ~= "table" then
    gen.argerror(1, "start_link", "table expected, got " .. typeof(opts), 2)
  end
  local kind = opts.keys
  if kind ~= "unique" and kind ~= "duplicate" then
    gen.argerror(1, "start_link", "keys must be \"unique\" or \"duplicate\", got "
      .. tostring(kind), 2)
  end
  return gen_server.start_link(Server, kind, opts)
end

--- Register the calling process under `key`, with `value`. The entry goes
-- when the process ends or unregisters the key.
-- @param reg the registry (pid or name)
-- @param key a string, number, boolean, atom, pid or ref
-- @param value any sendable value (default nil)
-- @return true; in a unique registry, nil and {already_registered, Pid} if
--   the key is taken (by the caller itself too)
function M.register(reg, key, value)
  check_key(key, "register")
  local r = gen_server.call(reg, tuple(REGISTER, key, value))
  if r == true then return true end
  return nil, tuple(atom.already_registered, r)
end

--- Remove the caller's entries under `key` (there may be none).
-- @return true
function M.unregister(reg, key)
  check_key(key, "unregister")
  return gen_server.call(reg, tuple(UNREGISTER, key))
end

--- The entries under `key`: a list of tuples {Pid, Value}, empty if none.
-- In a duplicate registry they come in no particular order.
-- @param timeout ms (default 5000)
function M.lookup(reg, key, timeout)
  check_key(key, "lookup")
  return gen_server.call(reg, tuple(LOOKUP, key), timeout)
end

--- Call `fn(entries)` in the caller with the entries under `key` (a list
-- of {Pid, Value}), if there are any, as Elixir's dispatch; the usual use
-- is to send each entry's process a message.
-- @return true
function M.dispatch(reg, key, fn)
  check_key(key, "dispatch")
  if type(fn) ~= "function" then
    gen.argerror(3, "dispatch", "function expected, got " .. typeof(fn), 2)
  end
  local entries = gen_server.call(reg, tuple(LOOKUP, key))
  if #entries > 0 then fn(entries) end
  return true
end

--- The keys `pid` is registered under, in no particular order (in a
-- duplicate registry, a key once per entry).
function M.keys(reg, pid)
  if typeof(pid) ~= "pid" then
    gen.argerror(2, "keys", "pid expected, got " .. typeof(pid), 2)
  end
  return gen_server.call(reg, tuple(KEYS, pid))
end

--- The number of entries in the registry.
function M.count(reg)
  return gen_server.call(reg, tuple(COUNT))
end

--- Stop the registry and wait until it has ended.
-- @return true
function M.stop(reg, reason, timeout)
  return gen_server.stop(reg, reason, timeout)
end

return M
