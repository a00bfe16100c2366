-- Password sign-in (grant_type=password) for one user, as auth-js sends it.
headers = {}
headers["apikey"] = os.getenv("ANON_KEY")
headers["Content-Type"] = "application/json"
local body = '{"email":"bench@example.test","password":"correct horse battery"}'
function request()
  return wrk.format("POST", "/auth/v1/token?grant_type=password", headers, body)
end
