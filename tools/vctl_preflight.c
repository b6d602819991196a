/*
 * vctl_preflight - `volleyctl check-domain DOMAIN [--source IP]... [--selector S]...
 * [--dkim-key FILE] [--json]`: is DOMAIN ready to send from this installation?
 *
 * Owns the five checks and their rendering.  Each check adds rows (check,
 * subject, result pass/fail/warn/skip, detail) to one table:
 *   dkim    per selector (given, else the dkim.keys entries of DOMAIN): the TXT at
 *           SELECTOR._domainkey.DOMAIN carries the public half of the private key
 *           volleyd signs with (--dkim-key FILE checks a key before it is deployed);
 *   spf     per source address: RFC 7208 evaluation (src/spf.h) of DOMAIN's record
 *           for postmaster@DOMAIN from that address, EHLO as %{h};
 *   dmarc   _dmarc.DOMAIN, else _dmarc of the organizational domain (Public
 *           Suffix List, libpsl);
 *   ptr     per source: forward-confirmed reverse DNS, and the name against EHLO;
 *   bounce  feedback.bounce_domain and DOMAIN's feedback.bounce_domains entry can
 *           receive mail (MX, or an address for the implicit MX).
 * Source addresses: --source, else the shaping rules' sources, else
 * delivery.source_address; each with its EHLO name (the shaping source's ehlo,
 * else delivery.helo_name).
 *
 * DNS goes through src/dnsq.h with dns.servers, dns.timeout_ms and dns.tries from
 * the config, as the daemon resolves.  Entry points: vctl_preflight_cmd(),
 * vctl_preflight_main().  Exit: 0 when no row failed, 1 when one did (or the
 * config could not be read), 2 on bad usage, found before any file or DNS.
 *
 * Text from DNS reaches the terminal only through vctl_clean_line(); --json goes
 * through jansson, which escapes controls.
 */
#include "vctl_preflight.h"

#include "conf.h"
#include "dkim.h"
#include "dnsq.h"
#include "shape.h"
#include "spf.h"
#include "util.h"
#include "vctl_feedback.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <libpsl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define VCTL_PF_EXIT_OK    0
#define VCTL_PF_EXIT_FAIL  1
#define VCTL_PF_MAX_ARGS   32 /* --source / --selector values */
#define VCTL_PF_MAX_ROWS   256
#define VCTL_PF_DETAIL_MAX 640
#define VCTL_PF_NAME_MAX   253

enum VCTL_PF_RESULT { VCTL_PF_PASS, VCTL_PF_FAIL, VCTL_PF_WARN, VCTL_PF_SKIP };

/* vctl_pf_result_str - "pass", "fail", "warn", "skip" */
static const char *vctl_pf_result_str(enum VCTL_PF_RESULT r)
{
    switch (r) {
    case VCTL_PF_PASS:
        return "pass";
    case VCTL_PF_FAIL:
        return "fail";
    case VCTL_PF_WARN:
        return "warn";
    case VCTL_PF_SKIP:
        return "skip";
    }
    return "?";
}

struct vctl_pf_row {
    const char *check;
    char subject[VCTL_PF_NAME_MAX + 64];
    enum VCTL_PF_RESULT result;
    char detail[VCTL_PF_DETAIL_MAX];
};

/* A source address to check, with the EHLO name it uses. */
struct vctl_pf_source {
    char addr[64];
    char ehlo[256];
};

struct vctl_pf {
    const char *domain; /* lower case, no trailing dot */
    const char *sources_opt[VCTL_PF_MAX_ARGS];
    int nsources_opt;
    const char *selectors_opt[VCTL_PF_MAX_ARGS];
    int nselectors_opt;
    const char *dkim_key;
    int json;
    struct conf *conf;
    struct dnsq *dq;
    struct vctl_pf_source src[VCTL_PF_MAX_ARGS];
    int nsrc;
    struct vctl_pf_row rows[VCTL_PF_MAX_ROWS];
    int nrows;
};

/* vctl_pf_add - one row of the table (rows past the cap are dropped: a config
 * cannot name that many sources and selectors) */
