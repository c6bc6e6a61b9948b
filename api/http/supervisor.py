"""`tollgate serve --workers N`: N uvicorn servers sharing one listening socket, under a
supervisor that stops taking connections the moment a drain starts.

uvicorn's own multi-process mode keeps the supervisor's copy of the listening socket open
until every worker has exited. Once the workers closed theirs, the kernel still completed
handshakes on it and queued the connections nobody would accept, then reset them when the
supervisor exited: a load balancer saw a POST accepted and never answered. Here the supervisor
closes its copy first, then asks each worker to drain (each closes its own copy at once), so a
new connection is refused from the first instant, whatever the worker count.

Built on uvicorn's public API: `Config.bind_socket`, `Config.configure_logging` and
`Server.run(sockets=...)`, the pieces its documentation gives for running servers by hand.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess

import uvicorn

logger = logging.getLogger("tollgate.serve")

# A worker that dies this soon after starting would fail the same way again (a bad config, a
# broken import): the supervisor stops rather than restarting it in a loop.
FAILED_START_SECONDS = 5.0
CHECK_SECONDS = 0.5


def _serve(config: uvicorn.Config, listening: socket.socket) -> None:
    """One worker process: its own logging, one uvicorn server on the shared socket. uvicorn
    handles SIGTERM and SIGINT itself (a second SIGINT forces the exit)."""
    config.configure_logging()
    uvicorn.Server(config).run(sockets=[listening])


class Supervisor:
    def __init__(self, config: uvicorn.Config, workers: int) -> None:
        self.config = config
        self.workers = workers
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[tuple[BaseProcess, float]] = []
        self.stop_signals: list[int] = []
        self.wake = threading.Event()

    def run(self) -> int:
        listening = self.config.bind_socket()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for _ in range(self.workers):
                self._start(listening)
            exit_code = self._watch(listening)
        finally:
            # Refuse new connections before anything else: the workers close their copies as
            # soon as they get the signal below, and the socket stops listening with the last.
            listening.close()
            self._drain()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return exit_code

    def _on_signal(self, sig: int, _frame: object) -> None:
        self.stop_signals.append(sig)
        self.wake.set()

    def _start(self, listening: socket.socket) -> None:
        process = self.context.Process(target=_serve, args=(self.config, listening), name="tollgate-worker", daemon=False)
        process.start()
        self.processes.append((process, time.monotonic()))
        logger.info("started worker %s", process.pid)

    def _watch(self, listening: socket.socket) -> int:
        """Until a stop signal: replace a worker that died, unless it died at start."""
        while not self.stop_signals:
            self.wake.wait(CHECK_SECONDS)
            if self.stop_signals:
                break
            for process, started in list(self.processes):
                if process.is_alive():
                    continue
                self.processes.remove((process, started))
                if time.monotonic() - started < FAILED_START_SECONDS:
                    logger.error("worker %s exited at start (code %s): stopping", process.pid, process.exitcode)
                    return 1
                logger.warning("worker %s died (code %s): starting another", process.pid, process.exitcode)
                self._start(listening)
        logger.info("received %s: draining the workers", signal.Signals(self.stop_signals[0]).name)
        return 0

    def _signal_workers(self, sig: int) -> None:
        for process, _ in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, sig)

    def _drain(self) -> None:
        self._signal_workers(signal.SIGTERM)
        forced = False
        while any(process.is_alive() for process, _ in self.processes):
            # A second SIGINT (Ctrl+C twice) forces the workers' exit, as with one process.
            if not forced and self.stop_signals.count(signal.SIGINT) > 1:
                forced = True
                self._signal_workers(signal.SIGINT)
            self.wake.clear()
            self.wake.wait(CHECK_SECONDS)
        for process, _ in self.processes:
            process.join()
