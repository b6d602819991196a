/*
 * test_spf - unit tests for the SPF evaluator (src/spf.c) over a fake resolver
 * that answers from a per-test table: every mechanism, qualifiers, CIDR lengths
 * (a/24, mx//64, ip6), include recursion, redirect, the 10-lookup and 2-void
 * limits, the MX host limit, macros (and unsupported ones), syntax errors, include
 * of a domain without SPF, include and redirect loops, temporary DNS failures.
 *
 * Table rows are (type, name, value); a value of "SERVFAIL" makes that question
 * fail temporarily.  Every name asked is recorded so tests can check what a macro
 * expanded to.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "spf.h"

struct fake_rr {
    const char *type, *name, *value;
};

static const struct fake_rr *zone;
static char asked[256][300];
static int nasked;

/* fake_strs - the values of rows (type, name) as a malloc'd string array */
static int fake_strs(const char *type, const char *name, char ***out, int *n)
{
    *out = NULL;
    *n = 0;
    if (nasked < 256) snprintf(asked[nasked++], sizeof asked[0], "%s %s", type, name);
    for (const struct fake_rr *r = zone; r->type; r++) {
        if (strcmp(r->type, type) || strcasecmp(r->name, name)) continue;
        if (strcmp(r->value, "SERVFAIL") == 0) return -1;
        *out = realloc(*out, sizeof **out * (size_t)(*n + 1));
        assert_non_null(*out);
        (*out)[(*n)++] = strdup(r->value);
    }
    return 0;
}

static int fake_txt(void *arg, const char *name, char ***out, int *n)
{
    return fake_strs("TXT", name, out, n);
}

static int fake_mx(void *arg, const char *name, char ***out, int *n)
{
    return fake_strs("MX", name, out, n);
}

/* fake_addrs - A or AAAA rows as spf_addr */
static int fake_addrs(const char *type, const char *name, struct spf_addr **out, int *n)
{
    char **v;
    int nv;
    *out = NULL;
    *n = 0;
    if (fake_strs(type, name, &v, &nv) < 0) return -1;
    if (nv > 0) *out = calloc((size_t)nv, sizeof **out);
    for (int i = 0; i < nv; i++) {
        assert_int_equal(spf_addr_parse(v[i], &(*out)[i]), 0);
        free(v[i]);
    }
    free(v);
    *n = nv;
    return 0;
}

static int fake_a(void *arg, const char *name, struct spf_addr **out, int *n)
{
    return fake_addrs("A", name, out, n);
}

static int fake_aaaa(void *arg, const char *name, struct spf_addr **out, int *n)
{
    return fake_addrs("AAAA", name, out, n);
}

/* fake_ptr - PTR rows are keyed by the address text as spf_addr_parse reads it */
static int fake_ptr(void *arg, const struct spf_addr *a, char ***out, int *n)
{
    *out = NULL;
    *n = 0;
    for (const struct fake_rr *r = zone; r->type; r++) {
        struct spf_addr k;
        if (strcmp(r->type, "PTR") || spf_addr_parse(r->name, &k) < 0) continue;
        if (k.family == a->family && memcmp(k.b, a->b, 16) == 0)
            return fake_strs("PTR", r->name, out, n);
    }
    return 0;
}

static const struct spf_resolver fake = {fake_txt, fake_a, fake_aaaa, fake_mx, fake_ptr, NULL};

/* check - evaluate domain for ip with sender and helo over z; the result */
static enum SPF_RESULT check_full(const struct fake_rr *z, const char *ip, const char *domain,
                                  const char *sender, const char *helo, struct spf_outcome *o)
{
    struct spf_request q = {ip, domain, sender, helo};
    zone = z;
    nasked = 0;
    assert_int_equal(spf_check(&fake, &q, o), 0);
    return o->result;
}

static enum SPF_RESULT check(const struct fake_rr *z, const char *ip, struct spf_outcome *o)
{
    return check_full(z, ip, "example.org", NULL, NULL, o);
}

/* was_asked - 1 if "TYPE name" was looked up */
static int was_asked(const char *what)
{
    for (int i = 0; i < nasked; i++)
        if (strcasecmp(asked[i], what) == 0) return 1;
    return 0;
}

