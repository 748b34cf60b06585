--- receive with clauses, as Erlang's `receive ... after ... end`.
--
--   local receive = require "moonbeam.receive"
--   local sum = receive {
--     {"{add, A, B}", function(b) return b.A + b.B end},
--     {"{stop, From}", when = function(b) return b.From == owner end,
--       function(b, msg) return "stopped" end},
--     after = {1000, function() return "timeout" end},
--   }
--
-- The first message in the mailbox that matches any clause (tried in clause
-- order, with its guard) is taken and its handler's results are returned;
-- messages that match no clause stay queued, in order. Patterns are those of
-- moonbeam.pattern: strings, the table form, or functions (msg, pins) ->
-- bindings-or-nil. A guard that raises counts as false, as in Erlang.
local mb = require "moonbeam"
local pattern = require "moonbeam.pattern"

local compile, tag_of = pattern.compile, pattern.tag
local mb_receive, pcall, type = mb.receive, pcall, type

--- Wait for the first message matching one of the clauses.
-- @param spec a list of clauses {pattern, [when = guard], [handler]}, and
--   optionally `after = ms` or `after = {ms, handler}`, `pins = {Name = v}`
-- @return the handler's results; without a handler, the bindings and the
--   message; on timeout without a handler, nil, "timeout"
local function receive(spec)
  if type(spec) ~= "table" then
    error("bad argument #1 to 'receive' (table of clauses expected, got "
      .. type(spec) .. ")", 2)
  end
  local n = #spec
  local matchers = {}
  -- When every clause wants a tuple with a literal first element, the core
  -- skips other messages without calling the matcher.
  local filter = {}
  for i = 1, n do
    local clause = spec[i]
    if type(clause) ~= "table" or clause[1] == nil then
      error(("bad clause #%d to 'receive' ({pattern, handler} expected)"):format(i), 2)
    end
    matchers[i] = compile(clause[1])
    local tag = filter and tag_of(matchers[i])
    if tag == nil then filter = nil else filter[tag] = true end
  end
  local pins = spec.pins
  local hit, bindings
  local function matcher(msg)
    for i = 1, n do
      local b = matchers[i](msg, pins)
      if b then
        local guard = spec[i].when
        local ok, pass = true, true
        if guard then ok, pass = pcall(guard, b, msg) end
        if ok and pass then
          hit, bindings = i, b
          return true
        end
      end
    end
    return false
  end
  local after, on_timeout = spec.after, nil
  if type(after) == "table" then after, on_timeout = after[1], after[2] end
  local msg = mb_receive(matcher, after, filter)
  if hit == nil then
    if on_timeout then return on_timeout() end
    return nil, "timeout"
  end
  local handler = spec[hit][2]
  if handler == nil then return bindings, msg end
  return handler(bindings, msg)
end

return receive
