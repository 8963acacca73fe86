"""Issue 26, the web queue in the real headless Chromium the suite already drives: search, pages,
bulk and single actions behind a confirmation, a sign-in that outlives a restart, and every page at
a phone's width (375 px) with nothing wider than the screen; screenshots kept for people to look at
(RELAY_SCREENSHOTS names a folder; the test's own temporary folder otherwise)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from relay.store import HoldState
from tests.e2e.harness import RelayProcess, Sink
from tests.e2e.test_admin_queue import held, put, state
from tests.e2e.test_admin_web import START, admin_relay
from tests.e2e.test_browser import CHROMEDRIVER, CHROMIUM, sign_in
from tests.e2e.test_browser import browser as chromium

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("RELAY_REQUIRE_BROWSER"),
                                reason="chromium and chromium-driver are installed by ./dev test")
P = "pasto.gov.co"
browser = chromium  # the suite's headless Chromium fixture


@pytest.fixture
def relay(tmp_path: Path, sink: Sink) -> Iterator[RelayProcess]:
    r = admin_relay(tmp_path, sink)
    yield r
    r.stop()


def base(relay: RelayProcess) -> str:
    return f"http://127.0.0.1:{relay.admin_port}"  # type: ignore[attr-defined]


def ids_shown(driver: object) -> list[str]:
    from selenium.webdriver.common.by import By

    return [r.get_attribute("data-id") for r in driver.find_elements(By.CSS_SELECTOR, "#holds tr.hold")]  # type: ignore[attr-defined]


def screenshot(driver: object, path: Path) -> None:
    """The whole page, below the fold too (Chromium's own capture, through the DevTools protocol)."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",  # type: ignore[attr-defined]
                                  {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))


def test_search_pages_and_bulk_approve_with_confirmation(browser: object, relay: RelayProcess) -> None:
    from selenium.webdriver.common.by import By

    driver: object = browser
    promos = put(relay, [held(f"P{n}", subject=f"Promoción seguros {n}") for n in range(3)], START)
    others = put(relay, [held(f"O{n:02d}", moderate=False) for n in range(10)], START + timedelta(minutes=1))
    sign_in(driver, base(relay))
    assert "13 mensajes" in driver.find_element(By.ID, "count").text  # type: ignore[attr-defined]
    driver.find_element(By.ID, "q").send_keys("seguros")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "run-search").click()  # type: ignore[attr-defined]
    driver.find_element(By.ID, "count")  # type: ignore[attr-defined]
    assert "3 mensajes coinciden" in driver.find_element(By.ID, "count").text  # type: ignore[attr-defined]
    assert sorted(ids_shown(driver)) == sorted(promos)
    for hold_id in promos[:2]:
        driver.find_element(By.ID, f"pick-{hold_id}").click()  # type: ignore[attr-defined]
    driver.find_element(By.ID, "bulk-approve").click()  # type: ignore[attr-defined]
    title = driver.find_element(By.ID, "confirm-title").text  # type: ignore[attr-defined]
    assert title == "Confirmar: aprobar 2 mensajes", title
    assert [state(relay, i) for i in promos] == [HoldState.MODERATION] * 3  # nothing done yet
    driver.find_element(By.ID, "confirm").click()  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "outcome").text == "2 de 2 mensajes aprobados"  # type: ignore[attr-defined]
    assert state(relay, promos[2]) is HoldState.MODERATION and state(relay, promos[0]) is not HoldState.MODERATION
    driver.find_element(By.ID, "back").click()  # type: ignore[attr-defined]  # back to the same search
    assert driver.find_element(By.ID, "q").get_attribute("value") == "seguros"  # type: ignore[attr-defined]
    driver.get(base(relay) + "/holds?por_pagina=10")  # type: ignore[attr-defined]
    assert "página 1 de 2" in driver.find_element(By.ID, "page-of").text  # type: ignore[attr-defined]
    first = ids_shown(driver)
    driver.find_element(By.ID, "next").click()  # type: ignore[attr-defined]
    assert "página 2 de 2" in driver.find_element(By.ID, "page-of").text  # type: ignore[attr-defined]
    assert sorted(first + ids_shown(driver)) == sorted(promos[2:] + others)  # the approved two left the list


