/*
 * test_warmup - the shared warm-up counts: caps per (source, class, UTC day),
 * giving counts back, the clock stepped back, counts shared by threads, and counts
 * committed with an outcome op surviving a reopen of a real LMDB spool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "msgid.h"
#include "spool.h"
#include "util.h"
#include "warmup.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DAY 20000 /* a UTC day number (2024-10-04) */

/* a cap holds per (source, class, day); other keys count apart */
static void test_cap_per_key(void **state)
{
    (void)state;
    struct warmup *w = warmup_new();
    assert_true(warmup_take(w, "s1", "gmail", DAY, 2));
    assert_true(warmup_take(w, "s1", "gmail", DAY, 2));
    assert_false(warmup_take(w, "s1", "gmail", DAY, 2));
    assert_int_equal(warmup_count(w, "s1", "gmail", DAY), 2);
    /* another class, another source, the next day: their own counts */
    assert_true(warmup_take(w, "s1", "yahoo", DAY, 2));
    assert_true(warmup_take(w, "s2", "gmail", DAY, 2));
    assert_true(warmup_take(w, "s1", "gmail", DAY + 1, 2));
    assert_int_equal(warmup_count(w, "s1", "gmail", DAY + 1), 1);
    /* a clock stepped back reads the old day's full count: no reopening */
    assert_false(warmup_take(w, "s1", "gmail", DAY, 2));
    /* a higher cap later the same day lets more through */
    assert_true(warmup_take(w, "s1", "gmail", DAY, 3));
    assert_false(warmup_take(w, "s1", "gmail", DAY, 3));
    /* no cap: allowed and not counted */
    assert_true(warmup_take(w, "s9", "gmail", DAY, -1));
    assert_int_equal(warmup_count(w, "s9", "gmail", DAY), 0);
    /* cap 0: nothing today */
    assert_false(warmup_take(w, "s3", "gmail", DAY, 0));
    warmup_free(w);
}

/* a message that did not go out gives its count back, by names or by key */
static void test_untake(void **state)
{
    (void)state;
    struct warmup *w = warmup_new();
    uint8_t key[WARMUP_KEY_MAX];
    size_t kl = warmup_key(key, sizeof key, "s1", "gmail", DAY);
    assert_true(kl > 0);
    assert_true(warmup_take(w, "s1", "gmail", DAY, 1));
    assert_false(warmup_take(w, "s1", "gmail", DAY, 1));
    warmup_untake_key(w, key, kl);
    assert_int_equal(warmup_count(w, "s1", "gmail", DAY), 0);
    assert_true(warmup_take(w, "s1", "gmail", DAY, 1));
    warmup_untake(w, "s1", "gmail", DAY);
    warmup_untake(w, "s1", "gmail", DAY); /* never below zero */
    assert_int_equal(warmup_count(w, "s1", "gmail", DAY), 0);
    /* a key that is not a warm-up key is ignored */
    warmup_untake_key(w, (const uint8_t *)"xyz", 3);
    warmup_free(w);
}

/* names too long for the table or the key are refused, not truncated */
static void test_long_names(void **state)
{
    (void)state;
    struct warmup *w = warmup_new();
    char longname[100];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    uint8_t key[WARMUP_KEY_MAX];
    assert_int_equal(warmup_key(key, sizeof key, longname, "c", DAY), 0);
    assert_false(warmup_take(w, longname, "c", DAY, 10));
    assert_int_equal(warmup_count(w, longname, "c", DAY), 0);
    warmup_free(w);
}

/* many keys over many days: the table grows and old days are dropped */
static void test_growth(void **state)
{
    (void)state;
    struct warmup *w = warmup_new();
    char name[32];
    for (int d = 0; d < 5; d++)
        for (int i = 0; i < 300; i++) {
            snprintf(name, sizeof name, "src%d", i);
            assert_true(warmup_take(w, name, "cls", DAY + d, 5));
        }
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "src%d", i);
        assert_int_equal(warmup_count(w, name, "cls", DAY + 4), 1);
    }
    warmup_free(w);
}

struct racer {
    struct warmup *w;
    int taken;
};

static void *race_main(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < 5000; i++)
        r->taken += warmup_take(r->w, "shared", "gmail", DAY, 3000);
    return NULL;
}

