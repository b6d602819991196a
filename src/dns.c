/*
 * dns - MX and address resolution for delivery, driven by c-ares on a libevent
 * loop, with a TTL-honouring route cache (see dns.h for the lookup contract).
 *
 * Owns: the c-ares channel of one loop, one event per c-ares socket plus one timer
 * (re-armed from ares_timeout() after every call into c-ares), the domain table
 * (cached answer and in-flight lookup per domain), the request table (id ->
 * request) and the delivery event.
 *
 * Entry points: dns_new, dns_free, dns_resolve, dns_cancel, dns_flush.
 *
 * Invariants:
 *   - A request is in exactly one place: waiting on its domain's lookup
 *     (DNS_REQ_WAIT), queued for delivery with a referenced answer (DNS_REQ_READY),
 *     or in the batch being delivered right now (DNS_REQ_DELIV).  It is always in
 *     the id table until it is delivered or cancelled.
 *   - User callbacks run only from dns_deliver_cb, a libevent callback of our own:
 *     never inside dns_resolve(), never inside a c-ares callback.  So a callback may
 *     call dns_resolve(), dns_cancel() and even dns_free() (the free is deferred to
 *     the end of the batch, Redis freeClientAsync style).
 *   - A domain entry exists while it has a cached answer or an in-flight lookup.
 *     At most one lookup per domain is in flight; later requests join it.
 *   - Answers are immutable and refcounted: the cache holds one reference, every
 *     READY/DELIV request holds one, so dns_flush() never pulls an answer from
 *     under a queued delivery.
 *   - A lookup keeps running when its last request is cancelled; its answer still
 *     fills the cache.  Only dns_free() abandons queries (ares_destroy()).
 */
#include "dns.h"

#include "util.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ares.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/time.h>
#include <unistd.h>

#define DNS_DEF_TIMEOUT_MS 2000
#define DNS_DEF_TRIES      2
#define DNS_DEF_MIN_TTL    60
#define DNS_DEF_MAX_TTL    86400
#define DNS_DEF_NEG_TTL    300
/* addresses of the other family kept per host even when the preferred family
 * alone could fill DNS_MAX_ADDRS, so that dual-stack fallback survives */
#define DNS_OTHER_FAMILY_RESERVE 2
/* the domain table is swept for expired answers when it doubles past this */
#define DNS_SWEEP_MIN 1024

/* dns_link - intrusive chaining for the two hash tables below */
struct dns_link {
    struct dns_link *next;
    uint64_t hash;
};

struct dns_tab {
    struct dns_link **bucket;
    size_t nbucket; /* power of two */
    size_t n;
};

union dns_sa {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
};

/* A host of an immutable answer: only the addresses it really has. */
struct dns_ahost {
    char *name;
    uint16_t pref;
    int naddr;
    union dns_sa *addr;
};

/*
 * dns_answer - the outcome of one lookup, shared by the cache and by the requests
 * waiting for delivery.  Hosts are sorted by preference (server order within a
 * preference); the shuffle happens per delivery.  Freed when refs drops to 0.
 */
struct dns_answer {
    int refs;
    enum DNS_STATUS status;
    bool implicit_mx;
    char error[160];
    int64_t expires_mono; /* cache end (mono_ms); meaningless for TEMPFAIL */
    int nhosts;
    struct dns_ahost *host;
};

/* Per-host scratch state while a lookup's A and AAAA queries are out. */
struct dns_lhost {
    char name[DNS_NAME_MAX];
    uint16_t pref;
    int n4, n6;
    struct sockaddr_in a4[DNS_MAX_ADDRS];
    struct sockaddr_in6 a6[DNS_MAX_ADDRS];
    uint32_t ttl; /* smallest address TTL seen, UINT32_MAX when none */
};

enum DNS_REQ_STATE {
    DNS_REQ_WAIT,
    DNS_REQ_READY,
    DNS_REQ_DELIV,
};

struct dns_lookup;

struct dns_req {
    struct dns_link link; /* id table; must stay first */
    uint64_t id;
    enum DNS_REQ_STATE state;
    TAILQ_ENTRY(dns_req) entry; /* lookup->waiters, d->ready or d->deliv */
    struct dns_lookup *lk;      /* DNS_REQ_WAIT */
    struct dns_answer *ans;     /* DNS_REQ_READY / DNS_REQ_DELIV, referenced */
    dns_resolve_cb cb;
    void *arg;
    char domain[DNS_NAME_MAX];
};
TAILQ_HEAD(dns_req_list, dns_req);

struct dns_dom;

/*
 * dns_lookup - the queries in flight for one domain.  pending counts outstanding
 * c-ares queries plus a guard held while queries are being issued, because c-ares
 * may call back synchronously from ares_query() (bad name, no memory).
 */
struct dns_lookup {
    struct dns *d;
    struct dns_dom *dom;
    struct dns_req_list waiters;
    int pending;
    enum DNS_STATUS status; /* decided early (MX stage) when != DNS_OK */
    bool decided;
    bool implicit_mx;
    bool temp; /* some address lookup failed temporarily */
    char error[160];
    uint32_t ttl; /* smallest MX TTL, UINT32_MAX when none */
    int nhosts;
    struct dns_lhost host[DNS_MAX_HOSTS];
};

struct dns_dom {
    struct dns_link link; /* domain table; must stay first */
    char name[DNS_NAME_MAX];
    struct dns_answer *ans; /* cached, referenced; NULL when none */
    struct dns_lookup *lk;  /* in flight; NULL when none */
};

