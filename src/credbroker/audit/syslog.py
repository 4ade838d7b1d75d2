"""Chained audit lines to a syslog server as RFC 5424 messages, over UDP (RFC 5426: one
message per datagram) or TCP (RFC 6587 octet counting: "LEN SP MSG").

The message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - JSON` with PRI = facility * 8
+ severity 6 (informational), MSGID "audit", no structured data, and the JSON record as MSG
(MSG-ANY, no BOM). `credbroker audit verify` reads such lines as well as plain JSON lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from datetime import UTC, datetime

INFORMATIONAL = 6


def rfc5424(
    line: bytes, *, facility: int, app_name: str, hostname: str, when: datetime | None = None
) -> bytes:
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    pri = facility * 8 + INFORMATIONAL
    header = f"<{pri}>1 {stamp} {hostname[:255] or '-'} {app_name[:48]} {os.getpid()} audit -"
    return header.encode("ascii", "replace") + b" " + line


class SyslogLines:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        protocol: str = "udp",
        facility: int = 10,  # authpriv
        app_name: str = "credbroker",
        timeout_seconds: float = 5.0,
    ) -> None:
        self.name = f"syslog-{protocol}"
        self._address = (host, port)
        self._protocol = protocol
        self._facility = facility
        self._app_name = app_name
        self._hostname = socket.gethostname()
        self._timeout = timeout_seconds
        self._udp: socket.socket | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def write(self, line: bytes) -> None:
        message = rfc5424(
            line, facility=self._facility, app_name=self._app_name, hostname=self._hostname
        )
        if self._protocol == "udp":
            await self._send_udp(message)
        else:
            await self._send_tcp(str(len(message)).encode() + b" " + message)

    async def _send_udp(self, message: bytes) -> None:
        loop = asyncio.get_running_loop()
        if self._udp is None:
            infos = await loop.getaddrinfo(*self._address, type=socket.SOCK_DGRAM)
            family, kind, proto, _, address = infos[0]
            udp = socket.socket(family, kind, proto)
            udp.setblocking(False)
            udp.connect(address)
            self._udp = udp
        await asyncio.wait_for(loop.sock_sendall(self._udp, message), self._timeout)

    async def _send_tcp(self, frame: bytes) -> None:
        for attempt in (1, 2):  # one reconnect: the server may have closed an idle connection
            try:
                writer = self._writer
                if writer is None or writer.is_closing():
                    _, writer = await asyncio.wait_for(
                        asyncio.open_connection(*self._address), self._timeout
                    )
                    self._writer = writer
                assert writer is not None
                writer.write(frame)
                await asyncio.wait_for(writer.drain(), self._timeout)
                return
            except (OSError, TimeoutError):
                await self._drop()
                if attempt == 2:
                    raise

    async def _drop(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        await self._drop()