#define END                                                                                        \
    {                                                                                              \
        NULL, NULL, NULL                                                                           \
    }

static void test_ip4_and_qualifiers(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf1 ip4:192.0.2.0/24 -all"},
        {"TXT", "example.org", "google-site-verification=abc"},
        {"TXT", "soft.example.org", "v=spf1 ~all"},
        {"TXT", "neutral.example.org", "v=spf1 ?all"},
        {"TXT", "plus.example.org", "v=spf1 +all"},
        {"TXT", "open.example.org", "v=spf1 ip4:192.0.2.1"},
        {"TXT", "case.example.org", "V=SPF1 IP4:192.0.2.1 -ALL"},
        END,
    };
    assert_int_equal(check(z, "192.0.2.77", &o), SPF_PASS);
    assert_string_equal(o.mechanism, "ip4:192.0.2.0/24");
    assert_string_equal(o.where, "example.org");
    assert_int_equal(o.lookups, 0);
    assert_int_equal(check(z, "198.51.100.1", &o), SPF_FAIL);
    assert_string_equal(o.mechanism, "-all");
    assert_int_equal(check_full(z, "198.51.100.1", "soft.example.org", NULL, NULL, &o),
                     SPF_SOFTFAIL);
    assert_int_equal(check_full(z, "198.51.100.1", "neutral.example.org", NULL, NULL, &o),
                     SPF_NEUTRAL);
    assert_string_equal(o.mechanism, "?all");
    assert_int_equal(check_full(z, "198.51.100.1", "plus.example.org", NULL, NULL, &o), SPF_PASS);
    assert_int_equal(check_full(z, "198.51.100.1", "open.example.org", NULL, NULL, &o),
                     SPF_NEUTRAL);
    assert_string_equal(o.mechanism, "default");
    assert_int_equal(check_full(z, "192.0.2.1", "case.example.org", NULL, NULL, &o), SPF_PASS);
    assert_string_equal(spf_result_str(SPF_SOFTFAIL), "softfail");
    assert_string_equal(spf_result_str(SPF_PERMERROR), "permerror");
}

static void test_none_multiple_temperror(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf10 -all"},
        {"TXT", "two.example.org", "v=spf1 -all"},
        {"TXT", "two.example.org", "v=spf1 +all"},
        {"TXT", "broken.example.org", "SERVFAIL"},
        END,
    };
    assert_int_equal(check(z, "192.0.2.1", &o), SPF_NONE);
    assert_non_null(strstr(o.detail, "no SPF record"));
    assert_int_equal(check_full(z, "192.0.2.1", "nx.example.org", NULL, NULL, &o), SPF_NONE);
    assert_int_equal(check_full(z, "192.0.2.1", "two.example.org", NULL, NULL, &o), SPF_PERMERROR);
    assert_int_equal(check_full(z, "192.0.2.1", "broken.example.org", NULL, NULL, &o),
                     SPF_TEMPERROR);
    assert_int_equal(check_full(z, "192.0.2.1", "localhost", NULL, NULL, &o), SPF_NONE);

    struct spf_request q = {"not-an-ip", "example.org", NULL, NULL};
    assert_int_equal(spf_check(&fake, &q, &o), -1);
}

