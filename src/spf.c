/*
 * spf - RFC 7208 check_host() over a caller-supplied resolver (see spf.h).
 *
 * A record is handled in two passes: spf_parse() splits it into terms and checks
 * the syntax of every one of them (mechanism names, CIDR lengths, addresses, macro
 * strings, duplicate modifiers), then spf_eval_terms() walks the directives left
 * to right.  One struct spf_ctx lives for a whole spf_check(): the lookup and void
 * lookup counters in it are shared by every include and redirect, which is what
 * RFC 7208 4.6.4 asks for and also what stops include loops.
 *
 * Everything the resolver returns is freed here, right after use.
 */
#include "spf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define SPF_NAME_MAX   253  /* a domain name after macro expansion (RFC 7208 7.3) */
#define SPF_EXPAND_MAX 2048 /* an expansion before it is cut down to SPF_NAME_MAX */
#define SPF_DEPTH_MAX                                                                              \
    (SPF_MAX_LOOKUPS + 2) /* include/redirect nesting; the lookup                                  \
                             limit ends it first */

enum SPF_MECH {
    SPF_M_ALL,
    SPF_M_INCLUDE,
    SPF_M_A,
    SPF_M_MX,
    SPF_M_PTR,
    SPF_M_IP4,
    SPF_M_IP6,
    SPF_M_EXISTS,
};

/* One directive of a parsed record.  Strings point into the record's copies. */
struct spf_term {
    const char *text; /* the term as written */
    char qual;        /* '+', '-', '~' or '?' */
    enum SPF_MECH mech;
    const char *spec;    /* domain-spec, NULL when the mechanism has none */
    int cidr4, cidr6;    /* prefix lengths (32 and 128 when not given) */
    struct spf_addr net; /* ip4, ip6 */
};

struct spf_record {
    char *orig; /* the record split at spaces: term texts */
    char *work; /* a second copy, cut into specs */
    struct spf_term *term;
    int nterm;
    const char *redirect; /* NULL when absent */
};

/* Everything one spf_check() shares across include and redirect. */
struct spf_ctx {
    const struct spf_resolver *r;
    struct spf_addr ip;
    char sender[SPF_TEXT_MAX];
    char local[SPF_TEXT_MAX];
    char sdomain[SPF_TEXT_MAX];
    char helo[SPF_TEXT_MAX];
    int lookups, voids, depth;
    int ptr_skipped; /* a ptr term was met with no ptr resolver */
};

static enum SPF_RESULT spf_check_host(struct spf_ctx *c, const char *domain,
                                      struct spf_outcome *out);

const char *spf_result_str(enum SPF_RESULT r)
{
    switch (r) {
    case SPF_NONE:
        return "none";
    case SPF_NEUTRAL:
        return "neutral";
    case SPF_PASS:
        return "pass";
    case SPF_FAIL:
        return "fail";
    case SPF_SOFTFAIL:
        return "softfail";
    case SPF_TEMPERROR:
        return "temperror";
    case SPF_PERMERROR:
        return "permerror";
    }
    return "unknown";
}

/* spf_setf - printf into a bounded outcome field */
static void spf_setf(char *dst, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void spf_setf(char *dst, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, SPF_TEXT_MAX, fmt, ap);
    va_end(ap);
}

/* spf_error - end the evaluation with result r and a reason */
static enum SPF_RESULT spf_error(struct spf_outcome *out, enum SPF_RESULT r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum SPF_RESULT spf_error(struct spf_outcome *out, enum SPF_RESULT r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->detail, sizeof out->detail, fmt, ap);
    va_end(ap);
    out->result = r;
    return r;
}

/* spf_strv_free - free a resolver's string array */
static void spf_strv_free(char **v, int n)
{
    for (int i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

int spf_is_record(const char *txt)
{
    return strncasecmp(txt, "v=spf1", 6) == 0 && (txt[6] == '\0' || txt[6] == ' ');
}

int spf_addr_parse(const char *s, struct spf_addr *a)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    memset(a, 0, sizeof *a);
    if (inet_pton(AF_INET, s, a->b) == 1) {
        a->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, s, a->b) == 1) {
        a->family = AF_INET6;
        if (memcmp(a->b, mapped, sizeof mapped) == 0) {
            memmove(a->b, a->b + 12, 4);
            memset(a->b + 4, 0, 12);
            a->family = AF_INET;
        }
        return 0;
    }
    return -1;
}

