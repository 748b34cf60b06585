--- What the dashboard shows, as plain tables (strings, numbers, lists and
-- tables with string keys) that travel as JSON to the browser and as terms
-- to another node: the dashboard of one node shows another moonbeam node
-- by calling these functions there with rpc.
--
--   node(latest)         the node: uptime, schedulers, memory, counts,
--                        and the sampler's history when it runs (its
--                        last sample only, with latest)
--   processes(sort, n)   the n processes first by sort ("memory",
--                        "reductions", "message_queue_len", "pid"):
--                        {total, sort, columns, rows = {{...}}}, with
--                        each one's current function
--   process(pid)         one process: its info, links, monitors, current
--                        function and stack, the head of its mailbox (and
--                        what of it cannot be shown, messages_note)
--   state(pid)           a GenServer's state (sys.get_state), as text
--   applications()       the running applications and their supervision
--                        trees
--   cluster()            the connected nodes, visible and hidden, and
--                        their kind
--   log(after, level)    the log's lines after a sequence number
--   kill(pid)            exit(pid, kill)
--   reload(module)       load a module again from its file (code.reload)
local mb = require "moonbeam"
local inspect = require "moonbeam.inspect"

local typeof, atom = mb.typeof, mb.atom
local tostring, tonumber, ipairs, pcall, type = tostring, tonumber, ipairs, pcall, type
local sort, min = table.sort, math.min
local format = string.format

local M = {}

local SAMPLER = "dashboard_sampler"
local MAX_ROWS = 2000
local INSPECT_DEPTH = 4
local MAX_TEXT = 16384

-- Text of a value, cut to MAX_TEXT bytes.
local function show(v)
  local ok, s = pcall(inspect, v, INSPECT_DEPTH)
  s = ok and s or "(cannot show: " .. tostring(s) .. ")"
  if #s > MAX_TEXT then s = s:sub(1, MAX_TEXT) .. format(" ... (%d bytes)", #s) end
  return s
end

local function texts(list)
  local out = {}
  for i, v in ipairs(list or {}) do out[i] = tostring(v) end
  return out
end

--- A local pid from its text "<0.42.0>" or a registered name; nil if there
-- is no such live process (or the text is neither).
function M.pid(text)
  if typeof(text) == "pid" then return text end
  if type(text) ~= "string" or #text > 64 then return nil end
  local n, i, s = text:match("^<(%d+)%.(%d+)%.(%d+)>$")
  if not n then
    -- A registered name: looked for among those registered, so that a
    -- name that is not one makes no atom.
    for _, name in ipairs(mb.registered()) do
      if tostring(name) == text then return mb.whereis(name) end
    end
    return nil
  end
  if tonumber(n) ~= 0 then return nil end
  local ok, console = pcall(require, "moonbeam.console")
  if ok and type(console) == "table" and console.pid then
    local p = console.pid(0, tonumber(i), tonumber(s))
    return mb.process_info(p) and p or nil
  end
  for _, p in ipairs(mb.processes()) do
    if tostring(p) == text then return p end
  end
  return nil
end

--- The kind of this node, for cluster(): another node that answers this
-- is a moonbeam node.
function M.kind() return "moonbeam" end

--- The node, with the sampler's history (or with `latest`, its last
-- sample only, as `sample`).
function M.node(latest)
  local s = mb.statistics()
  local queues = {}
  for i, sc in ipairs(s.schedulers) do queues[i] = sc.run_queue end
  local out = {
    node = tostring(mb.node()), uptime_ms = s.uptime_ms, schedulers = #s.schedulers,
    processes = s.processes, process_limit = s.process_limit, atoms = s.atoms,
    memory = s.memory, run_queues = queues, registered = #mb.registered(),
    log_level = mb.log_level(),
  }
  local sampler = mb.whereis(SAMPLER)
  if sampler then
    local gen_server = require "moonbeam.gen_server"
    local ok, got = pcall(gen_server.call, sampler, latest and "latest" or "history", 2000)
    if ok then out[latest and "sample" or "history"] = got end
  end
  return out
end

local SORTS = {memory = true, reductions = true, message_queue_len = true, pid = true}
local COLUMNS = {"pid", "name", "status", "memory", "reductions", "message_queue_len", "links",
                 "monitors", "current_function"}

-- What a process is doing, as text: its current function, "running", or
-- "" (not started, or gone meanwhile).
local function current_function(p)
  return mb.process_info(p, "current_function") or ""
end

