"""The compliance report: what the rules did in a month, per rule and circular, per office, per day
and week; the right-to-disconnect figures Ley 2191 de 2022 asks about; the social-network inventory
in the columns of Bogotá's Circular 004 de 2024, numeral 4.

`build_report` is pure: it gets the audit trail, the held copies and the inventory the store gave,
the directory (for each sender's office) and the pack's rules, and returns a typed `Report`.
`report_for` reads those from a `Store` and calls it: the one function the CLI (`relay report`), the
admin page (/report) and the API (/api/v1/report) share. The renderings (`report_json`, `report_csv`,
`report_html`) only format a `Report`.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import re
from base64 import b64encode
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from relay.directory import Directory, Person
from relay.store.base import AuditEntry, Hold, HoldFilter, HoldState, SocialAccount, Store

NO_OFFICE = "(sin dependencia)"  # a sender the directory knows without a department
OUTSIDE = "(remitente externo)"  # a sender not of our domains
ACTIONS = ("reject", "tempfail", "moderate", "hold", "split", "notify", "deliver")
"""The columns of the per-rule and per-office tables: what a rule hit asked for (a rewrite is
counted as `split`: the copy went, fixed; a `record` as `deliver`)."""
_ACTION_OF = {"rewrite": "split", "record": "deliver"}
VERDICTS = ("deliver", "hold", "moderate", "reject", "tempfail")
DECISIONS = ("approved", "rejected", "released", "deleted", "withdrawn", "expired")
ACTION_ES = {"reject": "rechazado", "tempfail": "aplazado (4xx)", "moderate": "a moderación", "hold": "retenido",
             "split": "separado / corregido", "notify": "con aviso", "deliver": "entregado (registrado)"}
VERDICT_ES = {"deliver": "entregados", "hold": "retenidos", "moderate": "a moderación", "reject": "rechazados",
              "tempfail": "aplazados (4xx)"}
DECISION_ES = {"approved": "aprobados", "rejected": "rechazados", "released": "liberados", "deleted": "borrados",
               "withdrawn": "retirados por el remitente", "expired": "vencidos sin decisión"}
# Bogotá's Circular 004 de 2024, numeral 4: the inventory's columns (the relay fills what mail
# shows; the communications office the rest), then what the relay adds.
INVENTORY_COLUMNS = ["red_social", "usuario_cuenta", "url_perfil", "correo_institucional_asociado",
                     "tipo_buzon", "objetivo_cuenta", "responsable_gestion", "datos_contacto",
                     "primera_vez_visto", "ultima_vez_visto", "mensajes"]
INVENTORY_ES = {"red_social": "Red social", "usuario_cuenta": "Usuario de la cuenta", "url_perfil": "URL del perfil",
                "correo_institucional_asociado": "Correo institucional asociado", "tipo_buzon": "Tipo de buzón",
                "objetivo_cuenta": "Objetivo de la cuenta", "responsable_gestion": "Responsable de la gestión",
                "datos_contacto": "Datos de contacto", "primera_vez_visto": "Primera vez visto",
                "ultima_vez_visto": "Última vez visto", "mensajes": "Mensajes"}
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
MONTHS_ES = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
             "noviembre", "diciembre")


class ReportError(ValueError):
    """The request is wrong (a month like 2026-13): said to the person, exit 2 / HTTP 400."""


@dataclass(frozen=True)
class Period:
    """The report's span: local days [first, last] in the institution's zone."""

    first: date
    last: date
    zone: tzinfo

    @classmethod
    def month(cls, text: str, zone: tzinfo) -> Period:
        match = _MONTH.match(text.strip())
        if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
            raise ReportError(f"{text!r} is not a month; write it as YYYY-MM, e.g. 2026-11")
        year, month = int(match.group(1)), int(match.group(2))
        first = date(year, month, 1)
        last = (date(year + month // 12, month % 12 + 1, 1)) - timedelta(days=1)
        return cls(first, last, zone)

    @classmethod
    def days(cls, first: date, last: date, zone: tzinfo) -> Period:
        """Any span of whole local days (a "day of mail" test: first == last)."""
        if last < first:
            raise ReportError(f"{last} is before {first}")
        return cls(first, last, zone)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, datetime.min.time(), self.zone)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), datetime.min.time(), self.zone)

    @property
    def label(self) -> str:
        if self.first.day == 1 and (self.last + timedelta(days=1)).day == 1 and self.first.month == self.last.month:
            return f"{self.first:%Y-%m}"
        return f"{self.first}" if self.first == self.last else f"{self.first}/{self.last}"

    def each_day(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


@dataclass(frozen=True)
class RuleFigures:
    rule: str
    cites: str
    kind: str
    counts: dict[str, int]  # ACTIONS -> rule hits
    monitored: int  # hits of the rule in monitor mode (the message was not touched)
    total: int


@dataclass(frozen=True)
class OfficeFigures:
    office: str
    messages: int
    verdicts: dict[str, int]  # VERDICTS -> messages
    rule_hits: dict[str, int]  # ACTIONS -> rule hits of its senders' messages


@dataclass(frozen=True)
class DayFigures:
    day: str  # YYYY-MM-DD (local)
    messages: int
    verdicts: dict[str, int]


@dataclass(frozen=True)
class WeekFigures:
    week: str  # ISO week, 2026-W45
    first_day: str
    last_day: str
    messages: int
    verdicts: dict[str, int]


@dataclass(frozen=True)
class OffHoursSender:
    sender: str
    office: str
    messages: int  # messages with copies held until the recipients' working time
    recipients: int  # recipients held, over those messages


@dataclass(frozen=True)
class Override:
    """A declared urgency ([URGENTE]): delivered off-hours with its stated reason."""

    at: str  # local, ISO 8601 with offset
    queue_id: str
    rule: str
    declared_by: str
    office: str
    reason: str
    recipients: list[str]


@dataclass(frozen=True)
class Exemption:
    """Recipients off work reached anyway because their role is exempt (Ley 2191 de 2022, art. 6)."""

    at: str
    queue_id: str
    rule: str
    sender: str
    office: str
    roles: str
    recipients: list[str]


@dataclass(frozen=True)
class Disconnect:
    held_messages: int
    held_recipients: int
    senders: list[OffHoursSender]  # most held first
    overrides: list[Override]
    exemptions: list[Exemption]
    override_count: int
    exemption_count: int
    exempt_recipients: int


@dataclass(frozen=True)
class Moderation:
    """Held copies stored in the period, and the decisions on them (by whom does not go here)."""

    copies: dict[str, int]  # hold | moderate -> copies stored
    decisions: dict[str, int]  # DECISIONS -> copies
    open: int  # still waiting at the time of the report


@dataclass(frozen=True)
class Report:
    institution: str
    period: str  # 2026-11, or 2026-11-24, or first/last
    zone: str
    start: str
    end: str
    office: str | None  # the --office filter, or None for all
    messages: int
    verdicts: dict[str, int]
    rules: list[RuleFigures]
    offices: list[OfficeFigures]
    days: list[DayFigures]
    weeks: list[WeekFigures]
    disconnect: Disconnect
    moderation: Moderation
    inventory: list[dict[str, Any]] = field(default_factory=list)  # INVENTORY_COLUMNS, in that order


def _zero(keys: Iterable[str]) -> dict[str, int]:
    return dict.fromkeys(keys, 0)


def _action(action: str) -> str:
    return _ACTION_OF.get(action, action)


def office_of(directory: Directory, address: str) -> str:
    """The sender's office (its `department` in the directory), NO_OFFICE, or OUTSIDE."""
    if not address:
        return OUTSIDE
    entry = directory.find(address)
    if isinstance(entry, Person) and entry.department:
        return entry.department
    return NO_OFFICE if entry is not None or directory.is_local(address) else OUTSIDE


