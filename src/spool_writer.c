/*
 * spool_writer - the one thread that writes the spool, with group commit.
 *
 * LMDB allows a single write transaction at a time, and its cost is dominated by
 * the fsync at commit.  So every mutation is a struct spool_op posted here; the
 * writer takes whatever has queued up (waiting at most group_usec for more once the
 * first arrives, at most group_max in all), applies the batch in one transaction
 * and commits once.  Only after the commit returns are the ops' done() callbacks
 * run, which is what lets injection answer 250 only for mail that is on disk.
 *
 * Failure scoping: an LMDB error poisons the whole transaction, so the writer
 * aborts, marks the guilty op failed, and re-applies the others in a fresh
 * transaction.  When the map is full every later insert of the batch fails too
 * (they would), but holds and deletes still go through: they are how space comes
 * back.  MDB_TXN_FULL (too many dirty pages) commits the prefix that fitted and
 * carries on with the rest.  A failed commit fails every op it carried; LMDB leaves
 * the last committed state intact, so nothing already acknowledged is harmed.
 *
 * Space reserve: a copy-on-write B-tree needs free pages even to delete, so inserts
 * stop once the estimated live size reaches (100 - reserve_percent)% of the map,
 * keeping room for the deletes and holds that free space.
 */
#include "spool_int.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* spool_result_of - map an LMDB/errno code to an op result */
static int spool_result_of(int rc)
{
    if (rc == MDB_MAP_FULL || rc == ENOSPC || rc == EDQUOT)
        return SPOOL_EFULL;
    return SPOOL_EIO;
}

/* spool_db_pages - pages held by one database's tree */
static uint64_t spool_db_pages(MDB_txn *txn, MDB_dbi dbi)
{
    MDB_stat st;
    if (mdb_stat(txn, dbi, &st) != 0)
        return 0;
    return st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
}

/*
 * spool_room_for - whether an insert of about bytes fits under the reserve, given
 * what this transaction has already added (*added, updated on success).  Live
 * pages are counted from the trees themselves (mdb_stat is O(1)) rather than from
 * the file's high-water mark, which never shrinks: pages freed by deletes are
 * reused, so space comes back as soon as mail leaves.
 */
static int spool_room_for(struct spool *sp, MDB_txn *txn, uint64_t bytes, uint64_t *added)
{
    MDB_envinfo info;
    mdb_env_info(sp->env, &info);
    uint64_t max_pages = info.me_mapsize / sp->page_size;
    uint64_t limit = max_pages * (100 - sp->p.reserve_percent) / 100;
    uint64_t need = bytes / sp->page_size + 4; /* overflow pages + tree growth */
    uint64_t live = 2; /* the two meta pages */
    MDB_dbi dbis[] = {0,           1,          sp->db_msg,     sp->db_rcpt,
                      sp->db_due,  sp->db_supp, sp->db_campaign, sp->db_meta,
                      sp->db_counter, sp->db_addr, sp->db_sent};
    for (size_t i = 0; i < ARRAY_LEN(dbis); i++)
        live += spool_db_pages(txn, dbis[i]);
    if (live + *added + need > limit)
        return 0;
    *added += need;
    return 1;
}

