-- Prepended to every benchmark script: numbers wrk's threads 1, 2, … as `thread_id`.
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end
