/*
 * http - one-click unsubscribe, health and metrics over evhttp (see http.h for
 * the routes and the owner's contract).
 *
 * Owns the evhttp server, its bound socket, and a fixed table of HTTP_PENDING_MAX
 * pending unsubscribes.  Entry points: http_start(), http_port(),
 * http_unsub_done(), http_free(); everything else runs from evhttp's request
 * callback (http_handle) or from a pending request's timer or connection close.
 *
 * Pending requests and their ids.  A verified one-click POST takes a slot; its id
 * is seq * HTTP_PENDING_MAX + slot with seq growing forever, so the slot is found
 * from the id in O(1) and a reused slot never answers to an old id.  The slot owns
 * copies of list and address (for the log line), a deadline timer, and - while
 * the client is still there - the evhttp request.  Three things end a slot, and
 * the first one wins: the owner's http_unsub_done() (reply 200 or 503), the
 * deadline (reply 503), or http_free().  A client that goes away only clears the
 * slot's request pointer: the slot stays taken until the owner answers, so
 * HTTP_PENDING_MAX bounds the work handed to the owner, not just open sockets.
 *
 * evhttp lifetimes.  While a reply is pending, evhttp stops reading the
 * connection, so a client close is normally seen only when the reply is written,
 * and then evhttp frees request and connection itself.  When evhttp does notice
 * the close first (a failed connection is freed; the close callback runs), it has
 * either detached a request the user still owes a reply - evcon NULL, ours to
 * free - or will free the request with the connection; http_conn_closed() tells
 * the two apart.  The close callback is cleared before every reply, because the
 * connection outlives the request under keep-alive and the slot may be reused.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "log.h"
#include "util.h"

#define HTTP_MAX_HEADERS    (8 * 1024)
#define HTTP_MAX_BODY       (16 * 1024)
#define HTTP_IO_TIMEOUT_S   10
#define HTTP_RETRY_AFTER    "60"
#define HTTP_UNSUB_PREFIX   "/unsubscribe/"
#define HTTP_LOG_PATH_MAX   128
#define HTTP_LOG_TOKEN_KEEP 8  /* token characters kept in http_error */
#define HTTP_BOUNDARY_MAX   70 /* RFC 2046 5.1.1 */
#define HTTP_ONECLICK_KEY   "List-Unsubscribe"
#define HTTP_ONECLICK_VAL   "One-Click"
#define HTTP_CT_TEXT        "text/plain; charset=utf-8"
#define HTTP_CT_HTML        "text/html; charset=utf-8"
#define HTTP_CT_JSON        "application/json"
#define HTTP_CT_METRICS     "text/plain; version=0.0.4; charset=utf-8"

/* One unsubscribe awaiting the owner.  id 0 marks a free slot. */
struct http_pending {
    uint64_t id;
    struct http *h;
    struct evhttp_request *req;     /* NULL once the client is gone */
    struct evhttp_connection *conn; /* req's connection, while req is set */
    struct event *timer;            /* the owner's deadline */
    char *list, *addr;              /* copies for the log line */
    uint64_t msgid;
};

struct http {
    struct event_base *base;
    struct evhttp *evh;
    struct evhttp_bound_socket *sock;
    struct verp_key key;
    struct http_callbacks cb;
    struct http_pending *pending; /* HTTP_PENDING_MAX slots */
    uint16_t *free_slots;         /* stack of free slot numbers */
    size_t nfree;
    uint64_t seq;
};

_Static_assert(HTTP_PENDING_MAX <= UINT16_MAX, "slot numbers fit the free stack");

/* http_sanitize - copy at most max bytes of s into out (size max + 1), every byte
 * that is not printable ASCII turned into '?', so that it is safe JSON text */
