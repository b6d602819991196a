/*
 * dns - asynchronous MX and address resolution for delivery (c-ares driven by a
 * libevent loop), with a cache that honours TTLs.
 *
 * One struct dns per event loop (each delivery worker has its own), never shared
 * between threads.  c-ares runs on the loop through ARES_OPT_SOCK_STATE_CB (one
 * event per c-ares socket) plus a timer re-armed from ares_timeout().  Results are
 * ALWAYS delivered asynchronously, from the loop, never inside dns_resolve() -
 * also for cache hits - so callers never re-enter themselves.
 *
 * What a lookup of a destination domain does (RFC 5321 5.1, RFC 7505):
 *   1. MX query for the domain.
 *      - NXDOMAIN                      -> DNS_NXDOMAIN (hard: bounce 5.1.2)
 *      - a single MX "." (null MX)     -> DNS_NULLMX   (hard: bounce 5.1.10)
 *      - no MX records (NODATA)        -> the domain itself is the only host,
 *                                         preference 0 (implicit MX)
 *      - SERVFAIL, REFUSED, timeout    -> DNS_TEMPFAIL (defer)
 *   2. A and AAAA for every MX host (in parallel).  A host with no address is
 *      skipped; when no host has an address the result is DNS_TEMPFAIL when some
 *      lookup failed temporarily, else DNS_NOHOST (hard: bounce 5.4.4).
 *   3. Hosts sorted by preference; hosts of equal preference shuffled (a fresh
 *      shuffle for every dns_resolve() call, also for cached answers, so load
 *      spreads); addresses of a host: the order the server gave, IPv4 first unless
 *      prefer_ipv6.
 * Cache: the route is kept until the smallest TTL among the MX and address records
 * it used (clamped to [min_ttl, max_ttl]).  NXDOMAIN / null MX / no host are
 * cached for neg_ttl; temporary failures are not cached.
 */
#ifndef VOLLEY_DNS_H
#define VOLLEY_DNS_H

#include <event2/event.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define DNS_MAX_HOSTS 16
#define DNS_MAX_ADDRS 8 /* per host */
#define DNS_NAME_MAX  256

enum DNS_STATUS {
    DNS_OK = 0,
    DNS_NXDOMAIN, /* domain does not exist */
    DNS_NULLMX,   /* RFC 7505: domain accepts no mail */
    DNS_NOHOST,   /* MX hosts exist but none has an address */
    DNS_TEMPFAIL, /* SERVFAIL, timeout, refused: try later */
};
/* dns_status_str - "ok", "nxdomain", "nullmx", "nohost", "tempfail" */
const char *dns_status_str(enum DNS_STATUS s);

struct dns_host {
    char name[DNS_NAME_MAX]; /* lower case, no trailing dot */
    uint16_t pref;
    int naddr;
    struct sockaddr_storage addr[DNS_MAX_ADDRS]; /* port 0: the caller sets it */
};

struct dns_route {
    enum DNS_STATUS status;
    char error[160];  /* human text for logs and bounce diagnostics when status != OK */
    bool implicit_mx; /* no MX record: the domain's own address */
    int nhosts;
    struct dns_host host[DNS_MAX_HOSTS];
    int64_t expires_ms; /* wall clock (now_ms) when the cached answer ends */
};

struct dns_params {
    const char *const *servers; /* NULL or "ip[:port]" list overriding resolv.conf */
    int nservers;
    int timeout_ms; /* per try (default 2000 when 0) */
    int tries;      /* default 2 when 0 */
    int min_ttl;    /* seconds, default 60 when 0 */
    int max_ttl;    /* seconds, default 86400 when 0 */
    int neg_ttl;    /* seconds, default 300 when 0 */
    bool prefer_ipv6;
};

struct dns;

/*
 * dns_new - a resolver on base.  servers override /etc/resolv.conf (tests point it
 * at their own DNS server).  NULL with err filled on failure.
 */
struct dns *dns_new(struct event_base *base, const struct dns_params *p, char *err, size_t errsz);
/* dns_free - cancel every pending lookup (their callbacks are NOT called) and free */
void dns_free(struct dns *d);

/*
 * dns_resolve_cb - the answer for domain.  route is valid only during the call
 * (copy what you keep).  Called once per dns_resolve(), on the loop, unless the
 * request was cancelled.
 */
typedef void (*dns_resolve_cb)(void *arg, const char *domain, const struct dns_route *route);

/*
 * dns_resolve - look up the route to domain (lower case, no trailing dot).  Returns
 * a request id (never 0) for dns_cancel().  Concurrent lookups of the same domain
 * share one set of queries.
 */
uint64_t dns_resolve(struct dns *d, const char *domain, dns_resolve_cb cb, void *arg);
/* dns_cancel - forget a pending request; its callback will not run */
void dns_cancel(struct dns *d, uint64_t req);
/* dns_flush - drop the cache (volleyctl retry, tests) */
void dns_flush(struct dns *d);

/*
 * dns_answer_ttl - the smallest TTL of the answer-section records of type (class
 * IN) in a raw DNS reply, bounds-checked.  0 with *ttl set, -1 when the reply is
 * malformed or has no such record.  c-ares 1.18 reports no MX TTL, so dns.c reads
 * it here; exported for tests/fuzz/fuzz_dns.c.
 */
int dns_answer_ttl(const unsigned char *abuf, size_t alen, int type, uint32_t *ttl);

#endif