/* two workers sending to sites of one class never exceed the cap together */
static void test_threads_share_cap(void **state)
{
    (void)state;
    struct warmup *w = warmup_new();
    struct racer a = {w, 0}, b = {w, 0};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, race_main, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, race_main, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.taken + b.taken, 3000);
    assert_int_equal(warmup_count(w, "shared", "gmail", DAY), 3000);
    warmup_free(w);
}

/* ---- persistence through the spool ------------------------------------------------ */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
};

static void op_done(struct spool_op *op, void *arg)
{
    (void)op;
    struct waiter *wt = arg;
    pthread_mutex_lock(&wt->mu);
    wt->done++;
    pthread_cond_signal(&wt->cv);
    pthread_mutex_unlock(&wt->mu);
}

static void run_op(struct spool *sp, struct spool_op *op, struct waiter *wt)
{
    op->done = op_done;
    op->arg = wt;
    pthread_mutex_lock(&wt->mu);
    int before = wt->done;
    pthread_mutex_unlock(&wt->mu);
    assert_int_equal(spool_submit(sp, op), 0);
    pthread_mutex_lock(&wt->mu);
    while (wt->done == before)
        pthread_cond_wait(&wt->cv, &wt->mu);
    pthread_mutex_unlock(&wt->mu);
    assert_int_equal(op->result, SPOOL_OK);
}

static struct spool *open_spool(const char *dir)
{
    struct spool_params p = {.dir = dir, .map_size = 16 << 20, .reserve_percent = 5,
                             .sync = false, .group_usec = 0, .group_max = 64};
    char err[256];
    struct spool *sp = NULL;
    assert_int_equal(spool_open(&sp, &p, err, sizeof err), 0);
    return sp;
}

/* counts added with outcome ops survive a reopen; older days are not loaded */
static void test_persisted(void **state)
{
    (void)state;
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/volley-test-warmup-XXXXXX");
    assert_non_null(mkdtemp(dir));
    struct waiter wt = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    struct spool *sp = open_spool(dir);

    /* one message with one recipient whose outcome carries the count */
    const char *rcpts[] = {"a@example.com"};
    struct spool_msg m = {.id = msgid_next(), .created_ms = now_ms(), .sender = "s@example.org",
                          .campaign = "", .client = "unix", .helo = "h", .rcpts = rcpts,
                          .nrcpt = 1, .content = (const uint8_t *)"x\r\n", .content_len = 3};
    struct spool_op ins = {.type = SPOOL_OP_INSERT, .msg = &m};
    run_op(sp, &ins, &wt);

    uint8_t k_today[WARMUP_KEY_MAX], k_old[WARMUP_KEY_MAX];
    size_t l_today = warmup_key(k_today, sizeof k_today, "s1", "gmail", DAY);
    size_t l_old = warmup_key(k_old, sizeof k_old, "s1", "gmail", DAY - 1);
    struct spool_count counts[3] = {
        {k_today, l_today, 1}, {k_today, l_today, 4}, {k_old, l_old, 7}};
    struct spool_outcome out = {.id = m.id, .idx = 0, .kind = SPOOL_OUT_DELIVERED};
    struct spool_op oc = {.type = SPOOL_OP_OUTCOMES, .outcomes = &out, .noutcomes = 1,
                          .counts = counts, .ncounts = 3};
    run_op(sp, &oc, &wt);
    assert_true(out.applied);
    spool_close(sp);

    sp = open_spool(dir);
    struct warmup *w = warmup_new();
    assert_int_equal(warmup_load(w, sp, DAY), 0);
    assert_int_equal(warmup_count(w, "s1", "gmail", DAY), 5);
    assert_int_equal(warmup_count(w, "s1", "gmail", DAY - 1), 0); /* an old day */
    assert_true(warmup_take(w, "s1", "gmail", DAY, 6));
    assert_false(warmup_take(w, "s1", "gmail", DAY, 6));
    warmup_free(w);
    char err[128];
    assert_int_equal(spool_verify(sp, err, sizeof err), 0);
    spool_close(sp);

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_per_key),       cmocka_unit_test(test_untake),
        cmocka_unit_test(test_long_names),        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_threads_share_cap), cmocka_unit_test(test_persisted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
