/*
 * smtpc - one outbound SMTP client session (see smtpc.h for the contract).
 *
 * Owns: the session's bufferevent (a socket bufferevent, after STARTTLS an OpenSSL
 * filter wrapped around it), its SSL object, one timer and one deferral event.  It
 * does not own the SSL_CTX, the transactions or anything they point to.
 *
 * Entry points: smtpc_new, smtpc_send, smtpc_quit, smtpc_abort; the rest runs from
 * libevent callbacks.  smtpc_parse_reply is a pure function (fuzzed).
 *
 * The state machine.  Every state that waits for the server has a timeout from the
 * table smtpc_states (Postfix keeps the same per-state table of command, timeout
 * and description).  A transaction walks a list of commands numbered
 *     0 = MAIL, 1..nrcpt = RCPT for recipient i-1, nrcpt+1 = DATA
 * with two cursors: send_i (the next command to write) and recv_i (the command whose
 * reply comes next).  With PIPELINING the whole list goes out in one write and
 * only recv_i moves; in lock-step send_i runs at most one ahead of recv_i.  After
 * the 354 the text is streamed (see below), then "." and the final reply.
 *
 * Invariants:
 *   - user callbacks run only from smtpc_defer_cb, never from an entry point and
 *     never from a bufferevent callback, so nothing re-enters the caller;
 *   - a session is freed only by smtpc_defer_cb after closed() has returned, or by
 *     smtpc_abort() when no callback of this session is on the stack (otherwise
 *     the abort is recorded and the deferral handler frees it on its way out);
 *   - bufferevents are never freed inside their own callbacks: on failure their
 *     callbacks are cleared and they are disabled, and the deferral handler frees
 *     them (the opportunistic-TLS reconnect goes through it as well);
 *   - once the final reply after "." has arrived, done() is delivered even when the
 *     connection breaks in the same loop tick (so a message is never sent twice);
 *   - t->content is referenced by the output buffer only while the text is being
 *     sent; a failure drains the output at once, so closed() may free it.
 *
 * The text.  Lines starting with "." get another "." (RFC 5321 4.5.2), a bare LF
 * goes out as CRLF (the contract says CRLF lines; this keeps a stray LF from
 * becoming an end-of-data ambiguity at the receiver), and a missing final line
 * end is added before ".".  The text is produced SMTPC_TEXT_CHUNK source octets at
 * a time while the output holds less than SMTPC_TEXT_HIWAT, refilled from the
 * write callback when the output drains to SMTPC_TEXT_LOWAT; runs between inserted
 * dots are added by reference when they are long.  Under TLS the socket
 * bufferevent below the filter gets a write high-water mark so the filter does
 * not encrypt the whole message into memory at once.
 */
#include "smtpc.h"
#include "net.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SMTPC_LINE_MAX    1000        /* reply line, without its line end */
#define SMTPC_REPLY_LINES 100         /* lines in one reply */
#define SMTPC_TEXT_CHUNK  (64 * 1024) /* source octets dot-stuffed per step */
#define SMTPC_TEXT_HIWAT  (256 * 1024)
#define SMTPC_TEXT_LOWAT  (64 * 1024)
#define SMTPC_TLS_HIWAT   (256 * 1024) /* ciphertext queued below the TLS filter */
#define SMTPC_REF_MIN     1024         /* shorter runs are copied, longer referenced */

enum SMTPC_STATE {
    SMTPC_S_CONNECT,   /* non-blocking connect in progress */
    SMTPC_S_BANNER,    /* waiting for the greeting */
    SMTPC_S_EHLO,      /* EHLO sent */
    SMTPC_S_HELO,      /* HELO sent after EHLO got 5xx */
    SMTPC_S_STARTTLS,  /* STARTTLS sent */
    SMTPC_S_HANDSHAKE, /* TLS handshake over the filter */
    SMTPC_S_IDLE,      /* between transactions */
    SMTPC_S_RSET,      /* RSET sent before the next MAIL */
    SMTPC_S_MAIL,      /* the next reply is MAIL's */
    SMTPC_S_RCPT,      /* the next reply is a RCPT's */
    SMTPC_S_DATA,      /* the next reply is DATA's */
    SMTPC_S_TEXT,      /* streaming the message text */
    SMTPC_S_DOT,       /* "." sent, waiting for the final reply */
    SMTPC_S_QUIT,      /* QUIT sent */
    SMTPC_S_DEAD,      /* finished; closed() pending */
};

/* smtpc_states - per-state description and timeout (offset into struct
 * smtpc_timeouts; SIZE_MAX = no timer) */
static const struct {
    const char *name;
    size_t tmo;
} smtpc_states[] = {
    [SMTPC_S_CONNECT] = {"connect", offsetof(struct smtpc_timeouts, connect)},
    [SMTPC_S_BANNER] = {"banner", offsetof(struct smtpc_timeouts, greeting)},
    [SMTPC_S_EHLO] = {"ehlo", offsetof(struct smtpc_timeouts, helo)},
    [SMTPC_S_HELO] = {"helo", offsetof(struct smtpc_timeouts, helo)},
    [SMTPC_S_STARTTLS] = {"starttls", offsetof(struct smtpc_timeouts, starttls)},
    [SMTPC_S_HANDSHAKE] = {"handshake", offsetof(struct smtpc_timeouts, starttls)},
    [SMTPC_S_IDLE] = {"idle", SIZE_MAX},
    [SMTPC_S_RSET] = {"rset", offsetof(struct smtpc_timeouts, rset)},
    [SMTPC_S_MAIL] = {"mail", offsetof(struct smtpc_timeouts, mail)},
    [SMTPC_S_RCPT] = {"rcpt", offsetof(struct smtpc_timeouts, rcpt)},
    [SMTPC_S_DATA] = {"data", offsetof(struct smtpc_timeouts, data_init)},
    [SMTPC_S_TEXT] = {"text", offsetof(struct smtpc_timeouts, data_block)},
    [SMTPC_S_DOT] = {"dot", offsetof(struct smtpc_timeouts, data_done)},
    [SMTPC_S_QUIT] = {"quit", offsetof(struct smtpc_timeouts, quit)},
    [SMTPC_S_DEAD] = {"dead", SIZE_MAX},
};

/* RFC 5321 4.5.3.2 where it gives a value; connect, RSET and QUIT are ours */
static const struct smtpc_timeouts smtpc_default_timeouts = {
    .connect = 30,
    .greeting = 300,
    .helo = 300,
    .starttls = 300,
    .mail = 300,
    .rcpt = 300,
    .data_init = 120,
    .data_block = 180,
    .data_done = 600,
    .rset = 120,
    .quit = 30,
};

/* pending user callbacks, delivered by smtpc_defer_cb in this order */
#define SMTPC_P_RECONNECT 0x01 /* not a callback: replace the connection */
#define SMTPC_P_READY     0x02
#define SMTPC_P_DONE      0x04
#define SMTPC_P_CLOSED    0x08
/* finished transactions awaiting done(): the current one, the one chained behind it,
 * and one refused locally while both were in flight */
#define SMTPC_DONE_MAX 4

struct smtpc {
    struct event_base *base;
    struct smtpc_params p; /* copy; string pointers replaced by our own copies */
    char *helo_name, *server_name;
    struct smtpc_callbacks cb;
    void *arg;

    struct bufferevent *bev; /* socket bufferevent, or the TLS filter around it */
    struct event *timer;
    struct event *defer;
    enum SMTPC_STATE state;

