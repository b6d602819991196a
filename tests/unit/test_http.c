/*
 * test_http - the HTTP endpoint over real TCP: an event_base, http_start() on
 * 127.0.0.1 port 0, and libevent's own evhttp client in the same loop.
 *
 * Covers: one-click POST (urlencoded and multipart) reaching the owner with the
 * right list, address and msgid and answered only after http_unsub_done();
 * owner failure (503 + Retry-After); an answer given inside the callback;
 * forged, altered and missing tokens (400, no callback); GET pages (escaped,
 * never a callback); wrong methods (405 from us, 501 from evhttp); missing or
 * wrong one-click fields; oversize bodies; /health, /metrics, 404s; the pending
 * limit (1024 waiting, the next one 503); late, unknown and repeated ids;
 * keep-alive after a pending reply; a client that disconnects before the owner
 * answers; http_free() with requests still pending; start-up errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "http.h"
#include "log.h"
#include "verp.h"

#define SECRET   "test secret for the http endpoint"
#define MAX_SEEN (HTTP_PENDING_MAX + 8)
#define BODY_MAX (64 * 1024)
#define ONECLICK "List-Unsubscribe=One-Click"
#define FORM_CT  "application/x-www-form-urlencoded"
#define WAIT_MS  5000

/* what the owner's unsubscribe callback saw */
struct seen {
    uint64_t req_id;
    char list[VERP_LIST_MAX + 1];
    char addr[VERP_ADDR_MAX + 1];
    uint64_t msgid;
};

struct fixture {
    struct event_base *base;
    struct http *h;
    struct verp_key key;
    int port;
    struct seen seen[MAX_SEEN];
    size_t nseen;
    int answer_now; /* 0: wait; 1: done(0) inside the callback; -1: done(-1) inside */
};

/* one client request and its outcome */
struct resp {
    int done;
    int code; /* 0: no response (connection failed) */
    char body[BODY_MAX];
    size_t body_len;
    char ctype[128];
    char allow[64];
    char retry_after[16];
    struct evhttp_connection *conn;
};

/* owner_unsubscribe - record the request; answer at once if asked to */
static void owner_unsubscribe(void *arg, uint64_t req_id, const char *list, const char *addr,
                              uint64_t msgid)
{
    struct fixture *f = arg;
    assert_true(f->nseen < MAX_SEEN);
    struct seen *s = &f->seen[f->nseen++];
    s->req_id = req_id;
    snprintf(s->list, sizeof s->list, "%s", list);
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    s->msgid = msgid;
    if (f->answer_now != 0) http_unsub_done(f->h, req_id, f->answer_now > 0 ? 0 : -1);
}

/* owner_metrics - a fixed exposition */
static void owner_metrics(void *arg, struct evbuffer *out)
{
    evbuffer_add_printf(out, "# TYPE volley_sent_total counter\nvolley_sent_total 42\n");
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    assert_int_equal(verp_key_derive(&f->key, SECRET), 0);
    struct http_callbacks cb = {owner_unsubscribe, owner_metrics, f};
    char err[256];
    f->h = http_start(f->base, "127.0.0.1", 0, &f->key, &cb, err, sizeof err);
    if (f->h == NULL) fail_msg("http_start: %s", err);
    f->port = http_port(f->h);
    assert_true(f->port > 0 && f->port < 65536);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    http_free(f->h);
    event_base_free(f->base);
    free(f);
    return 0;
}

