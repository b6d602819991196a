/*
 * smtpd - ESMTP injection server (see smtpd.h).
 *
 * One struct smtpd_session per connection, driven by a bufferevent.  Commands are
 * parsed one line at a time; PIPELINING needs nothing special on this side except
 * that processing stops while a message waits for its spool commit, and resumes
 * on the buffered commands once the 250 is out.  DATA is scanned in place over
 * the pulled-up input buffer (one memchr per line), un-dot-stuffed and appended to
 * the session's message buffer.
 *
 * Limits and the replies they produce (each is also logged):
 *   command line over SMTP_CMDLINE_MAX + slack     500 5.5.2 (rest of line dropped)
 *   bare CR or LF in a command                      500 5.5.2
 *   text line over 998 octets, bare CR/LF in DATA   550 5.6.0 at end of DATA
 *   message over max_message_size (SIZE or actual)  552 5.3.4
 *   recipients over max_recipients                  452 4.5.3
 *   spool full / failing                            452 4.3.1 / 451 4.3.0
 *   talking before the greeting (pregreet_ms > 0)   554 5.5.1 and close
 *   idle over timeout_command, DATA over timeout_data  421 4.4.2 and close
 *   more than max_connections                       421 4.7.0 and close
 *   more than max_errors protocol errors            421 4.7.0 and close
 * Memory per session is bounded by the read high-water mark (input), the output
 * check in smtpd_process (a client that pipelines without reading replies is
 * paused), and max_message_size; all sessions together by max_inflight_mb.
 *
 * Lifetimes: a session is never freed inside one of its own callbacks.  It is
 * marked dead and put on the reap list, which a zero-timeout event empties after
 * the current callback returns.  A message waiting for its commit is owned by its
 * job, not the session; the completion finds the session by registry id.
 */
#include "smtpd.h"
#include "engine.h"
#include "feedback.h"
#include "log.h"
#include "msg_header.h"
#include "msgid.h"
#include "net.h"
#include "smtp_syntax.h"
#include "shape.h"
#include "suppress.h"
#include "util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define SMTPD_CMDLINE_LIMIT 2048       /* SMTPUTF8 addresses make 512 too tight */
#define SMTPD_READ_HIWAT (256 * 1024)  /* input buffered per session */
#define SMTPD_WRITE_HIWAT (256 * 1024) /* replies queued before we stop reading */
#define SMTPD_CAMPAIGN_MAX 128
#define SMTPD_CONTENT_INITIAL (16 * 1024)
#define SMTPD_MAX_LISTENERS (2 * CONF_MAX_LISTEN + 1)

enum SMTPD_STATE {
    SMTPD_PREGREET, /* waiting pregreet_ms before the banner */
    SMTPD_CMD,      /* reading commands */
    SMTPD_DATA,     /* reading message text */
    SMTPD_COMMIT,   /* message handed to the spool, waiting for its commit */
    SMTPD_CLOSING,  /* last reply queued, closing once it is written */
};

static const char *smtpd_state_str(enum SMTPD_STATE s)
{
    static const char *const names[] = {"pregreet", "cmd", "data", "commit", "closing"};
    return (unsigned)s < ARRAY_LEN(names) ? names[s] : "unknown";
}

struct smtpd_session {
    struct engine *eng;
    uint64_t id;
    struct bufferevent *bev;
    struct event *timer; /* pregreet delay, then the DATA deadline */
    enum SMTPD_STATE state;
    bool dead;
    bool paused; /* this processing round stopped for the in-flight budget */
    bool parked; /* counted in smtpd.npaused, reading off until smtpd_resume */
    char client[64];
    char helo[256];
    bool intake; /* a feedback listener's session: bounce domains only, no queueing */
    bool greeted, esmtp;
    int errors;

    /* current transaction */
    bool in_mail;
    char sender[SMTP_PATH_MAX + 1];
    uint32_t flags;
    char **rcpts;
    uint32_t nrcpt, rcpt_cap;
    struct vbuf content;
    bool too_big, bare_eol, long_line, skip_to_lf;

    struct smtpd_session *prev, *next;
};

struct smtpd {
    struct evconnlistener *listeners[SMTPD_MAX_LISTENERS];
    int nlisteners;
    char *unix_path;
    struct smtpd_session *head;
    size_t nsessions;
    struct smtpd_session *reap;
    struct event *reap_ev;
    bool shutting_down;
    uint64_t runner; /* the one session allowed past max_inflight_mb (registry id) */
    size_t npaused;  /* sessions waiting for the in-flight budget */
};

/* A message on its way to the spool.  Owns every byte the writer reads. */
struct smtpd_job {
    struct engine_job job;
    struct spool_msg msg;
    char *sender, *campaign, *client, *helo, *pool, *list;
    char **rcpts;
    uint32_t nrcpt;
    struct vbuf content;
};

static void smtpd_process(struct smtpd_session *s);
static void smtpd_kill(struct smtpd_session *s);

/* smtpd_reply - queue one reply line (CRLF added) */
static void smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
}

/* smtpd_log_reject - log a refused command or message with the reply sent */
static void smtpd_log_reject(struct smtpd_session *s, const char *what, const char *reply)
{
    log_event(LOG_INFO, "inject_reject",
              json_pack("{s:I, s:s, s:s, s:s}", "session", (json_int_t)s->id, "client",
                        s->client, "stage", what, "reply", reply));
}

/* smtpd_error - send an error reply, log it, and count it against max_errors */
static void smtpd_error(struct smtpd_session *s, const char *what, const char *reply)
{
    smtpd_reply(s, "%s", reply);
    smtpd_log_reject(s, what, reply);
    if (++s->errors >= s->eng->conf->inject_max_errors) {
        smtpd_reply(s, "421 4.7.0 %s Error: too many errors, closing connection",
                    s->eng->hostname);
        smtpd_log_reject(s, "session", "421 4.7.0 too many errors");
        s->state = SMTPD_CLOSING;
    }
}

/* smtpd_inflight_sub - release n buffered message bytes from the global budget */
static void smtpd_inflight_sub(struct engine *eng, size_t n)
{
    if (!n)
        return;
    eng->stats.inflight_bytes -= n;
    engine_inflight_changed(eng);
}

