/*
 * test_msg_header - unit tests for msg_header: section length, take (unfolding,
 * trimming, removal, duplicates, size limits) and count.
 *
 * Messages are copied into heap buffers of exactly their length, with no NUL after
 * them, so an overread is caught under ASan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "msg_header.h"

#define CAMPAIGN "X-Volley-Campaign"

/* msg_new - heap copy of the C string s without its NUL; caller frees */
static char *msg_new(const char *s, size_t *len)
{
    *len = strlen(s);
    char *p = malloc(*len ? *len : 1);
    assert_non_null(p);
    memcpy(p, s, *len);
    return p;
}

/* msg_is - the n octets of msg equal the C string want */
static void msg_is(const char *msg, size_t n, const char *want)
{
    assert_int_equal(n, strlen(want));
    assert_memory_equal(msg, want, n);
}

/* take_expect - take name from the C-string message in, expect result want, the
 * value wval (when want is 1) and the message wout afterwards */
static void take_expect(const char *in, const char *name, int want, const char *wval,
                        const char *wout)
{
    size_t len;
    char *msg = msg_new(in, &len);
    char val[256];
    assert_int_equal(msg_header_take(msg, &len, name, val, sizeof(val)), want);
    if (want == 1) assert_string_equal(val, wval);
    msg_is(msg, len, wout);
    free(msg);
}

/* section_of - msg_header_section_len of the C string s */
static size_t section_of(const char *s)
{
    size_t len;
    char *msg = msg_new(s, &len);
    size_t n = msg_header_section_len(msg, len);
    free(msg);
    return n;
}

/* count_of - msg_header_count of name in the C string s */
static int count_of(const char *s, const char *name)
{
    size_t len;
    char *msg = msg_new(s, &len);
    int n = msg_header_count(msg, len, name);
    free(msg);
    return n;
}

static void test_section_len(void **state)
{
    (void)state;
    assert_int_equal(section_of("A: 1\r\nB: 2\r\n\r\nbody\r\n"), 12);
    assert_int_equal(section_of("A: 1\r\n\r\n"), 6);
    assert_int_equal(section_of("A: 1\r\n folded\r\n\r\nbody"), 15);
    /* no empty line: the whole message is header */
    assert_int_equal(section_of("A: 1\r\nB: 2\r\n"), 12);
    assert_int_equal(section_of("A: 1\r\nB: 2"), 10);
    assert_int_equal(section_of("A: 1"), 4);
    /* starts with an empty line */
    assert_int_equal(section_of("\r\nbody\r\n"), 0);
    assert_int_equal(section_of("\r\n"), 0);
    assert_int_equal(section_of(""), 0);
    assert_int_equal(msg_header_section_len(NULL, 0), 0);
    /* only CRLF ends a line: bare LF and bare CR do not make an empty line */
    assert_int_equal(section_of("A: 1\n\nbody"), 10);
    assert_int_equal(section_of("A: 1\r\n\n\r\nbody"), 13); /* "\n\r\n" is not empty */
    assert_int_equal(section_of("A: 1\r\r\n\r\nbody"), 7);
    assert_int_equal(section_of("A: 1\r\n\r"), 7);
    /* a white-space-only line is a continuation, not the separator */
    assert_int_equal(section_of("A: 1\r\n \r\n\r\nbody"), 9);
    /* the first empty line wins */
    assert_int_equal(section_of("A: 1\r\n\r\nB: 2\r\n\r\nbody"), 6);
}

static void test_section_len_bounded(void **state)
{
    (void)state;
    /* the length is obeyed: the separator just past it is not seen */
    const char *s = "A: 1\r\n\r\n";
    assert_int_equal(msg_header_section_len(s, 7), 7);
    assert_int_equal(msg_header_section_len(s, 6), 6);
    assert_int_equal(msg_header_section_len(s, 1), 1);
}

