"""Real processes on loopback for end-to-end tests: a sink SMTP server and the relay itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from relay.auth import hash_password
from relay.clock import TEST_CLOCK_ENV, FileClock
from tests.helpers import INSTITUTIONS, POLICIES, ROOT

PASSWORD = "clave-de-prueba"


_ISSUED: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on, never one this process handed out before (ports are
    often chosen for several servers before any of them binds)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _ISSUED:
            _ISSUED.add(port)
            return port
    raise RuntimeError("no free loopback port")


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    content: bytes


@dataclass
class SinkHandler:
    messages: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    fail_data: dict[str, str] = field(default_factory=dict)  # recipient -> reply to DATA
    delay: float = 0.0  # seconds before answering DATA (a slower next hop)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address.casefold() in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        for rcpt in envelope.rcpt_tos:
            if rcpt.casefold() in self.fail_data:
                return self.fail_data[rcpt.casefold()]
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 sink accepted"


_BARE = re.compile(rb"(?<!\r)\n|\r(?!\n)")


class LineEndings:
    """Every byte a sink receives, scanned for a CR or LF that is not part of a CRLF pair
    (RFC 5321 §2.3.8, RFC 5322 §2.3): what the relay writes upstream must never have one."""

    def __init__(self) -> None:
        self.bare: list[bytes] = []  # the surroundings of each one seen
        self.lock = threading.Lock()
        self.carry: dict[int, bytes] = {}  # per connection: a CR that ended the previous read

    def feed(self, connection: int, data: bytes) -> None:
        with self.lock:
            data = self.carry.pop(connection, b"") + data
            if data.endswith(b"\r"):
                self.carry[connection], data = b"\r", data[:-1]
            for found in _BARE.finditer(data):
                self.bare.append(data[max(0, found.start() - 40):found.end() + 40])

    def close(self, connection: int) -> None:
        with self.lock:
            if self.carry.pop(connection, b""):
                self.bare.append(b"\r<connection closed>")


class _ScanningSMTP(SMTP):
    line_endings: LineEndings

    def data_received(self, data: bytes) -> None:
        self.line_endings.feed(id(self), data)
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        self.line_endings.close(id(self))
        super().connection_lost(error)


class _ScanningController(Controller):
    def __init__(self, line_endings: LineEndings, *args: Any, **kwargs: Any) -> None:
        self.line_endings = line_endings
        super().__init__(*args, **kwargs)

    def factory(self) -> SMTP:
        server = _ScanningSMTP(self.handler, **self.SMTP_kwargs)
        server.line_endings = self.line_endings
        return server


class Sink:
    """A real SMTP server (aiosmtpd in a thread) that records what it receives, and checks that
    every byte of it has CRLF line ends only: `stop()` fails the test otherwise (strict=False for
    a test that sends the sink bare newlines on purpose)."""

    def __init__(self, port: int | None = None, strict: bool = True) -> None:
        self.port = port or free_port()
        self.handler = SinkHandler()
        self.controller: Controller | None = None
        self.line_endings = LineEndings()
        self.strict = strict

    def start(self) -> Sink:
        self.controller = _ScanningController(self.line_endings, self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        if self.strict:
            self.assert_crlf_only()

    def assert_crlf_only(self) -> None:
        bare = self.line_endings.bare
        assert not bare, f"the upstream received {len(bare)} bare CR/LF, first: {bare[0]!r}"

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.messages) < count:
            time.sleep(0.05)
        return self.messages


class RelayProcess:
    """`relay serve` in a subprocess with a config written for the test."""

    def __init__(self, tmp: Path, upstream: str, pack: str = "barrancabermeja", extra_logins: tuple[str, ...] = (),
                 **overrides: Any) -> None:
        self.port = free_port()
        creds = tmp / "credentials.txt"
        creds.write_text("".join(f"{login}:{hash_password(PASSWORD, iterations=1000)}\n" for login in (
            "laura.pinto@barrancabermeja.gov.co", "patriciah.fierro@barrancabermeja.gov.co",
            "luis.fernandez@cancilleria.gov.co", *extra_logins)))
        config: dict[str, Any] = {
            "hostname": "relay.test", "listen": {"host": "127.0.0.1", "port": self.port},
            "policy": str(POLICIES / f"{pack}.yaml"), "directory": str(INSTITUTIONS / f"{pack}.yaml"),
            "upstream": upstream, "store": f"sqlite:{tmp / 'relay.sqlite3'}",
            "auth": {"credentials_file": str(creds), "allow_plaintext_on_loopback": True},
            "log": {"level": "debug"},
            "workers": 1,  # one process unless a test asks for more (the default is one per core)
        }
        for key, value in overrides.items():
            if isinstance(value, dict):
                config.setdefault(key, {}).update(value)
            else:
                config[key] = value
        self.config = config
        self.config_path = tmp / "relay.yaml"
        self.log_path = tmp / "relay.log"
        self.clock_path = tmp / "clock.txt"
        self.env: dict[str, str] = {}
        self.wrapper: list[str] = []  # a command to run the relay under (strace)
        self.proc: subprocess.Popen[bytes] | None = None

    def set_upstream(self, upstream: str) -> None:
        self.config["upstream"] = upstream

    def use_test_clock(self, at: datetime) -> None:
        """Drive the relay's clock through its documented test hook (POLICY_RELAY_TEST_CLOCK)."""
        FileClock.write(self.clock_path, at)
        self.env[TEST_CLOCK_ENV] = str(self.clock_path)

    def start(self) -> RelayProcess:
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([*self.wrapper, sys.executable, "-m", "relay", "serve", "--init", "--config",
                                      str(self.config_path)],
                                     cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                                     start_new_session=bool(self.wrapper))
        wait_port(self.port, 60 if self.wrapper else 20)
        admin = self.config.get("admin", {}).get("listen")
        if admin:  # the admin listener opens just after the SMTP one: a test may ask it at once
            wait_port(int(str(admin).rpartition(":")[2]), 20)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.wrapper and self.proc.poll() is None:
            # under strace, SIGTERM to strace only detaches it: stop the relay through its group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines of one event, in order (whole lines only: the relay may be writing
        the last one as it is read)."""
        out = []
        for line in self.log().splitlines(keepends=True):
            if line.endswith("\n") and line.startswith("{") and f'"event": "{name}"' in line:
                out.append(json.loads(line))
        return out

    def wait_events(self, name: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(found := self.events(name)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return found
