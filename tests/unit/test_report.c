/*
 * test_report - unit tests for the accounting-log report: exact counts and rates
 * for the total and each --by, async bounces, time and campaign filters, skipped
 * lines, the fast scanner against jansson on tricky lines, diagnostic
 * normalisation and the bounded top-k, warning thresholds at their boundaries,
 * the group cap, CSV quoting, the JSON document, the reader and the command line.
 *
 * Most checks render the report as JSON (report_write into a memory stream) and
 * read it back with jansson, so they also prove the JSON output parses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "report.h"
#include "util.h"

#define TS "2026-12-03T07:01:02.123Z"

/* feed - every '\n'-separated line of text into r */
static void feed(struct report *r, const char *text)
{
    while (*text) {
        const char *nl = strchr(text, '\n');
        size_t n = nl ? (size_t)(nl - text) : strlen(text);
        report_feed_line(r, text, n);
        text += n + (nl != NULL);
    }
}

/* render - the report in format f as a NUL-terminated string; caller frees */
static char *render(struct report *r, enum REPORT_FORMAT f)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&buf, &n);
    assert_non_null(m);
    assert_int_equal(report_write(r, f, m), 0);
    fclose(m);
    return buf;
}

/* doc - the report as parsed JSON; caller decrefs */
static json_t *doc(struct report *r)
{
    char *s = render(r, REPORT_FORMAT_JSON);
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (!j) fail_msg("report JSON does not parse: %s\n%s", e.text, s);
    free(s);
    return j;
}

/* num - integer member key of o (must exist) */
static long long num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) fail_msg("no integer \"%s\"", key);
    return (long long)json_integer_value(v);
}

/* rate - real member key of o (must exist) */
static double rate(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_real(v)) fail_msg("no real \"%s\"", key);
    return json_real_value(v);
}

/* group - the groups[] entry whose key is key, or fail */
static json_t *group(json_t *d, const char *key)
{
    json_t *g;
    size_t i;
    json_array_foreach(json_object_get(d, "groups"), i,
                       g) if (strcmp(json_string_value(json_object_get(g, "key")), key) ==
                              0) return g;
    fail_msg("no group \"%s\"", key);
    return NULL;
}

/* opts_by - options grouping by by */
static struct report_opts opts_by(enum REPORT_BY by)
{
    struct report_opts o;
    memset(&o, 0, sizeof o);
    o.by = by;
    return o;
}

static const char *const mixed =
    "{\"ts\":\"" TS "\",\"type\":\"delivered\",\"campaign\":\"c1\",\"recipient\":\"a@x.com\","
    "\"domain\":\"x.com\",\"vmta\":\"v1\",\"source\":\"192.0.2.1\",\"code\":250}\n"
    "{\"ts\":\"" TS "\",\"type\":\"delivered\",\"campaign\":\"c1\",\"recipient\":\"b@X.COM\","
    "\"source\":\"192.0.2.2\"}\n"
    "{\"ts\":\"" TS "\",\"type\":\"delivered\",\"campaign\":\"c2\",\"recipient\":\"c@y.org\","
    "\"domain\":\"y.org\",\"vmta\":\"v2\"}\n"
    "{\"ts\":\"" TS "\",\"type\":\"bounced\",\"campaign\":\"c1\",\"recipient\":\"d@x.com\","
    "\"domain\":\"x.com\",\"vmta\":\"v1\",\"code\":550,\"diag\":\"550 5.1.1 <d@x.com> unknown\","
    "\"category\":\"bad-mailbox\",\"hard\":true}\n"
    "{\"ts\":\"" TS "\",\"type\":\"bounced\",\"campaign\":\"c2\",\"recipient\":\"e@y.org\","
    "\"domain\":\"y.org\",\"vmta\":\"v2\",\"code\":452,\"diag\":\"452 4.2.2 full\","
    "\"category\":\"quota-issues\",\"hard\":false}\n"
    "{\"ts\":\"" TS "\",\"type\":\"expired\",\"campaign\":\"c2\",\"recipient\":\"f@y.org\","
    "\"domain\":\"y.org\",\"vmta\":\"v2\",\"diag\":\"expired\"}\n"
    "{\"ts\":\"" TS "\",\"type\":\"deferred\",\"campaign\":\"c1\",\"recipient\":\"g@x.com\","
    "\"domain\":\"x.com\",\"vmta\":\"v1\",\"category\":\"spam-related\",\"hard\":false}\n"
    "{\"ts\":\"" TS "\",\"type\":\"deferred\",\"campaign\":\"c1\",\"recipient\":\"g@x.com\","
    "\"domain\":\"x.com\",\"vmta\":\"v1\",\"category\":\"spam-related\",\"hard\":false}\n"
    "{\"ts\":\"" TS "\",\"type\":\"suppressed\",\"campaign\":\"c1\",\"recipient\":\"h@x.com\"}\n"
    "{\"ts\":\"" TS "\",\"type\":\"complaint\",\"campaign\":\"c1\",\"recipient\":\"a@x.com\","
    "\"feedback_type\":\"abuse\"}\n"
    "{\"ts\":\"" TS "\",\"type\":\"unsubscribed\",\"campaign\":\"c2\",\"recipient\":\"c@y.org\","
    "\"list\":\"news\",\"method\":\"one-click\"}\n"
    "{\"ts\":\"" TS "\",\"type\":\"suspend\",\"site\":\"x\",\"source\":\"v1\"}\n";

