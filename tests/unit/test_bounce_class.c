/*
 * test_bounce_class - unit tests for the delivery failure classifier
 * (src/bounce_class.c): the golden table tests/unit/bounce_class/replies.txt
 * classified with the shipped conf/bounce-rules.conf, the built-in defaults with
 * no rules file, rule order and each kind of condition, bad rules files refused
 * with "file:line: key: reason", a NULL rule set, and texts that are empty or far
 * longer than anything a server sends.
 *
 * The golden table's expected values were written by hand from what each reply
 * means, not recorded from the classifier: a mismatch is a bug in the rules or
 * the code until shown otherwise.  Every mismatch is printed before the test
 * fails, so one run shows them all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bounce_class.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RULES_FILE  VOLLEY_SOURCE_DIR "/conf/bounce-rules.conf"
#define GOLDEN_FILE VOLLEY_SOURCE_DIR "/tests/unit/bounce_class/replies.txt"
#define GOLDEN_MIN  80

/* the last temp file's path, for checking error messages */
static char rules_path[64];

/* load_text - write text to a temp file, load it, unlink it */
static struct bounce_class *load_text(const char *text, char *err, size_t errlen)
{
    snprintf(rules_path, sizeof rules_path, "/tmp/volley-test-bclass-XXXXXX");
    int fd = mkstemp(rules_path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    struct bounce_class *c = bounce_class_load(rules_path, err, errlen);
    unlink(rules_path);
    return c;
}

/* load_ok - text must load */
static struct bounce_class *load_ok(const char *text)
{
    char err[512] = "";
    struct bounce_class *c = load_text(text, err, sizeof err);
    if (c == NULL) fail_msg("refused a good rules file: %s", err);
    return c;
}

/* expect_error - text must be refused with "path:line: " and fragment in err */
static void expect_error(const char *text, int line, const char *fragment)
{
    char err[512] = "", want[96];
    struct bounce_class *c = load_text(text, err, sizeof err);
    if (c) {
        bounce_class_free(c);
        fail_msg("accepted a bad rules file: %s", text);
    }
    snprintf(want, sizeof want, "%s:%d: ", rules_path, line);
    if (!strstr(err, want) || !strstr(err, fragment))
        fail_msg("error \"%s\" lacks \"%s\" or \"%s\"", err, want, fragment);
}

/* expect - classify and compare category, hardness and (unless NULL) rule name */
#define expect(c, code, enh, text, cat, hard, rule)                                                \
    expect_at(__LINE__, (c), (code), (enh), (text), (cat), (hard), (rule))
static void expect_at(int line, const struct bounce_class *c, int code, const char *enh,
                      const char *text, enum BOUNCE_CAT cat, bool hard, const char *rule)
{
    struct bounce_verdict v;
    memset(&v, 0x5a, sizeof v);
    bounce_classify(c, code, enh, text, &v);
    if (v.cat != cat || v.hard != hard || (rule && strcmp(v.rule, rule) != 0))
        fail_msg("line %d: %d %s \"%.80s\": got %s/%s by %s, expected %s/%s by %s", line, code,
                 enh ? enh : "(null)", text ? text : "(null)", bounce_cat_str(v.cat),
                 v.hard ? "hard" : "soft", v.rule, bounce_cat_str(cat), hard ? "hard" : "soft",
                 rule ? rule : "any rule");
}

/* ---- (1) the golden table with the shipped rules file ------------------------------- */

/* golden_split - "code|enh|text|cat|hard" in place: the text may hold '|', so the
 * last two fields are split off from the right */
static int golden_split(char *line, char **f)
{
    char *p1 = strchr(line, '|');
    if (!p1) return -1;
    char *p2 = strchr(p1 + 1, '|');
    char *p4 = strrchr(line, '|');
    if (!p2 || p4 <= p2) return -1;
    *p4 = '\0';
    char *p3 = strrchr(line, '|');
    if (!p3 || p3 <= p2) return -1;
    *p1 = *p2 = *p3 = '\0';
    f[0] = line;
    f[1] = p1 + 1;
    f[2] = p2 + 1;
    f[3] = p3 + 1;
    f[4] = p4 + 1;
    return 0;
}

static void test_golden_table(void **state)
{
    (void)state;
    char err[512] = "";
    struct bounce_class *c = bounce_class_load(RULES_FILE, err, sizeof err);
    if (c == NULL) fail_msg("the shipped rules file is refused: %s", err);
    assert_true(bounce_class_nrules(c) > 20);

    FILE *f = fopen(GOLDEN_FILE, "r");
    if (f == NULL) fail_msg("cannot open %s", GOLDEN_FILE);
    char line[4096];
    int lineno = 0, cases = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#') continue;
        char *fld[5] = {NULL, NULL, NULL, NULL, NULL};
        if (golden_split(line, fld) < 0) {
            fail_msg("%s:%d: not code|enh|text|cat|hard", GOLDEN_FILE, lineno);
            continue;
        }
        enum BOUNCE_CAT want;
        if (bounce_cat_parse(fld[3], &want) < 0)
            fail_msg("%s:%d: unknown category \"%s\"", GOLDEN_FILE, lineno, fld[3]);
        bool want_hard = strcmp(fld[4], "hard") == 0;
        if (!want_hard && strcmp(fld[4], "soft") != 0)
            fail_msg("%s:%d: \"%s\" is neither hard nor soft", GOLDEN_FILE, lineno, fld[4]);
        struct bounce_verdict v;
        bounce_classify(c, atoi(fld[0]), fld[1], fld[2], &v);
        cases++;
        if (v.cat != want || v.hard != want_hard) {
            bad++;
            print_message("replies.txt:%d: %s %s \"%.100s\": got %s/%s (rule %s), expected %s/%s\n",
                          lineno, fld[0], fld[1], fld[2], bounce_cat_str(v.cat),
                          v.hard ? "hard" : "soft", v.rule, fld[3], fld[4]);
        }
    }
    fclose(f);
    bounce_class_free(c);
    if (cases < GOLDEN_MIN) fail_msg("only %d cases in %s", cases, GOLDEN_FILE);
    if (bad) fail_msg("%d of %d golden cases misclassified", bad, cases);
}

