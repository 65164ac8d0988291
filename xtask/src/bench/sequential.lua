-- GET every path of the file named by the first argument in turn (threads interleaved),
-- round and round: the warm-up pass that fills the server's caches.
local paths = {}
local next_index = 1
local stride = 1

init = function(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  stride = tonumber(args[2]) or 1
  next_index = thread_id or 1
end

request = function()
  local path = paths[next_index]
  next_index = next_index + stride
  if next_index > #paths then
    next_index = next_index - #paths
  end
  return wrk.format("GET", path)
end