/* spf_addr_in - 1 if ip lies in net/bits (same family), else 0 */
static int spf_addr_in(const struct spf_addr *ip, const struct spf_addr *net, int bits)
{
    if (ip->family != net->family) return 0;
    int full = bits / 8, rest = bits % 8;
    if (memcmp(ip->b, net->b, (size_t)full) != 0) return 0;
    if (rest == 0) return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (ip->b[full] & mask) == (net->b[full] & mask);
}

/* ---- macros (RFC 7208 7) ------------------------------------------------------- */

/* spf_macro_value - the raw value of macro letter ch (lower case) into buf; 0 or -1
 * when the letter is unknown or only valid in exp= */
static int spf_macro_value(const struct spf_ctx *c, const char *domain, int ch, char *buf, size_t n,
                           char *why, size_t whyn)
{
    switch (ch) {
    case 's':
        snprintf(buf, n, "%s", c->sender);
        return 0;
    case 'l':
        snprintf(buf, n, "%s", c->local);
        return 0;
    case 'o':
        snprintf(buf, n, "%s", c->sdomain);
        return 0;
    case 'd':
        snprintf(buf, n, "%s", domain);
        return 0;
    case 'h':
        snprintf(buf, n, "%s", c->helo);
        return 0;
    case 'p':
        snprintf(buf, n, "unknown");
        return 0; /* no lookup: deprecated, 7.3 */
    case 'v':
        snprintf(buf, n, "%s", c->ip.family == AF_INET ? "in-addr" : "ip6");
        return 0;
    case 'i':
        if (c->ip.family == AF_INET) {
            snprintf(buf, n, "%u.%u.%u.%u", c->ip.b[0], c->ip.b[1], c->ip.b[2], c->ip.b[3]);
        } else {
            /* dot-separated nibbles (7.3), so that r reverses them for ip6.arpa */
            static const char hex[] = "0123456789abcdef";
            size_t w = 0;
            for (int i = 0; i < 16 && w + 4 < n; i++) {
                buf[w++] = hex[c->ip.b[i] >> 4];
                buf[w++] = '.';
                buf[w++] = hex[c->ip.b[i] & 15];
                if (i < 15) buf[w++] = '.';
            }
            buf[w] = '\0';
        }
        return 0;
    case 'c':
    case 'r':
    case 't':
        snprintf(why, whyn, "macro %%{%c} is only allowed in exp=", ch);
        return -1;
    default:
        snprintf(why, whyn, "unknown macro letter '%c'", ch);
        return -1;
    }
}

/* spf_append - bounded append of n bytes; -1 when it would not fit */
static int spf_append(char *dst, size_t *len, size_t cap, const char *s, size_t n)
{
    if (*len + n + 1 > cap) return -1;
    memcpy(dst + *len, s, n);
    *len += n;
    dst[*len] = '\0';
    return 0;
}

/* spf_transform - split v at the delimiters, reverse if asked, keep the rightmost
 * keep parts (0 = all) and join them with dots, URL-escaping when upper; appends to
 * dst.  0 or -1 (too long). */