/* on_response - the client's completion: copy what the test looks at */
static void on_response(struct evhttp_request *req, void *arg)
{
    struct resp *r = arg;
    r->done = 1;
    if (req == NULL) return;
    r->code = evhttp_request_get_response_code(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n >= sizeof r->body) n = sizeof r->body - 1;
    evbuffer_copyout(in, r->body, n);
    r->body[n] = '\0';
    r->body_len = n;
    struct evkeyvalq *hd = evhttp_request_get_input_headers(req);
    const char *v;
    if ((v = evhttp_find_header(hd, "Content-Type")) != NULL)
        snprintf(r->ctype, sizeof r->ctype, "%s", v);
    if ((v = evhttp_find_header(hd, "Allow")) != NULL) snprintf(r->allow, sizeof r->allow, "%s", v);
    if ((v = evhttp_find_header(hd, "Retry-After")) != NULL)
        snprintf(r->retry_after, sizeof r->retry_after, "%s", v);
}

/* on_deadline - a wait ran out */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    *(int *)arg = 1;
}

/* run_until - run the loop until *flag is set (by the code under test) or
 * ms pass; returns whether the flag was set */
static int run_until(struct fixture *f, const int *flag, int ms)
{
    int expired = 0;
    struct event *t = evtimer_new(f->base, on_deadline, &expired);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(t, &tv);
    while (!*flag && !expired)
        event_base_loop(f->base, EVLOOP_ONCE);
    event_free(t);
    return *flag;
}

/* run_for - run the loop for ms */
static void run_for(struct fixture *f, int ms)
{
    int never = 0;
    run_until(f, &never, ms);
}

/* wait_seen - run the loop until the owner has seen n requests (or WAIT_MS) */
static int wait_seen(struct fixture *f, size_t n)
{
    int expired = 0;
    struct event *t = evtimer_new(f->base, on_deadline, &expired);
    struct timeval tv = {WAIT_MS / 1000, 0};
    evtimer_add(t, &tv);
    while (f->nseen < n && !expired)
        event_base_loop(f->base, EVLOOP_ONCE);
    event_free(t);
    return f->nseen >= n;
}

/* start_on - send a request on conn (a new connection when NULL); the reply
 * lands in r */
static void start_on(struct fixture *f, struct evhttp_connection *conn, enum evhttp_cmd_type cmd,
                     const char *path, const char *ctype, const char *body, size_t body_len,
                     struct resp *r)
{
    memset(r, 0, sizeof *r);
    if (conn == NULL) {
        conn = evhttp_connection_base_new(f->base, NULL, "127.0.0.1", (ev_uint16_t)f->port);
        assert_non_null(conn);
    }
    r->conn = conn;
    struct evhttp_request *req = evhttp_request_new(on_response, r);
    assert_non_null(req);
    struct evkeyvalq *hd = evhttp_request_get_output_headers(req);
    evhttp_add_header(hd, "Host", "localhost");
    if (ctype != NULL) evhttp_add_header(hd, "Content-Type", ctype);
    if (body != NULL) evbuffer_add(evhttp_request_get_output_buffer(req), body, body_len);
    assert_int_equal(evhttp_make_request(conn, req, cmd, path), 0);
}

/* start - as start_on with a new connection and a string body */
static void start(struct fixture *f, enum evhttp_cmd_type cmd, const char *path, const char *ctype,
                  const char *body, struct resp *r)
{
    start_on(f, NULL, cmd, path, ctype, body, body ? strlen(body) : 0, r);
}

/* finish - wait for r's reply, then close its connection */
static void finish(struct fixture *f, struct resp *r)
{
    assert_true(run_until(f, &r->done, WAIT_MS));
    evhttp_connection_free(r->conn);
    r->conn = NULL;
}

/* request - one complete request on a fresh connection */
static void request(struct fixture *f, enum evhttp_cmd_type cmd, const char *path,
                    const char *ctype, const char *body, struct resp *r)
{
    start(f, cmd, path, ctype, body, r);
    finish(f, r);
}

/* unsub_path - "/unsubscribe/<token>" for list/addr/msgid into out */
static void unsub_path(struct fixture *f, const char *list, const char *addr, uint64_t msgid,
                       char *out, size_t n)
{
    char tok[VERP_URL_TOKEN_SIZE];
    assert_int_equal(verp_unsub_url_token(&f->key, list, addr, msgid, tok, sizeof tok), 0);
    snprintf(out, n, "/unsubscribe/%s", tok);
}