/* smtpd_txn_reset - forget the current transaction (MAIL, RCPTs, text) */
static void smtpd_txn_reset(struct smtpd_session *s)
{
    for (uint32_t i = 0; i < s->nrcpt; i++)
        free(s->rcpts[i]);
    s->nrcpt = 0;
    s->in_mail = false;
    s->sender[0] = '\0';
    s->flags = 0;
    size_t held = s->content.len;
    vbuf_free(&s->content);
    vbuf_init(&s->content, (size_t)s->eng->conf->inject_max_message_size);
    s->too_big = s->bare_eol = s->long_line = s->skip_to_lf = false;
    smtpd_inflight_sub(s->eng, held);
}

/* smtpd_reap_cb - free every session marked dead during the last callbacks */
static void smtpd_reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct engine *eng = arg;
    struct smtpd *d = eng->smtpd;
    while (d->reap) {
        struct smtpd_session *s = d->reap;
        d->reap = s->next;
        smtpd_txn_reset(s);
        free(s->rcpts);
        if (s->timer)
            event_free(s->timer);
        bufferevent_free(s->bev);
        free(s);
    }
}

/* smtpd_kill - unlink s, stop its events and queue it for reaping */
static void smtpd_kill(struct smtpd_session *s)
{
    struct smtpd *d = s->eng->smtpd;
    if (s->dead)
        return;
    s->dead = true;
    if (s->parked) {
        d->npaused--;
        s->parked = false;
    }
    bufferevent_disable(s->bev, EV_READ | EV_WRITE);
    if (s->timer)
        event_del(s->timer);
    engine_reg_del(s->eng, s->id);
    if (s->prev)
        s->prev->next = s->next;
    else
        d->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    d->nsessions--;
    s->eng->stats.sessions = d->nsessions;
    log_event(LOG_DEBUG, "inject_disconnect",
              json_pack("{s:I, s:s}", "session", (json_int_t)s->id, "client", s->client));
    s->next = d->reap;
    d->reap = s;
    event_active(d->reap_ev, 0, 0);
}

/*
 * smtpd_flush - write queued replies now.  The bufferevent's own writing is left
 * disabled: it would arm EV_WRITE for every reply and write on the next loop turn,
 * two epoll_ctl calls and a wake-up per reply.  Only when the socket does not take
 * everything is EV_WRITE enabled, and smtpd_write_cb turns it off again.
 */
static void smtpd_flush(struct smtpd_session *s)
{
    if (s->dead)
        return;
    long left = net_bev_write_now(s->bev);
    if (left < 0)
        smtpd_kill(s);
    else if (left > 0)
        bufferevent_enable(s->bev, EV_WRITE);
}

/* smtpd_close_after_flush - stop reading; close once queued replies are written */
static void smtpd_close_after_flush(struct smtpd_session *s)
{
    s->state = SMTPD_CLOSING;
    bufferevent_disable(s->bev, EV_READ);
    smtpd_flush(s);
    if (!s->dead && evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
        smtpd_kill(s);
}

/* smtpd_write_cb - the rest of a partial write went out: finish a close, or resume a
 * reader that stopped because too many replies were pending */
static void smtpd_write_cb(struct bufferevent *bev, void *arg)
{
    struct smtpd_session *s = arg;
    bufferevent_disable(bev, EV_WRITE);
    if (s->state == SMTPD_CLOSING)
        smtpd_kill(s);
    else if (s->state == SMTPD_CMD || s->state == SMTPD_DATA)
        smtpd_process(s);
}

/* smtpd_event_cb - EOF, error or timeout on the connection */
static void smtpd_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct smtpd_session *s = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        if (s->state == SMTPD_COMMIT) { /* we are the slow one: keep waiting */
            bufferevent_enable(bev, EV_READ);
            return;
        }
        smtpd_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->eng->hostname);
        smtpd_log_reject(s, smtpd_state_str(s->state), "421 4.4.2 timeout exceeded");
        smtpd_close_after_flush(s);
        return;
    }
    if (what & BEV_EVENT_ERROR)
        log_event(LOG_DEBUG, "inject_error",
                  json_pack("{s:I, s:s, s:s}", "session", (json_int_t)s->id, "client", s->client,
                            "error", strerror(EVUTIL_SOCKET_ERROR())));
    smtpd_kill(s);
}

/* smtpd_timer_cb - pregreet delay over (send banner), or DATA deadline passed */
static void smtpd_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct smtpd_session *s = arg;
    if (s->state == SMTPD_PREGREET) {
        s->state = SMTPD_CMD;
        smtpd_reply(s, "220 %s ESMTP Volley", s->eng->hostname);
        smtpd_flush(s);
        return;
    }
    if (s->state == SMTPD_DATA) {
        smtpd_reply(s, "421 4.4.2 %s Error: timeout exceeded for DATA", s->eng->hostname);
        smtpd_log_reject(s, "data", "421 4.4.2 DATA phase took longer than timeout_data");
        smtpd_close_after_flush(s);
    }
}

/* smtpd_add_rcpt - append an owned address to the transaction */
static void smtpd_add_rcpt(struct smtpd_session *s, char *addr)
{
    if (s->nrcpt == s->rcpt_cap) {
        s->rcpt_cap = s->rcpt_cap ? s->rcpt_cap * 2 : 4;
        s->rcpts = xrealloc(s->rcpts, s->rcpt_cap * sizeof *s->rcpts);
    }
    s->rcpts[s->nrcpt++] = addr;
}

/* smtpd_has_param - whether params (length n) hold keyword key (upper case) */
static int smtpd_has_param(const char *params, size_t n, const char *key)
{
    char k[32], v[64];
    int rc;
    while ((rc = smtp_param_next(&params, &n, k, sizeof k, v, sizeof v)) == 1)
        if (strcmp(k, key) == 0)
            return 1;
    return 0;
}

