-- moonbeam is released under the MIT licence: the text at the root, and
-- the rockspec says so, so that the rock can be published.
local function read(path)
  local f = assert(io.open(path, "r"), path .. " is missing")
  local text = f:read("a")
  f:close()
  return text
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("the licence", function()
  it("is the MIT licence, in LICENSE at the root", function()
    local text = read("LICENSE")
    assert.truthy(text:find("MIT License", 1, true))
    assert.truthy(text:find("Copyright (c) 2026 the moonbeam authors", 1, true))
    assert.truthy(text:find("Permission is hereby granted, free of charge", 1, true))
  end)

  it("is named in the rockspec", function()
    local env = {}
    assert(load(read("rockspec/moonbeam-0.1.0-1.rockspec"), "rockspec", "t", env))()
    assert.equal("MIT", env.description.license)
  end)
end)
