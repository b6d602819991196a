/*
 * conf - the configuration key table and its libconfig reader (see conf.h).
 *
 * Every key a user can set is one row of conf_keys[]: dotted path, type, offset into
 * struct conf, default (as text), bounds and a one-line doc.  Loading applies the
 * defaults first, then the file, so a missing key always means its documented
 * default.
 */
#include "conf.h"
#include "dkim.h"
#include "util.h"

#include <errno.h>
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum CONF_TYPE {
    CONF_STR,     /* char * */
    CONF_INT,     /* int64_t within [min, max] */
    CONF_BOOL,    /* bool */
    CONF_MODE,    /* int64_t: octal file mode given as a string "0660" */
    CONF_STRLIST, /* char *[CONF_MAX_LIST] + int count right after; max = most entries */
    CONF_LEVEL,   /* char *: one of debug, info, notice, warning, error */
};

struct conf_key {
    const char *path;
    enum CONF_TYPE type;
    size_t offset;
    const char *def;
    int64_t min, max;
    const char *doc;
};

#define OFF(f) offsetof(struct conf, f)

static const struct conf_key conf_keys[] = {
    {"spool.dir", CONF_STR, OFF(spool_dir), "/var/spool/volley", 0, 0,
     "directory of the LMDB spool (data.mdb, lock.mdb); the only durable state"},
    {"spool.map_size_mb", CONF_INT, OFF(spool_map_size_mb), "4096", 1, 16777216,
     "maximum spool size in MiB (LMDB map size); injection answers 452 4.3.1 when full"},
    {"spool.reserve_percent", CONF_INT, OFF(spool_reserve_percent), "5", 0, 50,
     "share of the map kept free for deliveries, holds and deletes: injection stops here"},
    {"spool.group_commit_usec", CONF_INT, OFF(spool_group_commit_usec), "0", 0, 100000,
     "extra wait for more requests before a commit (microseconds); 0 = none: what arrives "
     "during one fsync shares the next"},
    {"spool.group_commit_max", CONF_INT, OFF(spool_group_commit_max), "512", 1, 65536,
     "most requests committed in one transaction (one fsync)"},
    {"spool.sync", CONF_BOOL, OFF(spool_sync), "true", 0, 0,
     "fsync every commit before acknowledging; false risks losing acknowledged mail"},

    {"inject.unix_socket", CONF_STR, OFF(inject_unix_socket), "/run/volley/inject.sock", 0, 0,
     "SMTP injection on a unix socket; empty string disables it"},
    {"inject.unix_mode", CONF_MODE, OFF(inject_unix_mode), "0660", 0, 0777,
     "permissions of the injection socket (octal string)"},
    {"inject.unix_group", CONF_STR, OFF(inject_unix_group), "", 0, 0,
     "group owning the injection socket; empty keeps the daemon's group"},
    {"inject.tcp_listen", CONF_STRLIST, OFF(inject_tcp_listen), "", 0, CONF_MAX_LISTEN,
     "SMTP injection on TCP: list of \"addr:port\" (\"[::1]:2525\" for IPv6); empty = off"},
    {"inject.hostname", CONF_STR, OFF(inject_hostname), "", 0, 0,
     "name in the greeting and EHLO reply; empty uses the system host name"},
    {"inject.max_connections", CONF_INT, OFF(inject_max_connections), "1000", 1, 100000,
     "concurrent injection connections (all listeners); more get 421 4.7.0 and are closed"},
    {"inject.max_message_size", CONF_INT, OFF(inject_max_message_size), "10485760", 1024, 268435456,
     "largest message accepted in octets (SIZE); larger gets 552 5.3.4"},
    {"inject.max_recipients", CONF_INT, OFF(inject_max_recipients), "1000", 1, 100000,
     "recipients per message; more get 452 4.5.3"},
    {"inject.max_errors", CONF_INT, OFF(inject_max_errors), "20", 1, 10000,
     "protocol errors in a session before it is closed with 421 4.7.0"},
    {"inject.pregreet_ms", CONF_INT, OFF(inject_pregreet_ms), "0", 0, 60000,
     "wait this long before the greeting; a client that talks first is refused (554 5.5.1)"},
    {"inject.timeout_command", CONF_INT, OFF(inject_timeout_command), "300", 1, 3600,
     "seconds a client may be idle between commands (RFC 5321 4.5.3.2.7)"},
    {"inject.timeout_data", CONF_INT, OFF(inject_timeout_data), "600", 1, 86400,
     "seconds a client may take for a whole DATA phase, so a slow drip cannot hold a slot"},
    {"inject.max_inflight_mb", CONF_INT, OFF(inject_max_inflight_mb), "512", 1, 1048576,
     "message bytes buffered by all sessions before reading pauses (backpressure)"},
    {"inject.require_from", CONF_BOOL, OFF(inject_require_from), "true", 0, 0,
     "refuse (550 5.6.0) a message without a From header or with several (RFC 5322 3.6)"},
    {"inject.add_message_id", CONF_BOOL, OFF(inject_add_message_id), "true", 0, 0,
     "add a Message-ID header to a message that has none"},
    {"inject.add_date", CONF_BOOL, OFF(inject_add_date), "true", 0, 0,
     "add a Date header to a message that has none"},

    {"delivery.enabled", CONF_BOOL, OFF(delivery_enabled), "true", 0, 0,
     "deliver mail; false makes an accept-only node (mail stays queued until true)"},
    {"delivery.workers", CONF_INT, OFF(delivery_workers), "1", 1, 64,
     "delivery threads; each owns the destination domains that hash to it"},
    {"delivery.helo_name", CONF_STR, OFF(delivery_helo_name), "", 0, 0,
     "our EHLO name; empty uses inject.hostname or the system host name"},
    {"delivery.source_address", CONF_STR, OFF(delivery_source_address), "", 0, 0,
     "local address outgoing connections are bound to; empty lets the kernel choose"},
    {"delivery.port", CONF_INT, OFF(delivery_port), "25", 1, 65535,
     "TCP port of remote mail hosts (25; tests use others)"},
    {"delivery.tls", CONF_STR, OFF(delivery_tls), "opportunistic", 0, 0,
     "STARTTLS policy: off, opportunistic (plain text after a failed handshake), required"},
    {"delivery.max_ready", CONF_INT, OFF(delivery_max_ready), "50000", 100, 10000000,
     "recipients held in memory for delivery; the rest wait on disk in the due index"},
    {"delivery.max_connections_per_site", CONF_INT, OFF(delivery_max_conn_site), "20", 1, 10000,
     "concurrent connections to one site (a group of domains sharing MX hosts)"},
    {"delivery.max_connections_per_domain", CONF_INT, OFF(delivery_max_conn_domain), "20", 1, 10000,
     "concurrent transactions for one recipient domain"},
    {"delivery.max_messages_per_connection", CONF_INT, OFF(delivery_max_msgs_per_conn), "100", 1,
     100000, "messages sent over one connection before it is closed"},
    {"delivery.pipeline_next_message", CONF_BOOL, OFF(delivery_pipeline_next), "true", 0, 0,
     "with PIPELINING, send the next message's commands behind this one's final \".\""},
    {"delivery.eightbit", CONF_STR, OFF(delivery_eightbit), "convert", 0, 0,
     "8-bit message to a host without 8BITMIME: convert (to quoted-printable, before "
     "signing) or bounce (554 5.6.3)"},
    {"delivery.dsn", CONF_BOOL, OFF(delivery_dsn), "false", 0, 0,
     "RFC 3464 notice (DSN) to the sender when a recipient bounces or expires"},
    {"delivery.max_recipients_per_transaction", CONF_INT, OFF(delivery_max_rcpts_per_txn), "100", 1,
     10000, "recipients of one domain per SMTP transaction"},
    {"delivery.idle_timeout", CONF_INT, OFF(delivery_idle_timeout), "5", 0, 3600,
     "seconds an idle connection waits for more mail before QUIT"},
    {"delivery.retry_schedule", CONF_STR, OFF(delivery_retry_schedule), "5m,10m,20m,40m,1h", 0, 0,
     "waits between tries (s, m, h, d suffixes); the last one repeats"},
    {"delivery.max_age", CONF_INT, OFF(delivery_max_age), "432000", 1, 31536000,
     "seconds a message may wait before undelivered recipients expire (5 days)"},
    {"delivery.site_down_seconds", CONF_INT, OFF(delivery_site_down_s), "60", 1, 86400,
     "after no MX host of a site could be reached, wait this long before trying it again"},
    {"delivery.site_patterns", CONF_STRLIST, OFF(delivery_site_patterns), "", 0, CONF_MAX_LIST,
     "\"name=glob\" entries: domains whose first MX host matches glob share site name"},
    {"delivery.timeout_connect", CONF_INT, OFF(delivery_timeout_connect), "30", 1, 3600,
     "seconds to establish a TCP connection"},
    {"delivery.timeout_greeting", CONF_INT, OFF(delivery_timeout_greeting), "300", 1, 3600,
     "seconds to wait for the banner (RFC 5321 4.5.3.2.1)"},
    {"delivery.timeout_command", CONF_INT, OFF(delivery_timeout_command), "300", 1, 3600,
     "seconds to wait for replies to EHLO, STARTTLS, MAIL, RCPT, RSET (4.5.3.2.2-3)"},
    {"delivery.timeout_data_init", CONF_INT, OFF(delivery_timeout_data_init), "120", 1, 3600,
     "seconds to wait for the 354 (4.5.3.2.4)"},
    {"delivery.timeout_data_block", CONF_INT, OFF(delivery_timeout_data_block), "180", 1, 3600,
     "seconds a block of message text may take to send (4.5.3.2.5)"},
    {"delivery.timeout_data_done", CONF_INT, OFF(delivery_timeout_data_done), "600", 1, 3600,
     "seconds to wait for the reply after the final dot (4.5.3.2.6)"},

    {"shaping.rules_file", CONF_STR, OFF(shaping_rules_file), "", 0, 0,
     "traffic shaping rules, sources and pools (see conf/shaping.conf); reread on "
     "SIGHUP; empty = built-in defaults (one source, no rates, no response rules)"},

    {"dkim.keys", CONF_STRLIST, OFF(dkim_keys), "", 0, CONF_MAX_LIST,
     "\"domain:selector:/path/key.pem\" signing keys (RSA 1024-4096 or Ed25519, PEM): a "
     "message is signed with the key of its From domain, else of the closest parent "
     "domain (relaxed DMARC alignment); several keys of one domain all sign; loaded at "
     "start and on SIGHUP"},
    {"dkim.always", CONF_STRLIST, OFF(dkim_always), "", 0, CONF_MAX_LIST,
     "\"domain:selector:/path/key.pem\" keys that also sign every message (e.g. the "
     "sending platform's own domain)"},
    {"dkim.headers", CONF_STRLIST, OFF(dkim_headers), "", 0, CONF_MAX_LIST,
     "header field names to sign, each once per occurrence in the message (empty = "
     "the built-in list: From, To, Cc, Subject, Date, Message-ID, Reply-To, "
     "In-Reply-To, References, MIME, List-* and Feedback-ID, Sender); From is always "
     "signed, and once more than it occurs"},
    {"dkim.canonicalization", CONF_STR, OFF(dkim_canonicalization), "relaxed/relaxed", 0, 0,
     "header/body canonicalization: relaxed/relaxed, relaxed/simple, simple/relaxed or "
     "simple/simple"},
    {"dkim.sign_threads", CONF_INT, OFF(dkim_sign_threads), "1", 0, 64,
     "DKIM signing threads beside the delivery threads (read at start); 0 = the "
     "delivery threads sign.  Pays off with RSA keys (~1 ms of CPU a signature)"},
    {"dkim.expire_seconds", CONF_INT, OFF(dkim_expire_seconds), "0", 0, 31536000,
     "signature lifetime (x= tag) in seconds after signing; 0 = no x= tag"},

    {"feedback.secret", CONF_STR, OFF(feedback_secret), "", 0, 0,
     "HMAC key (16+ characters) signing VERP return paths and unsubscribe links; empty "
     "turns VERP, unsubscribe links and the one-click endpoint off"},
    {"feedback.bounce_domain", CONF_STR, OFF(feedback_bounce_domain), "", 0, 0,
     "domain of VERP return paths (<prefix>+<token>@this); empty = no VERP unless "
     "bounce_domains names the sender's domain"},
    {"feedback.bounce_domains", CONF_STRLIST, OFF(feedback_bounce_domains), "", 0,
     CONF_MAX_LIST, "\"senderdomain=bouncedomain\" entries: per sender domain VERP domains"},
    {"feedback.verp_prefix", CONF_STR, OFF(feedback_verp_prefix), "bounce", 0, 0,
     "local part before the '+' of VERP return paths"},
    {"feedback.domains", CONF_STRLIST, OFF(feedback_domains), "", 0, CONF_MAX_LIST,
     "more domains the feedback listener takes mail for (feedback-loop reports); the "
     "bounce domains always are"},
    {"feedback.listen", CONF_STRLIST, OFF(feedback_listen), "", 0, CONF_MAX_LISTEN,
     "\"ip:port\" SMTP listeners for bounces, complaints and mailto unsubscribes (never "
     "a relay); inject.* limits apply"},
    {"feedback.http_listen", CONF_STR, OFF(feedback_http_listen), "", 0, 0,
     "\"ip:port\" of the HTTP endpoint (one-click unsubscribe, /health, /metrics); empty = off"},
    {"feedback.unsubscribe_url", CONF_STR, OFF(feedback_unsubscribe_url), "", 0, 0,
     "public base URL of the one-click endpoint, e.g. \"https://unsub.example.com/unsubscribe/\""},
    {"feedback.list_unsubscribe", CONF_BOOL, OFF(feedback_list_unsubscribe), "true", 0, 0,
     "add List-Unsubscribe (URL and mailto) and List-Unsubscribe-Post to mail with a "
     "campaign or list, when the secret and a URL or bounce domain are set"},
    {"feedback.classify_rules", CONF_STR, OFF(feedback_classify_rules), "", 0, 0,
     "bounce classification rules (see conf/bounce-rules.conf); reread on SIGHUP; empty "
     "= built-in enhanced-status defaults"},
    {"feedback.suppress_hard_bounces", CONF_BOOL, OFF(feedback_suppress_hard), "true", 0, 0,
     "suppress an address after a hard bounce (during delivery or by DSN)"},
    {"feedback.suppress_complaints", CONF_BOOL, OFF(feedback_suppress_complaints), "true", 0, 0,
     "suppress an address after a complaint (ARF feedback report)"},
    {"feedback.soft_bounce_limit", CONF_INT, OFF(feedback_soft_limit), "5", 0, 1000,
     "suppress an address after this many soft bounces within soft_bounce_days; 0 = never"},
    {"feedback.soft_bounce_days", CONF_INT, OFF(feedback_soft_days), "7", 1, 365,
     "the window soft_bounce_limit counts in (days)"},
    {"feedback.sent_retention", CONF_INT, OFF(feedback_sent_retention), "604800", 3600, 31536000,
     "seconds a delivered recipient is remembered so a late bounce or complaint maps to "
     "its message and campaign (7 days)"},
    {"suppress.at_injection", CONF_STR, OFF(suppress_at_injection), "refuse", 0, 0,
     "a suppressed recipient at injection: refuse (550 5.7.1 at RCPT) or drop (accept, "
     "record, never send)"},

    {"dns.servers", CONF_STRLIST, OFF(dns_servers), "", 0, CONF_MAX_LIST,
     "\"ip[:port]\" resolvers to use instead of /etc/resolv.conf; empty = resolv.conf"},
    {"dns.timeout_ms", CONF_INT, OFF(dns_timeout_ms), "2000", 10, 60000,
     "milliseconds before a DNS query is retried"},
    {"dns.tries", CONF_INT, OFF(dns_tries), "2", 1, 10, "DNS tries per server"},
    {"dns.min_ttl", CONF_INT, OFF(dns_min_ttl), "60", 0, 86400,
     "shortest time an MX answer is cached (seconds)"},
    {"dns.max_ttl", CONF_INT, OFF(dns_max_ttl), "86400", 1, 604800,
     "longest time an MX answer is cached (seconds)"},
    {"dns.neg_ttl", CONF_INT, OFF(dns_neg_ttl), "300", 0, 86400,
     "how long NXDOMAIN, null MX and no-address answers are cached (seconds)"},

    {"control.socket", CONF_STR, OFF(control_socket), "/run/volley/control.sock", 0, 0,
     "volleyctl's unix socket"},
    {"control.mode", CONF_MODE, OFF(control_mode), "0600", 0, 0777,
     "permissions of the control socket (octal string)"},

    {"log.dir", CONF_STR, OFF(log_dir), "/var/log/volley", 0, 0,
     "directory of volleyd.log (JSON lines); reopened on SIGHUP"},
    {"log.level", CONF_LEVEL, OFF(log_level), "info", 0, 0,
     "lowest level logged: debug, info, notice, warning, error"},

    {"daemon.pid_file", CONF_STR, OFF(pid_file), "/run/volley/volleyd.pid", 0, 0,
     "pid file written at start; empty disables it"},
};

