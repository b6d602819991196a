/*
 * volleyctl - the command-line client of volleyd's control socket.
 *
 * Owns the client side of the protocol described in src/ctl.h: argument parsing,
 * finding the socket, one request/reply exchange per run, and rendering the reply
 * as compact aligned text (or, with --json, as the daemon's reply object).  Entry
 * point: main().  Exit status: 0 success; 1 the daemon is unreachable, timed out,
 * broke the protocol or answered ok:false, or verify found violations; 2 bad usage.
 * The suppression and bounce commands (suppress, forget, bounce) live in
 * vctl_feedback.c and borrow the exchange and the helpers exported here.
 *
 * Invariants:
 *   - usage errors are found before any file is read or any socket opened;
 *   - memory taken from the socket never exceeds VCTL_LINE_MAX (one reply line);
 *     the body that follows a `cat` reply streams through a fixed buffer;
 *   - every socket read and write is bounded by a timeout, so a hung daemon cannot
 *     hang the CLI;
 *   - text the daemon relays from outside (headers, addresses, remote replies) has
 *     its control characters escaped before it reaches a terminal; only `cat` (raw
 *     by design) and --json (jansson escapes C0 controls in strings) skip that.
 */
#include "conf.h"
#include "msgid.h"
#include "report.h"
#include "util.h"
#include "vctl_feedback.h"
#include "vctl_preflight.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define VCTL_LINE_MAX       ((size_t)64 << 20) /* longest reply line accepted */
#define VCTL_REQUEST_MAX    ((size_t)64 << 10) /* ctl.h: a request line is at most 64 KiB */
#define VCTL_CHUNK          65536              /* socket read and stdout write size */
#define VCTL_TIMEOUT_S      60                 /* silence tolerated from the daemon */
#define VCTL_TIMEOUT_BULK_S 600                /* ... when it walks or rewrites the spool */
#define VCTL_LIMIT_MAX      2147483647LL
#define VCTL_LABEL_WIDTH    10

/* overridable at build time for packages installed under another prefix */
#ifndef VCTL_DEFAULT_CONF
#define VCTL_DEFAULT_CONF "/etc/volley/volley.conf"
#endif
#ifndef VCTL_DEFAULT_SOCKET
#define VCTL_DEFAULT_SOCKET "/run/volley/control.sock"
#endif

#define VCTL_EXIT_OK    0
#define VCTL_EXIT_FAIL  1
#define VCTL_EXIT_USAGE 2

/* What a command accepts (struct vctl_cmd.flags). */
#define VCTL_OPT_JSON     0x01 /* --json */
#define VCTL_OPT_DOMAIN   0x02 /* --domain D */
#define VCTL_OPT_CAMPAIGN 0x04 /* --campaign C */
#define VCTL_OPT_LIMIT    0x08 /* --limit N */
#define VCTL_OPT_ID       0x10 /* --id ID */
#define VCTL_POS_ID       0x20 /* a positional message id */
#define VCTL_NEED_ID      0x40 /* the message id is required */
#define VCTL_SELECTOR     0x80 /* exactly one of id, --domain, --campaign */
#define VCTL_POS_DOMAIN   0x100 /* a positional argument that is not an id is a domain */
#define VCTL_POS_SITE     0x200 /* a required positional site name; --source S, --for SECS */

/* How vctl_clean() treats whitespace controls. */
#define VCTL_CLEAN_TAB  0x01 /* keep tabs as they are (header text) */
#define VCTL_CLEAN_FLAT 0x02 /* CR, LF and tab become one space (one-line fields) */

static const char vctl_usage_text[] =
    "usage: volleyctl [-c CONFIG | -s SOCKET] COMMAND [ARGS]\n"
    "\n"
    "Socket: -s SOCKET; else control.socket from -c CONFIG; else from the config\n"
    "named by $VOLLEY_CONF; else from " VCTL_DEFAULT_CONF " if it exists;\n"
    "else " VCTL_DEFAULT_SOCKET ".\n"
    "\n"
    "Commands:\n"
    "  status [--json]                   daemon, queue, spool and injection counters\n"
    "  queue [--json] [--domain D] [--campaign C]\n"
    "                                    recipient counts by state, domain, campaign\n"
    "  list [--json] [--domain D] [--campaign C] [--limit N]\n"
    "                                    queued messages\n"
    "  show ID [--json]                  envelope, headers and recipients of a message\n"
    "  cat ID                            the stored message, raw, to stdout\n"
    "  hold ID | --id ID | --domain D | --campaign C\n"
    "  release ID | --id ID | --domain D | --campaign C\n"
    "  delete ID | --id ID | --domain D | --campaign C\n"
    "                                    hold, release or delete matching recipients\n"
    "  retry ID|DOMAIN | --id ID | --domain D | --campaign C\n"
    "                                    make queued recipients due now (forget DNS\n"
    "                                    and site-down state)\n"
    "  suspend SITE [--source S] [--for SECONDS]   stop sending to a site (default 1 h)\n"
    "  resume SITE [--source S]          send to a suspended or backed-off site again\n"
    "  sites [--json]                    delivery sites: connections, queue, counts,\n"
    "                                    last reply, down until\n"
    "  verify                            check spool consistency (exit 1 on violations)\n"
    "  log rotate                        reopen the log files\n"
    "  report [--log FILE]... [--by domain|category|campaign|source] [--format F] ...\n"
    "                                    deliverability report from the accounting\n"
    "                                    log, offline (volleyctl report --help)\n"
    "  suppress add ADDRESS|@DOMAIN... [--scope S] [--reason R] [--expires WHEN]\n"
    "               [--source TEXT] [--no-purge]\n"
    "                                    never mail these; purges them from the queue\n"
    "  suppress remove ADDRESS|@DOMAIN... [--scope S]\n"
    "  suppress check ADDRESS [--sender S] [--list L] [--json]\n"
    "  suppress list [--scope S] [--limit N] [--json]\n"
    "  suppress export [--scope S] [FILE|-]   CSV: address,scope,reason,created,\n"
    "                                    expires,source\n"
    "  suppress import FILE|- [--scope S] [--reason R] [--no-purge]\n"
    "                                    add the entries of a CSV export or of a list\n"
    "                                    of addresses (nothing is sent if a line is bad)\n"
    "  forget ADDRESS                    erase an address: its entries go, its hash\n"
    "                                    stays suppressed, its queued mail is purged\n"
    "  bounce parse [--json] FILE...|-   parse saved bounces and complaints (mbox or\n"
    "                                    single messages), offline\n"
    "  bounce ingest FILE...|- [--to ADDRESS] [--server HOST:PORT]\n"
    "                                    hand them to the feedback listener over SMTP\n"
    "  check-domain DOMAIN [--source IP]... [--selector S]... [--dkim-key FILE] [--json]\n"
    "                                    DKIM, SPF, DMARC, PTR, bounce MX checks, offline\n"
    "\n"
    "S: \"\" (global, the default), domain:SENDERDOMAIN or list:NAME.  R: manual (the\n"
    "default), hard-bounce, complaint, unsubscribe or soft-bounce.  WHEN: a duration\n"
    "(90m, 12h, 30d, 2w) or a date (YYYY-MM-DD, RFC 3339).\n"
    "ID is a message id of 16 hex digits.\n"
    "Exit status: 0 success, 1 failure or daemon not reachable, 2 bad usage.\n";

/* The parsed command line; strings point into argv. */
struct vctl_args {
    const char *socket;               /* -s */
    const char *config;               /* -c */
    int json;                         /* --json */
    const char *id;                   /* as typed, NULL when not given */
    char id_canon[MSGID_STR_LEN + 1]; /* upper-case form sent to the daemon */
    const char *domain;               /* --domain */
    const char *campaign;             /* --campaign ("" selects messages without a campaign) */
    long long limit;                  /* --limit, when has_limit */
    int has_limit;
    const char *site;                 /* suspend / resume SITE */
    const char *source;               /* --source */
    long long seconds;                /* --for, 0 = the daemon's default */
};