    /* deferred delivery */
    unsigned pending;
    struct smtpc_txn *done_q[SMTPC_DONE_MAX]; /* finished, oldest first */
    unsigned ndone;
    enum SMTPC_FAIL close_why;
    bool in_cb, aborted;
    bool quit_pending; /* smtpc_quit() on a busy session: QUIT when it is idle */

    /* reply assembly */
    struct vbuf rbuf; /* lines of the reply being read, each ending in "\n" */
    unsigned rlines;
    struct smtpc_reply last;

    /* session facts */
    char peer_addr[INET6_ADDRSTRLEN];
    char banner[sizeof(((struct smtpc_reply *)0)->text)];
    bool ext_pipelining, ext_8bitmime, ext_smtputf8, ext_starttls, ext_enhanced;
    uint64_t ext_size;
    bool tls_active, tls_fallback;
    char tls_version[32];
    char tls_cipher[128];
    bool need_rset; /* the server may hold a transaction of ours: RSET first */

    /* the transaction in progress */
    struct smtpc_txn *txn;
    /* the transaction chained behind it (PIPELINING): its commands go out right
     * after the current one's "." (RFC 2920 3.1: message text may open a group),
     * so a connection carrying many messages costs one write and one read each */
    struct smtpc_txn *next;
    bool next_sent;
    uint32_t next_send_i;
    uint32_t send_i, recv_i, nok;
    bool mail_ok;
    size_t text_off;
    bool text_bol;
    bool text_wait;   /* 354 came before the text was made (t->content_pending) */
    bool prefix_sent; /* t->prefix is queued (it goes before the first text octet) */
};

static void smtpc_bev_read_cb(struct bufferevent *bev, void *arg);
static void smtpc_bev_write_cb(struct bufferevent *bev, void *arg);
static void smtpc_bev_event_cb(struct bufferevent *bev, short what, void *arg);
static void smtpc_handle_reply(struct smtpc *c, const struct smtpc_reply *r);

const char *smtpc_tls_str(enum SMTPC_TLS t)
{
    static const char *const names[] = {"off", "opportunistic", "required"};
    return (unsigned)t < ARRAY_LEN(names) ? names[t] : "unknown";
}

const char *smtpc_fail_str(enum SMTPC_FAIL f)
{
    static const char *const names[] = {"none",     "connect", "timeout", "dropped",
                                        "protocol", "tls",     "reply"};
    return (unsigned)f < ARRAY_LEN(names) ? names[f] : "unknown";
}

/* smtpc_is_2xx - positive completion */
static bool smtpc_is_2xx(const struct smtpc_reply *r)
{
    return r->code >= 200 && r->code <= 299;
}

const struct smtpc_reply *smtpc_rcpt_outcome(const struct smtpc_txn *t, uint32_t i)
{
    /* a refusal that arrived decides, even if the session died after it (a 421 to
     * MAIL and a close is the server's answer, not a dropped connection) */
    if (t->mail_reply.code != 0 && !smtpc_is_2xx(&t->mail_reply)) return &t->mail_reply;
    if (t->rcpt_reply && i < t->nrcpt && t->rcpt_reply[i].code != 0 &&
        !smtpc_is_2xx(&t->rcpt_reply[i]))
        return &t->rcpt_reply[i];
    if (t->fail != SMTPC_FAIL_NONE && t->data_reply.code == 0) return NULL;
    /* code 0: MAIL was never answered because everything failed locally per
     * recipient, so the recipient's own reply decides */
    if (t->rcpt_reply && i < t->nrcpt && !smtpc_is_2xx(&t->rcpt_reply[i])) return &t->rcpt_reply[i];
    return &t->data_reply;
}

/* ---- reply parsing ---------------------------------------------------------- */

/* smtpc_enh_len - length of an RFC 3463 code "c.sss.ddd" of class cls at the start
 * of s (n octets), followed by a space or the end; 0 if there is none */
static size_t smtpc_enh_len(const char *s, size_t n, char cls)
{
    size_t i = 0;
    if (n < 5 || s[0] != cls || (cls != '2' && cls != '4' && cls != '5') || s[1] != '.') return 0;
    i = 2;
    for (int part = 0; part < 2; part++) {
        size_t digits = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9' && digits < 4) {
            i++;
            digits++;
        }
        if (digits < 1 || digits > 3) return 0;
        if (part == 0) {
            if (i >= n || s[i] != '.') return 0;
            i++;
        }
    }
    if (i < n && s[i] != ' ') return 0;
    return i;
}

/* smtpc_text_append - add s (n octets) to r->text, a space before it unless first;
 * control characters become spaces; stops silently when full */
static void smtpc_text_append(struct smtpc_reply *r, size_t *tlen, bool *full, const char *s,
                              size_t n)
{
    const size_t cap = sizeof(r->text) - 1;
    if (*full || n == 0) return;
    if (*tlen > 0) {
        if (*tlen >= cap) {
            *full = true;
            return;
        }
        r->text[(*tlen)++] = ' ';
    }
    for (size_t i = 0; i < n; i++) {
        if (*tlen >= cap) {
            *full = true;
            break;
        }
        unsigned char ch = (unsigned char)s[i];
        r->text[(*tlen)++] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
    }
    r->text[*tlen] = '\0';
}

/* smtpc_utf8_trim - cut a UTF-8 sequence left incomplete by truncation at the end
 * of text (length *tlen), so a truncated text stays valid UTF-8 when it was */
static void smtpc_utf8_trim(char *text, size_t *tlen)
{
    size_t n = *tlen, i = n, cont = 0;
    while (i > 0 && cont < 4 && ((unsigned char)text[i - 1] & 0xc0) == 0x80) {
        i--;
        cont++;
    }
    if (i == 0) return;
    unsigned char lead = (unsigned char)text[i - 1];
    size_t want;
    if (lead >= 0xf0 && lead <= 0xf7)
        want = 3;
    else if (lead >= 0xe0)
        want = 2;
    else if (lead >= 0xc0)
        want = 1;
    else
        return; /* ASCII (or a stray continuation run): nothing to fix */
    if (cont < want) {
        *tlen = i - 1;
        text[*tlen] = '\0';
    }
}

int smtpc_parse_reply(const char *buf, size_t len, struct smtpc_reply *r)
{
    size_t pos = 0, tlen = 0;
    int code = 0;
    bool last = false, full = false;

    memset(r, 0, sizeof(*r));
    if (len == 0) return -1;
    while (pos < len) {
        if (last) goto bad; /* something after the final line */
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n > 0 && line[n - 1] == '\r') n--;
        if (n < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
            line[2] < '0' || line[2] > '9')
            goto bad;
        int lc = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (code && lc != code) goto bad;
        code = lc;
        if (n == 3 || line[3] == ' ')
            last = true;
        else if (line[3] != '-')
            goto bad;
        const char *txt = line + (n > 3 ? 4 : 3);
        size_t txtlen = n > 3 ? n - 4 : 0;
        size_t el = smtpc_enh_len(txt, txtlen, line[0]);
        if (el) {
            if (!r->enh[0]) {
                memcpy(r->enh, txt, el);
                r->enh[el] = '\0';
            }
            txt += el;
            txtlen -= el;
            while (txtlen > 0 && *txt == ' ') {
                txt++;
                txtlen--;
            }
        }
        smtpc_text_append(r, &tlen, &full, txt, txtlen);
    }
    if (!last) goto bad;
    if (full) smtpc_utf8_trim(r->text, &tlen);
    r->code = code;
    return 0;
