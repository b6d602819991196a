/*
 * http - the daemon's small HTTP endpoint on libevent's evhttp, run on the front
 * event_base: RFC 8058 one-click unsubscribe, a confirmation page, health and
 * metrics.
 *
 *   POST /unsubscribe/<token>  one-click: the body must be
 *                              application/x-www-form-urlencoded or
 *                              multipart/form-data holding
 *                              List-Unsubscribe=One-Click.  A token that
 *                              verp_unsub_url_parse() accepts goes to the owner's
 *                              unsubscribe callback; the reply (200 text/plain)
 *                              waits for http_unsub_done(h, id, 0), and -1 gives
 *                              503 with Retry-After.  Bad token 400, no one-click
 *                              field 400, too many pending 503.
 *   GET  /unsubscribe/<token>  an HTML page naming the list with a form that
 *                              POSTs the one-click field; never unsubscribes
 *                              (link scanners fetch every URL in a message).
 *   GET  /health               200 {"status":"ok"}
 *   GET  /metrics              200 text/plain filled by the owner's callback
 *                              (404 when there is none)
 *
 * The token travels only in the path; "/unsubscribe?t=" is not a route (404), so
 * there is one form to verify, log and generate.  Any other path is 404; GET or
 * POST on a route that does not take it is 405 with Allow; other methods are
 * refused by evhttp itself with 501 before any handler runs.  Limits: headers
 * 8 KiB and body 16 KiB (evhttp answers 400/413), 10 s to read a request or write
 * a reply, at most HTTP_PENDING_MAX unsubscribes awaiting the owner, each for at
 * most HTTP_UNSUB_TIMEOUT_S (then 503; a later done is ignored).
 *
 * Asynchronous completions carry ids, never request pointers: the owner keeps the
 * req_id from its callback and hands it back to http_unsub_done(), which does
 * nothing when the request is gone (client closed, timed out, or the id is
 * unknown).  Single-threaded: every function runs on the base's thread.
 */
#ifndef VOLLEY_HTTP_H
#define VOLLEY_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "verp.h"

#define HTTP_PENDING_MAX     1024 /* unsubscribes awaiting the owner */
#define HTTP_UNSUB_TIMEOUT_S 30   /* owner deadline per unsubscribe */

struct event_base;
struct evbuffer;
struct http;

struct http_callbacks {
    /* unsubscribe - a verified one-click request: commit the suppression, then
     * call http_unsub_done(h, req_id, 0 or -1), now or later.  list and addr are
     * valid only during the call (copy them). */
    void (*unsubscribe)(void *arg, uint64_t req_id, const char *list, const char *addr,
                        uint64_t msgid);
    /* metrics - append the Prometheus text exposition to out; NULL -> 404 */
    void (*metrics)(void *arg, struct evbuffer *out);
    void *arg;
};

/*
 * http_start - listen on addr:port (an IPv4 or IPv6 literal, "[v6]" accepted, or
 * "localhost" = 127.0.0.1; port 0 picks a free port, see http_port) and serve on
 * base.  key and cb are copied.  Returns the server (free with http_free), or
 * NULL with a message in err.
 */
struct http *http_start(struct event_base *base, const char *addr, int port,
                        const struct verp_key *key, const struct http_callbacks *cb, char *err,
                        size_t errlen);

/* http_port - the bound TCP port, or -1 */
int http_port(struct http *h);

/*
 * http_unsub_done - the owner's answer for req_id: 0 replies 200, -1 replies 503
 * with Retry-After.  Unknown, finished or abandoned ids are ignored (logged at
 * debug), so a late answer is always safe while h lives.
 */
void http_unsub_done(struct http *h, uint64_t req_id, int result);

/*
 * http_free - stop listening, drop every connection and pending request (their
 * ids become unknown), free h.  The owner must not call http_unsub_done(h, ...)
 * afterwards.  NULL is a no-op.
 */
void http_free(struct http *h);

#endif
