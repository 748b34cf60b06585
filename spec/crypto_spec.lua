-- moonbeam.crypto: the hashes and the cipher the gossip strategy needs,
-- checked against published test vectors (FIPS 180-2, NIST SP 800-38A).
local mb = require "moonbeam"

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
local function unhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end

describe("moonbeam.crypto", function()
  setup(function() mb.start{} end)

  it("hashes with SHA-256", function()
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      mb.run(function(h) return h(require("moonbeam.crypto").hash("sha256", "abc")) end, hex))
  end)

  it("encrypts and decrypts AES-256-CBC without padding", function()
    local key = unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    local iv = unhex("000102030405060708090a0b0c0d0e0f")
    local plain = unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
    local r = mb.run(function(key, iv, plain)
      local c = require "moonbeam.crypto"
      local ct = c.aes_256_cbc(key, iv, plain, true)
      return {ct, c.aes_256_cbc(key, iv, ct, false), select(2, c.aes_256_cbc(key, iv, "short", false))}
    end, key, iv, plain)
    assert.equal("f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d", hex(r[1]))
    assert.equal(plain, r[2])
    assert.equal("the data are not whole 16-byte blocks", r[3])
  end)

  it("gives random bytes, and raises on a wrong key size", function()
    local n, ok = mb.run(function()
      local c = require "moonbeam.crypto"
      return #c.strong_rand_bytes(16), pcall(c.aes_256_cbc, "short", ("\0"):rep(16), "", true)
    end)
    assert.equal(16, n)
    assert.is_false(ok)
  end)
end)
