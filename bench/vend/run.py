"""One benchmark run: the three targets, each concurrency and round, then the optional profile."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from bench.vend.measurement import Call, Summary, measure
from bench.vend.processes import Broker, raise_interrupt, rgw_pids
from bench.vend.profile import profile_broker
from bench.vend.seeding import ACCESS, BUCKET, SPACE, SPACE_PREFIX, TTL_SECONDS
from credbroker.domain import AccessKey, Flavor, Scope
from credbroker.objectstore.sts import StsIssuer
from credbroker.policy import render_policy, session_policy
from support.rgw_server import RgwServer

RAW = "raw STS (aiobotocore)"  # the issue's baseline: the targets are against this one
ISSUER = "STS via StsIssuer"  # the broker's own STS code, in-process: what the HTTP front adds


class BrokerError(Exception):
    pass


@contextlib.asynccontextmanager
async def _closing_issuer(issuer: StsIssuer) -> AsyncIterator[StsIssuer]:
    try:
        yield issuer
    finally:
        await issuer.close()


async def run_benchmark(
    server: RgwServer,
    brokers: list[Broker],
    token: str,
    args: argparse.Namespace,
) -> tuple[list[Summary], dict[str, Any]]:
    # Inside the loop, SIGTERM cancels the main task, as asyncio.run does for SIGINT: an
    # exception raised from a signal handler in the middle of a callback can leave the loop
    # waiting forever.
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        return await _run_benchmark(server, brokers, token, args)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)  # this resets it to SIG_DFL
        signal.signal(signal.SIGTERM, raise_interrupt)


async def _run_benchmark(
    server: RgwServer,
    brokers: list[Broker],
    token: str,
    args: argparse.Namespace,
) -> tuple[list[Summary], dict[str, Any]]:
    scope = Scope(bucket=BUCKET, prefix=SPACE_PREFIX, access=ACCESS)
    policy = render_policy(session_policy(scope, flavor=Flavor.RGW), flavor=Flavor.RGW)
    max_conc = max(args.concurrency)
    pool = max(64, max_conc)
    rgw = rgw_pids(server)
    extra: dict[str, Any] = {"policy_chars": len(policy)}

    sts_config = AioConfig(
        max_pool_connections=pool,
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
    )
    body = json.dumps({"space": SPACE, "access": ACCESS.value}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    issuer = StsIssuer(
        endpoint=server.endpoint,
        region=server.region,
        role_arn=server.vend_role_arn,
        max_connections=pool,
    )
    parent = AccessKey(server.broker_access_key, server.broker_secret_key)
    async with (
        _closing_issuer(issuer),
        get_session().create_client(
            "sts",
            endpoint_url=server.endpoint,
            region_name=server.region,
            aws_access_key_id=server.broker_access_key,
            aws_secret_access_key=server.broker_secret_key,
            config=sts_config,
        ) as sts,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool, limit_per_host=pool),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as http_session,
    ):

        async def raw_call() -> None:
            answer = await sts.assume_role(
                RoleArn=server.vend_role_arn,
                RoleSessionName="cb-" + secrets.token_hex(12),
                Policy=policy,
                DurationSeconds=TTL_SECONDS,
            )
            if not answer["Credentials"]["AccessKeyId"]:
                raise BrokerError("no AccessKeyId")

        async def issuer_call() -> None:
            await issuer.assume_role(
                parent,
                policy=policy,
                duration_seconds=TTL_SECONDS,
                session_name="cb-" + secrets.token_hex(12),
            )

        def broker_call(url: str) -> Call:
            async def call() -> None:
                async with http_session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    if response.status != 201:
                        raise BrokerError(f"{response.status} {payload[:200]!r}")

            return call

        # One check of each before timing anything: a broken set-up fails here, loudly.
        await raw_call()
        await issuer_call()
        for broker in brokers:
            broker.rss_before_kib = broker.kib("VmRSS")
            await broker_call(broker.url)()

        targets: list[tuple[str, Call, dict[str, list[int]]]] = [
            (RAW, raw_call, {"rgw": rgw}),
            (ISSUER, issuer_call, {"rgw": rgw}),
        ]
        for broker in brokers:
            targets.append(
                (broker.label, broker_call(broker.url), {"broker": broker.pids(), "rgw": rgw})
            )
        summaries = {
            (name, c): Summary(name, c, []) for c in args.concurrency for name, _, _ in targets
        }
        for concurrency in args.concurrency:
            for round_no in range(args.rounds):
                # Rotate the order each round: no target always runs right after another.
                shift = round_no % len(targets)
                for name, call, pids in targets[shift:] + targets[:shift]:
                    result = await measure(
                        name,
                        call,
                        requests=args.requests,
                        warmup=args.warmup,
                        concurrency=concurrency,
                        pids=pids,
                    )
                    summaries[(name, concurrency)].rounds.append(result)
                    print(
                        f"  c={concurrency} round {round_no + 1}/{args.rounds} {name}: "
                        f"p50 {result.percentile_ms(50):.2f} ms, {result.throughput:.0f} req/s",
                        file=sys.stderr,
                    )
        for broker in brokers:
            broker.rss_after_kib = broker.kib("VmRSS")
            extra[f"hwm:{broker.label}"] = broker.kib("VmHWM")

        if args.profile_broker:
            extra["profile"] = await profile_broker(
                brokers[0],
                broker_call(brokers[0].url),
                out=args.profile_broker,
                requests=args.profile_requests,
                concurrency=max_conc,
            )
    return list(summaries.values()), extra