static struct resp *new_resp(void)
{
    struct resp *r = calloc(1, sizeof *r);
    assert_non_null(r);
    return r;
}

static void test_oneclick_async(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp();
    char path[600];
    unsub_path(f, "Weekly news", "alice+tag@example.org", 0x1234, path, sizeof path);

    start(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, r);
    assert_true(wait_seen(f, 1));
    assert_string_equal(f->seen[0].list, "Weekly news");
    assert_string_equal(f->seen[0].addr, "alice+tag@example.org");
    assert_true(f->seen[0].msgid == 0x1234);
    /* no reply while the owner works */
    run_for(f, 100);
    assert_false(r->done);
    http_unsub_done(f->h, f->seen[0].req_id, 0);
    finish(f, r);
    assert_int_equal(r->code, 200);
    assert_non_null(strstr(r->ctype, "text/plain"));
    /* a second answer for the same id is ignored */
    http_unsub_done(f->h, f->seen[0].req_id, 0);
    http_unsub_done(f->h, f->seen[0].req_id, -1);
    free(r);
}

static void test_oneclick_failure(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp();
    char path[600];
    unsub_path(f, "news", "bob@example.org", 7, path, sizeof path);
    start(f, EVHTTP_REQ_POST, path, FORM_CT "; charset=utf-8", ONECLICK, r);
    assert_true(wait_seen(f, 1));
    http_unsub_done(f->h, f->seen[0].req_id, -1);
    finish(f, r);
    assert_int_equal(r->code, 503);
    assert_true(r->retry_after[0] != '\0');
    free(r);
}

static void test_oneclick_answer_inside_callback(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp();
    char path[600];
    unsub_path(f, "news", "carol@example.org", 8, path, sizeof path);
    f->answer_now = 1;
    request(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, r);
    assert_int_equal(r->code, 200);
    f->answer_now = -1;
    request(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, r);
    assert_int_equal(r->code, 503);
    assert_int_equal(f->nseen, 2);
    free(r);
}

static void test_oneclick_multipart(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp();
    char path[600];
    unsub_path(f, "news", "dave@example.org", 9, path, sizeof path);
    f->answer_now = 1;
    static const char ok[] = "--XyZ\r\n"
                             "Content-Disposition: form-data; name=\"other\"\r\n\r\n"
                             "x\r\n"
                             "--XyZ\r\n"
                             "Content-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
                             "One-Click\r\n"
                             "--XyZ--\r\n";
    request(f, EVHTTP_REQ_POST, path, "multipart/form-data; boundary=XyZ", ok, r);
    assert_int_equal(r->code, 200);
    request(f, EVHTTP_REQ_POST, path, "multipart/form-data; boundary=\"XyZ\"", ok, r);
    assert_int_equal(r->code, 200);
    assert_int_equal(f->nseen, 2);

    /* the field under filename= only, a wrong value, a wrong boundary, no
     * boundary, an unterminated part: all 400 and no callback */
    static const char filename_only[] =
        "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"List-Unsubscribe\"\r\n"
        "\r\nOne-Click\r\n--XyZ--\r\n";
    static const char wrong_value[] =
        "--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
        "One-Clicks\r\n--XyZ--\r\n";
    static const char unterminated[] =
        "--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click";
    request(f, EVHTTP_REQ_POST, path, "multipart/form-data; boundary=XyZ", filename_only, r);
    assert_int_equal(r->code, 400);
    request(f, EVHTTP_REQ_POST, path, "multipart/form-data; boundary=XyZ", wrong_value, r);
    assert_int_equal(r->code, 400);
    request(f, EVHTTP_REQ_POST, path, "multipart/form-data; boundary=Other", ok, r);
    assert_int_equal(r->code, 400);
    request(f, EVHTTP_REQ_POST, path, "multipart/form-data", ok, r);
    assert_int_equal(r->code, 400);
    request(f, EVHTTP_REQ_POST, path, "multipart/form-data; boundary=XyZ", unterminated, r);
    assert_int_equal(r->code, 400);
    assert_int_equal(f->nseen, 2);
    free(r);
}

