/*
 * fuzz_smtpc_reply - libFuzzer target for smtpc_parse_reply, the parser of server
 * replies (the one piece of smtpc that reads raw outside input).
 *
 * The input is used whole as one reply.  libFuzzer's buffer has exactly the input's
 * length, so ASan sees any overread.  Checked against the contract: the result is
 * 0 or -1; on -1 the reply is zeroed; on 0 the code is the 2xx-5xx number the
 * input starts with and every line carries it, the text is terminated inside its
 * array and holds no control characters, an enhanced code has the RFC 3463 shape
 * and the reply's class; and parsing is deterministic.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpc.h"

/* FUZZ_CHECK - abort (a crash libFuzzer reports) when an invariant fails */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_enh_ok - e is "" or class.subject.detail with 1-3 digit parts and class cls */
static bool fuzz_enh_ok(const char *e, char cls)
{
    if (!e[0]) return true;
    if (e[0] != cls || e[1] != '.') return false;
    const char *p = e + 2;
    for (int part = 0; part < 2; part++) {
        int n = 0;
        while (*p >= '0' && *p <= '9') {
            p++;
            n++;
        }
        if (n < 1 || n > 3) return false;
        if (part == 0 && *p++ != '.') return false;
    }
    return *p == '\0';
}

/* fuzz_lines_carry - every line of s (n octets) starts with the 3 octets of code */
static bool fuzz_lines_carry(const char *s, size_t n, const char *code)
{
    size_t pos = 0;
    while (pos < n) {
        const char *nl = memchr(s + pos, '\n', n - pos);
        size_t len = nl ? (size_t)(nl - (s + pos)) : n - pos;
        if (len < 3 || memcmp(s + pos, code, 3) != 0) return false;
        pos += len + 1;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    struct smtpc_reply r, again;

    memset(&r, 0x5a, sizeof(r)); /* the parser must set every field */
    int rc = smtpc_parse_reply(s, size, &r);
    FUZZ_CHECK(rc == 0 || rc == -1);
    FUZZ_CHECK(memchr(r.text, '\0', sizeof(r.text)) != NULL);
    FUZZ_CHECK(memchr(r.enh, '\0', sizeof(r.enh)) != NULL);

    if (rc < 0) {
        FUZZ_CHECK(r.code == 0 && r.enh[0] == '\0' && r.text[0] == '\0');
    } else {
        FUZZ_CHECK(size >= 3);
        FUZZ_CHECK(r.code >= 200 && r.code <= 599);
        FUZZ_CHECK(r.code == (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0'));
        FUZZ_CHECK(fuzz_lines_carry(s, size, s));
        FUZZ_CHECK(fuzz_enh_ok(r.enh, s[0]));
        size_t tl = strlen(r.text);
        FUZZ_CHECK(tl < sizeof(r.text));
        for (size_t i = 0; i < tl; i++) {
            unsigned char ch = (unsigned char)r.text[i];
            FUZZ_CHECK(ch >= 0x20 && ch != 0x7f);
        }
    }

    memset(&again, 0, sizeof(again));
    FUZZ_CHECK(smtpc_parse_reply(s, size, &again) == rc);
    FUZZ_CHECK(again.code == r.code && strcmp(again.enh, r.enh) == 0 &&
               strcmp(again.text, r.text) == 0);
    return 0;
}
