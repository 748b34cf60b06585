--- The interactive shell: a read-eval-print loop that is itself a process,
-- as Erlang's shell is. `moonbeam shell` runs it (see moonbeam.launcher);
-- any process may too: require("moonbeam.shell").run().
--
-- Lines come from the launcher's console (the C module moonbeam.console: a
-- thread of its own, with line editing on a terminal) as messages, so that
-- a shell waiting for input holds no scheduler. Without the launcher, the
-- shell reads with io.read, in its own process.
--
-- Each input is compiled as `return <input>` when it is an expression
-- (`=<input>` also means that), else as statements. Input that is not
-- complete asks for more lines; `#break` drops it. What an expression
-- gives is printed with moonbeam.inspect; an error is printed and the shell
-- goes on.
--
-- The locals an input declares are kept for the inputs after it, as iex
-- keeps bindings: each input is a chunk of its own, which starts with the
-- locals of the inputs before it, holding the values they had at the end of
-- their chunk. So a function spawned from the shell takes them as upvalues,
-- and copies them, as it would in a script. Globals are the shell
-- process's own, and are kept too. `mb` is bound to the moonbeam module.
--
-- Helpers, globals of the shell process (help() lists them): flush(),
-- i(), i(pid), pid(0, 42, 0), regs(), reload(module...), q().
local mb = require "moonbeam"
local inspect = require "moonbeam.inspect"

local typeof, atom = mb.typeof, mb.atom
local type, ipairs, pairs, tostring, tonumber, select = type, ipairs, pairs, tostring, tonumber, select
local load, xpcall, getlocal = load, xpcall, debug.getlocal
local format, concat, sort, unpack = string.format, table.concat, table.sort, table.unpack

local has_console, console = pcall(require, "moonbeam.console")
if not has_console then console = nil end

local M = {}

local CONSOLE = atom["$console"]
-- The first local of every chunk: the function that keeps its locals.
local CAPTURE = "__shell_capture"
-- Lua allows 200 locals in a function: the oldest bindings go first.
local MAX_BINDINGS = 150

-- Where the shell's output goes: stdout, or for a remote session (serve)
-- the user's shell on the other node.
local output = function(text)
  io.stdout:write(text)
  io.stdout:flush()
end

local function write(...) output(concat({...})) end

-- ---------------------------------------------------------------------------
-- Sessions: bindings, compiling, evaluating

--- A new session: the bindings of one shell.
-- @return a session, with `mb` bound
function M.session()
  local s = {names = {}, values = {}, index = {}, count = 1}
  M.bind(s, "mb", mb)
  return s
end

--- Bind a name in a session, as a local of the inputs to come.
function M.bind(s, name, value)
  local i = s.index[name]
  if i == nil then
    if #s.names >= MAX_BINDINGS then
      table.remove(s.names, 1)
      table.remove(s.values, 1)
      s.index = {}
      for k, n in ipairs(s.names) do s.index[n] = k end
    end
    i = #s.names + 1
    s.names[i], s.index[name] = name, i
  end
  s.values[i] = value
end

--- The value bound to a name in a session, or nil.
function M.binding(s, name)
  local i = s.index[name]
  return i and s.values[i]
end

local function incomplete(err) return err ~= nil and err:sub(-5) == "<eof>" end

-- The chunk of an input: a function(capture, bindings...), and "expr" or
-- "stmt"; or nil and "incomplete"; or nil and the syntax error.
local function compile(s, text)
  local head = "local " .. concat({CAPTURE, unpack(s.names)}, ", ") .. " = ...; "
  local expr = text:match("^%s*=(.*)$") or text
  local f, err1 = load(head .. "return " .. expr .. "\n", "=shell", "t")
  if f then return f, "expr" end
  local plain, err2 = load(head .. text, "=shell", "t")
  if plain then
    -- Keep its locals by calling the capture at its end; input that ends
    -- with a return cannot be followed, and keeps none.
    local kept = load(head .. text .. "\n;" .. CAPTURE .. "()", "=shell", "t")
    return kept or plain, "stmt"
  end
  -- Statements ending with an expression (`local m = f(); m`): run the
  -- statements, keep their locals, and give the expression's values.
  for cut = #text, 1, -1 do
    local c = text:sub(cut, cut)
    if c == ";" or c == "\n" then
      local tail = text:sub(cut + 1)
      if tail:match("%S") then
        local f = load(head .. text:sub(1, cut) .. "\n;" .. CAPTURE .. "() return " .. tail .. "\n",
          "=shell", "t")
        if f then return f, "expr" end
      end
    end
  end
  if incomplete(err1) or incomplete(err2) then return nil, "incomplete" end
  return nil, err2
