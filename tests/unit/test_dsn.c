/*
 * test_dsn - unit tests for dsn_build: the top-level header, the three parts and
 * their exact field values, status derivation, expiry wording, local diagnostics,
 * neutralising of CR/LF and 8-bit text, the caps (diagnostic, copied headers, long
 * lines, the caller's buffer), invalid input and boundary clashes.
 *
 * Every successful build is run through expect_wellformed(): 7-bit, no NUL, every
 * line ended by CRLF, none longer than 998 octets.  The original message is copied
 * into a heap buffer of exactly its length so an overread is caught under ASan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dsn.h"
#include "util.h"

#define OUT_LIMIT (1024 * 1024)

#define ORIG_HEADERS                                                                               \
    "Return-Path: <alice@example.org>\r\n"                                                         \
    "From: Alice <alice@example.org>\r\n"                                                          \
    "To: bob@example.net, carol@example.com\r\n"                                                   \
    "Subject: Quarterly\r\n"                                                                       \
    " report\r\n"                                                                                  \
    "Message-ID: <abc@example.org>\r\n"
#define ORIG ORIG_HEADERS "\r\nBODY-SECRET line one\r\nFrom: not-a-header\r\n"

/* A built notice as a C string (the output has no NUL: expect_wellformed checks). */
struct built {
    struct vbuf buf;
    char *s;
};

/* fixture - two bounced recipients of the ORIG message */
struct fixture {
    struct dsn_rcpt rcpts[2];
    struct dsn_info info;
    uint8_t *orig;
};

/* heap_copy - exact-length heap copy of the n octets of s (1 octet when n == 0) */
static uint8_t *heap_copy(const char *s, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

/* fixture_init - the standard input; set_orig replaces the original */
static void fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->rcpts[0] = (struct dsn_rcpt){
        .addr = "bob@example.net",
        .action = "failed",
        .status = "5.1.1",
        .code = 550,
        .diag = "5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
        .remote_mta = "mx1.example.net",
        .last_attempt_ms = 1795443000000,
    };
    f->rcpts[1] = (struct dsn_rcpt){
        .addr = "carol@example.com",
        .action = "failed",
        .status = "",
        .code = 554,
        .diag = "Transaction failed",
        .remote_mta = "mx.example.com",
        .last_attempt_ms = 1795443100000,
    };
    f->info = (struct dsn_info){
        .reporting_mta = "mta1.volley.test",
        .queue_id = "0193A1B2C3D4E5F6",
        .sender = "alice@example.org",
        .arrival_ms = 1795356900000,
        .now_ms = 1795443300000,
        .rcpts = f->rcpts,
        .nrcpt = 2,
    };
    f->orig = heap_copy(ORIG, strlen(ORIG));
    f->info.orig = f->orig;
    f->info.orig_len = strlen(ORIG);
}

static void fixture_set_orig(struct fixture *f, const char *s, size_t n)
{
    free(f->orig);
    f->orig = heap_copy(s, n);
    f->info.orig = f->orig;
    f->info.orig_len = n;
}

static void fixture_free(struct fixture *f)
{
    free(f->orig);
    f->orig = NULL;
}

/* expect_wellformed - 7-bit, no NUL, CRLF line ends only, lines <= 998 octets */
static void expect_wellformed(const uint8_t *p, size_t n)
{
    size_t line = 0;
    assert_true(n >= 2);
    for (size_t i = 0; i < n; i++) {
        assert_true(p[i] != 0 && p[i] < 0x80);
        if (p[i] == '\r') {
            assert_true(i + 1 < n && p[i + 1] == '\n');
            assert_true(line <= 998);
            line = 0;
            i++;
        } else {
            assert_true(p[i] != '\n');
            line++;
        }
    }
    assert_int_equal(line, 0); /* ends with CRLF */
}

/* build_ok - dsn_build must succeed; the result is well-formed and NUL-terminated */
static void build_ok(const struct dsn_info *in, struct built *b)
{
    vbuf_init(&b->buf, OUT_LIMIT);
    assert_int_equal(dsn_build(in, &b->buf), 0);
    expect_wellformed(b->buf.data, b->buf.len);
    b->s = malloc(b->buf.len + 1);
    assert_non_null(b->s);
    memcpy(b->s, b->buf.data, b->buf.len);
    b->s[b->buf.len] = '\0';
}

static void built_free(struct built *b)
{
    vbuf_free(&b->buf);
    free(b->s);
}

/* cat3 - heap string a b c; caller frees */
static char *cat3(const char *a, const char *b, const char *c)
{
    size_t na = strlen(a), nb = strlen(b), nc = strlen(c);
    char *s = malloc(na + nb + nc + 1);
    assert_non_null(s);
    memcpy(s, a, na);
    memcpy(s + na, b, nb);
    memcpy(s + na + nb, c, nc + 1);
    return s;
}