static int conf_parse_retry(const char *text, int64_t *out, int *count, char *why, size_t whysz);

static const char *const conf_levels[] = {"debug", "info", "notice", "warning", "error"};

/* conf_set_err - format "file:line: key: reason" into err */
static void conf_set_err(char *err, size_t errsz, const char *file, int line, const char *key,
                         const char *reason)
{
    if (line > 0)
        snprintf(err, errsz, "%s:%d: %s: %s", file, line, key, reason);
    else
        snprintf(err, errsz, "%s: %s: %s", file, key, reason);
}

/* conf_parse_mode - octal text to a mode, -1 when not octal or above 0777 */
static int64_t conf_parse_mode(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 8);
    if (errno || end == s || *end || v < 0 || v > 0777) return -1;
    return v;
}

/* conf_parse_int - decimal text to int64; -1 on error (defaults only: table text) */
static int conf_parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

/* conf_strlist_free - free a string list field and zero its count */
static void conf_strlist_free(struct conf *c, const struct conf_key *k)
{
    char **list = (char **)((char *)c + k->offset);
    int *count = (int *)(list + CONF_MAX_LIST);
    for (int i = 0; i < *count; i++) {
        free(list[i]);
        list[i] = NULL;
    }
    *count = 0;
}

/* conf_apply_default - set key k of c to its table default */
static void conf_apply_default(struct conf *c, const struct conf_key *k)
{
    void *field = (char *)c + k->offset;
    switch (k->type) {
    case CONF_STR:
    case CONF_LEVEL:
        free(*(char **)field);
        *(char **)field = xstrdup(k->def);
        break;
    case CONF_INT: {
        int64_t v = 0;
        int rc = conf_parse_int(k->def, &v);
        (void)rc;
        *(int64_t *)field = v;
        break;
    }
    case CONF_MODE:
        *(int64_t *)field = conf_parse_mode(k->def);
        break;
    case CONF_BOOL:
        *(bool *)field = strcmp(k->def, "true") == 0;
        break;
    case CONF_STRLIST:
        conf_strlist_free(c, k);
        break;
    }
}

