"""The texts of the notices people get (issue 26, "Notices"): each complaint as a test. Pure:
the engine's decision notices and relay.notices' letters, no sockets."""

from __future__ import annotations

import re

from relay.policy.verdicts import Verdict
from tests.helpers import decide

C, B = "cancilleria.gov.co", "barrancabermeja.gov.co"
SPANISH_WORDS = re.compile(r"\b(lunes|martes|miércoles|jueves|viernes|sábado|domingo|noviembre|diciembre|a las)\b")


def held_notice_text() -> str:
    decision = decide("cancilleria", f"From: luis.fernandez@{C}\nTo: maria.lopez@{C}\nSubject: Informe\n\nRevisar.\n",
                      mail_from=f"luis.fernandez@{C}", rcpt=[f"maria.lopez@{C}"], auth=f"luis.fernandez@{C}",
                      at="2026-11-27T20:00:00-05:00")  # Friday night: held until Monday 08:00
    assert decision.verdict is Verdict.HOLD
    [notice] = [n for n in decision.notices if n.kind == "hold"]
    return notice.text


def test_the_english_part_of_the_hold_notice_has_its_date_in_english() -> None:
    english = held_notice_text().split("--- English ---")[1]
    assert "Monday 30 November 2026 at 08:00 (America/Bogota, UTC-05:00)" in english
    assert not SPANISH_WORDS.search(english), english


def test_the_schedule_is_given_once_in_each_language() -> None:
    spanish, english = held_notice_text().split("--- English ---")
    assert spanish.count("lunes 30 de noviembre de 2026 a las 08:00") == 1, spanish
    assert english.count("Monday 30 November 2026 at 08:00") == 1, english


def test_mass_mail_notices_say_the_list_not_one_recipients() -> None:
    sender = f"laura.pinto@{B}"
    decision = decide("barrancabermeja", f"From: {sender}\nTo: funcionarios@{B}\nSubject: Aviso\n\nHola a todos.\n",
                      mail_from=sender, rcpt=[f"funcionarios@{B}"], auth=sender)
    texts = "\n".join(n.text for n in decision.notices) + "\n".join(f.explanation for f in decision.findings)
    assert "mass-mail-authorized-senders" in [f.rule_id for f in decision.findings]
    assert "1 destinatarios" not in texts and "1 recipients" not in texts
    assert f"dirigido a la lista masiva funcionarios@{B}" in texts
    assert f"went to the mass list funcionarios@{B}" in texts


def test_the_bogota_security_alert_never_carries_the_platforms_one_time_code() -> None:
    account = "nicolas.rubio@alcaldiabogota.gov.co"
    message = (f"From: Facebook <security@facebookmail.com>\nTo: {account}\n"
               "Subject: 48213 es tu codigo de confirmacion de Facebook\n\n"
               "Hola, confirma tu cuenta de Facebook con el codigo 48213. Registro de cuenta nueva.\n")
    decision = decide("bogota", message, mail_from="security@facebookmail.com", rcpt=[account],
                      client_ip="157.240.1.1", at="2026-11-24T14:00:00-05:00")
    alerts = [n for n in decision.notices if n.kind == "alert"]
    assert alerts, [f.rule_id for f in decision.findings]
    for n in alerts:
        assert "48213" not in n.text and "48213" not in n.subject, n.text
        assert "[código oculto] es tu codigo de confirmacion" in n.text
    for record in decision.records:
        assert "48213" not in str(record)


def test_codes_are_masked_years_and_dates_are_not() -> None:
    from relay.notices import mask_codes

    assert mask_codes("Tu código 123 456 de Instagram") == "Tu código [código oculto] de Instagram"
    assert mask_codes("G-482913 is your Google verification code") == "[código oculto] is your Google verification code"
    assert mask_codes("código 4821") == "código [código oculto]"
    assert mask_codes("Informe 2026 del 24-11") == "Informe 2026 del 24-11"


def test_the_moderation_request_names_recipients_an_excerpt_and_why() -> None:
    p = "pasto.gov.co"
    sender, rcpts = f"eduardo.hernandez@{p}", [f"jorge.benavides@{p}", f"lucia.ortega@{p}"]
    message = (f"From: {sender}\nTo: {', '.join(rcpts)}\nSubject: Promocion exclusiva: 40% de descuento\n\n"
               "Aproveche esta oferta por tiempo limitado. Compre ya su poliza con descuento, precios especiales "
               "para servidores publicos. Escribame para cotizar.\n")
    decision = decide("pasto", message, mail_from=sender, rcpt=rcpts, auth=sender)
    [request] = [n for n in decision.notices if n.kind == "moderation-request"]
    assert f"Destinatarios (2): {rcpts[0]}, {rcpts[1]}" in request.text
    assert "Extracto del mensaje:\n  Aproveche esta oferta por tiempo limitado." in request.text
    assert "Por qué se retuvo:\n- commercial-content-approval: commercial offer: offer" in request.text