/* count_of - non-overlapping occurrences of needle in s */
static size_t count_of(const char *s, const char *needle)
{
    size_t n = 0, len = strlen(needle);
    for (const char *p = strstr(s, needle); p != NULL; p = strstr(p + len, needle))
        n++;
    return n;
}

/* has_line - s holds line as a whole line (between line starts and a CRLF) */
static int has_line(const char *s, const char *line)
{
    size_t len = strlen(line);
    for (const char *p = strstr(s, line); p != NULL; p = strstr(p + 1, line))
        if ((p == s || p[-1] == '\n') && strncmp(p + len, "\r\n", 2) == 0) return 1;
    return 0;
}

/* boundary_of - the boundary parameter of the top-level Content-Type; caller frees */
static char *boundary_of(const char *s)
{
    const char *p = strstr(s, "boundary=\"");
    assert_non_null(p);
    p += strlen("boundary=\"");
    const char *e = strchr(p, '"');
    assert_non_null(e);
    assert_true(e > p && e - p <= 70);
    char *b = malloc((size_t)(e - p) + 1);
    assert_non_null(b);
    memcpy(b, p, (size_t)(e - p));
    b[e - p] = '\0';
    return b;
}

/*
 * part_body - the body (after the part header) of part k (0-based) of the notice,
 * up to the CRLF before the next delimiter; *hdr gets the part header.  Both are
 * heap strings the caller frees.
 */
static char *part_body(const char *s, int k, char **hdr)
{
    char *b = boundary_of(s);
    size_t blen = strlen(b);
    char *delim = malloc(blen + 5);
    assert_non_null(delim);
    memcpy(delim, "--", 2);
    memcpy(delim + 2, b, blen);
    memcpy(delim + 2 + blen, "\r\n", 3);

    const char *p = s;
    for (int i = 0; i <= k; i++) {
        p = strstr(p, delim);
        assert_non_null(p);
        assert_true(p[-1] == '\n'); /* delimiters start a line */
        p += strlen(delim);
    }
    const char *end = strstr(p, "\r\n--");
    while (end != NULL && strncmp(end + 4, b, blen) != 0)
        end = strstr(end + 1, "\r\n--");
    assert_non_null(end);
    const char *sep = strstr(p, "\r\n\r\n");
    assert_non_null(sep);
    assert_true(sep < end);
    *hdr = strndup(p, (size_t)(sep + 2 - p));
    char *body = strndup(sep + 4, (size_t)(end - (sep + 4)));
    assert_non_null(*hdr);
    assert_non_null(body);
    free(delim);
    free(b);
    return body;
}

/* top_header - the top-level header section; caller frees */
static char *top_header(const char *s)
{
    const char *sep = strstr(s, "\r\n\r\n");
    assert_non_null(sep);
    char *h = strndup(s, (size_t)(sep + 2 - s));
    assert_non_null(h);
    return h;
}

