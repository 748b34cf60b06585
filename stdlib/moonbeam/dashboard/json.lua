--- A JSON encoder for the dashboard's answers: tables with a sequence
-- part become arrays (an empty table too), others objects; pids, refs,
-- atoms and other moonbeam values become their text.
local mb = require "moonbeam"

local typeof = mb.typeof
local type, pairs, tostring, next = type, pairs, tostring, next
local format, byte, concat = string.format, string.byte, table.concat
local math_type, huge = math.type, math.huge

local M = {}

local ESC = {['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
             ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t"}

local function str(s)
  -- Control characters, quotes, backslashes; "<" too, so that a value
  -- cannot close a script element.  Bytes that are not UTF-8 pass as
  -- they are: the browser shows them as replacement characters.
  return '"' .. s:gsub('[%c"\\<]', function(c)
    return ESC[c] or format("\\u%04x", byte(c))
  end) .. '"'
end

local encode

local function array(t, out, depth)
  out[#out + 1] = "["
  for i = 1, #t do
    if i > 1 then out[#out + 1] = "," end
    encode(t[i], out, depth)
  end
  out[#out + 1] = "]"
end

local function object(t, out, depth)
  out[#out + 1] = "{"
  local first = true
  for k, v in pairs(t) do
    if not first then out[#out + 1] = "," end
    first = false
    out[#out + 1] = str(tostring(k))
    out[#out + 1] = ":"
    encode(v, out, depth)
  end
  out[#out + 1] = "}"
end

function encode(v, out, depth)
  local t = type(v)
  if v == nil then
    out[#out + 1] = "null"
  elseif t == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif t == "number" then
    if math_type(v) == "integer" then out[#out + 1] = format("%d", v)
    elseif v ~= v or v == huge or v == -huge then out[#out + 1] = "null"
    else out[#out + 1] = format("%.14g", v) end
  elseif t == "string" then
    out[#out + 1] = str(v)
  elseif t == "table" and typeof(v) == "table" then
    if depth > 32 then out[#out + 1] = '"..."' return end
    if v[1] ~= nil or next(v) == nil then array(v, out, depth + 1)
    else object(v, out, depth + 1) end
  else
    out[#out + 1] = str(tostring(v))
  end
end

--- The JSON text of a value.
-- @param v a string, number, boolean, nil or table of those
-- @return a string
function M.encode(v)
  local out = {}
  encode(v, out, 0)
  return concat(out)
end

return M
