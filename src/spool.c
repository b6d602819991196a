/*
 * spool - LMDB environment, record layout and the read side (see spool.h for the
 * layout and invariants; the writer thread lives in spool_writer.c).
 *
 * Reads copy what they return out of the map before their transaction ends, so no
 * caller ever holds a pointer into LMDB memory: a reader that kept one across the
 * writer's commits would see pages being reused.
 */
#include "spool_int.h"
#include "msgid.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const spool_state_names[] = {"queued", "held"};

const char *spool_rcpt_state_str(enum SPOOL_RCPT_STATE s)
{
    return (unsigned)s < ARRAY_LEN(spool_state_names) ? spool_state_names[s] : "unknown";
}

const char *spool_op_str(enum SPOOL_OP op)
{
    switch (op) {
    case SPOOL_OP_INSERT:
        return "insert";
    case SPOOL_OP_HOLD:
        return "hold";
    case SPOOL_OP_RELEASE:
        return "release";
    case SPOOL_OP_DELETE:
        return "delete";
    case SPOOL_OP_OUTCOMES:
        return "outcomes";
    case SPOOL_OP_RETRY:
        return "retry";
    case SPOOL_OP_SUPPRESS:
        return "suppress";
    case SPOOL_OP_SENT_PURGE:
        return "sent_purge";
    }
    return "unknown";
}

const char *spool_outcome_str(enum SPOOL_OUTCOME o)
{
    switch (o) {
    case SPOOL_OUT_DELIVERED:
        return "delivered";
    case SPOOL_OUT_BOUNCED:
        return "bounced";
    case SPOOL_OUT_EXPIRED:
        return "expired";
    case SPOOL_OUT_DEFERRED:
        return "deferred";
    }
    return "unknown";
}

const char *spool_sel_str(enum SPOOL_SEL s)
{
    switch (s) {
    case SPOOL_SEL_ID:
        return "id";
    case SPOOL_SEL_DOMAIN:
        return "domain";
    case SPOOL_SEL_CAMPAIGN:
        return "campaign";
    }
    return "unknown";
}

void spool_rcpt_key(uint8_t *k, uint64_t id, uint32_t idx)
{
    put_be64(k, id);
    put_be32(k + 8, idx);
}

void spool_due_key(uint8_t *k, int64_t next_ms, uint64_t id, uint32_t idx)
{
    put_be64(k, (uint64_t)next_ms);
    put_be64(k + 8, id);
    put_be32(k + 16, idx);
}

/* spool_lower_copy - ASCII lower case of s[0..n) into d */
static void spool_lower_copy(uint8_t *d, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        d[i] = (uint8_t)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
}

/* The domain comes first so that "@domain" entries are one key range too. */
size_t spool_addr_key(uint8_t *k, const char *a, size_t al, uint64_t id, uint32_t idx)
{
    const char *at = memrchr(a, '@', al);
    if (!at || al > 512) return 0;
    size_t ll = (size_t)(at - a), dl = al - ll - 1;
    spool_lower_copy(k, at + 1, dl);
    k[dl] = '\0';
    spool_lower_copy(k + dl + 1, a, ll);
    k[dl + 1 + ll] = '\0';
    put_be64(k + dl + ll + 2, id);
    put_be32(k + dl + ll + 10, idx);
    return dl + ll + 14;
}

size_t spool_addr_prefix(uint8_t *k, size_t n, const char *target)
{
    size_t tl = strlen(target);
    const char *at = memrchr(target, '@', tl);
    if (!at || tl + 2 > n) return 0;
    size_t ll = (size_t)(at - target), dl = tl - ll - 1;
    spool_lower_copy(k, at + 1, dl);
    k[dl] = '\0';
    if (ll == 0) return dl + 1; /* "@domain": every local part */
    spool_lower_copy(k + dl + 1, target, ll);
    k[dl + 1 + ll] = '\0';
    return dl + ll + 2;
}

