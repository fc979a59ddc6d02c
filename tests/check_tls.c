/* Check suite for TLS in libprefork: server contexts from PEM files (tls.c),
 * TLS streams (pf_iostream_new_tls) and TLS servers (pf_tcp_server_set_tls).
 * Stream tests put a bridge in front of the stream: a forked process that is
 * an ordinary blocking OpenSSL client on one end of a socketpair and relays
 * plaintext to and from the test's `peer` fd, so that a test drives peer with
 * plain reads and writes exactly as check_iostream does. Server tests play
 * broken and hostile clients on loopback and check the loop keeps serving.
 * The certificate, keys and bad PEM files are made once by main(), with the
 * openssl CLI. */
#define _GNU_SOURCE
#include "prefork.h"
#include "tls.h"
#include "streamchecks.h"
#include "streamutil.h"
#include "testutil.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Bound on waiting for something that should happen. */
#define WAIT_SEC 5.0
/* Time the loop gets to do something that should NOT happen. */
#define SETTLE_SEC 0.1
/* Far more than a socketpair buffers, and many TLS records. */
#define LARGE_WRITE_BYTES (4u * 1024 * 1024)
/* The bridge relays at most one TLS record's worth per read. */
#define BRIDGE_CHUNK (16 * 1024)
/* How long the bridge waits for the stream's close_notify after its own. */
#define BRIDGE_LINGER_SEC 3.0
/* handshake_timeout_sec of the servers that meet bad clients. */
#define HANDSHAKE_TIMEOUT_SEC 0.5
/* The loop's heartbeat while a server is tested, and how much longer than
 * the machine itself (see struct ref_beat) it may pause and still count as
 * "never blocked". An overloaded 2-core CI box delays one thread's wakeups
 * by up to ~0.7 s more than another's; a handshake that blocked the loop
 * stalls it for as long as its client dawdles, which the 3 s handshake
 * timeout of test_server_stalled_handshakes_do_not_delay_other_clients
 * makes long enough to see. */
#define TICK_SEC 0.01
#define MAX_EXTRA_STALL_SEC 1.0
/* Streams a server test keeps track of. */
#define MAX_CONNS 16
#define ALPN_HTTP11 "http/1.1"

#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

/* The suite's PEM files, made once by main() (children inherit them). */
static struct {
    char dir[64];
    char cert[PATH_MAX];            /* CN=localhost, EC P-256, 1 day */
    char key[PATH_MAX];
    char other_key[PATH_MAX];       /* a key of no certificate here */
    char garbage[PATH_MAX];         /* PEM armour around junk */
    char missing_cert[PATH_MAX];    /* never created */
    char missing_key[PATH_MAX];
} fx;

static size_t first_difference(const unsigned char *a, const unsigned char *b, size_t len)
{
    size_t i = 0;

    while (i < len && a[i] == b[i])
        i++;
    return i;
}

/* ---- the client side: plain OpenSSL, blocking -------------------------- */

/* A client context that trusts only the suite's certificate, and offers
 * alpn (NULL: no ALPN) as its only protocol besides "h2". */
static SSL_CTX *client_ctx_new(const char *alpn)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    unsigned char wire[64];
    size_t len;

    if (ctx == NULL)
        return NULL;
    if (SSL_CTX_load_verify_locations(ctx, fx.cert, NULL) != 1)
        goto fail;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (alpn != NULL) {
        len = strlen(alpn);
        /* "h2" first: the server must pick from the list, not take the head. */
        memcpy(wire, "\x02h2", 3);
        wire[3] = (unsigned char)len;
        memcpy(wire + 4, alpn, len);
        if (SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)(len + 4)) != 0)
            goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* A blocking handshake on fd that verifies the server is "localhost";
 * NULL (with OpenSSL's errors on stderr) if it fails. */
static SSL *client_connect(SSL_CTX *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);

    if (ssl == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1 || SSL_set_tlsext_host_name(ssl, "localhost") != 1 ||
        SSL_set1_host(ssl, "localhost") != 1 || SSL_connect(ssl) != 1) {
        ERR_print_errors_fp(stderr);
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

/* For a forked helper: dies with the test, ignores SIGPIPE (a peer that went
 * away is an ordinary end here) and keeps only fds a and b of the test's. */
static void helper_setup(int a, int b)
{
    int lo = a < b ? a : b, hi = a < b ? b : a;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN);
    /* A copy of another bridge's peer fd here would hide that peer's close. */
    if (lo > 3)
        close_range(3, (unsigned)lo - 1, 0);
    if (hi > lo + 1)
        close_range((unsigned)lo + 1, (unsigned)hi - 1, 0);
    close_range((unsigned)hi + 1, ~0u, 0);
}

/* Waits up to ms for fd to be ready for what the last SSL call wanted. */
static void ssl_wait(SSL *ssl, int rc, int fd, int ms)
{
    int e = SSL_get_error(ssl, rc);
    struct pollfd p = { .fd = fd, .events = e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN };

    poll(&p, 1, ms);
}

/* SSL_write all of buf on a non-blocking fd; false if the connection ended. */
static bool ssl_write_all(SSL *ssl, int fd, const char *buf, size_t len)
{
    double deadline = tu_now() + WAIT_SEC;

    while (len > 0 && tu_now() < deadline) {
        int n = SSL_write(ssl, buf, (int)len);
        int e;

        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        e = SSL_get_error(ssl, n);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            return false;
        ssl_wait(ssl, n, fd, 50);
    }
    return len == 0;
}

/* The exit statuses of the bridge and of the echo client. */
enum helper_exit {
    HELPER_OK = 0,
    HELPER_SETUP = 2,           /* no client context or socket */
    HELPER_HANDSHAKE = 3,       /* the handshake or the verification failed */
    HELPER_ECHO = 4,            /* the echo did not come back */
    HELPER_ALPN = 5,            /* the server did not choose the offered ALPN */
    HELPER_NO_CLOSE_NOTIFY = 6, /* the stream ended the connection without close_notify */
};

/* How a connection the bridge reads from ended: with close_notify, or not. */
static int helper_end(SSL *ssl, int rc)
{
    return SSL_get_error(ssl, rc) == SSL_ERROR_ZERO_RETURN ? HELPER_OK : HELPER_NO_CLOSE_NOTIFY;
}

/* What the bridge does when the test closes peer. */
enum bridge_end {
    BRIDGE_LINGER,              /* close_notify, then wait for the stream's */
    BRIDGE_NOTIFY_AND_EXIT,     /* close_notify, then exit at once */
    BRIDGE_JUST_EXIT,           /* exit without close_notify (many HTTP clients) */
};

/* The peer's side ended: send close_notify, then relay what the stream still
 * sends (a half-closed peer may read on) until its close_notify or EOF, so
 * that the stream never answers into a closed socket. */
static int bridge_linger(SSL *ssl, int tls_fd, int plain_fd)
{
    double deadline = tu_now() + BRIDGE_LINGER_SEC;
    char buf[BRIDGE_CHUNK];
    int rc;

    while ((rc = SSL_shutdown(ssl)) < 0 && tu_now() < deadline) {
        int e = SSL_get_error(ssl, rc);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            return HELPER_NO_CLOSE_NOTIFY;
        ssl_wait(ssl, rc, tls_fd, 50);
    }
    while (tu_now() < deadline) {
        int n = SSL_read(ssl, buf, sizeof(buf));
        int e;

        if (n > 0) {
            tu_write_all(plain_fd, buf, (size_t)n);     /* the peer may be gone */
            deadline = tu_now() + BRIDGE_LINGER_SEC;
            continue;
        }
        e = SSL_get_error(ssl, n);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            return helper_end(ssl, n);
        ssl_wait(ssl, n, tls_fd, 50);
    }
    return HELPER_NO_CLOSE_NOTIFY;
}

/* The peer closed; returns a helper_exit. */
static int bridge_peer_closed(SSL *ssl, int tls_fd, int plain_fd, enum bridge_end end)
{
    switch (end) {
    case BRIDGE_LINGER:
        break;
    case BRIDGE_NOTIFY_AND_EXIT:
        SSL_shutdown(ssl);
        return HELPER_OK;
    case BRIDGE_JUST_EXIT:
        return HELPER_OK;
    }
    return bridge_linger(ssl, tls_fd, plain_fd);
}

/* Plaintext both ways until either side ends; returns a helper_exit. */
static int bridge_relay(SSL *ssl, int tls_fd, int plain_fd, enum bridge_end end)
{
    char buf[BRIDGE_CHUNK];

    fcntl(tls_fd, F_SETFL, fcntl(tls_fd, F_GETFL) | O_NONBLOCK);
    for (;;) {
        struct pollfd p[2] = { { .fd = tls_fd, .events = POLLIN },
                               { .fd = plain_fd, .events = POLLIN } };
        ssize_t n;

        if (SSL_pending(ssl) == 0 && poll(p, 2, -1) < 0 && errno != EINTR)
            return HELPER_SETUP;
        if (SSL_pending(ssl) > 0 || p[0].revents != 0) {
            int got = SSL_read(ssl, buf, sizeof(buf));
            int e;

            if (got > 0) {
                if (!tu_write_all(plain_fd, buf, (size_t)got))
                    return bridge_linger(ssl, tls_fd, plain_fd);
                continue;
            }
            e = SSL_get_error(ssl, got);
            /* close_notify, EOF or an error: the stream is done with us. */
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                return helper_end(ssl, got);
        }
        if (p[1].revents != 0) {
            n = read(plain_fd, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return bridge_peer_closed(ssl, tls_fd, plain_fd, end);
            if (!ssl_write_all(ssl, tls_fd, buf, (size_t)n))
                return bridge_linger(ssl, tls_fd, plain_fd);
        }
    }
}

static void bridge_main(int tls_fd, int plain_fd, const char *alpn, enum bridge_end end)
    __attribute__((noreturn));
static void bridge_main(int tls_fd, int plain_fd, const char *alpn, enum bridge_end end)
{
    SSL_CTX *ctx;
    SSL *ssl;
    int rc;

    helper_setup(tls_fd, plain_fd);
    ctx = client_ctx_new(alpn);
    if (ctx == NULL)
        _exit(HELPER_SETUP);
    ssl = client_connect(ctx, tls_fd);
    if (ssl == NULL) {
        SSL_CTX_free(ctx);
        _exit(HELPER_HANDSHAKE);
    }
    rc = bridge_relay(ssl, tls_fd, plain_fd, end);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    _exit(rc);
}

/* A bridge process: *stream_fd is for pf_iostream_new_tls, *peer is the
 * test's plaintext end. */
static pid_t bridge_start(int *stream_fd, int *peer, const char *alpn, enum bridge_end end)
{
    int tls[2], plain[2];
    pid_t pid;

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, tls), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, plain), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        bridge_main(tls[1], plain[1], alpn, end);
    close(tls[1]);
    close(plain[1]);
    *stream_fd = tls[0];
    *peer = plain[0];
    return pid;
}

