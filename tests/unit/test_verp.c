/*
 * test_verp - unit tests for the signed feedback tokens: key derivation, VERP and
 * mailto round trips (any case, full addresses, angle brackets), golden tokens
 * computed independently of this code (Python hashlib/hmac/base32), every
 * single-character alteration and every truncation rejected, wrong key, wrong
 * prefix, tokens of one kind refused as another, the 64-octet local part, URL
 * tokens with long and odd lists and addresses, and malformed encodings.
 *
 * Decoders are fed heap copies of exactly the input's length (heap_str) so that
 * a read past the terminating NUL is caught under ASan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "verp.h"

#define SECRET       "correct horse battery staple"
#define OTHER_SECRET "correct horse battery stapler"

/* every character a token could be altered to: both alphabets, digits outside
 * them, punctuation that means something in addresses and URLs, 8-bit */
static const char alter_chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789-_+/=.@ <>%\x7f\x80\xff";

/* heap_str - exact-size heap copy of s; caller frees */
static char *heap_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

/* lower - ASCII lower-case of c */
static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* key_of - the key derived from secret (must succeed) */
static struct verp_key key_of(const char *secret)
{
    struct verp_key k;
    assert_int_equal(verp_key_derive(&k, secret), 0);
    return k;
}

/* short_decode_fn - verp_decode or verp_unsub_mail_decode */
typedef int (*short_decode_fn)(const struct verp_key *, const char *, const char *, uint64_t *,
                               uint32_t *);
typedef int (*short_encode_fn)(const struct verp_key *, const char *, uint64_t, uint32_t, char *,
                               size_t);

/* decodes - 1 if dec accepts s (via an exact heap copy) as msgid/idx */
static int decodes(short_decode_fn dec, const struct verp_key *k, const char *prefix, const char *s,
                   uint64_t msgid, uint32_t idx)
{
    char *h = heap_str(s);
    uint64_t m = ~msgid;
    uint32_t i = ~idx;
    int rc = dec(k, prefix, h, &m, &i);
    free(h);
    if (rc == 0) {
        assert_true(m == msgid);
        assert_true(i == idx);
        return 1;
    }
    return 0;
}

/* verp_find: the first verifying token among report addresses, either kind */
static void test_find(void **state)
{
    (void)state;
    struct verp_key k = key_of("a-test-secret-of-some-length");
    char v[VERP_LOCAL_SIZE], u[VERP_LOCAL_SIZE], va[128], ua[128], forged[128];
    assert_int_equal(verp_encode(&k, "bounce", 42, 7, v, sizeof v), 0);
    assert_int_equal(verp_unsub_mail_encode(&k, VERP_UNSUB_PREFIX, 43, 8, u, sizeof u), 0);
    snprintf(va, sizeof va, "<%s@b.example>", v);
    snprintf(ua, sizeof ua, " %s@b.example", u);
    snprintf(forged, sizeof forged, "%s@b.example", v);
    forged[8] = forged[8] == 'a' ? 'b' : 'a';
    uint64_t id = 0;
    uint32_t idx = 0;
    bool unsub = true;
    const char *a1[] = {NULL, "", "someone@else.example", forged, va, ua};
    assert_int_equal(verp_find(&k, "bounce", a1, 6, &id, &idx, &unsub), 0);
    assert_true(id == 42 && idx == 7 && !unsub);
    const char *a2[] = {forged, ua, va};
    assert_int_equal(verp_find(&k, "bounce", a2, 3, &id, &idx, &unsub), 0);
    assert_true(id == 43 && idx == 8 && unsub);
    const char *a3[] = {forged, "plain@b.example", NULL};
    assert_int_equal(verp_find(&k, "bounce", a3, 3, &id, &idx, &unsub), -1);
}

