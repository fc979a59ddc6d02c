/*
 * http: serves files under [http] root over HTTP/1.0 and 1.1, as nginx's
 * static module does: keep-alive, pipelining (one request at a time, in
 * order), conditional and range requests, bodies by sendfile, and a
 * Prometheus page. A request head is parsed by http_parser in the buffer
 * iostream hands us, so a request costs no allocation and no copy. Turning
 * a target into a file is http_path.c's; the page, http_status.c's.
 */
#define _GNU_SOURCE     /* strptime, timegm, memmem */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "access_log.h"
#include "http_cache.h"
#include "http_head.h"
#include "http_path.h"
#include "http_status.h"
#include "log.h"
#include "mime.h"
#include "prefork.h"

#define HTTP_SERVER_HEADER "Server: preforkd/" PF_VERSION "\r\n"
/* Room for the head of any response we build. */
#define HTTP_RESPONSE_HEAD_MAX 2048
/* While draining, a kept-alive connection idle this long is closed: one
 * that is about to send has sent by then (and gets Connection: close). */
#define HTTP_DRAIN_IDLE_SEC 1.0
#define HTTP_DRAIN_CHECK_SEC 0.25
/* After an error answer, the client's unread input is read and dropped
 * for at most this long before closing (nginx's lingering_time). */
#define HTTP_LINGER_SEC 5.0
/* Connection structs kept for reuse instead of freed. */
#define HTTP_CONN_POOL_MAX 1024
/* Request header values we look at are never longer than this. */
#define HTTP_DATE_VALUE_MAX 64
#define MIME_TYPES_PATH "/etc/mime.types"

enum conn_state {
    CONN_HEAD,          /* reading a request head */
    CONN_IDLE,          /* keep-alive: waiting for the next request's first byte */
    CONN_RESPOND,       /* a response is being written */
    CONN_DISCARD,       /* reading and dropping a request body */
};

struct http_conn {
    struct http_server *h;
    struct pf_iostream *s;
    struct http_conn *prev, *next;  /* h->conns, or h->pool through next */
    enum conn_state state;
    bool close_after;               /* close once the response is written */
    bool linger;                    /* ... after the peer stops sending */
    unsigned long long discard;     /* body bytes still to drop */
    struct http_file *file;         /* being sent: referenced until written */
    double idle_since;              /* CONN_IDLE: when it became idle */
};

/* Room for a peer's address as text. */
#define PEER_TEXT_MAX INET6_ADDRSTRLEN

struct http_server {
    struct ev_loop *loop;
    const struct config *c;
    struct scoreboard_slot *slot;
    struct scoreboard *sb;
    int root_fd;
    struct mime_types *mime;
    struct http_cache *cache;
    struct access_log alog;
    bool draining;
    ev_timer drain_timer;
    struct http_conn *conns;
    struct http_conn *pool;
    int npool;
    time_t date_sec;                /* date[] is for this second */
    char date[40];
};

/* What a response was, for the counters and the access log. */
struct response {
    int status;
    unsigned long long body;        /* body bytes */
    size_t head;                    /* head bytes */
};

static void conn_next_request(struct http_conn *cn);

/* ---- small helpers ---- */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 505: return "HTTP Version Not Supported";
    default:  return "Internal Server Error";
    }
}

static void format_http_date(time_t t, char *out, size_t len)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* The Date header changes once a second; ev_now costs no system call. */
static const char *http_date_now(struct http_server *h)
{
    time_t now = (time_t)ev_now(h->loop);

    if (now != h->date_sec) {
        format_http_date(now, h->date, sizeof(h->date));
        h->date_sec = now;
    }
    return h->date;
}