/* test_totals - every metric of the total block */
static void test_totals(void **state)
{
    (void)state;
    struct report *r = report_new(NULL);
    feed(r, mixed);
    json_t *d = doc(r);
    json_t *t = json_object_get(d, "total");
    assert_int_equal(num(t, "sent"), 6); /* 3 delivered + 2 bounced + 1 expired */
    assert_int_equal(num(t, "delivered"), 3);
    assert_int_equal(num(t, "hard_bounces"), 1);
    assert_int_equal(num(t, "soft_bounces"), 2);
    assert_int_equal(num(t, "deferrals"), 2);
    assert_int_equal(num(t, "complaints"), 1);
    assert_int_equal(num(t, "unsubscribes"), 1);
    assert_int_equal(num(t, "suppressed"), 1);
    assert_float_equal(rate(t, "delivery_rate"), 0.5, 1e-9);
    assert_float_equal(rate(t, "hard_rate"), 1.0 / 6, 1e-6);
    assert_float_equal(rate(t, "soft_rate"), 2.0 / 6, 1e-6);
    assert_float_equal(rate(t, "bounce_rate"), 0.5, 1e-9);
    assert_float_equal(rate(t, "complaint_rate"), 1.0 / 3, 1e-6);
    assert_float_equal(rate(t, "unsubscribe_rate"), 1.0 / 3, 1e-6);
    assert_int_equal(num(d, "lines"), 12);
    assert_int_equal(num(d, "skipped"), 0);
    assert_int_equal(num(d, "records"), 11); /* the suspend record is not one */
    assert_int_equal(json_array_size(json_object_get(d, "groups")), 0);
    json_decref(d);

    /* the table names every figure */
    char *s = render(r, REPORT_FORMAT_TABLE);
    assert_non_null(strstr(s, "sent"));
    assert_non_null(strstr(s, "50.00%"));
    assert_non_null(strstr(s, "Top bounce diagnostics"));
    assert_non_null(strstr(s, "Warnings"));
    free(s);
    report_free(r);
}

/* test_by_domain - the domain field, else the recipient's, case-folded */
static void test_by_domain(void **state)
{
    (void)state;
    struct report_opts o = opts_by(REPORT_BY_DOMAIN);
    struct report *r = report_new(&o);
    feed(r, mixed);
    json_t *d = doc(r);
    json_t *x = group(d, "x.com"), *y = group(d, "y.org");
    assert_int_equal(num(x, "sent"), 3);
    assert_int_equal(num(x, "delivered"), 2);
    assert_int_equal(num(x, "hard_bounces"), 1);
    assert_int_equal(num(x, "deferrals"), 2);
    assert_int_equal(num(x, "complaints"), 1);
    assert_int_equal(num(x, "suppressed"), 1);
    assert_float_equal(rate(x, "complaint_rate"), 0.5, 1e-9);
    assert_int_equal(num(y, "sent"), 3);
    assert_int_equal(num(y, "soft_bounces"), 2);
    assert_int_equal(num(y, "unsubscribes"), 1);
    /* sorted by sent, ties by key: x.com then y.org */
    json_t *first = json_array_get(json_object_get(d, "groups"), 0);
    assert_string_equal(json_string_value(json_object_get(first, "key")), "x.com");
    assert_int_equal(json_array_size(json_object_get(d, "groups")), 2);
    json_decref(d);
    report_free(r);
}

/* test_by_campaign_source - campaign rows; source = vmta, else the address */
static void test_by_campaign_source(void **state)
{
    (void)state;
    struct report_opts o = opts_by(REPORT_BY_CAMPAIGN);
    struct report *r = report_new(&o);
    feed(r, mixed);
    json_t *d = doc(r);
    assert_int_equal(num(group(d, "c1"), "sent"), 3);
    assert_int_equal(num(group(d, "c1"), "deferrals"), 2);
    assert_int_equal(num(group(d, "c2"), "sent"), 3);
    assert_int_equal(num(group(d, "c2"), "unsubscribes"), 1);
    json_decref(d);
    report_free(r);

    o = opts_by(REPORT_BY_SOURCE);
    r = report_new(&o);
    feed(r, mixed);
    d = doc(r);
    assert_int_equal(num(group(d, "v1"), "sent"), 2);
    assert_int_equal(num(group(d, "v1"), "deferrals"), 2);
    assert_int_equal(num(group(d, "192.0.2.2"), "delivered"), 1);
    assert_int_equal(num(group(d, "v2"), "sent"), 3);
    assert_int_equal(num(group(d, "(none)"), "complaints"), 1);
    json_decref(d);
    report_free(r);
}

/* test_by_category - failure records only; rates are shares of the total's sent */
static void test_by_category(void **state)
{
    (void)state;
    struct report_opts o = opts_by(REPORT_BY_CATEGORY);
    struct report *r = report_new(&o);
    feed(r, mixed);
    json_t *d = doc(r);
    assert_int_equal(json_array_size(json_object_get(d, "groups")), 4);
    json_t *bm = group(d, "bad-mailbox");
    assert_int_equal(num(bm, "hard_bounces"), 1);
    assert_float_equal(rate(bm, "bounce_rate"), 1.0 / 6, 1e-6);
    assert_int_equal(num(group(d, "quota-issues"), "soft_bounces"), 1);
    assert_int_equal(num(group(d, "message-expired"), "soft_bounces"), 1);
    assert_int_equal(num(group(d, "spam-related"), "deferrals"), 2);
    /* sorted by failures: spam-related (2 deferrals) first */
    json_t *first = json_array_get(json_object_get(d, "groups"), 0);
    assert_string_equal(json_string_value(json_object_get(first, "key")), "spam-related");
    json_decref(d);
    report_free(r);
}

