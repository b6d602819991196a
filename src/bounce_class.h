/*
 * bounce_class - the one classifier for every delivery failure: a remote SMTP reply
 * (code, enhanced status, text), a failure of the engine's own (code 0 with a
 * diagnostic text such as "connect with mx.example.net[192.0.2.1]"), or a bounce
 * parsed from a DSN.  Each failure gets a category from the industry set below and
 * a hard/soft flag.
 *
 * "hard" means the ADDRESS is bad and should be suppressed: bad-mailbox,
 * inactive-mailbox or bad-domain on a permanent reply (a 5xx code, or no code and
 * a 5.x.x status).  Everything else is soft, including permanent spam and policy
 * blocks and full mailboxes: those are no reason to stop mailing an address.  A
 * rule of the rules file may set hard explicitly.
 *
 * Order: the rules file's rules in file order (first match wins); then the
 * built-in defaults: the engine's own failure texts, codes 521/556 (RFC 7504),
 * the enhanced status table (RFC 3463, RFC 5248 registry), a few specific reply
 * codes, and finally BOUNCE_CAT_OTHER.  The format of the rules file is documented at the top of
 * conf/bounce-rules.conf.
 *
 * Pure functions: no clock, no I/O but the load, no global state.  A loaded rule
 * set is immutable and may be shared by any number of threads; the daemon loads a
 * new one on SIGHUP and swaps it in.  Library-style (STYLE.md): out of memory is
 * an error return, never an abort.
 */
#ifndef VOLLEY_BOUNCE_CLASS_H
#define VOLLEY_BOUNCE_CLASS_H

#include <stdbool.h>
#include <stddef.h>

#define BOUNCE_RULE_NAME_MAX 64   /* a rule name and NUL; also bounce_verdict.rule */
#define BOUNCE_TEXT_MAX      8192 /* only this much of a text is looked at */

/* the categories, in this order (the values are stable: logs and reports may
 * store them, and bounce_cat_str() is the external name) */
enum BOUNCE_CAT {
    BOUNCE_CAT_BAD_MAILBOX,         /* "bad-mailbox": the mailbox does not exist */
    BOUNCE_CAT_INACTIVE_MAILBOX,    /* "inactive-mailbox": disabled, expired, dormant */
    BOUNCE_CAT_BAD_DOMAIN,          /* "bad-domain": no such domain, null MX, no MX host */
    BOUNCE_CAT_QUOTA_ISSUES,        /* "quota-issues": mailbox or system full, over rate */
    BOUNCE_CAT_SPAM_RELATED,        /* "spam-related": blocklists, reputation, spam filters */
    BOUNCE_CAT_POLICY_RELATED,      /* "policy-related": authentication, local policy */
    BOUNCE_CAT_CONTENT_RELATED,     /* "content-related": size, format, URLs, attachments */
    BOUNCE_CAT_VIRUS_RELATED,       /* "virus-related": malware found */
    BOUNCE_CAT_INVALID_SENDER,      /* "invalid-sender": the envelope sender was refused */
    BOUNCE_CAT_RELAYING_ISSUES,     /* "relaying-issues": relay access denied */
    BOUNCE_CAT_ROUTING_ERRORS,      /* "routing-errors": DNS failures, loops, unroutable */
    BOUNCE_CAT_NO_ANSWER_FROM_HOST, /* "no-answer-from-host": connect failed, timeouts */
    BOUNCE_CAT_BAD_CONNECTION,      /* "bad-connection": dropped, TLS failed, 421 */
    BOUNCE_CAT_MESSAGE_EXPIRED,     /* "message-expired": too long in the queue */
    BOUNCE_CAT_PROTOCOL_ERRORS,     /* "protocol-errors": syntax errors, bad sequence */
    BOUNCE_CAT_BAD_CONFIGURATION,   /* "bad-configuration": our side (AUTH, HELO name) */
    BOUNCE_CAT_OTHER,               /* "other": nothing more specific is known */
};
#define BOUNCE_CAT_COUNT 17

/* bounce_cat_str - the external name ("bad-mailbox", ...); "?" when out of range */
const char *bounce_cat_str(enum BOUNCE_CAT c);
/* bounce_cat_parse - an external name (exact, lower case) to its enum: 0 / -1 */
int bounce_cat_parse(const char *s, enum BOUNCE_CAT *out);

/* bounce_reply_permanent - a 5xx code, or code 0 and an enhanced status of class 5
 * (a non-zero code decides over a contradicting status) */
bool bounce_reply_permanent(int code, const char *enh);

/* a loaded, immutable rule set: safe to share across threads */
struct bounce_class;

/*
 * bounce_class_load - read a rules file (libconfig syntax; format in
 * conf/bounce-rules.conf).  NULL with a "file:line: key: what" message in err
 * when it cannot be read or is invalid (unknown key or category, wrong type, bad
 * regular expression, duplicate name, too many rules, out of memory).  path NULL
 * or "" gives the built-in defaults only.  The caller frees the result with
 * bounce_class_free().
 */
struct bounce_class *bounce_class_load(const char *path, char *err, size_t errlen);
/* bounce_class_free - release a rule set (NULL is fine) */
void bounce_class_free(struct bounce_class *c);
/* bounce_class_nrules - rules read from the file (0 for NULL or the defaults) */
int bounce_class_nrules(const struct bounce_class *c);

struct bounce_verdict {
    enum BOUNCE_CAT cat;
    bool hard;
    char rule[BOUNCE_RULE_NAME_MAX]; /* the rule name that decided, or for the built-in
                                        defaults "local:KIND", "status:5.1.1",
                                        "code:550" or "default" */
};

/*
 * bounce_classify - classify one failure into *out.  code: the SMTP reply code (0
 * for the engine's own failures and DSNs without one); enh: the enhanced status
 * ("" or NULL if none); text: the reply text or local diagnostic (NULL = ""; only
 * the first BOUNCE_TEXT_MAX bytes are looked at).  c NULL means the built-in
 * defaults only.  Never fails and allocates nothing of its own (a regexec that
 * runs out of memory counts as no match).
 */
void bounce_classify(const struct bounce_class *c, int code, const char *enh, const char *text,
                     struct bounce_verdict *out);

#endif
