--- Loading new code into a running node, as Erlang's `code` module.
--
-- The node keeps one current version of each Lua module (see
-- docs/code_loading.md). A process holds the version that was current
-- when it required the module, until it upgrades:
--
--   code.load(name [, source])  a new current version, from the file on
--                               package.path or from source/bytecode
--   code.reload(name)           the same, for a module the node has
--   code.which / code.version   where the current version came from, its
--                               number
--   code.held(name)             the version the calling process holds
--   code.purge / soft_purge     the processes still on an old version
--   code.upgrade([names])       the calling process moves to the current
--                               versions (GenServers move by themselves,
--                               between two messages)
--   code.reload_cluster(names [, nodes])
--                               reload on this node and the others, over
--                               rpc (as Erlang's nl/1)
--
-- Two versions at most, as in Erlang: loading a version kills the
-- processes that still hold a version older than the one it replaces.
local mb = require "moonbeam"
local cache = require "moonbeam.codecache"

local type, pcall, pairs, ipairs, tostring = type, pcall, pairs, ipairs, tostring
local typeof = mb.typeof
local next = next

local M = {}

M.generation = cache.generation

-- Kill the processes that hold a version too old to keep, as Erlang's
-- code:purge does (their reason is `killed`), saying why in the log.
local function kill(name, pids, why)
  for _, pid in ipairs(pids) do
    mb.log("warning", ("code: killing %s, which still runs an old version of "
      .. "module '%s' (%s)"):format(tostring(pid), name, why))
    mb.exit(pid, mb.atom.kill)
  end
  return #pids > 0
end

-- The compiled chunk of `name`, from source or from the file package.path
-- finds, and where it came from (nil for a string).
local function compile(name, source)
  if source ~= nil then
    if type(source) ~= "string" then
      error(("bad argument #2 to 'load' (string expected, got %s)")
        :format(type(source)), 3)
    end
    local chunk, err = load(source, "=" .. name, "bt")
    return chunk, err
  end
  local path, err = package.searchpath(name, package.path)
  if path == nil then return nil, "module '" .. name .. "' not found:" .. err end
  local chunk, cerr = loadfile(path)
  return chunk, cerr, path
end

--- Load a new version of a module into the node: it becomes the current
-- version, the one every later `require` and upgrade gets. The module is
-- compiled and run once in the calling process first: one that fails to
-- compile or raises leaves the current version as it was.
-- @param name module name, as for require
-- @param source optional Lua source or bytecode (default: the file that
--   package.path finds for name)
-- @return the new version number, or nil and the error
function M.load(name, source)
  if type(name) ~= "string" then
    error(("bad argument #1 to 'load' (string expected, got %s)"):format(type(name)), 2)
  end
  local chunk, err, path = compile(name, source)
  if chunk == nil then return nil, err end
  local ok, rerr = pcall(chunk, name, path)
  if not ok then
    return nil, ("error loading module '%s': %s"):format(name, tostring(rerr))
  end
  local version, stale = cache.install(name, path, string.dump(chunk))
  kill(name, stale, ("version %d loaded"):format(version))
  return version
end

--- Load a module again, as load does, if the node has a version of it.
-- @return the new version, or nil and "not_loaded" or the error
function M.reload(name)
  if cache.info(name) == nil then return nil, "not_loaded" end
  return M.load(name)
end

--- The file the current version of a module came from, "" for a module
-- loaded from a string, or nil when the node has no version of it.
function M.which(name)
  local _, path = cache.info(name)
  if path == nil then return nil end
  return path or ""
end

--- The current version number of a module on this node (1 for the first),
-- or nil.
function M.version(name)
  return (cache.info(name))
end

--- The version of a module the calling process holds, or nil.
function M.held(name)
  return cache.held()[name]
end

--- Kill the processes that hold an older version of `name` than the
-- current one, as Erlang's code:purge.
-- @return true if any process was killed
function M.purge(name)
  local version = cache.info(name)
  if version == nil then return false end
  return kill(name, cache.holders(name, version, true),
    ("purged at version %d"):format(version))
end

--- True if no process holds an older version of `name` than the current
-- one; unlike purge, kills nobody (Erlang's code:soft_purge).
function M.soft_purge(name)
  local version = cache.info(name)
  if version == nil then return true end
  return next(cache.holders(name, version)) == nil
end

--- Move the calling process to the current version of one module (see
-- moonbeam.code_swap, kept apart so that a GenServer that upgrades loads
-- only that).
M.swap = require("moonbeam.code_swap").swap

--- Move the calling process to the current version of the modules it holds
-- an older version of (all of them, or those named): the documented
-- equivalent of Erlang's fully-qualified call for a plain process.
-- @param names optional list of module names
-- @return the list of modules upgraded, or nil and the first error (the
--   modules before it stay upgraded)
function M.upgrade(names)
  if names == nil then
    names = {}
    for name in pairs(cache.held()) do names[#names + 1] = name end
    table.sort(names)
  end
  local done = {}
  for _, name in ipairs(names) do
    local new, err = M.swap(name)
    if new ~= nil then
      done[#done + 1] = name
    elseif err then
      return nil, err
    end
  end
  return done
end

--- Reload modules on this node; what reload_cluster runs on each node.
-- @param names a list of module names
-- @return a table: name -> new version, or name -> "error: message"
function M.reload_here(names)
  local out = {}
  for _, name in ipairs(names) do
    name = tostring(name)
    local v, err = M.reload(name)
    out[name] = v or ("error: " .. tostring(err))
  end
  return out
end

--- Reload modules on several nodes, one after the other, over rpc (each
-- node reads its own files, as Erlang's code server does).
-- @param names a list of module names
-- @param nodes a list of node names (default: this node and every node it
--   is connected to)
-- @param timeout for each node, milliseconds (default 30000)
-- @return a report: {ok = true if every module loaded on every node,
--   nodes = {[node] = {[module] = version or "error: ..."}, or "error: why"
--   for a node the call did not reach}}
function M.reload_cluster(names, nodes, timeout)
  if type(names) ~= "table" then
    error(("bad argument #1 to 'reload_cluster' (list expected, got %s)")
      :format(type(names)), 2)
  end
  if nodes == nil then
    nodes = {tostring(mb.node())}
    for _, n in ipairs(mb.nodes()) do nodes[#nodes + 1] = tostring(n) end
  end
  local rpc = require "moonbeam.rpc"
  local here = tostring(mb.node())
  local report = {ok = true, nodes = {}}
  for _, node in ipairs(nodes) do
    node = tostring(node)
    local ok, r
    if node == here then
      ok, r = true, M.reload_here(names)
    else
      ok, r = pcall(rpc.call, node, "moonbeam.code", "reload_here", {names},
        timeout or 30000)
    end
    if not ok then
      r = "error: " .. tostring(typeof(r) == "tuple" and r[2] or r)
      report.ok = false
    else
      for _, v in pairs(r) do
        if type(v) ~= "number" then report.ok = false end
      end
    end
    report.nodes[node] = r
  end
  return report
end

--- A reload_cluster report as text, one line per node and module:
-- "node module version N" or "node module error: ...".
function M.report_text(report, names)
  local nodes, lines = {}, {}
  for node in pairs(report.nodes) do nodes[#nodes + 1] = node end
  table.sort(nodes)
  for _, node in ipairs(nodes) do
    local r = report.nodes[node]
    if type(r) ~= "table" then
      lines[#lines + 1] = node .. " " .. tostring(r)
    else
      for _, name in ipairs(names) do
        local v = r[name]
        lines[#lines + 1] = ("%s %s %s"):format(node, name,
          type(v) == "number" and "version " .. v or tostring(v))
      end
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

return M