static void test_take_basic(void **state)
{
    (void)state;
    take_expect("From: a@b\r\nX-Volley-Campaign: spring-sale\r\nSubject: hi\r\n\r\nbody\r\n",
                CAMPAIGN, 1, "spring-sale", "From: a@b\r\nSubject: hi\r\n\r\nbody\r\n");
    /* at the very start */
    take_expect("X-Volley-Campaign: c1\r\nFrom: a@b\r\n\r\nbody", CAMPAIGN, 1, "c1",
                "From: a@b\r\n\r\nbody");
    /* name match is case-insensitive, the value keeps its case */
    take_expect("x-volley-campaign: MiXeD\r\n\r\n", CAMPAIGN, 1, "MiXeD", "\r\n");
    take_expect("From: a\r\nsubject: Hello\r\n\r\n", "SUBJECT", 1, "Hello", "From: a\r\n\r\n");
}

static void test_take_trim(void **state)
{
    (void)state;
    take_expect("X-Volley-Campaign:c\r\n\r\n", CAMPAIGN, 1, "c", "\r\n");
    take_expect("X-Volley-Campaign: \t c \t \r\n\r\n", CAMPAIGN, 1, "c", "\r\n");
    take_expect("X-Volley-Campaign:\r\n\r\nb", CAMPAIGN, 1, "", "\r\nb");
    take_expect("X-Volley-Campaign:   \r\n\r\nb", CAMPAIGN, 1, "", "\r\nb");
    take_expect("X-Volley-Campaign: a  b\r\n\r\n", CAMPAIGN, 1, "a  b", "\r\n");
    /* obsolete white space before the colon still names the field */
    take_expect("X-Volley-Campaign : c\r\n\r\n", CAMPAIGN, 1, "c", "\r\n");
    take_expect("X-Volley-Campaign\t: c\r\n\r\n", CAMPAIGN, 1, "c", "\r\n");
    /* colons inside the value are just value */
    take_expect("X-Volley-Campaign: a:b: c\r\n\r\n", CAMPAIGN, 1, "a:b: c", "\r\n");
}

static void test_take_folded(void **state)
{
    (void)state;
    take_expect("X-Volley-Campaign: a\r\n b\r\nFrom: x\r\n\r\nbody", CAMPAIGN, 1, "a b",
                "From: x\r\n\r\nbody");
    take_expect("A: 1\r\nX-Volley-Campaign: spring\r\n  sale\r\n\tagain\r\nB: 2\r\n\r\n", CAMPAIGN,
                1, "spring  sale\tagain", "A: 1\r\nB: 2\r\n\r\n");
    /* value starting on a continuation line */
    take_expect("X-Volley-Campaign:\r\n value\r\n\r\n", CAMPAIGN, 1, "value", "\r\n");
    /* a white-space-only continuation line at the end is trimmed off */
    take_expect("X-Volley-Campaign: v\r\n \r\n\r\nb", CAMPAIGN, 1, "v", "\r\nb");
    /* a continuation that looks like a field is part of the value */
    take_expect("X-Volley-Campaign: a\r\n From: b\r\n\r\n", CAMPAIGN, 1, "a From: b", "\r\n");
    /* folded field last in the section */
    take_expect("A: 1\r\nX-Volley-Campaign: a\r\n\tb\r\n\r\nX: body\r\n", CAMPAIGN, 1, "a\tb",
                "A: 1\r\n\r\nX: body\r\n");
}

