-- One row by id (items: 100,000 rows).
dofile(os.getenv("WRK_DIR") .. "/common.lua")
function request()
  local n = math.random(1, 100000)
  if fx then
    return wrk.format("GET", "/rest/v1/items?id=eq." .. n, headers)
  end
  return wrk.format("GET", "/items/" .. n, headers)
end
