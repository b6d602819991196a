/*
 * dkim - DKIM signer: RFC 6376 with rsa-sha256 and ed25519-sha256 (RFC 8463).
 *
 * Owns the private keys Volley signs with (struct dkim_key), the canonicalization
 * of header fields and bodies, the selection of signed header fields, and the
 * layout of the DKIM-Signature field.  Entry points: dkim_key_load() once per key,
 * dkim_sign() once per message, dkim_key_dns_record() and
 * dkim_key_matches_record() for publishing and checking the TXT record.
 *
 * The signing path:
 *
 *   1. dkim_hdr_parse() splits the header section into fields (offsets only, the
 *      message is never copied) and finds the body;
 *   2. the body is canonicalized on the fly into a SHA-256 context (bh=) through a
 *      small staging buffer (struct dkim_sink), so a long body costs one pass and
 *      no allocation;
 *   3. the h= list is chosen (each listed name once per occurrence, From once
 *      more) and the DKIM-Signature field is laid out in the caller's buffer up to
 *      and including "b=";
 *   4. the selected fields, bottom-up per RFC 6376 5.4.2, then that prefix without
 *      its CRLF, are canonicalized into a second SHA-256;
 *   5. the 32-octet hash is signed: RSA PKCS#1 v1.5 with a SHA-256 DigestInfo
 *      (identical to EVP_DigestSign with SHA-256 over the data), Ed25519 as
 *      PureEdDSA over the hash (RFC 8463 3); b= is appended folded.
 *
 * OpenSSL reads every key, hashes, and makes the RSA signatures.  The Ed25519
 * signature itself is libsodium's: OpenSSL 3.0 computes Ed25519 with 25.5-bit
 * field arithmetic and fetches SHA-512 on every call, and signs 2.3 times slower
 * on the same core (bench/README.md), which is most of the cost of signing a
 * message.  Ed25519 is deterministic, so the two produce the same octets; the key
 * loader proves that for each key by signing a probe with both and refusing the
 * key if they differ (and tests check the RFC 8463 vector).
 *
 * Invariants: a struct dkim_key is immutable after dkim_key_load(), so threads
 * share it without locks (OpenSSL 3 allows concurrent signing with one EVP_PKEY,
 * libsodium's signing only reads the key; every call has its own contexts).
 * Lines are CRLF-delimited only: a bare CR or LF is an ordinary octet, exactly as
 * a verifier that receives these bytes sees it.  l= is never emitted.  Nothing
 * here reads a clock, logs or aborts.
 */
#include "dkim.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <sodium.h>

#define DKIM_DOMAIN_MAX   253
#define DKIM_SELECTOR_MAX 253
#define DKIM_AUID_MAX     512
#define DKIM_NAME_MAX     128  /* a header field name in the caller's list */
#define DKIM_FOLD_COL     78   /* RFC 5322 2.1.1 SHOULD */
#define DKIM_SINK_BUF     4096 /* staging buffer in front of the hash */
#define DKIM_FIELDS_STACK 128  /* header fields held on the stack before malloc */
#define DKIM_SIG_BYTES    512  /* a 4096-bit RSA signature */
#define DKIM_PUB_DER_MAX  600  /* SubjectPublicKeyInfo of a 4096-bit RSA key */
#define DKIM_B64(n)       ((((n) + 2) / 3) * 4 + 1)
#define DKIM_RECORD_MAX   16384 /* octets of a TXT record we are asked to check */

struct dkim_key {
    EVP_PKEY *pkey;
    EVP_MD *sha256; /* fetched once: a per-call implicit fetch costs a lock */
    enum DKIM_ALG alg;
    int bits;
    size_t sig_len;
    char domain[DKIM_DOMAIN_MAX + 1];
    char selector[DKIM_SELECTOR_MAX + 1];
    char label[DKIM_DOMAIN_MAX + DKIM_SELECTOR_MAX + 2]; /* "domain/selector" */
    /* Ed25519: libsodium's secret key (seed, then public key), wiped on free */
    uint8_t ed_sk[crypto_sign_ed25519_SECRETKEYBYTES];
    uint8_t pub[DKIM_PUB_DER_MAX]; /* SPKI DER (RSA) or the raw 32 octets */
    size_t pub_len;
    char pub_b64[DKIM_B64(DKIM_PUB_DER_MAX)];
};

static const char *const dkim_default_list[] = {
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding", "list-id",
    "list-unsubscribe", "list-unsubscribe-post", "feedback-id", "sender", NULL,
};

