/* check_tcpserver: pf_tcp_server end to end, an echo service on IPv4, IPv6
 * and a unix socket, connection limits, stop, and start(n) pre-forking. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prefork.h"
#include "testutil.h"

#define BIG_LEN (1024 * 1024)

static void echo_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    (void)status;               /* read_bytes has no failure it reports here */
    pf_iostream_write(s, buf, len, NULL);
    pf_iostream_read_bytes(s, 65536, true, echo_read_cb);
}

static void echo_stream_cb(struct pf_tcp_server *srv, struct pf_iostream *s,
                           const struct sockaddr *peer, socklen_t len)
{
    (void)srv;
    (void)peer;
    (void)len;
    pf_iostream_read_bytes(s, 65536, true, echo_read_cb);
}

/* The client runs in a child so that the loop can serve in this process;
 * it exits 0 when every byte came back. */
static pid_t spawn_echo_client(const char *addr, unsigned port, const char *unix_path)
{
    pid_t pid = fork();

    if (pid == 0) {
        static char out[BIG_LEN], in[BIG_LEN];
        int fd = unix_path ? tu_connect_unix(unix_path) : tu_connect_tcp(addr, port);

        if (fd < 0)
            _exit(2);
        for (size_t i = 0; i < BIG_LEN; i++)
            out[i] = (char)(i * 7 + i / 251);
        if (!tu_write_all(fd, "hello\n", 6) || tu_read_full(fd, in, 6, 3000) != 6 ||
            memcmp(in, "hello\n", 6) != 0)
            _exit(3);
        /* 1 MiB is more than the socket buffers hold: the server's writes
         * must queue while we are still sending. */
        pid_t writer = fork();
        if (writer == 0)
            _exit(tu_write_all(fd, out, BIG_LEN) ? 0 : 4);
        size_t got = tu_read_full(fd, in, BIG_LEN, 5000);
        if (got != BIG_LEN || memcmp(in, out, BIG_LEN) != 0) {
            size_t i = 0;
            while (i < got && in[i] == out[i]) i++;
            fprintf(stderr, "got %zu, first diff at %zu\n", got, i);
            _exit(5);
        }
        int status;
        if (waitpid(writer, &status, 0) != writer || !WIFEXITED(status) || WEXITSTATUS(status))
            _exit(6);
        _exit(0);
    }
    return pid;
}

struct child_wait {
    bool done;
    int status;
};

static void child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    struct child_wait *cw = w->data;

    (void)revents;
    ev_child_stop(loop, w);
    cw->status = w->rstatus;
    cw->done = true;
}

/* Serves until the client child exits; returns its exit status. */
static int serve_until_client_exits(struct ev_loop *loop, pid_t pid)
{
    struct child_wait cw = { 0 };
    ev_child w;

    ev_child_init(&w, child_cb, pid, 0);
    w.data = &cw;
    ev_child_start(loop, &w);
    if (!tu_run_until(loop, &cw.done, 10)) {
        ev_child_stop(loop, &w);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return WIFEXITED(cw.status) ? WEXITSTATUS(cw.status) : 128 + WTERMSIG(cw.status);
}

static unsigned first_port(struct pf_tcp_server *srv)
{
    size_t n;
    const int *fds = pf_tcp_server_sockets(srv, &n);

    return n > 0 ? tu_local_port(fds[0]) : 0;
}

START_TEST(test_echo_round_trip_over_ipv4)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct pf_tcp_server *srv = pf_tcp_server_new(loop, echo_stream_cb, NULL);
    char err[PF_ERRMSG_SIZE];

    ck_assert_int_eq(pf_tcp_server_listen(srv, 0, "127.0.0.1", err), 0);
    ck_assert_int_eq(serve_until_client_exits(loop, spawn_echo_client("127.0.0.1", first_port(srv), NULL)), 0);
    pf_tcp_server_free(srv);
}
END_TEST

