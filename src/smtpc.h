/*
 * smtpc - one outbound SMTP client session: connect (optionally bound to a source
 * address), banner, EHLO (HELO fallback), STARTTLS per policy, then any number of
 * pipelined transactions, then QUIT.
 *
 * Explicit state machine over a bufferevent (plain, then wrapped with
 * bufferevent_openssl_filter_new for STARTTLS).  With PIPELINING the client sends
 * MAIL, every RCPT and DATA in one write and reads the replies in order (send
 * cursor ahead of the receive cursor, as Postfix's smtp_proto.c); it waits only for
 * the 354 and for the final reply after the text.  Without PIPELINING it goes in
 * lock-step.  Text is dot-stuffed on the way out and ends with CRLF.CRLF; SIZE= is
 * sent when the server offers SIZE (a message over the server's limit fails
 * locally with 552 5.3.4 without being sent), BODY=8BITMIME when the message is 8-bit
 * and the server offers 8BITMIME, SMTPUTF8 when asked and offered (when asked and
 * not offered the transaction fails locally with 553 5.6.7).
 *
 * Failure scopes (Postfix smtp_trouble.c): a reply to RCPT concerns one recipient;
 * MAIL, DATA and the final reply concern the whole transaction; connect, banner,
 * EHLO, STARTTLS errors, timeouts and dropped connections concern the session (and
 * the caller usually the site).  Multi-line replies are joined; enhanced status
 * codes (RFC 3463) are split out when the server offers ENHANCEDSTATUSCODES or the
 * text starts with one.
 *
 * Timeouts: RFC 5321 4.5.3.2 defaults (greeting 300 s, MAIL 300, RCPT 300, DATA
 * initiation 120, data block 180, final "." 600), connect 30 s, STARTTLS and EHLO
 * 300, QUIT 30; each configurable.
 *
 * Lifetime: the caller creates a session with smtpc_new() and gets exactly one
 * closed() callback at the end, after which the session frees itself; the caller
 * must forget its pointer then.  smtpc_abort() ends a session at once without
 * callbacks.  Callbacks never run inside smtpc_new/smtpc_send/smtpc_quit (they are
 * deferred to the loop), so callers never re-enter themselves.
 */
#ifndef VOLLEY_SMTPC_H
#define VOLLEY_SMTPC_H

#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum SMTPC_TLS {
    SMTPC_TLS_OFF,           /* never STARTTLS */
    SMTPC_TLS_OPPORTUNISTIC, /* STARTTLS when offered; if the handshake fails, reconnect
                                and continue in plain text (logged via tls_fallback) */
    SMTPC_TLS_REQUIRED,      /* no STARTTLS offered or handshake failure: session fails
                                with SMTPC_FAIL_TLS (certificates are not verified) */
};
const char *smtpc_tls_str(enum SMTPC_TLS t);

enum SMTPC_FAIL {
    SMTPC_FAIL_NONE = 0,
    SMTPC_FAIL_CONNECT,  /* connect() failed or timed out */
    SMTPC_FAIL_TIMEOUT,  /* a reply did not come in time */
    SMTPC_FAIL_DROPPED,  /* the server closed the connection */
    SMTPC_FAIL_PROTOCOL, /* a reply that is not SMTP */
    SMTPC_FAIL_TLS,      /* STARTTLS required but not offered, or handshake failed */
    SMTPC_FAIL_REPLY,    /* the banner, EHLO/HELO or STARTTLS was refused (see reply) */
};
const char *smtpc_fail_str(enum SMTPC_FAIL f);

struct smtpc_reply {
    int code;         /* 0 when no reply was received */
    char enh[16];     /* "4.7.0" or "" */
    char text[512];   /* the reply text without code and enhanced code, lines joined
                         with a space, truncated */
};

struct smtpc_timeouts { /* seconds; 0 = the RFC 5321 default */
    int connect, greeting, helo, starttls, mail, rcpt, data_init, data_block, data_done,
        rset, quit;
};

struct smtpc_params {
    struct event_base *base;
    SSL_CTX *tls_ctx;   /* client context; required unless tls == SMTPC_TLS_OFF */
    enum SMTPC_TLS tls;
    const char *helo_name;   /* our EHLO argument */
    const char *server_name; /* MX host name: SNI, and for logs */
    struct sockaddr_storage dest; /* address and port to connect to */
    socklen_t destlen;
    struct sockaddr_storage source; /* local address to bind; sourcelen 0 = any */
    socklen_t sourcelen;
    struct smtpc_timeouts timeouts;
};

/*
 * struct smtpc_txn - one message to send.  Owned by the caller, which must keep it
 * and everything it points to alive until done() or closed() has been called.
 * smtpc fills the reply fields.
 */
