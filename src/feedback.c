/*
 * feedback - suppression batches and inbound feedback processing (see feedback.h).
 */
#include "feedback.h"

#include "bounce.h"
#include "bounce_class.h"
#include "engine.h"
#include "log.h"
#include "msg_header.h"
#include "msgid.h"
#include "spool.h"
#include "util.h"
#include "verp.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


/* One change with the strings its spool_supp points at. */
struct fb_entry {
    enum SPOOL_SUPP_ACT act;
    bool purge;
    char scope[SUPPRESS_SCOPE_MAX];
    char target[SUPPRESS_ADDR_MAX];
    char hashed[SUPPRESS_HASH_LEN + 1];
    uint8_t rec[SUPPRESS_REC_MAX];
    size_t reclen;
    enum SUPPRESS_REASON reason;
};

struct fb_soft_entry {
    char addr[SUPPRESS_ADDR_MAX];
    uint8_t rec[SUPPRESS_REC_MAX];
    size_t reclen;
};

struct fb_req {
    struct engine_job job; /* first: the completion casts back */
    struct engine *eng;
    fb_done_fn done;
    struct fb_entry *ents;
    uint32_t nents;
    struct fb_soft_entry *softs;
    uint32_t nsofts;
    struct spool_supp *supp; /* built at submit, pointing into ents */
    struct spool_soft *soft;
    json_t *records; /* [[type, record], ...] written after the commit */
};

int fb_start(struct engine *eng, char *err, size_t errn)
{
    const char *secret = eng->conf->feedback_secret;
    eng->verp_on = false;
    if (!*secret) return 0;
    if (verp_key_derive(&eng->verp_key, secret) < 0) {
        snprintf(err, errn, "feedback.secret: must be at least %d characters", VERP_SECRET_MIN);
        return -1;
    }
    eng->verp_on = true;
    return 0;
}

struct fb_req *fb_req_new(struct engine *eng)
{
    struct fb_req *r = xcalloc(1, sizeof *r);
    r->eng = eng;
    r->records = json_array();
    return r;
}

/* fb_req_free - release r and everything it carries */
static void fb_req_free(struct fb_req *r)
{
    free(r->ents);
    free(r->softs);
    free(r->supp);
    free(r->soft);
    free(r->job.op.purged);
    json_decref(r->records);
    free(r);
}

void fb_req_submit_cancel(struct fb_req *r)
{
    fb_req_free(r);
}

size_t fb_req_size(const struct fb_req *r)
{
    return r->nents + r->nsofts + json_array_size(r->records);
}

/* fb_entry_add - a zeroed entry at the end of r's list */
static struct fb_entry *fb_entry_add(struct fb_req *r)
{
    r->ents = xrealloc(r->ents, (r->nents + 1) * sizeof *r->ents);
    struct fb_entry *e = &r->ents[r->nents++];
    memset(e, 0, sizeof *e);
    return e;
}

/* fb_rec - the record bytes of a new entry */
static size_t fb_rec(uint8_t *buf, enum SUPPRESS_REASON reason, int64_t expires_ms,
                     const char *source)
{
    struct suppress_rec rec = {.reason = reason, .created_ms = now_ms(), .expires_ms = expires_ms};
    str_copy(rec.source, sizeof rec.source, source ? source : "");
    return suppress_rec_encode(&rec, buf, SUPPRESS_REC_MAX);
}

int fb_req_put(struct fb_req *r, const char *scope, const char *target,
               enum SUPPRESS_REASON reason, int64_t expires_ms, const char *source, bool purge,
               char *err, size_t errn)
{
    char norm[SUPPRESS_ADDR_MAX];
    if (!suppress_scope_valid(scope)) {
        snprintf(err, errn, "bad scope \"%.100s\": use \"\", \"domain:D\" or \"list:NAME\"",
                 scope);
        return -1;
    }
    if (target[0] == '#' && strlen(target) == SUPPRESS_HASH_LEN) {
        str_copy(norm, sizeof norm, target); /* a hashed entry (an import of an export) */
    } else if (suppress_normalize(target, norm, sizeof norm) < 0) {
        snprintf(err, errn, "not an address or @domain: \"%.100s\"", target);
        return -1;
    }
    struct fb_entry *e = fb_entry_add(r);
    e->act = SPOOL_SUPP_PUT;
    e->purge = purge && norm[0] != '#';
    e->reason = reason;
    str_copy(e->scope, sizeof e->scope, scope);
    str_copy(e->target, sizeof e->target, norm);
    e->reclen = fb_rec(e->rec, reason, expires_ms, source);
    return 0;
}

