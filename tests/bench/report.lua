-- wrk reporter: one machine-readable line after the run. Defining only
-- done() keeps wrk on its fast path (no Lua per request).
done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH_JSON {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, " ..
      "\"connect\": %d, \"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d, " ..
      "\"p50_us\": %.1f, \"p99_us\": %.1f}\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99)))
end
