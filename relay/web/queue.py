"""The moderation list of the admin pages: its search form read into a store filter (dates in the
institution's zone), its pages, and what the store's history and errors say, put into Spanish.

Pure functions (no request, no store): the handlers in relay.web.server call them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any, ClassVar
from urllib.parse import urlencode

from relay.store import HoldFilter, HoldState
from relay.store.base import OPEN_STATES, TraceQuery

PAGE_SIZE = 50
PAGE_SIZES = (10, 25, 50, 100, 200)
MAX_BULK = 200  # holds one page's ticked boxes may name (a page at most)
MAX_ALL = 2000  # holds «todos los que coinciden» may take in one confirmed bulk action

# The list's state choices: the open ones (default), every state, or one state.
STATE_CHOICES = {"pendientes": OPEN_STATES, "todos": tuple(HoldState),
                 **{s.value: (s,) for s in HoldState}}

EVENT_NAMES = {"held": "retenido", "approved": "aprobado", "rejected": "rechazado", "released": "liberado",
               "deleted": "eliminado", "withdrawn": "retirado por el remitente", "expired": "vencido sin decisión",
               "delivered": "entregado", "deferred": "entrega aplazada (se reintenta)", "failed": "entrega fallida",
               "recovered": "retomado"}
_RECOVERED = {"claimed before a stop; delivering again": "tomado antes de una parada del relay; se entrega de nuevo",
              "lease ran out; delivering again": "el relay que lo entregaba dejó de responder; se entrega de nuevo",
              "message bytes missing": "faltan los datos del mensaje"}
# The actions a person takes on a list of held mail, what each will do, and in which states.
BULK_ACTIONS = {"approve": ("aprobar", "se aprobará y se entregará (en la jornada laboral del destinatario)",
                            (HoldState.MODERATION,)),
                "reject": ("rechazar", "se rechazará; el remitente recibirá el motivo",
                           (HoldState.MODERATION, HoldState.WAITING)),
                "release": ("liberar ahora", "se entregará ya, sin esperar su hora", (HoldState.WAITING,)),
                "delete": ("eliminar", "se eliminará sin entregarlo",
                           (HoldState.MODERATION, HoldState.WAITING, HoldState.FAILED))}
DONE_NAMES = {"approve": "aprobado", "reject": "rechazado", "release": "liberado", "delete": "eliminado"}


class SearchError(ValueError):
    """A search field people typed that cannot be read (said in Spanish)."""


def date_range(since: str, until: str, zone: tzinfo) -> tuple[datetime | None, datetime | None]:
    """A search's "desde"/"hasta" as typed, read in the institution's zone ("hasta" a date includes
    that whole day); SearchError when "hasta" is not after "desde"."""
    start = local_instant(since, zone, "desde") if since else None
    end = local_instant(until, zone, "hasta", end=True) if until else None
    if start and end and end <= start:
        raise SearchError("la fecha «hasta» es anterior a «desde»")
    return start, end


def paging(query: Any) -> tuple[int, int]:
    """The page and page size a list's query asks for, bounded."""
    return _number(query.get("pagina"), 1, 1, 10**6), _number(query.get("por_pagina"), PAGE_SIZE, 1, max(PAGE_SIZES))


