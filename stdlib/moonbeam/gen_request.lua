--- Asynchronous requests, as OTP's gen:send_request and its receive,
-- wait and check functions: a call split into sending the request and
-- taking its response later, alone or from a collection of requests.
--
-- The request is the call's own message, {'$gen_call', {From, Tag},
-- Request}, Tag being the caller's monitor ref of the server, so the
-- server side is a call's: the reply goes to Tag as an alias and is
-- dropped once the request is abandoned. Loaded by moonbeam.gen_server
-- when first used, so that a call's path does not carry it.
--
-- A response, in Lua:
--   "reply", Reply                 OTP's {reply, Reply}
--   "error", {Reason, ServerRef}   OTP's {error, {Reason, ServerRef}}
--                                  (the server died, or was not there:
--                                  Reason noproc; a tuple)
--   "timeout"                      no response in time
--   "no_reply"                     (check) the message is not the response
--   "no_request"                   (collections) the collection is empty
-- With a collection, a response comes with its label and the collection:
--   "reply", Reply, Label, Collection (and "error" likewise).
local mb = require "moonbeam"
local gen = require "moonbeam.gen"

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local type, pairs, ipairs, next, pcall, error = type, pairs, ipairs, next, pcall, error
local tostring, math, table = tostring, math, table
local setmetatable, getmetatable = setmetatable, getmetatable

local M = {}

local GEN_CALL, DOWN = gen.GEN_CALL, atom.DOWN
local NOPROC, PROCESS, INFINITY = atom.noproc, atom.process, atom.infinity
local FLUSH = {flush = true}

-- A request id: {Ref, ServerRef}, a tuple (it can be sent, compared and
-- kept as any term); ServerRef is the server as the request named it.
-- A collection: a table of this metatable, Ref -> {Label, ServerRef}.
local ReqIds = {}
ReqIds.__index = ReqIds
M.ReqIds = ReqIds

local function is_collection(x)
  return type(x) == "table" and getmetatable(x) == ReqIds
end

local function is_reqid(x)
  return typeof(x) == "tuple" and typeof(x[1]) == "ref" and x.n == 2
end

-- A wait's timeout: milliseconds, math.huge, "infinity" (or the atom) or
-- nil for no limit, as mb.receive takes it.
local function wait_time(timeout, n, fname)
  if timeout == nil or timeout == INFINITY or timeout == "infinity"
    or timeout == math.huge then
    return nil
  end
  if type(timeout) ~= "number" or timeout < 0 then
    gen.argerror(n, fname, "timeout expected (milliseconds or \"infinity\")", 2)
  end
  return timeout
end

--- Send a call's request to `server` without waiting for the reply.
-- A server that is not there gives the response "error", {noproc,
-- server}, as OTP does.
-- @param server pid, registered name, {Name, Node}, {"global", Name} or
--   {"via", Module, Name}
-- @param request any sendable value
-- @return the request id
function M.send_request(server, request, label)
  local pid, me = gen.whereis(server), mb.self()
  local ref
  if pid == nil then
    -- As OTP: the 'DOWN' the monitor of a missing process would bring.
    ref = mb.make_ref()
    mb.send(me, tuple(DOWN, ref, PROCESS, server, NOPROC))
    return tuple(ref, server)
  end
  ref = mb.monitor(pid)
  local sent, err = pcall(mb.send, pid, tuple(label or GEN_CALL, tuple(me, ref),
    request))
  if not sent then -- an unsendable request: no monitor left behind
    mb.demonitor(ref, FLUSH)
    error(err, 2)
  end
  return tuple(ref, server)
end

-- The response a received message (a reply or the 'DOWN') makes.
local function response(msg, ref, server)
  if msg[1] == DOWN then return "error", tuple(msg[5], server) end
  mb.demonitor(ref, FLUSH)
  return "reply", msg[2]
end

-- Abandon a request: no 'DOWN' and no reply of it comes after this (the
-- alias ends with the monitor). A reply that came meanwhile is taken out
-- of the mailbox and returned.
local function abandon(ref)
  mb.demonitor(ref, FLUSH)
  return mb.receive(function(m) return m[1] == ref end, 0, {[ref] = true})
end

local function check_reqid(req, fname)
  if not is_reqid(req) then
    gen.argerror(1, fname, "request id expected, got " .. typeof(req), 3)
  end