/*
 * One connection to the daemon.  in holds what was received: the reply line, its
 * newline, and for `cat` possibly the first body bytes that came in the same read;
 * line_end is where the body starts.
 */
struct vctl_conn {
    int fd;
    const char *path;
    int timeout_s;
    struct vbuf in;
    size_t line_end;
};

struct vctl_cmd {
    const char *name; /* as typed */
    const char *word; /* required sub-word ("log rotate"), or NULL */
    const char *wire; /* "cmd" sent to the daemon */
    const char *past; /* verb for the result line of hold/release/delete */
    unsigned flags;   /* VCTL_OPT_*, VCTL_POS_ID, VCTL_NEED_ID, VCTL_SELECTOR */
    int timeout_s;
    /* render an ok:true reply as text; 0, or -1 for exit status 1 */
    int (*render)(const struct vctl_cmd *cmd, json_t *reply, struct vctl_conn *c);
};

static void vctl_kvf(const char *label, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* vctl_usage_exit - print the usage text to stderr and exit 2 */
_Noreturn void vctl_usage_exit(void)
{
    fputs(vctl_usage_text, stderr);
    exit(VCTL_EXIT_USAGE);
}

/* vctl_usage_error - print "volleyctl: <why>", then the usage text, and exit 2 */
_Noreturn void vctl_usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("volleyctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\n", stderr);
    vctl_usage_exit();
}

/* vctl_oom - jansson could not allocate: give up like xmalloc() does, but say why */
_Noreturn void vctl_oom(void)
{
    fputs("volleyctl: out of memory\n", stderr);
    exit(VCTL_EXIT_FAIL);
}

/*
 * vctl_clean_into - append s[0..n) to b with control characters made visible.
 * Strings from the daemon are valid UTF-8 (jansson checks), so the only escapes
 * needed are C0 controls, DEL and the C1 range U+0080..U+009F, which some terminals
 * obey as commands; a header or a remote reply must not be able to drive the
 * operator's terminal.
 */
static void vctl_clean_into(struct vbuf *b, const char *s, size_t n, unsigned flags)
{
    const unsigned char *p = (const unsigned char *)s;
    char esc[8];
    size_t i = 0;

    while (i < n) {
        size_t run = i;
        /* copy runs of harmless bytes in one append: headers can be megabytes */
        while (run < n && p[run] >= 0x20 && p[run] != 0x7f &&
               !(p[run] == 0xc2 && run + 1 < n && p[run + 1] >= 0x80 && p[run + 1] <= 0x9f))
            run++;
        vbuf_append(b, p + i, run - i);
        i = run;
        if (i >= n) break;
        unsigned char ch = p[i];
        if (ch == '\t' && (flags & VCTL_CLEAN_TAB)) {
            vbuf_append(b, "\t", 1);
        } else if ((flags & VCTL_CLEAN_FLAT) && (ch == '\t' || ch == '\r' || ch == '\n')) {
            if (b->len > 0 && b->data[b->len - 1] != ' ') vbuf_append(b, " ", 1);
        } else if (ch == 0xc2) {
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)p[i + 1]);
            vbuf_append(b, esc, strlen(esc));
            i++;
        } else {
            snprintf(esc, sizeof esc, "\\x%02x", (unsigned)ch);
            vbuf_append(b, esc, strlen(esc));
        }
        i++;
    }
    if (flags & VCTL_CLEAN_FLAT)
        while (b->len > 0 && b->data[b->len - 1] == ' ')
            b->len--;
}

/* vctl_clean - NUL-terminated copy of s[0..n) safe for a terminal; caller frees */
static char *vctl_clean(const char *s, size_t n, unsigned flags)
{
    struct vbuf b;
    vbuf_init(&b, SIZE_MAX);
    vctl_clean_into(&b, s, n, flags);
    vbuf_append(&b, "", 1);
    return (char *)b.data;
}

/* vctl_clean_line - vctl_clean of the C string s on one line (the feedback commands) */
char *vctl_clean_line(const char *s)
{
    return vctl_clean(s, strlen(s), VCTL_CLEAN_FLAT);
}

/* vctl_width - display columns of s, counting one per UTF-8 code point */
size_t vctl_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80) w++;
    return w;
}

/*
 * vctl_jclean - cleaned one-line copy of string member key of o; dflt when it is
 * absent, not a string or empty.  Caller frees.
 */
static char *vctl_jclean(json_t *o, const char *key, const char *dflt)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v) || json_string_length(v) == 0) return xstrdup(dflt);
    return vctl_clean(json_string_value(v), json_string_length(v), VCTL_CLEAN_FLAT);
}

/* vctl_jint - integer member key of o into *v; 0, or -1 if absent or not an integer */
static int vctl_jint(json_t *o, const char *key, long long *v)
{
    json_t *j = json_object_get(o, key);
    if (!json_is_integer(j)) return -1;
    *v = (long long)json_integer_value(j);
    return 0;
}

/* vctl_jint_text - decimal text of integer member key of o, or "-"; returns buf */
static const char *vctl_jint_text(json_t *o, const char *key, char *buf, size_t sz)
{
    long long v;
    if (vctl_jint(o, key, &v) < 0)
        str_copy(buf, sz, "-");
    else
        snprintf(buf, sz, "%lld", v);
    return buf;
}

/* vctl_size_text - n bytes as "512 B" or "12.3 MiB" into buf */
static void vctl_size_text(long long n, char *buf, size_t sz)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (n < 1024) {
        snprintf(buf, sz, "%lld B", n);
        return;
    }
    double v = (double)n / 1024;
    size_t u = 0;
    while (v >= 1024 && u + 1 < ARRAY_LEN(units)) {
        v /= 1024;
        u++;
    }
    snprintf(buf, sz, "%.1f %s", v, units[u]);
}

