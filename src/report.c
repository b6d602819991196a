/*
 * report - deliverability reports from the accounting log (see report.h).
 *
 * The pipeline, per line: report_feed_fd() cuts the input into lines in one fixed
 * 1 MiB buffer; report_feed_line() hands each to the fast scanner
 * (report_fast_scan), which fills a struct report_rec with views of the thirteen
 * fields a report needs, or declines; a declined line goes to jansson
 * (report_slow_scan), which fills the same struct; report_count() then applies the
 * filters and adds the record to the total, the domain and campaign tables (always
 * kept, for the warnings), the --by table when that is category or source, and
 * the diagnostics counter of its bounce category.  report_write() renders the
 * counters; nothing is stored per record.
 *
 * Why a fast scanner: json_loads builds a tree of ~20 heap objects for each
 * record, and the log has tens of millions of records.  Measured with
 * bench/report.sh on the 2-core box (records of ~500 bytes, log on tmpfs, one core
 * busy with another job): on 1,000,000 lines, --parser jansson took 12.8 s of CPU
 * (59 k lines/s), the fast scanner 1.14 s, about 11x; 10,000,000 lines (5 GB)
 * report in 8.0 s (--by domain) to 8.8 s (--by campaign), 1.1-1.25 M lines/s,
 * with a peak RSS of 9 MB.  Of that, string scanning is ~60% (the 8-byte SWAR
 * step in report_scan_string), group lookups ~25%.  The scanner is strict on
 * purpose: it accepts a line only when the line is a flat JSON object it has
 * checked completely (string escapes, UTF-8, number syntax, nothing after the
 * closing brace) and declines anything else (nested values, escaped keys, \u0000,
 * surrogate pairs, exponents, integers jansson would refuse as too
 * big), so whether a line counts never depends on which parser read it.
 *
 * Counting rules (README "Logs"): sent = delivered + bounced (not async) + expired;
 * an async bounce is a bounce and withdraws one earlier delivery; soft = soft
 * bounced + expired; deferrals count events; complaint and unsubscribe rates are
 * per delivered.  A bounced record without a boolean "hard" is hard when its code
 * is 5xx or its enhanced status starts with "5.".  Rows of --by category hold only
 * failure records, so their rates are shares of the total's sent and add up to it.
 *
 * Memory: the input buffer and a same-size scratch buffer for unescaped strings;
 * three group tables of at most max_groups keys each (keys are cut to
 * REPORT_KEY_MAX bytes and kept in an arena); at most REPORT_DIAG_CATS diagnostics
 * counters of topk_capacity entries each, grown on demand.
 */
#include "report.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REPORT_BUF_SIZE        REPORT_LINE_MAX /* one read buffer; a line must fit in it */
#define REPORT_DIAG_CATS       64              /* distinct categories with diagnostics */
#define REPORT_CAT_MAX         63              /* category names are cut to this */
#define REPORT_ARENA_CHUNK     ((size_t)64 << 10)
#define REPORT_TABLE_KEY_WIDTH 48 /* table format cuts longer group keys */
#define REPORT_OTHER_KEY       "(other)"
#define REPORT_NONE_KEY        "(none)"

/* ---------------------------------------------------------------- records */

/* The fields a report reads; everything else in a record is checked and skipped. */
enum REPORT_FIELD {
    REPORT_F_TS,
    REPORT_F_TYPE,
    REPORT_F_CAMPAIGN,
    REPORT_F_RECIPIENT,
    REPORT_F_DOMAIN,
    REPORT_F_VMTA,
    REPORT_F_SOURCE,
    REPORT_F_CATEGORY,
    REPORT_F_DIAG,
    REPORT_F_HARD,
    REPORT_F_ASYNC,
    REPORT_F_CODE,
    REPORT_F_ENH,
    REPORT_F_COUNT
};

static const char *const report_field_names[REPORT_F_COUNT] = {
    "ts",       "type", "campaign", "recipient", "domain", "vmta", "source",
    "category", "diag", "hard",     "async",     "code",   "enh",
};

enum REPORT_VAL {
    REPORT_V_ABSENT,
    REPORT_V_STRING,
    REPORT_V_TRUE,
    REPORT_V_FALSE,
    REPORT_V_NULL,
    REPORT_V_NUMBER,
    REPORT_V_OTHER
};

/* One field's value: strings are views into the line, the scratch buffer or a
 * jansson tree, valid while the line is being counted. */
struct report_val {
    enum REPORT_VAL kind;
    const char *s; /* REPORT_V_STRING */
    size_t n;
    int is_int; /* REPORT_V_NUMBER: an integer that fits, in num */
    int64_t num;
};

struct report_rec {
    struct report_val f[REPORT_F_COUNT];
};

enum REPORT_TYPE {
    REPORT_T_UNKNOWN,
    REPORT_T_DELIVERED,
    REPORT_T_DEFERRED,
    REPORT_T_BOUNCED,
    REPORT_T_EXPIRED,
    REPORT_T_SUPPRESSED,
    REPORT_T_COMPLAINT,
    REPORT_T_UNSUBSCRIBED,
};

/* ---------------------------------------------------------------- counters */

struct report_counts {
    uint64_t delivered;     /* delivered records */
    uint64_t async_bounced; /* bounces that withdraw an earlier delivery */
    uint64_t sync_bounced;
    uint64_t expired;
    uint64_t hard, soft; /* all bounces; soft includes expired */
    uint64_t deferrals, complaints, unsubscribes, suppressed;
};

struct report_group {
    const char *key; /* in the table's arena */
    uint32_t len;
    uint64_t hash;
    struct report_counts c;
};

struct report_arena_chunk {
    struct report_arena_chunk *next;
    size_t used;
    char data[];
};

/*
 * A group table: open addressing with linear probing over indexes into groups[].
 * Never holds more than max groups; a key that would exceed it is counted in other.
 * last remembers the previous hit, since consecutive records mostly share a
 * campaign and often a domain.
 */
struct report_table {
    const char *what; /* "domains", for the note */
    struct report_group *groups;
    size_t n, alloc, max;
    uint32_t *slots; /* index + 1; 0 = empty */
    size_t nslots;
    size_t last; /* index + 1 of the last hit, 0 = none */
    struct report_counts other;
    uint64_t other_records;
    struct report_arena_chunk *arena;
};

/* ------------------------------------------------------------ diagnostics */

struct report_tk_entry {
    uint64_t count, error; /* Space-Saving: count overestimates by at most error */
    uint64_t hash;
    uint32_t heap_pos;
    uint16_t len;
    char text[REPORT_DIAG_MAX + 1];
};

/*
 * Space-Saving top-k (Metwally et al.): at most cap entries; a new text arriving
 * when full replaces the entry with the smallest count and inherits that count as
 * its error.  Every text whose true count exceeds total/cap is guaranteed present,
 * and the counts printed are exact while no entry was ever replaced.  A min-heap
 * finds the smallest entry; a probing hash (tombstones, rebuilt when they pile up)
 * finds a text's entry.
 */
struct report_topk {
    char cat[REPORT_CAT_MAX + 1];
    uint64_t total; /* records in this category */
    size_t cap, n, alloc;
    struct report_tk_entry *e;
    uint32_t *heap;  /* entry indexes, min-heap by count */
    uint32_t *slots; /* entry index + 1; 0 empty; REPORT_TK_TOMB deleted */
    size_t nslots, tombs;
    int evicted;
};
#define REPORT_TK_TOMB UINT32_MAX

/* ----------------------------------------------------------------- report */

struct report {
    struct report_opts o;
    struct report_stats st;
    struct report_counts total;
    struct report_table domains, campaigns, extra; /* extra: --by category / source */
    struct report_topk *cats[REPORT_DIAG_CATS];
    size_t ncats;
    char *scratch; /* unescaped strings of the current line */
    size_t scratch_used;
    char *inbuf; /* report_feed_fd */
};

static const char *const report_format_names[] = {"table", "csv", "json"};
static const char *const report_by_names[] = {"none", "domain", "category", "campaign", "source"};

const char *report_format_str(enum REPORT_FORMAT f)
{
    return (unsigned)f < ARRAY_LEN(report_format_names) ? report_format_names[f] : "unknown";
}

const char *report_by_str(enum REPORT_BY by)
{
    return (unsigned)by < ARRAY_LEN(report_by_names) ? report_by_names[by] : "unknown";
}

const char *report_parser_str(enum REPORT_PARSER p)
{
    return p == REPORT_PARSER_JANSSON ? "jansson" : p == REPORT_PARSER_AUTO ? "auto" : "unknown";
}

/* ================================================================ hashing */

/* report_hash - a multiply-xorshift hash taking 8 bytes a step: keys are short
 * (domains, campaigns, diagnostics) and hashed twice or more per record, so the
 * byte-at-a-time FNV-1a it replaced showed up in profiles */
static uint64_t report_hash(const char *s, size_t n)
{
    const uint64_t m = 0x9e3779b97f4a7c15ULL;
    uint64_t h = 0x51afd7ed558ccd6dULL ^ (n * m);
    uint64_t w;
    while (n >= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * m;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * m;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 32);
}

/* report_utf8_len - length of the valid UTF-8 sequence at p (avail bytes), 0 if
 * invalid; the same rules as jansson (no overlongs, surrogates or > U+10FFFF) */
static size_t report_utf8_len(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    if (c < 0xc2 || c > 0xf4) return 0;
    if (c < 0xe0) return avail >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c < 0xf0) {
        if (avail < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80) return 0;
        if (c == 0xe0 && p[1] < 0xa0) return 0;  /* overlong */
        if (c == 0xed && p[1] >= 0xa0) return 0; /* surrogate */
        return 3;
    }
    if (avail < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
        return 0;
    if (c == 0xf0 && p[1] < 0x90) return 0;  /* overlong */
    if (c == 0xf4 && p[1] >= 0x90) return 0; /* above U+10FFFF */
    return 4;
}

/* report_utf8_cut - the longest prefix of s (n bytes, valid UTF-8) not over max
 * bytes that ends on a character boundary */
static size_t report_utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max) return n;
    size_t k = max;
    while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
        k--;
    return k;
}

/* ============================================================ fast scanner */

/* report_field_lookup - the field a key names, or -1; keys are plain ASCII here */
static int report_field_lookup(const char *k, size_t n)
{
    switch (n) {
    case 2:
        return memcmp(k, "ts", 2) == 0 ? REPORT_F_TS : -1;
    case 3:
        return memcmp(k, "enh", 3) == 0 ? REPORT_F_ENH : -1;
    case 4:
        if (memcmp(k, "type", 4) == 0) return REPORT_F_TYPE;
        if (memcmp(k, "vmta", 4) == 0) return REPORT_F_VMTA;
        if (memcmp(k, "diag", 4) == 0) return REPORT_F_DIAG;
        if (memcmp(k, "hard", 4) == 0) return REPORT_F_HARD;
        if (memcmp(k, "code", 4) == 0) return REPORT_F_CODE;
        return -1;
    case 5:
        return memcmp(k, "async", 5) == 0 ? REPORT_F_ASYNC : -1;
    case 6:
        if (memcmp(k, "domain", 6) == 0) return REPORT_F_DOMAIN;
        if (memcmp(k, "source", 6) == 0) return REPORT_F_SOURCE;
        return -1;
    case 8:
        if (memcmp(k, "campaign", 8) == 0) return REPORT_F_CAMPAIGN;
        if (memcmp(k, "category", 8) == 0) return REPORT_F_CATEGORY;
        return -1;
    case 9:
        return memcmp(k, "recipient", 9) == 0 ? REPORT_F_RECIPIENT : -1;
    default:
        return -1;
    }
}