static void test_take_absent(void **state)
{
    (void)state;
    take_expect("From: a\r\nSubject: s\r\n\r\nbody", CAMPAIGN, 0, NULL,
                "From: a\r\nSubject: s\r\n\r\nbody");
    take_expect("", CAMPAIGN, 0, NULL, "");
    take_expect("\r\n", CAMPAIGN, 0, NULL, "\r\n");
    /* prefixes and extensions of the name are other fields */
    take_expect("X-Volley-Campaign-Id: 1\r\n\r\n", CAMPAIGN, 0, NULL,
                "X-Volley-Campaign-Id: 1\r\n\r\n");
    take_expect("X-Volley-Campaig: 1\r\n\r\n", CAMPAIGN, 0, NULL, "X-Volley-Campaig: 1\r\n\r\n");
    take_expect("X-Volley-Campaign\r\n\r\n", CAMPAIGN, 0, NULL, "X-Volley-Campaign\r\n\r\n");
    take_expect("X-Volley-Campaign", CAMPAIGN, 0, NULL, "X-Volley-Campaign");
    take_expect("X-Volley-Campaign x: 1\r\n\r\n", CAMPAIGN, 0, NULL,
                "X-Volley-Campaign x: 1\r\n\r\n");
    /* a continuation line is not a field start */
    take_expect("A: 1\r\n X-Volley-Campaign: c\r\n\r\n", CAMPAIGN, 0, NULL,
                "A: 1\r\n X-Volley-Campaign: c\r\n\r\n");
    take_expect(" X-Volley-Campaign: c\r\nA: 1\r\n\r\n", CAMPAIGN, 0, NULL,
                " X-Volley-Campaign: c\r\nA: 1\r\n\r\n");
    /* an empty name matches nothing */
    take_expect("A: 1\r\n: x\r\n\r\n", "", 0, NULL, "A: 1\r\n: x\r\n\r\n");
}

static void test_take_body_untouched(void **state)
{
    (void)state;
    const char *m = "From: a\r\n\r\nX-Volley-Campaign: in-body\r\n";
    take_expect(m, CAMPAIGN, 0, NULL, m);
    assert_int_equal(count_of(m, CAMPAIGN), 0);

    /* only the header copy goes; the body copy stays */
    take_expect("X-Volley-Campaign: head\r\n\r\nX-Volley-Campaign: body\r\n", CAMPAIGN, 1, "head",
                "\r\nX-Volley-Campaign: body\r\n");

    /* message starting with the empty line: everything is body */
    m = "\r\nX-Volley-Campaign: c\r\n";
    take_expect(m, CAMPAIGN, 0, NULL, m);
    assert_int_equal(count_of(m, CAMPAIGN), 0);
}

static void test_take_no_separator(void **state)
{
    (void)state;
    /* last field with its CRLF */
    take_expect("A: 1\r\nX-Volley-Campaign: c\r\n", CAMPAIGN, 1, "c", "A: 1\r\n");
    /* last field without a CRLF */
    take_expect("A: 1\r\nX-Volley-Campaign: c", CAMPAIGN, 1, "c", "A: 1\r\n");
    take_expect("A: 1\r\nX-Volley-Campaign: c\r\n d", CAMPAIGN, 1, "c d", "A: 1\r\n");
    take_expect("X-Volley-Campaign: only", CAMPAIGN, 1, "only", "");
    take_expect("X-Volley-Campaign:", CAMPAIGN, 1, "", "");
    /* a trailing bare CR is part of the value, not a line end */
    take_expect("X-Volley-Campaign: c\r", CAMPAIGN, 1, "c\r", "");
}

static void test_take_duplicates(void **state)
{
    (void)state;
    size_t len;
    char *msg = msg_new("X-Volley-Campaign: one\r\nA: 1\r\nx-volley-campaign: two\r\n"
                        "B: 2\r\n\r\nX-Volley-Campaign: body\r\n",
                        &len);
    char val[64];

    assert_int_equal(msg_header_count(msg, len, CAMPAIGN), 2);
    assert_int_equal(msg_header_take(msg, &len, CAMPAIGN, val, sizeof(val)), 1);
    assert_string_equal(val, "one");
    assert_int_equal(msg_header_count(msg, len, CAMPAIGN), 1);
    assert_int_equal(msg_header_take(msg, &len, CAMPAIGN, val, sizeof(val)), 1);
    assert_string_equal(val, "two");
    assert_int_equal(msg_header_count(msg, len, CAMPAIGN), 0);
    memcpy(val, "unchanged", 10);
    assert_int_equal(msg_header_take(msg, &len, CAMPAIGN, val, sizeof(val)), 0);
    msg_is(msg, len, "A: 1\r\nB: 2\r\n\r\nX-Volley-Campaign: body\r\n");
    free(msg);
}