struct conf *conf_defaults(void)
{
    struct conf *c = xcalloc(1, sizeof *c);
    for (size_t i = 0; i < ARRAY_LEN(conf_keys); i++)
        conf_apply_default(c, &conf_keys[i]);
    c->source_file = xstrdup("(defaults)");
    char why[200];
    conf_parse_retry(c->delivery_retry_schedule, c->delivery_retry, &c->delivery_retry_count, why,
                     sizeof why);
    return c;
}

/* conf_apply_setting - validate setting s against key k and store it; -1 + err */
static int conf_apply_setting(struct conf *c, const struct conf_key *k, config_setting_t *s,
                              const char *file, char *err, size_t errsz)
{
    void *field = (char *)c + k->offset;
    int line = (int)config_setting_source_line(s);
    int t = config_setting_type(s);
    char reason[256];

    switch (k->type) {
    case CONF_STR:
        if (t != CONFIG_TYPE_STRING) goto want_string;
        free(*(char **)field);
        *(char **)field = xstrdup(config_setting_get_string(s));
        return 0;
    case CONF_LEVEL: {
        if (t != CONFIG_TYPE_STRING) goto want_string;
        const char *v = config_setting_get_string(s);
        for (size_t i = 0; i < ARRAY_LEN(conf_levels); i++) {
            if (strcmp(v, conf_levels[i]) == 0) {
                free(*(char **)field);
                *(char **)field = xstrdup(v);
                return 0;
            }
        }
        snprintf(reason, sizeof reason,
                 "unknown level \"%s\" (use debug, info, notice, warning or error)", v);
        conf_set_err(err, errsz, file, line, k->path, reason);
        return -1;
    }
    case CONF_INT: {
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) {
            conf_set_err(err, errsz, file, line, k->path, "must be an integer");
            return -1;
        }
        long long v = config_setting_get_int64(s);
        if (v < k->min || v > k->max) {
            snprintf(reason, sizeof reason, "must be between %lld and %lld (got %lld)",
                     (long long)k->min, (long long)k->max, v);
            conf_set_err(err, errsz, file, line, k->path, reason);
            return -1;
        }
        *(int64_t *)field = v;
        return 0;
    }
    case CONF_MODE: {
        if (t != CONFIG_TYPE_STRING) {
            conf_set_err(err, errsz, file, line, k->path,
                         "must be an octal mode in quotes, e.g. \"0660\"");
            return -1;
        }
        int64_t m = conf_parse_mode(config_setting_get_string(s));
        if (m < 0) {
            snprintf(reason, sizeof reason, "\"%s\" is not an octal mode between 0 and 0777",
                     config_setting_get_string(s));
            conf_set_err(err, errsz, file, line, k->path, reason);
            return -1;
        }
        *(int64_t *)field = m;
        return 0;
    }
    case CONF_BOOL:
        if (t != CONFIG_TYPE_BOOL) {
            conf_set_err(err, errsz, file, line, k->path, "must be true or false");
            return -1;
        }
        *(bool *)field = config_setting_get_bool(s);
        return 0;
    case CONF_STRLIST: {
        char **list = (char **)field;
        int *count = (int *)(list + CONF_MAX_LIST);
        if (t == CONFIG_TYPE_STRING) {
            conf_strlist_free(c, k);
            if (*config_setting_get_string(s)) {
                list[0] = xstrdup(config_setting_get_string(s));
                *count = 1;
            }
            return 0;
        }
        if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
            conf_set_err(err, errsz, file, line, k->path, "must be a list of strings");
            return -1;
        }
        int n = config_setting_length(s);
        if (n > k->max) {
            snprintf(reason, sizeof reason, "at most %lld entries (got %d)", (long long)k->max, n);
            conf_set_err(err, errsz, file, line, k->path, reason);
            return -1;
        }
        conf_strlist_free(c, k);
        for (int i = 0; i < n; i++) {
            config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
            if (config_setting_type(e) != CONFIG_TYPE_STRING) {
                conf_set_err(err, errsz, file, line, k->path, "must be a list of strings");
                return -1;
            }
            list[(*count)++] = xstrdup(config_setting_get_string(e));
        }
        return 0;
    }
    }
    return -1;

