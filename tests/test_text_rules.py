"""The text rules judge the way a reader does: the four failures of issue 18, and the explanations.

The messages are written here for these tests (paraphrasing the issue's reports), in the forms real
mail takes: BCC groups, HTML-only, quoted-printable, base64, RFC 2047 subjects, forwards."""

from __future__ import annotations

import base64
import json
import quopri
from pathlib import Path

import pytest

from relay.cli import main
from relay.message import fold, parse_message
from relay.policy.lexicon import Lexicon, check_term, merged
from relay.policy.rules import sensitive_individual
from relay.policy.verdicts import Decision, Verdict
from tests.helpers import INSTITUTIONS, POLICIES, decide, fired, pack, to_bytes

P = "pasto.gov.co"
G = "alcaldiabogota.gov.co"
TWO = [f"jorge.benavides@{P}", f"lucia.ortega@{P}"]
SENSITIVE = "sensitive-notice-individual"


def bcc_to_two(subject: str, body: str, sender: str = f"talento.humano@{P}", auth: str = f"diana.erazo@{P}",
               headers: str = "") -> Decision:
    """A notice sent to two colleagues, both in BCC (the To shows only the sender)."""
    text = f"From: {sender}\nTo: {sender}\nSubject: {subject}\n{headers}\n{body}\n"
    return decide("pasto", text, mail_from=sender, rcpt=TWO, auth=auth)


LIBRANZA = """Apreciado(a) servidor(a):

Le recordamos que su crédito de libranza con el Fondo de Empleados registra a la fecha tres cuotas
vencidas sin pagar. Si no se pone al día antes del 15 de diciembre, la obligación será reportada a
las centrales de riesgo conforme al reglamento de crédito.

Área de Cartera"""


def test_libranza_arrears_notice_to_two_people_in_bcc_is_refused() -> None:
    """Issue 18, failure 1: one debt word used to stay below the threshold."""
    d = bcc_to_two("Estado de su crédito de libranza", LIBRANZA)
    assert SENSITIVE in fired(d), d.to_json()
    assert d.verdict is Verdict.REJECT and "individual" in str(d.reply)
    why = next(f.why for f in d.findings if f.rule_id == SENSITIVE)
    assert why is not None and {"debt", "person"} <= {e.group for e in why.evidence}


def test_citation_to_version_libre_in_indagacion_previa_is_refused() -> None:
    """Issue 18, failure 2: no legal word was known."""
    body = ("Por medio de la presente se le cita a rendir versión libre dentro de la indagación previa "
            "radicada con el número 018-2026, el próximo martes a las 9:00 a. m. en la Oficina de Control "
            "Interno Disciplinario. Puede asistir acompañado de un abogado.")
    d = bcc_to_two("Citación a diligencia", body, sender=f"diana.erazo@{P}")
    assert SENSITIVE in fired(d), d.to_json()


PAYROLL = """<html><body>
<h2>Calendario de nómina &ndash; diciembre de 2026</h2>
<p>Estimados servidores:</p>
<p>La Subsecretaría de Talento Humano informa las fechas de corte para el reporte de novedades de la
nómina de diciembre. Todos los servidores deben reportar antes del <b>4 de diciembre</b> las
novedades que tengan: incapacidades, licencias, libranzas, embargos, horas extras y vacaciones.</p>
<table><tr><td>Reporte de novedades</td><td>hasta el 4 de diciembre</td></tr>
<tr><td>Pago de la prima de navidad</td><td>15 de diciembre</td></tr>
<tr><td>Pago de nómina</td><td>22 de diciembre</td></tr></table>
</body></html>"""


def test_payroll_calendar_from_intranet_to_all_staff_is_delivered() -> None:
    """Issue 18, failure 3: kinds of payroll changes listed in a calendar are not a personal notice."""
    html_only = ("From: Comunicación Interna <intranet@pasto.gov.co>\nTo: intranet@pasto.gov.co\n"
                 "Subject: =?utf-8?q?Calendario_de_n=C3=B3mina_de_diciembre?=\nMIME-Version: 1.0\n"
                 "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
                 + quopri.encodestring(PAYROLL.encode()).decode())
    d = decide("pasto", html_only, mail_from=f"intranet@{P}", rcpt=[f"servidores@{P}"], auth=f"carolina.munoz@{P}")
    assert d.verdict is Verdict.DELIVER and SENSITIVE not in fired(d), d.to_json()