static void test_key_derive(void **state)
{
    (void)state;
    struct verp_key a, b, c;
    assert_int_equal(verp_key_derive(&a, NULL), -1);
    assert_int_equal(verp_key_derive(&a, ""), -1);
    assert_int_equal(verp_key_derive(&a, "fifteen bytes.."), -1);
    assert_int_equal(verp_key_derive(&a, "sixteen bytes..."), 0);
    assert_int_equal(verp_key_derive(&a, SECRET), 0);
    assert_int_equal(verp_key_derive(&b, SECRET), 0);
    assert_int_equal(verp_key_derive(&c, OTHER_SECRET), 0);
    assert_memory_equal(a.k, b.k, sizeof a.k);
    assert_memory_not_equal(a.k, c.k, sizeof a.k);
}

/* Golden values from an independent implementation (Python 3):
 *   K   = sha256(b"volley-verp-key-v1\0" + SECRET)
 *   sub = hmac(K, b"volley-verp-subkey-v1\0" + label)
 *   tok = b32lower(body + hmac(sub, label + body)[:10]).rstrip("=")           */
static void test_golden(void **state)
{
    (void)state;
    struct verp_key k = key_of(SECRET);
    char out[VERP_LOCAL_SIZE];
    char url[VERP_URL_TOKEN_SIZE];

    assert_int_equal(verp_encode(&k, "b", 0x0123456789abcdefULL, 7, out, sizeof out), 0);
    assert_string_equal(out, "b+aeasgrlhrgv433yaaaaaows6eot5zudtl5mse");
    assert_int_equal(verp_unsub_mail_encode(&k, "unsub", 0x0123456789abcdefULL, 7, out, sizeof out),
                     0);
    assert_string_equal(out, "unsub+aeasgrlhrgv433yaaaaao7bn3tdvwxfofzobg");
    assert_int_equal(verp_unsub_url_token(&k, "news", "a+b@example.org", 42, url, sizeof url), 0);
    assert_string_equal(url, "AQAAAAAAAAAqBG5ld3MPYStiQGV4YW1wbGUub3JndczbfSN8lBXR5a-UEgiHGQ");
}

static void verp_roundtrips(short_encode_fn enc, short_decode_fn dec)
{
    struct verp_key k = key_of(SECRET);
    static const uint64_t ids[] = {0, 1, 0x0123456789abcdefULL, UINT64_MAX};
    static const uint32_t idxs[] = {0, 1, 1000, UINT32_MAX};
    static const char *prefixes[] = {"b", "bounce", "bounces.volley-1_x",
                                     "abcdefghijklmnopqrstuvwx"};
    char out[VERP_LOCAL_SIZE], buf[256];

    for (size_t p = 0; p < sizeof prefixes / sizeof prefixes[0]; p++) {
        for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
            for (size_t j = 0; j < sizeof idxs / sizeof idxs[0]; j++) {
                assert_int_equal(enc(&k, prefixes[p], ids[i], idxs[j], out, sizeof out), 0);
                assert_true(strlen(out) <= VERP_LOCAL_MAX);
                assert_int_equal(strlen(out), strlen(prefixes[p]) + 1 + VERP_TOKEN_LEN);
                for (const char *c = out; *c; c++)
                    assert_true((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '+' ||
                                *c == '.' || *c == '_' || *c == '-');
                assert_true(decodes(dec, &k, prefixes[p], out, ids[i], idxs[j]));
                snprintf(buf, sizeof buf, "%s@bounce.example.com", out);
                assert_true(decodes(dec, &k, prefixes[p], buf, ids[i], idxs[j]));
                snprintf(buf, sizeof buf, "<%s@bounce.example.com>", out);
                assert_true(decodes(dec, &k, prefixes[p], buf, ids[i], idxs[j]));
                /* any case: some MTAs upper- or lower-case local parts */
                for (char *c = buf; *c; c++)
                    if (*c >= 'a' && *c <= 'z') *c = (char)(*c - 'a' + 'A');
                assert_true(decodes(dec, &k, prefixes[p], buf, ids[i], idxs[j]));
            }
        }
    }
}