/* Appends printf output to out[*at..cap); false if it did not fit. */
static bool head_add(char *out, size_t *at, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool head_add(char *out, size_t *at, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(out + *at, cap - *at, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap - *at)
        return false;
    *at += (size_t)n;
    return true;
}

/* Appends len bytes of s to out[*at..cap); false if they did not fit. */
static bool head_put(char *out, size_t *at, size_t cap, const char *s, size_t len)
{
    if (len >= cap - *at)
        return false;
    memcpy(out + *at, s, len);
    *at += len;
    return true;
}

#define HEAD_PUT_LITERAL(out, at, cap, lit) head_put(out, at, cap, lit, sizeof(lit) - 1)

/* ---- responses ---- */

/* The peer's address as text, for a log line: asked of the kernel only
 * then, so that an idle connection does not carry it. */
static const char *conn_peer(const struct http_conn *cn, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = pf_iostream_fd(cn->s);

    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
        snprintf(out, len, "-");
    else if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)len);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, (socklen_t)len);
    else
        snprintf(out, len, "unix");
    return out;
}

static void count_and_log(struct http_conn *cn, const struct http_request *r,
                          const struct response *rs)
{
    struct http_server *h = cn->h;
    struct scoreboard_counters *c = &h->slot->c;

    SB_ADD(c->requests, 1);
    SB_ADD(c->status[rs->status / 100 % 6], 1);
    SB_ADD(c->bytes_sent, rs->head + rs->body);
    if (h->alog.path != NULL) {
        char peer[PEER_TEXT_MAX];
        const char *method = r != NULL && r->url ? http_method_str(r->p.method) : "-";
        struct access_log_entry e = {
            .peer = conn_peer(cn, peer, sizeof(peer)), .method = method, .method_len = strlen(method),
            .target = r && r->url ? r->url : "-", .target_len = r && r->url ? r->url_len : 1,
            .http_minor = r ? r->p.http_minor : 0, .status = rs->status, .bytes = rs->body,
            .referer = r ? r->referer.v : NULL, .referer_len = r ? r->referer.len : 0,
            .user_agent = r ? r->ua.v : NULL, .user_agent_len = r ? r->ua.len : 0,
        };
        access_log_write(&h->alog, ev_now(h->loop), &e);
    }
}

/* Status line and the headers every response has. */
static size_t head_start(struct http_conn *cn, const struct http_request *r, int status,
                         char *out, size_t cap)
{
    const char *reason = reason_phrase(status), *date = http_date_now(cn->h);
    char code[5] = { (char)('0' + status / 100), (char)('0' + status / 10 % 10),
                     (char)('0' + status % 10), ' ', '\0' };
    size_t at = 0;

    /* memcpy, not printf: this runs for every response. */
    HEAD_PUT_LITERAL(out, &at, cap, "HTTP/1.1 ");
    head_put(out, &at, cap, code, 4);
    head_put(out, &at, cap, reason, strlen(reason));
    HEAD_PUT_LITERAL(out, &at, cap, "\r\n" HTTP_SERVER_HEADER "Date: ");
    head_put(out, &at, cap, date, strlen(date));
    HEAD_PUT_LITERAL(out, &at, cap, "\r\n");
    if (cn->close_after)
        HEAD_PUT_LITERAL(out, &at, cap, "Connection: close\r\n");
    else if (r != NULL && r->p.http_minor == 0)
        HEAD_PUT_LITERAL(out, &at, cap, "Connection: keep-alive\r\n");
    return at;
}

static void conn_release_file(struct http_conn *cn)
{
    if (cn->file != NULL) {
        http_file_release(cn->h->cache, cn->file);
        cn->file = NULL;
    }
}

static void response_written_cb(struct pf_iostream *s)
{
    struct http_conn *cn = pf_iostream_data(s);

    conn_release_file(cn);
    conn_next_request(cn);
}

