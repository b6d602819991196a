/*
 * sched_queue - delivery scheduling for one worker (see sched_queue.h for the model).
 *
 * Objects and who owns them:
 *   struct sched_msg     envelope of a message with recipients in memory; refcounted
 *                        by its jobs
 *   struct sched_job     one transaction's worth: a message, a domain, recipients.
 *                        Owned by whatever queue it sits on (domain wait list, site
 *                        queue), then by its connection, then by its outcome op.
 *   struct sched_domain  a recipient domain: its site (once resolved) and the jobs
 *                        waiting for DNS.  Lives as long as the scheduler.
 *   struct sched_site    MX hosts, a job FIFO, the connection pool, down state.
 *   struct sched_conn    one smtpc session and the job it is sending.
 * Recipients in memory are also in the in-flight set (message id, index), so the
 * loader never picks the same recipient twice while it is being worked on; a
 * recipient leaves the set when the spool has committed its outcome.
 *
 * The loader resumes after the last due key it saw.  Keys that land behind that
 * cursor (a message committed a moment after a later one was scanned) are found
 * by a rewind scan over the last few seconds once a second, and by a full rescan
 * once a minute; the in-flight set makes re-visits harmless.
 */
#include "sched_queue.h"
#include "dsn.h"
#include "engine.h"
#include "bounce_class.h"
#include "dkim.h"
#include "signpool.h"
#include "mime7.h"
#include "msg_header.h"
#include "feedback.h"
#include "suppress.h"
#include "log.h"
#include "msgid.h"
#include "shape.h"
#include "smtpc.h"
#include "util.h"
#include "warmup.h"

#include <arpa/inet.h>
#include <fnmatch.h>
#include <idn2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#define SCHED_SCAN_BATCH   1024
#define SCHED_TICK_BUSY_MS 20
#define SCHED_TICK_IDLE_MS 250
#define SCHED_REWIND_MS    3000
#define SCHED_FULL_SCAN_MS 60000
/* a job whose source cannot send within this long may go out from another source
 * of its pool (a suspension, a warm-up cap, a backoff far below the others) */
#define SCHED_REASSIGN_MS  1000
/* a job no source of its pool can send within this long (suspension, warm-up cap)
 * goes back to the spool until then instead of holding a ready slot */
#define SCHED_HOLD_MAX_MS  60000
/* jobs looked at per dispatch when choosing sources for new connections */
#define SCHED_OPEN_SCAN    64
#define SCHED_DSN_MAX      (256 * 1024) /* a notice copies at most 64 KB of headers */

struct sched_msg {
    uint64_t id;
    char *sender;
    char *campaign;
    uint32_t flags;
    int64_t created_ms;
    char *pool; /* X-Volley-Pool given at injection, "" = by the rules */
    char *list; /* X-Volley-List given at injection, "" = none */
    int refs;
    /* the body hash of its last DKIM signature: the next recipient's copy (VERP
     * and unsubscribe headers differ, the body does not) and the next key reuse it */
    struct dkim_body_cache dkim_bh;
};

struct sched_rcpt {
    uint32_t idx;
    uint16_t attempts;
    char *addr;
};

struct sched_job {
    struct sched_msg *msg;
    struct sched_domain *dom;
    struct sched_rcpt *rcpts;
    uint32_t nrcpt, cap;
    struct sched_job *next;
    const struct shape_pool *pool; /* valid while pool_gen == the scheduler's rules_gen */
    unsigned pool_gen;
    int src; /* the source of its pool it is meant for (weighted turn), -1 = any */
    int64_t hold_until_ms; /* set: settle as deferred until then (no source can send) */
    char *mail_from;       /* the VERP return path, NULL = the message's sender */
    uint8_t *warm_key;     /* the warm-up count it took (warmup_key), NULL if none: it
                              goes to the outcome op, or is given back unsent */
    size_t warm_keylen;
    json_t *dkim; /* "domain/selector" of each DKIM signature it carries (for the
                     accounting records); NULL = unsigned */
    struct sched_sign *sign; /* its signatures are being made on a signing thread:
                                the text is there, not in content */

    /* while being sent */
    const char **rcpt_ptrs;
    struct smtpc_reply *replies;
    struct smtpc_txn txn;
    struct vbuf content;
    struct vbuf sigs; /* its DKIM-Signature fields, sent in front of content */
};

struct sched_host {
    char *name;
    uint16_t pref;
    int naddr;
    struct sockaddr_storage *addr;
};

/* One (source, site) pair: its connections and its shaping state.  Pairs live as
 * long as their site (connections point at them); a source dropped by a reload
 * keeps its pair with src = -1 and opens nothing new. */
struct sched_pair {
    char source[SHAPE_NAME_MAX];
    int src; /* index of the source in the current rule set, -1 when gone */
    int nconn;
    struct shape_state st;
    /* messages sent in each of the last 60 seconds (ring indexed by second), for
     * the "last minute" figure volleyctl sites shows */
    uint32_t sec_sent[60];
    int64_t sec_last;
    int64_t day, sent_today; /* messages today (UTC), for volleyctl sites */
};

/*
 * A site's queue is made of lanes: the jobs of one domain, one pool and one meant
 * source (job->src, under one rule set), in FIFO order.  Picks and dispatch look at
 * lanes, so a domain at its connection limit or a lane meant for another source is
 * passed over once, not once per queued job: with one FIFO per site a backlog of n
 * jobs cost O(n) per message picked, and draining it O(n^2) (bench/README.md).
 * Lanes take turns (the one a job was picked from goes to the back), so a domain
 * with a little mail is not stuck behind one with a lot.  A lane exists while it
 * holds jobs.
 */
struct sched_lane {
    struct sched_site *site;
    struct sched_domain *dom;
    const struct shape_pool *pool;
    unsigned gen; /* the rules_gen pool and src belong to */
    int src;
    struct sched_job *head, **tail;
    TAILQ_ENTRY(sched_lane) turn; /* the site's lanes, in turn order */
    LIST_ENTRY(sched_lane) of_dom; /* the domain's lanes, at any site */
};
TAILQ_HEAD(sched_lane_turns, sched_lane);

struct sched_site {
    struct sched *s;
    char *key;  /* what makes routes share the site: pattern name or address set */
    char *name; /* shown in logs and volleyctl: pattern name or the MX host names */
    struct sched_host *hosts;
    int nhosts;
    struct sched_lane_turns lanes; /* the lanes holding jobs */
    size_t queued;                 /* jobs in them */
    struct sched_conn *conns;
    int nconn, nconnecting;
    int64_t down_until_ms;
    char down_reason[300];
    char last_reply[300];
    uint64_t delivered, deferred, bounced;
    struct shape_limits lim; /* from the rules matching the first domain routed here */
    struct shape_bucket msg_bucket, conn_bucket; /* site-wide rates over all sources */
    char first_domain[DNS_NAME_MAX];
    struct sched_pair **pairs;
    int npairs;
    struct event *wake; /* a rate limit or hold ends: dispatch again */
    int64_t wake_at_ms;
    struct sched_turns *turns; /* weighted turns of each pool sending here */
    struct sched_site *next;
};

/* Smooth weighted round robin (nginx's) over one pool's sources at one site: each
 * job is meant for the source whose turn it is, so a pool's mail splits by weight
 * whichever connections happen to be open. */
struct sched_turns {
    const struct shape_pool *pool;
    unsigned gen; /* the rules_gen pool belongs to */
    int *cur;     /* per member */
    struct sched_turns *next;
};

struct sched_domain {
    struct sched *s;
    char *name;
    struct sched_site *site;
    int64_t expires_ms;
    bool resolving;
    uint64_t dns_req;
    struct sched_job *wait_head, **wait_tail;
    LIST_HEAD(, sched_lane) lanes; /* its queued jobs, by site, pool and source */
    int active;                    /* jobs in a transaction */
    struct sched_domain *next;
};

enum SCHED_CONN_STATE { SCHED_CONN_CONNECTING, SCHED_CONN_BUSY, SCHED_CONN_IDLE };

struct sched_conn {
    struct sched *s;
    struct sched_site *site;
    struct sched_pair *pair;
    struct smtpc *c;
    enum SCHED_CONN_STATE state;
    int host_i, addr_i;
    struct sched_job *job;
    struct sched_job *next_job; /* chained behind job (smtpc_send on a busy session) */
    int nsent;
    struct event *idle_ev;
    char mx[DNS_NAME_MAX];
    char ip[64];
    char tls[32];
    char cipher[64];
    struct sched_conn *next;
};

/* The in-flight set: (message id, recipient index), open addressing. */
struct sched_key {
    uint64_t id;
    uint32_t idx;
    uint8_t used; /* 0 empty, 1 live, 2 tombstone */
};

struct sched {
    struct sched_params p;
    const struct conf *conf;
    struct engine_rules *rules; /* our reference */
    struct dkim_body_memo *dkim_memo; /* NULL when it could not be had: no memo */
    unsigned rules_gen;
    int64_t last_shape_ms;
    struct event *tick;
    bool stopping;
    void (*stop_done)(void *);
    void *stop_arg;
    int pending_ops;

    struct sched_domain **domtab;
    size_t domcap, ndom;
    struct sched_site *sites;

    struct sched_key *keys;
    size_t keycap, nkeys, nkeyslots;
    size_t ready; /* recipients in memory */

    struct spool_due_item cursor;
    bool have_cursor;
    int64_t last_rewind_ms, last_full_ms;

    /* the job being built by the loader */
    /* accounting records of this loop turn, written by acct_ev in one write(2) */
    struct vbuf acct;
    struct event *acct_ev;
    /* jobs of the message being loaded, one per domain (split past max rcpts):
     * recipients of one domain go in one transaction however they interleave */
    struct sched_job **open;
    size_t nopen, capopen;
};

/* An outcome op in flight to the spool, with what its accounting records need. */
struct sched_out {
    struct engine_job ej;
    struct sched *s;
    struct sched_msg *msg;
    struct spool_outcome *outs;
    struct smtpc_reply *replies; /* per outcome: code / enh / text */
    char **addrs;
    uint16_t *attempts;
    uint32_t n;
    char domain[DNS_NAME_MAX];
    char site[300];
    char mx[DNS_NAME_MAX];
    char ip[64];
    char tls[32];
    char cipher[64];
    char source_name[SHAPE_NAME_MAX];
    char source_addr[64];
    char pool[SHAPE_NAME_MAX];
    json_t *dkim; /* the job's signatures (taken over from it), NULL = unsigned */
    uint8_t warm_key[WARMUP_KEY_MAX]; /* the warm-up count committed with the outcomes */
    struct spool_count warm_count;
    /* per outcome: the failure's classification, and what it suppresses */
    struct bounce_verdict *verdicts;
    struct sched_supp_buf *sbuf;
    struct spool_supp *supp;
    struct spool_soft *soft;
    /* the DSN to the sender (delivery.dsn), stored with the outcomes */
    struct spool_msg dsn;
    struct vbuf dsn_content;
    const char *dsn_rcpt[1];
};

/* the strings a hard or soft bounce's suppression points at */
struct sched_supp_buf {
    char target[SUPPRESS_ADDR_MAX];
    uint8_t rec[SUPPRESS_REC_MAX];
    size_t reclen;
};

static void sched_dispatch(struct sched *s, struct sched_site *site);
static bool sched_job_per_rcpt(struct sched *s, const struct sched_job *job);
static void sched_job_decorate(struct sched *s, struct sched_job *job);
static void sched_route(struct sched *s, struct sched_job *job);

/* ---------------------------------------------------------------- in-flight set */

static size_t sched_key_hash(uint64_t id, uint32_t idx, size_t cap)
{
    uint64_t h = id * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)idx * 0xC2B2AE3D27D4EB4FULL);
    h ^= h >> 29;
    return (size_t)h & (cap - 1);
}

/* sched_key_find - slot of (id, idx), or of the first free slot when absent */
static struct sched_key *sched_key_find(struct sched *s, uint64_t id, uint32_t idx, bool *found)
{
    size_t j = sched_key_hash(id, idx, s->keycap);
    struct sched_key *tomb = NULL;
    for (;;) {
        struct sched_key *k = &s->keys[j];
        if (k->used == 0) {
            *found = false;
            return tomb ? tomb : k;
        }
        if (k->used == 2) {
            if (!tomb) tomb = k;
        } else if (k->id == id && k->idx == idx) {
            *found = true;
            return k;
        }
        j = (j + 1) & (s->keycap - 1);
    }
}

static void sched_key_grow(struct sched *s)
{
    struct sched_key *old = s->keys;
    size_t oldcap = s->keycap;
    s->keycap = oldcap ? oldcap * 2 : 4096;
    s->keys = xcalloc(s->keycap, sizeof *s->keys);
    s->nkeyslots = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].used != 1) continue;
        bool found;
        struct sched_key *k = sched_key_find(s, old[i].id, old[i].idx, &found);
        *k = old[i];
        s->nkeyslots++;
    }
    free(old);
}

static bool sched_key_has(struct sched *s, uint64_t id, uint32_t idx)
{
    bool found;
    sched_key_find(s, id, idx, &found);
    return found;
}

static void sched_key_add(struct sched *s, uint64_t id, uint32_t idx)
{
    if ((s->nkeyslots + 1) * 2 > s->keycap) sched_key_grow(s);
    bool found;
    struct sched_key *k = sched_key_find(s, id, idx, &found);
    if (found) return;
    if (k->used == 0) s->nkeyslots++;
    k->id = id;
    k->idx = idx;
    k->used = 1;
    s->nkeys++;
}

static void sched_key_del(struct sched *s, uint64_t id, uint32_t idx)
{
    bool found;
    struct sched_key *k = sched_key_find(s, id, idx, &found);
    if (found) {
        k->used = 2;
        s->nkeys--;
    }
}

/* ---------------------------------------------------------------- objects */

static void sched_msg_unref(struct sched_msg *m)
{
    if (--m->refs > 0) return;
    free(m->sender);
    free(m->campaign);
    free(m->pool);
    free(m->list);
    free(m);
}

/* sched_job_warm_return - a job that took a warm-up count goes back unsent: give
 * the count back */
static void sched_job_warm_return(struct sched *s, struct sched_job *job)
{
    if (!job->warm_key) return;
    warmup_untake_key(s->p.warmup, job->warm_key, job->warm_keylen);
    free(job->warm_key);
    job->warm_key = NULL;
}

static void sched_sign_detach(struct sched_job *job);

/* sched_job_free - free a job; its recipients leave memory (not the in-flight set:
 * that happens when their outcome is committed, or here when drop_keys) */
