--- Process groups across nodes, as Erlang's pg: Lua processes join and
-- leave groups, and every node of the cluster that runs the same scope
-- sees the members of all nodes, Erlang and Elixir nodes included.
--
--   local pg = require "moonbeam.pg"
--   pg.join("workers", mb.self())            -- the default scope, pg
--   pg.get_members("workers")                -- pids of every node
--   pg.start_link("chat")                    -- a scope of its own
--   pg.join("chat", mb.atom.lobby, {p1, p2})
--
-- A scope is a process registered under the scope's name (the default
-- scope is `pg`, started with distribution).  Scopes of the same name on
-- different nodes keep each other up to date with pg's protocol, the
-- messages Erlang's scopes exchange (OTP's pg.erl):
--
--   {discover, Scope}             at start and on every nodeup, to
--                                 {ScopeName, Node} of each visible node
--   {'$gen_cast', {sync, Scope, [{Group, Pids}]}}
--                                 the answer: this node's members
--   {join, Scope, Group, Pids}    a local process joined
--   {leave, Scope, Pids, Groups}  it left, or ended
--
-- A scope monitors the scopes it synced with; when one goes (its node
-- went down, or it stopped), the members of that node go too.  A scope
-- sends other nodes only these four shapes (anything else makes an Erlang
-- scope crash), and ignores whatever else reaches it: a malformed message
-- from a peer is dropped, never fatal.
--
-- Client functions and the requests they make to the local scope:
--
--   join              ->  {join_local, Group, Pids}    reply ok
--   leave             ->  {leave_local, Group, Pids}   reply ok | not_joined
--   monitor_scope     ->  monitor                      reply {Ref, Groups}
--   monitor           ->  {monitor, Group}             reply {Ref, Pids}
--   demonitor         ->  {demonitor, Ref}             reply ok | false
--   get_members       ->  {get_members, Group}         reply Pids
--   get_local_members ->  {get_local_members, Group}   reply Pids
--   which_groups      ->  which_groups                 reply Groups
--   which_local_groups -> which_local_groups           reply Groups
--
-- (Erlang's pg reads members from an ETS table; moonbeam has no shared
-- tables, so every read is a call to the scope.)  Groups are any term;
-- two groups are the same when their external term format is (an atom
-- group of Erlang's is mb.atom.name in Lua, a binary a Lua string).
local mb = require "moonbeam"
local gen = require "moonbeam.gen"
local term = require "moonbeam.term"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local type, select, pcall, ipairs, pairs = type, select, pcall, ipairs, pairs

local M = {}

local DEFAULT = "pg"
local GEN_CALL, GEN_CAST = atom["$gen_call"], atom["$gen_cast"]
local DOWN, NODEUP, NODEDOWN = atom.DOWN, atom.nodeup, atom.nodedown
local DISCOVER, SYNC, JOIN, LEAVE = atom.discover, atom.sync, atom.join, atom.leave
local OK, NOT_JOINED, MONITOR = atom.ok, atom.not_joined, atom.monitor

-- ---------------------------------------------------------------------------
-- Values

-- A list term of the values of a Lua array.
local function list_of(t)
  local l = mb.list()
  for i = 1, #t do l[i] = t[i] end
  l.n = #t
  return l
end

-- The elements of a list term (or of a plain array), or nil if it is not
-- one whose elements are all pids.
local function pids_of(v)
  if typeof(v) == "pid" then return {v} end
  local t = typeof(v)
  if t ~= "list" and t ~= "table" then return nil end
  local out = {}
  for i = 1, v.n or #v do
    if typeof(v[i]) ~= "pid" then return nil end
    out[i] = v[i]
  end
  return out
end

-- Remove one occurrence of each of `pids` from the array `list`.
local function remove_each(list, pids)
  for _, p in ipairs(pids) do
    for i = 1, #list do
      if list[i] == p then table.remove(list, i) break end
    end
  end
end

local function same(a, b)
  if b == nil or #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local function append(list, pids)
  for _, p in ipairs(pids) do list[#list + 1] = p end
end

local function is_local(pid) return mb.node(pid) == mb.node() end

-- ---------------------------------------------------------------------------
-- The scope process
--
-- Its state:
--   groups[key] = {group = G, all = {pids}, loc = {pids}}, key the
--                 group's external term format; a group with no member
--                 is not kept
--   locals[pid] = {ref = Monitor, keys = {key, ...}} (a key once per join)
--   remote[scope pid] = {ref = Monitor, groups = {[key] = {pids}}}
--   scope_mons[ref] = pid, group_mons[ref] = {pid = Pid, key = key}

local S = {}

local function key_of(group)
  local ok, k = pcall(term.term_to_binary, group)
  if ok then return k end
  return nil
end

-- Tell the processes that monitor the scope or the group.
local function notify(s, what, key, group, pids)
  if #pids == 0 then return end
  for ref, pid in pairs(s.scope_mons) do
    mb.send(pid, tuple(ref, what, group, list_of(pids)))
  end
  for ref, m in pairs(s.group_mons) do
    if m.key == key then mb.send(m.pid, tuple(ref, what, group, list_of(pids))) end
  end
end

-- Add pids to a group; loc: they are this node's.
local function add(s, key, group, pids, loc)
  local g = s.groups[key]
  if g == nil then
    g = {group = group, all = {}, loc = {}}
    s.groups[key] = g
  end
  append(g.all, pids)
  if loc then append(g.loc, pids) end
  notify(s, JOIN, key, g.group, pids)
end

local function remove(s, key, pids, loc)
  local g = s.groups[key]
  if g == nil then return end
  remove_each(g.all, pids)
  if loc then remove_each(g.loc, pids) end
  if #g.all == 0 then s.groups[key] = nil end
  notify(s, LEAVE, key, g.group, pids)
end

-- Send to every scope this one synced with.
local function broadcast(s, msg)
  for peer in pairs(s.remote) do mb.send(peer, msg) end
end

-- This node's members, as the sync message carries them.
local function local_groups(s)
  local out = {}
  for _, g in pairs(s.groups) do
    if #g.loc > 0 then out[#out + 1] = tuple(g.group, list_of(g.loc)) end
  end
  return list_of(out)
end

local function discover(s, to) mb.send(to, tuple(DISCOVER, mb.self())) end

-- A scope of another node, first heard of: watch it.
local function known(s, peer)
  local r = s.remote[peer]
  if r == nil then
    r = {ref = mb.monitor(peer), groups = {}}
    s.remote[peer] = r
  end
  return r
end

local function on_discover(s, peer)
  mb.send(peer, tuple(GEN_CAST, tuple(SYNC, mb.self(), local_groups(s))))
  if s.remote[peer] == nil then
    known(s, peer)
    discover(s, peer)
  end
end

-- A peer's whole membership: what changed since what it said before.
local function on_sync(s, peer, groups)
  local new = {}
  for i = 1, groups.n or #groups do
    local e = groups[i]
    if typeof(e) ~= "tuple" or e.n ~= 2 then return false end
    local pids, key = pids_of(e[2]), key_of(e[1])
    if pids == nil or key == nil then return false end
    new[key] = new[key] or {group = e[1], pids = {}}
    append(new[key].pids, pids)
  end
  local r = known(s, peer)
  for key, pids in pairs(r.groups) do
    if not same(pids, new[key] and new[key].pids) then
      remove(s, key, pids, false)
      r.groups[key] = nil
    end
  end
  for key, e in pairs(new) do
    if r.groups[key] == nil then
      r.groups[key] = e.pids
      add(s, key, e.group, e.pids, false)
    end
  end
  return true
end

local function on_join(s, peer, group, pids)
  local r, key = s.remote[peer], key_of(group)
  pids = pids_of(pids)
  if r == nil or key == nil or pids == nil then return end
  r.groups[key] = r.groups[key] or {}
  append(r.groups[key], pids)
  add(s, key, group, pids, false)
end

local function on_leave(s, peer, pids, groups)
  local r = s.remote[peer]
  pids = pids_of(pids)
  local t = typeof(groups)
  if r == nil or pids == nil or (t ~= "list" and t ~= "table") then return end
  for i = 1, groups.n or #groups do
    local key = key_of(groups[i])
    local have = key and r.groups[key]
    if have then
      remove_each(have, pids)
      if #have == 0 then r.groups[key] = nil end
      remove(s, key, pids, false)
    end
  end
end

-- A local member or a peer scope went, or a monitoring process ended.
local function on_down(s, ref, pid)
  local l = s.locals[pid]
  if l and l.ref == ref then
    s.locals[pid] = nil
    local groups = {}
    for _, key in ipairs(l.keys) do
      groups[#groups + 1] = s.groups[key] and s.groups[key].group
      remove(s, key, {pid}, true)
    end
    if #groups > 0 then broadcast(s, tuple(LEAVE, mb.self(), pid, list_of(groups))) end
    return
  end
  local r = s.remote[pid]
  if r and r.ref == ref then
    s.remote[pid] = nil
    for key, pids in pairs(r.groups) do remove(s, key, pids, false) end
    return
  end
  s.scope_mons[ref] = nil
  s.group_mons[ref] = nil
end

local function on_nodeup(s, node)
  -- Hidden nodes take no part (pg talks to visible nodes only).
  for _, n in ipairs(mb.nodes()) do
    if n == node then return discover(s, {s.name, node}) end
  end
end

-- Requests from this node's processes.

local function join_local(s, group, pids)
  local key = key_of(group)
  pids = pids_of(pids)
  if key == nil or pids == nil then return tuple(atom.error, atom.badarg) end
  for _, p in ipairs(pids) do
    if not is_local(p) then return tuple(atom.error, tuple(atom.nolocal, p)) end
  end
  for _, p in ipairs(pids) do
    local l = s.locals[p]
    if l == nil then
      l = {ref = mb.monitor(p), keys = {}}
      s.locals[p] = l
    end
    l.keys[#l.keys + 1] = key
  end
  add(s, key, group, pids, true)
  broadcast(s, tuple(JOIN, mb.self(), group, list_of(pids)))
  return OK
end

local function leave_local(s, group, pids)
  local key = key_of(group)
  pids = pids_of(pids)
  if key == nil or pids == nil then return tuple(atom.error, atom.badarg) end
  local left = {}
  for _, p in ipairs(pids) do
    local l = s.locals[p]
    for i = 1, l and #l.keys or 0 do
      if l.keys[i] == key then
        table.remove(l.keys, i)
        left[#left + 1] = p
        if #l.keys == 0 then
          mb.demonitor(l.ref, {flush = true})
          s.locals[p] = nil
        end
        break
      end
    end
  end
  if #left == 0 then return NOT_JOINED end
  remove(s, key, left, true)
  broadcast(s, tuple(LEAVE, mb.self(), list_of(left), mb.list(group)))
  return OK
end

local function members(s, group, loc)
  local key = key_of(group)
  local g = key and s.groups[key]
  return list_of(g and (loc and g.loc or g.all) or {})
end

local function groups_list(s, loc)
  local out = {}
  for _, g in pairs(s.groups) do
    if not loc or #g.loc > 0 then out[#out + 1] = g.group end
  end
  return list_of(out)
end

local function handle_call(s, req, from)
  local caller = from[1]
  local kind = typeof(req) == "tuple" and req[1] or req
  if kind == atom.join_local then return join_local(s, req[2], req[3]) end
  if kind == atom.leave_local then return leave_local(s, req[2], req[3]) end
  if kind == atom.get_members then return members(s, req[2], false) end
  if kind == atom.get_local_members then return members(s, req[2], true) end
  if kind == atom.which_groups then return groups_list(s, false) end
  if kind == atom.which_local_groups then return groups_list(s, true) end
  if req == MONITOR then
    local ref = mb.monitor(caller)
    s.scope_mons[ref] = caller
    local all = {}
    for _, g in pairs(s.groups) do all[#all + 1] = tuple(g.group, list_of(g.all)) end
    return tuple(ref, list_of(all))
  end
  if kind == MONITOR then
    local key = key_of(req[2])
    if key == nil then return tuple(atom.error, atom.badarg) end
    local ref = mb.monitor(caller)
    s.group_mons[ref] = {pid = caller, key = key}
    return tuple(ref, members(s, req[2], false))
  end
  if kind == atom.demonitor then
    local ref = req[2]
    if s.scope_mons[ref] == nil and s.group_mons[ref] == nil then return false end
    s.scope_mons[ref], s.group_mons[ref] = nil, nil
    mb.demonitor(ref, {flush = true})
    return OK
  end
  return tuple(atom.error, atom.badarg)
end

-- One message; anything that does not have a shape this scope knows is
-- dropped.
local function dispatch(s, msg)
  if typeof(msg) ~= "tuple" then return end
  local kind = msg[1]
  if kind == GEN_CALL and msg.n == 3 and typeof(msg[2]) == "tuple"
      and typeof(msg[2][1]) == "pid" then
    local reply = handle_call(s, msg[3], msg[2])
    pcall(gen.reply, msg[2], reply)
  elseif kind == GEN_CAST and typeof(msg[2]) == "tuple" then
    local c = msg[2]
    if c[1] == SYNC and c.n == 3 and typeof(c[2]) == "pid" and not is_local(c[2])
        and (typeof(c[3]) == "list" or typeof(c[3]) == "table") then
      if not on_sync(s, c[2], c[3]) then
        mb.log("warning", "pg: scope " .. tostring(s.name) .. " dropped a malformed sync from "
          .. tostring(mb.node(c[2])))
      end
    end
  elseif kind == DISCOVER and (msg.n == 2 or msg.n == 3) and typeof(msg[2]) == "pid"
      and not is_local(msg[2]) then
    on_discover(s, msg[2])
  elseif kind == JOIN and msg.n == 4 and typeof(msg[2]) == "pid" then
    on_join(s, msg[2], msg[3], msg[4])
  elseif kind == LEAVE and msg.n == 4 and typeof(msg[2]) == "pid" then
    on_leave(s, msg[2], msg[3], msg[4])
  elseif kind == DOWN and msg.n == 5 then
    on_down(s, msg[2], msg[4])
  elseif kind == NODEUP and typeof(msg[2]) == "atom" then
    on_nodeup(s, msg[2])
  end
end

-- The scope's life, once it is registered as `name`.
local function serve(name)
  local s = {name = typeof(name) == "atom" and name or atom(name), groups = {},
    locals = {}, remote = {}, scope_mons = {}, group_mons = {}}
  mb.monitor_nodes(true)
  for _, n in ipairs(mb.nodes()) do discover(s, {s.name, n}) end
  while true do
    local msg = mb.receive()
    -- A bug here must not end the scope: the message is dropped and said.
    local done, err = pcall(dispatch, s, msg)
    if not done then
      mb.log("error", "pg: scope " .. tostring(s.name) .. " dropped a message: " .. tostring(err))
    end
  end
end

--- Entry point of a scope process (see gen.start); not for users.
function M.init_it(starter, ref, parent, name)
  if not gen.take_name(starter, ref, parent, name) then return end
  gen.ack(starter, ref, true)
  return serve(name)
end

--- Entry point of the default scope, which start_distribution starts
-- and registers as pg; not for users.
function M.run_default() return serve(DEFAULT) end

-- ---------------------------------------------------------------------------
-- Client side

local function check_scope(scope, fname)
  local t = typeof(scope)
  if t ~= "string" and t ~= "atom" then
    gen.argerror(1, fname, "scope name (string or atom) expected, got " .. t, 2)
  end
  return scope
end

--- Start a scope, registered under its name, not linked to the caller.
-- @param scope the scope's name (default "pg")
-- @return pid, or nil and the reason ({already_started, Pid})
function M.start(scope)
  scope = check_scope(scope or DEFAULT, "start")
  return gen.start("moonbeam.pg", false, {name = scope})
end

--- Start a scope linked to the caller (under a supervisor, say).
-- @see start
function M.start_link(scope)
  scope = check_scope(scope or DEFAULT, "start_link")
  return gen.start("moonbeam.pg", true, {name = scope})
end

-- The arguments (scope, group, pids) of join and leave, the scope left
-- out for the default one.
local function scoped(n, ...)
  if select("#", ...) >= n then return ... end
  return DEFAULT, ...
end

local function call(scope, request, fname)
  local r = gen.call(scope, request, math.huge, "pg")
  if typeof(r) == "tuple" and r[1] == atom.error then
    error(("pg.%s: %s"):format(fname, tostring(require("moonbeam.inspect")(r[2]))), 3)
  end
  return r
end

local function check_pids(pids, fname)
  if pids_of(pids) == nil then
    gen.argerror(3, fname, "pid or list of pids expected, got " .. typeof(pids), 3)
  end
  if typeof(pids) == "table" then return list_of(pids) end
  return pids
end

--- Join pids (this node's) to a group; a pid may join a group more than
-- once, and must leave it as many times.
--   pg.join(group, pids)  or  pg.join(scope, group, pids)
-- @param pids a pid or a list of pids
-- @return the atom ok
function M.join(...)
  local scope, group, pids = scoped(3, ...)
  return call(check_scope(scope, "join"), tuple(atom.join_local, group,
    check_pids(pids, "join")), "join")
end

--- Make pids leave a group.
--   pg.leave(group, pids)  or  pg.leave(scope, group, pids)
-- @return ok, or not_joined when none of them had joined it
function M.leave(...)
  local scope, group, pids = scoped(3, ...)
  return call(check_scope(scope, "leave"), tuple(atom.leave_local, group,
    check_pids(pids, "leave")), "leave")
end

--- The members of a group on every node the scope knows (a list of pids,
-- one per join, in no particular order).
--   pg.get_members(group)  or  pg.get_members(scope, group)
function M.get_members(...)
  local scope, group = scoped(2, ...)
  return call(check_scope(scope, "get_members"), tuple(atom.get_members, group), "get_members")
end

--- The members of a group on this node.
function M.get_local_members(...)
  local scope, group = scoped(2, ...)
  return call(check_scope(scope, "get_local_members"),
    tuple(atom.get_local_members, group), "get_local_members")
end

--- The groups with at least one member, on any node (a list).
function M.which_groups(scope)
  return call(check_scope(scope or DEFAULT, "which_groups"), atom.which_groups, "which_groups")
end

--- The groups with at least one member on this node.
function M.which_local_groups(scope)
  return call(check_scope(scope or DEFAULT, "which_local_groups"),
    atom.which_local_groups, "which_local_groups")
end

--- Watch a whole scope: returns a ref and the groups now, a list of
-- {Group, Pids} tuples; then each change comes as {Ref, join, Group, Pids}
-- or {Ref, leave, Group, Pids}.
function M.monitor_scope(scope)
  local r = call(check_scope(scope or DEFAULT, "monitor_scope"), MONITOR, "monitor_scope")
  return r[1], r[2]
end

--- Watch one group: returns a ref and its members now; changes come as
-- for monitor_scope.
--   pg.monitor(group)  or  pg.monitor(scope, group)
function M.monitor(...)
  local scope, group = scoped(2, ...)
  local r = call(check_scope(scope, "monitor"), tuple(MONITOR, group), "monitor")
  return r[1], r[2]
end

--- Stop watching (a scope or a group) and drop the updates already
-- queued for ref.
--   pg.demonitor(ref)  or  pg.demonitor(scope, ref)
-- @return ok, or false if ref was not a monitor of the scope
function M.demonitor(...)
  local scope, ref = scoped(2, ...)
  local r = call(check_scope(scope, "demonitor"), tuple(atom.demonitor, ref), "demonitor")
  if r == OK then
    while mb.receive(function(m) return typeof(m) == "tuple" and m[1] == ref end, 0) do end
  end
  return r
end

return M
