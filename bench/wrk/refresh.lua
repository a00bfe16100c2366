-- Refresh-token grants spread over many sessions (REFRESH_TOKENS, comma-separated). The bench
-- runs with a long reuse interval, so a token used again is a valid concurrent refresh.
headers = {}
headers["apikey"] = os.getenv("ANON_KEY")
headers["Content-Type"] = "application/json"
local tokens = {}
for t in string.gmatch(os.getenv("REFRESH_TOKENS"), "[^,]+") do
  table.insert(tokens, t)
end
function request()
  local t = tokens[math.random(1, #tokens)]
  return wrk.format("POST", "/auth/v1/token?grant_type=refresh_token", headers, '{"refresh_token":"' .. t .. '"}')
end
