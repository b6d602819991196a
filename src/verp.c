/*
 * verp - signed VERP return paths and unsubscribe tokens (see verp.h for the key
 * schedule and the exact token layouts).
 *
 * Entry points: verp_key_derive(), verp_encode()/verp_decode(),
 * verp_unsub_url_token()/verp_unsub_url_parse(),
 * verp_unsub_mail_encode()/verp_unsub_mail_decode().
 *
 * Invariants: decoders read at most a bounded prefix of their input (strnlen
 * caps), decode into fixed stack buffers sized for the longest valid token, verify
 * the MAC in constant time before interpreting any decoded field, and accept only
 * the one canonical spelling of a token (alphabet, length and spare bits checked),
 * so an altered token can never decode to the bytes of a valid one.  Subkeys are
 * wiped from the stack after use.
 */
#include "verp.h"

#include <stdbool.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "util.h"

#define VERP_KEY_LABEL    "volley-verp-key-v1"
#define VERP_SUBKEY_LABEL "volley-verp-subkey-v1"

#define VERP_LABEL_RETURN "verp"
#define VERP_LABEL_URL    "unsub"
#define VERP_LABEL_MAIL   "unsub-mail"

#define VERP_BODY_LEN 13 /* version | msgid | idx */
#define VERP_MAC_LEN  10
#define VERP_RAW_LEN  (VERP_BODY_LEN + VERP_MAC_LEN) /* 23 -> 37 base32 chars */

#define VERP_URL_MAC_LEN  16
#define VERP_URL_MIN      (1 + 8 + 1 + 1 + 1 + 1 + VERP_URL_MAC_LEN)
#define VERP_URL_RAW_MAX  (1 + 8 + 1 + VERP_LIST_MAX + 1 + VERP_ADDR_MAX + VERP_URL_MAC_LEN)
#define VERP_LABEL_MAXLEN 16

/* a full address may carry a domain and brackets around the local part */
#define VERP_ADDR_INPUT_MAX 1024

static const char verp_b32_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

_Static_assert((VERP_RAW_LEN * 8 + 4) / 5 == VERP_TOKEN_LEN, "VERP token length");
_Static_assert(VERP_PREFIX_MAX + 1 + VERP_TOKEN_LEN <= VERP_LOCAL_MAX, "local part fits");
_Static_assert((VERP_URL_RAW_MAX * 4 + 2) / 3 == VERP_URL_TOKEN_MAX, "URL token length");

int verp_key_derive(struct verp_key *key, const char *secret)
{
    if (key == NULL || secret == NULL || strnlen(secret, VERP_SECRET_MIN) < VERP_SECRET_MIN)
        return -1;
    /* A fixed label in front keeps this hash of the secret distinct from any other
     * use the operator might make of the same string. */
    static const unsigned char label[] = VERP_KEY_LABEL; /* NUL included */
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, label, sizeof label) == 1 &&
             EVP_DigestUpdate(ctx, secret, strlen(secret)) == 1 &&
             EVP_DigestFinal_ex(ctx, key->k, &len) == 1 && len == sizeof key->k;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        OPENSSL_cleanse(key->k, sizeof key->k);
        return -1;
    }
    return 0;
}

/* verp_mac - HMAC-SHA256(subkey(label), label | body) into mac (32 bytes) */
static int verp_mac(const struct verp_key *key, const char *label, const uint8_t *body, size_t blen,
                    unsigned char mac[32])
{
    unsigned char info[sizeof VERP_SUBKEY_LABEL + VERP_LABEL_MAXLEN];
    unsigned char msg[VERP_LABEL_MAXLEN + VERP_URL_RAW_MAX];
    unsigned char subkey[32];
    unsigned int sublen = 0, maclen = 0;
    size_t llen = strlen(label);

    if (llen > VERP_LABEL_MAXLEN || blen > VERP_URL_RAW_MAX) return -1;
    /* subkey info: the subkey label with its NUL, then the kind's label */
    memcpy(info, VERP_SUBKEY_LABEL, sizeof VERP_SUBKEY_LABEL);
    memcpy(info + sizeof VERP_SUBKEY_LABEL, label, llen);
    memcpy(msg, label, llen);
    memcpy(msg + llen, body, blen);

    int ok = HMAC(EVP_sha256(), key->k, sizeof key->k, info, sizeof VERP_SUBKEY_LABEL + llen,
                  subkey, &sublen) != NULL &&
             sublen == sizeof subkey &&
             HMAC(EVP_sha256(), subkey, sizeof subkey, msg, llen + blen, mac, &maclen) != NULL &&
             maclen == 32;
    OPENSSL_cleanse(subkey, sizeof subkey);
    return ok ? 0 : -1;
}