START_TEST(test_echo_round_trip_over_ipv6)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct pf_tcp_server *srv = pf_tcp_server_new(loop, echo_stream_cb, NULL);
    char err[PF_ERRMSG_SIZE];

    ck_assert_int_eq(pf_tcp_server_listen(srv, 0, "::1", err), 0);
    ck_assert_int_eq(serve_until_client_exits(loop, spawn_echo_client("::1", first_port(srv), NULL)), 0);
    pf_tcp_server_free(srv);
}
END_TEST

START_TEST(test_echo_round_trip_over_unix_socket)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct pf_tcp_server *srv = pf_tcp_server_new(loop, echo_stream_cb, NULL);
    char dir[] = "/tmp/pf-tcpserver-XXXXXX", path[64], err[PF_ERRMSG_SIZE];
    int fd;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/echo.sock", dir);
    fd = pf_bind_unix_socket(path, 0600, 0, err);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pf_tcp_server_add_sockets(srv, &fd, 1), 0);
    ck_assert_int_eq(serve_until_client_exits(loop, spawn_echo_client(NULL, 0, path)), 0);
    pf_tcp_server_free(srv);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_bind_then_start_one_serves_in_process)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct pf_tcp_server *srv = pf_tcp_server_new(loop, echo_stream_cb, NULL);
    char err[PF_ERRMSG_SIZE];
    size_t n;

    ck_assert_int_eq(pf_tcp_server_bind(srv, 0, "127.0.0.1", NULL, err), 0);
    pf_tcp_server_sockets(srv, &n);
    ck_assert_uint_eq(n, 0);    /* bound, not accepting yet */
    ck_assert_int_eq(pf_tcp_server_start(srv, 1, 0), 0);
    ck_assert_int_eq(serve_until_client_exits(loop, spawn_echo_client("127.0.0.1", first_port(srv), NULL)), 0);
    pf_tcp_server_free(srv);
}
END_TEST

START_TEST(test_bind_error_names_address_and_cause)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct pf_tcp_server *srv = pf_tcp_server_new(loop, echo_stream_cb, NULL);
    char err[PF_ERRMSG_SIZE], want[64];
    unsigned port;

    ck_assert_int_eq(pf_tcp_server_listen(srv, 0, "127.0.0.1", err), 0);
    port = first_port(srv);
    ck_assert_int_eq(pf_tcp_server_listen(srv, port, "127.0.0.1", err), -EADDRINUSE);
    snprintf(want, sizeof(want), "127.0.0.1:%u", port);
    ck_assert_ptr_nonnull(strstr(err, want));
    ck_assert_ptr_nonnull(strstr(err, "Address already in use"));
    pf_tcp_server_free(srv);
}
END_TEST

START_TEST(test_stop_closes_listeners_and_refuses_connections)
{
    struct ev_loop *loop = ev_default_loop(0);
    int before = tu_fd_count();
    struct pf_tcp_server *srv = pf_tcp_server_new(loop, echo_stream_cb, NULL);
    char err[PF_ERRMSG_SIZE];
    unsigned port;

    ck_assert_int_eq(pf_tcp_server_listen(srv, 0, "127.0.0.1", err), 0);
    port = first_port(srv);
    pf_tcp_server_stop(srv);
    ck_assert_int_eq(tu_fd_count(), before);
    ck_assert_int_eq(tu_connect_tcp("127.0.0.1", port), -ECONNREFUSED);
    pf_tcp_server_free(srv);
}
END_TEST

struct counting {
    struct pf_iostream *streams[8];
    int n;
};

static void ignore_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    (void)status;
    (void)s;
    (void)buf;
    (void)len;
}

static void keep_stream_cb(struct pf_tcp_server *srv, struct pf_iostream *s,
                           const struct sockaddr *peer, socklen_t len)
{
    struct counting *c = pf_tcp_server_data(srv);

    (void)peer;
    (void)len;
    c->streams[c->n++] = s;
    /* A pending read is what notices the client's EOF. */
    pf_iostream_read_until_close(s, ignore_read_cb);
}

