/*
 * shape - traffic shaping policy (see shape.h): the rules file, limit matching,
 * token buckets, response rules and the adaptive state of one (source, site) pair.
 *
 * Entry points: shape_rules_load() reads conf/shaping.conf-style files into an
 * immutable struct shape_rules; shape_match(), shape_pool_for() and
 * shape_response_match() answer questions about it; shape_state_*() and
 * shape_bucket_*() keep the per-pair state the scheduler owns.
 *
 * Invariants: nothing here reads a clock, opens a socket or keeps global state;
 * every time is the caller's now_ms.  A loaded rule set is never modified, so
 * several threads may share one.  Loading is bounded: each list has a hard cap
 * (SHAPE_MAX_*), each string a fixed-size field, so a hostile or runaway file costs
 * at most a few megabytes before it is refused.  Any unknown key, bad value or
 * dangling reference refuses the whole file with "file:line: key: reason": a
 * misspelt limit silently left at its default is how a sender gets blocklisted.
 *
 * Limits are kept as layers (struct shape_layer): the "defaults" group and each
 * rule record which keys they set, and shape_match() lays the matching rules over
 * the built-in values from least to most specific, so an omitted key falls through.
 */
#include "shape.h"
#include "cfgfile.h"
#include "util.h"

#include <arpa/inet.h>
#include <assert.h>
#include <fnmatch.h>
#include <libconfig.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SHAPE_MAX_RULES     1024 /* rules */
#define SHAPE_MAX_MATCH     64   /* match entries per rule */
#define SHAPE_MAX_SOURCES   256  /* sources */
#define SHAPE_MAX_POOLS     256  /* pools */
#define SHAPE_MAX_SELECT    1024 /* select entries */
#define SHAPE_MAX_RESPONSES 512  /* response rules */
#define SHAPE_MAX_WARMUP    366  /* days of a warm-up schedule */
#define SHAPE_PATTERN_MAX   256  /* a match, campaign or sender_domain pattern */
#define SHAPE_REGEX_MAX     1024 /* a response rule's text */
#define SHAPE_ENH_MAX       16   /* "5.123.123" and NUL */
#define SHAPE_CONN_MAX      10000
#define SHAPE_COUNT_MAX     100000
#define SHAPE_WEIGHT_MAX    10000
#define SHAPE_RATE_COUNT_MAX 1000000000LL
#define SHAPE_DAILY_MAX     1000000000LL
#define SHAPE_SECONDS_MAX   31536000 /* longest duration: a year */

#define SHAPE_DAY_MS             86400000LL
#define SHAPE_RECOVERY_START     0.125 /* share of the limits right after a backoff */
#define SHAPE_DEF_RECOVERY_STEP  300   /* seconds */
#define SHAPE_DEF_MAX_CONN       20
#define SHAPE_DEF_MSGS_PER_CONN  100
#define SHAPE_DEF_RCPTS_PER_TXN  100
#define SHAPE_TOKEN_EPS          1e-9 /* float slack when counting tokens */

/* ---- private types ------------------------------------------------------------------ */

/* match entry classes, least specific first: the index is the specificity */
enum SHAPE_MATCH_KIND { SHAPE_M_MX, SHAPE_M_SITE, SHAPE_M_DOMAIN, SHAPE_M_NKINDS };

struct shape_match_entry {
    enum SHAPE_MATCH_KIND kind;
    char pat[SHAPE_PATTERN_MAX]; /* domain and mx patterns are stored in lower case */
};

/* which keys a layer sets */
enum {
    SHAPE_L_MAXCONN = 1u << 0,
    SHAPE_L_MAXCONN_SITE = 1u << 1,
    SHAPE_L_MSGS_PER_CONN = 1u << 2,
    SHAPE_L_RCPTS_PER_TXN = 1u << 3,
    SHAPE_L_MSG_RATE = 1u << 4,
    SHAPE_L_MSG_BURST = 1u << 5,
    SHAPE_L_CONN_RATE = 1u << 6,
    SHAPE_L_CONN_BURST = 1u << 7,
    SHAPE_L_RETRY = 1u << 8,
    SHAPE_L_MAX_AGE = 1u << 9,
    SHAPE_L_MSG_RATE_SITE = 1u << 10,
    SHAPE_L_CONN_RATE_SITE = 1u << 11,
};

/*
 * One layer of limits: the defaults group or one rule.  A rate carries the burst
 * derived from its own text (rate_burst) so that a rule that sets a rate without a
 * burst gets the burst of that rate, not one left over from a lower layer.
 */
struct shape_layer {
    unsigned set;
    int max_connections;
    int max_connections_site;
    int max_messages_per_connection;
    int max_recipients_per_transaction;
    double message_rate, message_rate_burst, message_burst;
    double connection_rate, connection_rate_burst, connection_burst;
    double message_rate_site, message_rate_site_burst;
    double connection_rate_site, connection_rate_site_burst;
    int64_t retry[SHAPE_RETRY_MAX];
    int nretry;
    int64_t max_age;
};

struct shape_rule {
    char name[SHAPE_NAME_MAX];
    struct shape_match_entry *match;
    int nmatch;
    struct shape_layer lim;
};

struct shape_select {
    char campaign[SHAPE_PATTERN_MAX];      /* "" = not part of this entry */
    char sender_domain[SHAPE_PATTERN_MAX]; /* "" = not part of this entry */
    int pool;
};

struct shape_resp_rule {
    struct shape_response resp;
    int code;                /* 0 = any */
    char enh[SHAPE_ENH_MAX]; /* "" = any */
    bool has_re;
    regex_t re;
};

struct shape_rules {
    int64_t recovery_step_ms;
    struct shape_layer defaults;
    struct shape_rule *rules;
    int nrules;
    struct shape_source *sources;
    int nsources;
    struct shape_pool *pools;
    int npools;
    int default_pool;
    struct shape_select *select;
    int nselect;
    struct shape_resp_rule *responses;
    int nresponses;
};

/* ---- small helpers ------------------------------------------------------------------ */

/* shape_floor_div - a / b rounded towards minus infinity (b > 0) */
static int64_t shape_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if (a % b != 0 && a < 0) q--;
    return q;
}

/* shape_ceil_ms - x rounded up to a whole millisecond, with float slack: 20.0000001
 * computed for an exact 20 stays 20 */
static int64_t shape_ceil_ms(double x)
{
    if (x >= 9.2e18) return INT64_MAX;
    int64_t i = (int64_t)x;
    if ((double)i < x - 1e-6) i++;
    return i;
}

/* shape_add_ms - now + d, saturating at INT64_MAX */
static int64_t shape_add_ms(int64_t now_ms, int64_t d)
{
    if (d > 0 && now_ms > INT64_MAX - d) return INT64_MAX;
    return now_ms + d;
}

/* shape_printable - only printable ASCII without space (patterns, EHLO names) */
static bool shape_printable(const char *s)
{
    for (; *s; s++)
        if (*s <= 0x20 || *s >= 0x7f) return false;
    return true;
}

/* ---- value parsers ------------------------------------------------------------------ */

/* shape_get_name - a rule, source, pool or response name (see cfgfile_name_ok) */
static int shape_get_name(struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                          char out[SHAPE_NAME_MAX])
{
    const char *v = NULL;
    if (cfgfile_get_str(ld, s, key, &v) < 0) return -1;
    if (!cfgfile_name_ok(v, SHAPE_NAME_MAX))
        return cfgfile_fail(ld, s, key, "\"%s\": a name is 1..%d of A-Z a-z 0-9 . _ -", v,
                            SHAPE_NAME_MAX - 1);
    str_copy(out, SHAPE_NAME_MAX, v);
    return 0;
}

/* shape_unit_seconds - seconds in a duration or rate unit letter; 0 if none */
static int64_t shape_unit_seconds(char c)
{
    switch (c) {
    case 's':
        return 1;
    case 'm':
        return 60;
    case 'h':
        return 3600;
    case 'd':
        return 86400;
    default:
        return 0;
    }
}

/*
 * shape_parse_duration_text - "30s", "5m", "1h", "1d" or a bare number of seconds,
 * 1 second .. a year, into *secs; the text ends at *endp (NULL: must end there).
 */
static int shape_parse_duration_text(const char *text, const char **endp, int64_t *secs)
{
    const char *p = text;
    long long v = 0;
    int digits = 0;

    while (*p >= '0' && *p <= '9') {
        if (v > SHAPE_SECONDS_MAX) return -1;
        v = v * 10 + (*p - '0');
        p++;
        digits++;
    }
    if (digits == 0 || v <= 0) return -1;
    int64_t mult = shape_unit_seconds(*p);
    if (mult)
        p++;
    else
        mult = 1;
    if (v > SHAPE_SECONDS_MAX / mult) return -1;
    if (endp)
        *endp = p;
    else if (*p)
        return -1;
    *secs = v * mult;
    return 0;
}

