/*
 * test_bounce - unit tests for the feedback parser (bounce.c, bounce_mime.c).
 *
 * The golden test parses every tests/unit/bounce/NAME.eml and compares the
 * recipients, one compact JSON object per line as bounce_rcpt_json() gives them
 * (keys sorted), with NAME.json; the same samples are parsed again with their
 * line ends flipped (LF <-> CRLF), which must not change a byte of the result.
 * The focused tests cover the caps (size, nesting, part count, recipients),
 * mbox splitting and >From unquoting, the decoders, folded fields, and inputs
 * with nothing in them.  Every input is copied into a heap buffer of exactly its
 * length so that an overread is caught under ASan.
 *
 * To refresh a golden file after a deliberate change, run with
 * BOUNCE_GOLDEN_PRINT=1: the actual output is printed for review.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bounce.h"
#include "bounce_mime.h"

#define SAMPLE_DIR VOLLEY_SOURCE_DIR "/tests/unit/bounce"
#define MAX_SAMPLE (1024 * 1024)

/* heap_copy - exact-length heap copy of s[0..n) (1 octet when n == 0) */
static char *heap_copy(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    assert_non_null(p);
    if (n) memcpy(p, s, n);
    return p;
}

/* read_file - the whole file at path in a new buffer; NULL if missing */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    char *buf = malloc(MAX_SAMPLE + 1);
    assert_non_null(buf);
    size_t n = fread(buf, 1, MAX_SAMPLE, f);
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* parse_lines - parse msg[0..len) and render the report as golden lines (one
 * JSON object per recipient, or one for the report) in a new string */
static char *parse_lines(const char *msg, size_t len)
{
    struct bounce_report r;
    char *copy = heap_copy(msg, len);
    assert_int_equal(bounce_parse(copy, len, MAX_SAMPLE, &r), 0);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    out[0] = '\0';
    for (int i = r.nrcpts ? 0 : -1; i < r.nrcpts; i++) {
        json_t *j = bounce_rcpt_json(&r, i);
        assert_non_null(j);
        char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        assert_non_null(s);
        size_t sl = strlen(s);
        assert_true(n + sl + 2 < cap);
        memcpy(out + n, s, sl);
        n += sl;
        out[n++] = '\n';
        out[n] = '\0';
        free(s);
        json_decref(j);
        if (i < 0) break;
    }
    bounce_report_free(&r);
    free(copy);
    return out;
}

/* flip_eol - msg with LF made CRLF, or CRLF made LF when it has any CR */
static char *flip_eol(const char *msg, size_t len, size_t *outlen)
{
    bool crlf = memchr(msg, '\r', len) != NULL;
    char *out = malloc(len * 2 + 1);
    assert_non_null(out);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (crlf && msg[i] == '\r' && i + 1 < len && msg[i + 1] == '\n') continue;
        if (!crlf && msg[i] == '\n') out[o++] = '\r';
        out[o++] = msg[i];
    }
    *outlen = o;
    return out;
}

/* report_mismatch - print expected and actual line by line */
static void report_mismatch(const char *name, const char *what, const char *want, const char *got)
{
    fprintf(stderr, "MISMATCH %s (%s)\n--- expected (%s.json)\n%s+++ actual\n%s", name, what, name,
            want, got);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* test_golden - every sample against its golden file, and with flipped line ends */
static void test_golden(void **state)
{
    (void)state;
    DIR *d = opendir(SAMPLE_DIR);
    assert_non_null(d);
    char *names[256];
    int nn = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && nn < 256) {
        size_t l = strlen(e->d_name);
        if (l > 4 && strcmp(e->d_name + l - 4, ".eml") == 0) names[nn++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)nn, sizeof names[0], cmp_str);
    assert_true(nn >= 25);
    int bad = 0;
    bool print = getenv("BOUNCE_GOLDEN_PRINT") != NULL;
    for (int i = 0; i < nn; i++) {
        char path[1024], base[256];
        size_t bl = strlen(names[i]) - 4;
        snprintf(base, sizeof base, "%.*s", (int)bl, names[i]);
        snprintf(path, sizeof path, "%s/%s", SAMPLE_DIR, names[i]);
        size_t len, wl = 0;
        char *msg = read_file(path, &len);
        assert_non_null(msg);
        snprintf(path, sizeof path, "%s/%s.json", SAMPLE_DIR, base);
        char *want = read_file(path, &wl);
        char *got = parse_lines(msg, len);
        if (print) printf("== %s\n%s", base, got);
        if (want == NULL) {
            fprintf(stderr, "MISSING golden %s.json\n", base);
            bad++;
        } else if (strcmp(want, got) != 0) {
            report_mismatch(base, "as written", want, got);
            bad++;
        }
        size_t fl;
        char *flipped = flip_eol(msg, len, &fl);
        char *got2 = parse_lines(flipped, fl);
        if (strcmp(got, got2) != 0) {
            report_mismatch(base, "line ends flipped", got, got2);
            bad++;
        }
        free(got2);
        free(flipped);
        free(got);
        free(want);
        free(msg);
        free(names[i]);
    }
    assert_int_equal(bad, 0);
}