static void test_bounce_two_rcpts(void **state)
{
    (void)state;
    struct fixture f;
    struct built b;
    fixture_init(&f);
    build_ok(&f.info, &b);

    char *bd = boundary_of(b.s);
    assert_int_equal(strncmp(bd, "=_volley_", 9), 0);
    assert_int_equal(strlen(bd), 25);

    char *want_top = cat3("Date: Mon, 23 Nov 2026 14:15:00 +0000\r\n"
                          "From: Mail Delivery System <MAILER-DAEMON@mta1.volley.test>\r\n"
                          "To: <alice@example.org>\r\n"
                          "Subject: Undelivered Mail Returned to Sender\r\n"
                          "Message-ID: <0193A1B2C3D4E5F6.1795443300000.dsn@mta1.volley.test>\r\n"
                          "Auto-Submitted: auto-replied\r\n"
                          "MIME-Version: 1.0\r\n"
                          "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                          "\tboundary=\"",
                          bd, "\"\r\n");
    char *top = top_header(b.s);
    assert_string_equal(top, want_top);

    /* the boundary: once in the header, three delimiters, one close delimiter */
    char *delim = cat3("--", bd, "");
    char *close = cat3("\r\n--", bd, "--\r\n");
    assert_int_equal(count_of(b.s, bd), 5);
    assert_int_equal(count_of(b.s, delim), 4);
    /* the close delimiter ends the message */
    assert_true(b.buf.len > strlen(close));
    assert_string_equal(b.s + b.buf.len - strlen(close), close);

    char *hdr, *body;

    body = part_body(b.s, 0, &hdr);
    assert_string_equal(hdr, "Content-Description: Notification\r\n"
                             "Content-Type: text/plain; charset=us-ascii\r\n");
    assert_non_null(strstr(body, "This is the mail system at host mta1.volley.test.\r\n"));
    assert_non_null(strstr(body, "could not be delivered to the recipients below"));
    assert_true(has_line(body, "<bob@example.net>: delivery failed"));
    assert_true(has_line(body, "    host mx1.example.net said: 550 5.1.1 <bob@example.net>: "
                               "Recipient address rejected: User unknown"));
    assert_true(has_line(body, "<carol@example.com>: delivery failed"));
    assert_true(has_line(body, "    host mx.example.com said: 554 Transaction failed"));
    assert_null(strstr(body, "expired"));
    free(hdr);
    free(body);

    body = part_body(b.s, 1, &hdr);
    assert_string_equal(hdr, "Content-Description: Delivery report\r\n"
                             "Content-Type: message/delivery-status\r\n");
    assert_string_equal(body,
                        "Reporting-MTA: dns; mta1.volley.test\r\n"
                        "X-Volley-Queue-ID: 0193A1B2C3D4E5F6\r\n"
                        "Arrival-Date: Sun, 22 Nov 2026 14:15:00 +0000\r\n"
                        "\r\n"
                        "Final-Recipient: rfc822; bob@example.net\r\n"
                        "Action: failed\r\n"
                        "Status: 5.1.1\r\n"
                        "Remote-MTA: dns; mx1.example.net\r\n"
                        "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address "
                        "rejected: User unknown\r\n"
                        "Last-Attempt-Date: Mon, 23 Nov 2026 14:10:00 +0000\r\n"
                        "\r\n"
                        "Final-Recipient: rfc822; carol@example.com\r\n"
                        "Action: failed\r\n"
                        "Status: 5.0.0\r\n"
                        "Remote-MTA: dns; mx.example.com\r\n"
                        "Diagnostic-Code: smtp; 554 Transaction failed\r\n"
                        "Last-Attempt-Date: Mon, 23 Nov 2026 14:11:40 +0000\r\n");
    free(hdr);
    free(body);

    body = part_body(b.s, 2, &hdr);
    assert_string_equal(hdr, "Content-Description: Undelivered Message Headers\r\n"
                             "Content-Type: text/rfc822-headers\r\n");
    assert_string_equal(body, ORIG_HEADERS);
    free(hdr);
    free(body);
    assert_null(strstr(b.s, "BODY-SECRET"));
    assert_null(strstr(b.s, "not-a-header"));

    /* the same input gives the same bytes */
    struct built b2;
    build_ok(&f.info, &b2);
    assert_int_equal(b2.buf.len, b.buf.len);
    assert_memory_equal(b2.buf.data, b.buf.data, b.buf.len);
    built_free(&b2);

    free(delim);
    free(close);
    free(top);
    free(want_top);
    free(bd);
    built_free(&b);
    fixture_free(&f);
}

static void test_expired(void **state)
{
    (void)state;
    struct fixture f;
    struct built b;
    char *hdr, *body;
    fixture_init(&f);
    f.rcpts[0] = (struct dsn_rcpt){
        .addr = "dave@slow.example",
        .action = "failed",
        .status = "4.4.7",
        .code = 0,
        .diag = "connection timed out",
        .remote_mta = "",
        .last_attempt_ms = 1795443000000,
    };
    f.info.nrcpt = 1;
    build_ok(&f.info, &b);

    body = part_body(b.s, 0, &hdr);
    assert_true(has_line(body, "<dave@slow.example>: delivery time expired; the message stayed "
                               "in the queue"));
    assert_true(has_line(body, "    last error: connection timed out"));
    assert_null(strstr(body, "delivery failed"));
    free(hdr);
    free(body);

    body = part_body(b.s, 1, &hdr);
    assert_non_null(strstr(body, "\r\n\r\nFinal-Recipient: rfc822; dave@slow.example\r\n"
                                 "Action: failed\r\n"
                                 "Status: 4.4.7\r\n"
                                 "Diagnostic-Code: X-Volley; connection timed out\r\n"
                                 "Last-Attempt-Date: Mon, 23 Nov 2026 14:10:00 +0000\r\n"));
    assert_null(strstr(body, "Remote-MTA"));
    assert_null(strstr(body, "smtp;"));
    free(hdr);
    free(body);
    built_free(&b);

    /* an expiry whose last error was a 4xx reply from a host */
    f.rcpts[0].code = 451;
    f.rcpts[0].diag = "4.3.0 try again later";
    f.rcpts[0].remote_mta = "mx.slow.example";
    build_ok(&f.info, &b);
    assert_true(has_line(b.s, "    last error: host mx.slow.example said: 451 4.3.0 try again "
                              "later"));
    assert_true(has_line(b.s, "Diagnostic-Code: smtp; 451 4.3.0 try again later"));
    assert_true(has_line(b.s, "Remote-MTA: dns; mx.slow.example"));
    assert_true(has_line(b.s, "Status: 4.4.7"));
    built_free(&b);
    fixture_free(&f);
}

