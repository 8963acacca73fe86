"""Issue 27, the compliance report in the real headless Chromium: a month of Cancillería mail (holds
off-hours, refusals, an [URGENTE] override, an exemption) sent over SMTP to a running relay; then
/report in the browser, /api/v1/report and `relay report --format json` must show the same figures,
and the page is kept as a screenshot (RELAY_SCREENSHOTS names a folder, e.g. docs/img; the test's own
temporary folder otherwise)."""

from __future__ import annotations

import contextlib
import json
import os
import smtplib
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay import apitokens, report
from relay.auth import hash_password
from relay.clock import FileClock
from tests.e2e.harness import PASSWORD, RelayProcess, Sink, free_port
from tests.e2e.test_admin_web import MOD_PASSWORD, MODERATOR
from tests.e2e.test_browser import CHROMEDRIVER, CHROMIUM, page_figures, sign_in
from tests.e2e.test_browser import browser as chromium
from tests.e2e.test_browser_queue import screenshot
from tests.e2e.test_queue_tools import relay_cli
from tests.report_day import CAMILO, DEPARTMENTS, IN_NOVEMBER, LUIS, MONTH, SOFIA, URGENT_REASON, at, write_directory

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("RELAY_REQUIRE_BROWSER"),
                                reason="chromium and chromium-driver are installed by ./dev test")
browser = chromium
TOKEN = apitokens.new_token()


@pytest.fixture
def relay(tmp_path: Path, sink: Sink) -> Iterator[RelayProcess]:
    port = free_port()
    r = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", pack="cancilleria", extra_logins=(SOFIA, CAMILO),
                     directory=str(write_directory(tmp_path)), admin={
                         "listen": f"127.0.0.1:{port}", "link_ttl": 3600,
                         "api_tokens": [{"name": "tablero", "token_hash": apitokens.token_hash(TOKEN)}],
                         "accounts": [{"login": MODERATOR, "mailboxes": [],
                                       "password_hash": hash_password(MOD_PASSWORD, iterations=1000)}]})
    r.admin_port = port  # type: ignore[attr-defined]
    r.use_test_clock(at(MONTH[0]))
    yield r.start()
    r.stop()


def send_month(relay: RelayProcess) -> None:
    for n, mail in enumerate(MONTH):
        FileClock.write(relay.clock_path, at(mail))
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as smtp:
            smtp.login(mail.login, PASSWORD)
            with contextlib.suppress(smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError):  # the refusals
                smtp.sendmail(mail.mail_from, list(mail.rcpts), mail.content(n))


def api(relay: RelayProcess, path: str) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{relay.admin_port}/api/v1{path}",  # type: ignore[attr-defined]
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=15) as answer:  # loopback only
        return json.loads(answer.read())


def test_the_report_page_shows_what_the_api_and_the_cli_say(browser: object, relay: RelayProcess, sink: Sink,
                                                             tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    send_month(relay)
    deadline = time.monotonic() + 20
    # the audit trail is flushed in batches; the clock is now past Monday 08:00, so the scheduler
    # delivers the copies held over the weekend
    while (figures := api(relay, "/report?month=2026-11"))["messages"] < len(IN_NOVEMBER) or \
            figures["moderation"]["open"]:
        assert time.monotonic() < deadline, (figures["messages"], figures["moderation"])
        time.sleep(0.2)
    done = relay_cli(relay, "report", "--month", "2026-11", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == figures  # one function behind the CLI and the API
    assert figures["verdicts"]["reject"] == 2 and figures["verdicts"]["hold"] == 2
    assert figures["disconnect"]["held_messages"] == 2 and figures["disconnect"]["held_recipients"] == 3
    assert [o["reason"] for o in figures["disconnect"]["overrides"]] == [URGENT_REASON]
    assert [x["recipients"] for x in figures["disconnect"]["exemptions"]] == [[LUIS]]
    offices = {o["office"]: o["messages"] for o in figures["offices"]}
    assert offices == {DEPARTMENTS[SOFIA]: 5, DEPARTMENTS[LUIS]: 1, report.NO_OFFICE: 1}
    # what the sink received agrees: the delivered messages and, once due, the held ones; no refused one
    subjects = [m.content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode() for m in sink.messages
                if b"X-Relay-Notice" not in m.content]
    assert sorted(set(subjects)) == sorted({m.subject for m in MONTH if m.expect != "reject"})
    assert subjects.count("Nómina") == 2  # its two held copies (Bogotá and Madrid)

    driver: Any = browser
    base = f"http://127.0.0.1:{relay.admin_port}"  # type: ignore[attr-defined]
    driver.set_window_size(1200, 900)
    sign_in(driver, base, "/report?month=2026-11")
    assert driver.find_element(By.ID, "report-title").text == "Informe de cumplimiento · noviembre de 2026"
    assert page_figures(driver) == report.figures(figures)
    charts = driver.find_elements(By.CSS_SELECTOR, "figure.chart svg")
    assert len(charts) == 3 and all(c.size["width"] > 300 and c.size["height"] > 150 for c in charts)
    # the charts drew their bars and lines (their styles were allowed by the page's CSP)
    assert driver.execute_script("return document.querySelectorAll('figure.chart svg .rect, "
                                 "figure.chart svg .line').length") > 3
    assert driver.execute_script("return getComputedStyle(document.querySelector('#chart-rules svg .title'))"
                                 ".fontFamily").startswith("sans-serif")
    assert URGENT_REASON in driver.find_element(By.ID, "overrides").text
    problems = [e["message"] for e in driver.get_log("browser") if "favicon.ico" not in e["message"]]
    assert not problems, problems  # e.g. a CSP violation
    driver.find_element(By.ID, "office").send_keys(DEPARTMENTS[SOFIA])
    driver.find_element(By.ID, "run-report").click()
    assert "dependencia: " + DEPARTMENTS[SOFIA] in driver.find_element(By.CSS_SELECTOR, "p.hint").text
    office_only = api(relay, "/report?month=2026-11&office=" + urllib.request.quote(DEPARTMENTS[SOFIA]))
    assert page_figures(driver) == report.figures(office_only) and office_only["messages"] == 5
    driver.get(base + "/report?month=2026-11")
    shots = Path(os.environ.get("RELAY_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    screenshot(driver, shots / "report.png")
    assert (shots / "report.png").stat().st_size > 20000
    driver.get(base + "/report?month=2026-13")
    assert "no es un mes" in driver.find_element(By.ID, "error").text
