"""The directory from LDAP or Active Directory: `directory: ldap://…` or `ldaps://…` (StartTLS too).

The `ldap:` section of the config maps the institution's schema onto the relay's directory (people,
roles, service mailboxes and delegates, lists, hours, zones and leave); docs/ldap.md has the
mappings for Active Directory, Entra ID, Google Secure LDAP and OpenLDAP.

Client: ldap3 (pure Python, so it installs anywhere without libldap headers; simple paged results,
StartTLS and AD's ranged attribute retrieval built in). It is synchronous; the relay runs every
load in a thread (`asyncio.to_thread`), so a slow server never blocks the event loop.

A load reads the whole tree with paged searches into a `Snapshot` (plain data, JSON on disk), and
the snapshot becomes an `LdapDirectory`: the same in-memory lookups as the YAML `FileDirectory`, so
rules never wait for the network. Each good load is written to disk; when the server is down at
start, the relay starts from that file, and when it is down at a refresh the running directory
stays in force. Either way the directory is marked stale (a warning in the log and
`relay_directory_stale 1` in /metrics) until a load succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import functools
import ipaddress
import json
import math
import os
import re
import ssl
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from relay import logs, yamlconf
from relay.directory import (
    DAYS,
    Entry,
    FileDirectory,
    LeaveModel,
    MailingList,
    Person,
    Schedule,
    ServiceMailbox,
    WeeklyHours,
    _check_holidays,
    _check_week,
    _check_zone,
    _weekly,
    address_key,
    load_directory,
)

SNAPSHOT_FORMAT = 1
AD_SHARED_MAILBOX = "34359738368"  # msExchRecipientTypeDetails of an Exchange shared mailbox

def _log() -> Any:
    """The directory's logger; on stderr even in a CLI command that set up no logging (`relay
    check --json` prints its answer on stdout)."""
    import structlog

    if not structlog.is_configured():
        logs.configure("warning", "console")
    return logs.get("relay.directory")


# ---------------------------------------------------------------------------------------------
# The mapping (the `ldap:` section)
# ---------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_filter(value: str) -> str:
    """An RFC 4515 filter: balanced parentheses, each item an attr=value or a &|! group."""
    text = value.strip()
    if not text.startswith("("):
        raise ValueError(f"{value!r}: an LDAP filter is wrapped in parentheses, e.g. (objectClass=user)")
    depth = 0
    for i, char in enumerate(text):
        if char == "(" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif char == ")" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0 and i != len(text) - 1:
                raise ValueError(f"{value!r}: two filters side by side; join them with (&...) or (|...)")
        if depth < 0:
            raise ValueError(f"{value!r}: a ')' closes nothing")
    if depth:
        raise ValueError(f"{value!r}: unbalanced parentheses")
    if not text.endswith(")"):
        raise ValueError(f"{value!r}: text after the last ')'")
    for item in re.findall(r"\(([^()&|!][^()]*)\)", text):
        if "=" not in item:
            raise ValueError(f"{value!r}: ({item}) is not attribute=value")
    return text


def _check_dn(value: str) -> str:
    if "=" not in value:
        raise ValueError(f"{value!r} is not a DN like OU=Usuarios,DC=alcaldia,DC=gov,DC=co")
    return value


_ATTR = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")


def _check_attr(value: str | None) -> str | None:
    if value is not None and not _ATTR.match(value):
        raise ValueError(f"{value!r} is not an attribute name (letters, digits and '-')")
    return value


class InstitutionDefaults(_Strict):
    """What LDAP does not hold: the institution's name, domains, and defaults for everyone."""

    name: str = ""
    domains: list[str] = Field(min_length=1)
    timezone: str = "UTC"
    holidays: str | None = None
    working_hours: WeeklyHours = {}
    internal_networks: list[str] = []

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


class PeopleMap(_Strict):
    base: str = Field(description="search base, e.g. OU=Usuarios,DC=alcaldia,DC=gov,DC=co")
    filter: str = "(&(objectClass=user)(mail=*))"
    scope: Literal["subtree", "level"] = "subtree"
    address: str = Field(default="mail", description="the primary address")
    aliases: str | None = Field(default="proxyAddresses", description="smtp:alias values (AD, Exchange)")
    name: str = "displayName"
    department: str | None = Field(default="department", description="the office (dependencia): AD's department, "
                                   "inetOrgPerson's departmentNumber or ou; null: not mapped")
    timezone: str | None = Field(default=None, description="attribute with an IANA zone (default: institution's)")
    holidays: str | None = Field(default=None, description="attribute with a holiday calendar, e.g. ES")
    working_hours: str | None = Field(default=None, description="attribute like 'mon-fri 08:00-12:00,14:00-18:00'")
    leave: str | None = Field(default=None, description="attribute with 'YYYY-MM-DD/YYYY-MM-DD reason' values")

    _base = field_validator("base")(_check_dn)
    _filter = field_validator("filter")(_check_filter)
    _attrs = field_validator("address", "aliases", "name", "department", "timezone", "holidays", "working_hours",
                             "leave")(_check_attr)


class GroupsMap(_Strict):
    base: str
    filter: str = "(objectClass=group)"
    scope: Literal["subtree", "level"] = "subtree"
    member: str = Field(default="member", description="attribute with member DNs (ranged in AD: handled)")
    name: str = "cn"

    _base = field_validator("base")(_check_dn)
    _filter = field_validator("filter")(_check_filter)
    _attrs = field_validator("member", "name")(_check_attr)


class AttributeRole(_Strict):
    """Roles from an attribute value: `equals` (case-insensitive) or `pattern` (a regex, searched)."""

    attribute: str
    equals: str | None = None
    pattern: str | None = None
    roles: list[str] = Field(min_length=1)

    _attr = field_validator("attribute")(_check_attr)

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"{value!r} is not a regular expression: {error}") from None
        return value

    @model_validator(mode="after")
    def _one(self) -> AttributeRole:
        if (self.equals is None) == (self.pattern is None):
            raise ValueError("give exactly one of 'equals' or 'pattern'")
        return self

    def matches(self, value: str) -> bool:
        if self.equals is not None:
            return value.strip().casefold() == self.equals.strip().casefold()
        return re.search(self.pattern or "", value, re.IGNORECASE) is not None


class RolesMap(_Strict):
    groups: dict[str, list[str]] = Field(default={}, description="group DN -> roles; nested membership counts")
    attributes: list[AttributeRole] = []
    default: list[str] = Field(default=[], description="roles of a person who got none from groups or attributes")

    @field_validator("groups")
    @classmethod
    def _dns(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for dn in value:
            _check_dn(dn)
        return value


class MailboxesMap(_Strict):
    """Service (shared) mailboxes and who may send as them."""

    base: str | None = Field(default=None, description="default: people.base")
    filter: str = f"(msExchRecipientTypeDetails={AD_SHARED_MAILBOX})"
    scope: Literal["subtree", "level"] = "subtree"
    address: str = "mail"
    aliases: str | None = "proxyAddresses"
    delegates: list[str] = Field(default=["msExchDelegateListLink", "publicDelegates"],
                                 description="attributes holding the DNs of delegates")
    delegate_group: str | None = Field(default=None, description="name (cn) of a group per mailbox whose "
                                       "members are its delegates; {local} is the mailbox's local part")

    _base = field_validator("base")(lambda v: v if v is None else _check_dn(v))
    _filter = field_validator("filter")(_check_filter)
    _attrs = field_validator("address", "aliases")(_check_attr)

    @field_validator("delegates")
    @classmethod
    def _delegate_attrs(cls, value: list[str]) -> list[str]:
        for name in value:
            _check_attr(name)
        return value


class ListsMap(_Strict):
    """Mail-enabled groups: mass lists; their member count comes from the nested membership."""

    base: str | None = Field(default=None, description="default: groups.base")
    filter: str = "(&(objectClass=group)(mail=*))"
    scope: Literal["subtree", "level"] = "subtree"
    address: str = "mail"
    aliases: str | None = "proxyAddresses"

    _base = field_validator("base")(lambda v: v if v is None else _check_dn(v))
    _filter = field_validator("filter")(_check_filter)
    _attrs = field_validator("address", "aliases")(_check_attr)


class LdapSettings(_Strict):
    """The `ldap:` section: how to reach the server and how its schema maps onto the directory."""

    bind_dn: str | None = Field(default=None, description="service account; none for an anonymous bind")
    password_file: str | None = Field(default=None, description="file with the bind password (mode 0600)")
    start_tls: bool = Field(default=False, description="StartTLS on ldap:// before binding")
    ca_file: str | None = Field(default=None, description="CA bundle for ldaps:// or StartTLS (default: system)")
    tls_verify: bool = Field(default=True, description="false only for a lab server with a self-signed cert")
    client_cert: str | None = Field(default=None, description="client certificate (Google Secure LDAP)")
    client_key: str | None = None
    fallback_urls: list[str] = Field(default=[], description="other domain controllers, tried in order when "
                                     "the directory: URL does not answer")
    timeout: float = Field(default=15, gt=0, le=600, description="seconds for connect and each reply")
    page_size: int = Field(default=500, ge=1, le=10000, description="entries per page (AD's MaxPageSize: 1000)")
    refresh: float = Field(default=900, ge=0, description="seconds between refreshes; 0: only on reload")
    snapshot: str = Field(default="var/directory-snapshot.json", description="last good load, used when the "
                          "server is down")
    max_drop: float = Field(default=0.5, ge=0, le=1, description="a refresh that loses more than this share "
                            "of people is refused (an emptied OU or a permissions change), 1: never refused")
    leave_file: str | None = Field(default=None, description="HR overlay (CSV or YAML): address, from, to, "
                                   "reason; replaces the leave attribute of the people it names")
    institution: InstitutionDefaults
    people: PeopleMap
    groups: GroupsMap | None = None
    roles: RolesMap = RolesMap()
    service_mailboxes: MailboxesMap | None = None
    lists: ListsMap | None = None

    @field_validator("fallback_urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return [check_url(url) for url in value]

    @model_validator(mode="after")
    def _tls(self) -> LdapSettings:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        if (self.bind_dn is None) != (self.password_file is None):
            raise ValueError("bind_dn and password_file go together (or neither, for an anonymous bind)")
        return self


class LdapSourceFile(_Strict):
    """A file with just `directory: ldap://…` and `ldap:`, for `relay check --directory FILE`."""

    directory: str
    ldap: LdapSettings

    @field_validator("directory")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)


