/*
 * vctl_feedback - volleyctl's suppression and bounce commands: `suppress add |
 * remove | check | list | export | import`, `forget`, and `bounce parse | ingest`.
 *
 * Entry points: vctl_feedback_cmd() tells main() which command words are ours;
 * vctl_feedback_main() runs one of them and returns the exit status (0 success, 1
 * failure, 2 bad usage, as for every volleyctl command).
 *
 * The second half of this header is what volleyctl.c lends these commands: usage
 * errors, option parsing, finding the config and socket, the control-socket
 * exchange and the terminal-safe cleaning of outside text.
 */
#ifndef VOLLEY_VCTL_FEEDBACK_H
#define VOLLEY_VCTL_FEEDBACK_H

#include <jansson.h>
#include <stddef.h>

struct conf;

/* vctl_feedback_cmd - 1 if word is "suppress", "forget" or "bounce" */
int vctl_feedback_cmd(const char *word);

/*
 * vctl_feedback_main - run the command argv[0] (a word vctl_feedback_cmd accepts)
 * with its arguments argv[1..argc); socket_opt and config are the global -s and
 * -c options (NULL when absent).  Returns the exit status.
 */
int vctl_feedback_main(int argc, char **argv, const char *socket_opt, const char *config);

/* ---- exported by volleyctl.c */

/* vctl_usage_exit - print the usage text to stderr and exit 2 */
_Noreturn void vctl_usage_exit(void);
/* vctl_usage_error - print "volleyctl: <why>", then the usage text, and exit 2 */
_Noreturn void vctl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* vctl_optval - match "name VALUE" or "name=VALUE" at argv[*i]; 1 with *val, else 0 */
int vctl_optval(const char *name, int argc, char **argv, int *i, const char **val);
/* vctl_parse_count - option opt's value s as a whole number in 1..max, or exit 2 */
long long vctl_parse_count(const char *opt, const char *s, long long max);
/* vctl_conf_path - the config file volleyctl reads (-c, $VOLLEY_CONF, the default
 * if it exists); NULL when there is none */
const char *vctl_conf_path(const char *config);
/* vctl_conf_load - the config of vctl_conf_path, or the defaults when there is
 * none; NULL after an error message */
struct conf *vctl_conf_load(const char *config);
/* vctl_socket_path - the control socket (-s, else from the config); caller frees;
 * NULL after an error message */
char *vctl_socket_path(const char *socket_opt, const char *config);
/* vctl_call - send req, return the ok:true reply (caller decrefs) or NULL after an
 * error message */
json_t *vctl_call(const char *path, json_t *req, int timeout_s);
/* vctl_oom - print "volleyctl: out of memory" and exit 1 */
_Noreturn void vctl_oom(void);
/* vctl_width - display columns of s, one per UTF-8 code point */
size_t vctl_width(const char *s);
/* vctl_clean_line - a one-line copy of s with control characters escaped; caller frees */
char *vctl_clean_line(const char *s);

#endif
