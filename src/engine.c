/*
 * engine - front loop, signals, spool mailbox and id registry (see engine.h).
 */
#include "engine.h"
#include "bounce_class.h"
#include "dkim.h"
#include "feedback.h"
#include "http.h"
#include "ctl.h"
#include "log.h"
#include "sched_queue.h"
#include "shape.h"
#include "smtpd.h"
#include "util.h"
#include "warmup.h"
#include "signpool.h"
#include "worker.h"

#include <event2/buffer.h>
#include <openssl/ssl.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <unistd.h>

#define ENGINE_REG_EMPTY 0
#define ENGINE_REG_DEAD UINT64_MAX
#define ENGINE_SHUTDOWN_GRACE_S 30

struct engine_reg_slot {
    uint64_t id;
    void *ptr;
};

/* engine_job_done - writer thread: the op is committed; post it to its loop */
static void engine_job_done(struct spool_op *op, void *arg)
{
    struct engine_job *job = arg;
    mbox_post(job->mbox, &job->msg);
}

/* engine_job_run - the owning loop: hand the committed job to its completion */
static void engine_job_run(void *ctx, struct mbox_msg *m)
{
    struct engine_job *job = (struct engine_job *)((char *)m - offsetof(struct engine_job, msg));
    job->complete(ctx, job);
}

int engine_job_submit(struct spool *sp, struct mbox *mb, struct engine_job *job)
{
    job->mbox = mb;
    job->msg.run = engine_job_run;
    job->op.done = engine_job_done;
    job->op.arg = job;
    return spool_submit(sp, &job->op);
}

int engine_submit(struct engine *eng, struct engine_job *job)
{
    return engine_job_submit(eng->spool, eng->mbox, job);
}

/* engine_reg_hash - slot index for id */
static size_t engine_reg_hash(uint64_t id, size_t cap)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id & (cap - 1);
}

/* engine_reg_grow - rehash into a table twice as large (drops tombstones) */
static void engine_reg_grow(struct engine *eng)
{
    size_t ncap = eng->reg_cap ? eng->reg_cap * 2 : 1024;
    struct engine_reg_slot *n = xcalloc(ncap, sizeof *n);
    size_t used = 0;
    for (size_t i = 0; i < eng->reg_cap; i++) {
        uint64_t id = eng->reg[i].id;
        if (id == ENGINE_REG_EMPTY || id == ENGINE_REG_DEAD)
            continue;
        size_t j = engine_reg_hash(id, ncap);
        while (n[j].id != ENGINE_REG_EMPTY)
            j = (j + 1) & (ncap - 1);
        n[j] = eng->reg[i];
        used++;
    }
    free(eng->reg);
    eng->reg = n;
    eng->reg_cap = ncap;
    eng->reg_used = used;
}

uint64_t engine_reg_add(struct engine *eng, void *ptr)
{
    if ((eng->reg_used + 1) * 2 > eng->reg_cap)
        engine_reg_grow(eng);
    uint64_t id = ++eng->reg_next;
    size_t j = engine_reg_hash(id, eng->reg_cap);
    while (eng->reg[j].id != ENGINE_REG_EMPTY)
        j = (j + 1) & (eng->reg_cap - 1);
    eng->reg[j].id = id;
    eng->reg[j].ptr = ptr;
    eng->reg_used++;
    return id;
}

/* engine_reg_find - slot of id or NULL */
static struct engine_reg_slot *engine_reg_find(struct engine *eng, uint64_t id)
{
    if (!eng->reg_cap || id == ENGINE_REG_EMPTY || id == ENGINE_REG_DEAD)
        return NULL;
    size_t j = engine_reg_hash(id, eng->reg_cap);
    while (eng->reg[j].id != ENGINE_REG_EMPTY) {
        if (eng->reg[j].id == id)
            return &eng->reg[j];
        j = (j + 1) & (eng->reg_cap - 1);
    }
    return NULL;
}

void *engine_reg_get(struct engine *eng, uint64_t id)
{
    struct engine_reg_slot *s = engine_reg_find(eng, id);
    return s ? s->ptr : NULL;
}