static void sched_job_free(struct sched *s, struct sched_job *job, bool drop_keys)
{
    sched_sign_detach(job);
    for (uint32_t i = 0; i < job->nrcpt; i++) {
        if (drop_keys) sched_key_del(s, job->msg->id, job->rcpts[i].idx);
        free(job->rcpts[i].addr);
    }
    s->ready -= job->nrcpt;
    sched_job_warm_return(s, job);
    free(job->mail_from);
    json_decref(job->dkim);
    free(job->rcpts);
    free(job->rcpt_ptrs);
    free(job->replies);
    vbuf_free(&job->content);
    vbuf_free(&job->sigs);
    sched_msg_unref(job->msg);
    free(job);
}

static uint64_t sched_hash_str(const char *str)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *str; str++)
        h = (h ^ (uint8_t)*str) * 1099511628211ULL;
    return h;
}

/* sched_domain_get - the domain object for name, created on first use */
static struct sched_domain *sched_domain_get(struct sched *s, const char *name)
{
    if (!s->domcap) {
        s->domcap = 1024;
        s->domtab = xcalloc(s->domcap, sizeof *s->domtab);
    }
    size_t b = sched_hash_str(name) & (s->domcap - 1);
    for (struct sched_domain *d = s->domtab[b]; d; d = d->next)
        if (strcmp(d->name, name) == 0) return d;
    if (s->ndom + 1 > s->domcap) { /* rehash at load factor 1 */
        size_t ncap = s->domcap * 2;
        struct sched_domain **nt = xcalloc(ncap, sizeof *nt);
        for (size_t i = 0; i < s->domcap; i++) {
            for (struct sched_domain *d = s->domtab[i], *nx; d; d = nx) {
                nx = d->next;
                size_t nb = sched_hash_str(d->name) & (ncap - 1);
                d->next = nt[nb];
                nt[nb] = d;
            }
        }
        free(s->domtab);
        s->domtab = nt;
        s->domcap = ncap;
        b = sched_hash_str(name) & (s->domcap - 1);
    }
    struct sched_domain *d = xcalloc(1, sizeof *d);
    d->s = s;
    d->name = xstrdup(name);
    d->wait_tail = &d->wait_head;
    d->next = s->domtab[b];
    s->domtab[b] = d;
    s->ndom++;
    return d;
}

/* sched_join_sorted - "a,b,c" of n strings, sorted, duplicates dropped (caller frees) */
static char *sched_join_sorted(const char **v, int n)
{
    for (int i = 1; i < n; i++) /* insertion sort: a handful of entries */
        for (int j = i; j > 0 && strcmp(v[j - 1], v[j]) > 0; j--) {
            const char *t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    struct vbuf out;
    vbuf_init(&out, SIZE_MAX);
    for (int i = 0; i < n; i++) {
        if (i && strcmp(v[i - 1], v[i]) == 0) continue;
        if (out.len) vbuf_append(&out, ",", 1);
        vbuf_append(&out, v[i], strlen(v[i]));
    }
    vbuf_append(&out, "", 1);
    return (char *)out.data;
}

/*
 * sched_site_key - the site a route belongs to.  A configured pattern matching the
 * first MX host names it; otherwise routes whose MX hosts resolve to the same set
 * of addresses share a site (one receiving server, one pool of connections and one
 * set of limits, however many domains or host names point at it), named after the
 * MX host names of the first route that made it.  *name gets that name.
 */
static char *sched_site_key(struct sched *s, const struct dns_route *r, char **name)
{
    const struct conf *c = s->conf;
    for (int i = 0; i < c->delivery_site_patterns_count; i++) {
        const char *pat = c->delivery_site_patterns[i];
        const char *eq = strchr(pat, '=');
        if (r->nhosts > 0 && fnmatch(eq + 1, r->host[0].name, FNM_CASEFOLD) == 0) {
            *name = xstrndup(pat, (size_t)(eq - pat));
            size_t kl = strlen(*name) + 2;
            char *key = xmalloc(kl);
            snprintf(key, kl, "=%s", *name); /* "=": never an address list */
            return key;
        }
    }
    const char *names[DNS_MAX_HOSTS];
    int n = r->nhosts;
    size_t naddr = 0;
    for (int i = 0; i < n; i++) {
        names[i] = r->host[i].name;
        naddr += (size_t)r->host[i].naddr;
    }
    *name = sched_join_sorted(names, n);
    if (naddr == 0) return xstrdup(*name);
    char(*text)[INET6_ADDRSTRLEN] = xcalloc(naddr, sizeof *text);
    const char **addrs = xcalloc(naddr, sizeof *addrs);
    size_t k = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < r->host[i].naddr; j++, k++) {
            const struct sockaddr_storage *sa = &r->host[i].addr[j];
            if (sa->ss_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, text[k],
                          sizeof text[k]);
            else
                inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, text[k],
                          sizeof text[k]);
            addrs[k] = text[k];
        }
    char *key = sched_join_sorted(addrs, (int)naddr);
    free(addrs);
    free(text);
    return key;
}

/* sched_site_set_hosts - copy a route's hosts into site (replacing older ones) */
static void sched_site_set_hosts(struct sched_site *site, const struct dns_route *r)
{
    for (int i = 0; i < site->nhosts; i++) {
        free(site->hosts[i].name);
        free(site->hosts[i].addr);
    }
    free(site->hosts);
    site->nhosts = r->nhosts;
    site->hosts = xcalloc((size_t)(r->nhosts ? r->nhosts : 1), sizeof *site->hosts);
    for (int i = 0; i < r->nhosts; i++) {
        struct sched_host *h = &site->hosts[i];
        h->name = xstrdup(r->host[i].name);
        h->pref = r->host[i].pref;
        h->naddr = r->host[i].naddr;
        h->addr = xcalloc((size_t)(h->naddr ? h->naddr : 1), sizeof *h->addr);
        memcpy(h->addr, r->host[i].addr, (size_t)h->naddr * sizeof *h->addr);
    }
}

/* sched_site_get - the site with key, created (named name) on first use; takes
 * ownership of both strings */
static struct sched_site *sched_site_get(struct sched *s, char *key, char *name)
{
    for (struct sched_site *site = s->sites; site; site = site->next) {
        if (strcmp(site->key, key) == 0) {
            free(key);
            free(name);
            return site;
        }
    }
    struct sched_site *site = xcalloc(1, sizeof *site);
    site->s = s;
    site->key = key;
    site->name = name;
    TAILQ_INIT(&site->lanes);
    site->next = s->sites;
    s->sites = site;
    return site;
}

/* ---------------------------------------------------------------- shaping */

static void sched_acct(struct sched *s, const char *type, json_t *rec);

static const struct shape_rules *sched_rules(const struct sched *s)
{
    return s->rules->rules;
}

/*
 * sched_site_match - the site's limits from the rules (matched with the first
 * domain routed to it, its name and its MX hosts), under the delivery.* settings,
 * which stay global ceilings
 */
static void sched_site_match(struct sched *s, struct sched_site *site)
{
    const struct conf *c = s->conf;
    const char *mx[DNS_MAX_HOSTS];
    int n = site->nhosts < DNS_MAX_HOSTS ? site->nhosts : DNS_MAX_HOSTS;
    for (int i = 0; i < n; i++)
        mx[i] = site->hosts[i].name;
    shape_match(sched_rules(s), site->first_domain, site->name, mx, n, &site->lim);
    struct shape_limits *l = &site->lim;
    if (l->max_connections > c->delivery_max_conn_site)
        l->max_connections = (int)c->delivery_max_conn_site;
    if (l->max_connections_site <= 0 || l->max_connections_site > c->delivery_max_conn_site)
        l->max_connections_site = (int)c->delivery_max_conn_site;
    if (l->max_messages_per_connection > c->delivery_max_msgs_per_conn)
        l->max_messages_per_connection = (int)c->delivery_max_msgs_per_conn;
    if (l->max_recipients_per_transaction > c->delivery_max_rcpts_per_txn)
        l->max_recipients_per_transaction = (int)c->delivery_max_rcpts_per_txn;
    int64_t now = now_ms();
    shape_bucket_set(&site->msg_bucket, l->message_rate_site, l->message_burst_site, now);
    shape_bucket_set(&site->conn_bucket, l->connection_rate_site, l->connection_burst_site, now);
}

/* sched_site_sync_pairs - one pair per source of the rule set: new sources start
 * fresh, known ones keep their state under the new limits, dropped ones go idle */
static void sched_site_sync_pairs(struct sched *s, struct sched_site *site, int64_t now)
{
    const struct shape_rules *r = sched_rules(s);
    for (int k = 0; k < site->npairs; k++)
        site->pairs[k]->src = -1;
    for (int i = 0; i < shape_nsources(r); i++) {
        const struct shape_source *src = shape_source(r, i);
        struct sched_pair *p = NULL;
        for (int k = 0; k < site->npairs && !p; k++)
            if (strcmp(site->pairs[k]->source, src->name) == 0) p = site->pairs[k];
        if (!p) {
            p = xcalloc(1, sizeof *p);
            str_copy(p->source, sizeof p->source, src->name);
            shape_state_init(&p->st, &site->lim, now);
            p->sec_last = now / 1000;
            site->pairs = xrealloc(site->pairs, (size_t)(site->npairs + 1) * sizeof *site->pairs);
            site->pairs[site->npairs++] = p;
        } else {
            shape_state_limits_changed(&p->st, &site->lim, now);
        }
        p->src = i;
    }
}

/* sched_site_pair - the pair of source index src, NULL when none */
static struct sched_pair *sched_site_pair(const struct sched_site *site, int src)
{
    for (int k = 0; k < site->npairs; k++)
        if (site->pairs[k]->src == src) return site->pairs[k];
    return NULL;
}

/* sched_job_pool - the pool job's message uses (cached per rule set) */
static const struct shape_pool *sched_job_pool(struct sched *s, struct sched_job *job)
{
    if (!job->pool || job->pool_gen != s->rules_gen) {
        const char *at = strrchr(job->msg->sender, '@');
        job->pool = shape_pool_for(sched_rules(s), job->msg->pool, job->msg->campaign,
                                   at ? at + 1 : "");
        job->pool_gen = s->rules_gen;
        job->src = -1; /* source indexes are the old rule set's */
    }
    return job->pool;
}

static bool sched_pool_has(const struct shape_pool *pool, int src)
{
    for (int i = 0; pool && i < pool->nmembers; i++)
        if (pool->members[i].source == src) return true;
    return false;
}

/* sched_pair_wait - ms until pair could send a message: 0 now, INT64_MAX never
 * (source gone); looks only, takes no token */
static int64_t sched_pair_wait(const struct sched *s, const struct sched_site *site,
                               const struct sched_pair *p, int64_t now)
{
    if (p->src < 0) return INT64_MAX;
    if (p->st.mode == SHAPE_SUSPENDED) return p->st.until_ms > now ? p->st.until_ms - now : 0;
    int64_t cap = shape_warmup_cap(shape_source(sched_rules(s), p->src), now);
    if (cap >= 0 &&
        warmup_count(s->p.warmup, p->source, site->lim.rule, now / WARMUP_DAY_MS) >= cap)
        return WARMUP_DAY_MS - now % WARMUP_DAY_MS; /* the cap renews at midnight UTC */
    return shape_bucket_wait_ms(&p->st.msg_bucket, now);
}

/* sched_send_wait - ms until pair may send its next message: its own wait, and the
 * site's rate over all sources (sched_pair_wait leaves that out: it is the same for
 * every pair, so it does not bear on which source a job goes to) */
static int64_t sched_send_wait(const struct sched *s, const struct sched_site *site,
                               const struct sched_pair *p, int64_t now)
{
    int64_t w = sched_pair_wait(s, site, p, now);
    int64_t site_wait = shape_bucket_wait_ms(&site->msg_bucket, now);
    return site_wait > w ? site_wait : w;
}

/*
 * sched_site_turn - the source whose turn it is among pool's members at site,
 * skipping those that cannot send within SCHED_REASSIGN_MS; -1 when the pool has
 * one member (no turns to take) or none can
 */
static int sched_site_turn(struct sched *s, struct sched_site *site,
                           const struct shape_pool *pool, int64_t now)
{
    if (!pool || pool->nmembers < 2) return -1;
    struct sched_turns *t = site->turns, **tp = &site->turns;
    for (; t; tp = &t->next, t = t->next) {
        if (t->gen != s->rules_gen) { /* a reload: every turn state is stale */
            while (t) {
                struct sched_turns *nx = t->next;
                free(t->cur);
                free(t);
                t = nx;
            }
            *tp = NULL;
            break;
        }
        if (t->pool == pool) break;
    }
    if (!t) {
        t = xcalloc(1, sizeof *t);
        t->pool = pool;
        t->gen = s->rules_gen;
        t->cur = xcalloc((size_t)pool->nmembers, sizeof *t->cur);
        t->next = site->turns;
        site->turns = t;
    }
    int best = -1, total = 0;
    for (int i = 0; i < pool->nmembers; i++) {
        struct sched_pair *p = sched_site_pair(site, pool->members[i].source);
        if (!p || sched_pair_wait(s, site, p, now) > SCHED_REASSIGN_MS) continue;
        t->cur[i] += pool->members[i].weight;
        total += pool->members[i].weight;
        if (best < 0 || t->cur[i] > t->cur[best]) best = i;
    }
    if (best < 0) return -1;
    t->cur[best] -= total;
    return pool->members[best].source;
}

/*
 * sched_fits - may pair send mail of pool meant for source src (-1 = any)?  The
 * pool must hold the pair's source, and the mail must be meant for it, or for any
 * source, or for one that cannot send within SCHED_REASSIGN_MS.
 */
static bool sched_fits(struct sched *s, struct sched_site *site, const struct shape_pool *pool,
                       int src, const struct sched_pair *pair, int64_t now)
{
    if (!sched_pool_has(pool, pair->src)) return false;
    if (src < 0 || src == pair->src) return true;
    struct sched_pair *meant = sched_site_pair(site, src);
    return !meant || sched_pair_wait(s, site, meant, now) > SCHED_REASSIGN_MS;
}

/* sched_job_fits - sched_fits for job (its pool first: a reload resets its source) */
static bool sched_job_fits(struct sched *s, struct sched_site *site, struct sched_job *job,
                           const struct sched_pair *pair, int64_t now)
{
    const struct shape_pool *pool = sched_job_pool(s, job);
    return sched_fits(s, site, pool, job->src, pair, now);
}

/* sched_pair_ring - move the per-second ring up to now's second, clearing the
 * seconds that passed without a message */
