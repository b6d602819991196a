/*
 * log - the daemon log and the accounting log, both one JSON object per line.
 *
 * volleyd.log carries operational events ({"ts","level","event",...}); the
 * accounting log (accounting.log) carries one record per message outcome and is
 * what deliverability staff and billing read.  Each record is formatted with
 * jansson and written with a single write(2) on an O_APPEND descriptor, so lines
 * from several threads never interleave and a crash loses nothing already logged.
 * log_reopen() (SIGHUP, `volleyctl log rotate`) swaps descriptors under a mutex.
 * Field names are stable and documented in README.md.
 */
#ifndef VOLLEY_LOG_H
#define VOLLEY_LOG_H

#include <jansson.h>
#include <stdbool.h>

enum LOG_LEVEL { LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, LOG_ERROR };

/* log_level_str - "debug".."error" */
const char *log_level_str(enum LOG_LEVEL lvl);
/* log_level_parse - level by name; LOG_INFO if unknown */
enum LOG_LEVEL log_level_parse(const char *name);

/*
 * log_open - open dir/volleyd.log and dir/accounting.log (creating dir), keep only
 * records at min_level or above; with to_stderr, daemon records are also copied to
 * stderr.  dir NULL logs to stderr only.  Returns 0, or -1 with errno set.
 */
int log_open(const char *dir, enum LOG_LEVEL min_level, bool to_stderr);
/* log_reopen - reopen both files by name (after rotation); 0 or -1 */
int log_reopen(void);
/* log_close - flush and close */
void log_close(void);
/* log_enabled - 1 if records at lvl are written (skip building costly ones) */
int log_enabled(enum LOG_LEVEL lvl);

/*
 * log_event - write a daemon record: ts, level, event, then fields (a JSON object
 * or NULL).  Steals the reference to fields.
 */
void log_event(enum LOG_LEVEL lvl, const char *event, json_t *fields);

/* log_msg - a daemon record with a formatted "msg" text field */
void log_msg(enum LOG_LEVEL lvl, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* log_acct - write an accounting record ("ts" is added); steals fields */
void log_acct(const char *type, json_t *fields);

/*
 * log_acct_append / log_acct_flush - the same records, gathered in a caller-owned
 * buffer and written with one write(2) by log_acct_flush (delivery workers flush
 * once per loop turn instead of once per recipient).  append returns -1 when the
 * buffer is at its limit (the caller flushes and appends again).
 */
struct vbuf;
int log_acct_append(struct vbuf *buf, const char *type, json_t *fields);
void log_acct_flush(struct vbuf *buf);

#endif