/* verp_b32_encode - lower-case unpadded base32 of n bytes into out, which holds
 * (n * 8 + 4) / 5 + 1 chars; NUL-terminated */
static void verp_b32_encode(const uint8_t *in, size_t n, char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            out[o++] = verp_b32_alphabet[(acc >> bits) & 31];
        }
    }
    if (bits > 0) out[o++] = verp_b32_alphabet[(acc << (5 - bits)) & 31];
    out[o] = '\0';
}

/* verp_b32_value - the 5-bit value of a base32 character in either case, or -1 */
static int verp_b32_value(char c)
{
    if (c >= 'a' && c <= 'z') return c - 'a';
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= '2' && c <= '7') return c - '2' + 26;
    return -1;
}

/* verp_b32_decode - decode exactly len characters into exactly outn bytes.  len
 * must be the unpadded length for outn bytes and the spare low bits of the last
 * character must be zero (the canonical spelling); -1 otherwise. */
static int verp_b32_decode(const char *in, size_t len, uint8_t *out, size_t outn)
{
    if (len != (outn * 8 + 4) / 5) return -1;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int v = verp_b32_value(in[i]);
        if (v < 0) return -1;
        acc = (acc << 5) | (uint32_t)v;
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* the leftover bits are padding: non-zero would be a second spelling */
    if ((acc & ((1u << bits) - 1)) != 0 || o != outn) return -1;
    return 0;
}

/* verp_b64url_encode - unpadded base64url of n bytes (n <= VERP_URL_RAW_MAX) into
 * out (size outn); -1 if it does not fit */
static int verp_b64url_encode(const uint8_t *in, size_t n, char *out, size_t outn)
{
    char tmp[(VERP_URL_RAW_MAX + 2) / 3 * 4 + 1];
    if (n > VERP_URL_RAW_MAX) return -1;
    int len = EVP_EncodeBlock((unsigned char *)tmp, in, (int)n);
    if (len < 0) return -1;
    while (len > 0 && tmp[len - 1] == '=')
        len--;
    if ((size_t)len + 1 > outn) return -1;
    for (int i = 0; i < len; i++)
        out[i] = tmp[i] == '+' ? '-' : tmp[i] == '/' ? '_' : tmp[i];
    out[len] = '\0';
    return 0;
}

/* verp_b64url_char - 1 for a character of the base64url alphabet */
static bool verp_b64url_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* verp_b64url_decode - decode len unpadded base64url characters (len <=
 * VERP_URL_TOKEN_MAX) into out (VERP_URL_RAW_MAX bytes); *outlen gets the byte
 * count.  Strict: alphabet only, no impossible length, canonical spare bits. */
static int verp_b64url_decode(const char *in, size_t len, uint8_t *out, size_t *outlen)
{
    char std[VERP_URL_TOKEN_MAX + 3];
    unsigned char raw[(VERP_URL_TOKEN_MAX + 3) / 4 * 3];
    char again[VERP_URL_TOKEN_MAX + 1];

    if (len == 0 || len > VERP_URL_TOKEN_MAX || len % 4 == 1) return -1;
    for (size_t i = 0; i < len; i++) {
        if (!verp_b64url_char(in[i])) return -1;
        std[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
    }
    /* EVP_DecodeBlock wants whole quanta: pad, then drop the pad bytes it counts */
    size_t pad = (4 - len % 4) % 4;
    memset(std + len, '=', pad);
    int n = EVP_DecodeBlock(raw, (const unsigned char *)std, (int)(len + pad));
    if (n < 0 || (size_t)n < pad) return -1;
    size_t rl = (size_t)n - pad;
    if (rl > VERP_URL_RAW_MAX) return -1;
    /* Re-encoding must give the input back: this rejects non-zero spare bits,
     * which EVP_DecodeBlock ignores, and so every second spelling. */
    if (verp_b64url_encode(raw, rl, again, sizeof again) < 0 || strlen(again) != len ||
        memcmp(again, in, len) != 0)
        return -1;
    memcpy(out, raw, rl);
    *outlen = rl;
    return 0;
}

/* verp_prefix_ok - 1..VERP_PREFIX_MAX characters of [a-z0-9._-]; its length or -1 */
static int verp_prefix_ok(const char *prefix)
{
    if (prefix == NULL) return -1;
    size_t n = strnlen(prefix, VERP_PREFIX_MAX + 1);
    if (n == 0 || n > VERP_PREFIX_MAX) return -1;
    for (size_t i = 0; i < n; i++) {
        char c = prefix[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return -1;
    }
    return (int)n;
}

/* verp_prefix_match - ASCII case-insensitive compare of n characters; no locale,
 * so a Turkish dotless i can never make two prefixes equal */
static bool verp_prefix_match(const char *s, const char *prefix, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != prefix[i]) return false;
    }
    return true;
}

