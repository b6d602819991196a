/*
 * conf - the daemon's configuration: one table of keys (name, type, default,
 * bounds, doc) read from a libconfig file.
 *
 * The table in conf.c is the single source of truth: the parser walks it, unknown
 * keys are refused, and `volleyd --print-defaults` prints it, which is how
 * conf/volley.conf is kept honest.  A bad file is refused with "file:line: key:
 * reason".  The parsed struct conf is immutable once loaded; a reload builds a new
 * one.
 */
#ifndef VOLLEY_CONF_H
#define VOLLEY_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONF_MAX_LISTEN 8
#define CONF_MAX_LIST 32
#define CONF_MAX_RETRY 16

struct conf {
    /* spool */
    char *spool_dir;
    int64_t spool_map_size_mb;
    int64_t spool_reserve_percent;
    int64_t spool_group_commit_usec;
    int64_t spool_group_commit_max;
    bool spool_sync;

    /* inject */
    char *inject_unix_socket;
    int64_t inject_unix_mode;
    char *inject_unix_group;
    char *inject_tcp_listen[CONF_MAX_LIST];
    int inject_tcp_listen_count;
    char *inject_hostname;
    int64_t inject_max_connections;
    int64_t inject_max_message_size;
    int64_t inject_max_recipients;
    int64_t inject_max_errors;
    int64_t inject_pregreet_ms;
    int64_t inject_timeout_command;
    int64_t inject_timeout_data;
    int64_t inject_max_inflight_mb;
    bool inject_require_from;
    bool inject_add_message_id;
    bool inject_add_date;

    /* delivery */
    bool delivery_enabled;
    int64_t delivery_workers;
    char *delivery_helo_name;
    char *delivery_source_address;
    int64_t delivery_port;
    char *delivery_tls;
    int64_t delivery_max_ready;
    int64_t delivery_max_conn_site;
    int64_t delivery_max_conn_domain;
    int64_t delivery_max_msgs_per_conn;
    bool delivery_pipeline_next;
    bool delivery_dsn;
    char *shaping_rules_file;
    int64_t delivery_max_rcpts_per_txn;
    int64_t delivery_idle_timeout;
    char *delivery_retry_schedule;
    int64_t delivery_retry[CONF_MAX_RETRY]; /* parsed retry_schedule, seconds */
    int delivery_retry_count;
    int64_t delivery_max_age;
    int64_t delivery_site_down_s;
    char *delivery_site_patterns[CONF_MAX_LIST];
    int delivery_site_patterns_count;
    int64_t delivery_timeout_connect;
    int64_t delivery_timeout_greeting;
    int64_t delivery_timeout_command;
    int64_t delivery_timeout_data_init;
    int64_t delivery_timeout_data_block;
    int64_t delivery_timeout_data_done;

    /* dns */
    char *dns_servers[CONF_MAX_LIST];
    int dns_servers_count;
    int64_t dns_timeout_ms;
    int64_t dns_tries;
    int64_t dns_min_ttl;
    int64_t dns_max_ttl;
    int64_t dns_neg_ttl;

    /* dkim */
    char *dkim_keys[CONF_MAX_LIST];
    int dkim_keys_count;
    char *dkim_always[CONF_MAX_LIST];
    int dkim_always_count;
    char *dkim_headers[CONF_MAX_LIST];
    int dkim_headers_count;
    char *dkim_canonicalization;
    int64_t dkim_expire_seconds;
    int64_t dkim_sign_threads;
    char *delivery_eightbit;

    /* feedback */
    char *feedback_secret;
    char *feedback_bounce_domain;
    char *feedback_bounce_domains[CONF_MAX_LIST];
    int feedback_bounce_domains_count;
    char *feedback_verp_prefix;
    char *feedback_domains[CONF_MAX_LIST];
    int feedback_domains_count;
    char *feedback_listen[CONF_MAX_LIST];
    int feedback_listen_count;
    char *feedback_http_listen;
    char *feedback_unsubscribe_url;
    bool feedback_list_unsubscribe;
    char *feedback_classify_rules;
    bool feedback_suppress_hard;
    bool feedback_suppress_complaints;
    int64_t feedback_soft_limit;
    int64_t feedback_soft_days;
    int64_t feedback_sent_retention;
    char *suppress_at_injection;

    /* control */
    char *control_socket;
    int64_t control_mode;

    /* log */
    char *log_dir;
    char *log_level;

    /* daemon */
    char *pid_file;

    char *source_file; /* the file this was read from */
};

/*
 * conf_load - read and validate path into a new conf.  On failure returns NULL and
 * writes "path:line: key: reason" into err (size errsz).  Caller frees with
 * conf_free().
 */
struct conf *conf_load(const char *path, char *err, size_t errsz);

/* conf_defaults - a conf holding every default (no file); caller frees */
struct conf *conf_defaults(void);

/* conf_free - release c and every string it owns */
void conf_free(struct conf *c);

/* conf_print_defaults - write the key table as a commented config file to fd */
void conf_print_defaults(int fd);

#endif