static void sched_pair_ring(struct sched_pair *p, int64_t now)
{
    int64_t sec = now / 1000;
    if (sec <= p->sec_last) return;
    int64_t gap = sec - p->sec_last < 60 ? sec - p->sec_last : 60;
    for (int64_t i = 1; i <= gap; i++)
        p->sec_sent[(p->sec_last + i) % 60] = 0;
    p->sec_last = sec;
}

/* sched_pair_sent - count a message for the "last minute" figure */
static void sched_pair_sent(struct sched_pair *p, int64_t now)
{
    sched_pair_ring(p, now);
    p->sec_sent[p->sec_last % 60]++;
    if (now / WARMUP_DAY_MS != p->day) {
        p->day = now / WARMUP_DAY_MS;
        p->sent_today = 0;
    }
    p->sent_today++;
}

/* sched_pair_last_minute - messages the pair sent in the last 60 seconds */
static uint64_t sched_pair_last_minute(struct sched_pair *p, int64_t now)
{
    uint64_t n = 0;
    sched_pair_ring(p, now);
    for (int i = 0; i < 60; i++)
        n += p->sec_sent[i];
    return n;
}

/* sched_site_wake_in - dispatch the site again in ms (the earliest asked wins) */
static void sched_site_wake_in(struct sched_site *site, int64_t ms)
{
    if (ms <= 0 || ms == INT64_MAX) return;
    int64_t at = now_ms() + ms;
    if (evtimer_pending(site->wake, NULL) && site->wake_at_ms <= at) return;
    site->wake_at_ms = at;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(site->wake, &tv);
}

/* sched_shape_log - an accounting record for a shaping transition of a pair */
static void sched_shape_log(struct sched *s, const struct sched_site *site,
                            const struct sched_pair *p, enum SHAPE_EVENT ev,
                            const struct smtpc_reply *r, int64_t now)
{
    const char *type = ev == SHAPE_EV_BACKOFF ? "backoff" : ev == SHAPE_EV_SUSPEND ? "suspend"
                                                                                 : "resume";
    char until[40] = "";
    if (ev != SHAPE_EV_RESUME) time_rfc3339(p->st.until_ms, until, sizeof until);
    json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:f}", "site", site->name, "source",
                            p->source, "rule", p->st.why_rule, "class", site->lim.rule, "until",
                            until, "max_connections",
                            shape_state_max_conn(&p->st, &site->lim, now), "rate",
                            shape_state_rate(&p->st, &site->lim));
    if (r) {
        json_object_set_new(rec, "code", json_integer(r->code));
        json_object_set_new(rec, "enh", json_string(r->enh));
        json_object_set_new(rec, "diag", json_string(r->text));
    }
    sched_acct(s, type, rec);
}

/*
 * sched_shape_reply - feedback from a reply on conn (a session failure comes as
 * code 0 with its diagnostic): 421s and failures close the pair's concurrency
 * window; a matching response rule may suspend the pair or lower its limits.
 * Returns the rule's action (SHAPE_ACT_BOUNCE: the caller fails the recipient)
 * and the matching rule in *resp (zeroed when none).
 * apply false: only look the action up (the pair was already told this round).
 */
static enum SHAPE_ACTION sched_shape_reply(struct sched *s, struct sched_conn *conn,
                                           const struct smtpc_reply *r, bool apply,
                                           struct shape_response *resp)
{
    memset(resp, 0, sizeof *resp);
    if (r->code >= 200 && r->code < 300) return SHAPE_ACT_NONE;
    bool hit = shape_response_match(sched_rules(s), r->code, r->enh, r->text, resp);
    if (!apply || !conn || !conn->pair) return resp->action;
    int64_t now = now_ms();
    struct sched_pair *p = conn->pair;
    if (r->code == 421 || r->code == 0) shape_state_failure(&p->st);
    if (!hit) return SHAPE_ACT_NONE;
    if (resp->action == SHAPE_ACT_SUSPEND || resp->action == SHAPE_ACT_BACKOFF) {
        enum SHAPE_EVENT ev = shape_state_apply(&p->st, &conn->site->lim, resp, now);
        if (ev != SHAPE_EV_NONE) sched_shape_log(s, conn->site, p, ev, r, now);
    }
    return resp->action;
}

/* ---------------------------------------------------------------- outcomes */

/* sched_retry_wait - seconds until the next try after attempts tries: the site's
 * rule's schedule when it has one, else delivery.retry_schedule */
static int64_t sched_retry_wait(const struct conf *c, const struct shape_limits *lim,
                                int attempts)
{
    const int64_t *sched = lim && lim->nretry > 0 ? lim->retry : c->delivery_retry;
    int n = lim && lim->nretry > 0 ? lim->nretry : c->delivery_retry_count;
    int i = attempts - 1;
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return sched[i];
}

static void sched_reply_set(struct smtpc_reply *r, int code, const char *enh, const char *text)
{
    r->code = code;
    str_copy(r->enh, sizeof r->enh, enh);
    str_copy(r->text, sizeof r->text, text);
}

/* sched_acct_flush_cb - end of the loop turn: write the gathered records */
static void sched_acct_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sched *s = arg;
    log_acct_flush(&s->acct);
}

/* sched_acct - queue an accounting record (steals rec); written this loop turn */
static void sched_acct(struct sched *s, const char *type, json_t *rec)
{
    json_incref(rec);
    if (log_acct_append(&s->acct, type, rec) < 0) {
        log_acct_flush(&s->acct);
        json_incref(rec);
        if (log_acct_append(&s->acct, type, rec) < 0)
            log_acct(type, json_incref(rec)); /* a record bigger than the buffer */
    }
    json_decref(rec);
    if (!event_pending(s->acct_ev, EV_TIMEOUT, NULL))
        event_active(s->acct_ev, EV_TIMEOUT, 1);
}

/* sched_out_free_texts - free the reply strings sched_finish built for the op */
static void sched_out_free_texts(struct sched_out *o)
{
    for (uint32_t i = 0; i < o->n; i++)
        free((char *)o->outs[i].reply);
}

/* sched_out_done - the spool committed a job's outcomes: write the accounting
 * records, let the recipients leave the in-flight set, free the op */
static void sched_out_done(void *ctx, struct engine_job *ej)
{
    struct sched_out *o = (struct sched_out *)ej;
    struct sched *s = o->s;
    char idtxt[MSGID_STR_LEN + 1];
    msgid_format(o->msg->id, idtxt);
    int64_t now = now_ms();

    for (uint32_t i = 0; i < o->n; i++) {
        struct spool_outcome *out = &o->outs[i];
        sched_key_del(s, o->msg->id, out->idx);
        if (ej->op.result != SPOOL_OK) {
            /* nothing was written: the recipient stays due and is tried again */
            log_msg(LOG_ERROR, "spool_outcome", "cannot record outcome of %s/%u: %s", idtxt,
                    out->idx, ej->op.result == SPOOL_EFULL ? "spool full" : "write failed");
            continue;
        }
        if (!out->applied) continue; /* deleted by an operator while in flight */
        const struct smtpc_reply *r = &o->replies[i];
        json_t *rec = json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:i, s:I}",
            "msgid", idtxt, "campaign", o->msg->campaign, "sender", o->msg->sender, "recipient",
            o->addrs[i], "domain", o->domain, "site", o->site, "mx", o->mx, "ip", o->ip, "source",
            o->source_addr, "tls", o->tls, "cipher", o->cipher, "code", r->code,
            "enh", r->enh, "diag", r->text, "attempt", (int)o->attempts[i] + 1, "queue_s",
            (json_int_t)((now - o->msg->created_ms) / 1000));
        json_object_set_new(rec, "vmta", json_string(o->source_name));
        json_object_set_new(rec, "pool", json_string(o->pool));
        if (o->dkim) json_object_set(rec, "dkim", o->dkim);
        if (o->verdicts && out->kind != SPOOL_OUT_DELIVERED) {
            json_object_set_new(rec, "category", json_string(bounce_cat_str(o->verdicts[i].cat)));
            json_object_set_new(rec, "hard", json_boolean(o->verdicts[i].hard));
        }
        if (out->kind == SPOOL_OUT_DEFERRED) {
            char t[40];
            json_object_set_new(rec, "next_attempt",
                                json_string(time_rfc3339(out->next_ms, t, sizeof t)));
        }
        sched_acct(s, spool_outcome_str(out->kind), rec);
    }
    if (ej->op.result == SPOOL_OK && ej->op.msg) {
        char dsntxt[MSGID_STR_LEN + 1];
        msgid_format(o->dsn.id, dsntxt);
        if (ej->op.msg_stored)
            log_event(LOG_INFO, "dsn_queued",
                      json_pack("{s:s, s:s, s:s}", "msgid", idtxt, "dsn_msgid", dsntxt, "to",
                                o->msg->sender));
        else
            log_msg(LOG_ERROR, "dsn_not_stored",
                    "no room in the spool for the delivery status notification of %s to <%s>",
                    idtxt, o->msg->sender);
    }
    for (uint32_t i = 0; ej->op.result == SPOOL_OK && i < ej->op.npurged; i++) {
        /* other queued mail to an address this delivery found dead */
        const struct spool_purged *p = &ej->op.purged[i];
        char pid[MSGID_STR_LEN + 1];
        msgid_format(p->id, pid);
        sched_acct(s, "suppressed",
                   suppress_acct_record(pid, p->campaign, p->list, p->sender, p->addr, "queue",
                                        p->cause < ej->op.nsupp ? "hard-bounce" : "soft-bounce"));
    }
    free(ej->op.purged);
    free(o->verdicts);
    json_decref(o->dkim);
    free(o->sbuf);
    free(o->supp);
    free(o->soft);
    vbuf_free(&o->dsn_content);
    sched_out_free_texts(o);
    for (uint32_t i = 0; i < o->n; i++)
        free(o->addrs[i]);
    free(o->addrs);
    free(o->attempts);
    free(o->outs);
    free(o->replies);
    sched_msg_unref(o->msg);
    free(o);
    s->pending_ops--;
    if (s->stopping && s->pending_ops == 0 && s->stop_done)
        s->stop_done(s->stop_arg);
    else if (!s->stopping)
        sched_poke(s);
}

/*
 * sched_dsn_prepare - build the RFC 3464 notice to the sender of job's message for
 * the recipients of o that bounced or expired; it becomes o's op.msg and is
 * stored in the same transaction as the outcomes.  Never for a null sender (a
 * notice is never answered by another one).
 */
static void sched_dsn_prepare(struct sched *s, struct sched_out *o, struct sched_job *job,
                              const struct sched_conn *conn, int64_t now)
{
    const struct sched_msg *m = job->msg;
    if (!*m->sender) return;
    struct dsn_rcpt *dr = xcalloc(o->n, sizeof *dr);
    char(*diag)[600] = xcalloc(o->n, sizeof *diag);
    size_t nd = 0;
    for (uint32_t i = 0; i < o->n; i++) {
        if (o->outs[i].kind != SPOOL_OUT_BOUNCED && o->outs[i].kind != SPOOL_OUT_EXPIRED)
            continue;
        const struct smtpc_reply *r = &o->replies[i];
        dr[nd].addr = o->addrs[i];
        dr[nd].action = "failed";
        dr[nd].status = r->enh;
        dr[nd].code = r->code;
        /* the reply as the server wrote it: enhanced code, then text */
        snprintf(diag[nd], sizeof diag[nd], "%s%s%s", r->enh, *r->enh ? " " : "", r->text);
        dr[nd].diag = diag[nd];
        dr[nd].remote_mta = conn ? conn->mx : "";
        dr[nd].last_attempt_ms = now;
        nd++;
    }
    if (nd == 0) {
        free(diag);
        free(dr);
        return;
    }
    /* the original header section: from the text in hand, else from the spool */
    struct vbuf orig;
    vbuf_init(&orig, SIZE_MAX);
    const struct vbuf *text = &job->content;
    if (!job->content.len) {
        if (spool_msg_content(s->p.spool, m->id, &orig) < 0) vbuf_reset(&orig);
        text = &orig;
    }
    char idtxt[MSGID_STR_LEN + 1];
    msgid_format(m->id, idtxt);
    struct dsn_info in = {
        .reporting_mta = s->p.helo_name,
        .queue_id = idtxt,
        .sender = m->sender,
        .arrival_ms = m->created_ms,
        .now_ms = now,
        .rcpts = dr,
        .nrcpt = nd,
        .orig = text->data,
        .orig_len = text->len,
    };
    vbuf_init(&o->dsn_content, SCHED_DSN_MAX);
    int rc = dsn_build(&in, &o->dsn_content);
    vbuf_free(&orig);
    free(diag);
    free(dr);
    if (rc < 0) {
        log_msg(LOG_ERROR, "dsn_build", "cannot build the delivery status notification of %s",
                idtxt);
        vbuf_free(&o->dsn_content);
        return;
    }
    bool ascii = true;
    for (const char *p = m->sender; *p; p++)
        ascii &= (unsigned char)*p < 0x80;
    o->dsn_rcpt[0] = m->sender;
    o->dsn.id = msgid_next();
    o->dsn.created_ms = now;
    o->dsn.flags = ascii ? 0 : SPOOL_MSG_SMTPUTF8;
    o->dsn.sender = ""; /* null reverse-path: RFC 5321 4.5.5 */
    o->dsn.campaign = "";
    o->dsn.client = "local";
    o->dsn.helo = s->p.helo_name;
    o->dsn.rcpts = o->dsn_rcpt;
    o->dsn.nrcpt = 1;
    o->dsn.content = o->dsn_content.data;
    o->dsn.content_len = o->dsn_content.len;
    o->ej.op.msg = &o->dsn;
}

/*
 * sched_classify - every failure of o gets its category (one classifier for
 * replies during delivery and for DSNs that come later); a hard bounce suppresses
 * the address and a final soft failure counts towards feedback.soft_bounce_limit,
 * both in the outcomes' own transaction
 */
