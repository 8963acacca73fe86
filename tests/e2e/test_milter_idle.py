"""The milter's idle timeout (milter.idle_timeout) against a real relay process: a silent MTA
connection is closed once it has been silent that long; one that keeps sending is not, however long
it lasts in all."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

from relay.frontends import milter_codec as mc
from tests.e2e.harness import RelayProcess, free_port

OFFER = mc.packet(mc.OPTNEG, struct.pack("!III", 6, 0x1FF, 0x1FFFFF))


def _relay(tmp_path: Path) -> tuple[RelayProcess, int]:
    port = free_port()
    relay = RelayProcess(tmp_path, "smtp://127.0.0.1:1",
                         milter={"listen": f"inet:127.0.0.1:{port}", "idle_timeout": 1})
    return relay.start(), port


def _negotiated(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(OFFER)
    reply = sock.recv(65536)
    assert reply[4:5] == mc.OPTNEG
    return sock


def test_a_silent_mta_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    relay, port = _relay(tmp_path)
    try:
        sock = _negotiated(port)
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the relay
        waited = time.monotonic() - started
        assert 0.9 <= waited < 3.0
        assert relay.events("milter_idle_timeout")
    finally:
        relay.stop()


def test_an_mta_that_keeps_talking_is_not_cut_by_the_idle_timeout(tmp_path: Path) -> None:
    relay, port = _relay(tmp_path)
    try:
        sock = _negotiated(port)
        macros = mc.packet(mc.MACRO, mc.CONNECT + b"j\0relay.test\0")
        for _ in range(8):  # 2.8 s in all, never 1 s silent
            sock.sendall(macros)
            time.sleep(0.35)
        sock.sendall(mc.packet(mc.CONNECT, b"mta.test\x004\x00\x04\x00127.0.0.1\x00"))
        sock.sendall(mc.packet(mc.HELO, b"mta.test\0"))
        sock.sendall(mc.packet(mc.MAIL, b"<a@b.test>\0"))
        sock.sendall(mc.packet(mc.RCPT, b"<c@d.test>\0"))
        reply = sock.recv(65536)  # CONNECT, HELO, MAIL unanswered (negotiated): this answers RCPT
        assert reply[4:5] in (mc.R_CONTINUE, mc.R_REPLYCODE)
        assert not relay.events("milter_idle_timeout")
        sock.sendall(mc.packet(mc.QUIT))
        sock.close()
    finally:
        relay.stop()
