/*
 * warmup - shared, durable warm-up counts (see warmup.h for the model).
 *
 * An open-addressing hash table of (source, class, day) -> count behind one mutex.
 * It grows by doubling; when it does, entries of days before the newest day seen
 * minus one are dropped, so it holds about two days' worth of (source, class)
 * pairs however long the daemon runs.
 */
#include "warmup.h"

#include "spool.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define WARMUP_NAME_MAX 64

struct warmup_entry {
    bool used;
    int64_t day;
    int64_t count;
    char source[WARMUP_NAME_MAX];
    char cls[WARMUP_NAME_MAX];
};

struct warmup {
    pthread_mutex_t mu;
    struct warmup_entry *tab;
    size_t cap, n; /* cap is a power of two */
    int64_t newest_day;
};

struct warmup *warmup_new(void)
{
    struct warmup *w = xcalloc(1, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    w->cap = 64;
    w->tab = xcalloc(w->cap, sizeof *w->tab);
    return w;
}

void warmup_free(struct warmup *w)
{
    if (!w) return;
    pthread_mutex_destroy(&w->mu);
    free(w->tab);
    free(w);
}

/* warmup_hash - FNV-1a over the two names and the day */
static uint64_t warmup_hash(const char *source, const char *cls, int64_t day)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = source; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    for (const char *p = cls; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    for (int i = 0; i < 8; i++)
        h = (h ^ (uint8_t)((uint64_t)day >> (i * 8))) * 1099511628211ULL;
    return h;
}

/* warmup_slot - the entry of (source, cls, day): the live one, or the empty slot
 * where it would go (the table always has empty slots: load stays under 1/2) */
static struct warmup_entry *warmup_slot(struct warmup *w, const char *source, const char *cls,
                                        int64_t day)
{
    size_t mask = w->cap - 1, i = (size_t)warmup_hash(source, cls, day) & mask;
    for (;; i = (i + 1) & mask) {
        struct warmup_entry *e = &w->tab[i];
        if (!e->used) return e;
        if (e->day == day && strcmp(e->source, source) == 0 && strcmp(e->cls, cls) == 0)
            return e;
    }
}

/* warmup_grow - double the table, dropping days no caller asks about any more */
static void warmup_grow(struct warmup *w)
{
    struct warmup_entry *old = w->tab;
    size_t oldcap = w->cap;
    size_t live = 0;
    for (size_t i = 0; i < oldcap; i++)
        live += old[i].used && old[i].day >= w->newest_day - 1;
    w->cap = oldcap;
    while (live * 2 + 2 > w->cap / 2)
        w->cap *= 2;
    w->tab = xcalloc(w->cap, sizeof *w->tab);
    w->n = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (!old[i].used || old[i].day < w->newest_day - 1) continue;
        *warmup_slot(w, old[i].source, old[i].cls, old[i].day) = old[i];
        w->n++;
    }
    free(old);
}

/* warmup_entry_get - the entry of (source, cls, day), created at count 0; NULL
 * when a name is too long to be one the rules file allows */
static struct warmup_entry *warmup_entry_get(struct warmup *w, const char *source,
                                             const char *cls, int64_t day)
{
    if (strlen(source) >= WARMUP_NAME_MAX || strlen(cls) >= WARMUP_NAME_MAX) return NULL;
    if (day > w->newest_day) w->newest_day = day;
    if ((w->n + 1) * 2 > w->cap) warmup_grow(w);
    struct warmup_entry *e = warmup_slot(w, source, cls, day);
    if (!e->used) {
        e->used = true;
        e->day = day;
        e->count = 0;
        str_copy(e->source, sizeof e->source, source);
        str_copy(e->cls, sizeof e->cls, cls);
        w->n++;
    }
    return e;
}