static void http_sanitize(const char *s, char *out, size_t max)
{
    size_t i = 0;
    for (; s != NULL && s[i] != '\0' && i < max; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[i] = '\0';
}

/* http_json_text - a JSON string of s: as it is when it is valid UTF-8 (list
 * names and addresses may be international), else its sanitized ASCII form */
static json_t *http_json_text(const char *s)
{
    json_t *j = json_string(s != NULL ? s : "");
    if (j == NULL) {
        char buf[VERP_ADDR_MAX + 1];
        http_sanitize(s, buf, sizeof buf - 1);
        j = json_string(buf);
    }
    return j;
}

/* http_log_error - the http_error notice: request path (truncated, sanitized) and
 * why it was refused.  An unsubscribe token is cut to a few characters: a valid
 * one is a capability and spells out the address. */
static void http_log_error(struct evhttp_request *req, const char *reason)
{
    char path[HTTP_LOG_PATH_MAX + 1];
    http_sanitize(evhttp_request_get_uri(req), path, HTTP_LOG_PATH_MAX);
    size_t keep = strlen(HTTP_UNSUB_PREFIX) + HTTP_LOG_TOKEN_KEEP;
    if (strncmp(path, HTTP_UNSUB_PREFIX, strlen(HTTP_UNSUB_PREFIX)) == 0 && strlen(path) > keep)
        memcpy(path + keep, "...", 4);
    log_event(LOG_NOTICE, "http_error", json_pack("{s:s,s:s}", "path", path, "reason", reason));
}

/* http_reply - send code with a body of content type ctype (body may be NULL);
 * adds the headers every reply carries.  The request is evhttp's again after. */
static void http_reply(struct evhttp_request *req, int code, const char *ctype, const char *body)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Content-Type", ctype);
    evhttp_add_header(out, "Cache-Control", "no-store");
    evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
    struct evbuffer *buf = evbuffer_new();
    if (buf == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    if (body != NULL) evbuffer_add(buf, body, strlen(body));
    evhttp_send_reply(req, code, NULL, buf);
    evbuffer_free(buf);
}

/* http_refuse - a plain-text client error, logged as http_error */
static void http_refuse(struct evhttp_request *req, int code, const char *reason, const char *body)
{
    http_log_error(req, reason);
    http_reply(req, code, HTTP_CT_TEXT, body);
}

/* http_method_not_allowed - 405 naming the methods the route takes */
static void http_method_not_allowed(struct evhttp_request *req, const char *allow)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    http_refuse(req, 405, "method not allowed", "method not allowed\n");
}

/* ---- pending unsubscribes ---- */

/* http_pending_release - free slot p and its copies; its id becomes unknown */
static void http_pending_release(struct http *h, struct http_pending *p)
{
    if (p->timer != NULL) event_free(p->timer);
    free(p->list);
    free(p->addr);
    size_t slot = (size_t)(p - h->pending);
    memset(p, 0, sizeof *p);
    h->free_slots[h->nfree++] = (uint16_t)slot;
}

/* http_pending_log - the http_unsubscribe record for p's outcome; "replied" says
 * a reply was written to the request (the client may have gone meanwhile) */
static void http_pending_log(const struct http_pending *p, const char *result)
{
    json_t *f = json_object();
    char id[17];
    snprintf(id, sizeof id, "%016llX", (unsigned long long)p->msgid);
    json_object_set_new(f, "list", http_json_text(p->list));
    json_object_set_new(f, "address", http_json_text(p->addr));
    json_object_set_new(f, "msgid", json_string(id));
    json_object_set_new(f, "result", json_string(result));
    json_object_set_new(f, "replied", json_boolean(p->req != NULL));
    log_event(LOG_INFO, "http_unsubscribe", f);
}

/* http_pending_answer - reply to p's client if it is still there (200 on ok, 503
 * otherwise), log the outcome and release p */