struct smtpc_txn {
    const char *sender;          /* "" = null reverse-path */
    const char *const *rcpts;
    uint32_t nrcpt;
    const uint8_t *content;      /* CRLF lines, NOT dot-stuffed */
    size_t content_len;
    /* complete CRLF header lines sent as they are in front of content (each starts
     * with a field name or WSP, so no dot-stuffing): the DKIM signatures, kept
     * apart so that the text need not be copied to put them on top */
    const uint8_t *prefix;
    size_t prefix_len;
    /* the text is still being made (signed on another thread): MAIL, RCPT and DATA
     * go out, the text waits for smtpc_content_ready().  Until then content may be
     * NULL and content_len is an upper estimate of prefix and text together: it is
     * what SIZE= declares (RFC 1870 6: the size is the client's estimate) and what
     * the SIZE limit is checked against */
    bool content_pending;
    bool body_8bit;
    bool smtputf8;
    /* set by the caller when the message cannot go to this server as it is (e.g.
     * 8-bit text, no 8BITMIME, conversion refused): the transaction fails at once,
     * locally, with this reply (refuse_code 0 = send normally) */
    int refuse_code;
    char refuse_enh[8];
    char refuse_text[200];

    /* results */
    struct smtpc_reply mail_reply;
    struct smtpc_reply *rcpt_reply; /* caller-provided array of nrcpt */
    struct smtpc_reply data_reply;  /* the 354 refusal, or the final reply after "." */
    enum SMTPC_FAIL fail;           /* session failure during the transaction */
    bool sent;                      /* its commands went out; false when the session
                                       ended before a chained transaction began: it
                                       was not attempted at all */
    /*
     * Outcome of recipient i: a refusal of MAIL, then a refusal of its RCPT, decide
     * whenever they arrived (even if the session died after); else if fail != NONE
     * and no final reply arrived, the session failure (defer); else data_reply.
     * smtpc_rcpt_outcome() applies this.
     */
};

/* smtpc_rcpt_outcome - the reply that decides recipient i of t (see above); NULL
 * when the session failed first (the caller defers with smtpc_fail_str) */
const struct smtpc_reply *smtpc_rcpt_outcome(const struct smtpc_txn *t, uint32_t i);

struct smtpc_callbacks {
    /* session established (greeted, EHLO done, TLS as the policy wants): the caller
     * sends a transaction with smtpc_send() or ends with smtpc_quit() */
    void (*ready)(void *arg);
    /* the transaction finished (whatever the replies); the session is idle again
     * and ready for smtpc_send() or smtpc_quit() */
    void (*done)(void *arg, struct smtpc_txn *t);
    /* the session is over: after QUIT (why = NONE) or a failure (with the last reply
     * received, code 0 if none).  If a transaction was in progress, done() is NOT
     * called for it: its t->fail is set and the caller finds it through its own
     * bookkeeping.  The session frees itself after this returns. */
    void (*closed)(void *arg, enum SMTPC_FAIL why, const struct smtpc_reply *last);
};

struct smtpc;

/* smtpc_new - start connecting; NULL only on immediate local failure (socket) */
struct smtpc *smtpc_new(const struct smtpc_params *p, const struct smtpc_callbacks *cb,
                        void *arg);
/*
 * smtpc_send - start transaction t on an idle session, or, when the server offers
 * PIPELINING and one transaction is in progress, chain t behind it: t's MAIL, RCPT
 * and DATA are written together with the current message's final "." (RFC 2920
 * 3.1), saving a round trip per message.  done() comes for each transaction in
 * the order they finish.  0, or -1 if the session can take nothing now.
 */
int smtpc_send(struct smtpc *c, struct smtpc_txn *t);
/*
 * smtpc_content_ready - t's text is made: the caller has set t->content,
 * t->content_len and t->prefix, t->prefix_len; this clears t->content_pending.  If the server already said 354
 * the text goes out now.  Safe on a transaction the session has finished or
 * dropped (nothing happens).
 */
void smtpc_content_ready(struct smtpc *c, struct smtpc_txn *t);
/* smtpc_quit - send QUIT on an idle session; closed() follows */
void smtpc_quit(struct smtpc *c);
/* smtpc_abort - close at once; no further callbacks; frees the session */
void smtpc_abort(struct smtpc *c);

/* Session facts, valid from ready() on. */
bool smtpc_has_pipelining(const struct smtpc *c);
bool smtpc_has_8bitmime(const struct smtpc *c);
bool smtpc_has_smtputf8(const struct smtpc *c);
uint64_t smtpc_max_size(const struct smtpc *c); /* 0 = no SIZE limit given */
const char *smtpc_tls_version(const struct smtpc *c); /* "" when plain text */
const char *smtpc_tls_cipher(const struct smtpc *c);  /* "" when plain text */
bool smtpc_tls_fallback(const struct smtpc *c); /* opportunistic TLS failed, now plain */
const char *smtpc_peer_name(const struct smtpc *c); /* server_name given */
const char *smtpc_peer_addr(const struct smtpc *c); /* "ip" text */
const char *smtpc_banner(const struct smtpc *c);

/*
 * smtpc_parse_reply - pure parser of one complete reply (one or more lines, each
 * ending in CRLF or LF, all but the last with "-" after the code) into r.  Returns
 * 0, or -1 when it is not a valid SMTP reply (codes differ between lines, code
 * not 2xx-5xx, line without a code).  Fuzzed.
 */
int smtpc_parse_reply(const char *buf, size_t len, struct smtpc_reply *r);

#endif
