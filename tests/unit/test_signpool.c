/*
 * test_signpool - the DKIM signing threads.
 *
 * Many tasks go to a pool of real threads and come back through a real mailbox on
 * this thread's event loop.  Each result must be byte for byte what signing the
 * same text on this thread gives (Ed25519 and RSA PKCS#1 v1.5 signatures are
 * deterministic, and t= is fixed), the body hash handed in must be used and the
 * one computed handed back, a key that cannot sign must leave the text as it was
 * and say why, and the pool must stop cleanly with nothing or everything done.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <unistd.h>

#include "dkim.h"
#include "mbox.h"
#include "signpool.h"
#include "util.h"

#define NTASKS 200

static char tmpdir[64], path_ed[96], path_rsa[96];
static struct dkim_key *key_ed, *key_rsa;

static void write_key(EVP_PKEY *pk, const char *path)
{
    assert_non_null(pk);
    BIO *b = BIO_new_file(path, "w");
    assert_non_null(b);
    assert_int_equal(PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL), 1);
    BIO_free(b);
    EVP_PKEY_free(pk);
}

static int setup(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_signpool.XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(path_ed, sizeof path_ed, "%s/ed.pem", tmpdir);
    snprintf(path_rsa, sizeof path_rsa, "%s/rsa.pem", tmpdir);
    write_key(EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"), path_ed);
    write_key(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024), path_rsa);
    char err[256];
    key_ed = dkim_key_load(path_ed, "example.org", "ed", err, sizeof err);
    key_rsa = dkim_key_load(path_rsa, "example.org", "rsa", err, sizeof err);
    return key_ed && key_rsa ? 0 : -1;
}

static int teardown(void **state)
{
    dkim_key_free(key_ed);
    dkim_key_free(key_rsa);
    unlink(path_ed);
    unlink(path_rsa);
    rmdir(tmpdir);
    return 0;
}

/* the message of task i: bodies differ, and every 10th shares one body (the memo) */
static void message(struct vbuf *out, int i)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "From: News <news@example.org>\r\nTo: u%d@dk.test\r\n"
                     "Subject: number %d\r\n\r\nHello %d.\r\n.dot line\r\n\r\n",
                     i, i, i % 10 == 0 ? 0 : i);
    vbuf_init(out, SIZE_MAX);
    assert_int_equal(vbuf_append(out, buf, (size_t)n), 0);
}

struct done_count {
    struct event_base *base;
    int done;
    int want;
};

static struct done_count counter;

static void task_back(void *ctx, struct mbox_msg *m)
{
    struct done_count *c = ctx;
    if (++c->done == c->want) event_base_loopbreak(c->base);
}

static void fill(struct signpool_task *t, int i, struct mbox *mb)
{
    memset(t, 0, sizeof *t);
    t->msg.run = task_back;
    t->reply = mb;
    t->keys[0] = key_ed;
    t->keys[1] = key_rsa;
    t->nkeys = 2;
    t->params.timestamp = 1700000000;
    t->use_bh = true;
    message(&t->text, i);
}

/* a loop, its mailbox and a pool of nthreads: what each test signs through */
struct rig {
    struct event_base *base;
    struct mbox *mb;
    struct signpool *pool;
};

static void rig_up(struct rig *r, int nthreads, int want)
{
    char err[200];
    r->base = event_base_new();
    assert_non_null(r->base);
    counter = (struct done_count){r->base, 0, want};
    r->mb = mbox_new(r->base, &counter);
    assert_non_null(r->mb);
    r->pool = signpool_new(nthreads, 4, 64 * 1024, err, sizeof err);
    assert_non_null(r->pool);
}

static void rig_down(struct rig *r)
{
    signpool_free(r->pool);
    mbox_free(r->mb);
    event_base_free(r->base);
}

/* run the loop until every task came back (or 20 s: then fail) */
static void wait_all(struct event_base *base)
{
    struct timeval tv = {20, 0};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    assert_int_equal(counter.done, counter.want);
}

