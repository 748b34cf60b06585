local mb = require "moonbeam"

describe("a process", function()
  it("runs a function and returns its results to run()", function()
    assert.same({5, "x"}, {mb.run(function(a, b) return a + b, "x" end, 2, 3)})
  end)
end)
