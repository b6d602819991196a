/*
 * test_dkim - unit tests for the DKIM signer: the RFC 6376 3.4.5 canonicalization
 * examples, empty-body hashes, the RFC 8463 Appendix A Ed25519 vector (b= and bh=
 * byte for byte), key loading and its errors, the TXT record and matching it,
 * the h= list (oversigned and repeated From, custom lists), no l=, folding, the
 * error paths and arbitrary input.
 *
 * Keys are generated at test time with OpenSSL into a temporary directory that
 * is removed at the end; the only fixed key is the RFC 8463 one, which the RFC
 * publishes.  Messages are copied into exact-length heap buffers so that ASan
 * catches an overread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dkim.h"
#include "util.h"

#define OUT_LIMIT (64 * 1024)

/* RFC 8463 Appendix A.1: the Ed25519 test key (RFC 8032 7.1 test 1) as PKCS#8. */
#define RFC8463_KEY                                                                                \
    "-----BEGIN PRIVATE KEY-----\n"                                                                \
    "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"                           \
    "-----END PRIVATE KEY-----\n"
#define RFC8463_RECORD "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
#define RFC8463_BH     "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
#define RFC8463_B                                                                                  \
    "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw=="

/* RFC 6376 Appendix A.1 / RFC 8463 A.3: the message both RFCs sign. */
#define EXAMPLE_MSG                                                                                \
    "From: Joe SixPack <joe@football.example.com>\r\n"                                             \
    "To: Suzie Q <suzie@shopping.example.net>\r\n"                                                 \
    "Subject: Is dinner ready?\r\n"                                                                \
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"                                              \
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"                             \
    "\r\n"                                                                                         \
    "Hi.\r\n"                                                                                      \
    "\r\n"                                                                                         \
    "We lost the game.  Are you hungry yet?\r\n"                                                   \
    "\r\n"                                                                                         \
    "Joe.\r\n"

static char tmpdir[64];
static char path_ed[128], path_rsa[128], path_rsa_trad[128], path_ec[128], path_rsa512[128],
    path_garbage[128], path_rfc[128], path_ed2[128];

/* write_file - s into path */
static void write_file(const char *path, const char *s, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(s, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* write_key - a PEM private key file (PKCS#8, or traditional when trad) */
static void write_key(EVP_PKEY *pk, const char *path, int trad)
{
    assert_non_null(pk);
    BIO *b = BIO_new_file(path, "w");
    assert_non_null(b);
    if (trad)
        assert_int_equal(PEM_write_bio_PrivateKey_traditional(b, pk, NULL, NULL, 0, NULL, NULL), 1);
    else
        assert_int_equal(PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL), 1);
    BIO_free(b);
    EVP_PKEY_free(pk);
}

/* setup_keys - the temporary directory and every key file the tests use */
static int setup_keys(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_dkim.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) return -1;
    snprintf(path_ed, sizeof path_ed, "%s/ed.pem", tmpdir);
    snprintf(path_ed2, sizeof path_ed2, "%s/ed2.pem", tmpdir);
    snprintf(path_rsa, sizeof path_rsa, "%s/rsa.pem", tmpdir);
    snprintf(path_rsa_trad, sizeof path_rsa_trad, "%s/rsa-trad.pem", tmpdir);
    snprintf(path_ec, sizeof path_ec, "%s/ec.pem", tmpdir);
    snprintf(path_rsa512, sizeof path_rsa512, "%s/rsa512.pem", tmpdir);
    snprintf(path_garbage, sizeof path_garbage, "%s/garbage.pem", tmpdir);
    snprintf(path_rfc, sizeof path_rfc, "%s/rfc8463.pem", tmpdir);
    write_key(EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"), path_ed, 0);
    write_key(EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"), path_ed2, 0);
    write_key(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024), path_rsa, 0);
    write_key(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024), path_rsa_trad, 1);
    write_key(EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), path_ec, 0);
    write_key(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)512), path_rsa512, 0);
    write_file(path_garbage, "this is not a key\n", 18);
    write_file(path_rfc, RFC8463_KEY, strlen(RFC8463_KEY));
    return 0;
}

/* teardown_keys - remove the key files and the directory */
static int teardown_keys(void **state)
{
    const char *files[] = { path_ed, path_ed2, path_rsa, path_rsa_trad, path_ec, path_rsa512,
                            path_garbage, path_rfc };
    for (size_t i = 0; i < ARRAY_LEN(files); i++)
        unlink(files[i]);
    rmdir(tmpdir);
    return 0;
}

/* load - a key that must load */
static struct dkim_key *load(const char *path, const char *domain, const char *sel)
{
    char err[256] = "";
    struct dkim_key *k = dkim_key_load(path, domain, sel, err, sizeof err);
    if (k == NULL) fail_msg("load %s: %s", path, err);
    return k;
}