/* report_is_ws - JSON whitespace */
static inline int report_is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* report_hex4 - the value of 4 hex digits at p, or -1 */
static long report_hex4(const unsigned char *p)
{
    long v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned c = p[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

/*
 * report_swar_special - a nonzero mask when one of the 8 bytes in w is '"', '\\',
 * a control character or non-ASCII.  The lowest set bit is always a real hit (the
 * borrow trick only adds false hits above a real one), so it locates the first.
 */
static inline uint64_t report_swar_special(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
    uint64_t zq = (q - ones) & ~q;        /* a '"' */
    uint64_t zb = (b - ones) & ~b;        /* a '\\' */
    uint64_t lt = (w - ones * 0x20) & ~w; /* a byte below 0x20 */
    return (zq | zb | lt | w) & high;     /* w: a byte of 0x80 or more */
}

/*
 * report_scan_string - check the JSON string whose opening quote is at p[*i - 1];
 * on success *i is past the closing quote, *esc says whether it had escapes.
 * Returns 0, or -1 to decline the line (anything jansson might judge differently
 * is declined, not guessed).
 */
static int report_scan_string(const unsigned char *p, size_t n, size_t *i, int *esc)
{
    size_t k = *i;
    *esc = 0;
    for (;;) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        while (k + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + k, 8);
            uint64_t m = report_swar_special(w);
            if (m) {
                k += (size_t)__builtin_ctzll(m) >> 3;
                break;
            }
            k += 8;
        }
#endif
        if (k >= n) return -1;
        unsigned c = p[k];
        if (c == '"') {
            *i = k + 1;
            return 0;
        }
        if (c == '\\') {
            if (k + 1 >= n) return -1;
            *esc = 1;
            switch (p[k + 1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                k += 2;
                break;
            case 'u': {
                if (k + 6 > n) return -1;
                long v = report_hex4(p + k + 2);
                /* \u0000 and surrogates: jansson has its own rules, let it decide */
                if (v <= 0 || (v >= 0xd800 && v <= 0xdfff)) return -1;
                k += 6;
                break;
            }
            default:
                return -1;
            }
        } else if (c < 0x20) {
            return -1;
        } else if (c >= 0x80) {
            size_t l = report_utf8_len(p + k, n - k);
            if (!l) return -1;
            k += l;
        } else {
            k++;
        }
    }
}

/* report_unescape - decode the checked string body p[0..n) into out; returns its
 * length (never more than n) */
static size_t report_unescape(const unsigned char *p, size_t n, char *out)
{
    size_t o = 0;
    for (size_t k = 0; k < n;) {
        if (p[k] != '\\') {
            out[o++] = (char)p[k++];
            continue;
        }
        unsigned c = p[k + 1];
        k += 2;
        switch (c) {
        case 'b':
            out[o++] = '\b';
            break;
        case 'f':
            out[o++] = '\f';
            break;
        case 'n':
            out[o++] = '\n';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'u': {
            long v = report_hex4(p + k); /* BMP, not zero, not a surrogate: checked */
            k += 4;
            if (v < 0x80) {
                out[o++] = (char)v;
            } else if (v < 0x800) {
                out[o++] = (char)(0xc0 | (v >> 6));
                out[o++] = (char)(0x80 | (v & 0x3f));
            } else {
                out[o++] = (char)(0xe0 | (v >> 12));
                out[o++] = (char)(0x80 | ((v >> 6) & 0x3f));
                out[o++] = (char)(0x80 | (v & 0x3f));
            }
            break;
        }
        default:
            out[o++] = (char)c;
            break; /* " \ / */
        }
    }
    return o;
}

/*
 * report_scan_number - check a JSON number starting at p[*i]; *i moves past it.
 * Integers of up to 18 digits are decoded into v.  Exponents, long numbers and
 * malformed ones are declined (-1): jansson rejects overflowing values.
 */
static int report_scan_number(const unsigned char *p, size_t n, size_t *i, struct report_val *v)
{
    size_t k = *i, digits = 0;
    int neg = 0;
    int64_t num = 0;

    if (k < n && p[k] == '-') {
        neg = 1;
        k++;
    }
    if (k >= n || p[k] < '0' || p[k] > '9') return -1;
    if (p[k] == '0' && k + 1 < n && p[k + 1] >= '0' && p[k + 1] <= '9') return -1;
    while (k < n && p[k] >= '0' && p[k] <= '9') {
        if (++digits > 18) return -1;
        num = num * 10 + (p[k] - '0');
        k++;
    }
    v->kind = REPORT_V_NUMBER;
    v->is_int = 1;
    v->num = neg ? -num : num;
    if (k < n && p[k] == '.') {
        k++;
        size_t frac = 0;
        while (k < n && p[k] >= '0' && p[k] <= '9') {
            if (++frac > 18) return -1;
            k++;
        }
        if (!frac) return -1;
        v->is_int = 0;
    }
    if (k < n && (p[k] == 'e' || p[k] == 'E')) return -1;
    *i = k;
    return 0;
}

/*
 * report_fast_scan - fill rec from a flat one-level JSON object in line[0..n).
 * Returns 0, or -1 to decline (the caller then asks jansson).  Unescaped string
 * views point into line; escaped ones are decoded into r->scratch.
 */
static int report_fast_scan(struct report *r, const char *line, size_t n, struct report_rec *rec)
{
    const unsigned char *p = (const unsigned char *)line;
    size_t i = 0;

    while (i < n && report_is_ws(p[i]))
        i++;
    if (i >= n || p[i] != '{') return -1;
    i++;
    while (i < n && report_is_ws(p[i]))
        i++;
    if (i < n && p[i] == '}') {
        i++;
        goto tail;
    }
    for (;;) {
        /* key: an escaped one might decode to a field name: decline */
        if (i >= n || p[i] != '"') return -1;
        size_t ks = ++i;
        int kesc;
        if (report_scan_string(p, n, &i, &kesc) < 0 || kesc) return -1;
        int field = report_field_lookup(line + ks, i - 1 - ks);
        while (i < n && report_is_ws(p[i]))
            i++;
        if (i >= n || p[i] != ':') return -1;
        i++;
        while (i < n && report_is_ws(p[i]))
            i++;
        if (i >= n) return -1;

        struct report_val tmp, *v = field >= 0 ? &rec->f[field] : &tmp;
        unsigned c = p[i];
        if (c == '"') {
            size_t vs = ++i;
            int esc;
            if (report_scan_string(p, n, &i, &esc) < 0) return -1;
            v->kind = REPORT_V_STRING;
            if (field >= 0 && esc) {
                char *out = r->scratch + r->scratch_used;
                v->n = report_unescape(p + vs, i - 1 - vs, out);
                v->s = out;
                r->scratch_used += v->n;
            } else {
                v->s = line + vs;
                v->n = i - 1 - vs;
            }
        } else if (c == 't' && n - i >= 4 && memcmp(p + i, "true", 4) == 0) {
            v->kind = REPORT_V_TRUE;
            i += 4;
        } else if (c == 'f' && n - i >= 5 && memcmp(p + i, "false", 5) == 0) {
            v->kind = REPORT_V_FALSE;
            i += 5;
        } else if (c == 'n' && n - i >= 4 && memcmp(p + i, "null", 4) == 0) {
            v->kind = REPORT_V_NULL;
            i += 4;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            if (report_scan_number(p, n, &i, v) < 0) return -1;
        } else {
            return -1; /* nested object or array, or not JSON */
        }
        while (i < n && report_is_ws(p[i]))
            i++;
        if (i >= n) return -1;
        if (p[i] == '}') {
            i++;
            break;
        }
        if (p[i] != ',') return -1;
        i++;
        while (i < n && report_is_ws(p[i]))
            i++;
    }
tail:
    while (i < n && report_is_ws(p[i]))
        i++;
    return i == n ? 0 : -1;
}

/* ========================================================= jansson fallback */

/* report_val_from_json - the view of j (NULL = absent); strings stay owned by j */
static void report_val_from_json(json_t *j, struct report_val *v)
{
    memset(v, 0, sizeof *v);
    if (!j) return;
    switch (json_typeof(j)) {
    case JSON_STRING:
        v->kind = REPORT_V_STRING;
        v->s = json_string_value(j);
        v->n = json_string_length(j);
        break;
    case JSON_TRUE:
        v->kind = REPORT_V_TRUE;
        break;
    case JSON_FALSE:
        v->kind = REPORT_V_FALSE;
        break;
    case JSON_NULL:
        v->kind = REPORT_V_NULL;
        break;
    case JSON_INTEGER:
        v->kind = REPORT_V_NUMBER;
        v->is_int = 1;
        v->num = (int64_t)json_integer_value(j);
        break;
    case JSON_REAL:
        v->kind = REPORT_V_NUMBER;
        break;
    default:
        v->kind = REPORT_V_OTHER;
        break;
    }
}

/* ============================================================ group tables */

/* report_table_init - an empty table of at most max keys */
static void report_table_init(struct report_table *t, const char *what, size_t max)
{
    memset(t, 0, sizeof *t);
    t->what = what;
    t->max = max;
}

/* report_table_free - release the groups, slots and key arena */
static void report_table_free(struct report_table *t)
{
    struct report_arena_chunk *c = t->arena;
    while (c) {
        struct report_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    free(t->groups);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

/* report_arena_copy - a copy of s[0..n) (n <= REPORT_KEY_MAX) owned by the table */
static const char *report_arena_copy(struct report_table *t, const char *s, size_t n)
{
    if (!t->arena || t->arena->used + n > REPORT_ARENA_CHUNK) {
        struct report_arena_chunk *c = xmalloc(sizeof *c + REPORT_ARENA_CHUNK);
        c->next = t->arena;
        c->used = 0;
        t->arena = c;
    }
    char *d = t->arena->data + t->arena->used;
    memcpy(d, s, n);
    t->arena->used += n;
    return d;
}

/* report_table_rehash - grow the slot array to nslots (a power of two) */
static void report_table_rehash(struct report_table *t, size_t nslots)
{
    free(t->slots);
    t->slots = xcalloc(nslots, sizeof *t->slots);
    t->nslots = nslots;
    for (size_t g = 0; g < t->n; g++) {
        size_t s = t->groups[g].hash & (nslots - 1);
        while (t->slots[s])
            s = (s + 1) & (nslots - 1);
        t->slots[s] = (uint32_t)(g + 1);
    }
}

/*
 * report_table_get - the counters of key (n <= REPORT_KEY_MAX bytes), created if
 * new; the table's "(other)" counters once it holds max keys.
 */
static struct report_counts *report_table_get(struct report *r, struct report_table *t,
                                              const char *key, size_t n)
{
    if (t->last) {
        struct report_group *g = &t->groups[t->last - 1];
        if (g->len == n && memcmp(g->key, key, n) == 0) return &g->c;
    }
    uint64_t h = report_hash(key, n);
    if (t->nslots) {
        size_t s = h & (t->nslots - 1);
        while (t->slots[s]) {
            struct report_group *g = &t->groups[t->slots[s] - 1];
            if (g->hash == h && g->len == n && memcmp(g->key, key, n) == 0) {
                t->last = t->slots[s];
                return &g->c;
            }
            s = (s + 1) & (t->nslots - 1);
        }
    }
    if (t->n >= t->max) {
        t->other_records++;
        r->st.overflow++;
        return &t->other;
    }
    if (t->n == t->alloc) {
        t->alloc = t->alloc ? t->alloc * 2 : 256;
        if (t->alloc > t->max) t->alloc = t->max;
        t->groups = xrealloc(t->groups, t->alloc * sizeof *t->groups);
    }
    struct report_group *g = &t->groups[t->n++];
    memset(g, 0, sizeof *g);
    g->key = report_arena_copy(t, key, n);
    g->len = (uint32_t)n;
    g->hash = h;
    if (t->n * 2 > t->nslots)
        report_table_rehash(t, t->nslots ? t->nslots * 2 : 1024);
    else {
        size_t s = h & (t->nslots - 1);
        while (t->slots[s])
            s = (s + 1) & (t->nslots - 1);
        t->slots[s] = (uint32_t)t->n;
    }
    t->last = t->n;
    return &g->c;
}

/* ================================================================ top-k */

/* report_tk_swap - exchange heap positions a and b */
static void report_tk_swap(struct report_topk *k, size_t a, size_t b)
{
    uint32_t ea = k->heap[a], eb = k->heap[b];
    k->heap[a] = eb;
    k->heap[b] = ea;
    k->e[eb].heap_pos = (uint32_t)a;
    k->e[ea].heap_pos = (uint32_t)b;
}

/* report_tk_sift_down - restore the min-heap below position p after a count grew */
static void report_tk_sift_down(struct report_topk *k, size_t p)
{
    for (;;) {
        size_t l = 2 * p + 1, m = p;
        if (l < k->n && k->e[k->heap[l]].count < k->e[k->heap[m]].count) m = l;
        if (l + 1 < k->n && k->e[k->heap[l + 1]].count < k->e[k->heap[m]].count) m = l + 1;
        if (m == p) return;
        report_tk_swap(k, p, m);
        p = m;
    }
}

/* report_tk_rebuild - re-insert every entry into a fresh slot array of nslots */
static void report_tk_rebuild(struct report_topk *k, size_t nslots)
{
    free(k->slots);
    k->slots = xcalloc(nslots, sizeof *k->slots);
    k->nslots = nslots;
    k->tombs = 0;
    for (size_t x = 0; x < k->n; x++) {
        size_t s = k->e[x].hash & (nslots - 1);
        while (k->slots[s])
            s = (s + 1) & (nslots - 1);
        k->slots[s] = (uint32_t)(x + 1);
    }
}

/* report_tk_add - count one occurrence of text (normalised, len <= REPORT_DIAG_MAX) */
static void report_tk_add(struct report_topk *k, const char *text, size_t len)
{
    uint64_t h = report_hash(text, len);
    size_t s = 0, tomb = SIZE_MAX;

    k->total++;
    if (k->nslots) {
        s = h & (k->nslots - 1);
        for (; k->slots[s]; s = (s + 1) & (k->nslots - 1)) {
            if (k->slots[s] == REPORT_TK_TOMB) {
                if (tomb == SIZE_MAX) tomb = s;
                continue;
            }
            struct report_tk_entry *e = &k->e[k->slots[s] - 1];
            if (e->hash == h && e->len == len && memcmp(e->text, text, len) == 0) {
                e->count++;
                report_tk_sift_down(k, e->heap_pos);
                return;
            }
        }
    }
    uint32_t x;
    if (k->n < k->cap) {
        if (k->n == k->alloc) {
            k->alloc = k->alloc ? k->alloc * 2 : 16;
            if (k->alloc > k->cap) k->alloc = k->cap;
            k->e = xrealloc(k->e, k->alloc * sizeof *k->e);
            k->heap = xrealloc(k->heap, k->alloc * sizeof *k->heap);
        }
        x = (uint32_t)k->n++;
        k->e[x].count = 0;
        k->e[x].error = 0;
        /* every other entry counts at least 1, so the newcomer (about to count 1)
         * belongs at the top: bubble it up past parents that count more */
        size_t p = x;
        k->heap[p] = x;
        k->e[x].heap_pos = x;
        while (p > 0 && k->e[k->heap[(p - 1) / 2]].count > 1) {
            report_tk_swap(k, p, (p - 1) / 2);
            p = (p - 1) / 2;
        }
    } else {
        /* full: the smallest entry gives up its place; remember its count as error */
        k->evicted = 1;
        x = k->heap[0];
        size_t d = k->e[x].hash & (k->nslots - 1);
        while (k->slots[d] != x + 1)
            d = (d + 1) & (k->nslots - 1);
        k->slots[d] = REPORT_TK_TOMB;
        k->tombs++;
        k->e[x].error = k->e[x].count;
    }
    struct report_tk_entry *e = &k->e[x];
    memcpy(e->text, text, len);
    e->text[len] = '\0';
    e->len = (uint16_t)len;
    e->hash = h;
    e->count++;
    report_tk_sift_down(k, e->heap_pos);

    if ((k->n + k->tombs) * 2 > k->nslots) {
        size_t want = 64;
        while (want < k->n * 4)
            want *= 2;
        report_tk_rebuild(k, want);
    } else {
        /* the first free or deleted slot on the probe path is where the text goes */
        if (tomb == SIZE_MAX) {
            s = h & (k->nslots - 1);
            while (k->slots[s] && k->slots[s] != REPORT_TK_TOMB)
                s = (s + 1) & (k->nslots - 1);
            if (k->slots[s] == REPORT_TK_TOMB) k->tombs--;
        } else {
            s = tomb;
            k->tombs--;
        }
        k->slots[s] = x + 1;
    }
}

/* report_tk_free - release one counter */
static void report_tk_free(struct report_topk *k)
{
    if (!k) return;
    free(k->e);
    free(k->heap);
    free(k->slots);
    free(k);
}

/* report_cat_topk - the diagnostics counter of category name, created if new; the
 * "(other)" one once REPORT_DIAG_CATS - 1 categories exist */
static struct report_topk *report_cat_topk(struct report *r, const char *name, size_t n)
{
    n = report_utf8_cut(name, n, REPORT_CAT_MAX);
    for (size_t i = 0; i < r->ncats; i++)
        if (strlen(r->cats[i]->cat) == n && memcmp(r->cats[i]->cat, name, n) == 0)
            return r->cats[i];
    if (r->ncats >= REPORT_DIAG_CATS - 1) {
        /* the last place is kept for "(other)", created when first needed */
        name = REPORT_OTHER_KEY;
        n = strlen(name);
        for (size_t i = 0; i < r->ncats; i++)
            if (strcmp(r->cats[i]->cat, name) == 0) return r->cats[i];
    }
    struct report_topk *k = xcalloc(1, sizeof *k);
    memcpy(k->cat, name, n);
    k->cat[n] = '\0';
    k->cap = r->o.topk_capacity;
    r->cats[r->ncats++] = k;
    return k;
}

/* ======================================================== normalisation */

/* report_addr_char - may c appear in the local part of an address */
static int report_addr_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr(".!#$%&'*+/=?^_`{|}~-", c));
}

/* report_domain_char - may c appear in a domain */
static int report_domain_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c >= 0x80;
}