/* smtpd_cmd_mail - MAIL FROM:<path> [SIZE= BODY= SMTPUTF8] */
static void smtpd_cmd_mail(struct smtpd_session *s, const char *arg, size_t len)
{
    struct smtp_path path;
    const char *params;
    size_t plen;
    const struct conf *c = s->eng->conf;

    if (!s->greeted)
        return smtpd_error(s, "mail", "503 5.5.1 Error: send HELO/EHLO first");
    if (s->in_mail)
        return smtpd_error(s, "mail", "503 5.5.1 Error: nested MAIL command");
    enum SMTP_PATH_ERR e = smtp_parse_path_arg(arg, len, false, true, &path, &params, &plen);
    if (e != SMTP_PATH_OK)
        return smtpd_error(s, "mail", smtp_path_err_reply(e, false));
    if (plen && !s->esmtp)
        return smtpd_error(s, "mail", "555 5.5.4 MAIL parameters need EHLO");
    bool utf8 = smtpd_has_param(params, plen, "SMTPUTF8");
    if (path.utf8 && !utf8)
        return smtpd_error(s, "mail", smtp_path_err_reply(SMTP_PATH_NEED_SMTPUTF8, false));

    uint32_t flags = utf8 ? SPOOL_MSG_SMTPUTF8 : 0;
    char key[32], val[64];
    int rc;
    while ((rc = smtp_param_next(&params, &plen, key, sizeof key, val, sizeof val)) == 1) {
        if (strcmp(key, "SIZE") == 0) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(val, &end, 10);
            if (!*val || *end || errno)
                return smtpd_error(s, "mail", "501 5.5.4 Bad SIZE parameter value");
            if (n > (unsigned long long)c->inject_max_message_size) {
                char r[128];
                snprintf(r, sizeof r,
                         "552 5.3.4 Message size exceeds fixed maximum message size (%lld)",
                         (long long)c->inject_max_message_size);
                return smtpd_error(s, "mail", r);
            }
        } else if (strcmp(key, "BODY") == 0) {
            if (strcasecmp(val, "8BITMIME") == 0)
                flags |= SPOOL_MSG_8BIT;
            else if (strcasecmp(val, "7BIT") != 0)
                return smtpd_error(s, "mail", "501 5.5.4 BODY must be 7BIT or 8BITMIME");
        } else if (strcmp(key, "SMTPUTF8") == 0) {
            if (*val)
                return smtpd_error(s, "mail", "501 5.5.4 SMTPUTF8 takes no value");
        } else {
            return smtpd_error(s, "mail", "555 5.5.4 Unsupported MAIL parameter");
        }
    }
    if (rc < 0)
        return smtpd_error(s, "mail", "501 5.5.4 Syntax error in MAIL parameters");
    str_copy(s->sender, sizeof s->sender, path.is_null ? "" : path.addr);
    s->flags = flags;
    s->in_mail = true;
    smtpd_reply(s, "250 2.1.0 Ok");
}

/*
 * smtpd_suppressed - is addr suppressed for this session's sender (and list, when
 * known)?  why gets "reason, matched entry".  A spool read error counts as not
 * suppressed here: the scheduler's purge and the delivery-time lists still apply,
 * and refusing all mail over a read hiccup would be worse.
 */
static bool smtpd_suppressed(struct engine *eng, const char *sender, const char *addr,
                             const char *list, char *why, size_t whyn)
{
    char norm[SUPPRESS_ADDR_MAX], matched[SUPPRESS_KEY_MAX + 8];
    struct suppress_rec rec;
    if (suppress_normalize(addr, norm, sizeof norm) < 0) return false;
    const char *at = strrchr(sender, '@');
    int rc = spool_supp_check(eng->spool, norm, at ? at + 1 : "", list, now_ms(), &rec,
                              matched, sizeof matched);
    if (rc != 1) return false;
    snprintf(why, whyn, "%s: %.150s", suppress_reason_str(rec.reason), matched);
    return true;
}

/* smtpd_cmd_rcpt - RCPT TO:<path> */
static void smtpd_cmd_rcpt(struct smtpd_session *s, const char *arg, size_t len)
{
    struct smtp_path path;
    const char *params;
    size_t plen;

    if (!s->in_mail)
        return smtpd_error(s, "rcpt", "503 5.5.1 Error: need MAIL command");
    bool utf8 = (s->flags & SPOOL_MSG_SMTPUTF8) != 0;
    enum SMTP_PATH_ERR e = smtp_parse_path_arg(arg, len, true, utf8, &path, &params, &plen);
    if (e != SMTP_PATH_OK)
        return smtpd_error(s, "rcpt", smtp_path_err_reply(e, true));
    if (plen)
        return smtpd_error(s, "rcpt", "555 5.5.4 Unsupported RCPT parameter");
    if (s->intake) {
        char r[300], a[2 * SMTP_PATH_MAX + 4];
        snprintf(a, sizeof a, "%.*s@%s", (int)path.local_len, path.addr, path.domain);
        if (!path.domain[0] || fb_intake_rcpt(s->eng, a, r, sizeof r) < 0) {
            if (!path.domain[0])
                snprintf(r, sizeof r, "550 5.7.1 Relay access denied: not a feedback domain");
            return smtpd_error(s, "rcpt", r);
        }
    }
    if (s->nrcpt >= (uint32_t)s->eng->conf->inject_max_recipients) {
        /* a 4xx, not a 5xx: RFC 5321 3.5.3 lets the client send the rest later */
        smtpd_reply(s, "452 4.5.3 Error: too many recipients");
        smtpd_log_reject(s, "rcpt", "452 4.5.3 too many recipients");
        return;
    }
    char addr[SMTP_PATH_MAX + sizeof s->eng->hostname + 16];
    if (!path.domain[0]) /* <postmaster> */
        snprintf(addr, sizeof addr, "postmaster@%s", s->eng->hostname);
    else
        snprintf(addr, sizeof addr, "%.*s@%s", (int)path.local_len, path.addr, path.domain);
    if (!s->intake && strcmp(s->eng->conf->suppress_at_injection, "refuse") == 0) {
        char why[200];
        if (smtpd_suppressed(s->eng, s->sender, addr, "", why, sizeof why)) {
            char r[300];
            snprintf(r, sizeof r, "550 5.7.1 Recipient address suppressed (%s)", why);
            return smtpd_error(s, "rcpt", r);
        }
    }
    smtpd_add_rcpt(s, xstrdup(addr));
    smtpd_reply(s, "250 2.1.5 Ok");
}

/* smtpd_cmd_ehlo - HELO/EHLO: greet and reset any transaction */
static void smtpd_cmd_helo(struct smtpd_session *s, const char *arg, size_t len, bool esmtp)
{
    while (len && arg[len - 1] == ' ')
        len--;
    if (!len)
        return smtpd_error(s, esmtp ? "ehlo" : "helo",
                           esmtp ? "501 5.5.4 Syntax: EHLO hostname"
                                 : "501 5.5.4 Syntax: HELO hostname");
    smtpd_txn_reset(s);
    snprintf(s->helo, sizeof s->helo, "%.*s", (int)(len < 255 ? len : 255), arg);
    s->greeted = true;
    s->esmtp = esmtp;
    if (!esmtp) {
        smtpd_reply(s, "250 %s", s->eng->hostname);
        return;
    }
    smtpd_reply(s,
                "250-%s\r\n250-PIPELINING\r\n250-SIZE %lld\r\n250-8BITMIME\r\n"
                "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8",
                s->eng->hostname, (long long)s->eng->conf->inject_max_message_size);
}

