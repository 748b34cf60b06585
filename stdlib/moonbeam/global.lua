--- Names registered across a cluster, as Erlang's `global` keeps them, and
-- the protocol that keeps them in step with Erlang and Elixir nodes.
--
--   local global = require "moonbeam.global"
--   global.register_name("db", mb.self())     -- true, or false if taken
--   global.whereis_name("db")                 -- the pid on any node, or nil
--   global.send("db", msg)
--
-- A node runs four kinds of processes, as OTP's global does:
--   global_name_server  (registered) keeps the names and locks of this node
--                       and answers the other nodes' name servers;
--   the locker          agrees with a new node's locker on a cluster-wide
--                       lock before the two exchange their names;
--   the registrar       takes the lock on every known node for a
--                       register or unregister from this node;
--   a resolver per new  compares the other node's names with ours and
--   node                resolves conflicts.
--
-- The dialogue with a node that comes up (protocol version 8, as OTP 25
-- to 29 speak it): both name servers cast {init_connect, {8, Tag}, Node,
-- {locker, no_longer_a_pid, Known, Locker}}; the lockers lock
-- {global, [LockerA, LockerB]} on both nodes and every node they know and
-- tell each other with {lock_set, Locker, true, Known, Tag}; the name
-- servers then cast {exchange, Node, Names, [], Tag}, the resolvers answer
-- with what to insert and delete, each side casts {resolved, ...}, and the
-- nodes each knew hear of the newcomer with {new_nodes, ...} and
-- {in_sync, ...}.  A node is synced once that is done; global:sync() on
-- an Erlang node waits for exactly that.
--
-- A message of another shape, or with wrong contents, is logged and
-- dropped: it never stops the name server or the node.
local mb = require "moonbeam"
local gen = require "moonbeam.gen"
local term = require "moonbeam.term"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring

local M = {}

local NAME = "global_name_server"
local VSN = 8 -- the protocol version OTP 25 to 29 speak

local GEN_CALL, GEN_CAST, DOWN = atom["$gen_call"], atom["$gen_cast"], atom.DOWN
local A = atom
local OWN = atom["$moonbeam_global"] -- requests only this node's processes make

-- ---------------------------------------------------------------------------
-- Terms

-- The elements of a list or tuple as received, or nil if it is neither.
local function items(l)
  local t = typeof(l)
  if t ~= "list" and t ~= "tuple" and t ~= "table" then return nil end
  local out = {}
  for i = 1, l.n or #l do out[i] = l[i] end
  return out
end