/* ---- (2) the built-in defaults without a file --------------------------------------- */

static void test_builtin_defaults(void **state)
{
    (void)state;
    char err[128] = "x";
    struct bounce_class *c = bounce_class_load("", err, sizeof err);
    assert_non_null(c);
    assert_string_equal(err, "");
    assert_int_equal(bounce_class_nrules(c), 0);
    struct bounce_class *c2 = bounce_class_load(NULL, NULL, 0);
    assert_non_null(c2);
    bounce_class_free(c2);

    /* the enhanced status table; hard only for the address categories on 5xx */
    expect(c, 550, "5.1.1", "whatever", BOUNCE_CAT_BAD_MAILBOX, true, "status:5.1.1");
    expect(c, 450, "4.1.1", "whatever", BOUNCE_CAT_BAD_MAILBOX, false, "status:4.1.1");
    expect(c, 550, "5.1.2", "", BOUNCE_CAT_BAD_DOMAIN, true, "status:5.1.2");
    expect(c, 553, "5.1.3", "", BOUNCE_CAT_BAD_MAILBOX, true, NULL);
    expect(c, 556, "5.1.10", "", BOUNCE_CAT_BAD_DOMAIN, true, "code:556");
    expect(c, 550, "5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient not found",
           BOUNCE_CAT_BAD_MAILBOX, true, "status:5.1.10");
    expect(c, 550, "5.1.10", "no mail here", BOUNCE_CAT_BAD_DOMAIN, true, "status:5.1.10");
    expect(c, 550, "5.1.7", "", BOUNCE_CAT_INVALID_SENDER, false, NULL);
    expect(c, 553, "5.1.8", "", BOUNCE_CAT_INVALID_SENDER, false, NULL);
    expect(c, 550, "5.2.1", "", BOUNCE_CAT_INACTIVE_MAILBOX, true, NULL);
    expect(c, 450, "4.2.1", "", BOUNCE_CAT_INACTIVE_MAILBOX, false, NULL);
    expect(c, 552, "5.2.2", "", BOUNCE_CAT_QUOTA_ISSUES, false, NULL);
    expect(c, 552, "5.2.3", "", BOUNCE_CAT_CONTENT_RELATED, false, NULL);
    expect(c, 452, "4.3.1", "", BOUNCE_CAT_QUOTA_ISSUES, false, NULL);
    expect(c, 552, "5.3.4", "", BOUNCE_CAT_CONTENT_RELATED, false, NULL);
    expect(c, 554, "5.3.5", "", BOUNCE_CAT_BAD_CONFIGURATION, false, NULL);
    expect(c, 451, "4.4.1", "", BOUNCE_CAT_NO_ANSWER_FROM_HOST, false, NULL);
    expect(c, 421, "4.4.2", "", BOUNCE_CAT_BAD_CONNECTION, false, NULL);
    expect(c, 451, "4.4.3", "", BOUNCE_CAT_ROUTING_ERRORS, false, NULL);
    expect(c, 550, "5.4.4", "", BOUNCE_CAT_ROUTING_ERRORS, false, NULL);
    expect(c, 554, "5.4.6", "", BOUNCE_CAT_ROUTING_ERRORS, false, NULL);
    expect(c, 451, "4.4.7", "", BOUNCE_CAT_MESSAGE_EXPIRED, false, NULL);
    expect(c, 0, "5.4.7", "", BOUNCE_CAT_MESSAGE_EXPIRED, false, NULL);
    expect(c, 501, "5.5.4", "", BOUNCE_CAT_PROTOCOL_ERRORS, false, NULL);
    expect(c, 554, "5.6.0", "", BOUNCE_CAT_CONTENT_RELATED, false, NULL);
    expect(c, 550, "5.7.1", "Delivery not authorized", BOUNCE_CAT_POLICY_RELATED, false, NULL);
    expect(c, 550, "5.7.1", "Message rejected as SPAM", BOUNCE_CAT_SPAM_RELATED, false, NULL);
    expect(c, 550, "5.7.1", "client blocked using Spamhaus", BOUNCE_CAT_SPAM_RELATED, false, NULL);
    expect(c, 554, "5.7.1", "<a@b.example>: Relay access denied", BOUNCE_CAT_RELAYING_ISSUES, false,
           NULL);
    expect(c, 554, "5.7.0", "Virus found: Eicar", BOUNCE_CAT_VIRUS_RELATED, false, NULL);
    expect(c, 550, "5.7.26", "Unauthenticated email is not accepted due to DMARC policy",
           BOUNCE_CAT_POLICY_RELATED, false, NULL);
    expect(c, 535, "5.7.8", "", BOUNCE_CAT_BAD_CONFIGURATION, false, NULL);
    expect(c, 550, "5.7.17", "", BOUNCE_CAT_INACTIVE_MAILBOX, true, NULL);
    expect(c, 550, "5.7.18", "", BOUNCE_CAT_BAD_DOMAIN, true, NULL);
    expect(c, 550, "5.7.27", "", BOUNCE_CAT_INVALID_SENDER, false, NULL);
    expect(c, 421, "4.7.28", "", BOUNCE_CAT_SPAM_RELATED, false, NULL);
    expect(c, 550, "5.7.99", "", BOUNCE_CAT_POLICY_RELATED, false, NULL);
    expect(c, 550, "5.9.9", "", BOUNCE_CAT_OTHER, false, "status:5.9.9");
    expect(c, 550, "5.0.0", "", BOUNCE_CAT_OTHER, false, NULL);
    /* "5.7.1" is not a prefix of "5.7.10" and a malformed status is no status */
    expect(c, 530, "5.7.10", "", BOUNCE_CAT_BAD_CONFIGURATION, false, "status:5.7.10");
    expect(c, 550, "5.1.1.1", "", BOUNCE_CAT_OTHER, false, "default");
    expect(c, 550, "five", "", BOUNCE_CAT_OTHER, false, "default");
    /* the code decides permanence over a contradicting status */
    expect(c, 452, "5.1.1", "", BOUNCE_CAT_BAD_MAILBOX, false, NULL);
    expect(c, 0, "5.1.1", "", BOUNCE_CAT_BAD_MAILBOX, true, NULL);
    expect(c, 0, "4.1.1", "", BOUNCE_CAT_BAD_MAILBOX, false, NULL);

    /* codes without a status */
    expect(c, 500, "", "Syntax error", BOUNCE_CAT_PROTOCOL_ERRORS, false, "code:500");
    expect(c, 421, "", "closing", BOUNCE_CAT_BAD_CONNECTION, false, "code:421");
    expect(c, 452, "", "", BOUNCE_CAT_QUOTA_ISSUES, false, "code:452");
    expect(c, 552, "", "", BOUNCE_CAT_QUOTA_ISSUES, false, "code:552");
    expect(c, 521, "5.3.2", "does not accept mail", BOUNCE_CAT_BAD_DOMAIN, true, "code:521");
    expect(c, 550, "", "User unknown", BOUNCE_CAT_OTHER, false, "default");
    expect(c, 451, "", "", BOUNCE_CAT_OTHER, false, "default");
    expect(c, 0, "", "", BOUNCE_CAT_OTHER, false, "default");

    /* the engine's own failures, as sched_queue.c and dns.c word them */
    expect(c, 0, "4.4.2", "connect with mx.example.net[127.0.0.21]", BOUNCE_CAT_NO_ANSWER_FROM_HOST,
           false, "local:connect");
    expect(c, 0, "4.4.1", "connect with mx.example.net[127.0.0.21]0 ",
           BOUNCE_CAT_NO_ANSWER_FROM_HOST, false, "local:connect");
    expect(c, 0, "", "connect", BOUNCE_CAT_NO_ANSWER_FROM_HOST, false, "local:connect");
    expect(c, 0, "4.4.2",
           "timeout with mx.example.net[192.0.2.1]: ", BOUNCE_CAT_NO_ANSWER_FROM_HOST, false,
           "local:timeout");
    expect(c, 0, "4.4.2", "dropped with mx.example.net[192.0.2.1]: closing",
           BOUNCE_CAT_BAD_CONNECTION, false, "local:dropped");
    expect(c, 0, "4.4.2", "tls with mx.example.net[192.0.2.1]", BOUNCE_CAT_BAD_CONNECTION, false,
           "local:tls");
    expect(c, 0, "4.4.2", "protocol with mx.example.net[192.0.2.1]", BOUNCE_CAT_PROTOCOL_ERRORS,
           false, "local:protocol");
    expect(c, 0, "4.4.1", "reply with mx.example.net[192.0.2.1]: 554 go away",
           BOUNCE_CAT_POLICY_RELATED, false, "local:reply");
    /* a remote reply that happens to start like one is the remote's to explain */
    expect(c, 421, "4.4.2", "timeout with you", BOUNCE_CAT_BAD_CONNECTION, false, "status:4.4.2");
    expect(c, 0, "4.4.2", "connected fine", BOUNCE_CAT_BAD_CONNECTION, false, "status:4.4.2");
    expect(c, 0, "4.7.0", "held: no source of pool p may send to site s before ...",
           BOUNCE_CAT_POLICY_RELATED, false, "local:held");
    expect(c, 450, "4.4.7",
           "message expired after 432000 s in the queue; last: 550 5.1.1 user unknown",
           BOUNCE_CAT_MESSAGE_EXPIRED, false, "local:expired");
    expect(c, 0, "", "DNS lookup of example.com: nxdomain", BOUNCE_CAT_BAD_DOMAIN, false,
           "local:dns");
    expect(c, 550, "5.1.2", "DNS lookup of example.com: nxdomain", BOUNCE_CAT_BAD_DOMAIN, true,
           "local:dns");
    expect(c, 451, "4.4.3", "DNS lookup of example.com: servfail", BOUNCE_CAT_ROUTING_ERRORS, false,
           "local:dns");
    expect(c, 451, "4.4.3", "DNS lookup of example.com: timeout", BOUNCE_CAT_ROUTING_ERRORS, false,
           "local:dns");
    expect(c, 550, "5.1.2", "domain example.invalid does not exist (NXDOMAIN)",
           BOUNCE_CAT_BAD_DOMAIN, true, "local:dns");
    expect(c, 556, "5.1.10", "example.com does not accept mail (null MX)", BOUNCE_CAT_BAD_DOMAIN,
           true, "local:dns");
    expect(c, 550, "5.4.4", "no MX host of example.com has an address", BOUNCE_CAT_BAD_DOMAIN, true,
           "local:dns");
    expect(c, 550, "5.4.4", "example.com has no MX record and no address", BOUNCE_CAT_BAD_DOMAIN,
           true, "local:dns");
    expect(c, 451, "4.4.3", "MX lookup for example.com: Timeout while contacting DNS servers",
           BOUNCE_CAT_ROUTING_ERRORS, false, "local:dns");

    /* c NULL is the same as the defaults */
    expect(NULL, 550, "5.1.1", "", BOUNCE_CAT_BAD_MAILBOX, true, "status:5.1.1");
    expect(NULL, 0, "4.4.2", "timeout with h[1.2.3.4]", BOUNCE_CAT_NO_ANSWER_FROM_HOST, false,
           "local:timeout");
    bounce_class_free(c);
}