/* A short HTML error page. extra: more header lines, or "". */
static void respond_error(struct http_conn *cn, const struct http_request *r, int status,
                          bool close, const char *extra)
{
    char head[HTTP_RESPONSE_HEAD_MAX], body[256];
    bool is_head = r != NULL && r->url != NULL && r->p.method == HTTP_HEAD;
    int blen = snprintf(body, sizeof(body),
                        "<html><head><title>%d %s</title></head><body><h1>%d %s</h1>"
                        "<hr>preforkd</body></html>\n", status, reason_phrase(status),
                        status, reason_phrase(status));
    struct response rs = { .status = status, .body = is_head ? 0 : (unsigned long long)blen };
    size_t at;

    cn->close_after |= close;
    /* An error that stops reading mid-request: the client may still be
     * sending, and must get to read the answer. */
    cn->linger |= close;
    at = head_start(cn, r, status, head, sizeof(head));
    head_add(head, &at, sizeof(head),
             "Content-Type: text/html\r\nContent-Length: %d\r\n%s\r\n", blen, extra);
    if (!is_head && at + (size_t)blen < sizeof(head)) {
        memcpy(head + at, body, (size_t)blen);
        at += (size_t)blen;
        rs.head = at - (size_t)blen;
    } else {
        rs.head = at;
    }
    count_and_log(cn, r, &rs);
    cn->state = CONN_RESPOND;
    pf_iostream_write(cn->s, head, at, response_written_cb);
}

static void respond_status_page(struct http_conn *cn, const struct http_request *r)
{
    char head[HTTP_RESPONSE_HEAD_MAX];
    size_t len = 0, at;
    char *body = http_status_page(cn->h->sb, &len);
    bool is_head = r->p.method == HTTP_HEAD;
    struct response rs = { .status = 200, .body = is_head ? 0 : len };

    if (body == NULL) {
        respond_error(cn, r, 500, false, "");
        return;
    }
    at = head_start(cn, r, 200, head, sizeof(head));
    head_add(head, &at, sizeof(head), "Content-Type: text/plain; version=0.0.4\r\n"
             "Content-Length: %zu\r\nCache-Control: no-cache\r\n\r\n", len);
    rs.head = at;
    count_and_log(cn, r, &rs);
    cn->state = CONN_RESPOND;
    if (is_head) {
        pf_iostream_write(cn->s, head, at, response_written_cb);
    } else if (pf_iostream_write(cn->s, head, at, NULL) == 0) {
        pf_iostream_write(cn->s, body, len, response_written_cb);
    }
    free(body);
}

/* ---- conditional and range requests ---- */

static bool etag_listed(const struct http_header_value *inm, const char *etag)
{
    size_t n = strlen(etag);

    if (inm->len == 1 && inm->v[0] == '*')
        return true;
    /* A list of tags; W/ prefixes compare weakly, which is what GET wants. */
    for (const char *p = inm->v, *end = inm->v + inm->len; p + n <= end; p++)
        if (memcmp(p, etag, n) == 0)
            return true;
    return false;
}

static bool not_modified_since(const struct http_header_value *ims, time_t mtime)
{
    char buf[HTTP_DATE_VALUE_MAX];
    struct tm tm = { 0 };
    const char *end;

    if (ims->len == 0 || ims->len >= sizeof(buf))
        return false;
    memcpy(buf, ims->v, ims->len);
    buf[ims->len] = '\0';
    end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return end != NULL && *end == '\0' && mtime <= timegm(&tm);
}

enum range_result { RANGE_NONE, RANGE_OK, RANGE_UNSATISFIABLE };

/* One "bytes=first-last", "bytes=first-" or "bytes=-suffix"; anything else
 * (several ranges, other units, bad syntax) serves the whole file, as RFC
 * 9110 lets a server do. */