/*
 * shape_get_duration - a duration setting in seconds: an integer, or a string as
 * in shape_parse_duration_text; "" gives 0 when allow_empty.
 */
static int shape_get_duration(struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                              bool allow_empty, int64_t *secs)
{
    int t = config_setting_type(s);
    if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
        long long v = config_setting_get_int64(s);
        if (v <= 0 || v > SHAPE_SECONDS_MAX)
            return cfgfile_fail(ld, s, key, "%lld seconds is not in 1..%d", v, SHAPE_SECONDS_MAX);
        *secs = v;
        return 0;
    }
    if (t != CONFIG_TYPE_STRING)
        return cfgfile_fail(ld, s, key,
                            "must be a duration such as \"30s\", \"5m\", \"1h\", \"1d\"");
    const char *v = config_setting_get_string(s);
    if (allow_empty && *v == '\0') {
        *secs = 0;
        return 0;
    }
    if (shape_parse_duration_text(v, NULL, secs) < 0)
        return cfgfile_fail(ld, s, key,
                            "bad duration \"%.64s\": expected a positive N, Ns, Nm, Nh or Nd up to "
                            "a year",
                            v);
    return 0;
}

/*
 * shape_parse_rate - "N/s", "N/m", "N/h", "N/d" into messages per second and the
 * default burst: one second's worth, at most a tenth of the period's count, at
 * least 1 ("3000/m" is 50/s with a burst of 50; "10/s" is 10/s with a burst of 1).
 * "" is unlimited (rate and burst 0).
 */
static int shape_parse_rate(const char *text, double *rate, double *burst)
{
    const char *p = text;
    long long n = 0;
    int digits = 0;

    if (*p == '\0') {
        *rate = 0;
        *burst = 0;
        return 0;
    }
    while (*p >= '0' && *p <= '9') {
        if (n > SHAPE_RATE_COUNT_MAX) return -1;
        n = n * 10 + (*p - '0');
        p++;
        digits++;
    }
    if (digits == 0 || n <= 0 || n > SHAPE_RATE_COUNT_MAX || *p != '/') return -1;
    int64_t period = shape_unit_seconds(p[1]);
    if (period == 0 || p[2] != '\0') return -1;
    double r = (double)n / (double)period;
    double b = r;
    if (b > (double)n / 10.0) b = (double)n / 10.0;
    if (b < 1.0) b = 1.0;
    *rate = r;
    *burst = b;
    return 0;
}

/* shape_get_rate - a rate setting (see shape_parse_rate) */
static int shape_get_rate(struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                          double *rate, double *burst)
{
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return cfgfile_fail(ld, s, key, "must be a string such as \"100/m\"");
    const char *v = config_setting_get_string(s);
    if (shape_parse_rate(v, rate, burst) < 0)
        return cfgfile_fail(ld, s, key,
                            "bad rate \"%.64s\": expected \"\" (unlimited) or N/s, N/m, N/h, N/d "
                            "with N from 1 to %lld",
                            v, SHAPE_RATE_COUNT_MAX);
    return 0;
}

/* shape_get_retry - "5m,10m,1h" (at most SHAPE_RETRY_MAX waits); "" = none */
static int shape_get_retry(struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                           int64_t *out, int *count)
{
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return cfgfile_fail(ld, s, key, "must be a string such as \"5m,10m,1h\"");
    const char *v = config_setting_get_string(s);
    const char *p = v;
    *count = 0;
    while (*p) {
        int64_t secs;
        const char *end;
        if (*count == SHAPE_RETRY_MAX)
            return cfgfile_fail(ld, s, key, "at most %d waits", SHAPE_RETRY_MAX);
        if (shape_parse_duration_text(p, &end, &secs) < 0)
            return cfgfile_fail(ld, s, key,
                                "bad retry schedule \"%.64s\": expected waits such as "
                                "\"5m,10m,1h\", each up to a year",
                                v);
        out[(*count)++] = secs;
        while (*end == ' ')
            end++;
        if (*end == ',') {
            end++;
            while (*end == ' ')
                end++;
            if (*end == '\0')
                return cfgfile_fail(ld, s, key, "bad retry schedule \"%.64s\": trailing comma", v);
        } else if (*end) {
            return cfgfile_fail(ld, s, key,
                                "bad retry schedule \"%.64s\": expected waits such as "
                                "\"5m,10m,1h\"",
                                v);
        }
        p = end;
    }
    return 0;
}

/* shape_days_from_civil - days from 1970-01-01 to the given proleptic Gregorian date */
static int64_t shape_days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = shape_floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* shape_parse_date - "YYYY-MM-DD" (years 2000..9999) to its UTC midnight in ms */
static int shape_parse_date(const char *s, int64_t *ms)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int v[3] = {0, 0, 0};
    static const int width[3] = {4, 2, 2};
    const char *p = s;

    for (int f = 0; f < 3; f++) {
        for (int i = 0; i < width[f]; i++, p++) {
            if (*p < '0' || *p > '9') return -1;
            v[f] = v[f] * 10 + (*p - '0');
        }
        if (f < 2 && *p++ != '-') return -1;
    }
    if (*p != '\0' || v[0] < 2000 || v[1] < 1 || v[1] > 12 || v[2] < 1) return -1;
    bool leap = (v[0] % 4 == 0 && v[0] % 100 != 0) || v[0] % 400 == 0;
    int dim = mdays[v[1] - 1] + (v[1] == 2 && leap ? 1 : 0);
    if (v[2] > dim) return -1;
    *ms = shape_days_from_civil(v[0], v[1], v[2]) * SHAPE_DAY_MS;
    return 0;
}

/* ---- layers of limits --------------------------------------------------------------- */

/* the integer limit keys: name, bit, field, bounds */
struct shape_int_key {
    const char *name;
    unsigned bit;
    size_t offset;
    int min, max;
};

static const struct shape_int_key shape_int_keys[] = {
    {"max_connections", SHAPE_L_MAXCONN, offsetof(struct shape_layer, max_connections), 1,
     SHAPE_CONN_MAX},
    {"max_connections_site", SHAPE_L_MAXCONN_SITE,
     offsetof(struct shape_layer, max_connections_site), 0, SHAPE_CONN_MAX},
    {"max_messages_per_connection", SHAPE_L_MSGS_PER_CONN,
     offsetof(struct shape_layer, max_messages_per_connection), 1, SHAPE_COUNT_MAX},
    {"max_recipients_per_transaction", SHAPE_L_RCPTS_PER_TXN,
     offsetof(struct shape_layer, max_recipients_per_transaction), 1, SHAPE_COUNT_MAX},
    {"message_burst", SHAPE_L_MSG_BURST, 0, 1, SHAPE_COUNT_MAX},
    {"connection_burst", SHAPE_L_CONN_BURST, 0, 1, SHAPE_CONN_MAX},
};

/*
 * shape_layer_key - parse setting s into layer l if it is a limit key: 1 when it
 * was one, 0 when it is not a limit key, -1 (err set) when its value is bad.
 */
static int shape_layer_key(struct cfgfile_ld *ld, const config_setting_t *s, const char *pfx,
                           struct shape_layer *l)
{
    const char *name = config_setting_name(s);
    char key[160];

    cfgfile_key(key, sizeof key, pfx, name);
    for (size_t i = 0; i < ARRAY_LEN(shape_int_keys); i++) {
        const struct shape_int_key *k = &shape_int_keys[i];
        long long v = 0;
        if (strcmp(name, k->name) != 0) continue;
        if (cfgfile_get_int(ld, s, key, k->min, k->max, &v) < 0) return -1;
        if (k->bit == SHAPE_L_MSG_BURST)
            l->message_burst = (double)v;
        else if (k->bit == SHAPE_L_CONN_BURST)
            l->connection_burst = (double)v;
        else
            *(int *)((char *)l + k->offset) = (int)v;
        l->set |= k->bit;
        return 1;
    }
    if (strcmp(name, "message_rate") == 0) {
        if (shape_get_rate(ld, s, key, &l->message_rate, &l->message_rate_burst) < 0) return -1;
        l->set |= SHAPE_L_MSG_RATE;
        return 1;
    }
    if (strcmp(name, "connection_rate") == 0) {
        if (shape_get_rate(ld, s, key, &l->connection_rate, &l->connection_rate_burst) < 0)
            return -1;
        l->set |= SHAPE_L_CONN_RATE;
        return 1;
    }
    if (strcmp(name, "message_rate_site") == 0) {
        if (shape_get_rate(ld, s, key, &l->message_rate_site, &l->message_rate_site_burst) < 0)
            return -1;
        l->set |= SHAPE_L_MSG_RATE_SITE;
        return 1;
    }
    if (strcmp(name, "connection_rate_site") == 0) {
        if (shape_get_rate(ld, s, key, &l->connection_rate_site,
                           &l->connection_rate_site_burst) < 0)
            return -1;
        l->set |= SHAPE_L_CONN_RATE_SITE;
        return 1;
    }
    if (strcmp(name, "retry_schedule") == 0) {
        if (shape_get_retry(ld, s, key, l->retry, &l->nretry) < 0) return -1;
        l->set |= SHAPE_L_RETRY;
        return 1;
    }
    if (strcmp(name, "max_age") == 0) {
        if (shape_get_duration(ld, s, key, true, &l->max_age) < 0) return -1;
        l->set |= SHAPE_L_MAX_AGE;
        return 1;
    }
    return 0;
}