/* dkim_errf - format a reason into err[errn] (both may be empty) */
static void dkim_errf(char *err, size_t errn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void dkim_errf(char *err, size_t errn, const char *fmt, ...)
{
    if (err == NULL || errn == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errn, fmt, ap);
    va_end(ap);
}

const char *dkim_alg_str(enum DKIM_ALG a)
{
    switch (a) {
    case DKIM_RSA_SHA256: return "rsa-sha256";
    case DKIM_ED25519_SHA256: return "ed25519-sha256";
    }
    return "?";
}

const char *dkim_canon_str(enum DKIM_CANON c)
{
    switch (c) {
    case DKIM_CANON_RELAXED: return "relaxed";
    case DKIM_CANON_SIMPLE: return "simple";
    }
    return "?";
}

const char *const *dkim_default_headers(void)
{
    return dkim_default_list;
}

/* dkim_wsp - SP or HTAB, the only whitespace canonicalization knows */
static inline bool dkim_wsp(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* dkim_lower - ASCII lower case, locale-free */
static inline uint8_t dkim_lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

/* dkim_name_eq - case-insensitive equality of a field name and a list name */
static bool dkim_name_eq(const uint8_t *a, size_t an, const char *b, size_t bn)
{
    if (an != bn) return false;
    for (size_t i = 0; i < an; i++)
        if (dkim_lower(a[i]) != dkim_lower((uint8_t)b[i])) return false;
    return true;
}

/* ------------------------------------------------------------------ the sink */

/*
 * The sink: canonical bytes go either into a hash or into a vbuf (tests), always
 * through a staging buffer so that the many short runs canonicalization produces
 * cost a memcpy each rather than a hash update each.
 */
struct dkim_sink {
    EVP_MD_CTX *md;
    struct vbuf *vb;
    int err;
    size_t n;
    uint8_t buf[DKIM_SINK_BUF];
};

/* dkim_sink_start - aim an empty s at a hash (md) or, with md NULL, at vb */
static void dkim_sink_start(struct dkim_sink *s, EVP_MD_CTX *md, struct vbuf *vb)
{
    s->md = md;
    s->vb = vb;
    s->err = 0;
    s->n = 0;
}

/* dkim_sink_write - hand n octets to the target, bypassing the staging buffer */
static void dkim_sink_write(struct dkim_sink *s, const void *p, size_t n)
{
    if (s->err != 0 || n == 0) return;
    if (s->md != NULL) {
        if (EVP_DigestUpdate(s->md, p, n) != 1) s->err = -1;
    } else if (vbuf_append(s->vb, p, n) < 0) {
        s->err = -1;
    }
}

/* dkim_sink_flush - empty the staging buffer into the target */
static void dkim_sink_flush(struct dkim_sink *s)
{
    dkim_sink_write(s, s->buf, s->n);
    s->n = 0;
}

/* dkim_sink_put - append n octets; large runs skip the staging copy */
static void dkim_sink_put(struct dkim_sink *s, const void *p, size_t n)
{
    if (n > sizeof(s->buf) - s->n) {
        dkim_sink_flush(s);
        if (n >= sizeof(s->buf) / 2) {
            dkim_sink_write(s, p, n);
            return;
        }
    }
    memcpy(s->buf + s->n, p, n);
    s->n += n;
}

/* dkim_sink_byte - append one octet */
static inline void dkim_sink_byte(struct dkim_sink *s, uint8_t c)
{
    if (s->n == sizeof(s->buf)) dkim_sink_flush(s);
    s->buf[s->n++] = c;
}

/* ------------------------------------------------------------ canonicalization */

/*
 * dkim_body_simple - RFC 6376 3.4.3: the body as is, trailing empty lines removed,
 * an empty body is one CRLF.  A last line without CRLF is completed (the SMTP
 * client has to end DATA with one anyway).  No copy: the retained span goes to
 * the hash directly.
 */
static void dkim_body_simple(struct dkim_sink *s, const uint8_t *b, size_t n)
{
    if (n > 0 && !(n >= 2 && b[n - 2] == '\r' && b[n - 1] == '\n')) {
        dkim_sink_put(s, b, n);
        dkim_sink_put(s, "\r\n", 2);
        return;
    }
    while (n >= 4 && memcmp(b + n - 4, "\r\n\r\n", 4) == 0)
        n -= 2;
    if (n <= 2) {
        dkim_sink_put(s, "\r\n", 2);
        return;
    }
    dkim_sink_put(s, b, n);
}

#ifndef __SSE2__
/* dkim_bytes_eq - high bit set in each octet of x equal to the octet of c (c is
 * one octet repeated); exact, no false positives */
static inline uint64_t dkim_bytes_eq(uint64_t x, uint64_t c)
{
    const uint64_t low7 = 0x7f7f7f7f7f7f7f7fULL;
    uint64_t y = x ^ c;
    return ~(((y & low7) + low7) | y | low7);
}
#endif

/*
 * dkim_body_relaxed - RFC 6376 3.4.4: WSP at line ends removed, other WSP runs to
 * one SP, trailing empty lines removed; an empty result stays empty.
 *
 * One pass over the body, not one per line: the end is trimmed first (trailing SP,
 * TAB and CRLF pairs: what would become empty lines and line-end WSP of the last
 * line), then the rest is scanned 16 octets at a time (SSE2; 8 without it) for the
 * only places that change - a TAB, or a SP followed by SP, TAB or CR - and the
 * unchanged runs between them go to the hash whole.  A WSP run followed by CRLF is
 * dropped, any other becomes one SP.  The last line is completed with CRLF.
 */
static void dkim_body_relaxed(struct dkim_sink *s, const uint8_t *b, size_t n)
{
    size_t e = n;
    for (;;) {
        if (e > 0 && dkim_wsp(b[e - 1]))
            e--;
        else if (e >= 2 && b[e - 2] == '\r' && b[e - 1] == '\n')
            e -= 2;
        else
            break;
    }
    if (e == 0) return; /* nothing but empty lines: the empty body */
    size_t run = 0, i = 0;
#ifdef __SSE2__
    const __m128i sp16 = _mm_set1_epi8(' '), tab16 = _mm_set1_epi8('\t'),
                  cr16 = _mm_set1_epi8('\r');
#else
    const uint64_t sp8 = 0x2020202020202020ULL, tab8 = 0x0909090909090909ULL,
                   cr8 = 0x0d0d0d0d0d0d0d0dULL;
#endif
    while (i < e) {
#ifdef __SSE2__
        /* octets i..i+15 and, one further on, what follows each of them */
        if (i + 17 <= e) {
            __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(b + i));
            __m128i y = _mm_loadu_si128((const __m128i *)(const void *)(b + i + 1));
            __m128i wsp_next = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(y, sp16), _mm_cmpeq_epi8(y, tab16)),
                _mm_cmpeq_epi8(y, cr16));
            __m128i change = _mm_or_si128(_mm_cmpeq_epi8(x, tab16),
                                          _mm_and_si128(_mm_cmpeq_epi8(x, sp16), wsp_next));
            unsigned m = (unsigned)_mm_movemask_epi8(change);
            if (m == 0) {
                i += 16;
                continue;
            }
            i += (size_t)__builtin_ctz(m); /* the first change: handled below */
        }
#else
        if (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && i + 8 <= e) {
            uint64_t x;
            memcpy(&x, b + i, 8);
            uint64_t sp = dkim_bytes_eq(x, sp8), tab = dkim_bytes_eq(x, tab8),
                     cr = dkim_bytes_eq(x, cr8);
            /* little-endian: octet k+1's flag shifted onto octet k */
            if ((tab | (sp & ((sp | tab | cr) >> 8))) == 0) {
                i += 7; /* the eighth octet is only the "followed by" of the seventh */
                continue;
            }
        }
#endif
        if (b[i] != '\t' && !(b[i] == ' ' && i + 1 < e && (dkim_wsp(b[i + 1]) || b[i + 1] == '\r'))) {
            i++;
            continue;
        }
        size_t w = i;
        while (w < e && dkim_wsp(b[w]))
            w++;
        dkim_sink_put(s, b + run, i - run);
        /* a WSP run ending a line goes; e never ends in WSP, so w < e here */
        if (!(w + 1 < e && b[w] == '\r' && b[w + 1] == '\n')) dkim_sink_byte(s, ' ');
        i = run = w;
    }
    dkim_sink_put(s, b + run, e - run);
    dkim_sink_put(s, "\r\n", 2);
}

/* ------------------------------------------------------------ the body memo */

struct dkim_memo_entry {
    uint8_t *body; /* copy of the raw body; NULL while the entry is empty */
    size_t len, cap;
    enum DKIM_CANON canon;
    uint64_t used; /* memo clock at the last hit or fill: the oldest is replaced */
    uint8_t digest[32];
};

struct dkim_body_memo {
    size_t n, max_body;
    uint64_t clock, hits;
    struct dkim_memo_entry e[];
};

struct dkim_body_memo *dkim_body_memo_new(size_t entries, size_t max_body)
{
    if (entries == 0 || entries > 1024) return NULL;
    struct dkim_body_memo *m = calloc(1, sizeof(*m) + entries * sizeof(m->e[0]));
    if (m == NULL) return NULL;
    m->n = entries;
    m->max_body = max_body;
    return m;
}

uint64_t dkim_body_memo_hits(const struct dkim_body_memo *m)
{
    return m != NULL ? m->hits : 0;
}

void dkim_body_memo_free(struct dkim_body_memo *m)
{
    if (m == NULL) return;
    for (size_t i = 0; i < m->n; i++) free(m->e[i].body);
    free(m);
}

/* dkim_memo_find - the digest of body [b, b+n) in form c into dgst, if m has it */
static bool dkim_memo_find(struct dkim_body_memo *m, enum DKIM_CANON c, const uint8_t *b,
                           size_t n, uint8_t dgst[32])
{
    if (m == NULL) return false;
    for (size_t i = 0; i < m->n; i++) {
        struct dkim_memo_entry *e = &m->e[i];
        if (e->body != NULL && e->len == n && e->canon == c && memcmp(e->body, b, n) == 0) {
            memcpy(dgst, e->digest, 32);
            e->used = ++m->clock;
            m->hits++;
            return true;
        }
    }
    return false;
}

/* dkim_memo_put - remember dgst for body [b, b+n) in form c, in place of the
 * entry least recently used; a body over max_body, or no memory, is not kept */