/* One c-ares query; carries the lookup and which host / record type it is for. */
struct dns_query {
    struct dns_lookup *lk;
    int host; /* -1 for the MX query */
    int type;
};

struct dns_sock {
    struct dns_sock *next;
    ares_socket_t fd;
    struct event *ev;
};

struct dns {
    struct event_base *base;
    ares_channel channel;
    struct event *timer;
    struct event *deliver;
    struct dns_sock *socks;
    struct dns_tab doms;
    struct dns_tab reqs;
    struct dns_req_list ready;
    struct dns_req_list deliv;
    uint64_t next_id;
    uint64_t rng;
    size_t sweep_at;
    bool delivering;
    bool free_pending;
    int min_ttl, max_ttl, neg_ttl;
    bool prefer_ipv6;
    struct dns_route *route; /* scratch for the route handed to callbacks */
};

const char *dns_status_str(enum DNS_STATUS s)
{
    switch (s) {
    case DNS_OK:
        return "ok";
    case DNS_NXDOMAIN:
        return "nxdomain";
    case DNS_NULLMX:
        return "nullmx";
    case DNS_NOHOST:
        return "nohost";
    case DNS_TEMPFAIL:
        return "tempfail";
    }
    return "unknown";
}

/* ---- raw reply parsing (bounds-checked; fuzzed by tests/fuzz/fuzz_dns.c) ---- */

/* dns_get16 - big-endian 16-bit value at p */
static unsigned dns_get16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

/*
 * dns_skip_name - move *off past the (possibly compressed) name at *off.  Only
 * skips: a compression pointer ends the name here, so no loop can form.  -1 when
 * the name runs past the buffer, uses a reserved label type or exceeds 255 octets.
 */
static int dns_skip_name(const unsigned char *buf, size_t len, size_t *off)
{
    size_t o = *off, total = 0;

    for (;;) {
        if (o >= len) return -1;
        unsigned c = buf[o];
        if (c == 0) {
            *off = o + 1;
            return 0;
        }
        if ((c & 0xC0) == 0xC0) {
            if (len - o < 2) return -1;
            *off = o + 2;
            return 0;
        }
        if (c & 0xC0) return -1; /* 0x40 / 0x80: extended label types, never valid here */
        if (len - o - 1 < c) return -1;
        total += c + 1;
        if (total > 255) return -1;
        o += c + 1;
    }
}

int dns_answer_ttl(const unsigned char *abuf, size_t alen, int type, uint32_t *ttl)
{
    size_t off = 12;
    uint32_t best = UINT32_MAX;
    bool found = false;

    if (!abuf || alen < 12) return -1;
    unsigned qd = dns_get16(abuf + 4), an = dns_get16(abuf + 6);
    for (unsigned i = 0; i < qd; i++) {
        if (dns_skip_name(abuf, alen, &off) < 0 || alen - off < 4) return -1;
        off += 4;
    }
    for (unsigned i = 0; i < an; i++) {
        if (dns_skip_name(abuf, alen, &off) < 0 || alen - off < 10) return -1;
        unsigned rtype = dns_get16(abuf + off), rclass = dns_get16(abuf + off + 2);
        uint32_t t = (uint32_t)abuf[off + 4] << 24 | (uint32_t)abuf[off + 5] << 16 |
                     (uint32_t)abuf[off + 6] << 8 | abuf[off + 7];
        size_t rdlen = dns_get16(abuf + off + 8);
        off += 10;
        if (alen - off < rdlen) return -1;
        off += rdlen;
        if (rtype != (unsigned)type || rclass != ns_c_in) continue;
        /* RFC 2181 8: a TTL with the top bit set is to be read as zero */
        if (t > INT32_MAX) t = 0;
        if (t < best) best = t;
        found = true;
    }
    if (!found) return -1;
    *ttl = best;
    return 0;
}

/* ---- small helpers ---- */

/* dns_rand - xorshift64*: spreads load over equal MX preferences, not security */
static uint64_t dns_rand(struct dns *d)
{
    d->rng ^= d->rng >> 12;
    d->rng ^= d->rng << 25;
    d->rng ^= d->rng >> 27;
    return d->rng * 0x2545F4914F6CDD1DULL;
}

/* dns_hash_str - FNV-1a of a domain name (already lower case) */
static uint64_t dns_hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

/* dns_hash_id - mix a request id so sequential ids spread over buckets */
static uint64_t dns_hash_id(uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return id;
}

/*
 * dns_norm_name - copy name into out (DNS_NAME_MAX) lower-cased without a
 * trailing dot.  Only letters, digits, '-', '_' and non-empty labels pass: the
 * result goes into logs, SNI and certificate checks, and c-ares would read a
 * backslash as an escape.  -1 when the name is empty, too long or not a host name.
 */
static int dns_norm_name(const char *name, char *out)
{
    size_t n = strlen(name);

    if (n > 0 && name[n - 1] == '.') n--;
    if (n == 0 || n >= DNS_NAME_MAX || n > 253) return -1;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c == '.') {
            if (label == 0) return -1;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            if (++label > 63) return -1;
        } else {
            return -1;
        }
        out[i] = c;
    }
    out[n] = '\0';
    return 0;
}

