/*
 * dsn - RFC 3464 delivery status notification builder (see dsn.h).
 *
 * Owns the layout of the notice Volley sends back to an envelope sender when
 * recipients bounce or expire:
 *
 *   top-level header (Date, From, To, Subject, Message-ID, Auto-Submitted, MIME)
 *   --boundary  text/plain             the explanation, one entry per recipient
 *   --boundary  message/delivery-status per-message fields, then one group per
 *                                      recipient (RFC 3464 section 2)
 *   --boundary  text/rfc822-headers    the original header section (omitted when
 *                                      the original has none)
 *   --boundary--
 *
 * Entry point: dsn_build().  Everything is appended to the caller's vbuf through
 * dsn_put(), which records the first failed append so that the cap is checked on
 * every write without an if after each call; dsn_build() rolls the buffer back on
 * any failure.
 *
 * Invariants: the output is 7-bit, every line ends in CRLF and holds at most
 * DSN_LINE_MAX octets before it.  Untrusted text goes through dsn_put_clean(),
 * which turns every octet that is not printable ASCII or TAB into '?', so a CR or
 * LF from a remote reply can never end a field, and each value is capped so that
 * its line stays short.  The boundary is checked against the finished message
 * (it must occur exactly where this file put it); on a clash a new one is derived
 * from a hash of the clashing output, which the clashing text cannot predict.
 * No clock and no locale are read: dates come from the caller and the day and
 * month names are spelt here, so the same input always gives the same bytes.
 */
#include "dsn.h"

#include <stdbool.h>
#include <string.h>

#define DSN_LINE_MAX        998         /* RFC 5322 2.1.1: octets before the CRLF */
#define DSN_DIAG_MAX        500         /* remote reply or local diagnostic */
#define DSN_ADDR_MAX        512         /* an envelope address (RFC 5321 allows 256) */
#define DSN_HOST_MAX        255         /* a host name */
#define DSN_ID_MAX          128         /* the queue id */
#define DSN_ACTION_MAX      32          /* the Action: token */
#define DSN_HEADERS_MAX     (64 * 1024) /* copied header section, CRLFs included */
#define DSN_STATUS_MAX      9           /* "5.123.123" */
#define DSN_BOUNDARY_PREFIX "=_volley_"
#define DSN_BOUNDARY_SIZE   32 /* prefix, 16 hex digits, NUL */
#define DSN_BOUNDARY_TRIES  4

#define DSN_FNV_SEED  0xcbf29ce484222325ULL
#define DSN_FNV_PRIME 0x100000001b3ULL

/* The output cursor: the caller's buffer and the first append failure. */
struct dsn_out {
    struct vbuf *buf;
    int err;
};

/* dsn_put - append n octets unless an earlier append failed; a failure sticks */
static void dsn_put(struct dsn_out *o, const void *p, size_t n)
{
    if (o->err == 0 && vbuf_append(o->buf, p, n) < 0) o->err = -1;
}

/* dsn_puts - append the trusted C string s */
static void dsn_puts(struct dsn_out *o, const char *s)
{
    dsn_put(o, s, strlen(s));
}

/* dsn_str - s, or "" for NULL */
static const char *dsn_str(const char *s)
{
    return s != NULL ? s : "";
}

/* dsn_safe - an octet that may stand in a field as it is: printable ASCII or TAB */
static bool dsn_safe(uint8_t c)
{
    return c == '\t' || (c >= 0x20 && c < 0x7f);
}

/* dsn_atext - an octet of RFC 5322 dot-atom-text (atext or '.') */
static bool dsn_atext(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL;
}

/*
 * dsn_put_clean_n - append the n octets at p with every unsafe octet (control,
 * DEL, 8-bit) as '?'.  Safe runs are appended whole.
 */
static void dsn_put_clean_n(struct dsn_out *o, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && dsn_safe(p[run]))
            run++;
        dsn_put(o, p + i, run - i);
        if (run < n) {
            dsn_put(o, "?", 1);
            run++;
        }
        i = run;
    }
}

/* dsn_put_clean - append at most max octets of the untrusted string s, cleaned */
static void dsn_put_clean(struct dsn_out *o, const char *s, size_t max)
{
    s = dsn_str(s);
    dsn_put_clean_n(o, (const uint8_t *)s, strnlen(s, max));
}

/*
 * dsn_put_atom - append at most max octets of s with every octet outside
 * dot-atom-text as '?', for the names that go into From: and Message-ID: (our
 * host name, the queue id), so those stay parseable addresses and ids.
 */
static void dsn_put_atom(struct dsn_out *o, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    for (size_t i = 0; i < n; i++) {
        char c = dsn_atext((uint8_t)s[i]) ? s[i] : '?';
        dsn_put(o, &c, 1);
    }
}

