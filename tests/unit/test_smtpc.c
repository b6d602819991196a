/*
 * test_smtpc - unit tests for the SMTP client state machine.
 *
 * Every test has its own event_base and a scripted SMTP server on 127.0.0.1: a
 * libevent listener that plays one script per accepted connection.  A script is a
 * list of steps (send bytes, expect a command line, expect a command alone in the
 * input, expect a pipelined batch, read a message text, drop, stall, delay, switch
 * to TLS), so each test pins down exactly what the client sends and when.
 * Pipelining is checked by a BATCH step that answers nothing until MAIL, every
 * RCPT and DATA are all in: a lock-step client would wait for MAIL's reply and time
 * out.  Lock-step is checked by ALONE steps: nothing else may be buffered behind
 * the command.  The client side records its callbacks; the test asserts on them
 * and on what the server saw once the loop has stopped.
 *
 * One test talks to Postfix's smtp-sink when it is installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "smtpc.h"

extern char **environ;

/* ---- the scripted server --------------------------------------------------------- */

enum step_kind {
    ST_SEND,   /* write text */
    ST_EXPECT, /* read one CRLF line, must equal text */
    ST_ALONE,  /* like EXPECT, and nothing else may be buffered behind it */
    ST_BATCH,  /* wait until all of text (several lines) is in, compare */
    ST_DATA,   /* read a message text up to ".", un-stuff and keep it */
    ST_DROP,   /* close the connection */
    ST_STALL,  /* stop reading and answering */
    ST_DELAY,  /* wait ms milliseconds */
    ST_TLS,    /* start server-side TLS on this connection */
    ST_END,    /* script done; the connection stays until the client closes */
};

struct step {
    enum step_kind kind;
    const char *text;
    int ms;
};

#define SEND(s)                                                                                    \
    {                                                                                              \
        ST_SEND, s, 0                                                                              \
    }
#define EXPECT(s)                                                                                  \
    {                                                                                              \
        ST_EXPECT, s, 0                                                                            \
    }
#define ALONE(s)                                                                                   \
    {                                                                                              \
        ST_ALONE, s, 0                                                                             \
    }
#define BATCH(s)                                                                                   \
    {                                                                                              \
        ST_BATCH, s, 0                                                                             \
    }
#define DATA                                                                                       \
    {                                                                                              \
        ST_DATA, NULL, 0                                                                           \
    }
#define DROP                                                                                       \
    {                                                                                              \
        ST_DROP, NULL, 0                                                                           \
    }
#define STALL                                                                                      \
    {                                                                                              \
        ST_STALL, NULL, 0                                                                          \
    }
#define DELAY(ms)                                                                                  \
    {                                                                                              \
        ST_DELAY, NULL, ms                                                                         \
    }
#define TLS                                                                                        \
    {                                                                                              \
        ST_TLS, NULL, 0                                                                            \
    }
#define END                                                                                        \
    {                                                                                              \
        ST_END, NULL, 0                                                                            \
    }

#define GREET SEND("220 mx.test ESMTP scripted\r\n"), EXPECT("EHLO client.test")
#define EHLO_PIPE                                                                                  \
    SEND("250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
#define EHLO_PLAIN SEND("250-mx.test\r\n250 8BITMIME\r\n")
#define BYE        EXPECT("QUIT"), SEND("221 2.0.0 bye\r\n"), DROP
#define MAIL1      "MAIL FROM:<a@x.test>\r\n"
#define RCPT1      "RCPT TO:<b1@y.test>\r\n"
#define RCPT2      "RCPT TO:<b2@y.test>\r\n"
#define RCPT3      "RCPT TO:<b3@y.test>\r\n"

#define SRV_MAX_CONN  4
#define SRV_MAX_TEXTS 8

struct srv;

struct srv_conn {
    struct srv *srv;
    int idx;
    struct bufferevent *bev;
    const struct step *script;
    int pc;
    struct event *delay;
    bool waiting; /* in a DELAY or a TLS handshake */
    bool stalled;
    struct evbuffer *text;
};

struct srv {
    struct event_base *base;
    struct evconnlistener *lis;
    int port;
    const struct step *scripts[SRV_MAX_CONN];
    int nscripts;
    struct srv_conn conns[SRV_MAX_CONN];
    int nconns;
    SSL_CTX *tls_ctx;
    char err[512];
    struct evbuffer *texts[SRV_MAX_TEXTS];
    int ntexts;
    char peer[SRV_MAX_CONN][64];
    char sni[128];
    bool sni_seen;
    int tls_ok;
};

static void srv_run(struct srv_conn *k);

/* srv_error - remember the first script violation */
static void srv_error(struct srv *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void srv_error(struct srv *s, const char *fmt, ...)
{
    if (s->err[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
}

/* srv_close - close a server connection */
static void srv_close(struct srv_conn *k)
{
    if (k->bev) {
        bufferevent_free(k->bev);
        k->bev = NULL;
    }
    if (k->delay) evtimer_del(k->delay);
}

static void srv_read_cb(struct bufferevent *bev, void *arg)
{
    srv_run(arg);
}

static void srv_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct srv_conn *k = arg;
    if (what & BEV_EVENT_CONNECTED) { /* server-side TLS handshake done */
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        const char *sni = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
        if (sni) {
            k->srv->sni_seen = true;
            snprintf(k->srv->sni, sizeof(k->srv->sni), "%s", sni);
        }
        k->srv->tls_ok++;
        k->waiting = false;
        srv_run(k);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) srv_close(k);
}

static void srv_delay_cb(evutil_socket_t fd, short what, void *arg)
{
    struct srv_conn *k = arg;
    k->waiting = false;
    srv_run(k);
}

/* srv_data - read text lines up to "."; 1 when the text is complete */
static int srv_data(struct srv_conn *k, struct evbuffer *in)
{
    struct srv *s = k->srv;
    if (!k->text) k->text = evbuffer_new();
    for (;;) {
        size_t n;
        char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT);
        if (!line) return 0;
        if (n == 1 && line[0] == '.') {
            free(line);
            if (s->ntexts < SRV_MAX_TEXTS)
                s->texts[s->ntexts++] = k->text;
            else
                evbuffer_free(k->text);
            k->text = NULL;
            return 1;
        }
        const char *p = line;
        if (n > 0 && line[0] == '.') {
            p++;
            n--;
        }
        evbuffer_add(k->text, p, n);
        evbuffer_add(k->text, "\r\n", 2);
        free(line);
    }
}

/* srv_run - play the script as far as the input allows */
static void srv_run(struct srv_conn *k)
{
    struct srv *s = k->srv;
    while (k->bev && !k->waiting && !k->stalled) {
        const struct step *st = &k->script[k->pc];
        struct evbuffer *in = bufferevent_get_input(k->bev);
        struct evbuffer *out = bufferevent_get_output(k->bev);
        switch (st->kind) {
        case ST_SEND:
            evbuffer_add(out, st->text, strlen(st->text));
            k->pc++;
            break;
        case ST_EXPECT:
        case ST_ALONE: {
            size_t n;
            char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT);
            if (!line) return;
            if (strcmp(line, st->text) != 0)
                srv_error(s, "conn %d step %d: expected \"%s\", got \"%s\"", k->idx, k->pc,
                          st->text, line);
            if (st->kind == ST_ALONE && evbuffer_get_length(in) > 0)
                srv_error(s, "conn %d step %d: \"%s\" was not alone (%zu more octets)", k->idx,
                          k->pc, st->text, evbuffer_get_length(in));
            free(line);
            k->pc++;
            break;
        }
        case ST_BATCH: {
            size_t want = strlen(st->text);
            if (evbuffer_get_length(in) < want) return;
            const char *got = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
            if (memcmp(got, st->text, want) != 0)
                srv_error(s, "conn %d step %d: batch differs: \"%.*s\"", k->idx, k->pc, (int)want,
                          got);
            evbuffer_drain(in, want);
            k->pc++;
            break;
        }
        case ST_DATA:
            if (!srv_data(k, in)) return;
            k->pc++;
            break;
        case ST_DROP:
            srv_close(k);
            return;
        case ST_STALL:
            k->stalled = true;
            bufferevent_disable(k->bev, EV_READ);
            return;
        case ST_DELAY: {
            struct timeval tv = {st->ms / 1000, (st->ms % 1000) * 1000};
            if (!k->delay) k->delay = evtimer_new(s->base, srv_delay_cb, k);
            k->pc++;
            k->waiting = true;
            evtimer_add(k->delay, &tv);
            return;
        }
        case ST_TLS: {
            SSL *ssl = SSL_new(s->tls_ctx);
            struct bufferevent *tls = bufferevent_openssl_filter_new(
                s->base, k->bev, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
            k->pc++;
            if (!tls) {
                srv_error(s, "server TLS setup failed");
                k->bev = NULL;
                return;
            }
            bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
            k->bev = tls;
            bufferevent_setcb(tls, srv_read_cb, NULL, srv_event_cb, k);
            bufferevent_enable(tls, EV_READ | EV_WRITE);
            k->waiting = true;
            return;
        }
        case ST_END:
            return;
        }
    }
}

static void srv_accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
    struct srv *s = arg;
    if (s->nconns >= s->nscripts) {
        srv_error(s, "unexpected connection %d", s->nconns + 1);
        close(fd);
        return;
    }
    struct srv_conn *k = &s->conns[s->nconns];
    k->srv = s;
    k->idx = s->nconns;
    k->script = s->scripts[s->nconns];
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, s->peer[s->nconns],
                  sizeof(s->peer[0]));
    s->nconns++;
    k->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(k->bev, srv_read_cb, NULL, srv_event_cb, k);
    bufferevent_enable(k->bev, EV_READ | EV_WRITE);
    srv_run(k);
}

