"""Issue 27, acceptance: a day of mail through a running relay — the public acceptance scenarios of
one institution (Pasto) at their own moments, then a generated, bounded load of ordinary mail and
advertising that waits for the communications office, worked through the JSON API (approvals,
refusals, withdrawals; some left waiting) — and then the message trace (`relay trace --json`, the
real command, and GET /api/v1/trace), the API's holds list, /metrics and the compliance report
(`relay report --format json` and GET /api/v1/report) must all agree with each other and with what
the sink received. `day_figures` counts what the trace says.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import os
import re
import smtplib
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from relay import apitokens, report
from relay.auth import hash_password
from relay.clock import FileClock
from relay.store.base import MODERATION_EVENTS
from tests.e2e.harness import PASSWORD, RelayProcess, Sink, free_port
from tests.e2e.test_admin_web import MOD_PASSWORD, MODERATOR
from tests.e2e.test_browser import CHROMEDRIVER, CHROMIUM, page_figures, sign_in
from tests.e2e.test_browser import browser as chromium
from tests.e2e.test_browser_queue import screenshot
from tests.e2e.test_queue_tools import PROMO, relay_cli
from tests.helpers import SHARED, to_bytes

P = "pasto.gov.co"
SCENARIOS = sorted((SHARED / "acceptance" / "scenarios").glob("pasto-*.yaml"))
LOAD_AT = datetime.fromisoformat("2026-11-24T14:00:00-05:00")  # Tuesday afternoon: everybody at work
MEETING_SENDER, PROMO_SENDER = f"raul.chaves@{P}", f"eduardo.hernandez@{P}"
PEOPLE = [f"jorge.benavides@{P}", f"lucia.ortega@{P}"]
MEETINGS, PROMOS = 12, 16  # the generated load: ordinary mail, and advertising held for moderation
PLAN = {"approve": 7, "reject": 3, "withdraw": 4}  # what the office does with the advertising; 2 left waiting
TOKEN = apitokens.new_token()

ZONE = ZoneInfo("America/Bogota")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("RELAY_REQUIRE_BROWSER"),
                                reason="chromium and chromium-driver are installed by ./dev test")
browser = chromium


def scenario_logins() -> tuple[str, ...]:
    found = {yaml.safe_load(p.read_text(encoding="utf-8"))["envelope"].get("auth") for p in SCENARIOS}
    return tuple(sorted(a for a in found | {MEETING_SENDER, PROMO_SENDER} if a))


@pytest.fixture
def relay(tmp_path: Path, sink: Sink) -> Iterator[RelayProcess]:
    port = free_port()
    r = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", pack="pasto", extra_logins=scenario_logins(),
                     admin={"listen": f"127.0.0.1:{port}",
                            "api_tokens": [{"name": "mesa", "token_hash": apitokens.token_hash(TOKEN),
                                            "scope": "moderate"}],
                            "accounts": [{"login": MODERATOR, "mailboxes": [],
                                          "password_hash": hash_password(MOD_PASSWORD, iterations=1000)}]})
    r.admin_port = port  # type: ignore[attr-defined]
    r.use_test_clock(datetime.fromisoformat("2026-11-24T08:00:00-05:00"))
    yield r.start()
    r.stop()


def api(relay: RelayProcess, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{relay.admin_port}/api/v1{path}",  # type: ignore[attr-defined]
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                                     method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def metrics(relay: RelayProcess) -> dict[str, float]:
    """The /metrics samples, 'name{labels}' -> value."""
    url = f"http://127.0.0.1:{relay.admin_port}/metrics"  # type: ignore[attr-defined]
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def submit(relay: RelayProcess, login: str, mail_from: str, rcpts: list[str], raw: bytes) -> None:
    """One message through the relay's own SMTP listener; refusals (at RCPT or DATA) are part of the day."""
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
        smtp.login(login, PASSWORD)
        with contextlib.suppress(smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError):
            smtp.sendmail(mail_from, rcpts, raw)


def meeting(n: int) -> bytes:
    return (f"From: {MEETING_SENDER}\r\nTo: {', '.join(PEOPLE)}\r\nSubject: Reunion de seguimiento {n}\r\n"
            f"Message-ID: <meeting-{n}@{P}>\r\n\r\nLos espero el jueves a las 9 en la sala de juntas.\r\n").encode()


def promo(n: int) -> bytes:
    return PROMO.replace(b"Subject: ", f"Message-ID: <promo-{n}@{P}>\r\nSubject: ".encode(), 1).replace(
        b"40% de descuento", f"{10 + n}% de descuento".encode())


def header(content: bytes, name: str) -> str:
    return str(email.message_from_bytes(content, policy=email.policy.default).get(name, "")).strip()


