/*
 * bounce - pure parser of inbound feedback messages: delivery status
 * notifications (RFC 3464 / RFC 6533), the prose bounces of common MTAs and
 * mailbox providers, ARF complaint reports (RFC 5965), auto-replies and delay
 * warnings.
 *
 * bounce_parse() takes one whole RFC 5322 message held in memory and fills a
 * bounce_report: what the message is (kind, format), who sent it, the original
 * message it is about (orig_*), and one bounce_rcpt per recipient it reports on.
 * It never fails on content: anything it cannot read comes back as
 * BOUNCE_KIND_UNPARSEABLE with a reason; -1 means only that memory ran out.
 * Every string in the report is NUL-terminated, valid UTF-8 and free of control
 * characters, so it can go straight into JSON or a log line.
 *
 * The classification of a failure (hard/soft, category) is not made here; the
 * classifier works on status, code and diagnostic.  The mbox helpers split a
 * mailbox file into messages for batch runs; they do no I/O.
 */
#ifndef VOLLEY_BOUNCE_H
#define VOLLEY_BOUNCE_H

#include <stddef.h>

#include <jansson.h>

#define BOUNCE_MAX_RCPTS 256 /* recipients reported per message; more are dropped */

enum BOUNCE_KIND {
    BOUNCE_KIND_BOUNCE,      /* a recipient failed (Action: failed) */
    BOUNCE_KIND_DELAY,       /* a delivery is delayed and still being retried */
    BOUNCE_KIND_COMPLAINT,   /* an ARF feedback report */
    BOUNCE_KIND_AUTOREPLY,   /* a vacation / out-of-office answer */
    BOUNCE_KIND_DELIVERED,   /* a success DSN (delivered, relayed, expanded) */
    BOUNCE_KIND_UNPARSEABLE, /* none of the above; reason says why */
};

/* bounce_kind_str - "bounce", "delay", "complaint", "auto-reply", "delivered",
 * "unparseable" */
const char *bounce_kind_str(enum BOUNCE_KIND k);

/* One recipient the message reports on. */
struct bounce_rcpt {
    enum BOUNCE_KIND kind; /* BOUNCE, DELAY, DELIVERED or COMPLAINT */
    char recipient[321];   /* Final-Recipient without its type, else Original-Recipient,
                              else the address the prose names */
    char original_recipient[321];
    char action[16];       /* lower case: failed, delayed, delivered, relayed, expanded */
    char status[16];       /* enhanced status "5.1.1", "" if none found */
    int code;              /* SMTP reply code of the diagnostic, 0 if none */
    char diagnostic[1024]; /* Diagnostic-Code without its type, or the prose reason */
    char remote_mta[256];  /* Remote-MTA without its type, or the host the prose names */
};

struct bounce_report {
    enum BOUNCE_KIND kind; /* COMPLAINT for ARF, AUTOREPLY, else BOUNCE if any
                              recipient failed, else DELAY, else DELIVERED, else
                              UNPARSEABLE */
    char format[24];       /* rfc3464, arf, qmail, exim, postfix, sendmail, exchange,
                              gmail, yahoo, gmx, domino, autoreply, unknown */
    char reason[200];      /* UNPARSEABLE: why */
    char reporting_mta[256];
    char subject[256];      /* RFC 2047 words decoded */
    char from[321];         /* the feedback message's own From address */
    char to[321];           /* its first To address */
    char delivered_to[321]; /* its Delivered-To, else X-Original-To, else Envelope-To */
    /* the original message, when included (message/rfc822, text/rfc822-headers,
     * or quoted after a prose bounce) */
    char orig_message_id[256]; /* as written, angle brackets included */
    char orig_return_path[321];
    char orig_from[321];
    char orig_to[321];
    char orig_subject[256];
    char orig_list_id[256];
    char orig_envelope_id[256]; /* DSN / ARF Original-Envelope-Id */
    /* ARF (RFC 5965) */
    char feedback_type[32]; /* lower case: abuse, fraud, virus, other, not-spam, ... */
    char user_agent[128];
    char source_ip[64];
    char original_mail_from[321];
    char original_rcpt_to[321]; /* the first Original-Rcpt-To */
    char reported_domain[256];
    char arrival_date[64];
    struct bounce_rcpt *rcpts; /* owned; nrcpts entries */
    int nrcpts;
};

/*
 * bounce_parse - parse msg[0..len), one whole message with LF or CRLF line ends,
 * into out.  A message longer than max_len is not read (UNPARSEABLE, "too
 * large").  out is zeroed first and must be freed with bounce_report_free() even
 * on error.  Returns 0 on success, UNPARSEABLE results included, and -1 only
 * when memory ran out.
 */
int bounce_parse(const char *msg, size_t len, size_t max_len, struct bounce_report *out);

/* bounce_report_free - free what bounce_parse allocated in r (not r itself) */
void bounce_report_free(struct bounce_report *r);

/*
 * bounce_rcpt_json - a new JSON object for recipient i of r, or for the report
 * itself when i is -1 (a report without recipients: unparseable, auto-reply; for
 * an auto-reply, recipient is the replier's From).  Keys: kind, recipient, status,
 * action, diagnostic, remote_mta, reporting_mta, format, orig_message_id; code
 * when non-zero; feedback_type and source_ip for complaints; reason for
 * unparseable.  The caller owns the result (json_decref); NULL when out of memory
 * or i is out of range.
 */
json_t *bounce_rcpt_json(const struct bounce_report *r, int i);

/*
 * bounce_mbox_next - the next message of the mailbox buf[0..len), starting at
 * *pos (0 on the first call).  Messages start at "From " lines; the "From " line
 * itself is not part of the message, nor is the empty line that separates a
 * message from the next "From " line.  A buffer that does not start with "From "
 * is one single message.  Returns 1 with *msg and *msglen set to the raw message
 * (still mboxrd-quoted: see bounce_mbox_unquote) and *pos advanced, 0 at the end.
 */
int bounce_mbox_next(const char *buf, size_t len, size_t *pos, const char **msg, size_t *msglen);

/*
 * bounce_mbox_unquote - mboxrd unquoting of msg[0..len) into out: one '>' is taken
 * off every line that matches ">+From ".  The result is never longer than the
 * input; out must hold outsz >= len octets (else the result is cut at outsz).
 * Returns the new length.  out may equal msg (in place).
 */
size_t bounce_mbox_unquote(const char *msg, size_t len, char *out, size_t outsz);

#endif
