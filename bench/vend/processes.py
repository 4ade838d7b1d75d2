"""The processes a run starts and stops (the broker, the RGW), and what /proc says of them."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.rgw_server import SCRIPT, RgwServer, free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Live child processes of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def status_kib(pid: int, key: str) -> int | None:
    """A kB figure of /proc/PID/status (VmRSS, VmHWM), or None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values)
    return (total - idle) / CLK_TCK, total / CLK_TCK


def loaded_uvloop(pid: int) -> bool:
    try:
        return "uvloop" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


# ----------------------------------------------------------------------------- the broker


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # PR_SET_PDEATHSIG: if the benchmark is SIGKILLed, the broker still goes.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    os.setsid()  # Ctrl-C reaches the benchmark only; it stops the broker itself


@dataclass
class Broker:
    label: str
    loop: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    rss_before_kib: int | None = None
    rss_after_kib: int | None = None
    workers: int = 1

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The processes that serve: the broker itself, or with --workers its workers."""
        return [self.pid] if self.workers == 1 else children(self.pid)

    def kib(self, key: str) -> int | None:
        """VmRSS or VmHWM summed over the serving processes."""
        values = [status_kib(pid, key) for pid in self.pids()]
        return None if not values or None in values else sum(v for v in values if v)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/credentials"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


_UVLOOP_LAUNCHER = (
    "import sys, uvloop; uvloop.install(); "
    "from credbroker.cli import main; sys.exit(main(sys.argv[1:]))"
)


def start_broker(state: Path, config: Path, loop: str, label: str, workers: int = 1) -> Broker:
    port = free_port()
    if loop == "asyncio":
        exe = Path(sys.executable).parent / "credbroker"
        argv = [str(exe) if exe.exists() else shutil.which("credbroker") or "credbroker"]
    elif loop == "uvloop":
        argv = [sys.executable, "-c", _UVLOOP_LAUNCHER]
    else:
        raise SystemExit(f"unknown --broker-loop {loop!r} (asyncio or uvloop)")
    argv += ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers)]
    log_path = state / f"broker-{loop}-{workers}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state,
            preexec_fn=_die_with_parent,  # no threads yet at this point
        )
    return Broker(label, loop, port, proc, log_path, workers=workers)


def wait_healthy(broker: Broker, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.proc.poll() is not None:
            raise RuntimeError(
                f"broker ({broker.loop}) exited {broker.proc.returncode}:\n{broker.log_tail()}"
            )
        conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=1.0)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError(f"broker ({broker.loop}) not healthy after {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# ----------------------------------------------------------------------------- the RGW


def rgw_pids(server: RgwServer) -> list[int]:
    """radosgw, ceph-osd and ceph-mon of this RGW (their pid files), for CPU accounting."""
    pids = []
    for name in ("client.rgw", "osd.0", "mon.a"):
        try:
            pid = int((server.dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{pid}").exists():
            pids.append(pid)
    return pids


def stop_rgw_dir(rgw_dir: Path) -> None:
    """Stop the daemons started from rgw_dir (idempotent; also after an interrupted `up`)."""
    if not (rgw_dir / ".credbroker-rgw-dev").exists():
        return
    subprocess.run(
        ["bash", str(SCRIPT), "down", str(rgw_dir)],
        capture_output=True,
        timeout=90,
        check=False,
    )


# ----------------------------------------------------------------------------- signals


def raise_interrupt(signum: int, _frame: Any) -> None:
    """A SIGTERM handler: stop like Ctrl-C does (the clean-up runs)."""
    raise KeyboardInterrupt(f"signal {signum}")
