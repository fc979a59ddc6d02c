/*
 * Check suite for lib/netutil.c: what pf_bind_sockets and pf_bind_unix_socket
 * leave bound (families, ports, flags, messages, leaked fds), how
 * pf_format_sockaddr spells addresses, and how an accept handler batches,
 * pauses at the fd limit and stops. Everything runs on loopback or in a
 * mkdtemp directory; every wait has a deadline.
 */
#define _GNU_SOURCE
#include "netutil.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Generous: the slowest test waits about 2 s, sanitizers make it slower. */
#define TCASE_TIMEOUT_SEC 10
/* Bound on waits for something the kernel does at once (queueing a connect). */
#define KERNEL_WAIT_SEC 2.0
/* How long a loop runs to show that something does NOT happen. */
#define QUIET_RUN_SEC 0.3
/* Accepted fds the log keeps open; the rest are closed and only counted. */
#define LOG_MAX 64

/* ---- helpers ---- */

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

static int sock_family(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    return ss.ss_family;
}

static int sockopt_int(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof(v);

    if (getsockopt(fd, level, name, &v, &len) < 0)
        return -errno;
    return v;
}

static bool is_nonblock_cloexec(int fd)
{
    int fdfl = fcntl(fd, F_GETFD), flfl = fcntl(fd, F_GETFL);

    return fdfl >= 0 && flfl >= 0 && (fdfl & FD_CLOEXEC) && (flfl & O_NONBLOCK);
}

/* Listener's accept queue length: for a LISTEN socket Linux reports it in
 * tcpi_unacked (and the listen() backlog in tcpi_sacked). */
static int accept_queue_len(int lfd)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    if (getsockopt(lfd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return -errno;
    return (int)ti.tcpi_unacked;
}

static int listen_backlog(int lfd)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);

    if (getsockopt(lfd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return -errno;
    return (int)ti.tcpi_sacked;
}

/* A blocking connect returns once the kernel has the handshake; wait (bounded)
 * until all n connections sit in the listener's accept queue. */
static bool wait_accept_queue(int lfd, int n)
{
    double deadline = tu_now() + KERNEL_WAIT_SEC;

    while (accept_queue_len(lfd) < n && tu_now() < deadline)
        poll(NULL, 0, 1);
    return accept_queue_len(lfd) == n;
}

/* One bound listener on 127.0.0.1, through the code under test. */
static int listen_loopback4(unsigned *port)
{
    char msg[PF_ERRMSG_SIZE] = "";
    int fd = -1;
    int n = pf_bind_sockets("127.0.0.1", 0, NULL, &fd, 1, msg);

    ck_assert_msg(n == 1, "pf_bind_sockets(127.0.0.1, 0) = %d: %s", n, msg);
    *port = tu_local_port(fd);
    ck_assert_uint_ne(*port, 0);
    return fd;
}

/* A listener made without the code under test, to occupy a port (or to show
 * that one is free: a listening socket still on it refuses the bind). */
static int plain_listener(int family, const char *addr, unsigned port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;

    ck_assert_int_ge(fd, 0);
    /* Else a client's TIME_WAIT on the same port number could refuse the bind. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        ck_assert_int_eq(inet_pton(AF_INET, addr, &sin->sin_addr), 1);
        len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        ck_assert_int_eq(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
        len = sizeof(*sin6);
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    ck_assert_msg(bind(fd, (struct sockaddr *)&ss, len) == 0, "bind %s:%u: %s",
                  addr, port, strerror(errno));
    ck_assert_int_eq(listen(fd, 8), 0);
    return fd;
}

/* Mutable state of one test, reached from the accept callback through h->data. */
struct accept_log {
    int fds[LOG_MAX];       /* accepted fds still open, in order */
    unsigned nfds;          /* connections accepted in total */
    int errors[LOG_MAX];
    unsigned nerrors;
    unsigned bad_flags;     /* accepted fds without NONBLOCK or CLOEXEC */
    unsigned bad_peer;      /* fd >= 0 without a peer, or fd < 0 with one */
    int peer_family;        /* of the last accepted peer */
    unsigned want;          /* done once nfds reaches this */
    bool done;
    bool remove_in_cb;      /* call pf_remove_accept_handler on the first accept */
};

static void log_accept_cb(struct pf_accept_handler *h, int fd,
                          const struct sockaddr *peer, socklen_t len)
{
    struct accept_log *log = h->data;

    if (fd < 0) {
        if (log->nerrors < LOG_MAX)
            log->errors[log->nerrors] = fd;
        log->nerrors++;
        if (peer != NULL)
            log->bad_peer++;
        return;
    }
    if (!is_nonblock_cloexec(fd))
        log->bad_flags++;
    if (peer == NULL || len < (socklen_t)sizeof(sa_family_t))
        log->bad_peer++;
    else
        log->peer_family = peer->sa_family;
    if (log->nfds < LOG_MAX)
        log->fds[log->nfds] = fd;
    else
        close(fd);
    log->nfds++;
    if (log->want != 0 && log->nfds >= log->want)
        log->done = true;
    if (log->remove_in_cb)
        pf_remove_accept_handler(h);
}

static void log_close_all(struct accept_log *log)
{
    unsigned kept = log->nfds < LOG_MAX ? log->nfds : LOG_MAX;

    for (unsigned i = 0; i < kept; i++)
        if (log->fds[i] >= 0)
            close(log->fds[i]);
    memset(log->fds, 0xff, sizeof(log->fds));
}

/* Ends an accept test: removes h (unless NULL, removed already), closes the
 * accepted fds, the n clients and the listener, frees the loop. */
static void accept_test_end(struct ev_loop *loop, struct pf_accept_handler *h,
                            struct accept_log *log, int *clients, int n, int lfd)
{
    if (h != NULL)
        pf_remove_accept_handler(h);
    log_close_all(log);
    close_all(clients, n);
    close(lfd);
    ev_loop_destroy(loop);
}

static void quiet_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)w; (void)revents;
}