static void test_local_diagnostic(void **state)
{
    (void)state;
    struct fixture f;
    struct built b;
    fixture_init(&f);
    f.rcpts[0].code = 0;
    f.rcpts[0].status = "5.4.4";
    f.rcpts[0].diag = "no MX or address records for example.net";
    f.rcpts[0].remote_mta = "";
    f.rcpts[1].code = 0;
    f.rcpts[1].status = "";
    f.rcpts[1].diag = "Connection refused";
    f.rcpts[1].remote_mta = "mx.example.com";
    f.rcpts[1].last_attempt_ms = 0;
    build_ok(&f.info, &b);

    assert_true(has_line(b.s, "Diagnostic-Code: X-Volley; no MX or address records for "
                              "example.net"));
    assert_true(has_line(b.s, "    no MX or address records for example.net"));
    assert_true(has_line(b.s, "Diagnostic-Code: X-Volley; Connection refused"));
    assert_true(has_line(b.s, "    host mx.example.com: Connection refused"));
    assert_true(has_line(b.s, "Status: 5.4.4"));
    assert_true(has_line(b.s, "Status: 5.0.0"));
    assert_null(strstr(b.s, "smtp;"));
    assert_int_equal(count_of(b.s, "Remote-MTA:"), 1);
    /* a recipient never attempted has no Last-Attempt-Date */
    assert_int_equal(count_of(b.s, "Last-Attempt-Date:"), 1);
    built_free(&b);

    /* no code and no text: no Diagnostic-Code at all */
    f.rcpts[1].diag = "";
    f.rcpts[1].remote_mta = "";
    build_ok(&f.info, &b);
    assert_int_equal(count_of(b.s, "Diagnostic-Code:"), 1);
    assert_true(has_line(b.s, "    (no diagnostic)"));
    built_free(&b);

    /* NULL optional strings read as "" */
    f.rcpts[1].diag = NULL;
    f.rcpts[1].remote_mta = NULL;
    f.rcpts[1].status = NULL;
    f.rcpts[1].action = NULL;
    build_ok(&f.info, &b);
    assert_int_equal(count_of(b.s, "Action: failed\r\n"), 2);
    assert_int_equal(count_of(b.s, "Diagnostic-Code:"), 1);
    built_free(&b);
    fixture_free(&f);
}

static void test_status_derived(void **state)
{
    (void)state;
    static const struct {
        const char *status;
        int code;
        const char *want;
    } cases[] = {
        {"", 550, "Status: 5.0.0"},         {"", 450, "Status: 4.0.0"},
        {"", 0, "Status: 5.0.0"},           {"", 250, "Status: 5.0.0"},
        {"bogus", 421, "Status: 4.0.0"},    {"5.1.10", 550, "Status: 5.1.10"},
        {"5.1234.1", 550, "Status: 5.0.0"}, {"3.1.1", 550, "Status: 5.0.0"},
        {"5.1.1 ", 550, "Status: 5.0.0"},   {"5.1.1\r\nX: y", 550, "Status: 5.0.0"},
        {"4.2.2", 452, "Status: 4.2.2"},    {"5.1", 550, "Status: 5.0.0"},
    };
    struct fixture f;
    fixture_init(&f);
    f.info.nrcpt = 1;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct built b;
        f.rcpts[0].status = cases[i].status;
        f.rcpts[0].code = cases[i].code;
        build_ok(&f.info, &b);
        assert_true(has_line(b.s, cases[i].want));
        assert_int_equal(count_of(b.s, "Status: "), 1);
        built_free(&b);
    }
    fixture_free(&f);
}

