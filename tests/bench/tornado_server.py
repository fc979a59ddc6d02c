#!/usr/bin/python3
"""Tornado's own pre-fork pattern serving static files: the benchmark's
Python baseline (Debian's python3-tornado). bind_sockets before the fork,
fork_processes(N) (the parent only supervises), then one HTTPServer per
child on the inherited sockets. Access logging is off, as for every server
in the benchmark.

usage: tornado_server.py PORT WORKERS ROOT
"""
import asyncio
import ctypes
import os
import signal
import sys

import tornado.netutil
import tornado.process
from tornado.httpserver import HTTPServer
from tornado.web import Application, StaticFileHandler

PR_SET_PDEATHSIG = 1


def die_with_parent():
    """The children go when the supervising parent goes (no orphans)."""
    ppid = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != ppid:
        sys.exit(0)


async def serve(sockets, root):
    app = Application([(r"/(.*)", StaticFileHandler,
                        {"path": root, "default_filename": "index.html"})],
                      log_function=lambda handler: None)
    HTTPServer(app).add_sockets(sockets)
    await asyncio.Event().wait()


def main():
    port, workers, root = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    sockets = tornado.netutil.bind_sockets(port, address="127.0.0.1")
    tornado.process.fork_processes(workers)
    die_with_parent()
    asyncio.run(serve(sockets, root))


if __name__ == "__main__":
    main()