end

-- Wait up to `timeout` for the reply or the 'DOWN' of one request: the
-- message, or nil and "timeout"; and the request's ref.
local function await(req, timeout, fname)
  check_reqid(req, fname)
  timeout = wait_time(timeout, 2, fname)
  local ref = req[1]
  local msg, why = mb.receive(function(m)
    return m[1] == ref or m[2] == ref
  end, timeout, {[ref] = true, [DOWN] = true})
  return msg, why, ref
end

-- wait_response for one request: on timeout the request stays, to be
-- waited for again.
local function wait_one(req, timeout)
  local msg, why, ref = await(req, timeout, "wait_response")
  if why == "timeout" then return "timeout" end
  return response(msg, ref, req[2])
end

-- receive_response for one request: as wait_one, but on timeout the
-- request is abandoned: its monitor is taken down and a reply that comes
-- later is dropped.
local function receive_one(req, timeout)
  local msg, why, ref = await(req, timeout, "receive_response")
  if why == "timeout" then
    -- As OTP: a reply that came as the wait ended is the response still.
    local late = abandon(ref)
    if late ~= nil then return "reply", late[2] end
    return "timeout"
  end
  return response(msg, ref, req[2])
end

-- Whether msg is the reply or the 'DOWN' of the request with `ref`.
local function answers(msg, ref)
  local t = typeof(msg)
  if t ~= "tuple" and t ~= "table" then return false end
  return msg[1] == ref or (msg[1] == DOWN and msg[2] == ref)
end

-- check_response for one request: the response, or "no_reply".
local function check_one(msg, req)
  check_reqid(req, "check_response")
  if not answers(msg, req[1]) then return "no_reply" end
  return response(msg, req[1], req[2])
end

-- ---------------------------------------------------------------------------
-- Collections of requests (OTP 25)

--- An empty collection of request ids.
function M.reqids_new()
  return setmetatable({}, ReqIds)
end

local function check_collection(coll, n, fname)
  if not is_collection(coll) then
    gen.argerror(n, fname, "request id collection expected, got " .. typeof(coll), 3)
  end
end

--- Add a request id to a collection under a label (any value); the
-- collection is changed and returned. Raises if the id is in it already.
function M.reqids_add(req, label, coll)
  check_reqid(req, "reqids_add")
  check_collection(coll, 3, "reqids_add")
  if coll[req[1]] then gen.argerror(1, "reqids_add", "request id already in the collection", 2) end
  coll[req[1]] = {label, req[2]}
  return coll
end

--- How many request ids the collection holds.
function M.reqids_size(coll)
  check_collection(coll, 1, "reqids_size")
  local n = 0
  for _ in pairs(coll) do n = n + 1 end
  return n
end