/* srv_start - listen on 127.0.0.1, a free port */
static int srv_start(struct srv *s, struct event_base *base)
{
    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->base = base;
    s->lis =
        evconnlistener_new_bind(base, srv_accept_cb, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                16, (struct sockaddr *)&sin, sizeof(sin));
    if (!s->lis) return -1;
    socklen_t len = sizeof(sin);
    getsockname(evconnlistener_get_fd(s->lis), (struct sockaddr *)&sin, &len);
    s->port = ntohs(sin.sin_port);
    return 0;
}

static void srv_free(struct srv *s)
{
    for (int i = 0; i < s->nconns; i++) {
        srv_close(&s->conns[i]);
        if (s->conns[i].delay) event_free(s->conns[i].delay);
        if (s->conns[i].text) evbuffer_free(s->conns[i].text);
    }
    for (int i = 0; i < s->ntexts; i++)
        evbuffer_free(s->texts[i]);
    if (s->lis) evconnlistener_free(s->lis);
    if (s->tls_ctx) SSL_CTX_free(s->tls_ctx);
}

/* srv_text_is - the server's message k equals the n octets at want */
static bool srv_text_is(struct srv *s, int k, const void *want, size_t n)
{
    if (k >= s->ntexts || evbuffer_get_length(s->texts[k]) != n) return false;
    return n == 0 || memcmp(evbuffer_pullup(s->texts[k], -1), want, n) == 0;
}

/* make_server_tls - a TLS server context with a fresh self-signed certificate */
static SSL_CTX *make_server_tls(void)
{
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    if (!pkey || !x) return NULL;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"mx.test", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509_sign(x, pkey, EVP_sha256());
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx && (SSL_CTX_use_certificate(ctx, x) != 1 || SSL_CTX_use_PrivateKey(ctx, pkey) != 1)) {
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    X509_free(x);
    EVP_PKEY_free(pkey);
    return ctx;
}

/* ---- the client driver --------------------------------------------------------------- */

#define MAX_TXN 4

struct tx {
    struct smtpc_txn t;
    const char *rcpts[8];
    struct smtpc_reply rr[8];
};

struct drv {
    struct event_base *base;
    struct smtpc *c;
    struct smtpc_txn *txns[MAX_TXN];
    int ntxn, next;
    int nready, ndone, nclosed;
    struct smtpc_txn *done[MAX_TXN];
    enum SMTPC_FAIL why;
    struct smtpc_reply last;
    bool reentered, send_failed, abort_in_ready, abort_in_done;
    bool no_quit; /* leave the session idle after the last transaction */
    bool chain;   /* send the second transaction at once, behind the first */
    /* facts captured in ready() */
    bool pipelining, eightbit, utf8, fallback;
    uint64_t max_size;
    char tls_version[64], tls_cipher[128], banner[256], peer_addr[64];
};

static bool g_in_api; /* set around smtpc_new/send/quit: callbacks must not run then */

/* drv_next - send the next transaction or QUIT */
static void drv_next(struct drv *d)
{
    if (d->next < d->ntxn) {
        g_in_api = true;
        int rc = smtpc_send(d->c, d->txns[d->next++]);
        if (rc == 0 && d->chain && d->next < d->ntxn) rc = smtpc_send(d->c, d->txns[d->next++]);
        g_in_api = false;
        if (rc == 0) return;
        d->send_failed = true;
    }
    if (d->no_quit) return;
    g_in_api = true;
    smtpc_quit(d->c);
    g_in_api = false;
}

static void drv_ready(void *arg)
{
    struct drv *d = arg;
    if (g_in_api) d->reentered = true;
    d->nready++;
    d->pipelining = smtpc_has_pipelining(d->c);
    d->eightbit = smtpc_has_8bitmime(d->c);
    d->utf8 = smtpc_has_smtputf8(d->c);
    d->max_size = smtpc_max_size(d->c);
    d->fallback = smtpc_tls_fallback(d->c);
    snprintf(d->tls_version, sizeof(d->tls_version), "%s", smtpc_tls_version(d->c));
    snprintf(d->tls_cipher, sizeof(d->tls_cipher), "%s", smtpc_tls_cipher(d->c));
    snprintf(d->banner, sizeof(d->banner), "%s", smtpc_banner(d->c));
    snprintf(d->peer_addr, sizeof(d->peer_addr), "%s", smtpc_peer_addr(d->c));
    if (d->abort_in_ready) {
        smtpc_abort(d->c);
        d->c = NULL;
        event_base_loopexit(d->base, NULL);
        return;
    }
    drv_next(d);
}

static void drv_done(void *arg, struct smtpc_txn *t)
{
    struct drv *d = arg;
    if (g_in_api) d->reentered = true;
    if (d->ndone < MAX_TXN) d->done[d->ndone] = t;
    d->ndone++;
    if (d->abort_in_done) {
        smtpc_abort(d->c);
        d->c = NULL;
        event_base_loopexit(d->base, NULL);
        return;
    }
    drv_next(d);
}

static void drv_closed(void *arg, enum SMTPC_FAIL why, const struct smtpc_reply *last)
{
    struct drv *d = arg;
    if (g_in_api) d->reentered = true;
    d->nclosed++;
    d->why = why;
    d->last = *last;
    d->c = NULL; /* it frees itself after this returns */
    event_base_loopexit(d->base, NULL);
}

/* tx_init - a transaction from sender to the NULL-terminated recipients */
static void tx_init(struct tx *x, const char *content, size_t len, ...)
{
    memset(x, 0, sizeof(*x));
    va_list ap;
    va_start(ap, len);
    const char *r;
    uint32_t n = 0;
    while ((r = va_arg(ap, const char *)) != NULL && n < 8)
        x->rcpts[n++] = r;
    va_end(ap);
    x->t.sender = "a@x.test";
    x->t.rcpts = x->rcpts;
    x->t.nrcpt = n;
    x->t.rcpt_reply = x->rr;
    x->t.content = (const uint8_t *)content;
    x->t.content_len = len;
}

#define SIMPLE_TEXT "Subject: test\r\n\r\nHello.\r\n"

/* ---- fixture ------------------------------------------------------------------------- */

struct fx {
    struct event_base *base;
    struct srv srv;
    struct drv d;
    struct smtpc_params p;
    struct smtpc_callbacks cb;
    SSL_CTX *client_tls;
    bool timed_out;
    struct event *guard;
    void *owned[4];
};

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f) return -1;
    f->base = event_base_new();
    if (!f->base || srv_start(&f->srv, f->base) < 0) return -1;
    f->d.base = f->base;
    f->p.base = f->base;
    f->p.tls = SMTPC_TLS_OFF;
    f->p.helo_name = "client.test";
    f->p.server_name = "mx.test";
    struct sockaddr_in *sin = (struct sockaddr_in *)&f->p.dest;
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)f->srv.port);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->p.destlen = sizeof(*sin);
    /* short enough that a wrong wait fails the test rather than hanging it */
    struct smtpc_timeouts t = {5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5};
    f->p.timeouts = t;
    f->cb.ready = drv_ready;
    f->cb.done = drv_done;
    f->cb.closed = drv_closed;
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    if (f->d.c) smtpc_abort(f->d.c);
    srv_free(&f->srv);
    if (f->guard) event_free(f->guard);
    if (f->client_tls) SSL_CTX_free(f->client_tls);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    event_base_free(f->base);
    for (size_t i = 0; i < 4; i++)
        free(f->owned[i]);
    free(f);
    return 0;
}

