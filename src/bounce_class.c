/*
 * bounce_class - the delivery failure classifier (see bounce_class.h): the rules
 * file, the built-in defaults, and bounce_classify().
 *
 * Entry points: bounce_class_load() reads a conf/bounce-rules.conf-style file into
 * an immutable struct bounce_class; bounce_classify() gives one failure its
 * category and hard/soft flag; bounce_cat_str()/bounce_cat_parse() name the
 * categories.
 *
 * Invariants: a loaded rule set is never modified, so threads share it freely
 * (regexec on a const regex_t).  The classify path allocates nothing of its own
 * and never fails: a regexec that runs out of memory counts as "no match" and
 * classification goes on down the list.  Loading is bounded (BOUNCE_CLASS_MAX_RULES
 * rules, BOUNCE_CLASS_REGEX_MAX bytes of pattern each) and allocates with plain
 * calloc, so out of memory is a refused load, not an abort.  Any unknown key,
 * category or malformed value refuses the whole file with "file:line: key:
 * reason": a misspelt category silently falling back to "other" is how a whole
 * provider's bad mailboxes stop being suppressed.
 *
 * Why the built-in defaults know the engine's own failure texts: those texts
 * (sched_queue.c, dns.c) carry a generic status -- every session failure is 4.4.2,
 * a site that is down 4.4.1 -- so the status table alone would call a connect
 * timeout "bad-connection" and an expired message's last reply whatever it was.
 * The shipped rules file repeats these as its first rules, so that they also come
 * before its text patterns (a host name or an embedded last reply may contain
 * "spam" or "relay"), and an operator can see and change them.
 */
#include "bounce_class.h"
#include "cfgfile.h"
#include "util.h"

#include <assert.h>
#include <libconfig.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BOUNCE_CLASS_MAX_RULES 1024 /* rules in one file */
#define BOUNCE_CLASS_REGEX_MAX 1024 /* a rule's text pattern, with NUL */
#define BOUNCE_CLASS_ENH_MAX   16   /* "5.123.123" and NUL, with room */

/* ---- private types ------------------------------------------------------------------ */

/* how a rule's code condition matches */
enum BOUNCE_CLASS_CODE {
    BOUNCE_CLASS_CODE_ANY,   /* no code condition */
    BOUNCE_CLASS_CODE_EXACT, /* code == value (0 = the engine's own failures) */
    BOUNCE_CLASS_CODE_CLASS, /* "4xx"/"5xx": the reply's class, see bounce_class_reply_class */
};

/*
 * A parsed enhanced status.  In a reply all three parts are set; in a rule's
 * condition cls may be BOUNCE_CLASS_ANY ("X.7.1") and subject/detail
 * BOUNCE_CLASS_ANY for a prefix ("5.7", "5").  Matching by parts, not by string
 * prefix, keeps "5.7.1" from matching "5.7.10".
 */
#define BOUNCE_CLASS_ANY (-1)
struct bounce_class_enh {
    int cls;
    int subject;
    int detail;
};

struct bounce_class_rule {
    char name[BOUNCE_RULE_NAME_MAX];
    enum BOUNCE_CAT cat;
    int hard; /* -1: the default (address categories on a permanent reply), 0, 1 */
    enum BOUNCE_CLASS_CODE code_kind;
    int code; /* EXACT: the code; CLASS: the class digit */
    bool has_enh;
    struct bounce_class_enh enh;
    bool has_re;
    regex_t re; /* extended, case-insensitive, no sub-matches */
};

struct bounce_class {
    struct bounce_class_rule *rules;
    int nrules; /* rules[0..nrules) are fully built (own their regex) */
};

/* ---- categories --------------------------------------------------------------------- */

static const char *const bounce_cat_names[BOUNCE_CAT_COUNT] = {
    [BOUNCE_CAT_BAD_MAILBOX] = "bad-mailbox",
    [BOUNCE_CAT_INACTIVE_MAILBOX] = "inactive-mailbox",
    [BOUNCE_CAT_BAD_DOMAIN] = "bad-domain",
    [BOUNCE_CAT_QUOTA_ISSUES] = "quota-issues",
    [BOUNCE_CAT_SPAM_RELATED] = "spam-related",
    [BOUNCE_CAT_POLICY_RELATED] = "policy-related",
    [BOUNCE_CAT_CONTENT_RELATED] = "content-related",
    [BOUNCE_CAT_VIRUS_RELATED] = "virus-related",
    [BOUNCE_CAT_INVALID_SENDER] = "invalid-sender",
    [BOUNCE_CAT_RELAYING_ISSUES] = "relaying-issues",
    [BOUNCE_CAT_ROUTING_ERRORS] = "routing-errors",
    [BOUNCE_CAT_NO_ANSWER_FROM_HOST] = "no-answer-from-host",
    [BOUNCE_CAT_BAD_CONNECTION] = "bad-connection",
    [BOUNCE_CAT_MESSAGE_EXPIRED] = "message-expired",
    [BOUNCE_CAT_PROTOCOL_ERRORS] = "protocol-errors",
    [BOUNCE_CAT_BAD_CONFIGURATION] = "bad-configuration",
    [BOUNCE_CAT_OTHER] = "other",
};

