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
    uint16_t list_len; /* likewise before lists */
    uint64_t content_len;
};

/* spool_rec_strs - bytes of the strings between the fixed head and the content */
static inline size_t spool_rec_strs(const struct spool_msg_rec *r)
{
    return (size_t)r->sender_len + r->campaign_len + r->client_len + r->helo_len + r->pool_len +
           r->list_len;
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

/* Fixed head of a sent value; address, campaign, list, sender follow. */
struct spool_sent_rec {
    uint16_t addr_len, campaign_len, list_len, sender_len;
};

#define SPOOL_ADDR_KEY_MAX 600 /* domain NUL local NUL id(8) idx(4); addresses <= 512 */

struct spool_campaign_rec {
    uint64_t msgs;
    uint64_t rcpts;
    int64_t first_ms;
    int64_t last_ms;
};

struct spool {
    MDB_env *env;
    MDB_dbi db_msg, db_rcpt, db_due, db_supp, db_campaign, db_meta, db_counter, db_addr, db_sent;
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
/* spool_addr_key - the addr index key of address a (al bytes, any case); its
 * length, 0 when a is not an address or too long */
size_t spool_addr_key(uint8_t *k, const char *a, size_t al, uint64_t id, uint32_t idx);
/* spool_addr_prefix - the key prefix of every recipient at a normalised address
 * ("local@domain": domain NUL local NUL) or domain ("@domain": domain NUL) */
size_t spool_addr_prefix(uint8_t *k, size_t n, const char *target);

/* The strings of a msg value, pointing into it (not NUL-terminated). */
struct spool_msg_view {
    const char *sender, *campaign, *list;
    size_t sender_len, campaign_len, list_len;
};
/* spool_msg_view - -1 when v is not a message record */
int spool_msg_view(const MDB_val *v, struct spool_msg_view *out);

/* spool_rcpt_drop - remove recipient (id, idx) with its due and addr entries, and
 * the message with its last recipient (*msg_gone); writer thread only */
int spool_rcpt_drop(struct spool *sp, MDB_txn *txn, uint64_t id, uint32_t idx, bool *msg_gone);
/* spool_apply_supp - op's suppression changes, soft-bounce counts and purges
 * (spool_supp.c); writer thread only */
int spool_apply_supp(struct spool *sp, MDB_txn *txn, struct spool_op *op);
/* spool_apply_sent_purge - drop sent records of messages before op->sel.id */
int spool_apply_sent_purge(struct spool *sp, MDB_txn *txn, struct spool_op *op);
/* spool_put_sent - remember delivered recipient (id, idx) before it is dropped */
int spool_put_sent(struct spool *sp, MDB_txn *txn, uint64_t id, uint32_t idx);
void spool_due_key(uint8_t *k, int64_t next_ms, uint64_t id, uint32_t idx);

/* spool_writer_start / spool_writer_stop - run and drain the writer thread */
int spool_writer_start(struct spool *sp);
void spool_writer_stop(struct spool *sp);

#endif