static void fx_guard_cb(evutil_socket_t fd, short what, void *arg)
{
    struct fx *f = arg;
    f->timed_out = true;
    event_base_loopexit(f->base, NULL);
}

/* fx_script - the scripts for the next connections */
static void fx_script(struct fx *f, const struct step *a, const struct step *b)
{
    f->srv.scripts[0] = a;
    f->srv.scripts[1] = b;
    f->srv.nscripts = b ? 2 : 1;
}

/* fx_tls - client and server TLS contexts */
static void fx_tls(struct fx *f, enum SMTPC_TLS policy)
{
    f->srv.tls_ctx = make_server_tls();
    assert_non_null(f->srv.tls_ctx);
    f->client_tls = SSL_CTX_new(TLS_client_method());
    assert_non_null(f->client_tls);
    f->p.tls_ctx = f->client_tls;
    f->p.tls = policy;
}

/* fx_run - start a session sending the n transactions, run until closed() (or
 * the 20 s guard), then a short grace so the server finishes what it read */
static void fx_run(struct fx *f, struct tx *txs, int n)
{
    for (int i = 0; i < n; i++)
        f->d.txns[i] = &txs[i].t;
    f->d.ntxn = n;
    if (!f->d.c) { /* a test may have started the session itself */
        g_in_api = true;
        f->d.c = smtpc_new(&f->p, &f->cb, &f->d);
        g_in_api = false;
    }
    assert_non_null(f->d.c);
    f->guard = evtimer_new(f->base, fx_guard_cb, f);
    struct timeval tv = {20, 0};
    evtimer_add(f->guard, &tv);
    event_base_dispatch(f->base);
    struct timeval grace = {0, 20000};
    event_base_loopexit(f->base, &grace);
    event_base_dispatch(f->base);
    assert_false(f->timed_out);
    assert_false(f->d.reentered);
}

/* fx_ok - the session ended with QUIT and the server script held */
static void fx_ok(struct fx *f)
{
    if (f->srv.err[0]) fail_msg("server: %s", f->srv.err);
    assert_int_equal(f->d.nclosed, 1);
    assert_int_equal(f->d.why, SMTPC_FAIL_NONE);
}

/* ---- pure parser --------------------------------------------------------------------- */

/* parse - smtpc_parse_reply on an exact-length heap copy of s */
static int parse(const char *s, struct smtpc_reply *r)
{
    size_t n = strlen(s);
    char *b = malloc(n ? n : 1);
    assert_non_null(b);
    memcpy(b, s, n);
    int rc = smtpc_parse_reply(b, n, r);
    free(b);
    return rc;
}

static void test_parse_reply(void **state)
{
    struct smtpc_reply r;
    assert_int_equal(parse("250 ok\r\n", &r), 0);
    assert_int_equal(r.code, 250);
    assert_string_equal(r.enh, "");
    assert_string_equal(r.text, "ok");

    assert_int_equal(parse("550-5.1.1 first line\r\n550-5.1.1 second\r\n550 5.1.1 third\r\n", &r),
                     0);
    assert_int_equal(r.code, 550);
    assert_string_equal(r.enh, "5.1.1");
    assert_string_equal(r.text, "first line second third");

    assert_int_equal(parse("451 4.3.0\n", &r), 0); /* LF only, code only text */
    assert_string_equal(r.enh, "4.3.0");
    assert_string_equal(r.text, "");
    assert_int_equal(parse("250\r\n", &r), 0);
    assert_int_equal(r.code, 250);
    assert_int_equal(parse("354 go ahead", &r), 0); /* no final line end */
    assert_int_equal(parse("250 2.100.999 long parts\r\n", &r), 0);
    assert_string_equal(r.enh, "2.100.999");
    /* not an enhanced code: wrong class, too many digits, no space after it */
    assert_int_equal(parse("550 2.1.0 odd\r\n", &r), 0);
    assert_string_equal(r.enh, "");
    assert_string_equal(r.text, "2.1.0 odd");
    assert_int_equal(parse("550 5.1234.1 x\r\n", &r), 0);
    assert_string_equal(r.enh, "");
    assert_int_equal(parse("550 5.1.1x\r\n", &r), 0);
    assert_string_equal(r.enh, "");
    /* control characters do not survive into the text */
    assert_int_equal(parse("250 a\tb\x01 c\r\n", &r), 0);
    assert_string_equal(r.text, "a b  c");

    assert_int_equal(parse("", &r), -1);
    assert_int_equal(parse("250-more to come\r\n", &r), -1);
    assert_int_equal(parse("250-a\r\n251 b\r\n", &r), -1);
    assert_int_equal(parse("199 no\r\n", &r), -1);
    assert_int_equal(parse("600 no\r\n", &r), -1);
    assert_int_equal(parse("hello\r\n", &r), -1);
    assert_int_equal(parse("25\r\n", &r), -1);
    assert_int_equal(parse("250x\r\n", &r), -1);
    assert_int_equal(parse("250 done\r\n250 again\r\n", &r), -1);
    assert_int_equal(parse("250-a\r\n\r\n250 b\r\n", &r), -1);
    assert_int_equal(r.code, 0);

    /* long text is truncated, never overflowed, and not cut inside UTF-8 */
    char big[2100];
    memcpy(big, "250 ", 4);
    size_t n = 4;
    while (n < 2000) {
        memcpy(big + n, "\xc3\xa9", 2); /* e acute */
        n += 2;
    }
    memcpy(big + n, "\r\n", 3);
    assert_int_equal(parse(big, &r), 0);
    size_t tl = strlen(r.text);
    assert_true(tl < sizeof(r.text) && tl >= sizeof(r.text) - 3);
    assert_int_equal(tl % 2, 0);
}

static void test_rcpt_outcome(void **state)
{
    struct tx x;
    tx_init(&x, "", 0, "a", "b", NULL);
    x.t.mail_reply.code = 250;
    x.rr[0].code = 250;
    x.rr[1].code = 550;
    x.t.data_reply.code = 250;
    assert_ptr_equal(smtpc_rcpt_outcome(&x.t, 0), &x.t.data_reply);
    assert_ptr_equal(smtpc_rcpt_outcome(&x.t, 1), &x.rr[1]);
    x.t.mail_reply.code = 451;
    assert_ptr_equal(smtpc_rcpt_outcome(&x.t, 0), &x.t.mail_reply);
    /* a refusal that arrived before the session died still decides */
    x.t.fail = SMTPC_FAIL_DROPPED;
    x.t.data_reply.code = 0;
    assert_ptr_equal(smtpc_rcpt_outcome(&x.t, 0), &x.t.mail_reply);
    x.t.mail_reply.code = 250;
    assert_ptr_equal(smtpc_rcpt_outcome(&x.t, 1), &x.rr[1]);
    /* accepted so far, then dropped: the session failure */
    assert_null(smtpc_rcpt_outcome(&x.t, 0));
    x.rr[1].code = 0; /* never answered */
    assert_null(smtpc_rcpt_outcome(&x.t, 1));
    assert_string_equal(smtpc_fail_str(SMTPC_FAIL_TIMEOUT), "timeout");
    assert_string_equal(smtpc_tls_str(SMTPC_TLS_REQUIRED), "required");
}

/* ---- greeting and EHLO ------------------------------------------------------------- */

static void test_greeting_refused(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {SEND("554 5.7.1 go away\r\n"), BYE};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    assert_string_equal(f->srv.err, "");
    assert_int_equal(f->d.nready, 0);
    assert_int_equal(f->d.nclosed, 1);
    assert_int_equal(f->d.why, SMTPC_FAIL_REPLY);
    assert_int_equal(f->d.last.code, 554);
    assert_string_equal(f->d.last.enh, "5.7.1");
    assert_string_equal(f->d.last.text, "go away");
}

