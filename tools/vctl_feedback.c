/*
 * vctl_feedback - volleyctl's suppression and bounce commands.
 *
 * Owns: `suppress add | remove | check | list | export | import` and `forget`,
 * which talk to the control socket (src/ctl.h: suppress_add, suppress_remove,
 * forget, suppress_check, suppress_list); `bounce parse`, which runs the bounce
 * parser and classifier offline on saved messages; and `bounce ingest`, which
 * hands saved messages to the daemon's feedback listener over SMTP, so a bounce
 * that went to the wrong mailbox can still be counted.  Entry points:
 * vctl_feedback_cmd() and vctl_feedback_main().
 *
 * Invariants:
 *   - usage errors (exit 2) are found before a socket is opened; `suppress import`
 *     checks every line of its file before it sends the first entry, so a bad file
 *     changes nothing;
 *   - a request never exceeds the control protocol's 64 KiB line nor 5000 entries:
 *     entries go out in batches cut by both limits;
 *   - input files are read whole, up to VCTL_FB_INPUT_MAX; every socket wait is
 *     bounded (the control exchange by volleyctl.c, SMTP by poll() timeouts);
 *   - text from outside (addresses, diagnostics, remote replies, sources) reaches
 *     the terminal only through vctl_clean_line(); --json, CSV and the SMTP data
 *     stream are data and go out as they are.
 */
#include "vctl_feedback.h"

#include "bounce.h"
#include "bounce_class.h"
#include "conf.h"
#include "msgid.h"
#include "suppress.h"
#include "util.h"
#include "verp.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define VCTL_FB_EXIT_OK    0
#define VCTL_FB_EXIT_FAIL  1
#define VCTL_FB_EXIT_USAGE 2

#define VCTL_FB_BATCH_MAX       5000              /* ctl.h: entries per suppress_add */
#define VCTL_FB_REQ_BUDGET      (64 * 1024 - 256) /* request bytes, under ctl.h's 64 KiB */
#define VCTL_FB_PAGE_MAX        10000             /* ctl.h: entries per suppress_list page */
#define VCTL_FB_INPUT_MAX       ((size_t)1 << 30) /* bytes of one input file */
#define VCTL_FB_FIELD_MAX       1024              /* bytes of one CSV field */
#define VCTL_FB_FIELDS          6                 /* address,scope,reason,created,expires,source */
#define VCTL_FB_BAD_SHOWN       20                /* bad import lines reported one by one */
#define VCTL_FB_DIAG_SHOWN      72                /* diagnostic characters in the bounce table */
#define VCTL_FB_TIMEOUT_S       60                /* check, list, export */
#define VCTL_FB_TIMEOUT_BULK_S  600               /* changes that purge the queue */
#define VCTL_FB_SMTP_TIMEOUT_MS 30000             /* every SMTP wait of bounce ingest */
#define VCTL_FB_SMTP_LINE_MAX   4096              /* one SMTP reply line */
#define VCTL_FB_DURATION_MAX    (100LL * 366 * 86400) /* --expires durations */

/* What a subcommand accepts (vctl_fb_parse). */
#define VCTL_FB_O_SCOPE   0x001
#define VCTL_FB_O_REASON  0x002
#define VCTL_FB_O_EXPIRES 0x004
#define VCTL_FB_O_SOURCE  0x008
#define VCTL_FB_O_NOPURGE 0x010
#define VCTL_FB_O_SENDER  0x020
#define VCTL_FB_O_LIST    0x040
#define VCTL_FB_O_JSON    0x080
#define VCTL_FB_O_LIMIT   0x100
#define VCTL_FB_O_TO      0x200
#define VCTL_FB_O_SERVER  0x400

/* The parsed arguments of one subcommand; strings point into argv. */
struct vctl_fb_opts {
    const char *scope, *reason, *expires, *source, *sender, *list, *to, *server;
    long long limit; /* 0 = no limit */
    int json, no_purge;
    char **pos; /* positional arguments in order; owned */
    int npos;
};

/* vctl_fb_set - o[key] = v (reference stolen); exits when out of memory */
static void vctl_fb_set(json_t *o, const char *key, json_t *v)
{
    if (!v || json_object_set_new(o, key, v) < 0) vctl_oom();
}

/* vctl_fb_str - a JSON string of s, or exit 2 naming what when s is not UTF-8 */
static json_t *vctl_fb_str(const char *s, const char *what)
{
    json_t *j = json_string(s);
    if (!j) vctl_usage_error("%s is not valid UTF-8", what);
    return j;
}

/*
 * vctl_fb_parse - the arguments after "suppress add" and the like: the options in
 * allowed (anywhere), the rest positional ("-" included; everything after "--").
 * what names the command in error messages.  Exits 2 on bad usage.
 */
static void vctl_fb_parse(const char *what, unsigned allowed, int argc, char **argv,
                          struct vctl_fb_opts *o)
{
    static const struct {
        const char *name;
        unsigned flag;
        size_t off;
    } opts[] = {
        {"--scope", VCTL_FB_O_SCOPE, offsetof(struct vctl_fb_opts, scope)},
        {"--reason", VCTL_FB_O_REASON, offsetof(struct vctl_fb_opts, reason)},
        {"--expires", VCTL_FB_O_EXPIRES, offsetof(struct vctl_fb_opts, expires)},
        {"--source", VCTL_FB_O_SOURCE, offsetof(struct vctl_fb_opts, source)},
        {"--sender", VCTL_FB_O_SENDER, offsetof(struct vctl_fb_opts, sender)},
        {"--list", VCTL_FB_O_LIST, offsetof(struct vctl_fb_opts, list)},
        {"--to", VCTL_FB_O_TO, offsetof(struct vctl_fb_opts, to)},
        {"--server", VCTL_FB_O_SERVER, offsetof(struct vctl_fb_opts, server)},
    };
    const char *limit = NULL, *val;
    int positional_only = 0;

    memset(o, 0, sizeof *o);
    o->pos = xcalloc((size_t)argc + 1, sizeof *o->pos);
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        size_t k;
        if (positional_only || arg[0] != '-' || arg[1] == '\0') {
            o->pos[o->npos++] = argv[i];
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            positional_only = 1;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) vctl_usage_exit();
        if ((allowed & VCTL_FB_O_JSON) && strcmp(arg, "--json") == 0) {
            if (o->json) vctl_usage_error("--json given twice");
            o->json = 1;
            continue;
        }
        if ((allowed & VCTL_FB_O_NOPURGE) && strcmp(arg, "--no-purge") == 0) {
            o->no_purge = 1;
            continue;
        }
        if ((allowed & VCTL_FB_O_LIMIT) && vctl_optval("--limit", argc, argv, &i, &val)) {
            if (limit) vctl_usage_error("--limit given twice");
            limit = val;
            continue;
        }
        for (k = 0; k < ARRAY_LEN(opts); k++) {
            if (!(allowed & opts[k].flag) || !vctl_optval(opts[k].name, argc, argv, &i, &val))
                continue;
            const char **slot = (const char **)((char *)o + opts[k].off);
            if (*slot) vctl_usage_error("%s given twice", opts[k].name);
            *slot = val;
            break;
        }
        if (k == ARRAY_LEN(opts)) vctl_usage_error("%s: unknown option %s", what, arg);
    }
    if (limit) o->limit = vctl_parse_count("--limit", limit, 2147483647LL);
}

/* ---------------------------------------------------------------- time */

/* vctl_fb_digits - n decimal digits at *p into *v, advancing *p; 0 or -1 */
static int vctl_fb_digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        char ch = (*p)[i];
        if (ch < '0' || ch > '9') return -1;
        *v = *v * 10 + (ch - '0');
    }
    *p += n;
    return 0;
}

/*
 * vctl_fb_parse_date - "YYYY-MM-DD" (midnight UTC) or RFC 3339
 * "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" into epoch seconds; 0 or -1.
 * Out-of-range fields (February 30th, hour 25) are refused, not normalised.
 */
static int vctl_fb_parse_date(const char *s, int64_t *out)
{
    struct tm tm, back;
    int y, mo, d, h = 0, mi = 0, sec = 0, oh = 0, om = 0, sign = 0;
    const char *p = s;

    if (vctl_fb_digits(&p, 4, &y) < 0 || *p++ != '-' || vctl_fb_digits(&p, 2, &mo) < 0 ||
        *p++ != '-' || vctl_fb_digits(&p, 2, &d) < 0)
        return -1;
    if (*p) {
        if (*p != 'T' && *p != 't' && *p != ' ') return -1;
        p++;
        if (vctl_fb_digits(&p, 2, &h) < 0 || *p++ != ':' || vctl_fb_digits(&p, 2, &mi) < 0 ||
            *p++ != ':' || vctl_fb_digits(&p, 2, &sec) < 0)
            return -1;
        if (*p == '.') {
            p++;
            if (*p < '0' || *p > '9') return -1;
            while (*p >= '0' && *p <= '9')
                p++;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            sign = *p++ == '+' ? 1 : -1;
            if (vctl_fb_digits(&p, 2, &oh) < 0 || *p++ != ':' || vctl_fb_digits(&p, 2, &om) < 0 ||
                oh > 23 || om > 59)
                return -1;
        } else {
            return -1; /* RFC 3339 requires the offset: a local time would be a guess */
        }
        if (*p) return -1;
    }
    /* leap second 60 is refused too: an expiry does not need it */
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 59)
        return -1;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || !gmtime_r(&t, &back) || back.tm_mday != d) return -1;
    *out = (int64_t)t - (int64_t)sign * (oh * 3600 + om * 60);
    return 0;
}

/*
 * vctl_fb_parse_when - an expiry: a duration from now ("90m", "12h", "30d", "2w",
 * "3600s") or a date for vctl_fb_parse_date, into epoch seconds; 0 or -1.
 */