/* test_async_bounce - a later DSN withdraws the delivery and counts as a bounce */
static void test_async_bounce(void **state)
{
    (void)state;
    struct report_opts o = opts_by(REPORT_BY_DOMAIN);
    struct report *r = report_new(&o);
    feed(r, "{\"type\":\"delivered\",\"recipient\":\"a@x.com\"}\n"
            "{\"type\":\"delivered\",\"recipient\":\"b@x.com\"}\n"
            "{\"type\":\"bounced\",\"recipient\":\"b@x.com\",\"async\":true,\"hard\":true,"
            "\"category\":\"bad-mailbox\",\"diag\":\"user unknown\"}\n"
            /* no "hard": 5xx code means hard, 4xx soft */
            "{\"type\":\"bounced\",\"recipient\":\"c@x.com\",\"code\":550}\n"
            "{\"type\":\"bounced\",\"recipient\":\"c@x.com\",\"code\":421}\n"
            "{\"type\":\"bounced\",\"recipient\":\"c@x.com\",\"enh\":\"5.7.1\"}\n");
    json_t *d = doc(r);
    json_t *t = json_object_get(d, "total");
    assert_int_equal(num(t, "sent"), 5);
    assert_int_equal(num(t, "delivered"), 1);
    assert_int_equal(num(t, "hard_bounces"), 3);
    assert_int_equal(num(t, "soft_bounces"), 1);
    assert_float_equal(rate(t, "bounce_rate"), 4.0 / 5, 1e-9);
    assert_int_equal(num(group(d, "x.com"), "delivered"), 1);
    json_decref(d);
    report_free(r);

    /* an async bounce whose delivery is outside the window does not go below zero */
    r = report_new(NULL);
    feed(r, "{\"type\":\"bounced\",\"recipient\":\"b@x.com\",\"async\":true,\"hard\":true}\n");
    d = doc(r);
    assert_int_equal(num(json_object_get(d, "total"), "delivered"), 0);
    assert_int_equal(num(json_object_get(d, "total"), "hard_bounces"), 1);
    json_decref(d);
    report_free(r);
}