static void vctl_pf_add(struct vctl_pf *pf, const char *check, const char *subject,
                        enum VCTL_PF_RESULT r, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void vctl_pf_add(struct vctl_pf *pf, const char *check, const char *subject,
                        enum VCTL_PF_RESULT r, const char *fmt, ...)
{
    if (pf->nrows >= VCTL_PF_MAX_ROWS) return;
    struct vctl_pf_row *row = &pf->rows[pf->nrows++];
    va_list ap;
    row->check = check;
    snprintf(row->subject, sizeof row->subject, "%s", subject);
    row->result = r;
    va_start(ap, fmt);
    vsnprintf(row->detail, sizeof row->detail, fmt, ap);
    va_end(ap);
}

/* vctl_pf_strv_free - free a dnsq string array */
static void vctl_pf_strv_free(char **v, int n)
{
    for (int i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* vctl_pf_domain_ok - a plausible domain name: LDH labels of 1..63, <= 253 */
static int vctl_pf_domain_ok(const char *d)
{
    size_t n = strlen(d), lab = 0;
    if (n == 0 || n > VCTL_PF_NAME_MAX) return 0;
    for (size_t i = 0; i <= n; i++) {
        if (d[i] == '.' || d[i] == '\0') {
            if (lab == 0 || lab > 63) return 0;
            lab = 0;
        } else if (isalnum((unsigned char)d[i]) || d[i] == '-' || d[i] == '_') {
            lab++;
        } else {
            return 0;
        }
    }
    return strchr(d, '.') != NULL;
}

/* ---- the SPF resolver over dnsq ---------------------------------------------- */

static int vctl_pf_spf_txt(void *arg, const char *name, char ***out, int *n)
{
    return dnsq_txt(arg, name, out, n);
}

static int vctl_pf_spf_mx(void *arg, const char *name, char ***out, int *n)
{
    return dnsq_mx(arg, name, out, n);
}

/* vctl_pf_spf_addrs - A or AAAA through dnsq as struct spf_addr */
static int vctl_pf_spf_addrs(struct dnsq *dq, const char *name, int family, struct spf_addr **out,
                             int *n)
{
    void *raw = NULL;
    int rc, cnt = 0;
    *out = NULL;
    *n = 0;
    if (family == AF_INET)
        rc = dnsq_a(dq, name, (struct in_addr **)&raw, &cnt);
    else
        rc = dnsq_aaaa(dq, name, (struct in6_addr **)&raw, &cnt);
    if (rc < 0 || cnt <= 0) {
        free(raw);
        return rc;
    }
    struct spf_addr *v = calloc((size_t)cnt, sizeof *v);
    if (!v) {
        free(raw);
        return -1;
    }
    size_t sz = family == AF_INET ? 4 : 16;
    for (int i = 0; i < cnt; i++) {
        v[i].family = family;
        memcpy(v[i].b, (unsigned char *)raw + (size_t)i * sz, sz);
    }
    free(raw);
    *out = v;
    *n = cnt;
    return 0;
}

static int vctl_pf_spf_a(void *arg, const char *name, struct spf_addr **out, int *n)
{
    return vctl_pf_spf_addrs(arg, name, AF_INET, out, n);
}

static int vctl_pf_spf_aaaa(void *arg, const char *name, struct spf_addr **out, int *n)
{
    return vctl_pf_spf_addrs(arg, name, AF_INET6, out, n);
}

static int vctl_pf_spf_ptr(void *arg, const struct spf_addr *a, char ***out, int *n)
{
    return dnsq_ptr(arg, a->family, a->b, out, n);
}

/* ---- DKIM ---------------------------------------------------------------------- */

/* vctl_pf_dkim_one - compare the record at selector._domainkey.domain with the key
 * at path (NULL: only check that a key is published) */
static void vctl_pf_dkim_one(struct vctl_pf *pf, const char *selector, const char *path)
{
    char name[VCTL_PF_NAME_MAX + 80], err[512];
    char **txt = NULL;
    int n = 0, found = -1, nkey = 0;

    snprintf(name, sizeof name, "%s._domainkey.%s", selector, pf->domain);
    if (dnsq_txt(pf->dq, name, &txt, &n) < 0) {
        vctl_pf_add(pf, "dkim", selector, VCTL_PF_FAIL, "DNS failure: %s", dnsq_error(pf->dq));
        return;
    }
    /* a key record: v=DKIM1 first, or (v= is optional) a p= tag somewhere */
    for (int i = 0; i < n; i++)
        if (strncasecmp(txt[i], "v=DKIM1", 7) == 0 || strstr(txt[i], "p=")) {
            found = i;
            nkey++;
        }
    if (nkey == 0) {
        vctl_pf_add(pf, "dkim", selector, VCTL_PF_FAIL, "no DKIM record at %s", name);
    } else if (nkey > 1) {
        vctl_pf_add(pf, "dkim", selector, VCTL_PF_FAIL, "%d DKIM records at %s (want one)", nkey,
                    name);
    } else if (!path) {
        vctl_pf_add(pf, "dkim", selector, VCTL_PF_WARN,
                    "record published at %s; no private key to compare it with "
                    "(dkim.keys or --dkim-key)",
                    name);
    } else {
        struct dkim_key *k = dkim_key_load(path, pf->domain, selector, err, sizeof err);
        if (!k) {
            vctl_pf_add(pf, "dkim", selector, VCTL_PF_FAIL, "%s", err);
        } else {
            char why[256] = "";
            int m = dkim_key_matches_record(k, txt[found], why, sizeof why);
            if (m == 1)
                vctl_pf_add(pf, "dkim", selector, VCTL_PF_PASS, "%s matches %s (%s, %d bits)", name,
                            path, dkim_alg_str(dkim_key_alg(k)), dkim_key_bits(k));
            else
                vctl_pf_add(pf, "dkim", selector, VCTL_PF_FAIL, "%s %s: %s", name,
                            m == 0 ? "does not match the key" : "is malformed", why[0] ? why : "?");
            dkim_key_free(k);
        }
    }
    vctl_pf_strv_free(txt, n);
}

/* vctl_pf_dkim_entry - the key path of dkim.keys entry e ("domain:selector:/path")
 * when it is for DOMAIN, with *sel and *sl its selector; else NULL */
static const char *vctl_pf_dkim_entry(const struct vctl_pf *pf, const char *e, const char **sel,
                                      size_t *sl)
{
    const char *c1 = strchr(e, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2 || (size_t)(c1 - e) != strlen(pf->domain) ||
        strncasecmp(e, pf->domain, (size_t)(c1 - e)) != 0)
        return NULL;
    *sel = c1 + 1;
    *sl = (size_t)(c2 - c1 - 1);
    return c2 + 1;
}

/*
 * vctl_pf_dkim - the selectors given (with --dkim-key, or the dkim.keys key of the
 * same selector), else every dkim.keys entry "domain:selector:/path" of DOMAIN
 */
static void vctl_pf_dkim(struct vctl_pf *pf)
{
    int any = 0;
    const struct conf *c = pf->conf;
    const char *sel, *key;
    size_t sl;

    for (int s = 0; s < pf->nselectors_opt; s++) {
        const char *path = pf->dkim_key;
        for (int i = 0; !path && i < c->dkim_keys_count; i++) {
            key = vctl_pf_dkim_entry(pf, c->dkim_keys[i], &sel, &sl);
            if (key && sl == strlen(pf->selectors_opt[s]) &&
                strncmp(sel, pf->selectors_opt[s], sl) == 0)
                path = key;
        }
        vctl_pf_dkim_one(pf, pf->selectors_opt[s], path);
        any = 1;
    }
    for (int i = 0; !pf->nselectors_opt && i < c->dkim_keys_count; i++) {
        char selbuf[128];
        key = vctl_pf_dkim_entry(pf, c->dkim_keys[i], &sel, &sl);
        if (!key) continue;
        snprintf(selbuf, sizeof selbuf, "%.*s", (int)sl, sel);
        vctl_pf_dkim_one(pf, selbuf, key);
        any = 1;
    }
    if (!any)
        vctl_pf_add(pf, "dkim", pf->domain, VCTL_PF_SKIP,
                    "no selector: no dkim.keys entry for this domain and no --selector");
}

/* ---- SPF ----------------------------------------------------------------------- */

/* vctl_pf_spf_record_only - with no source to evaluate, at least the record */
static void vctl_pf_spf_record_only(struct vctl_pf *pf)
{
    char **txt = NULL;
    int n = 0, nspf = 0;
    if (dnsq_txt(pf->dq, pf->domain, &txt, &n) < 0) {
        vctl_pf_add(pf, "spf", pf->domain, VCTL_PF_FAIL, "temperror: %s", dnsq_error(pf->dq));
        return;
    }
    for (int i = 0; i < n; i++)
        nspf += spf_is_record(txt[i]);
    if (nspf == 0)
        vctl_pf_add(pf, "spf", pf->domain, VCTL_PF_FAIL, "no SPF record");
    else if (nspf > 1)
        vctl_pf_add(pf, "spf", pf->domain, VCTL_PF_FAIL, "permerror: %d SPF records", nspf);
    else
        vctl_pf_add(pf, "spf", pf->domain, VCTL_PF_SKIP, "no source address to check");
    vctl_pf_strv_free(txt, n);
}

/* vctl_pf_spf - evaluate DOMAIN's SPF record for every source */
static void vctl_pf_spf(struct vctl_pf *pf)
{
    struct spf_resolver r = {vctl_pf_spf_txt, vctl_pf_spf_a,   vctl_pf_spf_aaaa,
                             vctl_pf_spf_mx,  vctl_pf_spf_ptr, pf->dq};
    if (pf->nsrc == 0) {
        vctl_pf_spf_record_only(pf);
        return;
    }
    for (int i = 0; i < pf->nsrc; i++) {
        struct spf_request q = {pf->src[i].addr, pf->domain, NULL, pf->src[i].ehlo};
        struct spf_outcome o;
        if (spf_check(&r, &q, &o) < 0) {
            vctl_pf_add(pf, "spf", pf->src[i].addr, VCTL_PF_FAIL, "%s", o.detail);
            continue;
        }
        if (o.result == SPF_NONE) {
            vctl_pf_add(pf, "spf", pf->src[i].addr, VCTL_PF_FAIL, "no SPF record");
            continue;
        }
        char what[SPF_TEXT_MAX * 2 + 16] = "";
        if (o.mechanism[0]) snprintf(what, sizeof what, " %s (%s)", o.mechanism, o.where);
        vctl_pf_add(pf, "spf", pf->src[i].addr, o.result == SPF_PASS ? VCTL_PF_PASS : VCTL_PF_FAIL,
                    "%s:%s%s%s; %d/%d lookups", spf_result_str(o.result), what,
                    o.detail[0] ? (o.mechanism[0] ? " - " : " ") : "", o.detail, o.lookups,
                    SPF_MAX_LOOKUPS);
    }
}

/* ---- DMARC --------------------------------------------------------------------- */

/* vctl_pf_dmarc_tag - the value of tag in a DMARC record into out ("" if absent) */
static void vctl_pf_dmarc_tag(const char *rec, const char *tag, char *out, size_t n)
{
    size_t tl = strlen(tag);
    out[0] = '\0';
    for (const char *p = rec; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > tl && strncasecmp(p, tag, tl) == 0) {
            const char *v = p + tl;
            while (*v == ' ' || *v == '\t')
                v++;
            if (*v == '=') {
                v++;
                while (*v == ' ' || *v == '\t')
                    v++;
                size_t vl = (size_t)(p + len - v);
                while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                    vl--;
                snprintf(out, n, "%.*s", (int)vl, v);
                return;
            }
        }
        p = end;
    }
}

/* vctl_pf_dmarc_lookup - the DMARC records at _dmarc.dom: 1 found (*rec malloc'd),
 * 0 none, -1 DNS failure, -2 several records */
static int vctl_pf_dmarc_lookup(struct vctl_pf *pf, const char *dom, char **rec)
{
    char name[VCTL_PF_NAME_MAX + 16];
    char **txt = NULL;
    int n = 0, cnt = 0;
    *rec = NULL;
    snprintf(name, sizeof name, "_dmarc.%s", dom);
    if (dnsq_txt(pf->dq, name, &txt, &n) < 0) return -1;
    for (int i = 0; i < n; i++)
        if (strncasecmp(txt[i], "v=DMARC1", 8) == 0 &&
            (txt[i][8] == ';' || txt[i][8] == ' ' || txt[i][8] == '\0')) {
            cnt++;
            if (!*rec) *rec = xstrdup(txt[i]);
        }
    vctl_pf_strv_free(txt, n);
    if (cnt > 1) {
        free(*rec);
        *rec = NULL;
        return -2;
    }
    return cnt;
}

/*
 * vctl_pf_org_domain - DOMAIN's organizational domain (RFC 7489 3.2: its
 * registrable domain by the Public Suffix List) into out; 0 if it is DOMAIN itself
 * or a public suffix.  libpsl takes the newer of its built-in list and Debian's
 * publicsuffix file, so example.co.uk is an organizational domain, not co.uk.
 */
static int vctl_pf_org_domain(const char *domain, char *out, size_t n)
{
    char lower[256];
    if (str_copy(lower, sizeof lower, domain) < 0) return 0;
    str_lower(lower);
    psl_ctx_t *latest = psl_latest(NULL);
    const psl_ctx_t *psl = latest ? latest : psl_builtin();
    const char *reg = psl ? psl_registrable_domain(psl, lower) : NULL;
    int found = reg && strcmp(reg, lower) != 0 && str_copy(out, n, reg) == 0;
    psl_free(latest);
    return found;
}

/*
 * vctl_pf_dmarc - the policy for DOMAIN: the record at _dmarc.DOMAIN, else the one
 * of its organizational domain, whose sp= then applies.
 */
static void vctl_pf_dmarc(struct vctl_pf *pf)
{
    char *rec = NULL, orgd[256];
    const char *at = pf->domain;
    int rc = vctl_pf_dmarc_lookup(pf, pf->domain, &rec), org = 0;

    if (rc == 0 && vctl_pf_org_domain(pf->domain, orgd, sizeof orgd)) {
        at = orgd;
        org = 1;
        rc = vctl_pf_dmarc_lookup(pf, orgd, &rec);
    }
    if (rc == -1) {
        vctl_pf_add(pf, "dmarc", pf->domain, VCTL_PF_FAIL, "DNS failure: %s", dnsq_error(pf->dq));
        return;
    }
    if (rc == -2) {
        vctl_pf_add(pf, "dmarc", pf->domain, VCTL_PF_FAIL, "several DMARC records at _dmarc.%s",
                    at);
        return;
    }
    if (rc == 0) {
        vctl_pf_add(pf, "dmarc", pf->domain, VCTL_PF_FAIL, "no DMARC record");
        return;
    }
    char p[32], sp[32], pct[16], rua[256];
    vctl_pf_dmarc_tag(rec, "p", p, sizeof p);
    vctl_pf_dmarc_tag(rec, "sp", sp, sizeof sp);
    vctl_pf_dmarc_tag(rec, "pct", pct, sizeof pct);
    vctl_pf_dmarc_tag(rec, "rua", rua, sizeof rua);
    /* a subdomain under its organizational domain's record gets sp= (else p=) */
    const char *eff = org && sp[0] ? sp : p;
    enum VCTL_PF_RESULT r = VCTL_PF_PASS;
    if (!p[0] ||
        (strcasecmp(eff, "none") && strcasecmp(eff, "quarantine") && strcasecmp(eff, "reject")))
        r = VCTL_PF_FAIL;
    else if (strcasecmp(eff, "none") == 0 || !rua[0])
        r = VCTL_PF_WARN; /* monitoring only, or nobody reads the reports */
    vctl_pf_add(pf, "dmarc", pf->domain, r, "%sp=%s sp=%s pct=%s rua=%s at _dmarc.%s%s",
                !p[0] ? "no p= tag; " : "", p[0] ? p : "-", sp[0] ? sp : "-", pct[0] ? pct : "100",
                rua[0] ? "yes" : "no", at, org ? " (organizational domain)" : "");
    free(rec);
}

/* ---- PTR ----------------------------------------------------------------------- */

/* vctl_pf_resolves_to - 1 if name has an address equal to a (same family) */
static int vctl_pf_resolves_to(struct vctl_pf *pf, const char *name, const struct spf_addr *a)
{
    struct spf_addr *v = NULL;
    int n = 0, hit = 0;
    if (vctl_pf_spf_addrs(pf->dq, name, a->family, &v, &n) < 0) return 0;
    for (int i = 0; i < n && !hit; i++)
        hit = memcmp(v[i].b, a->b, a->family == AF_INET ? 4 : 16) == 0;
    free(v);
    return hit;
}

/* vctl_pf_ptr - forward-confirmed reverse DNS of every source, and its EHLO name */
static void vctl_pf_ptr(struct vctl_pf *pf)
{
    if (pf->nsrc == 0) {
        vctl_pf_add(pf, "ptr", pf->domain, VCTL_PF_SKIP, "no source address to check");
        return;
    }
    for (int i = 0; i < pf->nsrc; i++) {
        const struct vctl_pf_source *s = &pf->src[i];
        struct spf_addr a;
        char **names = NULL;
        int n = 0;
        spf_addr_parse(s->addr, &a);
        if (dnsq_ptr(pf->dq, a.family, a.b, &names, &n) < 0) {
            vctl_pf_add(pf, "ptr", s->addr, VCTL_PF_FAIL, "DNS failure: %s", dnsq_error(pf->dq));
            continue;
        }
        if (n == 0) {
            vctl_pf_add(pf, "ptr", s->addr, VCTL_PF_FAIL, "no PTR record");
            continue;
        }
        const char *confirmed = NULL;
        for (int j = 0; j < n && !confirmed; j++)
            if (vctl_pf_resolves_to(pf, names[j], &a)) confirmed = names[j];
        if (!confirmed) {
            vctl_pf_add(pf, "ptr", s->addr, VCTL_PF_FAIL,
                        "PTR %s does not resolve back to %s (not forward-confirmed)", names[0],
                        s->addr);
        } else if (!s->ehlo[0]) {
            vctl_pf_add(pf, "ptr", s->addr, VCTL_PF_WARN,
                        "PTR %s confirmed; no EHLO name configured to compare", confirmed);
        } else if (strcasecmp(confirmed, s->ehlo) != 0) {
            vctl_pf_add(pf, "ptr", s->addr, VCTL_PF_WARN, "PTR %s confirmed but EHLO name is %s",
                        confirmed, s->ehlo);
        } else {
            vctl_pf_add(pf, "ptr", s->addr, VCTL_PF_PASS, "PTR %s confirmed, matches EHLO",
                        confirmed);
        }
        vctl_pf_strv_free(names, n);
    }
}

/* ---- bounce domain ------------------------------------------------------------- */

/* vctl_pf_bounce_one - can bdom receive mail: MX, or an address (implicit MX) */
static void vctl_pf_bounce_one(struct vctl_pf *pf, const char *bdom)
{
    char **mx = NULL;
    int n = 0;
    if (dnsq_mx(pf->dq, bdom, &mx, &n) < 0) {
        vctl_pf_add(pf, "bounce", bdom, VCTL_PF_FAIL, "DNS failure: %s", dnsq_error(pf->dq));
        return;
    }
    if (n == 1 && !mx[0][0]) {
        vctl_pf_add(pf, "bounce", bdom, VCTL_PF_FAIL, "null MX: the domain accepts no mail");
    } else if (n > 0) {
        char list[VCTL_PF_DETAIL_MAX - 16] = "";
        size_t w = 0;
        for (int i = 0; i < n && w < sizeof list; i++)
            w += (size_t)snprintf(list + w, sizeof list - w, "%s%s", i ? ", " : "",
                                  mx[i][0] ? mx[i] : ".");
        vctl_pf_add(pf, "bounce", bdom, VCTL_PF_PASS, "MX %s", list);
    } else {
        struct spf_addr *v = NULL;
        int na = 0;
        int rc = vctl_pf_spf_addrs(pf->dq, bdom, AF_INET, &v, &na);
        free(v);
        if (rc == 0 && na == 0) {
            rc = vctl_pf_spf_addrs(pf->dq, bdom, AF_INET6, &v, &na);
            free(v);
        }
        if (rc < 0)
            vctl_pf_add(pf, "bounce", bdom, VCTL_PF_FAIL, "DNS failure: %s", dnsq_error(pf->dq));
        else if (na > 0)
            vctl_pf_add(pf, "bounce", bdom, VCTL_PF_PASS, "no MX; an address (implicit MX)");
        else
            vctl_pf_add(pf, "bounce", bdom, VCTL_PF_FAIL,
                        "no MX and no address: bounces "
                        "cannot come back");
    }
    vctl_pf_strv_free(mx, n);
}

/* vctl_pf_bounce - feedback.bounce_domain and DOMAIN's feedback.bounce_domains one */
static void vctl_pf_bounce(struct vctl_pf *pf)
{
    const struct conf *c = pf->conf;
    const char *bd[2] = {NULL, NULL};
    int nbd = 0;
    if (c->feedback_bounce_domain && c->feedback_bounce_domain[0])
        bd[nbd++] = c->feedback_bounce_domain;
    for (int i = 0; i < c->feedback_bounce_domains_count; i++) {
        const char *e = c->feedback_bounce_domains[i], *eq = strchr(e, '=');
        if (eq && (size_t)(eq - e) == strlen(pf->domain) &&
            strncasecmp(e, pf->domain, (size_t)(eq - e)) == 0 &&
            (nbd == 0 || strcasecmp(bd[0], eq + 1) != 0)) {
            bd[nbd++] = eq + 1;
            break;
        }
    }
    if (nbd == 0)
        vctl_pf_add(pf, "bounce", pf->domain, VCTL_PF_SKIP, "no bounce domain configured");
    for (int i = 0; i < nbd; i++)
        vctl_pf_bounce_one(pf, bd[i]);
}

/* ---- sources, arguments, output ------------------------------------------------ */

/* vctl_pf_add_source - one source (deduplicated); its EHLO from the shaping source
 * with that address, else delivery.helo_name */
static void vctl_pf_add_source(struct vctl_pf *pf, const char *addr, const char *ehlo)
{
    for (int i = 0; i < pf->nsrc; i++)
        if (strcmp(pf->src[i].addr, addr) == 0) return;
    if (pf->nsrc >= VCTL_PF_MAX_ARGS) return;
    struct vctl_pf_source *s = &pf->src[pf->nsrc++];
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    snprintf(s->ehlo, sizeof s->ehlo, "%s",
             ehlo && *ehlo                  ? ehlo
             : pf->conf->delivery_helo_name ? pf->conf->delivery_helo_name
                                            : "");
}

/* vctl_pf_sources - --source, else the shaping sources, else delivery.source_address;
 * 0, or -1 after an error message (unreadable rules file) */
static int vctl_pf_sources(struct vctl_pf *pf)
{
    char err[1024];
    struct shape_rules *rules = NULL;
    if (pf->conf->shaping_rules_file && pf->conf->shaping_rules_file[0]) {
        rules = shape_rules_load(pf->conf->shaping_rules_file, err, sizeof err);
        if (!rules) {
            fprintf(stderr, "volleyctl: %s\n", err);
            return -1;
        }
    }
    int ns = rules ? shape_nsources(rules) : 0;
    for (int i = 0; i < pf->nsources_opt; i++) {
        const char *ehlo = NULL;
        struct spf_addr a, b;
        spf_addr_parse(pf->sources_opt[i], &a);
        for (int j = 0; j < ns && !ehlo; j++) {
            const struct shape_source *s = shape_source(rules, j);
            if (spf_addr_parse(s->address, &b) == 0 && a.family == b.family &&
                memcmp(a.b, b.b, 16) == 0)
                ehlo = s->ehlo;
        }
        vctl_pf_add_source(pf, pf->sources_opt[i], ehlo);
    }
    for (int j = 0; pf->nsources_opt == 0 && j < ns; j++) {
        const struct shape_source *s = shape_source(rules, j);
        if (s->address[0]) vctl_pf_add_source(pf, s->address, s->ehlo);
    }
    if (pf->nsrc == 0 && pf->conf->delivery_source_address && pf->conf->delivery_source_address[0])
        vctl_pf_add_source(pf, pf->conf->delivery_source_address, NULL);
    if (rules) shape_rules_free(rules);
    return 0;
}

/* vctl_pf_parse - the command line; exits 2 on bad usage */
static void vctl_pf_parse(int argc, char **argv, struct vctl_pf *pf, char *domain, size_t dn)
{
    const char *val, *dom = NULL;
    int opts_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!opts_done && strcmp(arg, "--") == 0) {
            opts_done = 1;
        } else if (!opts_done && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)) {
            vctl_usage_exit();
        } else if (!opts_done && strcmp(arg, "--json") == 0) {
            if (pf->json) vctl_usage_error("--json given twice");
            pf->json = 1;
        } else if (!opts_done && vctl_optval("--source", argc, argv, &i, &val)) {
            struct spf_addr a;
            if (spf_addr_parse(val, &a) < 0)
                vctl_usage_error("check-domain: --source \"%s\" is not an IP address", val);
            if (pf->nsources_opt >= VCTL_PF_MAX_ARGS)
                vctl_usage_error("check-domain: at most %d --source", VCTL_PF_MAX_ARGS);
            pf->sources_opt[pf->nsources_opt++] = val;
        } else if (!opts_done && vctl_optval("--selector", argc, argv, &i, &val)) {
            size_t l = strlen(val);
            if (l == 0 || l > 63 ||
                strspn(val, "abcdefghijklmnopqrstuvwxyz"
                            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != l)
                vctl_usage_error("check-domain: bad --selector \"%s\"", val);
            if (pf->nselectors_opt >= VCTL_PF_MAX_ARGS)
                vctl_usage_error("check-domain: at most %d --selector", VCTL_PF_MAX_ARGS);
            pf->selectors_opt[pf->nselectors_opt++] = val;
        } else if (!opts_done && vctl_optval("--dkim-key", argc, argv, &i, &val)) {
            if (pf->dkim_key) vctl_usage_error("--dkim-key given twice");
            if (!*val) vctl_usage_error("--dkim-key needs a file");
            pf->dkim_key = val;
        } else if (!opts_done && arg[0] == '-' && arg[1]) {
            vctl_usage_error("check-domain: unknown option %s", arg);
        } else {
            if (dom) vctl_usage_error("check-domain: unexpected argument \"%s\"", arg);
            dom = arg;
        }
    }
    if (!dom) vctl_usage_error("check-domain: missing DOMAIN");
    if (pf->dkim_key && pf->nselectors_opt == 0)
        vctl_usage_error("check-domain: --dkim-key needs --selector");
    snprintf(domain, dn, "%s", dom);
    size_t l = strlen(domain);
    if (l > 1 && domain[l - 1] == '.') domain[l - 1] = '\0';
    str_lower(domain);
    if (strlen(dom) >= dn || !vctl_pf_domain_ok(domain))
        vctl_usage_error("check-domain: \"%s\" is not a domain name", dom);
    pf->domain = domain;
}

