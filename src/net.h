/*
 * net - listener plumbing shared by every server side (injection, control, later
 * HTTP and bounce intake).
 */
#ifndef VOLLEY_NET_H
#define VOLLEY_NET_H

#include <event2/listener.h>

/*
 * net_unix_listener - bind a unix stream socket at path with mode (and group, when
 * not empty), creating its directory.  A stale socket file is replaced; a live one
 * (something answers on it) is an error, so two daemons never fight over a path.
 * Returns the listener or NULL (logged).
 */
struct evconnlistener *net_unix_listener(struct event_base *base, const char *path, int mode,
                                         const char *group, evconnlistener_cb cb, void *arg);

/*
 * net_bev_write_now - write what bev's output holds straight to its socket, now,
 * instead of arming EV_WRITE and waiting a loop turn (two epoll_ctl calls and a
 * wake-up per write).  Plain socket bufferevents only.  Returns the bytes still
 * queued (the socket is full: the caller enables EV_WRITE), or -1 on a hard error.
 */
struct bufferevent;
long net_bev_write_now(struct bufferevent *bev);

#endif