/* test_time_parse - RFC 3339, dates, offsets and ages */
static void test_time_parse(void **state)
{
    (void)state;
    int64_t ms;
    const int64_t day = 86400000;
    assert_int_equal(report_time_parse("1970-01-02", 0, &ms), 0);
    assert_int_equal(ms, day);
    assert_int_equal(report_time_parse("2026-12-01T00:00:00Z", 0, &ms), 0);
    int64_t dec1 = ms;
    assert_int_equal(dec1 % day, 0);
    assert_int_equal(report_time_parse("2026-12-01", 0, &ms), 0);
    assert_int_equal(ms, dec1);
    assert_int_equal(report_time_parse("2026-12-01T01:00:00.5+01:00", 0, &ms), 0);
    assert_int_equal(ms, dec1 + 500);
    assert_int_equal(report_time_parse("2026-11-30T23:00:00-01:00", 0, &ms), 0);
    assert_int_equal(ms, dec1);
    assert_int_equal(report_time_parse("2026-12-03T07:01:02.123Z", 0, &ms), 0);
    assert_int_equal(ms, dec1 + 2 * day + 7 * 3600000 + 62123);
    assert_int_equal(report_time_parse("90m", 10000000, &ms), 0);
    assert_int_equal(ms, 10000000 - 90 * 60000);
    assert_int_equal(report_time_parse("24h", day, &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(report_time_parse("7d", 7 * day, &ms), 0);
    assert_int_equal(ms, 0);
    const char *bad[] = {"",
                         "yesterday",
                         "7",
                         "d",
                         "7x",
                         "2026-13-01",
                         "2026-12-01T25:00:00Z",
                         "2026-12-01T00:00:00",
                         "2026-12-01T00:00:00.Z",
                         "2026-12-1"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        if (report_time_parse(bad[i], 0, &ms) == 0) fail_msg("accepted \"%s\"", bad[i]);
}

/* test_since_until - since inclusive, until exclusive, records without ts dropped */
static void test_since_until(void **state)
{
    (void)state;
    const char *lines = "{\"ts\":\"2026-11-30T23:59:59.999Z\",\"type\":\"delivered\"}\n"
                        "{\"ts\":\"2026-12-01T00:00:00.000Z\",\"type\":\"delivered\"}\n"
                        "{\"ts\":\"2026-12-01T12:00:00Z\",\"type\":\"delivered\"}\n"
                        "{\"ts\":\"2026-12-02T00:00:00.000Z\",\"type\":\"delivered\"}\n"
                        "{\"type\":\"delivered\"}\n"
                        "{\"ts\":12345,\"type\":\"delivered\"}\n";
    struct report_opts o;
    memset(&o, 0, sizeof o);
    assert_int_equal(report_time_parse("2026-12-01", 0, &o.since_ms), 0);
    assert_int_equal(report_time_parse("2026-12-02", 0, &o.until_ms), 0);
    o.has_since = o.has_until = 1;
    struct report *r = report_new(&o);
    feed(r, lines);
    json_t *d = doc(r);
    assert_int_equal(num(json_object_get(d, "total"), "sent"), 2);
    json_decref(d);
    report_free(r);

    o.has_until = 0;
    r = report_new(&o);
    feed(r, lines);
    d = doc(r);
    assert_int_equal(num(json_object_get(d, "total"), "sent"), 3);
    json_decref(d);
    report_free(r);

    /* without a filter every record counts, with or without ts */
    r = report_new(NULL);
    feed(r, lines);
    d = doc(r);
    assert_int_equal(num(json_object_get(d, "total"), "sent"), 6);
    json_decref(d);
    report_free(r);
}

/* test_campaign_filter - one campaign; "" selects records without one */
static void test_campaign_filter(void **state)
{
    (void)state;
    struct report_opts o;
    memset(&o, 0, sizeof o);
    o.campaign = "c2";
    struct report *r = report_new(&o);
    feed(r, mixed);
    json_t *d = doc(r);
    json_t *t = json_object_get(d, "total");
    assert_int_equal(num(t, "sent"), 3);
    assert_int_equal(num(t, "delivered"), 1);
    assert_int_equal(num(t, "unsubscribes"), 1);
    assert_int_equal(num(t, "complaints"), 0);
    json_decref(d);
    report_free(r);

    o.campaign = "";
    r = report_new(&o);
    feed(r, "{\"type\":\"delivered\"}\n{\"type\":\"delivered\",\"campaign\":\"\"}\n"
            "{\"type\":\"delivered\",\"campaign\":\"c\"}\n");
    d = doc(r);
    assert_int_equal(num(json_object_get(d, "total"), "sent"), 2);
    json_decref(d);
    report_free(r);
}

/* test_malformed - bad lines are counted as skipped, blank lines not at all */
static void test_malformed(void **state)
{
    (void)state;
    struct report *r = report_new(NULL);
    feed(r, "not json\n"
            "[1,2]\n"
            "{\"ts\":\n"
            "\n"
            "   \r\n"
            "{\"type\":\"delivered\"} trailing\n"
            "{\"type\":\"delivered\"}\n");
    struct report_stats st;
    report_stats_get(r, &st);
    assert_int_equal(st.lines, 5);
    assert_int_equal(st.skipped, 4);
    json_t *d = doc(r);
    assert_int_equal(num(d, "skipped"), 4);
    assert_int_equal(num(d, "lines"), 5);
    assert_int_equal(num(json_object_get(d, "total"), "delivered"), 1);
    json_decref(d);
    report_free(r);
}

/*
 * Lines where the fast scanner must agree with jansson: it either reads them the
 * same way or declines them; either way the reports must be identical.
 */
static const char *const tricky[] = {
    /* escapes in wanted fields, decoded by the fast scanner */
    "{\"type\":\"delivered\",\"domain\":\"gm\\u0061il.com\",\"campaign\":\"a\\\"b\\\\c\\/d\"}",
    "{\"type\":\"bounced\",\"domain\":\"x.com\",\"diag\":\"550 caf\\u00e9 \\u20ac\\n\\tline2\","
    "\"hard\":true,\"category\":\"bad-mailbox\"}",
    /* raw UTF-8 */
    "{\"type\":\"delivered\",\"domain\":\"b\xc3\xbc\x63her.de\",\"campaign\":\"\xe2\x82\xac\"}",
    /* keys in another order, whitespace everywhere */
    " { \"campaign\" : \"c9\" , \"hard\" : false , \"type\" : \"bounced\" , \"recipient\" : "
    "\"u@Order.NET\" } ",
    /* nested values: declined by the scanner */
    "{\"type\":\"delivered\",\"domain\":\"nest.com\",\"extra\":{\"a\":[1,{\"b\":null}]}}",
    "{\"type\":\"delivered\",\"domain\":[\"arr.com\"],\"recipient\":\"x@arr2.com\"}",
    /* numbers as strings, booleans as strings */
    "{\"type\":\"bounced\",\"domain\":\"s.com\",\"code\":\"550\",\"hard\":\"true\"}",
    "{\"type\":\"bounced\",\"domain\":\"s.com\",\"code\":550.0}",
    "{\"type\":\"bounced\",\"domain\":\"s.com\",\"code\":-0,\"enh\":\"5.1.1\"}",
    /* duplicate keys: the last one wins */
    "{\"type\":\"deferred\",\"type\":\"delivered\",\"domain\":\"dup.com\"}",
    /* surrogate pair, escaped key: declined, jansson decodes */
    "{\"type\":\"bounced\",\"domain\":\"x.com\",\"diag\":\"smile \\ud83d\\ude00\",\"hard\":true}",
    "{\"ty\\u0070e\":\"delivered\",\"domain\":\"esckey.com\"}",
    /* exponent, big integer (jansson refuses), \u0000 (jansson refuses) */
    "{\"type\":\"delivered\",\"domain\":\"exp.com\",\"queue_s\":1e3}",
    "{\"type\":\"delivered\",\"domain\":\"big.com\",\"queue_s\":99999999999999999999}",
    "{\"type\":\"delivered\",\"domain\":\"nul\\u0000.com\"}",
    /* invalid: raw control character, bad UTF-8, lone surrogate, bad escape */
    "{\"type\":\"delivered\",\"domain\":\"ctl\x01.com\"}",
    "{\"type\":\"delivered\",\"domain\":\"bad\xc3(.com\"}",
    "{\"type\":\"delivered\",\"domain\":\"sur\\ud800.com\"}",
    "{\"type\":\"delivered\",\"domain\":\"esc\\x.com\"}",
    "{\"type\":\"delivered\",\"domain\":\"lead0.com\",\"code\":0250}",
    "{\"type\":\"delivered\",\"domain\":\"x.com\",}",
    "{\"type\":\"delivered\" \"domain\":\"x.com\"}",
    "{\"type\":truex}",
    "{}",
    /* a long escaped run and a long plain run around the 8-byte steps */
    "{\"type\":\"bounced\",\"hard\":true,\"category\":\"c\",\"diag\":\"\\\"\\\"\\\"\\\"\\\"\\\""
    "\\\"\\\"\\\"\\\"abcdefghijklmnopqrstuvwxyz0123456789\\\"\"}",
};

/* test_fast_vs_jansson - both parsers give the same report on tricky lines */
static void test_fast_vs_jansson(void **state)
{
    (void)state;
    for (int by = REPORT_BY_NONE; by <= REPORT_BY_SOURCE; by++) {
        struct report_opts o = opts_by((enum REPORT_BY)by);
        struct report *fast = report_new(&o);
        o.parser = REPORT_PARSER_JANSSON;
        struct report *slow = report_new(&o);
        for (size_t i = 0; i < ARRAY_LEN(tricky); i++) {
            int a = report_feed_line(fast, tricky[i], strlen(tricky[i]));
            int b = report_feed_line(slow, tricky[i], strlen(tricky[i]));
            if (a != b) fail_msg("line %zu: fast %d, jansson %d: %s", i, a, b, tricky[i]);
        }
        struct report_stats sf, ss;
        report_stats_get(fast, &sf);
        report_stats_get(slow, &ss);
        assert_true(sf.fast >= 5);     /* the scanner did read lines itself */
        assert_true(sf.fallback >= 5); /* ... and declined others */
        assert_int_equal(ss.fast, 0);
        assert_int_equal(sf.skipped, ss.skipped);
        assert_int_equal(sf.counted, ss.counted);
        for (int f = REPORT_FORMAT_TABLE; f <= REPORT_FORMAT_JSON; f++) {
            char *x = render(fast, (enum REPORT_FORMAT)f), *y = render(slow, (enum REPORT_FORMAT)f);
            assert_string_equal(x, y);
            free(x);
            free(y);
        }
        report_free(fast);
        report_free(slow);
    }

    /* and what they read is what was meant */
    struct report_opts o = opts_by(REPORT_BY_DOMAIN);
    struct report *r = report_new(&o);
    for (size_t i = 0; i < ARRAY_LEN(tricky); i++)
        report_feed_line(r, tricky[i], strlen(tricky[i]));
    json_t *d = doc(r);
    assert_int_equal(num(group(d, "gmail.com"), "delivered"), 1);
    assert_int_equal(num(group(d, "order.net"), "soft_bounces"), 1);
    assert_int_equal(num(group(d, "b\xc3\xbc\x63her.de"), "delivered"), 1);
    assert_int_equal(num(group(d, "dup.com"), "delivered"), 1);
    assert_int_equal(num(group(d, "esckey.com"), "delivered"), 1);
    assert_int_equal(num(group(d, "nest.com"), "delivered"), 1);
    assert_int_equal(num(group(d, "arr2.com"), "delivered"), 1);
    assert_int_equal(num(group(d, "exp.com"), "delivered"), 1);
    /* "hard":"true" is not a boolean and "550" not a number: soft, then 550.0 (a
     * real) soft, then enh 5.1.1 hard */
    assert_int_equal(num(group(d, "s.com"), "soft_bounces"), 2);
    assert_int_equal(num(group(d, "s.com"), "hard_bounces"), 1);
    assert_int_equal(num(d, "skipped"), 10);
    json_t *bm = json_object_get(json_object_get(d, "diagnostics"), "bad-mailbox");
    assert_string_equal(json_string_value(json_object_get(json_array_get(bm, 0), "diag")),
                        "550 caf\xc3\xa9 \xe2\x82\xac line2");
    json_decref(d);
    report_free(r);
}

/* norm - report_normalise_diag of s as a static string */
static const char *norm(const char *s)
{
    static char out[REPORT_DIAG_MAX + 1];
    size_t n = report_normalise_diag(s, strlen(s), out);
    assert_int_equal(n, strlen(out));
    return out;
}

/* test_normalise - addresses, ids and whitespace collapse; codes survive */
static void test_normalise(void **state)
{
    (void)state;
    assert_string_equal(norm("550 5.1.1 <john.doe123@example.com>: User unknown"),
                        "550 5.1.1 <addr>: User unknown");
    assert_string_equal(norm("550 5.1.1 jane+tag@mail.example.org... no such user"),
                        "550 5.1.1 <addr>... no such user");
    assert_string_equal(norm("421 4.7.0 [TSS04] try later  a640c23a62f3a-a9a6b5cc4b3 - gsmtp"),
                        "421 4.7.0 [TSS04] try later #-# - gsmtp");
    assert_string_equal(norm("  452\r\n 4.2.2   mailbox full  (queue 1234567)  "),
                        "452 4.2.2 mailbox full (queue #)");
    assert_string_equal(norm("deface facade 0xbeef 2026"), "deface facade 0xbeef #");
    assert_string_equal(norm("at @ alone and trailing@"), "at @ alone and trailing@");
    assert_string_equal(norm(""), "");
    /* per-recipient variants collapse to one text */
    char a[REPORT_DIAG_MAX + 1], b[REPORT_DIAG_MAX + 1];
    const char *x = "550 5.1.1 <user565808.48@gmail.com> unknown id 8F3A2B1C9D";
    const char *y = "550 5.1.1 <u@yahoo.com> unknown id 0011AA22BB33";
    report_normalise_diag(x, strlen(x), a);
    report_normalise_diag(y, strlen(y), b);
    assert_string_equal(a, b);
    /* cut to 200 bytes, never inside a UTF-8 character */
    char long_in[600];
    memset(long_in, 'a', sizeof long_in);
    memcpy(long_in + 199, "\xc3\xa9", 2);
    size_t n = report_normalise_diag(long_in, sizeof long_in, a);
    assert_int_equal(n, 199);
    n = report_normalise_diag(long_in + 1, sizeof long_in - 1, a);
    assert_int_equal(n, 200);
    assert_int_equal((unsigned char)a[199], 0xa9);
}

/* test_topk - bounded counter keeps the heavy hitters, top N in order */
static void test_topk(void **state)
{
    (void)state;
    struct report_opts o;
    memset(&o, 0, sizeof o);
    o.top = 3;
    o.topk_capacity = 16;
    struct report *r = report_new(&o);
    char line[256];
    /* 500 distinct one-off texts interleaved with three heavy ones (250, 166 and
     * 84 times): with 16 slots every text above 1000/16 is guaranteed a place */
    for (int i = 0; i < 500; i++) {
        snprintf(line, sizeof line,
                 "{\"type\":\"bounced\",\"hard\":true,\"category\":\"bad-mailbox\","
                 "\"diag\":\"one-off text %c%c%c\"}",
                 'a' + i % 26, 'a' + i / 26 % 26, 'a' + i / 676);
        report_feed_line(r, line, strlen(line));
        const char *heavy = i % 2 ? "550 user unknown <a@b.c>" : i % 6 ? "552 full" : "554 spam";
        snprintf(line, sizeof line,
                 "{\"type\":\"bounced\",\"hard\":true,\"category\":\"bad-mailbox\","
                 "\"diag\":\"%s\"}",
                 heavy);
        report_feed_line(r, line, strlen(line));
    }
    json_t *d = doc(r);
    json_t *bm = json_object_get(json_object_get(d, "diagnostics"), "bad-mailbox");
    assert_int_equal(json_array_size(bm), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(bm, 0), "diag")),
                        "550 user unknown <addr>");
    assert_string_equal(json_string_value(json_object_get(json_array_get(bm, 1), "diag")),
                        "552 full");
    assert_string_equal(json_string_value(json_object_get(json_array_get(bm, 2), "diag")),
                        "554 spam");
    /* Space-Saving: a count may overestimate by its error, never underestimate */
    long long c0 = num(json_array_get(bm, 0), "count");
    json_t *err0 = json_object_get(json_array_get(bm, 0), "error");
    long long e0 = err0 ? (long long)json_integer_value(err0) : 0;
    assert_true(c0 >= 250 && c0 - e0 <= 250);
    json_decref(d);
    report_free(r);

    /* exact counts while nothing was evicted; missing diag counts as "(none)" */
    r = report_new(NULL);
    feed(r, "{\"type\":\"expired\",\"diag\":\"timeout 12345\"}\n"
            "{\"type\":\"expired\",\"diag\":\"timeout 99999\"}\n"
            "{\"type\":\"expired\"}\n");
    d = doc(r);
    json_t *me = json_object_get(json_object_get(d, "diagnostics"), "message-expired");
    assert_string_equal(json_string_value(json_object_get(json_array_get(me, 0), "diag")),
                        "timeout #");
    assert_int_equal(num(json_array_get(me, 0), "count"), 2);
    assert_null(json_object_get(json_array_get(me, 0), "error"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(me, 1), "diag")),
                        "(none)");
    json_decref(d);
    report_free(r);
}