static void test_ehlo_5xx_helo(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET,
                                    SEND("502 5.5.1 no EHLO here\r\n"),
                                    ALONE("HELO client.test"),
                                    SEND("250 mx.test\r\n"),
                                    ALONE("MAIL FROM:<a@x.test>"),
                                    SEND("250 ok\r\n"),
                                    ALONE("RCPT TO:<b1@y.test>"),
                                    SEND("250 ok\r\n"),
                                    ALONE("DATA"),
                                    SEND("354 go\r\n"),
                                    DATA,
                                    SEND("250 queued\r\n"),
                                    BYE};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    fx_ok(f);
    assert_int_equal(f->d.nready, 1);
    assert_false(f->d.pipelining);
    assert_false(f->d.eightbit);
    assert_string_equal(f->d.banner, "mx.test ESMTP scripted");
    assert_string_equal(f->d.peer_addr, "127.0.0.1");
    assert_int_equal(f->d.ndone, 1);
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 0)->code, 250);
    assert_true(srv_text_is(&f->srv, 0, SIMPLE_TEXT, strlen(SIMPLE_TEXT)));
}

static void test_ehlo_4xx_fails(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET, SEND("421 4.3.2 busy, try later\r\n"), BYE};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    assert_string_equal(f->srv.err, "");
    assert_int_equal(f->d.nready, 0);
    assert_int_equal(f->d.why, SMTPC_FAIL_REPLY);
    assert_int_equal(f->d.last.code, 421);
    assert_string_equal(f->d.last.enh, "4.3.2");
}

/* ---- transactions ----------------------------------------------------------------- */

static void test_pipelined(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET,
                                    EHLO_PIPE,
                                    BATCH(MAIL1 RCPT1 RCPT2 "DATA\r\n"),
                                    SEND("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n"
                                         "354 go ahead\r\n"),
                                    DATA,
                                    SEND("250 2.0.0 queued as X\r\n"),
                                    BYE};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", "b2@y.test", NULL);
    fx_run(f, &x, 1);
    fx_ok(f);
    assert_true(f->d.pipelining);
    assert_true(f->d.eightbit);
    assert_int_equal(f->d.ndone, 1);
    assert_ptr_equal(f->d.done[0], &x.t);
    assert_int_equal(x.t.fail, SMTPC_FAIL_NONE);
    assert_int_equal(x.t.mail_reply.code, 250);
    for (uint32_t i = 0; i < 2; i++) {
        const struct smtpc_reply *o = smtpc_rcpt_outcome(&x.t, i);
        assert_int_equal(o->code, 250);
        assert_string_equal(o->enh, "2.0.0");
        assert_string_equal(o->text, "queued as X");
    }
    assert_true(srv_text_is(&f->srv, 0, SIMPLE_TEXT, strlen(SIMPLE_TEXT)));
}

static void test_lockstep(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET,
                                    EHLO_PLAIN,
                                    ALONE("MAIL FROM:<a@x.test>"),
                                    DELAY(50),
                                    SEND("250 ok\r\n"),
                                    ALONE("RCPT TO:<b1@y.test>"),
                                    DELAY(50),
                                    SEND("250 ok\r\n"),
                                    ALONE("RCPT TO:<b2@y.test>"),
                                    SEND("550 5.1.1 no such user\r\n"),
                                    ALONE("DATA"),
                                    SEND("354 go\r\n"),
                                    DATA,
                                    SEND("250 2.0.0 ok\r\n"),
                                    BYE};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", "b2@y.test", NULL);
    fx_run(f, &x, 1);
    fx_ok(f);
    assert_false(f->d.pipelining);
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 0)->code, 250);
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 1)->code, 550);
}

static void test_rcpt_mixed(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {
        GREET,
        EHLO_PIPE,
        BATCH(MAIL1 RCPT1 RCPT2 RCPT3 "DATA\r\n"),
        SEND("250 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown user\r\n450 4.2.1 try later\r\n"
             "354 go\r\n"),
        DATA,
        SEND("250 2.0.0 ok\r\n"),
        BYE};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", "b2@y.test", "b3@y.test", NULL);
    fx_run(f, &x, 1);
    fx_ok(f);
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 0)->code, 250);
    assert_ptr_equal(smtpc_rcpt_outcome(&x.t, 0), &x.t.data_reply);
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 1)->code, 550);
    assert_string_equal(smtpc_rcpt_outcome(&x.t, 1)->enh, "5.1.1");
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 2)->code, 450);
    assert_string_equal(smtpc_rcpt_outcome(&x.t, 2)->text, "try later");
}

static void test_all_rcpt_refused_354(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {
        GREET,
        EHLO_PIPE,
        BATCH(MAIL1 RCPT1 RCPT2 "DATA\r\n"),
        SEND("250 ok\r\n550 5.1.1 unknown\r\n551 5.1.6 moved\r\n354 go\r\n"),
        DATA, /* RFC 2920: the client sends only "." */
        SEND("554 5.5.1 no valid recipients\r\n"),
        BYE};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", "b2@y.test", NULL);
    fx_run(f, &x, 1);
    fx_ok(f);
    assert_true(srv_text_is(&f->srv, 0, "", 0));
    assert_int_equal(f->d.ndone, 1);
    assert_int_equal(x.t.data_reply.code, 554);
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 0)->code, 550);
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 1)->code, 551);
}

static void test_data_refused(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {
        GREET, EHLO_PIPE, BATCH(MAIL1 RCPT1 "DATA\r\n"),
        SEND("250 ok\r\n250 ok\r\n554 5.3.0 no DATA for you\r\n"),
        /* the transaction may still be open: RSET */
        ALONE("RSET"), SEND("250 2.0.0 reset\r\n"), BATCH(MAIL1 RCPT1 "DATA\r\n"),
        SEND("250 ok\r\n250 ok\r\n354 go\r\n"), DATA, SEND("250 ok\r\n"), BYE};
    fx_script(f, s, NULL);
    struct tx x[2];
    tx_init(&x[0], SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    tx_init(&x[1], SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, x, 2);
    fx_ok(f);
    assert_int_equal(f->d.ndone, 2);
    assert_int_equal(x[0].t.data_reply.code, 554);
    assert_string_equal(x[0].t.data_reply.enh, "5.3.0");
    assert_int_equal(smtpc_rcpt_outcome(&x[0].t, 0)->code, 554);
    assert_int_equal(smtpc_rcpt_outcome(&x[1].t, 0)->code, 250);
}

static void test_final_4xx_5xx(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {
        GREET, EHLO_PIPE, BATCH(MAIL1 RCPT1 "DATA\r\n"), SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
        DATA, SEND("451 4.3.0 local problem\r\n"),
        /* a final reply ends the transaction: no RSET */
        BATCH(MAIL1 RCPT1 "DATA\r\n"), SEND("250 ok\r\n250 ok\r\n354 go\r\n"), DATA,
        SEND("554 5.7.1 spam\r\n"), BYE};
    fx_script(f, s, NULL);
    struct tx x[2];
    tx_init(&x[0], SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    tx_init(&x[1], SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, x, 2);
    fx_ok(f);
    assert_int_equal(f->d.ndone, 2);
    assert_int_equal(smtpc_rcpt_outcome(&x[0].t, 0)->code, 451);
    assert_string_equal(smtpc_rcpt_outcome(&x[0].t, 0)->enh, "4.3.0");
    assert_int_equal(smtpc_rcpt_outcome(&x[1].t, 0)->code, 554);
    assert_string_equal(smtpc_rcpt_outcome(&x[1].t, 0)->text, "spam");
}

static void test_dot_stuffing(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET,
                                    EHLO_PIPE,
                                    BATCH(MAIL1 RCPT1 "DATA\r\n"),
                                    SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
                                    DATA,
                                    SEND("250 ok\r\n"),
                                    BYE};
    fx_script(f, s, NULL);
    static const char text[] = ".starts with a dot\r\n"
                               "..two dots\r\n"
                               "mid.dle . dots\r\n"
                               ".\r\n"
                               "\r\n"
                               ".\r\n"
                               "..\r\n"
                               "end.\r\n";
    struct tx x;
    tx_init(&x, text, strlen(text), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    fx_ok(f);
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 0)->code, 250);
    assert_true(srv_text_is(&f->srv, 0, text, strlen(text)));
}

