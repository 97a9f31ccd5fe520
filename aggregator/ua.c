/* User-agent parsing with uap-core's regexes: YAML loaded with libyaml, rules
 * compiled with PCRE2 (JIT), results kept in a per-thread LRU cache. */
#define _GNU_SOURCE           /* memmem */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "ua.h"

#include <assert.h>
#include <errno.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "event.h"
#include "strbuf.h"

static_assert(sizeof(((struct event *)0)->browser) == UA_FIELD_SIZE,
              "UA_FIELD_SIZE must match struct event's browser");
static_assert(sizeof(((struct event *)0)->os) == UA_FIELD_SIZE,
              "UA_FIELD_SIZE must match struct event's os");

/* PCRE2 limits per match: uap-core's rules on at most UA_MAX_LEN bytes need far
 * less; a rule that hits one is skipped (and counted) rather than stalling. */
#define UA_MATCH_LIMIT   200000
#define UA_DEPTH_LIMIT   2000
#define UA_JIT_STACK_MIN (32 * 1024)
#define UA_JIT_STACK_MAX (512 * 1024)
#define UA_CACHE_MAX     (1u << 24)
#define UA_NIL           UINT32_MAX
#define UA_EXPAND_MAX    (2 * UA_MAX_LEN)

enum ua_kind { UA_KIND_AGENT, UA_KIND_OS, UA_KIND_DEVICE, UA_KIND_COUNT };

/* Replacement slots: agent and OS use 0 (family_replacement / os_replacement);
 * devices use 0..2 (device_replacement, brand_replacement, model_replacement). */
#define UA_REPL_COUNT 3

#define UA_LIT_MAX 32 /* longest literal kept (see "required literals") */

struct ua_rule {
    pcre2_code *re;            /* compiled regex */
    uint16_t nlits;            /* literals of which a match contains one; 0: none known */
    uint32_t *lits;            /* their prefilter states */
    char *litbuf;              /* while loading: the literals, lower-cased, back to back */
    uint8_t *litlen;           /* while loading: their lengths */
    char *repl[UA_REPL_COUNT]; /* NULL: use capture group 1 (brand: none) */
    const char *device_type;   /* built-in rules: forced UA_TYPE_*; else NULL */
};

struct ua_list {
    struct ua_rule *rules; /* tried in order; the first match wins */
    size_t n;              /* rules in use */
    size_t cap;            /* allocated */
};

/* Aho-Corasick automaton (a DFA) over the rules' required literals. */
struct ua_prefilter {
    uint8_t cls[256]; /* byte -> input class (upper case folded); 0: in no literal */
    uint32_t nclass;  /* classes, 0 included */
    uint32_t nstates; /* states, 0 is the root */
    uint32_t *next;   /* nstates * nclass transitions */
    uint32_t *dict;   /* per state: longest proper suffix state ending a literal; 0 none */
    uint8_t *term;    /* per state: 1 when a literal ends here */
};

struct ua_db {
    struct ua_list lists[UA_KIND_COUNT];
    struct ua_prefilter pf; /* which required literals a user agent contains */
    pcre2_code *bot_re;     /* bots uap-core does not call "Spider" */
    pcre2_code *tv_re;      /* TVs, consoles, set-top boxes: "other" */
    pcre2_code *tablet_re;  /* tablet markers */
    pcre2_code *mobile_re;  /* phone markers */
    uint32_t max_groups;    /* largest capture count over all regexes */
    size_t not_jit;         /* regexes PCRE2 could not JIT-compile */
};

struct ua_entry {
    uint64_t hash;        /* of the key */
    uint32_t chain;       /* next entry in the same bucket, UA_NIL ends */
    uint32_t prev;        /* LRU neighbour used more recently, UA_NIL at the head */
    uint32_t next;        /* LRU neighbour used less recently, UA_NIL at the tail */
    uint32_t keylen;      /* bytes of key */
    char *key;            /* the (capped) user agent; malloc'd */
    struct ua_result res; /* its parse */
};

struct ua_cache {
    const struct ua_db *db;      /* borrowed */
    uint64_t *found;             /* bit per prefilter state: literal seen in this UA */
    size_t found_words;          /* uint64_t words in `found` */
    pcre2_match_data *md;        /* room for every capture group of every rule */
    pcre2_match_context *mctx;   /* limits and JIT stack */
    pcre2_jit_stack *jit_stack;  /* NULL without JIT */
    struct ua_entry *entries;    /* `capacity` slots, the first `used` in use */
    uint32_t capacity;           /* 0: no caching */
    uint32_t used;               /* slots in use */
    uint32_t *buckets;           /* entry index per hash bucket, UA_NIL empty */
    uint32_t mask;               /* buckets - 1 (a power of two >= 2 * capacity) */
    uint32_t head;               /* most recently used entry */
    uint32_t tail;               /* least recently used entry: evicted first */
    uint64_t seed;               /* hash seed: colliding keys cannot be precomputed */
    struct ua_cache_stats stats; /* counters (entries and capacity: see used, capacity) */
};

/* Built-in rules, tried before uap-core's: AR/VR headsets, which matter for this
 * product and which uap-core 0.16 does not name (Quest browsers fall through to
 * "Chrome"/"Linux"; visionOS is unknown). device_type forces the device type. */
struct ua_builtin {
    enum ua_kind kind;
    const char *regex;
    const char *repl[UA_REPL_COUNT];
    const char *device_type;
};

static const struct ua_builtin ua_builtins[] = {
    {UA_KIND_AGENT, "(OculusBrowser)/(\\d+)\\.(\\d+)(?:\\.(\\d+)|)", {"Oculus Browser"}, NULL},
    {UA_KIND_AGENT, "(PicoBrowser)/(\\d+)\\.(\\d+)(?:\\.(\\d+)|)", {"Pico Browser"}, NULL},
    {UA_KIND_AGENT, "(Wolvic)/(\\d+)\\.(\\d+)(?:\\.(\\d+)|)", {NULL}, NULL},
    {UA_KIND_OS, "\\b(?:visionOS|xrOS)[ /]\\d|\\(Apple Vision", {"visionOS"}, NULL},
    /* Pico's browser says "like Quest": Pico before Quest. */
    {UA_KIND_DEVICE,
     "\\b(?:Pico|PICO) (Neo ?\\d\\w*|G\\d\\w*|\\d\\w*)",
     {"Pico $1", "Pico", "$1"},
     UA_TYPE_HEADSET},
    {UA_KIND_DEVICE,
     "[;(] ?(Quest(?: Pro| \\d\\w?)?)[;)]",
     {"Meta $1", "Meta", "$1"},
     UA_TYPE_HEADSET},
    {UA_KIND_DEVICE, "Pacific Build", {"Oculus Go", "Oculus", "Go"}, UA_TYPE_HEADSET},
    {UA_KIND_DEVICE,
     "\\b(?:visionOS|xrOS)[ /]\\d|\\(Apple Vision|RealityDevice\\d",
     {"Apple Vision Pro", "Apple", "Vision Pro"},
     UA_TYPE_HEADSET},
    {UA_KIND_DEVICE, "HoloLens", {"HoloLens", "Microsoft", "HoloLens"}, UA_TYPE_HEADSET},
    {UA_KIND_DEVICE,
     "Magic ?Leap|\\bHelio/\\d",
     {"Magic Leap", "Magic Leap", "Magic Leap"},
     UA_TYPE_HEADSET},
    /* Any other VR browser: Chromium-based ones say "VR Safari", Samsung
     * Internet for Gear VR and Firefox Reality "Mobile VR". */
    {UA_KIND_DEVICE,
     "\\bVR Safari/|\\bMobile VR\\b|OculusBrowser|Wolvic/",
     {"VR Headset", NULL, NULL},
     UA_TYPE_HEADSET},
};

