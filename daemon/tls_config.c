/*
 * tls_config: builds the SSL_CTX that TLS listeners serve with, from the
 * [tls] keys. The master builds it before forking, so every worker shares
 * the same session-ticket keys (a resumed session works whichever worker
 * takes it), and builds a new one on HUP: new certificate, new ticket keys.
 * Speaking TLS on a stream is libprefork's.
 */
#include "tls_config.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "prefork.h"

bool tls_config_needed(const struct config *c)
{
    for (size_t i = 0; i < c->n_listens; i++)
        if (c->listens[i].ssl)
            return true;
    return false;
}

/* ALPN: we speak HTTP/1.1 only; a client that offers only h2 gets none. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned inlen, void *arg)
{
    static const unsigned char http11[] = "\x08http/1.1";
    unsigned char *sel = NULL;

    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&sel, outlen, http11, sizeof(http11) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* Fails on an expired certificate; warns when it expires soon. */
static int check_expiry(SSL_CTX *ctx, const struct config *c, char *errmsg, size_t len,
                        char *warning, size_t wlen)
{
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    time_t soon = time(NULL) + (time_t)TLS_EXPIRY_WARNING_DAYS * 86400;

    if (cert == NULL)
        return 0;
    if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0) {
        snprintf(errmsg, len, "%s: [tls] certificate = %s: the certificate has expired",
                 c->path, c->tls_certificate);
        return -1;
    }
    if (warning != NULL && X509_cmp_time(X509_get0_notAfter(cert), &soon) <= 0)
        snprintf(warning, wlen, "%s: [tls] certificate = %s: expires within %d days", c->path,
                 c->tls_certificate, TLS_EXPIRY_WARNING_DAYS);
    return 0;
}

struct ssl_ctx_st *tls_config_ctx_new(const struct config *c, char *errmsg, size_t len,
                                      char *warning, size_t wlen)
{
    char why[PF_ERRMSG_SIZE];
    SSL_CTX *ctx;

    if (warning != NULL && wlen > 0)
        warning[0] = '\0';
    ctx = pf_tls_server_ctx_new(c->tls_certificate, c->tls_key, why);
    if (ctx == NULL) {
        snprintf(errmsg, len, "%s: [tls] %s", c->path, why);
        return NULL;
    }
    if (check_expiry(ctx, c, errmsg, len, warning, wlen) < 0)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, (int)c->tls_min_version);
    if (c->tls_ciphers != NULL && SSL_CTX_set_cipher_list(ctx, c->tls_ciphers) != 1 &&
        SSL_CTX_set_ciphersuites(ctx, c->tls_ciphers) != 1) {
        snprintf(errmsg, len, "%s: [tls] ciphers = %s: no cipher OpenSSL knows", c->path,
                 c->tls_ciphers);
        goto fail;
    }
    if (!c->tls_session_tickets)
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    if (c->handler == CONFIG_HANDLER_HTTP)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}