/* dns_clamp_ttl - ttl (seconds) bounded to the configured [min_ttl, max_ttl] */
static int64_t dns_clamp_ttl(const struct dns *d, uint32_t ttl)
{
    int64_t t = ttl;
    if (t < d->min_ttl) t = d->min_ttl;
    if (t > d->max_ttl) t = d->max_ttl;
    return t;
}

/* ---- hash tables ---- */

/* dns_tab_init - an empty table with a few buckets */
static void dns_tab_init(struct dns_tab *t)
{
    t->nbucket = 64;
    t->bucket = xcalloc(t->nbucket, sizeof *t->bucket);
    t->n = 0;
}

/* dns_tab_insert - add l (hash already set); doubles the buckets at load 1 */
static void dns_tab_insert(struct dns_tab *t, struct dns_link *l)
{
    if (t->n >= t->nbucket) {
        size_t nb = t->nbucket * 2;
        struct dns_link **b = xcalloc(nb, sizeof *b);
        for (size_t i = 0; i < t->nbucket; i++) {
            struct dns_link *x = t->bucket[i], *next;
            for (; x; x = next) {
                next = x->next;
                x->next = b[x->hash & (nb - 1)];
                b[x->hash & (nb - 1)] = x;
            }
        }
        free(t->bucket);
        t->bucket = b;
        t->nbucket = nb;
    }
    struct dns_link **head = &t->bucket[l->hash & (t->nbucket - 1)];
    l->next = *head;
    *head = l;
    t->n++;
}

/* dns_tab_remove - unlink l, which must be in t */
static void dns_tab_remove(struct dns_tab *t, struct dns_link *l)
{
    struct dns_link **pp = &t->bucket[l->hash & (t->nbucket - 1)];
    while (*pp != l)
        pp = &(*pp)->next;
    *pp = l->next;
    t->n--;
}

/* dns_find_dom - the entry for a normalized domain name, or NULL */
static struct dns_dom *dns_find_dom(struct dns *d, const char *name)
{
    uint64_t h = dns_hash_str(name);
    for (struct dns_link *l = d->doms.bucket[h & (d->doms.nbucket - 1)]; l; l = l->next) {
        struct dns_dom *dom = (struct dns_dom *)l;
        if (l->hash == h && strcmp(dom->name, name) == 0) return dom;
    }
    return NULL;
}

/* dns_find_req - the pending request with this id, or NULL */
static struct dns_req *dns_find_req(struct dns *d, uint64_t id)
{
    uint64_t h = dns_hash_id(id);
    for (struct dns_link *l = d->reqs.bucket[h & (d->reqs.nbucket - 1)]; l; l = l->next) {
        struct dns_req *r = (struct dns_req *)l;
        if (r->id == id) return r;
    }
    return NULL;
}

/* ---- answers ---- */

/* dns_answer_unref - drop one reference; the last one frees the answer */
static void dns_answer_unref(struct dns_answer *a)
{
    if (!a || --a->refs > 0) return;
    for (int i = 0; i < a->nhosts; i++) {
        free(a->host[i].name);
        free(a->host[i].addr);
    }
    free(a->host);
    free(a);
}

/* dns_answer_fail - a new host-less answer (refs 1) with status and error text */
static struct dns_answer *dns_answer_fail(enum DNS_STATUS st, const char *error)
{
    struct dns_answer *a = xcalloc(1, sizeof *a);
    a->refs = 1;
    a->status = st;
    str_copy(a->error, sizeof a->error, error);
    return a;
}

/*
 * dns_merge_addrs - copy the addresses of lh into ah in delivery order: the
 * preferred family first, but with up to DNS_OTHER_FAMILY_RESERVE slots left for
 * the other one, server order within a family.  Caller frees ah->addr.
 */
static void dns_merge_addrs(const struct dns *d, const struct dns_lhost *lh, struct dns_ahost *ah)
{
    int n4 = lh->n4, n6 = lh->n6;
    int npref = d->prefer_ipv6 ? n6 : n4, nother = d->prefer_ipv6 ? n4 : n6;
    int reserve = nother < DNS_OTHER_FAMILY_RESERVE ? nother : DNS_OTHER_FAMILY_RESERVE;

    if (npref > DNS_MAX_ADDRS - reserve) npref = DNS_MAX_ADDRS - reserve;
    if (nother > DNS_MAX_ADDRS - npref) nother = DNS_MAX_ADDRS - npref;
    ah->addr = xcalloc((size_t)(npref + nother), sizeof *ah->addr);
    ah->naddr = 0;
    for (int pass = 0; pass < 2; pass++) {
        bool v6 = (pass == 0) == d->prefer_ipv6;
        int n = pass == 0 ? npref : nother;
        for (int i = 0; i < n; i++) {
            union dns_sa *sa = &ah->addr[ah->naddr++];
            if (v6)
                sa->in6 = lh->a6[i];
            else
                sa->in4 = lh->a4[i];
        }
    }
}

/*
 * dns_lookup_answer - turn a finished lookup into an answer (refs 1): the hosts
 * that have addresses, or the right failure.  Sets the cache lifetime: the
 * smallest TTL used, clamped; min_ttl alone when some address lookup failed
 * temporarily (so the missing host comes back soon); neg_ttl for hard failures.
 */
static struct dns_answer *dns_lookup_answer(struct dns_lookup *lk)
{
    struct dns *d = lk->d;
    const char *domain = lk->dom->name;
    struct dns_answer *a;
    char err[160];

