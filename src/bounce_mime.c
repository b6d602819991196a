/*
 * bounce_mime - MIME structure and decoders for the feedback parser (see
 * bounce_mime.h).
 *
 * Owns the reading of untrusted message structure: where a header field starts
 * and ends, which lines are boundary delimiters, and how encoded bodies become
 * bytes.  Every loop advances by at least one octet per iteration over a span
 * whose end is fixed before the loop starts, so no input can make it spin; the
 * only recursion is over multipart nesting and stops at BMIME_MAX_DEPTH.  Output
 * buffers are written through bmime_put(), which never writes past outsz - 1 and
 * keeps the result NUL-terminated.
 */
#include "bounce_mime.h"

#include <string.h>
#include <strings.h>

#include "util.h"

/* bmime_lower - ASCII lower case of c, locale-free */
static char bmime_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* bmime_wsp - SP or HTAB */
static bool bmime_wsp(char c)
{
    return c == ' ' || c == '\t';
}

const char *bmime_cte_str(enum BMIME_CTE c)
{
    switch (c) {
    case BMIME_CTE_IDENTITY:
        return "identity";
    case BMIME_CTE_BASE64:
        return "base64";
    case BMIME_CTE_QP:
        return "quoted-printable";
    }
    return "?";
}

int bmime_line_next(const char *p, size_t len, size_t *pos, const char **line, size_t *linelen)
{
    if (*pos >= len) return 0;
    const char *s = p + *pos;
    const char *lf = memchr(s, '\n', len - *pos);
    size_t n = lf ? (size_t)(lf - s) : len - *pos;
    *pos += lf ? n + 1 : n;
    if (n > 0 && s[n - 1] == '\r') n--;
    *line = s;
    *linelen = n;
    return 1;
}

bool bmime_ci_prefix(const char *s, size_t n, const char *prefix)
{
    size_t i = 0;
    for (; prefix[i]; i++)
        if (i >= n || bmime_lower(s[i]) != bmime_lower(prefix[i])) return false;
    return true;
}

const char *bmime_ci_find(const char *hay, size_t haylen, const char *needle)
{
    size_t k = strlen(needle);
    if (k == 0) return hay;
    if (k > haylen) return NULL;
    /* candidates are found with memchr on both cases of the first octet (the
     * library's vector code); each is then compared in full */
    char lo = bmime_lower(needle[0]);
    char up = (lo >= 'a' && lo <= 'z') ? (char)(lo - 'a' + 'A') : lo;
    size_t last = haylen - k; /* the last offset a match may start at */
    const char *pl = memchr(hay, lo, last + 1);
    const char *pu = up != lo ? memchr(hay, up, last + 1) : NULL;
    while (pl || pu) {
        const char *c = (pl && (!pu || pl < pu)) ? pl : pu;
        if (bmime_ci_prefix(c, haylen - (size_t)(c - hay), needle)) return c;
        size_t from = (size_t)(c - hay) + 1;
        if (from > last) return NULL;
        if (c == pl) pl = memchr(hay + from, lo, last + 1 - from);
        if (c == pu) pu = memchr(hay + from, up, last + 1 - from);
    }
    return NULL;
}

/* bmime_is_field_line - does the line look like "name: value" (a printable name
 * without spaces, then a colon; the obsolete "name :" form too) */
static bool bmime_is_field_line(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && s[i] > ' ' && s[i] < 0x7f && s[i] != ':')
        i++;
    if (i == 0 || i > BMIME_NAME_MAX - 1) return false;
    while (i < n && bmime_wsp(s[i]))
        i++;
    return i < n && s[i] == ':';
}