/* smtpd_cmd_data - DATA: start reading the message text */
static void smtpd_cmd_data(struct smtpd_session *s, size_t arglen)
{
    if (!s->in_mail)
        return smtpd_error(s, "data", "503 5.5.1 Error: need MAIL command");
    if (!s->nrcpt)
        return smtpd_error(s, "data", "503 5.5.1 Error: need RCPT command");
    if (arglen)
        return smtpd_error(s, "data", "501 5.5.4 Syntax: DATA takes no argument");
    smtpd_reply(s, "354 End data with <CR><LF>.<CR><LF>");
    s->state = SMTPD_DATA;
    /* most bulk mail fits: saves the realloc-and-copy steps of doubling from 256 */
    vbuf_reserve(&s->content, SMTPD_CONTENT_INITIAL);
    struct timeval tv = {s->eng->conf->inject_timeout_data, 0};
    evtimer_add(s->timer, &tv);
}

/* smtpd_command - dispatch one command line (CRLF stripped) */
static void smtpd_command(struct smtpd_session *s, const char *line, size_t len)
{
    const char *arg;
    size_t arglen;
    enum SMTP_CMD cmd = smtp_command(line, len, &arg, &arglen);

    switch (cmd) {
    case SMTP_CMD_EHLO:
        return smtpd_cmd_helo(s, arg, arglen, true);
    case SMTP_CMD_HELO:
        return smtpd_cmd_helo(s, arg, arglen, false);
    case SMTP_CMD_MAIL:
        return smtpd_cmd_mail(s, arg, arglen);
    case SMTP_CMD_RCPT:
        return smtpd_cmd_rcpt(s, arg, arglen);
    case SMTP_CMD_DATA:
        return smtpd_cmd_data(s, arglen);
    case SMTP_CMD_RSET:
        smtpd_txn_reset(s);
        return smtpd_reply(s, "250 2.0.0 Ok");
    case SMTP_CMD_NOOP:
        return smtpd_reply(s, "250 2.0.0 Ok");
    case SMTP_CMD_QUIT:
        smtpd_reply(s, "221 2.0.0 Bye");
        s->state = SMTPD_CLOSING;
        return;
    case SMTP_CMD_VRFY:
        return smtpd_reply(s, "252 2.5.2 Cannot VRFY user, but will accept message");
    case SMTP_CMD_HELP:
        return smtpd_reply(s, "214 2.0.0 See RFC 5321");
    case SMTP_CMD_STARTTLS:
    case SMTP_CMD_BDAT:
        return smtpd_error(s, smtp_cmd_str(cmd), "502 5.5.1 Error: command not implemented");
    case SMTP_CMD_UNKNOWN:
        break;
    }
    smtpd_error(s, "command", "500 5.5.2 Error: command not recognized");
}

/* smtpd_campaign_valid - campaign ids are short tokens safe in logs and filters */
static int smtpd_campaign_valid(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > SMTPD_CAMPAIGN_MAX)
        return 0;
    for (; *v; v++)
        if (!((*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') || (*v >= '0' && *v <= '9') ||
              strchr("._-:+@", *v)))
            return 0;
    return 1;
}

/*
 * smtpd_take_control - remove the control header name (X-Volley-*) from the first
 * *len octets of the message into out ("" when absent; *len shrinks); NULL, or the
 * refusal: bad_value when it is malformed or not a valid token, twice when it
 * appears more than once.
 */
static const char *smtpd_take_control(struct smtpd_session *s, size_t *len, const char *name,
                                      char *out, size_t outsz, const char *bad_value,
                                      const char *twice)
{
    char dup[8];
    int rc = msg_header_take((char *)s->content.data, len, name, out, outsz);
    if (rc < 0 || (rc == 1 && !smtpd_campaign_valid(out))) return bad_value;
    size_t rest = *len;
    if (rc == 1 && msg_header_take((char *)s->content.data, &rest, name, dup, sizeof dup) != 0)
        return twice;
    return NULL;
}

/* smtpd_job_free - release a job and the message it carries */
static void smtpd_job_free(struct smtpd_job *j)
{
    for (uint32_t i = 0; i < j->nrcpt; i++)
        free(j->rcpts[i]);
    free(j->rcpts);
    free(j->sender);
    free(j->campaign);
    free(j->client);
    free(j->helo);
    free(j->pool);
    free(j->list);
    vbuf_free(&j->content);
    free(j);
}

/*
 * smtpd_commit_done - the spool answered for a message: tell the client (if it is
 * still there), log, and resume its pipelined commands.  Owns and frees job.
 */
static void smtpd_commit_done(void *ctx, struct engine_job *ej)
{
    struct engine *eng = ctx;
    struct smtpd_job *j = (struct smtpd_job *)ej;
    struct smtpd_session *s = engine_reg_get(eng, ej->owner);
    char idtxt[MSGID_STR_LEN + 1];
    msgid_format(j->msg.id, idtxt);
    size_t bytes = j->content.len;

    if (ej->op.result == SPOOL_OK) {
        engine_poke_workers(eng);
        eng->stats.accepted_msgs++;
        eng->stats.accepted_rcpts += j->nrcpt;
        if (log_enabled(LOG_DEBUG))
            log_event(LOG_DEBUG, "queued",
                      json_pack("{s:s, s:s, s:s, s:i, s:I, s:s}", "msgid", idtxt, "sender",
                                j->sender, "campaign", j->campaign, "recipients", (int)j->nrcpt,
                                "size", (json_int_t)bytes, "client", j->client));
    } else {
        eng->stats.rejected++;
        log_event(ej->op.result == SPOOL_EFULL ? LOG_WARNING : LOG_ERROR, "spool_refused",
                  json_pack("{s:s, s:s, s:I}", "msgid", idtxt, "reason",
                            ej->op.result == SPOOL_EFULL ? "spool full" : "spool write failed",
                            "size", (json_int_t)bytes));
    }
    if (s && s->state == SMTPD_COMMIT) {
        if (ej->op.result == SPOOL_OK)
            smtpd_reply(s, "250 2.0.0 Ok: queued as %s", idtxt);
        else if (ej->op.result == SPOOL_EFULL)
            smtpd_reply(s, "452 4.3.1 Insufficient system storage, try again later");
        else
            smtpd_reply(s, "451 4.3.0 Temporary spool failure, try again later");
        s->state = eng->stopping ? SMTPD_CLOSING : SMTPD_CMD;
        if (eng->stopping)
            smtpd_reply(s, "421 4.3.2 %s Service shutting down", eng->hostname);
        smtpd_process(s);
    }
    smtpd_job_free(j);
    smtpd_inflight_sub(eng, bytes);
}