/* report_hex_char - is c a hex digit */
static int report_hex_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/*
 * Why these rules: one remote failure reaches thousands of recipients with the
 * address, a queue id, a timestamp or a tracking hash spliced in.  Addresses
 * become "<addr>" (with their angle brackets, if any); a run of hex digits becomes
 * "#" when it has at least 4 characters and is all decimal digits, or has at least
 * 6 and contains a decimal digit (so status codes like 550 and 5.7.1 and words
 * like "deface" survive, while ids and timestamps collapse); whitespace runs
 * (CR/LF of multi-line replies included) become one space.
 */
size_t report_normalise_diag(const char *in, size_t n, char *out)
{
    const unsigned char *p = (const unsigned char *)in;
    char buf[REPORT_DIAG_MAX * 2 + 16];
    size_t o = 0, i = 0;
    const size_t lim = sizeof buf - 8;

    while (i < n && o < lim) {
        unsigned char c = p[i];
        if (c == '@') {
            /* local part: already copied; take it back off the output */
            size_t ls = o;
            while (ls > 0 && report_addr_char((unsigned char)buf[ls - 1]))
                ls--;
            size_t ds = i + 1, de = ds;
            while (de < n && report_domain_char(p[de]))
                de++;
            while (de > ds && (p[de - 1] == '.' || p[de - 1] == '-'))
                de--;
            if (ls < o && de > ds) {
                o = ls;
                i = de;
                if (o > 0 && buf[o - 1] == '<' && i < n && p[i] == '>') {
                    o--;
                    i++;
                }
                if (o > 0 && buf[o - 1] == '<') /* "<<addr>" looks odd; keep one */
                    o--;
                memcpy(buf + o, "<addr>", 6);
                o += 6;
                continue;
            }
            buf[o++] = (char)c;
            i++;
        } else if (report_hex_char(c)) {
            size_t e = i, digits = 0;
            while (e < n && report_hex_char(p[e])) {
                digits += p[e] >= '0' && p[e] <= '9';
                e++;
            }
            size_t len = e - i;
            /* only whole words: "RFC5321" or "abc123def" inside a longer token
             * counts from its own hex run, which is what we want for ids */
            if ((digits == len && len >= 4) || (digits > 0 && len >= 6)) {
                buf[o++] = '#';
                i = e;
            } else {
                size_t take = len < lim - o ? len : lim - o;
                memcpy(buf + o, in + i, take);
                o += take;
                i = e;
            }
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v') {
            if (o > 0 && buf[o - 1] != ' ') buf[o++] = ' ';
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            buf[o++] = '?';
            i++;
        } else {
            buf[o++] = (char)c;
            i++;
        }
    }
    while (o > 0 && buf[o - 1] == ' ')
        o--;
    /* buf is valid UTF-8 when in was (only ASCII was replaced): cut on a boundary */
    size_t start = 0;
    while (start < o && buf[start] == ' ')
        start++;
    size_t len = report_utf8_cut(buf + start, o - start, REPORT_DIAG_MAX);
    memcpy(out, buf + start, len);
    out[len] = '\0';
    return len;
}

