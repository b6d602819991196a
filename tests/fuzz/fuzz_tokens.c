/*
 * fuzz_tokens - libFuzzer target for the feedback tokens and addresses that come
 * from outside: VERP and unsubscribe addresses in RCPT TO (verp_decode,
 * verp_unsub_mail_decode), one-click URL tokens (verp_unsub_url_parse), and the
 * suppression normalisation of addresses and keys (suppress_normalize,
 * suppress_key_split).
 *
 * Contract checked besides memory safety: a token that decodes re-encodes to
 * something that decodes to the same values (the decoders accept nothing the
 * encoders would not produce, up to letter case), and normalisation is idempotent.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "suppress.h"
#include "verp.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct verp_key key;
    static int ready;
    if (!ready) {
        FUZZ_CHECK(verp_key_derive(&key, "fuzzing-secret-0123456789") == 0);
        ready = 1;
    }
    if (size > 4096) return 0;
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    uint64_t id, id2;
    uint32_t idx, idx2;
    char local[VERP_LOCAL_SIZE];
    if (verp_decode(&key, "bounce", s, &id, &idx) == 0) {
        FUZZ_CHECK(verp_encode(&key, "bounce", id, idx, local, sizeof local) == 0);
        FUZZ_CHECK(verp_decode(&key, "bounce", local, &id2, &idx2) == 0);
        FUZZ_CHECK(id == id2 && idx == idx2);
    }
    if (verp_unsub_mail_decode(&key, "unsubscribe", s, &id, &idx) == 0) {
        FUZZ_CHECK(verp_unsub_mail_encode(&key, "unsubscribe", id, idx, local, sizeof local) == 0);
        FUZZ_CHECK(verp_unsub_mail_decode(&key, "unsubscribe", local, &id2, &idx2) == 0);
        FUZZ_CHECK(id == id2 && idx == idx2);
    }
    char list[VERP_LIST_MAX + 1], addr[VERP_ADDR_MAX + 1], tok[VERP_URL_TOKEN_SIZE];
    if (verp_unsub_url_parse(&key, s, list, sizeof list, addr, sizeof addr, &id) == 0) {
        FUZZ_CHECK(verp_unsub_url_token(&key, list, addr, id, tok, sizeof tok) == 0);
        FUZZ_CHECK(strcmp(tok, s) == 0); /* base64url has one spelling */
    }

    char norm[SUPPRESS_ADDR_MAX], again[SUPPRESS_ADDR_MAX];
    if (suppress_normalize(s, norm, sizeof norm) == 0) {
        FUZZ_CHECK(suppress_normalize(norm, again, sizeof again) == 0);
        FUZZ_CHECK(strcmp(norm, again) == 0);
    }
    char scope[SUPPRESS_SCOPE_MAX], target[SUPPRESS_ADDR_MAX];
    uint8_t kb[SUPPRESS_KEY_MAX];
    if (suppress_key_split(data, size, scope, sizeof scope, target, sizeof target) == 0) {
        size_t kl = suppress_key(kb, sizeof kb, scope, target);
        FUZZ_CHECK(kl == 0 || (kl <= size && memcmp(kb, data, kl) == 0));
    }
    free(s);
    return 0;
}