/* bounce_cat_str - external name of a category */
const char *bounce_cat_str(enum BOUNCE_CAT c)
{
    if ((unsigned)c >= BOUNCE_CAT_COUNT) return "?";
    return bounce_cat_names[c];
}

/* bounce_cat_parse - exact match only: a rules file that says "Bad-Mailbox" is a
 * typo worth refusing rather than guessing at */
int bounce_cat_parse(const char *s, enum BOUNCE_CAT *out)
{
    if (s == NULL) return -1;
    for (int i = 0; i < BOUNCE_CAT_COUNT; i++) {
        if (strcmp(s, bounce_cat_names[i]) == 0) {
            if (out) *out = (enum BOUNCE_CAT)i;
            return 0;
        }
    }
    return -1;
}

/* bounce_class_address_cat - the categories that say the address itself is bad */
static bool bounce_class_address_cat(enum BOUNCE_CAT c)
{
    return c == BOUNCE_CAT_BAD_MAILBOX || c == BOUNCE_CAT_INACTIVE_MAILBOX ||
           c == BOUNCE_CAT_BAD_DOMAIN;
}

/* ---- enhanced status codes ---------------------------------------------------------- */

/* bounce_class_num - 1..3 digits at *pp into *v, advancing *pp; -1 if none or more */
static int bounce_class_num(const char **pp, int *v)
{
    const char *p = *pp;
    int n = 0, digits = 0;
    while (*p >= '0' && *p <= '9') {
        if (++digits > 3) return -1;
        n = n * 10 + (*p - '0');
        p++;
    }
    if (digits == 0) return -1;
    *v = n;
    *pp = p;
    return 0;
}

/*
 * bounce_class_enh_parse - "C", "C.S" or "C.S.D" into e (missing parts ANY).  C is
 * 2, 4 or 5, or x/X for any class when allow_any (rule conditions); S and D are
 * 1..3 digits.  full requires all three parts (a reply's status).
 */
static int bounce_class_enh_parse(const char *s, bool allow_any, bool full,
                                  struct bounce_class_enh *e)
{
    const char *p = s;
    e->cls = e->subject = e->detail = BOUNCE_CLASS_ANY;
    if (*p == '2' || *p == '4' || *p == '5')
        e->cls = *p - '0';
    else if (!(allow_any && (*p == 'x' || *p == 'X')))
        return -1;
    p++;
    if (*p == '.') {
        p++;
        if (bounce_class_num(&p, &e->subject) < 0) return -1;
        if (*p == '.') {
            p++;
            if (bounce_class_num(&p, &e->detail) < 0) return -1;
        }
    }
    if (*p != '\0') return -1;
    if (full && e->detail == BOUNCE_CLASS_ANY) return -1;
    return 0;
}

/* bounce_class_enh_match - does a reply's status (valid) fall under condition want */
static bool bounce_class_enh_match(const struct bounce_class_enh *want,
                                   const struct bounce_class_enh *got)
{
    if (want->cls != BOUNCE_CLASS_ANY && want->cls != got->cls) return false;
    if (want->subject != BOUNCE_CLASS_ANY && want->subject != got->subject) return false;
    if (want->detail != BOUNCE_CLASS_ANY && want->detail != got->detail) return false;
    return true;
}

/* bounce_class_reply_class - 4 or 5 (or 2): the code's class, or with no code the
 * status's class; 0 when neither says */
static int bounce_class_reply_class(int code, const struct bounce_class_enh *e, bool enh_ok)
{
    if (code >= 100 && code <= 599) return code / 100;
    if (code == 0 && enh_ok) return e->cls;
    return 0;
}

/* bounce_reply_permanent - the code decides when there is one, so that a "452
 * 5.2.2" still counts as a deferral the way the engine treats it */
bool bounce_reply_permanent(int code, const char *enh)
{
    struct bounce_class_enh e;
    bool ok = enh && bounce_class_enh_parse(enh, false, true, &e) == 0;
    return bounce_class_reply_class(code, &e, ok) == 5;
}

/* ---- the built-in defaults ---------------------------------------------------------- */