bad:
    memset(r, 0, sizeof(*r));
    return -1;
}

/* ---- small helpers -------------------------------------------------------------- */

/* smtpc_set_reply - fill r with a locally made reply */
static void smtpc_set_reply(struct smtpc_reply *r, int code, const char *enh, const char *text)
{
    memset(r, 0, sizeof(*r));
    r->code = code;
    str_copy(r->enh, sizeof(r->enh), enh);
    str_copy(r->text, sizeof(r->text), text);
}

/* smtpc_timeout_of - the timeout in seconds for state s */
static int smtpc_timeout_of(const struct smtpc *c, enum SMTPC_STATE s)
{
    size_t off = smtpc_states[s].tmo;
    if (off == SIZE_MAX) return 0;
    int v;
    memcpy(&v, (const char *)&c->p.timeouts + off, sizeof(v));
    return v;
}

/* smtpc_arm - (re)start the timer for the current state; none in IDLE and DEAD */
static void smtpc_arm(struct smtpc *c)
{
    int secs = smtpc_timeout_of(c, c->state);
    evtimer_del(c->timer);
    if (secs > 0) {
        struct timeval tv = {secs, 0};
        evtimer_add(c->timer, &tv);
    }
}

/* smtpc_enter - switch to state s and arm its timer */
static void smtpc_enter(struct smtpc *c, enum SMTPC_STATE s)
{
    c->state = s;
    smtpc_arm(c);
}

/* smtpc_schedule - make smtpc_defer_cb run from the loop */
static void smtpc_schedule(struct smtpc *c, unsigned what)
{
    c->pending |= what;
    event_active(c->defer, EV_TIMEOUT, 1);
}

/* smtpc_cmd - queue one command line (CRLF added) */
static void smtpc_cmd(struct smtpc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void smtpc_cmd(struct smtpc *c, const char *fmt, ...)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
}

/* smtpc_detach_bev - stop all I/O on the current bufferevent without freeing it
 * (we may be inside its callback); output referencing t->content is dropped */
static void smtpc_detach_bev(struct smtpc *c)
{
    if (!c->bev) return;
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_drain(out, evbuffer_get_length(out));
}

/* smtpc_fail_txns - the session ends: the transactions in progress get why (a
 * chained one whose commands never went out keeps sent == false) */
static void smtpc_fail_txns(struct smtpc *c, enum SMTPC_FAIL why)
{
    if (c->txn) {
        c->txn->fail = why;
        c->txn = NULL;
    }
    if (c->next) {
        if (c->next_sent) c->next->fail = why;
        c->next = NULL;
        c->next_sent = false;
    }
}

/* smtpc_fail - end the session now (no QUIT): the transaction in progress gets
 * why, and closed(why, last) follows from the loop */
static void smtpc_fail(struct smtpc *c, enum SMTPC_FAIL why)
{
    if (c->state == SMTPC_S_DEAD) return;
    smtpc_fail_txns(c, why);
    c->close_why = why;
    c->state = SMTPC_S_DEAD;
    evtimer_del(c->timer);
    smtpc_detach_bev(c);
    c->pending &= ~SMTPC_P_READY;
    smtpc_schedule(c, SMTPC_P_CLOSED);
}

/* smtpc_fail_quit - end a session whose connection still works: say QUIT, then
 * report why (the reply that caused it stays in c->last) */
static void smtpc_fail_quit(struct smtpc *c, enum SMTPC_FAIL why)
{
    smtpc_fail_txns(c, why);
    c->close_why = why;
    smtpc_cmd(c, "QUIT");
    smtpc_enter(c, SMTPC_S_QUIT);
}

/* smtpc_reset_ext - forget the extensions the server offered (new EHLO coming) */
static void smtpc_reset_ext(struct smtpc *c)
{
    c->ext_pipelining = c->ext_8bitmime = c->ext_smtputf8 = false;
    c->ext_starttls = c->ext_enhanced = false;
    c->ext_size = 0;
}

/* ---- connecting ------------------------------------------------------------------ */

