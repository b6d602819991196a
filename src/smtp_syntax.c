/*
 * smtp_syntax - pure RFC 5321 / RFC 6531 syntax (see smtp_syntax.h).
 *
 * Owns the command verb table, the path grammar (reverse-path, forward-path,
 * source routes, address literals), ESMTP parameter tokenizing, domain and UTF-8
 * validation, and the reply text for every path error.
 *
 * Invariants: no allocation, no locale-dependent ctype (every class test below is
 * plain ASCII arithmetic, so a high-bit byte is never a negative ctype index), and
 * every read is bounded by the length the caller gave - input is never assumed to
 * be NUL-terminated, and an embedded NUL is just an invalid octet.
 */
#include "smtp_syntax.h"

#include <arpa/inet.h>
#include <string.h>

/* RFC 5321 4.1.3: "IPv6:" tag plus at most INET6_ADDRSTRLEN - 1 characters. */
#define SMTP_SYNTAX_IPV6_TEXT_MAX 45

/* smtp_syntax_upper - ASCII upper case of c; other octets unchanged */
static unsigned char smtp_syntax_upper(unsigned char c)
{
    return (c >= 'a' && c <= 'z') ? (unsigned char)(c - 'a' + 'A') : c;
}

/* smtp_syntax_lower - ASCII lower case of c; other octets unchanged */
static char smtp_syntax_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* smtp_syntax_alnum - ASCII letter or digit */
static bool smtp_syntax_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* smtp_syntax_digit - ASCII digit */
static bool smtp_syntax_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* smtp_syntax_atext - RFC 5322 atext without the UTF-8 extension */
static bool smtp_syntax_atext(unsigned char c)
{
    return smtp_syntax_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* smtp_syntax_caseeq - 1 if the n octets of a and b are equal ignoring ASCII case */
static bool smtp_syntax_caseeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (smtp_syntax_upper((unsigned char)a[i]) != smtp_syntax_upper((unsigned char)b[i]))
            return false;
    return true;
}

/* smtp_syntax_has_8bit - true if any of the n octets of s is above 0x7f */
static bool smtp_syntax_has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] & 0x80) return true;
    return false;
}

static const char *const smtp_cmd_names[] = {
    [SMTP_CMD_UNKNOWN] = "UNKNOWN", [SMTP_CMD_HELO] = "HELO", [SMTP_CMD_EHLO] = "EHLO",
    [SMTP_CMD_MAIL] = "MAIL",       [SMTP_CMD_RCPT] = "RCPT", [SMTP_CMD_DATA] = "DATA",
    [SMTP_CMD_RSET] = "RSET",       [SMTP_CMD_NOOP] = "NOOP", [SMTP_CMD_QUIT] = "QUIT",
    [SMTP_CMD_VRFY] = "VRFY",       [SMTP_CMD_HELP] = "HELP", [SMTP_CMD_STARTTLS] = "STARTTLS",
    [SMTP_CMD_BDAT] = "BDAT",
};

#define SMTP_CMD_COUNT (sizeof(smtp_cmd_names) / sizeof(smtp_cmd_names[0]))

const char *smtp_cmd_str(enum SMTP_CMD cmd)
{
    if ((size_t)cmd >= SMTP_CMD_COUNT || smtp_cmd_names[cmd] == NULL) return "UNKNOWN";
    return smtp_cmd_names[cmd];
}

/*
 * The verb must be the whole line or be followed by exactly one space, which is
 * consumed; anything after that space (further spaces included) is the argument and
 * belongs to the command's own parser.  An unknown line gets an empty argument at
 * its end, since there is no verb to strip.
 */
enum SMTP_CMD smtp_command(const char *line, size_t len, const char **arg, size_t *arglen)
{
    if (arg) *arg = len ? line + len : line;
    if (arglen) *arglen = 0;
    for (size_t c = SMTP_CMD_UNKNOWN + 1; c < SMTP_CMD_COUNT; c++) {
        const char *verb = smtp_cmd_names[c];
        size_t vlen = strlen(verb);
        if (len < vlen || !smtp_syntax_caseeq(line, verb, vlen)) continue;
        if (len == vlen) return (enum SMTP_CMD)c;
        if (line[vlen] != ' ') continue;
        if (arg) *arg = line + vlen + 1;
        if (arglen) *arglen = len - vlen - 1;
        return (enum SMTP_CMD)c;
    }
    return SMTP_CMD_UNKNOWN;
}