def is_ldap_url(value: str) -> bool:
    return value.startswith(("ldap://", "ldaps://"))


def check_url(value: str) -> str:
    if not is_ldap_url(value):
        raise ValueError(f"{value!r}: use ldap://HOST[:PORT] (with start_tls) or ldaps://HOST[:PORT]")
    rest = value.split("://", 1)[1].rstrip("/")
    port = ""
    if rest.startswith("["):  # [IPv6]:port
        _, _, after = rest.partition("]")
        port = after.removeprefix(":")
    elif ":" in rest:
        port = rest.rpartition(":")[2]
    if not rest or "/" in rest or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"{value!r}: use ldap://HOST[:PORT] or ldaps://HOST[:PORT], no path")
    return value


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class DirectoryUnavailable(ValueError):
    """The server cannot be read and there is no snapshot to start from."""


class LdapDown(Exception):
    """The server did not answer, refused the bind, or broke off (a refresh keeps the old data)."""


@dataclass(frozen=True)
class Source:
    """One LDAP source: the URL, the mapping, and the file (for paths and error lines)."""

    url: str
    settings: LdapSettings
    file: Path  # the YAML file the `ldap:` section is in
    loc: tuple[str, ...] = ("ldap",)  # where the section sits in that file
    url_loc: tuple[str, ...] = ("directory",)

    def path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.file.resolve().parent / path

    def problem(self, loc: Sequence[str | int], message: str) -> str:
        return yamlconf.problem_at(self.file, (*self.loc, *loc), message)

    def mapping_error(self, loc: Sequence[str | int], message: str) -> yamlconf.ConfigError:
        return yamlconf.ConfigError(str(self.file), [self.problem(loc, message)])

    @property
    def snapshot_path(self) -> Path:
        return self.path(self.settings.snapshot)


def source_from_config(config: Any, config_path: str | Path) -> Source:
    settings = getattr(config, "ldap", None)
    if settings is None:
        raise yamlconf.ConfigError(str(config_path), [yamlconf.problem_at(
            config_path, ("directory",), f"{config.directory} needs an 'ldap:' section with the mapping "
            "(see docs/ldap.md)")])
    return Source(config.directory, settings, Path(config_path))


def source_from_file(path: str | Path) -> Source:
    model = yamlconf.load(LdapSourceFile, path)
    return Source(model.directory, model.ldap, Path(path))


def check_files(source: Source) -> None:
    """The files the mapping names exist, and the HR overlay parses (no network)."""
    s = source.settings
    problems = [
        source.problem((name,), f"file not found: {source.path(value)} (paths are relative to the config "
                       "file's folder)")
        for name, value in (("password_file", s.password_file), ("ca_file", s.ca_file),
                            ("client_cert", s.client_cert), ("client_key", s.client_key),
                            ("leave_file", s.leave_file))
        if value and not source.path(value).is_file()
    ]
    if problems:
        raise yamlconf.ConfigError(str(source.file), problems)
    if s.leave_file:
        read_leave_file(source.path(s.leave_file))


