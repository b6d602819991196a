/*
 * dkim-sign - sign one message with a Volley DKIM key, for tests and operators.
 *
 *   dkim-sign KEYFILE DOMAIN SELECTOR [--simple-header] [--simple-body]
 *             [--time T] [--expire S] < msg > signed-msg
 *   dkim-sign --dns-record KEYFILE DOMAIN SELECTOR
 *   dkim-sign --check-record KEYFILE DOMAIN SELECTOR TXT
 *
 * The message on stdin must be CRLF lines, as it will be sent (not dot-stuffed);
 * the output is the DKIM-Signature field followed by the message unchanged.
 * --dns-record prints the TXT record to publish; --check-record says whether a
 * published record carries the key (exit 0 yes, 1 no, 2 malformed).  Exit 2 on
 * usage or input errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkim.h"
#include "util.h"

#define DKIM_SIGN_INPUT_MAX (64 * 1024 * 1024)

/* dkim_sign_usage - print the synopsis; exit 2 */
static void dkim_sign_usage(void)
{
    fprintf(stderr, "usage: dkim-sign KEYFILE DOMAIN SELECTOR [--simple-header] "
                    "[--simple-body] [--time T] [--expire S] < msg\n"
                    "       dkim-sign --dns-record KEYFILE DOMAIN SELECTOR\n"
                    "       dkim-sign --check-record KEYFILE DOMAIN SELECTOR TXT\n");
    exit(2);
}

/* dkim_sign_read - all of stdin into b; -1 past the cap or on a read error */
static int dkim_sign_read(struct vbuf *b)
{
    uint8_t chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
        if (vbuf_append(b, chunk, n) < 0) return -1;
    return ferror(stdin) ? -1 : 0;
}

int main(int argc, char **argv)
{
    char err[512];
    int mode = 0; /* 0 sign, 1 dns record, 2 check record */
    int ai = 1;

    if (argc > 1 && strcmp(argv[1], "--dns-record") == 0) {
        mode = 1;
        ai = 2;
    } else if (argc > 1 && strcmp(argv[1], "--check-record") == 0) {
        mode = 2;
        ai = 2;
    }
    if (argc - ai < 3) dkim_sign_usage();
    struct dkim_key *k = dkim_key_load(argv[ai], argv[ai + 1], argv[ai + 2], err, sizeof(err));
    if (k == NULL) {
        fprintf(stderr, "dkim-sign: %s\n", err);
        return 2;
    }
    ai += 3;

    if (mode == 1) {
        char rec[DKIM_DNS_RECORD_MAX];
        if (ai != argc || dkim_key_dns_record(k, rec, sizeof(rec)) < 0) dkim_sign_usage();
        printf("%s\n", rec);
        dkim_key_free(k);
        return 0;
    }
    if (mode == 2) {
        if (ai + 1 != argc) dkim_sign_usage();
        int m = dkim_key_matches_record(k, argv[ai], err, sizeof(err));
        printf("%s%s%s\n", m == 1 ? "match" : m == 0 ? "no match" : "malformed",
               m == 1 ? "" : ": ", m == 1 ? "" : err);
        dkim_key_free(k);
        return m == 1 ? 0 : m == 0 ? 1 : 2;
    }

    struct dkim_params p;
    memset(&p, 0, sizeof(p));
    for (; ai < argc; ai++) {
        if (strcmp(argv[ai], "--simple-header") == 0)
            p.hcanon = DKIM_CANON_SIMPLE;
        else if (strcmp(argv[ai], "--simple-body") == 0)
            p.bcanon = DKIM_CANON_SIMPLE;
        else if (strcmp(argv[ai], "--time") == 0 && ai + 1 < argc)
            p.timestamp = strtoll(argv[++ai], NULL, 10);
        else if (strcmp(argv[ai], "--expire") == 0 && ai + 1 < argc)
            p.expire = strtoll(argv[++ai], NULL, 10);
        else
            dkim_sign_usage();
    }
    struct vbuf msg, sig;
    vbuf_init(&msg, DKIM_SIGN_INPUT_MAX);
    vbuf_init(&sig, DKIM_SIG_MAX);
    if (dkim_sign_read(&msg) < 0) {
        fprintf(stderr, "dkim-sign: cannot read the message (over %d octets?)\n",
                DKIM_SIGN_INPUT_MAX);
        return 2;
    }
    if (dkim_sign(k, &p, msg.data, msg.len, &sig, err, sizeof(err)) < 0) {
        fprintf(stderr, "dkim-sign: %s\n", err);
        return 2;
    }
    int rc = (fwrite(sig.data, 1, sig.len, stdout) != sig.len ||
              (msg.len > 0 && fwrite(msg.data, 1, msg.len, stdout) != msg.len) ||
              fflush(stdout) != 0)
                 ? 2
                 : 0;
    vbuf_free(&msg);
    vbuf_free(&sig);
    dkim_key_free(k);
    return rc;
}
