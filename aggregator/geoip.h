/* GeoIP enrichment: the country (ISO 3166-1 alpha-2) and English city name of a
 * client address, looked up in a MaxMind DB file (GeoIP2/GeoLite2 City or Country). */
#ifndef ARV_AGGREGATOR_GEOIP_H
#define ARV_AGGREGATOR_GEOIP_H

#include <stdbool.h>
#include <stddef.h>

#include "event.h"

/* Sizes of struct event's country and city fields (checked in geoip.c). */
#define GEOIP_COUNTRY_SIZE 3
#define GEOIP_CITY_SIZE    129

/* An opened database. Read-only once open: any number of threads may call
 * geoip_lookup() on one struct geoip at the same time (libmaxminddb lookups on
 * one MMDB_s are safe for concurrent readers; every lookup keeps its state on
 * its own stack). Only opening and closing must not race with lookups. */
struct geoip;

/* What a lookup found. "" means unknown. */
struct geoip_result {
    char country[GEOIP_COUNTRY_SIZE]; /* "GB": upper case, as event.country */
    char city[GEOIP_CITY_SIZE];       /* English name, UTF-8, truncated at a character */
};

/* Opens (memory-maps) the MaxMind DB file at `path` (borrowed) into a new *out,
 * which the caller frees with geoip_close(). Returns 0, or -errno with *out NULL:
 * the open(2) error (-ENOENT, -EACCES, ...) for a file that cannot be opened,
 * -EISDIR, -EINVAL for a file that is not a valid MaxMind DB (empty, truncated,
 * another format), -EIO or -ENOMEM. On failure,
 * when `err` is not NULL, writes a one-line reason naming the file into
 * err[0..errlen) (e.g. "/x/City.mmdb: No such file or directory"). Blocks on file
 * I/O: call at start-up, not on an event loop. */
int geoip_open(const char *path, struct geoip **out, char *err, size_t errlen);

/* Unmaps and frees `g`. NULL is fine. No lookup may be running. */
void geoip_close(struct geoip *g);

/* Looks up the numeric IPv4 or IPv6 address `ip` (borrowed; "::ffff:a.b.c.d" is
 * looked up as a.b.c.d) and fills *out. The country is the located country, else
 * the registered one; the city is its English name. Returns 0 when at least one
 * of them was found; -ENOENT when the database knows neither (private, reserved
 * and unlisted addresses: not an error); -EINVAL when `ip` is NULL or not a
 * numeric address; -EIO when the database file is damaged at that entry. *out is
 * always written ("" for what was not found). Thread-safe, never blocks (the
 * file is memory-mapped; a page may still have to be read in). Logs nothing. */
int geoip_lookup(const struct geoip *g, const char *ip, struct geoip_result *out);

/* Fills what the client left empty in `ev` from a lookup result `r` (both
 * borrowed): the country when ev->country is "", the city when ev->city is ""
 * and the event's country (as sent, or just filled) is the one the city lies in,
 * so a client's "FR" never gains "London". What the client sent is never
 * overwritten. Returns true when a field was filled. Pure. */
bool geoip_apply(const struct geoip_result *r, struct event *ev);

#endif
