"""Issue 27, the message trace on the web (/trace) in the real headless Chromium: searched by sender,
recipient, Message-ID, queue id and local dates, paged, each message's life as a timeline in Spanish,
the same messages as GET /api/v1/trace; it fits a phone. Issue 26: a bulk action on every hold that
matches the search (not just the page), through the confirmation page with the count shown first."""

from __future__ import annotations

import json
import os
import smtplib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from relay.store import HoldState
from tests.e2e.harness import PASSWORD, RelayProcess, Sink
from tests.e2e.test_admin_queue import held, put, state
from tests.e2e.test_admin_web import START, admin_relay
from tests.e2e.test_browser import CHROMEDRIVER, CHROMIUM, sign_in
from tests.e2e.test_browser import browser as chromium
from tests.e2e.test_browser_queue import base, ids_shown, screenshot
from tests.e2e.test_queue_tools import EDUARDO, PROMO, RCPTS, relay_cli

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("RELAY_REQUIRE_BROWSER"),
                                reason="chromium and chromium-driver are installed by ./dev test")
P = "pasto.gov.co"
browser = chromium


@pytest.fixture
def relay(tmp_path: Path, sink: Sink) -> Iterator[RelayProcess]:
    r = admin_relay(tmp_path, sink)
    yield r
    r.stop()


def send(relay: RelayProcess, message_id: str, rcpts: list[str]) -> None:
    raw = PROMO.replace(b"Subject:", f"Message-ID: <{message_id}>\r\nSubject:".encode(), 1)
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as smtp:
        smtp.login(EDUARDO, PASSWORD)
        assert smtp.sendmail(EDUARDO, rcpts, raw) == {}


def shown(driver: object) -> list[str]:
    from selenium.webdriver.common.by import By

    return [s.get_attribute("data-queue-id") for s in driver.find_elements(By.CSS_SELECTOR, "section.trace")]  # type: ignore[attr-defined]