/* dsn_put_i64 - append v in decimal */
static void dsn_put_i64(struct dsn_out *o, int64_t v)
{
    char tmp[21]; /* 20 digits of a uint64_t and a sign */
    size_t i = sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0) tmp[--i] = '-';
    dsn_put(o, tmp + i, sizeof(tmp) - i);
}

/*
 * dsn_put_date - append the RFC 5322 date-time of the millisecond time ms in UTC
 * (time_rfc5322); a time outside the years 1900..9999 is an input error
 */
static void dsn_put_date(struct dsn_out *o, int64_t ms)
{
    char date[40];
    if (time_rfc5322(ms, date, sizeof date) < 0) {
        o->err = -1;
        return;
    }
    dsn_puts(o, date);
}

/*
 * dsn_status_ok - s is an RFC 3463 status code: class 2, 4 or 5, then subject and
 * detail of one to three digits each.
 */
static bool dsn_status_ok(const char *s)
{
    if ((s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return false;
    const char *p = s + 2;
    for (int part = 0; part < 2; part++) {
        size_t n = 0;
        while (p[n] >= '0' && p[n] <= '9')
            n++;
        if (n == 0 || n > 3) return false;
        p += n;
        if (part == 0) {
            if (*p != '.') return false;
            p++;
        }
    }
    return *p == '\0';
}

/* dsn_smtp_code - the reply code is a real SMTP code (else the failure is local) */
static bool dsn_smtp_code(int code)
{
    return code >= 100 && code <= 599;
}

/*
 * dsn_status - the status to report for r: its own when well-formed, else the
 * class of its reply code (4xx -> "4.0.0"), else "5.0.0".  Never NULL.
 */
static const char *dsn_status(const struct dsn_rcpt *r)
{
    const char *s = dsn_str(r->status);
    if (strnlen(s, DSN_STATUS_MAX + 1) <= DSN_STATUS_MAX && dsn_status_ok(s)) return s;
    return (r->code >= 400 && r->code <= 499) ? "4.0.0" : "5.0.0";
}

/* dsn_expired - status X.4.7, "delivery time expired" (RFC 3463) */
static bool dsn_expired(const char *status)
{
    return strcmp(status + 1, ".4.7") == 0;
}

/*
 * dsn_line_next - the line of p (length len) starting at pos: [pos, *cend) is its
 * content without CRLF or bare LF, and the return value is where the next line
 * starts.  A CR is part of the terminator only right before the LF.
 */
static size_t dsn_line_next(const uint8_t *p, size_t len, size_t pos, size_t *cend)
{
    const uint8_t *lf = memchr(p + pos, '\n', len - pos);
    if (lf == NULL) {
        *cend = len;
        return len;
    }
    size_t e = (size_t)(lf - p);
    *cend = (e > pos && p[e - 1] == '\r') ? e - 1 : e;
    return e + 1;
}

/* dsn_has_headers - the original starts with a non-empty line */
static bool dsn_has_headers(const uint8_t *p, size_t len)
{
    size_t cend;
    if (p == NULL || len == 0) return false;
    dsn_line_next(p, len, 0, &cend);
    return cend > 0;
}

/*
 * dsn_put_headers - append the header section of the original: its lines up to
 * the first empty one (or all of them), each cut to DSN_LINE_MAX octets, cleaned,
 * and ended with CRLF, while the total stays within DSN_HEADERS_MAX.  The cap
 * falls between lines, so no line is cut by it.
 */
static void dsn_put_headers(struct dsn_out *o, const uint8_t *p, size_t len)
{
    size_t pos = 0, used = 0;

    while (pos < len) {
        size_t cend;
        size_t next = dsn_line_next(p, len, pos, &cend);
        size_t n = cend - pos;
        if (n == 0) break;
        if (n > DSN_LINE_MAX) n = DSN_LINE_MAX;
        if (n + 2 > DSN_HEADERS_MAX - used) break;
        dsn_put_clean_n(o, p + pos, n);
        dsn_put(o, "\r\n", 2);
        used += n + 2;
        pos = next;
    }
}

/*
 * dsn_put_reason - append what went wrong for r on one line: "host H said: 550
 * text" for a reply, "host H: text" or "text" for a local failure.
 */
static void dsn_put_reason(struct dsn_out *o, const struct dsn_rcpt *r)
{
    const char *mta = dsn_str(r->remote_mta);
    const char *diag = dsn_str(r->diag);
    bool smtp = dsn_smtp_code(r->code);

    if (*mta != '\0') {
        dsn_puts(o, "host ");
        dsn_put_clean(o, mta, DSN_HOST_MAX);
        dsn_puts(o, smtp ? " said: " : ": ");
    }
    if (smtp) {
        dsn_put_i64(o, r->code);
        if (*diag != '\0') dsn_puts(o, " ");
    }
    if (*diag != '\0')
        dsn_put_clean(o, diag, DSN_DIAG_MAX);
    else if (!smtp)
        dsn_puts(o, "(no diagnostic)");
}

/* dsn_put_text - the text/plain part: the explanation and one entry per recipient */
static void dsn_put_text(struct dsn_out *o, const struct dsn_info *in)
{
    dsn_puts(o, "This is the mail system at host ");
    dsn_put_atom(o, in->reporting_mta, DSN_HOST_MAX);
    dsn_puts(o, ".\r\n\r\n"
                "Your message could not be delivered to the recipients below.\r\n"
                "The mail system gave up on them for the reasons shown; a\r\n"
                "delivery report and the headers of your message are attached.\r\n");
    for (size_t i = 0; i < in->nrcpt; i++) {
        const struct dsn_rcpt *r = &in->rcpts[i];
        bool expired = dsn_expired(dsn_status(r));

        dsn_puts(o, "\r\n<");
        dsn_put_clean(o, r->addr, DSN_ADDR_MAX);
        dsn_puts(o, expired ? ">: delivery time expired; the message stayed in the queue\r\n"
                              "    too long without being delivered\r\n    last error: "
                            : ">: delivery failed\r\n    ");
        dsn_put_reason(o, r);
        dsn_puts(o, "\r\n");
    }
}

/* dsn_put_report - the message/delivery-status part (RFC 3464 section 2) */
static void dsn_put_report(struct dsn_out *o, const struct dsn_info *in)
{
    dsn_puts(o, "Reporting-MTA: dns; ");
    dsn_put_atom(o, in->reporting_mta, DSN_HOST_MAX);
    dsn_puts(o, "\r\nX-Volley-Queue-ID: ");
    dsn_put_atom(o, in->queue_id, DSN_ID_MAX);
    dsn_puts(o, "\r\nArrival-Date: ");
    dsn_put_date(o, in->arrival_ms);
    dsn_puts(o, "\r\n");

    for (size_t i = 0; i < in->nrcpt; i++) {
        const struct dsn_rcpt *r = &in->rcpts[i];
        const char *action = dsn_str(r->action);
        const char *mta = dsn_str(r->remote_mta);
        const char *diag = dsn_str(r->diag);

        dsn_puts(o, "\r\nFinal-Recipient: rfc822; ");
        dsn_put_clean(o, r->addr, DSN_ADDR_MAX);
        dsn_puts(o, "\r\nAction: ");
        if (*action != '\0')
            dsn_put_clean(o, action, DSN_ACTION_MAX);
        else
            dsn_puts(o, "failed");
        dsn_puts(o, "\r\nStatus: ");
        dsn_puts(o, dsn_status(r));
        dsn_puts(o, "\r\n");
        if (*mta != '\0') {
            dsn_puts(o, "Remote-MTA: dns; ");
            dsn_put_clean(o, mta, DSN_HOST_MAX);
            dsn_puts(o, "\r\n");
        }
        if (dsn_smtp_code(r->code)) {
            dsn_puts(o, "Diagnostic-Code: smtp; ");
            dsn_put_i64(o, r->code);
            if (*diag != '\0') dsn_puts(o, " ");
            dsn_put_clean(o, diag, DSN_DIAG_MAX);
            dsn_puts(o, "\r\n");
        } else if (*diag != '\0') {
            dsn_puts(o, "Diagnostic-Code: X-Volley; ");
            dsn_put_clean(o, diag, DSN_DIAG_MAX);
            dsn_puts(o, "\r\n");
        }
        if (r->last_attempt_ms > 0) {
            dsn_puts(o, "Last-Attempt-Date: ");
            dsn_put_date(o, r->last_attempt_ms);
            dsn_puts(o, "\r\n");
        }
    }
}

/* dsn_put_delim - the delimiter line opening a part, with the CRLF before it */
static void dsn_put_delim(struct dsn_out *o, const char *boundary)
{
    dsn_puts(o, "\r\n--");
    dsn_puts(o, boundary);
    dsn_puts(o, "\r\n");
}

/*
 * dsn_put_message - append the whole DSN with the given boundary; returns how many
 * times the boundary was written (the check in dsn_build counts it back).
 */
static size_t dsn_put_message(struct dsn_out *o, const struct dsn_info *in, const char *boundary)
{
    bool headers = dsn_has_headers(in->orig, in->orig_len);

    dsn_puts(o, "Date: ");
    dsn_put_date(o, in->now_ms);
    dsn_puts(o, "\r\nFrom: Mail Delivery System <MAILER-DAEMON@");
    dsn_put_atom(o, in->reporting_mta, DSN_HOST_MAX);
    dsn_puts(o, ">\r\nTo: <");
    dsn_put_clean(o, in->sender, DSN_ADDR_MAX);
    dsn_puts(o, ">\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <");
    dsn_put_atom(o, in->queue_id, DSN_ID_MAX);
    dsn_puts(o, ".");
    dsn_put_i64(o, in->now_ms);
    dsn_puts(o, ".dsn@");
    dsn_put_atom(o, in->reporting_mta, DSN_HOST_MAX);
    dsn_puts(o, ">\r\n"
                "Auto-Submitted: auto-replied\r\n"
                "MIME-Version: 1.0\r\n"
                "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                "\tboundary=\"");
    dsn_puts(o, boundary);
    dsn_puts(o, "\"\r\n\r\nThis is a MIME-encapsulated message.\r\n");

    dsn_put_delim(o, boundary);
    dsn_puts(o, "Content-Description: Notification\r\n"
                "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    dsn_put_text(o, in);

    dsn_put_delim(o, boundary);
    dsn_puts(o, "Content-Description: Delivery report\r\n"
                "Content-Type: message/delivery-status\r\n\r\n");
    dsn_put_report(o, in);

    if (headers) {
        dsn_put_delim(o, boundary);
        dsn_puts(o, "Content-Description: Undelivered Message Headers\r\n"
                    "Content-Type: text/rfc822-headers\r\n\r\n");
        dsn_put_headers(o, in->orig, in->orig_len);
    }

    dsn_puts(o, "\r\n--");
    dsn_puts(o, boundary);
    dsn_puts(o, "--\r\n");
    return headers ? 5 : 4;
}

/* dsn_fnv - FNV-1a 64 of the n octets at p, continuing from h */
static uint64_t dsn_fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= DSN_FNV_PRIME;
    }
    return h;
}

/* dsn_boundary - "=_volley_" and the 16 hex digits of h into b (DSN_BOUNDARY_SIZE) */
static void dsn_boundary(uint64_t h, char *b)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = sizeof(DSN_BOUNDARY_PREFIX) - 1;

    memcpy(b, DSN_BOUNDARY_PREFIX, n);
    for (int shift = 60; shift >= 0; shift -= 4)
        b[n++] = hex[(h >> shift) & 0xf];
    b[n] = '\0';
}