static void test_oneclick_missing_field(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp();
    char path[600];
    unsub_path(f, "news", "erin@example.org", 10, path, sizeof path);
    static const struct {
        const char *ctype, *body;
    } bad[] = {
        {FORM_CT, NULL},
        {FORM_CT, ""},
        {FORM_CT, "List-Unsubscribe=Yes"},
        {FORM_CT, "Unsubscribe=One-Click"},
        {FORM_CT, "List-Unsubscribe"},
        {NULL, ONECLICK},
        {"text/plain", ONECLICK},
        {"application/json", "{\"List-Unsubscribe\":\"One-Click\"}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        request(f, EVHTTP_REQ_POST, path, bad[i].ctype, bad[i].body, r);
        assert_int_equal(r->code, 400);
    }
    assert_int_equal(f->nseen, 0);
    /* form variants that do count */
    f->answer_now = 1;
    request(f, EVHTTP_REQ_POST, path, FORM_CT, "a=b&List-Unsubscribe=One-Click", r);
    assert_int_equal(r->code, 200);
    request(f, EVHTTP_REQ_POST, path, FORM_CT, "List-Unsubscribe=One-Click\r\n", r);
    assert_int_equal(r->code, 200);
    assert_int_equal(f->nseen, 2);
    free(r);
}

static void test_forged_token(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp();
    char path[600];
    unsub_path(f, "news", "mallory@example.org", 11, path, sizeof path);
    /* alter one character of the token */
    size_t last = strlen(path) - 1;
    path[last] = path[last] == 'A' ? 'B' : 'A';
    request(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, r);
    assert_int_equal(r->code, 400);
    assert_non_null(strstr(r->body, "not valid"));

    /* signed with another key */
    struct verp_key other;
    char tok[VERP_URL_TOKEN_SIZE];
    assert_int_equal(verp_key_derive(&other, "another secret, sixteen+"), 0);
    assert_int_equal(verp_unsub_url_token(&other, "news", "a@b", 1, tok, sizeof tok), 0);
    snprintf(path, sizeof path, "/unsubscribe/%s", tok);
    request(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, r);
    assert_int_equal(r->code, 400);

    static const char *junk[] = {"/unsubscribe/", "/unsubscribe/%41%42", "/unsubscribe/a/b",
                                 "/unsubscribe/<script>", "/unsubscribe/AAAA"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        request(f, EVHTTP_REQ_POST, junk[i], FORM_CT, ONECLICK, r);
        assert_int_equal(r->code, 400);
    }
    assert_int_equal(f->nseen, 0);
    free(r);
}

static void test_get_page(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp();
    char path[600];
    unsub_path(f, "<script>alert('x')</script> & \"friends\"", "frank@example.org", 12, path,
               sizeof path);
    request(f, EVHTTP_REQ_GET, path, NULL, NULL, r);
    assert_int_equal(r->code, 200);
    assert_non_null(strstr(r->ctype, "text/html"));
    assert_null(strstr(r->body, "<script>"));
    assert_non_null(strstr(r->body, "&lt;script&gt;alert(&#039;x&#039;)&lt;/script&gt; &amp; "
                                    "&quot;friends&quot;"));
    assert_non_null(strstr(r->body, "method=\"post\""));
    assert_non_null(strstr(r->body, "name=\"List-Unsubscribe\" value=\"One-Click\""));
    /* the address is not shown */
    assert_null(strstr(r->body, "frank@example.org"));
    /* the form's action is the token, relative to the page */
    assert_non_null(strstr(r->body, strrchr(path, '/') + 1));

    /* GET never unsubscribes, not even twice */
    request(f, EVHTTP_REQ_GET, path, NULL, NULL, r);
    assert_int_equal(r->code, 200);
    assert_int_equal(f->nseen, 0);

    request(f, EVHTTP_REQ_GET, "/unsubscribe/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL,
            NULL, r);
    assert_int_equal(r->code, 400);
    assert_non_null(strstr(r->ctype, "text/html"));
    assert_int_equal(f->nseen, 0);
    free(r);
}

static void test_methods(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp();
    char path[600];
    unsub_path(f, "news", "gina@example.org", 13, path, sizeof path);

    request(f, EVHTTP_REQ_POST, "/health", FORM_CT, ONECLICK, r);
    assert_int_equal(r->code, 405);
    assert_string_equal(r->allow, "GET");
    request(f, EVHTTP_REQ_POST, "/metrics", FORM_CT, ONECLICK, r);
    assert_int_equal(r->code, 405);
    /* methods other than GET and POST never reach a handler */
    request(f, EVHTTP_REQ_PUT, path, FORM_CT, ONECLICK, r);
    assert_int_equal(r->code, 501);
    request(f, EVHTTP_REQ_DELETE, path, NULL, NULL, r);
    assert_int_equal(r->code, 501);
    assert_int_equal(f->nseen, 0);
    free(r);
}

static void test_health_metrics_404(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp();
    char path[600];
    unsub_path(f, "news", "hal@example.org", 14, path, sizeof path);

    request(f, EVHTTP_REQ_GET, "/health", NULL, NULL, r);
    assert_int_equal(r->code, 200);
    assert_string_equal(r->body, "{\"status\":\"ok\"}\n");
    assert_non_null(strstr(r->ctype, "application/json"));

    request(f, EVHTTP_REQ_GET, "/metrics", NULL, NULL, r);
    assert_int_equal(r->code, 200);
    assert_non_null(strstr(r->body, "volley_sent_total 42\n"));
    assert_non_null(strstr(r->ctype, "text/plain"));

    static const char *missing[] = {"/",
                                    "/nope",
                                    "/healthz",
                                    "/health/",
                                    "/unsubscribe",
                                    "/Unsubscribe/x",
                                    "/unsubscribe?t=AAAA"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        request(f, EVHTTP_REQ_GET, missing[i], NULL, NULL, r);
        assert_int_equal(r->code, 404);
    }
    /* ?t= is not a route for POST either */
    char q[700];
    snprintf(q, sizeof q, "/unsubscribe?t=%s", strrchr(path, '/') + 1);
    request(f, EVHTTP_REQ_POST, q, FORM_CT, ONECLICK, r);
    assert_int_equal(r->code, 404);
    assert_int_equal(f->nseen, 0);
    free(r);
}

static void test_limits(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp();
    char path[600];
    unsub_path(f, "news", "ivy@example.org", 15, path, sizeof path);

    /* a body over 16 KiB: the one-click field is in it, but evhttp refuses */
    size_t n = 20 * 1024;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memcpy(big, ONECLICK "&pad=", strlen(ONECLICK "&pad="));
    memset(big + strlen(ONECLICK "&pad="), 'x', n - strlen(ONECLICK "&pad="));
    big[n] = '\0';
    request(f, EVHTTP_REQ_POST, path, FORM_CT, big, r);
    assert_true(r->code == 413 || r->code == 400 || r->code == 0);
    assert_int_equal(f->nseen, 0);

    /* headers over 8 KiB */
    struct resp *r2 = new_resp();
    struct evhttp_connection *c =
        evhttp_connection_base_new(f->base, NULL, "127.0.0.1", (ev_uint16_t)f->port);
    struct evhttp_request *req = evhttp_request_new(on_response, r2);
    big[10 * 1024] = '\0';
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Big", big + 100);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", "localhost");
    assert_int_equal(evhttp_make_request(c, req, EVHTTP_REQ_GET, "/health"), 0);
    r2->conn = c;
    finish(f, r2);
    assert_true(r2->code == 400 || r2->code == 413 || r2->code == 431 || r2->code == 0);
    assert_true(r2->code != 200);
    free(big);
    free(r2);

    /* the server still serves */
    request(f, EVHTTP_REQ_GET, "/health", NULL, NULL, r);
    assert_int_equal(r->code, 200);
    free(r);
}

