"""The audit trail's commands: verify the chain, make and show the signing key; the daily
compliance check; the access report."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from credbroker import wiring
from credbroker.audit.chain import (
    generate_private_pem,
    load_private_key,
    load_public_key,
    public_pem,
    read_files,
    rotated_files,
    verify_lines,
)
from credbroker.config import load_settings


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    audit = sub.add_parser("audit", help="the tamper-evident audit trail")
    asub = audit.add_subparsers(required=True, metavar="ACTION")
    p = asub.add_parser(
        "verify",
        help="check the chains and checkpoint signatures; name the first bad record",
    )
    config_arg(p)
    p.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="audit files, oldest first (default: audit.path and its rotated siblings)",
    )
    p.add_argument("--public-key", type=Path, help="PEM public key (default: from the config)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_verify)
    p = asub.add_parser(
        "keygen", help="write a new Ed25519 signing key (0600), print its public key"
    )
    p.add_argument("out", type=Path)
    p.set_defaults(func=_keygen)
    p = asub.add_parser("public-key", help="print the public key verifiers need")
    config_arg(p)
    p.set_defaults(func=_public_key)

    compliance = sub.add_parser("compliance", help="the daily compliance check")
    csub = compliance.add_subparsers(required=True, metavar="ACTION")
    p = csub.add_parser("check", help="check every control now; exit 0 all pass, 1 a failure")
    config_arg(p)
    p.add_argument("--out", type=Path, help="report folder (default: compliance.report_dir)")
    p.add_argument("--json", action="store_true", help="print the JSON report")
    p.set_defaults(func=_compliance_check)

    p = sub.add_parser("report", help="access report from the audit trail")
    config_arg(p)
    p.add_argument("--from", dest="start", type=date.fromisoformat, required=True)
    p.add_argument("--to", dest="end", type=date.fromisoformat, required=True)
    p.add_argument("--space")
    p.add_argument("--client")
    p.add_argument("--format", choices=["csv", "json"], default="json")
    p.add_argument("files", nargs="*", type=Path, help="audit files (default: from the config)")
    p.set_defaults(func=_report)


def _verify(args: argparse.Namespace) -> int:
    files: list[Path] = list(args.files)
    key_path: Path | None = args.public_key
    # Files and a key need no config; files alone take the key from the config if there is one.
    if not files or (key_path is None and Path(args.config).exists()):
        settings = load_settings(args.config)
        if not files and settings.audit.path is not None:
            files = rotated_files(settings.audit.path)
        key_path = key_path or settings.audit.public_key_path()
    if not files:
        print("credbroker: no audit files to verify", file=sys.stderr)
        return 2
    public = None
    if key_path is not None and key_path.exists():
        public = load_public_key(key_path.read_bytes())
    report = verify_lines(read_files(files), public)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for chain in report.chains.values():
            print(
                f"{chain.chain}: {chain.status}, seq {chain.first_seq}..{chain.last_seq}, "
                f"{chain.checkpoints} checkpoint(s), {chain.unsealed} record(s) not yet sealed"
            )
        if report.unchained:
            print(f"{report.unchained} record(s) without chain fields (written before the chain)")
        problem = report.first_problem()
        print(f"FAILED: {problem}" if problem else "ok")
    return 0 if report.ok else 1


def _keygen(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists():
        print(f"credbroker: {out} exists; not overwritten", file=sys.stderr)
        return 2
    pem = generate_private_pem()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(0o600)
    out.write_bytes(pem)
    print(public_pem(load_private_key(pem)).decode(), end="")
    return 0


def _public_key(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    config = settings.audit
    if config.signing_key_file is not None:
        print(public_pem(load_private_key(config.signing_key_file.read_bytes())).decode(), end="")
        return 0
    path = config.public_key_path()
    if path is not None and path.exists():
        print(path.read_text(), end="")
        return 0
    print("credbroker: no audit signing key configured or published yet", file=sys.stderr)
    return 2


def _compliance_check(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    out: Path = args.out or settings.compliance.report_dir

    async def run() -> int:
        async with wiring.compliance_check(settings) as check:
            result = await check.run()
        json_path, html_path = wiring.write_compliance_report(result, out)
        if args.json:
            print(json.dumps(result.as_dict(), indent=2))
        else:
            for control in result.controls:
                print(f"{'PASS' if control.passed else 'FAIL'}  {control.name}: {control.summary}")
            print(f"report: {json_path} {html_path}")
        return 0 if result.passed else 1

    return asyncio.run(run())


def _report(args: argparse.Namespace) -> int:
    from credbroker.compliance.access_report import access_report, as_csv
    from credbroker.compliance.trail import space_of

    settings = load_settings(args.config)
    files: list[Path] = list(args.files)
    if not files and settings.audit.path is not None:
        files = rotated_files(settings.audit.path)
    start = datetime.combine(args.start, time(), UTC)
    end = datetime.combine(args.end, time(), UTC) + timedelta(days=1)
    records = wiring.audit_records(files)
    report = access_report(
        records,
        start=start,
        end=end,
        space=args.space,
        client=args.client,
        space_of=lambda r: space_of(settings.spaces, r),
    )
    if args.format == "csv":
        sys.stdout.write(as_csv(report))
    else:
        print(json.dumps(report, indent=2))
    return 0