static int vctl_fb_parse_when(const char *s, int64_t now_s, int64_t *out)
{
    size_t n = strlen(s);
    long long v = 0, unit;

    if (n >= 2 && strspn(s, "0123456789") == n - 1) {
        switch (s[n - 1]) {
        case 's':
            unit = 1;
            break;
        case 'm':
            unit = 60;
            break;
        case 'h':
            unit = 3600;
            break;
        case 'd':
            unit = 86400;
            break;
        case 'w':
            unit = 7 * 86400;
            break;
        default:
            return -1;
        }
        for (size_t i = 0; i + 1 < n; i++) {
            v = v * 10 + (s[i] - '0');
            if (v > VCTL_FB_DURATION_MAX) return -1;
        }
        if (v == 0 || v * unit > VCTL_FB_DURATION_MAX) return -1;
        *out = now_s + v * unit;
        return 0;
    }
    return vctl_fb_parse_date(s, out);
}

/* ---------------------------------------------------------------- entries */

/* One suppression entry, checked, ready to become a request entry. */
struct vctl_fb_entry {
    char address[SUPPRESS_ADDR_MAX]; /* normalised, "@domain" or "#<64 hex>" */
    const char *scope;
    const char *reason; /* NULL: the daemon's default (manual) */
    int64_t expires;    /* epoch seconds, 0 = never */
    const char *source; /* NULL: the daemon's default (manual) */
};

/* vctl_fb_is_hash - "#" and 64 lower-case hex digits: a forgotten address */
static int vctl_fb_is_hash(const char *s)
{
    return s[0] == '#' && strlen(s) == SUPPRESS_HASH_LEN &&
           strspn(s + 1, "0123456789abcdef") == SUPPRESS_HASH_LEN - 1;
}

/*
 * vctl_fb_target - normalise an address, "@domain" or hashed target into out
 * (SUPPRESS_ADDR_MAX bytes); 0, or -1 with why
 */
static int vctl_fb_target(const char *in, char *out, char *why, size_t whyn)
{
    if (vctl_fb_is_hash(in)) return str_copy(out, SUPPRESS_ADDR_MAX, in);
    if (suppress_normalize(in, out, SUPPRESS_ADDR_MAX) == 0) return 0;
    snprintf(why, whyn, "not an address or @domain: \"%.100s\"", in);
    return -1;
}

/*
 * vctl_fb_entry_check - the checks the daemon makes, made here first so a bad
 * line is reported with its line number and nothing is sent: scope, reason (never
 * "forgotten", which only `forget` sets), source length.  0, or -1 with why.
 */
static int vctl_fb_entry_check(const struct vctl_fb_entry *e, char *why, size_t whyn)
{
    enum SUPPRESS_REASON r;
    if (!suppress_scope_valid(e->scope)) {
        snprintf(why, whyn, "bad scope \"%.100s\": use \"\", domain:D or list:NAME", e->scope);
        return -1;
    }
    if (e->reason && (suppress_reason_parse(e->reason, &r) < 0 || r == SUPPRESS_FORGOTTEN)) {
        snprintf(why, whyn,
                 "bad reason \"%.60s\": manual, hard-bounce, complaint, unsubscribe or "
                 "soft-bounce",
                 e->reason);
        return -1;
    }
    if (e->source && strlen(e->source) >= SUPPRESS_SOURCE_MAX) {
        snprintf(why, whyn, "source longer than %d bytes", SUPPRESS_SOURCE_MAX - 1);
        return -1;
    }
    return 0;
}

/* vctl_fb_entry_json - e as a request entry; NULL when a string is not UTF-8 */
static json_t *vctl_fb_entry_json(const struct vctl_fb_entry *e, int with_record)
{
    json_t *o = json_object(), *a = json_string(e->address), *s = json_string(e->scope);
    if (!o || !a || !s) goto bad;
    vctl_fb_set(o, "address", a);
    vctl_fb_set(o, "scope", s);
    a = s = NULL;
    if (!with_record) return o;
    if (e->reason) vctl_fb_set(o, "reason", json_string(e->reason));
    if (e->expires) vctl_fb_set(o, "expires_at", json_integer(e->expires));
    if (e->source) {
        json_t *src = json_string(e->source);
        if (!src) goto bad;
        vctl_fb_set(o, "source", src);
    }
    return o;
bad:
    json_decref(o);
    json_decref(a);
    json_decref(s);
    return NULL;
}

/*
 * A batch of entries on its way to the daemon: cut at VCTL_FB_BATCH_MAX entries
 * or VCTL_FB_REQ_BUDGET bytes, whichever comes first, and summed over the batches.
 */
struct vctl_fb_batch {
    const char *sock;
    const char *cmd; /* suppress_add or suppress_remove */
    int purge;
    json_t *entries;
    size_t bytes; /* of entries, compact, commas included */
    long long sent, applied, existing, purged;
};

/* vctl_fb_batch_init - an empty batch for cmd on the socket at sock */
static void vctl_fb_batch_init(struct vctl_fb_batch *b, const char *sock, const char *cmd,
                               int purge)
{
    memset(b, 0, sizeof *b);
    b->sock = sock;
    b->cmd = cmd;
    b->purge = purge;
    b->entries = json_array();
    if (!b->entries) vctl_oom();
}

/* vctl_fb_batch_flush - send what the batch holds and add up the reply; 0 or -1 */
static int vctl_fb_batch_flush(struct vctl_fb_batch *b)
{
    size_t n = json_array_size(b->entries);
    if (n == 0) return 0;
    json_t *req = json_object();
    if (!req) vctl_oom();
    vctl_fb_set(req, "cmd", json_string(b->cmd));
    vctl_fb_set(req, "entries", json_incref(b->entries));
    if (!b->purge) vctl_fb_set(req, "purge", json_false());
    json_t *r = vctl_call(b->sock, req, VCTL_FB_TIMEOUT_BULK_S);
    json_decref(req);
    if (!r) return -1;
    b->sent += (long long)n;
    b->applied += json_integer_value(json_object_get(r, "applied"));
    b->existing += json_integer_value(json_object_get(r, "existing"));
    b->purged += json_integer_value(json_object_get(r, "purged"));
    json_decref(r);
    json_array_clear(b->entries);
    b->bytes = 0;
    return 0;
}

/* vctl_fb_batch_add - append e (reference stolen), sending first if it would not fit */
static int vctl_fb_batch_add(struct vctl_fb_batch *b, json_t *e)
{
    size_t len = json_dumpb(e, NULL, 0, JSON_COMPACT) + 1;
    if (json_array_size(b->entries) >= VCTL_FB_BATCH_MAX || b->bytes + len > VCTL_FB_REQ_BUDGET)
        if (vctl_fb_batch_flush(b) < 0) {
            json_decref(e);
            return -1;
        }
    if (json_array_append_new(b->entries, e) < 0) vctl_oom();
    b->bytes += len;
    return 0;
}

/* vctl_fb_batch_free - release the batch (not what it sent) */
static void vctl_fb_batch_free(struct vctl_fb_batch *b)
{
    json_decref(b->entries);
    b->entries = NULL;
}

/* vctl_fb_print_added - the result line of suppress add and import */
static void vctl_fb_print_added(const struct vctl_fb_batch *b)
{
    printf("suppressed %lld new, %lld already there, %lld queued recipient%s removed\n", b->applied,
           b->existing, b->purged, b->purged == 1 ? "" : "s");
}

/* ---------------------------------------------------------------- table */

/*
 * vctl_fb_table - aligned columns for output of any length.  Rows are held until
 * max_pending have arrived; their widths then fix the columns for the rest, which
 * print as they come, so a million-line listing needs the memory of one page.
 * Cells are cleaned copies the table owns; the last column is never padded.
 */
struct vctl_fb_table {
    size_t ncols;
    const char *const *heads;
    size_t *w;
    char **cells; /* pending rows, row-major */
    size_t ncells, cap, max_pending;
    int fixed;
};

/* vctl_fb_table_init - an empty table; heads must outlive it */
static void vctl_fb_table_init(struct vctl_fb_table *t, size_t ncols, const char *const *heads,
                               size_t max_pending)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
    t->heads = heads;
    t->w = xcalloc(ncols, sizeof *t->w);
    t->max_pending = max_pending;
}

/* vctl_fb_table_line - print one row of ncols cells with the fixed widths */
static void vctl_fb_table_line(const struct vctl_fb_table *t, const char *const *row)
{
    for (size_t c = 0; c < t->ncols; c++) {
        if (c > 0) fputs("  ", stdout);
        fputs(row[c], stdout);
        size_t w = vctl_width(row[c]);
        if (c + 1 < t->ncols && w < t->w[c]) printf("%*s", (int)(t->w[c] - w), "");
    }
    putchar('\n');
}

/* vctl_fb_table_flush - fix the widths (first time: and print the header), print
 * the pending rows and free them */
static void vctl_fb_table_flush(struct vctl_fb_table *t)
{
    if (!t->fixed) {
        for (size_t c = 0; c < t->ncols; c++)
            t->w[c] = vctl_width(t->heads[c]);
        for (size_t i = 0; i < t->ncells; i++) {
            size_t w = vctl_width(t->cells[i]);
            if (w > t->w[i % t->ncols]) t->w[i % t->ncols] = w;
        }
        vctl_fb_table_line(t, t->heads);
        t->fixed = 1;
    }
    for (size_t i = 0; i + t->ncols <= t->ncells; i += t->ncols)
        vctl_fb_table_line(t, (const char *const *)t->cells + i);
    for (size_t i = 0; i < t->ncells; i++)
        free(t->cells[i]);
    t->ncells = 0;
}

/* vctl_fb_table_take - append a cleaned cell (ownership taken); flush full pages */
static void vctl_fb_table_take(struct vctl_fb_table *t, char *cell)
{
    if (t->ncells == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->cells = xrealloc(t->cells, t->cap * sizeof *t->cells);
    }
    t->cells[t->ncells++] = cell;
    if (t->ncells % t->ncols == 0 && (t->fixed || t->ncells / t->ncols >= t->max_pending))
        vctl_fb_table_flush(t);
}

