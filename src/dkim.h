/*
 * dkim - DKIM signing (RFC 6376) with rsa-sha256 and ed25519-sha256 (RFC 8463).
 *
 * A struct dkim_key is loaded once (PEM private key, signing domain, selector) and
 * is then immutable: any number of threads may sign with the same key at once.
 * dkim_sign() appends one complete DKIM-Signature header field for a message to a
 * caller's vbuf; it reads no clock (t= comes from the caller) and no global state,
 * so the same key, parameters and message always give the same bytes for Ed25519
 * (RSA PKCS#1 v1.5 is deterministic too).
 *
 * Library-style: every failure is returned (0 / -1, or NULL) with a reason in the
 * caller's err buffer; nothing aborts, nothing logs.
 */
#ifndef VOLLEY_DKIM_H
#define VOLLEY_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum DKIM_ALG { DKIM_RSA_SHA256, DKIM_ED25519_SHA256 };

/* RELAXED is 0 so that a zeroed struct dkim_params means relaxed/relaxed. */
enum DKIM_CANON { DKIM_CANON_RELAXED = 0, DKIM_CANON_SIMPLE = 1 };

/* dkim_alg_str - "rsa-sha256" / "ed25519-sha256" (the a= value) */
const char *dkim_alg_str(enum DKIM_ALG a);
/* dkim_canon_str - "relaxed" / "simple" */
const char *dkim_canon_str(enum DKIM_CANON c);

#define DKIM_RSA_MIN_BITS 1024
#define DKIM_RSA_MAX_BITS 4096
#define DKIM_KEY_FILE_MAX (64 * 1024) /* a PEM key file larger than this is refused */
#define DKIM_MAX_FIELDS   4096        /* header fields in one signed message */
#define DKIM_SIG_MAX      (32 * 1024) /* octets of one DKIM-Signature field */
#define DKIM_DNS_RECORD_MAX 1024      /* "v=DKIM1; k=rsa; p=" + a 4096-bit SPKI */

/* a private key with its signing domain and selector; immutable once loaded, safe
 * to share across threads */
struct dkim_key;

/*
 * dkim_key_load - the PEM private key at path (RSA 1024..4096 bits or Ed25519;
 * PKCS#8 or traditional; never encrypted) for domain/selector.  NULL with err
 * naming the file and the reason (missing, unreadable, not a key, wrong type, RSA
 * size out of range) or the bad domain/selector.  The caller frees with
 * dkim_key_free().
 */
struct dkim_key *dkim_key_load(const char *path, const char *domain, const char *selector,
                               char *err, size_t errn);
/* dkim_key_free - release k (NULL is fine) */
void dkim_key_free(struct dkim_key *k);
/* dkim_key_alg - the signing algorithm the key implies */
enum DKIM_ALG dkim_key_alg(const struct dkim_key *k);
/* dkim_key_domain - d= (owned by k) */
const char *dkim_key_domain(const struct dkim_key *k);
/* dkim_key_selector - s= (owned by k) */
const char *dkim_key_selector(const struct dkim_key *k);
/* dkim_key_label - "domain/selector", as records name a signature (owned by k) */
const char *dkim_key_label(const struct dkim_key *k);
/* dkim_key_bits - RSA modulus size, 256 for Ed25519 */
int dkim_key_bits(const struct dkim_key *k);

/*
 * dkim_key_dns_record - the TXT record to publish at <selector>._domainkey.<domain>:
 * "v=DKIM1; k=rsa|ed25519; p=<base64>" (RSA: SubjectPublicKeyInfo DER; Ed25519:
 * the raw 32-byte key, RFC 8463 4.2), NUL-terminated in out[n].  A 4096-bit RSA
 * record needs about 760 octets (DKIM_DNS_RECORD_MAX always suffices); publishing
 * splits it into 255-octet strings.  -1 if n is too small.
 */
int dkim_key_dns_record(const struct dkim_key *k, char *out, size_t n);

/*
 * dkim_key_matches_record - does a published TXT record (tags in any order, any
 * whitespace, character-strings already joined) carry this key's public key?
 * 1 yes; 0 no, with why (other key, other k=, revoked p=, h= without sha256, s=
 * without email); -1 malformed record, with why.
 */
int dkim_key_matches_record(const struct dkim_key *k, const char *txt, char *why, size_t whyn);

/* flags of struct dkim_params; the defaults are what Volley sends */
#define DKIM_SIGN_H_VERBATIM 0x1 /* headers[] is the h= list as is (no counting, no
                                    oversigning) - for published vectors */
#define DKIM_SIGN_H_SPACED   0x2 /* h= entries joined by " : " as in the RFC examples */
#define DKIM_SIGN_Q_TAG      0x4 /* emit q=dns/txt (the default, normally left out) */