    if (lk->decided) {
        a = dns_answer_fail(lk->status, lk->error);
        if (a->status != DNS_TEMPFAIL) a->expires_mono = mono_ms() + (int64_t)d->neg_ttl * 1000;
        return a;
    }

    a = xcalloc(1, sizeof *a);
    a->refs = 1;
    a->implicit_mx = lk->implicit_mx;
    a->host = xcalloc((size_t)lk->nhosts, sizeof *a->host);
    uint32_t ttl = lk->ttl;
    for (int i = 0; i < lk->nhosts; i++) {
        const struct dns_lhost *lh = &lk->host[i];
        if (lh->n4 + lh->n6 == 0) continue;
        struct dns_ahost *ah = &a->host[a->nhosts++];
        ah->name = xstrdup(lh->name);
        ah->pref = lh->pref;
        dns_merge_addrs(d, lh, ah);
        if (lh->ttl < ttl) ttl = lh->ttl;
    }
    if (a->nhosts > 0) {
        a->status = DNS_OK;
        int64_t secs = lk->temp ? d->min_ttl : dns_clamp_ttl(d, ttl);
        a->expires_mono = mono_ms() + secs * 1000;
        return a;
    }
    dns_answer_unref(a);
    if (lk->temp) return dns_answer_fail(DNS_TEMPFAIL, lk->error);
    if (lk->implicit_mx)
        snprintf(err, sizeof err, "%.120s has no MX record and no address", domain);
    else
        snprintf(err, sizeof err, "no MX host of %.120s has an address", domain);
    a = dns_answer_fail(DNS_NOHOST, err);
    a->expires_mono = mono_ms() + (int64_t)d->neg_ttl * 1000;
    return a;
}

/* ---- delivery ---- */

/* dns_queue_ready - hand req an answer (taking a reference) and schedule delivery */
static void dns_queue_ready(struct dns *d, struct dns_req *req, struct dns_answer *ans)
{
    ans->refs++;
    req->ans = ans;
    req->lk = NULL;
    req->state = DNS_REQ_READY;
    TAILQ_INSERT_TAIL(&d->ready, req, entry);
    event_active(d->deliver, EV_TIMEOUT, 0);
}

/*
 * dns_fill_route - build the caller's view of ans into d->route: hosts in
 * preference order with a fresh shuffle inside each preference, so that every
 * call (cached or not) spreads load over equal MX hosts.
 */
static void dns_fill_route(struct dns *d, const struct dns_answer *ans)
{
    struct dns_route *r = d->route;
    int order[DNS_MAX_HOSTS];

    memset(r, 0, offsetof(struct dns_route, host));
    r->status = ans->status;
    r->implicit_mx = ans->implicit_mx;
    if (ans->status != DNS_OK) str_copy(r->error, sizeof r->error, ans->error);
    int64_t left = ans->status == DNS_TEMPFAIL ? 0 : ans->expires_mono - mono_ms();
    r->expires_ms = now_ms() + (left > 0 ? left : 0);

    int n = ans->nhosts < DNS_MAX_HOSTS ? ans->nhosts : DNS_MAX_HOSTS;
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int start = 0; start < n;) {
        int end = start + 1;
        while (end < n && ans->host[end].pref == ans->host[start].pref)
            end++;
        for (int i = end - 1; i > start; i--) {
            int j = start + (int)(dns_rand(d) % (uint64_t)(i - start + 1));
            int t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        start = end;
    }
    r->nhosts = n;
    for (int i = 0; i < n; i++) {
        const struct dns_ahost *ah = &ans->host[order[i]];
        struct dns_host *h = &r->host[i];
        memset(h, 0, sizeof *h);
        str_copy(h->name, sizeof h->name, ah->name);
        h->pref = ah->pref;
        h->naddr = ah->naddr;
        for (int k = 0; k < ah->naddr; k++) {
            size_t sl = ah->addr[k].sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                             : sizeof(struct sockaddr_in);
            memcpy(&h->addr[k], &ah->addr[k], sl);
        }
    }
}

static void dns_destroy(struct dns *d);

/*
 * dns_deliver_cb - run the callbacks of the requests that were ready when the
 * event fired.  Requests made or readied by those callbacks go to the next round
 * (the event is re-activated), so a callback that resolves again cannot starve the
 * loop.  Each request leaves the id table before its callback, so cancelling it
 * from there is a harmless no-op.
 */
static void dns_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dns *d = arg;
    struct dns_req *req;

    TAILQ_CONCAT(&d->deliv, &d->ready, entry);
    for (req = TAILQ_FIRST(&d->deliv); req; req = TAILQ_NEXT(req, entry))
        req->state = DNS_REQ_DELIV;
    d->delivering = true;
    while ((req = TAILQ_FIRST(&d->deliv)) != NULL) {
        TAILQ_REMOVE(&d->deliv, req, entry);
        dns_tab_remove(&d->reqs, &req->link);
        dns_fill_route(d, req->ans);
        req->cb(req->arg, req->domain, d->route);
        dns_answer_unref(req->ans);
        free(req);
        if (d->free_pending) {
            dns_destroy(d);
            return;
        }
    }
    d->delivering = false;
    if (!TAILQ_EMPTY(&d->ready)) event_active(d->deliver, EV_TIMEOUT, 0);
}

/* ---- domains and lookups ---- */

