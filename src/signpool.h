/*
 * signpool - DKIM signing threads, so that a delivery loop does not sign.
 *
 * A delivery worker hands a task (the text to send, the keys, the parameters) to
 * the pool and goes on with its connections; a pool thread signs and posts the
 * task back to the worker's mailbox, where the worker lets the text go out.  smtpc
 * sends MAIL, RCPT and DATA meanwhile (smtpc_txn.content_pending), so the
 * signature is made during the round trip to the 354.
 *
 * Why threads: an RSA-2048 signature costs about a millisecond of CPU, so a loop
 * that signs tops out near a thousand messages a second however many cores the
 * machine has; Ed25519 is ~50 times cheaper, but it still shares the loop's core
 * with everything else the loop does.
 *
 * Ownership: from signpool_submit() until the task's msg.run() on the submitter's
 * loop, the pool owns the task and everything in it; the submitter touches
 * nothing but fields the pool never reads (its own wrapper around the task).
 * Keys must stay alive until run(): the submitter holds a reference to the set
 * they belong to.  Each pool thread has a body memo of its own (a memo is not
 * shared between threads).
 */
#ifndef VOLLEY_SIGNPOOL_H
#define VOLLEY_SIGNPOOL_H

#include "dkim.h"
#include "mbox.h"
#include "util.h"

#define SIGNPOOL_MAX_KEYS 64 /* signatures on one message */

struct signpool_task {
    struct mbox_msg msg; /* msg.run is called on the reply mailbox's loop when done */
    struct mbox *reply;
    struct signpool_task *next; /* the pool's queue */

    /* in */
    const struct dkim_key *keys[SIGNPOOL_MAX_KEYS];
    int nkeys;
    struct dkim_params params; /* bh and memo are set by signpool_sign() */
    bool use_bh;               /* consult and fill bh (the message's body hash) */
    struct dkim_body_cache bh;
    struct vbuf text; /* the text to sign (given back as it came) */

    /* out */
    struct vbuf sigs;             /* the DKIM-Signature fields, to go on top of text */
    bool ok[SIGNPOOL_MAX_KEYS];   /* key i signed */
    char *err[SIGNPOOL_MAX_KEYS]; /* why key i did not (allocated), NULL when it did */
};

struct signpool;

/* signpool_new - start nthreads (1 or more) signing threads, each with a body memo
 * of memo_bodies bodies up to memo_max octets (dkim_body_memo_new); NULL with err
 * set */
struct signpool *signpool_new(int nthreads, size_t memo_bodies, size_t memo_max, char *err,
                              size_t errn);
/* signpool_submit - sign t on a pool thread, then post it to t->reply */
void signpool_submit(struct signpool *p, struct signpool_task *t);
/* signpool_free - stop and join the threads; no task may be in flight */
void signpool_free(struct signpool *p);

/*
 * signpool_sign - sign t here and now, with memo (may be NULL) as its body memo:
 * what a pool thread does, for callers that sign on their own thread.  A key that
 * fails adds nothing to t->sigs and says why in t->err[i].
 */
void signpool_sign(struct signpool_task *t, struct dkim_body_memo *memo);
/* signpool_task_clear - free t's text, signatures and error strings (t itself is the
 * caller's) */
void signpool_task_clear(struct signpool_task *t);

#endif