/*
 * The bh= digest of one body, for the next signature of the same body (another
 * key, or another recipient's copy that differs only in header fields): the body
 * pass is skipped when the canonicalization and the body length match.  The
 * caller promises an entry only ever meets bodies of the same octets, e.g. by
 * keeping one per stored message and not using it for a converted copy.
 */
struct dkim_body_cache {
    bool valid;
    enum DKIM_CANON bcanon;
    size_t body_len;
    uint8_t digest[32];
};

/*
 * A memo of recent bodies' digests across messages: a campaign that sends one body
 * to many recipients, each in a message of its own, would otherwise canonicalize
 * and hash the same octets once per message.  Each entry keeps a copy of the raw
 * body, so a hit is an exact comparison (a memcmp is ~20 times cheaper than the
 * body pass), not trust in a checksum; a body that differs costs a failed compare
 * against same-length entries and a copy.  Not locked: one per thread.
 */
struct dkim_body_memo;

/* dkim_body_memo_new - room for entries bodies of up to max_body octets each (larger
 * bodies are not kept); NULL when out of memory */
struct dkim_body_memo *dkim_body_memo_new(size_t entries, size_t max_body);
/* dkim_body_memo_hits - signatures whose body hash came from m */
uint64_t dkim_body_memo_hits(const struct dkim_body_memo *m);
/* dkim_body_memo_free - NULL is fine */
void dkim_body_memo_free(struct dkim_body_memo *m);

/*
 * The names to sign, checked and with repeats dropped once (when the configuration
 * loads) rather than at every signature; what is left per signature is counting
 * each name's fields in the message.
 */
struct dkim_hlist;

/* dkim_hlist_new - names (NULL-terminated; NULL = the default list) made ready for
 * dkim_params.hlist; NULL with err on a bad name, too many names, or no memory */
struct dkim_hlist *dkim_hlist_new(const char *const *names, char *err, size_t errn);
/* dkim_hlist_free - NULL is fine */
void dkim_hlist_free(struct dkim_hlist *l);

struct dkim_params {
    enum DKIM_CANON hcanon, bcanon; /* default (zero) relaxed/relaxed */
    const char *const *headers;     /* NULL-terminated names to sign, NULL = the
                                       default list (dkim_default_headers) */
    const struct dkim_hlist *hlist; /* prepared names: used instead of headers
                                       (not with DKIM_SIGN_H_VERBATIM) */
    int64_t timestamp;              /* t= (seconds), 0 = omit */
    int64_t expire;                 /* x= is t + expire (needs t=), 0 = omit */
    const char *auid;               /* i= (e.g. "@example.com"), NULL = omit */
    unsigned flags;                 /* DKIM_SIGN_* */
    struct dkim_body_cache *bh;     /* used and filled when not NULL */
    struct dkim_body_memo *memo;    /* consulted (after bh) and filled when not NULL */
};

/* dkim_default_headers - the NULL-terminated default list of header names */
const char *const *dkim_default_headers(void);
/* dkim_header_name_ok - name can be a dkim_params.headers entry (RFC 5322 field
 * name octets, 1..128 of them) */
bool dkim_header_name_ok(const char *name);

/*
 * dkim_sign - append the complete DKIM-Signature header field (name, value folded
 * at <= 78 columns where possible, CRLF-terminated) for msg[0..len) to out.  msg
 * is CRLF lines: header section, empty line, body - exactly the bytes that will be
 * sent, not dot-stuffed.  p NULL means all defaults.  Each listed name is signed as
 * many times as it occurs, From once more (so no From can be added later); l= is
 * never used.  On failure out is left as it was and err says why (no From header,
 * malformed header section, too many fields, out's limit).
 */
int dkim_sign(const struct dkim_key *k, const struct dkim_params *p, const uint8_t *msg,
              size_t len, struct vbuf *out, char *err, size_t errn);

/*
 * Canonicalization, exposed for tests and diagnostics; dkim_sign() runs the same
 * code straight into the hash.
 */
/* dkim_canon_header - append the canonical form of one header field (name, colon,
 * value, folds; with or without its final CRLF) to out, always CRLF-terminated */
int dkim_canon_header(enum DKIM_CANON c, const uint8_t *field, size_t len, struct vbuf *out);
/* dkim_canon_body - append the canonical form of the body to out */
int dkim_canon_body(enum DKIM_CANON c, const uint8_t *body, size_t len, struct vbuf *out);
/* dkim_body_hash - base64 SHA-256 of the canonical body (the bh= value) into out[n]
 * (n >= 45) */
int dkim_body_hash(enum DKIM_CANON c, const uint8_t *body, size_t len, char *out, size_t n);

#endif