/* parse_str - parse a C string message with a generous cap into r */
static void parse_str(const char *s, struct bounce_report *r)
{
    size_t n = strlen(s);
    char *copy = heap_copy(s, n);
    assert_int_equal(bounce_parse(copy, n, MAX_SAMPLE, r), 0);
    free(copy);
}

#define DSN_HEAD                                                                                   \
    "From: MAILER-DAEMON@mx.example.org\n"                                                         \
    "Subject: Undelivered Mail Returned to Sender\n"                                               \
    "MIME-Version: 1.0\n"
#define DSN_FIELDS                                                                                 \
    "Reporting-MTA: dns; mx.example.org\n"                                                         \
    "\n"                                                                                           \
    "Final-Recipient: rfc822; a@example.org\n"                                                     \
    "Action: failed\n"                                                                             \
    "Status: 5.1.1\n"                                                                              \
    "Diagnostic-Code: smtp; 550 5.1.1 no such user\n"

/* test_size_cap - longer than max_len: refused without being read */
static void test_size_cap(void **state)
{
    (void)state;
    const char *m = DSN_HEAD "Content-Type: message/delivery-status\n\n" DSN_FIELDS;
    size_t n = strlen(m);
    struct bounce_report r;
    char *copy = heap_copy(m, n);
    assert_int_equal(bounce_parse(copy, n, n - 1, &r), 0);
    assert_int_equal(r.kind, BOUNCE_KIND_UNPARSEABLE);
    assert_string_equal(r.reason, "too large");
    assert_int_equal(r.nrcpts, 0);
    json_t *j = bounce_rcpt_json(&r, -1);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "too large");
    json_decref(j);
    bounce_report_free(&r);
    /* exactly at the cap: read */
    assert_int_equal(bounce_parse(copy, n, n, &r), 0);
    assert_int_equal(r.kind, BOUNCE_KIND_BOUNCE);
    assert_int_equal(r.nrcpts, 1);
    assert_string_equal(r.rcpts[0].recipient, "a@example.org");
    bounce_report_free(&r);
    free(copy);
}

/* nested - a DSN at the bottom of depth nested multiparts */
static char *nested(int depth)
{
    size_t cap = 64 * 1024, n = 0;
    char *m = malloc(cap);
    assert_non_null(m);
    n += (size_t)snprintf(m + n, cap - n, "%s", DSN_HEAD);
    for (int i = 0; i < depth; i++)
        n += (size_t)snprintf(m + n, cap - n,
                              "Content-Type: multipart/mixed; boundary=\"b%d\"\n\n--b%d\n", i, i);
    n +=
        (size_t)snprintf(m + n, cap - n, "Content-Type: message/delivery-status\n\n%s", DSN_FIELDS);
    for (int i = depth - 1; i >= 0; i--)
        n += (size_t)snprintf(m + n, cap - n, "--b%d--\n", i);
    return m;
}

/* test_depth_cap - nesting past BMIME_MAX_DEPTH is not opened */
static void test_depth_cap(void **state)
{
    (void)state;
    struct bounce_report r;
    char *m = nested(BMIME_MAX_DEPTH);
    parse_str(m, &r);
    assert_int_equal(r.kind, BOUNCE_KIND_BOUNCE);
    assert_int_equal(r.nrcpts, 1);
    bounce_report_free(&r);
    free(m);

    m = nested(BMIME_MAX_DEPTH + 1);
    parse_str(m, &r);
    assert_int_equal(r.kind, BOUNCE_KIND_UNPARSEABLE);
    assert_string_equal(r.reason, "MIME nesting too deep");
    bounce_report_free(&r);
    free(m);

    m = nested(200);
    parse_str(m, &r);
    assert_int_equal(r.kind, BOUNCE_KIND_UNPARSEABLE);
    assert_string_equal(r.reason, "MIME nesting too deep");
    bounce_report_free(&r);
    free(m);
}

/* test_part_and_rcpt_caps - a DSN after BMIME_MAX_PARTS parts is not seen; a DSN
 * naming 300 recipients reports BOUNCE_MAX_RCPTS */
