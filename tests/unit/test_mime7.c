/*
 * test_mime7 - unit tests for the 8-bit to 7-bit MIME downgrade: golden outputs
 * (latin-1 and UTF-8 bodies, soft breaks at the 76-octet edge, "=" and trailing
 * white space, multipart/alternative, nested multipart/mixed with a base64
 * attachment, a part without headers, bare LF, a body without a final CRLF), the
 * refusals (8-bit headers, message/rfc822, base64/binary parts, preambles, missing
 * boundary, depth and part caps, output cap) and 7-bit messages passing through
 * byte for byte.
 *
 * Every successful conversion is checked by expect_7bit() (no octet > 127, no
 * line over 998 octets), and the quoted-printable bodies are decoded by a decoder
 * written here, independent of the encoder, which also rejects what RFC 2045 6.7
 * forbids (lines over 76 octets, trailing white space, lowercase or bad "=XX").
 * Inputs are copied to exact-length heap buffers so that ASan catches overreads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mime7.h"
#include "util.h"

#define OUT_LIMIT (4 * 1024 * 1024)

/* A finished conversion as a NUL-terminated copy. */
struct conv {
    int rc;
    char why[160];
    char *s;
    size_t len;
};

/* heap_copy - exact-length heap copy of the n octets of s (1 octet when n == 0) */
static uint8_t *heap_copy(const void *s, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    if (n) memcpy(p, s, n);
    return p;
}

/* longest_line - octets in the longest LF-separated line of p[0..n), a CR
 * before the LF not counted */
static size_t longest_line(const uint8_t *p, size_t n)
{
    size_t line = 0, max = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n')
            line = 0;
        else if (!(p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') && ++line > max)
            max = line;
    }
    return max;
}

/* expect_7bit - no octet > 127 and no line longer than 998 octets, or than the
 * longest input line (maxin) when that is longer: copied lines stay as they are */
static void expect_7bit(const uint8_t *p, size_t n, size_t maxin)
{
    for (size_t i = 0; i < n; i++)
        assert_true(p[i] < 0x80);
    assert_true(longest_line(p, n) <= (maxin > 998 ? maxin : 998));
}

/* convert - run mime7_convert on the n octets of s */
static void convert(const void *s, size_t n, struct conv *c)
{
    uint8_t *in = heap_copy(s, n);
    struct vbuf out;
    vbuf_init(&out, OUT_LIMIT);
    memset(c->why, 'X', sizeof c->why);
    c->rc = mime7_convert(in, n, &out, c->why, sizeof c->why);
    assert_non_null(memchr(c->why, '\0', sizeof c->why));
    if (c->rc == 0) {
        expect_7bit(out.data, out.len, longest_line(in, n));
    } else {
        assert_int_equal(c->rc, -1);
        assert_int_equal(out.len, 0);
        assert_true(c->why[0] != '\0');
    }
    c->len = out.len;
    c->s = malloc(out.len + 1);
    assert_non_null(c->s);
    if (out.len) memcpy(c->s, out.data, out.len);
    c->s[out.len] = '\0';
    vbuf_free(&out);
    free(in);
}

/* expect_golden - converting the C string in gives exactly want */
static void expect_golden(const char *in, const char *want)
{
    struct conv c;
    convert(in, strlen(in), &c);
    if (c.rc != 0) fail_msg("convert failed: %s", c.why);
    assert_string_equal(c.s, want);
    assert_int_equal(c.len, strlen(want));
    free(c.s);
}

/* expect_refused - converting in fails with a reason that contains what */
static void expect_refused(const char *in, size_t n, const char *what)
{
    struct conv c;
    convert(in, n, &c);
    assert_int_equal(c.rc, -1);
    if (strstr(c.why, what) == NULL) fail_msg("reason \"%s\" lacks \"%s\"", c.why, what);
    free(c.s);
}

/* expect_same - a message that needs nothing comes back byte for byte */
static void expect_same(const void *in, size_t n)
{
    struct conv c;
    convert(in, n, &c);
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.len, n);
    assert_memory_equal(c.s, in, n);
    free(c.s);
}

/* hexval - value of an uppercase hex digit, -1 otherwise (RFC 2045 6.7 rule 1:
 * uppercase is what an encoder must write) */
