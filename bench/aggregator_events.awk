# Generates stream entries for the aggregator's benchmark and tests: Redis
# protocol (RESP) XADD commands for `redis-cli --pipe`, in the collector's exact
# stream format (fields v = "1", e = event_to_stream's JSON, keys in its order).
# Deterministic: event i always gets the same ids and fields for the same seed.
# ASCII only, so awk's length() is the byte length (run with LC_ALL=C).
#
# awk -v n=500000 -v stream=arv:events [options] -f aggregator_events.awk | redis-cli --pipe
#   n              events (required)
#   stream         stream name (required)
#   shards         streams: stream:0 .. stream:(shards - 1), each event in the
#                  one the collector routes its content to on one Redis node
#                  (default 1: just `stream`)
#   first          index of the first event (default 0): split a load in parts
#   seed           8 hex digits in every event_id (default 0000a000): runs apart
#   contents       content ids 1..contents (default 1000); content c has unique id uid-c
#   content_base   added to every content id (default 0): contents apart from other loads'
#   uid_every      every k-th event names its content by unique id only (0: never)
#   unknown_every  every k-th event names content 999999999, never registered (0: never)
#   dup_every      every k-th entry repeats the previous event exactly, a client retry (0: never)
#   invalid_every  every k-th entry has v = "2", an invalid payload (0: never)
#   sessions       distinct session ids (default n / 2)
#   base_ms        received_at of event 0, ms since the epoch (required)
#   spread_ms      received_at = base_ms - (i * 7919000) mod spread_ms (default 0)
#   distinct_cities 1: every event names a city of its own (128 bytes), as a
#                  client sending arbitrary values would
#   max_fields     1: every event's breakdown fields and user agent at their
#                  largest (event.h) and of its own, as a client sending
#                  arbitrary values would (the worst case for memory)
#   random_ids     1: event ids in scattered order, as clients' random (v4) UUIDs
#                  land in an index; by default they ascend with i, as the
#                  collector's time-ordered (v7) ones do
#   ids_file       if set, every distinct accepted event_id is written there
#   stats_file     if set, "unknown N" and "invalid N" (entries of each) are written there
function two(x) { return (x < 10 ? "0" : "") x }
function three(x) { return (x < 10 ? "00" : (x < 100 ? "0" : "")) x }
# ms since the epoch -> "YYYY-MM-DDTHH:MM:SS.mmmZ" (civil-from-days, proleptic Gregorian)
function rfc3339(ms,    s, days, sod, z, era, doe, yoe, y, doy, mp, d, m) {
    s = int(ms / 1000); days = int(s / 86400); sod = s - days * 86400
    z = days + 719468; era = int(z / 146097); doe = z - era * 146097
    yoe = int((doe - int(doe / 1460) + int(doe / 36524) - int(doe / 146096)) / 365)
    y = yoe + era * 400; doy = doe - (365 * yoe + int(yoe / 4) - int(yoe / 100))
    mp = int((5 * doy + 2) / 153); d = doy - int((153 * mp + 2) / 5) + 1
    m = mp < 10 ? mp + 3 : mp - 9; if (m <= 2) y++
    return y "-" two(m) "-" two(d) "T" two(int(sod / 3600)) ":" two(int(sod % 3600 / 60)) ":" \
        two(sod % 60) "." three(ms % 1000) "Z"
}
function uuid(kind, x) { return sprintf("%s-%04x-4%03x-8%03x-%012x", seed, kind, int(x / 4096 / 4096 / 4096) % 4096, int(x / 4096 / 4096) % 4096, x % 281474976710656) }
# Event i's id with its middle 24 bits scattered (an odd multiplier is a
# bijection modulo 2^24; i stays in the last 48 bits, so ids stay distinct).
function scattered_uuid(kind, x,    h) {
    h = (x * 40503) % 16777216
    return sprintf("%s-%04x-4%03x-8%03x-%012x", seed, kind, int(h / 4096), h % 4096, x % 281474976710656)
}
function bulk(s) { return "$" length(s) "\r\n" s "\r\n" }
# FNV-1a (32 bits) of a string, in doubles: h * 16777619 = h * 2^24 + h * 403,
# each exact below 2^53.
function fnv1a(s,    h, k, b, x, bit) {
    h = 2166136261
    for (k = 1; k <= length(s); k++) {
        b = ord[substr(s, k, 1)]; x = 0
        for (bit = 1; bit < 256; bit *= 2)
            if ((int(h / bit) % 2) != (int(b / bit) % 2)) x += bit
        h = h - h % 256 + x
        h = ((h % 256) * 16777216 + h * 403) % 4294967296
    }
    return h
}
# The stream of an event naming content `key` (its id's digits, or its unique
# id): the collector's route on one node, fnv1a(key) mod shards.
function stream_of(key) {
    if (shards <= 1) return stream
    if (!(key in routed)) routed[key] = stream ":" (fnv1a(key) % shards)
    return routed[key]
}
BEGIN {
    if (!n || !stream || !base_ms) { print "aggregator_events.awk: n, stream and base_ms are required" > "/dev/stderr"; exit 2 }
    if (seed == "") seed = "0000a000"
    if (contents == "") contents = 1000
    if (sessions == "") sessions = int(n / 2) > 0 ? int(n / 2) : 1
    if (first == "") first = 0
    for (k = 1; k < 256; k++) ord[sprintf("%c", k)] = k
    split("mobile,desktop,tablet,", devices, ",")
    split("Safari,Chrome,Firefox,Samsung Internet,Edge", browsers, ",")
    split("iOS,Android,Windows,macOS,", oses, ",")
    split("DE,FR,US,GB,JP,BR,", countries, ",")
    split("Berlin,Paris,New York,London,Tokyo,,Munich", cities, ",")
    split("excellent,good,fair,poor,,good", quality, ",")
    ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
    last_e = ""
    for (i = first; i < first + n; i++) {
        if (invalid_every && i % invalid_every == invalid_every - 1) {
            printf "*7\r\n$4\r\nXADD\r\n%s$1\r\n*\r\n$1\r\nv\r\n$1\r\n2\r\n$1\r\ne\r\n%s", bulk(stream_of(i "")), bulk("{\"not\":\"an event\"}")
            n_invalid++
            continue
        }
        if (dup_every && i % dup_every == dup_every - 1 && last_e != "") {
            # A client retry: the same event again.
            printf "*7\r\n$4\r\nXADD\r\n%s$1\r\n*\r\n$1\r\nv\r\n$1\r\n1\r\n$1\r\ne\r\n%s", bulk(last_st), bulk(last_e)
            n_unknown += last_unknown
            continue
        }
        eid = random_ids ? scattered_uuid(1, i) : uuid(1, i)
        if (ids_file != "" && !(unknown_every && i % unknown_every == unknown_every - 1)) print eid > ids_file
        c = i % contents + 1 + content_base
        e = "{\"event_id\":\"" eid "\",\"session_id\":\"" uuid(2, i % sessions) "\""
        last_unknown = unknown_every && i % unknown_every == unknown_every - 1
        n_unknown += last_unknown
        if (last_unknown) {
            e = e ",\"ar_content_id\":999999999"; st = stream_of("999999999")
        } else if (uid_every && i % uid_every == uid_every - 1) {
            e = e ",\"ar_content_unique_id\":\"uid-" c "\""; st = stream_of("uid-" c)
        } else {
            e = e ",\"ar_content_id\":" c; st = stream_of(c "")
        }
        if (i % 11 != 10) e = e ",\"duration_seconds\":" (i % 97)
        q = max_fields ? sprintf("t%031d", i) : quality[i % 6 + 1]
        if (q != "") e = e ",\"tracking_quality\":\"" q "\""
        e = e ",\"video_played\":" (i % 3 == 0 ? "true" : "false")
        v = max_fields ? sprintf("d%031d", i) : devices[i % 4 + 1]
        if (v != "") e = e ",\"device_type\":\"" v "\""
        e = e ",\"browser\":\"" (max_fields ? sprintf("b%063d", i) : browsers[i % 5 + 1]) "\""
        v = max_fields ? sprintf("o%063d", i) : oses[i % 5 + 1]
        if (v != "") e = e ",\"os\":\"" v "\""
        v = countries[i % 7 + 1]; if (v != "") e = e ",\"country\":\"" v "\""
        v = distinct_cities || max_fields ? sprintf("city-%0123d", i) : cities[i % 7 + 1]
        if (v != "") e = e ",\"city\":\"" v "\""
        e = e ",\"user_agent\":\"" (max_fields ? ua " " sprintf("%0" (511 - length(ua)) "d", i) : ua) "\""
        if (i % 5 == 4) e = e ",\"ip\":\"2001:db8:abcd:" sprintf("%x", i % 65536) "::" sprintf("%x", i % 4093 + 1) "\""
        else e = e ",\"ip\":\"203.0." (i % 250) "." (i % 253 + 1) "\""
        r = base_ms - (spread_ms ? (i * 7919000) % spread_ms : 0)
        e = e ",\"received_at\":\"" rfc3339(r) "\"}"
        printf "*7\r\n$4\r\nXADD\r\n%s$1\r\n*\r\n$1\r\nv\r\n$1\r\n1\r\n$1\r\ne\r\n%s", bulk(st), bulk(e)
        last_e = e; last_st = st
    }
    if (stats_file != "") {
        print "unknown " n_unknown + 0 > stats_file
        print "invalid " n_invalid + 0 > stats_file
    }
}

