/*
 * dsn - builds the optional bounce/expiry notice sent back to the envelope sender:
 * an RFC 3464 delivery status notification in an RFC 6522 multipart/report
 * (report-type=delivery-status) with three parts - a short human explanation, the
 * machine-readable message/delivery-status, and the original header section as
 * text/rfc822-headers.
 *
 * The builder is pure (no clock, no locale, no I/O, no global state) so that it can
 * be unit-tested byte for byte (tests/unit/test_dsn.c).  The caller inserts the
 * result into the spool atomically with the outcomes that caused it, with a null
 * reverse-path (MAIL FROM:<>) as RFC 3461/5321 require, so that a DSN is never
 * answered by another DSN.  The caller also decides whether a DSN is wanted at all
 * (never for a null sender).
 *
 * Invariants of the output: CRLF line ends only, 7-bit clean, no line longer than
 * 998 octets, and untrusted text (remote replies, addresses, copied headers) cannot
 * end a field or forge a MIME boundary.
 */
#ifndef VOLLEY_DSN_H
#define VOLLEY_DSN_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* One failed recipient.  NULL in an optional string field reads as "". */
struct dsn_rcpt {
    const char *addr;        /* final recipient (envelope address, no <>) */
    const char *action;      /* "failed" (bounced or expired) */
    const char *status;      /* enhanced status, e.g. "5.1.1" or "4.4.7"; "" -> derive
                                "5.0.0"/"4.0.0" from code, or "5.0.0" */
    int code;                /* SMTP reply code, 0 when the failure was local (DNS,
                                connection, expiry) */
    const char *diag;        /* reply text or local diagnostic; untrusted (came from a
                                remote server) */
    const char *remote_mta;  /* MX host name, "" when none */
    int64_t last_attempt_ms; /* unix ms; <= 0 when never attempted (field omitted) */
};

struct dsn_info {
    const char *reporting_mta; /* our host name */
    const char *queue_id;      /* original message id text */
    const char *sender;        /* original envelope sender: the DSN's To: */
    int64_t arrival_ms;        /* when the original message was queued */
    int64_t now_ms;            /* Date: of the DSN */
    const struct dsn_rcpt *rcpts;
    size_t nrcpt;
    const uint8_t *orig; /* original message bytes (CRLF lines); only its header
                            section is copied */
    size_t orig_len;
};

/*
 * dsn_build - append the DSN message (CRLF line endings, ready for the spool) to out;
 * 0, or -1 if out's cap is hit or input is invalid (no recipients, empty sender,
 * empty reporting_mta or queue_id, a recipient without an address, a date out of
 * range).  On -1 out->len is back where it was.  out keeps ownership of its bytes.
 */
int dsn_build(const struct dsn_info *in, struct vbuf *out);

#endif
