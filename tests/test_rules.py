"""Unit tests for every rule kind, both sides: what must fire and what must not."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from relay.message import Envelope, Submission, parse_message
from relay.policy.engine import evaluate
from relay.policy.pack import Pack
from relay.policy.verdicts import Decision, Verdict
from tests.helpers import decide, directory, fired, pack, to_bytes

B = "barrancabermeja.gov.co"
P = "pasto.gov.co"
C = "cancilleria.gov.co"
G = "alcaldiabogota.gov.co"


def msg(frm: str, to: str, subject: str, body: str = "Texto.", extra: str = "") -> str:
    return f"From: {frm}\nTo: {to}\n{extra}Subject: {subject}\n\n{body}\n"


def with_rule(name: str, rule_id: str, **changes: object) -> Pack:
    """A copy of a pack with one rule's fields changed (e.g. monitor mode, rewrite action)."""
    data = pack(name).model_dump(by_alias=True, mode="json")
    for rule in data["rules"]:
        if rule["id"] == rule_id:
            rule.update(changes)
    return Pack.model_validate(data)


# --- open_relay -------------------------------------------------------------------------------

def test_outside_to_outside_is_refused_per_recipient() -> None:
    d = decide("barrancabermeja", msg("a@example.net", "b@example.org", "x"), mail_from="a@example.net",
               rcpt=["b@example.org", f"pmu@{B}"], client_ip="198.51.100.7")
    by = {r.address: r.verdict for r in d.recipients}
    assert by == {"b@example.org": Verdict.REJECT, f"pmu@{B}": Verdict.DELIVER}
    assert d.findings[0].envelope_only and d.reply.code == 554  # as Postfix says "Relay access denied"


def test_staff_may_write_outside() -> None:
    d = decide("barrancabermeja", msg(f"laura.pinto@{B}", "x@example.org", "Hola"), mail_from=f"laura.pinto@{B}",
               rcpt=["x@example.org"], client_ip="10.20.1.1")
    assert d.verdict is Verdict.DELIVER and "open-relay-guard" not in fired(d)


# --- institutional_sender ---------------------------------------------------------------------

@pytest.mark.parametrize(("mail_from", "header_from", "verdict"), [
    (f"laura.pinto@{B}", f"laura.pinto@{B}", Verdict.DELIVER),
    (f"LAURA.PINTO@{B.upper()}", f"Laura <laura.pinto@{B}>", Verdict.DELIVER),
    ("laura@hotmail.com", f"laura.pinto@{B}", Verdict.REJECT),
    (f"laura.pinto@{B}", "Laura <laura@yahoo.com>", Verdict.REJECT),
    (f"laura.pinto@{B}", f"laura.pinto@{B}.evil.test", Verdict.REJECT),
    (f"laura.pinto@{B}", f"laura.pinto@{B} <mallory@evil.test>", Verdict.REJECT),
    ("", f"laura.pinto@{B}", Verdict.DELIVER),  # a DSN with the null sender
])
def test_institutional_sender(mail_from: str, header_from: str, verdict: Verdict) -> None:
    d = decide("barrancabermeja", msg(header_from, "x@example.org", "Hola"), mail_from=mail_from,
               rcpt=["x@example.org"], auth=f"laura.pinto@{B}")
    assert d.verdict is verdict, d.to_json()
    if verdict is Verdict.REJECT:
        assert "institutional-domain-only" in fired(d)
        assert "005-20" in str(d.reply)


def test_two_from_headers_are_refused() -> None:
    text = f"From: laura.pinto@{B}\nFrom: patriciah.fierro@{B}\nTo: x@example.org\nSubject: x\n\nx\n"
    d = decide("barrancabermeja", text, mail_from=f"laura.pinto@{B}", rcpt=["x@example.org"],
               auth=f"laura.pinto@{B}")
    assert d.verdict is Verdict.REJECT and "2 From headers" in d.defects


def test_citizens_on_webmail_write_in() -> None:
    d = decide("barrancabermeja", msg("ana@gmail.com", f"pmu@{B}", "Consulta"), mail_from="ana@gmail.com",
               rcpt=[f"pmu@{B}"], client_ip="209.85.220.41")
    assert d.verdict is Verdict.DELIVER and d.notices == ()