@pytest.mark.parametrize("sender", [f"intranet@{P}", f"diana.erazo@{P}"])
def test_invitation_to_a_talk_on_the_disciplinary_code_is_not_a_personal_notice(sender: str) -> None:
    """Issue 18, failure 4."""
    body = ("La Oficina de Control Interno Disciplinario invita a los servidores a la charla «Lo que todo "
            "servidor debe saber del Código General Disciplinario (Ley 1952 de 2019)»: faltas, sanciones y "
            "etapas del proceso. Jueves 3 de diciembre, 3:00 p. m., auditorio principal. Inscripciones en "
            "la intranet; cupos limitados.")
    rcpt = [f"servidores@{P}"] if sender.startswith("intranet") else [*TWO, f"mario.rosero@{P}"]
    auth = f"carolina.munoz@{P}" if sender.startswith("intranet") else sender
    subject = "Invitación: charla sobre el Código General Disciplinario"
    text = f"From: {sender}\nTo: {sender}\nSubject: {subject}\n\n{body}\n"
    d = decide("pasto", text, mail_from=sender, rcpt=rcpt, auth=auth)
    assert SENSITIVE not in fired(d), d.to_json()
    assert d.verdict is Verdict.DELIVER


def test_linkedin_email_confirmation_to_a_personal_mailbox_alerts_and_is_recorded() -> None:
    """Issue 18, failure 5: "confirma tu dirección de correo electrónico", base64 HTML, from LinkedIn."""
    html = ("<p>Hola, Nicolás:</p><p>Confirma tu dirección de correo electrónico para terminar de "
            "configurar tu cuenta de LinkedIn.</p><p><a href='https://www.linkedin.com/e/v2'>Confirmar</a>"
            "</p><p>Este enlace vence en 24 horas.</p>")
    text = ("From: LinkedIn <security-noreply@linkedin.com>\nTo: nicolas.rubio@alcaldiabogota.gov.co\n"
            "Subject: =?UTF-8?B?" + base64.b64encode("Nicolás, confirma tu correo electrónico".encode()).decode()
            + "?=\nMIME-Version: 1.0\nContent-Type: text/html; charset=UTF-8\nContent-Transfer-Encoding: base64\n\n"
            + base64.encodebytes(html.encode()).decode())
    d = decide("bogota", text, mail_from="s-1a2b@bounce.linkedin.com", rcpt=[f"nicolas.rubio@{G}"],
               client_ip="108.174.0.1")
    assert d.verdict is Verdict.DELIVER
    assert f"seguridad.informacion@{G}" in {n.to for n in d.notices}, d.to_json()
    [record] = d.records
    assert record.as_dict()["network"] == "LinkedIn" and record.as_dict()["mailbox_type"] == "personal"


@pytest.mark.parametrize(("subject", "sender"), [
    ("A Ana y 3 personas más les gusta tu publicación", "notification@facebookmail.com"),
    ("Nuevos empleos para ti: Profesional universitario", "jobalerts-noreply@linkedin.com"),
    ("Tu resumen semanal de LinkedIn", "messages-noreply@linkedin.com"),
])
def test_network_routine_mail_is_not_a_signup(subject: str, sender: str) -> None:
    text = f"From: {sender}\nTo: nicolas.rubio@{G}\nSubject: {subject}\n\nVer en la aplicación. Registrarse.\n"
    d = decide("bogota", text, mail_from=sender, rcpt=[f"nicolas.rubio@{G}"], client_ip="69.171.232.143")
    assert d.records == () and d.notices == ()


