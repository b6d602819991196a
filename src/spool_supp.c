/*
 * spool_supp - the spool's feedback state: suppression entries (supp), the purge of
 * queued recipients they match (through the addr index), repeated soft-bounce
 * counts (counter db, "s" keys), and sent records of delivered recipients (sent).
 *
 * Writer side (spool_apply_supp, spool_apply_sent_purge, spool_put_sent) runs in
 * the writer thread's transaction, so an entry and the purge it causes commit
 * together: once a suppression is acknowledged no matching recipient is queued.
 * Read side (spool_supp_check, spool_supp_walk, spool_sent_get) runs in the
 * caller's thread in its own read-only transaction.
 *
 * Purge cost: one key range of the addr index per entry (an address, or every
 * address of a domain), plus one msg lookup per match when the entry is scoped to
 * a sender domain or list; never a walk of the whole queue.
 */
#include "spool_int.h"

#include "suppress.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SPOOL_SOFT_KEY_MAX (2 + SUPPRESS_ADDR_MAX + 8)

/* spool_copy_n - s[0..n) into d (size dn), NUL-terminated and cut to fit */
static void spool_copy_n(char *d, size_t dn, const char *s, size_t n)
{
    if (n >= dn) n = dn - 1;
    memcpy(d, s, n);
    d[n] = '\0';
}

/* spool_scope_matches - whether the message (msg value mv) is in scope */
static bool spool_scope_matches(const char *scope, const MDB_val *mv)
{
    if (!*scope) return true;
    struct spool_msg_view mview;
    if (spool_msg_view(mv, &mview) < 0) return false;
    if (strncmp(scope, "list:", 5) == 0)
        return mview.list_len == strlen(scope + 5) &&
               memcmp(mview.list, scope + 5, mview.list_len) == 0;
    if (strncmp(scope, "domain:", 7) == 0) {
        const char *at = memrchr(mview.sender, '@', mview.sender_len);
        if (!at) return false;
        size_t dl = mview.sender_len - (size_t)(at + 1 - mview.sender);
        return dl == strlen(scope + 7) && strncasecmp(at + 1, scope + 7, dl) == 0;
    }
    return false;
}

/* spool_purged_add - note a purged recipient for its accounting record */
static void spool_purged_add(struct spool_op *op, uint32_t cause, uint64_t id, uint32_t idx,
                             const char *addr, size_t al, const MDB_val *mv)
{
    op->purged = xrealloc(op->purged, (op->npurged + 1) * sizeof *op->purged);
    struct spool_purged *p = &op->purged[op->npurged++];
    memset(p, 0, sizeof *p);
    p->id = id;
    p->idx = idx;
    p->cause = cause;
    spool_copy_n(p->addr, sizeof p->addr, addr, al);
    struct spool_msg_view mview;
    if (spool_msg_view(mv, &mview) == 0) {
        spool_copy_n(p->campaign, sizeof p->campaign, mview.campaign, mview.campaign_len);
        spool_copy_n(p->list, sizeof p->list, mview.list, mview.list_len);
        spool_copy_n(p->sender, sizeof p->sender, mview.sender, mview.sender_len);
    }
}

/*
 * spool_purge - remove every queued (or held) recipient at target (an address or
 * "@domain") whose message is in scope.  Matches are collected first, then
 * dropped, so no cursor walks a tree being changed.
 */
