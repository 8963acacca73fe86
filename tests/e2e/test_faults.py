"""Faults: the 250 only after an fsync (seen by strace), a full disk, a next hop that misbehaves.

Real parts only: the relay process, Postfix's smtp-sink with its fault options, a real tmpfs that
fills up, strace on the running relay.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.harness import PASSWORD, RelayProcess, Sink, free_port, wait_port

B = "barrancabermeja.gov.co"
LAURA = f"laura.pinto@{B}"
LUIS, MARIA = "luis.fernandez@cancilleria.gov.co", "maria.lopez@cancilleria.gov.co"
SMTP_SINK = "/usr/sbin/smtp-sink"


def message(frm: str, to: str, subject: str = "Informe", body: str = "Cordial saludo.") -> bytes:
    return f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


def send(port: int, frm: str, to: str, data: bytes, login: str | None = None) -> tuple[int, bytes]:
    """One transaction; the DATA reply (or the first refusal)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        if login:
            smtp.login(login, PASSWORD)
        code, text = smtp.mail(frm)
        if code != 250:
            return code, text
        code, text = smtp.rcpt(to)
        if code != 250:
            return code, text
        return smtp.data(data)


def maildir_files(path: Path) -> dict[str, list[str]]:
    return {sub: sorted(os.listdir(path / sub)) if (path / sub).exists() else [] for sub in ("tmp", "new")}


# -- fsync before 250, watched by strace -----------------------------------------------------------

@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is installed by ./dev test")
def test_every_250_for_data_comes_after_an_fsync(tmp_path: Path) -> None:
    """100 of 100: between two `250 ... queued` replies written to clients there is an fsync."""
    maildir = tmp_path / "maildir"
    relay = RelayProcess(tmp_path, f"maildir:{maildir}", log={"level": "warning"})
    trace = tmp_path / "strace.txt"
    relay.wrapper = ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,write,writev,sendto,sendmsg",
                     "-s", "64", "-o", str(trace)]
    relay.start()
    try:
        for i in range(100):
            code, _ = send(relay.port, LAURA, "jose@gmail.com", message(LAURA, "jose@gmail.com", f"n {i}"), LAURA)
            assert code == 250
    finally:
        relay.stop()
    assert len(maildir_files(maildir)["new"]) == 100
    synced = False
    replies = 0
    for line in trace.read_text(errors="replace").splitlines():
        # a syscall another thread interrupted shows as "fsync(5 <unfinished ...>", then as
        # "<... fsync resumed>) = 0" when it returns
        if re.search(r"\b(fsync|fdatasync)\(\d+\)\s+= 0|<\.\.\. (fsync|fdatasync) resumed>\)\s+= 0", line):
            synced = True
        elif "250 2.0.0 Ok: queued as" in line:
            assert synced, f"a 250 went out with no fsync since the previous one: {line}"
            synced = False
            replies += 1
    assert replies == 100


# -- a full disk ----------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of our own: it really fills up (needs root, as ./dev test runs in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> Path:
    filler = path / "filler"
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    return filler


def test_disk_full_means_4xx_never_250_nor_5xx_and_no_half_written_files(tmp_path: Path, small_disk: Path) -> None:
    sink = Sink().start()
    maildir = small_disk / "maildir"
    # Mail delivered to a Maildir on the small disk; holds in a store on the same disk.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    deliver = RelayProcess(tmp_path / "a", f"maildir:{maildir}", store=f"sqlite:{small_disk / 'a.sqlite3'}")
    held = RelayProcess(tmp_path / "b", f"smtp://127.0.0.1:{sink.port}", pack="cancilleria",
                        store=f"sqlite:{small_disk / 'b.sqlite3'}")
    held.use_test_clock(datetime.fromisoformat("2026-11-27T20:00:00-05:00"))  # Friday night: mail is held
    deliver.start()
    held.start()
    try:
        body = "Cordial saludo, seguimos atentos.\r\n" * 1000  # ~35 KB: several pages on a full disk
        assert send(deliver.port, LAURA, "jose@gmail.com", message(LAURA, "jose@gmail.com", body=body), LAURA)[0] == 250
        filler = fill(small_disk)
        codes = []
        for i in range(5):
            codes.append(send(deliver.port, LAURA, "jose@gmail.com",
                              message(LAURA, "jose@gmail.com", f"lleno {i}", body), LAURA)[0])
            codes.append(send(held.port, LUIS, MARIA, message(LUIS, MARIA, f"viernes {i}", body), LUIS)[0])
        assert all(400 <= c < 500 for c in codes), codes  # the client keeps the message and retries
        assert maildir_files(maildir) == {"tmp": [], "new": maildir_files(maildir)["new"]}  # nothing half-written
        assert len(maildir_files(maildir)["new"]) == 1
        assert sink.messages == []  # no hold notice for a hold that was not stored
        filler.unlink()  # space again: the retries go through
        assert send(deliver.port, LAURA, "jose@gmail.com", message(LAURA, "jose@gmail.com", "otra vez", body),
                    LAURA)[0] == 250
        code, text = send(held.port, LUIS, MARIA, message(LUIS, MARIA, "viernes otra vez", body), LUIS)
        assert code == 250 and b"held by policy" in text
        for relay in (deliver, held):
            assert relay.proc is not None and relay.proc.poll() is None  # still running
            assert "Traceback" not in relay.log()
    finally:
        deliver.stop()
        held.stop()
        sink.stop()


# -- a next hop that misbehaves (Postfix's smtp-sink and its fault options) -----------------------

def start_smtp_sink(port: int, *options: str) -> subprocess.Popen[bytes]:
    user = ["-u", "postfix"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([SMTP_SINK, *user, *options, f"127.0.0.1:{port}", "64"])
    wait_port(port)
    return proc


@pytest.mark.skipif(not Path(SMTP_SINK).exists(), reason="smtp-sink comes with Postfix (./dev test installs it)")
@pytest.mark.parametrize("fault", [
    ["-r", "data"],                # 4xx to DATA
    ["-r", "rcpt"],                # 4xx to RCPT
    ["-q", "data"],                # hangs up at DATA, no reply
    ["-q", "."],                   # hangs up at the end of the message (mid-DATA for us)
    ["-A", "15", "-w", "30"],      # slow: far beyond the relay's upstream timeout
])
def test_next_hop_faults_mean_451_nothing_lost_no_bounce_and_recovery(tmp_path: Path, fault: list[str]) -> None:
    port = free_port()
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{port}", upstream_options={"timeout": 3})
    faulty = start_smtp_sink(port, *fault)
    relay.start()
    try:
        data = message(LAURA, "jose@gmail.com", "Reintento")
        code, text = send(relay.port, LAURA, "jose@gmail.com", data, LAURA)
        assert 400 <= code < 500, (code, text)  # the client keeps it: nothing lost, nothing bounced
        assert b"/" not in text.split(b" ", 1)[-1].replace(b"4.4.1", b"")  # no internal paths in the reply
        faulty.terminate()
        faulty.wait(10)
        good = Sink(port).start()
        try:
            code, _ = send(relay.port, LAURA, "jose@gmail.com", data, LAURA)  # the client's retry
            assert code == 250
            got = good.wait_for(1)
            time.sleep(0.5)
            assert len(good.messages) == 1 and got[0].rcpts == ["jose@gmail.com"]
            assert not any(b"X-Relay-Notice" in m.content for m in good.messages)  # no bounce to anybody
        finally:
            good.stop()
    finally:
        with contextlib.suppress(Exception):
            faulty.kill()
        relay.stop()