int fb_req_del(struct fb_req *r, const char *scope, const char *target, char *err, size_t errn)
{
    char norm[SUPPRESS_ADDR_MAX];
    if (!suppress_scope_valid(scope)) {
        snprintf(err, errn, "bad scope \"%.100s\"", scope);
        return -1;
    }
    if (target[0] == '#') {
        str_copy(norm, sizeof norm, target);
    } else if (suppress_normalize(target, norm, sizeof norm) < 0) {
        snprintf(err, errn, "not an address or @domain: \"%.100s\"", target);
        return -1;
    }
    struct fb_entry *e = fb_entry_add(r);
    e->act = SPOOL_SUPP_DEL;
    str_copy(e->scope, sizeof e->scope, scope);
    str_copy(e->target, sizeof e->target, norm);
    return 0;
}

int fb_req_forget(struct fb_req *r, const char *addr, char *err, size_t errn)
{
    char norm[SUPPRESS_ADDR_MAX];
    if (suppress_normalize(addr, norm, sizeof norm) < 0 || norm[0] == '@') {
        snprintf(err, errn, "not an address: \"%.100s\"", addr);
        return -1;
    }
    struct fb_entry *e = fb_entry_add(r);
    e->act = SPOOL_SUPP_FORGET;
    e->purge = true;
    e->reason = SUPPRESS_FORGOTTEN;
    str_copy(e->target, sizeof e->target, norm);
    suppress_hash_target(norm, e->hashed);
    e->reclen = fb_rec(e->rec, SUPPRESS_FORGOTTEN, 0, "forget");
    return 0;
}

int fb_req_soft(struct fb_req *r, const char *addr, const char *source)
{
    char norm[SUPPRESS_ADDR_MAX];
    if (suppress_normalize(addr, norm, sizeof norm) < 0 || norm[0] == '@') return -1;
    r->softs = xrealloc(r->softs, (r->nsofts + 1) * sizeof *r->softs);
    struct fb_soft_entry *s = &r->softs[r->nsofts++];
    str_copy(s->addr, sizeof s->addr, norm);
    s->reclen = fb_rec(s->rec, SUPPRESS_SOFT_BOUNCE, 0, source);
    return 0;
}

void fb_req_record(struct fb_req *r, const char *type, json_t *rec)
{
    json_array_append_new(r->records, json_pack("[s, o]", type, rec));
}

/* fb_reason_of - the reason behind purged recipient p */
static const char *fb_reason_of(const struct fb_req *r, const struct spool_purged *p)
{
    if (p->cause < r->nents) return suppress_reason_str(r->ents[p->cause].reason);
    return suppress_reason_str(SUPPRESS_SOFT_BOUNCE);
}

/* fb_req_complete - the batch committed: log and tell the owner */
static void fb_req_complete(void *ctx, struct engine_job *ej)
{
    struct engine *eng = ctx;
    struct fb_req *r = (struct fb_req *)ej;
    struct fb_result res = {.result = ej->op.result};
    if (ej->op.result == SPOOL_OK) {
        for (uint32_t i = 0; i < r->nents; i++) {
            if (r->supp[i].applied) res.applied++;
            else if (r->ents[i].act == SPOOL_SUPP_PUT) res.existing++;
        }
        for (uint32_t i = 0; i < r->nsofts; i++)
            res.soft_suppressed += r->soft[i].suppressed;
        res.purged = ej->op.npurged;
        for (uint32_t i = 0; i < ej->op.npurged; i++) {
            const struct spool_purged *p = &ej->op.purged[i];
            char idtxt[MSGID_STR_LEN + 1];
            msgid_format(p->id, idtxt);
            log_acct("suppressed", suppress_acct_record(idtxt, p->campaign, p->list, p->sender,
                                                        p->addr, "queue", fb_reason_of(r, p)));
        }
        size_t i;
        json_t *pair;
        json_array_foreach(r->records, i, pair)
            log_acct(json_string_value(json_array_get(pair, 0)),
                     json_incref(json_array_get(pair, 1)));
    } else {
        log_event(LOG_ERROR, "spool_outcome",
                  json_pack("{s:s}", "msg", "suppression changes could not be committed"));
    }
    if (r->done) r->done(eng, ej->owner, &res);
    fb_req_free(r);
}