/* smtpc_setup_bev - callbacks and watermarks on a fresh bufferevent */
static void smtpc_setup_bev(struct smtpc *c, struct bufferevent *bev)
{
    bufferevent_setcb(bev, smtpc_bev_read_cb, smtpc_bev_write_cb, smtpc_bev_event_cb, c);
    bufferevent_setwatermark(bev, EV_WRITE, SMTPC_TEXT_LOWAT, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/*
 * smtpc_connect - open a socket (bound to params.source when given) and start a
 * non-blocking connect.  Returns 0 when the connect is under way or has failed in a
 * way the event callback will report, -1 on a local failure (socket, bind).
 */
static int smtpc_connect(struct smtpc *c)
{
    int fd = socket(c->p.dest.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (c->p.sourcelen > 0) {
#ifdef IP_BIND_ADDRESS_NO_PORT
        /* bulk sending from few addresses: let connect() pick the port, so the
         * 4-tuple and not the local port alone has to be unique */
        int one = 1;
        if (c->p.source.ss_family == AF_INET || c->p.source.ss_family == AF_INET6)
            (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
#endif
        if (bind(fd, (const struct sockaddr *)&c->p.source, c->p.sourcelen) < 0) {
            close(fd);
            return -1;
        }
    }
    c->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!c->bev) {
        close(fd);
        return -1;
    }
    smtpc_setup_bev(c, c->bev);
    smtpc_enter(c, SMTPC_S_CONNECT);
    /* an immediate refusal is reported through the event callback; a -1 here is
     * some other error, which we report the same way from the loop */
    if (bufferevent_socket_connect(c->bev, (const struct sockaddr *)&c->p.dest, (int)c->p.destlen) <
        0)
        smtpc_fail(c, SMTPC_FAIL_CONNECT);
    return 0;
}

/* smtpc_free - release everything; no callbacks */
static void smtpc_free(struct smtpc *c)
{
    if (c->bev) {
        bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
        bufferevent_free(c->bev);
    }
    event_free(c->timer);
    event_free(c->defer);
    vbuf_free(&c->rbuf);
    free(c->helo_name);
    free(c->server_name);
    free(c);
}

/* smtpc_reconnect - opportunistic TLS failed: drop the connection and start over
 * in plain text (runs from smtpc_defer_cb, outside the old bufferevent's callbacks) */
static void smtpc_reconnect(struct smtpc *c)
{
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    smtpc_reset_ext(c);
    c->tls_active = false;
    c->tls_version[0] = c->tls_cipher[0] = '\0';
    c->banner[0] = '\0';
    c->need_rset = false;
    vbuf_reset(&c->rbuf);
    c->rlines = 0;
    if (smtpc_connect(c) < 0) smtpc_fail(c, SMTPC_FAIL_CONNECT);
}

/* ---- deferred callbacks ------------------------------------------------------------ */

/* smtpc_defer_cb - deliver pending callbacks in order (ready, done, closed) and free
 * the session after closed() or a smtpc_abort() from inside a callback */
static void smtpc_defer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct smtpc *c = arg;

    if (c->pending & SMTPC_P_RECONNECT) {
        c->pending &= ~SMTPC_P_RECONNECT;
        smtpc_reconnect(c);
    }
    if (c->pending & SMTPC_P_READY) {
        c->pending &= ~SMTPC_P_READY;
        if (!(c->pending & SMTPC_P_CLOSED) && c->cb.ready) {
            c->in_cb = true;
            c->cb.ready(c->arg);
            c->in_cb = false;
            if (c->aborted) {
                smtpc_free(c);
                return;
            }
        }
    }
    c->pending &= ~SMTPC_P_DONE;
    while (c->ndone > 0) {
        struct smtpc_txn *t = c->done_q[0];
        c->ndone--;
        memmove(c->done_q, c->done_q + 1, c->ndone * sizeof *c->done_q);
        if (c->cb.done) {
            c->in_cb = true;
            c->cb.done(c->arg, t);
            c->in_cb = false;
            if (c->aborted) {
                smtpc_free(c);
                return;
            }
        }
    }
    if (c->pending & SMTPC_P_CLOSED) {
        c->pending = 0;
        c->in_cb = true;
        if (c->cb.closed) c->cb.closed(c->arg, c->close_why, &c->last);
        smtpc_free(c);
    }
}

/* smtpc_become_idle - the session can take a transaction: tell the caller (first
 * time: ready) or, when smtpc_quit() was asked for meanwhile, say QUIT */
static void smtpc_become_idle(struct smtpc *c, bool first)
{
    if (c->quit_pending) {
        c->close_why = SMTPC_FAIL_NONE;
        smtpc_cmd(c, "QUIT");
        smtpc_enter(c, SMTPC_S_QUIT);
        return;
    }
    smtpc_enter(c, SMTPC_S_IDLE);
    if (first) smtpc_schedule(c, SMTPC_P_READY);
}

/* smtpc_push_done - t is finished: done(t) from the loop, in order */
static void smtpc_push_done(struct smtpc *c, struct smtpc_txn *t)
{
    c->done_q[c->ndone++] = t; /* room: smtpc_send_queue refuses when it could run out */
    smtpc_schedule(c, SMTPC_P_DONE);
}

static void smtpc_txn_commands(struct smtpc *c);

/* smtpc_start_next - make the chained transaction current: its commands are out
 * already (replies follow the final reply just handled), or it starts now */
static void smtpc_start_next(struct smtpc *c)
{
    c->txn = c->next;
    c->next = NULL;
    if (c->next_sent) {
        c->next_sent = false;
        c->send_i = c->next_send_i;
        c->recv_i = 0;
        c->nok = 0;
        c->mail_ok = false;
        smtpc_enter(c, SMTPC_S_MAIL);
    } else if (c->need_rset) {
        smtpc_cmd(c, "RSET");
        smtpc_enter(c, SMTPC_S_RSET);
    } else {
        smtpc_txn_commands(c);
    }
}

/* smtpc_txn_finish - the transaction is over (whatever the replies): done(), then
 * the chained transaction if any */
static void smtpc_txn_finish(struct smtpc *c)
{
    smtpc_push_done(c, c->txn);
    c->txn = NULL;
    if (c->next)
        smtpc_start_next(c);
    else
        smtpc_become_idle(c, false);
}

/* ---- TLS ---------------------------------------------------------------------------- */

/* smtpc_sni_name - true if name is a host name fit for SNI (not an address
 * literal); the copy without a trailing dot goes to out */
static bool smtpc_sni_name(const char *name, char *out, size_t outsz)
{
    struct in6_addr a6;
    struct in_addr a4;
    if (!name || !name[0] || name[0] == '[' || strchr(name, ':')) return false;
    if (inet_pton(AF_INET, name, &a4) == 1 || inet_pton(AF_INET6, name, &a6) == 1) return false;
    if (str_copy(out, outsz, name) < 0) return false;
    size_t n = strlen(out);
    if (n > 0 && out[n - 1] == '.') out[n - 1] = '\0';
    return out[0] != '\0';
}

/* smtpc_tls_failed - STARTTLS could not be completed: fall back to a fresh plain
 * connection (opportunistic) or fail the session (required) */
static void smtpc_tls_failed(struct smtpc *c)
{
    if (c->p.tls == SMTPC_TLS_OPPORTUNISTIC && !c->tls_fallback) {
        c->tls_fallback = true;
        evtimer_del(c->timer);
        smtpc_detach_bev(c);
        c->state = SMTPC_S_CONNECT;
        smtpc_schedule(c, SMTPC_P_RECONNECT);
        return;
    }
    smtpc_fail(c, SMTPC_FAIL_TLS);
}

/* smtpc_tls_start - the server said 220 to STARTTLS: wrap the connection */
static void smtpc_tls_start(struct smtpc *c)
{
    struct bufferevent *under = c->bev;

    /* Anything the server sent after its 220 arrived in clear text and would be
     * taken as part of the TLS session (the STARTTLS injection flaw): refuse. */
    if (evbuffer_get_length(bufferevent_get_input(under)) > 0) {
        smtpc_tls_failed(c);
        return;
    }
    SSL *ssl = SSL_new(c->p.tls_ctx);
    if (!ssl) {
        smtpc_tls_failed(c);
        return;
    }
    /* certificates are not verified yet (opportunistic and "encrypt" levels) */
    SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    /* SMTP ends its own data; a peer closing without close_notify is not a
     * truncation we could miss, and must look like EOF, not a TLS error */
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    char sni[256];
    if (smtpc_sni_name(c->server_name, sni, sizeof(sni))) SSL_set_tlsext_host_name(ssl, sni);

    bufferevent_setcb(under, NULL, NULL, NULL, NULL);
    bufferevent_setwatermark(under, EV_WRITE, 0, SMTPC_TLS_HIWAT);
    struct bufferevent *tls =
        bufferevent_openssl_filter_new(c->base, under, ssl, BUFFEREVENT_SSL_CONNECTING,
                                       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!tls) {
        /* libevent 2.1 frees the SSL and the underlying bufferevent itself when
         * the handshake fails at once (its error path with CLOSE_ON_FREE) */
        c->bev = NULL;
        smtpc_tls_failed(c);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
    c->bev = tls;
    smtpc_setup_bev(c, tls);
    smtpc_enter(c, SMTPC_S_HANDSHAKE);
}

/* smtpc_tls_done - handshake finished: record it and say EHLO again (RFC 3207 4.2:
 * forget everything learned before) */
static void smtpc_tls_done(struct smtpc *c)
{
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    c->tls_active = true;
    str_copy(c->tls_version, sizeof(c->tls_version), ssl ? SSL_get_version(ssl) : "");
    const char *cipher = ssl ? SSL_get_cipher_name(ssl) : NULL;
    str_copy(c->tls_cipher, sizeof(c->tls_cipher), cipher ? cipher : "");
    smtpc_reset_ext(c);
    smtpc_cmd(c, "EHLO %s", c->helo_name);
    smtpc_enter(c, SMTPC_S_EHLO);
}

/* ---- greeting and EHLO ------------------------------------------------------------ */

/* smtpc_ehlo_keyword - does line text s (n octets) start with keyword kw? Sets
 * *arg to what follows it */
static bool smtpc_ehlo_keyword(const char *s, size_t n, const char *kw, const char **arg,
                               size_t *arglen)
{
    size_t k = strlen(kw);
    if (n < k || strncasecmp(s, kw, k) != 0 || (n > k && s[k] != ' ' && s[k] != '=')) return false;
    *arg = s + k;
    *arglen = n - k;
    while (*arglen > 0 && (**arg == ' ' || **arg == '=')) {
        (*arg)++;
        (*arglen)--;
    }
    return true;
}

/* smtpc_parse_ehlo - read the extensions from the raw EHLO reply in c->rbuf (every
 * line but the first is "250-KEYWORD params" or "250 KEYWORD params") */
static void smtpc_parse_ehlo(struct smtpc *c)
{
    const char *p = (const char *)c->rbuf.data, *end = p + c->rbuf.len;
    bool first = true;

    smtpc_reset_ext(c);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const char *line = p;
        p += n + 1;
        if (first) {
            first = false;
            continue;
        }
        if (n < 5) continue;
        const char *s = line + 4, *arg;
        size_t sl = n - 4, arglen;
        if (smtpc_ehlo_keyword(s, sl, "PIPELINING", &arg, &arglen))
            c->ext_pipelining = true;
        else if (smtpc_ehlo_keyword(s, sl, "8BITMIME", &arg, &arglen))
            c->ext_8bitmime = true;
        else if (smtpc_ehlo_keyword(s, sl, "SMTPUTF8", &arg, &arglen))
            c->ext_smtputf8 = true;
        else if (smtpc_ehlo_keyword(s, sl, "STARTTLS", &arg, &arglen))
            c->ext_starttls = true;
        else if (smtpc_ehlo_keyword(s, sl, "ENHANCEDSTATUSCODES", &arg, &arglen))
            c->ext_enhanced = true;
        else if (smtpc_ehlo_keyword(s, sl, "SIZE", &arg, &arglen)) {
            /* "SIZE" alone or "SIZE 0" means no fixed limit (RFC 1870) */
            uint64_t v = 0;
            size_t i = 0;
            while (i < arglen && arg[i] >= '0' && arg[i] <= '9') {
                unsigned d = (unsigned)(arg[i] - '0');
                v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
                i++;
            }
            c->ext_size = v;
        }
    }
}

/* smtpc_after_ehlo - EHLO/HELO accepted: STARTTLS when the policy wants it, else
 * the session is ready */
static void smtpc_after_ehlo(struct smtpc *c)
{
    if (!c->tls_active && !c->tls_fallback && c->p.tls != SMTPC_TLS_OFF) {
        if (c->ext_starttls) {
            smtpc_cmd(c, "STARTTLS");
            smtpc_enter(c, SMTPC_S_STARTTLS);
            return;
        }
        if (c->p.tls == SMTPC_TLS_REQUIRED) {
            smtpc_fail_quit(c, SMTPC_FAIL_TLS);
            return;
        }
    }
    smtpc_become_idle(c, true);
}

/* ---- transactions --------------------------------------------------------------- */

/* smtpc_has_break - does s contain a CR, LF (command injection) */
static bool smtpc_has_break(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* smtpc_next_idx - the first command index >= i that is to be sent (recipients
 * refused locally are skipped) */
static uint32_t smtpc_next_idx(const struct smtpc_txn *t, uint32_t i)
{
    while (i >= 1 && i <= t->nrcpt && t->rcpt_reply[i - 1].code != 0)
        i++;
    return i;
}

/* smtpc_state_for - the state waiting for the reply to command index i */
static enum SMTPC_STATE smtpc_state_for(const struct smtpc *c, uint32_t i)
{
    if (i == 0) return SMTPC_S_MAIL;
    return i <= c->txn->nrcpt ? SMTPC_S_RCPT : SMTPC_S_DATA;
}

/* smtpc_send_cmd - write command index i of transaction t */
static void smtpc_send_cmd(struct smtpc *c, const struct smtpc_txn *t, uint32_t i)
{
    if (i == 0) {
        char params[96] = "";
        size_t pl = 0;
        if (c->ext_size)
            pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " SIZE=%zu",
                                   t->prefix_len + t->content_len);
        if (t->body_8bit && c->ext_8bitmime && pl < sizeof(params))
            pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " BODY=8BITMIME");
        if (t->smtputf8 && c->ext_smtputf8 && pl < sizeof(params))
            snprintf(params + pl, sizeof(params) - pl, " SMTPUTF8");
        smtpc_cmd(c, "MAIL FROM:<%s>%s", t->sender, params);
    } else if (i <= t->nrcpt) {
        smtpc_cmd(c, "RCPT TO:<%s>", t->rcpts[i - 1]);
    } else {
        smtpc_cmd(c, "DATA");
    }
}

/* smtpc_txn_commands - send MAIL (with PIPELINING also every RCPT and DATA, in one
 * write) and wait for MAIL's reply */
static void smtpc_txn_commands(struct smtpc *c)
{
    const uint32_t last = c->txn->nrcpt + 1;
    c->send_i = c->recv_i = 0;
    c->nok = 0;
    c->mail_ok = false;
    c->txn->sent = true;
    do {
        smtpc_send_cmd(c, c->txn, c->send_i);
        c->send_i = smtpc_next_idx(c->txn, c->send_i + 1);
    } while (c->ext_pipelining && c->send_i <= last);
    smtpc_enter(c, SMTPC_S_MAIL);
}

/* smtpc_chain_write - after the current "." goes the chained transaction's MAIL,
 * RCPTs and DATA, in the same write (only queued with PIPELINING) */
static void smtpc_chain_write(struct smtpc *c)
{
    struct smtpc_txn *t = c->next;
    if (!t || c->next_sent) return;
    const uint32_t last = t->nrcpt + 1;
    uint32_t i = 0;
    t->sent = true;
    do {
        smtpc_send_cmd(c, t, i);
        i = smtpc_next_idx(t, i + 1);
    } while (i <= last);
    c->next_sent = true;
    c->next_send_i = i;
}

/* smtpc_text_add - queue source octets [from, to) of the text: copied when short,
 * by reference when long (the caller keeps t->content alive until done/closed) */
static void smtpc_text_add(struct evbuffer *out, const uint8_t *src, size_t from, size_t to)
{
    if (to <= from) return;
    if (to - from >= SMTPC_REF_MIN)
        evbuffer_add_reference(out, src + from, to - from, NULL, NULL);
    else
        evbuffer_add(out, src + from, to - from);
}

/* smtpc_text_chunk - queue up to SMTPC_TEXT_CHUNK source octets, dot-stuffed, with
 * bare LF sent as CRLF; c->text_bol carries "at the start of a line" across calls */
static void smtpc_text_chunk(struct smtpc *c, struct evbuffer *out)
{
    const uint8_t *src = c->txn->content;
    size_t len = c->txn->content_len;
    size_t off = c->text_off;
    size_t end = len - off > SMTPC_TEXT_CHUNK ? off + SMTPC_TEXT_CHUNK : len;
    size_t seg = off; /* start of the run not queued yet */

    while (off < end) {
        if (c->text_bol && src[off] == '.') {
            smtpc_text_add(out, src, seg, off);
            evbuffer_add(out, ".", 1); /* the line's own dot stays in the next run */
            seg = off;
        }
        const uint8_t *nl = memchr(src + off, '\n', end - off);
        if (!nl) {
            off = end;
            c->text_bol = false;
            break;
        }
        size_t lf = (size_t)(nl - src);
        if (lf == 0 || src[lf - 1] != '\r') {
            smtpc_text_add(out, src, seg, lf);
            evbuffer_add(out, "\r\n", 2);
            seg = lf + 1;
        }
        off = lf + 1;
        c->text_bol = true;
    }
    smtpc_text_add(out, src, seg, off);
    c->text_off = off;
}

/* smtpc_text_fill - top the output up to SMTPC_TEXT_HIWAT; after the last octet,
 * the line end if missing and "." */
static void smtpc_text_fill(struct smtpc *c)
{
    struct smtpc_txn *t = c->txn;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->text_wait) return; /* smtpc_content_ready() starts the text */
    if (!c->prefix_sent) {
        c->prefix_sent = true;
        if (t->prefix_len) evbuffer_add(out, t->prefix, t->prefix_len);
    }

    while (c->text_off < t->content_len && evbuffer_get_length(out) < SMTPC_TEXT_HIWAT)
        smtpc_text_chunk(c, out);
    if (c->text_off < t->content_len) return;
    if (t->content_len > 0 && t->content[t->content_len - 1] != '\n') evbuffer_add(out, "\r\n", 2);
    evbuffer_add(out, ".\r\n", 3);
    smtpc_enter(c, SMTPC_S_DOT);
    smtpc_chain_write(c);
}