/* dsn_count - occurrences of the C string needle in the n octets at p */
static size_t dsn_count(const uint8_t *p, size_t n, const char *needle)
{
    size_t nlen = strlen(needle), count = 0, pos = 0;

    while (pos < n) {
        const uint8_t *m = memmem(p + pos, n - pos, needle, nlen);
        if (m == NULL) break;
        count++;
        pos = (size_t)(m - p) + nlen;
    }
    return count;
}

/* dsn_input_ok - the fields dsn_build cannot do without are there */
static bool dsn_input_ok(const struct dsn_info *in)
{
    if (in == NULL || in->rcpts == NULL || in->nrcpt == 0) return false;
    if (in->sender == NULL || in->sender[0] == '\0') return false;
    if (in->reporting_mta == NULL || in->reporting_mta[0] == '\0') return false;
    if (in->queue_id == NULL || in->queue_id[0] == '\0') return false;
    if (in->orig == NULL && in->orig_len != 0) return false;
    for (size_t i = 0; i < in->nrcpt; i++)
        if (in->rcpts[i].addr == NULL || in->rcpts[i].addr[0] == '\0') return false;
    return true;
}

/*
 * The first boundary comes from the queue id and the time, so it is stable for a
 * given notice.  If it turns up anywhere but where dsn_put_message wrote it (text
 * chosen to clash, by a sender or a remote server), the next one hashes the
 * clashing output in, which the clashing text cannot know in advance; after
 * DSN_BOUNDARY_TRIES the build fails rather than emit an ambiguous message.
 */
int dsn_build(const struct dsn_info *in, struct vbuf *out)
{
    size_t start = out->len;
    char boundary[DSN_BOUNDARY_SIZE];
    uint8_t now[8];
    uint64_t h;

    if (!dsn_input_ok(in)) return -1;
    put_be64(now, (uint64_t)in->now_ms);
    h = dsn_fnv(DSN_FNV_SEED, in->queue_id, strlen(in->queue_id) + 1);
    h = dsn_fnv(h, now, sizeof(now));

    for (uint8_t attempt = 0; attempt < DSN_BOUNDARY_TRIES; attempt++) {
        struct dsn_out o = {out, 0};
        if (attempt > 0) {
            h = dsn_fnv(h, out->data + start, out->len - start);
            h = dsn_fnv(h, &attempt, 1);
            out->len = start;
        }
        dsn_boundary(h, boundary);
        size_t written = dsn_put_message(&o, in, boundary);
        if (o.err != 0) break;
        if (dsn_count(out->data + start, out->len - start, boundary) == written) return 0;
    }
    out->len = start;
    return -1;
}