# --- send_as ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("login", "sender", "verdict"), [
    (f"laura.pinto@{B}", f"laura.pinto@{B}", Verdict.DELIVER),
    (f"andres.mejia@{B}", f"pmu@{B}", Verdict.DELIVER),  # delegate
    (f"laura.pinto@{B}", f"pmu@{B}", Verdict.REJECT),  # not a delegate
    (f"laura.pinto@{B}", f"carlos.rueda@{B}", Verdict.REJECT),  # another person
    ("laura.pinto", f"laura.pinto@{B}", Verdict.DELIVER),  # bare login gets the domain
])
def test_send_as(login: str, sender: str, verdict: Verdict) -> None:
    d = decide("barrancabermeja", msg(sender, "x@example.org", "Hola"), mail_from=sender, rcpt=["x@example.org"],
               auth=login)
    assert d.verdict is verdict, d.to_json()


def test_sending_as_ones_own_alias_is_sending_as_oneself() -> None:
    """A directory (AD's proxyAddresses smtp: values) may give a person several addresses: each is
    that person, and only that person; another person's alias stays someone else."""
    base = directory("barrancabermeja")
    laura, carlos = base.find(f"laura.pinto@{B}"), base.find(f"carlos.rueda@{B}")
    assert laura is not None and carlos is not None
    aliased = dataclasses.replace(base, entries={**base.entries, f"lpinto@{B}": laura, f"crueda@{B}": carlos})
    for sender, verdict in ((f"lpinto@{B}", Verdict.DELIVER), (f"crueda@{B}", Verdict.REJECT)):
        envelope = Envelope.build(sender, ["x@example.org"], f"laura.pinto@{B}", None)
        d = evaluate(Submission(envelope, parse_message(to_bytes(msg(sender, "x@example.org", "Hola")))),
                     pack("barrancabermeja"), aliased, datetime.fromisoformat("2026-11-24T10:00:00-05:00"))
        assert d.verdict is verdict, (sender, d.to_json())


def test_header_from_is_checked_even_when_envelope_is_right() -> None:
    d = decide("barrancabermeja", msg(f"patriciah.fierro@{B}", "x@example.org", "x"), mail_from=f"laura.pinto@{B}",
               rcpt=["x@example.org"], auth=f"laura.pinto@{B}")
    assert fired(d) == ["send-as-self-or-delegate"]


def test_internal_network_without_login_needs_a_known_address() -> None:
    known = decide("barrancabermeja", msg(f"pmu@{B}", f"laura.pinto@{B}", "x"), mail_from=f"pmu@{B}",
                   rcpt=[f"laura.pinto@{B}"], client_ip="10.20.0.9")
    unknown = decide("barrancabermeja", msg(f"nobody@{B}", f"laura.pinto@{B}", "x"), mail_from=f"nobody@{B}",
                     rcpt=[f"laura.pinto@{B}"], client_ip="10.20.0.9")
    assert known.verdict is Verdict.DELIVER and unknown.verdict is Verdict.REJECT


# --- broadcasters and mass_bcc ----------------------------------------------------------------

def test_list_recipient_makes_mass_mail_even_for_small_lists() -> None:
    d = decide("barrancabermeja", msg(f"laura.pinto@{B}", f"laura.pinto@{B}", "x"), mail_from=f"laura.pinto@{B}",
               rcpt=[f"secretarios@{B}"], auth=f"laura.pinto@{B}")
    assert "mass-mail-authorized-senders" in fired(d)


def test_25_recipients_is_not_mass_but_26_is() -> None:
    def send(n: int) -> list[str]:
        rcpts = [f"p{i}@{B}" for i in range(n)]
        d = decide("barrancabermeja", msg(f"laura.pinto@{B}", f"laura.pinto@{B}", "x"),
                   mail_from=f"laura.pinto@{B}", rcpt=rcpts, auth=f"laura.pinto@{B}")
        return fired(d)
    assert send(25) == [] and send(26) == ["mass-mail-authorized-senders"]