static void sched_classify(struct sched *s, struct sched_out *o)
{
    const struct conf *c = s->conf;
    for (uint32_t i = 0; i < o->n; i++) {
        enum SPOOL_OUTCOME kind = o->outs[i].kind;
        if (kind == SPOOL_OUT_DELIVERED) continue;
        if (!o->verdicts) {
            o->verdicts = xcalloc(o->n, sizeof *o->verdicts);
            o->sbuf = xcalloc(o->n, sizeof *o->sbuf);
            o->supp = xcalloc(o->n, sizeof *o->supp);
            o->soft = xcalloc(o->n, sizeof *o->soft);
        }
        const struct smtpc_reply *r = &o->replies[i];
        struct bounce_verdict *v = &o->verdicts[i];
        bounce_classify(s->rules->classify, r->code, r->enh, r->text, v);
        if (kind == SPOOL_OUT_DEFERRED) continue;
        bool hard = kind == SPOOL_OUT_BOUNCED && v->hard;
        if (hard ? !c->feedback_suppress_hard : c->feedback_soft_limit <= 0) continue;
        struct sched_supp_buf *b = &o->sbuf[i];
        if (suppress_normalize(o->addrs[i], b->target, sizeof b->target) < 0) continue;
        struct suppress_rec rec = {.reason = hard ? SUPPRESS_HARD_BOUNCE : SUPPRESS_SOFT_BOUNCE,
                                   .created_ms = now_ms()};
        snprintf(rec.source, sizeof rec.source, "%s %d %s %s: %.200s",
                 hard ? "bounce" : "soft", r->code, r->enh, bounce_cat_str(v->cat), r->text);
        b->reclen = suppress_rec_encode(&rec, b->rec, sizeof b->rec);
        if (hard)
            o->supp[o->ej.op.nsupp++] = (struct spool_supp){.act = SPOOL_SUPP_PUT, .scope = "",
                                                             .target = b->target, .rec = b->rec,
                                                             .reclen = b->reclen, .purge = true};
        else
            o->soft[o->ej.op.nsoft++] = (struct spool_soft){
                .addr = b->target, .day = now_ms() / DAY_MS, .limit = (int)c->feedback_soft_limit,
                .window_days = (int)c->feedback_soft_days, .rec = b->rec, .reclen = b->reclen};
    }
    o->ej.op.supp = o->supp;
    o->ej.op.soft = o->soft;
}

/*
 * sched_finish - decide every recipient of job from its replies (reply NULL: the
 * session failed, use fail_text), submit the outcomes to the spool and free the
 * job.  conn may be NULL (DNS or site-level decision).
 */
static void sched_finish(struct sched *s, struct sched_job *job, struct sched_conn *conn,
                         const struct smtpc_reply *all)
{
    const struct conf *c = s->conf;
    int64_t now = now_ms();
    struct sched_out *o = xcalloc(1, sizeof *o);
    o->s = s;
    o->msg = job->msg;
    job->msg->refs++;
    o->n = job->nrcpt;
    o->outs = xcalloc(job->nrcpt, sizeof *o->outs);
    o->replies = xcalloc(job->nrcpt, sizeof *o->replies);
    o->addrs = xcalloc(job->nrcpt, sizeof *o->addrs);
    o->attempts = xcalloc(job->nrcpt, sizeof *o->attempts);
    str_copy(o->domain, sizeof o->domain, job->dom->name);
    struct sched_site *site = job->dom->site;
    str_copy(o->site, sizeof o->site, site ? site->name : "");
    const struct shape_limits *lim = site && site->npairs ? &site->lim : NULL;
    const int64_t max_age_ms = (lim && lim->max_age > 0 ? lim->max_age : c->delivery_max_age) * 1000;
    const struct shape_pool *pool = sched_job_pool(s, job);
    str_copy(o->pool, sizeof o->pool, pool ? pool->name : "");
    str_copy(o->source_addr, sizeof o->source_addr, c->delivery_source_address);
    bool shaped = false; /* the pair heard about this transaction's failure */
    if (conn) {
        if (conn->pair) {
            str_copy(o->source_name, sizeof o->source_name, conn->pair->source);
            if (conn->pair->src >= 0) {
                const struct shape_source *src = shape_source(sched_rules(s), conn->pair->src);
                if (*src->address) str_copy(o->source_addr, sizeof o->source_addr, src->address);
            }
        }
        str_copy(o->mx, sizeof o->mx, conn->mx);
        str_copy(o->ip, sizeof o->ip, conn->ip);
        str_copy(o->tls, sizeof o->tls, conn->tls);
        str_copy(o->cipher, sizeof o->cipher, conn->cipher);
    }
    o->dkim = job->dkim;
    job->dkim = NULL;
    for (uint32_t i = 0; i < job->nrcpt; i++) {
        struct spool_outcome *out = &o->outs[i];
        const struct smtpc_reply *r = all;
        if (!r) r = smtpc_rcpt_outcome(&job->txn, i);
        if (!r) {
            struct smtpc_reply fail;
            char text[400];
            snprintf(text, sizeof text, "%s with %.100s[%.60s]%s%.200s",
                     smtpc_fail_str(job->txn.fail), conn ? conn->mx : "?", conn ? conn->ip : "?",
                     job->txn.data_reply.code ? ": " : "", job->txn.data_reply.text);
            sched_reply_set(&fail, 0, "4.4.2", text);
            o->replies[i] = fail;
        } else {
            o->replies[i] = *r;
        }
        o->addrs[i] = xstrdup(job->rcpts[i].addr);
        o->attempts[i] = job->rcpts[i].attempts;
        out->id = job->msg->id;
        out->idx = job->rcpts[i].idx;
        out->reply = NULL;
        int code = o->replies[i].code;
        /* response rules: throttling replies slow the pair down; some mean bounce */
        struct shape_response resp;
        enum SHAPE_ACTION act = sched_shape_reply(s, conn, &o->replies[i], !shaped, &resp);
        if (act != SHAPE_ACT_NONE) shaped = true;
        if (act == SHAPE_ACT_BOUNCE && code < 500 && code >= 400) {
            /* a deferral that will never succeed: fail it now, saying why, with the
             * server's own reply kept in the text */
            struct smtpc_reply *rp = &o->replies[i];
            char text[sizeof rp->text];
            snprintf(text, sizeof text, "%d %s %.350s (made permanent by response rule %.63s)",
                     rp->code, rp->enh, rp->text, resp.rule);
            str_copy(rp->text, sizeof rp->text, text);
            if (rp->enh[0] == '4') rp->enh[0] = '5';
            rp->code = code = 550;
        }
        if (code >= 200 && code < 300) {
            out->kind = SPOOL_OUT_DELIVERED;
            if (site) site->delivered++;
        } else if (code >= 500) {
            out->kind = SPOOL_OUT_BOUNCED;
            if (site) site->bounced++;
        } else if (now - job->msg->created_ms >= max_age_ms) {
            out->kind = SPOOL_OUT_EXPIRED;
            char text[sizeof o->replies[i].text];
            snprintf(text, sizeof text, "message expired after %lld s in the queue; last: %.400s",
                     (long long)((now - job->msg->created_ms) / 1000), o->replies[i].text);
            str_copy(o->replies[i].text, sizeof o->replies[i].text, text);
            str_copy(o->replies[i].enh, sizeof o->replies[i].enh, "4.4.7");
        } else {
            out->kind = SPOOL_OUT_DEFERRED;
            int64_t next = job->hold_until_ms
                               ? job->hold_until_ms
                               : now + sched_retry_wait(c, lim, job->rcpts[i].attempts + 1) * 1000;
            int64_t deadline = job->msg->created_ms + max_age_ms;
            out->next_ms = next < deadline ? next : deadline;
            if (site) site->deferred++;
        }
    }
    /* the reply text stored with a deferred recipient (volleyctl show) */
    for (uint32_t i = 0; i < job->nrcpt; i++) {
        char *t = xmalloc(600);
        snprintf(t, 600, "%d %s %s", o->replies[i].code, o->replies[i].enh, o->replies[i].text);
        o->outs[i].reply = t;
    }
    if (site && job->nrcpt)
        snprintf(site->last_reply, sizeof site->last_reply, "%s", o->outs[0].reply);

    if (c->delivery_dsn) sched_dsn_prepare(s, o, job, conn, now);
    sched_classify(s, o);

    o->ej.op.type = SPOOL_OP_OUTCOMES;
    o->ej.op.outcomes = o->outs;
    o->ej.op.noutcomes = o->n;
    o->ej.op.keep_sent = s->p.verp != NULL; /* late bounces map back through VERP */
    if (job->warm_key) { /* the count commits with what it counts */
        memcpy(o->warm_key, job->warm_key, job->warm_keylen);
        o->warm_count.key = o->warm_key;
        o->warm_count.keylen = job->warm_keylen;
        o->warm_count.add = 1;
        o->ej.op.counts = &o->warm_count;
        o->ej.op.ncounts = 1;
        free(job->warm_key);
        job->warm_key = NULL;
    }
    o->ej.complete = sched_out_done;
    /* the job leaves memory now; its keys stay in the set until the commit */
    for (uint32_t i = 0; i < job->nrcpt; i++)
        job->rcpts[i].idx = o->outs[i].idx;
    sched_job_free(s, job, false);
    s->pending_ops++;
    if (engine_job_submit(s->p.spool, s->p.mbox, &o->ej) < 0) {
        /* spool closing: nothing recorded, the recipients are simply tried again */
        o->ej.op.result = SPOOL_EIO;
        sched_out_done(s, &o->ej);
    }
}

/* sched_finish_list - settle every job of a list with reply r (4xx/0: defer, 5xx: bounce) */
static void sched_finish_list(struct sched *s, struct sched_job *list, const struct smtpc_reply *r)
{
    while (list) {
        struct sched_job *next = list->next;
        sched_finish(s, list, NULL, r);
        list = next;
    }
}

/* ---------------------------------------------------------------- connections */

static void sched_conn_ready(void *arg);
static void sched_conn_done(void *arg, struct smtpc_txn *t);
static void sched_conn_closed(void *arg, enum SMTPC_FAIL why, const struct smtpc_reply *last);

static const struct smtpc_callbacks sched_smtpc_cb = {
    .ready = sched_conn_ready,
    .done = sched_conn_done,
    .closed = sched_conn_closed,
};

/* sched_conn_start - open the session to host_i/addr_i of the site; -1 when the
 * host list is exhausted */
static int sched_conn_start(struct sched_conn *conn)
{
    struct sched *s = conn->s;
    struct sched_site *site = conn->site;
    const struct conf *c = s->conf;
    while (conn->host_i < site->nhosts && conn->addr_i >= site->hosts[conn->host_i].naddr) {
        conn->host_i++;
        conn->addr_i = 0;
    }
    if (conn->host_i >= site->nhosts) return -1;
    struct sched_host *h = &site->hosts[conn->host_i];
    struct smtpc_params p;
    memset(&p, 0, sizeof p);
    p.base = s->p.base;
    p.tls_ctx = s->p.tls_ctx;
    p.tls = strcmp(c->delivery_tls, "off") == 0        ? SMTPC_TLS_OFF
            : strcmp(c->delivery_tls, "required") == 0 ? SMTPC_TLS_REQUIRED
                                                       : SMTPC_TLS_OPPORTUNISTIC;
    /* the pair's source: its address to bind and its EHLO name */
    const struct shape_source *src =
        conn->pair && conn->pair->src >= 0 ? shape_source(sched_rules(s), conn->pair->src) : NULL;
    const char *bind = src && *src->address ? src->address : c->delivery_source_address;
    p.helo_name = src && *src->ehlo ? src->ehlo : s->p.helo_name;
    p.server_name = h->name;
    p.dest = h->addr[conn->addr_i];
    if (p.dest.ss_family == AF_INET) {
        ((struct sockaddr_in *)&p.dest)->sin_port = htons((uint16_t)c->delivery_port);
        p.destlen = sizeof(struct sockaddr_in);
        inet_ntop(AF_INET, &((struct sockaddr_in *)&p.dest)->sin_addr, conn->ip, sizeof conn->ip);
    } else {
        ((struct sockaddr_in6 *)&p.dest)->sin6_port = htons((uint16_t)c->delivery_port);
        p.destlen = sizeof(struct sockaddr_in6);
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&p.dest)->sin6_addr, conn->ip,
                  sizeof conn->ip);
    }
    if (*bind) {
        int len = sizeof p.source;
        char spec[128];
        snprintf(spec, sizeof spec, "%s", bind);
        if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&p.source, &len) == 0)
            p.sourcelen = (socklen_t)len;
    }
    p.timeouts.connect = (int)c->delivery_timeout_connect;
    p.timeouts.greeting = (int)c->delivery_timeout_greeting;
    p.timeouts.helo = p.timeouts.starttls = p.timeouts.mail = p.timeouts.rcpt = p.timeouts.rset =
        (int)c->delivery_timeout_command;
    p.timeouts.data_init = (int)c->delivery_timeout_data_init;
    p.timeouts.data_block = (int)c->delivery_timeout_data_block;
    p.timeouts.data_done = (int)c->delivery_timeout_data_done;
    str_copy(conn->mx, sizeof conn->mx, h->name);
    conn->tls[0] = conn->cipher[0] = '\0';
    conn->state = SCHED_CONN_CONNECTING;
    conn->c = smtpc_new(&p, &sched_smtpc_cb, conn);
    if (!conn->c) {
        conn->addr_i++;
        return sched_conn_start(conn);
    }
    return 0;
}

/* sched_conn_unlink - remove conn from its site and free it */
static void sched_conn_free(struct sched_conn *conn)
{
    struct sched_site *site = conn->site;
    for (struct sched_conn **pp = &site->conns; *pp; pp = &(*pp)->next) {
        if (*pp == conn) {
            *pp = conn->next;
            break;
        }
    }
    site->nconn--;
    if (conn->pair) conn->pair->nconn--;
    if (conn->state == SCHED_CONN_CONNECTING) site->nconnecting--;
    if (conn->idle_ev) event_free(conn->idle_ev);
    free(conn);
}

/* ---------------------------------------------------------------- lanes */

/* sched_lane_get - site's lane for job's domain, pool and source: a new one, empty
 * and not on the site's list, when there is none.  job's pool is current. */
static struct sched_lane *sched_lane_get(struct sched_site *site, const struct sched_job *job)
{
    struct sched_domain *d = job->dom;
    struct sched_lane *l;
    LIST_FOREACH(l, &d->lanes, of_dom)
        if (l->site == site && l->pool == job->pool && l->gen == job->pool_gen &&
            l->src == job->src)
            return l;
    l = xcalloc(1, sizeof *l);
    l->site = site;
    l->dom = d;
    l->pool = job->pool;
    l->gen = job->pool_gen;
    l->src = job->src;
    l->tail = &l->head;
    LIST_INSERT_HEAD(&d->lanes, l, of_dom);
    return l;
}

/* sched_lane_drop - free l, emptied: off its site's turns and its domain's lanes */
static void sched_lane_drop(struct sched_site *site, struct sched_lane *l)
{
    TAILQ_REMOVE(&site->lanes, l, turn);
    LIST_REMOVE(l, of_dom);
    free(l);
}