static enum range_result parse_range(const struct http_header_value *hv, off_t size,
                                     off_t *first, off_t *last)
{
    char buf[64], *p, *end;
    unsigned long long a, b;

    if (hv->len < 7 || hv->len >= sizeof(buf) || strncasecmp(hv->v, "bytes=", 6) != 0)
        return RANGE_NONE;
    memcpy(buf, hv->v + 6, hv->len - 6);
    buf[hv->len - 6] = '\0';
    if (strchr(buf, ',') != NULL)
        return RANGE_NONE;
    p = buf;
    if (*p == '-') {
        b = strtoull(p + 1, &end, 10);
        if (end == p + 1 || *end != '\0')
            return RANGE_NONE;
        if (b == 0 || size == 0)
            return RANGE_UNSATISFIABLE;
        *first = (off_t)b >= size ? 0 : size - (off_t)b;
        *last = size - 1;
        return RANGE_OK;
    }
    a = strtoull(p, &end, 10);
    if (end == p || *end != '-')
        return RANGE_NONE;
    p = end + 1;
    if (*p == '\0') {
        b = (unsigned long long)size - 1;
    } else {
        b = strtoull(p, &end, 10);
        if (*end != '\0' || b < a)
            return RANGE_NONE;
    }
    if (a >= (unsigned long long)size)
        return RANGE_UNSATISFIABLE;
    *first = (off_t)a;
    *last = b >= (unsigned long long)size ? size - 1 : (off_t)b;
    return RANGE_OK;
}

/* ---- files ---- */

static int errno_to_status(int err)
{
    switch (err) {
    case -ENOENT: case -ENOTDIR: return 404;
    case -EACCES: case -EPERM: case -EXDEV: case -ELOOP: return 403;
    case -ENAMETOOLONG: return 414;
    default: return 500;
    }
}

/* A file from the cache: the head, then the body from memory (one writev)
 * or by sendfile; f stays referenced by cn until the send is done. */
static void respond_file(struct http_conn *cn, const struct http_request *r, struct http_file *f)
{
    char head[HTTP_RESPONSE_HEAD_MAX], extra[96];
    off_t size = f->st.st_size, first = 0, last = size - 1;
    enum range_result rr = RANGE_NONE;
    int status = 200;
    struct response rs;
    size_t at;

    if (r->inm.len > 0 ? etag_listed(&r->inm, f->etag) : not_modified_since(&r->ims, f->st.st_mtime))
        status = 304;
    else if (r->range.len > 0 &&
             (r->if_range.len == 0 || (r->if_range.len == strlen(f->etag) &&
                                       memcmp(r->if_range.v, f->etag, r->if_range.len) == 0)))
        rr = parse_range(&r->range, size, &first, &last);
    if (rr == RANGE_UNSATISFIABLE) {
        http_file_release(cn->h->cache, f);
        snprintf(extra, sizeof(extra), "Content-Range: bytes */%lld\r\n", (long long)size);
        respond_error(cn, r, 416, false, extra);
        return;
    }
    if (rr == RANGE_OK)
        status = 206;
    at = head_start(cn, r, status, head, sizeof(head));
    if (status == 304 && f->fields_len > 0) {
        head_put(head, &at, sizeof(head), f->fields, f->validators_len);
    } else if (status == 200 && f->fields_len > 0) {
        head_put(head, &at, sizeof(head), f->fields, f->fields_len);
    } else {
        head_add(head, &at, sizeof(head), "Last-Modified: %s\r\nETag: %s\r\n",
                 f->last_modified, f->etag);
        if (status != 304)
            head_add(head, &at, sizeof(head), "Content-Type: %s\r\nContent-Length: %lld\r\n"
                     "Accept-Ranges: bytes\r\n", f->type,
                     (long long)(size ? last - first + 1 : 0));
        if (status == 206)
            head_add(head, &at, sizeof(head), "Content-Range: bytes %lld-%lld/%lld\r\n",
                     (long long)first, (long long)last, (long long)size);
    }
    HEAD_PUT_LITERAL(head, &at, sizeof(head), "\r\n");
    rs = (struct response){ .status = status, .head = at };
    if (status != 304 && r->p.method == HTTP_GET && size > 0)
        rs.body = (unsigned long long)(last - first + 1);
    count_and_log(cn, r, &rs);
    cn->state = CONN_RESPOND;
    cn->file = f;
    if (rs.body > 0 && f->body != NULL) {
        struct iovec iov[2] = { { head, at }, { (char *)f->body + first, rs.body } };
        pf_iostream_writev(cn->s, iov, 2, response_written_cb);
    } else if (rs.body > 0) {
        pf_iostream_sendfile(cn->s, head, at, f->fd, first, rs.body, response_written_cb);
    } else {
        pf_iostream_write(cn->s, head, at, response_written_cb);
    }
}

