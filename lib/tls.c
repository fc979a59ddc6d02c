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
    if (SSL_CTX_use_certificate_chain_file(ctx, certificate) != 1) {
        snprintf(errmsg, PF_ERRMSG_SIZE, "certificate %s: %s", certificate,
                 tls_reason("cannot be loaded"));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
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

void pf__tls_shutdown(SSL *ssl)
{
    if (SSL_is_init_finished(ssl))
        SSL_shutdown(ssl);
    ERR_clear_error();
}
