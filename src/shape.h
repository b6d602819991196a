/*
 * shape - traffic shaping policy: the rules file (per-destination limits, source
 * addresses and pools, warm-up schedules, response rules), token buckets, and the
 * adaptive state of one (source, site) pair (backoff, suspension, concurrency
 * window).
 *
 * Policy only: no sockets, no event loop, no clock of its own (every call takes
 * now_ms), so it is unit-tested with made-up time (tests/unit/test_shape.c).  The
 * scheduler (sched_) asks it what a destination may take and tells it what
 * happened; it decides.  A loaded rule set is immutable; SIGHUP loads a new one
 * and the scheduler swaps it in, keeping each pair's state.
 *
 * Anchors: PowerMTA's domain directives and backoff mode, KumoMTA's traffic shaping
 * automation (rules matched by domain, site or MX pattern; response rules that
 * suspend or throttle a pair for a time), Postfix's concurrency feedback (a window
 * that shrinks on failures and grows back slowly on successes).
 */
#ifndef VOLLEY_SHAPE_H
#define VOLLEY_SHAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHAPE_NAME_MAX  64
#define SHAPE_RETRY_MAX 16

/* ---- limits ------------------------------------------------------------------------ */

/*
 * The effective limits for one destination, from the most specific matching rule
 * merged over the less specific ones (domain > site > MX pattern > default; keys a
 * rule leaves out come from the next one down, and finally from the built-in
 * defaults below).  0 means "no limit" for rates.
 */
struct shape_limits {
    char rule[SHAPE_NAME_MAX]; /* name of the most specific rule that matched; also the
                                  "site class" warm-up caps are counted in */
    int max_connections;        /* per (source, site); default 20 */
    int max_connections_site;   /* per site over all sources; default 0 = no extra cap */
    int max_messages_per_connection; /* default 100 */
    int max_recipients_per_transaction; /* default 100 */
    double message_rate;        /* messages per second per (source, site); 0 = unlimited */
    double message_burst;       /* bucket size in messages (default: max(1, one second's
                                   worth, capped at 1/10 of the period's count)) */
    double connection_rate;     /* new connections per second per (source, site) */
    double connection_burst;
    double message_rate_site;   /* messages per second to the site over all sources;
                                   0 = no site-wide rate (pairs' rates only) */
    double message_burst_site;
    double connection_rate_site; /* new connections per second to the site, all sources */
    double connection_burst_site;
    int64_t retry[SHAPE_RETRY_MAX]; /* seconds; nretry 0 = the delivery.* default */
    int nretry;
    int64_t max_age;            /* seconds; 0 = the delivery.* default */
    int64_t recovery_step_ms;   /* the rules file's recovery_step (shape_state_tick) */
};

/* ---- the rules file ---------------------------------------------------------------- */

struct shape_source {
    char name[SHAPE_NAME_MAX];
    char address[64];      /* local IPv4/IPv6 address to bind */
    char ehlo[256];        /* EHLO name; "" = delivery.helo_name */
    int64_t warmup_start_ms; /* 0 = no warm-up */
    int64_t *warmup_daily; /* messages per day per site class, by day since start;
                              the schedule ends after nwarmup days (no cap after) */
    int nwarmup;
};

struct shape_pool_member {
    int source; /* index into the rule set's sources */
    int weight; /* > 0 */
};

struct shape_pool {
    char name[SHAPE_NAME_MAX];
    struct shape_pool_member *members;
    int nmembers;
};

struct shape_rules;

/*
 * shape_rules_load - read a rules file (libconfig syntax; format in
 * conf/shaping.conf).  NULL with a "file:line: what" message in err when it cannot
 * be read or is invalid (unknown key, bad rate, unknown source in a pool, bad
 * regex, ...).  path NULL or "" gives the built-in defaults only: one source
 * "default" (address "", ehlo ""), one pool "default" with it, no response rules.
 */
struct shape_rules *shape_rules_load(const char *path, char *err, size_t errlen);
void shape_rules_free(struct shape_rules *r);

/*
 * shape_match - the limits for a destination: recipient domain (lower case), site
 * name, and the MX host names of its route (any of them may match an "mx:" rule).
 */
void shape_match(const struct shape_rules *r, const char *domain, const char *site,
                 const char *const *mx_hosts, int nmx, struct shape_limits *out);

int shape_nsources(const struct shape_rules *r);
const struct shape_source *shape_source(const struct shape_rules *r, int i);
int shape_source_find(const struct shape_rules *r, const char *name); /* -1 if none */

/*
 * shape_pool_for - the pool a message uses: the X-Volley-Pool header value if
 * given and known, else the first "select" entry matching its campaign or sender
 * domain (glob patterns), else the pool named "default" (always exists).
 */
const struct shape_pool *shape_pool_for(const struct shape_rules *r, const char *header_pool,
                                        const char *campaign, const char *sender_domain);
const struct shape_pool *shape_pool_find(const struct shape_rules *r, const char *name);

/*
 * shape_warmup_cap - messages source may send today to one site class (UTC days
 * since its warm-up start; day 0 is the start day); -1 when not capped (no
 * warm-up, before-start counts as day 0, after the schedule ends).
 */
int64_t shape_warmup_cap(const struct shape_source *src, int64_t now_ms);

/* ---- response rules ---------------------------------------------------------------- */