static void serve_path(struct http_conn *cn, const struct http_request *r, const char *path,
                       size_t path_len, const char *query, size_t query_len)
{
    struct http_server *h = cn->h;
    char rel[HTTP_PATH_MAX + 1], extra[HTTP_REQUEST_LINE_MAX + 32];
    struct http_file *f;
    bool slash;
    int rc;

    rc = http_path_normalize(path, path_len, rel, sizeof(rel), &slash);
    if (rc < 0) {
        respond_error(cn, r, rc == -ENAMETOOLONG ? 414 : 400, true, "");
        return;
    }
    rc = http_cache_get(h->cache, ev_now(h->loop), rel, slash, &f);
    if (rc == HTTP_CACHE_IS_DIR) {
        /* As nginx: a directory is named with its slash; the query stays. */
        snprintf(extra, sizeof(extra), "Location: %.*s/%.*s\r\n", (int)path_len, path,
                 (int)query_len, query);
        respond_error(cn, r, 301, false, extra);
        return;
    }
    if (rc < 0) {
        if (errno_to_status(rc) == 500)
            log_msg(LOG_ERR, rc, "opening %s under %s", rel, h->c->http_root);
        respond_error(cn, r, errno_to_status(rc), false, "");
        return;
    }
    respond_file(cn, r, f);
}

/* ---- requests ---- */

static void http_serve(struct http_conn *cn, struct http_request *r)
{
    const struct config *c = cn->h->c;
    unsigned long long body = r->p.content_length == ULLONG_MAX ? 0 : r->p.content_length;
    const char *path = r->url, *q;
    size_t path_len, query_len = 0;

    cn->close_after = !http_should_keep_alive(&r->p) || cn->h->draining;
    if (r->p.http_major != 1) {
        respond_error(cn, r, 505, true, "");
        return;
    }
    /* RFC 9112, 3.2: an HTTP/1.1 request without Host is a bad one. */
    if (r->p.http_minor >= 1 && !r->has_host) {
        respond_error(cn, r, 400, true, "");
        return;
    }
    if ((r->p.flags & F_CHUNKED) || body > HTTP_BODY_DISCARD_MAX) {
        respond_error(cn, r, 413, true, "");
        return;
    }
    cn->discard = body;
    if (r->p.method != HTTP_GET && r->p.method != HTTP_HEAD) {
        respond_error(cn, r, 405, false, "Allow: GET, HEAD\r\n");
        return;
    }
    /* absolute-form (a proxy's request): serve its path. */
    if (r->url_len > 7 && strncasecmp(path, "http://", 7) == 0) {
        const char *slash = memchr(path + 7, '/', r->url_len - 7);
        if (slash == NULL) {
            respond_error(cn, r, 400, true, "");
            return;
        }
        path = slash;
    }
    path_len = r->url_len - (size_t)(path - r->url);
    q = memchr(path, '?', path_len);
    if (q != NULL) {
        query_len = path_len - (size_t)(q - path);
        path_len = (size_t)(q - path);
    }
    if (c->http_status_path != NULL && path_len == strlen(c->http_status_path) &&
        memcmp(path, c->http_status_path, path_len) == 0) {
        respond_status_page(cn, r);
        return;
    }
    serve_path(cn, r, path, path_len, q, query_len);
}