/* smtpc_txn_reply - a reply to MAIL, RCPT or DATA (the one recv_i points at) */
static void smtpc_txn_reply(struct smtpc *c, const struct smtpc_reply *r)
{
    struct smtpc_txn *t = c->txn;
    const uint32_t last = t->nrcpt + 1;
    uint32_t i = c->recv_i;

    if (i == last) { /* DATA */
        if (r->code == 354) {
            if (c->mail_ok && c->nok > 0) {
                c->text_off = 0;
                c->text_bol = true;
                c->text_wait = t->content_pending;
                c->prefix_sent = false;
                smtpc_enter(c, SMTPC_S_TEXT); /* the data block timer waits for it too */
                smtpc_text_fill(c);
            } else {
                /* RFC 2920 3.1: nothing to deliver but the server wants text;
                 * send an empty message and let the refusals stand */
                evbuffer_add(bufferevent_get_output(c->bev), ".\r\n", 3);
                smtpc_enter(c, SMTPC_S_DOT);
                smtpc_chain_write(c);
            }
            return;
        }
        if (r->code < 400) { /* neither 354 nor a refusal: we cannot tell */
            smtpc_fail(c, SMTPC_FAIL_PROTOCOL);
            return;
        }
        t->data_reply = *r;
        c->need_rset = true;
        smtpc_txn_finish(c);
        return;
    }
    if (i == 0) {
        t->mail_reply = *r;
        c->mail_ok = smtpc_is_2xx(r);
    } else {
        t->rcpt_reply[i - 1] = *r;
        if (smtpc_is_2xx(r)) c->nok++;
    }
    c->recv_i = smtpc_next_idx(c->txn, i + 1);
    if (c->recv_i < c->send_i) { /* pipelined replies still to come */
        smtpc_enter(c, smtpc_state_for(c, c->recv_i));
        return;
    }
    /* lock-step: decide what to send next */
    if (!c->mail_ok || (c->send_i == last && c->nok == 0)) {
        c->need_rset = true; /* the server may still hold our MAIL */
        smtpc_txn_finish(c);
        return;
    }
    smtpc_send_cmd(c, c->txn, c->send_i);
    c->send_i = smtpc_next_idx(c->txn, c->send_i + 1);
    smtpc_enter(c, smtpc_state_for(c, c->recv_i));
}