static void dkim_memo_put(struct dkim_body_memo *m, enum DKIM_CANON c, const uint8_t *b, size_t n,
                          const uint8_t dgst[32])
{
    if (m == NULL || n > m->max_body) return;
    struct dkim_memo_entry *e = &m->e[0];
    for (size_t i = 0; i < m->n && e->body != NULL; i++)
        if (m->e[i].body == NULL || m->e[i].used < e->used) e = &m->e[i];
    if (e->body == NULL || e->cap < n) {
        uint8_t *nb = malloc(n > 0 ? n : 1);
        if (nb == NULL) return; /* the old entry stays as it was */
        free(e->body);
        e->body = nb;
        e->cap = n > 0 ? n : 1;
    }
    memcpy(e->body, b, n);
    e->len = n;
    e->canon = c;
    e->used = ++m->clock;
    memcpy(e->digest, dgst, 32);
}

/* dkim_body_canon - the body in canonical form c into s */
static void dkim_body_canon(struct dkim_sink *s, enum DKIM_CANON c, const uint8_t *b, size_t n)
{
    if (c == DKIM_CANON_SIMPLE)
        dkim_body_simple(s, b, n);
    else
        dkim_body_relaxed(s, b, n);
}

/*
 * dkim_field_canon - one header field [f, f+n) (without its final CRLF) in form c,
 * followed by CRLF when crlf.  Relaxed (RFC 6376 3.4.2): name lower-cased, WSP
 * before the colon dropped, the value unfolded (every CRLF inside a field is a
 * fold), WSP runs to one SP, WSP at both ends of the value dropped.
 */
static void dkim_field_canon(struct dkim_sink *s, enum DKIM_CANON c, const uint8_t *f, size_t n,
                             bool crlf)
{
    if (c == DKIM_CANON_SIMPLE) {
        dkim_sink_put(s, f, n);
        if (crlf) dkim_sink_put(s, "\r\n", 2);
        return;
    }
    const uint8_t *colon = memchr(f, ':', n);
    size_t nl = colon ? (size_t)(colon - f) : n, i;
    size_t nameend = nl;
    while (nameend > 0 && (dkim_wsp(f[nameend - 1]) || f[nameend - 1] == '\r' ||
                           f[nameend - 1] == '\n'))
        nameend--;
    for (i = 0; i < nameend; i++)
        dkim_sink_byte(s, dkim_lower(f[i]));
    dkim_sink_byte(s, ':');
    /* the value: runs of ordinary octets go out whole; WSP and folds between
     * them become one SP, at either end nothing */
    bool any = false, space = false;
    i = nl + 1;
    while (i < n) {
        uint8_t ch = f[i];
        if (dkim_wsp(ch) || (ch == '\r' && i + 1 < n && f[i + 1] == '\n')) {
            space = any;
            i += ch == '\r' ? 2 : 1;
            continue;
        }
        size_t run = i++;
        while (i < n && !dkim_wsp(f[i]) && !(f[i] == '\r' && i + 1 < n && f[i + 1] == '\n'))
            i++;
        if (space) dkim_sink_byte(s, ' ');
        space = false;
        any = true;
        dkim_sink_put(s, f + run, i - run);
    }
    if (crlf) dkim_sink_put(s, "\r\n", 2);
}

int dkim_canon_header(enum DKIM_CANON c, const uint8_t *field, size_t len, struct vbuf *out)
{
    struct dkim_sink *s = malloc(sizeof(*s));
    if (s == NULL) return -1;
    if (len >= 2 && field[len - 2] == '\r' && field[len - 1] == '\n') len -= 2;
    dkim_sink_start(s, NULL, out);
    dkim_field_canon(s, c, field, len, true);
    dkim_sink_flush(s);
    int rc = s->err;
    free(s);
    return rc;
}

int dkim_canon_body(enum DKIM_CANON c, const uint8_t *body, size_t len, struct vbuf *out)
{
    struct dkim_sink *s = malloc(sizeof(*s));
    if (s == NULL) return -1;
    dkim_sink_start(s, NULL, out);
    dkim_body_canon(s, c, body, len);
    dkim_sink_flush(s);
    int rc = s->err;
    free(s);
    return rc;
}

/* dkim_hash_body - SHA-256 of the canonical body into dgst (32 octets), using the
 * caller's context and staging sink */
static int dkim_hash_body(struct dkim_sink *s, EVP_MD_CTX *md, const EVP_MD *sha256,
                          enum DKIM_CANON c, const uint8_t *body, size_t len, uint8_t *dgst)
{
    unsigned int dl = 0;
    if (EVP_DigestInit_ex2(md, sha256, NULL) != 1) return -1;
    dkim_sink_start(s, md, NULL);
    dkim_body_canon(s, c, body, len);
    dkim_sink_flush(s);
    if (s->err != 0 || EVP_DigestFinal_ex(md, dgst, &dl) != 1 || dl != 32) return -1;
    return 0;
}

int dkim_body_hash(enum DKIM_CANON c, const uint8_t *body, size_t len, char *out, size_t n)
{
    uint8_t dgst[32];
    int rc = -1;
    if (n < DKIM_B64(32)) return -1;
    struct dkim_sink *s = malloc(sizeof(*s));
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (s != NULL && md != NULL && dkim_hash_body(s, md, EVP_sha256(), c, body, len, dgst) == 0) {
        EVP_EncodeBlock((unsigned char *)out, dgst, 32);
        rc = 0;
    }
    EVP_MD_CTX_free(md);
    free(s);
    return rc;
}

/* ---------------------------------------------------------------------- keys */

/* dkim_no_passphrase - PEM password callback: encrypted keys are refused rather
 * than prompting on a terminal the daemon does not have */
static int dkim_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

/* dkim_name_ok - a domain or selector: labels of letters, digits, '-', '_' and
 * dots, nothing that could end a tag or a field */
static bool dkim_name_ok(const char *s, size_t max)
{
    size_t n = s ? strnlen(s, max + 1) : 0;
    if (n == 0 || n > max || s[0] == '.' || s[n - 1] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        if (!ok || (c == '.' && s[i + 1] == '.')) return false;
    }
    return true;
}

/* dkim_read_file - up to DKIM_KEY_FILE_MAX octets of path into a malloc'ed buffer
 * (caller cleanses and frees); -1 with err naming the file */
static int dkim_read_file(const char *path, uint8_t **data, size_t *len, char *err, size_t errn)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        dkim_errf(err, errn, "dkim key %s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        dkim_errf(err, errn, "dkim key %s: not a regular file", path);
        fclose(fp);
        return -1;
    }
    if (st.st_size > DKIM_KEY_FILE_MAX) {
        dkim_errf(err, errn, "dkim key %s: larger than %d octets, not a key", path,
                  DKIM_KEY_FILE_MAX);
        fclose(fp);
        return -1;
    }
    uint8_t *buf = malloc(DKIM_KEY_FILE_MAX + 1);
    if (buf == NULL) {
        dkim_errf(err, errn, "dkim key %s: out of memory", path);
        fclose(fp);
        return -1;
    }
    size_t n = fread(buf, 1, DKIM_KEY_FILE_MAX + 1, fp);
    int rerr = ferror(fp);
    fclose(fp);
    if (rerr || n > DKIM_KEY_FILE_MAX) {
        dkim_errf(err, errn, "dkim key %s: %s", path, rerr ? "read error" : "file grew too large");
        OPENSSL_cleanse(buf, DKIM_KEY_FILE_MAX + 1);
        free(buf);
        return -1;
    }
    *data = buf;
    *len = n;
    return 0;
}

/* dkim_key_pub - record the public key encodings of k->pkey (SPKI DER for RSA,
 * the raw 32 octets for Ed25519) and their base64 */
