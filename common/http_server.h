/* The HTTP/1.1 server every daemon shares: a libevent loop with the llhttp
 * parser. Keep-alive and pipelining (answers in request order), size limits,
 * idle and per-request deadlines, a connection cap, exact-path routing, and
 * handlers that may answer later (after a Redis or PostgreSQL reply). */
#ifndef ARV_HTTP_SERVER_H
#define ARV_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct metrics;
struct http_server;
struct http_request;
struct strbuf;

enum http_method {
    HTTP_GET = 1 << 0,
    HTTP_HEAD = 1 << 1,
    HTTP_POST = 1 << 2,
    HTTP_PUT = 1 << 3,
    HTTP_DELETE = 1 << 4,
    HTTP_OPTIONS = 1 << 5,
    HTTP_OTHER = 1 << 6
};

struct http_server_limits {
    size_t max_header_bytes;     /* request line + headers; 431 past it */
    size_t max_body_bytes;       /* 413 past it */
    unsigned max_connections;    /* new connections past it are closed at once */
    unsigned idle_timeout_ms;    /* keep-alive connection with no request */
    unsigned request_timeout_ms; /* absolute: first byte to complete request read, else 408 */
    size_t max_buffered_bytes;   /* requests' buffers of every connection of the process
                                  * together: a request growing its buffer past 64 KiB
                                  * beyond it gets 503 (0: no limit) */
};

/* Limits used when a caller passes NULL: 16 KiB headers, 1 MiB body, 10,000
 * connections, 60 s idle, 10 s per request, 256 MiB of request buffers. */
extern const struct http_server_limits http_server_default_limits;

/* The same for a server whose routes are all GETs (the reporter's, the
 * aggregator's): a body is never read, so none is buffered past 16 KiB (1 MiB
 * per connection let one client pin gigabytes across max_connections). */
extern const struct http_server_limits http_server_get_limits;

/* A handler receives a request it must answer exactly once with http_respond()
 * (now or later, from the same event loop). The request stays valid until then,
 * even if the client goes away meanwhile. */
typedef void http_handler(struct http_request *req, void *arg);

/* Creates a server on `base` (borrowed). `limits` is copied (NULL: defaults).
 * `m` (borrowed, may be NULL) receives http_requests_total{route,method,status}
 * and http_request_duration_seconds{route,status}.
 * Caller frees with http_server_free(). */
struct http_server *http_server_new(struct event_base *base,
                                    const struct http_server_limits *limits, struct metrics *m);

/* Binds and listens on host:port (numeric host; port 0: one the kernel picks).
 * The socket has SO_REUSEADDR and SO_REUSEPORT, so that the process's other
 * loops can share the port (http_server_listen_beside()), but the address must
 * be free: a socket listening there, even another process's with
 * SO_REUSEPORT, gives -EADDRINUSE. Returns 0 or a negative errno. */
int http_server_listen(struct http_server *s, const char *host, uint16_t port);

/* Listens on the address `first` (borrowed) listens on, as one more socket of
 * its port, for another loop of this process: the kernel spreads the port's
 * connections over them. Returns 0, -EINVAL when `first` does not listen, or
 * a negative errno. */
int http_server_listen_beside(struct http_server *s, const struct http_server *first);

/* Port actually bound (useful after listening on port 0), or 0. */
uint16_t http_server_port(const struct http_server *s);

/* Routes requests whose path (without query) equals `path`, or starts with it
 * when `prefix` is true, to `h`. `methods` is a mask of enum http_method; others
 * get 405 with Allow. HEAD is served by GET routes. Routes are tried in
 * registration order. `path` is borrowed. Returns 0 or -ENOMEM. */
int http_server_route(struct http_server *s, unsigned methods, const char *path, bool prefix,
                      http_handler *h, void *arg);

/* `fn(req, arg)` is called before every error the server answers itself (a
 * request it cannot read or will not take: 400, 408, 413, 431, 501, ...), with
 * what was read of the request (its headers may be missing), to add headers
 * to the answer (http_request_add_header), such as CORS ones. */
void http_server_on_error(struct http_server *s, http_handler *fn, void *arg);

/* Stops accepting new connections and closes idle keep-alive ones; requests in
 * flight are still answered (then their connections close). */
void http_server_stop_accepting(struct http_server *s);

/* Requests received and not yet answered, plus answers not yet fully written,
 * across all connections, plus, once stopping, requests still arriving: 0
 * means a drain can end without losing a reply. From 3 s after
 * http_server_stop_accepting() on, answers not yet taken by their clients and
 * requests not yet complete no longer count (a client that stopped reading or
 * sending would hold the drain for ever). */
size_t http_server_inflight(const struct http_server *s);

/* Request bytes read and not yet parsed, across all connections (at most
 * 64 KiB each, however many requests a client pipelines). For diagnostics and
 * tests; from the loop's thread. */
size_t http_server_buffered_input(const struct http_server *s);

/* Closes every connection and frees the server. Requests still unanswered are
 * dropped (their handlers must not answer afterwards). NULL is fine. */
void http_server_free(struct http_server *s);

/* Request accessors. Returned strings are borrowed from the request and valid
 * until it is answered. */
enum http_method http_request_method(const struct http_request *req);
const char *
http_request_path(const struct http_request *req); /* raw (not decoded), without query */
const char *http_request_query(const struct http_request *req); /* after '?', or "" */
const char *
http_request_route(const struct http_request *req); /* matched route path, or "unmatched" */
/* Case-insensitive header lookup; NULL if absent. Repeated headers: the first. */
const char *http_request_header(const struct http_request *req, const char *name);

/* The value of header `name` (case-insensitive), or NULL without one. Several
 * lines of a list header are one list (RFC 9110, 5.3): joined in order with
 * ", " in `scratch` (reset first), NULL with scratch->oom set when out of
 * memory. A single line is returned as is, without a copy. */
const char *http_request_header_list(const struct http_request *req, const char *name,
                                     struct strbuf *scratch);
const char *http_request_body(const struct http_request *req, size_t *len); /* NUL-terminated */
const char *http_request_peer(const struct http_request *req); /* numeric peer address */
/* True once the client has disconnected; an answer would be discarded. */
bool http_request_client_gone(const struct http_request *req);
/* Finds query parameter `name` (its name URL-decoded too) and URL-decodes its
 * value into `out` (size `outlen`). Returns 1 if present and it fit, 0 if
 * absent, -1 if present but its value did not fit or is not valid URL
 * encoding. */
int http_request_query_param(const struct http_request *req, const char *name, char *out,
                             size_t outlen);

/* Adds a response header (both strings copied) to the answer of `req`.
 * Call before http_respond(). */
void http_request_add_header(struct http_request *req, const char *name, const char *value);

/* Answers `req` with `status`, a Content-Type (NULL: none) and a body (copied;
 * may be NULL with len 0). Exactly once per request; afterwards `req` is gone.
 * Also logs http_request_completed and records metrics. */
void http_respond(struct http_request *req, int status, const char *content_type, const char *body,
                  size_t len);

/* http_respond() with application/json and a NUL-terminated body. */
void http_respond_json(struct http_request *req, int status, const char *json);

/* Answers {"error":code,"message":message} (plus "field" when not NULL) as JSON. */
void http_respond_error(struct http_request *req, int status, const char *code, const char *field,
                        const char *message);

#endif
