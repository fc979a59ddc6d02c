/* OpenSSL calls iostream.c makes, kept apart so that the plain path does not
 * read like a TLS one. Not installed. */
#ifndef PF_TLS_INTERNAL_H
#define PF_TLS_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>
#include <openssl/ssl.h>

#include "tls.h"

/* What an operation waits for before it can go on. */
enum pf__tls_want { PF__TLS_WANT_NOTHING, PF__TLS_WANT_READ, PF__TLS_WANT_WRITE };

/* > 0: bytes; 0: EOF (close_notify, or the peer just went away); -EAGAIN
 * with *want set; else -errno (-EPROTO for a TLS error). */
ssize_t pf__tls_read(SSL *ssl, void *buf, size_t len, enum pf__tls_want *want);
/* > 0: bytes taken; 0 with *want set: try again later; else -errno. */
ssize_t pf__tls_write(SSL *ssl, const void *buf, size_t len, enum pf__tls_want *want);
/* 1: done; 0 with *want set; -EPROTO: failed. */
int pf__tls_handshake(SSL *ssl, enum pf__tls_want *want);
void pf__tls_info(SSL *ssl, struct pf_tls_info *out);
/* SSL_set_fd, but writes never raise SIGPIPE. 0 or -ENOMEM. */
int pf__tls_set_fd(SSL *ssl, int fd);
/* Sends close_notify if it can without blocking; never waits for the
 * peer's. True when the socket was full: call again once writable. */
bool pf__tls_shutdown(SSL *ssl);

#endif