/*
 * shape_layer_apply - lay l over out: every key l sets replaces out's.  A rate
 * brings its own burst unless l also sets the burst.
 */
static void shape_layer_apply(struct shape_limits *out, const struct shape_layer *l)
{
    if (l->set & SHAPE_L_MAXCONN) out->max_connections = l->max_connections;
    if (l->set & SHAPE_L_MAXCONN_SITE) out->max_connections_site = l->max_connections_site;
    if (l->set & SHAPE_L_MSGS_PER_CONN)
        out->max_messages_per_connection = l->max_messages_per_connection;
    if (l->set & SHAPE_L_RCPTS_PER_TXN)
        out->max_recipients_per_transaction = l->max_recipients_per_transaction;
    if (l->set & SHAPE_L_MSG_RATE) {
        out->message_rate = l->message_rate;
        out->message_burst = l->message_rate_burst;
    }
    if (l->set & SHAPE_L_MSG_BURST) out->message_burst = l->message_burst;
    if (l->set & SHAPE_L_CONN_RATE) {
        out->connection_rate = l->connection_rate;
        out->connection_burst = l->connection_rate_burst;
    }
    if (l->set & SHAPE_L_CONN_BURST) out->connection_burst = l->connection_burst;
    if (l->set & SHAPE_L_MSG_RATE_SITE) {
        out->message_rate_site = l->message_rate_site;
        out->message_burst_site = l->message_rate_site_burst;
    }
    if (l->set & SHAPE_L_CONN_RATE_SITE) {
        out->connection_rate_site = l->connection_rate_site;
        out->connection_burst_site = l->connection_rate_site_burst;
    }
    if (l->set & SHAPE_L_RETRY) {
        memcpy(out->retry, l->retry, sizeof(out->retry));
        out->nretry = l->nretry;
    }
    if (l->set & SHAPE_L_MAX_AGE) out->max_age = l->max_age;
}

/* ---- the rules file ----------------------------------------------------------------- */

/* shape_parse_defaults - the "defaults" group: limit keys only */
static int shape_parse_defaults(struct cfgfile_ld *ld, const config_setting_t *g,
                                struct shape_rules *r)
{
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return cfgfile_fail(ld, g, "defaults", "must be a group { ... }");
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        int rc = shape_layer_key(ld, s, "defaults", &r->defaults);
        if (rc < 0) return -1;
        if (rc == 0) {
            char key[160];
            cfgfile_key(key, sizeof key, "defaults", config_setting_name(s));
            return cfgfile_fail(ld, s, key, "unknown key");
        }
    }
    return 0;
}

/*
 * shape_parse_match_entry - "domain:NAME" (exact, or "*.NAME" for its
 * subdomains), "site:NAME" (exact) or "mx:GLOB" into e
 */
static int shape_parse_match_entry(struct cfgfile_ld *ld, const config_setting_t *s,
                                   const char *key, struct shape_match_entry *e)
{
    static const struct {
        const char *prefix;
        enum SHAPE_MATCH_KIND kind;
    } kinds[] = {{"domain:", SHAPE_M_DOMAIN}, {"site:", SHAPE_M_SITE}, {"mx:", SHAPE_M_MX}};

    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return cfgfile_fail(ld, s, key, "must be a string such as \"domain:example.com\"");
    const char *v = config_setting_get_string(s);
    for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
        size_t plen = strlen(kinds[k].prefix);
        if (strncmp(v, kinds[k].prefix, plen) != 0) continue;
        const char *pat = v + plen;
        if (*pat == '\0' || !shape_printable(pat))
            return cfgfile_fail(ld, s, key, "\"%.64s\": empty or has spaces or control characters",
                                v);
        if (str_copy(e->pat, sizeof e->pat, pat) < 0)
            return cfgfile_fail(ld, s, key, "pattern longer than %d characters",
                                SHAPE_PATTERN_MAX - 1);
        e->kind = kinds[k].kind;
        if (e->kind == SHAPE_M_DOMAIN) {
            const char *rest = strncmp(pat, "*.", 2) == 0 ? pat + 2 : pat;
            if (*rest == '\0' || strpbrk(rest, "*?[]") != NULL)
                return cfgfile_fail(ld, s, key,
                                    "\"%.64s\": a domain is exact, or \"*.\" and a domain", v);
        }
        if (e->kind != SHAPE_M_SITE) str_lower(e->pat);
        return 0;
    }
    return cfgfile_fail(ld, s, key, "\"%.64s\": expected domain:NAME, site:NAME or mx:GLOB", v);
}

/* shape_parse_rule - one entry of "rules": name, match and limit keys */
static int shape_parse_rule(struct cfgfile_ld *ld, const config_setting_t *g, int idx,
                            struct shape_rules *r)
{
    struct shape_rule *rule = &r->rules[r->nrules];
    char pfx[32], key[160];
    const config_setting_t *match = NULL;

    snprintf(pfx, sizeof pfx, "rules[%d]", idx);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return cfgfile_fail(ld, g, pfx, "must be a group { name = ...; match = [ ... ]; ... }");
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        cfgfile_key(key, sizeof key, pfx, name);
        if (strcmp(name, "name") == 0) {
            if (shape_get_name(ld, s, key, rule->name) < 0) return -1;
            if (strcmp(rule->name, "default") == 0)
                return cfgfile_fail(ld, s, key, "\"default\" is reserved for no rule matched");
            continue;
        }
        if (strcmp(name, "match") == 0) {
            match = s;
            continue;
        }
        int rc = shape_layer_key(ld, s, pfx, &rule->lim);
        if (rc < 0) return -1;
        if (rc == 0) return cfgfile_fail(ld, s, key, "unknown key");
    }
    if (rule->name[0] == '\0') return cfgfile_fail(ld, g, pfx, "missing name");
    for (int i = 0; i < r->nrules; i++)
        if (strcmp(r->rules[i].name, rule->name) == 0)
            return cfgfile_fail(ld, g, pfx, "duplicate rule name \"%s\"", rule->name);
    cfgfile_key(key, sizeof key, pfx, "match");
    if (match == NULL)
        return cfgfile_fail(ld, g, key, "missing (a list such as [ \"mx:*.x.com\" ])");
    if (!cfgfile_is_seq(match) || config_setting_length(match) == 0)
        return cfgfile_fail(ld, match, key, "must be a non-empty list of strings");
    int nm = config_setting_length(match);
    if (nm > SHAPE_MAX_MATCH)
        return cfgfile_fail(ld, match, key, "more than %d entries", SHAPE_MAX_MATCH);
    rule->match = xcalloc((size_t)nm, sizeof(*rule->match));
    r->nrules++; /* owns rule->match from here on, for shape_rules_free */
    for (int i = 0; i < nm; i++) {
        const config_setting_t *e = config_setting_get_elem(match, (unsigned)i);
        char ekey[192];
        snprintf(ekey, sizeof ekey, "%s[%d]", key, i);
        if (shape_parse_match_entry(ld, e, ekey, &rule->match[i]) < 0) return -1;
        rule->nmatch++;
    }
    return 0;
}