/* test_category_cap - diagnostics keep at most 64 categories, the rest "(other)" */
static void test_category_cap(void **state)
{
    (void)state;
    struct report *r = report_new(NULL);
    char line[160];
    for (int i = 0; i < 100; i++) {
        snprintf(line, sizeof line,
                 "{\"type\":\"bounced\",\"hard\":true,\"category\":\"cat%d\",\"diag\":\"d\"}", i);
        for (int k = 0; k < 2; k++)
            report_feed_line(r, line, strlen(line));
    }
    json_t *d = doc(r);
    json_t *diags = json_object_get(d, "diagnostics");
    assert_int_equal(json_object_size(diags), 64);
    json_t *other = json_object_get(diags, "(other)");
    assert_non_null(other);
    assert_int_equal(num(json_array_get(other, 0), "count"), 2 * (100 - 63));
    assert_int_equal(num(json_object_get(d, "total"), "hard_bounces"), 200);
    json_decref(d);
    report_free(r);
}

/* feed_n - n copies of one record for campaign camp */
static void feed_n(struct report *r, int n, const char *type, const char *camp, const char *extra)
{
    char line[256];
    snprintf(line, sizeof line, "{\"type\":\"%s\",\"campaign\":\"%s\",\"domain\":\"d.com\"%s}",
             type, camp, extra);
    for (int i = 0; i < n; i++)
        report_feed_line(r, line, strlen(line));
}