/* sched_lane_push - queue job in its lane at site, at the back or the front; a lane
 * that was empty joins the site's turn order at the same end */
static void sched_lane_push(struct sched_site *site, struct sched_job *job, bool front)
{
    sched_job_pool(site->s, job); /* the lane key is the current pool and source */
    struct sched_lane *l = sched_lane_get(site, job);
    if (!l->head) {
        if (front) TAILQ_INSERT_HEAD(&site->lanes, l, turn);
        else TAILQ_INSERT_TAIL(&site->lanes, l, turn);
    }
    if (front) {
        job->next = l->head;
        if (l->tail == &l->head) l->tail = &job->next;
        l->head = job;
    } else {
        job->next = NULL;
        *l->tail = job;
        l->tail = &job->next;
    }
    site->queued++;
}

/* sched_lane_take - take job (after prev in l, NULL: l's head) out of its lane.
 * rotate: the lane's turn is over, it goes to the back.  An emptied lane goes. */
static void sched_lane_take(struct sched_site *site, struct sched_lane *l, struct sched_job *prev,
                            struct sched_job *job, bool rotate)
{
    struct sched_job **jp = prev ? &prev->next : &l->head;
    *jp = job->next;
    if (l->tail == &job->next) l->tail = jp;
    job->next = NULL;
    site->queued--;
    if (!l->head) {
        sched_lane_drop(site, l);
    } else if (rotate && TAILQ_NEXT(l, turn)) {
        TAILQ_REMOVE(&site->lanes, l, turn);
        TAILQ_INSERT_TAIL(&site->lanes, l, turn);
    }
}

/* sched_site_drain - every queued job of site as one list; the lanes go */
static struct sched_job *sched_site_drain(struct sched_site *site)
{
    struct sched_job *list = NULL, **tail = &list;
    struct sched_lane *l;
    while ((l = TAILQ_FIRST(&site->lanes)) != NULL) {
        *tail = l->head;
        tail = l->tail;
        sched_lane_drop(site, l);
    }
    site->queued = 0;
    return list;
}

/*
 * sched_site_pick - take the first queued job conn may carry, in lane turn order.
 * chain_dom NULL: a job whose domain is under its limit.  Otherwise a job to chain
 * behind one of chain_dom on a busy connection - only where it costs no
 * parallelism: one of chain_dom that no other connection may take (the domain is
 * at its limit), or, when the site has no idle connection and no room for another,
 * any job a new transaction could take.
 */
static struct sched_job *sched_site_pick(struct sched *s, struct sched_site *site,
                                         const struct sched_domain *chain_dom,
                                         const struct sched_pair *pair)
{
    const int64_t dom_max = s->conf->delivery_max_conn_domain;
    bool site_full = false;
    if (chain_dom) {
        site_full = site->nconn >= s->conf->delivery_max_conn_site;
        for (struct sched_conn *c = site->conns; c && site_full; c = c->next)
            site_full = c->state != SCHED_CONN_IDLE;
        /* with room for parallelism only chain_dom's own lanes qualify: look at
         * those, not at every lane of the site */
        if (!site_full && chain_dom->active < dom_max) return NULL;
    }
    int64_t now = pair ? now_ms() : 0;
    const bool own_lanes = chain_dom && !site_full;
    struct sched_lane *l = own_lanes ? LIST_FIRST(&chain_dom->lanes) : TAILQ_FIRST(&site->lanes);
    for (; l; l = own_lanes ? LIST_NEXT(l, of_dom) : TAILQ_NEXT(l, turn)) {
        if (l->site != site) continue; /* chain_dom's lane at another site */
        bool at_limit = l->dom->active >= dom_max;
        if (!chain_dom ? at_limit
                       : l->dom == chain_dom ? !(at_limit || site_full)
                                             : !(site_full && !at_limit))
            continue;
        /* a lane of the current rules holds jobs of its pool and source only, so
         * its answer is each job's; one from before a reload asks each job */
        bool current = l->gen == s->rules_gen;
        if (pair && current && !sched_fits(s, site, l->pool, l->src, pair, now)) continue;
        for (struct sched_job *job = l->head, *prev = NULL; job; prev = job, job = job->next) {
            if (pair && !current && !sched_job_fits(s, site, job, pair, now)) continue;
            sched_lane_take(site, l, prev, job, true);
            return job;
        }
    }
    return NULL;
}

/* sched_site_unpick - put a job that was picked but never sent back at the front */
static void sched_site_unpick(struct sched_site *site, struct sched_job *job)
{
    sched_lane_push(site, job, true);
}

/* sched_refuse - the transaction fails locally with this reply, unsent */
static void sched_refuse(struct sched_job *job, int code, const char *enh, const char *text)
{
    job->txn.refuse_code = code;
    str_copy(job->txn.refuse_enh, sizeof job->txn.refuse_enh, enh);
    str_copy(job->txn.refuse_text, sizeof job->txn.refuse_text, text);
}

/*
 * sched_from_domain - the domain of the From header's address in msg (lower
 * case), "" when there is none: the address in angle brackets or, without them,
 * the last "@" of the value
 */
static void sched_from_domain(const uint8_t *msg, size_t len, char *out, size_t n)
{
    char val[4096];
    out[0] = '\0';
    if (msg_header_get((const char *)msg, len, "From", val, sizeof val) != 1) return;
    char *lt = strrchr(val, '<'), *end;
    char *addr = lt ? lt + 1 : val;
    if ((end = strchr(addr, '>'))) *end = '\0';
    char *at = strrchr(addr, '@');
    if (!at) return;
    size_t dl = strcspn(at + 1, " \t>;,");
    if (dl == 0 || dl >= n) return;
    memcpy(out, at + 1, dl);
    out[dl] = '\0';
    str_lower(out);
}

/* room a signature may take, per key: what SIZE= declares while it is being made */
#define SCHED_SIGN_RESERVE 4096

/* a job's signatures being made on a signing thread */
struct sched_sign {
    struct signpool_task t; /* first: its mailbox message comes back to sched_sign_done */
    struct sched *s;
    struct sched_job *job;        /* NULL once the job has gone: the result is dropped */
    struct sched_conn *conn;      /* the job's connection, valid while job is set */
    struct engine_rules *rules;   /* keeps the keys alive across a reload */
    size_t estimate;              /* the size declared in the meantime */
};

/* sched_job_txn_text - point job's transaction at its text and signatures, or,
 * while they are being made, at none and the estimate of their size */
static void sched_job_txn_text(struct sched_job *job)
{
    job->txn.content_pending = job->sign != NULL;
    job->txn.content = job->sign ? NULL : job->content.data;
    job->txn.content_len = job->sign ? job->sign->estimate : job->content.len;
    job->txn.prefix = job->sigs.data;
    job->txn.prefix_len = job->sigs.len;
}

/* sched_sign_detach - job goes away (settled, or back to a queue) while its
 * signatures are being made: the result, when it comes, is dropped */
static void sched_sign_detach(struct sched_job *job)
{
    if (!job->sign) return;
    job->sign->job = NULL;
    job->sign = NULL;
}

/*
 * sched_sign_apply - the signatures of t are made: the text comes back as job's
 * content and the signatures become its prefix (a key that failed is logged; the
 * message then goes without that signature rather than not at all), the body hash
 * is kept for the message's other jobs, and the keys that signed are noted for the
 * accounting record
 */
static void sched_sign_apply(struct sched *s, struct sched_job *job, struct signpool_task *t)
{
    json_t *who = json_array();
    for (int i = 0; i < t->nkeys; i++) {
        if (t->ok[i]) {
            json_array_append_new(who, json_string(dkim_key_label(t->keys[i])));
            continue;
        }
        char idtxt[MSGID_STR_LEN + 1];
        msgid_format(job->msg->id, idtxt);
        log_event(LOG_WARNING, "dkim_sign",
                  json_pack("{s:s, s:s, s:s, s:s}", "msgid", idtxt, "domain",
                            dkim_key_domain(t->keys[i]), "selector",
                            dkim_key_selector(t->keys[i]), "error", t->err[i]));
    }
    json_decref(job->dkim);
    job->dkim = NULL;
    if (json_array_size(who) > 0) job->dkim = who; /* the job owns the list now */
    else json_decref(who);
    if (t->use_bh && t->bh.valid) job->msg->dkim_bh = t->bh;
    vbuf_free(&job->content);
    job->content = t->text;
    vbuf_init(&t->text, SIZE_MAX);
    vbuf_free(&job->sigs);
    job->sigs = t->sigs;
    vbuf_init(&t->sigs, SIZE_MAX);
    signpool_task_clear(t);
}

/* sched_sign_done - on this worker's loop: a signing thread is done with ss */
static void sched_sign_done(void *ctx, struct mbox_msg *m)
{
    struct sched_sign *ss = (struct sched_sign *)m;
    struct sched *s = ss->s;
    struct sched_job *job = ss->job;
    if (job) {
        job->sign = NULL;
        sched_sign_apply(s, job, &ss->t);
        sched_job_txn_text(job);
        /* a job still here is still its connection's, and the connection still has
         * its session: losing it would have settled or requeued the job */
        smtpc_content_ready(ss->conn->c, &job->txn);
    }
    signpool_task_clear(&ss->t);
    engine_rules_unref(ss->rules);
    free(ss);
    s->pending_ops--;
    if (s->stopping && s->pending_ops == 0 && s->stop_done) s->stop_done(s->stop_arg);
}

/*
 * sched_dkim_sign - sign the content about to be sent: with every dkim.keys key of
 * the From domain (or of its closest parent that has one: relaxed alignment), and
 * every dkim.always key.  The signatures go on top, in front of what they sign.
 * With signing threads (dkim.sign_threads) the text goes to them and job->sign is
 * set: MAIL, RCPT and DATA go out meanwhile, the text when the signatures are made.
 * Inline otherwise, and for a message so near the server's SIZE limit that only
 * its exact size may be declared.  A signing failure sends the message unsigned
 * rather than not at all, and says so.
 */
static void sched_dkim_sign(struct sched *s, struct sched_job *job, struct sched_conn *conn,
                            bool converted)
{
    struct engine_rules *er = s->rules;
    if (er->ndkim_keys == 0 && er->ndkim_always == 0) return;
    char from[256];
    sched_from_domain(job->content.data, job->content.len, from, sizeof from);
    struct sched_sign *ss = xcalloc(1, sizeof *ss);
    struct signpool_task *t = &ss->t;
    for (const char *d = from; *d && t->nkeys == 0; d = strchr(d, '.') ? strchr(d, '.') + 1 : "") {
        for (int i = 0; i < er->ndkim_keys && t->nkeys < CONF_MAX_LIST; i++)
            if (strcmp(dkim_key_domain(er->dkim_keys[i]), d) == 0)
                t->keys[t->nkeys++] = er->dkim_keys[i];
        if (!strchr(d, '.')) break; /* no parent above a top-level label */
    }
    for (int i = 0; i < er->ndkim_always && t->nkeys < SIGNPOOL_MAX_KEYS; i++)
        t->keys[t->nkeys++] = er->dkim_always[i];
    if (t->nkeys == 0) {
        free(ss);
        return;
    }
    struct dkim_params *p = &t->params;
    p->timestamp = now_ms() / 1000;
    const char *cz = s->conf->dkim_canonicalization;
    p->hcanon = strncmp(cz, "simple/", 7) == 0 ? DKIM_CANON_SIMPLE : DKIM_CANON_RELAXED;
    p->bcanon = strcmp(strchr(cz, '/') ? strchr(cz, '/') + 1 : "", "simple") == 0
                    ? DKIM_CANON_SIMPLE
                    : DKIM_CANON_RELAXED;
    p->expire = s->conf->dkim_expire_seconds;
    p->hlist = er->dkim_hlist;
    /* a copy converted to 7 bit has a body of its own; the memo compares octets,
     * so a converted body finds only its own */
    t->use_bh = !converted;
    if (t->use_bh) t->bh = job->msg->dkim_bh;
    t->text = job->content;
    vbuf_init(&job->content, SIZE_MAX);
    size_t estimate = t->text.len + SCHED_SIGN_RESERVE * (size_t)t->nkeys;
    uint64_t limit = conn && conn->c ? smtpc_max_size(conn->c) : 0;
    if (s->p.signpool && conn && conn->c && (limit == 0 || estimate <= limit)) {
        ss->s = s;
        ss->job = job;
        ss->conn = conn;
        ss->rules = engine_rules_ref(er);
        ss->estimate = estimate;
        t->reply = s->p.mbox;
        t->msg.run = sched_sign_done;
        job->sign = ss;
        s->pending_ops++;
        signpool_submit(s->p.signpool, t);
        return;
    }
    signpool_sign(t, s->dkim_memo);
    sched_sign_apply(s, job, t);
    free(ss);
}

/*
 * sched_job_for_server - make job's bytes fit the server conn talks to, then sign
 * them (DKIM covers exactly what is sent): 8-bit text for a server without
 * 8BITMIME is converted to quoted-printable, or refused, per delivery.eightbit.
 * (SMTPUTF8 to a server without it is refused by smtpc: that cannot be converted.)
 */
static void sched_job_for_server(struct sched *s, struct sched_job *job, struct sched_conn *conn)
{
    bool converted = false;
    if (conn && conn->c && !smtpc_has_8bitmime(conn->c) && !job->txn.smtputf8 &&
        mime7_needed(job->content.data, job->content.len)) {
        char why[200], text[300];
        if (strcmp(s->conf->delivery_eightbit, "bounce") == 0) {
            sched_refuse(job, 554, "5.6.3",
                         "8-bit message and the server does not offer 8BITMIME "
                         "(delivery.eightbit = bounce) (local)");
            return;
        }
        struct vbuf seven;
        vbuf_init(&seven, SIZE_MAX);
        if (mime7_convert(job->content.data, job->content.len, &seven, why, sizeof why) < 0) {
            vbuf_free(&seven);
            snprintf(text, sizeof text,
                     "conversion to 7 bit for a server without 8BITMIME failed: %.200s (local)",
                     why);
            sched_refuse(job, 554, "5.6.3", text);
            return;
        }
        vbuf_free(&job->content);
        job->content = seven;
        job->txn.body_8bit = false;
        converted = true;
    }
    sched_dkim_sign(s, job, conn, converted);
}

