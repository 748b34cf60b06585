-- An upgrade of examples/kv's store while it serves: clients read from it
-- in a loop; version 2 of kv.server (kv_server_v2.lua: delete and stats)
-- is loaded into the node; the server moves to it between two messages,
-- its entries migrated by code_change; no client call fails.
--
--   LUA_PATH="examples/kv/?.lua;;" moonbeam examples/upgrade/main.lua
local mb = require "moonbeam"
local application = require "moonbeam.application"
local code = require "moonbeam.code"

if not package.searchpath("kv.server", package.path) then
  io.stderr:write("main.lua: kv.server not found on the path; run it with\n",
    "LUA_PATH=\"examples/kv/?.lua;;\"\n")
  os.exit(2)
end
local kv = require "kv.server"

assert(application.ensure_all_started("kv"))
kv.put("moon", "beam")
print("version " .. code.version("kv.server") .. ": moon = " .. kv.get("moon"))

-- Clients that read in a loop until told to stop, and count their calls.
local me = mb.self()
local clients = {}
for i = 1, 4 do
  clients[i] = mb.spawn(function()
    local kv = require "kv.server"
    local ok, failed, ready = 0, 0, false
    while mb.receive(0) ~= "stop" do
      if pcall(kv.get, "moon") then ok = ok + 1 else failed = failed + 1 end
      if ok == 100 and not ready then ready = true mb.send(me, "ready") end
    end
    mb.send(me, {ok, failed})
  end)
end
for _ = 1, #clients do mb.receive() end -- each has made 100 calls

-- The new version, from the file beside this script.
local dir = arg[0]:match("^(.*)/") or "."
local f = assert(io.open(dir .. "/kv_server_v2.lua"))
local version = assert(code.load("kv.server", f:read("a")))
f:close()
print("loaded version " .. version .. " of kv.server while it serves")

-- This process moves to version 2 too: kv.delete and kv.stats exist now.
code.upgrade({"kv.server"})
kv.put("sun", "star")
kv.delete("moon")
print("moon = " .. tostring(kv.get("moon")) .. ", sun = " .. kv.get("sun") ..
  ", language = " .. kv.get("language") .. " (kept by code_change)")

for _, c in ipairs(clients) do mb.send(c, "stop") end
local calls, failed = 0, 0
for _ = 1, #clients do
  local r = mb.receive()
  calls, failed = calls + r[1], failed + r[2]
end
local stats = kv.stats()
print(("clients made %s calls, %d failed; keys = %d"):format(
  calls >= 400 and "400 or more" or tostring(calls), failed, stats.keys))
assert(application.stop("kv"))
