/*
 * mbox - cross-thread mailbox for a libevent loop (see mbox.h).
 */
#include "mbox.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct mbox {
    pthread_mutex_t mu;
    struct mbox_msg *head; /* pushed LIFO, reversed when drained */
    int fd;
    struct event *ev;
    void *ctx;
};

void mbox_post(struct mbox *mb, struct mbox_msg *m)
{
    pthread_mutex_lock(&mb->mu);
    int was_empty = mb->head == NULL;
    m->next = mb->head;
    mb->head = m;
    pthread_mutex_unlock(&mb->mu);
    if (was_empty) {
        uint64_t one = 1;
        /* EAGAIN: the counter is already non-zero, the loop wakes anyway */
        if (write(mb->fd, &one, sizeof one) < 0 && errno != EAGAIN)
            log_msg(LOG_ERROR, "mbox", "eventfd write: %s", strerror(errno));
    }
}

void mbox_drain(struct mbox *mb)
{
    pthread_mutex_lock(&mb->mu);
    struct mbox_msg *list = mb->head;
    mb->head = NULL;
    pthread_mutex_unlock(&mb->mu);
    struct mbox_msg *fifo = NULL;
    while (list) {
        struct mbox_msg *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        struct mbox_msg *next = fifo->next;
        fifo->run(mb->ctx, fifo);
        fifo = next;
    }
}

/* mbox_cb - eventfd readable: reset it and run the queue */
static void mbox_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_msg(LOG_ERROR, "mbox", "eventfd read: %s", strerror(errno));
    mbox_drain(arg);
}

struct mbox *mbox_new(struct event_base *base, void *ctx)
{
    struct mbox *mb = xcalloc(1, sizeof *mb);
    pthread_mutex_init(&mb->mu, NULL);
    mb->ctx = ctx;
    mb->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (mb->fd < 0) {
        free(mb);
        return NULL;
    }
    mb->ev = event_new(base, mb->fd, EV_READ | EV_PERSIST, mbox_cb, mb);
    event_add(mb->ev, NULL);
    return mb;
}

void mbox_free(struct mbox *mb)
{
    if (!mb) return;
    mbox_drain(mb);
    event_free(mb->ev);
    close(mb->fd);
    pthread_mutex_destroy(&mb->mu);
    free(mb);
}