def test_authorised_broadcaster_may_not_mass_mail_the_public() -> None:
    rcpts = [f"c{i}@example.org" for i in range(30)]
    d = decide("barrancabermeja", msg(f"carlos.rueda@{B}", f"carlos.rueda@{B}", "x"), mail_from=f"carlos.rueda@{B}",
               rcpt=rcpts, auth=f"carlos.rueda@{B}")
    assert d.verdict is Verdict.REJECT and fired(d) == ["mass-mail-authorized-senders"]


def test_jefe_sending_as_service_mailbox_keeps_authority() -> None:
    d = decide("barrancabermeja", msg(f"pmu@{B}", f"pmu@{B}", "Boletín PMU"), mail_from=f"pmu@{B}",
               rcpt=[f"funcionarios@{B}"], auth=f"carlos.rueda@{B}")
    assert d.verdict is Verdict.DELIVER, d.to_json()


def test_pasto_mass_mail_only_from_intranet() -> None:
    ok = decide("pasto", msg(f"intranet@{P}", f"intranet@{P}", "Boletín"), mail_from=f"intranet@{P}",
                rcpt=[f"servidores@{P}"], auth=f"yanet.bastidas@{P}")
    chief = decide("pasto", msg(f"yanet.bastidas@{P}", f"yanet.bastidas@{P}", "Boletín"),
                   mail_from=f"yanet.bastidas@{P}", rcpt=[f"servidores@{P}"], auth=f"yanet.bastidas@{P}")
    assert ok.verdict is Verdict.DELIVER
    assert chief.verdict is Verdict.REJECT and "intranet@pasto.gov.co" in str(chief.reply)


def test_list_in_cc_is_exposed_but_own_address_in_to_is_fine() -> None:
    d = decide("barrancabermeja", msg(f"patriciah.fierro@{B}", f"patriciah.fierro@{B}", "x",
                                      extra=f"Cc: Funcionarios <funcionarios@{B}>\n"),
               mail_from=f"patriciah.fierro@{B}", rcpt=[f"funcionarios@{B}"], auth=f"patriciah.fierro@{B}")
    assert fired(d) == ["mass-list-bcc-only"] and "CCO" in str(d.reply)


def test_mass_bcc_can_fix_instead_of_refuse() -> None:
    fixed = with_rule("barrancabermeja", "mass-list-bcc-only", action="rewrite")
    d = decide("barrancabermeja", msg(f"patriciah.fierro@{B}", f"funcionarios@{B}", "x"),
               mail_from=f"patriciah.fierro@{B}", rcpt=[f"funcionarios@{B}"], auth=f"patriciah.fierro@{B}",
               the_pack=fixed)
    assert d.verdict is Verdict.DELIVER
    assert d.rewrite is not None and d.rewrite.hide == {f"funcionarios@{B}"}


# --- sensitive_individual ---------------------------------------------------------------------

GROUP = [f"jorge.benavides@{P}", f"lucia.ortega@{P}", f"mario.rosero@{P}"]


def hr_notice_to_group(subject: str, body: str) -> Decision:
    """Talento Humano writes to three colleagues at once."""
    return decide("pasto", msg(f"talento.humano@{P}", ", ".join(GROUP), subject, body),
                  mail_from=f"talento.humano@{P}", rcpt=GROUP, auth=f"diana.erazo@{P}")


@pytest.mark.parametrize(("subject", "body"), [
    ("Notificación de deuda pendiente", "Se les notifica el saldo pendiente con la cooperativa."),
    ("Resultados de laboratorio", "Adjuntamos sus resultados de laboratorio y el diagnóstico."),
    ("Incapacidades médicas del mes", "Relación de incapacidades y su estado de salud."),
    ("Citación a descargos", "Se les notifica la apertura de proceso disciplinario."),
    ("EMBARGO DE SALARIO", "Se aplicará el embargo ordenado por el juzgado."),
    ("Asunto personal", "Este asunto es de interés particular de cada uno, información confidencial."),
])
def test_sensitive_notice_to_a_group_is_refused(subject: str, body: str) -> None:
    d = hr_notice_to_group(subject, body)
    assert "sensitive-notice-individual" in fired(d), d.to_json()
    assert "individual" in str(d.reply)


