-- Running the launcher from specs: in the foreground with a time limit, or
-- in the background (to send it signals), always bounded, stopping every
-- operating system process it starts by the pid it started.
--
-- The launcher is build/bin/moonbeam, or bin/moonbeam in $MB_BUILD_DIR (set
-- by .ci/specs to the build under test).
local H = {}

H.build = os.getenv("MB_BUILD_DIR") or "build"
H.launcher = H.build .. "/bin/moonbeam"

function H.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local quote = H.quote

function H.sleep(seconds) os.execute("sleep " .. seconds) end

function H.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

function H.read(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local text = f:read("a")
  f:close()
  return text
end

--- A new temporary directory; remove it with H.remove.
function H.tmpdir()
  local p = assert(io.popen("mktemp -d"))
  local dir = p:read("l")
  p:close()
  assert(dir and dir:match("^/"), "mktemp -d failed")
  return dir
end

function H.remove(dir)
  assert(dir:match("^/tmp/") or dir:match("^" .. (os.getenv("TMPDIR") or "/tmp")),
    "not a temporary directory: " .. dir)
  os.execute("rm -rf " .. quote(dir))
end

-- "env -u A B=1 ..." for opts.env ({B = "1", A = false}) and opts.unset.
local function env_prefix(env)
  local words = {"env"}
  -- Settings of the runner's environment must not leak into a test.
  for _, var in ipairs({"MOONBEAM_SCHEDULERS", "MOONBEAM_MAX_HEAP", "MOONBEAM_MAX_PROCESSES",
                        "MOONBEAM_SHUTDOWN_TIME",
                        "MOONBEAM_LOG_LEVEL", "MOONBEAM_LOG_FORMAT", "MOONBEAM_LOG_FILE",
                        "MOONBEAM_LOG_FILE_SIZE", "MOONBEAM_LOG_FILES",
                        "MOONBEAM_CONFIG", "MOONBEAM_ROCKS_TREE",
                        "MOONBEAM_DASHBOARD", "MOONBEAM_DASHBOARD_TOKEN"}) do
    if not (env and env[var]) then words[#words + 1] = "-u " .. var end
  end
  -- env takes its -u options before the assignments.
  local sets = {}
  for k, v in pairs(env or {}) do
    if v == false then
      words[#words + 1] = "-u " .. k
    else
      sets[#sets + 1] = quote(k .. "=" .. v)
    end
  end
  for _, w in ipairs(sets) do words[#words + 1] = w end
  return table.concat(words, " ")
end

local function command(args, opts)
  -- exec, so that the pid a shell gives is the launcher's own.
  local words = {"exec", env_prefix(opts.env), quote(opts.program or H.launcher)}
  for _, a in ipairs(args) do words[#words + 1] = quote(a) end
  local cmd = table.concat(words, " ")
  if opts.cwd then cmd = "cd " .. quote(opts.cwd) .. " && " .. cmd end
  return cmd
end

--- Run the launcher (or opts.program) with `args`, bounded by opts.timeout
-- seconds (default 30), with opts.input on stdin (else /dev/null).
-- @return the exit status, stdout, stderr
function H.run(args, opts)
  opts = opts or {}
  local dir = H.tmpdir()
  local out, err, input = dir .. "/out", dir .. "/err", dir .. "/in"
  H.write(input, opts.input or "")
  local cmd = string.format("timeout -k 5 %d sh -c %s < %s > %s 2> %s",
    opts.timeout or 30, quote(command(args, opts)), quote(input), quote(out), quote(err))
  local _, _, status = os.execute(cmd)
  local o, e = H.read(out), H.read(err)
  H.remove(dir)
  return status, o, e
end

--- The lines of a text.
function H.lines(text)
  local t = {}
  for line in text:gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

--- The lines of stderr the launcher itself wrote ("moonbeam: ...").
function H.said(text)
  local t = {}
  for line in text:gmatch("[^\n]+") do
    if line:match("^moonbeam: ") then t[#t + 1] = line end
  end
  return t
end

local Job = {}
Job.__index = Job

--- Start the launcher in the background. The job's pid is the launcher's
-- own, to send signals to; job:wait() gives its exit status. With
-- opts.input true, its stdin is a pipe: job:type(text) writes to it, and
-- job:close_input() closes it.
function H.start(args, opts)
  opts = opts or {}
  local dir = H.tmpdir()
  local job = setmetatable({dir = dir, out = dir .. "/out", err = dir .. "/err"}, Job)
  local pidf, statf = dir .. "/pid", dir .. "/status"
  job.status_file = statf
  local stdin = "/dev/null"
  if opts.input then
    stdin = dir .. "/in"
    assert(os.execute("mkfifo " .. quote(stdin)))
  end
  -- sh waits for the launcher and writes its status.
  local inner = string.format("%s < %s > %s 2> %s & echo $! > %s.new; mv %s.new %s; wait $!; echo $? > %s.new; mv %s.new %s",
    command(args, opts), quote(stdin), quote(job.out), quote(job.err), quote(pidf), quote(pidf),
    quote(pidf), quote(statf), quote(statf), quote(statf))
  os.execute("sh -c " .. quote(inner) .. " > /dev/null 2>&1 &")
  -- Opening the pipe for writing lets the launcher's shell open it.
  if opts.input then job.input = assert(io.open(stdin, "w")) end
  assert(H.wait_for(function() return H.read(pidf):match("^%d+") end, 10),
    "the launcher did not start")
  job.pid = tonumber(H.read(pidf):match("^%d+"))
  return job
end

--- Poll fn every 50 ms until it returns a true value or `seconds` pass.
-- @return what fn returned, or nil
function H.wait_for(fn, seconds)
  local deadline = os.time() + seconds + 1
  while true do
    local v = fn()
    if v then return v end
    if os.time() > deadline then return nil end
    H.sleep(0.05)
  end
end

function Job:stdout() return H.read(self.out) end

function Job:type(text)
  self.input:write(text)
  self.input:flush()
end

function Job:close_input()
  if self.input then self.input:close() end
  self.input = nil
end
function Job:stderr() return H.read(self.err) end

--- Wait until the launcher's output (stdout and stderr) has `text`.
function Job:wait_output(text, seconds)
  return H.wait_for(function()
    return (self:stdout() .. self:stderr()):find(text, 1, true) ~= nil
  end, seconds or 20)
end

function Job:signal(name) os.execute("kill -" .. name .. " " .. self.pid .. " 2>/dev/null") end

--- Wait for the launcher to exit (at most `seconds`, default 30).
-- @return its exit status, or nil if it did not exit in time
function Job:wait(seconds)
  local s = H.wait_for(function() return H.read(self.status_file):match("^(%d+)") end,
    seconds or 30)
  return s and tonumber(s)
end

--- Kill the launcher if it still runs, and remove the job's files.
function Job:cleanup()
  self:close_input()
  if not H.read(self.status_file):match("%d") then
    self:signal("KILL")
    self:wait(10)
  end
  H.remove(self.dir)
end

-- Is curl installed?
H.have_curl = os.execute("command -v curl > /dev/null 2>&1") == true

--- curl `args` (shell words), bounded at 10 s: the status code and the
-- body.  LD_PRELOAD (the sanitizer runtime of .ci/test) is not curl's.
function H.curl(args)
  local p = assert(io.popen("env -u LD_PRELOAD curl -s -m 10 -w '\\n%{http_code}' " .. args))
  local out = p:read("a")
  p:close()
  local body, code = out:match("^(.*)\n(%d+)$")
  return tonumber(code), body
end

return H