want_string:
    conf_set_err(err, errsz, file, line, k->path, "must be a string in double quotes");
    return -1;
}

/* conf_find_key - the table row for a dotted path, or NULL */
static const struct conf_key *conf_find_key(const char *path)
{
    for (size_t i = 0; i < ARRAY_LEN(conf_keys); i++)
        if (strcmp(conf_keys[i].path, path) == 0) return &conf_keys[i];
    return NULL;
}

/* conf_is_group - 1 if path is the prefix group of some key ("spool") */
static int conf_is_group(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < ARRAY_LEN(conf_keys); i++)
        if (strncmp(conf_keys[i].path, path, n) == 0 && conf_keys[i].path[n] == '.') return 1;
    return 0;
}

/*
 * conf_walk - visit every setting below group g (path prefix pfx), refusing unknown
 * names, and apply known ones.  Unknown keys are errors rather than warnings because
 * a misspelt limit silently left at its default is how outages start.
 */
static int conf_walk(struct conf *c, config_setting_t *g, const char *pfx, const char *file,
                     char *err, size_t errsz)
{
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        char path[256];
        if (!name) continue;
        snprintf(path, sizeof path, "%s%s%s", pfx, *pfx ? "." : "", name);
        int line = (int)config_setting_source_line(s);
        if (config_setting_type(s) == CONFIG_TYPE_GROUP) {
            if (!conf_is_group(path)) {
                conf_set_err(err, errsz, file, line, path, "unknown section");
                return -1;
            }
            if (conf_walk(c, s, path, file, err, errsz) < 0) return -1;
            continue;
        }
        const struct conf_key *k = conf_find_key(path);
        if (!k) {
            conf_set_err(err, errsz, file, line, path, "unknown key");
            return -1;
        }
        if (conf_apply_setting(c, k, s, file, err, errsz) < 0) return -1;
    }
    return 0;
}

