"""The operator's command line: serve, check-config, secrets, keys and tokens."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from credbroker import wiring
from credbroker.callers.tokens import new_token
from credbroker.config import load_settings
from credbroker.errors import CredbrokerError
from credbroker.policy import worst_case_policy_chars
from credbroker.secrets.sealing import new_key

DEFAULT_CONFIG = Path("config/credbroker.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", True) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        code: int = args.func(args)
        return code
    except CredbrokerError as exc:
        print(f"credbroker: {exc.message}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="credbroker", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG, help="YAML config")

    p = sub.add_parser("serve", help="run the broker")
    config_arg(p)
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
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

    p = sub.add_parser("keygen", help="print a new base64 AES-256 sealing key")
    p.set_defaults(func=lambda _args: print(new_key()) or 0)

    clients = sub.add_parser("clients", help="client (automation rule) tokens")
    csub = clients.add_subparsers(required=True, metavar="ACTION")
    p = csub.add_parser("new-token", help="mint a token; prints it once, and its config hash")
    p.set_defaults(func=_new_token)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from credbroker.web.app import create_app

    settings = load_settings(args.config)
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    web.run_app(create_app(settings), host=host, port=port, access_log=None)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    print(f"{args.file}: ok")
    print(f"  secret store: {settings.secret_store.kind}")
    print(f"  object store: {settings.object_store.flavor} at {settings.object_store.endpoint}")
    for key, space in sorted(settings.spaces.items()):
        size = worst_case_policy_chars(space.bucket, space.prefix)
        print(f"  space {key}: s3://{space.bucket}/{space.prefix} (largest policy {size} chars)")
    print(f"  clients: {', '.join(c.id for c in settings.clients) or '(none)'}")
    return 0


def _secrets_put(args: argparse.Namespace) -> int:
    data = json.loads(sys.stdin.read())
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        print("credbroker: standard input must be a JSON object of strings", file=sys.stderr)
        return 2
    store = wiring.build_secret_store(load_settings(args.config))

    async def put() -> int:
        try:
            return await store.write(args.path, data, cas=args.cas)
        finally:
            await store.close()

    version = asyncio.run(put())
    print(f"{args.path}: wrote version {version} ({', '.join(sorted(data))})")
    return 0


def _secrets_get(args: argparse.Namespace) -> int:
    store = wiring.build_secret_store(load_settings(args.config))

    async def get() -> int:
        try:
            secret = await store.read(args.path)
        finally:
            await store.close()
        shown = dict(secret.data) if args.reveal else {k: "(hidden)" for k in secret.data}
        print(json.dumps({"path": args.path, "version": secret.version, "data": shown}, indent=2))
        return 0

    return asyncio.run(get())


def _new_token(_args: argparse.Namespace) -> int:
    token, digest = new_token()
    print(f"token (give it to the automation rule, shown once): {token}")
    print(f"config:  token_sha256: {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