static int spool_purge(struct spool *sp, MDB_txn *txn, struct spool_op *op, uint32_t cause,
                       const char *scope, const char *target)
{
    uint8_t pk[SPOOL_ADDR_KEY_MAX];
    size_t pl = spool_addr_prefix(pk, sizeof pk, target);
    if (pl == 0) return 0;
    struct {
        uint64_t id;
        uint32_t idx;
    } *hits = NULL;
    size_t n = 0, cap = 0;
    MDB_cursor *cur;
    MDB_val k = {pl, pk}, v;
    int rc = mdb_cursor_open(txn, sp->db_addr, &cur);
    if (rc) return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < pl + 12 || memcmp(k.mv_data, pk, pl) != 0) break;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            hits = xrealloc(hits, cap * sizeof *hits);
        }
        const uint8_t *kb = (const uint8_t *)k.mv_data + k.mv_size - 12;
        hits[n].id = get_be64(kb);
        hits[n].idx = get_be32(kb + 8);
        n++;
    }
    mdb_cursor_close(cur);
    if (rc && rc != MDB_NOTFOUND) {
        free(hits);
        return rc;
    }
    rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint8_t ib[8], rk[SPOOL_RCPT_KEY_LEN];
        put_be64(ib, hits[i].id);
        spool_rcpt_key(rk, hits[i].id, hits[i].idx);
        MDB_val mk = {8, ib}, mv, rkv = {sizeof rk, rk}, rv;
        if (mdb_get(txn, sp->db_msg, &mk, &mv) != 0 || !spool_scope_matches(scope, &mv)) continue;
        if (mdb_get(txn, sp->db_rcpt, &rkv, &rv) != 0) continue;
        struct spool_rcpt_rec rr;
        if (rv.mv_size < sizeof rr) continue;
        memcpy(&rr, rv.mv_data, sizeof rr);
        if (rv.mv_size < sizeof rr + rr.addr_len) continue;
        /* copied before the drop changes the pages mv and rv point into */
        spool_purged_add(op, cause, hits[i].id, hits[i].idx, (const char *)rv.mv_data + sizeof rr,
                         rr.addr_len, &mv);
        bool gone;
        rc = spool_rcpt_drop(sp, txn, hits[i].id, hits[i].idx, &gone);
    }
    free(hits);
    return rc;
}

/* spool_supp_put - store one entry; *fresh when it was not there before */
static int spool_supp_put(struct spool *sp, MDB_txn *txn, const char *scope, const char *target,
                          const uint8_t *rec, size_t reclen, bool *fresh)
{
    uint8_t kb[SUPPRESS_KEY_MAX];
    MDB_val k = {suppress_key(kb, sizeof kb, scope, target), kb}, v;
    *fresh = false;
    if (k.mv_size == 0 || reclen == 0) return EINVAL;
    *fresh = mdb_get(txn, sp->db_supp, &k, &v) == MDB_NOTFOUND;
    v.mv_size = reclen;
    v.mv_data = (void *)rec;
    return mdb_put(txn, sp->db_supp, &k, &v, 0);
}

/*
 * spool_supp_forget - remove target's entries in every scope.  Scopes are not
 * indexed by target, so this walks the supp db: forgetting is a rare, manual act.
 */
static int spool_supp_forget(struct spool *sp, MDB_txn *txn, const char *target, bool *removed)
{
    MDB_cursor *cur;
    MDB_val k, v;
    size_t tl = strlen(target), n = 0;
    uint8_t(*keys)[SUPPRESS_KEY_MAX] = NULL;
    size_t *lens = NULL;
    int rc = mdb_cursor_open(txn, sp->db_supp, &cur);
    if (rc) return rc;
    /* collect first, delete after: no cursor walks a tree being changed */
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const uint8_t *nul = memchr(k.mv_data, '\0', k.mv_size);
        if (!nul || k.mv_size > SUPPRESS_KEY_MAX ||
            (size_t)((const uint8_t *)k.mv_data + k.mv_size - nul - 1) != tl ||
            memcmp(nul + 1, target, tl) != 0)
            continue;
        keys = xrealloc(keys, (n + 1) * sizeof *keys);
        lens = xrealloc(lens, (n + 1) * sizeof *lens);
        memcpy(keys[n], k.mv_data, k.mv_size);
        lens[n++] = k.mv_size;
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND) rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        MDB_val dk = {lens[i], keys[i]};
        rc = mdb_del(txn, sp->db_supp, &dk, NULL);
        *removed = true;
    }
    free(keys);
    free(lens);
    return rc;
}

