-- A module spawned by name in spec/process_spec.lua.
local mb = require "moonbeam"
local M = {}
function M.shout(to, word) mb.send(to, word:upper() .. "!") end
return M
