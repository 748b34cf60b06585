--- Ports: an operating system program whose input and output belong to a
-- process, as Erlang's open_port({spawn, ...}) gives.
--
--   local port = require "moonbeam.port"
--   local p = assert(port.open({spawn = "tr a-z A-Z"}))
--   port.command(p, "moon\n")
--   -- the owner receives {p, {data, "MOON\n"}}; after port.close(p) the
--   -- program sees the end of its input, exits, and {p, {exit_status, 0}}
--   -- follows its last output.
--
-- The port belongs to the process that opened it; when that process ends,
-- the port is closed (the program's input ends; a program that does not
-- stop then is left to run until the node stops, when it is killed).
-- Messages to the owner:
--
--   {Port, {data, Data}}         output, framed by the packet option
--   {Port, {exit_status, N}}     after the last output, once the program
--                                has exited (128 + the signal if a signal
--                                ended it); the port is then closed
--
-- Options: packet (as gen_tcp's: "raw", 1, 2, 4, "line"), packet_size,
-- active (true by default; "once" and N as gen_tcp's), cd (the program's
-- working directory), env (changes to its environment), stderr_to_stdout
-- (its standard error joins its output), line = N (Erlang's {line, N}:
-- output as {Port, {data, {eol, Line}}}, without the newline, and
-- {Port, {data, {noeol, Part}}} for N bytes of a longer line or the end
-- of output without a newline).
local sock = require "moonbeam.socket"
local gen_tcp = require "moonbeam.gen_tcp"

local type = type

local M = {}

local await = gen_tcp.await

-- Option env: {NAME = "value", OTHER = false} or a list of {name, value}
-- pairs, as "NAME=value" (set) and "OTHER" (unset) strings.
local function env_changes(env)
  if type(env) ~= "table" then
    error("bad option 'env' (table expected, got " .. type(env) .. ")", 3)
  end
  local out = {}
  local function add(name, value)
    if type(name) ~= "string" or name == "" or name:find("=", 1, true)
       or (value ~= false and type(value) ~= "string") then
      error("bad option 'env' (names are strings without '=', values strings or false)", 4)
    end
    out[#out + 1] = value and name .. "=" .. value or name
  end
  for i, pair in ipairs(env) do add(pair[1], pair[2]) end
  for k, v in pairs(env) do
    if math.type(k) ~= "integer" or k < 1 or k > #env then add(k, v) end
  end
  return out
end

--- Start a program.
-- @param name {spawn = "command line"} (run by /bin/sh -c), or
--   {spawn_executable = "prog", args = {...}} (prog found on PATH)
-- @param opts packet, packet_size, active, cd, env, stderr_to_stdout, line
-- @return the port, or nil, reason (enoent, ...)
function M.open(name, opts)
  if type(name) ~= "table" then
    error("bad argument #1 to 'open' ({spawn = cmd} or {spawn_executable = prog} expected, got "
      .. type(name) .. ")", 2)
  end
  local argv
  if type(name.spawn) == "string" then
    argv = {"/bin/sh", "-c", name.spawn}
  elseif type(name.spawn_executable) == "string" then
    argv = {name.spawn_executable}
    for i, a in ipairs(name.args or {}) do argv[i + 1] = a end
  else
    error("bad argument #1 to 'open' ({spawn = cmd} or {spawn_executable = prog} expected)", 2)
  end
  local o, cd, po = {}, nil, {}
  for k, v in pairs(opts or {}) do
    if k == "cd" then cd = v
    elseif k == "stderr_to_stdout" or k == "line" then po[k] = v
    elseif k == "env" then po.env = env_changes(v)
    else o[k] = v end
  end
  return await(sock.port_open(argv, o, cd, po))
end

--- Write to the program's input (port_command); with a packet option,
-- its length prefix first.
-- @return true, or nil, reason
function M.command(p, data)
  return await(sock.send(p, data))
end

--- Close the port: the program's input ends.  Always true.
M.close = gen_tcp.close

--- Make another process the owner (port_connect); only the owner may.
M.connect = gen_tcp.controlling_process

--- Change the active or packet options.
M.setopts = gen_tcp.setopts

--- End the program's input but keep reading its output, so that a filter
-- such as sort can finish.
-- @return true, or nil, reason
function M.eof(p)
  return await(sock.shutdown(p, "write"))
end

return M