/* fb_req_later - complete an empty batch (records only) */
static void fb_req_later(evutil_socket_t fd, short what, void *arg)
{
    struct fb_req *r = arg;
    fb_req_complete(r->eng, &r->job);
}

void fb_req_submit(struct fb_req *r, uint64_t owner, fb_done_fn done)
{
    struct engine *eng = r->eng;
    r->done = done;
    r->job.owner = owner;
    if (r->nents == 0 && r->nsofts == 0) {
        /* nothing to store: complete on the next loop turn, never inside the
         * caller (which may be in the middle of reading a session's input) */
        r->job.op.result = SPOOL_OK;
        r->job.complete = fb_req_complete;
        if (event_base_once(eng->base, -1, EV_TIMEOUT, fb_req_later, r, NULL) < 0)
            abort();
        return;
    }
    r->supp = xcalloc(r->nents ? r->nents : 1, sizeof *r->supp);
    for (uint32_t i = 0; i < r->nents; i++) {
        struct fb_entry *e = &r->ents[i];
        r->supp[i] = (struct spool_supp){.act = e->act, .scope = e->scope, .target = e->target,
                                         .rec = e->rec, .reclen = e->reclen,
                                         .hashed = e->hashed[0] ? e->hashed : NULL,
                                         .purge = e->purge};
    }
    r->soft = xcalloc(r->nsofts ? r->nsofts : 1, sizeof *r->soft);
    int64_t day = now_ms() / DAY_MS;
    for (uint32_t i = 0; i < r->nsofts; i++)
        r->soft[i] = (struct spool_soft){.addr = r->softs[i].addr, .day = day,
                                         .limit = (int)eng->conf->feedback_soft_limit,
                                         .window_days = (int)eng->conf->feedback_soft_days,
                                         .rec = r->softs[i].rec, .reclen = r->softs[i].reclen};
    r->job.op.type = SPOOL_OP_SUPPRESS;
    r->job.op.supp = r->supp;
    r->job.op.nsupp = r->nents;
    r->job.op.soft = r->soft;
    r->job.op.nsoft = r->nsofts;
    r->job.complete = fb_req_complete;
    if (engine_submit(eng, &r->job) < 0) {
        struct fb_result res = {.result = SPOOL_EIO};
        if (done) done(eng, owner, &res);
        fb_req_free(r);
    }
}

/* ---------------------------------------------------------------- intake */

/* fb_is_feedback_domain - is domain one we take feedback mail for? */
static bool fb_is_feedback_domain(const struct conf *c, const char *domain)
{
    if (*c->feedback_bounce_domain && strcasecmp(domain, c->feedback_bounce_domain) == 0)
        return true;
    for (int i = 0; i < c->feedback_bounce_domains_count; i++) {
        const char *eq = strchr(c->feedback_bounce_domains[i], '=');
        if (eq && strcasecmp(domain, eq + 1) == 0) return true;
    }
    for (int i = 0; i < c->feedback_domains_count; i++)
        if (strcasecmp(domain, c->feedback_domains[i]) == 0) return true;
    return false;
}

/* fb_has_prefix - does addr's local part start with "prefix+"? */
static bool fb_has_prefix(const char *addr, const char *prefix)
{
    size_t pl = strlen(prefix);
    return strncasecmp(addr, prefix, pl) == 0 && addr[pl] == '+';
}

int fb_intake_rcpt(struct engine *eng, const char *addr, char *reply, size_t replyn)
{
    const struct conf *c = eng->conf;
    const char *at = strrchr(addr, '@');
    if (!at || !fb_is_feedback_domain(c, at + 1)) {
        snprintf(reply, replyn, "550 5.7.1 <%.200s>: Relay access denied: not a feedback domain",
                 addr);
        return -1;
    }
    uint64_t id;
    uint32_t idx;
    if (fb_has_prefix(addr, c->feedback_verp_prefix) &&
        verp_decode(&eng->verp_key, c->feedback_verp_prefix, addr, &id, &idx) < 0) {
        snprintf(reply, replyn, "550 5.7.1 <%.200s>: Invalid or forged VERP address", addr);
        return -1;
    }
    if (fb_has_prefix(addr, VERP_UNSUB_PREFIX) &&
        verp_unsub_mail_decode(&eng->verp_key, VERP_UNSUB_PREFIX, addr, &id, &idx) < 0) {
        snprintf(reply, replyn, "550 5.7.1 <%.200s>: Invalid or forged unsubscribe address", addr);
        return -1;
    }
    return 0;
}