/* Exit code of a helper (128 + signal if killed), or -1 if it did not end
 * within timeout_sec (it is killed then). */
static int helper_wait(pid_t pid, double timeout_sec)
{
    int status = 0;

    if (!tu_wait_pid(pid, &status, timeout_sec)) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- the server side of the stream tests -------------------------------- */

/* Picks "http/1.1" from the client's list, or no ALPN at all. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08" ALPN_HTTP11;
    unsigned char *sel;

    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *server_ctx_new(bool alpn)
{
    char errmsg[PF_ERRMSG_SIZE] = "";
    SSL_CTX *ctx = pf_tls_server_ctx_new(fx.cert, fx.key, errmsg);

    ck_assert_msg(ctx != NULL, "pf_tls_server_ctx_new: %s", errmsg);
    if (alpn)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
    return ctx;
}

/* ---- stream tests: per-test state and helpers ---------------------------- */

/* What a TLS stream test has beyond the harness's su_stream (its data). */
struct tls_side {
    SSL_CTX *server_ctx;
    pid_t bridge;
    bool no_bridge_status;      /* killed, or its handshake failed on purpose */
    bool close_notify_optional; /* the test is not about close_notify */

    int nhs;                    /* handshake callbacks ('H' in the log) */
    char hs_protocol[32];
    char hs_cipher[64];
    char hs_alpn[32];
    bool hs_alpn_null;

    const unsigned char *response;  /* what answer_at_eof_cb writes */
    size_t response_len;
};

static struct tls_side *tls_of(struct su_stream *c)
{
    return c->data;
}

static void handshake_cb(struct pf_iostream *s, const struct pf_tls_info *info)
{
    struct su_stream *c = su_of(s);
    struct tls_side *t = tls_of(c);

    su_note_cb(c, 'H');
    t->nhs++;
    snprintf(t->hs_protocol, sizeof(t->hs_protocol), "%s",
             info->protocol ? info->protocol : "(null)");
    snprintf(t->hs_cipher, sizeof(t->hs_cipher), "%s", info->cipher ? info->cipher : "");
    t->hs_alpn_null = info->alpn == NULL;
    snprintf(t->hs_alpn, sizeof(t->hs_alpn), "%.*s",
             info->alpn ? (int)info->alpn_len : 0, info->alpn ? info->alpn : "");
}

/* su_wait_for_handshake with handshake_cb, which records into the tls_side. */
static int t_wait_for_handshake(struct su_stream *c)
{
    return su_wait_for_handshake(c, handshake_cb);
}

/* A server-side TLS stream behind a bridge whose client offers alpn. */
static void ctx_open(struct su_stream *c, struct tls_side *t, const struct pf_iostream_options *opt,
                     const char *alpn, bool server_alpn, enum bridge_end end)
{
    struct ev_loop *loop = ev_loop_new(0);
    int fd, peer;

    ck_assert_ptr_nonnull(loop);
    memset(t, 0, sizeof(*t));
    t->server_ctx = server_ctx_new(server_alpn);
    t->bridge = bridge_start(&fd, &peer, alpn, end);
    su_attach(c, loop, fd, peer, pf_iostream_new_tls(loop, fd, opt, t->server_ctx, true));
    c->data = t;
}

static void ctx_init_alpn(struct su_stream *c, struct tls_side *t, const char *alpn,
                          bool server_alpn)
{
    ctx_open(c, t, NULL, alpn, server_alpn, BRIDGE_LINGER);
}

static void ctx_init(struct su_stream *c, struct tls_side *t, const struct pf_iostream_options *opt)
{
    ctx_open(c, t, opt, NULL, false, BRIDGE_LINGER);
}

/* Closes the stream if the test left it open, ends the bridge and checks it
 * had nothing to complain about: its handshake verified "localhost", and the
 * stream ended with close_notify. */
static void ctx_done(struct su_stream *c)
{
    struct tls_side *t = tls_of(c);
    int rc;

    su_detach(c, WAIT_SEC);
    rc = t->bridge > 0 ? helper_wait(t->bridge, WAIT_SEC) : HELPER_OK;
    if (t->close_notify_optional && rc == HELPER_NO_CLOSE_NOTIFY)
        rc = HELPER_OK;
    if (!t->no_bridge_status)
        ck_assert_msg(rc == HELPER_OK, "bridge exit status %d%s", rc,
                      rc == HELPER_NO_CLOSE_NOTIFY ? " (the stream sent no close_notify)" : "");
    SSL_CTX_free(t->server_ctx);
    ev_loop_destroy(c->loop);
}

/* Nothing beyond what the test read arrives while the loop runs a while. */
static void assert_peer_gets_nothing_more(struct su_stream *c)
{
    char ch;
    ssize_t n;

    su_run_for(c, SETTLE_SEC);
    n = recv(c->peer, &ch, 1, MSG_DONTWAIT);
    ck_assert_msg(n < 0 && errno == EAGAIN, "peer got more: recv %zd", n);
}

/* True once the peer's end reads EOF (within timeout_sec, loop running). */
static bool peer_sees_eof(struct su_stream *c, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;
    char ch;

    while (tu_now() < deadline) {
        ssize_t n = recv(c->peer, &ch, 1, MSG_DONTWAIT);

        if (n == 0)
            return true;
        if (n > 0)
            return false;
        su_run_for(c, 0.01);
    }
    return false;
}

/* The bridge is a client like any other: once it is gone (killed), all that
 * is left in the stream's socket is what it wrote before. */
static void bridge_kill(struct su_stream *c)
{
    struct tls_side *t = tls_of(c);

    kill(t->bridge, SIGKILL);
    ck_assert_int_eq(helper_wait(t->bridge, WAIT_SEC), 128 + SIGKILL);
    t->no_bridge_status = true;
}

/* A ping from the peer, a pong from the stream. Afterwards the handshake is
 * done and the bridge has read the session tickets that follow it: a client
 * that exits with them unread would reset the connection, not close it. */
static void ping_pong(struct su_stream *c)
{
    int reads = c->nreads;
    char buf[4];

    ck_assert_int_eq(pf_iostream_read_bytes(c->s, 4, false, su_read_cb), 0);
    su_peer_write(c, "ping");
    ck_assert(su_run_until_count(c, &c->nreads, reads + 1, WAIT_SEC));
    ck_assert_int_eq(pf_iostream_write(c->s, "pong", 4, NULL), 0);
    ck_assert_uint_eq(su_read_peer(c, buf, 4, WAIT_SEC), 4);
    ck_assert(memcmp(buf, "pong", 4) == 0);
}

/* ---- server contexts --------------------------------------------------- */

START_TEST(test_server_ctx_new_loads_matching_certificate_and_key)
{
    char errmsg[PF_ERRMSG_SIZE] = "";
    char cn[64] = "";
    SSL_CTX *ctx = pf_tls_server_ctx_new(fx.cert, fx.key, errmsg);
    X509 *x;

    ck_assert_msg(ctx != NULL, "pf_tls_server_ctx_new(%s, %s): %s", fx.cert, fx.key, errmsg);
    x = SSL_CTX_get0_certificate(ctx);
    ck_assert_ptr_nonnull(x);
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    ck_assert_str_eq(cn, "localhost");
    ck_assert_int_eq(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    SSL_CTX_free(ctx);
}
END_TEST

/* Asserts that loading (cert, key) fails with a message holding every
 * string of want (NULL-terminated) and, if reasons is given, one of them;
 * the message goes to errmsg (PF_ERRMSG_SIZE). */
static void assert_ctx_fails(const char *cert, const char *key, const char *const *want,
                             const char *const *reasons, char *errmsg)
{
    bool reason_found = reasons == NULL;
    SSL_CTX *ctx;

    memset(errmsg, 0, PF_ERRMSG_SIZE);
    ctx = pf_tls_server_ctx_new(cert, key, errmsg);
    ck_assert_msg(ctx == NULL, "pf_tls_server_ctx_new(%s, %s) succeeded", cert, key);
    for (int i = 0; want[i] != NULL; i++)
        ck_assert_msg(strstr(errmsg, want[i]) != NULL, "\"%s\" lacks \"%s\"", errmsg, want[i]);
    for (int i = 0; reasons != NULL && reasons[i] != NULL; i++)
        reason_found = reason_found || strstr(errmsg, reasons[i]) != NULL;
    ck_assert_msg(reason_found, "\"%s\" gives no reason", errmsg);
    /* Nothing left for the caller's next SSL_get_error to trip on. */
    ck_assert_msg(ERR_peek_error() == 0, "OpenSSL error queue left non-empty: %s",
                  ERR_reason_error_string(ERR_peek_error()));
}

/* OpenSSL's words for "the file is not there". */
static const char *const missing_reasons[] = { "system lib", "No such file", "no such file",
                                               NULL };

START_TEST(test_server_ctx_new_missing_certificate_names_path_and_reason)
{
    const char *want[] = { "c-missing.pem", NULL };
    char errmsg[PF_ERRMSG_SIZE];

    assert_ctx_fails(fx.missing_cert, fx.key, want, missing_reasons, errmsg);
}
END_TEST

START_TEST(test_server_ctx_new_missing_key_names_path_and_reason)
{
    const char *want[] = { "k-missing.pem", NULL };
    char errmsg[PF_ERRMSG_SIZE];

    assert_ctx_fails(fx.cert, fx.missing_key, want, missing_reasons, errmsg);
}
END_TEST

/* _i == 0: a garbage certificate; 1: the same file as the key. The name,
 * then OpenSSL's reason after it. */
START_TEST(test_server_ctx_new_garbage_pem_names_file)
{
    const char *want[] = { "garbage.pem: ", NULL };
    char errmsg[PF_ERRMSG_SIZE];
    const char *after;

    assert_ctx_fails(_i == 0 ? fx.garbage : fx.cert, _i == 0 ? fx.key : fx.garbage, want,
                     NULL, errmsg);
    after = strstr(errmsg, "garbage.pem: ") + strlen("garbage.pem: ");
    ck_assert_msg(strlen(after) > 0, "\"%s\": no reason after the file name", errmsg);
}
END_TEST

START_TEST(test_server_ctx_new_key_of_another_certificate_does_not_match)
{
    const char *want[] = { "does not match", "k-other.pem", NULL };
    char errmsg[PF_ERRMSG_SIZE];

    assert_ctx_fails(fx.cert, fx.other_key, want, NULL, errmsg);
}
END_TEST

static void ignore_stream_cb(struct pf_tcp_server *srv, struct pf_iostream *s,
                             const struct sockaddr *peer, socklen_t len)
{
    (void)srv;
    (void)peer;
    (void)len;
    pf_iostream_close(s);
}

START_TEST(test_set_tls_with_missing_certificate_returns_einval_and_names_it)
{
    struct ev_loop *loop = ev_loop_new(0);
    struct pf_tcp_server *srv = pf_tcp_server_new(loop, ignore_stream_cb, NULL);
    struct pf_tls_options tls = { .certificate = fx.missing_cert, .key = fx.key };
    char errmsg[PF_ERRMSG_SIZE] = "";

    ck_assert_ptr_nonnull(srv);
    ck_assert_int_eq(pf_tcp_server_set_tls(srv, &tls, errmsg), -EINVAL);
    ck_assert_msg(strstr(errmsg, "c-missing.pem") != NULL, "errmsg \"%s\"", errmsg);
    pf_tcp_server_free(srv);
    ev_loop_destroy(loop);
}
END_TEST

/* ---- the plain-stream behaviours, over TLS ------------------------------ */

START_TEST(test_tls_read_until_finds_delimiter_split_across_writes_and_keeps_rest)
{
    struct tls_side t;
    struct su_stream c;

    ctx_init(&c, &t, NULL);
    sc_read_until_across_writes_keeps_rest(&c, WAIT_SEC);
    ctx_done(&c);
}
END_TEST

START_TEST(test_tls_read_bytes_exact_across_writes_then_partial)
{
    struct tls_side t;
    struct su_stream c;

    ctx_init(&c, &t, NULL);
    ck_assert_int_eq(su_read_bytes(&c, 10, false, su_read_cb), 0);
    su_peer_write(&c, "01234");
    su_run_for(&c, SETTLE_SEC);
    ck_assert_msg(c.nreads == 0, "read_bytes(10) completed with 5 bytes");
    su_peer_write(&c, "56789abc");
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    SU_ASSERT_READ(&c, 0, "0123456789");

    /* Partial: whatever is there, 1..n bytes. */
    ck_assert_int_eq(su_read_bytes(&c, 100, true, su_read_cb), 0);
    ck_assert(su_run_until_count(&c, &c.nreads, 2, WAIT_SEC));
    SU_ASSERT_READ(&c, 1, "abc");
    ck_assert_int_eq(su_read_bytes(&c, 100, true, su_read_cb), 0);
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nreads, 2);
    su_peer_write(&c, "xy");
    ck_assert(su_run_until_count(&c, &c.nreads, 3, WAIT_SEC));
    SU_ASSERT_READ(&c, 2, "xy");
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

START_TEST(test_tls_read_until_close_gets_all_bytes_then_close_reason_0)
{
    struct tls_side t;
    struct su_stream c;

    ctx_init(&c, &t, NULL);
    ck_assert_int_eq(su_read_until_close(&c, su_read_cb), 0);
    su_peer_write(&c, "first part, ");
    su_run_for(&c, SETTLE_SEC);
    su_peer_write(&c, "second part");
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nreads, 0);
    /* The bridge turns this into close_notify. */
    su_peer_close(&c);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nreads, 1);
    SU_ASSERT_READ(&c, 0, "first part, second part");
    ck_assert_str_eq(c.log, "RC");
    su_assert_closed_once(&c, 0);
    ctx_done(&c);
}
END_TEST

