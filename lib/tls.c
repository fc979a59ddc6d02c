/*
 * tls: OpenSSL's non-blocking calls turned into libprefork's conventions
 * (bytes or -errno, and which readiness to wait for), and a server context
 * from PEM files. When to call them is iostream.c's business.
 */
#include "tls_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "netutil.h"        /* PF_ERRMSG_SIZE */

/* OpenSSL's reason for the last failure, or fallback. */
static const char *tls_reason(const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;

    return r != NULL ? r : fallback;
}

struct ssl_ctx_st *pf_tls_server_ctx_new(const char *certificate, const char *key,
                                         char *errmsg)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    ERR_clear_error();
    if (ctx == NULL) {
        snprintf(errmsg, PF_ERRMSG_SIZE, "TLS context: %s", tls_reason("out of memory"));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Partial writes let a queued buffer go out as the socket takes it. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
    /* OpenSSL's last error for a missing file is "system lib": say why. */
    if (access(certificate, R_OK) < 0 || access(key, R_OK) < 0) {
        const char *which = access(certificate, R_OK) < 0 ? certificate : key;
        snprintf(errmsg, PF_ERRMSG_SIZE, "%s %s: %s", which == certificate ? "certificate" : "key",
                 which, strerror(errno));
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, certificate) != 1) {
        snprintf(errmsg, PF_ERRMSG_SIZE, "certificate %s: %s", certificate,
                 tls_reason("cannot be loaded"));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        /* OpenSSL checks the pair here already; say it as we do below. */
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
            snprintf(errmsg, PF_ERRMSG_SIZE, "key %s: does not match certificate %s", key,
                     certificate);
        else
            snprintf(errmsg, PF_ERRMSG_SIZE, "key %s: %s", key, tls_reason("cannot be loaded"));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(errmsg, PF_ERRMSG_SIZE, "key %s: does not match certificate %s", key, certificate);
        goto fail;
    }
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

/* Maps SSL_get_error after a call that returned rc <= 0. */
static int tls_error(SSL *ssl, int rc, enum pf__tls_want *want)
{
    int e = SSL_get_error(ssl, rc);

    *want = PF__TLS_WANT_NOTHING;
    switch (e) {
    case SSL_ERROR_WANT_READ:
        *want = PF__TLS_WANT_READ;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        *want = PF__TLS_WANT_WRITE;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        /* errno 0: the peer closed without close_notify; treat as EOF. */
        return errno ? -errno : 0;
    default:
        ERR_clear_error();
        return -EPROTO;
    }
}

ssize_t pf__tls_read(SSL *ssl, void *buf, size_t len, enum pf__tls_want *want)
{
    int n;

    errno = 0;
    n = SSL_read(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    *want = PF__TLS_WANT_NOTHING;
    return n > 0 ? n : tls_error(ssl, n, want);
}

ssize_t pf__tls_write(SSL *ssl, const void *buf, size_t len, enum pf__tls_want *want)
{
    int n, rc;

    errno = 0;
    n = SSL_write(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    *want = PF__TLS_WANT_NOTHING;
    if (n > 0)
        return n;
    rc = tls_error(ssl, n, want);
    if (rc == -EAGAIN)
        return 0;
    return rc == 0 ? -EPIPE : rc;
}

int pf__tls_handshake(SSL *ssl, enum pf__tls_want *want)
{
    int rc;

    errno = 0;
    rc = SSL_do_handshake(ssl);
    *want = PF__TLS_WANT_NOTHING;
    if (rc == 1)
        return 1;
    rc = tls_error(ssl, rc, want);
    return rc == -EAGAIN ? 0 : -EPROTO;
}

/*
 * OpenSSL's socket BIO writes with write(2): a peer that went away raises
 * SIGPIPE, which kills a program that did not ignore it. Our BIO is the
 * socket BIO with its write done by send(MSG_NOSIGNAL), as plain streams do.
 */
static int nosigpipe_write(BIO *b, const char *buf, int len)
{
    int fd = (int)BIO_get_fd(b, NULL);
    ssize_t n = send(fd, buf, (size_t)len, MSG_NOSIGNAL);

    BIO_clear_retry_flags(b);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        BIO_set_retry_write(b);
    return (int)n;
}

static BIO_METHOD *nosigpipe_method(void)
{
    /* Built once and never changed: every stream of the process shares it. */
    static BIO_METHOD *m;

    if (m == NULL) {
        const BIO_METHOD *sock = BIO_s_socket();
        BIO_METHOD *nm = BIO_meth_new(BIO_TYPE_SOCKET, "pf_socket");

        if (nm == NULL)
            return NULL;
        BIO_meth_set_write(nm, nosigpipe_write);
        BIO_meth_set_read(nm, BIO_meth_get_read(sock));
        BIO_meth_set_puts(nm, BIO_meth_get_puts(sock));
        BIO_meth_set_ctrl(nm, BIO_meth_get_ctrl(sock));
        BIO_meth_set_create(nm, BIO_meth_get_create(sock));
        BIO_meth_set_destroy(nm, BIO_meth_get_destroy(sock));
        m = nm;
    }
    return m;
}

int pf__tls_set_fd(SSL *ssl, int fd)
{
    BIO_METHOD *m = nosigpipe_method();
    BIO *bio = m ? BIO_new(m) : NULL;

    if (bio == NULL)
        return -ENOMEM;
    BIO_set_fd(bio, fd, BIO_NOCLOSE);
    SSL_set_bio(ssl, bio, bio);
    /* A peer that just closes (no close_notify) reads as EOF, as on a plain
     * socket and in Tornado's SSLIOStream, not as a protocol error. */
    SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    return 0;
}

void pf__tls_info(SSL *ssl, struct pf_tls_info *out)
{
    const unsigned char *alpn = NULL;
    unsigned len = 0;

    out->protocol = SSL_get_version(ssl);
    out->cipher = SSL_get_cipher_name(ssl);
    SSL_get0_alpn_selected(ssl, &alpn, &len);
    out->alpn = len ? (const char *)alpn : NULL;
    out->alpn_len = len;
}

bool pf__tls_shutdown(SSL *ssl)
{
    bool again = false;

    if (SSL_is_init_finished(ssl)) {
        int rc = SSL_shutdown(ssl);
        /* 0: sent, the peer's is not awaited; WANT_WRITE: the socket is full. */
        again = rc < 0 && SSL_get_error(ssl, rc) == SSL_ERROR_WANT_WRITE;
    }
    ERR_clear_error();
    return again;
}