/* Not people, on top of uap-core's "Spider" (crawlers, monitors, feed readers):
 * command-line and scripting HTTP clients and headless/automated browsers. App
 * HTTP stacks that real viewers use (okhttp, CFNetwork, Dalvik) are not here. */
static const char ua_bot_regex[] =
    "HeadlessChrome|PhantomJS|Chrome-Lighthouse|Google Page Speed|\\bPTST/|Prerender|"
    "Puppeteer|Playwright|Selenium|Pingdom|UptimeRobot|StatusCake|Site24x7|Datadog|"
    "^(?:curl|Wget|python-requests|Python-urllib|python-httpx|aiohttp|Go-http-client|"
    "libwww-perl|HTTPie|node-fetch|undici|axios|Apache-HttpClient|Java|Ruby|PycURL|"
    "libcurl|PostmanRuntime|insomnia|Scrapy)\\b|\\baiohttp/|"
    /* Crawlers whose user agent otherwise reads as a browser's. */
    "\\b(?:Bytespider|GoogleOther|Google-InspectionTool|Mediapartners-Google|ChatGPT-User|"
    "GPTBot|OAI-SearchBot|ClaudeBot|PerplexityBot|CCBot)\\b";

/* uap-core user-agent families that are tools, not people (those named as
 * crawlers, such as Spider or Pinterestbot, are ua_bot_family()'s). */
static const char *const ua_bot_families[] = {
    "curl",
    "Wget",
    "python-requests",
    "Python-urllib",
    "Go-http-client",
    "PhantomJS",
    "HeadlessChrome",
    "libwww-perl",
    "Apache-HttpClient",
    "Google-HTTP-Java-Client",
    "PostmanRuntime",
    "scalaj-http",
    "axios",
    "reqwest",
    "PycURL",
    "libcurl-agent",
    "HttpMonitor",
    "TLSProber",
};

static const char ua_tv_regex[] =
    "SmartTV|SMART-TV|SmartHub|HbbTV|Web0S|webOS\\.TV|\\bTizen\\b.{0,100}\\bTV\\b|\\bTV\\b.{0,"
    "100}\\bTizen\\b|AppleTV|Apple TV|tvOS|\\bAFT[A-Z]|CrKey|BRAVIA|\\bRoku|PlayStation|Xbox|"
    "Nintendo|GoogleTV|Android TV|\\bOMI/|NetCast";
static const char ua_tablet_regex[] =
    "iPad|Tablet(?! PC)|Kindle|\\bSilk/|PlayBook|\\bKF[A-Z]{2,6}\\b";
static const char ua_mobile_regex[] =
    "Mobi|iPhone|iPod|Android|Windows Phone|Windows CE|Windows Mobile|BlackBerry|BB10|"
    "Opera Mini|KAIOS|KaiOS|Symbian|SymbOS|Series ?[346]0|J2ME|MIDP";

/* OS families (uap-core names) whose browsers are phones, and desktops. */
static const char *const ua_mobile_os[] = {
    "iOS",          "Android",    "Windows Phone", "Windows Mobile", "BlackBerry OS",
    "KaiOS",        "Symbian OS", "Firefox OS",    "Tizen",          "Sailfish",
    "Ubuntu Touch", "WatchOS",    "HarmonyOS",
};
static const char *const ua_desktop_os_prefix[] = {
    "Windows", "Mac OS",    "macOS",       "Linux",   "Ubuntu",     "Kubuntu",       "Xubuntu",
    "Lubuntu", "Chrome OS", "Chromium OS", "Fedora",  "Debian",     "Red Hat",       "CentOS",
    "SUSE",    "openSUSE",  "Mint",        "Gentoo",  "Arch Linux", "Slackware",     "Mandriva",
    "FreeBSD", "OpenBSD",   "NetBSD",      "Solaris", "SunOS",      "elementary OS", "Manjaro",
};

/* ---- required literals ------------------------------------------------------ */

/* Most rules name a product ("(Chrome)/(\d+)", "; *(PEDI)_(PLUS)_(W) Build") or
 * a list of them ("(bingbot|Googlebot|...)"): literals of which every match
 * contains one. A rule none of whose literals is in the user agent cannot match,
 * so its regex need not run: one Aho-Corasick pass over the user agent (case
 * folded) finds which literals are present. The extraction below is
 * conservative: whatever it is unsure of (classes, inline flags, lookarounds,
 * optional parts, escapes it does not know) ends the current run of literal
 * bytes, and an alternation counts only when every branch has a literal. */

#define UA_LIT_MIN  3   /* shorter literals filter too little to be worth a check */
#define UA_LIT_ALTS 256 /* most literals one requirement may list */

/* A requirement: every match contains one of these (lower-cased) literals. */
struct ua_req {
    uint16_t n;                        /* literals; 0: no requirement */
    uint8_t minlen;                    /* length of the shortest */
    uint8_t len[UA_LIT_ALTS];          /* their lengths */
    char lit[UA_LIT_ALTS][UA_LIT_MAX]; /* their bytes */
};

/* The state of reading one branch (a sequence of atoms). */
struct ua_lit {
    char cur[UA_LIT_MAX]; /* the run of literal bytes being read */
    size_t curn;
    struct ua_req best; /* the strongest requirement found so far */
    bool bad;           /* gave up: the regex has no usable requirement */
};

/* True when `a` filters better than `b`: longer shortest literal, then fewer. */
static bool ua_req_better(uint8_t a_minlen, uint16_t a_n, const struct ua_req *b)
{
    if (a_n == 0)
        return false;
    if (b->n == 0 || a_minlen != b->minlen)
        return b->n == 0 || a_minlen > b->minlen;
    return a_n < b->n;
}

static void ua_lit_flush(struct ua_lit *L)
{
    if (L->curn > 0 && ua_req_better((uint8_t)L->curn, 1, &L->best)) {
        L->best.n = 1;
        L->best.minlen = (uint8_t)L->curn;
        L->best.len[0] = (uint8_t)L->curn;
        memcpy(L->best.lit[0], L->cur, L->curn);
    }
    L->curn = 0;
}

static char ua_fold(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
}

static void ua_lit_add(struct ua_lit *L, char ch)
{
    if (L->curn == UA_LIT_MAX)
        ua_lit_flush(L); /* a part of a required literal is required too */
    L->cur[L->curn++] = ua_fold(ch);
}

/* End of the [...] class starting at p (p[0] == '['): just after its ']'. */
static const char *ua_lit_class_end(const char *p)
{
    p++;
    if (*p == '^')
        p++;
    if (*p == ']')
        p++; /* a leading ']' is a member */
    while (*p && *p != ']') {
        if (*p == '\\' && p[1])
            p++;
        p++;
    }
    return *p ? p + 1 : p;
}

