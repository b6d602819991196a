/*
 * util - allocation, time and byte-buffer helpers shared by every module.
 *
 * Owns nothing mail-specific: no module here may include a mail header.  The x*()
 * allocators abort on out-of-memory, which is the daemon's policy (STYLE.md: the
 * daemon aborts on OOM); library-style code that must report failure uses plain
 * malloc and returns -1.
 */
#ifndef VOLLEY_UTIL_H
#define VOLLEY_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* xmalloc - malloc or abort; caller frees */
void *xmalloc(size_t n);
/* xcalloc - zeroed array or abort; caller frees */
void *xcalloc(size_t n, size_t size);
/* xrealloc - realloc or abort */
void *xrealloc(void *p, size_t n);
/* xstrdup - copy of s or abort; caller frees */
char *xstrdup(const char *s);
/* xstrndup - copy of the first n bytes of s, NUL-terminated; caller frees */
char *xstrndup(const char *s, size_t n);

#define DAY_MS 86400000LL /* a UTC day in milliseconds: day numbers are ms / DAY_MS */

/* now_ms - wall clock in milliseconds since the epoch (ids, queue times) */
int64_t now_ms(void);
/* mono_ms - monotonic milliseconds (timeouts, rates) */
int64_t mono_ms(void);

/* time_rfc3339 - "2026-11-23T09:19:48Z" (UTC, seconds) of a millisecond time into
 * buf (size >= 21); returns buf */
const char *time_rfc3339(int64_t ms, char *buf, size_t n);

/*
 * time_rfc5322 - the RFC 5322 date-time of the millisecond time ms in UTC,
 * "Mon, 23 Nov 2026 14:15:00 +0000", into buf (size >= 32); 0, or -1 for a time
 * outside the years 1900..9999 (RFC 5322 wants a four-digit year >= 1900)
 */
int time_rfc5322(int64_t ms, char *buf, size_t n);

/*
 * opt_value - command-line option parsing shared by the tools: if argv[*i] is
 * "name VALUE" or "name=VALUE", point *val at the value (advancing *i past a
 * separate one) and return 1; 0 for any other argument; -1 when the value is
 * missing (the caller says so in its own words)
 */
int opt_value(const char *name, int argc, char **argv, int *i, const char **val);

/* str_copy - bounded copy that always terminates; returns -1 if truncated */
int str_copy(char *dst, size_t dstsz, const char *src);
/* str_lower - ASCII-lowercase s in place */
void str_lower(char *s);

/*
 * vbuf - a growable byte buffer with a hard cap.  The buffer owns data; vbuf_free()
 * releases it.  Appends past cap fail with -1 and leave the buffer unchanged, so an
 * input size limit is enforced where the bytes arrive.
 */
struct vbuf {
    uint8_t *data;
    size_t len;
    size_t cap;   /* allocated */
    size_t limit; /* never grow past this */
};

void vbuf_init(struct vbuf *b, size_t limit);
int vbuf_append(struct vbuf *b, const void *p, size_t n);
int vbuf_reserve(struct vbuf *b, size_t n);
void vbuf_reset(struct vbuf *b);
void vbuf_free(struct vbuf *b);

/* be64 / be32 helpers: spool keys are big-endian so that LMDB's memcmp order is
 * numeric order. */
void put_be64(uint8_t *p, uint64_t v);
uint64_t get_be64(const uint8_t *p);
void put_be32(uint8_t *p, uint32_t v);
uint32_t get_be32(const uint8_t *p);

#endif
