"""The operators' tools on the store: `relay queue`, `relay audit`, `relay inventory`.

They open the same store as the running relay (SQLite in WAL mode allows that) and, after a
change, wake the relay's scheduler with SIGUSR1 (its pid file), so a release is delivered at once.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import getpass
import json
import os
import signal
import sys
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from relay import moderation, report, views, when
from relay.clock import clock_from_env
from relay.config import RelayConfig, load_config
from relay.store import AuditEntry, Hold, HoldFilter, HoldState, Store, open_store
from relay.store.base import TraceQuery

EXIT_OK, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_STATE = 0, 2, 4, 5


def _open(args: argparse.Namespace) -> tuple[RelayConfig, Store]:
    config = load_config(args.config)
    return config, open_store(config.store, Path(args.config).resolve().parent, config.store_options.lease, 2,
                              create=False)


def _pack_notices(config: RelayConfig, config_path: str) -> dict[str, Any]:
    """The pack's own notice texts (`notices:`), for what `relay queue` tells the sender."""
    from relay.policy.pack import load_pack

    return dict(load_pack(config.resolve(config_path, config.policy)).notices)


def _wake(config: RelayConfig, config_path: str) -> None:
    """Tell a running relay that the queue changed (no effect if it is not running)."""
    pid_file = config.resolve(config_path, config.pid_file)
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGUSR1)


def _who(args: argparse.Namespace) -> str:
    return str(getattr(args, "by", None) or os.environ.get("SUDO_USER") or getpass.getuser())


