"""`credbroker leases list` and `credbroker revoke`: leases and revocation from the command
line, on the same state store (and object store) as the servers.

    credbroker leases list [--client C] [--space S] [--active] [--limit N] [--json]
    credbroker revoke (--lease ID | --client C | --space S | --issued-before T) [--reason TEXT]
                      [--json]

`revoke` exits 0 when the object store refuses the revoked keys from now on, 5 when the
revocation is recorded but the object store cannot enforce it (the keys work until they
expire: the output says why), 2 on a refusal (unknown lease, malformed selector, too many
denials).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from credbroker import wiring
from credbroker.config import load_settings
from credbroker.leases import LeaseFilter, Selector, check_name

EXIT_NOT_ENFORCED = 5


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    leases = sub.add_parser("leases", help="keys and presigned URLs handed out")
    lsub = leases.add_subparsers(required=True, metavar="ACTION")
    p = lsub.add_parser("list", help="leases, newest first (key ids, never a secret)")
    config_arg(p)
    p.add_argument("--client", help="only this client's leases")
    p.add_argument("--space", help="only leases of this space")
    p.add_argument("--active", action="store_true", help="only leases neither expired nor revoked")
    p.add_argument("--limit", type=int, default=1000, help="at most N (default 1000)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_list)

    p = sub.add_parser(
        "revoke",
        help="revoke leases: the object store refuses their keys where it can (RGW)",
    )
    config_arg(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--lease", metavar="ID", help="one lease (cb-...)")
    which.add_argument("--client", metavar="C", help="every active lease of a client")
    which.add_argument("--space", metavar="S", help="every active lease of a space")
    which.add_argument(
        "--issued-before",
        metavar="T",
        help="every key issued before T (ISO 8601 with a zone, e.g. 2026-01-02T03:04:05Z)",
    )
    p.add_argument("--reason", help="for the audit record")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_revoke)


def _list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if not 1 <= args.limit <= 100_000:
        print("credbroker: --limit must be 1 to 100000", file=sys.stderr)
        return 2
    now = datetime.now(UTC)
    wanted = LeaseFilter(
        client=check_name(args.client, "client") if args.client else None,
        space=check_name(args.space, "space") if args.space else None,
        active_at=now if args.active else None,
        limit=args.limit,
    )

    async def find() -> list[dict[str, Any]]:
        async with wiring.standalone_leases(settings) as tools:
            return [x.as_dict(now) for x in await tools.leases.find(wanted)]

    found = asyncio.run(find())
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no leases")
        return 0
    print(
        f"{'LEASE':<28} {'STATE':<8} {'CLIENT':<20} {'SPACE':<10} {'ACCESS':<6} "
        f"{'EXPIRES':<21} ACCESS KEY"
    )
    for x in found:
        print(
            f"{x['leaseId']:<28} {x['state']:<8} {x['client']:<20} {x['space'] or '-':<10} "
            f"{x['access']:<6} {x['expiresAt']:<21} {x['accessKeyId'] or '-'}"
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.lease:
        selector, value = Selector.LEASE, args.lease
    elif args.client:
        selector, value = Selector.CLIENT, args.client
    elif args.space:
        selector, value = Selector.SPACE, args.space
    else:
        selector, value = Selector.ISSUED_BEFORE, args.issued_before

    async def revoke() -> dict[str, Any]:
        async with wiring.standalone_leases(settings) as tools:
            answer = await tools.revoker.revoke(
                selector, value, by=f"cli:{getpass.getuser()}", reason=args.reason
            )
            return answer.as_dict()

    answer = asyncio.run(revoke())
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(
            f"revocation {answer['revocationId']}: {answer['leases']} leases revoked "
            f"({selector.value} {value})"
        )
        for lease_id in answer["leaseIds"]:
            print(f"  {lease_id}")
        enforced = "yes" if answer["objectStoreEnforced"] else "NO"
        print(f"object store enforced: {enforced}: {answer['detail']}")
    return 0 if answer["objectStoreEnforced"] else EXIT_NOT_ENFORCED
