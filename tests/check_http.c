/*
 * check_http: the http handler (`handler = http`) as a client sees it. Each
 * tcase runs the built daemon ($PREFORKD, default build/preforkd, from the
 * repo root) once, as `preforkd -f -c <temp conf>` serving a generated
 * document root on loopback, and its tests talk to it over raw sockets so
 * that they control every byte sent and look at every byte received:
 * status lines, headers, bodies, where a connection ends, and the access
 * log and /status page an operator reads. A few tests use curl, to catch
 * what a real client trips over.
 *
 * The daemon is started by an unchecked fixture in the runner process, so
 * it outlives the forked tests; its master runs in a process group of its
 * own (teardown signals it by pid) and dies with the runner
 * (PR_SET_PDEATHSIG). The runner is a child subreaper, so workers orphaned
 * by a dead master are reaped too. A checked teardown fails the test after
 * which a worker died or a sanitizer reported.
 */
#define _GNU_SOURCE     /* memmem, strptime, timegm */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <regex.h>
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

#include "prefork.h"
#include "daemonutil.h"
#include "testutil.h"

#define TCASE_TIMEOUT_SEC 30
/* A daemon that does not accept connections by then failed to start. */
#define READY_TIMEOUT_SEC 5.0
/* Teardown: SIGTERM first, SIGKILL after this (graceful_timeout is 2 s). */
#define STOP_GRACE_SEC 3.0
/* A response, or the rest of one, that takes longer is missing. */
#define RESPONSE_TIMEOUT_SEC 5.0
/* A connection the server must close right after a response is closed
 * within this: shorter than header_timeout (1 s) and idle_timeout (2 s), so
 * that neither timeout can pass for the close we are looking for. */
#define CLOSE_WAIT_SEC 0.8
/* A body the server refuses (over its 1 MiB discard limit), sent all the same. */
#define LINGER_BODY_SIZE (4 * 1024 * 1024)
/* After the client's FIN, the lingering server closes at once. */
#define LINGER_CLOSE_SEC 1.0
/* Timeouts of the config under test, and the windows the tests accept. */
#define HEADER_TIMEOUT_SEC 1
#define IDLE_TIMEOUT_SEC 2
#define SLOW_CLOSE_MIN_SEC 0.8
#define SLOW_CLOSE_MAX_SEC 2.5
#define SLOW_BYTE_INTERVAL_SEC 0.2
#define IDLE_CLOSE_MIN_SEC 1.5
#define IDLE_CLOSE_MAX_SEC 4.0
/* A file changed on disk is served in its new version within this. */
#define FRESH_TIMEOUT_SEC 3.0
/* After the first fresh answer, the other workers get this long to catch
 * up; then FRESH_ROUNDS requests on new connections must all be fresh. */
#define FRESH_SETTLE_SEC 1.5
#define FRESH_ROUNDS 8
/* Access log lines and counters may trail the response by this much. */
#define LOG_POLL_SEC 2.0
#define CURL_TIMEOUT_SEC 10.0
/* Largest thing a test reads at once: big.bin plus its head, with room. */
#define CONN_BUF_SIZE (1024 * 1024)
#define MAX_HEADERS 64
#define HEADER_NAME_MAX 64
#define HEADER_VALUE_MAX 512
#define HEAD_MAX 8192
#define BIG_SIZE 65536
/* Enough for any daemon log or status page a test looks at. */
#define OUTPUT_MAX 65536
/* The date format of Date, Last-Modified and If-Modified-Since (RFC 9110
 * IMF-fixdate), for strftime and strptime in the C locale. */
#define IMF_FIXDATE "%a, %d %b %Y %H:%M:%S GMT"
/* A fixed mtime for the served files, so that an older If-Modified-Since
 * date is easy to write: Mon, 06 May 2024 07:08:09 GMT. */
#define FILE_MTIME ((time_t)1714979289)
#define SECRET "OUTSIDE-SECRET-c4e1b7d2"
#define LOCKED_TEXT "LOCKED-CONTENT-92ab\n"

/* Set up by main(). */
static struct du_suite suite;

/* What the document root holds, built by main() before any fork. */
static char index_body[1024];
static size_t index_len;
static const char sub_body[] = "<!DOCTYPE html>\n<title>sub</title>\n<p>the index of sub/</p>\n";
static const char space_body[] = "a file with a space in its name\n";
static unsigned char big_body[BIG_SIZE];

/* The daemon of the running tcase; set by the unchecked setup in the runner,
 * read by the tests forked after it. */
static struct du_site the_site;
/* Its temp dir (www/ is the root) and its access log. */
static char site_dir[PATH_MAX];
static char access_log[PATH_MAX];

/* ---- text helpers ---- */

static const char *shows(const char *s)
{
    return tu_show(s, strlen(s));
}

static bool matches(const char *pattern, const char *text, int cflags)
{
    regex_t re;
    int rc;

    ck_assert_msg(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB | cflags) == 0,
                  "bad regex %s", pattern);
    rc = regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    return rc == 0;
}

static bool is_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* ---- the document root ---- */

static void make_contents(void)
{
    size_t n = (size_t)snprintf(index_body, sizeof(index_body),
                                "<!DOCTYPE html>\n<html><head><title>preforkd check_http</title>"
                                "</head>\n<body>\n");

    for (int i = 0; n < 560; i++)
        n += (size_t)snprintf(index_body + n, sizeof(index_body) - n,
                              "<p>line %02d of the index page</p>\n", i);
    n += (size_t)snprintf(index_body + n, sizeof(index_body) - n, "</body></html>\n");
    index_len = n;
    /* Repeats only after 251 * 256 bytes: a misplaced range shows. */
    for (size_t i = 0; i < sizeof(big_body); i++)
        big_body[i] = (unsigned char)(i + i / 251);
}

static void site_path(char *buf, size_t size, const char *name)
{
    tu_path(buf, size, site_dir, name);
}

