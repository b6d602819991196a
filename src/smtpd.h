/*
 * smtpd - server-side ESMTP for injection (and, later, bounce intake).
 *
 * Listens on a unix socket and/or TCP addresses, speaks RFC 5321 with PIPELINING,
 * SIZE, 8BITMIME, SMTPUTF8 and ENHANCEDSTATUSCODES, and hands each complete message
 * to the spool writer; the 250 goes out only after the commit that holds it.
 * Every refusal is a precise reply plus a log record; see smtpd.c for the limits.
 */
#ifndef VOLLEY_SMTPD_H
#define VOLLEY_SMTPD_H

#include <stddef.h>

struct engine;

/* smtpd_listen - open every configured injection listener; 0 or -1 (logged) */
int smtpd_listen(struct engine *eng);
/* smtpd_shutdown - stop accepting; idle sessions get 421 and close, sessions
 * waiting for a commit close once it is answered */
void smtpd_shutdown(struct engine *eng);
/* smtpd_sessions - sessions still open */
size_t smtpd_sessions(struct engine *eng);
/* smtpd_free - close everything at once (after the loop ended) */
void smtpd_free(struct engine *eng);
/* smtpd_resume - resume sessions paused by the in-flight memory budget */
void smtpd_resume(struct engine *eng);

#endif