void bmime_split(const char *p, size_t len, const char **hdr, size_t *hdrlen, const char **body,
                 size_t *bodylen)
{
    size_t pos = 0;
    const char *line;
    size_t n;
    *hdr = p;
    *hdrlen = 0;
    *body = p;
    *bodylen = len;
    if (len == 0) return;
    /* An entity whose first line is neither a field nor empty has no header
     * section at all (a MIME part with its blank line missing, or plain text). */
    if (!bmime_line_next(p, len, &pos, &line, &n)) return;
    if (n > 0 && !bmime_is_field_line(line, n)) return;
    pos = 0;
    for (;;) {
        size_t at = pos;
        if (!bmime_line_next(p, len, &pos, &line, &n)) break;
        if (n == 0) {
            *hdrlen = at < BMIME_HEADER_MAX ? at : BMIME_HEADER_MAX;
            *body = p + pos;
            *bodylen = len - pos;
            return;
        }
    }
    /* no empty line: all header */
    *hdrlen = len < BMIME_HEADER_MAX ? len : BMIME_HEADER_MAX;
    *body = p + len;
    *bodylen = 0;
}

/* bmime_put - append n octets to out[*o] within outsz (keeps room for the NUL) */
static void bmime_put(char *out, size_t outsz, size_t *o, const char *s, size_t n)
{
    if (outsz == 0 || *o >= outsz - 1) return;
    size_t room = outsz - 1 - *o;
    if (n > room) n = room;
    memcpy(out + *o, s, n);
    *o += n;
    out[*o] = '\0';
}

/* bmime_field_scan - bmime_field_next; with want set, a field of another name
 * is stepped over without copying its value (f->value is then empty) */
static enum BMIME_FIELD_NEXT bmime_field_scan(const char *p, size_t len, size_t *pos,
                                              struct bmime_field *f, const char *want)
{
    const char *line;
    size_t n;
    for (;;) {
        if (!bmime_line_next(p, len, pos, &line, &n)) return BMIME_FIELD_END;
        if (n == 0) return BMIME_FIELD_BLANK;
        /* a line of white space only separates groups too (seen in the wild) */
        size_t k = 0;
        while (k < n && bmime_wsp(line[k]))
            k++;
        if (k == n) return BMIME_FIELD_BLANK;
        if (k > 0 || !bmime_is_field_line(line, n)) continue; /* stray continuation */
        size_t i = 0;
        while (i < n && line[i] != ':' && !bmime_wsp(line[i]))
            i++;
        memcpy(f->name, line, i); /* i < BMIME_NAME_MAX: checked by is_field_line */
        f->name[i] = '\0';
        bool copy = want == NULL || (bmime_lower(f->name[0]) == bmime_lower(want[0]) &&
                                     strcasecmp(f->name, want) == 0);
        while (i < n && line[i] != ':')
            i++;
        i++;
        size_t o = 0;
        f->value[0] = '\0';
        if (copy) bmime_put(f->value, sizeof f->value, &o, line + i, n - i);
        /* continuation lines: each fold's line end is removed, its WSP kept */
        for (;;) {
            size_t save = *pos;
            if (!bmime_line_next(p, len, pos, &line, &n)) break;
            if (n == 0 || !bmime_wsp(line[0])) {
                *pos = save;
                break;
            }
            size_t w = 0;
            while (w < n && bmime_wsp(line[w]))
                w++;
            if (w == n) { /* white space only: a separator, not a fold */
                *pos = save;
                break;
            }
            if (copy) bmime_put(f->value, sizeof f->value, &o, line, n);
        }
        /* trim */
        size_t s = 0;
        while (s < o && bmime_wsp(f->value[s]))
            s++;
        while (o > s && (bmime_wsp(f->value[o - 1]) || f->value[o - 1] == '\r'))
            o--;
        memmove(f->value, f->value + s, o - s);
        f->value[o - s] = '\0';
        return BMIME_FIELD_FIELD;
    }
}

enum BMIME_FIELD_NEXT bmime_field_next(const char *p, size_t len, size_t *pos,
                                       struct bmime_field *f)
{
    return bmime_field_scan(p, len, pos, f, NULL);
}

int bmime_header_get(const char *hdr, size_t hdrlen, const char *name, char *out, size_t outsz)
{
    size_t pos = 0;
    struct bmime_field f;
    enum BMIME_FIELD_NEXT r;
    if (outsz) out[0] = '\0';
    while ((r = bmime_field_scan(hdr, hdrlen, &pos, &f, name)) != BMIME_FIELD_END) {
        if (r == BMIME_FIELD_BLANK) break;
        if (strcasecmp(f.name, name) == 0) {
            str_copy(out, outsz, f.value);
            return 1;
        }
    }
    return 0;
}