static int dkim_key_pub(struct dkim_key *k)
{
    if (k->alg == DKIM_ED25519_SHA256) {
        size_t n = sizeof(k->pub);
        if (EVP_PKEY_get_raw_public_key(k->pkey, k->pub, &n) != 1 || n != 32) return -1;
        k->pub_len = n;
    } else {
        int n = i2d_PUBKEY(k->pkey, NULL);
        if (n <= 0 || (size_t)n > sizeof(k->pub)) return -1;
        unsigned char *p = k->pub;
        if (i2d_PUBKEY(k->pkey, &p) != n) return -1;
        k->pub_len = (size_t)n;
    }
    EVP_EncodeBlock((unsigned char *)k->pub_b64, k->pub, (int)k->pub_len);
    return 0;
}

/* dkim_key_ed_sodium - derive libsodium's Ed25519 secret key from the seed OpenSSL
 * read, and prove both libraries sign alike with it: the same public key, and
 * the same signature of a probe hash (one OpenSSL signature per key load) */
static int dkim_key_ed_sodium(struct dkim_key *k)
{
    static const uint8_t probe[32] = "volley dkim ed25519 probe hash.";
    uint8_t seed[crypto_sign_ed25519_SEEDBYTES], pk[crypto_sign_ed25519_PUBLICKEYBYTES];
    uint8_t ours[crypto_sign_ed25519_BYTES], theirs[crypto_sign_ed25519_BYTES];
    size_t n = sizeof(seed), tn = sizeof(theirs);
    unsigned long long on = 0;
    int rc = -1;
    EVP_MD_CTX *mc = EVP_MD_CTX_new();
    if (sodium_init() < 0 || mc == NULL ||
        EVP_PKEY_get_raw_private_key(k->pkey, seed, &n) != 1 || n != sizeof(seed) ||
        crypto_sign_ed25519_seed_keypair(pk, k->ed_sk, seed) != 0 || k->pub_len != sizeof(pk) ||
        memcmp(pk, k->pub, sizeof(pk)) != 0 ||
        crypto_sign_ed25519_detached(ours, &on, probe, sizeof(probe), k->ed_sk) != 0 ||
        on != sizeof(ours) ||
        EVP_DigestSignInit_ex(mc, NULL, NULL, NULL, NULL, k->pkey, NULL) != 1 ||
        EVP_DigestSign(mc, theirs, &tn, probe, sizeof(probe)) != 1 || tn != sizeof(theirs))
        goto done;
    rc = memcmp(ours, theirs, sizeof(ours)) == 0 ? 0 : -1;
done:
    EVP_MD_CTX_free(mc);
    sodium_memzero(seed, sizeof(seed));
    if (rc != 0) sodium_memzero(k->ed_sk, sizeof(k->ed_sk));
    return rc;
}

struct dkim_key *dkim_key_load(const char *path, const char *domain, const char *selector,
                               char *err, size_t errn)
{
    if (path == NULL) {
        dkim_errf(err, errn, "dkim key: no path");
        return NULL;
    }
    if (!dkim_name_ok(domain, DKIM_DOMAIN_MAX)) {
        dkim_errf(err, errn, "dkim key %s: bad signing domain", path);
        return NULL;
    }
    if (!dkim_name_ok(selector, DKIM_SELECTOR_MAX)) {
        dkim_errf(err, errn, "dkim key %s: bad selector", path);
        return NULL;
    }
    uint8_t *data = NULL;
    size_t len = 0;
    if (dkim_read_file(path, &data, &len, err, errn) < 0) return NULL;

    EVP_PKEY *pkey = NULL;
    BIO *bio = BIO_new_mem_buf(data, (int)len);
    if (bio != NULL) pkey = PEM_read_bio_PrivateKey(bio, NULL, dkim_no_passphrase, NULL);
    BIO_free(bio);
    OPENSSL_cleanse(data, DKIM_KEY_FILE_MAX + 1);
    free(data);
    ERR_clear_error(); /* leave no queued OpenSSL errors behind on this thread */
    if (pkey == NULL) {
        dkim_errf(err, errn, "dkim key %s: not a PEM private key (or encrypted)", path);
        return NULL;
    }

    struct dkim_key *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        dkim_errf(err, errn, "dkim key %s: out of memory", path);
        EVP_PKEY_free(pkey);
        return NULL;
    }
    k->pkey = pkey;
    k->bits = EVP_PKEY_get_bits(pkey);
    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA) {
        k->alg = DKIM_RSA_SHA256;
        if (k->bits < DKIM_RSA_MIN_BITS || k->bits > DKIM_RSA_MAX_BITS) {
            dkim_errf(err, errn, "dkim key %s: RSA key of %d bits, need %d..%d", path, k->bits,
                      DKIM_RSA_MIN_BITS, DKIM_RSA_MAX_BITS);
            goto fail;
        }
    } else if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_ED25519) {
        k->alg = DKIM_ED25519_SHA256;
    } else {
        const char *t = EVP_PKEY_get0_type_name(pkey);
        dkim_errf(err, errn, "dkim key %s: wrong key type %s, need RSA or Ed25519", path,
                  t ? t : "?");
        goto fail;
    }
    k->sig_len = (size_t)EVP_PKEY_get_size(pkey);
    k->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (k->sig_len == 0 || k->sig_len > DKIM_SIG_BYTES || k->sha256 == NULL ||
        dkim_key_pub(k) < 0) {
        dkim_errf(err, errn, "dkim key %s: OpenSSL cannot use the key", path);
        goto fail;
    }
    if (k->alg == DKIM_ED25519_SHA256 && dkim_key_ed_sodium(k) < 0) {
        dkim_errf(err, errn, "dkim key %s: libsodium cannot use the Ed25519 key", path);
        goto fail;
    }
    str_copy(k->domain, sizeof(k->domain), domain);
    str_copy(k->selector, sizeof(k->selector), selector);
    snprintf(k->label, sizeof(k->label), "%s/%s", k->domain, k->selector);
    ERR_clear_error();
    return k;
fail:
    ERR_clear_error();
    dkim_key_free(k);
    return NULL;
}

void dkim_key_free(struct dkim_key *k)
{
    if (k == NULL) return;
    EVP_PKEY_free(k->pkey);
    EVP_MD_free(k->sha256);
    sodium_memzero(k->ed_sk, sizeof(k->ed_sk));
    free(k);
}

enum DKIM_ALG dkim_key_alg(const struct dkim_key *k)
{
    return k->alg;
}

const char *dkim_key_domain(const struct dkim_key *k)
{
    return k->domain;
}

const char *dkim_key_selector(const struct dkim_key *k)
{
    return k->selector;
}

const char *dkim_key_label(const struct dkim_key *k)
{
    return k->label;
}

int dkim_key_bits(const struct dkim_key *k)
{
    return k->bits;
}