def test_the_trace_page_searches_pages_and_tells_each_life(browser: object, relay: RelayProcess, sink: Sink,
                                                           tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver: object = browser
    send(relay, "uno@pasto.gov.co", RCPTS)
    send(relay, "dos@pasto.gov.co", RCPTS[:1])
    sink.wait_for(4)  # the two moderation requests (and their copies)
    listed = relay_cli(relay, "queue", "list", "--reason", "moderate", "--json")
    hold = next(h for h in json.loads(listed.stdout) if len(h["recipients"]) == 2)  # "uno", to both
    assert relay_cli(relay, "queue", "approve", str(hold["id"]), "--by", "yanet.bastidas").returncode == 0
    cli = relay_cli(relay, "trace", "--json")
    lives = {t["message_id"]: t for t in json.loads(cli.stdout)}
    assert set(lives) == {"uno@pasto.gov.co", "dos@pasto.gov.co"}

    sign_in(driver, base(relay), "/trace")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Rastreo de mensajes"  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "count").text.startswith("2 mensajes")  # type: ignore[attr-defined]
    assert shown(driver) == [lives["dos@pasto.gov.co"]["queue_id"], lives["uno@pasto.gov.co"]["queue_id"]]
    # by recipient: only the message to both
    driver.find_element(By.ID, "t-recipient").send_keys(RCPTS[1].upper())  # type: ignore[attr-defined]
    driver.find_element(By.ID, "run-trace").click()  # type: ignore[attr-defined]
    driver.find_element(By.ID, "count")  # type: ignore[attr-defined]
    assert "1 mensaje coincide" in driver.find_element(By.ID, "count").text  # type: ignore[attr-defined]
    [queue_id] = shown(driver)
    assert queue_id == lives["uno@pasto.gov.co"]["queue_id"]
    # its timeline in Spanish, in the institution's time, with the zone's name
    items = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "li.event")]  # type: ignore[attr-defined]
    assert items[0].endswith("— recibido desde 127.0.0.1 como " + EDUARDO + ", 2 destinatario(s)"), items
    assert "(America/Bogota)" in items[0] and "-05" in items[0]
    assert "decidido: requiere aprobación" in items[1] and "commercial" in items[1]
    assert hold["queue_id"] == queue_id and any("aprobado por yanet.bastidas" in i for i in items), items
    assert any("aviso «moderation-request» enviado a" in i for i in items), items
    # by Message-ID, queue id and local dates
    for path, want in ((f"/trace?message_id=%3Cdos@{P}%3E", ["dos"]), (f"/trace?cola={queue_id}", ["uno"]),
                       ("/trace?desde=2026-11-24&hasta=2026-11-24", ["dos", "uno"]),
                       ("/trace?desde=2026-11-25", [])):
        driver.get(base(relay) + path)  # type: ignore[attr-defined]
        driver.find_element(By.TAG_NAME, "h1")  # type: ignore[attr-defined]
        assert shown(driver) == [lives[f"{w}@{P}"]["queue_id"] for w in want], path
    assert driver.find_element(By.ID, "empty").text.startswith("Ningún mensaje coincide")  # type: ignore[attr-defined]
    driver.get(base(relay) + "/trace?desde=mañana")  # type: ignore[attr-defined]
    assert "no es una fecha" in driver.find_element(By.ID, "error").text  # type: ignore[attr-defined]
    # a page at a time
    driver.get(base(relay) + "/trace?por_pagina=1")  # type: ignore[attr-defined]
    assert "página 1 de 2" in driver.find_element(By.ID, "page-of").text  # type: ignore[attr-defined]
    first = shown(driver)
    driver.find_element(By.ID, "next").click()  # type: ignore[attr-defined]
    assert "página 2 de 2" in driver.find_element(By.ID, "page-of").text  # type: ignore[attr-defined]
    assert shown(driver) != first and len(shown(driver)) == 1
    # on a phone: nothing wider than the screen
    shots = Path(os.environ.get("RELAY_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # type: ignore[attr-defined]
                           {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True})
    driver.get(base(relay) + "/trace")  # type: ignore[attr-defined]
    driver.find_element(By.TAG_NAME, "h1")  # type: ignore[attr-defined]
    width = driver.execute_script("return document.documentElement.scrollWidth")  # type: ignore[attr-defined]
    screenshot(driver, shots / "trace-375.png")
    assert width <= 375, width
    # signed out: the page asks for a sign-in first
    driver.delete_all_cookies()  # type: ignore[attr-defined]
    driver.get(base(relay) + "/trace")  # type: ignore[attr-defined]
    assert "Iniciar sesión" in driver.title  # type: ignore[attr-defined]


def test_a_bulk_action_on_everything_the_search_matches(browser: object, relay: RelayProcess) -> None:
    """Issue 26: «todos los que coinciden» takes every hold the search matches, on every page, to the
    confirmation page (the count shown, nothing done yet); confirmed, all of them and no other."""
    from selenium.webdriver.common.by import By

    driver: object = browser
    promos = put(relay, [held(f"S{n:02d}", subject=f"Promoción seguros {n}") for n in range(12)], START)
    others = put(relay, [held(f"X{n}", subject="Oferta de papelería") for n in range(3)],
                 START + timedelta(minutes=1))
    sign_in(driver, base(relay), "/holds?q=seguros&por_pagina=5")
    assert "12 mensajes coinciden" in driver.find_element(By.ID, "count").text  # type: ignore[attr-defined]
    assert len(ids_shown(driver)) == 5
    label = driver.find_element(By.CSS_SELECTOR, "label.all").text  # type: ignore[attr-defined]
    assert "todos los 12 mensajes que coinciden" in label and "todas las páginas" in label, label
    driver.find_element(By.ID, "select-all").click()  # type: ignore[attr-defined]
    driver.find_element(By.ID, "bulk-approve").click()  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "confirm-title").text == "Confirmar: aprobar 12 mensajes"  # type: ignore[attr-defined]
    assert "12 mensajes" in driver.find_element(By.ID, "everything").text  # type: ignore[attr-defined]
    listed = [r.get_attribute("data-id") for r in driver.find_elements(By.CSS_SELECTOR, "tr.selected")]  # type: ignore[attr-defined]
    assert sorted(listed) == sorted(promos)
    assert {state(relay, i) for i in promos} == {HoldState.MODERATION}  # nothing done before the confirmation
    driver.find_element(By.ID, "confirm").click()  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "outcome").text == "12 de 12 mensajes aprobados"  # type: ignore[attr-defined]
    assert HoldState.MODERATION not in {state(relay, i) for i in promos}
    assert {state(relay, i) for i in others} == {HoldState.MODERATION}
    # without the box, only the ticked ones; a search matching nothing cannot be acted on
    driver.get(base(relay) + "/holds?q=papeler%C3%ADa")  # type: ignore[attr-defined]
    driver.find_element(By.ID, f"pick-{others[0]}").click()  # type: ignore[attr-defined]
    driver.find_element(By.ID, "bulk-delete").click()  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "confirm-title").text == "Confirmar: eliminar 1 mensaje"  # type: ignore[attr-defined]