static int hexval(uint8_t ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/*
 * qp_decode - decode the quoted-printable text p[0..n) into out (size outn);
 * the decoded length, or -1 when the text breaks RFC 2045 6.7: a line over 76
 * octets, white space before a line end or at the end, an octet outside
 * 33..126 other than space and tab, a bad "=" escape, a bare CR or LF.
 */
static long qp_decode(const uint8_t *p, size_t n, uint8_t *out, size_t outn)
{
    size_t o = 0, line = 0;
    for (size_t i = 0; i < n;) {
        if (p[i] == '\r') {
            if (i + 1 >= n || p[i + 1] != '\n') return -1;
            if (i > 0 && (p[i - 1] == ' ' || p[i - 1] == '\t')) return -1;
            if (o + 2 > outn) return -1;
            out[o++] = '\r';
            out[o++] = '\n';
            i += 2;
            line = 0;
            continue;
        }
        if (++line > 76) return -1;
        if (p[i] == '=') {
            if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') {
                i += 3; /* soft line break */
                line = 0;
                continue;
            }
            if (i + 2 >= n) return -1;
            int hi = hexval(p[i + 1]), lo = hexval(p[i + 2]);
            if (hi < 0 || lo < 0 || o + 1 > outn) return -1;
            out[o++] = (uint8_t)(hi * 16 + lo);
            line += 2;
            if (line > 76) return -1;
            i += 3;
            continue;
        }
        if (p[i] != ' ' && p[i] != '\t' && (p[i] < 33 || p[i] > 126)) return -1;
        if (o + 1 > outn) return -1;
        out[o++] = p[i++];
    }
    if (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) return -1;
    return (long)o;
}

/* crlf_normal - copy of p[0..n) with every LF that lacks a CR before it made
 * CRLF, which is what the encoder does with bare LF line ends; *m its length */
static uint8_t *crlf_normal(const uint8_t *p, size_t n, size_t *m)
{
    uint8_t *q = malloc(2 * n + 1);
    assert_non_null(q);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r')) q[k++] = '\r';
        q[k++] = p[i];
    }
    *m = k;
    return q;
}

/*
 * expect_roundtrip - body (n octets) under a fixed 8-bit text/plain header is
 * encoded, and decoding the encoded body gives body back (line ends CRLF)
 */
static void expect_roundtrip(const uint8_t *body, size_t n)
{
    static const char head[] = "Subject: t\r\nContent-Type: text/plain; charset=utf-8\r\n"
                               "Content-Transfer-Encoding: 8bit\r\n\r\n";
    static const char ohead[] = "Subject: t\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                "Content-Transfer-Encoding: quoted-printable\r\n\r\n";
    size_t hn = sizeof head - 1, ohn = sizeof ohead - 1;
    uint8_t *msg = malloc(hn + n + 1);
    assert_non_null(msg);
    memcpy(msg, head, hn);
    memcpy(msg + hn, body, n);
    struct conv c;
    convert(msg, hn + n, &c);
    if (c.rc != 0) fail_msg("convert failed: %s", c.why);
    assert_true(c.len >= ohn);
    assert_memory_equal(c.s, ohead, ohn);
    size_t dn = 2 * n + 16, wn;
    uint8_t *dec = malloc(dn);
    assert_non_null(dec);
    long got = qp_decode((const uint8_t *)c.s + ohn, c.len - ohn, dec, dn);
    assert_true(got >= 0);
    uint8_t *want = crlf_normal(body, n, &wn);
    assert_int_equal((size_t)got, wn);
    assert_memory_equal(dec, want, wn);
    free(want);
    free(dec);
    free(c.s);
    free(msg);
}

static void test_needed(void **state)
{
    (void)state;
    assert_false(mime7_needed((const uint8_t *)"", 0));
    assert_false(mime7_needed((const uint8_t *)"Subject: x\r\n\r\nabc\x7f\r\n", 17));
    assert_true(mime7_needed((const uint8_t *)"Subject: \x80\r\n", 12));
    assert_true(mime7_needed((const uint8_t *)"a\r\n\r\n\xff", 6));
}