int dkim_key_dns_record(const struct dkim_key *k, char *out, size_t n)
{
    int w = snprintf(out, n, "v=DKIM1; k=%s; p=%s",
                     k->alg == DKIM_ED25519_SHA256 ? "ed25519" : "rsa", k->pub_b64);
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

/* --------------------------------------------------------------- TXT records */

/* One tag=value of a record: spans into the caller's string. */
struct dkim_tag {
    const char *name, *val;
    size_t nlen, vlen;
};

#define DKIM_TAGS_MAX 32

/* dkim_rec_ws - whitespace a DNS TXT tag-list may carry (FWS, folded or not) */
static bool dkim_rec_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* dkim_rec_parse - RFC 6376 3.2 tag-list of s[0..n) into tags; -1 with why */
static int dkim_rec_parse(const char *s, size_t n, struct dkim_tag *tags, int *ntags, char *why,
                          size_t whyn)
{
    size_t i = 0;
    int nt = 0;
    while (i < n) {
        while (i < n && dkim_rec_ws(s[i]))
            i++;
        if (i == n) break;
        if (s[i] == ';') { /* an empty tag-spec, e.g. a trailing ";;" */
            i++;
            continue;
        }
        size_t ns = i;
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))) {
            dkim_errf(why, whyn, "bad tag name at offset %zu", i);
            return -1;
        }
        while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                         (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            i++;
        size_t ne = i;
        while (i < n && dkim_rec_ws(s[i]))
            i++;
        if (i == n || s[i] != '=') {
            dkim_errf(why, whyn, "tag %.*s has no '='", (int)(ne - ns), s + ns);
            return -1;
        }
        i++;
        while (i < n && dkim_rec_ws(s[i]))
            i++;
        size_t vs = i;
        while (i < n && s[i] != ';')
            i++;
        size_t ve = i;
        while (ve > vs && dkim_rec_ws(s[ve - 1]))
            ve--;
        if (i < n) i++; /* the ';' */
        for (int t = 0; t < nt; t++)
            if (tags[t].nlen == ne - ns && memcmp(tags[t].name, s + ns, ne - ns) == 0) {
                dkim_errf(why, whyn, "duplicate tag %.*s", (int)(ne - ns), s + ns);
                return -1;
            }
        if (nt == DKIM_TAGS_MAX) {
            dkim_errf(why, whyn, "more than %d tags", DKIM_TAGS_MAX);
            return -1;
        }
        tags[nt++] = (struct dkim_tag){ s + ns, s + vs, ne - ns, ve - vs };
    }
    *ntags = nt;
    return 0;
}

/* dkim_rec_find - the tag named name, or NULL */
static const struct dkim_tag *dkim_rec_find(const struct dkim_tag *tags, int nt, const char *name)
{
    size_t l = strlen(name);
    for (int i = 0; i < nt; i++)
        if (tags[i].nlen == l && memcmp(tags[i].name, name, l) == 0) return &tags[i];
    return NULL;
}

/* dkim_rec_list_has - does the colon-separated list v hold one of the words a, b */
static bool dkim_rec_list_has(const struct dkim_tag *t, const char *a, const char *b)
{
    size_t i = 0;
    while (i <= t->vlen) {
        size_t s = i;
        while (i < t->vlen && t->val[i] != ':')
            i++;
        size_t e = i;
        while (s < e && dkim_rec_ws(t->val[s]))
            s++;
        while (e > s && dkim_rec_ws(t->val[e - 1]))
            e--;
        if ((e - s == strlen(a) && strncasecmp(t->val + s, a, e - s) == 0) ||
            (b != NULL && e - s == strlen(b) && strncasecmp(t->val + s, b, e - s) == 0))
            return true;
        i++;
    }
    return false;
}

/* dkim_rec_pubkey_eq - is the DER public key der[n] (SPKI, or a bare PKCS#1
 * RSAPublicKey as some publishers use) the public half of k; -1 unparsable */
static int dkim_rec_pubkey_eq(const struct dkim_key *k, const uint8_t *der, size_t n)
{
    const unsigned char *p = der;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)n);
    if (pub == NULL) {
        p = der;
        pub = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)n);
    }
    ERR_clear_error();
    if (pub == NULL) return -1;
    int eq = EVP_PKEY_eq(k->pkey, pub);
    EVP_PKEY_free(pub);
    ERR_clear_error();
    return eq == 1 ? 1 : 0;
}

int dkim_key_matches_record(const struct dkim_key *k, const char *txt, char *why, size_t whyn)
{
    struct dkim_tag tags[DKIM_TAGS_MAX];
    int nt = 0;
    if (txt == NULL) {
        dkim_errf(why, whyn, "no record");
        return -1;
    }
    size_t n = strnlen(txt, DKIM_RECORD_MAX + 1);
    if (n > DKIM_RECORD_MAX) {
        dkim_errf(why, whyn, "record longer than %d octets", DKIM_RECORD_MAX);
        return -1;
    }
    if (dkim_rec_parse(txt, n, tags, &nt, why, whyn) < 0) return -1;
    const struct dkim_tag *v = dkim_rec_find(tags, nt, "v");
    if (v != NULL && (v != &tags[0] || v->vlen != 5 || memcmp(v->val, "DKIM1", 5) != 0)) {
        dkim_errf(why, whyn, "v= must come first and be DKIM1");
        return -1;
    }
    const struct dkim_tag *p = dkim_rec_find(tags, nt, "p");
    if (p == NULL) {
        dkim_errf(why, whyn, "no p= tag");
        return -1;
    }
    const struct dkim_tag *kt = dkim_rec_find(tags, nt, "k");
    const char *want = k->alg == DKIM_ED25519_SHA256 ? "ed25519" : "rsa";
    if (kt == NULL ? k->alg != DKIM_RSA_SHA256
                   : (kt->vlen != strlen(want) || strncasecmp(kt->val, want, kt->vlen) != 0)) {
        dkim_errf(why, whyn, "record is k=%.*s, the key is %s", kt ? (int)kt->vlen : 3,
                  kt ? kt->val : "rsa", want);
        return 0;
    }
    const struct dkim_tag *h = dkim_rec_find(tags, nt, "h");
    if (h != NULL && !dkim_rec_list_has(h, "sha256", NULL)) {
        dkim_errf(why, whyn, "h= does not allow sha256");
        return 0;
    }
    const struct dkim_tag *s = dkim_rec_find(tags, nt, "s");
    if (s != NULL && !dkim_rec_list_has(s, "email", "*")) {
        dkim_errf(why, whyn, "s= does not allow email");
        return 0;
    }

    /* p= may carry FWS anywhere (RFC 6376 3.6.1); base64 without it is decoded */
    char b64[DKIM_RECORD_MAX + 1];
    size_t bl = 0;
    for (size_t i = 0; i < p->vlen; i++)
        if (!dkim_rec_ws(p->val[i])) b64[bl++] = p->val[i];
    if (bl == 0) {
        dkim_errf(why, whyn, "key revoked (empty p=)");
        return 0;
    }
    if (bl % 4 != 0 || bl > 4 * ((DKIM_PUB_DER_MAX * 2) / 3)) {
        dkim_errf(why, whyn, "p= is not base64 of a key");
        return -1;
    }
    uint8_t der[DKIM_PUB_DER_MAX * 2];
    int dl = EVP_DecodeBlock(der, (const unsigned char *)b64, (int)bl);
    if (dl < 0) {
        dkim_errf(why, whyn, "p= is not base64");
        return -1;
    }
    /* EVP_DecodeBlock counts the '=' padding as zero octets */
    if (b64[bl - 1] == '=') dl--;
    if (b64[bl - 2] == '=') dl--;
    int eq;
    if (k->alg == DKIM_ED25519_SHA256) {
        if (dl != 32) {
            dkim_errf(why, whyn, "p= is %d octets, an Ed25519 key is 32", dl);
            return -1;
        }
        eq = memcmp(der, k->pub, 32) == 0;
    } else {
        eq = dkim_rec_pubkey_eq(k, der, (size_t)dl);
        if (eq < 0) {
            dkim_errf(why, whyn, "p= is not an RSA public key");
            return -1;
        }
    }
    if (!eq) dkim_errf(why, whyn, "p= is a different key");
    return eq;
}

/* ------------------------------------------------------------------- signing */

/* One header field of the message: offsets into it. */
struct dkim_field {
    size_t off, len; /* the field without its final CRLF */
    size_t namelen;  /* the name, WSP before the colon excluded */
    bool used;       /* already picked by an h= entry (RFC 6376 5.4.2) */
};