/* End of the group starting at p (p[0] == '('): just after its ')'. Sets *alt
 * when the group has a top-level '|'. */
static const char *ua_lit_group_end(const char *p, bool *alt)
{
    int depth = 0;

    *alt = false;
    for (; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
        } else if (*p == '[') {
            p = ua_lit_class_end(p) - 1;
        } else if (*p == '(') {
            depth++;
        } else if (*p == ')') {
            if (--depth == 0)
                return p + 1;
        } else if (*p == '|' && depth == 1) {
            *alt = true;
        }
    }
    return p;
}

/* Reads the quantifier at *pp, if any, and moves past it (lazy/possessive
 * suffix included). Returns 0: none, 1: the atom may be absent (?, *, {0..}),
 * 2: the atom repeats (+, {n..} with n >= 1). */
static int ua_lit_quant(const char **pp)
{
    const char *p = *pp;
    int q = 0;

    if (*p == '?' || *p == '*') {
        q = 1;
        p++;
    } else if (*p == '+') {
        q = 2;
        p++;
    } else if (*p == '{' && ((p[1] >= '0' && p[1] <= '9') || p[1] == ',')) {
        /* {,n} is a quantifier (min 0) for PCRE2 >= 10.43, a literal before. */
        const char *e = p + 1;
        bool min_zero = true;
        for (; *e >= '0' && *e <= '9'; e++)
            min_zero = min_zero && *e == '0';
        if (*e == ',')
            while (*++e >= '0' && *e <= '9')
                ;
        if (*e != '}')
            return 0; /* not a quantifier: a literal '{' (handled by the caller) */
        q = min_zero ? 1 : 2;
        p = e + 1;
    } else {
        return 0;
    }
    if (*p == '?' || *p == '+')
        p++;
    *pp = p;
    return q;
}

static const char *ua_lit_alt(const char *p, struct ua_req *req, bool *bad);

/* Reads one branch at p up to its '|' or ')' or the end; returns where it
 * stopped. Literal bytes of required atoms extend the current run; a required
 * group without alternation continues it. */
static const char *ua_lit_seq(const char *p, struct ua_lit *L)
{
    static const char escaped_literals[] = ".^$|?*+()[]{}\\/-:;,_ '\"#%&!<>=@~";
    bool alt;

    while (*p && *p != ')' && *p != '|' && !L->bad) {
        if (*p == '(') {
            const char *end = ua_lit_group_end(p, &alt), *inner = p + 1;
            const char *after = end;
            int q = ua_lit_quant(&after);
            if (p[1] == '?') {
                if (p[2] == ':') {
                    inner = p + 3;
                } else if (p[2] == '=' || p[2] == '!' || p[2] == '<') {
                    inner = NULL; /* lookaround: matches nothing itself */
                } else {
                    L->bad = true; /* inline flags and the like: give up */
                    break;
                }
            }
            if (!inner || q == 1 || !*end || end[-1] != ')') {
                ua_lit_flush(L);
            } else if (!alt) {
                ua_lit_seq(inner, L); /* its literal bytes continue the run */
                if (q == 2)
                    ua_lit_flush(L);
            } else {
                struct ua_req *req = malloc(sizeof(*req));
                ua_lit_flush(L);
                if (!req) {
                    L->bad = true; /* out of memory: no prefilter for this rule */
                    break;
                }
                ua_lit_alt(inner, req, &L->bad);
                if (ua_req_better(req->minlen, req->n, &L->best))
                    L->best = *req;
                free(req);
            }
            p = after;
            continue;
        }
        char lit = 0;
        const char *next = p + 1;
        if (*p == '\\') {
            if (p[1] && strchr(escaped_literals, p[1])) {
                lit = p[1];
                next = p + 2;
            } else if (p[1] == 'd' || p[1] == 'D' || p[1] == 'w' || p[1] == 'W' || p[1] == 's' ||
                       p[1] == 'S' || p[1] == 'b' || p[1] == 'B') {
                next = p + 2;
            } else {
                L->bad = true; /* \x.., \Q, back references, ...: give up */
                break;
            }
        } else if (*p == '[') {
            next = ua_lit_class_end(p);
            /* [Xx]: one letter in either case, which folding makes a literal. */
            if (next - p == 4 && p[1] != p[2] && ua_fold(p[1]) == ua_fold(p[2]) &&
                ua_fold(p[1]) >= 'a' && ua_fold(p[1]) <= 'z')
                lit = p[1];
        } else if (!strchr(".^$?*+{}]", *p)) {
            lit = *p;
        }
        p = next;
        int q = ua_lit_quant(&p);
        if (!lit || q == 1) {
            ua_lit_flush(L);
        } else {
            ua_lit_add(L, lit);
            if (q == 2)
                ua_lit_flush(L);
        }
    }
    return p;
}

/* Reads the alternation at p (a group's content, or the whole regex) up to its
 * ')' or the end into *req: what every match of it contains one of (n == 0:
 * nothing usable). With several branches, each must have a requirement of
 * literals of at least UA_LIT_MIN bytes; the union is the alternation's. */
static const char *ua_lit_alt(const char *p, struct ua_req *req, bool *bad)
{
    struct ua_lit *B = malloc(sizeof(*B));
    bool first = true, usable = true;

    req->n = 0;
    req->minlen = 0;
    if (!B) {
        *bad = true;
        return p;
    }
    for (;;) {
        memset(B, 0, sizeof(*B));
        p = ua_lit_seq(p, B);
        ua_lit_flush(B);
        if (B->bad) {
            *bad = true;
            break;
        }
        if (first && *p != '|') {
            *req = B->best; /* one branch */
            break;
        }
        first = false;
        if (B->best.n == 0 || B->best.minlen < UA_LIT_MIN || req->n + B->best.n > UA_LIT_ALTS) {
            usable = false;
        } else if (usable) {
            for (uint16_t i = 0; i < B->best.n; i++) {
                req->len[req->n] = B->best.len[i];
                memcpy(req->lit[req->n], B->best.lit[i], B->best.len[i]);
                req->n++;
            }
            if (req->minlen == 0 || B->best.minlen < req->minlen)
                req->minlen = B->best.minlen;
        }
        if (*p != '|')
            break;
        p++;
    }
    if (!usable || *bad)
        req->n = 0;
    free(B);
    return p;
}

/* The literals of which every match of `regex` contains one, into *req (n == 0
 * when there are none worth using). */
static void ua_required_literals(const char *regex, struct ua_req *req)
{
    bool bad = false;

    req->n = 0;
    if (strstr(regex, "(?i") || strstr(regex, "\\Q"))
        return;
    ua_lit_alt(regex, req, &bad);
    if (bad || req->minlen < UA_LIT_MIN)
        req->n = 0;
}