/* vctl_duration_text - seconds as "42s", "5m 3s", "4h 12m" or "3d 4h" into buf */
static void vctl_duration_text(long long s, char *buf, size_t sz)
{
    if (s < 60)
        snprintf(buf, sz, "%llds", s);
    else if (s < 3600)
        snprintf(buf, sz, "%lldm %llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, sz, "%lldh %lldm", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, sz, "%lldd %lldh", s / 86400, s % 86400 / 3600);
}

/* vctl_plural - "s" unless n is one */
static const char *vctl_plural(long long n)
{
    return n == 1 ? "" : "s";
}

/* vctl_kvf - one "label     value" line of a key/value block on stdout */
static void vctl_kvf(const char *label, const char *fmt, ...)
{
    va_list ap;
    printf("%-*s", VCTL_LABEL_WIDTH, label);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

/*
 * vctl_table - rows of cleaned cells printed in aligned columns.  The table owns its
 * cells; the last column is never padded, so the unbounded field (sender, last
 * reply) goes last and long values do not push every row wide.
 */
struct vctl_table {
    size_t ncols;
    const char *const *heads;
    const char *align; /* per column: 'l' or 'r' */
    char **cells;      /* row-major */
    size_t ncells, cap;
};

/* vctl_table_init - an empty table with ncols columns; heads and align must outlive it */
static void vctl_table_init(struct vctl_table *t, size_t ncols, const char *const *heads,
                            const char *align)
{
    t->ncols = ncols;
    t->heads = heads;
    t->align = align;
    t->cells = NULL;
    t->ncells = t->cap = 0;
}

/* vctl_table_take - append cell (already cleaned) to the current row; takes ownership */
static void vctl_table_take(struct vctl_table *t, char *cell)
{
    if (t->ncells == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->cells = xrealloc(t->cells, t->cap * sizeof *t->cells);
    }
    t->cells[t->ncells++] = cell;
}

/* vctl_table_text - append a copy of our own text s */
static void vctl_table_text(struct vctl_table *t, const char *s)
{
    vctl_table_take(t, vctl_clean(s, strlen(s), VCTL_CLEAN_FLAT));
}

/* vctl_table_jstr - append string member key of o, or dflt */
static void vctl_table_jstr(struct vctl_table *t, json_t *o, const char *key, const char *dflt)
{
    vctl_table_take(t, vctl_jclean(o, key, dflt));
}

/* vctl_table_jint - append integer member key of o, or "-" */
static void vctl_table_jint(struct vctl_table *t, json_t *o, const char *key)
{
    char buf[32];
    vctl_table_text(t, vctl_jint_text(o, key, buf, sizeof buf));
}

/* vctl_table_cell - print s padded to width w on the side its column asks for */
static void vctl_table_cell(const struct vctl_table *t, size_t col, const char *s, size_t w)
{
    size_t pad = w - vctl_width(s);
    int last = col + 1 == t->ncols;
    if (col > 0) fputs("  ", stdout);
    if (t->align[col] == 'r')
        printf("%*s%s", (int)pad, "", s);
    else if (last)
        fputs(s, stdout);
    else
        printf("%s%*s", s, (int)pad, "");
}

/* vctl_table_print - the header row and every row, each line prefixed by indent */
static void vctl_table_print(const struct vctl_table *t, const char *indent)
{
    size_t *w = xcalloc(t->ncols, sizeof *w);
    for (size_t c = 0; c < t->ncols; c++)
        w[c] = vctl_width(t->heads[c]);
    for (size_t i = 0; i < t->ncells; i++) {
        size_t cw = vctl_width(t->cells[i]);
        if (cw > w[i % t->ncols]) w[i % t->ncols] = cw;
    }
    fputs(indent, stdout);
    for (size_t c = 0; c < t->ncols; c++)
        vctl_table_cell(t, c, t->heads[c], w[c]);
    putchar('\n');
    for (size_t i = 0; i + t->ncols <= t->ncells; i += t->ncols) {
        fputs(indent, stdout);
        for (size_t c = 0; c < t->ncols; c++)
            vctl_table_cell(t, c, t->cells[i + c], w[c]);
        putchar('\n');
    }
    free(w);
}

/* vctl_table_free - release every cell */
static void vctl_table_free(struct vctl_table *t)
{
    for (size_t i = 0; i < t->ncells; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->ncells = t->cap = 0;
}

/* vctl_connect_error - the one-line "cannot connect" message for error err */
static void vctl_connect_error(const struct vctl_conn *c, int err)
{
    fprintf(stderr, "volleyctl: cannot connect to %s: %s (is volleyd running?)\n", c->path,
            strerror(err));
}

/*
 * vctl_connect_wait - finish a connect() that a signal interrupted.  The kernel
 * keeps connecting after EINTR, and calling connect() again would fail with
 * EALREADY, so wait for the socket to become writable and read the outcome.
 */
static int vctl_connect_wait(struct vctl_conn *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
    int err = 0;
    socklen_t len = sizeof err;
    int n;

    do
        n = poll(&pfd, 1, c->timeout_s * 1000);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        err = errno;
    else if (n == 0)
        err = ETIMEDOUT;
    else if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == 0) return 0;
    vctl_connect_error(c, err);
    return -1;
}

/*
 * vctl_connect - open c->fd to the control socket at c->path; 0, or -1 after the
 * one-line error.  Both timeouts are set before connect() because a unix connect
 * to a listener with a full backlog blocks, bounded by SO_SNDTIMEO.
 */
static int vctl_connect(struct vctl_conn *c)
{
    struct sockaddr_un sun;
    size_t plen = strlen(c->path);
    struct timeval tv = {.tv_sec = c->timeout_s, .tv_usec = 0};

    if (plen >= sizeof sun.sun_path) {
        vctl_connect_error(c, ENAMETOOLONG);
        return -1;
    }
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, c->path, plen + 1);

    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        vctl_connect_error(c, errno);
        return -1;
    }
    if (setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) {
        fprintf(stderr, "volleyctl: cannot set socket timeouts: %s\n", strerror(errno));
        return -1;
    }
    if (connect(c->fd, (struct sockaddr *)&sun, sizeof sun) == 0) return 0;
    if (errno == EINTR) return vctl_connect_wait(c);
    vctl_connect_error(c, errno);
    return -1;
}