static void test_a_mx_cidr(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf1 a -all"},
        {"A", "example.org", "192.0.2.10"},
        {"AAAA", "example.org", "2001:db8::10"},
        {"TXT", "a24.example.org", "v=spf1 a:mail.example.org/24 -all"},
        {"A", "mail.example.org", "198.51.100.5"},
        {"AAAA", "mail.example.org", "2001:db8:1:2::5"},
        {"TXT", "a64.example.org", "v=spf1 a:mail.example.org/32//64 -all"},
        {"TXT", "mx.example.org", "v=spf1 mx -all"},
        {"MX", "mx.example.org", "mx1.example.org"},
        {"MX", "mx.example.org", "mx2.example.org"},
        {"A", "mx1.example.org", "203.0.113.1"},
        {"A", "mx2.example.org", "203.0.113.2"},
        {"AAAA", "mx2.example.org", "2001:db8:5::2"},
        {"TXT", "mx24.example.org", "v=spf1 mx:mx.example.org/24 -all"},
        {"TXT", "mx64.example.org", "v=spf1 mx:mx.example.org//64 -all"},
        {"TXT", "bare.example.org", "v=spf1 a/24 mx//48 -all"},
        {"A", "bare.example.org", "192.0.2.200"},
        {"MX", "bare.example.org", "mx2.example.org"},
        END,
    };
    assert_int_equal(check(z, "192.0.2.10", &o), SPF_PASS);
    assert_string_equal(o.mechanism, "a");
    assert_int_equal(o.lookups, 1);
    assert_int_equal(check(z, "192.0.2.11", &o), SPF_FAIL);
    assert_int_equal(check(z, "2001:db8::10", &o), SPF_PASS);
    assert_true(was_asked("AAAA example.org"));
    assert_false(was_asked("A example.org"));

    assert_int_equal(check_full(z, "198.51.100.77", "a24.example.org", NULL, NULL, &o), SPF_PASS);
    assert_string_equal(o.mechanism, "a:mail.example.org/24");
    assert_int_equal(check_full(z, "198.51.101.5", "a24.example.org", NULL, NULL, &o), SPF_FAIL);
    /* /24 is for IPv4 only; without //N, IPv6 needs the exact address */
    assert_int_equal(check_full(z, "2001:db8:1:2::6", "a24.example.org", NULL, NULL, &o), SPF_FAIL);
    assert_int_equal(check_full(z, "2001:db8:1:2::6", "a64.example.org", NULL, NULL, &o), SPF_PASS);
    assert_int_equal(check_full(z, "2001:db8:1:3::5", "a64.example.org", NULL, NULL, &o), SPF_FAIL);
    assert_int_equal(check_full(z, "198.51.100.6", "a64.example.org", NULL, NULL, &o), SPF_FAIL);

    assert_int_equal(check_full(z, "203.0.113.2", "mx.example.org", NULL, NULL, &o), SPF_PASS);
    assert_string_equal(o.mechanism, "mx");
    assert_int_equal(check_full(z, "203.0.113.3", "mx.example.org", NULL, NULL, &o), SPF_FAIL);
    assert_int_equal(check_full(z, "203.0.113.99", "mx24.example.org", NULL, NULL, &o), SPF_PASS);
    assert_int_equal(check_full(z, "2001:db8:5::99", "mx64.example.org", NULL, NULL, &o), SPF_PASS);
    assert_int_equal(check_full(z, "2001:db8:6::2", "mx64.example.org", NULL, NULL, &o), SPF_FAIL);
    assert_int_equal(check_full(z, "192.0.2.9", "bare.example.org", NULL, NULL, &o), SPF_PASS);
    assert_string_equal(o.mechanism, "a/24");
    assert_int_equal(check_full(z, "2001:db8:5:ff::1", "bare.example.org", NULL, NULL, &o),
                     SPF_PASS);
    assert_string_equal(o.mechanism, "mx//48");
}

static void test_mx_limit(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf1 mx -all"}, {"MX", "example.org", "m1.example.org"},
        {"MX", "example.org", "m2.example.org"},  {"MX", "example.org", "m3.example.org"},
        {"MX", "example.org", "m4.example.org"},  {"MX", "example.org", "m5.example.org"},
        {"MX", "example.org", "m6.example.org"},  {"MX", "example.org", "m7.example.org"},
        {"MX", "example.org", "m8.example.org"},  {"MX", "example.org", "m9.example.org"},
        {"MX", "example.org", "m10.example.org"}, {"MX", "example.org", "m11.example.org"},
        {"A", "m1.example.org", "192.0.2.1"},     END,
    };
    assert_int_equal(check(z, "192.0.2.1", &o), SPF_PERMERROR);
    assert_non_null(strstr(o.detail, "MX hosts"));
}