/* Adds a state to the automaton under construction into *out; false when out of memory. */
static bool ua_pf_new_state(struct ua_prefilter *pf, size_t *cap, uint32_t *out)
{
    if (pf->nstates == *cap) {
        size_t ncap = *cap ? 2 * *cap : 1024;
        uint32_t *next = realloc(pf->next, ncap * pf->nclass * sizeof(*next));
        uint32_t *dict = next ? realloc(pf->dict, ncap * sizeof(*dict)) : NULL;
        uint8_t *term = dict ? realloc(pf->term, ncap) : NULL;
        if (next)
            pf->next = next;
        if (dict)
            pf->dict = dict;
        if (!term)
            return false;
        pf->term = term;
        *cap = ncap;
    }
    memset(&pf->next[(size_t)pf->nstates * pf->nclass], 0, pf->nclass * sizeof(*pf->next));
    pf->dict[pf->nstates] = 0;
    pf->term[pf->nstates] = 0;
    *out = pf->nstates++;
    return true;
}

/* Builds the automaton over every rule's literals and sets each rule's `lits`
 * to the states where they end; frees the literals' text. */
static int ua_prefilter_build(struct ua_db *db)
{
    struct ua_prefilter *pf = &db->pf;
    uint32_t *queue = NULL, *fail = NULL, head = 0, tail = 0, s, c, f;
    size_t cap = 0, off;
    int rc = 0;

    /* Input classes: one per (lower-cased) byte that occurs in some literal: at
     * most 256 - 26, so a class fits in a byte. */
    pf->nclass = 1;
    for (int k = 0; k < UA_KIND_COUNT; k++) {
        for (size_t i = 0; i < db->lists[k].n; i++) {
            const struct ua_rule *r = &db->lists[k].rules[i];
            for (off = 0, c = 0; c < r->nlits; off += r->litlen[c++]) {
                for (size_t j = 0; j < r->litlen[c]; j++) {
                    uint8_t ch = (uint8_t)r->litbuf[off + j];
                    if (!pf->cls[ch])
                        pf->cls[ch] = (uint8_t)pf->nclass++;
                }
            }
        }
    }
    for (int ch = 'A'; ch <= 'Z'; ch++)
        pf->cls[ch] = pf->cls[ch - 'A' + 'a'];
    if (!ua_pf_new_state(pf, &cap, &s)) /* the root, state 0 */
        return -ENOMEM;

    /* The trie. */
    for (int k = 0; k < UA_KIND_COUNT; k++) {
        for (size_t i = 0; i < db->lists[k].n; i++) {
            struct ua_rule *r = &db->lists[k].rules[i];
            for (off = 0, c = 0; c < r->nlits; off += r->litlen[c++]) {
                s = 0;
                for (size_t j = 0; j < r->litlen[c]; j++) {
                    size_t at = (size_t)s * pf->nclass + pf->cls[(uint8_t)r->litbuf[off + j]];
                    if (pf->next[at] == 0) {
                        uint32_t n;
                        if (!ua_pf_new_state(pf, &cap, &n))
                            return -ENOMEM;
                        pf->next[at] = n; /* (the table may have moved: index again) */
                    }
                    s = pf->next[at];
                }
                pf->term[s] = 1;
                r->lits[c] = s;
            }
            free(r->litbuf);
            free(r->litlen);
            r->litbuf = NULL;
            r->litlen = NULL;
        }
    }

    /* Failure links breadth first, turning the trie into a DFA; dict chains the
     * literal-ending states along each state's failure path. */
    queue = malloc(pf->nstates * sizeof(*queue));
    fail = calloc(pf->nstates, sizeof(*fail));
    if (!queue || !fail) {
        rc = -ENOMEM;
        goto out;
    }
    for (c = 1; c < pf->nclass; c++)
        if ((s = pf->next[c]) != 0)
            queue[tail++] = s; /* depth 1: fail to the root */
    while (head < tail) {
        s = queue[head++];
        for (c = 1; c < pf->nclass; c++) {
            uint32_t *t = &pf->next[(size_t)s * pf->nclass + c];
            f = pf->next[(size_t)fail[s] * pf->nclass + c];
            if (*t) {
                fail[*t] = f;
                pf->dict[*t] = pf->term[f] ? f : pf->dict[f];
                queue[tail++] = *t;
            } else {
                *t = f;
            }
        }
    }
out:
    free(queue);
    free(fail);
    return rc;
}

/* Marks in c->found every state of a literal that occurs in s[0..n). */
static void ua_prefilter_scan(struct ua_cache *c, const char *s, size_t n)
{
    const struct ua_prefilter *pf = &c->db->pf;
    uint32_t st = 0, t;

    memset(c->found, 0, c->found_words * sizeof(*c->found));
    for (size_t i = 0; i < n; i++) {
        st = pf->next[(size_t)st * pf->nclass + pf->cls[(uint8_t)s[i]]];
        for (t = pf->term[st] ? st : pf->dict[st]; t; t = pf->dict[t])
            c->found[t >> 6] |= 1ULL << (t & 63);
    }
}

/* Finds the literals of `regex` and keeps them in `r` until the prefilter is built. */
static int ua_rule_literals(struct ua_rule *r, const char *regex)
{
    struct ua_req *req = malloc(sizeof(*req));
    size_t total = 0, off = 0;
    int rc = 0;

    if (!req)
        return -ENOMEM;
    ua_required_literals(regex, req);
    if (req->n == 0)
        goto out;
    for (uint16_t i = 0; i < req->n; i++)
        total += req->len[i];
    r->lits = calloc(req->n, sizeof(*r->lits));
    r->litlen = malloc(req->n);
    r->litbuf = malloc(total);
    if (!r->lits || !r->litlen || !r->litbuf) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint16_t i = 0; i < req->n; i++) {
        memcpy(r->litbuf + off, req->lit[i], req->len[i]);
        r->litlen[i] = req->len[i];
        off += req->len[i];
    }
    r->nlits = req->n;
out:
    free(req);
    return rc;
}

/* True when one of the literals of `r` was found by the last scan. */
static bool ua_prefilter_any(const struct ua_cache *c, const struct ua_rule *r)
{
    for (uint16_t i = 0; i < r->nlits; i++)
        if (c->found[r->lits[i] >> 6] & (1ULL << (r->lits[i] & 63)))
            return true;
    return false;
}

/* ---- loading -------------------------------------------------------------- */

struct ua_loader {
    yaml_parser_t parser; /* libyaml event parser over the file */
    struct ua_db *db;     /* being filled */
    FILE *f;              /* the open file */
    const char *path;     /* borrowed, for messages */
    char *err;            /* caller's buffer, may be NULL */
    size_t errlen;
    size_t loaded[UA_KIND_COUNT]; /* rules read from the file, per list */
};

static void ua_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ua_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || errlen == 0 || err[0] != '\0')
        return; /* the first (innermost) reason is the useful one */
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int ua_list_push(struct ua_list *l, struct ua_rule **out)
{
    struct ua_rule *r;

    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        r = realloc(l->rules, cap * sizeof(*r));
        if (!r)
            return -ENOMEM;
        l->rules = r;
        l->cap = cap;
    }
    *out = &l->rules[l->n++];
    memset(*out, 0, sizeof(**out));
    return 0;
}

/* Compiles `regex` into *out and JIT-compiles it when possible. `where` names
 * it in an error ("regexes.yaml:123"). */