static void test_pending_limit(void **state)
{
    struct fixture *f = *state;
    char path[600];
    unsub_path(f, "news", "jo@example.org", 16, path, sizeof path);
    size_t n = HTTP_PENDING_MAX + 1;
    struct resp **rs = calloc(n, sizeof *rs);
    assert_non_null(rs);
    for (size_t i = 0; i < HTTP_PENDING_MAX; i++) {
        rs[i] = new_resp();
        start(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, rs[i]);
    }
    assert_true(wait_seen(f, HTTP_PENDING_MAX));
    /* one more: refused at once */
    rs[n - 1] = new_resp();
    request(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, rs[n - 1]);
    assert_int_equal(rs[n - 1]->code, 503);
    assert_true(rs[n - 1]->retry_after[0] != '\0');
    assert_int_equal(f->nseen, HTTP_PENDING_MAX);
    /* ids are distinct */
    for (size_t i = 1; i < HTTP_PENDING_MAX; i++)
        assert_true(f->seen[i].req_id != f->seen[i - 1].req_id);
    /* answer in reverse order; every client gets its 200 */
    for (size_t i = HTTP_PENDING_MAX; i-- > 0;)
        http_unsub_done(f->h, f->seen[i].req_id, 0);
    for (size_t i = 0; i < HTTP_PENDING_MAX; i++) {
        finish(f, rs[i]);
        assert_int_equal(rs[i]->code, 200);
    }
    /* slots are free again */
    f->answer_now = 1;
    request(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, rs[0]);
    assert_int_equal(rs[0]->code, 200);
    for (size_t i = 0; i < n; i++)
        free(rs[i]);
    free(rs);
}