/* What an inbound message is about, once its tokens are checked. */
struct fb_target {
    bool found;          /* a verified token named a message and recipient */
    bool unsubscribe;    /* ... through an unsubscribe address */
    uint64_t id;
    uint32_t idx;
    bool have_sent;      /* its sent record was still there */
    struct spool_sent sent;
};

/* fb_find_target - the first verified token among the envelope recipients and the
 * addresses the report names (a VERP Return-Path quoted in an ARF original) */
static void fb_find_target(struct engine *eng, char *const *rcpts, uint32_t n,
                           const struct bounce_report *rep, struct fb_target *t)
{
    const char *cands[64];
    size_t nc = 0;
    for (uint32_t i = 0; i < n && nc < 60; i++)
        cands[nc++] = rcpts[i];
    cands[nc++] = rep->delivered_to;
    cands[nc++] = rep->orig_return_path;
    cands[nc++] = rep->original_mail_from;
    cands[nc++] = rep->to;
    memset(t, 0, sizeof *t);
    t->found = verp_find(&eng->verp_key, eng->conf->feedback_verp_prefix, cands, nc, &t->id,
                         &t->idx, &t->unsubscribe) == 0;
    if (t->found) t->have_sent = spool_sent_get(eng->spool, t->id, t->idx, &t->sent) == 0;
}

/* fb_base_record - the fields every feedback accounting record shares */
static json_t *fb_base_record(const struct fb_target *t, const char *recipient)
{
    char idtxt[MSGID_STR_LEN + 1] = "";
    if (t->found) msgid_format(t->id, idtxt);
    const char *at = strrchr(recipient, '@');
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "msgid", idtxt, "campaign",
                     t->have_sent ? t->sent.campaign : "", "list", t->have_sent ? t->sent.list : "",
                     "sender", t->have_sent ? t->sent.sender : "", "recipient", recipient,
                     "domain", at ? at + 1 : "");
}

/* fb_intake_bounce - a DSN: the failed recipient that is the token's, classified */
static void fb_intake_bounce(struct engine *eng, struct fb_req *r, const struct bounce_report *rep,
                             const struct fb_target *t)
{
    if (!t->found || !t->have_sent) {
        log_event(LOG_NOTICE, "feedback_unmatched",
                  json_pack("{s:s, s:s, s:s}", "kind", bounce_kind_str(rep->kind), "format",
                            rep->format, "msg",
                            t->found ? "no sent record for the VERP token (older than "
                                       "feedback.sent_retention?)"
                                     : "no verified VERP token: not acted on"));
        return;
    }
    /* the token names one recipient; prefer the report's entry for that address */
    const struct bounce_rcpt *b = NULL;
    for (int i = 0; i < rep->nrcpts; i++) {
        if (rep->rcpts[i].kind != BOUNCE_KIND_BOUNCE) continue;
        if (!b || strcasecmp(rep->rcpts[i].recipient, t->sent.addr) == 0 ||
            strcasecmp(rep->rcpts[i].original_recipient, t->sent.addr) == 0)
            b = &rep->rcpts[i];
    }
    if (!b) return;
    struct bounce_verdict v;
    bounce_classify(eng->rules->classify, b->code, b->status, b->diagnostic, &v);
    json_t *rec = fb_base_record(t, t->sent.addr);
    json_object_set_new(rec, "code", json_integer(b->code));
    json_object_set_new(rec, "enh", json_string(b->status));
    json_object_set_new(rec, "diag", json_string(b->diagnostic));
    json_object_set_new(rec, "category", json_string(bounce_cat_str(v.cat)));
    json_object_set_new(rec, "hard", json_boolean(v.hard));
    json_object_set_new(rec, "async", json_true());
    json_object_set_new(rec, "mx", json_string(b->remote_mta));
    json_object_set_new(rec, "format", json_string(rep->format));
    fb_req_record(r, "bounced", rec);
    char source[SUPPRESS_SOURCE_MAX], err[200];
    snprintf(source, sizeof source, "dsn %s %s: %.200s", b->status, bounce_cat_str(v.cat),
             b->diagnostic);
    if (v.hard && eng->conf->feedback_suppress_hard)
        fb_req_put(r, "", t->sent.addr, SUPPRESS_HARD_BOUNCE, 0, source, true, err, sizeof err);
    else if (!v.hard && eng->conf->feedback_soft_limit > 0)
        fb_req_soft(r, t->sent.addr, source);
}

