/*
 * sched_queue - delivery scheduling for one delivery worker: what is due, where it goes,
 * and over which connection.
 *
 * A loader pulls due recipients from the spool's due index into memory (at most
 * delivery.max_ready at a time: the queue itself stays on disk), groups them into
 * jobs (one message, one domain, up to max_recipients_per_transaction), resolves
 * the domain (dns_) and hands the job to the domain's *site*: the set of domains
 * whose MX host set is the same (or whose first MX host matches a configured
 * pattern).  Each site has a queue of jobs (FIFO lanes per domain, pool and source
 * that take turns) and a pool of smtpc_ connections limited
 * by max_connections_per_site (and per domain); a connection that finishes a
 * transaction takes the next job of its site, up to max_messages_per_connection,
 * and QUITs after idle_timeout.  Outcomes go back to the spool in one op per job;
 * the accounting record is written once the spool has committed it.
 *
 * Everything here runs on the worker's loop thread; nothing is shared with other
 * workers (a domain belongs to the worker its name hashes to).
 */
#ifndef VOLLEY_SCHED_H
#define VOLLEY_SCHED_H

#include "conf.h"
#include "dns.h"
#include "mbox.h"
#include "spool.h"
#include "engine.h"

#include <event2/event.h>
#include <jansson.h>
#include <openssl/ssl.h>

/* bodies whose DKIM body hash a delivery or signing thread remembers across
 * messages (a campaign's one body sent as many messages), and the largest it
 * keeps: at most 4 MB a thread */
#define SCHED_DKIM_MEMO_BODIES 8
#define SCHED_DKIM_MEMO_MAX    (512 * 1024)

struct signpool;

struct sched_params {
    struct event_base *base;
    struct spool *spool;
    const struct conf *conf;
    struct dns *dns;
    SSL_CTX *tls_ctx;
    struct mbox *mbox; /* this worker's mailbox: spool completions land here */
    struct signpool *signpool; /* DKIM signing threads (completions land in mbox);
                                  NULL = sign on this thread */
    int worker_index;
    int nworkers;
    const char *helo_name;
    struct engine_rules *rules; /* shaping rules: the scheduler takes this reference */
    struct warmup *warmup;      /* shared warm-up counts (warmup.h) */
    const struct verp_key *verp; /* feedback signing key; NULL = no VERP, no unsubscribe links */
};

struct sched;

/* sched_new - start the loader on p->base; never fails (aborts on OOM) */
struct sched *sched_new(const struct sched_params *p);
/* sched_poke - new mail may be due: run the loader soon */
void sched_poke(struct sched *s);
/* sched_retry - forget cached DNS and site-down state of domain (all when NULL or
 * "") so that recipients made due by a retry op go out at once */
void sched_retry(struct sched *s, const char *domain);
/*
 * sched_stop - stop loading, abort every connection (their recipients stay queued
 * in the spool), and call done(arg) once no spool op of this scheduler is pending
 */
void sched_stop(struct sched *s, void (*done)(void *arg), void *arg);
/* sched_free - release everything (after sched_stop's done) */
void sched_free(struct sched *s);
/* sched_sites_json - an array describing every site and its (source, site) pairs
 * (volleyctl sites) */
json_t *sched_sites_json(struct sched *s);
/* sched_set_rules - adopt a new shaping rule set (takes the reference): limits are
 * matched again, pairs keep their state, queued mail stays where it is */
void sched_set_rules(struct sched *s, struct engine_rules *er);
/*
 * sched_shape_admin - volleyctl suspend|resume: every pair of the sites named site
 * (and of source, when not NULL/""), suspended until until_ms or resumed; returns
 * how many pairs it touched
 */
int sched_shape_admin(struct sched *s, const char *site, const char *source, bool suspend,
                      int64_t until_ms);

#endif
