/*
 * test_supp - suppression in a real LMDB spool: entries and their checks (address,
 * domain, hash; global, sender-domain and list scopes; expiry), the purge of the
 * queued recipients an entry matches, forget, repeated soft bounces, sent records,
 * and the addr index staying consistent through all of it.  Also the pure
 * normalisation and record encoding of suppress.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "msgid.h"
#include "spool.h"
#include "suppress.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fx {
    char dir[64];
    struct spool *sp;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
};

static void op_done(struct spool_op *op, void *arg)
{
    (void)op;
    struct fx *f = arg;
    pthread_mutex_lock(&f->mu);
    f->done++;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void run(struct fx *f, struct spool_op *op)
{
    op->done = op_done;
    op->arg = f;
    pthread_mutex_lock(&f->mu);
    int before = f->done;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(spool_submit(f->sp, op), 0);
    pthread_mutex_lock(&f->mu);
    while (f->done == before)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(op->result, SPOOL_OK);
}

static struct spool *open_sp(const char *dir)
{
    struct spool_params p = {.dir = dir, .map_size = 32 << 20, .reserve_percent = 5,
                             .sync = false, .group_usec = 0, .group_max = 64};
    char err[256];
    struct spool *sp = NULL;
    assert_int_equal(spool_open(&sp, &p, err, sizeof err), 0);
    return sp;
}

static int setup(void **state)
{
    struct fx *f = xcalloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/volley-test-supp-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->sp = open_sp(f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char err[256], cmd[128];
    long bad = spool_verify(f->sp, err, sizeof err);
    if (bad) fail_msg("spool inconsistent: %s", err);
    spool_close(f->sp);
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static uint64_t insert(struct fx *f, const char *sender, const char *list, const char *const *rcpts,
                       uint32_t n)
{
    struct spool_msg m = {.id = msgid_next(), .created_ms = now_ms(), .sender = sender,
                          .campaign = "camp", .client = "unix", .helo = "h", .list = list,
                          .rcpts = rcpts, .nrcpt = n, .content = (const uint8_t *)"x\r\n",
                          .content_len = 3};
    struct spool_op op = {.type = SPOOL_OP_INSERT, .msg = &m};
    run(f, &op);
    return m.id;
}

static size_t rec_bytes(uint8_t *buf, enum SUPPRESS_REASON reason, int64_t expires)
{
    struct suppress_rec r = {.reason = reason, .created_ms = now_ms(), .expires_ms = expires};
    snprintf(r.source, sizeof r.source, "test");
    return suppress_rec_encode(&r, buf, SUPPRESS_REC_MAX);
}

static uint32_t queued(struct fx *f, uint64_t id)
{
    struct spool_msg_info m;
    int why;
    if (spool_msg_load(f->sp, id, false, &m, &why) < 0) return 0;
    uint32_t n = m.nrcpt;
    spool_msg_info_free(&m);
    return n;
}

static int check(struct fx *f, const char *addr, const char *sdom, const char *list, char *matched)
{
    struct suppress_rec r;
    return spool_supp_check(f->sp, addr, sdom, list, now_ms(), &r, matched, 200);
}

/* ---- pure helpers ------------------------------------------------------------------ */

