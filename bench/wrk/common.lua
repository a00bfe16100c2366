-- Shared by the bench/wrk/*.lua scripts (loaded with dofile; see bench/rest.sh).
--   BENCH_TARGET=fluxbase|ref   which URL shapes to send
--   APIKEY                      Fluxbase's anon key; sent as apikey and Bearer token
--   BEARER                      another token for Authorization (a user's access token)
-- Both targets get the same headers, so wrk sends requests of the same size; the reference
-- ignores them.
fx = os.getenv("BENCH_TARGET") == "fluxbase"
local key = os.getenv("APIKEY") or ""
local bearer = os.getenv("BEARER") or key
headers = {
  ["apikey"] = key,
  ["Authorization"] = "Bearer " .. bearer,
  ["Accept"] = "application/json",
}

-- Each wrk thread has its own Lua state: give each its own random sequence.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
end