static void http_pending_answer(struct http *h, struct http_pending *p, bool ok, const char *result)
{
    http_pending_log(p, result);
    struct evhttp_request *req = p->req;
    if (req != NULL) {
        /* keep-alive: the connection outlives this slot */
        evhttp_connection_set_closecb(p->conn, NULL, NULL);
        p->req = NULL;
        p->conn = NULL;
        if (ok) {
            http_reply(req, HTTP_OK, HTTP_CT_TEXT, "unsubscribed\n");
        } else {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                              HTTP_RETRY_AFTER);
            http_reply(req, 503, HTTP_CT_TEXT,
                       "unsubscribe is temporarily unavailable; "
                       "please try again later\n");
        }
    }
    http_pending_release(h, p);
}

/* http_pending_timeout - the owner missed its deadline: 503 now, and its late
 * answer will find the id unknown */
static void http_pending_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct http_pending *p = arg;
    http_pending_answer(p->h, p, false, "timeout");
}

/* http_conn_closed - the client's connection is going away while p waits.  A
 * request evhttp detached (evcon NULL) is ours to free; one still attached is
 * freed by evhttp with the connection.  p stays taken until the owner answers. */
static void http_conn_closed(struct evhttp_connection *conn, void *arg)
{
    struct http_pending *p = arg;
    if (p->id == 0 || p->req == NULL || p->conn != conn) return;
    struct evhttp_request *req = p->req;
    p->req = NULL;
    p->conn = NULL;
    if (evhttp_request_get_connection(req) == NULL) evhttp_request_free(req);
}

void http_unsub_done(struct http *h, uint64_t req_id, int result)
{
    if (h == NULL) return;
    struct http_pending *p = &h->pending[req_id % HTTP_PENDING_MAX];
    if (req_id == 0 || p->id != req_id) {
        log_msg(LOG_DEBUG, "http_unsubscribe", "late or unknown request id %llu",
                (unsigned long long)req_id);
        return;
    }
    http_pending_answer(h, p, result == 0, result == 0 ? "ok" : "failed");
}

/* ---- one-click body ---- */

/* http_media_is - 1 if the Content-Type value ct names media type mt (parameters
 * and case ignored) */
static bool http_media_is(const char *ct, const char *mt)
{
    size_t n = strlen(mt);
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, mt, n) != 0) return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* http_trim - p[0..*n) without surrounding blanks (SP, TAB, CR, LF) */
static const char *http_trim(const char *p, size_t *n)
{
    while (*n > 0 && strchr(" \t\r\n", p[0]) != NULL && p[0] != '\0') {
        p++;
        (*n)--;
    }
    while (*n > 0 && strchr(" \t\r\n", p[*n - 1]) != NULL && p[*n - 1] != '\0')
        (*n)--;
    return p;
}

/* http_is_oneclick - 1 if the n bytes at p are "One-Click" (blanks around and
 * case ignored) */
static bool http_is_oneclick(const char *p, size_t n)
{
    p = http_trim(p, &n);
    return n == strlen(HTTP_ONECLICK_VAL) && strncasecmp(p, HTTP_ONECLICK_VAL, n) == 0;
}

/* http_form_oneclick - the urlencoded body (NUL-terminated) holds the field */
static bool http_form_oneclick(const char *body, size_t len)
{
    struct evkeyvalq q;
    char trimmed[HTTP_MAX_BODY + 1];
    const char *p = http_trim(body, &len);
    memcpy(trimmed, p, len);
    trimmed[len] = '\0';
    bool found = false;
    /* evhttp_parse_query_str initialises q, and clears it itself on failure */
    if (evhttp_parse_query_str(trimmed, &q) == 0) {
        const char *v = evhttp_find_header(&q, HTTP_ONECLICK_KEY);
        found = v != NULL && http_is_oneclick(v, strlen(v));
        evhttp_clear_headers(&q);
    }
    return found;
}

/* http_boundary - the multipart boundary parameter of Content-Type ct (quoted or
 * not) into out (HTTP_BOUNDARY_MAX + 1); -1 if absent or malformed */