/* shape_parse_warmup_daily - a source's list of daily caps */
static int shape_parse_warmup_daily(struct cfgfile_ld *ld, const config_setting_t *s,
                                    const char *key, struct shape_source *src)
{
    if (!cfgfile_is_seq(s) || config_setting_length(s) == 0)
        return cfgfile_fail(ld, s, key, "must be a non-empty list of integers");
    int n = config_setting_length(s);
    if (n > SHAPE_MAX_WARMUP)
        return cfgfile_fail(ld, s, key, "more than %d days", SHAPE_MAX_WARMUP);
    free(src->warmup_daily);
    src->warmup_daily = xcalloc((size_t)n, sizeof(*src->warmup_daily));
    src->nwarmup = 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        char ekey[192];
        long long v = 0;
        snprintf(ekey, sizeof ekey, "%s[%d]", key, i);
        if (cfgfile_get_int(ld, e, ekey, 1, SHAPE_DAILY_MAX, &v) < 0) return -1;
        src->warmup_daily[src->nwarmup++] = v;
    }
    return 0;
}

/* shape_parse_source - one entry of "sources" */
static int shape_parse_source(struct cfgfile_ld *ld, const config_setting_t *g, int idx,
                              struct shape_rules *r)
{
    struct shape_source *src = &r->sources[r->nsources++]; /* zeroed; freed with r */
    const config_setting_t *start = NULL, *daily = NULL;
    char pfx[32], key[160];

    snprintf(pfx, sizeof pfx, "sources[%d]", idx);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return cfgfile_fail(ld, g, pfx, "must be a group { name = ...; address = ...; }");
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        cfgfile_key(key, sizeof key, pfx, name);
        if (strcmp(name, "name") == 0) {
            if (shape_get_name(ld, s, key, src->name) < 0) return -1;
        } else if (strcmp(name, "address") == 0) {
            unsigned char bin[16];
            if (cfgfile_copy_str(ld, s, key, src->address, sizeof src->address) < 0) return -1;
            if (src->address[0] && inet_pton(AF_INET, src->address, bin) != 1 &&
                inet_pton(AF_INET6, src->address, bin) != 1)
                return cfgfile_fail(ld, s, key, "\"%s\" is not an IPv4 or IPv6 address",
                                    src->address);
        } else if (strcmp(name, "ehlo") == 0) {
            if (cfgfile_copy_str(ld, s, key, src->ehlo, sizeof src->ehlo) < 0) return -1;
            if (!shape_printable(src->ehlo))
                return cfgfile_fail(ld, s, key, "has spaces or control characters");
        } else if (strcmp(name, "warmup_start") == 0) {
            start = s;
            if (config_setting_type(s) != CONFIG_TYPE_STRING ||
                shape_parse_date(config_setting_get_string(s), &src->warmup_start_ms) < 0)
                return cfgfile_fail(ld, s, key,
                                    "must be a date \"YYYY-MM-DD\" (UTC, year >= 2000)");
        } else if (strcmp(name, "warmup_daily") == 0) {
            daily = s;
            if (shape_parse_warmup_daily(ld, s, key, src) < 0) return -1;
        } else {
            return cfgfile_fail(ld, s, key, "unknown key");
        }
    }
    if (src->name[0] == '\0') return cfgfile_fail(ld, g, pfx, "missing name");
    for (int i = 0; i < r->nsources - 1; i++)
        if (strcmp(r->sources[i].name, src->name) == 0)
            return cfgfile_fail(ld, g, pfx, "duplicate source name \"%s\"", src->name);
    if ((start == NULL) != (daily == NULL))
        return cfgfile_fail(
            ld, start ? start : daily,
            cfgfile_key(key, sizeof key, pfx, start ? "warmup_start" : "warmup_daily"),
            "warmup_start and warmup_daily go together");
    return 0;
}

/* shape_parse_member - "name" or "name:weight" of a pool into m */
static int shape_parse_member(struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                              const struct shape_rules *r, struct shape_pool_member *m)
{
    char name[SHAPE_NAME_MAX];

    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return cfgfile_fail(ld, s, key, "must be a string \"source\" or \"source:weight\"");
    const char *v = config_setting_get_string(s);
    const char *colon = strchr(v, ':');
    size_t len = colon ? (size_t)(colon - v) : strlen(v);
    if (len == 0 || len >= sizeof name)
        return cfgfile_fail(ld, s, key, "\"%.64s\": bad source name", v);
    memcpy(name, v, len);
    name[len] = '\0';
    m->weight = 1;
    if (colon) {
        const char *p = colon + 1;
        long long w = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && w <= SHAPE_WEIGHT_MAX) {
            w = w * 10 + (*p - '0');
            p++;
            digits++;
        }
        if (digits == 0 || *p != '\0' || w < 1 || w > SHAPE_WEIGHT_MAX)
            return cfgfile_fail(ld, s, key, "\"%.64s\": the weight must be 1..%d", v,
                                SHAPE_WEIGHT_MAX);
        m->weight = (int)w;
    }
    m->source = shape_source_find(r, name);
    if (m->source < 0) return cfgfile_fail(ld, s, key, "unknown source \"%s\"", name);
    return 0;
}

/* shape_parse_pool - one entry of "pools" */
static int shape_parse_pool(struct cfgfile_ld *ld, const config_setting_t *g, int idx,
                            struct shape_rules *r)
{
    struct shape_pool *pool = &r->pools[r->npools++]; /* zeroed; freed with r */
    const config_setting_t *list = NULL;
    char pfx[32], key[160];

    snprintf(pfx, sizeof pfx, "pools[%d]", idx);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return cfgfile_fail(ld, g, pfx, "must be a group { name = ...; sources = [ ... ]; }");
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        cfgfile_key(key, sizeof key, pfx, name);
        if (strcmp(name, "name") == 0) {
            if (shape_get_name(ld, s, key, pool->name) < 0) return -1;
        } else if (strcmp(name, "sources") == 0) {
            list = s;
        } else {
            return cfgfile_fail(ld, s, key, "unknown key");
        }
    }
    if (pool->name[0] == '\0') return cfgfile_fail(ld, g, pfx, "missing name");
    for (int i = 0; i < r->npools - 1; i++)
        if (strcmp(r->pools[i].name, pool->name) == 0)
            return cfgfile_fail(ld, g, pfx, "duplicate pool name \"%s\"", pool->name);
    cfgfile_key(key, sizeof key, pfx, "sources");
    if (list == NULL) return cfgfile_fail(ld, g, key, "missing (a list of source names)");
    if (!cfgfile_is_seq(list) || config_setting_length(list) == 0)
        return cfgfile_fail(ld, list, key, "must be a non-empty list of strings");
    int nm = config_setting_length(list);
    if (nm > r->nsources)
        return cfgfile_fail(ld, list, key, "more members than sources (%d)", r->nsources);
    pool->members = xcalloc((size_t)nm, sizeof(*pool->members));
    for (int i = 0; i < nm; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        char ekey[192];
        snprintf(ekey, sizeof ekey, "%s[%d]", key, i);
        struct shape_pool_member *m = &pool->members[pool->nmembers];
        if (shape_parse_member(ld, e, ekey, r, m) < 0) return -1;
        for (int k = 0; k < pool->nmembers; k++)
            if (pool->members[k].source == m->source)
                return cfgfile_fail(ld, e, ekey, "source \"%s\" listed twice",
                                    r->sources[m->source].name);
        pool->nmembers++;
    }
    return 0;
}

/* shape_parse_select - one entry of "select" */
static int shape_parse_select(struct cfgfile_ld *ld, const config_setting_t *g, int idx,
                              struct shape_rules *r)
{
    struct shape_select *sel = &r->select[r->nselect++];
    const config_setting_t *pool = NULL;
    char pfx[32], key[160];

    snprintf(pfx, sizeof pfx, "select[%d]", idx);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return cfgfile_fail(ld, g, pfx, "must be a group { campaign = ...; pool = ...; }");
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        char *field = NULL;
        cfgfile_key(key, sizeof key, pfx, name);
        if (strcmp(name, "campaign") == 0) {
            field = sel->campaign;
        } else if (strcmp(name, "sender_domain") == 0) {
            field = sel->sender_domain;
        } else if (strcmp(name, "pool") == 0) {
            pool = s;
            continue;
        } else {
            return cfgfile_fail(ld, s, key, "unknown key");
        }
        if (cfgfile_copy_str(ld, s, key, field, SHAPE_PATTERN_MAX) < 0) return -1;
        if (field[0] == '\0' || !shape_printable(field))
            return cfgfile_fail(ld, s, key, "must be a non-empty glob without spaces");
    }
    if (sel->campaign[0] == '\0' && sel->sender_domain[0] == '\0')
        return cfgfile_fail(ld, g, pfx, "needs campaign or sender_domain (or both)");
    cfgfile_key(key, sizeof key, pfx, "pool");
    if (pool == NULL) return cfgfile_fail(ld, g, key, "missing");
    if (config_setting_type(pool) != CONFIG_TYPE_STRING)
        return cfgfile_fail(ld, pool, key, "must be a string");
    const char *pname = config_setting_get_string(pool);
    const struct shape_pool *p = shape_pool_find(r, pname);
    if (p == NULL) return cfgfile_fail(ld, pool, key, "unknown pool \"%.64s\"", pname);
    sel->pool = (int)(p - r->pools);
    return 0;
}

