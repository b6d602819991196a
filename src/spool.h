/*
 * spool - the LMDB message store: the only durable state of volleyd.
 *
 * One LMDB environment (spool.dir/data.mdb) with these named databases; every
 * integer in a key is big-endian so LMDB's byte order is numeric order:
 *
 *   msg       id(8)                 -> struct spool_msg_rec + sender + campaign +
 *                                      client + helo + content (the message bytes as
 *                                      accepted, CRLF lines, dot-stuffing removed,
 *                                      X-Volley-* control headers taken off)
 *   rcpt      id(8) idx(4)          -> struct spool_rcpt_rec + address + last reply
 *   due       next_ms(8) id(8) idx(4) -> empty: every QUEUED recipient, by next try
 *   addr      domain NUL local NUL id(8) idx(4) -> empty: every recipient by its
 *                                      lower-cased address, so a suppression finds
 *                                      the queued recipients it matches at once
 *   supp      scope NUL target      -> suppression record (suppress.h)
 *   sent      id(8) idx(4)          -> struct spool_sent_rec + address, campaign,
 *                                      list, sender: delivered recipients, kept
 *                                      feedback.sent_retention so that a late bounce
 *                                      or complaint maps back to them
 *   campaign  name                  -> struct spool_campaign_rec (counters)
 *   counter   opaque key (<= 255)   -> uint64 (big-endian): named counters that must
 *                                      survive a restart, e.g. a warm-up source's
 *                                      messages today; changed only by adding
 *   meta      "schema"              -> uint32 schema version (SPOOL_SCHEMA)
 *
 * Invariants, kept by doing every mutation in one writer transaction:
 *   - a msg record exists iff at least one rcpt record with its id exists;
 *     recipients that reach a final state are removed, and the last one takes the
 *     message with it;
 *   - a rcpt in state QUEUED has exactly one due entry (at its next_ms); a HELD rcpt
 *     has none;
 *   - every rcpt has exactly one addr entry, and every addr entry a rcpt.
 *
 * Writes go through the writer thread (spool_writer.c): callers fill a struct
 * spool_op and spool_submit() it; the writer gathers requests for up to
 * group_commit_usec or group_commit_max of them, applies them in ONE transaction,
 * commits (one fsync unless sync is off), and only then calls each op's done()
 * callback, on the writer thread.  A caller may therefore acknowledge (250) from
 * done(): the data is on disk.  Reads (spool_walk, spool_msg_load, spool_totals)
 * run in the caller's thread in their own read-only transaction and never block the
 * writer.
 *
 * This module includes no engine or event-loop header.
 */
#ifndef VOLLEY_SPOOL_H
#define VOLLEY_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPOOL_SCHEMA 1

/* Op results (in spool_op.result) */
#define SPOOL_OK 0
#define SPOOL_EFULL 1   /* map or disk full, or the reserve reached: 452 4.3.1 */
#define SPOOL_EIO 2     /* any other storage failure: 451 4.3.0 */
#define SPOOL_ENOENT 3  /* selector matched nothing */

enum SPOOL_RCPT_STATE {
    SPOOL_RCPT_QUEUED = 0, /* waiting for its next try (attempts > 0: deferred) */
    SPOOL_RCPT_HELD = 1,   /* held by an operator: not tried until released */
};
const char *spool_rcpt_state_str(enum SPOOL_RCPT_STATE s);

/* message flags */
#define SPOOL_MSG_8BIT 0x1     /* BODY=8BITMIME */
#define SPOOL_MSG_SMTPUTF8 0x2 /* SMTPUTF8 given */

struct spool;

struct spool_params {
    const char *dir;
    uint64_t map_size;        /* bytes */
    unsigned reserve_percent; /* inserts refused above 100 - this */
    bool sync;                /* fsync each commit */
    unsigned group_usec;      /* gather window */
    unsigned group_max;       /* ops per transaction */
};

/*
 * spool_open - open or create the environment and start the writer thread.
 * On failure returns -1 and describes it in err.  The largest message id found is
 * fed to msgid_floor().
 */
int spool_open(struct spool **out, const struct spool_params *p, char *err, size_t errsz);
/* spool_close - finish every submitted op (their done() runs), stop the writer,
 * close the environment */
void spool_close(struct spool *sp);

