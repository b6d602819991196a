/*
 * test_conf - the configuration table: defaults, good files, every kind of bad
 * file (with file:line: key: reason), and conf/volley.conf kept identical to the
 * table (`volleyd --print-defaults`).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "conf.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

static struct conf *load_text(const char *text, char *err, size_t errsz)
{
    snprintf(path, sizeof path, "/tmp/volley-test-conf-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct conf *c = conf_load(path, err, errsz);
    unlink(path);
    return c;
}

static void test_defaults(void **state)
{
    (void)state;
    struct conf *c = conf_defaults();
    assert_string_equal(c->spool_dir, "/var/spool/volley");
    assert_int_equal(c->inject_max_recipients, 1000);
    assert_int_equal(c->inject_unix_mode, 0660);
    assert_true(c->spool_sync);
    assert_int_equal(c->inject_tcp_listen_count, 0);
    conf_free(c);
}

static void test_good_file(void **state)
{
    (void)state;
    char err[512];
    struct conf *c = load_text("spool: { dir = \"/tmp/x\"; sync = false; };\n"
                               "inject: { max_recipients = 5; unix_mode = \"0600\";\n"
                               "  tcp_listen = [\"127.0.0.1:2525\", \"[::1]:2525\"]; };\n",
                               err, sizeof err);
    assert_non_null(c);
    assert_string_equal(c->spool_dir, "/tmp/x");
    assert_false(c->spool_sync);
    assert_int_equal(c->inject_max_recipients, 5);
    assert_int_equal(c->inject_unix_mode, 0600);
    assert_int_equal(c->inject_tcp_listen_count, 2);
    assert_string_equal(c->inject_tcp_listen[1], "[::1]:2525");
    assert_int_equal(c->inject_max_errors, 20); /* untouched keys keep defaults */
    conf_free(c);
}

/* expect_error - text must be refused with an error naming line and fragment */
static void expect_error(const char *text, int line, const char *fragment)
{
    char err[512] = "", want[96];
    struct conf *c = load_text(text, err, sizeof err);
    if (c)
        fail_msg("accepted a bad config: %s", text);
    snprintf(want, sizeof want, "%s:%d: ", path, line);
    if (!strstr(err, want) || !strstr(err, fragment))
        fail_msg("error \"%s\" lacks \"%s\" or \"%s\"", err, want, fragment);
}

static void test_bad_files(void **state)
{
    (void)state;
    expect_error("spool: {\n dri = \"/x\";\n};\n", 2, "spool.dri: unknown key");
    expect_error("inject: {\n\n max_recipients = 0;\n};\n", 3,
                 "inject.max_recipients: must be between 1 and 100000 (got 0)");
    expect_error("inject: { max_recipients = \"ten\"; };\n", 1, "must be an integer");
    expect_error("spool: { sync = 1; };\n", 1, "spool.sync: must be true or false");
    expect_error("inject: { unix_mode = \"0999\"; };\n", 1, "not an octal mode");
    expect_error("log: { level = \"loud\"; };\n", 1, "unknown level");
    expect_error("bogus: { a = 1; };\n", 1, "bogus: unknown section");
    expect_error("spool: { dir = \"/x\" \n", 2, "syntax error");
    expect_error("spool: {\n dir = \"\"; };\n", 2, "spool.dir: must not be empty");
}

static void test_missing_file(void **state)
{
    (void)state;
    char err[512];
    assert_null(conf_load("/nonexistent/volley.conf", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/volley.conf: cannot read"));
}

/* read_all - a whole file into a NUL-terminated heap buffer */
static char *read_all(FILE *f)
{
    size_t cap = 4096, len = 0;
    char *buf = xmalloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2)
            buf = xrealloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    return buf;
}

static void test_shipped_config_matches_table(void **state)
{
    (void)state;
    FILE *f = fopen(VOLLEY_SOURCE_DIR "/conf/volley.conf", "r");
    assert_non_null(f);
    char *shipped = read_all(f);
    fclose(f);
    /* skip the leading comment block */
    char *body = shipped;
    while (*body == '#') {
        char *nl = strchr(body, '\n');
        assert_non_null(nl);
        body = nl + 1;
    }
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stdout);
    conf_print_defaults(fileno(tmp));
    rewind(tmp);
    char *printed = read_all(tmp);
    fclose(tmp);
    if (strcmp(body, printed) != 0)
        fail_msg("conf/volley.conf differs from `volleyd --print-defaults`; regenerate it");
    free(shipped);
    free(printed);

    char err[512];
    struct conf *c = conf_load(VOLLEY_SOURCE_DIR "/conf/volley.conf", err, sizeof err);
    if (!c)
        fail_msg("shipped config refused: %s", err);
    conf_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_good_file),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_shipped_config_matches_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
