/*
 * worker - a delivery thread: its own event_base, DNS resolver, mailbox and
 * scheduler (sched_).  A destination domain belongs to exactly one worker (hash of
 * its name), so nothing on the delivery path is shared between threads.
 *
 * Other threads talk to a worker only through its mailbox: worker_poke() (new mail),
 * worker_call() (run a function on the worker and get its result back on another
 * loop), worker_stop().
 */
#ifndef VOLLEY_WORKER_H
#define VOLLEY_WORKER_H

#include "mbox.h"

#include <jansson.h>
#include <openssl/ssl.h>
#include <stddef.h>

struct engine;
struct worker;
struct sched;

/* worker_start - create and start worker index; NULL + err on failure */
struct worker *worker_start(struct engine *eng, SSL_CTX *tls, int index, char *err,
                            size_t errsz);
/* worker_poke - new mail may be due (any thread; coalesced) */
void worker_poke(struct worker *w);
/*
 * worker_call - run fn(sched, arg) on the worker's thread; then back on mailbox
 * `reply` run done(ctx, result, arg) with what fn returned (a JSON value whose
 * ownership passes to done).  Any thread.
 */
void worker_call(struct worker *w, json_t *(*fn)(struct sched *s, void *arg), void *arg,
                 struct mbox *reply, void (*done)(void *ctx, json_t *result, void *arg));
/* worker_stop - stop delivering (in-flight transactions are abandoned and stay
 * queued), wait for pending spool commits, join the thread, free.  Front thread. */
void worker_stop(struct worker *w);

#endif