/* bounce_class_has_prefix - s starts with p, ignoring ASCII case */
static bool bounce_class_has_prefix(const char *s, const char *p)
{
    return strncasecmp(s, p, strlen(p)) == 0;
}

/* bounce_class_has - s contains any of the NULL-terminated words, ignoring case */
static bool bounce_class_has(const char *s, const char *const *words)
{
    for (; *words; words++)
        if (strcasestr(s, *words) != NULL) return true;
    return false;
}

/* the session failure kinds sched_queue.c writes as "<kind> with HOST[IP]..." */
static const struct {
    const char *kind;
    const char *rule;
    enum BOUNCE_CAT cat;
} bounce_class_fail_kinds[] = {
    /* refused or timed out: nobody took the connection */
    {"connect", "local:connect", BOUNCE_CAT_NO_ANSWER_FROM_HOST},
    {"timeout", "local:timeout", BOUNCE_CAT_NO_ANSWER_FROM_HOST}, /* a reply did not come */
    {"dropped", "local:dropped", BOUNCE_CAT_BAD_CONNECTION},
    {"tls", "local:tls", BOUNCE_CAT_BAD_CONNECTION},
    {"protocol", "local:protocol", BOUNCE_CAT_PROTOCOL_ERRORS},
    /* the banner, EHLO or STARTTLS was refused: almost always the receiver turning
     * this sender away, not a broken connection */
    {"reply", "local:reply", BOUNCE_CAT_POLICY_RELATED},
};

/* the resolver's failure texts (dns.c, sched_queue.c), any code: at the start of the
 * text (prefix) or anywhere in it */
static const struct {
    bool prefix;
    const char *s;
    enum BOUNCE_CAT cat;
} bounce_class_dns_texts[] = {
    {false, " does not exist (NXDOMAIN)", BOUNCE_CAT_BAD_DOMAIN},
    {true, "invalid domain name ", BOUNCE_CAT_BAD_DOMAIN},
    {false, " does not accept mail (null MX)", BOUNCE_CAT_BAD_DOMAIN},
    /* a domain with no MX and no address, or whose every MX host has no address,
     * cannot take mail: the same as no domain for the address's sake */
    {false, " has no MX record and no address", BOUNCE_CAT_BAD_DOMAIN},
    {true, "no MX host of ", BOUNCE_CAT_BAD_DOMAIN},
    {true, "no valid MX host name for ", BOUNCE_CAT_BAD_DOMAIN},
    {true, "recipient domain is not a valid IDN", BOUNCE_CAT_BAD_DOMAIN},
    /* SERVFAIL, timeouts, refused queries: the lookup failed, not the domain */
    {true, "MX lookup for ", BOUNCE_CAT_ROUTING_ERRORS},
    {true, "A lookup for ", BOUNCE_CAT_ROUTING_ERRORS},
    {true, "AAAA lookup for ", BOUNCE_CAT_ROUTING_ERRORS},
};

/*
 * bounce_class_dns_status - "DNS lookup of DOMAIN: STATUS" (dns_status_str after
 * the last ": "): nxdomain, nullmx and nohost mean the domain cannot take mail;
 * tempfail, servfail, timeout and anything else mean the lookup failed.
 */
static enum BOUNCE_CAT bounce_class_dns_status(const char *text)
{
    static const char *const gone[] = {"nxdomain", "nullmx", "nohost"};
    const char *colon = strrchr(text, ':');
    const char *st = colon ? colon + 1 : "";
    while (*st == ' ')
        st++;
    for (size_t i = 0; i < ARRAY_LEN(gone); i++)
        if (strncasecmp(st, gone[i], strlen(gone[i])) == 0) return BOUNCE_CAT_BAD_DOMAIN;
    return BOUNCE_CAT_ROUTING_ERRORS;
}

/*
 * bounce_class_local - the engine's own failure texts: expiry (any code), session
 * failures and shaping holds (code 0 only: a remote reply that happens to start
 * with "timeout" is the remote's to explain), and resolver failures.  True with
 * *cat and the rule name set when text is one of them.
 */
