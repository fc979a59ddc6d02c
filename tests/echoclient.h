/* Clients of an echo daemon (handler = echo) for the integration suites:
 * one-off round trips, sessions kept open across signals, and threads that
 * connect, echo and close in a loop while a test does something to the
 * daemon, counting what failed. Everything is on 127.0.0.1. */
#ifndef PF_ECHOCLIENT_H
#define PF_ECHOCLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "daemonutil.h"

/* Client threads of a load loop: each has at most one connection in flight. */
#define EC_LOAD_THREADS 2

/* A new connection to port echoes "ping\n". */
bool ec_echo_ok(unsigned port);
/* ec_echo_ok, or fail the test naming when (and showing d's log). */
void ec_assert_serving(const struct du_daemon *d, unsigned port, const char *when);
/* An open connection to d->port that echoed once: a worker has accepted it. */
int ec_open_session(const struct du_daemon *d);
/* One more round trip on an open session; false if it failed. */
bool ec_session_echoes(int fd, int round);
/* Polls connects to port until one is refused; false if none was within timeout_sec. */
bool ec_wait_refused(unsigned port, double timeout_sec);

/* Threads that connect, echo a few bytes and close, in a loop, until stopped. */
struct ec_load {
    unsigned port;
    atomic_bool stop;
    atomic_int rounds;              /* round trips that echoed */
    atomic_int connect_failures;
    atomic_int echo_failures;       /* reset, EOF, timeout or wrong bytes */
    atomic_int first_connect_errno;
    struct ec_client {
        struct ec_load *load;
        int index;                  /* tells its bytes from the others' */
        pthread_t thread;
    } clients[EC_LOAD_THREADS];
};
void ec_load_start(struct ec_load *l, unsigned port);
void ec_load_stop(struct ec_load *l);
/* Fails the test if the loop made too few round trips to have loaded
 * anything, any connect failed, or more than max_echo_failures round trips
 * failed after connecting. */
void ec_assert_load(const struct du_daemon *d, struct ec_load *l, int max_echo_failures);

#endif
