/*
 * gen_acct - write a synthetic accounting.log for bench/report.sh.
 *
 * usage: gen_acct LINES [SEED] > accounting.log
 *
 * Records look like what log.c writes (jansson compact output, keys in insertion
 * order, "ts" first): mostly delivered, with deferrals, hard and soft bounces
 * carrying a category and per-recipient diagnostics, some async bounces, expired,
 * suppressed, complaint and unsubscribed records, shaping records the report
 * ignores, a few lines with escapes and a few with a nested value (which the
 * report's fast scanner hands to jansson).  Domains follow a skewed distribution
 * over a long tail, as real lists do.  Deterministic for a given seed; writes
 * through one large buffer.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GEN_DOMAINS   5000
#define GEN_CAMPAIGNS 300
#define GEN_SOURCES   16

static uint64_t gen_state = 0x9e3779b97f4a7c15ULL;

/* gen_rand - xorshift64* */
static uint64_t gen_rand(void)
{
    gen_state ^= gen_state >> 12;
    gen_state ^= gen_state << 25;
    gen_state ^= gen_state >> 27;
    return gen_state * 0x2545f4914f6cdd1dULL;
}

/* gen_below - a number in 0..n-1 */
static uint32_t gen_below(uint32_t n)
{
    return (uint32_t)((gen_rand() >> 32) * n >> 32);
}

static const char *const gen_big[] = {"gmail.com", "yahoo.com",  "outlook.com", "hotmail.com",
                                      "aol.com",   "icloud.com", "gmx.de",      "web.de",
                                      "orange.fr", "comcast.net"};

static const struct {
    const char *cat;
    int hard;
    const char *pre, *post; /* around a per-recipient id */
} gen_fail[] = {
    {"bad-mailbox", 1, "550 5.1.1 <",
     ">: Recipient address rejected: User unknown in virtual mailbox table"},
    {"bad-mailbox", 1,
     "550-5.1.1 The email account that you tried to reach does not exist. "
     "https://support.google.com/mail/?p=NoSuchUser ",
     " - gsmtp"},
    {"inactive-mailbox", 1, "550 5.2.1 The email account that you tried to reach is disabled. ",
     " - gsmtp"},
    {"quota-issues", 0, "452 4.2.2 The recipient's inbox is out of storage space. ", " - gsmtp"},
    {"spam-related", 0,
     "421 4.7.0 [TSS04] Messages from 192.0.2.10 temporarily deferred due to unexpected volume or "
     "user complaints - ",
     ""},
    {"policy-related", 1,
     "550 5.7.1 Service unavailable, Client host [192.0.2.10] blocked using Spamhaus. Ref ", ""},
    {"bad-domain", 1,
     "Host or domain name not found. Name service error for name=", " type=MX: Host not found"},
    {"no-answer-from-host", 0,
     "connect to mx.example.net[198.51.100.7]:25: Connection timed out (queue ", ")"},
    {"content-related", 1, "554 5.7.1 Message rejected due to content restrictions [", "]"},
};

