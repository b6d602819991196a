/*
 * mbox - a mailbox that hands work from any thread to one libevent loop.
 *
 * Producers (the spool writer, other loops) push a struct mbox_msg; the loop that
 * owns the mailbox runs msg->run(ctx, msg) on its own thread, in posting order.
 * An eventfd wakes the loop once per non-empty transition, so a burst of posts
 * costs one wake-up.  The message is owned by its poster until run() is called,
 * and by run() from then on.
 */
#ifndef VOLLEY_MBOX_H
#define VOLLEY_MBOX_H

#include <event2/event.h>

struct mbox_msg {
    void (*run)(void *ctx, struct mbox_msg *m);
    struct mbox_msg *next;
};

struct mbox;

/* mbox_new - a mailbox served by base; ctx is passed to every run(); NULL on error */
struct mbox *mbox_new(struct event_base *base, void *ctx);
/* mbox_free - run what is still queued, then free (on the owning thread) */
void mbox_free(struct mbox *mb);
/* mbox_post - queue m for the owning loop; callable from any thread */
void mbox_post(struct mbox *mb, struct mbox_msg *m);
/* mbox_drain - run every queued message now (owning thread only) */
void mbox_drain(struct mbox *mb);

#endif