/* spool_apply_insert - store a new message, its recipients and their due entries */
static int spool_apply_insert(struct spool *sp, MDB_txn *txn, struct spool_op *op)
{
    const struct spool_msg *m = op->msg;
    struct spool_msg_rec rec;
    size_t sl = strlen(m->sender), cl = strlen(m->campaign), kl = strlen(m->client),
           hl = strlen(m->helo), pl = m->pool ? strlen(m->pool) : 0,
           ll = m->list ? strlen(m->list) : 0;
    if (sl > UINT16_MAX || cl > UINT16_MAX || kl > UINT16_MAX || hl > UINT16_MAX ||
        pl > UINT16_MAX || ll > UINT16_MAX)
        return EINVAL;
    memset(&rec, 0, sizeof rec);
    rec.version = 1;
    rec.flags = m->flags;
    rec.created_ms = m->created_ms;
    rec.nrcpt = m->nrcpt;
    rec.sender_len = (uint16_t)sl;
    rec.campaign_len = (uint16_t)cl;
    rec.client_len = (uint16_t)kl;
    rec.helo_len = (uint16_t)hl;
    rec.pool_len = (uint16_t)pl;
    rec.list_len = (uint16_t)ll;
    rec.content_len = m->content_len;

    uint8_t idb[8];
    put_be64(idb, m->id);
    MDB_val k = {8, idb}, v;
    v.mv_size = sizeof rec + sl + cl + kl + hl + pl + ll + m->content_len;
    v.mv_data = NULL;
    /* MDB_RESERVE: LMDB hands out the space and we copy once, straight into the map. */
    int rc = mdb_put(txn, sp->db_msg, &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
    if (rc)
        return rc;
    uint8_t *p = v.mv_data;
    memcpy(p, &rec, sizeof rec);
    p += sizeof rec;
    memcpy(p, m->sender, sl);
    p += sl;
    memcpy(p, m->campaign, cl);
    p += cl;
    memcpy(p, m->client, kl);
    p += kl;
    memcpy(p, m->helo, hl);
    p += hl;
    if (pl) memcpy(p, m->pool, pl);
    p += pl;
    if (ll) memcpy(p, m->list, ll);
    p += ll;
    if (m->content_len)
        memcpy(p, m->content, m->content_len);

    for (uint32_t i = 0; i < m->nrcpt; i++) {
        size_t al = strlen(m->rcpts[i]);
        struct spool_rcpt_rec rr;
        uint8_t rbuf[sizeof rr + 512];
        if (al > 512)
            return EINVAL;
        memset(&rr, 0, sizeof rr);
        rr.state = SPOOL_RCPT_QUEUED;
        rr.addr_len = (uint16_t)al;
        rr.next_ms = m->created_ms;
        memcpy(rbuf, &rr, sizeof rr);
        memcpy(rbuf + sizeof rr, m->rcpts[i], al);
        uint8_t rk[SPOOL_RCPT_KEY_LEN], dk[SPOOL_DUE_KEY_LEN];
        spool_rcpt_key(rk, m->id, i);
        MDB_val rkv = {sizeof rk, rk}, rvv = {sizeof rr + al, rbuf};
        if ((rc = mdb_put(txn, sp->db_rcpt, &rkv, &rvv, MDB_NOOVERWRITE)))
            return rc;
        spool_due_key(dk, m->created_ms, m->id, i);
        MDB_val dkv = {sizeof dk, dk}, empty = {0, NULL};
        if ((rc = mdb_put(txn, sp->db_due, &dkv, &empty, 0)))
            return rc;
        uint8_t ak[SPOOL_ADDR_KEY_MAX];
        MDB_val akv = {spool_addr_key(ak, m->rcpts[i], al, m->id, i), ak};
        if (akv.mv_size == 0)
            return EINVAL;
        if ((rc = mdb_put(txn, sp->db_addr, &akv, &empty, 0)))
            return rc;
    }

    if (cl) {
        struct spool_campaign_rec c;
        MDB_val ck = {cl, (void *)m->campaign}, cv;
        rc = mdb_get(txn, sp->db_campaign, &ck, &cv);
        if (rc == 0 && cv.mv_size == sizeof c) {
            memcpy(&c, cv.mv_data, sizeof c);
        } else {
            memset(&c, 0, sizeof c);
            c.first_ms = m->created_ms;
        }
        c.msgs++;
        c.rcpts += m->nrcpt;
        c.last_ms = m->created_ms;
        cv.mv_size = sizeof c;
        cv.mv_data = &c;
        if ((rc = mdb_put(txn, sp->db_campaign, &ck, &cv, 0)))
            return rc;
    }
    op->count = m->nrcpt;
    op->msgs = 1;
    return 0;
}

/* spool_rec_matches_campaign - whether msg value v carries campaign name */
static int spool_msg_has_campaign(const MDB_val *v, const char *name)
{
    struct spool_msg_rec rec;
    if (v->mv_size < sizeof rec)
        return 0;
    memcpy(&rec, v->mv_data, sizeof rec);
    if (v->mv_size < sizeof rec + rec.sender_len + rec.campaign_len)
        return 0;
    const char *c = (const char *)v->mv_data + sizeof rec + rec.sender_len;
    return rec.campaign_len == strlen(name) && memcmp(c, name, rec.campaign_len) == 0;
}

/* spool_rcpt_in_domain - whether rcpt value v's address is at domain (any case) */
static int spool_rcpt_in_domain(const MDB_val *v, const char *domain)
{
    struct spool_rcpt_rec rr;
    if (v->mv_size < sizeof rr)
        return 0;
    memcpy(&rr, v->mv_data, sizeof rr);
    if (v->mv_size < sizeof rr + rr.addr_len)
        return 0;
    const char *a = (const char *)v->mv_data + sizeof rr;
    const char *at = memrchr(a, '@', rr.addr_len);
    size_t dl = at ? rr.addr_len - (size_t)(at + 1 - a) : 0;
    return at && dl == strlen(domain) && strncasecmp(at + 1, domain, dl) == 0;
}

/*
 * spool_change_rcpt - apply op to the recipient under cursor cur (key k, value v):
 * hold, release or delete it, keeping its due entry in step.  *changed is set when
 * it was touched.
 */
static int spool_change_rcpt(struct spool *sp, MDB_txn *txn, MDB_cursor *cur, MDB_val *k,
                             MDB_val *v, enum SPOOL_OP type, int *changed)
{
    struct spool_rcpt_rec rr;
    *changed = 0;
    if (v->mv_size < sizeof rr || k->mv_size != SPOOL_RCPT_KEY_LEN)
        return 0;
    memcpy(&rr, v->mv_data, sizeof rr);
    uint64_t id = get_be64(k->mv_data);
    uint32_t idx = get_be32((const uint8_t *)k->mv_data + 8);
    uint8_t dk[SPOOL_DUE_KEY_LEN];
    MDB_val dkv = {sizeof dk, dk}, empty = {0, NULL};
    int rc;

    if (type == SPOOL_OP_HOLD && rr.state != SPOOL_RCPT_QUEUED)
        return 0;
    if (type == SPOOL_OP_RELEASE && rr.state != SPOOL_RCPT_HELD)
        return 0;
    if (type == SPOOL_OP_RETRY && rr.state != SPOOL_RCPT_QUEUED)
        return 0;
    if (rr.state == SPOOL_RCPT_QUEUED) {
        spool_due_key(dk, rr.next_ms, id, idx);
        rc = mdb_del(txn, sp->db_due, &dkv, NULL);
        if (rc && rc != MDB_NOTFOUND)
            return rc;
    }
    *changed = 1;
    if (type == SPOOL_OP_DELETE) {
        uint8_t ak[SPOOL_ADDR_KEY_MAX];
        MDB_val akv = {0, ak};
        if (v->mv_size >= sizeof rr + rr.addr_len)
            akv.mv_size = spool_addr_key(ak, (const char *)v->mv_data + sizeof rr, rr.addr_len,
                                         id, idx);
        if (akv.mv_size && (rc = mdb_del(txn, sp->db_addr, &akv, NULL)) && rc != MDB_NOTFOUND)
            return rc;
        return mdb_cursor_del(cur, 0);
    }

    /* copy: v points into the map and the value is rewritten in place */
    size_t len = v->mv_size;
    uint8_t *copy = xmalloc(len);
    memcpy(copy, v->mv_data, len);
    if (type == SPOOL_OP_HOLD) {
        rr.state = SPOOL_RCPT_HELD;
    } else {
        rr.state = SPOOL_RCPT_QUEUED;
        rr.next_ms = now_ms();
        spool_due_key(dk, rr.next_ms, id, idx);
        if ((rc = mdb_put(txn, sp->db_due, &dkv, &empty, 0))) {
            free(copy);
            return rc;
        }
    }
    memcpy(copy, &rr, sizeof rr);
    MDB_val nv = {len, copy};
    rc = mdb_cursor_put(cur, k, &nv, MDB_CURRENT);
    free(copy);
    return rc;
}

/* spool_msg_empty - whether message id has no recipient left */
static int spool_msg_empty(struct spool *sp, MDB_txn *txn, uint64_t id);

int spool_rcpt_drop(struct spool *sp, MDB_txn *txn, uint64_t id, uint32_t idx, bool *msg_gone)
{
    uint8_t rk[SPOOL_RCPT_KEY_LEN], dk[SPOOL_DUE_KEY_LEN], ak[SPOOL_ADDR_KEY_MAX];
    MDB_val k = {sizeof rk, rk}, v, dkv = {sizeof dk, dk}, akv = {0, ak};
    struct spool_rcpt_rec rr;
    *msg_gone = false;
    spool_rcpt_key(rk, id, idx);
    int rc = mdb_get(txn, sp->db_rcpt, &k, &v);
    if (rc) return rc == MDB_NOTFOUND ? 0 : rc;
    if (v.mv_size < sizeof rr) return EINVAL;
    memcpy(&rr, v.mv_data, sizeof rr);
    if (v.mv_size >= sizeof rr + rr.addr_len)
        akv.mv_size = spool_addr_key(ak, (const char *)v.mv_data + sizeof rr, rr.addr_len, id, idx);
    if (rr.state == SPOOL_RCPT_QUEUED) {
        spool_due_key(dk, rr.next_ms, id, idx);
        if ((rc = mdb_del(txn, sp->db_due, &dkv, NULL)) && rc != MDB_NOTFOUND) return rc;
    }
    if (akv.mv_size && (rc = mdb_del(txn, sp->db_addr, &akv, NULL)) && rc != MDB_NOTFOUND)
        return rc;
    if ((rc = mdb_del(txn, sp->db_rcpt, &k, NULL))) return rc;
    if (spool_msg_empty(sp, txn, id)) {
        uint8_t ib[8];
        put_be64(ib, id);
        MDB_val mk = {8, ib};
        if ((rc = mdb_del(txn, sp->db_msg, &mk, NULL))) return rc;
        *msg_gone = true;
    }
    return 0;
}

static int spool_msg_empty(struct spool *sp, MDB_txn *txn, uint64_t id)
{
    MDB_cursor *cur;
    uint8_t kb[SPOOL_RCPT_KEY_LEN];
    MDB_val k = {sizeof kb, kb}, v;
    spool_rcpt_key(kb, id, 0);
    if (mdb_cursor_open(txn, sp->db_rcpt, &cur) != 0)
        return 0;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    int empty = rc != 0 || k.mv_size != SPOOL_RCPT_KEY_LEN || get_be64(k.mv_data) != id;
    mdb_cursor_close(cur);
    return empty;
}

/* spool_apply_msg_rcpts - apply op to every recipient of message id (for the
 * domain selector only those of that domain); removes the message when a delete
 * left it empty */
static int spool_apply_msg_rcpts(struct spool *sp, MDB_txn *txn, struct spool_op *op, uint64_t id,
                                 const char *domain)
{
    MDB_cursor *cur;
    uint8_t kb[SPOOL_RCPT_KEY_LEN];
    MDB_val k = {sizeof kb, kb}, v;
    int rc, changed;
    uint64_t touched = 0;

    spool_rcpt_key(kb, id, 0);
    if ((rc = mdb_cursor_open(txn, sp->db_rcpt, &cur)))
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != SPOOL_RCPT_KEY_LEN || get_be64(k.mv_data) != id)
            break;
        if (domain && !spool_rcpt_in_domain(&v, domain))
            continue;
        if ((rc = spool_change_rcpt(sp, txn, cur, &k, &v, op->type, &changed)))
            break;
        touched += (uint64_t)changed;
    }
    mdb_cursor_close(cur);
    if (rc && rc != MDB_NOTFOUND)
        return rc;
    op->count += touched;
    if (op->type != SPOOL_OP_DELETE && touched)
        op->msgs++;
    if (op->type == SPOOL_OP_DELETE && touched && spool_msg_empty(sp, txn, id)) {
        uint8_t ib[8];
        put_be64(ib, id);
        MDB_val mk = {8, ib};
        if ((rc = mdb_del(txn, sp->db_msg, &mk, NULL)))
            return rc;
        op->msgs++;
    }
    return 0;
}