static int http_boundary(const char *ct, char *out)
{
    for (const char *p = strchr(ct, ';'); p != NULL; p = strchr(p + 1, ';')) {
        const char *s = p + 1;
        while (*s == ' ' || *s == '\t')
            s++;
        if (strncasecmp(s, "boundary=", 9) != 0) continue;
        s += 9;
        bool quoted = *s == '"';
        s += quoted;
        size_t n = 0;
        while (s[n] != '\0' && (quoted ? s[n] != '"' : (s[n] != ';' && s[n] != ' ')))
            n++;
        if (n == 0 || n > HTTP_BOUNDARY_MAX || (quoted && s[n] != '"')) return -1;
        memcpy(out, s, n);
        out[n] = '\0';
        return 0;
    }
    return -1;
}

/* http_part_is_field - 1 if the part header block hdr[0..n) has a
 * Content-Disposition: form-data naming the one-click field */
static bool http_part_is_field(const char *hdr, size_t n)
{
    const char *end = hdr + n;
    for (const char *line = hdr; line < end;) {
        const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        size_t ll = eol != NULL ? (size_t)(eol - line) : (size_t)(end - line);
        char buf[512];
        if (ll < sizeof buf && ll > 20 && strncasecmp(line, "Content-Disposition:", 20) == 0) {
            memcpy(buf, line, ll);
            buf[ll] = '\0';
            /* name= must start a parameter: "filename=" does not count */
            for (char *s = strcasestr(buf, "name="); s != NULL; s = strcasestr(s + 1, "name=")) {
                if (s[-1] != ';' && s[-1] != ' ' && s[-1] != '\t') continue;
                char *v = s + 5;
                size_t kl = strlen(HTTP_ONECLICK_KEY);
                if (*v == '"')
                    return strncasecmp(v + 1, HTTP_ONECLICK_KEY, kl) == 0 && v[1 + kl] == '"';
                return strncasecmp(v, HTTP_ONECLICK_KEY, kl) == 0 &&
                       (v[kl] == '\0' || v[kl] == ';' || v[kl] == ' ');
            }
        }
        if (eol == NULL) break;
        line = eol + 2;
    }
    return false;
}

/* http_multipart_oneclick - walk multipart/form-data body[0..len) delimited by
 * boundary; 1 if a part named List-Unsubscribe holds One-Click */
static bool http_multipart_oneclick(const char *body, size_t len, const char *boundary)
{
    char delim[HTTP_BOUNDARY_MAX + 5]; /* CRLF "--" boundary */
    int dl = snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    if (dl < 0 || (size_t)dl >= sizeof delim) return false;
    const char *end = body + len;
    const char *p;
    /* the first delimiter may open the body without the CRLF before it */
    if (len >= (size_t)dl - 2 && memcmp(body, delim + 2, (size_t)dl - 2) == 0)
        p = body + dl - 2;
    else if ((p = memmem(body, len, delim, (size_t)dl)) != NULL)
        p += dl;
    else
        return false;
    for (;;) {
        /* after a delimiter: "--" closes, else optional blanks then CRLF */
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') return false;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return false;
        p += 2;
        const char *next = memmem(p, (size_t)(end - p), delim, (size_t)dl);
        if (next == NULL) return false;
        /* a part with no header fields starts with the blank line itself */
        const char *hend = (next - p >= 2 && p[0] == '\r' && p[1] == '\n')
                               ? p
                               : memmem(p, (size_t)(next - p), "\r\n\r\n", 4);
        if (hend != NULL) {
            size_t hl = (size_t)(hend - p);
            const char *content = hend + (hend == p ? 2 : 4);
            if (content <= next && http_part_is_field(p, hl) &&
                http_is_oneclick(content, (size_t)(next - content)))
                return true;
        }
        p = next + dl;
    }
}

/* http_oneclick_body - 1 if the POST body carries List-Unsubscribe=One-Click in
 * either encoding RFC 8058 allows */