static void test_part_and_rcpt_caps(void **state)
{
    (void)state;
    size_t cap = 256 * 1024, n = 0;
    char *m = malloc(cap);
    assert_non_null(m);
    struct bounce_report r;
    n += (size_t)snprintf(m + n, cap - n, "%sContent-Type: multipart/report; boundary=x\n\n",
                          DSN_HEAD);
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(m + n, cap - n, "--x\nContent-Type: text/plain\n\npart %d\n", i);
    n += (size_t)snprintf(m + n, cap - n, "--x\nContent-Type: message/delivery-status\n\n%s--x--\n",
                          DSN_FIELDS);
    parse_str(m, &r);
    assert_int_equal(r.kind, BOUNCE_KIND_UNPARSEABLE);
    assert_string_equal(r.reason, "too many MIME parts");
    bounce_report_free(&r);

    n = 0;
    n += (size_t)snprintf(m + n, cap - n, "%sContent-Type: message/delivery-status\n\n", DSN_HEAD);
    for (int i = 0; i < 300; i++)
        n += (size_t)snprintf(m + n, cap - n,
                              "\nFinal-Recipient: rfc822; u%d@example.org\nAction: failed\n", i);
    parse_str(m, &r);
    assert_int_equal(r.kind, BOUNCE_KIND_BOUNCE);
    assert_int_equal(r.nrcpts, BOUNCE_MAX_RCPTS);
    assert_string_equal(r.rcpts[0].recipient, "u0@example.org");
    assert_string_equal(r.rcpts[255].recipient, "u255@example.org");
    bounce_report_free(&r);
    free(m);
}

/* test_mbox - split at "From " lines, separator lines off, >From unquoted */
static void test_mbox(void **state)
{
    (void)state;
    const char box[] = "From MAILER-DAEMON Mon Nov 23 09:12:03 2026\n"
                       "Subject: one\n"
                       "\n"
                       ">From the start\n"
                       ">>From deeper\n"
                       "From\n"
                       "\n"
                       "From postmaster Mon Nov 23 09:13:00 2026\n"
                       "Subject: two\n"
                       "\n"
                       "body two\n"
                       "\n"
                       "From x Mon Nov 23 09:14:00 2026\n"
                       "Subject: three\n";
    size_t len = sizeof box - 1, pos = 0, ml;
    char *buf = heap_copy(box, len);
    const char *msg;
    char out[512];

    assert_int_equal(bounce_mbox_next(buf, len, &pos, &msg, &ml), 1);
    const char one[] = "Subject: one\n\n>From the start\n>>From deeper\nFrom\n";
    assert_int_equal(ml, sizeof one - 1);
    assert_memory_equal(msg, one, ml);
    size_t ul = bounce_mbox_unquote(msg, ml, out, sizeof out);
    const char one_u[] = "Subject: one\n\nFrom the start\n>From deeper\nFrom\n";
    assert_int_equal(ul, sizeof one_u - 1);
    assert_memory_equal(out, one_u, ul);

    assert_int_equal(bounce_mbox_next(buf, len, &pos, &msg, &ml), 1);
    const char two[] = "Subject: two\n\nbody two\n";
    assert_int_equal(ml, sizeof two - 1);
    assert_memory_equal(msg, two, ml);

    assert_int_equal(bounce_mbox_next(buf, len, &pos, &msg, &ml), 1);
    const char three[] = "Subject: three\n";
    assert_int_equal(ml, sizeof three - 1);
    assert_memory_equal(msg, three, ml);
    assert_int_equal(bounce_mbox_next(buf, len, &pos, &msg, &ml), 0);
    assert_int_equal(bounce_mbox_next(buf, len, &pos, &msg, &ml), 0);
    free(buf);

    /* not a mailbox: one message, as is */
    const char one_msg[] = "Subject: x\n\nFrom here on\n";
    buf = heap_copy(one_msg, sizeof one_msg - 1);
    pos = 0;
    assert_int_equal(bounce_mbox_next(buf, sizeof one_msg - 1, &pos, &msg, &ml), 1);
    assert_ptr_equal(msg, buf);
    assert_int_equal(ml, sizeof one_msg - 1);
    assert_int_equal(bounce_mbox_next(buf, sizeof one_msg - 1, &pos, &msg, &ml), 0);
    free(buf);

    /* empty */
    pos = 0;
    assert_int_equal(bounce_mbox_next("", 0, &pos, &msg, &ml), 0);

    /* in-place unquoting */
    char inplace[] = ">From a\n>>>From b\n> From c\n";
    size_t il = bounce_mbox_unquote(inplace, strlen(inplace), inplace, sizeof inplace);
    assert_int_equal(il, strlen("From a\n>>From b\n> From c\n"));
    assert_memory_equal(inplace, "From a\n>>From b\n> From c\n", il);
}

