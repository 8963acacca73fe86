"""A month of Cancillería mail for the compliance report's tests: the messages, the directory with
offices (`department`), and what each figure must then be (from the scenario, not from the code)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from tests.helpers import INSTITUTIONS

C = "cancilleria.gov.co"
LUIS, MARIA, SOFIA, JORGE, CAMILO = (f"{n}@{C}" for n in ("luis.fernandez", "maria.lopez", "sofia.vargas",
                                                          "jorge.ramirez", "camilo.reyes"))
DEPARTMENTS = {LUIS: "Secretaría General", SOFIA: "Dirección de Talento Humano", MARIA: "Dirección de Talento Humano",
               JORGE: "Consulado en Madrid"}  # camilo has none: "(sin dependencia)"
URGENT_REASON = "Emergencia consular en curso"


@dataclass(frozen=True)
class Mail:
    at: str
    login: str
    mail_from: str
    rcpts: tuple[str, ...]
    subject: str
    expect: str  # the verdict the scenario is about

    def content(self, n: int) -> bytes:
        return (f"From: {self.mail_from}\r\nTo: {', '.join(self.rcpts)}\r\nSubject: {self.subject}\r\n"
                f"Message-ID: <report-{n}@{C}>\r\n\r\nPor favor revisar el documento.\r\n").encode()


MONTH = (
    Mail("2026-11-24T10:00:00-05:00", SOFIA, JORGE, (MARIA,), "Como Jorge", "reject"),  # send-as
    Mail("2026-11-25T10:00:00-05:00", SOFIA, JORGE, (MARIA,), "Otra vez como Jorge", "reject"),
    Mail("2026-11-26T10:00:00-05:00", CAMILO, CAMILO, (MARIA,), "Contrato", "deliver"),
    Mail("2026-11-27T20:00:00-05:00", SOFIA, SOFIA, (MARIA,), "Informe semanal", "hold"),  # Friday night
    Mail("2026-11-27T20:05:00-05:00", SOFIA, SOFIA, (MARIA, JORGE), "Nómina", "hold"),  # two zones: 2 copies
    Mail("2026-11-27T21:00:00-05:00", SOFIA, SOFIA, (LUIS,), "Para el secretario", "deliver"),  # exempt role
    Mail("2026-11-27T22:00:00-05:00", LUIS, LUIS, (MARIA,), f"[URGENTE] {URGENT_REASON}", "deliver"),
    Mail("2026-12-01T10:00:00-05:00", SOFIA, SOFIA, (MARIA,), "Diciembre", "deliver"),  # not in November
)
IN_NOVEMBER = MONTH[:-1]


def write_directory(folder: Path) -> Path:
    """The acceptance fixture's Cancillería, with offices."""
    data = yaml.safe_load((INSTITUTIONS / "cancilleria.yaml").read_text(encoding="utf-8"))
    for person in data["people"]:
        if person["address"] in DEPARTMENTS:
            person["department"] = DEPARTMENTS[person["address"]]
    path = folder / "cancilleria.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def at(mail: Mail) -> datetime:
    return datetime.fromisoformat(mail.at)