static const char *const smtp_path_err_names[] = {
    [SMTP_PATH_OK] = "SMTP_PATH_OK",
    [SMTP_PATH_SYNTAX] = "SMTP_PATH_SYNTAX",
    [SMTP_PATH_NO_BRACKETS] = "SMTP_PATH_NO_BRACKETS",
    [SMTP_PATH_LOCAL_TOO_LONG] = "SMTP_PATH_LOCAL_TOO_LONG",
    [SMTP_PATH_DOMAIN_TOO_LONG] = "SMTP_PATH_DOMAIN_TOO_LONG",
    [SMTP_PATH_TOO_LONG] = "SMTP_PATH_TOO_LONG",
    [SMTP_PATH_BAD_LOCAL] = "SMTP_PATH_BAD_LOCAL",
    [SMTP_PATH_BAD_DOMAIN] = "SMTP_PATH_BAD_DOMAIN",
    [SMTP_PATH_NO_DOMAIN] = "SMTP_PATH_NO_DOMAIN",
    [SMTP_PATH_NEED_SMTPUTF8] = "SMTP_PATH_NEED_SMTPUTF8",
    [SMTP_PATH_BAD_UTF8] = "SMTP_PATH_BAD_UTF8",
    [SMTP_PATH_NULL_RCPT] = "SMTP_PATH_NULL_RCPT",
};

#define SMTP_PATH_ERR_COUNT (sizeof(smtp_path_err_names) / sizeof(smtp_path_err_names[0]))

const char *smtp_path_err_str(enum SMTP_PATH_ERR err)
{
    if ((size_t)err >= SMTP_PATH_ERR_COUNT || smtp_path_err_names[err] == NULL)
        return "SMTP_PATH_ERR_UNKNOWN";
    return smtp_path_err_names[err];
}

/*
 * Reply text, [err][is_rcpt].  Syntax faults are 501 (the command was malformed);
 * limits and SMTPUTF8 are 553 (mailbox name not allowed), as RFC 5321 4.5.3.1.10
 * and RFC 6531 3.7.4 suggest.  The enhanced code is 5.1.7 for the sender and 5.1.3
 * for a recipient (RFC 3463), and 5.6.7 for internationalized addresses (RFC 6531).
 */
static const char *const smtp_path_replies[][2] = {
    [SMTP_PATH_OK] = {"250 2.1.0 Sender OK", "250 2.1.5 Recipient OK"},
    [SMTP_PATH_SYNTAX] = {"501 5.1.7 Bad sender address syntax: expected FROM:<address>",
                          "501 5.1.3 Bad recipient address syntax: expected TO:<address>"},
    [SMTP_PATH_NO_BRACKETS] = {"501 5.1.7 Bad sender address syntax: missing angle brackets",
                               "501 5.1.3 Bad recipient address syntax: missing angle brackets"},
    [SMTP_PATH_LOCAL_TOO_LONG] = {"553 5.1.7 Local part of address is longer than 64 octets",
                                  "553 5.1.3 Local part of address is longer than 64 octets"},
    [SMTP_PATH_DOMAIN_TOO_LONG] = {"553 5.1.7 Domain of address is longer than 255 octets",
                                   "553 5.1.3 Domain of address is longer than 255 octets"},
    [SMTP_PATH_TOO_LONG] = {"553 5.1.7 Address is longer than 256 octets",
                            "553 5.1.3 Address is longer than 256 octets"},
    [SMTP_PATH_BAD_LOCAL] = {"501 5.1.7 Bad sender address syntax: invalid local part",
                             "501 5.1.3 Bad recipient address syntax: invalid local part"},
    [SMTP_PATH_BAD_DOMAIN] = {"501 5.1.7 Bad sender address syntax: invalid domain",
                              "501 5.1.3 Bad recipient address syntax: invalid domain"},
    [SMTP_PATH_NO_DOMAIN] = {"501 5.1.7 Bad sender address syntax: missing domain",
                             "501 5.1.3 Bad recipient address syntax: missing domain"},
    [SMTP_PATH_NEED_SMTPUTF8] = {"553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter",
                                 "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter"},
    [SMTP_PATH_BAD_UTF8] = {"553 5.6.7 Address is not valid UTF-8",
                            "553 5.6.7 Address is not valid UTF-8"},
    /* Only RCPT can produce this, so both columns name the recipient. */
    [SMTP_PATH_NULL_RCPT] = {"501 5.1.3 Null recipient address not allowed",
                             "501 5.1.3 Null recipient address not allowed"},
};