static void test_normalize_and_records(void **state)
{
    (void)state;
    char out[SUPPRESS_ADDR_MAX];
    assert_int_equal(suppress_normalize("  <User@Example.COM> ", out, sizeof out), 0);
    assert_string_equal(out, "user@example.com");
    assert_int_equal(suppress_normalize("@Example.org", out, sizeof out), 0);
    assert_string_equal(out, "@example.org");
    assert_int_equal(suppress_normalize("nodomain", out, sizeof out), -1);
    assert_int_equal(suppress_normalize("user@", out, sizeof out), -1);
    assert_int_equal(suppress_normalize("us er@x.org", out, sizeof out), -1);
    assert_int_equal(suppress_normalize("", out, sizeof out), -1);
    assert_true(suppress_scope_valid(""));
    assert_true(suppress_scope_valid("list:news"));
    assert_true(suppress_scope_valid("domain:example.org"));
    assert_false(suppress_scope_valid("list:"));
    assert_false(suppress_scope_valid("other:x"));
    assert_false(suppress_scope_valid("list:a b"));

    uint8_t buf[SUPPRESS_REC_MAX];
    struct suppress_rec r = {.reason = SUPPRESS_COMPLAINT, .created_ms = 123, .expires_ms = 456},
                        back;
    snprintf(r.source, sizeof r.source, "arf abuse");
    size_t n = suppress_rec_encode(&r, buf, sizeof buf);
    assert_int_equal(suppress_rec_decode(buf, n, &back), 0);
    assert_int_equal(back.reason, SUPPRESS_COMPLAINT);
    assert_int_equal(back.created_ms, 123);
    assert_int_equal(back.expires_ms, 456);
    assert_string_equal(back.source, "arf abuse");
    assert_int_equal(suppress_rec_decode(buf, n - 1, &back), -1);
    buf[1] = 99;
    assert_int_equal(suppress_rec_decode(buf, n, &back), -1);

    enum SUPPRESS_REASON rr;
    assert_int_equal(suppress_reason_parse("unsubscribe", &rr), 0);
    assert_int_equal(rr, SUPPRESS_UNSUBSCRIBE);
    assert_string_equal(suppress_reason_str(SUPPRESS_HARD_BOUNCE), "hard-bounce");

    char h1[SUPPRESS_HASH_LEN + 1], h2[SUPPRESS_HASH_LEN + 1];
    suppress_hash_target("a@b.c", h1);
    suppress_hash_target("a@b.d", h2);
    assert_int_equal(strlen(h1), 65);
    assert_true(h1[0] == '#' && strcmp(h1, h2) != 0);
}

/* ---- entries, checks and purges ---------------------------------------------------- */

static void test_put_purges_matching_queued(void **state)
{
    struct fx *f = *state;
    const char *r1[] = {"Bob@Example.com", "carol@example.com", "dave@other.org"};
    const char *r2[] = {"bob@example.com"};
    uint64_t m1 = insert(f, "s@sender.org", "", r1, 3);
    uint64_t m2 = insert(f, "s@sender.org", "", r2, 1);
    uint8_t rec[SUPPRESS_REC_MAX];
    size_t rl = rec_bytes(rec, SUPPRESS_HARD_BOUNCE, 0);
    struct spool_supp s = {.act = SPOOL_SUPP_PUT, .scope = "", .target = "bob@example.com",
                           .rec = rec, .reclen = rl, .purge = true};
    struct spool_op op = {.type = SPOOL_OP_SUPPRESS, .supp = &s, .nsupp = 1};
    run(f, &op);
    assert_true(s.applied);
    assert_int_equal(op.npurged, 2); /* both Bob recipients, whatever their case */
    assert_int_equal(queued(f, m1), 2);
    assert_int_equal(queued(f, m2), 0); /* the message went with its last recipient */
    assert_string_equal(op.purged[0].campaign, "camp");
    assert_string_equal(op.purged[0].sender, "s@sender.org");
    free(op.purged);

    char matched[200];
    assert_int_equal(check(f, "bob@example.com", "", "", matched), 1);
    assert_string_equal(matched, "bob@example.com");
    assert_int_equal(check(f, "carol@example.com", "", "", matched), 0);

    /* a domain entry: every address there, queued or later */
    struct spool_supp d = {.act = SPOOL_SUPP_PUT, .scope = "", .target = "@example.com",
                           .rec = rec, .reclen = rl, .purge = true};
    struct spool_op op2 = {.type = SPOOL_OP_SUPPRESS, .supp = &d, .nsupp = 1};
    run(f, &op2);
    assert_int_equal(op2.npurged, 1); /* carol */
    free(op2.purged);
    assert_int_equal(queued(f, m1), 1);
    assert_int_equal(check(f, "zed@example.com", "", "", matched), 1);
    assert_string_equal(matched, "@example.com");

    /* removing the entries makes the addresses mailable again */
    struct spool_supp del[2] = {{.act = SPOOL_SUPP_DEL, .scope = "", .target = "@example.com"},
                                {.act = SPOOL_SUPP_DEL, .scope = "", .target = "nosuch@x.org"}};
    struct spool_op op3 = {.type = SPOOL_OP_SUPPRESS, .supp = del, .nsupp = 2};
    run(f, &op3);
    assert_true(del[0].applied);
    assert_false(del[1].applied);
    assert_int_equal(check(f, "zed@example.com", "", "", matched), 0);
}