/* vctl_fb_table_text - append s, cleaned; "-" when empty */
static void vctl_fb_table_text(struct vctl_fb_table *t, const char *s)
{
    vctl_fb_table_take(t, vctl_clean_line(s && *s ? s : "-"));
}

/* vctl_fb_table_end - print what is pending and free the table; a table that never
 * had a row prints nothing, not even its header */
static void vctl_fb_table_end(struct vctl_fb_table *t)
{
    if (t->fixed || t->ncells) vctl_fb_table_flush(t);
    free(t->cells);
    free(t->w);
    memset(t, 0, sizeof *t);
}

/* ---------------------------------------------------------------- suppress */

/* vctl_fb_jstr - string member key of o, "" when absent */
static const char *vctl_fb_jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* vctl_fb_scope_text - how a scope is shown: "" is "global" */
static const char *vctl_fb_scope_text(const char *scope)
{
    return *scope ? scope : "global";
}

/* vctl_fb_expires_opt - --expires as epoch seconds (0 = never); exits 2 when it is
 * malformed or already past */
static int64_t vctl_fb_expires_opt(const struct vctl_fb_opts *o)
{
    int64_t now_s = now_ms() / 1000, t;
    if (!o->expires) return 0;
    if (vctl_fb_parse_when(o->expires, now_s, &t) < 0)
        vctl_usage_error("bad --expires \"%s\": want 90m, 12h, 30d, 2w, YYYY-MM-DD or RFC 3339",
                         o->expires);
    if (t <= now_s) vctl_usage_error("--expires \"%s\" is in the past", o->expires);
    return t;
}

/*
 * vctl_fb_send_targets - the body of `suppress add` and `suppress remove`: every
 * positional ADDRESS|@DOMAIN of o, with the other fields of *e, is checked before
 * the first request goes out (a typo in the tenth argument sends nothing), then
 * they go to the daemon as cmd batches.  what names the command in usage errors;
 * full puts reason, source and expiry into the entries.  Returns the exit code;
 * *b holds the daemon's counts either way (all 0 when nothing was sent), its
 * entries already freed.  o->pos stays the caller's.
 */
static int vctl_fb_send_targets(const char *what, const char *cmd, int full, int purge,
                                const struct vctl_fb_opts *o, struct vctl_fb_entry *e,
                                const char *socket_opt, const char *config, struct vctl_fb_batch *b)
{
    char why[300];
    int rc = VCTL_FB_EXIT_OK;

    memset(b, 0, sizeof *b);
    json_t **ents = xcalloc((size_t)o->npos, sizeof *ents);
    for (int i = 0; i < o->npos; i++) {
        if (vctl_fb_target(o->pos[i], e->address, why, sizeof why) < 0 ||
            vctl_fb_entry_check(e, why, sizeof why) < 0)
            vctl_usage_error("%s: %s", what, why);
        ents[i] = vctl_fb_entry_json(e, full);
        if (!ents[i]) vctl_usage_error("%s: an argument is not valid UTF-8", what);
    }
    char *sock = vctl_socket_path(socket_opt, config);
    if (!sock) {
        for (int i = 0; i < o->npos; i++)
            json_decref(ents[i]);
        free(ents);
        return VCTL_FB_EXIT_FAIL;
    }
    vctl_fb_batch_init(b, sock, cmd, purge);
    for (int i = 0; i < o->npos; i++) {
        if (rc == VCTL_FB_EXIT_OK && vctl_fb_batch_add(b, ents[i]) < 0)
            rc = VCTL_FB_EXIT_FAIL;
        else if (rc != VCTL_FB_EXIT_OK)
            json_decref(ents[i]);
    }
    if (rc == VCTL_FB_EXIT_OK && vctl_fb_batch_flush(b) < 0) rc = VCTL_FB_EXIT_FAIL;
    vctl_fb_batch_free(b);
    b->sock = NULL; /* freed below; only the counts outlive this call */
    free(ents);
    free(sock);
    return rc;
}

/* vctl_fb_suppress_add - `suppress add ADDRESS|@DOMAIN...` */
static int vctl_fb_suppress_add(int argc, char **argv, const char *socket_opt, const char *config)
{
    struct vctl_fb_opts o;
    struct vctl_fb_entry e;
    struct vctl_fb_batch b;

    vctl_fb_parse("suppress add",
                  VCTL_FB_O_SCOPE | VCTL_FB_O_REASON | VCTL_FB_O_EXPIRES | VCTL_FB_O_SOURCE |
                      VCTL_FB_O_NOPURGE,
                  argc, argv, &o);
    if (o.npos == 0) vctl_usage_error("suppress add: missing ADDRESS or @DOMAIN");
    memset(&e, 0, sizeof e);
    e.scope = o.scope ? o.scope : "";
    e.reason = o.reason;
    e.source = o.source;
    e.expires = vctl_fb_expires_opt(&o);
    int rc = vctl_fb_send_targets("suppress add", "suppress_add", 1, !o.no_purge, &o, &e,
                                  socket_opt, config, &b);
    if (rc == VCTL_FB_EXIT_OK)
        vctl_fb_print_added(&b);
    else if (b.sent > 0)
        fprintf(stderr, "volleyctl: stopped after %lld of %d entries had been stored\n", b.sent,
                o.npos);
    free(o.pos);
    return rc;
}

/* vctl_fb_suppress_remove - `suppress remove ADDRESS|@DOMAIN... [--scope S]` */
static int vctl_fb_suppress_remove(int argc, char **argv, const char *socket_opt,
                                   const char *config)
{
    struct vctl_fb_opts o;
    struct vctl_fb_entry e;
    struct vctl_fb_batch b;

    vctl_fb_parse("suppress remove", VCTL_FB_O_SCOPE, argc, argv, &o);
    if (o.npos == 0) vctl_usage_error("suppress remove: missing ADDRESS or @DOMAIN");
    memset(&e, 0, sizeof e);
    e.scope = o.scope ? o.scope : "";
    int rc = vctl_fb_send_targets("suppress remove", "suppress_remove", 0, 1, &o, &e, socket_opt,
                                  config, &b);
    if (rc == VCTL_FB_EXIT_OK)
        printf("removed %lld entr%s, %lld not found\n", b.applied, b.applied == 1 ? "y" : "ies",
               (long long)o.npos - b.applied);
    free(o.pos);
    return rc;
}

/* vctl_fb_print_entry_line - "REASON (SCOPE TARGET) since T [until T] source: S" */
static void vctl_fb_print_entry_line(json_t *e)
{
    static const char *const keys[] = {"reason",  "scope",   "address",
                                       "created", "expires", "source"};
    char *v[ARRAY_LEN(keys)];
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        const char *s = vctl_fb_jstr(e, keys[i]);
        v[i] = vctl_clean_line(i == 1 ? vctl_fb_scope_text(s) : s);
    }
    printf("%s (%s %s) since %s", v[0], v[1], v[2], *v[3] ? v[3] : "-");
    if (*v[4]) printf(" until %s", v[4]);
    printf(" source: %s\n", *v[5] ? v[5] : "-");
    for (size_t i = 0; i < ARRAY_LEN(keys); i++)
        free(v[i]);
}

/* vctl_fb_print_json - obj on stdout, indented as the other commands' --json */
static int vctl_fb_print_json(json_t *obj, size_t flags)
{
    if (json_dumpf(obj, stdout, flags) < 0) {
        fprintf(stderr, "volleyctl: cannot write to stdout: %s\n", strerror(errno));
        return -1;
    }
    putchar('\n');
    return 0;
}

/* vctl_fb_suppress_check - `suppress check ADDRESS [--sender S] [--list L] [--json]` */
static int vctl_fb_suppress_check(int argc, char **argv, const char *socket_opt, const char *config)
{
    struct vctl_fb_opts o;
    char norm[SUPPRESS_ADDR_MAX];
    int rc = VCTL_FB_EXIT_OK;

    vctl_fb_parse("suppress check", VCTL_FB_O_SENDER | VCTL_FB_O_LIST | VCTL_FB_O_JSON, argc, argv,
                  &o);
    if (o.npos != 1) vctl_usage_error("suppress check: give exactly one ADDRESS");
    if (suppress_normalize(o.pos[0], norm, sizeof norm) < 0 || norm[0] == '@')
        vctl_usage_error("suppress check: not an address: \"%s\"", o.pos[0]);
    json_t *req = json_object();
    if (!req) vctl_oom();
    vctl_fb_set(req, "cmd", json_string("suppress_check"));
    vctl_fb_set(req, "address", vctl_fb_str(o.pos[0], "ADDRESS"));
    if (o.sender) vctl_fb_set(req, "sender", vctl_fb_str(o.sender, "--sender"));
    if (o.list) vctl_fb_set(req, "list", vctl_fb_str(o.list, "--list"));

    char *sock = vctl_socket_path(socket_opt, config);
    json_t *r = sock ? vctl_call(sock, req, VCTL_FB_TIMEOUT_S) : NULL;
    if (!r) {
        rc = VCTL_FB_EXIT_FAIL;
    } else if (o.json) {
        if (vctl_fb_print_json(r, JSON_INDENT(2)) < 0) rc = VCTL_FB_EXIT_FAIL;
    } else if (json_is_true(json_object_get(r, "suppressed"))) {
        fputs("suppressed: ", stdout);
        vctl_fb_print_entry_line(json_object_get(r, "entry"));
    } else {
        puts("not suppressed");
    }
    json_decref(r);
    json_decref(req);
    free(sock);
    free(o.pos);
    return rc;
}

/*
 * vctl_fb_walk - every entry of scope (NULL: all scopes), page by page with
 * "after", handed to each until limit entries (0: no limit) were seen.  *more is
 * set when the limit cut the walk short.  0, or -1 after an error message.
 */
