-- The static handler: GET /health on both.
dofile(os.getenv("WRK_DIR") .. "/common.lua")
local req
function request()
  req = req or wrk.format("GET", "/health", headers)
  return req
end