const char *smtp_path_err_reply(enum SMTP_PATH_ERR err, bool is_rcpt)
{
    size_t n = sizeof(smtp_path_replies) / sizeof(smtp_path_replies[0]);
    if ((size_t)err >= n || smtp_path_replies[err][is_rcpt] == NULL)
        return is_rcpt ? "501 5.1.3 Bad recipient address syntax"
                       : "501 5.1.7 Bad sender address syntax";
    return smtp_path_replies[err][is_rcpt];
}

/*
 * RFC 3629 section 4: the second octet's range depends on the lead octet, which is
 * what rules out overlongs (E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and code
 * points above U+10FFFF (F4 90.., F5..FF).  C0 and C1 can only start overlongs.
 */
int smtp_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        size_t more;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return 0;
        }
        if (n - i - 1 < more) return 0;
        if (u[i + 1] < lo || u[i + 1] > hi) return 0;
        for (size_t k = 2; k <= more; k++)
            if (u[i + k] < 0x80 || u[i + k] > 0xbf) return 0;
        i += more + 1;
    }
    return 1;
}

/*
 * The hyphen and length rules apply to U-labels too: they are checked on octets, so
 * a U-label is held to 63 octets even though its A-label might fit; over-strict by a
 * little, but never lets through something the DNS cannot carry.
 */
int smtp_domain_valid(const char *d, size_t n, bool utf8_ok)
{
    if (n == 0 || n > SMTP_DOMAIN_MAX) return 0;
    if (smtp_syntax_has_8bit(d, n) && (!utf8_ok || !smtp_utf8_valid(d, n))) return 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && d[i] != '.') {
            unsigned char c = (unsigned char)d[i];
            if (!smtp_syntax_alnum(c) && c != '-' && c < 0x80) return 0;
            continue;
        }
        /* end of label [start, i): also catches an empty last label ("a.b.") */
        size_t llen = i - start;
        if (llen == 0 || llen > 63) return 0;
        if (d[start] == '-' || d[i - 1] == '-') return 0;
        start = i + 1;
    }
    return 1;
}

/* smtp_syntax_ipv4 - 1 if s (length n) is a dotted quad, each part 1..3 digits <= 255 */
static int smtp_syntax_ipv4(const char *s, size_t n)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        unsigned v = 0;
        size_t digits = 0;
        while (i < n && smtp_syntax_digit((unsigned char)s[i])) {
            if (++digits > 3) return 0;
            v = v * 10 + (unsigned)(s[i] - '0');
            i++;
        }
        if (digits == 0 || v > 255) return 0;
        if (part < 3) {
            if (i >= n || s[i] != '.') return 0;
            i++;
        }
    }
    return i == n;
}

/*
 * smtp_syntax_addr_literal - 1 if s (length n, without the brackets) is an
 * IPv4-address-literal or an IPv6-address-literal.  General-address-literals with
 * other tags are refused: none but IPv6 is registered, so nothing could route them.
 * inet_pton takes the RFC 4291 text forms, including the trailing dotted quad.
 */
static int smtp_syntax_addr_literal(const char *s, size_t n)
{
    char buf[SMTP_SYNTAX_IPV6_TEXT_MAX + 1];
    unsigned char bin[16];
    if (n > 0 && smtp_syntax_digit((unsigned char)s[0])) return smtp_syntax_ipv4(s, n);
    if (n <= 5 || !smtp_syntax_caseeq(s, "IPv6:", 5)) return 0;
    s += 5;
    n -= 5;
    /* inet_pton needs a C string: refuse what it would silently cut at a NUL */
    if (n > SMTP_SYNTAX_IPV6_TEXT_MAX || memchr(s, '\0', n) != NULL) return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(AF_INET6, buf, bin) == 1;
}

