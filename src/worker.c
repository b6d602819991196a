/*
 * worker - delivery threads (see worker.h).
 */
#include "worker.h"
#include "dns.h"
#include "engine.h"
#include "log.h"
#include "sched_queue.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct worker {
    struct engine *eng;
    int index;
    pthread_t thread;
    struct event_base *base;
    struct mbox *mbox;
    struct dns *dns;
    struct sched *sched;
    char helo[256];
    atomic_int poke_pending;
    struct mbox_msg poke_msg;
    struct mbox_msg stop_msg;
};

struct worker_callreq {
    struct mbox_msg msg;
    struct worker *w;
    json_t *(*fn)(struct sched *s, void *arg);
    void *arg;
    struct mbox *reply;
    void (*done)(void *ctx, json_t *result, void *arg);
    json_t *result;
};

/* worker_poke_run - on the worker: the coalesced poke */
static void worker_poke_run(void *ctx, struct mbox_msg *m)
{
    struct worker *w = ctx;
    atomic_store(&w->poke_pending, 0);
    sched_poke(w->sched);
}

void worker_poke(struct worker *w)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&w->poke_pending, &expected, 1))
        mbox_post(w->mbox, &w->poke_msg);
}

/* worker_call_back - on the caller's loop: hand the result over, free the request */
static void worker_call_back(void *ctx, struct mbox_msg *m)
{
    struct worker_callreq *rq = (struct worker_callreq *)m;
    rq->done(ctx, rq->result, rq->arg);
    free(rq);
}

/* worker_call_run - on the worker: run the function, post the result back */
static void worker_call_run(void *ctx, struct mbox_msg *m)
{
    struct worker_callreq *rq = (struct worker_callreq *)m;
    struct worker *w = ctx;
    rq->result = rq->fn(w->sched, rq->arg);
    rq->msg.run = worker_call_back;
    mbox_post(rq->reply, &rq->msg);
}

void worker_call(struct worker *w, json_t *(*fn)(struct sched *s, void *arg), void *arg,
                 struct mbox *reply, void (*done)(void *ctx, json_t *result, void *arg))
{
    struct worker_callreq *rq = xcalloc(1, sizeof *rq);
    rq->w = w;
    rq->fn = fn;
    rq->arg = arg;
    rq->reply = reply;
    rq->done = done;
    rq->msg.run = worker_call_run;
    mbox_post(w->mbox, &rq->msg);
}

/* worker_stopped - the scheduler has no spool op left: leave the loop */
static void worker_stopped(void *arg)
{
    struct worker *w = arg;
    event_base_loopexit(w->base, NULL);
}

static void worker_stop_run(void *ctx, struct mbox_msg *m)
{
    struct worker *w = ctx;
    sched_stop(w->sched, worker_stopped, w);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

struct worker *worker_start(struct engine *eng, SSL_CTX *tls, int index, char *err, size_t errsz)
{
    const struct conf *c = eng->conf;
    struct worker *w = xcalloc(1, sizeof *w);
    w->eng = eng;
    w->index = index;
    w->poke_msg.run = worker_poke_run;
    w->stop_msg.run = worker_stop_run;
    w->base = event_base_new();
    if (!w->base) {
        snprintf(err, errsz, "worker %d: cannot create event base", index);
        free(w);
        return NULL;
    }
    w->mbox = mbox_new(w->base, w);
    struct dns_params dp = {
        .servers = (const char *const *)c->dns_servers,
        .nservers = c->dns_servers_count,
        .timeout_ms = (int)c->dns_timeout_ms,
        .tries = (int)c->dns_tries,
        .min_ttl = (int)c->dns_min_ttl,
        .max_ttl = (int)c->dns_max_ttl,
        .neg_ttl = (int)c->dns_neg_ttl,
    };
    w->dns = dns_new(w->base, &dp, err, errsz);
    if (!w->mbox || !w->dns) {
        if (!w->mbox) snprintf(err, errsz, "worker %d: cannot create mailbox", index);
        if (w->dns) dns_free(w->dns);
        mbox_free(w->mbox);
        event_base_free(w->base);
        free(w);
        return NULL;
    }
    str_copy(w->helo, sizeof w->helo,
             *c->delivery_helo_name ? c->delivery_helo_name : eng->hostname);
    struct sched_params sp = {
        .base = w->base,
        .spool = eng->spool,
        .conf = c,
        .dns = w->dns,
        .tls_ctx = tls,
        .mbox = w->mbox,
        .signpool = eng->signpool,
        .worker_index = index,
        .nworkers = (int)c->delivery_workers,
        .helo_name = w->helo,
        .rules = engine_rules_ref(eng->rules),
        .warmup = eng->warmup,
        .verp = eng->verp_on ? &eng->verp_key : NULL,
    };
    w->sched = sched_new(&sp);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        snprintf(err, errsz, "worker %d: cannot start thread", index);
        sched_free(w->sched);
        dns_free(w->dns);
        mbox_free(w->mbox);
        event_base_free(w->base);
        free(w);
        return NULL;
    }
    char name[16]; /* for top -H and ps -L */
    snprintf(name, sizeof name, "deliver/%d", index % 100);
    pthread_setname_np(w->thread, name);
    return w;
}

void worker_stop(struct worker *w)
{
    if (!w) return;
    mbox_post(w->mbox, &w->stop_msg);
    pthread_join(w->thread, NULL);
    mbox_drain(w->mbox); /* what arrived after the loop ended still needs the scheduler */
    sched_free(w->sched);
    dns_free(w->dns);
    mbox_free(w->mbox);
    event_base_free(w->base);
    free(w);
}