@pytest.mark.parametrize(("subject", "body"), [
    ("Jornada de vacunación", "Invitamos a todos los servidores a la jornada de vacunación."),
    ("Semana de la salud", "Charla de prevención de enfermedades cardiovasculares y pausas activas."),
    ("Capacitación sobre el proceso disciplinario", "Taller para todos los servidores sobre la ley 734."),
    ("Actualización de datos personales", "Recuerden actualizar sus datos personales en el sistema."),
    ("Informe de cartera", "Adjunto el informe de cartera de la entidad del trimestre."),
    ("Reunión de seguimiento", "Los espero el jueves en la sala de juntas."),
    ("Donación de sangre", "Campaña de donación de sangre el viernes; su salud es importante."),
])
def test_general_messages_to_a_group_are_not_sensitive(subject: str, body: str) -> None:
    d = hr_notice_to_group(subject, body)
    assert "sensitive-notice-individual" not in fired(d), d.to_json()


def test_sensitive_notice_to_one_person_plus_own_copy_is_individual() -> None:
    d = decide("pasto", msg(f"talento.humano@{P}", f"lucia.ortega@{P}", "Deuda pendiente", "Saldo en mora."),
               mail_from=f"talento.humano@{P}", rcpt=[f"lucia.ortega@{P}", f"talento.humano@{P}"],
               auth=f"diana.erazo@{P}")
    assert d.verdict is Verdict.DELIVER


def test_sensitive_notice_can_be_split() -> None:
    split = with_rule("pasto", "sensitive-notice-individual", action="rewrite")
    d = decide("pasto", msg(f"talento.humano@{P}", ", ".join(GROUP), "Deuda pendiente", "Saldo en mora."),
               mail_from=f"talento.humano@{P}", rcpt=GROUP, auth=f"diana.erazo@{P}", the_pack=split)
    assert d.verdict is Verdict.DELIVER and d.rewrite is not None and d.rewrite.split


# --- commercial --------------------------------------------------------------------------------

@pytest.mark.parametrize(("subject", "body", "hit"), [
    ("Promoción exclusiva", "Aproveche esta oferta por tiempo limitado, 30% de descuento.", True),
    ("Vendo moto", "Vendo moto en buen estado, precio negociable, escríbame al WhatsApp. Compre ya.", True),
    ("Descuento por nómina", "Su descuento por nómina fue aplicado.", False),
    ("Licitación pública 12-2026", "Plazo para la presentación de ofertas en SECOP.", False),
    ("Oferta laboral: convocatoria", "Se abre la convocatoria de oferta de empleo para técnicos.", False),
])
def test_commercial(subject: str, body: str, hit: bool) -> None:
    d = decide("pasto", msg(f"eduardo.hernandez@{P}", f"lucia.ortega@{P}", subject, body),
               mail_from=f"eduardo.hernandez@{P}", rcpt=[f"lucia.ortega@{P}"], auth=f"eduardo.hernandez@{P}")
    assert ("commercial-content-approval" in fired(d)) is hit, d.to_json()
    if hit:
        assert d.verdict is Verdict.MODERATE and d.moderators == (f"intranet@{P}",)
        kinds = {(n.kind, n.to) for n in d.notices}
        assert ("moderation-request", f"intranet@{P}") in kinds
        assert ("moderation", f"eduardo.hernandez@{P}") in kinds


def test_communications_office_may_send_offers() -> None:
    d = decide("pasto", msg(f"intranet@{P}", f"intranet@{P}", "Promoción exclusiva de la caja",
                            "Aproveche la oferta por tiempo limitado con 30% de descuento."),
               mail_from=f"intranet@{P}", rcpt=[f"lucia.ortega@{P}"], auth=f"carolina.munoz@{P}")
    assert d.verdict is Verdict.DELIVER


# --- mailbox_purpose ---------------------------------------------------------------------------