def test_a_forward_quoting_a_debt_notice_to_a_group_is_still_a_personal_notice() -> None:
    body = ("Buenos días, les reenvío para su gestión.\n\n---------- Mensaje reenviado ----------\n"
            "De: Cartera <cartera@pasto.gov.co>\n> Señor Jorge Benavides: usted adeuda al Fondo de Empleados "
            "$ 2.350.000 por concepto de préstamo de vivienda, en mora desde agosto.")
    d = bcc_to_two("RV: Saldo en mora", body, sender=f"diana.erazo@{P}")
    assert SENSITIVE in fired(d)


def test_summary_of_a_new_law_on_health_leave_is_general() -> None:
    body = ("Resumen de la nueva ley que modifica las licencias de maternidad y paternidad y el trámite "
            "de las incapacidades. Todos los servidores pueden consultar el instructivo en la intranet.")
    d = bcc_to_two("Boletín jurídico: nueva ley de licencias", body, sender=f"diana.erazo@{P}")
    assert SENSITIVE not in fired(d), d.to_json()


# --- explanations -------------------------------------------------------------------------------

def test_explanation_lists_terms_weights_and_scores() -> None:
    rule = next(r for r in pack("pasto").rules if r.id == SENSITIVE)
    message = parse_message(to_bytes(f"From: a@{P}\nSubject: Embargo de salario\n\nSe le notifica el embargo.\n"))
    hit, why, topics = sensitive_individual.judge(rule, message)
    assert hit and topics == ["legal"]
    embargo = next(e for e in why.evidence if e.term == "embargo")
    assert (embargo.where, embargo.weight) == ("subject", 6.0)  # subject weight 2
    assert dict(why.scores)["topic"] >= 6 and "embargo=6(subject)" in why.line()


