-- The spec of the kv application. application.start("kv") finds it as the
-- file kv.app.lua on package.path; it is data, read with an empty
-- environment.
return {
  name = "kv",
  version = "1.0.0",
  description = "An in-memory key-value store",
  -- The callback module and the argument given to its start.
  mod = {"kv.application", {}},
  -- Applications to start before this one: none but moonbeam's own.
  applications = {},
  -- Read with application.get_env("kv", key, default).
  env = {initial = {language = "Lua"}},
}