/* dns_dom_release - free dom when it holds neither an answer nor a lookup */
static void dns_dom_release(struct dns *d, struct dns_dom *dom)
{
    if (dom->ans || dom->lk) return;
    dns_tab_remove(&d->doms, &dom->link);
    free(dom);
}

/*
 * dns_sweep - drop expired answers that no lookup is refreshing.  Run when the
 * table has doubled since the last sweep, so the cost is amortised O(1) per
 * insert and the table stays proportional to the live cache.
 */
static void dns_sweep(struct dns *d)
{
    int64_t now = mono_ms();

    for (size_t i = 0; i < d->doms.nbucket; i++) {
        struct dns_link *l = d->doms.bucket[i], *next;
        for (; l; l = next) {
            struct dns_dom *dom = (struct dns_dom *)l;
            next = l->next;
            if (dom->ans && dom->ans->expires_mono <= now) {
                dns_answer_unref(dom->ans);
                dom->ans = NULL;
                dns_dom_release(d, dom);
            }
        }
    }
    d->sweep_at = d->doms.n * 2 > DNS_SWEEP_MIN ? d->doms.n * 2 : DNS_SWEEP_MIN;
}

/*
 * dns_lookup_finish - the last query of lk is back: build the answer, cache it
 * unless it is a temporary failure, queue it for every waiter and free lk.
 */
static void dns_lookup_finish(struct dns_lookup *lk)
{
    struct dns *d = lk->d;
    struct dns_dom *dom = lk->dom;
    struct dns_answer *ans = dns_lookup_answer(lk);
    struct dns_req *req;

    dns_answer_unref(dom->ans);
    dom->ans = NULL;
    if (ans->status != DNS_TEMPFAIL) {
        ans->refs++;
        dom->ans = ans;
    }
    while ((req = TAILQ_FIRST(&lk->waiters)) != NULL) {
        TAILQ_REMOVE(&lk->waiters, req, entry);
        dns_queue_ready(d, req, ans);
    }
    dns_answer_unref(ans);
    dom->lk = NULL;
    free(lk);
    dns_dom_release(d, dom);
}

/* dns_lookup_put - one query (or the issuing guard) of lk is done */
static void dns_lookup_put(struct dns_lookup *lk)
{
    if (--lk->pending == 0) dns_lookup_finish(lk);
}

/* dns_lookup_decide - settle lk's outcome at the MX stage (no address queries) */
static void dns_lookup_decide(struct dns_lookup *lk, enum DNS_STATUS st, const char *error)
{
    lk->decided = true;
    lk->status = st;
    str_copy(lk->error, sizeof lk->error, error);
}

static void dns_addr_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen);
static void dns_mx_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* dns_query_start - send one query for lk; the reply goes to cb */
static void dns_query_start(struct dns_lookup *lk, const char *name, int host, int type,
                            ares_callback cb)
{
    struct dns_query *q = xmalloc(sizeof *q);
    q->lk = lk;
    q->host = host;
    q->type = type;
    lk->pending++;
    ares_query(lk->d->channel, name, ns_c_in, type, cb, q);
}

/* dns_lookup_addrs - send the A and AAAA queries of every host of lk */
static void dns_lookup_addrs(struct dns_lookup *lk)
{
    for (int i = 0; i < lk->nhosts; i++) {
        lk->host[i].ttl = UINT32_MAX;
        dns_query_start(lk, lk->host[i].name, i, ns_t_a, dns_addr_cb);
        dns_query_start(lk, lk->host[i].name, i, ns_t_aaaa, dns_addr_cb);
    }
}

struct dns_mx_sort {
    const struct ares_mx_reply *mx;
    size_t idx;
};

