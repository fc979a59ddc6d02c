/* libprefork: Tornado's server core (bind_sockets, add_accept_handler,
 * fork_processes, TCPServer, IOStream) in C on libev. One include for all. */
#ifndef PF_PREFORK_H
#define PF_PREFORK_H

#define PF_VERSION "0.1.0"

#include "netutil.h"
#include "iostream.h"
#include "process.h"
#include "tcpserver.h"

#endif