static void test_take_value_size(void **state)
{
    (void)state;
    const char *m = "A: 1\r\nX-Volley-Campaign: 12345\r\n 678\r\n\r\nbody";
    size_t len;
    char *msg = msg_new(m, &len);
    size_t orig = len;
    char val[16];

    /* "12345 678" is 9 octets: 9 does not fit with the NUL, 10 does */
    assert_int_equal(msg_header_take(msg, &len, CAMPAIGN, val, 9), -1);
    assert_int_equal(len, orig);
    msg_is(msg, len, m);
    assert_int_equal(msg_header_take(msg, &len, CAMPAIGN, val, 1), -1);
    assert_int_equal(msg_header_take(msg, &len, CAMPAIGN, val, 0), -1);
    msg_is(msg, len, m);
    assert_int_equal(msg_header_take(msg, &len, CAMPAIGN, val, 10), 1);
    assert_string_equal(val, "12345 678");
    msg_is(msg, len, "A: 1\r\n\r\nbody");
    free(msg);

    /* trimmed white space does not count against the size */
    msg = msg_new("X-Volley-Campaign:      ab      \r\n\r\n", &len);
    assert_int_equal(msg_header_take(msg, &len, CAMPAIGN, val, 3), 1);
    assert_string_equal(val, "ab");
    free(msg);

    /* an empty value needs just the NUL */
    msg = msg_new("X-Volley-Campaign:\r\n\r\n", &len);
    assert_int_equal(msg_header_take(msg, &len, CAMPAIGN, val, 1), 1);
    assert_string_equal(val, "");
    free(msg);
}

static void test_take_large_value(void **state)
{
    (void)state;
    char big[5000], want[5000];
    size_t off = 0;
    memcpy(big, "X-Volley-Campaign: ", 19);
    off = 19;
    for (int i = 0; i < 100; i++) {
        memcpy(big + off, "0123456789012345678901234567890123456789\r\n ", 43);
        off += 43;
    }
    memcpy(big + off, "end\r\n\r\nbody", 12);
    for (int i = 0; i < 100; i++)
        memcpy(want + i * 41, "0123456789012345678901234567890123456789 ", 41);
    memcpy(want + 100 * 41, "end", 4);

    size_t len;
    char *msg = msg_new(big, &len);
    char val[4300];
    assert_int_equal(msg_header_take(msg, &len, CAMPAIGN, val, strlen(want)), -1);
    assert_int_equal(msg_header_take(msg, &len, CAMPAIGN, val, sizeof(val)), 1);
    assert_string_equal(val, want);
    msg_is(msg, len, "\r\nbody");
    free(msg);
}

static void test_take_nul_octets(void **state)
{
    (void)state;
    /* messages are not C strings: NULs before and inside a field are data */
    static const char m[] = "A: x\0y\r\nX-Volley-Campaign: c\r\n\r\nb\0";
    size_t len = sizeof(m) - 1;
    char *msg = malloc(len);
    assert_non_null(msg);
    memcpy(msg, m, len);
    char val[16];
    assert_int_equal(msg_header_count(msg, len, CAMPAIGN), 1);
    assert_int_equal(msg_header_take(msg, &len, CAMPAIGN, val, sizeof(val)), 1);
    assert_string_equal(val, "c");
    assert_int_equal(len, 12);
    assert_memory_equal(msg, "A: x\0y\r\n\r\nb\0", 12);
    free(msg);
}