enum SHAPE_ACTION {
    SHAPE_ACT_NONE,
    SHAPE_ACT_SUSPEND, /* no new connections or messages for the pair until then */
    SHAPE_ACT_BACKOFF, /* the pair's rate and connection limits drop to given values */
    SHAPE_ACT_BOUNCE,  /* the recipient fails permanently (a 4xx that means 5xx) */
};
const char *shape_action_str(enum SHAPE_ACTION a);

struct shape_response {
    char rule[SHAPE_NAME_MAX]; /* the response rule's name, for the log */
    enum SHAPE_ACTION action;
    int64_t duration_ms;       /* SUSPEND, BACKOFF */
    double rate;               /* BACKOFF: messages per second; 0 = leave the rate */
    int max_connections;       /* BACKOFF: 0 = leave the connection limit */
};

/*
 * shape_response_match - the first response rule (in file order) matching a reply:
 * code (0 in a rule = any), enhanced status prefix ("" = any; "4.7" matches
 * "4.7.28"), and an extended POSIX regex over the text (case-insensitive; "" =
 * any).  Connection failures are passed as code 0 with their diagnostic text.
 */
bool shape_response_match(const struct shape_rules *r, int code, const char *enh,
                          const char *text, struct shape_response *out);

/* ---- token bucket ------------------------------------------------------------------ */

struct shape_bucket {
    double rate;   /* tokens per second; 0 = unlimited */
    double burst;  /* capacity */
    double tokens;
    int64_t last_ms;
};
void shape_bucket_init(struct shape_bucket *b, double rate, double burst, int64_t now_ms);
/* shape_bucket_set - new rate/burst, keeping the tokens (capped at the new burst) */
void shape_bucket_set(struct shape_bucket *b, double rate, double burst, int64_t now_ms);
/* shape_bucket_take - take one token if there is one */
bool shape_bucket_take(struct shape_bucket *b, int64_t now_ms);
/* shape_bucket_wait_ms - ms until a token will be there (0 if now) */
int64_t shape_bucket_wait_ms(const struct shape_bucket *b, int64_t now_ms);

/* ---- the adaptive state of one (source, site) pair --------------------------------- */

enum SHAPE_MODE { SHAPE_NORMAL, SHAPE_BACKOFF, SHAPE_SUSPENDED, SHAPE_RECOVERING };
const char *shape_mode_str(enum SHAPE_MODE m);

struct shape_state {
    enum SHAPE_MODE mode;
    int64_t until_ms;       /* BACKOFF, SUSPENDED: when it ends */
    char why_rule[SHAPE_NAME_MAX]; /* the response rule that put it there */
    double backoff_rate;    /* BACKOFF: the lowered limits (0 = unchanged) */
    int backoff_conn;
    double recover_factor;  /* RECOVERING: share of the normal limits now allowed,
                               doubling every recovery step until 1 (then NORMAL) */
    int64_t next_step_ms;
    double window;          /* concurrency window (connections), 1 .. max_connections */
    int fail_streak;
    struct shape_bucket msg_bucket, conn_bucket;
};

/* transitions shape_state_tick and shape_state_apply report, for the log */
enum SHAPE_EVENT { SHAPE_EV_NONE, SHAPE_EV_BACKOFF, SHAPE_EV_SUSPEND, SHAPE_EV_RESUME };

void shape_state_init(struct shape_state *st, const struct shape_limits *lim, int64_t now_ms);
/* shape_state_limits_changed - after a reload: buckets and window follow new limits */
void shape_state_limits_changed(struct shape_state *st, const struct shape_limits *lim,
                                int64_t now_ms);
/* shape_state_tick - time passes: a backoff or suspension that ended starts
 * recovering (SHAPE_EV_RESUME), recovery steps up; returns the event */
enum SHAPE_EVENT shape_state_tick(struct shape_state *st, const struct shape_limits *lim,
                                  int64_t now_ms);
/* shape_state_apply - a response rule fired (SUSPEND or BACKOFF; others ignored);
 * a longer or stricter one wins over the current one */
enum SHAPE_EVENT shape_state_apply(struct shape_state *st, const struct shape_limits *lim,
                                   const struct shape_response *resp, int64_t now_ms);
/* shape_state_suspend / resume - by hand (volleyctl); resume goes straight to NORMAL */
void shape_state_suspend(struct shape_state *st, int64_t until_ms, const char *why);
void shape_state_resume(struct shape_state *st, const struct shape_limits *lim, int64_t now_ms);

/* connections the pair may have open now (0 while suspended): the smaller of the
 * limit (lowered in backoff, scaled while recovering) and the window */
int shape_state_max_conn(const struct shape_state *st, const struct shape_limits *lim,
                         int64_t now_ms);
/* the message rate in force now (0 = unlimited) */
double shape_state_rate(const struct shape_state *st, const struct shape_limits *lim);

/* may a new connection / a new message go now?  (take a token when true); when
 * false, *wait_ms says how long until it could (INT64_MAX while suspended until
 * the suspension's end is known: until_ms - now).  Warm-up caps are counted
 * elsewhere (warmup.h): they span every site of a class. */
bool shape_state_may_connect(struct shape_state *st, int64_t now_ms, int64_t *wait_ms);
bool shape_state_may_send(struct shape_state *st, int64_t now_ms, int64_t *wait_ms);

/* feedback: a transaction got a 2xx (window grows by 1/window, up to the limit);
 * a connection failed or the server said 421 (window halves, at least 1) */
void shape_state_success(struct shape_state *st, const struct shape_limits *lim);
void shape_state_failure(struct shape_state *st);

#endif