static void test_no_final_crlf(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET,
                                    EHLO_PIPE,
                                    BATCH(MAIL1 RCPT1 "DATA\r\n"),
                                    SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
                                    DATA,
                                    SEND("250 ok\r\n"),
                                    BATCH(MAIL1 RCPT1 "DATA\r\n"),
                                    SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
                                    DATA,
                                    SEND("250 ok\r\n"),
                                    BATCH(MAIL1 RCPT1 "DATA\r\n"),
                                    SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
                                    DATA,
                                    SEND("250 ok\r\n"),
                                    BYE};
    fx_script(f, s, NULL);
    static const char t1[] = "Subject: x\r\n\r\nno line end at the end";
    static const char t2[] = "Subject: x\n\nbare LF\n.dot\n";
    static const char t3[] = "Subject: x\r\n\r\nends in a dot line\r\n.";
    struct tx x[3];
    tx_init(&x[0], t1, strlen(t1), "b1@y.test", NULL);
    tx_init(&x[1], t2, strlen(t2), "b1@y.test", NULL);
    tx_init(&x[2], t3, strlen(t3), "b1@y.test", NULL);
    fx_run(f, x, 3);
    fx_ok(f);
    assert_int_equal(f->d.ndone, 3);
    static const char w1[] = "Subject: x\r\n\r\nno line end at the end\r\n";
    static const char w2[] = "Subject: x\r\n\r\nbare LF\r\n.dot\r\n";
    static const char w3[] = "Subject: x\r\n\r\nends in a dot line\r\n.\r\n";
    assert_true(srv_text_is(&f->srv, 0, w1, strlen(w1)));
    assert_true(srv_text_is(&f->srv, 1, w2, strlen(w2)));
    assert_true(srv_text_is(&f->srv, 2, w3, strlen(w3)));
}

/* make_text - about size octets of CRLF lines of varying length, many starting with
 * "." or being "." alone; caller frees */
static char *make_text(size_t size, size_t *lenp)
{
    char *b = malloc(size + 300);
    assert_non_null(b);
    uint32_t seed = 12345;
    size_t n = 0;
    while (n < size) {
        seed = seed * 1103515245u + 12345u;
        size_t ll = (seed >> 16) % 200;
        int kind = (int)((seed >> 8) % 16);
        if (kind == 0) b[n++] = '.';
        for (size_t i = 0; i < ll; i++)
            b[n++] = (char)('a' + (int)((seed >> (i % 13)) + i) % 26);
        if (kind == 1) b[n++] = '.';
        b[n++] = '\r';
        b[n++] = '\n';
    }
    *lenp = n;
    return b;
}

static void large_message(struct fx *f, bool tls)
{
    static const struct step plain[] = {GREET,
                                        EHLO_PIPE,
                                        BATCH(MAIL1 RCPT1 "DATA\r\n"),
                                        SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
                                        DATA,
                                        SEND("250 ok\r\n"),
                                        BYE};
    static const struct step crypt[] = {GREET,
                                        SEND("250-mx.test\r\n250-STARTTLS\r\n250 PIPELINING\r\n"),
                                        ALONE("STARTTLS"),
                                        SEND("220 2.0.0 ready\r\n"),
                                        TLS,
                                        EXPECT("EHLO client.test"),
                                        EHLO_PIPE,
                                        BATCH(MAIL1 RCPT1 "DATA\r\n"),
                                        SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
                                        DATA,
                                        SEND("250 ok\r\n"),
                                        BYE};
    fx_script(f, tls ? crypt : plain, NULL);
    if (tls) fx_tls(f, SMTPC_TLS_REQUIRED);
    size_t len;
    char *text = make_text(5 * 1024 * 1024, &len);
    f->owned[0] = text;
    struct tx x;
    tx_init(&x, text, len, "b1@y.test", NULL);
    fx_run(f, &x, 1);
    fx_ok(f);
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 0)->code, 250);
    assert_true(srv_text_is(&f->srv, 0, text, len));
}

static void test_large_message(void **state)
{
    large_message(*state, false);
}

static void test_large_message_tls(void **state)
{
    large_message(*state, true);
}

static void test_rset_after_refused_mail(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {
        GREET,
        EHLO_PIPE,
        BATCH(MAIL1 RCPT1 "DATA\r\n"),
        SEND("550 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n"),
        ALONE("RSET"),
        SEND("250 2.0.0 ok\r\n"),
        BATCH(MAIL1 RCPT1 "DATA\r\n"),
        SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
        DATA,
        SEND("250 ok\r\n"),
        BYE};
    fx_script(f, s, NULL);
    struct tx x[2];
    tx_init(&x[0], SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    tx_init(&x[1], SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, x, 2);
    fx_ok(f);
    assert_int_equal(f->d.ndone, 2);
    assert_int_equal(smtpc_rcpt_outcome(&x[0].t, 0)->code, 550);
    assert_ptr_equal(smtpc_rcpt_outcome(&x[0].t, 0), &x[0].t.mail_reply);
    assert_int_equal(smtpc_rcpt_outcome(&x[1].t, 0)->code, 250);
    assert_int_equal(f->srv.ntexts, 1);
}

static void test_rset_lockstep_mail_refused(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {
        GREET, EHLO_PLAIN, ALONE("MAIL FROM:<a@x.test>"), SEND("451 4.7.1 greylisted\r\n"),
        ALONE("RSET"), SEND("250 ok\r\n"), ALONE("MAIL FROM:<a@x.test>"), SEND("250 ok\r\n"),
        ALONE("RCPT TO:<b1@y.test>"), SEND("550 5.1.1 no\r\n"),
        /* every RCPT refused in lock-step: no DATA */
        ALONE("QUIT"), SEND("221 bye\r\n"), DROP};
    fx_script(f, s, NULL);
    struct tx x[2];
    tx_init(&x[0], SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    tx_init(&x[1], SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, x, 2);
    fx_ok(f);
    assert_int_equal(f->d.ndone, 2);
    assert_int_equal(smtpc_rcpt_outcome(&x[0].t, 0)->code, 451);
    assert_int_equal(smtpc_rcpt_outcome(&x[1].t, 0)->code, 550);
}

static void test_size_limit(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {
        GREET, SEND("250-mx.test\r\n250-SIZE 1000\r\n250 PIPELINING\r\n"),
        /* the big one is never offered; the small one
         * carries SIZE= */
        BATCH("MAIL FROM:<a@x.test> SIZE=25\r\n" RCPT1 "DATA\r\n"),
        SEND("250 ok\r\n250 ok\r\n354 go\r\n"), DATA, SEND("250 ok\r\n"), BYE};
    fx_script(f, s, NULL);
    char *big = malloc(2000);
    assert_non_null(big);
    f->owned[0] = big;
    memset(big, 'x', 2000);
    struct tx x[2];
    tx_init(&x[0], big, 2000, "b1@y.test", NULL);
    tx_init(&x[1], SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, x, 2);
    fx_ok(f);
    assert_int_equal(f->d.max_size, 1000);
    assert_int_equal(f->d.ndone, 2);
    const struct smtpc_reply *o = smtpc_rcpt_outcome(&x[0].t, 0);
    assert_int_equal(o->code, 552);
    assert_string_equal(o->enh, "5.3.4");
    assert_int_equal(smtpc_rcpt_outcome(&x[1].t, 0)->code, 250);
}

/* ---- text made while the commands are out (content_pending) ---------------------- */

/* header lines made with the text (signatures), sent in front of it as they are */
#define SIG_LINES "DKIM-Signature: v=1; a=ed25519-sha256;\r\n\tb=xyz\r\n"

struct pend {
    struct fx *f;
    struct tx *x;
    struct event *ev;
    int wait_pc;         /* the server step that shows the 354 is out */
    bool ready;          /* smtpc_content_ready was called */
    bool early_text;     /* the server had text before the content was ready */
    int polls;
};

/* pend_cb - once the server has sent its 354 (and 30 ms more for it to arrive),
 * the content is made: nothing of it may have reached the server before */
static void pend_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pend *pd = arg;
    struct srv_conn *k = &pd->f->srv.conns[0];
    struct timeval tv = {0, 5000};
    if (pd->f->srv.nconns < 1 || k->pc < pd->wait_pc || ++pd->polls < 6) {
        evtimer_add(pd->ev, &tv);
        return;
    }
    pd->early_text = (k->text && evbuffer_get_length(k->text)) ||
                     (k->bev && evbuffer_get_length(bufferevent_get_input(k->bev)));
    pd->x->t.content = (const uint8_t *)SIMPLE_TEXT;
    pd->x->t.content_len = strlen(SIMPLE_TEXT);
    pd->x->t.prefix = (const uint8_t *)SIG_LINES;
    pd->x->t.prefix_len = strlen(SIG_LINES);
    pd->ready = true;
    g_in_api = true;
    smtpc_content_ready(pd->f->d.c, &pd->x->t);
    g_in_api = false;
}

static void test_content_pending_waits_after_354(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {
        GREET, SEND("250-mx.test\r\n250-SIZE 100000\r\n250 PIPELINING\r\n"),
        /* SIZE= declares the estimate while the text is being made */
        BATCH("MAIL FROM:<a@x.test> SIZE=5000\r\n" RCPT1 "DATA\r\n"),
        SEND("250 ok\r\n250 ok\r\n354 go\r\n"), DATA, SEND("250 2.0.0 queued\r\n"), BYE};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, NULL, 5000, "b1@y.test", NULL);
    x.t.content_pending = true;
    struct pend pd = {.f = f, .x = &x, .wait_pc = 5};
    pd.ev = evtimer_new(f->base, pend_cb, &pd);
    struct timeval tv = {0, 5000};
    evtimer_add(pd.ev, &tv);
    fx_run(f, &x, 1);
    event_free(pd.ev);
    fx_ok(f);
    assert_true(pd.ready);
    assert_false(pd.early_text);
    assert_false(x.t.content_pending);
    assert_int_equal(f->d.ndone, 1);
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 0)->code, 250);
    assert_true(srv_text_is(&f->srv, 0, SIG_LINES SIMPLE_TEXT, strlen(SIG_LINES SIMPLE_TEXT)));
}