static void test_ip6_and_mapped(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf1 ip6:2001:db8::/32 ip4:192.0.2.128/25 ip6:::1 -all"},
        END,
    };
    assert_int_equal(check(z, "2001:db8:ffff::1", &o), SPF_PASS);
    assert_string_equal(o.mechanism, "ip6:2001:db8::/32");
    assert_int_equal(check(z, "2001:db9::1", &o), SPF_FAIL);
    assert_int_equal(check(z, "::1", &o), SPF_PASS);
    assert_int_equal(check(z, "192.0.2.128", &o), SPF_PASS);
    assert_int_equal(check(z, "192.0.2.255", &o), SPF_PASS);
    assert_int_equal(check(z, "192.0.2.127", &o), SPF_FAIL);
    /* an IPv4-mapped IPv6 client is evaluated as IPv4 */
    assert_int_equal(check(z, "::ffff:192.0.2.200", &o), SPF_PASS);
    assert_string_equal(o.mechanism, "ip4:192.0.2.128/25");
}

static void test_include(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf1 include:_spf.other.test include:_s2.other.test -all"},
        {"TXT", "_spf.other.test", "v=spf1 ip4:198.51.100.0/24 -all"},
        {"TXT", "_s2.other.test", "v=spf1 ip4:203.0.113.7 ~all"},
        {"TXT", "nospf.example.org", "v=spf1 include:nothing.other.test -all"},
        {"TXT", "nothing.other.test", "just text"},
        {"TXT", "tmp.example.org", "v=spf1 include:down.other.test -all"},
        {"TXT", "down.other.test", "SERVFAIL"},
        {"TXT", "perm.example.org", "v=spf1 include:bad.other.test -all"},
        {"TXT", "bad.other.test", "v=spf1 frobnicate -all"},
        {"TXT", "negi.example.org", "v=spf1 -include:_spf.other.test +all"},
        END,
    };
    assert_int_equal(check(z, "198.51.100.9", &o), SPF_PASS);
    assert_string_equal(o.mechanism, "include:_spf.other.test");
    assert_non_null(strstr(o.detail, "ip4:198.51.100.0/24 in _spf.other.test"));
    /* a fail inside an include is just no match: the next term decides */
    assert_int_equal(check(z, "203.0.113.7", &o), SPF_PASS);
    assert_string_equal(o.mechanism, "include:_s2.other.test");
    assert_int_equal(o.lookups, 2);
    assert_int_equal(check(z, "192.0.2.1", &o), SPF_FAIL);
    assert_string_equal(o.mechanism, "-all");

    assert_int_equal(check_full(z, "192.0.2.1", "nospf.example.org", NULL, NULL, &o),
                     SPF_PERMERROR);
    assert_non_null(strstr(o.detail, "no SPF record"));
    assert_int_equal(check_full(z, "192.0.2.1", "tmp.example.org", NULL, NULL, &o), SPF_TEMPERROR);
    assert_int_equal(check_full(z, "192.0.2.1", "perm.example.org", NULL, NULL, &o), SPF_PERMERROR);
    assert_non_null(strstr(o.detail, "frobnicate"));
    assert_int_equal(check_full(z, "198.51.100.1", "negi.example.org", NULL, NULL, &o), SPF_FAIL);
}

