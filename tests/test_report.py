"""The compliance report (relay.report): figures from a store filled through the real disposition
path (relay.dispose, the milter's MtaDelivers), on both store backends; the `relay report` command
in each format; the directory's `department`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from relay import report
from relay.clock import FixedClock
from relay.config import RelayConfig
from relay.directory import FileDirectory, Person, load_directory
from relay.dispose import Disposer, MtaDelivers, Rules, Submitted
from relay.store import SocialAccount, SqliteStore, Store
from relay.store.postgres import PostgresStore
from tests.helpers import POLICIES, ROOT, pack
from tests.report_day import (
    CAMILO,
    DEPARTMENTS,
    IN_NOVEMBER,
    JORGE,
    LUIS,
    MARIA,
    MONTH,
    SOFIA,
    URGENT_REASON,
    at,
    write_directory,
)
from tests.test_scheduler import FakeUpstream

BOGOTA = ZoneInfo("America/Bogota")
TH, SG = DEPARTMENTS[SOFIA], DEPARTMENTS[LUIS]


def dispose_month(store: Store, folk: FileDirectory) -> list[str]:
    """Every message of the month through Disposer.dispose, as the milter hands it over; the queue ids."""
    clock = FixedClock(at(MONTH[0]))
    disposer = Disposer(RelayConfig(policy="p", directory="d"), Rules(pack("cancilleria"), folk, None, None), clock,
                        store, FakeUpstream())  # type: ignore[arg-type]
    ids = []

    async def run() -> None:
        for n, mail in enumerate(MONTH):
            clock.set(at(mail))
            queue_id = f"R{n:03d}"
            await disposer.dispose(Submitted(queue_id, mail.mail_from, mail.rcpts, mail.content(n), mail.login,
                                             "10.50.1.20", "pc.cancilleria.gov.co"), MtaDelivers())
            ids.append(queue_id)

    asyncio.run(run())
    for day in (3, 10, 20):  # three sign-up messages of one account (what relay.dispose.record stores)
        seen = datetime(2026, 11, day, 15, 0, tzinfo=UTC)
        store.record_accounts([SocialAccount("Facebook", "prensa@cancilleria.gov.co", "service", seen, seen)])
    return ids


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = SqliteStore(tmp_path / "s.sqlite3") if request.param == "sqlite" else \
        PostgresStore(request.getfixturevalue("pg_url"))
    yield made
    made.close()


def november(store: Store, folk: FileDirectory, office: str | None = None) -> report.Report:
    period = report.Period.month("2026-11", BOGOTA)
    return report.report_for(store, folk, period, report.pack_rules(pack("cancilleria")), office)


def test_the_month_in_figures(store: Store, tmp_path: Path) -> None:
    folk = load_directory(write_directory(tmp_path))
    dispose_month(store, folk)
    audit = store.query_audit(limit=100)
    assert [e.verdict for e in audit] == [m.expect for m in MONTH]  # the scenario is what it says
    r = november(store, folk)
    assert r.period == "2026-11" and r.zone == "America/Bogota" and r.start == "2026-11-01T00:00:00-05:00"
    assert r.messages == len(IN_NOVEMBER)  # December's message is not in November
    assert r.verdicts == {**dict.fromkeys(report.VERDICTS, 0), **Counter(m.expect for m in IN_NOVEMBER)}
    rules = {x.rule: x for x in r.rules}
    assert rules["send-as-self-or-delegate"].counts["reject"] == 2
    disconnect = rules["right-to-disconnect"]
    assert (disconnect.counts["hold"], disconnect.counts["deliver"], disconnect.kind) == (2, 1, "disconnect")
    assert "2191" in disconnect.cites  # the circular and numeral cited
    # every rule hit of the trail is in the table once (the report adds nothing, loses nothing)
    hits = Counter((h[0], report._action(h[2])) for e in audit[:-1] for h in e.rules)
    assert {(x.rule, a): n for x in r.rules for a, n in x.counts.items() if n} == dict(hits)
    offices = {o.office: o for o in r.offices}
    assert set(offices) == {TH, SG, report.NO_OFFICE}
    assert offices[TH].messages == 5 and offices[TH].verdicts["reject"] == 2 and offices[TH].verdicts["hold"] == 2
    assert offices[SG].messages == 1 and offices[report.NO_OFFICE].messages == 1  # camilo has no department
    days = {d.day: d for d in r.days}
    assert len(days) == 30 and days["2026-11-24"].verdicts["reject"] == 1 and days["2026-11-25"].verdicts["reject"] == 1
    assert days["2026-11-27"].messages == 4 and days["2026-11-27"].verdicts["hold"] == 2
    assert sum(d.messages for d in r.days) == r.messages == sum(w.messages for w in r.weeks)
    assert [w.week for w in r.weeks][-2:] == ["2026-W48", "2026-W49"] and r.weeks[-2].messages == 7
    dc = r.disconnect
    assert (dc.held_messages, dc.held_recipients) == (2, 3)  # Nómina: María and Jorge (Madrid) held
    [sender] = dc.senders
    assert (sender.sender, sender.office, sender.messages, sender.recipients) == (SOFIA, TH, 2, 3)
    [urgent] = dc.overrides
    assert (urgent.declared_by, urgent.reason, urgent.office, urgent.recipients) == (LUIS, URGENT_REASON, SG, [MARIA])
    assert urgent.at == "2026-11-27T22:00:00-05:00"
    [exempt] = dc.exemptions
    assert (exempt.sender, exempt.recipients, exempt.office) == (SOFIA, [LUIS], TH)
    assert "direccion_confianza_manejo" in exempt.roles
    assert r.moderation.copies == {"hold": 3, "moderate": 0} and r.moderation.open == 3
    [row] = r.inventory
    assert list(row) == report.INVENTORY_COLUMNS and row["correo_institucional_asociado"] == "prensa@cancilleria.gov.co"
    assert row["red_social"] == "Facebook" and row["mensajes"] == 3 and row["tipo_buzon"] == "servicio"
    assert row["primera_vez_visto"] == "2026-11-03T10:00:00-05:00"
    assert row["ultima_vez_visto"] == "2026-11-20T10:00:00-05:00"


def test_an_office_alone_and_a_withdrawal(store: Store, tmp_path: Path) -> None:
    folk = load_directory(write_directory(tmp_path))
    ids = dispose_month(store, folk)
    held = store.list_holds(report.HoldFilter(queue_id=ids[3]))
    store.withdraw(held[0].id, datetime(2026, 11, 28, 9, 0, tzinfo=UTC), SOFIA)
    r = november(store, folk, TH)
    assert r.office == TH and r.messages == 5 and [o.office for o in r.offices] == [TH]
    assert r.disconnect.overrides == [] and len(r.disconnect.exemptions) == 1  # luis's urgency is another office
    assert r.moderation.decisions["withdrawn"] == 1 and r.moderation.open == 2
    assert november(store, folk, "Oficina que no existe").messages == 0


def test_a_month_must_be_a_month() -> None:
    for bad in ("2026-13", "2026-1", "noviembre", "2026-11-01", ""):
        with pytest.raises(report.ReportError, match="YYYY-MM"):
            report.Period.month(bad, BOGOTA)
    feb = report.Period.month("2028-02", BOGOTA)
    assert (feb.first.day, feb.last.day, feb.label) == (1, 29, "2028-02")
    assert report.Period.month("2026-12", BOGOTA).end == datetime(2027, 1, 1, tzinfo=BOGOTA)


def test_the_department_is_optional_in_the_directory(tmp_path: Path) -> None:
    folk = load_directory(write_directory(tmp_path))
    entry = folk.find(SOFIA.upper())
    assert isinstance(entry, Person) and entry.department == TH
    assert report.office_of(folk, CAMILO) == report.NO_OFFICE
    assert report.office_of(folk, "alguien@gmail.com") == report.OUTSIDE
    assert report.office_of(folk, JORGE) == "Consulado en Madrid"


def test_the_html_page_is_self_contained_and_marks_every_figure(tmp_path: Path) -> None:
    folk = load_directory(write_directory(tmp_path))
    store = SqliteStore(tmp_path / "s.sqlite3")
    dispose_month(store, folk)
    r = november(store, folk)
    store.close()
    page = report.report_html(r)
    assert "<script" not in page.lower() and "http://" not in page.replace("http://www.w3.org/", "")
    assert "https://" not in page and "<link" not in page  # nothing fetched: opens offline
    assert ' style="' not in page  # a strict CSP (the admin page's) blocks style attributes
    assert page.count("<svg") == 3 and "Informe de cumplimiento · noviembre de 2026" in page
    assert URGENT_REASON in page and "Ley 2191 de 2022" in page and "Circular 004 de 2024" in page
    shown = {k: int(v) for k, v in re.findall(r'data-figure="([^"]+)">(\d+)<', page)}
    expected = report.figures(report.report_json(r))
    assert shown == expected, set(shown) ^ set(expected)


# -- `relay report`, the real command ----------------------------------------------------------------

def relay_report(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", "report", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.fixture
def deployed(tmp_path: Path) -> tuple[Path, report.Report]:
    """A relay's config and store, filled; and the report computed in-process to compare with."""
    folk_path = write_directory(tmp_path)
    config = tmp_path / "relay.yaml"
    config.write_text(yaml.safe_dump({"policy": str(POLICIES / "cancilleria.yaml"), "directory": str(folk_path),
                                      "store": f"sqlite:{tmp_path / 'relay.sqlite3'}"}), encoding="utf-8")
    store = SqliteStore(tmp_path / "relay.sqlite3")
    folk = load_directory(folk_path)
    dispose_month(store, folk)
    expected = november(store, folk)
    store.close()
    return config, expected