/* A message to insert.  Owned by the submitter; the writer only reads it. */
struct spool_msg {
    uint64_t id;
    int64_t created_ms;
    uint32_t flags;
    const char *sender; /* "" = null reverse-path */
    const char *campaign; /* "" = none */
    const char *client; /* peer, e.g. "127.0.0.1" or "unix" */
    const char *helo;
    const char *pool; /* shaping pool asked for (X-Volley-Pool); NULL or "" = by rule */
    const char *list; /* mailing list (X-Volley-List); NULL or "" = none */
    const char *const *rcpts;
    uint32_t nrcpt;
    const uint8_t *content;
    size_t content_len;
};

enum SPOOL_OP {
    SPOOL_OP_INSERT,  /* msg */
    SPOOL_OP_HOLD,    /* sel: QUEUED -> HELD */
    SPOOL_OP_RELEASE, /* sel: HELD -> QUEUED, due now */
    SPOOL_OP_DELETE,  /* sel: remove recipients (and messages left empty) */
    SPOOL_OP_OUTCOMES, /* outcomes: delivery results of recipients */
    SPOOL_OP_RETRY,   /* sel: QUEUED recipients due now (volleyctl retry) */
    SPOOL_OP_SUPPRESS, /* supp/soft: suppression changes and the purge they cause */
    SPOOL_OP_SENT_PURGE, /* sel.id: drop sent records of messages older than that id */
};

/* What a delivery attempt did to one recipient. */
enum SPOOL_OUTCOME {
    SPOOL_OUT_DELIVERED, /* final: removed */
    SPOOL_OUT_BOUNCED,   /* final: removed */
    SPOOL_OUT_EXPIRED,   /* final: removed */
    SPOOL_OUT_DEFERRED,  /* attempts + 1, next try at next_ms, last reply kept */
};
const char *spool_outcome_str(enum SPOOL_OUTCOME o);

struct spool_outcome {
    uint64_t id;
    uint32_t idx;
    enum SPOOL_OUTCOME kind;
    int64_t next_ms;   /* DEFERRED */
    const char *reply; /* last reply / diagnostic, kept for show */
    bool applied;      /* out: the recipient was still there (not deleted meanwhile) */
};
const char *spool_op_str(enum SPOOL_OP op);

/*
 * A suppression change (SPOOL_OP_SUPPRESS, or riding on OUTCOMES).  PUT stores an
 * entry and, with purge, removes the queued recipients it matches (scope "": every
 * one at target; "domain:D": those of mail from D; "list:L": those of list L);
 * DEL removes one entry; FORGET removes target's entries in every scope, stores
 * the hashed entry given in rec under scope "" and purges target everywhere.
 */
enum SPOOL_SUPP_ACT { SPOOL_SUPP_PUT, SPOOL_SUPP_DEL, SPOOL_SUPP_FORGET };
struct spool_supp {
    enum SPOOL_SUPP_ACT act;
    const char *scope;  /* PUT, DEL: "", "domain:D", "list:L" */
    const char *target; /* normalised address, "@domain" or "#hash" */
    const uint8_t *rec; /* PUT, FORGET: suppress_rec_encode() bytes */
    size_t reclen;
    const char *hashed; /* FORGET: the "#hash" target to store */
    bool purge;
    bool applied;       /* out: PUT stored a new entry, DEL/FORGET removed something */
};

/*
 * Repeated soft bounces: count one for addr on day (UTC day number); when the
 * count over the last window_days days reaches limit, store rec as a global entry
 * for addr and purge its queued recipients.
 */
struct spool_soft {
    const char *addr; /* normalised */
    int64_t day;
    int limit;
    int window_days;
    const uint8_t *rec;
    size_t reclen;
    bool suppressed; /* out */
};

/* A queued recipient a suppression removed (for its accounting record). */
struct spool_purged {
    uint64_t id;
    uint32_t idx;
    uint32_t cause; /* index of the supp entry that removed it; nsupp + i: soft[i] */
    char addr[320];
    char campaign[130];
    char list[130];
    char sender[320];
};

/* An addition to a named counter (the counter db), applied with an OUTCOMES op so
 * that a count and the outcomes it counts commit together. */
#define SPOOL_COUNT_KEY_MAX 255
struct spool_count {
    const uint8_t *key;
    size_t keylen; /* 1 .. SPOOL_COUNT_KEY_MAX */
    uint64_t add;
};