/*
 * spool_apply_select - run a hold/release/delete over its selector.  Message ids are
 * collected first and changed after, so no cursor walks a tree being rewritten.
 */
static int spool_apply_select(struct spool *sp, MDB_txn *txn, struct spool_op *op)
{
    uint64_t *ids = NULL;
    size_t n = 0, cap = 0;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = 0;

    op->count = op->msgs = 0;
    if (op->sel.kind == SPOOL_SEL_ID) {
        ids = xmalloc(sizeof *ids);
        ids[n++] = op->sel.id;
    } else {
        MDB_dbi dbi = op->sel.kind == SPOOL_SEL_CAMPAIGN ? sp->db_msg : sp->db_rcpt;
        if ((rc = mdb_cursor_open(txn, dbi, &cur)))
            return rc;
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (k.mv_size < 8)
                continue;
            uint64_t id = get_be64(k.mv_data);
            if (n && ids[n - 1] == id)
                continue;
            if (op->sel.kind == SPOOL_SEL_CAMPAIGN) {
                if (!spool_msg_has_campaign(&v, op->sel.text))
                    continue;
            } else if (!spool_rcpt_in_domain(&v, op->sel.text)) {
                continue;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                ids = xrealloc(ids, cap * sizeof *ids);
            }
            ids[n++] = id;
        }
        mdb_cursor_close(cur);
        if (rc != MDB_NOTFOUND) {
            free(ids);
            return rc;
        }
        rc = 0;
    }
    const char *domain = op->sel.kind == SPOOL_SEL_DOMAIN ? op->sel.text : NULL;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = spool_apply_msg_rcpts(sp, txn, op, ids[i], domain);
    free(ids);
    return rc;
}

