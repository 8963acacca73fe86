"""Who sent a message and which way it flows: staff (outbound), inbound, or a relay attempt."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from relay.directory import Directory, Person, address_key
from relay.message import Envelope


class Direction(StrEnum):
    STAFF = "staff"  # authenticated, or from an internal network: sent by the institution's staff
    INBOUND = "inbound"  # from outside to at least one of the institution's addresses
    RELAY = "relay"  # from outside to nobody of ours: an open-relay attempt


@dataclass(frozen=True)
class SenderIdentity:
    """What we know of the sender: the verified login (if any) and where the client connected from."""

    login: str | None
    client_ip: str | None
    internal_network: bool
    direction: Direction
    person: Person | None

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
    internal = directory.is_internal_ip(envelope.client_ip)
    if login or internal:
        direction = Direction.STAFF
    elif any(directory.is_local(r) for r in envelope.rcpt_to):
        direction = Direction.INBOUND
    else:
        direction = Direction.RELAY
    entry = directory.find(login) if login else None
    return SenderIdentity(login, envelope.client_ip, internal, direction,
                          entry if isinstance(entry, Person) else None)