static void test_scopes(void **state)
{
    struct fx *f = *state;
    const char *r[] = {"ann@dest.test"};
    uint64_t news = insert(f, "n@a.example", "news", r, 1);
    uint64_t promo = insert(f, "p@b.example", "promo", r, 1);
    uint8_t rec[SUPPRESS_REC_MAX];
    size_t rl = rec_bytes(rec, SUPPRESS_UNSUBSCRIBE, 0);
    struct spool_supp s = {.act = SPOOL_SUPP_PUT, .scope = "list:news", .target = "ann@dest.test",
                           .rec = rec, .reclen = rl, .purge = true};
    struct spool_op op = {.type = SPOOL_OP_SUPPRESS, .supp = &s, .nsupp = 1};
    run(f, &op);
    assert_int_equal(op.npurged, 1);
    assert_string_equal(op.purged[0].list, "news");
    free(op.purged);
    assert_int_equal(queued(f, news), 0);
    assert_int_equal(queued(f, promo), 1); /* another list: still queued */
    char matched[200];
    assert_int_equal(check(f, "ann@dest.test", "a.example", "news", matched), 1);
    assert_string_equal(matched, "list:news ann@dest.test");
    assert_int_equal(check(f, "ann@dest.test", "a.example", "promo", matched), 0);
    assert_int_equal(check(f, "ann@dest.test", "", "", matched), 0);

    /* a sender-domain entry purges only that sender's mail */
    struct spool_supp d = {.act = SPOOL_SUPP_PUT, .scope = "domain:b.example",
                           .target = "ann@dest.test", .rec = rec, .reclen = rl, .purge = true};
    struct spool_op op2 = {.type = SPOOL_OP_SUPPRESS, .supp = &d, .nsupp = 1};
    run(f, &op2);
    assert_int_equal(op2.npurged, 1);
    free(op2.purged);
    assert_int_equal(queued(f, promo), 0);
    assert_int_equal(check(f, "ann@dest.test", "b.example", "", matched), 1);
    assert_int_equal(check(f, "ann@dest.test", "c.example", "", matched), 0);
}

static void test_expiry(void **state)
{
    struct fx *f = *state;
    uint8_t rec[SUPPRESS_REC_MAX];
    size_t rl = rec_bytes(rec, SUPPRESS_MANUAL, now_ms() - 1000); /* already expired */
    struct spool_supp s = {.act = SPOOL_SUPP_PUT, .scope = "", .target = "old@x.test",
                           .rec = rec, .reclen = rl};
    struct spool_op op = {.type = SPOOL_OP_SUPPRESS, .supp = &s, .nsupp = 1};
    run(f, &op);
    assert_int_equal(check(f, "old@x.test", "", "", NULL), 0);
}

static int count_entries(void *arg, const char *scope, const char *target,
                         const struct suppress_rec *rec)
{
    (void)scope;
    (void)target;
    (void)rec;
    (*(int *)arg)++;
    return 0;
}

