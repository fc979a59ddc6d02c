/*
 * main: preforkd's command line. Reads the options, loads the config, and
 * either checks it (-t), signals the running master (-s), or leaves the
 * terminal (unless -f) and hands over to the master. Everything printed for
 * a person before logging starts is here.
 */
#define _GNU_SOURCE     /* pipe2 */
#include <bsd/unistd.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "master.h"
#include "pidfile.h"
#include "systemd.h"
#include "tls_config.h"

#include <openssl/ssl.h>
#include "prefork.h"

#ifndef PF_SYSCONFDIR
#define PF_SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG PF_SYSCONFDIR "/preforkd/preforkd.conf"
/* Room for the command line shown in the master's title. */
#define TITLE_MAX 256

extern char **environ;

static const struct {
    const char *name;
    int sig;
} control_signals[] = {
    { "reload", SIGHUP }, { "stop", SIGTERM }, { "quit", SIGQUIT }, { "reopen", SIGUSR1 },
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: preforkd [-c FILE] [-f] [-t] [-s SIGNAL] [-V] [-h]\n"
            "  -c FILE    config file (default: %s)\n"
            "  -f         stay in the foreground, log to stderr\n"
            "  -t         check the config file and exit (0: valid, 1: not)\n"
            "  -s SIGNAL  send reload | stop | quit | reopen to the running master\n"
            "             named by the config's pidfile\n"
            "  -V         print the version and exit\n"
            "  -h         print this help and exit\n",
            DEFAULT_CONFIG);
}

static int send_control_signal(const struct config *c, const char *name)
{
    char err[512];
    pid_t pid;
    int sig = 0;

    for (size_t i = 0; i < sizeof(control_signals) / sizeof(control_signals[0]); i++)
        if (strcmp(name, control_signals[i].name) == 0)
            sig = control_signals[i].sig;
    if (sig == 0) {
        fprintf(stderr, "preforkd: -s %s: unknown signal (reload, stop, quit or reopen)\n", name);
        return 1;
    }
    if (c->pidfile == NULL) {
        fprintf(stderr, "preforkd: -s %s: %s has no [daemon] pidfile to find the master by\n",
                name, c->path);
        return 1;
    }
    pid = pidfile_read(c->pidfile, err, sizeof(err));
    if (pid < 0) {
        fprintf(stderr, "preforkd: -s %s: %s\n", name, err);
        return 1;
    }
    if (kill(pid, sig) < 0) {
        fprintf(stderr, "preforkd: -s %s: kill %d: %s\n", name, (int)pid, strerror(errno));
        return 1;
    }
    return 0;
}

/*
 * Leaves the terminal: fork, setsid, fork again (the daemon can never
 * reacquire a terminal), chdir("/"). The launcher waits on a pipe and exits
 * 0 when the master says it serves, 1 if it dies first, so `preforkd`
 * returns only once the service is up or has failed visibly. Returns the
 * pipe's write end in the daemon, -1 on failure (in the launcher).
 */
static int daemonize(void)
{
    int fds[2];
    pid_t pid;
    char ok;

    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0) {
        close(fds[1]);
        _exit(read(fds[0], &ok, 1) == 1 ? 0 : 1);
    }
    close(fds[0]);
    if (setsid() < 0)
        _exit(1);
    pid = fork();
    if (pid != 0)
        _exit(pid < 0 ? 1 : 0);
    if (chdir("/") < 0)
        _exit(1);
    umask(022);
    return fds[1];
}

/* -t goes as far as the start would: certificate and key load, match, and
 * have not expired (a warning when they soon will). */
static int test_tls(const struct config *c, const char *path)
{
    char err[512], warning[512];
    struct ssl_ctx_st *ctx;

    if (!tls_config_needed(c))
        return 0;
    ctx = tls_config_ctx_new(c, err, sizeof(err), warning, sizeof(warning));
    if (ctx == NULL) {
        fprintf(stderr, "preforkd: %s\npreforkd: configuration file %s test failed\n", err, path);
        return 1;
    }
    if (warning[0] != '\0')
        fprintf(stderr, "preforkd: warning: %s\n", warning);
    SSL_CTX_free(ctx);
    return 0;
}

static void build_title(char *title, int argc, char **argv)
{
    size_t len = 0;

    title[0] = '\0';
    for (int i = 0; i < argc && len < TITLE_MAX - 1; i++)
        len += (size_t)snprintf(title + len, TITLE_MAX - len, i ? " %s" : "%s", argv[i]);
}

int main(int argc, char **argv)
{
    const char *path = DEFAULT_CONFIG, *signame = NULL;
    struct master_options mo = { .ready_fd = -1 };
    char title[TITLE_MAX], abspath[PATH_MAX], err[512];
    bool test_only = false;
    struct sd_listen_fds inherited;
    struct config *c;
    int opt;

    /* Before setproctitle_init moves argv out of the way. */
    build_title(title, argc, argv);
    while ((opt = getopt(argc, argv, "c:fts:Vh")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'f': mo.foreground = true; break;
        case 't': test_only = true; break;
        case 's': signame = optarg; break;
        case 'V': printf("preforkd %s\n", PF_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "preforkd: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    /* Reloads re-read the file after chdir("/"). */
    if (realpath(path, abspath) != NULL)
        path = abspath;
    c = calloc(1, sizeof(*c));
    if (c == NULL || config_load(path, c, err, sizeof(err)) < 0 ||
        (!signame && master_check_config(c, err, sizeof(err)) < 0)) {
        fprintf(stderr, "preforkd: %s\n", c ? err : strerror(ENOMEM));
        if (test_only)
            fprintf(stderr, "preforkd: configuration file %s test failed\n", path);
        if (c)
            config_free(c);
        free(c);
        return 1;
    }
    if (test_only || signame) {
        int rc = 0;

        if (test_only)
            rc = test_tls(c, path);
        if (test_only && rc == 0)
            printf("preforkd: configuration file %s test is successful\n", path);
        else if (!test_only)
            rc = send_control_signal(c, signame);
        config_free(c);
        free(c);
        return rc;
    }
    /* In the foreground, stderr is the log whatever the file says. */
    if (log_open(mo.foreground ? "stderr" : c->log, c->log_level, err, sizeof(err)) < 0) {
        fprintf(stderr, "preforkd: %s: [daemon] log = %s: %s\n", path, c->log, err);
        config_free(c);
        free(c);
        return 1;
    }
    /* LISTEN_PID names this process, not the daemon it may fork into. */
    sd_listen_fds_take(&inherited);
    mo.inherited = &inherited;
    log_tee_stderr(!mo.foreground);
    setproctitle_init(argc, argv, environ);
    if (!mo.foreground && (mo.ready_fd = daemonize()) < 0) {
        fprintf(stderr, "preforkd: leaving the terminal: %s\n", strerror(errno));
        return 1;
    }
    mo.config_path = path;
    mo.title = title;
    return master_run(c, &mo);
}