static void test_crlf_injection(void **state)
{
    (void)state;
    struct fixture f;
    struct built b;
    fixture_init(&f);
    f.info.sender = "alice@example.org\r\nBcc: evil@example.com";
    f.rcpts[0].addr = "bob@example.net\r\nX-Injected: 1";
    f.rcpts[0].code = 421;
    f.rcpts[0].diag = "4.7.1 try later\r\nSubject: pwned\r\n\r\n--fake\nX: y\r";
    f.rcpts[0].remote_mta = "mx1\r\nEvil: 1";
    f.rcpts[0].action = "failed\r\nStatus: 2.0.0";
    build_ok(&f.info, &b);

    assert_true(has_line(b.s, "To: <alice@example.org??Bcc: evil@example.com>"));
    assert_true(has_line(b.s, "Final-Recipient: rfc822; bob@example.net??X-Injected: 1"));
    assert_true(has_line(b.s, "Action: failed??Status: 2.0.0"));
    assert_true(has_line(b.s, "Remote-MTA: dns; mx1??Evil: 1"));
    assert_true(has_line(b.s, "Diagnostic-Code: smtp; 421 4.7.1 try later??Subject: pwned????"
                              "--fake?X: y?"));
    /* nothing injected starts a line */
    assert_null(strstr(b.s, "\nBcc:"));
    assert_null(strstr(b.s, "\nX-Injected:"));
    assert_null(strstr(b.s, "\nSubject: pwned"));
    assert_null(strstr(b.s, "\n--fake"));
    assert_null(strstr(b.s, "\nX: y"));
    assert_null(strstr(b.s, "\nEvil:"));
    assert_null(strstr(b.s, "\nStatus: 2.0.0"));
    assert_int_equal(count_of(b.s, "\nSubject:"), 2); /* ours and the copied one */
    built_free(&b);
    fixture_free(&f);
}

static void test_8bit_replaced(void **state)
{
    (void)state;
    static const char orig[] = "From: =?utf-8?q?x?= <a@b>\r\n"
                               "Subject: \xe2\x82\xac price \x01\x7f\r\n"
                               "X-Tab:\tkept\r\n"
                               "\r\n"
                               "caf\xc3\xa9\r\n";
    struct fixture f;
    struct built b;
    char *hdr, *body;
    fixture_init(&f);
    fixture_set_orig(&f, orig, sizeof(orig) - 1);
    f.rcpts[0].addr = "j\xc3\xbcrgen@example.de";
    f.rcpts[0].diag = "caf\xc3\xa9 \x7f\x01\tok \x80\xff";
    f.rcpts[0].remote_mta = "mx.\xc3\xa9.example";
    f.info.sender = "s\xc3\xa9nder@example.org";
    f.info.reporting_mta = "mta \xc3\xa9<x>";
    f.info.queue_id = "ID 1@2";
    build_ok(&f.info, &b); /* checks 7-bit */

    assert_true(has_line(b.s, "Final-Recipient: rfc822; j??rgen@example.de"));
    assert_true(has_line(b.s, "Diagnostic-Code: smtp; 550 caf?? ??\tok ??"));
    assert_true(has_line(b.s, "Remote-MTA: dns; mx.??.example"));
    assert_true(has_line(b.s, "To: <s??nder@example.org>"));
    /* host name and queue id stay atoms where they form an address or an id */
    assert_true(has_line(b.s, "From: Mail Delivery System <MAILER-DAEMON@mta????x?>"));
    assert_true(has_line(b.s, "Message-ID: <ID?1?2.1795443300000.dsn@mta????x?>"));
    assert_true(has_line(b.s, "X-Volley-Queue-ID: ID?1?2"));

    body = part_body(b.s, 2, &hdr);
    assert_string_equal(body, "From: =?utf-8?q?x?= <a@b>\r\n"
                              "Subject: ??? price ??\r\n"
                              "X-Tab:\tkept\r\n");
    free(hdr);
    free(body);
    assert_null(strstr(b.s, "caf?\r\n"));
    built_free(&b);
    fixture_free(&f);
}

static void test_diag_cap(void **state)
{
    (void)state;
    struct fixture f;
    struct built b;
    char diag[2001];
    memset(diag, 'd', 2000);
    diag[2000] = '\0';
    fixture_init(&f);
    f.rcpts[0].diag = diag;
    f.info.nrcpt = 1;
    build_ok(&f.info, &b);

    char *want = cat3("Diagnostic-Code: smtp; 550 ", diag + 1500, "");
    assert_true(has_line(b.s, want));
    free(want);
    want = cat3("    host mx1.example.net said: 550 ", diag + 1500, "");
    assert_true(has_line(b.s, want));
    free(want);
    assert_int_equal(count_of(b.s, "ddddd\r\n"), 2);
    built_free(&b);

    /* long addresses and host names are capped too, lines stay <= 998 */
    char big[5001];
    memset(big, 'a', 5000);
    big[5000] = '\0';
    f.rcpts[0].addr = big;
    f.rcpts[0].remote_mta = big;
    f.info.sender = big;
    f.info.reporting_mta = big;
    f.info.queue_id = big;
    build_ok(&f.info, &b);
    built_free(&b);
    fixture_free(&f);
}

