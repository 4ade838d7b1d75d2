"""`credbroker serve --workers N`: N broker processes on one port, for more than one core.

Each worker is a whole `credbroker serve` process listening with SO_REUSEPORT, so the kernel
spreads new connections over them; nothing is shared in memory. What must be one across them
already is: rotation and other scheduled jobs take the state store's lock, the audit trail is
appended with one O_APPEND write per record, the sealed fallback file is replaced atomically.
Per-process counters (Prometheus) are aggregated through prometheus-client's multiprocess mode
in a directory this supervisor makes and removes; fair-use rates are divided among the
workers (web/limits.py counts per process).

The supervisor only starts, watches and stops: a worker that dies is started again (at most
`_MAX_RESTARTS` in `_RESTART_WINDOW` seconds, then the supervisor gives up and stops all, so a
crash loop is loud); SIGTERM and SIGINT stop every worker and wait for them; SIGHUP is passed
on (each worker handles it as a single `serve` does).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from types import FrameType

from prometheus_client import multiprocess

log = logging.getLogger("credbroker.web.workers")

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_ENV = "CREDBROKER_WORKER"  # "index/count" in each worker's environment
_MAX_RESTARTS = 5
_RESTART_WINDOW = 60.0
_STOP_GRACE = 30.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def worker_slot() -> tuple[int, int] | None:
    """(index, count) when this process is one of several workers, else None."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    index, _, count = value.partition("/")
    return int(index), int(count)


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """A bound (not listening) SO_REUSEPORT socket holding `port`, or a free one for 0, so
    every worker binds the same port and nothing else takes it meanwhile."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock, int(sock.getsockname()[1])


class Supervisor:
    def __init__(self, worker_argv: Sequence[str], workers: int) -> None:
        self._argv = list(worker_argv)
        self._count = workers
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._restarts: deque[float] = deque()
        self._stopping = False
        self._hup = False
        self._metrics_dir = tempfile.mkdtemp(prefix="credbroker-metrics-")

    def _start(self, index: int) -> None:
        env = {
            **os.environ,
            WORKER_ENV: f"{index}/{self._count}",
            METRICS_DIR_ENV: self._metrics_dir,
        }
        self._procs[index] = subprocess.Popen(  # noqa: S603 - our own CLI
            self._argv,
            env=env,
            # The supervisor has no threads, so a pre-exec hook is safe here.
            preexec_fn=_die_with_supervisor,
        )
        log.info("worker %d started (pid %d)", index, self._procs[index].pid)

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._hup = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        status = 0
        try:
            for index in range(self._count):
                self._start(index)
            while not self._stopping:
                time.sleep(0.2)
                if self._hup:
                    self._hup = False
                    self._signal_all(signal.SIGHUP)
                for index, proc in list(self._procs.items()):
                    code = proc.poll()
                    if code is None or self._stopping:
                        continue
                    log.error("worker %d (pid %d) exited with %d", index, proc.pid, code)
                    # Its "live" gauges (in flight, degraded) no longer count.
                    multiprocess.mark_process_dead(proc.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
                    if not self._may_restart():
                        log.error(
                            "workers exited %d times within %.0f s: stopping all",
                            _MAX_RESTARTS,
                            _RESTART_WINDOW,
                        )
                        status = 1
                        self._stopping = True
                        break
                    self._start(index)
        finally:
            self._stop_all()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        return status

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self._restarts.append(now)
        while self._restarts and now - self._restarts[0] > _RESTART_WINDOW:
            self._restarts.popleft()
        return len(self._restarts) <= _MAX_RESTARTS

    def _signal_all(self, signum: int) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def _stop_all(self) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE
        for index, proc in self._procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop within %.0f s: killed", index, _STOP_GRACE)
                proc.kill()
                proc.wait()


def _die_with_supervisor() -> None:  # pragma: no cover - runs in the child before exec
    """A worker gets SIGTERM when the supervisor dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG): no orphan keeps serving the port, or the metrics directory, alone."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_command(config: str, host: str, port: int, workers: int) -> list[str]:
    """The command line of one worker: `serve` itself, on the reserved port (the worker knows
    it is one from its environment, WORKER_ENV)."""
    return [
        sys.executable,
        "-m",
        "credbroker",
        "serve",
        "--config",
        config,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