/* heap_copy - exact-length heap copy (1 octet when n == 0) */
static uint8_t *heap_copy(const char *s, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

/* sign_str - sign the C string msg; the field as a C string (caller frees) or NULL
 * with err */
static char *sign_str(const struct dkim_key *k, const struct dkim_params *p, const char *msg,
                      char *err, size_t errn)
{
    struct vbuf out;
    vbuf_init(&out, OUT_LIMIT);
    size_t n = strlen(msg);
    uint8_t *m = heap_copy(msg, n);
    int rc = dkim_sign(k, p, m, n, &out, err, errn);
    free(m);
    if (rc < 0) {
        assert_int_equal(out.len, 0);
        vbuf_free(&out);
        return NULL;
    }
    assert_int_equal(vbuf_append(&out, "", 1), 0);
    return (char *)out.data;
}

/* unfold - the field with every CRLF and WSP removed (for comparing tag values) */
static void unfold(const char *s, char *out, size_t n)
{
    size_t j = 0;
    for (; *s && j + 1 < n; s++)
        if (*s != '\r' && *s != '\n' && *s != ' ' && *s != '\t') out[j++] = *s;
    out[j] = '\0';
}

/* tag - the value of tag name in the unfolded field u, into out */
static int tag(const char *u, const char *name, char *out, size_t n)
{
    char pat[16];
    snprintf(pat, sizeof pat, ";%s=", name);
    const char *p = strstr(u, pat);
    if (p == NULL) return -1;
    p += strlen(pat);
    size_t l = strcspn(p, ";");
    if (l >= n) return -1;
    memcpy(out, p, l);
    out[l] = '\0';
    return 0;
}

/* canon - canonical form of s as a C string in buf */
static const char *canon(int header, enum DKIM_CANON c, const char *s, char *buf, size_t n)
{
    struct vbuf v;
    vbuf_init(&v, OUT_LIMIT);
    uint8_t *m = heap_copy(s, strlen(s));
    int rc = header ? dkim_canon_header(c, m, strlen(s), &v) : dkim_canon_body(c, m, strlen(s), &v);
    free(m);
    assert_int_equal(rc, 0);
    assert_true(v.len < n);
    if (v.len) memcpy(buf, v.data, v.len);
    buf[v.len] = '\0';
    vbuf_free(&v);
    return buf;
}

/* RFC 6376 3.4.5: both canonicalizations of the example header and body. */
static void test_canon_rfc_examples(void **state)
{
    char b[256];
    assert_string_equal(canon(1, DKIM_CANON_RELAXED, "A: X\r\n", b, sizeof b), "a:X\r\n");
    assert_string_equal(canon(1, DKIM_CANON_RELAXED, "B : Y\t\r\n\tZ  \r\n", b, sizeof b),
                        "b:Y Z\r\n");
    assert_string_equal(canon(1, DKIM_CANON_SIMPLE, "A: X\r\n", b, sizeof b), "A: X\r\n");
    assert_string_equal(canon(1, DKIM_CANON_SIMPLE, "B : Y\t\r\n\tZ  \r\n", b, sizeof b),
                        "B : Y\t\r\n\tZ  \r\n");
    const char *body = " C \r\nD \t E\r\n\r\n\r\n";
    assert_string_equal(canon(0, DKIM_CANON_RELAXED, body, b, sizeof b), " C\r\nD E\r\n");
    assert_string_equal(canon(0, DKIM_CANON_SIMPLE, body, b, sizeof b), " C \r\nD \t E\r\n");
}

/* Body edge cases: empty bodies, WSP-only lines, missing final CRLF, bare LF. */
static void test_canon_body_edges(void **state)
{
    char b[256];
    assert_string_equal(canon(0, DKIM_CANON_SIMPLE, "", b, sizeof b), "\r\n");
    assert_string_equal(canon(0, DKIM_CANON_SIMPLE, "\r\n\r\n", b, sizeof b), "\r\n");
    assert_string_equal(canon(0, DKIM_CANON_RELAXED, "", b, sizeof b), "");
    assert_string_equal(canon(0, DKIM_CANON_RELAXED, "\r\n \t\r\n\r\n", b, sizeof b), "");
    assert_string_equal(canon(0, DKIM_CANON_RELAXED, "a\r\n \r\nb  c \t", b, sizeof b),
                        "a\r\n\r\nb c\r\n");
    assert_string_equal(canon(0, DKIM_CANON_SIMPLE, "a\r\nb", b, sizeof b), "a\r\nb\r\n");
    assert_string_equal(canon(0, DKIM_CANON_RELAXED, "x\ny \r\n", b, sizeof b), "x\ny\r\n");
    assert_string_equal(canon(1, DKIM_CANON_RELAXED, "SUBJECT:   a \r\n  b\t \r\n", b, sizeof b),
                        "subject:a b\r\n");
    assert_string_equal(canon(1, DKIM_CANON_RELAXED, "X:\r\n", b, sizeof b), "x:\r\n");
}

/*
 * The bh= of empty bodies (RFC 6376 3.4.3/3.4.4).  simple: SHA-256("\r\n"), which
 * is frcCV1k9...; the value "frLVlXD3lAtQUiJHY2PM3o3uXqz4R1GFNm3gpfD8RWA=" quoted
 * in the brief is not the SHA-256 of anything DKIM produces for an empty body, so
 * the constant is cross-checked here against OpenSSL's own SHA-256.
 */
static void test_body_hash_empty(void **state)
{
    char bh[64], ref[64];
    const char *simple = "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=";
    unsigned char d[32];
    assert_int_equal(EVP_Digest("\r\n", 2, d, NULL, EVP_sha256(), NULL), 1);
    EVP_EncodeBlock((unsigned char *)ref, d, 32);
    assert_string_equal(ref, simple);
    const char *relaxed = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    assert_int_equal(dkim_body_hash(DKIM_CANON_SIMPLE, (const uint8_t *)"\r\n", 2, bh, sizeof bh), 0);
    assert_string_equal(bh, simple);
    assert_int_equal(dkim_body_hash(DKIM_CANON_SIMPLE, (const uint8_t *)"", 0, bh, sizeof bh), 0);
    assert_string_equal(bh, simple);
    assert_int_equal(dkim_body_hash(DKIM_CANON_RELAXED, (const uint8_t *)"", 0, bh, sizeof bh), 0);
    assert_string_equal(bh, relaxed);
    assert_int_equal(dkim_body_hash(DKIM_CANON_RELAXED, (const uint8_t *)"\r\n", 2, bh, sizeof bh),
                     0);
    assert_string_equal(bh, relaxed);
    assert_int_equal(dkim_body_hash(DKIM_CANON_RELAXED, (const uint8_t *)"", 0, bh, 44), -1);
}

/* RFC 8463 Appendix A: the same key, t=, i=, q= and h= give the RFC's bh= and b=. */
static void test_rfc8463_vector(void **state)
{
    struct dkim_key *k = load(path_rfc, "football.example.com", "brisbane");
    assert_int_equal(dkim_key_alg(k), DKIM_ED25519_SHA256);
    char rec[DKIM_DNS_RECORD_MAX];
    assert_int_equal(dkim_key_dns_record(k, rec, sizeof rec), 0);
    assert_string_equal(rec, RFC8463_RECORD);

    static const char *const h[] = { "from", "to", "subject", "date", "message-id",
                                     "from", "subject", "date", NULL };
    struct dkim_params p = {
        .hcanon = DKIM_CANON_RELAXED,
        .bcanon = DKIM_CANON_RELAXED,
        .headers = h,
        .timestamp = 1528637909,
        .auid = "@football.example.com",
        .flags = DKIM_SIGN_H_VERBATIM | DKIM_SIGN_H_SPACED | DKIM_SIGN_Q_TAG,
    };
    char err[256] = "";
    char *sig = sign_str(k, &p, EXAMPLE_MSG, err, sizeof err);
    if (sig == NULL) fail_msg("sign: %s", err);
    assert_true(strncmp(sig, "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n", 59) ==
                0);
    char u[2048], v[512];
    unfold(sig, u, sizeof u);
    assert_int_equal(tag(u, "bh", v, sizeof v), 0);
    assert_string_equal(v, RFC8463_BH);
    assert_int_equal(tag(u, "b", v, sizeof v), 0);
    assert_string_equal(v, RFC8463_B);
    assert_int_equal(tag(u, "h", v, sizeof v), 0);
    assert_string_equal(v, "from:to:subject:date:message-id:from:subject:date");
    assert_non_null(strstr(sig, "h=from : to :"));
    free(sig);
    dkim_key_free(k);
}

/* Key loading: both algorithms, PKCS#8 and traditional; every error names the file. */
static void test_key_load(void **state)
{
    struct dkim_key *k = load(path_rsa, "example.com", "s1");
    assert_int_equal(dkim_key_alg(k), DKIM_RSA_SHA256);
    assert_int_equal(dkim_key_bits(k), 1024);
    assert_string_equal(dkim_key_domain(k), "example.com");
    assert_string_equal(dkim_key_selector(k), "s1");
    dkim_key_free(k);
    k = load(path_rsa_trad, "example.com", "s1");
    assert_int_equal(dkim_key_alg(k), DKIM_RSA_SHA256);
    dkim_key_free(k);
    k = load(path_ed, "example.com", "ed.2026");
    assert_int_equal(dkim_key_alg(k), DKIM_ED25519_SHA256);
    dkim_key_free(k);
    dkim_key_free(NULL);

    char missing[160];
    snprintf(missing, sizeof missing, "%s/nope.pem", tmpdir);
    struct {
        const char *path, *domain, *why;
    } bad[] = {
        { missing, "example.com", "No such file" },
        { path_garbage, "example.com", "not a PEM private key" },
        { path_ec, "example.com", "wrong key type EC" },
        { path_rsa512, "example.com", "512 bits" },
        { tmpdir, "example.com", "not a regular file" },
        { path_rsa, "exa mple.com", "bad signing domain" },
        { path_rsa, "example.com;x=1", "bad signing domain" },
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char err[512] = "";
        assert_null(dkim_key_load(bad[i].path, bad[i].domain, "s1", err, sizeof err));
        if (strstr(err, bad[i].path) == NULL || strstr(err, bad[i].why) == NULL)
            fail_msg("case %zu: err '%s' lacks '%s' or '%s'", i, err, bad[i].path, bad[i].why);
    }
    char err[256] = "";
    assert_null(dkim_key_load(path_rsa, "example.com", "s\r\n1", err, sizeof err));
    assert_non_null(strstr(err, "bad selector"));
}

/* The TXT record: RSA carries the SPKI DER, Ed25519 the raw 32 octets. */
static void test_dns_record(void **state)
{
    struct dkim_key *k = load(path_rsa, "example.com", "s1");
    char rec[DKIM_DNS_RECORD_MAX], want[DKIM_DNS_RECORD_MAX + 64];

    BIO *b = BIO_new_file(path_rsa, "r");
    EVP_PKEY *pk = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    unsigned char *der = NULL;
    int dl = i2d_PUBKEY(pk, &der);
    assert_true(dl > 0);
    char b64[1024];
    EVP_EncodeBlock((unsigned char *)b64, der, dl);
    snprintf(want, sizeof want, "v=DKIM1; k=rsa; p=%s", b64);
    OPENSSL_free(der);
    EVP_PKEY_free(pk);

    assert_int_equal(dkim_key_dns_record(k, rec, sizeof rec), 0);
    assert_string_equal(rec, want);
    assert_int_equal(dkim_key_dns_record(k, rec, 20), -1);
    dkim_key_free(k);

    k = load(path_ed, "example.com", "s1");
    assert_int_equal(dkim_key_dns_record(k, rec, sizeof rec), 0);
    assert_true(strncmp(rec, "v=DKIM1; k=ed25519; p=", 22) == 0);
    assert_int_equal(strlen(rec), 22 + 44);
    dkim_key_free(k);
}

/* dkim_key_matches_record: yes, no and malformed, as records come from the DNS. */
static void test_matches_record(void **state)
{
    struct dkim_key *ed = load(path_rfc, "football.example.com", "brisbane");
    struct dkim_key *ed2 = load(path_ed2, "example.com", "s1");
    struct dkim_key *rsa = load(path_rsa, "example.com", "s1");
    char why[256], rec[DKIM_DNS_RECORD_MAX], txt[2 * DKIM_DNS_RECORD_MAX];

    assert_int_equal(dkim_key_matches_record(ed, RFC8463_RECORD, why, sizeof why), 1);
    assert_int_equal(dkim_key_matches_record(ed, " k = ed25519 ;p=11qYAYKxCrfVS/7TyWQHOg7hcv\r\n "
                                                 "PapiMlrwIaaPcHURo= ; t=y:s; h=sha256 ; s=*;",
                                             why, sizeof why),
                     1);
    /* RSA: the record as split into 255-octet strings and joined with spaces */
    assert_int_equal(dkim_key_dns_record(rsa, rec, sizeof rec), 0);
    size_t rl = strlen(rec), j = 0;
    for (size_t i = 0; i < rl; i++) {
        if (i > 0 && i % 60 == 0) txt[j++] = ' ';
        txt[j++] = rec[i];
    }
    txt[j] = '\0';
    assert_int_equal(dkim_key_matches_record(rsa, rec, why, sizeof why), 1);
    assert_int_equal(dkim_key_matches_record(rsa, txt, why, sizeof why), 1);
    assert_int_equal(dkim_key_matches_record(rsa, strstr(rec, "p="), why, sizeof why), 1);

    /* no */
    assert_int_equal(dkim_key_matches_record(ed2, RFC8463_RECORD, why, sizeof why), 0);
    assert_non_null(strstr(why, "different key"));
    assert_int_equal(dkim_key_matches_record(ed, "v=DKIM1; k=ed25519; p=", why, sizeof why), 0);
    assert_non_null(strstr(why, "revoked"));
    assert_int_equal(dkim_key_matches_record(rsa, RFC8463_RECORD, why, sizeof why), 0);
    assert_non_null(strstr(why, "k=ed25519"));
    assert_int_equal(dkim_key_matches_record(ed, "p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
                                             why, sizeof why),
                     0); /* k= defaults to rsa */
    assert_int_equal(dkim_key_matches_record(ed, RFC8463_RECORD "; h=sha1", why, sizeof why), 0);
    assert_int_equal(dkim_key_matches_record(ed, RFC8463_RECORD "; s=tlsrpt", why, sizeof why), 0);
    struct dkim_key *rsa2 = load(path_rsa_trad, "example.com", "s1");
    assert_int_equal(dkim_key_matches_record(rsa2, rec, why, sizeof why), 0);
    dkim_key_free(rsa2);

    /* malformed */
    const char *bad[] = {
        "",
        "hello",
        "v=DKIM1; k=ed25519",
        "k=ed25519; v=DKIM1; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        "v=DKIM2; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        "v=DKIM1; k=ed25519; p=!!!!",
        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        "v=DKIM1; k=ed25519; p=AAAA",
        "k=ed25519; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
        "1k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        why[0] = '\0';
        if (dkim_key_matches_record(ed, bad[i], why, sizeof why) != -1)
            fail_msg("record %zu '%s' not malformed", i, bad[i]);
        assert_true(why[0] != '\0');
    }
    assert_int_equal(dkim_key_matches_record(rsa, "k=rsa; p=AAAA", why, sizeof why), -1);
    assert_int_equal(dkim_key_matches_record(ed, NULL, why, sizeof why), -1);
    dkim_key_free(ed);
    dkim_key_free(ed2);
    dkim_key_free(rsa);
}

/* h= with the default list: From oversigned, every From counted, other names as
 * often as they occur, absent names left out. */
static void test_hlist(void **state)
{
    struct dkim_key *k = load(path_ed, "example.com", "s1");
    char err[256], u[4096], h[1024];
    char *sig = sign_str(k, NULL, EXAMPLE_MSG, err, sizeof err);
    assert_non_null(sig);
    unfold(sig, u, sizeof u);
    assert_int_equal(tag(u, "h", h, sizeof h), 0);
    assert_string_equal(h, "from:from:to:subject:date:message-id");
    assert_int_equal(tag(u, "a", h, sizeof h), 0);
    assert_string_equal(h, "ed25519-sha256");
    assert_int_equal(tag(u, "c", h, sizeof h), 0);
    assert_string_equal(h, "relaxed/relaxed");
    assert_int_equal(tag(u, "t", h, sizeof h), -1);
    free(sig);

    const char *two = "From: a@example.com\r\nTo: x@example.net\r\nFrom: b@example.com\r\n"
                      "To: y@example.net\r\nReceived: x\r\n\r\nbody\r\n";
    sig = sign_str(k, NULL, two, err, sizeof err);
    assert_non_null(sig);
    unfold(sig, u, sizeof u);
    assert_int_equal(tag(u, "h", h, sizeof h), 0);
    assert_string_equal(h, "from:from:from:to:to");
    free(sig);

    /* a custom list without From still signs (and oversigns) From; names are
     * lower-cased and de-duplicated */
    static const char *const custom[] = { "Subject", "X-Campaign", "subject", "X-None", NULL };
    struct dkim_params p = { .headers = custom, .timestamp = 1700000000, .expire = 86400 };
    const char *msg = "Subject: hi\r\nFrom: a@example.com\r\nX-Campaign: 7\r\n\r\n";
    sig = sign_str(k, &p, msg, err, sizeof err);
    assert_non_null(sig);
    unfold(sig, u, sizeof u);
    assert_int_equal(tag(u, "h", h, sizeof h), 0);
    assert_string_equal(h, "from:from:subject:x-campaign");
    assert_int_equal(tag(u, "t", h, sizeof h), 0);
    assert_string_equal(h, "1700000000");
    assert_int_equal(tag(u, "x", h, sizeof h), 0);
    assert_string_equal(h, "1700086400");
    /* the same list prepared once signs the same octets, as does the default list */
    struct dkim_hlist *hl = dkim_hlist_new(custom, err, sizeof err);
    assert_non_null(hl);
    struct dkim_params pp = p;
    pp.headers = NULL;
    pp.hlist = hl;
    char *sig2 = sign_str(k, &pp, msg, err, sizeof err);
    assert_non_null(sig2);
    assert_string_equal(sig, sig2);
    free(sig2);
    dkim_hlist_free(hl);
    hl = dkim_hlist_new(NULL, err, sizeof err);
    assert_non_null(hl);
    struct dkim_params pd = { .hlist = hl };
    char *sd = sign_str(k, &pd, two, err, sizeof err);
    char *sd0 = sign_str(k, NULL, two, err, sizeof err);
    assert_non_null(sd);
    assert_string_equal(sd, sd0);
    free(sd);
    free(sd0);
    dkim_hlist_free(hl);
    /* a bad name or too many names: no list, and a reason */
    static const char *const bad[] = { "Subject", "X Bad", NULL };
    err[0] = '\0';
    assert_null(dkim_hlist_new(bad, err, sizeof err));
    assert_string_equal(err, "bad header name to sign");
    const char **many = calloc(DKIM_MAX_FIELDS + 2, sizeof(*many));
    assert_non_null(many);
    for (int i = 0; i <= DKIM_MAX_FIELDS; i++) many[i] = "X-Many";
    assert_null(dkim_hlist_new(many, err, sizeof err));
    free(many);
    assert_non_null(strstr(err, "names to sign"));
    free(sig);
    dkim_key_free(k);
}

/* No l= in any output, and only the tags Volley means to send. */
static void test_no_l_tag(void **state)
{
    struct dkim_key *k = load(path_rsa, "example.com", "s1");
    struct dkim_params ps[] = {
        { 0 },
        { .hcanon = DKIM_CANON_SIMPLE, .bcanon = DKIM_CANON_SIMPLE },
        { .hcanon = DKIM_CANON_SIMPLE },
        { .bcanon = DKIM_CANON_SIMPLE, .timestamp = 5, .expire = 5 },
    };
    for (size_t i = 0; i < ARRAY_LEN(ps); i++) {
        char err[256], u[4096], c[64];
        char *sig = sign_str(k, &ps[i], EXAMPLE_MSG, err, sizeof err);
        assert_non_null(sig);
        unfold(sig, u, sizeof u);
        assert_null(strstr(u, ";l="));
        assert_int_equal(tag(u, "c", c, sizeof c), 0);
        char want[64];
        snprintf(want, sizeof want, "%s/%s", dkim_canon_str(ps[i].hcanon),
                 dkim_canon_str(ps[i].bcanon));
        assert_string_equal(c, want);
        assert_int_equal(tag(u, "a", c, sizeof c), 0);
        assert_string_equal(c, "rsa-sha256");
        free(sig);
    }
    dkim_key_free(k);
}

/* check_folding - CRLF-terminated lines, continuation lines start with SP, none
 * longer than 78 octets */
static void check_folding(const char *sig)
{
    const char *line = sig;
    int first = 1;
    while (*line) {
        const char *e = strstr(line, "\r\n");
        assert_non_null(e);
        if ((size_t)(e - line) > 78) fail_msg("line of %zu octets: %.*s", (size_t)(e - line),
                                               (int)(e - line), line);
        if (!first) assert_true(line[0] == ' ');
        assert_null(memchr(line, '\n', (size_t)(e - line)));
        first = 0;
        line = e + 2;
    }
}

/* Folding of a long field: many repeated headers make a long h=; a 4096-octet
 * base64 b= would too (RSA-1024 here keeps it short, Ed25519 shorter). */
static void test_folding(void **state)
{
    struct dkim_key *k = load(path_rsa, "a-rather-long-subdomain.mail.example.com", "selector-2026");
    char msg[8192] = "From: a@example.com\r\n";
    for (int i = 0; i < 40; i++) {
        strcat(msg, "To: someone@example.net\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
    }
    strcat(msg, "Subject: a very long subject line that itself is folded\r\n\tover two lines\r\n"
                "\r\nbody\r\n");
    char err[256], u[8192], h[4096];
    char *sig = sign_str(k, NULL, msg, err, sizeof err);
    if (sig == NULL) fail_msg("%s", err);
    check_folding(sig);
    unfold(sig, u, sizeof u);
    assert_int_equal(tag(u, "h", h, sizeof h), 0);
    size_t tos = 0;
    for (const char *p = h; (p = strstr(p, ":to")) != NULL; p++)
        tos++;
    assert_int_equal(tos, 40);
    free(sig);

    static const char *const hh[] = { "from", "to", NULL };
    struct dkim_params p = { .headers = hh, .flags = DKIM_SIGN_H_SPACED, .auid = "@example.com" };
    sig = sign_str(k, &p, msg, err, sizeof err);
    assert_non_null(sig);
    check_folding(sig);
    free(sig);
    dkim_key_free(k);
}

/* Errors: no From, malformed header sections, a full output buffer, bad params;
 * the output buffer is left as it was. */
static void test_errors(void **state)
{
    struct dkim_key *k = load(path_ed, "example.com", "s1");
    char err[256];
    struct {
        const char *msg, *why;
    } bad[] = {
        { "To: a@example.com\r\n\r\nx\r\n", "no From" },
        { " From: a@example.com\r\n\r\n", "continuation" },
        { "From a@example.com\r\n\r\n", "no field name" },
        { ": a\r\nFrom: a@example.com\r\n\r\n", "no field name" },
        { "From: a@example.com", "no CRLF" },
        { "From: a@example.com\n\n", "no CRLF" },
        { "", "no From" },
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        assert_null(sign_str(k, NULL, bad[i].msg, err, sizeof err));
        if (strstr(err, bad[i].why) == NULL) fail_msg("case %zu: '%s'", i, err);
    }
    /* the caller's limit */
    struct vbuf out;
    vbuf_init(&out, 200);
    assert_int_equal(vbuf_append(&out, "keep", 4), 0);
    assert_int_equal(dkim_sign(k, NULL, (const uint8_t *)EXAMPLE_MSG, strlen(EXAMPLE_MSG), &out,
                               err, sizeof err),
                     -1);
    assert_int_equal(out.len, 4);
    vbuf_free(&out);
    /* parameters */
    struct dkim_params p = { .expire = 10 };
    assert_null(sign_str(k, &p, EXAMPLE_MSG, err, sizeof err));
    static const char *const badh[] = { "from", "x y", NULL };
    struct dkim_params p2 = { .headers = badh };
    assert_null(sign_str(k, &p2, EXAMPLE_MSG, err, sizeof err));
    assert_string_equal(err, "bad header name to sign");
    /* the verbatim list is checked too, and a bad name is named before a missing From */
    struct dkim_params p2v = { .headers = badh, .flags = DKIM_SIGN_H_VERBATIM };
    assert_null(sign_str(k, &p2v, EXAMPLE_MSG, err, sizeof err));
    assert_string_equal(err, "bad header name to sign");
    assert_null(sign_str(k, &p2v, "To: a@example.com\r\n\r\nx\r\n", err, sizeof err));
    assert_string_equal(err, "bad header name to sign");
    assert_null(sign_str(k, &p2, "To: a@example.com\r\n\r\nx\r\n", err, sizeof err));
    assert_string_equal(err, "bad header name to sign");
    struct dkim_params p3 = { .auid = "a;b@example.com" };
    assert_null(sign_str(k, &p3, EXAMPLE_MSG, err, sizeof err));
    /* a message with only a header section signs, its body is empty */
    char *sig = sign_str(k, NULL, "From: a@example.com\r\n", err, sizeof err);
    assert_non_null(sig);
    char u[2048], bh[64];
    unfold(sig, u, sizeof u);
    assert_int_equal(tag(u, "bh", bh, sizeof bh), 0);
    assert_string_equal(bh, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    free(sig);
    dkim_key_free(k);
}

/* Determinism and canonicalization at work: Ed25519 signatures repeat, and a
 * relaxed signature does not change when header whitespace and case do. */
static void test_relaxed_invariance(void **state)
{
    struct dkim_key *k = load(path_ed, "example.com", "s1");
    char err[256];
    const char *a = "From: a@example.com\r\nSubject: hello world\r\n\r\nbody  text\r\n\r\n";
    const char *b = "FROM:a@example.com  \r\nsubject :  hello\r\n   world\r\n\r\nbody text \r\n";
    char *sa = sign_str(k, NULL, a, err, sizeof err);
    char *sb = sign_str(k, NULL, b, err, sizeof err);
    char *sa2 = sign_str(k, NULL, a, err, sizeof err);
    assert_non_null(sa);
    assert_non_null(sb);
    assert_string_equal(sa, sb);
    assert_string_equal(sa, sa2);
    struct dkim_params simple = { .hcanon = DKIM_CANON_SIMPLE, .bcanon = DKIM_CANON_SIMPLE };
    char *ssa = sign_str(k, &simple, a, err, sizeof err);
    char *ssb = sign_str(k, &simple, b, err, sizeof err);
    assert_string_not_equal(ssa, ssb);
    free(sa);
    free(sb);
    free(sa2);
    free(ssa);
    free(ssb);
    dkim_key_free(k);
}

/* The body-hash cache: a second message with other header fields and the same
 * body signs exactly as without the cache; the entry is refilled (not used) when
 * the body length or the canonicalization differs. */
static void test_body_cache(void **state)
{
    struct dkim_key *k = load(path_ed, "example.com", "s1");
    char err[256];
    const char *a = "From: a@example.com\r\nTo: x@example.net\r\n\r\nsame body\r\n";
    const char *b = "From: a@example.com\r\nTo: someone.else@example.net\r\n"
                    "List-Unsubscribe: <mailto:u@example.com>\r\n\r\nsame body\r\n";
    const char *c = "From: a@example.com\r\n\r\nanother, longer body\r\n";
    struct dkim_body_cache bc = { 0 };
    struct dkim_params cached = { .bh = &bc }, plain = { 0 };
    char *sa = sign_str(k, &cached, a, err, sizeof err);
    assert_non_null(sa);
    assert_true(bc.valid);
    assert_int_equal(bc.body_len, strlen("same body\r\n"));
    char *sb = sign_str(k, &cached, b, err, sizeof err), *sb0 = sign_str(k, &plain, b, err, sizeof err);
    assert_non_null(sb);
    assert_string_equal(sb, sb0);
    /* the entry is really used: a planted digest shows up as bh= */
    memset(bc.digest, 0, sizeof bc.digest);
    char *planted = sign_str(k, &cached, b, err, sizeof err), u[2048], v[512];
    unfold(planted, u, sizeof u);
    assert_int_equal(tag(u, "bh", v, sizeof v), 0);
    assert_string_equal(v, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    /* another length: computed and stored afresh */
    char *sc = sign_str(k, &cached, c, err, sizeof err), *sc0 = sign_str(k, &plain, c, err, sizeof err);
    assert_string_equal(sc, sc0);
    assert_int_equal(bc.body_len, strlen("another, longer body\r\n"));
    /* another canonicalization: computed afresh */
    struct dkim_params simple_cached = { .bcanon = DKIM_CANON_SIMPLE, .bh = &bc },
                       simple = { .bcanon = DKIM_CANON_SIMPLE };
    memset(bc.digest, 0, sizeof bc.digest);
    char *sd = sign_str(k, &simple_cached, c, err, sizeof err), *sd0 = sign_str(k, &simple, c, err, sizeof err);
    assert_string_equal(sd, sd0);
    assert_int_equal(bc.bcanon, DKIM_CANON_SIMPLE);
    free(sa);
    free(sb);
    free(sb0);
    free(planted);
    free(sc);
    free(sc0);
    free(sd);
    free(sd0);
    dkim_key_free(k);
}

/* The body memo: messages that share a body sign exactly as without it and take
 * the body hash from it; a body of the same length that differs in one octet, or
 * another canonicalization, is hashed afresh; the least recently used entry goes
 * first; a body over the memo's limit is not kept. */
static void test_body_memo(void **state)
{
    struct dkim_key *k = load(path_ed, "example.com", "s1");
    struct dkim_body_memo *memo = dkim_body_memo_new(2, 64);
    assert_non_null(memo);
    char err[256];
    struct dkim_params with = { .memo = memo }, plain = { 0 };
    struct dkim_params simple_with = { .bcanon = DKIM_CANON_SIMPLE, .memo = memo },
                       simple = { .bcanon = DKIM_CANON_SIMPLE };
    const char *msgs[] = {
        "From: a@example.com\r\nTo: x@example.net\r\n\r\nthe  campaign body\r\n\r\n",
        "From: a@example.com\r\nTo: y@example.net\r\n\r\nthe  campaign body\r\n\r\n",
        "From: a@example.com\r\nTo: z@example.net\r\n\r\nthe  campaign bodY\r\n\r\n",
        "From: a@example.com\r\n\r\nsecond body\r\n",
        "From: a@example.com\r\n\r\nthird body\r\n",
        "From: a@example.com\r\nTo: w@example.net\r\n\r\nthe  campaign body\r\n\r\n",
        "From: a@example.com\r\n\r\n"
        "a body longer than the memo keeps: sixty-four octets and then some more\r\n",
    };
    /* hits expected after signing msgs[i] with the relaxed memo */
    const uint64_t hits[] = { 0, 1, 1, 1, 1, 1, 1 };
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        char *a = sign_str(k, &with, msgs[i], err, sizeof err);
        char *b = sign_str(k, &plain, msgs[i], err, sizeof err);
        assert_non_null(a);
        assert_non_null(b);
        assert_string_equal(a, b);
        assert_int_equal(dkim_body_memo_hits(memo), hits[i]);
        free(a);
        free(b);
    }
    /* msgs[5] missed above (two bodies came after msgs[0]'s); now it is kept */
    char *a = sign_str(k, &with, msgs[5], err, sizeof err);
    assert_int_equal(dkim_body_memo_hits(memo), 2);
    free(a);
    /* the long body was not kept */
    a = sign_str(k, &with, msgs[6], err, sizeof err);
    assert_int_equal(dkim_body_memo_hits(memo), 2);
    free(a);
    /* the same octets under simple body canonicalization are another entry */
    char *s1 = sign_str(k, &simple_with, msgs[0], err, sizeof err),
         *s0 = sign_str(k, &simple, msgs[0], err, sizeof err);
    assert_string_equal(s1, s0);
    assert_int_equal(dkim_body_memo_hits(memo), 2);
    free(s1);
    s1 = sign_str(k, &simple_with, msgs[1], err, sizeof err);
    free(s0);
    s0 = sign_str(k, &simple, msgs[1], err, sizeof err);
    assert_string_equal(s1, s0);
    assert_int_equal(dkim_body_memo_hits(memo), 3);
    free(s1);
    free(s0);
    /* an empty body is a body like any other */
    const char *empty = "From: a@example.com\r\n\r\n";
    a = sign_str(k, &with, empty, err, sizeof err);
    char *b = sign_str(k, &with, empty, err, sizeof err);
    char *c = sign_str(k, &plain, empty, err, sizeof err);
    assert_string_equal(b, c);
    assert_int_equal(dkim_body_memo_hits(memo), 4);
    free(a);
    free(b);
    free(c);
    assert_null(dkim_body_memo_new(0, 64));
    dkim_body_memo_free(NULL);
    dkim_body_memo_free(memo);
    dkim_key_free(k);
}

/* Arbitrary input never crashes or overreads (ASan build): random octets with a
 * bias towards CR, LF, ':', WSP and a From field. */
static void test_arbitrary_input(void **state)
{
    struct dkim_key *k = load(path_ed, "example.com", "s1");
    const char alphabet[] = "\r\n\r\n: \t:aF-zfromFROM\x80\xff\0";
    uint32_t seed = 12345;
    for (int round = 0; round < 3000; round++) {
        size_t n = (size_t)(seed % 300);
        uint8_t *m = malloc(n + 32);
        assert_non_null(m);
        size_t off = 0;
        if (round % 2 == 0) {
            memcpy(m, "From: x@example.com\r\n", 21);
            off = 21;
        }
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            m[off + i] = (seed >> 16) % 3 ? (uint8_t)alphabet[(seed >> 8) % (sizeof(alphabet) - 1)]
                                          : (uint8_t)(seed >> 24);
        }
        struct vbuf out;
        vbuf_init(&out, OUT_LIMIT);
        char err[256];
        struct dkim_params p = { .hcanon = (enum DKIM_CANON)(round & 1),
                                 .bcanon = (enum DKIM_CANON)((round >> 1) & 1) };
        if (dkim_sign(k, &p, m, off + n, &out, err, sizeof err) == 0) {
            assert_int_equal(vbuf_append(&out, "", 1), 0);
            check_folding((const char *)out.data);
        } else {
            assert_int_equal(out.len, 0);
        }
        vbuf_free(&out);
        free(m);
        seed = seed * 1103515245u + 12345u;
    }
    dkim_key_free(k);
}

/*
 * ref_relaxed_body - RFC 6376 3.4.4 written the plain way, line by line, as the
 * reference the optimised canonicalizer (which also has a no-change fast path) is
 * compared with
 */
static size_t ref_relaxed_body(const char *in, size_t n, char *out)
{
    size_t o = 0, pending = 0, i = 0;
    while (i < n) {
        size_t e = i;
        while (e + 1 < n && !(in[e] == '\r' && in[e + 1] == '\n'))
            e++;
        size_t end = e + 1 < n ? e : n; /* a last line without CRLF */
        size_t next = e + 1 < n ? e + 2 : n;
        char line[4096];
        size_t l = 0;
        for (size_t k = i; k < end; k++) {
            bool w = in[k] == ' ' || in[k] == '\t';
            if (w && l > 0 && line[l - 1] == ' ') continue;
            line[l++] = w ? ' ' : in[k];
        }
        while (l > 0 && line[l - 1] == ' ')
            l--;
        if (l == 0) {
            pending++;
        } else {
            for (; pending > 0; pending--) {
                out[o++] = '\r';
                out[o++] = '\n';
            }
            memcpy(out + o, line, l);
            o += l;
            out[o++] = '\r';
            out[o++] = '\n';
        }
        i = next;
    }
    return o;
}

/* random bodies over a small alphabet (so WSP runs, trailing WSP and empty lines
 * are frequent): the canonicalizer agrees with the reference, fast path or not */
static void test_relaxed_body_differential(void **state)
{
    (void)state;
    static const char *const atoms[] = {"a", "b", " ", "\t", "\r\n", "\r\n", "x y"};
    /* long plain runs too, so that a change falls at every offset of a 16-octet
     * block the scan skips over */
    static const char *const prose[] = {"Lorem ipsum dolor", "sit_amet,consectetur-adipiscing", " ",
                                        "\t", "\r\n", "  ", "x y"};
    unsigned seed = 12345;
    for (int round = 0; round < 40000; round++) {
        const char *const *set = round < 20000 ? atoms : prose;
        char in[1400], ref[2800];
        size_t n = 0;
        int natoms = (int)((seed = seed * 1103515245u + 12345u) >> 16) % 40;
        for (int k = 0; k < natoms; k++) {
            const char *a = set[((seed = seed * 1103515245u + 12345u) >> 16) % 7];
            size_t al = strlen(a);
            memcpy(in + n, a, al);
            n += al;
        }
        if (round % 2 == 0 && n + 2 <= sizeof in) { /* half of them end in CRLF */
            in[n++] = '\r';
            in[n++] = '\n';
        }
        struct vbuf out;
        vbuf_init(&out, 1 << 16);
        assert_int_equal(dkim_canon_body(DKIM_CANON_RELAXED, (const uint8_t *)in, n, &out), 0);
        size_t rl = ref_relaxed_body(in, n, ref);
        if (out.len != rl || (rl > 0 && memcmp(out.data, ref, rl) != 0))
            fail_msg("round %d: relaxed body differs from the reference (%zu vs %zu octets)",
                     round, out.len, rl);
        vbuf_free(&out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canon_rfc_examples),
        cmocka_unit_test(test_canon_body_edges),
        cmocka_unit_test(test_body_hash_empty),
        cmocka_unit_test(test_rfc8463_vector),
        cmocka_unit_test(test_key_load),
        cmocka_unit_test(test_dns_record),
        cmocka_unit_test(test_matches_record),
        cmocka_unit_test(test_hlist),
        cmocka_unit_test(test_no_l_tag),
        cmocka_unit_test(test_folding),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_relaxed_invariance),
        cmocka_unit_test(test_body_cache),
        cmocka_unit_test(test_body_memo),
        cmocka_unit_test(test_arbitrary_input),
        cmocka_unit_test(test_relaxed_body_differential),
    };
    return cmocka_run_group_tests(tests, setup_keys, teardown_keys);
}
