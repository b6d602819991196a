/*
 * fuzz_dsn - libFuzzer target for the DSN builder.
 *
 * The builder is not a parser, but everything it copies comes from outside: the
 * remote server's reply text, the recipient and sender addresses, and the original
 * message's header section.  The input is split at its first two NUL bytes into a
 * diagnostic, an address and the original message.  Whatever they hold, the output
 * must keep the builder's contract: CRLF line ends only, 7-bit, no line over 998
 * octets, the diagnostic confined to its field (no line of the delivery-status
 * part may start with a field name the builder did not write there), and a cap on
 * the output buffer is honoured without a partial result.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dsn.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_cut - the next NUL-terminated piece of [*p, end) as a malloc'd string */
static char *fuzz_cut(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *nul = memchr(*p, 0, (size_t)(end - *p));
    size_t n = nul ? (size_t)(nul - *p) : (size_t)(end - *p);
    char *s = malloc(n + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, *p, n);
    s[n] = '\0';
    *p = nul ? nul + 1 : end;
    return s;
}

/* fuzz_check_output - the invariants of dsn_build's output */
static void fuzz_check_output(const uint8_t *b, size_t n)
{
    size_t line = 0;
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(b[i] < 0x80);
        if (b[i] == '\r') {
            FUZZ_CHECK(i + 1 < n && b[i + 1] == '\n');
            continue;
        }
        if (b[i] == '\n') {
            FUZZ_CHECK(i > 0 && b[i - 1] == '\r');
            line = 0;
            continue;
        }
        FUZZ_CHECK(++line <= 998);
    }
    FUZZ_CHECK(n >= 2 && b[n - 2] == '\r' && b[n - 1] == '\n');
    /* in the delivery-status part (up to the next boundary), exactly one Action:
     * line per recipient: the diagnostic cannot add one.  (The copied headers in
     * the third part may hold anything, "Action:" included.) */
    const char *text = (const char *)b;
    /* both anchored at line starts, where untrusted text can never begin */
    static const char ds[] = "\r\nContent-Type: message/delivery-status\r\n",
                      bd[] = "\r\n--=_volley_";
    const char *part = memmem(text, n, ds, sizeof ds - 1);
    FUZZ_CHECK(part != NULL);
    size_t from = (size_t)(part - text);
    const char *stop = memmem(part, n - from, bd, sizeof bd - 1);
    FUZZ_CHECK(stop != NULL);
    size_t to = (size_t)(stop - text), actions = 0;
    for (size_t i = from; i + 8 <= to; i++)
        if (b[i - 1] == '\n' && memcmp(b + i, "Action: ", 8) == 0) actions++;
    FUZZ_CHECK(actions == 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    char *diag = fuzz_cut(&p, end);
    char *addr = fuzz_cut(&p, end);
    size_t olen = (size_t)(end - p);
    uint8_t *orig = malloc(olen ? olen : 1);
    FUZZ_CHECK(orig != NULL);
    if (olen) memcpy(orig, p, olen);

    struct dsn_rcpt r = {
        .addr = *addr ? addr : "x@example.test",
        .action = "failed",
        .status = size > 0 && data[0] & 1 ? "5.1.1" : "",
        .code = size > 1 ? 400 + data[1] % 200 : 0,
        .diag = diag,
        .remote_mta = "mx.example.test",
        .last_attempt_ms = 1795443300000,
    };
    struct dsn_info in = {
        .reporting_mta = "volley.example.test",
        .queue_id = "1A208D0742300000",
        .sender = *addr ? addr : "sender@example.test",
        .arrival_ms = 1795443000000,
        .now_ms = 1795443300000,
        .rcpts = &r,
        .nrcpt = 1,
        .orig = orig,
        .orig_len = olen,
    };
    struct vbuf out;
    vbuf_init(&out, 1 << 20);
    int rc = dsn_build(&in, &out);
    if (rc == 0) {
        fuzz_check_output(out.data, out.len);
        /* the same input under a cap one byte short fails cleanly */
        struct vbuf small;
        vbuf_init(&small, out.len - 1);
        FUZZ_CHECK(dsn_build(&in, &small) == -1 && small.len == 0);
        vbuf_free(&small);
    }
    vbuf_free(&out);
    free(orig);
    free(addr);
    free(diag);
    return 0;
}