# ---------------------------------------------------------------------------------------------
# Attribute formats
# ---------------------------------------------------------------------------------------------

_DAY_RANGE = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)(?:-(mon|tue|wed|thu|fri|sat|sun))?$")


def parse_hours(text: str) -> WeeklyHours:
    """'mon-fri 08:00-12:00,14:00-18:00; sat 08:00-12:00' -> {'mon': [...], ...}."""
    week: WeeklyHours = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        days, _, spans = part.partition(" ")
        match = _DAY_RANGE.match(days.strip().casefold())
        if not match or not spans.strip():
            raise ValueError(f"{part!r}: write days then spans, e.g. 'mon-fri 08:00-17:00'")
        first = DAYS.index(match.group(1))
        last = DAYS.index(match.group(2) or match.group(1))
        if last < first:
            raise ValueError(f"{part!r}: days run backwards")
        for day in DAYS[first:last + 1]:
            week.setdefault(day, []).extend(s.strip() for s in spans.split(",") if s.strip())
    _check_week(week)
    return week


_LEAVE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\s*(?:/|\.\.)\s*(\d{4}-\d{2}-\d{2}))?(?:\s+(.*))?$")


def parse_leave(text: str) -> tuple[date, date, str | None]:
    """'2026-12-14/2026-12-18 vacaciones' (or 'FROM..TO', or one date) -> (from, to, reason)."""
    match = _LEAVE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r}: write YYYY-MM-DD/YYYY-MM-DD and an optional reason")
    start = date.fromisoformat(match.group(1))
    end = date.fromisoformat(match.group(2)) if match.group(2) else start
    if end < start:
        raise ValueError(f"{text!r}: ends before it starts")
    return start, end, match.group(3)


LeaveRows = dict[str, list[tuple[date, date, str | None]]]


class _LeaveRow(_Strict):
    address: str
    leave: list[LeaveModel] = []


def read_leave_file(path: Path) -> LeaveRows:
    """The HR overlay: CSV with address,from,to[,reason] columns, or YAML [{address, leave: [...]}]."""
    rows: LeaveRows = {}
    name = str(path)
    if path.suffix.casefold() == ".csv":
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as error:
            raise yamlconf.ConfigError(name, [f"{name}: cannot read file: {error.strerror or error}"]) from None
        reader = csv.DictReader(text.splitlines())
        wanted = {"address", "from", "to"}
        if not reader.fieldnames or not wanted <= {f.strip().casefold() for f in reader.fieldnames}:
            raise yamlconf.ConfigError(name, [f"{name}:1: the header must name address,from,to[,reason]"])
        problems = []
        for number, row in enumerate(reader, start=2):
            clean = {k.strip().casefold(): (v or "").strip() for k, v in row.items() if k}
            try:
                start, end = date.fromisoformat(clean["from"]), date.fromisoformat(clean["to"])
                if end < start or "@" not in clean["address"]:
                    raise ValueError
            except ValueError:
                problems.append(f"{name}:{number}: expected address,YYYY-MM-DD,YYYY-MM-DD with to >= from")
                continue
            rows.setdefault(address_key(clean["address"]), []).append((start, end, clean.get("reason") or None))
        if problems:
            raise yamlconf.ConfigError(name, problems)
        return rows

    class _LeaveFile(_Strict):
        people: list[_LeaveRow]

    model = yamlconf.load(_LeaveFile, path)
    for person in model.people:
        rows.setdefault(address_key(person.address), []).extend((v.from_, v.to, v.reason) for v in person.leave)
    return rows


# ---------------------------------------------------------------------------------------------
# Reading the server
# ---------------------------------------------------------------------------------------------

Attrs = dict[str, list[str]]


@dataclass
class RawTree:
    """What the searches returned: (dn, attributes by lower-case name) per search."""

    people: list[tuple[str, Attrs]] = field(default_factory=list)
    mailboxes: list[tuple[str, Attrs]] = field(default_factory=list)
    groups: list[tuple[str, Attrs]] = field(default_factory=list)
    lists: list[tuple[str, Attrs]] = field(default_factory=list)
    seconds: float = 0.0