/* warning - the warning of scope/key/metric in d, or NULL */
static json_t *warning(json_t *d, const char *scope, const char *key, const char *metric)
{
    json_t *w;
    size_t i;
    json_array_foreach(json_object_get(d, "warnings"), i, w)
    {
        json_t *k = json_object_get(w, "key");
        if (strcmp(json_string_value(json_object_get(w, "scope")), scope) == 0 &&
            strcmp(json_string_value(json_object_get(w, "metric")), metric) == 0 &&
            (!key || (k && strcmp(json_string_value(k), key) == 0)))
            return w;
    }
    return NULL;
}

/* test_warnings - thresholds at their exact boundaries and the minimum volume */
static void test_warnings(void **state)
{
    (void)state;
    struct report *r = report_new(NULL);
    feed_n(r, 1000, "delivered", "c01", ""); /* 1/1000 = 0.1%: warning */
    feed_n(r, 1, "complaint", "c01", "");
    feed_n(r, 1001, "delivered", "c02", ""); /* 1/1001 < 0.1%: nothing */
    feed_n(r, 1, "complaint", "c02", "");
    feed_n(r, 1000, "delivered", "c03", ""); /* 3/1000 = 0.3%: critical */
    feed_n(r, 3, "complaint", "c03", "");
    feed_n(r, 1000, "delivered", "c04", ""); /* 2/1000: warning, not critical */
    feed_n(r, 2, "complaint", "c04", "");
    feed_n(r, 98, "delivered", "b01", ""); /* 2/100 = 2%: warning */
    feed_n(r, 2, "bounced", "b01", ",\"hard\":true");
    feed_n(r, 99, "delivered", "b02", ""); /* 1/100: nothing */
    feed_n(r, 1, "expired", "b02", "");
    feed_n(r, 49, "delivered", "b03", ""); /* 50% but only 50 sent: below min volume */
    feed_n(r, 1, "bounced", "b03", ",\"hard\":false");
    json_t *d = doc(r);
    json_t *w = warning(d, "campaign", "c01", "complaint_rate");
    assert_non_null(w);
    assert_string_equal(json_string_value(json_object_get(w, "level")), "warning");
    assert_float_equal(rate(w, "threshold"), 0.001, 1e-12);
    assert_null(warning(d, "campaign", "c02", "complaint_rate"));
    w = warning(d, "campaign", "c03", "complaint_rate");
    assert_non_null(w);
    assert_string_equal(json_string_value(json_object_get(w, "level")), "critical");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(d, "warnings"), 0), "level")),
                        "critical");
    w = warning(d, "campaign", "c04", "complaint_rate");
    assert_string_equal(json_string_value(json_object_get(w, "level")), "warning");
    w = warning(d, "campaign", "b01", "bounce_rate");
    assert_non_null(w);
    assert_float_equal(rate(w, "value"), 0.02, 1e-12);
    assert_int_equal(num(w, "sent"), 100);
    assert_null(warning(d, "campaign", "b02", "bounce_rate"));
    assert_null(warning(d, "campaign", "b03", "bounce_rate"));
    /* the domain carries everything: 7/4247 complaints > 0.1% */
    assert_non_null(warning(d, "domain", "d.com", "complaint_rate"));
    assert_non_null(warning(d, "total", NULL, "complaint_rate"));
    assert_null(warning(d, "total", NULL, "bounce_rate"));
    json_decref(d);

    char *s = render(r, REPORT_FORMAT_TABLE);
    assert_non_null(strstr(s, "CRITICAL  campaign c03: complaint rate 0.30% >= 0.30% (sent 1000)"));
    assert_non_null(strstr(s, "WARNING   campaign b01: bounce rate 2.00% >= 2.00% (sent 100)"));
    free(s);
    s = render(r, REPORT_FORMAT_CSV);
    assert_non_null(
        strstr(s, "warning,campaign,c03,1000,,,,,,,,,,,,,,,,critical,complaint_rate,0.003000,"
                  "0.003000\r\n"));
    free(s);
    report_free(r);

    /* --min-volume 50 brings b03 in; 0 means every group */
    struct report_opts o;
    memset(&o, 0, sizeof o);
    o.min_volume = 50;
    r = report_new(&o);
    feed_n(r, 49, "delivered", "b03", "");
    feed_n(r, 1, "bounced", "b03", ",\"hard\":false");
    d = doc(r);
    assert_non_null(warning(d, "campaign", "b03", "bounce_rate"));
    json_decref(d);
    report_free(r);
}