/* dns_mx_sort_cmp - stable preference order for qsort */
static int dns_mx_sort_cmp(const void *a, const void *b)
{
    const struct dns_mx_sort *x = a, *y = b;
    if (x->mx->priority != y->mx->priority) return x->mx->priority < y->mx->priority ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/*
 * dns_lookup_mx_hosts - fill lk's hosts from a parsed MX list: lowest preferences
 * first, duplicates (keeping the best preference) and invalid names dropped, at
 * most DNS_MAX_HOSTS.  A lone MX "." or "" is a null MX (RFC 7505); a "." among
 * other MX records is ignored as a broken host.
 */
static void dns_lookup_mx_hosts(struct dns_lookup *lk, struct ares_mx_reply *mx)
{
    const char *domain = lk->dom->name;
    char err[160];
    size_t n = 0;

    for (struct ares_mx_reply *m = mx; m; m = m->next)
        n++;
    if (n == 1 && (mx->host[0] == '\0' || strcmp(mx->host, ".") == 0)) {
        snprintf(err, sizeof err, "%.120s does not accept mail (null MX)", domain);
        dns_lookup_decide(lk, DNS_NULLMX, err);
        return;
    }
    struct dns_mx_sort *v = xcalloc(n, sizeof *v);
    n = 0;
    for (struct ares_mx_reply *m = mx; m; m = m->next) {
        v[n].mx = m;
        v[n].idx = n;
        n++;
    }
    qsort(v, n, sizeof *v, dns_mx_sort_cmp);
    for (size_t i = 0; i < n && lk->nhosts < DNS_MAX_HOSTS; i++) {
        char name[DNS_NAME_MAX];
        if (dns_norm_name(v[i].mx->host, name) < 0) continue;
        bool dup = false;
        for (int k = 0; k < lk->nhosts && !dup; k++)
            dup = strcmp(lk->host[k].name, name) == 0;
        if (dup) continue; /* sorted, so the copy kept has the best preference */
        struct dns_lhost *lh = &lk->host[lk->nhosts++];
        memcpy(lh->name, name, sizeof name);
        lh->pref = v[i].mx->priority;
    }
    free(v);
    if (lk->nhosts == 0) {
        snprintf(err, sizeof err, "no valid MX host name for %.120s", domain);
        dns_lookup_decide(lk, DNS_NOHOST, err);
    }
}

/*
 * dns_mx_cb - the MX reply: decide NXDOMAIN / null MX / TEMPFAIL, or collect the
 * hosts (the domain itself on NODATA) and ask for their addresses.
 */
static void dns_mx_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_query *q = arg;
    struct dns_lookup *lk = q->lk;
    struct ares_mx_reply *mx = NULL;
    const char *domain;
    char err[160];

    free(q);
    /* ares_destroy() from dns_free(): the lookup is freed there */
    if (status == ARES_EDESTRUCTION) return;
    domain = lk->dom->name;
    lk->pending++; /* guard: address queries may complete synchronously */
    if (status == ARES_SUCCESS) {
        /* ENODATA here: answers but no MX among them (a CNAME chain ending in
         * NODATA), the same as an empty answer */
        status = ares_parse_mx_reply(abuf, alen, &mx);
    }
    switch (status) {
    case ARES_SUCCESS: {
        uint32_t ttl;
        /* c-ares 1.18 has no TTL in ares_mx_reply, so read it from the reply; if
         * that fails on a reply c-ares accepted, min_ttl is the safe bound */
        if (dns_answer_ttl(abuf, (size_t)alen, ns_t_mx, &ttl) == 0)
            lk->ttl = ttl;
        else
            lk->ttl = (uint32_t)lk->d->min_ttl;
        dns_lookup_mx_hosts(lk, mx);
        if (!lk->decided) dns_lookup_addrs(lk);
        break;
    }
    case ARES_ENODATA:
        /* RFC 5321 5.1: no MX, the domain itself is the host, preference 0 */
        lk->implicit_mx = true;
        lk->nhosts = 1;
        memcpy(lk->host[0].name, lk->dom->name, sizeof lk->host[0].name);
        lk->host[0].pref = 0;
        dns_lookup_addrs(lk);
        break;
    case ARES_ENOTFOUND:
        /* ares_query maps rcode NXDOMAIN to ENOTFOUND; make sure the server said so
         * before bouncing, anything else is not proof the domain is gone */
        if (abuf && alen >= 4 && (abuf[3] & 0x0F) == ns_r_nxdomain) {
            snprintf(err, sizeof err, "domain %.120s does not exist (NXDOMAIN)", domain);
            dns_lookup_decide(lk, DNS_NXDOMAIN, err);
        } else {
            snprintf(err, sizeof err, "MX lookup for %.100s: %s", domain, ares_strerror(status));
            dns_lookup_decide(lk, DNS_TEMPFAIL, err);
        }
        break;
    case ARES_EBADNAME:
        snprintf(err, sizeof err, "invalid domain name %.120s", domain);
        dns_lookup_decide(lk, DNS_NXDOMAIN, err);
        break;
    default:
        /* SERVFAIL, REFUSED, timeout, connection refused, bad reply, no memory */
        snprintf(err, sizeof err, "MX lookup for %.100s: %s", domain, ares_strerror(status));
        dns_lookup_decide(lk, DNS_TEMPFAIL, err);
        break;
    }
    if (mx) ares_free_data(mx);
    dns_lookup_put(lk); /* the guard */
    dns_lookup_put(lk); /* the MX query itself */
}

/*
 * dns_addr_cb - an A or AAAA reply for one host.  No address (NODATA, NXDOMAIN,
 * only a CNAME) just leaves the host empty; other failures mark the lookup
 * temporary so that an all-empty result is TEMPFAIL rather than NOHOST.
 */
static void dns_addr_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_query *q = arg;
    struct dns_lookup *lk = q->lk;
    int type = q->type;
    struct dns_lhost *lh;

    if (status == ARES_EDESTRUCTION) {
        free(q);
        return;
    }
    lh = &lk->host[q->host];
    free(q);
    if (status == ARES_SUCCESS) {
        int n = DNS_MAX_ADDRS, st;
        if (type == ns_t_a) {
            struct ares_addrttl at[DNS_MAX_ADDRS];
            st = ares_parse_a_reply(abuf, alen, NULL, at, &n);
            for (int i = 0; st == ARES_SUCCESS && i < n; i++) {
                struct sockaddr_in *sin = &lh->a4[lh->n4++];
                memset(sin, 0, sizeof *sin);
                sin->sin_family = AF_INET;
                sin->sin_addr = at[i].ipaddr;
                if (at[i].ttl >= 0 && (uint32_t)at[i].ttl < lh->ttl) lh->ttl = (uint32_t)at[i].ttl;
            }
        } else {
            struct ares_addr6ttl at[DNS_MAX_ADDRS];
            st = ares_parse_aaaa_reply(abuf, alen, NULL, at, &n);
            for (int i = 0; st == ARES_SUCCESS && i < n; i++) {
                struct sockaddr_in6 *sin6 = &lh->a6[lh->n6++];
                memset(sin6, 0, sizeof *sin6);
                sin6->sin6_family = AF_INET6;
                memcpy(&sin6->sin6_addr, &at[i].ip6addr, sizeof sin6->sin6_addr);
                if (at[i].ttl >= 0 && (uint32_t)at[i].ttl < lh->ttl) lh->ttl = (uint32_t)at[i].ttl;
            }
        }
        status = st;
    }
    if (status != ARES_SUCCESS && status != ARES_ENODATA && status != ARES_ENOTFOUND) {
        if (!lk->temp)
            snprintf(lk->error, sizeof lk->error, "%s lookup for %.100s: %s",
                     type == ns_t_a ? "A" : "AAAA", lh->name, ares_strerror(status));
        lk->temp = true;
    }
    dns_lookup_put(lk);
}