/* test_decoding - base64 and quoted-printable, directly and inside messages */
static void test_decoding(void **state)
{
    (void)state;
    char out[128];
    /* base64 with line breaks and junk in it */
    const char b64[] = "SGVs\r\nbG8s\n IHdv*cmxk\nIQ==\nignored";
    size_t n = bmime_decode(BMIME_CTE_BASE64, b64, sizeof b64 - 1, out, sizeof out);
    assert_int_equal(n, 13);
    assert_string_equal(out, "Hello, world!");
    /* the output cap holds */
    n = bmime_decode(BMIME_CTE_BASE64, b64, sizeof b64 - 1, out, 6);
    assert_int_equal(n, 5);
    assert_string_equal(out, "Hello");
    /* QP: escapes, soft breaks (CRLF and LF), a bad escape kept */
    const char qp[] = "caf=C3=A9 =3D ok=\r\ncontinued=\nhere =ZZ end=";
    n = bmime_decode(BMIME_CTE_QP, qp, sizeof qp - 1, out, sizeof out);
    assert_string_equal(out, "caf\xc3\xa9 = okcontinuedhere =ZZ end=");
    assert_int_equal(n, strlen(out));
    /* RFC 2047 words, adjacent ones joined */
    bmime_decode_words("=?utf-8?B?SGFsbG8=?= =?utf-8?Q?_W=C3=B6rld?= and =?x?Q?bad", out,
                       sizeof out);
    assert_string_equal(out, "Hallo W\xc3\xb6rld and =?x?Q?bad");
    /* HTML to text */
    const char html[] = "<style>p{x:1}</style><p>a&amp;b&#39;c</p><br>d&nbsp;e<!-- x -->f";
    bmime_html_text(html, sizeof html - 1, out, sizeof out);
    assert_string_equal(out, "\na&b'c\n\nd ef");

    /* a base64 delivery-status part and a QP text part in one report */
    struct bounce_report r;
    parse_str(DSN_HEAD
              "Content-Type: multipart/report; report-type=delivery-status; boundary=q\n"
              "\n--q\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n"
              "\nThe mail system said =\nno.\n"
              "--q\nContent-Type: message/delivery-status\n"
              "Content-Transfer-Encoding: base64\n\n"
              "UmVwb3J0aW5nLU1UQTogZG5zOyBteC5leGFtcGxlLm9yZwoKRmluYWwtUmVjaXBpZW50OiBy\n"
              "ZmM4MjI7IGJAZXhhbXBsZS5vcmcKQWN0aW9uOiBmYWlsZWQKU3RhdHVzOiA1LjIuMgo=\n"
              "--q--\n",
              &r);
    assert_int_equal(r.kind, BOUNCE_KIND_BOUNCE);
    assert_int_equal(r.nrcpts, 1);
    assert_string_equal(r.rcpts[0].recipient, "b@example.org");
    assert_string_equal(r.rcpts[0].status, "5.2.2");
    assert_string_equal(r.reporting_mta, "mx.example.org");
    bounce_report_free(&r);
}

/* test_folded - folded header fields and folded DSN fields, LF and CRLF */
static void test_folded(void **state)
{
    (void)state;
    struct bounce_report r;
    parse_str("From:\r\n Mail Delivery <MAILER-DAEMON@mx.example.org>\r\n"
              "Subject: Undelivered Mail\r\n\tReturned to Sender\r\n"
              "Content-Type: multipart/report;\r\n report-type=delivery-status;\r\n"
              "\tboundary=\"fold ed\"\r\n"
              "\r\n--fold ed\r\nContent-Type:\r\n message/delivery-status\r\n\r\n"
              "Final-Recipient:\r\n  rfc822;\r\n  c@example.org\r\n"
              "ACTION: failed\r\n"
              "diagnostic-code: smtp; 550 5.7.1\r\n  blocked by\r\n\tpolicy\r\n"
              "--fold ed--\r\n",
              &r);
    assert_string_equal(r.from, "MAILER-DAEMON@mx.example.org");
    assert_string_equal(r.subject, "Undelivered Mail Returned to Sender");
    assert_int_equal(r.nrcpts, 1);
    assert_string_equal(r.rcpts[0].recipient, "c@example.org");
    assert_string_equal(r.rcpts[0].action, "failed");
    assert_string_equal(r.rcpts[0].diagnostic, "550 5.7.1 blocked by policy");
    assert_string_equal(r.rcpts[0].status, "5.7.1");
    assert_int_equal(r.rcpts[0].code, 550);
    bounce_report_free(&r);

    char v[64];
    const char h[] = "X-A: 1\nSubject: a\n b\n\tc\nX-B: 2\n\nSubject: body\n";
    assert_int_equal(bmime_header_get(h, sizeof h - 1, "subject", v, sizeof v), 1);
    assert_string_equal(v, "a b\tc");
    assert_int_equal(bmime_header_get(h, sizeof h - 1, "X-C", v, sizeof v), 0);
}