static bool bounce_class_local(int code, const char *text, enum BOUNCE_CAT *cat, const char **rule)
{
    if (bounce_class_has_prefix(text, "message expired after ")) {
        *cat = BOUNCE_CAT_MESSAGE_EXPIRED;
        *rule = "local:expired";
        return true;
    }
    if (code == 0) {
        for (size_t i = 0; i < ARRAY_LEN(bounce_class_fail_kinds); i++) {
            const char *k = bounce_class_fail_kinds[i].kind;
            size_t n = strlen(k);
            if (strncasecmp(text, k, n) != 0) continue;
            if (text[n] != '\0' && !bounce_class_has_prefix(text + n, " with ")) continue;
            *cat = bounce_class_fail_kinds[i].cat;
            *rule = bounce_class_fail_kinds[i].rule;
            return true;
        }
        if (bounce_class_has_prefix(text, "held: ")) {
            /* our own shaping (suspension, warm-up cap) keeps it back */
            *cat = BOUNCE_CAT_POLICY_RELATED;
            *rule = "local:held";
            return true;
        }
    }
    if (bounce_class_has_prefix(text, "DNS lookup of ")) {
        *cat = bounce_class_dns_status(text);
        *rule = "local:dns";
        return true;
    }
    for (size_t i = 0; i < ARRAY_LEN(bounce_class_dns_texts); i++) {
        const char *s = bounce_class_dns_texts[i].s;
        bool hit = bounce_class_dns_texts[i].prefix ? bounce_class_has_prefix(text, s)
                                                    : strcasestr(text, s) != NULL;
        if (hit) {
            *cat = bounce_class_dns_texts[i].cat;
            *rule = "local:dns";
            return true;
        }
    }
    return false;
}

/*
 * The enhanced status table: subject and detail (the class only decides hard or
 * soft).  RFC 3463 for X.1.x .. X.7.7, the IANA "SMTP Enhanced Status Codes"
 * registry (RFC 5248 and later) for the rest.  detail ANY is the subject's
 * default for details not listed.
 */
static const struct {
    int subject, detail;
    enum BOUNCE_CAT cat;
} bounce_class_status[] = {
    {0, BOUNCE_CLASS_ANY, BOUNCE_CAT_OTHER},
    /* X.1 addressing.  X.1.0 says something about *an* address, maybe the
     * sender's: not evidence enough to suppress anyone. */
    {1, 1, BOUNCE_CAT_BAD_MAILBOX},    /* bad destination mailbox address */
    {1, 2, BOUNCE_CAT_BAD_DOMAIN},     /* bad destination system address */
    {1, 3, BOUNCE_CAT_BAD_MAILBOX},    /* bad destination mailbox address syntax */
    {1, 6, BOUNCE_CAT_BAD_MAILBOX},    /* mailbox has moved, no forwarding address */
    {1, 7, BOUNCE_CAT_INVALID_SENDER}, /* bad sender's mailbox address syntax */
    {1, 8, BOUNCE_CAT_INVALID_SENDER}, /* bad sender's system address */
    {1, 10, BOUNCE_CAT_BAD_DOMAIN},    /* recipient address has null MX (RFC 7505) */
    {1, BOUNCE_CLASS_ANY, BOUNCE_CAT_OTHER},
    /* X.2 mailbox */
    {2, 1, BOUNCE_CAT_INACTIVE_MAILBOX}, /* mailbox disabled, not accepting messages */
    {2, 2, BOUNCE_CAT_QUOTA_ISSUES},     /* mailbox full */
    {2, 3, BOUNCE_CAT_CONTENT_RELATED},  /* message length exceeds administrative limit */
    {2, BOUNCE_CLASS_ANY, BOUNCE_CAT_OTHER},
    /* X.3 mail system */
    {3, 1, BOUNCE_CAT_QUOTA_ISSUES},        /* mail system full */
    {3, 2, BOUNCE_CAT_NO_ANSWER_FROM_HOST}, /* system not accepting network messages */
    {3, 3, BOUNCE_CAT_PROTOCOL_ERRORS},     /* system not capable of selected features */
    {3, 4, BOUNCE_CAT_CONTENT_RELATED},     /* message too big for system */
    {3, 5, BOUNCE_CAT_BAD_CONFIGURATION},   /* system incorrectly configured */
    {3, BOUNCE_CLASS_ANY, BOUNCE_CAT_OTHER},
    /* X.4 network and routing */
    {4, 1, BOUNCE_CAT_NO_ANSWER_FROM_HOST}, /* no answer from host */
    {4, 2, BOUNCE_CAT_BAD_CONNECTION},      /* bad connection */
    {4, 5, BOUNCE_CAT_NO_ANSWER_FROM_HOST}, /* mail system congestion: host took nothing */
    {4, 7, BOUNCE_CAT_MESSAGE_EXPIRED},     /* delivery time expired */
    {4, BOUNCE_CLASS_ANY, BOUNCE_CAT_ROUTING_ERRORS}, /* 4.0 4.3 4.4 4.6: routing, DNS, loops */
    /* X.5 protocol */
    {5, BOUNCE_CLASS_ANY, BOUNCE_CAT_PROTOCOL_ERRORS},
    /* X.6 message content or media */
    {6, BOUNCE_CLASS_ANY, BOUNCE_CAT_CONTENT_RELATED},
    /* X.7 security or policy.  X.7.0 and X.7.1 are refined by text below. */
    {7, 8, BOUNCE_CAT_BAD_CONFIGURATION},  /* authentication credentials invalid */
    {7, 9, BOUNCE_CAT_BAD_CONFIGURATION},  /* authentication mechanism too weak */
    {7, 10, BOUNCE_CAT_BAD_CONFIGURATION}, /* encryption needed */
    {7, 11, BOUNCE_CAT_BAD_CONFIGURATION}, /* encryption required for the mechanism */
    {7, 12, BOUNCE_CAT_BAD_CONFIGURATION}, /* a password transition is needed */
    {7, 13, BOUNCE_CAT_BAD_CONFIGURATION}, /* user account disabled (the AUTH user's) */
    {7, 16, BOUNCE_CAT_CONTENT_RELATED},   /* message too big for the specified priority */
    {7, 17, BOUNCE_CAT_INACTIVE_MAILBOX},  /* mailbox owner has changed (RFC 7293) */
    {7, 18, BOUNCE_CAT_BAD_DOMAIN},        /* domain owner has changed (RFC 7293) */
    {7, 27, BOUNCE_CAT_INVALID_SENDER},    /* sender address has null MX (RFC 7505) */
    {7, 28, BOUNCE_CAT_SPAM_RELATED},      /* mail flood detected */
    /* 7.0-7.7, 7.14, 7.15, 7.19-7.26 (DKIM, SPF, reverse DNS, DMARC), 7.29, 7.30 */
    {7, BOUNCE_CLASS_ANY, BOUNCE_CAT_POLICY_RELATED},
};