static void test_latin1(void **state)
{
    (void)state;
    /* no MIME-Version and no CTE field: both are added at the end of the header */
    expect_golden("From: a@example.org\r\n"
                  "Subject: menu\r\n"
                  "Content-Type: text/plain; charset=iso-8859-1\r\n"
                  "\r\n"
                  "Caf\xe9 cr\xe8me br\xfbl\xe9\x65\r\n"
                  "second line\r\n",
                  "From: a@example.org\r\n"
                  "Subject: menu\r\n"
                  "Content-Type: text/plain; charset=iso-8859-1\r\n"
                  "MIME-Version: 1.0\r\n"
                  "Content-Transfer-Encoding: quoted-printable\r\n"
                  "\r\n"
                  "Caf=E9 cr=E8me br=FBl=E9e\r\n"
                  "second line\r\n");
}

static void test_utf8(void **state)
{
    (void)state;
    /* the 8bit label is replaced where it stands; MIME-Version is kept as it is */
    expect_golden("MIME-Version: 1.0\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-transfer-encoding:  8BIT (was binary)\r\n"
                  "Subject: hi\r\n"
                  "\r\n"
                  "Gr\xc3\xbc\xc3\x9f Gott \xe2\x82\xac\r\n"
                  ".leading dot\r\n"
                  "From the start\r\n",
                  "MIME-Version: 1.0\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: quoted-printable\r\n"
                  "Subject: hi\r\n"
                  "\r\n"
                  "Gr=C3=BC=C3=9F Gott =E2=82=AC\r\n"
                  ".leading dot\r\n"
                  "From the start\r\n");
    /* a CTE field present at the top: replaced, and no MIME-Version added */
    expect_golden("Subject: x\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa9\r\n",
                  "Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n");
}

