"""Every notice the relay writes to people, and the MIME bytes a notice goes out as.

Spanish first, English after (the pack's `languages`). Pure text: no store, no clock, no sockets
(`notice_bytes` is given the instant). The policy engine builds its decision notices (bounce,
moderation, moderation request, hold) with the letters here; the disposer adds the ones that only
exist after the decision (the next hop refused recipients, at DATA time or when a held copy is
released), the moderators' outcomes (approved, rejected), the moderation links and the operator
alert. Pack-written texts (auto-replies, social-signup alerts) are rendered by their rules from
the pack; only their envelope (kind, To, Subject) is decided here.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Protocol

from relay.policy.verdicts import Finding, Notice

NO_SUBJECT = "(sin asunto)"

# What client text (a decoded Subject, a display name, an address, a next hop's reply) may not
# bring into a notice: control characters (a decoded CR/LF would start a line of the sender's
# own, say a fake "Aprobar:" link in a moderation request), Unicode line and paragraph
# separators, and bidirectional overrides (text that reads differently from what it is).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


# One-time codes a platform sends (verification, sign-in, password reset): 5 to 10 digits, maybe
# grouped ("123 456", "123-456"), or 4 and more after a platform prefix or the word code/código
# ("G-1234", "FB-12345", "código 4821"). A year (4 digits) alone is kept.
_CODE = re.compile(r"(?<![\w-])(?:(?:[A-Z]{1,3}-)\d{4,10}|\d(?:[ -]?\d){4,9})(?![\w-])"
                   r"|(?<=c[óo]digo )\d{4}\b|(?<=code )\d{4}\b|(?<=code: )\d{4}\b|(?<=c[óo]digo: )\d{4}\b",
                   re.IGNORECASE)
CODE_MASK = "[código oculto]"


def mask_codes(text: str) -> str:
    """Text with one-time codes replaced by CODE_MASK: an alert or a report must never carry a
    code that would let its reader take over the account."""
    return _CODE.sub(CODE_MASK, text)


def one_line(value: object) -> str:
    """Client text made one printable line: control characters and line breaks become a space."""
    return " ".join(_CONTROL.sub(" ", _BIDI.sub("", str(value))).split())


def lines_of(value: str) -> str:
    """Text whose line breaks are meant (a moderator's reason): each line cleaned, indented under
    its label so no line of it can pass for one of ours."""
    return "\n  ".join(one_line(line) for line in re.split("\r\n|\r|\n|\u2028|\u2029", value))


class _Refusal(Protocol):
    """A next hop's reply (relay.upstream.Reply): printed as `code text`."""

    def __str__(self) -> str: ...


# -- the engine's letters -------------------------------------------------------------------------


def letter(opening_es: str, opening_en: str, findings: Iterable[Finding], *, subject: str, help_contact: str,
           institution: str, english: bool) -> str:
    """A decision notice: what happened, why (with the circular), whom to ask; Spanish first."""
    findings = list(findings)
    subject = one_line(subject) or NO_SUBJECT
    parts = [opening_es.format(subject=subject), "", "Motivo:"]
    for f in findings:
        parts.append(f"- {one_line(f.explanation)}")
        parts.append(f"  Fundamento: {one_line(f.cites)}")
    parts += ["", f"Si tiene dudas, consulte a {help_contact}.", f"— policy-relay, {institution}"]
    if english:
        parts += ["", "--- English ---", opening_en.format(subject=subject)]
        parts += [f"- {one_line(f.explanation_en or f.reason)} (rule {f.rule_id}; {one_line(f.cites)})"
                  for f in findings]
    return "\n".join(parts)


def not_sent(to: str, subject: str, text: str, rule_ids: tuple[str, ...]) -> Notice:
    """A refused message (at DATA): to our own sender."""
    return Notice(to, "bounce", f"Mensaje no enviado: {one_line(subject)}", text, rule_ids)


NOT_SENT_ES = "Su mensaje «{subject}» no fue enviado."
NOT_SENT_EN = 'Your message "{subject}" was not sent.'


def not_accepted_opening(recipient: str) -> tuple[str, str]:
    """The opening of an RCPT-time refusal notice (the recipient is named; there is no subject yet)."""
    who = one_line(recipient).replace("{", "{{").replace("}", "}}")  # the opening is a format string
    return f"Su mensaje para {who} no fue aceptado.", f"Your message to {who} was not accepted."


def not_accepted(to: str, recipient: str, text: str, rule_id: str) -> Notice:
    return Notice(to, "bounce", f"Mensaje no enviado a {one_line(recipient)}"[:160], text, (rule_id,))


def awaiting_opening(moderators: Sequence[str]) -> tuple[str, str]:
    return ("Su mensaje «{subject}» quedó en espera de aprobación por "
            + (", ".join(one_line(m) for m in moderators) or "la oficina responsable") + ".",
            'Your message "{subject}" awaits approval.')


def awaiting(to: str, subject: str, text: str, rule_ids: tuple[str, ...]) -> Notice:
    """To the sender: a moderator has to approve the message first."""
    return Notice(to, "moderation", f"Mensaje en espera de aprobación: {one_line(subject)}", text, rule_ids)


def request_opening(sender_display: str) -> tuple[str, str]:
    sender_display = one_line(sender_display).replace("{", "{{").replace("}", "}}")
    return (f"Un mensaje de {sender_display} («{{subject}}») espera su aprobación.",
            f'A message from {sender_display} ("{{subject}}") awaits your approval.')


EXCERPT_CHARS = 600


def request_details(recipients: Sequence[str], body_text: str, findings: Iterable[Finding]) -> str:
    """What a moderator needs to decide without opening the queue: whom the message is for, the
    start of its text, and why each rule fired (a text rule's terms and scores). The original
    itself is attached to the request (message/rfc822) when it goes out."""
    lines = ["", "", f"Destinatarios ({len(recipients)}): " + ", ".join(one_line(r) for r in recipients)]
    words = " ".join(one_line(body_text).split())
    if words:
        cut = words[:EXCERPT_CHARS] + ("…" if len(words) > EXCERPT_CHARS else "")
        lines += ["", "Extracto del mensaje:", f"  {cut}"]
    lines += ["", "Por qué se retuvo:"]
    for f in findings:
        why = f.why.line() if f.why is not None else one_line(f.reason)
        lines.append(f"- {f.rule_id}: {one_line(why)[:400]}")
    lines += ["", "(Recipients, an excerpt and the rule's reasons are above; the original is attached.)"]
    return "\n".join(lines)


def moderation_request(moderator: str, subject: str, text: str, rule_ids: tuple[str, ...]) -> Notice:
    """To a moderator: a message waits for a decision (the hold ids and links are added later)."""
    return Notice(moderator, "moderation-request", f"Aprobación requerida: {one_line(subject)}", text, rule_ids)


def held_opening(when_es: str, when_en: str, said_es: bool = False, said_en: bool = False) -> tuple[str, str]:
    """The opening of a "held" notice; the schedule is left out where the pack's text gives it."""
    when_es, when_en = (w.replace("{", "{{").replace("}", "}}") for w in (when_es, when_en))
    return ("Su mensaje «{subject}» será entregado en la jornada laboral de cada destinatario"
            + ("." if said_es else ": " + when_es + "."),
            'Your message "{subject}" will be delivered in each recipient\'s working hours'
            + ("." if said_en else ": " + when_en + "."))


def held_until(to: str, subject: str, text: str, rule_ids: tuple[str, ...]) -> Notice:
    """To the sender: the message waits for the recipients' working hours (Ley 2088 de 2021)."""
    return Notice(to, "hold", f"Mensaje retenido hasta la jornada laboral: {one_line(subject)}", text, rule_ids)


# -- after the decision -----------------------------------------------------------------------------


def undelivered(to: str, subject: str, refused: Sequence[tuple[str, _Refusal]]) -> Notice:
    """The next hop refused some recipients after we had accepted the message (a split copy at
    DATA time, or a held copy when it was released): one text for both, to our own sender."""
    subject = one_line(subject) or NO_SUBJECT
    lines = "\n".join(f"- {one_line(rcpt)}: {one_line(reply)}" for rcpt, reply in refused)
    text = (f"Su mensaje «{subject}» no se entregó a estos destinatarios: el servidor de correo los "
            f"rechazó.\n{lines}\n\n--- English ---\nYour message \"{subject}\" was not delivered to these "
            f"recipients: the mail server refused them.\n{lines}")
    return Notice(to, "bounce", f"Mensaje no entregado: {subject}"[:200], text)


def approved(to: str, subject: str, recipients: Sequence[str]) -> Notice:
    subject = one_line(subject) or NO_SUBJECT
    text = (f"Su mensaje «{subject}» fue aprobado y se entregará ahora a: {', '.join(map(one_line, recipients))}.\n\n"
            f"--- English ---\nYour message \"{subject}\" was approved and is being delivered.")
    return Notice(to, "moderation-approved", f"Mensaje aprobado: {subject}", text)


def rejected(to: str, subject: str, reason: str, cites: Sequence[str]) -> Notice:
    subject, reason = one_line(subject) or NO_SUBJECT, lines_of(reason)
    lines = "\n".join(f"- {one_line(c)}" for c in cites)
    text = (f"Su mensaje «{subject}» no fue aprobado y no se entregó.\n\nMotivo del moderador: {reason}\n\n"
            f"Fundamento:\n{lines}\n\n--- English ---\nYour message \"{subject}\" was not approved and was not "
            f"delivered.\nThe moderator's reason: {reason}")
    return Notice(to, "moderation-rejected", f"Mensaje no aprobado: {subject}", text)


# -- the pack's own wording of the moderators' outcomes ------------------------------------------------
# A pack may replace these texts (`notices:` in the pack, relay.policy.pack.NoticeTemplate); each
# may use the placeholders listed here, checked when the pack loads.
OUTCOME_VARS: dict[str, frozenset[str]] = {
    "approved": frozenset({"subject", "recipients"}),
    "rejected": frozenset({"subject", "recipients", "reason", "cites"}),
    "deleted": frozenset({"subject", "recipients"}),
    "withdrawn": frozenset({"subject", "recipients"}),
    "expired": frozenset({"subject", "recipients", "days", "moderators"}),
}


class Template(Protocol):
    """A pack's text for one outcome (relay.policy.pack.NoticeTemplate)."""

    @property
    def subject(self) -> str | None: ...
    @property
    def es(self) -> str: ...
    @property
    def en(self) -> str | None: ...


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def from_template(default: Notice, template: Template | None, values: dict[str, str]) -> Notice:
    """`default`, or the pack's wording of it: Spanish, then English when the pack gives it."""
    if template is None:
        return default
    filled = _Blank(values)
    text = template.es.format_map(filled)
    if template.en:
        text += "\n\n--- English ---\n" + template.en.format_map(filled)
    subject = one_line(template.subject.format_map(filled))[:200] if template.subject else default.subject
    return Notice(default.to, default.kind, subject, text, default.rule_ids)


def outcome_values(subject: str, recipients: Sequence[str], **more: str) -> dict[str, str]:
    return {"subject": one_line(subject) or NO_SUBJECT, "recipients": ", ".join(map(one_line, recipients)),
            **{k: one_line(v) for k, v in more.items()}}


def deleted(to: str, subject: str, recipients: Sequence[str]) -> Notice:
    """To the sender: an operator removed the held copy; it will not be delivered."""
    subject = one_line(subject) or NO_SUBJECT
    who = ", ".join(map(one_line, recipients))
    text = (f"Su mensaje «{subject}», retenido por la política de correo, fue eliminado por un operador y no se "
            f"entregará a: {who}.\nSi lo necesita, envíelo de nuevo o consulte a la mesa de ayuda.\n\n"
            f"--- English ---\nYour held message \"{subject}\" was deleted by an operator and will not be "
            f"delivered to: {who}.")
    return Notice(to, "hold-deleted", f"Mensaje retenido eliminado: {subject}"[:200], text)


def withdrawn(to: str, subject: str, recipients: Sequence[str]) -> Notice:
    """To the sender: the confirmation of their own withdrawal."""
    subject = one_line(subject) or NO_SUBJECT
    who = ", ".join(map(one_line, recipients))
    text = (f"Retiró su mensaje «{subject}»: no se entregará a: {who}.\n\n--- English ---\n"
            f"You withdrew your message \"{subject}\"; it will not be delivered to: {who}.")
    return Notice(to, "hold-withdrawn", f"Mensaje retirado: {subject}"[:200], text)


def expired(to: str, subject: str, recipients: Sequence[str], days: int, moderators: Sequence[str]) -> Notice:
    """To the sender: nobody decided on the message within the pack's period; it was not delivered."""
    subject = one_line(subject) or NO_SUBJECT
    who = ", ".join(map(one_line, recipients))
    office = ", ".join(map(one_line, moderators)) or "la oficina responsable"
    text = (f"Su mensaje «{subject}» esperó aprobación {days} día{'s' if days != 1 else ''} sin decisión de "
            f"{office} y venció: no se entregó a: {who}.\nSi aún debe enviarse, envíelo de nuevo o consulte a "
            f"{office}.\n\n--- English ---\nYour message \"{subject}\" waited {days} day{'s' if days != 1 else ''} "
            f"for approval without a decision and expired; it was not delivered to: {who}.")
    return Notice(to, "moderation-expired", f"Mensaje vencido sin aprobación: {subject}"[:200], text)


def digest(to: str, waiting: Sequence[tuple[str, str, str, str]], expire_days: int) -> Notice:
    """To a moderator, once a day: what still waits for them — (hold id, sender, subject, since)."""
    n = len(waiting)
    lines = "\n".join(f"- {hold_id}: {one_line(sender)} — «{one_line(subject) or NO_SUBJECT}» (desde {since})"
                      for hold_id, sender, subject, since in waiting)
    text = (f"{'Un mensaje espera' if n == 1 else f'{n} mensajes esperan'} su decisión:\n{lines}\n\n"
            f"Un mensaje sin decisión vence a los {expire_days} días y no se entrega (se avisa al remitente).\n"
            "Decida en la página de moderación o en el servidor del relay: relay queue list --reason moderate\n\n"
            f"--- English ---\n{n} message{'s' if n != 1 else ''} await{'s' if n == 1 else ''} your decision "
            f"(listed above); undecided ones expire after {expire_days} days.")
    return Notice(to, "moderation-digest", f"Resumen diario: {n} mensaje{'s' if n != 1 else ''} por moderar", text)


def how_to_withdraw(hold_ids: Sequence[str], link: Callable[[str], str]) -> str:
    """What a "held" notice to the sender ends with: a signed link to take the message back."""
    text = "\n\nSi ya no quiere enviarlo, puede retirarlo antes de que se entregue:"
    for hold_id in hold_ids:
        text += f"\n  Retirar {hold_id}: {link(hold_id)}"
    return text + "\n(To withdraw the message before it goes, open the link and confirm.)"


def stuck(to: str, hold_id: str, mail_from: str, recipients: Sequence[str], attempts: int, error: str) -> Notice:
    """To the operator: a held copy still cannot be delivered after many attempts."""
    text = (f"El mensaje retenido {hold_id} ({one_line(mail_from)} -> {', '.join(map(one_line, recipients))}) no "
            f"se ha podido entregar tras {attempts} intentos: {one_line(error)}\n"
            f"Revise con: relay queue show {hold_id}")
    return Notice(to, "alert", f"Retención sin entregar: {hold_id}", text)


def store_failing(to: str, error: str, pending: int) -> Notice:
    """To the operator: the store refuses writes, so released holds cannot be recorded."""
    text = (f"El almacén del relay no puede escribir ({one_line(error)[:300]}). {pending} mensaje(s) retenido(s) "
            "ya intentados esperan que se registre su resultado; el relay lo reintenta cada pocos segundos. "
            "Revise el espacio en disco o la base de datos; /readyz responde 503 mientras tanto.\n\n"
            f"--- English ---\nThe relay's store cannot write ({one_line(error)[:300]}); {pending} released "
            "hold(s) wait for their outcome to be recorded (retried every few seconds). Check disk space "
            "or the database; /readyz answers 503 meanwhile.")
    return Notice(to, "alert", "El almacén del relay no puede escribir", text)


def how_to_moderate(moderated: Sequence[str], moderator: str, link: Callable[[str, str, str], str] | None) -> str:
    """What a moderation request ends with: the held copies' ids, the signed links to the admin
    pages (when the admin listener is on) and the commands for the relay server."""
    text = "\n\nIdentificador(es): " + ", ".join(moderated)
    if link is not None:
        for hold_id in moderated:
            text += (f"\n\n{hold_id}\n  Aprobar:  {link(hold_id, 'approve', moderator)}"
                     f"\n  Rechazar: {link(hold_id, 'reject', moderator)}")
        text += ("\n\nCada enlace abre una página de confirmación (inicie sesión como moderador) y vence "
                 "a los pocos días. (Each link opens a confirmation page; sign in as a moderator.)")
    return (text + "\n\nEn el servidor del relay:\nPara aprobar:  relay queue approve ID"
            + "\nPara rechazar: relay queue reject ID --reason \"motivo\""
            + "\n(To approve or refuse, use the links or run the commands above on the relay server.)")


# -- the bytes --------------------------------------------------------------------------------------


def notice_bytes(sender: str, domain: str, to: str, kind: str, subject: str, text: str, now: datetime,
                 original: bytes | None = None) -> bytes:
    """A notice as a message from `sender` (postmaster of our first domain), marked as automatic
    (RFC 3834 `Auto-Submitted: auto-generated`: no replies, no loops) and with its kind; with the
    `original` message attached as message/rfc822 when given (a moderation request)."""
    message = EmailMessage()
    message["From"] = f"policy-relay <{sender}>"
    message["To"] = to
    message["Subject"] = one_line(subject)[:200]
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no replies, no loops
    message["X-Relay-Notice"] = kind
    message.set_content(re.sub("\r\n|\r", "\n", text))  # every line break CRLF on the wire, none bare
    if original:
        attached = email.message_from_bytes(original, policy=email.policy.default)
        message.add_attachment(attached, disposition="attachment", filename="mensaje-original.eml")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