static bool http_oneclick_body(struct evhttp_request *req)
{
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (ct == NULL || len == 0 || len > HTTP_MAX_BODY) return false;
    char *body = xmalloc(len + 1);
    bool ok = false;
    if (evbuffer_copyout(in, body, len) == (ev_ssize_t)len) {
        body[len] = '\0';
        char boundary[HTTP_BOUNDARY_MAX + 1];
        if (http_media_is(ct, "application/x-www-form-urlencoded"))
            ok = strlen(body) == len && http_form_oneclick(body, len);
        else if (http_media_is(ct, "multipart/form-data") && http_boundary(ct, boundary) == 0)
            ok = http_multipart_oneclick(body, len, boundary);
    }
    free(body);
    return ok;
}

/* ---- routes ---- */

/* http_unsub_post - one-click: verify, then hand to the owner and wait */
static void http_unsub_post(struct http *h, struct evhttp_request *req, const char *token)
{
    char list[VERP_LIST_MAX + 1], addr[VERP_ADDR_MAX + 1];
    uint64_t msgid = 0;

    if (verp_unsub_url_parse(&h->key, token, list, sizeof list, addr, sizeof addr, &msgid) < 0) {
        http_refuse(req, HTTP_BADREQUEST, "bad unsubscribe token",
                    "this unsubscribe link is not valid\n");
        return;
    }
    if (!http_oneclick_body(req)) {
        http_refuse(req, HTTP_BADREQUEST, "no one-click field",
                    "a one-click unsubscribe must POST List-Unsubscribe=One-Click\n");
        return;
    }
    if (h->nfree == 0) {
        http_log_error(req, "too many pending unsubscribes");
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", HTTP_RETRY_AFTER);
        http_reply(req, 503, HTTP_CT_TEXT, "busy; please try again later\n");
        return;
    }
    size_t slot = h->free_slots[--h->nfree];
    struct http_pending *p = &h->pending[slot];
    p->id = ++h->seq * HTTP_PENDING_MAX + slot;
    p->h = h;
    p->req = req;
    p->conn = evhttp_request_get_connection(req);
    p->list = xstrdup(list);
    p->addr = xstrdup(addr);
    p->msgid = msgid;
    p->timer = evtimer_new(h->base, http_pending_timeout, p);
    if (p->timer == NULL) abort(); /* out of memory: the daemon's policy */
    const struct timeval tv = {HTTP_UNSUB_TIMEOUT_S, 0};
    evtimer_add(p->timer, &tv);
    evhttp_connection_set_closecb(p->conn, http_conn_closed, p);
    /* the owner may answer inside this call; p is not touched after it */
    h->cb.unsubscribe(h->cb.arg, p->id, list, addr, msgid);
}