_HEX_ESCAPE = re.compile(r"\\[0-9a-fA-F]{2}")
_CHAR_ESCAPE = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    """An RDN value without RFC 4514 escapes: '\\,' and '\\2C' are both ','."""
    if "\\" not in value:
        return value.strip()
    if not _HEX_ESCAPE.search(value):
        return _CHAR_ESCAPE.sub(r"\1", value).strip()
    out = bytearray()
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            pair = value[i + 1:i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                out.append(int(pair, 16))
                i += 3
                continue
            out.extend(value[i + 1].encode("utf-8"))
            i += 2
            continue
        out.extend(char.encode("utf-8"))
        i += 1
    return out.decode("utf-8", "replace").strip()


@functools.lru_cache(maxsize=1 << 18)
def dn_key(dn: str) -> str:
    """Comparison form of a DN: escapes undone, RDNs case-folded, spaces around ',' and '=' dropped
    (a server may write 'CN=Pérez\\, Ana' in one place and 'cn=P\\C3\\A9rez\\2C Ana' in another)."""
    if "\\" not in dn and '"' not in dn:
        return ",".join("=".join(p.strip() for p in rdn.split("=", 1)) for rdn in dn.split(",")).casefold()
    parts: list[str] = []
    current = []
    i = 0
    while i < len(dn):
        char = dn[i]
        if char == "\\" and i + 1 < len(dn):
            current.append(dn[i:i + 2])
            i += 2
            continue
        if char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    keyed = []
    for rdn in parts:
        attr, _, value = rdn.partition("=")
        clean = _unescape(value.strip().strip('"')).replace(",", "\\2c")
        keyed.append(f"{attr.strip()}={clean}")
    return ",".join(keyed).casefold()


def _decode(values: Iterable[bytes | str]) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _password(source: Source) -> str | None:
    if not source.settings.password_file:
        return None
    return source.path(source.settings.password_file).read_text(encoding="utf-8").strip("\r\n")


def _connect(source: Source, schema: bool = False) -> Any:
    """A bound connection to the first server that answers: the URL, then each fallback_urls."""
    failures = []
    for url in [source.url, *source.settings.fallback_urls]:
        try:
            return _connect_one(source, url, schema)
        except LdapDown as error:
            failures.append(str(error))
    raise LdapDown("; ".join(failures))


def _connect_one(source: Source, url: str, schema: bool) -> Any:
    import ldap3
    from ldap3.core.exceptions import LDAPException

    s = source.settings
    tls = ldap3.Tls(
        validate=ssl.CERT_REQUIRED if s.tls_verify else ssl.CERT_NONE,
        ca_certs_file=str(source.path(s.ca_file)) if s.ca_file else None,
        local_certificate_file=str(source.path(s.client_cert)) if s.client_cert else None,
        local_private_key_file=str(source.path(s.client_key)) if s.client_key else None,
        version=ssl.PROTOCOL_TLS_CLIENT,
    )
    try:
        server = ldap3.Server(url, get_info=ldap3.SCHEMA if schema else ldap3.NONE, tls=tls,
                              connect_timeout=s.timeout)
        conn = ldap3.Connection(server, user=s.bind_dn, password=_password(source), read_only=True,
                                receive_timeout=max(1, math.ceil(s.timeout)),  # ldap3 packs it as an integer
                                auto_range=True, raise_exceptions=True,
                                authentication=ldap3.SIMPLE if s.bind_dn else ldap3.ANONYMOUS)
        conn.open()
        if s.start_tls:
            conn.start_tls()
        conn.bind()
    except LDAPException as error:
        raise LdapDown(f"{url}: {_describe(error)}") from None
    except (OSError, ssl.SSLError) as error:
        raise LdapDown(f"{url}: {error}") from None
    return conn


def _describe(error: Exception) -> str:
    description = getattr(error, "description", None)
    message = getattr(error, "message", None)
    text = " ".join(str(p) for p in (description, message) if p) or str(error) or type(error).__name__
    if "invalidCredentials" in text:
        text += " (check bind_dn and the password file)"
    return text


def _search(conn: Any, source: Source, loc: tuple[str, ...], base: str, flt: str, scope: str,
            attributes: list[str]) -> list[tuple[str, Attrs]]:
    import ldap3
    from ldap3.core.exceptions import LDAPException, LDAPOperationResult

    out: list[tuple[str, Attrs]] = []
    try:
        for item in conn.extend.standard.paged_search(
                base, flt, search_scope=ldap3.SUBTREE if scope == "subtree" else ldap3.LEVEL,
                attributes=sorted(set(attributes)), paged_size=source.settings.page_size, generator=True):
            if item.get("type") != "searchResEntry":
                continue
            raw = item.get("raw_attributes") or {}
            for key in raw:
                if ";range=" in key and not key.endswith("-*"):  # ldap3 could not fetch the rest
                    _log().warning("directory_range_incomplete", dn=item["dn"], attribute=key,
                                   advice="members past this range are missing from the count and the roles")
            out.append((item["dn"], {k.partition(";")[0].casefold(): _decode(v) for k, v in raw.items()}))
    except LDAPOperationResult as error:
        if error.result == 32:  # noSuchObject
            raise source.mapping_error((*loc, "base"), f"{base!r} does not exist on {source.url}") from None
        if error.result in (87, 53, 2):  # filterError, unwillingToPerform, protocolError
            raise source.mapping_error((*loc, "filter"), f"{source.url} refused {flt!r}: "
                                       f"{_describe(error)}") from None
        raise LdapDown(f"{source.url}: search of {base}: {_describe(error)}") from None
    except LDAPException as error:
        raise LdapDown(f"{source.url}: search of {base}: {_describe(error)}") from None
    except OSError as error:
        raise LdapDown(f"{source.url}: {error}") from None
    return out


def _people_attrs(m: PeopleMap | MailboxesMap | ListsMap) -> list[str]:
    names = [m.address, m.aliases]
    if isinstance(m, PeopleMap):
        names += [m.name, m.department, m.timezone, m.holidays, m.working_hours, m.leave]
    return [n for n in names if n]


def _role_attrs(settings: LdapSettings) -> list[str]:
    return [rule.attribute for rule in settings.roles.attributes]


def fetch(source: Source) -> RawTree:
    """Read everything the mapping names from the server (blocking; run it in a thread)."""
    started = time.monotonic()
    s = source.settings
    conn = _connect(source)
    try:
        tree = RawTree()
        tree.people = _search(conn, source, ("people",), s.people.base, s.people.filter, s.people.scope,
                              _people_attrs(s.people) + _role_attrs(s))
        if s.service_mailboxes:
            box = s.service_mailboxes
            tree.mailboxes = _search(conn, source, ("service_mailboxes",), box.base or s.people.base, box.filter,
                                     box.scope, _people_attrs(box) + box.delegates + _role_attrs(s))
        if s.groups:
            tree.groups = _search(conn, source, ("groups",), s.groups.base, s.groups.filter, s.groups.scope,
                                  [s.groups.member, s.groups.name])
        if s.lists:
            member = s.groups.member if s.groups else "member"
            base = s.lists.base or (s.groups.base if s.groups else None)
            if base is None:
                raise source.mapping_error(("lists",), "lists need a base (or a groups: section to take it from)")
            tree.lists = _search(conn, source, ("lists",), base, s.lists.filter, s.lists.scope,
                                 [*_people_attrs(s.lists), member, "cn"])
    finally:
        with contextlib.suppress(Exception):
            conn.unbind()
    tree.seconds = time.monotonic() - started
    return tree


def check_schema(source: Source) -> list[str]:
    """Mapped attribute names the server's schema does not know, as 'file:line: field: problem'."""
    conn = _connect(source, schema=True)
    try:
        schema = conn.server.schema
        known = {name.casefold() for name in (schema.attribute_types if schema else {})}
    finally:
        with contextlib.suppress(Exception):
            conn.unbind()
    if not known:
        return []
    s = source.settings
    checks: list[tuple[tuple[str | int, ...], str | None]] = []
    for section in ("people", "service_mailboxes", "lists"):
        part = getattr(s, section)
        if part is None:
            continue
        for name in ("address", "aliases", "name", "department", "timezone", "holidays", "working_hours", "leave"):
            checks.append(((section, name), getattr(part, name, None)))
    if s.service_mailboxes:
        checks += [(("service_mailboxes", "delegates", i), a) for i, a in enumerate(s.service_mailboxes.delegates)]
    if s.groups:
        checks += [(("groups", "member"), s.groups.member), (("groups", "name"), s.groups.name)]
    checks += [(("roles", "attributes", i, "attribute"), r.attribute) for i, r in enumerate(s.roles.attributes)]
    return [source.problem(loc, f"attribute {name!r} is not in the schema of {source.url}")
            for loc, name in checks if name and name.casefold() not in known]


# ---------------------------------------------------------------------------------------------
# From what the server said to a snapshot
# ---------------------------------------------------------------------------------------------


def _first(attrs: Attrs, name: str | None) -> str | None:
    if not name:
        return None
    values = attrs.get(name.casefold())
    return values[0].strip() if values and values[0].strip() else None


def _addresses(attrs: Attrs, address: str, aliases: str | None) -> tuple[str | None, list[str]]:
    """(primary, aliases) from mail and proxyAddresses: 'SMTP:' is the primary, 'smtp:' an alias;
    other types (X500:, SIP:) are skipped; a bare value counts as an address."""
    primary = _first(attrs, address)
    extra: list[str] = []
    for value in attrs.get(aliases.casefold(), []) if aliases else []:
        kind, colon, rest = value.partition(":")
        if not colon:
            kind, rest = "smtp", value
        if kind.casefold() != "smtp" or "@" not in rest:
            continue
        if kind == "SMTP" and primary is None:
            primary = rest.strip()
        else:
            extra.append(rest.strip())
    if primary is None and extra:
        primary = extra.pop(0)
    seen = {address_key(primary)} if primary else set()
    unique = []
    for alias in extra:
        if address_key(alias) not in seen:
            seen.add(address_key(alias))
            unique.append(alias)
    return primary, unique


class Graph:
    """Group membership: which groups hold a DN (directly), and the leaves under a group."""

    def __init__(self, groups: dict[str, tuple[str, list[str]]]) -> None:
        self.groups = groups  # dn_key -> (dn as written, member dn_keys)
        self.parents: dict[str, list[str]] = {}
        for key, (_, members) in groups.items():
            for member in members:
                self.parents.setdefault(member, []).append(key)
        self._ancestors: dict[str, dict[str, list[str]]] = {}

    def ancestors(self, key: str) -> dict[str, list[str]]:
        """Every group that holds `key`, directly or through nested groups, with the path to it."""
        if key in self._ancestors:
            return self._ancestors[key]
        found: dict[str, list[str]] = {}
        frontier = [(parent, [parent]) for parent in self.parents.get(key, [])]
        while frontier:
            group, path = frontier.pop()
            if group in found:
                continue
            found[group] = path
            frontier.extend((p, [*path, p]) for p in self.parents.get(group, []) if p not in found)
        if key in self.groups:
            self._ancestors[key] = found
        return found

    def leaves(self, key: str) -> set[str]:
        """Members that are not groups, through every level of nesting (cycles are harmless)."""
        seen: set[str] = set()
        out: set[str] = set()
        stack = [key]
        while stack:
            group = stack.pop()
            if group in seen:
                continue
            seen.add(group)
            for member in self.groups.get(group, ("", []))[1]:
                if member in self.groups:
                    stack.append(member)
                else:
                    out.add(member)
        return out


def _roles(settings: LdapSettings, graph: Graph, dn: str, attrs: Attrs,
           role_groups: dict[str, tuple[str, list[str]]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Roles and why: [{'role', 'group': DN, 'path': [DN...]}] or [{'role', 'attribute', 'value'}]."""
    why: list[dict[str, Any]] = []
    if role_groups:
        for group, path in graph.ancestors(dn_key(dn)).items():
            if group in role_groups:
                written, roles = role_groups[group]
                via = [graph.groups[p][0] for p in path]
                why.extend({"role": role, "group": written, "via": via} for role in roles)
    for rule in settings.roles.attributes:
        for value in attrs.get(rule.attribute.casefold(), []):
            if rule.matches(value):
                why.extend({"role": role, "attribute": rule.attribute, "value": value} for role in rule.roles)
    roles = sorted({w["role"] for w in why})
    return roles, why


@functools.lru_cache(maxsize=4096)
def _checked(kind: str, value: str) -> str | None:
    """None when a zone / holiday calendar value is usable, else why (cached: the holidays
    package's country list is slow to build, and thousands of people share a few values)."""
    try:
        (_check_zone if kind == "timezone" else _check_holidays)(value)
    except ValueError as error:
        return str(error)
    return None


def build(source: Source, tree: RawTree, leave_rows: LeaveRows | None = None,
          now: datetime | None = None) -> dict[str, Any]:
    """The snapshot (plain JSON data) of what the relay believes, with the reasons."""
    s = source.settings
    warnings: list[str] = []
    member_attr = (s.groups.member if s.groups else "member").casefold()
    group_entries: dict[str, tuple[str, list[str]]] = {}
    group_names: dict[str, str] = {}
    for dn, attrs in [*tree.groups, *tree.lists]:
        key = dn_key(dn)
        group_entries[key] = (dn, [dn_key(m) for m in attrs.get(member_attr, [])])
        group_names[key] = _first(attrs, s.groups.name if s.groups else "cn") or dn
    graph = Graph(group_entries)
    role_groups = {dn_key(g): (g, roles) for g, roles in s.roles.groups.items()}
    taken: dict[str, str] = {}  # address key -> dn of the entry that has it

    def claim(dn: str, addresses: list[str]) -> list[str]:
        kept = []
        for address in addresses:
            key = address_key(address)
            if key in taken and taken[key] != dn:
                warnings.append(f"{address} is on {taken[key]} and on {dn}; the first one keeps it")
                continue
            taken[key] = dn
            kept.append(address)
        return kept

    mailboxes: list[dict[str, Any]] = []
    box_dns: set[str] = set()
    people_by_dn: dict[str, str] = {}  # dn key -> primary address (people only), for delegates
    pending_boxes: list[tuple[str, Attrs, str, list[str]]] = []
    if s.service_mailboxes:
        for dn, attrs in tree.mailboxes:
            primary, aliases = _addresses(attrs, s.service_mailboxes.address, s.service_mailboxes.aliases)
            if primary is None:
                warnings.append(f"{dn}: service mailbox without an address; skipped")
                continue
            kept = claim(dn, [primary, *aliases])
            if not kept or address_key(kept[0]) != address_key(primary):
                continue
            box_dns.add(dn_key(dn))
            pending_boxes.append((dn, attrs, primary, kept[1:]))

    people: list[dict[str, Any]] = []
    pm = s.people
    for dn, attrs in tree.people:
        if dn_key(dn) in box_dns:
            continue  # the people filter also matched a shared mailbox: it is a mailbox
        primary, aliases = _addresses(attrs, pm.address, pm.aliases)
        if primary is None:
            continue
        kept = claim(dn, [primary, *aliases])
        if not kept or address_key(kept[0]) != address_key(primary):
            continue
        person: dict[str, Any] = {"dn": dn, "address": primary, "aliases": kept[1:],
                                  "name": _first(attrs, pm.name) or "",
                                  "department": (_first(attrs, pm.department) or "").strip() if pm.department else ""}
        for attr_name in ("timezone", "holidays"):
            value = _first(attrs, getattr(pm, attr_name))
            if value is not None:
                problem = _checked(attr_name, value)
                if problem is None:
                    person[attr_name] = value
                else:
                    warnings.append(f"{dn}: {getattr(pm, attr_name)}: {problem}; the default is used")
        hours = _first(attrs, pm.working_hours)
        if hours is not None:
            try:
                person["working_hours"] = parse_hours(hours)
            except ValueError as error:
                warnings.append(f"{dn}: {pm.working_hours}: {error}; the default hours are used")
        leave = []
        for value in attrs.get(pm.leave.casefold(), []) if pm.leave else []:
            try:
                start, end, reason = parse_leave(value)
                leave.append([start.isoformat(), end.isoformat(), reason])
            except ValueError as error:
                warnings.append(f"{dn}: {pm.leave}: {error}; ignored")
        person["leave"] = leave
        person["leave_from"] = "attribute" if leave else None
        roles, why = _roles(s, graph, dn, attrs, role_groups)
        if not roles and s.roles.default:
            roles = sorted(s.roles.default)
            why = [{"role": r, "default": True} for r in roles]
        person["roles"] = roles
        person["why"] = why
        people.append(person)
        people_by_dn[dn_key(dn)] = primary
    if leave_rows:
        by_address = {address_key(a): p for p in people for a in [p["address"], *p["aliases"]]}
        for address, rows in leave_rows.items():
            found = by_address.get(address)
            if found is None:
                warnings.append(f"leave file: {address} is not among the people; ignored")
                continue
            found["leave"] = [[a.isoformat(), b.isoformat(), r] for a, b, r in rows]
            found["leave_from"] = "leave_file"

    for dn, attrs, primary, aliases in pending_boxes:
        assert s.service_mailboxes is not None
        delegates: dict[str, str] = {}
        for attr in s.service_mailboxes.delegates:
            for value in attrs.get(attr.casefold(), []):
                delegate = people_by_dn.get(dn_key(value))
                if delegate is None:
                    warnings.append(f"{dn}: {attr} names {value}, which is not among the people; ignored")
                else:
                    delegates.setdefault(delegate, attr)
        if s.service_mailboxes.delegate_group:
            wanted = s.service_mailboxes.delegate_group.format(local=primary.partition("@")[0]).casefold()
            for key, name in group_names.items():
                if name.casefold() == wanted:
                    for leaf in graph.leaves(key):
                        if leaf in people_by_dn:
                            delegates.setdefault(people_by_dn[leaf], f"group {group_entries[key][0]}")
        roles, why = _roles(s, graph, dn, attrs, role_groups)
        mailboxes.append({"dn": dn, "address": primary, "aliases": aliases, "roles": roles, "why": why,
                          "delegates": sorted(delegates), "delegates_from": delegates})

    lists: list[dict[str, Any]] = []
    list_keys: set[str] = set()
    if s.lists:
        for dn, attrs in tree.lists:
            primary, aliases = _addresses(attrs, s.lists.address, s.lists.aliases)
            if primary is None:
                continue
            kept = claim(dn, [primary, *aliases])
            if not kept or address_key(kept[0]) != address_key(primary):
                continue
            list_keys.add(dn_key(dn))
            lists.append({"dn": dn, "address": primary, "aliases": kept[1:],
                          "members": len(graph.leaves(dn_key(dn)))})

    role_keys = {dn_key(g) for g in s.roles.groups}
    used = role_keys | list_keys
    delegate_names = set()
    if s.service_mailboxes and s.service_mailboxes.delegate_group:
        delegate_names = {s.service_mailboxes.delegate_group.format(local=b["address"].partition("@")[0]).casefold()
                          for b in mailboxes}
    # A group is used when it is a role group, a list, a delegate group, or nested inside one.
    inside: set[str] = set()
    for key in used | {k for k, n in group_names.items() if n.casefold() in delegate_names}:
        stack = [key]
        while stack:
            g = stack.pop()
            if g in inside:
                continue
            inside.add(g)
            stack.extend(m for m in group_entries.get(g, ("", []))[1] if m in group_entries)
    unmapped = sorted(group_entries[k][0] for k in group_entries if k not in inside)
    missing_roles = sorted(g for g in s.roles.groups if dn_key(g) not in group_entries)
    for group in missing_roles:
        warnings.append(f"roles.groups: {group} was not found under groups.base; nobody gets its roles")
    return {
        "format": SNAPSHOT_FORMAT,
        "source": source.url,
        "taken_at": (now or datetime.now(UTC)).isoformat(),
        "seconds": round(tree.seconds, 3),
        "institution": s.institution.model_dump(),
        "people": people,
        "service_mailboxes": mailboxes,
        "lists": lists,
        "unmapped_groups": unmapped,
        "missing_role_groups": missing_roles,
        "warnings": warnings,
        "searched": {"people": len(tree.people), "service_mailboxes": len(tree.mailboxes),
                     "groups": len(tree.groups), "lists": len(tree.lists)},
    }


# ---------------------------------------------------------------------------------------------
# The directory the rules see
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LdapDirectory(FileDirectory):
    """A FileDirectory built from an LDAP snapshot; knows where each entry came from."""

    snapshot: dict[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)
    unique: tuple[Entry, ...] = field(default=(), hash=False, compare=False, repr=False)
    stale: str | None = None  # why this is not a fresh load (server down), or None
    source: str = ""

    def all_entries(self) -> tuple[Entry, ...]:
        return self.unique

    def with_stale(self, reason: str | None) -> LdapDirectory:
        return dataclasses.replace(self, stale=reason)

    def explain(self, address: str) -> dict[str, Any] | None:
        """The snapshot record behind one address (which entry, which groups gave which roles)."""
        key = address_key(address)
        for kind in ("people", "service_mailboxes", "lists"):
            for item in self.snapshot.get(kind, []):
                if key in {address_key(a) for a in [item["address"], *item.get("aliases", [])]}:
                    return {"kind": kind, **item}
        return None

    @property
    def taken_at(self) -> datetime | None:
        value = self.snapshot.get("taken_at")
        return datetime.fromisoformat(value) if value else None


_ZONES: dict[str, ZoneInfo] = {}


def _zone(name: str) -> ZoneInfo:
    zone = _ZONES.get(name)
    if zone is None:
        zone = _ZONES[name] = ZoneInfo(name)
    return zone


def to_directory(snapshot: dict[str, Any], stale: str | None = None) -> LdapDirectory:
    inst = InstitutionDefaults.model_validate(snapshot["institution"])
    default_week = _weekly(inst.working_hours)
    weeks: dict[str, tuple[tuple[tuple[Any, Any], ...], ...]] = {}
    entries: dict[str, Entry] = {}
    unique: list[Entry] = []

    def add(entry: Entry, addresses: list[str]) -> None:
        unique.append(entry)
        for address in addresses:
            entries.setdefault(address_key(address), entry)

    for p in snapshot["people"]:
        week = default_week
        if p.get("working_hours") is not None:
            text = json.dumps(p["working_hours"], sort_keys=True)
            week = weeks.get(text) or weeks.setdefault(text, _weekly(p["working_hours"]))
        schedule = Schedule(zone=_zone(p.get("timezone") or inst.timezone), weekly=week,
                            holidays=p.get("holidays") or inst.holidays,
                            leave=tuple((date.fromisoformat(a), date.fromisoformat(b)) for a, b, _ in p["leave"]))
        add(Person(p["address"], p["name"], frozenset(p["roles"]), schedule, p.get("department") or ""),
            [p["address"], *p["aliases"]])
    for b in snapshot["service_mailboxes"]:
        add(ServiceMailbox(b["address"], frozenset(address_key(d) for d in b["delegates"]), frozenset(b["roles"])),
            [b["address"], *b["aliases"]])
    for lst in snapshot["lists"]:
        add(MailingList(lst["address"], lst["members"]), [lst["address"], *lst["aliases"]])
    return LdapDirectory(
        name=inst.name,
        domains=frozenset(d.casefold().rstrip(".") for d in inst.domains),
        networks=tuple(ipaddress.ip_network(n, strict=False) for n in inst.internal_networks),
        entries=entries,
        timezone=inst.timezone,
        snapshot=snapshot,
        unique=tuple(unique),
        stale=stale,
        source=str(snapshot.get("source", "")),
    )


def save_snapshot(path: Path, snapshot: dict[str, Any]) -> None:
    """Write atomically (temporary file, fsync, rename), readable only by the relay's user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(snapshot, out, ensure_ascii=False, separators=(",", ":"))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_snapshot(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        _log().error("directory_snapshot_unreadable", path=str(path), error=str(error))
        return None
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        _log().error("directory_snapshot_unreadable", path=str(path),
                                          error="not a snapshot of this version")
        return None
    return data


# ---------------------------------------------------------------------------------------------
# Loading, with the snapshot as the fallback
# ---------------------------------------------------------------------------------------------


@dataclass
class Status:
    """Figures for /metrics, shared by the loads of one process."""

    ok: int = 0
    failed: int = 0
    refused: int = 0
    last_error: str | None = None
    last_seconds: float = 0.0


STATUS = Status()


def load_fresh(source: Source, now: datetime | None = None) -> LdapDirectory:
    """Read the server now and write the snapshot; raises LdapDown or ConfigError."""
    leave_rows = read_leave_file(source.path(source.settings.leave_file)) if source.settings.leave_file else None
    tree = fetch(source)
    seconds = tree.seconds
    snapshot = build(source, tree, leave_rows, now)
    del tree  # the raw results are the biggest part of a load's peak memory
    directory = to_directory(snapshot)
    try:
        save_snapshot(source.snapshot_path, snapshot)
    except OSError as error:
        _log().warning("directory_snapshot_not_written", path=str(source.snapshot_path),
                                            error=str(error))
    STATUS.ok += 1
    STATUS.last_seconds = seconds
    STATUS.last_error = None
    return directory


def load(source: Source, previous: LdapDirectory | None = None) -> LdapDirectory:
    """A fresh load; when the server is down, the running directory or the snapshot, marked stale.

    A mapping that does not fit the server (a base that does not exist, a refused filter) is a
    ConfigError naming the config line. A refresh that loses more than `max_drop` of the people
    keeps the running directory."""
    log = _log()
    try:
        fresh = load_fresh(source)
    except LdapDown as error:
        STATUS.failed += 1
        STATUS.last_error = str(error)
        reason = f"LDAP unreachable: {error}"
        if previous is not None:
            log.warning("directory_stale", reason=reason, kept="running directory",
                        taken_at=str(previous.snapshot.get("taken_at")))
            return previous.with_stale(reason)
        snapshot = read_snapshot(source.snapshot_path)
        if snapshot is None:
            raise DirectoryUnavailable(f"directory {source.url}: {error}; and no snapshot at "
                                       f"{source.snapshot_path} to start from") from None
        log.warning("directory_stale", reason=reason, kept=str(source.snapshot_path),
                    taken_at=str(snapshot.get("taken_at")), people=len(snapshot.get("people", [])))
        return to_directory(snapshot, stale=reason)
    old_people = len(previous.snapshot.get("people", [])) if previous is not None else 0
    new_people = len(fresh.snapshot["people"])
    if previous is not None and old_people and new_people < old_people * (1 - source.settings.max_drop):
        STATUS.refused += 1
        reason = f"refresh refused: {new_people} people instead of {old_people} (more than max_drop lost)"
        log.error("directory_refresh_refused", reason=reason, advice="check the people base and filter, and the "
                  "service account's permissions; set max_drop: 1 to accept it")
        return previous.with_stale(reason)
    if fresh.snapshot["warnings"]:
        log.warning("directory_warnings", count=len(fresh.snapshot["warnings"]),
                    first=fresh.snapshot["warnings"][:5])
    log.info("directory_loaded", source=source.url, people=new_people,
             service_mailboxes=len(fresh.snapshot["service_mailboxes"]), lists=len(fresh.snapshot["lists"]),
             seconds=fresh.snapshot["seconds"])
    return fresh


def load_source_file(path: str | Path) -> LdapDirectory:
    """`relay check --directory FILE` with a file holding `directory: ldap://…` and `ldap:`."""
    source = source_from_file(path)
    check_files(source)
    return load(source)


def load_directory_file(path: str | Path) -> FileDirectory:
    """A directory file: the YAML format, or a file with an `ldap:` section (and `directory:
    ldap://…`) that names the LDAP server to read, so `relay check --directory` takes either."""
    data, _ = yamlconf.read_yaml(path)
    if isinstance(data, dict) and "ldap" in data and "people" not in data:
        return load_source_file(path)
    return load_directory(path)


def open_directory(config: Any, config_path: str | Path,
                   previous: FileDirectory | None = None) -> FileDirectory:
    """The directory a config names: a YAML file, or an LDAP server (with its snapshot)."""
    if is_ldap_url(config.directory):
        source = source_from_config(config, config_path)
        return load(source, previous if isinstance(previous, LdapDirectory) else None)
    return load_directory(config.resolve(config_path, config.directory))


# ---------------------------------------------------------------------------------------------
# The running relay: refresh on a schedule, metrics
# ---------------------------------------------------------------------------------------------


class _Collector:
    def __init__(self, app: Any) -> None:
        self.app = app

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        directory = self.app.rules.directory
        stale = GaugeMetricFamily("relay_directory_stale", "1 when the directory in force is not a fresh load "
                                  "(LDAP down or a refresh refused)")
        stale.add_metric([], 1.0 if getattr(directory, "stale", None) else 0.0)
        yield stale
        taken = getattr(directory, "taken_at", None)
        if taken is not None:
            age = GaugeMetricFamily("relay_directory_age_seconds", "Age of the directory data in force")
            age.add_metric([], max(0.0, time.time() - taken.timestamp()))
            yield age
        entries = GaugeMetricFamily("relay_directory_entries", "Directory entries in force, by kind", labels=["kind"])
        counts = {"person": 0, "service_mailbox": 0, "list": 0}
        for entry in directory.all_entries():
            kind = ("person" if isinstance(entry, Person) else
                    "service_mailbox" if isinstance(entry, ServiceMailbox) else "list")
            counts[kind] += 1
        for kind, count in counts.items():
            entries.add_metric([kind], float(count))
        yield entries
        loads = CounterMetricFamily("relay_directory_loads", "LDAP directory loads, by result", labels=["result"])
        loads.add_metric(["ok"], STATUS.ok)
        loads.add_metric(["failed"], STATUS.failed)
        loads.add_metric(["refused"], STATUS.refused)
        yield loads


def watch(app: Any) -> None:
    """Put the directory figures into the app's /metrics."""
    with contextlib.suppress(Exception):
        app.metrics.registry.register(_Collector(app))


async def refresh_once(app: Any) -> bool:
    """Reload the LDAP directory now and swap it in (one assignment); False when nothing changed."""
    config, rules = app.config, app.rules
    if not is_ldap_url(config.directory) or not isinstance(rules.directory, LdapDirectory):
        return False
    source = source_from_config(config, app.config_path)
    try:
        directory = await asyncio.to_thread(load, source, rules.directory)
    except (yamlconf.ConfigError, DirectoryUnavailable) as error:
        STATUS.failed += 1
        _log().error("directory_refresh_failed", error=str(error),
                                          kept="running directory")
        directory = rules.directory.with_stale(str(error))
    # A reload (new config or generation) that happened meanwhile wins over this refresh.
    if app.rules is not rules or app.config.directory != config.directory:
        return False
    if directory is not rules.directory:
        from relay.identity import server_directory  # the local_submission clients ride on every load

        app.rules = dataclasses.replace(rules, directory=server_directory(directory, config))
        return True
    return False


async def refresh_loop(app: Any) -> None:
    """Refresh every `ldap.refresh` seconds while the relay runs (cancel the task to stop)."""
    watch(app)
    while True:
        settings = getattr(app.config, "ldap", None)
        period = settings.refresh if settings is not None and is_ldap_url(app.config.directory) else 0
        if not period:
            await asyncio.sleep(60)  # a reload may switch LDAP on
            continue
        # While the directory is stale (server down), try again within a minute.
        await asyncio.sleep(min(period, 60) if getattr(app.rules.directory, "stale", None) else period)
        try:
            await refresh_once(app)
        except Exception as error:  # never let the loop die: the running directory stays
            _log().exception("directory_refresh_crashed", error=str(error))


def start(app: Any) -> asyncio.Task[None]:
    """The refresh task for `relay serve` (app.py calls this once)."""
    return asyncio.get_running_loop().create_task(refresh_loop(app))


# ---------------------------------------------------------------------------------------------
# What the CLI prints
# ---------------------------------------------------------------------------------------------


def stats(directory: FileDirectory) -> dict[str, Any]:
    entries = directory.all_entries()
    people = [e for e in entries if isinstance(e, Person)]
    roles: dict[str, int] = {}
    for person in people:
        for role in person.roles:
            roles[role] = roles.get(role, 0) + 1
    for box in (e for e in entries if isinstance(e, ServiceMailbox)):
        for role in box.roles:
            roles[role] = roles.get(role, 0) + 1
    out: dict[str, Any] = {
        "institution": directory.name,
        "domains": sorted(directory.domains),
        "people": len(people),
        "service_mailboxes": sum(isinstance(e, ServiceMailbox) for e in entries),
        "lists": sum(isinstance(e, MailingList) for e in entries),
        "addresses": len(directory.entries),
        "roles": dict(sorted(roles.items())),
        "on_leave_or_later": sum(bool(p.schedule.leave) for p in people),
    }
    if isinstance(directory, LdapDirectory):
        snap = directory.snapshot
        out.update({"source": directory.source, "taken_at": snap.get("taken_at"), "stale": directory.stale,
                    "load_seconds": snap.get("seconds"), "searched": snap.get("searched"),
                    "unmapped_groups": len(snap.get("unmapped_groups", [])),
                    "unmapped_group_names": snap.get("unmapped_groups", [])[:20],
                    "missing_role_groups": snap.get("missing_role_groups", []),
                    "warnings": len(snap.get("warnings", [])), "first_warnings": snap.get("warnings", [])[:10]})
    else:
        out["source"] = "file"
    return out


def show(directory: FileDirectory, address: str) -> dict[str, Any] | None:
    """What the relay believes about one address, and why."""
    entry = directory.find(address)
    if entry is None:
        return None
    out: dict[str, Any] = {"address": entry.address, "asked": address}
    if isinstance(entry, Person):
        s = entry.schedule
        out.update({"kind": "person", "name": entry.name, "department": entry.department or None,
                    "roles": sorted(entry.roles), "timezone": s.zone.key,
                    "holidays": s.holidays,
                    "working_hours": {day: [f"{a:%H:%M}-{'24:00' if b.hour == 23 and b.minute == 59 else f'{b:%H:%M}'}"
                                            for a, b in spans] for day, spans in zip(DAYS, s.weekly, strict=True)
                                      if spans},
                    "leave": [[a.isoformat(), b.isoformat()] for a, b in s.leave]})
    elif isinstance(entry, ServiceMailbox):
        out.update({"kind": "service_mailbox", "delegates": sorted(entry.delegates), "roles": sorted(entry.roles)})
    else:
        out.update({"kind": "list", "members": entry.members})
    if isinstance(directory, LdapDirectory):
        record = directory.explain(address) or {}
        out["source"] = directory.source
        out["taken_at"] = directory.snapshot.get("taken_at")
        out["stale"] = directory.stale
        out["dn"] = record.get("dn")
        out["aliases"] = record.get("aliases", [])
        if "why" in record:
            out["why_roles"] = record["why"]
        if "delegates_from" in record:
            out["why_delegates"] = record["delegates_from"]
        if "leave_from" in record:
            out["leave_from"] = record["leave_from"]
    else:
        out["source"] = "file"
    return out