/* spool_soft_key - "s" addr NUL day(8): one count per address and UTC day */
static size_t spool_soft_key(uint8_t *k, const char *addr, int64_t day)
{
    size_t al = strlen(addr);
    if (al >= SUPPRESS_ADDR_MAX) return 0;
    k[0] = 's';
    memcpy(k + 1, addr, al);
    k[1 + al] = '\0';
    put_be64(k + 2 + al, (uint64_t)day);
    return al + 10;
}

/* spool_soft_count - add one soft bounce; the count over the window in *total */
static int spool_soft_count(struct spool *sp, MDB_txn *txn, const struct spool_soft *s,
                            uint64_t *total)
{
    uint8_t kb[SPOOL_SOFT_KEY_MAX], vb[8];
    MDB_val k = {spool_soft_key(kb, s->addr, s->day), kb}, v;
    if (k.mv_size == 0) return EINVAL;
    uint64_t cur = 0;
    int rc = mdb_get(txn, sp->db_counter, &k, &v);
    if (rc == 0 && v.mv_size == 8) cur = get_be64(v.mv_data);
    else if (rc && rc != MDB_NOTFOUND) return rc;
    put_be64(vb, cur + 1);
    v.mv_size = 8;
    v.mv_data = vb;
    if ((rc = mdb_put(txn, sp->db_counter, &k, &v, 0))) return rc;

    /* the window: this address's days from day - window + 1 on */
    MDB_cursor *c;
    size_t pl = k.mv_size - 8;
    uint8_t start[SPOOL_SOFT_KEY_MAX];
    memcpy(start, kb, pl);
    put_be64(start + pl, (uint64_t)(s->day - s->window_days + 1));
    MDB_val sk = {pl + 8, start};
    *total = 0;
    if ((rc = mdb_cursor_open(txn, sp->db_counter, &c))) return rc;
    for (rc = mdb_cursor_get(c, &sk, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &sk, &v, MDB_NEXT)) {
        if (sk.mv_size != pl + 8 || memcmp(sk.mv_data, kb, pl) != 0) break;
        if (v.mv_size == 8) *total += get_be64(v.mv_data);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int spool_apply_supp(struct spool *sp, MDB_txn *txn, struct spool_op *op)
{
    int rc = 0;
    /* a batch retried after another op's failure applies this op again */
    free(op->purged);
    op->purged = NULL;
    op->npurged = 0;
    for (uint32_t i = 0; i < op->nsupp && rc == 0; i++) {
        struct spool_supp *s = &op->supp[i];
        s->applied = false;
        if (s->act == SPOOL_SUPP_PUT) {
            rc = spool_supp_put(sp, txn, s->scope, s->target, s->rec, s->reclen, &s->applied);
            if (rc == 0 && s->purge) rc = spool_purge(sp, txn, op, i, s->scope, s->target);
        } else if (s->act == SPOOL_SUPP_DEL) {
            uint8_t kb[SUPPRESS_KEY_MAX];
            MDB_val k = {suppress_key(kb, sizeof kb, s->scope, s->target), kb};
            if (k.mv_size == 0) return EINVAL;
            rc = mdb_del(txn, sp->db_supp, &k, NULL);
            s->applied = rc == 0;
            if (rc == MDB_NOTFOUND) rc = 0;
        } else {
            bool fresh = false;
            rc = spool_supp_forget(sp, txn, s->target, &s->applied);
            if (rc == 0 && s->hashed)
                rc = spool_supp_put(sp, txn, "", s->hashed, s->rec, s->reclen, &fresh);
            if (rc == 0 && s->purge) rc = spool_purge(sp, txn, op, i, "", s->target);
        }
    }
    for (uint32_t i = 0; i < op->nsoft && rc == 0; i++) {
        struct spool_soft *s = &op->soft[i];
        uint64_t total = 0;
        s->suppressed = false;
        rc = spool_soft_count(sp, txn, s, &total);
        if (rc == 0 && s->limit > 0 && total >= (uint64_t)s->limit) {
            bool fresh = false;
            rc = spool_supp_put(sp, txn, "", s->addr, s->rec, s->reclen, &fresh);
            if (rc == 0) rc = spool_purge(sp, txn, op, op->nsupp + i, "", s->addr);
            s->suppressed = fresh;
        }
    }
    op->count = op->npurged;
    return rc;
}

int spool_put_sent(struct spool *sp, MDB_txn *txn, uint64_t id, uint32_t idx)
{
    uint8_t rk[SPOOL_RCPT_KEY_LEN], ib[8];
    spool_rcpt_key(rk, id, idx);
    put_be64(ib, id);
    MDB_val k = {sizeof rk, rk}, rv, mk = {8, ib}, mv;
    struct spool_rcpt_rec rr;
    struct spool_msg_view mview;
    if (mdb_get(txn, sp->db_rcpt, &k, &rv) != 0 || rv.mv_size < sizeof rr) return 0;
    memcpy(&rr, rv.mv_data, sizeof rr);
    if (rv.mv_size < sizeof rr + rr.addr_len) return 0;
    if (mdb_get(txn, sp->db_msg, &mk, &mv) != 0 || spool_msg_view(&mv, &mview) < 0) return 0;
    struct spool_sent_rec sr = {rr.addr_len, (uint16_t)mview.campaign_len,
                                (uint16_t)mview.list_len, (uint16_t)mview.sender_len};
    size_t len = sizeof sr + sr.addr_len + sr.campaign_len + sr.list_len + sr.sender_len;
    uint8_t *buf = xmalloc(len), *p = buf;
    memcpy(p, &sr, sizeof sr);
    p += sizeof sr;
    memcpy(p, (const char *)rv.mv_data + sizeof rr, sr.addr_len);
    p += sr.addr_len;
    memcpy(p, mview.campaign, sr.campaign_len);
    p += sr.campaign_len;
    memcpy(p, mview.list, sr.list_len);
    p += sr.list_len;
    memcpy(p, mview.sender, sr.sender_len);
    MDB_val v = {len, buf};
    int rc = mdb_put(txn, sp->db_sent, &k, &v, 0);
    free(buf);
    return rc;
}

int spool_apply_sent_purge(struct spool *sp, MDB_txn *txn, struct spool_op *op)
{
    MDB_cursor *cur;
    MDB_val k, v;
    op->count = 0;
    int rc = mdb_cursor_open(txn, sp->db_sent, &cur);
    if (rc) return rc;
    /* keys start with the message id, and ids grow with time */
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
        if (k.mv_size != SPOOL_RCPT_KEY_LEN || get_be64(k.mv_data) >= op->sel.id) break;
        if ((rc = mdb_cursor_del(cur, 0))) break;
        op->count++;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---------------------------------------------------------------- reads */

/* spool_supp_get - the live entry (scope, target) in txn; 1 found, 0 not, -1 error */
static int spool_supp_get(struct spool *sp, MDB_txn *txn, const char *scope, const char *target,
                          int64_t now, struct suppress_rec *rec)
{
    uint8_t kb[SUPPRESS_KEY_MAX];
    MDB_val k = {suppress_key(kb, sizeof kb, scope, target), kb}, v;
    if (k.mv_size == 0) return 0;
    int rc = mdb_get(txn, sp->db_supp, &k, &v);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return -1;
    if (suppress_rec_decode(v.mv_data, v.mv_size, rec) < 0) return 0;
    return rec->expires_ms == 0 || rec->expires_ms > now;
}

int spool_supp_check(struct spool *sp, const char *addr, const char *sender_domain,
                     const char *list, int64_t now, struct suppress_rec *rec, char *matched,
                     size_t matchedn)
{
    const char *at = strrchr(addr, '@');
    if (!at) return 0;
    MDB_txn *txn;
    MDB_stat st;
    if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0) return -1;
    /* the common case on a sending node without entries: no hashing, no lookups */
    if (mdb_stat(txn, sp->db_supp, &st) != 0 || st.ms_entries == 0) {
        mdb_txn_abort(txn);
        return 0;
    }
    char hashed[SUPPRESS_HASH_LEN + 1], dscope[SUPPRESS_SCOPE_MAX], lscope[SUPPRESS_SCOPE_MAX];
    suppress_hash_target(addr, hashed);
    snprintf(dscope, sizeof dscope, "domain:%s", sender_domain ? sender_domain : "");
    snprintf(lscope, sizeof lscope, "list:%s", list ? list : "");
    const char *scopes[3] = {"", sender_domain && *sender_domain ? dscope : NULL,
                             list && *list ? lscope : NULL};
    const char *targets[3] = {addr, at, hashed};
    int found = 0;
    for (int i = 0; i < 3 && !found; i++) {
        if (!scopes[i]) continue;
        for (int j = 0; j < 3 && !found; j++) {
            found = spool_supp_get(sp, txn, scopes[i], targets[j], now, rec);
            if (found == 1 && matched)
                snprintf(matched, matchedn, "%s%s%s", scopes[i], *scopes[i] ? " " : "",
                         targets[j]);
        }
    }
    mdb_txn_abort(txn);
    return found;
}

int spool_supp_walk(struct spool *sp, const char *scope, const char *after_scope,
                    const char *after_target, spool_supp_fn fn, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    size_t sl = scope ? strlen(scope) + 1 : 0; /* scope and its NUL */
    uint8_t ab[SUPPRESS_KEY_MAX];
    size_t al = after_target ? suppress_key(ab, sizeof ab, after_scope ? after_scope : "",
                                            after_target)
                             : 0;
    MDB_val k = {sl, (void *)scope}, v;
    int rc;
    if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0) return -1;
    if (mdb_cursor_open(txn, sp->db_supp, &cur) != 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    if (al) {
        k.mv_size = al;
        k.mv_data = ab;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && k.mv_size == al && memcmp(k.mv_data, ab, al) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT); /* strictly after */
    } else {
        rc = mdb_cursor_get(cur, &k, &v, scope ? MDB_SET_RANGE : MDB_FIRST);
    }
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (scope && (k.mv_size < sl || memcmp(k.mv_data, scope, sl) != 0)) break;
        char sc[SUPPRESS_SCOPE_MAX], target[SUPPRESS_ADDR_MAX];
        struct suppress_rec rec;
        if (suppress_key_split(k.mv_data, k.mv_size, sc, sizeof sc, target, sizeof target) < 0 ||
            suppress_rec_decode(v.mv_data, v.mv_size, &rec) < 0)
            continue;
        if (fn(arg, sc, target, &rec) != 0) break;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc != 0 && rc != MDB_NOTFOUND ? -1 : 0;
}

int spool_sent_get(struct spool *sp, uint64_t id, uint32_t idx, struct spool_sent *out)
{
    uint8_t rk[SPOOL_RCPT_KEY_LEN];
    spool_rcpt_key(rk, id, idx);
    MDB_val k = {sizeof rk, rk}, v;
    MDB_txn *txn;
    struct spool_sent_rec sr;
    int ok = -1;
    if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0) return -1;
    if (mdb_get(txn, sp->db_sent, &k, &v) == 0 && v.mv_size >= sizeof sr) {
        memcpy(&sr, v.mv_data, sizeof sr);
        if (v.mv_size == sizeof sr + sr.addr_len + sr.campaign_len + sr.list_len +
                             sr.sender_len) {
            const char *p = (const char *)v.mv_data + sizeof sr;
            spool_copy_n(out->addr, sizeof out->addr, p, sr.addr_len);
            p += sr.addr_len;
            spool_copy_n(out->campaign, sizeof out->campaign, p, sr.campaign_len);
            p += sr.campaign_len;
            spool_copy_n(out->list, sizeof out->list, p, sr.list_len);
            p += sr.list_len;
            spool_copy_n(out->sender, sizeof out->sender, p, sr.sender_len);
            ok = 0;
        }
    }
    mdb_txn_abort(txn);
    return ok;
}