/* words that make a generic X.7.0/X.7.1 refusal more specific (the rules file has
 * the full patterns; these keep the defaults useful without one) */
static const char *const bounce_class_virus_words[] = {"virus", "malware", "infected", NULL};
static const char *const bounce_class_relay_words[] = {"relay access denied",
                                                       "relaying denied",
                                                       "relay denied",
                                                       "relay not permitted",
                                                       "relaying not permitted",
                                                       "not permitted to relay",
                                                       "relaying not allowed",
                                                       "not allowed to relay",
                                                       "unable to relay",
                                                       "we do not relay",
                                                       NULL};
static const char *const bounce_class_spam_words[] = {
    "spam",     "unsolicited", "blacklist", "blocklist",  "block list", "black list",
    "spamhaus", "spamcop",     "barracuda", "reputation", NULL};

/* bounce_class_status_cat - the table's category for a valid status, refined by
 * text for the generic policy refusals */
static enum BOUNCE_CAT bounce_class_status_cat(const struct bounce_class_enh *e, const char *text)
{
    enum BOUNCE_CAT cat = BOUNCE_CAT_OTHER;
    for (size_t i = 0; i < ARRAY_LEN(bounce_class_status); i++) {
        if (bounce_class_status[i].subject != e->subject) continue;
        if (bounce_class_status[i].detail != e->detail &&
            bounce_class_status[i].detail != BOUNCE_CLASS_ANY)
            continue;
        cat = bounce_class_status[i].cat; /* exact rows come before the subject's ANY */
        break;
    }
    /* Microsoft sends "5.1.10 RESOLVER.ADR.RecipientNotFound" for a missing
     * mailbox, not for a null MX */
    if (e->subject == 1 && e->detail == 10 && strcasestr(text, "RecipientNotFound") != NULL)
        return BOUNCE_CAT_BAD_MAILBOX;
    if (e->subject == 7 && (e->detail == 0 || e->detail == 1)) {
        if (bounce_class_has(text, bounce_class_virus_words)) return BOUNCE_CAT_VIRUS_RELATED;
        if (bounce_class_has(text, bounce_class_relay_words)) return BOUNCE_CAT_RELAYING_ISSUES;
        if (bounce_class_has(text, bounce_class_spam_words)) return BOUNCE_CAT_SPAM_RELATED;
    }
    return cat;
}

