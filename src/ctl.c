/*
 * ctl - the control socket server (protocol in ctl.h).
 *
 * Reads run here, on the front loop, in their own LMDB read transactions; they
 * never block the writer.  Changes (hold, release, delete) are spool ops, answered
 * only after their commit, so `volleyctl delete` returning means the mail is gone
 * from disk.  While one of a connection's requests waits for its commit, further
 * requests on it wait in its input buffer, which keeps replies in order.
 */
#include "ctl.h"
#include "engine.h"
#include "feedback.h"
#include "suppress.h"
#include "log.h"
#include "msg_header.h"
#include "msgid.h"
#include "net.h"
#include "smtp_syntax.h"
#include "util.h"
#include "worker.h"
#include "sched_queue.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CTL_LINE_MAX (64 * 1024)
#define CTL_TIMEOUT_S 600
#define CTL_LIST_DEFAULT 1000

struct ctl_conn {
    struct engine *eng;
    uint64_t id;
    struct bufferevent *bev;
    bool waiting; /* a change is being committed */
    bool closing; /* last reply queued */
    bool dead;
    struct ctl_conn *prev, *next;
};

struct ctl {
    struct evconnlistener *listener;
    struct ctl_conn *head;
    struct ctl_conn *reap;
    struct event *reap_ev;
};

struct ctl_job {
    struct engine_job job;
    const char *verb;
};

static void ctl_process(struct ctl_conn *c);

/* ctl_send - write obj as one line (consumes obj) */
static void ctl_send(struct ctl_conn *c, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (!s) {
        evbuffer_add_printf(out, "{\"ok\":false,\"error\":\"cannot encode reply\"}\n");
        return;
    }
    evbuffer_add(out, s, strlen(s));
    evbuffer_add(out, "\n", 1);
    free(s);
}

/* ctl_fail - send {"ok":false,"error":msg} */
static void ctl_fail(struct ctl_conn *c, const char *msg)
{
    ctl_send(c, json_pack("{s:b, s:s}", "ok", 0, "error", msg));
}

/* ctl_kill - unlink c and queue it for reaping at the end of this tick */
static void ctl_kill(struct ctl_conn *c)
{
    struct ctl *ctl = c->eng->ctl;
    if (c->dead)
        return;
    c->dead = true;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    engine_reg_del(c->eng, c->id);
    if (c->prev)
        c->prev->next = c->next;
    else
        ctl->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = ctl->reap;
    ctl->reap = c;
    event_active(ctl->reap_ev, 0, 0);
}

/* ctl_write_cb - output drained: finish a close started by ctl_close_after_flush */
static void ctl_write_cb(struct bufferevent *bev, void *arg)
{
    struct ctl_conn *c = arg;
    if (c->closing)
        ctl_kill(c);
}

/* ctl_close_after_flush - stop reading; close once the queued reply is written */
static void ctl_close_after_flush(struct ctl_conn *c)
{
    c->closing = true;
    bufferevent_disable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        ctl_kill(c);
}

static void ctl_reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ctl *ctl = arg;
    while (ctl->reap) {
        struct ctl_conn *c = ctl->reap;
        ctl->reap = c->next;
        bufferevent_free(c->bev);
        free(c);
    }
}

/* ctl_state_name - "deferred" is a queued recipient that has been tried */
static const char *ctl_state_name(const struct spool_rcpt_info *r)
{
    if (r->state == SPOOL_RCPT_QUEUED && r->attempts > 0)
        return "deferred";
    return spool_rcpt_state_str(r->state);
}

/* ctl_count - bump counter name in obj */
static void ctl_count(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    json_object_set_new(obj, name, json_integer(v ? json_integer_value(v) + 1 : 1));
}

/* ctl_bucket - the {"queued":0,"deferred":0,"held":0} object under key in parent */
static json_t *ctl_bucket(json_t *parent, const char *key)
{
    json_t *b = json_object_get(parent, key);
    if (!b) {
        b = json_pack("{s:i, s:i, s:i}", "queued", 0, "deferred", 0, "held", 0);
        json_object_set_new(parent, key, b);
    }
    return b;
}

struct ctl_filter {
    const char *domain;
    const char *campaign;
};

/* ctl_match - whether a recipient passes the request's filters */
static int ctl_match(const struct ctl_filter *f, const struct spool_msg_info *m,
                     const struct spool_rcpt_info *r)
{
    if (f->domain && strcasecmp(r->domain, f->domain) != 0)
        return 0;
    if (f->campaign && strcmp(m->campaign, f->campaign) != 0)
        return 0;
    return 1;
}