/* smtpc_local_fail - refuse the whole transaction without sending it */
static void smtpc_local_fail(struct smtpc *c, struct smtpc_txn *t, int code, const char *enh,
                             const char *text)
{
    smtpc_set_reply(&t->mail_reply, code, enh, text);
    smtpc_push_done(c, t);
}

/* smtpc_can_chain - may a transaction be queued behind the one in progress? */
static bool smtpc_can_chain(const struct smtpc *c)
{
    return c->txn && !c->next && c->ext_pipelining &&
           (c->state == SMTPC_S_RSET || c->state == SMTPC_S_MAIL || c->state == SMTPC_S_RCPT ||
            c->state == SMTPC_S_DATA || c->state == SMTPC_S_TEXT || c->state == SMTPC_S_DOT);
}

static int smtpc_send_queue(struct smtpc *c, struct smtpc_txn *t)
{
    bool chain = false;
    if (c->quit_pending || (c->pending & SMTPC_P_CLOSED) || c->ndone + 2 >= SMTPC_DONE_MAX)
        return -1;
    if (c->state == SMTPC_S_IDLE && !c->txn)
        chain = false;
    else if (smtpc_can_chain(c))
        chain = true;
    else
        return -1;
    if (!t || !t->sender || t->nrcpt == 0 || !t->rcpts || !t->rcpt_reply ||
        (t->content_len > 0 && !t->content && !t->content_pending))
        return -1;

    memset(&t->mail_reply, 0, sizeof(t->mail_reply));
    memset(&t->data_reply, 0, sizeof(t->data_reply));
    memset(t->rcpt_reply, 0, sizeof(*t->rcpt_reply) * t->nrcpt);
    t->fail = SMTPC_FAIL_NONE;
    t->sent = false;

    if (smtpc_has_break(t->sender)) {
        smtpc_local_fail(c, t, 553, "5.1.7", "sender address contains a line break (local)");
        return 0;
    }
    if (t->refuse_code) {
        smtpc_local_fail(c, t, t->refuse_code, t->refuse_enh, t->refuse_text);
        return 0;
    }
    if (t->smtputf8 && !c->ext_smtputf8) {
        smtpc_local_fail(c, t, 553, "5.6.7",
                         "SMTPUTF8 required but not offered by the server (local)");
        return 0;
    }
    if (c->ext_size && (uint64_t)(t->prefix_len + t->content_len) > c->ext_size) {
        char text[128];
        snprintf(text, sizeof(text), "message size %zu exceeds the server's limit %llu (local)",
                 t->prefix_len + t->content_len, (unsigned long long)c->ext_size);
        smtpc_local_fail(c, t, 552, "5.3.4", text);
        return 0;
    }
    uint32_t nbad = 0;
    for (uint32_t i = 0; i < t->nrcpt; i++) {
        if (!t->rcpts[i] || smtpc_has_break(t->rcpts[i])) {
            smtpc_set_reply(&t->rcpt_reply[i], 553, "5.1.3",
                            "recipient address missing or contains a line break (local)");
            nbad++;
        }
    }
    if (nbad == t->nrcpt) { /* nothing left to send */
        smtpc_push_done(c, t);
        return 0;
    }

    if (chain) {
        c->next = t;
        c->next_sent = false;
        if (c->state == SMTPC_S_DOT) smtpc_chain_write(c); /* the "." is out already */
        return 0;
    }
    c->txn = t;
    if (c->need_rset) {
        smtpc_cmd(c, "RSET");
        smtpc_enter(c, SMTPC_S_RSET);
    } else {
        smtpc_txn_commands(c);
    }
    return 0;
}

static void smtpc_quit_queue(struct smtpc *c)
{
    if (c->state == SMTPC_S_DEAD || c->state == SMTPC_S_QUIT || c->quit_pending) return;
    if (c->state == SMTPC_S_IDLE) {
        c->pending &= ~SMTPC_P_READY;
        c->close_why = SMTPC_FAIL_NONE;
        smtpc_cmd(c, "QUIT");
        smtpc_enter(c, SMTPC_S_QUIT);
        return;
    }
    /* connecting, greeting or in a transaction: QUIT as soon as it is idle */
    c->quit_pending = true;
}

