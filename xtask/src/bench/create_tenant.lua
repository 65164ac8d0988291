-- POST /v1/tenants with a slug no other request of the run uses (the first argument is a
-- run id, the thread id keeps threads apart).
local counter = 0
local prefix = ""

init = function(args)
  -- A headers table given to wrk.format replaces wrk.headers (and -H), so set it here.
  wrk.headers["Content-Type"] = "application/json"
  prefix = string.format("b%s-%d", args[1], thread_id or 0)
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"slug":"%s-%d","name":"Bench %d","plan":"standard","status":"active"}',
    prefix, counter, counter)
  return wrk.format("POST", "/v1/tenants", nil, body)
end
