"""The institution's directory: people, roles, service mailboxes, lists, schedules and networks.

The file format is the one of `shared/acceptance/institutions/`. Rules only see the `Directory`
protocol; relay/ldapdir.py is the second source (LDAP, Active Directory) behind the same interface.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from relay import yamlconf

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

Interval = tuple[time, time]


def address_key(address: str) -> str:
    """The comparison form of an address: whole address case-folded (local parts are matched
    case-insensitively, as every mainstream server does)."""
    return address.strip().strip("<>").casefold()


def parse_span(text: str) -> Interval:
    """'07:30-12:30' -> (07:30, 12:30); '24:00' as end means end of day."""
    match = _SPAN.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a span like '08:00-12:30'")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        raise ValueError(f"{text!r} has an impossible hour")
    start = time(h1, m1)
    end = time.max if h2 == 24 else time(h2, m2)
    if end <= start:
        raise ValueError(f"{text!r} ends before it starts; split spans that cross midnight")
    return start, end


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name like 'America/Bogota'") from None
    return value


def _check_holidays(value: str) -> str:
    country, _, subdiv = value.partition("-")
    supported = holidays_lib.list_supported_countries()
    if country not in supported:
        raise ValueError(f"unknown holiday calendar {value!r}; use an ISO country code like 'CO'")
    if subdiv and subdiv not in supported[country]:
        raise ValueError(f"unknown subdivision {subdiv!r} of {country}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


WeeklyHours = dict[str, list[str]]


def _check_week(value: WeeklyHours | None) -> WeeklyHours | None:
    if value is None:
        return None
    for day, spans in value.items():
        if day not in DAYS:
            raise ValueError(f"unknown day {day!r}; use {', '.join(DAYS)}")
        parsed = sorted(parse_span(s) for s in spans)
        for (_, end), (start, _) in itertools.pairwise(parsed):
            if start < end:
                raise ValueError(f"overlapping spans on {day}: {spans}")
    return value


class LeaveModel(_Strict):
    from_: date = Field(alias="from")
    to: date
    reason: str | None = None

    @model_validator(mode="after")
    def _order(self) -> LeaveModel:
        if self.to < self.from_:
            raise ValueError("'to' is before 'from'")
        return self


class PersonModel(_Strict):
    address: str
    name: str = ""
    department: str | None = None  # the office (dependencia), for the compliance report
    roles: list[str] = []
    timezone: str | None = None
    holidays: str | None = None
    working_hours: WeeklyHours | None = None
    leave: list[LeaveModel] = []

    _zone = field_validator("timezone")(lambda v: v if v is None else _check_zone(v))
    _hol = field_validator("holidays")(lambda v: v if v is None else _check_holidays(v))
    _week = field_validator("working_hours")(_check_week)


class ServiceMailboxModel(_Strict):
    address: str
    delegates: list[str] = []
    roles: list[str] = []


class ListModel(_Strict):
    address: str
    members: int = Field(default=0, ge=0)


class InstitutionModel(_Strict):
    institution: str = ""
    domains: list[str] = Field(min_length=1)
    timezone: str = "UTC"
    holidays: str | None = None
    working_hours: WeeklyHours = {}
    internal_networks: list[str] = []
    people: list[PersonModel] = []
    service_mailboxes: list[ServiceMailboxModel] = []
    lists: list[ListModel] = []

    _zone = field_validator("timezone")(_check_zone)
    _hol = field_validator("holidays")(lambda v: v if v is None else _check_holidays(v))
    _week = field_validator("working_hours")(_check_week)

    @field_validator("internal_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network like '10.20.0.0/16'") from None
        return value

    @model_validator(mode="after")
    def _unique(self) -> InstitutionModel:
        seen: set[str] = set()
        addresses = [p.address for p in self.people] + [s.address for s in self.service_mailboxes]
        for address in addresses + [entry.address for entry in self.lists]:
            if "@" not in address:
                raise ValueError(f"{address!r} is not an e-mail address")
            key = address_key(address)
            if key in seen:
                raise ValueError(f"{address} is listed twice")
            seen.add(key)
        known = {address_key(p.address) for p in self.people}
        for box in self.service_mailboxes:
            for delegate in box.delegates:
                if address_key(delegate) not in known:
                    raise ValueError(f"delegate {delegate} of {box.address} is not among people[]")
        return self


@dataclass(frozen=True)
class Schedule:
    """When one person works: zone, weekly spans (index 0 = Monday), holiday calendar, leave."""

    zone: ZoneInfo
    weekly: tuple[tuple[Interval, ...], ...]
    holidays: str | None = None
    leave: tuple[tuple[date, date], ...] = ()


@dataclass(frozen=True)
class Person:
    address: str
    name: str
    roles: frozenset[str]
    schedule: Schedule
    department: str = ""  # the office (dependencia); "" when the directory does not say


@dataclass(frozen=True)
class ServiceMailbox:
    address: str
    delegates: frozenset[str]
    roles: frozenset[str]


@dataclass(frozen=True)
class MailingList:
    address: str
    members: int


Entry = Person | ServiceMailbox | MailingList


class Directory(Protocol):
    """What the policy engine may ask about the institution. Implementations must be pure lookups."""

    @property
    def name(self) -> str: ...

    @property
    def domains(self) -> frozenset[str]: ...

    def find(self, address: str) -> Entry | None: ...

    def is_local(self, address: str) -> bool: ...

    def is_internal_ip(self, ip: str | None) -> bool: ...

    def all_entries(self) -> tuple[Entry, ...]: ...


def _weekly(hours: WeeklyHours) -> tuple[tuple[Interval, ...], ...]:
    return tuple(tuple(sorted(parse_span(s) for s in hours.get(day, []))) for day in DAYS)


def ip_in(ip: str | None, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    """Whether a client address (as an MTA writes it: bracketed, `IPv6:`, IPv4-mapped) is in one of
    `networks`; an unreadable address is in none."""
    if not ip:
        return False
    try:
        parsed = ipaddress.ip_address(ip.strip().strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
        parsed = parsed.ipv4_mapped
    return any(parsed in net for net in networks)


class ClientMatcher(Protocol):
    def matches(self, ip: str | None) -> bool: ...


@dataclass(frozen=True)
class FileDirectory:
    """A directory read from one YAML file."""

    name: str
    domains: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    entries: dict[str, Entry] = field(hash=False)
    timezone: str = "UTC"  # the institution's zone: times shown to people
    # The clients that are the mail server itself (config `local_submission`, relay.identity):
    # any value with `matches(ip) -> bool`; kept here so every directory source can carry it.
    local_submission: ClientMatcher | None = field(default=None, hash=False, compare=False)

    def find(self, address: str) -> Entry | None:
        return self.entries.get(address_key(address))

    def all_entries(self) -> tuple[Entry, ...]:
        return tuple(self.entries.values())

    def is_local(self, address: str) -> bool:
        _, at, domain = address.rpartition("@")
        return bool(at) and domain.strip().rstrip(">").rstrip(".").casefold() in self.domains

    def is_internal_ip(self, ip: str | None) -> bool:
        if not ip:
            return False
        if self.local_submission is not None and self.local_submission.matches(ip):
            return True
        return ip_in(ip, self.networks)

    @classmethod
    def from_model(cls, model: InstitutionModel) -> FileDirectory:
        default_week = _weekly(model.working_hours)
        entries: dict[str, Entry] = {}
        for p in model.people:
            schedule = Schedule(
                zone=ZoneInfo(p.timezone or model.timezone),
                weekly=_weekly(p.working_hours) if p.working_hours is not None else default_week,
                holidays=p.holidays or model.holidays,
                leave=tuple((leave.from_, leave.to) for leave in p.leave),
            )
            entries[address_key(p.address)] = Person(p.address, p.name, frozenset(p.roles), schedule,
                                                    (p.department or "").strip())
        for s in model.service_mailboxes:
            delegates = frozenset(address_key(d) for d in s.delegates)
            entries[address_key(s.address)] = ServiceMailbox(s.address, delegates, frozenset(s.roles))
        for lst in model.lists:
            entries[address_key(lst.address)] = MailingList(lst.address, lst.members)
        return cls(
            name=model.institution,
            domains=frozenset(d.casefold().rstrip(".") for d in model.domains),
            networks=tuple(ipaddress.ip_network(n, strict=False) for n in model.internal_networks),
            entries=entries,
            timezone=model.timezone,
        )


def load_directory(path: str | Path) -> FileDirectory:
    """Read a YAML directory file; raises yamlconf.ConfigError naming file, line and field.
    (`relay.ldapdir.load_directory_file` also takes a file that names an LDAP server.)"""
    data, node = yamlconf.read_yaml(path)
    return FileDirectory.from_model(yamlconf.validate(InstitutionModel, data, node, str(path)))