def test_single_approve_and_delete_ask_first_in_the_browser(browser: object, relay: RelayProcess) -> None:
    from selenium.webdriver.common.by import By

    driver: object = browser
    [moderated, waiting] = put(relay, [held("S1"), held("S2", moderate=False)], START)
    sign_in(driver, base(relay), f"/holds/{moderated}")
    driver.find_element(By.ID, "approve").click()  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "confirm-title").text == "Confirmar: aprobar 1 mensaje"  # type: ignore[attr-defined]
    assert state(relay, moderated) is HoldState.MODERATION
    driver.find_element(By.ID, "confirm").click()  # type: ignore[attr-defined]
    assert "Aprobado" in driver.find_element(By.ID, "outcome").text  # type: ignore[attr-defined]
    driver.get(f"{base(relay)}/holds/{waiting}")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "delete").click()  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "confirm-title").text == "Confirmar: eliminar 1 mensaje"  # type: ignore[attr-defined]
    assert state(relay, waiting) is HoldState.WAITING
    driver.find_element(By.ID, "cancel").click()  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "delete")  # type: ignore[attr-defined]  # back on the message, still there
    assert state(relay, waiting) is HoldState.WAITING
    history = driver.find_element(By.ID, "history").text  # type: ignore[attr-defined]
    assert "retenido: retenido por horario" in history and "held" not in history


def test_a_sign_in_in_the_browser_outlives_a_restart(browser: object, relay: RelayProcess) -> None:
    from selenium.webdriver.common.by import By

    driver: object = browser
    [hold] = put(relay, [held("K1")], START)
    sign_in(driver, base(relay))
    assert ids_shown(driver) == [hold]
    relay.stop()
    relay.start()
    driver.get(base(relay) + "/holds")  # type: ignore[attr-defined]
    assert "Mensajes retenidos" in driver.title, driver.title  # type: ignore[attr-defined]  # not the sign-in page
    assert ids_shown(driver) == [hold]
    driver.find_element(By.ID, "logout").click()  # type: ignore[attr-defined]
    driver.get(base(relay) + "/holds")  # type: ignore[attr-defined]
    assert "Iniciar sesión" in driver.title  # type: ignore[attr-defined]


def test_every_page_fits_a_phone(browser: object, relay: RelayProcess, tmp_path: Path) -> None:
    """At 375 px (a phone), no page is wider than the screen: the list becomes cards, the summary
    one column; screenshots of each page are kept."""
    from selenium.webdriver.common.by import By

    driver: object = browser
    shots = Path(os.environ.get("RELAY_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    long_sender = f"comunicaciones.institucionales.despacho.del.alcalde@{P}"
    holds = put(relay, [held("PH1", sender=long_sender, subject="Promoción exclusiva: 40% de descuento en seguros"),
                        held("PH2", moderate=False, rcpt=f"secretaria.de.hacienda.y.finanzas.publicas@{P}"),
                        held("PH3", subject="Convocatoria_abierta_para_proveedores_sin_espacios_en_el_asunto")],
                START)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # type: ignore[attr-defined]
                           {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True})
    sign_in(driver, base(relay))
    pages = {"queue": "/holds", "search": "/holds?q=promo&motivo=moderate", "hold": f"/holds/{holds[0]}",
             "confirm": f"/holds/{holds[0]}/approve", "reject-one": f"/holds/{holds[2]}/reject",
             "not-found": "/holds/NO-EXISTE-1", "check": "/check", "bad-date": "/holds?desde=mañana"}
    for name, path in pages.items():
        driver.get(base(relay) + path)  # type: ignore[attr-defined]
        driver.find_element(By.TAG_NAME, "h1")  # type: ignore[attr-defined]
        width, view = driver.execute_script(  # type: ignore[attr-defined]
            "return [document.documentElement.scrollWidth, window.innerWidth]")
        screenshot(driver, shots / f"{name}-375.png")
        assert view == 375 and width <= view, f"{name}: {width}px wide on a {view}px screen"
    driver.get(base(relay) + "/holds")  # type: ignore[attr-defined]
    driver.find_element(By.ID, f"pick-{holds[0]}").click()  # type: ignore[attr-defined]
    driver.find_element(By.ID, f"pick-{holds[1]}").click()  # type: ignore[attr-defined]
    driver.find_element(By.ID, "bulk-delete").click()  # type: ignore[attr-defined]
    assert driver.find_element(By.ID, "confirm-title").text == "Confirmar: eliminar 2 mensajes"  # type: ignore[attr-defined]
    width = driver.execute_script("return document.documentElement.scrollWidth")  # type: ignore[attr-defined]
    screenshot(driver, shots / "bulk-confirm-375.png")
    assert width <= 375
    driver.get(base(relay) + "/holds/NO-EXISTE-1")  # type: ignore[attr-defined]  # a styled error with a way back
    assert driver.find_element(By.TAG_NAME, "h1").text == "No encontrado"  # type: ignore[attr-defined]
    header = driver.find_element(By.TAG_NAME, "header")  # type: ignore[attr-defined]
    assert header.value_of_css_property("background-color") == "rgba(0, 51, 102, 1)"  # the site's stylesheet
    driver.find_element(By.ID, "back").click()  # type: ignore[attr-defined]
    assert sorted(ids_shown(driver)) == sorted(holds)