/* ================================================================ time */

/* report_days_from_civil - days since 1970-01-01 of a proleptic Gregorian date */
static int64_t report_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* report_digits - the n-digit decimal at p, or -1 */
static int report_digits(const char *p, size_t n)
{
    int v = 0;
    for (size_t k = 0; k < n; k++) {
        if (p[k] < '0' || p[k] > '9') return -1;
        v = v * 10 + (p[k] - '0');
    }
    return v;
}

/*
 * report_rfc3339 - "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" or, when
 * date_ok, "YYYY-MM-DD" in s[0..n) to milliseconds; 0 or -1
 */
static int report_rfc3339(const char *s, size_t n, int date_ok, int64_t *ms)
{
    if (n < 10 || s[4] != '-' || s[7] != '-') return -1;
    int y = report_digits(s, 4), mo = report_digits(s + 5, 2), d = report_digits(s + 8, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > 31) return -1;
    int64_t t = report_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400000;
    if (n == 10) {
        if (!date_ok) return -1;
        *ms = t;
        return 0;
    }
    if (n < 20 || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' || s[16] != ':')
        return -1;
    int h = report_digits(s + 11, 2), mi = report_digits(s + 14, 2), se = report_digits(s + 17, 2);
    if (h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 || se > 60) return -1;
    t += ((int64_t)h * 3600 + mi * 60 + se) * 1000;
    size_t k = 19;
    if (s[k] == '.') {
        int frac = 0, nd = 0;
        k++;
        while (k < n && s[k] >= '0' && s[k] <= '9') {
            if (nd < 3) frac = frac * 10 + (s[k] - '0');
            nd++;
            k++;
        }
        if (nd == 0) return -1;
        for (; nd < 3; nd++)
            frac *= 10;
        t += frac;
    }
    if (k + 1 == n && (s[k] == 'Z' || s[k] == 'z')) {
        *ms = t;
        return 0;
    }
    if (k + 6 == n && (s[k] == '+' || s[k] == '-') && s[k + 3] == ':') {
        int oh = report_digits(s + k + 1, 2), om = report_digits(s + k + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59) return -1;
        int64_t off = ((int64_t)oh * 60 + om) * 60000;
        *ms = s[k] == '+' ? t - off : t + off;
        return 0;
    }
    return -1;
}

int report_time_parse(const char *s, int64_t now, int64_t *ms)
{
    size_t n = strlen(s);
    if (n >= 2 && n <= 12) {
        int64_t v = 0;
        size_t k = 0;
        while (k < n - 1 && s[k] >= '0' && s[k] <= '9')
            v = v * 10 + (s[k++] - '0');
        if (k == n - 1 && k > 0) {
            int64_t unit;
            switch (s[k]) {
            case 's':
                unit = 1000;
                break;
            case 'm':
                unit = 60000;
                break;
            case 'h':
                unit = 3600000;
                break;
            case 'd':
                unit = 86400000;
                break;
            case 'w':
                unit = 7 * 86400000LL;
                break;
            default:
                return -1;
            }
            *ms = now - v * unit;
            return 0;
        }
    }
    return report_rfc3339(s, n, 1, ms);
}

/* ================================================================ counting */

/* report_type_of - the record type named by v */
static enum REPORT_TYPE report_type_of(const struct report_val *v)
{
    static const struct {
        const char *name;
        enum REPORT_TYPE t;
    } types[] = {
        {"delivered", REPORT_T_DELIVERED},       {"deferred", REPORT_T_DEFERRED},
        {"bounced", REPORT_T_BOUNCED},           {"expired", REPORT_T_EXPIRED},
        {"suppressed", REPORT_T_SUPPRESSED},     {"complaint", REPORT_T_COMPLAINT},
        {"unsubscribed", REPORT_T_UNSUBSCRIBED},
    };
    if (v->kind != REPORT_V_STRING) return REPORT_T_UNKNOWN;
    for (size_t k = 0; k < ARRAY_LEN(types); k++)
        if (strlen(types[k].name) == v->n && memcmp(types[k].name, v->s, v->n) == 0)
            return types[k].t;
    return REPORT_T_UNKNOWN;
}

/* report_str_set - is v a non-empty string */
static int report_str_set(const struct report_val *v)
{
    return v->kind == REPORT_V_STRING && v->n > 0;
}

/* report_counts_add - add one record of type t to c */
static void report_counts_add(struct report_counts *c, enum REPORT_TYPE t, int hard, int async)
{
    switch (t) {
    case REPORT_T_DELIVERED:
        c->delivered++;
        break;
    case REPORT_T_DEFERRED:
        c->deferrals++;
        break;
    case REPORT_T_BOUNCED:
        if (async)
            c->async_bounced++;
        else
            c->sync_bounced++;
        if (hard)
            c->hard++;
        else
            c->soft++;
        break;
    case REPORT_T_EXPIRED:
        c->expired++;
        c->soft++;
        break;
    case REPORT_T_SUPPRESSED:
        c->suppressed++;
        break;
    case REPORT_T_COMPLAINT:
        c->complaints++;
        break;
    case REPORT_T_UNSUBSCRIBED:
        c->unsubscribes++;
        break;
    case REPORT_T_UNKNOWN:
        break;
    }
}

/* report_key - copy of s[0..n) cut to REPORT_KEY_MAX on a UTF-8 boundary, ASCII
 * lowercased when fold; returns the length */
static size_t report_key(const char *s, size_t n, int fold, char *out)
{
    n = report_utf8_cut(s, n, REPORT_KEY_MAX);
    for (size_t k = 0; k < n; k++) {
        char c = s[k];
        out[k] = fold && c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
    }
    return n;
}

/* report_count - apply the filters to rec and count it */
static void report_count(struct report *r, const struct report_rec *rec)
{
    const struct report_val *f = rec->f;
    enum REPORT_TYPE t = report_type_of(&f[REPORT_F_TYPE]);
    if (t == REPORT_T_UNKNOWN) return;

    if (r->o.campaign) {
        const struct report_val *c = &f[REPORT_F_CAMPAIGN];
        size_t want = strlen(r->o.campaign);
        size_t have = c->kind == REPORT_V_STRING ? c->n : 0;
        if (have != want || (want && memcmp(c->s, r->o.campaign, want) != 0)) return;
    }
    if (r->o.has_since || r->o.has_until) {
        const struct report_val *ts = &f[REPORT_F_TS];
        int64_t ms;
        if (ts->kind != REPORT_V_STRING || report_rfc3339(ts->s, ts->n, 0, &ms) < 0) return;
        if (r->o.has_since && ms < r->o.since_ms) return;
        if (r->o.has_until && ms >= r->o.until_ms) return;
    }
    r->st.counted++;

    int hard = 0, async = 0;
    int failure = t == REPORT_T_BOUNCED || t == REPORT_T_EXPIRED || t == REPORT_T_DEFERRED;
    if (t == REPORT_T_BOUNCED) {
        const struct report_val *h = &f[REPORT_F_HARD];
        if (h->kind == REPORT_V_TRUE || h->kind == REPORT_V_FALSE) {
            hard = h->kind == REPORT_V_TRUE;
        } else {
            const struct report_val *code = &f[REPORT_F_CODE], *enh = &f[REPORT_F_ENH];
            hard = (code->kind == REPORT_V_NUMBER && code->is_int && code->num >= 500 &&
                    code->num <= 599) ||
                   (enh->kind == REPORT_V_STRING && enh->n >= 2 && enh->s[0] == '5' &&
                    enh->s[1] == '.');
        }
        async = f[REPORT_F_ASYNC].kind == REPORT_V_TRUE;
    }

    report_counts_add(&r->total, t, hard, async);

    char key[REPORT_KEY_MAX + 1];
    size_t kn;
    /* campaign */
    if (report_str_set(&f[REPORT_F_CAMPAIGN]))
        kn = report_key(f[REPORT_F_CAMPAIGN].s, f[REPORT_F_CAMPAIGN].n, 0, key);
    else
        kn = report_key(REPORT_NONE_KEY, strlen(REPORT_NONE_KEY), 0, key);
    report_counts_add(report_table_get(r, &r->campaigns, key, kn), t, hard, async);

    /* domain: the field, else what follows the recipient's last '@' */
    const char *ds = NULL;
    size_t dn = 0;
    if (report_str_set(&f[REPORT_F_DOMAIN])) {
        ds = f[REPORT_F_DOMAIN].s;
        dn = f[REPORT_F_DOMAIN].n;
    } else if (report_str_set(&f[REPORT_F_RECIPIENT])) {
        const char *rs = f[REPORT_F_RECIPIENT].s;
        const char *at = memrchr(rs, '@', f[REPORT_F_RECIPIENT].n);
        if (at && at + 1 < rs + f[REPORT_F_RECIPIENT].n) {
            ds = at + 1;
            dn = (size_t)(rs + f[REPORT_F_RECIPIENT].n - ds);
        }
    }
    if (!ds) {
        ds = REPORT_NONE_KEY;
        dn = strlen(ds);
    }
    kn = report_key(ds, dn, 1, key);
    report_counts_add(report_table_get(r, &r->domains, key, kn), t, hard, async);

    /* the category of a failure: for diagnostics and --by category */
    const char *cs = NULL;
    size_t cn = 0;
    if (failure) {
        if (report_str_set(&f[REPORT_F_CATEGORY])) {
            cs = f[REPORT_F_CATEGORY].s;
            cn = f[REPORT_F_CATEGORY].n;
        } else {
            cs = t == REPORT_T_EXPIRED ? "message-expired" : "other";
            cn = strlen(cs);
        }
    }
    if (r->o.by == REPORT_BY_CATEGORY && failure) {
        kn = report_key(cs, cn, 0, key);
        report_counts_add(report_table_get(r, &r->extra, key, kn), t, hard, async);
    } else if (r->o.by == REPORT_BY_SOURCE) {
        const struct report_val *v =
            report_str_set(&f[REPORT_F_VMTA]) ? &f[REPORT_F_VMTA] : &f[REPORT_F_SOURCE];
        if (report_str_set(v))
            kn = report_key(v->s, v->n, 0, key);
        else
            kn = report_key(REPORT_NONE_KEY, strlen(REPORT_NONE_KEY), 0, key);
        report_counts_add(report_table_get(r, &r->extra, key, kn), t, hard, async);
    }

    if (t == REPORT_T_BOUNCED || t == REPORT_T_EXPIRED) {
        char norm[REPORT_DIAG_MAX + 1];
        const struct report_val *d = &f[REPORT_F_DIAG];
        size_t nn = d->kind == REPORT_V_STRING ? report_normalise_diag(d->s, d->n, norm) : 0;
        if (nn == 0) {
            memcpy(norm, REPORT_NONE_KEY, sizeof REPORT_NONE_KEY);
            nn = strlen(REPORT_NONE_KEY);
        }
        report_tk_add(report_cat_topk(r, cs, cn), norm, nn);
    }
}

/* ================================================================ input */

struct report *report_new(const struct report_opts *opts)
{
    struct report *r = xcalloc(1, sizeof *r);
    if (opts) r->o = *opts;
    if (!r->o.top) r->o.top = REPORT_DEFAULT_TOP;
    if (!r->o.min_volume && !r->o.min_volume_set) r->o.min_volume = REPORT_DEFAULT_MIN_VOLUME;
    if (!r->o.max_groups) r->o.max_groups = REPORT_MAX_GROUPS;
    if (r->o.max_groups > UINT32_MAX / 4) r->o.max_groups = UINT32_MAX / 4;
    if (!r->o.topk_capacity) r->o.topk_capacity = REPORT_TOPK_CAPACITY;
    if (r->o.topk_capacity > UINT32_MAX / 8) r->o.topk_capacity = UINT32_MAX / 8;
    report_table_init(&r->domains, "domains", r->o.max_groups);
    report_table_init(&r->campaigns, "campaigns", r->o.max_groups);
    report_table_init(&r->extra, r->o.by == REPORT_BY_CATEGORY ? "categories" : "sources",
                      r->o.max_groups);
    r->scratch = xmalloc(REPORT_LINE_MAX + 1);
    return r;
}

void report_free(struct report *r)
{
    if (!r) return;
    report_table_free(&r->domains);
    report_table_free(&r->campaigns);
    report_table_free(&r->extra);
    for (size_t i = 0; i < r->ncats; i++)
        report_tk_free(r->cats[i]);
    free(r->scratch);
    free(r->inbuf);
    free(r);
}

void report_stats_get(const struct report *r, struct report_stats *st)
{
    *st = r->st;
}

/* report_slow_scan - parse line with jansson and count it; 0, or -1 if it is not
 * a JSON object */
static int report_slow_scan(struct report *r, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *o = json_loadb(line, len, 0, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        r->st.skipped++;
        return -1;
    }
    struct report_rec rec;
    for (size_t k = 0; k < REPORT_F_COUNT; k++)
        report_val_from_json(json_object_get(o, report_field_names[k]), &rec.f[k]);
    report_count(r, &rec);
    json_decref(o);
    return 0;
}

int report_feed_line(struct report *r, const char *line, size_t len)
{
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    size_t k = 0;
    while (k < len && report_is_ws((unsigned char)line[k]))
        k++;
    if (k == len) return 0; /* blank lines are not records */
    r->st.lines++;
    if (len > REPORT_LINE_MAX) {
        r->st.skipped++;
        r->st.too_long++;
        return -1;
    }
    if (r->o.parser == REPORT_PARSER_AUTO) {
        struct report_rec rec;
        memset(&rec, 0, sizeof rec);
        r->scratch_used = 0;
        if (report_fast_scan(r, line, len, &rec) == 0) {
            r->st.fast++;
            report_count(r, &rec);
            return 0;
        }
    }
    r->st.fallback++;
    return report_slow_scan(r, line, len);
}

int report_feed_fd(struct report *r, int fd)
{
    if (!r->inbuf) r->inbuf = xmalloc(REPORT_BUF_SIZE);
    char *buf = r->inbuf;
    size_t have = 0;
    int discarding = 0; /* inside a line too long for the buffer */

    for (;;) {
        ssize_t got = read(fd, buf + have, REPORT_BUF_SIZE - have);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (got == 0) {
            if (have && !discarding) report_feed_line(r, buf, have);
            return 0;
        }
        have += (size_t)got;
        size_t start = 0;
        char *nl;
        while ((nl = memchr(buf + start, '\n', have - start)) != NULL) {
            if (discarding)
                discarding = 0;
            else
                report_feed_line(r, buf + start, (size_t)(nl - (buf + start)));
            start = (size_t)(nl - buf) + 1;
        }
        if (start == 0 && have == REPORT_BUF_SIZE) {
            /* no newline in a full buffer: the line is too long; drop it whole */
            if (!discarding) {
                r->st.lines++;
                r->st.skipped++;
                r->st.too_long++;
                discarding = 1;
            }
            have = 0;
            continue;
        }
        memmove(buf, buf + start, have - start);
        have -= start;
    }
}

/* ================================================================ output */

/* A group's derived figures. */
struct report_figures {
    uint64_t sent, delivered, hard, soft, bounces, deferrals, complaints, unsubs, suppressed;
    double delivery_rate, hard_rate, soft_rate, bounce_rate, complaint_rate, unsub_rate;
};

/* report_ratio - num/den, 0 when den is 0 */
static double report_ratio(uint64_t num, uint64_t den)
{
    return den ? (double)num / (double)den : 0.0;
}

/* report_sent - messages sent in c: delivered, bounced at once or expired (an
 * async bounce withdraws a delivery already counted) */
static uint64_t report_sent(const struct report_counts *c)
{
    return c->delivered + c->sync_bounced + c->expired;
}

/* report_figures_of - figures of c; rates of failures per base_sent when nonzero
 * (--by category rows), else per their own sent */
static void report_figures_of(const struct report_counts *c, uint64_t base_sent,
                              struct report_figures *g)
{
    g->sent = report_sent(c);
    /* an async bounce whose delivery fell outside the window would go below zero */
    g->delivered = c->delivered > c->async_bounced ? c->delivered - c->async_bounced : 0;
    g->hard = c->hard;
    g->soft = c->soft;
    g->bounces = c->hard + c->soft;
    g->deferrals = c->deferrals;
    g->complaints = c->complaints;
    g->unsubs = c->unsubscribes;
    g->suppressed = c->suppressed;
    uint64_t den = base_sent ? base_sent : g->sent;
    g->delivery_rate = report_ratio(g->delivered, den);
    g->hard_rate = report_ratio(g->hard, den);
    g->soft_rate = report_ratio(g->soft, den);
    g->bounce_rate = report_ratio(g->bounces, den);
    g->complaint_rate = report_ratio(g->complaints, g->delivered);
    g->unsub_rate = report_ratio(g->unsubs, g->delivered);
}

/* One row to print: a group, "(other)" or the total. */
struct report_row {
    const char *key;
    size_t len;
    const struct report_counts *c;
};

enum REPORT_LEVEL { REPORT_LEVEL_WARNING, REPORT_LEVEL_CRITICAL };
enum REPORT_METRIC { REPORT_METRIC_COMPLAINT, REPORT_METRIC_BOUNCE };

struct report_warning {
    enum REPORT_LEVEL level;
    enum REPORT_METRIC metric;
    const char *scope; /* "total", "campaign", "domain" */
    const char *key;
    size_t len;
    double value, threshold;
    uint64_t sent;
};

/* report_level_str - "warning" or "critical" */
static const char *report_level_str(enum REPORT_LEVEL l)
{
    return l == REPORT_LEVEL_CRITICAL ? "critical" : "warning";
}

/* report_metric_str - the metric's field name */
static const char *report_metric_str(enum REPORT_METRIC m)
{
    return m == REPORT_METRIC_COMPLAINT ? "complaint_rate" : "bounce_rate";
}

/* The output being built: rows sorted, warnings found, diagnostics ranked. */
struct report_out {
    struct report_row *rows; /* groups, then "(other)"; the total separately */
    size_t nrows;
    struct report_table *table; /* the --by table, or NULL */
    struct report_warning *warn;
    size_t nwarn, warn_alloc;
    uint64_t base_sent; /* category rows: the total's sent */
};

/* report_row_cmp - sent (or, when *by_failures, failures) descending, then key */
static int report_row_cmp(const void *a, const void *b, void *by_failures)
{
    const struct report_row *x = a, *y = b;
    uint64_t kx, ky;
    if (*(const int *)by_failures) {
        kx = x->c->hard + x->c->soft + x->c->deferrals;
        ky = y->c->hard + y->c->soft + y->c->deferrals;
    } else {
        kx = report_sent(x->c);
        ky = report_sent(y->c);
    }
    if (kx != ky) return kx > ky ? -1 : 1;
    size_t m = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->key, y->key, m);
    if (c) return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* report_warn_add - append a warning */
static void report_warn_add(struct report_out *o, enum REPORT_LEVEL level,
                            enum REPORT_METRIC metric, const char *scope, const char *key,
                            size_t len, double value, double threshold, uint64_t sent)
{
    if (o->nwarn == o->warn_alloc) {
        o->warn_alloc = o->warn_alloc ? o->warn_alloc * 2 : 16;
        o->warn = xrealloc(o->warn, o->warn_alloc * sizeof *o->warn);
    }
    o->warn[o->nwarn++] =
        (struct report_warning){level, metric, scope, key, len, value, threshold, sent};
}

/*
 * report_check - the warnings for one group.  Compared in integers so that a rate
 * exactly on a threshold counts as reaching it: 1 complaint per 1000 delivered is
 * 0.1%, 2 bounces per 100 sent is 2%.
 */
static void report_check(struct report *r, struct report_out *o, const char *scope, const char *key,
                         size_t len, const struct report_counts *c)
{
    struct report_figures g;
    report_figures_of(c, 0, &g);
    if (g.sent < r->o.min_volume || g.sent == 0) return;
    if (g.delivered > 0 && g.complaints * 1000 >= g.delivered * 3)
        report_warn_add(o, REPORT_LEVEL_CRITICAL, REPORT_METRIC_COMPLAINT, scope, key, len,
                        g.complaint_rate, 0.003, g.sent);
    else if (g.delivered > 0 && g.complaints * 1000 >= g.delivered)
        report_warn_add(o, REPORT_LEVEL_WARNING, REPORT_METRIC_COMPLAINT, scope, key, len,
                        g.complaint_rate, 0.001, g.sent);
    if (g.bounces * 50 >= g.sent)
        report_warn_add(o, REPORT_LEVEL_WARNING, REPORT_METRIC_BOUNCE, scope, key, len,
                        g.bounce_rate, 0.02, g.sent);
}

/* report_scope_rank - total before campaigns before domains */
static int report_scope_rank(const char *scope)
{
    return scope[0] == 't' ? 0 : scope[0] == 'c' ? 1 : 2;
}

/* report_warn_cmp - critical first, then scope, then volume, then key */
static int report_warn_cmp(const void *a, const void *b)
{
    const struct report_warning *x = a, *y = b;
    if (x->level != y->level) return x->level == REPORT_LEVEL_CRITICAL ? -1 : 1;
    int sx = report_scope_rank(x->scope), sy = report_scope_rank(y->scope);
    if (sx != sy) return sx - sy;
    if (x->sent != y->sent) return x->sent > y->sent ? -1 : 1;
    size_t m = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->key, y->key, m);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return (int)x->metric - (int)y->metric;
}