/* smtpd_intake_done - feedback processed (and committed): answer the sender */
static void smtpd_intake_done(struct engine *eng, uint64_t owner, const struct fb_result *res)
{
    struct smtpd_session *s = engine_reg_get(eng, owner);
    if (!s || s->state != SMTPD_COMMIT) return;
    if (res->result == SPOOL_OK)
        smtpd_reply(s, "250 2.0.0 Ok: feedback processed");
    else
        smtpd_reply(s, "451 4.3.0 Temporary failure recording feedback, try again later");
    s->state = eng->stopping ? SMTPD_CLOSING : SMTPD_CMD;
    if (eng->stopping) smtpd_reply(s, "421 4.3.2 %s Service shutting down", eng->hostname);
    smtpd_process(s);
}

/*
 * smtpd_intake_end - a feedback message is complete: hand it to the feedback
 * processor; the reply waits for the suppression changes it causes to commit, so
 * a 250 means they are on disk (the sender may delete its copy)
 */
static void smtpd_intake_end(struct smtpd_session *s)
{
    struct engine *eng = s->eng;
    s->state = SMTPD_COMMIT;
    fb_intake(eng, s->id, s->rcpts, s->nrcpt, s->content.data, s->content.len,
              smtpd_intake_done);
    smtpd_txn_reset(s);
}

/*
 * smtpd_add_headers - give a message without Message-ID or Date the ones RFC 5322
 * asks for, at the top of its header section, before it is stored: they then stay
 * the same on every try, and a DKIM signature made at delivery covers them
 */
static void smtpd_add_headers(struct engine *eng, struct smtpd_job *j)
{
    const struct conf *c = eng->conf;
    if (!c->inject_add_message_id && !c->inject_add_date) return;
    const char *msg = (const char *)j->content.data;
    size_t hl = msg_header_section_len(msg, j->content.len);
    char add[400];
    int n = 0;
    if (c->inject_add_message_id && msg_header_count(msg, hl, "Message-ID") == 0) {
        char idtxt[MSGID_STR_LEN + 1];
        msgid_format(j->msg.id, idtxt);
        n += snprintf(add + n, sizeof add - (size_t)n, "Message-ID: <%s.volley@%.200s>\r\n",
                      idtxt, eng->hostname);
    }
    char date[40];
    if (c->inject_add_date && msg_header_count(msg, hl, "Date") == 0 &&
        time_rfc5322(j->msg.created_ms, date, sizeof date) == 0)
        n += snprintf(add + n, sizeof add - (size_t)n, "Date: %s\r\n", date);
    if (n <= 0 || (size_t)n >= sizeof add) return;
    /* past max_message_size by these few bytes at most: the limit is on what the
     * client sent */
    size_t old = j->content.len;
    j->content.limit += (size_t)n;
    if (vbuf_reserve(&j->content, (size_t)n) < 0) return;
    memmove(j->content.data + n, j->content.data, old);
    memcpy(j->content.data, add, (size_t)n);
    j->content.len = old + (size_t)n;
    eng->stats.inflight_bytes += (size_t)n;
}

/*
 * smtpd_drop_suppressed - remove j's suppressed recipients, each with a
 * "suppressed" accounting record (stage "injection")
 */
static void smtpd_drop_suppressed(struct smtpd_session *s, struct smtpd_job *j)
{
    char idtxt[MSGID_STR_LEN + 1], why[200];
    msgid_format(j->msg.id, idtxt);
    uint32_t kept = 0;
    for (uint32_t i = 0; i < j->nrcpt; i++) {
        if (!smtpd_suppressed(s->eng, j->sender, j->rcpts[i], j->list, why, sizeof why)) {
            j->rcpts[kept++] = j->rcpts[i];
            continue;
        }
        log_acct("suppressed", suppress_acct_record(idtxt, j->campaign, j->list, j->sender,
                                                    j->rcpts[i], "injection", why));
        free(j->rcpts[i]);
    }
    j->nrcpt = kept;
}

/*
 * smtpd_data_end - the final "." arrived: refuse the message with the first fault
 * found, or take off the control headers and hand it to the spool.
 */