--- The processes, the first n by a key, largest first (pid: in order).
-- @param key "memory" (default), "reductions", "message_queue_len", "pid"
-- @param n at most this many rows (default 200, at most 2000)
-- @return {total = count, sort = key, columns = {"pid", "name", ...},
--   rows = {{pid, name, status, memory, ...}}}, each row a list in the
--   order of columns; current_function (see mb.process_info(pid, item))
--   is read for the rows shown only
function M.processes(key, n)
  key = SORTS[key] and key or "memory"
  n = math.tointeger(tonumber(n)) or 200
  n = math.max(0, min(n, MAX_ROWS))
  -- Sorted and cut in C: a row is made only for the n shown, and as a
  -- list (its fields in COLUMNS' order), which costs less to send.
  local t = mb.process_table(key, n)
  local rows = {}
  for i, p in ipairs(t.pid) do
    rows[i] = {tostring(p), t.name[i] or "", t.status[i], t.memory[i], t.reductions[i],
               t.message_queue_len[i], t.links[i], t.monitors[i], current_function(p)}
  end
  return {total = t.total, sort = key, columns = COLUMNS, rows = rows}
end

--- One process, or nil if there is no such live process.
function M.process(text)
  local p = M.pid(text)
  local info = p and mb.process_info(p)
  if not info then return nil end
  local messages = {}
  local head, skipped = mb.process_messages(p, 10)
  for i, m in ipairs(head or {}) do messages[i] = show(m) end
  local note = ""
  if skipped == false then
    note = "It was running: only what arrived since it last ran."
  elseif skipped and skipped > 0 then
    note = format("%d message%s that a selective receive looked at and left come first, "
      .. "in the process's own memory: not shown.", skipped, skipped == 1 and "" or "s")
  end
  local stack = mb.process_info(p, "current_stacktrace")
  return {
    current_function = current_function(p),
    stack = type(stack) == "table" and stack or {stack or ""},
    pid = tostring(p), name = info.registered_name or "", status = info.status,
    memory = info.memory, max_heap = info.max_heap, reductions = info.reductions,
    message_queue_len = info.message_queue_len, trap_exit = info.trap_exit,
    links = texts(info.links), monitors = texts(info.monitors),
    monitored_by = texts(info.monitored_by), messages = messages, messages_note = note,
  }
end

--- A GenServer's state as text (sys.get_state) and the head of its
-- mailbox (sys.get_messages), or nil and why.
function M.state(text, timeout)
  local p = M.pid(text)
  if not p then return nil, "no such process" end
  local sys = require "moonbeam.sys"
  local ok, state = pcall(sys.get_state, p, timeout or 1000)
  if not ok then return nil, "not a GenServer, or it did not answer: " .. show(state) end
  local messages = {}
  local got, list = pcall(sys.get_messages, p, 10, timeout or 1000)
  if got and typeof(list) == "table" then
    for i, m in ipairs(list) do messages[i] = show(m) end
  end
  return {pid = tostring(p), state = show(state), messages = messages}
end

-- A supervisor's tree, depth first.
local function tree(pid, id, kind, depth)
  local info = mb.process_info(pid)
  local node = {pid = tostring(pid), id = tostring(id), type = kind,
                name = info and info.registered_name or "", children = {}}
  if kind ~= "supervisor" or depth > 16 then return node end
  local supervisor = require "moonbeam.supervisor"
  local ok, children = pcall(supervisor.which_children, pid)
  if not ok or type(children) ~= "table" then return node end
  for _, c in ipairs(children) do
    if c.pid then
      node.children[#node.children + 1] = tree(c.pid, c.id, c.type, depth + 1)
    else
      node.children[#node.children + 1] = {pid = "", id = tostring(c.id), type = c.type,
                                           name = "(not running)", children = {}}
    end
  end
  return node
end

--- The running applications, each with its supervision tree.
function M.applications()
  local application = require "moonbeam.application"
  local out = {}
  for _, app in ipairs(application.which_applications()) do
    out[#out + 1] = {
      name = app.name, description = app.description or "", version = app.version or "",
      type = app.type or "", tree = app.sup and tree(app.sup, app.name, "supervisor", 0) or nil,
    }
  end
  return out
end

--- The connected nodes and what they are: "moonbeam" for a node that
-- answers kind(), "beam" for another (an Erlang or Elixir node).
function M.cluster()
  local out = {node = tostring(mb.node()), nodes = {}}
  if tostring(mb.node()) == "nonode@nohost" then return out end
  local rpc = require "moonbeam.rpc"
  local visible = {}
  for _, n in ipairs(mb.nodes("visible")) do visible[tostring(n)] = true end
  for _, n in ipairs(mb.nodes("connected")) do
    local ok, kind = pcall(rpc.call, n, "moonbeam.dashboard.data", "kind", {}, 2000)
    out.nodes[#out.nodes + 1] = {
      name = tostring(n), visible = visible[tostring(n)] == true,
      kind = (ok and kind == "moonbeam") and "moonbeam" or "beam",
    }
  end
  return out
end

local RANK = {debug = 1, info = 2, notice = 3, warning = 4, error = 5}

--- The log's lines after sequence number `after`, at `level` or above.
function M.log(after, level)
  local least = RANK[level] or 1
  local out = {}
  for _, l in ipairs(mb.log_tail(tonumber(after) or 0)) do
    if RANK[l.level] >= least then out[#out + 1] = l end
  end
  return out
end

--- Kill a process (exit(pid, kill)); false if there is none.
function M.kill(text)
  local p = M.pid(text)
  if not p then return false end
  mb.exit(p, atom.kill)
  return true
end

--- Load a module again from the file package.path finds for it, as
-- moonbeam.code.reload does (a new current version; the processes that
-- hold a version older than the one it replaces are killed).
-- @return {module, version}, or {module, error, not_loaded = true when
--   the node has no version of it}
function M.reload(name)
  local code = require "moonbeam.code"
  local version, err = code.reload(tostring(name))
  if version then return {module = name, version = version} end
  return {module = name, error = tostring(err), not_loaded = err == "not_loaded"}
end

return M