/* vctl_send_all - write p[0..n) to the daemon despite short writes; 0 or -1 */
static int vctl_send_all(struct vctl_conn *c, const char *p, size_t n)
{
    while (n > 0) {
        /* MSG_NOSIGNAL: a daemon that closes on us is an error to report, not SIGPIPE */
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                fprintf(stderr, "volleyctl: %s: volleyd did not take the request within %d s\n",
                        c->path, c->timeout_s);
            else
                fprintf(stderr, "volleyctl: %s: cannot send the request: %s\n", c->path,
                        strerror(errno));
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* vctl_recv - read up to n bytes into p, retrying EINTR; 0 with *got (0 at EOF) or -1 */
static int vctl_recv(struct vctl_conn *c, void *p, size_t n, size_t *got)
{
    for (;;) {
        ssize_t r = recv(c->fd, p, n, 0);
        if (r >= 0) {
            *got = (size_t)r;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            fprintf(stderr, "volleyctl: %s: no answer from volleyd within %d s\n", c->path,
                    c->timeout_s);
        else
            fprintf(stderr, "volleyctl: %s: read failed: %s\n", c->path, strerror(errno));
        return -1;
    }
}

/*
 * vctl_read_line - receive until the first newline; *line (not NUL-terminated, owned
 * by c) and *len exclude it.  The buffer's limit is the line cap plus the newline,
 * and each read asks for no more than the room left, so a runaway reply is refused
 * at the cap instead of growing memory.
 */
static int vctl_read_line(struct vctl_conn *c, const char **line, size_t *len)
{
    size_t scanned = 0;
    for (;;) {
        const uint8_t *nl = NULL;
        if (c->in.len > scanned) nl = memchr(c->in.data + scanned, '\n', c->in.len - scanned);
        if (nl) {
            *line = (const char *)c->in.data;
            *len = (size_t)(nl - c->in.data);
            c->line_end = *len + 1;
            return 0;
        }
        scanned = c->in.len;
        size_t room = c->in.limit - c->in.len;
        if (room == 0) {
            fprintf(stderr, "volleyctl: %s: reply longer than %zu MiB; refusing it\n", c->path,
                    VCTL_LINE_MAX >> 20);
            return -1;
        }
        size_t want = room < VCTL_CHUNK ? room : VCTL_CHUNK;
        size_t got;
        if (vbuf_reserve(&c->in, want) < 0) return -1; /* cannot happen: want <= room */
        if (vctl_recv(c, c->in.data + c->in.len, want, &got) < 0) return -1;
        if (got == 0) {
            fprintf(stderr, "volleyctl: %s: volleyd closed the connection %s\n", c->path,
                    c->in.len ? "in the middle of a reply" : "without a reply");
            return -1;
        }
        c->in.len += got;
    }
}

/* vctl_write_all - write p[0..n) to fd despite short writes; 0 or -1 after an error */
static int vctl_write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "volleyctl: write to stdout failed: %s\n", strerror(errno));
            return -1;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * vctl_parse_reply - the reply line as a JSON object with a boolean "ok"; NULL after
 * an error.  Caller decrefs.  \u0000 is allowed in strings because header text may
 * carry one; it is escaped again on output.
 */
static json_t *vctl_parse_reply(const struct vctl_conn *c, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *r = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
    if (!r) {
        char *why = vctl_clean(jerr.text, strlen(jerr.text), VCTL_CLEAN_FLAT);
        fprintf(stderr, "volleyctl: %s: malformed reply from volleyd: %s\n", c->path, why);
        free(why);
        return NULL;
    }
    if (!json_is_object(r) || !json_is_boolean(json_object_get(r, "ok"))) {
        fprintf(stderr, "volleyctl: %s: malformed reply from volleyd: no \"ok\" member\n", c->path);
        json_decref(r);
        return NULL;
    }
    return r;
}

/* vctl_report_failure - print the error of an ok:false reply; always -1 */
static int vctl_report_failure(json_t *reply)
{
    char *why = vctl_jclean(reply, "error", "volleyd reported a failure without a reason");
    fprintf(stderr, "volleyctl: %s\n", why);
    free(why);
    return -1;
}

/* vctl_print_json - the reply object, indented by 2, on stdout; 0 or -1 */
static int vctl_print_json(json_t *reply)
{
    if (json_dumpf(reply, stdout, JSON_INDENT(2)) < 0) {
        fprintf(stderr, "volleyctl: cannot write the reply: %s\n", strerror(errno));
        return -1;
    }
    putchar('\n');
    return 0;
}

/* vctl_render_status - daemon, queue, spool and injection counters */
static int vctl_render_status(const struct vctl_cmd *cmd, json_t *r, struct vctl_conn *c)
{
    json_t *q = json_object_get(r, "queue");
    json_t *sp = json_object_get(r, "spool");
    json_t *inj = json_object_get(r, "inject");
    char *version = vctl_jclean(r, "version", "-");
    char *dir = vctl_jclean(sp, "dir", "-");
    char a[32], b[32], d[32], e[32], pct[32] = "";
    long long up, used, map;

    (void)cmd;
    (void)c;
    vctl_kvf("state", "up");
    vctl_kvf("version", "%s", version);
    vctl_kvf("pid", "%s", vctl_jint_text(r, "pid", a, sizeof a));
    if (vctl_jint(r, "uptime_s", &up) == 0)
        vctl_duration_text(up, a, sizeof a);
    else
        str_copy(a, sizeof a, "-");
    vctl_kvf("uptime", "%s", a);
    vctl_kvf("queue", "%s messages, %s recipients, %s due",
             vctl_jint_text(q, "messages", a, sizeof a),
             vctl_jint_text(q, "recipients", b, sizeof b), vctl_jint_text(q, "due", d, sizeof d));

    if (vctl_jint(sp, "used_bytes", &used) == 0)
        vctl_size_text(used, a, sizeof a);
    else
        str_copy(a, sizeof a, "-");
    if (vctl_jint(sp, "map_bytes", &map) == 0)
        vctl_size_text(map, b, sizeof b);
    else
        str_copy(b, sizeof b, "-");
    if (vctl_jint(sp, "used_bytes", &used) == 0 && vctl_jint(sp, "map_bytes", &map) == 0 && map > 0)
        snprintf(pct, sizeof pct, " (%.1f%%)", 100.0 * (double)used / (double)map);
    vctl_kvf("spool", "%s of %s used%s in %s; %s commits, %s ops", a, b, pct, dir,
             vctl_jint_text(sp, "commits", d, sizeof d), vctl_jint_text(sp, "ops", e, sizeof e));

    vctl_kvf("inject", "%s sessions; accepted %s messages, %s recipients; %s rejected",
             vctl_jint_text(inj, "sessions", a, sizeof a),
             vctl_jint_text(inj, "accepted_msgs", b, sizeof b),
             vctl_jint_text(inj, "accepted_rcpts", d, sizeof d),
             vctl_jint_text(inj, "rejected", e, sizeof e));
    free(version);
    free(dir);
    return 0;
}

/* One row of a queue breakdown; name points into the reply. */
struct vctl_qrow {
    const char *name;
    long long n[3]; /* by vctl_qstates */
    long long total;
};

/* The per-recipient states of ctl.h; disjoint, so a row's total is their sum. */
static const char *const vctl_qstates[3] = {"queued", "deferred", "held"};

/* vctl_qrow_cmp - larger total first, then by name, so the output is deterministic */
static int vctl_qrow_cmp(const void *x, const void *y)
{
    const struct vctl_qrow *p = x, *q = y;
    if (p->total != q->total) return p->total > q->total ? -1 : 1;
    return strcmp(p->name, q->name);
}

/* vctl_queue_table - print the breakdown object r[key] as a table headed title */
static void vctl_queue_table(json_t *r, const char *key, const char *title)
{
    json_t *obj = json_object_get(r, key);
    size_t n = json_is_object(obj) ? json_object_size(obj) : 0;
    static const char *heads[5] = {NULL, "TOTAL", "QUEUED", "DEFERRED", "HELD"};
    struct vctl_table t;
    const char *name;
    json_t *v;
    size_t i = 0;
    char buf[32];

    if (n == 0) return;
    struct vctl_qrow *rows = xcalloc(n, sizeof *rows);
    json_object_foreach(obj, name, v)
    {
        rows[i].name = name;
        for (size_t s = 0; s < ARRAY_LEN(vctl_qstates); s++) {
            long long x = 0;
            if (vctl_jint(v, vctl_qstates[s], &x) < 0 || x < 0) x = 0;
            rows[i].n[s] = x;
            /* saturate: the numbers come from outside and overflow is undefined */
            rows[i].total = x > LLONG_MAX - rows[i].total ? LLONG_MAX : rows[i].total + x;
        }
        i++;
    }
    qsort(rows, n, sizeof *rows, vctl_qrow_cmp);

    heads[0] = title;
    vctl_table_init(&t, 5, heads, "lrrrr");
    for (i = 0; i < n; i++) {
        /* messages without a campaign are counted under "" */
        vctl_table_text(&t, *rows[i].name ? rows[i].name : "(none)");
        snprintf(buf, sizeof buf, "%lld", rows[i].total);
        vctl_table_text(&t, buf);
        for (size_t s = 0; s < ARRAY_LEN(vctl_qstates); s++) {
            snprintf(buf, sizeof buf, "%lld", rows[i].n[s]);
            vctl_table_text(&t, buf);
        }
    }
    putchar('\n');
    vctl_table_print(&t, "");
    vctl_table_free(&t);
    free(rows);
}

/* vctl_render_queue - totals, then the domain and campaign tables */
static int vctl_render_queue(const struct vctl_cmd *cmd, json_t *r, struct vctl_conn *c)
{
    json_t *tot = json_object_get(r, "total");
    json_t *st = json_object_get(r, "by_state");
    char a[32], b[32], d[32];

    (void)cmd;
    (void)c;
    vctl_kvf("total", "%s messages, %s recipients", vctl_jint_text(tot, "messages", a, sizeof a),
             vctl_jint_text(tot, "recipients", b, sizeof b));
    vctl_kvf("by state", "%s queued, %s deferred, %s held",
             vctl_jint_text(st, "queued", a, sizeof a), vctl_jint_text(st, "deferred", b, sizeof b),
             vctl_jint_text(st, "held", d, sizeof d));
    vctl_queue_table(r, "by_domain", "DOMAIN");
    vctl_queue_table(r, "by_campaign", "CAMPAIGN");
    return 0;
}

/* vctl_table_sender - append the sender of o; "<>" is the null reverse-path */
static void vctl_table_sender(struct vctl_table *t, json_t *o)
{
    json_t *s = json_object_get(o, "sender");
    if (json_is_string(s) && json_string_length(s) == 0)
        vctl_table_text(t, "<>");
    else
        vctl_table_jstr(t, o, "sender", "-");
}

/* vctl_render_list - one row per message */
static int vctl_render_list(const struct vctl_cmd *cmd, json_t *r, struct vctl_conn *c)
{
    static const char *const heads[] = {"ID", "CREATED", "SIZE", "RCPTS", "CAMPAIGN", "SENDER"};
    json_t *msgs = json_object_get(r, "messages");
    size_t n = json_is_array(msgs) ? json_array_size(msgs) : 0;
    struct vctl_table t;
    char buf[32];

    (void)cmd;
    (void)c;
    if (n == 0) {
        puts("no messages");
        return 0;
    }
    vctl_table_init(&t, ARRAY_LEN(heads), heads, "llrrll");
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        long long size;
        vctl_table_jstr(&t, m, "id", "-");
        vctl_table_jstr(&t, m, "created", "-");
        if (vctl_jint(m, "size", &size) == 0)
            vctl_size_text(size, buf, sizeof buf);
        else
            str_copy(buf, sizeof buf, "-");
        vctl_table_text(&t, buf);
        vctl_table_jint(&t, m, "recipients");
        vctl_table_jstr(&t, m, "campaign", "-");
        vctl_table_sender(&t, m);
    }
    vctl_table_print(&t, "");
    vctl_table_free(&t);
    if (json_is_true(json_object_get(r, "truncated")))
        printf("(first %zu shown; more messages match: narrow the filter or raise --limit)\n", n);
    return 0;
}

/* vctl_print_headers - the header section, one indented line per header line */
static void vctl_print_headers(json_t *h)
{
    const char *s = json_string_value(h);
    size_t n = json_string_length(h);
    size_t start = 0;

    if (!s) {
        puts("    -");
        return;
    }
    /* the blank line that ends the header section is not worth a line of output */
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    while (start < n) {
        const char *nl = memchr(s + start, '\n', n - start);
        size_t end = nl ? (size_t)(nl - s) : n;
        size_t len = end - start;
        if (len > 0 && s[start + len - 1] == '\r') len--;
        char *line = vctl_clean(s + start, len, VCTL_CLEAN_TAB);
        printf("    %s\n", line);
        free(line);
        start = end + 1;
    }
}

/* vctl_render_show - envelope fields, headers, then the recipients table */
static int vctl_render_show(const struct vctl_cmd *cmd, json_t *r, struct vctl_conn *c)
{
    static const char *const heads[] = {"#",       "STATE",     "ATTEMPTS", "NEXT ATTEMPT",
                                        "ADDRESS", "LAST REPLY"};
    static const char *const fields[] = {"id", "created", "sender", "campaign"};
    json_t *flags = json_object_get(r, "flags");
    json_t *rcpts = json_object_get(r, "recipients");
    struct vctl_table t;
    struct vbuf fl;
    long long size;
    char a[32];

    (void)cmd;
    (void)c;
    for (size_t i = 0; i < ARRAY_LEN(fields); i++) {
        json_t *v = json_object_get(r, fields[i]);
        char *s =
            strcmp(fields[i], "sender") == 0 && json_is_string(v) && json_string_length(v) == 0
                ? xstrdup("<>")
                : vctl_jclean(r, fields[i], "-");
        vctl_kvf(fields[i], "%s", s);
        free(s);
    }
    if (vctl_jint(r, "size", &size) == 0 && size < 1024) {
        vctl_kvf("size", "%lld bytes", size);
    } else if (vctl_jint(r, "size", &size) == 0) {
        vctl_size_text(size, a, sizeof a);
        vctl_kvf("size", "%lld bytes (%s)", size, a);
    } else {
        vctl_kvf("size", "-");
    }
    for (size_t i = 0; i < 2; i++) {
        const char *key = i == 0 ? "client" : "helo";
        char *s = vctl_jclean(r, key, "-");
        vctl_kvf(key, "%s", s);
        free(s);
    }
    vbuf_init(&fl, SIZE_MAX);
    for (size_t i = 0; json_is_array(flags) && i < json_array_size(flags); i++) {
        json_t *f = json_array_get(flags, i);
        if (!json_is_string(f)) continue;
        if (fl.len) vbuf_append(&fl, ", ", 2);
        vctl_clean_into(&fl, json_string_value(f), json_string_length(f), VCTL_CLEAN_FLAT);
    }
    vbuf_append(&fl, "", 1);
    vctl_kvf("flags", "%s", fl.len > 1 ? (const char *)fl.data : "-");
    vbuf_free(&fl);

    puts("Headers:");
    vctl_print_headers(json_object_get(r, "headers"));

    puts("Recipients:");
    vctl_table_init(&t, ARRAY_LEN(heads), heads, "rlrlll");
    for (size_t i = 0; json_is_array(rcpts) && i < json_array_size(rcpts); i++) {
        json_t *rc = json_array_get(rcpts, i);
        vctl_table_jint(&t, rc, "index");
        vctl_table_jstr(&t, rc, "state", "-");
        vctl_table_jint(&t, rc, "attempts");
        vctl_table_jstr(&t, rc, "next_attempt", "-");
        vctl_table_jstr(&t, rc, "address", "-");
        vctl_table_jstr(&t, rc, "last_reply", "-");
    }
    vctl_table_print(&t, "    ");
    vctl_table_free(&t);
    return 0;
}

/*
 * vctl_render_cat - copy the size bytes that follow the reply line to stdout,
 * unmodified.  The bytes that arrived with the reply line are written first; the
 * rest streams through a fixed buffer, reading no further than size so nothing
 * beyond the message is consumed.
 */
static int vctl_render_cat(const struct vctl_cmd *cmd, json_t *r, struct vctl_conn *c)
{
    long long size;
    char buf[VCTL_CHUNK];

    (void)cmd;
    if (vctl_jint(r, "size", &size) < 0 || size < 0) {
        fprintf(stderr, "volleyctl: %s: malformed reply from volleyd: no \"size\"\n", c->path);
        return -1;
    }
    unsigned long long left = (unsigned long long)size;
    size_t have = c->in.len - c->line_end;
    if (have > left) have = (size_t)left;
    if (vctl_write_all(STDOUT_FILENO, c->in.data + c->line_end, have) < 0) return -1;
    left -= have;
    while (left > 0) {
        size_t want = left < sizeof buf ? (size_t)left : sizeof buf;
        size_t got;
        if (vctl_recv(c, buf, want, &got) < 0) return -1;
        if (got == 0) {
            fprintf(stderr, "volleyctl: %s: connection closed after %llu of %lld message bytes\n",
                    c->path, (unsigned long long)size - left, size);
            return -1;
        }
        if (vctl_write_all(STDOUT_FILENO, buf, got) < 0) return -1;
        left -= got;
    }
    return 0;
}

/* vctl_render_change - "held 12 recipients in 3 messages" and the like */
static int vctl_render_change(const struct vctl_cmd *cmd, json_t *r, struct vctl_conn *c)
{
    long long nr = -1, nm = -1;
    char a[32], b[32];

    (void)c;
    vctl_jint(r, "recipients", &nr);
    vctl_jint(r, "messages", &nm);
    vctl_jint_text(r, "recipients", a, sizeof a);
    vctl_jint_text(r, "messages", b, sizeof b);
    if (strcmp(cmd->name, "delete") == 0)
        printf("%s %s recipient%s, removed %s message%s\n", cmd->past, a, vctl_plural(nr), b,
               vctl_plural(nm));
    else if (nr > 0 && nm <= 0)
        /* ctl.h defines "messages" only for delete (removed); a daemon that sends 0 for
         * hold/release must not make us claim recipients spread over no messages */
        printf("%s %s recipient%s\n", cmd->past, a, vctl_plural(nr));
    else
        printf("%s %s recipient%s in %s message%s\n", cmd->past, a, vctl_plural(nr), b,
               vctl_plural(nm));
    return 0;
}

/* vctl_render_sites - one row per delivery site */
static int vctl_render_sites(const struct vctl_cmd *cmd, json_t *r, struct vctl_conn *c)
{
    static const char *const heads[] = {"SITE",    "CONNS",   "QUEUED",     "DELIVERED",
                                        "DEFERRED", "BOUNCED", "DOWN UNTIL", "LAST REPLY"};
    json_t *sites = json_object_get(r, "sites");
    size_t n = json_is_array(sites) ? json_array_size(sites) : 0;
    struct vctl_table t;

    (void)cmd;
    (void)c;
    if (n == 0) {
        puts("no sites yet");
        return 0;
    }
    vctl_table_init(&t, ARRAY_LEN(heads), heads, "lrrrrrll");
    for (size_t i = 0; i < n; i++) {
        json_t *site = json_array_get(sites, i);
        vctl_table_jstr(&t, site, "site", "-");
        vctl_table_jint(&t, site, "connections");
        vctl_table_jint(&t, site, "queued");
        vctl_table_jint(&t, site, "delivered");
        vctl_table_jint(&t, site, "deferred");
        vctl_table_jint(&t, site, "bounced");
        const char *down = json_string_value(json_object_get(site, "down_until"));
        vctl_table_text(&t, down && *down ? down : "-");
        vctl_table_jstr(&t, site, "last_reply", "-");
    }
    vctl_table_print(&t, "");
    vctl_table_free(&t);

    /* traffic shaping: one row per (source, site) pair */
    static const char *const pheads[] = {"SITE",  "CLASS",    "SOURCE",  "STATE",   "UNTIL",
                                         "CONNS", "MAX CONNS", "RATE/S", "SENT/MIN", "QUEUED"};
    vctl_table_init(&t, ARRAY_LEN(pheads), pheads, "lllllrrrrr");
    for (size_t i = 0; i < n; i++) {
        json_t *site = json_array_get(sites, i), *pairs = json_object_get(site, "pairs");
        for (size_t k = 0; json_is_array(pairs) && k < json_array_size(pairs); k++) {
            json_t *p = json_array_get(pairs, k);
            char rate[32];
            double rv = json_number_value(json_object_get(p, "rate"));
            if (rv > 0)
                snprintf(rate, sizeof rate, "%.2f", rv);
            else
                snprintf(rate, sizeof rate, "-");
            vctl_table_jstr(&t, site, "site", "-");
            vctl_table_jstr(&t, site, "class", "-");
            vctl_table_jstr(&t, p, "source", "-");
            vctl_table_jstr(&t, p, "state", "-");
            const char *until = json_string_value(json_object_get(p, "until"));
            vctl_table_text(&t, until && *until ? until : "-");
            vctl_table_jint(&t, p, "connections");
            vctl_table_jint(&t, p, "max_connections");
            vctl_table_text(&t, rate);
            vctl_table_jint(&t, p, "sent_last_minute");
            vctl_table_jint(&t, site, "queued");
        }
    }
    putchar('\n');
    vctl_table_print(&t, "");
    vctl_table_free(&t);
    return 0;
}

/* vctl_render_shape - how many (source, site) pairs were suspended or resumed */
static int vctl_render_shape(const struct vctl_cmd *cmd, json_t *r, struct vctl_conn *c)
{
    long long n;
    if (vctl_jint(r, "pairs", &n) < 0) {
        fprintf(stderr, "volleyctl: %s: malformed reply from volleyd: no \"pairs\"\n", c->path);
        return -1;
    }
    printf("%s %lld (source, site) pair%s\n", cmd->past, n, vctl_plural(n));
    return 0;
}

/* vctl_render_verify - the violation count and the first one; -1 if there are any */
static int vctl_render_verify(const struct vctl_cmd *cmd, json_t *r, struct vctl_conn *c)
{
    long long n;

    (void)cmd;
    if (vctl_jint(r, "violations", &n) < 0) {
        fprintf(stderr, "volleyctl: %s: malformed reply from volleyd: no \"violations\"\n",
                c->path);
        return -1;
    }
    if (n == 0) {
        puts("spool consistent: no violations");
        return 0;
    }
    char *first = vctl_jclean(r, "first", "-");
    printf("spool inconsistent: %lld violation%s\nfirst: %s\n", n, vctl_plural(n), first);
    free(first);
    return -1;
}

/* vctl_render_log_rotate - confirm the reopen */
static int vctl_render_log_rotate(const struct vctl_cmd *cmd, json_t *r, struct vctl_conn *c)
{
    (void)cmd;
    (void)r;
    (void)c;
    puts("log files reopened");
    return 0;
}

/*
 * Bulk changes and verify get the long timeout: the daemon answers them only after
 * walking (and, for changes, committing) every matching record, which on a big
 * spool can legitimately take minutes.
 */
static const struct vctl_cmd vctl_cmds[] = {
    {"status", NULL, "status", NULL, VCTL_OPT_JSON, VCTL_TIMEOUT_S, vctl_render_status},
    {"queue", NULL, "queue", NULL, VCTL_OPT_JSON | VCTL_OPT_DOMAIN | VCTL_OPT_CAMPAIGN,
     VCTL_TIMEOUT_S, vctl_render_queue},
    {"list", NULL, "list", NULL,
     VCTL_OPT_JSON | VCTL_OPT_DOMAIN | VCTL_OPT_CAMPAIGN | VCTL_OPT_LIMIT, VCTL_TIMEOUT_S,
     vctl_render_list},
    {"show", NULL, "show", NULL, VCTL_OPT_JSON | VCTL_POS_ID | VCTL_NEED_ID, VCTL_TIMEOUT_S,
     vctl_render_show},
    {"cat", NULL, "cat", NULL, VCTL_POS_ID | VCTL_NEED_ID, VCTL_TIMEOUT_S, vctl_render_cat},
    {"hold", NULL, "hold", "held",
     VCTL_POS_ID | VCTL_OPT_ID | VCTL_OPT_DOMAIN | VCTL_OPT_CAMPAIGN | VCTL_SELECTOR,
     VCTL_TIMEOUT_BULK_S, vctl_render_change},
    {"release", NULL, "release", "released",
     VCTL_POS_ID | VCTL_OPT_ID | VCTL_OPT_DOMAIN | VCTL_OPT_CAMPAIGN | VCTL_SELECTOR,
     VCTL_TIMEOUT_BULK_S, vctl_render_change},
    {"delete", NULL, "delete", "deleted",
     VCTL_POS_ID | VCTL_OPT_ID | VCTL_OPT_DOMAIN | VCTL_OPT_CAMPAIGN | VCTL_SELECTOR,
     VCTL_TIMEOUT_BULK_S, vctl_render_change},
    {"retry", NULL, "retry", "made due now",
     VCTL_POS_ID | VCTL_POS_DOMAIN | VCTL_OPT_ID | VCTL_OPT_DOMAIN | VCTL_OPT_CAMPAIGN |
         VCTL_SELECTOR,
     VCTL_TIMEOUT_BULK_S, vctl_render_change},
    {"sites", NULL, "sites", NULL, VCTL_OPT_JSON, VCTL_TIMEOUT_S, vctl_render_sites},
    {"suspend", NULL, "suspend", "suspended", VCTL_POS_SITE, VCTL_TIMEOUT_S, vctl_render_shape},
    {"resume", NULL, "resume", "resumed", VCTL_POS_SITE, VCTL_TIMEOUT_S, vctl_render_shape},
    {"verify", NULL, "verify", NULL, 0, VCTL_TIMEOUT_BULK_S, vctl_render_verify},
    {"log", "rotate", "log_rotate", NULL, 0, VCTL_TIMEOUT_S, vctl_render_log_rotate},
};

/* vctl_find_cmd - the table entry called name, or NULL */
static const struct vctl_cmd *vctl_find_cmd(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(vctl_cmds); i++)
        if (strcmp(vctl_cmds[i].name, name) == 0) return &vctl_cmds[i];
    return NULL;
}

