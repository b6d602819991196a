/*
 * fuzz_spf - libFuzzer target for the SPF evaluator over outside DNS text.
 *
 * The input is a set of TXT records, NUL-separated: the first is the record of the
 * domain checked, the others answer every further TXT lookup in turn (include,
 * redirect, exists targets, macro expansions).  A and MX lookups answer with one
 * address and one host; PTR with one name.  Checked besides memory safety: the
 * evaluation ends (the lookup limits hold: at most 10 DNS-querying terms, so a
 * bounded number of callbacks), and the result is one of the RFC 7208 results.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spf.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    const char *recs[16];
    int nrecs, next, calls;
};

static char **fz_strs(const char *s)
{
    char **v = malloc(sizeof *v);
    if (v) v[0] = strdup(s);
    return v;
}

static int fz_txt(void *arg, const char *name, char ***out, int *n)
{
    struct fz *f = arg;
    (void)name;
    f->calls++;
    if (f->next >= f->nrecs) {
        *out = NULL;
        *n = 0;
        return 0;
    }
    *out = fz_strs(f->recs[f->next++]);
    *n = *out ? 1 : 0;
    return 0;
}

static int fz_a(void *arg, const char *name, struct spf_addr **out, int *n)
{
    struct fz *f = arg;
    (void)name;
    f->calls++;
    *out = calloc(1, sizeof **out);
    *n = 0;
    if (*out && spf_addr_parse("192.0.2.10", *out) == 0) *n = 1;
    return 0;
}

static int fz_mx(void *arg, const char *name, char ***out, int *n)
{
    struct fz *f = arg;
    (void)name;
    f->calls++;
    *out = fz_strs("mx.example.test");
    *n = *out ? 1 : 0;
    return 0;
}

static int fz_ptr(void *arg, const struct spf_addr *addr, char ***out, int *n)
{
    struct fz *f = arg;
    (void)addr;
    f->calls++;
    *out = fz_strs("host.example.test");
    *n = *out ? 1 : 0;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192) return 0;
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    struct fz f = {.nrecs = 0};
    for (char *p = buf; p <= buf + size && f.nrecs < 16; p += strlen(p) + 1)
        f.recs[f.nrecs++] = p;
    struct spf_resolver r = {fz_txt, fz_a, fz_a, fz_mx, fz_ptr, &f};
    struct spf_request req = {.ip = "192.0.2.10", .domain = "example.test",
                              .sender = "user@example.test", .helo = "mta.example.test"};
    struct spf_outcome out;
    FUZZ_CHECK(spf_check(&r, &req, &out) == 0);
    FUZZ_CHECK(f.calls <= 200);
    FUZZ_CHECK(strcmp(spf_result_str(out.result), "unknown") != 0);
    free(buf);
    return 0;
}
