/*
 * cfgfile - the libconfig plumbing shared by the strict rules-file loaders
 * (shape.c's shaping rules, bounce_class.c's classifier rules).
 *
 * Owns: reading a file into a config_t with the loaders' "cannot read" and
 * "syntax error" texts, and refusing anything else in the one shape both loaders
 * promise their operators: "file:line: key: reason", where file is the file
 * libconfig read the setting from (an @include may differ from the path given).
 * Also the typed getters (string, integer, bool, name) and the list and key-path
 * helpers whose wording the loaders' error messages and tests share.
 *
 * Why a module: both loaders refuse the whole file on the first bad key, and an
 * operator reading either error should see the same form; one copy keeps the two
 * from drifting apart.  The loader-specific value grammars (durations, rates,
 * categories, status codes) stay with their loaders.
 *
 * Invariants: pure and allocation-free (library style: errors are returned, never
 * an abort), so bounce_class.c stays usable from the fuzzers.  Every function that
 * can fail returns -1 with ld->err set (when ld->err is non-NULL), 0 on success.
 */
#ifndef VOLLEY_CFGFILE_H
#define VOLLEY_CFGFILE_H

#include <libconfig.h>
#include <stdbool.h>
#include <stddef.h>

/* one load in progress: the path given and where its error text goes */
struct cfgfile_ld {
    const char *path;
    char *err; /* may be NULL: errors are then only returned */
    size_t errlen;
};

/*
 * cfgfile_read - access path and parse it into cfg (config_init is done here).
 * On success the caller owns cfg and must config_destroy it; on failure cfg is
 * already destroyed and err holds "path: cannot read: ..." or
 * "file:line: syntax error: ...".
 */
int cfgfile_read(config_t *cfg, const char *path, char *err, size_t errlen);

/* cfgfile_fail - "file:line: key: reason" (reason from fmt) into ld->err; returns -1 */
int cfgfile_fail(const struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* cfgfile_key - "pfx.name" (or name when pfx is "") into buf, "..." when cut; buf */
const char *cfgfile_key(char *buf, size_t n, const char *pfx, const char *name);

/* cfgfile_known_keys - refuse a member of group g not among known[0..nknown) */
int cfgfile_known_keys(const struct cfgfile_ld *ld, const config_setting_t *g,
                       const char *const *known, size_t nknown);

/* cfgfile_is_list - a ( ) list, or an empty [ ] array */
bool cfgfile_is_list(const config_setting_t *s);

/* cfgfile_is_seq - a [ ] array or a ( ) list (lists of scalars may be either) */
bool cfgfile_is_seq(const config_setting_t *s);

/* cfgfile_list_len - entries of the list s (at most max), or -1 when not a list or too long */
int cfgfile_list_len(const struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                     int max);

/* cfgfile_name_ok - a name of 1..max-1 of [A-Za-z0-9._-] (no ':' and no space) */
bool cfgfile_name_ok(const char *s, size_t max);

/* cfgfile_get_str - a string setting; *out points into the config, valid while it lives */
int cfgfile_get_str(const struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                    const char **out);

/* cfgfile_copy_str - a string setting of at most max - 1 bytes copied into out */
int cfgfile_copy_str(const struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                     char *out, size_t max);

/* cfgfile_get_int - an integer setting within [min, max] */
int cfgfile_get_int(const struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                    long long min, long long max, long long *out);

/* cfgfile_get_bool - a true/false setting */
int cfgfile_get_bool(const struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                     bool *out);

#endif
