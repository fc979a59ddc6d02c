/*
 * check_tls_daemon: TLS in the built daemon (issue #8, items 2-4), as a
 * client and an operator see it. Each tcase runs $PREFORKD (default
 * build/preforkd, from the repo root) once, as `preforkd -f -c <temp conf>`
 * with an `ssl` listener and a plain one on loopback, two workers, and the
 * tests talk to it with OpenSSL in-process (blocking, bounded by socket
 * timeouts), with raw sockets for the bad clients, and once with curl.
 * The `config_test` tcase runs `preforkd -t` on configs of its own.
 *
 * The certificates are made once by main() with the openssl CLI: A and B
 * (CN=localhost, each its own key, 30 days), a key of neither, one that
 * expires in 2 days, and an expired one (`openssl ca -startdate -enddate`
 * can date a certificate in the past). A site serves copies of A's files
 * under fixed names; the reload tests copy other files over them and send
 * HUP, as an operator renewing a certificate would.
 *
 * The daemon is started by an unchecked fixture in the runner process, so
 * it outlives the forked tests; its master runs in a process group of its
 * own (teardown signals it by pid) and dies with the runner
 * (PR_SET_PDEATHSIG). A checked teardown fails the test after which a
 * worker died or a sanitizer reported.
 */
#define _GNU_SOURCE     /* memmem, strcasestr */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "daemonutil.h"
#include "testutil.h"

#define TCASE_TIMEOUT_SEC 30
/* A daemon that does not accept connections by then failed to start. */
#define READY_TIMEOUT_SEC 10.0
/* Teardown: SIGTERM first, SIGKILL after this. */
#define STOP_GRACE_SEC 3.0
/* Bound on any one read, write or handshake of a test's client. */
#define IO_TIMEOUT_SEC 5
/* Timeouts of the configs under test. The http handler arms header_timeout
 * at the accept, in place of the 10 s handshake deadline, so it also bounds
 * how long a TLS client may take to handshake; idle_timeout is long enough
 * for a kept-alive connection to outlive a bad client's case. */
#define HEADER_TIMEOUT_SEC 1
#define IDLE_TIMEOUT_SEC 4
#define GRACEFUL_TIMEOUT_SEC 5
/* A bad client the server can tell at once is closed within this; one that
 * stalls, within header_timeout plus this margin. */
#define BAD_CLOSE_FAST_SEC 1.0
#define BAD_CLOSE_MARGIN_SEC 1.5
/* Good TLS clients served after each bad one. */
#define GOOD_AFTER_BAD 6
/* HUP to new generation, and to the log line of a reload that failed. */
#define RELOAD_TIMEOUT_SEC 8.0
/* The kept-alive connection sends a request this often while a reload
 * runs: a draining worker closes one that idled for a second. */
#define KEEP_WARM_SEC 0.25
#define POLL_SEC 0.05
/* Resumed connections while each worker alone runs. */
#define RESUME_EACH 5
#define N_WORKERS 2
#define MAX_PIDS 16
/* `preforkd -t` and curl finish within this. */
#define CHILD_TIMEOUT_SEC 10.0
#define CONN_BUF_SIZE (256 * 1024)
#define OUTPUT_MAX 65536
#define ECHO_BIG 65536

/* Set up by main(). */
static struct du_suite suite;

/* The suite's PEM files and what a client needs to tell A from B. */
static struct {
    char dir[128];                  /* under the suite's dir: short */
    char www[128];                  /* the document root: index.html */
    char a_cert[PATH_MAX], a_key[PATH_MAX];
    char b_cert[PATH_MAX], b_key[PATH_MAX];
    char other_key[PATH_MAX];       /* matches neither A nor B */
    char junk_key[PATH_MAX];        /* no PEM at all */
    char soon_cert[PATH_MAX], soon_key[PATH_MAX];       /* expires in 2 days */
    char old_cert[PATH_MAX], old_key[PATH_MAX];         /* expired in 2020 */
    bool have_old;                  /* the expired one could be made */
    unsigned char a_fp[EVP_MAX_MD_SIZE], b_fp[EVP_MAX_MD_SIZE];
    unsigned a_fp_len, b_fp_len;
} pem;

static char index_body[1024];
static size_t index_len;

enum handler { HANDLER_HTTP, HANDLER_ECHO };

/* The daemon of the running tcase; set by the unchecked setup in the runner,
 * read by the tests forked after it. Its plain listener is the_site.d.port. */
static struct du_site the_site;
/* Its ssl listener and the files that [tls] names, in its temp dir. */
static struct {
    char dir[128];                  /* under the suite's dir: short */
    char cert[PATH_MAX];
    char key[PATH_MAX];
    unsigned port;
} tls_site;

/* ---- text and file helpers ---- */

/* The last part of the daemon's log, for messages. */
static const char *site_log_tail(void)
{
    return du_log_tail(&the_site.d);
}

static bool write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    bool ok;

    if (fd < 0)
        return false;
    ok = tu_write_all(fd, data, len);
    return close(fd) == 0 && ok && chmod(path, mode) == 0;
}

/* Replaces dst by a copy of src the way a deploy does: a temp file renamed
 * over it. src NULL: removes dst. */
static void install_file(const char *src, const char *dst)
{
    static char data[OUTPUT_MAX];
    char tmp[PATH_MAX + 8];

    if (src == NULL) {
        ck_assert_msg(unlink(dst) == 0 || errno == ENOENT, "unlink %s: %s", dst, strerror(errno));
        return;
    }
    tu_read_file(src, data, sizeof(data));
    ck_assert_msg(data[0] != '\0', "%s is empty or missing", src);
    snprintf(tmp, sizeof(tmp), "%s.new", dst);
    ck_assert_msg(write_file(tmp, data, strlen(data), 0600), "%s: %s", tmp, strerror(errno));
    ck_assert_msg(rename(tmp, dst) == 0, "rename %s: %s", tmp, strerror(errno));
}

/* ---- certificates (main, before any fork) ---- */

/* Runs the openssl CLI with args (a shell fragment) in pem.dir; its output
 * goes to a log that is shown if it fails and loud. */
static bool run_openssl(const char *args, bool loud)
{
    char cmd[4 * PATH_MAX + 512], log[4096], log_path[PATH_MAX + 16];

    snprintf(log_path, sizeof(log_path), "%s/openssl.log", pem.dir);
    snprintf(cmd, sizeof(cmd), "cd %s && openssl %s >%s 2>&1", pem.dir, args, log_path);
    if (system(cmd) == 0)
        return true;
    if (loud) {
        tu_read_file(log_path, log, sizeof(log));
        fprintf(stderr, "check_tls_daemon: `%s` failed:\n%s\n", cmd, log);
    }
    return false;
}

static bool make_self_signed(const char *cert, const char *key, int days)
{
    char args[3 * PATH_MAX];

    snprintf(args, sizeof(args),
             "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days %d "
             "-subj /CN=localhost -keyout %s -out %s", days, key, cert);
    return run_openssl(args, true);
}

/* An expired certificate: `req -days` takes no negative number, but `ca`
 * dates a certificate as told. */
