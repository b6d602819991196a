/*
 * test_dns - the resolver against a real DNS server: every test starts its own
 * dnsmasq on 127.0.0.1 and a free high port, with the records below under the
 * local-only zone "test" (unknown names there get NXDOMAIN, names outside it
 * REFUSED).  Covers MX with preferences and A/AAAA, equal-preference shuffling,
 * implicit MX, null MX, NXDOMAIN, NOHOST, TEMPFAIL (server down, REFUSED), the TTL
 * and negative caches, asynchronous delivery, cancel, shared in-flight queries and
 * dns_free() from a callback.  Each test has its own event_base, driven until the
 * expected callbacks arrived or a safety timeout fired, so a bug cannot hang ctest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "dns.h"
#include "util.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define DNSMASQ         "/usr/sbin/dnsmasq"
#define SAFETY_MS       10000
#define MAX_RESULTS     256
#define DOWN_TIMEOUT_MS 200

/* The zone every dnsmasq serves (see the file comment). */
static const char *const zone_args[] = {
    "--local=/test/",
    "--mx-host=two.test,mx1.two.test,10",
    "--mx-host=two.test,mx2.two.test,20",
    "--host-record=mx1.two.test,192.0.2.1,2001:db8::1",
    "--host-record=mx2.two.test,192.0.2.2",
    "--mx-host=eq.test,a.eq.test,10",
    "--mx-host=eq.test,b.eq.test,10",
    "--host-record=a.eq.test,192.0.2.11",
    "--host-record=b.eq.test,192.0.2.12",
    "--host-record=implicit.test,192.0.2.9,2001:db8::9",
    "--mx-host=nullmx.test,.,0",
    "--mx-host=nohost.test,mx.nohost.test,10",
    "--txt-record=txtonly.test,hello",
    "--mx-host=mixed.test,dead.mixed.test,5",
    "--mx-host=mixed.test,live.mixed.test,10",
    "--host-record=live.mixed.test,192.0.2.20",
    "--cname=alias.test,two.test",
    "--mx-host=shared.test,mx.shared.test,10",
    "--host-record=mx.shared.test,192.0.2.30",
    "--mx-host=refhost.test,mx.example.com,10",
    /* --address answers A and AAAA only (NXDOMAIN for MX), so an MX points at it */
    "--mx-host=cap.test,addrs.test,10",
    "--address=/addrs.test/198.51.100.1",
    "--address=/addrs.test/198.51.100.2",
    "--address=/addrs.test/198.51.100.3",
    "--address=/addrs.test/198.51.100.4",
    "--address=/addrs.test/198.51.100.5",
    "--address=/addrs.test/198.51.100.6",
    "--address=/addrs.test/198.51.100.7",
    "--address=/addrs.test/198.51.100.8",
    "--address=/addrs.test/198.51.100.9",
    "--address=/addrs.test/198.51.100.10",
    "--address=/addrs.test/2001:db8::a",
    "--address=/addrs.test/2001:db8::b",
    "--address=/addrs.test/2001:db8::c",
};

/* many.test: MANY_MX MX records mxN.many.test, preference N, address 192.0.2.N;
 * the answer exceeds 512 octets, so c-ares (no EDNS) retries it over TCP */
#define MANY_MX 30

struct dnsmasq {
    pid_t pid;
    int port;
    char dir[64];
    char log[128];
    int ttl; /* --local-ttl */
};

struct result {
    char domain[DNS_NAME_MAX];
    struct dns_route route;
};

struct fixture {
    struct event_base *base;
    struct event *safety;
    struct dnsmasq m;
    struct dns *d;
    bool timed_out;
    bool in_resolve;
    int inside; /* callbacks run inside dns_resolve: must stay 0 */
    int want;
    int nres;
    struct result *res;
    /* actions a callback performs (tests of re-entrancy) */
    bool free_in_cb;
    uint64_t cancel_in_cb;
    const char *resolve_in_cb;
};

/* ---- dnsmasq ---- */

/* free_port - a port nothing listens on right now (UDP and TCP bound and closed) */
static int free_port(void)
{
    for (int tries = 0; tries < 50; tries++) {
        int u = socket(AF_INET, SOCK_DGRAM, 0), t = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sin = {.sin_family = AF_INET};
        socklen_t sl = sizeof sin;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_true(u >= 0 && t >= 0);
        int port = -1;
        if (bind(u, (struct sockaddr *)&sin, sizeof sin) == 0 &&
            getsockname(u, (struct sockaddr *)&sin, &sl) == 0 && ntohs(sin.sin_port) > 1024 &&
            bind(t, (struct sockaddr *)&sin, sizeof sin) == 0)
            port = ntohs(sin.sin_port);
        close(u);
        close(t);
        if (port > 0) return port;
    }
    fail_msg("no free port");
    return -1;
}