/* One loop iteration (one wakeup), but never blocking longer than timeout_sec. */
static void run_once_bounded(struct ev_loop *loop, double timeout_sec)
{
    ev_timer guard;

    ev_timer_init(&guard, quiet_cb, timeout_sec, 0.);
    ev_timer_start(loop, &guard);
    ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &guard);
}

/* ---- pf_bind_sockets ---- */

START_TEST(test_bind_any_address_gives_ipv4_and_ipv6_on_one_kernel_port)
{
    /* NULL and "" both mean every interface; opt NULL and zeroed both mean defaults. */
    static const struct pf_bind_options zero_opt;
    const char *addrs[] = { NULL, "" };
    const struct pf_bind_options *opts[] = { NULL, &zero_opt };

    for (int i = 0; i < 2; i++) {
        char msg[PF_ERRMSG_SIZE] = "";
        int fds[PF_BIND_MAX];
        int n = pf_bind_sockets(addrs[i], 0, opts[i], fds, PF_BIND_MAX, msg);
        int fam0, fam1, c4, c6;
        unsigned p0, p1;

        ck_assert_msg(n == 2, "address %s: got %d sockets, want 2 (%s)",
                      addrs[i] ? "\"\"" : "NULL", n, msg);
        fam0 = sock_family(fds[0]);
        fam1 = sock_family(fds[1]);
        ck_assert_msg((fam0 == AF_INET && fam1 == AF_INET6) ||
                      (fam0 == AF_INET6 && fam1 == AF_INET),
                      "families %d and %d, want one AF_INET and one AF_INET6", fam0, fam1);
        p0 = tu_local_port(fds[0]);
        p1 = tu_local_port(fds[1]);
        ck_assert_uint_ne(p0, 0);
        ck_assert_msg(p0 == p1, "ports differ: %u and %u", p0, p1);

        /* Both families really answer on that port. */
        c4 = tu_connect_tcp("127.0.0.1", p0);
        c6 = tu_connect_tcp("::1", p0);
        ck_assert_msg(c4 >= 0, "connect 127.0.0.1:%u: %s", p0, strerror(-c4));
        ck_assert_msg(c6 >= 0, "connect [::1]:%u: %s", p0, strerror(-c6));
        close(c4);
        close(c6);
        close_all(fds, n);
    }
}
END_TEST

struct ip_key {
    int family;
    unsigned char addr[16];
    uint32_t scope;
};

static struct ip_key ip_key_of(const struct sockaddr *sa)
{
    struct ip_key k;