static void test_redirect(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf1 ip4:192.0.2.1 redirect=_spf.example.net"},
        {"TXT", "_spf.example.net", "v=spf1 ip4:198.51.100.0/24 ~all"},
        {"TXT", "ignored.example.org", "v=spf1 -all redirect=_spf.example.net"},
        {"TXT", "dangling.example.org", "v=spf1 redirect=nowhere.example.net"},
        {"TXT", "self.example.org", "v=spf1 redirect=self.example.org"},
        {"TXT", "two.example.org", "v=spf1 redirect=a.example.net redirect=b.example.net"},
        {"TXT", "exp.example.org", "v=spf1 -all exp=a.example.net exp=b.example.net"},
        {"TXT", "unk.example.org", "v=spf1 foo=bar x-thing=%{d} -all"},
        END,
    };
    assert_int_equal(check(z, "192.0.2.1", &o), SPF_PASS);
    assert_string_equal(o.mechanism, "ip4:192.0.2.1");
    assert_int_equal(check(z, "198.51.100.3", &o), SPF_PASS);
    assert_string_equal(o.where, "_spf.example.net");
    assert_int_equal(check(z, "203.0.113.3", &o), SPF_SOFTFAIL);
    assert_string_equal(o.mechanism, "~all");
    assert_int_equal(o.lookups, 1);
    /* all before redirect: redirect is never reached */
    assert_int_equal(check_full(z, "198.51.100.3", "ignored.example.org", NULL, NULL, &o),
                     SPF_FAIL);
    assert_int_equal(check_full(z, "198.51.100.3", "dangling.example.org", NULL, NULL, &o),
                     SPF_PERMERROR);
    assert_non_null(strstr(o.detail, "no SPF record"));
    assert_int_equal(check_full(z, "198.51.100.3", "self.example.org", NULL, NULL, &o),
                     SPF_PERMERROR);
    assert_non_null(strstr(o.detail, "DNS lookups"));
    assert_int_equal(check_full(z, "198.51.100.3", "two.example.org", NULL, NULL, &o),
                     SPF_PERMERROR);
    assert_int_equal(check_full(z, "198.51.100.3", "exp.example.org", NULL, NULL, &o),
                     SPF_PERMERROR);
    assert_int_equal(check_full(z, "198.51.100.3", "unk.example.org", NULL, NULL, &o), SPF_FAIL);
}

static void test_lookup_limit(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        /* ten lookups: allowed */
        {"TXT", "ten.example.org",
         "v=spf1 include:i1.example.net include:i2.example.net include:i3.example.net "
         "include:i4.example.net include:i5.example.net a mx exists:e.example.net "
         "a:x.example.net ip4:192.0.2.1 redirect=i6.example.net"},
        {"TXT", "eleven.example.org",
         "v=spf1 include:i1.example.net include:i2.example.net include:i3.example.net "
         "include:i4.example.net include:i5.example.net include:i6.example.net "
         "include:i7.example.net include:i8.example.net include:i9.example.net "
         "include:i10.example.net include:i11.example.net -all"},
        {"TXT", "nested.example.org", "v=spf1 include:n1.example.net -all"},
        {"TXT", "n1.example.net",
         "v=spf1 include:i1.example.net include:i2.example.net "
         "include:n2.example.net ?all"},
        {"TXT", "n2.example.net",
         "v=spf1 a:a1.example.net a:a2.example.net a:a3.example.net "
         "mx:a1.example.net mx:a2.example.net mx:a3.example.net "
         "include:i3.example.net ?all"},
        {"TXT", "i1.example.net", "v=spf1 ?all"},
        {"TXT", "i2.example.net", "v=spf1 ?all"},
        {"TXT", "i3.example.net", "v=spf1 ?all"},
        {"TXT", "i4.example.net", "v=spf1 ?all"},
        {"TXT", "i5.example.net", "v=spf1 ?all"},
        {"TXT", "i6.example.net", "v=spf1 -all"},
        {"TXT", "i7.example.net", "v=spf1 ?all"},
        {"TXT", "i8.example.net", "v=spf1 ?all"},
        {"TXT", "i9.example.net", "v=spf1 ?all"},
        {"TXT", "i10.example.net", "v=spf1 ?all"},
        {"TXT", "i11.example.net", "v=spf1 +all"},
        {"A", "ten.example.org", "203.0.113.1"},
        {"MX", "ten.example.org", "mx.example.net"},
        {"A", "mx.example.net", "203.0.113.2"},
        {"A", "e.example.net", "127.0.0.2"},
        {"A", "x.example.net", "203.0.113.3"},
        {"A", "a1.example.net", "203.0.113.10"},
        {"A", "a2.example.net", "203.0.113.11"},
        {"A", "a3.example.net", "203.0.113.12"},
        {"MX", "a1.example.net", "mx.example.net"},
        {"MX", "a2.example.net", "mx.example.net"},
        {"MX", "a3.example.net", "mx.example.net"},
        END,
    };
    /* exists matches first at lookup 8 */
    assert_int_equal(check_full(z, "198.51.100.1", "ten.example.org", NULL, NULL, &o), SPF_PASS);
    assert_string_equal(o.mechanism, "exists:e.example.net");
    static const struct fake_rr z2[] = {
        {"TXT", "ten.example.org",
         "v=spf1 include:i1.example.net include:i2.example.net include:i3.example.net "
         "include:i4.example.net include:i5.example.net a mx a:x.example.net "
         "a:x.example.net ip4:192.0.2.1 redirect=i6.example.net"},
        {"TXT", "i1.example.net", "v=spf1 ?all"},
        {"TXT", "i2.example.net", "v=spf1 ?all"},
        {"TXT", "i3.example.net", "v=spf1 ?all"},
        {"TXT", "i4.example.net", "v=spf1 ?all"},
        {"TXT", "i5.example.net", "v=spf1 ?all"},
        {"TXT", "i6.example.net", "v=spf1 -all"},
        {"A", "ten.example.org", "203.0.113.1"},
        {"MX", "ten.example.org", "mx.example.net"},
        {"A", "mx.example.net", "203.0.113.2"},
        {"A", "x.example.net", "203.0.113.3"},
        END,
    };
    assert_int_equal(check_full(z2, "198.51.100.1", "ten.example.org", NULL, NULL, &o), SPF_FAIL);
    assert_int_equal(o.lookups, 10);
    assert_int_equal(check_full(z, "198.51.100.1", "eleven.example.org", NULL, NULL, &o),
                     SPF_PERMERROR);
    assert_non_null(strstr(o.detail, "more than 10 DNS lookups"));
    assert_int_equal(o.lookups, 11);
    /* the budget is shared by nested includes */
    assert_int_equal(check_full(z, "198.51.100.1", "nested.example.org", NULL, NULL, &o),
                     SPF_PERMERROR);
    assert_non_null(strstr(o.detail, "more than 10 DNS lookups"));
}