/* The parsed header section; fields points at stackf or at a malloc'ed array. */
struct dkim_hdrs {
    struct dkim_field *fields;
    size_t n, cap;
    size_t body; /* offset of the body */
    struct dkim_field stackf[DKIM_FIELDS_STACK];
};

/* dkim_hdrs_free - release a heap field array */
static void dkim_hdrs_free(struct dkim_hdrs *h)
{
    if (h->fields != h->stackf) free(h->fields);
}

/* dkim_fname_ok - an octet of a field name (RFC 5322 ftext) */
static inline bool dkim_fname_ok(uint8_t c)
{
    return c >= 33 && c <= 126 && c != ':';
}

/*
 * dkim_hdr_parse - split the header section of m[0..len) into fields.  It ends at
 * the first empty line (the body follows it) or at the end of the data (no body).
 * Every field needs a name and a colon on its first line and must end in CRLF;
 * anything else is a malformed header section (-1 with err).
 */
static int dkim_hdr_parse(const uint8_t *m, size_t len, struct dkim_hdrs *h, char *err,
                          size_t errn)
{
    size_t i = 0;
    h->fields = h->stackf;
    h->cap = DKIM_FIELDS_STACK;
    h->n = 0;
    for (;;) {
        if (i == len) {
            h->body = len;
            return 0;
        }
        if (len - i >= 2 && m[i] == '\r' && m[i + 1] == '\n') {
            h->body = i + 2;
            return 0;
        }
        if (dkim_wsp(m[i])) {
            dkim_errf(err, errn, "malformed header section: continuation line at offset %zu", i);
            return -1;
        }
        size_t ns = i;
        while (i < len && dkim_fname_ok(m[i]))
            i++;
        size_t ne = i;
        while (i < len && dkim_wsp(m[i]))
            i++;
        if (ne == ns || i == len || m[i] != ':') {
            dkim_errf(err, errn, "malformed header section: no field name at offset %zu", ns);
            return -1;
        }
        /* the field ends at the first CRLF not followed by WSP */
        size_t end;
        for (;;) {
            const uint8_t *lf = memchr(m + i, '\n', len - i);
            if (lf == NULL) {
                dkim_errf(err, errn, "malformed header section: field at offset %zu has no CRLF",
                          ns);
                return -1;
            }
            size_t j = (size_t)(lf - m);
            i = j + 1;
            if (j == 0 || m[j - 1] != '\r') continue; /* a bare LF is field content */
            if (i < len && dkim_wsp(m[i])) continue;  /* a fold */
            end = j - 1;
            break;
        }
        if (h->n == h->cap) {
            if (h->cap >= DKIM_MAX_FIELDS) {
                dkim_errf(err, errn, "more than %d header fields", DKIM_MAX_FIELDS);
                return -1;
            }
            size_t ncap = h->cap * 2;
            struct dkim_field *nf = malloc(ncap * sizeof(*nf));
            if (nf == NULL) {
                dkim_errf(err, errn, "out of memory");
                return -1;
            }
            memcpy(nf, h->fields, h->n * sizeof(*nf));
            if (h->fields != h->stackf) free(h->fields);
            h->fields = nf;
            h->cap = ncap;
        }
        h->fields[h->n++] = (struct dkim_field){ ns, end - ns, ne - ns, false };
    }
}

/* dkim_count - occurrences of the field name nm[nl] */
static size_t dkim_count(const uint8_t *m, const struct dkim_hdrs *h, const char *nm, size_t nl)
{
    size_t c = 0;
    for (size_t i = 0; i < h->n; i++)
        c += dkim_name_eq(m + h->fields[i].off, h->fields[i].namelen, nm, nl);
    return c;
}

/* dkim_pick - RFC 6376 5.4.2: the last field named nm[nl] not yet picked, or NULL
 * (an h= entry with no field left signs its absence) */
static struct dkim_field *dkim_pick(const uint8_t *m, struct dkim_hdrs *h, const char *nm,
                                    size_t nl)
{
    for (size_t i = h->n; i-- > 0;) {
        struct dkim_field *f = &h->fields[i];
        if (!f->used && dkim_name_eq(m + f->off, f->namelen, nm, nl)) {
            f->used = true;
            return f;
        }
    }
    return NULL;
}

/* The DKIM-Signature being laid out in the caller's buffer. */
struct dkim_out {
    struct vbuf *buf;
    size_t col; /* octets on the current line */
    int err;
};

/* dkim_out_put - append n octets (no CRLF inside), tracking the column */
static void dkim_out_put(struct dkim_out *o, const void *p, size_t n)
{
    if (o->err == 0 && vbuf_append(o->buf, p, n) < 0) o->err = -1;
    o->col += n;
}

/* dkim_out_fold - start a continuation line */
static void dkim_out_fold(struct dkim_out *o)
{
    if (o->err == 0 && vbuf_append(o->buf, "\r\n ", 3) < 0) o->err = -1;
    o->col = 1;
}

/* dkim_out_token - a space or a fold (when the token would pass the fold column),
 * then the token */
static void dkim_out_token(struct dkim_out *o, const char *t, size_t n)
{
    if (o->col + 1 + n > DKIM_FOLD_COL && o->col > 1)
        dkim_out_fold(o);
    else
        dkim_out_put(o, " ", 1);
    dkim_out_put(o, t, n);
}

/* dkim_out_tagf - a formatted tag as one token */
static void dkim_out_tagf(struct dkim_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void dkim_out_tagf(struct dkim_out *o, const char *fmt, ...)
{
    char t[DKIM_AUID_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t, sizeof(t), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(t)) {
        o->err = -1;
        return;
    }
    dkim_out_token(o, t, (size_t)n);
}

/* An h= entry: a name from the caller's list (not NUL-terminated in general). */
struct dkim_hname {
    const char *name;
    size_t len;
};

/* dkim_out_hlist - h= with entries joined by ':' (or " : "), folded between
 * entries; FWS around the colons is allowed there (RFC 6376 3.5) */
static void dkim_out_hlist(struct dkim_out *o, const struct dkim_hname *e, size_t ne, bool spaced)
{
    char name[DKIM_NAME_MAX + 4];
    for (size_t i = 0; i < ne; i++) {
        size_t n = 0;
        if (i == 0) {
            name[n++] = 'h';
            name[n++] = '=';
        }
        for (size_t j = 0; j < e[i].len; j++)
            name[n++] = (char)dkim_lower((uint8_t)e[i].name[j]);
        if (i + 1 == ne) name[n++] = ';';
        else if (!spaced) name[n++] = ':';
        if (i == 0 || spaced) {
            dkim_out_token(o, name, n);
            if (spaced && i + 1 < ne) dkim_out_token(o, ":", 1);
        } else {
            if (o->col + n > DKIM_FOLD_COL) dkim_out_fold(o);
            dkim_out_put(o, name, n);
        }
    }
}

/* dkim_hname_ok - a name the caller asked to sign: field-name octets only */
static bool dkim_hname_ok(const char *s, size_t n)
{
    if (n == 0 || n > DKIM_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!dkim_fname_ok((uint8_t)s[i])) return false;
    return true;
}

bool dkim_header_name_ok(const char *name)
{
    return dkim_hname_ok(name, strnlen(name, DKIM_NAME_MAX + 1));
}

/* dkim_auid_ok - i= value: printable, no ';' or whitespace, one '@' */
static bool dkim_auid_ok(const char *s)
{
    size_t n = strnlen(s, DKIM_AUID_MAX + 1);
    if (n == 0 || n > DKIM_AUID_MAX || strchr(s, '@') == NULL) return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= 32 || s[i] >= 127 || s[i] == ';') return false;
    return true;
}

struct dkim_hlist {
    size_t n;
    bool listed_from;       /* From is among the names */
    struct dkim_hname e[];  /* then the names' octets, each NUL-terminated */
};