START_TEST(test_max_connections_pauses_accept_until_a_stream_closes)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct pf_tcp_server_options o = { .max_connections = 2 };
    struct pf_tcp_server *srv = pf_tcp_server_new(loop, keep_stream_cb, &o);
    struct pf_tcp_server_stats st;
    struct counting c = { 0 };
    char err[PF_ERRMSG_SIZE];
    int cl[3];

    pf_tcp_server_set_data(srv, &c);
    ck_assert_int_eq(pf_tcp_server_listen(srv, 0, "127.0.0.1", err), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_ge(cl[i] = tu_connect_tcp("127.0.0.1", first_port(srv)), 0);
    tu_run_for(loop, 0.3);
    ck_assert_int_eq(c.n, 2);
    pf_tcp_server_stats(srv, &st);
    ck_assert_uint_eq(st.active, 2);
    ck_assert_uint_eq(st.accepted, 2);

    pf_iostream_close(c.streams[0]);
    tu_run_for(loop, 0.3);
    ck_assert_int_eq(c.n, 3);   /* the third came off the kernel's queue */
    pf_tcp_server_stats(srv, &st);
    ck_assert_uint_eq(st.active, 2);
    ck_assert_uint_eq(st.accepted, 3);
    for (int i = 0; i < 3; i++)
        close(cl[i]);
    tu_run_for(loop, 0.3);    /* EOF closes the other two */
    pf_tcp_server_stats(srv, &st);
    ck_assert_uint_eq(st.active, 0);
    pf_tcp_server_free(srv);
}
END_TEST

START_TEST(test_free_with_open_streams_leaks_nothing)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct pf_tcp_server *srv = pf_tcp_server_new(loop, echo_stream_cb, NULL);
    char err[PF_ERRMSG_SIZE], buf[4];
    int cl;

    ck_assert_int_eq(pf_tcp_server_listen(srv, 0, "127.0.0.1", err), 0);
    cl = tu_connect_tcp("127.0.0.1", first_port(srv));
    tu_run_for(loop, 0.2);
    pf_tcp_server_free(srv);
    /* The open stream still echoes, and its close frees the server (ASan
     * reports a leak or a use after free otherwise). */
    ck_assert(tu_write_all(cl, "abc", 3));
    tu_run_for(loop, 0.2);
    ck_assert_uint_eq(tu_read_full(cl, buf, 3, 1000), 3);
    close(cl);
    tu_run_for(loop, 0.2);
}
END_TEST

START_TEST(test_close_streams_closes_every_open_connection)
{
    struct ev_loop *loop = ev_default_loop(0);
    struct pf_tcp_server *srv = pf_tcp_server_new(loop, echo_stream_cb, NULL);
    struct pf_tcp_server_stats st;
    char err[PF_ERRMSG_SIZE], buf[4];
    int cl[3];

    ck_assert_int_eq(pf_tcp_server_listen(srv, 0, "127.0.0.1", err), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_ge(cl[i] = tu_connect_tcp("127.0.0.1", first_port(srv)), 0);
    tu_run_for(loop, 0.2);
    pf_tcp_server_stats(srv, &st);
    ck_assert_uint_eq(st.active, 3);
    pf_tcp_server_close_streams(srv);
    tu_run_for(loop, 0.2);
    pf_tcp_server_stats(srv, &st);
    ck_assert_uint_eq(st.active, 0);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(tu_read_full(cl[i], buf, sizeof(buf), 1000), 0);     /* EOF */
        close(cl[i]);
    }
    pf_tcp_server_free(srv);
}
END_TEST

/* start(2) pre-forks two servers sharing the listener; each reports its
 * task id in its replies, so the test sees both serve. */