static bool make_expired(void)
{
    static const char ca_conf[] = "[ca]\ndefault_ca = d\n"
                                  "[d]\ndatabase = ca/index.txt\nnew_certs_dir = ca\n"
                                  "serial = ca/serial\ndefault_md = sha256\npolicy = p\n"
                                  "[p]\ncommonName = supplied\n";
    char args[3 * PATH_MAX], path[PATH_MAX + 32];

    snprintf(path, sizeof(path), "%s/ca", pem.dir);
    if (mkdir(path, 0700) != 0)
        return false;
    snprintf(path, sizeof(path), "%s/ca/index.txt", pem.dir);
    if (!write_file(path, "", 0, 0600))
        return false;
    snprintf(path, sizeof(path), "%s/ca/serial", pem.dir);
    if (!write_file(path, "01\n", 3, 0600))
        return false;
    snprintf(path, sizeof(path), "%s/ca.cnf", pem.dir);
    if (!write_file(path, ca_conf, strlen(ca_conf), 0600))
        return false;
    snprintf(args, sizeof(args),
             "req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-subj /CN=localhost -keyout %s -out old.csr", pem.old_key);
    if (!run_openssl(args, false))
        return false;
    snprintf(args, sizeof(args),
             "ca -batch -config ca.cnf -selfsign -keyfile %s -in old.csr -out %s -notext "
             "-startdate 20200101000000Z -enddate 20200102000000Z", pem.old_key, pem.old_cert);
    return run_openssl(args, false);
}

static bool fingerprint(const char *cert, unsigned char *fp, unsigned *len)
{
    FILE *f = fopen(cert, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    bool ok = x != NULL && X509_digest(x, EVP_sha256(), fp, len) == 1;

    if (f != NULL)
        fclose(f);
    X509_free(x);
    return ok;
}

static bool make_pems(void)
{
    static const char junk[] = "-----BEGIN PRIVATE KEY-----\nnot base64, not a key\n"
                               "-----END PRIVATE KEY-----\n";
    char args[2 * PATH_MAX];

#define PEM_PATH(field, name) snprintf(pem.field, sizeof(pem.field), "%s/" name, pem.dir)
    PEM_PATH(a_cert, "a.crt");
    PEM_PATH(a_key, "a.key");
    PEM_PATH(b_cert, "b.crt");
    PEM_PATH(b_key, "b.key");
    PEM_PATH(other_key, "other.key");
    PEM_PATH(junk_key, "junk.key");
    PEM_PATH(soon_cert, "soon.crt");
    PEM_PATH(soon_key, "soon.key");
    PEM_PATH(old_cert, "old.crt");
    PEM_PATH(old_key, "old.key");
#undef PEM_PATH
    if (!make_self_signed(pem.a_cert, pem.a_key, 30) ||
        !make_self_signed(pem.b_cert, pem.b_key, 30) ||
        !make_self_signed(pem.soon_cert, pem.soon_key, 2))
        return false;
    snprintf(args, sizeof(args), "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 "
             "-out %s", pem.other_key);
    if (!run_openssl(args, true) || !write_file(pem.junk_key, junk, strlen(junk), 0600))
        return false;
    pem.have_old = make_expired();
    if (!pem.have_old)
        fprintf(stderr, "check_tls_daemon: note: could not make an expired certificate with "
                "`openssl ca`; the expired-certificate cases are skipped\n");
    if (!fingerprint(pem.a_cert, pem.a_fp, &pem.a_fp_len) ||
        !fingerprint(pem.b_cert, pem.b_fp, &pem.b_fp_len)) {
        fprintf(stderr, "check_tls_daemon: cannot read back %s or %s\n", pem.a_cert, pem.b_cert);
        return false;
    }
    return true;
}

/* index.html of the shared document root, readable by the workers' user. */
static bool make_www(void)
{
    char path[PATH_MAX + 16];

    index_len = tu_html_page(index_body, sizeof(index_body), "check_tls_daemon",
                             "the index, over TLS or not", 600);
    snprintf(pem.www, sizeof(pem.www), "%s/www", suite.dir);
    snprintf(path, sizeof(path), "%s/index.html", pem.www);
    return mkdir(pem.www, 0755) == 0 && chmod(pem.www, 0755) == 0 &&
           write_file(path, index_body, index_len, 0644);
}

/* ---- the daemon (runner side) ---- */

/* A config for handler with an ssl listener on tls_port and a plain one on
 * plain_port; cert and key as given (absolute paths). */
static bool write_conf(const char *path, enum handler handler, unsigned tls_port,
                       unsigned plain_port, const char *cert, const char *key)
{
    FILE *f = fopen(path, "w");

    if (f == NULL)
        return false;
    fprintf(f, "[daemon]\n"
               "workers = %d\n"
               "%s"
               "log_level = info\n"
               "graceful_timeout = %d\n"
               "worker_timeout = 10\n"
               "[server]\n"
               "listen = 127.0.0.1:%u ssl\n"
               "listen = 127.0.0.1:%u\n"
               "handler = %s\n"
               "idle_timeout = %d\n"
               "[http]\n"
               "root = %s\n"
               "index = index.html\n"
               "status_path = /status\n"
               "header_timeout = %d\n"
               "[tls]\n"
               "certificate = %s\n"
               "key = %s\n",
            N_WORKERS, geteuid() == 0 ? "user = nobody\n" : "", GRACEFUL_TIMEOUT_SEC, tls_port,
            plain_port, handler == HANDLER_HTTP ? "http" : "echo", IDLE_TIMEOUT_SEC, pem.www,
            HEADER_TIMEOUT_SEC, cert, key);
    return fclose(f) == 0;
}

/* Unchecked setup: a config serving copies of A, and the daemon on it. */
static void site_start(enum handler handler)
{
    struct du_daemon *d = &the_site.d;

    snprintf(tls_site.dir, sizeof(tls_site.dir), "%s/site-XXXXXX", suite.dir);
    ck_assert_ptr_nonnull(mkdtemp(tls_site.dir));
    du_init(d, tls_site.dir, "preforkd");
    snprintf(tls_site.cert, sizeof(tls_site.cert), "%s/server.crt", tls_site.dir);
    snprintf(tls_site.key, sizeof(tls_site.key), "%s/server.key", tls_site.dir);
    tls_site.port = tu_free_port("127.0.0.1");
    do
        d->port = tu_free_port("127.0.0.1");
    while (d->port == tls_site.port);
    install_file(pem.a_cert, tls_site.cert);
    install_file(pem.a_key, tls_site.key);
    ck_assert_msg(write_conf(d->conf, handler, tls_site.port, d->port, tls_site.cert,
                             tls_site.key), "writing %s: %s", d->conf, strerror(errno));
    du_site_launch(&suite, &the_site, READY_TIMEOUT_SEC);
}

static void site_start_http(void)
{
    site_start(HANDLER_HTTP);
}

static void site_start_echo(void)
{
    site_start(HANDLER_ECHO);
}

/* Unchecked teardown (runner): SIGTERM, SIGKILL after STOP_GRACE_SEC; a
 * sanitizer report in the log is counted by main(). */
static void site_stop(void)
{
    du_site_stop(&suite, &the_site, STOP_GRACE_SEC);
}

/* ---- per test (checked fixture, in the test's process) ---- */

static void require_site(void)
{
    du_site_require(&the_site);
}

/* SIGCONT to every worker: a test that failed while it had one stopped
 * (the resumption test does) ends without its teardown. */
static void continue_workers(void)
{
    pid_t pids[MAX_PIDS];
    int n = the_site.d.pid > 0 ? tu_children_of(the_site.d.pid, pids, MAX_PIDS) : 0;

    for (int i = 0; i < n && i < MAX_PIDS; i++)
        kill(pids[i], SIGCONT);
}

static void test_setup(void)
{
    /* A client writing to a connection the server closed gets EPIPE. */
    signal(SIGPIPE, SIG_IGN);
    continue_workers();
    du_site_test_begin(&the_site);
}

static void test_teardown(void)
{
    continue_workers();
    du_site_test_end(&the_site);
}

/* The master's live children (the workers), sorted. */
static int worker_pids(pid_t *pids)
{
    int n = tu_children_of(the_site.d.pid, pids, MAX_PIDS);

    ck_assert_int_le(n, MAX_PIDS);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && pids[j - 1] > pids[j]; j--) {
            pid_t t = pids[j];
            pids[j] = pids[j - 1];
            pids[j - 1] = t;
        }
    return n;
}