bool warmup_take(struct warmup *w, const char *source, const char *cls, int64_t day, int64_t cap)
{
    if (cap < 0) return true;
    pthread_mutex_lock(&w->mu);
    struct warmup_entry *e = warmup_entry_get(w, source, cls, day);
    bool ok = e && e->count < cap;
    if (ok) e->count++;
    pthread_mutex_unlock(&w->mu);
    return ok;
}

void warmup_untake(struct warmup *w, const char *source, const char *cls, int64_t day)
{
    pthread_mutex_lock(&w->mu);
    struct warmup_entry *e = warmup_entry_get(w, source, cls, day);
    if (e && e->count > 0) e->count--;
    pthread_mutex_unlock(&w->mu);
}

/* warmup_key_split - (source, cls, day) of a warmup_key(); -1 when it is not one */
static int warmup_key_split(const uint8_t *key, size_t keylen, char *source, char *cls,
                            int64_t *day)
{
    if (keylen < 10 || key[0] != 'w') return -1;
    const uint8_t *nul = memchr(key + 9, '\0', keylen - 9);
    if (!nul) return -1;
    size_t sl = (size_t)(nul - (key + 9)), cl = keylen - 10 - sl;
    if (sl >= WARMUP_NAME_MAX || cl >= WARMUP_NAME_MAX) return -1;
    memcpy(source, key + 9, sl);
    source[sl] = '\0';
    memcpy(cls, nul + 1, cl);
    cls[cl] = '\0';
    *day = (int64_t)get_be64(key + 1);
    return 0;
}

void warmup_untake_key(struct warmup *w, const uint8_t *key, size_t keylen)
{
    char source[WARMUP_NAME_MAX], cls[WARMUP_NAME_MAX];
    int64_t day;
    if (warmup_key_split(key, keylen, source, cls, &day) == 0) warmup_untake(w, source, cls, day);
}

int64_t warmup_count(struct warmup *w, const char *source, const char *cls, int64_t day)
{
    pthread_mutex_lock(&w->mu);
    struct warmup_entry *e = warmup_entry_get(w, source, cls, day);
    int64_t n = e ? e->count : 0;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* Key layout: 'w', day (8, big-endian, so a day's keys are one prefix range),
 * source, NUL, class. */
size_t warmup_key(uint8_t *buf, size_t n, const char *source, const char *cls, int64_t day)
{
    size_t sl = strlen(source), cl = strlen(cls);
    if (sl >= WARMUP_NAME_MAX || cl >= WARMUP_NAME_MAX || n < 1 + 8 + sl + 1 + cl) return 0;
    buf[0] = 'w';
    put_be64(buf + 1, (uint64_t)day);
    memcpy(buf + 9, source, sl);
    buf[9 + sl] = '\0';
    memcpy(buf + 10 + sl, cls, cl);
    return 10 + sl + cl;
}

struct warmup_load_ctx {
    struct warmup *w;
    int64_t day;
};

/* warmup_load_one - one stored counter: seed the table with it when it is of the
 * day asked for or later */
static int warmup_load_one(void *arg, const uint8_t *key, size_t keylen, uint64_t value)
{
    struct warmup_load_ctx *ctx = arg;
    char source[WARMUP_NAME_MAX], cls[WARMUP_NAME_MAX];
    int64_t day;
    if (warmup_key_split(key, keylen, source, cls, &day) < 0 || day < ctx->day) return 0;
    struct warmup_entry *e = warmup_entry_get(ctx->w, source, cls, day);
    if (e) e->count = value > INT64_MAX ? INT64_MAX : (int64_t)value;
    return 0;
}

/* warmup_load - every 'w' key is looked at (old days are skipped): a few per
 * (source, class) and day, read once at start */
int warmup_load(struct warmup *w, struct spool *sp, int64_t day)
{
    const uint8_t prefix[1] = {'w'};
    struct warmup_load_ctx ctx = {w, day};
    pthread_mutex_lock(&w->mu);
    int rc = spool_counts_scan(sp, prefix, sizeof prefix, warmup_load_one, &ctx);
    pthread_mutex_unlock(&w->mu);
    return rc;
}