enum SPOOL_SEL { SPOOL_SEL_ID, SPOOL_SEL_DOMAIN, SPOOL_SEL_CAMPAIGN };
const char *spool_sel_str(enum SPOOL_SEL s);

struct spool_sel {
    enum SPOOL_SEL kind;
    uint64_t id;     /* SPOOL_SEL_ID */
    char text[256];  /* domain (lowercase) or campaign */
};

/*
 * struct spool_op - one write request.  The submitter owns it and must keep it (and
 * what it points to) alive until done() has been called; done() runs on the writer
 * thread and must only hand the result over (post it to a loop), not block.
 */
struct spool_op {
    enum SPOOL_OP type;
    /* INSERT: the message.  OUTCOMES: an optional notice (a DSN to the sender),
     * stored in the same transaction when at least one bounced or expired outcome
     * applied and the spool has room; msg_stored says whether it was */
    const struct spool_msg *msg;
    bool msg_stored;
    struct spool_sel sel;        /* HOLD, RELEASE, DELETE */
    struct spool_outcome *outcomes; /* OUTCOMES */
    uint32_t noutcomes;
    const struct spool_count *counts; /* OUTCOMES: counter additions, same transaction */
    uint32_t ncounts;
    bool keep_sent;              /* OUTCOMES: store a sent record per delivered rcpt */
    struct spool_supp *supp;     /* SUPPRESS, OUTCOMES: suppression changes */
    uint32_t nsupp;
    struct spool_soft *soft;     /* SUPPRESS, OUTCOMES: soft-bounce counts */
    uint32_t nsoft;
    struct spool_purged *purged; /* out: recipients removed by suppressions (the
                                    submitter frees it with free()) */
    uint32_t npurged;
    int result;                  /* SPOOL_OK or SPOOL_E* */
    uint64_t count;              /* recipients affected */
    uint64_t msgs;               /* messages touched (DELETE: messages removed) */
    void (*done)(struct spool_op *op, void *arg);
    void *arg;
    struct spool_op *next; /* writer's queue link */
};

/* spool_submit - queue op for the writer; 0, or -1 if the spool is closing */
int spool_submit(struct spool *sp, struct spool_op *op);

/* Totals for status: O(1), from LMDB's own page statistics. */
struct spool_totals {
    uint64_t msgs;
    uint64_t rcpts;
    uint64_t due;      /* QUEUED recipients */
    uint64_t used_bytes;
    uint64_t map_bytes;
    uint64_t commits;  /* since start */
    uint64_t ops;      /* since start */
};
int spool_totals(struct spool *sp, struct spool_totals *t);

/* Read-side views; strings are copies owned by the view (spool_*_free). */
struct spool_rcpt_info {
    uint32_t idx;
    enum SPOOL_RCPT_STATE state;
    uint16_t attempts;
    int64_t next_ms;
    char *addr;
    const char *domain; /* points into addr */
    char *last_reply;
};

struct spool_msg_info {
    uint64_t id;
    int64_t created_ms;
    uint32_t flags;
    uint32_t nrcpt_total; /* at injection */
    char *sender;
    char *campaign;
    char *client;
    char *helo;
    char *pool;
    char *list;
    uint8_t *content; /* only with want_content */
    size_t content_len;
    struct spool_rcpt_info *rcpts; /* current recipients */
    uint32_t nrcpt;
};

/*
 * spool_msg_load - load message id with its current recipients (and content when
 * want_content) into *out.  Returns 0, -1 with SPOOL_ENOENT in *why if absent, or -1
 * with SPOOL_EIO.  Free with spool_msg_info_free().
 */
int spool_msg_load(struct spool *sp, uint64_t id, bool want_content, struct spool_msg_info *out,
                   int *why);
void spool_msg_info_free(struct spool_msg_info *m);

/*
 * spool_walk - call fn for every recipient in id order with its message (content
 * not loaded).  Pointers are valid only during the call.  fn returns 0 to go on, 1
 * to stop.  Returns 0 or -1 on a read error.
 */
typedef int (*spool_walk_fn)(const struct spool_msg_info *m, const struct spool_rcpt_info *r,
                             void *arg);
int spool_walk(struct spool *sp, spool_walk_fn fn, void *arg);