static void head_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    struct http_conn *cn = pf_iostream_data(s);
    const char *eol = memchr(buf, '\n', len < HTTP_REQUEST_LINE_MAX ? len : HTTP_REQUEST_LINE_MAX);
    struct http_request r = { 0 };
    char peer[PEER_TEXT_MAX];
    size_t used;

    pf_iostream_set_deadline(s, 0);
    cn->state = CONN_RESPOND;
    if (eol == NULL && len >= HTTP_REQUEST_LINE_MAX) {
        respond_error(cn, NULL, 414, true, "");
        return;
    }
    if (status == -EMSGSIZE) {
        respond_error(cn, NULL, 431, true, "");
        return;
    }
    used = http_head_parse(&r, buf, len);
    /* The parser pauses on the head's last byte. Pausing sooner means it
     * saw the end of the head where http_head_end() did not: what follows is
     * not ours to guess at, so refuse the framing. */
    if (HTTP_PARSER_ERRNO(&r.p) == HPE_PAUSED && used + 1 != len) {
        if (log_level_enabled(LOG_DEBUG))
            log_msg(LOG_DEBUG, 0, "%s: bad request: the head ends before its blank line",
                    conn_peer(cn, peer, sizeof(peer)));
        respond_error(cn, &r, 400, true, "");
        return;
    }
    if (HTTP_PARSER_ERRNO(&r.p) != HPE_PAUSED || r.url == NULL) {
        bool too_many = r.nheaders > HTTP_HEADERS_MAX;
        if (log_level_enabled(LOG_DEBUG))
            log_msg(LOG_DEBUG, 0, "%s: bad request at byte %zu: %s",
                    conn_peer(cn, peer, sizeof(peer)), used,
                too_many ? "too many headers" : http_errno_description(HTTP_PARSER_ERRNO(&r.p)));
        respond_error(cn, r.url ? &r : NULL, too_many ? 431 : 400, true, "");
        return;
    }
    http_serve(cn, &r);
}

static void head_start_reading(struct http_conn *cn)
{
    unsigned sec = cn->h->c->http_header_timeout_sec;

    cn->state = CONN_HEAD;
    /* Slow clients (slowloris): the head is due in time, trickle or not. */
    if (sec > 0)
        pf_iostream_set_deadline(cn->s, sec);
    pf_iostream_read_until_match(cn->s, http_head_end, NULL, HTTP_HEAD_MAX, head_read_cb);
}

/* The first byte of the next request: its head has header_timeout from now. */
static void idle_peek_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    (void)buf;
    (void)len;
    (void)status;
    head_start_reading(pf_iostream_data(s));
}

static void discard_read_cb(struct pf_iostream *s, const char *buf, size_t len, int status)
{
    struct http_conn *cn = pf_iostream_data(s);

    (void)buf;
    (void)status;
    cn->discard -= len;
    conn_next_request(cn);
}

static void conn_next_request(struct http_conn *cn)
{
    if (cn->close_after) {
        if (cn->linger)
            pf_iostream_close_lingering(cn->s, HTTP_LINGER_SEC);
        else
            pf_iostream_close(cn->s);
        return;
    }
    if (cn->discard > 0) {
        cn->state = CONN_DISCARD;
        pf_iostream_read_bytes(cn->s, cn->discard < PF_IOSTREAM_READ_CHUNK
                                          ? cn->discard : PF_IOSTREAM_READ_CHUNK,
                               true, discard_read_cb);
        return;
    }
    cn->state = CONN_IDLE;
    cn->idle_since = ev_now(cn->h->loop);
    pf_iostream_read_peek(cn->s, idle_peek_cb);
}

/* ---- connections ---- */

static void conn_close_cb(struct pf_iostream *s, int reason)
{
    struct http_conn *cn = pf_iostream_data(s);
    struct http_server *h = cn->h;

    if (reason < 0 && reason != -ETIMEDOUT && reason != -ECONNRESET)
        log_msg(LOG_DEBUG, reason, "connection closed");
    conn_release_file(cn);
    if (cn->prev != NULL)
        cn->prev->next = cn->next;
    else
        h->conns = cn->next;
    if (cn->next != NULL)
        cn->next->prev = cn->prev;
    SB_ADD(h->slot->active, -1);
    if (h->npool < HTTP_CONN_POOL_MAX) {
        cn->next = h->pool;
        h->pool = cn;
        h->npool++;
    } else {
        free(cn);
    }
}