/* fb_intake_complaint - an ARF report: the complainer never gets mail again */
static void fb_intake_complaint(struct engine *eng, struct fb_req *r,
                                const struct bounce_report *rep, const struct fb_target *t)
{
    const char *who = t->have_sent ? t->sent.addr : rep->original_rcpt_to;
    if (!*who && rep->nrcpts > 0) who = rep->rcpts[0].recipient;
    char norm[SUPPRESS_ADDR_MAX], err[200];
    if (suppress_normalize(who, norm, sizeof norm) < 0 || norm[0] == '@') {
        log_event(LOG_NOTICE, "feedback_unmatched",
                  json_pack("{s:s, s:s, s:s}", "kind", "complaint", "format", rep->format, "msg",
                            "the report names no usable recipient (redacted?)"));
        return;
    }
    json_t *rec = fb_base_record(t, norm);
    json_object_set_new(rec, "feedback_type", json_string(rep->feedback_type));
    json_object_set_new(rec, "source_ip", json_string(rep->source_ip));
    json_object_set_new(rec, "user_agent", json_string(rep->user_agent));
    json_object_set_new(rec, "reported_domain", json_string(rep->reported_domain));
    fb_req_record(r, "complaint", rec);
    if (eng->conf->feedback_suppress_complaints) {
        char source[SUPPRESS_SOURCE_MAX];
        snprintf(source, sizeof source, "arf %s from %.100s", rep->feedback_type, rep->user_agent);
        fb_req_put(r, "", norm, SUPPRESS_COMPLAINT, 0, source, true, err, sizeof err);
    }
}

/* fb_unsub_add - suppress addr for list ("" = everything) and record it */
static void fb_unsub_add(struct fb_req *r, const struct fb_target *t, const char *list,
                         const char *addr, const char *method)
{
    char scope[SUPPRESS_SCOPE_MAX], err[200], source[SUPPRESS_SOURCE_MAX];
    snprintf(scope, sizeof scope, "%s%s", *list ? "list:" : "", list);
    snprintf(source, sizeof source, "unsubscribe %s", method);
    if (fb_req_put(r, scope, addr, SUPPRESS_UNSUBSCRIBE, 0, source, true, err, sizeof err) < 0) {
        log_event(LOG_NOTICE, "feedback_unmatched",
                  json_pack("{s:s, s:s}", "kind", "unsubscribe", "msg", err));
        return;
    }
    json_t *rec = fb_base_record(t, addr);
    json_object_set_new(rec, "list", json_string(list));
    json_object_set_new(rec, "method", json_string(method));
    fb_req_record(r, "unsubscribed", rec);
}

void fb_intake(struct engine *eng, uint64_t owner, char *const *rcpts, uint32_t nrcpt,
               const uint8_t *content, size_t len, fb_done_fn done)
{
    struct bounce_report rep;
    struct fb_target t;
    struct fb_req *r = fb_req_new(eng);
    /* -1 only when memory runs out: the daemon's policy is to abort (util.h) */
    if (bounce_parse((const char *)content, len, (size_t)eng->conf->inject_max_message_size,
                     &rep) < 0)
        abort();
    fb_find_target(eng, rcpts, nrcpt, &rep, &t);
    if (t.unsubscribe) {
        if (t.have_sent)
            fb_unsub_add(r, &t, t.sent.list, t.sent.addr, "mailto");
        else
            log_event(LOG_NOTICE, "feedback_unmatched",
                      json_pack("{s:s, s:s}", "kind", "unsubscribe", "msg",
                                "no sent record for the unsubscribe token"));
    } else {
        switch (rep.kind) {
        case BOUNCE_KIND_BOUNCE:
            fb_intake_bounce(eng, r, &rep, &t);
            break;
        case BOUNCE_KIND_COMPLAINT:
            fb_intake_complaint(eng, r, &rep, &t);
            break;
        case BOUNCE_KIND_DELAY:
        case BOUNCE_KIND_AUTOREPLY:
        case BOUNCE_KIND_DELIVERED:
            log_event(LOG_INFO, "feedback_ignored",
                      json_pack("{s:s, s:s, s:s, s:s}", "kind", bounce_kind_str(rep.kind),
                                "format", rep.format, "from", rep.from, "subject", rep.subject));
            break;
        case BOUNCE_KIND_UNPARSEABLE:
            log_event(LOG_NOTICE, "feedback_unparseable",
                      json_pack("{s:s, s:s, s:s}", "reason", rep.reason, "from", rep.from,
                                "subject", rep.subject));
            break;
        }
    }
    bounce_report_free(&rep);
    fb_req_submit(r, owner, done);
}

