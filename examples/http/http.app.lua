-- The http application: an HTTP/1.1 server in front of the kv store.
--
--   moonbeam start examples/http/http.app.lua [--env http.port=N]
--
--   GET /          a greeting
--   GET /kv/KEY    the value stored under KEY (404 if none)
--   PUT /kv/KEY    store the request body under KEY (204)
--
-- The kv application (examples/kv, linked here as kv/ and kv.app.lua)
-- starts first.  Like every .app.lua this file is data.
return {
  name = "http",
  version = "1.0.0",
  description = "HTTP front end of the kv store",
  mod = {"http.application", {}},
  applications = {"kv"},
  -- Read with application.get_env("http", key); set with --env
  -- http.port=N or a config file's env = {http = {port = N}}.
  env = {port = 8080, ip = "127.0.0.1"},
}