/* dnsmasq_probe - true when something answers a DNS query on port */
static bool dnsmasq_probe(int port)
{
    static const unsigned char q[] = {0x12, 0x34, 0x01, 0x00, 0,   1,   0,   0,   0, 0,
                                      0,    0,    5,    'p',  'r', 'o', 'b', 'e', 4, 't',
                                      'e',  's',  't',  0,    0,   1,   0,   1};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    unsigned char buf[512];
    bool ok = false;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(s >= 0);
    if (sendto(s, q, sizeof q, 0, (struct sockaddr *)&sin, sizeof sin) == (ssize_t)sizeof q) {
        struct pollfd pfd = {.fd = s, .events = POLLIN};
        if (poll(&pfd, 1, 100) == 1 && recv(s, buf, sizeof buf, 0) >= 12)
            ok = buf[0] == 0x12 && buf[1] == 0x34;
    }
    close(s);
    return ok;
}

/*
 * dnsmasq_start - run dnsmasq on m->port (a fresh free port when 0) with the test
 * zone, waiting until it answers.  Retries on another port if it could not bind.
 */
static void dnsmasq_start(struct dnsmasq *m)
{
    bool fixed = m->port != 0;

    for (int attempt = 0; attempt < 5; attempt++) {
        if (!fixed) m->port = free_port();
        char port[32], ttl[32], pidf[128], logf[160];
        snprintf(port, sizeof port, "--port=%d", m->port);
        snprintf(ttl, sizeof ttl, "--local-ttl=%d", m->ttl);
        snprintf(pidf, sizeof pidf, "--pid-file=%s/pid", m->dir);
        snprintf(logf, sizeof logf, "--log-facility=%s", m->log);
        static char many[2 * MANY_MX][64];
        const char *argv[32 + ARRAY_LEN(zone_args) + 2 * MANY_MX];
        int n = 0;
        argv[n++] = DNSMASQ;
        argv[n++] = port;
        argv[n++] = "--listen-address=127.0.0.1";
        argv[n++] = "--bind-interfaces";
        argv[n++] = "--no-resolv";
        argv[n++] = "--no-hosts";
        argv[n++] = "--keep-in-foreground";
        argv[n++] = "--conf-file=/dev/null";
        argv[n++] = "--log-queries";
        argv[n++] = logf;
        argv[n++] = pidf;
        argv[n++] = ttl;
        for (size_t i = 0; i < ARRAY_LEN(zone_args); i++)
            argv[n++] = zone_args[i];
        for (int i = 1; i <= MANY_MX; i++) {
            snprintf(many[2 * i - 2], sizeof many[0], "--mx-host=many.test,mx%d.many.test,%d", i,
                     i);
            snprintf(many[2 * i - 1], sizeof many[0], "--host-record=mx%d.many.test,192.0.2.%d", i,
                     i);
            argv[n++] = many[2 * i - 2];
            argv[n++] = many[2 * i - 1];
        }
        argv[n] = NULL;

        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            int devnull = open("/dev/null", O_RDWR);
            if (devnull >= 0) {
                dup2(devnull, 0);
                dup2(devnull, 1);
            }
            execv(DNSMASQ, (char *const *)argv);
            _exit(127);
        }
        m->pid = pid;
        for (int i = 0; i < 60; i++) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                m->pid = 0;
                break; /* bind failure or bad option: try again */
            }
            if (dnsmasq_probe(m->port)) return;
            usleep(20 * 1000);
        }
        if (m->pid) {
            kill(m->pid, SIGKILL);
            waitpid(m->pid, NULL, 0);
            m->pid = 0;
        }
        if (fixed) usleep(100 * 1000);
    }
    fail_msg("dnsmasq did not start");
}

/* dnsmasq_stop - terminate dnsmasq and reap it; the port stays recorded */
static void dnsmasq_stop(struct dnsmasq *m)
{
    if (m->pid <= 0) return;
    kill(m->pid, SIGTERM);
    waitpid(m->pid, NULL, 0);
    m->pid = 0;
}

