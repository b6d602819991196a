/*
 * bench_dkim - DKIM signing rate of one thread.
 *
 * For each key file given, loads it once and calls dkim_sign() on the same
 * synthetic message (a typical bulk header section and a body of 76-column text,
 * -s octets in all, default 4096) for -t seconds (default 3), relaxed/relaxed with
 * t= set, the output buffer reused.  In 0.1 s slices interleaved with its own, it
 * times the bare OpenSSL signature of a 32-octet hash (set up once, as `openssl
 * speed` does) and, for Ed25519, libsodium's, which dkim_sign uses; interleaving
 * keeps the ratios true on a loaded machine.  Prints per key:
 *
 *   dkim <alg> <bits> <signatures> <seconds> <sign/s> <us/sign>
 *   copy <alg> <bits> ...         (another recipient's copy: body hash reused)
 *   raw <alg> <bits> ...          (bare OpenSSL)
 *   sodium <alg> <bits> ...       (bare libsodium, Ed25519 only)
 *   ratio <alg> <bits> <dkim / raw> [<dkim / sodium>]
 *
 * bench/dkim.sh puts these next to `openssl speed` on the same machine.
 *
 * Usage: bench_dkim [-t SECONDS] [-s MSGSIZE] KEYFILE...
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sodium.h>

#include "dkim.h"
#include "util.h"

/* bench_now - monotonic seconds */
static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* bench_message - a size-octet message: header section of a campaign mail, then
 * 76-column lines of text; caller frees */
static char *bench_message(size_t size, size_t *len)
{
    static const char hdr[] =
        "From: \"Example News\" <news@example.com>\r\n"
        "To: recipient.name@example.net\r\n"
        "Subject: Your weekly digest: ten things worth reading this week\r\n"
        "Date: Mon, 23 Nov 2026 14:15:00 +0000\r\n"
        "Message-ID: <20261123141500.4f2a9c@mail.example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "List-Unsubscribe: <https://example.com/u/abcdef0123456789>,\r\n"
        " <mailto:unsub-abcdef0123456789@example.com>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        "Feedback-ID: 42:weekly:volley\r\n"
        "\r\n";
    static const char words[] = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do "
                                "eiusmod tempor incididunt ut labore et dolore magna aliqua ";
    char *m = malloc(size + 128);
    if (m == NULL) return NULL;
    size_t n = strlen(hdr), w = 0, col = 0;
    memcpy(m, hdr, n);
    while (n + 2 < size) {
        if (col == 74) {
            m[n++] = '\r';
            m[n++] = '\n';
            col = 0;
            continue;
        }
        m[n++] = words[w++ % (sizeof(words) - 1)];
        col++;
    }
    m[n++] = '\r';
    m[n++] = '\n';
    *len = n;
    return m;
}

/* A bare OpenSSL signer, set up once as `openssl speed` does, and for Ed25519 a
 * bare libsodium one with the same key. */
struct bench_raw {
    EVP_PKEY *pkey;
    EVP_PKEY_CTX *pc; /* RSA */
    EVP_MD_CTX *mc;   /* Ed25519 */
    unsigned char ed_sk[crypto_sign_ed25519_SECRETKEYBYTES];
};

/* bench_raw_init - load path and prepare its signing context; 0 on success */
static int bench_raw_init(struct bench_raw *r, const char *path)
{
    memset(r, 0, sizeof(*r));
    FILE *fp = fopen(path, "r");
    if (fp == NULL) return -1;
    r->pkey = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
    fclose(fp);
    if (r->pkey == NULL) return -1;
    if (EVP_PKEY_get_base_id(r->pkey) == EVP_PKEY_RSA) {
        r->pc = EVP_PKEY_CTX_new_from_pkey(NULL, r->pkey, NULL);
        return r->pc != NULL && EVP_PKEY_sign_init(r->pc) == 1 &&
                       EVP_PKEY_CTX_set_rsa_padding(r->pc, RSA_PKCS1_PADDING) == 1 &&
                       EVP_PKEY_CTX_set_signature_md(r->pc, EVP_sha256()) == 1
                   ? 0
                   : -1;
    }
    unsigned char seed[32], pk[32];
    size_t n = sizeof(seed);
    r->mc = EVP_MD_CTX_new();
    return r->mc != NULL &&
                   EVP_DigestSignInit_ex(r->mc, NULL, NULL, NULL, NULL, r->pkey, NULL) == 1 &&
                   sodium_init() >= 0 &&
                   EVP_PKEY_get_raw_private_key(r->pkey, seed, &n) == 1 && n == sizeof(seed) &&
                   crypto_sign_ed25519_seed_keypair(pk, r->ed_sk, seed) == 0
               ? 0
               : -1;
}

static const unsigned char bench_hash[32] = { 1, 2, 3 };

/* bench_raw_sign - one bare OpenSSL signature of a 32-octet input */
static int bench_raw_sign(void *arg)
{
    struct bench_raw *r = arg;
    unsigned char sig[1024];
    size_t sl = sizeof(sig);
    if (r->pc != NULL) return EVP_PKEY_sign(r->pc, sig, &sl, bench_hash, 32) == 1 ? 0 : -1;
    return EVP_DigestSign(r->mc, sig, &sl, bench_hash, 32) == 1 ? 0 : -1;
}

/* bench_sodium_sign - one bare libsodium Ed25519 signature of a 32-octet input */
static int bench_sodium_sign(void *arg)
{
    struct bench_raw *r = arg;
    unsigned char sig[crypto_sign_ed25519_BYTES];
    return crypto_sign_ed25519_detached(sig, NULL, bench_hash, 32, r->ed_sk);
}

