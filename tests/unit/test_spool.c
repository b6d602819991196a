/*
 * test_spool - the LMDB spool and its writer: inserts, reads, hold/release/delete,
 * group commit, the reserve / map-full path, persistence across reopen, and the
 * invariant checker.  Each test works on its own temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "msgid.h"
#include "spool.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
};

static void test_done(struct spool_op *op, void *arg)
{
    struct waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->done++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void wait_for(struct waiter *w, int n)
{
    pthread_mutex_lock(&w->mu);
    while (w->done < n)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

struct fixture {
    char dir[64];
    struct spool *sp;
    struct waiter w;
};

static struct spool *open_spool(const char *dir, uint64_t map, unsigned group_usec)
{
    struct spool_params p = {.dir = dir,
                             .map_size = map,
                             .reserve_percent = 5,
                             .sync = false,
                             .group_usec = group_usec,
                             .group_max = 512};
    char err[256];
    struct spool *sp = NULL;
    assert_int_equal(spool_open(&sp, &p, err, sizeof err), 0);
    return sp;
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/volley-test-spool-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    pthread_mutex_init(&f->w.mu, NULL);
    pthread_cond_init(&f->w.cv, NULL);
    f->sp = open_spool(f->dir, 64 << 20, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    spool_close(f->sp);
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* insert - store one message synchronously; returns the op result */
static int insert(struct fixture *f, uint64_t *id, const char *campaign, const char *const *rcpts,
                  uint32_t n, const char *body, size_t len)
{
    struct spool_msg m = {.id = msgid_next(),
                          .created_ms = now_ms(),
                          .sender = "sender@example.org",
                          .campaign = campaign,
                          .client = "127.0.0.1",
                          .helo = "client.test",
                          .rcpts = rcpts,
                          .nrcpt = n,
                          .content = (const uint8_t *)body,
                          .content_len = len};
    struct spool_op op = {.type = SPOOL_OP_INSERT, .msg = &m, .done = test_done, .arg = &f->w};
    int before = f->w.done;
    assert_int_equal(spool_submit(f->sp, &op), 0);
    wait_for(&f->w, before + 1);
    if (id)
        *id = m.id;
    return op.result;
}

/* change - run a hold/release/delete synchronously */
static struct spool_op change(struct fixture *f, enum SPOOL_OP type, enum SPOOL_SEL kind,
                              uint64_t id, const char *text)
{
    struct spool_op op = {.type = type, .done = test_done, .arg = &f->w};
    op.sel.kind = kind;
    op.sel.id = id;
    if (text)
        str_copy(op.sel.text, sizeof op.sel.text, text);
    int before = f->w.done;
    assert_int_equal(spool_submit(f->sp, &op), 0);
    wait_for(&f->w, before + 1);
    return op;
}

static void assert_consistent(struct spool *sp)
{
    char err[256];
    long bad = spool_verify(sp, err, sizeof err);
    if (bad != 0)
        fail_msg("spool inconsistent: %ld violations, first: %s", bad, err);
}

static void test_insert_and_load(void **state)
{
    struct fixture *f = *state;
    const char *rcpts[] = {"a@one.test", "b@two.test"};
    const char body[] = "Subject: hi\r\n\r\nbody\r\n";
    uint64_t id;
    assert_int_equal(insert(f, &id, "spring", rcpts, 2, body, sizeof body - 1), SPOOL_OK);

    struct spool_msg_info m;
    int why;
    assert_int_equal(spool_msg_load(f->sp, id, true, &m, &why), 0);
    assert_string_equal(m.sender, "sender@example.org");
    assert_string_equal(m.campaign, "spring");
    assert_string_equal(m.helo, "client.test");
    assert_int_equal(m.content_len, sizeof body - 1);
    assert_memory_equal(m.content, body, sizeof body - 1);
    assert_int_equal(m.nrcpt, 2);
    assert_string_equal(m.rcpts[1].addr, "b@two.test");
    assert_string_equal(m.rcpts[1].domain, "two.test");
    assert_int_equal(m.rcpts[0].state, SPOOL_RCPT_QUEUED);
    spool_msg_info_free(&m);

    assert_int_equal(spool_msg_load(f->sp, id + 1, false, &m, &why), -1);
    assert_int_equal(why, SPOOL_ENOENT);

    struct spool_totals t;
    assert_int_equal(spool_totals(f->sp, &t), 0);
    assert_int_equal(t.msgs, 1);
    assert_int_equal(t.rcpts, 2);
    assert_int_equal(t.due, 2);
    assert_consistent(f->sp);
}

