--- The options of TLS distribution, as Erlang's ssl_dist_optfile gives
-- them: a file holding one term,
--
--   [{server, [{certfile, "node.pem"}, {keyfile, "node.key"},
--              {cacertfile, "ca.pem"}, {verify, verify_peer},
--              {fail_if_no_peer_cert, true}]},
--    {client, [{certfile, "node.pem"}, {keyfile, "node.key"},
--              {cacertfile, "ca.pem"}, {verify, verify_peer}]}].
--
-- read as the table start_distribution takes as ssl_dist_opts:
-- {server = {certfile = "node.pem", verify = "verify_peer", ...},
--  client = {...}}.
local mb = require "moonbeam"
local erl_term = require "moonbeam.erl_term"

local M = {}

-- What each option may be: a file name, verify's two atoms, a boolean.
local kinds = {
  certfile = "file", keyfile = "file", cacertfile = "file",
  verify = "verify", fail_if_no_peer_cert = "boolean",
}

local function text_of(v)
  if type(v) == "string" then return v end
  if mb.typeof(v) == "atom" then return tostring(v) end
  return nil
end

-- One option's value in Lua's terms, or nil and why not.
local function option(side, key, v)
  local kind = kinds[key]
  if kind == nil then
    return nil, ("%s option %s is not supported (supported: certfile, keyfile, "
      .. "cacertfile, verify, fail_if_no_peer_cert)"):format(side, key)
  end
  if key == "fail_if_no_peer_cert" and side ~= "server" then
    return nil, "fail_if_no_peer_cert is a server option"
  end
  local s = text_of(v)
  if kind == "file" and type(v) == "string" and v ~= "" then return v end
  if kind == "verify" and (s == "verify_peer" or s == "verify_none") then return s end
  if kind == "boolean" then
    if v == true or s == "true" then return true end
    if v == false or s == "false" then return false end
  end
  return nil, ("%s option %s: bad value %s"):format(side, key, tostring(v))
end

--- Check options given as a table and copy them, each side's keys
-- checked: {server = {...}, client = {...}}.
-- @return the options, or nil and why not
function M.options(t)
  if type(t) ~= "table" then return nil, "ssl_dist_opts must be a table" end
  local out = {}
  for side, opts in pairs(t) do
    if side ~= "server" and side ~= "client" then
      return nil, ("unknown section %s (server or client)"):format(tostring(side))
    end
    if type(opts) ~= "table" then
      return nil, side .. " options must be a table"
    end
    out[side] = {}
    for k, v in pairs(opts) do
      local val, err = option(side, tostring(k), v)
      if val == nil then return nil, err end
      out[side][tostring(k)] = val
    end
  end
  return out
end

-- A proplist of {Key, Value} tuples (or bare atoms, true) as a table.
local function proplist(list, what)
  if type(list) ~= "table" or mb.typeof(list) == "tuple" then
    return nil, what .. " must be a list"
  end
  local t = {}
  for _, item in ipairs(list) do
    if mb.typeof(item) == "atom" then
      t[tostring(item)] = true
    elseif mb.typeof(item) == "tuple" and #item == 2 and mb.typeof(item[1]) == "atom" then
      t[tostring(item[1])] = item[2]
    else
      return nil, what .. ": each element must be {Key, Value}"
    end
  end
  return t
end

--- Read an ssl_dist_optfile.
-- @param path the file
-- @return the options (as M.options gives them), or nil and why not
function M.read_optfile(path)
  local terms, err = erl_term.consult(path)
  if not terms then return nil, err end
  if #terms ~= 1 then
    return nil, ("%s: one term expected, a list [{server, [...]}, {client, [...]}]")
      :format(path)
  end
  local top, perr = proplist(terms[1], path)
  if not top then return nil, perr end
  local sides = {}
  for side, list in pairs(top) do
    local t, e = proplist(list, ("%s: %s"):format(path, side))
    if not t then return nil, e end
    sides[side] = t
  end
  local opts, oerr = M.options(sides)
  if not opts then return nil, path .. ": " .. oerr end
  return opts
end

return M