/* verp_short_encode - "<prefix>+<base32(body | mac)>" for the 23-byte kinds */
static int verp_short_encode(const struct verp_key *key, const char *label, const char *prefix,
                             uint64_t msgid, uint32_t idx, char *out, size_t n)
{
    uint8_t raw[VERP_RAW_LEN];
    unsigned char mac[32];
    int plen = verp_prefix_ok(prefix);

    if (key == NULL || out == NULL || plen < 0 ||
        (size_t)plen + 1 + VERP_TOKEN_LEN > VERP_LOCAL_MAX ||
        n < (size_t)plen + 1 + VERP_TOKEN_LEN + 1)
        return -1;
    raw[0] = VERP_VERSION;
    put_be64(raw + 1, msgid);
    put_be32(raw + 9, idx);
    if (verp_mac(key, label, raw, VERP_BODY_LEN, mac) < 0) return -1;
    memcpy(raw + VERP_BODY_LEN, mac, VERP_MAC_LEN);
    memcpy(out, prefix, (size_t)plen);
    out[plen] = '+';
    verp_b32_encode(raw, sizeof raw, out + plen + 1);
    return 0;
}

/* verp_short_decode - the inverse of verp_short_encode on a local part or address */
static int verp_short_decode(const struct verp_key *key, const char *label, const char *prefix,
                             const char *addr, uint64_t *msgid, uint32_t *idx)
{
    uint8_t raw[VERP_RAW_LEN];
    unsigned char mac[32];
    int plen = verp_prefix_ok(prefix);

    if (key == NULL || addr == NULL || plen < 0) return -1;
    size_t len = strnlen(addr, VERP_ADDR_INPUT_MAX + 1);
    if (len > VERP_ADDR_INPUT_MAX) return -1;
    const char *s = addr;
    if (len >= 2 && s[0] == '<' && s[len - 1] == '>') {
        s++;
        len -= 2;
    }
    const char *at = memchr(s, '@', len);
    size_t llen = at != NULL ? (size_t)(at - s) : len;
    if (at != NULL && llen + 1 == len) return -1; /* "local@" with no domain */
    if (llen != (size_t)plen + 1 + VERP_TOKEN_LEN || !verp_prefix_match(s, prefix, (size_t)plen) ||
        s[plen] != '+')
        return -1;
    if (verp_b32_decode(s + plen + 1, VERP_TOKEN_LEN, raw, sizeof raw) < 0 ||
        raw[0] != VERP_VERSION)
        return -1;
    if (verp_mac(key, label, raw, VERP_BODY_LEN, mac) < 0 ||
        CRYPTO_memcmp(mac, raw + VERP_BODY_LEN, VERP_MAC_LEN) != 0)
        return -1;
    if (msgid != NULL) *msgid = get_be64(raw + 1);
    if (idx != NULL) *idx = get_be32(raw + 9);
    return 0;
}

int verp_encode(const struct verp_key *key, const char *prefix, uint64_t msgid, uint32_t idx,
                char *out, size_t n)
{
    return verp_short_encode(key, VERP_LABEL_RETURN, prefix, msgid, idx, out, n);
}

int verp_decode(const struct verp_key *key, const char *prefix, const char *addr, uint64_t *msgid,
                uint32_t *idx)
{
    return verp_short_decode(key, VERP_LABEL_RETURN, prefix, addr, msgid, idx);
}

int verp_unsub_mail_encode(const struct verp_key *key, const char *prefix, uint64_t msgid,
                           uint32_t idx, char *out, size_t n)
{
    return verp_short_encode(key, VERP_LABEL_MAIL, prefix, msgid, idx, out, n);
}

int verp_unsub_mail_decode(const struct verp_key *key, const char *prefix, const char *addr,
                           uint64_t *msgid, uint32_t *idx)
{
    return verp_short_decode(key, VERP_LABEL_MAIL, prefix, addr, msgid, idx);
}

