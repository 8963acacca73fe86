"""The admin listener of a running relay over real HTTP: sign-in, CSRF, moderation, signed links,
the rule test page, health checks and /metrics against the audit trail."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import re
import smtplib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.auth import hash_password
from relay.clock import FileClock
from tests.e2e.harness import PASSWORD, RelayProcess, Sink, free_port
from tests.e2e.http import Client
from tests.e2e.test_queue_tools import EDUARDO, PROMO, RCPTS, moderated, originals, relay_cli, send_promo
from tests.helpers import SHARED, to_bytes

MODERATOR, MOD_PASSWORD = "comunicaciones", "otra-clave-larga"
START = datetime.fromisoformat("2026-11-24T11:30:00-05:00")


def admin_relay(tmp: Path, sink: Sink, pack: str = "pasto", logins: tuple[str, ...] = (EDUARDO,),
                extra_accounts: tuple[dict[str, Any], ...] = ()) -> RelayProcess:
    port = free_port()
    relay = RelayProcess(tmp, f"smtp://127.0.0.1:{sink.port}", pack=pack, extra_logins=logins, admin={
        "listen": f"127.0.0.1:{port}", "link_ttl": 3600,
        "accounts": [{"login": MODERATOR, "password_hash": hash_password(MOD_PASSWORD, iterations=1000),
                      "mailboxes": ["intranet@pasto.gov.co"]}, *extra_accounts]})
    relay.admin_port = port  # type: ignore[attr-defined]
    relay.use_test_clock(START)
    return relay.start()


@pytest.fixture
def relay(tmp_path: Path, sink: Sink) -> Iterator[RelayProcess]:
    r = admin_relay(tmp_path, sink)
    yield r
    r.stop()


def client(relay: RelayProcess) -> Client:
    return Client(relay.admin_port)  # type: ignore[attr-defined]


def signed_in(relay: RelayProcess) -> Client:
    c = client(relay)
    page = c.sign_in(MODERATOR, MOD_PASSWORD)
    assert page.status == 303 and any(n.startswith("relay_session_") for n in c.cookies), page.text
    return c


def notice_text(content: bytes) -> str:
    message = email.message_from_bytes(content, policy=email.policy.default)
    body = message.get_body(("plain",))  # type: ignore[attr-defined]  # a request also carries the original
    return str(body.get_content())


def moderation_links(sink: Sink) -> dict[str, str]:
    """{'approve': path, 'reject': path} from the moderation request the moderator received."""
    sink.wait_for(2)
    request = next(m for m in sink.messages if b"X-Relay-Notice: moderation-request" in m.content)
    text = notice_text(request.content)
    found = dict(re.findall(r"(Aprobar|Rechazar):\s+http://127\.0\.0\.1:\d+(/m/\S+)", text))
    return {"approve": found["Aprobar"], "reject": found["Rechazar"]}


def test_health_and_readiness(relay: RelayProcess) -> None:
    c = client(relay)
    assert c.get("/healthz").status == 200
    ready = c.get("/readyz")
    assert (ready.status, ready.text) == (200, "ready\n")


def test_nothing_is_shown_or_done_without_signing_in(relay: RelayProcess, sink: Sink) -> None:
    send_promo(relay)
    hold = moderated(relay)
    links = moderation_links(sink)
    c = client(relay)
    for path in ("/holds", f"/holds/{hold['id']}", "/check", links["approve"]):
        page = c.get(path)
        assert page.status == 303 and page.headers["location"].startswith("/login?next="), path
        assert "Promocion" not in page.text
    for path, form in ((f"/holds/{hold['id']}/approve", {}), (links["approve"], {}),
                       (f"/holds/{hold['id']}/reject", {"reason": "x"})):
        assert c.post(path, {**form, "csrf": "guess"}).status == 403, path
    assert moderated(relay)["state"] == "moderation"
    wrong = c.sign_in(MODERATOR, "not-the-password")
    assert wrong.status == 401 and "incorrectos" in wrong.text
    assert not any(n.startswith("relay_session") for n in c.cookies)
    assert c.sign_in("nobody", MOD_PASSWORD).status == 401


def test_a_signed_in_moderator_still_needs_the_forms_csrf_token(relay: RelayProcess, sink: Sink) -> None:
    send_promo(relay)
    hold = moderated(relay)
    c = signed_in(relay)
    assert c.post(f"/holds/{hold['id']}/approve", {}).status == 403
    assert c.post(f"/holds/{hold['id']}/approve", {"csrf": "x" * 43}).status == 403
    cross = c.post("/login", {"login": MODERATOR, "password": MOD_PASSWORD},
                   headers={"Origin": "http://evil.example"})
    assert cross.status == 403
    assert moderated(relay)["state"] == "moderation"
    page = c.get(f"/holds/{hold['id']}")
    assert page.status == 200 and "Promocion exclusiva" in page.text
    done = c.post(f"/holds/{hold['id']}/approve", {"csrf": page.field("csrf")})
    assert done.status == 200 and "Aprobado" in done.text
    sink.wait_for(4)
    assert originals(sink) == [RCPTS]
    history = json.loads(relay_cli(relay, "queue", "show", str(hold["id"]), "--json").stdout)["history"]
    assert [e["event"] for e in history] == ["held", "approved", "delivered"]
    assert "comunicaciones (web)" in history[1]["detail"]


def test_the_moderator_and_the_audit_trail_see_why_a_text_rule_fired(relay: RelayProcess, sink: Sink) -> None:
    """Issue 18: the terms and scores behind a commercial judgement, on the hold page and in the audit."""
    send_promo(relay)
    hold = moderated(relay)
    page = signed_in(relay).get(f"/holds/{hold['id']}")
    assert page.status == 200 and "Por qué, al decidir: <code>commercial offer: offer" in page.text, page.text
    assert "Con el paquete en vigor hoy: commercial offer: offer" in page.text, page.text
    assert "por tiempo limitado" in page.text and "asunto" in page.text
    for _ in range(20):  # the audit buffer is flushed within half a second
        rows = json.loads(relay_cli(relay, "audit", "--json", "--rule", "commercial-content-approval").stdout)
        if rows:
            break
        time.sleep(0.25)
    reasons = " | ".join(rows[0]["reasons"])  # a list (relay audit --json is typed)
    assert "commercial-content-approval: commercial offer: offer" in reasons, rows
    assert "offer:por tiempo limitado=" in reasons


def test_refusal_through_the_notice_link_tells_the_sender_the_reason(relay: RelayProcess, sink: Sink) -> None:
    send_promo(relay)
    hold = moderated(relay)
    links = moderation_links(sink)
    c = client(relay)
    first = c.get(links["reject"])
    assert first.status == 303  # sign in first, then back to the confirmation page
    c.sign_in(MODERATOR, MOD_PASSWORD)
    confirm = c.get(links["reject"])
    assert confirm.status == 200 and "Rechazar este mensaje" in confirm.text and str(hold["id"]) in confirm.text
    assert c.post(links["reject"], {"csrf": confirm.field("csrf"), "reason": ""}).status == 409  # a reason is due
    reason = "Publicidad de seguros sin aprobación de la Oficina de Comunicación Social"
    done = c.post(links["reject"], {"csrf": confirm.field("csrf"), "reason": reason})
    assert done.status == 200 and "Rechazado" in done.text
    got = sink.wait_for(3)
    refusal = next(m for m in got if b"X-Relay-Notice: moderation-rejected" in m.content)
    assert refusal.rcpts == [EDUARDO]
    text = notice_text(refusal.content)
    assert reason in text and "Circular 004 de 2021" in text
    assert originals(sink) == []
    again = c.get(links["approve"])  # the other link of the same notice: nothing left to decide
    assert again.status == 200 and 'id="already"' in again.text
    assert c.post(links["approve"], {"csrf": confirm.field("csrf")}).status == 409


def test_tampered_and_expired_links_are_refused(relay: RelayProcess, sink: Sink) -> None:
    send_promo(relay)
    links = moderation_links(sink)
    c = signed_in(relay)
    token = links["approve"].removeprefix("/m/")
    payload, _, mac = token.partition(".")
    forged_payload = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    for bad in (f"{forged_payload}.{mac}", f"{payload}.{mac[:-2]}xx", f"{payload}.", "garbage"):
        page = c.get(f"/m/{bad}")
        assert page.status == 403 and "Enlace rechazado" in page.text, bad
    assert c.get(links["approve"]).status == 200
    FileClock.write(relay.clock_path, START + timedelta(hours=2))  # link_ttl is one hour
    expired = c.get(links["approve"])
    assert expired.status == 403 and "expiró" in expired.text
    assert c.post(links["approve"], {"csrf": "whatever"}).status == 403
    assert moderated(relay)["state"] == "moderation"


def test_the_message_page_shows_text_never_the_html(relay: RelayProcess, sink: Sink) -> None:
    html = ("<html><body><script>alert('x')</script><img src=\"http://tracker.example/p.gif\">"
            "<p>Compre ya su poliza con descuento, precios especiales, oferta por tiempo limitado.</p>"
            "</body></html>")
    raw = (f"From: {EDUARDO}\r\nTo: {', '.join(RCPTS)}\r\nSubject: Promocion exclusiva <b>HTML</b>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n").encode()
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as smtp:
        smtp.login(EDUARDO, PASSWORD)
        smtp.sendmail(EDUARDO, RCPTS, raw)
    hold = moderated(relay)
    page = signed_in(relay).get(f"/holds/{hold['id']}")
    assert page.status == 200
    assert "<script>" not in page.text and "<img" not in page.text and "<b>HTML" not in page.text
    assert "&lt;b&gt;HTML&lt;/b&gt;" in page.text  # the subject, escaped
    assert "Compre ya su poliza" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert page.headers["referrer-policy"] == "no-referrer"


def test_rule_test_page_runs_the_engine_of_relay_check(relay: RelayProcess, tmp_path: Path) -> None:
    scenario = yaml.safe_load((SHARED / "acceptance" / "scenarios" / "pasto-03-debt-notice-to-group.yaml")
                              .read_text(encoding="utf-8"))
    env = scenario["envelope"]
    raw = to_bytes(scenario["message"])
    c = signed_in(relay)
    csrf = c.get("/check").field("csrf")
    form = {"csrf": csrf, "mail_from": env["mail_from"], "rcpt": "\n".join(env["rcpt_to"]), "auth": env["auth"],
            "client_ip": "", "at": str(scenario["at"]).replace(" ", "T")}
    page = c.post_multipart("/check", form, {"file": ("debt.eml", raw)})
    assert page.status == 200, page.text
    message = tmp_path / "debt.eml"
    message.write_bytes(raw)
    args = [sys.executable, "-m", "relay", "check", "--policy", relay.config["policy"], "--directory",
            relay.config["directory"], "--mail-from", env["mail_from"], "--auth", env["auth"], "--at",
            form["at"], "--json", str(message)] + [a for r in env["rcpt_to"] for a in ("--rcpt", r)]
    cli = subprocess.run(args, capture_output=True, text=True, timeout=60)
    expected = json.loads(cli.stdout)
    assert re.search(r'id="verdict">(\w+)<', page.text).group(1) == expected["verdict"] == "reject"  # type: ignore[union-attr]
    fired = re.findall(r"<li><code>([a-z0-9-]+)</code>", page.text)
    assert fired == [r["id"] for r in expected["rules"]] and "sensitive-notice-individual" in fired
    pasted = c.post("/check", {**form, "message": scenario["message"]})
    assert re.findall(r"<li><code>([a-z0-9-]+)</code>", pasted.text) == fired
    bad = c.post("/check", {**form, "rcpt": "not an address <<", "message": scenario["message"]})
    assert bad.status == 400 and "no válid" in bad.text


def _metric_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")))
            out[labels] = float(match.group(2))
    return out


def test_metrics_match_the_audit_trail_after_a_scenario_run(tmp_path: Path, sink: Sink) -> None:
    """Every public Pasto and Barrancabermeja scenario (twice), sent to the relay over SMTP; then
    /metrics and `relay audit` must agree on every verdict and every rule hit."""
    verdicts: set[str] = set()
    for institution in ("pasto", "barrancabermeja"):
        scenarios = [yaml.safe_load(p.read_text(encoding="utf-8"))
                     for p in sorted((SHARED / "acceptance" / "scenarios").glob(f"{institution}-*.yaml"))]
        logins = tuple({s["envelope"]["auth"] for s in scenarios if s["envelope"].get("auth")})
        (tmp_path / institution).mkdir()
        relay = admin_relay(tmp_path / institution, sink, institution, logins)
        try:
            for scenario in scenarios * 2:
                run_scenario(relay, scenario)
            verdicts |= check_metrics_against_audit(relay)
        finally:
            relay.stop()
    assert verdicts >= {"deliver", "reject", "moderate"}  # the scenarios exercise several verdicts


def run_scenario(relay: RelayProcess, scenario: dict[str, Any]) -> None:
    at = scenario["at"] if isinstance(scenario["at"], datetime) else datetime.fromisoformat(str(scenario["at"]))
    FileClock.write(relay.clock_path, at)
    env = scenario["envelope"]
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as smtp:
        if env.get("auth"):
            smtp.login(env["auth"], PASSWORD)
        with contextlib.suppress(smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError):  # decisions too
            smtp.sendmail(env.get("mail_from") or "", env["rcpt_to"], to_bytes(scenario["message"]))


def check_metrics_against_audit(relay: RelayProcess) -> set[str]:
    deadline = time.monotonic() + 15
    while True:
        audit = json.loads(relay_cli(relay, "audit", "--json").stdout)
        metrics = client(relay).get("/metrics").text
        by_verdict = {dict(k)["verdict"]: v for k, v in _metric_samples(metrics, "relay_messages_total").items()}
        if sum(by_verdict.values()) == len(audit) or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the audit trail is flushed in batches every half second
    assert len(audit) >= 10
    assert by_verdict == dict(Counter(e["verdict"] for e in audit))
    hits = {(dict(k)["rule"], dict(k)["action"]): v
            for k, v in _metric_samples(metrics, "relay_rule_hits_total").items()}
    audited: Counter[tuple[str, str]] = Counter()
    for entry in audit:
        audited.update(zip(entry["rules"], entry["actions"], strict=True))  # lists: relay audit --json is typed
    assert hits == dict(audited) and hits
    upstream = _metric_samples(metrics, "relay_upstream_seconds_count")
    assert upstream[()] >= by_verdict.get("deliver", 0) > 0
    holds = relay_cli(relay, "queue", "list", "--json")
    open_holds = Counter(h["reason"] for h in json.loads(holds.stdout))
    gauges = {dict(k)["reason"]: v for k, v in _metric_samples(metrics, "relay_holds_open").items()}
    assert gauges == {"hold": open_holds.get("hold", 0), "moderate": open_holds.get("moderate", 0)}
    assert _metric_samples(metrics, "relay_store_seconds_count")
    return set(by_verdict)


def test_promo_link_approve_end_to_end_over_http(relay: RelayProcess, sink: Sink) -> None:
    """The approve link, followed the way a moderator would: sign in via the redirect, confirm."""
    send_promo(relay)
    links = moderation_links(sink)
    c = client(relay)
    to_login = c.get(links["approve"])
    login_page = c.get(to_login.headers["location"])
    back = c.post("/login", {"login": MODERATOR, "password": MOD_PASSWORD, "next": login_page.field("next")})
    assert back.status == 303 and back.headers["location"] == links["approve"]
    confirm = c.get(back.headers["location"])
    done = c.post(links["approve"], {"csrf": confirm.field("csrf")})
    assert done.status == 200 and "Aprobado" in done.text
    sink.wait_for(4)
    assert originals(sink) == [RCPTS]
    assert PROMO.split(b"\r\n\r\n", 1)[1] in next(m.content for m in sink.messages if m.rcpts == RCPTS)


def test_errors_are_pages_with_a_way_back_and_machines_keep_plain_answers(relay: RelayProcess) -> None:
    """Issue 26: a person who meets a 404 or 403 sees the site's page in Spanish with a link back,
    not a bare line of text; /api, /healthz and /metrics keep their machine answers."""
    c = signed_in(relay)
    page = c.get("/holds/NO-SUCH-HOLD-1")
    assert page.status == 404 and "text/html" in page.headers.get("content-type", "")
    assert "No encontrado" in page.text and "NO-SUCH-HOLD-1" in page.text and 'href="/holds"' in page.text
    assert "/static/relay.css" in page.text
    forged = c.post("/holds/NO-SUCH-HOLD-1/approve", {"csrf": "guess"})
    assert forged.status == 403 and "Acceso denegado" in forged.text and "CSRF" in forged.text
    stranger = client(relay).get("/m/not-a-signed-token")
    assert stranger.status == 403 and "Enlace rechazado" in stranger.text and 'href="/login"' in stranger.text
    api = client(relay).get("/api/v1/holds")
    assert api.status == 401 and api.headers.get("content-type", "").startswith("application/json")
    assert client(relay).get("/healthz").text == "ok\n"


def test_each_relay_has_its_own_session_cookie(tmp_path: Path, sink: Sink, relay: RelayProcess) -> None:
    """Two relays on one host (cookies ignore ports): signing in to one does not sign out of, or into,
    the other; the name is stable across restarts (it comes from the relay's own secret)."""
    first = signed_in(relay)
    (tmp_path / "other").mkdir()
    other = admin_relay(tmp_path / "other", sink)
    try:
        second = signed_in(other)
        [one] = [n for n in first.cookies if n.startswith("relay_session_")]
        [two] = [n for n in second.cookies if n.startswith("relay_session_")]
        assert one != two
    finally:
        other.stop()
    relay.stop()
    relay.start()
    again = signed_in(relay)
    assert [n for n in again.cookies if n.startswith("relay_session_")] == [one]
