/*
 * fuzz_msg_header - libFuzzer target for msg_header.
 *
 * The input is the message.  It is copied into a malloc'd buffer of exactly its
 * length (take writes into it, and ASan then sees any overread), and every name in
 * a small list - plus one taken from the input's first line, so the fuzzer finds
 * matches cheaply - is taken until absent.  Each take is checked against the
 * contract: the message only ever shrinks, by one contiguous range of whole lines
 * inside the header section; the count drops by exactly one; the body is never
 * touched; a value that does not fit leaves the message unchanged.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "msg_header.h"

/* FUZZ_CHECK - abort (a crash libFuzzer reports) when an invariant fails */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

/* Keeps the quadratic take-until-absent loop fast enough to fuzz usefully. */
#define FUZZ_MSG_MAX 16384

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_take_all - take name from msg until absent, checking each step */
static void fuzz_take_all(char *msg, size_t *len, char *prev, const char *name, size_t small)
{
    char *val = malloc(*len + 1);
    FUZZ_CHECK(val != NULL);
    int count = msg_header_count(msg, *len, name);
    FUZZ_CHECK(count >= 0);

    for (;;) {
        size_t before = *len;
        size_t sect = msg_header_section_len(msg, before);
        memcpy(prev, msg, before);

        int r = msg_header_take(msg, len, name, val, small);
        if (r == -1) {
            /* too big for the small buffer: nothing changed, and the value, being
             * part of the message, always fits in len + 1 */
            FUZZ_CHECK(*len == before && memcmp(msg, prev, before) == 0);
            FUZZ_CHECK(count > 0);
            r = msg_header_take(msg, len, name, val, before + 1);
            FUZZ_CHECK(r == 1);
        }
        if (r == 0) {
            FUZZ_CHECK(count == 0);
            FUZZ_CHECK(*len == before && memcmp(msg, prev, before) == 0);
            break;
        }
        FUZZ_CHECK(r == 1);
        FUZZ_CHECK(*len < before);
        size_t removed = before - *len;
        size_t vlen = strlen(val);
        FUZZ_CHECK(vlen < removed);
        FUZZ_CHECK(vlen == 0 || (val[0] != ' ' && val[0] != '\t'));

        /* one contiguous range [start, start + removed) went, within the section */
        size_t start = 0;
        while (start < *len && msg[start] == prev[start])
            start++;
        FUZZ_CHECK(memcmp(msg + start, prev + start + removed, *len - start) == 0);
        /* the value is a C string, so its end is only known when it holds no NUL */
        if (memchr(prev + start, '\0', removed) == NULL)
            FUZZ_CHECK(vlen == 0 || (val[vlen - 1] != ' ' && val[vlen - 1] != '\t'));
        FUZZ_CHECK(removed <= sect);
        size_t new_sect = msg_header_section_len(msg, *len);
        FUZZ_CHECK(new_sect == sect - removed);
        /* the body, from the empty line on, is byte-for-byte the same */
        FUZZ_CHECK(*len - new_sect == before - sect);
        FUZZ_CHECK(memcmp(msg + new_sect, prev + sect, *len - new_sect) == 0);

        int now = msg_header_count(msg, *len, name);
        FUZZ_CHECK(now == count - 1);
        count = now;
    }
    FUZZ_CHECK(msg_header_count(msg, *len, name) == 0);
    free(val);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"X-Volley-Campaign", "Received", "a", "Subject"};
    char name[64];

    if (size > FUZZ_MSG_MAX) return 0;
    char *msg = malloc(size ? size : 1);
    char *prev = malloc(size ? size : 1);
    FUZZ_CHECK(msg != NULL && prev != NULL);
    memcpy(msg, data, size);
    size_t len = size;

    size_t sect = msg_header_section_len(msg, len);
    FUZZ_CHECK(sect <= len);
    if (sect < len) FUZZ_CHECK(len - sect >= 2 && msg[sect] == '\r' && msg[sect + 1] == '\n');

    /* a name from the first line: the octets before ':' (NUL-free, bounded) */
    size_t n = 0;
    while (n < size && n < sizeof(name) - 1 && data[n] != ':' && data[n] != '\0')
        n++;
    memcpy(name, data, n);
    name[n] = '\0';

    /* the first octet also picks a small value buffer, to reach the -1 path */
    size_t small = size ? (size_t)(data[0] % 16) : 0;

    fuzz_take_all(msg, &len, prev, name, small);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        fuzz_take_all(msg, &len, prev, names[i], small);

    free(prev);
    free(msg);
    return 0;
}