static void test_verp_roundtrip(void **state)
{
    (void)state;
    verp_roundtrips(verp_encode, verp_decode);
}

static void test_mail_roundtrip(void **state)
{
    (void)state;
    verp_roundtrips(verp_unsub_mail_encode, verp_unsub_mail_decode);
}

/* every one-character change, every truncation and every one-character
 * extension of a short token's local part is refused; case changes are not */
static void short_alterations(short_encode_fn enc, short_decode_fn dec)
{
    struct verp_key k = key_of(SECRET);
    char out[VERP_LOCAL_SIZE], buf[VERP_LOCAL_SIZE + 64];
    assert_int_equal(enc(&k, "bounce", 0xfeedfacecafebeefULL, 12345, out, sizeof out), 0);
    size_t len = strlen(out);

    for (size_t pos = 0; pos < len; pos++) {
        for (const char *c = alter_chars; *c; c++) {
            memcpy(buf, out, len + 1);
            buf[pos] = *c;
            int same = lower(*c) == out[pos];
            assert_int_equal(decodes(dec, &k, "bounce", buf, 0xfeedfacecafebeefULL, 12345), same);
            /* the same change inside a full address */
            snprintf(buf + len, sizeof buf - len, "@example.net");
            assert_int_equal(decodes(dec, &k, "bounce", buf, 0xfeedfacecafebeefULL, 12345), same);
        }
    }
    for (size_t cut = 0; cut < len; cut++) {
        memcpy(buf, out, cut);
        buf[cut] = '\0';
        assert_false(decodes(dec, &k, "bounce", buf, 0xfeedfacecafebeefULL, 12345));
        snprintf(buf + cut, sizeof buf - cut, "@example.net");
        assert_false(decodes(dec, &k, "bounce", buf, 0xfeedfacecafebeefULL, 12345));
    }
    for (const char *c = alter_chars; *c; c++) {
        snprintf(buf, sizeof buf, "%s%c", out, *c);
        assert_false(decodes(dec, &k, "bounce", buf, 0xfeedfacecafebeefULL, 12345));
    }
    /* an address with no domain after the '@' */
    snprintf(buf, sizeof buf, "%s@", out);
    assert_false(decodes(dec, &k, "bounce", buf, 0xfeedfacecafebeefULL, 12345));
}

static void test_verp_alterations(void **state)
{
    (void)state;
    short_alterations(verp_encode, verp_decode);
}

static void test_mail_alterations(void **state)
{
    (void)state;
    short_alterations(verp_unsub_mail_encode, verp_unsub_mail_decode);
}

static void test_verp_every_bit(void **state)
{
    (void)state;
    /* flip each bit of every decoded byte by re-encoding a tampered token: the
     * token is base32, so flipping bit b of character i covers all 185 bits */
    struct verp_key k = key_of(SECRET);
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    char out[VERP_LOCAL_SIZE], buf[VERP_LOCAL_SIZE];
    assert_int_equal(verp_encode(&k, "b", 99, 3, out, sizeof out), 0);
    for (size_t pos = 2; pos < strlen(out); pos++) {
        const char *at = strchr(alphabet, out[pos]);
        assert_non_null(at);
        for (int bit = 0; bit < 5; bit++) {
            memcpy(buf, out, sizeof buf);
            buf[pos] = alphabet[(at - alphabet) ^ (1 << bit)];
            assert_false(decodes(verp_decode, &k, "b", buf, 99, 3));
        }
    }
}

