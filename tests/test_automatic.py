"""Automatic mail (RFC 3834, RFC 3464/6522), the notice gate, local submission, routed recipients,
odd but legal address headers and header rewrites that never lose an address."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from relay import rewrite
from relay.addresses import format_address, parse_address_list
from relay.directory import FileDirectory
from relay.identity import Direction, LocalSubmission, identify
from relay.message import Envelope, Submission, parse_message
from relay.policy.automatic import automatic_reason, gate, is_delivery_report, is_system_address, may_respond
from relay.policy.engine import envelope_refusal, evaluate
from relay.policy.verdicts import Notice, Verdict
from tests.helpers import ROOT, SHARED, decide, directory, pack, to_bytes
from tests.test_rules import with_rule

B = "barrancabermeja.gov.co"
NOW = datetime.fromisoformat("2026-11-24T10:00:00-05:00")


def sub(headers: str, mail_from: str = "ana@example.org", body: str = "Texto.") -> Submission:
    raw = to_bytes(f"From: Ana <ana@example.org>\nTo: x@{B}\nSubject: s\n{headers}\n{body}\n")
    return Submission(Envelope.build(mail_from, [f"x@{B}"]), parse_message(raw))


@pytest.mark.parametrize(("headers", "mail_from", "automatic"), [
    ("", "ana@example.org", False),
    ("Auto-Submitted: no\n", "ana@example.org", False),
    ("Auto-Submitted: No (a person)\n", "ana@example.org", False),
    ("Auto-Submitted: auto-replied\n", "ana@example.org", True),
    ("Auto-Submitted: auto-generated\n", "ana@example.org", True),
    ("Auto-Submitted: auto-notified; owner-email=x@y\n", "ana@example.org", True),
    ("", "", True),  # null sender
    ("Precedence: bulk\n", "ana@example.org", True),
    ("Precedence: list\n", "ana@example.org", True),
    ("Precedence: junk\n", "ana@example.org", True),
    ("Precedence: first-class\n", "ana@example.org", False),
    ("List-Id: <avisos.example.org>\n", "ana@example.org", True),
    ("List-Unsubscribe: <mailto:leave@example.org>\n", "ana@example.org", True),
    ("X-Auto-Response-Suppress: All\n", "ana@example.org", True),
    ("X-Auto-Response-Suppress: OOF, DR\n", "ana@example.org", True),
    ("", "MAILER-DAEMON@example.org", True),
    ("", "owner-avisos@example.org", True),
    ("", "avisos-request@example.org", True),
    ("Content-Type: multipart/report; report-type=delivery-status; boundary=x\n", "ana@example.org", True),
])
def test_what_rfc_3834_says_never_to_answer(headers: str, mail_from: str, automatic: bool) -> None:
    submission = sub(headers, mail_from)
    assert (automatic_reason(submission) is not None) is automatic
    assert may_respond(submission, f"ana@{B}") is not automatic


@pytest.mark.parametrize(("subject", "automatic"), [
    ("Respuesta automática: Solicitud de certificado", True),  # Outlook (es), no header set
    ("RESPUESTA AUTOMATICA: Solicitud", True),
    ("Automatic reply: Informe", True),
    ("Fuera de la oficina: Reunión", True),
    ("Out of Office: budget", True),
    ("Auto-reply: consulta", True),
    ("RE: Respuesta automática: Solicitud de certificado", False),  # a person answering one
    ("Respuesta a su solicitud automática de certificado", False),
    ("Informe de ausentismo laboral", False),
    ("Fuera de la oficina el viernes por capacitación", False),  # no tag: a person's notice
])
def test_an_auto_reply_subject_without_headers_gets_no_notice(subject: str, automatic: bool) -> None:
    raw = to_bytes(f"From: Ana <ana@example.org>\nTo: x@{B}\nSubject: {subject}\n\nEstaré fuera hasta el lunes.\n")
    submission = Submission(Envelope.build("ana@example.org", [f"x@{B}"]), parse_message(raw))
    assert (automatic_reason(submission) is not None) is automatic, subject
    assert may_respond(submission, "ana@example.org") is not automatic


@pytest.mark.parametrize(("to", "system"), [
    ("", True), (None, True), ("MAILER-DAEMON@x.co", True), ("postmaster@x.co", True), ("no-reply@x.co", True),
    ("noreply@x.co", True), ("laura.pinto@x.co", False), ("owner@x.co", False), ("request@x.co", False),
])
def test_system_addresses(to: str | None, system: bool) -> None:
    assert is_system_address(to) is system
    assert may_respond(sub(""), to) is not system


def test_the_gate_keeps_configured_notices_and_drops_responses_to_automatic_mail() -> None:
    notices = (Notice(f"laura.pinto@{B}", "auto-reply", "s", "t"), Notice(f"laura.pinto@{B}", "bounce", "s", "t"),
               Notice(f"seguridad@{B}", "alert", "s", "t"), Notice(f"mod@{B}", "moderation-request", "s", "t"))
    assert gate(notices, sub("")) == notices
    assert [n.kind for n in gate(notices, sub("Auto-Submitted: auto-replied\n"))] == ["alert", "moderation-request"]
    assert [n.kind for n in gate((Notice("postmaster@x.co", "hold", "s", "t"),), sub(""))] == []


@pytest.mark.parametrize(("ctype", "mail_from", "from_", "dsn"), [
    ("multipart/report; report-type=delivery-status", "", "Mail System <x@y.co>", True),
    ('multipart/report; report-type="disposition-notification"', "", "x@y.co", True),
    ("multipart/report; report-type=delivery-status", "ana@example.org", "x@y.co", False),  # a DSN has <>
    ("multipart/report; report-type=delivery-status", "MAILER-DAEMON@mx.example.net", "x@y.co", True),
    ("text/plain", "", "MAILER-DAEMON@y.co", True),  # pre-RFC 3464 bounce
    ("text/plain", "", "Mail Delivery System <postmaster@y.co>", True),
    ("text/plain", "", "ana@example.org", False),
])
def test_a_dsn_is_recognised_by_what_it_is(ctype: str, mail_from: str, from_: str, dsn: bool) -> None:
    raw = to_bytes(f"From: {from_}\nTo: x@{B}\nSubject: s\nContent-Type: {ctype}; boundary=b\n\n--b\n\nx\n--b--\n")
    assert is_delivery_report(Submission(Envelope.build(mail_from, [f"x@{B}"]), parse_message(raw))) is dsn


def test_a_header_never_lets_a_login_send_as_someone_else() -> None:
    """DSNs and auto-replies pass the staff-identity rules only without a login (a host we trust
    made them); with a login, `Auto-Submitted` does not make talento.humano@ camilo's."""
    text = ("From: Talento Humano <talento.humano@cancilleria.gov.co>\nTo: luis.fernandez@cancilleria.gov.co\n"
            "Subject: Respuesta automatica\nAuto-Submitted: auto-replied\nX-Auto-Response-Suppress: All\n\nFuera.\n")
    d = decide("cancilleria", text, mail_from="", rcpt=["luis.fernandez@cancilleria.gov.co"],
               auth="camilo.reyes@cancilleria.gov.co")
    assert d.verdict is Verdict.REJECT and not d.notices  # refused; nobody answers automatic mail


