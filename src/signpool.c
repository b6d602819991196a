/*
 * signpool - DKIM signing threads (see signpool.h).
 *
 * One FIFO under a mutex feeds every thread.  A submitter signals the condition
 * only when a thread sleeps on it, and a thread takes the next task without
 * sleeping while there is one, so a burst of submissions costs few wake-ups; the
 * completions go back through the submitter's mailbox, which wakes its loop once
 * per burst as well.
 */
#include "signpool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct signpool_thread {
    struct signpool *pool;
    pthread_t id;
    struct dkim_body_memo *memo; /* this thread's own: a memo is not thread-safe */
};

struct signpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct signpool_task *head, *tail;
    int sleeping; /* threads waiting on cv */
    bool stopping;
    int nthreads;
    struct signpool_thread *threads;
};

void signpool_sign(struct signpool_task *t, struct dkim_body_memo *memo)
{
    struct dkim_params p = t->params;
    p.bh = t->use_bh ? &t->bh : NULL;
    p.memo = memo;
    vbuf_init(&t->sigs, SIZE_MAX);
    for (int i = 0; i < t->nkeys; i++) {
        char err[200];
        t->ok[i] =
            dkim_sign(t->keys[i], &p, t->text.data, t->text.len, &t->sigs, err, sizeof err) == 0;
        t->err[i] = t->ok[i] ? NULL : xstrdup(err);
    }
}

void signpool_task_clear(struct signpool_task *t)
{
    vbuf_free(&t->text);
    vbuf_free(&t->sigs);
    for (int i = 0; i < t->nkeys; i++) {
        free(t->err[i]);
        t->err[i] = NULL;
    }
}

static void *signpool_main(void *arg)
{
    struct signpool_thread *th = arg;
    struct signpool *p = th->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping) {
            p->sleeping++;
            pthread_cond_wait(&p->cv, &p->mu);
            p->sleeping--;
        }
        if (!p->head) break; /* stopping, and nothing left */
        struct signpool_task *t = p->head;
        p->head = t->next;
        if (!p->head) p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        signpool_sign(t, th->memo);
        mbox_post(t->reply, &t->msg);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct signpool *signpool_new(int nthreads, size_t memo_bodies, size_t memo_max, char *err,
                              size_t errn)
{
    if (nthreads < 1) {
        snprintf(err, errn, "signing pool: %d threads", nthreads);
        return NULL;
    }
    struct signpool *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = xcalloc((size_t)nthreads, sizeof *p->threads);
    for (int i = 0; i < nthreads; i++) {
        struct signpool_thread *th = &p->threads[i];
        th->pool = p;
        th->memo = dkim_body_memo_new(memo_bodies, memo_max); /* NULL: no memo */
        if (pthread_create(&th->id, NULL, signpool_main, th) != 0) {
            snprintf(err, errn, "signing pool: cannot start thread %d", i + 1);
            dkim_body_memo_free(th->memo);
            signpool_free(p);
            return NULL;
        }
        p->nthreads++;
        char name[16]; /* for top -H and ps -L */
        snprintf(name, sizeof name, "dkim-sign/%d", i % 100);
        pthread_setname_np(th->id, name);
    }
    return p;
}

void signpool_submit(struct signpool *p, struct signpool_task *t)
{
    t->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->tail) p->tail->next = t;
    else p->head = t;
    p->tail = t;
    if (p->sleeping > 0) pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void signpool_free(struct signpool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++) {
        pthread_join(p->threads[i].id, NULL);
        dkim_body_memo_free(p->threads[i].memo);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}
