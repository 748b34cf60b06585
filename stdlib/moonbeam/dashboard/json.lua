--- A JSON encoder for the dashboard's answers: tables with a sequence
-- part become arrays (an empty table too), others objects (keys sorted);
-- lists and tuples arrays, maps objects; pids, refs, atoms and other
-- moonbeam values their text.
local mb = require "moonbeam"

local typeof = mb.typeof
local type, pairs, ipairs, tostring, tonumber, next = type, pairs, ipairs, tostring, tonumber, next
local sort = table.sort
local format, byte, concat, find = string.format, string.byte, table.concat, string.find
local math_type, huge = math.type, math.huge

local M = {}

local ESC = {['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
             ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t"}

local function str(s)
  -- Control characters, quotes, backslashes; "<" too, so that a value
  -- cannot close a script element.  Bytes that are not UTF-8 pass as
  -- they are: the browser shows them as replacement characters.
  if not find(s, '[%c"\\<]') then return '"' .. s .. '"' end
  return '"' .. s:gsub('[%c"\\<]', function(c)
    return ESC[c] or format("\\u%04x", byte(c))
  end) .. '"'
end

local encode
local STRUCTURE = {table = true, map = true, list = true, tuple = true}

local function array(t, out, depth)
  out[#out + 1] = "["
  for i = 1, #t do
    if i > 1 then out[#out + 1] = "," end
    encode(t[i], out, depth)
  end
  out[#out + 1] = "]"
end

-- Keys in order, so that one value always gives one text.
local function object(t, out, depth)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  sort(keys)
  out[#out + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then out[#out + 1] = "," end
    out[#out + 1] = str(k)
    out[#out + 1] = ":"
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
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
    if math_type(v) == "integer" then out[#out + 1] = tostring(v)
    elseif v ~= v or v == huge or v == -huge then out[#out + 1] = "null"
    else out[#out + 1] = format("%.14g", v) end
  elseif t == "string" then
    out[#out + 1] = str(v)
  elseif t == "table" and depth > 32 then
    out[#out + 1] = '"..."'
  elseif t == "table" and STRUCTURE[typeof(v)] then
    -- Lua tables, and the maps, lists and tuples another node's answer
    -- decodes to.
    local kind = typeof(v)
    if kind == "list" or kind == "tuple" or (kind == "table" and (v[1] ~= nil or next(v) == nil)) then
      array(v, out, depth + 1)
    else
      object(v, out, depth + 1)
    end
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