/* ---- c-ares on the loop ---- */

/* dns_timer_arm - (re)arm the timer from ares_timeout(); idle when no query is out */
static void dns_timer_arm(struct dns *d)
{
    struct timeval tv, *tvp = ares_timeout(d->channel, NULL, &tv);
    if (tvp)
        event_add(d->timer, tvp);
    else
        event_del(d->timer);
}

/* dns_timer_cb - let c-ares retry or expire the queries whose time is up */
static void dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dns *d = arg;
    ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    dns_timer_arm(d);
}

/*
 * dns_sock_cb - a c-ares socket is ready.  arg is the resolver, not the dns_sock:
 * c-ares may close this very socket (and dns_sock_state_cb free its record) while
 * processing it.
 */
static void dns_sock_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dns *d = arg;
    ares_process_fd(d->channel, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    dns_timer_arm(d);
}

/*
 * dns_sock_state_cb - c-ares opened, closed or changed interest in a socket: keep
 * exactly one persistent event per socket with the interest c-ares wants.  c-ares
 * reports (0, 0) before it closes the fd, so the event never outlives the fd.
 */
static void dns_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *d = data;
    struct dns_sock **pp = &d->socks, *s;

    while (*pp && (*pp)->fd != fd)
        pp = &(*pp)->next;
    s = *pp;
    if (s) {
        event_free(s->ev);
        s->ev = NULL;
    }
    if (!readable && !writable) {
        if (s) {
            *pp = s->next;
            free(s);
        }
        return;
    }
    if (!s) {
        s = xcalloc(1, sizeof *s);
        s->fd = fd;
        s->next = d->socks;
        d->socks = s;
    }
    short ev = EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
    s->ev = event_new(d->base, fd, ev, dns_sock_cb, d);
    if (!s->ev) abort(); /* out of memory: the daemon's policy */
    event_add(s->ev, NULL);
}

/* ---- public API ---- */

struct dns *dns_new(struct event_base *base, const struct dns_params *p, char *err, size_t errsz)
{
    struct ares_options opts;
    int st;

    struct dns *d = xcalloc(1, sizeof *d);
    d->base = base;
    d->min_ttl = p->min_ttl > 0 ? p->min_ttl : DNS_DEF_MIN_TTL;
    d->max_ttl = p->max_ttl > 0 ? p->max_ttl : DNS_DEF_MAX_TTL;
    if (d->max_ttl < d->min_ttl) d->max_ttl = d->min_ttl;
    d->neg_ttl = p->neg_ttl > 0 ? p->neg_ttl : DNS_DEF_NEG_TTL;
    d->prefer_ipv6 = p->prefer_ipv6;
    d->rng = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)d;
    if (d->rng == 0) d->rng = 0x9E3779B97F4A7C15ULL;
    d->sweep_at = DNS_SWEEP_MIN;
    dns_tab_init(&d->doms);
    dns_tab_init(&d->reqs);
    TAILQ_INIT(&d->ready);
    TAILQ_INIT(&d->deliv);
    d->route = xmalloc(sizeof *d->route);

    /* No ares_library_init(): on POSIX it only sets allocator hooks that default
     * to malloc anyway, and its refcount is not thread-safe while every delivery
     * worker creates its resolver in parallel. */
    memset(&opts, 0, sizeof opts);
    opts.sock_state_cb = dns_sock_state_cb;
    opts.sock_state_cb_data = d;
    opts.timeout = p->timeout_ms > 0 ? p->timeout_ms : DNS_DEF_TIMEOUT_MS;
    opts.tries = p->tries > 0 ? p->tries : DNS_DEF_TRIES;
    st = ares_init_options(&d->channel, &opts,
                           ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (st != ARES_SUCCESS) {
        snprintf(err, errsz, "c-ares init: %s", ares_strerror(st));
        d->channel = NULL;
        goto fail;
    }
    if (p->servers && p->nservers > 0) {
        size_t len = 1;
        for (int i = 0; i < p->nservers; i++)
            len += strlen(p->servers[i]) + 1;
        char *csv = xmalloc(len), *w = csv;
        for (int i = 0; i < p->nservers; i++) {
            size_t n = strlen(p->servers[i]);
            if (i > 0) *w++ = ',';
            memcpy(w, p->servers[i], n);
            w += n;
        }
        *w = '\0';
        st = ares_set_servers_ports_csv(d->channel, csv);
        if (st != ARES_SUCCESS) {
            snprintf(err, errsz, "dns servers \"%s\": %s", csv, ares_strerror(st));
            free(csv);
            goto fail;
        }
        free(csv);
    }
    d->timer = evtimer_new(base, dns_timer_cb, d);
    d->deliver = event_new(base, -1, 0, dns_deliver_cb, d);
    if (!d->timer || !d->deliver) {
        snprintf(err, errsz, "dns: cannot create events");
        goto fail;
    }
    return d;

fail:
    dns_destroy(d);
    return NULL;
}