/* reply codes that mean something by themselves, for replies without a status */
static const struct {
    int code;
    enum BOUNCE_CAT cat;
} bounce_class_codes[] = {
    {421, BOUNCE_CAT_BAD_CONNECTION}, /* closing the channel; smtpc calls it "dropped" */
    {452, BOUNCE_CAT_QUOTA_ISSUES},   /* insufficient system storage */
    {500, BOUNCE_CAT_PROTOCOL_ERRORS},   {501, BOUNCE_CAT_PROTOCOL_ERRORS},
    {502, BOUNCE_CAT_PROTOCOL_ERRORS},   {503, BOUNCE_CAT_PROTOCOL_ERRORS},
    {504, BOUNCE_CAT_PROTOCOL_ERRORS},   {555, BOUNCE_CAT_PROTOCOL_ERRORS},
    {530, BOUNCE_CAT_BAD_CONFIGURATION}, /* authentication required */
    {534, BOUNCE_CAT_BAD_CONFIGURATION}, /* authentication mechanism too weak */
    {535, BOUNCE_CAT_BAD_CONFIGURATION}, /* authentication credentials invalid */
    {538, BOUNCE_CAT_BAD_CONFIGURATION}, /* encryption required for the mechanism */
    {552, BOUNCE_CAT_QUOTA_ISSUES},      /* exceeded storage allocation */
    /* 450, 451, 550, 553, 554 say too little on their own: "other" */
};

/* RFC 7504's codes name the failure more exactly than the status they come with
 * (521 with 5.3.2 "system not accepting network messages" means this host takes
 * no mail at all, ever), so they decide before the status table */
static const int bounce_class_codes_first[] = {521, 556};

/* bounce_class_verdict - fill out; hard < 0 means the default for cat */
static void bounce_class_verdict(struct bounce_verdict *out, enum BOUNCE_CAT cat, int hard,
                                 bool permanent, const char *rule)
{
    out->cat = cat;
    out->hard = hard < 0 ? (permanent && bounce_class_address_cat(cat)) : hard != 0;
    str_copy(out->rule, sizeof out->rule, rule);
}

/* bounce_class_builtin - the defaults: local texts, status table, codes, other */
static void bounce_class_builtin(int code, const char *enh, bool enh_ok,
                                 const struct bounce_class_enh *e, const char *text, bool permanent,
                                 struct bounce_verdict *out)
{
    enum BOUNCE_CAT cat;
    const char *rule;
    char name[BOUNCE_RULE_NAME_MAX];

    if (bounce_class_local(code, text, &cat, &rule)) {
        bounce_class_verdict(out, cat, -1, permanent, rule);
        return;
    }
    for (size_t i = 0; i < ARRAY_LEN(bounce_class_codes_first); i++) {
        if (bounce_class_codes_first[i] != code) continue;
        snprintf(name, sizeof name, "code:%d", code);
        bounce_class_verdict(out, BOUNCE_CAT_BAD_DOMAIN, -1, permanent, name);
        return;
    }
    if (enh_ok) {
        cat = bounce_class_status_cat(e, text);
        snprintf(name, sizeof name, "status:%.20s", enh);
        bounce_class_verdict(out, cat, -1, permanent, name);
        return;
    }
    for (size_t i = 0; i < ARRAY_LEN(bounce_class_codes); i++) {
        if (bounce_class_codes[i].code != code) continue;
        snprintf(name, sizeof name, "code:%d", code);
        bounce_class_verdict(out, bounce_class_codes[i].cat, -1, permanent, name);
        return;
    }
    bounce_class_verdict(out, BOUNCE_CAT_OTHER, -1, permanent, "default");
}

/* ---- classification ----------------------------------------------------------------- */

/* bounce_class_rule_match - every condition the rule gives holds */
static bool bounce_class_rule_match(const struct bounce_class_rule *r, int code, int rclass,
                                    bool enh_ok, const struct bounce_class_enh *e, const char *text)
{
    switch (r->code_kind) {
    case BOUNCE_CLASS_CODE_ANY:
        break;
    case BOUNCE_CLASS_CODE_EXACT:
        if (code != r->code) return false;
        break;
    case BOUNCE_CLASS_CODE_CLASS:
        if (rclass != r->code) return false;
        break;
    }
    if (r->has_enh && (!enh_ok || !bounce_class_enh_match(&r->enh, e))) return false;
    /* REG_NOMATCH, and REG_ESPACE too: out of memory is no match, never an abort */
    if (r->has_re && regexec(&r->re, text, 0, NULL, 0) != 0) return false;
    return true;
}

/*
 * bounce_classify - a text longer than BOUNCE_TEXT_MAX is cut to its first
 * BOUNCE_TEXT_MAX bytes in a stack copy: every reply worth classifying says why in
 * its first line, and it bounds what a hostile DSN costs the regex engine.
 */
void bounce_classify(const struct bounce_class *c, int code, const char *enh, const char *text,
                     struct bounce_verdict *out)
{
    char cut[BOUNCE_TEXT_MAX + 1];
    struct bounce_class_enh e;