struct ctl_queue_acc {
    struct ctl_filter f;
    json_t *by_state, *by_domain, *by_campaign;
    uint64_t rcpts, msgs, last_id;
};

static int ctl_queue_walk(const struct spool_msg_info *m, const struct spool_rcpt_info *r,
                          void *arg)
{
    struct ctl_queue_acc *a = arg;
    if (!ctl_match(&a->f, m, r))
        return 0;
    const char *st = ctl_state_name(r);
    a->rcpts++;
    if (a->msgs == 0 || a->last_id != m->id) {
        a->msgs++;
        a->last_id = m->id;
    }
    ctl_count(a->by_state, st);
    ctl_count(ctl_bucket(a->by_domain, r->domain), st);
    ctl_count(ctl_bucket(a->by_campaign, m->campaign), st);
    return 0;
}

/* ctl_filter_from - read "domain"/"campaign" filters from a request */
static void ctl_filter_from(json_t *req, struct ctl_filter *f)
{
    f->domain = json_string_value(json_object_get(req, "domain"));
    f->campaign = json_string_value(json_object_get(req, "campaign"));
}

static void ctl_cmd_queue(struct ctl_conn *c, json_t *req)
{
    struct ctl_queue_acc a;
    memset(&a, 0, sizeof a);
    ctl_filter_from(req, &a.f);
    a.by_state = json_pack("{s:i, s:i, s:i}", "queued", 0, "deferred", 0, "held", 0);
    a.by_domain = json_object();
    a.by_campaign = json_object();
    if (spool_walk(c->eng->spool, ctl_queue_walk, &a) < 0) {
        json_decref(a.by_state);
        json_decref(a.by_domain);
        json_decref(a.by_campaign);
        return ctl_fail(c, "spool read failed");
    }
    ctl_send(c, json_pack("{s:b, s:{s:I, s:I}, s:o, s:o, s:o}", "ok", 1, "total", "messages",
                          (json_int_t)a.msgs, "recipients", (json_int_t)a.rcpts, "by_state",
                          a.by_state, "by_domain", a.by_domain, "by_campaign", a.by_campaign));
}

struct ctl_list_acc {
    struct ctl_filter f;
    json_t *msgs;
    json_t *cur;
    uint64_t cur_id;
    size_t limit;
    bool truncated;
};

static int ctl_list_walk(const struct spool_msg_info *m, const struct spool_rcpt_info *r,
                         void *arg)
{
    struct ctl_list_acc *a = arg;
    char idtxt[MSGID_STR_LEN + 1], t[40];
    if (!ctl_match(&a->f, m, r))
        return 0;
    if (a->cur && a->cur_id == m->id) {
        json_t *n = json_object_get(a->cur, "recipients");
        json_object_set_new(a->cur, "recipients", json_integer(json_integer_value(n) + 1));
        return 0;
    }
    if (json_array_size(a->msgs) >= a->limit) {
        a->truncated = true;
        return 1;
    }
    msgid_format(m->id, idtxt);
    a->cur = json_pack("{s:s, s:s, s:s, s:s, s:I, s:i}", "id", idtxt, "sender", m->sender,
                       "campaign", m->campaign, "created", time_rfc3339(m->created_ms, t, sizeof t),
                       "size", (json_int_t)m->content_len, "recipients", 1);
    a->cur_id = m->id;
    json_array_append_new(a->msgs, a->cur);
    return 0;
}

static void ctl_cmd_list(struct ctl_conn *c, json_t *req)
{
    struct ctl_list_acc a;
    memset(&a, 0, sizeof a);
    ctl_filter_from(req, &a.f);
    json_t *lim = json_object_get(req, "limit");
    a.limit = json_is_integer(lim) && json_integer_value(lim) > 0
                  ? (size_t)json_integer_value(lim)
                  : CTL_LIST_DEFAULT;
    a.msgs = json_array();
    if (spool_walk(c->eng->spool, ctl_list_walk, &a) < 0) {
        json_decref(a.msgs);
        return ctl_fail(c, "spool read failed");
    }
    ctl_send(c, json_pack("{s:b, s:o, s:b}", "ok", 1, "messages", a.msgs, "truncated",
                          a.truncated));
}

/* ctl_text - a JSON string of bytes that may not be UTF-8 (bad bytes become '?') */
static json_t *ctl_text(const uint8_t *p, size_t n)
{
    json_t *s = json_stringn((const char *)p, n);
    if (s)
        return s;
    char *copy = xmalloc(n + 1);
    size_t i = 0;
    while (i < n) {
        size_t len = p[i] < 0x80 ? 1 : p[i] >= 0xF0 ? 4 : p[i] >= 0xE0 ? 3 : p[i] >= 0xC0 ? 2 : 0;
        if (len && i + len <= n && smtp_utf8_valid((const char *)p + i, len)) {
            memcpy(copy + i, p + i, len);
            i += len;
        } else {
            copy[i++] = '?';
        }
    }
    s = json_stringn(copy, n);
    free(copy);
    return s ? s : json_string("");
}