/* bmime_skip_cfws - skip white space and (nested) comments from s */
static const char *bmime_skip_cfws(const char *s)
{
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
            s++;
        if (*s != '(') return s;
        int depth = 0;
        while (*s) {
            if (*s == '\\' && s[1]) {
                s += 2;
                continue;
            }
            if (*s == '(') depth++;
            if (*s == ')' && --depth == 0) {
                s++;
                break;
            }
            s++;
        }
    }
}

int bmime_param(const char *val, const char *name, char *out, size_t outsz)
{
    size_t nl = strlen(name);
    const char *s = val;
    if (outsz) out[0] = '\0';
    /* skip the type/subtype up to the first ';' outside quotes */
    for (;;) {
        while (*s && *s != ';' && *s != '"')
            s++;
        if (*s == '"') {
            s++;
            while (*s && *s != '"') {
                if (*s == '\\' && s[1]) s++;
                s++;
            }
            if (*s) s++;
            continue;
        }
        if (*s != ';') return 0;
        s = bmime_skip_cfws(s + 1);
        const char *k = s;
        while (*s && *s != '=' && *s != ';' && *s != ' ' && *s != '\t')
            s++;
        size_t kl = (size_t)(s - k);
        s = bmime_skip_cfws(s);
        if (*s != '=') continue;
        s = bmime_skip_cfws(s + 1);
        bool match = kl == nl && strncasecmp(k, name, nl) == 0;
        size_t o = 0;
        if (*s == '"') {
            s++;
            while (*s && *s != '"') {
                if (*s == '\\' && s[1]) s++;
                if (match) bmime_put(out, outsz, &o, s, 1);
                s++;
            }
            if (*s) s++;
        } else {
            const char *v = s;
            while (*s && *s != ';' && *s != ' ' && *s != '\t' && *s != '(')
                s++;
            if (match) bmime_put(out, outsz, &o, v, (size_t)(s - v));
        }
        if (match) return 1;
    }
}

/* bmime_type_of - "type/subtype" of a Content-Type value, lower case, into out */
static void bmime_type_of(const char *val, char *out, size_t outsz)
{
    const char *s = bmime_skip_cfws(val);
    size_t o = 0;
    out[0] = '\0';
    while (*s && *s != ';' && *s != ' ' && *s != '\t' && *s != '(') {
        char c = bmime_lower(*s++);
        bmime_put(out, outsz, &o, &c, 1);
    }
}

/* bmime_delim - is line[0..n) the delimiter "--boundary" (close: "--boundary--"),
 * white space allowed after it */
static bool bmime_delim(const char *line, size_t n, const char *b, size_t bl, bool *close)
{
    if (n < bl + 2 || line[0] != '-' || line[1] != '-' || memcmp(line + 2, b, bl) != 0)
        return false;
    size_t i = bl + 2;
    *close = false;
    if (i + 1 < n && line[i] == '-' && line[i + 1] == '-') {
        *close = true;
        i += 2;
    }
    while (i < n && bmime_wsp(line[i]))
        i++;
    return i == n;
}

/* bmime_guess_boundary - a multipart without a boundary parameter: take the
 * first line of the body that starts with "--" as its delimiter */
static void bmime_guess_boundary(const char *body, size_t len, char *out, size_t outsz)
{
    size_t pos = 0, n;
    const char *line;
    while (bmime_line_next(body, len, &pos, &line, &n)) {
        if (n > 2 && line[0] == '-' && line[1] == '-') {
            size_t e = n;
            while (e > 2 && bmime_wsp(line[e - 1]))
                e--;
            if (e - 2 < outsz) {
                memcpy(out, line + 2, e - 2);
                out[e - 2] = '\0';
            }
            return;
        }
    }
}

/* bmime_entity - add the entity p[0..len) at depth below parent, and its
 * children when it is a multipart; digest says the default type is
 * message/rfc822 (RFC 2046 5.1.5) */