struct bench_dkim_arg {
    const struct dkim_key *k;
    const struct dkim_params *p;
    const char *msg;
    size_t len;
    struct vbuf *out;
};

/* bench_dkim_sign - one dkim_sign() of the message into the reused buffer */
static int bench_dkim_sign(void *arg)
{
    struct bench_dkim_arg *a = arg;
    char err[512];
    vbuf_reset(a->out);
    if (dkim_sign(a->k, a->p, (const uint8_t *)a->msg, a->len, a->out, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench_dkim: %s\n", err);
        return -1;
    }
    return 0;
}

/* bench_slice - call fn in batches of 8 for 0.1 s, adding calls to *n and time
 * to *el; -1 as soon as a call fails */
static int bench_slice(int (*fn)(void *), void *arg, unsigned long *n, double *el)
{
    double t0 = bench_now(), t1;
    do {
        for (int b = 0; b < 8; b++)
            if (fn(arg) != 0) return -1;
        *n += 8;
        t1 = bench_now();
    } while (t1 - t0 < 0.1);
    *el += t1 - t0;
    return 0;
}

/* bench_raw_free - release r */
static void bench_raw_free(struct bench_raw *r)
{
    EVP_PKEY_CTX_free(r->pc);
    EVP_MD_CTX_free(r->mc);
    EVP_PKEY_free(r->pkey);
    sodium_memzero(r->ed_sk, sizeof(r->ed_sk));
}

int main(int argc, char **argv)
{
    double secs = 3.0;
    size_t size = 4096;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc)
            size = (size_t)atol(argv[++i]);
        else
            break;
    }
    if (i == argc || size < 512) {
        fprintf(stderr, "usage: bench_dkim [-t SECONDS] [-s MSGSIZE>=512] KEYFILE...\n");
        return 2;
    }
    size_t len = 0;
    char *msg = bench_message(size, &len);
    if (msg == NULL) return 1;
    struct vbuf out;
    vbuf_init(&out, DKIM_SIG_MAX);
    struct dkim_params p;
    memset(&p, 0, sizeof(p));
    p.timestamp = 1795443300;
    /* the names to sign prepared once, as volleyd does when its configuration loads */
    char herr[200];
    struct dkim_hlist *hl = dkim_hlist_new(NULL, herr, sizeof(herr));
    if (hl == NULL) {
        fprintf(stderr, "bench_dkim: %s\n", herr);
        return 1;
    }
    p.hlist = hl;
    for (; i < argc; i++) {
        char err[512];
        struct dkim_key *k = dkim_key_load(argv[i], "example.com", "bench", err, sizeof(err));
        if (k == NULL) {
            fprintf(stderr, "bench_dkim: %s\n", err);
            return 1;
        }
        struct bench_dkim_arg da = { k, &p, msg, len, &out };
        /* a per-recipient copy of a message already signed once: body hash reused */
        struct dkim_body_cache bc = { 0 };
        struct dkim_params pc = p;
        pc.bh = &bc;
        struct bench_dkim_arg dc = { k, &pc, msg, len, &out };
        if (bench_dkim_sign(&dc) < 0) return 1;
        /* warm up: first-use costs (provider method caches, page faults) */
        for (int w = 0; w < 20; w++)
            if (bench_dkim_sign(&da) < 0) return 1;
        struct bench_raw raw;
        if (bench_raw_init(&raw, argv[i]) < 0) {
            fprintf(stderr, "bench_dkim: %s: OpenSSL cannot sign with it\n", argv[i]);
            return 1;
        }
        bool ed = raw.pc == NULL;
        unsigned long n = 0, rn = 0, sn = 0, cn = 0;
        double el = 0, rel = 0, sel = 0, cel = 0, start = bench_now();
        do {
            if (bench_slice(bench_dkim_sign, &da, &n, &el) < 0 ||
                bench_slice(bench_dkim_sign, &dc, &cn, &cel) < 0 ||
                bench_slice(bench_raw_sign, &raw, &rn, &rel) < 0 ||
                (ed && bench_slice(bench_sodium_sign, &raw, &sn, &sel) < 0)) {
                fprintf(stderr, "bench_dkim: %s: signing failed\n", argv[i]);
                return 1;
            }
        } while (bench_now() - start < (ed ? 4 : 3) * secs);
        const char *alg = dkim_alg_str(dkim_key_alg(k));
        int bits = dkim_key_bits(k);
        printf("dkim %s %d %lu %.2f %.1f %.2f\n", alg, bits, n, el, (double)n / el,
               el * 1e6 / (double)n);
        printf("copy %s %d %lu %.2f %.1f %.2f\n", alg, bits, cn, cel, (double)cn / cel,
               cel * 1e6 / (double)cn);
        printf("raw %s %d %lu %.2f %.1f %.2f\n", alg, bits, rn, rel, (double)rn / rel,
               rel * 1e6 / (double)rn);
        if (ed) {
            printf("sodium %s %d %lu %.2f %.1f %.2f\n", alg, bits, sn, sel, (double)sn / sel,
                   sel * 1e6 / (double)sn);
            printf("ratio %s %d %.3f %.3f\n", alg, bits, ((double)n / el) / ((double)rn / rel),
                   ((double)n / el) / ((double)sn / sel));
        } else {
            printf("ratio %s %d %.3f\n", alg, bits, ((double)n / el) / ((double)rn / rel));
        }
        bench_raw_free(&raw);
        dkim_key_free(k);
    }
    printf("(message %zu octets, relaxed/relaxed, one thread)\n", len);
    vbuf_free(&out);
    free(msg);
    dkim_hlist_free(hl);
    return 0;
}
