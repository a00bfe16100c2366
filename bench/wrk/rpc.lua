-- recent_items(cat): a STABLE SQL function returning 20 items.
dofile(os.getenv("WRK_DIR") .. "/common.lua")
function request()
  local c = math.random(0, 99)
  if fx then
    return wrk.format("GET", "/rest/v1/rpc/recent_items?cat=" .. c, headers)
  end
  return wrk.format("GET", "/rpc/recent_items?cat=" .. c, headers)
end
