"""Who sent a message and which way it flows: staff (outbound), inbound, or a relay attempt."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from relay.directory import Directory, FileDirectory, Person, address_key, ip_in
from relay.message import Envelope


class Direction(StrEnum):
    STAFF = "staff"  # authenticated, or from an internal network: sent by the institution's staff
    INBOUND = "inbound"  # from outside to at least one of the institution's addresses
    RELAY = "relay"  # from outside to nobody of ours: an open-relay attempt


@dataclass(frozen=True)
class LocalSubmission:
    """Mail the mail server submits itself (web forms, cron: `sendmail`/pickup, which Postfix's
    cleanup presents to `non_smtpd_milters` as ESMTP from "localhost", 127.0.0.1, with no login).

    `clients`: the addresses that are the server itself; `login`: the identity such mail gets, as
    if it had authenticated (None: like an internal network, the claimed sender must be one the
    directory knows)."""

    clients: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    login: str | None = None

    @classmethod
    def build(cls, clients: Iterable[str], login: str | None) -> LocalSubmission:
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in clients),
                   address_key(login) if login else None)

    def matches(self, ip: str | None) -> bool:
        return ip_in(ip, self.clients)


def server_directory(directory: FileDirectory, config: Any) -> FileDirectory:
    """The directory with the config's `local_submission` (a RelayConfig), if it has one."""
    section = getattr(config, "local_submission", None)
    if section is None:
        return directory
    # `replace` keeps the directory's own type (a YAML file, an LDAP snapshot with its staleness)
    return replace(directory, local_submission=LocalSubmission.build(section.clients, section.login))


def local_submission_of(directory: Directory) -> LocalSubmission | None:
    local = getattr(directory, "local_submission", None)
    return local if isinstance(local, LocalSubmission) else None


@dataclass(frozen=True)
class SenderIdentity:
    """What we know of the sender: the verified login (if any) and where the client connected from."""

    login: str | None
    client_ip: str | None
    internal_network: bool
    direction: Direction
    person: Person | None
    local: bool = False  # submitted on the mail server itself (LocalSubmission)

    @property
    def is_staff(self) -> bool:
        return self.direction is Direction.STAFF


def normalise_login(login: str | None, directory: Directory) -> str | None:
    """Logins are compared as addresses; a bare user name gets the institution's first domain."""
    if not login:
        return None
    login = login.strip()
    if "@" not in login and directory.domains:
        login = f"{login}@{sorted(directory.domains)[0]}"
    return address_key(login)


def identify(envelope: Envelope, directory: Directory) -> SenderIdentity:
    """Classify a submission; `auth` must be a login the front-end verified or a trusted hop recorded."""
    login = normalise_login(envelope.auth, directory)
    server = local_submission_of(directory)
    local = server is not None and not login and server.matches(envelope.client_ip)
    if local and server is not None and server.login:
        login = server.login
    internal = directory.is_internal_ip(envelope.client_ip)
    if login or internal:
        direction = Direction.STAFF
    elif any(directory.is_local(r) for r in envelope.rcpt_to):
        direction = Direction.INBOUND
    else:
        direction = Direction.RELAY
    entry = directory.find(login) if login else None
    return SenderIdentity(login, envelope.client_ip, internal, direction,
                          entry if isinstance(entry, Person) else None, local)