static void smtpd_data_end(struct smtpd_session *s)
{
    struct engine *eng = s->eng;
    char campaign[SMTPD_CAMPAIGN_MAX + 2] = "";
    char pool[SHAPE_NAME_MAX + 2] = "";
    char list[SMTPD_CAMPAIGN_MAX + 2] = "";
    char fault_buf[160];
    const char *fault = NULL;

    evtimer_del(s->timer);
    if (s->intake && !s->too_big && !s->long_line && !s->bare_eol)
        return smtpd_intake_end(s);
    if (s->too_big)
        fault = "552 5.3.4 Message size exceeds fixed maximum message size";
    else if (s->long_line)
        fault = "550 5.6.0 Message has a line longer than 998 octets (RFC 5322 2.1.1)";
    else if (s->bare_eol)
        fault = "550 5.6.0 Message contains a bare CR or LF; lines must end with CRLF";
    if (!fault) {
        size_t len = s->content.len;
        fault = smtpd_take_control(s, &len, "X-Volley-Campaign", campaign, sizeof campaign,
                                   "550 5.6.0 Invalid X-Volley-Campaign: use 1-128 of A-Z a-z "
                                   "0-9 . _ - : + @",
                                   "550 5.6.0 More than one X-Volley-Campaign header");
        /* the shaping pool asked for: one header, a pool the rules know */
        if (!fault)
            fault = smtpd_take_control(s, &len, "X-Volley-Pool", pool, sizeof pool,
                                       "550 5.6.0 Invalid X-Volley-Pool: use a pool name from "
                                       "the shaping rules",
                                       "550 5.6.0 More than one X-Volley-Pool header");
        if (!fault)
            fault = smtpd_take_control(s, &len, "X-Volley-List", list, sizeof list,
                                       "550 5.6.0 Invalid X-Volley-List: use 1-128 of A-Z a-z "
                                       "0-9 . _ - : + @",
                                       "550 5.6.0 More than one X-Volley-List header");
        if (!fault && *pool && !shape_pool_find(eng->rules->rules, pool)) {
            snprintf(fault_buf, sizeof fault_buf, "550 5.6.0 Unknown X-Volley-Pool: %s", pool);
            fault = fault_buf;
        }
        if (!fault) {
            smtpd_inflight_sub(eng, s->content.len - len);
            s->content.len = len;
        }
        if (!fault && eng->conf->inject_require_from) {
            size_t hl = msg_header_section_len((const char *)s->content.data, s->content.len);
            int nfrom = msg_header_count((const char *)s->content.data, hl, "From");
            if (nfrom == 0) {
                fault = "550 5.6.0 Message has no From header (RFC 5322 3.6 requires one)";
            } else if (nfrom > 1) {
                snprintf(fault_buf, sizeof fault_buf,
                         "550 5.6.0 Message has %d From headers; exactly one is required", nfrom);
                fault = fault_buf;
            }
        }
    }
    if (fault) {
        eng->stats.rejected++;
        smtpd_reply(s, "%s", fault);
        smtpd_log_reject(s, "data", fault);
        smtpd_txn_reset(s);
        s->state = SMTPD_CMD;
        return;
    }

    struct smtpd_job *j = xcalloc(1, sizeof *j);
    j->msg.flags = s->flags; /* before smtpd_txn_reset clears it */
    j->sender = xstrdup(s->sender);
    j->campaign = xstrdup(campaign);
    j->client = xstrdup(s->client);
    j->helo = xstrdup(s->helo);
    j->pool = xstrdup(pool);
    j->list = xstrdup(list);
    j->rcpts = s->rcpts;
    j->nrcpt = s->nrcpt;
    j->content = s->content; /* ownership moves; inflight bytes move with it */
    s->rcpts = NULL;
    s->nrcpt = s->rcpt_cap = 0;
    vbuf_init(&s->content, (size_t)eng->conf->inject_max_message_size);
    smtpd_txn_reset(s);

    j->msg.id = msgid_next();
    j->msg.created_ms = now_ms();
    smtpd_add_headers(eng, j);
    /* recipients unsubscribed from this list, and (in drop mode) every suppressed
     * one, are taken out here: after DATA there is no per-recipient refusal */
    if (*list || strcmp(eng->conf->suppress_at_injection, "drop") == 0)
        smtpd_drop_suppressed(s, j);
    if (j->nrcpt == 0) {
        smtpd_reply(s, "250 2.0.0 Ok: every recipient is suppressed, nothing queued");
        smtpd_inflight_sub(eng, j->content.len);
        smtpd_job_free(j);
        return;
    }
    j->msg.sender = j->sender;
    j->msg.campaign = j->campaign;
    j->msg.client = j->client;
    j->msg.helo = j->helo;
    j->msg.pool = j->pool;
    j->msg.list = j->list;
    j->msg.rcpts = (const char *const *)j->rcpts;
    j->msg.nrcpt = j->nrcpt;
    j->msg.content = j->content.data;
    j->msg.content_len = j->content.len;
    j->job.op.type = SPOOL_OP_INSERT;
    j->job.op.msg = &j->msg;
    j->job.owner = s->id;
    j->job.complete = smtpd_commit_done;
    s->state = SMTPD_COMMIT;
    if (engine_submit(eng, &j->job) < 0) {
        /* the spool is closing (shutdown): nothing was written */
        smtpd_reply(s, "421 4.3.2 %s Service shutting down", eng->hostname);
        s->state = SMTPD_CLOSING;
        smtpd_inflight_sub(eng, j->content.len);
        smtpd_job_free(j);
    }
}

/*
 * smtpd_must_wait - whether s has to pause reading message text until buffered
 * bytes drain.  One session at a time may run past the budget: otherwise a message
 * larger than the budget, or sessions that all paused part-way, would wait for
 * memory that only their own completion frees.  So memory stays under
 * max_inflight_mb + max_message_size.
 */
static bool smtpd_must_wait(struct smtpd_session *s)
{
    struct engine *eng = s->eng;
    struct smtpd *d = eng->smtpd;
    if (eng->stats.inflight_bytes <= (uint64_t)eng->conf->inject_max_inflight_mb << 20)
        return false;
    struct smtpd_session *r = d->runner ? engine_reg_get(eng, d->runner) : NULL;
    if (r == s)
        return false;
    if (!r || r->state != SMTPD_DATA) {
        d->runner = s->id;
        return false;
    }
    return true;
}

/*
 * smtpd_data_lines - consume message text from the contiguous bytes p[0..n);
 * returns how many bytes were used.  Stops at the end-of-data line, at a partial
 * line, or when the in-flight budget is exhausted (sets s->paused).
 */
static size_t smtpd_data_lines(struct smtpd_session *s, const char *p, size_t n)
{
    struct engine *eng = s->eng;
    size_t used = 0;

    while (used < n && s->state == SMTPD_DATA) {
        const char *line = p + used;
        const char *lf = memchr(line, '\n', n - used);
        if (!lf) {
            if (n - used > SMTP_TEXTLINE_MAX + 1) { /* over-long (a stuffed dot may add 1) */
                s->long_line = true;
                s->skip_to_lf = true;
                used = n;
            }
            break;
        }
        size_t linelen = (size_t)(lf - line); /* without LF */
        used += linelen + 1;
        if (s->skip_to_lf) {
            s->skip_to_lf = false;
            continue;
        }
        size_t textlen = linelen;
        bool crlf = textlen && line[textlen - 1] == '\r';
        if (crlf)
            textlen--;
        else
            s->bare_eol = true;
        /* Only <CRLF>.<CRLF> ends the text: a "." line ended by a bare LF does not,
         * so nothing after it can be smuggled in as a second message. */
        if (crlf && textlen == 1 && line[0] == '.') {
            smtpd_data_end(s);
            break;
        }
        if (memchr(line, '\r', textlen))
            s->bare_eol = true;
        const char *text = line;
        if (textlen && text[0] == '.') { /* RFC 5321 4.5.2 transparency */
            text++;
            textlen--;
        }
        /* the limit does not count the transparency dot (RFC 5321 4.5.3.1.6) */
        if (textlen > SMTP_TEXTLINE_MAX - 2)
            s->long_line = true;
        if (s->too_big || s->bare_eol || s->long_line)
            continue; /* the message is refused at the end: store nothing more */
        size_t before = s->content.len;
        if (vbuf_append(&s->content, text, textlen) < 0 ||
            vbuf_append(&s->content, "\r\n", 2) < 0) {
            s->too_big = true;
            s->content.len = before;
            continue;
        }
        eng->stats.inflight_bytes += s->content.len - before;
        if (smtpd_must_wait(s)) {
            s->paused = true;
            break;
        }
    }
    return used;
}

