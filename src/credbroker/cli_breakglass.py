"""`credbroker break-glass ...` and `credbroker escrow ...`.

The break-glass commands talk to the running broker's admin API, each person with their own
token (CREDBROKER_TOKEN, or --token-file): the broker authenticates every step with the same
CallerAuth as any API call, so an approval carries the approver's own verified identity, and
custodians' shares meet in the one process that holds the request (never on disk). Running
against the state store directly would let anyone who can write that database approve under
any name. `escrow init` and `escrow status` work on the escrow file locally (the broker needs
no share to use it).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from credbroker import wiring
from credbroker.config import load_settings
from credbroker.errors import ConfigError, CredbrokerError
from credbroker.escrow.file import share_fingerprint

API = "/v1/admin/break-glass/requests"
_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    glass = sub.add_parser(
        "break-glass", help="dual-control emergency keys (through the running broker's API)"
    )
    gsub = glass.add_subparsers(required=True, metavar="ACTION")

    def api_args(p: argparse.ArgumentParser) -> None:
        config_arg(p)
        p.add_argument(
            "--url", help="the broker (default $CREDBROKER_URL, else server.host:port of --config)"
        )
        p.add_argument(
            "--token-file",
            type=Path,
            help="your token (default $CREDBROKER_TOKEN_FILE, else $CREDBROKER_TOKEN)",
        )
        p.add_argument("--ca-file", type=Path, help="CA bundle for an https broker")

    p = gsub.add_parser("request", help="ask for a key (operators); prints the request id")
    api_args(p)
    p.add_argument("--space", required=True)
    p.add_argument("--access", required=True, choices=["read", "write"])
    p.add_argument("--ttl", required=True, type=_seconds, help="e.g. 15m, 1h, 900")
    p.add_argument("--reason", required=True, help='why, e.g. "INC-123 restore the export"')
    p.add_argument("--prefix", help="narrower than the space's prefix")
    p.set_defaults(func=_request)

    for name, helptext in (
        ("approve", "approve a request (approvers; never your own)"),
        ("deny", "deny a request (approvers), or withdraw your own"),
        ("show", "one request"),
    ):
        p = gsub.add_parser(name, help=helptext)
        api_args(p)
        p.add_argument("id")
        p.set_defaults(func=_simple(name))

    p = gsub.add_parser("collect", help="collect the approved key, once (the requester)")
    api_args(p)
    p.add_argument("id")
    p.add_argument(
        "--format",
        choices=["json", "env"],
        default="json",
        help="env: export AWS_ACCESS_KEY_ID=... lines for eval",
    )
    p.set_defaults(func=_collect)

    p = gsub.add_parser(
        "unseal",
        help="submit your escrow share for an approved write request (read without echo; "
        "from standard input when it is not a terminal)",
    )
    api_args(p)
    p.add_argument("id")
    p.set_defaults(func=_unseal)

    p = gsub.add_parser("list", help="every request, its status and its key's expiry")
    api_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)

    p = gsub.add_parser("close", help="record the after-action (rotates an escrowed key)")
    api_args(p)
    p.add_argument("id")
    p.add_argument("--outcome", required=True)
    p.set_defaults(func=_close)

    escrow = sub.add_parser("escrow", help="the break-glass escrow of the service key")
    esub = escrow.add_subparsers(required=True, metavar="ACTION")
    p = esub.add_parser("init", help="a new escrow; prints each custodian's share once")
    config_arg(p)
    p.add_argument("--shares", type=int, required=True)
    p.add_argument("--threshold", type=int, required=True)
    p.add_argument("--replace", action="store_true", help="replace an existing escrow")
    p.set_defaults(func=_escrow_init)
    p = esub.add_parser("status", help="fingerprint, threshold, which key it holds")
    config_arg(p)
    p.set_defaults(func=_escrow_status)


def _seconds(text: str) -> int:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds or e.g. 15m, 1h")
    return int(match.group(1)) * _UNITS[match.group(2)]


# --- the API client -------------------------------------------------------------------------


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    url = args.url or os.environ.get("CREDBROKER_URL")
    if not url:
        server = load_settings(args.config).server
        url = f"http://{server.host}:{server.port}"
    token = _token(args)
    data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
    request = urllib.request.Request(  # noqa: S310 - the operator's own broker URL
        url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=str(args.ca_file)) if args.ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as answer:  # noqa: S310
            return json.load(answer)
    except urllib.error.HTTPError as exc:
        try:
            error = json.load(exc)["error"]
            message = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        raise CredbrokerError(message) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CredbrokerError(f"cannot reach the broker at {url}: {exc}") from None


def _token(args: argparse.Namespace) -> str:
    token: str
    token_file = args.token_file or (
        Path(os.environ["CREDBROKER_TOKEN_FILE"])
        if os.environ.get("CREDBROKER_TOKEN_FILE")
        else None
    )
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {token_file}: {exc.strerror}") from None
    else:
        token = os.environ.get("CREDBROKER_TOKEN", "").strip()
    if not token:
        raise ConfigError(
            "no token: give --token-file, or set CREDBROKER_TOKEN_FILE or CREDBROKER_TOKEN"
        )
    return token


def _describe(item: dict[str, Any]) -> str:
    approvals = f"{len(item['approvals'])}/{item['approvalsRequired']}"
    key = f" key {item['keyId']} until {item['keyExpiresAt']}" if item.get("keyId") else ""
    return (
        f"{item['id']} {item['status']:<9} {item['access']:<5} {item['space']}"
        f"{'/' + item['prefix'] if item['prefix'] else ''} by {item['requester']} "
        f"approvals {approvals}{key}: {item['reason']}"
    )


# --- the commands -----------------------------------------------------------------------------


def _request(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "space": args.space,
        "access": args.access,
        "ttl_seconds": args.ttl,
        "reason": args.reason,
    }
    if args.prefix:
        body["prefix"] = args.prefix
    item = _call(args, "POST", API, body)
    print(f"requested: {_describe(item)}; approve by {item['approveBy']}", file=sys.stderr)
    print(item["id"])
    return 0


def _simple(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if action == "show":
            item = _call(args, "GET", f"{API}/{args.id}")
        else:
            item = _call(args, "POST", f"{API}/{args.id}/{action}")
        print(_describe(item))
        return 0

    return run


def _collect(args: argparse.Namespace) -> int:
    key = _call(args, "POST", f"{API}/{args.id}/collect")
    if args.format == "env":
        for name, field in (
            ("AWS_ACCESS_KEY_ID", "accessKeyId"),
            ("AWS_SECRET_ACCESS_KEY", "secretAccessKey"),
            ("AWS_SESSION_TOKEN", "sessionToken"),
            ("AWS_ENDPOINT_URL", "endpoint"),
            ("AWS_REGION", "region"),
            ("CREDBROKER_BUCKET", "bucket"),
            ("CREDBROKER_PREFIX", "prefix"),
            ("CREDBROKER_KEY_EXPIRES", "expiration"),
        ):
            print(f"export {name}={_shell_quote(str(key[field]))}")
    else:
        print(json.dumps(key, indent=2))
    print(
        f"collected {args.id}: {key['access']} on s3://{key['bucket']}/{key['prefix']} until "
        f"{key['expiration']} (mode {key['mode']})",
        file=sys.stderr,
    )
    return 0


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _unseal(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        share = getpass.getpass("escrow share (not echoed): ")
    else:
        share = sys.stdin.readline()
    receipt = _call(args, "POST", f"{API}/{args.id}/shares", {"share": share.strip()})
    print(
        f"share {receipt['custodian']} accepted for {args.id}: "
        f"{receipt['submitted']} of {receipt['threshold']} submitted"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    items = _call(args, "GET", API)["requests"]
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    for item in items:
        print(_describe(item))
    if not items:
        print("no break-glass requests")
    return 0


def _close(args: argparse.Namespace) -> int:
    item = _call(args, "POST", f"{API}/{args.id}/close", {"outcome": args.outcome})
    print(_describe(item))
    if item.get("rotation"):
        print(f"the escrowed service key was used: rotation {item['rotation']}")
    return 0


def _escrow_init(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    path = settings.break_glass.escrow_file
    if path is None:
        raise ConfigError("set break_glass.escrow_file in the config first")
    made, sealed = asyncio.run(
        wiring.init_escrow(
            settings, shares=args.shares, threshold=args.threshold, replace=args.replace
        )
    )
    print(
        f"escrow {made.fingerprint} at {path}: {made.threshold} of {len(made.shares)} shares "
        "open it. Hand each share to one custodian now; they are shown only this once.\n"
        f"Pin it in the config: break_glass.escrow_fingerprint: {made.fingerprint}\n"
        + (
            f"It holds service key {sealed}."
            if sealed
            else "The secret store did not answer: the broker seals the key at its next start."
        ),
        file=sys.stderr,
    )
    for number, share in enumerate(made.shares, start=1):
        print(f"custodian {number}: {share}  (fingerprint {share_fingerprint(share)})")
    return 0


def _escrow_status(args: argparse.Namespace) -> int:
    escrow = wiring.build_escrow(load_settings(args.config))
    if escrow is None:
        raise ConfigError("no break_glass.escrow_file is configured")
    print(json.dumps(escrow.status(), indent=2))
    return 0