/* ctl_get_id - parse the request's "id"; -1 after replying on error */
static int ctl_get_id(struct ctl_conn *c, json_t *req, uint64_t *id)
{
    const char *s = json_string_value(json_object_get(req, "id"));
    if (!s || msgid_parse(s, id) < 0) {
        ctl_fail(c, "\"id\" must be a message id of 16 hex digits");
        return -1;
    }
    return 0;
}

/* ctl_load - load a message for show/cat; -1 after replying on error */
static int ctl_load(struct ctl_conn *c, json_t *req, struct spool_msg_info *m)
{
    uint64_t id;
    int why;
    if (ctl_get_id(c, req, &id) < 0)
        return -1;
    if (spool_msg_load(c->eng->spool, id, true, m, &why) < 0) {
        char msg[64], idtxt[MSGID_STR_LEN + 1];
        msgid_format(id, idtxt);
        snprintf(msg, sizeof msg, "%s: %s", idtxt,
                 why == SPOOL_ENOENT ? "no such message" : "spool read failed");
        ctl_fail(c, msg);
        return -1;
    }
    return 0;
}

static void ctl_cmd_show(struct ctl_conn *c, json_t *req)
{
    struct spool_msg_info m;
    char idtxt[MSGID_STR_LEN + 1], t[40];
    if (ctl_load(c, req, &m) < 0)
        return;
    msgid_format(m.id, idtxt);
    json_t *flags = json_array();
    if (m.flags & SPOOL_MSG_8BIT)
        json_array_append_new(flags, json_string("8bitmime"));
    if (m.flags & SPOOL_MSG_SMTPUTF8)
        json_array_append_new(flags, json_string("smtputf8"));
    json_t *rcpts = json_array();
    for (uint32_t i = 0; i < m.nrcpt; i++) {
        const struct spool_rcpt_info *r = &m.rcpts[i];
        json_array_append_new(
            rcpts, json_pack("{s:i, s:s, s:s, s:s, s:i, s:s, s:s}", "index", (int)r->idx,
                             "address", r->addr, "domain", r->domain, "state", ctl_state_name(r),
                             "attempts", (int)r->attempts, "next_attempt",
                             time_rfc3339(r->next_ms, t, sizeof t), "last_reply", r->last_reply));
    }
    size_t hlen = msg_header_section_len((const char *)m.content, m.content_len);
    json_t *obj = json_pack("{s:b, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:o, s:o, s:o}", "ok", 1,
                            "id", idtxt, "sender", m.sender, "campaign", m.campaign, "created",
                            time_rfc3339(m.created_ms, t, sizeof t), "size",
                            (json_int_t)m.content_len, "client", m.client, "helo", m.helo,
                            "flags", flags, "headers", ctl_text(m.content, hlen), "recipients",
                            rcpts);
    spool_msg_info_free(&m);
    ctl_send(c, obj);
}

static void ctl_cmd_cat(struct ctl_conn *c, json_t *req)
{
    struct spool_msg_info m;
    if (ctl_load(c, req, &m) < 0)
        return;
    ctl_send(c, json_pack("{s:b, s:I}", "ok", 1, "size", (json_int_t)m.content_len));
    evbuffer_add(bufferevent_get_output(c->bev), m.content, m.content_len);
    spool_msg_info_free(&m);
}

static void ctl_cmd_status(struct ctl_conn *c)
{
    struct engine *eng = c->eng;
    struct spool_totals t;
    if (spool_totals(eng->spool, &t) < 0)
        return ctl_fail(c, "spool read failed");
    ctl_send(c, json_pack("{s:b, s:s, s:I, s:I, s:{s:I, s:I, s:I}, s:{s:s, s:I, s:I, s:I, s:I},"
                          " s:{s:I, s:I, s:I, s:I}}",
                          "ok", 1, "version", VOLLEY_VERSION, "pid", (json_int_t)getpid(),
                          "uptime_s", (json_int_t)((now_ms() - eng->started_ms) / 1000), "queue",
                          "messages", (json_int_t)t.msgs, "recipients", (json_int_t)t.rcpts,
                          "due", (json_int_t)t.due, "spool", "dir", eng->conf->spool_dir,
                          "used_bytes", (json_int_t)t.used_bytes, "map_bytes",
                          (json_int_t)t.map_bytes, "commits", (json_int_t)t.commits, "ops",
                          (json_int_t)t.ops, "inject", "sessions",
                          (json_int_t)eng->stats.sessions, "accepted_msgs",
                          (json_int_t)eng->stats.accepted_msgs, "accepted_rcpts",
                          (json_int_t)eng->stats.accepted_rcpts, "rejected",
                          (json_int_t)eng->stats.rejected));
}