def test_internal_server_bounce_to_staff_passes_institutional_sender() -> None:
    text = ("From: MAILER-DAEMON@exch01.barrancabermeja.gov.co (Mail Delivery System)\n"
            f"To: laura.pinto@{B}\nSubject: Undelivered Mail Returned to Sender\n\nThis is the mail system.\n")
    d = decide("barrancabermeja", text, mail_from="", rcpt=[f"laura.pinto@{B}"], client_ip="10.20.0.5")
    assert d.verdict is Verdict.DELIVER and not d.notices, d.to_json()


@pytest.mark.parametrize("sender", ["", f"Laura Pinto <laura.pinto@{B}>"])
def test_sender_header_of_ones_own(sender: str) -> None:
    extra = f"Sender: {sender}\n" if sender else ""
    text = f"From: Laura Pinto <laura.pinto@{B}>\n{extra}To: efrain.molinam@{B}\nSubject: Informe\n\nTexto.\n"
    d = decide("barrancabermeja", text, mail_from=f"laura.pinto@{B}", rcpt=[f"efrain.molinam@{B}"],
               auth=f"laura.pinto@{B}")
    assert d.verdict is Verdict.DELIVER


def test_two_sender_headers_are_refused() -> None:
    text = (f"From: laura.pinto@{B}\nSender: laura.pinto@{B}\nSender: patriciah.fierro@{B}\n"
            f"To: efrain.molinam@{B}\nSubject: x\n\nx\n")
    d = decide("barrancabermeja", text, mail_from=f"laura.pinto@{B}", rcpt=[f"efrain.molinam@{B}"],
               auth=f"laura.pinto@{B}")
    assert d.verdict is Verdict.REJECT


