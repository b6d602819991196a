/*
 * bounce - parser of inbound feedback messages (see bounce.h).
 *
 * Owns the reading of what comes back: which structure a feedback message has and
 * which recipients it names.  The order of precedence is fixed and is the design:
 *
 *   1. an ARF report (message/feedback-report)                   -> COMPLAINT
 *   2. a DSN (message/delivery-status, or its fields in text)    -> per Action
 *   3. the prose of a known MTA or provider (qmail, Postfix, Exim, GMX, Sendmail,
 *      Exchange, Gmail, Yahoo, Domino), then a generic reading when the headers
 *      say "bounce"                                              -> BOUNCE / DELAY
 *   4. auto-reply headers or subject                             -> AUTOREPLY
 *   5. anything else                                             -> UNPARSEABLE
 *
 * Structure beats headers: a DSN or a prose bounce that carries Auto-Submitted:
 * auto-replied (Exim does) is still a bounce.  Where a report has both DSN fields
 * and prose, the fields win and the prose is not read.
 *
 * Invariants: the input is never written and never read past its length; text
 * is decoded into heap scratch buffers of at most BOUNCE_TEXT_MAX octets; every
 * string stored in the report goes through bounce_set(), which bounds it, turns
 * control characters into spaces and makes it valid UTF-8; at most
 * BOUNCE_MAX_RCPTS recipients are kept.  Allocation failure is the only error
 * (-1); the report is then still safe to free.
 */
#include "bounce.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bounce_mime.h"
#include "util.h"

#define BOUNCE_HARD_MAX   (64u * 1024 * 1024) /* whatever the caller allows */
#define BOUNCE_TEXT_MAX   (256 * 1024)        /* decoded text read as prose */
#define BOUNCE_LOCAL_MAX  128                 /* scan limits around an '@' */
#define BOUNCE_DOMAIN_MAX 255
#define BOUNCE_JOIN_MAX   2048 /* a prose block joined into one line */

/* The parse in progress. */
struct bounce_ctx {
    struct bounce_report *r;
    struct bmime_msg *mime;
    const char *hdr; /* the top-level header section */
    size_t hdrlen;
    int cap; /* allocated entries of r->rcpts */
    bool oom;
    bool dsn_seen;         /* a delivery-status part was found, recipients or not */
    bool bounceish;        /* the headers say this is a bounce */
    bool delayish;         /* the subject says this is a delay warning */
    char prose_format[24]; /* a prose trigger matched but named no recipient */
};

const char *bounce_kind_str(enum BOUNCE_KIND k)
{
    switch (k) {
    case BOUNCE_KIND_BOUNCE:
        return "bounce";
    case BOUNCE_KIND_DELAY:
        return "delay";
    case BOUNCE_KIND_COMPLAINT:
        return "complaint";
    case BOUNCE_KIND_AUTOREPLY:
        return "auto-reply";
    case BOUNCE_KIND_DELIVERED:
        return "delivered";
    case BOUNCE_KIND_UNPARSEABLE:
        return "unparseable";
    }
    return "unparseable";
}

/* bounce_utf8_len - length of the valid UTF-8 sequence at s[0..n), 0 if invalid
 * (overlong forms, surrogates and code points past U+10FFFF are invalid, as in
 * jansson) */
static size_t bounce_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t k;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf)
        k = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if (n < k) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < k; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return k;
}

/*
 * bounce_set - store s[0..n) in dst (size dstsz): control characters become
 * spaces, runs of white space collapse to one, the ends are trimmed, invalid UTF-8
 * octets become '?', and a cut never splits a character.
 */
static void bounce_set(char *dst, size_t dstsz, const char *s, size_t n)
{
    size_t o = 0;
    bool space = false;
    const unsigned char *u = (const unsigned char *)s;
    if (dstsz == 0) return;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x20 || u[i] == 0x7f || u[i] == ' ') {
            space = o > 0;
            i++;
            continue;
        }
        size_t k = bounce_utf8_len(u + i, n - i);
        const char *src = s + i;
        if (k == 0) {
            src = "?";
            k = 1;
            i++;
        } else {
            i += k;
        }
        if (o + (space ? 1 : 0) + k > dstsz - 1) break;
        if (space) dst[o++] = ' ';
        space = false;
        memcpy(dst + o, src, k);
        o += k;
    }
    dst[o] = '\0';
}

/* bounce_setz - bounce_set of a C string */
static void bounce_setz(char *dst, size_t dstsz, const char *s)
{
    bounce_set(dst, dstsz, s, strlen(s));
}