/* log_count - lines of the dnsmasq query log containing needle */
static int log_count(const struct dnsmasq *m, const char *needle)
{
    char line[1024];
    int n = 0;
    FILE *f = fopen(m->log, "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

/* ---- loop driving ---- */

static void safety_cb(evutil_socket_t fd, short what, void *arg)
{
    struct fixture *f = arg;
    f->timed_out = true;
    event_base_loopbreak(f->base);
}

/* run_until - dispatch until f->want results arrived (or the safety timeout) */
static void run_until(struct fixture *f, int want)
{
    struct timeval tv = {SAFETY_MS / 1000, 0};
    f->want = want;
    if (f->nres >= want) return;
    evtimer_add(f->safety, &tv);
    event_base_dispatch(f->base);
    evtimer_del(f->safety);
    assert_false(f->timed_out);
    assert_int_equal(f->nres, want);
}

/* run_for - dispatch for ms milliseconds whatever happens */
static void run_for(struct fixture *f, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    f->want = MAX_RESULTS + 1;
    event_base_loopexit(f->base, &tv);
    event_base_dispatch(f->base);
}

static void resolve_cb(void *arg, const char *domain, const struct dns_route *route)
{
    struct fixture *f = arg;

    if (f->in_resolve) f->inside++;
    if (f->nres < MAX_RESULTS) {
        struct result *r = &f->res[f->nres];
        str_copy(r->domain, sizeof r->domain, domain);
        memcpy(&r->route, route, sizeof *route);
    }
    f->nres++;
    if (f->cancel_in_cb) {
        dns_cancel(f->d, f->cancel_in_cb);
        f->cancel_in_cb = 0;
    }
    if (f->resolve_in_cb) {
        const char *name = f->resolve_in_cb;
        f->resolve_in_cb = NULL;
        f->in_resolve = true;
        dns_resolve(f->d, name, resolve_cb, f);
        f->in_resolve = false;
    }
    if (f->free_in_cb) {
        dns_free(f->d);
        f->d = NULL;
        f->free_in_cb = false;
    }
    if (f->nres >= f->want) event_base_loopbreak(f->base);
}

/* resolve - dns_resolve with the "inside dns_resolve" flag raised around it */
static uint64_t resolve(struct fixture *f, const char *domain)
{
    f->in_resolve = true;
    uint64_t id = dns_resolve(f->d, domain, resolve_cb, f);
    f->in_resolve = false;
    assert_true(id != 0);
    return id;
}

/* new_dns - a resolver on f->base pointed at dnsmasq (or at port when > 0) */
static struct dns *new_dns(struct fixture *f, int port, const struct dns_params *extra)
{
    char server[64], err[256];
    const char *servers[1] = {server};
    struct dns_params p = {0};

    if (extra) p = *extra;
    snprintf(server, sizeof server, "127.0.0.1:%d", port > 0 ? port : f->m.port);
    p.servers = servers;
    p.nservers = 1;
    struct dns *d = dns_new(f->base, &p, err, sizeof err);
    if (!d) fail_msg("dns_new: %s", err);
    return d;
}

static int setup_ttl(void **state, int ttl)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->safety = evtimer_new(f->base, safety_cb, f);
    f->res = xcalloc(MAX_RESULTS, sizeof *f->res);
    snprintf(f->m.dir, sizeof f->m.dir, "/tmp/volley-test-dns-XXXXXX");
    assert_non_null(mkdtemp(f->m.dir));
    snprintf(f->m.log, sizeof f->m.log, "%s/queries.log", f->m.dir);
    f->m.ttl = ttl;
    dnsmasq_start(&f->m);
    f->d = new_dns(f, 0, NULL);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_ttl(state, 300);
}

static int setup_short_ttl(void **state)
{
    return setup_ttl(state, 1);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char path[160];

    dns_free(f->d);
    dnsmasq_stop(&f->m);
    event_free(f->safety);
    event_base_free(f->base);
    snprintf(path, sizeof path, "%s/pid", f->m.dir);
    unlink(path);
    unlink(f->m.log);
    rmdir(f->m.dir);
    assert_int_equal(f->inside, 0);
    free(f->res);
    free(f);
    return 0;
}

/* addr_str - text of a host address (static buffer) */
static const char *addr_str(const struct sockaddr_storage *ss)
{
    static char buf[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, sizeof buf);
    else if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf, sizeof buf);
    else
        snprintf(buf, sizeof buf, "family %d", ss->ss_family);
    return buf;
}

/* ---- tests ---- */