static int vctl_fb_walk(const char *sock, const char *scope, long long limit,
                        int (*each)(json_t *e, void *arg), void *arg, int *more)
{
    json_t *after = NULL;
    long long seen = 0;
    int rc = 0;

    *more = 0;
    for (;;) {
        long long page = VCTL_FB_PAGE_MAX;
        if (limit > 0 && limit - seen < page) page = limit - seen;
        json_t *req = json_object();
        if (!req) vctl_oom();
        vctl_fb_set(req, "cmd", json_string("suppress_list"));
        if (scope) vctl_fb_set(req, "scope", json_string(scope));
        if (after) vctl_fb_set(req, "after", json_incref(after));
        vctl_fb_set(req, "limit", json_integer(page));
        json_t *r = vctl_call(sock, req, VCTL_FB_TIMEOUT_S);
        json_decref(req);
        if (!r) {
            rc = -1;
            break;
        }
        json_t *ents = json_object_get(r, "entries"), *e;
        size_t i, n = json_array_size(ents);
        json_array_foreach(ents, i, e)
        {
            if (each(e, arg) < 0) {
                rc = -1;
                break;
            }
        }
        seen += (long long)n;
        int server_more = json_is_true(json_object_get(r, "more"));
        json_decref(after);
        after = NULL;
        if (rc == 0 && n > 0 && server_more) {
            json_t *last = json_array_get(ents, n - 1);
            after = json_pack("{s:s, s:s}", "scope", vctl_fb_jstr(last, "scope"), "address",
                              vctl_fb_jstr(last, "address"));
            if (!after) vctl_oom();
        }
        json_decref(r);
        if (rc < 0 || !server_more || n == 0) break;
        if (limit > 0 && seen >= limit) {
            *more = 1;
            break;
        }
    }
    json_decref(after);
    return rc;
}

/* vctl_fb_list_json - one entry as one compact JSON line */
static int vctl_fb_list_json(json_t *e, void *arg)
{
    (void)arg;
    return vctl_fb_print_json(e, JSON_COMPACT);
}

/* vctl_fb_list_row - one entry as a table row */
static int vctl_fb_list_row(json_t *e, void *arg)
{
    struct vctl_fb_table *t = arg;
    vctl_fb_table_text(t, vctl_fb_scope_text(vctl_fb_jstr(e, "scope")));
    vctl_fb_table_text(t, vctl_fb_jstr(e, "address"));
    vctl_fb_table_text(t, vctl_fb_jstr(e, "reason"));
    vctl_fb_table_text(t, vctl_fb_jstr(e, "created"));
    vctl_fb_table_text(t, vctl_fb_jstr(e, "expires"));
    vctl_fb_table_text(t, vctl_fb_jstr(e, "source"));
    return 0;
}

/* vctl_fb_suppress_list - `suppress list [--scope S] [--limit N] [--json]` */
static int vctl_fb_suppress_list(int argc, char **argv, const char *socket_opt, const char *config)
{
    static const char *const heads[] = {"SCOPE",   "ADDRESS", "REASON",
                                        "CREATED", "EXPIRES", "SOURCE"};
    struct vctl_fb_opts o;
    struct vctl_fb_table t;
    int more = 0, rc;

    vctl_fb_parse("suppress list", VCTL_FB_O_SCOPE | VCTL_FB_O_LIMIT | VCTL_FB_O_JSON, argc, argv,
                  &o);
    if (o.npos) vctl_usage_error("suppress list: unexpected argument \"%s\"", o.pos[0]);
    if (o.scope && !suppress_scope_valid(o.scope))
        vctl_usage_error("suppress list: bad scope \"%s\"", o.scope);
    char *sock = vctl_socket_path(socket_opt, config);
    free(o.pos);
    if (!sock) return VCTL_FB_EXIT_FAIL;
    if (o.json) {
        rc = vctl_fb_walk(sock, o.scope, o.limit, vctl_fb_list_json, NULL, &more);
    } else {
        vctl_fb_table_init(&t, ARRAY_LEN(heads), heads, VCTL_FB_PAGE_MAX);
        rc = vctl_fb_walk(sock, o.scope, o.limit, vctl_fb_list_row, &t, &more);
        if (rc == 0 && !t.fixed && t.ncells == 0) puts("no suppressions");
        vctl_fb_table_end(&t);
        if (rc == 0 && more)
            printf("(first %lld shown; more entries exist: raise --limit)\n", o.limit);
    }
    free(sock);
    return rc == 0 ? VCTL_FB_EXIT_OK : VCTL_FB_EXIT_FAIL;
}

/* ---------------------------------------------------------------- CSV */

/* vctl_fb_csv_field - one field written as RFC 4180 asks: quoted when it must be */
static void vctl_fb_csv_field(FILE *f, const char *s, int last)
{
    if (strpbrk(s, ",\"\r\n") || (*s && (s[0] == ' ' || s[strlen(s) - 1] == ' '))) {
        putc('"', f);
        for (; *s; s++) {
            if (*s == '"') putc('"', f);
            putc(*s, f);
        }
        putc('"', f);
    } else {
        fputs(s, f);
    }
    fputs(last ? "\r\n" : ",", f);
}

/* The export's columns, in order; import reads the same. */
static const char *const vctl_fb_csv_cols[VCTL_FB_FIELDS] = {"address", "scope",   "reason",
                                                             "created", "expires", "source"};

/* vctl_fb_export_row - one entry as one CSV record */
static int vctl_fb_export_row(json_t *e, void *arg)
{
    FILE *f = arg;
    for (size_t i = 0; i < VCTL_FB_FIELDS; i++)
        vctl_fb_csv_field(f, vctl_fb_jstr(e, vctl_fb_csv_cols[i]), i + 1 == VCTL_FB_FIELDS);
    return ferror(f) ? -1 : 0;
}

/* vctl_fb_suppress_export - `suppress export [--scope S] [FILE|-]` */
static int vctl_fb_suppress_export(int argc, char **argv, const char *socket_opt,
                                   const char *config)
{
    struct vctl_fb_opts o;
    int more, rc;
    FILE *f = stdout;

    vctl_fb_parse("suppress export", VCTL_FB_O_SCOPE, argc, argv, &o);
    if (o.npos > 1) vctl_usage_error("suppress export: unexpected argument \"%s\"", o.pos[1]);
    if (o.scope && !suppress_scope_valid(o.scope))
        vctl_usage_error("suppress export: bad scope \"%s\"", o.scope);
    const char *name = o.npos == 1 && strcmp(o.pos[0], "-") != 0 ? o.pos[0] : NULL;
    free(o.pos);
    char *sock = vctl_socket_path(socket_opt, config);
    if (!sock) return VCTL_FB_EXIT_FAIL;
    if (name && !(f = fopen(name, "we"))) {
        fprintf(stderr, "volleyctl: cannot write %s: %s\n", name, strerror(errno));
        free(sock);
        return VCTL_FB_EXIT_FAIL;
    }
    for (size_t i = 0; i < VCTL_FB_FIELDS; i++)
        fprintf(f, "%s%s", vctl_fb_csv_cols[i], i + 1 == VCTL_FB_FIELDS ? "\r\n" : ",");
    rc = vctl_fb_walk(sock, o.scope, 0, vctl_fb_export_row, f, &more);
    if (name) {
        if ((ferror(f) | fclose(f)) != 0) {
            fprintf(stderr, "volleyctl: cannot write %s: %s\n", name, strerror(errno));
            rc = -1;
        }
    } else if (ferror(f)) {
        rc = -1;
    }
    free(sock);
    return rc == 0 ? VCTL_FB_EXIT_OK : VCTL_FB_EXIT_FAIL;
}

/*
 * vctl_fb_slurp - the whole of file name ("-" = stdin) into *buf (caller frees)
 * and *len, at most VCTL_FB_INPUT_MAX bytes; 0, or -1 after an error message
 */
static int vctl_fb_slurp(const char *name, char **buf, size_t *len)
{
    struct vbuf b;
    int fd = strcmp(name, "-") == 0 ? STDIN_FILENO : open(name, O_RDONLY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0) {
        fprintf(stderr, "volleyctl: cannot read %s: %s\n", name, strerror(errno));
        return -1;
    }
    vbuf_init(&b, VCTL_FB_INPUT_MAX + 1);
    for (;;) {
        if (vbuf_reserve(&b, 65536) < 0 && vbuf_reserve(&b, 1) < 0) {
            fprintf(stderr, "volleyctl: %s: larger than %zu MiB\n", name, VCTL_FB_INPUT_MAX >> 20);
            rc = -1;
            break;
        }
        ssize_t n = read(fd, b.data + b.len, b.cap - b.len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            fprintf(stderr, "volleyctl: cannot read %s: %s\n", name, strerror(errno));
            rc = -1;
            break;
        }
        if (n == 0) break;
        b.len += (size_t)n;
        if (b.len > VCTL_FB_INPUT_MAX) {
            fprintf(stderr, "volleyctl: %s: larger than %zu MiB\n", name, VCTL_FB_INPUT_MAX >> 20);
            rc = -1;
            break;
        }
    }
    if (fd != STDIN_FILENO) close(fd);
    if (rc < 0) {
        vbuf_free(&b);
        return -1;
    }
    *buf = b.data ? (char *)b.data : xstrdup("");
    *len = b.len;
    return 0;
}

/* One CSV record: up to VCTL_FB_FIELDS fields, each NUL-terminated. */
struct vctl_fb_csv {
    char f[VCTL_FB_FIELDS][VCTL_FB_FIELD_MAX];
    int n;
    size_t line; /* where it starts, 1-based */
};

/*
 * vctl_fb_csv_next - the next record of buf[0..len) from *pos (RFC 4180: quoted
 * fields may hold commas, quotes doubled and line breaks; CRLF or LF ends a
 * record; unquoted fields are trimmed of spaces and tabs).  *line counts lines.
 * Returns 1 with rec, 0 at the end, -1 with why for a bad record, which is then
 * skipped up to the end of its line so later errors are reported too.
 */
static int vctl_fb_csv_next(const char *buf, size_t len, size_t *pos, size_t *line,
                            struct vctl_fb_csv *rec, char *why, size_t whyn)
{
    size_t p = *pos, k = 0;
    int quoted = 0, was_quoted = 0;