/* the engine's failures classify the same with the shipped file as without it */
static void test_shipped_file_agrees_on_local_failures(void **state)
{
    (void)state;
    static const struct {
        int code;
        const char *enh, *text;
    } cases[] = {
        {0, "4.4.2", "connect with mx.example.net[127.0.0.21]"},
        {0, "4.4.2", "timeout with relay.spam.example[192.0.2.1]: user unknown"},
        {0, "4.4.2", "dropped with mx.example.net[192.0.2.1]: Relay access denied"},
        {0, "4.4.2", "tls with mx.example.net[192.0.2.1]"},
        {0, "4.4.2", "protocol with mx.example.net[192.0.2.1]"},
        {0, "4.4.1", "reply with mx.example.net[192.0.2.1]: 554 not today"},
        {0, "4.7.0", "held: no source of pool p may send to site s before ... (suspended)"},
        {0, "", "DNS lookup of example.com: nxdomain"},
        {451, "4.4.3", "DNS lookup of example.com: tempfail"},
        {550, "5.1.2", "invalid domain name a..b"},
        {556, "5.1.10", "example.com does not accept mail (null MX)"},
        {550, "5.4.4", "no valid MX host name for example.com"},
        {451, "4.4.3", "AAAA lookup for mx.example.com: Could not contact DNS servers"},
        {421, "4.4.7", "message expired after 9 s in the queue; last: spam blocked"},
    };
    char err[512] = "";
    struct bounce_class *c = bounce_class_load(RULES_FILE, err, sizeof err);
    if (c == NULL) fail_msg("%s", err);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct bounce_verdict a, b;
        bounce_classify(c, cases[i].code, cases[i].enh, cases[i].text, &a);
        bounce_classify(NULL, cases[i].code, cases[i].enh, cases[i].text, &b);
        if (a.cat != b.cat || a.hard != b.hard)
            fail_msg("\"%s\": file says %s/%d (%s), defaults %s/%d (%s)", cases[i].text,
                     bounce_cat_str(a.cat), a.hard, a.rule, bounce_cat_str(b.cat), b.hard, b.rule);
    }
    bounce_class_free(c);
}

