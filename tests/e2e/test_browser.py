"""The moderation pages in a real headless Chromium (Debian's chromium + chromium-driver, via
Selenium): a moderator signs in, approves a held message, and it reaches the sink; another
follows a notice's refuse link and the sender gets the reason."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import RelayProcess, Sink
from tests.e2e.test_admin_web import MOD_PASSWORD, MODERATOR, admin_relay, moderation_links, notice_text
from tests.e2e.test_queue_tools import EDUARDO, RCPTS, moderated, originals, send_promo

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# ./dev test installs them and sets RELAY_REQUIRE_BROWSER: there a missing browser fails the run.
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("RELAY_REQUIRE_BROWSER"),
                                reason="chromium and chromium-driver are installed by ./dev test")


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="relay-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(15)  # a click returns before the next page loads: lookups wait for it
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def relay(tmp_path: Path, sink: Sink) -> Iterator[RelayProcess]:
    r = admin_relay(tmp_path, sink)
    yield r
    r.stop()


def page_figures(driver: object) -> dict[str, int]:
    """Every figure a page marks with `data-figure` (the report's counts), as the browser shows it."""
    shown = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('[data-figure]')).map(e => [e.dataset.figure, e.textContent])")
    return {k: int(v) for k, v in shown}


def sign_in(driver: object, base: str, start: str = "/holds") -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + start)  # type: ignore[attr-defined]
    assert "Iniciar sesión" in driver.title  # type: ignore[attr-defined]
    driver.find_element(By.ID, "login").send_keys(MODERATOR)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "password").send_keys(MOD_PASSWORD)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "sign-in").click()  # type: ignore[attr-defined]


def test_moderator_signs_in_and_approves_in_the_browser(browser: object, relay: RelayProcess, sink: Sink) -> None:
    from selenium.webdriver.common.by import By

    driver: object = browser
    base = f"http://127.0.0.1:{relay.admin_port}"  # type: ignore[attr-defined]
    send_promo(relay)
    hold = moderated(relay)
    sign_in(driver, base)
    rows = driver.find_elements(By.CSS_SELECTOR, "#holds tr.hold")  # type: ignore[attr-defined]
    assert [r.get_attribute("data-id") for r in rows] == [hold["id"]]
    assert "espera moderación" in rows[0].text and "Promocion exclusiva" in rows[0].text
    rows[0].find_element(By.LINK_TEXT, str(hold["id"])).click()
    driver.find_element(By.ID, "approve")  # type: ignore[attr-defined]  # (waits for the page)
    assert driver.find_element(By.ID, "hold-subject").text.startswith("Promocion exclusiva")  # type: ignore[attr-defined]
    assert "commercial-content-approval" in driver.page_source  # type: ignore[attr-defined]
    assert originals(sink) == []
    driver.find_element(By.ID, "approve").click()  # type: ignore[attr-defined]
    driver.find_element(By.ID, "confirm").click()  # type: ignore[attr-defined]  # approve asks first (issue 26)
    assert "Aprobado" in driver.find_element(By.ID, "outcome").text  # type: ignore[attr-defined]
    sink.wait_for(4)
    assert originals(sink) == [RCPTS]  # the message reached the sink
    approved = next(m for m in sink.messages if b"X-Relay-Notice: moderation-approved" in m.content)
    assert approved.rcpts == [EDUARDO]
    driver.find_element(By.ID, "back").click()  # type: ignore[attr-defined]
    assert driver.find_elements(By.ID, "empty")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "logout").click()  # type: ignore[attr-defined]
    driver.get(f"{base}/holds/{hold['id']}")  # type: ignore[attr-defined]
    assert "Iniciar sesión" in driver.title  # type: ignore[attr-defined]


def test_refuse_link_from_the_notice_in_the_browser(browser: object, relay: RelayProcess, sink: Sink) -> None:
    from selenium.webdriver.common.by import By

    driver: object = browser
    base = f"http://127.0.0.1:{relay.admin_port}"  # type: ignore[attr-defined]
    send_promo(relay)
    links = moderation_links(sink)
    sign_in(driver, base, links["reject"])  # the link asks for a sign-in, then comes back
    reason_box = driver.find_element(By.ID, "reason")  # type: ignore[attr-defined]  # only on that page
    assert driver.find_element(By.TAG_NAME, "h1").text == "Rechazar este mensaje"  # type: ignore[attr-defined]
    reason = "No se aprueba: contenido comercial ajeno a la entidad"
    reason_box.send_keys(reason)
    driver.find_element(By.ID, "confirm").click()  # type: ignore[attr-defined]
    assert "Rechazado" in driver.find_element(By.ID, "outcome").text  # type: ignore[attr-defined]
    got = sink.wait_for(3)
    refusal = next(m for m in got if b"X-Relay-Notice: moderation-rejected" in m.content)
    assert refusal.rcpts == [EDUARDO] and reason in notice_text(refusal.content)
    assert originals(sink) == []