/* ctl_retry_sched - on a worker: forget DNS and site-down state for the domain */
static json_t *ctl_retry_sched(struct sched *s, void *arg)
{
    sched_retry(s, arg);
    return NULL;
}

/* ctl_retry_sched_done - back on the front loop: nothing to report */
static void ctl_retry_sched_done(void *ctx, json_t *result, void *arg)
{
    free(arg);
}

/* ctl_change_done - a hold/release/delete committed: answer, resume the conn */
static void ctl_change_done(void *ctx, struct engine_job *ej)
{
    struct engine *eng = ctx;
    struct ctl_job *j = (struct ctl_job *)ej;
    struct ctl_conn *c = engine_reg_get(eng, ej->owner);
    const struct spool_op *op = &ej->op;
    log_event(LOG_NOTICE, "admin",
              json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "action", j->verb, "selector",
                        spool_sel_str(op->sel.kind), "value",
                        op->sel.kind == SPOOL_SEL_ID ? "" : op->sel.text, "recipients",
                        (json_int_t)op->count, "messages", (json_int_t)op->msgs, "result",
                        op->result == SPOOL_OK ? "ok" : "failed"));
    if (op->type == SPOOL_OP_RETRY && op->result == SPOOL_OK) {
        /* the recipients are due now; make the workers forget what held them back */
        for (int i = 0; i < eng->nworkers; i++)
            worker_call(eng->workers[i], ctl_retry_sched,
                        xstrdup(op->sel.kind == SPOOL_SEL_DOMAIN ? op->sel.text : ""),
                        eng->mbox, ctl_retry_sched_done);
    }
    if (c) {
        if (op->result == SPOOL_OK)
            ctl_send(c, json_pack("{s:b, s:I, s:I}", "ok", 1, "recipients",
                                  (json_int_t)op->count, "messages", (json_int_t)op->msgs));
        else
            ctl_fail(c, op->result == SPOOL_EFULL ? "spool full" : "spool write failed");
        c->waiting = false;
        ctl_process(c);
    }
    free(j);
}

static void ctl_cmd_change(struct ctl_conn *c, json_t *req, enum SPOOL_OP type, const char *verb)
{
    struct ctl_job *j = xcalloc(1, sizeof *j);
    struct spool_sel *sel = &j->job.op.sel;
    const char *dom = json_string_value(json_object_get(req, "domain"));
    const char *camp = json_string_value(json_object_get(req, "campaign"));
    int nsel = (json_object_get(req, "id") != NULL) + (dom != NULL) + (camp != NULL);
    if (nsel != 1) {
        free(j);
        return ctl_fail(c, "give exactly one of \"id\", \"domain\", \"campaign\"");
    }
    if (json_object_get(req, "id")) {
        sel->kind = SPOOL_SEL_ID;
        if (ctl_get_id(c, req, &sel->id) < 0) {
            free(j);
            return;
        }
    } else {
        const char *v = dom ? dom : camp;
        sel->kind = dom ? SPOOL_SEL_DOMAIN : SPOOL_SEL_CAMPAIGN;
        if (!*v || str_copy(sel->text, sizeof sel->text, v) < 0) {
            free(j);
            return ctl_fail(c, "selector value is empty or too long");
        }
        if (dom)
            str_lower(sel->text);
    }
    j->verb = verb;
    j->job.op.type = type;
    j->job.owner = c->id;
    j->job.complete = ctl_change_done;
    if (engine_submit(c->eng, &j->job) < 0) {
        free(j);
        return ctl_fail(c, "shutting down");
    }
    c->waiting = true;
}

/* ---------------------------------------------------------------- suppression */

#define CTL_SUPP_BATCH_MAX 5000 /* entries per suppress_add / suppress_remove request */
#define CTL_SUPP_LIST_MAX 10000