    assert(out != NULL);
    if (enh == NULL) enh = "";
    if (text == NULL) text = "";
    if (strnlen(text, BOUNCE_TEXT_MAX + 1) > BOUNCE_TEXT_MAX) {
        memcpy(cut, text, BOUNCE_TEXT_MAX);
        cut[BOUNCE_TEXT_MAX] = '\0';
        text = cut;
    }
    bool enh_ok = bounce_class_enh_parse(enh, false, true, &e) == 0;
    int rclass = bounce_class_reply_class(code, &e, enh_ok);
    bool permanent = rclass == 5;

    if (c) {
        for (int i = 0; i < c->nrules; i++) {
            const struct bounce_class_rule *r = &c->rules[i];
            if (!bounce_class_rule_match(r, code, rclass, enh_ok, &e, text)) continue;
            bounce_class_verdict(out, r->cat, r->hard, permanent, r->name);
            return;
        }
    }
    bounce_class_builtin(code, enh, enh_ok, &e, text, permanent, out);
}

/* ---- loading ------------------------------------------------------------------------ */

/* bounce_class_parse_code - 550 (exact; 0 = the engine's own failures) or "4xx"/"5xx" */
static int bounce_class_parse_code(struct cfgfile_ld *ld, const config_setting_t *s,
                                   const char *key, struct bounce_class_rule *r)
{
    int t = config_setting_type(s);
    if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
        long long v = config_setting_get_int64(s);
        if (v != 0 && (v < 400 || v > 599))
            return cfgfile_fail(ld, s, key,
                                "%lld: must be 0 (the engine's own failures) or 400..599", v);
        r->code_kind = BOUNCE_CLASS_CODE_EXACT;
        r->code = (int)v;
        return 0;
    }
    if (t == CONFIG_TYPE_STRING) {
        const char *v = config_setting_get_string(s);
        if ((v[0] == '4' || v[0] == '5') && (v[1] == 'x' || v[1] == 'X') &&
            (v[2] == 'x' || v[2] == 'X') && v[3] == '\0') {
            r->code_kind = BOUNCE_CLASS_CODE_CLASS;
            r->code = v[0] - '0';
            return 0;
        }
        return cfgfile_fail(ld, s, key,
                            "\"%.64s\": expected a code such as 550, or \"4xx\" "
                            "or \"5xx\"",
                            v);
    }
    return cfgfile_fail(ld, s, key, "must be a code such as 550, or \"4xx\" or \"5xx\"");
}

/*
 * bounce_class_parse_rule - one entry of "rules" into c->rules[c->nrules].  The
 * regex is compiled last, so that the rule owns nothing until it is counted in
 * nrules (and then bounce_class_free releases it).
 */
static int bounce_class_parse_rule(struct cfgfile_ld *ld, const config_setting_t *g, int idx,
                                   struct bounce_class *c)
{
    struct bounce_class_rule *r = &c->rules[c->nrules];
    const config_setting_t *cat_s = NULL, *text_s = NULL;
    const char *text = NULL;
    char pfx[32], key[160];

