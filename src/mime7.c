/*
 * mime7 - 8-bit to 7-bit MIME downgrade (see mime7.h).
 *
 * Owns one walk over the MIME tree of a message held in memory.  Entry points:
 * mime7_needed() (a scan for octets > 127) and mime7_convert().
 *
 * The walk works on entities (a header section, an empty line, a body).  An
 * entity with no 8-bit octet anywhere is copied whole and never parsed, so
 * malformed but 7-bit MIME passes through untouched and the depth and part caps
 * only count entities that need work.  An entity that does hold 8-bit octets must
 * have a 7-bit header section; then its body is either
 *   - a multipart: the body is split at the delimiter lines; the preamble,
 *     delimiters and epilogue ("gaps") are copied and must be 7-bit, and each part
 *     is an entity handled by the same walk one level down;
 *   - a leaf under 7bit, 8bit or no Content-Transfer-Encoding: quoted-printable;
 *   - anything else (a message type, base64, quoted-printable, binary, unknown): the
 *     8-bit octets cannot be fixed here, so the walk fails with a reason.
 * Hence on success every output octet is 7-bit: each input octet lies in a header
 * section, a gap or a leaf body, and only 7-bit ones are copied.
 *
 * Invariants: output is appended through mime7_put(), which records the first
 * failed append; mime7_convert() rolls out back on any failure.  Recursion is one
 * level per multipart and stops at MIME7_MAX_DEPTH; comments in header fields are
 * skipped with a counter, not recursion.  Lines written here (quoted-printable,
 * replaced fields) end in CRLF and hold at most MIME7_QP_LINE octets; copied bytes
 * keep their own line ends.  Per RFC 2046 5.1.1 the line end before a delimiter
 * belongs to the delimiter, so an encoded part ends without one and the copied
 * delimiter supplies it.
 */
#include "mime7.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MIME7_TYPE_MAX 128 /* "type/subtype", lower case */

#define MIME7_CTE_FIELD "Content-Transfer-Encoding"

enum MIME7_CTE {
    MIME7_CTE_NONE, /* no field */
    MIME7_CTE_7BIT,
    MIME7_CTE_8BIT,
    MIME7_CTE_BINARY,
    MIME7_CTE_BASE64,
    MIME7_CTE_QP,
    MIME7_CTE_OTHER, /* an x-token or garbage */
};

/* The walk's state: the caller's buffer, the first failure and its reason. */
struct mime7_ctx {
    struct vbuf *out;
    int err;
    int nparts;
    char *why;
    size_t whyn;
};

/* One header field: [start, end) covers its first line, its continuation lines
 * and the final line end; the name is [start, start + namelen), the value starts
 * at val (after the colon).  namelen is 0 for a line that is not a field. */
struct mime7_field {
    size_t start, end;
    size_t namelen;
    size_t val;
};

/* What the walk needs from an entity's header section. */
struct mime7_head {
    char type[MIME7_TYPE_MAX]; /* "" when absent or unparsable */
    char boundary[MIME7_BOUNDARY_MAX + 1];
    size_t boundary_len; /* 0 when absent, empty or too long */
    enum MIME7_CTE cte;
    char cte_name[32]; /* the field's token, for the reason text */
    bool mime_version;
};

/* mime7_cte_str - the token for a known encoding, "" for NONE and OTHER */
static const char *mime7_cte_str(enum MIME7_CTE c)
{
    switch (c) {
    case MIME7_CTE_7BIT:
        return "7bit";
    case MIME7_CTE_8BIT:
        return "8bit";
    case MIME7_CTE_BINARY:
        return "binary";
    case MIME7_CTE_BASE64:
        return "base64";
    case MIME7_CTE_QP:
        return "quoted-printable";
    case MIME7_CTE_NONE:
    case MIME7_CTE_OTHER:
        break;
    }
    return "";
}