static void test_wrong_key_prefix_kind(void **state)
{
    (void)state;
    struct verp_key k = key_of(SECRET), other = key_of(OTHER_SECRET);
    char v[VERP_LOCAL_SIZE], m[VERP_LOCAL_SIZE], url[VERP_URL_TOKEN_SIZE], buf[128];
    char list[VERP_LIST_MAX + 1], addr[VERP_ADDR_MAX + 1];
    uint64_t msgid;
    uint32_t idx;

    assert_int_equal(verp_encode(&k, "bounce", 77, 5, v, sizeof v), 0);
    assert_int_equal(verp_unsub_mail_encode(&k, "bounce", 77, 5, m, sizeof m), 0);
    assert_string_not_equal(v, m);

    /* wrong key */
    assert_int_equal(verp_decode(&other, "bounce", v, &msgid, &idx), -1);
    assert_int_equal(verp_unsub_mail_decode(&other, "bounce", m, &msgid, &idx), -1);

    /* wrong prefix: different, shorter, longer, invalid */
    assert_int_equal(verp_decode(&k, "bounces", v, &msgid, &idx), -1);
    assert_int_equal(verp_decode(&k, "bounc", v, &msgid, &idx), -1);
    assert_int_equal(verp_decode(&k, "unsub", v, &msgid, &idx), -1);
    assert_int_equal(verp_decode(&k, "BOUNCE", v, &msgid, &idx), -1);
    assert_int_equal(verp_decode(&k, "", v, &msgid, &idx), -1);
    assert_int_equal(verp_decode(&k, NULL, v, &msgid, &idx), -1);
    /* The prefix is a routing label, not signed (the MAC covers version, msgid
     * and idx, as the layout in verp.h says): the token moved under another
     * prefix still names the same recipient, and nothing else. */
    snprintf(buf, sizeof buf, "other%s", strchr(v, '+'));
    assert_true(decodes(verp_decode, &k, "other", buf, 77, 5));

    /* kinds: a bounce address is no unsubscribe request and vice versa */
    assert_int_equal(verp_unsub_mail_decode(&k, "bounce", v, &msgid, &idx), -1);
    assert_int_equal(verp_decode(&k, "bounce", m, &msgid, &idx), -1);
    assert_int_equal(
        verp_unsub_url_parse(&k, strchr(v, '+') + 1, list, sizeof list, addr, sizeof addr, &msgid),
        -1);
    assert_int_equal(verp_unsub_url_token(&k, "news", "a@example.org", 77, url, sizeof url), 0);
    assert_int_equal(
        verp_unsub_url_parse(&other, url, list, sizeof list, addr, sizeof addr, &msgid), -1);
    snprintf(buf, sizeof buf, "bounce+%.37s", url);
    assert_int_equal(verp_decode(&k, "bounce", buf, &msgid, &idx), -1);
    assert_int_equal(verp_unsub_mail_decode(&k, "bounce", buf, &msgid, &idx), -1);

    /* junk */
    assert_int_equal(verp_decode(&k, "bounce", "", &msgid, &idx), -1);
    assert_int_equal(verp_decode(&k, "bounce", "@", &msgid, &idx), -1);
    assert_int_equal(verp_decode(&k, "bounce", "<>", &msgid, &idx), -1);
    assert_int_equal(verp_decode(&k, "bounce", "bounce+", &msgid, &idx), -1);
    assert_int_equal(verp_decode(&k, "bounce", NULL, &msgid, &idx), -1);
}

static void test_prefix_and_length(void **state)
{
    (void)state;
    struct verp_key k = key_of(SECRET);
    char out[VERP_LOCAL_SIZE], big[2048];
    static const char *bad[] = {
        "",        "Bounce", "bou+nce", "b@x",
        "b ounce", "b\"",    "é",       "abcdefghijklmnopqrstuvwxy" /* 25 */};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(verp_encode(&k, bad[i], 1, 1, out, sizeof out), -1);
        assert_int_equal(verp_unsub_mail_encode(&k, bad[i], 1, 1, out, sizeof out), -1);
    }
    assert_int_equal(verp_encode(&k, NULL, 1, 1, out, sizeof out), -1);

    /* the longest prefix still leaves a local part within RFC 5321's 64 */
    assert_int_equal(verp_encode(&k, "abcdefghijklmnopqrstuvwx", 1, 1, out, sizeof out), 0);
    assert_int_equal(strlen(out), 62);

    /* the output buffer must hold the whole local part and its NUL */
    size_t need = strlen("bounce") + 1 + VERP_TOKEN_LEN + 1;
    assert_int_equal(verp_encode(&k, "bounce", 1, 1, out, need - 1), -1);
    assert_int_equal(verp_encode(&k, "bounce", 1, 1, out, need), 0);
    assert_int_equal(verp_encode(&k, "bounce", 1, 1, out, 0), -1);

    /* an over-long address is refused without reading all of it being required */
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, out, strlen(out));
    big[strlen(out)] = '@';
    assert_int_equal(verp_decode(&k, "bounce", big, NULL, NULL), -1);
}