/* vctl_pf_print_json - {"domain": D, "checks": [{check, subject, result, detail}]} */
static int vctl_pf_print_json(const struct vctl_pf *pf)
{
    json_t *checks = json_array(), *o = json_object();
    if (!checks || !o) return -1;
    for (int i = 0; i < pf->nrows; i++) {
        const struct vctl_pf_row *r = &pf->rows[i];
        json_t *c = json_pack("{s:s, s:s, s:s, s:s}", "check", r->check, "subject", r->subject,
                              "result", vctl_pf_result_str(r->result), "detail", r->detail);
        /* DNS text that is not UTF-8 makes json_pack fail: keep the row anyway */
        if (!c)
            c = json_pack("{s:s, s:s, s:s, s:s}", "check", r->check, "subject", "?", "result",
                          vctl_pf_result_str(r->result), "detail", "(not UTF-8)");
        if (!c || json_array_append_new(checks, c) < 0) return -1;
    }
    json_object_set_new(o, "domain", json_string(pf->domain));
    json_object_set_new(o, "checks", checks);
    char *s = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    if (!s) return -1;
    puts(s);
    free(s);
    return 0;
}

/* vctl_pf_print_table - CHECK SUBJECT RESULT DETAIL, columns as wide as their text */
static void vctl_pf_print_table(const struct vctl_pf *pf)
{
    size_t wc = strlen("CHECK"), ws = strlen("SUBJECT"), wr = strlen("RESULT");
    char *subj[VCTL_PF_MAX_ROWS];
    for (int i = 0; i < pf->nrows; i++) {
        subj[i] = vctl_clean_line(pf->rows[i].subject);
        if (strlen(pf->rows[i].check) > wc) wc = strlen(pf->rows[i].check);
        if (strlen(subj[i]) > ws) ws = strlen(subj[i]);
    }
    printf("%-*s  %-*s  %-*s  %s\n", (int)wc, "CHECK", (int)ws, "SUBJECT", (int)wr, "RESULT",
           "DETAIL");
    for (int i = 0; i < pf->nrows; i++) {
        char *d = vctl_clean_line(pf->rows[i].detail);
        printf("%-*s  %-*s  %-*s  %s\n", (int)wc, pf->rows[i].check, (int)ws, subj[i], (int)wr,
               vctl_pf_result_str(pf->rows[i].result), d);
        free(d);
        free(subj[i]);
    }
}

