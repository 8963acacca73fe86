"""Twenty out-of-office replies, written here, in the header shapes three common systems use.

- Exchange / Outlook (on-premises and Exchange Online): subject "Respuesta automática:" or
  "Automatic reply:", `X-Auto-Response-Suppress: All`, `Auto-Submitted: auto-generated` (or
  `auto-replied`), Thread-Topic/Thread-Index, X-MS-* fields, a multipart/alternative body, and the
  null reverse-path; older servers send "Fuera de la oficina:" with only X-Auto-Response-Suppress.
- Gmail's vacation responder: `Auto-Submitted: auto-replied`, "Re:" or a configured subject,
  In-Reply-To/References, the account address as reverse-path; some with `Precedence: bulk`.
- Zimbra: `Auto-Submitted: auto-replied (zimbra; vacation)`, `Precedence: bulk`, an X-Mailer.

`replies(person, address, to, original)` gives (envelope sender, message bytes) pairs.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

BOGOTA = timezone(timedelta(hours=-5))
START = datetime(2026, 11, 24, 9, 0, tzinfo=BOGOTA)

_EXCHANGE_SUBJECTS = ("Respuesta automática: {s}", "Automatic reply: {s}", "RE: Respuesta automática: {s}",
                      "Fuera de la oficina: {s}")
_TEXTS = (
    "Estoy fuera de la oficina hasta el lunes 30 de noviembre, sin acceso al correo. Para asuntos "
    "urgentes comuníquese con la extensión 2500.",
    "I am out of the office until Monday, November 30th with limited access to e-mail.",
    "Me encuentro en vacaciones hasta el 4 de diciembre. Su mensaje será atendido a mi regreso.",
    "Gracias por su mensaje. En este momento estoy en comisión de servicios; responderé a mi regreso.",
)


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _alternative(text: str, boundary: str) -> str:
    return (f'Content-Type: multipart/alternative; boundary="{boundary}"\nMIME-Version: 1.0\n\n'
            f"--{boundary}\nContent-Type: text/plain; charset=\"utf-8\"\nContent-Transfer-Encoding: 8bit\n\n"
            f"{text}\n\n--{boundary}\nContent-Type: text/html; charset=\"utf-8\"\n"
            f"Content-Transfer-Encoding: 8bit\n\n<html><body><p>{text}</p></body></html>\n\n--{boundary}--\n")


def exchange(i: int, person: str, address: str, to: str, original: str) -> tuple[str, bytes]:
    when = format_datetime(START + timedelta(minutes=i))
    subject = _EXCHANGE_SUBJECTS[i % 4].format(s=original)
    legacy = i % 4 == 3
    marks = "" if legacy else ("Auto-Submitted: auto-generated\n" if i % 2 == 0 else "Auto-Submitted: auto-replied\n")
    head = (f"From: {person} <{address}>\nTo: {to}\nSubject: {subject}\nThread-Topic: {original}\n"
            f"Thread-Index: AQHZ{i:04d}oOOFrespuestaautomatica==\nDate: {when}\n"
            f"Message-ID: <{i:02d}a1b2c3d4e5f6OOF@EXCH{i:02d}.PROD.OUTLOOK.COM>\n"
            f"In-Reply-To: <original-{i}@{to.rpartition('@')[2]}>\n"
            "Accept-Language: es-CO, en-US\nContent-Language: es-CO\nX-MS-Has-Attach:\nX-MS-TNEF-Correlator:\n"
            "X-MS-Exchange-Organization-SCL: -1\nX-MS-Exchange-Organization-AuthAs: Internal\n"
            f"X-MS-Exchange-Inbox-Rules-Loop: {address}\nX-Auto-Response-Suppress: All\n{marks}")
    return "<>", _crlf(head + _alternative(_TEXTS[i % 4], f"_000_OOF{i:02d}_"))


def gmail(i: int, person: str, address: str, to: str, original: str) -> tuple[str, bytes]:
    when = format_datetime(START + timedelta(minutes=30 + i))
    subject = f"Re: {original}" if i % 2 == 0 else "Vacaciones / Out of office"
    bulk = "Precedence: bulk\n" if i % 3 == 0 else ""
    head = (f"MIME-Version: 1.0\nFrom: {person} <{address}>\nDate: {when}\n"
            f"Message-ID: <CAGmail{i:02d}vacation+reply@mail.gmail.com>\nSubject: {subject}\nTo: {to}\n"
            f"In-Reply-To: <original-{i}@{to.rpartition('@')[2]}>\n"
            f"References: <original-{i}@{to.rpartition('@')[2]}>\nAuto-Submitted: auto-replied\n{bulk}")
    return address, _crlf(head + _alternative(_TEXTS[(i + 1) % 4], f"000000000000vac{i:02d}"))


def zimbra(i: int, person: str, address: str, to: str, original: str) -> tuple[str, bytes]:
    when = format_datetime(START + timedelta(minutes=60 + i))
    head = (f"Date: {when}\nFrom: {person} <{address}>\nTo: {to}\n"
            f"Message-ID: <{1000 + i}.{i}.zimbra.vacation@correo.zimbra.example>\n"
            f"In-Reply-To: <original-{i}@{to.rpartition('@')[2]}>\n"
            f"Subject: {'Re: ' + original if i % 2 else 'Respuesta automática de vacaciones'}\n"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n"
            "X-Mailer: Zimbra 8.8.15_GA_4484 (zclient/8.8.15_GA_4484)\n"
            "Auto-Submitted: auto-replied (zimbra; vacation)\nPrecedence: bulk\n\n")
    return address, _crlf(head + _TEXTS[(i + 2) % 4] + "\n")


def replies(people: list[tuple[str, str]], to: str, original: str = "Solicitud de publicación") -> list[
        tuple[str, bytes]]:
    """8 Exchange, 6 Gmail and 6 Zimbra replies from `people` (name, address), in turn, to `to`."""
    out = []
    makers = [exchange] * 8 + [gmail] * 6 + [zimbra] * 6
    for i, make in enumerate(makers):
        person, address = people[i % len(people)]
        out.append(make(i, person, address, to, original))
    return out