/* url_parses - 1 if tok (as an exact heap copy) verifies with the given fields */
static int url_parses(const struct verp_key *k, const char *tok, const char *list, const char *addr,
                      uint64_t msgid)
{
    char l[VERP_LIST_MAX + 1], a[VERP_ADDR_MAX + 1];
    uint64_t m = ~msgid;
    char *h = heap_str(tok);
    int rc = verp_unsub_url_parse(k, h, l, sizeof l, a, sizeof a, &m);
    free(h);
    if (rc != 0) return 0;
    assert_string_equal(l, list);
    assert_string_equal(a, addr);
    assert_true(m == msgid);
    return 1;
}

static void test_url_roundtrip(void **state)
{
    (void)state;
    struct verp_key k = key_of(SECRET);
    char tok[VERP_URL_TOKEN_SIZE];
    char list64[VERP_LIST_MAX + 1], addr254[VERP_ADDR_MAX + 1];
    memset(list64, 'L', VERP_LIST_MAX);
    list64[VERP_LIST_MAX] = '\0';
    memset(addr254, 'a', VERP_ADDR_MAX);
    addr254[VERP_ADDR_MAX] = '\0';
    addr254[100] = '@';

    static const struct {
        const char *list, *addr;
    } cases[] = {
        {"news", "alice@example.org"},
        {"x", "y"},
        {"Ünïcödé ✓ newsletter", "josé.müller@bücher.example"},
        {"a+b/c=d", "first+tag/x=y@example.com"},
        {"\"quoted\" <list> & 'co'", "\"odd local\"@[192.0.2.1]"},
        {"===", "+/+/@=="},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(
            verp_unsub_url_token(&k, cases[i].list, cases[i].addr, i * 1000003u, tok, sizeof tok),
            0);
        for (const char *c = tok; *c; c++)
            assert_true((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
                        (*c >= '0' && *c <= '9') || *c == '-' || *c == '_');
        assert_true(url_parses(&k, tok, cases[i].list, cases[i].addr, i * 1000003u));
    }

    /* the longest token */
    assert_int_equal(verp_unsub_url_token(&k, list64, addr254, UINT64_MAX, tok, sizeof tok), 0);
    assert_int_equal(strlen(tok), VERP_URL_TOKEN_MAX);
    assert_true(url_parses(&k, tok, list64, addr254, UINT64_MAX));
    assert_int_equal(verp_unsub_url_token(&k, list64, addr254, 1, tok, VERP_URL_TOKEN_MAX), -1);

    /* the caller's buffers must hold the fields */
    char l[8], a[VERP_ADDR_MAX + 1];
    uint64_t m;
    assert_int_equal(verp_unsub_url_token(&k, "newsletter", "a@b", 1, tok, sizeof tok), 0);
    assert_int_equal(verp_unsub_url_parse(&k, tok, l, sizeof l, a, sizeof a, &m), -1);
    assert_string_equal(l, "");
    assert_int_equal(verp_unsub_url_parse(&k, tok, a, sizeof a, l, 3, &m), -1);
    assert_int_equal(verp_unsub_url_parse(&k, tok, a, sizeof a, l, 4, &m), 0);
    assert_string_equal(l, "a@b");
}

static void test_url_bad_fields(void **state)
{
    (void)state;
    struct verp_key k = key_of(SECRET);
    char tok[VERP_URL_TOKEN_SIZE];
    char list65[VERP_LIST_MAX + 2], addr255[VERP_ADDR_MAX + 2];
    memset(list65, 'L', sizeof list65 - 1);
    list65[sizeof list65 - 1] = '\0';
    memset(addr255, 'a', sizeof addr255 - 1);
    addr255[sizeof addr255 - 1] = '\0';

    assert_int_equal(verp_unsub_url_token(&k, "", "a@b", 1, tok, sizeof tok), -1);
    assert_int_equal(verp_unsub_url_token(&k, "l", "", 1, tok, sizeof tok), -1);
    assert_int_equal(verp_unsub_url_token(&k, list65, "a@b", 1, tok, sizeof tok), -1);
    assert_int_equal(verp_unsub_url_token(&k, "l", addr255, 1, tok, sizeof tok), -1);
    assert_int_equal(verp_unsub_url_token(&k, "l\r\nX: y", "a@b", 1, tok, sizeof tok), -1);
    assert_int_equal(verp_unsub_url_token(&k, "l", "a@b\x7f", 1, tok, sizeof tok), -1);
    assert_int_equal(verp_unsub_url_token(&k, "l", "a\tb", 1, tok, sizeof tok), -1);
    assert_int_equal(verp_unsub_url_token(&k, NULL, "a@b", 1, tok, sizeof tok), -1);
    assert_int_equal(verp_unsub_url_token(&k, "l", NULL, 1, tok, sizeof tok), -1);
}

static void test_url_alterations(void **state)
{
    (void)state;
    struct verp_key k = key_of(SECRET);
    char tok[VERP_URL_TOKEN_SIZE], buf[VERP_URL_TOKEN_SIZE + 8];
    /* lengths 0, 1 and 2 mod 3 of the raw token, so every spare-bit case occurs */
    static const char *addrs[] = {"alice+x/y=z@example.org", "bob@example.org", "carol@example.org",
                                  "dave.d@example.org"};
    for (size_t t = 0; t < sizeof addrs / sizeof addrs[0]; t++) {
        assert_int_equal(verp_unsub_url_token(&k, "Ünïcode list", addrs[t], 31337, tok, sizeof tok),
                         0);
        size_t len = strlen(tok);
        assert_true(url_parses(&k, tok, "Ünïcode list", addrs[t], 31337));
        for (size_t pos = 0; pos < len; pos++) {
            for (const char *c = alter_chars; *c; c++) {
                if (*c == tok[pos]) continue;
                memcpy(buf, tok, len + 1);
                buf[pos] = *c;
                assert_false(url_parses(&k, buf, "Ünïcode list", addrs[t], 31337));
            }
        }
        for (size_t cut = 0; cut < len; cut++) {
            memcpy(buf, tok, cut);
            buf[cut] = '\0';
            assert_false(url_parses(&k, buf, "Ünïcode list", addrs[t], 31337));
        }
        for (const char *c = alter_chars; *c; c++) {
            snprintf(buf, sizeof buf, "%s%c", tok, *c);
            assert_false(url_parses(&k, buf, "Ünïcode list", addrs[t], 31337));
        }
        /* padded, standard-alphabet, wrapped in space or a URL: all refused */
        snprintf(buf, sizeof buf, "%s=", tok);
        assert_false(url_parses(&k, buf, "Ünïcode list", addrs[t], 31337));
        snprintf(buf, sizeof buf, "%s==", tok);
        assert_false(url_parses(&k, buf, "Ünïcode list", addrs[t], 31337));
        snprintf(buf, sizeof buf, " %s", tok);
        assert_false(url_parses(&k, buf, "Ünïcode list", addrs[t], 31337));
        snprintf(buf, sizeof buf, "/%s", tok);
        assert_false(url_parses(&k, buf, "Ünïcode list", addrs[t], 31337));
    }
}

static void test_url_malformed(void **state)
{
    (void)state;
    struct verp_key k = key_of(SECRET);
    char l[VERP_LIST_MAX + 1], a[VERP_ADDR_MAX + 1];
    uint64_t m;
    static const char *junk[] = {
        "",
        "A",
        "AA",
        "AAA",
        "AAAA",
        "AAAAA",
        "====",
        "AA==",
        "A===",
        "+/+/",
        "AAAA AAAA",
        "AAAA\nAAAA",
        "%41%41%41%41",
        "AQAAAAAAAAAqBG5ld3MPYStiQGV4YW1wbGUub3JndczbfSN8lBXR5a-UEgiHG",
        /* a well-formed base64url string too short to be a token */
        "AQAAAAAAAAAqAWwBYQ",
        /* valid characters, valid length, zero MAC */
        "AQAAAAAAAAAqBG5ld3MPYStiQGV4YW1wbGUub3JnAAAAAAAAAAAAAAAAAAAAAA",
    };
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        char *h = heap_str(junk[i]);
        assert_int_equal(verp_unsub_url_parse(&k, h, l, sizeof l, a, sizeof a, &m), -1);
        free(h);
    }
    assert_int_equal(verp_unsub_url_parse(&k, NULL, l, sizeof l, a, sizeof a, &m), -1);

    /* far longer than any token: refused after reading a bounded prefix */
    size_t n = 100000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'A', n);
    big[n] = '\0';
    assert_int_equal(verp_unsub_url_parse(&k, big, l, sizeof l, a, sizeof a, &m), -1);
    free(big);

    /* every string of one to four characters from a small alphabet */
    static const char alpha[] = "A_-=+/ \x80";
    char s[5];
    size_t na = strlen(alpha);
    for (size_t len = 1; len <= 4; len++) {
        size_t total = 1;
        for (size_t i = 0; i < len; i++)
            total *= na;
        for (size_t v = 0; v < total; v++) {
            size_t x = v;
            for (size_t i = 0; i < len; i++, x /= na)
                s[i] = alpha[x % na];
            s[len] = '\0';
            char *h = heap_str(s);
            assert_int_equal(verp_unsub_url_parse(&k, h, l, sizeof l, a, sizeof a, &m), -1);
            free(h);
        }
    }
}

