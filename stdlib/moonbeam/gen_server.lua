--- GenServer: a process that keeps state and serves calls, casts and other
-- messages through callbacks, with OTP's gen_server semantics.
--
-- The callback module is a table of functions (or the name of a module
-- returning one). Client functions and the callbacks they trigger:
--
--   gen_server.start / start_link  ->  init(args)
--   gen_server.call                ->  handle_call(request, from, state)
--   gen_server.send_request,
--   multi_call                     ->  handle_call(request, from, state)
--   gen_server.cast, abcast        ->  handle_cast(request, state)
--   gen_server.enter_loop          ->  (no init: the state is given)
--   any other message, timeouts    ->  handle_info(msg, state)
--   a {continue = x} return        ->  handle_continue(x, state)
--   gen_server.stop, a stop return,
--   the parent's exit when trapping ->  terminate(reason, state)
--
-- Callbacks return a tag (a string or an atom of the same name) and values:
--
--   init             "ok", state [, timeout | {continue = x}]
--                    "ignore"  |  "stop", reason
--   handle_call      "reply", reply, state [, timeout | {continue = x}]
--                    "noreply", state [, timeout | {continue = x}]
--                    "stop", reason, reply, state  |  "stop", reason, state
--   handle_cast,     "noreply", state [, timeout | {continue = x}]
--   handle_info,     "stop", reason, state
--   handle_continue
--
-- A timeout (milliseconds) makes handle_info receive the atom `timeout`
-- when no message comes in that time; in the same place, "hibernate"
-- runs a full garbage collection before the server waits (OTP's
-- hibernation), with no timeout. Any other return stops the server
-- with reason {bad_return_value, Text}, Text naming the values returned
-- ("nothing" for none). handle_cast, handle_info,
-- handle_continue and terminate are optional.
--
-- Code change: a server whose module was given by name moves to a new
-- version of it (moonbeam.code.load) between two messages, before handling
-- the next one:
--
--   code_change      (old_vsn, state, extra)  ->  "ok", new_state
--                    (optional; without it the state is kept)
--
-- old_vsn is the version number the server held; extra is nil, or what
-- sys.change_code passes. A code_change that raises or returns anything
-- else leaves the server on the old version with its old state.
--
-- The server side: a server process runs the init_it of
-- moonbeam.gen_server_loop, spawned with its code, never this module.
-- Its start is mb.gen_init and its loop mb.gen_serve, both in C: they
-- take a local name, run init, and run handle_call, handle_cast and
-- handle_info with their "reply" and "noreply" returns; whatever else
-- happens (global and via names, init failing, stop, {continue = x}, an
-- error, a bad return, a system message, a code change) they hand to
-- moonbeam.gen_server_event, loaded for that and dropped again, so that
-- an idle server keeps only the loop, its callback module and its state
-- (see docs/behaviours.md, Costs).
local mb = require "moonbeam"
local gen = require "moonbeam.gen"
-- The function a server process runs (spawned as it is: see there).
local init_it = require("moonbeam.gen_server_loop").init_it

local atom, tuple, typeof = mb.atom, mb.tuple, mb.typeof
local type = type

local M = {}

local STOP = atom["$gen_stop"]
local NORMAL, TIMEOUT = atom.normal, atom.timeout

-- ---------------------------------------------------------------------------
-- Client side

--- Start a server, not linked to the caller.
-- @param module callback module (table or module name)
-- @param args passed to init
-- @param opts optional: name (register locally), timeout (for init, ms)
-- @return pid, or nil and the reason (init's stop reason, ignore,
--   {already_started, Pid})
function M.start(module, args, opts)
  return gen.start(init_it, false, opts, module, args)
end

--- Start a server linked to the caller; returns once init has finished.
-- @see start
function M.start_link(module, args, opts)
  return gen.start(init_it, true, opts, module, args)
end

--- Start a server, not linked to the caller, and monitor it (OTP's
-- start_monitor): the monitor is made with the process, before init runs.
-- @return pid and the monitor's ref, or nil and the reason (then no
--   monitor is left, and no 'DOWN' of it is queued)
function M.start_monitor(module, args, opts)
  return gen.start(init_it, "monitor", opts, module, args)
end

--- Call a server and wait for its reply (default timeout 5000 ms).
-- Raises {noproc, ...} if the server is dead or unknown, {timeout, ...} if
-- no reply comes in time, {Reason, ...} if the server dies meanwhile.
function M.call(server, request, timeout)
  return gen.call(server, request, timeout, "gen_server")
end

--- Send a request without waiting; never fails.
function M.cast(server, request) gen.cast(server, request) end

--- Reply to a call later (after a "noreply" from handle_call).
-- @param from the from handed to handle_call
function M.reply(from, reply) gen.reply(from, reply) end