/*
 * smtp_syntax_domain_err - classify a hostname (not a literal) for the path parser;
 * the UTF-8 questions come first so that an internationalized domain sent without
 * SMTPUTF8 is told what to do rather than that it is invalid.
 */
static enum SMTP_PATH_ERR smtp_syntax_domain_err(const char *d, size_t n, bool utf8_ok)
{
    if (smtp_syntax_has_8bit(d, n)) {
        if (!utf8_ok) return SMTP_PATH_NEED_SMTPUTF8;
        if (!smtp_utf8_valid(d, n)) return SMTP_PATH_BAD_UTF8;
    }
    if (n > SMTP_DOMAIN_MAX) return SMTP_PATH_DOMAIN_TOO_LONG;
    if (!smtp_domain_valid(d, n, utf8_ok)) return SMTP_PATH_BAD_DOMAIN;
    return SMTP_PATH_OK;
}

/*
 * smtp_syntax_route - skip an A-d-l source route ("@a,@b:") starting at the '@' at
 * *pos; on success *pos is just past the ':'.  Each hop is checked like a domain
 * even though it is thrown away, so junk is not accepted merely for being ignored.
 */
static enum SMTP_PATH_ERR smtp_syntax_route(const char *s, size_t n, size_t *pos, bool utf8_ok)
{
    size_t i = *pos;
    for (;;) {
        i++; /* the '@' */
        size_t start = i;
        while (i < n && s[i] != ',' && s[i] != ':' && s[i] != '>')
            i++;
        if (i >= n || s[i] == '>') return SMTP_PATH_SYNTAX;
        if (i == start) return SMTP_PATH_BAD_DOMAIN;
        enum SMTP_PATH_ERR err = smtp_syntax_domain_err(s + start, i - start, utf8_ok);
        if (err != SMTP_PATH_OK) return err;
        if (s[i] == ':') {
            *pos = i + 1;
            return SMTP_PATH_OK;
        }
        i++; /* the ',' */
        if (i >= n || s[i] != '@') return SMTP_PATH_SYNTAX;
    }
}

/*
 * smtp_syntax_quoted - scan a quoted-string local part starting at the DQUOTE at
 * *pos; *pos ends just past the closing DQUOTE.  qtextSMTP and quoted-pairSMTP
 * (RFC 5321 4.1.2), plus UTF8-non-ascii in qtext under SMTPUTF8 (RFC 6531 3.3).
 */
static enum SMTP_PATH_ERR smtp_syntax_quoted(const char *s, size_t n, size_t *pos, bool utf8_ok)
{
    size_t i = *pos + 1;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') {
            *pos = i + 1;
            return SMTP_PATH_OK;
        }
        if (c == '\\') {
            if (i + 1 >= n) return SMTP_PATH_BAD_LOCAL;
            unsigned char q = (unsigned char)s[i + 1];
            if (q < 32 || q > 126) return SMTP_PATH_BAD_LOCAL;
            i += 2;
            continue;
        }
        if (c >= 0x80) {
            if (!utf8_ok) return SMTP_PATH_NEED_SMTPUTF8;
        } else if (c < 32 || c > 126) {
            return SMTP_PATH_BAD_LOCAL;
        }
        i++;
    }
    return SMTP_PATH_BAD_LOCAL; /* no closing quote */
}

/*
 * smtp_syntax_dotstring - scan a dot-string local part from *pos up to the first
 * octet that cannot be in one; that octet must be '@', '>' or the end.
 */
static enum SMTP_PATH_ERR smtp_syntax_dotstring(const char *s, size_t n, size_t *pos, bool utf8_ok)
{
    size_t start = *pos, i = *pos;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (!smtp_syntax_atext(c) && c != '.' && c < 0x80) break;
        i++;
    }
    if (i < n && s[i] != '@' && s[i] != '>') return SMTP_PATH_BAD_LOCAL;
    size_t len = i - start;
    if (len == 0 && i >= n) return SMTP_PATH_NO_BRACKETS; /* "<" and nothing more */
    if (smtp_syntax_has_8bit(s + start, len) && !utf8_ok) return SMTP_PATH_NEED_SMTPUTF8;
    if (len == 0 || s[start] == '.' || s[i - 1] == '.') return SMTP_PATH_BAD_LOCAL;
    for (size_t k = start + 1; k < i; k++)
        if (s[k] == '.' && s[k - 1] == '.') return SMTP_PATH_BAD_LOCAL;
    *pos = i;
    return SMTP_PATH_OK;
}

