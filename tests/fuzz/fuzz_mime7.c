/*
 * fuzz_mime7 - libFuzzer target for the 8-bit to 7-bit MIME downgrade.
 *
 * The input is a whole message from outside (whatever a sender injected).  The
 * properties checked on every input:
 *   - on success the output has no octet > 127;
 *   - no output line is longer than 998 octets: checked on CRLF-separated lines
 *     when the input is strict CRLF with no line over 998, and on LF-separated
 *     lines against the longest input line otherwise (copied lines stay as long
 *     as they were, and bare LF ends a line);
 *   - a 7-bit input comes back byte for byte;
 *   - on failure the output buffer is back where it was, and the same input under
 *     a cap one octet short of the result fails cleanly;
 *   - when the top-level entity is a leaf (no Content-Type field at all) and was
 *     converted, its body decodes, by a decoder written here, to the input body
 *     with bare LF made CRLF, and the encoded text obeys RFC 2045 6.7.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mime7.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

#define FUZZ_LIMIT (8u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_longest - longest line of p[0..n): split at CRLF when crlf, else at LF
 * (a CR before the LF not counted) */
static size_t fuzz_longest(const uint8_t *p, size_t n, int crlf)
{
    size_t line = 0, max = 0;
    for (size_t i = 0; i < n; i++) {
        if (crlf ? (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') : p[i] == '\n') {
            line = 0;
            i += crlf ? 1 : 0;
            continue;
        }
        if (!crlf && p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') continue;
        if (++line > max) max = line;
    }
    return max;
}

/* fuzz_strict_crlf - is every CR and LF of p[0..n) part of a CRLF pair? */
static int fuzz_strict_crlf(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && !(i + 1 < n && p[i + 1] == '\n')) return 0;
        if (p[i] == '\n' && !(i > 0 && p[i - 1] == '\r')) return 0;
    }
    return 1;
}

/* fuzz_body - where the body of p[0..n) starts (after the first empty line,
 * CRLF or LF), or n when there is none; *hlen the header section's length */
static size_t fuzz_body(const uint8_t *p, size_t n, size_t *hlen)
{
    size_t i = 0;
    while (i < n) {
        const uint8_t *lf = memchr(p + i, '\n', n - i);
        if (lf == NULL) break;
        size_t e = (size_t)(lf - p);
        if (e == i || (e == i + 1 && p[i] == '\r')) {
            *hlen = i;
            return e + 1;
        }
        i = e + 1;
    }
    *hlen = n;
    return n;
}

/* fuzz_hex - value of an uppercase hex digit, -1 otherwise */
static int fuzz_hex(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* fuzz_qp_decode - decode quoted-printable p[0..n) into out (room for n octets);
 * its length, or -1 when the text breaks RFC 2045 6.7 */
static long fuzz_qp_decode(const uint8_t *p, size_t n, uint8_t *out)
{
    size_t o = 0, line = 0;
    for (size_t i = 0; i < n;) {
        if (p[i] == '\r') {
            if (i + 1 >= n || p[i + 1] != '\n') return -1;
            if (i > 0 && (p[i - 1] == ' ' || p[i - 1] == '\t')) return -1;
            out[o++] = '\r';
            out[o++] = '\n';
            i += 2;
            line = 0;
            continue;
        }
        if (p[i] == '=') {
            if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') {
                if (++line > 76) return -1;
                i += 3;
                line = 0;
                continue;
            }
            if (i + 2 >= n) return -1;
            int hi = fuzz_hex(p[i + 1]), lo = fuzz_hex(p[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            out[o++] = (uint8_t)(hi * 16 + lo);
            line += 3;
            i += 3;
        } else {
            if (p[i] != ' ' && p[i] != '\t' && (p[i] < 33 || p[i] > 126)) return -1;
            out[o++] = p[i++];
            line++;
        }
        if (line > 76) return -1;
    }
    if (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) return -1;
    return (long)o;
}

/* fuzz_has_ctype - does the header section h[0..n) mention "content-type"
 * anywhere (any case)?  Only then can the top level be anything but a leaf. */
static int fuzz_has_ctype(const uint8_t *h, size_t n)
{
    static const char name[] = "content-type";
    for (size_t i = 0; i + sizeof name - 1 <= n; i++) {
        size_t k = 0;
        while (k < sizeof name - 1 && (h[i + k] | 0x20) == (uint8_t)name[k])
            k++;
        if (k == sizeof name - 1) return 1;
    }
    return 0;
}

/* fuzz_roundtrip - the converted leaf body decodes back to the input body */
static void fuzz_roundtrip(const uint8_t *in, size_t n, const uint8_t *out, size_t m)
{
    size_t ih, oh;
    size_t ib = fuzz_body(in, n, &ih), ob = fuzz_body(out, m, &oh);
    if (fuzz_has_ctype(in, ih)) return;
    uint8_t *dec = malloc(m - ob + 1), *want = malloc(2 * (n - ib) + 1);
    FUZZ_CHECK(dec != NULL && want != NULL);
    long got = fuzz_qp_decode(out + ob, m - ob, dec);
    FUZZ_CHECK(got >= 0);
    size_t w = 0;
    for (size_t i = ib; i < n; i++) {
        if (in[i] == '\n' && (i == ib || in[i - 1] != '\r')) want[w++] = '\r';
        want[w++] = in[i];
    }
    FUZZ_CHECK((size_t)got == w && memcmp(dec, want, w) == 0);
    free(want);
    free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-length copy, so a read past the end is caught */
    uint8_t *in = malloc(size ? size : 1);
    FUZZ_CHECK(in != NULL);
    if (size) memcpy(in, data, size);

    struct vbuf out;
    vbuf_init(&out, FUZZ_LIMIT);
    char why[128];
    int rc = mime7_convert(in, size, &out, why, sizeof why);
    FUZZ_CHECK(rc == 0 || rc == -1);
    FUZZ_CHECK(memchr(why, '\0', sizeof why) != NULL);
    int needed = mime7_needed(in, size);
    if (!needed)
        FUZZ_CHECK(rc == 0 && out.len == size && (size == 0 || memcmp(out.data, in, size) == 0));
    if (rc == -1) {
        FUZZ_CHECK(out.len == 0 && why[0] != '\0');
    } else {
        FUZZ_CHECK(!mime7_needed(out.data, out.len));
        if (fuzz_strict_crlf(in, size) && fuzz_longest(in, size, 1) <= 998)
            FUZZ_CHECK(fuzz_longest(out.data, out.len, 1) <= 998);
        size_t lin = fuzz_longest(in, size, 0);
        FUZZ_CHECK(fuzz_longest(out.data, out.len, 0) <= (lin > 998 ? lin : 998));
        if (needed) fuzz_roundtrip(in, size, out.data, out.len);
        if (out.len > 0) {
            struct vbuf small;
            vbuf_init(&small, out.len - 1);
            FUZZ_CHECK(mime7_convert(in, size, &small, NULL, 0) == -1 && small.len == 0);
            vbuf_free(&small);
        }
    }
    vbuf_free(&out);
    free(in);
    return 0;
}
