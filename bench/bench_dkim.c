/*
 * bench_dkim - DKIM signing rate of one thread.
 *
 * For each key file given, loads it once and calls dkim_sign() on the same
 * synthetic message (a typical bulk header section and a body of 76-column text,
 * -s octets in all, default 4096) for -t seconds (default 3), relaxed/relaxed with
 * t= set, the output buffer reused.  Prints one line per key:
 *
 *   dkim <alg> <bits> <signatures> <seconds> <sign/s> <us/sign>
 *
 * bench/dkim.sh puts these next to `openssl speed` on the same machine.
 *
 * Usage: bench_dkim [-t SECONDS] [-s MSGSIZE] KEYFILE...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

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

/* A bare OpenSSL signer, set up once as `openssl speed` does. */
struct bench_raw {
    EVP_PKEY *pkey;
    EVP_PKEY_CTX *pc; /* RSA */
    EVP_MD_CTX *mc;   /* Ed25519 */
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
    r->mc = EVP_MD_CTX_new();
    return r->mc != NULL && EVP_DigestSignInit_ex(r->mc, NULL, NULL, NULL, NULL, r->pkey, NULL) == 1
               ? 0
               : -1;
}

/* bench_raw_sign - one bare signature of a 32-octet input */
static int bench_raw_sign(struct bench_raw *r)
{
    static const unsigned char in[32] = { 1, 2, 3 };
    unsigned char sig[1024];
    size_t sl = sizeof(sig);
    if (r->pc != NULL) return EVP_PKEY_sign(r->pc, sig, &sl, in, sizeof(in)) == 1 ? 0 : -1;
    return EVP_DigestSign(r->mc, sig, &sl, in, sizeof(in)) == 1 ? 0 : -1;
}

/* bench_raw_free - release r */
static void bench_raw_free(struct bench_raw *r)
{
    EVP_PKEY_CTX_free(r->pc);
    EVP_MD_CTX_free(r->mc);
    EVP_PKEY_free(r->pkey);
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
    for (; i < argc; i++) {
        char err[512];
        struct dkim_key *k = dkim_key_load(argv[i], "example.com", "bench", err, sizeof(err));
        if (k == NULL) {
            fprintf(stderr, "bench_dkim: %s\n", err);
            return 1;
        }
        /* warm up: first-use costs (provider method caches, page faults) */
        for (int w = 0; w < 20; w++) {
            vbuf_reset(&out);
            if (dkim_sign(k, &p, (const uint8_t *)msg, len, &out, err, sizeof(err)) < 0) {
                fprintf(stderr, "bench_dkim: %s\n", err);
                return 1;
            }
        }
        struct bench_raw raw;
        if (bench_raw_init(&raw, argv[i]) < 0) {
            fprintf(stderr, "bench_dkim: %s: OpenSSL cannot sign with it\n", argv[i]);
            return 1;
        }
        unsigned long n = 0, rn = 0;
        double el = 0, rel = 0, start = bench_now();
        do {
            double t0 = bench_now(), t1;
            do {
                for (int b = 0; b < 8; b++) {
                    vbuf_reset(&out);
                    if (dkim_sign(k, &p, (const uint8_t *)msg, len, &out, err, sizeof(err)) < 0) {
                        fprintf(stderr, "bench_dkim: %s\n", err);
                        return 1;
                    }
                }
                n += 8;
                t1 = bench_now();
            } while (t1 - t0 < 0.1);
            el += t1 - t0;
            t0 = bench_now();
            do {
                for (int b = 0; b < 8; b++)
                    if (bench_raw_sign(&raw) < 0) {
                        fprintf(stderr, "bench_dkim: raw signature failed\n");
                        return 1;
                    }
                rn += 8;
                t1 = bench_now();
            } while (t1 - t0 < 0.1);
            rel += t1 - t0;
        } while (bench_now() - start < 2 * secs);
        const char *alg = dkim_alg_str(dkim_key_alg(k));
        int bits = dkim_key_bits(k);
        printf("dkim %s %d %lu %.2f %.1f %.2f\n", alg, bits, n, el, (double)n / el,
               el * 1e6 / (double)n);
        printf("raw %s %d %lu %.2f %.1f %.2f\n", alg, bits, rn, rel, (double)rn / rel,
               rel * 1e6 / (double)rn);
        printf("ratio %s %d %.3f\n", alg, bits, ((double)n / el) / ((double)rn / rel));
        bench_raw_free(&raw);
        dkim_key_free(k);
    }
    printf("(message %zu octets, relaxed/relaxed, one thread)\n", len);
    vbuf_free(&out);
    free(msg);
    return 0;
}