def csv_figures(text: str) -> dict[str, int]:
    """The `figures` keys read back from the long CSV (section, item, detail, metric, value)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and list(rows[0]) == report.CSV_COLUMNS
    out: dict[str, int] = {}
    section_key = {"rule": "rules", "office": "offices", "day": "days", "week": "weeks"}
    for row in rows:
        s, item, metric, value = row["section"], row["item"], row["metric"], row["value"]
        if s == "summary":
            out["messages" if metric == "messages" else f"verdicts.{metric}"] = int(value)
        elif s in section_key:
            out[f"{section_key[s]}.{item}.{metric}"] = int(value)
        elif s == "disconnect":
            out[f"disconnect.{metric}"] = int(value)
        elif s == "off_hours":
            out[f"disconnect.senders.{item}.{metric}"] = int(value)
        elif s == "moderation":
            out[f"moderation.{item}.{metric}" if item != "open" else "moderation.open"] = int(value)
    out["inventory.accounts"] = len({row["item"] for row in rows if row["section"] == "inventory"})
    return out


def test_relay_report_in_each_format(deployed: tuple[Path, report.Report], tmp_path: Path) -> None:
    config, expected = deployed
    done = relay_report(config, "--month", "2026-11", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data == report.report_json(expected)
    assert isinstance(data["messages"], int) and data["messages"] == 7  # numbers as numbers
    done = relay_report(config, "--month", "2026-11", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert csv_figures(done.stdout) == report.figures(data)
    assert f"override,R006,2026-11-27T22:00:00-05:00,reason,{URGENT_REASON}" in done.stdout.replace("\r\n", "\n")
    out = tmp_path / "informe.html"
    done = relay_report(config, "--month", "2026-11", "--output", str(out))  # html is the default
    assert done.returncode == 0 and "7 message(s)" in done.stderr, done.stderr
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "<svg" in page and "<script" not in page
    assert {k: int(v) for k, v in re.findall(r'data-figure="([^"]+)">(\d+)<', page)} == report.figures(data)
    done = relay_report(config, "--month", "2026-11", "--format", "json", "--office", TH)
    assert json.loads(done.stdout)["messages"] == 5


def test_relay_report_says_what_is_wrong(deployed: tuple[Path, report.Report], tmp_path: Path) -> None:
    config, _ = deployed
    done = relay_report(config, "--month", "2026-13")
    assert done.returncode == 2 and "YYYY-MM" in done.stderr and "Traceback" not in done.stderr
    done = relay_report(config, "--month", "2026-11", "--format", "pdf")
    assert done.returncode == 2 and "invalid choice" in done.stderr
    done = relay_report(tmp_path / "missing.yaml", "--month", "2026-11")
    assert done.returncode != 0 and "Traceback" not in done.stderr and done.stderr.strip()