/* Writes the response once the request has been read to EOF. */
static void answer_at_eof_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    struct su_stream *c = su_of(s);
    struct tls_side *t = tls_of(c);

    su_record_read(c, buf, len, status);
    ck_assert_int_eq(su_write(c, t->response, t->response_len, su_write_cb), 0);
}

/* A client that sends its request, then close_notify (a half-close), still
 * gets the answer written after the stream saw EOF, then EOF. */
START_TEST(test_tls_half_closed_peer_still_gets_answer_written_after_eof)
{
    const size_t len = 256 * 1024;
    unsigned char *want = malloc(len), *got = malloc(len + 1);
    struct tls_side t;
    struct su_stream c;

    ck_assert(want != NULL && got != NULL);
    su_fill_pattern(want, 0, len);
    ctx_init(&c, &t, NULL);
    /* Data and EOF are the point here; close_notify has its own test. */
    t.close_notify_optional = true;
    t.response = want;
    t.response_len = len;
    ck_assert_int_eq(su_read_until_close(&c, answer_at_eof_cb), 0);
    su_peer_write(&c, "request");
    ck_assert_int_eq(shutdown(c.peer, SHUT_WR), 0);
    ck_assert_uint_eq(su_read_peer(&c, got, len + 1, WAIT_SEC), len);
    ck_assert_msg(memcmp(got, want, len) == 0, "answer differs at byte %zu",
                  first_difference(got, want, len));
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    SU_ASSERT_READ(&c, 0, "request");
    ck_assert_str_eq(c.log, "RWC");
    su_assert_closed_once(&c, 0);
    ctx_done(&c);
    free(want);
    free(got);
}
END_TEST

/* The kernel refuses a send once a unix socket's queued bytes (SIOCOUTQ)
 * reach SO_SNDBUF. */
static bool socket_full(int fd)
{
    int outq = 0, sndbuf = 0;
    socklen_t len = sizeof(sndbuf);

    ck_assert_int_eq(ioctl(fd, SIOCOUTQ, &outq), 0);
    ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len), 0);
    return outq >= sndbuf;
}