int spool_msg_view(const MDB_val *v, struct spool_msg_view *out)
{
    struct spool_msg_rec rec;
    if (v->mv_size < sizeof rec) return -1;
    memcpy(&rec, v->mv_data, sizeof rec);
    if (v->mv_size < sizeof rec + spool_rec_strs(&rec)) return -1;
    const char *p = (const char *)v->mv_data + sizeof rec;
    out->sender = p;
    out->sender_len = rec.sender_len;
    out->campaign = p + rec.sender_len;
    out->campaign_len = rec.campaign_len;
    out->list = p + rec.sender_len + rec.campaign_len + rec.client_len + rec.helo_len +
                rec.pool_len;
    out->list_len = rec.list_len;
    return 0;
}

/*
 * spool_build_addr_index - a spool written before the addr index existed gets one
 * entry per recipient, once, inside the opening transaction (meta "addrindex"
 * records that it was done)
 */
static int spool_build_addr_index(struct spool *sp, MDB_txn *txn)
{
    MDB_val mk = {9, "addrindex"}, mv;
    int rc = mdb_get(txn, sp->db_meta, &mk, &mv);
    if (rc != MDB_NOTFOUND) return rc;
    MDB_cursor *cur;
    MDB_val k, v, empty = {0, NULL};
    if ((rc = mdb_cursor_open(txn, sp->db_rcpt, &cur))) return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct spool_rcpt_rec rr;
        if (k.mv_size != SPOOL_RCPT_KEY_LEN || v.mv_size < sizeof rr) continue;
        memcpy(&rr, v.mv_data, sizeof rr);
        if (v.mv_size < sizeof rr + rr.addr_len) continue;
        uint8_t ak[SPOOL_ADDR_KEY_MAX];
        size_t al = spool_addr_key(ak, (const char *)v.mv_data + sizeof rr, rr.addr_len,
                                   get_be64(k.mv_data), get_be32((uint8_t *)k.mv_data + 8));
        MDB_val akv = {al, ak};
        if (al && (rc = mdb_put(txn, sp->db_addr, &akv, &empty, 0))) break;
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) return rc;
    mv.mv_size = 1;
    mv.mv_data = "1";
    return mdb_put(txn, sp->db_meta, &mk, &mv, 0);
}

const char *spool_domain_of(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : "";
}

/* spool_mkdirs - mkdir -p */
static int spool_mkdirs(const char *dir)
{
    char path[4096];
    if (str_copy(path, sizeof path, dir) < 0) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0750) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(path, 0750) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* spool_max_id - the largest message id stored, 0 if none */
static uint64_t spool_max_id(struct spool *sp)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t id = 0;
    if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0)
        return 0;
    if (mdb_cursor_open(txn, sp->db_msg, &cur) == 0) {
        if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8)
            id = get_be64(k.mv_data);
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    return id;
}

/* spool_open_dbs - create/open the named databases and check the schema */
static int spool_open_dbs(struct spool *sp, char *err, size_t errsz)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(sp->env, NULL, 0, &txn);
    if (rc) {
        snprintf(err, errsz, "spool %s: cannot begin transaction: %s", sp->dir, mdb_strerror(rc));
        return -1;
    }
    struct {
        const char *name;
        MDB_dbi *dbi;
    } dbs[] = {
        {"msg", &sp->db_msg},   {"rcpt", &sp->db_rcpt},         {"due", &sp->db_due},
        {"supp", &sp->db_supp}, {"campaign", &sp->db_campaign}, {"meta", &sp->db_meta},
        {"counter", &sp->db_counter},
        {"addr", &sp->db_addr}, {"sent", &sp->db_sent},
    };
    for (size_t i = 0; i < ARRAY_LEN(dbs); i++) {
        rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi);
        if (rc) {
            snprintf(err, errsz, "spool %s: cannot open database %s: %s", sp->dir, dbs[i].name,
                     mdb_strerror(rc));
            mdb_txn_abort(txn);
            return -1;
        }
    }
    MDB_val k = {6, "schema"}, v;
    rc = mdb_get(txn, sp->db_meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        uint8_t ver[4];
        put_be32(ver, SPOOL_SCHEMA);
        v.mv_size = 4;
        v.mv_data = ver;
        rc = mdb_put(txn, sp->db_meta, &k, &v, 0);
    } else if (rc == 0 && (v.mv_size != 4 || get_be32(v.mv_data) != SPOOL_SCHEMA)) {
        snprintf(err, errsz, "spool %s: schema version %u, this volleyd needs %u", sp->dir,
                 v.mv_size == 4 ? get_be32(v.mv_data) : 0, SPOOL_SCHEMA);
        mdb_txn_abort(txn);
        return -1;
    }
    if (rc == 0)
        rc = spool_build_addr_index(sp, txn);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc) {
        snprintf(err, errsz, "spool %s: cannot initialise: %s", sp->dir, mdb_strerror(rc));
        return -1;
    }
    return 0;
}