static void bmime_entity(struct bmime_msg *m, const char *p, size_t len, int depth, int parent,
                         bool digest)
{
    if (m->nparts >= BMIME_MAX_PARTS) {
        m->too_many = true;
        return;
    }
    int idx = m->nparts++;
    struct bmime_part *pt = &m->part[idx];
    char val[512];
    memset(pt, 0, sizeof *pt);
    pt->depth = depth;
    pt->parent = parent;
    bmime_split(p, len, &pt->hdr, &pt->hdrlen, &pt->body, &pt->bodylen);
    if (bmime_header_get(pt->hdr, pt->hdrlen, "Content-Type", val, sizeof val) && val[0]) {
        bmime_type_of(val, pt->type, sizeof pt->type);
        bmime_param(val, "boundary", pt->boundary, sizeof pt->boundary);
        bmime_param(val, "report-type", pt->report_type, sizeof pt->report_type);
        str_lower(pt->report_type);
    }
    if (pt->type[0] == '\0' || strchr(pt->type, '/') == NULL)
        str_copy(pt->type, sizeof pt->type, digest ? "message/rfc822" : "text/plain");
    if (bmime_header_get(pt->hdr, pt->hdrlen, "Content-Transfer-Encoding", val, sizeof val)) {
        char t[32];
        bmime_type_of(val, t, sizeof t);
        if (strcmp(t, "base64") == 0) pt->cte = BMIME_CTE_BASE64;
        if (strcmp(t, "quoted-printable") == 0) pt->cte = BMIME_CTE_QP;
    }
    if (strncmp(pt->type, "multipart/", 10) != 0) return;
    if (depth >= BMIME_MAX_DEPTH) {
        m->too_deep = true;
        return;
    }
    if (pt->boundary[0] == '\0')
        bmime_guess_boundary(pt->body, pt->bodylen, pt->boundary, sizeof pt->boundary);
    if (pt->boundary[0] == '\0') {
        m->truncated = true;
        return;
    }
    /* Copy what the children need: pt may not move (fixed array), but keep the
     * loop independent of it anyway. */
    char b[BMIME_BOUNDARY_MAX];
    str_copy(b, sizeof b, pt->boundary);
    size_t bl = strlen(b);
    bool child_digest = strcmp(pt->type, "multipart/digest") == 0;
    const char *body = pt->body;
    size_t blen = pt->bodylen, pos = 0, n;
    const char *line;
    const char *start = NULL; /* first octet of the current child */
    size_t prev_end = 0;      /* end of the previous line's content */
    bool closed = false;
    for (;;) {
        if (!bmime_line_next(body, blen, &pos, &line, &n)) break;
        bool close;
        if (bmime_delim(line, n, b, bl, &close)) {
            /* the line end before a delimiter belongs to the delimiter */
            if (start) {
                size_t cs = (size_t)(start - body);
                bmime_entity(m, start, prev_end > cs ? prev_end - cs : 0, depth + 1, idx,
                             child_digest);
            }
            start = close ? NULL : body + pos;
            if (close) {
                closed = true;
                break;
            }
            prev_end = pos;
            continue;
        }
        prev_end = (size_t)(line - body) + n;
    }
    if (!closed) {
        m->truncated = true;
        if (start) {
            size_t cs = (size_t)(start - body);
            bmime_entity(m, start, blen - cs, depth + 1, idx, child_digest);
        }
    }
}

void bmime_parse(const char *msg, size_t len, struct bmime_msg *m)
{
    m->nparts = 0;
    m->truncated = m->too_deep = m->too_many = false;
    bmime_entity(m, msg, len, 0, -1, false);
}

/* bmime_b64 - value of a base64 digit, -1 for anything else */
static int bmime_b64(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62; /* '-' and '_': the URL alphabet, seen in the wild */
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* bmime_hex - value of a hex digit, -1 for anything else */
static int bmime_hex(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* bmime_unbase64 - base64 text to bytes; non-alphabet octets are skipped and a
 * '=' ends the data, as decoders in mail clients do */
static size_t bmime_unbase64(const char *in, size_t inlen, char *out, size_t outsz)
{
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < inlen; i++) {
        if (in[i] == '=') break;
        int v = bmime_b64((unsigned char)in[i]);
        if (v < 0) continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char c = (char)((acc >> bits) & 0xff);
            bmime_put(out, outsz, &o, &c, 1);
        }
        acc &= 0xffff;
    }
    return o;
}

