"""`credbroker secrets copy`: carry secrets from one configured store into another (a new
embedded store sealed under a new key, runbooks/05-seal-key.md; or from the embedded store to
Vault) without a person ever seeing or typing a value.

By default every secret the source config names is copied (wiring.configured_secret_paths and
other_secret_paths: the service key, the read-only fallback key, each managed credential's key
and its object-store admin key, the compliance check's key, the audit signing key, the
Confluence credentials); `--path` names others, `--except` leaves some out (a path option 1
of runbook 05 fills with a newly issued key). Each is written with check-and-set 0: a path the
target already holds is left alone if it holds the same fields and values, refused otherwise.
Output and audit records name paths, versions and field names, never a value.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from credbroker import wiring
from credbroker.config import Settings, load_settings
from credbroker.errors import CasMismatch, ConfigError, CredbrokerError


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    """`copy` under `credbroker secrets` (config_arg unused: it takes two configs)."""
    p = sub.add_parser(
        "copy",
        help="copy secrets from the store of one config into the store of another, "
        "never showing a value",
    )
    p.add_argument("--from-config", type=Path, required=True, help="the config to read from")
    p.add_argument("--to-config", type=Path, required=True, help="the config to write to")
    p.add_argument(
        "--path",
        action="append",
        dest="paths",
        default=None,
        help="a secret path to copy (repeatable; default: every secret the source config names)",
    )
    p.add_argument(
        "--except",
        action="append",
        dest="skip",
        default=[],
        metavar="PATH",
        help="leave this path out (repeatable)",
    )
    p.set_defaults(func=_copy)


def _copy(args: argparse.Namespace) -> int:
    source = load_settings(args.from_config)
    target = load_settings(args.to_config)
    if source.secret_store == target.secret_store:
        raise ConfigError("--from-config and --to-config name the same secret store")
    paths = [
        p
        for p in (
            args.paths or wiring.configured_secret_paths(source) + wiring.other_secret_paths(source)
        )
        if p not in args.skip
    ]
    if not paths:
        raise ConfigError("nothing to copy")
    return asyncio.run(_copy_paths(source, target, paths))


async def _copy_paths(source: Settings, target: Settings, paths: list[str]) -> int:
    reader = wiring.build_secret_store(source)
    writer = wiring.build_secret_store(target)
    audit = wiring.build_audit(target)
    try:
        for path in paths:
            secret = await reader.read(path)
            data = dict(secret.data)
            try:
                version = await writer.write(path, data, cas=0)
                what = f"copied as version {version}"
            except CasMismatch:
                present = await writer.read(path)
                if dict(present.data) != data:
                    raise CredbrokerError(
                        f"{path}: the target store already holds a different secret there "
                        f"(version {present.version}); nothing overwritten",
                        code="secret_differs",
                    ) from None
                version = present.version
                what = f"already there as version {version}"
            fields = sorted(data)
            print(f"{path}: {what} ({', '.join(fields)})")
            await audit.record(
                {
                    "ts": datetime.now(UTC).isoformat(),
                    "event": "secret_copied",
                    "path": path,
                    "from_version": secret.version,
                    "version": version,
                    "fields": fields,
                    "via": "cli",
                    "os_user": getpass.getuser(),
                }
            )
    finally:
        await audit.close()
        await writer.close()
        await reader.close()
    return 0
