--- The server side of moonbeam.gen_server: the function every server
-- process runs, from its start to the loop.  gen_server.start spawns
-- M.init_it itself, its code copied into the new process with the spawn
-- (as any spawned function), so that a server loads no module of its own
-- to start: the start is mb.gen_init and the loop mb.gen_serve, both in
-- C.  What they leave to Lua (a start that is not the common one, a stop,
-- an error, a system message, a code change...) is in
-- moonbeam.gen_server_event, loaded when that happens and dropped from
-- package.loaded again after, with the modules it loads (see
-- docs/behaviours.md, Costs).  The callback contract is at the top of
-- moonbeam.gen_server.
local mb = require "moonbeam"

local M = {}

--- Entry point of a new server process (see gen.start); not for users.
-- Its one upvalue is moonbeam, which a spawn sends by name; it stays
-- below mb.gen_serve while the server lives (not a tail call), so that
-- tracebacks of callbacks name it.
function M.init_it(starter, ref, parent, name, module, args)
  local s, r = mb.gen_init(starter, ref, parent, name, module, args)
  if s == nil or r ~= nil then
    s = require("moonbeam.gen_server_event").init_it(starter, ref, parent,
      name, module, args, s, r)
    if s == nil then return end
  end
  -- Kept by this frame while the server lives otherwise.
  starter, ref, parent, name, module, args, r = nil
  -- The loop drops the Lua side and the modules it loads from
  -- package.loaded (one string constant: a table of names would cost an
  -- idle server more).
  mb.gen_serve(s, nil, "moonbeam.gen_server_event", "moonbeam.gen_base \z
    moonbeam.gen_server_stop moonbeam.gen_server_sys moonbeam.codecache")
end

--- The loop of a process that became a server (gen_server.enter_loop),
-- with its server table; never returns.
function M.serve(s)
  mb.gen_serve(s, nil, "moonbeam.gen_server_event", "moonbeam.gen_base \z
    moonbeam.gen_server_stop moonbeam.gen_server_sys moonbeam.codecache")
end

return M