static int ua_compile(struct ua_db *db, const char *regex, uint32_t options, pcre2_code **out,
                      const char *where, char *err, size_t errlen)
{
    PCRE2_UCHAR msg[128];
    PCRE2_SIZE erroff = 0;
    uint32_t groups = 0;
    int errcode = 0;

    *out =
        pcre2_compile((PCRE2_SPTR)regex, PCRE2_ZERO_TERMINATED, options, &errcode, &erroff, NULL);
    if (!*out) {
        if (errcode == PCRE2_ERROR_HEAPLIMIT || errcode == PCRE2_ERROR_NOMEMORY)
            return -ENOMEM;
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        ua_set_err(err, errlen, "%s: regex does not compile: %s at offset %zu", where,
                   (const char *)msg, (size_t)erroff);
        return -EINVAL;
    }
    if (pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE) != 0)
        db->not_jit++;
    if (pcre2_pattern_info(*out, PCRE2_INFO_CAPTURECOUNT, &groups) == 0 && groups > db->max_groups)
        db->max_groups = groups;
    return 0;
}

static int ua_next(struct ua_loader *l, yaml_event_t *ev)
{
    if (yaml_parser_parse(&l->parser, ev))
        return 0;
    if (l->parser.error == YAML_MEMORY_ERROR)
        return -ENOMEM;
    if (l->parser.error == YAML_READER_ERROR && ferror(l->f)) {
        int e = errno ? errno : EIO;
        ua_set_err(l->err, l->errlen, "%s: %s", l->path, strerror(e));
        return -e;
    }
    ua_set_err(l->err, l->errlen, "%s:%zu: invalid YAML: %s", l->path,
               (size_t)l->parser.problem_mark.line + 1,
               l->parser.problem ? l->parser.problem : "parse error");
    return -EINVAL;
}

/* Consumes the value whose first event is `first` (already read; not freed here). */
static int ua_skip_value(struct ua_loader *l, const yaml_event_t *first)
{
    yaml_event_t ev;
    int depth, rc = 0;

    if (first->type != YAML_SEQUENCE_START_EVENT && first->type != YAML_MAPPING_START_EVENT)
        return 0;
    for (depth = 1; depth > 0;) {
        rc = ua_next(l, &ev);
        if (rc < 0)
            break;
        if (ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT)
            depth++;
        else if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT)
            depth--;
        yaml_event_delete(&ev);
    }
    return rc;
}

static int ua_repl_slot(enum ua_kind kind, const char *key)
{
    switch (kind) {
    case UA_KIND_AGENT:
        return strcmp(key, "family_replacement") == 0 ? 0 : -1;
    case UA_KIND_OS:
        return strcmp(key, "os_replacement") == 0 ? 0 : -1;
    case UA_KIND_DEVICE:
        if (strcmp(key, "device_replacement") == 0)
            return 0;
        if (strcmp(key, "brand_replacement") == 0)
            return 1;
        if (strcmp(key, "model_replacement") == 0)
            return 2;
        return -1;
    default:
        return -1;
    }
}

/* Reads one rule (a mapping; its MAPPING_START already consumed at `line`). */
static int ua_load_rule(struct ua_loader *l, enum ua_kind kind, size_t line)
{
    char *regex = NULL, *repl[UA_REPL_COUNT] = {NULL};
    char where[512];
    yaml_event_t key, val;
    bool have_key = false, have_val = false, caseless = false;
    struct ua_rule *r = NULL;
    int rc = 0, slot, i;

    for (;;) {
        rc = ua_next(l, &key);
        if (rc < 0)
            goto out;
        have_key = true;
        if (key.type == YAML_MAPPING_END_EVENT)
            break;
        if (key.type != YAML_SCALAR_EVENT) {
            ua_set_err(l->err, l->errlen, "%s:%zu: a rule's keys must be plain strings", l->path,
                       (size_t)key.start_mark.line + 1);
            rc = -EINVAL;
            goto out;
        }
        rc = ua_next(l, &val);
        if (rc < 0)
            goto out;
        have_val = true;
        if (val.type != YAML_SCALAR_EVENT) {
            ua_set_err(l->err, l->errlen, "%s:%zu: value of '%s' is not a string", l->path,
                       (size_t)val.start_mark.line + 1, (const char *)key.data.scalar.value);
            rc = -EINVAL;
            goto out;
        }
        const char *k = (const char *)key.data.scalar.value;
        const char *v = (const char *)val.data.scalar.value;
        /* An empty value ("family_replacement:") is YAML's null: no replacement. */
        if (strcmp(k, "regex") == 0 && v[0] != '\0') {
            free(regex);
            regex = strdup(v);
            if (!regex)
                rc = -ENOMEM;
        } else if (strcmp(k, "regex_flag") == 0) {
            caseless = strchr(v, 'i') != NULL;
        } else if ((slot = ua_repl_slot(kind, k)) >= 0 && v[0] != '\0') {
            free(repl[slot]);
            repl[slot] = strdup(v);
            if (!repl[slot])
                rc = -ENOMEM;
        } /* versions (v1_replacement, ...) and anything else: not used */
        yaml_event_delete(&key);
        yaml_event_delete(&val);
        have_key = have_val = false;
        if (rc < 0)
            goto out;
    }
    if (!regex) {
        ua_set_err(l->err, l->errlen, "%s:%zu: rule without a regex", l->path, line);
        rc = -EINVAL;
        goto out;
    }
    rc = ua_list_push(&l->db->lists[kind], &r);
    if (rc < 0)
        goto out;
    snprintf(where, sizeof(where), "%s:%zu", l->path, line);
    rc = ua_compile(l->db, regex, caseless ? PCRE2_CASELESS : 0, &r->re, where, l->err, l->errlen);
    if (rc < 0) {
        l->db->lists[kind].n--;
        goto out;
    }
    rc = ua_rule_literals(r, regex);
    if (rc < 0)
        goto out; /* the rule is complete: ua_db_close frees it */
    for (i = 0; i < UA_REPL_COUNT; i++) {
        r->repl[i] = repl[i];
        repl[i] = NULL;
    }
    l->loaded[kind]++;
out:
    if (have_key)
        yaml_event_delete(&key);
    if (have_val)
        yaml_event_delete(&val);
    free(regex);
    for (i = 0; i < UA_REPL_COUNT; i++)
        free(repl[i]);
    return rc;
}

/* Reads one list of rules (a sequence of mappings). */
static int ua_load_list(struct ua_loader *l, enum ua_kind kind, const char *name)
{
    yaml_event_t ev;
    int rc;

    rc = ua_next(l, &ev);
    if (rc < 0)
        return rc;
    if (ev.type != YAML_SEQUENCE_START_EVENT) {
        ua_set_err(l->err, l->errlen, "%s:%zu: '%s' is not a list", l->path,
                   (size_t)ev.start_mark.line + 1, name);
        yaml_event_delete(&ev);
        return -EINVAL;
    }
    yaml_event_delete(&ev);
    for (;;) {
        rc = ua_next(l, &ev);
        if (rc < 0)
            return rc;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        if (ev.type != YAML_MAPPING_START_EVENT) {
            ua_set_err(l->err, l->errlen, "%s:%zu: an entry of '%s' is not a mapping", l->path,
                       (size_t)ev.start_mark.line + 1, name);
            yaml_event_delete(&ev);
            return -EINVAL;
        }
        size_t line = (size_t)ev.start_mark.line + 1;
        yaml_event_delete(&ev);
        rc = ua_load_rule(l, kind, line);
        if (rc < 0)
            return rc;
    }
}

