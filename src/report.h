/*
 * report - deliverability reports from the accounting log (`volleyctl report`).
 *
 * Owns: reading accounting.log records (one JSON object a line, README "Logs"),
 * aggregating them into totals and per-group counters (by domain, bounce category,
 * campaign or source), counting the most frequent bounce diagnostics per category,
 * flagging campaigns, domains and the total that cross mailbox-provider complaint
 * and bounce thresholds, and writing the result as a table, CSV or one JSON
 * document.  It works on files alone: no daemon, no spool.
 *
 * Entry points: report_cli() for the command line; report_new(), report_feed_line(),
 * report_feed_fd(), report_write() and report_free() for the engine, which the unit
 * tests drive line by line.
 *
 * Invariants:
 *   - memory is bounded whatever the log size: input streams through one fixed
 *     buffer, lines longer than REPORT_LINE_MAX are skipped, each group table holds
 *     at most max_groups keys (the rest add up in an "(other)" row), and each bounce
 *     category keeps a fixed-capacity top-k counter of diagnostics;
 *   - the result does not depend on which parser read a line: the fast scanner
 *     accepts only lines it understands completely and hands every other line to
 *     jansson, and both produce the same field views.
 */
#ifndef VOLLEY_REPORT_H
#define VOLLEY_REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define REPORT_LINE_MAX           ((size_t)1 << 20) /* longer lines are skipped */
#define REPORT_MAX_GROUPS         100000            /* default distinct keys per table */
#define REPORT_TOPK_CAPACITY      1000              /* default diagnostics tracked per category */
#define REPORT_DIAG_MAX           200               /* normalised diagnostic length, bytes */
#define REPORT_KEY_MAX            255               /* group keys are cut to this many bytes */
#define REPORT_DEFAULT_TOP        5
#define REPORT_DEFAULT_MIN_VOLUME 100

enum REPORT_FORMAT { REPORT_FORMAT_TABLE, REPORT_FORMAT_CSV, REPORT_FORMAT_JSON };

enum REPORT_BY {
    REPORT_BY_NONE,
    REPORT_BY_DOMAIN,
    REPORT_BY_CATEGORY,
    REPORT_BY_CAMPAIGN,
    REPORT_BY_SOURCE,
};

/* Which parser reads a line (tests compare them). */
enum REPORT_PARSER {
    REPORT_PARSER_AUTO,    /* fast scanner, jansson for what it declines */
    REPORT_PARSER_JANSSON, /* jansson for every line */
};

/* report_format_str - "table", "csv", "json" */
const char *report_format_str(enum REPORT_FORMAT f);
/* report_by_str - "none", "domain", "category", "campaign", "source" */
const char *report_by_str(enum REPORT_BY by);
/* report_parser_str - "auto", "jansson" */
const char *report_parser_str(enum REPORT_PARSER p);

/*
 * What to count.  Zero-initialised options mean: every record, no grouping, the
 * defaults above.  campaign is borrowed and must outlive the report.
 */
struct report_opts {
    enum REPORT_BY by;
    const char *campaign; /* only this campaign; NULL = all */
    int has_since, has_until;
    int64_t since_ms;     /* records with ts >= since (ms since the epoch) */
    int64_t until_ms;     /* ... and ts < until */
    size_t top;           /* diagnostics shown per category; 0 = REPORT_DEFAULT_TOP */
    uint64_t min_volume;  /* warnings need this many sent; 0 = REPORT_DEFAULT_MIN_VOLUME */
    int min_volume_set;   /* min_volume 0 was meant literally */
    size_t max_groups;    /* 0 = REPORT_MAX_GROUPS */
    size_t topk_capacity; /* 0 = REPORT_TOPK_CAPACITY */
    enum REPORT_PARSER parser;
};

/* What the reader saw (for tests and the stderr summary). */
struct report_stats {
    uint64_t lines;    /* non-blank lines read */
    uint64_t skipped;  /* not a JSON object, or too long */
    uint64_t too_long; /* of skipped: longer than REPORT_LINE_MAX */
    uint64_t fast;     /* lines the fast scanner read */
    uint64_t fallback; /* lines handed to jansson */
    uint64_t counted;  /* records that passed the filters and had a known type */
    uint64_t overflow; /* records that went to "(other)" because a table was full */
};

struct report;

/* report_new - an empty report counting by opts (copied); caller frees with report_free */
struct report *report_new(const struct report_opts *opts);
/* report_free - release r and everything it owns; NULL is fine */
void report_free(struct report *r);

/*
 * report_feed_line - count one log line of len bytes (no newline needed; a trailing
 * CR or LF is ignored).  line need not be NUL-terminated.  Returns 0; -1 only when
 * the line was skipped as not a JSON object or too long.
 */
int report_feed_line(struct report *r, const char *line, size_t len);

/* report_feed_fd - read fd to its end, line by line; 0, or -1 with errno on a read error */
int report_feed_fd(struct report *r, int fd);

/* report_write - the report in format f to out; 0, or -1 if out failed */
int report_write(struct report *r, enum REPORT_FORMAT f, FILE *out);

/* report_stats_get - the reader's counters */
void report_stats_get(const struct report *r, struct report_stats *st);

/*
 * report_time_parse - an RFC 3339 time ("2026-12-01T00:00:00Z", fraction and
 * offset allowed), a date ("2026-12-01", midnight UTC) or a relative age ("90m",
 * "24h", "7d", also "s" and "w": now_ms minus that) into *ms.  0 or -1.
 */
int report_time_parse(const char *s, int64_t now_ms, int64_t *ms);

/*
 * report_normalise_diag - the counting form of a diagnostic: addresses become
 * "<addr>", long digit or hex runs "#", whitespace runs one space, cut to
 * REPORT_DIAG_MAX bytes on a UTF-8 boundary.  Writes into out (size >=
 * REPORT_DIAG_MAX + 1), returns the length.
 */
size_t report_normalise_diag(const char *in, size_t n, char *out);

/*
 * report_cli - `volleyctl report [options]`: argv[0] is "report".  default_log is
 * the accounting log used when no --log is given (NULL: --log is required).
 * Writes the report to out and diagnostics to err.  Returns the exit status: 0 ok,
 * 1 failure (unreadable log, write error), 2 usage error.
 */
int report_cli(int argc, char **argv, const char *default_log, FILE *out, FILE *err);

#endif