/* spool_load_rcpts: every due recipient once with its message, or, with a domain
 * filter, only those the filter wants - and the filter sees the stored domain
 * octets after the last '@' */
struct load_seen {
    char addrs[8][64];
    char doms[8][64];
    int n, asked;
};

static bool load_want_two(void *arg, const char *domain, size_t len)
{
    struct load_seen *ls = arg;
    assert_true(len < sizeof ls->doms[0]);
    memcpy(ls->doms[ls->asked], domain, len);
    ls->doms[ls->asked++][len] = '\0';
    return len == 8 && memcmp(domain, "Two.TEST", 8) == 0;
}

static void load_take(void *arg, const struct spool_due_item *item, const struct spool_msg_info *m,
                      const struct spool_rcpt_info *r)
{
    struct load_seen *ls = arg;
    assert_int_equal(m->id, item->id);
    assert_string_equal(m->sender, "sender@example.org");
    str_copy(ls->addrs[ls->n++], sizeof ls->addrs[0], r->addr);
}

static void test_load_rcpts_filter(void **state)
{
    struct fixture *f = *state;
    const char *rcpts[] = {"a@one.test", "b@Two.TEST", "\"c@x\"@three.test", "d@Two.TEST"};
    const char body[] = "Subject: hi\r\n\r\nbody\r\n";
    assert_int_equal(insert(f, NULL, "", rcpts, 4, body, sizeof body - 1), SPOOL_OK);
    struct spool_due_item items[8];
    int n = spool_due_scan(f->sp, NULL, 0, now_ms() + 1000, items, 8);
    assert_int_equal(n, 4);

    struct load_seen all = {0}, two = {0};
    assert_int_equal(spool_load_rcpts(f->sp, items, (size_t)n, NULL, load_take, &all), 0);
    assert_int_equal(all.n, 4);
    assert_int_equal(all.asked, 0);
    assert_int_equal(spool_load_rcpts(f->sp, items, (size_t)n, load_want_two, load_take, &two), 0);
    assert_int_equal(two.asked, 4);
    assert_string_equal(two.doms[0], "one.test");
    assert_string_equal(two.doms[1], "Two.TEST");
    assert_string_equal(two.doms[2], "three.test");
    assert_int_equal(two.n, 2);
    assert_string_equal(two.addrs[0], "b@Two.TEST");
    assert_string_equal(two.addrs[1], "d@Two.TEST");
}

static void test_hold_release_delete(void **state)
{
    struct fixture *f = *state;
    const char *r1[] = {"a@one.test", "b@two.test"};
    const char *r2[] = {"c@two.test"};
    uint64_t id1, id2;
    assert_int_equal(insert(f, &id1, "c1", r1, 2, "x\r\n", 3), SPOOL_OK);
    assert_int_equal(insert(f, &id2, "c2", r2, 1, "y\r\n", 3), SPOOL_OK);

    struct spool_op op = change(f, SPOOL_OP_HOLD, SPOOL_SEL_DOMAIN, 0, "two.test");
    assert_int_equal(op.result, SPOOL_OK);
    assert_int_equal(op.count, 2);
    struct spool_totals t;
    spool_totals(f->sp, &t);
    assert_int_equal(t.due, 1); /* only a@one.test is still due */
    assert_consistent(f->sp);

    op = change(f, SPOOL_OP_HOLD, SPOOL_SEL_DOMAIN, 0, "two.test"); /* idempotent */
    assert_int_equal(op.count, 0);

    op = change(f, SPOOL_OP_RELEASE, SPOOL_SEL_ID, id2, NULL);
    assert_int_equal(op.count, 1);
    spool_totals(f->sp, &t);
    assert_int_equal(t.due, 2);
    assert_consistent(f->sp);

    /* deleting one domain's recipient keeps the message while others remain */
    op = change(f, SPOOL_OP_DELETE, SPOOL_SEL_DOMAIN, 0, "one.test");
    assert_int_equal(op.count, 1);
    assert_int_equal(op.msgs, 0);
    op = change(f, SPOOL_OP_DELETE, SPOOL_SEL_CAMPAIGN, 0, "c1");
    assert_int_equal(op.count, 1);
    assert_int_equal(op.msgs, 1);
    spool_totals(f->sp, &t);
    assert_int_equal(t.msgs, 1);
    assert_int_equal(t.rcpts, 1);
    assert_consistent(f->sp);

    op = change(f, SPOOL_OP_DELETE, SPOOL_SEL_CAMPAIGN, 0, "nothing");
    assert_int_equal(op.result, SPOOL_OK);
    assert_int_equal(op.count, 0);
}