def test_support_request_gets_auto_reply_and_is_still_delivered() -> None:
    d = decide("barrancabermeja", msg(f"laura.pinto@{B}", f"soportetic@{B}", "La impresora no imprime"),
               mail_from=f"laura.pinto@{B}", rcpt=[f"soportetic@{B}"], auth=f"laura.pinto@{B}")
    assert d.verdict is Verdict.DELIVER
    [notice] = d.notices
    assert notice.kind == "auto-reply" and notice.to == f"laura.pinto@{B}"
    assert "bit.ly/SolicitudSoporteTICAlcaldia" in notice.text and "2500" in notice.text


def test_outside_sender_gets_no_auto_reply_backscatter() -> None:
    d = decide("barrancabermeja", msg("ana@gmail.com", f"soportetic@{B}", "Mi clave no sirve"),
               mail_from="ana@gmail.com", rcpt=[f"soportetic@{B}"], client_ip="209.85.220.41")
    assert d.verdict is Verdict.DELIVER and d.notices == ()


def test_banner_change_is_a_publication_request() -> None:
    d = decide("barrancabermeja", msg(f"carlos.rueda@{B}", f"soportetic@{B}", "Cambio del banner del encabezado",
                                      "Solicito cambiar el banner de la página web."),
               mail_from=f"carlos.rueda@{B}", rcpt=[f"soportetic@{B}"], auth=f"carlos.rueda@{B}")
    assert fired(d) == [] and d.notices == ()


# --- social_signup -----------------------------------------------------------------------------

SECURITY = f"seguridad.informacion@{G}"


@pytest.mark.parametrize(("sender", "rcpt", "subject", "alert", "kind"), [
    ("registration@facebookmail.com", f"nicolas.rubio@{G}", "Confirma tu cuenta de Facebook", True, "personal"),
    ("security@mail.instagram.com", f"juan.uribe@{G}", "Your Instagram verification code", True, "personal"),
    ("info@x.com", f"comsecretariageneral@{G}", "Confirm your email address", False, "service"),
    ("messages-noreply@linkedin.com", f"laura.gomez@{G}", "Confirm your email address", True, "personal"),
])
def test_social_signup(sender: str, rcpt: str, subject: str, alert: bool, kind: str) -> None:
    d = decide("bogota", msg(sender, rcpt, subject, "Use the code 123456."), mail_from=sender, rcpt=[rcpt],
               client_ip="69.171.232.143")
    assert d.verdict is Verdict.DELIVER
    assert (SECURITY in {n.to for n in d.notices}) is alert
    [record] = d.records
    assert record.as_dict()["mailbox_type"] == kind and record.as_dict()["account"] == rcpt


def test_social_notification_that_is_not_a_signup_is_ignored() -> None:
    d = decide("bogota", msg("notification@facebookmail.com", f"nicolas.rubio@{G}", "Ana comentó tu foto"),
               mail_from="notification@facebookmail.com", rcpt=[f"nicolas.rubio@{G}"], client_ip="69.171.232.143")
    assert d.records == () and d.notices == ()


def test_signup_words_from_a_non_network_are_ignored() -> None:
    d = decide("bogota", msg("no-reply@banco.example", f"nicolas.rubio@{G}", "Código de verificación"),
               mail_from="no-reply@banco.example", rcpt=[f"nicolas.rubio@{G}"], client_ip="192.0.2.1")
    assert d.records == ()


# --- disconnect --------------------------------------------------------------------------------

def test_hold_notice_is_sent_once_per_message() -> None:
    rcpts = [f"maria.lopez@{C}", f"sofia.vargas@{C}", f"ana.suarez@{C}"]
    d = decide("cancilleria", msg(f"luis.fernandez@{C}", ", ".join(rcpts), "Pendientes"),
               mail_from=f"luis.fernandez@{C}", rcpt=rcpts, auth=f"luis.fernandez@{C}", at="2026-11-28T11:00:00-05:00")
    holds = [n for n in d.notices if n.kind == "hold"]
    assert len(holds) == 1 and holds[0].to == f"luis.fernandez@{C}"
    assert "2088" in holds[0].text and "2191" in holds[0].text and "lunes 30 de noviembre" in holds[0].text
    assert all(r.verdict is Verdict.HOLD for r in d.recipients)