/*
 * vctl_optval - if argv[*i] is "name VALUE" or "name=VALUE", point *val at the value
 * (advancing *i past a separate one) and return 1; return 0 for any other argument.
 */
int vctl_optval(const char *name, int argc, char **argv, int *i, const char **val)
{
    int rc = opt_value(name, argc, argv, i, val);
    if (rc < 0) vctl_usage_error("%s needs a value", name);
    return rc;
}

/* vctl_set_once - store val in *slot, refusing an option given twice */
static void vctl_set_once(const char **slot, const char *val, const char *what)
{
    if (*slot) vctl_usage_error("%s given twice", what);
    *slot = val;
}

/* vctl_parse_count - the value of option opt as a whole number in 1..max, or exit 2 */
long long vctl_parse_count(const char *opt, const char *s, long long max)
{
    long long v = 0;
    if (!*s) vctl_usage_error("%s needs a number", opt);
    /* digits only: strtoll would accept " 5", "+5" and "-5" */
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            vctl_usage_error("bad %s \"%s\": want a whole number from 1 to %lld", opt, s, max);
        v = v * 10 + (*p - '0');
        if (v > max) vctl_usage_error("bad %s \"%s\": at most %lld", opt, s, max);
    }
    if (v == 0) vctl_usage_error("bad %s \"%s\": want a whole number from 1 to %lld", opt, s, max);
    return v;
}

