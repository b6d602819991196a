/*
 * fuzz_classify - libFuzzer target for the failure classifier over outside text:
 * a remote server's reply (code, enhanced status, text) or a DSN's diagnostic,
 * classified with the shipped rules file (conf/bounce-rules.conf, its regexes run
 * over the text).  The input is "CODE NUL ENH NUL TEXT".  Checked besides memory
 * safety: the verdict is one of the categories, deterministic, and "hard" only for
 * a permanent reply.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bounce_class.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct bounce_class *rules;
    if (!rules) {
        char err[512];
        rules = bounce_class_load(VOLLEY_SOURCE_DIR "/conf/bounce-rules.conf", err, sizeof err);
        if (!rules) {
            fprintf(stderr, "fuzz_classify: %s\n", err);
            abort();
        }
    }
    if (size > 16384) return 0;
    char *s = malloc(size + 3);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = s[size + 1] = s[size + 2] = '\0';
    const char *code_s = s;
    const char *enh = code_s + strlen(code_s) + 1;
    if (enh > s + size) enh = s + size;
    const char *text = enh + strlen(enh) + 1;
    if (text > s + size) text = s + size;
    int code = atoi(code_s);
    if (code < 0 || code > 999) code = 0;

    struct bounce_verdict a, b;
    bounce_classify(rules, code, enh, text, &a);
    bounce_classify(rules, code, enh, text, &b);
    FUZZ_CHECK(a.cat == b.cat && a.hard == b.hard && strcmp(a.rule, b.rule) == 0);
    FUZZ_CHECK((int)a.cat >= 0 && (int)a.cat < BOUNCE_CAT_COUNT);
    FUZZ_CHECK(strcmp(bounce_cat_str(a.cat), "?") != 0);
    free(s);
    return 0;
}