/* A Connection: close response: every byte handed to the kernel (no write
 * pending), then pf_iostream_close. With the bridge paused the socket is
 * full at that moment, as it is whenever a client reads slower than the
 * server writes. iostream.h: "Closing sends close_notify" -- the client must
 * get it once it reads on, or it cannot tell the response from a truncated
 * one. */
START_TEST(test_tls_close_after_writes_fill_socket_still_sends_close_notify)
{
    enum { CHUNK = 1000 };
    unsigned char chunk[CHUNK], *got;
    size_t sent = 0, n;
    struct tls_side t;
    struct su_stream c;
    int rc;

    ctx_init(&c, &t, NULL);
    ping_pong(&c);              /* nothing else left in flight */
    ck_assert_int_eq(kill(t.bridge, SIGSTOP), 0);
    while (!socket_full(c.fd)) {
        su_fill_pattern(chunk, sent, CHUNK);
        ck_assert_int_eq(su_write(&c, chunk, CHUNK, su_write_cb), 0);
        ck_assert_msg(!pf_iostream_writing(c.s), "a write stayed queued after %zu bytes", sent);
        sent += CHUNK;
        ck_assert_uint_lt(sent, 16u << 20);
    }
    ck_assert(su_run_until_count(&c, &c.nwrites, (int)(sent / CHUNK), WAIT_SEC));
    su_close(&c);
    /* The client reads on; the stream may wait for that to send close_notify. */
    ck_assert_int_eq(kill(t.bridge, SIGCONT), 0);
    got = malloc(sent + 1);
    ck_assert_ptr_nonnull(got);
    n = su_read_peer(&c, got, sent + 1, WAIT_SEC);
    ck_assert_msg(n == sent, "peer got %zu of %zu bytes", n, sent);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == su_pattern_byte(i), "peer got a wrong byte at %zu", i);
    free(got);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    su_assert_closed_once(&c, 0);
    close(c.peer);
    c.peer = -1;
    rc = helper_wait(t.bridge, WAIT_SEC);
    t.bridge = -1;              /* reaped */
    ck_assert_msg(rc == HELPER_OK, "bridge exit status %d%s", rc,
                  rc == HELPER_NO_CLOSE_NOTIFY ? " (the stream sent no close_notify)" : "");
    ctx_done(&c);
}
END_TEST