int vctl_preflight_cmd(const char *word)
{
    return strcmp(word, "check-domain") == 0;
}

int vctl_preflight_main(int argc, char **argv, const char *config)
{
    char domain[VCTL_PF_NAME_MAX + 2], err[1024];
    struct vctl_pf *pf = xcalloc(1, sizeof *pf);
    int rc = VCTL_PF_EXIT_FAIL;

    vctl_pf_parse(argc, argv, pf, domain, sizeof domain);
    pf->conf = vctl_conf_load(config);
    if (!pf->conf) goto out;
    if (vctl_pf_sources(pf) < 0) goto out;
    pf->dq = dnsq_new((const char *const *)pf->conf->dns_servers, pf->conf->dns_servers_count,
                      (int)pf->conf->dns_timeout_ms, (int)pf->conf->dns_tries, err, sizeof err);
    if (!pf->dq) {
        fprintf(stderr, "volleyctl: %s\n", err);
        goto out;
    }
    vctl_pf_dkim(pf);
    vctl_pf_spf(pf);
    vctl_pf_dmarc(pf);
    vctl_pf_ptr(pf);
    vctl_pf_bounce(pf);

    if (pf->json) {
        if (vctl_pf_print_json(pf) < 0) {
            fputs("volleyctl: out of memory\n", stderr);
            goto out;
        }
    } else {
        vctl_pf_print_table(pf);
    }
    rc = VCTL_PF_EXIT_OK;
    for (int i = 0; i < pf->nrows; i++)
        if (pf->rows[i].result == VCTL_PF_FAIL) rc = VCTL_PF_EXIT_FAIL;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "volleyctl: write to stdout failed: %s\n", strerror(errno));
        rc = VCTL_PF_EXIT_FAIL;
    }
out:
    dnsq_free(pf->dq);
    if (pf->conf) conf_free(pf->conf);
    free(pf);
    return rc;
}