/* ---------------------------------------------------------------- outgoing */

/* fb_bounce_domain - the VERP domain for mail from sender, "" when none */
static const char *fb_bounce_domain(const struct conf *c, const char *sender)
{
    const char *at = strrchr(sender, '@');
    if (!at) return "";
    size_t dl = strlen(at + 1);
    for (int i = 0; i < c->feedback_bounce_domains_count; i++) {
        const char *e = c->feedback_bounce_domains[i], *eq = strchr(e, '=');
        if (eq && (size_t)(eq - e) == dl && strncasecmp(e, at + 1, dl) == 0) return eq + 1;
    }
    return c->feedback_bounce_domain;
}

/* fb_wants_unsub - does m get List-Unsubscribe headers? */
static bool fb_wants_unsub(const struct conf *c, const struct fb_msg *m, const uint8_t *content,
                           size_t len)
{
    if (!c->feedback_list_unsubscribe || (!*m->campaign && !*m->list)) return false;
    if (!*c->feedback_unsubscribe_url && !*fb_bounce_domain(c, m->sender)) return false;
    if (!content) return true; /* not loaded yet: assume it has none of its own */
    size_t hl = msg_header_section_len((const char *)content, len);
    return msg_header_count((const char *)content, hl, "List-Unsubscribe") == 0;
}

bool fb_decorate_needed(const struct conf *c, const struct verp_key *key, const struct fb_msg *m,
                        const uint8_t *content, size_t len)
{
    if (!key || !*m->sender) return false; /* null sender: a notice, never decorated */
    return *fb_bounce_domain(c, m->sender) || fb_wants_unsub(c, m, content, len);
}

void fb_decorate(const struct conf *c, const struct verp_key *key, const struct fb_msg *m,
                 uint32_t idx, const char *rcpt, const uint8_t *content, size_t len,
                 char *mail_from, size_t mfn, struct vbuf *hdrs)
{
    mail_from[0] = '\0';
    if (!key || !*m->sender) return;
    const char *bd = fb_bounce_domain(c, m->sender);
    char local[VERP_LOCAL_SIZE];
    if (*bd && verp_encode(key, c->feedback_verp_prefix, m->id, idx, local, sizeof local) == 0)
        snprintf(mail_from, mfn, "%s@%s", local, bd);
    if (!fb_wants_unsub(c, m, content, len)) return;
    char url_tok[VERP_URL_TOKEN_SIZE], mail_local[VERP_LOCAL_SIZE], line[1200];
    /* FB_ALL_LISTS: a message outside any list unsubscribes from all mail */
    bool url = *c->feedback_unsubscribe_url &&
               verp_unsub_url_token(key, *m->list ? m->list : FB_ALL_LISTS, rcpt, m->id, url_tok,
                                    sizeof url_tok) == 0;
    bool mailto = *bd && verp_unsub_mail_encode(key, VERP_UNSUB_PREFIX, m->id, idx, mail_local,
                                                sizeof mail_local) == 0;
    if (!url && !mailto) return;
    int n = snprintf(line, sizeof line, "List-Unsubscribe: ");
    if (url)
        n += snprintf(line + n, sizeof line - (size_t)n, "<%s%s>", c->feedback_unsubscribe_url,
                      url_tok);
    if (mailto)
        n += snprintf(line + n, sizeof line - (size_t)n, "%s<mailto:%s@%s>",
                      url ? ",\r\n " : "", mail_local, bd);
    if (n > 0 && (size_t)n < sizeof line - 3) {
        vbuf_append(hdrs, line, (size_t)n);
        vbuf_append(hdrs, "\r\n", 2);
        if (url) {
            static const char post[] = "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n";
            vbuf_append(hdrs, post, sizeof post - 1);
        }
    }
}

void fb_unsubscribe(struct engine *eng, uint64_t owner, const char *list, const char *addr,
                    uint64_t msgid, const char *method, fb_done_fn done)
{
    struct fb_req *r = fb_req_new(eng);
    struct fb_target t = {.found = msgid != 0, .id = msgid};
    fb_unsub_add(r, &t, strcmp(list, FB_ALL_LISTS) == 0 ? "" : list, addr, method);
    fb_req_submit(r, owner, done);
}