/* dkim_list_len - how many names list holds; -1 with err past DKIM_MAX_FIELDS */
static int dkim_list_len(const char *const *list, size_t *nl, char *err, size_t errn)
{
    *nl = 0;
    while (list[*nl] != NULL) {
        if (*nl == DKIM_MAX_FIELDS) {
            dkim_errf(err, errn, "more than %d names to sign", DKIM_MAX_FIELDS);
            return -1;
        }
        (*nl)++;
    }
    return 0;
}

struct dkim_hlist *dkim_hlist_new(const char *const *names, char *err, size_t errn)
{
    const char *const *list = names ? names : dkim_default_list;
    size_t nl, bytes = 0;
    if (dkim_list_len(list, &nl, err, errn) < 0) return NULL;
    size_t *len = malloc((nl ? nl : 1) * sizeof(*len));
    if (len == NULL) {
        dkim_errf(err, errn, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < nl; i++) {
        len[i] = strnlen(list[i], DKIM_NAME_MAX + 1);
        if (!dkim_hname_ok(list[i], len[i])) {
            free(len);
            dkim_errf(err, errn, "bad header name to sign");
            return NULL;
        }
        bytes += len[i] + 1;
    }
    struct dkim_hlist *l = malloc(sizeof(*l) + nl * sizeof(l->e[0]) + bytes);
    if (l == NULL) {
        free(len);
        dkim_errf(err, errn, "out of memory");
        return NULL;
    }
    char *at = (char *)(l->e + nl);
    l->n = 0;
    l->listed_from = false;
    for (size_t i = 0; i < nl; i++) {
        bool dup = false;
        for (size_t j = 0; j < l->n && !dup; j++)
            dup = dkim_name_eq((const uint8_t *)l->e[j].name, l->e[j].len, list[i], len[i]);
        if (dup) continue;
        memcpy(at, list[i], len[i]);
        at[len[i]] = '\0';
        l->e[l->n++] = (struct dkim_hname){ at, len[i] };
        l->listed_from |= dkim_name_eq((const uint8_t *)at, len[i], "from", 4);
        at += len[i] + 1;
    }
    free(len);
    return l;
}

void dkim_hlist_free(struct dkim_hlist *l)
{
    free(l);
}

/*
 * dkim_hnames - the h= entries for this message into *out (malloc'ed, caller
 * frees; they point into L or p->headers): with DKIM_SIGN_H_VERBATIM the caller's
 * list as is, otherwise each name of L once per occurrence with From once more (and
 * From always, since RFC 6376 5.4 requires it).  -1 with err on a bad name, no
 * From, or no memory.
 */
static int dkim_hnames(const uint8_t *m, const struct dkim_hdrs *h, const struct dkim_params *p,
                       const struct dkim_hlist *L, struct dkim_hname **out, size_t *nout,
                       char *err, size_t errn)
{
    const char *const *list = p->headers ? p->headers : dkim_default_list;
    size_t nl = L != NULL ? L->n : 0;
    if (L == NULL && dkim_list_len(list, &nl, err, errn) < 0) return -1;
    /* at most every field once, every listed name once more, and From */
    size_t cap = h->n + nl + 2, ne = 0;
    struct dkim_hname *e = malloc(cap * sizeof(*e));
    if (e == NULL) {
        dkim_errf(err, errn, "out of memory");
        return -1;
    }
    for (size_t i = 0; L == NULL && i < nl; i++) { /* verbatim: checked, not changed */
        e[ne] = (struct dkim_hname){ list[i], strnlen(list[i], DKIM_NAME_MAX + 1) };
        if (!dkim_hname_ok(e[ne].name, e[ne].len)) {
            free(e);
            dkim_errf(err, errn, "bad header name to sign");
            return -1;
        }
        ne++;
    }
    size_t nfrom = dkim_count(m, h, "from", 4);
    if (nfrom == 0) {
        free(e);
        dkim_errf(err, errn, "no From header field");
        return -1;
    }
    if (L != NULL) {
        if (!L->listed_from) /* From first, each one and once more */
            for (size_t c = 0; c <= nfrom; c++)
                e[ne++] = (struct dkim_hname){ "from", 4 };
        for (size_t i = 0; i < L->n; i++) {
            size_t c = dkim_count(m, h, L->e[i].name, L->e[i].len);
            if (dkim_name_eq((const uint8_t *)L->e[i].name, L->e[i].len, "from", 4)) c++;
            while (c-- > 0)
                e[ne++] = L->e[i];
        }
    }
    if (ne == 0) {
        free(e);
        dkim_errf(err, errn, "nothing to sign");
        return -1;
    }
    *out = e;
    *nout = ne;
    return 0;
}

/*
 * Each signing thread keeps the scratch of dkim_sign between calls: two
 * allocations and a digest context fewer per signature.  It goes with the thread
 * (pthread key destructor); if it cannot be had, the call allocates its own.
 */
struct dkim_tls {
    struct dkim_hdrs *h;
    struct dkim_sink *sink;
    EVP_MD_CTX *md;
};

static pthread_key_t dkim_tls_key;
static pthread_once_t dkim_tls_once = PTHREAD_ONCE_INIT;
static bool dkim_tls_ok;

/* dkim_tls_free - thread exit: drop the scratch */
static void dkim_tls_free(void *p)
{
    struct dkim_tls *t = p;
    free(t->h);
    free(t->sink);
    EVP_MD_CTX_free(t->md);
    free(t);
}

/* dkim_tls_init - create the thread-local slot once per process */
static void dkim_tls_init(void)
{
    dkim_tls_ok = pthread_key_create(&dkim_tls_key, dkim_tls_free) == 0;
}

/* dkim_tls_get - this thread's cache, made on first use; NULL if none can be had */
static struct dkim_tls *dkim_tls_get(void)
{
    if (pthread_once(&dkim_tls_once, dkim_tls_init) != 0 || !dkim_tls_ok) return NULL;
    struct dkim_tls *t = pthread_getspecific(dkim_tls_key);
    if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t == NULL) return NULL;
        if (pthread_setspecific(dkim_tls_key, t) != 0) {
            free(t);
            return NULL;
        }
    }
    return t;
}

/* dkim_sign_hash - the signature of the 32-octet header hash into sig[*siglen] */
static int dkim_sign_hash(const struct dkim_key *k, const uint8_t *dgst, uint8_t *sig,
                          size_t *siglen)
{
    int ok = 0;
    if (k->alg == DKIM_RSA_SHA256) {
        /* PKCS#1 v1.5 over DigestInfo(SHA-256, dgst): the same octets
         * EVP_DigestSign with SHA-256 over the data would produce */
        EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
        ok = pc != NULL && EVP_PKEY_sign_init(pc) == 1 &&
             EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) == 1 &&
             EVP_PKEY_CTX_set_signature_md(pc, k->sha256) == 1 &&
             EVP_PKEY_sign(pc, sig, siglen, dgst, 32) == 1;
        EVP_PKEY_CTX_free(pc);
    } else {
        /* RFC 8463 3: PureEdDSA over the SHA-256 hash */
        unsigned long long n = 0;
        ok = *siglen >= crypto_sign_ed25519_BYTES &&
             crypto_sign_ed25519_detached(sig, &n, dgst, 32, k->ed_sk) == 0;
        *siglen = (size_t)n;
    }
    if (!ok) ERR_clear_error();
    return ok ? 0 : -1;
}