/* sched_job_unprepare - undo sched_job_prepare (the job goes back to a queue) */
static void sched_job_unprepare(struct sched *s, struct sched_job *job)
{
    sched_sign_detach(job);
    sched_job_warm_return(s, job);
    free(job->mail_from);
    job->mail_from = NULL;
    json_decref(job->dkim);
    job->dkim = NULL;
    vbuf_free(&job->content);
    vbuf_free(&job->sigs);
    free(job->rcpt_ptrs);
    free(job->replies);
    job->rcpt_ptrs = NULL;
    job->replies = NULL;
}

/* sched_job_prepare - load the message text and build the SMTP transaction; -1
 * (job freed) when the message was deleted by an operator since it was loaded */
static int sched_job_prepare(struct sched *s, struct sched_job *job, struct sched_conn *conn)
{
    vbuf_init(&job->content, SIZE_MAX);
    vbuf_init(&job->sigs, SIZE_MAX);
    uint32_t *idx = xcalloc(job->nrcpt, sizeof *idx);
    bool *live = xcalloc(job->nrcpt, sizeof *live);
    for (uint32_t i = 0; i < job->nrcpt; i++)
        idx[i] = job->rcpts[i].idx;
    int rc = spool_msg_content_live(s->p.spool, job->msg->id, &job->content, idx, job->nrcpt, live);
    uint32_t kept = 0;
    for (uint32_t i = 0; rc == 0 && i < job->nrcpt; i++) {
        if (live[i]) {
            job->rcpts[kept++] = job->rcpts[i];
            continue;
        }
        /* suppressed (purged) or deleted since it was loaded: never sent */
        sched_key_del(s, job->msg->id, job->rcpts[i].idx);
        free(job->rcpts[i].addr);
        s->ready--;
    }
    free(idx);
    free(live);
    if (rc == 0) job->nrcpt = kept;
    if (rc < 0 || kept == 0) {
        sched_job_free(s, job, true);
        return -1;
    }
    if (sched_job_per_rcpt(s, job)) sched_job_decorate(s, job);
    job->rcpt_ptrs = xcalloc(job->nrcpt, sizeof *job->rcpt_ptrs);
    job->replies = xcalloc(job->nrcpt, sizeof *job->replies);
    for (uint32_t i = 0; i < job->nrcpt; i++)
        job->rcpt_ptrs[i] = job->rcpts[i].addr;
    memset(&job->txn, 0, sizeof job->txn);
    job->txn.sender = job->mail_from ? job->mail_from : job->msg->sender;
    job->txn.rcpts = job->rcpt_ptrs;
    job->txn.nrcpt = job->nrcpt;
    job->txn.body_8bit = (job->msg->flags & SPOOL_MSG_8BIT) != 0;
    job->txn.smtputf8 = (job->msg->flags & SPOOL_MSG_SMTPUTF8) != 0;
    job->txn.rcpt_reply = job->replies;
    sched_job_for_server(s, job, conn);
    sched_job_txn_text(job);
    return 0;
}

/*
 * sched_job_decorate - the VERP return path and the unsubscribe header lines of
 * job's one recipient (see sched_conn_take): the lines go in front of the stored
 * bytes already loaded into job->content
 */
static void sched_job_decorate(struct sched *s, struct sched_job *job)
{
    struct fb_msg fm = {job->msg->sender, job->msg->campaign, job->msg->list, job->msg->id};
    char mail_from[SPOOL_COUNT_KEY_MAX];
    struct vbuf hdrs;
    vbuf_init(&hdrs, SIZE_MAX);
    fb_decorate(s->conf, s->p.verp, &fm, job->rcpts[0].idx, job->rcpts[0].addr, job->content.data,
                job->content.len, mail_from, sizeof mail_from, &hdrs);
    if (*mail_from) job->mail_from = xstrdup(mail_from);
    if (hdrs.len && vbuf_append(&hdrs, job->content.data, job->content.len) == 0) {
        vbuf_free(&job->content);
        job->content = hdrs;
    } else {
        vbuf_free(&hdrs);
    }
}

/* sched_job_per_rcpt - does job's message get a VERP return path or unsubscribe
 * headers, which differ per recipient? */
static bool sched_job_per_rcpt(struct sched *s, const struct sched_job *job)
{
    struct fb_msg fm = {job->msg->sender, job->msg->campaign, job->msg->list, job->msg->id};
    return s->p.verp && fb_decorate_needed(s->conf, s->p.verp, &fm, NULL, 0);
}

/* sched_job_split - keep the first keep recipients in job; the rest become a job
 * of their own at the head of the site's queue (a rule allows fewer per transaction
 * than the loader grouped) */
static void sched_job_split(struct sched_site *site, struct sched_job *job, uint32_t keep)
{
    struct sched_job *rest = xcalloc(1, sizeof *rest);
    rest->msg = job->msg;
    job->msg->refs++;
    rest->pool = job->pool;
    rest->pool_gen = job->pool_gen;
    rest->src = job->src;
    rest->dom = job->dom;
    rest->nrcpt = rest->cap = job->nrcpt - keep;
    rest->rcpts = xcalloc(rest->cap, sizeof *rest->rcpts);
    memcpy(rest->rcpts, job->rcpts + keep, rest->nrcpt * sizeof *rest->rcpts);
    job->nrcpt = keep;
    sched_site_unpick(site, rest);
}

/*
 * sched_conn_take - a prepared job conn's pair may send now, taking the pair's
 * message token (and warm-up count); NULL when there is none or the pair has to
 * wait, in which case the site is woken when it may.  chain_dom as sched_site_pick.
 */
static struct sched_job *sched_conn_take(struct sched_conn *conn,
                                         const struct sched_domain *chain_dom)
{
    struct sched *s = conn->s;
    struct sched_site *site = conn->site;
    struct sched_pair *p = conn->pair;
    int64_t now = now_ms();
    int64_t wait = sched_send_wait(s, site, p, now);
    if (wait > 0) {
        sched_site_wake_in(site, wait);
        return NULL;
    }
    struct sched_job *job;
    do {
        job = sched_site_pick(s, site, chain_dom, p);
        if (!job) return NULL;
        uint32_t maxr = sched_job_per_rcpt(s, job)
                            ? 1
                            : (uint32_t)site->lim.max_recipients_per_transaction;
        if (job->nrcpt > maxr) sched_job_split(site, job, maxr);
    } while (sched_job_prepare(s, job, conn) < 0);
    /* the warm-up count first: sched_pair_wait saw room, but another worker sending
     * to a site of the same class may have taken it since */
    int64_t cap = shape_warmup_cap(shape_source(sched_rules(s), p->src), now);
    int64_t day = now / WARMUP_DAY_MS;
    if (cap >= 0) {
        uint8_t key[WARMUP_KEY_MAX];
        size_t kl = warmup_key(key, sizeof key, p->source, site->lim.rule, day);
        if (!warmup_take(s->p.warmup, p->source, site->lim.rule, day, cap)) {
            sched_job_unprepare(s, job);
            sched_site_unpick(site, job);
            sched_site_wake_in(site, WARMUP_DAY_MS - now % WARMUP_DAY_MS);
            return NULL;
        }
        job->warm_key = xmalloc(kl);
        memcpy(job->warm_key, key, kl);
        job->warm_keylen = kl;
    }
    if (!shape_state_may_send(&p->st, now, &wait)) {
        sched_job_unprepare(s, job);
        sched_site_unpick(site, job);
        sched_site_wake_in(site, wait);
        return NULL;
    }
    shape_bucket_take(&site->msg_bucket, now); /* there was one: its wait was 0 */
    sched_pair_sent(p, now);
    return job;
}

/*
 * sched_conn_chain - with PIPELINING, queue one more job behind the one conn is
 * sending, so its commands share a write with the current message's "."
 */
static void sched_conn_chain(struct sched_conn *conn)
{
    struct sched *s = conn->s;
    if (!s->conf->delivery_pipeline_next || !conn->job || conn->next_job || !conn->c ||
        !smtpc_has_pipelining(conn->c) ||
        conn->nsent + 2 > conn->site->lim.max_messages_per_connection)
        return;
    struct sched_job *job = sched_conn_take(conn, conn->job->dom);
    if (!job) return;
    job->dom->active++;
    conn->next_job = job;
    if (smtpc_send(conn->c, &job->txn) < 0) {
        conn->next_job = NULL;
        job->dom->active--;
        sched_job_unprepare(s, job);
        sched_site_unpick(conn->site, job);
    }
}

/* sched_conn_next - give conn its next job, or park it idle / quit */
static void sched_conn_next(struct sched_conn *conn)
{
    struct sched *s = conn->s;
    struct sched_site *site = conn->site;
    if (s->stopping) return;
    /* over the pair's limit now (a backoff, a suspension, a closing window, a source
     * dropped by a reload) or done with its share of messages: leave */
    if (conn->nsent >= site->lim.max_messages_per_connection || conn->pair->src < 0 ||
        conn->pair->nconn > shape_state_max_conn(&conn->pair->st, &site->lim, now_ms())) {
        smtpc_quit(conn->c);
        conn->state = SCHED_CONN_BUSY;
        return;
    }
    struct sched_job *job = sched_conn_take(conn, NULL);
    if (!job) {
        /* the idle clock starts when the connection goes idle, not at each look */
        conn->state = SCHED_CONN_IDLE;
        struct timeval tv = {s->conf->delivery_idle_timeout, 0};
        if (!evtimer_pending(conn->idle_ev, NULL)) evtimer_add(conn->idle_ev, &tv);
        return;
    }
    evtimer_del(conn->idle_ev);
    conn->job = job;
    conn->state = SCHED_CONN_BUSY;
    job->dom->active++;
    if (smtpc_send(conn->c, &job->txn) < 0) {
        job->dom->active--;
        conn->job = NULL;
        sched_job_unprepare(s, job);
        sched_site_unpick(site, job); /* back to the queue */
        smtpc_quit(conn->c);
        return;
    }
    sched_conn_chain(conn);
}

static void sched_conn_idle_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sched_conn *conn = arg;
    if (conn->state == SCHED_CONN_IDLE) {
        conn->state = SCHED_CONN_BUSY;
        smtpc_quit(conn->c);
    }
}

static void sched_conn_ready(void *arg)
{
    struct sched_conn *conn = arg;
    conn->site->nconnecting--;
    conn->state = SCHED_CONN_IDLE;
    str_copy(conn->tls, sizeof conn->tls, smtpc_tls_version(conn->c));
    str_copy(conn->cipher, sizeof conn->cipher, smtpc_tls_cipher(conn->c));
    if (smtpc_tls_fallback(conn->c))
        log_event(
            LOG_NOTICE, "tls_fallback",
            json_pack("{s:s, s:s, s:s}", "site", conn->site->name, "mx", conn->mx, "ip", conn->ip));
    sched_conn_next(conn);
}

/* sched_conn_done - a transaction of conn finished: settle its job; the chained
 * job, if any, is now the current one (or was refused locally first) */
static void sched_conn_done(void *arg, struct smtpc_txn *t)
{
    struct sched_conn *conn = arg;
    struct sched *s = conn->s;
    struct sched_job *job;
    if (conn->job && t == &conn->job->txn) {
        job = conn->job;
        conn->job = conn->next_job;
        conn->next_job = NULL;
    } else if (conn->next_job && t == &conn->next_job->txn) {
        job = conn->next_job;
        conn->next_job = NULL;
    } else {
        return; /* not ours: cannot happen */
    }
    conn->nsent++;
    job->dom->active--;
    if (t->data_reply.code >= 200 && t->data_reply.code < 300)
        shape_state_success(&conn->pair->st, &conn->site->lim);
    sched_finish(s, job, conn, NULL);
    if (conn->job)
        sched_conn_chain(conn);
    else
        sched_conn_next(conn);
    sched_dispatch(s, conn->site);
}

/* sched_site_down - no host of the site could be reached: defer what waits there
 * and refuse new work for site_down_seconds */
static void sched_site_down(struct sched *s, struct sched_site *site, const char *why)
{
    site->down_until_ms = now_ms() + s->conf->delivery_site_down_s * 1000;
    str_copy(site->down_reason, sizeof site->down_reason, why);
    log_event(LOG_NOTICE, "site_down",
              json_pack("{s:s, s:s, s:I}", "site", site->name, "reason", why, "seconds",
                        (json_int_t)s->conf->delivery_site_down_s));
    struct smtpc_reply r;
    sched_reply_set(&r, 0, "4.4.1", why);
    sched_finish_list(s, sched_site_drain(site), &r);
}

static void sched_conn_closed(void *arg, enum SMTPC_FAIL why, const struct smtpc_reply *last)
{
    struct sched_conn *conn = arg;
    struct sched *s = conn->s;
    struct sched_site *site = conn->site;
    bool was_connecting = conn->state == SCHED_CONN_CONNECTING;
    conn->c = NULL; /* it frees itself after this returns */
    if (why != SMTPC_FAIL_NONE && !conn->job) {
        /* a failure no transaction reports (connect, banner, EHLO): tell the pair */
        struct smtpc_reply rep = {0};
        if (last && last->code) rep = *last;
        else sched_reply_set(&rep, 0, "", smtpc_fail_str(why));
        struct shape_response resp;
        sched_shape_reply(s, conn, &rep, true, &resp);
    }
    if (conn->next_job) {
        struct sched_job *job = conn->next_job;
        conn->next_job = NULL;
        job->dom->active--;
        if (job->txn.sent) {
            job->txn.fail = job->txn.fail ? job->txn.fail : why;
            sched_finish(s, job, conn, NULL);
        } else { /* never attempted: back to the queue, no try counted */
            sched_job_unprepare(s, job);
            sched_site_unpick(site, job);
        }
    }
    if (conn->job) {
        struct sched_job *job = conn->job;
        conn->job = NULL;
        job->dom->active--;
        job->txn.fail = job->txn.fail ? job->txn.fail : why;
        sched_finish(s, job, conn, NULL);
    }
    if (was_connecting && why != SMTPC_FAIL_NONE && !s->stopping) {
        /* this host could not be used: try the next address, then the next host */
        char reason[300];
        int n = snprintf(reason, sizeof reason, "%s with %.100s[%.60s]", smtpc_fail_str(why),
                         conn->mx, conn->ip);
        if (last && last->code && n > 0 && (size_t)n < sizeof reason)
            snprintf(reason + n, sizeof reason - (size_t)n, ": %d %.100s", last->code, last->text);
        str_copy(site->last_reply, sizeof site->last_reply, reason);
        conn->addr_i++;
        if (sched_conn_start(conn) == 0) return;
        site->nconnecting--;
        conn->state = SCHED_CONN_BUSY;
        sched_conn_free(conn);
        if (site->nconn == 0) sched_site_down(s, site, reason);
        return;
    }
    sched_conn_free(conn);
    if (!s->stopping) sched_dispatch(s, site);
}

