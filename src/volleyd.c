/*
 * volleyd - the daemon's entry point: arguments, config, logs, daemonizing, pid
 * file, then the engine.
 *
 * When it daemonizes, the parent waits on a pipe until the child has opened the
 * spool and bound every listener, so `volleyd -c FILE` exits non-zero with the
 * reason whenever the daemon could not really start.
 */
#include "conf.h"
#include "engine.h"
#include "log.h"
#include "shape.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void volleyd_usage(FILE *f)
{
    fprintf(f, "usage: volleyd -c CONFIG [--foreground]\n"
               "       volleyd -c CONFIG --check-config\n"
               "       volleyd --print-defaults | --version\n"
               "  -c, --config FILE    configuration file (conf/volley.conf documents every key)\n"
               "  -f, --foreground     stay in the foreground, copy the log to stderr\n"
               "  -t, --check-config   validate the configuration and exit\n"
               "      --print-defaults print every key with its default and exit\n");
}

/* volleyd_raise_nofile - thousands of sessions need descriptors: use the hard limit */
static void volleyd_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* volleyd_daemonize - fork twice; returns the write end of the readiness pipe in the
 * daemon (the original parent never returns: it exits with the child's verdict) */
static int volleyd_daemonize(void)
{
    int p[2];
    if (pipe(p) < 0) {
        perror("volleyd: pipe");
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("volleyd: fork");
        exit(1);
    }
    if (pid > 0) {
        close(p[1]);
        char ok = 0;
        ssize_t n;
        do
            n = read(p[0], &ok, 1);
        while (n < 0 && errno == EINTR);
        waitpid(pid, NULL, 0);
        /* _exit: the daemon owns everything now; nothing here is ours to tear down */
        _exit(n == 1 && ok == 1 ? 0 : 1);
    }
    close(p[0]);
    setsid();
    pid = fork();
    if (pid < 0)
        exit(1);
    if (pid > 0)
        _exit(0);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        /* stderr stays until ready: start-up errors still reach the terminal */
        if (null > 2)
            close(null);
    }
    return p[1];
}

/* volleyd_write_pid - write the pid file; 0 or -1 */
static int volleyd_write_pid(const char *path)
{
    if (!*path)
        return 0;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%ld\n", (long)getpid());
    if (fclose(f) != 0 || rename(tmp, path) < 0)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"foreground", no_argument, NULL, 'f'},
        {"check-config", no_argument, NULL, 't'}, {"print-defaults", no_argument, NULL, 'P'},
        {"version", no_argument, NULL, 'V'},      {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    /* Each message's text passes through a few KB of heap on the delivery threads;
     * with the dynamic trim threshold their arenas shrank and regrew (an mprotect
     * per cycle, thousands a second).  Keep up to 16 MB of free top instead. */
    mallopt(M_TRIM_THRESHOLD, 16 << 20);
    const char *config = NULL;
    bool foreground = false, check = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:fth", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config = optarg;
            break;
        case 'f':
            foreground = true;
            break;
        case 't':
            check = true;
            break;
        case 'P':
            conf_print_defaults(STDOUT_FILENO);
            return 0;
        case 'V':
            printf("volleyd %s\n", VOLLEY_VERSION);
            return 0;
        case 'h':
            volleyd_usage(stdout);
            return 0;
        default:
            volleyd_usage(stderr);
            return 2;
        }
    }
    if (!config || optind != argc) {
        volleyd_usage(stderr);
        return 2;
    }
    char err[1024];
    struct conf *conf = conf_load(config, err, sizeof err);
    if (!conf) {
        fprintf(stderr, "volleyd: %s\n", err);
        return 1;
    }
    if (check) {
        /* the shaping rules are part of the configuration: a typo there must fail
         * the check, not the next start or SIGHUP */
        struct engine_rules *rules = engine_rules_load(conf, err, sizeof err);
        if (!rules) {
            fprintf(stderr, "volleyd: %s\n", err);
            conf_free(conf);
            return 1;
        }
        engine_rules_unref(rules);
        printf("volleyd: %s: configuration ok\n", config);
        conf_free(conf);
        return 0;
    }
    volleyd_raise_nofile();
    int ready_fd = foreground ? -1 : volleyd_daemonize();

    if (log_open(conf->log_dir, log_level_parse(conf->log_level), foreground) < 0) {
        fprintf(stderr, "volleyd: cannot open logs in %s: %s\n", conf->log_dir, strerror(errno));
        return 1;
    }
    struct engine *eng = engine_create(conf, err, sizeof err);
    if (!eng) {
        fprintf(stderr, "volleyd: %s\n", err);
        log_msg(LOG_ERROR, "startup", "%s", err);
        conf_free(conf);
        return 1;
    }
    if (engine_listen(eng) < 0) {
        fprintf(stderr, "volleyd: cannot open listeners (see %s/volleyd.log)\n", conf->log_dir);
        engine_free(eng);
        return 1;
    }
    if (volleyd_write_pid(conf->pid_file) < 0)
        log_msg(LOG_WARNING, "startup", "cannot write pid file %s: %s", conf->pid_file,
                strerror(errno));
    if (ready_fd >= 0) {
        char ok = 1;
        if (write(ready_fd, &ok, 1) != 1)
            log_msg(LOG_WARNING, "startup", "cannot signal readiness: %s", strerror(errno));
        close(ready_fd);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, STDERR_FILENO);
            close(null);
        }
    }
    engine_run(eng);
    engine_free(eng);
    if (*conf->pid_file)
        unlink(conf->pid_file);
    log_msg(LOG_NOTICE, "exit", "volleyd exiting");
    log_close();
    conf_free(conf);
    return 0;
}