static void test_header_cap(void **state)
{
    (void)state;
    /* 1000 header lines of exactly 100 octets with CRLF, then a body */
    size_t nlines = 1000, len = nlines * 100 + 6;
    char *orig = malloc(len);
    assert_non_null(orig);
    for (size_t i = 0; i < nlines; i++) {
        char *l = orig + i * 100;
        memset(l, 'x', 98);
        memcpy(l, "X-Fill-", 7);
        for (size_t k = 0, v = i; k < 4; k++, v /= 10)
            l[10 - k] = (char)('0' + v % 10);
        l[11] = ':';
        memcpy(l + 98, "\r\n", 2);
    }
    memcpy(orig + nlines * 100, "\r\nbody", 6);

    struct fixture f;
    struct built b;
    char *hdr, *body;
    fixture_init(&f);
    fixture_set_orig(&f, orig, len);
    build_ok(&f.info, &b);
    body = part_body(b.s, 2, &hdr);
    /* 655 lines fit in 64 KiB, the 656th would not; the cut is at a line end */
    assert_int_equal(strlen(body), 65500);
    assert_memory_equal(body, orig, 65500);
    assert_true(strlen(body) <= 64 * 1024);
    assert_non_null(strstr(body, "X-Fill-0654:"));
    assert_null(strstr(b.s, "X-Fill-0655:"));
    free(hdr);
    free(body);
    built_free(&b);

    /* a header section of exactly 64 KiB is kept whole: 655 lines + one of 36 */
    memcpy(orig + 65500, "X-Last: ", 8);
    memset(orig + 65508, 'z', 26);
    memcpy(orig + 65534, "\r\n\r\nbody", 8);
    fixture_set_orig(&f, orig, 65542);
    build_ok(&f.info, &b);
    body = part_body(b.s, 2, &hdr);
    assert_int_equal(strlen(body), 64 * 1024);
    assert_memory_equal(body, orig, 64 * 1024);
    free(hdr);
    free(body);
    built_free(&b);

    free(orig);
    fixture_free(&f);
}

static void test_long_header_line(void **state)
{
    (void)state;
    size_t len = 5000 + strlen("\r\nSubject: s\r\n\r\nbody");
    char *orig = malloc(len);
    assert_non_null(orig);
    memset(orig, 'a', 5000);
    memcpy(orig, "X-Long: ", 8);
    memcpy(orig + 5000, "\r\nSubject: s\r\n\r\nbody", len - 5000);

    struct fixture f;
    struct built b;
    char *hdr, *body;
    fixture_init(&f);
    fixture_set_orig(&f, orig, len);
    build_ok(&f.info, &b);
    body = part_body(b.s, 2, &hdr);
    assert_int_equal(strlen(body), 998 + 2 + strlen("Subject: s\r\n"));
    assert_memory_equal(body, orig, 998);
    assert_string_equal(body + 998, "\r\nSubject: s\r\n");
    free(hdr);
    free(body);
    built_free(&b);
    free(orig);
    fixture_free(&f);
}

static void test_orig_without_blank_line(void **state)
{
    (void)state;
    struct fixture f;
    struct built b;
    char *hdr, *body;
    fixture_init(&f);

    fixture_set_orig(&f, "From: a@b\r\nSubject: x", strlen("From: a@b\r\nSubject: x"));
    build_ok(&f.info, &b);
    body = part_body(b.s, 2, &hdr);
    assert_string_equal(body, "From: a@b\r\nSubject: x\r\n");
    free(hdr);
    free(body);
    built_free(&b);

    fixture_set_orig(&f, "From: a@b\r\n", strlen("From: a@b\r\n"));
    build_ok(&f.info, &b);
    body = part_body(b.s, 2, &hdr);
    assert_string_equal(body, "From: a@b\r\n");
    free(hdr);
    free(body);
    built_free(&b);
    fixture_free(&f);
}

static void test_no_orig_headers(void **state)
{
    (void)state;
    static const char *origs[] = {"", "\r\nbody\r\n", "\nbody\n"};
    struct fixture f;
    fixture_init(&f);
    for (size_t i = 0; i < sizeof(origs) / sizeof(origs[0]); i++) {
        struct built b;
        fixture_set_orig(&f, origs[i], strlen(origs[i]));
        build_ok(&f.info, &b);
        char *bd = boundary_of(b.s);
        assert_int_equal(count_of(b.s, bd), 4); /* header, two delimiters, close */
        assert_null(strstr(b.s, "text/rfc822-headers"));
        assert_null(strstr(b.s, "body"));
        free(bd);
        built_free(&b);
    }
    /* orig NULL with length 0 is fine too */
    struct built b;
    f.info.orig = NULL;
    f.info.orig_len = 0;
    build_ok(&f.info, &b);
    assert_null(strstr(b.s, "text/rfc822-headers"));
    built_free(&b);
    fixture_free(&f);
}