/*
 * smtp_syntax_params - after the closing '>' at offset i: nothing, or one or more
 * spaces and then the parameters, which are returned through params/paramslen.
 */
static enum SMTP_PATH_ERR smtp_syntax_params(const char *arg, size_t len, size_t i,
                                             const char **params, size_t *paramslen)
{
    if (i < len && arg[i] != ' ') return SMTP_PATH_SYNTAX;
    while (i < len && arg[i] == ' ')
        i++;
    *params = arg + i;
    *paramslen = len - i;
    return SMTP_PATH_OK;
}

/*
 * smtp_syntax_path - the parser behind smtp_parse_path_arg; out starts zeroed and
 * may be left half-filled on error (the caller clears it).
 *
 * Parsing runs left to right and stops at the first fault, so the reply names the
 * earliest problem in the line.  Length limits are checked after the syntax of the
 * part they bound, which is why "<a..b@x>" with a 100-octet local part reports the
 * syntax.  SMTP_PATH_MAX bounds the mailbox that is stored (local@domain); a source
 * route is checked but not counted, because it is dropped and the command line as a
 * whole is already capped at SMTP_CMDLINE_MAX by the caller.
 */
static enum SMTP_PATH_ERR smtp_syntax_path(const char *arg, size_t len, bool is_rcpt, bool utf8_ok,
                                           struct smtp_path *out, const char **params,
                                           size_t *paramslen)
{
    const char *kw = is_rcpt ? "TO:" : "FROM:";
    size_t kwlen = strlen(kw);
    size_t i, lstart, llen, dstart, dlen;
    enum SMTP_PATH_ERR err;

    if (len < kwlen || !smtp_syntax_caseeq(arg, kw, kwlen)) return SMTP_PATH_SYNTAX;
    i = kwlen;
    if (i < len && arg[i] == ' ') i++;
    if (i >= len || arg[i] == ' ') return SMTP_PATH_SYNTAX;
    if (arg[i] != '<') return SMTP_PATH_NO_BRACKETS;
    i++;

    if (i < len && arg[i] == '>') {
        if (is_rcpt) return SMTP_PATH_NULL_RCPT;
        out->is_null = true;
        return smtp_syntax_params(arg, len, i + 1, params, paramslen);
    }

    if (i < len && arg[i] == '@') {
        err = smtp_syntax_route(arg, len, &i, utf8_ok);
        if (err != SMTP_PATH_OK) return err;
    }

    lstart = i;
    if (i < len && arg[i] == '"')
        err = smtp_syntax_quoted(arg, len, &i, utf8_ok);
    else
        err = smtp_syntax_dotstring(arg, len, &i, utf8_ok);
    if (err != SMTP_PATH_OK) return err;
    llen = i - lstart;
    if (smtp_syntax_has_8bit(arg + lstart, llen)) {
        if (!smtp_utf8_valid(arg + lstart, llen)) return SMTP_PATH_BAD_UTF8;
        out->utf8 = true;
    }
    if (llen > SMTP_LOCAL_MAX) return SMTP_PATH_LOCAL_TOO_LONG;
    if (i >= len) return SMTP_PATH_NO_BRACKETS;

    if (arg[i] == '>') {
        /* RFC 5321 4.5.1: "<Postmaster>" without a domain, case-insensitive */
        if (!is_rcpt || llen != 10 || !smtp_syntax_caseeq(arg + lstart, "postmaster", 10))
            return SMTP_PATH_NO_DOMAIN;
        memcpy(out->addr, arg + lstart, llen);
        out->addr[llen] = '\0';
        out->local_len = llen;
        return smtp_syntax_params(arg, len, i + 1, params, paramslen);
    }
    if (arg[i] != '@') return SMTP_PATH_BAD_LOCAL;
    i++;

    dstart = i;
    if (i < len && arg[i] == '[') {
        /* dcontent (%d33-90 / %d94-126) cannot hold ']', so the first one closes */
        while (i < len && arg[i] != ']' && arg[i] != '>')
            i++;
        if (i >= len) return SMTP_PATH_NO_BRACKETS;
        if (arg[i] != ']' || !smtp_syntax_addr_literal(arg + dstart + 1, i - dstart - 1))
            return SMTP_PATH_BAD_DOMAIN;
        i++;
        if (i >= len) return SMTP_PATH_NO_BRACKETS;
        if (arg[i] != '>') return SMTP_PATH_BAD_DOMAIN;
        dlen = i - dstart;
    } else {
        while (i < len && arg[i] != '>')
            i++;
        if (i >= len) return SMTP_PATH_NO_BRACKETS;
        dlen = i - dstart;
        if (dlen == 0) return SMTP_PATH_NO_DOMAIN;
        err = smtp_syntax_domain_err(arg + dstart, dlen, utf8_ok);
        if (err != SMTP_PATH_OK) return err;
        if (smtp_syntax_has_8bit(arg + dstart, dlen)) out->utf8 = true;
    }
    if (llen + 1 + dlen > SMTP_PATH_MAX) return SMTP_PATH_TOO_LONG;

    /* local, '@' and domain are contiguous in arg, so the mailbox is one copy */
    memcpy(out->addr, arg + lstart, llen + 1 + dlen);
    out->addr[llen + 1 + dlen] = '\0';
    out->local_len = llen;
    for (size_t k = 0; k < dlen; k++)
        out->domain[k] = arg[dstart] == '[' ? arg[dstart + k] : smtp_syntax_lower(arg[dstart + k]);
    out->domain[dlen] = '\0';
    return smtp_syntax_params(arg, len, i + 1, params, paramslen);
}

