/* tls_config: the [tls] section turned into an OpenSSL server context. */
#ifndef PREFORKD_TLS_CONFIG_H
#define PREFORKD_TLS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct ssl_ctx_st;

/* Certificates expiring sooner than this get a warning from -t and at start. */
#define TLS_EXPIRY_WARNING_DAYS 14

/* Whether any listener of c is marked ssl. */
bool tls_config_needed(const struct config *c);
/*
 * A server context for c: certificate and key (checked: they parse, match,
 * and the certificate has not expired), protocols, ciphers, session tickets,
 * and ALPN "http/1.1" for the http handler. NULL with errmsg naming the
 * file, line-less key and cause. *warning (may be NULL) gets a note when the
 * certificate expires within TLS_EXPIRY_WARNING_DAYS ("" otherwise).
 */
struct ssl_ctx_st *tls_config_ctx_new(const struct config *c, char *errmsg, size_t len,
                                      char *warning, size_t wlen);

#endif