START_TEST(test_tls_large_write_reaches_peer_in_order_and_calls_back_once_from_loop)
{
    unsigned char *big = malloc(LARGE_WRITE_BYTES), *got = malloc(LARGE_WRITE_BYTES + 1);
    struct tls_side t;
    struct su_stream c;
    size_t n;

    ck_assert(big != NULL && got != NULL);
    su_fill_pattern(big, 0, LARGE_WRITE_BYTES);
    ctx_init(&c, &t, NULL);
    ck_assert_int_eq(su_write(&c, big, LARGE_WRITE_BYTES, su_write_cb), 0);
    /* The stream copied what it kept: our buffer is ours again. */
    memset(big, 0, LARGE_WRITE_BYTES);
    ck_assert_int_eq(c.nwrites, 0);
    n = su_read_peer(&c, got, LARGE_WRITE_BYTES, 10.0);
    ck_assert_msg(n == LARGE_WRITE_BYTES, "peer got %zu of %u bytes", n, LARGE_WRITE_BYTES);
    assert_peer_gets_nothing_more(&c);
    su_fill_pattern(big, 0, LARGE_WRITE_BYTES);
    ck_assert_msg(memcmp(got, big, LARGE_WRITE_BYTES) == 0, "peer got a wrong byte at %zu",
                  first_difference(got, big, LARGE_WRITE_BYTES));
    ck_assert(su_run_until_count(&c, &c.nwrites, 1, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(c.nwrites, 1);
    ck_assert(!pf_iostream_writing(c.s));
    ck_assert_int_eq(c.nclose, 0);
    su_assert_no_reentry(&c);
    ctx_done(&c);
    free(big);
    free(got);
}
END_TEST

START_TEST(test_tls_writev_sends_buffers_in_order_even_when_queued)
{
    static unsigned char big[2u << 20];
    static unsigned char got[(2u << 20) + 10];
    struct iovec iov[3] = {
        { .iov_base = "head:", .iov_len = 5 },
        { .iov_base = big, .iov_len = sizeof(big) },
        { .iov_base = ":tail", .iov_len = 5 },
    };
    struct tls_side t;
    struct su_stream c;

    su_fill_pattern(big, 0, sizeof(big));
    ctx_init(&c, &t, NULL);
    /* After the handshake, so that the first buffers go out at once. */
    ck_assert_int_eq(t_wait_for_handshake(&c), 0);
    ck_assert(su_run_until_count(&c, &t.nhs, 1, WAIT_SEC));
    c.in_call = true;
    ck_assert_int_eq(pf_iostream_writev(c.s, iov, 3, su_write_cb), 0);
    c.in_call = false;
    ck_assert_uint_eq(su_read_peer(&c, got, sizeof(got), 10.0), sizeof(got));
    assert_peer_gets_nothing_more(&c);
    ck_assert(memcmp(got, "head:", 5) == 0);
    ck_assert_msg(memcmp(got + 5, big, sizeof(big)) == 0, "body differs at byte %zu",
                  first_difference(got + 5, big, sizeof(big)));
    ck_assert(memcmp(got + 5 + sizeof(big), ":tail", 5) == 0);
    ck_assert(su_run_until_count(&c, &c.nwrites, 1, WAIT_SEC));
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

/* Before the handshake (queued until it is done) and after it (sent at
 * once): the callback always comes from the loop. */
START_TEST(test_tls_write_cb_never_fires_inside_write)
{
    char buf[16];
    struct tls_side t;
    struct su_stream c;

    ctx_init(&c, &t, NULL);
    ck_assert_int_eq(su_write(&c, "early\n", 6, su_write_cb), 0);
    ck_assert_int_eq(c.nwrites, 0);
    ck_assert_uint_eq(su_read_peer(&c, buf, 6, WAIT_SEC), 6);
    ck_assert(memcmp(buf, "early\n", 6) == 0);
    ck_assert(su_run_until_count(&c, &c.nwrites, 1, WAIT_SEC));

    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(su_write(&c, "late\n", 5, su_write_cb), 0);
        ck_assert_msg(c.nwrites == 1 + i, "write callback ran inside pf_iostream_write");
        ck_assert(su_run_until_count(&c, &c.nwrites, 2 + i, WAIT_SEC));
    }
    ck_assert_uint_eq(su_read_peer(&c, buf, 15, WAIT_SEC), 15);
    ck_assert(memcmp(buf, "late\nlate\nlate\n", 15) == 0);
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

START_TEST(test_tls_read_until_over_max_buffer_closes_stream_with_enobufs)
{
    struct pf_iostream_options opt = { .max_buffer_size = 1024 };
    struct tls_side t;
    struct su_stream c;

    ctx_init(&c, &t, &opt);
    sc_read_until_over_max_buffer_closes_with_enobufs(&c, WAIT_SEC);
    /* The bridge saw the stream go: so does the peer. */
    ck_assert(peer_sees_eof(&c, WAIT_SEC));
    ctx_done(&c);
}
END_TEST

START_TEST(test_tls_close_from_read_cb_closes_once_and_drops_buffered_data)
{
    struct tls_side t;
    struct su_stream c;

    ctx_init(&c, &t, NULL);
    sc_close_from_read_cb_drops_buffered_data(&c, WAIT_SEC);
    ck_assert(peer_sees_eof(&c, WAIT_SEC));
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

/* sendfile cannot encrypt: the TLS stream reads the file and writes it
 * through TLS. The peer gets the head, then exactly the range. */
START_TEST(test_tls_sendfile_sends_head_then_file_range_and_borrows_file)
{
    const size_t file_len = (1u << 20) + 333;
    const off_t off = 100;
    const size_t len = file_len - 200;
    char path[PATH_MAX];
    unsigned char *data = malloc(file_len), *got = malloc(len + 6);
    struct tls_side t;
    struct su_stream c;
    int fd;

    ck_assert(data != NULL && got != NULL);
    snprintf(path, sizeof(path), "%s/sendfile.%d", fx.dir, (int)getpid());
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    su_fill_pattern(data, 0, file_len);
    ck_assert(tu_write_all(fd, data, file_len));
    ctx_init(&c, &t, NULL);
    c.in_call = true;
    ck_assert_int_eq(pf_iostream_sendfile(c.s, "HEAD:", 5, fd, off, len, su_write_cb), 0);
    c.in_call = false;
    ck_assert_uint_eq(su_read_peer(&c, got, len + 5, 10.0), len + 5);
    assert_peer_gets_nothing_more(&c);
    ck_assert(memcmp(got, "HEAD:", 5) == 0);
    ck_assert_msg(memcmp(got + 5, data + off, len) == 0, "file range differs at byte %zu",
                  first_difference(got + 5, data + off, len));
    ck_assert(su_run_until_count(&c, &c.nwrites, 1, WAIT_SEC));
    su_assert_no_reentry(&c);
    /* Borrowed: still open and still ours. */
    ck_assert_int_eq(close(fd), 0);
    ctx_done(&c);
    free(data);
    free(got);
}
END_TEST

/* A read and a write started before the handshake wait for it. */
START_TEST(test_tls_read_and_write_started_before_handshake_wait_for_it)
{
    char buf[8];
    struct tls_side t;
    struct su_stream c;

    ctx_init(&c, &t, NULL);
    ck_assert(!pf_iostream_tls_info(c.s, &(struct pf_tls_info){ 0 }));
    ck_assert_int_eq(su_read_until(&c, "\n", 0, su_read_cb), 0);
    ck_assert_int_eq(su_write(&c, "hello\n", 6, su_write_cb), 0);
    su_peer_write(&c, "ping\n");
    ck_assert_uint_eq(su_read_peer(&c, buf, 6, WAIT_SEC), 6);
    ck_assert(memcmp(buf, "hello\n", 6) == 0);
    ck_assert(su_run_until_count(&c, &c.nreads, 1, WAIT_SEC));
    SU_ASSERT_READ(&c, 0, "ping\n");
    ck_assert(su_run_until_count(&c, &c.nwrites, 1, WAIT_SEC));
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

/* The client vanished (no close_notify, socket gone) while the stream
 * writes: an error, never a SIGPIPE that kills the server. */
START_TEST(test_tls_write_after_peer_vanished_closes_stream_without_sigpipe)
{
    struct tls_side t;
    struct su_stream c;
    int reason;

    signal(SIGPIPE, SIG_DFL);
    ctx_init(&c, &t, NULL);
    ck_assert_int_eq(t_wait_for_handshake(&c), 0);
    ck_assert(su_run_until_count(&c, &t.nhs, 1, WAIT_SEC));
    bridge_kill(&c);
    reason = sc_write_to_gone_peer_closes_stream(&c, WAIT_SEC);
    ck_assert_msg(reason == -EPIPE || reason == -ECONNRESET, "close reason %d (%s)", reason,
                  strerror(-reason));
    ctx_done(&c);
}
END_TEST

/* The client sent its request and close_notify, then went away before the
 * stream answered with its own close_notify: the request is read, the
 * stream closes with reason 0, and its close_notify into the dead socket
 * raises no SIGPIPE. */
START_TEST(test_tls_close_notify_from_vanished_peer_closes_stream_without_sigpipe)
{
    struct tls_side t;
    struct su_stream c;

    signal(SIGPIPE, SIG_DFL);
    ctx_open(&c, &t, NULL, NULL, false, BRIDGE_NOTIFY_AND_EXIT);
    ping_pong(&c);
    su_peer_write(&c, "bye");
    su_peer_close(&c);
    /* The loop stands still: "bye" and close_notify wait in the socket of a
     * client that is gone. */
    ck_assert_int_eq(helper_wait(t.bridge, WAIT_SEC), HELPER_OK);
    t.bridge = -1;
    ck_assert_int_eq(su_read_until_close(&c, su_read_cb), 0);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    ck_assert_int_eq(c.nreads, 2);
    SU_ASSERT_READ(&c, 1, "bye");
    su_assert_closed_once(&c, 0);
    ctx_done(&c);
}
END_TEST

/* The client sent its last bytes and went away without close_notify, as
 * many HTTP clients do: for read_until_close that is the end of the data,
 * as on a plain stream (tls_internal.h: "0: EOF (close_notify, or the peer
 * just went away)"). */
START_TEST(test_tls_peer_gone_without_close_notify_ends_read_until_close_like_eof)
{
    struct tls_side t;
    struct su_stream c;

    signal(SIGPIPE, SIG_DFL);
    ctx_open(&c, &t, NULL, NULL, false, BRIDGE_JUST_EXIT);
    ping_pong(&c);
    ck_assert_int_eq(su_read_until_close(&c, su_read_cb), 0);
    su_peer_write(&c, "last words");
    su_peer_close(&c);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    ck_assert_msg(c.nreads == 2, "read_until_close never completed (close reason %d, %s)",
                  c.close_reason, strerror(-c.close_reason));
    SU_ASSERT_READ(&c, 1, "last words");
    su_assert_closed_once(&c, 0);
    ck_assert_int_eq(helper_wait(t.bridge, WAIT_SEC), HELPER_OK);
    t.bridge = -1;
    ctx_done(&c);
}
END_TEST

/* ---- handshake facts -------------------------------------------------- */

START_TEST(test_wait_for_handshake_runs_once_from_loop_with_tls13_cipher_and_alpn)
{
    struct pf_tls_info info = { 0 };
    struct tls_side t;
    struct su_stream c;

    ctx_init_alpn(&c, &t, ALPN_HTTP11, true);
    ck_assert_msg(!pf_iostream_tls_info(c.s, &info), "tls_info true before the handshake");
    ck_assert_int_eq(t_wait_for_handshake(&c), 0);
    ck_assert_int_eq(t.nhs, 0);
    ck_assert(su_run_until_count(&c, &t.nhs, 1, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(t.nhs, 1);
    ck_assert_str_eq(t.hs_protocol, "TLSv1.3");
    ck_assert_msg(t.hs_cipher[0] != '\0', "no cipher");
    ck_assert_msg(!t.hs_alpn_null, "no ALPN, want \"%s\"", ALPN_HTTP11);
    ck_assert_str_eq(t.hs_alpn, ALPN_HTTP11);

    ck_assert_msg(pf_iostream_tls_info(c.s, &info), "tls_info false after the handshake");
    ck_assert_str_eq(info.protocol, "TLSv1.3");
    ck_assert_str_eq(info.cipher, t.hs_cipher);
    ck_assert_uint_eq(info.alpn_len, strlen(ALPN_HTTP11));
    ck_assert(memcmp(info.alpn, ALPN_HTTP11, info.alpn_len) == 0);

    /* Done already: the callback still comes from the loop, once. */
    ck_assert_int_eq(t_wait_for_handshake(&c), 0);
    ck_assert_int_eq(t.nhs, 1);
    ck_assert(su_run_until_count(&c, &t.nhs, 2, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(t.nhs, 2);
    su_assert_no_reentry(&c);
    ctx_done(&c);
}
END_TEST

/* _i == 0: the client offers no ALPN; 1: it offers one the server (which
 * has no select callback) does not take. */
START_TEST(test_wait_for_handshake_reports_no_alpn_when_none_chosen)
{
    struct pf_tls_info info = { 0 };
    struct tls_side t;
    struct su_stream c;

    ctx_init_alpn(&c, &t, _i == 0 ? NULL : ALPN_HTTP11, false);
    ck_assert_int_eq(t_wait_for_handshake(&c), 0);
    ck_assert(su_run_until_count(&c, &t.nhs, 1, WAIT_SEC));
    ck_assert_str_eq(t.hs_protocol, "TLSv1.3");
    ck_assert_msg(t.hs_alpn_null, "ALPN \"%s\" with none chosen", t.hs_alpn);
    ck_assert(pf_iostream_tls_info(c.s, &info));
    ck_assert_ptr_null(info.alpn);
    ck_assert_uint_eq(info.alpn_len, 0);
    ctx_done(&c);
}
END_TEST

START_TEST(test_wait_for_handshake_on_plain_stream_einval_and_on_closed_stream_epipe)
{
    struct ev_loop *loop = ev_loop_new(0);
    struct pf_tls_info info;
    struct pf_iostream *s;
    struct tls_side t;
    struct su_stream c;
    int sv[2];

    ck_assert_ptr_nonnull(loop);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    s = pf_iostream_new(loop, sv[0], NULL);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(pf_iostream_wait_for_handshake(s, handshake_cb), -EINVAL);
    ck_assert(!pf_iostream_tls_info(s, &info));
    pf_iostream_close(s);
    tu_run_for(loop, SETTLE_SEC);
    close(sv[1]);
    ev_loop_destroy(loop);

    ctx_init(&c, &t, NULL);
    su_close(&c);
    ck_assert_int_eq(t_wait_for_handshake(&c), -EPIPE);
    ck_assert(su_run_until_closed(&c, WAIT_SEC));
    su_run_for(&c, SETTLE_SEC);
    ck_assert_int_eq(t.nhs, 0);
    /* The bridge's handshake failed: nothing to check there. */
    t.no_bridge_status = true;
    ctx_done(&c);
}
END_TEST

/* ---- servers ----------------------------------------------------------- */

struct srv_state;

/* One accepted stream. */
struct conn {
    struct srv_state *st;
    int index;
    double accept_time;
    bool closed;
    int reason;
    double close_time;
    int nhs;
    char alpn[32];
};

/* A thread that beats every TICK_SEC beside the loop. Its longest pause is
 * what the machine imposed on this process (a loaded CI box, CPU quotas), so
 * that only a pause of the loop beyond it is the loop's own. */
struct ref_beat {
    pthread_t thread;
    atomic_bool running;        /* set once the thread is in its loop */
    atomic_bool stop;
    atomic_bool reset;
    atomic_llong max_gap_ns;
};

static long long mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *ref_beat_main(void *arg)
{
    struct ref_beat *rb = arg;
    const struct timespec tick = { 0, (long)(TICK_SEC * 1e9) };
    long long last = mono_ns();

    /* From here on it holds no lock (no malloc, no stdio): a fork of the
     * test process cannot leave a child waiting for one. */
    atomic_store(&rb->running, true);
    while (!atomic_load(&rb->stop)) {
        long long now;

        nanosleep(&tick, NULL);
        now = mono_ns();
        if (atomic_exchange(&rb->reset, false))
            atomic_store(&rb->max_gap_ns, 0);
        else if (now - last > atomic_load(&rb->max_gap_ns))
            atomic_store(&rb->max_gap_ns, now - last);
        last = now;
    }
    return NULL;
}

struct srv_state {
    struct ev_loop *loop;
    struct pf_tcp_server *srv;
    unsigned port;
    int naccepted;
    int nclosed;
    struct conn conns[MAX_CONNS];
    ev_timer ticker;            /* the loop's heartbeat */
    double last_tick, max_gap;
    struct ref_beat ref;
    int fds_before;
    double user_deadline_sec;   /* > 0: the handler sets this deadline at accept */
};

/* The longest pause the machine imposed so far, in seconds. */
static double machine_stall(struct srv_state *st)
{
    return (double)atomic_load(&st->ref.max_gap_ns) / 1e9;
}

/* Forget the pauses so far (e.g. a fork that held the loop on purpose). */
static void reset_stalls(struct srv_state *st)
{
    atomic_store(&st->ref.reset, true);
    st->last_tick = tu_now();
    st->max_gap = 0;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct srv_state *st = container_of(w, struct srv_state, ticker);
    double now = tu_now();

    (void)loop;
    (void)revents;
    if (now - st->last_tick > st->max_gap)
        st->max_gap = now - st->last_tick;
    st->last_tick = now;
}

static void srv_echo_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    if (status != 0)
        return;
    if (pf_iostream_write(s, buf, len, NULL) == 0)
        pf_iostream_read_bytes(s, 65536, true, srv_echo_read_cb);
}

static void srv_handshake_cb(struct pf_iostream *s, const struct pf_tls_info *info)
{
    struct conn *cn = pf_iostream_data(s);

    cn->nhs++;
    snprintf(cn->alpn, sizeof(cn->alpn), "%.*s", info->alpn ? (int)info->alpn_len : 0,
             info->alpn ? info->alpn : "");
}

static void srv_close_cb(struct pf_iostream *s, int reason)
{
    struct conn *cn = pf_iostream_data(s);

    cn->closed = true;
    cn->reason = reason;
    cn->close_time = tu_now();
    cn->st->nclosed++;
}

/* An echo service that also records each stream's handshake and close. */
static void srv_stream_cb(struct pf_tcp_server *srv, struct pf_iostream *s,
                          const struct sockaddr *peer, socklen_t len)
{
    struct srv_state *st = pf_tcp_server_data(srv);
    struct conn *cn;

    (void)peer;
    (void)len;
    ck_assert_int_lt(st->naccepted, MAX_CONNS);
    cn = &st->conns[st->naccepted];
    cn->st = st;
    cn->index = st->naccepted++;
    cn->accept_time = tu_now();
    pf_iostream_set_data(s, cn);
    pf_iostream_set_close_cb(s, srv_close_cb);
    ck_assert_int_eq(pf_iostream_wait_for_handshake(s, srv_handshake_cb), 0);
    if (st->user_deadline_sec > 0)
        pf_iostream_set_deadline(s, st->user_deadline_sec);
    ck_assert_int_eq(pf_iostream_read_bytes(s, 65536, true, srv_echo_read_cb), 0);
}

/* A TLS echo server on 127.0.0.1:<any>, from the suite's files or from ctx. */
static void srv_start(struct srv_state *st, SSL_CTX *ctx, double handshake_timeout_sec)
{
    struct pf_tls_options tls = { .certificate = fx.cert, .key = fx.key, .ctx = ctx,
                                  .handshake_timeout_sec = handshake_timeout_sec };
    char errmsg[PF_ERRMSG_SIZE] = "";
    size_t n;
    const int *fds;

    memset(st, 0, sizeof(*st));
    st->fds_before = tu_fd_count();
    st->loop = ev_loop_new(0);
    ck_assert_ptr_nonnull(st->loop);
    st->srv = pf_tcp_server_new(st->loop, srv_stream_cb, NULL);
    ck_assert_ptr_nonnull(st->srv);
    pf_tcp_server_set_data(st->srv, st);
    ck_assert_msg(pf_tcp_server_set_tls(st->srv, &tls, errmsg) == 0, "set_tls: %s", errmsg);
    ck_assert_msg(pf_tcp_server_listen(st->srv, 0, "127.0.0.1", errmsg) == 0, "listen: %s",
                  errmsg);
    fds = pf_tcp_server_sockets(st->srv, &n);
    ck_assert_uint_eq(n, 1);
    st->port = tu_local_port(fds[0]);
    ck_assert_uint_ne(st->port, 0);
    ev_timer_init(&st->ticker, tick_cb, TICK_SEC, TICK_SEC);
    ev_timer_start(st->loop, &st->ticker);
    st->last_tick = tu_now();
    atomic_init(&st->ref.running, false);
    atomic_init(&st->ref.stop, false);
    atomic_init(&st->ref.reset, false);
    atomic_init(&st->ref.max_gap_ns, 0);
    ck_assert_int_eq(pthread_create(&st->ref.thread, NULL, ref_beat_main, &st->ref), 0);
    /* A thread still starting may hold the allocator's lock (ASan's): the
     * tests fork, and a child would wait for it forever. */
    while (!atomic_load(&st->ref.running))
        usleep(1000);
}

static void srv_run_for(struct srv_state *st, double sec)
{
    tu_run_for(st->loop, sec);
}

static bool srv_run_until_count(struct srv_state *st, const int *count, int target,
                                double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    while (*count < target && tu_now() < deadline)
        srv_run_for(st, 0.005);
    return *count >= target;
}

/* Closes what is left, frees the server and checks no fd stayed open. */
static void srv_done(struct srv_state *st)
{
    struct pf_tcp_server_stats stats;

    pf_tcp_server_close_streams(st->srv);
    ck_assert(srv_run_until_count(st, &st->nclosed, st->naccepted, WAIT_SEC));
    pf_tcp_server_stats(st->srv, &stats);
    ck_assert_uint_eq(stats.active, 0);
    pf_tcp_server_free(st->srv);
    ev_timer_stop(st->loop, &st->ticker);
    ev_loop_destroy(st->loop);
    atomic_store(&st->ref.stop, true);
    ck_assert_int_eq(pthread_join(st->ref.thread, NULL), 0);
    ck_assert_int_eq(tu_fd_count(), st->fds_before);
}

static void assert_loop_never_blocked(struct srv_state *st)
{
    double stall = machine_stall(st);

    ck_assert_msg(st->max_gap < stall + MAX_EXTRA_STALL_SEC,
                  "the loop stalled for %.3f s (the machine, at most %.3f s)", st->max_gap,
                  stall);
}

/* A blocking OpenSSL client in a child: sends a message, wants it echoed
 * and, if alpn is given, that the server chose it. Exits with a helper_exit. */
static pid_t spawn_tls_echo_client(unsigned port, const char *alpn)
{
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        static const char msg[] = "hello over TLS\n";
        struct timeval tv = { .tv_sec = (time_t)WAIT_SEC };
        char back[sizeof(msg)];
        const unsigned char *chosen = NULL;
        unsigned chosen_len = 0;
        size_t got = 0;
        /* The context first: the handshake deadline starts at connect. */
        SSL_CTX *ctx = client_ctx_new(alpn);
        SSL *ssl;
        int fd;

        if (ctx == NULL || (fd = tu_connect_tcp("127.0.0.1", port)) < 0)
            _exit(HELPER_SETUP);
        helper_setup(fd, fd);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if ((ssl = client_connect(ctx, fd)) == NULL)
            _exit(HELPER_HANDSHAKE);
        if (SSL_write(ssl, msg, (int)sizeof(msg) - 1) != (int)sizeof(msg) - 1)
            _exit(HELPER_ECHO);
        while (got < sizeof(msg) - 1) {
            int n = SSL_read(ssl, back + got, (int)(sizeof(msg) - 1 - got));
            if (n <= 0)
                _exit(HELPER_ECHO);
            got += (size_t)n;
        }
        if (memcmp(back, msg, sizeof(msg) - 1) != 0)
            _exit(HELPER_ECHO);
        SSL_get0_alpn_selected(ssl, &chosen, &chosen_len);
        if (alpn != NULL && (chosen_len != strlen(alpn) || memcmp(chosen, alpn, chosen_len)))
            _exit(HELPER_ALPN);
        SSL_shutdown(ssl);
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        _exit(HELPER_OK);
    }
    return pid;
}

/* Serves until the child exits; its helper_wait-style status, -1 on timeout. */
static int serve_until_child_exits(struct srv_state *st, pid_t pid, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;
    int status;

    /* The fork itself (slow under ASan) held the loop: that stall is ours. */
    reset_stalls(st);
    while (tu_now() < deadline) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        srv_run_for(st, 0.005);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/*
 * A good client's echo round trip; its exit status. With a 0.5 s handshake
 * deadline a client that a loaded machine does not schedule in time is cut
 * off by design: that attempt (the server closed it with -ETIMEDOUT) does
 * not count, and it tries again.
 */
static int good_client_echo(struct srv_state *st)
{
    int rc = -1;

    for (int attempt = 0; attempt < 3; attempt++) {
        int before = st->naccepted;

        rc = serve_until_child_exits(st, spawn_tls_echo_client(st->port, NULL), 2 * WAIT_SEC);
        if (rc == HELPER_OK || st->naccepted != before + 1)
            break;
        ck_assert(srv_run_until_count(st, &st->nclosed, st->naccepted, WAIT_SEC));
        if (st->conns[before].reason != -ETIMEDOUT)
            break;
        fprintf(stderr, "check_tls: a good client missed the %.1f s handshake deadline; again\n",
                HANDSHAKE_TIMEOUT_SEC);
    }
    return rc;
}

/* A real ClientHello, as OpenSSL's client first sends it. */
static size_t capture_client_hello(unsigned char *buf, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl;
    int sv[2];
    ssize_t n;

    ck_assert_ptr_nonnull(ctx);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    ssl = SSL_new(ctx);
    ck_assert_ptr_nonnull(ssl);
    ck_assert_int_eq(SSL_set_fd(ssl, sv[0]), 1);
    SSL_set_tlsext_host_name(ssl, "localhost");
    ck_assert_int_eq(SSL_connect(ssl), -1);     /* wants the ServerHello */
    n = read(sv[1], buf, cap);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    close(sv[0]);
    close(sv[1]);
    ck_assert_int_gt(n, 100);
    ck_assert_int_eq(buf[0], 0x16);     /* a handshake record */
    return (size_t)n;
}

/* Serves until fd reads EOF or an error (the server closed on us); returns
 * the time that happened, or -1 after timeout_sec. Bytes the server sends
 * first (an alert) are skipped. */
static double serve_until_client_sees_close(struct srv_state *st, int fd, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;
    char buf[512];

    while (tu_now() < deadline) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return tu_now();
        if (n < 0)
            srv_run_for(st, 0.005);
    }
    return -1;
}

static int connect_client(struct srv_state *st)
{
    int fd = tu_connect_tcp("127.0.0.1", st->port);

    ck_assert_msg(fd >= 0, "connect: %s", strerror(-fd));
    return fd;
}

/* Waits for the server to take connection number index (0-based). */
static void serve_until_accepted(struct srv_state *st, int index)
{
    ck_assert_msg(srv_run_until_count(st, &st->naccepted, index + 1, WAIT_SEC),
                  "connection %d never accepted", index);
}

/* Closing with SO_LINGER 0 sends RST. */
static void reset_close(int fd)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };

    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(fd);
}

enum bad_client { BAD_PLAINTEXT_HTTP, BAD_TRUNCATED_HELLO, BAD_SILENT, BAD_HALF_HELLO_RESET };

static const char *const bad_client_names[] = {
    "plaintext HTTP", "truncated ClientHello", "silent client", "half ClientHello, then RST",
};

/* One bad client, against a server with a 0.5 s handshake timeout; then a
 * good client still gets its echo, and the loop never stalled meanwhile. */
START_TEST(test_server_closes_bad_tls_client_and_keeps_serving)
{
    static const char http[] = "GET / HTTP/1.1\r\n\r\n";
    enum bad_client bad = (enum bad_client)_i;
    const char *name = bad_client_names[bad];
    unsigned char hello[4096];
    size_t hello_len = capture_client_hello(hello, sizeof(hello));
    struct srv_state st;
    double t0, seen, after;
    int fd, rc;

    /* A reset must close the stream by itself: a deadline that is far away
     * tells the two apart, and leaves time to accept before the reset. */
    srv_start(&st, NULL, bad == BAD_HALF_HELLO_RESET ? WAIT_SEC : HANDSHAKE_TIMEOUT_SEC);
    fd = connect_client(&st);
    t0 = tu_now();
    switch (bad) {
    case BAD_PLAINTEXT_HTTP:
        ck_assert(tu_write_all(fd, http, sizeof(http) - 1));
        break;
    case BAD_TRUNCATED_HELLO:
        ck_assert(tu_write_all(fd, hello, 20));
        break;
    case BAD_SILENT:
        break;
    case BAD_HALF_HELLO_RESET:
        ck_assert(tu_write_all(fd, hello, hello_len / 2));
        /* Let the server accept and start on it, then reset. */
        serve_until_accepted(&st, 0);
        srv_run_for(&st, SETTLE_SEC);
        ck_assert_int_eq(st.nclosed, 0);
        t0 = tu_now();
        reset_close(fd);
        fd = -1;
        break;
    }

    if (fd >= 0) {
        seen = serve_until_client_sees_close(&st, fd, WAIT_SEC);
        ck_assert_msg(seen > 0, "%s: the server never closed the connection", name);
        after = seen - t0;
        if (bad == BAD_PLAINTEXT_HTTP)
            ck_assert_msg(after < 1.0 + machine_stall(&st), "%s: closed after %.3f s", name,
                          after);
        else
            ck_assert_msg(after >= HANDSHAKE_TIMEOUT_SEC - 0.05 &&
                          after <= 2.0 + machine_stall(&st),
                          "%s: closed after %.3f s, handshake timeout %.1f s", name, after,
                          HANDSHAKE_TIMEOUT_SEC);
        close(fd);
    }
    ck_assert_msg(srv_run_until_count(&st, &st.nclosed, 1, WAIT_SEC),
                  "%s: the server's stream never closed", name);
    ck_assert_int_eq(st.naccepted, 1);
    ck_assert_int_eq(st.conns[0].nhs, 0);
    after = st.conns[0].close_time - st.conns[0].accept_time;
    switch (bad) {
    case BAD_PLAINTEXT_HTTP:
        ck_assert_msg(st.conns[0].reason == -EPROTO, "%s: close reason %d (%s), want -EPROTO",
                      name, st.conns[0].reason, strerror(-st.conns[0].reason));
        break;
    case BAD_TRUNCATED_HELLO:
    case BAD_SILENT:
        ck_assert_msg(st.conns[0].reason == -ETIMEDOUT,
                      "%s: close reason %d (%s), want -ETIMEDOUT", name, st.conns[0].reason,
                      strerror(-st.conns[0].reason));
        ck_assert_msg(after >= HANDSHAKE_TIMEOUT_SEC - 0.05 && after <= 2.0 + machine_stall(&st),
                      "%s: stream closed %.3f s after it was accepted", name, after);
        break;
    case BAD_HALF_HELLO_RESET:
        /* A reset is no stall: no need to wait for the timeout. */
        ck_assert_msg(st.conns[0].reason < 0 && st.conns[0].reason != -ETIMEDOUT,
                      "%s: close reason %d (%s)", name, st.conns[0].reason,
                      strerror(-st.conns[0].reason));
        break;
    }
    assert_loop_never_blocked(&st);

    rc = good_client_echo(&st);
    ck_assert_msg(rc == HELPER_OK, "after a %s, a good client exited %d", name, rc);
    ck_assert_int_eq(st.conns[st.naccepted - 1].nhs, 1);
    assert_loop_never_blocked(&st);
    srv_done(&st);
}
END_TEST

/* Every kind of stall at once does not delay a good client: it gets its
 * echo long before the stalled handshakes time out, while the loop keeps
 * its 10 ms heartbeat. */
START_TEST(test_server_stalled_handshakes_do_not_delay_other_clients)
{
    const double timeout = 3.0;
    unsigned char hello[4096];
    size_t hello_len = capture_client_hello(hello, sizeof(hello));
    struct srv_state st;
    int fds[3];
    double t0;
    int rc;

    srv_start(&st, NULL, timeout);
    fds[0] = connect_client(&st);                   /* silent */
    fds[1] = connect_client(&st);
    ck_assert(tu_write_all(fds[1], hello, 20));      /* a record header and a bit */
    fds[2] = connect_client(&st);
    ck_assert(tu_write_all(fds[2], hello, hello_len - 1));   /* all but one byte */
    serve_until_accepted(&st, 2);
    t0 = tu_now();
    rc = serve_until_child_exits(&st, spawn_tls_echo_client(st.port, NULL), 2 * WAIT_SEC);
    ck_assert_msg(rc == HELPER_OK, "good client exited %d", rc);
    /* It did not wait for them: they are still in their handshakes. */
    for (int i = 0; i < 3; i++)
        ck_assert_msg(!st.conns[i].closed, "stalled stream %d closed (%d) before a good client "
                      "%.3f s later got its echo", i, st.conns[i].reason, tu_now() - t0);

    ck_assert(srv_run_until_count(&st, &st.nclosed, 4, timeout + WAIT_SEC));
    for (int i = 0; i < 3; i++) {
        double after = st.conns[i].close_time - st.conns[i].accept_time;

        ck_assert_msg(st.conns[i].reason == -ETIMEDOUT, "stalled stream %d: reason %d (%s)", i,
                      st.conns[i].reason, strerror(-st.conns[i].reason));
        ck_assert_msg(after >= timeout - 0.05 && after <= timeout + 1.0 + machine_stall(&st),
                      "stalled stream %d closed %.3f s after it was accepted", i, after);
    }
    assert_loop_never_blocked(&st);
    for (int i = 0; i < 3; i++) {
        char buf[256];
        /* Each sees the close too: EOF or, with data unread, a reset. */
        ssize_t n = recv(fds[i], buf, sizeof(buf), MSG_DONTWAIT);
        ck_assert_msg(n == 0 || (n < 0 && errno == ECONNRESET), "client %d: recv %zd (%s)", i,
                      n, n < 0 ? strerror(errno) : "data");
        close(fds[i]);
    }
    srv_done(&st);
}
END_TEST

/* Tornado's ssl_options=ctx: the server keeps its own reference, so the
 * caller may drop theirs at once; the server really uses that context (its
 * ALPN callback chooses), for every connection. */
START_TEST(test_server_with_caller_ctx_keeps_reference_and_uses_it)
{
    struct srv_state st;
    SSL_CTX *ctx = server_ctx_new(true);
    int rc;

    srv_start(&st, ctx, 0);
    SSL_CTX_free(ctx);          /* our reference; the server holds its own */
    ctx = NULL;
    for (int i = 0; i < 2; i++) {
        rc = serve_until_child_exits(&st, spawn_tls_echo_client(st.port, ALPN_HTTP11), 2 * WAIT_SEC);
        ck_assert_msg(rc == HELPER_OK, "client %d exited %d", i, rc);
        ck_assert(srv_run_until_count(&st, &st.conns[i].nhs, 1, WAIT_SEC));
        ck_assert_str_eq(st.conns[i].alpn, ALPN_HTTP11);
    }
    srv_done(&st);
}
END_TEST

/* ---- suite ------------------------------------------------------------ */

/* A handler's own, later deadline (the http handler's header_timeout) must
 * not stretch the handshake's. */
START_TEST(test_later_user_deadline_does_not_extend_the_handshake_timeout)
{
    struct srv_state st;
    int fd;

    srv_start(&st, NULL, 0.5);
    st.user_deadline_sec = 5;
    fd = tu_connect_tcp("127.0.0.1", st.port);
    ck_assert_int_ge(fd, 0);
    ck_assert(srv_run_until_count(&st, &st.nclosed, 1, 4.0));
    ck_assert_int_eq(st.conns[0].reason, -ETIMEDOUT);
    ck_assert_msg(st.conns[0].close_time - st.conns[0].accept_time < 2.5,
                  "a stalled handshake lasted %.2f s", st.conns[0].close_time - st.conns[0].accept_time);
    close(fd);
    srv_done(&st);
}
END_TEST

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc;

    tc = tcase_create("ctx");
    tcase_add_test(tc, test_server_ctx_new_loads_matching_certificate_and_key);
    tcase_add_test(tc, test_server_ctx_new_missing_certificate_names_path_and_reason);
    tcase_add_test(tc, test_server_ctx_new_missing_key_names_path_and_reason);
    tcase_add_loop_test(tc, test_server_ctx_new_garbage_pem_names_file, 0, 2);
    tcase_add_test(tc, test_server_ctx_new_key_of_another_certificate_does_not_match);
    tcase_add_test(tc, test_set_tls_with_missing_certificate_returns_einval_and_names_it);
    suite_add_tcase(s, tc);

    tc = tu_add_tcase(s, "stream", 15);
    tcase_add_test(tc, test_tls_read_until_finds_delimiter_split_across_writes_and_keeps_rest);
    tcase_add_test(tc, test_tls_read_bytes_exact_across_writes_then_partial);
    tcase_add_test(tc, test_tls_read_until_close_gets_all_bytes_then_close_reason_0);
    tcase_add_test(tc, test_tls_half_closed_peer_still_gets_answer_written_after_eof);
    tcase_add_test(tc, test_tls_large_write_reaches_peer_in_order_and_calls_back_once_from_loop);
    tcase_add_test(tc, test_tls_close_after_writes_fill_socket_still_sends_close_notify);
    tcase_add_test(tc, test_tls_writev_sends_buffers_in_order_even_when_queued);
    tcase_add_test(tc, test_tls_write_cb_never_fires_inside_write);
    tcase_add_test(tc, test_tls_read_until_over_max_buffer_closes_stream_with_enobufs);
    tcase_add_test(tc, test_tls_close_from_read_cb_closes_once_and_drops_buffered_data);
    tcase_add_test(tc, test_tls_sendfile_sends_head_then_file_range_and_borrows_file);
    tcase_add_test(tc, test_tls_read_and_write_started_before_handshake_wait_for_it);
    tcase_add_test(tc, test_tls_write_after_peer_vanished_closes_stream_without_sigpipe);
    tcase_add_test(tc, test_tls_close_notify_from_vanished_peer_closes_stream_without_sigpipe);
    tcase_add_test(tc, test_tls_peer_gone_without_close_notify_ends_read_until_close_like_eof);

    tc = tu_add_tcase(s, "handshake", 10);
    tcase_add_test(tc, test_wait_for_handshake_runs_once_from_loop_with_tls13_cipher_and_alpn);
    tcase_add_loop_test(tc, test_wait_for_handshake_reports_no_alpn_when_none_chosen, 0, 2);
    tcase_add_test(tc, test_wait_for_handshake_on_plain_stream_einval_and_on_closed_stream_epipe);

    tc = tu_add_tcase(s, "server", 15);
    tcase_add_loop_test(tc, test_server_closes_bad_tls_client_and_keeps_serving, 0, 4);
    tcase_add_test(tc, test_server_stalled_handshakes_do_not_delay_other_clients);
    tcase_add_test(tc, test_server_with_caller_ctx_keeps_reference_and_uses_it);
    tcase_add_test(tc, test_later_user_deadline_does_not_extend_the_handshake_timeout);

    return s;
}

/* Runs the openssl CLI with args (a shell fragment); its output goes to a
 * log that is shown if it fails. */
static bool run_openssl(const char *args)
{
    char cmd[2 * PATH_MAX + 512], log[4096];
    char log_path[PATH_MAX];

    snprintf(log_path, sizeof(log_path), "%s/openssl.log", fx.dir);
    snprintf(cmd, sizeof(cmd), "openssl %s >%s 2>&1", args, log_path);
    if (system(cmd) == 0)
        return true;
    tu_read_file(log_path, log, sizeof(log));
    fprintf(stderr, "check_tls: `%s` failed:\n%s\n", cmd, log);
    return false;
}

static bool make_fixtures(void)
{
    static const char garbage[] = "-----BEGIN CERTIFICATE-----\n"
                                  "This is no base64, and no certificate either.\n"
                                  "-----END CERTIFICATE-----\n";
    char args[4 * PATH_MAX];
    FILE *f;

    snprintf(fx.cert, sizeof(fx.cert), "%s/c.pem", fx.dir);
    snprintf(fx.key, sizeof(fx.key), "%s/k.pem", fx.dir);
    snprintf(fx.other_key, sizeof(fx.other_key), "%s/k-other.pem", fx.dir);
    snprintf(fx.garbage, sizeof(fx.garbage), "%s/garbage.pem", fx.dir);
    snprintf(fx.missing_cert, sizeof(fx.missing_cert), "%s/c-missing.pem", fx.dir);
    snprintf(fx.missing_key, sizeof(fx.missing_key), "%s/k-missing.pem", fx.dir);
    snprintf(args, sizeof(args),
             "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
             "-subj /CN=localhost -keyout %s -out %s", fx.key, fx.cert);
    if (!run_openssl(args))
        return false;
    snprintf(args, sizeof(args),
             "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out %s",
             fx.other_key);
    if (!run_openssl(args))
        return false;
    f = fopen(fx.garbage, "w");
    if (f == NULL || fputs(garbage, f) < 0 || fclose(f) != 0) {
        perror(fx.garbage);
        return false;
    }
    return true;
}

int main(void)
{
    int failed;

    snprintf(fx.dir, sizeof(fx.dir), "/tmp/check_tls-XXXXXX");
    if (mkdtemp(fx.dir) == NULL) {
        perror("check_tls: mkdtemp");
        return EXIT_FAILURE;
    }
    if (!make_fixtures()) {
        tu_rmtree(fx.dir);
        return EXIT_FAILURE;
    }
    failed = tu_run_suite(tls_suite());
    tu_rmtree(fx.dir);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
