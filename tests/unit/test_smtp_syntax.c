/*
 * test_smtp_syntax - unit tests for smtp_syntax: verbs, paths, limits, UTF-8,
 * ESMTP parameters, domains and reply wording.
 *
 * Every parser input is copied into a heap buffer of exactly its length before the
 * call, so a read one past the end is caught when the tests run under ASan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_syntax.h"

/* exact_copy - heap copy of the n octets of s with no terminator; caller frees */
static char *exact_copy(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

/* run_cmd - smtp_command on an exact-length copy of line; *argout gets the argument
 * as an offset into line, or -1 when it points outside it */
static enum SMTP_CMD run_cmd(const char *line, size_t len, long *argoff, size_t *arglen)
{
    char *buf = exact_copy(line, len);
    const char *arg = NULL;
    enum SMTP_CMD c = smtp_command(buf, len, &arg, arglen);
    assert_true(arg >= buf && arg <= buf + len);
    assert_true((size_t)(arg - buf) + *arglen == len);
    *argoff = (long)(arg - buf);
    free(buf);
    return c;
}

/* cmd_is - line classifies as want and its argument is the string wantarg */
static void cmd_is(const char *line, enum SMTP_CMD want, const char *wantarg)
{
    long off;
    size_t alen;
    assert_int_equal(run_cmd(line, strlen(line), &off, &alen), want);
    assert_int_equal(alen, strlen(wantarg));
    assert_memory_equal(line + off, wantarg, alen);
}

/* parse_n - smtp_parse_path_arg on an exact-length copy of the n octets of arg;
 * the parameters are returned as a NUL-terminated copy in paramsout (size 512) */
static enum SMTP_PATH_ERR parse_n(const char *arg, size_t n, bool is_rcpt, bool utf8_ok,
                                  struct smtp_path *out, char *paramsout)
{
    char *buf = exact_copy(arg, n);
    const char *params = (const char *)1;
    size_t plen = 99;
    enum SMTP_PATH_ERR err = smtp_parse_path_arg(buf, n, is_rcpt, utf8_ok, out, &params, &plen);
    if (err == SMTP_PATH_OK) {
        assert_true(params >= buf && params <= buf + n);
        assert_int_equal((size_t)(params - buf) + plen, n);
        assert_true(plen < 512);
        if (paramsout) {
            memcpy(paramsout, params, plen);
            paramsout[plen] = '\0';
        }
        assert_true(strlen(out->addr) <= SMTP_PATH_MAX);
        assert_true(strlen(out->domain) <= SMTP_DOMAIN_MAX + 2);
    } else {
        assert_null(params);
        assert_int_equal(plen, 0);
    }
    free(buf);
    return err;
}

/* parse - parse_n on a C string */
static enum SMTP_PATH_ERR parse(const char *arg, bool is_rcpt, bool utf8_ok, struct smtp_path *out)
{
    return parse_n(arg, strlen(arg), is_rcpt, utf8_ok, out, NULL);
}

/* mail_err - error for MAIL FROM argument arg without SMTPUTF8 */
static enum SMTP_PATH_ERR mail_err(const char *arg)
{
    struct smtp_path p;
    return parse(arg, false, false, &p);
}

/* rcpt_err - error for RCPT TO argument arg without SMTPUTF8 */
static enum SMTP_PATH_ERR rcpt_err(const char *arg)
{
    struct smtp_path p;
    return parse(arg, true, false, &p);
}

/* make_domain - valid n-octet hostname (labels of 50 or 51 octets, never a final
 * dot), NUL-terminated in buf; only its length can make it invalid */
static void make_domain(char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (i % 51 == 50 && i != n - 1) ? '.' : (char)('a' + i % 26);
    buf[n] = '\0';
}

/* fmt_path - "FROM:<local@domain>" / "TO:<...>" into buf (size bufsz) */
static void fmt_path(char *buf, size_t bufsz, bool is_rcpt, const char *local, const char *domain)
{
    int n = snprintf(buf, bufsz, "%s<%s@%s>", is_rcpt ? "TO:" : "FROM:", local, domain);
    assert_true(n > 0 && (size_t)n < bufsz);
}

/* fill - n copies of c, NUL-terminated, in buf */
static void fill(char *buf, char c, size_t n)
{
    memset(buf, c, n);
    buf[n] = '\0';
}

static void test_cmd_str(void **state)
{
    (void)state;
    assert_string_equal(smtp_cmd_str(SMTP_CMD_UNKNOWN), "UNKNOWN");
    assert_string_equal(smtp_cmd_str(SMTP_CMD_HELO), "HELO");
    assert_string_equal(smtp_cmd_str(SMTP_CMD_EHLO), "EHLO");
    assert_string_equal(smtp_cmd_str(SMTP_CMD_MAIL), "MAIL");
    assert_string_equal(smtp_cmd_str(SMTP_CMD_RCPT), "RCPT");
    assert_string_equal(smtp_cmd_str(SMTP_CMD_DATA), "DATA");
    assert_string_equal(smtp_cmd_str(SMTP_CMD_RSET), "RSET");
    assert_string_equal(smtp_cmd_str(SMTP_CMD_NOOP), "NOOP");
    assert_string_equal(smtp_cmd_str(SMTP_CMD_QUIT), "QUIT");
    assert_string_equal(smtp_cmd_str(SMTP_CMD_VRFY), "VRFY");
    assert_string_equal(smtp_cmd_str(SMTP_CMD_HELP), "HELP");
    assert_string_equal(smtp_cmd_str(SMTP_CMD_STARTTLS), "STARTTLS");
    assert_string_equal(smtp_cmd_str(SMTP_CMD_BDAT), "BDAT");
    assert_string_equal(smtp_cmd_str((enum SMTP_CMD)999), "UNKNOWN");
    assert_string_equal(smtp_cmd_str((enum SMTP_CMD)(-1)), "UNKNOWN");
}

static void test_cmd_verbs(void **state)
{
    (void)state;
    cmd_is("HELO mx.example", SMTP_CMD_HELO, "mx.example");
    cmd_is("EHLO mx.example", SMTP_CMD_EHLO, "mx.example");
    cmd_is("MAIL FROM:<a@b.example>", SMTP_CMD_MAIL, "FROM:<a@b.example>");
    cmd_is("RCPT TO:<a@b.example>", SMTP_CMD_RCPT, "TO:<a@b.example>");
    cmd_is("DATA", SMTP_CMD_DATA, "");
    cmd_is("RSET", SMTP_CMD_RSET, "");
    cmd_is("NOOP", SMTP_CMD_NOOP, "");
    cmd_is("QUIT", SMTP_CMD_QUIT, "");
    cmd_is("VRFY postmaster", SMTP_CMD_VRFY, "postmaster");
    cmd_is("HELP", SMTP_CMD_HELP, "");
    cmd_is("STARTTLS", SMTP_CMD_STARTTLS, "");
    cmd_is("BDAT 1000 LAST", SMTP_CMD_BDAT, "1000 LAST");
}

static void test_cmd_case_insensitive(void **state)
{
    (void)state;
    cmd_is("ehlo x", SMTP_CMD_EHLO, "x");
    cmd_is("Mail FROM:<>", SMTP_CMD_MAIL, "FROM:<>");
    cmd_is("rCpT TO:<a@b>", SMTP_CMD_RCPT, "TO:<a@b>");
    cmd_is("quit", SMTP_CMD_QUIT, "");
    cmd_is("StartTls", SMTP_CMD_STARTTLS, "");
    cmd_is("bdat 0 last", SMTP_CMD_BDAT, "0 last");
}

static void test_cmd_arg_boundaries(void **state)
{
    (void)state;
    /* exactly one space belongs to the verb; the rest is argument */
    cmd_is("QUIT ", SMTP_CMD_QUIT, "");
    cmd_is("NOOP  x", SMTP_CMD_NOOP, " x");
    cmd_is("MAIL  FROM:<>", SMTP_CMD_MAIL, " FROM:<>");
    cmd_is("MAIL", SMTP_CMD_MAIL, "");
    cmd_is("DATA extra", SMTP_CMD_DATA, "extra");
}

static void test_cmd_unknown(void **state)
{
    (void)state;
    cmd_is("MAILX", SMTP_CMD_UNKNOWN, "");
    cmd_is("MAILX FROM:<>", SMTP_CMD_UNKNOWN, "");
    cmd_is("QUITE", SMTP_CMD_UNKNOWN, "");
    cmd_is("STARTTLSX", SMTP_CMD_UNKNOWN, "");
    cmd_is("MAI", SMTP_CMD_UNKNOWN, "");
    cmd_is("", SMTP_CMD_UNKNOWN, "");
    cmd_is(" QUIT", SMTP_CMD_UNKNOWN, "");
    cmd_is("QUIT\t", SMTP_CMD_UNKNOWN, "");
    cmd_is("MAIL\tFROM:<>", SMTP_CMD_UNKNOWN, "");
    cmd_is("MAIL:FROM", SMTP_CMD_UNKNOWN, "");
    cmd_is("XCLIENT ADDR=1.2.3.4", SMTP_CMD_UNKNOWN, "");
    cmd_is("Q\xc3\xbcIT", SMTP_CMD_UNKNOWN, "");

    /* an embedded NUL is an octet like any other, not an end of line */
    long off;
    size_t alen;
    assert_int_equal(run_cmd("QUIT\0", 5, &off, &alen), SMTP_CMD_UNKNOWN);
    assert_int_equal(run_cmd("QUIT \0", 6, &off, &alen), SMTP_CMD_QUIT);
    assert_int_equal(off, 5);
    assert_int_equal(alen, 1);
}

static void test_cmd_null_outputs(void **state)
{
    (void)state;
    assert_int_equal(smtp_command("RSET", 4, NULL, NULL), SMTP_CMD_RSET);
    assert_int_equal(smtp_command("HELO x", 6, NULL, NULL), SMTP_CMD_HELO);
    assert_int_equal(smtp_command(NULL, 0, NULL, NULL), SMTP_CMD_UNKNOWN);
    /* the length is obeyed: "QUIT" inside a longer string */
    assert_int_equal(smtp_command("QUITTER", 4, NULL, NULL), SMTP_CMD_QUIT);
}

static void test_path_basic(void **state)
{
    (void)state;
    struct smtp_path p;
    char params[512];

    assert_int_equal(parse_n("FROM:<Alice@Mail.Example.COM>", 29, false, false, &p, params),
                     SMTP_PATH_OK);
    assert_string_equal(p.addr, "Alice@Mail.Example.COM");
    assert_string_equal(p.domain, "mail.example.com");
    assert_int_equal(p.local_len, 5);
    assert_false(p.is_null);
    assert_false(p.utf8);
    assert_string_equal(params, "");

    assert_int_equal(parse("TO:<bob@example.org>", true, false, &p), SMTP_PATH_OK);
    assert_string_equal(p.addr, "bob@example.org");
    assert_string_equal(p.domain, "example.org");
    assert_int_equal(p.local_len, 3);

    /* keyword case and one optional space after the colon */
    assert_int_equal(mail_err("from:<a@b.example>"), SMTP_PATH_OK);
    assert_int_equal(rcpt_err("tO:<a@b.example>"), SMTP_PATH_OK);
    assert_int_equal(parse("FROM: <a@b.example>", false, false, &p), SMTP_PATH_OK);
    assert_string_equal(p.addr, "a@b.example");
    assert_int_equal(rcpt_err("TO: <a@b.example>"), SMTP_PATH_OK);

    /* atext specials */
    assert_int_equal(parse("TO:<a.b+tag!#$%&'*/=?^_`{|}~-x@b.example>", true, false, &p),
                     SMTP_PATH_OK);
    assert_string_equal(p.addr, "a.b+tag!#$%&'*/=?^_`{|}~-x@b.example");
}

static void test_path_keyword_errors(void **state)
{
    (void)state;
    assert_int_equal(mail_err(""), SMTP_PATH_SYNTAX);
    assert_int_equal(mail_err("FROM"), SMTP_PATH_SYNTAX);
    assert_int_equal(mail_err("FROM:"), SMTP_PATH_SYNTAX);
    assert_int_equal(mail_err("FROM<a@b.example>"), SMTP_PATH_SYNTAX);
    assert_int_equal(mail_err("TO:<a@b.example>"), SMTP_PATH_SYNTAX);
    assert_int_equal(rcpt_err("FROM:<a@b.example>"), SMTP_PATH_SYNTAX);
    assert_int_equal(mail_err("FROM :<a@b.example>"), SMTP_PATH_SYNTAX);
    assert_int_equal(mail_err(" FROM:<a@b.example>"), SMTP_PATH_SYNTAX);
    /* only one space is tolerated */
    assert_int_equal(mail_err("FROM:  <a@b.example>"), SMTP_PATH_SYNTAX);
    assert_int_equal(mail_err("FROM: "), SMTP_PATH_SYNTAX);
}

static void test_path_brackets(void **state)
{
    (void)state;
    assert_int_equal(mail_err("FROM:a@b.example"), SMTP_PATH_NO_BRACKETS);
    assert_int_equal(rcpt_err("TO:a@b.example"), SMTP_PATH_NO_BRACKETS);
    assert_int_equal(rcpt_err("TO: a@b.example"), SMTP_PATH_NO_BRACKETS);
    assert_int_equal(mail_err("FROM:<a@b.example"), SMTP_PATH_NO_BRACKETS);
    assert_int_equal(mail_err("FROM:<a@b.example SIZE=10"), SMTP_PATH_NO_BRACKETS);
    assert_int_equal(mail_err("FROM:<a"), SMTP_PATH_NO_BRACKETS);
    assert_int_equal(mail_err("FROM:<"), SMTP_PATH_NO_BRACKETS);
    assert_int_equal(mail_err("FROM:<a@[192.0.2.1]"), SMTP_PATH_NO_BRACKETS);
    assert_int_equal(mail_err("FROM:<a@[192.0.2.1"), SMTP_PATH_NO_BRACKETS);
    /* junk straight after '>' */
    assert_int_equal(mail_err("FROM:<a@b.example>x"), SMTP_PATH_SYNTAX);
    assert_int_equal(mail_err("FROM:<a@b.example>>"), SMTP_PATH_SYNTAX);
    assert_int_equal(mail_err("FROM:<>x"), SMTP_PATH_SYNTAX);
    assert_int_equal(mail_err("FROM:<<a@b.example>>"), SMTP_PATH_BAD_LOCAL);
}

static void test_path_null(void **state)
{
    (void)state;
    struct smtp_path p;
    char params[512];

    assert_int_equal(parse_n("FROM:<>", 7, false, false, &p, params), SMTP_PATH_OK);
    assert_true(p.is_null);
    assert_string_equal(p.addr, "");
    assert_string_equal(p.domain, "");
    assert_int_equal(p.local_len, 0);
    assert_string_equal(params, "");

    assert_int_equal(parse_n("FROM:<> BODY=8BITMIME", 21, false, false, &p, params), SMTP_PATH_OK);
    assert_true(p.is_null);
    assert_string_equal(params, "BODY=8BITMIME");

    assert_int_equal(rcpt_err("TO:<>"), SMTP_PATH_NULL_RCPT);
    assert_int_equal(rcpt_err("TO: <>"), SMTP_PATH_NULL_RCPT);
}

static void test_path_postmaster(void **state)
{
    (void)state;
    struct smtp_path p;

    assert_int_equal(parse("TO:<postmaster>", true, false, &p), SMTP_PATH_OK);
    assert_string_equal(p.addr, "postmaster");
    assert_string_equal(p.domain, "");
    assert_int_equal(p.local_len, 10);
    assert_false(p.is_null);
    assert_int_equal(parse("TO:<PostMaster>", true, false, &p), SMTP_PATH_OK);
    assert_string_equal(p.addr, "PostMaster");
    assert_int_equal(rcpt_err("TO:<Postmaster> NOTIFY=NEVER"), SMTP_PATH_OK);
    assert_int_equal(rcpt_err("TO:<postmaster@example.org>"), SMTP_PATH_OK);

    /* only the bare word, only for RCPT */
    assert_int_equal(mail_err("FROM:<postmaster>"), SMTP_PATH_NO_DOMAIN);
    assert_int_equal(rcpt_err("TO:<postmasterx>"), SMTP_PATH_NO_DOMAIN);
    assert_int_equal(rcpt_err("TO:<postmaste>"), SMTP_PATH_NO_DOMAIN);
    assert_int_equal(rcpt_err("TO:<\"postmaster\">"), SMTP_PATH_NO_DOMAIN);
    assert_int_equal(rcpt_err("TO:<user>"), SMTP_PATH_NO_DOMAIN);
    assert_int_equal(rcpt_err("TO:<user@>"), SMTP_PATH_NO_DOMAIN);
    assert_int_equal(mail_err("FROM:<user@>"), SMTP_PATH_NO_DOMAIN);
}

static void test_path_local_part(void **state)
{
    (void)state;
    assert_int_equal(mail_err("FROM:<.a@b.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(mail_err("FROM:<a.@b.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(mail_err("FROM:<a..b@b.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(mail_err("FROM:<.@b.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(mail_err("FROM:<a b@b.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(mail_err("FROM:<a,b@b.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(mail_err("FROM:<a(b)@b.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(mail_err("FROM:<a\\b@b.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(mail_err("FROM:<a\"b\"@b.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(mail_err("FROM:<a;b@b.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(mail_err("FROM:<a\x7f@b.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(mail_err("FROM:<a\x01@b.example>"), SMTP_PATH_BAD_LOCAL);

    struct smtp_path p;
    assert_int_equal(parse_n("FROM:<a\0b@b.example>", 20, false, false, &p, NULL),
                     SMTP_PATH_BAD_LOCAL);
}

static void test_path_quoted(void **state)
{
    (void)state;
    struct smtp_path p;

    assert_int_equal(parse("TO:<\"john doe\"@example.com>", true, false, &p), SMTP_PATH_OK);
    assert_string_equal(p.addr, "\"john doe\"@example.com");
    assert_int_equal(p.local_len, 10);
    assert_string_equal(p.domain, "example.com");

    /* quoted-pair, and specials that would end a dot-string */
    assert_int_equal(parse("TO:<\"a\\\"b\"@x.example>", true, false, &p), SMTP_PATH_OK);
    assert_string_equal(p.addr, "\"a\\\"b\"@x.example");
    assert_int_equal(parse("TO:<\"a>b@c\"@x.example>", true, false, &p), SMTP_PATH_OK);
    assert_string_equal(p.addr, "\"a>b@c\"@x.example");
    assert_int_equal(parse("TO:<\"a\\\\\"@x.example>", true, false, &p), SMTP_PATH_OK);
    assert_int_equal(parse("TO:<\"\"@x.example>", true, false, &p), SMTP_PATH_OK);
    assert_int_equal(p.local_len, 2);
    assert_int_equal(rcpt_err("TO:<\"a..b. ,;:<>[]\"@x.example>"), SMTP_PATH_OK);

    assert_int_equal(rcpt_err("TO:<\"abc@x.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(rcpt_err("TO:<\"abc"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(rcpt_err("TO:<\"abc\\"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(rcpt_err("TO:<\"a\tb\"@x.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(rcpt_err("TO:<\"a\\\tb\"@x.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(rcpt_err("TO:<\"a\"b@x.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(rcpt_err("TO:<\"a\".b@x.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(rcpt_err("TO:<\"a\">"), SMTP_PATH_NO_DOMAIN);
    assert_int_equal(rcpt_err("TO:<\"a\""), SMTP_PATH_NO_BRACKETS);
}

static void test_path_domain(void **state)
{
    (void)state;
    assert_int_equal(mail_err("FROM:<a@b>"), SMTP_PATH_OK);
    assert_int_equal(mail_err("FROM:<a@b-c.d-e.example>"), SMTP_PATH_OK);
    assert_int_equal(mail_err("FROM:<a@123.example>"), SMTP_PATH_OK);
    assert_int_equal(mail_err("FROM:<a@-b.example>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(mail_err("FROM:<a@b-.example>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(mail_err("FROM:<a@b..example>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(mail_err("FROM:<a@.b.example>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(mail_err("FROM:<a@b.example.>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(mail_err("FROM:<a@b_c.example>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(mail_err("FROM:<a@b c.example>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(mail_err("FROM:<a@b@c.example>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@b.example SIZE=1>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@]>"), SMTP_PATH_BAD_DOMAIN);
}

static void test_path_literals(void **state)
{
    (void)state;
    struct smtp_path p;

    assert_int_equal(parse("TO:<a@[192.0.2.1]>", true, false, &p), SMTP_PATH_OK);
    assert_string_equal(p.addr, "a@[192.0.2.1]");
    assert_string_equal(p.domain, "[192.0.2.1]");
    assert_int_equal(rcpt_err("TO:<a@[0.0.0.0]>"), SMTP_PATH_OK);
    assert_int_equal(rcpt_err("TO:<a@[255.255.255.255]>"), SMTP_PATH_OK);
    assert_int_equal(rcpt_err("TO:<a@[010.001.0.1]>"), SMTP_PATH_OK);

    assert_int_equal(rcpt_err("TO:<a@[256.0.0.1]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[1.2.3]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[1.2.3.4.5]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[1.2.3.]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[1..2.3]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[0001.2.3.4]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[ 1.2.3.4]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[1.2.3.4]x>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[1.2.3.4>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@x[1.2.3.4]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[example.com]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[x-tag:foo]>"), SMTP_PATH_BAD_DOMAIN);
}

static void test_path_ipv6(void **state)
{
    (void)state;
    struct smtp_path p;

    assert_int_equal(parse("TO:<a@[IPv6:2001:db8::1]>", true, false, &p), SMTP_PATH_OK);
    assert_string_equal(p.addr, "a@[IPv6:2001:db8::1]");
    /* a literal is kept as given, tag case and hex case included */
    assert_int_equal(parse("TO:<a@[ipv6:2001:DB8::1]>", true, false, &p), SMTP_PATH_OK);
    assert_string_equal(p.domain, "[ipv6:2001:DB8::1]");
    assert_int_equal(rcpt_err("TO:<a@[IPv6:::1]>"), SMTP_PATH_OK);
    assert_int_equal(rcpt_err("TO:<a@[IPv6:1:2:3:4:5:6:7:8]>"), SMTP_PATH_OK);
    assert_int_equal(rcpt_err("TO:<a@[IPv6:::ffff:192.0.2.1]>"), SMTP_PATH_OK);
    assert_int_equal(rcpt_err("TO:<a@[IPv6:ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]>"),
                     SMTP_PATH_OK);

    assert_int_equal(rcpt_err("TO:<a@[IPv6:]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[IPv6:2001:db8::g]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[IPv6:1:2:3:4:5:6:7:8:9]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[IPv6:1::2::3]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[IPv6:12345::1]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[IPv6:192.0.2.1]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[IPv6:fe80::1%eth0]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[2001:db8::1]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<a@[IPv6 2001:db8::1]>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(
        rcpt_err("TO:<a@[IPv6:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000]>"),
        SMTP_PATH_BAD_DOMAIN);

    assert_int_equal(parse_n("TO:<a@[IPv6:::1\0]>", 18, true, false, &p, NULL),
                     SMTP_PATH_BAD_DOMAIN);
}

static void test_path_source_route(void **state)
{
    (void)state;
    struct smtp_path p;
    char params[512];

    assert_int_equal(parse_n("TO:<@a.example,@b.example:user@d.example> NOTIFY=NEVER", 54, true,
                             false, &p, params),
                     SMTP_PATH_OK);
    assert_string_equal(p.addr, "user@d.example");
    assert_string_equal(p.domain, "d.example");
    assert_int_equal(p.local_len, 4);
    assert_string_equal(params, "NOTIFY=NEVER");

    assert_int_equal(parse("FROM:<@relay.example:\"x y\"@D.Example>", false, false, &p),
                     SMTP_PATH_OK);
    assert_string_equal(p.addr, "\"x y\"@D.Example");
    assert_string_equal(p.domain, "d.example");
    assert_int_equal(rcpt_err("TO:<@a:postmaster>"), SMTP_PATH_OK);

    assert_int_equal(rcpt_err("TO:<@-bad.example:u@d.example>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<@:u@d.example>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<@a,:u@d.example>"), SMTP_PATH_SYNTAX);
    assert_int_equal(rcpt_err("TO:<@a,b:u@d.example>"), SMTP_PATH_SYNTAX);
    assert_int_equal(rcpt_err("TO:<@a.example>"), SMTP_PATH_SYNTAX);
    assert_int_equal(rcpt_err("TO:<@a.example"), SMTP_PATH_SYNTAX);
    assert_int_equal(rcpt_err("TO:<@a.example:>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(rcpt_err("TO:<@a.example:@b.example>"), SMTP_PATH_BAD_LOCAL);
    assert_int_equal(rcpt_err("TO:<@a.example:u@d.example"), SMTP_PATH_NO_BRACKETS);
    assert_int_equal(rcpt_err("TO:<@[1.2.3.4]:u@d.example>"), SMTP_PATH_BAD_DOMAIN);
    assert_int_equal(rcpt_err("TO:<@\xc3\xa9.example:u@d.example>"), SMTP_PATH_NEED_SMTPUTF8);
    struct smtp_path q;
    assert_int_equal(parse("TO:<@\xc3\xa9.example:u@d.example>", true, true, &q), SMTP_PATH_OK);
    /* a long route is checked but not counted in the 256-octet limit */
    char route[300], arg[512];
    make_domain(route, 250);
    assert_true(snprintf(arg, sizeof(arg), "TO:<@%s:u@d.example>", route) > 0);
    assert_int_equal(rcpt_err(arg), SMTP_PATH_OK);
}

static void test_path_local_length(void **state)
{
    (void)state;
    char local[80], arg[512];
    struct smtp_path p;

    fill(local, 'a', 64);
    fmt_path(arg, sizeof(arg), true, local, "example.com");
    assert_int_equal(parse(arg, true, false, &p), SMTP_PATH_OK);
    assert_int_equal(p.local_len, 64);

    fill(local, 'a', 65);
    fmt_path(arg, sizeof(arg), true, local, "example.com");
    assert_int_equal(rcpt_err(arg), SMTP_PATH_LOCAL_TOO_LONG);
    fmt_path(arg, sizeof(arg), false, local, "example.com");
    assert_int_equal(mail_err(arg), SMTP_PATH_LOCAL_TOO_LONG);

    /* quotes count: 62 octets inside plus two quotes is 64 */
    local[0] = '"';
    fill(local + 1, 'q', 62);
    local[63] = '"';
    local[64] = '\0';
    fmt_path(arg, sizeof(arg), true, local, "example.com");
    assert_int_equal(rcpt_err(arg), SMTP_PATH_OK);
    local[0] = '"';
    fill(local + 1, 'q', 63);
    local[64] = '"';
    local[65] = '\0';
    fmt_path(arg, sizeof(arg), true, local, "example.com");
    assert_int_equal(rcpt_err(arg), SMTP_PATH_LOCAL_TOO_LONG);
}

static void test_path_domain_length(void **state)
{
    (void)state;
    char dom[300], arg[600];
    struct smtp_path p;

    /* local "a" + '@' + 254 = 255 octets: fits every limit */
    make_domain(dom, 254);
    fmt_path(arg, sizeof(arg), true, "a", dom);
    assert_int_equal(parse(arg, true, false, &p), SMTP_PATH_OK);
    assert_string_equal(p.domain, dom);
    assert_int_equal(strlen(p.addr), 256);

    /* 255 is a legal domain but "a@" + 255 is 257 octets: path too long */
    make_domain(dom, 255);
    assert_int_equal(smtp_domain_valid(dom, 255, false), 1);
    fmt_path(arg, sizeof(arg), true, "a", dom);
    assert_int_equal(rcpt_err(arg), SMTP_PATH_TOO_LONG);

    make_domain(dom, 256);
    fmt_path(arg, sizeof(arg), true, "a", dom);
    assert_int_equal(rcpt_err(arg), SMTP_PATH_DOMAIN_TOO_LONG);
    fmt_path(arg, sizeof(arg), false, "a", dom);
    assert_int_equal(mail_err(arg), SMTP_PATH_DOMAIN_TOO_LONG);
}

static void test_path_total_length(void **state)
{
    (void)state;
    char dom[300], arg[600], local[80];
    struct smtp_path p;

    /* 64 + 1 + 191 = 256: the limit exactly */
    fill(local, 'l', 64);
    make_domain(dom, 191);
    fmt_path(arg, sizeof(arg), false, local, dom);
    assert_int_equal(parse(arg, false, false, &p), SMTP_PATH_OK);
    assert_int_equal(strlen(p.addr), SMTP_PATH_MAX);

    make_domain(dom, 192);
    fmt_path(arg, sizeof(arg), false, local, dom);
    assert_int_equal(mail_err(arg), SMTP_PATH_TOO_LONG);
    fmt_path(arg, sizeof(arg), true, local, dom);
    assert_int_equal(rcpt_err(arg), SMTP_PATH_TOO_LONG);
}

static void test_path_utf8(void **state)
{
    (void)state;
    struct smtp_path p;
    /* 用户@例子.广告 */
    const char *intl =
        "TO:<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a>";

    assert_int_equal(parse(intl, true, true, &p), SMTP_PATH_OK);
    assert_true(p.utf8);
    assert_int_equal(p.local_len, 6);
    assert_string_equal(p.domain, "\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a");
    assert_int_equal(parse(intl, true, false, &p), SMTP_PATH_NEED_SMTPUTF8);

    /* only the local part or only the domain non-ASCII */
    assert_int_equal(parse("TO:<j\xc3\xb6rg@example.com>", true, false, &p),
                     SMTP_PATH_NEED_SMTPUTF8);
    assert_int_equal(parse("TO:<j\xc3\xb6rg@example.com>", true, true, &p), SMTP_PATH_OK);
    assert_true(p.utf8);
    assert_int_equal(parse("TO:<jorg@B\xc3\xbc\x63her.Example>", true, false, &p),
                     SMTP_PATH_NEED_SMTPUTF8);
    assert_int_equal(parse("TO:<jorg@B\xc3\x9c\x63her.Example>", true, true, &p), SMTP_PATH_OK);
    /* only ASCII letters are lowered: Ü stays Ü */
    assert_string_equal(p.domain, "b\xc3\x9c\x63her.example");
    assert_int_equal(parse("TO:<\"\xc3\xa9t\xc3\xa9\"@example.com>", true, false, &p),
                     SMTP_PATH_NEED_SMTPUTF8);
    assert_int_equal(parse("TO:<\"\xc3\xa9t\xc3\xa9\"@example.com>", true, true, &p), SMTP_PATH_OK);
    assert_true(p.utf8);

    /* ASCII-only with SMTPUTF8 is not marked */
    assert_int_equal(parse("TO:<a@b.example>", true, true, &p), SMTP_PATH_OK);
    assert_false(p.utf8);
}

static void test_path_bad_utf8(void **state)
{
    (void)state;
    struct smtp_path p;
    static const char *const bad_local[] = {
        "FROM:<\xff@example.com>",              /* never valid */
        "FROM:<a\xc0\xaf@example.com>",         /* overlong '/' */
        "FROM:<a\xc1\xbf@example.com>",         /* overlong */
        "FROM:<a\xe0\x80\xaf@example.com>",     /* overlong, 3 octets */
        "FROM:<a\xf0\x80\x80\xaf@example.com>", /* overlong, 4 octets */
        "FROM:<a\xed\xa0\x80@example.com>",     /* surrogate U+D800 */
        "FROM:<a\xf4\x90\x80\x80@example.com>", /* above U+10FFFF */
        "FROM:<a\xc3@example.com>",             /* truncated */
        "FROM:<a\xe4\xbe@example.com>",         /* truncated */
        "FROM:<a\x80@example.com>",             /* lone continuation */
        "FROM:<\"a\xc3\"@example.com>",         /* in a quoted string */
    };
    for (size_t i = 0; i < sizeof(bad_local) / sizeof(bad_local[0]); i++) {
        assert_int_equal(parse(bad_local[i], false, true, &p), SMTP_PATH_BAD_UTF8);
        assert_int_equal(parse(bad_local[i], false, false, &p), SMTP_PATH_NEED_SMTPUTF8);
    }
    assert_int_equal(parse("FROM:<a@\xc0\xae.example>", false, true, &p), SMTP_PATH_BAD_UTF8);
    assert_int_equal(parse("FROM:<a@\xc0\xae.example>", false, false, &p), SMTP_PATH_NEED_SMTPUTF8);
    assert_int_equal(parse("FROM:<a@ex\xed\xbf\xbf.com>", false, true, &p), SMTP_PATH_BAD_UTF8);
    /* non-ASCII is never allowed in a literal */
    assert_int_equal(parse("FROM:<a@[1.2.3.\xc3\xa9]>", false, true, &p), SMTP_PATH_BAD_DOMAIN);
}

static void test_path_params(void **state)
{
    (void)state;
    struct smtp_path p;
    char params[512];
    const char *arg = "FROM:<a@b.example> SIZE=123 BODY=8BITMIME SMTPUTF8";

    assert_int_equal(parse_n(arg, strlen(arg), false, false, &p, params), SMTP_PATH_OK);
    assert_string_equal(params, "SIZE=123 BODY=8BITMIME SMTPUTF8");

    arg = "FROM:<a@b.example>   SIZE=1  ";
    assert_int_equal(parse_n(arg, strlen(arg), false, false, &p, params), SMTP_PATH_OK);
    assert_string_equal(params, "SIZE=1  ");

    arg = "FROM:<a@b.example>   ";
    assert_int_equal(parse_n(arg, strlen(arg), false, false, &p, params), SMTP_PATH_OK);
    assert_string_equal(params, "");

    assert_int_equal(mail_err("FROM:<a@b.example>SIZE=1"), SMTP_PATH_SYNTAX);
    assert_int_equal(mail_err("FROM:<a@b.example>\tSIZE=1"), SMTP_PATH_SYNTAX);

    /* NULL outputs for params are allowed */
    assert_int_equal(smtp_parse_path_arg("FROM:<>", 7, false, false, &p, NULL, NULL), SMTP_PATH_OK);
}

/* param_expect - the next parameter of *p is key=val (want 1), or want is 0/-1 */
static void param_expect(const char **p, size_t *plen, int want, const char *wkey, const char *wval)
{
    char key[32], val[64];
    assert_int_equal(smtp_param_next(p, plen, key, sizeof(key), val, sizeof(val)), want);
    if (want == 1) {
        assert_string_equal(key, wkey);
        assert_string_equal(val, wval);
    }
}

static void test_param_next(void **state)
{
    (void)state;
    const char *s = "SIZE=123 BODY=8BITMIME SMTPUTF8";
    char *buf = exact_copy(s, strlen(s));
    const char *p = buf;
    size_t plen = strlen(s);

    param_expect(&p, &plen, 1, "SIZE", "123");
    param_expect(&p, &plen, 1, "BODY", "8BITMIME");
    param_expect(&p, &plen, 1, "SMTPUTF8", "");
    assert_int_equal(plen, 0);
    param_expect(&p, &plen, 0, NULL, NULL);
    param_expect(&p, &plen, 0, NULL, NULL);
    free(buf);

    /* keyword upper-cased, value kept; extra spaces skipped */
    s = "  size=1Ab   ret=HDRS envid=QQ314159 x-custom-1 ";
    buf = exact_copy(s, strlen(s));
    p = buf;
    plen = strlen(s);
    param_expect(&p, &plen, 1, "SIZE", "1Ab");
    param_expect(&p, &plen, 1, "RET", "HDRS");
    param_expect(&p, &plen, 1, "ENVID", "QQ314159");
    param_expect(&p, &plen, 1, "X-CUSTOM-1", "");
    param_expect(&p, &plen, 0, NULL, NULL);
    assert_int_equal(plen, 0);
    free(buf);

    /* RFC 3461 ORCPT value holds '+' and ';' */
    s = "ORCPT=rfc822;a+2Bb@c.example";
    p = s;
    plen = strlen(s);
    param_expect(&p, &plen, 1, "ORCPT", "rfc822;a+2Bb@c.example");

    p = "";
    plen = 0;
    param_expect(&p, &plen, 0, NULL, NULL);
    p = NULL;
    plen = 0;
    param_expect(&p, &plen, 0, NULL, NULL);
}

static void test_param_next_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "=1",      "SIZE=",      "SIZE=1=2",  "-X",        "_X",
        "SI_ZE=1", "SIZE:1",     "SIZE=\x7f", "SIZE=a\tb", "BODY=8BIT\xc3\xa9",
        "SIZE= 1", "\xc3\xa9=1", "SIZE=\x01",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *p = bad[i];
        size_t plen = strlen(bad[i]);
        char key[32], val[64];
        assert_int_equal(smtp_param_next(&p, &plen, key, sizeof(key), val, sizeof(val)), -1);
        /* not advanced, outputs emptied */
        assert_ptr_equal(p, bad[i]);
        assert_int_equal(plen, strlen(bad[i]));
        assert_string_equal(key, "");
        assert_string_equal(val, "");
    }

    /* a good one then a bad one: the loop stops at the bad one */
    const char *p = "SIZE=1 BO?DY=x";
    size_t plen = strlen(p);
    param_expect(&p, &plen, 1, "SIZE", "1");
    param_expect(&p, &plen, -1, NULL, NULL);
    assert_string_equal(p, " BO?DY=x");
}

static void test_param_next_sizes(void **state)
{
    (void)state;
    char key[5], val[4];
    const char *p;
    size_t plen;

    /* "SIZE" needs 5 with its NUL, "123" needs 4 */
    p = "SIZE=123";
    plen = 8;
    assert_int_equal(smtp_param_next(&p, &plen, key, sizeof(key), val, sizeof(val)), 1);
    assert_string_equal(key, "SIZE");
    assert_string_equal(val, "123");

    p = "SIZES=1";
    plen = 7;
    assert_int_equal(smtp_param_next(&p, &plen, key, sizeof(key), val, sizeof(val)), -1);
    p = "SIZE=1234";
    plen = 9;
    assert_int_equal(smtp_param_next(&p, &plen, key, sizeof(key), val, sizeof(val)), -1);
    p = "SIZE";
    plen = 4;
    assert_int_equal(smtp_param_next(&p, &plen, key, 0, val, sizeof(val)), -1);
    assert_int_equal(smtp_param_next(&p, &plen, key, sizeof(key), val, 0), -1);
    /* a keyword-only parameter still needs room for the empty value */
    assert_int_equal(smtp_param_next(&p, &plen, key, sizeof(key), val, 1), 1);
    assert_string_equal(val, "");
}

static void test_domain_valid(void **state)
{
    (void)state;
    static const char *const good[] = {
        "example.com",  "a", "a.b", "A-B.c-d.Example", "123.example", "xn--bcher-kva.example",
        "a--b.example", "0",
    };
    static const char *const bad[] = {
        "",     ".",     "a.",  ".a",  "a..b",      "-a.b", "a-.b", "a.-b",
        "a.b-", "a_b.c", "a b", "a@b", "[1.2.3.4]", "a\t",  "a/b",  "a:b",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(smtp_domain_valid(good[i], strlen(good[i]), false), 1);
        assert_int_equal(smtp_domain_valid(good[i], strlen(good[i]), true), 1);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(smtp_domain_valid(bad[i], strlen(bad[i]), false), 0);
        assert_int_equal(smtp_domain_valid(bad[i], strlen(bad[i]), true), 0);
    }
    assert_int_equal(smtp_domain_valid("a\0b", 3, false), 0);
    /* the length is obeyed: a valid prefix of something invalid */
    assert_int_equal(smtp_domain_valid("ab..", 2, false), 1);
}

static void test_domain_valid_lengths(void **state)
{
    (void)state;
    char d[300];

    fill(d, 'x', 63);
    assert_int_equal(smtp_domain_valid(d, 63, false), 1);
    fill(d, 'x', 64);
    assert_int_equal(smtp_domain_valid(d, 64, false), 0);
    memcpy(d, "a.", 2);
    fill(d + 2, 'y', 63);
    assert_int_equal(smtp_domain_valid(d, 65, false), 1);
    fill(d + 2, 'y', 64);
    assert_int_equal(smtp_domain_valid(d, 66, false), 0);

    make_domain(d, 255);
    assert_int_equal(smtp_domain_valid(d, 255, false), 1);
    /* 256 octets of otherwise valid labels */
    make_domain(d, 256);
    assert_int_equal(smtp_domain_valid(d, 256, false), 0);
}

static void test_domain_valid_utf8(void **state)
{
    (void)state;
    const char *u = "b\xc3\xbc\x63her.example";
    assert_int_equal(smtp_domain_valid(u, strlen(u), false), 0);
    assert_int_equal(smtp_domain_valid(u, strlen(u), true), 1);
    u = "\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a";
    assert_int_equal(smtp_domain_valid(u, strlen(u), true), 1);
    u = "\xc3.example";
    assert_int_equal(smtp_domain_valid(u, strlen(u), true), 0);
    u = "\xc0\xae.example";
    assert_int_equal(smtp_domain_valid(u, strlen(u), true), 0);
    u = "-\xc3\xbc.example";
    assert_int_equal(smtp_domain_valid(u, strlen(u), true), 0);
    /* a 63-octet U-label is fine, 64 octets is not */
    char d[80];
    fill(d, 'a', 61);
    memcpy(d + 61, "\xc3\xbc", 3);
    assert_int_equal(smtp_domain_valid(d, 63, true), 1);
    fill(d, 'a', 62);
    memcpy(d + 62, "\xc3\xbc", 3);
    assert_int_equal(smtp_domain_valid(d, 64, true), 0);
}

static void test_utf8_valid(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int ok;
    } cases[] = {
        {"", 1},
        {"plain ascii", 1},
        {"\xc2\x80", 1},             /* U+0080 */
        {"\xdf\xbf", 1},             /* U+07FF */
        {"\xe0\xa0\x80", 1},         /* U+0800 */
        {"\xef\xbf\xbf", 1},         /* U+FFFF */
        {"\xed\x9f\xbf", 1},         /* U+D7FF, just below the surrogates */
        {"\xee\x80\x80", 1},         /* U+E000, just above */
        {"\xf0\x90\x80\x80", 1},     /* U+10000 */
        {"\xf4\x8f\xbf\xbf", 1},     /* U+10FFFF */
        {"\xf0\x9f\x93\xa7", 1},     /* U+1F4E7 envelope */
        {"\xc0\x80", 0},             /* overlong NUL */
        {"\xc1\xbf", 0},             /* overlong */
        {"\xe0\x9f\xbf", 0},         /* overlong U+07FF */
        {"\xf0\x8f\xbf\xbf", 0},     /* overlong U+FFFF */
        {"\xed\xa0\x80", 0},         /* U+D800 */
        {"\xed\xbf\xbf", 0},         /* U+DFFF */
        {"\xf4\x90\x80\x80", 0},     /* U+110000 */
        {"\xf5\x80\x80\x80", 0},     /* lead above F4 */
        {"\xf8\x88\x80\x80\x80", 0}, /* 5-octet form */
        {"\xfe", 0},
        {"\xff", 0},
        {"\x80", 0},         /* continuation alone */
        {"\xc3", 0},         /* truncated */
        {"\xe2\x82", 0},     /* truncated */
        {"\xf0\x9f\x93", 0}, /* truncated */
        {"\xc3\x28", 0},     /* bad continuation */
        {"\xe2\x28\xa1", 0},
        {"\xe2\x82\x28", 0},
        {"\xf0\x9f\x28\xa7", 0},
        {"a\xc3\xa9"
         "b\xc3",
         0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].s);
        char *buf = exact_copy(cases[i].s, n);
        assert_int_equal(smtp_utf8_valid(buf, n), cases[i].ok);
        free(buf);
    }
    assert_int_equal(smtp_utf8_valid("a\0b", 3), 1);
    /* length is obeyed: cutting a valid sequence makes it invalid */
    assert_int_equal(smtp_utf8_valid("\xc3\xa9", 1), 0);
}

static void test_path_err_str(void **state)
{
    (void)state;
    assert_string_equal(smtp_path_err_str(SMTP_PATH_OK), "SMTP_PATH_OK");
    assert_string_equal(smtp_path_err_str(SMTP_PATH_LOCAL_TOO_LONG), "SMTP_PATH_LOCAL_TOO_LONG");
    assert_string_equal(smtp_path_err_str(SMTP_PATH_NULL_RCPT), "SMTP_PATH_NULL_RCPT");
    for (int e = SMTP_PATH_OK; e <= SMTP_PATH_NULL_RCPT; e++) {
        const char *s = smtp_path_err_str((enum SMTP_PATH_ERR)e);
        assert_non_null(s);
        assert_memory_equal(s, "SMTP_PATH_", 10);
    }
    assert_non_null(smtp_path_err_str((enum SMTP_PATH_ERR)999));
}

static void test_path_err_reply(void **state)
{
    (void)state;
    assert_string_equal(smtp_path_err_reply(SMTP_PATH_NO_BRACKETS, false),
                        "501 5.1.7 Bad sender address syntax: missing angle brackets");
    assert_string_equal(smtp_path_err_reply(SMTP_PATH_NO_BRACKETS, true),
                        "501 5.1.3 Bad recipient address syntax: missing angle brackets");
    assert_string_equal(smtp_path_err_reply(SMTP_PATH_LOCAL_TOO_LONG, true),
                        "553 5.1.3 Local part of address is longer than 64 octets");
    assert_string_equal(smtp_path_err_reply(SMTP_PATH_LOCAL_TOO_LONG, false),
                        "553 5.1.7 Local part of address is longer than 64 octets");
    assert_string_equal(smtp_path_err_reply(SMTP_PATH_DOMAIN_TOO_LONG, true),
                        "553 5.1.3 Domain of address is longer than 255 octets");
    assert_string_equal(smtp_path_err_reply(SMTP_PATH_TOO_LONG, false),
                        "553 5.1.7 Address is longer than 256 octets");
    assert_string_equal(smtp_path_err_reply(SMTP_PATH_BAD_DOMAIN, true),
                        "501 5.1.3 Bad recipient address syntax: invalid domain");
    assert_string_equal(smtp_path_err_reply(SMTP_PATH_NO_DOMAIN, true),
                        "501 5.1.3 Bad recipient address syntax: missing domain");
    assert_string_equal(smtp_path_err_reply(SMTP_PATH_NEED_SMTPUTF8, true),
                        "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter");
    assert_string_equal(smtp_path_err_reply(SMTP_PATH_BAD_UTF8, false),
                        "553 5.6.7 Address is not valid UTF-8");
    assert_string_equal(smtp_path_err_reply(SMTP_PATH_NULL_RCPT, true),
                        "501 5.1.3 Null recipient address not allowed");

    /* every error: 5xx, the right enhanced code for the side, never NULL */
    for (int e = SMTP_PATH_SYNTAX; e <= SMTP_PATH_NULL_RCPT; e++) {
        for (int r = 0; r < 2; r++) {
            const char *s = smtp_path_err_reply((enum SMTP_PATH_ERR)e, r != 0);
            assert_non_null(s);
            assert_true(strlen(s) > 10 && strlen(s) < SMTP_CMDLINE_MAX);
            assert_true(s[0] == '5' && s[3] == ' ' && s[9] == ' ');
            assert_null(strpbrk(s, "\r\n"));
            if (e == SMTP_PATH_NEED_SMTPUTF8 || e == SMTP_PATH_BAD_UTF8)
                assert_memory_equal(s + 4, "5.6.7", 5);
            else if (r || e == SMTP_PATH_NULL_RCPT)
                assert_memory_equal(s + 4, "5.1.3", 5);
            else
                assert_memory_equal(s + 4, "5.1.7", 5);
        }
    }
    assert_memory_equal(smtp_path_err_reply(SMTP_PATH_OK, false), "250 ", 4);
    assert_non_null(smtp_path_err_reply((enum SMTP_PATH_ERR)999, true));
    assert_non_null(smtp_path_err_reply((enum SMTP_PATH_ERR)(-1), false));
}

static void test_path_out_reset_on_error(void **state)
{
    (void)state;
    struct smtp_path p;
    assert_int_equal(parse("FROM:<a@b.example>", false, false, &p), SMTP_PATH_OK);
    assert_int_equal(parse("FROM:<a@b.example>junk", false, false, &p), SMTP_PATH_SYNTAX);
    assert_string_equal(p.addr, "");
    assert_string_equal(p.domain, "");
    assert_false(p.is_null);
    /* the local part had already set utf8 when the domain failed */
    assert_int_equal(parse("TO:<j\xc3\xb6rg@bad_domain>", true, true, &p), SMTP_PATH_BAD_DOMAIN);
    assert_false(p.utf8);
    assert_int_equal(p.local_len, 0);
    assert_int_equal(parse("TO:<postmaster>x", true, false, &p), SMTP_PATH_SYNTAX);
    assert_string_equal(p.addr, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmd_str),
        cmocka_unit_test(test_cmd_verbs),
        cmocka_unit_test(test_cmd_case_insensitive),
        cmocka_unit_test(test_cmd_arg_boundaries),
        cmocka_unit_test(test_cmd_unknown),
        cmocka_unit_test(test_cmd_null_outputs),
        cmocka_unit_test(test_path_basic),
        cmocka_unit_test(test_path_keyword_errors),
        cmocka_unit_test(test_path_brackets),
        cmocka_unit_test(test_path_null),
        cmocka_unit_test(test_path_postmaster),
        cmocka_unit_test(test_path_local_part),
        cmocka_unit_test(test_path_quoted),
        cmocka_unit_test(test_path_domain),
        cmocka_unit_test(test_path_literals),
        cmocka_unit_test(test_path_ipv6),
        cmocka_unit_test(test_path_source_route),
        cmocka_unit_test(test_path_local_length),
        cmocka_unit_test(test_path_domain_length),
        cmocka_unit_test(test_path_total_length),
        cmocka_unit_test(test_path_utf8),
        cmocka_unit_test(test_path_bad_utf8),
        cmocka_unit_test(test_path_params),
        cmocka_unit_test(test_param_next),
        cmocka_unit_test(test_param_next_errors),
        cmocka_unit_test(test_param_next_sizes),
        cmocka_unit_test(test_domain_valid),
        cmocka_unit_test(test_domain_valid_lengths),
        cmocka_unit_test(test_domain_valid_utf8),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_path_err_str),
        cmocka_unit_test(test_path_err_reply),
        cmocka_unit_test(test_path_out_reset_on_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
