/*
 * dnsq - synchronous DNS questions for tools (volleyctl check-domain): TXT, A,
 * AAAA, MX and PTR over c-ares, one question at a time, each bounded by the
 * channel's timeout and tries.
 *
 * The daemon's resolver (dns.h) answers one question only - "where does mail for
 * this domain go" - asynchronously on an event loop, with a cache; a tool that
 * asks arbitrary record types once and waits for each answer wants none of that,
 * so this is a separate, loop-less helper.  It is not for the daemon: every call
 * blocks until the answer or the timeout.
 *
 * Every query returns 0 when the server answered - with *n records, 0 when the
 * name does not exist (dnsq_nxdomain() then says 1) or has no such record - and -1
 * on a temporary failure (timeout, SERVFAIL, REFUSED, malformed reply), with
 * dnsq_error() saying what.  On 0 with *n > 0 the caller frees the array, and for
 * string arrays each string, with free().
 */
#ifndef VOLLEY_DNSQ_H
#define VOLLEY_DNSQ_H

#include <netinet/in.h>
#include <stddef.h>

struct dnsq;

/*
 * dnsq_new - a channel asking servers ("ip[:port]"; none = /etc/resolv.conf),
 * timeout_ms per try (0 = 2000), tries (0 = 2).  NULL with err on failure; free
 * with dnsq_free().
 */
struct dnsq *dnsq_new(const char *const *servers, int nservers, int timeout_ms, int tries,
                      char *err, size_t errsz);
void dnsq_free(struct dnsq *q);

/* dnsq_txt - TXT records of name; the strings of one record joined (RFC 7208 3.3,
 * RFC 6376 3.6.2.2: a long record is several strings) */
int dnsq_txt(struct dnsq *q, const char *name, char ***out, int *n);
/* dnsq_a - IPv4 addresses of name */
int dnsq_a(struct dnsq *q, const char *name, struct in_addr **out, int *n);
/* dnsq_aaaa - IPv6 addresses of name */
int dnsq_aaaa(struct dnsq *q, const char *name, struct in6_addr **out, int *n);
/* dnsq_mx - MX exchanges of name by preference, lower case without the trailing
 * dot (a null MX "." gives "") */
int dnsq_mx(struct dnsq *q, const char *name, char ***out, int *n);
/* dnsq_ptr - PTR names of the address addr (family AF_INET or AF_INET6, 4 or 16
 * bytes), lower case without the trailing dot */
int dnsq_ptr(struct dnsq *q, int family, const void *addr, char ***out, int *n);

/* dnsq_nxdomain - 1 if the last question's name did not exist */
int dnsq_nxdomain(const struct dnsq *q);
/* dnsq_error - what went wrong with the last question that returned -1 */
const char *dnsq_error(const struct dnsq *q);

#endif