/* mime7_fail - record the first failure and its reason (printf-style); -1 */
__attribute__((format(printf, 2, 3))) static int mime7_fail(struct mime7_ctx *c, const char *fmt,
                                                            ...)
{
    if (c->err == 0) {
        c->err = -1;
        if (c->why != NULL && c->whyn > 0) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->why, c->whyn, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

/* mime7_put - append n octets unless an earlier step failed; a failure sticks */
static void mime7_put(struct mime7_ctx *c, const void *p, size_t n)
{
    if (c->err == 0 && vbuf_append(c->out, p, n) < 0) mime7_fail(c, "output over limit");
}

/* mime7_puts - append the C string s */
static void mime7_puts(struct mime7_ctx *c, const char *s)
{
    mime7_put(c, s, strlen(s));
}

/* mime7_has8 - any octet > 127 in p[0..n)? */
static bool mime7_has8(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] & 0x80) return true;
    return false;
}

bool mime7_needed(const uint8_t *msg, size_t len)
{
    return mime7_has8(msg, len);
}

/* mime7_lower - ASCII lower case of one octet, without the locale */
static uint8_t mime7_lower(uint8_t ch)
{
    return ch >= 'A' && ch <= 'Z' ? (uint8_t)(ch - 'A' + 'a') : ch;
}

/* mime7_ieq - do the n octets at p equal the C string lit, ignoring ASCII case? */
static bool mime7_ieq(const uint8_t *p, size_t n, const char *lit)
{
    if (strlen(lit) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (mime7_lower(p[i]) != mime7_lower((uint8_t)lit[i])) return false;
    return true;
}

/* mime7_eol - index of the next LF at or after i in p[0..n), or n */
static size_t mime7_eol(const uint8_t *p, size_t n, size_t i)
{
    const uint8_t *lf = memchr(p + i, '\n', n - i);
    return lf != NULL ? (size_t)(lf - p) : n;
}

/*
 * mime7_split - where the header section of the entity p[0..n) ends: *hlen is
 * the section's length (every field with its line end), *bstart where the body
 * begins (after the empty line).  An entity that starts with an empty line has
 * no header; one without an empty line is all header and has an empty body.
 */
static void mime7_split(const uint8_t *p, size_t n, size_t *hlen, size_t *bstart)
{
    size_t i = 0;
    while (i < n) {
        size_t lf = mime7_eol(p, n, i);
        if (lf == n) break;
        if (lf == i || (lf == i + 1 && p[i] == '\r')) {
            *hlen = i;
            *bstart = lf + 1;
            return;
        }
        i = lf + 1;
    }
    *hlen = n;
    *bstart = n;
}

/*
 * mime7_next_field - the field starting at *pos of the header section h[0..n)
 * into f, advancing *pos past it; false at the end.  The fields returned tile the
 * section exactly, so copying each [start, end) reproduces it.
 */
static bool mime7_next_field(const uint8_t *h, size_t n, size_t *pos, struct mime7_field *f)
{
    if (*pos >= n) return false;
    f->start = *pos;
    size_t lf = mime7_eol(h, n, *pos);
    f->end = lf < n ? lf + 1 : n;
    while (f->end < n && (h[f->end] == ' ' || h[f->end] == '\t')) {
        lf = mime7_eol(h, n, f->end);
        f->end = lf < n ? lf + 1 : n;
    }
    f->namelen = 0;
    f->val = f->end;
    /* the name is on the first line: a colon on a continuation line names nothing */
    size_t first_end = mime7_eol(h, n, f->start);
    const uint8_t *colon = memchr(h + f->start, ':', first_end - f->start);
    if (colon != NULL) {
        size_t nl = (size_t)(colon - h) - f->start;
        while (nl > 0 && (h[f->start + nl - 1] == ' ' || h[f->start + nl - 1] == '\t'))
            nl--; /* obsolete "Name :" */
        f->namelen = nl;
        f->val = (size_t)(colon - h) + 1;
    }
    *pos = f->end;
    return true;
}

/* mime7_is_field - is f named name (case-insensitive)? */
static bool mime7_is_field(const uint8_t *h, const struct mime7_field *f, const char *name)
{
    return f->namelen > 0 && mime7_ieq(h + f->start, f->namelen, name);
}

/*
 * mime7_skip_cfws - advance *i over white space, line ends (a folded field reads
 * as one line) and RFC 5322 comments in p[0..n).  Comment nesting is a counter;
 * an unclosed comment runs to the end.
 */
static void mime7_skip_cfws(const uint8_t *p, size_t n, size_t *i)
{
    size_t level = 0;
    while (*i < n) {
        uint8_t ch = p[*i];
        if (level > 0) {
            if (ch == '\\' && *i + 1 < n)
                (*i)++;
            else if (ch == '(')
                level++;
            else if (ch == ')')
                level--;
        } else if (ch == '(') {
            level = 1;
        } else if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') {
            return;
        }
        (*i)++;
    }
}