/*
 * The public entry point owns the output contract: out is all zero and params NULL
 * on any error, so a caller that logs a rejected path never sees half a parse.
 */
enum SMTP_PATH_ERR smtp_parse_path_arg(const char *arg, size_t len, bool is_rcpt, bool utf8_ok,
                                       struct smtp_path *out, const char **params,
                                       size_t *paramslen)
{
    const char *p = NULL;
    size_t plen = 0;

    memset(out, 0, sizeof(*out));
    enum SMTP_PATH_ERR err = smtp_syntax_path(arg, len, is_rcpt, utf8_ok, out, &p, &plen);
    if (err != SMTP_PATH_OK) {
        memset(out, 0, sizeof(*out));
        p = NULL;
        plen = 0;
    }
    if (params) *params = p;
    if (paramslen) *paramslen = plen;
    return err;
}

/*
 * RFC 5321 4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") and
 * esmtp-value = 1*(%d33-60 / %d62-126), so "KEY=" with nothing after it is an error.
 * On -1 *p and *plen are left where they were and key/val are emptied, so a caller
 * that loops until the result is not 1 always terminates.
 */
int smtp_param_next(const char **p, size_t *plen, char *key, size_t keysz, char *val, size_t valsz)
{
    const char *s = *p;
    size_t n = *plen, i = 0, k = 0, v = 0;

    if (keysz == 0 || valsz == 0) return -1;
    key[0] = '\0';
    val[0] = '\0';
    while (i < n && s[i] == ' ')
        i++;
    if (i == n) {
        if (i > 0) *p = s + i;
        *plen = 0;
        return 0;
    }
    if (!smtp_syntax_alnum((unsigned char)s[i])) goto bad;
    while (i < n && (smtp_syntax_alnum((unsigned char)s[i]) || s[i] == '-')) {
        if (k + 1 >= keysz) goto bad;
        key[k++] = (char)smtp_syntax_upper((unsigned char)s[i]);
        i++;
    }
    key[k] = '\0';
    if (i < n && s[i] == '=') {
        i++;
        while (i < n && (unsigned char)s[i] >= 33 && (unsigned char)s[i] <= 126 && s[i] != '=') {
            if (v + 1 >= valsz) goto bad;
            val[v++] = s[i];
            i++;
        }
        if (v == 0) goto bad;
        val[v] = '\0';
    }
    if (i < n && s[i] != ' ') goto bad;
    *p = s + i;
    *plen = n - i;
    return 1;

bad:
    key[0] = '\0';
    val[0] = '\0';
    return -1;
}