/* ---- (3) rule order and conditions -------------------------------------------------- */

static void test_rule_order_first_match(void **state)
{
    (void)state;
    struct bounce_class *c = load_ok(
        "rules = (\n"
        "  { name = \"first\";  text = \"blocked\"; category = \"spam-related\"; },\n"
        "  { name = \"second\"; text = \"blocked|unknown\"; category = \"bad-mailbox\"; },\n"
        "  { name = \"code-only\"; code = 554; category = \"content-related\"; }\n"
        ");\n");
    assert_int_equal(bounce_class_nrules(c), 3);
    expect(c, 550, "5.1.1", "user unknown; blocked", BOUNCE_CAT_SPAM_RELATED, false, "first");
    expect(c, 550, "5.1.1", "user UNKNOWN", BOUNCE_CAT_BAD_MAILBOX, true, "second");
    expect(c, 554, "", "whatever", BOUNCE_CAT_CONTENT_RELATED, false, "code-only");
    /* nothing matches: the built-in defaults */
    expect(c, 550, "5.2.2", "full", BOUNCE_CAT_QUOTA_ISSUES, false, "status:5.2.2");
    expect(c, 0, "4.4.2", "timeout with h[1.2.3.4]", BOUNCE_CAT_NO_ANSWER_FROM_HOST, false,
           "local:timeout");
    bounce_class_free(c);

    /* the same rules the other way round */
    c = load_ok(
        "rules = (\n"
        "  { name = \"second\"; text = \"blocked|unknown\"; category = \"bad-mailbox\"; },\n"
        "  { name = \"first\";  text = \"blocked\"; category = \"spam-related\"; }\n"
        ");\n");
    expect(c, 550, "5.1.1", "user unknown; blocked", BOUNCE_CAT_BAD_MAILBOX, true, "second");
    bounce_class_free(c);
}

