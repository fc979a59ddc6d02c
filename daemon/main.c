/*
 * main: preforkd's command line. Reads the options, loads the config, and
 * hands over to serve(); everything it prints for a person is here.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "prefork.h"
#include "serve.h"

#ifndef PF_SYSCONFDIR
#define PF_SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG PF_SYSCONFDIR "/preforkd/preforkd.conf"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: preforkd [-c FILE] [-f] [-t] [-V] [-h]\n"
            "  -c FILE  config file (default: %s)\n"
            "  -f       stay in the foreground, log to stderr\n"
            "  -t       check the config file and exit (0: valid, 1: not)\n"
            "  -V       print the version and exit\n"
            "  -h       print this help and exit\n",
            DEFAULT_CONFIG);
}

int main(int argc, char **argv)
{
    const char *path = DEFAULT_CONFIG;
    bool foreground = false, test_only = false;
    char err[512];
    struct config c;
    int fds[SERVE_MAX_FDS];
    int opt, rc, n;

    while ((opt = getopt(argc, argv, "c:ftVh")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'f': foreground = true; break;
        case 't': test_only = true; break;
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
    if (config_load(path, &c, err, sizeof(err)) < 0) {
        fprintf(stderr, "preforkd: %s\n", err);
        if (test_only)
            fprintf(stderr, "preforkd: configuration file %s test failed\n", path);
        return 1;
    }
    if (test_only) {
        printf("preforkd: configuration file %s test is successful\n", path);
        config_free(&c);
        return 0;
    }
    /* The http handler is issue #5; until it lands, say so instead of serving echo. */
    if (c.handler != CONFIG_HANDLER_ECHO) {
        fprintf(stderr, "preforkd: %s: [server] handler = http: not in this build yet, use echo\n",
                path);
        config_free(&c);
        return 1;
    }
    /* In the foreground, stderr is the log whatever the file says. */
    if (log_open(foreground ? "stderr" : c.log, c.log_level, err, sizeof(err)) < 0) {
        fprintf(stderr, "preforkd: %s: [daemon] log = %s: %s\n", path, c.log, err);
        config_free(&c);
        return 1;
    }
    /* Bind before leaving the terminal, so that a port in use is seen. */
    n = serve_bind_all(&c, fds, SERVE_MAX_FDS);
    if (n < 0) {
        config_free(&c);
        return 1;
    }
    if (!foreground && daemon(1, 0) < 0) {
        perror("preforkd: daemon");
        config_free(&c);
        return 1;
    }
    rc = serve(&c, fds, (size_t)n);
    config_free(&c);
    log_close();
    return rc;
}