/*
 * vctl_parse_global - the options before COMMAND (-c, -s, -h); returns the index of
 * the command word.  Exits 2 on bad usage.
 */
static int vctl_parse_global(int argc, char **argv, struct vctl_args *a)
{
    int i = 1;
    while (i < argc && argv[i][0] == '-' && argv[i][1] != '\0') {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) vctl_usage_exit();
        if (strcmp(arg, "--") == 0) return i + 1;
        if (strcmp(arg, "-s") != 0 && strcmp(arg, "-c") != 0)
            vctl_usage_error("unknown option %s", arg);
        if (i + 1 >= argc || argv[i + 1][0] == '\0') vctl_usage_error("%s needs a path", arg);
        vctl_set_once(arg[1] == 's' ? &a->socket : &a->config, argv[i + 1], arg);
        i += 2;
    }
    return i;
}

/*
 * vctl_parse_args - the arguments after COMMAND, checked against what cmd accepts.
 * Options may come before or after the positional word.  Exits 2 on bad usage.
 */
static void vctl_parse_args(const struct vctl_cmd *cmd, int argc, char **argv, struct vctl_args *a)
{
    const char *word = NULL, *id_opt = NULL, *limit = NULL, *val;
    int positional_only = 0;
    uint64_t id;

    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (positional_only || arg[0] != '-' || arg[1] == '\0') {
            if (word) vctl_usage_error("%s: unexpected argument \"%s\"", cmd->name, arg);
            word = arg;
        } else if (strcmp(arg, "--") == 0) {
            positional_only = 1;
        } else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            vctl_usage_exit();
        } else if ((cmd->flags & VCTL_OPT_JSON) && strcmp(arg, "--json") == 0) {
            if (a->json) vctl_usage_error("--json given twice");
            a->json = 1;
        } else if ((cmd->flags & VCTL_OPT_DOMAIN) &&
                   vctl_optval("--domain", argc, argv, &i, &val)) {
            vctl_set_once(&a->domain, val, "--domain");
        } else if ((cmd->flags & VCTL_OPT_CAMPAIGN) &&
                   vctl_optval("--campaign", argc, argv, &i, &val)) {
            vctl_set_once(&a->campaign, val, "--campaign");
        } else if ((cmd->flags & VCTL_OPT_LIMIT) && vctl_optval("--limit", argc, argv, &i, &val)) {
            vctl_set_once(&limit, val, "--limit");
        } else if ((cmd->flags & VCTL_OPT_ID) && vctl_optval("--id", argc, argv, &i, &val)) {
            vctl_set_once(&id_opt, val, "--id");
        } else if ((cmd->flags & VCTL_POS_SITE) &&
                   vctl_optval("--source", argc, argv, &i, &val)) {
            vctl_set_once(&a->source, val, "--source");
        } else if ((cmd->flags & VCTL_POS_SITE) && strcmp(cmd->name, "suspend") == 0 &&
                   vctl_optval("--for", argc, argv, &i, &val)) {
            if (a->seconds) vctl_usage_error("--for given twice");
            a->seconds = vctl_parse_count("--for", val, 366LL * 86400);
        } else {
            vctl_usage_error("%s: unknown option %s", cmd->name, arg);
        }
    }

    if (cmd->word) {
        if (!word) vctl_usage_error("%s: missing \"%s\"", cmd->name, cmd->word);
        if (strcmp(word, cmd->word) != 0)
            vctl_usage_error("%s: unknown subcommand \"%s\"", cmd->name, word);
    } else if (cmd->flags & VCTL_POS_SITE) {
        if (!word || !*word) vctl_usage_error("%s: missing SITE (see volleyctl sites)", cmd->name);
        a->site = word;
    } else if (word && !(cmd->flags & VCTL_POS_ID)) {
        vctl_usage_error("%s: unexpected argument \"%s\"", cmd->name, word);
    } else if (word) {
        uint64_t probe;
        if ((cmd->flags & VCTL_POS_DOMAIN) && msgid_parse(word, &probe) < 0)
            a->domain = word;
        else
            a->id = word;
    }
    if (id_opt) {
        if (a->id) vctl_usage_error("%s: message id given twice", cmd->name);
        a->id = id_opt;
    }
    if ((cmd->flags & VCTL_NEED_ID) && !a->id)
        vctl_usage_error("%s: missing message id", cmd->name);
    if ((cmd->flags & VCTL_SELECTOR) && (!!a->id + !!a->domain + !!a->campaign) != 1)
        vctl_usage_error("%s: give exactly one of ID, --id ID, --domain D, --campaign C",
                         cmd->name);
    if (a->id) {
        if (msgid_parse(a->id, &id) < 0)
            vctl_usage_error("malformed message id \"%s\" (want 16 hex digits)", a->id);
        msgid_format(id, a->id_canon);
    }
    /* an empty domain could only ever match nothing; an empty campaign is meaningful */
    if (a->domain && !*a->domain) vctl_usage_error("--domain needs a domain");
    if (limit) {
        a->limit = vctl_parse_count("--limit", limit, VCTL_LIMIT_MAX);
        a->has_limit = 1;
    }
}