/* MX with two preferences; hosts with A and AAAA, IPv4 first by default */
static void test_mx_two_prefs(void **state)
{
    struct fixture *f = *state;

    resolve(f, "two.test");
    assert_int_equal(f->nres, 0);
    run_until(f, 1);
    const struct dns_route *r = &f->res[0].route;
    assert_string_equal(f->res[0].domain, "two.test");
    assert_int_equal(r->status, DNS_OK);
    assert_false(r->implicit_mx);
    assert_int_equal(r->nhosts, 2);
    assert_string_equal(r->host[0].name, "mx1.two.test");
    assert_int_equal(r->host[0].pref, 10);
    assert_int_equal(r->host[0].naddr, 2);
    assert_string_equal(addr_str(&r->host[0].addr[0]), "192.0.2.1");
    assert_string_equal(addr_str(&r->host[0].addr[1]), "2001:db8::1");
    assert_int_equal(((const struct sockaddr_in *)&r->host[0].addr[0])->sin_port, 0);
    assert_string_equal(r->host[1].name, "mx2.two.test");
    assert_int_equal(r->host[1].pref, 20);
    assert_int_equal(r->host[1].naddr, 1);
    assert_string_equal(addr_str(&r->host[1].addr[0]), "192.0.2.2");
    /* TTL 300 from dnsmasq, inside [min_ttl 60, max_ttl 86400] */
    int64_t left = r->expires_ms - now_ms();
    assert_true(left > 290 * 1000 && left <= 300 * 1000);
}

/* prefer_ipv6 puts the AAAA addresses first */
static void test_prefer_ipv6(void **state)
{
    struct fixture *f = *state;
    struct dns_params p = {.prefer_ipv6 = true};

    dns_free(f->d);
    f->d = new_dns(f, 0, &p);
    resolve(f, "two.test");
    run_until(f, 1);
    const struct dns_route *r = &f->res[0].route;
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->host[0].naddr, 2);
    assert_string_equal(addr_str(&r->host[0].addr[0]), "2001:db8::1");
    assert_string_equal(addr_str(&r->host[0].addr[1]), "192.0.2.1");
}

/* equal preferences come in both orders over many calls, cached or not */
static void test_equal_pref_shuffle(void **state)
{
    struct fixture *f = *state;
    int first_a = 0, first_b = 0;

    for (int i = 0; i < 64; i++)
        resolve(f, "eq.test"); /* one lookup, 64 deliveries */
    run_until(f, 64);
    for (int i = 0; i < 64; i++)
        resolve(f, "eq.test"); /* 64 cache hits */
    run_until(f, 128);
    for (int i = 0; i < 128; i++) {
        const struct dns_route *r = &f->res[i].route;
        assert_int_equal(r->status, DNS_OK);
        assert_int_equal(r->nhosts, 2);
        assert_int_equal(r->host[0].pref, 10);
        assert_int_equal(r->host[1].pref, 10);
        assert_string_not_equal(r->host[0].name, r->host[1].name);
        if (strcmp(r->host[0].name, "a.eq.test") == 0)
            first_a++;
        else
            first_b++;
    }
    /* fails with probability 2^-127 for a fair shuffle */
    assert_true(first_a > 0 && first_b > 0);
    /* unequal preferences are never reordered */
    for (int i = 0; i < 16; i++)
        resolve(f, "two.test");
    run_until(f, 144);
    for (int i = 128; i < 144; i++)
        assert_string_equal(f->res[i].route.host[0].name, "mx1.two.test");
}

/* no MX record: the domain itself at preference 0 */
static void test_implicit_mx(void **state)
{
    struct fixture *f = *state;

    resolve(f, "implicit.test");
    run_until(f, 1);
    const struct dns_route *r = &f->res[0].route;
    assert_int_equal(r->status, DNS_OK);
    assert_true(r->implicit_mx);
    assert_int_equal(r->nhosts, 1);
    assert_string_equal(r->host[0].name, "implicit.test");
    assert_int_equal(r->host[0].pref, 0);
    assert_int_equal(r->host[0].naddr, 2);
    assert_string_equal(addr_str(&r->host[0].addr[0]), "192.0.2.9");
    assert_string_equal(addr_str(&r->host[0].addr[1]), "2001:db8::9");
}

/* a name with no MX and no address (only TXT) has no host */
static void test_implicit_no_address(void **state)
{
    struct fixture *f = *state;

    resolve(f, "txtonly.test");
    run_until(f, 1);
    assert_int_equal(f->res[0].route.status, DNS_NOHOST);
    assert_int_equal(f->res[0].route.nhosts, 0);
    assert_non_null(strstr(f->res[0].route.error, "txtonly.test"));
}