/* http_unsub_page - the confirmation page: names the list, POSTs one-click */
static void http_unsub_page(struct http *h, struct evhttp_request *req, const char *token)
{
    char list[VERP_LIST_MAX + 1], addr[VERP_ADDR_MAX + 1];
    uint64_t msgid = 0;
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);

    /* the page holds the token: keep it out of Referer, frames and caches */
    evhttp_add_header(out, "Content-Security-Policy",
                      "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                      "frame-ancestors 'none'; base-uri 'none'");
    evhttp_add_header(out, "Referrer-Policy", "no-referrer");
    evhttp_add_header(out, "X-Frame-Options", "DENY");
    evhttp_add_header(out, "X-Robots-Tag", "noindex");

    static const char head[] = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                               "<meta name=\"robots\" content=\"noindex\">"
                               "<meta name=\"viewport\" content=\"width=device-width\">"
                               "<title>Unsubscribe</title></head>\n<body>";
    if (verp_unsub_url_parse(&h->key, token, list, sizeof list, addr, sizeof addr, &msgid) < 0) {
        http_log_error(req, "bad unsubscribe token");
        struct evbuffer *b = evbuffer_new();
        if (b == NULL) {
            evhttp_send_error(req, HTTP_INTERNAL, NULL);
            return;
        }
        evbuffer_add_printf(b,
                            "%s<h1>Invalid link</h1><p>This unsubscribe link is not valid. "
                            "Please use the link from a recent message.</p></body></html>\n",
                            head);
        evhttp_add_header(out, "Content-Type", HTTP_CT_HTML);
        evhttp_add_header(out, "Cache-Control", "no-store");
        evhttp_send_reply(req, HTTP_BADREQUEST, NULL, b);
        evbuffer_free(b);
        return;
    }
    /* The address is left off: forwarded messages carry the link to others.  The
     * form action is the bare token, relative to this page's URL, so the page works
     * behind a proxy that mounts us under a sub-path. */
    char *elist = evhttp_htmlescape(list);
    char *etoken = evhttp_htmlescape(token);
    struct evbuffer *b = evbuffer_new();
    if (b == NULL || elist == NULL || etoken == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
    } else {
        evbuffer_add_printf(b,
                            "%s<h1>Unsubscribe</h1>\n<p>Stop receiving <strong>%s</strong>?</p>\n"
                            "<form method=\"post\" action=\"%s\">"
                            "<input type=\"hidden\" name=\"" HTTP_ONECLICK_KEY
                            "\" value=\"" HTTP_ONECLICK_VAL "\">"
                            "<button type=\"submit\">Unsubscribe</button></form>\n"
                            "</body></html>\n",
                            head, elist, etoken);
        evhttp_add_header(out, "Content-Type", HTTP_CT_HTML);
        evhttp_add_header(out, "Cache-Control", "no-store");
        evhttp_send_reply(req, HTTP_OK, NULL, b);
    }
    if (b != NULL) evbuffer_free(b);
    free(elist);
    free(etoken);
}

/* http_metrics - the owner's text exposition */
static void http_metrics(struct http *h, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    h->cb.metrics(h->cb.arg, b);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Content-Type", HTTP_CT_METRICS);
    evhttp_add_header(out, "Cache-Control", "no-store");
    evhttp_send_reply(req, HTTP_OK, NULL, b);
    evbuffer_free(b);
}

/* http_handle - evhttp's callback for every request that parsed and used an
 * allowed method: route by path, then by method */
static void http_handle(struct evhttp_request *req, void *arg)
{
    struct http *h = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool get = cmd == EVHTTP_REQ_GET;
    bool post = cmd == EVHTTP_REQ_POST;

    if (path == NULL) {
        http_refuse(req, HTTP_BADREQUEST, "bad request target", "bad request\n");
    } else if (strcmp(path, "/health") == 0) {
        if (get)
            http_reply(req, HTTP_OK, HTTP_CT_JSON, "{\"status\":\"ok\"}\n");
        else
            http_method_not_allowed(req, "GET");
    } else if (strcmp(path, "/metrics") == 0 && h->cb.metrics != NULL) {
        if (get)
            http_metrics(h, req);
        else
            http_method_not_allowed(req, "GET");
    } else if (strncmp(path, HTTP_UNSUB_PREFIX, strlen(HTTP_UNSUB_PREFIX)) == 0 &&
               h->cb.unsubscribe != NULL) {
        const char *token = path + strlen(HTTP_UNSUB_PREFIX);
        if (post)
            http_unsub_post(h, req, token);
        else if (get)
            http_unsub_page(h, req, token);
        else
            http_method_not_allowed(req, "GET, POST");
    } else {
        http_refuse(req, HTTP_NOTFOUND, "not found", "not found\n");
    }
}

/* ---- life cycle ---- */

/* http_err - format the start-up error into err (which may be NULL) */
static void http_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void http_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* http_listen_addr - the literal to bind for addr into out: "localhost" is
 * 127.0.0.1, "[v6]" loses its brackets; -1 unless the result is an IP literal
 * (evhttp would otherwise resolve a name, blocking) */