    memset(&k, 0, sizeof(k));
    k.family = sa->sa_family;
    if (sa->sa_family == AF_INET) {
        memcpy(k.addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(k.addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        k.scope = ((const struct sockaddr_in6 *)sa)->sin6_scope_id;
    }
    return k;
}

static bool ip_key_eq(const struct ip_key *a, const struct ip_key *b)
{
    return a->family == b->family && a->scope == b->scope &&
           memcmp(a->addr, b->addr, sizeof(a->addr)) == 0;
}

START_TEST(test_bind_hostname_binds_each_address_getaddrinfo_returns_on_one_port)
{
    struct addrinfo hints, *res, *ai;
    struct ip_key want[PF_BIND_MAX], got;
    int nwant = 0, fds[PF_BIND_MAX], n, rc;
    char msg[PF_ERRMSG_SIZE] = "";
    unsigned port;

    /* The expected set is whatever the resolver says here (maybe 127.0.0.1 only). */
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    rc = getaddrinfo("localhost", NULL, &hints, &res);
    ck_assert_msg(rc == 0, "getaddrinfo(localhost): %s", gai_strerror(rc));
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        struct ip_key k = ip_key_of(ai->ai_addr);
        bool seen = false;
        for (int i = 0; i < nwant; i++)
            seen = seen || ip_key_eq(&want[i], &k);
        if (!seen && nwant < PF_BIND_MAX)
            want[nwant++] = k;
    }
    freeaddrinfo(res);
    ck_assert_int_ge(nwant, 1);

    n = pf_bind_sockets("localhost", 0, NULL, fds, PF_BIND_MAX, msg);
    ck_assert_msg(n == nwant, "localhost: got %d sockets, getaddrinfo has %d distinct (%s)",
                  n, nwant, msg);
    port = tu_local_port(fds[0]);
    ck_assert_uint_ne(port, 0);
    for (int i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char buf[INET6_ADDRSTRLEN] = "?";
        bool found = false;

        ck_assert_int_eq(getsockname(fds[i], (struct sockaddr *)&ss, &len), 0);
        got = ip_key_of((struct sockaddr *)&ss);
        inet_ntop(got.family, got.addr, buf, sizeof(buf));
        for (int j = 0; j < nwant; j++)
            if (ip_key_eq(&want[j], &got)) {
                found = true;
                want[j].family = -1;    /* each expected address once */
            }
        ck_assert_msg(found, "socket %d bound to %s, not one of localhost's addresses "
                      "(or bound twice)", i, buf);
        ck_assert_msg(tu_local_port(fds[i]) == port, "socket %d on port %u, socket 0 on %u",
                      i, tu_local_port(fds[i]), port);
    }
    close_all(fds, n);
}
END_TEST

START_TEST(test_bind_family_option_restricts_sockets_to_that_family)
{
    const int families[] = { AF_INET, AF_INET6 };

    for (int i = 0; i < 2; i++) {
        struct pf_bind_options opt = { .family = families[i] };
        char msg[PF_ERRMSG_SIZE] = "";
        int fds[PF_BIND_MAX];
        int n = pf_bind_sockets(NULL, 0, &opt, fds, PF_BIND_MAX, msg);

        ck_assert_msg(n == 1, "family %d: got %d sockets, want 1 (%s)", families[i], n, msg);
        ck_assert_int_eq(sock_family(fds[0]), families[i]);
        ck_assert_uint_ne(tu_local_port(fds[0]), 0);
        close(fds[0]);
    }
}
END_TEST

START_TEST(test_bound_sockets_are_v6only_cloexec_nonblocking_reuseaddr_and_listening)
{
    /* An IPv6-only bind, where nothing else would notice a missing V6ONLY,
     * then dual stack. */
    static const struct pf_bind_options v6_opt = { .family = AF_INET6 };
    const struct pf_bind_options *opts[] = { &v6_opt, NULL };

    for (int k = 0; k < 2; k++) {
        char msg[PF_ERRMSG_SIZE] = "";
        int fds[PF_BIND_MAX];
        int n = pf_bind_sockets(NULL, 0, opts[k], fds, PF_BIND_MAX, msg);
        bool saw_v6 = false;

        ck_assert_msg(n == (k == 0 ? 1 : 2), "case %d: got %d sockets: %s", k, n, msg);
        for (int i = 0; i < n; i++) {
            int fam = sock_family(fds[i]);

            ck_assert_msg(fcntl(fds[i], F_GETFD) & FD_CLOEXEC,
                          "fd %d (family %d) not CLOEXEC", i, fam);
            ck_assert_msg(fcntl(fds[i], F_GETFL) & O_NONBLOCK,
                          "fd %d (family %d) blocking", i, fam);
            ck_assert_msg(sockopt_int(fds[i], SOL_SOCKET, SO_REUSEADDR) == 1,
                          "fd %d (family %d) without SO_REUSEADDR", i, fam);
            ck_assert_msg(sockopt_int(fds[i], SOL_SOCKET, SO_ACCEPTCONN) == 1,
                          "fd %d (family %d) not listening", i, fam);
            if (fam == AF_INET6) {
                saw_v6 = true;
                ck_assert_msg(sockopt_int(fds[i], IPPROTO_IPV6, IPV6_V6ONLY) == 1,
                              "case %d: AF_INET6 socket without IPV6_V6ONLY", k);
            }
        }
        ck_assert(saw_v6);
        close_all(fds, n);
    }
}
END_TEST

START_TEST(test_backlog_option_reaches_listen_and_connections_are_accepted)
{
    struct pf_bind_options opt = { .family = AF_INET, .backlog = 7 };
    char msg[PF_ERRMSG_SIZE] = "";
    int fd, n, c[2], a;
    unsigned port;

    n = pf_bind_sockets("127.0.0.1", 0, &opt, &fd, 1, msg);
    ck_assert_msg(n == 1, "%d: %s", n, msg);
    ck_assert_int_eq(listen_backlog(fd), 7);
    port = tu_local_port(fd);
    for (int i = 0; i < 2; i++) {
        c[i] = tu_connect_tcp("127.0.0.1", port);
        ck_assert_msg(c[i] >= 0, "connect: %s", strerror(-c[i]));
    }
    ck_assert(wait_accept_queue(fd, 2));
    for (int i = 0; i < 2; i++) {
        a = accept(fd, NULL, NULL);
        ck_assert_msg(a >= 0, "accept: %s", strerror(errno));
        close(a);
    }
    close_all(c, 2);
    close(fd);

    /* backlog 0 means PF_DEFAULT_BACKLOG */
    opt.backlog = 0;
    n = pf_bind_sockets("127.0.0.1", 0, &opt, &fd, 1, msg);
    ck_assert_msg(n == 1, "%d: %s", n, msg);
    ck_assert_int_eq(listen_backlog(fd), PF_DEFAULT_BACKLOG);
    close(fd);
}
END_TEST

START_TEST(test_reuse_port_lets_two_binds_share_one_port)
{
    struct pf_bind_options opt = { .reuse_port = true };
    char msg[PF_ERRMSG_SIZE] = "";
    int a, b, n;
    unsigned port;

    n = pf_bind_sockets("127.0.0.1", 0, &opt, &a, 1, msg);
    ck_assert_msg(n == 1, "first: %d: %s", n, msg);
    port = tu_local_port(a);
    ck_assert_int_eq(sockopt_int(a, SOL_SOCKET, SO_REUSEPORT), 1);

    n = pf_bind_sockets("127.0.0.1", port, &opt, &b, 1, msg);
    ck_assert_msg(n == 1, "second bind on port %u with reuse_port: %d: %s", port, n, msg);
    ck_assert_uint_eq(tu_local_port(b), port);
    close(a);
    close(b);
}
END_TEST

START_TEST(test_bind_port_in_use_fails_eaddrinuse_naming_address_without_leak)
{
    char msg[PF_ERRMSG_SIZE] = "";
    char want[64];
    int fds[4] = { -1, -1, -1, -1 };
    int a, n, before;
    unsigned port;

    a = listen_loopback4(&port);
    before = tu_fd_count();
    n = pf_bind_sockets("127.0.0.1", port, NULL, fds, 4, msg);
    ck_assert_msg(n == -EADDRINUSE, "second bind on 127.0.0.1:%u = %d (%s), want -EADDRINUSE",
                  port, n, msg);
    ck_assert_int_eq(tu_fd_count(), before);
    snprintf(want, sizeof(want), "127.0.0.1:%u", port);
    ck_assert_msg(strstr(msg, want) != NULL, "message \"%s\" lacks \"%s\"", msg, want);
    ck_assert_msg(strstr(msg, "Address already in use") != NULL,
                  "message \"%s\" lacks the cause", msg);
    close(a);
}
END_TEST

START_TEST(test_bind_unresolvable_host_fails_naming_host_and_reason_without_leak)
{
    const char *host = "nonexistent.invalid";
    struct addrinfo hints, *res = NULL;
    char msg[PF_ERRMSG_SIZE] = "";
    int fds[4], n, before, gai;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    gai = getaddrinfo(host, NULL, &hints, &res);
    ck_assert_msg(gai != 0, "%s resolves here; the test needs it not to", host);

    before = tu_fd_count();
    n = pf_bind_sockets(host, 0, NULL, fds, 4, msg);
    ck_assert_msg(n < 0, "pf_bind_sockets(%s) = %d, want -errno", host, n);
    ck_assert_int_eq(tu_fd_count(), before);
    ck_assert_msg(strstr(msg, host) != NULL, "message \"%s\" does not name %s", msg, host);
    ck_assert_msg(strstr(msg, gai_strerror(gai)) != NULL,
                  "message \"%s\" lacks the getaddrinfo reason \"%s\"", msg, gai_strerror(gai));
}
END_TEST

/* The blocker sits on one family's loopback address, so the wildcard bind of
 * that family fails while the other family's bind succeeds. Whatever order
 * the library binds in, one of the two cases fails on the second address. */
static void check_failing_family_closes_the_other(int blocked_family)
{
    struct pf_bind_options opt = { .family = AF_UNSPEC };
    char msg[PF_ERRMSG_SIZE] = "";
    int fds[PF_BIND_MAX];
    int blocker, n, before, other;
    unsigned port;

    blocker = plain_listener(blocked_family,
                             blocked_family == AF_INET ? "127.0.0.1" : "::1", 0);
    port = tu_local_port(blocker);
    before = tu_fd_count();
    n = pf_bind_sockets(NULL, port, &opt, fds, PF_BIND_MAX, msg);
    ck_assert_msg(n == -EADDRINUSE, "family %d blocked on port %u: got %d (%s)",
                  blocked_family, port, n, msg);
    ck_assert_msg(tu_fd_count() == before, "fds leaked: %d before, %d after",
                  before, tu_fd_count());
    ck_assert_msg(strstr(msg, "Address already in use") != NULL, "message: %s", msg);
    /* The other family's wildcard port is free again: its socket was closed. */
    other = plain_listener(blocked_family == AF_INET ? AF_INET6 : AF_INET,
                           blocked_family == AF_INET ? "::" : "0.0.0.0", port);
    close(other);
    close(blocker);
}

START_TEST(test_bind_failure_on_one_address_closes_sockets_already_bound)
{
    check_failing_family_closes_the_other(AF_INET6);
    check_failing_family_closes_the_other(AF_INET);
}
END_TEST

START_TEST(test_bind_more_addresses_than_max_fds_fails_without_leak_or_overflow)
{
    char msg[PF_ERRMSG_SIZE] = "";
    int fds[4] = { -2, -2, -2, -2 };
    int before = tu_fd_count();
    int n = pf_bind_sockets(NULL, 0, NULL, fds, 1, msg);

    ck_assert_msg(n < 0, "two addresses into max_fds 1 returned %d", n);
    ck_assert_int_eq(tu_fd_count(), before);
    for (int i = 1; i < 4; i++)
        ck_assert_msg(fds[i] == -2, "fds[%d] written past max_fds", i);
    ck_assert_msg(msg[0] != '\0', "no error message");
}
END_TEST

/* ---- pf_bind_unix_socket ---- */

struct tmpdir {
    char dir[64];
    char path[128];
};

static void tmpdir_make(struct tmpdir *t)
{
    strcpy(t->dir, "/tmp/check_netutil.XXXXXX");
    ck_assert_msg(mkdtemp(t->dir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(t->path, sizeof(t->path), "%s/sock", t->dir);
}

static void tmpdir_remove(struct tmpdir *t)
{
    unlink(t->path);
    rmdir(t->path);
    rmdir(t->dir);
}

START_TEST(test_bind_unix_creates_listening_socket_with_mode)
{
    const mode_t modes[] = { 0600, 0666 };
    struct tmpdir t;

    tmpdir_make(&t);
    /* A strict umask: the mode must come from the argument, not from umask. */
    umask(077);
    for (int i = 0; i < 2; i++) {
        char msg[PF_ERRMSG_SIZE] = "";
        struct stat st;
        int fd = pf_bind_unix_socket(t.path, modes[i], 0, msg);
        int c, a;

        ck_assert_msg(fd >= 0, "pf_bind_unix_socket(%s) = %d: %s", t.path, fd, msg);
        ck_assert_int_eq(stat(t.path, &st), 0);
        ck_assert(S_ISSOCK(st.st_mode));
        ck_assert_msg((st.st_mode & 0777) == modes[i], "mode %03o, want %03o",
                      (unsigned)(st.st_mode & 0777), (unsigned)modes[i]);
        ck_assert(is_nonblock_cloexec(fd));
        ck_assert_int_eq(sockopt_int(fd, SOL_SOCKET, SO_ACCEPTCONN), 1);

        c = tu_connect_unix(t.path);
        ck_assert_msg(c >= 0, "connect %s: %s", t.path, strerror(-c));
        a = accept(fd, NULL, NULL);
        ck_assert_msg(a >= 0, "accept: %s", strerror(errno));
        close(a);
        close(c);
        close(fd);
        unlink(t.path);
    }
    tmpdir_remove(&t);
}
END_TEST

/* A client can connect to the unix socket at path. */
static void assert_unix_connects(const char *path)
{
    int c = tu_connect_unix(path);

    ck_assert_msg(c >= 0, "connect %s: %s", path, strerror(-c));
    close(c);
}

START_TEST(test_bind_unix_replaces_stale_socket_file)
{
    char msg[PF_ERRMSG_SIZE] = "";
    struct tmpdir t;
    struct stat st;
    int fd;

    tmpdir_make(&t);
    fd = pf_bind_unix_socket(t.path, 0666, 0, msg);
    ck_assert_msg(fd >= 0, "%d: %s", fd, msg);
    close(fd);
    ck_assert_int_eq(stat(t.path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));    /* stale: nobody listens */

    fd = pf_bind_unix_socket(t.path, 0666, 0, msg);
    ck_assert_msg(fd >= 0, "rebinding over a stale socket: %d: %s", fd, msg);
    assert_unix_connects(t.path);
    close(fd);
    tmpdir_remove(&t);
}
END_TEST

START_TEST(test_bind_unix_refuses_a_socket_someone_listens_on)
{
    char msg[PF_ERRMSG_SIZE] = "";
    struct tmpdir t;
    int fd, again;

    tmpdir_make(&t);
    fd = pf_bind_unix_socket(t.path, 0666, 0, msg);
    ck_assert_msg(fd >= 0, "%d: %s", fd, msg);
    again = pf_bind_unix_socket(t.path, 0666, 0, msg);
    ck_assert_int_eq(again, -EADDRINUSE);
    ck_assert_ptr_nonnull(strstr(msg, t.path));
    /* The first server still has its socket file and its clients. */
    assert_unix_connects(t.path);
    close(fd);
    tmpdir_remove(&t);
}
END_TEST

START_TEST(test_bind_unix_refuses_regular_file_with_eexist_and_keeps_it)
{
    static const char content[] = "not a socket\n";
    char msg[PF_ERRMSG_SIZE] = "", buf[64];
    struct tmpdir t;
    struct stat st;
    int fd, before;
    ssize_t len;

    tmpdir_make(&t);
    fd = open(t.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert(tu_write_all(fd, content, strlen(content)));
    close(fd);

    before = tu_fd_count();
    fd = pf_bind_unix_socket(t.path, 0666, 0, msg);
    ck_assert_msg(fd == -EEXIST, "got %d (%s), want -EEXIST", fd, msg);
    ck_assert_int_eq(tu_fd_count(), before);
    ck_assert_msg(strstr(msg, t.path) != NULL, "message \"%s\" does not name %s", msg, t.path);

    ck_assert_int_eq(stat(t.path, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_uint_eq((unsigned)(st.st_mode & 0777), 0644);
    fd = open(t.path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    len = read(fd, buf, sizeof(buf));
    close(fd);
    ck_assert_int_eq(len, (ssize_t)strlen(content));
    ck_assert(memcmp(buf, content, strlen(content)) == 0);
    tmpdir_remove(&t);
}
END_TEST

START_TEST(test_bind_unix_refuses_directory_with_eexist)
{
    char msg[PF_ERRMSG_SIZE] = "";
    struct tmpdir t;
    struct stat st;
    int fd;

    tmpdir_make(&t);
    ck_assert_int_eq(mkdir(t.path, 0755), 0);
    fd = pf_bind_unix_socket(t.path, 0666, 0, msg);
    ck_assert_msg(fd == -EEXIST, "got %d (%s), want -EEXIST", fd, msg);
    ck_assert_int_eq(stat(t.path, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    tmpdir_remove(&t);
}
END_TEST

/* ---- pf_format_sockaddr ---- */

START_TEST(test_format_ipv4_as_addr_colon_port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(8080) };
    char buf[PF_ADDRSTR_SIZE];

    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    ck_assert_ptr_eq(pf_format_sockaddr((struct sockaddr *)&sin, sizeof(sin), buf), buf);
    ck_assert_str_eq(buf, "127.0.0.1:8080");

    sin.sin_port = htons(65535);
    inet_pton(AF_INET, "203.0.113.9", &sin.sin_addr);
    ck_assert_str_eq(pf_format_sockaddr((struct sockaddr *)&sin, sizeof(sin), buf),
                     "203.0.113.9:65535");
}
END_TEST

START_TEST(test_format_ipv6_in_brackets)
{
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(8080) };
    char buf[PF_ADDRSTR_SIZE];

    inet_pton(AF_INET6, "::1", &sin6.sin6_addr);
    ck_assert_ptr_eq(pf_format_sockaddr((struct sockaddr *)&sin6, sizeof(sin6), buf), buf);
    ck_assert_str_eq(buf, "[::1]:8080");

    sin6.sin6_port = htons(443);
    inet_pton(AF_INET6, "2001:db8::42", &sin6.sin6_addr);
    ck_assert_str_eq(pf_format_sockaddr((struct sockaddr *)&sin6, sizeof(sin6), buf),
                     "[2001:db8::42]:443");
}
END_TEST

START_TEST(test_format_unix_as_unix_colon_path)
{
    const char *path = "/run/preforkd/preforkd.sock";
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    socklen_t exact = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
    char buf[PF_ADDRSTR_SIZE];

    strcpy(sun.sun_path, path);
    ck_assert_ptr_eq(pf_format_sockaddr((struct sockaddr *)&sun, exact, buf), buf);
    ck_assert_str_eq(buf, "unix:/run/preforkd/preforkd.sock");
    ck_assert_str_eq(pf_format_sockaddr((struct sockaddr *)&sun, sizeof(sun), buf),
                     "unix:/run/preforkd/preforkd.sock");

    /* sun_path need not be NUL-terminated (unix(7)): len alone ends it. */
    memset(sun.sun_path, 'X', sizeof(sun.sun_path));
    memcpy(sun.sun_path, path, strlen(path));
    ck_assert_str_eq(pf_format_sockaddr((struct sockaddr *)&sun, exact - 1, buf),
                     "unix:/run/preforkd/preforkd.sock");
}
END_TEST

START_TEST(test_format_bound_socket_address)
{
    struct pf_bind_options opt = { .family = AF_INET6 };
    char msg[PF_ERRMSG_SIZE] = "", buf[PF_ADDRSTR_SIZE], want[64];
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd, n;

    n = pf_bind_sockets("::1", 0, &opt, &fd, 1, msg);
    ck_assert_msg(n == 1, "%d: %s", n, msg);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    snprintf(want, sizeof(want), "[::1]:%u", tu_local_port(fd));
    ck_assert_str_eq(pf_format_sockaddr((struct sockaddr *)&ss, len, buf), want);
    close(fd);
}
END_TEST

/* ---- accept handler ---- */

/* Connects n blocking clients to 127.0.0.1:port and waits until all n are in
 * lfd's accept queue. */
static void connect_clients(int lfd, unsigned port, int *clients, int n)
{
    for (int i = 0; i < n; i++) {
        clients[i] = tu_connect_tcp("127.0.0.1", port);
        ck_assert_msg(clients[i] >= 0, "client %d: %s", i, strerror(-clients[i]));
    }
    ck_assert_msg(wait_accept_queue(lfd, n), "accept queue %d, want %d",
                  accept_queue_len(lfd), n);
}

enum { BATCH = 4, BATCH_CLIENTS = 3 * BATCH };

START_TEST(test_accept_takes_at_most_batch_connections_per_wakeup)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct pf_accept_handler h;
    struct accept_log log;
    int clients[BATCH_CLIENTS], lfd, rc;
    unsigned port;

    memset(&log, 0, sizeof(log));
    lfd = listen_loopback4(&port);
    connect_clients(lfd, port, clients, BATCH_CLIENTS);

    rc = pf_add_accept_handler(loop, &h, lfd, BATCH, log_accept_cb);
    ck_assert_int_eq(rc, 0);
    h.data = &log;
    ck_assert_int_eq(h.listen_fd, lfd);

    for (unsigned wake = 1; wake <= 3; wake++) {
        run_once_bounded(loop, KERNEL_WAIT_SEC);
        ck_assert_msg(log.nfds == wake * BATCH, "after wakeup %u: %u accepted, want %u",
                      wake, log.nfds, wake * BATCH);
        ck_assert_int_eq(accept_queue_len(lfd), (int)(BATCH_CLIENTS - wake * BATCH));
    }
    ck_assert_uint_eq(log.nerrors, 0);
    ck_assert_uint_eq(log.bad_peer, 0);
    ck_assert_int_eq(log.peer_family, AF_INET);
    ck_assert_msg(log.bad_flags == 0, "%u accepted fds lack NONBLOCK or CLOEXEC", log.bad_flags);
    for (unsigned i = 0; i < log.nfds; i++)
        ck_assert(is_nonblock_cloexec(log.fds[i]));

    accept_test_end(loop, &h, &log, clients, BATCH_CLIENTS, lfd);
}
END_TEST

START_TEST(test_accept_batch_zero_drains_queue_in_one_wakeup)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct pf_accept_handler h;
    struct accept_log log;
    int clients[BATCH_CLIENTS], lfd;
    unsigned port;

    memset(&log, 0, sizeof(log));
    lfd = listen_loopback4(&port);
    connect_clients(lfd, port, clients, BATCH_CLIENTS);
    ck_assert_int_eq(pf_add_accept_handler(loop, &h, lfd, 0, log_accept_cb), 0);
    h.data = &log;

    run_once_bounded(loop, KERNEL_WAIT_SEC);
    ck_assert_uint_eq(log.nfds, BATCH_CLIENTS);
    ck_assert_uint_eq(log.bad_flags, 0);

    accept_test_end(loop, &h, &log, clients, BATCH_CLIENTS, lfd);
}
END_TEST

/* The first free fd numbers, counted from 0: the soft RLIMIT_NOFILE that
 * leaves exactly nfree numbers for new fds. */
static rlim_t nofile_limit_leaving(int nfree)
{
    int seen = 0;

    for (int fd = 0;; fd++)
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF && ++seen == nfree)
            return (rlim_t)fd + 1;
}

enum { SPARE_FDS = 2, EMFILE_CLIENTS = SPARE_FDS + 3 };

START_TEST(test_accept_at_fd_limit_reports_emfile_pauses_without_spinning_and_retries)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct pf_accept_handler h;
    struct accept_log log;
    struct rlimit old, low;
    int clients[EMFILE_CLIENTS], lfd;
    unsigned port, accepted_at_limit, errors_at_limit, bad_errors = 0;
    double cpu0, cpu_used;

    memset(&log, 0, sizeof(log));
    lfd = listen_loopback4(&port);
    /* Clients first: once the limit is down they could not be made. */
    connect_clients(lfd, port, clients, EMFILE_CLIENTS);
    ck_assert_int_eq(pf_add_accept_handler(loop, &h, lfd, 0, log_accept_cb), 0);
    h.data = &log;

    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = nofile_limit_leaving(SPARE_FDS);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);

    /* Nothing below may open an fd until the limit is back up. */
    cpu0 = tu_cpu_seconds();
    tu_run_for(loop, 1.0);
    cpu_used = tu_cpu_seconds() - cpu0;
    accepted_at_limit = log.nfds;
    errors_at_limit = log.nerrors;
    for (unsigned i = 0; i < log.nerrors && i < LOG_MAX; i++)
        if (log.errors[i] != -EMFILE)
            bad_errors++;

    /* Free the fds and lift the limit: the retry timer alone must take the rest. */
    log_close_all(&log);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    log.want = EMFILE_CLIENTS;
    tu_run_until(loop, &log.done, 1.0);

    ck_assert_msg(accepted_at_limit == SPARE_FDS, "accepted %u at the limit, want %d",
                  accepted_at_limit, SPARE_FDS);
    ck_assert_msg(errors_at_limit >= 1, "callback never got -EMFILE");
    ck_assert_msg(bad_errors == 0, "callback got an error other than -EMFILE (first %d)",
                  log.errors[0]);
    ck_assert_uint_eq(log.bad_peer, 0);
    ck_assert_msg(cpu_used < 0.3, "used %.2f s of CPU in 1 s at the fd limit: spinning",
                  cpu_used);
    ck_assert_msg(log.nfds == EMFILE_CLIENTS,
                  "after lifting the limit: %u of %d connections accepted within 1 s",
                  log.nfds, EMFILE_CLIENTS);

    accept_test_end(loop, &h, &log, clients, EMFILE_CLIENTS, lfd);
}
END_TEST

START_TEST(test_removed_handler_accepts_nothing_and_second_remove_is_harmless)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct pf_accept_handler h, h2;
    struct accept_log log, log2;
    int c1, c2, lfd;
    unsigned port;

    memset(&log, 0, sizeof(log));
    memset(&log2, 0, sizeof(log2));
    lfd = listen_loopback4(&port);
    ck_assert_int_eq(pf_add_accept_handler(loop, &h, lfd, 0, log_accept_cb), 0);
    h.data = &log;

    c1 = tu_connect_tcp("127.0.0.1", port);
    ck_assert_int_ge(c1, 0);
    log.want = 1;
    ck_assert_msg(tu_run_until(loop, &log.done, KERNEL_WAIT_SEC), "first connection not accepted");

    pf_remove_accept_handler(&h);
    c2 = tu_connect_tcp("127.0.0.1", port);
    ck_assert_int_ge(c2, 0);
    ck_assert(wait_accept_queue(lfd, 1));
    tu_run_for(loop, QUIET_RUN_SEC);
    ck_assert_msg(log.nfds == 1, "removed handler accepted %u more", log.nfds - 1);
    pf_remove_accept_handler(&h);
    tu_run_for(loop, 0.05);

    /* listen_fd stayed open and the connection waited in the queue. */
    ck_assert_int_ge(fcntl(lfd, F_GETFD), 0);
    ck_assert_int_eq(accept_queue_len(lfd), 1);
    ck_assert_int_eq(pf_add_accept_handler(loop, &h2, lfd, 0, log_accept_cb), 0);
    h2.data = &log2;
    log2.want = 1;
    ck_assert_msg(tu_run_until(loop, &log2.done, KERNEL_WAIT_SEC),
                  "queued connection not accepted by a new handler");
    ck_assert_uint_eq(log.nfds, 1);

    pf_remove_accept_handler(&h2);
    log_close_all(&log);
    log_close_all(&log2);
    close(c1);
    close(c2);
    close(lfd);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_remove_from_callback_stops_the_current_batch)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct pf_accept_handler h;
    struct accept_log log;
    int clients[3], lfd;
    unsigned port;