/* RFC 7505 null MX */
static void test_null_mx(void **state)
{
    struct fixture *f = *state;

    resolve(f, "nullmx.test");
    run_until(f, 1);
    const struct dns_route *r = &f->res[0].route;
    assert_int_equal(r->status, DNS_NULLMX);
    assert_int_equal(r->nhosts, 0);
    assert_non_null(strstr(r->error, "null MX"));
    assert_string_equal(dns_status_str(r->status), "nullmx");
}

static void test_nxdomain(void **state)
{
    struct fixture *f = *state;

    resolve(f, "nothere.test");
    run_until(f, 1);
    const struct dns_route *r = &f->res[0].route;
    assert_int_equal(r->status, DNS_NXDOMAIN);
    assert_non_null(strstr(r->error, "nothere.test"));
    assert_string_equal(dns_status_str(r->status), "nxdomain");
}

/* the only MX host has no address (NXDOMAIN for its A and AAAA) */
static void test_nohost(void **state)
{
    struct fixture *f = *state;

    resolve(f, "nohost.test");
    run_until(f, 1);
    assert_int_equal(f->res[0].route.status, DNS_NOHOST);
    assert_string_equal(dns_status_str(DNS_NOHOST), "nohost");
}

/* a host without address is skipped, the others are kept */
static void test_mixed_hosts(void **state)
{
    struct fixture *f = *state;

    resolve(f, "mixed.test");
    run_until(f, 1);
    const struct dns_route *r = &f->res[0].route;
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 1);
    assert_string_equal(r->host[0].name, "live.mixed.test");
    assert_int_equal(r->host[0].pref, 10);
}

/* the domain is a CNAME to a domain with MX records */
static void test_cname(void **state)
{
    struct fixture *f = *state;

    resolve(f, "alias.test");
    run_until(f, 1);
    const struct dns_route *r = &f->res[0].route;
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 2);
    assert_string_equal(r->host[0].name, "mx1.two.test");
}

/* a truncated UDP answer is fetched over TCP; only the DNS_MAX_HOSTS best hosts
 * are kept, in preference order.  dnsmasq's truncated UDP reply holds preferences
 * 30..15 only, so seeing 1..16 proves the TCP retry (a non-blocking connect: the
 * write-interest path of the socket events) */
static void test_many_mx_tcp(void **state)
{
    struct fixture *f = *state;
    char want[64];

    resolve(f, "many.test");
    run_until(f, 1);
    const struct dns_route *r = &f->res[0].route;
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, DNS_MAX_HOSTS);
    for (int i = 0; i < DNS_MAX_HOSTS; i++) {
        snprintf(want, sizeof want, "mx%d.many.test", i + 1);
        assert_string_equal(r->host[i].name, want);
        assert_int_equal(r->host[i].pref, i + 1);
        assert_int_equal(r->host[i].naddr, 1);
        snprintf(want, sizeof want, "192.0.2.%d", i + 1);
        assert_string_equal(addr_str(&r->host[i].addr[0]), want);
    }
}

/* 10 A and 3 AAAA: at most DNS_MAX_ADDRS, the preferred family first but with two
 * slots kept for the other one */
static void test_address_cap(void **state)
{
    struct fixture *f = *state;
    struct dns_params p = {.prefer_ipv6 = true};

    resolve(f, "cap.test");
    run_until(f, 1);
    const struct dns_route *r = &f->res[0].route;
    assert_int_equal(r->status, DNS_OK);
    assert_string_equal(r->host[0].name, "addrs.test");
    assert_int_equal(r->host[0].naddr, DNS_MAX_ADDRS);
    for (int i = 0; i < DNS_MAX_ADDRS; i++)
        assert_int_equal(r->host[0].addr[i].ss_family, i < 6 ? AF_INET : AF_INET6);

    dns_free(f->d);
    f->d = new_dns(f, 0, &p);
    resolve(f, "cap.test");
    run_until(f, 2);
    r = &f->res[1].route;
    assert_int_equal(r->host[0].naddr, DNS_MAX_ADDRS);
    for (int i = 0; i < DNS_MAX_ADDRS; i++)
        assert_int_equal(r->host[0].addr[i].ss_family, i < 3 ? AF_INET6 : AF_INET);
}