static void test_bare_lf_headers(void **state)
{
    (void)state;
    static const char orig[] = "From: a@b\nSubject: hi\n folded\nX-A: 1\r2\r\nX-B: 3\r\r\n"
                               "\nbody line\n";
    struct fixture f;
    struct built b;
    char *hdr, *body;
    fixture_init(&f);
    fixture_set_orig(&f, orig, sizeof(orig) - 1);
    build_ok(&f.info, &b);
    body = part_body(b.s, 2, &hdr);
    assert_string_equal(body, "From: a@b\r\nSubject: hi\r\n folded\r\nX-A: 1?2\r\nX-B: 3?\r\n");
    assert_null(strstr(b.s, "body line"));
    free(hdr);
    free(body);
    built_free(&b);
    fixture_free(&f);
}

static void test_invalid_input(void **state)
{
    (void)state;
    struct fixture f;
    struct vbuf out;
    fixture_init(&f);
    vbuf_init(&out, OUT_LIMIT);
    assert_int_equal(vbuf_append(&out, "KEEP", 4), 0);

    assert_int_equal(dsn_build(NULL, &out), -1);
    f.info.sender = "";
    assert_int_equal(dsn_build(&f.info, &out), -1);
    f.info.sender = NULL;
    assert_int_equal(dsn_build(&f.info, &out), -1);
    f.info.sender = "alice@example.org";
    f.info.nrcpt = 0;
    assert_int_equal(dsn_build(&f.info, &out), -1);
    f.info.nrcpt = 2;
    f.info.rcpts = NULL;
    assert_int_equal(dsn_build(&f.info, &out), -1);
    f.info.rcpts = f.rcpts;
    f.rcpts[1].addr = "";
    assert_int_equal(dsn_build(&f.info, &out), -1);
    f.rcpts[1].addr = NULL;
    assert_int_equal(dsn_build(&f.info, &out), -1);
    f.rcpts[1].addr = "carol@example.com";
    f.info.reporting_mta = "";
    assert_int_equal(dsn_build(&f.info, &out), -1);
    f.info.reporting_mta = "mta1.volley.test";
    f.info.queue_id = "";
    assert_int_equal(dsn_build(&f.info, &out), -1);
    f.info.queue_id = "0193A1B2C3D4E5F6";
    f.info.orig = NULL; /* with orig_len != 0 */
    assert_int_equal(dsn_build(&f.info, &out), -1);
    f.info.orig = f.orig;
    /* dates before 1900 or after 9999 */
    f.info.now_ms = -2300000000000;
    assert_int_equal(dsn_build(&f.info, &out), -1);
    f.info.now_ms = 1795443300000;
    f.rcpts[1].last_attempt_ms = 253402300800000; /* year 10000 */
    assert_int_equal(dsn_build(&f.info, &out), -1);
    f.rcpts[1].last_attempt_ms = 1795443100000;

    /* every failure left the buffer alone */
    assert_int_equal(out.len, 4);
    assert_memory_equal(out.data, "KEEP", 4);
    /* and the repaired input builds */
    assert_int_equal(dsn_build(&f.info, &out), 0);
    assert_true(out.len > 4);
    vbuf_free(&out);
    fixture_free(&f);
}

static void test_output_cap(void **state)
{
    (void)state;
    struct fixture f;
    struct built full;
    struct vbuf out;
    fixture_init(&f);
    build_ok(&f.info, &full);
    size_t need = full.buf.len;

    /* one octet short fails and restores the length */
    vbuf_init(&out, need - 1);
    assert_int_equal(dsn_build(&f.info, &out), -1);
    assert_int_equal(out.len, 0);
    vbuf_free(&out);

    vbuf_init(&out, 100);
    assert_int_equal(dsn_build(&f.info, &out), -1);
    assert_int_equal(out.len, 0);
    vbuf_free(&out);

    /* exactly enough succeeds */
    vbuf_init(&out, need);
    assert_int_equal(dsn_build(&f.info, &out), 0);
    assert_int_equal(out.len, need);
    assert_memory_equal(out.data, full.buf.data, need);
    vbuf_free(&out);

    /* the notice is appended after what the buffer held */
    vbuf_init(&out, need + 6);
    assert_int_equal(vbuf_append(&out, "PREFIX", 6), 0);
    assert_int_equal(dsn_build(&f.info, &out), 0);
    assert_int_equal(out.len, need + 6);
    assert_memory_equal(out.data, "PREFIX", 6);
    assert_memory_equal(out.data + 6, full.buf.data, need);
    /* full: a second notice does not fit, the first stays intact */
    assert_int_equal(dsn_build(&f.info, &out), -1);
    assert_int_equal(out.len, need + 6);
    assert_memory_equal(out.data + 6, full.buf.data, need);
    vbuf_free(&out);

    built_free(&full);
    fixture_free(&f);
}

