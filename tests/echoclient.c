/* Echo clients; see echoclient.h. */
#include "echoclient.h"
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 2000
#define ECHO_TIMEOUT_SEC 2.0
/* A load loop with fewer round trips than this did not load anything. */
#define MIN_LOAD_ROUNDS 50
/* Between two round trips of a load loop: ~1000 connections/s per thread
 * exercise every window while leaving ephemeral ports for the rest. */
#define LOAD_PAUSE_US 1000
/* Bytes per round trip of a load loop. */
#define LOAD_MSG_LEN 16

bool ec_echo_ok(unsigned port)
{
    int fd = tu_connect_loopback(port, CONNECT_TIMEOUT_MS);
    bool ok;

    if (fd < 0)
        return false;
    ok = tu_echo_exchange(fd, "ping\n", 5, ECHO_TIMEOUT_SEC);
    close(fd);
    return ok;
}

void ec_assert_serving(const struct du_daemon *d, unsigned port, const char *when)
{
    ck_assert_msg(ec_echo_ok(port), "%s: no echo on 127.0.0.1:%u\n%s", when, port,
                  du_log_tail(d));
}

int ec_open_session(const struct du_daemon *d)
{
    int fd = tu_connect_loopback(d->port, CONNECT_TIMEOUT_MS);

    ck_assert_msg(fd >= 0, "connect 127.0.0.1:%u: %s", d->port, strerror(-fd));
    ck_assert_msg(tu_echo_exchange(fd, "hello\n", 6, ECHO_TIMEOUT_SEC),
                  "no echo on a new session\n%s", du_log_tail(d));
    return fd;
}

bool ec_session_echoes(int fd, int round)
{
    char msg[32];
    int len = snprintf(msg, sizeof(msg), "still here %d\n", round);

    return tu_echo_exchange(fd, msg, (size_t)len, ECHO_TIMEOUT_SEC);
}

bool ec_wait_refused(unsigned port, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    do {
        int fd = tu_connect_loopback(port, 100);

        if (fd == -ECONNREFUSED)
            return true;
        if (fd >= 0)
            close(fd);
        usleep(5000);
    } while (tu_now() < deadline);
    return false;
}

/* One client thread: connect, echo LOAD_MSG_LEN bytes, close, until stop. */
static void *load_thread(void *arg)
{
    struct ec_client *client = arg;
    struct ec_load *l = client->load;

    for (long round = 0; !atomic_load(&l->stop); round++) {
        char msg[48];   /* LOAD_MSG_LEN bytes are sent: "t1-000000000042\n" */
        int fd = tu_connect_loopback(l->port, CONNECT_TIMEOUT_MS);

        snprintf(msg, sizeof(msg), "t%u-%012lu\n", (unsigned)client->index % 10u,
                 (unsigned long)round % 1000000000000UL);
        if (fd < 0) {
            int none = 0;

            atomic_compare_exchange_strong(&l->first_connect_errno, &none, -fd);
            atomic_fetch_add(&l->connect_failures, 1);
        } else {
            if (tu_echo_exchange(fd, msg, LOAD_MSG_LEN, ECHO_TIMEOUT_SEC))
                atomic_fetch_add(&l->rounds, 1);
            else
                atomic_fetch_add(&l->echo_failures, 1);
            close(fd);
        }
        usleep(LOAD_PAUSE_US);
    }
    return NULL;
}

void ec_load_start(struct ec_load *l, unsigned port)
{
    memset(l, 0, sizeof(*l));
    l->port = port;
    for (int i = 0; i < EC_LOAD_THREADS; i++) {
        struct ec_client *client = &l->clients[i];

        client->load = l;
        client->index = i;
        ck_assert_int_eq(pthread_create(&client->thread, NULL, load_thread, client), 0);
    }
}

void ec_load_stop(struct ec_load *l)
{
    atomic_store(&l->stop, true);
    for (int i = 0; i < EC_LOAD_THREADS; i++)
        pthread_join(l->clients[i].thread, NULL);
}

void ec_assert_load(const struct du_daemon *d, struct ec_load *l, int max_echo_failures)
{
    int rounds = atomic_load(&l->rounds), cf = atomic_load(&l->connect_failures),
        ef = atomic_load(&l->echo_failures), first = atomic_load(&l->first_connect_errno);

    ck_assert_msg(cf == 0, "%d of %d connects failed, the first with %s\n%s", cf, rounds + cf + ef,
                  strerror(first), du_log_tail(d));
    ck_assert_msg(ef <= max_echo_failures,
                  "%d of %d connections failed to echo (at most %d may)\n%s",
                  ef, rounds + ef, max_echo_failures, du_log_tail(d));
    ck_assert_msg(rounds >= MIN_LOAD_ROUNDS, "only %d round trips: the load loop did not run\n%s",
                  rounds, du_log_tail(d));
}
