"""The moderation lifecycle in a running relay, through the real `relay` command and over real
HTTP: the sender withdraws a held message through the signed link of the "held" notice; who
decided and when shows in `relay queue list/show` and the web pages; a second decision says
who already decided, when, in Spanish; a deleted hold tells its sender."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import RelayProcess, Sink
from tests.e2e.test_admin_web import admin_relay, client, moderation_links, notice_text, signed_in
from tests.e2e.test_queue_tools import EDUARDO, moderated, originals, relay_cli, send_promo

WHEN = r"el martes 24 de noviembre de 2026 a las \d\d:\d\d \(America/Bogota, UTC-05:00\)"


@pytest.fixture
def relay(tmp_path: Path, sink: Sink) -> Iterator[RelayProcess]:
    r = admin_relay(tmp_path, sink)
    yield r
    r.stop()


def withdraw_link(sink: Sink) -> str:
    sink.wait_for(2)
    held = next(m for m in sink.messages if b"X-Relay-Notice: moderation\r\n" in m.content)
    assert held.rcpts == [EDUARDO]
    [path] = re.findall(r"Retirar \S+: http://127\.0\.0\.1:\d+(/w/\S+)", notice_text(held.content))
    return str(path)


def test_the_sender_withdraws_through_the_link_in_the_held_notice(relay: RelayProcess, sink: Sink) -> None:
    send_promo(relay)
    hold = moderated(relay)
    path = withdraw_link(sink)
    c = client(relay)  # the sender has no admin account: the signed link is their authority
    page = c.get(path)
    assert page.status == 200 and "Retirar su mensaje" in page.text and str(hold["id"]) in page.text
    assert moderated(relay)["state"] == "moderation"  # opening the link (a mail scanner may) changes nothing
    token = path.removeprefix("/w/")
    assert c.get(f"/w/{token[:-3]}xyz").status == 403  # tampered
    assert c.get(f"/m/{token}").status == 403  # not a moderator's link
    assert c.post(path, {}, headers={"Origin": "http://evil.example"}).status == 403
    done = c.post(path, {})
    assert done.status == 200 and "Mensaje retirado" in done.text
    shown = relay_cli(relay, "queue", "show", str(hold["id"]))
    assert "withdrawn" in shown.stdout and f"retirado por {EDUARDO} (remitente, enlace) " in shown.stdout
    got = sink.wait_for(3)
    confirmation = next(m for m in got if b"X-Relay-Notice: hold-withdrawn" in m.content)
    assert confirmation.rcpts == [EDUARDO] and "no se entregará" in notice_text(confirmation.content)
    again = c.post(path, {})
    assert again.status == 409 and re.search("ya fue retirado por " + re.escape(EDUARDO) + ".*" + WHEN, again.text)
    late = signed_in(relay).get(moderation_links(sink)["approve"])  # the moderator comes too late
    assert late.status == 200 and 'id="already"' in late.text and "retirado por" in late.text
    assert originals(sink) == []


def test_who_decided_and_when_in_list_show_web_and_a_second_attempt(relay: RelayProcess, sink: Sink) -> None:
    send_promo(relay)
    hold = moderated(relay)
    assert relay_cli(relay, "queue", "approve", str(hold["id"]), "--by", "yanet.bastidas").returncode == 0
    sink.wait_for(4)
    listing = relay_cli(relay, "queue", "list", "--all")
    assert listing.returncode == 0, listing.stderr
    assert "DECIDED" in listing.stdout and re.search(r"approved by yanet\.bastidas 2026-11-24 \d\d:\d\d -05",
                                                      listing.stdout), listing.stdout
    data = next(h for h in json.loads(relay_cli(relay, "queue", "list", "--all", "--json").stdout)
            if h["id"] == hold["id"])
    assert data["decision"] == "approved" and data["decided_by"] == "yanet.bastidas"
    assert data["decided_at"].startswith("2026-11-24T")
    shown = relay_cli(relay, "queue", "show", str(hold["id"]))
    assert re.search("aprobado por yanet.bastidas " + WHEN, shown.stdout), shown.stdout
    second = relay_cli(relay, "queue", "approve", str(hold["id"]))
    assert second.returncode == 5 and "Traceback" not in second.stderr
    assert re.search("ya fue aprobado por yanet.bastidas " + WHEN, second.stderr), second.stderr
    assert "is delivered" not in second.stderr
    c = signed_in(relay)
    rows = c.get("/holds?todos=1")
    assert rows.status == 200 and "aprobado por yanet.bastidas el martes 24 de noviembre" in rows.text
    page = c.get(f"/holds/{hold['id']}")
    assert 'id="decided"' in page.text and "aprobado por yanet.bastidas" in page.text
    web_again = c.post(f"/holds/{hold['id']}/reject", {"csrf": page.field("csrf"), "reason": "tarde"})
    assert web_again.status == 409 and "ya fue aprobado por yanet.bastidas el martes 24" in web_again.text
    assert "delivered" not in web_again.text


def test_a_deleted_hold_tells_its_sender(relay: RelayProcess, sink: Sink) -> None:
    send_promo(relay)
    hold = moderated(relay)
    sink.wait_for(2)
    assert relay_cli(relay, "queue", "delete", str(hold["id"]), "--by", "ops").returncode == 0
    got = sink.wait_for(3)
    told = next(m for m in got if b"X-Relay-Notice: hold-deleted" in m.content)
    assert told.rcpts == [EDUARDO] and "fue eliminado" in notice_text(told.content)


def test_the_moderation_request_carries_the_original_and_what_to_decide_on(relay: RelayProcess, sink: Sink) -> None:
    import email
    import email.policy

    send_promo(relay)
    sink.wait_for(2)
    raw = next(m for m in sink.messages if b"X-Relay-Notice: moderation-request" in m.content).content
    request = email.message_from_bytes(raw, policy=email.policy.default)
    assert request.get_content_type() == "multipart/mixed" and request["Auto-Submitted"] == "auto-generated"
    text = request.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Destinatarios (2): jorge.benavides@pasto.gov.co, lucia.ortega@pasto.gov.co" in text
    assert "Extracto del mensaje:" in text and "Por qué se retuvo:" in text
    [attached] = [p for p in request.iter_attachments() if p.get_content_type() == "message/rfc822"]
    original = attached.get_content()
    assert original["Subject"].startswith("Promocion exclusiva") and original["From"] == EDUARDO
    held = next(m for m in sink.messages if b"X-Relay-Notice: moderation\r\n" in m.content)
    assert b"message/rfc822" not in held.content  # only the moderator gets the original


def test_queue_list_shows_one_zone_and_sorts_by_absolute_time(tmp_path: Path) -> None:
    """A Tokyo 09:00 (00:00 UTC) comes before a Bogotá 08:00 (13:00 UTC) and both read in the
    institution's zone with its name: through the real `relay` command."""
    import os
    import subprocess
    import sys
    from datetime import datetime

    from relay.store import NewHold, SqliteStore
    from tests.helpers import INSTITUTIONS, POLICIES, ROOT

    config = tmp_path / "relay.yaml"
    config.write_text(f"policy: {POLICIES / 'pasto.yaml'}\ndirectory: {INSTITUTIONS / 'pasto.yaml'}\n"
                      f"store: sqlite:{tmp_path / 'relay.db'}\n", encoding="utf-8")
    store = SqliteStore(tmp_path / "relay.db")
    bogota = datetime.fromisoformat("2026-11-30T08:00:00-05:00")
    tokyo = datetime.fromisoformat("2026-11-30T09:00:00+09:00")
    for queue_id, due in (("BOG", bogota), ("TYO", tokyo)):
        store.add_holds([NewHold(queue_id, "hold", EDUARDO, (f"x@{queue_id.lower()}.example",), b"Subject: s\r\n\r\n",
                                 due, ("right-to-disconnect",), ("Ley 2088 de 2021",), "s", EDUARDO,
                                 deliver_at_local=due.isoformat())],
                        datetime.fromisoformat("2026-11-27T20:00:00-05:00"))
    store.close()
    done = subprocess.run([sys.executable, "-m", "relay", "queue", "list", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(("BOG", "TYO"))]
    assert [r[:3] for r in rows] == ["TYO", "BOG"]
    assert "2026-11-29 19:00 -05 (America/Bogota)" in rows[0] and "2026-11-30 08:00 -05 (America/Bogota)" in rows[1]
