"""`credbroker clients | tokens | freeze | unfreeze`: the live control plane from a shell.

They change the state store the running brokers share (SQLite file or PostgreSQL schema of
the config); every broker follows within 2 s (docs/control-plane.md). Each change is audited
with the operator's OS user as the actor. A token is printed once, when issued; lists show a
token's id and the first 8 hex digits of its hash, never more.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta

from credbroker import wiring
from credbroker.callers.tokens import new_token
from credbroker.config import Settings, load_settings
from credbroker.control import ClientChanges, ControlPlane, PrincipalView, freeze_dict
from credbroker.domain import Access, Role, utc_text
from credbroker.errors import InvalidRequest

_DURATION = re.compile(r"(\d{1,6})([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    clients = sub.add_parser("clients", help="principals (automation rules, operators, admins)")
    csub = clients.add_subparsers(required=True, metavar="ACTION")
    p = csub.add_parser("new-token", help="mint a token; prints it once, and its config hash")
    p.set_defaults(func=_new_token)

    p = csub.add_parser("add", help="add a principal to the state store")
    config_arg(p)
    p.add_argument("id")
    _limit_args(p, required=True)
    p.add_argument("--issue-token", action="store_true", help="also issue its first token")
    p.set_defaults(func=_add)

    p = csub.add_parser("list", help="every principal (config seeds marked as such)")
    config_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)

    p = csub.add_parser("show", help="one principal and its tokens (ids, never the token)")
    config_arg(p)
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_show)

    p = csub.add_parser("set", help="change a store principal's limits")
    config_arg(p)
    p.add_argument("id")
    _limit_args(p, required=False)
    p.set_defaults(func=_set)

    p = csub.add_parser("revoke", help="revoke a principal and every token it holds")
    config_arg(p)
    p.add_argument("id")
    p.set_defaults(func=_revoke)

    tokens = sub.add_parser("tokens", help="bearer tokens of store principals (two at most)")
    tsub = tokens.add_subparsers(required=True, metavar="ACTION")
    p = tsub.add_parser("issue", help="issue a token; printed once")
    config_arg(p)
    p.add_argument("id", help="the principal")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--expires-in", help="e.g. 90d, 12h, 30m, 3600 (seconds)")
    when.add_argument("--expires-at", help="ISO 8601 with a time zone, e.g. 2027-01-31T00:00Z")
    p.set_defaults(func=_issue)
    p = tsub.add_parser("revoke", help="revoke one token by its id (tok_...)")
    config_arg(p)
    p.add_argument("id", help="the principal")
    p.add_argument("token_id")
    p.set_defaults(func=_revoke_token)

    p = sub.add_parser("freeze", help="stop vending (everything, a space, a client) now")
    config_arg(p)
    p.add_argument("--space")
    p.add_argument("--client")
    p.add_argument("--reason", help="why (shown to refused callers and in /readyz)")
    p.add_argument("--list", action="store_true", help="list active freezes instead")
    p.add_argument("--all", action="store_true", help="with --list: lifted ones too")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_freeze)

    p = sub.add_parser("unfreeze", help="lift a freeze by id, or every one with this selector")
    config_arg(p)
    p.add_argument("freeze_id", nargs="?", help="frz_...")
    p.add_argument("--space")
    p.add_argument("--client")
    p.set_defaults(func=_unfreeze)


def _limit_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--space", action="append", dest="spaces", required=required, help="repeatable")
    p.add_argument("--access", choices=[a.value for a in Access], help="highest access")
    p.add_argument("--max-ttl", type=int, help="highest key lifetime, seconds")
    p.add_argument(
        "--role", action="append", dest="roles", choices=[r.value for r in Role], help="repeatable"
    )
    p.add_argument("--rate", type=float, help="requests per second (default: limits.*)")
    p.add_argument("--burst", type=int)


def actor() -> str:
    return f"cli:{getpass.getuser()}"


@asynccontextmanager
async def _control(settings: Settings) -> AsyncIterator[ControlPlane]:
    async with AsyncExitStack() as stack:
        audit = wiring.build_audit(settings)
        stack.push_async_callback(audit.close)
        yield await stack.enter_async_context(wiring.control_plane(settings, audit, watch=False))


def _run(args: argparse.Namespace, body: Callable[[ControlPlane], Awaitable[int]]) -> int:
    settings = load_settings(args.config)

    async def go() -> int:
        async with _control(settings) as control:
            return await body(control)

    return asyncio.run(go())


def _new_token(_args: argparse.Namespace) -> int:
    token, digest = new_token()
    print(f"token (give it to the automation rule, shown once): {token}")
    print(f"config:  token_sha256: {digest}")
    return 0


def _add(args: argparse.Namespace) -> int:
    async def body(control: ControlPlane) -> int:
        principal = await control.add_client(
            actor(),
            args.id,
            spaces=args.spaces,
            max_access=Access(args.access or "read"),
            max_ttl_seconds=3600 if args.max_ttl is None else args.max_ttl,
            roles=[Role(r) for r in args.roles or ["rule"]],
            rate_per_second=args.rate,
            burst=args.burst,
        )
        print(f"added {principal.id}")
        if args.issue_token:
            token, record = await control.issue_token(actor(), args.id)
            _print_token(token, record.id, record.expires_at)
        return 0

    return _run(args, body)


def _list(args: argparse.Namespace) -> int:
    async def body(control: ControlPlane) -> int:
        now = datetime.now(UTC)
        views = await control.clients()
        if args.json:
            print(json.dumps([v.as_dict(now) for v in views], indent=2))
            return 0
        for view in views:
            print(_line(view, now))
        return 0

    return _run(args, body)


def _show(args: argparse.Namespace) -> int:
    async def body(control: ControlPlane) -> int:
        now = datetime.now(UTC)
        view = await control.client(args.id)
        data = view.as_dict(now)
        if args.json:
            print(json.dumps(data, indent=2))
            return 0
        print(_line(view, now))
        for t in data["tokens"]:
            state = "usable" if t["usable"] else ("revoked" if t["revokedAt"] else "expired")
            print(
                f"  token {t['id']}  sha256 {t['hashPrefix']}...  issued {t['createdAt']}  "
                f"expires {t['expiresAt'] or 'never'}  {state}"
            )
        return 0

    return _run(args, body)


def _line(view: PrincipalView, now: datetime) -> str:
    d = view.as_dict(now)
    rate = f"{d['ratePerSecond']:g}/s" if d["ratePerSecond"] else "default rate"
    state = f"revoked {d['revokedAt']}" if d["revokedAt"] else "active"
    usable = sum(1 for t in d["tokens"] if t["usable"])
    tokens = "token in config" if d["source"] == "config" else f"{usable} usable token(s)"
    return (
        f"{d['id']}  [{d['source']}]  roles {','.join(d['roles'])}  spaces "
        f"{','.join(d['spaces'])}  {d['maxAccess']}  ttl<={d['maxTtlSeconds']}s  {rate}"
        f"{'' if d['burst'] is None else ' burst ' + str(d['burst'])}  {tokens}  {state}"
    )


def _set(args: argparse.Namespace) -> int:
    changes = ClientChanges(
        spaces=frozenset(args.spaces) if args.spaces else None,
        max_access=Access(args.access) if args.access else None,
        max_ttl_seconds=args.max_ttl,
        roles=frozenset(Role(r) for r in args.roles) if args.roles else None,
        rate_per_second=args.rate,
        burst=args.burst,
    )

    async def body(control: ControlPlane) -> int:
        await control.set_client(actor(), args.id, changes)
        print(f"changed {args.id}")
        return 0

    return _run(args, body)


def _revoke(args: argparse.Namespace) -> int:
    async def body(control: ControlPlane) -> int:
        await control.revoke_client(actor(), args.id)
        print(f"revoked {args.id} and its tokens (every broker refuses them within 2 s)")
        return 0

    return _run(args, body)


def _issue(args: argparse.Namespace) -> int:
    expires = _expiry(args.expires_in, args.expires_at)

    async def body(control: ControlPlane) -> int:
        token, record = await control.issue_token(actor(), args.id, expires_at=expires)
        _print_token(token, record.id, record.expires_at)
        return 0

    return _run(args, body)


def _print_token(token: str, token_id: str, expires: datetime | None) -> None:
    print(f"token {token_id} (expires {utc_text(expires) or 'never'}); shown once: {token}")


def _revoke_token(args: argparse.Namespace) -> int:
    async def body(control: ControlPlane) -> int:
        await control.revoke_token(actor(), args.id, args.token_id)
        print(f"revoked {args.token_id} of {args.id} (every broker refuses it within 2 s)")
        return 0

    return _run(args, body)


def _freeze(args: argparse.Namespace) -> int:
    if args.list:

        async def listing(control: ControlPlane) -> int:
            freezes = [freeze_dict(f) for f in await control.freezes(active_only=not args.all)]
            if args.json:
                print(json.dumps(freezes, indent=2))
            for f in [] if args.json else freezes:
                lifted = f" lifted {f['liftedAt']} by {f['liftedBy']}" if f["liftedAt"] else ""
                print(
                    f"{f['id']}  space {f['space'] or '*'}  client {f['client'] or '*'}  since "
                    f"{f['createdAt']} by {f['createdBy']}{lifted}: {f['reason']}"
                )
            return 0

        return _run(args, listing)
    if not args.reason:
        print("credbroker: freeze needs --reason", file=sys.stderr)
        return 2

    async def body(control: ControlPlane) -> int:
        freeze = await control.freeze(
            actor(), reason=args.reason, space=args.space, client_id=args.client
        )
        print(f"{freeze.describe()}; every broker refuses matching vends within 2 s")
        return 0

    return _run(args, body)


def _unfreeze(args: argparse.Namespace) -> int:
    async def body(control: ControlPlane) -> int:
        lifted = await control.unfreeze(
            actor(), freeze_id=args.freeze_id, space=args.space, client_id=args.client
        )
        for freeze in lifted:
            print(f"lifted {freeze.describe()}")
        return 0

    return _run(args, body)


def _expiry(expires_in: str | None, expires_at: str | None) -> datetime | None:
    if expires_in is not None:
        match = _DURATION.fullmatch(expires_in.strip())
        if match is None:
            raise InvalidRequest("--expires-in is a number with s, m, h or d (e.g. 90d)")
        return datetime.now(UTC) + timedelta(seconds=int(match[1]) * _UNIT[match[2]])
    if expires_at is not None:
        try:
            moment = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest("--expires-at is ISO 8601, e.g. 2027-01-31T00:00Z") from None
        return moment
    return None