static void test_pool_signs_as_this_thread_does(void **state)
{
    struct rig r;
    rig_up(&r, 3, NTASKS);
    static struct signpool_task tasks[NTASKS], mine[NTASKS];
    for (int i = 0; i < NTASKS; i++) {
        fill(&tasks[i], i, r.mb);
        signpool_submit(r.pool, &tasks[i]);
    }
    wait_all(r.base);
    for (int i = 0; i < NTASKS; i++) {
        fill(&mine[i], i, NULL);
        signpool_sign(&mine[i], NULL);
        assert_true(tasks[i].ok[0] && tasks[i].ok[1]);
        assert_null(tasks[i].err[0]);
        assert_null(tasks[i].err[1]);
        /* the same two signatures as here, and the text given back as it went */
        assert_int_equal(tasks[i].sigs.len, mine[i].sigs.len);
        assert_memory_equal(tasks[i].sigs.data, mine[i].sigs.data, mine[i].sigs.len);
        assert_non_null(memmem(mine[i].sigs.data, mine[i].sigs.len, "a=ed25519-sha256", 16));
        assert_int_equal(tasks[i].text.len, mine[i].text.len);
        assert_memory_equal(tasks[i].text.data, mine[i].text.data, mine[i].text.len);
        assert_memory_equal(tasks[i].text.data, "From: News", 10);
        assert_true(tasks[i].bh.valid); /* the body hash comes back for the message */
        assert_memory_equal(tasks[i].bh.digest, mine[i].bh.digest, sizeof mine[i].bh.digest);
        signpool_task_clear(&tasks[i]);
        signpool_task_clear(&mine[i]);
    }
    rig_down(&r);
}

/* a body hash handed in is what goes into bh=: a wrong one shows in the output */
static void test_body_hash_handed_in_is_used(void **state)
{
    struct rig r;
    rig_up(&r, 1, 1);
    struct signpool_task t, right;
    fill(&right, 7, NULL);
    signpool_sign(&right, NULL);
    fill(&t, 7, r.mb);
    t.bh = right.bh;
    t.bh.digest[0] ^= 0xff; /* claims another body */
    signpool_submit(r.pool, &t);
    wait_all(r.base);
    assert_true(t.ok[0] && t.ok[1]);
    assert_int_equal(t.sigs.len, right.sigs.len);
    assert_memory_not_equal(t.sigs.data, right.sigs.data, right.sigs.len);
    signpool_task_clear(&t);
    signpool_task_clear(&right);
    rig_down(&r);
}

/* a message DKIM cannot sign (no From) comes back as it went, with the reason */
static void test_failure_leaves_the_text(void **state)
{
    struct rig r;
    rig_up(&r, 2, 1);
    struct signpool_task t;
    memset(&t, 0, sizeof t);
    t.msg.run = task_back;
    t.reply = r.mb;
    t.keys[0] = key_ed;
    t.nkeys = 1;
    const char *msg = "To: a@b.test\r\nSubject: no from\r\n\r\nbody\r\n";
    vbuf_init(&t.text, SIZE_MAX);
    assert_int_equal(vbuf_append(&t.text, msg, strlen(msg)), 0);
    signpool_submit(r.pool, &t);
    wait_all(r.base);
    assert_false(t.ok[0]);
    assert_int_equal(t.sigs.len, 0);
    assert_non_null(t.err[0]);
    assert_non_null(strstr(t.err[0], "From"));
    assert_int_equal(t.text.len, strlen(msg));
    assert_memory_equal(t.text.data, msg, strlen(msg));
    signpool_task_clear(&t);
    assert_null(t.err[0]);
    rig_down(&r);
}

static void test_new_and_free(void **state)
{
    char err[200] = "";
    assert_null(signpool_new(0, 4, 1024, err, sizeof err));
    assert_non_null(strstr(err, "threads"));
    struct signpool *pool = signpool_new(4, 4, 1024, err, sizeof err);
    assert_non_null(pool);
    signpool_free(pool); /* idle threads wake and leave */
    signpool_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_signs_as_this_thread_does),
        cmocka_unit_test(test_body_hash_handed_in_is_used),
        cmocka_unit_test(test_failure_leaves_the_text),
        cmocka_unit_test(test_new_and_free),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