/* test_empty - nothing in it, only headers, only white space, NULL */
static void test_empty(void **state)
{
    (void)state;
    struct bounce_report r;
    assert_int_equal(bounce_parse(NULL, 0, 100, &r), 0);
    assert_int_equal(r.kind, BOUNCE_KIND_UNPARSEABLE);
    assert_string_equal(r.reason, "empty message");
    bounce_report_free(&r);
    char *e = heap_copy("", 0);
    assert_int_equal(bounce_parse(e, 0, 100, &r), 0);
    assert_string_equal(r.reason, "empty message");
    bounce_report_free(&r);
    free(e);
    parse_str("\r\n\r\n  \n", &r);
    assert_string_equal(r.reason, "empty message");
    bounce_report_free(&r);

    /* only headers, no empty line and no final line end */
    parse_str("From: a@example.org\nSubject: hello", &r);
    assert_int_equal(r.kind, BOUNCE_KIND_UNPARSEABLE);
    assert_string_equal(r.reason, "no recognisable bounce");
    assert_string_equal(r.subject, "hello");
    assert_int_equal(r.nrcpts, 0);
    bounce_report_free(&r);

    /* no header section at all */
    parse_str("just some words\nand more\n", &r);
    assert_string_equal(r.reason, "no header section");
    bounce_report_free(&r);

    /* a delivery-status part that names nobody */
    parse_str(DSN_HEAD "Content-Type: message/delivery-status\n\nReporting-MTA: dns; x\n", &r);
    assert_string_equal(r.reason, "delivery-status part names no recipient");
    bounce_report_free(&r);

    /* out of range */
    parse_str(DSN_HEAD "Content-Type: message/delivery-status\n\n" DSN_FIELDS, &r);
    assert_null(bounce_rcpt_json(&r, 1));
    assert_null(bounce_rcpt_json(&r, -2));
    bounce_report_free(&r);
}

/* test_autoreply_vs_dsn - structure beats the Auto-Submitted header */
static void test_autoreply_vs_dsn(void **state)
{
    (void)state;
    struct bounce_report r;
    parse_str("Auto-Submitted: auto-replied\nSubject: Automatic reply: x\n"
              "Content-Type: message/delivery-status\n\n" DSN_FIELDS,
              &r);
    assert_int_equal(r.kind, BOUNCE_KIND_BOUNCE);
    bounce_report_free(&r);
    parse_str("Auto-Submitted: auto-generated\nSubject: hello\n\nhi\n", &r);
    assert_int_equal(r.kind, BOUNCE_KIND_UNPARSEABLE);
    bounce_report_free(&r);
    parse_str("X-Autoreply: yes\nSubject: hello\n\nhi\n", &r);
    assert_int_equal(r.kind, BOUNCE_KIND_AUTOREPLY);
    bounce_report_free(&r);
}

/* test_garbage - pseudo-random octets and mutilated samples parse without harm */
static void test_garbage(void **state)
{
    (void)state;
    uint32_t x = 2463534242u;
    char buf[2048];
    static const char alphabet[] = "<>@:;=\"-\r\n \tabcFRom5.1Content-Type multipart/boundary";
    for (int it = 0; it < 3000; it++) {
        size_t n = 0;
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        size_t len = x % sizeof buf;
        for (; n < len; n++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            buf[n] = (it & 1) ? (char)(x & 0xff) : alphabet[x % (sizeof alphabet - 1)];
        }
        struct bounce_report r;
        char *copy = heap_copy(buf, len);
        assert_int_equal(bounce_parse(copy, len, sizeof buf, &r), 0);
        for (int i = r.nrcpts ? 0 : -1; i < r.nrcpts; i++) {
            json_t *j = bounce_rcpt_json(&r, i);
            assert_non_null(j);
            json_decref(j);
            if (i < 0) break;
        }
        bounce_report_free(&r);
        free(copy);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_size_cap),
        cmocka_unit_test(test_depth_cap),
        cmocka_unit_test(test_part_and_rcpt_caps),
        cmocka_unit_test(test_mbox),
        cmocka_unit_test(test_decoding),
        cmocka_unit_test(test_folded),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_autoreply_vs_dsn),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