int spool_open(struct spool **out, const struct spool_params *p, char *err, size_t errsz)
{
    struct spool *sp = xcalloc(1, sizeof *sp);
    sp->p = *p;
    sp->dir = xstrdup(p->dir);
    sp->lock_fd = -1;
    sp->tail = &sp->head;
    pthread_mutex_init(&sp->mu, NULL);
    pthread_cond_init(&sp->cv, NULL);

    if (spool_mkdirs(sp->dir) < 0) {
        snprintf(err, errsz, "spool %s: cannot create: %s", sp->dir, strerror(errno));
        goto fail;
    }
    /* LMDB itself allows many processes; two daemons draining one queue would
     * deliver everything twice, so the directory is ours alone. */
    char lockpath[4200];
    snprintf(lockpath, sizeof lockpath, "%s/volleyd.lock", sp->dir);
    sp->lock_fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (sp->lock_fd < 0 || flock(sp->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        snprintf(err, errsz, "spool %s: %s", sp->dir,
                 errno == EWOULDBLOCK ? "in use by another volleyd" : strerror(errno));
        goto fail;
    }
    int rc = mdb_env_create(&sp->env);
    if (!rc)
        rc = mdb_env_set_maxdbs(sp->env, 16);
    if (!rc)
        rc = mdb_env_set_mapsize(sp->env, p->map_size);
    if (!rc)
        rc = mdb_env_set_maxreaders(sp->env, 256);
    unsigned flags = MDB_NOTLS | MDB_NORDAHEAD | (p->sync ? 0 : MDB_NOSYNC);
    if (!rc)
        rc = mdb_env_open(sp->env, sp->dir, flags, 0640);
    if (rc) {
        snprintf(err, errsz, "spool %s: cannot open LMDB environment: %s", sp->dir,
                 mdb_strerror(rc));
        goto fail;
    }
    MDB_stat st;
    mdb_env_stat(sp->env, &st);
    sp->page_size = st.ms_psize;
    if (spool_open_dbs(sp, err, errsz) < 0)
        goto fail;
    msgid_floor(spool_max_id(sp));
    if (spool_writer_start(sp) < 0) {
        snprintf(err, errsz, "spool %s: cannot start writer thread", sp->dir);
        goto fail;
    }
    *out = sp;
    return 0;

fail:
    if (sp->env)
        mdb_env_close(sp->env);
    if (sp->lock_fd >= 0)
        close(sp->lock_fd);
    pthread_mutex_destroy(&sp->mu);
    pthread_cond_destroy(&sp->cv);
    free(sp->dir);
    free(sp);
    return -1;
}

void spool_close(struct spool *sp)
{
    if (!sp)
        return;
    spool_writer_stop(sp);
    mdb_env_close(sp->env);
    close(sp->lock_fd);
    pthread_mutex_destroy(&sp->mu);
    pthread_cond_destroy(&sp->cv);
    free(sp->dir);
    free(sp);
}

int spool_totals(struct spool *sp, struct spool_totals *t)
{
    MDB_txn *txn;
    MDB_stat st;
    MDB_envinfo info;
    memset(t, 0, sizeof *t);
    if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    if (mdb_stat(txn, sp->db_msg, &st) == 0)
        t->msgs = st.ms_entries;
    if (mdb_stat(txn, sp->db_rcpt, &st) == 0)
        t->rcpts = st.ms_entries;
    if (mdb_stat(txn, sp->db_due, &st) == 0)
        t->due = st.ms_entries;
    mdb_txn_abort(txn);
    mdb_env_info(sp->env, &info);
    t->used_bytes = (uint64_t)(info.me_last_pgno + 1) * sp->page_size;
    t->map_bytes = info.me_mapsize;
    t->commits = __atomic_load_n(&sp->n_commits, __ATOMIC_RELAXED);
    t->ops = __atomic_load_n(&sp->n_ops, __ATOMIC_RELAXED);
    return 0;
}

/*
 * spool_decode_msg - fill m's header fields from a msg value (copies strings; the
 * content too when want_content).  Returns -1 when the record is malformed.
 */
static int spool_decode_msg(const MDB_val *v, bool want_content, struct spool_msg_info *m)
{
    struct spool_msg_rec rec;
    if (v->mv_size < sizeof rec)
        return -1;
    memcpy(&rec, v->mv_data, sizeof rec);
    size_t strs = spool_rec_strs(&rec);
    if (rec.version != 1 || v->mv_size != sizeof rec + strs + rec.content_len)
        return -1;
    const char *p = (const char *)v->mv_data + sizeof rec;
    m->created_ms = rec.created_ms;
    m->flags = rec.flags;
    m->nrcpt_total = rec.nrcpt;
    m->sender = xstrndup(p, rec.sender_len);
    p += rec.sender_len;
    m->campaign = xstrndup(p, rec.campaign_len);
    p += rec.campaign_len;
    m->client = xstrndup(p, rec.client_len);
    p += rec.client_len;
    m->helo = xstrndup(p, rec.helo_len);
    p += rec.helo_len;
    m->pool = xstrndup(p, rec.pool_len);
    p += rec.pool_len;
    m->list = xstrndup(p, rec.list_len);
    p += rec.list_len;
    m->content_len = rec.content_len;
    if (want_content) {
        m->content = xmalloc(rec.content_len ? rec.content_len : 1);
        memcpy(m->content, p, rec.content_len);
    }
    return 0;
}

/* spool_decode_rcpt - fill r from a rcpt key/value (copies strings); -1 if malformed */
static int spool_decode_rcpt(const MDB_val *k, const MDB_val *v, struct spool_rcpt_info *r)
{
    struct spool_rcpt_rec rec;
    if (k->mv_size != SPOOL_RCPT_KEY_LEN || v->mv_size < sizeof rec)
        return -1;
    memcpy(&rec, v->mv_data, sizeof rec);
    if (v->mv_size != sizeof rec + rec.addr_len + rec.reply_len)
        return -1;
    const char *p = (const char *)v->mv_data + sizeof rec;
    r->idx = get_be32((const uint8_t *)k->mv_data + 8);
    r->state = (enum SPOOL_RCPT_STATE)rec.state;
    r->attempts = rec.attempts;
    r->next_ms = rec.next_ms;
    r->addr = xstrndup(p, rec.addr_len);
    r->domain = spool_domain_of(r->addr);
    r->last_reply = xstrndup(p + rec.addr_len, rec.reply_len);
    return 0;
}

static void spool_rcpt_info_clear(struct spool_rcpt_info *r)
{
    free(r->addr);
    free(r->last_reply);
    r->addr = r->last_reply = NULL;
}

void spool_msg_info_free(struct spool_msg_info *m)
{
    free(m->sender);
    free(m->campaign);
    free(m->client);
    free(m->helo);
    free(m->pool);
    free(m->list);
    free(m->content);
    for (uint32_t i = 0; i < m->nrcpt; i++)
        spool_rcpt_info_clear(&m->rcpts[i]);
    free(m->rcpts);
    memset(m, 0, sizeof *m);
}

int spool_msg_load(struct spool *sp, uint64_t id, bool want_content, struct spool_msg_info *out,
                   int *why)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    uint8_t kb[SPOOL_RCPT_KEY_LEN];
    MDB_val k = {8, kb}, v;
    memset(out, 0, sizeof *out);
    *why = SPOOL_EIO;
    if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    put_be64(kb, id);
    int rc = mdb_get(txn, sp->db_msg, &k, &v);
    if (rc == MDB_NOTFOUND)
        *why = SPOOL_ENOENT;
    if (rc || spool_decode_msg(&v, want_content, out) < 0)
        goto fail;
    out->id = id;
    if (mdb_cursor_open(txn, sp->db_rcpt, &cur) != 0)
        goto fail;
    spool_rcpt_key(kb, id, 0);
    k.mv_size = SPOOL_RCPT_KEY_LEN;
    k.mv_data = kb;
    uint32_t cap = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != SPOOL_RCPT_KEY_LEN || get_be64(k.mv_data) != id)
            break;
        if (out->nrcpt == cap) {
            cap = cap ? cap * 2 : 8;
            out->rcpts = xrealloc(out->rcpts, cap * sizeof *out->rcpts);
        }
        if (spool_decode_rcpt(&k, &v, &out->rcpts[out->nrcpt]) < 0)
            goto fail;
        out->nrcpt++;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return 0;