/* smtpd_cmd_line - take and run one command line from in; 1 when no complete line
 * is there yet (wait for input), else 0 */
static int smtpd_cmd_line(struct smtpd_session *s, struct evbuffer *in)
{
    size_t eol_len = 0;
    struct evbuffer_ptr e = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
    size_t avail = evbuffer_get_length(in);
    if (e.pos < 0) {
        if (avail > SMTPD_CMDLINE_LIMIT || s->skip_to_lf) {
            /* one reply per over-long line, however many reads it spans: more would
             * shift every later reply of a pipelining client */
            evbuffer_drain(in, avail);
            if (!s->skip_to_lf)
                smtpd_error(s, "command", "500 5.5.2 Error: line too long");
            s->skip_to_lf = true;
        }
        return 1;
    }
    size_t total = (size_t)e.pos + 1;
    if (s->skip_to_lf || total > SMTPD_CMDLINE_LIMIT) {
        evbuffer_drain(in, total);
        if (!s->skip_to_lf)
            smtpd_error(s, "command", "500 5.5.2 Error: line too long");
        s->skip_to_lf = false;
        return 0;
    }
    char line[SMTPD_CMDLINE_LIMIT + 1];
    evbuffer_remove(in, line, total);
    size_t len = total - 1;
    if (!len || line[len - 1] != '\r') {
        smtpd_error(s, "command", "500 5.5.2 Error: bare LF received; use CRLF");
        return 0;
    }
    len--;
    if (memchr(line, '\r', len) || memchr(line, '\0', len))
        smtpd_error(s, "command", "500 5.5.2 Error: bare CR or NUL in command");
    else
        smtpd_command(s, line, len);
    return 0;
}

/*
 * smtpd_process - run whatever the input holds, until it is empty, a line is
 * incomplete, a commit is pending, or backpressure (output or memory) says wait.
 */
static void smtpd_process(struct smtpd_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    struct evbuffer *out = bufferevent_get_output(s->bev);

    if (s->parked) {
        s->eng->smtpd->npaused--;
        s->parked = false;
    }
    s->paused = false;
    while (!s->dead && evbuffer_get_length(in) > 0) {
        if (evbuffer_get_length(out) > SMTPD_WRITE_HIWAT)
            break; /* the write callback resumes us */
        if (s->state == SMTPD_CMD) {
            if (smtpd_cmd_line(s, in))
                break;
        } else if (s->state == SMTPD_DATA) {
            if (smtpd_must_wait(s)) {
                s->paused = true;
                break;
            }
            size_t n = evbuffer_get_length(in);
            const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
            size_t used = smtpd_data_lines(s, p, n);
            evbuffer_drain(in, used);
            if (s->paused)
                break;
            if (used == 0)
                break;
        } else {
            break;
        }
    }
    if (s->dead)
        return;
    if (s->state == SMTPD_CLOSING) {
        smtpd_close_after_flush(s);
        return;
    }
    if (s->paused) {
        s->parked = true;
        s->eng->smtpd->npaused++;
        bufferevent_disable(s->bev, EV_READ);
    } else {
        bufferevent_enable(s->bev, EV_READ);
    }
    smtpd_flush(s);
}

/* smtpd_read_cb - new input */
static void smtpd_read_cb(struct bufferevent *bev, void *arg)
{
    struct smtpd_session *s = arg;
    if (s->state == SMTPD_PREGREET) {
        smtpd_reply(s, "554 5.5.1 Protocol error: client sent data before the greeting");
        smtpd_log_reject(s, "pregreet", "554 5.5.1 client talked before the greeting");
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
        smtpd_close_after_flush(s);
        return;
    }
    smtpd_process(s);
}

/*
 * smtpd_resume - buffered bytes were released: let every paused session try again
 * (smtpd_must_wait re-pauses those that still have to wait, and picks a new runner
 * when the last one is done).  Costs nothing while no session is paused.
 */
void smtpd_resume(struct engine *eng)
{
    struct smtpd *d = eng->smtpd;
    if (!d || d->npaused == 0)
        return;
    for (struct smtpd_session *s = d->head, *next; s; s = next) {
        next = s->next;
        if (s->parked && !s->dead)
            smtpd_process(s);
    }
}

/* smtpd_refuse_fd - over the connection limit or shutting down: one line, close */
static void smtpd_refuse_fd(struct engine *eng, evutil_socket_t fd, const char *why)
{
    char line[320];
    int n = snprintf(line, sizeof line, "421 4.7.0 %s %s\r\n", eng->hostname, why);
    /* best effort: a full socket buffer on a fresh connection is not our problem */
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    evutil_closesocket(fd);
}