/* conf_key_line - source line of a key in cfg, 0 when it came from the defaults */
static int conf_key_line(config_t *cfg, const char *key)
{
    config_setting_t *s = config_lookup(cfg, key);
    return s ? (int)config_setting_source_line(s) : 0;
}

/*
 * conf_parse_retry - "5m,10m,1h" into seconds; -1 with a reason on bad syntax.
 * Suffixes s, m, h, d; a bare number is seconds.
 */
static int conf_parse_retry(const char *text, int64_t *out, int *count, char *why, size_t whysz)
{
    const char *p = text;
    *count = 0;
    while (*p) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v <= 0) {
            snprintf(why, whysz, "\"%s\": each wait must be a positive number", text);
            return -1;
        }
        int64_t mult = 1;
        switch (*end) {
        case 's':
            mult = 1;
            end++;
            break;
        case 'm':
            mult = 60;
            end++;
            break;
        case 'h':
            mult = 3600;
            end++;
            break;
        case 'd':
            mult = 86400;
            end++;
            break;
        default:
            break;
        }
        if (*count == CONF_MAX_RETRY) {
            snprintf(why, whysz, "at most %d waits", CONF_MAX_RETRY);
            return -1;
        }
        if (v > 31536000 / mult) {
            snprintf(why, whysz, "\"%s\": a wait is longer than a year", text);
            return -1;
        }
        out[(*count)++] = v * mult;
        while (*end == ' ')
            end++;
        if (*end == ',')
            end++;
        else if (*end) {
            snprintf(why, whysz, "\"%s\": expected e.g. \"5m,10m,1h\"", text);
            return -1;
        }
        while (*end == ' ')
            end++;
        p = end;
    }
    if (*count == 0) {
        snprintf(why, whysz, "must list at least one wait");
        return -1;
    }
    return 0;
}