static void sched_site_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sched_site *site = arg;
    sched_dispatch(site->s, site);
}

/*
 * sched_site_shape_tick - time passes for the site's pairs (suspensions and
 * backoffs end, recovery steps up: logged), and queued jobs that no source of their
 * pool could send within SCHED_HOLD_MAX_MS go back to the spool until it could,
 * so a throttled site never holds the ready slots other sites need
 */
static void sched_site_shape_tick(struct sched *s, struct sched_site *site, int64_t now)
{
    for (int k = 0; k < site->npairs; k++) {
        struct sched_pair *p = site->pairs[k];
        enum SHAPE_EVENT ev = shape_state_tick(&p->st, &site->lim, now);
        if (ev != SHAPE_EV_NONE) sched_shape_log(s, site, p, ev, NULL, now);
    }
    bool any_held = false; /* the common case: every pair can send soon, nothing to do */
    for (int k = 0; k < site->npairs && !any_held; k++)
        any_held = sched_pair_wait(s, site, site->pairs[k], now) > SCHED_HOLD_MAX_MS;
    if (!any_held || !site->queued) return;
    struct sched_job *held = NULL;
    for (struct sched_lane *l = TAILQ_FIRST(&site->lanes), *lnext; l; l = lnext) {
        lnext = TAILQ_NEXT(l, turn);
        for (struct sched_job *job = l->head, *prev = NULL, *jnext; job; job = jnext) {
            jnext = job->next;
            const struct shape_pool *pool = sched_job_pool(s, job);
            int64_t best = INT64_MAX;
            for (int i = 0; pool && i < pool->nmembers && best > 0; i++) {
                struct sched_pair *p = sched_site_pair(site, pool->members[i].source);
                int64_t w = p ? sched_pair_wait(s, site, p, now) : INT64_MAX;
                if (w < best) best = w;
            }
            if (best <= SCHED_HOLD_MAX_MS) {
                prev = job;
                continue;
            }
            sched_lane_take(site, l, prev, job, false); /* the last one frees l */
            job->hold_until_ms = best == INT64_MAX ? now + 3600000 : now + best;
            job->next = held;
            held = job;
        }
    }
    while (held) {
        struct sched_job *job = held;
        held = job->next;
        const struct shape_pool *pool = sched_job_pool(s, job);
        struct smtpc_reply r;
        char t[40], text[300];
        snprintf(text, sizeof text,
                 "held: no source of pool %s may send to site %s before %s (suspended, "
                 "warm-up cap or source removed)",
                 pool ? pool->name : "?", site->name, time_rfc3339(job->hold_until_ms, t, sizeof t));
        sched_reply_set(&r, 0, "4.7.0", text);
        sched_finish(s, job, NULL, &r);
    }
}

/*
 * sched_pair_spare - pair has a connection that is idle or still connecting.  Under
 * a rate limit another one would only wait for the same tokens: connections grow
 * only while every one of the pair's is busy.
 */
static bool sched_pair_spare(const struct sched_site *site, const struct sched_pair *p)
{
    for (const struct sched_conn *c = site->conns; c; c = c->next)
        if (c->pair == p && (c->state == SCHED_CONN_IDLE || c->state == SCHED_CONN_CONNECTING))
            return true;
    return false;
}

/*
 * sched_pair_can_open - may pair open a connection now, its connection token
 * aside?  Under its connection limit (which a backoff or the window may have
 * lowered), no spare connection under a rate limit, and able to send now (not
 * suspended, capped or out of message tokens); lowers *wait when it only has to
 * wait.
 */
static bool sched_pair_can_open(struct sched *s, const struct sched_site *site,
                                const struct sched_pair *p, int64_t now, int64_t *wait)
{
    if (p->nconn >= shape_state_max_conn(&p->st, &site->lim, now)) return false;
    if (shape_state_rate(&p->st, &site->lim) > 0 && sched_pair_spare(site, p)) return false;
    int64_t w = sched_send_wait(s, site, p, now);
    if (w > 0) {
        if (w < *wait) *wait = w;
        return false;
    }
    return true;
}

/*
 * sched_pair_may_connect - take a connection token from pair and from the site's
 * own connection rate (both or neither); lowers *wait when it has to wait
 */
static bool sched_pair_may_connect(struct sched_site *site, struct sched_pair *p, int64_t now,
                                   int64_t *wait)
{
    int64_t w = shape_bucket_wait_ms(&site->conn_bucket, now);
    if (w == 0 && shape_state_may_connect(&p->st, now, &w)) {
        shape_bucket_take(&site->conn_bucket, now);
        return true;
    }
    if (w < *wait) *wait = w;
    return false;
}

/*
 * sched_pool_choose - a pair of the site that may open a connection now for a job
 * of pool: weighted at random among the pool's sources whose pair can open
 * (sched_pair_can_open) and has a connection token.  Sets *wait when one only has
 * to wait.
 */
static struct sched_pair *sched_pool_choose(struct sched *s, struct sched_site *site,
                                            const struct shape_pool *pool, int64_t now,
                                            int64_t *wait)
{
    struct sched_pair *cand[64];
    int weight[64], n = 0, total = 0;
    for (int i = 0; pool && i < pool->nmembers && n < 64; i++) {
        struct sched_pair *p = sched_site_pair(site, pool->members[i].source);
        if (!p || !sched_pair_can_open(s, site, p, now, wait)) continue;
        cand[n] = p;
        weight[n] = pool->members[i].weight;
        total += weight[n++];
    }
    while (n > 0) {
        int r = (int)(random() % total), k = 0;
        while (r >= weight[k])
            r -= weight[k++];
        if (sched_pair_may_connect(site, cand[k], now, wait)) return cand[k];
        total -= weight[k];
        cand[k] = cand[n - 1];
        weight[k] = weight[n - 1];
        n--;
    }
    return NULL;
}

/*
 * sched_site_evict_idle - the site is at its connection limit and job waits:
 * close one idle connection of a pair the job does not fit (it has nothing to do,
 * or it would not be idle) so the job's source can connect.  Returns 1 when it
 * closed one, 0 when an idle connection the job fits exists (the job waits for a
 * token, not a slot), -1 when no connection is idle at all.
 */
static int sched_site_evict_idle(struct sched *s, struct sched_site *site,
                                 struct sched_job *job, int64_t now)
{
    struct sched_conn *victim = NULL;
    bool any_idle = false;
    for (struct sched_conn *c = site->conns; c; c = c->next) {
        if (c->state != SCHED_CONN_IDLE) continue;
        any_idle = true;
        if (sched_job_fits(s, site, job, c->pair, now)) return 0;
        victim = c;
    }
    if (!victim) return any_idle ? 0 : -1;
    evtimer_del(victim->idle_ev);
    victim->state = SCHED_CONN_BUSY;
    smtpc_quit(victim->c);
    return 1;
}

/*
 * sched_job_open_pair - the pair to open a connection for job with: the source
 * meant for it when that one may connect; NULL when the job should wait for that
 * source's connections; any fitting source of its pool when the meant one cannot
 * send soon (sched_pool_choose)
 */
static struct sched_pair *sched_job_open_pair(struct sched *s, struct sched_site *site,
                                              struct sched_job *job, int64_t now, int64_t *wait)
{
    const struct shape_pool *pool = sched_job_pool(s, job);
    struct sched_pair *meant = job->src >= 0 ? sched_site_pair(site, job->src) : NULL;
    if (!meant || sched_pair_wait(s, site, meant, now) > SCHED_REASSIGN_MS)
        return sched_pool_choose(s, site, pool, now, wait);
    if (!sched_pair_can_open(s, site, meant, now, wait)) return NULL;
    return sched_pair_may_connect(site, meant, now, wait) ? meant : NULL;
}

/* sched_dispatch - put idle connections to work and open new ones as allowed */
static void sched_dispatch(struct sched *s, struct sched_site *site)
{
    if (s->stopping) return;
    for (struct sched_conn *conn = site->conns; conn && site->queued; conn = conn->next)
        if (conn->state == SCHED_CONN_IDLE) sched_conn_next(conn);
    int64_t now = now_ms(), wait = INT64_MAX;
    int scanned = 0;
    struct sched_lane *l = TAILQ_FIRST(&site->lanes);
    struct sched_job *job = l ? l->head : NULL;
    for (; job && scanned < SCHED_OPEN_SCAN && (size_t)site->nconnecting < site->queued;
         scanned++, job = job->next ? job->next : (l = TAILQ_NEXT(l, turn)) ? l->head : NULL) {
        if (site->nconn >= site->lim.max_connections_site) {
            /* full: make room for this job's pool, one connection per pass (the
             * closing connection dispatches again) */
            if (sched_site_evict_idle(s, site, job, now) != 0) break;
            continue;
        }
        struct sched_pair *pair = sched_job_open_pair(s, site, job, now, &wait);
        if (!pair) continue;
        struct sched_conn *conn = xcalloc(1, sizeof *conn);
        conn->s = s;
        conn->site = site;
        conn->pair = pair;
        pair->nconn++;
        conn->idle_ev = evtimer_new(s->p.base, sched_conn_idle_cb, conn);
        conn->next = site->conns;
        site->conns = conn;
        site->nconn++;
        site->nconnecting++;
        if (sched_conn_start(conn) < 0) {
            conn->state = SCHED_CONN_CONNECTING;
            sched_conn_free(conn);
            sched_site_down(s, site, "no MX host has a usable address");
            return;
        }
    }
    if (site->queued && wait != INT64_MAX) sched_site_wake_in(site, wait);
}

/* ---------------------------------------------------------------- routing */

/* sched_enqueue - put job on its site's queue, or settle it when the site is down */
static void sched_enqueue(struct sched *s, struct sched_job *job)
{
    struct sched_site *site = job->dom->site;
    if (site->down_until_ms > now_ms()) {
        struct smtpc_reply r;
        sched_reply_set(&r, 0, "4.4.1", site->down_reason);
        sched_finish(s, job, NULL, &r);
        return;
    }
    job->src = sched_site_turn(s, site, sched_job_pool(s, job), now_ms());
    sched_lane_push(site, job, false);
    sched_dispatch(s, site);
}

/* sched_dns_done - a domain's route arrived: place or settle its waiting jobs */
static void sched_dns_done(void *arg, const char *dnsname, const struct dns_route *r)
{
    struct sched_domain *d = arg;
    struct sched *s = d->s;
    const char *domain = d->name;
    d->resolving = false;
    d->dns_req = 0;
    struct sched_job *list = d->wait_head;
    d->wait_head = NULL;
    d->wait_tail = &d->wait_head;

    if (r->status != DNS_OK) {
        struct smtpc_reply rep;
        switch (r->status) {
        case DNS_NXDOMAIN:
            sched_reply_set(&rep, 550, "5.1.2", r->error);
            break;
        case DNS_NULLMX:
            sched_reply_set(&rep, 556, "5.1.10", r->error);
            break;
        case DNS_NOHOST:
            sched_reply_set(&rep, 550, "5.4.4", r->error);
            break;
        default:
            sched_reply_set(&rep, 451, "4.4.3", r->error);
            break;
        }
        if (!rep.text[0])
            snprintf(rep.text, sizeof rep.text, "DNS lookup of %s: %s", domain,
                     dns_status_str(r->status));
        log_event(LOG_INFO, "dns_fail",
                  json_pack("{s:s, s:s, s:s}", "domain", domain, "status",
                            dns_status_str(r->status), "error", rep.text));
        sched_finish_list(s, list, &rep);
        return;
    }
    char *name;
    char *key = sched_site_key(s, r, &name);
    struct sched_site *site = sched_site_get(s, key, name);
    sched_site_set_hosts(site, r);
    if (!site->npairs) { /* new: its limits, one pair per source */
        str_copy(site->first_domain, sizeof site->first_domain, domain);
        site->wake = evtimer_new(s->p.base, sched_site_wake_cb, site);
        sched_site_match(s, site);
        sched_site_sync_pairs(s, site, now_ms());
    } else if (d->site != site && strcmp(site->lim.rule, "default") == 0) {
        /* no rule named the site yet: a domain joining it may (a provider's rule,
         * matched by one of its domains or MX names, holds for all it receives) */
        str_copy(site->first_domain, sizeof site->first_domain, domain);
        sched_site_match(s, site);
        if (strcmp(site->lim.rule, "default") != 0) sched_site_sync_pairs(s, site, now_ms());
    }
    d->site = site;
    d->expires_ms = r->expires_ms;
    while (list) {
        struct sched_job *next = list->next;
        sched_enqueue(s, list);
        list = next;
    }
}

/* sched_route - send a job towards its site, resolving its domain when needed */
static void sched_route(struct sched *s, struct sched_job *job)
{
    struct sched_domain *d = job->dom;
    if (d->site && d->expires_ms > now_ms()) {
        sched_enqueue(s, job);
        return;
    }
    job->next = NULL;
    *d->wait_tail = job;
    d->wait_tail = &job->next;
    if (d->resolving)
        return;
    /* an SMTPUTF8 domain is looked up by its A-label (RFC 5890) */
    char *alabel = NULL;
    bool ascii = true;
    for (const char *p = d->name; *p; p++)
        ascii &= (unsigned char)*p < 0x80;
    if (!ascii && idn2_to_ascii_8z(d->name, &alabel, IDN2_NONTRANSITIONAL) != IDN2_OK) {
        struct smtpc_reply rep;
        sched_reply_set(&rep, 550, "5.1.2", "recipient domain is not a valid IDN");
        struct sched_job *list = d->wait_head;
        d->wait_head = NULL;
        d->wait_tail = &d->wait_head;
        sched_finish_list(s, list, &rep);
        return;
    }
    d->resolving = true;
    d->dns_req = dns_resolve(s->p.dns, alabel ? alabel : d->name, sched_dns_done, d);
    free(alabel);
}

/* ---------------------------------------------------------------- loader */

/* sched_flush_open - route the jobs built for the last message */
static void sched_flush_open(struct sched *s)
{
    for (size_t i = 0; i < s->nopen; i++)
        sched_route(s, s->open[i]);
    s->nopen = 0;
}

/* sched_load_want - spool_load_rcpts filter with more than one worker: is domain
 * (len octets, compared case-blind) this worker's?  Each domain has one worker. */
static bool sched_load_want(void *arg, const char *domain, size_t len)
{
    struct sched *s = arg;
    char lower[DNS_NAME_MAX];
    if (len >= sizeof lower) len = sizeof lower - 1;
    memcpy(lower, domain, len);
    lower[len] = '\0';
    str_lower(lower);
    return sched_hash_str(lower) % (uint64_t)s->p.nworkers == (uint64_t)s->p.worker_index;
}