/* test_group_cap - keys beyond the cap add up in "(other)", with a note */
static void test_group_cap(void **state)
{
    (void)state;
    struct report_opts o = opts_by(REPORT_BY_DOMAIN);
    o.max_groups = 2;
    struct report *r = report_new(&o);
    feed(r, "{\"type\":\"delivered\",\"domain\":\"a.com\"}\n"
            "{\"type\":\"delivered\",\"domain\":\"b.com\"}\n"
            "{\"type\":\"delivered\",\"domain\":\"c.com\"}\n"
            "{\"type\":\"delivered\",\"domain\":\"d.com\"}\n"
            "{\"type\":\"delivered\",\"domain\":\"a.com\"}\n");
    json_t *d = doc(r);
    assert_int_equal(json_array_size(json_object_get(d, "groups")), 3);
    assert_int_equal(num(group(d, "a.com"), "sent"), 2);
    assert_int_equal(num(group(d, "(other)"), "sent"), 2);
    json_t *last = json_array_get(json_object_get(d, "groups"), 2);
    assert_string_equal(json_string_value(json_object_get(last, "key")), "(other)");
    json_t *notes = json_object_get(d, "notes");
    assert_true(json_array_size(notes) >= 1);
    assert_non_null(strstr(json_string_value(json_array_get(notes, 0)), "distinct domains"));
    assert_int_equal(num(json_object_get(d, "total"), "sent"), 5);
    json_decref(d);
    char *s = render(r, REPORT_FORMAT_TABLE);
    assert_non_null(strstr(s, "note: more than 2 distinct domains"));
    free(s);
    report_free(r);
}

/* csv_check - parse s as RFC 4180 records ended by CRLF, check each has want
 * fields, put "kind|group" of the first maxg records in groups; returns the
 * number of records */
static size_t csv_check(const char *s, size_t want, char groups[][64], size_t maxg)
{
    size_t records = 0;
    const char *p = s;
    while (*p) {
        size_t fields = 0;
        char field[512];
        char first[64] = "", third[64] = "";
        for (;;) {
            size_t n = 0;
            if (*p == '"') {
                p++;
                for (;;) {
                    if (*p == '"' && p[1] == '"') {
                        field[n++] = '"';
                        p += 2;
                    } else if (*p == '"') {
                        p++;
                        break;
                    } else {
                        assert_true(*p != '\0');
                        field[n++] = *p++;
                    }
                }
            } else {
                while (*p && *p != ',' && *p != '\r') {
                    assert_true(*p != '"' && *p != '\n');
                    field[n++] = *p++;
                }
            }
            field[n] = '\0';
            if (fields == 0) snprintf(first, sizeof first, "%.40s", field);
            if (fields == 2) snprintf(third, sizeof third, "%.40s", field);
            fields++;
            if (*p == ',') {
                p++;
                continue;
            }
            assert_true(p[0] == '\r' && p[1] == '\n');
            p += 2;
            break;
        }
        if (fields != want) fail_msg("record %zu has %zu fields", records, fields);
        if (records < maxg) {
            snprintf(groups[records], 64, "%.30s|%.30s", first, third);
        }
        records++;
    }
    return records;
}

/* test_csv - RFC 4180 quoting and a fixed field count */
static void test_csv(void **state)
{
    (void)state;
    struct report_opts o = opts_by(REPORT_BY_CAMPAIGN);
    o.max_groups = 2;
    o.min_volume_set = 1; /* min volume 0: every campaign is checked */
    struct report *r = report_new(&o);
    feed(r, "{\"type\":\"delivered\",\"campaign\":\"spring, \\\"big\\\" sale\"}\n"
            "{\"type\":\"bounced\",\"campaign\":\"plain\",\"hard\":true,\"category\":\"x,y\","
            "\"diag\":\"550 \\\"quoted\\\", comma\\r\\nnext\"}\n"
            "{\"type\":\"delivered\",\"campaign\":\"third\"}\n");
    char *s = render(r, REPORT_FORMAT_CSV);
    char groups[16][64];
    size_t n = csv_check(s, 23, groups, 16);
    assert_true(n >= 6);
    assert_string_equal(groups[0], "kind|group");
    assert_non_null(strstr(s, "\r\ngroup,campaign,\"spring, \"\"big\"\" sale\",1,1,1.000000,"));
    assert_non_null(strstr(s, "\r\ndiagnostic,category,\"x,y\","));
    assert_non_null(strstr(s, ",\"550 \"\"quoted\"\", comma next\",1,"));
    assert_non_null(strstr(s, "\r\ntotal,total,,3,2,"));
    assert_non_null(strstr(s, "\r\nwarning,campaign,plain,1,"));
    assert_non_null(strstr(s, "\r\nnote,"));
    free(s);
    report_free(r);
}

/* test_json_doc - the document's shape */
static void test_json_doc(void **state)
{
    (void)state;
    struct report_opts o = opts_by(REPORT_BY_DOMAIN);
    struct report *r = report_new(&o);
    feed(r, mixed);
    feed(r, "garbage\n");
    json_t *d = doc(r);
    assert_string_equal(json_string_value(json_object_get(d, "by")), "domain");
    assert_true(json_is_object(json_object_get(d, "total")));
    assert_true(json_is_array(json_object_get(d, "groups")));
    assert_true(json_is_object(json_object_get(d, "diagnostics")));
    assert_true(json_is_array(json_object_get(d, "warnings")));
    assert_int_equal(num(d, "lines"), 13);
    assert_int_equal(num(d, "skipped"), 1);
    json_t *bm = json_object_get(json_object_get(d, "diagnostics"), "bad-mailbox");
    assert_string_equal(json_string_value(json_object_get(json_array_get(bm, 0), "diag")),
                        "550 5.1.1 <addr> unknown");
    assert_int_equal(num(json_array_get(bm, 0), "count"), 1);
    json_decref(d);
    report_free(r);
}