def sender_of(entry: AuditEntry) -> str:
    """Who sent it, as the report counts: the SASL login (a person), else the envelope sender."""
    return (entry.login or entry.mail_from or "").strip()


def _local_iso(at: datetime, zone: tzinfo) -> str:
    return at.astimezone(zone).isoformat(timespec="seconds")


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_report(entries: Iterable[AuditEntry], holds: Iterable[Hold], accounts: Iterable[SocialAccount],
                 directory: Directory, period: Period, rules: Mapping[str, tuple[str, str]] | None = None,
                 office: str | None = None, institution: str = "") -> Report:
    """The figures of `period` from what the store gave. `rules`: the pack's rule id -> (kind, cites),
    so that a rule that only ran in monitor mode still has its circular, and the right-to-disconnect
    rules are known by kind (without it, every `hold` hit counts as off-hours). `office` keeps only
    the messages (and held copies) of senders of that office. Pure."""
    rules = rules or {}
    zone = period.zone
    start, end = period.start, period.end
    disconnect_ids = {rid for rid, (kind, _) in rules.items() if kind == "disconnect"}
    offices: dict[str, str] = {}

    def office_for(address: str) -> str:
        key = address.casefold()
        if key not in offices:
            offices[key] = office_of(directory, address)
        return offices[key]

    kept = [e for e in entries if start <= e.at < end and (office is None or office_for(sender_of(e)) == office)]
    verdicts = Counter(e.verdict for e in kept)
    by_rule: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    monitored: Counter[str] = Counter()
    by_office: dict[str, tuple[Counter[str], Counter[str]]] = defaultdict(lambda: (Counter(), Counter()))
    by_day: dict[date, Counter[str]] = defaultdict(Counter)
    held_by: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    overrides: list[Override] = []
    exemptions: list[Exemption] = []
    for e in kept:
        sender = sender_of(e)
        where = office_for(sender)
        office_verdicts, office_hits = by_office[where]
        office_verdicts[e.verdict] += 1
        by_day[e.at.astimezone(zone).date()][e.verdict] += 1
        off_hours = False
        for hit in e.rules:
            if len(hit) < 3:
                continue
            rule_id, cites, action = hit[0], hit[1], _action(hit[2])
            by_rule[(rule_id, cites)][action] += 1
            office_hits[action] += 1
            if hit[2] == "hold" and (rule_id in disconnect_ids or not disconnect_ids):
                off_hours = True
        for rule_id in e.monitored:
            monitored[rule_id] += 1
        if off_hours and e.verdict != "reject":
            held_by[sender.casefold()][0] += 1
        for kind, data in e.records:
            values = dict(data)
            if kind == "urgency":
                overrides.append(Override(_local_iso(e.at, zone), e.queue_id, values.get("rule", ""),
                                          values.get("declared_by", sender), where, values.get("reason", ""),
                                          _list(values.get("recipients", ""))))
            elif kind == "exemption":
                exemptions.append(Exemption(_local_iso(e.at, zone), e.queue_id, values.get("rule", ""),
                                            values.get("sender", sender), where, values.get("roles", ""),
                                            _list(values.get("recipients", ""))))
    # held recipients: the held copies (one per plan) of the off-hours messages
    kept_queue = {e.queue_id: sender_of(e) for e in kept}
    copies: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    still_open = 0
    for hold in holds:
        held_sender = kept_queue.get(hold.queue_id) or hold.mail_from  # (a copy whose decision was not audited)
        if not (start <= hold.created_at < end) or (office is not None and office_for(held_sender) != office):
            continue
        copies[hold.reason] += 1
        if hold.decision:
            decisions[hold.decision] += 1
        if hold.state in (HoldState.WAITING, HoldState.MODERATION, HoldState.DELIVERING) and not hold.decision:
            still_open += 1
        if hold.reason == "hold" and (not disconnect_ids or disconnect_ids & set(hold.rule_ids)) \
                and held_sender.casefold() in held_by:
            held_by[held_sender.casefold()][1] += len(hold.recipients)
    names = {sender_of(e).casefold(): sender_of(e) for e in kept}
    senders = sorted((OffHoursSender(names[key], office_for(names[key]), n, r) for key, (n, r) in held_by.items()),
                     key=lambda s: (-s.messages, -s.recipients, s.sender))
    rule_rows = []
    seen_ids = set()
    for (rule_id, cites), counts in sorted(by_rule.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        seen_ids.add(rule_id)
        rule_rows.append(RuleFigures(rule_id, cites, rules.get(rule_id, ("", ""))[0], {**_zero(ACTIONS), **counts},
                                     monitored.pop(rule_id, 0), sum(counts.values())))
    for rule_id, n in sorted(monitored.items()):  # fired only in monitor mode
        kind, cites = rules.get(rule_id, ("", ""))
        rule_rows.append(RuleFigures(rule_id, cites, kind, _zero(ACTIONS), n, 0))
    office_rows = sorted((OfficeFigures(name, sum(v.values()), {**_zero(VERDICTS), **v}, {**_zero(ACTIONS), **h})
                          for name, (v, h) in by_office.items()), key=lambda o: (-o.messages, o.office))
    days = [DayFigures(f"{d}", sum(by_day[d].values()), {**_zero(VERDICTS), **by_day[d]}) for d in period.each_day()]
    weeks: dict[str, list[date]] = defaultdict(list)
    for d in period.each_day():
        iso = d.isocalendar()
        weeks[f"{iso.year}-W{iso.week:02d}"].append(d)
    week_rows = []
    for name, span in weeks.items():
        total: Counter[str] = Counter()
        for d in span:
            total.update(by_day[d])
        week_rows.append(WeekFigures(name, f"{span[0]}", f"{span[-1]}", sum(total.values()),
                                     {**_zero(VERDICTS), **total}))
    inventory = [_inventory_row(a, zone) for a in sorted(accounts, key=lambda a: (a.network, a.account))
                 if a.first_seen < end]
    return Report(
        institution=institution or directory.name, period=period.label, zone=getattr(zone, "key", str(zone)),
        start=start.isoformat(), end=end.isoformat(), office=office, messages=len(kept),
        verdicts={**_zero(VERDICTS), **verdicts}, rules=rule_rows, offices=office_rows, days=days, weeks=week_rows,
        disconnect=Disconnect(sum(s.messages for s in senders), sum(s.recipients for s in senders), senders,
                              overrides, exemptions, len(overrides), len(exemptions),
                              sum(len(x.recipients) for x in exemptions)),
        moderation=Moderation({**_zero(("hold", "moderate")), **copies}, {**_zero(DECISIONS), **decisions},
                              still_open),
        inventory=inventory)


def _inventory_row(account: SocialAccount, zone: tzinfo) -> dict[str, Any]:
    return {"red_social": account.network, "usuario_cuenta": account.extra.get("usuario_cuenta", ""),
            "url_perfil": account.extra.get("url_perfil", ""), "correo_institucional_asociado": account.account,
            "tipo_buzon": "personal" if account.mailbox_type == "personal" else "servicio",
            "objetivo_cuenta": account.extra.get("objetivo_cuenta", ""),
            "responsable_gestion": account.extra.get("responsable_gestion", ""),
            "datos_contacto": account.extra.get("datos_contacto", ""),
            "primera_vez_visto": _local_iso(account.first_seen, zone),
            "ultima_vez_visto": _local_iso(account.last_seen, zone), "mensajes": account.messages}


AUDIT_LIMIT = 5_000_000  # decisions read for one report (a month of a large institution fits)


def report_for(store: Store, directory: Directory, period: Period, rules: Mapping[str, tuple[str, str]] | None = None,
               office: str | None = None, institution: str = "") -> Report:
    """The report of `period` from the store: what `relay report`, /report and /api/v1/report show.
    Blocking (callers in the event loop run it in a worker thread)."""
    entries = store.query_audit(period.start, period.end, limit=AUDIT_LIMIT)
    holds = store.list_holds(HoldFilter(states=tuple(HoldState), since=period.start, until=period.end,
                                        limit=AUDIT_LIMIT, order="queue"))
    return build_report(entries, holds, store.inventory(), directory, period, rules, office, institution)


def pack_rules(pack: Any) -> dict[str, tuple[str, str]]:
    """A pack's rule id -> (kind, cites), for `build_report`."""
    return {rule.id: (rule.kind, rule.cites) for rule in pack.rule_list}


# ---------------------------------------------------------------------------------------------
# Renderings
# ---------------------------------------------------------------------------------------------

def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data: numbers as numbers, instants ISO 8601 with offsets."""
    return asdict(report)


def figures(data: Mapping[str, Any]) -> dict[str, int]:
    """Every count of a report (its JSON), flattened to 'path' -> number: the keys the HTML page marks
    its cells with (data-figure), so a test compares the page, the JSON and the CSV one to one."""
    out: dict[str, int] = {"messages": data["messages"]}
    out.update({f"verdicts.{k}": v for k, v in data["verdicts"].items()})
    for r in data["rules"]:
        out.update({f"rules.{r['rule']}.{k}": v for k, v in r["counts"].items()})
        out[f"rules.{r['rule']}.monitored"] = r["monitored"]
        out[f"rules.{r['rule']}.total"] = out.get(f"rules.{r['rule']}.total", 0) + r["total"]
    for o in data["offices"]:
        out[f"offices.{o['office']}.messages"] = o["messages"]
        out.update({f"offices.{o['office']}.{k}": v for k, v in o["verdicts"].items()})
    for d in data["days"]:
        out[f"days.{d['day']}.messages"] = d["messages"]
        out.update({f"days.{d['day']}.{k}": v for k, v in d["verdicts"].items()})
    for w in data["weeks"]:
        out[f"weeks.{w['week']}.messages"] = w["messages"]
        out.update({f"weeks.{w['week']}.{k}": v for k, v in w["verdicts"].items()})
    dc = data["disconnect"]
    for key in ("held_messages", "held_recipients", "override_count", "exemption_count", "exempt_recipients"):
        out[f"disconnect.{key}"] = dc[key]
    for s in dc["senders"]:
        out[f"disconnect.senders.{s['sender']}.messages"] = s["messages"]
        out[f"disconnect.senders.{s['sender']}.recipients"] = s["recipients"]
    m = data["moderation"]
    out.update({f"moderation.copies.{k}": v for k, v in m["copies"].items()})
    out.update({f"moderation.decisions.{k}": v for k, v in m["decisions"].items()})
    out["moderation.open"] = m["open"]
    out["inventory.accounts"] = len(data["inventory"])
    return out


CSV_COLUMNS = ["section", "item", "detail", "metric", "value"]


def report_csv(report: Report) -> str:
    """One long table (docs/operations.md, "Compliance report"): section, item, detail, metric, value.
    Sections: summary, rule (item rule id, detail the circular cited, metric the action), office,
    day, week, off_hours (item sender, detail office), override and exemption (item the queue id,
    one row per field), moderation, inventory (item the mailbox, detail the network, metric the
    circular's column)."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    w.writerow(["summary", report.period, report.office or "", "messages", report.messages])
    for k, v in report.verdicts.items():
        w.writerow(["summary", report.period, report.office or "", k, v])
    for r in report.rules:
        for k, v in r.counts.items():
            w.writerow(["rule", r.rule, r.cites, k, v])
        w.writerow(["rule", r.rule, r.cites, "monitored", r.monitored])
        w.writerow(["rule", r.rule, r.cites, "total", r.total])
    for o in report.offices:
        w.writerow(["office", o.office, "", "messages", o.messages])
        for k, v in o.verdicts.items():
            w.writerow(["office", o.office, "", k, v])
    for d in report.days:
        w.writerow(["day", d.day, "", "messages", d.messages])
        for k, v in d.verdicts.items():
            w.writerow(["day", d.day, "", k, v])
    for wk in report.weeks:
        w.writerow(["week", wk.week, f"{wk.first_day}/{wk.last_day}", "messages", wk.messages])
        for k, v in wk.verdicts.items():
            w.writerow(["week", wk.week, f"{wk.first_day}/{wk.last_day}", k, v])
    dc = report.disconnect
    for key in ("held_messages", "held_recipients", "override_count", "exemption_count", "exempt_recipients"):
        w.writerow(["disconnect", report.period, "", key, getattr(dc, key)])
    for s in dc.senders:
        w.writerow(["off_hours", s.sender, s.office, "messages", s.messages])
        w.writerow(["off_hours", s.sender, s.office, "recipients", s.recipients])
    for ov in dc.overrides:
        for key in ("at", "rule", "declared_by", "office", "reason"):
            w.writerow(["override", ov.queue_id, ov.at, key, getattr(ov, key)])
        w.writerow(["override", ov.queue_id, ov.at, "recipients", " ".join(ov.recipients)])
    for x in dc.exemptions:
        for key in ("at", "rule", "sender", "office", "roles"):
            w.writerow(["exemption", x.queue_id, x.at, key, getattr(x, key)])
        w.writerow(["exemption", x.queue_id, x.at, "recipients", " ".join(x.recipients)])
    for k, v in report.moderation.copies.items():
        w.writerow(["moderation", "copies", "", k, v])
    for k, v in report.moderation.decisions.items():
        w.writerow(["moderation", "decisions", "", k, v])
    w.writerow(["moderation", "open", "", "open", report.moderation.open])
    for row in report.inventory:
        for key in INVENTORY_COLUMNS:
            w.writerow(["inventory", row["correo_institucional_asociado"], row["red_social"], key, row[key]])
    return out.getvalue()


# -- HTML and charts -------------------------------------------------------------------------

_SCRIPT = re.compile(r"<script\b.*?</script>", re.S | re.I)
_STYLE_ATTR = re.compile(r'style="opacity: ?([0-9.]+);?"')
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style>", re.S | re.I)


COLORS = {"reject": "#8b0000", "tempfail": "#757575", "moderate": "#5b3c88", "hold": "#e6a700", "split": "#0277bd",
          "notify": "#4fc3f7", "deliver": "#2e7d32"}
"""One colour per outcome in every chart: refusals dark red, holds amber, moderation purple, delivered green."""


def _chart(kind: str, title: str, labels: list[str], series: list[tuple[str, list[int]]], height: int = 360,
           colors: tuple[str, ...] = tuple(COLORS.values())) -> str:
    """One chart as inline SVG (pygal, server-side): no JavaScript, no external CSS or fonts."""
    import pygal
    from pygal.style import Style

    style = Style(background="#ffffff", plot_background="#ffffff", foreground="#1b1b1b",
                  foreground_strong="#1b1b1b", foreground_subtle="#555555", font_family="sans-serif",
                  label_font_size=12, major_label_font_size=12, legend_font_size=12, title_font_size=15,
                  colors=colors)
    config = {"js": [], "disable_xml_declaration": True, "style": style, "title": title,
              "height": height, "width": 860, "legend_at_bottom": True, "legend_at_bottom_columns": 4,
              "truncate_legend": -1, "margin_bottom": 28,
              "no_data_text": "Sin datos", "print_values": False, "truncate_label": 28, "show_y_guides": True,
              "x_label_rotation": 30 if len(labels) > 6 else 0, "margin": 12, "explicit_size": False}
    chart = {"bar": pygal.StackedBar, "hbar": pygal.HorizontalStackedBar, "line": pygal.Line}[kind](**config)
    chart.x_labels = labels
    stacked = kind != "line"
    top = max((sum(col) for col in zip(*(v for _, v in series), strict=True)) if stacked and series and labels
              else (max(v, default=0) for _, v in series), default=0)
    if top <= 12:  # counts: whole numbers on the value axis
        chart.y_labels = list(range(0, max(top, 1) + 1))
    for name, values in series:
        chart.add(name, values)
    svg: str = chart.render(is_unicode=True)
    svg = _SCRIPT.sub("", svg)  # pygal's tooltip configuration: no script runs on this page
    svg = _COMMENT.sub("", svg)  # its credits, with links out
    # the hidden tooltip layer as a presentation attribute: a strict CSP blocks style="…" attributes
    svg = _STYLE_ATTR.sub(lambda m: f'opacity="{m.group(1)}"', svg)
    return svg.replace("<svg ", '<svg role="img" aria-label="' + html.escape(title) + '" ', 1)


TREND = ("reject", "hold", "moderate")


def charts(report: Report) -> dict[str, str]:
    """The report's charts, as SVG text: per rule (stacked by action), per office (by verdict),
    the daily trend (refusals, holds, moderations: do they fall after a training?)."""
    out: dict[str, str] = {}
    rules = [r for r in report.rules if r.total]
    used = [a for a in ACTIONS if any(r.counts[a] for r in rules)] or ["reject"]
    out["rules"] = _chart("hbar", "Por regla: aplicaciones según la acción", [r.rule for r in rules],
                          [(ACTION_ES[a], [r.counts[a] for r in rules]) for a in used],
                          height=max(280, 120 + 40 * len(rules)), colors=tuple(COLORS[a] for a in used))
    offices = report.offices
    out["offices"] = _chart("bar", "Por dependencia: mensajes según el resultado", [o.office for o in offices],
                            [(VERDICT_ES[v], [o.verdicts[v] for o in offices]) for v in VERDICTS],
                            colors=tuple(COLORS[v] for v in VERDICTS))
    labels = [d.day[-2:] for d in report.days]
    out["trend"] = _chart("line", "Tendencia diaria: rechazos, retenciones y moderación", labels,
                          [(VERDICT_ES[v], [d.verdicts[v] for d in report.days])
                           for v in TREND], colors=tuple(COLORS[v] for v in TREND))
    return out


def style_hashes(fragment: str) -> list[str]:
    """CSP source expressions ('sha256-…') for the inline <style> blocks of the charts, so the admin
    page can allow exactly those and nothing else."""
    # inside <svg> a <style>'s text is parsed as XML text (entities decoded): hash what the browser sees
    return [f"'sha256-{b64encode(hashlib.sha256(html.unescape(body).encode('utf-8')).digest()).decode('ascii')}'"
            for body in _STYLE.findall(fragment)]


def _n(key: str, value: int) -> str:
    return f'<td class="n" data-figure="{html.escape(key)}">{value}</td>'


def period_es(report: Report) -> str:
    match = _MONTH.match(report.period)
    if match:
        return f"{MONTHS_ES[int(match.group(2)) - 1]} de {match.group(1)}"
    return report.period


def report_body(report: Report, chart_svg: Mapping[str, str] | None = None) -> str:
    """The report's sections as HTML (Spanish), every count in a cell marked with its `figures` key."""
    e = html.escape
    svg = dict(chart_svg if chart_svg is not None else charts(report))
    p: list[str] = []
    scope = f" · dependencia: {e(report.office)}" if report.office else ""
    p.append(f'<h1 id="report-title">Informe de cumplimiento · {e(period_es(report))}</h1>')
    p.append(f'<p class="hint">{e(report.institution)} · del {e(report.start[:10])} al '
             f'{e((datetime.fromisoformat(report.end) - timedelta(days=1)).date().isoformat())} '
             f'(zona {e(report.zone)}){scope}. Cifras del registro de decisiones (audit trail) del relay.</p>')
    p.append('<h2 id="summary">Resumen</h2><table class="figures"><thead><tr><th>Mensajes</th>'
             + "".join(f"<th>{e(VERDICT_ES[v].capitalize())}</th>" for v in VERDICTS) + "</tr></thead><tbody><tr>"
             + _n("messages", report.messages) + "".join(_n(f"verdicts.{v}", report.verdicts[v]) for v in VERDICTS)
             + "</tr></tbody></table>")
    p.append('<h2 id="by-rule">Por regla y numeral de la circular</h2>')
    p.append(f'<figure class="chart" id="chart-rules">{svg.get("rules", "")}</figure>')
    p.append('<div class="scroll"><table class="figures" id="rules"><thead><tr><th>Regla</th><th>Circular y numeral'
             '</th>' + "".join(f"<th>{e(ACTION_ES[a].capitalize())}</th>" for a in ACTIONS)
             + "<th>Monitor</th><th>Total</th></tr></thead><tbody>")
    for r in report.rules:
        p.append(f'<tr><td><code>{e(r.rule)}</code></td><td>{e(r.cites)}</td>'
                 + "".join(_n(f"rules.{r.rule}.{a}", r.counts[a]) for a in ACTIONS)
                 + _n(f"rules.{r.rule}.monitored", r.monitored) + _n(f"rules.{r.rule}.total", r.total) + "</tr>")
    if not report.rules:
        p.append(f'<tr><td colspan="{len(ACTIONS) + 4}">Ninguna regla aplicó en el periodo.</td></tr>')
    p.append("</tbody></table></div>")
    p.append('<h2 id="by-office">Por dependencia (del remitente)</h2>')
    p.append(f'<figure class="chart" id="chart-offices">{svg.get("offices", "")}</figure>')
    p.append('<div class="scroll"><table class="figures" id="offices"><thead><tr><th>Dependencia</th><th>Mensajes</th>'
             + "".join(f"<th>{e(VERDICT_ES[v].capitalize())}</th>" for v in VERDICTS) + "</tr></thead><tbody>")
    for o in report.offices:
        p.append(f"<tr><td>{e(o.office)}</td>" + _n(f"offices.{o.office}.messages", o.messages)
                 + "".join(_n(f"offices.{o.office}.{v}", o.verdicts[v]) for v in VERDICTS) + "</tr>")
    p.append("</tbody></table></div>")
    p.append('<h2 id="trend">Tendencia por día y por semana</h2>')
    p.append(f'<figure class="chart" id="chart-trend">{svg.get("trend", "")}</figure>')
    p.append('<div class="scroll"><table class="figures" id="weeks"><thead><tr><th>Semana</th><th>Días</th>'
             '<th>Mensajes</th>' + "".join(f"<th>{e(VERDICT_ES[v].capitalize())}</th>" for v in VERDICTS)
             + "</tr></thead><tbody>")
    for w in report.weeks:
        p.append(f"<tr><td>{e(w.week)}</td><td>{e(w.first_day[5:])} a {e(w.last_day[5:])}</td>"
                 + _n(f"weeks.{w.week}.messages", w.messages)
                 + "".join(_n(f"weeks.{w.week}.{v}", w.verdicts[v]) for v in VERDICTS) + "</tr>")
    p.append("</tbody></table></div>")
    p.append('<details><summary>Cifras por día</summary><div class="scroll"><table class="figures" id="days"><thead>'
             '<tr><th>Día</th><th>Mensajes</th>'
             + "".join(f"<th>{e(VERDICT_ES[v].capitalize())}</th>" for v in VERDICTS) + "</tr></thead><tbody>")
    for d in report.days:
        p.append(f"<tr><td>{e(d.day)}</td>" + _n(f"days.{d.day}.messages", d.messages)
                 + "".join(_n(f"days.{d.day}.{v}", d.verdicts[v]) for v in VERDICTS) + "</tr>")
    p.append("</tbody></table></div></details>")
    dc = report.disconnect
    p.append('<h2 id="disconnect">Desconexión laboral (Ley 2191 de 2022)</h2>')
    p.append('<table class="figures" id="disconnect-summary"><thead><tr><th>Mensajes retenidos fuera de jornada</th>'
             '<th>Destinatarios retenidos</th><th>Urgencias declaradas</th><th>Excepciones aplicadas</th>'
             '<th>Destinatarios exceptuados</th></tr></thead><tbody><tr>'
             + _n("disconnect.held_messages", dc.held_messages) + _n("disconnect.held_recipients", dc.held_recipients)
             + _n("disconnect.override_count", dc.override_count)
             + _n("disconnect.exemption_count", dc.exemption_count)
             + _n("disconnect.exempt_recipients", dc.exempt_recipients) + "</tr></tbody></table>")
    p.append('<h3>Mensajes fuera de jornada retenidos, por remitente</h3><div class="scroll"><table class="figures" '
             'id="off-hours"><thead><tr><th>Remitente</th><th>Dependencia</th><th>Mensajes</th><th>Destinatarios</th>'
             '</tr></thead><tbody>')
    for s in dc.senders:
        p.append(f"<tr><td>{e(s.sender)}</td><td>{e(s.office)}</td>"
                 + _n(f"disconnect.senders.{s.sender}.messages", s.messages)
                 + _n(f"disconnect.senders.{s.sender}.recipients", s.recipients) + "</tr>")
    if not dc.senders:
        p.append('<tr><td colspan="4">Ninguno.</td></tr>')
    p.append("</tbody></table></div>")
    p.append('<h3>Urgencias declaradas ([URGENTE]) y sus motivos</h3><div class="scroll"><table id="overrides">'
             '<thead><tr><th>Fecha</th><th>Declarada por</th><th>Dependencia</th><th>Motivo</th><th>Destinatarios</th>'
             '</tr></thead><tbody>')
    for ov in dc.overrides:
        p.append(f"<tr><td>{e(ov.at[:16].replace('T', ' '))}</td><td>{e(ov.declared_by)}</td><td>{e(ov.office)}</td>"
                 f'<td class="reason">{e(ov.reason) or "<em>(sin motivo)</em>"}</td>'
                 f'<td>{e(", ".join(ov.recipients))}</td></tr>')
    if not dc.overrides:
        p.append('<tr><td colspan="5">Ninguna.</td></tr>')
    p.append("</tbody></table></div>")
    p.append('<h3>Excepciones aplicadas (cargos de dirección, confianza y manejo, art. 6)</h3><div class="scroll">'
             '<table id="exemptions"><thead><tr><th>Fecha</th><th>Remitente</th><th>Dependencia</th>'
             '<th>Destinatarios</th><th>Roles exceptuados</th></tr></thead><tbody>')
    for x in dc.exemptions:
        p.append(f"<tr><td>{e(x.at[:16].replace('T', ' '))}</td><td>{e(x.sender)}</td><td>{e(x.office)}</td>"
                 f"<td>{e(', '.join(x.recipients))}</td><td>{e(x.roles)}</td></tr>")
    if not dc.exemptions:
        p.append('<tr><td colspan="5">Ninguna.</td></tr>')
    p.append("</tbody></table></div>")
    m = report.moderation
    p.append('<h2 id="moderation">Retenidos y moderación</h2><table class="figures" id="moderation-figures"><thead><tr>'
             '<th>Copias retenidas</th><th>Copias a moderación</th>'
             + "".join(f"<th>{e(DECISION_ES[d].capitalize())}</th>" for d in DECISIONS)
             + "<th>Aún abiertas</th></tr></thead><tbody><tr>"
             + _n("moderation.copies.hold", m.copies["hold"]) + _n("moderation.copies.moderate", m.copies["moderate"])
             + "".join(_n(f"moderation.decisions.{d}", m.decisions[d]) for d in DECISIONS)
             + _n("moderation.open", m.open) + "</tr></tbody></table>")
    p.append('<h2 id="inventory">Inventario de cuentas en redes sociales (Circular 004 de 2024, numeral 4)</h2>')
    p.append(f'<p class="hint">Cuentas vistas por el relay hasta el fin del periodo: '
             f'<span data-figure="inventory.accounts">{len(report.inventory)}</span>. El relay llena lo que muestra el '
             'correo; la oficina de comunicaciones completa usuario, URL, objetivo, responsable y contacto.</p>')
    p.append('<div class="scroll"><table id="inventory-table"><thead><tr>'
             + "".join(f"<th>{e(INVENTORY_ES[c])}</th>" for c in INVENTORY_COLUMNS) + "</tr></thead><tbody>")
    for row in report.inventory:
        p.append("<tr>" + "".join(f"<td>{e(str(row[c]))}</td>" for c in INVENTORY_COLUMNS) + "</tr>")
    if not report.inventory:
        p.append(f'<tr><td colspan="{len(INVENTORY_COLUMNS)}">Ninguna cuenta vista.</td></tr>')
    p.append("</tbody></table></div>")
    return "\n".join(p)


REPORT_CSS = """
table.figures td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure.chart { margin: .5rem 0 1rem; background: #fff; border: 1px solid #ddd; max-width: 54rem; }
figure.chart svg { width: 100%; height: auto; display: block; }
td.reason { max-width: 28rem; }
#rules td code { white-space: nowrap; }
#rules td:nth-child(2) { min-width: 16rem; }
"""

STANDALONE_CSS = """
body { font-family: system-ui, sans-serif; margin: 0; color: #1b1b1b; background: #fafafa; }
header { background: #003366; color: #fff; padding: .6rem 1rem; }
main { padding: 1rem 1.5rem; max-width: 80rem; }
table { border-collapse: collapse; width: 100%; background: #fff; margin-bottom: 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: .35rem .5rem; text-align: left; vertical-align: top; }
.hint { color: #555; font-size: .9em; }
.scroll { overflow-x: auto; }
""" + REPORT_CSS


def report_html(report: Report) -> str:
    """A self-contained page (Spanish): styles and charts inline, no JavaScript, no links out;
    it opens offline and prints."""
    body = report_body(report)
    return ("<!doctype html>\n<html lang=\"es\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>Informe de cumplimiento {html.escape(report.period)} · policy-relay</title>\n"
            f"<style>{STANDALONE_CSS}</style>\n</head>\n<body>\n<header><strong>policy-relay</strong> · "
            f"{html.escape(report.institution)}</header>\n<main>\n{body}\n</main>\n</body>\n</html>\n")