void engine_reg_del(struct engine *eng, uint64_t id)
{
    struct engine_reg_slot *s = engine_reg_find(eng, id);
    if (s) {
        s->id = ENGINE_REG_DEAD; /* stays counted in reg_used until the next grow */
        s->ptr = NULL;
    }
}

void engine_poke_workers(struct engine *eng)
{
    for (int i = 0; i < eng->nworkers; i++)
        worker_poke(eng->workers[i]);
}

/* engine_start_workers - the TLS client context and the delivery threads */
static int engine_start_workers(struct engine *eng, char *err, size_t errsz)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errsz, "cannot create the TLS client context");
        return -1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* certificates are not verified yet: opportunistic TLS is about eavesdroppers */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    eng->tls_client = ctx;
    if (eng->conf->delivery_enabled && eng->conf->dkim_sign_threads > 0) {
        eng->signpool = signpool_new((int)eng->conf->dkim_sign_threads, SCHED_DKIM_MEMO_BODIES,
                                     SCHED_DKIM_MEMO_MAX, err, errsz);
        if (!eng->signpool) return -1;
    }
    int n = eng->conf->delivery_enabled ? (int)eng->conf->delivery_workers : 0;
    if (n == 0)
        log_msg(LOG_NOTICE, "delivery", "delivery.enabled is false: mail stays queued");
    eng->workers = xcalloc((size_t)n, sizeof *eng->workers);
    for (int i = 0; i < n; i++) {
        eng->workers[i] = worker_start(eng, ctx, i, err, errsz);
        if (!eng->workers[i])
            return -1;
        eng->nworkers++;
    }
    return 0;
}

void engine_inflight_changed(struct engine *eng)
{
    smtpd_resume(eng);
}

/* engine_maybe_exit - after SIGTERM: leave the loop once the last session is gone */
static void engine_maybe_exit(struct engine *eng)
{
    if (eng->stopping && smtpd_sessions(eng) == 0)
        event_base_loopexit(eng->base, NULL);
}

/* engine_exit_poll - while stopping, check every 100 ms whether sessions drained */
static void engine_exit_poll(evutil_socket_t fd, short what, void *arg)
{
    engine_maybe_exit(arg);
}

/* engine_dkim_load - the keys of entries "domain:selector:/path" into *out */
static int engine_dkim_load(char *const *entries, int n, struct dkim_key ***out, int *nout,
                            char *err, size_t errsz)
{
    *out = xcalloc(n ? (size_t)n : 1, sizeof **out);
    *nout = 0;
    for (int i = 0; i < n; i++) {
        char domain[256], selector[64];
        const char *e = entries[i], *c1 = strchr(e, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c1 || !c2 || (size_t)(c1 - e) >= sizeof domain ||
            (size_t)(c2 - c1 - 1) >= sizeof selector) {
            snprintf(err, errsz, "dkim: bad key entry \"%.100s\"", e);
            return -1;
        }
        memcpy(domain, e, (size_t)(c1 - e));
        domain[c1 - e] = '\0';
        memcpy(selector, c1 + 1, (size_t)(c2 - c1 - 1));
        selector[c2 - c1 - 1] = '\0';
        str_lower(domain);
        struct dkim_key *k = dkim_key_load(c2 + 1, domain, selector, err, errsz);
        if (!k) return -1;
        (*out)[(*nout)++] = k;
    }
    return 0;
}

/* engine_rules_free - release a set nobody references */
static void engine_rules_free(struct engine_rules *er)
{
    shape_rules_free(er->rules);
    bounce_class_free(er->classify);
    for (int i = 0; i < er->ndkim_keys; i++)
        dkim_key_free(er->dkim_keys[i]);
    for (int i = 0; i < er->ndkim_always; i++)
        dkim_key_free(er->dkim_always[i]);
    free(er->dkim_keys);
    free(er->dkim_always);
    dkim_hlist_free(er->dkim_hlist);
    free(er);
}