/* mime7_token - length of the RFC 2045 token at p[i..n) (0 when none) */
static size_t mime7_token(const uint8_t *p, size_t n, size_t i)
{
    size_t k = i;
    while (k < n && p[k] > 0x20 && p[k] < 0x7f && strchr("()<>@,;:\\\"/[]?=", p[k]) == NULL)
        k++;
    return k - i;
}

/*
 * mime7_parse_ctype - type/subtype (lower case) and the boundary parameter of the
 * Content-Type value p[i..n) into hd.  An unparsable type leaves hd->type empty,
 * which the caller reads as the default (RFC 2045 5.2).  Parameters are read up
 * to the first syntax error.
 */
static void mime7_parse_ctype(const uint8_t *p, size_t n, size_t i, struct mime7_head *hd)
{
    mime7_skip_cfws(p, n, &i);
    size_t t1 = mime7_token(p, n, i), ts = i;
    i += t1;
    mime7_skip_cfws(p, n, &i);
    if (t1 == 0 || i >= n || p[i] != '/') return;
    i++;
    mime7_skip_cfws(p, n, &i);
    size_t t2 = mime7_token(p, n, i), ss = i;
    i += t2;
    if (t2 == 0 || t1 + 1 + t2 >= sizeof hd->type) return;
    for (size_t k = 0; k < t1; k++)
        hd->type[k] = (char)mime7_lower(p[ts + k]);
    hd->type[t1] = '/';
    for (size_t k = 0; k < t2; k++)
        hd->type[t1 + 1 + k] = (char)mime7_lower(p[ss + k]);
    hd->type[t1 + 1 + t2] = '\0';

    bool seen = false;
    for (;;) {
        mime7_skip_cfws(p, n, &i);
        if (i >= n || p[i] != ';') return;
        i++;
        mime7_skip_cfws(p, n, &i);
        size_t an = mime7_token(p, n, i), as = i;
        i += an;
        mime7_skip_cfws(p, n, &i);
        if (an == 0 || i >= n || p[i] != '=') return;
        i++;
        mime7_skip_cfws(p, n, &i);
        bool want = !seen && mime7_ieq(p + as, an, "boundary");
        size_t len = 0;
        bool bad = false;
        if (i < n && p[i] == '"') {
            /* quoted-string: backslash quotes the next octet; a fold inside is
             * removed with its line end */
            for (i++; i < n && p[i] != '"'; i++) {
                if (p[i] == '\\' && i + 1 < n) i++;
                if (!want || p[i] == '\r' || p[i] == '\n') continue;
                if (len < MIME7_BOUNDARY_MAX)
                    hd->boundary[len++] = (char)p[i];
                else
                    bad = true;
            }
            if (i >= n) return; /* unterminated */
            i++;
        } else {
            size_t vn = mime7_token(p, n, i);
            if (vn == 0) return;
            if (want) {
                if (vn > MIME7_BOUNDARY_MAX)
                    bad = true;
                else
                    memcpy(hd->boundary, p + i, vn);
                len = bad ? 0 : vn;
            }
            i += vn;
        }
        if (want) {
            seen = true;
            hd->boundary_len = bad ? 0 : len;
            hd->boundary[hd->boundary_len] = '\0';
        }
    }
}