fail:
    if (cur)
        mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    spool_msg_info_free(out);
    return -1;
}

int spool_walk(struct spool *sp, spool_walk_fn fn, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    struct spool_msg_info m;
    uint64_t cur_id = 0;
    bool have_msg = false;
    int ret = 0, rc;

    memset(&m, 0, sizeof m);
    if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    if (mdb_cursor_open(txn, sp->db_rcpt, &cur) != 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != SPOOL_RCPT_KEY_LEN) {
            ret = -1;
            break;
        }
        uint64_t id = get_be64(k.mv_data);
        if (!have_msg || id != cur_id) {
            uint8_t kb[8];
            MDB_val mk = {8, kb}, mv;
            spool_msg_info_free(&m);
            have_msg = false;
            put_be64(kb, id);
            if (mdb_get(txn, sp->db_msg, &mk, &mv) != 0 || spool_decode_msg(&mv, false, &m) < 0)
                continue; /* an orphan recipient: spool_verify reports it */
            m.id = id;
            cur_id = id;
            have_msg = true;
        }
        struct spool_rcpt_info r;
        if (spool_decode_rcpt(&k, &v, &r) < 0)
            continue;
        int stop = fn(&m, &r, arg);
        spool_rcpt_info_clear(&r);
        if (stop)
            break;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        ret = -1;
    spool_msg_info_free(&m);
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return ret;
}

