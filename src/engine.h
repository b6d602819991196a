/*
 * engine - the daemon's front loop: startup, signals, the spool mailbox, the id
 * registry and end-of-tick reaping.
 *
 * One libevent event_base runs injection (smtpd_), the control socket (ctl_) and,
 * later, the HTTP API.  The spool writer thread reports completions through a
 * mailbox (a mutex-guarded list plus an eventfd), so every completion runs on the
 * loop thread.  Completions name their requester by a 64-bit id from the registry,
 * never by pointer: a session that went away while its commit was in flight simply
 * is not found, and the job is freed.
 */
#ifndef VOLLEY_ENGINE_H
#define VOLLEY_ENGINE_H

#include "conf.h"
#include "mbox.h"
#include "spool.h"
#include "verp.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct engine;
struct shape_rules;

/*
 * engine_rules - a loaded shaping rule set shared by the front thread (pool names
 * at injection) and the delivery workers.  Immutable; SIGHUP loads a new one and
 * hands each worker a reference; the last holder frees it.
 */
struct engine_rules {
    struct shape_rules *rules;
    struct bounce_class *classify; /* bounce classification rules (bounce_class.h) */
    struct dkim_key **dkim_keys;   /* dkim.keys: signing keys by From domain */
    int ndkim_keys;
    struct dkim_key **dkim_always; /* dkim.always: keys that sign every message */
    int ndkim_always;
    struct dkim_hlist *dkim_hlist; /* dkim.headers (or the default list), prepared */
    int refs; /* atomic */
};
/* engine_rules_load - shaping rules, classification rules and DKIM keys named by c
 * (what SIGHUP rereads); NULL with "file[:line]: reason" in err */
struct engine_rules *engine_rules_load(const struct conf *c, char *err, size_t errsz);
struct engine_rules *engine_rules_ref(struct engine_rules *er);
void engine_rules_unref(struct engine_rules *er);

/*
 * struct engine_job - a spool op with a loop-side completion.  The submitter
 * allocates it (usually embedded in a larger struct), sets op and complete, and
 * calls engine_job_submit(); complete(ctx, job) runs on the loop that owns mbox
 * after the commit, and owns the job from then on (it frees it).
 */
struct engine_job {
    struct spool_op op;
    struct mbox_msg msg; /* posted to mbox by the writer thread */
    struct mbox *mbox;
    uint64_t owner; /* registry id of the requester */
    void (*complete)(void *ctx, struct engine_job *job);
};

/* engine_job_submit - hand job to the spool writer, completing on mb; 0, or -1 if
 * the spool is closing */
int engine_job_submit(struct spool *sp, struct mbox *mb, struct engine_job *job);

struct engine_stats {
    uint64_t sessions;        /* open injection sessions */
    uint64_t accepted_msgs;
    uint64_t accepted_rcpts;
    uint64_t rejected;        /* messages refused at end of DATA or by the spool */
    uint64_t inflight_bytes;  /* message bytes buffered by sessions */
};

struct signpool;

struct engine {
    struct event_base *base;
    struct conf *conf;
    struct spool *spool;
    int64_t started_ms;
    bool stopping;
    char hostname[256];
    struct engine_stats stats;

    struct mbox *mbox; /* spool completions and requests for the front loop */

    /* id registry: open addressing, ids never reused */
    uint64_t reg_next;
    struct engine_reg_slot *reg;
    size_t reg_cap, reg_used;

    struct event *sig_term, *sig_int, *sig_hup, *exit_poll;
    struct worker **workers;
    struct signpool *signpool; /* DKIM signing threads; NULL = workers sign */
    int nworkers;
    struct ssl_ctx_st *tls_client; /* SSL_CTX shared read-only by the workers */
    struct smtpd *smtpd;
    struct ctl *ctl;
    struct engine_rules *rules; /* the front thread's reference */
    struct warmup *warmup;      /* warm-up counts shared by the workers */
    struct verp_key verp_key;   /* signs VERP and unsubscribe tokens (feedback.secret) */
    bool verp_on;               /* feedback.secret is set */
    struct http *http;          /* the HTTP endpoint, NULL when off */
    struct event *sent_purge;   /* hourly: forget sent records past their retention */
};

/* engine_create - build the loop and open the spool; NULL + err on failure */
struct engine *engine_create(struct conf *conf, char *err, size_t errsz);
/* engine_listen - open the injection and control listeners; 0 or -1 (logged) */
int engine_listen(struct engine *eng);
/* engine_run - serve until SIGTERM/SIGINT and the last session has drained */
void engine_run(struct engine *eng);
/* engine_free - close listeners, drain the spool writer, free everything */
void engine_free(struct engine *eng);

/* engine_submit - engine_job_submit completing on the front loop (ctx = eng) */
int engine_submit(struct engine *eng, struct engine_job *job);

/* engine_reg_add - register ptr and return its new id (never 0) */
uint64_t engine_reg_add(struct engine *eng, void *ptr);
/* engine_reg_get - the pointer registered under id, or NULL once it is gone */
void *engine_reg_get(struct engine *eng, uint64_t id);
/* engine_reg_del - forget id */
void engine_reg_del(struct engine *eng, uint64_t id);

/* engine_poke_workers - new mail was committed: let the delivery workers look */
void engine_poke_workers(struct engine *eng);

/* engine_inflight_changed - called when stats.inflight_bytes dropped, to resume
 * sessions paused by max_inflight_mb */
void engine_inflight_changed(struct engine *eng);

#endif
