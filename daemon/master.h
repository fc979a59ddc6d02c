/* master: the supervising process. */
#ifndef PREFORKD_MASTER_H
#define PREFORKD_MASTER_H

#include <stdbool.h>

#include "config.h"
#include "systemd.h"

struct master_options {
    const char *config_path;    /* absolute: reloads happen after chdir("/") */
    bool foreground;            /* log to stderr whatever the config says */
    const char *title;          /* the command line, for `ps` */
    int ready_fd;               /* >= 0: write one byte once workers accept (daemonize) */
    struct sd_listen_fds *inherited;    /* socket activation; may be NULL */
};

/* Checks what a config needs beyond its syntax before it may run: the user
 * and group exist, the http root is a directory. Returns 0, or -1 with
 * errmsg set. */
int master_check_config(const struct config *c, char *errmsg, size_t len);

/* Binds c's listeners, forks the workers, supervises until told to stop.
 * Takes ownership of c (it is freed or replaced on reload). Returns the
 * process exit status. */
int master_run(struct config *c, const struct master_options *opt);

#endif