/* spool_verify_note - count a violation, describing the first one */
static void spool_verify_note(long *bad, char *err, size_t errsz, const char *what, uint64_t id,
                              uint32_t idx)
{
    if ((*bad)++ == 0) {
        char s[MSGID_STR_LEN + 1];
        msgid_format(id, s);
        snprintf(err, errsz, "%s (message %s, recipient %u)", what, s, idx);
    }
}

long spool_verify(struct spool *sp, char *err, size_t errsz)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v, k2, v2;
    long bad = 0;
    int rc;

    if (errsz)
        err[0] = '\0';
    if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;

    /* every recipient has its message, and a due entry iff QUEUED */
    mdb_cursor_open(txn, sp->db_rcpt, &cur);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct spool_rcpt_info r;
        if (k.mv_size != SPOOL_RCPT_KEY_LEN || spool_decode_rcpt(&k, &v, &r) < 0) {
            spool_verify_note(&bad, err, errsz, "malformed recipient record", 0, 0);
            continue;
        }
        uint64_t id = get_be64(k.mv_data);
        uint8_t kb[SPOOL_DUE_KEY_LEN];
        put_be64(kb, id);
        k2.mv_size = 8;
        k2.mv_data = kb;
        if (mdb_get(txn, sp->db_msg, &k2, &v2) != 0)
            spool_verify_note(&bad, err, errsz, "recipient without message", id, r.idx);
        spool_due_key(kb, r.next_ms, id, r.idx);
        k2.mv_size = SPOOL_DUE_KEY_LEN;
        int has_due = mdb_get(txn, sp->db_due, &k2, &v2) == 0;
        if (r.state == SPOOL_RCPT_QUEUED && !has_due)
            spool_verify_note(&bad, err, errsz, "queued recipient without due entry", id, r.idx);
        if (r.state != SPOOL_RCPT_QUEUED && has_due)
            spool_verify_note(&bad, err, errsz, "held recipient with due entry", id, r.idx);
        uint8_t ak[SPOOL_ADDR_KEY_MAX];
        k2.mv_size = spool_addr_key(ak, r.addr, strlen(r.addr), id, r.idx);
        k2.mv_data = ak;
        if (k2.mv_size == 0 || mdb_get(txn, sp->db_addr, &k2, &v2) != 0)
            spool_verify_note(&bad, err, errsz, "recipient without address index entry", id,
                              r.idx);
        spool_rcpt_info_clear(&r);
    }
    mdb_cursor_close(cur);

    /* no stale address index entries: as many as there are recipients */
    MDB_stat st_rcpt, st_addr;
    if (mdb_stat(txn, sp->db_rcpt, &st_rcpt) == 0 && mdb_stat(txn, sp->db_addr, &st_addr) == 0 &&
        st_addr.ms_entries != st_rcpt.ms_entries)
        spool_verify_note(&bad, err, errsz, "address index entries without recipient", 0, 0);

    /* every message has at least one recipient and a well-formed record */
    mdb_cursor_open(txn, sp->db_msg, &cur);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint64_t id = k.mv_size == 8 ? get_be64(k.mv_data) : 0;
        struct spool_msg_info m;
        memset(&m, 0, sizeof m);
        if (k.mv_size != 8 || spool_decode_msg(&v, false, &m) < 0)
            spool_verify_note(&bad, err, errsz, "malformed message record", id, 0);
        spool_msg_info_free(&m);
        MDB_cursor *rc2;
        uint8_t kb[SPOOL_RCPT_KEY_LEN];
        spool_rcpt_key(kb, id, 0);
        k2.mv_size = SPOOL_RCPT_KEY_LEN;
        k2.mv_data = kb;
        mdb_cursor_open(txn, sp->db_rcpt, &rc2);
        if (mdb_cursor_get(rc2, &k2, &v2, MDB_SET_RANGE) != 0 ||
            get_be64(k2.mv_data) != id)
            spool_verify_note(&bad, err, errsz, "message without recipients", id, 0);
        mdb_cursor_close(rc2);
    }
    mdb_cursor_close(cur);

    /* every due entry points at a queued recipient with that time */
    mdb_cursor_open(txn, sp->db_due, &cur);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != SPOOL_DUE_KEY_LEN) {
            spool_verify_note(&bad, err, errsz, "malformed due key", 0, 0);
            continue;
        }
        const uint8_t *kb = k.mv_data;
        uint64_t id = get_be64(kb + 8);
        uint32_t idx = get_be32(kb + 16);
        uint8_t rk[SPOOL_RCPT_KEY_LEN];
        spool_rcpt_key(rk, id, idx);
        k2.mv_size = SPOOL_RCPT_KEY_LEN;
        k2.mv_data = rk;
        struct spool_rcpt_info r;
        if (mdb_get(txn, sp->db_rcpt, &k2, &v2) != 0 || spool_decode_rcpt(&k2, &v2, &r) < 0) {
            spool_verify_note(&bad, err, errsz, "due entry without recipient", id, idx);
            continue;
        }
        if (r.state != SPOOL_RCPT_QUEUED || (uint64_t)r.next_ms != get_be64(kb))
            spool_verify_note(&bad, err, errsz, "due entry disagrees with recipient", id, idx);
        spool_rcpt_info_clear(&r);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return bad;
}