/*
 * spool_apply_outcomes - record delivery results.  Final outcomes remove the
 * recipient (and the message with its last one); a deferral counts the attempt,
 * keeps the reply and moves the due entry to the next try - unless an operator held
 * the recipient meanwhile, which wins.  A recipient deleted while its delivery was
 * in flight is skipped (applied stays false).
 */
static int spool_apply_outcomes(struct spool *sp, MDB_txn *txn, struct spool_op *op)
{
    op->count = op->msgs = 0;
    for (uint32_t i = 0; i < op->noutcomes; i++) {
        struct spool_outcome *o = &op->outcomes[i];
        uint8_t rk[SPOOL_RCPT_KEY_LEN], dk[SPOOL_DUE_KEY_LEN];
        MDB_val k = {sizeof rk, rk}, v, dkv = {sizeof dk, dk}, empty = {0, NULL};
        struct spool_rcpt_rec rr;
        int rc;

        o->applied = false;
        spool_rcpt_key(rk, o->id, o->idx);
        rc = mdb_get(txn, sp->db_rcpt, &k, &v);
        if (rc == MDB_NOTFOUND || v.mv_size < sizeof rr)
            continue;
        if (rc)
            return rc;
        memcpy(&rr, v.mv_data, sizeof rr);
        if (rr.state == SPOOL_RCPT_QUEUED) {
            spool_due_key(dk, rr.next_ms, o->id, o->idx);
            rc = mdb_del(txn, sp->db_due, &dkv, NULL);
            if (rc && rc != MDB_NOTFOUND)
                return rc;
        }
        o->applied = true;
        op->count++;
        if (o->kind != SPOOL_OUT_DEFERRED) {
            bool gone = false;
            if (o->kind == SPOOL_OUT_DELIVERED && op->keep_sent &&
                (rc = spool_put_sent(sp, txn, o->id, o->idx)))
                return rc;
            if ((rc = spool_rcpt_drop(sp, txn, o->id, o->idx, &gone)))
                return rc;
            op->msgs += gone;
            continue;
        }
        /* deferred: rewrite the record with the new attempt count and reply */
        const char *addr = (const char *)v.mv_data + sizeof rr;
        size_t al = rr.addr_len, rl = o->reply ? strlen(o->reply) : 0;
        if (rl > 1000)
            rl = 1000;
        uint8_t buf[sizeof rr + 512 + 1000];
        if (al > 512)
            return EINVAL;
        memcpy(buf + sizeof rr, addr, al); /* copy before the put invalidates v */
        if (rl)
            memcpy(buf + sizeof rr + al, o->reply, rl);
        if (rr.attempts < UINT16_MAX)
            rr.attempts++;
        rr.reply_len = (uint16_t)rl;
        if (rr.state == SPOOL_RCPT_QUEUED)
            rr.next_ms = o->next_ms;
        memcpy(buf, &rr, sizeof rr);
        MDB_val nv = {sizeof rr + al + rl, buf};
        if ((rc = mdb_put(txn, sp->db_rcpt, &k, &nv, 0)))
            return rc;
        if (rr.state == SPOOL_RCPT_QUEUED) {
            spool_due_key(dk, rr.next_ms, o->id, o->idx);
            if ((rc = mdb_put(txn, sp->db_due, &dkv, &empty, 0)))
                return rc;
        }
    }
    return 0;
}

