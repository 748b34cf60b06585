--- Erlang terms as text, read as file:consult reads them: a file of
-- terms, each ended by a full stop, with % comments.  For configuration
-- files in Erlang's format (ssl_dist_optfile).
--
--   local erl_term = require "moonbeam.erl_term"
--   local terms = assert(erl_term.consult("ssl_dist.conf"))
--
-- What each term becomes: an atom, mb.atom (true and false stay atoms);
-- an integer or a float, a number; a tuple, mb.tuple; a list, a Lua
-- sequence; a "string" or a <<"binary">>, a Lua string.  Not read: pids,
-- refs, funs, maps, records, $c characters, Base#digits, bit syntax
-- beyond one quoted string: each is an error that says where.
local mb = require "moonbeam"

local M = {}

local escapes = {n = "\n", t = "\t", r = "\r", s = " ", e = "\27", b = "\b",
  f = "\f", v = "\v", d = "\127", ["\\"] = "\\", ["'"] = "'", ['"'] = '"'}

-- A reader over text: pos moves as terms are read.
local function reader(text, name)
  local R = {pos = 1}

  function R.fail(what)
    local line = select(2, text:sub(1, R.pos - 1):gsub("\n", "")) + 1
    error(("%s:%d: %s"):format(name, line, what), 0)
  end

  -- Skip white space and comments; the next character.
  function R.peek()
    while true do
      local s, e = text:find("^%s+", R.pos)
      if s then R.pos = e + 1 end
      if text:sub(R.pos, R.pos) ~= "%" then break end
      R.pos = (text:find("\n", R.pos, true) or #text) + 1
    end
    return text:sub(R.pos, R.pos)
  end

  function R.expect(c)
    if R.peek() ~= c then
      R.fail(("'%s' expected, got %s"):format(c,
        R.pos > #text and "the end" or ("'" .. text:sub(R.pos, R.pos) .. "'")))
    end
    R.pos = R.pos + 1
  end

  -- The body of a quoted atom or string, escapes undone.
  function R.quoted(q)
    local out, i = {}, R.pos + 1
    while true do
      local c = text:sub(i, i)
      if c == "" then R.fail("unterminated " .. (q == '"' and "string" or "atom")) end
      if c == q then break end
      if c == "\\" then
        local n = text:sub(i + 1, i + 1)
        local oct = text:match("^[0-7][0-7]?[0-7]?", i + 1)
        if oct then
          out[#out + 1] = utf8.char(tonumber(oct, 8))
          i = i + 1 + #oct
        elseif escapes[n] then
          out[#out + 1] = escapes[n]
          i = i + 2
        else
          R.fail("unknown escape \\" .. n)
        end
      else
        out[#out + 1] = c
        i = i + 1
      end
    end
    R.pos = i + 1
    return table.concat(out)
  end

  -- Terms separated by commas until `close`.
  function R.sequence(close)
    local items = {}
    if R.peek() == close then
      R.pos = R.pos + 1
      return items
    end
    while true do
      items[#items + 1] = R.term()
      local c = R.peek()
      if c == close then
        R.pos = R.pos + 1
        return items
      end
      if c == "|" then R.fail("improper lists are not read") end
      R.expect(",")
    end
  end

  function R.term()
    local c = R.peek()
    if c == "{" then
      R.pos = R.pos + 1
      return mb.tuple(table.unpack(R.sequence("}")))
    elseif c == "[" then
      R.pos = R.pos + 1
      return R.sequence("]")
    elseif c == '"' then
      local parts = {R.quoted('"')}
      while R.peek() == '"' do parts[#parts + 1] = R.quoted('"') end -- "a" "b"
      return table.concat(parts)
    elseif c == "'" then
      return mb.atom(R.quoted("'"))
    elseif text:find("^<<", R.pos) then
      R.pos = R.pos + 2
      if R.peek() == ">" then
        R.expect(">") R.expect(">")
        return ""
      end
      if R.peek() ~= '"' then R.fail("only <<\"text\">> binaries are read") end
      local s = R.quoted('"')
      R.expect(">") R.expect(">")
      return s
    end
    local num = text:match("^%-?%d[%d_]*%.%d+[eE][%-+]?%d+", R.pos)
      or text:match("^%-?%d[%d_]*%.%d+", R.pos) or text:match("^%-?%d[%d_]*", R.pos)
    if num then
      R.pos = R.pos + #num
      if text:find("^[#$]", R.pos) then R.fail("Base#digits numbers are not read") end
      local v = num:gsub("_", "")
      return math.tointeger(tonumber(v)) or tonumber(v)
    end
    local atom = text:match("^[a-z][%w_@]*", R.pos)
    if atom then
      R.pos = R.pos + #atom
      return mb.atom(atom)
    end
    if c == "" then R.fail("a term expected, got the end") end
    R.fail(("unexpected '%s'"):format(c))
  end

  return R
end

--- Read the terms of `text`, each ended by a full stop.
-- @param text the terms
-- @param name the name errors give as the source (default "terms")
-- @return a list of the terms, or nil and a message with the line
function M.parse(text, name)
  local R = reader(text, name or "terms")
  local ok, r = pcall(function()
    local terms = {}
    while R.peek() ~= "" do
      terms[#terms + 1] = R.term()
      if R.peek() ~= "." then R.fail("'.' expected after a term") end
      R.pos = R.pos + 1
    end
    return terms
  end)
  if ok then return r end
  return nil, r
end

--- Read a file of terms, as file:consult.
-- @param path the file
-- @return a list of the terms, or nil and a message
function M.consult(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  return M.parse(text, path)
end

return M
