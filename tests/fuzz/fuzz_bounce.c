/*
 * fuzz_bounce - libFuzzer target for the feedback parser (bounce.c,
 * bounce_mime.c).
 *
 * The input is a whole inbound message.  It is parsed as it is, then split as an
 * mbox and each piece unquoted and parsed again.  Beyond "no crash, no leak, no
 * hang" (ASan/UBSan and libFuzzer's own checks), the report must keep the
 * parser's contract: at most BOUNCE_MAX_RCPTS recipients, every string valid for
 * JSON (bounce_rcpt_json never fails on a report bounce_parse produced), an
 * UNPARSEABLE report says why, and a report with recipients is never UNPARSEABLE.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bounce.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

#define FUZZ_MAX_LEN  (1024 * 1024)
#define FUZZ_MAX_MSGS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_parse - parse one message and check the report */
static void fuzz_parse(const char *msg, size_t len)
{
    struct bounce_report r;
    int rc = bounce_parse(msg, len, FUZZ_MAX_LEN, &r);
    if (rc == 0) {
        FUZZ_CHECK(r.nrcpts >= 0 && r.nrcpts <= BOUNCE_MAX_RCPTS);
        FUZZ_CHECK(r.kind != BOUNCE_KIND_UNPARSEABLE || r.reason[0] != '\0');
        FUZZ_CHECK(r.nrcpts == 0 || r.kind != BOUNCE_KIND_UNPARSEABLE);
        for (int i = r.nrcpts ? 0 : -1; i < r.nrcpts; i++) {
            json_t *j = bounce_rcpt_json(&r, i);
            FUZZ_CHECK(j != NULL);
            char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
            FUZZ_CHECK(s != NULL);
            free(s);
            json_decref(j);
            if (i < 0) break;
        }
    }
    bounce_report_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size heap copy, so any overread is caught */
    char *msg = malloc(size ? size : 1);
    FUZZ_CHECK(msg != NULL);
    if (size) memcpy(msg, data, size);
    fuzz_parse(msg, size);

    size_t pos = 0, ml;
    const char *m;
    int n = 0;
    while (n < FUZZ_MAX_MSGS && bounce_mbox_next(msg, size, &pos, &m, &ml) == 1) {
        FUZZ_CHECK(m >= msg && ml <= size && (size_t)(m - msg) + ml <= size);
        char *u = malloc(ml ? ml : 1);
        FUZZ_CHECK(u != NULL);
        size_t ul = bounce_mbox_unquote(m, ml, u, ml);
        FUZZ_CHECK(ul <= ml);
        fuzz_parse(u, ul);
        free(u);
        n++;
    }
    FUZZ_CHECK(n > 0 || size == 0);
    free(msg);
    return 0;
}