struct engine_rules *engine_rules_load(const struct conf *c, char *err, size_t errsz)
{
    struct engine_rules *er = xcalloc(1, sizeof *er);
    er->refs = 1;
    er->rules = shape_rules_load(c->shaping_rules_file, err, errsz);
    if (er->rules) er->classify = bounce_class_load(c->feedback_classify_rules, err, errsz);
    if (!er->rules || !er->classify ||
        engine_dkim_load(c->dkim_keys, c->dkim_keys_count, &er->dkim_keys, &er->ndkim_keys, err,
                         errsz) < 0 ||
        engine_dkim_load(c->dkim_always, c->dkim_always_count, &er->dkim_always,
                         &er->ndkim_always, err, errsz) < 0) {
        engine_rules_free(er);
        return NULL;
    }
    const char *names[CONF_MAX_LIST + 1];
    for (int i = 0; i < c->dkim_headers_count; i++)
        names[i] = c->dkim_headers[i];
    names[c->dkim_headers_count] = NULL;
    char why[200];
    er->dkim_hlist = dkim_hlist_new(c->dkim_headers_count > 0 ? names : NULL, why, sizeof why);
    if (!er->dkim_hlist) {
        snprintf(err, errsz, "dkim.headers: %s", why);
        engine_rules_free(er);
        return NULL;
    }
    return er;
}

struct engine_rules *engine_rules_ref(struct engine_rules *er)
{
    __atomic_add_fetch(&er->refs, 1, __ATOMIC_RELAXED);
    return er;
}