/* mime7_parse_cte - the Content-Transfer-Encoding value p[i..n) into hd */
static void mime7_parse_cte(const uint8_t *p, size_t n, size_t i, struct mime7_head *hd)
{
    static const enum MIME7_CTE known[] = {MIME7_CTE_7BIT, MIME7_CTE_8BIT, MIME7_CTE_BINARY,
                                           MIME7_CTE_BASE64, MIME7_CTE_QP};
    mime7_skip_cfws(p, n, &i);
    size_t tn = mime7_token(p, n, i);
    hd->cte = MIME7_CTE_OTHER;
    size_t cn = tn < sizeof hd->cte_name - 1 ? tn : sizeof hd->cte_name - 1;
    memcpy(hd->cte_name, p + i, cn);
    hd->cte_name[cn] = '\0';
    for (size_t k = 0; k < ARRAY_LEN(known); k++)
        if (mime7_ieq(p + i, tn, mime7_cte_str(known[k]))) hd->cte = known[k];
}

/* mime7_parse_head - the fields of the header section h[0..n) the walk needs;
 * the first Content-Type and Content-Transfer-Encoding fields count */
static void mime7_parse_head(const uint8_t *h, size_t n, struct mime7_head *hd)
{
    memset(hd, 0, sizeof *hd);
    hd->cte = MIME7_CTE_NONE;
    bool have_ct = false, have_cte = false;
    struct mime7_field f;
    size_t pos = 0;
    while (mime7_next_field(h, n, &pos, &f)) {
        if (!have_ct && mime7_is_field(h, &f, "Content-Type")) {
            have_ct = true;
            mime7_parse_ctype(h, f.end, f.val, hd);
        } else if (!have_cte && mime7_is_field(h, &f, MIME7_CTE_FIELD)) {
            have_cte = true;
            mime7_parse_cte(h, f.end, f.val, hd);
        } else if (mime7_is_field(h, &f, "MIME-Version")) {
            hd->mime_version = true;
        }
    }
}

/*
 * mime7_put_head - copy the header section h[0..n) with every Content-Transfer-
 * Encoding field replaced by one "Content-Transfer-Encoding: cte" (at the first
 * one's place; later duplicates dropped).  When there is none: append it if add,
 * preceded by "MIME-Version: 1.0" if mime_version and the section has none.
 */
static void mime7_put_head(struct mime7_ctx *c, const uint8_t *h, size_t n, const char *cte,
                           bool add, bool mime_version)
{
    struct mime7_field f;
    size_t pos = 0;
    bool done = false, have_mv = false;
    while (mime7_next_field(h, n, &pos, &f)) {
        if (mime7_is_field(h, &f, MIME7_CTE_FIELD)) {
            if (!done) {
                mime7_puts(c, MIME7_CTE_FIELD ": ");
                mime7_puts(c, cte);
                mime7_puts(c, "\r\n");
                done = true;
            }
            continue;
        }
        if (mime7_is_field(h, &f, "MIME-Version")) have_mv = true;
        mime7_put(c, h + f.start, f.end - f.start);
    }
    if (done || !add) return;
    if (mime_version && !have_mv) mime7_puts(c, "MIME-Version: 1.0\r\n");
    mime7_puts(c, MIME7_CTE_FIELD ": ");
    mime7_puts(c, cte);
    mime7_puts(c, "\r\n");
}

/*
 * mime7_qp_line - append the quoted-printable form of one line s[0..n) (no line
 * end).  Printable ASCII other than "=" stays; so do space and tab except as the
 * line's last octet (RFC 2045 6.7 rule 3); all else becomes "=XX".  An output
 * line is broken with a soft "=" so that, "=" included, it holds at most
 * MIME7_QP_LINE octets; the line's last token may use the whole width since no
 * "=" follows it.  An "=XX" is never split.
 */