/* ctl_supp_done - a batch of suppression changes committed: answer */
static void ctl_supp_done(struct engine *eng, uint64_t owner, const struct fb_result *res)
{
    struct ctl_conn *c = engine_reg_get(eng, owner);
    log_event(LOG_NOTICE, "admin",
              json_pack("{s:s, s:I, s:I, s:I, s:s}", "action", "suppress", "applied",
                        (json_int_t)res->applied, "existing", (json_int_t)res->existing,
                        "purged", (json_int_t)res->purged, "result",
                        res->result == SPOOL_OK ? "ok" : "failed"));
    if (!c) return;
    if (res->result == SPOOL_OK)
        ctl_send(c, json_pack("{s:b, s:I, s:I, s:I}", "ok", 1, "applied", (json_int_t)res->applied,
                              "existing", (json_int_t)res->existing, "purged",
                              (json_int_t)res->purged));
    else
        ctl_fail(c, res->result == SPOOL_EFULL ? "spool full" : "spool write failed");
    c->waiting = false;
    ctl_process(c);
}

/*
 * ctl_cmd_suppress - suppress_add / suppress_remove / forget: every entry is
 * checked before anything is submitted, so a bad line changes nothing
 */
static void ctl_cmd_suppress(struct ctl_conn *c, json_t *req, const char *cmd)
{
    struct fb_req *r = fb_req_new(c->eng);
    char err[300], msg[400];
    int rc = 0;
    if (strcmp(cmd, "forget") == 0) {
        const char *a = json_string_value(json_object_get(req, "address"));
        rc = a ? fb_req_forget(r, a, err, sizeof err) : -1;
        if (!a) snprintf(err, sizeof err, "missing \"address\"");
    } else {
        json_t *ents = json_object_get(req, "entries");
        size_t n = json_array_size(ents), i;
        json_t *e;
        if (!json_is_array(ents) || n == 0 || n > CTL_SUPP_BATCH_MAX) {
            rc = -1;
            snprintf(err, sizeof err, "\"entries\" must be a list of 1 to %d objects",
                     CTL_SUPP_BATCH_MAX);
        }
        bool purge = !json_is_false(json_object_get(req, "purge"));
        json_array_foreach(ents, i, e) {
            if (rc < 0) break;
            const char *a = json_string_value(json_object_get(e, "address"));
            const char *scope = json_string_value(json_object_get(e, "scope"));
            if (!a) {
                snprintf(err, sizeof err, "entry %zu: missing \"address\"", i + 1);
                rc = -1;
                break;
            }
            if (strcmp(cmd, "suppress_remove") == 0) {
                rc = fb_req_del(r, scope ? scope : "", a, err, sizeof err);
            } else {
                const char *rs = json_string_value(json_object_get(e, "reason"));
                const char *src = json_string_value(json_object_get(e, "source"));
                json_int_t exp = json_integer_value(json_object_get(e, "expires_at"));
                enum SUPPRESS_REASON reason = SUPPRESS_MANUAL;
                if (rs && (suppress_reason_parse(rs, &reason) < 0 ||
                           reason == SUPPRESS_FORGOTTEN)) {
                    snprintf(err, sizeof err,
                             "bad reason \"%.60s\": hard-bounce, complaint, unsubscribe, "
                             "manual or soft-bounce",
                             rs);
                    rc = -1;
                    break;
                }
                rc = fb_req_put(r, scope ? scope : "", a, reason, (int64_t)exp * 1000,
                                src ? src : "manual", purge, err, sizeof err);
            }
            if (rc < 0) {
                snprintf(msg, sizeof msg, "entry %zu: %s", i + 1, err);
                str_copy(err, sizeof err, msg);
            }
        }
    }
    if (rc < 0) {
        /* the request is refused whole: free it without committing anything */
        fb_req_submit_cancel(r);
        return ctl_fail(c, err);
    }
    c->waiting = true;
    fb_req_submit(r, c->id, ctl_supp_done);
}

/* ctl_supp_entry_json - one entry as volleyctl shows it */
static json_t *ctl_supp_entry_json(const char *scope, const char *target,
                                   const struct suppress_rec *rec)
{
    char created[40], expires[40] = "";
    time_rfc3339(rec->created_ms, created, sizeof created);
    if (rec->expires_ms) time_rfc3339(rec->expires_ms, expires, sizeof expires);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "scope", scope, "address", target,
                     "reason", suppress_reason_str(rec->reason), "created", created, "expires",
                     expires, "source", rec->source);
}

