/*
 * test_shape - unit tests for the traffic-shaping policy (src/shape.c): loading
 * a rules file (built-in defaults, a complete valid file, and every kind of bad
 * file refused with "file:line: key: reason"), limit matching (domain > site >
 * MX pattern > defaults, with omitted keys falling through and a rate bringing
 * its own burst), pool selection, warm-up caps, response rules, token buckets,
 * and the adaptive state of a (source, site) pair (suspension, backoff, the 1/8
 * recovery, the concurrency window, warm-up counting per UTC day).
 *
 * shape has no clock: every call takes now_ms, so all times here are made up,
 * counted from T0 = 2026-01-01T00:00:00Z.  Expected values are derived from the
 * documented formulas (shape.h, shape_parse_rate, shape_scaled_burst), not
 * observed output: a misspelt limit or a wrong recovery factor is how a sender
 * gets blocklisted, so the numbers are asserted exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "shape.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DAY_MS 86400000LL
#define T0     1767225600000LL  /* 2026-01-01T00:00:00Z in ms */
#define N0     (T0 + 3600000LL) /* 01:00 on T0's day: the state tests' start */

/* the last temp file's path, for checking error messages */
static char rules_path[64];

/* assert_dbl - doubles equal within 1e-9 (cmocka's float assert goes via float) */
#define assert_dbl(a, b) assert_dbl_at((a), (b), #a, __LINE__)
static void assert_dbl_at(double a, double b, const char *what, int line)
{
    double d = a - b;
    if (d < 0) d = -d;
    if (d > 1e-9) fail_msg("line %d: %s is %.12g, expected %.12g", line, what, a, b);
}