    memset(&log, 0, sizeof(log));
    lfd = listen_loopback4(&port);
    connect_clients(lfd, port, clients, 3);
    ck_assert_int_eq(pf_add_accept_handler(loop, &h, lfd, BATCH, log_accept_cb), 0);
    h.data = &log;
    log.remove_in_cb = true;

    tu_run_for(loop, QUIET_RUN_SEC);
    ck_assert_msg(log.nfds == 1, "accepted %u after removing in the callback, want 1", log.nfds);
    ck_assert_int_eq(accept_queue_len(lfd), 2);
    pf_remove_accept_handler(&h);

    accept_test_end(loop, NULL, &log, clients, 3, lfd);
}
END_TEST

START_TEST(test_paused_handler_leaves_connections_queued_until_resumed)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct pf_accept_handler h;
    struct accept_log log;
    int c, lfd;
    unsigned port;

    memset(&log, 0, sizeof(log));
    lfd = listen_loopback4(&port);
    ck_assert_int_eq(pf_add_accept_handler(loop, &h, lfd, 0, log_accept_cb), 0);
    h.data = &log;
    ck_assert(!h.paused);

    pf_accept_handler_pause(&h);
    pf_accept_handler_pause(&h);    /* twice is the same as once */
    ck_assert(h.paused);
    c = tu_connect_tcp("127.0.0.1", port);
    ck_assert_int_ge(c, 0);
    ck_assert(wait_accept_queue(lfd, 1));
    tu_run_for(loop, QUIET_RUN_SEC);
    ck_assert_msg(log.nfds == 0, "paused handler accepted %u", log.nfds);
    ck_assert_int_eq(accept_queue_len(lfd), 1);

    pf_accept_handler_resume(&h);
    ck_assert(!h.paused);
    log.want = 1;
    ck_assert_msg(tu_run_until(loop, &log.done, KERNEL_WAIT_SEC),
                  "queued connection not accepted after resume");
    pf_accept_handler_resume(&h);   /* resuming a running handler changes nothing */
    ck_assert(!h.paused);
    ck_assert_uint_eq(log.nfds, 1);
    ck_assert_uint_eq(log.bad_flags, 0);

    accept_test_end(loop, &h, &log, &c, 1, lfd);
}
END_TEST