def test_two_from_mailboxes_with_a_sender_are_legal_inbound() -> None:
    text = f"From: ana@example.org, luis@example.org\nSender: ana@example.org\nTo: laura.pinto@{B}\nSubject: x\n\nx\n"
    d = decide("barrancabermeja", text, mail_from="ana@example.org", rcpt=[f"laura.pinto@{B}"],
               client_ip="198.51.100.20")
    assert d.verdict is Verdict.DELIVER


def test_originator_in_monitor_mode_changes_nothing() -> None:
    g = "alcaldiabogota.gov.co"
    text = f"To: x@{g}\nSubject: x\n\nx\n"
    d = decide("bogota", text, mail_from="ana@example.org", rcpt=[f"x@{g}"], client_ip="198.51.100.20")
    assert d.verdict is Verdict.DELIVER and [f.rule_id for f in d.monitored] == ["rfc5322-originator"]


@pytest.mark.parametrize("rcpt", [f"victim%evil.test@{B}", f"evil.test!victim@{B}", f'"victim@evil.test"@{B}'])
def test_routed_recipients_are_refused_at_rcpt(rcpt: str) -> None:
    envelope = Envelope.build("laura.pinto@" + B, [rcpt], "laura.pinto@" + B)
    reply = envelope_refusal(envelope, envelope.rcpt_to[0], pack("barrancabermeja"), directory("barrancabermeja"),
                             NOW)
    assert reply is not None and (reply.code, reply.status) == (553, "5.1.3") and "recipient-route-guard" in reply.text


# --- local submission ----------------------------------------------------------------------------

def server(login: str | None = None) -> FileDirectory:
    plain = directory("barrancabermeja")
    values = {f: getattr(plain, f) for f in ("name", "domains", "networks", "entries", "timezone")}
    return FileDirectory(**values, local_submission=LocalSubmission.build(["127.0.0.1", "::1"], login))


def test_local_submission_is_staff_not_a_relay_attempt() -> None:
    envelope = Envelope.build(f"laura.pinto@{B}", ["ciudadano@example.org"], None, "127.0.0.1")
    assert identify(envelope, directory("barrancabermeja")).direction is Direction.RELAY
    local = identify(envelope, server())
    assert (local.direction, local.local, local.login) == (Direction.STAFF, True, None)
    with_login = identify(envelope, server(f"pmu@{B}"))
    assert with_login.login == f"pmu@{B}" and identify(replace(envelope, client_ip="::ffff:127.0.0.1"), server()).local
    assert not identify(replace(envelope, client_ip="198.51.100.7"), server()).local


