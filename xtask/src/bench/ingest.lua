-- POST /v1/audit/events: a batch of events (second argument: how many) for a tenant picked
-- at random from the slugs in the file named by the first argument.
local slugs = {}
local batch = 100

init = function(args)
  for line in io.lines(args[1]) do
    slugs[#slugs + 1] = line
  end
  batch = tonumber(args[2]) or batch
  -- A headers table given to wrk.format replaces wrk.headers (and -H), so set it here.
  wrk.headers["Content-Type"] = "application/json"
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

request = function()
  local group = slugs[math.random(#slugs)]
  local events = {}
  for n = 1, batch do
    events[n] = string.format(
      '{"action":"doc.read","crud":"r","group":{"id":"%s"},"actor":{"id":"u-%d"},'
      .. '"target":{"id":"d-%d","type":"document"},"description":"bench event %d"}',
      group, math.random(1000), math.random(100000), n)
  end
  local body = "[" .. table.concat(events, ",") .. "]"
  return wrk.format("POST", "/v1/audit/events", nil, body)
end
