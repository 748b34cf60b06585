-- Every ```lua block in docs/*.md is a complete script: each one is run
-- with the launcher and must exit with status 0.  Blocks that are not meant
-- to run are fenced ```lua-norun and skipped.
--
-- The launcher is build/bin/moonbeam, or bin/moonbeam in $MB_BUILD_DIR (set
-- by .ci/specs to the build under test).
local lfs = require "lfs"

local launcher = (os.getenv("MB_BUILD_DIR") or "build") .. "/bin/moonbeam"

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Run the launcher on `script`, bounded in time; return the exit status and
-- stdout and stderr together.
local function run(script)
  local cmd = string.format("timeout 30 %s %s 2>&1", shell_quote(launcher),
                            shell_quote(script))
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local _, _, status = p:close()
  return status, out
end

-- The ```lua blocks of a Markdown file, each with the heading it is under
-- and its line number.  Other fenced blocks are skipped whole, so that a
-- "# comment" in a shell block is not taken for a heading.
local function lua_blocks(path)
  local blocks, heading, fence, block = {}, "(top)", nil, nil
  local lineno = 0
  for line in io.lines(path) do
    lineno = lineno + 1
    if fence == nil then
      local ticks, info = line:match("^(```+)%s*(%S*)")
      if ticks then
        fence = ticks
        if info == "lua" then
          block = {heading = heading, line = lineno, lines = {}}
        end
      else
        local title = line:match("^#+%s+(.-)%s*$")
        if title then heading = title end
      end
    elseif line:match("^" .. fence .. "%s*$") then
      if block then
        block.source = table.concat(block.lines, "\n") .. "\n"
        blocks[#blocks + 1] = block
      end
      fence, block = nil, nil
    elseif block then
      block.lines[#block.lines + 1] = line
    end
  end
  assert(fence == nil, path .. ": unclosed code block")
  return blocks
end

local function doc_files()
  local files = {}
  for name in lfs.dir("docs") do
    if name:match("%.md$") then files[#files + 1] = "docs/" .. name end
  end
  table.sort(files)
  files[#files + 1] = "README.md" -- its tour is run too
  return files
end

-- Every example leaves no process of the node behind.
require("spec.leak_helper").no_process_left_behind(before_each, after_each)

describe("the docs", function()
  it("have lua blocks to run, in docs/processes.md at least", function()
    assert.is_true(#lua_blocks("docs/processes.md") > 0)
  end)
end)

for _, file in ipairs(doc_files()) do
  describe(file, function()
    local blocks = lua_blocks(file)
    -- Number the blocks of a heading that has several, so that every test
    -- has a name of its own.
    local count, seen = {}, {}
    for _, block in ipairs(blocks) do
      count[block.heading] = (count[block.heading] or 0) + 1
    end
    for _, block in ipairs(blocks) do
      seen[block.heading] = (seen[block.heading] or 0) + 1
      local name = string.format('the example under "%s"%s runs and exits 0',
        block.heading, count[block.heading] > 1
          and string.format(" (%d of %d)", seen[block.heading], count[block.heading])
          or "")
      it(name, function()
        local path = os.tmpname()
        finally(function() os.remove(path) end)
        -- Blank lines first, so that line numbers in an error are the
        -- line numbers in the doc.
        local f = assert(io.open(path, "w"))
        f:write(string.rep("\n", block.line), block.source)
        f:close()
        local status, out = run(path)
        local what = status == 124 and "did not finish within 30 s"
                     or "exited with status " .. tostring(status)
        assert(status == 0, string.format("the block at %s:%d %s\n%s",
                                          file, block.line + 1, what, out))
      end)
    end
  end)
end