    memset(r, 0, sizeof *r);
    r->hard = -1;
    snprintf(pfx, sizeof pfx, "rules[%d]", idx);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return cfgfile_fail(ld, g, pfx, "must be a group { name = ...; category = ...; }");
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        const char *v = NULL;
        cfgfile_key(key, sizeof key, pfx, name);
        if (strcmp(name, "name") == 0) {
            if (cfgfile_get_str(ld, s, key, &v) < 0) return -1;
            if (!cfgfile_name_ok(v, BOUNCE_RULE_NAME_MAX))
                return cfgfile_fail(ld, s, key, "\"%.64s\": a name is 1..%d of A-Z a-z 0-9 . _ -",
                                    v, BOUNCE_RULE_NAME_MAX - 1);
            if (strcmp(v, "default") == 0)
                return cfgfile_fail(ld, s, key, "\"default\" is reserved for no rule matched");
            str_copy(r->name, sizeof r->name, v);
        } else if (strcmp(name, "category") == 0) {
            if (cfgfile_get_str(ld, s, key, &v) < 0) return -1;
            if (bounce_cat_parse(v, &r->cat) < 0) {
                char all[400];
                size_t off = 0;
                for (int k = 0; k < BOUNCE_CAT_COUNT && off < sizeof all; k++)
                    off += (size_t)snprintf(all + off, sizeof all - off, "%s%s", k ? ", " : "",
                                            bounce_cat_names[k]);
                return cfgfile_fail(ld, s, key, "unknown category \"%.64s\" (one of %s)", v, all);
            }
            cat_s = s;
        } else if (strcmp(name, "hard") == 0) {
            bool hard;
            if (cfgfile_get_bool(ld, s, key, &hard) < 0) return -1;
            r->hard = hard ? 1 : 0;
        } else if (strcmp(name, "code") == 0) {
            if (bounce_class_parse_code(ld, s, key, r) < 0) return -1;
        } else if (strcmp(name, "enh") == 0) {
            if (cfgfile_get_str(ld, s, key, &v) < 0) return -1;
            if (strlen(v) >= BOUNCE_CLASS_ENH_MAX ||
                bounce_class_enh_parse(v, true, false, &r->enh) < 0)
                return cfgfile_fail(ld, s, key,
                                    "\"%.64s\": expected a status or prefix such as \"5.1.1\", "
                                    "\"5.7\" or \"X.4.7\"",
                                    v);
            r->has_enh = true;
        } else if (strcmp(name, "text") == 0) {
            if (cfgfile_get_str(ld, s, key, &text) < 0) return -1;
            if (text[0] == '\0')
                return cfgfile_fail(ld, s, key, "empty (leave text out to match any text)");
            if (strlen(text) >= BOUNCE_CLASS_REGEX_MAX)
                return cfgfile_fail(ld, s, key, "longer than %d characters",
                                    BOUNCE_CLASS_REGEX_MAX - 1);
            text_s = s;
        } else {
            return cfgfile_fail(ld, s, key, "unknown key");
        }
    }
    if (r->name[0] == '\0') return cfgfile_fail(ld, g, pfx, "missing name");
    for (int i = 0; i < c->nrules; i++)
        if (strcmp(c->rules[i].name, r->name) == 0)
            return cfgfile_fail(ld, g, pfx, "duplicate rule name \"%s\"", r->name);
    if (cat_s == NULL)
        return cfgfile_fail(ld, g, cfgfile_key(key, sizeof key, pfx, "category"),
                            "missing (one of bad-mailbox, inactive-mailbox, ..., other)");
    if (r->code_kind == BOUNCE_CLASS_CODE_ANY && !r->has_enh && text == NULL)
        return cfgfile_fail(ld, g, pfx,
                            "needs code, enh or text (a rule without conditions "
                            "would hide every rule after it)");
    if (text) {
        cfgfile_key(key, sizeof key, pfx, "text");
        int rc = regcomp(&r->re, text, REG_EXTENDED | REG_ICASE | REG_NOSUB);
        if (rc != 0) {
            char why[128];
            regerror(rc, &r->re, why, sizeof why);
            return cfgfile_fail(ld, text_s, key, "bad regular expression \"%.64s\": %s", text, why);
        }
        r->has_re = true;
    }
    c->nrules++; /* owns r->re from here on */
    return 0;
}

/* bounce_class_load_root - the whole file: only "rules" is known */
static int bounce_class_load_root(struct cfgfile_ld *ld, const config_setting_t *root,
                                  struct bounce_class *c)
{
    static const char *const known[] = {"rules"};
    if (cfgfile_known_keys(ld, root, known, ARRAY_LEN(known)) < 0) return -1;
    const config_setting_t *s = config_setting_get_member(root, "rules");
    if (s == NULL) return 0;
    int n = cfgfile_list_len(ld, s, "rules", BOUNCE_CLASS_MAX_RULES);
    if (n <= 0) return n;
    c->rules = calloc((size_t)n, sizeof(*c->rules));
    if (c->rules == NULL) return cfgfile_fail(ld, s, "rules", "out of memory");
    for (int i = 0; i < n; i++)
        if (bounce_class_parse_rule(ld, config_setting_get_elem(s, (unsigned)i), i, c) < 0)
            return -1;
    return 0;
}

struct bounce_class *bounce_class_load(const char *path, char *err, size_t errlen)
{
    struct cfgfile_ld ld = {.path = path, .err = err, .errlen = errlen};
    config_t cfg;

    if (err && errlen) err[0] = '\0';
    struct bounce_class *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        if (err && errlen) snprintf(err, errlen, "%s: out of memory", path && *path ? path : "-");
        return NULL;
    }
    if (path == NULL || *path == '\0') return c;
    if (cfgfile_read(&cfg, path, err, errlen) < 0) {
        bounce_class_free(c);
        return NULL;
    }
    int rc = bounce_class_load_root(&ld, config_root_setting(&cfg), c);
    config_destroy(&cfg);
    if (rc < 0) {
        bounce_class_free(c);
        return NULL;
    }
    return c;
}

void bounce_class_free(struct bounce_class *c)
{
    if (c == NULL) return;
    for (int i = 0; i < c->nrules; i++)
        if (c->rules[i].has_re) regfree(&c->rules[i].re);
    free(c->rules);
    free(c);
}

int bounce_class_nrules(const struct bounce_class *c)
{
    return c ? c->nrules : 0;
}