static void mime7_qp_line(struct mime7_ctx *c, const uint8_t *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    char buf[MIME7_QP_LINE + 3];
    size_t cur = 0;
    for (size_t j = 0; j < n; j++) {
        uint8_t ch = s[j];
        bool last = j + 1 == n;
        char tok[3];
        size_t t = 1;
        if ((ch == ' ' || ch == '\t') && !last) {
            tok[0] = (char)ch;
        } else if (ch >= 33 && ch <= 126 && ch != '=') {
            tok[0] = (char)ch;
        } else {
            tok[0] = '=';
            tok[1] = hex[ch >> 4];
            tok[2] = hex[ch & 15];
            t = 3;
        }
        size_t room = last ? MIME7_QP_LINE : MIME7_QP_LINE - 1;
        if (cur + t > room) {
            buf[cur++] = '=';
            buf[cur++] = '\r';
            buf[cur++] = '\n';
            mime7_put(c, buf, cur);
            cur = 0;
        }
        memcpy(buf + cur, tok, t);
        cur += t;
    }
    mime7_put(c, buf, cur);
}

/*
 * mime7_qp - append body p[0..n) as quoted-printable.  A LF, with a CR before it,
 * is a hard line break and is written as CRLF; a CR elsewhere is data ("=0D").
 * A last line without a line end gets none.
 */
static void mime7_qp(struct mime7_ctx *c, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && c->err == 0) {
        size_t lf = mime7_eol(p, n, i), ce = lf;
        if (lf < n && ce > i && p[ce - 1] == '\r') ce--;
        mime7_qp_line(c, p + i, ce - i);
        if (lf == n) break;
        mime7_puts(c, "\r\n");
        i = lf + 1;
    }
}

/*
 * mime7_delim - is the line at body[i..n) a delimiter for boundary b?  0 no, 1 a
 * delimiter, 2 the close delimiter.  RFC 2046 5.1.1: "--" boundary, "--" for the
 * close one, then only linear white space up to the line end.  Requiring that
 * keeps an inner boundary that merely starts with an outer one from matching.
 */
static int mime7_delim(const uint8_t *p, size_t n, size_t i, const char *b, size_t blen)
{
    if (n - i < 2 + blen || p[i] != '-' || p[i + 1] != '-' || memcmp(p + i + 2, b, blen) != 0)
        return 0;
    size_t k = i + 2 + blen;
    int kind = 1;
    if (n - k >= 2 && p[k] == '-' && p[k + 1] == '-') {
        kind = 2;
        k += 2;
    }
    while (k < n && (p[k] == ' ' || p[k] == '\t'))
        k++;
    if (k < n && p[k] == '\r') k++;
    return k == n || p[k] == '\n' ? kind : 0;
}

static int mime7_entity(struct mime7_ctx *c, const uint8_t *p, size_t n, int depth, bool in_digest);

/* mime7_gap - copy multipart text that is no part's content (preamble,
 * delimiters, epilogue); it cannot be encoded, so it must be 7-bit */
static int mime7_gap(struct mime7_ctx *c, const uint8_t *p, size_t n)
{
    if (mime7_has8(p, n))
        return mime7_fail(c, "8-bit octets in a multipart preamble, delimiter or epilogue");
    mime7_put(c, p, n);
    return c->err;
}

/*
 * mime7_multipart - convert the body p[0..n) of a multipart with boundary b at
 * depth: gaps copied, each part walked as an entity one level down.  A missing
 * close delimiter lets the last part run to the end of the body.
 */
static int mime7_multipart(struct mime7_ctx *c, const uint8_t *p, size_t n, const char *b,
                           size_t blen, int depth, bool digest)
{
    size_t copied = 0, part = 0, i = 0;
    bool in_part = false;
    while (i < n) {
        size_t lf = mime7_eol(p, n, i);
        int kind = mime7_delim(p, n, i, b, blen);
        if (kind != 0) {
            if (in_part) {
                /* the line end before the delimiter belongs to the delimiter */
                size_t end = i;
                if (end > part && p[end - 1] == '\n') end--;
                if (end > part && p[end - 1] == '\r') end--;
                if (mime7_entity(c, p + part, end - part, depth + 1, digest) < 0) return -1;
                copied = end;
            }
            if (kind == 2) {
                in_part = false;
                break;
            }
            part = lf < n ? lf + 1 : n;
            if (mime7_gap(c, p + copied, part - copied) < 0) return -1;
            copied = part;
            in_part = true;
        }
        i = lf < n ? lf + 1 : n;
    }
    if (in_part) {
        if (mime7_entity(c, p + part, n - part, depth + 1, digest) < 0) return -1;
        copied = n;
    }
    return mime7_gap(c, p + copied, n - copied);
}