/* nothing listens: TEMPFAIL, not cached */
static void test_tempfail_server_down(void **state)
{
    struct fixture *f = *state;
    struct dns_params p = {.timeout_ms = DOWN_TIMEOUT_MS, .tries = 1};

    dns_free(f->d);
    f->d = new_dns(f, free_port(), &p);
    int64_t t0 = mono_ms();
    resolve(f, "two.test");
    run_until(f, 1);
    assert_int_equal(f->res[0].route.status, DNS_TEMPFAIL);
    assert_true(f->res[0].route.error[0] != '\0');
    assert_string_equal(dns_status_str(DNS_TEMPFAIL), "tempfail");
    assert_true(mono_ms() - t0 < 5000);
    /* not cached: asked again, and fails again */
    resolve(f, "two.test");
    run_until(f, 2);
    assert_int_equal(f->res[1].route.status, DNS_TEMPFAIL);
}

/* REFUSED for the MX query, and for the only MX host's address queries */
static void test_tempfail_refused(void **state)
{
    struct fixture *f = *state;

    resolve(f, "example.com");
    resolve(f, "refhost.test");
    run_until(f, 2);
    for (int i = 0; i < 2; i++) {
        const struct dns_route *r = &f->res[i].route;
        if (strcmp(f->res[i].domain, "example.com") == 0) {
            assert_int_equal(r->status, DNS_TEMPFAIL);
            assert_non_null(strstr(r->error, "MX lookup for example.com"));
        } else {
            assert_string_equal(f->res[i].domain, "refhost.test");
            /* the host lookup failed temporarily: not NOHOST */
            assert_int_equal(r->status, DNS_TEMPFAIL);
            assert_non_null(strstr(r->error, "mx.example.com"));
        }
    }
}

/*
 * The cache: a second call is answered without the server (dnsmasq stopped), the
 * answer expires with the 1 s TTL, then the refetch fails (server down, not
 * cached), then succeeds once the server is back.
 */
static void test_cache_ttl(void **state)
{
    struct fixture *f = *state;
    struct dns_params p = {.min_ttl = 1, .timeout_ms = DOWN_TIMEOUT_MS, .tries = 1};

    dns_free(f->d);
    f->d = new_dns(f, 0, &p);
    resolve(f, "two.test");
    run_until(f, 1);
    assert_int_equal(f->res[0].route.status, DNS_OK);
    int64_t left = f->res[0].route.expires_ms - now_ms();
    assert_true(left > 0 && left <= 1000);

    dnsmasq_stop(&f->m);
    resolve(f, "two.test");
    run_until(f, 2);
    assert_int_equal(f->res[1].route.status, DNS_OK);
    assert_int_equal(f->res[1].route.nhosts, 2);
    assert_true(f->res[1].route.expires_ms - f->res[0].route.expires_ms < 50);

    run_for(f, 1100);
    resolve(f, "two.test");
    run_until(f, 3);
    assert_int_equal(f->res[2].route.status, DNS_TEMPFAIL);

    dnsmasq_start(&f->m); /* same port */
    resolve(f, "two.test");
    run_until(f, 4);
    assert_int_equal(f->res[3].route.status, DNS_OK);
    /* the log survives the restart: one MX query per server run, none served
     * from the cache */
    assert_int_equal(log_count(&f->m, "query[MX] two.test"), 2);
}

/* with a live server the expired answer is fetched again (the log shows it) */
static void test_cache_refetch(void **state)
{
    struct fixture *f = *state;
    struct dns_params p = {.min_ttl = 1};

    dns_free(f->d);
    f->d = new_dns(f, 0, &p);
    resolve(f, "two.test");
    run_until(f, 1);
    resolve(f, "two.test");
    run_until(f, 2);
    run_for(f, 50);
    assert_int_equal(log_count(&f->m, "query[MX] two.test"), 1);
    run_for(f, 1100);
    resolve(f, "two.test");
    run_until(f, 3);
    run_for(f, 50);
    assert_int_equal(f->res[2].route.status, DNS_OK);
    assert_int_equal(log_count(&f->m, "query[MX] two.test"), 2);
    /* dns_flush: the next call asks again */
    dns_flush(f->d);
    resolve(f, "two.test");
    run_until(f, 4);
    run_for(f, 50);
    assert_int_equal(log_count(&f->m, "query[MX] two.test"), 3);
}