void http_handle_stream(struct pf_tcp_server *srv, struct pf_iostream *s,
                        const struct sockaddr *peer, socklen_t len)
{
    struct http_server *h = pf_tcp_server_data(srv);
    struct http_conn *cn = h->pool;

    (void)peer;
    (void)len;
    if (cn != NULL) {
        h->pool = cn->next;
        h->npool--;
    } else if ((cn = malloc(sizeof(*cn))) == NULL) {
        pf_iostream_close(s);
        return;
    }
    memset(cn, 0, sizeof(*cn));
    cn->h = h;
    cn->s = s;
    cn->next = h->conns;
    if (h->conns != NULL)
        h->conns->prev = cn;
    h->conns = cn;
    SB_ADD(h->slot->active, 1);
    SB_ADD(h->slot->c.accepted, 1);
    pf_iostream_set_data(s, cn);
    pf_iostream_set_close_cb(s, conn_close_cb);
    /* As nginx: the first request's head is due header_timeout after accept. */
    head_start_reading(cn);
}

/* Closing a kept-alive connection races a request the client may be
 * sending on it (nginx closes them at once on reload, and clients see
 * resets). A connection idle for HTTP_DRAIN_IDLE_SEC is safe to close; one
 * that sends gets its answer with Connection: close. */
static void drain_check_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct http_server *h = t->data;
    struct http_conn *next;

    (void)revents;
    for (struct http_conn *cn = h->conns; cn != NULL; cn = next) {
        next = cn->next;        /* close unlinks only from the loop, but be safe */
        if (cn->state == CONN_IDLE && ev_now(loop) - cn->idle_since >= HTTP_DRAIN_IDLE_SEC)
            pf_iostream_close(cn->s);
    }
}

void http_server_drain(struct http_server *h)
{
    if (h->draining)
        return;
    h->draining = true;
    ev_timer_init(&h->drain_timer, drain_check_cb, 0., HTTP_DRAIN_CHECK_SEC);
    h->drain_timer.data = h;
    ev_timer_again(h->loop, &h->drain_timer);
}

int http_server_reopen_logs(struct http_server *h)
{
    return access_log_reopen(&h->alog);
}

struct http_server *http_server_new(struct ev_loop *loop, const struct config *c,
                                    struct scoreboard *sb, int slot,
                                    char *errmsg, size_t len)
{
    struct http_server *h = calloc(1, sizeof(*h));
    int err;

    if (h == NULL) {
        snprintf(errmsg, len, "%s", strerror(ENOMEM));
        return NULL;
    }
    h->loop = loop;
    h->c = c;
    h->sb = sb;
    h->slot = &sb->slots[slot];
    h->alog.fd = -1;
    h->root_fd = -1;
    h->root_fd = open(c->http_root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (h->root_fd < 0) {
        snprintf(errmsg, len, "%s: [http] root = %s: %s", c->path, c->http_root, strerror(errno));
        goto fail;
    }
    err = mime_load(MIME_TYPES_PATH, &h->mime);
    if (err < 0) {
        snprintf(errmsg, len, "%s: %s", MIME_TYPES_PATH, strerror(-err));
        goto fail;
    }
    h->cache = http_cache_new(h->root_fd, c->http_index, h->mime);
    if (h->cache == NULL) {
        snprintf(errmsg, len, "%s", strerror(ENOMEM));
        goto fail;
    }
    if (c->http_access_log != NULL) {
        err = access_log_open(&h->alog, c->http_access_log);
        if (err < 0) {
            snprintf(errmsg, len, "%s: [http] access_log = %s: %s", c->path,
                     c->http_access_log, strerror(-err));
            goto fail;
        }
    }
    return h;
fail:
    http_server_free(h);
    return NULL;
}

void http_server_free(struct http_server *h)
{
    if (h == NULL)
        return;
    while (h->pool != NULL) {
        struct http_conn *next = h->pool->next;
        free(h->pool);
        h->pool = next;
    }
    if (h->draining)
        ev_timer_stop(h->loop, &h->drain_timer);
    http_cache_free(h->cache);
    if (h->root_fd >= 0)
        close(h->root_fd);
    if (h->mime != NULL)
        mime_free(h->mime);
    access_log_close(&h->alog);
    free(h);
}