def test_urgent_from_directivo_is_recorded_with_reason() -> None:
    d = decide("cancilleria", msg(f"luis.fernandez@{C}", f"maria.lopez@{C}", "[URGENTE] Cierre de frontera"),
               mail_from=f"luis.fernandez@{C}", rcpt=[f"maria.lopez@{C}"], auth=f"luis.fernandez@{C}",
               at="2026-11-28T23:00:00-05:00")
    assert d.verdict is Verdict.DELIVER
    [record] = d.records
    assert record.kind == "urgency" and record.as_dict()["reason"] == "Cierre de frontera"


def test_service_mailboxes_and_lists_are_not_held() -> None:
    rcpts = [f"talento.humano@{C}", f"planta.externa@{C}"]
    d = decide("cancilleria", msg(f"luis.fernandez@{C}", f"luis.fernandez@{C}", "Circular"),
               mail_from=f"luis.fernandez@{C}", rcpt=rcpts, auth=f"luis.fernandez@{C}", at="2026-11-28T23:00:00-05:00")
    assert "right-to-disconnect" not in fired(d)


def test_inbound_mail_from_outside_is_not_held() -> None:
    d = decide("cancilleria", msg("embajada@example.org", f"maria.lopez@{C}", "Nota"),
               mail_from="embajada@example.org", rcpt=[f"maria.lopez@{C}"], client_ip="192.0.2.10",
               at="2026-11-28T23:00:00-05:00")
    assert d.verdict is Verdict.DELIVER


# --- engine-wide behaviour ---------------------------------------------------------------------

def test_monitor_mode_logs_but_leaves_the_message_alone() -> None:
    monitored = with_rule("barrancabermeja", "mass-list-bcc-only", mode="monitor")
    d = decide("barrancabermeja", msg(f"patriciah.fierro@{B}", f"funcionarios@{B}", "x"),
               mail_from=f"patriciah.fierro@{B}", rcpt=[f"funcionarios@{B}"], auth=f"patriciah.fierro@{B}",
               the_pack=monitored)
    assert d.verdict is Verdict.DELIVER and d.notices == ()
    assert [f.rule_id for f in d.monitored] == ["mass-list-bcc-only"]
    assert "mass-list-bcc-only(monitor)" in dict(d.extra_headers)["X-Relay-Rule-Hits"]


def test_every_reason_is_collected_and_one_bounce_names_them_all() -> None:
    d = decide("barrancabermeja", msg("Laura <laura@gmail.com>", f"funcionarios@{B}", "x"),
               mail_from="laura@gmail.com", rcpt=[f"funcionarios@{B}"], auth=f"laura.pinto@{B}")
    assert set(fired(d)) >= {"institutional-domain-only", "send-as-self-or-delegate", "mass-mail-authorized-senders"}
    bounces = [n for n in d.notices if n.kind == "bounce"]
    assert len(bounces) == 1 and bounces[0].to == f"laura.pinto@{B}"
    assert "(y " in str(d.reply) and str(d.reply).isascii()


def test_a_crashing_rule_becomes_a_tempfail_not_a_lost_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.policy import rules

    def boom(rule: object, ctx: object) -> list[object]:
        raise RuntimeError("bug")

    kind = rules.KINDS["mass_bcc"]
    monkeypatch.setitem(rules.KINDS, "mass_bcc", rules.RuleKind(kind.name, kind.config, boom))
    d = decide("barrancabermeja", msg(f"laura.pinto@{B}", "x@example.org", "x"), mail_from=f"laura.pinto@{B}",
               rcpt=["x@example.org"], auth=f"laura.pinto@{B}")
    assert d.verdict is Verdict.TEMPFAIL and d.reply.code == 451 and "bug" not in str(d.reply)


def test_decisions_are_pure() -> None:
    args = dict(mail_from=f"luis.fernandez@{C}", rcpt=[f"maria.lopez@{C}"], auth=f"luis.fernandez@{C}",
                at="2026-11-27T20:00:00-05:00")
    text = msg(f"luis.fernandez@{C}", f"maria.lopez@{C}", "x")
    assert decide("cancilleria", text, **args) == decide("cancilleria", text, **args)  # type: ignore[arg-type]