/* report_out_build - sort the rows of the --by table and collect the warnings */
static void report_out_build(struct report *r, struct report_out *o)
{
    memset(o, 0, sizeof *o);
    switch (r->o.by) {
    case REPORT_BY_DOMAIN:
        o->table = &r->domains;
        break;
    case REPORT_BY_CAMPAIGN:
        o->table = &r->campaigns;
        break;
    case REPORT_BY_CATEGORY:
    case REPORT_BY_SOURCE:
        o->table = &r->extra;
        break;
    case REPORT_BY_NONE:
        break;
    }
    if (r->o.by == REPORT_BY_CATEGORY) {
        uint64_t sent = report_sent(&r->total);
        o->base_sent = sent ? sent : 1; /* nonzero selects the shared base */
    }
    if (o->table) {
        struct report_table *t = o->table;
        o->rows = xcalloc(t->n + 1, sizeof *o->rows);
        for (size_t i = 0; i < t->n; i++)
            o->rows[o->nrows++] =
                (struct report_row){t->groups[i].key, t->groups[i].len, &t->groups[i].c};
        int by_failures = r->o.by == REPORT_BY_CATEGORY;
        qsort_r(o->rows, o->nrows, sizeof *o->rows, report_row_cmp, &by_failures);
        if (t->other_records)
            o->rows[o->nrows++] =
                (struct report_row){REPORT_OTHER_KEY, strlen(REPORT_OTHER_KEY), &t->other};
    }
    report_check(r, o, "total", "", 0, &r->total);
    for (size_t i = 0; i < r->campaigns.n; i++)
        report_check(r, o, "campaign", r->campaigns.groups[i].key, r->campaigns.groups[i].len,
                     &r->campaigns.groups[i].c);
    for (size_t i = 0; i < r->domains.n; i++)
        report_check(r, o, "domain", r->domains.groups[i].key, r->domains.groups[i].len,
                     &r->domains.groups[i].c);
    if (o->nwarn) qsort(o->warn, o->nwarn, sizeof *o->warn, report_warn_cmp);
}

