/*
 * spool_int - what spool.c (environment, records, reads) and spool_writer.c (the
 * writer thread) share.  Not for other modules.
 */
#ifndef VOLLEY_SPOOL_INT_H
#define VOLLEY_SPOOL_INT_H

#include "spool.h"

#include <lmdb.h>
#include <pthread.h>

#define SPOOL_RCPT_KEY_LEN 12 /* id(8) idx(4) */
#define SPOOL_DUE_KEY_LEN 20  /* next_ms(8) id(8) idx(4) */
#define SPOOL_RESULT_PENDING (-1)

/* Fixed head of a msg value; strings and content follow in the listed order. */
struct spool_msg_rec {
    uint32_t version;
    uint32_t flags;
    int64_t created_ms;
    uint32_t nrcpt;
    uint16_t sender_len;
    uint16_t campaign_len;
    uint16_t client_len;
    uint16_t helo_len;
    uint16_t pool_len; /* was padding (always 0) before pools: old records read as "" */
    uint16_t pad;
    uint64_t content_len;
};

/* spool_rec_strs - bytes of the strings between the fixed head and the content */
static inline size_t spool_rec_strs(const struct spool_msg_rec *r)
{
    return (size_t)r->sender_len + r->campaign_len + r->client_len + r->helo_len + r->pool_len;
}

/* Fixed head of a rcpt value; address and last reply follow. */
struct spool_rcpt_rec {
    uint8_t state;
    uint8_t pad;
    uint16_t attempts;
    uint16_t addr_len;
    uint16_t reply_len;
    int64_t next_ms;
};

struct spool_campaign_rec {
    uint64_t msgs;
    uint64_t rcpts;
    int64_t first_ms;
    int64_t last_ms;
};

struct spool {
    MDB_env *env;
    MDB_dbi db_msg, db_rcpt, db_due, db_supp, db_campaign, db_meta, db_counter;
    struct spool_params p;
    char *dir;
    int lock_fd;
    size_t page_size;

    /* writer queue, guarded by mu */
    pthread_t writer;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct spool_op *head, **tail;
    size_t queued;
    bool stopping;
    bool writer_started;

    /* statistics, written by the writer, read racily by status */
    uint64_t n_commits;
    uint64_t n_ops;
};

void spool_rcpt_key(uint8_t *k, uint64_t id, uint32_t idx);
void spool_due_key(uint8_t *k, int64_t next_ms, uint64_t id, uint32_t idx);

/* spool_writer_start / spool_writer_stop - run and drain the writer thread */
int spool_writer_start(struct spool *sp);
void spool_writer_stop(struct spool *sp);

#endif