static void test_rule_conditions(void **state)
{
    (void)state;
    struct bounce_class *c = load_ok(
        "rules = (\n"
        "  { name = \"all-three\"; code = 550; enh = \"5.7\"; text = \"^go away$\";\n"
        "    category = \"policy-related\"; },\n"
        "  { name = \"exact-enh\"; enh = \"5.7.1\"; category = \"spam-related\"; },\n"
        "  { name = \"any-class\"; enh = \"X.4.7\"; category = \"message-expired\"; },\n"
        "  { name = \"class-5\"; code = \"5xx\"; text = \"quux\"; category = \"virus-related\"; "
        "},\n"
        "  { name = \"class-4\"; code = \"4XX\"; text = \"quux\"; category = \"routing-errors\"; "
        "},\n"
        "  { name = \"local\"; code = 0; text = \"frob\"; category = \"bad-configuration\"; },\n"
        "  { name = \"forced-hard\"; text = \"suppress me\"; category = \"spam-related\";\n"
        "    hard = true; },\n"
        "  { name = \"forced-soft\"; text = \"keep me\"; category = \"bad-mailbox\"; hard = false; "
        "},\n"
        "  { name = \"subject\"; enh = \"4.2\"; category = \"other\"; }\n"
        ");\n");
    /* all given conditions must hold */
    expect(c, 550, "5.7.9", "go away", BOUNCE_CAT_POLICY_RELATED, false, "all-three");
    expect(c, 551, "5.7.2", "go away", BOUNCE_CAT_POLICY_RELATED, false, "status:5.7.2");
    expect(c, 550, "5.1.1", "go away", BOUNCE_CAT_BAD_MAILBOX, true, "status:5.1.1");
    expect(c, 550, "5.7.2", "please go away", BOUNCE_CAT_POLICY_RELATED, false, "status:5.7.2");
    expect(c, 550, "", "go away", BOUNCE_CAT_OTHER, false, "default");
    /* enh: exact when all three parts are given; prefixes by whole parts */
    expect(c, 554, "5.7.1", "x", BOUNCE_CAT_SPAM_RELATED, false, "exact-enh");
    expect(c, 554, "5.7.10", "x", BOUNCE_CAT_BAD_CONFIGURATION, false, "status:5.7.10");
    expect(c, 454, "4.7.1", "x", BOUNCE_CAT_POLICY_RELATED, false, "status:4.7.1");
    expect(c, 451, "4.4.7", "x", BOUNCE_CAT_MESSAGE_EXPIRED, false, "any-class");
    expect(c, 0, "5.4.7", "x", BOUNCE_CAT_MESSAGE_EXPIRED, false, "any-class");
    expect(c, 452, "4.2.2", "x", BOUNCE_CAT_OTHER, false, "subject");
    expect(c, 452, "4.22.2", "x", BOUNCE_CAT_OTHER, false, "status:4.22.2");
    /* code classes: the code's, or with no code the status's */
    expect(c, 552, "", "QUUX", BOUNCE_CAT_VIRUS_RELATED, false, "class-5");
    expect(c, 0, "5.0.0", "quux", BOUNCE_CAT_VIRUS_RELATED, false, "class-5");
    expect(c, 451, "", "quux", BOUNCE_CAT_ROUTING_ERRORS, false, "class-4");
    expect(c, 0, "4.0.0", "quux", BOUNCE_CAT_ROUTING_ERRORS, false, "class-4");
    expect(c, 0, "", "quux", BOUNCE_CAT_OTHER, false, "default");
    /* code = 0: only replies without a code */
    expect(c, 0, "", "frob", BOUNCE_CAT_BAD_CONFIGURATION, false, "local");
    expect(c, 550, "", "frob", BOUNCE_CAT_OTHER, false, "default");
    /* hard given explicitly wins over the default either way */
    expect(c, 421, "", "suppress me", BOUNCE_CAT_SPAM_RELATED, true, "forced-hard");
    expect(c, 550, "5.1.1", "keep me", BOUNCE_CAT_BAD_MAILBOX, false, "forced-soft");
    bounce_class_free(c);

    /* an empty list is the defaults */
    c = load_ok("rules = ();\n");
    assert_int_equal(bounce_class_nrules(c), 0);
    expect(c, 550, "5.1.1", "", BOUNCE_CAT_BAD_MAILBOX, true, "status:5.1.1");
    bounce_class_free(c);
    c = load_ok("# nothing\n");
    bounce_class_free(c);
}

