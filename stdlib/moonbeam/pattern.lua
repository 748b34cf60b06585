--- Patterns for messages, as Erlang and Elixir write them.
--
-- A pattern is a string, parsed by an LPeg grammar into a tree and compiled
-- into a matcher (plain Lua closures, so matching needs no LPeg). Compiled
-- patterns are cached, so a pattern string is compiled once per process.
--
--   syntax                  matches
--   42  -1.5  "text"        that number or string (Lua equality)
--   ok  'EXIT'  :ok         the atom ok / EXIT / ok
--   true  false  nil        that Lua value
--   From  _Rest             anything, bound to the variable; a variable that
--                           appears twice must match equal values
--   _                       anything, bound to nothing
--   ^Ref                    the value given for Ref in the pins table
--   {a, B, _}               a tuple of exactly three elements (or a plain Lua
--                           array of exactly three)
--   [H | T]  [A, B]         a list (or plain array): T binds the rest, as a list
--   #{k => P}  %{"k" => P}  a table with key k whose value matches P
--   {name = N, age = A}     a table with string fields name and age
--
-- The same trees can be built from Lua (the table form, see `var`, `any`,
-- `tuple`, `list`, `map`, `pin`), and a plain function (value, pins) ->
-- bindings-or-nil can stand anywhere a pattern can.
local lpeg = nil -- loaded on the first string pattern
local mb = require "moonbeam"

local type, tostring, error, select = type, tostring, error, select
local pairs, ipairs, rawlen, getmetatable = pairs, ipairs, rawlen, getmetatable
local setmetatable, tonumber, concat = setmetatable, tonumber, table.concat

local M = {}

-- Node constructors: the parser and the table form both build these.
local NODE = {}
local function node(kind, t)
  t.kind = kind
  return setmetatable(t, NODE)
end

--- A variable that binds what it matches.
-- @param name the name under which the value is bound
function M.var(name) return node("var", {name = name}) end

--- Matches anything and binds nothing.
M.any = node("any", {})

--- Matches a tuple (or plain array) of exactly these elements.
function M.tuple(...) return node("tuple", {n = select("#", ...), ...}) end

--- Matches a list (or plain array) of these elements.
-- @param items list of element patterns
-- @param tail optional pattern for the rest of the list
function M.list(items, tail) return node("list", {items = items, tail = tail}) end

--- Matches a table having each key of `fields` with a matching value.
function M.map(fields) return node("map", {fields = fields}) end

--- Matches the value given for `name` in the pins table.
function M.pin(name) return node("pin", {name = name}) end

-- ---------------------------------------------------------------------------
-- The grammar

local grammar -- built on first use
local farthest, expected