/* bmime_unqp - quoted-printable to bytes; header says '_' means a space (RFC
 * 2047 Q encoding); an invalid '=' escape is kept literally */
static size_t bmime_unqp(const char *in, size_t inlen, char *out, size_t outsz, bool header)
{
    size_t o = 0;
    for (size_t i = 0; i < inlen; i++) {
        char c = in[i];
        if (c == '=' && i + 2 < inlen && bmime_hex((unsigned char)in[i + 1]) >= 0 &&
            bmime_hex((unsigned char)in[i + 2]) >= 0) {
            c = (char)(bmime_hex((unsigned char)in[i + 1]) * 16 +
                       bmime_hex((unsigned char)in[i + 2]));
            i += 2;
        } else if (c == '=' && i + 1 < inlen && (in[i + 1] == '\n' || in[i + 1] == '\r')) {
            /* soft line break, CRLF or LF (trailing blanks before it are rare) */
            i++;
            if (in[i] == '\r' && i + 1 < inlen && in[i + 1] == '\n') i++;
            continue;
        } else if (c == '_' && header) {
            c = ' ';
        }
        bmime_put(out, outsz, &o, &c, 1);
    }
    return o;
}

size_t bmime_decode(enum BMIME_CTE cte, const char *in, size_t inlen, char *out, size_t outsz)
{
    size_t o = 0;
    if (outsz == 0) return 0;
    out[0] = '\0';
    switch (cte) {
    case BMIME_CTE_BASE64:
        return bmime_unbase64(in, inlen, out, outsz);
    case BMIME_CTE_QP:
        return bmime_unqp(in, inlen, out, outsz, false);
    case BMIME_CTE_IDENTITY:
        break;
    }
    bmime_put(out, outsz, &o, in, inlen);
    return o;
}