static int http_listen_addr(const char *addr, char *out, size_t n)
{
    unsigned char sa[sizeof(struct in6_addr)];
    if (addr == NULL || *addr == '\0') return -1;
    if (strcasecmp(addr, "localhost") == 0) addr = "127.0.0.1";
    size_t len = strnlen(addr, n);
    if (len >= n) return -1;
    if (addr[0] == '[' && len > 2 && addr[len - 1] == ']') {
        memcpy(out, addr + 1, len - 2);
        out[len - 2] = '\0';
    } else {
        memcpy(out, addr, len + 1);
    }
    if (inet_pton(AF_INET, out, sa) == 1 || inet_pton(AF_INET6, out, sa) == 1) return 0;
    return -1;
}

struct http *http_start(struct event_base *base, const char *addr, int port,
                        const struct verp_key *key, const struct http_callbacks *cb, char *err,
                        size_t errlen)
{
    char host[INET6_ADDRSTRLEN + 2];
    http_err(err, errlen, "%s", "");
    if (base == NULL || key == NULL || cb == NULL) {
        http_err(err, errlen, "http: missing event base, key or callbacks");
        return NULL;
    }
    if (http_listen_addr(addr, host, sizeof host) < 0) {
        http_err(err, errlen, "http: listen address must be an IP literal or localhost: %s",
                 addr != NULL ? addr : "(none)");
        return NULL;
    }
    if (port < 0 || port > 65535) {
        http_err(err, errlen, "http: bad port %d", port);
        return NULL;
    }

    struct http *h = xcalloc(1, sizeof *h);
    h->base = base;
    h->key = *key;
    h->cb = *cb;
    h->pending = xcalloc(HTTP_PENDING_MAX, sizeof *h->pending);
    h->free_slots = xcalloc(HTTP_PENDING_MAX, sizeof *h->free_slots);
    /* pop order: slot 0 first */
    for (size_t i = 0; i < HTTP_PENDING_MAX; i++)
        h->free_slots[i] = (uint16_t)(HTTP_PENDING_MAX - 1 - i);
    h->nfree = HTTP_PENDING_MAX;

    h->evh = evhttp_new(base);
    if (h->evh == NULL) {
        http_err(err, errlen, "http: evhttp_new failed");
        http_free(h);
        return NULL;
    }
    evhttp_set_max_headers_size(h->evh, HTTP_MAX_HEADERS);
    evhttp_set_max_body_size(h->evh, HTTP_MAX_BODY);
    evhttp_set_timeout(h->evh, HTTP_IO_TIMEOUT_S);
    evhttp_set_allowed_methods(h->evh, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    evhttp_set_gencb(h->evh, http_handle, h);

    errno = 0;
    h->sock = evhttp_bind_socket_with_handle(h->evh, host, (ev_uint16_t)port);
    if (h->sock == NULL) {
        http_err(err, errlen, "http: cannot listen on %s port %d: %s", host, port,
                 errno != 0 ? strerror(errno) : "bind failed");
        http_free(h);
        return NULL;
    }
    log_event(LOG_INFO, "http_listen",
              json_pack("{s:s,s:i}", "address", host, "port", http_port(h)));
    return h;
}

int http_port(struct http *h)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (h == NULL || h->sock == NULL) return -1;
    evutil_socket_t fd = evhttp_bound_socket_get_fd(h->sock);
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

void http_free(struct http *h)
{
    if (h == NULL) return;
    /* Pending requests stay attached to their connections, which evhttp_free()
     * frees with them; the slots just forget them first. */
    for (size_t i = 0; i < HTTP_PENDING_MAX && h->pending != NULL; i++) {
        struct http_pending *p = &h->pending[i];
        if (p->id == 0) continue;
        if (p->req != NULL) evhttp_connection_set_closecb(p->conn, NULL, NULL);
        p->req = NULL;
        http_pending_log(p, "shutdown");
        http_pending_release(h, p);
    }
    if (h->evh != NULL) evhttp_free(h->evh);
    OPENSSL_cleanse(&h->key, sizeof h->key);
    free(h->pending);
    free(h->free_slots);
    free(h);
}