/* NXDOMAIN, null MX and no host are cached for neg_ttl */
static void test_negative_cache(void **state)
{
    struct fixture *f = *state;
    struct dns_params p = {.neg_ttl = 1, .timeout_ms = DOWN_TIMEOUT_MS, .tries = 1};
    static const char *const names[] = {"nothere.test", "nullmx.test", "nohost.test"};
    static const enum DNS_STATUS want[] = {DNS_NXDOMAIN, DNS_NULLMX, DNS_NOHOST};

    dns_free(f->d);
    f->d = new_dns(f, 0, &p);
    for (int i = 0; i < 3; i++)
        resolve(f, names[i]);
    run_until(f, 3);
    dnsmasq_stop(&f->m);
    for (int i = 0; i < 3; i++)
        resolve(f, names[i]);
    run_until(f, 6);
    for (int i = 0; i < 6; i++) {
        const struct result *r = &f->res[i];
        int k = strcmp(r->domain, names[0]) == 0 ? 0 : strcmp(r->domain, names[1]) == 0 ? 1 : 2;
        assert_string_equal(r->domain, names[k]);
        assert_int_equal(r->route.status, want[k]);
        int64_t left = r->route.expires_ms - now_ms();
        assert_true(left > 0 && left <= 1000);
    }
    run_for(f, 1100);
    resolve(f, "nothere.test");
    run_until(f, 7);
    assert_int_equal(f->res[6].route.status, DNS_TEMPFAIL);
}

/* no callback ever runs inside dns_resolve: fresh, shared, cached, invalid */
static void test_async_delivery(void **state)
{
    struct fixture *f = *state;

    resolve(f, "two.test");
    resolve(f, "two.test");
    assert_int_equal(f->nres, 0);
    run_until(f, 2);
    resolve(f, "two.test"); /* cached */
    resolve(f, "");         /* invalid names fail without a query */
    resolve(f, "bad name.test");
    resolve(f, "a\\.b.test");
    assert_int_equal(f->nres, 2);
    run_until(f, 6);
    assert_int_equal(f->res[2].route.status, DNS_OK);
    for (int i = 3; i < 6; i++) {
        assert_int_equal(f->res[i].route.status, DNS_NXDOMAIN);
        assert_non_null(strstr(f->res[i].route.error, "invalid domain name"));
    }
    /* a callback that resolves again gets its answer later, not nested */
    f->resolve_in_cb = "implicit.test";
    resolve(f, "two.test");
    run_until(f, 8);
    assert_string_equal(f->res[7].domain, "implicit.test");
    assert_int_equal(f->res[7].route.status, DNS_OK);
    /* upper case and a trailing dot are normalised */
    resolve(f, "TWO.Test.");
    run_until(f, 9);
    assert_string_equal(f->res[8].domain, "two.test");
    assert_int_equal(f->res[8].route.status, DNS_OK);
    assert_int_equal(f->inside, 0);
}

/* cancel while waiting for the server, while queued from the cache, from another
 * request's callback, and of ids that do not exist */
static void test_cancel(void **state)
{
    struct fixture *f = *state;

    uint64_t a = resolve(f, "two.test");
    uint64_t b = resolve(f, "two.test");
    assert_true(a != b);
    dns_cancel(f->d, a);
    run_until(f, 1);
    run_for(f, 50);
    assert_int_equal(f->nres, 1);

    uint64_t c = resolve(f, "two.test"); /* cache hit, queued */
    dns_cancel(f->d, c);
    dns_cancel(f->d, c);      /* twice: no-op */
    dns_cancel(f->d, b);      /* delivered already: no-op */
    dns_cancel(f->d, 999999); /* never issued */
    run_for(f, 50);
    assert_int_equal(f->nres, 1);

    /* the first of a batch cancels the second */
    resolve(f, "two.test");
    uint64_t e = resolve(f, "two.test");
    f->cancel_in_cb = e;
    run_for(f, 100);
    assert_int_equal(f->nres, 2);

    /* the only waiter cancelled: the lookup still completes and fills the cache */
    uint64_t g = resolve(f, "eq.test");
    dns_cancel(f->d, g);
    run_for(f, 200);
    assert_int_equal(f->nres, 2);
    dnsmasq_stop(&f->m);
    resolve(f, "eq.test");
    run_until(f, 3);
    assert_int_equal(f->res[2].route.status, DNS_OK);
}

/* concurrent resolves of one domain share one MX query and one A/AAAA pair */
static void test_shared_queries(void **state)
{
    struct fixture *f = *state;

    for (int i = 0; i < 5; i++)
        resolve(f, "shared.test");
    run_until(f, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(f->res[i].route.status, DNS_OK);
        assert_string_equal(f->res[i].route.host[0].name, "mx.shared.test");
    }
    run_for(f, 50);
    assert_int_equal(log_count(&f->m, "query[MX] shared.test"), 1);
    assert_int_equal(log_count(&f->m, "query[A] mx.shared.test"), 1);
    assert_int_equal(log_count(&f->m, "query[AAAA] mx.shared.test"), 1);
}