def day_figures(trace: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """What the trace says of the day, counted: decisions by verdict, rule hits by rule, moderation
    actions by action (approved, rejected, withdrawn, ...), notices by kind. The compliance report's
    figures for the same day must be these."""
    verdicts = Counter(t["verdict"] for t in trace)
    rules = Counter(r["rule"] for t in trace for r in t["rules"])
    actions = Counter(e["event"].removeprefix("hold ") for t in trace for e in t["events"]
                      if e["event"].removeprefix("hold ") in MODERATION_EVENTS)
    notices = Counter(e["detail"].split(" to ")[0] for t in trace for e in t["events"] if e["event"] == "notice")
    return {"verdicts": verdicts, "rules": rules, "actions": actions, "notices": notices}


def delivered_by_trace(trace: list[dict[str, Any]], holds: dict[str, dict[str, Any]]) -> Counter[tuple[str, str]]:
    """(queue id, recipient) for every copy the trace says the upstream took with a 2xx: a message
    delivered at once (its recipients, less those held), and each held copy delivered later."""
    out: Counter[tuple[str, str]] = Counter()
    for t in trace:
        held = {r.casefold() for h in t["holds"] for r in holds[h["id"]]["recipients"]}
        for e in t["events"]:
            count = int(re.match(r"(\d+) recipient", e["detail"]).group(1)) if e["event"].endswith("delivered") else 0  # type: ignore[union-attr]
            if e["event"] == "delivered":
                rcpts = [r for r in t["recipients"] if r.casefold() not in held]
                assert len(rcpts) == count, (t["queue_id"], e, rcpts)
                out.update((t["queue_id"], r.casefold()) for r in rcpts)
            elif e["event"] == "hold delivered":
                rcpts = holds[e["hold"]]["recipients"]
                assert len(rcpts) == count, (t["queue_id"], e, rcpts)
                out.update((t["queue_id"], r.casefold()) for r in rcpts)
    return out


def settle(relay: RelayProcess, sink: Sink, timeout: float = 60) -> None:
    """Until nothing is on its way: no copy waiting or being delivered, the notice outbox empty, and
    the sink's count steady."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        busy = sum(api(relay, f"/holds?state={s}")["count"] for s in ("waiting", "delivering"))
        queued = metrics(relay).get("relay_notices_queued", 0)
        if not busy and not queued and len(sink.messages) == last:
            return
        last = len(sink.messages)
        time.sleep(0.5)
    raise AssertionError("the relay did not settle")


def test_a_day_of_mail_trace_api_metrics_and_sink_agree(browser: object, relay: RelayProcess, sink: Sink,
                                                        tmp_path: Path) -> None:
    clock = relay.clock_path
    # the morning: Pasto's public scenarios, each at its own moment
    for path in SCENARIOS:
        scenario = yaml.safe_load(path.read_text(encoding="utf-8"))
        at = scenario["at"] if isinstance(scenario["at"], datetime) else datetime.fromisoformat(str(scenario["at"]))
        FileClock.write(clock, at)
        env = scenario["envelope"]
        submit(relay, env["auth"], env.get("mail_from") or "", list(env["rcpt_to"]), to_bytes(scenario["message"]))
    # the afternoon: ordinary mail and advertising, interleaved, a minute apart
    for n in range(max(MEETINGS, PROMOS)):
        FileClock.write(clock, LOAD_AT + timedelta(minutes=n))
        if n < MEETINGS:
            submit(relay, MEETING_SENDER, MEETING_SENDER, PEOPLE, meeting(n))
        if n < PROMOS:
            submit(relay, PROMO_SENDER, PROMO_SENDER, PEOPLE, promo(n))
    FileClock.write(clock, LOAD_AT + timedelta(hours=1))
    settle(relay, sink)

    # the communications office works the queue through the API (scope moderate)
    waiting = [h for h in api(relay, "/holds?reason=moderate")["holds"] if h["mail_from"] == PROMO_SENDER]
    promo_holds = [h for h in waiting if h["subject"].endswith("descuento en seguros")]
    assert len(promo_holds) == PROMOS, [h["subject"] for h in waiting]
    done: Counter[str] = Counter()
    todo = [a for a, n in PLAN.items() for _ in range(n)]
    for hold, action in zip(promo_holds, todo, strict=False):
        body = {"reason": "Publicidad no autorizada (Circular de Pasto)"} if action == "reject" else {}
        after = api(relay, f"/holds/{hold['id']}/{action}", body)
        assert after["decided_by"] == "mesa (api)", after
        done[{"approve": "approved", "reject": "rejected", "withdraw": "withdrawn"}[action]] += 1
    settle(relay, sink)

    # 1. the trace: the real command and the API route give the same lives
    cli = relay_cli(relay, "trace", "--json", "--limit", "10000")
    assert cli.returncode == 0, cli.stderr
    trace: list[dict[str, Any]] = json.loads(cli.stdout)
    through_api = api(relay, "/trace?limit=10000")
    assert through_api["messages"] == trace and through_api["total"] == len(trace)
    assert {t["message_id"] for t in trace} >= {f"meeting-{n}@{P}" for n in range(MEETINGS)} | {
        f"promo-{n}@{P}" for n in range(PROMOS)}
    for t in trace:  # every life in order, from its reception
        assert [e["event"] for e in t["events"]][:2] == ["received", "decided"], t
        stamps = [datetime.fromisoformat(e["at"]) for e in t["events"]]
        assert stamps == sorted(stamps) and all(s.utcoffset() is not None for s in stamps), t

    # 2. the API's holds (every state) and the trace name the same held copies, in the same states
    holds = {h["id"]: h for h in api(relay, "/holds?all=1&limit=10000")["holds"]}
    assert {h["id"] for t in trace for h in t["holds"]} == set(holds)
    for t in trace:
        for h in t["holds"]:
            assert holds[h["id"]]["state"] == h["state"] and holds[h["id"]]["queue_id"] == t["queue_id"]

    # 3. what the trace says was delivered is exactly what the sink received, and vice versa
    received: Counter[tuple[str, str]] = Counter()
    notices_received: Counter[str] = Counter()
    for m in sink.messages:
        kind = header(m.content, "X-Relay-Notice")
        if kind:
            notices_received[kind] += len(m.rcpts)
        elif m.mail_from not in ("<>", ""):
            queue_id = header(m.content, "X-Relay-Queue-ID")
            assert queue_id, m.content[:500]
            received.update((queue_id, r.casefold()) for r in m.rcpts)
    assert delivered_by_trace(trace, holds) == received
    assert received, "nothing was delivered"

    # 4. counts per action: what the office did = the trace = the holds list = /metrics
    figures = day_figures(trace)
    assert figures["actions"] == done, (figures["actions"], done)
    decided = Counter(h["decision"] for h in holds.values() if h["decision"])
    assert decided == done
    open_promos = [h for h in holds.values()
                   if h["state"] == "moderation" and h["subject"].endswith("descuento en seguros")]
    assert len(open_promos) == PROMOS - sum(PLAN.values())
    samples = metrics(relay)
    for action in MODERATION_EVENTS:
        assert samples.get(f'relay_moderation_actions_total{{action="{action}"}}', 0) == done[action], action
    for verdict in ("deliver", "hold", "moderate", "tempfail", "reject"):
        assert samples.get(f'relay_messages_total{{verdict="{verdict}"}}', 0) == figures["verdicts"][verdict], (
            verdict, figures["verdicts"])
    assert samples['relay_holds_open{reason="moderate"}'] == sum(1 for h in holds.values()
                                                                 if h["state"] == "moderation")
    # every notice the trace says was queued reached the sink (the daily digest is about no one message)
    notices_received.pop("moderation-digest", None)
    assert figures["notices"] == notices_received, (
        figures["notices"], notices_received)
    # a search of the day in the institution's zone finds it all, a page at a time, the same through both
    page = api(relay, "/trace?since=2026-11-24&until=2026-11-24&limit=5&offset=5")
    assert page["total"] == len(trace) and page["messages"] == trace[5:10]
    cli_page = relay_cli(relay, "trace", "--json", "--since", "2026-11-24", "--limit", "5", "--offset", "5")
    assert json.loads(cli_page.stdout) == trace[5:10]

    # 5. the compliance report of the month (all of this mail is in it): the real command and the API
    # give the same figures, and they are the trace's
    made = relay_cli(relay, "report", "--month", "2026-11", "--format", "json")
    assert made.returncode == 0, made.stderr
    month = json.loads(made.stdout)
    assert api(relay, "/report?month=2026-11") == month
    flat = report.figures(month)
    assert month["messages"] == len(trace)
    assert {v: n for v, n in month["verdicts"].items() if n} == dict(figures["verdicts"]), (
        month["verdicts"], figures["verdicts"])
    assert {r["rule"]: r["total"] for r in month["rules"] if r["total"]} == dict(figures["rules"]), (
        month["rules"], figures["rules"])
    assert {d: n for d, n in month["moderation"]["decisions"].items() if n} == dict(done)
    assert flat["moderation.open"] == sum(1 for h in holds.values() if h["state"] == "moderation")
    assert sum(d["messages"] for d in month["days"]) == len(trace)
    assert flat["days.2026-11-24.messages"] == sum(
        1 for t in trace if datetime.fromisoformat(t["at"]).astimezone(ZONE).date().isoformat() == "2026-11-24")

    # 6. the report of that day's month, as the office reads it in Chromium: every figure on the page
    # is the JSON's; the page is kept as a screenshot (RELAY_SCREENSHOTS=docs/img refreshes the docs')
    from selenium.webdriver.common.by import By

    driver: Any = browser
    base = f"http://127.0.0.1:{relay.admin_port}"  # type: ignore[attr-defined]
    driver.set_window_size(1200, 900)
    sign_in(driver, base, "/report?month=2026-11")
    assert driver.find_element(By.ID, "report-title").text == "Informe de cumplimiento · noviembre de 2026"
    assert page_figures(driver) == flat
    problems = [e["message"] for e in driver.get_log("browser") if "favicon.ico" not in e["message"]]
    assert not problems, problems
    shots = Path(os.environ.get("RELAY_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    screenshot(driver, shots / "report-day.png")