static void test_forget_keeps_only_the_hash(void **state)
{
    struct fx *f = *state;
    const char *r[] = {"eve@dest.test", "other@dest.test"};
    uint64_t id = insert(f, "s@a.example", "news", r, 2);
    uint8_t rec[SUPPRESS_REC_MAX];
    size_t rl = rec_bytes(rec, SUPPRESS_COMPLAINT, 0);
    struct spool_supp puts[2] = {
        {.act = SPOOL_SUPP_PUT, .scope = "", .target = "eve@dest.test", .rec = rec, .reclen = rl},
        {.act = SPOOL_SUPP_PUT, .scope = "list:news", .target = "eve@dest.test", .rec = rec,
         .reclen = rl}};
    struct spool_op op = {.type = SPOOL_OP_SUPPRESS, .supp = puts, .nsupp = 2};
    run(f, &op);
    assert_int_equal(queued(f, id), 2); /* no purge asked */

    char hashed[SUPPRESS_HASH_LEN + 1];
    suppress_hash_target("eve@dest.test", hashed);
    uint8_t frec[SUPPRESS_REC_MAX];
    size_t fl = rec_bytes(frec, SUPPRESS_FORGOTTEN, 0);
    struct spool_supp fg = {.act = SPOOL_SUPP_FORGET, .target = "eve@dest.test",
                            .hashed = hashed, .rec = frec, .reclen = fl, .purge = true};
    struct spool_op op2 = {.type = SPOOL_OP_SUPPRESS, .supp = &fg, .nsupp = 1};
    run(f, &op2);
    assert_true(fg.applied);
    assert_int_equal(op2.npurged, 1);
    free(op2.purged);
    assert_int_equal(queued(f, id), 1);
    int n = 0;
    assert_int_equal(spool_supp_walk(f->sp, NULL, NULL, NULL, count_entries, &n), 0);
    assert_int_equal(n, 1); /* the plain entries are gone, the hash stays */
    char matched[200];
    assert_int_equal(check(f, "eve@dest.test", "", "", matched), 1);
    assert_string_equal(matched, hashed);
}

static void test_soft_bounces_suppress_at_the_limit(void **state)
{
    struct fx *f = *state;
    const char *r[] = {"soft@dest.test"};
    uint64_t id = insert(f, "s@a.example", "", r, 1);
    uint8_t rec[SUPPRESS_REC_MAX];
    size_t rl = rec_bytes(rec, SUPPRESS_SOFT_BOUNCE, 0);
    int64_t day = 20000;
    /* two soft bounces long ago fall out of the 7-day window */
    for (int i = 0; i < 2; i++) {
        struct spool_soft s = {.addr = "soft@dest.test", .day = day - 30, .limit = 3,
                               .window_days = 7, .rec = rec, .reclen = rl};
        struct spool_op op = {.type = SPOOL_OP_SUPPRESS, .soft = &s, .nsoft = 1};
        run(f, &op);
        assert_false(s.suppressed);
    }
    for (int i = 0; i < 3; i++) {
        struct spool_soft s = {.addr = "soft@dest.test", .day = day - i, .limit = 3,
                               .window_days = 7, .rec = rec, .reclen = rl};
        struct spool_op op = {.type = SPOOL_OP_SUPPRESS, .soft = &s, .nsoft = 1};
        run(f, &op);
        assert_int_equal(s.suppressed, i == 2);
        assert_int_equal(op.npurged, i == 2 ? 1 : 0);
        free(op.purged);
    }
    assert_int_equal(queued(f, id), 0);
    assert_int_equal(check(f, "soft@dest.test", "", "", NULL), 1);
}

static void test_sent_records(void **state)
{
    struct fx *f = *state;
    const char *r[] = {"sent@dest.test", "later@dest.test"};
    uint64_t id = insert(f, "s@a.example", "news", r, 2);
    struct spool_outcome outs[2] = {{.id = id, .idx = 0, .kind = SPOOL_OUT_DELIVERED},
                                    {.id = id, .idx = 1, .kind = SPOOL_OUT_BOUNCED}};
    struct spool_op op = {.type = SPOOL_OP_OUTCOMES, .outcomes = outs, .noutcomes = 2,
                          .keep_sent = true};
    run(f, &op);
    struct spool_sent s;
    assert_int_equal(spool_sent_get(f->sp, id, 0, &s), 0);
    assert_string_equal(s.addr, "sent@dest.test");
    assert_string_equal(s.campaign, "camp");
    assert_string_equal(s.list, "news");
    assert_string_equal(s.sender, "s@a.example");
    assert_int_equal(spool_sent_get(f->sp, id, 1, &s), -1); /* bounced: not kept */
    struct spool_op purge = {.type = SPOOL_OP_SENT_PURGE};
    purge.sel.id = id + 1;
    run(f, &purge);
    assert_int_equal(purge.count, 1);
    assert_int_equal(spool_sent_get(f->sp, id, 0, &s), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize_and_records),
        cmocka_unit_test_setup_teardown(test_put_purges_matching_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scopes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forget_keeps_only_the_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_soft_bounces_suppress_at_the_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sent_records, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