static void test_long_lines(void **state)
{
    (void)state;
    char in[512], want[1024];
    /* 100 escapes: 25 per line (75 octets and the soft "="), last line 75 */
    char *p = in + snprintf(in, sizeof in, "Content-Transfer-Encoding: 8bit\r\n\r\n");
    memset(p, 0xe9, 100);
    memcpy(p + 100, "\r\n", 3);
    p = want + snprintf(want, sizeof want, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    for (int l = 0; l < 4; l++) {
        for (int k = 0; k < 25; k++)
            p += snprintf(p, 4, "=E9");
        p += snprintf(p, 4, l < 3 ? "=\r\n" : "\r\n");
    }
    expect_golden(in, want);

    /* 200 literals then an escape: 75 + "=", 75 + "=", 50 + "=E9" */
    p = in + snprintf(in, sizeof in, "Content-Transfer-Encoding: 8bit\r\n\r\n");
    memset(p, 'a', 200);
    memcpy(p + 200, "\xe9\r\n", 4);
    p = want + snprintf(want, sizeof want, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    memset(p, 'a', 75);
    memcpy(p + 75, "=\r\n", 3);
    memset(p + 78, 'a', 75);
    memcpy(p + 153, "=\r\n", 3);
    memset(p + 156, 'a', 50);
    memcpy(p + 206, "=E9\r\n", 6);
    expect_golden(in, want);

    /* edges: exactly 76 literals stay one line; 77 break after 75; an escape
     * that would cross 75 moves whole to the next line */
    expect_golden(
        "Content-Transfer-Encoding: 8bit\r\n\r\n\xe9\r\n"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n"
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\xe9"
        "d\r\n",
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9\r\n"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n"
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
        "bbbbbbbbbbbbbbbb=\r\nbb\r\n"
        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc=\r\n"
        "=E9d\r\n");
    /* a line of 73 literals ending in an escape: 76 octets, allowed as last */
    expect_golden(
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\xe9\r\n",
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc=E9\r\n");
}

static void test_equals_and_white_space(void **state)
{
    (void)state;
    expect_golden("Content-Type: text/plain; charset=utf-8\r\n\r\n"
                  "a=b \r\n"
                  "tab\t\r\n"
                  "mid dle\xc3\xa9 \r\n"
                  "  \r\n"
                  "\t in the middle \t ok\r\n"
                  "ctl\x01\x7f\r\n"
                  "bare\rcr\r\r\n",
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "MIME-Version: 1.0\r\n"
                  "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                  "a=3Db=20\r\n"
                  "tab=09\r\n"
                  "mid dle=C3=A9=20\r\n"
                  " =20\r\n"
                  "\t in the middle \t ok\r\n"
                  "ctl=01=7F\r\n"
                  "bare=0Dcr=0D\r\n");
}

#define ALT_HEAD                                                                                   \
    "From: a@example.org\r\n"                                                                      \
    "MIME-Version: 1.0\r\n"                                                                        \
    "Content-Type: multipart/alternative;\r\n"                                                     \
    "\tboundary=\"=_alt 1\"\r\n"                                                                   \
    "\r\n"                                                                                         \
    "This is a MIME message.\r\n"                                                                  \
    "--=_alt 1\r\n"

static void test_multipart_alternative(void **state)
{
    (void)state;
    expect_golden(ALT_HEAD "Content-Type: text/plain; charset=utf-8\r\n"
                           "Content-Transfer-Encoding: 8bit\r\n"
                           "\r\n"
                           "Gr\xc3\xbc\xc3\x9f\r\n"
                           "\r\n"
                           "--=_alt 1\r\n"
                           "Content-Type: text/html; charset=utf-8\r\n"
                           "Content-Transfer-Encoding: 8bit\r\n"
                           "\r\n"
                           "<p>Gr&uuml;&szlig; a=b </p>\r\n"
                           "--=_alt 1--\r\n"
                           "epilogue\r\n",
                  ALT_HEAD "Content-Type: text/plain; charset=utf-8\r\n"
                           "Content-Transfer-Encoding: quoted-printable\r\n"
                           "\r\n"
                           "Gr=C3=BC=C3=9F\r\n"
                           "\r\n"
                           "--=_alt 1\r\n"
                           "Content-Type: text/html; charset=utf-8\r\n"
                           "Content-Transfer-Encoding: 8bit\r\n"
                           "\r\n"
                           "<p>Gr&uuml;&szlig; a=b </p>\r\n"
                           "--=_alt 1--\r\n"
                           "epilogue\r\n");
}

#define B64_PART                                                                                   \
    "--outer\r\n"                                                                                  \
    "Content-Type: application/octet-stream; name=\"r\xc3\xa9sum\xc3\xa9.bin\"\r\n"                \
    "Content-Transfer-Encoding: base64\r\n"                                                        \
    "\r\n"                                                                                         \
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\r\n"                         \
    "MDEyMzQ1Njc4OTo7PD0+Pw==\r\n"

/* drop_8bit_name - "r\xc3\xa9sum\xc3\xa9" (UTF-8) becomes "resume" in place */
static void drop_8bit_name(char *s)
{
    for (char *p = s; (p = strstr(p, "r\xc3\xa9sum\xc3\xa9")) != NULL; p += 6) {
        memcpy(p, "resume", 6);
        memmove(p + 6, p + 8, strlen(p + 8) + 1);
    }
}

static void test_nested_mixed(void **state)
{
    (void)state;
    /* the outer multipart says 8bit: relabelled 7bit; the inner alternative has a
     * boundary that starts with the outer one, which must not split it */
    static const char in[] = "Content-Type: multipart/mixed; boundary=outer\r\n"
                             "Content-Transfer-Encoding: 8bit\r\n"
                             "MIME-Version: 1.0\r\n"
                             "\r\n"
                             "--outer\r\n"
                             "Content-Type: multipart/alternative; boundary=\"outer-in\"\r\n"
                             "\r\n"
                             "--outer-in\r\n"
                             "Content-Type: text/plain; charset=iso-8859-1\r\n"
                             "\r\n"
                             "na\xefve\r\n"
                             "--outer-in\r\n"
                             "Content-Type: text/html\r\n"
                             "\r\n"
                             "<p>na&iuml;ve</p>\r\n"
                             "--outer-in--\r\n"
                             "\r\n" B64_PART "--outer--\r\n";
    static const char want[] = "Content-Type: multipart/mixed; boundary=outer\r\n"
                               "Content-Transfer-Encoding: 7bit\r\n"
                               "MIME-Version: 1.0\r\n"
                               "\r\n"
                               "--outer\r\n"
                               "Content-Type: multipart/alternative; boundary=\"outer-in\"\r\n"
                               "\r\n"
                               "--outer-in\r\n"
                               "Content-Type: text/plain; charset=iso-8859-1\r\n"
                               "Content-Transfer-Encoding: quoted-printable\r\n"
                               "\r\n"
                               "na=EFve\r\n"
                               "--outer-in\r\n"
                               "Content-Type: text/html\r\n"
                               "\r\n"
                               "<p>na&iuml;ve</p>\r\n"
                               "--outer-in--\r\n"
                               "\r\n" B64_PART "--outer--\r\n";
    /* the attachment's name is 8-bit: that header needs SMTPUTF8 */
    expect_refused(in, sizeof in - 1, "8-bit header");

    /* with a 7-bit name the base64 part is copied as it is */
    char in2[sizeof in], want2[sizeof want];
    memcpy(in2, in, sizeof in);
    memcpy(want2, want, sizeof want);
    drop_8bit_name(in2);
    drop_8bit_name(want2);
    expect_golden(in2, want2);
}

static void test_part_without_headers(void **state)
{
    (void)state;
    expect_golden("Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                  "--b\r\n"
                  "\r\n"
                  "body \xe9\r\n"
                  "--b\r\n"
                  "\r\n"
                  "--b\r\n"
                  "--b--\r\n",
                  "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                  "--b\r\n"
                  "Content-Transfer-Encoding: quoted-printable\r\n"
                  "\r\n"
                  "body =E9\r\n"
                  "--b\r\n"
                  "\r\n"
                  "--b\r\n"
                  "--b--\r\n");
}

static void test_8bit_header(void **state)
{
    (void)state;
    static const char top[] = "Subject: Caf\xc3\xa9\r\n\r\nbody\r\n";
    expect_refused(top, sizeof top - 1, "8-bit header");
    static const char part[] = "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                               "--b\r\n"
                               "Content-Type: text/plain; name=\"\xe9\"\r\n\r\n"
                               "body\r\n"
                               "--b--\r\n";
    expect_refused(part, sizeof part - 1, "8-bit header");
    /* all header, no body */
    static const char only[] = "Subject: \xe9";
    expect_refused(only, sizeof only - 1, "8-bit header");
}

static void test_message_rfc822(void **state)
{
    (void)state;
    static const char in[] = "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                             "--b\r\n"
                             "Content-Type: message/rfc822\r\n\r\n"
                             "Subject: inner\r\n\r\n"
                             "caf\xc3\xa9\r\n"
                             "--b--\r\n";
    expect_refused(in, sizeof in - 1, "message/rfc822");
    /* multipart/digest: a part without Content-Type is message/rfc822 */
    static const char dig[] = "Content-Type: multipart/digest; boundary=b\r\n\r\n"
                              "--b\r\n\r\n"
                              "Subject: inner\r\n\r\n"
                              "caf\xc3\xa9\r\n"
                              "--b--\r\n";
    expect_refused(dig, sizeof dig - 1, "message/rfc822");
    /* a 7-bit message/rfc822 part beside an 8-bit one is copied */
    expect_golden("Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                  "--b\r\n"
                  "Content-Type: message/rfc822\r\n\r\n"
                  "Subject: inner\r\n\r\n"
                  "cafe\r\n"
                  "--b\r\n\r\n"
                  "\xe9\r\n"
                  "--b--\r\n",
                  "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                  "--b\r\n"
                  "Content-Type: message/rfc822\r\n\r\n"
                  "Subject: inner\r\n\r\n"
                  "cafe\r\n"
                  "--b\r\n"
                  "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                  "=E9\r\n"
                  "--b--\r\n");
}

static void test_refusals(void **state)
{
    (void)state;
    static const char b64[] = "Content-Transfer-Encoding: base64\r\n\r\nAAAA\xe9\r\n";
    expect_refused(b64, sizeof b64 - 1, "base64");
    static const char qp[] = "Content-Transfer-Encoding: Quoted-Printable\r\n\r\n=E9\xe9\r\n";
    expect_refused(qp, sizeof qp - 1, "quoted-printable");
    static const char bin[] = "Content-Transfer-Encoding: binary\r\n\r\n\xe9\r\n";
    expect_refused(bin, sizeof bin - 1, "\"binary\"");
    static const char xt[] = "Content-Transfer-Encoding: x-uuencode\r\n\r\n\xe9\r\n";
    expect_refused(xt, sizeof xt - 1, "x-uuencode");
    static const char pre[] = "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                              "pr\xe9\x61mble\r\n--b\r\n\r\nx\r\n--b--\r\n";
    expect_refused(pre, sizeof pre - 1, "preamble");
    static const char epi[] = "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                              "--b\r\n\r\nx\r\n--b--\r\n\xe9pilogue\r\n";
    expect_refused(epi, sizeof epi - 1, "epilogue");
}

static void test_missing_boundary(void **state)
{
    (void)state;
    static const char none[] = "Content-Type: multipart/mixed\r\n\r\n--b\r\n\r\n\xe9\r\n--b--\r\n";
    expect_refused(none, sizeof none - 1, "boundary");
    static const char empty[] =
        "Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n\r\n\xe9\r\n----\r\n";
    expect_refused(empty, sizeof empty - 1, "boundary");
    /* a boundary that never occurs: the whole body is preamble */
    static const char absent[] =
        "Content-Type: multipart/mixed; boundary=zz\r\n\r\n--b\r\n\r\n\xe9\r\n--b--\r\n";
    expect_refused(absent, sizeof absent - 1, "preamble");
    /* a 7-bit multipart without a boundary needs nothing: copied */
    static const char seven[] = "Content-Type: multipart/mixed\r\n\r\nhello\r\n";
    expect_same(seven, sizeof seven - 1);
}

static void test_missing_close(void **state)
{
    (void)state;
    /* no close delimiter: the last part runs to the end */
    expect_golden("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xe9\r\n",
                  "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                  "Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9\r\n");
}

static void test_seven_bit_same(void **state)
{
    (void)state;
    static const char a[] = "From: a@example.org\r\nSubject: plain\r\n\r\nhello = world \r\n";
    expect_same(a, sizeof a - 1);
    /* malformed MIME, bare LF and an over-long line: still untouched */
    char b[3000];
    int n = snprintf(b, sizeof b,
                     "Content-Type: multipart/mixed\nContent-Transfer-Encoding: base64\n\n");
    memset(b + n, 'x', 2000);
    memcpy(b + n + 2000, "\n--b--", 6);
    expect_same(b, (size_t)n + 2006);
    expect_same("", 0);
}

static void test_empty_body(void **state)
{
    (void)state;
    static const char a[] = "Subject: x\r\n\r\n";
    expect_same(a, sizeof a - 1);
    static const char b[] = "Subject: x\r\n";
    expect_same(b, sizeof b - 1);
    /* an empty 8-bit-labelled part next to an 8-bit one */
    expect_golden("Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                  "--b\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                  "--b\r\n\r\n\xe9\r\n--b--",
                  "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                  "--b\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                  "--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=E9\r\n--b--");
}

static void test_no_final_crlf(void **state)
{
    (void)state;
    expect_golden("Subject: x\r\nMIME-Version: 1.0\r\n\r\nline one\r\nlast \xe9 ",
                  "Subject: x\r\nMIME-Version: 1.0\r\n"
                  "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                  "line one\r\nlast =E9=20");
}

static void test_bare_lf(void **state)
{
    (void)state;
    /* copied header lines keep their LF; encoded lines end in CRLF */
    expect_golden("Subject: x\nMIME-Version: 1.0\n\nab\xe9\ncd\n",
                  "Subject: x\nMIME-Version: 1.0\n"
                  "Content-Transfer-Encoding: quoted-printable\r\n\n"
                  "ab=E9\r\ncd\r\n");
    expect_golden("Content-Type: multipart/mixed; boundary=b\n\n--b\n\n\xe9\n--b--\n",
                  "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
                  "Content-Transfer-Encoding: quoted-printable\r\n\n=E9\n--b--\n");
}

/* nest - a message of depth nested multiparts around one 8-bit leaf into buf */
static size_t nest(char *buf, size_t n, int depth)
{
    size_t k = 0;
    for (int d = 0; d < depth; d++)
        k += (size_t)snprintf(buf + k, n - k,
                              "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", d, d);
    k += (size_t)snprintf(buf + k, n - k, "\r\n\xe9\r\n");
    for (int d = depth - 1; d >= 0; d--)
        k += (size_t)snprintf(buf + k, n - k, "--b%d--\r\n", d);
    assert_true(k < n);
    return k;
}

static void test_caps(void **state)
{
    (void)state;
    char buf[4096];
    size_t n = nest(buf, sizeof buf, MIME7_MAX_DEPTH);
    struct conv c;
    convert(buf, n, &c);
    assert_int_equal(c.rc, 0);
    assert_non_null(strstr(c.s, "quoted-printable\r\n\r\n=E9\r\n--b7--"));
    free(c.s);
    n = nest(buf, sizeof buf, MIME7_MAX_DEPTH + 1);
    expect_refused(buf, n, "too deep");
    /* depth past the cap is fine when that subtree is 7-bit */
    n = nest(buf, sizeof buf, 20);
    buf[strstr(buf, "\xe9") - buf] = 'e';
    expect_same(buf, n);

    /* part count */
    size_t cap = 64 * 1024, k = 0;
    char *big = malloc(cap);
    assert_non_null(big);
    k += (size_t)snprintf(big, cap, "Content-Type: multipart/mixed; boundary=b\r\n\r\n");
    for (int i = 0; i < MIME7_MAX_PARTS; i++)
        k += (size_t)snprintf(big + k, cap - k, "--b\r\n\r\n\xe9\r\n");
    k += (size_t)snprintf(big + k, cap - k, "--b--\r\n");
    expect_refused(big, k, "too many");
    free(big);
}

static void test_output_cap(void **state)
{
    (void)state;
    static const char in[] = "Subject: x\r\n\r\n\xe9\xe9\xe9\r\n";
    static const char want[] = "Subject: x\r\nMIME-Version: 1.0\r\n"
                               "Content-Transfer-Encoding: quoted-printable\r\n\r\n=E9=E9=E9\r\n";
    size_t wn = sizeof want - 1;
    char why[64];
    struct vbuf out;
    vbuf_init(&out, 5 + wn);
    assert_int_equal(vbuf_append(&out, "keep:", 5), 0);
    assert_int_equal(mime7_convert((const uint8_t *)in, sizeof in - 1, &out, why, sizeof why), 0);
    assert_int_equal(out.len, 5 + wn);
    assert_memory_equal(out.data + 5, want, wn);
    /* one octet short: -1, and what was there stays */
    vbuf_free(&out);
    vbuf_init(&out, 5 + wn - 1);
    assert_int_equal(vbuf_append(&out, "keep:", 5), 0);
    assert_int_equal(mime7_convert((const uint8_t *)in, sizeof in - 1, &out, why, sizeof why), -1);
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.data, "keep:", 5);
    assert_non_null(strstr(why, "limit"));
    /* a 7-bit copy obeys the cap too; why may be NULL */
    assert_int_equal(mime7_convert((const uint8_t *)want, wn, &out, NULL, 0), -1);
    assert_int_equal(out.len, 5);
    vbuf_free(&out);
}

static void test_roundtrip(void **state)
{
    (void)state;
    /* every octet value, on one line and one per line */
    uint8_t all[256 * 3];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    expect_roundtrip(all, 256);
    size_t k = 0;
    for (int i = 0; i < 256; i++) {
        if (i == '\r' || i == '\n') continue;
        all[k++] = (uint8_t)i;
        all[k++] = '\r';
        all[k++] = '\n';
    }
    expect_roundtrip(all, k);

    /* pseudo-random lines of mixed text, white space runs and 8-bit octets */
    static const uint8_t alphabet[] = {'a',  'Z',  '0',  '=', ' ', ' ', '\t', '.', 0xc3, 0xa9,
                                       0xff, 0x80, '\r', '-', 'x', 'y', 'z',  'F', 'r',  'o'};
    uint32_t seed = 12345;
    uint8_t body[4096];
    for (int round = 0; round < 300; round++) {
        size_t n = 0, want = 1 + (seed >> 3) % 3000;
        body[n++] = 0xe9; /* at least one 8-bit octet */
        while (n < want) {
            seed = seed * 1103515245u + 12345u;
            uint32_t r = seed >> 16;
            if (r % 97 == 0)
                body[n++] = '\n';
            else if (r % 89 == 0 && n + 1 < want)
                body[n++] = '\r', body[n++] = '\n';
            else
                body[n++] = alphabet[r % ARRAY_LEN(alphabet)];
        }
        expect_roundtrip(body, n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_needed),
        cmocka_unit_test(test_latin1),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_equals_and_white_space),
        cmocka_unit_test(test_multipart_alternative),
        cmocka_unit_test(test_nested_mixed),
        cmocka_unit_test(test_part_without_headers),
        cmocka_unit_test(test_8bit_header),
        cmocka_unit_test(test_message_rfc822),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_missing_boundary),
        cmocka_unit_test(test_missing_close),
        cmocka_unit_test(test_seven_bit_same),
        cmocka_unit_test(test_empty_body),
        cmocka_unit_test(test_no_final_crlf),
        cmocka_unit_test(test_bare_lf),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_output_cap),
        cmocka_unit_test(test_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
