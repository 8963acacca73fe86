"""The `relay` command: check (dry run), validate, serve and the operator tools."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from relay import yamlconf
from relay.addresses import AddressError
from relay.store import StoreError

EXIT_OK, EXIT_USAGE, EXIT_CONFIG = 0, 2, 3


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 instant like 2026-11-27T20:00:00-05:00") \
            from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; add one, e.g. -05:00")
    return value


def _read_message(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def cmd_check(args: argparse.Namespace) -> int:
    from relay.clock import SystemClock
    from relay.directory import load_directory
    from relay.message import Envelope, Submission, parse_message
    from relay.policy.engine import evaluate
    from relay.policy.pack import load_pack

    pack = load_pack(args.policy)
    directory = load_directory(args.directory)
    try:
        raw = _read_message(args.message)
    except OSError as error:
        print(f"relay check: cannot read {args.message}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        envelope = Envelope.build(args.mail_from, args.rcpt, args.auth, args.client_ip, args.helo)
    except AddressError as error:
        print(f"relay check: bad envelope address: {error}", file=sys.stderr)
        return EXIT_USAGE
    now = args.at or SystemClock().now()
    submission = Submission(envelope, parse_message(raw))
    decision = evaluate(submission, pack, directory, now)
    result = decision.to_json()
    result["text_judgements"] = _text_judgements(pack, decision, submission)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(_human(result))
    return EXIT_OK


def _human(result: dict[str, Any]) -> str:
    lines = [f"verdict:  {result['verdict']}", f"reply:    {result['smtp_reply']}", "recipients:"]
    for r in result["recipients"]:
        when = f" until {r['deliver_at']}" if r["deliver_at"] else ""
        lines.append(f"  {r['address']:<45} {r['verdict']}{when}")
    lines.append("rules fired:" if result["rules"] else "rules fired: none")
    for rule in result["rules"]:
        mode = " [monitor]" if rule["mode"] == "monitor" else ""
        lines.append(f"  {rule['id']:<34} {rule['action']:<9}{mode} {rule['cites']}")
        lines.extend(_explained(rule.get("explanation")))
    if result["misses"]:
        lines.append("rules passed: " + ", ".join(result["misses"]))
    for judged in result.get("text_judgements", []):
        lines.append(f"  {judged['id']:<34} (did not fire)")
        lines.extend(_explained(judged["explanation"]))
    for n in result["notices"]:
        lines.append(f"notice ({n['kind']}) to {n['to']}: {n['subject']}")
        lines.extend("    " + line for line in n["text"].splitlines())
    if result["defects"]:
        lines.append("defects: " + "; ".join(result["defects"]))
    return "\n".join(lines)


def _text_judgements(pack: Any, decision: Any, submission: Any) -> list[dict[str, Any]]:
    """How each text rule that ran and did not fire judged the text (why it did not), for tuning."""
    from relay.policy.explain import explain_rules

    kinds = {rule.id: rule.kind for rule in pack.rules}
    return [{"id": rule_id, "kind": kinds[rule_id], "explanation": why.as_dict()}
            for rule_id, why in explain_rules(pack, decision.misses, submission.message).items()]


def _explained(explanation: dict[str, Any] | None) -> list[str]:
    """A text rule's reasons: its conclusion, then each term or signal with its weight."""
    if not explanation:
        return []
    lines = [f"      why: {explanation['conclusion']}"]
    for e in explanation["evidence"]:
        where = " (subject)" if e["where"] == "subject" else ""
        lines.append(f"        {e['group']:<14} {e['weight']:>5g}  {e['term']}{where}  «{e['text']}»")
    return lines


def _kind_of(data: Any) -> str:
    if isinstance(data, dict) and "rules" in data:
        return "pack"
    if isinstance(data, dict) and ("people" in data or "domains" in data):
        return "directory"
    return "config"


def cmd_validate(args: argparse.Namespace) -> int:
    from relay.config import RelayConfig
    from relay.directory import InstitutionModel
    from relay.policy.pack import load_pack

    failed = 0
    for path in args.files:
        try:
            data, node = yamlconf.read_yaml(path)
            kind = args.kind or _kind_of(data)
            if kind == "pack":
                pack = load_pack(path)
                detail = f"pack {pack.pack}: {len(pack.rules)} rules, {len(pack.examples)} examples"
            elif kind == "directory":
                model = yamlconf.validate(InstitutionModel, data, node, path)
                detail = f"directory: {len(model.people)} people, {len(model.service_mailboxes)} service mailboxes"
            else:
                config = yamlconf.validate(RelayConfig, data, node, path)
                config.check_files(path)
                detail = "relay config"
            print(f"{path}: ok ({detail})")
        except yamlconf.ConfigError as error:
            failed += 1
            for problem in error.problems:
                print(problem, file=sys.stderr)
    return EXIT_CONFIG if failed else EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from relay.app import ServeError, serve
    from relay.config import load_config

    try:
        run = asyncio.run
        if (choice := load_config(args.config).event_loop) != "asyncio":
            try:
                import uvloop

                run = uvloop.run
            except ImportError:
                if choice == "uvloop":
                    print("relay serve: event_loop is uvloop but uvloop is not installed "
                          "(pip install uvloop, or set event_loop: asyncio)", file=sys.stderr)
                    return EXIT_CONFIG
        run(serve(args.config))
    except yamlconf.ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except ServeError as error:
        print(f"relay serve: {error}", file=sys.stderr)
        return 1
    return EXIT_OK


def cmd_passwd(args: argparse.Namespace) -> int:
    import getpass

    from relay.auth import hash_password

    password = sys.stdin.readline().rstrip("\n") if args.stdin else getpass.getpass(f"password for {args.login}: ")
    if not password:
        print("relay passwd: empty password", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.login}:{hash_password(password)}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="decide one message against a pack (dry run, no delivery)")
    check.add_argument("--policy", required=True, help="policy pack YAML (policies/NAME.yaml)")
    check.add_argument("--directory", required=True, help="institution directory YAML")
    check.add_argument("--at", type=_instant, help="the instant to decide at (default: now)")
    check.add_argument("--mail-from", default="", help="envelope sender ('' for the null sender)")
    check.add_argument("--rcpt", action="append", required=True, help="envelope recipient (repeat)")
    check.add_argument("--auth", help="SMTP AUTH login of the sender")
    check.add_argument("--client-ip", help="address the client connected from")
    check.add_argument("--helo", help="HELO/EHLO name the client gave")
    check.add_argument("--json", action="store_true", help="print the decision as JSON")
    check.add_argument("message", help="the message file (RFC 5322), or - for standard input")
    check.set_defaults(func=cmd_check)

    validate = sub.add_parser("validate", help="check config, pack or directory files")
    validate.add_argument("files", nargs="+")
    validate.add_argument("--kind", choices=["config", "pack", "directory"], help="default: guessed")
    validate.set_defaults(func=cmd_validate)

    serve = sub.add_parser("serve", help="run the SMTP relay")
    serve.add_argument("--config", required=True, help="relay config YAML (see config.example.yaml)")
    serve.set_defaults(func=cmd_serve)

    from relay.admin import add_parsers

    add_parsers(sub)

    passwd = sub.add_parser("passwd", help="print a credentials-file line for SMTP AUTH")
    passwd.add_argument("login")
    passwd.add_argument("--stdin", action="store_true", help="read the password from standard input")
    passwd.set_defaults(func=cmd_passwd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except yamlconf.ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except StoreError as error:
        print(f"relay: {error}", file=sys.stderr)
        return 1