/* load_text - write text to a temp file, load it, unlink it */
static struct shape_rules *load_text(const char *text, char *err, size_t errlen)
{
    snprintf(rules_path, sizeof rules_path, "/tmp/volley-test-shape-XXXXXX");
    int fd = mkstemp(rules_path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    struct shape_rules *r = shape_rules_load(rules_path, err, errlen);
    unlink(rules_path);
    return r;
}

/* load_ok - text must load */
static struct shape_rules *load_ok(const char *text)
{
    char err[512] = "";
    struct shape_rules *r = load_text(text, err, sizeof err);
    if (r == NULL) fail_msg("refused a good rules file: %s", err);
    return r;
}

/* expect_error - text must be refused with "path:line: " and fragment in err */
static void expect_error(const char *text, int line, const char *fragment)
{
    char err[512] = "", want[96];
    struct shape_rules *r = load_text(text, err, sizeof err);
    if (r) {
        shape_rules_free(r);
        fail_msg("accepted a bad rules file: %s", text);
    }
    snprintf(want, sizeof want, "%s:%d: ", rules_path, line);
    if (!strstr(err, want) || !strstr(err, fragment))
        fail_msg("error \"%s\" lacks \"%s\" or \"%s\"", err, want, fragment);
}

/* ---- the complete rules file most tests share ---------------------------------------- */

static const char full_rules[] =
    "# a complete rules file; pools come before sources on purpose\n"
    "recovery_step = \"2m\";\n"
    "defaults = {\n"
    "    max_connections = 30;\n"
    "    max_connections_site = 60;\n"
    "    message_rate = \"600/m\";\n"
    "    message_burst = 25;\n"
    "    retry_schedule = \"5m, 10m,1h\";\n"
    "    max_age = \"2d\";\n"
    "};\n"
    "rules = (\n"
    "    { name = \"mxrule\"; match = [ \"mx:*.MAIL.example.net\" ];\n"
    "      max_connections = 7; max_messages_per_connection = 11;\n"
    "      message_rate = \"3000/m\"; connection_rate = \"60/m\"; },\n"
    "    { name = \"mxrule2\"; match = [ \"mx:*.example.net\" ]; max_connections = 8; },\n"
    "    { name = \"siterule\"; match = [ \"site:SiteA\" ];\n"
    "      max_connections = 5; max_recipients_per_transaction = 9;\n"
    "      message_rate_site = \"120/m\"; connection_rate_site = \"30/s\"; },\n"
    "    { name = \"domrule\"; match = [ \"domain:Example.com\", \"domain:*.sub.example.org\" ];\n"
    "      max_connections = 3; message_rate = \"10/s\"; },\n"
    "    { name = \"burstrule\"; match = [ \"domain:burst.test\" ];\n"
    "      message_rate = \"100/s\"; message_burst = 7;\n"
    "      connection_rate = \"1000/m\"; connection_burst = 4; retry_schedule = \"30s\"; }\n"
    ");\n"
    "pools = (\n"
    "    { name = \"marketing\"; sources = [ \"s1\", \"s2:3\" ]; },\n"
    "    { name = \"default\"; sources = [ \"s1\" ]; },\n"
    "    { name = \"bulk\"; sources = [ \"s3:2\" ]; }\n"
    ");\n"
    "sources = (\n"
    "    { name = \"s1\"; address = \"192.0.2.10\"; ehlo = \"mta1.example.com\"; },\n"
    "    { name = \"s2\"; address = \"2001:db8::2\";\n"
    "      warmup_start = \"2026-01-01\"; warmup_daily = [ 10, 20, 40 ]; },\n"
    "    { name = \"s3\"; }\n"
    ");\n"
    "select = (\n"
    "    { campaign = \"promo-*\"; pool = \"marketing\"; },\n"
    "    { campaign = \"*\"; sender_domain = \"shop.example.com\"; pool = \"bulk\"; },\n"
    "    { sender_domain = \"*.news.example.com\"; pool = \"bulk\"; }\n"
    ");\n"
    "responses = (\n"
    "    { name = \"r-none\"; code = 450; text = \"^greylist\"; action = \"none\"; },\n"
    "    { name = \"r-susp\"; code = 421; enh = \"4.7\";\n"
    "      action = \"suspend\"; duration = \"30m\"; },\n"
    "    { name = \"r-back\"; code = 421; text = \"try (again )?later\"; action = \"backoff\";\n"
    "      duration = 600; message_rate = \"10/s\"; max_connections = 5; },\n"
    "    { name = \"r-any\"; text = \"rate.?limit\"; action = \"backoff\"; duration = \"1h\";\n"
    "      max_connections = 1; },\n"
    "    { name = \"r-bounce\"; code = 554; enh = \"5\"; action = \"bounce\"; }\n"
    ");\n";

static int setup_full(void **state)
{
    *state = load_ok(full_rules);
    return 0;
}

static int teardown_rules(void **state)
{
    shape_rules_free(*state);
    return 0;
}

/* ---- loading ------------------------------------------------------------------------- */

/* check_builtin - the rule set path NULL or "" gives */
static void check_builtin(struct shape_rules *r)
{
    assert_non_null(r);
    assert_int_equal(shape_nsources(r), 1);
    const struct shape_source *s = shape_source(r, 0);
    assert_non_null(s);
    assert_string_equal(s->name, "default");
    assert_string_equal(s->address, "");
    assert_string_equal(s->ehlo, "");
    assert_int_equal(s->warmup_start_ms, 0);
    assert_int_equal(s->nwarmup, 0);
    assert_null(shape_source(r, 1));
    assert_null(shape_source(r, -1));

    const struct shape_pool *p = shape_pool_find(r, "default");
    assert_non_null(p);
    assert_int_equal(p->nmembers, 1);
    assert_int_equal(p->members[0].source, 0);
    assert_int_equal(p->members[0].weight, 1);
    assert_ptr_equal(shape_pool_for(r, NULL, NULL, NULL), p);
    assert_ptr_equal(shape_pool_for(r, "nope", "c", "x.com"), p);

    struct shape_limits lim;
    shape_match(r, "example.com", "site1", NULL, 0, &lim);
    assert_string_equal(lim.rule, "default");
    assert_int_equal(lim.max_connections, 20);
    assert_int_equal(lim.max_connections_site, 0);
    assert_int_equal(lim.max_messages_per_connection, 100);
    assert_int_equal(lim.max_recipients_per_transaction, 100);
    assert_dbl(lim.message_rate, 0);
    assert_dbl(lim.message_burst, 0);
    assert_dbl(lim.connection_rate, 0);
    assert_dbl(lim.connection_burst, 0);
    assert_int_equal(lim.nretry, 0);
    assert_int_equal(lim.max_age, 0);
    assert_int_equal(lim.recovery_step_ms, 300000);

    struct shape_response resp;
    assert_false(shape_response_match(r, 421, "4.7.0", "try again later", &resp));
}

static void test_builtin_defaults(void **state)
{
    (void)state;
    char err[128] = "";
    struct shape_rules *r = shape_rules_load(NULL, err, sizeof err);
    check_builtin(r);
    shape_rules_free(r);
    r = shape_rules_load("", err, sizeof err);
    check_builtin(r);
    shape_rules_free(r);
    /* an empty file is valid and means the same */
    r = load_ok("# nothing\n");
    check_builtin(r);
    shape_rules_free(r);
}

static void test_missing_file(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(shape_rules_load("/nonexistent/shaping.conf", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/shaping.conf: cannot read"));
}

static void test_full_file_sources_pools(void **state)
{
    struct shape_rules *r = *state;

    assert_int_equal(shape_nsources(r), 3);
    assert_int_equal(shape_source_find(r, "s1"), 0);
    assert_int_equal(shape_source_find(r, "s2"), 1);
    assert_int_equal(shape_source_find(r, "s3"), 2);
    assert_int_equal(shape_source_find(r, "default"), -1);

    const struct shape_source *s1 = shape_source(r, 0), *s2 = shape_source(r, 1),
                              *s3 = shape_source(r, 2);
    assert_string_equal(s1->address, "192.0.2.10");
    assert_string_equal(s1->ehlo, "mta1.example.com");
    assert_int_equal(s1->warmup_start_ms, 0);
    assert_int_equal(s1->nwarmup, 0);
    assert_string_equal(s2->address, "2001:db8::2");
    assert_string_equal(s2->ehlo, "");
    assert_int_equal(s2->warmup_start_ms, T0);
    assert_int_equal(s2->nwarmup, 3);
    assert_int_equal(s2->warmup_daily[0], 10);
    assert_int_equal(s2->warmup_daily[1], 20);
    assert_int_equal(s2->warmup_daily[2], 40);
    assert_string_equal(s3->address, "");

    const struct shape_pool *m = shape_pool_find(r, "marketing");
    assert_non_null(m);
    assert_string_equal(m->name, "marketing");
    assert_int_equal(m->nmembers, 2);
    assert_int_equal(m->members[0].source, 0);
    assert_int_equal(m->members[0].weight, 1);
    assert_int_equal(m->members[1].source, 1);
    assert_int_equal(m->members[1].weight, 3);
    const struct shape_pool *d = shape_pool_find(r, "default");
    assert_non_null(d);
    assert_int_equal(d->nmembers, 1);
    assert_int_equal(d->members[0].source, 0);
    const struct shape_pool *b = shape_pool_find(r, "bulk");
    assert_non_null(b);
    assert_int_equal(b->members[0].source, 2);
    assert_int_equal(b->members[0].weight, 2);
    assert_null(shape_pool_find(r, "nope"));
    assert_null(shape_pool_find(r, NULL));
}

/* sources without a pools list: the built-in "default" pool holds every source */
static void test_sources_without_pools(void **state)
{
    (void)state;
    struct shape_rules *r = load_ok("sources = ( { name = \"a\"; }, { name = \"b\"; } );\n");
    const struct shape_pool *d = shape_pool_find(r, "default");
    assert_non_null(d);
    assert_int_equal(d->nmembers, 2);
    assert_int_equal(d->members[0].source, 0);
    assert_int_equal(d->members[1].source, 1);
    assert_int_equal(d->members[1].weight, 1);
    assert_ptr_equal(shape_pool_for(r, NULL, NULL, NULL), d);
    shape_rules_free(r);
}

/* ---- errors: "file:line: key: reason" ------------------------------------------------ */

static void test_error_unknown_keys(void **state)
{
    (void)state;
    expect_error("recovery_step = \"1m\";\nbogus = 1;\n", 2, "bogus: unknown key");
    expect_error("rules = (\n"
                 "  {\n"
                 "    name = \"a\";\n"
                 "    match = [ \"domain:a.com\" ];\n"
                 "    max_conections = 5;\n"
                 "  }\n"
                 ");\n",
                 5, "rules[0].max_conections: unknown key");
    expect_error("defaults = {\n  max_connections = 5;\n  colour = 1;\n};\n", 3,
                 "defaults.colour: unknown key");
}

static void test_error_bad_rate(void **state)
{
    (void)state;
    expect_error("defaults = {\n  message_rate = \"10/x\";\n};\n", 2,
                 "defaults.message_rate: bad rate \"10/x\"");
    expect_error("defaults = {\n  message_rate = \"abc\";\n};\n", 2,
                 "defaults.message_rate: bad rate \"abc\"");
    expect_error("defaults = {\n  message_rate = \"0/s\";\n};\n", 2,
                 "defaults.message_rate: bad rate \"0/s\"");
    expect_error("rules = (\n"
                 "  { name = \"a\"; match = [ \"domain:a.com\" ];\n"
                 "    connection_rate = \"5/mm\"; }\n"
                 ");\n",
                 3, "rules[0].connection_rate: bad rate \"5/mm\"");
}

static void test_error_bad_duration(void **state)
{
    (void)state;
    expect_error("\nrecovery_step = \"5x\";\n", 2, "recovery_step: bad duration \"5x\"");
    expect_error("defaults = {\n  max_age = \"3w\";\n};\n", 2,
                 "defaults.max_age: bad duration \"3w\"");
    expect_error("responses = (\n"
                 "  { name = \"r\"; action = \"suspend\";\n"
                 "    duration = \"0s\"; }\n"
                 ");\n",
                 3, "responses[0].duration: bad duration \"0s\"");
}

static void test_error_dangling_references(void **state)
{
    (void)state;
    expect_error("sources = (\n"
                 "  { name = \"s1\"; }, { name = \"s2\"; }\n"
                 ");\n"
                 "pools = (\n"
                 "  { name = \"default\";\n"
                 "    sources = [ \"s1\",\n"
                 "                \"nope:2\" ]; }\n"
                 ");\n",
                 7, "pools[0].sources[1]: unknown source \"nope\"");
    expect_error("select = (\n"
                 "  { campaign = \"x\";\n"
                 "    pool = \"nope\"; }\n"
                 ");\n",
                 3, "select[0].pool: unknown pool \"nope\"");
    /* pools given without one named "default" (the source "default" is built in) */
    expect_error("pools = (\n  { name = \"p\"; sources = [ \"default\" ]; }\n);\n", 1,
                 "pools: no pool named \"default\"");
}

static void test_error_responses(void **state)
{
    (void)state;
    expect_error("responses = (\n"
                 "  { name = \"r\"; action = \"bounce\";\n"
                 "    text = \"(unclosed\"; }\n"
                 ");\n",
                 3, "responses[0].text: bad regular expression \"(unclosed\"");
    expect_error("responses = (\n"
                 "  {\n"
                 "    name = \"r\";\n"
                 "    action = \"backoff\";\n"
                 "    duration = \"1m\";\n"
                 "  }\n"
                 ");\n",
                 2, "responses[0]: backoff needs message_rate or max_connections");
    expect_error("responses = (\n"
                 "  {\n"
                 "    name = \"r\";\n"
                 "    action = \"suspend\";\n"
                 "  }\n"
                 ");\n",
                 2, "responses[0].duration: missing (suspend needs one)");
}

static void test_error_rule_names(void **state)
{
    (void)state;
    expect_error("rules = (\n"
                 "  { name = \"a\"; match = [ \"domain:a.com\" ]; },\n"
                 "  { name = \"a\"; match = [ \"domain:b.com\" ]; }\n"
                 ");\n",
                 3, "rules[1]: duplicate rule name \"a\"");
    expect_error("rules = (\n"
                 "  { match = [ \"domain:a.com\" ];\n"
                 "    name = \"default\"; }\n"
                 ");\n",
                 3, "rules[0].name: \"default\" is reserved");
}

/* the other validations: values out of range, malformed entries, misplaced keys */
static void test_error_values(void **state)
{
    (void)state;
    expect_error("defaults = {\n  max_connections = 0;\n};\n", 2,
                 "defaults.max_connections: 0 is not in 1..10000");
    expect_error("rules = (\n  { name = \"a\";\n    match = [ \"host:a.com\" ]; }\n);\n", 3,
                 "rules[0].match[0]: \"host:a.com\": expected domain:NAME, site:NAME or mx:GLOB");
    expect_error("rules = (\n  { name = \"a\";\n    match = [ \"domain:a*.com\" ]; }\n);\n", 3,
                 "rules[0].match[0]: \"domain:a*.com\": a domain is exact");
    expect_error("rules = (\n  { name = \"a\";\n    match = [ ]; }\n);\n", 3,
                 "rules[0].match: must be a non-empty list");
    expect_error("sources = (\n  { name = \"a\";\n    address = \"192.0.2.300\"; }\n);\n", 3,
                 "sources[0].address: \"192.0.2.300\" is not an IPv4 or IPv6 address");
    expect_error("sources = (\n  { name = \"a\"; warmup_daily = [ 1 ];\n"
                 "    warmup_start = \"2026-02-29\"; }\n);\n",
                 3, "sources[0].warmup_start: must be a date \"YYYY-MM-DD\"");
    expect_error("sources = (\n  { name = \"a\";\n    warmup_daily = [ 1, 2 ]; }\n);\n", 3,
                 "sources[0].warmup_daily: warmup_start and warmup_daily go together");
    expect_error("sources = (\n  { name = \"a\"; }, { name = \"b\"; }\n);\n"
                 "pools = (\n  { name = \"default\";\n    sources = [ \"a:0\", \"b\" ]; }\n);\n",
                 6, "pools[0].sources[0]: \"a:0\": the weight must be 1..10000");
    expect_error("select = (\n  { pool = \"default\"; }\n);\n", 2,
                 "select[0]: needs campaign or sender_domain");
    expect_error("responses = (\n  { name = \"r\";\n    action = \"explode\"; }\n);\n", 3,
                 "responses[0].action: must be none, suspend, backoff or bounce");
    expect_error("responses = (\n  { name = \"r\"; action = \"bounce\";\n    code = 250; }\n);\n",
                 3, "responses[0].code: 250: must be 0 (any) or a 4xx/5xx code");
    expect_error(
        "responses = (\n  { name = \"r\"; action = \"bounce\";\n    enh = \"4.x\"; }\n);\n", 3,
        "responses[0].enh: \"4.x\": expected a status prefix");
    expect_error(
        "responses = (\n  { name = \"r\"; action = \"bounce\";\n    duration = \"1m\"; }\n);\n", 3,
        "responses[0].duration: only suspend and backoff take a duration");
    expect_error("responses = (\n  { name = \"r\"; action = \"suspend\"; duration = 60;\n"
                 "    max_connections = 2; }\n);\n",
                 3, "responses[0].max_connections: only backoff takes message_rate");
}

static void test_error_syntax(void **state)
{
    (void)state;
    expect_error("defaults = {\n  max_connections = 5;\n  message_rate = ;\n};\n", 3,
                 "syntax error");
}

/* ---- shape_match ----------------------------------------------------------------------- */

static void test_match_defaults_layer(void **state)
{
    struct shape_rules *r = *state;
    struct shape_limits lim;

    shape_match(r, "nowhere.test", "other", NULL, 0, &lim);
    assert_string_equal(lim.rule, "default");
    assert_int_equal(lim.max_connections, 30);
    assert_int_equal(lim.max_connections_site, 60);
    assert_int_equal(lim.max_messages_per_connection, 100);
    assert_int_equal(lim.max_recipients_per_transaction, 100);
    assert_dbl(lim.message_rate, 10);  /* 600/m */
    assert_dbl(lim.message_burst, 25); /* the explicit burst beats 600/m's own 10 */
    assert_dbl(lim.connection_rate, 0);
    assert_int_equal(lim.nretry, 3);
    assert_int_equal(lim.retry[0], 300);
    assert_int_equal(lim.retry[1], 600);
    assert_int_equal(lim.retry[2], 3600);
    assert_int_equal(lim.max_age, 172800);
    assert_int_equal(lim.recovery_step_ms, 120000);
}

/* all three classes match: each key comes from the most specific rule that sets it */
static void test_match_specificity_and_fallthrough(void **state)
{
    struct shape_rules *r = *state;
    struct shape_limits lim;
    const char *mx[] = {"A.Mail.Example.NET."};

    shape_match(r, "example.com", "SiteA", mx, 1, &lim);
    assert_string_equal(lim.rule, "domrule");
    assert_int_equal(lim.max_connections, 3);                /* domain */
    assert_int_equal(lim.max_recipients_per_transaction, 9); /* site */
    assert_int_equal(lim.max_messages_per_connection, 11);   /* mx */
    assert_int_equal(lim.max_connections_site, 60);          /* defaults */
    assert_dbl(lim.message_rate, 10);                        /* domain: 10/s */
    assert_dbl(lim.message_burst, 1);   /* 10/s brings burst min(10, 10/10) = 1, not 25 or 50 */
    assert_dbl(lim.connection_rate, 1); /* mx: 60/m */
    assert_dbl(lim.connection_burst, 1);
    assert_int_equal(lim.nretry, 3);
    assert_dbl(lim.message_rate_site, 2);     /* site: 120/m over all sources */
    assert_dbl(lim.message_burst_site, 2);    /* one second's worth */
    assert_dbl(lim.connection_rate_site, 30); /* site: 30/s */
    assert_dbl(lim.connection_burst_site, 3); /* a tenth of 30 */

    /* site and mx only: the site rule names it, the mx rule's rate stays */
    shape_match(r, "other.com", "SiteA", mx, 1, &lim);
    assert_string_equal(lim.rule, "siterule");
    assert_int_equal(lim.max_connections, 5);
    assert_int_equal(lim.max_messages_per_connection, 11);
    assert_int_equal(lim.max_recipients_per_transaction, 9);
    assert_dbl(lim.message_rate, 50); /* 3000/m: burst min(50, 300) = 50 */
    assert_dbl(lim.message_burst, 50);

    /* site only (names are exact and case-sensitive) */
    shape_match(r, "other.com", "SiteA", NULL, 0, &lim);
    assert_string_equal(lim.rule, "siterule");
    assert_int_equal(lim.max_messages_per_connection, 100);
    assert_dbl(lim.message_rate, 10);
    assert_dbl(lim.message_burst, 25);
    shape_match(r, "other.com", "sitea", NULL, 0, &lim);
    assert_string_equal(lim.rule, "default");
}

static void test_match_mx(void **state)
{
    struct shape_rules *r = *state;
    struct shape_limits lim;

    /* any of several MX hosts may match; NULL entries are skipped */
    const char *mx[] = {"mx1.other.net", NULL, "b.MAIL.example.NET"};
    shape_match(r, "x.com", NULL, mx, 3, &lim);
    assert_string_equal(lim.rule, "mxrule");
    assert_int_equal(lim.max_connections, 7);
    assert_dbl(lim.message_rate, 50);
    /* nmx bounds the list */
    shape_match(r, "x.com", NULL, mx, 2, &lim);
    assert_string_equal(lim.rule, "default");

    /* both mx rules match a.mail.example.net: the first in file order wins */
    const char *both[] = {"a.mail.example.net"};
    shape_match(r, "x.com", NULL, both, 1, &lim);
    assert_string_equal(lim.rule, "mxrule");
    const char *second[] = {"z.example.net"};
    shape_match(r, "x.com", NULL, second, 1, &lim);
    assert_string_equal(lim.rule, "mxrule2");
    assert_int_equal(lim.max_connections, 8);
    assert_int_equal(lim.max_messages_per_connection, 100);
    assert_dbl(lim.message_rate, 10);
    assert_dbl(lim.message_burst, 25);
    const char *none[] = {"mail.example.org"};
    shape_match(r, "x.com", NULL, none, 1, &lim);
    assert_string_equal(lim.rule, "default");
}

static void test_match_domain(void **state)
{
    struct shape_rules *r = *state;
    struct shape_limits lim;

    shape_match(r, "EXAMPLE.com", NULL, NULL, 0, &lim);
    assert_string_equal(lim.rule, "domrule");
    shape_match(r, "sub.example.com", NULL, NULL, 0, &lim);
    assert_string_equal(lim.rule, "default"); /* exact: no subdomains */
    shape_match(r, "x.sub.example.org", NULL, NULL, 0, &lim);
    assert_string_equal(lim.rule, "domrule");
    shape_match(r, "a.b.Sub.Example.org", NULL, NULL, 0, &lim);
    assert_string_equal(lim.rule, "domrule");
    shape_match(r, "sub.example.org", NULL, NULL, 0, &lim);
    assert_string_equal(lim.rule, "default"); /* "*." needs a label in front */
    shape_match(r, "xsub.example.org", NULL, NULL, 0, &lim);
    assert_string_equal(lim.rule, "default");
}

static void test_match_explicit_bursts(void **state)
{
    struct shape_rules *r = *state;
    struct shape_limits lim;

    shape_match(r, "burst.test", NULL, NULL, 0, &lim);
    assert_string_equal(lim.rule, "burstrule");
    assert_dbl(lim.message_rate, 100);
    assert_dbl(lim.message_burst, 7);
    assert_dbl(lim.connection_rate, 1000.0 / 60.0);
    assert_dbl(lim.connection_burst, 4);
    assert_int_equal(lim.nretry, 1);
    assert_int_equal(lim.retry[0], 30);
    assert_int_equal(lim.max_connections, 30);
    assert_dbl(lim.message_rate_site, 0); /* no site-wide rate unless a rule sets one */
    assert_dbl(lim.connection_rate_site, 0);
}

/* default bursts of shape_parse_rate: min(rate * 1 s, N / 10), at least 1 */
static void test_match_rate_default_bursts(void **state)
{
    (void)state;
    static const struct {
        const char *rate;
        double per_sec, burst;
    } cases[] = {
        {"3000/m", 50, 50},   {"10/s", 10, 1},
        {"600/m", 10, 10},    {"1000/m", 1000.0 / 60.0, 1000.0 / 60.0},
        {"60/m", 1, 1},       {"100/h", 100.0 / 3600.0, 1},
        {"864000/d", 10, 10}, {"5/s", 5, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[128];
        struct shape_limits lim;
        snprintf(text, sizeof text, "defaults = { message_rate = \"%s\"; };\n", cases[i].rate);
        struct shape_rules *r = load_ok(text);
        shape_match(r, "a.com", NULL, NULL, 0, &lim);
        assert_dbl(lim.message_rate, cases[i].per_sec);
        assert_dbl(lim.message_burst, cases[i].burst);
        shape_rules_free(r);
    }
}

/* ---- shape_pool_for ----------------------------------------------------------------------- */

static void test_pool_for(void **state)
{
    struct shape_rules *r = *state;
    const struct shape_pool *def = shape_pool_find(r, "default"),
                            *mkt = shape_pool_find(r, "marketing"),
                            *bulk = shape_pool_find(r, "bulk");

    /* a known header wins over select */
    assert_ptr_equal(shape_pool_for(r, "bulk", "promo-1", NULL), bulk);
    assert_ptr_equal(shape_pool_for(r, "default", "promo-1", NULL), def);
    /* an unknown or empty header falls to select */
    assert_ptr_equal(shape_pool_for(r, "nope", "promo-1", NULL), mkt);
    assert_ptr_equal(shape_pool_for(r, "", "promo-7", NULL), mkt);
    /* campaign globs are case-sensitive */
    assert_ptr_equal(shape_pool_for(r, NULL, "Promo-7", NULL), def);
    /* sender domain globs are not */
    assert_ptr_equal(shape_pool_for(r, NULL, NULL, "A.NEWS.Example.com"), bulk);
    assert_ptr_equal(shape_pool_for(r, NULL, NULL, "news.example.com"), def);
    /* an entry with a campaign never matches a message without one */
    assert_ptr_equal(shape_pool_for(r, NULL, NULL, "shop.example.com"), def);
    assert_ptr_equal(shape_pool_for(r, NULL, "", "shop.example.com"), def);
    assert_ptr_equal(shape_pool_for(r, NULL, "c1", "Shop.Example.com"), bulk);
    /* first match in file order */
    assert_ptr_equal(shape_pool_for(r, NULL, "promo-x", "shop.example.com"), mkt);
    assert_ptr_equal(shape_pool_for(r, NULL, NULL, NULL), def);
}

/* ---- shape_warmup_cap ------------------------------------------------------------------- */

static void test_warmup_cap(void **state)
{
    struct shape_rules *r = *state;
    const struct shape_source *s2 = shape_source(r, 1);

    assert_int_equal(shape_warmup_cap(s2, T0 - 1), 10); /* before start: day 0 */
    assert_int_equal(shape_warmup_cap(s2, T0 - 5 * DAY_MS), 10);
    assert_int_equal(shape_warmup_cap(s2, T0), 10);
    assert_int_equal(shape_warmup_cap(s2, T0 + DAY_MS - 1), 10);
    assert_int_equal(shape_warmup_cap(s2, T0 + DAY_MS), 20);
    assert_int_equal(shape_warmup_cap(s2, T0 + 2 * DAY_MS + DAY_MS / 2), 40);
    assert_int_equal(shape_warmup_cap(s2, T0 + 3 * DAY_MS - 1), 40);
    assert_int_equal(shape_warmup_cap(s2, T0 + 3 * DAY_MS), -1); /* schedule over */
    assert_int_equal(shape_warmup_cap(s2, T0 + 400 * DAY_MS), -1);
    assert_int_equal(shape_warmup_cap(shape_source(r, 0), T0), -1); /* no warm-up */
    assert_int_equal(shape_warmup_cap(NULL, T0), -1);
}

/* ---- shape_response_match --------------------------------------------------------------- */

static void test_response_match(void **state)
{
    struct shape_rules *r = *state;
    struct shape_response out;

    assert_true(shape_response_match(r, 421, "4.7.28", "unusual rate", &out));
    assert_string_equal(out.rule, "r-susp");
    assert_int_equal(out.action, SHAPE_ACT_SUSPEND);
    assert_int_equal(out.duration_ms, 1800000);
    assert_dbl(out.rate, 0);
    assert_int_equal(out.max_connections, 0);

    /* both r-susp and r-back match: the first in file order wins */
    assert_true(shape_response_match(r, 421, "4.7.0", "Try Again Later", &out));
    assert_string_equal(out.rule, "r-susp");
    /* "4.7" matches "4.7" itself but not "4.70.1" */
    assert_true(shape_response_match(r, 421, "4.7", "", &out));
    assert_string_equal(out.rule, "r-susp");
    assert_true(shape_response_match(r, 421, "4.70.1", "try again later", &out));
    assert_string_equal(out.rule, "r-back");
    assert_int_equal(out.action, SHAPE_ACT_BACKOFF);
    assert_int_equal(out.duration_ms, 600000);
    assert_dbl(out.rate, 10);
    assert_int_equal(out.max_connections, 5);
    /* no enhanced code: r-susp needs one; the regex is case-insensitive */
    assert_true(shape_response_match(r, 421, NULL, "PLEASE TRY LATER", &out));
    assert_string_equal(out.rule, "r-back");

    /* code 0 in a rule matches any code, including 0 for connection failures */
    assert_true(shape_response_match(r, 0, NULL, "connection rate limit exceeded", &out));
    assert_string_equal(out.rule, "r-any");
    assert_int_equal(out.duration_ms, 3600000);
    assert_int_equal(out.max_connections, 1);
    assert_true(shape_response_match(r, 452, "4.5.3", "Rate Limit hit", &out));
    assert_string_equal(out.rule, "r-any");

    assert_true(shape_response_match(r, 450, "", "Greylisted, retry", &out));
    assert_string_equal(out.rule, "r-none");
    assert_int_equal(out.action, SHAPE_ACT_NONE);
    assert_false(shape_response_match(r, 450, "", "you are greylisted", &out)); /* ^ anchors */

    assert_true(shape_response_match(r, 554, "5.7.1", "x", &out));
    assert_string_equal(out.rule, "r-bounce");
    assert_int_equal(out.action, SHAPE_ACT_BOUNCE);
    assert_false(shape_response_match(r, 554, "", "x", &out)); /* "5" needs an enh */

    /* no match: false and out zeroed */
    memset(&out, 0xab, sizeof out);
    assert_false(shape_response_match(r, 550, "5.1.1", "user unknown", &out));
    assert_string_equal(out.rule, "");
    assert_int_equal(out.action, SHAPE_ACT_NONE);
    assert_int_equal(out.duration_ms, 0);
    assert_dbl(out.rate, 0);
    assert_int_equal(out.max_connections, 0);
    /* a NULL text is "" to the regex */
    assert_false(shape_response_match(r, 421, NULL, NULL, &out));
    /* out may be NULL */
    assert_true(shape_response_match(r, 421, "4.7.28", "", NULL));
}

static void test_enum_strings(void **state)
{
    (void)state;
    assert_string_equal(shape_action_str(SHAPE_ACT_NONE), "none");
    assert_string_equal(shape_action_str(SHAPE_ACT_SUSPEND), "suspend");
    assert_string_equal(shape_action_str(SHAPE_ACT_BACKOFF), "backoff");
    assert_string_equal(shape_action_str(SHAPE_ACT_BOUNCE), "bounce");
    assert_string_equal(shape_mode_str(SHAPE_NORMAL), "normal");
    assert_string_equal(shape_mode_str(SHAPE_BACKOFF), "backoff");
    assert_string_equal(shape_mode_str(SHAPE_SUSPENDED), "suspended");
    assert_string_equal(shape_mode_str(SHAPE_RECOVERING), "recovering");
}

/* ---- token bucket ------------------------------------------------------------------------ */

static void test_bucket_take_and_wait(void **state)
{
    (void)state;
    struct shape_bucket b;

    shape_bucket_init(&b, 10, 3, 1000);
    assert_dbl(b.tokens, 3);
    assert_int_equal(shape_bucket_wait_ms(&b, 1000), 0);
    for (int i = 0; i < 3; i++)
        assert_true(shape_bucket_take(&b, 1000));
    assert_false(shape_bucket_take(&b, 1000));
    assert_int_equal(shape_bucket_wait_ms(&b, 1000), 100); /* 1 token at 10/s */
    assert_int_equal(shape_bucket_wait_ms(&b, 1050), 50);
    assert_false(shape_bucket_take(&b, 1099));
    assert_int_equal(shape_bucket_wait_ms(&b, 1099), 1);
    assert_true(shape_bucket_take(&b, 1100));
    assert_false(shape_bucket_take(&b, 1100));
    assert_int_equal(shape_bucket_wait_ms(&b, 1100), 100);

    /* refill is capped at the burst */
    for (int i = 0; i < 3; i++)
        assert_true(shape_bucket_take(&b, 1000000));
    assert_false(shape_bucket_take(&b, 1000000));

    /* a fractional rate rounds the wait up: 1000/m is one token per 60 ms */
    shape_bucket_init(&b, 1000.0 / 60.0, 1, 0);
    assert_true(shape_bucket_take(&b, 0));
    assert_int_equal(shape_bucket_wait_ms(&b, 0), 60);
    assert_false(shape_bucket_take(&b, 59));
    assert_true(shape_bucket_take(&b, 60));

    /* a limited bucket holds at least one token */
    shape_bucket_init(&b, 2, 0.5, 0);
    assert_dbl(b.burst, 1);
    assert_true(shape_bucket_take(&b, 0));
    assert_int_equal(shape_bucket_wait_ms(&b, 0), 500);
}

static void test_bucket_unlimited(void **state)
{
    (void)state;
    struct shape_bucket b;

    shape_bucket_init(&b, 0, 0, 5000);
    for (int i = 0; i < 1000; i++)
        assert_true(shape_bucket_take(&b, 5000));
    assert_int_equal(shape_bucket_wait_ms(&b, 5000), 0);
    shape_bucket_init(&b, -3, 0, 5000); /* negative counts as unlimited */
    assert_dbl(b.rate, 0);
    assert_true(shape_bucket_take(&b, 0));
}

static void test_bucket_set(void **state)
{
    (void)state;
    struct shape_bucket b;

    shape_bucket_init(&b, 10, 5, 0);
    assert_true(shape_bucket_take(&b, 0));
    assert_dbl(b.tokens, 4);
    shape_bucket_set(&b, 10, 2, 0); /* tokens capped at the new burst */
    assert_dbl(b.burst, 2);
    assert_dbl(b.tokens, 2);
    assert_true(shape_bucket_take(&b, 0));
    assert_true(shape_bucket_take(&b, 0));
    assert_false(shape_bucket_take(&b, 0));
    shape_bucket_set(&b, 20, 8, 0); /* a bigger burst does not add tokens */
    assert_dbl(b.tokens, 0);
    assert_false(shape_bucket_take(&b, 0));
    assert_int_equal(shape_bucket_wait_ms(&b, 0), 50);
    /* set refills at the old rate first: 100 ms at 20/s is 2 tokens */
    shape_bucket_set(&b, 1, 8, 100);
    assert_dbl(b.tokens, 2);
    assert_int_equal(b.last_ms, 100);

    /* a limit that appears on an unlimited bucket starts full */
    shape_bucket_init(&b, 0, 0, 0);
    shape_bucket_set(&b, 5, 3, 10);
    assert_dbl(b.rate, 5);
    assert_dbl(b.tokens, 3);
}

static void test_bucket_time_backwards(void **state)
{
    (void)state;
    struct shape_bucket b;

    shape_bucket_init(&b, 10, 1, 10000);
    assert_true(shape_bucket_take(&b, 10000));
    assert_false(shape_bucket_take(&b, 5000)); /* earlier time adds nothing */
    assert_dbl(b.tokens, 0);
    assert_int_equal(b.last_ms, 10000);
    assert_int_equal(shape_bucket_wait_ms(&b, 5000), 100);
    assert_false(shape_bucket_take(&b, 10099));
    assert_true(shape_bucket_take(&b, 10100));
}

/* ---- the adaptive state of one (source, site) pair -------------------------------------- */

/* std_limits - 16 connections, 80 msg/s (burst 80), 8 conn/s (burst 4), 1 min steps */
static struct shape_limits std_limits(void)
{
    struct shape_limits lim;
    memset(&lim, 0, sizeof lim);
    snprintf(lim.rule, sizeof lim.rule, "%s", "test");
    lim.max_connections = 16;
    lim.max_messages_per_connection = 100;
    lim.max_recipients_per_transaction = 100;
    lim.message_rate = 80;
    lim.message_burst = 80;
    lim.connection_rate = 8;
    lim.connection_burst = 4;
    lim.recovery_step_ms = 60000;
    return lim;
}

static struct shape_response mkresp(const char *name, enum SHAPE_ACTION a, int64_t dur_ms,
                                    double rate, int conn)
{
    struct shape_response r;
    memset(&r, 0, sizeof r);
    snprintf(r.rule, sizeof r.rule, "%s", name);
    r.action = a;
    r.duration_ms = dur_ms;
    r.rate = rate;
    r.max_connections = conn;
    return r;
}

static void test_state_init(void **state)
{
    (void)state;
    struct shape_limits lim = std_limits();
    struct shape_state st;

    shape_state_init(&st, &lim, N0);
    assert_int_equal(st.mode, SHAPE_NORMAL);
    assert_dbl(st.window, 16);
    assert_dbl(st.recover_factor, 1);
    assert_int_equal(st.fail_streak, 0);
    assert_dbl(st.msg_bucket.rate, 80);
    assert_dbl(st.msg_bucket.tokens, 80);
    assert_dbl(st.conn_bucket.rate, 8);
    assert_dbl(st.conn_bucket.tokens, 4);
    assert_int_equal(shape_state_max_conn(&st, &lim, N0), 16);
    assert_dbl(shape_state_rate(&st, &lim), 80);

    lim.max_connections = 0; /* the window is at least 1 */
    shape_state_init(&st, &lim, N0);
    assert_dbl(st.window, 1);
}

/* SUSPEND, then 1/8 recovery doubling each step back to NORMAL */
static void test_state_suspend_and_recover(void **state)
{
    (void)state;
    struct shape_limits lim = std_limits();
    struct shape_state st;
    struct shape_response susp = mkresp("r-susp", SHAPE_ACT_SUSPEND, 1800000, 0, 0);
    int64_t w = -1, until = N0 + 1800000;

    shape_state_init(&st, &lim, N0);
    assert_int_equal(shape_state_apply(&st, &lim, &susp, N0), SHAPE_EV_SUSPEND);
    assert_int_equal(st.mode, SHAPE_SUSPENDED);
    assert_int_equal(st.until_ms, until);
    assert_string_equal(st.why_rule, "r-susp");
    assert_int_equal(shape_state_max_conn(&st, &lim, N0), 0);
    assert_dbl(shape_state_rate(&st, &lim), 80); /* shown rate is the normal one */
    assert_false(shape_state_may_send(&st, N0 + 1000, &w));
    assert_int_equal(w, 1799000);
    w = -1;
    assert_false(shape_state_may_connect(&st, N0 + 1000, &w));
    assert_int_equal(w, 1799000);

    assert_int_equal(shape_state_tick(&st, &lim, until - 1), SHAPE_EV_NONE);
    assert_int_equal(st.mode, SHAPE_SUSPENDED);

    assert_int_equal(shape_state_tick(&st, &lim, until), SHAPE_EV_RESUME);
    assert_int_equal(st.mode, SHAPE_RECOVERING);
    assert_dbl(st.recover_factor, 0.125);
    assert_int_equal(st.next_step_ms, until + 60000);
    assert_int_equal(st.until_ms, 0);
    assert_int_equal(shape_state_max_conn(&st, &lim, until), 2); /* 16 / 8 */
    assert_dbl(shape_state_rate(&st, &lim), 10);                 /* 80 / 8 */
    assert_dbl(st.msg_bucket.rate, 10);
    assert_dbl(st.msg_bucket.burst, 10); /* one second's worth, capped tokens */
    assert_dbl(st.msg_bucket.tokens, 10);
    assert_dbl(st.conn_bucket.rate, 1);
    assert_dbl(st.conn_bucket.burst, 1);
    assert_dbl(st.conn_bucket.tokens, 1);

    assert_int_equal(shape_state_tick(&st, &lim, until + 59999), SHAPE_EV_NONE);
    assert_dbl(st.recover_factor, 0.125);
    assert_int_equal(shape_state_tick(&st, &lim, until + 60000), SHAPE_EV_NONE);
    assert_dbl(st.recover_factor, 0.25);
    assert_int_equal(shape_state_max_conn(&st, &lim, until + 60000), 4);
    assert_dbl(shape_state_rate(&st, &lim), 20);
    assert_dbl(st.msg_bucket.rate, 20);
    shape_state_tick(&st, &lim, until + 120000);
    assert_dbl(st.recover_factor, 0.5);
    assert_int_equal(shape_state_max_conn(&st, &lim, until + 120000), 8);
    assert_dbl(shape_state_rate(&st, &lim), 40);
    assert_int_equal(st.mode, SHAPE_RECOVERING);
    assert_int_equal(shape_state_tick(&st, &lim, until + 180000), SHAPE_EV_NONE);
    assert_int_equal(st.mode, SHAPE_NORMAL);
    assert_dbl(st.recover_factor, 1);
    assert_string_equal(st.why_rule, "");
    assert_int_equal(shape_state_max_conn(&st, &lim, until + 180000), 16);
    assert_dbl(shape_state_rate(&st, &lim), 80);
    assert_dbl(st.msg_bucket.rate, 80);
    assert_dbl(st.msg_bucket.burst, 80);
}

/* a late tick catches up on every step that passed */
static void test_state_recovery_catch_up(void **state)
{
    (void)state;
    struct shape_limits lim = std_limits();
    struct shape_state st;
    struct shape_response susp = mkresp("s", SHAPE_ACT_SUSPEND, 60000, 0, 0);
    int64_t until = N0 + 60000;

    shape_state_init(&st, &lim, N0);
    shape_state_apply(&st, &lim, &susp, N0);
    assert_int_equal(shape_state_tick(&st, &lim, until), SHAPE_EV_RESUME);
    assert_int_equal(shape_state_tick(&st, &lim, until + 130000), SHAPE_EV_NONE);
    assert_dbl(st.recover_factor, 0.5);
    assert_int_equal(st.next_step_ms, until + 180000);
    shape_state_tick(&st, &lim, until + 600000);
    assert_int_equal(st.mode, SHAPE_NORMAL);

    /* the first tick after the end is where recovery starts: steps count from it,
     * not from until_ms (the receiver has seen nothing from the pair meanwhile) */
    shape_state_apply(&st, &lim, &susp, N0 + 700000);
    until = N0 + 760000;
    assert_int_equal(shape_state_tick(&st, &lim, until + 200000), SHAPE_EV_RESUME);
    assert_dbl(st.recover_factor, 0.125);
    assert_int_equal(st.next_step_ms, until + 260000);
    shape_state_tick(&st, &lim, until + 260000);
    assert_dbl(st.recover_factor, 0.25);

    /* no recovery step: straight back to NORMAL */
    lim.recovery_step_ms = 0;
    shape_state_apply(&st, &lim, &susp, N0 + 1000000);
    assert_int_equal(st.mode, SHAPE_SUSPENDED);
    assert_int_equal(shape_state_tick(&st, &lim, N0 + 1060000), SHAPE_EV_RESUME);
    assert_int_equal(st.mode, SHAPE_NORMAL);
    assert_int_equal(shape_state_max_conn(&st, &lim, N0 + 1060000), 16);
}

static void test_state_backoff(void **state)
{
    (void)state;
    struct shape_limits lim = std_limits();
    struct shape_state st;
    struct shape_response b1 = mkresp("b1", SHAPE_ACT_BACKOFF, 600000, 10, 5),
                          b2 = mkresp("b2", SHAPE_ACT_BACKOFF, 300000, 20, 2),
                          b3 = mkresp("b3", SHAPE_ACT_BACKOFF, 1200000, 5, 0);
    int64_t w = -1;

    shape_state_init(&st, &lim, N0);
    assert_int_equal(shape_state_apply(&st, &lim, &b1, N0), SHAPE_EV_BACKOFF);
    assert_int_equal(st.mode, SHAPE_BACKOFF);
    assert_int_equal(st.until_ms, N0 + 600000);
    assert_string_equal(st.why_rule, "b1");
    assert_dbl(st.backoff_rate, 10);
    assert_int_equal(st.backoff_conn, 5);
    assert_int_equal(shape_state_max_conn(&st, &lim, N0), 5);
    assert_dbl(shape_state_rate(&st, &lim), 10);
    assert_dbl(st.msg_bucket.rate, 10);
    assert_dbl(st.msg_bucket.burst, 10);
    assert_dbl(st.msg_bucket.tokens, 10);
    assert_dbl(st.conn_bucket.rate, 8); /* backoff leaves the connection rate */
    assert_dbl(st.conn_bucket.burst, 4);
    for (int i = 0; i < 10; i++)
        assert_true(shape_state_may_send(&st, N0, &w));
    assert_false(shape_state_may_send(&st, N0, &w));
    assert_int_equal(w, 100);

    /* stricter connection limit wins; the looser rate and earlier end do not */
    assert_int_equal(shape_state_apply(&st, &lim, &b2, N0 + 1000), SHAPE_EV_BACKOFF);
    assert_int_equal(st.until_ms, N0 + 600000);
    assert_dbl(st.backoff_rate, 10);
    assert_int_equal(st.backoff_conn, 2);
    assert_string_equal(st.why_rule, "b2");
    assert_int_equal(shape_state_max_conn(&st, &lim, N0 + 1000), 2);
    /* nothing stricter or later: no event */
    assert_int_equal(shape_state_apply(&st, &lim, &b2, N0 + 1000), SHAPE_EV_NONE);
    /* lower rate and later end win; a rule without a connection limit keeps it */
    assert_int_equal(shape_state_apply(&st, &lim, &b3, N0 + 2000), SHAPE_EV_BACKOFF);
    assert_int_equal(st.until_ms, N0 + 1202000);
    assert_dbl(st.backoff_rate, 5);
    assert_int_equal(st.backoff_conn, 2);
    assert_dbl(shape_state_rate(&st, &lim), 5);
    assert_dbl(st.msg_bucket.rate, 5);
    assert_dbl(st.msg_bucket.burst, 5);

    /* the end starts recovery at 1/8 of the normal limits */
    assert_int_equal(shape_state_tick(&st, &lim, N0 + 1201999), SHAPE_EV_NONE);
    assert_int_equal(st.mode, SHAPE_BACKOFF);
    assert_int_equal(shape_state_tick(&st, &lim, N0 + 1202000), SHAPE_EV_RESUME);
    assert_int_equal(st.mode, SHAPE_RECOVERING);
    assert_dbl(st.backoff_rate, 0);
    assert_int_equal(st.backoff_conn, 0);
    assert_int_equal(shape_state_max_conn(&st, &lim, N0 + 1202000), 2);
    assert_dbl(shape_state_rate(&st, &lim), 10);

    /* a backoff over RECOVERING starts afresh */
    assert_int_equal(shape_state_apply(&st, &lim, &b1, N0 + 1300000), SHAPE_EV_BACKOFF);
    assert_int_equal(st.mode, SHAPE_BACKOFF);
    assert_dbl(st.recover_factor, 1);
    assert_int_equal(shape_state_max_conn(&st, &lim, N0 + 1300000), 5);
    assert_dbl(shape_state_rate(&st, &lim), 10);
}

/* a backoff never raises a limit above the normal one */
static void test_state_backoff_never_raises(void **state)
{
    (void)state;
    struct shape_limits lim = std_limits();
    struct shape_state st;
    struct shape_response b = mkresp("b", SHAPE_ACT_BACKOFF, 600000, 10, 40);

    lim.message_rate = 5;
    lim.message_burst = 5;
    shape_state_init(&st, &lim, N0);
    shape_state_apply(&st, &lim, &b, N0);
    assert_dbl(shape_state_rate(&st, &lim), 5);
    assert_int_equal(shape_state_max_conn(&st, &lim, N0), 16);

    /* over an unlimited rate the backoff rate applies, with a full burst */
    lim.message_rate = 0;
    lim.message_burst = 0;
    shape_state_init(&st, &lim, N0);
    shape_state_apply(&st, &lim, &b, N0);
    assert_dbl(shape_state_rate(&st, &lim), 10);
    assert_dbl(st.msg_bucket.rate, 10);
    assert_dbl(st.msg_bucket.tokens, 10);

    /* a connection-only backoff leaves the rate */
    struct shape_response c = mkresp("c", SHAPE_ACT_BACKOFF, 600000, 0, 3);
    lim = std_limits();
    shape_state_init(&st, &lim, N0);
    assert_int_equal(shape_state_apply(&st, &lim, &c, N0), SHAPE_EV_BACKOFF);
    assert_dbl(shape_state_rate(&st, &lim), 80);
    assert_int_equal(shape_state_max_conn(&st, &lim, N0), 3);
}

/* SUSPEND and BACKOFF over each other: the later end wins, suspension stays */
static void test_state_apply_combinations(void **state)
{
    (void)state;
    struct shape_limits lim = std_limits();
    struct shape_state st;
    struct shape_response b1 = mkresp("b1", SHAPE_ACT_BACKOFF, 600000, 10, 5),
                          s1 = mkresp("s1", SHAPE_ACT_SUSPEND, 60000, 0, 0),
                          s2 = mkresp("s2", SHAPE_ACT_SUSPEND, 300000, 0, 0),
                          s3 = mkresp("s3", SHAPE_ACT_SUSPEND, 1200000, 0, 0),
                          b4 = mkresp("b4", SHAPE_ACT_BACKOFF, 300000, 1, 1),
                          b5 = mkresp("b5", SHAPE_ACT_BACKOFF, 3600000, 1, 1),
                          bounce = mkresp("x", SHAPE_ACT_BOUNCE, 0, 0, 0),
                          none = mkresp("y", SHAPE_ACT_NONE, 0, 0, 0);

    shape_state_init(&st, &lim, N0);
    shape_state_apply(&st, &lim, &b1, N0);
    /* a shorter suspension over a backoff suspends until the backoff's end */
    assert_int_equal(shape_state_apply(&st, &lim, &s1, N0), SHAPE_EV_SUSPEND);
    assert_int_equal(st.mode, SHAPE_SUSPENDED);
    assert_int_equal(st.until_ms, N0 + 600000);
    assert_string_equal(st.why_rule, "s1");
    assert_dbl(st.backoff_rate, 0);
    assert_int_equal(st.backoff_conn, 0);
    /* a suspension ending earlier changes nothing; a later one moves the end */
    assert_int_equal(shape_state_apply(&st, &lim, &s2, N0 + 1000), SHAPE_EV_NONE);
    assert_int_equal(st.until_ms, N0 + 600000);
    assert_string_equal(st.why_rule, "s1");
    assert_int_equal(shape_state_apply(&st, &lim, &s3, N0 + 1000), SHAPE_EV_SUSPEND);
    assert_int_equal(st.until_ms, N0 + 1201000);
    assert_string_equal(st.why_rule, "s3");
    /* a backoff over a suspension: stays suspended, only a later end counts */
    assert_int_equal(shape_state_apply(&st, &lim, &b4, N0 + 2000), SHAPE_EV_NONE);
    assert_int_equal(st.until_ms, N0 + 1201000);
    assert_int_equal(shape_state_apply(&st, &lim, &b5, N0 + 2000), SHAPE_EV_SUSPEND);
    assert_int_equal(st.mode, SHAPE_SUSPENDED);
    assert_int_equal(st.until_ms, N0 + 3602000);
    assert_string_equal(st.why_rule, "b5");
    assert_dbl(st.backoff_rate, 0);
    assert_int_equal(shape_state_max_conn(&st, &lim, N0 + 2000), 0);
    /* bounce, none and NULL change nothing */
    assert_int_equal(shape_state_apply(&st, &lim, &bounce, N0 + 3000), SHAPE_EV_NONE);
    assert_int_equal(shape_state_apply(&st, &lim, &none, N0 + 3000), SHAPE_EV_NONE);
    assert_int_equal(shape_state_apply(&st, &lim, NULL, N0 + 3000), SHAPE_EV_NONE);
    assert_int_equal(st.mode, SHAPE_SUSPENDED);
    assert_int_equal(st.until_ms, N0 + 3602000);

    /* a longer suspension over a backoff takes its own end */
    shape_state_init(&st, &lim, N0);
    shape_state_apply(&st, &lim, &b1, N0);
    assert_int_equal(shape_state_apply(&st, &lim, &s3, N0), SHAPE_EV_SUSPEND);
    assert_int_equal(st.until_ms, N0 + 1200000);
    /* bounce and none leave NORMAL alone too */
    shape_state_init(&st, &lim, N0);
    assert_int_equal(shape_state_apply(&st, &lim, &bounce, N0), SHAPE_EV_NONE);
    assert_int_equal(st.mode, SHAPE_NORMAL);
}

static void test_state_manual_suspend_resume(void **state)
{
    (void)state;
    struct shape_limits lim = std_limits();
    struct shape_state st;
    struct shape_response s = mkresp("s", SHAPE_ACT_SUSPEND, 3600000, 0, 0);
    int64_t w = 0;

    shape_state_init(&st, &lim, N0);
    shape_state_suspend(&st, INT64_MAX, NULL);
    assert_int_equal(st.mode, SHAPE_SUSPENDED);
    assert_string_equal(st.why_rule, "manual");
    assert_false(shape_state_may_send(&st, N0, &w));
    assert_true(w == INT64_MAX);
    w = 0;
    assert_false(shape_state_may_connect(&st, N0, &w));
    assert_true(w == INT64_MAX);
    /* no end: tick never ends it, and a response rule cannot shorten it */
    assert_int_equal(shape_state_tick(&st, &lim, N0 + 365 * DAY_MS), SHAPE_EV_NONE);
    assert_int_equal(st.mode, SHAPE_SUSPENDED);
    assert_int_equal(shape_state_apply(&st, &lim, &s, N0), SHAPE_EV_NONE);
    assert_true(st.until_ms == INT64_MAX);

    shape_state_resume(&st, &lim, N0 + 5000);
    assert_int_equal(st.mode, SHAPE_NORMAL);
    assert_string_equal(st.why_rule, "");
    assert_int_equal(st.until_ms, 0);
    assert_int_equal(shape_state_max_conn(&st, &lim, N0 + 5000), 16);
    assert_dbl(shape_state_rate(&st, &lim), 80);

    /* with an end: tick resumes into recovery; resume by hand goes to NORMAL */
    shape_state_suspend(&st, N0 + 10000, "ops");
    assert_string_equal(st.why_rule, "ops");
    assert_int_equal(st.until_ms, N0 + 10000);
    /* the end passed but no tick yet: still refused, nothing to wait */
    w = -1;
    assert_false(shape_state_may_send(&st, N0 + 20000, &w));
    assert_int_equal(w, 0);
    assert_int_equal(shape_state_tick(&st, &lim, N0 + 20000), SHAPE_EV_RESUME);
    assert_int_equal(st.mode, SHAPE_RECOVERING);
    shape_state_resume(&st, &lim, N0 + 21000);
    assert_int_equal(st.mode, SHAPE_NORMAL);
    assert_dbl(st.recover_factor, 1);
    assert_int_equal(st.next_step_ms, 0);
    assert_int_equal(shape_state_max_conn(&st, &lim, N0 + 21000), 16);
    assert_dbl(st.msg_bucket.rate, 80);
    assert_dbl(st.msg_bucket.burst, 80);
    /* "" logs as manual too */
    shape_state_suspend(&st, N0 + 30000, "");
    assert_string_equal(st.why_rule, "manual");
}

static void test_state_window(void **state)
{
    (void)state;
    struct shape_limits lim = std_limits();
    struct shape_state st;

    lim.max_connections = 4;
    shape_state_init(&st, &lim, N0);
    assert_dbl(st.window, 4);
    shape_state_failure(&st);
    assert_dbl(st.window, 2);
    shape_state_failure(&st);
    assert_dbl(st.window, 1);
    shape_state_failure(&st);
    assert_dbl(st.window, 1); /* floor 1 */
    assert_int_equal(st.fail_streak, 3);
    assert_int_equal(shape_state_max_conn(&st, &lim, N0), 1);

    shape_state_success(&st, &lim);
    assert_dbl(st.window, 2); /* + 1/1 */
    assert_int_equal(st.fail_streak, 0);
    shape_state_success(&st, &lim);
    assert_dbl(st.window, 2.5);
    assert_int_equal(shape_state_max_conn(&st, &lim, N0), 2); /* whole connections */
    shape_state_success(&st, &lim);
    assert_dbl(st.window, 2.9);
    shape_state_success(&st, &lim);
    assert_dbl(st.window, 2.9 + 1 / 2.9);
    for (int i = 0; i < 10; i++)
        shape_state_success(&st, &lim);
    assert_dbl(st.window, 4); /* capped at max_connections */
    assert_int_equal(shape_state_max_conn(&st, &lim, N0), 4);

    /* while recovering the smaller of the scaled limit and the window */
    struct shape_limits big = std_limits(); /* 16 connections */
    struct shape_response s = mkresp("s", SHAPE_ACT_SUSPEND, 1000, 0, 0);
    shape_state_init(&st, &big, N0);
    shape_state_apply(&st, &big, &s, N0);
    shape_state_tick(&st, &big, N0 + 1000);
    shape_state_tick(&st, &big, N0 + 1000 + 120000); /* factor 0.5: 8 */
    assert_int_equal(shape_state_max_conn(&st, &big, N0 + 121000), 8);
    shape_state_failure(&st); /* window 8 */
    shape_state_failure(&st); /* window 4 */
    assert_int_equal(shape_state_max_conn(&st, &big, N0 + 121000), 4);
}

static void test_state_limits_changed(void **state)
{
    (void)state;
    struct shape_limits lim = std_limits(), lim2 = std_limits();
    struct shape_state st;

    shape_state_init(&st, &lim, N0);
    lim2.max_connections = 6;
    lim2.message_rate = 20;
    lim2.message_burst = 20;
    lim2.connection_rate = 0;
    lim2.connection_burst = 0;
    shape_state_limits_changed(&st, &lim2, N0);
    assert_dbl(st.window, 6);
    assert_dbl(st.msg_bucket.rate, 20);
    assert_dbl(st.msg_bucket.burst, 20);
    assert_dbl(st.msg_bucket.tokens, 20);
    assert_dbl(st.conn_bucket.rate, 0);
    /* a higher limit leaves the window to grow back by successes */
    shape_state_limits_changed(&st, &lim, N0);
    assert_dbl(st.window, 6);
    assert_dbl(st.msg_bucket.rate, 80);
    assert_dbl(st.msg_bucket.tokens, 20);
    assert_dbl(st.conn_bucket.rate, 8);
    assert_dbl(st.conn_bucket.tokens, 4); /* a limit that appears starts full */
}

static void test_state_may_connect(void **state)
{
    (void)state;
    struct shape_limits lim = std_limits();
    struct shape_state st;
    int64_t w = -1;

    shape_state_init(&st, &lim, N0);
    for (int i = 0; i < 4; i++) { /* burst 4 */
        assert_true(shape_state_may_connect(&st, N0, &w));
        assert_int_equal(w, 0);
    }
    assert_false(shape_state_may_connect(&st, N0, &w));
    assert_int_equal(w, 125); /* 8 per second */
    assert_false(shape_state_may_connect(&st, N0 + 124, &w));
    assert_int_equal(w, 1);
    assert_true(shape_state_may_connect(&st, N0 + 125, NULL));
    assert_false(shape_state_may_connect(&st, N0 + 125, NULL));

    /* unlimited connection rate */
    lim.connection_rate = 0;
    lim.connection_burst = 0;
    shape_state_init(&st, &lim, N0);
    for (int i = 0; i < 100; i++)
        assert_true(shape_state_may_connect(&st, N0, &w));
    assert_int_equal(w, 0);

    /* recovering: the connection rate is scaled too (8/8 = 1 per second) */
    lim = std_limits();
    struct shape_response s = mkresp("s", SHAPE_ACT_SUSPEND, 1000, 0, 0);
    shape_state_init(&st, &lim, N0);
    shape_state_apply(&st, &lim, &s, N0);
    shape_state_tick(&st, &lim, N0 + 1000);
    assert_true(shape_state_may_connect(&st, N0 + 1000, &w));
    assert_false(shape_state_may_connect(&st, N0 + 1000, &w));
    assert_int_equal(w, 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_defaults),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test_setup_teardown(test_full_file_sources_pools, setup_full, teardown_rules),
        cmocka_unit_test(test_sources_without_pools),
        cmocka_unit_test(test_error_unknown_keys),
        cmocka_unit_test(test_error_bad_rate),
        cmocka_unit_test(test_error_bad_duration),
        cmocka_unit_test(test_error_dangling_references),
        cmocka_unit_test(test_error_responses),
        cmocka_unit_test(test_error_rule_names),
        cmocka_unit_test(test_error_values),
        cmocka_unit_test(test_error_syntax),
        cmocka_unit_test_setup_teardown(test_match_defaults_layer, setup_full, teardown_rules),
        cmocka_unit_test_setup_teardown(test_match_specificity_and_fallthrough, setup_full,
                                        teardown_rules),
        cmocka_unit_test_setup_teardown(test_match_mx, setup_full, teardown_rules),
        cmocka_unit_test_setup_teardown(test_match_domain, setup_full, teardown_rules),
        cmocka_unit_test_setup_teardown(test_match_explicit_bursts, setup_full, teardown_rules),
        cmocka_unit_test(test_match_rate_default_bursts),
        cmocka_unit_test_setup_teardown(test_pool_for, setup_full, teardown_rules),
        cmocka_unit_test_setup_teardown(test_warmup_cap, setup_full, teardown_rules),
        cmocka_unit_test_setup_teardown(test_response_match, setup_full, teardown_rules),
        cmocka_unit_test(test_enum_strings),
        cmocka_unit_test(test_bucket_take_and_wait),
        cmocka_unit_test(test_bucket_unlimited),
        cmocka_unit_test(test_bucket_set),
        cmocka_unit_test(test_bucket_time_backwards),
        cmocka_unit_test(test_state_init),
        cmocka_unit_test(test_state_suspend_and_recover),
        cmocka_unit_test(test_state_recovery_catch_up),
        cmocka_unit_test(test_state_backoff),
        cmocka_unit_test(test_state_backoff_never_raises),
        cmocka_unit_test(test_state_apply_combinations),
        cmocka_unit_test(test_state_manual_suspend_resume),
        cmocka_unit_test(test_state_window),
        cmocka_unit_test(test_state_limits_changed),
        cmocka_unit_test(test_state_may_connect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
