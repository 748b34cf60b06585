-- Real Erlang and Elixir peers for the distribution specs: the host's, or,
-- with MB_PEER_ROOT set to a Debian root with other releases (.ci/roots
-- builds them), that root's, run with chroot.  Files the peers read live
-- under P.tmp, which they see as P.ptmp.  Every OS process started here
-- is stopped by its pid in P.stop_all, which also removes P.tmp (after
-- copying it into $MB_PEER_KEEP, when that is set).
--
--   local P = require("spec.peer_helper").new{epmd_port = port}
--   P.spawn_os(P.peer("erl -name e1@127.0.0.1 ..."), P.tmp .. "/e1.log")
--   teardown(P.stop_all)
local M = {}

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end
M.sh = sh

function M.new(opts)
  local P = {epmd_port = opts.epmd_port, started = {}, sh = sh}
  local root = os.getenv("MB_PEER_ROOT")
  if root == "" then root = nil end
  P.root = root
  if root then
    P.tmp = sh(("mktemp -d %s/tmp/mbspec.XXXXXX"):format(root)):gsub("%s+$", "")
    P.ptmp = P.tmp:sub(#root + 1)
    P.have_erl = sh(("test -x %s/usr/bin/erl && echo y"):format(root)):match("y") ~= nil
    P.have_elixir = sh(("test -x %s/usr/bin/elixir && echo y"):format(root)):match("y") ~= nil
  else
    P.tmp = sh("mktemp -d"):gsub("%s+$", "")
    P.ptmp = P.tmp
    P.have_erl = sh("command -v erl"):match("%S") ~= nil
    P.have_elixir = sh("command -v elixir"):match("%S") ~= nil
  end

  -- A command line of the peers' (erl, erlc, elixir).  In a root, the
  -- command gets a /proc of its own: mounted in a mount namespace of its
  -- own, it goes when the command ends, and nothing outside sees it.
  function P.peer(cmd)
    if not root then return cmd end
    return ([[unshare -m --propagation private sh -c 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' %s %s]])
      :format(root, cmd)
  end

  -- When each process started (field 22 of /proc/PID/stat), so that a
  -- pid the system gave to another process since is never signalled.
  local since = {}
  local function start_time(pid)
    local f = io.open("/proc/" .. pid .. "/stat")
    if f == nil then return nil end
    local t = f:read("a"):match("^.*%) (.*)$")
    f:close()
    local fields = {}
    for w in (t or ""):gmatch("%S+") do fields[#fields + 1] = w end
    return fields[20]
  end

  -- Record a pid started some other way, so stop_all stops it.
  function P.track(pid)
    P.started[#P.started + 1] = pid
    since[pid] = start_time(pid)
    return pid
  end

  -- How each process started with spawn_os ended, by pid: a file that a
  -- shell waiting for it writes its exit status into.
  local status_file = {}

  -- An OS process in the background, its output in log: its pid.  A shell
  -- waits for it and notes how it ended (P.exit_status).
  function P.spawn_os(cmd, log)
    log = log or "/dev/null"
    local st = ("%s/exit.%d"):format(P.tmp, #P.started + 1)
    -- erl and elixir exec their way down to the VM, which keeps this pid
    -- A VM that ends in a crash writes its dump into P.tmp (removed with
    -- it, kept with MB_PEER_KEEP), not into the working directory.
    local dump = ("%s/erl_crash.%d.dump"):format(P.ptmp, #P.started + 1)
    local p = io.popen(("{ (ERL_EPMD_PORT=%d ERL_CRASH_DUMP=%s exec %s > %s 2>&1) & echo $!; "
      .. "exec > /dev/null 2>&1; wait $!; echo $? > %s; } &"):format(P.epmd_port, dump, cmd,
      log, st))
    local pid = p:read("l")
    p:close()
    status_file[pid] = st
    return P.track(pid)
  end

  -- How a process of spawn_os ended: "running", "exit N", or "killed by
  -- signal N" (a VM that crashed: 11 is a segmentation fault, 6 an abort).
  function P.exit_status(pid)
    local f = status_file[pid] and io.open(status_file[pid])
    if f == nil then return "running" end
    local code = tonumber(f:read("a"):match("%d+"))
    f:close()
    if code == nil then return "running" end
    if code > 128 then return ("killed by signal %d"):format(code - 128) end
    return ("exit %d"):format(code)
  end

  -- Say loudly, once the peers are stopped, which of them crashed (ended
  -- by a signal this file did not send): the log of a failed run shows it.
  local function report_crashes()
    for pid in pairs(status_file) do
      local how = P.exit_status(pid)
      local sig = tonumber(how:match("signal (%d+)"))
      if sig and sig ~= 9 and sig ~= 15 and sig ~= 19 then
        io.stderr:write(("\n!! PEER VM CRASHED: OS process %s %s\n"):format(pid, how))
      end
    end
  end

  -- Signal a process started here, if it is still that process.
  function P.kill_os(pid, sig)
    local t = start_time(pid)
    if t == nil or t ~= since[pid] then return end
    os.execute(("kill -%s %s 2>/dev/null"):format(sig or "TERM", pid))
  end

  function P.stop_all()
    for _, pid in ipairs(P.started) do P.kill_os(pid, "KILL") end
    -- Each one's waiting shell writes its exit status into P.tmp: let it
    -- (5 s at most) before the directory goes.
    for _, pid in ipairs(P.started) do
      for _ = 1, 50 do
        if not status_file[pid] or P.exit_status(pid) ~= "running" then break end
        require("moonbeam").run(function() require("moonbeam").sleep(100) end)
      end
    end
    P.started = {}
    report_crashes()
    -- MB_PEER_KEEP=dir keeps the peers' files (their logs) for a look
    -- after a failed run.
    local keep = os.getenv("MB_PEER_KEEP")
    if keep and keep ~= "" then os.execute(("cp -r %s %s/"):format(P.tmp, keep)) end
    os.execute("rm -rf " .. P.tmp)
  end

  -- What P.tmp/<name>.log holds once it matches `what` (a Lua pattern,
  -- or a plain string when `plain`), or after 20 s.
  function P.log_until(name, what, plain)
    local out = ""
    for _ = 1, 200 do
      local f = io.open(P.tmp .. "/" .. name .. ".log")
      out = f and f:read("a") or ""
      if f then f:close() end
      if out:find(what, 1, plain) then break end
      require("moonbeam").run(function() require("moonbeam").sleep(100) end)
    end
    return out
  end

  -- Compile an Erlang module from spec/fixtures into P.tmp.
  function P.erlc(file)
    assert(os.execute(("cp spec/fixtures/%s %s/"):format(file, P.tmp)))
    assert(os.execute(P.peer(("erlc -o %s %s/%s"):format(P.ptmp, P.ptmp, file))))
  end

  return P
end

return M