/* spool_apply_counts - add each of op's counts to its counter */
static int spool_apply_counts(struct spool *sp, MDB_txn *txn, const struct spool_op *op)
{
    for (uint32_t i = 0; i < op->ncounts; i++) {
        const struct spool_count *c = &op->counts[i];
        MDB_val k = {c->keylen, (void *)c->key}, v;
        uint8_t vb[8];
        uint64_t cur = 0;
        if (c->keylen == 0 || c->keylen > SPOOL_COUNT_KEY_MAX)
            return EINVAL;
        int rc = mdb_get(txn, sp->db_counter, &k, &v);
        if (rc == 0 && v.mv_size == 8)
            cur = get_be64(v.mv_data);
        else if (rc && rc != MDB_NOTFOUND)
            return rc;
        put_be64(vb, cur + c->add);
        v.mv_size = 8;
        v.mv_data = vb;
        if ((rc = mdb_put(txn, sp->db_counter, &k, &v, 0)))
            return rc;
    }
    return 0;
}

/* spool_outcomes_final - did an outcome that ends a recipient unsuccessfully apply? */
static bool spool_outcomes_final(const struct spool_op *op)
{
    for (uint32_t i = 0; i < op->noutcomes; i++) {
        const struct spool_outcome *o = &op->outcomes[i];
        if (o->applied && (o->kind == SPOOL_OUT_BOUNCED || o->kind == SPOOL_OUT_EXPIRED))
            return true;
    }
    return false;
}