/* shape_action_parse - an action name to its enum; -1 if unknown */
static int shape_action_parse(const char *s)
{
    static const enum SHAPE_ACTION all[] = {SHAPE_ACT_NONE, SHAPE_ACT_SUSPEND, SHAPE_ACT_BACKOFF,
                                            SHAPE_ACT_BOUNCE};
    for (size_t i = 0; i < ARRAY_LEN(all); i++)
        if (strcmp(s, shape_action_str(all[i])) == 0) return (int)all[i];
    return -1;
}

/* shape_enh_ok - "" or an enhanced status prefix: class 2/4/5, then up to two
 * ".N" parts of 1..3 digits ("4", "4.7", "4.7.28") */
static bool shape_enh_ok(const char *s)
{
    if (*s == '\0') return true;
    if (*s != '2' && *s != '4' && *s != '5') return false;
    s++;
    for (int part = 0; part < 2 && *s; part++) {
        if (*s++ != '.') return false;
        int n = 0;
        while (*s >= '0' && *s <= '9' && n < 4) {
            s++;
            n++;
        }
        if (n == 0 || n > 3) return false;
    }
    return *s == '\0';
}

/* shape_parse_response - one entry of "responses" */
static int shape_parse_response(struct cfgfile_ld *ld, const config_setting_t *g, int idx,
                                struct shape_rules *r)
{
    struct shape_resp_rule *rr = &r->responses[r->nresponses];
    struct shape_response *resp = &rr->resp;
    const config_setting_t *action = NULL, *duration = NULL, *rate = NULL, *conn = NULL;
    char text[SHAPE_REGEX_MAX] = "";
    const config_setting_t *text_s = NULL;
    char pfx[32], key[160];

    snprintf(pfx, sizeof pfx, "responses[%d]", idx);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return cfgfile_fail(ld, g, pfx, "must be a group { name = ...; action = ...; }");
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        cfgfile_key(key, sizeof key, pfx, name);
        if (strcmp(name, "name") == 0) {
            if (shape_get_name(ld, s, key, resp->rule) < 0) return -1;
        } else if (strcmp(name, "code") == 0) {
            long long v = 0;
            if (cfgfile_get_int(ld, s, key, 0, 599, &v) < 0) return -1;
            if (v != 0 && v < 400)
                return cfgfile_fail(ld, s, key, "%lld: must be 0 (any) or a 4xx/5xx code", v);
            rr->code = (int)v;
        } else if (strcmp(name, "enh") == 0) {
            if (cfgfile_copy_str(ld, s, key, rr->enh, sizeof rr->enh) < 0) return -1;
            if (!shape_enh_ok(rr->enh))
                return cfgfile_fail(ld, s, key, "\"%s\": expected a status prefix such as \"4.7\"",
                                    rr->enh);
        } else if (strcmp(name, "text") == 0) {
            if (cfgfile_copy_str(ld, s, key, text, sizeof text) < 0) return -1;
            text_s = s;
        } else if (strcmp(name, "action") == 0) {
            action = s;
        } else if (strcmp(name, "duration") == 0) {
            duration = s;
        } else if (strcmp(name, "message_rate") == 0) {
            rate = s;
        } else if (strcmp(name, "max_connections") == 0) {
            conn = s;
        } else {
            return cfgfile_fail(ld, s, key, "unknown key");
        }
    }
    if (resp->rule[0] == '\0') return cfgfile_fail(ld, g, pfx, "missing name");
    for (int i = 0; i < r->nresponses; i++)
        if (strcmp(r->responses[i].resp.rule, resp->rule) == 0)
            return cfgfile_fail(ld, g, pfx, "duplicate response rule name \"%s\"", resp->rule);

    cfgfile_key(key, sizeof key, pfx, "action");
    if (action == NULL) return cfgfile_fail(ld, g, key, "missing (none, suspend, backoff, bounce)");
    int a = config_setting_type(action) == CONFIG_TYPE_STRING
                ? shape_action_parse(config_setting_get_string(action))
                : -1;
    if (a < 0) return cfgfile_fail(ld, action, key, "must be none, suspend, backoff or bounce");
    resp->action = (enum SHAPE_ACTION)a;
    bool timed = resp->action == SHAPE_ACT_SUSPEND || resp->action == SHAPE_ACT_BACKOFF;

    cfgfile_key(key, sizeof key, pfx, "duration");
    if (timed && duration == NULL)
        return cfgfile_fail(ld, g, key, "missing (%s needs one)", shape_action_str(resp->action));
    if (!timed && duration != NULL)
        return cfgfile_fail(ld, duration, key, "only suspend and backoff take a duration");
    if (duration) {
        int64_t secs;
        if (shape_get_duration(ld, duration, key, false, &secs) < 0) return -1;
        resp->duration_ms = secs * 1000;
    }
    if (resp->action != SHAPE_ACT_BACKOFF && (rate || conn))
        return cfgfile_fail(
            ld, rate ? rate : conn,
            cfgfile_key(key, sizeof key, pfx, rate ? "message_rate" : "max_connections"),
            "only backoff takes message_rate and max_connections");
    if (rate) {
        double burst;
        cfgfile_key(key, sizeof key, pfx, "message_rate");
        if (shape_get_rate(ld, rate, key, &resp->rate, &burst) < 0) return -1;
    }
    if (conn) {
        long long v = 0;
        cfgfile_key(key, sizeof key, pfx, "max_connections");
        if (cfgfile_get_int(ld, conn, key, 1, SHAPE_CONN_MAX, &v) < 0) return -1;
        resp->max_connections = (int)v;
    }
    if (resp->action == SHAPE_ACT_BACKOFF && resp->rate == 0 && resp->max_connections == 0)
        return cfgfile_fail(ld, g, pfx, "backoff needs message_rate or max_connections");

    if (text[0]) {
        cfgfile_key(key, sizeof key, pfx, "text");
        int rc = regcomp(&rr->re, text, REG_EXTENDED | REG_ICASE | REG_NOSUB);
        if (rc != 0) {
            char why[128];
            regerror(rc, &rr->re, why, sizeof why);
            return cfgfile_fail(ld, text_s, key, "bad regular expression \"%.64s\": %s", text, why);
        }
        rr->has_re = true;
    }
    r->nresponses++; /* owns rr->re from here on */
    return 0;
}

/* shape_parse_each - run parse on each of the n entries of list s */
static int shape_parse_each(struct cfgfile_ld *ld, const config_setting_t *s, int n,
                            struct shape_rules *r,
                            int (*parse)(struct cfgfile_ld *, const config_setting_t *, int,
                                         struct shape_rules *))
{
    for (int i = 0; i < n; i++)
        if (parse(ld, config_setting_get_elem(s, (unsigned)i), i, r) < 0) return -1;
    return 0;
}

/* shape_default_source - the built-in source list: one "default", kernel's address */
static void shape_default_source(struct shape_rules *r)
{
    r->sources = xcalloc(1, sizeof(*r->sources));
    str_copy(r->sources[0].name, SHAPE_NAME_MAX, "default");
    r->nsources = 1;
}

/* shape_default_pool - the built-in pool list: "default" with every source, weight 1 */
static void shape_default_pool(struct shape_rules *r)
{
    r->pools = xcalloc(1, sizeof(*r->pools));
    str_copy(r->pools[0].name, SHAPE_NAME_MAX, "default");
    r->pools[0].members = xcalloc((size_t)r->nsources, sizeof(*r->pools[0].members));
    for (int i = 0; i < r->nsources; i++)
        r->pools[0].members[i] = (struct shape_pool_member){.source = i, .weight = 1};
    r->pools[0].nmembers = r->nsources;
    r->npools = 1;
}

/*
 * shape_load_root - the whole file: refuse unknown top-level keys, then read the
 * sections in dependency order (sources before pools before select) whatever
 * their order in the file.
 */
static int shape_load_root(struct cfgfile_ld *ld, const config_setting_t *root,
                           struct shape_rules *r)
{
    static const char *const known[] = {"recovery_step", "defaults", "rules", "sources",
                                        "pools",         "select",   "responses"};
    int n;
    if (cfgfile_known_keys(ld, root, known, ARRAY_LEN(known)) < 0) return -1;

