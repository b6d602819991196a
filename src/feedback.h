/*
 * feedback - the daemon's side of the feedback loop, on the front thread.
 *
 * Owns (1) batches of suppression changes (fb_req): built from volleyctl, the
 * one-click HTTP endpoint and inbound feedback mail, committed to the spool in one
 * op with the purge of the queued recipients they match, then logged (an accounting
 * record per purged recipient, plus the records the batch carries); and (2) the
 * processing of one inbound feedback message (fb_intake): parse it (bounce_), find
 * the message and recipient it is about from the signed VERP return path (verp_)
 * and the sent record, classify it (bounce_class_), and decide: a hard bounce or a
 * complaint suppresses the address, a soft bounce counts towards
 * feedback.soft_bounce_limit, a mailto unsubscribe suppresses it for its list;
 * delay notices and auto-replies are logged, never counted as bounces.
 *
 * Trust: a DSN changes nothing unless its envelope recipient is a valid VERP
 * address (forged or altered tokens are refused at RCPT by the intake listener);
 * ARF reports are taken at the configured feedback domains, and mapped to their
 * message through the original's Return-Path when it carries a VERP token.
 *
 * Completions carry owner ids (engine registry), never session pointers: the
 * requester may be gone when the commit returns.
 */
#ifndef VOLLEY_FEEDBACK_H
#define VOLLEY_FEEDBACK_H

#include "suppress.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conf;
struct engine;
struct fb_req;
struct verp_key;

/* fb_start - derive the signing key; 0, or -1 with err when feedback.secret is bad */
int fb_start(struct engine *eng, char *err, size_t errn);

/* fb_req_new - an empty batch (aborts on OOM) */
struct fb_req *fb_req_new(struct engine *eng);
/*
 * fb_req_put / fb_req_del / fb_req_forget / fb_req_soft - add a change to r.  Each
 * validates and normalises its input first: -1 with a one-line reason in err when
 * it is bad (nothing is added).
 */
int fb_req_put(struct fb_req *r, const char *scope, const char *target,
               enum SUPPRESS_REASON reason, int64_t expires_ms, const char *source, bool purge,
               char *err, size_t errn);
int fb_req_del(struct fb_req *r, const char *scope, const char *target, char *err, size_t errn);
int fb_req_forget(struct fb_req *r, const char *addr, char *err, size_t errn);
int fb_req_soft(struct fb_req *r, const char *addr, const char *source);
/* fb_req_record - an accounting record to write once r commits (steals rec) */
void fb_req_record(struct fb_req *r, const char *type, json_t *rec);
size_t fb_req_size(const struct fb_req *r);

/* after the commit: what the changes did */
struct fb_result {
    int result;        /* SPOOL_OK or SPOOL_E* */
    uint32_t applied;  /* entries new (put) or removed (del, forget) */
    uint32_t existing; /* put entries that were there already */
    uint32_t purged;   /* queued recipients removed */
    uint32_t soft_suppressed;
};
typedef void (*fb_done_fn)(struct engine *eng, uint64_t owner, const struct fb_result *res);
/* fb_req_submit_cancel - drop r unsubmitted */
void fb_req_submit_cancel(struct fb_req *r);
/* fb_req_submit - commit r (which it then owns and frees); done runs on the front
 * loop after the commit, or at once when r is empty or the spool is closing */
void fb_req_submit(struct fb_req *r, uint64_t owner, fb_done_fn done);

/*
 * fb_intake_rcpt - may the intake listener take mail for addr?  0 yes; -1 with the
 * refusal (a whole SMTP reply line) when its domain is not a feedback domain or it
 * carries a VERP or unsubscribe token that does not verify.
 */
int fb_intake_rcpt(struct engine *eng, const char *addr, char *reply, size_t replyn);
/*
 * fb_intake - act on one inbound feedback message (content is CRLF text, borrowed
 * for the call); done as for fb_req_submit.
 */
void fb_intake(struct engine *eng, uint64_t owner, char *const *rcpts, uint32_t nrcpt,
               const uint8_t *content, size_t len, fb_done_fn done);
/*
 * What volleyd adds to one outgoing message for one recipient (delivery workers
 * call this; it reads only conf and the key):
 *   - a VERP return path "<prefix>+<token>@<bounce domain>" when the sender's
 *     domain has a bounce domain (feedback.bounce_domains, else bounce_domain);
 *   - List-Unsubscribe (one-click URL and mailto) and List-Unsubscribe-Post header
 *     lines for mail with a campaign or list, unless it carries its own.
 * Both are per recipient, so a message using either is sent one recipient per
 * transaction.  fb_decorate_needed says whether any applies (cheap: no crypto);
 * fb_decorate fills mail_from (left "" when no VERP) and appends the header lines
 * (CRLF-terminated) to hdrs.
 */
struct vbuf;
struct fb_msg {
    const char *sender, *campaign, *list;
    uint64_t id;
};
bool fb_decorate_needed(const struct conf *c, const struct verp_key *key, const struct fb_msg *m,
                        const uint8_t *content, size_t len);
void fb_decorate(const struct conf *c, const struct verp_key *key, const struct fb_msg *m,
                 uint32_t idx, const char *rcpt, const uint8_t *content, size_t len,
                 char *mail_from, size_t mfn, struct vbuf *hdrs);

/* fb_unsubscribe - a one-click (or other) unsubscribe of addr from list ("" or
 * FB_ALL_LISTS = all mail) for message msgid; done as for fb_req_submit */
#define FB_ALL_LISTS "*"
void fb_unsubscribe(struct engine *eng, uint64_t owner, const char *list, const char *addr,
                    uint64_t msgid, const char *method, fb_done_fn done);

#endif