/* bounce_is_local - an octet of a dot-atom local part */
static bool bounce_is_local(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&*+/=?^_`{|}~.-", c) != NULL) || c >= 0x80;
}

/* bounce_is_domain - an octet of a domain name (UTF-8 for IDNs) */
static bool bounce_is_domain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c >= 0x80;
}

/* bounce_is_literal - an octet inside an address literal [192.0.2.1], [IPv6:...] */
static bool bounce_is_literal(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == ':';
}

/*
 * bounce_addr_at - the mail address around the first usable '@' of s[0..n) into
 * out; returns a pointer just past it in s, or NULL when there is none.  The scan
 * around each '@' is bounded, so a run of '@' costs linear time.
 */
static const char *bounce_addr_at(const char *s, size_t n, char *out, size_t outsz)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t at = 0; at < n; at++) {
        if (s[at] != '@') continue;
        size_t l = at, lim = at > BOUNCE_LOCAL_MAX ? at - BOUNCE_LOCAL_MAX : 0;
        while (l > lim && bounce_is_local(u[l - 1]))
            l--;
        while (l < at && (s[l] == '.' || s[l] == '\''))
            l++;
        size_t e = at + 1, elim = n - at - 1 > BOUNCE_DOMAIN_MAX ? at + 1 + BOUNCE_DOMAIN_MAX : n;
        if (e < elim && s[e] == '[') {
            e++;
            while (e < elim && bounce_is_literal(u[e]))
                e++;
            if (e < elim && s[e] == ']')
                e++;
            else
                e = at + 1; /* an unclosed literal is no domain */
        } else {
            while (e < elim && bounce_is_domain(u[e]))
                e++;
            while (e > at + 1 && (s[e - 1] == '.' || s[e - 1] == '-'))
                e--;
        }
        if (l == at || e == at + 1) continue;
        bounce_set(out, outsz, s + l, e - l);
        return s + e;
    }
    return NULL;
}

/* bounce_addr - the first mail address in s[0..n) into out; 1 if found */
static int bounce_addr(const char *s, size_t n, char *out, size_t outsz)
{
    if (outsz) out[0] = '\0';
    return bounce_addr_at(s, n, out, outsz) != NULL;
}

/* bounce_addrz - bounce_addr of a C string */
static int bounce_addrz(const char *s, char *out, size_t outsz)
{
    return bounce_addr(s, strlen(s), out, outsz);
}

/* bounce_digit - ASCII digit */
static bool bounce_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* bounce_alnum - ASCII letter or digit */
static bool bounce_alnum(char c)
{
    return bounce_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * bounce_find_status - the first enhanced status code "c.s.d" (class 2, 4 or 5,
 * then 1-3 digits twice) of s[0..n) into out; a dotted run that goes on (an IP
 * address, a version) is not one.  1 if found.
 */
static int bounce_find_status(const char *s, size_t n, char *out, size_t outsz)
{
    for (size_t i = 0; i + 5 <= n; i++) {
        if (s[i] != '2' && s[i] != '4' && s[i] != '5') continue;
        if (i > 0 && (bounce_alnum(s[i - 1]) || s[i - 1] == '.')) continue;
        if (s[i + 1] != '.') continue;
        size_t j = i + 2, d = 0;
        while (j < n && bounce_digit(s[j]) && d < 4)
            j++, d++;
        if (d < 1 || d > 3 || j >= n || s[j] != '.') continue;
        j++;
        d = 0;
        while (j < n && bounce_digit(s[j]) && d < 4)
            j++, d++;
        if (d < 1 || d > 3) continue;
        if (j < n && (bounce_alnum(s[j]) || (s[j] == '.' && j + 1 < n && bounce_digit(s[j + 1]))))
            continue;
        if (j - i < outsz) bounce_set(out, outsz, s + i, j - i);
        return 1;
    }
    return 0;
}

/* bounce_code_at - is s[i..n) an SMTP reply code (2xx-5xx followed by space, '-'
 * or the end, not glued to a word, a number or a time) */
static bool bounce_code_at(const char *s, size_t n, size_t i)
{
    if (i + 3 > n) return false;
    if (s[i] < '2' || s[i] > '5' || !bounce_digit(s[i + 1]) || !bounce_digit(s[i + 2]))
        return false;
    if (i > 0 && (bounce_alnum(s[i - 1]) || s[i - 1] == '.' || s[i - 1] == '-' || s[i - 1] == '+' ||
                  s[i - 1] == ':' || s[i - 1] == '/' || s[i - 1] == '='))
        return false;
    if (i + 3 == n) return true;
    char c = s[i + 3];
    if (c == '-') return i + 4 < n && bounce_digit(s[i + 4]); /* "550-5.1.1" */
    return c == ' ' || c == '\t';
}

/* bounce_find_code - offset of the first SMTP reply code in s[0..n), or n */
static size_t bounce_find_code(const char *s, size_t n)
{
    for (size_t i = 0; i + 3 <= n; i++)
        if (bounce_code_at(s, n, i)) return i;
    return n;
}

/* bounce_untype - v without a leading "type;" (rfc822;, dns;, smtp;, x-...;) */
static const char *bounce_untype(const char *v)
{
    const char *s = v;
    while (bounce_alnum(*s) || *s == '-' || *s == '_')
        s++;
    if (s == v || *s != ';') return v;
    s++;
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* bounce_set_host - store a host name as bounce_set does, without the DNS root
 * dot ("mx.example.com." names the same host as "mx.example.com") */
static void bounce_set_host(char *dst, size_t dstsz, const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n > 1 && s[n - 1] == '.') n--;
    bounce_set(dst, dstsz, s, n);
}

/* bounce_rcpt_new - a new zeroed recipient, NULL at the cap or out of memory */
static struct bounce_rcpt *bounce_rcpt_new(struct bounce_ctx *c)
{
    struct bounce_report *r = c->r;
    if (r->nrcpts >= BOUNCE_MAX_RCPTS || c->oom) return NULL;
    if (r->nrcpts == c->cap) {
        int ncap = c->cap ? c->cap * 2 : 4;
        if (ncap > BOUNCE_MAX_RCPTS) ncap = BOUNCE_MAX_RCPTS;
        struct bounce_rcpt *n = realloc(r->rcpts, (size_t)ncap * sizeof *n);
        if (n == NULL) {
            c->oom = true;
            return NULL;
        }
        r->rcpts = n;
        c->cap = ncap;
    }
    struct bounce_rcpt *rc = &r->rcpts[r->nrcpts++];
    memset(rc, 0, sizeof *rc);
    return rc;
}

/* bounce_rcpt_for - the prose recipient addr: the one already named (prose
 * often names an address twice), else a new one; NULL at the cap or on OOM */
static struct bounce_rcpt *bounce_rcpt_for(struct bounce_ctx *c, const char *addr)
{
    for (int i = 0; i < c->r->nrcpts; i++)
        if (strcasecmp(c->r->rcpts[i].recipient, addr) == 0) return &c->r->rcpts[i];
    struct bounce_rcpt *rc = bounce_rcpt_new(c);
    if (rc) bounce_setz(rc->recipient, sizeof rc->recipient, addr);
    return rc;
}

/* bounce_rcpt_diag - set the diagnostic of rc to s[0..n) and take the reply code
 * and, when the status is still unknown, the enhanced status out of it */
static void bounce_rcpt_diag(struct bounce_rcpt *rc, const char *s, size_t n)
{
    bounce_set(rc->diagnostic, sizeof rc->diagnostic, s, n);
    const char *d = rc->diagnostic;
    size_t dl = strlen(d);
    size_t at = bounce_find_code(d, dl);
    rc->code = at < dl ? (d[at] - '0') * 100 + (d[at + 1] - '0') * 10 + (d[at + 2] - '0') : 0;
    if (rc->status[0] == '\0') bounce_find_status(d, dl, rc->status, sizeof rc->status);
}

/* bounce_rcpt_kind - the kind that an Action gives; without a known one, a 2.x.x
 * status means delivered and anything else a failure (it came in a DSN) */
static enum BOUNCE_KIND bounce_rcpt_kind(const struct bounce_rcpt *rc)
{
    const char *a = rc->action;
    if (strcmp(a, "failed") == 0) return BOUNCE_KIND_BOUNCE;
    if (strcmp(a, "delayed") == 0) return BOUNCE_KIND_DELAY;
    if (strcmp(a, "delivered") == 0 || strcmp(a, "relayed") == 0 || strcmp(a, "expanded") == 0)
        return BOUNCE_KIND_DELIVERED;
    if (rc->status[0] == '2') return BOUNCE_KIND_DELIVERED;
    return BOUNCE_KIND_BOUNCE;
}

/* ---- decoding parts ---------------------------------------------------------- */

/* bounce_part_text - the decoded body of part p in a new buffer (NULs made
 * spaces), at most BOUNCE_TEXT_MAX octets; html says strip tags.  NULL and
 * c->oom on allocation failure. */
static char *bounce_part_text(struct bounce_ctx *c, const struct bmime_part *p, bool html,
                              size_t *outlen)
{
    size_t cap = p->bodylen < BOUNCE_TEXT_MAX ? p->bodylen : BOUNCE_TEXT_MAX;
    char *buf = malloc(cap + 1);
    if (buf == NULL) {
        c->oom = true;
        return NULL;
    }
    size_t n = bmime_decode(p->cte, p->body, p->bodylen, buf, cap + 1);
    if (html) {
        char *t = malloc(n + 1);
        if (t == NULL) {
            free(buf);
            c->oom = true;
            return NULL;
        }
        n = bmime_html_text(buf, n, t, n + 1);
        free(buf);
        buf = t;
    }
    for (char *z = memchr(buf, '\0', n); z != NULL; z = memchr(z, '\0', (size_t)(buf + n - z)))
        *z = ' ';
    buf[n] = '\0';
    *outlen = n;
    return buf;
}

/* bounce_is_type - is part i of type t */
static bool bounce_is_type(const struct bounce_ctx *c, int i, const char *t)
{
    return strcmp(c->mime->part[i].type, t) == 0;
}

/* bounce_has_field_line - does some line of t[0..n) start with "name:" */
static bool bounce_has_field_line(const char *t, size_t n, const char *name)
{
    size_t pos = 0, ln;
    const char *line;
    while (bmime_line_next(t, n, &pos, &line, &ln))
        if (bmime_ci_prefix(line, ln, name)) return true;
    return false;
}

/* ---- the original message -------------------------------------------------- */

/* bounce_orig_headers - take the orig_* fields from a header section */
static void bounce_orig_headers(struct bounce_ctx *c, const char *h, size_t hl)
{
    struct bounce_report *r = c->r;
    char v[BMIME_VALUE_MAX], d[1024];
    if (bmime_header_get(h, hl, "Message-ID", v, sizeof v))
        bounce_setz(r->orig_message_id, sizeof r->orig_message_id, v);
    if (bmime_header_get(h, hl, "Return-Path", v, sizeof v))
        bounce_addrz(v, r->orig_return_path, sizeof r->orig_return_path);
    if (bmime_header_get(h, hl, "From", v, sizeof v))
        bounce_addrz(v, r->orig_from, sizeof r->orig_from);
    if (bmime_header_get(h, hl, "To", v, sizeof v) &&
        !bounce_addrz(v, r->orig_to, sizeof r->orig_to))
        bounce_setz(r->orig_to, sizeof r->orig_to, v); /* "undisclosed-recipients:;", redacted */
    if (bmime_header_get(h, hl, "Subject", v, sizeof v)) {
        bmime_decode_words(v, d, sizeof d);
        bounce_setz(r->orig_subject, sizeof r->orig_subject, d);
    }
    if (bmime_header_get(h, hl, "List-Id", v, sizeof v))
        bounce_setz(r->orig_list_id, sizeof r->orig_list_id, v);
}

/* bounce_orig_span - the original message or its headers in t[0..n): leading
 * blank lines skipped; only taken when the first line is a header field */
static bool bounce_orig_span(struct bounce_ctx *c, const char *t, size_t n)
{
    size_t pos = 0, at, ln;
    const char *line;
    for (;;) {
        at = pos;
        if (!bmime_line_next(t, n, &pos, &line, &ln)) return false;
        if (ln > 0) break;
    }
    const char *h, *b;
    size_t hl, bl;
    bmime_split(t + at, n - at, &h, &hl, &b, &bl);
    if (hl == 0) return false;
    bounce_orig_headers(c, h, hl);
    return true;
}

/* bounce_orig_parts - the orig_* fields from the first returned-message part */
static int bounce_orig_parts(struct bounce_ctx *c)
{
    static const char *const types[] = {"message/rfc822", "message/global", "text/rfc822-headers",
                                        "message/rfc822-headers", "message/global-headers"};
    for (int i = 1; i < c->mime->nparts; i++) {
        for (size_t k = 0; k < ARRAY_LEN(types); k++) {
            if (!bounce_is_type(c, i, types[k])) continue;
            size_t n;
            char *t = bounce_part_text(c, &c->mime->part[i], false, &n);
            if (t == NULL) return -1;
            bool got = bounce_orig_span(c, t, n);
            free(t);
            if (got) return 0;
        }
    }
    return 0;
}

/* Lines after which a prose bounce quotes the original message. */
static const char *const bounce_orig_markers[] = {
    "Below this line is a copy of the message",
    "This is a copy of the message",
    "Original message follows",
    "Original message headers:",
    "Returned message follows",
    "Undelivered message headers",
    "Unsent message below",
    "The original message was:",
    "original message header",
    "Text of the message follows",
    "----- Original message -----",
    "-----Original Message-----",
};

/* bounce_orig_marker - offset of the first line in t[0..n) naming the quoted
 * original, n if none; *after is the offset of the line after it */
static size_t bounce_orig_marker(const char *t, size_t n, size_t *after)
{
    size_t pos = 0, at, ln;
    const char *line;
    *after = n;
    for (;;) {
        at = pos;
        if (!bmime_line_next(t, n, &pos, &line, &ln)) return n;
        if (ln > 200) continue;
        for (size_t k = 0; k < ARRAY_LEN(bounce_orig_markers); k++) {
            if (bmime_ci_find(line, ln, bounce_orig_markers[k])) {
                *after = pos;
                return at;
            }
        }
    }
}

/* ---- ARF ------------------------------------------------------------------- */

/* bounce_redacted - is a (recipient) address a redaction rather than an address:
 * no '@', the word "redacted", or a local part of only x, * and # */
static bool bounce_redacted(const char *a)
{
    const char *at = strchr(a, '@');
    if (at == NULL || at == a) return true;
    if (bmime_ci_find(a, strlen(a), "redacted")) return true;
    for (const char *s = a; s < at; s++)
        if (*s != 'x' && *s != 'X' && *s != '*' && *s != '#' && *s != '.') return false;
    return true;
}

/* bounce_arf_fields - read a message/feedback-report body */
static void bounce_arf_fields(struct bounce_ctx *c, const char *t, size_t n)
{
    struct bounce_report *r = c->r;
    struct bmime_field *f = malloc(sizeof *f);
    size_t pos = 0;
    enum BMIME_FIELD_NEXT k;
    if (f == NULL) {
        c->oom = true;
        return;
    }
    while ((k = bmime_field_next(t, n, &pos, f)) != BMIME_FIELD_END) {
        if (k != BMIME_FIELD_FIELD) continue;
        const char *nm = f->name, *v = f->value;
        if (strcasecmp(nm, "Feedback-Type") == 0) {
            bounce_setz(r->feedback_type, sizeof r->feedback_type, v);
            str_lower(r->feedback_type);
        } else if (strcasecmp(nm, "User-Agent") == 0) {
            bounce_setz(r->user_agent, sizeof r->user_agent, v);
        } else if (strcasecmp(nm, "Source-IP") == 0) {
            bounce_setz(r->source_ip, sizeof r->source_ip, v);
        } else if (strcasecmp(nm, "Original-Mail-From") == 0) {
            if (!bounce_addrz(v, r->original_mail_from, sizeof r->original_mail_from))
                bounce_setz(r->original_mail_from, sizeof r->original_mail_from, v);
        } else if (strcasecmp(nm, "Original-Rcpt-To") == 0) {
            if (r->original_rcpt_to[0] == '\0' &&
                !bounce_addrz(v, r->original_rcpt_to, sizeof r->original_rcpt_to))
                bounce_setz(r->original_rcpt_to, sizeof r->original_rcpt_to, v);
        } else if (strcasecmp(nm, "Reported-Domain") == 0) {
            if (r->reported_domain[0] == '\0')
                bounce_setz(r->reported_domain, sizeof r->reported_domain, v);
        } else if (strcasecmp(nm, "Arrival-Date") == 0 || strcasecmp(nm, "Received-Date") == 0) {
            bounce_setz(r->arrival_date, sizeof r->arrival_date, v);
        } else if (strcasecmp(nm, "Original-Envelope-Id") == 0) {
            bounce_setz(r->orig_envelope_id, sizeof r->orig_envelope_id, v);
        } else if (strcasecmp(nm, "Reporting-MTA") == 0) {
            bounce_set_host(r->reporting_mta, sizeof r->reporting_mta, bounce_untype(v));
        }
    }
    free(f);
}

/* bounce_arf - an ARF report: 1 when found (report filled), 0 if not, -1 OOM */
static int bounce_arf(struct bounce_ctx *c)
{
    struct bmime_msg *m = c->mime;
    struct bounce_report *r = c->r;
    int found = -1;
    for (int i = 0; i < m->nparts && found < 0; i++) {
        if (bounce_is_type(c, i, "message/feedback-report")) found = i;
        /* a feedback-report part mislabelled as text/plain inside a
         * report-type=feedback-report container */
        int par = m->part[i].parent;
        if (found < 0 && bounce_is_type(c, i, "text/plain") && par >= 0 &&
            strcmp(m->part[par].report_type, "feedback-report") == 0) {
            size_t n;
            char *t = bounce_part_text(c, &m->part[i], false, &n);
            if (t == NULL) return -1;
            if (bounce_has_field_line(t, n, "Feedback-Type:")) found = i;
            free(t);
        }
    }
    if (found < 0) return 0;
    size_t n;
    char *t = bounce_part_text(c, &m->part[found], false, &n);
    if (t == NULL) return -1;
    bounce_arf_fields(c, t, n);
    free(t);
    if (c->oom || bounce_orig_parts(c) < 0) return -1;
    str_copy(r->format, sizeof r->format, "arf");
    r->kind = BOUNCE_KIND_COMPLAINT;
    struct bounce_rcpt *rc = bounce_rcpt_new(c);
    if (rc == NULL) return -1;
    rc->kind = BOUNCE_KIND_COMPLAINT;
    /* Who complained: the Original-Rcpt-To, unless redacted; then the header
     * Microsoft's JMRP keeps for that purpose; then the To of the included
     * original (redacted too by some providers: left empty, and the caller falls
     * back on the VERP address in delivered_to or the message id). */
    const char *who = "";
    char hm[321] = "";
    for (int i = 1; i < m->nparts; i++) {
        if (!bounce_is_type(c, i, "message/rfc822") && !bounce_is_type(c, i, "text/rfc822-headers"))
            continue;
        const char *h, *b;
        size_t hl, bl;
        bmime_split(m->part[i].body, m->part[i].bodylen, &h, &hl, &b, &bl);
        char v[BMIME_VALUE_MAX];
        if (bmime_header_get(h, hl, "X-HmXmrOriginalRecipient", v, sizeof v))
            bounce_addrz(v, hm, sizeof hm);
        break;
    }
    if (r->original_rcpt_to[0] && !bounce_redacted(r->original_rcpt_to))
        who = r->original_rcpt_to;
    else if (hm[0] && !bounce_redacted(hm))
        who = hm;
    else if (r->orig_to[0] && !bounce_redacted(r->orig_to))
        who = r->orig_to;
    bounce_setz(rc->recipient, sizeof rc->recipient, who);
    return 1;
}

/* ---- DSN ------------------------------------------------------------------- */

/* bounce_dsn_fields - read a delivery-status body: per-message fields, then a
 * group per recipient.  Groups are found by blank lines and also by a second
 * Final-Recipient, since some MTAs leave the blank lines out. */
static void bounce_dsn_fields(struct bounce_ctx *c, const char *t, size_t n)
{
    struct bounce_report *r = c->r;
    struct bmime_field *f = malloc(sizeof *f);
    struct bounce_rcpt *cur = NULL;
    int first = r->nrcpts;
    size_t pos = 0;
    enum BMIME_FIELD_NEXT k;
    if (f == NULL) {
        c->oom = true;
        return;
    }
    while ((k = bmime_field_next(t, n, &pos, f)) != BMIME_FIELD_END) {
        if (k == BMIME_FIELD_BLANK) {
            cur = NULL;
            continue;
        }
        const char *nm = f->name, *v = f->value;
        if (strcasecmp(nm, "Reporting-MTA") == 0) {
            bounce_set_host(r->reporting_mta, sizeof r->reporting_mta, bounce_untype(v));
            continue;
        }
        if (strcasecmp(nm, "Original-Envelope-Id") == 0) {
            bounce_setz(r->orig_envelope_id, sizeof r->orig_envelope_id, v);
            continue;
        }
        if (strcasecmp(nm, "Arrival-Date") == 0) {
            bounce_setz(r->arrival_date, sizeof r->arrival_date, v);
            continue;
        }
        bool final = strcasecmp(nm, "Final-Recipient") == 0;
        bool orig = strcasecmp(nm, "Original-Recipient") == 0;
        bool other = strcasecmp(nm, "Action") == 0 || strcasecmp(nm, "Status") == 0 ||
                     strcasecmp(nm, "Remote-MTA") == 0 || strcasecmp(nm, "Diagnostic-Code") == 0;
        if (!final && !orig && !other) continue;
        if (cur == NULL || (final && cur->recipient[0]) || (orig && cur->original_recipient[0])) {
            cur = bounce_rcpt_new(c);
            if (cur == NULL) break;
        }
        const char *u = bounce_untype(v);
        if (final || orig) {
            char *dst = final ? cur->recipient : cur->original_recipient;
            if (!bounce_addrz(u, dst, 321)) bounce_set(dst, 321, u, strlen(u));
            /* a value without an address (x400;..., a bare name) is kept as written */
        } else if (strcasecmp(nm, "Action") == 0) {
            size_t w = 0;
            while (u[w] && u[w] != ' ' && u[w] != '\t' && u[w] != '(' && w < sizeof cur->action - 1)
                w++;
            bounce_set(cur->action, sizeof cur->action, u, w);
            str_lower(cur->action);
        } else if (strcasecmp(nm, "Status") == 0) {
            bounce_find_status(u, strlen(u), cur->status, sizeof cur->status);
        } else if (strcasecmp(nm, "Remote-MTA") == 0) {
            bounce_set_host(cur->remote_mta, sizeof cur->remote_mta, u);
        } else {
            bounce_rcpt_diag(cur, u, strlen(u));
        }
    }
    free(f);
    /* Drop groups that name nothing, fill the recipient from the original one,
     * and give every recipient its kind. */
    int o = first;
    for (int i = first; i < r->nrcpts; i++) {
        struct bounce_rcpt *rc = &r->rcpts[i];
        if (rc->recipient[0] == '\0')
            str_copy(rc->recipient, sizeof rc->recipient, rc->original_recipient);
        if (rc->recipient[0] == '\0' && rc->action[0] == '\0' && rc->status[0] == '\0') continue;
        if (rc->status[0] == '\0' && rc->diagnostic[0])
            bounce_find_status(rc->diagnostic, strlen(rc->diagnostic), rc->status,
                               sizeof rc->status);
        rc->kind = bounce_rcpt_kind(rc);
        if (o != i) r->rcpts[o] = *rc;
        o++;
    }
    r->nrcpts = o;
}

/* bounce_dsn - a DSN: the number of recipients read (0 if none), -1 OOM */
static int bounce_dsn(struct bounce_ctx *c)
{
    struct bmime_msg *m = c->mime;
    for (int i = 0; i < m->nparts; i++) {
        const struct bmime_part *p = &m->part[i];
        bool ds = bounce_is_type(c, i, "message/delivery-status") ||
                  bounce_is_type(c, i, "message/global-delivery-status");
        /* Tolerated: the fields in a text/plain part (a mislabelled second part
         * of a report, or a non-MIME DSN), recognised by their own names. */
        bool maybe = !ds && bounce_is_type(c, i, "text/plain");
        if (!ds && !maybe) continue;
        size_t n;
        char *t = bounce_part_text(c, p, false, &n);
        if (t == NULL) return -1;
        if (maybe) {
            /* a text part must read like a DSN: recipient and action or status */
            bool rcpt = bounce_has_field_line(t, n, "Final-Recipient:") ||
                        bounce_has_field_line(t, n, "Original-Recipient:");
            bool what =
                bounce_has_field_line(t, n, "Action:") || bounce_has_field_line(t, n, "Status:");
            if (!rcpt || !what) {
                free(t);
                continue;
            }
        }
        c->dsn_seen = true;
        bounce_dsn_fields(c, t, n);
        free(t);
        if (c->oom) return -1;
    }
    return c->r->nrcpts;
}

/* ---- prose ------------------------------------------------------------------ */

/* A prose text: the decoded text parts, cut before the quoted original. */
struct bounce_text {
    const char *t;
    size_t n;
};

/* bounce_trim - s[0..*n) without leading and trailing white space */
static const char *bounce_trim(const char *s, size_t *n)
{
    while (*n > 0 && (s[0] == ' ' || s[0] == '\t'))
        s++, (*n)--;
    while (*n > 0 && (s[*n - 1] == ' ' || s[*n - 1] == '\t' || s[*n - 1] == '\r'))
        (*n)--;
    return s;
}

/* bounce_indent - the number of leading SP/HTAB of line[0..n) */
static size_t bounce_indent(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    return i;
}

/* bounce_join - append s[0..n) to the joined text j (size BOUNCE_JOIN_MAX) with
 * one space between pieces */
static void bounce_join(char *j, size_t *jl, const char *s, size_t n)
{
    s = bounce_trim(s, &n);
    if (n == 0) return;
    if (*jl > 0 && *jl < BOUNCE_JOIN_MAX - 1) j[(*jl)++] = ' ';
    size_t room = BOUNCE_JOIN_MAX - 1 - *jl;
    if (n > room) n = room;
    memcpy(j + *jl, s, n);
    *jl += n;
    j[*jl] = '\0';
}

/* bounce_word_after - the word (up to white space, '[', '(' or ':') after the
 * first occurrence of key in s[0..n), into out without a trailing '.'; 1 if any */
static int bounce_word_after(const char *s, size_t n, const char *key, char *out, size_t outsz)
{
    const char *p = bmime_ci_find(s, n, key);
    if (p == NULL) return 0;
    p += strlen(key);
    const char *e = s + n;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    const char *w = p;
    while (p < e && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' && *p != '[' && *p != '(' &&
           *p != ':' && *p != ',')
        p++;
    while (p > w && p[-1] == '.')
        p--;
    if (p == w) return 0;
    bounce_set(out, outsz, w, (size_t)(p - w));
    return 1;
}

/* bounce_find - case-insensitive search of key in the prose */
static const char *bounce_find(const struct bounce_text *x, const char *key)
{
    return bmime_ci_find(x->t, x->n, key);
}

/* bounce_line_addr - the address that line[0..n) consists of, optionally in
 * angle brackets and followed by ':' or a parenthesised note; 1 if it does */
static int bounce_line_addr(const char *s, size_t n, char *out, size_t outsz)
{
    s = bounce_trim(s, &n);
    if (n == 0) return 0;
    size_t w = 0;
    while (w < n && s[w] != ' ' && s[w] != '\t')
        w++;
    /* the first word holds the address; the rest may only be a note */
    const char *word = s;
    size_t wl = w;
    if (wl > 0 && word[wl - 1] == ':') wl--;
    if (wl >= 2 && word[0] == '<' && word[wl - 1] == '>') word++, wl -= 2;
    if (wl == 0 || memchr(word, '@', wl) == NULL || memchr(word, '<', wl) || memchr(word, '>', wl))
        return 0;
    if (w < n) {
        size_t rl = n - w;
        const char *rest = bounce_trim(s + w, &rl);
        if (rl > 0 && rest[0] != '(' && rest[0] != '[' && rest[0] != '<') return 0;
    }
    return bounce_addr(word, wl, out, outsz);
}

/* bounce_from_code - s[0..n) from its first reply code on, or all of it */
static void bounce_from_code(const char *s, size_t n, const char **o, size_t *on)
{
    size_t at = bounce_find_code(s, n);
    *o = at < n ? s + at : s;
    *on = at < n ? n - at : n;
}

/* bounce_prose_finish - prose rcpts found: make them delays or failures */
static void bounce_prose_finish(struct bounce_ctx *c, int first, bool delay)
{
    for (int i = first; i < c->r->nrcpts; i++) {
        struct bounce_rcpt *rc = &c->r->rcpts[i];
        if (rc->action[0] == '\0')
            str_copy(rc->action, sizeof rc->action, delay ? "delayed" : "failed");
        rc->kind = strcmp(rc->action, "delayed") == 0 ? BOUNCE_KIND_DELAY : BOUNCE_KIND_BOUNCE;
    }
}

/*
 * bounce_prose_begin - the prose readers' "a new recipient starts here": the
 * recipient named addr becomes current (NULL at the cap) and its joined reason
 * j (jl bytes) starts empty.
 */
static struct bounce_rcpt *bounce_prose_begin(struct bounce_ctx *c, const char *addr, char *j,
                                              size_t *jl)
{
    *jl = 0;
    j[0] = '\0';
    return bounce_rcpt_for(c, addr);
}

/* bounce_tail_after - *d, *dl: what follows key (any case) in j[0..jl), or all of
 * j when key is not there; true when it was */
static bool bounce_tail_after(const char *j, size_t jl, const char *key, const char **d, size_t *dl)
{
    const char *k = bmime_ci_find(j, jl, key);
    *d = k ? k + strlen(key) : j;
    *dl = jl - (size_t)(*d - j);
    return k != NULL;
}

/* bounce_qmail_reason - the reply in a qmail block: what follows "said:", or all
 * of it when the remote was not quoted */
static void bounce_qmail_reason(struct bounce_rcpt *rc, const char *j, size_t jl)
{
    const char *d;
    size_t dl;
    bounce_tail_after(j, jl, "said:", &d, &dl);
    bounce_rcpt_diag(rc, d, dl);
}

/*
 * bounce_qmail - qmail and its descendants (Yahoo): "<addr>:" on a line of its
 * own, then the remote's words until an empty line:
 *
 *   <nosuch@example.org>:
 *   192.0.2.25 does not like recipient.
 *   Remote host said: 550 5.1.1 <nosuch@example.org>: User unknown
 *   Giving up on 192.0.2.25.
 */
static void bounce_qmail(struct bounce_ctx *c, const struct bounce_text *x)
{
    size_t pos = 0, n;
    const char *line;
    struct bounce_rcpt *rc = NULL;
    char j[BOUNCE_JOIN_MAX], a[321];
    size_t jl = 0;
    j[0] = '\0';
    for (;;) {
        int more = bmime_line_next(x->t, x->n, &pos, &line, &n);
        size_t tn = n;
        const char *tl = more ? bounce_trim(line, &tn) : NULL;
        bool start = more && tn > 3 && tl[0] == '<' && tl[tn - 1] == ':' && tl[tn - 2] == '>' &&
                     bounce_line_addr(tl, tn, a, sizeof a);
        if (rc && (!more || tn == 0 || start)) {
            bounce_qmail_reason(rc, j, jl);
            rc = NULL;
        }
        if (!more) break;
        if (start) {
            rc = bounce_prose_begin(c, a, j, &jl);
            continue;
        }
        if (rc == NULL || tn == 0) continue;
        /* the host lines name the remote and are not the reason */
        const char *h;
        if ((h = bmime_ci_find(tl, tn, " does not like recipient")) != NULL) {
            bounce_set(rc->remote_mta, sizeof rc->remote_mta, tl, (size_t)(h - tl));
            continue;
        }
        if (bmime_ci_prefix(tl, tn, "Connected to ")) {
            bounce_word_after(tl, tn, "Connected to ", rc->remote_mta, sizeof rc->remote_mta);
            continue;
        }
        if (bmime_ci_prefix(tl, tn, "Giving up on ") ||
            bmime_ci_prefix(tl, tn, "I'm not going to try again")) {
            if (rc->remote_mta[0] == '\0')
                bounce_word_after(tl, tn, "Giving up on ", rc->remote_mta, sizeof rc->remote_mta);
            continue;
        }
        bounce_join(j, &jl, tl, tn);
    }
}

/* bounce_postfix_said - the reply in a Postfix reason "host X[ip] said: 550 ...
 * (in reply to RCPT TO command)": diagnostic and remote */
static void bounce_postfix_reason(struct bounce_rcpt *rc, const char *j, size_t jl)
{
    const char *d;
    size_t dl;
    if (bounce_tail_after(j, jl, " said: ", &d, &dl)) {
        bounce_word_after(j, jl, "host ", rc->remote_mta, sizeof rc->remote_mta);
    } else if (bmime_ci_prefix(j, jl, "connect to ")) {
        bounce_word_after(j, jl, "connect to ", rc->remote_mta, sizeof rc->remote_mta);
    }
    const char *irt = bmime_ci_find(d, dl, "(in reply to ");
    if (irt) dl = (size_t)(irt - d);
    bounce_rcpt_diag(rc, d, dl);
}

/*
 * bounce_postfix - Postfix prose: "<addr>: reason" with the reason continued on
 * indented lines, or "<addr> (expanded from <alias>): reason".
 */
static void bounce_postfix(struct bounce_ctx *c, const struct bounce_text *x)
{
    size_t pos = 0, n;
    const char *line;
    struct bounce_rcpt *rc = NULL;
    char j[BOUNCE_JOIN_MAX], a[321];
    size_t jl = 0;
    for (;;) {
        int more = bmime_line_next(x->t, x->n, &pos, &line, &n);
        bool cont = more && n > 0 && (line[0] == ' ' || line[0] == '\t');
        bool start = false;
        const char *rest = NULL;
        if (more && n > 3 && line[0] == '<') {
            const char *gt = memchr(line, '>', n);
            if (gt && gt + 1 < line + n && (gt[1] == ':' || gt[1] == ' ') &&
                bounce_addr(line + 1, (size_t)(gt - line - 1), a, sizeof a)) {
                /* "<a>: reason" or "<a> (expanded from <b>): reason" */
                const char *colon = gt[1] == ':' ? gt + 1 : NULL;
                if (!colon &&
                    bmime_ci_prefix(gt + 1, (size_t)(line + n - gt - 1), " (expanded from")) {
                    const char *cp = memchr(gt + 1, ')', (size_t)(line + n - gt - 1));
                    if (cp && cp + 1 < line + n && cp[1] == ':') colon = cp + 1;
                }
                if (colon) {
                    start = true;
                    rest = colon + 1;
                }
            }
        }
        if (rc && (!more || start || !cont)) {
            bounce_postfix_reason(rc, j, jl);
            rc = NULL;
        }
        if (!more) break;
        if (start) {
            rc = bounce_prose_begin(c, a, j, &jl);
            if (rc) bounce_join(j, &jl, rest, (size_t)(line + n - rest));
            continue;
        }
        if (rc && cont) bounce_join(j, &jl, line, n);
    }
}

/* bounce_exim_reason - the recipient's indented block from Exim or GMX */
static void bounce_exim_reason(struct bounce_rcpt *rc, const char *j, size_t jl)
{
    if (!bounce_word_after(j, jl, "host: ", rc->remote_mta, sizeof rc->remote_mta))
        bounce_word_after(j, jl, "host ", rc->remote_mta, sizeof rc->remote_mta);
    const char *d, *k;
    size_t dl;
    /* GMX: "... reason: <reply>"; Exim: "Delay reason: <text>" */
    bounce_tail_after(j, jl, "reason:", &d, &dl);
    /* Exim: "SMTP error from remote mail server after RCPT TO:<a>: <reply>", or
     * "host X [ip]: <reply>": the reply from its code on */
    if ((k = bmime_ci_find(d, dl, "SMTP error from remote")) != NULL)
        bounce_from_code(k, dl - (size_t)(k - d), &d, &dl);
    else if (d == j)
        bounce_from_code(j, jl, &d, &dl);
    bounce_rcpt_diag(rc, d, dl);
}

/*
 * bounce_exim - Exim and GMX/web.de: after the line that ends the introduction
 * ("... address(es) failed:", "... has not yet been delivered is:"), an address
 * on a line of its own indented at most two places, then its reason on further
 * lines (indented by Exim, not by GMX) until an empty line.
 */
static void bounce_exim(struct bounce_ctx *c, const struct bounce_text *x)
{
    size_t pos = 0, n;
    const char *line;
    struct bounce_rcpt *rc = NULL;
    char j[BOUNCE_JOIN_MAX], a[321];
    size_t jl = 0;
    bool in_list = false, after_blank = false;
    for (;;) {
        int more = bmime_line_next(x->t, x->n, &pos, &line, &n);
        size_t tn = n;
        const char *tl = more ? bounce_trim(line, &tn) : NULL;
        if (!in_list) {
            if (!more) break;
            if (tn > 0 && tl[tn - 1] == ':' &&
                (bmime_ci_find(tl, tn, "failed") || bmime_ci_find(tl, tn, "delivered") ||
                 bmime_ci_find(tl, tn, "address")))
                in_list = true;
            continue;
        }
        size_t ind = more ? bounce_indent(line, n) : 0;
        bool start = more && ind <= 3 && bounce_line_addr(tl, tn, a, sizeof a);
        bool stop = !more ||
                    (tn > 0 && (bmime_ci_prefix(tl, tn, "------") ||
                                bmime_ci_prefix(tl, tn, "Reporting-MTA"))) ||
                    (after_blank && tn > 0 && ind == 0 && !start && rc == NULL && c->r->nrcpts > 0);
        if (rc && (stop || start || tn == 0)) {
            bounce_exim_reason(rc, j, jl);
            rc = NULL;
        }
        if (stop) break;
        if (tn == 0) {
            after_blank = true;
            continue;
        }
        if (start) {
            rc = bounce_prose_begin(c, a, j, &jl);
            after_blank = false;
            continue;
        }
        if (rc) bounce_join(j, &jl, tl, tn);
    }
}

/*
 * bounce_sendmail - Sendmail prose: addresses under "----- The following
 * addresses had permanent fatal errors -----" (or transient non-fatal ones), each
 * maybe with "(reason: ...)", then a session transcript naming the host and
 * holding the reply lines.
 */
static void bounce_sendmail(struct bounce_ctx *c, const struct bounce_text *x)
{
    size_t pos = 0, n;
    const char *line;
    struct bounce_rcpt *rc = NULL;
    char a[321], host[256] = "", reply[1024] = "";
    int first = c->r->nrcpts;
    enum { SM_NONE, SM_LIST, SM_TRANSCRIPT } st = SM_NONE;
    while (bmime_line_next(x->t, x->n, &pos, &line, &n)) {
        size_t tn = n;
        const char *tl = bounce_trim(line, &tn);
        if (bmime_ci_find(tl, tn, "The following addresses had")) {
            st = SM_LIST;
            continue;
        }
        if (bmime_ci_find(tl, tn, "Transcript of session follows")) {
            st = SM_TRANSCRIPT;
            continue;
        }
        if (st == SM_LIST) {
            if (tn == 0 || bmime_ci_prefix(tl, tn, "-----")) {
                st = SM_NONE;
                continue;
            }
            if (bmime_ci_prefix(tl, tn, "(reason:") && rc) {
                const char *d = tl + 8;
                size_t dl = tn - 8;
                if (dl > 0 && d[dl - 1] == ')') dl--;
                bounce_rcpt_diag(rc, d, dl);
            } else if (tl[0] != '(' && bounce_line_addr(tl, tn, a, sizeof a)) {
                rc = bounce_rcpt_for(c, a);
            }
            continue;
        }
        if (st == SM_TRANSCRIPT && tn > 0) {
            if (host[0] == '\0' && bmime_ci_find(tl, tn, "while talking to ")) {
                bounce_word_after(tl, tn, "while talking to ", host, sizeof host);
                continue;
            }
            if (reply[0] == '\0' && tn > 4 && bounce_code_at(tl, tn, 0) && tl[0] >= '4')
                bounce_set(reply, sizeof reply, tl, tn);
            else if (reply[0] == '\0' && tn > 8 && bmime_ci_prefix(tl, tn, "<<< ") &&
                     bounce_code_at(tl, tn, 4) && tl[4] >= '4')
                bounce_set(reply, sizeof reply, tl + 4, tn - 4);
        }
    }
    for (int i = first; i < c->r->nrcpts; i++) {
        struct bounce_rcpt *r = &c->r->rcpts[i];
        if (r->remote_mta[0] == '\0') str_copy(r->remote_mta, sizeof r->remote_mta, host);
        if (r->diagnostic[0] == '\0' && reply[0]) bounce_rcpt_diag(r, reply, strlen(reply));
    }
}

/* bounce_exchange_said - the reply quoted in "Remote Server returned '...'" or
 * an old-style "#550 5.1.1 ...##" line, into d (size BOUNCE_JOIN_MAX); 1 if any */
static int bounce_exchange_said(const char *tl, size_t tn, char *d, size_t *dl)
{
    const char *k = bmime_ci_find(tl, tn, "Remote Server returned");
    *dl = 0;
    d[0] = '\0';
    if (k) {
        const char *s = k + 22, *e = tl + tn;
        while (s < e && (*s == ' ' || *s == ':'))
            s++;
        if (s < e && (*s == '\'' || *s == '"')) {
            char q = *s++;
            const char *qe = e;
            while (qe > s && qe[-1] != q)
                qe--;
            if (qe > s) e = qe - 1;
        }
        bounce_join(d, dl, s, (size_t)(e - s));
        return *dl > 0;
    }
    if (tn > 4 && tl[0] == '#' && bounce_code_at(tl, tn, 1)) {
        size_t e = tn;
        while (e > 1 && (tl[e - 1] == '#' || tl[e - 1] == ' '))
            e--;
        bounce_join(d, dl, tl + 1, e - 1);
        return 1;
    }
    return 0;
}

/*
 * bounce_exchange - Exchange and Office 365 non-delivery reports: "Your message
 * to X couldn't be delivered", a list under "Delivery has failed to these
 * recipients or groups:", and the administrators' section: "Generating server:
 * host", then each address followed by "Remote Server returned '<reply>'".
 */
static void bounce_exchange(struct bounce_ctx *c, const struct bounce_text *x)
{
    size_t pos = 0, n;
    const char *line;
    struct bounce_rcpt *rc = NULL;
    char a[321], d[BOUNCE_JOIN_MAX], first_said[BOUNCE_JOIN_MAX] = "", fallback[512] = "";
    size_t dl;
    int first = c->r->nrcpts;
    bool list = false, want_fallback = false, admin = false;
    while (bmime_line_next(x->t, x->n, &pos, &line, &n)) {
        size_t tn = n;
        const char *tl = bounce_trim(line, &tn);
        const char *k;
        if (tn == 0) continue;
        if (want_fallback) {
            bounce_set(fallback, sizeof fallback, tl, tn);
            want_fallback = false;
        }
        if ((k = bmime_ci_find(tl, tn, "Your message to ")) != NULL &&
            bmime_ci_find(tl, tn, "delivered")) {
            const char *s = k + 16;
            if (bounce_addr(s, tn - (size_t)(s - tl), a, sizeof a)) rc = bounce_rcpt_for(c, a);
            want_fallback = true;
            continue;
        }
        if (bmime_ci_find(tl, tn, "Delivery has failed to these recipients") ||
            bmime_ci_find(tl, tn, "could not be delivered to the following recipients") ||
            bmime_ci_find(tl, tn, "following recipient(s) cannot be reached")) {
            list = true;
            continue;
        }
        if (bmime_ci_prefix(tl, tn, "Generating server:")) {
            bounce_word_after(tl, tn, "Generating server:", c->r->reporting_mta,
                              sizeof c->r->reporting_mta);
            admin = true;
            list = false;
            continue;
        }
        if (bounce_exchange_said(tl, tn, d, &dl)) {
            if (first_said[0] == '\0') str_copy(first_said, sizeof first_said, d);
            if (rc && rc->diagnostic[0] == '\0') bounce_rcpt_diag(rc, d, dl);
            continue;
        }
        if (list || admin) {
            bool got = bounce_line_addr(tl, tn, a, sizeof a);
            /* "Name (a@b)" and "a@b <mailto:a@b>" lines in the list */
            if (!got && list && tn < 400) got = bounce_addr(tl, tn, a, sizeof a);
            if (got) {
                rc = bounce_rcpt_for(c, a);
                continue;
            }
            if (list && c->r->nrcpts > first) list = false;
        }
    }
    for (int i = first; i < c->r->nrcpts; i++) {
        struct bounce_rcpt *r = &c->r->rcpts[i];
        if (r->diagnostic[0] == '\0' && first_said[0])
            bounce_rcpt_diag(r, first_said, strlen(first_said));
        else if (r->diagnostic[0] == '\0' && fallback[0])
            bounce_rcpt_diag(r, fallback, strlen(fallback));
    }
}

/*
 * bounce_gmail - Gmail's notices: "Your message wasn't delivered to X because
 * ..." or "There was a temporary problem delivering your message to X", then
 * "The response from the remote server was:" and the reply lines.
 */
static void bounce_gmail(struct bounce_ctx *c, const struct bounce_text *x)
{
    static const char *const intro[] = {"wasn't delivered to ", "was not delivered to ",
                                        "delivering your message to ", "couldn't be sent to "};
    size_t pos = 0, n;
    const char *line;
    char a[321], j[BOUNCE_JOIN_MAX], why[512] = "";
    size_t jl = 0;
    struct bounce_rcpt *rc = NULL;
    bool resp = false;
    j[0] = '\0';
    while (bmime_line_next(x->t, x->n, &pos, &line, &n)) {
        size_t tn = n;
        const char *tl = bounce_trim(line, &tn);
        if (resp) {
            if (tn == 0 && jl > 0) break;
            bounce_join(j, &jl, tl, tn);
            continue;
        }
        if (bmime_ci_find(tl, tn, "The response from the remote server was:") ||
            bmime_ci_prefix(tl, tn, "The response was:")) {
            resp = true;
            continue;
        }
        if (rc) continue;
        for (size_t k = 0; k < ARRAY_LEN(intro); k++) {
            const char *p = bmime_ci_find(tl, tn, intro[k]);
            if (p && bounce_addr(p, tn - (size_t)(p - tl), a, sizeof a)) {
                rc = bounce_rcpt_for(c, a);
                bounce_set(why, sizeof why, tl, tn);
                break;
            }
        }
    }
    if (rc == NULL) return;
    if (jl > 0)
        bounce_rcpt_diag(rc, j, jl);
    else
        bounce_rcpt_diag(rc, why, strlen(why));
}

/*
 * bounce_domino - Lotus Notes / Domino: "was not delivered to:" then the address
 * on a line of its own, "because:" then the reason.
 */
static void bounce_domino(struct bounce_ctx *c, const struct bounce_text *x)
{
    size_t pos = 0, n;
    const char *line;
    char a[321], j[BOUNCE_JOIN_MAX];
    size_t jl = 0;
    struct bounce_rcpt *rc = NULL;
    enum { DM_NONE, DM_TO, DM_BECAUSE } st = DM_NONE;
    j[0] = '\0';
    while (bmime_line_next(x->t, x->n, &pos, &line, &n)) {
        size_t tn = n;
        const char *tl = bounce_trim(line, &tn);
        if (bmime_ci_find(tl, tn, "was not delivered to:")) {
            st = DM_TO;
            continue;
        }
        if (rc && bmime_ci_prefix(tl, tn, "because:")) {
            st = DM_BECAUSE;
            continue;
        }
        if (st == DM_TO && tn > 0) {
            if (bounce_addr(tl, tn, a, sizeof a)) rc = bounce_rcpt_for(c, a);
            st = DM_NONE;
        } else if (st == DM_BECAUSE) {
            if (tn == 0 && jl > 0) break;
            bounce_join(j, &jl, tl, tn);
        }
    }
    if (rc) bounce_rcpt_diag(rc, j, jl);
}

/*
 * bounce_generic - an unknown bounce: a line holding an address and a reply code
 * ("550 5.1.1 <a@b>: User unknown", "a@b: 550 No such user"), each one a
 * recipient with that line as its reason.
 */
static void bounce_generic(struct bounce_ctx *c, const struct bounce_text *x)
{
    size_t pos = 0, n;
    const char *line;
    char a[321];
    int first = c->r->nrcpts;
    while (bmime_line_next(x->t, x->n, &pos, &line, &n)) {
        size_t tn = n;
        const char *tl = bounce_trim(line, &tn);
        size_t at = bounce_find_code(tl, tn);
        if (at == tn || tl[at] < '4' || !bounce_addr(tl, tn, a, sizeof a)) continue;
        struct bounce_rcpt *rc = bounce_rcpt_for(c, a);
        if (rc && rc->diagnostic[0] == '\0') bounce_rcpt_diag(rc, tl + at, tn - at);
    }
    if (c->r->nrcpts > first) return;
    /* then labelled lines: "Recipient: a@b" followed by "Reason: ..." */
    struct bounce_rcpt *rc = NULL;
    pos = 0;
    while (bmime_line_next(x->t, x->n, &pos, &line, &n)) {
        size_t tn = n;
        const char *tl = bounce_trim(line, &tn);
        const char *colon = memchr(tl, ':', tn < 40 ? tn : 40);
        if (colon == NULL) continue;
        size_t ll = (size_t)(colon - tl), rl = tn - ll - 1;
        if ((bmime_ci_find(tl, ll, "recipient") || bmime_ci_find(tl, ll, "address")) &&
            bounce_addr(colon + 1, rl, a, sizeof a)) {
            rc = bounce_rcpt_for(c, a);
        } else if (rc && rc->diagnostic[0] == '\0' &&
                   (bmime_ci_find(tl, ll, "reason") || bmime_ci_find(tl, ll, "error") ||
                    bmime_ci_find(tl, ll, "diagnostic") || bmime_ci_find(tl, ll, "status"))) {
            bounce_rcpt_diag(rc, colon + 1, rl);
        }
    }
}

/* One prose format: the phrases that identify it and its reader. */
struct bounce_prose {
    const char *format;
    const char *const *triggers; /* NULL-terminated */
    void (*read)(struct bounce_ctx *c, const struct bounce_text *x);
};

static const char *const bounce_trig_qmail[] = {"This is the qmail-send program",
                                                "I'm afraid I wasn't able to deliver", NULL};
static const char *const bounce_trig_yahoo[] = {
    "Sorry, we were unable to deliver your message to the following address", NULL};
static const char *const bounce_trig_postfix[] = {"This is the mail system at host",
                                                  "This is the Postfix program", NULL};
static const char *const bounce_trig_gmx[] = {"SMTP error from remote server for", NULL};
static const char *const bounce_trig_exim[] = {
    "This message was created automatically by mail delivery software",
    "could not be delivered to one or more of", "has not yet been delivered to one or more of its",
    NULL};
static const char *const bounce_trig_sendmail[] = {"The following addresses had",
                                                   "Transcript of session follows", NULL};
static const char *const bounce_trig_exchange[] = {
    "Delivery has failed to these recipients or groups", "Remote Server returned",
    "Diagnostic information for administrators", "couldn't be delivered", NULL};
static const char *const bounce_trig_gmail[] = {
    "Your message wasn't delivered to",
    "There was a temporary problem delivering your message",
    "The response from the remote server was",
    "Address not found",
    "Message not delivered",
    NULL};
static const char *const bounce_trig_domino[] = {"was not delivered to:", NULL};

static const struct bounce_prose bounce_proses[] = {
    {"qmail", bounce_trig_qmail, bounce_qmail},
    {"yahoo", bounce_trig_yahoo, bounce_qmail},
    {"postfix", bounce_trig_postfix, bounce_postfix},
    {"gmx", bounce_trig_gmx, bounce_exim},
    {"exim", bounce_trig_exim, bounce_exim},
    {"sendmail", bounce_trig_sendmail, bounce_sendmail},
    {"exchange", bounce_trig_exchange, bounce_exchange},
    {"gmail", bounce_trig_gmail, bounce_gmail},
    {"domino", bounce_trig_domino, bounce_domino},
};

/* Phrases of a delay warning, in the subject or the prose. */
static const char *const bounce_delay_words[] = {
    "(Delay)",
    "Delivery delayed",
    "Delayed Mail",
    "has not yet been delivered",
    "THIS IS A WARNING ONLY",
    "transient non-fatal errors",
    "Warning: could not send message",
    "There was a temporary problem delivering",
    "Delivery incomplete",
    "will continue to try",
    "will retry",
};

/* bounce_delayish - does s[0..n) read like a delay warning */
static bool bounce_delayish(const char *s, size_t n)
{
    for (size_t k = 0; k < ARRAY_LEN(bounce_delay_words); k++)
        if (bmime_ci_find(s, n, bounce_delay_words[k])) return true;
    /* Exim: "Warning: message 1abc-000 delayed 24 hours" */
    return bmime_ci_prefix(s, n, "Warning: message") && bmime_ci_find(s, n, "delayed");
}

/* bounce_prose_read - run the prose readers over x; 1 when one named recipients */
static int bounce_prose_read(struct bounce_ctx *c, const struct bounce_text *x)
{
    struct bounce_report *r = c->r;
    bool delay = c->delayish || bounce_delayish(x->t, x->n);
    for (size_t i = 0; i < ARRAY_LEN(bounce_proses); i++) {
        const struct bounce_prose *p = &bounce_proses[i];
        bool hit = false;
        for (const char *const *t = p->triggers; *t && !hit; t++)
            hit = bounce_find(x, *t) != NULL;
        if (!hit) continue;
        int first = r->nrcpts;
        p->read(c, x);
        if (c->oom) return -1;
        if (r->nrcpts > first) {
            const char *fmt = p->format;
            /* Exim-shaped text from GMX/web.de servers */
            if (strcmp(fmt, "exim") == 0 && (bmime_ci_find(r->from, strlen(r->from), "@gmx.") ||
                                             bmime_ci_find(r->from, strlen(r->from), "@web.de")))
                fmt = "gmx";
            if (strcmp(fmt, "qmail") == 0 && bmime_ci_find(r->from, strlen(r->from), "yahoo"))
                fmt = "yahoo";
            str_copy(r->format, sizeof r->format, fmt);
            bounce_prose_finish(c, first, delay);
            if (r->reporting_mta[0] == '\0') {
                const char *k = bounce_find(x, "This is the mail system at host ");
                if (!k) k = bounce_find(x, "qmail-send program at ");
                if (k)
                    bounce_word_after(k, (size_t)(x->t + x->n - k),
                                      k[0] == 'q' || k[0] == 'Q' ? "program at " : "at host ",
                                      r->reporting_mta, sizeof r->reporting_mta);
            }
            return 1;
        }
        if (c->prose_format[0] == '\0')
            str_copy(c->prose_format, sizeof c->prose_format, p->format);
    }
    if (c->bounceish) {
        int first = r->nrcpts;
        bounce_qmail(c, x);
        if (r->nrcpts == first) bounce_postfix(c, x);
        if (r->nrcpts == first) bounce_generic(c, x);
        if (c->oom) return -1;
        if (r->nrcpts > first) {
            str_copy(r->format, sizeof r->format, "unknown");
            bounce_prose_finish(c, first, delay);
            return 1;
        }
    }
    return 0;
}

/* bounce_text_collect - the decoded text of every text/plain (html: text/html)
 * part outside the returned message, joined, into a new buffer */
static char *bounce_text_collect(struct bounce_ctx *c, bool html, size_t *outlen)
{
    struct bmime_msg *m = c->mime;
    const char *want = html ? "text/html" : "text/plain";
    size_t cap = 0, n = 0;
    /* decoding never lengthens a body: the raw sizes bound the text */
    for (int i = 0; i < m->nparts; i++)
        if (bounce_is_type(c, i, want)) cap += m->part[i].bodylen + 1;
    if (cap > BOUNCE_TEXT_MAX) cap = BOUNCE_TEXT_MAX;
    char *buf = malloc(cap + 1);
    if (buf == NULL) {
        c->oom = true;
        return NULL;
    }
    buf[0] = '\0';
    for (int i = 0; i < m->nparts && n < cap; i++) {
        if (!bounce_is_type(c, i, want)) continue;
        size_t tl;
        char *t = bounce_part_text(c, &m->part[i], html, &tl);
        if (t == NULL) {
            free(buf);
            return NULL;
        }
        if (tl > cap - n) tl = cap - n;
        memcpy(buf + n, t, tl);
        n += tl;
        if (n < cap) buf[n++] = '\n';
        free(t);
    }
    buf[n] = '\0';
    *outlen = n;
    return buf;
}

/* bounce_prose - read the prose of the message (plain text first, then HTML);
 * also the original quoted after it.  0 or 1 as bounce_prose_read, -1 OOM. */
static int bounce_prose(struct bounce_ctx *c, bool want_orig)
{
    int got = 0;
    for (int pass = 0; pass < 2 && got == 0; pass++) {
        size_t n, after;
        char *t = bounce_text_collect(c, pass == 1, &n);
        if (t == NULL) return -1;
        size_t cut = bounce_orig_marker(t, n, &after);
        struct bounce_text x = {t, cut};
        if (n > 0) got = bounce_prose_read(c, &x);
        if (got > 0 && want_orig && after < n) bounce_orig_span(c, t + after, n - after);
        free(t);
        if (got < 0) return -1;
    }
    return got;
}

/* ---- headers of the feedback message --------------------------------------- */

/* Subject openings of auto-replies (compared case-insensitively). */
static const char *const bounce_auto_subjects[] = {
    "Out of Office",
    "Out of the Office",
    "Automatic reply",
    "Auto:",
    "AutoReply",
    "Auto Reply",
    "Auto-Reply",
    "Autoresponse",
    "Auto Response",
    "Abwesenheitsnotiz",
    "Automatische Antwort",
    "R\xc3\xa9ponse automatique",
    "Reponse automatique",
    "Automatisch antwoord",
    "Risposta automatica",
    "Respuesta autom\xc3\xa1tica",
    "Fuera de la oficina",
    "Resposta autom\xc3\xa1tica",
    "I am out of the office",
};

/* bounce_autoreply - do the headers say auto-reply */
static bool bounce_autoreply(struct bounce_ctx *c)
{
    char v[256];
    const char *s = c->r->subject;
    size_t sl = strlen(s);
    if (bmime_header_get(c->hdr, c->hdrlen, "Auto-Submitted", v, sizeof v) &&
        bmime_ci_prefix(v, strlen(v), "auto-replied"))
        return true;
    if (bmime_header_get(c->hdr, c->hdrlen, "X-Autoreply", v, sizeof v) && strcasecmp(v, "no") != 0)
        return true;
    if (bmime_header_get(c->hdr, c->hdrlen, "X-Autorespond", v, sizeof v)) return true;
    if (bmime_header_get(c->hdr, c->hdrlen, "X-Autogenerated", v, sizeof v) &&
        strcasecmp(v, "reply") == 0)
        return true;
    if (bmime_header_get(c->hdr, c->hdrlen, "Precedence", v, sizeof v) &&
        strcasecmp(v, "auto_reply") == 0)
        return true;
    for (size_t k = 0; k < ARRAY_LEN(bounce_auto_subjects); k++)
        if (bmime_ci_prefix(s, sl, bounce_auto_subjects[k])) return true;
    return bmime_ci_find(s, sl, "vacation") != NULL ||
           bmime_ci_find(s, sl, "out of office") != NULL;
}

/* Subject words of a bounce. */
static const char *const bounce_bounce_subjects[] = {
    "undeliver",
    "delivery status notification",
    "returned mail",
    "failure notice",
    "delivery fail",
    "mail delivery failed",
    "could not be delivered",
    "unzustellbar",
    "nicht zustellbar",
    "non remis",
    "delivery delayed",
    "delayed mail",
    "warning: could not send",
    "returned to sender",
    "delivery notification",
    "mail system error",
    "delivery problem",
};

/* bounce_top_headers - the feedback message's own From, To, Subject and
 * Delivered-To, and whether they say bounce or delay */
static void bounce_top_headers(struct bounce_ctx *c)
{
    struct bounce_report *r = c->r;
    char v[BMIME_VALUE_MAX], d[1024];
    if (bmime_header_get(c->hdr, c->hdrlen, "From", v, sizeof v))
        bounce_addrz(v, r->from, sizeof r->from);
    if (bmime_header_get(c->hdr, c->hdrlen, "To", v, sizeof v))
        bounce_addrz(v, r->to, sizeof r->to);
    if (bmime_header_get(c->hdr, c->hdrlen, "Subject", v, sizeof v)) {
        bmime_decode_words(v, d, sizeof d);
        bounce_setz(r->subject, sizeof r->subject, d);
    }
    static const char *const dto[] = {"Delivered-To", "X-Original-To", "Envelope-To"};
    for (size_t k = 0; k < ARRAY_LEN(dto) && r->delivered_to[0] == '\0'; k++)
        if (bmime_header_get(c->hdr, c->hdrlen, dto[k], v, sizeof v))
            bounce_addrz(v, r->delivered_to, sizeof r->delivered_to);
    const char *s = r->subject;
    size_t sl = strlen(s);
    for (size_t k = 0; k < ARRAY_LEN(bounce_bounce_subjects); k++)
        if (bmime_ci_find(s, sl, bounce_bounce_subjects[k])) c->bounceish = true;
    if (bmime_ci_prefix(r->from, strlen(r->from), "mailer-daemon@") ||
        bmime_ci_prefix(r->from, strlen(r->from), "postmaster@"))
        c->bounceish = true;
    c->delayish = bounce_delayish(s, sl);
}

/* bounce_unparseable - finish r as UNPARSEABLE because why */
static void bounce_unparseable(struct bounce_report *r, const char *why)
{
    r->kind = BOUNCE_KIND_UNPARSEABLE;
    if (r->format[0] == '\0') str_copy(r->format, sizeof r->format, "unknown");
    str_copy(r->reason, sizeof r->reason, why);
}

/* bounce_overall - the report's kind from its recipients */
static enum BOUNCE_KIND bounce_overall(const struct bounce_report *r)
{
    bool delay = false, delivered = false;
    for (int i = 0; i < r->nrcpts; i++) {
        if (r->rcpts[i].kind == BOUNCE_KIND_BOUNCE) return BOUNCE_KIND_BOUNCE;
        if (r->rcpts[i].kind == BOUNCE_KIND_DELAY) delay = true;
        if (r->rcpts[i].kind == BOUNCE_KIND_DELIVERED) delivered = true;
    }
    return delay ? BOUNCE_KIND_DELAY : delivered ? BOUNCE_KIND_DELIVERED : BOUNCE_KIND_UNPARSEABLE;
}

/* bounce_run - the parse proper; -1 on OOM */
static int bounce_run(struct bounce_ctx *c, const char *msg, size_t len)
{
    struct bounce_report *r = c->r;
    bmime_parse(msg, len, c->mime);
    c->hdr = c->mime->part[0].hdr;
    c->hdrlen = c->mime->part[0].hdrlen;
    bounce_top_headers(c);

    int rc = bounce_arf(c);
    if (rc < 0) return -1;
    if (rc > 0) return 0;

    rc = bounce_dsn(c);
    if (rc < 0) return -1;
    if (rc > 0) {
        str_copy(r->format, sizeof r->format, "rfc3464");
        if (bounce_orig_parts(c) < 0) return -1;
        r->kind = bounce_overall(r);
        return 0;
    }

    if (bounce_orig_parts(c) < 0) return -1;
    rc = bounce_prose(c, r->orig_message_id[0] == '\0' && r->orig_from[0] == '\0');
    if (rc < 0) return -1;
    if (rc > 0) {
        r->kind = bounce_overall(r);
        return 0;
    }

    if (bounce_autoreply(c)) {
        r->kind = BOUNCE_KIND_AUTOREPLY;
        str_copy(r->format, sizeof r->format, "autoreply");
        return 0;
    }

    char why[200];
    if (c->dsn_seen)
        bounce_unparseable(r, "delivery-status part names no recipient");
    else if (c->mime->too_deep)
        bounce_unparseable(r, "MIME nesting too deep");
    else if (c->mime->too_many)
        bounce_unparseable(r, "too many MIME parts");
    else if (c->mime->truncated)
        bounce_unparseable(r, "truncated MIME");
    else if (c->prose_format[0]) {
        snprintf(why, sizeof why, "%s bounce names no recipient", c->prose_format);
        bounce_unparseable(r, why);
    } else if (c->bounceish)
        bounce_unparseable(r, "bounce without recognisable recipient");
    else if (c->hdrlen == 0)
        bounce_unparseable(r, "no header section");
    else
        bounce_unparseable(r, "no recognisable bounce");
    return 0;
}

int bounce_parse(const char *msg, size_t len, size_t max_len, struct bounce_report *out)
{
    memset(out, 0, sizeof *out);
    if (msg == NULL) len = 0;
    if (len > max_len || len > BOUNCE_HARD_MAX) {
        bounce_unparseable(out, "too large");
        return 0;
    }
    /* an mbox "From " envelope line is not part of the message */
    if (len >= 5 && memcmp(msg, "From ", 5) == 0) {
        const char *lf = memchr(msg, '\n', len);
        size_t skip = lf ? (size_t)(lf - msg) + 1 : len;
        msg += skip;
        len -= skip;
    }
    size_t blank = 0;
    while (blank < len &&
           (msg[blank] == '\r' || msg[blank] == '\n' || msg[blank] == ' ' || msg[blank] == '\t'))
        blank++;
    if (blank == len) {
        bounce_unparseable(out, "empty message");
        return 0;
    }
    struct bounce_ctx c;
    memset(&c, 0, sizeof c);
    c.r = out;
    c.mime = malloc(sizeof *c.mime);
    if (c.mime == NULL) return -1;
    int rc = bounce_run(&c, msg, len);
    free(c.mime);
    /* on OOM the report is partial but consistent: bounce_report_free works */
    if (rc < 0 || c.oom) return -1;
    return 0;
}

void bounce_report_free(struct bounce_report *r)
{
    if (r == NULL) return;
    free(r->rcpts);
    r->rcpts = NULL;
    r->nrcpts = 0;
}

/* bounce_json_set - o[key] = s; -1 on OOM */
static int bounce_json_set(json_t *o, const char *key, const char *s)
{
    json_t *v = json_string(s);
    /* bounce_set() made every stored string valid UTF-8, so NULL means OOM here;
     * a string from elsewhere that jansson refuses is written as "" */
    if (v == NULL) v = json_string("");
    if (v == NULL) return -1;
    return json_object_set_new(o, key, v);
}

json_t *bounce_rcpt_json(const struct bounce_report *r, int i)
{
    if (r == NULL || i < -1 || i >= r->nrcpts) return NULL;
    const struct bounce_rcpt *rc = i >= 0 ? &r->rcpts[i] : NULL;
    json_t *o = json_object();
    if (o == NULL) return NULL;
    enum BOUNCE_KIND kind = rc ? rc->kind : r->kind;
    const char *who = rc ? rc->recipient : r->kind == BOUNCE_KIND_AUTOREPLY ? r->from : "";
    int err = 0;
    err |= bounce_json_set(o, "kind", bounce_kind_str(kind));
    err |= bounce_json_set(o, "recipient", who);
    err |= bounce_json_set(o, "status", rc ? rc->status : "");
    err |= bounce_json_set(o, "action", rc ? rc->action : "");
    err |= bounce_json_set(o, "diagnostic", rc ? rc->diagnostic : "");
    err |= bounce_json_set(o, "remote_mta", rc ? rc->remote_mta : "");
    err |= bounce_json_set(o, "reporting_mta", r->reporting_mta);
    err |= bounce_json_set(o, "format", r->format);
    err |= bounce_json_set(o, "orig_message_id", r->orig_message_id);
    if (rc && rc->code != 0) {
        json_t *v = json_integer(rc->code);
        err |= v ? json_object_set_new(o, "code", v) : -1;
    }
    if (r->kind == BOUNCE_KIND_COMPLAINT) {
        err |= bounce_json_set(o, "feedback_type", r->feedback_type);
        err |= bounce_json_set(o, "source_ip", r->source_ip);
    }
    if (r->kind == BOUNCE_KIND_UNPARSEABLE) err |= bounce_json_set(o, "reason", r->reason);
    if (err) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* bounce_from_line - does the line at buf[p] start with "From " */
static bool bounce_from_line(const char *buf, size_t len, size_t p)
{
    return len - p >= 5 && memcmp(buf + p, "From ", 5) == 0;
}

int bounce_mbox_next(const char *buf, size_t len, size_t *pos, const char **msg, size_t *msglen)
{
    size_t p = *pos;
    if (buf == NULL || p >= len) return 0;
    if (p == 0 && !bounce_from_line(buf, len, 0)) {
        /* not a mailbox: the whole buffer is one message */
        *msg = buf;
        *msglen = len;
        *pos = len;
        return 1;
    }
    /* skip the "From " line (and any empty lines a writer left before it) */
    while (p < len && (buf[p] == '\n' || buf[p] == '\r'))
        p++;
    if (p >= len) {
        *pos = len;
        return 0;
    }
    if (bounce_from_line(buf, len, p)) {
        const char *lf = memchr(buf + p, '\n', len - p);
        p = lf ? (size_t)(lf - buf) + 1 : len;
    }
    size_t start = p, end = len, next = len;
    /* the message runs to the next line that starts with "From " */
    while (p < len) {
        const char *lf = memchr(buf + p, '\n', len - p);
        if (lf == NULL) break;
        p = (size_t)(lf - buf) + 1;
        if (bounce_from_line(buf, len, p)) {
            end = next = p;
            break;
        }
    }
    /* the empty line before "From " separates, it is not content */
    if (next < len) {
        if (end - start >= 2 && buf[end - 1] == '\n' && buf[end - 2] == '\n')
            end--;
        else if (end - start >= 4 && memcmp(buf + end - 4, "\r\n\r\n", 4) == 0)
            end -= 2;
    }
    *msg = buf + start;
    *msglen = end - start;
    *pos = next;
    return 1;
}

size_t bounce_mbox_unquote(const char *msg, size_t len, char *out, size_t outsz)
{
    size_t o = 0, i = 0;
    if (len > outsz) len = outsz;
    while (i < len) {
        /* at a line start: ">+From " loses one '>' */
        size_t g = i;
        while (g < len && msg[g] == '>')
            g++;
        if (g > i && len - g >= 5 && memcmp(msg + g, "From ", 5) == 0) i++;
        const char *lf = memchr(msg + i, '\n', len - i);
        size_t e = lf ? (size_t)(lf - msg) + 1 : len;
        memmove(out + o, msg + i, e - i);
        o += e - i;
        i = e;
    }
    return o;
}