def test_local_submission_with_an_identity_is_checked_as_that_login() -> None:
    text = to_bytes(f"From: Web <pmu@{B}>\nTo: ciudadano@example.org\nSubject: Radicado 123\n\nSu radicado.\n")
    env = Envelope.build(f"pmu@{B}", ["ciudadano@example.org"], None, "127.0.0.1")
    now = NOW
    ok = evaluate(Submission(env, parse_message(text)), pack("barrancabermeja"), server(f"pmu@{B}"), now)
    assert ok.verdict is Verdict.DELIVER
    other = Envelope.build(f"patriciah.fierro@{B}", ["ciudadano@example.org"], None, "127.0.0.1")
    text2 = text.replace(b"pmu@", b"patriciah.fierro@")
    d = evaluate(Submission(other, parse_message(text2)), pack("barrancabermeja"), server(f"carlos.rueda@{B}"), now)
    assert d.verdict is Verdict.REJECT


# --- header rewrites ------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [
    '"Juan Perez"@example.org', "José Pérez <josé@correo.example>", "Pinto Ortiz, Laura <laura.pinto@x.co>",
    '"a\\"b" <x@y.co>', '"Pinto, L. (TIC)" <l@x.co>', "=?utf-8?q?Jos=C3=A9?= <j@x.co>", "x@[192.0.2.1]",
])
def test_written_addresses_parse_back_the_same(header: str) -> None:
    parsed = parse_address_list(header)
    assert parse_address_list(", ".join(format_address(a) for a in parsed)) == parsed


def test_hide_addresses_keeps_quoted_and_international_addresses_valid() -> None:
    fields = [b"From: a@x.co", f'To: "Juan Perez"@example.org, funcionarios@{B}'.encode(),
              "Cc: José <josé@correo.example>, b@x.co".encode(), b"Subject: s"]
    out = rewrite.hide_addresses(fields, frozenset({f"funcionarios@{B}", "b@x.co"}))
    to = next(f for f in out if f.startswith(b"To:")).decode()
    cc = next(f for f in out if f.startswith(b"Cc:")).decode()
    assert [a.addr for a in parse_address_list(to[3:])] == ["Juan Perez@example.org"]
    assert '"Juan Perez"@example.org' in to
    assert [a.addr for a in parse_address_list(cc[3:])] == ["josé@correo.example"]


def test_hide_addresses_never_drops_what_it_cannot_parse() -> None:
    fields = [b"To: alice@x.co <mallory@evil.test>, lista@x.co", b"Cc: b@x.co"]
    out = rewrite.hide_addresses(fields, frozenset({"lista@x.co"}))
    assert fields[0] in out and b"Cc: b@x.co" in out


def test_mass_bcc_rewrite_refuses_a_header_it_cannot_rewrite() -> None:
    rewriting = with_rule("barrancabermeja", "mass-list-bcc-only", action="rewrite")
    good = f"From: patriciah.fierro@{B}\nTo: secretarios@{B}\nSubject: Circular\n\nTexto.\n"
    bad = f"From: patriciah.fierro@{B}\nTo: secretarios@{B}, Ana ana@x.co\nSubject: Circular\n\nTexto.\n"
    kw = {"mail_from": f"patriciah.fierro@{B}", "rcpt": [f"secretarios@{B}"], "auth": f"patriciah.fierro@{B}"}
    assert decide("barrancabermeja", good, the_pack=rewriting, **kw).rewrite is not None  # type: ignore[arg-type]
    d = decide("barrancabermeja", bad, the_pack=rewriting, **kw)  # type: ignore[arg-type]
    assert d.verdict is Verdict.REJECT and d.rewrite is None


# --- the scenarios in tests/scenarios/automatic, through `relay check` ------------------------------

def test_automatic_mail_scenarios() -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, str(SHARED / "acceptance" / "run.py"), "--dir",
                           str(ROOT / "tests" / "scenarios" / "automatic")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0 and last.endswith(" 0 failed") and not last.startswith("0 "), done.stdout[-3000:]
