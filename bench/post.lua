-- wrk script for the collector benchmark: POSTs a realistic ~400-byte AR session
-- event with a changing session_id (bodies are built once in init, then cycled, so
-- the load generator spends no time formatting). BATCH=N (environment) sends JSON
-- arrays of N events to the batch endpoint instead. done() prints one machine-
-- readable line: "WRK_RESULT requests=... ok=... rps=... okrps=... p50=... p99=... (ms)"
-- (okrps counts only 2xx answers: a fast 503 must not look like throughput).
local batch = tonumber(os.getenv("BATCH") or "0")
local reqs = {}
local n = 0
local idx = 0

local function event(i)
    local sid = string.format("%08x-%04x-4%03x-a%03x-%012x", (i * 2654435761) % 4294967296,
        i % 65536, i % 4096, (i * 7) % 4096, i * 40503 % 281474976710656)
    return string.format('{"ar_content_id":%d,"session_id":"%s","duration_seconds":%d,' ..
        '"tracking_quality":"good","video_played":true,"device_type":"mobile",' ..
        '"browser":"Safari","os":"iOS","country":"DE","city":"Berlin",' ..
        '"user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) ' ..
        'AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"}', 1 + i % 50, sid, 5 + i % 120)
end

function init(args)
    local hdr = {["Content-Type"] = "application/json"}
    for i = 1, 2000 do
        local body
        if batch > 0 then
            local parts = {}
            for j = 1, batch do parts[j] = event(i * batch + j) end
            body = "[" .. table.concat(parts, ",") .. "]"
        else
            body = event(i)
        end
        reqs[i] = wrk.format("POST", nil, hdr, body)
    end
    n = #reqs
    idx = math.random(n)
end

function request()
    idx = idx % n + 1
    return reqs[idx]
end

function done(summary, latency, requests)
    local s = summary
    local e = s.errors
    local bad = e.status + e.connect + e.read + e.write + e.timeout
    io.write(string.format("WRK_RESULT requests=%d ok=%d non2xx=%d sockerr=%d rps=%.0f " ..
        "okrps=%.0f p50=%.3f p99=%.3f\n", s.requests, s.requests - e.status, e.status,
        e.connect + e.read + e.write + e.timeout, s.requests / (s.duration / 1e6),
        (s.requests - e.status) / (s.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