/* Reads the document: a mapping with user_agent_parsers, os_parsers and
 * device_parsers (other keys ignored). */
static int ua_load_document(struct ua_loader *l)
{
    static const char *const names[UA_KIND_COUNT] = {"user_agent_parsers", "os_parsers",
                                                     "device_parsers"};
    yaml_event_t ev;
    bool have_ev = false;
    int rc = 0, kind;

    /* STREAM_START, DOCUMENT_START, then the top-level mapping. */
    for (int i = 0; i < 3; i++) {
        rc = ua_next(l, &ev);
        if (rc < 0)
            goto out;
        have_ev = true;
        if ((i == 0 && ev.type != YAML_STREAM_START_EVENT) ||
            (i == 1 && ev.type != YAML_DOCUMENT_START_EVENT) ||
            (i == 2 && ev.type != YAML_MAPPING_START_EVENT)) {
            ua_set_err(l->err, l->errlen, "%s: not a uap-core regexes file (%s)", l->path,
                       i == 1 ? "empty" : "the top level is not a mapping");
            rc = -EINVAL;
            goto out;
        }
        yaml_event_delete(&ev);
        have_ev = false;
    }
    for (;;) {
        rc = ua_next(l, &ev);
        if (rc < 0)
            goto out;
        have_ev = true;
        if (ev.type == YAML_MAPPING_END_EVENT)
            break;
        if (ev.type != YAML_SCALAR_EVENT) {
            ua_set_err(l->err, l->errlen, "%s:%zu: not a uap-core regexes file", l->path,
                       (size_t)ev.start_mark.line + 1);
            rc = -EINVAL;
            goto out;
        }
        for (kind = 0; kind < UA_KIND_COUNT; kind++)
            if (strcmp((const char *)ev.data.scalar.value, names[kind]) == 0)
                break;
        yaml_event_delete(&ev);
        have_ev = false;
        if (kind < UA_KIND_COUNT) {
            rc = ua_load_list(l, (enum ua_kind)kind, names[kind]);
        } else {
            rc = ua_next(l, &ev);
            if (rc < 0)
                goto out;
            have_ev = true;
            rc = ua_skip_value(l, &ev);
        }
        if (rc < 0)
            goto out;
        if (have_ev) {
            yaml_event_delete(&ev);
            have_ev = false;
        }
    }
    for (kind = 0; kind < UA_KIND_COUNT; kind++) {
        if (l->loaded[kind] == 0) {
            ua_set_err(l->err, l->errlen, "%s: not a uap-core regexes file (no %s)", l->path,
                       names[kind]);
            rc = -EINVAL;
            goto out;
        }
    }
out:
    if (have_ev)
        yaml_event_delete(&ev);
    return rc;
}

static int ua_load_builtins(struct ua_db *db, char *err, size_t errlen)
{
    const struct ua_builtin *b;
    struct ua_rule *r;
    size_t i;
    int rc, j;

    for (i = 0; i < sizeof(ua_builtins) / sizeof(ua_builtins[0]); i++) {
        b = &ua_builtins[i];
        rc = ua_list_push(&db->lists[b->kind], &r);
        if (rc < 0)
            return rc;
        rc = ua_compile(db, b->regex, 0, &r->re, "built-in rule", err, errlen);
        if (rc < 0) {
            db->lists[b->kind].n--;
            return rc;
        }
        r->device_type = b->device_type;
        rc = ua_rule_literals(r, b->regex);
        if (rc < 0)
            return rc;
        for (j = 0; j < UA_REPL_COUNT; j++) {
            if (b->repl[j] && !(r->repl[j] = strdup(b->repl[j])))
                return -ENOMEM;
        }
    }
    rc = ua_compile(db, ua_bot_regex, PCRE2_CASELESS, &db->bot_re, "bot rule", err, errlen);
    if (rc == 0)
        rc = ua_compile(db, ua_tv_regex, 0, &db->tv_re, "tv rule", err, errlen);
    if (rc == 0)
        rc = ua_compile(db, ua_tablet_regex, 0, &db->tablet_re, "tablet rule", err, errlen);
    if (rc == 0)
        rc = ua_compile(db, ua_mobile_regex, 0, &db->mobile_re, "mobile rule", err, errlen);
    return rc;
}

int ua_db_open(const char *path, struct ua_db **out, char *err, size_t errlen)
{
    struct ua_loader l = {.path = path, .err = err, .errlen = errlen};
    bool parser_ready = false;
    FILE *f = NULL;
    int rc = 0;

    assert(path && out);
    *out = NULL;
    if (err && errlen > 0)
        err[0] = '\0';
    l.db = calloc(1, sizeof(*l.db));
    if (!l.db) {
        rc = -ENOMEM;
        goto out;
    }
    f = fopen(path, "rb");
    if (!f) {
        rc = errno ? -errno : -EIO;
        ua_set_err(err, errlen, "%s: %s", path, strerror(-rc));
        goto out;
    }
    /* The built-in rules go first so that they win over uap-core's. */
    rc = ua_load_builtins(l.db, err, errlen);
    if (rc < 0)
        goto out;
    if (!yaml_parser_initialize(&l.parser)) {
        rc = -ENOMEM;
        goto out;
    }
    parser_ready = true;
    l.f = f;
    yaml_parser_set_input_file(&l.parser, f);
    rc = ua_load_document(&l);
    if (rc == 0)
        rc = ua_prefilter_build(l.db);
out:
    if (parser_ready)
        yaml_parser_delete(&l.parser);
    if (f)
        fclose(f);
    if (rc < 0) {
        if (rc == -ENOMEM)
            ua_set_err(err, errlen, "%s: out of memory", path);
        ua_db_close(l.db);
        return rc;
    }
    *out = l.db;
    return 0;
}

void ua_db_close(struct ua_db *db)
{
    if (!db)
        return;
    for (int k = 0; k < UA_KIND_COUNT; k++) {
        for (size_t i = 0; i < db->lists[k].n; i++) {
            pcre2_code_free(db->lists[k].rules[i].re);
            free(db->lists[k].rules[i].lits);
            free(db->lists[k].rules[i].litbuf);
            free(db->lists[k].rules[i].litlen);
            for (int j = 0; j < UA_REPL_COUNT; j++)
                free(db->lists[k].rules[i].repl[j]);
        }
        free(db->lists[k].rules);
    }
    free(db->pf.next);
    free(db->pf.dict);
    free(db->pf.term);
    pcre2_code_free(db->bot_re);
    pcre2_code_free(db->tv_re);
    pcre2_code_free(db->tablet_re);
    pcre2_code_free(db->mobile_re);
    free(db);
}

size_t ua_db_rule_count(const struct ua_db *db)
{
    return db->lists[UA_KIND_AGENT].n + db->lists[UA_KIND_OS].n + db->lists[UA_KIND_DEVICE].n;
}