/* vctl_req_str - set string member key of req to val, or exit 2 if val is not UTF-8 */
static void vctl_req_str(json_t *req, const char *key, const char *val)
{
    json_t *s = json_string(val);
    if (!s) vctl_usage_error("the --%s value is not valid UTF-8", key);
    if (json_object_set_new(req, key, s) < 0) vctl_oom();
}

/*
 * vctl_request - the request line for cmd and a, newline included, in a buffer the
 * caller frees; *len is its length.  Exits 2 if the arguments cannot be sent.
 */
static char *vctl_request(const struct vctl_cmd *cmd, const struct vctl_args *a, size_t *len)
{
    json_t *req = json_object();
    if (!req) vctl_oom();
    vctl_req_str(req, "cmd", cmd->wire);
    if (a->id) vctl_req_str(req, "id", a->id_canon);
    if (a->domain) vctl_req_str(req, "domain", a->domain);
    if (a->campaign) vctl_req_str(req, "campaign", a->campaign);
    if (a->site) vctl_req_str(req, "site", a->site);
    if (a->source) vctl_req_str(req, "source", a->source);
    if (a->seconds && json_object_set_new(req, "seconds", json_integer(a->seconds)) < 0)
        vctl_oom();
    if (a->has_limit && json_object_set_new(req, "limit", json_integer(a->limit)) < 0) vctl_oom();

    /* compact output has no newline: jansson escapes control characters in strings */
    size_t n = json_dumpb(req, NULL, 0, JSON_COMPACT);
    if (n == 0) vctl_oom();
    if (n + 1 > VCTL_REQUEST_MAX)
        vctl_usage_error("arguments too long: a request is at most %zu KiB",
                         VCTL_REQUEST_MAX >> 10);
    char *buf = xmalloc(n + 1);
    json_dumpb(req, buf, n, JSON_COMPACT);
    buf[n] = '\n';
    json_decref(req);
    *len = n + 1;
    return buf;
}