static void test_void_lookups(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf1 a:nx1.example.net a:nx2.example.net -all"},
        {"TXT", "three.example.org",
         "v=spf1 a:nx1.example.net mx:nx2.example.net exists:nx3.example.net +all"},
        END,
    };
    assert_int_equal(check(z, "192.0.2.1", &o), SPF_FAIL);
    assert_int_equal(o.void_lookups, 2);
    assert_int_equal(check_full(z, "192.0.2.1", "three.example.org", NULL, NULL, &o),
                     SPF_PERMERROR);
    assert_non_null(strstr(o.detail, "void lookups"));
}

static void test_exists_and_macros(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf1 exists:%{i}._spf.%{d} -all"},
        {"A", "192.0.2.7._spf.example.org", "127.0.0.2"},
        {"TXT", "rev.example.org", "v=spf1 exists:%{ir}.%{v}.%{d2} -all"},
        {"TXT", "who.example.org", "v=spf1 exists:%{l}.%{o}.%{h}.x.example.net -all"},
        {"TXT", "parts.example.org", "v=spf1 exists:%{l1r+-}.%{d1}.x.example.net -all"},
        {"TXT", "esc.example.org", "v=spf1 exists:%{S}.x.example.net -all"},
        {"TXT", "lit.example.org", "v=spf1 exists:a%%b%_c%-d.x.example.net -all"},
        {"TXT", "v6.example.org", "v=spf1 exists:%{ir}.%{v}.x.example.net -all"},
        {"TXT", "exp.example.org", "v=spf1 exists:%{c}.x.example.net -all"},
        {"TXT", "bad.example.org", "v=spf1 exists:%{z}.x.example.net -all"},
        {"TXT", "lone.example.org", "v=spf1 exists:50%.x.example.net -all"},
        {"TXT", "zero.example.org", "v=spf1 exists:%{d0}.x.example.net -all"},
        {"TXT", "p.example.org", "v=spf1 exists:%{p}.x.example.net -all"},
        END,
    };
    assert_int_equal(check(z, "192.0.2.7", &o), SPF_PASS);
    assert_string_equal(o.mechanism, "exists:%{i}._spf.%{d}");
    assert_int_equal(check(z, "192.0.2.8", &o), SPF_FAIL);
    assert_true(was_asked("A 192.0.2.8._spf.example.org"));

    check_full(z, "192.0.2.8", "rev.example.org", NULL, NULL, &o);
    assert_true(was_asked("A 8.2.0.192.in-addr.example.org"));
    check_full(z, "192.0.2.8", "who.example.org", "bob@sender.example", "mta.example.com", &o);
    assert_true(was_asked("A bob.sender.example.mta.example.com.x.example.net"));
    /* no sender: postmaster@domain */
    check_full(z, "192.0.2.8", "who.example.org", NULL, NULL, &o);
    assert_true(was_asked("A postmaster.who.example.org.who.example.org.x.example.net"));
    /* l split at + and -, reversed, first part kept; d1 = the last label */
    check_full(z, "192.0.2.8", "parts.example.org", "first-second+tag@s.example", NULL, &o);
    assert_true(was_asked("A first.org.x.example.net"));
    check_full(z, "192.0.2.8", "esc.example.org", "a/b@s.example", NULL, &o);
    assert_true(was_asked("A a%2Fb%40s.example.x.example.net"));
    check_full(z, "192.0.2.8", "lit.example.org", NULL, NULL, &o);
    assert_true(was_asked("A a%b c%20d.x.example.net"));
    check_full(z, "2001:db8::cb01", "v6.example.org", NULL, NULL, &o);
    assert_true(was_asked("A 1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6"
                          ".x.example.net"));
    check_full(z, "192.0.2.8", "p.example.org", NULL, NULL, &o);
    assert_true(was_asked("A unknown.x.example.net"));

    const char *perm[] = {"exp.example.org", "bad.example.org", "lone.example.org",
                          "zero.example.org"};
    for (size_t i = 0; i < sizeof perm / sizeof perm[0]; i++) {
        assert_int_equal(check_full(z, "192.0.2.8", perm[i], NULL, NULL, &o), SPF_PERMERROR);
        assert_int_equal(nasked, 1); /* the TXT only: refused at parse time */
    }
}

