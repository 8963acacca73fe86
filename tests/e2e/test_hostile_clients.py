"""Hostile clients against the running relay, over real sockets (issue 20): trickled command lines,
one address holding many connections, AUTH guessing, big messages in parallel, bare newlines
written upstream."""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.auth import hash_password
from tests.e2e.harness import PASSWORD, RelayProcess, Sink
from tests.helpers import ROOT

B = "barrancabermeja.gov.co"
LAURA = f"laura.pinto@{B}"


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink().start()
    yield s
    s.stop()


def connect(relay: RelayProcess, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", relay.port), timeout=timeout, source_address=(source, 0))


def trickle(s: socket.socket, line: bytes, every: float, limit: float) -> tuple[bytes, float]:
    """Send `line` one byte at a time, never its end; what came back and when it closed."""
    start = time.monotonic()
    got = b""
    s.settimeout(every)
    i = 0
    while time.monotonic() - start < limit:
        try:
            s.sendall(line[i % len(line):i % len(line) + 1])
            i += 1
        except OSError:
            break
        try:
            data = s.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
        if not data:
            break
        got += data
    return got, time.monotonic() - start


# -- 1. slowloris -----------------------------------------------------------------------------------

def test_a_command_line_trickled_byte_by_byte_is_cut_with_421_after_idle_timeout(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", limits={"idle_timeout": 1.5}).start()
    try:
        with connect(relay) as s:
            assert s.recv(1024).startswith(b"220 ")
            got, took = trickle(s, b"EHLO slow.example.org", every=0.2, limit=8)
        assert got.startswith(b"421 4.4.2 "), got
        assert took < 1.5 + 1.5, f"cut after {took:.1f} s"
        # mid-session too: after a complete command, the next line has the same deadline
        with connect(relay) as s:
            s.recv(1024)
            s.sendall(b"EHLO ok.example.org\r\n")
            time.sleep(0.3)
            s.recv(4096)
            got, took = trickle(s, b"MAIL FROM:<ana@example.org>", every=0.2, limit=8)
        assert got.startswith(b"421 4.4.2 ") and took < 3.0, (got, took)
    finally:
        relay.stop()


def test_one_address_cannot_take_every_connection(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}",
                         limits={"max_connections": 10, "max_connections_per_client": 3}).start()
    held = []
    try:
        for _ in range(3):
            held.append(connect(relay))
            assert held[-1].recv(1024).startswith(b"220 ")
        with connect(relay) as extra:
            assert extra.recv(1024).startswith(b"421 4.7.0 "), "a fourth from the same address is refused"
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=10, source_address=("127.0.0.2", 0)) as other:
            assert other.noop()[0] == 250, "another address is still served"
        held.pop().close()
        time.sleep(0.3)
        with connect(relay) as again:
            assert again.recv(1024).startswith(b"220 "), "a closed connection frees its place"
        assert relay.events("client_connection_limit")
    finally:
        for s in held:
            s.close()
        relay.stop()


def test_a_session_cannot_live_on_noops(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", limits={"max_junk_commands": 5}).start()
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as smtp:
            for _ in range(5):
                assert smtp.noop()[0] == 250
            assert smtp.noop()[0] == 421
    finally:
        relay.stop()


# -- 4. AUTH --------------------------------------------------------------------------------------------

def plain(login: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{login}\0{password}".encode()).decode()


def test_auth_guessing_is_slowed_then_cut_per_connection_and_per_address(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}",
                         auth={"failure_delay": 0.3, "max_failures_per_connection": 3, "max_failures_per_client": 5})
    relay.start()
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=20) as smtp:
            smtp.ehlo("guess.example.org")
            took = []
            for _ in range(2):
                start = time.monotonic()
                assert smtp.docmd("AUTH", plain(LAURA, "incorrecta"))[0] == 535
                took.append(time.monotonic() - start)
            assert took[0] >= 0.3 and took[1] >= 0.6, f"growing delays: {took}"
            code, text = smtp.docmd("AUTH", plain(LAURA, "incorrecta"))
            assert code == 421, text  # the third failure closes the connection
            with pytest.raises(smtplib.SMTPServerDisconnected):
                smtp.docmd("AUTH", plain(LAURA, PASSWORD))  # the right one, on the same connection: too late
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=20) as smtp:
            smtp.ehlo("guess.example.org")
            assert smtp.docmd("AUTH", plain("nadie@example.org", "x"))[0] == 535  # 4th from this address
            assert smtp.docmd("AUTH", plain(LAURA, "incorrecta"))[0] == 421  # 5th: the address is locked out
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=20) as smtp:
            smtp.ehlo("guess.example.org")
            code, _ = smtp.docmd("AUTH", plain(LAURA, PASSWORD))
            assert code == 421, "locked out for the window, even with the right password"
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=20, source_address=("127.0.0.2", 0)) as smtp:
            smtp.ehlo("other.example.org")
            assert smtp.docmd("AUTH", plain(LAURA, PASSWORD))[0] == 235, "another address is not locked out"
        failed = relay.events("auth_failed")
        assert len(failed) == 5
        assert {e["client"] for e in failed} == {"127.0.0.1"}
        assert [e["login"] for e in failed][-2:] == ["nadie@example.org", LAURA]
        assert relay.events("auth_blocked")
        banned = [m.group("host") for line in relay.log().splitlines() for rx in fail2ban_regexes()
                  if (m := rx.search(line))]
        assert banned.count("127.0.0.1") >= 6 and "127.0.0.2" not in banned, "docs/fail2ban.md's filter matches"
    finally:
        relay.stop()