/* dns_free from a callback: the rest of the batch is dropped, nothing leaks
 * (ASan), and pending lookups are abandoned */
static void test_free_in_callback(void **state)
{
    struct fixture *f = *state;

    resolve(f, "two.test");
    run_until(f, 1);
    resolve(f, "two.test");
    resolve(f, "two.test");
    resolve(f, "eq.test"); /* in flight when the resolver goes */
    f->free_in_cb = true;
    run_for(f, 300);
    assert_int_equal(f->nres, 2);
    assert_null(f->d);
}

/* dns_free with lookups in flight and answers queued: no callback, no leak */
static void test_free_pending(void **state)
{
    struct fixture *f = *state;

    resolve(f, "two.test");
    resolve(f, "");
    dns_free(f->d);
    f->d = NULL;
    run_for(f, 100);
    assert_int_equal(f->nres, 0);
}

/* bad server strings are reported by dns_new */
static void test_bad_server(void **state)
{
    struct fixture *f = *state;
    const char *servers[] = {"not-an-address"};
    struct dns_params p = {.servers = servers, .nservers = 1};
    char err[256] = "";

    assert_null(dns_new(f->base, &p, err, sizeof err));
    assert_true(err[0] != '\0');
}

/* dns_answer_ttl on crafted replies: the smallest TTL, and bounds checks */
static void test_answer_ttl(void **state)
{
    /* id, flags, qd 1, an 3; question two.test MX; two MX (ttl 300 and 120) and an
     * A (ttl 5) in the answer, names compressed to the question */
    static const unsigned char msg[] = {
        0,   1, 0x81, 0x80, 0,    1,    0,    3, 0,  0,  0,    0,    3,    't',  'w',
        'o', 4, 't',  'e',  's',  't',  0,    0, 15, 0,  1,    0xC0, 12,   0,    15,
        0,   1, 0,    0,    0x01, 0x2C, 0,    4, 0,  10, 0xC0, 12,   0xC0, 12,   0,
        15,  0, 1,    0,    0,    0x00, 0x78, 0, 4,  0,  20,   0xC0, 12,   0xC0, 12,
        0,   1, 0,    1,    0,    0,    0,    5, 0,  4,  192,  0,    2,    1,
    };
    uint32_t ttl = 0;

    (void)state;
    assert_int_equal(dns_answer_ttl(msg, sizeof msg, 15, &ttl), 0);
    assert_int_equal(ttl, 120);
    assert_int_equal(dns_answer_ttl(msg, sizeof msg, 1, &ttl), 0);
    assert_int_equal(ttl, 5);
    assert_int_equal(dns_answer_ttl(msg, sizeof msg, 28, &ttl), -1);
    /* every truncation is rejected or still finds only complete records */
    for (size_t n = 0; n < sizeof msg; n++)
        assert_int_equal(dns_answer_ttl(msg, n, 1, &ttl), -1);
    assert_int_equal(dns_answer_ttl(NULL, 0, 15, &ttl), -1);

    /* a TTL with the top bit set reads as 0 (RFC 2181 8) */
    unsigned char big[sizeof msg];
    memcpy(big, msg, sizeof msg);
    big[32] = 0x80;
    assert_int_equal(dns_answer_ttl(big, sizeof big, 15, &ttl), 0);
    assert_int_equal(ttl, 0);
    /* a reserved label type in the question is malformed */
    memcpy(big, msg, sizeof msg);
    big[12] = 0x43;
    assert_int_equal(dns_answer_ttl(big, sizeof big, 15, &ttl), -1);
    /* an rdlength past the end is malformed */
    memcpy(big, msg, sizeof msg);
    big[sizeof msg - 5] = 9;
    assert_int_equal(dns_answer_ttl(big, sizeof big, 15, &ttl), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mx_two_prefs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefer_ipv6, setup, teardown),
        cmocka_unit_test_setup_teardown(test_equal_pref_shuffle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_implicit_mx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_implicit_no_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_mx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nxdomain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nohost, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mixed_hosts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cname, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_mx_tcp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_address_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tempfail_server_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tempfail_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_ttl, setup_short_ttl, teardown),
        cmocka_unit_test_setup_teardown(test_cache_refetch, setup_short_ttl, teardown),
        cmocka_unit_test_setup_teardown(test_negative_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_delivery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_server, setup, teardown),
        cmocka_unit_test(test_answer_ttl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