    const config_setting_t *s;
    if ((s = config_setting_get_member(root, "recovery_step")) != NULL) {
        int64_t secs;
        if (shape_get_duration(ld, s, "recovery_step", false, &secs) < 0) return -1;
        r->recovery_step_ms = secs * 1000;
    }
    if ((s = config_setting_get_member(root, "defaults")) != NULL &&
        shape_parse_defaults(ld, s, r) < 0)
        return -1;
    if ((s = config_setting_get_member(root, "rules")) != NULL) {
        if ((n = cfgfile_list_len(ld, s, "rules", SHAPE_MAX_RULES)) < 0) return -1;
        r->rules = xcalloc(n > 0 ? (size_t)n : 1, sizeof(*r->rules));
        if (shape_parse_each(ld, s, n, r, shape_parse_rule) < 0) return -1;
    }
    if ((s = config_setting_get_member(root, "sources")) != NULL) {
        if ((n = cfgfile_list_len(ld, s, "sources", SHAPE_MAX_SOURCES)) < 0) return -1;
        if (n == 0) return cfgfile_fail(ld, s, "sources", "must list at least one source");
        r->sources = xcalloc((size_t)n, sizeof(*r->sources));
        if (shape_parse_each(ld, s, n, r, shape_parse_source) < 0) return -1;
    } else {
        shape_default_source(r);
    }
    if ((s = config_setting_get_member(root, "pools")) != NULL) {
        if ((n = cfgfile_list_len(ld, s, "pools", SHAPE_MAX_POOLS)) < 0) return -1;
        r->pools = xcalloc(n > 0 ? (size_t)n : 1, sizeof(*r->pools));
        if (shape_parse_each(ld, s, n, r, shape_parse_pool) < 0) return -1;
        const struct shape_pool *d = shape_pool_find(r, "default");
        if (d == NULL) return cfgfile_fail(ld, s, "pools", "no pool named \"default\"");
        r->default_pool = (int)(d - r->pools);
    } else {
        shape_default_pool(r);
        r->default_pool = 0;
    }
    if ((s = config_setting_get_member(root, "select")) != NULL) {
        if ((n = cfgfile_list_len(ld, s, "select", SHAPE_MAX_SELECT)) < 0) return -1;
        r->select = xcalloc(n > 0 ? (size_t)n : 1, sizeof(*r->select));
        if (shape_parse_each(ld, s, n, r, shape_parse_select) < 0) return -1;
    }
    if ((s = config_setting_get_member(root, "responses")) != NULL) {
        if ((n = cfgfile_list_len(ld, s, "responses", SHAPE_MAX_RESPONSES)) < 0) return -1;
        r->responses = xcalloc(n > 0 ? (size_t)n : 1, sizeof(*r->responses));
        if (shape_parse_each(ld, s, n, r, shape_parse_response) < 0) return -1;
    }
    return 0;
}

struct shape_rules *shape_rules_load(const char *path, char *err, size_t errlen)
{
    struct shape_rules *r = xcalloc(1, sizeof(*r));
    struct cfgfile_ld ld = {.path = path, .err = err, .errlen = errlen};
    config_t cfg;

    r->recovery_step_ms = SHAPE_DEF_RECOVERY_STEP * 1000;
    if (path == NULL || *path == '\0') {
        shape_default_source(r);
        shape_default_pool(r);
        return r;
    }
    if (cfgfile_read(&cfg, path, err, errlen) < 0) {
        shape_rules_free(r);
        return NULL;
    }
    int rc = shape_load_root(&ld, config_root_setting(&cfg), r);
    config_destroy(&cfg);
    if (rc < 0) {
        shape_rules_free(r);
        return NULL;
    }
    return r;
}

void shape_rules_free(struct shape_rules *r)
{
    if (r == NULL) return;
    for (int i = 0; i < r->nrules; i++)
        free(r->rules[i].match);
    free(r->rules);
    for (int i = 0; i < r->nsources; i++)
        free(r->sources[i].warmup_daily);
    free(r->sources);
    for (int i = 0; i < r->npools; i++)
        free(r->pools[i].members);
    free(r->pools);
    free(r->select);
    for (int i = 0; i < r->nresponses; i++)
        if (r->responses[i].has_re) regfree(&r->responses[i].re);
    free(r->responses);
    free(r);
}

/* ---- matching ----------------------------------------------------------------------- */

/* shape_domain_match - domain equals pat, or pat is "*.x" and domain ends in ".x" */
static bool shape_domain_match(const char *pat, const char *domain)
{
    if (strncmp(pat, "*.", 2) != 0) return strcasecmp(pat, domain) == 0;
    size_t sl = strlen(pat + 1), dl = strlen(domain);
    return dl > sl && strcasecmp(domain + dl - sl, pat + 1) == 0;
}

/* shape_mx_match - any MX host matches the glob (case-insensitive; a trailing dot
 * of the host is ignored) */
static bool shape_mx_match(const char *pat, const char *const *mx, int nmx)
{
    char host[256];
    for (int i = 0; i < nmx; i++) {
        if (mx[i] == NULL) continue;
        size_t n = strlen(mx[i]);
        if (n > 0 && mx[i][n - 1] == '.') n--;
        if (n == 0 || n >= sizeof host) continue;
        memcpy(host, mx[i], n);
        host[n] = '\0';
        if (fnmatch(pat, host, FNM_CASEFOLD) == 0) return true;
    }
    return false;
}

/* shape_rule_matches - a match entry of class kind in rule matches the destination */
static bool shape_rule_matches(const struct shape_rule *rule, enum SHAPE_MATCH_KIND kind,
                               const char *domain, const char *site, const char *const *mx,
                               int nmx)
{
    for (int i = 0; i < rule->nmatch; i++) {
        const struct shape_match_entry *e = &rule->match[i];
        if (e->kind != kind) continue;
        if (kind == SHAPE_M_DOMAIN && domain && shape_domain_match(e->pat, domain)) return true;
        if (kind == SHAPE_M_SITE && site && strcmp(e->pat, site) == 0) return true;
        if (kind == SHAPE_M_MX && mx && shape_mx_match(e->pat, mx, nmx)) return true;
    }
    return false;
}

/*
 * shape_match - per class (mx, site, domain) the first rule in file order with a
 * matching entry of that class; lay them over the defaults from least to most
 * specific.  One rule may win several classes (gmail's mx: and domain: entries);
 * laying it twice changes nothing.
 */
void shape_match(const struct shape_rules *r, const char *domain, const char *site,
                 const char *const *mx_hosts, int nmx, struct shape_limits *out)
{
    assert(r != NULL && out != NULL);
    memset(out, 0, sizeof(*out));
    str_copy(out->rule, sizeof out->rule, "default");
    out->max_connections = SHAPE_DEF_MAX_CONN;
    out->max_messages_per_connection = SHAPE_DEF_MSGS_PER_CONN;
    out->max_recipients_per_transaction = SHAPE_DEF_RCPTS_PER_TXN;
    out->recovery_step_ms = r->recovery_step_ms;
    shape_layer_apply(out, &r->defaults);
    for (int kind = SHAPE_M_MX; kind < SHAPE_M_NKINDS; kind++) {
        for (int i = 0; i < r->nrules; i++) {
            const struct shape_rule *rule = &r->rules[i];
            if (!shape_rule_matches(rule, (enum SHAPE_MATCH_KIND)kind, domain, site, mx_hosts,
                                    nmx))
                continue;
            shape_layer_apply(out, &rule->lim);
            str_copy(out->rule, sizeof out->rule, rule->name);
            break;
        }
    }
}

int shape_nsources(const struct shape_rules *r)
{
    return r->nsources;
}

const struct shape_source *shape_source(const struct shape_rules *r, int i)
{
    return i >= 0 && i < r->nsources ? &r->sources[i] : NULL;
}

int shape_source_find(const struct shape_rules *r, const char *name)
{
    for (int i = 0; i < r->nsources; i++)
        if (strcmp(r->sources[i].name, name) == 0) return i;
    return -1;
}

const struct shape_pool *shape_pool_find(const struct shape_rules *r, const char *name)
{
    if (name == NULL) return NULL;
    for (int i = 0; i < r->npools; i++)
        if (strcmp(r->pools[i].name, name) == 0) return &r->pools[i];
    return NULL;
}

/*
 * shape_pool_for - campaign globs are case-sensitive (they are ids); sender domain
 * globs are not.  An entry naming a campaign never matches a message without one.
 */