/* made before the 354 arrives (the usual case: signing is quick): the text goes
 * at the 354 as if it had been there all along; and a chained transaction that
 * is pending waits the same way behind the first */
static void test_content_pending_ready_early_and_chained(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {
        GREET, EHLO_PIPE, BATCH(MAIL1 RCPT1 "DATA\r\n"),
        SEND("250 ok\r\n250 ok\r\n354 go\r\n"), DATA,
        BATCH(MAIL1 RCPT2 "DATA\r\n"),
        SEND("250 2.0.0 one\r\n250 ok\r\n250 ok\r\n354 go\r\n"), DATA,
        SEND("250 2.0.0 two\r\n"), BYE};
    fx_script(f, s, NULL);
    struct tx x[2];
    tx_init(&x[0], NULL, 100, "b1@y.test", NULL);
    tx_init(&x[1], NULL, 100, "b2@y.test", NULL);
    x[0].t.content_pending = x[1].t.content_pending = true;
    /* the first is made at once, the second once the server asked for its text */
    x[0].t.content = (const uint8_t *)"Subject: one\r\n\r\n1\r\n";
    x[0].t.content_len = strlen((const char *)x[0].t.content);
    x[0].t.content_pending = false;
    struct pend pd = {.f = f, .x = &x[1], .wait_pc = 7};
    pd.ev = evtimer_new(f->base, pend_cb, &pd);
    struct timeval tv = {0, 5000};
    evtimer_add(pd.ev, &tv);
    f->d.chain = true;
    fx_run(f, x, 2);
    event_free(pd.ev);
    fx_ok(f);
    assert_true(pd.ready);
    assert_false(pd.early_text);
    assert_int_equal(f->d.ndone, 2);
    assert_string_equal(smtpc_rcpt_outcome(&x[0].t, 0)->text, "one");
    assert_string_equal(smtpc_rcpt_outcome(&x[1].t, 0)->text, "two");
    assert_true(srv_text_is(&f->srv, 0, "Subject: one\r\n\r\n1\r\n", 19));
    assert_true(srv_text_is(&f->srv, 1, SIG_LINES SIMPLE_TEXT, strlen(SIG_LINES SIMPLE_TEXT)));
}

static void test_smtputf8(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET, EHLO_PIPE, BYE};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    x.t.smtputf8 = true;
    fx_run(f, &x, 1);
    fx_ok(f);
    assert_int_equal(f->d.ndone, 1);
    const struct smtpc_reply *o = smtpc_rcpt_outcome(&x.t, 0);
    assert_int_equal(o->code, 553);
    assert_string_equal(o->enh, "5.6.7");
}

static void test_smtputf8_offered(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {
        GREET,
        SEND("250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE\r\n"),
        BATCH("MAIL FROM:<a@x.test> BODY=8BITMIME SMTPUTF8\r\n"
              "RCPT TO:<b1@y.test>\r\nDATA\r\n"),
        SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
        DATA,
        SEND("250 ok\r\n"),
        BYE};
    fx_script(f, s, NULL);
    static const char text[] = "Subject: caf\xc3\xa9\r\n\r\n\xc3\xa9t\xc3\xa9\r\n";
    struct tx x;
    tx_init(&x, text, strlen(text), "b1@y.test", NULL);
    x.t.smtputf8 = true;
    x.t.body_8bit = true;
    fx_run(f, &x, 1);
    fx_ok(f);
    assert_true(f->d.utf8);
    assert_int_equal(f->d.max_size, 0); /* "SIZE" alone: no limit */
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 0)->code, 250);
    assert_true(srv_text_is(&f->srv, 0, text, strlen(text)));
}

static void test_multiline_enhanced(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {
        GREET,
        EHLO_PIPE,
        BATCH(MAIL1 RCPT1 RCPT2 "DATA\r\n"),
        SEND("250 2.1.0 ok\r\n"
             "550-5.7.1 Message rejected\r\n550-5.7.1 see https://example.test/why\r\n"
             "550 5.7.1 for details\r\n"
             "250 2.1.5 ok\r\n354 go\r\n"),
        DATA,
        SEND("250-2.0.0 first\n250 2.0.0 queued\n"), /* bare LF line ends */
        BYE};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", "b2@y.test", NULL);
    fx_run(f, &x, 1);
    fx_ok(f);
    const struct smtpc_reply *o = smtpc_rcpt_outcome(&x.t, 0);
    assert_int_equal(o->code, 550);
    assert_string_equal(o->enh, "5.7.1");
    assert_string_equal(o->text, "Message rejected see https://example.test/why for details");
    o = smtpc_rcpt_outcome(&x.t, 1);
    assert_int_equal(o->code, 250);
    assert_string_equal(o->text, "first queued");
}

static void test_reply_too_long(void **state)
{
    struct fx *f = *state;
    static char longline[1200];
    memcpy(longline, "220 ", 4);
    memset(longline + 4, 'x', 1100);
    memcpy(longline + 1104, "\r\n", 3);
    static const struct step s[] = {{ST_SEND, longline, 0}, END};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    assert_int_equal(f->d.why, SMTPC_FAIL_PROTOCOL);
    assert_int_equal(f->d.nready, 0);
}

static void test_reply_too_many_lines(void **state)
{
    struct fx *f = *state;
    static char many[101 * 12 + 16];
    size_t n = 0;
    for (int i = 0; i < 101; i++) {
        memcpy(many + n, "220-hello\r\n", 11);
        n += 11;
    }
    memcpy(many + n, "220 done\r\n", 11);
    static const struct step s[] = {{ST_SEND, many, 0}, END};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    assert_int_equal(f->d.why, SMTPC_FAIL_PROTOCOL);
}

static void test_not_smtp(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {SEND("SSH-2.0-OpenSSH_9.2\r\n"), END};
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    assert_int_equal(f->d.why, SMTPC_FAIL_PROTOCOL);
    assert_int_equal(f->d.last.code, 0);
}

/* ---- failures: drops, stalls, connect ------------------------------------------------ */

/* drop_case - the server follows s, which ends in DROP; the session must end with
 * SMTPC_FAIL_DROPPED, and when ready() came the transaction is marked failed */
static void drop_case(struct fx *f, const struct step *s, bool txn_started)
{
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    if (f->srv.err[0]) fail_msg("server: %s", f->srv.err);
    assert_int_equal(f->d.nclosed, 1);
    assert_int_equal(f->d.why, SMTPC_FAIL_DROPPED);
    assert_int_equal(f->d.ndone, 0);
    if (txn_started) {
        assert_int_equal(x.t.fail, SMTPC_FAIL_DROPPED);
        assert_null(smtpc_rcpt_outcome(&x.t, 0));
    } else {
        assert_int_equal(f->d.nready, 0);
    }
}