    if (p >= len) return 0;
    memset(rec->f[0], 0, sizeof rec->f[0]);
    rec->n = 1;
    rec->line = *line;
    for (;;) {
        char ch = p < len ? buf[p] : '\n';
        if (p < len && ch == '\0') {
            snprintf(why, whyn, "NUL byte");
            goto bad;
        }
        if (quoted) {
            if (p >= len) {
                snprintf(why, whyn, "quoted field not closed");
                *line += 1;
                *pos = len;
                return -1;
            }
            if (ch == '"' && p + 1 < len && buf[p + 1] == '"') {
                p++;
            } else if (ch == '"') {
                quoted = 0;
                p++;
                continue;
            }
            if (ch == '\n') *line += 1;
        } else if (ch == '"') {
            if (k > 0 || was_quoted) {
                snprintf(why, whyn, "quote inside an unquoted field");
                goto bad;
            }
            quoted = was_quoted = 1;
            p++;
            continue;
        } else if (ch == ',' || ch == '\n' ||
                   (ch == '\r' && (p + 1 >= len || buf[p + 1] == '\n'))) {
            char *f = rec->f[rec->n - 1];
            f[k] = '\0';
            if (!was_quoted) {
                /* trim what an unquoted field has around it */
                while (k > 0 && (f[k - 1] == ' ' || f[k - 1] == '\t'))
                    f[--k] = '\0';
                size_t lead = strspn(f, " \t");
                memmove(f, f + lead, k - lead + 1);
            }
            if (ch != ',') {
                p += ch == '\r' ? 2 : 1;
                *line += 1;
                *pos = p > len ? len : p;
                return 1;
            }
            if (rec->n == VCTL_FB_FIELDS) {
                snprintf(why, whyn, "more than %d fields", VCTL_FB_FIELDS);
                goto bad;
            }
            rec->n++;
            k = 0;
            was_quoted = 0;
            p++;
            continue;
        } else if (was_quoted) {
            snprintf(why, whyn, "text after a closing quote");
            goto bad;
        }
        if (k + 1 >= VCTL_FB_FIELD_MAX) {
            snprintf(why, whyn, "field longer than %d bytes", VCTL_FB_FIELD_MAX - 1);
            goto bad;
        }
        rec->f[rec->n - 1][k++] = ch;
        p++;
    }
bad:
    while (p < len && buf[p] != '\n')
        p++;
    *pos = p < len ? p + 1 : len;
    *line += 1;
    return -1;
}

/* Defaults and state of one import. */
struct vctl_fb_import {
    const struct vctl_fb_opts *o;
    int64_t now_s;
};

/*
 * vctl_fb_import_entry - rec as an entry: columns address, scope, reason, created
 * (ignored: the daemon stamps its own time), expires, source; an empty column
 * takes the option's value or the default.  An exported "#hash" entry of reason
 * "forgotten" comes back as "manual": only `forget` may set that reason, and
 * dropping the hash would let the erased address be mailed again.  0, or -1 with
 * why.  e's strings point into rec.
 */
static int vctl_fb_import_entry(const struct vctl_fb_import *im, struct vctl_fb_csv *rec,
                                struct vctl_fb_entry *e, char *why, size_t whyn)
{
    const char *col[VCTL_FB_FIELDS] = {"", "", "", "", "", ""};
    for (int i = 0; i < rec->n; i++)
        col[i] = rec->f[i];
    memset(e, 0, sizeof *e);
    if (!*col[0]) {
        snprintf(why, whyn, "no address");
        return -1;
    }
    if (vctl_fb_target(col[0], e->address, why, whyn) < 0) return -1;
    e->scope = *col[1] ? col[1] : im->o->scope ? im->o->scope : "";
    e->reason = *col[2] ? col[2] : im->o->reason;
    if (e->reason && strcasecmp(e->reason, "forgotten") == 0 && e->address[0] == '#')
        e->reason = "manual";
    if (*col[4] && vctl_fb_parse_when(col[4], im->now_s, &e->expires) < 0) {
        snprintf(why, whyn, "bad expires \"%.60s\": want YYYY-MM-DD, RFC 3339 or 30d", col[4]);
        return -1;
    }
    e->source = *col[5] ? col[5] : "import";
    if (vctl_fb_entry_check(e, why, whyn) < 0) return -1;
    json_t *j = vctl_fb_entry_json(e, 1);
    if (!j) {
        snprintf(why, whyn, "not valid UTF-8");
        return -1;
    }
    json_decref(j);
    return 0;
}

/*
 * vctl_fb_import_pass - one pass over the file: check every record (b NULL, the
 * first pass: report bad lines, return how many) or send them (b set: return 0,
 * or -1 when a request failed).  *count gets the number of entries.
 */
static long long vctl_fb_import_pass(const struct vctl_fb_import *im, const char *name,
                                     const char *buf, size_t len, struct vctl_fb_batch *b,
                                     long long *count)
{
    struct vctl_fb_csv *rec = xmalloc(sizeof *rec);
    struct vctl_fb_entry e;
    size_t pos = 0, line = 1;
    long long bad = 0;
    int first = 1, r;
    char why[300];

    *count = 0;
    while ((r = vctl_fb_csv_next(buf, len, &pos, &line, rec, why, sizeof why)) != 0) {
        if (r > 0 && rec->n == 1 && rec->f[0][0] == '\0') continue; /* a blank line */
        /* a header is optional: the first record naming the address column is one */
        if (r > 0 && first && strcasecmp(rec->f[0], "address") == 0) {
            first = 0;
            continue;
        }
        first = 0;
        if (r > 0 && vctl_fb_import_entry(im, rec, &e, why, sizeof why) == 0) {
            (*count)++;
            json_t *j = b ? vctl_fb_entry_json(&e, 1) : NULL;
            if (b && !j) vctl_oom(); /* the first pass showed it converts */
            if (b && vctl_fb_batch_add(b, j) < 0) {
                free(rec);
                return -1;
            }
            continue;
        }
        if (++bad <= VCTL_FB_BAD_SHOWN) {
            char *w = vctl_clean_line(why);
            fprintf(stderr, "volleyctl: %s: line %zu: %s\n", name, rec->line, w);
            free(w);
        }
    }
    free(rec);
    if (bad > VCTL_FB_BAD_SHOWN)
        fprintf(stderr, "volleyctl: %s: %lld more bad lines\n", name, bad - VCTL_FB_BAD_SHOWN);
    return b ? 0 : bad;
}

/* vctl_fb_suppress_import - `suppress import FILE|- [--scope S] [--reason R] [--no-purge]` */
static int vctl_fb_suppress_import(int argc, char **argv, const char *socket_opt,
                                   const char *config)
{
    struct vctl_fb_opts o;
    struct vctl_fb_import im;
    struct vctl_fb_batch b;
    struct vctl_fb_entry probe;
    char why[300], *buf;
    size_t len;
    long long n;
    int rc = VCTL_FB_EXIT_OK;

    vctl_fb_parse("suppress import", VCTL_FB_O_SCOPE | VCTL_FB_O_REASON | VCTL_FB_O_NOPURGE, argc,
                  argv, &o);
    if (o.npos != 1) vctl_usage_error("suppress import: give exactly one FILE (or - for stdin)");
    /* the defaults are checked once here, so a bad option is not reported per line */
    memset(&probe, 0, sizeof probe);
    probe.scope = o.scope ? o.scope : "";
    probe.reason = o.reason;
    if (vctl_fb_entry_check(&probe, why, sizeof why) < 0)
        vctl_usage_error("suppress import: %s", why);
    const char *name = o.pos[0];
    if (vctl_fb_slurp(name, &buf, &len) < 0) {
        free(o.pos);
        return VCTL_FB_EXIT_FAIL;
    }
    im.o = &o;
    im.now_s = now_ms() / 1000;
    if (vctl_fb_import_pass(&im, name, buf, len, NULL, &n) > 0) {
        fprintf(stderr, "volleyctl: %s: nothing imported\n", name);
        rc = VCTL_FB_EXIT_USAGE;
    } else if (n == 0) {
        printf("%s: no entries\n", name);
    } else {
        char *sock = vctl_socket_path(socket_opt, config);
        if (!sock) {
            rc = VCTL_FB_EXIT_FAIL;
        } else {
            vctl_fb_batch_init(&b, sock, "suppress_add", !o.no_purge);
            if (vctl_fb_import_pass(&im, name, buf, len, &b, &n) < 0 ||
                vctl_fb_batch_flush(&b) < 0) {
                fprintf(stderr,
                        "volleyctl: %s: stopped after %lld of %lld entries had been "
                        "stored\n",
                        name, b.sent, n);
                rc = VCTL_FB_EXIT_FAIL;
            } else {
                printf("read %lld entr%s: ", n, n == 1 ? "y" : "ies");
                vctl_fb_print_added(&b);
            }
            vctl_fb_batch_free(&b);
            free(sock);
        }
    }
    free(buf);
    free(o.pos);
    return rc;
}

/* vctl_fb_forget - `forget ADDRESS` */
static int vctl_fb_forget(int argc, char **argv, const char *socket_opt, const char *config)
{
    struct vctl_fb_opts o;
    char norm[SUPPRESS_ADDR_MAX];
    int rc = VCTL_FB_EXIT_OK;

    vctl_fb_parse("forget", 0, argc, argv, &o);
    if (o.npos != 1) vctl_usage_error("forget: give exactly one ADDRESS");
    if (suppress_normalize(o.pos[0], norm, sizeof norm) < 0 || norm[0] == '@')
        vctl_usage_error("forget: not an address: \"%s\"", o.pos[0]);
    json_t *req = json_object();
    if (!req) vctl_oom();
    vctl_fb_set(req, "cmd", json_string("forget"));
    vctl_fb_set(req, "address", vctl_fb_str(norm, "ADDRESS"));
    char *sock = vctl_socket_path(socket_opt, config);
    json_t *r = sock ? vctl_call(sock, req, VCTL_FB_TIMEOUT_BULK_S) : NULL;
    if (r) {
        long long purged = json_integer_value(json_object_get(r, "purged"));
        char *a = vctl_clean_line(norm);
        printf("forgot %s: %s; only its hash is kept (suppressed, reason forgotten); "
               "%lld queued recipient%s removed\n",
               a,
               json_integer_value(json_object_get(r, "applied")) > 0
                   ? "its suppression entries were removed"
                   : "no suppression entry named it",
               purged, purged == 1 ? "" : "s");
        free(a);
    } else {
        rc = VCTL_FB_EXIT_FAIL;
    }
    json_decref(r);
    json_decref(req);
    free(sock);
    free(o.pos);
    return rc;
}