static void ctl_cmd_supp_check(struct ctl_conn *c, json_t *req)
{
    const char *a = json_string_value(json_object_get(req, "address"));
    const char *sender = json_string_value(json_object_get(req, "sender"));
    const char *list = json_string_value(json_object_get(req, "list"));
    char norm[SUPPRESS_ADDR_MAX], matched[SUPPRESS_KEY_MAX + 8];
    if (!a || suppress_normalize(a, norm, sizeof norm) < 0 || norm[0] == '@')
        return ctl_fail(c, "\"address\" must be an address");
    const char *at = sender ? strrchr(sender, '@') : NULL;
    struct suppress_rec rec;
    int rc = spool_supp_check(c->eng->spool, norm, at ? at + 1 : (sender ? sender : ""),
                              list ? list : "", now_ms(), &rec, matched, sizeof matched);
    if (rc < 0) return ctl_fail(c, "spool read failed");
    json_t *out = json_pack("{s:b, s:s, s:b}", "ok", 1, "address", norm, "suppressed", rc == 1);
    if (rc == 1) {
        char *sp = strchr(matched, ' ');
        json_object_set_new(out, "entry", sp ? ctl_supp_entry_json("", sp + 1, &rec)
                                             : ctl_supp_entry_json("", matched, &rec));
        if (sp) {
            *sp = '\0';
            json_object_set_new(json_object_get(out, "entry"), "scope", json_string(matched));
        }
    }
    ctl_send(c, out);
}

struct ctl_supp_list {
    json_t *arr;
    size_t limit;
    bool more;
};

static int ctl_supp_list_one(void *arg, const char *scope, const char *target,
                             const struct suppress_rec *rec)
{
    struct ctl_supp_list *l = arg;
    if (json_array_size(l->arr) >= l->limit) {
        l->more = true;
        return 1;
    }
    json_array_append_new(l->arr, ctl_supp_entry_json(scope, target, rec));
    return 0;
}

/* ctl_cmd_supp_list - a page of entries; "after" is the last page's last entry */
static void ctl_cmd_supp_list(struct ctl_conn *c, json_t *req)
{
    const char *scope = json_string_value(json_object_get(req, "scope"));
    json_t *after = json_object_get(req, "after");
    json_int_t limit = json_integer_value(json_object_get(req, "limit"));
    struct ctl_supp_list l = {json_array(),
                              limit > 0 && limit < CTL_SUPP_LIST_MAX ? (size_t)limit
                                                                     : CTL_SUPP_LIST_MAX,
                              false};
    if (scope && !suppress_scope_valid(scope)) {
        json_decref(l.arr);
        return ctl_fail(c, "bad \"scope\"");
    }
    if (spool_supp_walk(c->eng->spool, scope,
                        json_string_value(json_object_get(after, "scope")),
                        json_string_value(json_object_get(after, "address")), ctl_supp_list_one,
                        &l) < 0) {
        json_decref(l.arr);
        return ctl_fail(c, "spool read failed");
    }
    ctl_send(c, json_pack("{s:b, s:o, s:b}", "ok", 1, "entries", l.arr, "more", l.more));
}

/* ctl_cmd_sent - a delivered recipient's sent record (bounce parse: the campaign
 * a VERP token's message belonged to) */
static void ctl_cmd_sent(struct ctl_conn *c, json_t *req)
{
    uint64_t id;
    json_t *ix = json_object_get(req, "index");
    if (ctl_get_id(c, req, &id) < 0) return;
    if (!json_is_integer(ix) || json_integer_value(ix) < 0 || json_integer_value(ix) > UINT32_MAX)
        return ctl_fail(c, "\"index\" must be a recipient index");
    struct spool_sent s;
    if (spool_sent_get(c->eng->spool, id, (uint32_t)json_integer_value(ix), &s) < 0)
        return ctl_send(c, json_pack("{s:b, s:b}", "ok", 1, "found", 0));
    ctl_send(c, json_pack("{s:b, s:b, s:s, s:s, s:s, s:s}", "ok", 1, "found", 1, "recipient",
                          s.addr, "campaign", s.campaign, "list", s.list, "sender", s.sender));
}

/* A request every worker answers; the reply goes out after the last one. */
struct ctl_sites_req {
    uint64_t owner;
    int pending;
    json_t *sites;   /* sites: the workers' arrays joined; admin: pairs touched */
    bool admin;      /* suspend / resume */
    bool suspend;
    char site[300];
    char source[64];
    int64_t until_ms;
};

/* ctl_sites_collect - on a worker: its sites */
static json_t *ctl_sites_collect(struct sched *s, void *arg)
{
    struct ctl_sites_req *rq = arg;
    if (rq->admin)
        return json_pack("[i]", sched_shape_admin(s, rq->site, rq->source, rq->suspend,
                                                  rq->until_ms));
    return sched_sites_json(s);
}