/* gen_domain - a skewed pick: the big ten take most of the volume */
static void gen_domain(char *buf, size_t n)
{
    uint32_t r = gen_below(100);
    if (r < 70)
        snprintf(buf, n, "%s", gen_big[gen_below(r < 40 ? 2 : 10)]);
    else
        snprintf(buf, n, "d%u.example%u.net", gen_below(GEN_DOMAINS), gen_below(7));
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("usage: gen_acct LINES [SEED]\n", stderr);
        return 2;
    }
    uint64_t lines = strtoull(argv[1], NULL, 10);
    if (argc > 2) gen_state ^= strtoull(argv[2], NULL, 10) * 0x9e3779b97f4a7c15ULL;
    static char obuf[1 << 22];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);

    int64_t t0 = 1796284800; /* 2026-12-03T00:00:00Z */
    for (uint64_t i = 0; i < lines; i++) {
        int64_t sec = t0 + (int64_t)(i * 86400 / (lines ? lines : 1));
        int64_t rem = sec - t0;
        char ts[40], dom[64], rcpt[128], id[32], diag[300], camp[32];
        snprintf(ts, sizeof ts, "2026-12-03T%02d:%02d:%02d.%03uZ", (int)(rem / 3600),
                 (int)(rem / 60 % 60), (int)(rem % 60), gen_below(1000));
        gen_domain(dom, sizeof dom);
        snprintf(rcpt, sizeof rcpt, "user%u.%u@%s", gen_below(1000000), gen_below(100), dom);
        snprintf(camp, sizeof camp, "camp-%03u", gen_below(GEN_CAMPAIGNS));
        snprintf(id, sizeof id, "%08x%08x", (unsigned)gen_rand(), (unsigned)gen_rand());
        unsigned src = gen_below(GEN_SOURCES);
        unsigned r = gen_below(10000);

        const char *type = "delivered";
        int fail = -1, async = 0;
        if (r < 8650 || (r >= 9400 && r < 9700) || (r >= 9705 && r < 9712)) {
            type = "delivered";
        } else if (r < 9150) {
            type = "deferred";
            fail = (int)gen_below(9);
        } else if (r < 9300) {
            type = "bounced";
            fail = (int)gen_below(9);
        } else if (r < 9310) {
            type = "bounced";
            fail = 0;
            async = 1;
        } else if (r < 9320) {
            type = "expired";
        } else if (r < 9700) {
            printf("{\"ts\":\"%s\",\"type\":\"suppressed\",\"msgid\":\"%s\",\"campaign\":\"%s\","
                   "\"recipient\":\"%s\",\"domain\":\"%s\",\"reason\":\"hard-bounce\"}\n",
                   ts, id, camp, rcpt, dom);
            continue;
        } else if (r < 9705) {
            printf("{\"ts\":\"%s\",\"type\":\"complaint\",\"recipient\":\"%s\",\"campaign\":\"%s\","
                   "\"msgid\":\"%s\",\"feedback_type\":\"abuse\"}\n",
                   ts, rcpt, camp, id);
            continue;
        } else if (r < 9760) {
            printf("{\"ts\":\"%s\",\"type\":\"unsubscribed\",\"recipient\":\"%s\","
                   "\"campaign\":\"%s\",\"list\":\"news\",\"method\":\"one-click\"}\n",
                   ts, rcpt, camp);
            continue;
        } else if (r < 9765) {
            printf("{\"ts\":\"%s\",\"type\":\"backoff\",\"site\":\"%s\",\"source\":\"vmta%u\","
                   "\"rule\":\"throttle\",\"class\":\"default\",\"until\":\"%s\","
                   "\"max_connections\":2,\"rate\":5}\n",
                   ts, dom, src, ts);
            continue;
        } else if (r < 9766) {
            /* a nested value: the report's fast scanner declines, jansson reads it */
            printf("{\"ts\":\"%s\",\"type\":\"delivered\",\"msgid\":\"%s\",\"campaign\":\"%s\","
                   "\"recipient\":\"%s\",\"domain\":\"%s\",\"extra\":{\"tag\":[1,2]},"
                   "\"vmta\":\"vmta%u\",\"code\":250}\n",
                   ts, id, camp, rcpt, dom, src);
            continue;
        }
        int code = 250;
        const char *enh = "2.0.0", *cat = NULL;
        int hard = 0;
        if (fail >= 0) {
            snprintf(diag, sizeof diag, "%s%s%s", gen_fail[fail].pre, fail == 0 ? rcpt : id,
                     gen_fail[fail].post);
            cat = gen_fail[fail].cat;
            hard = strcmp(type, "deferred") != 0 && gen_fail[fail].hard;
            code = hard ? 550 : 451;
            enh = hard ? "5.1.1" : "4.7.0";
        } else if (strcmp(type, "expired") == 0) {
            snprintf(diag, sizeof diag, "message expired after 432000 s: %s", id);
            cat = "message-expired";
            code = 0;
            enh = "4.4.7";
        } else if (r % 97 == 0) {
            /* escapes and non-ASCII, which the fast scanner decodes itself */
            snprintf(diag, sizeof diag, "250 2.0.0 OK \\\"queued\\\" as %s \\u00e9t\xc3\xa9", id);
        } else {
            snprintf(diag, sizeof diag, "250 2.0.0 OK  %u %s - gsmtp", gen_below(2000000000), id);
        }
        printf(
            "{\"ts\":\"%s\",\"type\":\"%s\",\"msgid\":\"%s\",\"campaign\":\"%s\","
            "\"sender\":\"bounce-%s@mail.shop.example\",\"recipient\":\"%s\",\"domain\":\"%s\","
            "\"site\":\"%s\",\"mx\":\"mx1.%s\",\"ip\":\"198.51.100.%u\",\"source\":\"192.0.2.%u\","
            "\"tls\":\"TLSv1.3\",\"cipher\":\"TLS_AES_256_GCM_SHA384\",\"code\":%d,"
            "\"enh\":\"%s\",\"diag\":\"%s\",\"attempt\":%u,\"queue_s\":%u,"
            "\"vmta\":\"vmta%u\",\"pool\":\"pool%u\"",
            ts, type, id, camp, id, rcpt, dom, dom, dom, gen_below(250), src, code, enh, diag,
            1 + gen_below(3), gen_below(3600), src, src / 4);
        if (cat) printf(",\"category\":\"%s\",\"hard\":%s", cat, hard ? "true" : "false");
        if (async) fputs(",\"async\":true", stdout);
        if (strcmp(type, "deferred") == 0) printf(",\"next_attempt\":\"%s\"", ts);
        fputs("}\n", stdout);
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