/* conf_check_feedback - cross-field checks of the feedback and suppress sections */
static int conf_check_feedback(struct conf *c, config_t *cfg, const char *path, char *err,
                               size_t errsz)
{
    char why[200];
    const char *key = NULL;
    size_t sl = strlen(c->feedback_secret), pl = strlen(c->feedback_verp_prefix);
    if (sl > 0 && sl < 16) {
        key = "feedback.secret";
        snprintf(why, sizeof why, "must be at least 16 characters (or empty)");
    }
    if (!key && (pl == 0 || pl > 24 ||
                 strspn(c->feedback_verp_prefix, "abcdefghijklmnopqrstuvwxyz0123456789._-") != pl)) {
        key = "feedback.verp_prefix";
        snprintf(why, sizeof why, "use 1-24 of a-z 0-9 . _ -");
    }
    for (int i = 0; !key && i < c->feedback_bounce_domains_count; i++) {
        const char *e = c->feedback_bounce_domains[i], *eq = strchr(e, '=');
        if (!eq || eq == e || !eq[1]) {
            key = "feedback.bounce_domains";
            snprintf(why, sizeof why, "\"%.100s\" is not senderdomain=bouncedomain", e);
        }
    }
    if (!key && strcmp(c->delivery_eightbit, "convert") && strcmp(c->delivery_eightbit, "bounce")) {
        key = "delivery.eightbit";
        snprintf(why, sizeof why, "must be convert or bounce");
    }
    const char *cz = c->dkim_canonicalization;
    if (!key && strcmp(cz, "relaxed/relaxed") && strcmp(cz, "relaxed/simple") &&
        strcmp(cz, "simple/relaxed") && strcmp(cz, "simple/simple")) {
        key = "dkim.canonicalization";
        snprintf(why, sizeof why, "must be relaxed/relaxed, relaxed/simple, simple/relaxed or "
                                  "simple/simple");
    }
    for (int k = 0; !key && k < c->dkim_headers_count; k++) {
        if (!dkim_header_name_ok(c->dkim_headers[k])) {
            key = "dkim.headers";
            snprintf(why, sizeof why, "\"%.100s\" is not a header field name",
                     c->dkim_headers[k]);
        }
    }
    for (int k = 0; !key && k < c->dkim_keys_count + c->dkim_always_count; k++) {
        const char *e = k < c->dkim_keys_count ? c->dkim_keys[k]
                                               : c->dkim_always[k - c->dkim_keys_count];
        const char *c1 = strchr(e, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c1 || c1 == e || !c2 || c2 == c1 + 1 || !c2[1]) {
            key = k < c->dkim_keys_count ? "dkim.keys" : "dkim.always";
            snprintf(why, sizeof why, "\"%.100s\" is not domain:selector:/path/key.pem", e);
        }
    }
    if (!key && strcmp(c->suppress_at_injection, "refuse") &&
        strcmp(c->suppress_at_injection, "drop")) {
        key = "suppress.at_injection";
        snprintf(why, sizeof why, "must be refuse or drop");
    }
    if (!key && (c->feedback_listen_count || *c->feedback_unsubscribe_url ||
                 *c->feedback_http_listen) && !sl) {
        key = "feedback.secret";
        snprintf(why, sizeof why, "needed by feedback.listen, http_listen and unsubscribe_url");
    }
    if (!key) return 0;
    conf_set_err(err, errsz, path, conf_key_line(cfg, key), key, why);
    return -1;
}