--- The collection as a list of {req_id, label} pairs.
function M.reqids_to_list(coll)
  check_collection(coll, 1, "reqids_to_list")
  local list = {}
  for ref, e in pairs(coll) do list[#list + 1] = {tuple(ref, e[2]), e[1]} end
  return list
end

-- The response to whichever request of coll `msg` answers, with its label
-- and the collection (the request taken out if `delete`).
local function coll_response(msg, coll, delete)
  local ref = msg[1] == DOWN and msg[2] or msg[1]
  local e = coll[ref]
  if delete then coll[ref] = nil end
  local tag, value = response(msg, ref, e[2])
  return tag, value, e[1], coll
end

local function coll_receive(coll, timeout)
  local labels = {[DOWN] = true}
  for ref in pairs(coll) do labels[ref] = true end
  return mb.receive(function(m)
    local r = m[1]
    if r == DOWN then r = m[2] end
    return typeof(r) == "ref" and coll[r] ~= nil
  end, timeout, labels)
end

-- wait_response and receive_response for a collection.
local function coll_wait(coll, timeout, delete, fname, abandon_all)
  timeout = wait_time(timeout, 2, fname)
  if next(coll) == nil then return "no_request" end
  local msg, why = coll_receive(coll, timeout)
  if why == "timeout" then
    if abandon_all then
      for ref in pairs(coll) do abandon(ref) end
    end
    return "timeout"
  end
  return coll_response(msg, coll, delete)
end

-- check_response for a collection: response, label, collection; or
-- "no_reply" or "no_request".
local function check_coll(msg, coll, delete)
  if next(coll) == nil then return "no_request" end
  local t = typeof(msg)
  if t ~= "tuple" and t ~= "table" then return "no_reply" end
  local r = msg[1] == DOWN and msg[2] or msg[1]
  if typeof(r) ~= "ref" or coll[r] == nil or not answers(msg, r) then
    return "no_reply"
  end
  return coll_response(msg, coll, delete)
end

-- ---------------------------------------------------------------------------
-- The responses: each of these takes one request id or a collection.

--- Wait up to `timeout` for the response to a request (the request stays
-- on timeout), or to any request of a collection (`delete`: take the
-- answered one out).
-- @return the response; for a collection with its label and the
--   collection; or "timeout", or "no_request" for an empty collection
function M.wait_response(req, timeout, delete)
  if is_collection(req) then
    return coll_wait(req, timeout, delete, "wait_response", false)
  end
  return wait_one(req, timeout)
end

--- As wait_response, but on timeout the request (every request of a
-- collection) is abandoned: a reply that comes later is dropped.
function M.receive_response(req, timeout, delete)
  if is_collection(req) then
    return coll_wait(req, timeout, delete, "receive_response", true)
  end
  return receive_one(req, timeout)
end

--- Whether a message taken from the mailbox is the response to a request
-- (or to one of a collection's).
-- @return as wait_response, or "no_reply" (or "no_request")
function M.check_response(msg, req, delete)
  if is_collection(req) then return check_coll(msg, req, delete) end
  return check_one(msg, req)
end

-- ---------------------------------------------------------------------------
-- Many nodes at once: multi_call and abcast

local GEN_CAST = gen.GEN_CAST
local LONELY = atom["nonode@nohost"]

-- The nodes as atoms: `nodes`, or this node and every node it is
-- connected to.
local function node_list(nodes)
  if nodes == nil then
    nodes = {mb.node()}
    for _, n in ipairs(mb.nodes()) do nodes[#nodes + 1] = n end
    return nodes
  end
  local list = {}
  for i = 1, #nodes do
    local n = nodes[i]
    list[i] = type(n) == "string" and atom(n) or n
  end
  return list
end

local function by_name(a, b) return tostring(a) < tostring(b) end

--- Call the server registered as `name` on each node, all at once, and
-- wait up to `timeout` for their replies, as OTP's multi_call.
-- @return replies, a list of {node, reply} tuples, and bad_nodes, the
--   list of nodes whose server did not reply (not there, ended, no
--   connection, or not in time); both sorted by node name
function M.multi_call(nodes, name, request, timeout)
  timeout = wait_time(timeout, 4, "multi_call")
  nodes = node_list(nodes)
  local here = mb.node()
  local coll, bad, replies = M.reqids_new(), {}, {}
  for _, node in ipairs(nodes) do
    if node == here then
      M.reqids_add(M.send_request(name, request), node, coll)
    elseif here == LONELY then
      bad[#bad + 1] = node -- no distribution: no other node to reach
    else
      M.reqids_add(M.send_request(tuple(name, node), request), node, coll)
    end
  end
  local deadline = timeout and mb.monotonic_time() + timeout * 1e6
  while true do
    local left = deadline and math.max(0, (deadline - mb.monotonic_time()) / 1e6)
    local tag, value, node = coll_wait(coll, left, true, "multi_call", true)
    if tag == "no_request" then break end
    if tag == "timeout" then
      for _, e in pairs(coll) do bad[#bad + 1] = e[1] end
      break
    end
    if tag == "reply" then replies[#replies + 1] = tuple(node, value)
    else bad[#bad + 1] = node end
  end
  table.sort(replies, function(a, b) return by_name(a[1], b[1]) end)
  table.sort(bad, by_name)
  return replies, bad
end

--- Cast `request` to the server registered as `name` on each node, as
-- OTP's abcast; never fails.
function M.abcast(nodes, name, request)
  local here = mb.node()
  for _, node in ipairs(node_list(nodes)) do
    if node == here then
      gen.cast(name, request)
    elseif here ~= LONELY then
      pcall(mb.send, tuple(name, node), tuple(GEN_CAST, request))
    end
  end
end

return M