/* ---- (4) bad files ------------------------------------------------------------------ */

static void test_bad_files(void **state)
{
    (void)state;
    /* unknown category */
    expect_error("rules = (\n"
                 "  { name = \"a\"; text = \"x\";\n"
                 "    category = \"bad-mailboxes\"; }\n"
                 ");\n",
                 3, "rules[0].category: unknown category \"bad-mailboxes\"");
    expect_error("rules = ({ name = \"a\"; text = \"x\"; category = \"Bad-Mailbox\"; });\n", 1,
                 "one of bad-mailbox, inactive-mailbox");
    /* bad regular expression */
    expect_error("rules = (\n"
                 "  { name = \"ok\"; text = \"x\"; category = \"other\"; },\n"
                 "  { name = \"bad\";\n"
                 "    text = \"user (unknown\";\n"
                 "    category = \"bad-mailbox\"; }\n"
                 ");\n",
                 4, "rules[1].text: bad regular expression");
    /* unknown keys, in a rule and at the top */
    expect_error("rules = (\n"
                 "  { name = \"a\"; text = \"x\"; category = \"other\";\n"
                 "    hardness = true; }\n"
                 ");\n",
                 3, "rules[0].hardness: unknown key");
    expect_error("# comment\n"
                 "rule = ();\n",
                 2, "rule: unknown key");
    /* wrong types */
    expect_error("rules = (\n"
                 "  { name = \"a\"; text = \"x\"; category = \"other\"; hard = \"yes\"; }\n"
                 ");\n",
                 2, "rules[0].hard: must be true or false");
    expect_error("rules = ({ name = \"a\"; text = \"x\";\n"
                 "  category = 3; });\n",
                 2, "rules[0].category: must be a string");
    expect_error("rules = ({ name = \"a\"; category = \"other\";\n"
                 "  code = 5.5; });\n",
                 2, "rules[0].code: must be a code");
    expect_error("rules = ({ name = \"a\"; category = \"other\";\n"
                 "  enh = 5; });\n",
                 2, "rules[0].enh: must be a string");
    expect_error("rules = ({ name = \"a\"; category = \"other\";\n"
                 "  text = true; });\n",
                 2, "rules[0].text: must be a string");
    expect_error("rules = ({ name = 7; category = \"other\"; text = \"x\"; });\n", 1,
                 "rules[0].name: must be a string");
    expect_error("rules = { a = 1; };\n", 1, "rules: must be a list");
    expect_error("rules = ( 5 );\n", 1, "rules[0]: must be a group");
    /* bad values */
    expect_error("rules = ({ name = \"a\"; category = \"other\";\n"
                 "  code = 250; });\n",
                 2, "rules[0].code: 250: must be 0");
    expect_error("rules = ({ name = \"a\"; category = \"other\";\n"
                 "  code = \"6xx\"; });\n",
                 2, "expected a code such as 550");
    expect_error("rules = ({ name = \"a\"; category = \"other\";\n"
                 "  enh = \"5.7.1.2\"; });\n",
                 2, "rules[0].enh: \"5.7.1.2\": expected a status");
    expect_error("rules = ({ name = \"a\"; category = \"other\";\n"
                 "  enh = \"3.1.1\"; });\n",
                 2, "rules[0].enh");
    expect_error("rules = ({ name = \"a\"; category = \"other\";\n"
                 "  enh = \"5.1234\"; });\n",
                 2, "rules[0].enh");
    expect_error("rules = ({ name = \"a\"; category = \"other\";\n"
                 "  text = \"\"; });\n",
                 2, "rules[0].text: empty");
    /* names and required keys */
    expect_error("rules = ({ name = \"has space\"; category = \"other\"; text = \"x\"; });\n", 1,
                 "rules[0].name: \"has space\": a name is");
    expect_error("rules = ({ name = \"default\"; category = \"other\"; text = \"x\"; });\n", 1,
                 "reserved");
    expect_error("rules = (\n"
                 "  { name = \"a\"; category = \"other\"; text = \"x\"; },\n"
                 "  { name = \"a\"; category = \"other\"; text = \"y\"; }\n"
                 ");\n",
                 3, "rules[1]: duplicate rule name \"a\"");
    expect_error("rules = (\n  { category = \"other\"; text = \"x\"; }\n);\n", 2,
                 "rules[0]: missing name");
    expect_error("rules = (\n  { name = \"a\"; text = \"x\"; }\n);\n", 2,
                 "rules[0].category: missing");
    expect_error("rules = (\n  { name = \"a\"; category = \"other\"; hard = true; }\n);\n", 2,
                 "rules[0]: needs code, enh or text");
    /* syntax error */
    expect_error("rules = (\n  { name = \"a\"; category = ; }\n);\n", 2, "syntax error");

    /* unreadable file */
    char err[256] = "";
    assert_null(bounce_class_load("/nonexistent/volley/bounce-rules.conf", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/volley/bounce-rules.conf: cannot read"));
    /* no room for the message is fine too */
    assert_null(bounce_class_load("/nonexistent/volley/bounce-rules.conf", NULL, 0));
    char small[8];
    assert_null(load_text("rules = ({ name = \"a\"; });\n", small, sizeof small));
    assert_int_equal(strlen(small), sizeof small - 1);
}

/* ---- (5) NULL rule set and NULL arguments ------------------------------------------- */

static void test_null_rule_set(void **state)
{
    (void)state;
    bounce_class_free(NULL);
    assert_int_equal(bounce_class_nrules(NULL), 0);
    expect(NULL, 550, NULL, NULL, BOUNCE_CAT_OTHER, false, "default");
    expect(NULL, 0, NULL, NULL, BOUNCE_CAT_OTHER, false, "default");
    expect(NULL, 550, "5.1.1", NULL, BOUNCE_CAT_BAD_MAILBOX, true, "status:5.1.1");
    expect(NULL, -5, "", "x", BOUNCE_CAT_OTHER, false, "default");
    expect(NULL, 99999, "4.2.2", "x", BOUNCE_CAT_QUOTA_ISSUES, false, "status:4.2.2");

    struct bounce_class *c =
        load_ok("rules = ({ name = \"r\"; text = \"x\"; category = \"other\"; });\n");
    expect(c, 550, NULL, NULL, BOUNCE_CAT_OTHER, false, "default");
    bounce_class_free(c);
}

/* ---- (6) long and empty texts ------------------------------------------------------- */

static void test_long_and_empty_text(void **state)
{
    (void)state;
    char err[512] = "";
    struct bounce_class *c = bounce_class_load(RULES_FILE, err, sizeof err);
    if (c == NULL) fail_msg("%s", err);
    size_t n = 64 * 1024;
    char *t = malloc(n + 1);
    assert_non_null(t);

    /* the reason up front, then 64 KiB of filler */
    memset(t, 'a', n);
    t[n] = '\0';
    memcpy(t, "User unknown ", 13);
    expect(c, 550, "5.1.1", t, BOUNCE_CAT_BAD_MAILBOX, true, "bad-mailbox");
    expect(NULL, 550, "5.1.1", t, BOUNCE_CAT_BAD_MAILBOX, true, "status:5.1.1");

    /* a reason past BOUNCE_TEXT_MAX is not looked at: the status decides */
    memset(t, 'a', n);
    memcpy(t + n - 20, " spam blocked", 13);
    expect(c, 550, "5.7.1", t, BOUNCE_CAT_POLICY_RELATED, false, "status:5.7.1");
    /* ... and one just inside it is */
    memset(t, 'a', n);
    memcpy(t + BOUNCE_TEXT_MAX - 5, " spam", 5);
    expect(c, 550, "5.7.1", t, BOUNCE_CAT_SPAM_RELATED, false, "spam");

    /* only spaces and regex-hostile characters */
    memset(t, ' ', n);
    expect(c, 0, "", t, BOUNCE_CAT_OTHER, false, "default");
    memset(t, '(', n);
    expect(c, 451, "4.4.1", t, BOUNCE_CAT_NO_ANSWER_FROM_HOST, false, "status:4.4.1");
    free(t);

    /* empty texts */
    expect(c, 550, "5.1.1", "", BOUNCE_CAT_BAD_MAILBOX, true, "status:5.1.1");
    expect(c, 0, "", "", BOUNCE_CAT_OTHER, false, "default");
    expect(c, 421, "", "", BOUNCE_CAT_BAD_CONNECTION, false, "code:421");
    bounce_class_free(c);
}

/* ---- enum strings and permanence ---------------------------------------------------- */

static void test_category_names(void **state)
{
    (void)state;
    static const char *const names[BOUNCE_CAT_COUNT] = {
        "bad-mailbox",    "inactive-mailbox", "bad-domain",      "quota-issues",
        "spam-related",   "policy-related",   "content-related", "virus-related",
        "invalid-sender", "relaying-issues",  "routing-errors",  "no-answer-from-host",
        "bad-connection", "message-expired",  "protocol-errors", "bad-configuration",
        "other"};
    for (int i = 0; i < BOUNCE_CAT_COUNT; i++) {
        enum BOUNCE_CAT c;
        assert_string_equal(bounce_cat_str((enum BOUNCE_CAT)i), names[i]);
        assert_int_equal(bounce_cat_parse(names[i], &c), 0);
        assert_int_equal(c, i);
    }
    assert_int_equal(BOUNCE_CAT_OTHER, BOUNCE_CAT_COUNT - 1);
    assert_string_equal(bounce_cat_str((enum BOUNCE_CAT)BOUNCE_CAT_COUNT), "?");
    assert_string_equal(bounce_cat_str((enum BOUNCE_CAT) - 1), "?");
    enum BOUNCE_CAT c = BOUNCE_CAT_SPAM_RELATED;
    assert_int_equal(bounce_cat_parse("hard", &c), -1);
    assert_int_equal(bounce_cat_parse("", &c), -1);
    assert_int_equal(bounce_cat_parse(NULL, &c), -1);
    assert_int_equal(bounce_cat_parse("Other", &c), -1);
    assert_int_equal(c, BOUNCE_CAT_SPAM_RELATED);

    assert_true(bounce_reply_permanent(550, ""));
    assert_true(bounce_reply_permanent(554, "4.7.1"));
    assert_false(bounce_reply_permanent(450, "5.1.1"));
    assert_true(bounce_reply_permanent(0, "5.1.1"));
    assert_false(bounce_reply_permanent(0, "4.4.2"));
    assert_false(bounce_reply_permanent(0, ""));
    assert_false(bounce_reply_permanent(0, NULL));
    assert_false(bounce_reply_permanent(0, "5.x"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_table),
        cmocka_unit_test(test_builtin_defaults),
        cmocka_unit_test(test_shipped_file_agrees_on_local_failures),
        cmocka_unit_test(test_rule_order_first_match),
        cmocka_unit_test(test_rule_conditions),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_null_rule_set),
        cmocka_unit_test(test_long_and_empty_text),
        cmocka_unit_test(test_category_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
