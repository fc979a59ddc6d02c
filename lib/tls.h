/*
 * tls: what libprefork needs of OpenSSL: a server context from PEM files,
 * and the facts of a finished handshake. The streams themselves speak TLS
 * in iostream.c (pf_iostream_new_tls) and tcpserver.c (pf_tcp_server_set_tls).
 */
#ifndef PF_TLS_H
#define PF_TLS_H

#include <stddef.h>

/* OpenSSL's own type names, so that this header needs no OpenSSL header. */
struct ssl_ctx_st;

/* A handshake that has not finished after this long closes the stream. */
#define PF_TLS_HANDSHAKE_TIMEOUT_SEC 10.0
/* A closing stream whose socket is full waits this long for room to send
 * close_notify (the data before it is in the kernel already). */
#define PF_TLS_CLOSE_NOTIFY_SEC 2.0

/* What a handshake settled; strings live as long as the stream. */
struct pf_tls_info {
    const char *protocol;       /* "TLSv1.3" */
    const char *cipher;         /* "TLS_AES_256_GCM_SHA384" */
    const char *alpn;           /* the protocol ALPN chose, not NUL-terminated; NULL: none */
    size_t alpn_len;
};

/*
 * A server context from a PEM certificate chain and a PEM private key, with
 * TLS 1.2 as the lowest version. Checks that both files parse and that the
 * key matches the certificate. Returns NULL with errmsg (PF_ERRMSG_SIZE
 * bytes) naming the file and OpenSSL's reason. Free with SSL_CTX_free.
 */
struct ssl_ctx_st *pf_tls_server_ctx_new(const char *certificate, const char *key,
                                         char *errmsg);

#endif