@dataclass(frozen=True)
class Search:
    """The list's search, as typed (kept to fill the form and the page links again)."""

    q: str = ""
    sender: str = ""
    recipient: str = ""
    rule: str = ""
    reason: str = ""
    state: str = "pendientes"
    since: str = ""
    until: str = ""
    page: int = 1
    size: int = PAGE_SIZE

    FIELDS: ClassVar[dict[str, str]] = {
        "q": "q", "sender": "remitente", "recipient": "destinatario", "rule": "regla", "reason": "motivo",
        "state": "estado", "since": "desde", "until": "hasta"}

    @classmethod
    def from_query(cls, query: Any) -> Search:
        fields = {name: str(query.get(key, "")).strip()[:200] for name, key in cls.FIELDS.items()}
        if query.get("todos") == "1" and not fields["state"]:  # the older "see decided ones too" link
            fields["state"] = "todos"
        fields["state"] = fields["state"] or "pendientes"
        page, size = paging(query)
        return cls(**fields, page=page, size=size)

    def filters(self, zone: tzinfo) -> HoldFilter:
        states = STATE_CHOICES.get(self.state)
        if states is None:
            raise SearchError(f"estado desconocido «{self.state}»")
        if self.reason not in ("", "hold", "moderate"):
            raise SearchError(f"motivo desconocido «{self.reason}»")
        since, until = date_range(self.since, self.until, zone)
        return HoldFilter(reason=self.reason or None, recipient=self.recipient or None, sender=self.sender or None,
                          rule=self.rule or None, text=self.q or None, since=since, until=until, states=states,
                          limit=self.size, offset=(self.page - 1) * self.size, order="queue")

    def link(self, **changes: Any) -> str:
        """This search's URL, with some fields changed (another page), defaults left out."""
        values = {**{name: getattr(self, name) for name in self.FIELDS}, "page": self.page, "size": self.size,
                  **changes}
        query = [(key, str(values[name])) for name, key in self.FIELDS.items()
                 if values[name] and not (name == "state" and values[name] == "pendientes")]
        if values["size"] != PAGE_SIZE:
            query.append(("por_pagina", str(values["size"])))
        if values["page"] != 1:
            query.append(("pagina", str(values["page"])))
        return "/holds" + (f"?{urlencode(query)}" if query else "")

    @property
    def filtered(self) -> bool:
        """A filter beyond the search box is set (the page shows them open)."""
        return self.state != "pendientes" or self.size != PAGE_SIZE or any(
            getattr(self, name) for name in ("sender", "recipient", "rule", "reason", "since", "until"))

    @property
    def narrowed(self) -> bool:
        return any(getattr(self, name) for name in ("q", "sender", "recipient", "rule", "reason", "since", "until"))