/* ---------------------------------------------------------------- bounce parse */

/* What bounce parse needs besides the message: rules, key, output mode. */
struct vctl_fb_parser {
    struct conf *conf;
    struct bounce_class *rules;
    struct verp_key key;
    int have_key;
    int json;
    int nfiles;
};

/* vctl_fb_bare_addr - the address a of a parsed header without its angle brackets,
 * into out (cut at SUPPRESS_ADDR_MAX bytes) */
static void vctl_fb_bare_addr(const char *a, char out[SUPPRESS_ADDR_MAX])
{
    str_copy(out, SUPPRESS_ADDR_MAX, a + strspn(a, "< "));
    char *gt = strchr(out, '>');
    if (gt) *gt = '\0';
}

/* vctl_fb_token - the message id and recipient index of the first verifying VERP
 * or unsubscribe token among the addresses the report names; 0, or -1 */
static int vctl_fb_token(const struct vctl_fb_parser *p, const struct bounce_report *rep,
                         uint64_t *id, uint32_t *idxp)
{
    /* the same places the daemon looks (feedback.c), less the envelope */
    const char *cands[] = {rep->delivered_to, rep->to, rep->orig_return_path,
                           rep->original_mail_from};
    bool unsub;
    if (!p->have_key) return -1;
    return verp_find(&p->key, p->conf->feedback_verp_prefix, cands, ARRAY_LEN(cands), id, idxp,
                     &unsub);
}

/*
 * vctl_fb_sent - the daemon's sent record of (id, idx), for the campaign; NULL
 * when there is no daemon at the configured control socket (parse works offline)
 */
static json_t *vctl_fb_sent(const struct vctl_fb_parser *p, const char *idtxt, uint32_t idx)
{
    const char *sock = p->conf->control_socket;
    if (!*sock || access(sock, W_OK) < 0) return NULL;
    json_t *req = json_pack("{s:s, s:s, s:i}", "cmd", "sent", "id", idtxt, "index", (int)idx);
    json_t *r = req ? vctl_call(sock, req, 5) : NULL;
    json_decref(req);
    return r;
}

/*
 * vctl_fb_parse_one - parse message number m of file name and print a line per
 * recipient (one for a report without any); rows go to t when not --json.
 * 0, or -1 when memory ran out.
 */
static int vctl_fb_parse_one(const struct vctl_fb_parser *p, const char *name, long long m,
                             const char *msg, size_t len, struct vctl_fb_table *t)
{
    struct bounce_report rep;
    char idtxt[MSGID_STR_LEN + 1] = "";
    uint64_t id;
    uint32_t idx = 0;
    int rc = 0;
    json_t *sent = NULL;

    if (bounce_parse(msg, len, (size_t)p->conf->inject_max_message_size, &rep) < 0) {
        bounce_report_free(&rep);
        fputs("volleyctl: out of memory\n", stderr);
        return -1;
    }
    if (vctl_fb_token(p, &rep, &id, &idx) == 0) {
        msgid_format(id, idtxt);
        sent = vctl_fb_sent(p, idtxt, idx);
    }
    for (int i = rep.nrcpts ? 0 : -1; i < rep.nrcpts && rc == 0; i++) {
        const struct bounce_rcpt *r = i >= 0 ? &rep.rcpts[i] : NULL;
        enum BOUNCE_KIND kind = r ? r->kind : rep.kind;
        struct bounce_verdict v;
        int classified = r && (kind == BOUNCE_KIND_BOUNCE || kind == BOUNCE_KIND_DELAY);
        if (classified) bounce_classify(p->rules, r->code, r->status, r->diagnostic, &v);
        if (p->json) {
            json_t *o = bounce_rcpt_json(&rep, i);
            if (!o) {
                fputs("volleyctl: out of memory\n", stderr);
                rc = -1;
                break;
            }
            if (classified) {
                vctl_fb_set(o, "category", json_string(bounce_cat_str(v.cat)));
                vctl_fb_set(o, "hard", json_boolean(v.hard));
            }
            /* the campaign lives in the daemon's sent records: known only when the
             * daemon answers (vctl_fb_sent) */
            if (*idtxt) vctl_fb_set(o, "msgid", json_string(idtxt));
            if (json_is_true(json_object_get(sent, "found")))
                vctl_fb_set(o, "campaign", json_incref(json_object_get(sent, "campaign")));
            json_t *fname = json_string(name);
            /* a file name that is not UTF-8 is shown with its bytes replaced */
            vctl_fb_set(o, "file", fname ? fname : json_string("(name not UTF-8)"));
            vctl_fb_set(o, "message", json_integer(m));
            if (vctl_fb_print_json(o, JSON_COMPACT) < 0) rc = -1;
            json_decref(o);
            continue;
        }
        char num[32], diag[VCTL_FB_DIAG_SHOWN * 4 + 8];
        snprintf(num, sizeof num, "%lld", m);
        vctl_fb_table_text(t, num);
        vctl_fb_table_text(t, bounce_kind_str(kind));
        vctl_fb_table_text(t, r ? r->recipient : rep.kind == BOUNCE_KIND_AUTOREPLY ? rep.from : "");
        vctl_fb_table_text(t, r ? r->status : "");
        vctl_fb_table_text(t, classified ? bounce_cat_str(v.cat) : "");
        vctl_fb_table_text(t, classified ? (v.hard ? "yes" : "no") : "");
        const char *d = r                                     ? r->diagnostic
                        : rep.kind == BOUNCE_KIND_UNPARSEABLE ? rep.reason
                                                              : rep.subject;
        /* cut at a code point boundary: the parser's strings are valid UTF-8 */
        size_t k = 0, cps = 0;
        while (d[k] && cps < VCTL_FB_DIAG_SHOWN) {
            k++;
            while (((unsigned char)d[k] & 0xc0) == 0x80)
                k++;
            cps++;
        }
        snprintf(diag, sizeof diag, "%.*s%s", (int)k, d, d[k] ? "..." : "");
        vctl_fb_table_text(t, diag);
    }
    json_decref(sent);
    bounce_report_free(&rep);
    return rc;
}

/*
 * vctl_fb_messages - call fn for each message of the mailbox or single message
 * buf[0..len), numbered from 1; mboxrd quoting is undone in place (only in a real
 * mailbox: a lone message's ">From " lines are its own text).  Stops at the first
 * -1 of fn and returns it; else 0.
 */
static int vctl_fb_messages(char *buf, size_t len,
                            int (*fn)(void *arg, long long m, const char *msg, size_t len),
                            void *arg)
{
    int mbox = len >= 5 && memcmp(buf, "From ", 5) == 0;
    size_t pos = 0, n;
    const char *msg;
    long long m = 0;

    while (bounce_mbox_next(buf, len, &pos, &msg, &n) == 1) {
        /* msg lies inside buf, which we own; unquoting only shrinks it */
        if (mbox) n = bounce_mbox_unquote(msg, n, (char *)msg, n);
        if (fn(arg, ++m, msg, n) < 0) return -1;
    }
    return 0;
}

/* The state vctl_fb_parse_msg needs per file. */
struct vctl_fb_parse_file {
    const struct vctl_fb_parser *p;
    const char *name;
    struct vctl_fb_table *t;
};

/* vctl_fb_parse_msg - vctl_fb_messages callback of bounce parse */
static int vctl_fb_parse_msg(void *arg, long long m, const char *msg, size_t len)
{
    struct vctl_fb_parse_file *pf = arg;
    return vctl_fb_parse_one(pf->p, pf->name, m, msg, len, pf->t);
}

/* vctl_fb_bounce_parse - `bounce parse [--json] FILE...|-`, offline */
static int vctl_fb_bounce_parse(int argc, char **argv, const char *config)
{
    static const char *const heads[] = {"MSG",      "KIND", "RECIPIENT", "STATUS",
                                        "CATEGORY", "HARD", "DIAGNOSTIC"};
    struct vctl_fb_opts o;
    struct vctl_fb_parser p;
    char err[1024];
    int rc = VCTL_FB_EXIT_OK;

    vctl_fb_parse("bounce parse", VCTL_FB_O_JSON, argc, argv, &o);
    if (o.npos == 0) vctl_usage_error("bounce parse: missing FILE (or - for stdin)");
    memset(&p, 0, sizeof p);
    p.json = o.json;
    p.nfiles = o.npos;
    p.conf = vctl_conf_load(config);
    if (!p.conf) {
        free(o.pos);
        return VCTL_FB_EXIT_FAIL;
    }
    p.rules = bounce_class_load(p.conf->feedback_classify_rules, err, sizeof err);
    if (!p.rules) {
        fprintf(stderr, "volleyctl: %s\n", err);
        conf_free(p.conf);
        free(o.pos);
        return VCTL_FB_EXIT_FAIL;
    }
    p.have_key = verp_key_derive(&p.key, p.conf->feedback_secret) == 0;

    for (int i = 0; i < o.npos; i++) {
        struct vctl_fb_table t;
        struct vctl_fb_parse_file pf = {&p, o.pos[i], &t};
        char *buf;
        size_t len;
        if (vctl_fb_slurp(o.pos[i], &buf, &len) < 0) {
            rc = VCTL_FB_EXIT_FAIL;
            continue;
        }
        if (!p.json) {
            if (p.nfiles > 1) {
                char *nm = vctl_clean_line(o.pos[i]);
                printf("%s%s:\n", i ? "\n" : "", nm);
                free(nm);
            }
            vctl_fb_table_init(&t, ARRAY_LEN(heads), heads, 1000);
        }
        int r = vctl_fb_messages(buf, len, vctl_fb_parse_msg, &pf);
        if (!p.json) vctl_fb_table_end(&t);
        free(buf);
        if (r < 0) {
            rc = VCTL_FB_EXIT_FAIL;
            break;
        }
    }
    OPENSSL_cleanse(&p.key, sizeof p.key);
    bounce_class_free(p.rules);
    conf_free(p.conf);
    free(o.pos);
    return rc;
}