static void test_long_expansion_truncated(void **state)
{
    struct spf_outcome o;
    char local[80];
    memset(local, 'x', 60);
    local[60] = '\0';
    char sender[200];
    snprintf(sender, sizeof sender, "%s@s.example", local);
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf1 exists:%{l}.%{l}.%{l}.%{l}.%{l}.tail.example.net -all"},
        END,
    };
    /* 5 * 61 + 17 bytes > 253: leading labels go until it fits */
    assert_int_equal(check_full(z, "192.0.2.8", "example.org", sender, NULL, &o), SPF_FAIL);
    char want[300];
    snprintf(want, sizeof want, "A %s.%s.%s.tail.example.net", local, local, local);
    assert_true(was_asked(want));
}

static void test_syntax_errors(void **state)
{
    struct spf_outcome o;
    static const char *bad[] = {
        "v=spf1 frob -all",
        "v=spf1 ip4:300.1.1.1 -all",
        "v=spf1 ip4:192.0.2.0/33 -all",
        "v=spf1 ip4:192.0.2.0/024 -all",
        "v=spf1 ip4 -all",
        "v=spf1 ip6:2001:db8::/129 -all",
        "v=spf1 ip6:192.0.2.1 -all",
        "v=spf1 all:x",
        "v=spf1 include -all",
        "v=spf1 include: -all",
        "v=spf1 exists -all",
        "v=spf1 a:example -all",
        "v=spf1 a/33 -all",
        "v=spf1 mx//129 -all",
        "v=spf1 ptr/24 -all",
        "v=spf1 *all",
        "v=spf1 -all redirect=",
        "v=spf1 a:exa\x01mple.org -all",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct fake_rr z[] = {{"TXT", "example.org", bad[i]}, END};
        assert_int_equal(check(z, "192.0.2.1", &o), SPF_PERMERROR);
        /* a syntax error anywhere stops before any term is evaluated */
        assert_int_equal(o.lookups, 0);
        assert_int_equal(nasked, 1);
    }
    /* a syntax error after a matching term is still a permerror */
    struct fake_rr z[] = {{"TXT", "example.org", "v=spf1 +all frob"}, END};
    assert_int_equal(check(z, "192.0.2.1", &o), SPF_PERMERROR);
    /* extra spaces are fine */
    struct fake_rr z2[] = {{"TXT", "example.org", "v=spf1   ip4:192.0.2.1    -all  "}, END};
    assert_int_equal(check(z2, "192.0.2.1", &o), SPF_PASS);
}

