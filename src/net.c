/*
 * net - listener plumbing (see net.h).
 */
#include "net.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <grp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

long net_bev_write_now(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    if (evbuffer_get_length(out) == 0)
        return 0;
    /* a bufferevent keeps the front of its output frozen so only it drains it */
    evbuffer_unfreeze(out, 1);
    int n = evbuffer_write(out, bufferevent_getfd(bev));
    int err = errno;
    evbuffer_freeze(out, 1);
    if (n < 0 && err != EAGAIN && err != EWOULDBLOCK && err != EINTR)
        return -1;
    return (long)evbuffer_get_length(out);
}

/* net_mkparent - create the directories above a socket path (mkdir -p) */
static void net_mkparent(const char *path)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if (str_copy(dir, sizeof dir, path) < 0)
        return;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(dir, 0755);
            *p = '/';
        }
    }
    mkdir(dir, 0755);
}

struct evconnlistener *net_unix_listener(struct event_base *base, const char *path, int mode,
                                         const char *group, evconnlistener_cb cb, void *arg)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (str_copy(sun.sun_path, sizeof sun.sun_path, path) < 0) {
        log_msg(LOG_ERROR, "listen", "socket path too long: %s", path);
        return NULL;
    }
    net_mkparent(path);
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        int live = connect(probe, (struct sockaddr *)&sun, sizeof sun) == 0;
        close(probe);
        if (live) {
            log_msg(LOG_ERROR, "listen", "%s: another process is serving this socket", path);
            return NULL;
        }
    }
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        log_msg(LOG_ERROR, "listen", "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (chmod(path, (mode_t)mode) < 0)
        log_msg(LOG_WARNING, "listen", "chmod %s: %s", path, strerror(errno));
    if (group && *group) {
        struct group *g = getgrnam(group);
        if (!g || chown(path, (uid_t)-1, g->gr_gid) < 0)
            log_msg(LOG_WARNING, "listen", "cannot give %s to group %s", path, group);
    }
    struct evconnlistener *l = evconnlistener_new(
        base, cb, arg, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 1024, fd);
    if (!l) {
        log_msg(LOG_ERROR, "listen", "%s: cannot listen", path);
        close(fd);
    }
    return l;
}
