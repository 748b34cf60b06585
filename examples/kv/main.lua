-- The kv application: start it, store and read a few values, stop it.
--
--   cd examples/kv && moonbeam main.lua
--   LUA_PATH="examples/kv/?.lua;;" moonbeam examples/kv/main.lua
--
-- Every process of the node finds modules on the node's path, so the
-- directory of this example must be on it (the current directory is, by
-- default): the application master requires kv.application, the
-- supervisor kv.supervisor, the server kv.server.
local mb = require "moonbeam"
local application = require "moonbeam.application"

if not package.searchpath("kv.server", package.path) then
  io.stderr:write("main.lua: kv.server not found on the path; run it from examples/kv,\n",
    "or with LUA_PATH=\"examples/kv/?.lua;;\"\n")
  os.exit(2)
end
local kv = require "kv.server"

-- Start kv and whatever it depends on; read kv.app.lua on the way.
local started = assert(application.ensure_all_started("kv"))
print("started: " .. table.concat(started, ", "))
for _, app in ipairs(application.which_applications()) do
  print(("running: %s %s (%s)"):format(app.name, app.version, app.description))
end

-- put is a cast and get a call: the call comes after the casts sent
-- before it, so it sees them.
kv.put("moon", "beam")
kv.put("answer", 42)
print("moon = " .. tostring(kv.get("moon")))
print("answer = " .. tostring(kv.get("answer")))
print("language = " .. tostring(kv.get("language")) .. " (from the environment)")
print("missing = " .. tostring(kv.get("missing")))

local store = mb.whereis("kv")
print("the store is " .. tostring(store) .. ", under kv_sup " .. tostring(mb.whereis("kv_sup")))

-- Stopping the application shuts the whole tree down.
assert(application.stop("kv"))
print("stopped: kv alive = " .. tostring(mb.is_alive(store)) ..
  ", applications running = " .. #application.which_applications())
