/*
 * log - JSON-lines daemon and accounting logs (see log.h).
 */
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = -1;
static int log_acct_fd = -1;
static char *log_dir;
static enum LOG_LEVEL log_min = LOG_INFO;
static bool log_stderr = true;

static const char *const log_level_names[] = {"debug", "info", "notice", "warning", "error"};

const char *log_level_str(enum LOG_LEVEL lvl)
{
    return (unsigned)lvl < ARRAY_LEN(log_level_names) ? log_level_names[lvl] : "unknown";
}

enum LOG_LEVEL log_level_parse(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(log_level_names); i++)
        if (strcmp(name, log_level_names[i]) == 0)
            return (enum LOG_LEVEL)i;
    return LOG_INFO;
}

/* log_open_file - open dir/name for appending, -1 on error */
static int log_open_file(const char *dir, const char *name)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int log_open(const char *dir, enum LOG_LEVEL min_level, bool to_stderr)
{
    log_min = min_level;
    log_stderr = to_stderr || !dir;
    if (!dir)
        return 0;
    if (mkdir(dir, 0750) < 0 && errno != EEXIST)
        return -1;
    int fd = log_open_file(dir, "volleyd.log");
    if (fd < 0)
        return -1;
    int afd = log_open_file(dir, "accounting.log");
    if (afd < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    pthread_mutex_lock(&log_lock);
    free(log_dir);
    log_dir = xstrdup(dir);
    log_fd = fd;
    log_acct_fd = afd;
    pthread_mutex_unlock(&log_lock);
    return 0;
}

int log_reopen(void)
{
    pthread_mutex_lock(&log_lock);
    if (!log_dir) {
        pthread_mutex_unlock(&log_lock);
        return 0;
    }
    int fd = log_open_file(log_dir, "volleyd.log");
    int afd = log_open_file(log_dir, "accounting.log");
    if (fd < 0 || afd < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (afd >= 0)
            close(afd);
        pthread_mutex_unlock(&log_lock);
        errno = e;
        return -1;
    }
    close(log_fd);
    close(log_acct_fd);
    log_fd = fd;
    log_acct_fd = afd;
    pthread_mutex_unlock(&log_lock);
    return 0;
}

void log_close(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_fd >= 0)
        close(log_fd);
    if (log_acct_fd >= 0)
        close(log_acct_fd);
    log_fd = log_acct_fd = -1;
    free(log_dir);
    log_dir = NULL;
    pthread_mutex_unlock(&log_lock);
}

int log_enabled(enum LOG_LEVEL lvl)
{
    return lvl >= log_min;
}

/* log_timestamp - RFC 3339 UTC time with milliseconds */
static void log_timestamp(char *buf, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

/* log_write_all - write the whole line; a log write failure is not worth dying for */
static void log_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* log_emit - dump obj as one line to fd (and stderr); consumes obj */
static void log_emit(json_t *obj, bool acct)
{
    char *line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!line)
        return;
    size_t n = strlen(line);
    line[n] = '\n'; /* json_dumps' NUL becomes the newline; length excludes it */
    pthread_mutex_lock(&log_lock);
    int fd = acct ? log_acct_fd : log_fd;
    if (fd >= 0)
        log_write_all(fd, line, n + 1);
    if (!acct && (log_stderr || fd < 0))
        log_write_all(STDERR_FILENO, line, n + 1);
    pthread_mutex_unlock(&log_lock);
    free(line);
}

void log_event(enum LOG_LEVEL lvl, const char *event, json_t *fields)
{
    if (lvl < log_min) {
        json_decref(fields);
        return;
    }
    char ts[64];
    log_timestamp(ts, sizeof ts);
    json_t *obj = json_object();
    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "level", json_string(log_level_str(lvl)));
    json_object_set_new(obj, "event", json_string(event));
    if (fields) {
        json_object_update(obj, fields);
        json_decref(fields);
    }
    log_emit(obj, false);
}

void log_msg(enum LOG_LEVEL lvl, const char *event, const char *fmt, ...)
{
    if (lvl < log_min)
        return;
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    log_event(lvl, event, json_pack("{s:s}", "msg", text));
}

/* log_acct_object - the full accounting record: ts, type, then fields (stolen) */
static json_t *log_acct_object(const char *type, json_t *fields)
{
    char ts[64];
    log_timestamp(ts, sizeof ts);
    json_t *obj = json_object();
    json_object_set_new(obj, "ts", json_string(ts));
    json_object_set_new(obj, "type", json_string(type));
    if (fields) {
        json_object_update(obj, fields);
        json_decref(fields);
    }
    return obj;
}

void log_acct(const char *type, json_t *fields)
{
    log_emit(log_acct_object(type, fields), true);
}

int log_acct_append(struct vbuf *buf, const char *type, json_t *fields)
{
    json_t *obj = log_acct_object(type, fields);
    char *line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!line)
        return -1;
    int rc = vbuf_append(buf, line, strlen(line)) < 0 || vbuf_append(buf, "\n", 1) < 0 ? -1 : 0;
    free(line);
    return rc;
}

void log_acct_flush(struct vbuf *buf)
{
    if (!buf->len)
        return;
    pthread_mutex_lock(&log_lock);
    if (log_acct_fd >= 0)
        log_write_all(log_acct_fd, (const char *)buf->data, buf->len);
    pthread_mutex_unlock(&log_lock);
    vbuf_reset(buf);
}