/* temp_file - a temporary file holding n bytes of s; returns its path (static) */
static const char *temp_file(const char *s, size_t n)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_report.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, s, n), (ssize_t)n);
    close(fd);
    return path;
}

/* test_feed_fd - a final line without newline, CRLF, a line over the cap */
static void test_feed_fd(void **state)
{
    (void)state;
    size_t big = REPORT_LINE_MAX + 100;
    char *buf = xmalloc(big + 200);
    size_t n = 0;
    n += (size_t)snprintf(buf + n, 200, "{\"type\":\"delivered\"}\r\n{\"diag\":\"");
    memset(buf + n, 'x', big);
    n += big;
    n += (size_t)snprintf(buf + n, 200, "\"}\n{\"type\":\"delivered\"}");
    const char *path = temp_file(buf, n);
    free(buf);

    struct report *r = report_new(NULL);
    int fd = open(path, O_RDONLY);
    assert_int_equal(report_feed_fd(r, fd), 0);
    close(fd);
    struct report_stats st;
    report_stats_get(r, &st);
    assert_int_equal(st.lines, 3);
    assert_int_equal(st.too_long, 1);
    assert_int_equal(st.skipped, 1);
    json_t *d = doc(r);
    assert_int_equal(num(json_object_get(d, "total"), "delivered"), 2);
    json_decref(d);
    report_free(r);
    unlink(path);
}

/* cli - run report_cli with args; returns the exit status, out/err text in *o, *e */
static int cli(char **o, char **e, const char *default_log, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, default_log);
    argv[argc++] = (char *)"report";
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    size_t on = 0, en = 0;
    FILE *out = open_memstream(o, &on), *err = open_memstream(e, &en);
    int rc = report_cli(argc, argv, default_log, out, err);
    fclose(out);
    fclose(err);
    return rc;
}

/* test_cli - exit statuses, the skipped-lines summary, formats, usage errors */
static void test_cli(void **state)
{
    (void)state;
    char *o, *e;
    const char text[] = "{\"ts\":\"2020-01-01T07:01:02.123Z\",\"type\":\"delivered\","
                        "\"campaign\":\"c\",\"domain\":\"x.com\"}\nnope\n{broken\n";
    char path[64];
    snprintf(path, sizeof path, "%s", temp_file(text, sizeof text - 1));

    assert_int_equal(cli(&o, &e, path, "--format", "json", NULL), 0);
    assert_non_null(strstr(e, "2 lines skipped (not JSON)"));
    json_t *d = json_loads(o, 0, NULL);
    assert_non_null(d);
    assert_int_equal(num(json_object_get(d, "total"), "delivered"), 1);
    json_decref(d);
    free(o);
    free(e);

    assert_int_equal(cli(&o, &e, NULL, "--log", path, "--log=" VOLLEY_SOURCE_DIR "/README.md",
                         "--by=campaign", "--format=csv", "--since", "2020-01-01", "--until",
                         "2020-01-02T00:00:00Z", "--top", "3", "--min-volume", "0", NULL),
                     0);
    assert_non_null(strstr(o, "group,campaign,c,1,1,"));
    free(o);
    free(e);

    assert_int_equal(cli(&o, &e, path, "--since", "1d", NULL), 0); /* the record is older */
    assert_non_null(strstr(o, "Deliverability report: 0 records"));
    free(o);
    free(e);

    assert_int_equal(cli(&o, &e, "/nonexistent/accounting.log", NULL), 1);
    assert_non_null(strstr(e, "/nonexistent/accounting.log"));
    free(o);
    free(e);

    const char *bad[][2] = {{"--by", "site"},       {"--format", "xml"}, {"--top", "0"},
                            {"--top", "x"},         {"--since", "soon"}, {"--min-volume", "-1"},
                            {"--frobnicate", NULL}, {"extra", NULL}};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        assert_int_equal(cli(&o, &e, path, bad[i][0], bad[i][1], NULL), 2);
        assert_non_null(strstr(e, "volleyctl: report: "));
        assert_non_null(strstr(e, "usage:"));
        free(o);
        free(e);
    }
    assert_int_equal(cli(&o, &e, path, "--by", "domain", "--by", "campaign", NULL), 2);
    assert_non_null(strstr(e, "--by given twice"));
    free(o);
    free(e);
    assert_int_equal(cli(&o, &e, path, "--top", NULL), 2);
    free(o);
    free(e);
    assert_int_equal(cli(&o, &e, NULL, NULL), 2);
    free(o);
    free(e);
    assert_int_equal(cli(&o, &e, path, "--help", NULL), 0);
    assert_non_null(strstr(o, "usage:"));
    free(o);
    free(e);

    /* a gzip-compressed rotated file is refused with advice */
    char gz[] = "\x1f\x8b\x08\x00rest";
    char gzpath[64];
    snprintf(gzpath, sizeof gzpath, "%s", temp_file(gz, sizeof gz - 1));
    assert_int_equal(cli(&o, &e, gzpath, NULL), 1);
    assert_non_null(strstr(e, "compressed"));
    free(o);
    free(e);
    unlink(gzpath);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_totals),
        cmocka_unit_test(test_by_domain),
        cmocka_unit_test(test_by_campaign_source),
        cmocka_unit_test(test_by_category),
        cmocka_unit_test(test_async_bounce),
        cmocka_unit_test(test_time_parse),
        cmocka_unit_test(test_since_until),
        cmocka_unit_test(test_campaign_filter),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_fast_vs_jansson),
        cmocka_unit_test(test_normalise),
        cmocka_unit_test(test_topk),
        cmocka_unit_test(test_category_cap),
        cmocka_unit_test(test_warnings),
        cmocka_unit_test(test_group_cap),
        cmocka_unit_test(test_csv),
        cmocka_unit_test(test_json_doc),
        cmocka_unit_test(test_feed_fd),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