bool ua_db_jit(const struct ua_db *db)
{
    return db->not_jit == 0;
}

/* ---- parsing ------------------------------------------------------------- */

/* Copies s[0..n) into a result field: only well-formed UTF-8 (the rules
 * match bytes, so a capture can start or end inside a character; PostgreSQL
 * would refuse the raw row), leading/trailing blanks trimmed, truncated at a
 * character boundary, NUL-terminated. Empty gives `dflt`. */
static void ua_set_field(char *dst, const char *s, size_t n, const char *dflt)
{
    size_t start = 0;

    n = strbuf_utf8_copy_valid(dst, UA_FIELD_SIZE - 1, s, n);
    while (start < n && (dst[start] == ' ' || dst[start] == '\t'))
        start++;
    while (n > start && (dst[n - 1] == ' ' || dst[n - 1] == '\t'))
        n--;
    if (n == start) {
        snprintf(dst, UA_FIELD_SIZE, "%s", dflt);
        return;
    }
    memmove(dst, dst + start, n - start);
    dst[n - start] = '\0';
}

/* Runs one regex; returns the number of captured pairs set in c->md (> 0) on a
 * match, 0 when it does not match or hit a limit. */
static int ua_match(struct ua_cache *c, const pcre2_code *re, const char *s, size_t n)
{
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, 0, 0, c->md, c->mctx);

    if (rc > 0)
        return rc;
    if (rc != PCRE2_ERROR_NOMATCH)
        c->stats.limit_errors++;
    return 0;
}

/* Writes `tmpl` with $1..$9 replaced by the capture groups of the last match
 * (an unset group is empty) into the field `dst`. */
static void ua_expand(struct ua_cache *c, int groups, const char *tmpl, const char *s, char *dst,
                      const char *dflt)
{
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
    char buf[UA_EXPAND_MAX];
    size_t n = 0, len;
    const char *from;

    for (const char *p = tmpl; *p && n < sizeof(buf); p++) {
        if (p[0] == '$' && p[1] >= '1' && p[1] <= '9') {
            int g = p[1] - '0';
            p++;
            if (g >= groups || ov[2 * g] == PCRE2_UNSET)
                continue;
            from = s + ov[2 * g];
            len = ov[2 * g + 1] - ov[2 * g];
            if (len > sizeof(buf) - n)
                len = sizeof(buf) - n;
            memcpy(buf + n, from, len);
            n += len;
        } else {
            buf[n++] = *p;
        }
    }
    ua_set_field(dst, buf, n, dflt);
}

/* The first rule of `kind` matching s[0..n), with its group count in *groups. */
static const struct ua_rule *ua_first_match(struct ua_cache *c, enum ua_kind kind, const char *s,
                                            size_t n, int *groups)
{
    const struct ua_list *l = &c->db->lists[kind];

    for (size_t i = 0; i < l->n; i++) {
        const struct ua_rule *r = &l->rules[i];
        if (r->nlits > 0 && !ua_prefilter_any(c, r))
            continue; /* none of its literals is in the user agent: it cannot match */
        *groups = ua_match(c, l->rules[i].re, s, n);
        if (*groups > 0)
            return &l->rules[i];
    }
    return NULL;
}

static bool ua_in(const char *s, const char *const *set, size_t n, bool prefix)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(set[i]);
        if (prefix ? strncmp(s, set[i], len) == 0 : strcmp(s, set[i]) == 0)
            return true;
    }
    return false;
}

#define UA_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* A family uap-core's generic crawler rules name (Applebot, Amazonbot,
 * PetalBot, ...: "...bot", "...spider", "...crawl..."), which its device
 * rules may still take for a Mac or a phone. No browser's family is so named
 * (the brand Cubot is a device's, never a family). */
static bool ua_bot_family(const char *family)
{
    static const char *const parts[] = {"spider", "crawl", "scrape", "archiver", "indexer"};
    size_t n = strlen(family);

    if (n >= 3 && strcasecmp(family + n - 3, "bot") == 0)
        return true;
    for (size_t i = 0; i < UA_COUNT(parts); i++) {
        if (strcasestr(family, parts[i]))
            return true;
    }
    return false;
}

/* The device type, in this order: bot; a built-in headset rule; TV or console;
 * tablet; phone; desktop OS; else other. */
static const char *ua_device_type(struct ua_cache *c, const struct ua_result *r,
                                  const struct ua_rule *dev, const char *s, size_t n)
{
    const struct ua_db *db = c->db;

    if (r->is_bot)
        return UA_TYPE_BOT;
    if (dev && dev->device_type)
        return dev->device_type;
    if (n == 0)
        return UA_TYPE_OTHER;
    if (ua_match(c, db->tv_re, s, n) || strcmp(r->os, "tvOS") == 0 ||
        strcmp(r->os, "Chromecast") == 0)
        return UA_TYPE_OTHER;
    /* Android tablets are Android without "Mobile" (Google's advice to browsers). */
    if (strcmp(r->device, "iPad") == 0 || ua_match(c, db->tablet_re, s, n) ||
        (strcmp(r->os, "Android") == 0 && !memmem(s, n, "Mobile", 6) &&
         memmem(s, n, "Mozilla/", 8)))
        return UA_TYPE_TABLET;
    if (ua_in(r->os, ua_mobile_os, UA_COUNT(ua_mobile_os), false) ||
        ua_match(c, db->mobile_re, s, n))
        return UA_TYPE_MOBILE;
    if (ua_in(r->os, ua_desktop_os_prefix, UA_COUNT(ua_desktop_os_prefix), true) ||
        strcmp(r->device, "Mac") == 0)
        return UA_TYPE_DESKTOP;
    return UA_TYPE_OTHER;
}

/* Parses s[0..n) (already capped) into *r: uap-core's three lists, first match
 * of each, with its replacements; then the bot flag and the device type. */
static void ua_parse(struct ua_cache *c, const char *s, size_t n, struct ua_result *r)
{
    const struct ua_rule *rule, *dev;
    int groups = 0;

    memset(r, 0, sizeof(*r));
    ua_prefilter_scan(c, s, n);
    rule = ua_first_match(c, UA_KIND_AGENT, s, n, &groups);
    if (!rule)
        ua_set_field(r->browser, "", 0, "Other");
    else if (rule->repl[0])
        ua_expand(c, groups, rule->repl[0], s, r->browser, "Other");
    else
        ua_expand(c, groups, "$1", s, r->browser, "Other");

    rule = ua_first_match(c, UA_KIND_OS, s, n, &groups);
    if (!rule)
        ua_set_field(r->os, "", 0, "Other");
    else if (rule->repl[0])
        ua_expand(c, groups, rule->repl[0], s, r->os, "Other");
    else
        ua_expand(c, groups, "$1", s, r->os, "Other");

    dev = ua_first_match(c, UA_KIND_DEVICE, s, n, &groups);
    if (!dev) {
        ua_set_field(r->device, "", 0, "Other");
    } else {
        if (dev->repl[0])
            ua_expand(c, groups, dev->repl[0], s, r->device, "Other");
        else
            ua_expand(c, groups, "$1", s, r->device, "Other");
        if (dev->repl[1])
            ua_expand(c, groups, dev->repl[1], s, r->brand, "");
        if (dev->repl[2])
            ua_expand(c, groups, dev->repl[2], s, r->model, "");
        else
            ua_expand(c, groups, "$1", s, r->model, "");
    }

    r->is_bot = strcmp(r->device, "Spider") == 0 ||
                ua_in(r->browser, ua_bot_families, UA_COUNT(ua_bot_families), false) ||
                ua_bot_family(r->browser) || (n > 0 && ua_match(c, c->db->bot_re, s, n));
    r->device_type = ua_device_type(c, r, dev, s, n);
}

/* ---- cache --------------------------------------------------------------- */

struct ua_cache *ua_cache_new(const struct ua_db *db, size_t capacity)
{
    struct ua_cache *c = NULL;
    size_t nbuckets = 2;
    bool ok = false;

    assert(db);
    if (capacity > UA_CACHE_MAX)
        capacity = UA_CACHE_MAX;
    c = calloc(1, sizeof(*c));
    if (!c)
        goto out;
    c->db = db;
    c->head = c->tail = UA_NIL;
    c->capacity = (uint32_t)capacity;
    c->md = pcre2_match_data_create(db->max_groups + 1, NULL);
    c->mctx = pcre2_match_context_create(NULL);
    c->found_words = (db->pf.nstates + 63) / 64;
    c->found = calloc(c->found_words ? c->found_words : 1, sizeof(*c->found));
    if (!c->md || !c->mctx || !c->found)
        goto out;
    pcre2_set_match_limit(c->mctx, UA_MATCH_LIMIT);
    pcre2_set_depth_limit(c->mctx, UA_DEPTH_LIMIT);
    if (db->not_jit < ua_db_rule_count(db)) {
        c->jit_stack = pcre2_jit_stack_create(UA_JIT_STACK_MIN, UA_JIT_STACK_MAX, NULL);
        if (!c->jit_stack)
            goto out;
        pcre2_jit_stack_assign(c->mctx, NULL, c->jit_stack);
    }
    c->seed = strbuf_hash_seed(c);
    if (capacity > 0) {
        while (nbuckets < 2 * capacity)
            nbuckets *= 2;
        c->entries = calloc(capacity, sizeof(*c->entries));
        c->buckets = malloc(nbuckets * sizeof(*c->buckets));
        if (!c->entries || !c->buckets)
            goto out;
        memset(c->buckets, 0xff, nbuckets * sizeof(*c->buckets)); /* UA_NIL */
        c->mask = (uint32_t)(nbuckets - 1);
    }
    ok = true;
out:
    if (!ok) {
        ua_cache_free(c);
        return NULL;
    }
    return c;
}

void ua_cache_free(struct ua_cache *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->used; i++)
        free(c->entries[i].key);
    free(c->entries);
    free(c->buckets);
    free(c->found);
    pcre2_match_data_free(c->md);
    pcre2_match_context_free(c->mctx);
    pcre2_jit_stack_free(c->jit_stack);
    free(c);
}