/* report_out_free - release what report_out_build allocated */
static void report_out_free(struct report_out *o)
{
    free(o->rows);
    free(o->warn);
}

/* report_tk_cmp - count descending, then text */
static int report_tk_cmp(const void *a, const void *b)
{
    const struct report_tk_entry *x = *(const struct report_tk_entry *const *)a;
    const struct report_tk_entry *y = *(const struct report_tk_entry *const *)b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return strcmp(x->text, y->text);
}

/* report_cat_cmp - categories by record count descending, then name */
static int report_cat_cmp(const void *a, const void *b)
{
    const struct report_topk *x = *(const struct report_topk *const *)a;
    const struct report_topk *y = *(const struct report_topk *const *)b;
    if (x->total != y->total) return x->total > y->total ? -1 : 1;
    return strcmp(x->cat, y->cat);
}

/* report_top_entries - the top r->o.top entries of k, ranked; *n their number;
 * caller frees the array (entries stay in k) */
static struct report_tk_entry **report_top_entries(const struct report *r,
                                                   const struct report_topk *k, size_t *n)
{
    struct report_tk_entry **v = xcalloc(k->n ? k->n : 1, sizeof *v);
    for (size_t i = 0; i < k->n; i++)
        v[i] = &k->e[i];
    qsort(v, k->n, sizeof *v, report_tk_cmp);
    *n = k->n < r->o.top ? k->n : r->o.top;
    return v;
}

/* report_sorted_cats - the categories ranked; caller frees the array */
static struct report_topk **report_sorted_cats(const struct report *r)
{
    struct report_topk **v = xcalloc(r->ncats ? r->ncats : 1, sizeof *v);
    memcpy(v, r->cats, r->ncats * sizeof *v);
    qsort(v, r->ncats, sizeof *v, report_cat_cmp);
    return v;
}

/* report_note - the "(other)" note of table t into buf, or 0 if it has none */
static int report_note(const struct report_table *t, char *buf, size_t n)
{
    if (!t->other_records) return 0;
    snprintf(buf, n,
             "more than %zu distinct %s: %llu records beyond the first %zu are counted under "
             "%s",
             t->max, t->what, (unsigned long long)t->other_records, t->max, REPORT_OTHER_KEY);
    return 1;
}

/* report_notes - the notes of every table that overflowed, in order; returns count */
static size_t report_notes(struct report *r, char notes[3][256])
{
    size_t n = 0;
    if (report_note(&r->campaigns, notes[n], sizeof notes[n])) n++;
    if (report_note(&r->domains, notes[n], sizeof notes[n])) n++;
    if (r->o.by == REPORT_BY_CATEGORY || r->o.by == REPORT_BY_SOURCE)
        if (report_note(&r->extra, notes[n], sizeof notes[n])) n++;
    return n;
}

/* ---------------------------------------------------------------- json */

/* report_json_str - a JSON string of s[0..n) (valid UTF-8 by construction) */
static json_t *report_json_str(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    return j ? j : json_string("?");
}

/* report_json_figures - the figures of c as an object, key first when given */
static json_t *report_json_figures(const char *key, size_t len, const struct report_counts *c,
                                   uint64_t base)
{
    struct report_figures g;
    report_figures_of(c, base, &g);
    json_t *o = json_object();
    if (key) json_object_set_new(o, "key", report_json_str(key, len));
    json_object_set_new(o, "sent", json_integer((json_int_t)g.sent));
    json_object_set_new(o, "delivered", json_integer((json_int_t)g.delivered));
    json_object_set_new(o, "delivery_rate", json_real(g.delivery_rate));
    json_object_set_new(o, "hard_bounces", json_integer((json_int_t)g.hard));
    json_object_set_new(o, "hard_rate", json_real(g.hard_rate));
    json_object_set_new(o, "soft_bounces", json_integer((json_int_t)g.soft));
    json_object_set_new(o, "soft_rate", json_real(g.soft_rate));
    json_object_set_new(o, "bounce_rate", json_real(g.bounce_rate));
    json_object_set_new(o, "deferrals", json_integer((json_int_t)g.deferrals));
    json_object_set_new(o, "complaints", json_integer((json_int_t)g.complaints));
    json_object_set_new(o, "complaint_rate", json_real(g.complaint_rate));
    json_object_set_new(o, "unsubscribes", json_integer((json_int_t)g.unsubs));
    json_object_set_new(o, "unsubscribe_rate", json_real(g.unsub_rate));
    json_object_set_new(o, "suppressed", json_integer((json_int_t)g.suppressed));
    return o;
}

/* report_write_json - one JSON document */
static int report_write_json(struct report *r, struct report_out *o, FILE *out)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "by", json_string(report_by_str(r->o.by)));
    json_object_set_new(doc, "total", report_json_figures(NULL, 0, &r->total, 0));
    json_t *groups = json_array();
    for (size_t i = 0; i < o->nrows; i++)
        json_array_append_new(groups, report_json_figures(o->rows[i].key, o->rows[i].len,
                                                          o->rows[i].c, o->base_sent));
    json_object_set_new(doc, "groups", groups);

    json_t *diags = json_object();
    struct report_topk **cats = report_sorted_cats(r);
    for (size_t c = 0; c < r->ncats; c++) {
        size_t n;
        struct report_tk_entry **top = report_top_entries(r, cats[c], &n);
        json_t *list = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_object();
            json_object_set_new(e, "diag", report_json_str(top[i]->text, top[i]->len));
            json_object_set_new(e, "count", json_integer((json_int_t)top[i]->count));
            if (top[i]->error)
                json_object_set_new(e, "error", json_integer((json_int_t)top[i]->error));
            json_array_append_new(list, e);
        }
        json_object_set_new(diags, cats[c]->cat, list);
        free(top);
    }
    free(cats);
    json_object_set_new(doc, "diagnostics", diags);

    json_t *warns = json_array();
    for (size_t i = 0; i < o->nwarn; i++) {
        const struct report_warning *w = &o->warn[i];
        json_t *e = json_object();
        json_object_set_new(e, "level", json_string(report_level_str(w->level)));
        json_object_set_new(e, "scope", json_string(w->scope));
        if (w->len || strcmp(w->scope, "total") != 0)
            json_object_set_new(e, "key", report_json_str(w->key, w->len));
        json_object_set_new(e, "metric", json_string(report_metric_str(w->metric)));
        json_object_set_new(e, "value", json_real(w->value));
        json_object_set_new(e, "threshold", json_real(w->threshold));
        json_object_set_new(e, "sent", json_integer((json_int_t)w->sent));
        json_array_append_new(warns, e);
    }
    json_object_set_new(doc, "warnings", warns);

    char notes[3][256];
    size_t nn = report_notes(r, notes);
    json_t *jn = json_array();
    for (size_t i = 0; i < nn; i++)
        json_array_append_new(jn, json_string(notes[i]));
    json_object_set_new(doc, "notes", jn);
    json_object_set_new(doc, "lines", json_integer((json_int_t)r->st.lines));
    json_object_set_new(doc, "skipped", json_integer((json_int_t)r->st.skipped));
    json_object_set_new(doc, "records", json_integer((json_int_t)r->st.counted));

    int rc = json_dumpf(doc, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(doc);
    if (rc == 0 && fputc('\n', out) == EOF) rc = -1;
    return rc;
}

/* ---------------------------------------------------------------- csv */

/* report_clean - s[0..n) with control characters made '?' into out (size > n);
 * log text must not drive the terminal that shows a report */
static const char *report_clean(const char *s, size_t n, char *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    for (size_t k = 0; k < n; k++) {
        if (p[k] < 0x20 || p[k] == 0x7f) {
            out[o++] = '?';
        } else if (p[k] == 0xc2 && k + 1 < n && p[k + 1] >= 0x80 && p[k + 1] <= 0x9f) {
            out[o++] = '?';
            k++;
        } else {
            out[o++] = (char)p[k];
        }
    }
    out[o] = '\0';
    return out;
}

/* report_csv_field - s[0..n) as an RFC 4180 field, quoted when it must be */
static void report_csv_field(FILE *out, const char *s, size_t n)
{
    char buf[REPORT_DIAG_MAX + REPORT_KEY_MAX + 64];
    if (n >= sizeof buf) n = sizeof buf - 1;
    report_clean(s, n, buf);
    if (!strpbrk(buf, ",\"\r\n")) {
        fputs(buf, out);
        return;
    }
    fputc('"', out);
    for (const char *p = buf; *p; p++) {
        if (*p == '"') fputc('"', out);
        fputc(*p, out);
    }
    fputc('"', out);
}

#define REPORT_CSV_HEAD                                                                            \
    "kind,scope,group,sent,delivered,delivery_rate,hard_bounces,hard_rate,soft_bounces,"           \
    "soft_rate,bounce_rate,deferrals,complaints,complaint_rate,unsubscribes,unsubscribe_rate,"     \
    "suppressed,diag,count,level,metric,value,threshold"

