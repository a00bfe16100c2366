-- An author (10,000) with its 10 books embedded.
dofile(os.getenv("WRK_DIR") .. "/common.lua")
function request()
  local n = math.random(1, 10000)
  if fx then
    return wrk.format("GET", "/rest/v1/authors?id=eq." .. n .. "&select=*,books(*)", headers)
  end
  return wrk.format("GET", "/authors/" .. n, headers)
end