static void test_base32_malformed(void **state)
{
    (void)state;
    struct verp_key k = key_of(SECRET);
    char out[VERP_LOCAL_SIZE], buf[VERP_LOCAL_SIZE];
    assert_int_equal(verp_encode(&k, "b", 5, 6, out, sizeof out), 0);
    /* the last character carries 4 data bits and 1 spare bit: the spare set is a
     * second spelling of the same bytes and must be refused */
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    size_t last = strlen(out) - 1;
    int v = (int)(strchr(alphabet, out[last]) - alphabet);
    assert_int_equal(v & 1, 0);
    memcpy(buf, out, sizeof buf);
    buf[last] = alphabet[v | 1];
    assert_false(decodes(verp_decode, &k, "b", buf, 5, 6));
    /* base32 look-alikes: 0, 1, 8, 9 and '=' padding */
    static const char *junk[] = {"b+0000000000000000000000000000000000000",
                                 "b+1111111111111111111111111111111111111",
                                 "b+8888888888888888888888888888888888888",
                                 "b+aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                 "b+aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa==",
                                 "b++aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                 "b+",
                                 "+",
                                 "b"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        assert_false(decodes(verp_decode, &k, "b", junk[i], 0, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_key_derive),        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_verp_roundtrip),    cmocka_unit_test(test_mail_roundtrip),
        cmocka_unit_test(test_verp_alterations),  cmocka_unit_test(test_mail_alterations),
        cmocka_unit_test(test_verp_every_bit),    cmocka_unit_test(test_wrong_key_prefix_kind),
        cmocka_unit_test(test_prefix_and_length), cmocka_unit_test(test_url_roundtrip),
        cmocka_unit_test(test_url_bad_fields),    cmocka_unit_test(test_url_alterations),
        cmocka_unit_test(test_url_malformed),     cmocka_unit_test(test_base32_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
