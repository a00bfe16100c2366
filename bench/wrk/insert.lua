-- One event inserted per request, no representation returned.
dofile(os.getenv("WRK_DIR") .. "/common.lua")
headers["Content-Type"] = "application/json"
headers["Prefer"] = "return=minimal"
function request()
  local n = math.random(1, 1000000)
  local body = '{"kind":"bench","payload":{"n":' .. n .. ',"tags":["a","b"],"ok":true}}'
  if fx then
    return wrk.format("POST", "/rest/v1/events", headers, body)
  end
  return wrk.format("POST", "/events", headers, body)
end