-- ---------------------------------------------------------------------------
-- Asynchronous requests (OTP's send_request and its responses): see
-- moonbeam.gen_request for the Lua shape of a response. Loaded on first
-- use, so that a call's path does not carry it.

local function request() return require "moonbeam.gen_request" end

--- Send a call's request without waiting: the request id, whose response
-- receive_response, wait_response or check_response takes later. With a
-- label and a collection (reqids_new), the id is added to the collection
-- under the label and the collection is returned instead.
function M.send_request(server, req, label, coll)
  local r = request()
  local id = r.send_request(server, req)
  if coll == nil then return id end
  return r.reqids_add(id, label, coll)
end

--- Wait up to `timeout` ms ("infinity" or nil: no limit) for a request's
-- response: "reply", Reply | "error", {Reason, Server} | "timeout" (the
-- request stays). Given a collection: the response to any of its
-- requests, with its label and the collection (`delete`: without the
-- request), or "timeout", or "no_request" when it is empty.
function M.wait_response(req, timeout, delete)
  return request().wait_response(req, timeout, delete)
end

--- As wait_response, but on timeout the request (for a collection, every
-- request in it) is abandoned: a reply that comes later is dropped.
function M.receive_response(req, timeout, delete)
  return request().receive_response(req, timeout, delete)
end

--- Whether a message taken from the mailbox is the response to a
-- request (or to one of a collection's): the response as wait_response
-- returns it, or "no_reply" (or "no_request" for an empty collection).
function M.check_response(msg, req, delete)
  return request().check_response(msg, req, delete)
end

--- An empty collection of request ids.
function M.reqids_new() return request().reqids_new() end

--- Add a request id to a collection under a label; returns the collection.
function M.reqids_add(req, label, coll) return request().reqids_add(req, label, coll) end

--- How many request ids a collection holds.
function M.reqids_size(coll) return request().reqids_size(coll) end

--- A collection's {req_id, label} pairs, as a list.
function M.reqids_to_list(coll) return request().reqids_to_list(coll) end

-- multi_call's and abcast's first argument, the nodes, may be left out.
local function nodes_first(first, ...)
  local t = typeof(first)
  if t == "table" or t == "list" then return first, ... end
  return nil, first, ...
end

--- Call the server registered locally as `name` on each of `nodes` (left
-- out: this node and every node connected to it) and wait up to
-- `timeout` ms (default: no limit) for the replies, as OTP's multi_call.
-- @return replies, a list of {node, reply} tuples, and bad_nodes, the
--   nodes whose server did not reply (it was not there, ended, or did
--   not reply in time)
function M.multi_call(...)
  local nodes, name, req, timeout = nodes_first(...)
  return request().multi_call(nodes, name, req, timeout)
end

--- Cast `request` to the server registered locally as `name` on each of
-- `nodes` (left out: this node and every node connected to it), as OTP's
-- abcast; never fails.
function M.abcast(...)
  local nodes, name, req = nodes_first(...)
  request().abcast(nodes, name, req)
end

--- Stop a server: terminate(reason) runs, then the server exits; returns
-- when it has. Raises noproc if there is no such server, timeout if it does
-- not stop in time (default infinity).
function M.stop(server, reason, timeout)
  local pid = gen.whereis(server)
  if pid == nil then gen.fail(atom.noproc, "gen_server", server, "stop") end
  reason = reason == nil and NORMAL or reason
  local ref = mb.monitor(pid)
  mb.send(pid, tuple(STOP, reason))
  local msg, why = mb.receive(function(m) return m[2] == ref end, timeout,
    {[atom.DOWN] = true})
  if why == "timeout" then
    mb.demonitor(ref, {flush = true})
    gen.fail(TIMEOUT, "gen_server", server, "stop")
  end
  -- As proc_lib:stop: the server must have ended with the reason asked for.
  local got = msg[5]
  if got == atom.noproc then gen.fail(atom.noproc, "gen_server", server, "stop") end
  local want = type(reason) == "string" and atom[reason] or reason
  if not gen.equal(got, want) and not (type(reason) == "string" and got == reason) then
    gen.fail(got, "gen_server", server, "stop")
  end
  return true
end

--- Make the calling process a server, as OTP's enter_loop: it runs the
-- loop of `module` with `state`, as if init had returned "ok", state
-- [, action], and never returns. The process was started some other way
-- (mb.spawn, say) and did its own initialisation.
-- @param module callback module (table or module name)
-- @param opts table (no option is read yet; may be nil)
-- @param state the server's state
-- @param name optional: the name the process is registered under already
--   (local, {"global", N} or {"via", M, N}); the process exits with
--   process_not_registered if it is not registered under it
-- @param action optional: a timeout (ms), "hibernate" or {continue = x}
function M.enter_loop(module, opts, state, name, action)
  if opts ~= nil and type(opts) ~= "table" then
    gen.argerror(2, "enter_loop", "table expected, got " .. typeof(opts), 1)
  end
  if action == nil and (type(name) == "number" or name == "hibernate"
    or name == atom.hibernate or (type(name) == "table" and name.continue ~= nil)) then
    name, action = nil, name
  end
  if name ~= nil and gen.whereis(name) ~= mb.self() then
    mb.exit(atom.process_not_registered) -- as OTP, which exits with it
  end
  local s, bad = require("moonbeam.gen_server_event").enter(module, name, state, action)
  if s == nil then
    gen.argerror(5, "enter_loop", "timeout, \"hibernate\" or {continue = x} expected, got "
      .. typeof(bad), 1)
  end
  require("moonbeam.gen_server_loop").serve(s)
end

--- Entry point of a new server process (see gen.start); not for users.
-- The server side lives in moonbeam.gen_server_loop, whose init_it
-- gen_server.start spawns without this module.
function M.init_it(...)
  return init_it(...)
end

return M