int spool_counts_scan(struct spool *sp, const uint8_t *prefix, size_t plen, spool_count_fn fn,
                      void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k = {plen, (void *)prefix}, v;
    int rc;

    if (plen == 0 || plen > SPOOL_COUNT_KEY_MAX)
        return -1;
    if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    if (mdb_cursor_open(txn, sp->db_counter, &cur) != 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break;
        if (v.mv_size != 8)
            continue;
        if (fn(arg, k.mv_data, k.mv_size, get_be64(v.mv_data)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc != 0 && rc != MDB_NOTFOUND ? -1 : 0;
}

int spool_due_scan(struct spool *sp, const struct spool_due_item *after, int64_t from_ms,
                   int64_t until_ms, struct spool_due_item *out, size_t max)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    uint8_t kb[SPOOL_DUE_KEY_LEN];
    MDB_val k = {sizeof kb, kb}, v;
    size_t n = 0;
    int rc;

    if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    if (mdb_cursor_open(txn, sp->db_due, &cur) != 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    if (after)
        spool_due_key(kb, after->next_ms, after->id, after->idx);
    else
        spool_due_key(kb, from_ms < 0 ? 0 : from_ms, 0, 0);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && after && k.mv_size == SPOOL_DUE_KEY_LEN && memcmp(k.mv_data, kb, sizeof kb) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT); /* strictly after */
    for (; rc == 0 && n < max; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != SPOOL_DUE_KEY_LEN)
            continue;
        const uint8_t *p = k.mv_data;
        int64_t t = (int64_t)get_be64(p);
        if (t > until_ms)
            break;
        out[n].next_ms = t;
        out[n].id = get_be64(p + 8);
        out[n].idx = get_be32(p + 16);
        n++;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return -1;
    return (int)n;
}

/* spool_rcpt_domain - the domain octets of a stored recipient record; false when
 * the record is malformed (spool_decode_rcpt then refuses it too) */
static bool spool_rcpt_domain(const MDB_val *v, const char **dom, size_t *len)
{
    struct spool_rcpt_rec rec;
    if (v->mv_size < sizeof rec) return false;
    memcpy(&rec, v->mv_data, sizeof rec);
    if (v->mv_size != sizeof rec + rec.addr_len + rec.reply_len) return false;
    const char *addr = (const char *)v->mv_data + sizeof rec;
    const char *at = memrchr(addr, '@', rec.addr_len);
    *dom = at ? at + 1 : addr + rec.addr_len;
    *len = (size_t)(addr + rec.addr_len - *dom);
    return true;
}

int spool_load_rcpts(struct spool *sp, const struct spool_due_item *items, size_t n,
                     spool_want_fn want, spool_load_fn fn, void *arg)
{
    MDB_txn *txn;
    struct spool_msg_info m;
    uint64_t cur_id = 0;
    bool have = false;

    memset(&m, 0, sizeof m);
    if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t kb[SPOOL_RCPT_KEY_LEN], mk[8];
        MDB_val k = {SPOOL_RCPT_KEY_LEN, kb}, v, rv;
        spool_rcpt_key(kb, items[i].id, items[i].idx);
        if (mdb_get(txn, sp->db_rcpt, &k, &rv) != 0) continue;
        const char *dom;
        size_t dlen;
        if (want != NULL && spool_rcpt_domain(&rv, &dom, &dlen) && !want(arg, dom, dlen)) continue;
        if (!have || items[i].id != cur_id) {
            spool_msg_info_free(&m);
            have = false;
            put_be64(mk, items[i].id);
            MDB_val mkv = {8, mk};
            if (mdb_get(txn, sp->db_msg, &mkv, &v) != 0 || spool_decode_msg(&v, false, &m) < 0)
                continue;
            m.id = cur_id = items[i].id;
            have = true;
        }
        struct spool_rcpt_info r;
        if (spool_decode_rcpt(&k, &rv, &r) < 0) continue;
        fn(arg, &items[i], &m, &r);
        spool_rcpt_info_clear(&r);
    }
    spool_msg_info_free(&m);
    mdb_txn_abort(txn);
    return 0;
}

int spool_msg_content(struct spool *sp, uint64_t id, struct vbuf *out)
{
    vbuf_reset(out);
    return spool_msg_content_live(sp, id, out, NULL, 0, NULL);
}

int spool_msg_content_live(struct spool *sp, uint64_t id, struct vbuf *out, const uint32_t *idx,
                           uint32_t n, bool *live)
{
    MDB_txn *txn;
    uint8_t kb[8];
    MDB_val k = {8, kb}, v;
    struct spool_msg_rec rec;
    int ret = -1;

    if (mdb_txn_begin(sp->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    put_be64(kb, id);
    if (mdb_get(txn, sp->db_msg, &k, &v) == 0 && v.mv_size >= sizeof rec) {
        memcpy(&rec, v.mv_data, sizeof rec);
        size_t off = sizeof rec + spool_rec_strs(&rec);
        if (off + rec.content_len == v.mv_size &&
            vbuf_append(out, (const uint8_t *)v.mv_data + off, rec.content_len) == 0)
            ret = 0;
    }
    for (uint32_t i = 0; ret == 0 && i < n; i++) {
        uint8_t rk[SPOOL_RCPT_KEY_LEN];
        spool_rcpt_key(rk, id, idx[i]);
        MDB_val rkv = {sizeof rk, rk}, rv;
        live[i] = mdb_get(txn, sp->db_rcpt, &rkv, &rv) == 0;
    }
    mdb_txn_abort(txn);
    return ret;
}