/* conf_check_delivery - cross-field checks of the delivery and dns sections */
static int conf_check_delivery(struct conf *c, config_t *cfg, const char *path, char *err,
                               size_t errsz)
{
    char why[200];
    if (conf_parse_retry(c->delivery_retry_schedule, c->delivery_retry, &c->delivery_retry_count,
                         why, sizeof why) < 0) {
        conf_set_err(err, errsz, path, conf_key_line(cfg, "delivery.retry_schedule"),
                     "delivery.retry_schedule", why);
        return -1;
    }
    const char *t = c->delivery_tls;
    if (strcmp(t, "off") && strcmp(t, "opportunistic") && strcmp(t, "required")) {
        conf_set_err(err, errsz, path, conf_key_line(cfg, "delivery.tls"), "delivery.tls",
                     "must be off, opportunistic or required");
        return -1;
    }
    for (int i = 0; i < c->delivery_site_patterns_count; i++) {
        const char *eq = strchr(c->delivery_site_patterns[i], '=');
        if (!eq || eq == c->delivery_site_patterns[i] || !eq[1]) {
            snprintf(why, sizeof why, "\"%s\" is not name=glob", c->delivery_site_patterns[i]);
            conf_set_err(err, errsz, path, conf_key_line(cfg, "delivery.site_patterns"),
                         "delivery.site_patterns", why);
            return -1;
        }
    }
    return conf_check_feedback(c, cfg, path, err, errsz);
}

