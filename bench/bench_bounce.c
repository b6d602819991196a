/*
 * bench_bounce - throughput of the feedback parser.
 *
 * Reads the given .eml files (default: every .eml in tests/unit/bounce of the
 * current directory, or in the directory given with -d), then parses them
 * round-robin, each parse followed by bounce_rcpt_json() on every recipient, for
 * -t seconds (default 3) or -n rounds over all files, whichever ends first.
 * Prints, per format the parser reported and overall: messages parsed, messages
 * per second and MB/s of input.  No I/O inside the timed loop.
 *
 * Usage: bench_bounce [-t SECONDS] [-n ROUNDS] [-d DIR] [FILE.eml ...]
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bounce.h"

/* the samples' directory is relative to the source tree unless the build says */
#ifndef VOLLEY_SOURCE_DIR
#define VOLLEY_SOURCE_DIR "."
#endif

#define BENCH_MAX_FILES 512
#define BENCH_MAX_FMTS  32
#define BENCH_FILE_MAX  (16 * 1024 * 1024)

struct bench_file {
    char *name;
    char *data;
    size_t len;
    char format[24];
};

struct bench_fmt {
    char name[24];
    unsigned long msgs;
    double bytes;
    double secs;
};

/* bench_now - monotonic seconds */
static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* bench_load - read path into f; 0 on success */
static int bench_load(const char *path, struct bench_file *f)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        perror(path);
        return -1;
    }
    f->data = malloc(BENCH_FILE_MAX);
    if (f->data == NULL) {
        fclose(fp);
        return -1;
    }
    f->len = fread(f->data, 1, BENCH_FILE_MAX, fp);
    fclose(fp);
    const char *slash = strrchr(path, '/');
    f->name = strdup(slash ? slash + 1 : path);
    return f->name ? 0 : -1;
}

static int bench_cmp(const void *a, const void *b)
{
    return strcmp(((const struct bench_file *)a)->name, ((const struct bench_file *)b)->name);
}

/* bench_parse_one - one parse plus the JSON of every recipient; format into fmt */
static void bench_parse_one(const struct bench_file *f, char *fmt, size_t fmtsz)
{
    struct bounce_report r;
    if (bounce_parse(f->data, f->len, BENCH_FILE_MAX, &r) == 0) {
        for (int i = r.nrcpts ? 0 : -1; i < r.nrcpts; i++) {
            json_t *j = bounce_rcpt_json(&r, i);
            json_decref(j);
            if (i < 0) break;
        }
        if (fmt) snprintf(fmt, fmtsz, "%s", r.format);
    }
    bounce_report_free(&r);
}

int main(int argc, char **argv)
{
    double secs = 3.0;
    long rounds = -1;
    const char *dir = VOLLEY_SOURCE_DIR "/tests/unit/bounce";
    static struct bench_file files[BENCH_MAX_FILES];
    int nf = 0, i;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            rounds = atol(argv[++i]);
        else if (strcmp(argv[i], "-d") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (nf < BENCH_MAX_FILES && bench_load(argv[i], &files[nf]) == 0)
            nf++;
    }
    if (nf == 0) {
        DIR *d = opendir(dir);
        if (d == NULL) {
            perror(dir);
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d)) != NULL && nf < BENCH_MAX_FILES) {
            size_t l = strlen(e->d_name);
            if (l < 5 || strcmp(e->d_name + l - 4, ".eml") != 0) continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (bench_load(path, &files[nf]) == 0) nf++;
        }
        closedir(d);
        qsort(files, (size_t)nf, sizeof files[0], bench_cmp);
    }
    if (nf == 0) {
        fprintf(stderr, "bench_bounce: no input\n");
        return 1;
    }
    for (i = 0; i < nf; i++)
        bench_parse_one(&files[i], files[i].format, sizeof files[i].format);

    /* time each file separately in round-robin slices, so that per-format
     * figures do not depend on the order */
    struct bench_fmt fmts[BENCH_MAX_FMTS];
    int nfmt = 0;
    memset(fmts, 0, sizeof fmts);
    unsigned long total = 0;
    double bytes = 0, busy = 0, start = bench_now();
    long round = 0;
    while ((rounds < 0 || round < rounds) && (rounds >= 0 || bench_now() - start < secs)) {
        for (i = 0; i < nf; i++) {
            const int reps = 50;
            double t0 = bench_now();
            for (int k = 0; k < reps; k++)
                bench_parse_one(&files[i], NULL, 0);
            double dt = bench_now() - t0;
            int fi;
            for (fi = 0; fi < nfmt; fi++)
                if (strcmp(fmts[fi].name, files[i].format) == 0) break;
            if (fi == nfmt && nfmt < BENCH_MAX_FMTS)
                snprintf(fmts[nfmt++].name, 24, "%s", files[i].format);
            if (fi < nfmt) {
                fmts[fi].msgs += reps;
                fmts[fi].bytes += (double)files[i].len * reps;
                fmts[fi].secs += dt;
            }
            total += reps;
            bytes += (double)files[i].len * reps;
            busy += dt;
        }
        round++;
    }
    printf("%-12s %10s %12s %8s\n", "format", "messages", "msgs/s", "MB/s");
    for (int fi = 0; fi < nfmt; fi++)
        printf("%-12s %10lu %12.0f %8.1f\n", fmts[fi].name, fmts[fi].msgs,
               fmts[fi].msgs / fmts[fi].secs, fmts[fi].bytes / fmts[fi].secs / 1e6);
    printf("%-12s %10lu %12.0f %8.1f\n", "overall", total, total / busy, bytes / busy / 1e6);
    printf("(%d files, %.1f s)\n", nf, busy);
    for (i = 0; i < nf; i++) {
        free(files[i].data);
        free(files[i].name);
    }
    return 0;
}