const struct shape_pool *shape_pool_for(const struct shape_rules *r, const char *header_pool,
                                        const char *campaign, const char *sender_domain)
{
    if (header_pool && *header_pool) {
        const struct shape_pool *p = shape_pool_find(r, header_pool);
        if (p) return p;
    }
    for (int i = 0; i < r->nselect; i++) {
        const struct shape_select *sel = &r->select[i];
        if (sel->campaign[0] &&
            (campaign == NULL || *campaign == '\0' || fnmatch(sel->campaign, campaign, 0) != 0))
            continue;
        if (sel->sender_domain[0] &&
            (sender_domain == NULL || *sender_domain == '\0' ||
             fnmatch(sel->sender_domain, sender_domain, FNM_CASEFOLD) != 0))
            continue;
        return &r->pools[sel->pool];
    }
    return &r->pools[r->default_pool];
}

int64_t shape_warmup_cap(const struct shape_source *src, int64_t now_ms)
{
    if (src == NULL || src->warmup_start_ms == 0 || src->nwarmup <= 0) return -1;
    int64_t day = shape_floor_div(now_ms - src->warmup_start_ms, SHAPE_DAY_MS);
    if (day < 0) day = 0;
    if (day >= src->nwarmup) return -1;
    return src->warmup_daily[day];
}

/* ---- response rules ----------------------------------------------------------------- */

const char *shape_action_str(enum SHAPE_ACTION a)
{
    switch (a) {
    case SHAPE_ACT_NONE:
        return "none";
    case SHAPE_ACT_SUSPEND:
        return "suspend";
    case SHAPE_ACT_BACKOFF:
        return "backoff";
    case SHAPE_ACT_BOUNCE:
        return "bounce";
    }
    return "?";
}

/* shape_enh_prefix - reply status enh starts with the rule's prefix at a part
 * boundary ("4.7" matches "4.7.28", not "4.70.1") */
static bool shape_enh_prefix(const char *prefix, const char *enh)
{
    if (*prefix == '\0') return true;
    if (enh == NULL) return false;
    size_t n = strlen(prefix);
    return strncmp(prefix, enh, n) == 0 && (enh[n] == '\0' || enh[n] == '.');
}

bool shape_response_match(const struct shape_rules *r, int code, const char *enh,
                          const char *text, struct shape_response *out)
{
    for (int i = 0; i < r->nresponses; i++) {
        const struct shape_resp_rule *rr = &r->responses[i];
        if (rr->code != 0 && rr->code != code) continue;
        if (!shape_enh_prefix(rr->enh, enh)) continue;
        if (rr->has_re && regexec(&rr->re, text ? text : "", 0, NULL, 0) != 0) continue;
        if (out) *out = rr->resp;
        return true;
    }
    if (out) memset(out, 0, sizeof(*out));
    return false;
}

/* ---- token bucket ------------------------------------------------------------------- */

/* shape_bucket_fix_burst - a limited bucket holds at least one token, or it would
 * never give one */
static double shape_bucket_fix_burst(double rate, double burst)
{
    return rate > 0 && burst < 1.0 ? 1.0 : burst;
}

/* shape_bucket_refill - add the tokens earned since last_ms (time never runs back) */
static void shape_bucket_refill(struct shape_bucket *b, int64_t now_ms)
{
    if (now_ms <= b->last_ms) return;
    if (b->rate > 0) {
        b->tokens += (double)(now_ms - b->last_ms) * b->rate / 1000.0;
        if (b->tokens > b->burst) b->tokens = b->burst;
    }
    b->last_ms = now_ms;
}

void shape_bucket_init(struct shape_bucket *b, double rate, double burst, int64_t now_ms)
{
    b->rate = rate > 0 ? rate : 0;
    b->burst = shape_bucket_fix_burst(b->rate, burst);
    b->tokens = b->burst;
    b->last_ms = now_ms;
}

/* shape_bucket_set - an unlimited bucket counts as full, so a limit that appears
 * starts with a whole burst */
void shape_bucket_set(struct shape_bucket *b, double rate, double burst, int64_t now_ms)
{
    bool was_unlimited = b->rate <= 0;
    shape_bucket_refill(b, now_ms);
    b->rate = rate > 0 ? rate : 0;
    b->burst = shape_bucket_fix_burst(b->rate, burst);
    if (was_unlimited) b->tokens = b->burst;
    if (b->tokens > b->burst) b->tokens = b->burst;
}

bool shape_bucket_take(struct shape_bucket *b, int64_t now_ms)
{
    if (b->rate <= 0) return true;
    shape_bucket_refill(b, now_ms);
    if (b->tokens + SHAPE_TOKEN_EPS < 1.0) return false;
    b->tokens -= 1.0;
    if (b->tokens < 0) b->tokens = 0;
    return true;
}

int64_t shape_bucket_wait_ms(const struct shape_bucket *b, int64_t now_ms)
{
    if (b->rate <= 0) return 0;
    double t = b->tokens;
    if (now_ms > b->last_ms) t += (double)(now_ms - b->last_ms) * b->rate / 1000.0;
    if (t > b->burst) t = b->burst;
    if (t + SHAPE_TOKEN_EPS >= 1.0) return 0;
    int64_t w = shape_ceil_ms((1.0 - t) * 1000.0 / b->rate);
    return w > 0 ? w : 1;
}

/* ---- the adaptive state of one (source, site) pair ---------------------------------- */

/*
 * Modes: NORMAL runs at the limits.  A response rule moves the pair to BACKOFF
 * (lowered rate and connections) or SUSPENDED (nothing) until until_ms; when that
 * passes, shape_state_tick() moves it to RECOVERING at 1/8 of the limits, doubling
 * every recovery step, and to NORMAL once the share reaches 1 -- a receiver that
 * just throttled us should not see the full rate the second it ends.  Independently
 * the concurrency window halves on each failure and grows by 1/window on each
 * success (Postfix's feedback), so connections open slowly after trouble.
 *
 * Warm-up caps are not counted here: they hold per (source, site class) across every
 * site and worker, so the count lives in warmup.c.
 */

const char *shape_mode_str(enum SHAPE_MODE m)
{
    switch (m) {
    case SHAPE_NORMAL:
        return "normal";
    case SHAPE_BACKOFF:
        return "backoff";
    case SHAPE_SUSPENDED:
        return "suspended";
    case SHAPE_RECOVERING:
        return "recovering";
    }
    return "?";
}

/* shape_scaled_burst - the burst for a rate below the normal one: one second's
 * worth, no more than the normal burst, at least 1 */
static double shape_scaled_burst(double rate, double normal_rate, double normal_burst)
{
    if (rate <= 0 || rate == normal_rate) return normal_burst;
    double b = rate;
    if (normal_burst > 0 && b > normal_burst) b = normal_burst;
    return b < 1.0 ? 1.0 : b;
}

/* shape_state_conn_rate - the connection rate in force: scaled while recovering */
static double shape_state_conn_rate(const struct shape_state *st, const struct shape_limits *lim)
{
    if (st->mode == SHAPE_RECOVERING) return lim->connection_rate * st->recover_factor;
    return lim->connection_rate;
}

/* shape_state_sync - point both buckets at the rates the mode allows, keeping tokens */
static void shape_state_sync(struct shape_state *st, const struct shape_limits *lim,
                             int64_t now_ms)
{
    double mr = shape_state_rate(st, lim);
    double cr = shape_state_conn_rate(st, lim);
    shape_bucket_set(&st->msg_bucket, mr,
                     shape_scaled_burst(mr, lim->message_rate, lim->message_burst), now_ms);
    shape_bucket_set(&st->conn_bucket, cr,
                     shape_scaled_burst(cr, lim->connection_rate, lim->connection_burst), now_ms);
}

/* shape_state_clear - back to NORMAL bookkeeping (the caller sets the mode) */
static void shape_state_clear(struct shape_state *st)
{
    st->until_ms = 0;
    st->backoff_rate = 0;
    st->backoff_conn = 0;
    st->recover_factor = 1.0;
    st->next_step_ms = 0;
}

void shape_state_init(struct shape_state *st, const struct shape_limits *lim, int64_t now_ms)
{
    memset(st, 0, sizeof(*st));
    st->mode = SHAPE_NORMAL;
    st->recover_factor = 1.0;
    st->window = lim->max_connections > 0 ? lim->max_connections : 1;
    shape_bucket_init(&st->msg_bucket, lim->message_rate, lim->message_burst, now_ms);
    shape_bucket_init(&st->conn_bucket, lim->connection_rate, lim->connection_burst, now_ms);
}

/* shape_state_limits_changed - the window is capped at the new limit (it grows back
 * by successes if the limit rose); buckets take the new rates, keeping tokens */
void shape_state_limits_changed(struct shape_state *st, const struct shape_limits *lim,
                                int64_t now_ms)
{
    double max = lim->max_connections > 0 ? lim->max_connections : 1;
    if (st->window > max) st->window = max;
    if (st->window < 1) st->window = 1;
    shape_state_sync(st, lim, now_ms);
}

