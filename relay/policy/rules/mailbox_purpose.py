"""mailbox_purpose: a mailbox that takes only some requests answers the others with the right channel.

Circular 004 (Barrancabermeja), numerals 1-3 and 5: soportetic@ receives EXCLUSIVELY web-site
publication requests; technical support goes through the web form, followed up on extension 2500.
The message is still delivered (nothing is lost) and the sender — only our own staff, never an
outside address (no backscatter) — gets an automatic answer pointing to the form.

The rule judges whether the text is **a request to publish or change something on the web site**
(a decree, circular, edict, banner, button, link to publish, update or replace on the page) or
**anything else** — above all the technical-support requests the circular sends to the form
(printers, passwords, network, e-mail, software). It is a publication request when accepts >=
threshold and accepts - support >= margin; otherwise the auto-reply goes out. The pack names the
mailbox and may replace or extend both term groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from functools import cached_property
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from relay.directory import address_key
from relay.message import ParsedMessage
from relay.policy.automatic import automatic_reason
from relay.policy.lexicon import Balance, Lexicon, check_extra, check_groups, merged, weigh
from relay.policy.rules.base import Context, RuleBase, Texts, render
from relay.policy.verdicts import Action, Explanation, Finding, Notice

# Numeral 3: "solicitudes de actualización o modificación en el sitio web ... (Solicitud de
# publicación de decretos, circulares, edictos o documentación jurídica), Ajuste o cambio de
# BANNERS en el encabezado, creación de nuevos botones o enlaces".
ACCEPTS: dict[str, float] = {
    "publicac*": 2, "=publicar": 2, "=publique": 2, "=publiquen": 2, "=publicarlo": 2,
    "=publicarla": 2, "=publicarlos": 2, "=publicado": 1, "=publicada": 1,
    "sitio web": 2, "página web": 2, "portal web": 2, "portal": 1,
    "banner": 2.5, "botón": 1.5, "enlace": 1, "link": 1, "encabezado": 1, "decreto": 1.5, "circular": 1,
    "edicto": 2, "resolución": 1, "acuerdo municipal": 1.5, "documentación jurídica": 2, "normatividad": 1.5,
    "acto administrativo": 1.5, "aviso": 1, "convocatoria": 1, "noticia": 1, "transparencia": 1.5,
    "=subir": 1, "=suban": 1, "=montar": 1, "actualizar información": 1.5, "sección": 1,
    "micrositio": 2, "=publiquese": 2, "=colgar": 1.5, "=cargar": 1, "web institucional": 2,
    "página institucional": 2, "carrusel": 2, "slider": 2, "pieza gráfica": 2, "ventana emergente": 2,
    "=url": 1, "=pestana": 1.5, "rendición de cuentas": 1.5, "datos abiertos": 1.5, "=web": 1.5,
    "página de inicio": 2, "=pagina": 1, "fotografía": 1, "=foto": 1, "=imagen": 1, "=actualizar": 1,
    "=actualicen": 1, "=cambiar": 0.5, "=reemplazar": 1,
    # what is changed on a page: a menu entry, a link added, a text corrected
    "=menu": 1.5, "agregar enlace": 2, "=agregar": 0.5, "=corregir": 1, "error ortográfico": 2.5,
    "favor corregir": 1.5, "=retirar": 1, "=retiren": 1.5, "en la página": 1, "galería": 2, "=fotos": 1,
    "enlazar*": 1.5, "=quitar": 1, "que aparece en": 1.5, "organigrama": 1.5, "misión y visión": 1.5,
    "nueva versión": 1,
}
# Numerals 1, 2 and 5: technical support goes through the form, not this mailbox.
SUPPORT: dict[str, float] = {
    "impresora": 3, "imprimir": 2, "escáner": 2.5, "=toner": 2.5, "computador": 2, "portátil": 2,
    "equipo de cómputo": 2, "pantalla": 1.5, "teclado": 2, "mouse": 2, "no funciona": 2, "no prende": 2.5,
    "no enciende": 2.5, "no abre": 2, "no carga": 1, "no puedo ingresar": 2, "no puedo entrar": 2,
    "no me deja": 1.5, "error": 1.5, "falla": 1.5, "=dano": 1.5, "=danado": 1.5, "=danada": 1.5,
    "contraseña": 2, "clave": 1.5,
    "usuario bloqueado": 3, "desbloquear": 2.5, "restablecer": 2, "internet": 2, "=red": 1.5, "wifi": 2,
    "vpn": 2, "=correo": 0.5, "outlook": 2, "buzón lleno": 2.5, "instalar": 2, "instalación": 2, "software": 2,
    "hardware": 2, "licencia": 1.5, "antivirus": 2, "virus": 2, "office": 1.5, "excel": 1, "lento": 1.5,
    "cable": 1.5, "extensión": 1, "teléfono": 1, "mantenimiento": 1.5, "soporte técnico": 2,
    "mesa de ayuda": 2, "sistema de información": 1, "=formatear": 2, "pantallazo": 1.5, "se congela": 2,
    "conexión": 1.5, "sin conexión": 2, "=permisos": 1, "carpeta compartida": 2, "cuenta de correo": 1.5,
    "=windows": 1.5, "=pc": 1.5, "=usb": 1.5, "escanear": 2, "fotocopiadora": 2.5, "videobeam": 2.5,
    "proyector": 2, "=teams": 1.5, "audífonos": 2, "micrófono": 2, "sonido": 1.5, "no tengo acceso": 2,
    "sin acceso": 2,
}
GROUPS = ("accepts", "support")


class Config(RuleBase):
    kind: Literal["mailbox_purpose"]
    action: Action = Action.NOTIFY
    mailbox: str
    accepts: dict[str, float] = Field(default_factory=lambda: dict(ACCEPTS), min_length=1,
                                      description="terms of the requests the mailbox takes")
    support: dict[str, float] = Field(default_factory=lambda: dict(SUPPORT),
                                      description="terms of the requests it does not take (support)")
    extra_terms: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="{accepts|support: {term: weight}}; weight 0 removes")
    threshold: float = Field(default=3.0, gt=0)
    margin: float = Field(default=0.0, description="accepts - support needed")
    subject_weight: float = Field(default=2.0, ge=1)
    auto_reply: Texts
    auto_reply_subject: str = "Respuesta automática: {mailbox}"
    ADDRESS_FIELDS: ClassVar[tuple[str, ...]] = ("mailbox",)
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.NOTIFY, Action.REJECT})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"mailbox"})
    DEFAULT_REPLY: ClassVar[str] = "{mailbox} solo recibe las solicitudes para las que fue creado"

    @field_validator("accepts", "support")
    @classmethod
    def _terms(cls, value: dict[str, float]) -> dict[str, float]:
        check_groups({"terms": value})
        return value

    @field_validator("extra_terms")
    @classmethod
    def _extra(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return check_extra(value, GROUPS)

    @field_validator("mailbox")
    @classmethod
    def _key(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError(f"{value!r} is not an e-mail address")
        return address_key(value)

    @cached_property
    def lexicon(self) -> Lexicon:
        return Lexicon(merged({"accepts": self.accepts, "support": self.support}, self.extra_terms))


JUDGEMENT = Balance("accepts", "support", "not a publication request", "support request",
                    "publication request")


def judge(rule: Config, message: ParsedMessage) -> tuple[bool, Explanation]:
    """Whether the text is a request the mailbox takes (True), and why."""
    return weigh(rule.lexicon, message, rule.subject_weight, JUDGEMENT, rule.threshold, rule.margin)


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    if rule.mailbox not in (r.casefold() for r in ctx.recipients) or rule.mailbox in ctx.own_addresses:
        return
    accepted, why = judge(rule, ctx.submission.message)
    automatic = automatic_reason(ctx.submission)
    if automatic is not None:
        # a bounce, an auto-reply or a platform's notification repeats the words of the mail it is
        # about ("Respuesta automática: Publicación decreto 245") but asks for nothing: it is not a
        # publication request, and no notice answers it (RFC 3834; the engine's gate)
        accepted, why = False, replace(why, conclusion=f"automatic mail ({automatic}), not a request")
    if accepted:
        return
    values = {**ctx.base_vars(rule), "mailbox": rule.mailbox}
    notices: tuple[Notice, ...] = ()
    if ctx.notice_to and rule.action is Action.NOTIFY and automatic is None:
        text = render(rule.auto_reply.es, values)
        if rule.auto_reply.en and "en" in ctx.pack.languages:
            text += "\n\n--- English ---\n" + render(rule.auto_reply.en, values)
        notices = (Notice(ctx.notice_to, "auto-reply", render(rule.auto_reply_subject, values), text,
                          (rule.id,)),)
    finding = rule.finding(ctx, {"mailbox": rule.mailbox}, recipients=[rule.mailbox], notices=notices,
                           detail={"score": dict(why.scores)["accepts"], "terms": [e.term for e in why.evidence]})
    yield replace(finding, why=why)


def explain(rule: Config, message: ParsedMessage) -> Explanation:
    """The judgement of the text alone, fired or not (for `relay check`: why a rule did not fire)."""
    return judge(rule, message)[1]