static void test_dates(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {1795443300000, "Date: Mon, 23 Nov 2026 14:15:00 +0000"},
        {1795443300999, "Date: Mon, 23 Nov 2026 14:15:00 +0000"},
        {1772323200000, "Date: Sun, 01 Mar 2026 00:00:00 +0000"},
        {1772409599999, "Date: Sun, 01 Mar 2026 23:59:59 +0000"},
        {0, "Date: Thu, 01 Jan 1970 00:00:00 +0000"},
        {-1, "Date: Wed, 31 Dec 1969 23:59:59 +0000"},
    };
    struct fixture f;
    fixture_init(&f);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct built b;
        f.info.now_ms = cases[i].ms;
        build_ok(&f.info, &b);
        assert_int_equal(strncmp(b.s, cases[i].want, strlen(cases[i].want)), 0);
        assert_int_equal(strncmp(b.s + strlen(cases[i].want), "\r\n", 2), 0);
        built_free(&b);
    }
    /* Arrival-Date of the epoch */
    struct built b;
    f.info.now_ms = 1795443300000;
    f.info.arrival_ms = 0;
    build_ok(&f.info, &b);
    assert_true(has_line(b.s, "Arrival-Date: Thu, 01 Jan 1970 00:00:00 +0000"));
    built_free(&b);
    fixture_free(&f);
}

static void test_boundary_clash(void **state)
{
    (void)state;
    struct fixture f;
    struct built b;
    fixture_init(&f);
    build_ok(&f.info, &b);
    char *b0 = boundary_of(b.s);
    built_free(&b);

    /* the original's headers carry the boundary the notice would use */
    char *evil = cat3("X-Evil: --", b0, "\r\n--");
    char *orig = cat3("From: a@b\r\n", evil, b0);
    char *orig_full = cat3(orig, "--\r\n\r\nbody\r\n", "");
    fixture_set_orig(&f, orig_full, strlen(orig_full));
    free(orig_full);
    free(orig);
    free(evil);
    build_ok(&f.info, &b);
    char *b1 = boundary_of(b.s);
    assert_string_not_equal(b0, b1);
    assert_int_equal(strncmp(b1, "=_volley_", 9), 0);
    assert_int_equal(count_of(b.s, b1), 5);
    assert_int_equal(count_of(b.s, b0), 2); /* only inside the copied headers */
    char *hdr;
    char *body = part_body(b.s, 2, &hdr);
    assert_int_equal(count_of(body, b0), 2);
    free(hdr);
    free(body);
    built_free(&b);

    /* the same for a diagnostic carrying it */
    fixture_set_orig(&f, ORIG, strlen(ORIG));
    f.rcpts[0].diag = b0;
    build_ok(&f.info, &b);
    char *b2 = boundary_of(b.s);
    assert_string_not_equal(b0, b2);
    assert_int_equal(count_of(b.s, b2), 5);
    built_free(&b);

    free(b2);
    free(b1);
    free(b0);
    fixture_free(&f);
}

static void test_wellformed_many(void **state)
{
    (void)state;
    /* many recipients with hostile text everywhere: still well-formed */
    struct dsn_rcpt rcpts[50];
    char diag[50][64];
    struct fixture f;
    struct built b;
    fixture_init(&f);
    for (size_t i = 0; i < 50; i++) {
        for (size_t k = 0; k < sizeof(diag[i]) - 1; k++)
            diag[i][k] = (char)((i * 64 + k) % 255 + 1);
        diag[i][sizeof(diag[i]) - 1] = '\0';
        rcpts[i] = f.rcpts[i % 2];
        rcpts[i].diag = diag[i];
        rcpts[i].code = (int)(i % 3) * 250; /* 0, 250, 500 */
    }
    f.info.rcpts = rcpts;
    f.info.nrcpt = 50;
    build_ok(&f.info, &b);
    assert_int_equal(count_of(b.s, "Final-Recipient: "), 50);
    assert_int_equal(count_of(b.s, "\r\nStatus: "), 50);
    built_free(&b);
    fixture_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounce_two_rcpts),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_local_diagnostic),
        cmocka_unit_test(test_status_derived),
        cmocka_unit_test(test_crlf_injection),
        cmocka_unit_test(test_8bit_replaced),
        cmocka_unit_test(test_diag_cap),
        cmocka_unit_test(test_header_cap),
        cmocka_unit_test(test_long_header_line),
        cmocka_unit_test(test_orig_without_blank_line),
        cmocka_unit_test(test_no_orig_headers),
        cmocka_unit_test(test_bare_lf_headers),
        cmocka_unit_test(test_invalid_input),
        cmocka_unit_test(test_output_cap),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_boundary_clash),
        cmocka_unit_test(test_wellformed_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
