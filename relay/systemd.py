"""sd_notify without libsystemd: READY, RELOADING and STOPPING datagrams to $NOTIFY_SOCKET.

systemd's `Type=notify` waits for READY=1 before it calls the service started, so units ordered
after the relay (Postfix with it as content_filter) start when it really listens.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time


def notify(state: str) -> bool:
    """Send one state string; False when not run by systemd (no NOTIFY_SOCKET) or it failed."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
        return True
    return False


def ready(status: str = "") -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def reloading() -> bool:
    # MONOTONIC_USEC lets systemd ≥ 253 (Type=notify-reload) match this reload to its request.
    return notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")


def stopping() -> bool:
    return notify("STOPPING=1")