void smtpc_abort(struct smtpc *c)
{
    if (!c) return;
    if (c->in_cb) {
        /* inside one of our own callbacks: smtpc_defer_cb frees on its way out */
        c->aborted = true;
        evtimer_del(c->timer);
        smtpc_detach_bev(c);
        return;
    }
    smtpc_free(c);
}

/* ---- reading replies ---------------------------------------------------------------- */

/* smtpc_handle_reply - one complete reply r in the current state (the raw lines
 * are still in c->rbuf for EHLO) */
static void smtpc_handle_reply(struct smtpc *c, const struct smtpc_reply *r)
{
    /* after a refusal the refusing reply is the interesting one, not QUIT's 221 */
    if (!(c->state == SMTPC_S_QUIT && c->close_why != SMTPC_FAIL_NONE)) c->last = *r;

    switch (c->state) {
    case SMTPC_S_BANNER:
        if (!smtpc_is_2xx(r)) {
            smtpc_fail_quit(c, SMTPC_FAIL_REPLY);
            break;
        }
        str_copy(c->banner, sizeof(c->banner), r->text);
        smtpc_cmd(c, "EHLO %s", c->helo_name);
        smtpc_enter(c, SMTPC_S_EHLO);
        break;
    case SMTPC_S_EHLO:
        if (smtpc_is_2xx(r)) {
            smtpc_parse_ehlo(c);
            smtpc_after_ehlo(c);
        } else if (r->code >= 500) {
            /* a server that does not know EHLO: RFC 5321 3.2 */
            smtpc_reset_ext(c);
            smtpc_cmd(c, "HELO %s", c->helo_name);
            smtpc_enter(c, SMTPC_S_HELO);
        } else {
            smtpc_fail_quit(c, SMTPC_FAIL_REPLY);
        }
        break;
    case SMTPC_S_HELO:
        if (smtpc_is_2xx(r))
            smtpc_after_ehlo(c);
        else
            smtpc_fail_quit(c, SMTPC_FAIL_REPLY);
        break;
    case SMTPC_S_STARTTLS:
        if (smtpc_is_2xx(r)) {
            smtpc_tls_start(c);
        } else if (c->p.tls == SMTPC_TLS_REQUIRED) {
            smtpc_fail_quit(c, SMTPC_FAIL_REPLY);
        } else {
            /* refused: the session is unchanged (RFC 3207 4), go on in clear */
            c->tls_fallback = true;
            smtpc_become_idle(c, true);
        }
        break;
    case SMTPC_S_RSET:
        if (smtpc_is_2xx(r)) {
            c->need_rset = false;
            smtpc_txn_commands(c);
        } else {
            smtpc_fail_quit(c, SMTPC_FAIL_REPLY);
        }
        break;
    case SMTPC_S_MAIL:
    case SMTPC_S_RCPT:
    case SMTPC_S_DATA:
        smtpc_txn_reply(c, r);
        break;
    case SMTPC_S_TEXT:
        /* a reply before "." (usually a 4xx/5xx and a close): it decides the
         * message, but the rest of our text would now be read as commands */
        c->txn->data_reply = *r;
        smtpc_fail(c, SMTPC_FAIL_PROTOCOL);
        break;
    case SMTPC_S_DOT:
        c->txn->data_reply = *r;
        c->need_rset = false; /* the final reply ends the transaction either way */
        smtpc_txn_finish(c);
        break;
    case SMTPC_S_QUIT:
        smtpc_fail(c, c->close_why);
        break;
    case SMTPC_S_IDLE:
        /* unsolicited: typically 421 before an idle server closes */
        smtpc_fail(c, r->code == 421 ? SMTPC_FAIL_DROPPED : SMTPC_FAIL_PROTOCOL);
        break;
    default:
        smtpc_fail(c, SMTPC_FAIL_PROTOCOL);
        break;
    }
}

/* smtpc_reading - may replies be processed in the current state? */
static bool smtpc_reading(const struct smtpc *c)
{
    return c->bev && c->state != SMTPC_S_CONNECT && c->state != SMTPC_S_HANDSHAKE &&
           c->state != SMTPC_S_DEAD;
}

/*
 * smtpc_flush - write queued output now, on plain-text sessions.  Left to the
 * bufferevent, every command batch would arm EV_WRITE, wait a loop turn, write and
 * disarm it: two epoll_ctl calls and a wake-up per batch.  Here EV_WRITE stays off
 * unless the socket takes less than we have; message text is refilled and written
 * in the same loop.  TLS sessions keep the filter's own writing.
 */
static void smtpc_flush(struct smtpc *c)
{
    if (!c->bev || c->tls_active || c->state == SMTPC_S_DEAD || c->state == SMTPC_S_CONNECT ||
        c->state == SMTPC_S_HANDSHAKE)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    while (evbuffer_get_length(out) > 0) {
        long left = net_bev_write_now(c->bev);
        if (left < 0) {
            smtpc_fail(c, SMTPC_FAIL_DROPPED);
            return;
        }
        if (left > 0) {
            bufferevent_enable(c->bev, EV_WRITE); /* the socket is full: let libevent wait */
            return;
        }
        if (c->state != SMTPC_S_TEXT)
            break;
        smtpc_arm(c); /* progress restarts the data block timer */
        smtpc_text_fill(c);
    }
    bufferevent_disable(c->bev, EV_WRITE);
}

/*
 * smtpc_read_lines - take reply lines from the input (CRLF or LF ends; some servers
 * send bare LF, so EVBUFFER_EOL_CRLF_STRICT would be too strict) and handle each
 * complete reply.  A line over SMTPC_LINE_MAX octets or a reply over
 * SMTPC_REPLY_LINES lines is a protocol error.
 */
static void smtpc_read_lines(struct smtpc *c)
{
    char line[SMTPC_LINE_MAX + 1];

    while (smtpc_reading(c)) {
        struct evbuffer *in = bufferevent_get_input(c->bev);
        size_t eol_len = 0;
        struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
        if (p.pos < 0) {
            /* +1: a line of the maximum length may wait for the LF after its CR */
            if (evbuffer_get_length(in) > SMTPC_LINE_MAX + 1) smtpc_fail(c, SMTPC_FAIL_PROTOCOL);
            return;
        }
        size_t n = (size_t)p.pos;
        if (n > SMTPC_LINE_MAX) {
            smtpc_fail(c, SMTPC_FAIL_PROTOCOL);
            return;
        }
        evbuffer_remove(in, line, n);
        evbuffer_drain(in, eol_len);
        line[n] = '\n';
        if (++c->rlines > SMTPC_REPLY_LINES || vbuf_append(&c->rbuf, line, n + 1) < 0) {
            smtpc_fail(c, SMTPC_FAIL_PROTOCOL);
            return;
        }
        /* check each line at once: a banner like "SSH-2.0" must not make us
         * wait for the rest of a "multi-line reply" until the timeout */
        if (n < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
            line[2] < '0' || line[2] > '9' || (n > 3 && line[3] != ' ' && line[3] != '-')) {
            smtpc_fail(c, SMTPC_FAIL_PROTOCOL);
            return;
        }
        if (n >= 4 && line[3] == '-') continue; /* more lines to come */

        struct smtpc_reply r;
        int rc = smtpc_parse_reply((const char *)c->rbuf.data, c->rbuf.len, &r);
        if (rc < 0) {
            smtpc_fail(c, SMTPC_FAIL_PROTOCOL);
            return;
        }
        smtpc_handle_reply(c, &r);
        vbuf_reset(&c->rbuf);
        c->rlines = 0;
    }
}