static void test_loops(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf1 include:loop.example.net -all"},
        {"TXT", "loop.example.net", "v=spf1 include:example.org -all"},
        {"TXT", "self.example.org", "v=spf1 include:self.example.org -all"},
        END,
    };
    assert_int_equal(check(z, "192.0.2.1", &o), SPF_PERMERROR);
    assert_non_null(strstr(o.detail, "DNS lookups"));
    assert_int_equal(check_full(z, "192.0.2.1", "self.example.org", NULL, NULL, &o), SPF_PERMERROR);
}

static void test_ptr(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf1 ptr -all"},
        {"TXT", "other.example.org", "v=spf1 ptr:example.net -all"},
        {"PTR", "192.0.2.7", "mail.example.org"},
        {"A", "mail.example.org", "192.0.2.7"},
        {"PTR", "192.0.2.8", "forged.example.org"},
        {"A", "forged.example.org", "192.0.2.99"},
        END,
    };
    assert_int_equal(check(z, "192.0.2.7", &o), SPF_PASS);
    assert_string_equal(o.mechanism, "ptr");
    /* a PTR whose name does not resolve back is not validated */
    assert_int_equal(check(z, "192.0.2.8", &o), SPF_FAIL);
    assert_int_equal(check_full(z, "192.0.2.7", "other.example.org", NULL, NULL, &o), SPF_FAIL);

    /* without a ptr resolver the mechanism never matches and says so */
    struct spf_resolver noptr = fake;
    noptr.ptr = NULL;
    struct spf_request q = {"192.0.2.7", "example.org", NULL, NULL};
    zone = z;
    assert_int_equal(spf_check(&noptr, &q, &o), 0);
    assert_int_equal(o.result, SPF_FAIL);
    assert_string_equal(o.detail, "ptr not evaluated (deprecated)");
}

static void test_temperror_in_mechanisms(void **state)
{
    struct spf_outcome o;
    static const struct fake_rr z[] = {
        {"TXT", "example.org", "v=spf1 a:down.example.net -all"},
        {"A", "down.example.net", "SERVFAIL"},
        {"TXT", "mx.example.org", "v=spf1 mx -all"},
        {"MX", "mx.example.org", "SERVFAIL"},
        END,
    };
    assert_int_equal(check(z, "192.0.2.1", &o), SPF_TEMPERROR);
    assert_int_equal(check_full(z, "192.0.2.1", "mx.example.org", NULL, NULL, &o), SPF_TEMPERROR);
}

static void test_is_record(void **state)
{
    assert_true(spf_is_record("v=spf1"));
    assert_true(spf_is_record("v=spf1 -all"));
    assert_true(spf_is_record("V=SPF1 -all"));
    assert_false(spf_is_record("v=spf10"));
    assert_false(spf_is_record("spf2.0/pra -all"));
    assert_false(spf_is_record(" v=spf1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ip4_and_qualifiers),
        cmocka_unit_test(test_none_multiple_temperror),
        cmocka_unit_test(test_a_mx_cidr),
        cmocka_unit_test(test_mx_limit),
        cmocka_unit_test(test_ip6_and_mapped),
        cmocka_unit_test(test_include),
        cmocka_unit_test(test_redirect),
        cmocka_unit_test(test_lookup_limit),
        cmocka_unit_test(test_void_lookups),
        cmocka_unit_test(test_exists_and_macros),
        cmocka_unit_test(test_long_expansion_truncated),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_loops),
        cmocka_unit_test(test_ptr),
        cmocka_unit_test(test_temperror_in_mechanisms),
        cmocka_unit_test(test_is_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