/* ---------------------------------------------------------------- bounce ingest */

/*
 * A blocking SMTP client connection.  Every wait goes through poll() with
 * VCTL_FB_SMTP_TIMEOUT_MS, and sends are non-blocking after POLLOUT, so a silent
 * or stalled listener costs at most that long per step.
 */
struct vctl_fb_smtp {
    int fd;
    const char *server;
    char in[2 * VCTL_FB_SMTP_LINE_MAX];
    size_t inlen;
    int has_8bit, has_utf8; /* EHLO advertised 8BITMIME / SMTPUTF8 */
};

/* vctl_fb_smtp_wait - poll fd for events; 0 when ready, -1 after an error message */
static int vctl_fb_smtp_wait(struct vctl_fb_smtp *s, short events, const char *what)
{
    struct pollfd pfd = {.fd = s->fd, .events = events};
    int n;
    do
        n = poll(&pfd, 1, VCTL_FB_SMTP_TIMEOUT_MS);
    while (n < 0 && errno == EINTR);
    if (n > 0) return 0;
    fprintf(stderr, "volleyctl: %s: %s: %s\n", s->server, what,
            n == 0 ? "timed out" : strerror(errno));
    return -1;
}

/* vctl_fb_smtp_close - drop the connection (QUIT is the caller's) */
static void vctl_fb_smtp_close(struct vctl_fb_smtp *s)
{
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    s->inlen = 0;
}

/* vctl_fb_smtp_send - write p[0..n); 0, or -1 after an error message (closed) */
static int vctl_fb_smtp_send(struct vctl_fb_smtp *s, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        if (vctl_fb_smtp_wait(s, POLLOUT, "send") < 0) goto fail;
        ssize_t w = send(s->fd, c, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (w < 0) {
            fprintf(stderr, "volleyctl: %s: send: %s\n", s->server, strerror(errno));
            goto fail;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
fail:
    vctl_fb_smtp_close(s);
    return -1;
}

/*
 * vctl_fb_smtp_reply - read one (possibly multi-line) reply; its code, with the
 * lines joined by spaces in text (cut at textn).  -1 after an error message when
 * the connection failed (it is then closed).
 */
static int vctl_fb_smtp_reply(struct vctl_fb_smtp *s, char *text, size_t textn)
{
    size_t tl = 0;
    text[0] = '\0';
    for (;;) {
        char *nl = memchr(s->in, '\n', s->inlen);
        if (!nl) {
            if (s->inlen >= VCTL_FB_SMTP_LINE_MAX) {
                fprintf(stderr, "volleyctl: %s: reply line too long\n", s->server);
                break;
            }
            if (vctl_fb_smtp_wait(s, POLLIN, "no reply") < 0) break;
            ssize_t r = recv(s->fd, s->in + s->inlen, sizeof s->in - s->inlen, MSG_DONTWAIT);
            if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
            if (r <= 0) {
                fprintf(stderr, "volleyctl: %s: %s\n", s->server,
                        r == 0 ? "connection closed" : strerror(errno));
                break;
            }
            s->inlen += (size_t)r;
            continue;
        }
        size_t ll = (size_t)(nl - s->in), consumed = ll + 1;
        if (ll > 0 && s->in[ll - 1] == '\r') ll--;
        if (ll < 3 || s->in[0] < '2' || s->in[0] > '5' || s->in[1] < '0' || s->in[1] > '9' ||
            s->in[2] < '0' || s->in[2] > '9' || (ll > 3 && s->in[3] != ' ' && s->in[3] != '-')) {
            fprintf(stderr, "volleyctl: %s: malformed reply line\n", s->server);
            break;
        }
        int code = (s->in[0] - '0') * 100 + (s->in[1] - '0') * 10 + (s->in[2] - '0');
        int more = ll > 3 && s->in[3] == '-';
        if (tl + 2 < textn) {
            size_t take = ll < textn - tl - 2 ? ll : textn - tl - 2;
            if (tl) text[tl++] = ' ';
            memcpy(text + tl, s->in, take);
            tl += take;
            text[tl] = '\0';
        }
        /* the reply's first line was just read: remember the extensions on the way */
        if (ll >= 12 && strncasecmp(s->in + 4, "8BITMIME", 8) == 0) s->has_8bit = 1;
        if (ll >= 12 && strncasecmp(s->in + 4, "SMTPUTF8", 8) == 0) s->has_utf8 = 1;
        memmove(s->in, s->in + consumed, s->inlen - consumed);
        s->inlen -= consumed;
        if (!more) return code;
    }
    vctl_fb_smtp_close(s);
    return -1;
}

/* vctl_fb_smtp_cmd - send line + CRLF and read the reply; its code, or -1 (closed) */
static int vctl_fb_smtp_cmd(struct vctl_fb_smtp *s, const char *line, char *text, size_t textn)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "%s\r\n", line);
    if (n < 0 || (size_t)n >= sizeof buf) {
        snprintf(text, textn, "command too long");
        return 0; /* a local refusal: the caller reports text */
    }
    if (vctl_fb_smtp_send(s, buf, (size_t)n) < 0) return -1;
    return vctl_fb_smtp_reply(s, text, textn);
}

/* vctl_fb_split_hostport - "host:port" or "[v6]:port" into host and port; 0 or -1 */
static int vctl_fb_split_hostport(const char *hp, char *host, size_t hostn, char *port,
                                  size_t portn)
{
    const char *colon;
    if (hp[0] == '[') {
        const char *end = strchr(hp, ']');
        if (!end || end[1] != ':') return -1;
        if ((size_t)(end - hp - 1) >= hostn) return -1;
        memcpy(host, hp + 1, (size_t)(end - hp - 1));
        host[end - hp - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(hp, ':');
        if (!colon || colon == hp || (size_t)(colon - hp) >= hostn) return -1;
        memcpy(host, hp, (size_t)(colon - hp));
        host[colon - hp] = '\0';
    }
    if (!colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1)) return -1;
    return str_copy(port, portn, colon + 1);
}

/*
 * vctl_fb_smtp_open - connect to s->server, read the greeting, EHLO (HELO if that
 * is refused); 0, or -1 after an error message
 */
static int vctl_fb_smtp_open(struct vctl_fb_smtp *s)
{
    struct addrinfo hints, *res = NULL, *ai;
    char host[256], port[16], text[1024], name[256] = "", cmd[300];
    int err = 0;

    if (vctl_fb_split_hostport(s->server, host, sizeof host, port, sizeof port) < 0) {
        fprintf(stderr, "volleyctl: bad server \"%s\": want HOST:PORT\n", s->server);
        return -1;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        fprintf(stderr, "volleyctl: %s: %s\n", s->server, gai_strerror(gai));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        s->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (s->fd < 0) {
            err = errno;
            continue;
        }
        /* non-blocking only for the connect, so that it too is bounded by poll() */
        int fl = fcntl(s->fd, F_GETFL);
        fcntl(s->fd, F_SETFL, fl | O_NONBLOCK);
        int rc = connect(s->fd, ai->ai_addr, ai->ai_addrlen);
        if (rc < 0 && (errno == EINPROGRESS || errno == EINTR)) {
            struct pollfd pfd = {.fd = s->fd, .events = POLLOUT};
            socklen_t len = sizeof err;
            int n;
            do
                n = poll(&pfd, 1, VCTL_FB_SMTP_TIMEOUT_MS);
            while (n < 0 && errno == EINTR);
            if (n <= 0)
                err = n == 0 ? ETIMEDOUT : errno;
            else if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
            rc = err ? -1 : 0;
        } else if (rc < 0) {
            err = errno;
        }
        if (rc == 0) {
            fcntl(s->fd, F_SETFL, fl);
            break;
        }
        close(s->fd);
        s->fd = -1;
    }
    freeaddrinfo(res);
    if (s->fd < 0) {
        fprintf(stderr, "volleyctl: cannot connect to %s: %s\n", s->server, strerror(err));
        return -1;
    }
    s->inlen = 0;
    s->has_8bit = s->has_utf8 = 0;
    int code = vctl_fb_smtp_reply(s, text, sizeof text);
    if (code >= 0 && code / 100 != 2) {
        char *t = vctl_clean_line(text);
        fprintf(stderr, "volleyctl: %s refused the connection: %s\n", s->server, t);
        free(t);
        vctl_fb_smtp_close(s);
        return -1;
    }
    if (code < 0) return -1;
    /* the EHLO name only has to be a syntactically sane domain */
    if (gethostname(name, sizeof name - 1) < 0 || !*name ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") !=
            strlen(name))
        str_copy(name, sizeof name, "localhost");
    snprintf(cmd, sizeof cmd, "EHLO %s", name);
    code = vctl_fb_smtp_cmd(s, cmd, text, sizeof text);
    if (code >= 0 && code / 100 != 2) {
        snprintf(cmd, sizeof cmd, "HELO %s", name);
        code = vctl_fb_smtp_cmd(s, cmd, text, sizeof text);
    }
    if (code >= 0 && code / 100 != 2) {
        char *t = vctl_clean_line(text);
        fprintf(stderr, "volleyctl: %s refused EHLO and HELO: %s\n", s->server, t);
        free(t);
        vctl_fb_smtp_close(s);
        return -1;
    }
    return code < 0 ? -1 : 0;
}

/*
 * vctl_fb_data_wire - msg[0..len) as DATA text: lines end in CRLF (a bare LF gets
 * its CR), lines starting with '.' get another, and ".\r\n" ends it.  Into out.
 */
