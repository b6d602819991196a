/*
 * spf - an RFC 7208 SPF evaluator (check_host()) over a caller-supplied resolver.
 *
 * Pure code: no sockets, no event loop.  Every DNS question goes through struct
 * spf_resolver, so the unit tests answer from a table (tests/unit/test_spf.c) and
 * volleyctl check-domain answers with c-ares (tools/vctl_preflight.c, src/dnsq.h).
 * Entry point: spf_check().
 *
 * What is evaluated: the mechanisms all, include, a, mx, ptr, ip4, ip6, exists
 * (with qualifiers + - ~ ? and the a/24//64 dual CIDR forms), the redirect=
 * modifier (exp= is checked for duplicates and otherwise ignored: there is no
 * receiver to explain to), macros %{s l o d i p v h} with digit/r transformers and
 * delimiters plus %% %_ %-, and the processing limits of RFC 7208 4.6.4: 10
 * DNS-querying terms (include, a, mx, ptr, exists, redirect), 2 void lookups, 10
 * MX hosts per mx, 10 PTR names per ptr.  %{p} expands to "unknown" without a
 * lookup (RFC 7208 7.3 allows it; the macro is deprecated).
 *
 * Invariants: the whole record is parsed before any term is evaluated, so a syntax
 * error anywhere is a permerror with no DNS traffic for later terms; recursion
 * (include, redirect) shares one lookup budget, which also ends loops.
 */
#ifndef VOLLEY_SPF_H
#define VOLLEY_SPF_H

#include <stddef.h>

#define SPF_MAX_LOOKUPS      10
#define SPF_MAX_VOID_LOOKUPS 2
#define SPF_MAX_MX           10
#define SPF_MAX_PTR          10
#define SPF_RECORD_MAX       4096 /* longest TXT record considered */
#define SPF_TEXT_MAX         320

enum SPF_RESULT {
    SPF_NONE = 0,
    SPF_NEUTRAL,
    SPF_PASS,
    SPF_FAIL,
    SPF_SOFTFAIL,
    SPF_TEMPERROR,
    SPF_PERMERROR,
};
/* spf_result_str - "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror" */
const char *spf_result_str(enum SPF_RESULT r);

/* An address as the resolver returns it: family AF_INET (4 bytes used) or AF_INET6. */
struct spf_addr {
    int family;
    unsigned char b[16];
};

/*
 * struct spf_resolver - the DNS questions check_host() asks.  Each returns 0 when
 * the server answered (with *n records, 0 for NXDOMAIN or no data: a "void
 * lookup") and -1 on a temporary failure (timeout, SERVFAIL), which makes the
 * result temperror.  On 0 with *n > 0, *out is a malloc'd array (and for strings
 * each element is malloc'd too); the evaluator frees it all with free().  ptr may
 * be NULL: ptr mechanisms then never match and the outcome notes it.
 *
 *   txt  - every TXT record of name, the strings of a record joined without
 *          separator (RFC 7208 3.3)
 *   a    - IPv4 addresses of name (family AF_INET)
 *   aaaa - IPv6 addresses of name (family AF_INET6)
 *   mx   - MX exchange host names of name, lower case, no trailing dot
 *   ptr  - PTR names of the reverse name of addr
 */
struct spf_resolver {
    int (*txt)(void *arg, const char *name, char ***out, int *n);
    int (*a)(void *arg, const char *name, struct spf_addr **out, int *n);
    int (*aaaa)(void *arg, const char *name, struct spf_addr **out, int *n);
    int (*mx)(void *arg, const char *name, char ***out, int *n);
    int (*ptr)(void *arg, const struct spf_addr *addr, char ***out, int *n);
    void *arg;
};

/* The question: check_host(ip, domain, sender) plus the HELO name for %{h}. */
struct spf_request {
    const char *ip;     /* the client address, IPv4 or IPv6 text */
    const char *domain; /* the domain whose SPF record is evaluated */
    const char *sender; /* MAIL FROM; NULL or "" means postmaster@domain */
    const char *helo;   /* HELO/EHLO name; NULL or "" expands %{h} to domain */
};

/* The answer, with enough context to tell an operator why. */
struct spf_outcome {
    enum SPF_RESULT result;
    /* the directive that decided, as written in the evaluated domain's record (or
     * in the record a redirect led to): "-all", "ip4:192.0.2.0/24",
     * "include:_spf.example.org"; "default" when nothing matched; "" for none and
     * for errors found before a term decided */
    char mechanism[SPF_TEXT_MAX];
    /* the record's domain where mechanism was found */
    char where[SPF_TEXT_MAX];
    /* human text: what matched inside an include, or the reason for an error */
    char detail[SPF_TEXT_MAX];
    int lookups;      /* DNS-querying terms evaluated (limit SPF_MAX_LOOKUPS) */
    int void_lookups; /* of which answered with nothing */
};

/*
 * spf_check - evaluate req against r.  Returns 0 with *out filled (the result may
 * be any SPF_RESULT), or -1 when req->ip is not an IP address or req->domain is
 * empty (out->detail says which).  Owns nothing it does not free.
 */
int spf_check(const struct spf_resolver *r, const struct spf_request *req, struct spf_outcome *out);

/*
 * spf_is_record - 1 if txt is an SPF version 1 record ("v=spf1" alone or followed
 * by a space, case-insensitive), else 0
 */
int spf_is_record(const char *txt);

/*
 * spf_addr_parse - IPv4 or IPv6 text into *a; IPv4-mapped IPv6 becomes IPv4
 * (RFC 7208 5: evaluated as the IPv4 address).  0 or -1.
 */
int spf_addr_parse(const char *s, struct spf_addr *a);

#endif