static int spf_transform(const char *v, const char *delims, int keep, int reverse, int upper,
                         char *dst, size_t *len, size_t cap)
{
    const char *part[SPF_EXPAND_MAX / 2 + 1];
    size_t plen[SPF_EXPAND_MAX / 2 + 1];
    int np = 0;
    const char *p = v;

    if (strlen(v) >= SPF_EXPAND_MAX) return -1;
    for (;;) {
        size_t k = strcspn(p, delims);
        part[np] = p;
        plen[np++] = k;
        if (p[k] == '\0') break;
        p += k + 1;
    }
    if (reverse)
        for (int i = 0; i < np / 2; i++) {
            const char *t = part[i];
            size_t tl = plen[i];
            part[i] = part[np - 1 - i];
            plen[i] = plen[np - 1 - i];
            part[np - 1 - i] = t;
            plen[np - 1 - i] = tl;
        }
    int first = (keep > 0 && keep < np) ? np - keep : 0;
    for (int i = first; i < np; i++) {
        if (i > first && spf_append(dst, len, cap, ".", 1) < 0) return -1;
        for (size_t j = 0; j < plen[i]; j++) {
            unsigned char ch = (unsigned char)part[i][j];
            char esc[4];
            if (upper && !(isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~')) {
                snprintf(esc, sizeof esc, "%%%02X", ch);
                if (spf_append(dst, len, cap, esc, 3) < 0) return -1;
            } else if (spf_append(dst, len, cap, (const char *)&ch, 1) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/*
 * spf_expand - expand the macro-string spec for domain into dst (cap bytes).  With
 * c NULL only the syntax is checked (parse time).  0, or -1 with why.
 */
static int spf_expand(const struct spf_ctx *c, const char *domain, const char *spec, char *dst,
                      size_t cap, char *why, size_t whyn)
{
    size_t len = 0;
    dst[0] = '\0';
    for (const char *p = spec; *p;) {
        unsigned char ch = (unsigned char)*p;
        if (ch != '%') {
            if (ch < 0x21 || ch > 0x7e) {
                snprintf(why, whyn, "invalid character 0x%02x in \"%s\"", ch, spec);
                return -1;
            }
            if (spf_append(dst, &len, cap, p, 1) < 0) goto toolong;
            p++;
            continue;
        }
        if (p[1] == '%' || p[1] == '_' || p[1] == '-') {
            const char *lit = p[1] == '%' ? "%" : p[1] == '_' ? " " : "%20";
            if (spf_append(dst, &len, cap, lit, strlen(lit)) < 0) goto toolong;
            p += 2;
            continue;
        }
        if (p[1] != '{' || !p[2]) {
            snprintf(why, whyn, "bad macro in \"%s\" (a lone %%)", spec);
            return -1;
        }
        int letter = (unsigned char)p[2];
        int upper = isupper(letter);
        const char *q = p + 3;
        int keep = 0, ndig = 0, reverse = 0;
        while (isdigit((unsigned char)*q)) {
            if (++ndig > 3) break;
            keep = keep * 10 + (*q++ - '0');
        }
        if (ndig > 3 || (ndig > 0 && keep == 0)) {
            snprintf(why, whyn, "bad macro transformer in \"%s\"", spec);
            return -1;
        }
        if (*q == 'r' || *q == 'R') {
            reverse = 1;
            q++;
        }
        char delims[16];
        size_t nd = 0;
        while (*q && strchr(".-+,/_=", *q) && nd + 1 < sizeof delims)
            delims[nd++] = *q++;
        delims[nd] = '\0';
        if (*q != '}') {
            snprintf(why, whyn, "bad macro in \"%s\"", spec);
            return -1;
        }
        char val[SPF_EXPAND_MAX];
        char mwhy[96];
        if (spf_macro_value(c ? c : &(struct spf_ctx){.ip.family = AF_INET}, domain,
                            tolower(letter), val, sizeof val, mwhy, sizeof mwhy) < 0) {
            snprintf(why, whyn, "%s in \"%s\"", mwhy, spec);
            return -1;
        }
        if (c && spf_transform(val, nd ? delims : ".", keep, reverse, upper, dst, &len, cap) < 0)
            goto toolong;
        p = q + 1;
    }
    return 0;
toolong:
    snprintf(why, whyn, "expansion of \"%s\" too long", spec);
    return -1;
}

/* spf_toplabel_ok - the last label of a domain-spec without macros is a valid
 * toplabel (RFC 7208 7.1: alphanumerics with at least one letter, or with inner
 * hyphens) */
static int spf_toplabel_ok(const char *spec)
{
    size_t n = strlen(spec);
    if (n > 0 && spec[n - 1] == '.') n--;
    size_t s = n;
    while (s > 0 && spec[s - 1] != '.')
        s--;
    if (s == 0 || s == n) return 0; /* no dot, or an empty label */
    int alpha = 0;
    for (size_t i = s; i < n; i++) {
        unsigned char ch = (unsigned char)spec[i];
        if (isalpha(ch))
            alpha = 1;
        else if (!isdigit(ch) && ch != '-')
            return 0;
    }
    return alpha && spec[s] != '-' && spec[n - 1] != '-';
}

/*
 * spf_target - expand spec (NULL: the current domain) into a domain name: macros,
 * then a trailing dot dropped and leading labels removed until it fits in 253
 * bytes (7.3).  0, or -1 with why (bad macro, empty label, label over 63).
 */
static int spf_target(const struct spf_ctx *c, const char *domain, const char *spec, char *dst,
                      size_t cap, char *why, size_t whyn)
{
    char buf[SPF_EXPAND_MAX];
    if (spf_expand(c, domain, spec ? spec : domain, buf, sizeof buf, why, whyn) < 0) return -1;
    size_t n = strlen(buf);
    if (n > 0 && buf[n - 1] == '.') buf[--n] = '\0';
    const char *p = buf;
    while (strlen(p) > SPF_NAME_MAX) {
        const char *dot = strchr(p, '.');
        if (!dot) break;
        p = dot + 1;
    }
    size_t lab = 0;
    for (const char *q = p;; q++) {
        if (*q == '.' || *q == '\0') {
            if (lab == 0 || lab > 63) {
                snprintf(why, whyn, "\"%s\" is not a valid domain name", p);
                return -1;
            }
            if (*q == '\0') break;
            lab = 0;
        } else {
            lab++;
        }
    }
    if (strlen(p) >= cap || strlen(p) > SPF_NAME_MAX) {
        snprintf(why, whyn, "\"%.60s...\" is too long for a domain name", p);
        return -1;
    }
    memcpy(dst, p, strlen(p) + 1);
    return 0;
}

/* ---- parsing ------------------------------------------------------------------- */

/* spf_cidr - parse "/N" digits at s (no leading zero) into *v, max at most; -1 bad */
static int spf_cidr(const char *s, int max, int *v)
{
    if (!isdigit((unsigned char)s[0]) || (s[0] == '0' && s[1])) return -1;
    int x = 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p) || p - s > 2) return -1;
        x = x * 10 + (*p - '0');
    }
    if (x > max) return -1;
    *v = x;
    return 0;
}

/* spf_split_cidr - cut "/N" and "//M" off the end of arg (in place) into t; 0 or -1 */
static int spf_split_cidr(char *arg, struct spf_term *t, int allow4, int allow6)
{
    char *dd = strstr(arg, "//");
    if (dd) {
        if (!allow6 || spf_cidr(dd + 2, 128, &t->cidr6) < 0) return -1;
        *dd = '\0';
    }
    char *sl = strrchr(arg, '/');
    if (sl) {
        if (!allow4 || spf_cidr(sl + 1, 32, &t->cidr4) < 0) return -1;
        *sl = '\0';
    }
    return 0;
}

/* spf_parse_term - one term into rec: 0 for a directive, 1 for a modifier, -1 with
 * why on a syntax error */
static int spf_parse_term(struct spf_record *rec, const char *text, char *work, char *why,
                          size_t whyn)
{
    /* modifier: name "=" macro-string, name = ALPHA *(ALPHA / DIGIT / - _ .) */
    size_t nl = 0;
    if (isalpha((unsigned char)work[0])) {
        nl = 1;
        while (isalnum((unsigned char)work[nl]) || work[nl] == '-' || work[nl] == '_' ||
               work[nl] == '.')
            nl++;
    }
    if (nl > 0 && work[nl] == '=') {
        char tmp[SPF_EXPAND_MAX];
        work[nl] = '\0';
        const char *val = work + nl + 1;
        if (strcasecmp(work, "redirect") == 0) {
            if (rec->redirect) {
                snprintf(why, whyn, "more than one redirect=");
                return -1;
            }
            if (spf_expand(NULL, "", val, tmp, sizeof tmp, why, whyn) < 0) return -1;
            if (!strchr(val, '%') && !spf_toplabel_ok(val)) {
                snprintf(why, whyn, "bad domain in \"%s\"", text);
                return -1;
            }
            rec->redirect = val;
        }
        /* exp= (checked for duplicates by spf_parse) and unknown modifiers are
         * ignored: explanations are for receivers (RFC 7208 6.2) */
        return 1; /* a modifier: not a directive */
    }

    struct spf_term *t = &rec->term[rec->nterm];
    memset(t, 0, sizeof *t);
    t->text = text;
    t->qual = '+';
    t->cidr4 = 32;
    t->cidr6 = 128;
    char *p = work;
    if (strchr("+-~?", *p)) t->qual = *p++;
    size_t ml = strcspn(p, ":/");
    char *arg = p[ml] ? p + ml : NULL; /* starts with ':' or '/' */
    char name[16];
    if (ml == 0 || ml >= sizeof name) goto unknown;
    memcpy(name, p, ml);
    name[ml] = '\0';

    if (strcasecmp(name, "all") == 0) {
        if (arg) goto bad;
        t->mech = SPF_M_ALL;
    } else if (strcasecmp(name, "include") == 0 || strcasecmp(name, "exists") == 0) {
        t->mech = tolower((unsigned char)name[0]) == 'i' ? SPF_M_INCLUDE : SPF_M_EXISTS;
        if (!arg || arg[0] != ':' || !arg[1]) goto bad;
        t->spec = arg + 1;
    } else if (strcasecmp(name, "a") == 0 || strcasecmp(name, "mx") == 0 ||
               strcasecmp(name, "ptr") == 0) {
        t->mech = strcasecmp(name, "a") == 0    ? SPF_M_A
                  : strcasecmp(name, "mx") == 0 ? SPF_M_MX
                                                : SPF_M_PTR;
        if (arg) {
            int is_ptr = t->mech == SPF_M_PTR;
            if (arg[0] == ':') {
                *arg++ = '\0';
                if (!is_ptr && spf_split_cidr(arg, t, 1, 1) < 0) goto bad;
                if (!*arg) goto bad;
                t->spec = arg;
            } else {
                if (is_ptr || spf_split_cidr(arg, t, 1, 1) < 0 || *arg) goto bad;
            }
        }
    } else if (strcasecmp(name, "ip4") == 0 || strcasecmp(name, "ip6") == 0) {
        int v6 = name[2] == '6';
        t->mech = v6 ? SPF_M_IP6 : SPF_M_IP4;
        if (!arg || arg[0] != ':') goto bad;
        arg++;
        char *sl = strchr(arg, '/');
        if (sl) {
            if (spf_cidr(sl + 1, v6 ? 128 : 32, v6 ? &t->cidr6 : &t->cidr4) < 0) goto bad;
            *sl = '\0';
        }
        t->net.family = v6 ? AF_INET6 : AF_INET;
        if (inet_pton(t->net.family, arg, t->net.b) != 1) goto bad;
    } else {
        goto unknown;
    }
    if (t->spec) {
        char tmp[SPF_EXPAND_MAX];
        if (spf_expand(NULL, "", t->spec, tmp, sizeof tmp, why, whyn) < 0) return -1;
        if (!strchr(t->spec, '%') && !spf_toplabel_ok(t->spec)) goto bad;
    }
    rec->nterm++;
    return 0;
unknown:
    snprintf(why, whyn, "unknown mechanism \"%s\"", text);
    return -1;
bad:
    snprintf(why, whyn, "syntax error in \"%s\"", text);
    return -1;
}

/* spf_record_free - release a parsed record */
static void spf_record_free(struct spf_record *rec)
{
    free(rec->orig);
    free(rec->work);
    free(rec->term);
    memset(rec, 0, sizeof *rec);
}

/*
 * spf_parse - the record txt ("v=spf1 ...") into rec (caller frees with
 * spf_record_free, also after failure).  0, or -1 with why: any syntax error
 * anywhere makes the whole record a permerror (RFC 7208 4.6).
 */
static int spf_parse(const char *txt, struct spf_record *rec, char *why, size_t whyn)
{
    memset(rec, 0, sizeof *rec);
    size_t n = strlen(txt);
    rec->orig = malloc(n + 1);
    rec->work = malloc(n + 1);
    rec->term = calloc(n / 2 + 1, sizeof *rec->term);
    if (!rec->orig || !rec->work || !rec->term) {
        snprintf(why, whyn, "out of memory");
        return -1;
    }
    memcpy(rec->orig, txt, n + 1);
    memcpy(rec->work, txt, n + 1);
    int nexp = 0;
    size_t i = 6; /* past "v=spf1" */
    while (i < n) {
        if (txt[i] == ' ') {
            i++;
            continue;
        }
        size_t k = strcspn(txt + i, " ");
        rec->orig[i + k] = '\0';
        rec->work[i + k] = '\0';
        const char *text = rec->orig + i;
        if (strncasecmp(text, "exp=", 4) == 0 && ++nexp > 1) {
            snprintf(why, whyn, "more than one exp=");
            return -1;
        }
        if (spf_parse_term(rec, text, rec->work + i, why, whyn) < 0) return -1;
        i += k;
    }
    return 0;
}

/* ---- evaluation ---------------------------------------------------------------- */

/* spf_count - one more DNS-querying term; permerror past the limit */
static int spf_count(struct spf_ctx *c, struct spf_outcome *out)
{
    if (++c->lookups > SPF_MAX_LOOKUPS) {
        spf_error(out, SPF_PERMERROR, "more than %d DNS lookups", SPF_MAX_LOOKUPS);
        return -1;
    }
    return 0;
}

/* spf_void - an answer with nothing in it; permerror past the void limit */
static int spf_void(struct spf_ctx *c, struct spf_outcome *out, const char *what)
{
    if (++c->voids > SPF_MAX_VOID_LOOKUPS) {
        spf_error(out, SPF_PERMERROR, "more than %d void lookups (last: %s)", SPF_MAX_VOID_LOOKUPS,
                  what);
        return -1;
    }
    return 0;
}

/*
 * spf_addrs - the addresses of name in the client's family (A or AAAA); 0 with
 * *out and *n (caller frees *out), -1 on a temporary DNS failure
 */
static int spf_addrs(struct spf_ctx *c, const char *name, int family, struct spf_addr **out, int *n)
{
    *out = NULL;
    *n = 0;
    int rc =
        family == AF_INET ? c->r->a(c->r->arg, name, out, n) : c->r->aaaa(c->r->arg, name, out, n);
    if (rc < 0 || *n <= 0) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

/* spf_match_addrs - 1 if any of addrs is in the client's network at the term's
 * CIDR length for its family */
static int spf_match_addrs(const struct spf_ctx *c, const struct spf_term *t,
                           const struct spf_addr *addrs, int n)
{
    int bits = c->ip.family == AF_INET ? t->cidr4 : t->cidr6;
    for (int i = 0; i < n; i++)
        if (spf_addr_in(&c->ip, &addrs[i], bits)) return 1;
    return 0;
}

/*
 * spf_mech_ptr - RFC 7208 5.5: the client's validated PTR names (a name whose
 * addresses include the client), at most SPF_MAX_PTR of them; match when one is
 * target or under it.  DNS errors make it not match, as the RFC says.
 */
static int spf_mech_ptr(struct spf_ctx *c, const char *target, struct spf_outcome *out)
{
    char **names = NULL;
    int n = 0, match = 0;

    if (!c->r->ptr) {
        c->ptr_skipped = 1;
        return 0;
    }
    if (c->r->ptr(c->r->arg, &c->ip, &names, &n) < 0) return 0;
    if (n <= 0) {
        spf_strv_free(names, n);
        return spf_void(c, out, "PTR") < 0 ? -1 : 0;
    }
    size_t tl = strlen(target);
    for (int i = 0; i < n && i < SPF_MAX_PTR && !match; i++) {
        struct spf_addr *addrs;
        int na;
        if (spf_addrs(c, names[i], c->ip.family, &addrs, &na) < 0) continue;
        size_t nl = strlen(names[i]);
        int under =
            strcasecmp(names[i], target) == 0 || (nl > tl && names[i][nl - tl - 1] == '.' &&
                                                  strcasecmp(names[i] + nl - tl, target) == 0);
        for (int j = 0; j < na && under && !match; j++)
            match = spf_addr_in(&c->ip, &addrs[j], c->ip.family == AF_INET ? 32 : 128);
        free(addrs);
    }
    spf_strv_free(names, n);
    return match;
}

/*
 * spf_mech - does term t of domain's record match?  1 yes, 0 no, -1 when the
 * evaluation ends here (out holds the temperror or permerror).
 */
static int spf_mech(struct spf_ctx *c, const char *domain, const struct spf_term *t,
                    struct spf_outcome *out)
{
    char target[SPF_NAME_MAX + 1], why[SPF_TEXT_MAX];
    struct spf_addr *addrs = NULL;
    int n = 0, match = 0;

    switch (t->mech) {
    case SPF_M_ALL:
        return 1;
    case SPF_M_IP4:
    case SPF_M_IP6:
        return spf_addr_in(&c->ip, &t->net, t->mech == SPF_M_IP4 ? t->cidr4 : t->cidr6);
    default:
        break;
    }
    if (spf_count(c, out) < 0) return -1;
    if (spf_target(c, domain, t->spec, target, sizeof target, why, sizeof why) < 0) {
        spf_error(out, SPF_PERMERROR, "%s: %s", t->text, why);
        return -1;
    }
    switch (t->mech) {
    case SPF_M_INCLUDE: {
        struct spf_outcome sub;
        memset(&sub, 0, sizeof sub);
        enum SPF_RESULT r = spf_check_host(c, target, &sub);
        switch (r) {
        case SPF_PASS:
            if (sub.detail[0])
                spf_setf(out->detail, "%s", sub.detail);
            else
                spf_setf(out->detail, "%s in %s", sub.mechanism, sub.where);
            return 1;
        case SPF_FAIL:
        case SPF_SOFTFAIL:
        case SPF_NEUTRAL:
            return 0;
        case SPF_NONE:
            spf_error(out, SPF_PERMERROR, "%s: %s has no SPF record", t->text, target);
            return -1;
        default:
            spf_error(out, r, "%s: %s", t->text, sub.detail);
            return -1;
        }
    }
    case SPF_M_A:
    case SPF_M_EXISTS: {
        /* exists always asks for A, whatever the client's family (5.7) */
        int fam = t->mech == SPF_M_EXISTS ? AF_INET : c->ip.family;
        if (spf_addrs(c, target, fam, &addrs, &n) < 0) {
            spf_error(out, SPF_TEMPERROR, "%s: DNS failure looking up %s %s", t->text,
                      fam == AF_INET ? "A" : "AAAA", target);
            return -1;
        }
        if (n == 0) return spf_void(c, out, target) < 0 ? -1 : 0;
        match = t->mech == SPF_M_EXISTS ? 1 : spf_match_addrs(c, t, addrs, n);
        free(addrs);
        return match;
    }
    case SPF_M_MX: {
        char **hosts = NULL;
        if (c->r->mx(c->r->arg, target, &hosts, &n) < 0) {
            spf_error(out, SPF_TEMPERROR, "%s: DNS failure looking up MX %s", t->text, target);
            return -1;
        }
        if (n <= 0) {
            spf_strv_free(hosts, n);
            return spf_void(c, out, target) < 0 ? -1 : 0;
        }
        if (n > SPF_MAX_MX) {
            spf_strv_free(hosts, n);
            spf_error(out, SPF_PERMERROR, "%s: %s has %d MX hosts (limit %d)", t->text, target, n,
                      SPF_MAX_MX);
            return -1;
        }
        for (int i = 0; i < n && !match; i++) {
            int na;
            if (!hosts[i][0]) continue; /* null MX "." */
            if (spf_addrs(c, hosts[i], c->ip.family, &addrs, &na) < 0) {
                spf_error(out, SPF_TEMPERROR, "%s: DNS failure looking up %s", t->text, hosts[i]);
                spf_strv_free(hosts, n);
                return -1;
            }
            match = spf_match_addrs(c, t, addrs, na);
            free(addrs);
        }
        spf_strv_free(hosts, n);
        return match;
    }
    case SPF_M_PTR:
        return spf_mech_ptr(c, target, out);
    default:
        return 0;
    }
}

/* spf_qual_result - the result a matching directive's qualifier gives */
static enum SPF_RESULT spf_qual_result(char q)
{
    switch (q) {
    case '-':
        return SPF_FAIL;
    case '~':
        return SPF_SOFTFAIL;
    case '?':
        return SPF_NEUTRAL;
    default:
        return SPF_PASS;
    }
}

/* spf_eval_terms - walk rec's directives, then its redirect; the result */
static enum SPF_RESULT spf_eval_terms(struct spf_ctx *c, const char *domain,
                                      const struct spf_record *rec, struct spf_outcome *out)
{
    for (int i = 0; i < rec->nterm; i++) {
        const struct spf_term *t = &rec->term[i];
        int m = spf_mech(c, domain, t, out);
        if (m < 0) {
            spf_setf(out->where, "%s", domain);
            return out->result;
        }
        if (m > 0) {
            spf_setf(out->mechanism, "%s", t->text);
            spf_setf(out->where, "%s", domain);
            out->result = spf_qual_result(t->qual);
            return out->result;
        }
    }
    if (rec->redirect) {
        char target[SPF_NAME_MAX + 1], why[SPF_TEXT_MAX];
        spf_setf(out->where, "%s", domain);
        if (spf_count(c, out) < 0) return out->result;
        if (spf_target(c, domain, rec->redirect, target, sizeof target, why, sizeof why) < 0)
            return spf_error(out, SPF_PERMERROR, "redirect=%s: %s", rec->redirect, why);
        enum SPF_RESULT r = spf_check_host(c, target, out);
        if (r == SPF_NONE)
            return spf_error(out, SPF_PERMERROR, "redirect=%s: %s has no SPF record", rec->redirect,
                             target);
        return r;
    }
    spf_setf(out->mechanism, "default");
    spf_setf(out->where, "%s", domain);
    out->result = SPF_NEUTRAL;
    return SPF_NEUTRAL;
}

/* spf_check_host - RFC 7208 4: find domain's record, parse it, evaluate it */
static enum SPF_RESULT spf_check_host(struct spf_ctx *c, const char *domain,
                                      struct spf_outcome *out)
{
    char **txt = NULL, why[SPF_TEXT_MAX];
    int n = 0, found = -1, nspf = 0;

    if (++c->depth > SPF_DEPTH_MAX) return spf_error(out, SPF_PERMERROR, "includes nest too deep");
    out->mechanism[0] = out->detail[0] = '\0';
    spf_setf(out->where, "%s", domain);
    if (c->r->txt(c->r->arg, domain, &txt, &n) < 0) {
        c->depth--;
        return spf_error(out, SPF_TEMPERROR, "DNS failure looking up TXT %s", domain);
    }
    for (int i = 0; i < n; i++)
        if (spf_is_record(txt[i])) {
            found = i;
            nspf++;
        }
    enum SPF_RESULT r;
    if (nspf == 0) {
        r = spf_error(out, SPF_NONE, "no SPF record at %s", domain);
    } else if (nspf > 1) {
        r = spf_error(out, SPF_PERMERROR, "%d SPF records at %s (want one)", nspf, domain);
    } else if (strlen(txt[found]) > SPF_RECORD_MAX) {
        r = spf_error(out, SPF_PERMERROR, "SPF record at %s is too long", domain);
    } else {
        struct spf_record rec;
        if (spf_parse(txt[found], &rec, why, sizeof why) < 0)
            r = spf_error(out, SPF_PERMERROR, "%s: %s", domain, why);
        else
            r = spf_eval_terms(c, domain, &rec, out);
        spf_record_free(&rec);
    }
    spf_strv_free(txt, n);
    c->depth--;
    return r;
}

int spf_check(const struct spf_resolver *r, const struct spf_request *req, struct spf_outcome *out)
{
    struct spf_ctx c;
    char domain[SPF_NAME_MAX + 1];

    memset(out, 0, sizeof *out);
    memset(&c, 0, sizeof c);
    c.r = r;
    if (spf_addr_parse(req->ip ? req->ip : "", &c.ip) < 0) {
        spf_setf(out->detail, "\"%s\" is not an IP address", req->ip ? req->ip : "");
        return -1;
    }
    if (!req->domain || !*req->domain || strlen(req->domain) > SPF_NAME_MAX) {
        spf_setf(out->detail, "no domain to check");
        return -1;
    }
    snprintf(domain, sizeof domain, "%s", req->domain);
    size_t dl = strlen(domain);
    if (dl > 1 && domain[dl - 1] == '.') domain[dl - 1] = '\0';
    if (req->sender && *req->sender && strchr(req->sender, '@'))
        snprintf(c.sender, sizeof c.sender, "%s", req->sender);
    else
        snprintf(c.sender, sizeof c.sender, "postmaster@%s", domain);
    const char *at = strrchr(c.sender, '@');
    snprintf(c.local, sizeof c.local, "%.*s", (int)(at - c.sender), c.sender);
    if (!c.local[0]) snprintf(c.local, sizeof c.local, "postmaster");
    snprintf(c.sdomain, sizeof c.sdomain, "%s", at + 1);
    snprintf(c.helo, sizeof c.helo, "%s", req->helo && *req->helo ? req->helo : domain);

    /* RFC 7208 4.3: a malformed domain gives none without a lookup */
    char why[SPF_TEXT_MAX], check[SPF_NAME_MAX + 1];
    if (strchr(domain, '%') ||
        spf_target(&c, domain, domain, check, sizeof check, why, sizeof why) < 0 ||
        !strchr(check, '.')) {
        spf_setf(out->where, "%s", domain);
        spf_error(out, SPF_NONE, "\"%s\" is not a fully qualified domain name", domain);
    } else {
        spf_check_host(&c, domain, out);
    }
    out->lookups = c.lookups;
    out->void_lookups = c.voids;
    if (c.ptr_skipped && !out->detail[0]) spf_setf(out->detail, "ptr not evaluated (deprecated)");
    return 0;
}