/* report_csv_figures - one "group" or "total" row */
static void report_csv_figures(FILE *out, const char *kind, const char *scope, const char *key,
                               size_t len, const struct report_counts *c, uint64_t base)
{
    struct report_figures g;
    report_figures_of(c, base, &g);
    fprintf(out, "%s,%s,", kind, scope);
    report_csv_field(out, key, len);
    fprintf(out, ",%llu,%llu,%.6f,%llu,%.6f,%llu,%.6f,%.6f,%llu,%llu,%.6f,%llu,%.6f,%llu,,,,,,\r\n",
            (unsigned long long)g.sent, (unsigned long long)g.delivered, g.delivery_rate,
            (unsigned long long)g.hard, g.hard_rate, (unsigned long long)g.soft, g.soft_rate,
            g.bounce_rate, (unsigned long long)g.deferrals, (unsigned long long)g.complaints,
            g.complaint_rate, (unsigned long long)g.unsubs, g.unsub_rate,
            (unsigned long long)g.suppressed);
}

/*
 * report_write_csv - one RFC 4180 table (CRLF line ends) whose first column says
 * what a row is: "group" rows (scope = the --by dimension), one "total" row,
 * "diagnostic" rows (scope category, group = the category, diag and count),
 * "warning" rows (scope total/campaign/domain, group, level, metric, value,
 * threshold, sent) and "note" rows (text in diag).  Unused columns are empty, so
 * every row has the header's 23 fields.
 */
static int report_write_csv(struct report *r, struct report_out *o, FILE *out)
{
    fputs(REPORT_CSV_HEAD "\r\n", out);
    for (size_t i = 0; i < o->nrows; i++)
        report_csv_figures(out, "group", report_by_str(r->o.by), o->rows[i].key, o->rows[i].len,
                           o->rows[i].c, o->base_sent);
    report_csv_figures(out, "total", "total", "", 0, &r->total, 0);

    struct report_topk **cats = report_sorted_cats(r);
    for (size_t c = 0; c < r->ncats; c++) {
        size_t n;
        struct report_tk_entry **top = report_top_entries(r, cats[c], &n);
        for (size_t i = 0; i < n; i++) {
            fputs("diagnostic,category,", out);
            report_csv_field(out, cats[c]->cat, strlen(cats[c]->cat));
            fputs(",,,,,,,,,,,,,,,", out); /* 14 empty figures */
            report_csv_field(out, top[i]->text, top[i]->len);
            fprintf(out, ",%llu,,,,\r\n", (unsigned long long)top[i]->count);
        }
        free(top);
    }
    free(cats);

    for (size_t i = 0; i < o->nwarn; i++) {
        const struct report_warning *w = &o->warn[i];
        fprintf(out, "warning,%s,", w->scope);
        report_csv_field(out, w->key, w->len);
        /* sent, 13 empty figures, empty diag and count, then the warning */
        fprintf(out, ",%llu,,,,,,,,,,,,,,,,%s,%s,%.6f,%.6f\r\n", (unsigned long long)w->sent,
                report_level_str(w->level), report_metric_str(w->metric), w->value, w->threshold);
    }
    char notes[3][256];
    size_t nn = report_notes(r, notes);
    for (size_t i = 0; i < nn; i++) {
        fputs("note,,,,,,,,,,,,,,,,,", out);
        report_csv_field(out, notes[i], strlen(notes[i]));
        fputs(",,,,,\r\n", out);
    }
    return 0;
}

/* ---------------------------------------------------------------- table */

#define REPORT_NCOLS 15

static const char *const report_table_heads[REPORT_NCOLS] = {
    "",        "SENT",     "DELIVERED",  "DELIV%", "HARD",   "HARD%",  "SOFT",       "SOFT%",
    "BOUNCE%", "DEFERRED", "COMPLAINTS", "COMPL%", "UNSUBS", "UNSUB%", "SUPPRESSED",
};

/* report_width - display columns of s, one per UTF-8 code point */
static size_t report_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80) w++;
    return w;
}

/* report_table_cells - the cells of one row; cell 0 is the cleaned, shortened key */
static void report_table_cells(const char *key, size_t len, const struct report_counts *c,
                               uint64_t base, char cells[REPORT_NCOLS][REPORT_KEY_MAX + 8])
{
    struct report_figures g;
    report_figures_of(c, base, &g);
    char clean[REPORT_KEY_MAX + 1];
    report_clean(key, len, clean);
    /* cut long keys by code points so that the other columns stay readable */
    size_t w = 0, k = 0;
    for (; clean[k]; k++) {
        if (((unsigned char)clean[k] & 0xc0) != 0x80 && ++w > REPORT_TABLE_KEY_WIDTH - 3) break;
    }
    if (clean[k] && report_width(clean) > REPORT_TABLE_KEY_WIDTH)
        snprintf(cells[0], REPORT_KEY_MAX + 8, "%.*s...", (int)k, clean);
    else
        snprintf(cells[0], REPORT_KEY_MAX + 8, "%s", clean);
    const size_t cs = REPORT_KEY_MAX + 8;
    snprintf(cells[1], cs, "%llu", (unsigned long long)g.sent);
    snprintf(cells[2], cs, "%llu", (unsigned long long)g.delivered);
    snprintf(cells[3], cs, "%.2f%%", g.delivery_rate * 100);
    snprintf(cells[4], cs, "%llu", (unsigned long long)g.hard);
    snprintf(cells[5], cs, "%.2f%%", g.hard_rate * 100);
    snprintf(cells[6], cs, "%llu", (unsigned long long)g.soft);
    snprintf(cells[7], cs, "%.2f%%", g.soft_rate * 100);
    snprintf(cells[8], cs, "%.2f%%", g.bounce_rate * 100);
    snprintf(cells[9], cs, "%llu", (unsigned long long)g.deferrals);
    snprintf(cells[10], cs, "%llu", (unsigned long long)g.complaints);
    snprintf(cells[11], cs, "%.2f%%", g.complaint_rate * 100);
    snprintf(cells[12], cs, "%llu", (unsigned long long)g.unsubs);
    snprintf(cells[13], cs, "%.2f%%", g.unsub_rate * 100);
    snprintf(cells[14], cs, "%llu", (unsigned long long)g.suppressed);
}

/* report_table_print_row - cells padded to w: the key left, numbers right */
static void report_table_print_row(FILE *out, char cells[REPORT_NCOLS][REPORT_KEY_MAX + 8],
                                   const size_t *w)
{
    for (size_t c = 0; c < REPORT_NCOLS; c++) {
        size_t pad = w[c] - report_width(cells[c]);
        if (c == 0)
            fprintf(out, "%s%*s", cells[c], (int)pad, "");
        else
            fprintf(out, "  %*s%s", (int)pad, "", cells[c]);
    }
    fputc('\n', out);
}

/* report_write_rows - the --by table: header, sorted groups, "(other)", total */
static void report_write_rows(struct report *r, struct report_out *o, FILE *out)
{
    char cells[REPORT_NCOLS][REPORT_KEY_MAX + 8];
    size_t w[REPORT_NCOLS];
    char head[32];

    /* widths: one pass formatting every row, a second printing it */
    snprintf(head, sizeof head, "%s", report_by_str(r->o.by));
    for (char *p = head; *p; p++)
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 32);
    for (size_t c = 0; c < REPORT_NCOLS; c++)
        w[c] = report_width(c == 0 ? head : report_table_heads[c]);
    for (size_t i = 0; i <= o->nrows; i++) {
        if (i < o->nrows)
            report_table_cells(o->rows[i].key, o->rows[i].len, o->rows[i].c, o->base_sent, cells);
        else
            report_table_cells("(total)", 7, &r->total, 0, cells);
        for (size_t c = 0; c < REPORT_NCOLS; c++) {
            size_t cw = report_width(cells[c]);
            if (cw > w[c]) w[c] = cw;
        }
    }
    for (size_t c = 0; c < REPORT_NCOLS; c++)
        snprintf(cells[c], sizeof cells[c], "%s", c == 0 ? head : report_table_heads[c]);
    report_table_print_row(out, cells, w);
    for (size_t i = 0; i <= o->nrows; i++) {
        if (i < o->nrows)
            report_table_cells(o->rows[i].key, o->rows[i].len, o->rows[i].c, o->base_sent, cells);
        else
            report_table_cells("(total)", 7, &r->total, 0, cells);
        report_table_print_row(out, cells, w);
    }
}

/* report_write_total_block - the key/value block shown without --by */
static void report_write_total_block(struct report *r, FILE *out)
{
    struct report_figures g;
    report_figures_of(&r->total, 0, &g);
    fprintf(out, "%-14s %12llu\n", "sent", (unsigned long long)g.sent);
    fprintf(out, "%-14s %12llu  %7.2f%%\n", "delivered", (unsigned long long)g.delivered,
            g.delivery_rate * 100);
    fprintf(out, "%-14s %12llu  %7.2f%%\n", "hard bounces", (unsigned long long)g.hard,
            g.hard_rate * 100);
    fprintf(out, "%-14s %12llu  %7.2f%%\n", "soft bounces", (unsigned long long)g.soft,
            g.soft_rate * 100);
    fprintf(out, "%-14s %12llu  %7.2f%%\n", "bounces", (unsigned long long)g.bounces,
            g.bounce_rate * 100);
    fprintf(out, "%-14s %12llu\n", "deferrals", (unsigned long long)g.deferrals);
    fprintf(out, "%-14s %12llu  %7.2f%%\n", "complaints", (unsigned long long)g.complaints,
            g.complaint_rate * 100);
    fprintf(out, "%-14s %12llu  %7.2f%%\n", "unsubscribes", (unsigned long long)g.unsubs,
            g.unsub_rate * 100);
    fprintf(out, "%-14s %12llu\n", "suppressed", (unsigned long long)g.suppressed);
}

