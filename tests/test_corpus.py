"""Real mail nobody here wrote: every message gets a JSON decision from `relay check`, never a traceback.

Corpora: CPython's own e-mail test data (test/test_email/data/msg_*.txt of the running Python) and
shared/corpora (MIME torture test, Enron, DKIM-signed mail).
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from relay.cli import main
from tests.helpers import INSTITUTIONS, POLICIES, SHARED

CPYTHON = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
CPYTHON_MSGS = sorted(CPYTHON.glob("msg_*.txt"))
SHARED_MSGS = sorted(p for p in (SHARED / "corpora").rglob("*") if p.suffix in (".eml", ".txt", "")
                     and p.is_file() and p.name not in ("README.md", "LICENSE-NOTE.txt"))


def test_cpython_corpus_is_present() -> None:
    assert len(CPYTHON_MSGS) > 40, f"CPython's e-mail test corpus not found under {CPYTHON}"


@pytest.mark.parametrize("path", CPYTHON_MSGS + SHARED_MSGS, ids=lambda p: p.name)
@pytest.mark.parametrize("direction", ["staff", "inbound"])
def test_relay_check_decides(path: Path, direction: str, capsys: pytest.CaptureFixture[str]) -> None:
    env = (["--auth", "laura.pinto@barrancabermeja.gov.co", "--mail-from", "laura.pinto@barrancabermeja.gov.co"]
           if direction == "staff" else ["--client-ip", "192.0.2.1", "--mail-from", "someone@example.org"])
    code = main(["check", "--policy", str(POLICIES / "barrancabermeja.yaml"), "--directory",
                 str(INSTITUTIONS / "barrancabermeja.yaml"), "--at", "2026-11-24T10:00:00-05:00", *env,
                 "--rcpt", "funcionarios@barrancabermeja.gov.co", "--rcpt", "x@example.org", "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    decision = json.loads(out)
    assert decision["verdict"] in ("deliver", "hold", "moderate", "reject")
    assert decision["smtp_reply"][:3].isdigit()
