/*
 * verp - signed tokens that bring feedback home: VERP return paths for bounces and
 * unsubscribe tokens for RFC 8058 one-click URLs and mailto addresses.
 *
 * Pure code: no I/O, no clock, no global state; OpenSSL supplies SHA-256, HMAC and
 * base64.  Every token is authenticated with HMAC-SHA256 under a subkey derived
 * for its kind, so a token of one kind never verifies as another, and a decoder
 * only ever returns values that this code signed.
 *
 * Keys.  verp_key_derive() turns the configured secret (>= 16 bytes) into the
 * master key  K = SHA-256("volley-verp-key-v1" 0x00 | secret).  Each kind uses
 * its own subkey  K_label = HMAC-SHA256(K, "volley-verp-subkey-v1" 0x00 | label),
 * and its MAC is  HMAC-SHA256(K_label, label | body), truncated.  Labels: "verp",
 * "unsub", "unsub-mail".
 *
 * Token layouts (all integers big-endian, version byte VERP_VERSION = 1):
 *
 *   VERP return path, local part "<prefix>+<token>":
 *     body  = version(1) | msgid(8) | idx(4)                        13 bytes
 *     token = base32(body | MAC_verp(body)[0..10))                  23 bytes -> 37 chars
 *
 *   Unsubscribe mailto, local part "<prefix>+<token>" (e.g. "unsub+..."):
 *     same layout, MAC under "unsub-mail"                           23 bytes -> 37 chars
 *     The daemon finds list and address from msgid + recipient index.
 *
 *   Unsubscribe URL, path segment of https://host/unsubscribe/<token>:
 *     body  = version(1) | msgid(8) | list_len(1) | list | addr_len(1) | addr
 *     token = base64url(body | MAC_unsub(body)[0..16))
 *     list 1..64 bytes, addr 1..254 bytes, neither holding a control character
 *     (C0 or DEL); at most 345 bytes -> 460 characters.
 *
 * base32 is RFC 4648 with the lower-case alphabet and no padding, because some
 * MTAs lower-case local parts; decoders accept either case.  base64url is RFC 4648
 * section 5 without padding.  Both decoders are strict: a character outside the
 * alphabet, a length that cannot occur, or non-zero spare bits in the last
 * character rejects the token, so every token has exactly one spelling (up to
 * base32 case) and no single-character change can survive.
 *
 * The prefix is a routing label and is not covered by the MAC: a token moved under
 * another prefix decodes to the same (msgid, idx) and to nothing else, and each
 * decoder still requires the caller's prefix.
 *
 * Local parts stay within RFC 5321's 64 octets: a prefix is 1..24 characters of
 * [a-z0-9._-], so "<prefix>+<37 chars>" is at most 62.
 *
 * MAC comparisons use CRYPTO_memcmp.  Every function returns 0 or -1; on -1 the
 * output arguments are unspecified (strings are left empty where possible).
 */
#ifndef VOLLEY_VERP_H
#define VOLLEY_VERP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VERP_VERSION        1
#define VERP_SECRET_MIN     16 /* bytes of configured secret */
#define VERP_PREFIX_MAX     24 /* characters of [a-z0-9._-] */
#define VERP_TOKEN_LEN      37 /* base32 characters of a VERP or mailto token */
#define VERP_LOCAL_MAX      64 /* RFC 5321 4.5.3.1.1 */
#define VERP_LOCAL_SIZE     (VERP_LOCAL_MAX + 1)
#define VERP_LIST_MAX       64  /* bytes of a list name in a URL token */
#define VERP_ADDR_MAX       254 /* bytes of an address in a URL token */
#define VERP_URL_TOKEN_MAX  460 /* base64url characters of the longest URL token */
#define VERP_URL_TOKEN_SIZE (VERP_URL_TOKEN_MAX + 1)

/* The master key.  Derive it with verp_key_derive(); wipe it with OPENSSL_cleanse
 * when done.  Plain data: copy freely. */
struct verp_key {
    unsigned char k[32];
};

/* verp_key_derive - the master key from the configured secret (a C string of at
 * least VERP_SECRET_MIN bytes); -1 if secret is NULL or too short */
int verp_key_derive(struct verp_key *key, const char *secret);

/* verp_encode - the VERP local part "<prefix>+<token>" (NUL-terminated) into out;
 * n >= VERP_LOCAL_SIZE always suffices.  -1 on a bad prefix or a short buffer. */
int verp_encode(const struct verp_key *key, const char *prefix, uint64_t msgid, uint32_t idx,
                char *out, size_t n);

/* verp_decode - check a VERP local part or full address ("prefix+token@domain",
 * any case, optionally in angle brackets; the domain is not checked).  0 with
 * *msgid and *idx when the prefix matches and the MAC verifies; -1 for anything
 * else (forged, altered, truncated, wrong prefix, another kind of token). */
int verp_decode(const struct verp_key *key, const char *prefix, const char *addr, uint64_t *msgid,
                uint32_t *idx);

/* verp_unsub_url_token - the base64url one-click token for (list, addr, msgid)
 * into out; n >= VERP_URL_TOKEN_SIZE always suffices.  -1 when list or addr is
 * empty, too long or holds a control character, or out is too small. */
int verp_unsub_url_token(const struct verp_key *key, const char *list, const char *addr,
                         uint64_t msgid, char *out, size_t n);

/* verp_unsub_url_parse - verify a one-click token (the bare token, no URL around
 * it) and copy out its list (listn >= VERP_LIST_MAX + 1 always suffices), address
 * (addrn >= VERP_ADDR_MAX + 1) and msgid.  -1 if the token is malformed, forged or
 * altered, or a buffer is too small. */
int verp_unsub_url_parse(const struct verp_key *key, const char *token, char *list, size_t listn,
                         char *addr, size_t addrn, uint64_t *msgid);

/* verp_unsub_mail_encode - the mailto local part "<prefix>+<token>" for recipient
 * idx of msgid; as verp_encode, under the "unsub-mail" subkey */
int verp_unsub_mail_encode(const struct verp_key *key, const char *prefix, uint64_t msgid,
                           uint32_t idx, char *out, size_t n);

/* verp_unsub_mail_decode - as verp_decode, for mailto unsubscribe addresses */
int verp_unsub_mail_decode(const struct verp_key *key, const char *prefix, const char *addr,
                           uint64_t *msgid, uint32_t *idx);

/* the local-part prefix of the mailto unsubscribe addresses volleyd writes */
#define VERP_UNSUB_PREFIX "unsubscribe"

/*
 * verp_find - the first of addrs[0..n) (bare or in angle brackets; NULL and empty
 * ones skipped) that carries a verifying VERP token under prefix, or a mailto
 * unsubscribe token under VERP_UNSUB_PREFIX: 0 with *msgid, *idx and *unsub, or -1
 */
int verp_find(const struct verp_key *key, const char *prefix, const char *const *addrs, size_t n,
              uint64_t *msgid, uint32_t *idx, bool *unsub);

#endif