/* spool_apply - apply one op inside txn; 0, an LMDB code, or an errno */
static int spool_apply(struct spool *sp, MDB_txn *txn, struct spool_op *op, uint64_t *added)
{
    if (op->type == SPOOL_OP_INSERT) {
        if (!spool_room_for(sp, txn, op->msg->content_len, added))
            return MDB_MAP_FULL;
        return spool_apply_insert(sp, txn, op);
    }
    if (op->type == SPOOL_OP_OUTCOMES) {
        int rc = spool_apply_outcomes(sp, txn, op);
        if (rc == 0)
            rc = spool_apply_counts(sp, txn, op);
        if (rc == 0 && (op->nsupp || op->nsoft))
            rc = spool_apply_supp(sp, txn, op);
        op->msg_stored = false;
        if (rc || !op->msg || !spool_outcomes_final(op))
            return rc;
        /* a notice must never cost the outcomes: without room it is left out */
        if (!spool_room_for(sp, txn, op->msg->content_len, added))
            return 0;
        rc = spool_apply_insert(sp, txn, op);
        op->msg_stored = rc == 0;
        return rc;
    }
    if (op->type == SPOOL_OP_SUPPRESS)
        return spool_apply_supp(sp, txn, op);
    if (op->type == SPOOL_OP_SENT_PURGE)
        return spool_apply_sent_purge(sp, txn, op);
    return spool_apply_select(sp, txn, op);
}

/*
 * spool_run_batch - apply and commit ops[0..n) as few transactions as possible,
 * setting each op's result (see the file comment for the failure rules).
 */