end

-- The capture: binds the active locals of the chunk calling it.
local function capturer(s)
  return function()
    local i = 1
    while true do
      local name, value = getlocal(2, i)
      if name == nil then return end
      if name ~= CAPTURE and name:sub(1, 1) ~= "(" then M.bind(s, name, value) end
      i = i + 1
    end
  end
end

local function error_text(e)
  if type(e) == "string" then return e end
  return inspect(e)
end

--- Evaluate one input in a session.
-- @param s the session
-- @param text the input (one or more lines)
-- @return "ok" and the values it gave ({n = count, ...}); "error" and the
--   message; or "incomplete" when more lines are needed
function M.eval(s, text)
  local f, why = compile(s, text)
  if f == nil then
    if why == "incomplete" then return "incomplete" end
    return "error", why
  end
  local r = {n = 0}
  local function keep(ok, ...)
    r = {n = select("#", ...), ...}
    return ok
  end
  if not keep(xpcall(f, error_text, capturer(s), unpack(s.values, 1, #s.names))) then
    return "error", r[1]
  end
  return "ok", r
end

--- Render what an input gave, as the shell prints it.
-- @param values {n = count, ...}
-- @return the text, without a newline, or nil for no values
function M.format_values(values)
  if values.n == 0 then return nil end
  local out = {}
  for i = 1, values.n do out[i] = inspect(values[i]) end
  return concat(out, ", ")
end

-- What Tab completes: the names the next input can use (the session's
-- locals, the globals, the standard libraries) and, for those that are
-- tables, their fields as "name.field".
local STDLIBS = {"string", "table", "math", "os", "io", "utf8", "coroutine", "debug"}

local function is_name(k) return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil end

--- The words Tab completes in a session, sorted.
-- @param s the session
-- @return a list of strings: "mb", "mb.spawn", "flush"...
function M.completions(s)
  local values, seen, out = {}, {}, {}
  local function add(name, v)
    if seen[name] or not is_name(name) then return end
    seen[name] = true
    values[#values + 1] = {name, v}
  end
  for i, name in ipairs(s.names) do add(name, s.values[i]) end
  for _, name in ipairs(STDLIBS) do add(name, _G[name]) end
  -- A process sets the base library's functions in its globals as it
  -- uses them; require "_G" sets them all.
  for k, v in pairs((require "_G")) do add(k, v) end
  for _, nv in ipairs(values) do
    local name, v = nv[1], nv[2]
    out[#out + 1] = name
    if type(v) == "table" then
      for k in pairs(v) do
        if is_name(k) then out[#out + 1] = name .. "." .. k end
      end
      -- moonbeam's functions are made on first use: names() lists them.
      if v == mb then
        for _, k in ipairs(mb.names()) do
          if rawget(mb, k) == nil then out[#out + 1] = name .. "." .. k end
        end
      end
    end
  end
  sort(out)
  return out
end

-- ---------------------------------------------------------------------------
-- Helpers

local quitting = false

local function is_console(m) return typeof(m) == "tuple" and m[1] == CONSOLE end

-- A pid from its numbers: the binding's mb.pid when it has one, else the
-- console's; else a live process with that text.
local function make_pid(node, id, serial)
  if mb.pid then return mb.pid(node, id, serial) end
  if console then return console.pid(node, id, serial) end
  local text = format("<%d.%d.%d>", node, id, serial)
  for _, p in ipairs(mb.processes()) do
    if tostring(p) == text then return p end
  end
  error("pid: no live process " .. text, 3)
end

-- A pid from a pid, three numbers, "<0.42.0>" or a registered name.
local function to_pid(a, b, c, fname)
  if typeof(a) == "pid" then return a end
  if type(a) == "number" then
    if type(b) ~= "number" or type(c) ~= "number" then
      error(format("bad argument #2 to '%s' (%s(node, id, serial) expects three numbers)",
        fname, fname), 3)
    end
    return make_pid(a, b, c)
  end
  if type(a) == "string" or typeof(a) == "atom" then
    local n, i, s = tostring(a):match("^<(%d+)%.(%d+)%.(%d+)>$")
    if n then return make_pid(tonumber(n), tonumber(i), tonumber(s)) end
    local p = mb.whereis(a)
    if p == nil then error(format("%s: no process registered as '%s'", fname, tostring(a)), 3) end
    return p
  end
  error(format("bad argument #1 to '%s' (pid, name or numbers expected, got %s)",
    fname, typeof(a)), 3)
end

local helpers = {}

local HELP = [[
Shell helpers:
  help()            this text
  flush()           print and drop every message in the shell's mailbox
  i()               the processes: pid, name, status, reductions, memory,
                    mailbox length
  i(pid)            what mb.process_info says of a process; also i(0, 42, 0),
                    i("<0.42.0>") or i("name")
  pid(0, 42, 0)     the pid <0.42.0>; also pid("<0.42.0>")
  regs()            the registered names
  reload("m", ...)  load modules again on this node and every node it is
                    connected to (moonbeam.code.reload_cluster)
  q()               leave the shell (and stop the node, under moonbeam shell)
`mb` is the moonbeam module. Locals are kept from one input to the next.
An incomplete input asks for more lines; #break drops it.
]]

function helpers.help() write(HELP) end

function helpers.flush()
  while true do
    local m, err = mb.receive(function(m) return not is_console(m) end, 0)
    if m == nil and err == "timeout" then return end
    write("Shell got ", inspect(m), "\n")
  end
end

function helpers.pid(a, b, c) return to_pid(a, b, c, "pid") end

local function by_pid(a, b) return a[1] < b[1] end

local function process_list()
  local rows, total = {}, {reductions = 0, memory = 0, mq = 0}
  for _, p in ipairs(mb.processes()) do
    local info = mb.process_info(p)
    if info then rows[#rows + 1] = {p, info} end
  end
  sort(rows, by_pid)
  local out = {format("%-14s %-24s %-9s %11s %10s %6s", "Pid", "Name", "Status",
    "Reductions", "Memory", "MsgQ")}
  for _, row in ipairs(rows) do
    local p, info = row[1], row[2]
    out[#out + 1] = format("%-14s %-24s %-9s %11d %10d %6d", tostring(p),
      info.registered_name or "", info.status, info.reductions, info.memory,
      info.message_queue_len)
    total.reductions = total.reductions + info.reductions
    total.memory = total.memory + info.memory
    total.mq = total.mq + info.message_queue_len
  end
  out[#out + 1] = format("%-14s %-24s %-9s %11d %10d %6d", "Total",
    #rows .. " processes", "", total.reductions, total.memory, total.mq)
  return concat(out, "\n") .. "\n"
end

local function process_details(p)
  local info = mb.process_info(p)
  if info == nil then return tostring(p) .. " is not alive\n" end
  local keys = {}
  for k in pairs(info) do keys[#keys + 1] = k end
  sort(keys)
  local out = {"Process " .. tostring(p)}
  for _, k in ipairs(keys) do
    local v = info[k]
    out[#out + 1] = format("  %-18s %s", k, type(v) == "string" and v or inspect(v, 2))
  end
  return concat(out, "\n") .. "\n"
end

function helpers.i(a, b, c)
  if a == nil then
    write(process_list())
  else
    write(process_details(to_pid(a, b, c, "i")))
  end
end

function helpers.regs()
  local names = mb.registered()
  sort(names)
  local out = {format("%-24s %-14s %s", "Name", "Pid", "Status")}
  for _, name in ipairs(names) do
    local p = mb.whereis(name)
    local info = p and mb.process_info(p)
    out[#out + 1] = format("%-24s %-14s %s", name, tostring(p), info and info.status or "dead")
  end
  write(concat(out, "\n"), "\n")
end

function helpers.reload(...)
  local code = require "moonbeam.code"
  local report = code.reload_cluster({...})
  write(code.report_text(report, {...}))
  return report.ok
end

function helpers.q() quitting = true end

--- The shell's helpers, by name: help, flush, i, pid, regs, reload, q.
M.helpers = helpers

-- ---------------------------------------------------------------------------
-- The loop

-- One line, or nil at the end of input.
local function read_line(prompt, s)
  if console then
    console.read(prompt, console.line_editing() and M.completions(s) or nil)
    local m = mb.receive(is_console)
    return m[2] or nil
  end
  write(prompt)
  return io.read("l")
end

-- ---------------------------------------------------------------------------
-- Remote shells (--remsh): the lines are read here and evaluated by a
-- session process on the other node.

local REMOTE_EVAL, REMOTE_OUTPUT = mb.atom["$shell_eval"], mb.atom["$shell_output"]

local remote_owner, remote_tag -- a remote session's: where its output goes

--- Where a remote session's output goes: the user's shell process and the
-- tag its output messages carry, {"$shell_output", Tag, Text}; nil in any
-- other process. For processes that write for the session (the tracer of
-- moonbeam.trace).
-- @return owner, tag; or nil
function M.remote_output() return remote_owner, remote_tag end

--- A remote session's process (on the node the shell connects to): it
-- evaluates what `owner` sends, and ends with it. What it prints (print,
-- and the helpers) goes to the owner's terminal. Other messages stay in
-- its mailbox, for flush() and receive. Not for users.
function M.serve(owner)
  for name, f in pairs(helpers) do _G[name] = f end
  local tag = mb.make_ref()
  output = function(text) mb.send(owner, mb.tuple(REMOTE_OUTPUT, tag, text)) end
  remote_owner, remote_tag = owner, tag
  _G.print = function(...)
    local n, parts = select("#", ...), {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    output(concat(parts, "\t") .. "\n")
  end
  local s = M.session()
  -- Linked: when Ctrl-C has the owner killed, what runs here stops too.
  mb.link(owner)
  local ref = mb.monitor(owner)
  local DOWN = mb.atom.DOWN
  while true do
    local m = mb.receive(function(m)
      return typeof(m) == "tuple" and (m[1] == REMOTE_EVAL or (m[1] == DOWN and m[2] == ref))
    end)
    if m[1] == DOWN then return end
    mb.send(m[2], mb.tuple(m[3], "output", tag))
    local status, result = M.eval(s, m[4])
    if status == "ok" then result = M.format_values(result) or "" end
    mb.send(m[2], mb.tuple(m[3], status, result))
  end
end

--- Start a session for a remote shell; returns its pid. Not for users.
function M.start_server(owner)
  return mb.spawn("moonbeam.shell", "serve", owner)
end

local remote, remote_ref -- the session on the other node, and its monitor

local function eval_text(s, text)
  if remote == nil then
    local status, result = M.eval(s, text)
    if status == "ok" then result = M.format_values(result) end
    return status, result
  end
  local ref = mb.make_ref()
  mb.send(remote, mb.tuple(REMOTE_EVAL, mb.self(), ref, text))
  -- The session first says which tag its output carries, then writes
  -- while it evaluates, then answers.
  local first = mb.receive(function(m) return typeof(m) == "tuple" and m[1] == ref end, 60000)
  if first == nil then return "error", "no answer from the remote node" end
  local tag = first[3]
  local DOWN = mb.atom.DOWN
  while true do
    local r = mb.receive(function(m)
      return typeof(m) == "tuple" and (m[1] == ref or (m[1] == REMOTE_OUTPUT and m[2] == tag)
        or (m[1] == DOWN and m[2] == remote_ref))
    end)
    if r[1] == DOWN then
      quitting = true
      return "error", "the remote session ended: " .. inspect(r[5])
    end
    if r[1] == ref then
      if r[3] == "" then r[3] = nil end
      return r[2], r[3]
    end
    output(r[3])
  end
end

-- Read an input, asking for more lines while it is incomplete, and
-- evaluate it. Returns false at the end of input.
local function step(s)
  local buffer
  local prompt = format("mb(%d)> ", s.count)
  while true do
    local line = read_line(prompt, s)
    if line == nil then return false end
    if buffer and line:match("^%s*#break%s*$") then return true end
    buffer = buffer and buffer .. "\n" .. line or line
    if buffer:match("^%s*$") then return true end
    if remote and buffer:match("^%s*q%(%)%s*$") then quitting = true return true end
    local status, result = eval_text(s, buffer)
    if status ~= "incomplete" then
      s.count = s.count + 1
      if status == "error" then
        write("** (error) ", tostring(result), "\n")
      elseif result then
        write(result, "\n")
      end
      return true
    end
    prompt = format("...(%d)> ", s.count)
  end
end

--- Run the shell in the calling process until q() or the end of input.
-- Sets the helpers as globals of the process.
-- @param opts optional: banner (print one line about the shell first),
--   remote (a node name: evaluate there, as --remsh does), name (register
--   the shell's process under it, when no other process has it)
function M.run(opts)
  opts = opts or {}
  if opts.name ~= nil and mb.whereis(opts.name) == nil then pcall(mb.register, opts.name, mb.self()) end
  for name, f in pairs(helpers) do _G[name] = f end
  quitting = false
  remote = nil
  if opts.remote then
    remote = require("moonbeam.rpc").call(opts.remote, "moonbeam.shell", "start_server",
      {mb.self()}, 10000)
    remote_ref = mb.monitor(remote)
  end
  if opts.banner then
    write(format("moonbeam %s shell, process %s%s. help() for help, q() or Ctrl-D to quit.\n",
      mb.version, tostring(mb.self()),
      opts.remote and (" on " .. tostring(opts.remote)) or ""))
  end
  local s = M.session()
  while not quitting and step(s) do end
end

return M
