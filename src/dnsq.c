/*
 * dnsq - synchronous c-ares questions for tools (see dnsq.h).
 *
 * One question at a time: dnsq_ask() sends it with ares_query() (no search
 * domains: every name asked here is absolute) and turns the c-ares loop by hand -
 * ares_getsock() for the sockets, poll() bounded by ares_timeout(), then
 * ares_process_fd() - until the callback has stored the reply.  c-ares itself
 * enforces timeout_ms x tries per server; DNSQ_WAIT_MAX_MS is only a backstop
 * against a loop that never ends.  Replies that do not fit in UDP are retried over
 * TCP by c-ares (long DKIM keys).
 */
#include "dnsq.h"

#include "util.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#define DNSQ_DEF_TIMEOUT_MS 2000
#define DNSQ_DEF_TRIES      2
#define DNSQ_WAIT_MAX_MS    120000 /* one question, whatever c-ares thinks */
#define DNSQ_MAX_RECORDS    256    /* records of one answer kept */

struct dnsq {
    ares_channel channel;
    int nxdomain;
    char error[200];
    /* the answer of the question in flight, filled by dnsq_done */
    int done;
    int status;
    unsigned char *abuf;
    int alen;
};

struct dnsq *dnsq_new(const char *const *servers, int nservers, int timeout_ms, int tries,
                      char *err, size_t errsz)
{
    struct ares_options opts;
    struct dnsq *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    memset(&opts, 0, sizeof opts);
    opts.timeout = timeout_ms > 0 ? timeout_ms : DNSQ_DEF_TIMEOUT_MS;
    opts.tries = tries > 0 ? tries : DNSQ_DEF_TRIES;
    int st = ares_init_options(&q->channel, &opts, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (st != ARES_SUCCESS) {
        snprintf(err, errsz, "c-ares init: %s", ares_strerror(st));
        free(q);
        return NULL;
    }
    if (servers && nservers > 0) {
        size_t len = 1;
        for (int i = 0; i < nservers; i++)
            len += strlen(servers[i]) + 1;
        char *csv = malloc(len), *w = csv;
        if (!csv) {
            snprintf(err, errsz, "out of memory");
            dnsq_free(q);
            return NULL;
        }
        for (int i = 0; i < nservers; i++) {
            size_t n = strlen(servers[i]);
            if (i > 0) *w++ = ',';
            memcpy(w, servers[i], n);
            w += n;
        }
        *w = '\0';
        st = ares_set_servers_ports_csv(q->channel, csv);
        if (st != ARES_SUCCESS) {
            snprintf(err, errsz, "dns servers \"%s\": %s", csv, ares_strerror(st));
            free(csv);
            dnsq_free(q);
            return NULL;
        }
        free(csv);
    }
    return q;
}

void dnsq_free(struct dnsq *q)
{
    if (!q) return;
    if (q->channel) ares_destroy(q->channel);
    free(q->abuf);
    free(q);
}

int dnsq_nxdomain(const struct dnsq *q)
{
    return q->nxdomain;
}

const char *dnsq_error(const struct dnsq *q)
{
    return q->error;
}

/* dnsq_done - ares_query callback: keep a copy of the reply for dnsq_ask */
static void dnsq_done(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dnsq *q = arg;
    q->done = 1;
    q->status = status;
    free(q->abuf);
    q->abuf = NULL;
    q->alen = 0;
    if (abuf && alen > 0 && status == ARES_SUCCESS) {
        q->abuf = malloc((size_t)alen);
        if (q->abuf) {
            memcpy(q->abuf, abuf, (size_t)alen);
            q->alen = alen;
        } else {
            q->status = ARES_ENOMEM;
        }
    }
}

/*
 * dnsq_ask - send one question and wait for its answer.  1 when a reply with
 * records is in q->abuf, 0 when the name or the records do not exist, -1 on a
 * temporary failure (q->error says what).
 */
static int dnsq_ask(struct dnsq *q, const char *name, int type, const char *tname)
{
    q->done = 0;
    q->nxdomain = 0;
    q->error[0] = '\0';
    ares_query(q->channel, name, ns_c_in, type, dnsq_done, q);

    int64_t deadline = mono_ms() + DNSQ_WAIT_MAX_MS;
    while (!q->done) {
        ares_socket_t socks[ARES_GETSOCK_MAXNUM];
        struct pollfd pfd[ARES_GETSOCK_MAXNUM];
        int bits = ares_getsock(q->channel, socks, ARES_GETSOCK_MAXNUM), np = 0;
        for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
            short ev = 0;
            /* ARES_GETSOCK_WRITABLE shifts a signed 1 by up to 31: UB, so by hand */
            if ((unsigned)bits & (1u << i)) ev |= POLLIN;
            if ((unsigned)bits & (1u << (i + ARES_GETSOCK_MAXNUM))) ev |= POLLOUT;
            if (!ev) continue;
            pfd[np].fd = socks[i];
            pfd[np].events = ev;
            pfd[np++].revents = 0;
        }
        struct timeval tv, *tvp = ares_timeout(q->channel, NULL, &tv);
        int ms = tvp ? (int)(tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000) : 1000;
        if (mono_ms() > deadline) {
            /* cancel calls dnsq_done with ARES_ECANCELLED */
            ares_cancel(q->channel);
            break;
        }
        int rc = poll(pfd, (nfds_t)np, ms);
        if (rc < 0 && errno != EINTR) {
            snprintf(q->error, sizeof q->error, "poll: %s", strerror(errno));
            ares_cancel(q->channel);
            return -1;
        }
        if (rc <= 0) {
            ares_process_fd(q->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
            continue;
        }
        for (int i = 0; i < np; i++)
            if (pfd[i].revents)
                ares_process_fd(q->channel,
                                (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) ? pfd[i].fd
                                                                                : ARES_SOCKET_BAD,
                                (pfd[i].revents & POLLOUT) ? pfd[i].fd : ARES_SOCKET_BAD);
    }
    switch (q->status) {
    case ARES_SUCCESS:
        return 1;
    case ARES_ENOTFOUND:
        q->nxdomain = 1;
        return 0;
    case ARES_ENODATA:
        return 0;
    default:
        snprintf(q->error, sizeof q->error, "%s %s: %s", tname, name,
                 q->done ? ares_strerror(q->status) : "no answer");
        return -1;
    }
}

/* dnsq_name - a malloc'd lower-case copy of a host name without its trailing dot */
static char *dnsq_name(const char *s)
{
    size_t n = strlen(s);
    if (n > 0 && s[n - 1] == '.') n--;
    char *d = malloc(n + 1);
    if (!d) return NULL;
    for (size_t i = 0; i < n; i++)
        d[i] = (char)tolower((unsigned char)s[i]);
    d[n] = '\0';
    return d;
}

/* dnsq_strv_add - append s (taken) to *v; -1 when out of memory or full */
static int dnsq_strv_add(char ***v, int *n, char *s)
{
    if (!s || *n >= DNSQ_MAX_RECORDS) {
        free(s);
        return -1;
    }
    char **nv = realloc(*v, sizeof *nv * (size_t)(*n + 1));
    if (!nv) {
        free(s);
        return -1;
    }
    *v = nv;
    nv[(*n)++] = s;
    return 0;
}

/* dnsq_strv_fail - free a partial string array and report a parse failure */
static int dnsq_strv_fail(struct dnsq *q, char ***out, int *n, const char *what)
{
    for (int i = 0; i < *n; i++)
        free((*out)[i]);
    free(*out);
    *out = NULL;
    *n = 0;
    snprintf(q->error, sizeof q->error, "%s", what);
    return -1;
}

int dnsq_txt(struct dnsq *q, const char *name, char ***out, int *n)
{
    struct ares_txt_ext *txt = NULL;
    *out = NULL;
    *n = 0;
    int rc = dnsq_ask(q, name, ns_t_txt, "TXT");
    if (rc <= 0) return rc;
    if (ares_parse_txt_reply_ext(q->abuf, q->alen, &txt) != ARES_SUCCESS) {
        /* NOERROR with only a CNAME, or no TXT: nothing */
        return 0;
    }
    char *cur = NULL;
    size_t curlen = 0;
    for (struct ares_txt_ext *t = txt; t; t = t->next) {
        if (t->record_start && cur) {
            if (dnsq_strv_add(out, n, cur) < 0) goto fail;
            cur = NULL;
            curlen = 0;
        }
        char *grown = realloc(cur, curlen + t->length + 1);
        if (!grown) goto fail;
        cur = grown;
        memcpy(cur + curlen, t->txt, t->length);
        curlen += t->length;
        cur[curlen] = '\0';
    }
    if (cur && dnsq_strv_add(out, n, cur) < 0) {
        cur = NULL;
        goto fail;
    }
    ares_free_data(txt);
    return 0;
fail:
    free(cur);
    ares_free_data(txt);
    return dnsq_strv_fail(q, out, n, "TXT reply: out of memory or too many records");
}

/* dnsq_addrs - A or AAAA records of name into a malloc'd array of size bytes each */
static int dnsq_addrs(struct dnsq *q, const char *name, int type, void **out, int *n)
{
    *out = NULL;
    *n = 0;
    int rc = dnsq_ask(q, name, type, type == ns_t_a ? "A" : "AAAA");
    if (rc <= 0) return rc;
    int cnt = DNSQ_MAX_RECORDS;
    if (type == ns_t_a) {
        struct ares_addrttl at[DNSQ_MAX_RECORDS];
        if (ares_parse_a_reply(q->abuf, q->alen, NULL, at, &cnt) != ARES_SUCCESS || cnt <= 0)
            return 0;
        struct in_addr *v = calloc((size_t)cnt, sizeof *v);
        if (!v) goto oom;
        for (int i = 0; i < cnt; i++)
            v[i] = at[i].ipaddr;
        *out = v;
    } else {
        struct ares_addr6ttl at[DNSQ_MAX_RECORDS];
        if (ares_parse_aaaa_reply(q->abuf, q->alen, NULL, at, &cnt) != ARES_SUCCESS || cnt <= 0)
            return 0;
        struct in6_addr *v = calloc((size_t)cnt, sizeof *v);
        if (!v) goto oom;
        for (int i = 0; i < cnt; i++)
            memcpy(&v[i], &at[i].ip6addr, sizeof v[i]);
        *out = v;
    }
    *n = cnt;
    return 0;
oom:
    snprintf(q->error, sizeof q->error, "out of memory");
    return -1;
}

int dnsq_a(struct dnsq *q, const char *name, struct in_addr **out, int *n)
{
    void *v;
    int rc = dnsq_addrs(q, name, ns_t_a, &v, n);
    *out = v;
    return rc;
}

int dnsq_aaaa(struct dnsq *q, const char *name, struct in6_addr **out, int *n)
{
    void *v;
    int rc = dnsq_addrs(q, name, ns_t_aaaa, &v, n);
    *out = v;
    return rc;
}

int dnsq_mx(struct dnsq *q, const char *name, char ***out, int *n)
{
    struct ares_mx_reply *mx = NULL;
    *out = NULL;
    *n = 0;
    int rc = dnsq_ask(q, name, ns_t_mx, "MX");
    if (rc <= 0) return rc;
    if (ares_parse_mx_reply(q->abuf, q->alen, &mx) != ARES_SUCCESS) return 0;
    /* by preference: a selection over the short list keeps the server's order
     * among equals */
    int count = 0;
    for (struct ares_mx_reply *m = mx; m; m = m->next)
        count++;
    int *used = calloc((size_t)count + 1, sizeof *used);
    if (!used) {
        ares_free_data(mx);
        return dnsq_strv_fail(q, out, n, "MX reply: out of memory");
    }
    for (int k = 0; k < count; k++) {
        struct ares_mx_reply *best = NULL;
        int bi = -1, i = 0;
        for (struct ares_mx_reply *m = mx; m; m = m->next, i++)
            if (!used[i] && (!best || m->priority < best->priority)) {
                best = m;
                bi = i;
            }
        used[bi] = 1;
        if (dnsq_strv_add(out, n, dnsq_name(best->host)) < 0) {
            free(used);
            ares_free_data(mx);
            return dnsq_strv_fail(q, out, n, "MX reply: out of memory or too many records");
        }
    }
    free(used);
    ares_free_data(mx);
    return 0;
}

int dnsq_ptr(struct dnsq *q, int family, const void *addr, char ***out, int *n)
{
    char rev[80];
    const unsigned char *b = addr;
    struct hostent *he = NULL;
    *out = NULL;
    *n = 0;
    if (family == AF_INET) {
        snprintf(rev, sizeof rev, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
    } else {
        static const char hex[] = "0123456789abcdef";
        size_t w = 0;
        for (int i = 15; i >= 0; i--) {
            rev[w++] = hex[b[i] & 15];
            rev[w++] = '.';
            rev[w++] = hex[b[i] >> 4];
            rev[w++] = '.';
        }
        snprintf(rev + w, sizeof rev - w, "ip6.arpa");
    }
    int rc = dnsq_ask(q, rev, ns_t_ptr, "PTR");
    if (rc <= 0) return rc;
    if (ares_parse_ptr_reply(q->abuf, q->alen, addr, family == AF_INET ? 4 : 16, family, &he) !=
            ARES_SUCCESS ||
        !he)
        return 0;
    /* c-ares puts the first name in h_name and every name in h_aliases: dedupe */
    const char *first = he->h_name;
    for (int i = -1; i < 0 || (he->h_aliases && he->h_aliases[i]); i++) {
        const char *s = i < 0 ? first : he->h_aliases[i];
        if (!s) continue;
        char *nm = dnsq_name(s);
        int dup = 0;
        for (int j = 0; nm && j < *n; j++)
            if (strcmp((*out)[j], nm) == 0) dup = 1;
        if (dup) {
            free(nm);
            continue;
        }
        if (dnsq_strv_add(out, n, nm) < 0) {
            ares_free_hostent(he);
            return dnsq_strv_fail(q, out, n, "PTR reply: out of memory or too many records");
        }
    }
    ares_free_hostent(he);
    return 0;
}