static void spool_run_batch(struct spool *sp, struct spool_op **ops, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++)
        ops[i]->result = SPOOL_RESULT_PENDING;

    while (start < n) {
        size_t end = n, k = 0;
        MDB_txn *txn;
        int rc;
    retry:
        rc = mdb_txn_begin(sp->env, NULL, 0, &txn);
        if (rc) {
            for (size_t i = start; i < end; i++)
                if (ops[i]->result == SPOOL_RESULT_PENDING)
                    ops[i]->result = spool_result_of(rc);
            start = end;
            continue;
        }
        uint64_t added = 0;
        for (k = start; k < end; k++) {
            if (ops[k]->result != SPOOL_RESULT_PENDING)
                continue;
            if ((rc = spool_apply(sp, txn, ops[k], &added)))
                break;
        }
        if (rc) {
            mdb_txn_abort(txn);
            if (rc == MDB_TXN_FULL && k > start) {
                end = k; /* commit what fitted, the rest goes in the next round */
                goto retry;
            }
            ops[k]->result = spool_result_of(rc);
            if (ops[k]->result == SPOOL_EFULL)
                for (size_t i = k + 1; i < end; i++)
                    if (ops[i]->type == SPOOL_OP_INSERT &&
                        ops[i]->result == SPOOL_RESULT_PENDING)
                        ops[i]->result = SPOOL_EFULL;
            goto retry;
        }
        rc = mdb_txn_commit(txn);
        for (size_t i = start; i < end; i++)
            if (ops[i]->result == SPOOL_RESULT_PENDING)
                ops[i]->result = rc ? spool_result_of(rc) : SPOOL_OK;
        if (!rc)
            __atomic_add_fetch(&sp->n_commits, 1, __ATOMIC_RELAXED);
        start = end;
    }
    __atomic_add_fetch(&sp->n_ops, n, __ATOMIC_RELAXED);
}

/* spool_writer_main - the writer thread: gather, apply, commit, complete */
static void *spool_writer_main(void *arg)
{
    struct spool *sp = arg;
    size_t max = sp->p.group_max;
    struct spool_op **batch = xcalloc(max, sizeof *batch);

    pthread_mutex_lock(&sp->mu);
    for (;;) {
        while (!sp->head && !sp->stopping)
            pthread_cond_wait(&sp->cv, &sp->mu);
        if (!sp->head && sp->stopping)
            break;
        if (sp->p.group_usec && sp->queued < max && !sp->stopping) {
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_nsec += (long)sp->p.group_usec * 1000;
            dl.tv_sec += dl.tv_nsec / 1000000000;
            dl.tv_nsec %= 1000000000;
            while (sp->queued < max && !sp->stopping)
                if (pthread_cond_timedwait(&sp->cv, &sp->mu, &dl) == ETIMEDOUT)
                    break;
        }
        size_t n = 0;
        while (sp->head && n < max) {
            struct spool_op *op = sp->head;
            sp->head = op->next;
            op->next = NULL;
            batch[n++] = op;
            sp->queued--;
        }
        if (!sp->head)
            sp->tail = &sp->head;
        pthread_mutex_unlock(&sp->mu);

        spool_run_batch(sp, batch, n);
        for (size_t i = 0; i < n; i++)
            batch[i]->done(batch[i], batch[i]->arg);

        pthread_mutex_lock(&sp->mu);
    }
    pthread_mutex_unlock(&sp->mu);
    free(batch);
    return NULL;
}

int spool_submit(struct spool *sp, struct spool_op *op)
{
    pthread_mutex_lock(&sp->mu);
    if (sp->stopping) {
        pthread_mutex_unlock(&sp->mu);
        return -1;
    }
    op->next = NULL;
    *sp->tail = op;
    sp->tail = &op->next;
    sp->queued++;
    /* wake the writer on the first op, and when a full batch is waiting */
    if (sp->queued == 1 || sp->queued >= sp->p.group_max)
        pthread_cond_signal(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
    return 0;
}

int spool_writer_start(struct spool *sp)
{
    if (pthread_create(&sp->writer, NULL, spool_writer_main, sp) != 0)
        return -1;
    pthread_setname_np(sp->writer, "spool-writer"); /* for top -H and ps -L */
    sp->writer_started = true;
    return 0;
}

void spool_writer_stop(struct spool *sp)
{
    if (!sp->writer_started)
        return;
    pthread_mutex_lock(&sp->mu);
    sp->stopping = true;
    pthread_cond_signal(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
    pthread_join(sp->writer, NULL);
    sp->writer_started = false;
}
