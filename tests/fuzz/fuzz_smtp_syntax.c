/*
 * fuzz_smtp_syntax - libFuzzer target for smtp_syntax.
 *
 * The input is used whole as a command line, as a MAIL/RCPT argument (all four
 * is_rcpt x utf8_ok combinations), as a parameter string, as a domain and as UTF-8.
 * Besides the sanitizers catching overreads, each result is checked against the
 * contract: pointers stay inside the input, parsed paths obey the length limits and
 * re-validate, and the parameter loop always terminates.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_syntax.h"

/* FUZZ_CHECK - abort (a crash libFuzzer reports) when an invariant fails */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_ascii_only - true if none of the n octets of s is above 0x7f */
static bool fuzz_ascii_only(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] & 0x80) return false;
    return true;
}

/* fuzz_params - run the parameter loop over p (length n) and check it consumes input */
static void fuzz_params(const char *p, size_t n)
{
    const char *end = p + n;
    char key[32], val[128];
    int r;

    while ((r = smtp_param_next(&p, &n, key, sizeof(key), val, sizeof(val))) == 1) {
        FUZZ_CHECK(p <= end && p + n == end);
        FUZZ_CHECK(key[0] != '\0' && strlen(key) < sizeof(key));
        FUZZ_CHECK(strlen(val) < sizeof(val));
        for (const char *k = key; *k; k++)
            FUZZ_CHECK(!(*k >= 'a' && *k <= 'z'));
        FUZZ_CHECK(strchr(val, '=') == NULL);
    }
    FUZZ_CHECK(r == 0 || r == -1);
    FUZZ_CHECK(p + n == end);
    if (r == 0) FUZZ_CHECK(n == 0);
}

/* fuzz_path - parse s (length n) as a MAIL or RCPT argument and check the result */
static void fuzz_path(const char *s, size_t n, bool is_rcpt, bool utf8_ok)
{
    struct smtp_path path;
    const char *params;
    size_t plen;
    enum SMTP_PATH_ERR err = smtp_parse_path_arg(s, n, is_rcpt, utf8_ok, &path, &params, &plen);

    FUZZ_CHECK(smtp_path_err_str(err) != NULL);
    const char *reply = smtp_path_err_reply(err, is_rcpt);
    FUZZ_CHECK(reply != NULL && strlen(reply) > 4);
    if (err != SMTP_PATH_OK) {
        FUZZ_CHECK(reply[0] == '5');
        FUZZ_CHECK(params == NULL && plen == 0);
        return;
    }

    FUZZ_CHECK(params >= s && params + plen == s + n);
    FUZZ_CHECK(plen == 0 || params[0] != ' ');
    size_t alen = strlen(path.addr), dlen = strlen(path.domain);
    FUZZ_CHECK(alen <= SMTP_PATH_MAX && dlen <= SMTP_DOMAIN_MAX + 2);
    FUZZ_CHECK(path.local_len <= SMTP_LOCAL_MAX && path.local_len <= alen);
    if (path.is_null) {
        FUZZ_CHECK(!is_rcpt && alen == 0 && dlen == 0 && !path.utf8);
    } else if (dlen == 0) {
        /* only <postmaster> may go without a domain */
        FUZZ_CHECK(is_rcpt && alen == 10 && path.local_len == 10);
    } else {
        FUZZ_CHECK(path.local_len > 0 && path.addr[path.local_len] == '@');
        FUZZ_CHECK(path.local_len + 1 + dlen == alen);
        if (path.domain[0] == '[')
            FUZZ_CHECK(path.domain[dlen - 1] == ']');
        else
            FUZZ_CHECK(smtp_domain_valid(path.domain, dlen, utf8_ok) == 1);
    }
    if (!utf8_ok) FUZZ_CHECK(!path.utf8 && fuzz_ascii_only(path.addr, alen));
    FUZZ_CHECK(path.utf8 == !fuzz_ascii_only(path.addr, alen));
    FUZZ_CHECK(smtp_utf8_valid(path.addr, alen) == 1);
    fuzz_params(params, plen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *arg;
    size_t arglen;

    enum SMTP_CMD cmd = smtp_command(s, size, &arg, &arglen);
    FUZZ_CHECK(smtp_cmd_str(cmd) != NULL);
    if (size > 0) FUZZ_CHECK(arg >= s && arg + arglen == s + size);
    if (cmd == SMTP_CMD_MAIL || cmd == SMTP_CMD_RCPT)
        fuzz_path(arg, arglen, cmd == SMTP_CMD_RCPT, true);

    for (int is_rcpt = 0; is_rcpt < 2; is_rcpt++)
        for (int utf8_ok = 0; utf8_ok < 2; utf8_ok++)
            fuzz_path(s, size, is_rcpt != 0, utf8_ok != 0);

    fuzz_params(s, size);

    int utf8 = smtp_utf8_valid(s, size);
    int dom_ascii = smtp_domain_valid(s, size, false);
    int dom_utf8 = smtp_domain_valid(s, size, true);
    FUZZ_CHECK(utf8 == 0 || utf8 == 1);
    /* SMTPUTF8 only ever widens what is accepted */
    FUZZ_CHECK(!dom_ascii || dom_utf8);
    if (dom_utf8) FUZZ_CHECK(size <= SMTP_DOMAIN_MAX && utf8);
    if (dom_ascii) FUZZ_CHECK(fuzz_ascii_only(s, size));
    return 0;
}