static const char *show_pids(const pid_t *pids, int n)
{
    static char bufs[2][256];
    static int next;
    char *out = bufs[next++ % 2];
    size_t len = 0;

    out[0] = '\0';
    for (int i = 0; i < n && len < sizeof(bufs[0]) - 16; i++)
        len += (size_t)snprintf(out + len, sizeof(bufs[0]) - len, i ? " %d" : "%d", (int)pids[i]);
    return out;
}

static int count_lines(const char *s)
{
    int n = 0;

    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

/* Waits up to timeout_sec for needle in the daemon's log past offset;
 * leaves what it read there in buf. */
static bool log_wait_for(off_t offset, const char *needle, char *buf, size_t size,
                         double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;

    for (;;) {
        tu_read_file_from(the_site.d.log, offset, buf, size);
        if (strstr(buf, needle) != NULL)
            return true;
        if (tu_now() >= deadline)
            return false;
        usleep(20000);
    }
}

/* ---- clients: TLS through OpenSSL, or plain, over one connection type ---- */

struct conn {
    int fd;
    SSL *ssl;                       /* NULL: a plain connection */
    char *buf;                      /* received and not yet consumed */
    size_t len;
    bool eof;
};

struct response {
    int status;
    char head[4096];
    bool conn_close;                /* Connection: close */
    char *body;                     /* malloc'd, NUL-terminated */
    size_t body_len;
};

static const unsigned char alpn_http11[] = "\x08http/1.1";
static const unsigned char alpn_h2_http11[] = "\x02h2\x08http/1.1";

/* A client context that trusts A and B and verifies the name localhost;
 * alpn (wire format, may be NULL) is what it offers; max_version 0: any. */
static SSL_CTX *client_ctx_new(const unsigned char *alpn, size_t alpn_len, int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    ck_assert_ptr_nonnull(ctx);
    ck_assert_int_eq(SSL_CTX_load_verify_locations(ctx, pem.a_cert, NULL), 1);
    ck_assert_int_eq(SSL_CTX_load_verify_locations(ctx, pem.b_cert, NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (alpn != NULL)
        ck_assert_int_eq(SSL_CTX_set_alpn_protos(ctx, alpn, (unsigned)alpn_len), 0);
    if (max_version != 0)
        ck_assert_int_eq(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
    return ctx;
}

static void set_timeouts(int fd, double sec)
{
    struct timeval tv = { (time_t)sec, (suseconds_t)((sec - (double)(time_t)sec) * 1e6) };

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* OpenSSL's queued errors as one line, for messages. */
static const char *ssl_errors(void)
{
    static char buf[1024];
    size_t len = 0;
    unsigned long e;

    buf[0] = '\0';
    while ((e = ERR_get_error()) != 0 && len < sizeof(buf) - 256) {
        if (len > 0)
            buf[len++] = ';';
        ERR_error_string_n(e, buf + len, sizeof(buf) - len);
        len += strlen(buf + len);
    }
    return buf;
}

/* Opens a plain connection to port; the test fails if it cannot. */
static void conn_open_plain(struct conn *c, unsigned port)
{
    memset(c, 0, sizeof(*c));
    c->fd = tu_connect_tcp("127.0.0.1", port);
    ck_assert_msg(c->fd >= 0, "connect 127.0.0.1:%u: %s\n%s", port, strerror(-c->fd),
                  site_log_tail());
    set_timeouts(c->fd, IO_TIMEOUT_SEC);
    c->buf = malloc(CONN_BUF_SIZE);
    ck_assert_ptr_nonnull(c->buf);
}

/* A verified TLS handshake with the site's ssl listener, resuming sess if
 * not NULL; the test fails (naming what) if it does not succeed. */
static void conn_open_tls(struct conn *c, SSL_CTX *ctx, SSL_SESSION *sess, const char *what)
{
    int rc;

    conn_open_plain(c, tls_site.port);
    c->ssl = SSL_new(ctx);
    ck_assert_ptr_nonnull(c->ssl);
    ck_assert_int_eq(SSL_set_fd(c->ssl, c->fd), 1);
    ck_assert_int_eq(SSL_set_tlsext_host_name(c->ssl, "localhost"), 1);
    ck_assert_int_eq(SSL_set1_host(c->ssl, "localhost"), 1);
    if (sess != NULL)
        ck_assert_int_eq(SSL_set_session(c->ssl, sess), 1);
    ERR_clear_error();
    errno = 0;
    rc = SSL_connect(c->ssl);
    ck_assert_msg(rc == 1, "%s: TLS handshake with 127.0.0.1:%u failed (SSL error %d, %s, "
                  "verify: %s): %s\ndaemon log:\n%s", what, tls_site.port,
                  SSL_get_error(c->ssl, rc), strerror(errno),
                  X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)), ssl_errors(),
                  site_log_tail());
}

static void conn_close(struct conn *c)
{
    if (c->ssl != NULL) {
        /* Our close_notify, without waiting for theirs; even after theirs,
         * since OpenSSL marks the session of an SSL freed without having
         * sent one not resumable (a TLS 1.2 client's shared SSL_SESSION). */
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

static bool conn_send(struct conn *c, const void *data, size_t len)
{
    const char *p = data;

    if (c->ssl == NULL)
        return tu_send_all(c->fd, data, len);
    while (len > 0) {
        size_t w = 0;

        if (SSL_write_ex(c->ssl, p, len, &w) != 1)
            return false;
        p += w;
        len -= w;
    }
    return true;
}

/* Reads what comes within the socket timeout: 1 if bytes came, 0 at EOF
 * (close_notify, FIN or reset), -1 if none came in time. */
static int conn_fill(struct conn *c)
{
    ssize_t n;

    if (c->eof)
        return 0;
    ck_assert_msg(c->len < CONN_BUF_SIZE, "over %d bytes received and not consumed",
                  CONN_BUF_SIZE);
    if (c->ssl != NULL) {
        size_t got = 0;
        int rc, e;

        ERR_clear_error();
        errno = 0;
        rc = SSL_read_ex(c->ssl, c->buf + c->len, CONN_BUF_SIZE - c->len, &got);
        if (rc == 1) {
            c->len += got;
            return 1;
        }
        e = SSL_get_error(c->ssl, rc);
        if (e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK))
            return -1;
        if (e == SSL_ERROR_WANT_READ)
            return -1;
        ERR_clear_error();
        c->eof = true;
        return 0;
    }
    for (;;) {
        n = recv(c->fd, c->buf + c->len, CONN_BUF_SIZE - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return -1;
        if (n > 0) {
            c->len += (size_t)n;
            return 1;
        }
        c->eof = true;
        return 0;
    }
}

/* Waits up to timeout_sec for the peer to close, dropping what comes. */
static bool conn_wait_close(struct conn *c, double timeout_sec)
{
    double deadline = tu_now() + timeout_sec;
    int rc;

    while (tu_now() < deadline) {
        set_timeouts(c->fd, deadline - tu_now() > 0.01 ? deadline - tu_now() : 0.01);
        rc = conn_fill(c);
        if (rc == 0)
            return true;
        c->len = 0;
    }
    return c->eof;
}

/* Value of header name in head (NUL-terminated lines ending in CRLF), into
 * out; false if absent. */
static bool head_value(const char *head, const char *name, char *out, size_t size)
{
    size_t nlen = strlen(name);

    for (const char *line = strstr(head, "\r\n"); line != NULL; line = strstr(line, "\r\n")) {
        const char *v, *end;

        line += 2;
        if (strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
            continue;
        for (v = line + nlen + 1; *v == ' ' || *v == '\t'; v++)
            ;
        end = strstr(v, "\r\n");
        if (end == NULL)
            end = v + strlen(v);
        snprintf(out, size, "%.*s", (int)(end - v), v);
        return true;
    }
    return false;
}

/* One response: the head, then Content-Length bytes of body (to EOF without
 * one). NULL, or what went wrong. */
static const char *conn_read_response(struct conn *c, struct response *r)
{
    static char why[256];
    char *end, value[64];
    size_t head_len, body_len;
    int rc;

    memset(r, 0, sizeof(*r));
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL) {
        rc = conn_fill(c);
        if (rc == 0)
            return c->len > 0 ? "the connection closed inside a response head"
                              : "the connection closed without a response";
        if (rc < 0)
            return "no complete response head in time";
    }
    head_len = (size_t)(end - c->buf) + 4;
    if (head_len >= sizeof(r->head))
        return "a response head too long for the test";
    memcpy(r->head, c->buf, head_len);
    r->head[head_len] = '\0';
    if (strncmp(r->head, "HTTP/1.", 7) != 0 || strlen(r->head) < 12)
        return "no HTTP/1.x status line";
    r->status = atoi(r->head + 9);
    r->conn_close = head_value(r->head, "Connection", value, sizeof(value)) &&
                    strcasecmp(value, "close") == 0;
    if (head_value(r->head, "Content-Length", value, sizeof(value))) {
        body_len = strtoull(value, NULL, 10);
        if (body_len > CONN_BUF_SIZE - head_len)
            return "a Content-Length too large for the test";
        while (c->len < head_len + body_len) {
            rc = conn_fill(c);
            if (rc <= 0) {
                snprintf(why, sizeof(why), "%s after %zu of %zu body bytes",
                         rc == 0 ? "the connection closed" : "no more bytes in time",
                         c->len - head_len, body_len);
                return why;
            }
        }
    } else {
        while ((rc = conn_fill(c)) > 0)
            ;
        if (rc < 0)
            return "no Content-Length, and the connection stayed open";
        body_len = c->len - head_len;
    }
    r->body = tu_take_bytes(c->buf, &c->len, head_len, body_len);
    r->body_len = body_len;
    return NULL;
}

static void response_free(struct response *r)
{
    free(r->body);
    r->body = NULL;
}


/* GET path on c (with Connection: close if close); its response in *r.
 * Fails the test, naming what, if none comes. */
static void conn_get(struct conn *c, const char *path, bool close, struct response *r,
                     const char *what)
{
    char req[256];
    const char *err;

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n", path,
             close ? "Connection: close\r\n" : "");
    ck_assert_msg(conn_send(c, req, strlen(req)), "%s: sending GET %s failed: %s\n%s", what,
                  path, ssl_errors(), site_log_tail());
    err = conn_read_response(c, r);
    ck_assert_msg(err == NULL, "%s: GET %s: %s; received: %s\ndaemon log:\n%s", what, path, err,
                  tu_show(c->buf, c->len), site_log_tail());
}

static void assert_index(const struct response *r, const char *what)
{
    ck_assert_msg(r->status == 200, "%s: status %d, want 200:\n%s", what, r->status, r->head);
    ck_assert_msg(r->body_len == index_len && memcmp(r->body, index_body, index_len) == 0,
                  "%s: got %zu bytes, want index.html's %zu: %s", what, r->body_len, index_len,
                  tu_show(r->body, r->body_len));
}

/* 'A' or 'B' for the certificate the server showed on ssl, '?' otherwise. */
static char peer_cert_name(SSL *ssl)
{
    X509 *x = SSL_get1_peer_certificate(ssl);
    unsigned char fp[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    char name = '?';

    if (x != NULL && X509_digest(x, EVP_sha256(), fp, &len) == 1) {
        if (len == pem.a_fp_len && memcmp(fp, pem.a_fp, len) == 0)
            name = 'A';
        else if (len == pem.b_fp_len && memcmp(fp, pem.b_fp, len) == 0)
            name = 'B';
    }
    X509_free(x);
    return name;
}

/* A new TLS connection that GETs / (Connection: close) and must get the
 * index; returns the certificate it was shown. */
static char tls_get_index_once(SSL_CTX *ctx, const char *what)
{
    struct conn c;
    struct response r;
    char name;

    conn_open_tls(&c, ctx, NULL, what);
    name = peer_cert_name(c.ssl);
    conn_get(&c, "/", true, &r, what);
    assert_index(&r, what);
    response_free(&r);
    conn_close(&c);
    return name;
}

/* ---- one daemon, http handler: an ssl and a plain listener ---- */

START_TEST(test_tls_get_index_negotiates_alpn_http11)
{
    static const struct {
        const unsigned char *wire;
        size_t len;
        const char *offer;
    } offers[] = {
        { alpn_http11, sizeof(alpn_http11) - 1, "ALPN offer http/1.1" },
        { alpn_h2_http11, sizeof(alpn_h2_http11) - 1, "ALPN offer h2, http/1.1" },
    };
    SSL_CTX *ctx;
    struct conn c;
    struct response r;
    const unsigned char *sel = NULL;
    unsigned sel_len = 0;
    const char *what = offers[_i].offer;

    require_site();
    ctx = client_ctx_new(offers[_i].wire, offers[_i].len, 0);
    conn_open_tls(&c, ctx, NULL, what);
    SSL_get0_alpn_selected(c.ssl, &sel, &sel_len);
    ck_assert_msg(sel_len == 8 && memcmp(sel, "http/1.1", 8) == 0,
                  "%s: the server selected \"%s\", want \"http/1.1\"", what,
                  sel ? tu_show(sel, sel_len) : "(no ALPN)");
    ck_assert_msg(peer_cert_name(c.ssl) == 'A', "%s: the server showed a certificate other "
                  "than the configured one", what);
    /* Two requests: keep-alive works over TLS too. */
    for (int i = 0; i < 2; i++) {
        conn_get(&c, "/", false, &r, what);
        assert_index(&r, what);
        ck_assert_msg(!r.conn_close, "%s: request %d answered with Connection: close:\n%s", what,
                      i + 1, r.head);
        response_free(&r);
    }
    conn_close(&c);
    SSL_CTX_free(ctx);
}
END_TEST

START_TEST(test_tls_and_plain_listeners_serve_at_the_same_time)
{
    SSL_CTX *ctx;
    struct conn t, p;
    struct response r;

    require_site();
    ctx = client_ctx_new(alpn_http11, sizeof(alpn_http11) - 1, 0);
    conn_open_tls(&t, ctx, NULL, "TLS connection");
    conn_open_plain(&p, the_site.d.port);
    /* Interleaved on two open connections, one of each kind. */
    for (int i = 0; i < 3; i++) {
        conn_get(&t, "/", false, &r, "TLS on the ssl listener");
        assert_index(&r, "TLS on the ssl listener");
        response_free(&r);
        conn_get(&p, "/", false, &r, "plain HTTP on the plain listener");
        assert_index(&r, "plain HTTP on the plain listener");
        response_free(&r);
    }
    conn_close(&t);
    conn_close(&p);
    SSL_CTX_free(ctx);
}
END_TEST

START_TEST(test_curl_over_tls_verifies_and_gets_index)
{
    char url[64], resolve[64], body_path[PATH_MAX + 32], out[256], body[4096];
    const char *argv[] = { "curl", "-sS", "--max-time", "5", "--cacert", pem.a_cert,
                           "--resolve", resolve, "-o", body_path,
                           "-w", "%{http_code} %{http_version} %{ssl_verify_result}", url, NULL };

    require_site();
    snprintf(url, sizeof(url), "https://localhost:%u/", tls_site.port);
    snprintf(resolve, sizeof(resolve), "localhost:%u:127.0.0.1", tls_site.port);
    snprintf(body_path, sizeof(body_path), "%s/curl-%d.body", suite.dir, (int)getpid());
    if (!tu_run_curl(argv, suite.dir, out, sizeof(out), CHILD_TIMEOUT_SEC, site_log_tail()))
        return;
    ck_assert_msg(strcmp(out, "200 1.1 0") == 0,
                  "curl %s: want `200 1.1 0` (status, HTTP version, verify result), got `%s`",
                  url, out);
    tu_read_file(body_path, body, sizeof(body));
    ck_assert_msg(strlen(body) == index_len && memcmp(body, index_body, index_len) == 0,
                  "curl %s: got %s", url, tu_show(body, strlen(body)));
}
END_TEST

/* The pid of the worker that served the status page body: the one worker
 * with a connection open (this one; the test's earlier ones are closed).
 * 0 if that is not clear-cut. */
static pid_t serving_worker(const char *body)
{
    static const char metric[] = "preforkd_worker_connections_active{";
    pid_t found = 0;
    int busy = 0;

    for (const char *p = strstr(body, metric); p != NULL; p = strstr(p + 1, metric)) {
        const char *pid_at = strstr(p, "pid=\""), *close_brace = strchr(p, '}');
        long value;

        if (pid_at == NULL || close_brace == NULL || pid_at > close_brace)
            continue;
        value = strtol(close_brace + 1, NULL, 10);
        if (value >= 1) {
            busy++;
            found = (pid_t)atoi(pid_at + 5);
        }
    }
    return busy == 1 ? found : 0;
}

/* SIGSTOPs worker pid and waits (bounded) until it is stopped: the other
 * one then takes every new connection from the shared listener. */
static void worker_pause(pid_t pid)
{
    double deadline = tu_now() + 2.0;
    struct tu_proc_stat st;

    ck_assert_int_eq(kill(pid, SIGSTOP), 0);
    while (tu_proc_stat(pid, &st) && st.state != 'T' && tu_now() < deadline)
        usleep(2000);
    ck_assert_msg(tu_proc_stat(pid, &st) && st.state == 'T', "worker %d did not stop", (int)pid);
}

/* n new connections resuming sess, each of which must report a resumed
 * session and be served (says the status page) by worker expect. */
static void assert_resumed_on(SSL_CTX *ctx, SSL_SESSION *sess, int version, pid_t expect, int n,
                              const char *vname)
{
    int attributed = 0;
    struct conn c;
    struct response r;
    char what[160];

    for (int i = 0; i < n; i++) {
        pid_t pid;

        snprintf(what, sizeof(what), "%s: resumed connection %d while only worker %d runs", vname,
                 i + 1, (int)expect);
        conn_open_tls(&c, ctx, sess, what);
        ck_assert_msg(SSL_session_reused(c.ssl) == 1, "%s: a full handshake, not a resumption",
                      what);
        ck_assert_int_eq(SSL_version(c.ssl), version);
        conn_get(&c, "/status", true, &r, what);
        ck_assert_msg(r.status == 200, "%s: GET /status: %d", what, r.status);
        pid = serving_worker(r.body);
        ck_assert_msg(pid == 0 || pid == expect, "%s: served by worker %d", what, (int)pid);
        attributed += pid == expect;
        response_free(&r);
        /* Closed on the server's side before the next one counts. */
        ck_assert_msg(conn_wait_close(&c, IO_TIMEOUT_SEC), "%s: still open after "
                      "Connection: close", what);
        conn_close(&c);
    }
    ck_assert_msg(attributed > 0, "%s: the status page never showed worker %d serving", vname,
                  (int)expect);
    /* Room for its close callbacks (run from the loop) before it stops. */
    usleep(100000);
}

/* The session of a full handshake resumes on either worker: the full one
 * while worker 1 is stopped (so worker 0 does it), then RESUME_EACH resumed
 * connections while only worker 1 runs, then RESUME_EACH while only worker
 * 0 does. _i: 0 TLS 1.3 (a ticket), 1 TLS 1.2 (an RFC 5077 ticket). */
START_TEST(test_session_resumes_on_every_new_connection_whichever_worker)
{
    const int version = _i == 0 ? TLS1_3_VERSION : TLS1_2_VERSION;
    const char *vname = _i == 0 ? "TLSv1.3" : "TLSv1.2";
    SSL_CTX *ctx;
    SSL_SESSION *sess;
    struct conn c;
    struct response r;
    pid_t w[MAX_PIDS], pid;
    int n;

    require_site();
    n = worker_pids(w);
    ck_assert_msg(n == N_WORKERS, "%d workers (%s), want %d", n, show_pids(w, n), N_WORKERS);
    ctx = client_ctx_new(alpn_http11, sizeof(alpn_http11) - 1, _i == 0 ? 0 : TLS1_2_VERSION);

    worker_pause(w[1]);
    conn_open_tls(&c, ctx, NULL, "the full handshake");
    ck_assert_int_eq(SSL_version(c.ssl), version);
    ck_assert_msg(!SSL_session_reused(c.ssl), "the first handshake reports a reused session");
    /* A response read, so that TLS 1.3's NewSessionTicket has come too. */
    conn_get(&c, "/status", true, &r, "the full handshake");
    ck_assert_int_eq(r.status, 200);
    pid = serving_worker(r.body);
    ck_assert_msg(pid == 0 || pid == w[0], "the full handshake: served by %d, not %d", (int)pid,
                  (int)w[0]);
    response_free(&r);
    sess = SSL_get1_session(c.ssl);
    ck_assert_msg(sess != NULL && SSL_SESSION_is_resumable(sess),
                  "%s: the server gave no resumable session (no ticket?)", vname);
    ck_assert(conn_wait_close(&c, IO_TIMEOUT_SEC));
    conn_close(&c);
    usleep(100000);

    ck_assert_int_eq(kill(w[1], SIGCONT), 0);
    worker_pause(w[0]);
    assert_resumed_on(ctx, sess, version, w[1], RESUME_EACH, vname);
    ck_assert_int_eq(kill(w[0], SIGCONT), 0);
    worker_pause(w[1]);
    assert_resumed_on(ctx, sess, version, w[0], RESUME_EACH, vname);
    ck_assert_int_eq(kill(w[1], SIGCONT), 0);
    SSL_SESSION_free(sess);
    SSL_CTX_free(ctx);
}
END_TEST

/* Bytes of a ClientHello that stops early: a handshake record announcing
 * 512 bytes, a ClientHello announcing 508, its version and part of random. */
static const unsigned char truncated_hello[] = {
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    0x5a, 0x17, 0x8c, 0x21, 0x90, 0x3e, 0x44, 0x0b, 0xd2, 0x61, 0x7f, 0x02,
};
/* A complete handshake record whose message is of no type TLS knows. */
static const unsigned char junk_record[] = {
    0x16, 0x03, 0x01, 0x00, 0x10, 0xee, 0x00, 0x00, 0x0c, 0xee, 0xee, 0xee, 0xee,
    0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
};

static const struct bad_client {
    const char *name;
    const void *data;
    size_t len;
    bool fin;           /* the client shuts down its side after the bytes */
    bool stalls;        /* only the server's timeout can end it */
} bad_clients[] = {
    { "plain \"GET / HTTP/1.1\" on the TLS port", "GET / HTTP/1.1\r\n\r\n", 18, false, false },
    { "a client that connects and sends nothing", NULL, 0, false, true },
    { "a truncated ClientHello, then silence", truncated_hello, sizeof(truncated_hello), false,
      true },
    { "a truncated ClientHello, then FIN", truncated_hello, sizeof(truncated_hello), true, false },
    { "a handshake record of junk", junk_record, sizeof(junk_record), false, false },
};

START_TEST(test_bad_client_on_tls_port_costs_only_its_connection)
{
    const struct bad_client *b = &bad_clients[_i];
    const double limit = b->stalls ? HEADER_TIMEOUT_SEC + BAD_CLOSE_MARGIN_SEC : BAD_CLOSE_FAST_SEC;
    static char added[OUTPUT_MAX];
    pid_t before[MAX_PIDS], after[MAX_PIDS];
    int n_before, n_after, lines;
    struct conn kept[2], bad;
    struct response r;
    SSL_CTX *ctx;
    off_t log_start;
    double start, took;
    char what[160];

    require_site();
    ctx = client_ctx_new(alpn_http11, sizeof(alpn_http11) - 1, 0);
    n_before = worker_pids(before);
    ck_assert_msg(n_before == N_WORKERS, "%d workers before, want %d", n_before, N_WORKERS);
    /* Two kept-alive connections that must outlive the bad one. */
    for (int i = 0; i < 2; i++) {
        conn_open_tls(&kept[i], ctx, NULL, "a kept-alive connection");
        conn_get(&kept[i], "/", false, &r, "a kept-alive connection");
        assert_index(&r, "a kept-alive connection");
        response_free(&r);
    }
    log_start = tu_file_size(the_site.d.log);

    start = tu_now();
    conn_open_plain(&bad, tls_site.port);
    if (b->len > 0)
        ck_assert(conn_send(&bad, b->data, b->len));
    if (b->fin)
        ck_assert_int_eq(shutdown(bad.fd, SHUT_WR), 0);
    if (b->stalls)
        /* While it hangs there, others are served. */
        for (int i = 0; i < 3; i++) {
            snprintf(what, sizeof(what), "a TLS client while %s is open", b->name);
            tls_get_index_once(ctx, what);
        }
    ck_assert_msg(conn_wait_close(&bad, limit - (tu_now() - start)),
                  "%s: the connection is still open %.1f s after it came; the server sent: %s",
                  b->name, tu_now() - start, tu_show(bad.buf, bad.len));
    took = tu_now() - start;
    conn_close(&bad);

    for (int i = 0; i < 2; i++) {
        snprintf(what, sizeof(what), "kept-alive connection %d after %s", i + 1, b->name);
        conn_get(&kept[i], "/", false, &r, what);
        assert_index(&r, what);
        response_free(&r);
        conn_close(&kept[i]);
    }
    for (int i = 0; i < GOOD_AFTER_BAD; i++) {
        snprintf(what, sizeof(what), "TLS client %d after %s", i + 1, b->name);
        tls_get_index_once(ctx, what);
    }
    n_after = worker_pids(after);
    ck_assert_msg(n_after == n_before && memcmp(before, after, sizeof(pid_t) * (size_t)n_after) == 0,
                  "%s: workers were %s, are %s\n%s", b->name, show_pids(before, n_before),
                  show_pids(after, n_after), site_log_tail());
    /* Room for a line about it to come out. */
    usleep(200000);
    tu_read_file_from(the_site.d.log, log_start, added, sizeof(added));
    lines = count_lines(added);
    ck_assert_msg(lines <= 1, "%s (closed after %.2f s): %d log lines for one bad connection:\n%s",
                  b->name, took, lines, added);
    SSL_CTX_free(ctx);
}
END_TEST

/* ---- one daemon, echo handler ---- */

/* Sends len bytes of data on c and wants them back within the socket
 * timeout. */
static void assert_echoed(struct conn *c, const void *data, size_t len, const char *what)
{
    ck_assert_msg(conn_send(c, data, len), "%s: sending %zu bytes failed: %s", what, len,
                  ssl_errors());
    while (c->len < len) {
        int rc = conn_fill(c);

        ck_assert_msg(rc > 0, "%s: %zu of %zu bytes came back, then %s\n%s", what, c->len, len,
                      rc == 0 ? "the connection closed" : "nothing more in time", site_log_tail());
    }
    ck_assert_msg(c->len == len && memcmp(c->buf, data, len) == 0,
                  "%s: %zu bytes came back, not the %zu sent: %s", what, c->len, len,
                  tu_show(c->buf, c->len));
    c->len = 0;
}

START_TEST(test_echo_round_trip_over_tls)
{
    static const char line[] = "hello from check_tls_daemon, over TLS\r\n";
    static unsigned char big[ECHO_BIG];
    SSL_CTX *ctx;
    struct conn t[2];
    int fd;

    require_site();
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)((i * 2654435761u) >> 24);
    ctx = client_ctx_new(NULL, 0, 0);
    /* Two at once, interleaved. */
    for (int i = 0; i < 2; i++) {
        conn_open_tls(&t[i], ctx, NULL, "echo over TLS");
        ck_assert(peer_cert_name(t[i].ssl) == 'A');
    }
    for (int i = 0; i < 2; i++)
        assert_echoed(&t[i], line, strlen(line), "a line over TLS");
    for (int i = 0; i < 2; i++)
        assert_echoed(&t[i], big, sizeof(big), "64 KiB over TLS");
    assert_echoed(&t[0], "x", 1, "one byte over TLS");
    for (int i = 0; i < 2; i++)
        conn_close(&t[i]);
    /* The plain listener of the same daemon echoes too. */
    fd = tu_connect_tcp("127.0.0.1", the_site.d.port);
    ck_assert_int_ge(fd, 0);
    ck_assert_msg(tu_echo_exchange(fd, line, strlen(line), IO_TIMEOUT_SEC),
                  "no echo on the plain listener");
    close(fd);
    SSL_CTX_free(ctx);
}
END_TEST

/* ---- one daemon, http handler, reloaded ---- */

START_TEST(test_hup_rotates_certificate_and_kept_connection_still_answers)
{
    SSL_CTX *ctx;
    struct conn kept;
    struct response r;
    pid_t old[MAX_PIDS], now_pids[MAX_PIDS];
    int n_old, n_now, n_new_conns = 0, n_kept = 0, n_a_after_b = 0;
    double deadline, next_kept, seen_b_at = 0, hup_at;
    bool drained = false;
    char what[160];

    require_site();
    ctx = client_ctx_new(alpn_http11, sizeof(alpn_http11) - 1, 0);
    ck_assert_msg(tls_get_index_once(ctx, "before the reload") == 'A',
                  "before the reload the server does not show certificate A");
    n_old = worker_pids(old);
    ck_assert_int_eq(n_old, N_WORKERS);
    conn_open_tls(&kept, ctx, NULL, "the kept-alive connection");
    ck_assert(peer_cert_name(kept.ssl) == 'A');
    conn_get(&kept, "/", false, &r, "the kept-alive connection");
    assert_index(&r, "the kept-alive connection");
    response_free(&r);

    /* Renewed in place, as certbot and friends do. */
    install_file(pem.b_cert, tls_site.cert);
    install_file(pem.b_key, tls_site.key);
    hup_at = tu_now();
    ck_assert_int_eq(kill(the_site.d.pid, SIGHUP), 0);
    deadline = hup_at + RELOAD_TIMEOUT_SEC;
    next_kept = hup_at + KEEP_WARM_SEC;
    /* New connections until they show B, and the kept one answering every
     * KEEP_WARM_SEC until a draining worker answers it (Connection: close). */
    while (!(seen_b_at > 0 && drained) && tu_now() < deadline) {
        char name;

        snprintf(what, sizeof(what), "new connection %d after HUP", ++n_new_conns);
        name = tls_get_index_once(ctx, what);
        ck_assert_msg(name == 'A' || name == 'B', "%s: a certificate neither A nor B", what);
        if (name == 'B' && seen_b_at == 0)
            seen_b_at = tu_now();
        n_a_after_b += name == 'A' && seen_b_at > 0;
        if (!drained && tu_now() >= next_kept) {
            snprintf(what, sizeof(what), "request %d on the kept-alive connection, %.2f s "
                     "after HUP%s", ++n_kept, tu_now() - hup_at, seen_b_at > 0 ? ", B seen" : "");
            conn_get(&kept, "/", false, &r, what);
            assert_index(&r, what);
            drained = r.conn_close;
            response_free(&r);
            next_kept = tu_now() + KEEP_WARM_SEC;
        }
        usleep((useconds_t)(POLL_SEC * 1e6));
    }
    ck_assert_msg(seen_b_at > 0, "no new connection showed certificate B within %.0f s of HUP "
                  "(%d tried)\n%s", RELOAD_TIMEOUT_SEC, n_new_conns, site_log_tail());
    ck_assert_msg(drained, "the kept-alive connection answered %d requests in %.0f s after HUP, "
                  "none with Connection: close from its draining worker\n%s", n_kept,
                  RELOAD_TIMEOUT_SEC, site_log_tail());
    ck_assert_msg(peer_cert_name(kept.ssl) == 'A', "the kept connection's certificate changed");
    ck_assert_msg(conn_wait_close(&kept, 2.0), "the kept-alive connection stayed open after its "
                  "Connection: close answer");
    conn_close(&kept);

    for (int i = 0; i < 6; i++) {
        snprintf(what, sizeof(what), "new connection %d after the reload", i + 1);
        ck_assert_msg(tls_get_index_once(ctx, what) == 'B', "%s: not certificate B", what);
    }
    /* The old generation, with nothing left to serve, is gone soon. */
    deadline = tu_now() + GRACEFUL_TIMEOUT_SEC;
    for (;;) {
        bool any_old = false;

        n_now = worker_pids(now_pids);
        for (int i = 0; i < n_old; i++)
            any_old |= tu_pid_in(old[i], now_pids, n_now);
        if (!any_old && n_now == N_WORKERS)
            break;
        ck_assert_msg(tu_now() < deadline, "workers %s %.0f s after the reload (old ones: %s)",
                      show_pids(now_pids, n_now), (double)GRACEFUL_TIMEOUT_SEC, show_pids(old, n_old));
        usleep(20000);
    }
    SSL_CTX_free(ctx);
}
END_TEST

/* What a reload is given in place of good files, and what the log must say. */
static const struct bad_reload {
    const char *name;
    const char *cert;           /* installed as [tls] certificate; "" keep, NULL remove */
    const char *key;            /* installed as [tls] key; "" keep */
    bool names_key;             /* the message names the key file (else the certificate) */
    const char *reason;         /* and says this */
} bad_reloads[] = {
    { "a key that matches neither certificate", "", pem.other_key, true, "does not match" },
    { "a key file of junk", "", pem.junk_key, true, "" },
    { "an expired certificate", pem.old_cert, pem.old_key, false, "has expired" },
    { "a missing certificate file", NULL, "", false, "" },
};

START_TEST(test_hup_with_bad_tls_files_logs_them_and_keeps_serving)
{
    const struct bad_reload *b = &bad_reloads[_i];
    static char log[OUTPUT_MAX];
    pid_t before[MAX_PIDS], after[MAX_PIDS];
    int n_before, n_after;
    SSL_CTX *ctx;
    off_t start;
    char current, what[160];
    const char *line, *named;

    require_site();
    if (b->cert != NULL && b->cert == pem.old_cert && !pem.have_old) {
        fprintf(stderr, "check_tls_daemon: note: no expired certificate could be made: "
                "skipping \"HUP with %s\"\n", b->name);
        return;
    }
    ctx = client_ctx_new(alpn_http11, sizeof(alpn_http11) - 1, 0);
    current = tls_get_index_once(ctx, "before the reload");
    ck_assert_msg(current == 'A' || current == 'B', "serving neither A nor B");
    n_before = worker_pids(before);
    start = tu_file_size(the_site.d.log);
    if (b->cert == NULL || b->cert[0] != '\0')
        install_file(b->cert, tls_site.cert);
    if (b->key[0] != '\0')
        install_file(b->key, tls_site.key);
    ck_assert_int_eq(kill(the_site.d.pid, SIGHUP), 0);
    ck_assert_msg(log_wait_for(start, "reload failed", log, sizeof(log), RELOAD_TIMEOUT_SEC),
                  "HUP with %s: no \"reload failed\" in the log within %.0f s; it says:\n%s",
                  b->name, RELOAD_TIMEOUT_SEC, log);
    line = strstr(log, "reload failed");
    named = b->names_key ? tls_site.key : tls_site.cert;
    ck_assert_msg(strstr(line, named) != NULL && strstr(line, b->reason) != NULL,
                  "HUP with %s: the log does not name %s%s%s%s:\n%s", b->name, named,
                  b->reason[0] ? " and say \"" : "", b->reason, b->reason[0] ? "\"" : "", log);
    for (int i = 0; i < 6; i++) {
        snprintf(what, sizeof(what), "new connection %d after HUP with %s", i + 1, b->name);
        ck_assert_msg(tls_get_index_once(ctx, what) == current,
                      "%s: not the certificate served before (%c)", what, current);
    }
    n_after = worker_pids(after);
    ck_assert_msg(n_after == n_before && memcmp(before, after, sizeof(pid_t) * (size_t)n_after) == 0,
                  "HUP with %s: the workers were %s, are %s", b->name,
                  show_pids(before, n_before), show_pids(after, n_after));
    /* Good files again for the next case. */
    install_file(current == 'A' ? pem.a_cert : pem.b_cert, tls_site.cert);
    install_file(current == 'A' ? pem.a_key : pem.b_key, tls_site.key);
    SSL_CTX_free(ctx);
}
END_TEST

/* ---- preforkd -t ---- */

/* src into dst (size bytes), cut to fit. */
static void copy_text(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Runs `preforkd -t` on a config with cert and key; its exit status, with
 * its stdout and stderr in out and err. */
static int run_config_test(const char *cert, const char *key, char *out, size_t out_size,
                           char *err, size_t err_size)
{
    static struct du_command c;
    char dir[PATH_MAX], conf[PATH_MAX + 32];
    const char *args[] = { "-t", "-c", conf, NULL };

    tu_path(dir, sizeof(dir), suite.dir, "t-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(conf, sizeof(conf), "%s/preforkd.conf", dir);
    ck_assert(write_conf(conf, HANDLER_HTTP, 8443, 8080, cert, key));
    du_run(&suite, dir, &c, args, CHILD_TIMEOUT_SEC);
    copy_text(out, out_size, c.out);
    copy_text(err, err_size, c.err);
    ck_assert_msg(c.status != -1, "preforkd -t ran over %.0f s", CHILD_TIMEOUT_SEC);
    ck_assert_msg(WIFEXITED(c.status), "preforkd -t: status 0x%x:\n%s", (unsigned)c.status, err);
    return WEXITSTATUS(c.status);
}

START_TEST(test_t_valid_certificate_passes_without_warning)
{
    char out[4096], err[4096];
    int rc = run_config_test(pem.a_cert, pem.a_key, out, sizeof(out), err, sizeof(err));

    ck_assert_msg(rc == 0, "preforkd -t with certificate A: exit %d:\n%s", rc, err);
    ck_assert_msg(strstr(out, "test is successful") != NULL, "stdout: %s", out);
    ck_assert_msg(strstr(err, "expires") == NULL, "a 30-day certificate got a warning: %s", err);
}
END_TEST

START_TEST(test_t_certificate_expiring_in_2_days_warns_and_passes)
{
    char out[4096], err[4096];
    int rc = run_config_test(pem.soon_cert, pem.soon_key, out, sizeof(out), err, sizeof(err));

    ck_assert_msg(rc == 0, "preforkd -t with a 2-day certificate: exit %d:\n%s", rc, err);
    ck_assert_msg(strstr(err, "expires within 14 days") != NULL && strstr(err, pem.soon_cert),
                  "preforkd -t with a 2-day certificate: stderr does not say it expires within "
                  "14 days, naming %s:\n%s", pem.soon_cert, err);
}
END_TEST

START_TEST(test_t_mismatched_key_fails_naming_it)
{
    char out[4096], err[4096];
    int rc = run_config_test(pem.a_cert, pem.other_key, out, sizeof(out), err, sizeof(err));

    ck_assert_msg(rc == 1, "preforkd -t with a key of no certificate: exit %d:\n%s", rc, err);
    ck_assert_msg(strstr(err, pem.other_key) != NULL && strstr(err, "does not match") != NULL,
                  "preforkd -t: stderr does not name %s and say \"does not match\":\n%s",
                  pem.other_key, err);
}
END_TEST

START_TEST(test_t_missing_certificate_fails_naming_it)
{
    char out[4096], err[4096], missing[PATH_MAX + 32];
    int rc;

    snprintf(missing, sizeof(missing), "%s/no-such.crt", pem.dir);
    rc = run_config_test(missing, pem.a_key, out, sizeof(out), err, sizeof(err));
    ck_assert_msg(rc == 1, "preforkd -t with a missing certificate: exit %d:\n%s", rc, err);
    ck_assert_msg(strstr(err, missing) != NULL, "preforkd -t: stderr does not name %s:\n%s",
                  missing, err);
}
END_TEST

START_TEST(test_t_expired_certificate_fails)
{
    char out[4096], err[4096];
    int rc;

    if (!pem.have_old) {
        fprintf(stderr, "check_tls_daemon: note: no expired certificate could be made: "
                "skipping the -t case\n");
        return;
    }
    rc = run_config_test(pem.old_cert, pem.old_key, out, sizeof(out), err, sizeof(err));
    ck_assert_msg(rc == 1, "preforkd -t with an expired certificate: exit %d:\n%s", rc, err);
    ck_assert_msg(strstr(err, pem.old_cert) != NULL && strstr(err, "has expired") != NULL,
                  "preforkd -t: stderr does not name %s and say \"has expired\":\n%s",
                  pem.old_cert, err);
}
END_TEST

/* ---- suite ---- */

static TCase *site_tcase(Suite *s, const char *name, void (*start)(void))
{
    return du_add_site_tcase(s, name, TCASE_TIMEOUT_SEC, start, site_stop, test_setup,
                             test_teardown);
}

static Suite *tls_daemon_suite(void)
{
    Suite *s = suite_create("tls_daemon");
    TCase *tc = site_tcase(s, "http_ssl_and_plain", site_start_http);

    tcase_add_loop_test(tc, test_tls_get_index_negotiates_alpn_http11, 0, 2);
    tcase_add_test(tc, test_tls_and_plain_listeners_serve_at_the_same_time);
    tcase_add_test(tc, test_curl_over_tls_verifies_and_gets_index);
    tcase_add_loop_test(tc, test_session_resumes_on_every_new_connection_whichever_worker, 0, 2);
    tcase_add_loop_test(tc, test_bad_client_on_tls_port_costs_only_its_connection, 0,
                        (int)(sizeof(bad_clients) / sizeof(bad_clients[0])));

    tc = site_tcase(s, "echo_ssl", site_start_echo);
    tcase_add_test(tc, test_echo_round_trip_over_tls);

    tc = site_tcase(s, "reload", site_start_http);
    tcase_add_test(tc, test_hup_rotates_certificate_and_kept_connection_still_answers);
    tcase_add_loop_test(tc, test_hup_with_bad_tls_files_logs_them_and_keeps_serving, 0,
                        (int)(sizeof(bad_reloads) / sizeof(bad_reloads[0])));

    tc = tu_add_tcase(s, "config_test", TCASE_TIMEOUT_SEC);
    tcase_add_test(tc, test_t_valid_certificate_passes_without_warning);
    tcase_add_test(tc, test_t_certificate_expiring_in_2_days_warns_and_passes);
    tcase_add_test(tc, test_t_mismatched_key_fails_naming_it);
    tcase_add_test(tc, test_t_missing_certificate_fails_naming_it);
    tcase_add_test(tc, test_t_expired_certificate_fails);
    return s;
}

int main(void)
{
    int failed;

    if (!du_suite_begin(&suite, "check_tls_daemon", true))
        return EXIT_FAILURE;
    snprintf(pem.dir, sizeof(pem.dir), "%s/pem", suite.dir);
    if (mkdir(pem.dir, 0700) != 0 || !make_pems() || !make_www()) {
        fprintf(stderr, "check_tls_daemon: could not make the certificates or the document "
                "root in %s\n", suite.dir);
        tu_rmtree(suite.dir);
        return EXIT_FAILURE;
    }
    failed = tu_run_suite(tls_daemon_suite());
    return du_suite_end(&suite, failed);
}
