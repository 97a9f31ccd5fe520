-- wrk script for bench/reporter.sh: GET BENCH_PATH (a format with %d for the
-- company id, rotating over BENCH_COMPANIES) with BENCH_KEY, each connection
-- pausing BENCH_DELAY_MS between requests so that -c N connections offer at most
-- N * 1000 / BENCH_DELAY_MS requests per second (wrk has no rate option).
local key = os.getenv("BENCH_KEY")
local tmpl = os.getenv("BENCH_PATH")
local ncomp = tonumber(os.getenv("BENCH_COMPANIES") or "50")
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "20")
local i = math.random(0, 1000)
local non2xx = 0

function request()
    i = i + 1
    return wrk.format("GET", string.format(tmpl, (i % ncomp) + 1),
                      {["Authorization"] = "Bearer " .. key})
end

function delay()
    return pause
end

function response(status)
    if status ~= 200 then
        non2xx = non2xx + 1
    end
end
