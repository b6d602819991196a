/*
 * fuzz_dkim - libFuzzer target for the DKIM signer over outside messages: the
 * header section of whatever an injecting client sent is parsed (field names,
 * folding, the From count) and canonicalized.  The input is the message; both
 * canonicalizations are tried with an Ed25519 key made once at start.  Checked
 * besides memory safety: a signature, when made, is one header field that ends in
 * CRLF, is 7-bit, has no line over 998 octets and carries no l= tag; and signing
 * again through the body memo (which keeps the bodies of earlier inputs) gives the
 * same octets.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "dkim.h"
#include "util.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_key - an Ed25519 key written to a temporary PEM file and loaded */
static struct dkim_key *fuzz_key(void)
{
    char path[] = "/tmp/fuzz-dkim-XXXXXX";
    int fd = mkstemp(path);
    FUZZ_CHECK(fd >= 0);
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    FILE *f = fdopen(fd, "w");
    FUZZ_CHECK(pk && f && PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1);
    fclose(f);
    EVP_PKEY_free(pk);
    char err[256];
    struct dkim_key *k = dkim_key_load(path, "example.test", "fz", err, sizeof err);
    unlink(path);
    if (!k) fprintf(stderr, "fuzz_dkim: %s\n", err);
    FUZZ_CHECK(k);
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dkim_key *key;
    static struct dkim_body_memo *memo;
    if (!key) key = fuzz_key();
    if (!memo) memo = dkim_body_memo_new(4, 4096);
    FUZZ_CHECK(memo);
    if (size > 65536) return 0;
    for (int canon = 0; canon < 2; canon++) {
        struct dkim_params p = {.hcanon = canon ? DKIM_CANON_SIMPLE : DKIM_CANON_RELAXED,
                                .bcanon = canon ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE,
                                .timestamp = 1700000000};
        struct vbuf out;
        char err[200];
        vbuf_init(&out, 1 << 20);
        if (dkim_sign(key, &p, data, size, &out, err, sizeof err) == 0) {
            FUZZ_CHECK(out.len >= 2 && out.data[out.len - 2] == '\r' && out.data[out.len - 1] == '\n');
            FUZZ_CHECK(strncmp((const char *)out.data, "DKIM-Signature:", 15) == 0);
            size_t line = 0;
            for (size_t i = 0; i < out.len; i++) {
                FUZZ_CHECK(out.data[i] < 128);
                line = out.data[i] == '\n' ? 0 : line + 1;
                FUZZ_CHECK(line <= 998);
            }
            FUZZ_CHECK(memmem(out.data, out.len, "; l=", 4) == NULL);
            struct vbuf again;
            vbuf_init(&again, 1 << 20);
            p.memo = memo;
            FUZZ_CHECK(dkim_sign(key, &p, data, size, &again, err, sizeof err) == 0);
            FUZZ_CHECK(again.len == out.len && memcmp(again.data, out.data, out.len) == 0);
            vbuf_free(&again);
        }
        vbuf_free(&out);
    }
    return 0;
}