/*
 * mime7_entity - append the 7-bit form of the entity p[0..n) at depth (0 for the
 * message); in_digest when its parent is multipart/digest, which makes
 * message/rfc822 the default type (RFC 2046 5.1.5).
 */
static int mime7_entity(struct mime7_ctx *c, const uint8_t *p, size_t n, int depth, bool in_digest)
{
    if (!mime7_has8(p, n)) {
        mime7_put(c, p, n);
        return c->err;
    }
    if (depth > MIME7_MAX_DEPTH) return mime7_fail(c, "MIME nesting too deep");
    if (++c->nparts > MIME7_MAX_PARTS) return mime7_fail(c, "too many MIME parts");

    size_t hlen, bstart;
    mime7_split(p, n, &hlen, &bstart);
    if (mime7_has8(p, hlen))
        return mime7_fail(c, "8-bit header %s (needs SMTPUTF8)",
                          depth == 0 ? "in the message" : "in a body part");
    /* the header is 7-bit and the empty line is too, so the body is 8-bit */
    struct mime7_head hd;
    mime7_parse_head(p, hlen, &hd);
    const char *type = hd.type;
    if (type[0] == '\0') type = in_digest ? "message/rfc822" : "text/plain";
    const uint8_t *body = p + bstart;
    size_t blen = n - bstart;

    if (strncmp(type, "multipart/", 10) == 0) {
        if (hd.boundary_len == 0)
            return mime7_fail(c, "%s without a usable boundary", type);
        /* the parts will all be 7-bit: a label saying otherwise would be false */
        if (hd.cte == MIME7_CTE_8BIT || hd.cte == MIME7_CTE_BINARY)
            mime7_put_head(c, p, hlen, "7bit", false, false);
        else
            mime7_put(c, p, hlen);
        mime7_put(c, p + hlen, bstart - hlen);
        if (c->err != 0) return -1;
        return mime7_multipart(c, body, blen, hd.boundary, hd.boundary_len, depth,
                               strcmp(type, "multipart/digest") == 0);
    }
    if (strncmp(type, "message/", 8) == 0)
        return mime7_fail(c, "8-bit %s part (it may not be encoded)", type);
    switch (hd.cte) {
    case MIME7_CTE_NONE:
    case MIME7_CTE_7BIT:
    case MIME7_CTE_8BIT:
        break;
    case MIME7_CTE_BASE64:
    case MIME7_CTE_QP:
        return mime7_fail(c, "8-bit octets in a %s part", mime7_cte_str(hd.cte));
    case MIME7_CTE_BINARY:
    case MIME7_CTE_OTHER:
        return mime7_fail(c, "8-bit octets under Content-Transfer-Encoding \"%s\"", hd.cte_name);
    }
    mime7_put_head(c, p, hlen, "quoted-printable", true, depth == 0);
    mime7_put(c, p + hlen, bstart - hlen);
    mime7_qp(c, body, blen);
    return c->err;
}

int mime7_convert(const uint8_t *msg, size_t len, struct vbuf *out, char *why, size_t whyn)
{
    struct mime7_ctx c = {.out = out, .why = why, .whyn = whyn};
    size_t start = out->len;
    if (why != NULL && whyn > 0) why[0] = '\0';
    if (mime7_entity(&c, msg, len, 0, false) < 0 || c.err != 0) {
        out->len = start;
        return -1;
    }
    return 0;
}