static void id_stream_cb(struct pf_tcp_server *srv, struct pf_iostream *s,
                         const struct sockaddr *peer, socklen_t len)
{
    char reply[16];
    int n = snprintf(reply, sizeof(reply), "%d\n", pf_task_id());

    (void)srv;
    (void)peer;
    (void)len;
    pf_iostream_write(s, reply, (size_t)n, pf_iostream_close);
}

START_TEST(test_start_two_forks_two_servers_with_task_ids)
{
    char err[PF_ERRMSG_SIZE];
    int pfd[2], seen[2] = { 0 };
    unsigned port;
    pid_t sup;

    ck_assert_int_eq(pipe(pfd), 0);
    /* The servers outlive their supervisor: adopt them, to reap them. */
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    sup = fork();
    if (sup == 0) {
        struct ev_loop *loop;
        struct pf_tcp_server *srv;
        size_t n;

        /* Check's SIGTERM handler kills the whole process group; the
         * servers' PR_SET_PDEATHSIG must only end them. */
        signal(SIGTERM, SIG_DFL);
        loop = ev_default_loop(0);
        srv = pf_tcp_server_new(loop, id_stream_cb, NULL);
        if (pf_tcp_server_bind(srv, 0, "127.0.0.1", NULL, err) < 0)
            _exit(2);
        if (pf_tcp_server_start(srv, 2, 0) < 0)
            _exit(0);           /* the supervisor, done */
        {
            const int *fds = pf_tcp_server_sockets(srv, &n);
            unsigned p = tu_local_port(fds[0]);
            if (pf_task_id() == 0 && write(pfd[1], &p, sizeof(p)) != sizeof(p))
                _exit(3);
        }
        ev_run(loop, 0);
        _exit(0);
    }
    close(pfd[1]);
    ck_assert_uint_eq(tu_read_full(pfd[0], &port, sizeof(port), 5000), sizeof(port));
    /* The kernel hands queued connections to whichever process waits; keep
     * connecting until both ids answered. */
    for (int i = 0; i < 400 && !(seen[0] && seen[1]); i++) {
        char buf[8] = { 0 };
        int fd = tu_connect_tcp("127.0.0.1", port);

        ck_assert_int_ge(fd, 0);
        ck_assert_uint_ge(tu_read_full(fd, buf, sizeof(buf) - 1, 2000), 2);
        ck_assert(buf[0] == '0' || buf[0] == '1');
        seen[buf[0] - '0'] = 1;
        close(fd);
        if (i % 20 == 19)
            usleep(20000);
    }
    kill(sup, SIGKILL);         /* children follow through PR_SET_PDEATHSIG */
    waitpid(sup, NULL, 0);
    close(pfd[0]);
    /* Every server exits by itself once its supervisor is gone. */
    for (int reaped = 0; reaped < 2;) {
        pid_t pid = waitpid(-1, NULL, 0);
        ck_assert_int_gt(pid, 0);
        reaped++;
    }
    ck_assert(seen[0] && seen[1]);
}
END_TEST

static Suite *tcpserver_suite(void)
{
    Suite *s = suite_create("tcpserver");
    TCase *tc = tu_add_tcase(s, "core", 20);

    tcase_add_test(tc, test_echo_round_trip_over_ipv4);
    tcase_add_test(tc, test_echo_round_trip_over_ipv6);
    tcase_add_test(tc, test_echo_round_trip_over_unix_socket);
    tcase_add_test(tc, test_bind_then_start_one_serves_in_process);
    tcase_add_test(tc, test_bind_error_names_address_and_cause);
    tcase_add_test(tc, test_stop_closes_listeners_and_refuses_connections);
    tcase_add_test(tc, test_max_connections_pauses_accept_until_a_stream_closes);
    tcase_add_test(tc, test_free_with_open_streams_leaks_nothing);
    tcase_add_test(tc, test_close_streams_closes_every_open_connection);
    tcase_add_test(tc, test_start_two_forks_two_servers_with_task_ids);
    return s;
}

int main(void)
{
    return tu_run_suite(tcpserver_suite()) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