local function build_grammar()
  lpeg = require "lpeg"
  local P, R, S, C, Ct, Cc, Cp, Cmt, V =
    lpeg.P, lpeg.R, lpeg.S, lpeg.C, lpeg.Ct, lpeg.Cc, lpeg.Cp, lpeg.Cmt, lpeg.V

  -- Every token notes what it expected at the position it was tried at, so
  -- that a failed parse can say "expected X at column N".
  local function T(name, patt)
    return Cmt(Cp(), function(_, pos)
      if pos > farthest then
        farthest, expected = pos, {name}
      elseif pos == farthest then
        expected[#expected + 1] = name
      end
      return true
    end) * patt
  end

  local sp = S(" \t\r\n") ^ 0
  local namechar = R("az", "AZ", "09") + P"_"
  local lower = R"az"
  local upper = R"AZ"
  local digits = R"09" ^ 1

  local number = T("a number", C(P"-" ^ -1 * (P"0x" * R("09", "af", "AF") ^ 1
    + digits * (P"." * digits) ^ -1 * (S"eE" * S"+-" ^ -1 * digits) ^ -1)))
    / function(s) return node("lit", {value = tonumber(s)}) end

  local escapes = {n = "\n", t = "\t", r = "\r", ['"'] = '"', ["\\"] = "\\",
                   ["'"] = "'"}
  local escape = P"\\" * (C(S"ntr\"\\'") / escapes
    + C(R"09" * R"09" ^ -2) / function(d) return string.char(tonumber(d)) end)
  local function quoted(q)
    return P(q) * Ct((escape + C((1 - S(q .. "\\")) ^ 1)) ^ 0) / concat * P(q)
  end

  local string_lit = T("a string", quoted('"'))
    / function(s) return node("lit", {value = s}) end
  local function atom(s) return node("lit", {value = mb.atom(s)}) end
  local keyword = {["true"] = true, ["false"] = false}
  local bare = C(lower * namechar ^ 0) / function(s)
    if s == "nil" then return node("lit", {isnil = true}) end
    if keyword[s] ~= nil then return node("lit", {value = keyword[s]}) end
    return atom(s)
  end
  local atom_lit = T("an atom", P":" * (C(namechar ^ 1) + quoted('"')) / atom
    + quoted("'") / atom + bare)
  local literal = number + string_lit + atom_lit

  local var = T("a variable", C((upper + P"_" * namechar) * namechar ^ 0))
    / function(s) return node("var", {name = s}) end
  local any = T("_", P"_" * -namechar) * Cc(M.any)
  local pin = T("^name", P"^" * C((upper + lower + P"_") * namechar ^ 0))
    / function(s) return node("pin", {name = s}) end

  local function sym(s) return T("'" .. s .. "'", P(s)) end
  local function list_of(item)
    return Ct((item * (sp * sym"," * sp * item) ^ 0) ^ -1)
  end

  local field = Ct(C((lower + upper + P"_") * namechar ^ 0) * sp * sym"=" * sp
    * V"term")
  local pair = Ct(literal * sp * sym"=>" * sp * V"term")
  local function to_map(pairs_)
    local fields = {}
    for _, kv in ipairs(pairs_) do
      local k = kv[1]
      if type(k) == "table" then
        if k.isnil then error("nil cannot be a map key", 0) end
        k = k.value
      end
      fields[k] = kv[2]
    end
    return M.map(fields)
  end

  grammar = P{
    "pattern",
    pattern = sp * V"term" * sp * T("the end of the pattern", -1),
    term = V"fields" + V"tuple" + V"list" + V"map" + pin + any + var
      + literal,
    tuple = sym"{" * sp * list_of(V"term") * sp * sym"}"
      / function(items) return node("tuple", {n = #items, table.unpack(items)}) end,
    fields = P"{" * sp * Ct(field * (sp * P"," * sp * field) ^ 0) * sp * P"}"
      / to_map,
    list = sym"[" * sp * list_of(V"term")
      * (sp * sym"|" * sp * V"term" + Cc(nil)) * sp * sym"]"
      / function(items, tail) return M.list(items, tail) end,
    map = T("a map", S"#%" * P"{") * sp * Ct((pair * (sp * sym"," * sp * pair) ^ 0) ^ -1)
      * sp * sym"}" / to_map,
  }
end

-- Tokens that can start a term: "expected any of these" reads "expected a
-- pattern".
local TERM_START = {["'{'"] = true, ["'['"] = true, ["a map"] = true,
  ["^name"] = true, ["_"] = true, ["a variable"] = true, ["a number"] = true,
  ["a string"] = true, ["an atom"] = true}

local function parse(src)
  if not grammar then build_grammar() end
  farthest, expected = 0, {}
  local ok, tree = pcall(lpeg.match, grammar, src)
  if not ok then error(("pattern error in %q: %s"):format(src, tree), 0) end
  if tree == nil then
    local seen, names, term = {}, {}, false
    for _, e in ipairs(expected) do
      if TERM_START[e] then
        term = true
      elseif not seen[e] then
        seen[e] = true
        names[#names + 1] = e
      end
    end
    if term then table.insert(names, 1, "a pattern") end
    local near = src:sub(farthest, farthest + 9)
    error(("pattern error at column %d of %q: expected %s%s"):format(
      farthest, src, concat(names, " or "),
      near == "" and " at the end" or (" before '" .. near .. "'")), 0)
  end
  return tree
end

-- ---------------------------------------------------------------------------
-- The compiler: a tree becomes a function (value, bindings, pins) -> boolean

local TUPLE = getmetatable(mb.tuple())
local LIST = getmetatable(mb.list())

local function equal(a, b, seen)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  if getmetatable(a) ~= getmetatable(b) then return false end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do
    if not equal(v, b[k], seen) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end
M.equal = equal

-- The length of a sequence: tuples and lists carry it in n; a plain table
-- has its border.
local function seq_len(v, mt)
  local n = mt ~= nil and v.n
  if type(n) == "number" then return n end
  return rawlen(v)
end

local compile

local function compile_seq(items, n)
  local ms = {}
  for i = 1, n do ms[i] = compile(items[i]) end
  return ms
end

function compile(t)
  if getmetatable(t) ~= NODE then
    if type(t) == "function" then
      return function(v, b, pins)
        local r = t(v, pins)
        if not r then return false end
        if type(r) == "table" then for k, x in pairs(r) do b[k] = x end end
        return true
      end
    end
    -- A plain Lua value in the table form matches itself.
    return function(v) return equal(v, t) end
  end
  local kind = t.kind
  if kind == "any" then
    return function() return true end
  elseif kind == "lit" then
    if t.isnil then return function(v) return v == nil end end
    local x = t.value
    return function(v) return v == x end
  elseif kind == "var" then
    -- A variable seen a second time must match an equal value (a variable
    -- bound to nil counts as unbound).
    local name = t.name
    return function(v, b)
      local old = b[name]
      if old == nil then b[name] = v return true end
      return equal(old, v)
    end
  elseif kind == "pin" then
    local name = t.name
    return function(v, _, pins)
      local x = pins and pins[name]
      if x == nil then error("pattern pins ^" .. name .. " but no value was given for it", 0) end
      return equal(v, x)
    end
  elseif kind == "tuple" then
    local n = t.n
    local ms = compile_seq(t, n)
    return function(v, b, pins)
      if type(v) ~= "table" then return false end
      local mt = getmetatable(v)
      if mt ~= TUPLE and (mt ~= nil or rawlen(v) ~= n) then return false end
      if mt == TUPLE and seq_len(v, mt) ~= n then return false end
      for i = 1, n do
        if not ms[i](v[i], b, pins) then return false end
      end
      return true
    end
  elseif kind == "list" then
    local k = #t.items
    local ms = compile_seq(t.items, k)
    local tail = t.tail and compile(t.tail)
    return function(v, b, pins)
      if type(v) ~= "table" then return false end
      local mt = getmetatable(v)
      if mt ~= LIST and mt ~= nil then return false end
      local len = seq_len(v, mt)
      if len < k or (not tail and len ~= k) then return false end
      for i = 1, k do
        if not ms[i](v[i], b, pins) then return false end
      end
      if tail then
        local rest = {n = len - k}
        for i = k + 1, len do rest[i - k] = v[i] end
        return tail(setmetatable(rest, LIST), b, pins)
      end
      return true
    end
  elseif kind == "map" then
    local keys, ms = {}, {}
    for key, p in pairs(t.fields) do
      keys[#keys + 1] = key
      ms[#ms + 1] = compile(p)
    end
    return function(v, b, pins)
      if type(v) ~= "table" then return false end
      local mt = getmetatable(v)
      if mt == TUPLE or mt == LIST then return false end
      for i = 1, #keys do
        local x = v[keys[i]]
        if x == nil or not ms[i](x, b, pins) then return false end
      end
      return true
    end
  end
  error("unknown pattern node " .. tostring(kind))
end

-- ---------------------------------------------------------------------------
-- Matching

local cache = setmetatable({}, {__mode = "k"})
local strings = {}
local tags = setmetatable({}, {__mode = "k"}) -- matcher -> its tag, if any

-- The literal first element every value this tree matches must have, if
-- there is one: receive can turn other messages away in C.
local function tag_of(tree)
  if getmetatable(tree) == NODE and tree.kind == "tuple" and tree.n > 0 then
    local first = tree[1]
    if getmetatable(first) == NODE and first.kind == "lit" and not first.isnil then
      return first.value
    end
  end
  return nil
end

--- Compile a pattern (string, table form or function) into a matcher.
-- @return a function (value, pins) -> bindings table, or nil
function M.compile(p)
  local m = (type(p) == "string" and strings[p]) or cache[p]
  if m then return m end
  local tree = type(p) == "string" and parse(p) or p
  local f = compile(tree)
  -- Bindings are written to a scratch table, copied out on success only,
  -- so a failed attempt allocates nothing.
  local scratch = {}
  m = function(v, pins)
    -- Cleared first: a match that raised may have left bindings behind.
    for k in pairs(scratch) do scratch[k] = nil end
    if not f(v, scratch, pins) then return nil end
    local b = {}
    for k, x in pairs(scratch) do b[k] = x end
    return b
  end
  local tag = tag_of(tree)
  if tag ~= nil then tags[m] = tag end
  if type(p) == "string" then strings[p] = m else cache[p] = m end
  return m
end

--- The literal first element of every value a compiled matcher accepts,
-- or nil if it has none (see moonbeam.receive's prefilter).
function M.tag(matcher) return tags[matcher] end

--- Match a value against a pattern.
-- @param p pattern (string, table form or function)
-- @param value the value to match
-- @param pins optional table of values for ^Name
-- @return the bindings table ({Var = value}), or nil if it does not match
function M.match(p, value, pins)
  return M.compile(p)(value, pins)
end

return M
