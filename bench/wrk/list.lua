-- 20 rows of a category (0..99), newest first.
dofile(os.getenv("WRK_DIR") .. "/common.lua")
function request()
  local c = math.random(0, 99)
  if fx then
    return wrk.format("GET", "/rest/v1/items?category=eq." .. c .. "&order=created_at.desc&limit=20", headers)
  end
  return wrk.format("GET", "/items?category=" .. c, headers)
end