/* smtpd_accept - a new injection or feedback (intake) connection */
static void smtpd_accept(struct engine *eng, evutil_socket_t fd, struct sockaddr *sa, bool intake)
{
    struct smtpd *d = eng->smtpd;
    const struct conf *c = eng->conf;

    if (d->shutting_down) {
        smtpd_refuse_fd(eng, fd, "Service shutting down");
        return;
    }
    if (d->nsessions >= (size_t)c->inject_max_connections) {
        log_msg(LOG_WARNING, "inject_limit", "max_connections (%lld) reached; refusing",
                (long long)c->inject_max_connections);
        smtpd_refuse_fd(eng, fd, "Too many connections, try again later");
        return;
    }
    struct smtpd_session *s = xcalloc(1, sizeof *s);
    s->eng = eng;
    s->intake = intake;
    s->bev = bufferevent_socket_new(eng->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!s->bev) {
        evutil_closesocket(fd);
        free(s);
        return;
    }
    s->timer = evtimer_new(eng->base, smtpd_timer_cb, s);
    vbuf_init(&s->content, (size_t)c->inject_max_message_size);
    if (sa->sa_family == AF_UNIX) {
        str_copy(s->client, sizeof s->client, "unix");
    } else {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char host[INET6_ADDRSTRLEN] = "?";
        if (sa->sa_family == AF_INET)
            evutil_inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
        else if (sa->sa_family == AF_INET6)
            evutil_inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, host,
                             sizeof host);
        str_copy(s->client, sizeof s->client, host);
    }
    s->id = engine_reg_add(eng, s);
    s->next = d->head;
    if (d->head)
        d->head->prev = s;
    d->head = s;
    d->nsessions++;
    eng->stats.sessions = d->nsessions;

    bufferevent_setcb(s->bev, smtpd_read_cb, smtpd_write_cb, smtpd_event_cb, s);
    bufferevent_setwatermark(s->bev, EV_READ, 0, SMTPD_READ_HIWAT);
    struct timeval tv = {c->inject_timeout_command, 0};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    bufferevent_disable(s->bev, EV_WRITE); /* on by default; see smtpd_flush */
    bufferevent_enable(s->bev, EV_READ);
    log_event(LOG_DEBUG, "inject_connect",
              json_pack("{s:I, s:s}", "session", (json_int_t)s->id, "client", s->client));
    if (c->inject_pregreet_ms > 0) {
        s->state = SMTPD_PREGREET;
        struct timeval pg = {c->inject_pregreet_ms / 1000, (c->inject_pregreet_ms % 1000) * 1000};
        evtimer_add(s->timer, &pg);
    } else {
        s->state = SMTPD_CMD;
        smtpd_reply(s, "220 %s ESMTP Volley", eng->hostname);
        smtpd_flush(s);
    }
}

static void smtpd_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                            int salen, void *arg)
{
    smtpd_accept(arg, fd, sa, false);
}

static void smtpd_accept_intake_cb(struct evconnlistener *l, evutil_socket_t fd,
                                   struct sockaddr *sa, int salen, void *arg)
{
    smtpd_accept(arg, fd, sa, true);
}

/* smtpd_listen_error - accept() failed (EMFILE and friends): log, keep going */
static void smtpd_listen_error(struct evconnlistener *l, void *arg)
{
    log_msg(LOG_ERROR, "inject_accept", "accept: %s", strerror(EVUTIL_SOCKET_ERROR()));
}

/* smtpd_listen_tcp - one TCP listener, for injection or feedback intake */
static int smtpd_listen_tcp(struct engine *eng, const char *spec, bool intake)
{
    struct smtpd *d = eng->smtpd;
    struct sockaddr_storage ss;
    int sslen = sizeof ss;
    const char *key = intake ? "feedback.listen" : "inject.tcp_listen";
    if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) < 0) {
        log_msg(LOG_ERROR, "listen", "%s: bad address \"%s\"", key, spec);
        return -1;
    }
    if (d->nlisteners >= SMTPD_MAX_LISTENERS) {
        log_msg(LOG_ERROR, "listen", "%s: too many listeners", key);
        return -1;
    }
    struct evconnlistener *l = evconnlistener_new_bind(
        eng->base, intake ? smtpd_accept_intake_cb : smtpd_accept_cb, eng,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 1024,
        (struct sockaddr *)&ss, sslen);
    if (!l) {
        log_msg(LOG_ERROR, "listen", "cannot listen on %s: %s", spec, strerror(errno));
        return -1;
    }
    evconnlistener_set_error_cb(l, smtpd_listen_error);
    d->listeners[d->nlisteners++] = l;
    log_msg(LOG_NOTICE, "listen", "%s on tcp:%s", intake ? "feedback" : "injection", spec);
    return 0;
}

int smtpd_listen(struct engine *eng)
{
    const struct conf *c = eng->conf;
    struct smtpd *d = xcalloc(1, sizeof *d);
    eng->smtpd = d;
    d->reap_ev = event_new(eng->base, -1, 0, smtpd_reap_cb, eng);

    if (*c->inject_unix_socket) {
        struct evconnlistener *l =
            net_unix_listener(eng->base, c->inject_unix_socket, (int)c->inject_unix_mode,
                                c->inject_unix_group, smtpd_accept_cb, eng);
        if (!l)
            return -1;
        d->listeners[d->nlisteners++] = l;
        d->unix_path = xstrdup(c->inject_unix_socket);
        log_msg(LOG_NOTICE, "listen", "injection on unix:%s", c->inject_unix_socket);
    }
    for (int i = 0; i < c->inject_tcp_listen_count; i++)
        if (smtpd_listen_tcp(eng, c->inject_tcp_listen[i], false) < 0) return -1;
    for (int i = 0; i < c->feedback_listen_count; i++)
        if (smtpd_listen_tcp(eng, c->feedback_listen[i], true) < 0) return -1;
    if (d->nlisteners == 0)
        log_msg(LOG_WARNING, "listen", "no injection listener configured");
    return 0;
}

/* smtpd_close_listeners - stop accepting and remove the socket file */
static void smtpd_close_listeners(struct smtpd *d)
{
    for (int i = 0; i < d->nlisteners; i++)
        evconnlistener_free(d->listeners[i]);
    d->nlisteners = 0;
    if (d->unix_path) {
        unlink(d->unix_path);
        free(d->unix_path);
        d->unix_path = NULL;
    }
}

void smtpd_shutdown(struct engine *eng)
{
    struct smtpd *d = eng->smtpd;
    if (!d)
        return;
    d->shutting_down = true;
    smtpd_close_listeners(d);
    for (struct smtpd_session *s = d->head, *next; s; s = next) {
        next = s->next;
        if (s->state == SMTPD_COMMIT || s->state == SMTPD_CLOSING)
            continue; /* smtpd_commit_done closes it after the answer */
        smtpd_reply(s, "421 4.3.2 %s Service shutting down", eng->hostname);
        smtpd_close_after_flush(s);
    }
}

size_t smtpd_sessions(struct engine *eng)
{
    return eng->smtpd ? eng->smtpd->nsessions : 0;
}

void smtpd_free(struct engine *eng)
{
    struct smtpd *d = eng->smtpd;
    if (!d)
        return;
    smtpd_close_listeners(d);
    while (d->head)
        smtpd_kill(d->head);
    smtpd_reap_cb(-1, 0, eng);
    event_free(d->reap_ev);
    free(d);
    eng->smtpd = NULL;
}
