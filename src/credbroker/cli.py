"""The operator's command line: serve, check-config, secrets, keys, principals, tokens, freezes
and rotation."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from credbroker import (
    cli_audit,
    cli_breakglass,
    cli_health,
    cli_leases,
    cli_owner_rotated,
    cli_principals,
    cli_secrets_copy,
    wiring,
)
from credbroker.config import Settings, load_settings, placeholder_token_hashes
from credbroker.domain import utc_text
from credbroker.errors import ConfigError, CredbrokerError, RotationBusy
from credbroker.observability import Metrics
from credbroker.policy import MAX_POLICY_CHARS, worst_case_policy_chars
from credbroker.rotation.model import Outcome, RunResult
from credbroker.secrets.sealing import new_key

DEFAULT_CONFIG = Path("config/credbroker.yaml")
_log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # botocore's signer logs canonical requests (a presigned URL's session token included) at
    # DEBUG, and urllib3 logs URLs: never let a verbose root logger pass those on.
    for noisy in ("botocore", "urllib3", "hvac"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code: int = args.func(args)
        return code
    except CredbrokerError as exc:
        print(f"credbroker: {exc.message}", file=sys.stderr)
        return 2


def config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG, help="YAML config")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="credbroker", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the broker")
    config_arg(p)
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
    p.add_argument(
        "--workers", type=int, help="override server.workers: broker processes on the port"
    )
    p.set_defaults(func=_serve)

    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_check_config)

    secrets = sub.add_parser("secrets", help="read and write the configured secret store")
    ssub = secrets.add_subparsers(required=True, metavar="ACTION")
    p = ssub.add_parser("put", help="write a JSON object read from standard input")
    config_arg(p)
    p.add_argument("path")
    p.add_argument("--cas", type=int, default=None, help="only if the current version is CAS")
    p.set_defaults(func=_secrets_put)
    p = ssub.add_parser("get", help="show a secret's version and field names")
    config_arg(p)
    p.add_argument("path")
    p.add_argument("--reveal", action="store_true", help="print the values too (break-glass)")
    p.set_defaults(func=_secrets_get)
    cli_secrets_copy.register(ssub, config_arg)

    p = sub.add_parser("keygen", help="print a new base64 AES-256 sealing key")
    p.set_defaults(func=lambda _args: print(new_key()) or 0)

    cli_principals.register(sub, config_arg)  # clients, tokens, freeze, unfreeze

    p = sub.add_parser("rotate", help="run due rotations of the broker's own keys (or force one)")
    config_arg(p)
    p.add_argument("--credential", help="only this managed credential (default: all)")
    p.add_argument(
        "--now",
        action="store_true",
        help="rotate even if not due: a new key (a rotation in progress is finished first)",
    )
    p.add_argument(
        "--wait", action="store_true", help="wait out the grace period and finish the rotation"
    )
    p.add_argument(
        "--end-grace",
        action="store_true",
        help="delete the old key of the rotation in progress now, before its grace is over "
        "(a leaked key: runbooks/06-rotation.md); never the grace --now starts",
    )
    p.set_defaults(func=_rotate)

    rotation = sub.add_parser("rotation", help="rotation of the broker's own keys")
    rsub = rotation.add_subparsers(required=True, metavar="ACTION")
    p = rsub.add_parser("status", help="key id (never the secret), age, last and next run, error")
    config_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_rotation_status)
    cli_leases.register(sub, config_arg)
    cli_audit.register(sub, config_arg)
    cli_breakglass.register(sub, config_arg)
    cli_health.register(sub, config_arg)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from credbroker.web import server
    from credbroker.web import workers as workers_module
    from credbroker.web.app import create_app

    settings = load_settings(args.config)
    # Validation refused these unless allow_insecure_transport is set: say so at every start.
    for target in settings.insecure_transport():
        _log.warning("insecure transport (allow_insecure_transport: true): %s", target)
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    if args.workers is not None:
        if not 1 <= args.workers <= 64:
            raise ConfigError("--workers must be between 1 and 64")
        settings = settings.model_copy(
            update={"server": settings.server.model_copy(update={"workers": args.workers})}
        )
    workers = settings.server.workers
    if workers > 1 and workers_module.worker_slot() is None:
        # This process only supervises; the port is held (SO_REUSEPORT, not listening) so that
        # --port 0 means one free port for all.
        held, port = workers_module.reserve_port(host, port)
        with held:
            command = workers_module.worker_command(str(args.config), host, port, workers)
            _log.info("starting %d workers on %s:%d", workers, host, port)
            return workers_module.Supervisor(command, workers).run()
    # Our own listener around aiohttp's runner: a cap on open connections and a deadline for
    # a first request's headers, which run_app lacks (web/server.py).
    server.run(
        create_app(settings),
        host=host,
        port=port,
        limits=settings.limits,
        tls=settings.server.tls,
        reuse_port=workers > 1,
    )
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    placeholders = placeholder_token_hashes(settings)
    if placeholders:
        raise ConfigError(
            f"{args.file}: token_sha256 of client(s) {', '.join(placeholders)} is a placeholder; "
            "make a token with `credbroker clients new-token` and put its hash there"
        )
    print(f"{args.file}: ok")
    print(f"  secret store: {settings.secret_store.kind}")
    for target in settings.insecure_transport():
        print(f"  insecure transport (allow_insecure_transport: true): {target}")
    flavor = settings.object_store.flavor
    print(f"  object store: {flavor.value} at {settings.object_store.endpoint}")
    for key, space in sorted(settings.spaces.items()):
        size = worst_case_policy_chars(space.bucket, space.prefix, flavor)
        print(
            f"  space {key}: s3://{space.bucket}/{space.prefix} (largest policy {size} of "
            f"{MAX_POLICY_CHARS} chars as {flavor.value} counts them)"
        )
    print(f"  clients: {', '.join(c.id for c in settings.clients) or '(none)'}")
    _print_identities(settings)
    for c in settings.rotation.credentials:
        schedule = c.schedule.to_schedule().describe()
        owner = c.driver.user or " and ".join(c.driver.users or [])
        print(
            f"  rotation {c.name}: {c.secret_path} ({c.driver.kind} user {owner}), "
            f"{schedule}, grace {c.grace_seconds:g} s{'' if c.enabled else ', disabled'}"
        )
    if settings.rotation.credentials:
        print(f"  rotation state: {settings.state.kind}")
    return cli_owner_rotated.check_config(settings)


def _print_identities(settings: Settings) -> None:
    tls = settings.server.tls
    if tls is not None:
        print(
            f"  https: TLS {tls.min_version}+, {tls.cert_file}; client certificates "
            f"{tls.client_certs} ({len(tls.client_certificates)} mapped)"
        )
    if settings.oidc is not None:
        oidc = settings.oidc
        print(
            f"  oidc: {oidc.issuer} audience {oidc.audience}, {', '.join(oidc.algorithms)}, "
            f"claim {oidc.claim} ({len(oidc.mappings)} mappings)"
        )
    checked = sorted(k for k, s in settings.spaces.items() if s.actor_check is not None)
    if settings.confluence is not None:
        print(
            f"  confluence: {settings.confluence.url} ({settings.confluence.deployment}); "
            "actor checked in "
            f"{', '.join(checked) or '(no space)'}"
        )


def _secrets_put(args: argparse.Namespace) -> int:
    data = json.loads(sys.stdin.read())
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        print("credbroker: standard input must be a JSON object of strings", file=sys.stderr)
        return 2
    settings = load_settings(args.config)
    store = wiring.build_secret_store(settings)

    async def put() -> int:
        try:
            version = await store.write(args.path, data, cas=args.cas)
        finally:
            await store.close()
        await _audit_cli(settings, "secret_written", args.path, version, fields=sorted(data))
        return version

    version = asyncio.run(put())
    print(f"{args.path}: wrote version {version} ({', '.join(sorted(data))})")
    return 0


def _secrets_get(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    store = wiring.build_secret_store(settings)

    async def get() -> int:
        try:
            secret = await store.read(args.path)
        finally:
            await store.close()
        if args.reveal:  # a person saw the secret: that is a decision worth a record
            await _audit_cli(
                settings, "secret_revealed", args.path, secret.version, fields=sorted(secret.data)
            )
        shown = dict(secret.data) if args.reveal else {k: "(hidden)" for k in secret.data}
        print(json.dumps({"path": args.path, "version": secret.version, "data": shown}, indent=2))
        return 0

    return asyncio.run(get())


async def _audit_cli(
    settings: Settings, event: str, path: str, version: int, *, fields: list[str]
) -> None:
    """An audit record of an operator's secret-store command: who (the OS user), what (path,
    version, field names), never a value."""
    audit = wiring.build_audit(settings)
    try:
        await audit.record(
            {
                "ts": datetime.now(UTC).isoformat(),
                "event": event,
                "path": path,
                "version": version,
                "fields": fields,
                "via": "cli",
                "os_user": getpass.getuser(),
            }
        )
    finally:
        await audit.close()


def _rotate(args: argparse.Namespace) -> int:
    """Exit 0 when every run did its part, 1 if one failed, 3 if another run held a lock, 4 if
    --now found a rotation in its grace (without --end-grace or --wait: no key was touched)."""
    settings = load_settings(args.config)
    if cli_owner_rotated.owner_rotates(settings):
        return cli_owner_rotated.refuse_rotate(settings)
    names = [c.name for c in settings.rotation.credentials]
    if not names:
        print("credbroker: no rotation.credentials in the config", file=sys.stderr)
        return 2
    if args.credential is not None and args.credential not in names:
        print(f"credbroker: no managed credential named {args.credential!r}", file=sys.stderr)
        return 2

    async def rotate() -> int:
        code = 0
        async with wiring.standalone_rotation(settings, Metrics()) as rotator:
            for name in [args.credential] if args.credential else names:
                try:
                    outcome = await rotator.run(
                        name, force=args.now, wait=args.wait, end_grace=args.end_grace
                    )
                except RotationBusy as exc:
                    print(f"{name}: busy: {exc.message}")
                    code = max(code, 3)
                    continue
                print(f"{name}: {_describe(outcome, forced=args.now)}")
                if outcome.result is RunResult.FAILED:
                    code = max(code, 1)
                if outcome.result is RunResult.GRACE_NOT_OVER:
                    code = max(code, 4)
        return code

    return asyncio.run(rotate())


def _describe(outcome: Outcome, *, forced: bool = False) -> str:
    record = outcome.record
    when = _when(record.next_due_at)
    first = ""
    if outcome.retired_key_id is not None:
        first = (
            f"first finished the rotation in progress (its old key {outcome.retired_key_id} "
            "deleted and refused); "
        )
    if outcome.result is RunResult.COMPLETED:
        return (
            f"completed: {first}key {record.new_key_id} in service; old key "
            f"{record.old_key_id} deleted and refused by the object store; next rotation {when}"
        )
    if outcome.result is RunResult.WAITING_GRACE:
        return (
            f"{first}key {record.new_key_id} stored and in service; old key "
            f"{record.old_key_id} is deleted when the grace period ends, at {when} (by the "
            "server's scheduler or the next `credbroker rotate`; --wait waits for it; for a "
            "leaked key, --end-grace deletes it now)"
        )
    if outcome.result is RunResult.GRACE_NOT_OVER:
        return (
            f"NOT ROTATED, no key created or deleted: the rotation in progress keeps old key "
            f"{record.old_key_id} valid until {when} (its grace); key {record.current_key_id} "
            f"stays in service. --end-grace deletes {record.old_key_id} now and rotates; "
            "--wait waits for the grace first"
        )
    if outcome.result is RunResult.FAILED:
        return f"FAILED: {record.last_error}; {outcome.failure_detail(forced=forced)}; retry {when}"
    if outcome.result is RunResult.READ_ONLY:
        return f"read-only secret store: its owner rotates; key {record.current_key_id} in use"
    if outcome.result is RunResult.DISABLED:
        return "disabled in the config (rotate --now still runs it)"
    return f"not due; next rotation {when}"


def _rotation_status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if cli_owner_rotated.owner_rotates(settings):
        return cli_owner_rotated.rotation_status(settings, as_json=args.json)
    if not settings.rotation.credentials:
        print("credbroker: no rotation.credentials in the config", file=sys.stderr)
        return 2

    async def status() -> list[dict[str, Any]]:
        async with wiring.standalone_rotation(settings, Metrics()) as rotator:
            return [s.as_dict() for s in await rotator.status()]

    statuses = asyncio.run(status())
    if args.json:
        print(json.dumps(statuses, indent=2))
        return 0
    for s in statuses:
        age = s["key_age_seconds"]
        print(f"{s['name']}  ({s['driver']} user {s['user']}, {s['secret_path']})")
        print(f"  key in service  {s['current_key_id']}  age {_duration(age)}")
        print(f"  keys of user    {', '.join(s['keys']) if s['keys'] is not None else '?'}")
        print(f"  phase           {s['phase']}{'' if s['enabled'] else '  (disabled)'}")
        print(f"  schedule        {s['schedule']}, grace {s['grace_seconds']:g} s")
        print(f"  last success    {s['last_success_at'] or 'never'}")
        print(f"  next run        {s['next_due_at'] or '-'}")
        print(f"  last error      {s['last_error'] or '-'} (attempts {s['attempts']})")
        for problem in s["problems"]:
            print(f"  problem         {problem}")
    return 0


def _when(moment: datetime | None) -> str:
    return utc_text(moment) or "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


if __name__ == "__main__":
    sys.exit(main())