int dkim_sign(const struct dkim_key *k, const struct dkim_params *p, const uint8_t *msg,
              size_t len, struct vbuf *out, char *err, size_t errn)
{
    static const struct dkim_params defaults;
    struct dkim_hdrs *h = NULL;
    struct dkim_sink *sink = NULL;
    struct dkim_hname *names = NULL;
    struct dkim_hlist *own_hlist = NULL;
    EVP_MD_CTX *md = NULL;
    size_t nnames = 0, start = out->len;
    uint8_t dgst[32], sig[DKIM_SIG_BYTES];
    char b64[DKIM_B64(DKIM_SIG_BYTES)];
    unsigned int dl = 0;
    int rc = -1;

    if (p == NULL) p = &defaults;
    if (msg == NULL && len > 0) {
        dkim_errf(err, errn, "no message");
        return -1;
    }
    if ((p->hcanon != DKIM_CANON_RELAXED && p->hcanon != DKIM_CANON_SIMPLE) ||
        (p->bcanon != DKIM_CANON_RELAXED && p->bcanon != DKIM_CANON_SIMPLE)) {
        dkim_errf(err, errn, "bad canonicalization");
        return -1;
    }
    if (p->timestamp < 0 || p->expire < 0 || (p->expire > 0 && p->timestamp == 0) ||
        p->expire > INT64_MAX - p->timestamp) {
        dkim_errf(err, errn, "bad t=/x= (x= needs t=)");
        return -1;
    }
    if (p->auid != NULL && !dkim_auid_ok(p->auid)) {
        dkim_errf(err, errn, "bad i= identity");
        return -1;
    }
    /* the two big scratch areas live on the heap (signing threads may have small
     * stacks), kept per thread between signatures when they can be */
    struct dkim_tls *t = dkim_tls_get();
    if (t != NULL && t->h == NULL) t->h = malloc(sizeof(*t->h));
    if (t != NULL && t->sink == NULL) t->sink = malloc(sizeof(*t->sink));
    if (t != NULL && t->md == NULL) t->md = EVP_MD_CTX_new();
    bool cached = t != NULL && t->h != NULL && t->sink != NULL && t->md != NULL;
    h = cached ? t->h : malloc(sizeof(*h));
    sink = cached ? t->sink : malloc(sizeof(*sink));
    md = cached ? t->md : EVP_MD_CTX_new();
    if (h != NULL) h->fields = h->stackf; /* before any exit: done frees what it holds */
    if (h == NULL || sink == NULL || md == NULL) {
        dkim_errf(err, errn, "out of memory");
        goto done;
    }
    if (dkim_hdr_parse(msg, len, h, err, errn) < 0) goto done;
    /* a caller without a prepared list has its names checked on every signature */
    const struct dkim_hlist *hl = p->hlist;
    if (p->flags & DKIM_SIGN_H_VERBATIM) {
        hl = NULL;
    } else if (hl == NULL) {
        hl = own_hlist = dkim_hlist_new(p->headers, err, errn);
        if (hl == NULL) goto done;
    }
    if (dkim_hnames(msg, h, p, hl, &names, &nnames, err, errn) < 0) goto done;

    /* bh= */
    struct dkim_body_cache *bc = p->bh;
    const uint8_t *body = msg + h->body;
    size_t blen = len - h->body;
    if (bc != NULL && bc->valid && bc->bcanon == p->bcanon && bc->body_len == blen) {
        memcpy(dgst, bc->digest, 32);
    } else {
        if (!dkim_memo_find(p->memo, p->bcanon, body, blen, dgst)) {
            if (dkim_hash_body(sink, md, k->sha256, p->bcanon, body, blen, dgst) < 0) {
                dkim_errf(err, errn, "body hash failed");
                goto done;
            }
            dkim_memo_put(p->memo, p->bcanon, body, blen, dgst);
        }
        if (bc != NULL) {
            *bc = (struct dkim_body_cache){ true, p->bcanon, blen, { 0 } };
            memcpy(bc->digest, dgst, 32);
        }
    }
    char bh[DKIM_B64(32)];
    EVP_EncodeBlock((unsigned char *)bh, dgst, 32);

    /* the field up to "b=", laid out in out; growth past out's limit fails here */
    (void)vbuf_reserve(out, 512 + nnames * 16 + k->sig_len * 2);
    struct dkim_out o = { out, 0, 0 };
    dkim_out_put(&o, "DKIM-Signature:", 15);
    dkim_out_token(&o, "v=1;", 4);
    dkim_out_tagf(&o, "a=%s;", dkim_alg_str(k->alg));
    dkim_out_tagf(&o, "c=%s/%s;", dkim_canon_str(p->hcanon), dkim_canon_str(p->bcanon));
    dkim_out_tagf(&o, "d=%s;", k->domain);
    if (p->auid != NULL) dkim_out_tagf(&o, "i=%s;", p->auid);
    if (p->flags & DKIM_SIGN_Q_TAG) dkim_out_token(&o, "q=dns/txt;", 10);
    dkim_out_tagf(&o, "s=%s;", k->selector);
    if (p->timestamp > 0) dkim_out_tagf(&o, "t=%lld;", (long long)p->timestamp);
    if (p->expire > 0) dkim_out_tagf(&o, "x=%lld;", (long long)(p->timestamp + p->expire));
    dkim_out_hlist(&o, names, nnames, (p->flags & DKIM_SIGN_H_SPACED) != 0);
    dkim_out_tagf(&o, "bh=%s;", bh);
    dkim_out_token(&o, "b=", 2);
    if (o.err != 0 || out->len - start > DKIM_SIG_MAX) {
        dkim_errf(err, errn, "signature field too long for the output buffer");
        goto done;
    }

    /* the header hash: selected fields bottom-up, then our own field with b=
     * empty and no final CRLF (RFC 6376 3.7) */
    if (EVP_DigestInit_ex2(md, k->sha256, NULL) != 1) {
        dkim_errf(err, errn, "header hash failed");
        goto done;
    }
    dkim_sink_start(sink, md, NULL);
    for (size_t i = 0; i < nnames; i++) {
        const struct dkim_field *f = dkim_pick(msg, h, names[i].name, names[i].len);
        if (f != NULL) dkim_field_canon(sink, p->hcanon, msg + f->off, f->len, true);
    }
    dkim_field_canon(sink, p->hcanon, out->data + start, out->len - start, false);
    dkim_sink_flush(sink);
    if (sink->err != 0 || EVP_DigestFinal_ex(md, dgst, &dl) != 1 || dl != 32) {
        dkim_errf(err, errn, "header hash failed");
        goto done;
    }
    size_t siglen = sizeof(sig);
    if (dkim_sign_hash(k, dgst, sig, &siglen) < 0 || siglen > sizeof(sig)) {
        dkim_errf(err, errn, "signing failed");
        goto done;
    }
    size_t bl = (size_t)EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);

    /* b= folded: fill each line to the fold column */
    for (size_t at = 0; at < bl;) {
        if (o.col >= DKIM_FOLD_COL) dkim_out_fold(&o);
        size_t room = DKIM_FOLD_COL - o.col;
        size_t take = bl - at < room ? bl - at : room;
        dkim_out_put(&o, b64 + at, take);
        at += take;
    }
    dkim_out_put(&o, "\r\n", 2);
    if (o.err != 0) {
        dkim_errf(err, errn, "signature field too long for the output buffer");
        goto done;
    }
    rc = 0;
done:
    if (rc != 0 && out->len > start) out->len = start;
    free(names);
    dkim_hlist_free(own_hlist);
    if (h != NULL) dkim_hdrs_free(h);
    if (!cached) {
        free(h);
        free(sink);
        EVP_MD_CTX_free(md);
    }
    OPENSSL_cleanse(dgst, sizeof(dgst));
    return rc;
}