static void test_group_commit(void **state)
{
    struct fixture *f = *state;
    spool_close(f->sp);
    f->sp = open_spool(f->dir, 64 << 20, 20000); /* a 20 ms window */
    enum { N = 100 };
    struct spool_msg msgs[N];
    struct spool_op ops[N];
    const char *rcpts[] = {"a@one.test"};
    struct spool_totals before, after;
    spool_totals(f->sp, &before);
    for (int i = 0; i < N; i++) {
        msgs[i] = (struct spool_msg){.id = msgid_next(), .created_ms = now_ms(), .sender = "",
                                     .campaign = "", .client = "unix", .helo = "h",
                                     .rcpts = rcpts, .nrcpt = 1,
                                     .content = (const uint8_t *)"z\r\n", .content_len = 3};
        ops[i] = (struct spool_op){.type = SPOOL_OP_INSERT, .msg = &msgs[i], .done = test_done,
                                   .arg = &f->w};
        assert_int_equal(spool_submit(f->sp, &ops[i]), 0);
    }
    wait_for(&f->w, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(ops[i].result, SPOOL_OK);
    spool_totals(f->sp, &after);
    assert_int_equal(after.msgs, N);
    /* 100 submissions inside one window share a handful of transactions */
    assert_true(after.commits - before.commits < 10);
}

static void test_full_and_recover(void **state)
{
    struct fixture *f = *state;
    spool_close(f->sp);
    f->sp = open_spool(f->dir, 1 << 20, 0); /* a 1 MiB map */
    const char *rcpts[] = {"a@one.test"};
    size_t len = 32 * 1024;
    char *body = xmalloc(len);
    memset(body, 'x', len);
    uint64_t ids[64];
    int stored = 0, rc = SPOOL_OK;
    while (stored < 64 && (rc = insert(f, &ids[stored], "", rcpts, 1, body, len)) == SPOOL_OK)
        stored++;
    assert_int_equal(rc, SPOOL_EFULL);
    assert_true(stored > 5);
    assert_consistent(f->sp);

    /* deletes still work when full, and make room again */
    for (int i = 0; i < 4; i++)
        assert_int_equal(change(f, SPOOL_OP_DELETE, SPOOL_SEL_ID, ids[i], NULL).result,
                         SPOOL_OK);
    assert_int_equal(insert(f, NULL, "", rcpts, 1, body, len), SPOOL_OK);

    /* what was stored before the full condition is intact */
    for (int i = 4; i < stored; i++) {
        struct spool_msg_info m;
        int why;
        assert_int_equal(spool_msg_load(f->sp, ids[i], true, &m, &why), 0);
        assert_int_equal(m.content_len, len);
        assert_memory_equal(m.content, body, len);
        spool_msg_info_free(&m);
    }
    assert_consistent(f->sp);
    free(body);
}

static void test_reopen_persists(void **state)
{
    struct fixture *f = *state;
    const char *rcpts[] = {"a@one.test"};
    uint64_t id;
    assert_int_equal(insert(f, &id, "", rcpts, 1, "keep\r\n", 6), SPOOL_OK);
    spool_close(f->sp);
    f->sp = open_spool(f->dir, 64 << 20, 0);
    struct spool_msg_info m;
    int why;
    assert_int_equal(spool_msg_load(f->sp, id, true, &m, &why), 0);
    assert_memory_equal(m.content, "keep\r\n", 6);
    spool_msg_info_free(&m);
    /* ids keep growing past what the spool holds */
    assert_true(msgid_next() > id);
}

static void test_second_open_refused(void **state)
{
    struct fixture *f = *state;
    struct spool_params p = {.dir = f->dir, .map_size = 64 << 20, .group_max = 8};
    struct spool *sp2 = NULL;
    char err[256] = "";
    assert_int_equal(spool_open(&sp2, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, "in use"));
}

static void test_msgid(void **state)
{
    (void)state;
    uint64_t a = msgid_next(), b = msgid_next(), back;
    char s[MSGID_STR_LEN + 1];
    assert_true(b > a);
    msgid_format(a, s);
    assert_int_equal(strlen(s), 16);
    assert_int_equal(msgid_parse(s, &back), 0);
    assert_true(back == a);
    assert_int_equal(msgid_parse("0123456789abcdeF", &back), 0);
    assert_int_equal(msgid_parse("0123456789abcdeG", &back), -1);
    assert_int_equal(msgid_parse("0123", &back), -1);
    msgid_floor(b + 1000);
    assert_true(msgid_next() > b + 1000);
    assert_true(msgid_time_ms(msgid_next()) >= now_ms() - 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_insert_and_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_rcpts_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hold_release_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_and_recover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_persists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_open_refused, setup, teardown),
        cmocka_unit_test(test_msgid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
