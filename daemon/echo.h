/* echo: the echo handler; sends every byte back on the same connection. */
#ifndef PREFORKD_ECHO_H
#define PREFORKD_ECHO_H

#include "tcpserver.h"

void echo_handle_stream(struct pf_tcp_server *srv, struct pf_iostream *s,
                        const struct sockaddr *peer, socklen_t len);

#endif