static void test_unknown_ids(void **state)
{
    struct fixture *f = *state;
    http_unsub_done(f->h, 0, 0);
    http_unsub_done(f->h, 1, 0);
    http_unsub_done(f->h, UINT64_MAX, -1);
    http_unsub_done(NULL, 5, 0);
    struct resp *r = new_resp();
    request(f, EVHTTP_REQ_GET, "/health", NULL, NULL, r);
    assert_int_equal(r->code, 200);
    free(r);
}

static void test_keepalive_after_pending(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp(), *r2 = new_resp(), *r3 = new_resp();
    char path[600];
    unsub_path(f, "news", "kim@example.org", 17, path, sizeof path);
    start(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, r);
    assert_true(wait_seen(f, 1));
    http_unsub_done(f->h, f->seen[0].req_id, 0);
    assert_true(run_until(f, &r->done, WAIT_MS));
    assert_int_equal(r->code, 200);
    /* same connection: the slot it used is reused by a request on another one */
    start_on(f, r->conn, EVHTTP_REQ_GET, "/health", NULL, NULL, 0, r2);
    assert_true(run_until(f, &r2->done, WAIT_MS));
    assert_int_equal(r2->code, 200);
    start(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, r3);
    assert_true(wait_seen(f, 2));
    /* closing the first connection must not disturb the second's pending slot */
    evhttp_connection_free(r->conn);
    run_for(f, 50);
    assert_false(r3->done);
    http_unsub_done(f->h, f->seen[1].req_id, 0);
    finish(f, r3);
    assert_int_equal(r3->code, 200);
    free(r);
    free(r2);
    free(r3);
}