/* ctl_sites_part - back on the front loop: one worker's sites; answer after the last */
static void ctl_sites_part(void *ctx, json_t *result, void *arg)
{
    struct engine *eng = ctx;
    struct ctl_sites_req *rq = arg;
    json_array_extend(rq->sites, result);
    json_decref(result);
    if (--rq->pending > 0)
        return;
    struct ctl_conn *c = engine_reg_get(eng, rq->owner);
    if (c && rq->admin) {
        json_int_t n = 0;
        size_t i;
        json_t *v;
        json_array_foreach(rq->sites, i, v) n += json_integer_value(v);
        json_decref(rq->sites);
        log_event(LOG_NOTICE, "admin",
                  json_pack("{s:s, s:s, s:s, s:I}", "action", rq->suspend ? "suspend" : "resume",
                            "site", rq->site, "source", rq->source, "pairs", n));
        if (n == 0)
            ctl_fail(c, "no such site (with that source) in any worker");
        else
            ctl_send(c, json_pack("{s:b, s:I}", "ok", 1, "pairs", n));
        c->waiting = false;
        ctl_process(c);
    } else if (c) {
        ctl_send(c, json_pack("{s:b, s:o}", "ok", 1, "sites", rq->sites));
        c->waiting = false;
        ctl_process(c);
    } else {
        json_decref(rq->sites);
    }
    free(rq);
}

/* ctl_ask_workers - send rq to every worker; ctl_sites_part answers */
static void ctl_ask_workers(struct ctl_conn *c, struct ctl_sites_req *rq)
{
    struct engine *eng = c->eng;
    rq->owner = c->id;
    rq->pending = eng->nworkers;
    rq->sites = json_array();
    c->waiting = true;
    for (int i = 0; i < eng->nworkers; i++)
        worker_call(eng->workers[i], ctl_sites_collect, rq, eng->mbox, ctl_sites_part);
}

/*
 * ctl_cmd_shape - suspend / resume the (source, site) pairs of a site by hand:
 * {"cmd":"suspend","site":S,"source":SRC?,"seconds":N?} (default one hour)
 */
static void ctl_cmd_shape(struct ctl_conn *c, json_t *req, bool suspend)
{
    const char *site = json_string_value(json_object_get(req, "site"));
    const char *source = json_string_value(json_object_get(req, "source"));
    json_t *secs = json_object_get(req, "seconds");
    if (!site || !*site || strlen(site) >= 300 || (source && strlen(source) >= 64))
        return ctl_fail(c, "\"site\" (and optional \"source\") required");
    if (secs && (!json_is_integer(secs) || json_integer_value(secs) <= 0 ||
                 json_integer_value(secs) > 366 * 86400))
        return ctl_fail(c, "\"seconds\" must be 1..31622400");
    if (c->eng->nworkers == 0) return ctl_fail(c, "delivery is not enabled");
    struct ctl_sites_req *rq = xcalloc(1, sizeof *rq);
    rq->admin = true;
    rq->suspend = suspend;
    str_copy(rq->site, sizeof rq->site, site);
    str_copy(rq->source, sizeof rq->source, source ? source : "");
    rq->until_ms = now_ms() + (secs ? json_integer_value(secs) : 3600) * 1000;
    ctl_ask_workers(c, rq);
}

/* ctl_cmd_sites - ask every worker for its sites (answered when all replied) */
static void ctl_cmd_sites(struct ctl_conn *c)
{
    struct engine *eng = c->eng;
    if (eng->nworkers == 0)
        return ctl_send(c, json_pack("{s:b, s:[]}", "ok", 1, "sites"));
    struct ctl_sites_req *rq = xcalloc(1, sizeof *rq);
    ctl_ask_workers(c, rq);
}