static void vctl_fb_data_wire(const char *msg, size_t len, struct vbuf *out)
{
    size_t i = 0;
    vbuf_reset(out);
    while (i < len) {
        const char *nl = memchr(msg + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - msg) : len;
        size_t ll = end - i;
        if (ll > 0 && msg[i + ll - 1] == '\r') ll--;
        if (ll > 0 && msg[i] == '.') vbuf_append(out, ".", 1);
        vbuf_append(out, msg + i, ll);
        vbuf_append(out, "\r\n", 2);
        i = end + 1;
    }
    vbuf_append(out, ".\r\n", 3);
}

/* State of one bounce ingest run. */
struct vctl_fb_ingest {
    struct vctl_fb_smtp smtp;
    const char *to;   /* --to, or NULL */
    size_t max_len;   /* what bounce_parse reads of a message to find its To */
    const char *name; /* the file being sent */
    int show_name;    /* more than one file: name them in the result lines */
    long long accepted, refused, seq;
    int dead; /* the listener is gone: the rest is not tried */
    struct vbuf wire;
};

/* vctl_fb_ingest_result - "message N: accepted" or "message N: refused: why" */
static void vctl_fb_ingest_result(struct vctl_fb_ingest *in, long long m, const char *why)
{
    char *w = why ? vctl_clean_line(why) : NULL;
    if (in->show_name) {
        char *nm = vctl_clean_line(in->name);
        printf("%s ", nm);
        free(nm);
    }
    if (w)
        printf("message %lld: refused: %s\n", m, w);
    else
        printf("message %lld: accepted\n", m);
    free(w);
    if (why)
        in->refused++;
    else
        in->accepted++;
}

/*
 * vctl_fb_ingest_msg - one SMTP transaction for message m: MAIL FROM:<> (a
 * bounce's own return path), RCPT TO the address the message was sent to, DATA.
 * A refusal is reported and the transaction reset; a lost connection is opened
 * again for the next message.  Returns 0; -1 only when the listener cannot be
 * reached any more.
 */
static int vctl_fb_ingest_msg(void *arg, long long m, const char *msg, size_t len)
{
    struct vctl_fb_ingest *in = arg;
    struct vctl_fb_smtp *s = &in->smtp;
    char text[1024], cmd[700], rcpt[SUPPRESS_ADDR_MAX] = "";
    int code, eight = 0, utf8 = 0;

    if (!in->show_name) m = ++in->seq;
    if (in->to) {
        str_copy(rcpt, sizeof rcpt, in->to);
    } else {
        struct bounce_report rep;
        if (bounce_parse(msg, len, in->max_len, &rep) < 0) {
            bounce_report_free(&rep);
            fputs("volleyctl: out of memory\n", stderr);
            return -1;
        }
        vctl_fb_bare_addr(*rep.delivered_to ? rep.delivered_to : rep.to, rcpt);
        bounce_report_free(&rep);
    }
    if (!*rcpt) {
        vctl_fb_ingest_result(in, m, "no Delivered-To, X-Original-To or To address (use --to)");
        return 0;
    }
    if (s->fd < 0 && vctl_fb_smtp_open(s) < 0) {
        in->dead = 1;
        vctl_fb_ingest_result(in, m, "listener not reachable");
        return -1;
    }
    for (size_t i = 0; i < len && !eight; i++)
        eight = (unsigned char)msg[i] >= 0x80;
    for (const char *p = rcpt; *p && !utf8; p++)
        utf8 = (unsigned char)*p >= 0x80;
    snprintf(cmd, sizeof cmd, "MAIL FROM:<>%s%s", eight && s->has_8bit ? " BODY=8BITMIME" : "",
             utf8 && s->has_utf8 ? " SMTPUTF8" : "");
    code = vctl_fb_smtp_cmd(s, cmd, text, sizeof text);
    if (code >= 0 && code / 100 == 2) {
        snprintf(cmd, sizeof cmd, "RCPT TO:<%s>", rcpt);
        code = vctl_fb_smtp_cmd(s, cmd, text, sizeof text);
    }
    if (code >= 0 && code / 100 == 2) code = vctl_fb_smtp_cmd(s, "DATA", text, sizeof text);
    if (code == 354) {
        vctl_fb_data_wire(msg, len, &in->wire);
        code = vctl_fb_smtp_send(s, in->wire.data, in->wire.len) < 0
                   ? -1
                   : vctl_fb_smtp_reply(s, text, sizeof text);
        if (code >= 0 && code / 100 == 2) {
            vctl_fb_ingest_result(in, m, NULL);
            return 0;
        }
    }
    if (code < 0) {
        vctl_fb_ingest_result(in, m, "connection lost");
        return 0;
    }
    vctl_fb_ingest_result(in, m, text);
    /* start the next transaction clean; a listener that will not is reconnected */
    if (vctl_fb_smtp_cmd(s, "RSET", text, sizeof text) != 250) vctl_fb_smtp_close(s);
    return 0;
}

/* vctl_fb_bounce_ingest - `bounce ingest FILE...|- [--to ADDRESS] [--server HOST:PORT]` */
static int vctl_fb_bounce_ingest(int argc, char **argv, const char *config)
{
    struct vctl_fb_opts o;
    struct vctl_fb_ingest in;
    struct conf *conf;
    char norm[SUPPRESS_ADDR_MAX], text[256];
    int rc = VCTL_FB_EXIT_OK;

    vctl_fb_parse("bounce ingest", VCTL_FB_O_TO | VCTL_FB_O_SERVER, argc, argv, &o);
    if (o.npos == 0) vctl_usage_error("bounce ingest: missing FILE (or - for stdin)");
    if (o.to &&
        (suppress_normalize(o.to, norm, sizeof norm) < 0 || norm[0] == '@' || strpbrk(o.to, "<>")))
        vctl_usage_error("bounce ingest: bad --to \"%s\": want an address", o.to);
    conf = vctl_conf_load(config);
    if (!conf) {
        free(o.pos);
        return VCTL_FB_EXIT_FAIL;
    }
    memset(&in, 0, sizeof in);
    in.smtp.fd = -1;
    in.smtp.server = o.server                          ? o.server
                     : conf->feedback_listen_count > 0 ? conf->feedback_listen[0]
                                                       : NULL;
    if (!in.smtp.server) {
        fputs("volleyctl: bounce ingest: no feedback listener: give --server HOST:PORT or set "
              "feedback.listen in the config\n",
              stderr);
        conf_free(conf);
        free(o.pos);
        return VCTL_FB_EXIT_FAIL;
    }
    in.to = o.to;
    in.max_len = (size_t)conf->inject_max_message_size;
    in.show_name = o.npos > 1;
    vbuf_init(&in.wire, SIZE_MAX);
    if (vctl_fb_smtp_open(&in.smtp) < 0) {
        in.dead = 1;
        rc = VCTL_FB_EXIT_FAIL;
    }
    for (int i = 0; i < o.npos && !in.dead; i++) {
        char *buf;
        size_t len;
        in.name = o.pos[i];
        if (vctl_fb_slurp(o.pos[i], &buf, &len) < 0) {
            rc = VCTL_FB_EXIT_FAIL;
            continue;
        }
        if (vctl_fb_messages(buf, len, vctl_fb_ingest_msg, &in) < 0) rc = VCTL_FB_EXIT_FAIL;
        free(buf);
    }
    if (in.smtp.fd >= 0) vctl_fb_smtp_cmd(&in.smtp, "QUIT", text, sizeof text);
    vctl_fb_smtp_close(&in.smtp);
    if (!in.dead || in.accepted + in.refused > 0)
        printf("%lld message%s: %lld accepted, %lld refused\n", in.accepted + in.refused,
               in.accepted + in.refused == 1 ? "" : "s", in.accepted, in.refused);
    if (in.refused > 0 || in.dead) rc = VCTL_FB_EXIT_FAIL;
    vbuf_free(&in.wire);
    conf_free(conf);
    free(o.pos);
    return rc;
}

/* ---------------------------------------------------------------- dispatch */

int vctl_feedback_cmd(const char *word)
{
    return strcmp(word, "suppress") == 0 || strcmp(word, "forget") == 0 ||
           strcmp(word, "bounce") == 0;
}

int vctl_feedback_main(int argc, char **argv, const char *socket_opt, const char *config)
{
    static const struct {
        const char *word, *sub;
        int (*run)(int argc, char **argv, const char *socket_opt, const char *config);
    } subs[] = {
        {"suppress", "add", vctl_fb_suppress_add},
        {"suppress", "remove", vctl_fb_suppress_remove},
        {"suppress", "check", vctl_fb_suppress_check},
        {"suppress", "list", vctl_fb_suppress_list},
        {"suppress", "export", vctl_fb_suppress_export},
        {"suppress", "import", vctl_fb_suppress_import},
    };
    int rc = -1;

    if (strcmp(argv[0], "forget") == 0) {
        rc = vctl_fb_forget(argc - 1, argv + 1, socket_opt, config);
    } else {
        if (argc < 2) vctl_usage_error("%s: missing subcommand", argv[0]);
        if (strcmp(argv[0], "bounce") == 0) {
            if (strcmp(argv[1], "parse") == 0)
                rc = vctl_fb_bounce_parse(argc - 2, argv + 2, config);
            else if (strcmp(argv[1], "ingest") == 0)
                rc = vctl_fb_bounce_ingest(argc - 2, argv + 2, config);
        }
        for (size_t i = 0; i < ARRAY_LEN(subs) && rc < 0; i++)
            if (strcmp(argv[0], subs[i].word) == 0 && strcmp(argv[1], subs[i].sub) == 0)
                rc = subs[i].run(argc - 2, argv + 2, socket_opt, config);
        if (rc < 0) {
            if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) vctl_usage_exit();
            vctl_usage_error("%s: unknown subcommand \"%s\"", argv[0], argv[1]);
        }
    }
    /* a full disk or closed pipe on stdout must not look like success to a script */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "volleyctl: write to stdout failed: %s\n", strerror(errno));
        if (rc == VCTL_FB_EXIT_OK) rc = VCTL_FB_EXIT_FAIL;
    }
    return rc;
}
