-- POST the body in the file named by the second argument to the path given as the first.
local path = "/"
local body = ""

init = function(args)
  path = args[1]
  local file = assert(io.open(args[2], "rb"))
  body = file:read("*a")
  file:close()
  -- A headers table given to wrk.format replaces wrk.headers (and -H), so set it here.
  wrk.headers["Content-Type"] = "application/json"
end

request = function()
  return wrk.format("POST", path, nil, body)
end
