/*
 * suppress - suppression entries: who must not be mailed, for whom, why and until
 * when.  Pure encoding and matching rules; the entries live in the spool's supp
 * database (spool_supp.c applies and reads them), so a suppression commits in the
 * same transaction as the purge of the queued recipients it matches.
 *
 * An entry is (scope, target) -> record:
 *   scope   ""                 every sender (global)
 *           "domain:SENDERDOM" mail whose envelope sender is at SENDERDOM
 *           "list:NAME"        mail injected with X-Volley-List: NAME
 *   target  "user@example.com" one address (normalised: trimmed, lower case)
 *           "@example.com"     every address at a domain
 *           "#<64 hex>"        SHA-256 of a normalised address: what `forget`
 *                              keeps, so the address itself is no longer stored
 *
 * Lower-casing the local part is what every mailbox provider does in practice; it
 * means "User@X" and "user@x" are one entry (a suppression must never miss).
 *
 * Key bytes: scope NUL target (so one scope's entries are one key range).
 * Record: version(1) reason(1) source_len(2, LE) created_ms(8) expires_ms(8) source.
 */
#ifndef VOLLEY_SUPPRESS_H
#define VOLLEY_SUPPRESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SUPPRESS_ADDR_MAX   320  /* normalised address or @domain, NUL included */
#define SUPPRESS_SCOPE_MAX  200
#define SUPPRESS_KEY_MAX    (SUPPRESS_SCOPE_MAX + SUPPRESS_ADDR_MAX + 1)
#define SUPPRESS_SOURCE_MAX 300
#define SUPPRESS_REC_MAX    (20 + SUPPRESS_SOURCE_MAX)
#define SUPPRESS_HASH_LEN   65   /* "#" + 64 hex */

enum SUPPRESS_REASON {
    SUPPRESS_HARD_BOUNCE,
    SUPPRESS_COMPLAINT,
    SUPPRESS_UNSUBSCRIBE,
    SUPPRESS_MANUAL,
    SUPPRESS_SOFT_BOUNCE, /* repeated soft bounces (feedback.soft_bounce_limit) */
    SUPPRESS_FORGOTTEN,   /* privacy erasure: only the hash is kept */
};
const char *suppress_reason_str(enum SUPPRESS_REASON r);
int suppress_reason_parse(const char *s, enum SUPPRESS_REASON *out);

struct suppress_rec {
    enum SUPPRESS_REASON reason;
    int64_t created_ms;
    int64_t expires_ms; /* 0 = never */
    char source[SUPPRESS_SOURCE_MAX]; /* what added it: "manual", "bounce 5.1.1 ...", ... */
};

/*
 * suppress_normalize - an address ("local@domain") or a domain entry ("@domain")
 * trimmed and lower-cased into out; -1 when it is neither (no '@', empty side,
 * spaces or control characters inside, too long).
 */
int suppress_normalize(const char *in, char *out, size_t n);
/* suppress_scope_valid - "", "domain:D" or "list:NAME" (printable, no spaces) */
bool suppress_scope_valid(const char *scope);
/* suppress_hash_target - "#" + SHA-256 hex of a normalised address into out */
void suppress_hash_target(const char *norm_addr, char out[SUPPRESS_HASH_LEN + 1]);

/* suppress_key - scope NUL target into buf; the key length, 0 if it does not fit */
size_t suppress_key(uint8_t *buf, size_t n, const char *scope, const char *target);
/* suppress_key_split - the reverse; -1 when key is not one */
int suppress_key_split(const uint8_t *key, size_t len, char *scope, size_t scopen, char *target,
                       size_t targetn);

/* suppress_rec_encode - the record's bytes into buf (size >= SUPPRESS_REC_MAX) */
size_t suppress_rec_encode(const struct suppress_rec *r, uint8_t *buf, size_t n);
/* suppress_rec_decode - -1 when p is not a record */
int suppress_rec_decode(const uint8_t *p, size_t n, struct suppress_rec *out);

/*
 * suppress_acct_record - the fields of the "suppressed" accounting record (a
 * recipient not sent because it is suppressed), one builder for every place that
 * writes one: stage "injection" (dropped when injected) or "queue" (purged); the
 * domain comes from the recipient.  A new jansson object.
 */
json_t *suppress_acct_record(const char *msgid, const char *campaign, const char *list,
                             const char *sender, const char *recipient, const char *stage,
                             const char *diag);

#endif