/* A due-index entry: a QUEUED recipient and when it is next due. */
struct spool_due_item {
    int64_t next_ms;
    uint64_t id;
    uint32_t idx;
};

/*
 * spool_due_scan - up to max due entries in key order, strictly after *after (or
 * from the first entry with next_ms >= from_ms when after is NULL) and with
 * next_ms <= until_ms.  Returns how many were stored in out, -1 on a read error.
 */
int spool_due_scan(struct spool *sp, const struct spool_due_item *after, int64_t from_ms,
                   int64_t until_ms, struct spool_due_item *out, size_t max);

/*
 * spool_load_rcpts - in one read transaction, call fn for each of items[0..n) with
 * its message (no content, no recipient list) and its recipient record; items whose
 * recipient is gone are skipped, and so are those whose recipient domain want (when
 * not NULL) turns down - before anything is decoded, so a delivery worker pays
 * little for the other workers' domains.  Views are valid only during the call.
 */
typedef void (*spool_load_fn)(void *arg, const struct spool_due_item *item,
                              const struct spool_msg_info *m, const struct spool_rcpt_info *r);
/* domain: the octets after the address's last '@' (not NUL-terminated, as stored) */
typedef bool (*spool_want_fn)(void *arg, const char *domain, size_t len);
int spool_load_rcpts(struct spool *sp, const struct spool_due_item *items, size_t n,
                     spool_want_fn want, spool_load_fn fn, void *arg);

/*
 * spool_msg_content - copy the stored bytes of message id into out (caller-owned,
 * reset first).  0, or -1 (gone or read error).
 */
struct vbuf;
int spool_msg_content(struct spool *sp, uint64_t id, struct vbuf *out);
/*
 * spool_msg_content_live - the same, appended to out (not reset), and in the same
 * read transaction whether each of
 * recipients idx[0..n) is still stored (live[i]): one a suppression purged or an
 * operator deleted since it was loaded must not be sent
 */
int spool_msg_content_live(struct spool *sp, uint64_t id, struct vbuf *out, const uint32_t *idx,
                           uint32_t n, bool *live);

/*
 * spool_verify - check the invariants listed above over the whole spool; returns
 * the number of violations (0 = consistent) and describes the first in err, -1 on
 * a read error.
 */
long spool_verify(struct spool *sp, char *err, size_t errsz);

/*
 * spool_counts_scan - call fn for every counter whose key starts with prefix (in key
 * order) with its value; fn returns 0 to go on, 1 to stop.  0, or -1 on a read error.
 */
typedef int (*spool_count_fn)(void *arg, const uint8_t *key, size_t keylen, uint64_t value);
int spool_counts_scan(struct spool *sp, const uint8_t *prefix, size_t plen, spool_count_fn fn,
                      void *arg);

/*
 * spool_supp_check - is addr (normalised) suppressed for mail from sender_domain
 * (may be "") in list (may be "")?  Looks at the address, its domain and its hash
 * in the global scope, the sender domain's scope and the list's scope; expired
 * entries do not count.  1 with the record and "scope target" that matched, 0 when
 * not suppressed, -1 on a read error.
 */
struct suppress_rec;
int spool_supp_check(struct spool *sp, const char *addr, const char *sender_domain,
                     const char *list, int64_t now, struct suppress_rec *rec, char *matched,
                     size_t matchedn);
/* spool_supp_walk - every entry (of one scope when scope is not NULL), in key
 * order, starting after the entry (after_scope, after_target) when after_target is
 * not NULL (paging); fn returns 0 to go on, 1 to stop.  0 or -1. */
typedef int (*spool_supp_fn)(void *arg, const char *scope, const char *target,
                             const struct suppress_rec *rec);
int spool_supp_walk(struct spool *sp, const char *scope, const char *after_scope,
                    const char *after_target, spool_supp_fn fn, void *arg);

/* A delivered recipient remembered for late feedback (spool_sent_get). */
struct spool_sent {
    char addr[320];
    char campaign[130];
    char list[130];
    char sender[320];
};
/* spool_sent_get - 0 with the record, -1 when there is none */
int spool_sent_get(struct spool *sp, uint64_t id, uint32_t idx, struct spool_sent *out);

/* spool_domain_of - the domain part of addr (after the last '@'), or "" */
const char *spool_domain_of(const char *addr);

#endif