static void test_drop_banner(void **state)
{
    static const struct step s[] = {DROP};
    drop_case(*state, s, false);
}

static void test_drop_ehlo(void **state)
{
    static const struct step s[] = {GREET, DROP};
    drop_case(*state, s, false);
}

static void test_drop_mail(void **state)
{
    static const struct step s[] = {GREET, EHLO_PLAIN, ALONE("MAIL FROM:<a@x.test>"), DROP};
    drop_case(*state, s, true);
}

static void test_drop_rcpt(void **state)
{
    static const struct step s[] = {GREET,
                                    EHLO_PLAIN,
                                    ALONE("MAIL FROM:<a@x.test>"),
                                    SEND("250 ok\r\n"),
                                    ALONE("RCPT TO:<b1@y.test>"),
                                    DROP};
    drop_case(*state, s, true);
}

static void test_drop_data(void **state)
{
    static const struct step s[] = {GREET,
                                    EHLO_PLAIN,
                                    ALONE("MAIL FROM:<a@x.test>"),
                                    SEND("250 ok\r\n"),
                                    ALONE("RCPT TO:<b1@y.test>"),
                                    SEND("250 ok\r\n"),
                                    ALONE("DATA"),
                                    DROP};
    drop_case(*state, s, true);
}

static void test_drop_after_text(void **state)
{
    static const struct step s[] = {
        GREET, EHLO_PIPE, BATCH(MAIL1 RCPT1 "DATA\r\n"), SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
        DATA,  DROP};
    drop_case(*state, s, true);
}

/* stall_case - the server follows s, which ends in STALL; 1 s timeouts */
static void stall_case(struct fx *f, const struct step *s, bool txn_started)
{
    struct smtpc_timeouts t = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    f->p.timeouts = t;
    fx_script(f, s, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    if (f->srv.err[0]) fail_msg("server: %s", f->srv.err);
    assert_int_equal(f->d.nclosed, 1);
    assert_int_equal(f->d.why, SMTPC_FAIL_TIMEOUT);
    assert_int_equal(f->d.ndone, 0);
    if (txn_started) {
        assert_int_equal(x.t.fail, SMTPC_FAIL_TIMEOUT);
        assert_null(smtpc_rcpt_outcome(&x.t, 0));
    }
}

static void test_stall_banner(void **state)
{
    static const struct step s[] = {STALL};
    stall_case(*state, s, false);
}

static void test_stall_mail(void **state)
{
    static const struct step s[] = {GREET, EHLO_PIPE, BATCH(MAIL1 RCPT1 "DATA\r\n"), STALL};
    stall_case(*state, s, true);
}

static void test_stall_final(void **state)
{
    static const struct step s[] = {
        GREET, EHLO_PIPE, BATCH(MAIL1 RCPT1 "DATA\r\n"), SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
        DATA,  STALL};
    stall_case(*state, s, true);
}

static void test_connect_refused(void **state)
{
    struct fx *f = *state;
    /* a port nobody listens on: bind one, note it, close it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t len = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    close(fd);
    ((struct sockaddr_in *)&f->p.dest)->sin_port = sin.sin_port;
    fx_script(f, NULL, NULL);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    assert_int_equal(f->d.nclosed, 1);
    assert_int_equal(f->d.nready, 0);
    assert_int_equal(f->d.why, SMTPC_FAIL_CONNECT);
    assert_int_equal(f->d.last.code, 0);
}

static void test_source_bind(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET, EHLO_PIPE, BYE};
    fx_script(f, s, NULL);
    struct sockaddr_in *src = (struct sockaddr_in *)&f->p.source;
    src->sin_family = AF_INET;
    src->sin_addr.s_addr = htonl(0x7f000002); /* 127.0.0.2 */
    f->p.sourcelen = sizeof(*src);
    fx_run(f, NULL, 0);
    fx_ok(f);
    assert_string_equal(f->srv.peer[0], "127.0.0.2");
}

/* ---- lifetime -------------------------------------------------------------------------- */

static void test_abort_in_ready(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET, EHLO_PIPE, END};
    fx_script(f, s, NULL);
    f->d.abort_in_ready = true;
    fx_run(f, NULL, 0);
    assert_int_equal(f->d.nready, 1);
    assert_int_equal(f->d.nclosed, 0);
    assert_null(f->d.c);
}

static void test_abort_in_done(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET, EHLO_PIPE, END};
    fx_script(f, s, NULL);
    f->d.abort_in_done = true;
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    x.t.smtputf8 = true; /* fails locally, so done() comes without a round trip */
    fx_run(f, &x, 1);
    assert_int_equal(f->d.ndone, 1);
    assert_int_equal(f->d.nclosed, 0);
}

static void test_abort_at_once(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET, EHLO_PIPE, END};
    fx_script(f, s, NULL);
    struct smtpc *c = smtpc_new(&f->p, &f->cb, &f->d);
    assert_non_null(c);
    smtpc_abort(c);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(f->d.nready + f->d.nclosed, 0);
}

static void test_send_refused_when_busy(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET,
                                    EHLO_PIPE,
                                    BATCH(MAIL1 RCPT1 "DATA\r\n"),
                                    SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
                                    DATA,
                                    SEND("250 ok\r\n"),
                                    BYE};
    fx_script(f, s, NULL);
    struct tx x[2];
    tx_init(&x[0], SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    tx_init(&x[1], SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    g_in_api = true;
    f->d.c = smtpc_new(&f->p, &f->cb, &f->d);
    assert_int_equal(smtpc_send(f->d.c, &x[0].t), -1); /* not ready yet */
    g_in_api = false;
    fx_run(f, x, 1);
    fx_ok(f);
}

/* ---- STARTTLS ------------------------------------------------------------------------ */

#define EHLO_TLS SEND("250-mx.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n")

static const struct step tls_script[] = {
    GREET,
    EHLO_TLS,
    ALONE("STARTTLS"),
    SEND("220 2.0.0 Ready to start TLS\r\n"),
    TLS,
    EXPECT("EHLO client.test"),
    SEND("250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100000\r\n"),
    BATCH("MAIL FROM:<a@x.test> SIZE=25\r\n" RCPT1 "DATA\r\n"),
    SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
    DATA,
    SEND("250 2.0.0 ok\r\n"),
    BYE};

static void tls_ok_case(struct fx *f, enum SMTPC_TLS policy)
{
    fx_script(f, tls_script, NULL);
    fx_tls(f, policy);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    fx_ok(f);
    assert_int_equal(f->srv.tls_ok, 1);
    assert_true(strncmp(f->d.tls_version, "TLSv1", 5) == 0);
    assert_true(f->d.tls_cipher[0] != '\0');
    assert_false(f->d.fallback);
    assert_int_equal(f->d.max_size, 100000); /* from the EHLO after TLS */
    assert_false(f->d.eightbit);             /* forgotten: offered only before TLS */
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 0)->code, 250);
    assert_true(srv_text_is(&f->srv, 0, SIMPLE_TEXT, strlen(SIMPLE_TEXT)));
}

static void test_tls_required(void **state)
{
    struct fx *f = *state;
    tls_ok_case(f, SMTPC_TLS_REQUIRED);
    assert_true(f->srv.sni_seen);
    assert_string_equal(f->srv.sni, "mx.test");
}

static void test_tls_opportunistic(void **state)
{
    tls_ok_case(*state, SMTPC_TLS_OPPORTUNISTIC);
}

static void test_tls_no_sni_for_ip(void **state)
{
    struct fx *f = *state;
    f->p.server_name = "127.0.0.1";
    tls_ok_case(f, SMTPC_TLS_REQUIRED);
    assert_false(f->srv.sni_seen);
}

static void test_tls_required_not_offered(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET, EHLO_PIPE, BYE};
    fx_script(f, s, NULL);
    fx_tls(f, SMTPC_TLS_REQUIRED);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    assert_string_equal(f->srv.err, "");
    assert_int_equal(f->d.nready, 0);
    assert_int_equal(f->d.why, SMTPC_FAIL_TLS);
}

