/*
 * fuzz_dns - libFuzzer target for dns_answer_ttl, the one piece of raw DNS
 * parsing dns.c does itself (c-ares 1.18 reports no MX TTL; everything else is
 * parsed by c-ares).
 *
 * The input is a DNS reply.  It is copied into a malloc'd buffer of exactly its
 * length so ASan sees any overread, then the TTL is read for MX, A, AAAA and a
 * type taken from the input.  Checked: the result is 0 or -1; a found TTL is read
 * per RFC 2181 8 (never above 2^31 - 1); the answer is deterministic; and every
 * proper prefix is parsed without reading past its end.  The reply also goes
 * through ares_parse_mx_reply, as dns_mx_cb does before asking for the TTL.
 */
#include <ares.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"

/* FUZZ_CHECK - abort (a crash libFuzzer reports) when an invariant fails */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

/* DNS messages are at most 64 KiB (TCP length prefix) */
#define FUZZ_DNS_MAX 65535

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_ttl - read the TTL of type from buf and check the contract */
static void fuzz_ttl(const unsigned char *buf, size_t len, int type)
{
    uint32_t ttl = 0xDEADBEEF, again = 0xDEADBEEF;
    int r = dns_answer_ttl(buf, len, type, &ttl);
    FUZZ_CHECK(r == 0 || r == -1);
    if (r == 0)
        FUZZ_CHECK(ttl <= INT32_MAX);
    else
        FUZZ_CHECK(ttl == 0xDEADBEEF); /* untouched on failure */
    FUZZ_CHECK(dns_answer_ttl(buf, len, type, &again) == r);
    if (r == 0) FUZZ_CHECK(again == ttl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_DNS_MAX) return 0;
    unsigned char *buf = malloc(size ? size : 1);
    FUZZ_CHECK(buf != NULL);
    memcpy(buf, data, size);

    fuzz_ttl(buf, size, 15);
    fuzz_ttl(buf, size, 1);
    fuzz_ttl(buf, size, 28);
    if (size > 0) fuzz_ttl(buf, size, buf[0]);

    /* a prefix in its own exact-size buffer, so a read past it is caught */
    if (size > 12) {
        size_t cut = 12 + (size_t)buf[size - 1] % (size - 12);
        unsigned char *pre = malloc(cut);
        FUZZ_CHECK(pre != NULL);
        memcpy(pre, buf, cut);
        fuzz_ttl(pre, cut, 15);
        free(pre);
    }

    struct ares_mx_reply *mx = NULL;
    if (size <= INT32_MAX && ares_parse_mx_reply(buf, (int)size, &mx) == ARES_SUCCESS)
        ares_free_data(mx);
    free(buf);
    return 0;
}
