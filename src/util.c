/*
 * util - allocation, time and byte-buffer helpers (see util.h).
 */
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void util_oom(size_t n)
{
    fprintf(stderr, "volley: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        util_oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        util_oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        util_oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *time_rfc3339(int64_t ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* strftime only writes numbers here (they do not depend on the locale); the names
 * come from the tables */
int time_rfc5322(int64_t ms, char *buf, size_t n)
{
    static const char wday[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    int64_t s = ms / 1000 - (ms % 1000 < 0 ? 1 : 0);
    time_t t = (time_t)s;
    struct tm tm;
    char day[4], rest[32];

    if ((int64_t)t != s || gmtime_r(&t, &tm) == NULL || tm.tm_year < 0 ||
        tm.tm_year > 9999 - 1900 || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
        tm.tm_mon > 11 || strftime(day, sizeof(day), "%d", &tm) == 0 ||
        strftime(rest, sizeof(rest), "%Y %H:%M:%S +0000", &tm) == 0)
        return -1;
    int w = snprintf(buf, n, "%s, %s %s %s", wday[tm.tm_wday], day, mon[tm.tm_mon], rest);
    return w > 0 && (size_t)w < n ? 0 : -1;
}

int opt_value(const char *name, int argc, char **argv, int *i, const char **val)
{
    const char *arg = argv[*i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0) return 0;
    if (arg[n] == '=') {
        *val = arg + n + 1;
        return 1;
    }
    if (arg[n] != '\0') return 0;
    if (*i + 1 >= argc) return -1;
    *val = argv[++*i];
    return 1;
}

int str_copy(char *dst, size_t dstsz, const char *src)
{
    size_t n = strlen(src);
    if (dstsz == 0)
        return -1;
    if (n >= dstsz) {
        memcpy(dst, src, dstsz - 1);
        dst[dstsz - 1] = '\0';
        return -1;
    }
    memcpy(dst, src, n + 1);
    return 0;
}

void str_lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

void vbuf_init(struct vbuf *b, size_t limit)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->limit = limit;
}

int vbuf_reserve(struct vbuf *b, size_t n)
{
    if (n > b->limit || b->len > b->limit - n)
        return -1;
    size_t need = b->len + n;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->limit)
        cap = b->limit;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
    return 0;
}

int vbuf_append(struct vbuf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (vbuf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void vbuf_reset(struct vbuf *b)
{
    b->len = 0;
}

void vbuf_free(struct vbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