/*
 * dns_destroy - free everything now: abandon the queries (their c-ares callbacks
 * see ARES_EDESTRUCTION and only free their own record), then the lookups,
 * requests and cache.  No user callback runs.
 */
static void dns_destroy(struct dns *d)
{
    if (d->channel) ares_destroy(d->channel); /* reports every socket closed first */
    while (d->socks) {
        struct dns_sock *s = d->socks;
        d->socks = s->next;
        if (s->ev) event_free(s->ev);
        free(s);
    }
    for (size_t i = 0; i < d->reqs.nbucket; i++) {
        struct dns_link *l = d->reqs.bucket[i], *next;
        for (; l; l = next) {
            struct dns_req *req = (struct dns_req *)l;
            next = l->next;
            if (req->state != DNS_REQ_WAIT) dns_answer_unref(req->ans);
            free(req);
        }
    }
    for (size_t i = 0; i < d->doms.nbucket; i++) {
        struct dns_link *l = d->doms.bucket[i], *next;
        for (; l; l = next) {
            struct dns_dom *dom = (struct dns_dom *)l;
            next = l->next;
            dns_answer_unref(dom->ans);
            free(dom->lk);
            free(dom);
        }
    }
    free(d->reqs.bucket);
    free(d->doms.bucket);
    if (d->timer) event_free(d->timer);
    if (d->deliver) event_free(d->deliver);
    free(d->route);
    free(d);
}

void dns_free(struct dns *d)
{
    if (!d) return;
    if (d->delivering) {
        /* called from a dns_resolve_cb: dns_deliver_cb frees once it returns */
        d->free_pending = true;
        return;
    }
    dns_destroy(d);
}

uint64_t dns_resolve(struct dns *d, const char *domain, dns_resolve_cb cb, void *arg)
{
    struct dns_req *req = xcalloc(1, sizeof *req);
    char name[DNS_NAME_MAX];

    req->id = ++d->next_id;
    req->cb = cb;
    req->arg = arg;
    req->link.hash = dns_hash_id(req->id);
    dns_tab_insert(&d->reqs, &req->link);

    if (dns_norm_name(domain, name) < 0) {
        char err[160];
        snprintf(err, sizeof err, "invalid domain name \"%.100s\"", domain);
        str_copy(req->domain, sizeof req->domain, domain);
        struct dns_answer *a = dns_answer_fail(DNS_NXDOMAIN, err);
        dns_queue_ready(d, req, a);
        dns_answer_unref(a); /* not cached: it says nothing about the DNS */
        return req->id;
    }
    memcpy(req->domain, name, sizeof name);

    struct dns_dom *dom = dns_find_dom(d, name);
    if (dom && dom->ans && dom->ans->expires_mono > mono_ms()) {
        dns_queue_ready(d, req, dom->ans);
        return req->id;
    }
    if (dom && dom->lk) {
        req->state = DNS_REQ_WAIT;
        req->lk = dom->lk;
        TAILQ_INSERT_TAIL(&dom->lk->waiters, req, entry);
        return req->id;
    }
    if (!dom) {
        if (d->doms.n >= d->sweep_at) dns_sweep(d);
        dom = xcalloc(1, sizeof *dom);
        memcpy(dom->name, name, sizeof name);
        dom->link.hash = dns_hash_str(name);
        dns_tab_insert(&d->doms, &dom->link);
    }
    /* an expired answer is kept until the new one replaces it in
     * dns_lookup_finish; it is never served once expired */
    struct dns_lookup *lk = xcalloc(1, sizeof *lk);
    lk->d = d;
    lk->dom = dom;
    lk->ttl = UINT32_MAX;
    TAILQ_INIT(&lk->waiters);
    dom->lk = lk;
    req->state = DNS_REQ_WAIT;
    req->lk = lk;
    TAILQ_INSERT_TAIL(&lk->waiters, req, entry);
    lk->pending = 1; /* guard: the MX callback may run inside ares_query() */
    dns_query_start(lk, name, -1, ns_t_mx, dns_mx_cb);
    dns_lookup_put(lk);
    dns_timer_arm(d);
    return req->id;
}

void dns_cancel(struct dns *d, uint64_t id)
{
    struct dns_req *req = dns_find_req(d, id);

    if (!req) return; /* delivered, cancelled already, or never issued */
    dns_tab_remove(&d->reqs, &req->link);
    switch (req->state) {
    case DNS_REQ_WAIT:
        TAILQ_REMOVE(&req->lk->waiters, req, entry);
        break;
    case DNS_REQ_READY:
        TAILQ_REMOVE(&d->ready, req, entry);
        dns_answer_unref(req->ans);
        break;
    case DNS_REQ_DELIV:
        TAILQ_REMOVE(&d->deliv, req, entry);
        dns_answer_unref(req->ans);
        break;
    }
    free(req);
}

void dns_flush(struct dns *d)
{
    for (size_t i = 0; i < d->doms.nbucket; i++) {
        struct dns_link *l = d->doms.bucket[i], *next;
        for (; l; l = next) {
            struct dns_dom *dom = (struct dns_dom *)l;
            next = l->next;
            dns_answer_unref(dom->ans);
            dom->ans = NULL;
            dns_dom_release(d, dom);
        }
    }
}