@dataclass(frozen=True)
class Pages:
    total: int
    page: int
    size: int

    @property
    def count(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def first_row(self) -> int:
        return min(self.total, (self.page - 1) * self.size + 1)

    @property
    def last_row(self) -> int:
        return min(self.total, self.page * self.size)


@dataclass(frozen=True)
class TraceSearch:
    """The /trace page's search, as typed: sender or login, recipient, Message-ID, queue id, dates
    (or dates and times) in the institution's zone, a page."""

    sender: str = ""
    recipient: str = ""
    message_id: str = ""
    queue_id: str = ""
    since: str = ""
    until: str = ""
    page: int = 1
    size: int = PAGE_SIZE

    FIELDS: ClassVar[dict[str, str]] = {
        "sender": "remitente", "recipient": "destinatario", "message_id": "message_id", "queue_id": "cola",
        "since": "desde", "until": "hasta"}

    @classmethod
    def from_query(cls, query: Any) -> TraceSearch:
        fields = {name: str(query.get(key, "")).strip()[:200] for name, key in cls.FIELDS.items()}
        page, size = paging(query)
        return cls(**fields, page=page, size=size)

    def query(self, zone: tzinfo) -> TraceQuery:
        since, until = date_range(self.since, self.until, zone)
        return TraceQuery(sender=self.sender or None, recipient=self.recipient or None,
                          message_id=self.message_id or None, queue_id=self.queue_id or None, since=since,
                          until=until, limit=self.size, offset=(self.page - 1) * self.size)

    def link(self, **changes: Any) -> str:
        values = {**{name: getattr(self, name) for name in self.FIELDS}, "page": self.page, "size": self.size,
                  **changes}
        query = [(key, str(values[name])) for name, key in self.FIELDS.items() if values[name]]
        if values["size"] != PAGE_SIZE:
            query.append(("por_pagina", str(values["size"])))
        if values["page"] != 1:
            query.append(("pagina", str(values["page"])))
        return "/trace" + (f"?{urlencode(query)}" if query else "")

    @property
    def narrowed(self) -> bool:
        return any(getattr(self, name) for name in self.FIELDS)


# The trace's events in Spanish (hold events through EVENT_NAMES).
TRACE_EVENTS = {"received": "recibido", "decided": "decidido", "delivered": "entregado",
                "upstream_refused": "rechazado por el servidor siguiente",
                "accepted": "devuelto al MTA (milter)", "notice": "aviso enviado"}
VERDICT_NAMES = {"deliver": "entregar", "hold": "retener por horario", "moderate": "requiere aprobación",
                 "tempfail": "rechazo temporal (4xx)", "reject": "rechazado (5xx)"}


def trace_event_es(event: dict[str, Any], reason_names: dict[str, str]) -> str:
    """One line of a message's life (relay.views.trace_json) in Spanish."""
    name, detail = str(event["event"]), str(event.get("detail", ""))
    if name.startswith("hold "):
        return f"copia {event.get('hold', '')}: " + event_es(name[5:], detail, reason_names)
    if name == "decided":
        verdict, _, reply = detail.partition(": ")
        return f"decidido: {VERDICT_NAMES.get(verdict, verdict)}" + (f" — respuesta: {reply}" if reply else "")
    if name == "received":
        text = re.sub(r"^from ", "desde ", detail)
        text = re.sub(r"\bas ", "como ", text)
        text = re.sub(r"(\d+) recipient\(s\)", r"\1 destinatario(s)", text)
        return f"recibido {text}"
    if name in ("delivered", "upstream_refused"):
        m = re.fullmatch(r"(\d+) recipient\(s\): (.*)", detail, re.DOTALL)
        if m:
            return (f"{TRACE_EVENTS[name]} a {m.group(1)} destinatario(s); respuesta del servidor: {m.group(2)}")
    if name == "accepted":
        m = re.fullmatch(r"(\d+) recipient\(s\).*", detail)
        if m:
            return f"{m.group(1)} destinatario(s) devuelto(s) al MTA (milter)"
    if name == "notice":
        kind, _, rest = detail.partition(" to ")
        return f"aviso «{kind}» enviado a {rest}"
    return f"{TRACE_EVENTS.get(name, name)}: {detail}" if detail else TRACE_EVENTS.get(name, name)


def local_instant(text: str, zone: tzinfo, field: str, end: bool = False) -> datetime:
    """A date (`2026-11-27`; as an end, the whole day is included) or a date and time
    (`2026-11-27 08:00`) in the institution's zone, or ISO 8601 with an offset."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1) if end else day, time(), zone)
        at = datetime.fromisoformat(text)
    except ValueError:
        raise SearchError(f"«{field}»: «{text}» no es una fecha; escriba 2026-11-27 o 2026-11-27 08:00") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=zone)


def event_es(event: str, detail: str, reason_names: dict[str, str]) -> str:
    """One history line of a hold, in Spanish: 'aprobado por comunicaciones (web)'."""
    what = EVENT_NAMES.get(event, event)
    if not detail:
        return what
    match = re.fullmatch(r"by (.*?)(?:: (.*))?", detail, re.DOTALL)
    if match and event in DECIDED_EVENTS:
        by, reason = match.group(1), match.group(2)
        return f"{what} por {by}" + (f": {reason}" if reason else "")
    if event == "held":
        kind, _, rules = detail.partition(": ")
        return f"{what}: {reason_names.get(kind, kind)} — reglas: {rules}" if rules else f"{what}: {detail}"
    if event == "delivered":
        delivered = re.fullmatch(r"(\d+) recipient\(s\): (.*)", detail, re.DOTALL)
        if delivered:
            return f"{what} a {delivered.group(1)} destinatario(s); respuesta del servidor: {delivered.group(2)}"
    if event in ("deferred", "failed"):
        return f"{what}; respuesta del servidor: {_RECOVERED.get(detail, detail)}"
    return f"{what}: {_RECOVERED.get(detail, detail)}"


DECIDED_EVENTS = ("approved", "rejected", "released", "deleted", "withdrawn", "expired")


def state_error_es(text: str, state_names: dict[str, str]) -> str:
    """The store's 'hold X is waiting; this needs it to be moderation' (and the like) in Spanish."""
    match = re.fullmatch(r"hold (\S+) is (\w+); this needs it to be (.+)", text)
    if match:
        needed = " o ".join(f"«{state_names.get(s, s)}»" for s in match.group(3).split(" or "))
        return (f"El mensaje {match.group(1)} está «{state_names.get(match.group(2), match.group(2))}»; "
                f"esta acción solo es posible si está {needed}.")
    if text.startswith("a refusal needs a reason"):
        return "Un rechazo necesita un motivo: se le envía al remitente."
    return f"La acción no es posible en el estado actual del mensaje ({text})."


def _number(text: Any, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(str(text))))
    except (TypeError, ValueError):
        return default