def test_guesses_at_one_login_from_many_addresses_are_refused_but_its_owner_still_gets_in(
        tmp_path: Path, sink: Sink) -> None:
    """A spray: every address stays under its own limit, but the login's failures add up; then the
    login is refused (454, before any password is looked at) from addresses it never signed in
    from, while its owner's usual address and other logins are untouched."""
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}",
                         auth={"failure_delay": 0, "max_failures_per_connection": 3, "max_failures_per_client": 5,
                               "max_failures_per_login": 4})
    relay.start()

    def auth(source: str, login: str, password: str) -> int:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=20, source_address=(source, 0)) as smtp:
            smtp.ehlo("spray.example.org")
            return int(smtp.docmd("AUTH", plain(login, password))[0])

    try:
        assert auth("127.0.0.9", LAURA, PASSWORD) == 235  # Laura's own desk
        assert [auth(f"127.0.3.{n}", LAURA.upper(), "incorrecta") for n in range(1, 5)] == [535] * 4
        assert auth("127.0.3.50", LAURA, PASSWORD) == 454, "a fifth address, even with the password"
        assert auth("127.0.3.51", LAURA, "incorrecta") == 454
        assert auth("127.0.0.9", LAURA, PASSWORD) == 235, "where she signed in before, she still does"
        assert auth("127.0.3.50", f"carlos.rueda@{B}", "incorrecta") == 535, "other logins are not affected"
        assert [e["login"] for e in relay.events("auth_blocked_login")] == [LAURA, LAURA]
        assert max(e["login_failures"] for e in relay.events("auth_failed")) == 4
        banned = [m.group("host") for line in relay.log().splitlines() for rx in fail2ban_regexes()
                  if (m := rx.search(line))]
        assert {"127.0.3.50", "127.0.3.51"} <= set(banned), "docs/fail2ban.md's filter sees the refusals"
    finally:
        relay.stop()


def fail2ban_regexes() -> list[re.Pattern[str]]:
    """The failregex lines of the filter in docs/fail2ban.md, <HOST> as fail2ban reads it."""
    text = (ROOT / "docs" / "fail2ban.md").read_text(encoding="utf-8")
    block = text.split("failregex =", 1)[1].split("datepattern", 1)[0]
    return [re.compile(line.strip().replace("<HOST>", r"(?P<host>[0-9A-Fa-f.:]+)")) for line in block.splitlines()
            if line.strip()]


def test_password_hashing_does_not_stall_other_sessions(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}",
                         auth={"failure_delay": 0, "max_failures_per_connection": 100,
                               "max_failures_per_client": 1000, "max_failures_per_login": 100_000})
    (tmp_path / "credentials.txt").write_text(f"{LAURA}:{hash_password(PASSWORD, iterations=400_000)}\n")
    relay.start()
    stop = threading.Event()

    def guesser(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=60, source_address=(f"127.0.1.{n}", 0)) as smtp:
            smtp.ehlo("guess.example.org")
            while not stop.is_set():
                smtp.docmd("AUTH", plain(LAURA if n % 2 else "nadie@example.org", "incorrecta"))

    threads = [threading.Thread(target=guesser, args=(n,)) for n in range(1, 9)]
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as probe:
            probe.ehlo("probe.example.org")
            for t in threads:
                t.start()
            time.sleep(1.0)
            waits = []
            for _ in range(20):
                start = time.monotonic()
                assert probe.noop()[0] == 250
                waits.append(time.monotonic() - start)
                time.sleep(0.05)
        assert max(waits) < 0.35, f"a NOOP waited {max(waits):.2f} s behind the password hashing"
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        relay.stop()