static void test_tls_required_handshake_fails(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET,
                                    EHLO_TLS,
                                    ALONE("STARTTLS"),
                                    SEND("220 2.0.0 Ready\r\n"),
                                    DELAY(100),
                                    SEND("HTTP/1.1 400 Bad Request\r\n\r\n"),
                                    END};
    fx_script(f, s, NULL);
    fx_tls(f, SMTPC_TLS_REQUIRED);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    assert_int_equal(f->d.nready, 0);
    assert_int_equal(f->d.why, SMTPC_FAIL_TLS);
    assert_int_equal(f->srv.nconns, 1);
}

static void test_tls_required_refused(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET, EHLO_TLS, ALONE("STARTTLS"),
                                    SEND("454 4.7.0 TLS not available\r\n"), BYE};
    fx_script(f, s, NULL);
    fx_tls(f, SMTPC_TLS_REQUIRED);
    fx_run(f, NULL, 0);
    assert_string_equal(f->srv.err, "");
    assert_int_equal(f->d.why, SMTPC_FAIL_REPLY);
    assert_int_equal(f->d.last.code, 454);
}

/* the plain second connection after a failed opportunistic handshake: STARTTLS
 * is offered again and must not be used */
static const struct step plain_again[] = {GREET,
                                          EHLO_TLS,
                                          BATCH(MAIL1 RCPT1 "DATA\r\n"),
                                          SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
                                          DATA,
                                          SEND("250 2.0.0 ok\r\n"),
                                          BYE};

static void fallback_case(struct fx *f, const struct step *first)
{
    fx_script(f, first, plain_again);
    fx_tls(f, SMTPC_TLS_OPPORTUNISTIC);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    fx_ok(f);
    assert_int_equal(f->srv.nconns, 2);
    assert_true(f->d.fallback);
    assert_string_equal(f->d.tls_version, "");
    assert_string_equal(f->d.tls_cipher, "");
    assert_int_equal(f->d.ndone, 1);
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 0)->code, 250);
    assert_true(srv_text_is(&f->srv, 0, SIMPLE_TEXT, strlen(SIMPLE_TEXT)));
}

static void test_tls_fallback_garbage(void **state)
{
    /* garbage right behind the 220, in the same segment */
    static const struct step s[] = {GREET, EHLO_TLS, ALONE("STARTTLS"),
                                    SEND("220 2.0.0 Ready\r\nthis is not TLS\r\n"), END};
    fallback_case(*state, s);
}

static void test_tls_fallback_handshake(void **state)
{
    /* garbage where the ServerHello should be: the handshake itself fails */
    static const struct step s[] = {GREET,
                                    EHLO_TLS,
                                    ALONE("STARTTLS"),
                                    SEND("220 2.0.0 Ready\r\n"),
                                    DELAY(100),
                                    SEND("HTTP/1.1 400 Bad Request\r\n\r\n"),
                                    END};
    fallback_case(*state, s);
}

static void test_tls_fallback_close(void **state)
{
    /* the server closes instead of answering the ClientHello */
    static const struct step s[] = {
        GREET, EHLO_TLS, ALONE("STARTTLS"), SEND("220 2.0.0 Ready\r\n"), DELAY(100), DROP};
    fallback_case(*state, s);
}

static void test_tls_opportunistic_refused(void **state)
{
    struct fx *f = *state;
    static const struct step s[] = {GREET,
                                    EHLO_TLS,
                                    ALONE("STARTTLS"),
                                    SEND("454 4.7.0 TLS not available\r\n"),
                                    BATCH(MAIL1 RCPT1 "DATA\r\n"),
                                    SEND("250 ok\r\n250 ok\r\n354 go\r\n"),
                                    DATA,
                                    SEND("250 ok\r\n"),
                                    BYE};
    fx_script(f, s, NULL);
    fx_tls(f, SMTPC_TLS_OPPORTUNISTIC);
    struct tx x;
    tx_init(&x, SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", NULL);
    fx_run(f, &x, 1);
    fx_ok(f);
    assert_int_equal(f->srv.nconns, 1);
    assert_true(f->d.fallback);
    assert_int_equal(smtpc_rcpt_outcome(&x.t, 0)->code, 250);
}

/* ---- Postfix smtp-sink ---------------------------------------------------------------- */

#define SMTP_SINK "/usr/sbin/smtp-sink"

/* free_port - a TCP port on 127.0.0.1 that was free a moment ago */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        close(fd);
        return -1;
    }
    socklen_t len = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    close(fd);
    return ntohs(sin.sin_port);
}

/* wait_listening - poll until something accepts on 127.0.0.1:port (5 s) */
static bool wait_listening(int port)
{
    for (int i = 0; i < 100; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sin = {0};
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)port);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int rc = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
        close(fd);
        if (rc == 0) return true;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void test_smtp_sink(void **state)
{
    struct fx *f = *state;
    if (access(SMTP_SINK, X_OK) != 0) {
        print_message("skipping: %s is not installed (Debian package postfix)\n", SMTP_SINK);
        skip();
    }
    int port = free_port();
    assert_true(port > 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    char *argv_root[] = {"smtp-sink", "-u", "nobody", "-c", addr, "100", NULL};
    char *argv_user[] = {"smtp-sink", "-c", addr, "100", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc =
        posix_spawn(&pid, SMTP_SINK, &fa, NULL, geteuid() == 0 ? argv_root : argv_user, environ);
    posix_spawn_file_actions_destroy(&fa);
    assert_int_equal(rc, 0);
    bool up = wait_listening(port);
    if (!up) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        fail_msg("smtp-sink did not start on %s", addr);
    }
    ((struct sockaddr_in *)&f->p.dest)->sin_port = htons((uint16_t)port);
    f->p.server_name = "localhost";
    size_t len;
    char *big = make_text(300 * 1024, &len);
    f->owned[0] = big;
    struct tx x[3];
    tx_init(&x[0], SIMPLE_TEXT, strlen(SIMPLE_TEXT), "b1@y.test", "b2@y.test", NULL);
    tx_init(&x[1], big, len, "b3@y.test", NULL);
    static const char dots[] = ".dot\r\n..\r\n.\r\nend";
    tx_init(&x[2], dots, strlen(dots), "b1@y.test", NULL);
    fx_run(f, x, 3);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    assert_int_equal(f->d.nclosed, 1);
    assert_int_equal(f->d.why, SMTPC_FAIL_NONE);
    assert_int_equal(f->d.ndone, 3);
    assert_true(f->d.pipelining);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(x[i].t.fail, SMTPC_FAIL_NONE);
        for (uint32_t r = 0; r < x[i].t.nrcpt; r++)
            assert_int_equal(smtpc_rcpt_outcome(&x[i].t, r)->code, 250);
    }
}

#define T(name) cmocka_unit_test_setup_teardown(name, fx_setup, fx_teardown)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_reply),
        cmocka_unit_test(test_rcpt_outcome),
        T(test_greeting_refused),
        T(test_ehlo_5xx_helo),
        T(test_ehlo_4xx_fails),
        T(test_pipelined),
        T(test_lockstep),
        T(test_rcpt_mixed),
        T(test_all_rcpt_refused_354),
        T(test_data_refused),
        T(test_final_4xx_5xx),
        T(test_dot_stuffing),
        T(test_no_final_crlf),
        T(test_large_message),
        T(test_large_message_tls),
        T(test_rset_after_refused_mail),
        T(test_rset_lockstep_mail_refused),
        T(test_size_limit),
        T(test_content_pending_waits_after_354),
        T(test_content_pending_ready_early_and_chained),
        T(test_smtputf8),
        T(test_smtputf8_offered),
        T(test_multiline_enhanced),
        T(test_reply_too_long),
        T(test_reply_too_many_lines),
        T(test_not_smtp),
        T(test_drop_banner),
        T(test_drop_ehlo),
        T(test_drop_mail),
        T(test_drop_rcpt),
        T(test_drop_data),
        T(test_drop_after_text),
        T(test_stall_banner),
        T(test_stall_mail),
        T(test_stall_final),
        T(test_connect_refused),
        T(test_source_bind),
        T(test_abort_in_ready),
        T(test_abort_in_done),
        T(test_abort_at_once),
        T(test_send_refused_when_busy),
        T(test_tls_required),
        T(test_tls_opportunistic),
        T(test_tls_no_sni_for_ip),
        T(test_tls_required_not_offered),
        T(test_tls_required_handshake_fails),
        T(test_tls_required_refused),
        T(test_tls_fallback_garbage),
        T(test_tls_fallback_handshake),
        T(test_tls_fallback_close),
        T(test_tls_opportunistic_refused),
        T(test_smtp_sink),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