static void test_take_crlf_edges(void **state)
{
    (void)state;
    /* bare LF is not a line end: the next "field" is part of this line */
    take_expect("X-Volley-Campaign: a\nB: 2\r\n\r\n", CAMPAIGN, 1, "a\nB: 2", "\r\n");
    take_expect("A: 1\nX-Volley-Campaign: c\r\n\r\n", CAMPAIGN, 0, NULL,
                "A: 1\nX-Volley-Campaign: c\r\n\r\n");
    /* CR before the CRLF stays in the value */
    take_expect("X-Volley-Campaign: a\r\r\n\r\n", CAMPAIGN, 1, "a\r", "\r\n");
}

static void test_count(void **state)
{
    (void)state;
    const char *m = "Received: a\r\nReceived: b\r\n c\r\nreceived: d\r\nRECEIVED : e\r\n"
                    "Received-SPF: pass\r\n\r\nReceived: body\r\n";
    assert_int_equal(count_of(m, "Received"), 4);
    assert_int_equal(count_of(m, "received-spf"), 1);
    assert_int_equal(count_of(m, "c"), 0);
    assert_int_equal(count_of(m, CAMPAIGN), 0);
    assert_int_equal(count_of("", CAMPAIGN), 0);
    assert_int_equal(msg_header_count(NULL, 0, CAMPAIGN), 0);
    assert_int_equal(count_of("X-Volley-Campaign:", CAMPAIGN), 1);
    assert_int_equal(count_of("X-Volley-Campaign: a\r\nX-Volley-Campaign: b", CAMPAIGN), 2);
    assert_int_equal(count_of("A: 1\r\n", ""), 0);
}

static void test_take_keeps_other_lines(void **state)
{
    (void)state;
    /* removing one field leaves the others and their folds intact */
    take_expect("A: 1\r\n a\r\nX-Volley-Campaign: c\r\n d\r\nB: 2\r\n b\r\n\r\n", CAMPAIGN, 1,
                "c d", "A: 1\r\n a\r\nB: 2\r\n b\r\n\r\n");
    /* a leading orphan continuation line stays */
    take_expect(" orphan\r\nX-Volley-Campaign: c\r\n\r\n", CAMPAIGN, 1, "c", " orphan\r\n\r\n");
}

/* msg_header_get: the first field's unfolded value, the message untouched */
static void test_get(void **state)
{
    (void)state;
    const char msg[] = "Subject: s\r\nFrom: \"A\"\r\n <a@Example.ORG>\r\nFrom: b@x\r\n\r\nFrom: body\r\n";
    char val[64], small[8];
    assert_int_equal(msg_header_get(msg, sizeof msg - 1, "from", val, sizeof val), 1);
    assert_string_equal(val, "\"A\" <a@Example.ORG>");
    assert_int_equal(msg_header_get(msg, sizeof msg - 1, "Reply-To", val, sizeof val), 0);
    assert_int_equal(msg_header_get(msg, sizeof msg - 1, "From", small, sizeof small), -1);
    /* a header line in the body is not a field */
    const char body_only[] = "X: y\r\n\r\nReply-To: z\r\n";
    assert_int_equal(msg_header_get(body_only, sizeof body_only - 1, "Reply-To", val, sizeof val), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_section_len),
        cmocka_unit_test(test_section_len_bounded),
        cmocka_unit_test(test_take_basic),
        cmocka_unit_test(test_take_trim),
        cmocka_unit_test(test_take_folded),
        cmocka_unit_test(test_take_absent),
        cmocka_unit_test(test_take_body_untouched),
        cmocka_unit_test(test_take_no_separator),
        cmocka_unit_test(test_take_duplicates),
        cmocka_unit_test(test_take_value_size),
        cmocka_unit_test(test_take_large_value),
        cmocka_unit_test(test_take_nul_octets),
        cmocka_unit_test(test_take_crlf_edges),
        cmocka_unit_test(test_count),
        cmocka_unit_test(test_take_keeps_other_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