# -- 2. nothing but CRLF upstream -------------------------------------------------------------------------

def test_the_warning_part_reaches_the_upstream_with_crlf_only(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}").start()
    raw = (f"From: Patricia Helena Fierro Vitola <patriciah.fierro.secretaria@gmail.com>\r\n"
           f"To: efrain.molinam@{B}\r\nSubject: Necesito un favor\r\nMessage-ID: <fav-crlf@gmail.com>\r\n"
           f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           f"Hola, necesito que me hagas un favor urgente.\r\n").encode()
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
            smtp.ehlo("mail-ej1.google.example")
            smtp.sendmail("patriciah.fierro.secretaria@gmail.com", [f"efrain.molinam@{B}"], raw)
        [got] = sink.wait_for(1)
        assert got.content.startswith(b"Received:") or b"Subject: [ALERTA" in got.content
        assert b"quoted-printable" in got.content, "the warning part was added"
        assert b"=\r\n" in got.content, "with soft line breaks, as CRLF"
        sink.assert_crlf_only()
    finally:
        relay.stop()


# -- 8. memory with big messages in parallel -----------------------------------------------------------------

def rss_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def big_message(n: int, size: int) -> bytes:
    line = b"Texto de relleno para un anexo largo, linea de prueba sin nada especial.\r\n"
    head = f"From: ana@example.org\r\nTo: pmu@{B}\r\nSubject: grande {n}\r\n\r\n".encode()
    return head + line * (size // len(line))


def test_many_big_messages_at_once_stay_within_the_memory_budget(tmp_path: Path, sink: Sink) -> None:
    count, size = 8, 8 * 1024 * 1024
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}",
                         limits={"memory_budget": 16 * 1024 * 1024}).start()
    assert relay.proc is not None
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:  # warm up: every module loaded
            smtp.sendmail("ana@example.org", [f"pmu@{B}"], big_message(0, 64 * 1024))
        base = rss_peak_mib(relay.proc.pid)
        replies: list[object] = []

        def send(n: int) -> None:
            with smtplib.SMTP("127.0.0.1", relay.port, timeout=300) as smtp:
                replies.append(smtp.sendmail("ana@example.org", [f"pmu@{B}"], big_message(n, size)))

        threads = [threading.Thread(target=send, args=(n,)) for n in range(1, count + 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert replies == [{}] * count
        assert len(sink.wait_for(count + 1, timeout=60)) == count + 1
        grew = rss_peak_mib(relay.proc.pid) - base
        # unbounded, each 8 MiB message in flight costs ~20 MiB: 8 at once would be ~170 MiB
        assert grew < 110, f"peak RSS grew {grew:.0f} MiB for {count} x 8 MiB messages at once"
    finally:
        relay.stop()


# -- 5. many recipients ---------------------------------------------------------------------------------------

def relay_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def test_recipient_checks_cost_the_same_for_the_thousandth_rcpt(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", limits={"max_recipients": 1000}).start()
    assert relay.proc is not None
    try:
        cost = {}
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=120) as smtp:
            smtp.login(LAURA, PASSWORD)
            for count in (200, 1000):
                before = relay_cpu(relay.proc.pid)
                smtp.mail(LAURA)
                for n in range(count):
                    assert smtp.rcpt(f"persona{n}@example.org")[0] == 250
                smtp.rset()
                cost[count] = relay_cpu(relay.proc.pid) - before
            # and an envelope-only refusal still happens at RCPT time among many recipients
            smtp.mail(LAURA)
            for n in range(300):
                smtp.rcpt(f"persona{n}@example.org")
            assert smtp.rcpt(f"funcionarios@{B}")[0] == 550, "a list among the recipients, from a non-broadcaster"
            smtp.rset()
        assert cost[1000] < 10 * max(cost[200], 0.05), f"quadratic (25x) or worse: {cost}"  # linear is 5x
        assert cost[1000] < 5, f"{cost[1000]:.1f} CPU s for 1,000 RCPTs"
    finally:
        relay.stop()