def test_check_json_carries_the_explanation_and_keeps_the_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) \
        -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(to_bytes(f"From: talento.humano@{P}\nTo: talento.humano@{P}\nSubject: Estado de su crédito\n\n"
                             f"{LIBRANZA}\n"))
    args = ["check", "--policy", str(POLICIES / "pasto.yaml"), "--directory", str(INSTITUTIONS / "pasto.yaml"),
            "--at", "2026-11-24T10:00:00-05:00", "--mail-from", f"talento.humano@{P}", "--auth", f"diana.erazo@{P}",
            "--rcpt", TWO[0], "--rcpt", TWO[1]]
    assert main([*args, "--json", str(eml)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"verdict", "smtp_reply", "recipients", "rules", "notices"} <= set(out)
    [rule] = [r for r in out["rules"] if r["id"] == SENSITIVE]
    assert {"id", "cites", "action"} <= set(rule)
    explanation = rule["explanation"]
    assert explanation["scores"]["topic"] >= 3 and explanation["thresholds"]["topic"] == 3
    assert any(e["group"] == "debt" and e["weight"] > 0 for e in explanation["evidence"])
    assert main([*args, str(eml)]) == 0
    human = capsys.readouterr().out
    assert "personal notice: topic" in human and "debt" in human


# --- the lexicon --------------------------------------------------------------------------------

def test_stems_match_inflections_accents_and_case() -> None:
    lex = Lexicon({"debt": {"cuota vencida": 3, "notificación": 1, "=mora": 2}})
    found = lex.hits("", fold("SE LES NOTIFICÓ QUE TIENEN CUOTAS VENCIDAS; MORADO y moral no son mora"))
    assert {e.term for e in found} == {"cuota vencida", "notificación", "=mora"}
    assert not Lexicon({"x": {"=mora": 2}}).hits("", "color morado, moral")


def test_phrase_words_may_have_two_words_between() -> None:
    lex = Lexicon({"s": {"confirma dirección correo": 3}})
    assert lex.hits("", fold("confirma tu dirección de correo electrónico"))
    assert not lex.hits("", "confirma la cita. Luego revisa tu dirección y tu buzón de correo")


@pytest.mark.parametrize("term", ["", "  ", "re:(", "*", "a*b"])
def test_bad_terms_are_refused(term: str) -> None:
    with pytest.raises(ValueError):
        check_term(term)


def test_extra_terms_add_replace_and_remove() -> None:
    out = merged({"general": {"taller": 2, "curso": 1.5}}, {"general": {"taller": 0, "feria": 2}, "person": {"x": 1}})
    assert out == {"general": {"curso": 1.5, "feria": 2}, "person": {"x": 1}}


# --- pack validation ----------------------------------------------------------------------------

@pytest.mark.parametrize(("yaml_lines", "needle", "message"), [
    ('    extra_terms:\n      general:\n        "re:(sin cerrar": 2\n', "re:(sin cerrar", "bad regular expression"),
    ('    extra_terms:\n      chisme:\n        "rumor": 2\n', "chisme", "unknown group 'chisme'"),
    ('    extra_terms:\n      person:\n        "usted": -2\n', '"usted": -2', "negative weight"),
])
def test_bad_text_rule_settings_are_refused_with_file_and_line(tmp_path: Path, yaml_lines: str, needle: str,
                                                                message: str) -> None:
    from relay.policy.pack import load_pack
    from relay.yamlconf import ConfigError

    good = (POLICIES / "pasto.yaml").read_text(encoding="utf-8")
    anchor = "    kind: sensitive_individual\n"
    text = good.replace(anchor, anchor + yaml_lines)
    path = tmp_path / "pasto.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_pack(path)
    [problem] = info.value.problems
    assert message in problem, problem
    line = next(i for i, row in enumerate(text.splitlines(), 1) if needle in row)
    assert problem.startswith(f"{path}:"), problem
    assert int(problem.split(":")[1]) in range(line - 2, line + 1), problem


# --- the other three rules, both sides ----------------------------------------------------------

COMMERCIAL = "commercial-content-approval"


@pytest.mark.parametrize(("subject", "body", "hit"), [
    ("Black Friday en Tecnoplaza: hasta 40% de descuento en portátiles",
     "Aproveche precios especiales para servidores públicos. Envío gratis a todo el país.", True),
    ("Vendo apartamento en el centro", "Vendo apartamento de tres habitaciones, precio $ 280.000.000 "
     "negociable. Interesados escríbanme al WhatsApp.", True),
    ("Seguro de vida con tarifa preferencial para funcionarios", "Adquiera su póliza con 20% de descuento y "
     "pague en cuotas sin interés. Cupos limitados, contáctenos hoy.", True),
    ("Almuerzos ejecutivos a domicilio", "Menú del día a $15.000. Haga sus pedidos por WhatsApp; promoción 2x1 "
     "los viernes.", True),
    ("Limited time: 30% off design software", "Buy now and save. Unsubscribe at any time.", True),
    ("Invitación pública de mínima cuantía No. 012-2026", "Se invita a los interesados a presentar ofertas "
     "para el suministro de papelería. Consulte el cronograma y los estudios previos en SECOP II.", False),
    ("Solicitud de cotización - estudio de mercado", "Para el estudio de mercado del proceso de contratación "
     "solicitamos su cotización de 200 resmas de papel, con precio unitario e IVA.", False),
    ("Revisión de precios del contrato 045", "El supervisor del contrato solicita revisar los precios "
     "unitarios de los ítems 3 y 4 antes del acta parcial.", False),
    ("Promoción y prevención: toma de tensión gratis", "Bienestar invita a la jornada de promoción y "
     "prevención en el primer piso.", False),
])
def test_commercial_offer_against_procurement(subject: str, body: str, hit: bool) -> None:
    d = decide("pasto", f"From: eduardo.hernandez@{P}\nTo: lucia.ortega@{P}\nSubject: {subject}\n\n{body}\n",
               mail_from=f"eduardo.hernandez@{P}", rcpt=[f"lucia.ortega@{P}"], auth=f"eduardo.hernandez@{P}")
    assert (COMMERCIAL in fired(d)) is hit, [f.why.line() for f in d.findings if f.why]


@pytest.mark.parametrize(("sender", "subject", "body", "hit"), [
    ("registration@facebookmail.com", "48213 es tu código de confirmación de Facebook",
     "Hola, alguien intentó crear una cuenta con esta dirección. Usa este código para confirmarla.", True),
    ("no-reply@mail.instagram.com", "Confirma tu correo electrónico", "Confirma que esta es tu dirección.", True),
    ("noreply@account.tiktok.com", "Código de verificación", "Tu código de verificación es 583920.", True),
    ("verify@x.com", "Confirma tu dirección de correo electrónico en X", "Ingresa este código: 449120", True),
    ("no-reply@mail.instagram.com", "Te damos la bienvenida a Instagram", "Tu cuenta nueva ya está lista.", True),
    ("notification@facebookmail.com", "Tienes 3 notificaciones nuevas", "Ana comentó tu publicación.", False),
    ("jobs-listings@linkedin.com", "Profesional universitario: 12 empleos nuevos",
     "Vacantes que coinciden con tu perfil.", False),
    ("no-reply@mail.instagram.com", "juan_perez empezó a seguirte", "Ver perfil.", False),
    ("info@x.com", "Lo más destacado de hoy en X", "Tendencias y publicaciones populares.", False),
    ("newsletters-noreply@linkedin.com", "Boletín semanal: gobierno digital", "Lee el boletín de esta semana.",
     False),
])
def test_network_signup_against_routine(sender: str, subject: str, body: str, hit: bool) -> None:
    d = decide("bogota", f"From: {sender}\nTo: juan.uribe@{G}\nSubject: {subject}\n\n{body}\n",
               mail_from=sender, rcpt=[f"juan.uribe@{G}"], client_ip="69.171.232.143")
    assert bool(d.records) is hit, d.to_json()


B = "barrancabermeja.gov.co"


@pytest.mark.parametrize(("subject", "body", "auto_reply"), [
    ("La impresora del tercer piso no imprime", "Desde ayer sale error de papel atascado.", True),
    ("No puedo entrar al correo", "Me pide cambiar la contraseña y luego queda bloqueado.", True),
    ("Instalación de Office", "Solicito instalar Office en el portátil asignado a la oficina.", True),
    ("Internet lento", "En la Secretaría de Hacienda la red está muy lenta desde el lunes.", True),
    ("Reunión del comité de archivo", "Les comparto el acta de la reunión del martes.", True),
    ("Solicitud de publicación del Decreto 112 de 2026", "Adjunto el decreto para publicar en la página web.",
     False),
    ("Edicto para el sitio web", "Por favor publicar el edicto adjunto en la sección de notificaciones.", False),
    ("Cambio de banner", "Solicito cambiar el banner del encabezado del portal por el de la campaña.", False),
    ("Nuevo botón en Transparencia", "Crear un botón en la sección de transparencia con enlace al plan anual.",
     False),
    ("Enlace roto en la página web", "El enlace de la convocatoria publicada en el sitio web no funciona; por "
     "favor actualizarlo con el documento adjunto.", False),
])
def test_web_mailbox_publication_against_anything_else(subject: str, body: str, auto_reply: bool) -> None:
    d = decide("barrancabermeja", f"From: laura.pinto@{B}\nTo: soportetic@{B}\nSubject: {subject}\n\n{body}\n",
               mail_from=f"laura.pinto@{B}", rcpt=[f"soportetic@{B}"], auth=f"laura.pinto@{B}")
    assert (d.notices != ()) is auto_reply, [f.why.line() for f in d.findings if f.why]


def test_check_says_why_a_text_rule_did_not_fire(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(to_bytes(f"From: intranet@{P}\nTo: intranet@{P}\nSubject: Calendario de nómina\n\n"
                             "Todos los servidores deben reportar sus novedades: incapacidades, libranzas, "
                             "embargos.\n"))
    assert main(["check", "--policy", str(POLICIES / "pasto.yaml"), "--directory", str(INSTITUTIONS / "pasto.yaml"),
                 "--at", "2026-11-24T10:00:00-05:00", "--mail-from", f"intranet@{P}", "--auth", f"carolina.munoz@{P}",
                 "--rcpt", f"servidores@{P}", "--json", str(eml)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "deliver"
    judged = {j["id"]: j["explanation"] for j in out["text_judgements"]}
    assert judged[SENSITIVE]["conclusion"].startswith("general communication")
    assert {"calendario", "todos servidores"} <= {e["term"] for e in judged[SENSITIVE]["evidence"]}


# --- the message's own text, phrases, price and sale, automatic mail (held-out corpus findings) ---

DISCLAIMER = """NOTA DE CONFIDENCIALIDAD. La informacion contenida en este correo es CONFIDENCIAL y para uso
exclusivo del destinatario, protegida por la Ley 1581 de 2012. Si usted ha recibido este mensaje por
error, le solicitamos notificarlo al remitente y eliminarlo; su uso indebido puede acarrear sanciones
disciplinarias y penales."""


def test_a_legal_disclaimer_is_not_read_as_the_message() -> None:
    from relay.policy.bodytext import message_text

    body = f"El comité pasa a las 11 a.m., misma sala.\n\nRaúl\n\n{DISCLAIMER}\n"
    kept = message_text(body)
    assert "comité pasa" in kept and "Raúl" in kept
    assert "destinatario" not in kept and "1581" not in kept and "disciplinarias" not in kept
    d = decide("pasto", f"From: raul.chaves@{P}\nTo: {TWO[0]}\nSubject: Cambio de hora\n\n{body}",
               mail_from=f"raul.chaves@{P}", rcpt=TWO, auth=f"raul.chaves@{P}")
    assert SENSITIVE not in fired(d), d.to_json()


def test_one_confidentiality_sentence_of_the_message_stays() -> None:
    from relay.policy.bodytext import message_text

    body = "Esta información es confidencial, por favor no reenviar.\nEl embargo se aplica en diciembre."
    assert message_text(body) == body
    assert message_text("Enviado desde mi iPhone\nHola") == "\nHola"


def test_inner_articles_of_a_phrase_are_optional() -> None:
    lexicon = Lexicon({"g": {"evaluación de desempeño": 1}})
    for text in ("evaluacion del desempeno", "evaluacion de desempeno", "evaluacion desempeno"):
        assert [e.term for e in lexicon.hits("", text)] == ["evaluación de desempeño"], text
    assert Lexicon({"g": {"el servidor": 1}}).hits("", "servidor") == ()  # first and last words stay


@pytest.mark.parametrize(("body", "offer"), [
    ("Combo pequeño 25 mil, grande 45 mil. Hagan su pedido antes del 12.", True),
    ("Aretes en plata 925 desde 35 mil. Recibo pagos por Nequi.", True),
    ("El regalo del amigo secreto es de mínimo $30.000; el sorteo es el lunes.", False),
    ("Autorizo la compra por caja menor de 10 cables HDMI por $180.000 en total.", False),
])
def test_a_price_and_a_sale_together_make_an_offer(body: str, offer: bool) -> None:
    from relay.policy.rules import commercial

    rule = next(r for r in pack("pasto").rules if r.kind == "commercial")
    hit, why = commercial.judge(rule, parse_message(to_bytes(f"From: a@{P}\nSubject: hola\n\n{body}\n")))
    assert hit is offer, why.line()
    assert any(e.term == "price+sale" for e in why.evidence) is offer


def test_an_auto_reply_to_the_web_mailbox_is_not_a_request_and_is_not_answered() -> None:
    b = "barrancabermeja.gov.co"
    text = (f"From: carlos.rueda@{b}\nTo: soportetic@{b}\nSubject: Respuesta automática: Publicación decreto 245\n"
            "Auto-Submitted: auto-replied\n\nEstoy de vacaciones hasta el 4 de diciembre.\n")
    d = decide("barrancabermeja", text, mail_from=f"carlos.rueda@{b}", rcpt=[f"soportetic@{b}"],
               auth=f"carlos.rueda@{b}")
    [finding] = [f for f in d.findings + d.monitored if f.kind == "mailbox_purpose"]
    assert finding.why is not None and finding.why.conclusion.startswith("automatic mail")
    assert d.notices == () and d.verdict is Verdict.DELIVER