void engine_rules_unref(struct engine_rules *er)
{
    if (!er || __atomic_sub_fetch(&er->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
    engine_rules_free(er);
}

/* engine_rules_swap_fn - on a worker: adopt the new rule set */
static json_t *engine_rules_swap_fn(struct sched *s, void *arg)
{
    sched_set_rules(s, arg); /* takes the reference */
    return NULL;
}

static void engine_rules_swap_done(void *ctx, json_t *result, void *arg)
{
    json_decref(result);
}

/* engine_reload_rules - SIGHUP: reread the shaping rules; a bad file keeps the old
 * set (and says why) - queued mail is never touched either way */
static void engine_reload_rules(struct engine *eng)
{
    char err[512];
    struct engine_rules *er = engine_rules_load(eng->conf, err, sizeof err);
    if (!er) {
        log_msg(LOG_ERROR, "rules_reload", "keeping the old rules and keys: %s", err);
        return;
    }
    engine_rules_unref(eng->rules);
    eng->rules = er;
    for (int i = 0; i < eng->nworkers; i++)
        worker_call(eng->workers[i], engine_rules_swap_fn, engine_rules_ref(er), eng->mbox,
                    engine_rules_swap_done);
    log_msg(LOG_NOTICE, "rules_reload", "shaping rules reloaded from %s",
            *eng->conf->shaping_rules_file ? eng->conf->shaping_rules_file : "(built-in)");
}

/* engine_signal_cb - SIGTERM/SIGINT: graceful stop; SIGHUP: reopen logs, reload rules */
static void engine_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct engine *eng = arg;
    if (sig == SIGHUP) {
        if (log_reopen() < 0)
            log_msg(LOG_ERROR, "log_reopen", "cannot reopen logs: %s", strerror(errno));
        else
            log_msg(LOG_INFO, "log_reopen", "logs reopened");
        engine_reload_rules(eng);
        return;
    }
    if (eng->stopping)
        return;
    log_msg(LOG_NOTICE, "shutdown", "signal %d: stopping; in-flight commits finish first",
            (int)sig);
    eng->stopping = true;
    smtpd_shutdown(eng);
    ctl_shutdown(eng);
    if (eng->http) {
        http_free(eng->http);
        eng->http = NULL;
    }
    struct timeval grace = {ENGINE_SHUTDOWN_GRACE_S, 0}, tick = {0, 100000};
    event_base_loopexit(eng->base, &grace);
    eng->exit_poll = event_new(eng->base, -1, EV_PERSIST, engine_exit_poll, eng);
    event_add(eng->exit_poll, &tick);
    engine_maybe_exit(eng);
}

/* engine_sent_purge_done - log what the purge removed */
static void engine_sent_purge_done(void *ctx, struct engine_job *ej)
{
    if (ej->op.result != SPOOL_OK || ej->op.count)
        log_event(ej->op.result == SPOOL_OK ? LOG_INFO : LOG_ERROR, "sent_purge",
                  json_pack("{s:I, s:s}", "records", (json_int_t)ej->op.count, "result",
                            ej->op.result == SPOOL_OK ? "ok" : "failed"));
    free(ej);
}

/* engine_sent_purge_cb - sent records older than feedback.sent_retention go; ids
 * carry their creation time, so the cutoff is an id */
static void engine_sent_purge_cb(evutil_socket_t fd, short what, void *arg)
{
    struct engine *eng = arg;
    struct engine_job *j = xcalloc(1, sizeof *j);
    int64_t cutoff = now_ms() - eng->conf->feedback_sent_retention * 1000;
    j->op.type = SPOOL_OP_SENT_PURGE;
    j->op.sel.id = cutoff > 0 ? (uint64_t)cutoff << 20 : 0;
    j->complete = engine_sent_purge_done;
    if (engine_submit(eng, j) < 0) free(j);
}

struct engine *engine_create(struct conf *conf, char *err, size_t errsz)
{
    struct engine *eng = xcalloc(1, sizeof *eng);
    eng->conf = conf;
    eng->started_ms = now_ms();
    if (*conf->inject_hostname)
        str_copy(eng->hostname, sizeof eng->hostname, conf->inject_hostname);
    else if (gethostname(eng->hostname, sizeof eng->hostname - 1) < 0)
        str_copy(eng->hostname, sizeof eng->hostname, "localhost");

    eng->base = event_base_new();
    if (!eng->base) {
        snprintf(err, errsz, "cannot create event base");
        goto fail;
    }
    eng->mbox = mbox_new(eng->base, eng);
    if (!eng->mbox) {
        snprintf(err, errsz, "eventfd: %s", strerror(errno));
        goto fail;
    }

    struct spool_params sp = {
        .dir = conf->spool_dir,
        .map_size = (uint64_t)conf->spool_map_size_mb << 20,
        .reserve_percent = (unsigned)conf->spool_reserve_percent,
        .sync = conf->spool_sync,
        .group_usec = (unsigned)conf->spool_group_commit_usec,
        .group_max = (unsigned)conf->spool_group_commit_max,
    };
    if (spool_open(&eng->spool, &sp, err, errsz) < 0)
        goto fail;
    eng->rules = engine_rules_load(conf, err, errsz);
    if (eng->rules && fb_start(eng, err, errsz) < 0) goto fail;
    if (!eng->rules) goto fail;
    eng->warmup = warmup_new();
    if (warmup_load(eng->warmup, eng->spool, now_ms() / WARMUP_DAY_MS) < 0) {
        snprintf(err, errsz, "spool %s: cannot read the warm-up counts", conf->spool_dir);
        goto fail;
    }
    if (engine_start_workers(eng, err, errsz) < 0)
        goto fail;
    eng->sent_purge = event_new(eng->base, -1, EV_PERSIST, engine_sent_purge_cb, eng);
    struct timeval hourly = {3600, 0};
    event_add(eng->sent_purge, &hourly);
    engine_sent_purge_cb(-1, 0, eng);

    eng->sig_term = evsignal_new(eng->base, SIGTERM, engine_signal_cb, eng);
    eng->sig_int = evsignal_new(eng->base, SIGINT, engine_signal_cb, eng);
    eng->sig_hup = evsignal_new(eng->base, SIGHUP, engine_signal_cb, eng);
    event_add(eng->sig_term, NULL);
    event_add(eng->sig_int, NULL);
    event_add(eng->sig_hup, NULL);
    signal(SIGPIPE, SIG_IGN);
    return eng;

fail:
    engine_free(eng);
    return NULL;
}

/* engine_http_unsub - the one-click endpoint verified a token: suppress, then let
 * it answer (the 200 goes out only after the commit) */
static void engine_http_unsub_done(struct engine *eng, uint64_t req_id, const struct fb_result *res)
{
    if (eng->http) http_unsub_done(eng->http, req_id, res->result == SPOOL_OK ? 0 : -1);
}

static void engine_http_unsub(void *arg, uint64_t req_id, const char *list, const char *addr,
                              uint64_t msgid)
{
    fb_unsubscribe(arg, req_id, list, addr, msgid, "one-click", engine_http_unsub_done);
}

/* engine_http_metrics - Prometheus text exposition of the counters status shows */
static void engine_http_metrics(void *arg, struct evbuffer *out)
{
    struct engine *eng = arg;
    struct spool_totals t;
    memset(&t, 0, sizeof t);
    spool_totals(eng->spool, &t);
    evbuffer_add_printf(out,
                        "# TYPE volley_queue_messages gauge\nvolley_queue_messages %llu\n"
                        "# TYPE volley_queue_recipients gauge\nvolley_queue_recipients %llu\n"
                        "# TYPE volley_spool_used_bytes gauge\nvolley_spool_used_bytes %llu\n"
                        "# TYPE volley_accepted_messages_total counter\n"
                        "volley_accepted_messages_total %llu\n"
                        "# TYPE volley_accepted_recipients_total counter\n"
                        "volley_accepted_recipients_total %llu\n"
                        "# TYPE volley_rejected_messages_total counter\n"
                        "volley_rejected_messages_total %llu\n",
                        (unsigned long long)t.msgs, (unsigned long long)t.rcpts,
                        (unsigned long long)t.used_bytes,
                        (unsigned long long)eng->stats.accepted_msgs,
                        (unsigned long long)eng->stats.accepted_rcpts,
                        (unsigned long long)eng->stats.rejected);
}

/* engine_http_start - the HTTP endpoint on feedback.http_listen ("ip:port") */
static int engine_http_start(struct engine *eng)
{
    const char *spec = eng->conf->feedback_http_listen;
    if (!*spec) return 0;
    char host[128];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof host) {
        log_msg(LOG_ERROR, "listen", "feedback.http_listen: bad address \"%s\"", spec);
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    char err[256];
    struct http_callbacks cb = {engine_http_unsub, engine_http_metrics, eng};
    eng->http = http_start(eng->base, host, atoi(colon + 1), &eng->verp_key, &cb, err, sizeof err);
    if (!eng->http) {
        log_msg(LOG_ERROR, "listen", "feedback.http_listen %s: %s", spec, err);
        return -1;
    }
    log_msg(LOG_NOTICE, "listen", "http on %s", spec);
    return 0;
}

int engine_listen(struct engine *eng)
{
    if (smtpd_listen(eng) < 0 || ctl_listen(eng) < 0 || engine_http_start(eng) < 0)
        return -1;
    return 0;
}

void engine_run(struct engine *eng)
{
    struct spool_totals t;
    spool_totals(eng->spool, &t);
    log_event(LOG_NOTICE, "started",
              json_pack("{s:s, s:I, s:I, s:I}", "spool", eng->conf->spool_dir, "messages",
                        (json_int_t)t.msgs, "recipients", (json_int_t)t.rcpts, "pid",
                        (json_int_t)getpid()));
    event_base_dispatch(eng->base);
    log_msg(LOG_NOTICE, "stopped", "event loop ended");
}

void engine_free(struct engine *eng)
{
    if (!eng)
        return;
    if (eng->base) {
        smtpd_free(eng);
        ctl_shutdown(eng);
    }
    if (eng->http) http_free(eng->http);
    eng->http = NULL;
    if (eng->sent_purge) event_free(eng->sent_purge);
    /* workers first: they wait for their own spool commits */
    int n = eng->nworkers;
    eng->nworkers = 0;
    for (int i = 0; i < n; i++)
        worker_stop(eng->workers[i]);
    free(eng->workers);
    signpool_free(eng->signpool); /* stopped workers have no task in flight */
    eng->signpool = NULL;
    if (eng->tls_client)
        SSL_CTX_free(eng->tls_client);
    engine_rules_unref(eng->rules);
    /* spool_close runs every queued op to completion; their jobs land in the
     * mailbox and are completed (with their requesters gone) below. */
    spool_close(eng->spool);
    warmup_free(eng->warmup);
    mbox_free(eng->mbox);
    if (eng->exit_poll)
        event_free(eng->exit_poll);
    if (eng->sig_term) {
        event_free(eng->sig_term);
        event_free(eng->sig_int);
        event_free(eng->sig_hup);
    }
    if (eng->base)
        event_base_free(eng->base);
    free(eng->reg);
    free(eng);
}