local function is_tuple(v, n)
  return typeof(v) == "tuple" and (n == nil or #v == n)
end

-- A key for any term: its external format.
local function key_of(t) return term.term_to_binary(t) end

-- The node, serial and number of a pid, read from its external format
-- (NEW_PID_EXT: the node's atom, then ID, Serial and Creation).
local function pid_parts(pid)
  local b = term.term_to_binary(pid)
  local tag, at = b:byte(2), 3
  if tag ~= 88 and tag ~= 103 then return nil end
  local atag, len = b:byte(at)
  if atag == 118 or atag == 100 then
    len, at = string.unpack(">I2", b, at + 1)
  else
    len, at = b:byte(at + 1), at + 2
  end
  local node = b:sub(at, at + len - 1)
  local num, serial = string.unpack(">I4I4", b, at + len)
  return node, serial, num
end

--- The name of the node a pid lives on (a string).
local function node_of(pid) return (pid_parts(pid)) end
M.node_of = node_of

-- Erlang's order of pids: serial and number first, the node last.  Both
-- lockers of a pair must build the same lock id from their two pids.
local function pid_lt(a, b)
  local an, as, anum = pid_parts(a)
  local bn, bs, bnum = pid_parts(b)
  if as ~= bs then return as < bs end
  if anum ~= bnum then return anum < bnum end
  return an < bn
end

local function sorted_pids(a, b)
  if pid_lt(b, a) then return mb.list(b, a) end
  return mb.list(a, b)
end

local function me() return tostring(mb.node()) end

-- Names given as Lua strings are atoms, as mb.register takes them, so that
-- Erlang's global:whereis_name(db) finds global.register_name("db", ...).
local function norm_name(name)
  if type(name) == "string" then return atom(name) end
  return name
end

-- The built-in resolve functions, as the Erlang funs `fun global:F/3`.
local function export_fun(f)
  return term.binary_to_term(string.pack("BBBs1Bs1BB", 131, 113, 119, "global", 119, f, 97, 3))
end
local BUILTIN = {}
for _, f in ipairs{"random_exit_name", "random_notify_name", "notify_all_name"} do
  BUILTIN[f] = export_fun(f)
end

-- ---------------------------------------------------------------------------
-- Calls and casts to name servers

local function dest(node)
  if node == me() then return mb.whereis(NAME) end
  return tuple(atom(NAME), atom(node))
end

local function cast(node, msg)
  local to = dest(node)
  if to then pcall(mb.send, to, tuple(GEN_CAST, msg)) end
end

local function send(node, msg)
  local to = dest(node)
  if to then pcall(mb.send, to, msg) end
end

-- Call the name server on each node; return node -> reply for the nodes
-- that answered (a node that is down or has no name server is left out,
-- as gen_server:multi_call leaves out its bad nodes).
local function multi_call(nodes, req, timeout)
  local waiting, prefilter, n = {}, {[DOWN] = true}, 0
  for _, node in ipairs(nodes) do
    local to = dest(node)
    if to then
      local ref = mb.monitor(to)
      mb.send(to, tuple(GEN_CALL, tuple(mb.self(), ref), req))
      waiting[ref], prefilter[ref], n = node, true, n + 1
    end
  end
  local replies = {}
  while n > 0 do
    local m = mb.receive(function(m)
      return typeof(m) == "tuple" and (waiting[m[1]] ~= nil or (m[1] == DOWN and waiting[m[2]] ~= nil))
    end, timeout or 60000, prefilter)
    if m == nil then break end
    local ref = m[1] == DOWN and m[2] or m[1]
    if m[1] ~= DOWN then
      replies[waiting[ref]] = m[2]
      mb.demonitor(ref, {flush = true})
    end
    waiting[ref], n = nil, n - 1
  end
  for ref in pairs(waiting) do mb.demonitor(ref, {flush = true}) end
  return replies
end

-- The name server starts with distribution, in a process of its own: a
-- caller that comes right after mb.start_distribution may have to wait
-- (a few ms, bounded) until it has registered its name.
local function server()
  local pid = mb.whereis(NAME)
  for _ = 1, 200 do
    if pid or me() == "nonode@nohost" then break end
    mb.sleep(5)
    pid = mb.whereis(NAME)
  end
  return pid or NAME
end

local function call_local(req, timeout)
  return gen.call(server(), req, timeout or math.huge, "global")
end

-- ---------------------------------------------------------------------------
-- Locks on a set of nodes (global:set_lock/3 and del_lock/2)

local function boss_of(nodes)
  local b
  for _, n in ipairs(nodes) do if b == nil or n > b then b = n end end
  return b
end

local function without(nodes, drop)
  local skip, out = {}, {}
  for _, n in ipairs(drop) do skip[n] = true end
  for _, n in ipairs(nodes) do if not skip[n] then out[#out + 1] = n end end
  return out
end

local function del_lock_on(id, nodes) multi_call(nodes, tuple(A.del_lock, id)) end

local function set_lock_on(id, nodes)
  if #nodes == 0 then return true end
  if #nodes > 1 then
    for _, n in ipairs(nodes) do
      if n == me() and not call_local(tuple(OWN, A.can_set_lock, id)) then return false end
    end
  end
  local replies = multi_call(nodes, tuple(A.set_lock, id))
  local yes, count, refused = {}, 0, false
  for n, r in pairs(replies) do
    count = count + 1
    if r == true then yes[#yes + 1] = n else refused = true end
  end
  if not refused then return true end
  if count > 1 then del_lock_on(id, yes) end
  return false
end

local function random_sleep(times)
  local tmax = times > 5 and 8000 or (1 << times) * 1000 // 8
  mb.sleep(math.random(tmax))
end

-- ---------------------------------------------------------------------------
-- Resolving a conflict

local function minmax(p1, p2)
  if node_of(p1) < node_of(p2) then return p1, p2 end
  return p2, p1
end

local builtin_fn = {
  random_exit_name = function(name, p1, p2)
    local min, max = minmax(p1, p2)
    mb.log("info", "global: Name conflict terminating " .. tostring(tuple(name, max)))
    mb.exit(max, "kill")
    return min
  end,
  random_notify_name = function(name, p1, p2)
    local min, max = minmax(p1, p2)
    mb.send(max, tuple(A.global_name_conflict, name))
    return min
  end,
  notify_all_name = function(name, p1, p2)
    mb.send(p1, tuple(A.global_name_conflict, name, p2))
    mb.send(p2, tuple(A.global_name_conflict, name, p1))
    return A.none
  end,
}

--- Run a name's resolve method for a conflict between pid1 and pid2 (on
-- the node of the name's process; other nodes call it as
-- global:resolve_it/4).  The method is one of global's own funs, or
-- {Module, Function} naming a Lua function(name, pid1, pid2) that returns
-- the pid to keep, or nil for none.
-- @return the pid to keep, or the atom none
function M.resolve_it(method, name, pid1, pid2)
  local fn
  for f, fun in pairs(BUILTIN) do
    if method == fun then fn = builtin_fn[f] end
  end
  if fn == nil and is_tuple(method, 2) and typeof(method[1]) == "atom" then
    local ok, mod = pcall(require, tostring(method[1]))
    if ok and type(mod) == "table" then fn = mod[tostring(method[2])] end
  end
  if type(fn) ~= "function" then
    mb.log("info", "global: no resolve function " .. tostring(method) .. " for " .. tostring(name))
    return tuple(A.EXIT, tuple(A.badfun, method))
  end
  local ok, r = pcall(fn, name, pid1, pid2)
  if not ok then return tuple(A.EXIT, tostring(r)) end
  if r == nil or r == false or r == "none" then return A.none end
  return r
end

-- The method of a registration from Lua: nil (global's default,
-- random_exit_name), the name of one of global's three, or
-- {module, function} naming a Lua function.
local function method_of(resolve, fname)
  if resolve == nil then return BUILTIN.random_exit_name end
  if type(resolve) == "string" and BUILTIN[resolve] then return BUILTIN[resolve] end
  if type(resolve) == "table" and type(resolve[1]) == "string" and type(resolve[2]) == "string" then
    return tuple(atom(resolve[1]), atom(resolve[2]))
  end
  gen.argerror(3, fname, "resolve: {module, function}, or a name of global's resolve functions expected", 2)
end

-- A resolver: waits for the other node's names and ours, works out what
-- to insert here (ops) and what the other node must insert (resolved),
-- and casts {exchange_ops, ...} to the name server.
function M.resolver(node, tag)
  local m = mb.receive(function(m)
    return is_tuple(m, 4) and m[1] == A.resolve and tostring(m[3]) == node
  end)
  local his, ours = items(m[2]) or {}, m[4]
  local ops, res = {}, {}
  local RPC = require "moonbeam.rpc"
  for _, h in ipairs(his) do
    if is_tuple(h, 3) then
      local name, pid, method = h[1], h[2], h[3]
      local mine = ours[key_of(name)]
      local insert_his = tuple(A.insert, tuple(name, pid, method))
      if mine == nil then
        ops[#ops + 1] = insert_his
      elseif mine.pid ~= pid and me() < node then
        local at, r = node_of(mine.pid)
        if at == me() then
          r = M.resolve_it(mine.method, name, pid, mine.pid)
        else
          local ok, v = pcall(RPC.call, at, "global", "resolve_it",
            {mine.method, name, pid, mine.pid}, 60000)
          r = ok and v or tuple(A.badrpc, v)
        end
        if r == pid then
          ops[#ops + 1] = insert_his
        elseif r == mine.pid then
          res[#res + 1] = tuple(A.insert, tuple(name, mine.pid, mine.method))
        elseif r == A.none then
          ops[#ops + 1] = tuple(A.delete, name)
          res[#res + 1] = tuple(A.delete, name)
        elseif is_tuple(r) and r[1] == A.badrpc then
          mb.log("info", "global: badrpc " .. tostring(r[2]) .. " when resolving " .. tostring(name))
          ops[#ops + 1] = insert_his
        else
          mb.log("info", "global: resolve method for " .. tostring(name) .. " returned " .. tostring(r))
          ops[#ops + 1] = tuple(A.delete, name)
          res[#res + 1] = tuple(A.delete, name)
        end
      end
    end
  end
  cast(me(), tuple(A.exchange_ops, atom(node), tag, mb.list(table.unpack(ops)),
    mb.list(table.unpack(res))))
end

-- ---------------------------------------------------------------------------
-- The registrar: register and unregister under the lock on every node

local function set_lock_known(id)
  local times = 0
  while true do
    local known = items(call_local(tuple(OWN, A.known))) or {}
    for i, n in ipairs(known) do known[i] = tostring(n) end
    local nodes = {me(), table.unpack(known)}
    local boss = {boss_of(nodes)}
    if set_lock_on(id, boss) then
      if set_lock_on(id, nodes) then
        local now = items(call_local(tuple(OWN, A.known))) or {}
        if #now == #known then return nodes end
      end
      del_lock_on(id, boss)
    end
    random_sleep(times)
    times = times + 1
  end
end

local function trans_all_known(op)
  local id = tuple(A.global, mb.self())
  local nodes = set_lock_known(id)
  local ok, r = pcall(function()
    local kind = op[1]
    if kind == A.register then
      if not call_local(tuple(OWN, A.may_register, op[2], op[3])) then return false end
      multi_call(nodes, tuple(A.register, op[2], op[3], op[4]))
      return true
    elseif kind == A.re_register then
      multi_call(nodes, tuple(A.register, op[2], op[3], op[4]))
      return true
    elseif kind == A.unregister then
      multi_call(nodes, tuple(A.unregister, op[2]))
      return true
    end
    return false
  end)
  local boss = boss_of(nodes)
  del_lock_on(id, without(nodes, {boss}))
  del_lock_on(id, {boss})
  if not ok then error(r, 0) end
  return r
end

function M.registrar()
  while true do
    local m = mb.receive()
    if is_tuple(m, 3) and m[1] == A.trans then
      local ok, r = pcall(trans_all_known, m[2])
      if not ok then mb.log("error", "global: registrar: " .. tostring(r)) end
      gen.reply(m[3], ok and r or false)
    end
  end
end

-- ---------------------------------------------------------------------------
-- The locker

local function locker_lock_id(his) return tuple(A.global, sorted_pids(mb.self(), his)) end

function M.locker(gns)
  local L = {known = {}, locals = {}, remotes = {}, just_synced = false}
  local myhost = me():match("@(.*)$")

  local function update_known(upd)
    if upd[1] == "add" then
      for _, n in ipairs(upd[2]) do L.known[#L.known + 1] = n end
    else
      L.known = without(L.known, {upd[2]})
    end
    L.boss = boss_of({me(), table.unpack(L.known)})
  end
  L.boss = me()

  -- Take the add/remove messages the name server sent meanwhile.
  local function drain_known()
    while true do
      local m = mb.receive(function(m)
        return is_tuple(m) and (m[1] == A.add_to_known or m[1] == A.remove_from_known)
      end, 0)
      if m == nil then return end
      if m[1] == A.add_to_known then update_known{"add", m[2]} else update_known{"remove", m[2]} end
    end
  end

  local function lock_nodes_safely(id, extra)
    local first = {L.boss}
    if not (L.boss == me() or gen.call(gns, tuple(OWN, A.can_set_lock, id), math.huge)) then
      return false
    end
    if not set_lock_on(id, first) then return false end
    drain_known()
    local second = without({me(), table.unpack(extra)}, first)
    if not set_lock_on(id, second) then
      del_lock_on(id, first)
      return false
    end
    if not set_lock_on(id, without(L.known, first)) then
      local sofar = {table.unpack(first)}
      for _, n in ipairs(second) do sofar[#sofar + 1] = n end
      del_lock_on(id, sofar)
      return false
    end
    return true
  end

  local function delete_global_lock(id, nodes)
    local boss = boss_of(nodes)
    del_lock_on(id, without(nodes, {boss}))
    del_lock_on(id, {boss})
  end

  local function send_lock_set(isset, his_locker, his_tag)
    local node = node_of(his_locker)
    local known = {}
    for i, n in ipairs(L.known) do known[i] = atom(n) end
    cast(node, tuple(A.lock_set, mb.self(), isset, mb.list(table.unpack(known)), his_tag))
  end

  local function find(node)
    for _, l in ipairs{L.locals, L.remotes} do
      for _, h in ipairs(l) do if h.node == node then return h end end
    end
  end

  local function remove_node(node, tag)
    for _, l in ipairs{L.locals, L.remotes} do
      for i = #l, 1, -1 do
        if l[i].node == node and l[i].my_tag == tag then table.remove(l, i) end
      end
    end
  end

  local function run_fun(fun)
    if type(fun) == "table" and fun.msg ~= nil then
      for _, n in ipairs(fun.nodes) do cast(n, fun.msg) end
    end
  end

  -- Wait until the name server says the exchange with node is over.
  local function wait_cancel(node, id, tag, known)
    local m = mb.receive(function(m)
      return is_tuple(m, 4) and m[1] == A.cancel and m[2] == node and m[3] == tag
    end)
    run_fun(m[4])
    delete_global_lock(id, known)
  end

  local function known_with(...)
    local k = {...}
    for _, n in ipairs(L.known) do k[#k + 1] = n end
    return k
  end

  local function on_lock_set(pid, set, tag)
    if set ~= true then return end
    local node = node_of(pid)
    local h = find(node)
    if h == nil or (tag ~= nil and h.my_tag ~= tag) then
      send_lock_set(false, pid, 0)
      return
    end
    local id = locker_lock_id(pid)
    local ok = lock_nodes_safely(id, {})
    send_lock_set(ok, pid, h.his_tag)
    if ok then
      cast(me(), tuple(A.lock_is_set, atom(node), h.my_tag, id))
      wait_cancel(node, id, h.my_tag, known_with(me()))
      L.just_synced = true
      remove_node(node, h.my_tag)
    else
      L.just_synced = false
    end
  end

  -- We asked h's locker; wait for its answer.
  local function lock_is_set(h, known, id)
    while true do
      local m = mb.receive(function(m)
        if not is_tuple(m) then return false end
        if m[1] == A.lock_set then return (#m == 4 or #m == 5) and typeof(m[2]) == "pid" and node_of(m[2]) == h.node end
        return #m == 4 and m[1] == A.cancel and m[2] == h.node and m[3] == h.my_tag
      end)
      if m[1] == A.cancel then
        run_fun(m[4])
        delete_global_lock(id, known)
        remove_node(h.node, h.my_tag)
        return
      end
      local current = #m == 4 or m[5] == h.my_tag
      if current and m[3] == true then
        cast(me(), tuple(A.lock_is_set, atom(h.node), h.my_tag, id))
        wait_cancel(h.node, id, h.my_tag, known)
        L.just_synced = true
        remove_node(h.node, h.my_tag)
        return
      elseif current then
        delete_global_lock(id, known)
        return
      end
    end
  end

  local function select_node()
    local use = #L.locals > 0 and L.locals or L.remotes
    local skip = {}
    for _, n in ipairs(L.known) do skip[n] = true end
    for i = #use, 1, -1 do if skip[use[i].node] then table.remove(use, i) end end
    if #use == 0 then return end
    local h = use[math.random(#use)]
    local id = locker_lock_id(h.locker)
    if lock_nodes_safely(id, {h.node}) then
      send_lock_set(true, h.locker, h.his_tag)
      lock_is_set(h, known_with(me(), h.node), id)
    end
  end

  local function handle(m)
    if not is_tuple(m) then return end
    local tag = m[1]
    if tag == A.his_the_locker and #m == 5 and typeof(m[2]) == "pid" then
      local node = node_of(m[2])
      local h = {node = node, locker = m[2], my_tag = m[5], his_tag = m[4]}
      local l = node:match("@(.*)$") == myhost and L.locals or L.remotes
      l[#l + 1] = h
    elseif tag == A.cancel and #m == 4 then
      if m[3] ~= false then remove_node(m[2], m[3]) end
    elseif tag == A.lock_set and (#m == 4 or #m == 5) and typeof(m[2]) == "pid" then
      on_lock_set(m[2], m[3], m[5])
    elseif tag == A.add_to_known then
      update_known{"add", m[2]}
    elseif tag == A.remove_from_known then
      update_known{"remove", m[2]}
    else
      mb.log("warning", "global: the locker got an unexpected message: " .. tostring(m))
    end
  end

  while true do
    local m = mb.receive(0)
    if m == nil then
      local timeout
      if #L.locals + #L.remotes > 0 then
        timeout = L.just_synced and 0 or #L.known == 0 and 200
          or math.min(1000 + 100 * #L.known, 3000)
      end
      L.just_synced = false
      local why
      m, why = mb.receive(timeout)
      if why == "timeout" then
        m = nil
        local ok, err = pcall(function()
          if not gen.call(gns, tuple(OWN, A.is_global_lock_set), math.huge) then select_node() end
        end)
        if not ok then mb.log("warning", "global: the locker's attempt failed: " .. tostring(err)) end
      end
    end
    if m ~= nil then
      local ok, err = pcall(handle, m)
      if not ok then mb.log("warning", "global: the locker dropped " .. tostring(m) .. ": " .. tostring(err)) end
    end
  end
end

-- ---------------------------------------------------------------------------
-- The name server

local S -- the state of this node's name server (in its own process only)

local function nstate(node)
  local ns = S.ns[node]
  if ns == nil then ns = {}; S.ns[node] = ns end
  return ns
end

local function reset_node_state(node) S.ns[node] = nil end

local function tell_syncers(node, down)
  for i = #S.syncers, 1, -1 do
    local s = S.syncers[i]
    s.waiting[node] = nil
    if next(s.waiting) == nil then
      gen.reply(s.from, A.ok)
      table.remove(S.syncers, i)
    end
  end
  return down
end

local function known_list(with_vsn)
  local l = {}
  for n, v in pairs(S.known) do
    l[#l + 1] = with_vsn and tuple(atom(n), v) or atom(n)
  end
  return mb.list(table.unpack(l))
end

local function node_vsn(node)
  if node == me() then return VSN end
  return S.known[node] or S.pending[node] or 0
end

-- Names

local function delete_name(key)
  local e = S.names[key]
  if e == nil then return end
  S.names[key] = nil
  S.by_ref[e.ref] = nil
  mb.demonitor(e.ref, {flush = true})
  local pn = S.pid_names[e.pid]
  if pn then
    pn[key] = nil
    if next(pn) == nil then S.pid_names[e.pid] = nil end
  end
end

local function lock_still_set(from, extra)
  local lk = S.locks[key_of(A.global)]
  if lk == nil then return not S.global_lock_down end
  if typeof(from) == "pid" then return lk.holders[from] ~= nil end
  for _, e in ipairs(items(extra) or {}) do
    if is_tuple(e, 2) and e[1] == A.lock and is_tuple(e[2], 2) then
      return gen.equal(lk.req, e[2][2])
    end
  end
  return false
end

local function ins_name(name, pid, method, from, extra)
  if typeof(pid) ~= "pid" then error("not a pid: " .. tostring(pid)) end
  local key = key_of(name)
  delete_name(key)
  local ref = mb.monitor(pid)
  S.names[key] = {name = name, pid = pid, method = method, ref = ref}
  S.by_ref[ref] = {name = key}
  S.pid_names[pid] = S.pid_names[pid] or {}
  S.pid_names[pid][key] = true
  if not lock_still_set(from, extra) then delete_name(key) end
end

local function where(name)
  local e = S.names[key_of(name)]
  return e and e.pid
end

local function names_list()
  local l = {}
  for _, e in pairs(S.names) do l[#l + 1] = tuple(e.name, e.pid, e.method) end
  return mb.list(table.unpack(l))
end

local function do_ops(ops, from, extra)
  local dels = {}
  for _, op in ipairs(items(ops) or {}) do
    if is_tuple(op, 2) and op[1] == A.insert and is_tuple(op[2], 3) then
      ins_name(op[2][1], op[2][2], op[2][3], from, extra)
    elseif is_tuple(op, 2) and op[1] == A.delete then
      dels[#dels + 1] = op[2]
    end
  end
  for _, name in ipairs(dels) do delete_name(key_of(name)) end
end

-- Locks

local function can_set_lock(id)
  if not is_tuple(id, 2) then error("bad lock id " .. tostring(id)) end
  local lk = S.locks[key_of(id[1])]
  if lk == nil then return true end
  return gen.equal(lk.req, id[2])
end

local function set_lock(id, pid)
  if typeof(pid) ~= "pid" or not can_set_lock(id) then return false end
  local k = key_of(id[1])
  local lk = S.locks[k]
  if lk == nil then
    lk = {res = id[1], req = id[2], holders = {}}
    S.locks[k] = lk
  end
  if lk.holders[pid] == nil then
    local ref = mb.monitor(pid)
    lk.holders[pid] = ref
    S.by_ref[ref] = {lock = k, pid = pid}
  end
  return true
end

local function remove_lock(k, pid, down)
  local lk = S.locks[k]
  local ref = lk and lk.holders[pid]
  if ref == nil then return end
  lk.holders[pid] = nil
  S.by_ref[ref] = nil
  mb.demonitor(ref, {flush = true})
  if next(lk.holders) == nil then
    S.locks[k] = nil
    if lk.res == A.global then S.global_lock_down = down end
  end
end

local function del_lock(id, pid)
  if not is_tuple(id, 2) then return end
  local k = key_of(id[1])
  local lk = S.locks[k]
  if lk and gen.equal(lk.req, id[2]) then remove_lock(k, pid, false) end
end

-- The dialogue with another node

local function send_cancel_connect(node, tag)
  local v = S.pending[node]
  local ns = S.ns[node]
  if v and v >= VSN and ns and ns.my_tag == tag then
    send(node, tuple(A.cancel_connect, mb.node(), ns.his_tag))
  end
end

local function cancel_locker(node, tag, fun)
  mb.send(S.locker, tuple(A.cancel, node, tag or false, fun or false))
  send_cancel_connect(node, tag)
  local r = S.resolvers[node]
  if r and r.tag == tag then
    mb.exit(r.pid, "kill")
    S.resolvers[node] = nil
  end
end

local handle_nodeup, init_connect

local function restart_connect(node, tag)
  cancel_locker(node, tag)
  reset_node_state(node)
  S.pending[node] = nil
  if math.type(tag) == "integer" then handle_nodeup(node) end
end

-- With connect_all off, as in OTP's global, a nodeup starts no exchange:
-- the node takes no part in the mesh.
function handle_nodeup(node)
  if not S.connect_all then return end
  if node == me() or S.known[node] or S.resolvers[node] then return end
  S.tags = S.tags + 1
  local tag = S.tags
  local ns = nstate(node)
  ns.my_tag = tag
  local pre = ns.pre_connect
  ns.pre_connect = nil
  cast(node, tuple(A.init_connect, tuple(VSN, tag), mb.node(),
    tuple(A.locker, A.no_longer_a_pid, mb.map{}, S.locker)))
  S.resolvers[node] = {tag = tag, pid = mb.spawn("moonbeam.global", "resolver", node, tag)}
  if pre then init_connect(pre.vsn, node, pre.msg) end
end

function init_connect(vsn, node, msg)
  local hisvsn, histag
  if is_tuple(vsn) and #vsn >= 2 and math.type(vsn[1]) == "integer" then
    hisvsn, histag = vsn[1], vsn[2]
  else
    mb.log("info", "global: illegal protocol version " .. tostring(vsn) .. " from " .. node)
    return
  end
  if S.pending[node] then
    if hisvsn < VSN then
      mb.log("error", "global: out of sync connection attempt from old version node " .. node)
      mb.disconnect(atom(node))
      return
    end
    send(node, tuple(A.cancel_connect, mb.node(), histag))
    restart_connect(node, nstate(node).my_tag)
    return
  end
  local ns = nstate(node)
  ns.prot_vsn, ns.his_tag = math.min(hisvsn, VSN), histag
  local r = S.resolvers[node]
  if r then
    if not (is_tuple(msg, 4) and typeof(msg[4]) == "pid") then
      error("bad init_connect locker " .. tostring(msg))
    end
    mb.send(S.locker, tuple(A.his_the_locker, msg[4], tuple(ns.prot_vsn, mb.list()), histag, r.tag))
    send(node, tuple(A.init_connect_ack, mb.node(), histag, r.tag))
    S.pending[node] = hisvsn
  else
    ns.pre_connect = {vsn = vsn, msg = msg}
  end
end

local function exchange(node, namelist)
  local ns = nstate(node)
  if ns.wait_lock == "lock_is_set" then
    ns.wait_lock = nil
    local ours = {}
    for k, e in pairs(S.names) do ours[k] = {pid = e.pid, method = e.method} end
    local r = S.resolvers[node]
    if r then mb.send(r.pid, tuple(A.resolve, namelist, atom(node), ours)) end
  else
    ns.wait_lock = {exchange = namelist}
  end
end

local function sync_others(nodes)
  for _, n in ipairs(nodes) do
    mb.spawn(function(node, mynode)
      local mb = require "moonbeam"
      local dist = require "moonbeam.dist"
      local ok, up = pcall(dist.connect, node, 7000)
      if ok and up then
        mb.send(mb.tuple(mb.atom.global_name_server, mb.atom(node)),
          mb.tuple(mb.atom["$gen_cast"], mb.tuple(mb.atom.in_sync, mb.atom(mynode), true)))
      else
        mb.log("warning", "global: " .. mynode .. " failed to connect to " .. node)
        local gns = mb.whereis("global_name_server")
        if gns then mb.send(gns, mb.tuple(mb.atom.extra_nodedown, mb.atom(node))) end
      end
    end, n, me())
  end
end

local function add_to_known(list)
  local added = {}
  for _, e in ipairs(list) do
    local n, v
    if is_tuple(e, 2) then n, v = tostring(e[1]), e[2] else n, v = tostring(e), 0 end
    if n ~= me() and n:match("^[^@]+@[^@]+$") and math.type(v) == "integer" then
      if S.known[n] == nil then
        S.known[n] = v
        added[#added + 1] = n
      elseif S.known[n] < 0 then
        S.known[n] = v
      end
    end
  end
  return added
end

local function cancel_resolved_locker(node, fun)
  local ns = S.ns[node]
  local tag = ns and ns.my_tag
  S.pending[node] = nil
  cancel_locker(node, tag, fun)
  reset_node_state(node)
end

local function resolved(node, his_resolved, his_known)
  local ns = nstate(node)
  local ops = items(ns.ops) or {}
  for _, op in ipairs(items(his_resolved) or {}) do ops[#ops + 1] = op end
  local hk = items(his_known) or {}
  local new_nodes, his_nodes = {tuple(atom(node), node_vsn(node))}, {}
  for _, e in ipairs(hk) do
    local n = is_tuple(e, 2) and e[1] or e
    if typeof(n) == "atom" and tostring(n):match("^[^@]+@[^@]+$") then
      his_nodes[#his_nodes + 1] = tostring(n)
      local v = is_tuple(e, 2) and e[2] or 0
      if v == 0 then v = node_vsn(tostring(n)) end
      new_nodes[#new_nodes + 1] = tuple(n, v)
    end
  end
  sync_others(his_nodes)
  local extra = mb.list(tuple(A.vsn, ns.prot_vsn or VSN), tuple(A.lock, ns.lock_id or false))
  local oplist = mb.list(table.unpack(ops))
  do_ops(oplist, me(), extra)
  tell_syncers(node)
  for _, n in ipairs(his_nodes) do cancel_resolved_locker(n) end
  local targets = {}
  for n in pairs(S.known) do targets[#targets + 1] = n end
  local msg = tuple(A.new_nodes, mb.node(), oplist, mb.list(), mb.list(table.unpack(new_nodes)), extra)
  cancel_resolved_locker(node, {msg = msg, nodes = targets})
  local added = add_to_known(new_nodes)
  mb.send(S.locker, tuple(A.add_to_known, added))
  S.synced[node] = true
end

local function new_nodes(ops, from, nodes, extra)
  local added = add_to_known(items(nodes) or {})
  sync_others(added)
  do_ops(ops, from, extra)
  mb.send(S.locker, tuple(A.add_to_known, added))
end

-- What the node does when another node's connection goes: forget it, and,
-- as OTP's prevent_overlapping_partitions does, tell the nodes we know.
local function handle_nodedown(node, why)
  local ns = S.ns[node]
  cancel_locker(node, ns and ns.my_tag)
  mb.send(S.locker, tuple(A.remove_from_known, node))
  reset_node_state(node)
  if why == "disconnected" then
    if S.removing[node] then
      S.removing[node] = nil
    else
      S.op_id = S.op_id + 1
      local msg = tuple(A.lost_connection, mb.node(), S.xcreation, S.op_id, atom(node))
      for n, v in pairs(S.known) do if n ~= node and v >= 7 then send(n, msg) end end
      for n, v in pairs(S.pending) do if n ~= node and v >= 7 then send(n, msg) end end
    end
  elseif why == "remove_connection" then
    S.removing[node] = true
  end
  S.pending[node] = nil
  S.known[node] = nil
  S.synced[node] = nil
  tell_syncers(node)
end

local function lost_connection(a, xcre, opid, b)
  if typeof(a) ~= "atom" or typeof(b) ~= "atom" or math.type(opid) ~= "integer" then
    error("bad lost_connection")
  end
  local lk = tostring(a) .. " " .. tostring(b)
  local seen = S.lost[lk]
  if seen and seen.x == xcre and opid <= seen.op then return end
  local msg = tuple(A.lost_connection, a, xcre, opid, b)
  for n, v in pairs(S.known) do if n ~= tostring(a) and v >= 7 then send(n, msg) end end
  for n, v in pairs(S.pending) do if n ~= tostring(a) and v >= 7 then send(n, msg) end end
  -- As OTP keeps each pair's last operation for an hour.
  local now = mb.monotonic_time() // 1000000000
  for k, v in pairs(S.lost) do
    if now - v.at > 3600 then S.lost[k] = nil end
  end
  S.lost[lk] = {x = xcre, op = opid, at = now}
  local rm = tostring(b) == me() and tostring(a) or tostring(b)
  if S.known[rm] or S.pending[rm] then
    send(rm, tuple(A.remove_connection, mb.node()))
    mb.log("warning", ("global at node %s requested disconnect from node %s in order to "
      .. "prevent overlapping partitions"):format(me(), rm))
    handle_nodedown(rm, "remove_connection")
  end
end

-- Calls

local function handle_call(from, req)
  local fpid = from[1]
  if not is_tuple(req) and typeof(req) ~= "atom" then error("bad call") end
  local kind = is_tuple(req) and req[1] or req
  if kind == A.register and #req == 4 then
    ins_name(req[2], req[3], req[4], fpid, mb.list())
    return A.yes
  elseif kind == A.register_ext and #req == 5 then
    ins_name(req[2], req[3], req[4], fpid, mb.list())
    return A.yes
  elseif kind == A.unregister and #req == 2 then
    delete_name(key_of(req[2]))
    return A.ok
  elseif kind == A.set_lock and #req == 2 then
    return set_lock(req[2], fpid)
  elseif kind == A.del_lock and #req == 2 then
    del_lock(req[2], fpid)
    return true
  elseif kind == A.get_known then
    return known_list(false)
  elseif kind == A.get_synced then
    local l = {}
    for n in pairs(S.synced) do l[#l + 1] = atom(n) end
    return mb.list(table.unpack(l))
  elseif kind == A.get_protocol_version then
    return VSN
  elseif kind == A.get_names_ext then
    return mb.list()
  end
  if typeof(fpid) ~= "pid" or node_of(fpid) ~= me() then
    error("unexpected call " .. tostring(req))
  end
  -- Requests from this node's processes
  if kind == A.sync then
    local waiting = {}
    for _, n in ipairs(items(req[2]) or {}) do
      n = tostring(n)
      if n ~= me() and not S.synced[n] then waiting[n] = true end
    end
    if next(waiting) == nil then return A.ok end
    S.syncers[#S.syncers + 1] = {from = from, waiting = waiting}
    return nil
  elseif kind == OWN then
    local what = req[2]
    if what == A.whereis then return where(req[3]) or A.undefined
    elseif what == A.names then
      local l = {}
      for _, e in pairs(S.names) do l[#l + 1] = e.name end
      return mb.list(table.unpack(l))
    elseif what == A.known then return known_list(false)
    elseif what == A.can_set_lock then return can_set_lock(req[3])
    elseif what == A.is_global_lock_set then return S.locks[key_of(A.global)] ~= nil
    elseif what == A.may_register then
      -- OTP refuses a second name for a pid unless global_multi_name_action
      -- is allow.
      return where(req[3]) == nil and S.pid_names[req[4]] == nil
    elseif what == A.trans then
      mb.send(S.registrar, tuple(A.trans, req[3], from))
      return nil
    end
  end
  error("unexpected call " .. tostring(req))
end

-- Casts

local function tagged(node, tag)
  local ns = S.ns[node]
  return ns ~= nil and ns.my_tag == tag
end

local function handle_cast(req)
  if not is_tuple(req) then error("bad cast") end
  local kind, n = req[1], #req
  local node = (typeof(req[2]) == "atom") and tostring(req[2]) or nil
  if kind == A.init_connect and n == 4 and typeof(req[3]) == "atom" then
    init_connect(req[2], tostring(req[3]), req[4])
  elseif kind == A.lock_is_set and n == 4 and node then
    if tagged(node, req[3]) then
      local ns = nstate(node)
      cast(node, tuple(A.exchange, mb.node(), names_list(), mb.list(), ns.his_tag))
      ns.lock_id = req[4]
      if type(ns.wait_lock) == "table" then
        local names = ns.wait_lock.exchange
        ns.wait_lock = "lock_is_set"
        exchange(node, names)
      else
        ns.wait_lock = "lock_is_set"
      end
    else
      cancel_locker(node, req[3])
    end
  elseif kind == A.exchange and n == 5 and node then
    if tagged(node, req[5]) then exchange(node, req[3]) else cancel_locker(node, req[5]) end
  elseif kind == A.exchange_ops and n == 5 and node then
    if tagged(node, req[3]) then
      local ns = nstate(node)
      cast(node, tuple(A.resolved, mb.node(), req[5], known_list(true), A.unused, mb.list(), ns.his_tag))
      ns.ops = req[4]
      if ns.his_resolved then
        local h = ns.his_resolved
        resolved(node, h.resolved, h.known)
      end
    else
      cancel_locker(node, req[3])
    end
  elseif kind == A.resolved and n == 7 and node then
    if tagged(node, req[7]) then
      local ns = nstate(node)
      if ns.ops then
        resolved(node, req[3], req[4])
      else
        ns.his_resolved = {resolved = req[3], known = req[4]}
      end
    else
      cancel_locker(node, req[7])
    end
  elseif kind == A.new_nodes and n == 6 and node then
    new_nodes(req[3], node, req[5], req[6])
  elseif kind == A.in_sync and n == 3 and node then
    tell_syncers(node)
    S.synced[node] = true
    S.pending[node] = nil
    local ns = S.ns[node]
    cancel_locker(node, ns and ns.my_tag)
    reset_node_state(node)
  elseif kind == A.lock_set and (n == 4 or n == 5) and typeof(req[2]) == "pid" then
    if n == 4 or tagged(node_of(req[2]), req[5]) then mb.send(S.locker, req) end
  elseif kind == A.async_del_name or kind == A.async_del_lock then
    return
  else
    error("unexpected cast")
  end
end

-- Other messages

local function handle_info(m)
  if not is_tuple(m) then error("unexpected message") end
  local kind, n = m[1], #m
  local node = typeof(m[2]) == "atom" and tostring(m[2]) or nil
  if kind == A.nodeup and node then
    for _, v in ipairs(mb.nodes("visible")) do
      if tostring(v) == node then handle_nodeup(node) end
    end
  elseif kind == A.nodedown and node then
    if S.known[node] or S.pending[node] or S.ns[node] or S.resolvers[node] or S.synced[node] then
      handle_nodedown(node, "disconnected")
    else
      S.removing[node] = nil
      tell_syncers(node)
    end
  elseif kind == A.extra_nodedown and node then
    handle_nodedown(node, "disconnected")
  elseif kind == DOWN and n == 5 then
    local what = S.by_ref[m[2]]
    if what and what.name then
      delete_name(what.name)
    elseif what and what.lock then
      remove_lock(what.lock, what.pid, true)
    end
  elseif kind == A.init_connect_ack and n == 4 and node then
    local ns = S.ns[node]
    if not (ns and ns.my_tag == m[3] and ns.his_tag == m[4]) then
      send(node, tuple(A.cancel_connect, mb.node(), m[4]))
      restart_connect(node, ns and ns.my_tag)
    end
  elseif kind == A.cancel_connect and n == 3 and node then
    if tagged(node, m[3]) then restart_connect(node, m[3]) end
  elseif kind == A.lost_connection and n == 5 then
    lost_connection(m[2], m[3], m[4], m[5])
  elseif kind == A.remove_connection and n == 2 and node then
    if S.known[node] or S.pending[node] then
      handle_nodedown(node, "remove_connection")
      mb.log("warning", ("global at node %s disconnected node %s in order to prevent "
        .. "overlapping partitions"):format(me(), node))
      mb.disconnect(atom(node))
    end
  elseif kind == A.whereis and n == 3 then
    gen.reply(m[3], where(m[2]) or A.undefined)
  else
    error("unexpected message")
  end
end

local function dispatch(m)
  if is_tuple(m, 3) and m[1] == GEN_CALL and is_tuple(m[2], 2) then
    local r = handle_call(m[2], m[3])
    if r ~= nil then gen.reply(m[2], r) end
  elseif is_tuple(m, 2) and m[1] == GEN_CAST then
    handle_cast(m[2])
  else
    handle_info(m)
  end
end

--- Run this node's global_name_server (started with distribution).
function M.start(connect_all)
  if not pcall(mb.register, NAME, mb.self()) then return end
  math.randomseed(mb.monotonic_time() ~ os.time())
  S = {connect_all = connect_all ~= false,
    known = {}, pending = {}, synced = {}, resolvers = {}, ns = {}, names = {},
    pid_names = {}, by_ref = {}, locks = {}, syncers = {}, lost = {}, removing = {},
    global_lock_down = false, tags = mb.monotonic_time() & 0xffffffffff, op_id = 0,
    xcreation = math.random(1 << 52)}
  S.locker = mb.spawn_link("moonbeam.global", "locker", mb.self())
  S.registrar = mb.spawn_link("moonbeam.global", "registrar")
  mb.monitor_nodes(true)
  for _, n in ipairs(mb.nodes("visible")) do handle_nodeup(tostring(n)) end
  while true do
    local m = mb.receive()
    local ok, err = pcall(dispatch, m)
    if not ok then
      mb.log("warning", "global: global_name_server dropped an unexpected or bad message "
        .. tostring(m) .. " (" .. tostring(err) .. ")")
    end
  end
end

-- ---------------------------------------------------------------------------
-- The API

local function check_pid(name, pid, fname)
  if name == nil then gen.argerror(1, fname, "name expected, got nil", 2) end
  if typeof(pid) ~= "pid" then gen.argerror(2, fname, "pid expected, got " .. typeof(pid), 2) end
end

--- Register pid under name in the whole cluster.
-- @param name any term (a Lua string is taken as an atom)
-- @param pid the process
-- @param resolve how a conflict found when two clusters meet is resolved:
--   nil (random_exit_name), "random_notify_name", "notify_all_name", or
--   {module, function} naming a Lua function(name, pid1, pid2) that returns
--   the pid to keep (nil: neither)
-- @return true, or false if the name is taken or pid has a global name
function M.register_name(name, pid, resolve)
  check_pid(name, pid, "register_name")
  local method = method_of(resolve, "register_name")
  return call_local(tuple(OWN, A.trans, tuple(A.register, norm_name(name), pid, method))) == true
end

--- Register pid under name whether or not the name is taken.
function M.re_register_name(name, pid, resolve)
  check_pid(name, pid, "re_register_name")
  local method = method_of(resolve, "re_register_name")
  return call_local(tuple(OWN, A.trans, tuple(A.re_register, norm_name(name), pid, method))) == true
end

--- Remove a name from the whole cluster.
function M.unregister_name(name)
  if M.whereis_name(name) == nil then return true end
  return call_local(tuple(OWN, A.trans, tuple(A.unregister, norm_name(name)))) == true
end

--- The pid registered under name, or nil.
function M.whereis_name(name)
  local r = call_local(tuple(OWN, A.whereis, norm_name(name)))
  if typeof(r) == "pid" then return r end
  return nil
end

--- Send msg to the process registered under name.  Raises
-- {badarg, {Name, Msg}}, as Erlang's global:send/2 exits, if none is.
-- @return the pid
function M.send(name, msg)
  local pid = M.whereis_name(name)
  if pid == nil then error(tuple(A.badarg, tuple(norm_name(name), msg)), 0) end
  mb.send(pid, msg)
  return pid
end

--- Every name registered in the cluster (a list).
function M.registered_names() return call_local(tuple(OWN, A.names)) end

--- Wait until this node has exchanged names with every visible node (or
-- until they went down).
function M.sync()
  local nodes = {}
  for i, n in ipairs(mb.nodes("visible")) do nodes[i] = n end
  call_local(tuple(A.sync, mb.list(table.unpack(nodes))))
  return true
end

local function lock_nodes(nodes)
  if nodes == nil then
    nodes = {me()}
    for _, n in ipairs(mb.nodes("visible")) do nodes[#nodes + 1] = tostring(n) end
    return nodes
  end
  local out = {}
  for i, n in ipairs(nodes) do out[i] = tostring(n) end
  return out
end

local function lock_id(id, fname)
  if type(id) == "table" and typeof(id) ~= "tuple" and #id == 2 then id = tuple(id[1], id[2]) end
  if not is_tuple(id, 2) then gen.argerror(1, fname, "{resource, requester} expected", 2) end
  return tuple(norm_name(id[1]), id[2])
end

--- Set a lock on nodes (default: this node and every visible one), as
-- global:set_lock/3: id is {ResourceId, LockRequesterId}; the caller holds
-- it until del_lock or its end.
-- @param retries how often to try again (default: until it is set)
-- @return true, or false if it could not be set
function M.set_lock(id, nodes, retries)
  id, nodes = lock_id(id, "set_lock"), lock_nodes(nodes)
  local times = 1
  while true do
    if set_lock_on(id, nodes) then return true end
    if retries == 0 then return false end
    random_sleep(times)
    times = times + 1
    if retries then retries = retries - 1 end
  end
end

--- Release a lock set with set_lock.
function M.del_lock(id, nodes)
  del_lock_on(lock_id(id, "del_lock"), lock_nodes(nodes))
  return true
end

--- Run fn() holding the lock id on nodes, as global:trans/4.
-- @return fn's result, or nil and "aborted" if the lock could not be set
function M.trans(id, fn, nodes, retries)
  id, nodes = lock_id(id, "trans"), lock_nodes(nodes)
  if not M.set_lock(id, nodes, retries) then return nil, "aborted" end
  local ok, r = pcall(fn)
  M.del_lock(id, nodes)
  if not ok then error(r, 0) end
  return r
end

return M
