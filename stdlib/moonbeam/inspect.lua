--- A readable, one-line rendering of any value, for reports and the shell:
-- tables show their contents (to a depth, with a length limit), strings are
-- quoted, pids, refs, atoms, tuples and lists print as moonbeam prints them.
local mb = require "moonbeam"

local typeof, tostring, type, format = mb.typeof, tostring, type, string.format
local pairs, concat, sort, pcall = pairs, table.concat, table.sort, pcall

local MAX_ITEMS = 50

local render

-- tostring, except that a __tostring that raises or gives no string
-- makes opaque text: a report or the shell must not fail on a value.
local function text(v)
  local ok, s = pcall(tostring, v)
  if ok then return s end
  return format("<%s: __tostring failed>", type(v))
end

local function key_text(k, depth, seen)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. render(k, depth, seen) .. "]"
end

function render(v, depth, seen)
  local t = typeof(v)
  if t == "string" then return format("%q", v):gsub("\\\n", "\\n") end
  if t ~= "table" and t ~= "map" and t ~= "tuple" and t ~= "list" then
    return text(v)
  end
  if seen[v] then return "<cycle>" end
  if depth <= 0 then return t == "tuple" and "{...}" or t == "list" and "[...]" or "{...}" end
  seen[v] = true
  local parts = {}
  if t == "tuple" or t == "list" then
    local n = v.n or #v
    for i = 1, n do
      if i > MAX_ITEMS then parts[#parts + 1] = "..." break end
      parts[#parts + 1] = render(v[i], depth - 1, seen)
    end
  else
    local n, keys = #v, {}
    for i = 1, math.min(n, MAX_ITEMS) do
      parts[#parts + 1] = render(v[i], depth - 1, seen)
    end
    for k in pairs(v) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
    end
    sort(keys, function(a, b) return text(a) < text(b) end)
    for _, k in ipairs(keys) do
      if #parts >= MAX_ITEMS then break end
      parts[#parts + 1] = key_text(k, depth - 1, seen) .. " = " .. render(v[k], depth - 1, seen)
    end
    -- What did not fit is shown as "...".
    if n + #keys > MAX_ITEMS then parts[#parts + 1] = "..." end
  end
  seen[v] = nil
  local open, close = "{", "}"
  if t == "list" then open, close = "[", "]" end
  if t == "map" then open = "%{" end
  return open .. concat(parts, ", ") .. close
end

--- Render a value as text.
-- @param v any value
-- @param depth how deep to show nested tables (default 4)
-- @return a string
return function(v, depth) return render(v, depth or 4, {}) end
