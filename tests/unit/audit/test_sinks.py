"""The same chained records to standard output and to a syslog receiver on loopback (RFC 5424
over UDP, and over TCP with RFC 6587 octet counting); what the receiver got verifies."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credbroker.audit.chain import ChainedAudit, verify_lines
from credbroker.audit.stdout import StdoutLines
from credbroker.audit.syslog import SyslogLines
from credbroker.errors import AuditUnavailable

KEY = Ed25519PrivateKey.generate()
HEADER = re.compile(rb"^<86>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S+ credbroker \d+ audit - \{")


class Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.got.append(data)


@pytest.fixture
async def udp() -> AsyncIterator[tuple[Udp, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def test_udp_syslog_receives_a_verifiable_chain(udp: tuple[Udp, int]) -> None:
    receiver, port = udp
    audit = ChainedAudit(
        [SyslogLines("127.0.0.1", port, protocol="udp")], signer=KEY, checkpoint_seconds=None
    )
    for n in range(3):
        await audit.record({"event": "vend", "n": n})
    await audit.close()
    for _ in range(50):
        if len(receiver.got) == 4:
            break
        await asyncio.sleep(0.01)
    assert len(receiver.got) == 4
    assert all(HEADER.match(m) for m in receiver.got)
    report = verify_lines(
        ((f"udp:{i}", m) for i, m in enumerate(receiver.got)),
        KEY.public_key(),
        alive=lambda _: False,
    )
    assert report.ok, report.first_problem()
    assert next(iter(report.chains.values())).status == "closed"


async def test_tcp_syslog_frames_by_octet_count_and_verifies() -> None:
    frames: list[bytes] = []
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                length = await reader.readuntil(b" ")
            except asyncio.IncompleteReadError:
                break
            frames.append(await reader.readexactly(int(length)))
            if len(frames) == 3:
                done.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    audit = ChainedAudit(
        [SyslogLines("127.0.0.1", port, protocol="tcp")], signer=KEY, checkpoint_seconds=None
    )
    await audit.record({"event": "vend", "n": 1})
    await audit.record({"event": "vend", "n": 2})
    await audit.close()
    await asyncio.wait_for(done.wait(), 5)
    server.close()
    await server.wait_closed()
    report = verify_lines(
        ((f"tcp:{i}", f) for i, f in enumerate(frames)), KEY.public_key(), alive=lambda _: False
    )
    assert report.ok and next(iter(report.chains.values())).last_seq == 3


async def test_a_syslog_receiver_that_is_gone_refuses_the_record() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    audit = ChainedAudit(
        [SyslogLines("127.0.0.1", port, protocol="tcp", timeout_seconds=1)],
        signer=None,
        checkpoint_seconds=None,
    )
    with pytest.raises(AuditUnavailable):
        await audit.record({"event": "vend"})
    await audit.close()


async def test_stdout_gets_one_json_line_per_record() -> None:
    stream = io.BytesIO()
    audit = ChainedAudit([StdoutLines(stream)], signer=KEY, checkpoint_seconds=None)
    await audit.record({"event": "vend"})
    await audit.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith(b'{"chain":')
    report = verify_lines(
        ((str(i), x) for i, x in enumerate(lines)), KEY.public_key(), alive=lambda _: False
    )
    assert report.ok