/*
 * vctl_conf_path - the config file to read: -c (config), else $VOLLEY_CONF, else
 * VCTL_DEFAULT_CONF unless it does not exist; NULL when there is none.  The result
 * points into config, the environment or static storage.
 */
const char *vctl_conf_path(const char *config)
{
    const char *env = getenv("VOLLEY_CONF");

    if (config) return config;
    if (env && *env) return env;
    if (access(VCTL_DEFAULT_CONF, F_OK) < 0 && errno == ENOENT) return NULL;
    return VCTL_DEFAULT_CONF;
}

/*
 * vctl_conf_load - the config vctl_conf_path finds, or the built-in defaults when
 * there is none; NULL after an error message, since a config that exists but
 * cannot be read must not silently become the defaults.  Free with conf_free().
 */
struct conf *vctl_conf_load(const char *config)
{
    const char *path = vctl_conf_path(config);
    char err[1024];
    struct conf *c = path ? conf_load(path, err, sizeof err) : conf_defaults();
    if (!c) fprintf(stderr, "volleyctl: %s\n", err);
    return c;
}

/*
 * vctl_socket_path - the control socket to use, in the order the usage text gives:
 * socket_opt (-s), else control.socket of vctl_conf_path(config), else the default;
 * caller frees.  NULL after printing why a config file could not be used: a config
 * that exists but cannot be read is an error rather than a reason to fall back,
 * since the fallback might be some other daemon's socket.
 */
char *vctl_socket_path(const char *socket_opt, const char *config)
{
    char err[1024];

    if (socket_opt) return xstrdup(socket_opt);
    const char *path = vctl_conf_path(config);
    if (!path) return xstrdup(VCTL_DEFAULT_SOCKET);
    struct conf *conf = conf_load(path, err, sizeof err);
    if (!conf) {
        fprintf(stderr, "volleyctl: %s\n", err);
        return NULL;
    }
    char *sock = xstrdup(conf->control_socket);
    conf_free(conf);
    return sock;
}

/*
 * vctl_acct_log_path - log.dir + "/accounting.log" from the config found the way
 * vctl_socket_path finds it (the -s option plays no part); caller frees.  With no
 * config file anywhere, log.dir's default.  NULL after printing why a config that
 * exists could not be read: `report --log FILE` still works then.
 */
static char *vctl_acct_log_path(const struct vctl_args *a)
{
    struct conf *conf = vctl_conf_load(a->config);
    if (!conf) return NULL;
    size_t n = strlen(conf->log_dir) + sizeof "/accounting.log";
    char *log = xmalloc(n);
    snprintf(log, n, "%s/accounting.log", conf->log_dir);
    conf_free(conf);
    return log;
}

/* vctl_exchange - connect, send req, read and render the reply; 0 or -1 */
static int vctl_exchange(const struct vctl_cmd *cmd, const struct vctl_args *a, struct vctl_conn *c,
                         const char *req, size_t reqlen)
{
    const char *line;
    size_t len;
    int rc;

    if (vctl_connect(c) < 0 || vctl_send_all(c, req, reqlen) < 0 ||
        vctl_read_line(c, &line, &len) < 0)
        return -1;
    json_t *reply = vctl_parse_reply(c, line, len);
    if (!reply) return -1;
    if (!json_is_true(json_object_get(reply, "ok")))
        rc = vctl_report_failure(reply);
    else if (a->json)
        rc = vctl_print_json(reply);
    else
        rc = cmd->render(cmd, reply, c);
    json_decref(reply);
    return rc;
}

/*
 * vctl_call - one exchange for the feedback commands (vctl_feedback.c): send req to
 * the control socket at path, with timeout_s seconds of silence allowed.  Returns
 * the reply when it says ok:true (caller decrefs); NULL after a one-line error on
 * stderr: request too long, daemon unreachable or silent, malformed reply, or
 * ok:false with its reason.
 */
json_t *vctl_call(const char *path, json_t *req, int timeout_s)
{
    struct vctl_conn c;
    json_t *reply = NULL;
    const char *line;
    size_t len;

    size_t n = json_dumpb(req, NULL, 0, JSON_COMPACT);
    if (n == 0) vctl_oom();
    if (n + 1 > VCTL_REQUEST_MAX) {
        fprintf(stderr, "volleyctl: request too long: at most %zu KiB\n", VCTL_REQUEST_MAX >> 10);
        return NULL;
    }
    char *buf = xmalloc(n + 1);
    json_dumpb(req, buf, n, JSON_COMPACT);
    buf[n] = '\n';

    memset(&c, 0, sizeof c);
    c.fd = -1;
    c.path = path;
    c.timeout_s = timeout_s;
    vbuf_init(&c.in, VCTL_LINE_MAX + 1);
    if (vctl_connect(&c) == 0 && vctl_send_all(&c, buf, n + 1) == 0 &&
        vctl_read_line(&c, &line, &len) == 0)
        reply = vctl_parse_reply(&c, line, len);
    if (reply && !json_is_true(json_object_get(reply, "ok"))) {
        vctl_report_failure(reply);
        json_decref(reply);
        reply = NULL;
    }
    if (c.fd >= 0) close(c.fd);
    vbuf_free(&c.in);
    free(buf);
    return reply;
}

/* main - parse, find the socket, run one exchange, map the outcome to an exit status */
int main(int argc, char **argv)
{
    struct vctl_args a;
    struct vctl_conn c;
    size_t reqlen;
    int rc;

    memset(&a, 0, sizeof a);
    int i = vctl_parse_global(argc, argv, &a);
    if (i >= argc) vctl_usage_error("missing command");
    if (strcmp(argv[i], "report") == 0) {
        /* offline: reads the accounting log, never the socket */
        char *log = vctl_acct_log_path(&a);
        rc = report_cli(argc - i, argv + i, log, stdout, stderr);
        free(log);
        return rc;
    }
    if (vctl_feedback_cmd(argv[i]))
        /* suppress, forget, bounce: their own arguments and exchanges */
        return vctl_feedback_main(argc - i, argv + i, a.socket, a.config);
    if (vctl_preflight_cmd(argv[i])) return vctl_preflight_main(argc - i, argv + i, a.config);
    const struct vctl_cmd *cmd = vctl_find_cmd(argv[i]);
    if (!cmd) vctl_usage_error("unknown command \"%s\"", argv[i]);
    vctl_parse_args(cmd, argc - i - 1, argv + i + 1, &a);
    char *req = vctl_request(cmd, &a, &reqlen);

    char *path = vctl_socket_path(a.socket, a.config);
    if (!path) {
        free(req);
        return VCTL_EXIT_FAIL;
    }
    memset(&c, 0, sizeof c);
    c.fd = -1;
    c.path = path;
    c.timeout_s = cmd->timeout_s;
    vbuf_init(&c.in, VCTL_LINE_MAX + 1);

    rc = vctl_exchange(cmd, &a, &c, req, reqlen);

    if (c.fd >= 0) close(c.fd);
    vbuf_free(&c.in);
    free(path);
    free(req);
    /* a full disk or closed pipe on stdout must not look like success to a script */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "volleyctl: write to stdout failed: %s\n", strerror(errno));
        rc = -1;
    }
    return rc == 0 ? VCTL_EXIT_OK : VCTL_EXIT_FAIL;
}
