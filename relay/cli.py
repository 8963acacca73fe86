"""The `relay` command: check (dry run), validate, serve and the operator tools."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay import yamlconf
from relay.addresses import AddressError
from relay.store import StoreError

EXIT_OK, EXIT_USAGE, EXIT_CONFIG = 0, 2, 3
# `relay check --exit-code`: the verdict as the exit status (documented in the README).
VERDICT_EXIT = {"deliver": 0, "hold": 10, "moderate": 11, "reject": 20, "tempfail": 21}
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a C tool killed by the pipe's reader would report
# Where the commands that need the relay's config look when --config is not given.
CONFIG_ENV, DEFAULT_CONFIG = "RELAY_CONFIG", "/etc/policy-relay/config.yaml"


def _read_message(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def cmd_check(args: argparse.Namespace) -> int:
    from relay.clock import SystemClock
    from relay.ldapdir import load_directory_file as load_directory
    from relay.message import Envelope, Submission, parse_message
    from relay.policy.engine import evaluate
    from relay.policy.pack import load_pack

    if args.policy and args.directory:
        pack, directory = load_pack(args.policy), load_directory(args.directory)
    else:  # what the deployed relay uses: the pack and directory its config names
        from relay import ldapdir
        from relay.config import load_config
        from relay.identity import server_directory

        path = args.config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
        config = load_config(path)
        pack = load_pack(args.policy or config.resolve(path, config.policy))
        directory = (load_directory(args.directory) if args.directory
                     else server_directory(ldapdir.open_directory(config, path), config))
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
    from zoneinfo import ZoneInfo

    from relay.admin import parse_instant

    now = parse_instant(args.at, ZoneInfo(getattr(directory, "timezone", "UTC"))) or SystemClock().now()
    submission = Submission(envelope, parse_message(raw))
    decision = evaluate(submission, pack, directory, now)
    result = decision.to_json()
    result["text_judgements"] = _text_judgements(pack, decision, submission)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(_human(result))
    return VERDICT_EXIT[result["verdict"]] if args.exit_code else EXIT_OK


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
    if isinstance(data, dict) and "ldap" in data and "policy" not in data:
        return "ldap"
    if isinstance(data, dict) and ("people" in data or "domains" in data):
        return "directory"
    return "config"


def cmd_validate(args: argparse.Namespace) -> int:
    from relay import ldapdir
    from relay.config import RelayConfig
    from relay.crosscheck import list_problems
    from relay.directory import FileDirectory, InstitutionModel
    from relay.policy.pack import load_pack

    failed = 0
    for path in args.files:
        try:
            data, node = yamlconf.read_yaml(path)
            kind = args.kind or _kind_of(data)
            if kind == "pack":
                pack = load_pack(path)
                detail = f"pack {pack.pack}: {len(pack.rules)} rules, {len(pack.examples)} examples"
                if args.directory:
                    detail += _pack_against(pack, path, args.directory)
            elif kind == "directory":
                model = yamlconf.validate(InstitutionModel, data, node, path)
                if problems := list_problems(FileDirectory.from_model(model), path):
                    raise yamlconf.ConfigError(path, problems)
                detail = f"directory: {len(model.people)} people, {len(model.service_mailboxes)} service mailboxes"
            elif kind == "ldap":
                detail = _validate_ldap(ldapdir.source_from_file(path), args.offline)
            else:
                config = yamlconf.validate(RelayConfig, data, node, path)
                config.check_files(path)
                detail = "relay config"
                from relay.hosted import half_configured

                for warning in half_configured(config):
                    print(f"{path}: warning: {warning}", file=sys.stderr)
                if not ldapdir.is_ldap_url(config.directory):
                    detail += _pack_against(load_pack(config.resolve(path, config.policy)),
                                            config.resolve(path, config.policy),
                                            str(config.resolve(path, config.directory)))
                if ldapdir.is_ldap_url(config.directory):
                    read: list[Any] = []
                    detail += "; " + _validate_ldap(ldapdir.source_from_config(config, path), args.offline, read)
                    if read:  # the pack against what the server holds now
                        detail += _pack_against(load_pack(config.resolve(path, config.policy)),
                                                config.resolve(path, config.policy), config.directory,
                                                ldapdir.to_directory(read[0]))
            print(f"{path}: ok ({detail})")
        except yamlconf.ConfigError as error:
            failed += 1
            for problem in error.problems:
                print(problem, file=sys.stderr)
        except ldapdir.LdapDown as error:
            failed += 1
            print(f"{path}: directory: cannot read the LDAP server: {error}", file=sys.stderr)
    return EXIT_CONFIG if failed else EXIT_OK


def _pack_against(pack: Any, pack_path: str | Path, directory_path: str, directory: Any = None) -> str:
    """Check a pack against a directory: what its rules name exists, its examples hold."""
    from relay.crosscheck import check_examples, cross_check
    from relay.ldapdir import load_directory_file

    read_file = directory is None
    directory = load_directory_file(directory_path) if read_file else directory
    problems = cross_check(pack, pack_path, directory, directory_path if read_file else None)
    problems += check_examples(pack, pack_path, directory)
    if problems:
        raise yamlconf.ConfigError(str(pack_path), problems)
    return f"; checked against {directory_path}: {len(pack.examples)} examples pass"


def _validate_ldap(source: Any, offline: bool, read: list[Any] | None = None) -> str:
    """Check an LDAP mapping against its server: the schema knows the attributes, the bases exist;
    report what the mapping finds (people, roles, mailboxes, lists, unmapped groups)."""
    from relay import ldapdir

    ldapdir.check_files(source)
    if offline:
        return f"ldap mapping for {source.url} (not checked against the server)"
    problems = ldapdir.check_schema(source)
    if problems:
        raise yamlconf.ConfigError(str(source.file), problems)
    leave = source.settings.leave_file
    tree = ldapdir.fetch(source)
    snapshot = ldapdir.build(source, tree, ldapdir.read_leave_file(source.path(leave)) if leave else None)
    if read is not None:
        read.append(snapshot)
    for warning in snapshot["warnings"][:20]:
        print(f"{source.file}: warning: {warning}", file=sys.stderr)
    roles = {r for p in snapshot["people"] + snapshot["service_mailboxes"] for r in p["roles"]}
    return (f"{source.url}: {len(snapshot['people'])} people, {len(roles)} roles, "
            f"{len(snapshot['service_mailboxes'])} service mailboxes, {len(snapshot['lists'])} lists, "
            f"{len(snapshot['unmapped_groups'])} unmapped groups, {len(snapshot['warnings'])} warnings "
            f"({tree.seconds:.2f} s)")


def _directory_for(args: argparse.Namespace) -> Any:
    """The directory `relay directory` looks at: the snapshot the running relay wrote (default), or
    a fresh read with --live; a YAML directory is read from its file."""
    from relay import ldapdir
    from relay.config import load_config
    from relay.ldapdir import load_directory_file as load_directory

    if args.config:
        config = load_config(args.config)
        if not ldapdir.is_ldap_url(config.directory):
            return load_directory(config.resolve(args.config, config.directory))
        source = ldapdir.source_from_config(config, args.config)
    else:
        data, _ = yamlconf.read_yaml(args.directory)
        if not (isinstance(data, dict) and "ldap" in data):
            return load_directory(args.directory)
        source = ldapdir.source_from_file(args.directory)
    if not args.live:
        snapshot = ldapdir.read_snapshot(source.snapshot_path)
        if snapshot is not None:
            return ldapdir.to_directory(snapshot)
    return ldapdir.load(source)


def cmd_directory(args: argparse.Namespace) -> int:
    from relay import ldapdir

    try:
        directory = _directory_for(args)
    except ldapdir.DirectoryUnavailable as error:
        print(f"relay directory: {error}", file=sys.stderr)
        return 1
    if args.action == "stats":
        result: Any = ldapdir.stats(directory)
    else:
        result = ldapdir.show(directory, args.address)
        if result is None:
            print(f"{args.address}: not in the directory"
                  + (" (an address of ours: a rule sees an unknown local address)" if directory.is_local(args.address)
                     else " (not one of our domains)"), file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        for key, value in result.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                print(f"{key}:")
                for item in value:
                    print("  " + ", ".join(f"{k}={v}" for k, v in item.items()))
            else:
                print(f"{key}: {value}")
    return EXIT_OK


def init_state(config_path: str) -> list[str]:
    """Create what `missing_state` names (the SQLite store, migrated; the admin secret, 0600):
    one line per thing made."""
    from relay.config import load_config
    from relay.store import open_store
    from relay.web import links

    config = load_config(config_path)
    made = []
    store = config.sqlite_path(config_path)
    if store is not None and not store.exists():
        open_store(config.store, Path(config_path).resolve().parent).close()
        made.append(f"store {store}")
    if config.admin is not None:
        secret = config.resolve(config_path, config.admin.secret_file)
        if not secret.exists():
            links.load_key(secret)
            made.append(f"admin secret {secret}")
    return made


def cmd_init(args: argparse.Namespace) -> int:
    made = init_state(args.config)
    for line in made:
        print(f"made {line}")
    if not made:
        print("nothing to make: the store and the admin secret exist")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from relay.app import serve
    from relay.config import load_config
    from relay.prefork import ServeError

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
        config = load_config(args.config)
        if args.init:
            init_state(args.config)
        elif missing := config.missing_state(args.config):
            for problem in missing:
                print(problem, file=sys.stderr)
            return EXIT_CONFIG
        if config.worker_count() > 1:  # pre-forked workers on shared sockets (relay.workers)
            from relay import logs
            from relay.workers import supervise

            logs.configure(config.log.level, config.log.format)
            return supervise(args.config, run)
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
    from relay import __version__

    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    parser.add_argument("--version", action="version", version=f"relay (policy-relay) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="decide one message against a pack (dry run, no delivery)")
    check.add_argument("--policy", help="policy pack YAML (policies/NAME.yaml; default: the config's)")
    check.add_argument("--directory", help="institution directory YAML (default: the config's)")
    check.add_argument("--config", help="decide as the deployed relay does: its pack and directory")
    check.add_argument("--at", help="the instant to decide at (default: now): ISO 8601 with offset, or a local "
                       "date and time in the institution's zone, e.g. '2026-11-27 20:00'")
    check.add_argument("--mail-from", default="", help="envelope sender ('' for the null sender)")
    check.add_argument("--rcpt", action="append", required=True, help="envelope recipient (repeat)")
    check.add_argument("--auth", help="SMTP AUTH login of the sender")
    check.add_argument("--client-ip", help="address the client connected from")
    check.add_argument("--helo", help="HELO/EHLO name the client gave")
    check.add_argument("--json", action="store_true", help="print the decision as JSON")
    check.add_argument("--exit-code", action="store_true",
                       help="exit with the verdict: 0 deliver, 10 hold, 11 moderate, 20 reject, 21 tempfail")
    check.add_argument("message", help="the message file (RFC 5322), or - for standard input")
    check.set_defaults(func=cmd_check)

    validate = sub.add_parser("validate", help="check config, pack or directory files")
    validate.add_argument("files", nargs="+")
    validate.add_argument("--kind", choices=["config", "pack", "directory", "ldap"], help="default: guessed")
    validate.add_argument("--offline", action="store_true", help="do not ask the LDAP server (mapping syntax only)")
    validate.add_argument("--directory", help="check packs against this directory: the roles and addresses "
                          "their rules name exist, their examples give the verdicts they declare")
    validate.set_defaults(func=cmd_validate)

    directory = sub.add_parser("directory", help="what the relay believes about the directory (LDAP or YAML)")
    dsub = directory.add_subparsers(dest="action", required=True)
    for name, text in (("show", "one address: the entry, its roles and why (which LDAP entry and groups)"),
                       ("stats", "counts: people, roles, mailboxes, lists, unmapped groups, staleness")):
        action = dsub.add_parser(name, help=text)
        if name == "show":
            action.add_argument("address")
        where = action.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", help="relay config YAML")
        where.add_argument("--directory", help="directory YAML, or a file with directory: ldap://… and ldap:")
        action.add_argument("--live", action="store_true", help="read the LDAP server now, not the snapshot")
        action.add_argument("--json", action="store_true")
        action.set_defaults(func=cmd_directory)

    init = sub.add_parser("init", help="first install: create the SQLite store and the admin secret")
    init.add_argument("--config", required=True, help="relay config YAML")
    init.set_defaults(func=cmd_init)
    serve = sub.add_parser("serve", help="run the SMTP relay")
    serve.add_argument("--config", required=True, help="relay config YAML (see config.example.yaml)")
    serve.add_argument("--init", action="store_true",
                       help="first start: create the SQLite store and the admin secret when they do not exist "
                            "(without it a missing one is a config error: a typo in a path never starts empty)")
    serve.set_defaults(func=cmd_serve)

    from relay.admin import add_parsers

    add_parsers(sub)

    from relay.send import add_parser as add_send

    add_send(sub)

    passwd = sub.add_parser("passwd", help="print a credentials-file line for SMTP AUTH")
    passwd.add_argument("login")
    passwd.add_argument("--stdin", action="store_true", help="read the password from standard input")
    passwd.set_defaults(func=cmd_passwd)
    _config_everywhere(parser)
    return parser


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [child for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            for child in dict.fromkeys(a.choices.values())]


def _config_everywhere(parser: argparse.ArgumentParser, inherited: bool = False) -> None:
    """Every command that reads the relay's config: --config is optional (RELAY_CONFIG, then
    /etc/policy-relay/config.yaml) and also accepted after the command's action
    (`relay queue list --config C` as well as `relay queue --config C list`)."""
    option = _option(parser, "--config")
    if option is None and inherited:
        parser.add_argument("--config", default=argparse.SUPPRESS, help="the relay's config YAML")
    elif option is not None:
        option.required = False
        option.help = (option.help or "the relay's config YAML") + \
            f" (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})"
        for group in parser._mutually_exclusive_groups:
            if option in group._group_actions:
                group.required = False
        parser.set_defaults(needs_config=True)
    for child in _subparsers(parser):
        _config_everywhere(child, inherited or option is not None)


def _default_config(args: argparse.Namespace) -> str | None:
    """The config a command reads when --config is not given; None and a message when there is none."""
    if not getattr(args, "needs_config", False) or getattr(args, "config", None) or getattr(args, "directory", None):
        return None
    if os.environ.get(CONFIG_ENV):
        args.config = os.environ[CONFIG_ENV]
        return None
    if Path(DEFAULT_CONFIG).is_file():
        args.config = DEFAULT_CONFIG
        return None
    return (f"relay {args.command}: no config: give --config FILE or set {CONFIG_ENV} "
            f"({DEFAULT_CONFIG} does not exist)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (missing := _default_config(args)) is not None:
        print(missing, file=sys.stderr)
        return EXIT_USAGE
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:  # `relay check ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush at exit
        return EXIT_BROKEN_PIPE
    except yamlconf.ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except StoreError as error:
        print(f"relay: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # ldapdir.DirectoryUnavailable: no server and no snapshot
        if type(error).__name__ != "DirectoryUnavailable":
            return _unexpected(args, error)
        print(f"relay: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        print(f"relay {args.command}: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except Exception as error:
        return _unexpected(args, error)


def _unexpected(args: argparse.Namespace, error: Exception) -> int:
    """A fault of ours: one line (RELAY_TRACEBACK=1 shows the traceback for a bug report)."""
    if os.environ.get("RELAY_TRACEBACK"):
        raise error
    print(f"relay {args.command}: {type(error).__name__}: {error} (set RELAY_TRACEBACK=1 for the details)",
          file=sys.stderr)
    return 1