/* sched_load_one - spool_load_rcpts callback: add a due recipient to a job (of
 * this worker's domains: sched_load_want decided on the stored octets, so that
 * exactly one worker takes each recipient) */
static void sched_load_one(void *arg, const struct spool_due_item *item,
                           const struct spool_msg_info *m, const struct spool_rcpt_info *r)
{
    struct sched *s = arg;
    const char *domain = r->domain;
    char lower[DNS_NAME_MAX];
    str_copy(lower, sizeof lower, domain);
    str_lower(lower);
    if (r->state != SPOOL_RCPT_QUEUED || sched_key_has(s, item->id, item->idx)) return;
    sched_key_add(s, item->id, item->idx);
    s->ready++;

    if (s->nopen && s->open[0]->msg->id != m->id)
        sched_flush_open(s);
    struct sched_job *job = NULL;
    for (size_t i = 0; i < s->nopen && !job; i++)
        if (strcmp(s->open[i]->dom->name, lower) == 0 &&
            s->open[i]->nrcpt < (uint32_t)s->conf->delivery_max_rcpts_per_txn)
            job = s->open[i];
    if (!job) {
        job = xcalloc(1, sizeof *job);
        job->src = -1;
        struct sched_msg *msg = s->nopen ? s->open[0]->msg : NULL;
        if (!msg) {
            msg = xcalloc(1, sizeof *msg);
            msg->id = m->id;
            msg->sender = xstrdup(m->sender);
            msg->campaign = xstrdup(m->campaign);
            msg->pool = xstrdup(m->pool ? m->pool : "");
            msg->list = xstrdup(m->list ? m->list : "");
            msg->flags = m->flags;
            msg->created_ms = m->created_ms;
        }
        msg->refs++;
        job->msg = msg;
        job->dom = sched_domain_get(s, lower);
        if (s->nopen == s->capopen) {
            s->capopen = s->capopen ? s->capopen * 2 : 8;
            s->open = xrealloc(s->open, s->capopen * sizeof *s->open);
        }
        s->open[s->nopen++] = job;
    }
    if (job->nrcpt == job->cap) {
        job->cap = job->cap ? job->cap * 2 : 4;
        job->rcpts = xrealloc(job->rcpts, job->cap * sizeof *job->rcpts);
    }
    struct sched_rcpt *rc = &job->rcpts[job->nrcpt++];
    rc->idx = item->idx;
    rc->attempts = r->attempts;
    rc->addr = xstrdup(r->addr);
}

/* sched_load_scan - load due keys after *cur (all from from_ms when !*have), up to
 * max_ready (a batch never takes more than the room left); *cur follows the scan */
static void sched_load_scan(struct sched *s, struct spool_due_item *cur, bool *have,
                            int64_t from_ms, int64_t now)
{
    struct spool_due_item items[SCHED_SCAN_BATCH];
    const size_t max = (size_t)s->conf->delivery_max_ready;
    while (s->ready < max) {
        size_t want = max - s->ready < SCHED_SCAN_BATCH ? max - s->ready : SCHED_SCAN_BATCH;
        int n = spool_due_scan(s->p.spool, *have ? cur : NULL, from_ms, now, items, want);
        if (n <= 0) break;
        *cur = items[n - 1];
        *have = true;
        /* Recipients already in memory are dropped before their records are read:
         * under a backlog the rewind scan meets mostly those (seconds of mail not
         * yet sent), and decoding each again cost more than sending it. */
        size_t fresh = 0;
        for (int i = 0; i < n; i++)
            if (!sched_key_has(s, items[i].id, items[i].idx)) items[fresh++] = items[i];
        if (fresh > 0) {
            spool_load_rcpts(s->p.spool, items, fresh, s->p.nworkers > 1 ? sched_load_want : NULL,
                             sched_load_one, s);
            sched_flush_open(s);
        }
        if ((size_t)n < want) break;
    }
}

/*
 * sched_load - pull due recipients into memory, up to max_ready; returns how many.
 * The rewind scan has a cursor of its own: were it to move the main one to the
 * newest keys, every key between the two would wait for the next full rescan (with
 * a backlog of more than a few seconds of mail, a stall of up to a minute).
 */
static size_t sched_load(struct sched *s)
{
    int64_t now = now_ms();
    size_t before = s->ready;
    if (now - s->last_full_ms >= SCHED_FULL_SCAN_MS) {
        s->have_cursor = false; /* from the first key again */
        s->last_full_ms = s->last_rewind_ms = now;
    } else if (now - s->last_rewind_ms >= 1000) {
        struct spool_due_item rewind;
        bool have = false;
        sched_load_scan(s, &rewind, &have, s->last_rewind_ms - SCHED_REWIND_MS, now);
        s->last_rewind_ms = now;
    }
    sched_load_scan(s, &s->cursor, &s->have_cursor, 0, now);
    return s->ready - before;
}

static void sched_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sched *s = arg;
    if (s->stopping) return;
    int64_t now = now_ms();
    if (now - s->last_shape_ms >= 100) {
        s->last_shape_ms = now;
        for (struct sched_site *site = s->sites; site; site = site->next) {
            sched_site_shape_tick(s, site, now);
            if (site->queued) sched_dispatch(s, site);
        }
    }
    size_t got = sched_load(s);
    struct timeval tv = {0, (got ? SCHED_TICK_BUSY_MS : SCHED_TICK_IDLE_MS) * 1000};
    evtimer_add(s->tick, &tv);
}

void sched_poke(struct sched *s)
{
    if (s->stopping) return;
    struct timeval now = {0, 0};
    evtimer_add(s->tick, &now);
}

/* ---------------------------------------------------------------- public */

struct sched *sched_new(const struct sched_params *p)
{
    struct sched *s = xcalloc(1, sizeof *s);
    s->p = *p;
    s->conf = p->conf;
    s->rules = p->rules; /* the reference is ours now */
    s->rules_gen = 1;
    s->tick = evtimer_new(p->base, sched_tick_cb, s);
    s->acct_ev = evtimer_new(p->base, sched_acct_flush_cb, s);
    vbuf_init(&s->acct, 1 << 20);
    s->dkim_memo = dkim_body_memo_new(SCHED_DKIM_MEMO_BODIES, SCHED_DKIM_MEMO_MAX);
    s->last_full_ms = s->last_rewind_ms = now_ms();
    sched_key_grow(s);
    sched_poke(s);
    return s;
}

void sched_retry(struct sched *s, const char *domain)
{
    for (struct sched_site *site = s->sites; site; site = site->next)
        site->down_until_ms = 0;
    for (size_t i = 0; i < s->domcap; i++)
        for (struct sched_domain *d = s->domtab[i]; d; d = d->next)
            if (!domain || !*domain || strcmp(d->name, domain) == 0) d->expires_ms = 0;
    dns_flush(s->p.dns);
    s->last_rewind_ms = 0; /* force a rewind: the retried keys are "now" */
    sched_poke(s);
}

void sched_stop(struct sched *s, void (*done)(void *arg), void *arg)
{
    s->stopping = true;
    s->stop_done = done;
    s->stop_arg = arg;
    evtimer_del(s->tick);
    for (struct sched_site *site = s->sites; site; site = site->next) {
        while (site->conns) {
            struct sched_conn *conn = site->conns;
            if (conn->c) smtpc_abort(conn->c);
            if (conn->job) {
                conn->job->dom->active--;
                sched_job_free(s, conn->job, true);
            }
            if (conn->next_job) {
                conn->next_job->dom->active--;
                sched_job_free(s, conn->next_job, true);
            }
            sched_conn_free(conn);
        }
        for (struct sched_job *job = sched_site_drain(site), *nx; job; job = nx) {
            nx = job->next;
            sched_job_free(s, job, true);
        }
    }
    for (size_t i = 0; i < s->domcap; i++) {
        for (struct sched_domain *d = s->domtab[i]; d; d = d->next) {
            if (d->resolving) dns_cancel(s->p.dns, d->dns_req);
            d->resolving = false;
            while (d->wait_head) {
                struct sched_job *job = d->wait_head;
                d->wait_head = job->next;
                sched_job_free(s, job, true);
            }
            d->wait_tail = &d->wait_head;
        }
    }
    if (s->pending_ops == 0 && done) done(arg);
}

void sched_free(struct sched *s)
{
    if (!s) return;
    engine_rules_unref(s->rules);
    dkim_body_memo_free(s->dkim_memo);
    for (size_t i = 0; i < s->domcap; i++) {
        for (struct sched_domain *d = s->domtab[i], *nx; d; d = nx) {
            nx = d->next;
            free(d->name);
            free(d);
        }
    }
    free(s->domtab);
    for (struct sched_site *site = s->sites, *nx; site; site = nx) {
        nx = site->next;
        for (int i = 0; i < site->nhosts; i++) {
            free(site->hosts[i].name);
            free(site->hosts[i].addr);
        }
        free(site->hosts);
        free(site->key);
        free(site->name);
        for (int k = 0; k < site->npairs; k++)
            free(site->pairs[k]);
        free(site->pairs);
        for (struct sched_turns *t = site->turns, *tn; t; t = tn) {
            tn = t->next;
            free(t->cur);
            free(t);
        }
        if (site->wake) event_free(site->wake);
        free(site);
    }
    free(s->keys);
    free(s->open);
    log_acct_flush(&s->acct);
    vbuf_free(&s->acct);
    event_free(s->acct_ev);
    event_free(s->tick);
    free(s);
}

void sched_set_rules(struct sched *s, struct engine_rules *er)
{
    engine_rules_unref(s->rules);
    s->rules = er;
    s->rules_gen++;
    int64_t now = now_ms();
    for (struct sched_site *site = s->sites; site; site = site->next) {
        if (!site->npairs) continue;
        sched_site_match(s, site);
        sched_site_sync_pairs(s, site, now);
        if (site->queued && !s->stopping) sched_dispatch(s, site);
    }
}

int sched_shape_admin(struct sched *s, const char *site_name, const char *source, bool suspend,
                      int64_t until_ms)
{
    int n = 0;
    int64_t now = now_ms();
    for (struct sched_site *site = s->sites; site; site = site->next) {
        if (strcmp(site->name, site_name) != 0) continue;
        for (int k = 0; k < site->npairs; k++) {
            struct sched_pair *p = site->pairs[k];
            if (source && *source && strcmp(p->source, source) != 0) continue;
            if (suspend) {
                shape_state_suspend(&p->st, until_ms, "manual");
                sched_shape_log(s, site, p, SHAPE_EV_SUSPEND, NULL, now);
            } else {
                shape_state_resume(&p->st, &site->lim, now);
                sched_shape_log(s, site, p, SHAPE_EV_RESUME, NULL, now);
            }
            n++;
        }
        if (!suspend && site->queued && !s->stopping) sched_dispatch(s, site);
    }
    return n;
}

/* sched_pair_json - one (source, site) pair for volleyctl sites */
static json_t *sched_pair_json(struct sched *s, const struct sched_site *site,
                               struct sched_pair *p, int64_t now)
{
    char t[40] = "";
    if (p->st.mode == SHAPE_SUSPENDED || p->st.mode == SHAPE_BACKOFF)
        time_rfc3339(p->st.until_ms, t, sizeof t);
    int64_t cap = p->src >= 0 ? shape_warmup_cap(shape_source(sched_rules(s), p->src), now) : -1;
    /* under warm-up, the class's count (every site of the class, every worker) */
    int64_t today = cap >= 0 ? warmup_count(s->p.warmup, p->source, site->lim.rule,
                                            now / WARMUP_DAY_MS)
                             : p->day == now / WARMUP_DAY_MS ? p->sent_today : 0;
    return json_pack("{s:s, s:b, s:s, s:s, s:s, s:i, s:i, s:f, s:f, s:I, s:I, s:I}", "source",
                     p->source, "active", p->src >= 0, "state", shape_mode_str(p->st.mode),
                     "until", t, "rule", p->st.why_rule, "connections", p->nconn,
                     "max_connections", shape_state_max_conn(&p->st, &site->lim, now), "rate",
                     shape_state_rate(&p->st, &site->lim), "window", p->st.window,
                     "sent_last_minute", (json_int_t)sched_pair_last_minute(p, now),
                     "sent_today", (json_int_t)today, "warmup_cap", (json_int_t)cap);
}

json_t *sched_sites_json(struct sched *s)
{
    json_t *arr = json_array();
    int64_t now = now_ms();
    for (struct sched_site *site = s->sites; site; site = site->next) {
        json_t *hosts = json_array();
        for (int i = 0; i < site->nhosts; i++)
            json_array_append_new(hosts, json_string(site->hosts[i].name));
        int idle = 0;
        for (struct sched_conn *c = site->conns; c; c = c->next)
            idle += c->state == SCHED_CONN_IDLE;
        char t[40] = "";
        if (site->down_until_ms > now)
            time_rfc3339(site->down_until_ms, t, sizeof t);
        json_array_append_new(
            arr,
            json_pack("{s:s, s:o, s:i, s:i, s:I, s:I, s:I, s:I, s:s, s:s, s:s, s:i}", "site",
                      site->name, "hosts", hosts, "connections", site->nconn, "idle", idle, "queued",
                      (json_int_t)site->queued, "delivered", (json_int_t)site->delivered,
                      "deferred", (json_int_t)site->deferred, "bounced", (json_int_t)site->bounced,
                      "last_reply", site->last_reply, "down_until", t, "down_reason",
                      site->down_until_ms > now ? site->down_reason : "", "worker",
                      s->p.worker_index));
        json_t *obj = json_array_get(arr, json_array_size(arr) - 1);
        json_t *pairs = json_array();
        for (int k = 0; k < site->npairs; k++)
            json_array_append_new(pairs, sched_pair_json(s, site, site->pairs[k], now));
        json_object_set_new(obj, "pairs", pairs);
        json_object_set_new(obj, "class", json_string(site->lim.rule));
        json_object_set_new(
            obj, "limits",
            json_pack("{s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f}", "max_connections",
                      site->lim.max_connections, "max_connections_site",
                      site->lim.max_connections_site, "max_messages_per_connection",
                      site->lim.max_messages_per_connection, "max_recipients_per_transaction",
                      site->lim.max_recipients_per_transaction, "message_rate",
                      site->lim.message_rate, "connection_rate", site->lim.connection_rate,
                      "message_rate_site", site->lim.message_rate_site, "connection_rate_site",
                      site->lim.connection_rate_site));
    }
    return arr;
}