/* html entities worth knowing in a bounce */
static const struct {
    const char *name;
    char c;
} bmime_entities[] = {
    {"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}, {"nbsp;", ' '},
};

/* bmime_html_block - does the tag name (after '<' and an optional '/') end a
 * line when rendered */
static bool bmime_html_block(const char *t, size_t n)
{
    static const char *const blocks[] = {"br", "p",     "div", "tr",         "li",  "h1", "h2",
                                         "h3", "table", "td",  "blockquote", "pre", "hr"};
    size_t k = 0;
    while (k < n && ((t[k] >= 'a' && t[k] <= 'z') || (t[k] >= 'A' && t[k] <= 'Z') ||
                     (t[k] >= '0' && t[k] <= '9')))
        k++;
    for (size_t i = 0; i < ARRAY_LEN(blocks); i++)
        if (strlen(blocks[i]) == k && strncasecmp(t, blocks[i], k) == 0) return true;
    return false;
}

size_t bmime_html_text(const char *in, size_t inlen, char *out, size_t outsz)
{
    size_t o = 0, i = 0;
    if (outsz == 0) return 0;
    out[0] = '\0';
    while (i < inlen) {
        char c = in[i];
        if (c == '<') {
            const char *t = in + i + 1;
            size_t rest = inlen - i - 1;
            bool end_tag = rest > 0 && t[0] == '/';
            const char *name = end_tag ? t + 1 : t;
            size_t nrest = end_tag ? rest - 1 : rest;
            /* skip comments whole, and the content of style and script */
            const char *stop = NULL;
            if (bmime_ci_prefix(t, rest, "!--")) {
                stop = bmime_ci_find(t, rest, "-->");
                i = stop ? (size_t)(stop - in) + 3 : inlen;
                continue;
            }
            if (!end_tag &&
                (bmime_ci_prefix(name, nrest, "style") || bmime_ci_prefix(name, nrest, "script"))) {
                const char *close = bmime_ci_prefix(name, nrest, "style") ? "</style" : "</script";
                stop = bmime_ci_find(t, rest, close);
                if (stop) {
                    const char *gt = memchr(stop, '>', (size_t)(in + inlen - stop));
                    i = gt ? (size_t)(gt - in) + 1 : inlen;
                } else {
                    i = inlen;
                }
                continue;
            }
            const char *gt = memchr(t, '>', rest);
            if (bmime_html_block(name, nrest)) bmime_put(out, outsz, &o, "\n", 1);
            i = gt ? (size_t)(gt - in) + 1 : inlen;
            continue;
        }
        if (c == '&') {
            const char *t = in + i + 1;
            size_t rest = inlen - i - 1;
            bool done = false;
            for (size_t e = 0; e < ARRAY_LEN(bmime_entities); e++) {
                if (bmime_ci_prefix(t, rest, bmime_entities[e].name)) {
                    bmime_put(out, outsz, &o, &bmime_entities[e].c, 1);
                    i += 1 + strlen(bmime_entities[e].name);
                    done = true;
                    break;
                }
            }
            if (!done && rest > 1 && t[0] == '#') {
                /* numeric: ASCII only, anything else becomes a space */
                size_t k = 1;
                unsigned v = 0;
                bool hex = rest > 2 && (t[1] == 'x' || t[1] == 'X');
                if (hex) k = 2;
                size_t digits = 0;
                while (k < rest && digits < 8 &&
                       (hex ? bmime_hex((unsigned char)t[k]) >= 0 : (t[k] >= '0' && t[k] <= '9'))) {
                    v = v * (hex ? 16 : 10) +
                        (unsigned)(hex ? bmime_hex((unsigned char)t[k]) : t[k] - '0');
                    k++;
                    digits++;
                }
                if (digits > 0 && k < rest && t[k] == ';') {
                    char ch = (v >= 0x20 && v < 0x7f) ? (char)v : ' ';
                    bmime_put(out, outsz, &o, &ch, 1);
                    i += 1 + k + 1;
                    done = true;
                }
            }
            if (done) continue;
        }
        bmime_put(out, outsz, &o, &c, 1);
        i++;
    }
    return o;
}

size_t bmime_decode_words(const char *in, char *out, size_t outsz)
{
    size_t o = 0;
    const char *s = in;
    bool last_word = false; /* white space between two encoded words is dropped */
    bool no_close = false;  /* no "?=" left: stop looking (keeps this linear) */
    const char *pending_ws = NULL;
    size_t pending_n = 0;
    if (outsz == 0) return 0;
    out[0] = '\0';
    while (*s) {
        if (s[0] == '=' && s[1] == '?' && !no_close) {
            /* =?charset?X?text?= */
            const char *cs = s + 2;
            const char *q1 = strchr(cs, '?');
            if (q1 && (q1[1] == 'B' || q1[1] == 'b' || q1[1] == 'Q' || q1[1] == 'q') &&
                q1[2] == '?') {
                const char *txt = q1 + 3;
                const char *endw = strstr(txt, "?=");
                if (endw == NULL) no_close = true;
                if (endw) {
                    if (!last_word && pending_ws) bmime_put(out, outsz, &o, pending_ws, pending_n);
                    pending_ws = NULL;
                    char tmp[1024];
                    size_t tl = (size_t)(endw - txt);
                    size_t dl = (q1[1] == 'B' || q1[1] == 'b')
                                    ? bmime_unbase64(txt, tl, tmp, sizeof tmp)
                                    : bmime_unqp(txt, tl, tmp, sizeof tmp, true);
                    bmime_put(out, outsz, &o, tmp, dl);
                    s = endw + 2;
                    last_word = true;
                    continue;
                }
            }
        }
        if (*s == ' ' || *s == '\t') {
            const char *w = s;
            while (*s == ' ' || *s == '\t')
                s++;
            pending_ws = w;
            pending_n = (size_t)(s - w);
            continue;
        }
        if (pending_ws) bmime_put(out, outsz, &o, pending_ws, pending_n);
        pending_ws = NULL;
        last_word = false;
        bmime_put(out, outsz, &o, s, 1);
        s++;
    }
    if (pending_ws) bmime_put(out, outsz, &o, pending_ws, pending_n);
    return o;
}
