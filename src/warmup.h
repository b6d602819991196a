/*
 * warmup - the day's message counts of warm-up sources, per site class, shared by
 * every delivery worker and kept across restarts.
 *
 * A source under a warm-up schedule may send at most N messages a UTC day to one
 * site class (shape_warmup_cap).  Sites of one class can belong to different
 * delivery workers, so the count lives here, behind one mutex, not in a worker's
 * (source, site) pair; the lock is taken only for sources under a warm-up cap.
 *
 * Durability: the scheduler takes a count when a message goes out and hands its
 * spool key (warmup_key) to the outcome op of that message, so the count commits
 * with the outcome it counts.  At start warmup_load() reads the day's counts back:
 * a restart never reopens a day's cap.  A crash can lose only the counts of
 * transactions whose outcomes were not committed, and those are sent (and counted)
 * again -- the at-least-once duplicate window, nothing more.
 *
 * Days are UTC day numbers (ms / 86400000); a count of an earlier day is never
 * looked at again, so a clock stepped back reads the old day's (full) count.
 */
#ifndef VOLLEY_WARMUP_H
#define VOLLEY_WARMUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct spool;
struct warmup;

#define WARMUP_DAY_MS DAY_MS
#define WARMUP_KEY_MAX 160 /* "w" + day(8) + source(<64) + NUL + class(<64) */

/* warmup_new / warmup_free - an empty table (aborts on OOM) */
struct warmup *warmup_new(void);
void warmup_free(struct warmup *w);

/* warmup_load - read the counts of day (and later days) from the spool; 0 or -1 */
int warmup_load(struct warmup *w, struct spool *sp, int64_t day);

/*
 * warmup_take - count one message from source to site class cls on day, unless the
 * day's count has reached cap: true when counted.  cap < 0 means no cap today
 * (nothing is counted and the answer is true).
 */
bool warmup_take(struct warmup *w, const char *source, const char *cls, int64_t day, int64_t cap);
/* warmup_untake - give back a count of a message that did not go out after all */
void warmup_untake(struct warmup *w, const char *source, const char *cls, int64_t day);
/* warmup_untake_key - the same, named by its warmup_key() */
void warmup_untake_key(struct warmup *w, const uint8_t *key, size_t keylen);
/* warmup_count - the count of (source, cls, day) */
int64_t warmup_count(struct warmup *w, const char *source, const char *cls, int64_t day);

/* warmup_key - the spool counter key of (source, cls, day) into buf (size >=
 * WARMUP_KEY_MAX); its length, 0 when the names do not fit */
size_t warmup_key(uint8_t *buf, size_t n, const char *source, const char *cls, int64_t day);

#endif