/*
 * shape_state_tick - a suspension that ends INT64_MAX (by hand, no end) never ends
 * here.  Recovery steps are counted from the step's schedule, not from when tick
 * happens to run, so a late tick catches up on every step that passed.
 */
enum SHAPE_EVENT shape_state_tick(struct shape_state *st, const struct shape_limits *lim,
                                  int64_t now_ms)
{
    enum SHAPE_EVENT ev = SHAPE_EV_NONE;
    int64_t step = lim->recovery_step_ms;

    if ((st->mode == SHAPE_BACKOFF || st->mode == SHAPE_SUSPENDED) &&
        st->until_ms != INT64_MAX && now_ms >= st->until_ms) {
        shape_state_clear(st);
        if (step > 0) {
            st->mode = SHAPE_RECOVERING;
            st->recover_factor = SHAPE_RECOVERY_START;
            st->next_step_ms = shape_add_ms(now_ms, step);
        } else {
            st->mode = SHAPE_NORMAL;
        }
        ev = SHAPE_EV_RESUME;
    }
    if (st->mode == SHAPE_RECOVERING) {
        while (st->recover_factor < 1.0 && step > 0 && now_ms >= st->next_step_ms) {
            st->recover_factor *= 2;
            st->next_step_ms = shape_add_ms(st->next_step_ms, step);
        }
        if (st->recover_factor >= 1.0 || step <= 0) {
            shape_state_clear(st);
            st->mode = SHAPE_NORMAL;
            st->why_rule[0] = '\0';
        }
    }
    shape_state_sync(st, lim, now_ms);
    return ev;
}

/*
 * shape_state_apply - SUSPEND: suspended until now + duration; over a suspension or
 * backoff that ends later, the later end wins.  BACKOFF: over NORMAL or RECOVERING
 * it starts a backoff with the rule's limits; over a backoff each limit and the end
 * become the stricter/later of the two; over a suspension the pair stays suspended
 * and only the end can move later.  NONE when nothing changed.
 */
enum SHAPE_EVENT shape_state_apply(struct shape_state *st, const struct shape_limits *lim,
                                   const struct shape_response *resp, int64_t now_ms)
{
    if (resp == NULL) return SHAPE_EV_NONE;
    int64_t until = shape_add_ms(now_ms, resp->duration_ms > 0 ? resp->duration_ms : 0);

    switch (resp->action) {
    case SHAPE_ACT_SUSPEND:
        if (st->mode == SHAPE_SUSPENDED) {
            if (until <= st->until_ms) return SHAPE_EV_NONE;
        } else if (st->mode == SHAPE_BACKOFF && st->until_ms > until) {
            until = st->until_ms;
        }
        shape_state_clear(st);
        st->mode = SHAPE_SUSPENDED;
        st->until_ms = until;
        str_copy(st->why_rule, sizeof st->why_rule, resp->rule);
        shape_state_sync(st, lim, now_ms);
        return SHAPE_EV_SUSPEND;

    case SHAPE_ACT_BACKOFF:
        if (st->mode == SHAPE_SUSPENDED) {
            if (until <= st->until_ms) return SHAPE_EV_NONE;
            st->until_ms = until;
            str_copy(st->why_rule, sizeof st->why_rule, resp->rule);
            return SHAPE_EV_SUSPEND;
        }
        if (st->mode == SHAPE_BACKOFF) {
            bool changed = false;
            if (until > st->until_ms) {
                st->until_ms = until;
                changed = true;
            }
            if (resp->rate > 0 && (st->backoff_rate <= 0 || resp->rate < st->backoff_rate)) {
                st->backoff_rate = resp->rate;
                changed = true;
            }
            if (resp->max_connections > 0 &&
                (st->backoff_conn <= 0 || resp->max_connections < st->backoff_conn)) {
                st->backoff_conn = resp->max_connections;
                changed = true;
            }
            if (!changed) return SHAPE_EV_NONE;
        } else {
            shape_state_clear(st);
            st->mode = SHAPE_BACKOFF;
            st->until_ms = until;
            st->backoff_rate = resp->rate > 0 ? resp->rate : 0;
            st->backoff_conn = resp->max_connections > 0 ? resp->max_connections : 0;
        }
        str_copy(st->why_rule, sizeof st->why_rule, resp->rule);
        shape_state_sync(st, lim, now_ms);
        return SHAPE_EV_BACKOFF;

    case SHAPE_ACT_NONE:
    case SHAPE_ACT_BOUNCE:
        break;
    }
    return SHAPE_EV_NONE;
}

/* shape_state_suspend - by hand: the operator's end replaces any other (INT64_MAX =
 * until resumed by hand); why NULL logs as "manual" */
void shape_state_suspend(struct shape_state *st, int64_t until_ms, const char *why)
{
    shape_state_clear(st);
    st->mode = SHAPE_SUSPENDED;
    st->until_ms = until_ms;
    str_copy(st->why_rule, sizeof st->why_rule, why && *why ? why : "manual");
}

void shape_state_resume(struct shape_state *st, const struct shape_limits *lim, int64_t now_ms)
{
    shape_state_clear(st);
    st->mode = SHAPE_NORMAL;
    st->why_rule[0] = '\0';
    shape_state_sync(st, lim, now_ms);
}

int shape_state_max_conn(const struct shape_state *st, const struct shape_limits *lim,
                         int64_t now_ms)
{
    int limit = lim->max_connections > 0 ? lim->max_connections : 1;
    int n = limit;

    switch (st->mode) {
    case SHAPE_SUSPENDED:
        return 0;
    case SHAPE_BACKOFF:
        if (st->backoff_conn > 0 && st->backoff_conn < limit) n = st->backoff_conn;
        break;
    case SHAPE_RECOVERING:
        n = (int)(st->recover_factor * limit);
        if (n < 1) n = 1;
        break;
    case SHAPE_NORMAL:
        break;
    }
    int w = (int)st->window;
    if (w < 1) w = 1;
    return n < w ? n : w;
}

/* shape_state_rate - while suspended nothing goes, and the rate shown is the normal
 * one; a backoff rate never raises a lower normal rate */
double shape_state_rate(const struct shape_state *st, const struct shape_limits *lim)
{
    double base = lim->message_rate > 0 ? lim->message_rate : 0;
    switch (st->mode) {
    case SHAPE_BACKOFF:
        if (st->backoff_rate > 0 && (base == 0 || st->backoff_rate < base)) return st->backoff_rate;
        return base;
    case SHAPE_RECOVERING:
        return base * st->recover_factor;
    case SHAPE_NORMAL:
    case SHAPE_SUSPENDED:
        break;
    }
    return base;
}

/* shape_state_until_wait - how long a suspension still holds: INT64_MAX for one
 * without an end, 0 when its end passed and the caller has not ticked yet */
static int64_t shape_state_until_wait(const struct shape_state *st, int64_t now_ms)
{
    if (st->until_ms == INT64_MAX) return INT64_MAX;
    return st->until_ms > now_ms ? st->until_ms - now_ms : 0;
}

bool shape_state_may_connect(struct shape_state *st, int64_t now_ms, int64_t *wait_ms)
{
    int64_t w = 0;
    bool ok = false;

    if (st->mode == SHAPE_SUSPENDED)
        w = shape_state_until_wait(st, now_ms);
    else if (shape_bucket_take(&st->conn_bucket, now_ms))
        ok = true;
    else
        w = shape_bucket_wait_ms(&st->conn_bucket, now_ms);
    if (wait_ms) *wait_ms = w;
    return ok;
}

bool shape_state_may_send(struct shape_state *st, int64_t now_ms, int64_t *wait_ms)
{
    int64_t w = 0;
    bool ok = false;

    if (st->mode == SHAPE_SUSPENDED)
        w = shape_state_until_wait(st, now_ms);
    else if (shape_bucket_take(&st->msg_bucket, now_ms))
        ok = true;
    else
        w = shape_bucket_wait_ms(&st->msg_bucket, now_ms);
    if (wait_ms) *wait_ms = w;
    return ok;
}

void shape_state_success(struct shape_state *st, const struct shape_limits *lim)
{
    double max = lim->max_connections > 0 ? lim->max_connections : 1;
    if (st->window < 1) st->window = 1;
    st->window += 1.0 / st->window;
    if (st->window > max) st->window = max;
    st->fail_streak = 0;
}

void shape_state_failure(struct shape_state *st)
{
    st->window /= 2;
    if (st->window < 1) st->window = 1;
    st->fail_streak++;
}
