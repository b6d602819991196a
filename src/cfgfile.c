/*
 * cfgfile - libconfig plumbing for the strict rules-file loaders (see cfgfile.h).
 *
 * Entry points: cfgfile_read() to open a file, cfgfile_fail() for every refusal,
 * and the getters and list helpers built on it.
 *
 * Invariants: nothing here allocates or keeps state; a refusal is formatted once,
 * at the first bad setting, and the loaders stop there.
 */
#include "cfgfile.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cfgfile_read(config_t *cfg, const char *path, char *err, size_t errlen)
{
    /* access() first, so a missing or unreadable file is reported in errno's words */
    if (access(path, R_OK) < 0) {
        if (err && errlen) snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    config_init(cfg);
    if (config_read_file(cfg, path) != CONFIG_TRUE) {
        const char *f = config_error_file(cfg);
        if (err && errlen)
            snprintf(err, errlen, "%s:%d: syntax error: %s", f ? f : path, config_error_line(cfg),
                     config_error_text(cfg));
        config_destroy(cfg);
        return -1;
    }
    return 0;
}

/*
 * cfgfile_fail - the file is the one libconfig read s from, so a mistake in an
 * @include'd file is reported where it is; without a line (s NULL or synthetic)
 * the form is "file: key: reason".
 */
int cfgfile_fail(const struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                 const char *fmt, ...)
{
    char why[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (ld->err == NULL || ld->errlen == 0) return -1;
    const char *file = s ? config_setting_source_file(s) : NULL;
    int line = s ? (int)config_setting_source_line(s) : 0;
    if (file == NULL) file = ld->path;
    if (line > 0)
        snprintf(ld->err, ld->errlen, "%s:%d: %s: %s", file, line, key, why);
    else
        snprintf(ld->err, ld->errlen, "%s: %s: %s", file, key, why);
    return -1;
}

/* cfgfile_key - a cut key still names its section, and "..." says it was cut */
const char *cfgfile_key(char *buf, size_t n, const char *pfx, const char *name)
{
    if (snprintf(buf, n, "%s%s%s", pfx, *pfx ? "." : "", name) >= (int)n && n > 4)
        memcpy(buf + n - 4, "...", 4);
    return buf;
}

/* cfgfile_known_keys - a misspelt key left at its default is the mistake refused here */
int cfgfile_known_keys(const struct cfgfile_ld *ld, const config_setting_t *g,
                       const char *const *known, size_t nknown)
{
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        bool ok = false;
        for (size_t k = 0; k < nknown && !ok; k++)
            ok = strcmp(name, known[k]) == 0;
        if (!ok) return cfgfile_fail(ld, s, name, "unknown key");
    }
    return 0;
}

/* cfgfile_is_list - libconfig parses "[ ]" as an empty array, which an empty list may be */
bool cfgfile_is_list(const config_setting_t *s)
{
    int t = config_setting_type(s);
    return t == CONFIG_TYPE_LIST || (t == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0);
}

/* cfgfile_is_seq - a [ ] array or a ( ) list */
bool cfgfile_is_seq(const config_setting_t *s)
{
    int t = config_setting_type(s);
    return t == CONFIG_TYPE_LIST || t == CONFIG_TYPE_ARRAY;
}

/* cfgfile_list_len - the cap bounds what a runaway file costs before it is refused */
int cfgfile_list_len(const struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                     int max)
{
    if (!cfgfile_is_list(s)) return cfgfile_fail(ld, s, key, "must be a list ( { ... }, ... )");
    int n = config_setting_length(s);
    if (n > max) return cfgfile_fail(ld, s, key, "more than %d entries", max);
    return n;
}

/* cfgfile_name_ok - names appear in logs and verdicts, so they stay plain tokens */
bool cfgfile_name_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n >= max) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* cfgfile_get_str - the string is libconfig's: no copy, no length limit */
int cfgfile_get_str(const struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                    const char **out)
{
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return cfgfile_fail(ld, s, key, "must be a string");
    *out = config_setting_get_string(s);
    return 0;
}

/* cfgfile_copy_str - too long is refused, never cut: a cut pattern matches other things */
int cfgfile_copy_str(const struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                     char *out, size_t max)
{
    const char *v = NULL;
    if (cfgfile_get_str(ld, s, key, &v) < 0) return -1;
    if (str_copy(out, max, v) < 0)
        return cfgfile_fail(ld, s, key, "longer than %zu characters", max - 1);
    return 0;
}

/* cfgfile_get_int - INT and INT64 alike: libconfig picks by magnitude, not by the key */
int cfgfile_get_int(const struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                    long long min, long long max, long long *out)
{
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
        return cfgfile_fail(ld, s, key, "must be an integer");
    long long v = config_setting_get_int64(s);
    if (v < min || v > max)
        return cfgfile_fail(ld, s, key, "%lld is not in %lld..%lld", v, min, max);
    *out = v;
    return 0;
}

/* cfgfile_get_bool - only true/false: 0 and 1 are refused so that intent is explicit */
int cfgfile_get_bool(const struct cfgfile_ld *ld, const config_setting_t *s, const char *key,
                     bool *out)
{
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        return cfgfile_fail(ld, s, key, "must be true or false");
    *out = config_setting_get_bool(s) != 0;
    return 0;
}