static void ua_lru_unlink(struct ua_cache *c, uint32_t i)
{
    struct ua_entry *e = &c->entries[i];

    if (e->prev != UA_NIL)
        c->entries[e->prev].next = e->next;
    else
        c->head = e->next;
    if (e->next != UA_NIL)
        c->entries[e->next].prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = UA_NIL;
}

static void ua_lru_push_head(struct ua_cache *c, uint32_t i)
{
    struct ua_entry *e = &c->entries[i];

    e->prev = UA_NIL;
    e->next = c->head;
    if (c->head != UA_NIL)
        c->entries[c->head].prev = i;
    c->head = i;
    if (c->tail == UA_NIL)
        c->tail = i;
}

static void ua_bucket_remove(struct ua_cache *c, uint32_t i)
{
    uint32_t *link = &c->buckets[c->entries[i].hash & c->mask];

    while (*link != i) {
        assert(*link != UA_NIL);
        link = &c->entries[*link].chain;
    }
    *link = c->entries[i].chain;
}

/* Stores a copy of key[0..n) and its result, evicting the LRU entry if full. */
static void ua_cache_put(struct ua_cache *c, uint64_t h, const char *key, size_t n,
                         const struct ua_result *res)
{
    struct ua_entry *e;
    uint32_t i;
    char *copy;

    if (c->used < c->capacity) {
        copy = malloc(n ? n : 1);
        if (!copy)
            return; /* not cached; the result is still right */
        i = c->used++;
        e = &c->entries[i];
    } else {
        i = c->tail;
        e = &c->entries[i];
        copy = realloc(e->key, n ? n : 1);
        if (!copy)
            return;
        ua_bucket_remove(c, i);
        ua_lru_unlink(c, i);
        c->stats.evictions++;
    }
    memcpy(copy, key, n);
    e->key = copy;
    e->keylen = (uint32_t)n;
    e->hash = h;
    e->res = *res;
    e->chain = c->buckets[h & c->mask];
    c->buckets[h & c->mask] = i;
    ua_lru_push_head(c, i);
}

void ua_cache_lookup(struct ua_cache *c, const char *ua, size_t len, struct ua_result *out)
{
    uint64_t h;
    uint32_t i;

    assert(c && out && (ua || len == 0));
    if (!ua)
        ua = "";
    len = strbuf_utf8_prefix(ua, len, UA_MAX_LEN);
    if (c->capacity == 0) {
        c->stats.misses++;
        ua_parse(c, ua, len, out);
        return;
    }
    h = strbuf_hash64(ua, len, c->seed);
    for (i = c->buckets[h & c->mask]; i != UA_NIL; i = c->entries[i].chain) {
        const struct ua_entry *e = &c->entries[i];
        if (e->hash == h && e->keylen == len && memcmp(e->key, ua, len) == 0)
            break;
    }
    if (i != UA_NIL) {
        if (c->head != i) {
            ua_lru_unlink(c, i);
            ua_lru_push_head(c, i);
        }
        *out = c->entries[i].res;
        c->stats.hits++;
        return;
    }
    c->stats.misses++;
    ua_parse(c, ua, len, out);
    ua_cache_put(c, h, ua, len, out);
}

bool ua_enrich_event(struct ua_cache *c, struct event *ev)
{
    struct ua_result r;

    if (ev->user_agent[0] == '\0')
        return false;
    ua_cache_lookup(c, ev->user_agent, strlen(ev->user_agent), &r);
    if (ev->device_type[0] == '\0') {
        size_t n = strnlen(r.device_type, sizeof(ev->device_type) - 1);
        memcpy(ev->device_type, r.device_type, n);
        ev->device_type[n] = '\0';
    }
    if (ev->browser[0] == '\0' && strcmp(r.browser, "Other") != 0)
        memcpy(ev->browser, r.browser, sizeof(ev->browser));
    if (ev->os[0] == '\0' && strcmp(r.os, "Other") != 0)
        memcpy(ev->os, r.os, sizeof(ev->os));
    return r.is_bot;
}

void ua_cache_stats(const struct ua_cache *c, struct ua_cache_stats *out)
{
    *out = c->stats;
    out->entries = c->used;
    out->capacity = c->capacity;
}