static void write_site_file(const char *name, const void *data, size_t len, mode_t mode)
{
    char path[PATH_MAX];
    struct timeval times[2] = { { FILE_MTIME, 0 }, { FILE_MTIME, 0 } };
    int fd;

    site_path(path, sizeof(path), name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
    ck_assert(tu_write_all(fd, data, len));
    ck_assert_int_eq(close(fd), 0);
    ck_assert_int_eq(chmod(path, mode), 0);
    ck_assert_int_eq(utimes(path, times), 0);
}

static void make_site_dir(const char *name)
{
    char path[PATH_MAX];

    site_path(path, sizeof(path), name);
    ck_assert_msg(mkdir(path, 0755) == 0, "%s: %s", path, strerror(errno));
    /* Workers run as nobody: whatever the umask, they must get in. */
    ck_assert_int_eq(chmod(path, 0755), 0);
}

/* site_dir/www and the secret next to it. */
static void make_site_files(void)
{
    char path[PATH_MAX];

    make_site_dir("www");
    make_site_dir("www/sub");
    make_site_dir("www/noindex");
    write_site_file("www/index.html", index_body, index_len, 0644);
    write_site_file("www/big.bin", big_body, sizeof(big_body), 0644);
    write_site_file("www/sub/index.html", sub_body, strlen(sub_body), 0644);
    write_site_file("www/noindex/other.txt", "not an index\n", 13, 0644);
    write_site_file("www/a b.txt", space_body, strlen(space_body), 0644);
    write_site_file("www/changing.txt", "version 1\n", 10, 0644);
    write_site_file("www/locked.txt", LOCKED_TEXT, strlen(LOCKED_TEXT), 0000);
    /* Readable by nobody: only the handler's checks keep it in. */
    write_site_file("outside.txt", SECRET "\n", strlen(SECRET "\n"), 0644);
    site_path(path, sizeof(path), "www/link-out");
    ck_assert_int_eq(symlink("../outside.txt", path), 0);
}

static void site_file_stat(const char *name, struct stat *st)
{
    char path[PATH_MAX], www_name[PATH_MAX];

    snprintf(www_name, sizeof(www_name), "www/%s", name);
    site_path(path, sizeof(path), www_name);
    ck_assert_int_eq(stat(path, st), 0);
}

/* ---- the daemon (runner side) ---- */

/* Unchecked setup: a fresh document root and config, and the daemon on them.
 * status_path is the [http] value ("" disables the status page). */
static void site_start(const char *status_path)
{
    struct du_daemon *d = &the_site.d;

    tu_path(site_dir, sizeof(site_dir), suite.dir, "d-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(site_dir));
    ck_assert_int_eq(chmod(site_dir, 0755), 0);
    make_site_files();
    site_path(access_log, sizeof(access_log), "access.log");
    du_init(d, site_dir, "preforkd");
    d->port = tu_free_port("127.0.0.1");
    du_write_conf(d, "[daemon]\n"
                     "workers = 2\n"
                     "user = nobody\n"
                     "graceful_timeout = 2\n"
                     "worker_timeout = 10\n"
                     "[server]\n"
                     "listen = 127.0.0.1:%u\n"
                     "handler = http\n"
                     "idle_timeout = %d\n"
                     "[http]\n"
                     "root = %s/www\n"
                     "index = index.html\n"
                     "status_path = %s\n"
                     "header_timeout = %d\n"
                     "access_log = %s\n",
                  d->port, IDLE_TIMEOUT_SEC, site_dir, status_path, HEADER_TIMEOUT_SEC,
                  access_log);
    du_site_launch(&suite, &the_site, READY_TIMEOUT_SEC);
}

static void site_start_with_status(void)
{
    site_start("/status");
}

static void site_start_without_status(void)
{
    site_start("");
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

static void test_setup(void)
{
    du_site_test_begin(&the_site);
}

static void test_teardown(void)
{
    du_site_test_end(&the_site);
}

/* The last part of the daemon's log, for messages. */
static const char *site_log_tail(void)
{
    return du_log_tail(&the_site.d);
}

/* ---- a raw HTTP client ---- */

struct conn {
    int fd;
    char *buf;          /* received and not yet consumed */
    size_t len;
    bool eof;           /* the peer closed: FIN or reset */
    int err;            /* errno of the read or send that failed, 0 if none */
};

struct header {
    char name[HEADER_NAME_MAX];
    char value[HEADER_VALUE_MAX];
};

struct response {
    int status;
    bool head_request;          /* the answer to a HEAD: no body */
    char head[HEAD_MAX];        /* status line and headers as received, for messages */
    struct header headers[MAX_HEADERS];
    int n_headers;
    unsigned char *body;        /* malloc'd, NUL-terminated; response_free() */
    size_t body_len;
};

static void conn_open(struct conn *c)
{
    struct timeval send_timeout = { 5, 0 };

    memset(c, 0, sizeof(*c));
    c->fd = tu_connect_tcp("127.0.0.1", the_site.d.port);
    ck_assert_msg(c->fd >= 0, "connect 127.0.0.1:%u: %s\n%s", the_site.d.port, strerror(-c->fd),
                  site_log_tail());
    /* A server that stops reading must not hang a test in send(). */
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
    c->buf = malloc(CONN_BUF_SIZE);
    ck_assert_ptr_nonnull(c->buf);
}

static void conn_close(struct conn *c)
{
    close(c->fd);
    free(c->buf);
    c->fd = -1;
    c->buf = NULL;
}

/* Sends all len bytes; false (with c->err) if the peer is gone. */
static bool conn_send(struct conn *c, const void *data, size_t len)
{
    if (tu_send_all(c->fd, data, len))
        return true;
    c->err = errno;
    return false;
}

static void conn_send_all(struct conn *c, const char *req)
{
    ck_assert_msg(conn_send(c, req, strlen(req)), "sending %s: %s", shows(req), strerror(c->err));
}

/* Reads what is there by deadline: 1 if bytes came, 0 at EOF or reset, -1
 * at the deadline. */
static int conn_fill(struct conn *c, double deadline)
{
    for (;;) {
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        int left_ms = (int)((deadline - tu_now()) * 1000);
        ssize_t n;
        int rc;

        if (c->eof)
            return 0;
        if (left_ms <= 0)
            return -1;
        rc = poll(&p, 1, left_ms);
        if (rc < 0 && errno == EINTR)
            continue;
        ck_assert_msg(rc >= 0, "poll: %s", strerror(errno));
        if (rc == 0)
            return -1;
        ck_assert_msg(c->len < CONN_BUF_SIZE, "over %d bytes received and not consumed",
                      CONN_BUF_SIZE);
        n = recv(c->fd, c->buf + c->len, CONN_BUF_SIZE - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0) {
            c->len += (size_t)n;
            return 1;
        }
        c->eof = true;
        c->err = n < 0 ? errno : 0;
        return 0;
    }
}

/* Waits up to timeout_sec for the peer to close; bytes that come meanwhile
 * stay in c->buf. True if it closed; *elapsed (may be NULL) says when. */
static bool conn_wait_close(struct conn *c, double timeout_sec, double *elapsed)
{
    double start = tu_now(), deadline = start + timeout_sec;
    int rc;

    while ((rc = conn_fill(c, deadline)) > 0)
        ;
    if (elapsed != NULL)
        *elapsed = tu_now() - start;
    return rc == 0;
}

static const char *header(const struct response *r, const char *name)
{
    for (int i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

static int header_count(const struct response *r, const char *name)
{
    int n = 0;

    for (int i = 0; i < r->n_headers; i++)
        n += strcasecmp(r->headers[i].name, name) == 0;
    return n;
}

static void response_free(struct response *r)
{
    free(r->body);
    r->body = NULL;
}

/* Parses "HTTP/1.x NNN reason" and the header lines of head (NUL-terminated,
 * without the blank line); NULL or what is wrong. */
static const char *parse_head(struct response *r, char *head)
{
    char *line = head, *next, *colon, *v, *end;

    next = strstr(line, "\r\n");
    if (next != NULL)
        *next = '\0';
    if (!matches("^HTTP/1\\.[01] [1-5][0-9][0-9]( .*)?$", line, 0))
        return "malformed status line";
    r->status = atoi(line + 9);
    while (next != NULL) {
        line = next + 2;
        next = strstr(line, "\r\n");
        if (next != NULL)
            *next = '\0';
        colon = strchr(line, ':');
        if (colon == NULL || colon == line)
            return "a header line without a name and colon";
        if (r->n_headers == MAX_HEADERS)
            return "too many header lines";
        if ((size_t)(colon - line) >= HEADER_NAME_MAX)
            return "a header name too long for the test";
        memcpy(r->headers[r->n_headers].name, line, (size_t)(colon - line));
        r->headers[r->n_headers].name[colon - line] = '\0';
        for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
            ;
        end = v + strlen(v);
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *end = '\0';
        if (strlen(v) >= HEADER_VALUE_MAX)
            return "a header value too long for the test";
        strcpy(r->headers[r->n_headers].value, v);
        r->n_headers++;
    }
    return NULL;
}

/* Reads one response from c into *r (answering a HEAD if head_request):
 * the head up to the blank line, then Content-Length bytes of body (none
 * for HEAD, 1xx, 204 and 304; up to EOF without Content-Length). Bytes past
 * it stay in c->buf. NULL, or what went wrong. */
static const char *conn_read_response(struct conn *c, struct response *r, bool head_request)
{
    static char why[160];
    double deadline = tu_now() + RESPONSE_TIMEOUT_SEC;
    const char *cl, *err;
    char *end;
    size_t head_len, body_len;
    int rc;

    memset(r, 0, sizeof(*r));
    r->head_request = head_request;
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL) {
        rc = conn_fill(c, deadline);
        if (rc == 0)
            return c->len > 0 ? "the connection closed inside a response head"
                              : "the connection closed without a response";
        if (rc < 0)
            return c->len > 0 ? "no end of the response head within 5 s"
                              : "no response within 5 s";
    }
    head_len = (size_t)(end - c->buf) + 4;
    if (head_len - 4 >= HEAD_MAX)
        return "a response head too long for the test";
    memcpy(r->head, c->buf, head_len - 4);
    r->head[head_len - 4] = '\0';
    {
        char copy[HEAD_MAX];

        strcpy(copy, r->head);
        if ((err = parse_head(r, copy)) != NULL)
            return err;
    }
    cl = header(r, "Content-Length");
    if (head_request || r->status == 304 || r->status == 204 || r->status / 100 == 1) {
        body_len = 0;
    } else if (cl != NULL) {
        if (!is_digits(cl))
            return "a Content-Length that is not a number";
        body_len = strtoull(cl, NULL, 10);
        if (body_len > CONN_BUF_SIZE - head_len)
            return "a Content-Length too large for the test";
    } else {
        while ((rc = conn_fill(c, deadline)) > 0)
            ;
        if (rc < 0)
            return "no Content-Length, and the connection stayed open";
        body_len = c->len - head_len;
    }
    while (c->len < head_len + body_len) {
        rc = conn_fill(c, deadline);
        if (rc <= 0) {
            snprintf(why, sizeof(why), "%s after %zu of %zu body bytes",
                     rc == 0 ? "the connection closed" : "5 s passed", c->len - head_len, body_len);
            return why;
        }
    }
    r->body = (unsigned char *)tu_take_bytes(c->buf, &c->len, head_len, body_len);
    r->body_len = body_len;
    return NULL;
}

/* What every response carries: Server, a current IMF-fixdate Date, and
 * (but for 304) one numeric Content-Length. what names the request. */
static void assert_common_headers(const struct response *r, const char *what)
{
    const char *v = header(r, "Server");
    struct tm tm;
    time_t date = 0;

    ck_assert_msg(v != NULL && strcmp(v, "preforkd/" PF_VERSION) == 0 && header_count(r, "Server") == 1,
                  "%s: want one `Server: preforkd/" PF_VERSION "`, got:\n%s", what, r->head);
    v = header(r, "Date");
    ck_assert_msg(v != NULL && header_count(r, "Date") == 1, "%s: want one Date header, got:\n%s",
                  what, r->head);
    ck_assert_msg(matches("^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
                          "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
                          "[0-9]{2}:[0-9]{2}:[0-9]{2} GMT$", v, 0),
                  "%s: Date is not an IMF-fixdate: `%s`", what, v);
    memset(&tm, 0, sizeof(tm));
    if (strptime(v, IMF_FIXDATE, &tm) != NULL)
        date = timegm(&tm);
    ck_assert_msg(llabs((long long)(date - time(NULL))) <= 5, "%s: Date `%s` is not now", what, v);
    if (r->status != 304) {
        v = header(r, "Content-Length");
        ck_assert_msg(v != NULL && header_count(r, "Content-Length") == 1 && is_digits(v),
                      "%s: want one numeric Content-Length, got:\n%s", what, r->head);
    }
}

/* Reads a response to the request req on c, failing the test naming req. */
static void expect_response(struct conn *c, struct response *r, const char *req)
{
    const char *err = conn_read_response(c, r, strncmp(req, "HEAD ", 5) == 0);

    ck_assert_msg(err == NULL, "%s: %s; received: %s", shows(req), err, tu_show(c->buf, c->len));
    assert_common_headers(r, shows(req));
}

/* req on a new connection; its response in *r. */
static void exchange(const char *req, struct response *r)
{
    struct conn c;

    conn_open(&c);
    conn_send_all(&c, req);
    expect_response(&c, r, req);
    conn_close(&c);
}

static void get(const char *target, struct response *r)
{
    char req[4096];

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target);
    exchange(req, r);
}

static void assert_status(const struct response *r, int status, const char *what)
{
    ck_assert_msg(r->status == status, "%s: want status %d, got:\n%s", what, status, r->head);
}

static void assert_header_eq(const struct response *r, const char *name, const char *want,
                             const char *what)
{
    const char *v = header(r, name);

    ck_assert_msg(v != NULL && strcmp(v, want) == 0, "%s: want `%s: %s`, got:\n%s", what, name,
                  want, r->head);
}

static void assert_body_eq(const struct response *r, const void *want, size_t len, const char *what)
{
    ck_assert_msg(r->body_len == len && memcmp(r->body, want, len) == 0,
                  "%s: want a body of %zu bytes: %s\ngot %zu bytes: %s", what, len,
                  tu_show(want, len), r->body_len, tu_show(r->body, r->body_len));
}

/* req on the open connection c; its response (in *r) must have status and,
 * unless body is NULL, exactly body. what names it in messages. */
static void exchange_on(struct conn *c, const char *req, struct response *r, int status,
                        const void *body, size_t body_len, const char *what)
{
    conn_send_all(c, req);
    expect_response(c, r, req);
    assert_status(r, status, what);
    if (body != NULL)
        assert_body_eq(r, body, body_len, what);
}

/* The Last-Modified and ETag a file must get. */
static void expected_validators(const char *name, char *last_modified, size_t lm_size,
                                char *etag, size_t etag_size)
{
    struct stat st;
    struct tm tm;

    site_file_stat(name, &st);
    gmtime_r(&st.st_mtime, &tm);
    ck_assert_uint_gt(strftime(last_modified, lm_size, IMF_FIXDATE, &tm), 0);
    snprintf(etag, etag_size, "\"%llx-%llx\"", (unsigned long long)st.st_mtime,
             (unsigned long long)st.st_size);
}

/* After bad input: a fresh connection is served as if nothing happened. */
static void assert_fresh_connection_served(const char *after)
{
    struct response r;
    char what[600];

    snprintf(what, sizeof(what), "GET / on a new connection after %s", after);
    get("/", &r);
    assert_status(&r, 200, what);
    assert_body_eq(&r, index_body, index_len, what);
    response_free(&r);
}

/* Sends req (len bytes; the peer may close before it has all of them) on a
 * new connection and wants a response with status and then the end of the
 * connection, with nothing after the response. */
static void assert_rejected_and_closed(const char *req, size_t len, int status)
{
    struct response r;
    struct conn c;
    const char *err, *what = tu_show(req, len);
    char after[700];

    conn_open(&c);
    conn_send(&c, req, len);
    err = conn_read_response(&c, &r, false);
    ck_assert_msg(err == NULL, "%s: %s (send: %s); received: %s", what, err,
                  c.err ? strerror(c.err) : "complete", tu_show(c.buf, c.len));
    assert_status(&r, status, what);
    assert_common_headers(&r, what);
    ck_assert_msg(conn_wait_close(&c, CLOSE_WAIT_SEC, NULL) && c.len == 0,
                  "%s: after the %d response the connection %s; extra bytes: %s", what, status,
                  c.eof ? "closed" : "stayed open", tu_show(c.buf, c.len));
    conn_close(&c);
    response_free(&r);
    snprintf(after, sizeof(after), "%s", what);
    assert_fresh_connection_served(after);
}

/* ---- static files ---- */

START_TEST(test_get_file_has_body_type_and_validators)
{
    struct response r;
    char last_modified[64], etag[64];
    const char *what = "GET /index.html";

    require_site();
    expected_validators("index.html", last_modified, sizeof(last_modified), etag, sizeof(etag));
    get("/index.html", &r);
    assert_status(&r, 200, what);
    assert_body_eq(&r, index_body, index_len, what);
    assert_header_eq(&r, "Content-Type", "text/html", what);
    assert_header_eq(&r, "Last-Modified", last_modified, what);
    assert_header_eq(&r, "ETag", etag, what);
    assert_header_eq(&r, "Accept-Ranges", "bytes", what);
    response_free(&r);
}
END_TEST

START_TEST(test_get_root_serves_index)
{
    struct response r;

    require_site();
    get("/", &r);
    assert_status(&r, 200, "GET /");
    assert_body_eq(&r, index_body, index_len, "GET /");
    response_free(&r);
}
END_TEST

START_TEST(test_get_directory_without_slash_redirects)
{
    struct response r;

    require_site();
    get("/sub", &r);
    assert_status(&r, 301, "GET /sub");
    assert_header_eq(&r, "Location", "/sub/", "GET /sub");
    response_free(&r);
}
END_TEST

START_TEST(test_get_directory_serves_its_index)
{
    struct response r;

    require_site();
    get("/sub/", &r);
    assert_status(&r, 200, "GET /sub/");
    assert_body_eq(&r, sub_body, strlen(sub_body), "GET /sub/");
    response_free(&r);
}
END_TEST

START_TEST(test_get_directory_without_index_is_404)
{
    struct response r;

    require_site();
    get("/noindex/", &r);
    assert_status(&r, 404, "GET /noindex/");
    ck_assert_msg(memmem(r.body, r.body_len, "other.txt", 9) == NULL,
                  "GET /noindex/ lists the directory: %s", tu_show(r.body, r.body_len));
    response_free(&r);
}
END_TEST

START_TEST(test_get_missing_file_is_404)
{
    struct response r;

    require_site();
    get("/missing", &r);
    assert_status(&r, 404, "GET /missing");
    response_free(&r);
}
END_TEST

/* Workers run as nobody, so a mode-000 file cannot be opened. */
START_TEST(test_get_unreadable_file_is_403)
{
    struct response r;

    require_site();
    get("/locked.txt", &r);
    assert_status(&r, 403, "GET /locked.txt");
    ck_assert_msg(memmem(r.body, r.body_len, "LOCKED-CONTENT", 14) == NULL,
                  "GET /locked.txt sent the file: %s", tu_show(r.body, r.body_len));
    response_free(&r);
}
END_TEST

START_TEST(test_get_percent_encoded_name_is_decoded)
{
    struct response r;

    require_site();
    get("/a%20b.txt", &r);
    assert_status(&r, 200, "GET /a%20b.txt");
    assert_body_eq(&r, space_body, strlen(space_body), "GET /a%20b.txt");
    response_free(&r);
}
END_TEST

START_TEST(test_get_big_file_sends_every_byte)
{
    struct response r;

    require_site();
    get("/big.bin", &r);
    assert_status(&r, 200, "GET /big.bin");
    assert_header_eq(&r, "Content-Type", "application/octet-stream", "GET /big.bin");
    assert_header_eq(&r, "Content-Length", "65536", "GET /big.bin");
    assert_body_eq(&r, big_body, sizeof(big_body), "GET /big.bin");
    response_free(&r);
}
END_TEST

/* A file rewritten on disk is served in its new version soon after, with a
 * new ETag: workers may cache what they serve, not keep serving it stale. */
START_TEST(test_changed_file_is_served_fresh)
{
    const char *v2 = "version 2, longer\n";
    struct response r;
    char path[PATH_MAX], etag1[64];
    double deadline;
    bool fresh = false;
    int fd;

    require_site();
    /* On new connections, so that every worker is likely to have it cached. */
    for (int i = 0; i < FRESH_ROUNDS; i++) {
        get("/changing.txt", &r);
        assert_status(&r, 200, "GET /changing.txt");
        assert_body_eq(&r, "version 1\n", 10, "GET /changing.txt");
        snprintf(etag1, sizeof(etag1), "%s", header(&r, "ETag") ? header(&r, "ETag") : "");
        response_free(&r);
    }
    site_path(path, sizeof(path), "www/changing.txt");
    fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    ck_assert(tu_write_all(fd, v2, strlen(v2)));
    ck_assert_int_eq(close(fd), 0);
    deadline = tu_now() + FRESH_TIMEOUT_SEC;
    do {
        get("/changing.txt", &r);
        fresh = r.status == 200 && r.body_len == strlen(v2) && memcmp(r.body, v2, r.body_len) == 0;
        if (!fresh) {
            response_free(&r);
            usleep(100000);
        }
    } while (!fresh && tu_now() < deadline);
    ck_assert_msg(fresh, "GET /changing.txt still answers the old version %.0f s after the "
                  "file changed", FRESH_TIMEOUT_SEC);
    ck_assert_msg(header(&r, "ETag") != NULL && strcmp(header(&r, "ETag"), etag1) != 0,
                  "the changed file kept its ETag %s:\n%s", etag1, r.head);
    response_free(&r);
    /* Every worker has caught up by now, not only the one that answered. */
    usleep((useconds_t)(FRESH_SETTLE_SEC * 1e6));
    for (int i = 0; i < FRESH_ROUNDS; i++) {
        get("/changing.txt", &r);
        assert_status(&r, 200, "GET /changing.txt after the change");
        assert_body_eq(&r, v2, strlen(v2), "GET /changing.txt on a new connection after the change");
        response_free(&r);
    }
}
END_TEST

/* HEAD answers like GET without the body: the next response on the same
 * connection starts right after the head. */
START_TEST(test_head_has_get_headers_and_no_body)
{
    static const char *const same[] = { "Content-Type", "Content-Length", "Last-Modified",
                                        "ETag", "Accept-Ranges", "Server", NULL };
    const char *head_req = "HEAD /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    const char *next_req = "GET /sub/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    struct response head, body, next;
    char want_len[32];
    struct conn c;

    require_site();
    get("/index.html", &body);
    conn_open(&c);
    conn_send_all(&c, head_req);
    expect_response(&c, &head, head_req);
    assert_status(&head, 200, "HEAD /index.html");
    snprintf(want_len, sizeof(want_len), "%zu", index_len);
    assert_header_eq(&head, "Content-Length", want_len, "HEAD /index.html");
    for (int i = 0; same[i] != NULL; i++) {
        const char *a = header(&head, same[i]), *b = header(&body, same[i]);

        ck_assert_msg(a != NULL && b != NULL && strcmp(a, b) == 0,
                      "%s differs between HEAD and GET /index.html:\nHEAD:\n%s\nGET:\n%s", same[i],
                      head.head, body.head);
    }
    /* A body sent after the head would be read as the next status line. */
    usleep(100000);
    conn_send_all(&c, next_req);
    expect_response(&c, &next, "GET /sub/ after HEAD /index.html on the same connection");
    assert_status(&next, 200, "GET /sub/ after HEAD /index.html");
    assert_body_eq(&next, sub_body, strlen(sub_body), "GET /sub/ after HEAD /index.html");
    conn_close(&c);
    response_free(&head);
    response_free(&body);
    response_free(&next);
}
END_TEST

/* req (a conditional GET of /index.html) gets 304 without a body: the next
 * response on the connection parses. */
static void assert_not_modified(const char *req)
{
    const char *next_req = "GET /sub/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    struct response r, next;
    struct conn c;

    conn_open(&c);
    conn_send_all(&c, req);
    expect_response(&c, &r, req);
    assert_status(&r, 304, shows(req));
    conn_send_all(&c, next_req);
    expect_response(&c, &next, "GET /sub/ after a 304 on the same connection");
    assert_status(&next, 200, "GET /sub/ after a 304");
    assert_body_eq(&next, sub_body, strlen(sub_body), "GET /sub/ after a 304");
    conn_close(&c);
    response_free(&r);
    response_free(&next);
}

START_TEST(test_if_none_match_etag_is_304)
{
    char last_modified[64], etag[64], req[512];

    require_site();
    expected_validators("index.html", last_modified, sizeof(last_modified), etag, sizeof(etag));
    snprintf(req, sizeof(req), "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "If-None-Match: %s\r\n\r\n", etag);
    assert_not_modified(req);
}
END_TEST

START_TEST(test_if_modified_since_last_modified_is_304)
{
    char last_modified[64], etag[64], req[512];

    require_site();
    expected_validators("index.html", last_modified, sizeof(last_modified), etag, sizeof(etag));
    snprintf(req, sizeof(req), "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "If-Modified-Since: %s\r\n\r\n", last_modified);
    assert_not_modified(req);
}
END_TEST

START_TEST(test_if_modified_since_older_date_is_200)
{
    const char *req = "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT\r\n\r\n";
    struct response r;

    require_site();
    exchange(req, &r);
    assert_status(&r, 200, shows(req));
    assert_body_eq(&r, index_body, index_len, shows(req));
    response_free(&r);
}
END_TEST

/* GET /big.bin with `Range: range`. */
static void get_big_range(const char *range, struct response *r, char *what, size_t what_size)
{
    char req[512];

    snprintf(req, sizeof(req), "GET /big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: %s\r\n\r\n",
             range);
    snprintf(what, what_size, "GET /big.bin with Range: %s", range);
    exchange(req, r);
}

static void assert_partial(const char *range, size_t first, size_t last)
{
    struct response r;
    char what[128], content_range[64], length[32];

    get_big_range(range, &r, what, sizeof(what));
    assert_status(&r, 206, what);
    snprintf(content_range, sizeof(content_range), "bytes %zu-%zu/%d", first, last, BIG_SIZE);
    snprintf(length, sizeof(length), "%zu", last - first + 1);
    assert_header_eq(&r, "Content-Range", content_range, what);
    assert_header_eq(&r, "Content-Length", length, what);
    assert_body_eq(&r, big_body + first, last - first + 1, what);
    response_free(&r);
}

START_TEST(test_range_first_bytes_is_206)
{
    require_site();
    assert_partial("bytes=0-99", 0, 99);
}
END_TEST

START_TEST(test_range_suffix_is_last_bytes)
{
    require_site();
    assert_partial("bytes=-100", BIG_SIZE - 100, BIG_SIZE - 1);
}
END_TEST

START_TEST(test_range_open_end_is_rest_of_file)
{
    require_site();
    assert_partial("bytes=65000-", 65000, BIG_SIZE - 1);
}
END_TEST

START_TEST(test_range_past_end_is_416)
{
    struct response r;
    char what[128];

    require_site();
    get_big_range("bytes=70000-80000", &r, what, sizeof(what));
    assert_status(&r, 416, what);
    assert_header_eq(&r, "Content-Range", "bytes */65536", what);
    response_free(&r);
}
END_TEST

START_TEST(test_multi_range_gets_whole_file)
{
    struct response r;
    char what[128];

    require_site();
    get_big_range("bytes=0-1,5-6", &r, what, sizeof(what));
    assert_status(&r, 200, what);
    assert_body_eq(&r, big_body, sizeof(big_body), what);
    response_free(&r);
}
END_TEST

/* index.html is small: a server may send it from memory rather than with
 * sendfile, and the range must still be cut at the right bytes. */
START_TEST(test_range_of_small_file_is_206)
{
    const char *req = "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=100-199\r\n\r\n";
    struct response r;
    char content_range[64];

    require_site();
    exchange(req, &r);
    assert_status(&r, 206, shows(req));
    snprintf(content_range, sizeof(content_range), "bytes 100-199/%zu", index_len);
    assert_header_eq(&r, "Content-Range", content_range, shows(req));
    assert_header_eq(&r, "Content-Length", "100", shows(req));
    assert_body_eq(&r, index_body + 100, 100, shows(req));
    response_free(&r);
}
END_TEST

/* outside.txt lies next to the root, readable by the workers; link-out is a
 * symlink to it inside the root. No target reaches it. */
START_TEST(test_traversal_never_leaves_root)
{
    static const char *const targets[] = {
        "/../outside.txt",
        "/%2e%2e/outside.txt",
        "/%2E%2E/outside.txt",
        "/.%2e/outside.txt",
        "/%2e./outside.txt",
        "/..%2foutside.txt",
        "/%2e%2e%2foutside.txt",
        "/sub/../../outside.txt",
        "/sub/%2e%2e/%2e%2e/outside.txt",
        "/sub/..%2f..%2foutside.txt",
        "/sub/%2e%2e%2f%2e%2e%2foutside.txt",
        "/./../outside.txt",
        "//../outside.txt",
        "/sub/./../../outside.txt",
        "/..%5coutside.txt",
        "/link-out",
        "/link-out/",
        "/%00",
        "/index.html%00.txt",
        "/%",
        "/%zz",
        "/%2",
        "../outside.txt",
        "http://127.0.0.1/../outside.txt",
        NULL,
    };
    char failures[8192] = "";
    size_t n = 0;

    require_site();
    for (int i = 0; targets[i] != NULL; i++) {
        char req[512];
        struct response r;
        struct conn c;
        const char *err;

        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 targets[i]);
        conn_open(&c);
        conn_send_all(&c, req);
        err = conn_read_response(&c, &r, false);
        if (err != NULL)
            n += (size_t)snprintf(failures + n, sizeof(failures) - n, "\n  %s: %s", targets[i], err);
        else if (memmem(r.body, r.body_len, SECRET, strlen(SECRET)) != NULL)
            n += (size_t)snprintf(failures + n, sizeof(failures) - n,
                                  "\n  %s: status %d WITH THE SECRET in the body", targets[i],
                                  r.status);
        else if (r.status != 400 && r.status != 403 && r.status != 404)
            n += (size_t)snprintf(failures + n, sizeof(failures) - n,
                                  "\n  %s: status %d, want 400, 403 or 404", targets[i], r.status);
        else
            assert_common_headers(&r, targets[i]);
        ck_assert(n < sizeof(failures));
        conn_close(&c);
        response_free(&r);
    }
    ck_assert_msg(n == 0, "traversal targets answered wrongly:%s", failures);
}
END_TEST

/* ---- connections ---- */

/* req_index (which gets index.html), then GET /sub/ on the same connection,
 * which must get sub/'s index; what2 names the second in messages. */
static void assert_second_request_served(const char *req_index, const char *what2)
{
    const char *req2 = "GET /sub/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    struct response r1, r2;
    struct conn c;

    conn_open(&c);
    exchange_on(&c, req_index, &r1, 200, index_body, index_len, shows(req_index));
    exchange_on(&c, req2, &r2, 200, sub_body, strlen(sub_body), what2);
    conn_close(&c);
    response_free(&r1);
    response_free(&r2);
}

START_TEST(test_keep_alive_serves_two_requests_on_one_connection)
{
    require_site();
    assert_second_request_served("GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                                 "the second request on a keep-alive connection");
}
END_TEST

/* req gets a response with `Connection: close`, and then the server closes. */
static void assert_served_then_closed(const char *req)
{
    struct response r;
    struct conn c;

    conn_open(&c);
    exchange_on(&c, req, &r, 200, index_body, index_len, shows(req));
    ck_assert_msg(header(&r, "Connection") != NULL && strcasecmp(header(&r, "Connection"), "close") == 0,
                  "%s: want `Connection: close`, got:\n%s", shows(req), r.head);
    ck_assert_msg(conn_wait_close(&c, CLOSE_WAIT_SEC, NULL),
                  "%s: the connection is still open %.1f s after the response", shows(req),
                  CLOSE_WAIT_SEC);
    ck_assert_msg(c.len == 0, "%s: bytes after the response: %s", shows(req),
                  tu_show(c.buf, c.len));
    conn_close(&c);
    response_free(&r);
}

START_TEST(test_http10_without_keep_alive_closes)
{
    require_site();
    assert_served_then_closed("GET /index.html HTTP/1.0\r\n\r\n");
}
END_TEST

START_TEST(test_http11_connection_close_closes_after_body)
{
    require_site();
    assert_served_then_closed("GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
}
END_TEST

START_TEST(test_http10_keep_alive_stays_open)
{
    const char *req1 = "GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    const char *req2 = "GET /sub/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    struct response r1, r2;
    struct conn c;

    require_site();
    conn_open(&c);
    exchange_on(&c, req1, &r1, 200, NULL, 0, shows(req1));
    ck_assert_msg(header(&r1, "Connection") != NULL &&
                  strcasecmp(header(&r1, "Connection"), "keep-alive") == 0,
                  "%s: want `Connection: keep-alive`, got:\n%s", shows(req1), r1.head);
    exchange_on(&c, req2, &r2, 200, sub_body, strlen(sub_body), shows(req2));
    conn_close(&c);
    response_free(&r1);
    response_free(&r2);
}
END_TEST

START_TEST(test_pipelined_requests_answered_in_order)
{
    const char *reqs = "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                       "GET /sub/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                       "GET /missing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    struct response r[3];
    struct conn c;

    require_site();
    conn_open(&c);
    conn_send_all(&c, reqs);
    expect_response(&c, &r[0], "the 1st of 3 pipelined requests (GET /index.html)");
    expect_response(&c, &r[1], "the 2nd of 3 pipelined requests (GET /sub/)");
    expect_response(&c, &r[2], "the 3rd of 3 pipelined requests (GET /missing)");
    assert_status(&r[0], 200, "pipelined GET /index.html");
    assert_body_eq(&r[0], index_body, index_len, "pipelined GET /index.html");
    assert_status(&r[1], 200, "pipelined GET /sub/");
    assert_body_eq(&r[1], sub_body, strlen(sub_body), "pipelined GET /sub/");
    assert_status(&r[2], 404, "pipelined GET /missing");
    conn_close(&c);
    for (int i = 0; i < 3; i++)
        response_free(&r[i]);
}
END_TEST

START_TEST(test_garbage_request_is_400_and_closes)
{
    const char *req = "GARBAGE\r\n\r\n";

    require_site();
    assert_rejected_and_closed(req, strlen(req), 400);
}
END_TEST

START_TEST(test_header_without_colon_is_400)
{
    const char *req = "GET / HTTP/1.1\r\nHost x\r\n\r\n";

    require_site();
    assert_rejected_and_closed(req, strlen(req), 400);
}
END_TEST

START_TEST(test_request_line_over_8k_is_414)
{
    char req[9100];
    size_t n = 0;

    require_site();
    n += (size_t)sprintf(req, "GET /");
    memset(req + n, 'a', 9000);
    n += 9000;
    n += (size_t)sprintf(req + n, " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_rejected_and_closed(req, n, 414);
}
END_TEST

START_TEST(test_headers_over_20k_are_431)
{
    static char req[32768];
    size_t n;

    require_site();
    n = (size_t)sprintf(req, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (int i = 0; i < 200; i++) {
        /* 100 bytes a line: "X-Filler-NNN: " (14), 84 x 'v', CRLF. */
        n += (size_t)sprintf(req + n, "X-Filler-%03d: ", i);
        memset(req + n, 'v', 84);
        n += 84;
        n += (size_t)sprintf(req + n, "\r\n");
    }
    n += (size_t)sprintf(req + n, "\r\n");
    assert_rejected_and_closed(req, n, 431);
}
END_TEST

START_TEST(test_101_headers_are_431)
{
    static char req[4096];
    size_t n;

    require_site();
    n = (size_t)sprintf(req, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (int i = 0; i < 101; i++)
        n += (size_t)sprintf(req + n, "X-H%03d: v\r\n", i);
    n += (size_t)sprintf(req + n, "\r\n");
    assert_rejected_and_closed(req, n, 431);
}
END_TEST

START_TEST(test_huge_content_length_is_413)
{
    const char *req = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\n";

    require_site();
    assert_rejected_and_closed(req, strlen(req), 413);
}
END_TEST

/* The client is still sending a body the server refused: the server reads
 * and drops it (lingering close) instead of closing with unread input, which
 * would reset the connection under the client's feet. */
START_TEST(test_413_client_still_sending_body_gets_answer_and_a_clean_close)
{
    static char chunk[64 * 1024];
    char req[200];
    struct response r;
    struct conn c;
    const char *err;
    double closed_after;
    size_t sent = 0;

    require_site();
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n",
             LINGER_BODY_SIZE);
    memset(chunk, 'x', sizeof(chunk));
    conn_open(&c);
    conn_send_all(&c, req);
    while (sent < LINGER_BODY_SIZE) {
        ck_assert_msg(conn_send(&c, chunk, sizeof(chunk)), "after %zu of %d body bytes the "
                      "server reset the connection (%s): it closed with unread input",
                      sent, LINGER_BODY_SIZE, strerror(c.err));
        sent += sizeof(chunk);
    }
    ck_assert_int_eq(shutdown(c.fd, SHUT_WR), 0);
    err = conn_read_response(&c, &r, false);
    ck_assert_msg(err == NULL, "the 413 after a %d-byte body: %s; received: %s",
                  LINGER_BODY_SIZE, err, tu_show(c.buf, c.len));
    assert_status(&r, 413, "a body over the discard limit");
    assert_header_eq(&r, "Connection", "close", "413");
    ck_assert_msg(conn_wait_close(&c, LINGER_CLOSE_SEC, &closed_after) && c.err == 0,
                  "after the client's FIN the server %s in %.2f s (%s)",
                  c.eof ? "closed" : "did not close", closed_after,
                  c.err ? strerror(c.err) : "no reset");
    conn_close(&c);
    response_free(&r);
    assert_fresh_connection_served("a lingering close after 413");
}
END_TEST

/* Lines ended by a bare LF (netcat, hand-typed requests) are a request as
 * nginx takes them; the connection goes on with CRLF requests after it. */
START_TEST(test_bare_lf_request_is_served_and_the_connection_goes_on)
{
    require_site();
    assert_second_request_served("GET / HTTP/1.1\nHost: 127.0.0.1\n\n",
                                 "GET /sub/ after a bare-LF request, same connection");
}
END_TEST

START_TEST(test_small_request_body_is_read_and_discarded)
{
    require_site();
    assert_second_request_served(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello",
        "GET /sub/ after a GET with a 5-byte body, same connection");
}
END_TEST

START_TEST(test_post_and_delete_are_405_with_allow)
{
    static const char *const reqs[] = {
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        "DELETE / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        NULL,
    };

    require_site();
    for (int i = 0; reqs[i] != NULL; i++) {
        struct response r;

        exchange(reqs[i], &r);
        assert_status(&r, 405, shows(reqs[i]));
        assert_header_eq(&r, "Allow", "GET, HEAD", shows(reqs[i]));
        response_free(&r);
    }
    assert_fresh_connection_served("POST / and DELETE /");
}
END_TEST

/* A request head trickling in one byte every 200 ms is cut off by
 * header_timeout (1 s), although the connection is never idle for long. */
START_TEST(test_slow_request_head_closed_after_header_timeout)
{
    const char *line = "GET / HTTP/1.1\r\n";
    const char *trickle = "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    double start, closed_at = -1, next_byte;
    size_t sent = 0;
    struct conn c;

    require_site();
    conn_open(&c);
    start = tu_now();
    conn_send_all(&c, line);
    next_byte = start + SLOW_BYTE_INTERVAL_SEC;
    while (closed_at < 0 && tu_now() < start + SLOW_CLOSE_MAX_SEC + 1.5) {
        int rc = conn_fill(&c, next_byte);

        if (rc == 0) {
            closed_at = tu_now();
        } else if (rc < 0) {
            /* A reset can show up here first. */
            if (!conn_send(&c, trickle + sent % strlen(trickle), 1))
                closed_at = tu_now();
            sent++;
            next_byte += SLOW_BYTE_INTERVAL_SEC;
        }
    }
    ck_assert_msg(closed_at >= 0, "a request head trickling in for %.1f s is still being read "
                  "(header_timeout = %d s)", tu_now() - start, HEADER_TIMEOUT_SEC);
    ck_assert_msg(closed_at - start >= SLOW_CLOSE_MIN_SEC && closed_at - start <= SLOW_CLOSE_MAX_SEC,
                  "a slow request head was cut off after %.2f s, want %.1f..%.1f s "
                  "(header_timeout = %d s); received: %s", closed_at - start, SLOW_CLOSE_MIN_SEC,
                  SLOW_CLOSE_MAX_SEC, HEADER_TIMEOUT_SEC, tu_show(c.buf, c.len));
    conn_close(&c);
}
END_TEST

START_TEST(test_idle_keep_alive_closed_after_idle_timeout)
{
    const char *req = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    struct response r;
    struct conn c;
    double elapsed;
    bool closed;

    require_site();
    conn_open(&c);
    conn_send_all(&c, req);
    expect_response(&c, &r, req);
    assert_status(&r, 200, shows(req));
    closed = conn_wait_close(&c, IDLE_CLOSE_MAX_SEC + 1, &elapsed);
    ck_assert_msg(closed, "an idle keep-alive connection is still open after %.1f s "
                  "(idle_timeout = %d s)", elapsed, IDLE_TIMEOUT_SEC);
    ck_assert_msg(elapsed >= IDLE_CLOSE_MIN_SEC && elapsed <= IDLE_CLOSE_MAX_SEC,
                  "an idle keep-alive connection was closed after %.2f s, want %.1f..%.1f s "
                  "(idle_timeout = %d s)", elapsed, IDLE_CLOSE_MIN_SEC, IDLE_CLOSE_MAX_SEC,
                  IDLE_TIMEOUT_SEC);
    ck_assert_msg(c.len == 0, "bytes on an idle connection: %s", tu_show(c.buf, c.len));
    conn_close(&c);
    response_free(&r);
}
END_TEST

/* ---- status page ---- */

/* The value of the sample `name{label}` (`name` if label is NULL) if that
 * exact line is there (the aggregate), else the sum of the samples of name
 * whose labels include label. False if there is none. */
static bool metric_value(const char *text, const char *name, const char *label, double *value)
{
    char exact[256], labelled[256];
    size_t exact_len, labelled_len;
    bool found = false;
    double sum = 0;

    if (label != NULL)
        exact_len = (size_t)snprintf(exact, sizeof(exact), "%s{%s} ", name, label);
    else
        exact_len = (size_t)snprintf(exact, sizeof(exact), "%s ", name);
    labelled_len = (size_t)snprintf(labelled, sizeof(labelled), "%s{", name);
    for (const char *line = text; *line != '\0';) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);

        if (len > exact_len && strncmp(line, exact, exact_len) == 0) {
            *value = strtod(line + exact_len, NULL);
            return true;
        }
        if (len > labelled_len && strncmp(line, labelled, labelled_len) == 0) {
            const char *close = memchr(line, '}', len);
            char labels[512];
            size_t labels_len = close ? (size_t)(close - line) - labelled_len : 0;

            if (close != NULL && labels_len < sizeof(labels)) {
                memcpy(labels, line + labelled_len, labels_len);
                labels[labels_len] = '\0';
                if (label == NULL || strstr(labels, label) != NULL) {
                    sum += strtod(close + 1, NULL);
                    found = true;
                }
            }
        }
        line += len + (eol != NULL);
    }
    *value = sum;
    return found;
}

/* GET /status on a new connection; its body (malloc'd) in *text. */
static void get_status(struct response *r)
{
    get("/status", r);
    assert_status(r, 200, "GET /status");
}

START_TEST(test_status_is_prometheus_text)
{
    static const char *const names[] = {
        "preforkd_workers", "preforkd_generation", "preforkd_restarts_total",
        "preforkd_reloads_total", "preforkd_connections_accepted_total",
        "preforkd_connections_active", "preforkd_http_bytes_sent_total", NULL,
    };
    const char *help = "^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+$";
    const char *type = "^# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge)$";
    const char *sample = "^[a-zA-Z_:][a-zA-Z0-9_:]*"
                         "(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\""
                         "(,[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\")*\\})?"
                         " -?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$";
    char *text, *line, *save = NULL, bad[4096] = "";
    struct response r;
    size_t n = 0;
    double v;

    require_site();
    get_status(&r);
    assert_header_eq(&r, "Content-Type", "text/plain; version=0.0.4", "GET /status");
    text = strdup((char *)r.body);
    ck_assert_ptr_nonnull(text);
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
        if (!matches(help, line, 0) && !matches(type, line, 0) && !matches(sample, line, 0) &&
            n + 200 < sizeof(bad))
            n += (size_t)snprintf(bad + n, sizeof(bad) - n, "\n  %s", shows(line));
    free(text);
    ck_assert_msg(n == 0, "GET /status: lines that are no Prometheus text:%s\nbody:\n%s", bad,
                  (char *)r.body);
    for (int i = 0; names[i] != NULL; i++)
        ck_assert_msg(metric_value((char *)r.body, names[i], NULL, &v),
                      "GET /status has no %s:\n%s", names[i], (char *)r.body);
    for (int i = 1; i <= 5; i++) {
        char label[32];

        snprintf(label, sizeof(label), "class=\"%dxx\"", i);
        ck_assert_msg(metric_value((char *)r.body, "preforkd_http_requests_total", label, &v),
                      "GET /status has no preforkd_http_requests_total{%s}:\n%s", label,
                      (char *)r.body);
    }
    response_free(&r);
}
END_TEST

static void status_counts(double *ok, double *accepted)
{
    struct response r;

    get_status(&r);
    ck_assert_msg(metric_value((char *)r.body, "preforkd_http_requests_total", "class=\"2xx\"", ok),
                  "no preforkd_http_requests_total{class=\"2xx\"} in:\n%s", (char *)r.body);
    ck_assert_msg(metric_value((char *)r.body, "preforkd_connections_accepted_total", NULL, accepted),
                  "no preforkd_connections_accepted_total in:\n%s", (char *)r.body);
    response_free(&r);
}

START_TEST(test_status_counts_requests_and_connections)
{
    double ok0, accepted0, ok, accepted, deadline;

    require_site();
    status_counts(&ok0, &accepted0);
    for (int i = 0; i < 6; i++) {
        struct response r;

        get("/index.html", &r);
        assert_status(&r, 200, "GET /index.html");
        response_free(&r);
    }
    deadline = tu_now() + LOG_POLL_SEC;
    do {
        status_counts(&ok, &accepted);
        if (ok - ok0 >= 6 && accepted - accepted0 >= 6)
            break;
        usleep(100000);
    } while (tu_now() < deadline);
    ck_assert_msg(ok - ok0 >= 6, "after 6 GETs answered 200, preforkd_http_requests_total"
                  "{class=\"2xx\"} went from %.0f to %.0f", ok0, ok);
    ck_assert_msg(accepted - accepted0 >= 6, "after 6 new connections, "
                  "preforkd_connections_accepted_total went from %.0f to %.0f", accepted0, accepted);
}
END_TEST

START_TEST(test_status_path_empty_disables_status)
{
    struct response r;

    require_site();
    get("/status", &r);
    assert_status(&r, 404, "GET /status with status_path =");
    response_free(&r);
}
END_TEST

/* ---- access log ---- */

/* The combined-format line of `GET /index.html` with referer and
 * User-Agent check-http, as a POSIX ERE (referer must be regex-safe). */
static void access_line_regex(char *buf, size_t size, const char *referer)
{
    snprintf(buf, size,
             "^127\\.0\\.0\\.1 - - \\[[0-9]{2}/(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/"
             "[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}\\] "
             "\"GET /index\\.html HTTP/1\\.1\" 200 %zu \"%s\" \"check-http\"$",
             index_len, referer);
}

static void get_with_referer(const char *referer)
{
    char req[512];
    struct response r;

    snprintf(req, sizeof(req), "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "User-Agent: check-http\r\nReferer: %s\r\n\r\n", referer);
    exchange(req, &r);
    assert_status(&r, 200, shows(req));
    response_free(&r);
}

/* Polls path up to LOG_POLL_SEC for a line matching pattern. */
static bool log_has_line(const char *path, const char *pattern, char *text, size_t size)
{
    double deadline = tu_now() + LOG_POLL_SEC;

    do {
        tu_read_file(path, text, size);
        if (matches(pattern, text, REG_NEWLINE))
            return true;
        usleep(50000);
    } while (tu_now() < deadline);
    return false;
}

START_TEST(test_access_log_has_combined_line)
{
    static char text[OUTPUT_MAX];
    char pattern[1024];

    require_site();
    get_with_referer("http://r/");
    access_line_regex(pattern, sizeof(pattern), "http://r/");
    ck_assert_msg(log_has_line(access_log, pattern, text, sizeof(text)),
                  "%s has no line like `127.0.0.1 - - [23/Nov/2026:16:31:06 +0000] "
                  "\"GET /index.html HTTP/1.1\" 200 %zu \"http://r/\" \"check-http\"`; it holds:\n%s\n"
                  "daemon log:\n%s", access_log, index_len, text, site_log_tail());
}
END_TEST

/* logrotate: rename, USR1 to the master, and the next requests land in a
 * new file of the old name. */
START_TEST(test_access_log_reopened_on_usr1)
{
    static char text[OUTPUT_MAX];
    char pattern[1024], rotated[PATH_MAX + 8];
    double deadline;
    bool reopened = false;

    require_site();
    get_with_referer("http://r/before-rotation");
    access_line_regex(pattern, sizeof(pattern), "http://r/before-rotation");
    ck_assert_msg(log_has_line(access_log, pattern, text, sizeof(text)),
                  "%s has no line for the request before rotation; it holds:\n%s",
                  access_log, text);
    snprintf(rotated, sizeof(rotated), "%s.1", access_log);
    ck_assert_int_eq(rename(access_log, rotated), 0);
    ck_assert_int_eq(kill(the_site.d.pid, SIGUSR1), 0);

    /* The workers reopen when the signal reaches them: poll with requests. */
    access_line_regex(pattern, sizeof(pattern), "http://r/after-rotation-[0-9]+");
    deadline = tu_now() + LOG_POLL_SEC;
    for (int i = 0; !reopened && tu_now() < deadline; i++) {
        char referer[64];

        snprintf(referer, sizeof(referer), "http://r/after-rotation-%d", i);
        get_with_referer(referer);
        usleep(100000);
        tu_read_file(access_log, text, sizeof(text));
        reopened = matches(pattern, text, REG_NEWLINE);
    }
    ck_assert_msg(reopened, "no new %s with the requests made %.0f s after USR1 (exists: %s); "
                  "it holds:\n%s\ndaemon log:\n%s", access_log, LOG_POLL_SEC,
                  access(access_log, F_OK) == 0 ? "yes" : "no", text, site_log_tail());
    ck_assert_msg(strstr(text, "before-rotation") == NULL,
                  "the new %s repeats a line of the rotated one:\n%s", access_log, text);
    tu_read_file(rotated, text, sizeof(text));
    ck_assert_msg(strstr(text, "http://r/before-rotation") != NULL,
                  "the rotated log lost its lines:\n%s", text);
}
END_TEST

/* ---- curl ---- */

/* curl -sS --max-time 5 -o <body file> -w %{http_code} [extra...] URL;
 * stdout (the status code) in code, the body in body. Returns false if
 * curl is not installed. */
static bool run_curl(const char *const *extra, char *code, size_t code_size, char *body,
                     size_t body_size, size_t *body_len)
{
    char url[64], body_path[PATH_MAX + 16];
    const char *argv[16] = { "curl", "-sS", "--max-time", "5", "-o", body_path,
                             "-w", "%{http_code}" };
    int argc = 8, fd;
    ssize_t n;

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", the_site.d.port);
    snprintf(body_path, sizeof(body_path), "%s/curl-%d.body", site_dir, (int)getpid());
    for (int i = 0; extra[i] != NULL && argc < 14; i++)
        argv[argc++] = extra[i];
    argv[argc++] = url;
    argv[argc] = NULL;
    if (!tu_run_curl(argv, site_dir, code, code_size, CURL_TIMEOUT_SEC, ""))
        return false;
    fd = open(body_path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    n = read(fd, body, body_size);
    close(fd);
    ck_assert_int_ge(n, 0);
    *body_len = (size_t)n;
    return true;
}

static void assert_curl_gets_index(const char *const *extra, const char *what)
{
    char code[64], body[4096];
    size_t len;

    require_site();
    if (!run_curl(extra, code, sizeof(code), body, sizeof(body), &len))
        return;
    ck_assert_msg(strcmp(code, "200") == 0, "%s: status %s", what, code);
    ck_assert_msg(len == index_len && memcmp(body, index_body, len) == 0,
                  "%s: got %zu bytes, want index.html's %zu: %s", what, len, index_len,
                  tu_show(body, len));
}

START_TEST(test_curl_gets_index)
{
    const char *extra[] = { NULL };

    assert_curl_gets_index(extra, "curl http://127.0.0.1:P/");
}
END_TEST

START_TEST(test_curl_http10_gets_index)
{
    const char *extra[] = { "--http1.0", NULL };

    assert_curl_gets_index(extra, "curl --http1.0 http://127.0.0.1:P/");
}
END_TEST

START_TEST(test_curl_range_gets_ten_bytes)
{
    const char *extra[] = { "-r", "0-9", NULL };
    char code[64], body[4096];
    size_t len;

    require_site();
    if (!run_curl(extra, code, sizeof(code), body, sizeof(body), &len))
        return;
    ck_assert_msg(strcmp(code, "206") == 0, "curl -r 0-9: status %s", code);
    ck_assert_msg(len == 10 && memcmp(body, index_body, 10) == 0,
                  "curl -r 0-9: got %zu bytes: %s", len, tu_show(body, len));
}
END_TEST

/* ---- suite ---- */

static TCase *site_tcase(Suite *s, const char *name, void (*start)(void))
{
    return du_add_site_tcase(s, name, TCASE_TIMEOUT_SEC, start, site_stop, test_setup,
                             test_teardown);
}

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = site_tcase(s, "static_files", site_start_with_status);

    tcase_add_test(tc, test_get_file_has_body_type_and_validators);
    tcase_add_test(tc, test_get_root_serves_index);
    tcase_add_test(tc, test_get_directory_without_slash_redirects);
    tcase_add_test(tc, test_get_directory_serves_its_index);
    tcase_add_test(tc, test_get_directory_without_index_is_404);
    tcase_add_test(tc, test_get_missing_file_is_404);
    tcase_add_test(tc, test_get_unreadable_file_is_403);
    tcase_add_test(tc, test_get_percent_encoded_name_is_decoded);
    tcase_add_test(tc, test_get_big_file_sends_every_byte);
    tcase_add_test(tc, test_changed_file_is_served_fresh);
    tcase_add_test(tc, test_head_has_get_headers_and_no_body);
    tcase_add_test(tc, test_if_none_match_etag_is_304);
    tcase_add_test(tc, test_if_modified_since_last_modified_is_304);
    tcase_add_test(tc, test_if_modified_since_older_date_is_200);
    tcase_add_test(tc, test_range_first_bytes_is_206);
    tcase_add_test(tc, test_range_suffix_is_last_bytes);
    tcase_add_test(tc, test_range_open_end_is_rest_of_file);
    tcase_add_test(tc, test_range_past_end_is_416);
    tcase_add_test(tc, test_multi_range_gets_whole_file);
    tcase_add_test(tc, test_range_of_small_file_is_206);
    tcase_add_test(tc, test_traversal_never_leaves_root);

    tc = site_tcase(s, "connections", site_start_with_status);
    tcase_add_test(tc, test_keep_alive_serves_two_requests_on_one_connection);
    tcase_add_test(tc, test_http10_without_keep_alive_closes);
    tcase_add_test(tc, test_http11_connection_close_closes_after_body);
    tcase_add_test(tc, test_http10_keep_alive_stays_open);
    tcase_add_test(tc, test_pipelined_requests_answered_in_order);
    tcase_add_test(tc, test_garbage_request_is_400_and_closes);
    tcase_add_test(tc, test_header_without_colon_is_400);
    tcase_add_test(tc, test_request_line_over_8k_is_414);
    tcase_add_test(tc, test_headers_over_20k_are_431);
    tcase_add_test(tc, test_101_headers_are_431);
    tcase_add_test(tc, test_huge_content_length_is_413);
    tcase_add_test(tc, test_413_client_still_sending_body_gets_answer_and_a_clean_close);
    tcase_add_test(tc, test_bare_lf_request_is_served_and_the_connection_goes_on);
    tcase_add_test(tc, test_small_request_body_is_read_and_discarded);
    tcase_add_test(tc, test_post_and_delete_are_405_with_allow);
    tcase_add_test(tc, test_slow_request_head_closed_after_header_timeout);
    tcase_add_test(tc, test_idle_keep_alive_closed_after_idle_timeout);

    tc = site_tcase(s, "status_and_access_log", site_start_with_status);
    tcase_add_test(tc, test_status_is_prometheus_text);
    tcase_add_test(tc, test_status_counts_requests_and_connections);
    tcase_add_test(tc, test_access_log_has_combined_line);
    tcase_add_test(tc, test_access_log_reopened_on_usr1);

    tc = site_tcase(s, "status_disabled", site_start_without_status);
    tcase_add_test(tc, test_status_path_empty_disables_status);

    tc = site_tcase(s, "curl", site_start_with_status);
    tcase_add_test(tc, test_curl_gets_index);
    tcase_add_test(tc, test_curl_http10_gets_index);
    tcase_add_test(tc, test_curl_range_gets_ten_bytes);
    return s;
}

int main(void)
{
    int failed;

    if (!du_suite_begin(&suite, "check_http", true))
        return EXIT_FAILURE;
    make_contents();
    failed = tu_run_suite(http_suite());
    return du_suite_end(&suite, failed);
}