static Suite *netutil_suite(void)
{
    Suite *s = suite_create("netutil");
    TCase *tc;

    tc = tu_add_tcase(s, "bind_sockets", TCASE_TIMEOUT_SEC);
    tcase_add_test(tc, test_bind_any_address_gives_ipv4_and_ipv6_on_one_kernel_port);
    tcase_add_test(tc, test_bind_hostname_binds_each_address_getaddrinfo_returns_on_one_port);
    tcase_add_test(tc, test_bind_family_option_restricts_sockets_to_that_family);
    tcase_add_test(tc, test_bound_sockets_are_v6only_cloexec_nonblocking_reuseaddr_and_listening);
    tcase_add_test(tc, test_backlog_option_reaches_listen_and_connections_are_accepted);
    tcase_add_test(tc, test_reuse_port_lets_two_binds_share_one_port);
    tcase_add_test(tc, test_bind_port_in_use_fails_eaddrinuse_naming_address_without_leak);
    tcase_add_test(tc, test_bind_unresolvable_host_fails_naming_host_and_reason_without_leak);
    tcase_add_test(tc, test_bind_failure_on_one_address_closes_sockets_already_bound);
    tcase_add_test(tc, test_bind_more_addresses_than_max_fds_fails_without_leak_or_overflow);

    tc = tu_add_tcase(s, "bind_unix_socket", TCASE_TIMEOUT_SEC);
    tcase_add_test(tc, test_bind_unix_creates_listening_socket_with_mode);
    tcase_add_test(tc, test_bind_unix_replaces_stale_socket_file);
    tcase_add_test(tc, test_bind_unix_refuses_a_socket_someone_listens_on);
    tcase_add_test(tc, test_bind_unix_refuses_regular_file_with_eexist_and_keeps_it);
    tcase_add_test(tc, test_bind_unix_refuses_directory_with_eexist);

    tc = tu_add_tcase(s, "format_sockaddr", TCASE_TIMEOUT_SEC);
    tcase_add_test(tc, test_format_ipv4_as_addr_colon_port);
    tcase_add_test(tc, test_format_ipv6_in_brackets);
    tcase_add_test(tc, test_format_unix_as_unix_colon_path);
    tcase_add_test(tc, test_format_bound_socket_address);

    tc = tu_add_tcase(s, "accept_handler", TCASE_TIMEOUT_SEC);
    tcase_add_test(tc, test_accept_takes_at_most_batch_connections_per_wakeup);
    tcase_add_test(tc, test_accept_batch_zero_drains_queue_in_one_wakeup);
    tcase_add_test(tc, test_accept_at_fd_limit_reports_emfile_pauses_without_spinning_and_retries);
    tcase_add_test(tc, test_removed_handler_accepts_nothing_and_second_remove_is_harmless);
    tcase_add_test(tc, test_remove_from_callback_stops_the_current_batch);
    tcase_add_test(tc, test_paused_handler_leaves_connections_queued_until_resumed);
    return s;
}

int main(void)
{
    return tu_run_suite(netutil_suite()) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