/* smtpc_read_input - handle complete replies, then send what they made us queue */
static void smtpc_read_input(struct smtpc *c)
{
    smtpc_read_lines(c);
    smtpc_flush(c);
}


/* smtpc_bev_read_cb - input arrived */
static void smtpc_bev_read_cb(struct bufferevent *bev, void *arg)
{
    smtpc_read_input(arg);
}

/* smtpc_bev_write_cb - the output drained to SMTPC_TEXT_LOWAT: stream more text;
 * progress also restarts the data block timer */
static void smtpc_bev_write_cb(struct bufferevent *bev, void *arg)
{
    struct smtpc *c = arg;
    if (c->state == SMTPC_S_TEXT) {
        smtpc_arm(c);
        smtpc_text_fill(c);
    }
    smtpc_flush(c);
}

/* smtpc_bev_event_cb - connected, handshake done, EOF or error */
static void smtpc_bev_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct smtpc *c = arg;

    if (what & BEV_EVENT_CONNECTED) {
        if (c->state == SMTPC_S_CONNECT) {
            smtpc_enter(c, SMTPC_S_BANNER);
            smtpc_read_input(c);
        } else if (c->state == SMTPC_S_HANDSHAKE) {
            smtpc_tls_done(c);
            smtpc_read_input(c);
        }
        return;
    }
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) return;
    switch (c->state) {
    case SMTPC_S_CONNECT:
        smtpc_fail(c, SMTPC_FAIL_CONNECT);
        return;
    case SMTPC_S_HANDSHAKE:
        smtpc_tls_failed(c);
        return;
    default:
        break;
    }
    /* replies that came with the close (a 221, a 421) are still read */
    smtpc_read_input(c);
    if (c->state == SMTPC_S_DEAD) return;
    if (c->state == SMTPC_S_HANDSHAKE || c->state == SMTPC_S_STARTTLS)
        smtpc_tls_failed(c);
    else if (c->state == SMTPC_S_QUIT)
        smtpc_fail(c, c->close_why);
    else
        smtpc_fail(c, SMTPC_FAIL_DROPPED);
}

/* smtpc_timer_cb - the current state's timeout expired */
static void smtpc_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct smtpc *c = arg;
    switch (c->state) {
    case SMTPC_S_CONNECT:
        smtpc_fail(c, SMTPC_FAIL_CONNECT);
        break;
    case SMTPC_S_STARTTLS:
    case SMTPC_S_HANDSHAKE:
        /* middleboxes that eat STARTTLS look like this: opportunistic falls back */
        smtpc_tls_failed(c);
        break;
    case SMTPC_S_QUIT:
        smtpc_fail(c, c->close_why);
        break;
    default:
        smtpc_fail(c, SMTPC_FAIL_TIMEOUT);
        break;
    }
}

/* ---- creation and facts ------------------------------------------------------------ */

/* smtpc_fill_timeouts - replace zeros (and nonsense) by the defaults */
static void smtpc_fill_timeouts(struct smtpc_timeouts *t)
{
    const struct smtpc_timeouts *d = &smtpc_default_timeouts;
#define SMTPC_TMO(f)                                                                               \
    if (t->f <= 0) t->f = d->f
    SMTPC_TMO(connect);
    SMTPC_TMO(greeting);
    SMTPC_TMO(helo);
    SMTPC_TMO(starttls);
    SMTPC_TMO(mail);
    SMTPC_TMO(rcpt);
    SMTPC_TMO(data_init);
    SMTPC_TMO(data_block);
    SMTPC_TMO(data_done);
    SMTPC_TMO(rset);
    SMTPC_TMO(quit);
#undef SMTPC_TMO
}

/* smtpc_addr_text - the address part of sa as text ("" if not IP) */
static void smtpc_addr_text(const struct sockaddr_storage *sa, char *out, size_t outsz)
{
    out[0] = '\0';
    if (sa->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)outsz);
    else if (sa->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)outsz);
}

struct smtpc *smtpc_new(const struct smtpc_params *p, const struct smtpc_callbacks *cb, void *arg)
{
    if (!p || !cb || !p->base || p->destlen == 0 || p->destlen > sizeof(p->dest) ||
        p->sourcelen > sizeof(p->source) || (p->tls != SMTPC_TLS_OFF && !p->tls_ctx))
        return NULL;
    const char *helo = p->helo_name && p->helo_name[0] ? p->helo_name : "localhost";
    if (smtpc_has_break(helo)) return NULL;

    struct smtpc *c = xcalloc(1, sizeof(*c));
    c->base = p->base;
    c->p = *p;
    smtpc_fill_timeouts(&c->p.timeouts);
    c->helo_name = xstrdup(helo);
    c->server_name = xstrdup(p->server_name ? p->server_name : "");
    c->p.helo_name = c->helo_name;
    c->p.server_name = c->server_name;
    c->cb = *cb;
    c->arg = arg;
    c->timer = evtimer_new(c->base, smtpc_timer_cb, c);
    c->defer = event_new(c->base, -1, 0, smtpc_defer_cb, c);
    if (!c->timer || !c->defer) {
        smtpc_free(c);
        return NULL;
    }
    vbuf_init(&c->rbuf, (size_t)SMTPC_REPLY_LINES * (SMTPC_LINE_MAX + 1));
    smtpc_addr_text(&c->p.dest, c->peer_addr, sizeof(c->peer_addr));
    if (smtpc_connect(c) < 0) {
        smtpc_free(c);
        return NULL;
    }
    return c;
}

bool smtpc_has_pipelining(const struct smtpc *c)
{
    return c->ext_pipelining;
}

bool smtpc_has_8bitmime(const struct smtpc *c)
{
    return c->ext_8bitmime;
}

bool smtpc_has_smtputf8(const struct smtpc *c)
{
    return c->ext_smtputf8;
}

uint64_t smtpc_max_size(const struct smtpc *c)
{
    return c->ext_size;
}

const char *smtpc_tls_version(const struct smtpc *c)
{
    return c->tls_version;
}

const char *smtpc_tls_cipher(const struct smtpc *c)
{
    return c->tls_cipher;
}

bool smtpc_tls_fallback(const struct smtpc *c)
{
    return c->tls_fallback;
}

const char *smtpc_peer_name(const struct smtpc *c)
{
    return c->server_name;
}

const char *smtpc_peer_addr(const struct smtpc *c)
{
    return c->peer_addr;
}

const char *smtpc_banner(const struct smtpc *c)
{
    return c->banner;
}

int smtpc_send(struct smtpc *c, struct smtpc_txn *t)
{
    int rc = smtpc_send_queue(c, t);
    smtpc_flush(c);
    return rc;
}

void smtpc_content_ready(struct smtpc *c, struct smtpc_txn *t)
{
    t->content_pending = false;
    if (c->txn != t || c->state != SMTPC_S_TEXT || !c->text_wait) return;
    c->text_wait = false;
    smtpc_text_fill(c);
    smtpc_flush(c);
}

void smtpc_quit(struct smtpc *c)
{
    smtpc_quit_queue(c);
    smtpc_flush(c);
}