/* ctl_request - parse and run one request line */
static void ctl_request(struct ctl_conn *c, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *req = json_loadb(line, len, 0, &jerr);
    if (!json_is_object(req)) {
        json_decref(req);
        return ctl_fail(c, "request is not a JSON object");
    }
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    if (!cmd)
        ctl_fail(c, "missing \"cmd\"");
    else if (strcmp(cmd, "status") == 0)
        ctl_cmd_status(c);
    else if (strcmp(cmd, "queue") == 0)
        ctl_cmd_queue(c, req);
    else if (strcmp(cmd, "list") == 0)
        ctl_cmd_list(c, req);
    else if (strcmp(cmd, "show") == 0)
        ctl_cmd_show(c, req);
    else if (strcmp(cmd, "cat") == 0)
        ctl_cmd_cat(c, req);
    else if (strcmp(cmd, "hold") == 0)
        ctl_cmd_change(c, req, SPOOL_OP_HOLD, "hold");
    else if (strcmp(cmd, "release") == 0)
        ctl_cmd_change(c, req, SPOOL_OP_RELEASE, "release");
    else if (strcmp(cmd, "delete") == 0)
        ctl_cmd_change(c, req, SPOOL_OP_DELETE, "delete");
    else if (strcmp(cmd, "retry") == 0)
        ctl_cmd_change(c, req, SPOOL_OP_RETRY, "retry");
    else if (strcmp(cmd, "sites") == 0)
        ctl_cmd_sites(c);
    else if (strcmp(cmd, "suppress_add") == 0 || strcmp(cmd, "suppress_remove") == 0 ||
             strcmp(cmd, "forget") == 0)
        ctl_cmd_suppress(c, req, cmd);
    else if (strcmp(cmd, "sent") == 0)
        ctl_cmd_sent(c, req);
    else if (strcmp(cmd, "suppress_check") == 0)
        ctl_cmd_supp_check(c, req);
    else if (strcmp(cmd, "suppress_list") == 0)
        ctl_cmd_supp_list(c, req);
    else if (strcmp(cmd, "suspend") == 0 || strcmp(cmd, "resume") == 0)
        ctl_cmd_shape(c, req, strcmp(cmd, "suspend") == 0);
    else if (strcmp(cmd, "verify") == 0) {
        char first[256];
        long bad = spool_verify(c->eng->spool, first, sizeof first);
        if (bad < 0)
            ctl_fail(c, "spool read failed");
        else
            ctl_send(c, json_pack("{s:b, s:I, s:s}", "ok", 1, "violations", (json_int_t)bad,
                                  "first", first));
    } else if (strcmp(cmd, "log_rotate") == 0) {
        if (log_reopen() < 0)
            ctl_fail(c, "cannot reopen logs");
        else
            ctl_send(c, json_pack("{s:b}", "ok", 1));
    } else {
        char msg[160];
        snprintf(msg, sizeof msg, "unknown command \"%.100s\"", cmd);
        ctl_fail(c, msg);
    }
    json_decref(req);
}

/* ctl_process - answer complete request lines until one has to wait */
static void ctl_process(struct ctl_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->dead && !c->waiting && !c->closing) {
        size_t eol;
        struct evbuffer_ptr e = evbuffer_search_eol(in, NULL, &eol, EVBUFFER_EOL_LF);
        if (e.pos < 0) {
            if (evbuffer_get_length(in) > CTL_LINE_MAX) {
                ctl_fail(c, "request line too long");
                ctl_close_after_flush(c);
            }
            return;
        }
        if ((size_t)e.pos > CTL_LINE_MAX) {
            ctl_fail(c, "request line too long");
            ctl_close_after_flush(c);
            return;
        }
        char *line = xmalloc((size_t)e.pos + 1);
        evbuffer_remove(in, line, (size_t)e.pos + 1);
        ctl_request(c, line, (size_t)e.pos);
        free(line);
    }
}

static void ctl_read_cb(struct bufferevent *bev, void *arg)
{
    ctl_process(arg);
}

static void ctl_event_cb(struct bufferevent *bev, short what, void *arg)
{
    ctl_kill(arg);
}

static void ctl_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
    struct engine *eng = arg;
    struct ctl *ctl = eng->ctl;
    struct ctl_conn *c = xcalloc(1, sizeof *c);
    c->eng = eng;
    c->bev = bufferevent_socket_new(eng->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    c->id = engine_reg_add(eng, c);
    c->next = ctl->head;
    if (ctl->head)
        ctl->head->prev = c;
    ctl->head = c;
    struct timeval tv = {CTL_TIMEOUT_S, 0};
    bufferevent_set_timeouts(c->bev, &tv, &tv);
    bufferevent_setcb(c->bev, ctl_read_cb, ctl_write_cb, ctl_event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

int ctl_listen(struct engine *eng)
{
    struct ctl *ctl = xcalloc(1, sizeof *ctl);
    eng->ctl = ctl;
    ctl->reap_ev = event_new(eng->base, -1, 0, ctl_reap_cb, ctl);
    ctl->listener = net_unix_listener(eng->base, eng->conf->control_socket,
                                      (int)eng->conf->control_mode, "", ctl_accept_cb, eng);
    if (!ctl->listener)
        return -1;
    log_msg(LOG_NOTICE, "listen", "control on unix:%s", eng->conf->control_socket);
    return 0;
}

void ctl_shutdown(struct engine *eng)
{
    struct ctl *ctl = eng->ctl;
    if (!ctl)
        return;
    if (ctl->listener) {
        evconnlistener_free(ctl->listener);
        unlink(eng->conf->control_socket);
    }
    while (ctl->head)
        ctl_kill(ctl->head);
    ctl_reap_cb(-1, 0, ctl);
    event_free(ctl->reap_ev);
    free(ctl);
    eng->ctl = NULL;
}