def _iso(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at else ""


hold_json = views.hold_json  # one rendering for the CLI, the web pages and the API


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def institution_zone(config: RelayConfig, config_path: str) -> ZoneInfo:
    """The institution's zone (directory file or the `ldap.institution` section), read without asking
    any server: the zone in which people give and read times."""
    name = "UTC"
    if config.ldap is not None and "://" in config.directory:
        name = config.ldap.institution.timezone
    else:
        with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
            data = yaml.safe_load(config.resolve(config_path, config.directory).read_text(encoding="utf-8"))
            name = str(data.get("timezone") or "UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def parse_instant(text: str | None, zone: ZoneInfo | None = None) -> datetime | None:
    """An instant as people write it: ISO 8601 with an offset, or a local date / date and time in the
    institution's zone (`2026-11-27`, `2026-11-27 08:00`), or `today` / `yesterday` (local midnight)."""
    if not text:
        return None
    zone = zone or ZoneInfo("UTC")
    word = text.strip().casefold()
    if word in ("today", "hoy", "yesterday", "ayer", "now", "ahora"):
        now = clock_from_env().now().astimezone(zone)
        if word in ("now", "ahora"):
            return now
        midnight = datetime.combine(now.date(), datetime.min.time(), zone)
        return midnight - timedelta(days=1) if word in ("yesterday", "ayer") else midnight
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        print(f"relay: {text!r} is not a date or instant; write 2026-11-27, 2026-11-27 08:00 "
              f"({zone.key}), 2026-11-27T08:00:00-05:00, today or yesterday", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=zone)


def cmd_queue(args: argparse.Namespace) -> int:
    config, store = _open(args)
    try:
        return _queue(args, config, store)
    finally:
        store.close()


def _queue(args: argparse.Namespace, config: RelayConfig, store: Store) -> int:
    now = clock_from_env().now()
    if args.action == "list":
        due_before = parse_instant(args.due_before, institution_zone(config, args.config))
        query = views.HoldQuery(reason=args.reason, recipient=args.recipient, sender=args.sender,
                                due_before=due_before, all_states=args.all, limit=args.limit)
        if args.json:
            print(json.dumps(views.list_holds(store, query), ensure_ascii=False, indent=2))
            return EXIT_OK
        holds = store.list_holds(query.filters())
        if not holds:
            print("no held messages")
            return EXIT_OK
        zone = institution_zone(config, args.config)
        rows = [["ID", "STATE", "REASON", "DUE", "FROM", "TO", "SUBJECT", "RULES", "DECIDED"]]
        # one time policy: every instant in the institution's zone, named; rows in absolute order
        holds = sorted(holds, key=lambda h: (h.state is not HoldState.MODERATION,
                                             (h.deliver_at or h.next_attempt or h.created_at).timestamp()))
        for h in holds:
            to = h.recipients[0] + (f" (+{len(h.recipients) - 1})" if len(h.recipients) > 1 else "")
            local = _local(h.deliver_at, zone)
            if h.state is HoldState.MODERATION:
                due = f"awaits approval, then {local}" if local else "awaits approval"
            else:
                due = local or _local(h.next_attempt, zone)
            rows.append([h.id, h.state.value, h.reason, due, h.mail_from, to, h.subject[:40], ",".join(h.rule_ids),
                         _decided_short(h, zone)])
        _table(rows, sys.stdout)
        print(f"{len(holds)} held message(s)")
        return EXIT_OK
    ids = _read_ids(args.ids)
    if not ids:
        print("relay queue: no ids given (hold ids, queue ids, or - to read them from standard input)",
              file=sys.stderr)
        return EXIT_USAGE
    holds = []
    status = EXIT_OK
    for given in ids:
        found = _resolve(store, given, all_states=args.action == "show")
        if not found:
            print(f"relay queue: no held message {given!r} (see: relay queue list)", file=sys.stderr)
            status = max(status, EXIT_NOT_FOUND)
        holds += [h for h in found if h.id not in {x.id for x in holds}]
    if args.action == "show":
        if args.json and not (len(ids) == 1 and len(holds) == 1 and holds[0].id == ids[0]):
            print(json.dumps([views.show_hold(store, h.id) for h in holds], ensure_ascii=False, indent=2))
            return status
        for n, hold in enumerate(holds):
            if n:
                print()
            _show(args, store, hold, institution_zone(config, args.config))
        return status
    changed = False
    zone, templates = institution_zone(config, args.config), _pack_notices(config, args.config)
    for target in holds:
        try:
            hold = views.act(store, target.id, args.action, _who(args), now, getattr(args, "reason", "") or "",
                             zone, templates)
        except ValueError as error:
            print(f"relay queue: {error}", file=sys.stderr)
            status = max(status, EXIT_STATE)
            continue
        changed = True
        when = ""
        if hold.state is HoldState.WAITING:
            later = hold.next_attempt is not None and hold.next_attempt > now
            when = (f" (delivered at {_iso(hold.next_attempt)}, when the recipients are back at work)" if later
                    else " (delivered within seconds by the running relay)")
        print(f"{hold.id}: {hold.state.value}{when}")
    if changed:
        _wake(config, args.config)
    return status


def _read_ids(given: list[str]) -> list[str]:
    """The ids as given, `-` replaced by the ids on standard input (whitespace-separated; a line of
    `relay queue list` output contributes its first column)."""
    ids: list[str] = []
    for item in given:
        if item != "-":
            ids.append(item)
            continue
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "ID" or line.startswith("no held messages") or line.rstrip().endswith(
                    "held message(s)"):
                continue  # the header and footer of `relay queue list`
            ids.append(words[0])
    return list(dict.fromkeys(i for i in ids if i))


def _resolve(store: Store, given: str, all_states: bool) -> list[Hold]:
    """A hold id names one hold; an SMTP queue id (from the log or the audit trail) names all holds of
    that message: the open ones for an action, every one for `show`."""
    hold = store.get_hold(given)
    if hold is not None:
        return [hold]
    states = tuple(HoldState) if all_states else (HoldState.WAITING, HoldState.MODERATION, HoldState.DELIVERING)
    return store.list_holds(HoldFilter(queue_id=given, states=states, limit=1000))


_local = when.local  # one short form of an instant for people: '2026-11-30 08:00 -05 (America/Bogota)'


def _decided_short(hold: Hold, zone: tzinfo) -> str:
    """'approved by yanet 2026-12-03 08:00 -05' for the list (empty while undecided)."""
    if not hold.decision:
        return ""
    when = hold.decided_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if hold.decided_at else ""
    who = f" by {hold.decided_by}" if hold.decided_by and hold.decision != "expired" else ""
    return f"{hold.decision}{who} {when}".strip()


def _show(args: argparse.Namespace, store: Store, hold: Hold, zone: tzinfo) -> int:
    data = views.show_hold(store, hold.id)
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return EXIT_OK
    headers, events = data["headers"], store.hold_events(hold.id)
    # one time policy: every instant in the institution's zone, named (JSON keeps ISO with offsets)
    instants = {"deliver_at": hold.deliver_at, "next_attempt": hold.next_attempt, "created_at": hold.created_at}
    for key in ("id", "state", "reason", "mail_from", "subject", "deliver_at", "next_attempt", "attempts",
                "created_at", "last_error"):
        if data[key] not in ("", None):
            text = _local(instants[key], zone) if key in instants else data[key]
            if key == "deliver_at" and hold.deliver_at_local and hold.deliver_at is not None:
                theirs = datetime.fromisoformat(hold.deliver_at_local)
                if theirs.utcoffset() != hold.deliver_at.astimezone(zone).utcoffset():
                    text += f" — {theirs:%Y-%m-%d %H:%M} UTC{theirs:%z} for the recipient"
            print(f"{key + ':':<14}{text}")
    print(f"{'recipients:':<14}{', '.join(hold.recipients)}")
    for rule, cite in zip(hold.rule_ids, hold.cites, strict=False):
        print(f"{'rule:':<14}{rule} — {cite}")
    if hold.moderators:
        print(f"{'moderators:':<14}{', '.join(hold.moderators)}")
    if hold.decision:
        print(f"{'decided:':<14}{_decided_short(hold, zone)}")
        print(f"{'':<14}{moderation.decided_es(hold, zone)}")
    print("headers:")
    for header in headers:
        print("  " + " ".join(header.split())[:300])
    print("history:")
    for e in events:
        print(f"  {_local(e.at, zone)}  {e.event:<10} {e.detail}")
    return EXIT_OK


AUDIT_COLUMNS = ["at", "queue_id", "verdict", "reply", "mail_from", "recipients", "login", "client_ip", "rules",
                 "circulars", "actions", "monitored", "reasons"]


def _audit_row(e: AuditEntry) -> list[str]:
    return [_iso(e.at), e.queue_id, e.verdict, e.reply, e.mail_from, str(e.recipients), e.login or "",
            e.client_ip or "", " ".join(r[0] for r in e.rules), " | ".join(r[1] for r in e.rules),
            " ".join(r[2] for r in e.rules), " ".join(e.monitored),
            " | ".join(f"{r[0]}: {r[3]}" for r in e.rules if len(r) > 3)]  # text rules: terms and scores


def audit_json(e: AuditEntry) -> dict[str, Any]:
    """One decision for `relay audit --json`: the CSV's columns, typed (a count as a number, the
    rules, circulars, actions, monitored rules and reasons as lists; the instant ISO with offset)."""
    return {"at": _iso(e.at), "queue_id": e.queue_id, "verdict": e.verdict, "reply": e.reply,
            "mail_from": e.mail_from, "recipients": e.recipients, "login": e.login or "",
            "client_ip": e.client_ip or "", "rules": [r[0] for r in e.rules], "circulars": [r[1] for r in e.rules],
            "actions": [r[2] for r in e.rules], "monitored": list(e.monitored),
            "reasons": [f"{r[0]}: {r[3]}" for r in e.rules if len(r) > 3]}


def cmd_audit(args: argparse.Namespace) -> int:
    config, store = _open(args)
    zone = institution_zone(config, args.config)
    try:
        since, until = parse_instant(args.since, zone), parse_instant(args.until, zone)
        entries = store.query_audit(since, until, args.rule, args.verdict, args.limit)
    finally:
        store.close()
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(AUDIT_COLUMNS)
        writer.writerows(_audit_row(e) for e in entries)
    elif args.json:
        print(json.dumps([audit_json(e) for e in entries], ensure_ascii=False, indent=2))
    else:
        rows = [["AT", "QUEUE ID", "VERDICT", "FROM", "RULES"]]
        rows += [[_local(e.at, zone), e.queue_id, e.verdict, e.mail_from, " ".join(r[0] for r in e.rules) or "-"]
                 for e in entries]
        _table(rows, sys.stdout)
        print(f"{len(entries)} decision(s)")
    return EXIT_OK


trace_json = views.trace_json  # one message's life: the same for the CLI, the /trace page and the API


def cmd_trace(args: argparse.Namespace) -> int:
    """`relay trace`: where is my mail? Search the audit trail, then tell each message's life
    (relay.views.search_traces: the /trace page and GET /api/v1/trace run the same search)."""
    config, store = _open(args)
    zone = institution_zone(config, args.config)
    try:
        query = TraceQuery(sender=args.sender, recipient=args.recipient, message_id=args.message_id,
                           queue_id=args.queue_id, since=parse_instant(args.since, zone),
                           until=parse_instant(args.until, zone), limit=args.limit, offset=args.offset)
        try:
            found = views.search_traces(store, query)
            traces = found["messages"]
        except views.BadRequest as error:
            print(f"relay trace: {error}", file=sys.stderr)
            return EXIT_USAGE
    finally:
        store.close()
    if args.json:
        print(json.dumps(traces, ensure_ascii=False, indent=2))
        return EXIT_OK
    if not traces:
        print("no message matches")
        return EXIT_OK

    def local(at: str) -> str:
        return datetime.fromisoformat(at).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z") if at else ""

    for n, t in enumerate(traces):
        if n:
            print()
        print(f"{t['queue_id']}  {local(t['at'])} ({zone.key})  {t['mail_from'] or '<>'} -> "
              f"{', '.join(t['recipients']) or '?'}")
        if t["subject"] or t["message_id"]:
            print(f"  {t['subject']}" + (f"  <{t['message_id']}>" if t["message_id"] else ""))
        for e in t["events"]:
            print(f"  {local(e['at'])}  {e['event']:<16} {e['detail']}")
            for r in e.get("rules", []):
                print(f"  {'':23}  {r['rule']} ({r['action']}) — {r['cite']}")
    more = found["total"] - found["offset"] - len(traces)
    print(f"\n{len(traces)} message(s)" + (f" of {found['total']}; the next: --offset {found['offset'] + len(traces)}"
                                           if more > 0 else ""))
    return EXIT_OK


# The columns Bogotá's Circular 004 de 2024, numeral 4, asks the inventory to hold (relay.report).
INVENTORY_COLUMNS = report.INVENTORY_COLUMNS


def cmd_inventory(args: argparse.Namespace) -> int:
    config, store = _open(args)
    zone = institution_zone(config, args.config)
    try:
        accounts = store.inventory()
    finally:
        store.close()
    rows = [[a.network, "", "", a.account, "personal" if a.mailbox_type == "personal" else "servicio", "", "", "",
             _iso(a.first_seen), _iso(a.last_seen), str(a.messages)] for a in accounts]
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(INVENTORY_COLUMNS)
        writer.writerows(rows)
    elif args.json:
        typed = [{**dict(zip(INVENTORY_COLUMNS, r, strict=True)), "mensajes": a.messages}
                 for r, a in zip(rows, accounts, strict=True)]
        print(json.dumps(typed, ensure_ascii=False, indent=2))
    else:
        table = [["NETWORK", "ACCOUNT MAILBOX", "TYPE", "FIRST SEEN", "LAST SEEN", "MESSAGES"]]
        table += [[r[0], r[3], r[4], _local(a.first_seen, zone), _local(a.last_seen, zone), r[10]]
                  for r, a in zip(rows, accounts, strict=True)]
        _table(table, sys.stdout)
        personal = sum(1 for a in accounts if a.mailbox_type == "personal")
        print(f"{len(accounts)} account(s), {personal} on personal mailboxes (Circular 004 de 2024, num. 2: "
              "move them to service mailboxes)")
    return EXIT_OK


def _report_directory(config: RelayConfig, config_path: str) -> Any:
    """The directory the report looks senders' offices up in: the YAML file, or the LDAP snapshot the
    running relay wrote (a fresh read only when there is none)."""
    from relay import ldapdir

    if not ldapdir.is_ldap_url(config.directory):
        return ldapdir.load_directory_file(config.resolve(config_path, config.directory))
    source = ldapdir.source_from_config(config, config_path)
    snapshot = ldapdir.read_snapshot(source.snapshot_path)
    return ldapdir.to_directory(snapshot) if snapshot is not None else ldapdir.load(source)


def cmd_report(args: argparse.Namespace) -> int:
    """`relay report --month 2026-11`: the compliance report, as JSON, CSV or a self-contained page."""
    from relay.policy.pack import load_pack

    config = load_config(args.config)
    zone = institution_zone(config, args.config)
    try:
        period = report.Period.month(args.month, zone)
    except report.ReportError as error:
        print(f"relay report: {error}", file=sys.stderr)
        return EXIT_USAGE
    directory = _report_directory(config, args.config)
    rules = report.pack_rules(load_pack(config.resolve(args.config, config.policy)))
    _, store = _open(args)
    try:
        figures = report.report_for(store, directory, period, rules, args.office or None)
    finally:
        store.close()
    if args.format == "json":
        text = json.dumps(report.report_json(figures), ensure_ascii=False, indent=2) + "\n"
    elif args.format == "csv":
        text = report.report_csv(figures)
    else:
        text = report.report_html(figures)
    if args.output and args.output != "-":
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"{args.output}: {args.format} report for {figures.period} ({figures.messages} message(s))",
              file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    """Check the files here first (a bad one is reported exactly as `relay validate` does and the
    relay is not disturbed), then SIGHUP the running relay and report what it says it did."""
    import time

    from relay.app import reload_status_path

    config = load_config(args.config)  # ConfigError: printed by main, exit 3
    pid_file = config.resolve(args.config, config.pid_file)
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        print(f"relay reload: no running relay (pid file {pid_file})", file=sys.stderr)
        return 1
    status = reload_status_path(config, args.config)

    def stamp() -> tuple[int, int]:
        try:
            st = status.stat()
        except OSError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    before = stamp()
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + args.timeout
    while stamp() == before:
        if time.monotonic() > deadline:
            print(f"relay reload: signalled pid {pid}, but it did not report within {args.timeout:g} s "
                  "(see its log)", file=sys.stderr)
            return 1
        time.sleep(0.05)
    result = json.loads(status.read_text(encoding="utf-8"))
    if not result["ok"]:
        print(f"relay reload: refused; the running rules (generation {result['generation']}) stay in force:",
              file=sys.stderr)
        for problem in result["problems"]:
            print(problem, file=sys.stderr)
        return 3
    print(f"reloaded: generation {result['generation']}, pack {result['pack']} ({result['rules']} rules)")
    if result["restart_needed"]:
        print("changed settings that only a restart applies: " + ", ".join(result["restart_needed"]))
    return EXIT_OK


def cmd_api_token(args: argparse.Namespace) -> int:
    """A new API token: the token once (for the client), and its hash (for the relay's config)."""
    from relay import apitokens

    if ":" in args.name or not args.name.strip():
        print("relay api-token: NAME must be non-empty and without ':'", file=sys.stderr)
        return EXIT_USAGE
    token = apitokens.new_token()
    digest = apitokens.token_hash(token)
    print(f"token:      {token}")
    print(f"token_hash: {digest}")
    print("# the token is shown only now: give it to the client (Authorization: Bearer ...); the relay keeps")
    print("# only the hash. In the config, under admin.api_tokens:")
    print(f"#   - {{name: {args.name}, token_hash: \"{digest}\", scope: {args.scope}}}")
    print("# or as a line of admin.api_token_file:")
    print(f"{args.name}:{digest}:{args.scope}")
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    api_token = sub.add_parser("api-token", help="make a token for the JSON API (docs/api.md)")
    token_actions = api_token.add_subparsers(dest="action", required=True)
    token_new = token_actions.add_parser("new", help="print a new token and the hash the config keeps")
    token_new.add_argument("name", help="who uses it, e.g. mesa-de-ayuda")
    token_new.add_argument("--scope", choices=["read", "moderate"], default="read")
    token_new.set_defaults(func=cmd_api_token)

    reload = sub.add_parser("reload", help="re-read config, pack and directory in the running relay (SIGHUP)")
    reload.add_argument("--config", required=True)
    reload.add_argument("--timeout", type=float, default=30, help="seconds to wait for the relay's answer")
    reload.set_defaults(func=cmd_reload)

    queue = sub.add_parser("queue", help="held and moderated mail: list, show, release, approve, reject, delete")
    queue.add_argument("--config", required=True, help="the relay's config YAML")
    actions = queue.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="held messages, earliest due first")
    listing.add_argument("--reason", choices=["hold", "moderate"])
    listing.add_argument("--recipient")
    listing.add_argument("--sender")
    listing.add_argument("--due-before", help="a date or instant: 2026-11-27, '2026-11-27 08:00' (institution's "
                         "zone), ISO 8601 with offset, today, yesterday")
    listing.add_argument("--all", action="store_true", help="also delivered, refused and deleted ones")
    listing.add_argument("--limit", type=int, default=1000)
    listing.add_argument("--json", action="store_true")
    ids_help = "hold ids or SMTP queue ids (all holds of that message); - reads them from standard input"
    show = actions.add_parser("show", help="held messages: headers, recipients, reason, history")
    show.add_argument("ids", nargs="+", metavar="ID", help=ids_help)
    show.add_argument("--json", action="store_true")
    for name, text in (("release", "deliver a timed hold now"), ("approve", "approve a moderated message"),
                       ("delete", "drop a held message without delivering it (the sender is told)"),
                       ("withdraw", "withdraw a held message for its sender (what the sender's link does)")):
        action = actions.add_parser(name, help=text)
        action.add_argument("ids", nargs="+", metavar="ID", help=ids_help)
        action.add_argument("--by", help="who decides (default: your user name)")
    reject = actions.add_parser("reject", help="refuse a moderated message; the sender gets the reason")
    reject.add_argument("ids", nargs="+", metavar="ID", help=ids_help)
    reject.add_argument("--reason", required=True, help="told to the sender, in Spanish")
    reject.add_argument("--by")
    queue.set_defaults(func=cmd_queue)

    audit = sub.add_parser("audit", help="the decision audit trail (rule ids, circulars cited, actions)")
    audit.add_argument("--config", required=True)
    audit.add_argument("--since", help="a date or instant: 2026-11-27, '2026-11-27 08:00' (institution's zone), "
                       "ISO 8601 with offset, today, yesterday")
    audit.add_argument("--until", help="as --since")
    audit.add_argument("--rule", help="only decisions where this rule fired")
    audit.add_argument("--verdict", choices=["deliver", "hold", "moderate", "tempfail", "reject"])
    audit.add_argument("--limit", type=int, default=100000)
    audit.add_argument("--csv", action="store_true", help="CSV on standard output")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(func=cmd_audit)

    trace = sub.add_parser("trace", help="where is my mail? each message's life: decision, holds, delivery, notices")
    trace.add_argument("--config", required=True)
    trace.add_argument("--sender", help="envelope sender or SASL login")
    trace.add_argument("--recipient")
    trace.add_argument("--message-id")
    trace.add_argument("--queue-id")
    trace.add_argument("--since", help="as for relay audit: 2026-11-27, '2026-11-27 08:00', today, ISO 8601")
    trace.add_argument("--until")
    trace.add_argument("--limit", type=int, default=100, help="messages shown (newest first)")
    trace.add_argument("--offset", type=int, default=0, help="matching messages skipped first (the next page)")
    trace.add_argument("--json", action="store_true")
    trace.set_defaults(func=cmd_trace)

    rep = sub.add_parser("report", help="the compliance report of a month: per rule and circular, per office, "
                         "right to disconnect, social-network inventory (docs/operations.md)")
    rep.add_argument("--config", required=True)
    rep.add_argument("--month", required=True, help="YYYY-MM, in the institution's zone, e.g. 2026-11")
    rep.add_argument("--format", choices=["html", "csv", "json"], default="html",
                     help="html: a self-contained page with charts (default); csv: one long table; json")
    rep.add_argument("--office", help="only the messages of senders of this office (the directory's department)")
    rep.add_argument("--output", "-o", help="write to this file (default: standard output)")
    rep.set_defaults(func=cmd_report)

    inventory = sub.add_parser("inventory", help="social-network accounts seen (Bogotá Circular 004 de 2024)")
    inventory.add_argument("--config", required=True)
    inventory.add_argument("--csv", action="store_true", help="the semester report, CSV on standard output")
    inventory.add_argument("--json", action="store_true")
    inventory.set_defaults(func=cmd_inventory)