/* verp_field_ok - n bytes, 1..max, none a control character (C0, DEL) or NUL */
static bool verp_field_ok(const uint8_t *p, size_t n, size_t max)
{
    if (n == 0 || n > max) return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f) return false;
    return true;
}

int verp_unsub_url_token(const struct verp_key *key, const char *list, const char *addr,
                         uint64_t msgid, char *out, size_t n)
{
    uint8_t raw[VERP_URL_RAW_MAX];
    unsigned char mac[32];

    if (key == NULL || list == NULL || addr == NULL || out == NULL) return -1;
    size_t ll = strnlen(list, VERP_LIST_MAX + 1);
    size_t al = strnlen(addr, VERP_ADDR_MAX + 1);
    if (!verp_field_ok((const uint8_t *)list, ll, VERP_LIST_MAX) ||
        !verp_field_ok((const uint8_t *)addr, al, VERP_ADDR_MAX))
        return -1;
    size_t o = 0;
    raw[o++] = VERP_VERSION;
    put_be64(raw + o, msgid);
    o += 8;
    raw[o++] = (uint8_t)ll;
    memcpy(raw + o, list, ll);
    o += ll;
    raw[o++] = (uint8_t)al;
    memcpy(raw + o, addr, al);
    o += al;
    if (verp_mac(key, VERP_LABEL_URL, raw, o, mac) < 0) return -1;
    memcpy(raw + o, mac, VERP_URL_MAC_LEN);
    o += VERP_URL_MAC_LEN;
    return verp_b64url_encode(raw, o, out, n);
}

int verp_unsub_url_parse(const struct verp_key *key, const char *token, char *list, size_t listn,
                         char *addr, size_t addrn, uint64_t *msgid)
{
    uint8_t raw[VERP_URL_RAW_MAX];
    unsigned char mac[32];
    size_t rl = 0;

    if (list != NULL && listn > 0) list[0] = '\0';
    if (addr != NULL && addrn > 0) addr[0] = '\0';
    if (key == NULL || token == NULL || list == NULL || addr == NULL) return -1;
    size_t tl = strnlen(token, VERP_URL_TOKEN_MAX + 1);
    if (verp_b64url_decode(token, tl, raw, &rl) < 0 || rl < VERP_URL_MIN) return -1;
    /* authenticate before reading any field */
    size_t bl = rl - VERP_URL_MAC_LEN;
    if (verp_mac(key, VERP_LABEL_URL, raw, bl, mac) < 0 ||
        CRYPTO_memcmp(mac, raw + bl, VERP_URL_MAC_LEN) != 0)
        return -1;
    /* the MAC says we wrote it; the layout is still checked to the byte */
    if (raw[0] != VERP_VERSION) return -1;
    size_t o = 9;
    size_t ll = raw[o++];
    if (ll > bl - o || !verp_field_ok(raw + o, ll, VERP_LIST_MAX)) return -1;
    const uint8_t *lp = raw + o;
    o += ll;
    if (o >= bl) return -1;
    size_t al = raw[o++];
    if (al != bl - o || !verp_field_ok(raw + o, al, VERP_ADDR_MAX)) return -1;
    const uint8_t *ap = raw + o;
    if (ll + 1 > listn || al + 1 > addrn) return -1;
    memcpy(list, lp, ll);
    list[ll] = '\0';
    memcpy(addr, ap, al);
    addr[al] = '\0';
    if (msgid != NULL) *msgid = get_be64(raw + 1);
    return 0;
}

int verp_find(const struct verp_key *key, const char *prefix, const char *const *addrs, size_t n,
              uint64_t *msgid, uint32_t *idx, bool *unsub)
{
    for (size_t i = 0; i < n; i++) {
        if (addrs[i] == NULL) continue;
        const char *a = addrs[i] + strspn(addrs[i], "< ");
        char buf[1024]; /* verp_decode takes addresses up to this long */
        str_copy(buf, sizeof buf, a);
        char *gt = strchr(buf, '>');
        if (gt) *gt = '\0';
        if (!*buf) continue;
        if (verp_decode(key, prefix, buf, msgid, idx) == 0) {
            *unsub = false;
            return 0;
        }
        if (verp_unsub_mail_decode(key, VERP_UNSUB_PREFIX, buf, msgid, idx) == 0) {
            *unsub = true;
            return 0;
        }
    }
    return -1;
}