struct conf *conf_load(const char *path, char *err, size_t errsz)
{
    config_t cfg;
    config_init(&cfg);
    if (access(path, R_OK) < 0) {
        snprintf(err, errsz, "%s: cannot read: %s", path, strerror(errno));
        config_destroy(&cfg);
        return NULL;
    }
    if (config_read_file(&cfg, path) != CONFIG_TRUE) {
        const char *f = config_error_file(&cfg);
        snprintf(err, errsz, "%s:%d: syntax error: %s", f ? f : path, config_error_line(&cfg),
                 config_error_text(&cfg));
        config_destroy(&cfg);
        return NULL;
    }
    struct conf *c = conf_defaults();
    free(c->source_file);
    c->source_file = xstrdup(path);
    if (conf_walk(c, config_root_setting(&cfg), "", path, err, errsz) < 0) {
        config_destroy(&cfg);
        conf_free(c);
        return NULL;
    }
    if (conf_check_delivery(c, &cfg, path, err, errsz) < 0) {
        config_destroy(&cfg);
        conf_free(c);
        return NULL;
    }
    static const char *const required[] = {"spool.dir", "control.socket", "log.dir"};
    for (size_t i = 0; i < ARRAY_LEN(required); i++) {
        const struct conf_key *k = conf_find_key(required[i]);
        if (**(char **)((char *)c + k->offset)) continue;
        config_setting_t *s = config_lookup(&cfg, required[i]);
        conf_set_err(err, errsz, path, s ? (int)config_setting_source_line(s) : 0, required[i],
                     "must not be empty");
        config_destroy(&cfg);
        conf_free(c);
        return NULL;
    }
    config_destroy(&cfg);
    return c;
}

void conf_free(struct conf *c)
{
    if (!c) return;
    for (size_t i = 0; i < ARRAY_LEN(conf_keys); i++) {
        const struct conf_key *k = &conf_keys[i];
        void *field = (char *)c + k->offset;
        if (k->type == CONF_STR || k->type == CONF_LEVEL)
            free(*(char **)field);
        else if (k->type == CONF_STRLIST)
            conf_strlist_free(c, k);
    }
    free(c->source_file);
    free(c);
}

void conf_print_defaults(int fd)
{
    FILE *f = fdopen(dup(fd), "w");
    if (!f) return;
    const char *group = "";
    size_t glen = 0;
    for (size_t i = 0; i < ARRAY_LEN(conf_keys); i++) {
        const struct conf_key *k = &conf_keys[i];
        const char *dot = strchr(k->path, '.');
        size_t len = (size_t)(dot - k->path);
        if (len != glen || strncmp(group, k->path, len) != 0) {
            if (glen) fprintf(f, "};\n\n");
            fprintf(f, "%.*s: {\n", (int)len, k->path);
            group = k->path;
            glen = len;
        }
        fprintf(f, "    # %s\n", k->doc);
        switch (k->type) {
        case CONF_STR:
        case CONF_LEVEL:
        case CONF_MODE:
            fprintf(f, "    %s = \"%s\";\n", dot + 1, k->def);
            break;
        case CONF_INT:
            fprintf(f, "    %s = %s;    # %lld..%lld\n", dot + 1, k->def, (long long)k->min,
                    (long long)k->max);
            break;
        case CONF_BOOL:
            fprintf(f, "    %s = %s;\n", dot + 1, k->def);
            break;
        case CONF_STRLIST:
            fprintf(f, "    %s = [ ];\n", dot + 1);
            break;
        }
    }
    if (glen) fprintf(f, "};\n");
    fclose(f);
}