/* report_write_table - aligned text for a terminal */
static int report_write_table(struct report *r, struct report_out *o, FILE *out)
{
    char clean[REPORT_DIAG_MAX + REPORT_KEY_MAX + 8];

    fprintf(out, "Deliverability report: %llu records from %llu lines",
            (unsigned long long)r->st.counted, (unsigned long long)r->st.lines);
    if (r->st.skipped) fprintf(out, " (%llu skipped)", (unsigned long long)r->st.skipped);
    fputs("\n\n", out);
    if (o->table)
        report_write_rows(r, o, out);
    else
        report_write_total_block(r, out);
    fputs("(rates: delivered, bounces per sent; complaints, unsubscribes per delivered", out);
    fputs(r->o.by == REPORT_BY_CATEGORY ? "; category rows: shares of all sent)\n" : ")\n", out);

    fputs("\nTop bounce diagnostics\n", out);
    if (!r->ncats) fputs("  none\n", out);
    struct report_topk **cats = report_sorted_cats(r);
    for (size_t c = 0; c < r->ncats; c++) {
        size_t n;
        struct report_tk_entry **top = report_top_entries(r, cats[c], &n);
        fprintf(out, "  %s (%llu)\n", report_clean(cats[c]->cat, strlen(cats[c]->cat), clean),
                (unsigned long long)cats[c]->total);
        for (size_t i = 0; i < n; i++)
            fprintf(out, "  %c%10llu  %s\n", top[i]->error ? '~' : ' ',
                    (unsigned long long)top[i]->count,
                    report_clean(top[i]->text, top[i]->len, clean));
        free(top);
    }
    free(cats);

    fputs("\nWarnings\n", out);
    if (!o->nwarn)
        fprintf(out, "  none (checked groups with at least %llu sent)\n",
                (unsigned long long)r->o.min_volume);
    for (size_t i = 0; i < o->nwarn; i++) {
        const struct report_warning *w = &o->warn[i];
        int total = strcmp(w->scope, "total") == 0;
        fprintf(out, "  %-8s  %s%s%s: %s %.2f%% >= %.2f%% (sent %llu)\n",
                w->level == REPORT_LEVEL_CRITICAL ? "CRITICAL" : "WARNING", w->scope,
                total ? "" : " ", total ? "" : report_clean(w->key, w->len, clean),
                w->metric == REPORT_METRIC_COMPLAINT ? "complaint rate" : "bounce rate",
                w->value * 100, w->threshold * 100, (unsigned long long)w->sent);
    }
    char notes[3][256];
    size_t nn = report_notes(r, notes);
    for (size_t i = 0; i < nn; i++)
        fprintf(out, "\nnote: %s\n", notes[i]);
    return 0;
}

int report_write(struct report *r, enum REPORT_FORMAT f, FILE *out)
{
    struct report_out o;
    int rc;

    report_out_build(r, &o);
    switch (f) {
    case REPORT_FORMAT_CSV:
        rc = report_write_csv(r, &o, out);
        break;
    case REPORT_FORMAT_JSON:
        rc = report_write_json(r, &o, out);
        break;
    default:
        rc = report_write_table(r, &o, out);
        break;
    }
    report_out_free(&o);
    if (fflush(out) != 0 || ferror(out)) rc = -1;
    return rc;
}

/* ================================================================ CLI */

#define REPORT_MAX_LOGS   256
#define REPORT_EXIT_OK    0
#define REPORT_EXIT_FAIL  1
#define REPORT_EXIT_USAGE 2

static const char report_usage_text[] =
    "usage: volleyctl [-c CONFIG] report [--log FILE]... [--campaign C] [--since T]\n"
    "           [--until T] [--by domain|category|campaign|source]\n"
    "           [--format table|csv|json] [--top N] [--min-volume N]\n"
    "\n"
    "Reads the accounting log (default: log.dir from the config + /accounting.log;\n"
    "--log FILE, repeatable, '-' = stdin, rotated files too) and reports delivery,\n"
    "bounce, complaint and unsubscribe rates, the top bounce diagnostics per\n"
    "category (--top, default 5) and warnings for campaigns, domains and the total\n"
    "that reach a 0.1% / 0.3% complaint rate or a 2% bounce rate with at least\n"
    "--min-volume sent (default 100).\n"
    "T is RFC 3339 (2026-12-01T00:00:00Z), a date (2026-12-01) or an age (90m, 24h,\n"
    "7d): --since is inclusive, --until exclusive.\n";

/* report_usage - "volleyctl: report: <why>" and the usage text to err; returns 2 */
static int report_usage(FILE *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int report_usage(FILE *err, const char *fmt, ...)
{
    va_list ap;
    fputs("volleyctl: report: ", err);
    va_start(ap, fmt);
    vfprintf(err, fmt, ap);
    va_end(ap);
    fputs("\n\n", err);
    fputs(report_usage_text, err);
    return REPORT_EXIT_USAGE;
}


/* report_parse_uint - s as a whole number in 0..max into *v; 0 or -1 */
static int report_parse_uint(const char *s, uint64_t max, uint64_t *v)
{
    uint64_t x = 0;
    if (!*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        x = x * 10 + (uint64_t)(*s - '0');
        if (x > max) return -1;
    }
    *v = x;
    return 0;
}

/* report_open_log - open path ("-" = stdin) for reading; fd, or -1 after saying why */
static int report_open_log(const char *path, FILE *err)
{
    if (strcmp(path, "-") == 0) return STDIN_FILENO;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(err, "volleyctl: report: %s: %s\n", path, strerror(errno));
        return -1;
    }
    unsigned char magic[4];
    ssize_t got = pread(fd, magic, sizeof magic, 0);
    /* gzip, xz, zstd: a rotated file that was compressed reads as one long bad line */
    if (got >= 2 && ((magic[0] == 0x1f && magic[1] == 0x8b) ||
                     (got >= 4 && ((magic[0] == 0xfd && magic[1] == '7' && magic[2] == 'z') ||
                                   (magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f))))) {
        fprintf(err,
                "volleyctl: report: %s: compressed; decompress it to stdin: "
                "zcat %s | volleyctl report --log -\n",
                path, path);
        close(fd);
        return -1;
    }
    return fd;
}

int report_cli(int argc, char **argv, const char *default_log, FILE *out, FILE *err)
{
    const char *logs[REPORT_MAX_LOGS];
    size_t nlogs = 0;
    const char *since = NULL, *until = NULL, *by = NULL, *format = NULL, *top = NULL;
    const char *minvol = NULL, *parser = NULL, *val;
    struct report_opts opts;
    enum REPORT_FORMAT fmt = REPORT_FORMAT_TABLE;
    int got_opt;

    memset(&opts, 0, sizeof opts);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char **slot = NULL;
        const char *name = NULL;
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            fputs(report_usage_text, out);
            return REPORT_EXIT_OK;
        }
        if ((got_opt = opt_value("--log", argc, argv, &i, &val)) != 0) {
            if (got_opt < 0) return report_usage(err, "--log needs a file");
            if (!*val) return report_usage(err, "--log needs a file");
            if (nlogs == REPORT_MAX_LOGS)
                return report_usage(err, "at most %d --log files", REPORT_MAX_LOGS);
            logs[nlogs++] = val;
            continue;
        }
        static const char *const names[] = {"--campaign", "--since", "--until",      "--by",
                                            "--format",   "--top",   "--min-volume", "--parser"};
        const char **slots[] = {&opts.campaign, &since, &until,  &by,
                                &format,        &top,   &minvol, &parser};
        for (size_t k = 0; k < ARRAY_LEN(names) && !slot; k++) {
            got_opt = opt_value(names[k], argc, argv, &i, &val);
            if (got_opt < 0) return report_usage(err, "%s needs a value", names[k]);
            if (got_opt > 0) {
                slot = slots[k];
                name = names[k];
            }
        }
        if (!slot) {
            if (arg[0] == '-' && arg[1]) return report_usage(err, "unknown option %s", arg);
            return report_usage(err, "unexpected argument \"%s\"", arg);
        }
        if (*slot) return report_usage(err, "%s given twice", name);
        *slot = val;
    }

    int64_t now = now_ms();
    if (since) {
        if (report_time_parse(since, now, &opts.since_ms) < 0)
            return report_usage(err,
                                "bad --since \"%s\": want 2026-12-01T00:00:00Z, "
                                "2026-12-01 or an age such as 24h",
                                since);
        opts.has_since = 1;
    }
    if (until) {
        if (report_time_parse(until, now, &opts.until_ms) < 0)
            return report_usage(err,
                                "bad --until \"%s\": want 2026-12-01T00:00:00Z, "
                                "2026-12-01 or an age such as 24h",
                                until);
        opts.has_until = 1;
    }
    if (by) {
        size_t k;
        for (k = 1; k < ARRAY_LEN(report_by_names); k++)
            if (strcmp(by, report_by_names[k]) == 0) break;
        if (k == ARRAY_LEN(report_by_names))
            return report_usage(err, "bad --by \"%s\": want domain, category, campaign or source",
                                by);
        opts.by = (enum REPORT_BY)k;
    }
    if (format) {
        size_t k;
        for (k = 0; k < ARRAY_LEN(report_format_names); k++)
            if (strcmp(format, report_format_names[k]) == 0) break;
        if (k == ARRAY_LEN(report_format_names))
            return report_usage(err, "bad --format \"%s\": want table, csv or json", format);
        fmt = (enum REPORT_FORMAT)k;
    }
    if (top) {
        uint64_t v;
        if (report_parse_uint(top, 1000, &v) < 0 || v == 0)
            return report_usage(err, "bad --top \"%s\": want a whole number from 1 to 1000", top);
        opts.top = (size_t)v;
    }
    if (minvol) {
        uint64_t v;
        if (report_parse_uint(minvol, UINT32_MAX, &v) < 0)
            return report_usage(err, "bad --min-volume \"%s\": want a whole number", minvol);
        opts.min_volume = v;
        opts.min_volume_set = 1;
    }
    if (parser) {
        if (strcmp(parser, "auto") == 0)
            opts.parser = REPORT_PARSER_AUTO;
        else if (strcmp(parser, "jansson") == 0)
            opts.parser = REPORT_PARSER_JANSSON;
        else
            return report_usage(err, "bad --parser \"%s\": want auto or jansson", parser);
    }
    if (!nlogs) {
        if (!default_log)
            return report_usage(err, "no --log given and no log.dir to find accounting.log in");
        logs[nlogs++] = default_log;
    }
    size_t stdin_uses = 0;
    for (size_t k = 0; k < nlogs; k++)
        stdin_uses += strcmp(logs[k], "-") == 0;
    if (stdin_uses > 1) return report_usage(err, "--log - given twice");

    struct report *r = report_new(&opts);
    int rc = REPORT_EXIT_OK;
    for (size_t k = 0; k < nlogs && rc == REPORT_EXIT_OK; k++) {
        int fd = report_open_log(logs[k], err);
        if (fd < 0) {
            rc = REPORT_EXIT_FAIL;
            break;
        }
        if (report_feed_fd(r, fd) < 0) {
            fprintf(err, "volleyctl: report: %s: read: %s\n",
                    strcmp(logs[k], "-") == 0 ? "stdin" : logs[k], strerror(errno));
            rc = REPORT_EXIT_FAIL;
        }
        if (fd != STDIN_FILENO) close(fd);
    }
    if (rc == REPORT_EXIT_OK) {
        struct report_stats st;
        report_stats_get(r, &st);
        if (st.skipped - st.too_long)
            fprintf(err, "volleyctl: report: %llu lines skipped (not JSON)\n",
                    (unsigned long long)(st.skipped - st.too_long));
        if (st.too_long)
            fprintf(err, "volleyctl: report: %llu lines skipped (longer than %zu bytes)\n",
                    (unsigned long long)st.too_long, REPORT_LINE_MAX);
        if (report_write(r, fmt, out) < 0) {
            fprintf(err, "volleyctl: report: write failed: %s\n", strerror(errno));
            rc = REPORT_EXIT_FAIL;
        }
    }
    report_free(r);
    return rc;
}
