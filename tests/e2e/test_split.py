"""Split delivery (a sensitive notice rewritten into one copy per recipient): nothing lost."""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import PASSWORD, RelayProcess, Sink
from tests.helpers import POLICIES

P = "pasto.gov.co"
SENDER, LOGIN = f"talento.humano@{P}", f"diana.erazo@{P}"
RCPTS = [f"jorge.benavides@{P}", f"lucia.ortega@{P}", f"mario.rosero@{P}"]
DEBT = (f"From: Talento Humano <{SENDER}>\r\nTo: {', '.join(RCPTS)}\r\n"
        "Subject: Notificacion de deuda pendiente con el fondo de empleados\r\n\r\n"
        "Se les notifica que presentan saldos en mora con el fondo de empleados.\r\n").encode()


@pytest.fixture
def relay_options(tmp_path: Path) -> dict[str, Any]:
    # Pasto's pack with the sensitive-notice rule set to split instead of refuse.
    data = yaml.safe_load((POLICIES / "pasto.yaml").read_text(encoding="utf-8"))
    for rule in data["rules"]:
        if rule["id"] == "sensitive-notice-individual":
            rule["action"] = "rewrite"
    (tmp_path / "pasto-split.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return {"pack": "pasto", "extra_logins": (LOGIN,), "policy": str(tmp_path / "pasto-split.yaml")}


def send(relay: RelayProcess) -> None:
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as smtp:
        smtp.login(LOGIN, PASSWORD)
        smtp.sendmail(SENDER, RCPTS, DEBT)


def test_each_copy_shows_only_its_recipient(relay: RelayProcess, sink: Sink) -> None:
    send(relay)
    got = sink.wait_for(3)
    assert sorted(r for m in got for r in m.rcpts) == sorted(RCPTS)
    for m in got:
        to_line = next(line for line in m.content.split(b"\r\n") if line.lower().startswith(b"to:"))
        assert to_line.decode().split(":", 1)[1].strip() == m.rcpts[0]


def test_a_temporary_failure_of_one_copy_makes_the_client_retry(relay: RelayProcess, sink: Sink) -> None:
    sink.handler.fail_data[RCPTS[1]] = "451 4.3.0 try later"
    with pytest.raises(smtplib.SMTPDataError) as info:
        send(relay)
    assert info.value.smtp_code == 451  # never 250 while a copy is undelivered
    assert [m.rcpts for m in sink.messages] == [[RCPTS[0]]]  # the first copy went out already
    sink.handler.fail_data.clear()
    send(relay)  # the client retries
    got = sink.wait_for(4)
    assert sorted(r for m in got for r in m.rcpts) == sorted([RCPTS[0], *RCPTS])  # one duplicate, no loss