static void test_client_disconnect(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp();
    char path[600];
    unsub_path(f, "news", "lee@example.org", 18, path, sizeof path);
    start(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, r);
    assert_true(wait_seen(f, 1));
    /* the client gives up before the owner answers */
    evhttp_connection_free(r->conn);
    r->conn = NULL;
    run_for(f, 100);
    /* the late answer finds nobody to talk to, and must not crash */
    http_unsub_done(f->h, f->seen[0].req_id, 0);
    run_for(f, 100);
    http_unsub_done(f->h, f->seen[0].req_id, 0);
    assert_false(r->done);

    /* same with a failure answer */
    start(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, r);
    assert_true(wait_seen(f, 2));
    evhttp_connection_free(r->conn);
    run_for(f, 50);
    http_unsub_done(f->h, f->seen[1].req_id, -1);
    run_for(f, 50);

    /* the server is still fine */
    request(f, EVHTTP_REQ_GET, "/health", NULL, NULL, r);
    assert_int_equal(r->code, 200);
    free(r);
}

static void test_free_with_pending(void **state)
{
    struct fixture *f = *state;
    struct resp *r = new_resp();
    char path[600];
    unsub_path(f, "news", "max@example.org", 19, path, sizeof path);
    start(f, EVHTTP_REQ_POST, path, FORM_CT, ONECLICK, r);
    assert_true(wait_seen(f, 1));
    /* tear the server down under the pending request; teardown frees again */
    http_free(f->h);
    struct http_callbacks cb = {owner_unsubscribe, owner_metrics, f};
    char err[256];
    f->h = http_start(f->base, "127.0.0.1", 0, &f->key, &cb, err, sizeof err);
    assert_non_null(f->h);
    /* the old id means nothing to the new server */
    http_unsub_done(f->h, f->seen[0].req_id, 0);
    assert_true(run_until(f, &r->done, WAIT_MS));
    assert_int_equal(r->code, 0); /* the client saw the connection drop */
    evhttp_connection_free(r->conn);
    free(r);
}

static void test_start_errors(void **state)
{
    struct fixture *f = *state;
    struct http_callbacks cb = {owner_unsubscribe, owner_metrics, f};
    char err[256];
    assert_null(http_start(f->base, "example.com", 0, &f->key, &cb, err, sizeof err));
    assert_non_null(strstr(err, "example.com"));
    assert_null(http_start(f->base, "", 0, &f->key, &cb, err, sizeof err));
    assert_null(http_start(f->base, NULL, 0, &f->key, &cb, err, sizeof err));
    assert_null(http_start(f->base, "127.0.0.1", 70000, &f->key, &cb, err, sizeof err));
    assert_null(http_start(f->base, "127.0.0.1", -1, &f->key, &cb, err, sizeof err));
    /* the port is taken */
    assert_null(http_start(f->base, "127.0.0.1", f->port, &f->key, &cb, err, sizeof err));
    assert_true(err[0] != '\0');
    assert_null(http_start(f->base, "bad", 0, &f->key, &cb, NULL, 0));

    /* localhost and bracketed IPv6 literals are accepted */
    struct http *h = http_start(f->base, "localhost", 0, &f->key, &cb, err, sizeof err);
    assert_non_null(h);
    assert_true(http_port(h) > 0);
    http_free(h);
    h = http_start(f->base, "[::1]", 0, &f->key, &cb, err, sizeof err);
    if (h != NULL) /* a host without IPv6 cannot bind ::1 */
        assert_true(http_port(h) > 0);
    http_free(h);
    http_free(NULL);
    assert_int_equal(http_port(NULL), -1);
}

int main(void)
{
    /* records go to stderr only at warning and above: keep test output short */
    log_open(NULL, LOG_WARNING, false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_oneclick_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oneclick_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oneclick_answer_inside_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oneclick_multipart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oneclick_missing_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forged_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_methods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_metrics_404, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_after_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_disconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_errors, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    log_close();
    return rc;
}
